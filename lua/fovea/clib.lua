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
for _, extra in ipairs { 'fovea_image.h', 'fovea_optim.h', 'fovea_io.h', 'fovea_data.h' } do
  local text = read_header(extra)
  if text then ffi.cdef(text) end
end

-- OpenMP threads that spin long while OpenBLAS's own threads run a GEMM steal its cores
-- (a training step ran 3x slower with libgomp's default spin); threads that sleep at once
-- cost oneDNN about 10% between its parallel regions. A short spin (10000 iterations)
-- serves both. Unless the user chose a policy, it is set here: libgomp reads it when
-- it is loaded, with the library below.
ffi.cdef [[ int setenv(const char *name, const char *value, int overwrite); char *getenv(const char *name); ]]
if ffi.C.getenv('OMP_WAIT_POLICY') == nil then ffi.C.setenv('GOMP_SPINCOUNT', '10000', 0) end

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
M.libpath = libpath               -- the libfovea.so in use (nil when found by the loader)
M.repo, M.prefix = repo, prefix   -- where fovea.cuda looks for libfovea_cuda.so too
M.exists, M.first_existing = exists, first_existing

-- The directory of fovea's own Lua files, to tell them from the user's code.
local own_dir = here:gsub('fovea[/\\]$', '')

-- Raises msg as a Lua error blamed on the first stack frame outside fovea's Lua files
-- (the user's line), whatever the depth of the calls and tail calls in between.
function M.raise(msg)
  local level = 2
  while true do
    local info = debug.getinfo(level, 'S')
    if not info then level = 2 break end
    local src = info.source
    if info.what ~= 'C' and src:sub(1, 1) == '@' and src:sub(2, #own_dir + 1) ~= own_dir then break end
    level = level + 1
  end
  error(msg, level)
end

-- Raises the C library's last error as a Lua error when status is not FV_OK.
function M.check(status)
  if status ~= 0 then M.raise('fovea: ' .. ffi.string(C.fv_last_error())) end
end

return M
