--[[ nn/layers.lua: the layers with parameters, and the shape-only ones. Initialised as
PyTorch 2.x does (weights from fovea's global generator: fv.manual_seed(s) first makes a
model reproducible). Options tables come last; unknown option names are errors. dtype:
the parameters' dtype (default: fv.default_dtype(), float32).

  nn.Conv2d(in_channels, out_channels, kernel_size, [stride, padding, dilation, groups, bias], opts)
      opts: stride = 1, padding = 0 (a number, {h, w}, 'valid', or 'same' when stride is
      1), dilation = 1, groups = 1, bias = true, dtype. Sizes: a number or {h, w}.
      weight (out, in / groups, kh, kw), bias (out): kaiming_uniform_(a = sqrt(5)), that is
      U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in / groups * kh * kw; bias the same.
      Input (B, in, H, W).
  nn.Linear(in_features, out_features, [bias], {bias = true, dtype})
      weight (out, in), bias (out): U(-1/sqrt(in), 1/sqrt(in)) as Conv2d. Input (..., in).
  nn.BatchNorm2d(num_features, {eps = 1e-5, momentum = 0.1, affine = true,
                 track_running_stats = true, dtype})
      input (B, C, H, W). weight 1, bias 0 (parameters when affine); buffers running_mean 0,
      running_var 1 and num_batches_tracked (0-dim int64, counts training forwards) when
      track_running_stats. Training: batch statistics, running ones updated with
      momentum (momentum = false: cumulative average, as PyTorch's None); evaluation:
      running statistics (batch ones when not tracked).
  nn.BatchNorm1d(num_features, {...})  the same for (B, C) or (B, C, L)
  nn.Identity()                        returns its input
  nn.Flatten(start_dim = 2, end_dim = -1)   merges dimensions start_dim..end_dim (Lua's
                                       numbering: 2 is PyTorch's default start_dim=1)
  nn.Dropout(p = 0.5)                  zeroes elements with probability p in training and
                                       scales the rest by 1/(1-p); identity in evaluation
      m:reset_parameters() on Conv2d, Linear and BatchNorm redraws / resets as at creation.
]]
local clib = require 'fovea.clib'
local T = require 'fovea.tensor'
local F = require 'fovea.functional'
local M = require 'fovea.nn.module'
local init = require 'fovea.nn.initialization'
local util = require 'fovea.nn.util'

local raise = clib.raise
local Module = M.Module
local pyfloat, pybool = util.pyfloat, util.pybool

local layers = {}

local function param_dtype(who, dtype)
  if dtype == nil then return nil end
  if dtype ~= 'float32' and dtype ~= 'float64' and dtype ~= 'float' and dtype ~= 'double' then
    raise(('fovea: %s: dtype must be float32 or float64, got %s'):format(who, tostring(dtype)))
  end
  return dtype
end

---------------------------------------------------------------------------------------
-- Conv2d

local Conv2d = Module:extend('Conv2d')
layers.Conv2d = Conv2d

function Conv2d:init(in_channels, out_channels, kernel_size, ...)
  local who = 'Conv2d'
  local o = util.read_args(who, { 'stride', 'padding', 'dilation', 'groups', 'bias' },
    { stride = true, padding = true, dilation = true, groups = true, bias = true, dtype = true, padding_mode = true }, ...)
  self.in_channels = util.positive_int(in_channels, who, 'in_channels')
  self.out_channels = util.positive_int(out_channels, who, 'out_channels')
  self.kernel_size = util.pair(kernel_size, who, 'kernel_size')
  self.stride = util.pair(o.stride or 1, who, 'stride')
  self.dilation = util.pair(o.dilation or 1, who, 'dilation')
  self.groups = util.positive_int(o.groups or 1, who, 'groups')
  if o.padding_mode ~= nil and o.padding_mode ~= 'zeros' then
    raise('fovea: Conv2d: only padding_mode zeros is supported, got ' .. tostring(o.padding_mode))
  end
  local padding = o.padding or 0
  if padding == 'valid' then
    padding = 0
  elseif padding == 'same' then
    if self.stride[1] ~= 1 or self.stride[2] ~= 1 then raise('fovea: Conv2d: padding same needs stride 1') end
    local p = {}
    for d = 1, 2 do
      local total = self.dilation[d] * (self.kernel_size[d] - 1)
      if total % 2 ~= 0 then
        raise('fovea: Conv2d: padding same with an even kernel extent needs asymmetric padding, which is not supported')
      end
      p[d] = total / 2
    end
    padding = p
  end
  self.padding = util.pair(padding, who, 'padding')
  if in_channels % self.groups ~= 0 then raise(('fovea: Conv2d: in_channels %d is not divisible by groups %d'):format(in_channels, self.groups)) end
  if out_channels % self.groups ~= 0 then raise(('fovea: Conv2d: out_channels %d is not divisible by groups %d'):format(out_channels, self.groups)) end
  local dtype = param_dtype(who, o.dtype)
  self:register_parameter('weight', T.empty({ out_channels, in_channels / self.groups, self.kernel_size[1], self.kernel_size[2] }, { dtype = dtype }))
  if o.bias == nil or o.bias then
    self:register_parameter('bias', T.empty({ out_channels }, { dtype = dtype }))
  else
    self:register_parameter('bias', nil)
  end
  self:reset_parameters()
end

-- U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, as torch's _ConvNd and Linear.
local function reset_weight_and_bias(self)
  init.kaiming_uniform_(self.weight, { a = math.sqrt(5) })
  if self.bias ~= nil then
    local fan_in = init.calculate_fan_in_and_fan_out(self.weight)
    if fan_in ~= 0 then
      local bound = 1 / math.sqrt(fan_in)
      init.uniform_(self.bias, -bound, bound)
    end
  end
end
Conv2d.reset_parameters = reset_weight_and_bias

function Conv2d:forward(x)
  return F.conv2d(x, self.weight, self.bias, { stride = self.stride, padding = self.padding, dilation = self.dilation, groups = self.groups })
end

function Conv2d:extra_repr()
  local pv = util.pyvalue
  local s = ('%d, %d, kernel_size=%s, stride=%s'):format(self.in_channels, self.out_channels, pv(self.kernel_size), pv(self.stride))
  if self.padding[1] ~= 0 or self.padding[2] ~= 0 then s = s .. ', padding=' .. pv(self.padding) end
  if self.dilation[1] ~= 1 or self.dilation[2] ~= 1 then s = s .. ', dilation=' .. pv(self.dilation) end
  if self.groups ~= 1 then s = s .. ', groups=' .. self.groups end
  if self.bias == nil then s = s .. ', bias=False' end
  return s
end

---------------------------------------------------------------------------------------
-- Linear

local Linear = Module:extend('Linear')
layers.Linear = Linear

function Linear:init(in_features, out_features, ...)
  local who = 'Linear'
  local o = util.read_args(who, { 'bias' }, { bias = true, dtype = true }, ...)
  self.in_features = util.positive_int(in_features, who, 'in_features')
  self.out_features = util.positive_int(out_features, who, 'out_features')
  local dtype = param_dtype(who, o.dtype)
  self:register_parameter('weight', T.empty({ out_features, in_features }, { dtype = dtype }))
  if o.bias == nil or o.bias then
    self:register_parameter('bias', T.empty({ out_features }, { dtype = dtype }))
  else
    self:register_parameter('bias', nil)
  end
  self:reset_parameters()
end

Linear.reset_parameters = reset_weight_and_bias

function Linear:forward(x) return F.linear(x, self.weight, self.bias) end

function Linear:extra_repr()
  return ('in_features=%d, out_features=%d, bias=%s'):format(self.in_features, self.out_features, pybool(self.bias ~= nil))
end

---------------------------------------------------------------------------------------
-- BatchNorm

local BatchNorm = Module:extend('_BatchNorm')

function BatchNorm:init(num_features, opts)
  local who = self.__name
  opts = util.check_options(who, opts, { eps = true, momentum = true, affine = true, track_running_stats = true, dtype = true })
  self.num_features = util.positive_int(num_features, who, 'num_features')
  self.eps = opts.eps or 1e-5
  if opts.momentum == false then self.momentum = false else self.momentum = opts.momentum or 0.1 end
  self.affine = opts.affine ~= false
  self.track_running_stats = opts.track_running_stats ~= false
  local dtype = param_dtype(who, opts.dtype)
  if self.affine then
    self:register_parameter('weight', T.empty({ num_features }, { dtype = dtype }))
    self:register_parameter('bias', T.empty({ num_features }, { dtype = dtype }))
  else
    self:register_parameter('weight', nil)
    self:register_parameter('bias', nil)
  end
  if self.track_running_stats then
    self:register_buffer('running_mean', T.zeros({ num_features }, { dtype = dtype }))
    self:register_buffer('running_var', T.ones({ num_features }, { dtype = dtype }))
    self:register_buffer('num_batches_tracked', T.zeros({}, { dtype = 'int64' }))
  else
    self:register_buffer('running_mean', nil)
    self:register_buffer('running_var', nil)
    self:register_buffer('num_batches_tracked', nil)
  end
  self:reset_parameters()
end

function BatchNorm:reset_running_stats()
  if self.track_running_stats then
    T.no_grad(function()
      self.running_mean:fill_(0)
      self.running_var:fill_(1)
      self.num_batches_tracked:fill_(0)
    end)
  end
end

function BatchNorm:reset_parameters()
  self:reset_running_stats()
  if self.affine then
    init.ones_(self.weight)
    init.zeros_(self.bias)
  end
end

function BatchNorm:forward(x)
  self:_check_input_dim(x)
  local factor = self.momentum or 0
  local training = self.training
  if training and self.track_running_stats then
    local nbt = self.num_batches_tracked
    if nbt ~= nil then
      if self.momentum == false then -- the cumulative average needs the count here
        local count = nbt:item() + 1
        nbt:fill_(count)
        factor = 1 / count
      else -- counted where it lives: reading a GPU counter back would wait for all queued work
        nbt:copy_(nbt:double() + 1)
      end
    end
  end
  local rm, rv
  if not training or self.track_running_stats then rm, rv = self.running_mean, self.running_var end
  local bn_training = training or (rm == nil and rv == nil)
  return F.batch_norm(x, rm, rv, self.weight, self.bias, { training = bn_training, momentum = factor, eps = self.eps })
end

function BatchNorm:extra_repr()
  return ('%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s'):format(self.num_features, pyfloat(self.eps),
    self.momentum == false and 'None' or pyfloat(self.momentum), pybool(self.affine), pybool(self.track_running_stats))
end

local BatchNorm2d = BatchNorm:extend('BatchNorm2d')
layers.BatchNorm2d = BatchNorm2d
function BatchNorm2d:_check_input_dim(x)
  if x:dim() ~= 4 then raise(('fovea: BatchNorm2d: expected a 4-D input (B, C, H, W), got %s'):format(util.shape(x))) end
end

local BatchNorm1d = BatchNorm:extend('BatchNorm1d')
layers.BatchNorm1d = BatchNorm1d
function BatchNorm1d:_check_input_dim(x)
  if x:dim() ~= 2 and x:dim() ~= 3 then
    raise(('fovea: BatchNorm1d: expected a 2-D or 3-D input (B, C) or (B, C, L), got %s'):format(util.shape(x)))
  end
end

---------------------------------------------------------------------------------------
-- shape-only layers

local Identity = Module:extend('Identity')
layers.Identity = Identity
function Identity:init() end
function Identity:forward(x) return x end

local Flatten = Module:extend('Flatten')
layers.Flatten = Flatten
function Flatten:init(start_dim, end_dim)
  self.start_dim, self.end_dim = start_dim or 2, end_dim or -1
  for _, d in ipairs { self.start_dim, self.end_dim } do
    if type(d) ~= 'number' or d == 0 or d ~= math.floor(d) then
      raise('fovea: Flatten: dimensions count from 1 (negative from the end), got ' .. tostring(d))
    end
  end
end

function Flatten:forward(x)
  local n = x:dim()
  local s = self.start_dim < 0 and n + self.start_dim + 1 or self.start_dim
  local e = self.end_dim < 0 and n + self.end_dim + 1 or self.end_dim
  if n == 0 then return x:reshape(1) end
  if s < 1 or s > n or e < 1 or e > n or s > e then
    raise(('fovea: Flatten: dimensions %d..%d do not fit the input %s'):format(self.start_dim, self.end_dim, util.shape(x)))
  end
  local sizes, shape, merged = x:size(), {}, 1
  for d = 1, s - 1 do shape[#shape + 1] = sizes[d] end
  for d = s, e do merged = merged * sizes[d] end
  shape[#shape + 1] = merged
  for d = e + 1, n do shape[#shape + 1] = sizes[d] end
  return x:reshape(shape)
end

function Flatten:extra_repr() return ('start_dim=%d, end_dim=%d'):format(self.start_dim, self.end_dim) end

local Dropout = Module:extend('Dropout')
layers.Dropout = Dropout
function Dropout:init(p, opts)
  if type(p) == 'table' then p, opts = nil, p end
  opts = util.check_options('Dropout', opts, { p = true, inplace = true })
  p = p or opts.p or 0.5
  if type(p) ~= 'number' or p < 0 or p > 1 then raise('fovea: Dropout: p must be between 0 and 1, got ' .. tostring(p)) end
  self.p = p
  self.inplace = opts.inplace and true or false
end
function Dropout:forward(x) return F.dropout(x, self.p, self.training) end
function Dropout:extra_repr() return ('p=%s, inplace=%s'):format(pyfloat(self.p), pybool(self.inplace)) end

return layers
