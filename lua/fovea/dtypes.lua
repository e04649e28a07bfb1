-- dtypes.lua: names of dtypes and devices as Lua strings, and their C codes. The
-- default dtype for new tensors is float32; fv.set_default_dtype changes it.
local clib = require 'fovea.clib'
local C, raise = clib.C, clib.raise

local M = {}

local codes = {
  float32 = C.FV_FLOAT32, float = C.FV_FLOAT32,
  float64 = C.FV_FLOAT64, double = C.FV_FLOAT64,
  float16 = C.FV_FLOAT16, half = C.FV_FLOAT16,
  bfloat16 = C.FV_BFLOAT16,
  int64 = C.FV_INT64, long = C.FV_INT64,
  uint8 = C.FV_UINT8, byte = C.FV_UINT8,
}
local names = {}
for _, name in ipairs { 'float32', 'float64', 'float16', 'bfloat16', 'int64', 'uint8' } do names[codes[name]] = name end

local devices = { cpu = C.FV_CPU, cuda = C.FV_CUDA }
local default_dtype = C.FV_FLOAT32

-- The C code of a dtype name, or nil when name is not a dtype.
function M.lookup(name) return codes[name] end

-- The C code of name (default dtype when nil); a clear error for unknown names.
function M.code(name)
  if name == nil then return default_dtype end
  local c = codes[name]
  if not c then
    raise('fovea: unknown dtype ' .. tostring(name) .. ' (float32, float64, int64 or uint8)')
  end
  return c
end

function M.name(code) return names[tonumber(code)] or 'invalid' end

function M.device_code(name)
  if name == nil then return C.FV_CPU end
  local base, index = tostring(name):match('^(.-):(%d+)$')
  local c = devices[base or tostring(name)]
  if not c then raise('fovea: unknown device ' .. tostring(name) .. ' (cpu or cuda)') end
  -- one GPU per process: the first one CUDA shows it (CUDA_VISIBLE_DEVICES picks which)
  if index and tonumber(index) ~= 0 then
    if c == C.FV_CPU then raise('fovea: device ' .. tostring(name) .. ': there is one cpu device, cpu:0') end
    raise(('fovea: device %s: fovea uses one GPU per process, cuda:0; to run on GPU %s, start the process ' ..
      'with CUDA_VISIBLE_DEVICES=%s'):format(tostring(name), index, index))
  end
  -- naming cuda loads the CUDA backend (once): ops on cuda then find it
  if c == C.FV_CUDA and C.fv_device_available(c) == 0 then require('fovea.cuda').available() end
  return c
end

function M.set_default(name) default_dtype = M.code(name) end
function M.default() return M.name(default_dtype) end

return M
