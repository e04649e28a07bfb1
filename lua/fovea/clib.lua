-- clib.lua: loads libfovea and declares its C API to the FFI by reading the public
-- headers (core/fovea*.h, macro-free) as they are. Also turns C statuses into Lua errors.
local ffi = require 'ffi'

local here = debug.getinfo(1, 'S').source:match('^@(.*[/\\])') or './'
local repo = here .. '../../'                -- lua/fovea/ inside a checkout
local prefix = here .. '../../../../'        -- PREFIX/share/lua/5.1/fovea/ after make install

local function exists(path)
  local f = io.open(path, 'rb')
  if f then f:close() end
  return f ~= nil
end

-- paths may hold nils (an unset environment variable): table.maxn walks past them
local function first_existing(paths)
  for i = 1, table.maxn(paths) do
    if paths[i] and exists(paths[i]) then return paths[i] end
  end
end

local function read_header(name)
  local path = first_existing { repo .. 'core/' .. name, prefix .. 'include/fovea/' .. name }
  if not path then return nil end
  local f = assert(io.open(path, 'rb'))
  local text = f:read('*a')
  f:close()
  return text
end

local main_header = read_header('fovea.h')
if not main_header then error('fovea: cannot find the header fovea.h (core/ or PREFIX/include/fovea/)', 0) end
ffi.cdef(main_header)
for _, extra in ipairs { 'fovea_image.h' } do
  local text = read_header(extra)
  if text then ffi.cdef(text) end
end

local libpath = first_existing { os.getenv('FOVEA_LIB'), repo .. 'build/libfovea.so', prefix .. 'lib/libfovea.so' }
local ok, C = pcall(ffi.load, libpath or 'fovea')
if not ok then
  error('fovea: cannot load libfovea.so (' .. tostring(C) .. '); run `make` in the repository root first', 0)
end

-- Keep the library loaded until the process ends: at exit LuaJIT may unload it before
-- the last tensors' finalizers run, and they call into it.
ffi.cdef [[ void *dlopen(const char *file, int mode); ]]
local RTLD_NOW, RTLD_NODELETE = 2, 0x1000
ffi.C.dlopen(libpath, RTLD_NOW + RTLD_NODELETE)

local M = { C = C, ffi = ffi }

-- Raises the C library's last error as a Lua error when status is not FV_OK.
-- level: the stack level to blame, as for error() (default: the caller's caller).
function M.check(status, level)
  if status ~= 0 then
    error('fovea: ' .. ffi.string(C.fv_last_error()), level or 3)
  end
end

return M
