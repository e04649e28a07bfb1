-- cuda.lua: the CUDA backend, loaded at run time. Nothing happens on require: the first
-- call to fv.cuda.available() (or anything that names the device 'cuda') looks for
-- libfovea_cuda.so (FOVEA_CUDA_LIB, then beside the libfovea.so in use, then build/ and
-- PREFIX/lib), declares its header cuda/fovea_cuda.h to the FFI, and calls fv_cuda_init,
-- which registers the CUDA kernels with the core. When the library is missing, cannot be
-- loaded (no CUDA runtime), or finds no GPU, available() is false and
-- unavailable_reason() says why; nothing raises, nothing aborts.
--   fv.cuda.available()      true when tensors can live on the GPU
--   fv.cuda.device_count()   GPUs seen (0 when unavailable)
--   fv.cuda.memory_stats()   {allocated =, reserved =, peak =} bytes of the caching allocator
--   fv.cuda.empty_cache()    gives the allocator's cached blocks (device and pinned host) back to the driver
--   fv.cuda.pinned_stats()   {in_use =, cached =, allocations =, in_flight =}: bytes of pinned host blocks
--                            in use and cached, blocks handed out so far, uploads still in flight
--                            (t:pin_memory(), the loader's pin_memory; see cuda/transfer.cu)
--   fv.cuda.reset_peak()     peak = allocated
--   fv.cuda.set_tf32(on)     TF32 tensor-core math for float32 matmul (default on); returns the old setting
--   fv.cuda.set_autocast(m)  'bf16': float32 conv2d and NAM on the GPU take bfloat16 operands
--                            (float32 accumulation and master weights); false: off (default);
--                            returns the old mode ('bf16' or false)
--   fv.cuda.autocast(m, fn, ...) runs fn(...) with autocast mode m, then restores the old one
--   fv.cuda.synchronize()    waits for the GPU (for timings); releases the sources of finished uploads
--   fv.cuda.profile_report() the per-op profile as a text table (FOVEA_CUDA_PROFILE=1 set before loading)
--   fv.cuda.profile_reset()  zeroes the profile's counts
local ffi = require 'ffi'
local clib = require 'fovea.clib'
local fs = require 'fovea.data.fs'

local C = clib.C
local M = {}

local lib           -- the loaded library once fv_cuda_init succeeded
local tried = false
local reason        -- why the backend is not available

local function dir_of(path) return path and path:match('^(.*[/\\])') end

local function find_library()
  local env = os.getenv('FOVEA_CUDA_LIB')
  if env and env ~= '' then
    if clib.exists(env) then return env end
    return nil, 'FOVEA_CUDA_LIB=' .. env .. ' does not exist'
  end
  local beside = dir_of(clib.libpath)
  if beside then
    -- the CUDA library must use the same libfovea as the Lua side (an ASan build has none)
    local path = beside .. 'libfovea_cuda.so'
    if clib.exists(path) then return path end
    return nil, 'libfovea_cuda.so is not built beside ' .. clib.libpath .. ' (run `make cuda` on a machine with nvcc)'
  end
  local path = clib.first_existing { clib.repo .. 'build/libfovea_cuda.so', clib.prefix .. 'lib/libfovea_cuda.so' }
  if path then return path end
  return nil, 'libfovea_cuda.so is not built (run `make cuda` on a machine with nvcc)'
end

local function read_header()
  local path = clib.first_existing { clib.repo .. 'cuda/fovea_cuda.h', clib.prefix .. 'include/fovea/fovea_cuda.h' }
  return path and fs.read(path)
end

local function load()
  if tried then return lib end
  tried = true
  local path, missing = find_library()
  if not path then
    reason = missing
    return nil
  end
  local header = read_header()
  if not header then
    reason = 'cannot find the header fovea_cuda.h (cuda/ or PREFIX/include/fovea/)'
    return nil
  end
  local ok, err = pcall(ffi.cdef, header)
  if not ok then
    reason = 'cannot declare fovea_cuda.h: ' .. tostring(err)
    return nil
  end
  local loaded
  ok, loaded = pcall(ffi.load, path)
  if not ok then
    reason = 'cannot load ' .. path .. ' (' .. tostring(loaded) .. ')'
    return nil
  end
  ok, err = pcall(function() return loaded.fv_cuda_init() end)
  if not ok then
    reason = path .. ' has no fv_cuda_init (' .. tostring(err) .. ')'
    return nil
  end
  if err ~= 0 then
    reason = ffi.string(C.fv_last_error())
    C.fv_clear_error()
    return nil
  end
  if C.fv_device_available(C.FV_CUDA) == 0 then
    -- it registered with another copy of libfovea.so than the one this process uses
    reason = path .. ' is linked with a different libfovea.so than ' .. tostring(clib.libpath)
      .. ' (build both with the same `make`, side by side)'
    return nil
  end
  -- keep it loaded until exit, as clib does with libfovea (finalizers free CUDA memory)
  ffi.C.dlopen(path, 2 + 0x1000)
  lib = loaded
  reason = nil
  return lib
end

function M.available() return load() ~= nil end

-- nil when CUDA is available, else a sentence saying why not.
function M.unavailable_reason()
  load()
  return reason
end

function M.device_count()
  if not load() then return 0 end
  return tonumber(lib.fv_cuda_device_count())
end

function M.empty_cache()
  if load() then
    lib.fv_cuda_empty_cache()
    lib.fv_cuda_pinned_empty_cache()
  end
end

function M.pinned_stats()
  if not load() then return { in_use = 0, cached = 0, allocations = 0, in_flight = 0 } end
  local v = ffi.new('int64_t[4]')
  clib.check(lib.fv_cuda_pinned_stats(v, v + 1, v + 2, v + 3))
  return { in_use = tonumber(v[0]), cached = tonumber(v[1]), allocations = tonumber(v[2]), in_flight = tonumber(v[3]) }
end

function M.memory_stats()
  if not load() then return { allocated = 0, reserved = 0, peak = 0 } end
  local v = ffi.new('int64_t[3]')
  clib.check(lib.fv_cuda_memory_stats(v, v + 1, v + 2))
  return { allocated = tonumber(v[0]), reserved = tonumber(v[1]), peak = tonumber(v[2]) }
end

function M.reset_peak()
  if load() then lib.fv_cuda_reset_peak() end
end

function M.set_tf32(on)
  if not load() then return false end
  return lib.fv_cuda_set_tf32(on and 1 or 0) ~= 0
end

-- 'bf16' / 'bfloat16' -> 1, false / nil / 'none' -> 0; anything else is an error
local function autocast_code(mode)
  if mode == 'bf16' or mode == 'bfloat16' then return 1 end
  if mode == false or mode == nil or mode == 'none' then return 0 end
  clib.raise(("fovea: cuda autocast: unknown mode %s (expected 'bf16' or false)"):format(tostring(mode)))
end

function M.set_autocast(mode)
  local code = autocast_code(mode)
  if not load() then return false end
  return lib.fv_cuda_set_autocast(code) ~= 0 and 'bf16' or false
end

function M.autocast(mode, fn, ...)
  local previous = M.set_autocast(mode)
  local results = { pcall(fn, ...) }
  M.set_autocast(previous)
  if not results[1] then error(results[2], 0) end
  return unpack(results, 2, table.maxn(results))
end

function M.synchronize()
  if load() then clib.check(lib.fv_cuda_synchronize()) end
end

-- The per-op profiler of cuda/profile.cu: on only when FOVEA_CUDA_PROFILE was set (to
-- anything but '' or '0') when the library loaded. The function, or nil and why not.
local function profile_fn(name)
  if not load() then return nil, 'CUDA is not available: ' .. tostring(reason) end
  local ok, fn = pcall(function() return lib[name] end)
  if not ok then return nil, 'this libfovea_cuda.so has no profiler (rebuild it: make cuda)' end
  return fn
end

-- The profile since the start or the last reset as a text table, sorted by GPU time (op,
-- calls, gpu ms, host ms, gpu ms per call, share); raises when the profiler is off.
function M.profile_report()
  local fn, why = profile_fn('fv_cuda_profile_report')
  if not fn then clib.raise('fv.cuda.profile_report: ' .. why) end
  local n = fn(nil, 0)
  if n < 0 then
    local msg = ffi.string(C.fv_last_error())
    C.fv_clear_error()
    clib.raise('fv.cuda.profile_report: ' .. msg)
  end
  local buf = ffi.new('char[?]', n + 1)
  fn(buf, n + 1)
  return ffi.string(buf)
end

-- Zeroes the profile's counts (nothing when the profiler is off or CUDA is unavailable).
function M.profile_reset()
  local fn = profile_fn('fv_cuda_profile_reset')
  if fn then fn() end
end

return M
