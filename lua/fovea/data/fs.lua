-- fs.lua: the few file-system operations the data sets need (listing folders, creating
-- them, asking what a path is), through core/data_fs.c.
local ffi = require 'ffi'
local clib = require 'fovea.clib'

local C, check = clib.C, clib.check
local M = {}

local buf_out = ffi.new('char*[1]')
local bytes_out, count_out = ffi.new('int64_t[1]'), ffi.new('int64_t[1]')
local kind_out, size_out = ffi.new('int[1]'), ffi.new('int64_t[1]')
local kinds = { [0] = nil, 'file', 'dir', 'other' }

-- The entries of a folder, sorted by name: { {name = 'a.png', kind = 'file'}, ... }
-- (kind 'file', 'dir' or 'other'). opts.kind keeps one kind only.
function M.list(dir, opts)
  check(C.fv_data_list_dir(dir, buf_out, bytes_out, count_out))
  local buf, n = buf_out[0], tonumber(count_out[0])
  local entries, pos = {}, 0
  for _ = 1, n do
    local t = string.char(buf[pos])
    local name = ffi.string(buf + pos + 1)
    pos = pos + #name + 2
    local kind = t == 'd' and 'dir' or t == 'f' and 'file' or 'other'
    if not (opts and opts.kind) or opts.kind == kind then entries[#entries + 1] = { name = name, kind = kind } end
  end
  C.fv_data_free(buf)
  return entries
end

-- 'file', 'dir', 'other', or nil when nothing is there; and the size in bytes.
function M.kind(path)
  check(C.fv_data_stat(path, kind_out, size_out))
  return kinds[kind_out[0]], tonumber(size_out[0])
end

function M.is_dir(path) return M.kind(path) == 'dir' end
function M.is_file(path) return M.kind(path) == 'file' end

-- Creates the folder and its parents.
function M.mkdirs(path) check(C.fv_data_mkdirs(path)) end

-- a .. '/' .. b, unless b is absolute.
function M.join(a, b)
  if b:sub(1, 1) == '/' or a == '' or a == nil then return b end
  if a:sub(-1) == '/' then return a .. b end
  return a .. '/' .. b
end

-- The folder part of a path ('.' when there is none).
function M.dirname(path)
  local d = path:match('^(.*)/[^/]*$')
  if d == nil then return '.' end
  if d == '' then return '/' end
  return d
end

-- The lower-case extension without the dot ('' when none).
function M.extension(name)
  return (name:match('%.([^./]+)$') or ''):lower()
end

function M.read(path)
  local f, err = io.open(path, 'rb')
  if not f then return nil, err end
  local s = f:read('*a')
  f:close()
  return s
end

-- Writes through a temporary file and a rename, so readers never see half a file.
function M.write(path, text)
  local tmp = path .. '.tmp'
  local f = assert(io.open(tmp, 'wb'))
  f:write(text)
  f:close()
  assert(os.rename(tmp, path))
end

return M
