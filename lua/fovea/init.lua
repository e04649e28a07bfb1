-- fovea: a neural-network toolkit with a C core, driven from LuaJIT.
--   local fv = require 'fovea'
--   local x = fv.randn({2, 3}, {seed = 1})
--   print(x + 1, x:sum(2), x:matmul(x:t()))
-- Dimensions and positions count from 1 (negative from the end), as in Torch7.
local clib = require 'fovea.clib'
local tensor = require 'fovea.tensor'
local dtypes = require 'fovea.dtypes'
local memory = require 'fovea.memory'
local serialize = require 'fovea.serialize'
local ffi = require 'ffi'

local C, raise = clib.C, clib.raise
local fv = {}

-- the tensor module's public functions (cdim and make are helpers for fovea's own modules)
for k, v in pairs(tensor) do
  if k ~= 'cdim' and k ~= 'make' then fv[k] = v end
end
for k, v in pairs(serialize) do fv[k] = v end

fv.memory = memory
fv.cuda = require 'fovea.cuda'        -- loads libfovea_cuda.so only when asked (fv.cuda.available())
fv.gradcheck = require 'fovea.gradcheck'
fv.F = require 'fovea.functional'
fv.train = require 'fovea.train'
fv.gradcam = require 'fovea.gradcam'
fv.cli = require 'fovea.cli'
fv.clock = require 'fovea.clock'
fv.optim = require 'fovea.optim'
fv.nn = require 'fovea.nn'
fv.image = require 'fovea.image'
fv.data = require 'fovea.data'
fv.metrics = require 'fovea.metrics'
fv.progress = require 'fovea.progress'
fv.plot = require 'fovea.plot'
fv.csvlog = require 'fovea.csvlog'
fv.C = C

function fv.version() return ffi.string(C.fv_version()) end
function fv.set_default_dtype(name) dtypes.set_default(name) end
function fv.default_dtype() return dtypes.default() end

function fv.set_num_threads(n) clib.check(C.fv_set_num_threads(n)) end
function fv.get_num_threads() return C.fv_get_num_threads() end

return fv
