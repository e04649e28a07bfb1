-- helpers.lua: what the specs share: whole-file read and write, existence, a fresh
-- temporary folder, and running a command for its exit status and output.
local fs = require 'fovea.data.fs'

local M = {}

function M.read(path)
  local f = assert(io.open(path, 'rb'))
  local s = f:read('*a')
  f:close()
  return s
end

function M.write(path, s)
  local f = assert(io.open(path, 'wb'))
  f:write(s)
  f:close()
end

function M.exists(path)
  local f = io.open(path, 'rb')
  if f then f:close() end
  return f ~= nil
end

-- A new empty folder under the system's temporary directory.
function M.tmpdir()
  local d = os.tmpname()
  os.remove(d)
  fs.mkdirs(d)
  return d
end

-- Runs cmd in a shell; returns its exit status and its output (stdout and stderr).
function M.run(cmd)
  local p = io.popen(cmd .. ' 2>&1; echo "exit:$?"')
  local out = p:read('*a')
  p:close()
  return tonumber(out:match('exit:(%d+)%s*$')), (out:gsub('exit:%d+%s*$', ''))
end

return M
