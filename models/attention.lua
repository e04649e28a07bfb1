-- models/attention.lua: the attention baselines of the paper's Table 2, embedded in
-- ResNet18 as their own papers do.
--   SE(C, {reduction = 16})     squeeze-and-excitation: GAP -> FC(C, C/16, no bias) -> ReLU
--                               -> FC(C/16, C, no bias) -> sigmoid -> scale; in every
--                               BasicBlock after bn2, before the residual add
--   CBAM(C, {reduction = 16})   channel gate (shared MLP C -> C/16 -> C with bias on the
--                               average- and max-pooled vectors, summed, sigmoid) then
--                               spatial gate (concat[max over C, mean over C] -> 7x7 conv
--                               pad 3 no bias -> BN -> sigmoid); every block, after bn2
--   NonLocalBlock(C)            Wang et al., embedded Gaussian: theta, phi, g: C -> C/2;
--                               softmax(theta^T phi) g; W: 1x1 C/2 -> C + BN with gamma
--                               initialised to 0 (starts as the identity); z = W(y) + x.
--                               One block between layer3.0 and layer3.1
--   CrissCross(C, {recurrence = 2})  CCNet: query/key 1x1 C -> C/8, value C -> C; each
--                               position attends to its row and column (H + W - 1
--                               positions, itself once); out = gamma*attention + x with
--                               gamma initialised to 0; applied `recurrence` times with
--                               shared weights. Placed after layer4 (CCNet's RCCA head
--                               position on the last stage)
--   resnet18_with(kind, opts)   ResNet18 with the baseline embedded; kind: 'se', 'cbam',
--                               'nonlocal', 'ccnet'
local fv = require 'fovea'
local nn = require 'fovea.nn'
local F = require 'fovea.functional'
local resnet = require 'models.resnet'

local M = {}

local SE = nn.Module:extend('SE')
M.SE = SE

function SE:init(channels, opts)
  local hidden = math.max(1, math.floor(channels / ((opts and opts.reduction) or 16)))
  self.fc1 = nn.Linear(channels, hidden, { bias = false })
  self.relu = nn.ReLU()
  self.fc2 = nn.Linear(hidden, channels, { bias = false })
end

function SE:forward(x)
  local b, c = x:size(1), x:size(2)
  local w = self.fc2(self.relu(self.fc1(F.global_avg_pool(x)))):sigmoid()
  return x * w:view(b, c, 1, 1)
end

local CBAM = nn.Module:extend('CBAM')
M.CBAM = CBAM

function CBAM:init(channels, opts)
  local hidden = math.max(1, math.floor(channels / ((opts and opts.reduction) or 16)))
  self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
  self.spatial = nn.Conv2d(2, 1, 7, { padding = 3, bias = false })
  self.spatial_bn = nn.BatchNorm2d(1)
end

function CBAM:forward(x)
  local b, c = x:size(1), x:size(2)
  local avg = F.global_avg_pool(x)
  local max = F.adaptive_max_pool2d(x, 1):view(b, c)
  local channel_gate = (self.mlp(avg) + self.mlp(max)):sigmoid():view(b, c, 1, 1)
  x = x * channel_gate
  local pooled = F.cat({ x:max(2, true), x:mean(2, true) }, 2)             -- (B, 2, H, W)
  return x * self.spatial_bn(self.spatial(pooled)):sigmoid()
end

local NonLocalBlock = nn.Module:extend('NonLocalBlock')
M.NonLocalBlock = NonLocalBlock

function NonLocalBlock:init(channels)
  local inner = math.max(1, math.floor(channels / 2))
  self.theta = nn.Conv2d(channels, inner, 1)
  self.phi = nn.Conv2d(channels, inner, 1)
  self.g = nn.Conv2d(channels, inner, 1)
  self.W = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))
  nn.init.zeros_(self.W[2].weight)
  nn.init.zeros_(self.W[2].bias)
end

local function positions(t)
  return t:view(t:size(1), t:size(2), -1):transpose(2, 3)              -- (B, N, C)
end

function NonLocalBlock:forward(x)
  local b, h, w = x:size(1), x:size(3), x:size(4)
  local y = F.nam_attention(positions(self.theta(x)), positions(self.phi(x)), positions(self.g(x)))
  y = y:transpose(2, 3):reshape(b, -1, h, w)
  return self.W(y) + x
end

local CrissCross = nn.Module:extend('CrissCross')
M.CrissCross = CrissCross

function CrissCross:init(channels, opts)
  local inner = math.max(1, math.floor(channels / 8))
  self.query = nn.Conv2d(channels, inner, 1)
  self.key = nn.Conv2d(channels, inner, 1)
  self.value = nn.Conv2d(channels, channels, 1)
  self:register_parameter('gamma', fv.zeros({ 1 }))
  self.recurrence = (opts and opts.recurrence) or 2
end

function CrissCross:forward(x)
  for _ = 1, self.recurrence do
    local att = F.criss_cross_attention(self.query(x), self.key(x), self.value(x))
    x = att * self.gamma + x
  end
  return x
end

-- A ResNet18 whose forward runs the baseline at its usual place.
local BaselineResNet = nn.Module:extend('BaselineResNet')

function BaselineResNet:init(kind, opts)
  opts = opts or {}
  local hook
  if kind == 'se' or kind == 'cbam' then
    local Gate = kind == 'se' and SE or CBAM
    hook = function(block) block.extra = Gate(block.planes) end
  end
  self.backbone = resnet.resnet18 { classes = opts.classes or 2, block_hook = hook }
  if kind == 'nonlocal' then self.nonlocal_block = NonLocalBlock(256) end
  if kind == 'ccnet' then self.cca = CrissCross(512, { recurrence = opts.recurrence }) end
  self.kind = kind
end

function BaselineResNet:features(x)
  local bb = self.backbone
  local f = {}
  f.stem = bb.relu(bb.bn1(bb.conv1(x)))
  f.e1 = bb.layer1(bb.maxpool(f.stem))
  f.e2 = bb.layer2(f.e1)
  local h = bb.layer3[1](f.e2)
  if self.nonlocal_block then h = self.nonlocal_block(h) end
  f.e3 = bb.layer3[2](h)
  f.e4 = bb.layer4(f.e3)
  if self.cca then f.e4 = self.cca(f.e4) end
  return f
end

function BaselineResNet:forward(x)
  return self.backbone.fc(F.global_avg_pool(self:features(x).e4))
end

function M.resnet18_with(kind, opts)
  if kind ~= 'se' and kind ~= 'cbam' and kind ~= 'nonlocal' and kind ~= 'ccnet' then
    error('attention baseline must be se, cbam, nonlocal or ccnet, got ' .. tostring(kind), 2)
  end
  return BaselineResNet(kind, opts)
end

return M
