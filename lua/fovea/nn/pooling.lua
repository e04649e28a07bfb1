--[[ nn/pooling.lua: pooling, resampling and channel shuffling as modules (no
parameters). Inputs are (B, C, H, W). Sizes are a number or {h, w}; tostring shows them
as given, as PyTorch does (kernel_size=3 or kernel_size=(3, 3)).

  nn.MaxPool2d(kernel_size, [stride, padding, dilation], {stride = kernel_size, padding = 0,
               dilation = 1, ceil_mode = false})
  nn.AvgPool2d(kernel_size, [stride, padding], {stride = kernel_size, padding = 0,
               ceil_mode = false, count_include_pad = true})
  nn.AdaptiveAvgPool2d(output_size), nn.AdaptiveMaxPool2d(output_size)
  nn.GlobalAvgPool()             (B, C, H, W) -> (B, C), the mean of each channel
  nn.Upsample({size = nil, scale_factor = nil, mode = 'bilinear', align_corners = false})
                                 bilinear resize to size, or to floor(H * scale_factor) x
                                 floor(W * scale_factor) (exactly PyTorch's when the scaled
                                 sizes are whole numbers); nn.Upsample(size) works too
  nn.Interpolate(...)            the same module under another name
  nn.ChannelShuffle(groups)      ShuffleNet's shuffle: (g, C/g) channel blocks transposed
]]
local clib = require 'fovea.clib'
local F = require 'fovea.functional'
local M = require 'fovea.nn.module'
local util = require 'fovea.nn.util'

local raise = clib.raise
local Module = M.Module
local pv, pybool = util.pyvalue, util.pybool

local pool = {}

local MaxPool2d = Module:extend('MaxPool2d')
pool.MaxPool2d = MaxPool2d
function MaxPool2d:init(kernel_size, ...)
  local o = util.read_args('MaxPool2d', { 'stride', 'padding', 'dilation' },
    { stride = true, padding = true, dilation = true, ceil_mode = true }, ...)
  util.pair(kernel_size, 'MaxPool2d', 'kernel_size')
  self.kernel_size = kernel_size
  self.stride = o.stride or kernel_size
  self.padding = o.padding or 0
  self.dilation = o.dilation or 1
  for _, k in ipairs { 'stride', 'padding', 'dilation' } do util.pair(self[k], 'MaxPool2d', k) end
  self.ceil_mode = o.ceil_mode and true or false
end
function MaxPool2d:forward(x)
  return F.max_pool2d(x, self.kernel_size, { stride = self.stride, padding = self.padding, dilation = self.dilation, ceil_mode = self.ceil_mode })
end
function MaxPool2d:extra_repr()
  return ('kernel_size=%s, stride=%s, padding=%s, dilation=%s, ceil_mode=%s'):format(pv(self.kernel_size),
    pv(self.stride), pv(self.padding), pv(self.dilation), pybool(self.ceil_mode))
end

local AvgPool2d = Module:extend('AvgPool2d')
pool.AvgPool2d = AvgPool2d
function AvgPool2d:init(kernel_size, ...)
  local o = util.read_args('AvgPool2d', { 'stride', 'padding' },
    { stride = true, padding = true, ceil_mode = true, count_include_pad = true }, ...)
  util.pair(kernel_size, 'AvgPool2d', 'kernel_size')
  self.kernel_size = kernel_size
  self.stride = o.stride or kernel_size
  self.padding = o.padding or 0
  for _, k in ipairs { 'stride', 'padding' } do util.pair(self[k], 'AvgPool2d', k) end
  self.ceil_mode = o.ceil_mode and true or false
  self.count_include_pad = o.count_include_pad ~= false
end
function AvgPool2d:forward(x)
  return F.avg_pool2d(x, self.kernel_size, { stride = self.stride, padding = self.padding, ceil_mode = self.ceil_mode,
    count_include_pad = self.count_include_pad })
end
function AvgPool2d:extra_repr()
  return ('kernel_size=%s, stride=%s, padding=%s'):format(pv(self.kernel_size), pv(self.stride), pv(self.padding))
end

local function adaptive(name, fn)
  local cls = Module:extend(name)
  function cls:init(output_size)
    util.pair(output_size, name, 'output_size')
    self.output_size = output_size
  end
  function cls:forward(x) return fn(x, self.output_size) end
  function cls:extra_repr() return 'output_size=' .. pv(self.output_size) end
  return cls
end
pool.AdaptiveAvgPool2d = adaptive('AdaptiveAvgPool2d', F.adaptive_avg_pool2d)
pool.AdaptiveMaxPool2d = adaptive('AdaptiveMaxPool2d', F.adaptive_max_pool2d)

local GlobalAvgPool = Module:extend('GlobalAvgPool')
pool.GlobalAvgPool = GlobalAvgPool
function GlobalAvgPool:forward(x)
  if x:dim() ~= 4 then raise('fovea: GlobalAvgPool: expected a 4-D input (B, C, H, W), got ' .. util.shape(x)) end
  return F.global_avg_pool(x)
end

local Upsample = Module:extend('Upsample')
pool.Upsample = Upsample
function Upsample:init(opts)
  if type(opts) == 'number' or (type(opts) == 'table' and opts[1] ~= nil) then opts = { size = opts } end
  local who = self.__name
  opts = util.check_options(who, opts, { size = true, scale_factor = true, mode = true, align_corners = true })
  if (opts.size == nil) == (opts.scale_factor == nil) then raise('fovea: ' .. who .. ': give either size or scale_factor') end
  if opts.size ~= nil then util.pair(opts.size, who, 'size') end
  if opts.scale_factor ~= nil then util.pair(opts.scale_factor, who, 'scale_factor') end
  self.mode = opts.mode or 'bilinear'
  if self.mode ~= 'bilinear' then raise('fovea: ' .. who .. ': only mode bilinear is supported, got ' .. tostring(self.mode)) end
  self.size, self.scale_factor = opts.size, opts.scale_factor
  self.align_corners = opts.align_corners and true or false
end
function Upsample:forward(x)
  if x:dim() ~= 4 then raise('fovea: ' .. self.__name .. ': expected a 4-D input (B, C, H, W), got ' .. util.shape(x)) end
  local size = self.size
  if size == nil then
    local s = util.pair(self.scale_factor, self.__name, 'scale_factor')
    size = { math.floor(x:size(3) * s[1]), math.floor(x:size(4) * s[2]) }
  end
  return F.interpolate(x, size, { align_corners = self.align_corners })
end
function Upsample:extra_repr()
  local info
  if self.scale_factor ~= nil then
    local s = self.scale_factor
    info = 'scale_factor=' .. (type(s) == 'number' and util.pyfloat(s) or pv(s))
  else
    info = 'size=' .. pv(self.size)
  end
  info = info .. ", mode='" .. self.mode .. "'"
  if self.align_corners then info = info .. ', align_corners=True' end
  return info
end

pool.Interpolate = Upsample:extend('Interpolate')

local ChannelShuffle = Module:extend('ChannelShuffle')
pool.ChannelShuffle = ChannelShuffle
function ChannelShuffle:init(groups) self.groups = util.positive_int(groups, 'ChannelShuffle', 'groups') end
function ChannelShuffle:forward(x) return F.channel_shuffle(x, self.groups) end
function ChannelShuffle:extra_repr() return 'groups=' .. self.groups end

return pool
