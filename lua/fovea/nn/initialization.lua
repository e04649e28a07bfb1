--[[ nn/initialization.lua: nn.init, PyTorch's torch.nn.init. Every function fills its
tensor in place under no_grad (parameters included) and returns it. Random draws come
from fovea's global generator (fv.manual_seed(s) makes them reproducible) unless
opts.generator is given. Fans are PyTorch's: for a weight (out, in, k...) fan_in =
in * prod(k), fan_out = out * prod(k); tensors need at least 2 dimensions.

  init.uniform_(t, a = 0, b = 1, {generator})           U(a, b)
  init.normal_(t, mean = 0, std = 1, {generator})       N(mean, std^2)
  init.constant_(t, value), init.zeros_(t), init.ones_(t)
  init.xavier_uniform_(t, gain = 1 or {gain = 1, generator})
                                  U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))
  init.xavier_normal_(t, gain = 1 or {gain = 1, generator})
                                  N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))
  init.kaiming_uniform_(t, {a = 0, mode = 'fan_in', nonlinearity = 'leaky_relu', generator})
                                  U(-b, b), b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a)
  init.kaiming_normal_(t, {a = 0, mode = 'fan_in', nonlinearity = 'leaky_relu', generator})
                                  N(0, std^2), std = gain / sqrt(fan)
                                  (torchvision's ResNet: {mode = 'fan_out', nonlinearity = 'relu'})
  init.calculate_gain(nonlinearity, param)
                                  linear, conv*, sigmoid: 1; tanh: 5/3; relu: sqrt(2);
                                  leaky_relu: sqrt(2 / (1 + slope^2)), slope = param or 0.01;
                                  selu: 3/4
  init.calculate_fan_in_and_fan_out(t)  returns fan_in, fan_out
]]
local clib = require 'fovea.clib'
local T = require 'fovea.tensor'
local util = require 'fovea.nn.util'

local raise = clib.raise
local init = {}

local function check_tensor(t, who)
  if not T.is_tensor(t) then raise(('fovea: nn.init.%s expects a tensor, got %s'):format(who, type(t))) end
  if not util.is_floating(t) then raise(('fovea: nn.init.%s: the tensor is %s, not a float tensor'):format(who, t:dtype())) end
end

-- Copies src (any dtype) into t without recording.
local function fill_from(t, src)
  T.no_grad(function() t:copy_(src) end)
  return t
end

local function draw_dtype(t)
  local dt = t:dtype()
  return (dt == 'float32' or dt == 'float64') and dt or 'float32'
end

function init.calculate_fan_in_and_fan_out(t)
  local dim = t:dim()
  if dim < 2 then
    raise(('fovea: nn.init: fan in and fan out need a tensor with at least 2 dimensions, got %s'):format(util.shape(t)))
  end
  local receptive = 1
  for d = 3, dim do receptive = receptive * t:size(d) end
  return t:size(2) * receptive, t:size(1) * receptive
end

local linear_fns = { linear = true, conv1d = true, conv2d = true, conv3d = true, conv_transpose1d = true,
  conv_transpose2d = true, conv_transpose3d = true, sigmoid = true }

function init.calculate_gain(nonlinearity, param)
  if linear_fns[nonlinearity] then return 1 end
  if nonlinearity == 'tanh' then return 5 / 3 end
  if nonlinearity == 'relu' then return math.sqrt(2) end
  if nonlinearity == 'leaky_relu' then
    local slope = param == nil and 0.01 or param
    if type(slope) ~= 'number' then raise('fovea: nn.init.calculate_gain: negative_slope ' .. tostring(slope) .. ' is not a number') end
    return math.sqrt(2 / (1 + slope * slope))
  end
  if nonlinearity == 'selu' then return 3 / 4 end
  raise('fovea: nn.init.calculate_gain: unsupported nonlinearity ' .. tostring(nonlinearity))
end

local function gen_opts(who, opts, extra)
  local allowed = { generator = true }
  for k in pairs(extra or {}) do allowed[k] = true end
  return util.check_options('nn.init.' .. who, opts, allowed)
end

function init.uniform_(t, a, b, opts)
  check_tensor(t, 'uniform_')
  opts = gen_opts('uniform_', opts)
  a, b = a or 0, b or 1
  local r = T.rand(t:size(), { dtype = draw_dtype(t), generator = opts.generator })
  return fill_from(t, r * (b - a) + a)
end

function init.normal_(t, mean, std, opts)
  check_tensor(t, 'normal_')
  opts = gen_opts('normal_', opts)
  mean, std = mean or 0, std or 1
  local r = T.randn(t:size(), { dtype = draw_dtype(t), generator = opts.generator })
  return fill_from(t, r * std + mean)
end

function init.constant_(t, value)
  check_tensor(t, 'constant_')
  if type(value) ~= 'number' then raise('fovea: nn.init.constant_: the value must be a number, got ' .. type(value)) end
  T.no_grad(function() t:fill_(value) end)
  return t
end

function init.zeros_(t) return init.constant_(t, 0) end
function init.ones_(t) return init.constant_(t, 1) end

local function gain_opts(who, g)
  if type(g) == 'table' then
    local opts = gen_opts(who, g, { gain = true })
    return opts.gain or 1, opts
  end
  return g or 1, {}
end

function init.xavier_uniform_(t, gain)
  check_tensor(t, 'xavier_uniform_')
  local g, opts = gain_opts('xavier_uniform_', gain)
  local fan_in, fan_out = init.calculate_fan_in_and_fan_out(t)
  local bound = g * math.sqrt(6 / (fan_in + fan_out))
  return init.uniform_(t, -bound, bound, { generator = opts.generator })
end

function init.xavier_normal_(t, gain)
  check_tensor(t, 'xavier_normal_')
  local g, opts = gain_opts('xavier_normal_', gain)
  local fan_in, fan_out = init.calculate_fan_in_and_fan_out(t)
  return init.normal_(t, 0, g * math.sqrt(2 / (fan_in + fan_out)), { generator = opts.generator })
end

local function kaiming_std(t, who, opts)
  check_tensor(t, who)
  opts = gen_opts(who, opts, { a = true, mode = true, nonlinearity = true })
  local mode = opts.mode or 'fan_in'
  if mode ~= 'fan_in' and mode ~= 'fan_out' then
    raise(('fovea: nn.init.%s: mode must be fan_in or fan_out, got %s'):format(who, tostring(mode)))
  end
  local fan_in, fan_out = init.calculate_fan_in_and_fan_out(t)
  local fan = mode == 'fan_in' and fan_in or fan_out
  if fan == 0 then return nil, opts end -- PyTorch warns and leaves the tensor as it is
  local gain = init.calculate_gain(opts.nonlinearity or 'leaky_relu', opts.a or 0)
  return gain / math.sqrt(fan), opts
end

function init.kaiming_uniform_(t, opts)
  local std, o = kaiming_std(t, 'kaiming_uniform_', opts)
  if not std then return t end
  local bound = math.sqrt(3) * std
  return init.uniform_(t, -bound, bound, { generator = o.generator })
end

function init.kaiming_normal_(t, opts)
  local std, o = kaiming_std(t, 'kaiming_normal_', opts)
  if not std then return t end
  return init.normal_(t, 0, std, { generator = o.generator })
end

return init
