-- models/resnet.lua: ResNet18 (He et al.) with torchvision's structure and parameter
-- names (conv1, bn1, layer1.0.conv1, ..., fc), so converted ImageNet weights load.
-- The stages are exposed as the encoders the dual-branch model uses:
--   stem = conv1, bn1, relu (output /2), e1 = maxpool + layer1 (/4), e2 = layer2 (/8),
--   e3 = layer3 (/16), e4 = layer4 (/32). For a 386x386 input: e1 64x97x97, e2 128x49x49,
--   e3 256x25x25, e4 512x13x13.
--   local resnet = require 'models.resnet'
--   local net = resnet.resnet18{classes = 2}       -- net(x) -> (B, classes) logits
--   local feats = net:features(x)                    -- {stem=, e1=, e2=, e3=, e4=}
-- Options: classes (1000), block_hook(block, stage, index) to modify blocks (used to
-- embed attention baselines), zero_init_residual (false, as torchvision).
local fv = require 'fovea'
local nn = require 'fovea.nn'

local M = {}

local function conv3x3(cin, cout, stride)
  return nn.Conv2d(cin, cout, 3, { stride = stride or 1, padding = 1, bias = false })
end

local function conv1x1(cin, cout, stride)
  return nn.Conv2d(cin, cout, 1, { stride = stride or 1, bias = false })
end

-- conv3x3(stride) BN ReLU conv3x3 BN, plus the shortcut (1x1/stride + BN when the shape
-- changes), then ReLU. extra (optional) runs on the residual branch after bn2, before
-- the add: where SE and CBAM go.
local BasicBlock = nn.Module:extend('BasicBlock')
M.BasicBlock = BasicBlock

function BasicBlock:init(inplanes, planes, stride)
  stride = stride or 1
  self.conv1 = conv3x3(inplanes, planes, stride)
  self.bn1 = nn.BatchNorm2d(planes)
  self.relu = nn.ReLU()
  self.conv2 = conv3x3(planes, planes)
  self.bn2 = nn.BatchNorm2d(planes)
  if stride ~= 1 or inplanes ~= planes then
    self.downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
  end
  self.planes = planes
end

function BasicBlock:forward(x)
  local out = self.relu(self.bn1(self.conv1(x)))
  out = self.bn2(self.conv2(out))
  if self.extra then out = self.extra(out) end
  local identity = self.downsample and self.downsample(x) or x
  return (out + identity):relu()
end

local ResNet = nn.Module:extend('ResNet')
M.ResNet = ResNet

-- layers: blocks per stage ({2, 2, 2, 2} for ResNet18)
function ResNet:init(layers, opts)
  opts = opts or {}
  self.conv1 = nn.Conv2d(3, 64, 7, { stride = 2, padding = 3, bias = false })
  self.bn1 = nn.BatchNorm2d(64)
  self.relu = nn.ReLU()
  self.maxpool = nn.MaxPool2d(3, { stride = 2, padding = 1 })
  local inplanes = 64
  for stage, planes in ipairs { 64, 128, 256, 512 } do
    local blocks = {}
    for i = 1, layers[stage] do
      local block = BasicBlock(inplanes, planes, (i == 1 and stage > 1) and 2 or 1)
      if opts.block_hook then opts.block_hook(block, stage, i) end
      blocks[i] = block
      inplanes = planes
    end
    self['layer' .. stage] = nn.Sequential(unpack(blocks))
  end
  self.avgpool = nn.AdaptiveAvgPool2d(1)
  self.fc = nn.Linear(512, opts.classes or 1000)
  self.channels = { stem = 64, e1 = 64, e2 = 128, e3 = 256, e4 = 512 }
  -- torchvision's initialisation: kaiming normal (fan_out, relu) for convolutions
  for _, m in ipairs(self:modules()) do
    if m.__name == 'Conv2d' then nn.init.kaiming_normal_(m.weight, { mode = 'fan_out', nonlinearity = 'relu' }) end
  end
  if opts.zero_init_residual then
    for _, m in ipairs(self:modules()) do
      if m.__name == 'BasicBlock' then nn.init.zeros_(m.bn2.weight) end
    end
  end
end

-- The stem and the four encoder outputs.
function ResNet:features(x)
  local f = {}
  f.stem = self.relu(self.bn1(self.conv1(x)))
  f.e1 = self.layer1(self.maxpool(f.stem))
  f.e2 = self.layer2(f.e1)
  f.e3 = self.layer3(f.e2)
  f.e4 = self.layer4(f.e3)
  return f
end

function ResNet:forward(x)
  local e4 = self:features(x).e4
  return self.fc(self.avgpool(e4):view(e4:size(1), -1))
end

function M.resnet18(opts) return ResNet({ 2, 2, 2, 2 }, opts) end

return M
