-- models/shufflenetv2.lua: ShuffleNetV2 (Ma et al.) x1.0 and x0.5 with torchvision's
-- structure and parameter names (conv1.0.weight, stage2.0.branch1.0.weight, ...).
-- Encoders as the dual-branch model uses them: stem = conv1 (24 x /2), e1 = maxpool
-- (24 x /4), e2 = stage2 (/8), e3 = stage3 (/16), e4 = stage4 (/32); conv5 (to 1024
-- channels) belongs to the classifier head only. For 386x386 at x1.0: e1 24x97x97,
-- e2 116x49x49, e3 232x25x25, e4 464x13x13.
--   local net = require('models.shufflenetv2').shufflenet_v2{width = 1.0, classes = 2}
local fv = require 'fovea'
local nn = require 'fovea.nn'
local F = require 'fovea.functional'

local M = {}

local widths = {
  [0.5] = { 24, 48, 96, 192, 1024 },
  [1.0] = { 24, 116, 232, 464, 1024 },
}

local function depthwise(channels, stride)
  return nn.Conv2d(channels, channels, 3, { stride = stride, padding = 1, groups = channels, bias = false })
end

local function pointwise(cin, cout)
  return nn.Conv2d(cin, cout, 1, { bias = false })
end

-- Stride 2: two branches on the whole input. Stride 1: the input's channels are split
-- in half and the second half goes through branch2. Then concat and channel shuffle (2).
local InvertedResidual = nn.Module:extend('InvertedResidual')
M.InvertedResidual = InvertedResidual

function InvertedResidual:init(inp, oup, stride)
  local half = math.floor(oup / 2)
  self.stride = stride
  if stride > 1 then
    self.branch1 = nn.Sequential(depthwise(inp, stride), nn.BatchNorm2d(inp), pointwise(inp, half),
      nn.BatchNorm2d(half), nn.ReLU())
  end
  self.branch2 = nn.Sequential(pointwise(stride > 1 and inp or half, half), nn.BatchNorm2d(half), nn.ReLU(),
    depthwise(half, stride), nn.BatchNorm2d(half), pointwise(half, half), nn.BatchNorm2d(half), nn.ReLU())
end

function InvertedResidual:forward(x)
  local out
  if self.stride == 1 then
    local halves = F.chunk(x, 2, 2)
    out = F.cat({ halves[1], self.branch2(halves[2]) }, 2)
  else
    out = F.cat({ self.branch1(x), self.branch2(x) }, 2)
  end
  return F.channel_shuffle(out, 2)
end

local ShuffleNetV2 = nn.Module:extend('ShuffleNetV2')
M.ShuffleNetV2 = ShuffleNetV2

-- opts: width (1.0 or 0.5), classes (1000)
function ShuffleNetV2:init(opts)
  opts = opts or {}
  local ch = widths[opts.width or 1.0]
  if not ch then error('shufflenetv2: width must be 1.0 or 0.5, got ' .. tostring(opts.width), 2) end
  self.conv1 = nn.Sequential(nn.Conv2d(3, ch[1], 3, { stride = 2, padding = 1, bias = false }),
    nn.BatchNorm2d(ch[1]), nn.ReLU())
  self.maxpool = nn.MaxPool2d(3, { stride = 2, padding = 1 })
  local inp = ch[1]
  for s, repeats in ipairs { 4, 8, 4 } do
    local oup = ch[s + 1]
    local blocks = { InvertedResidual(inp, oup, 2) }
    for _ = 2, repeats do blocks[#blocks + 1] = InvertedResidual(oup, oup, 1) end
    self['stage' .. (s + 1)] = nn.Sequential(unpack(blocks))
    inp = oup
  end
  self.conv5 = nn.Sequential(pointwise(inp, ch[5]), nn.BatchNorm2d(ch[5]), nn.ReLU())
  self.fc = nn.Linear(ch[5], opts.classes or 1000)
  self.channels = { stem = ch[1], e1 = ch[1], e2 = ch[2], e3 = ch[3], e4 = ch[4] }
end

function ShuffleNetV2:features(x)
  local f = {}
  f.stem = self.conv1(x)
  f.e1 = self.maxpool(f.stem)
  f.e2 = self.stage2(f.e1)
  f.e3 = self.stage3(f.e2)
  f.e4 = self.stage4(f.e3)
  return f
end

function ShuffleNetV2:forward(x)
  local head = self.conv5(self:features(x).e4)
  return self.fc(F.global_avg_pool(head))
end

function M.shufflenet_v2(opts) return ShuffleNetV2(opts) end

return M
