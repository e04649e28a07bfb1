--[[ nn/activations.lua: elementwise activations and (log-)softmax as modules. None has
parameters. inplace is accepted for PyTorch compatibility (it shows in tostring, as
torchvision's ReLU(inplace=True)) and ignored: fovea computes out of place.

  nn.ReLU([inplace] or {inplace = false})
  nn.LeakyReLU(negative_slope = 0.01, [inplace] or {negative_slope, inplace})
  nn.Sigmoid(), nn.Tanh()
  nn.Softmax(dim = -1), nn.LogSoftmax(dim = -1)   dim counts from 1 (negative from the
                                                   end): Softmax(2) on (B, K) is over K
]]
local clib = require 'fovea.clib'
local F = require 'fovea.functional'
local M = require 'fovea.nn.module'
local util = require 'fovea.nn.util'

local raise = clib.raise
local Module = M.Module

local act = {}

local function read_inplace(who, a, extra)
  if type(a) == 'table' then
    local allowed = { inplace = true }
    for k in pairs(extra or {}) do allowed[k] = true end
    return util.check_options(who, a, allowed)
  end
  if a ~= nil and type(a) ~= 'boolean' then raise(('fovea: %s: inplace must be a boolean, got %s'):format(who, tostring(a))) end
  return { inplace = a }
end

local ReLU = Module:extend('ReLU')
act.ReLU = ReLU
function ReLU:init(a) self.inplace = read_inplace('ReLU', a).inplace and true or false end
function ReLU:forward(x) return x:relu() end
function ReLU:extra_repr() return self.inplace and 'inplace=True' or '' end

local LeakyReLU = Module:extend('LeakyReLU')
act.LeakyReLU = LeakyReLU
function LeakyReLU:init(slope, inplace)
  local o = type(slope) == 'table' and read_inplace('LeakyReLU', slope, { negative_slope = true })
    or { negative_slope = slope, inplace = read_inplace('LeakyReLU', inplace).inplace }
  self.negative_slope = o.negative_slope or 0.01
  if type(self.negative_slope) ~= 'number' then raise('fovea: LeakyReLU: negative_slope must be a number') end
  self.inplace = o.inplace and true or false
end
function LeakyReLU:forward(x)
  local s = self.negative_slope
  if s <= 1 then return x:maximum(x * s) end
  return x:minimum(x * s)
end
function LeakyReLU:extra_repr()
  return 'negative_slope=' .. util.pyfloat(self.negative_slope) .. (self.inplace and ', inplace=True' or '')
end

local Sigmoid = Module:extend('Sigmoid')
act.Sigmoid = Sigmoid
function Sigmoid:forward(x) return x:sigmoid() end

local Tanh = Module:extend('Tanh')
act.Tanh = Tanh
function Tanh:forward(x) return x:tanh() end

local function softmax_class(name, fn)
  local cls = Module:extend(name)
  function cls:init(dim)
    if dim ~= nil and (type(dim) ~= 'number' or dim == 0 or dim ~= math.floor(dim)) then
      raise(('fovea: %s: dim counts from 1 (negative from the end), got %s'):format(name, tostring(dim)))
    end
    self.dim = dim or -1
  end
  function cls:forward(x) return fn(x, self.dim) end
  function cls:extra_repr() return 'dim=' .. self.dim end
  return cls
end
act.Softmax = softmax_class('Softmax', F.softmax)
act.LogSoftmax = softmax_class('LogSoftmax', F.log_softmax)

return act
