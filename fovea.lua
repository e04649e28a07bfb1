-- fovea.lua: lets plain `luajit` find fovea from the repository root. It puts lua/ (and
-- the root's folders with an init.lua, such as models/) on package.path and loads
-- lua/fovea/init.lua as the module 'fovea'.
local root = debug.getinfo(1, 'S').source:match('^@(.*[/\\])') or './'
package.path = root .. 'lua/?.lua;' .. root .. 'lua/?/init.lua;' .. root .. '?/init.lua;' .. package.path
package.loaded.fovea = nil
local fovea = dofile(root .. 'lua/fovea/init.lua')
package.loaded.fovea = fovea
return fovea
