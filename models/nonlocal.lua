-- models/nonlocal.lua: the paper's non-local attention learning.
--   NAM(C, opts)        non-local attention module: theta, phi = 1x1 conv C -> C/2,
--                       g = 1x1 conv C -> C; y_i = sum_j softmax_j(theta_i . phi_j) g_j;
--                       out = y + x (residual).
--       opts.scale      false (default, as the paper: no scaling) or true (1/sqrt(C/2))
--       opts.residual   true (default; our choice: the module then refines x instead of
--                       replacing it, and starts close to the identity's information)
--       opts.fused      true (default): the fused kernel that never stores the N x N
--                       attention matrix; false: the plain matmul-softmax reference
--   NVCF(opts)          non-local visual context fusion: the NAM output brought to e4's
--                       size three ways (adaptive average pool, adaptive max pool,
--                       bilinear with align_corners = false) and concatenated (3C channels)
--   DualBranch(opts)    the classifier: branch A = backbone e1..e4; branch B = NAM on the
--                       encoder output nam_at, then NVCF; [e4, NVCF] concatenated, global
--                       average pool, linear (`classifier`; the backbone's own fc and, for
--                       ShuffleNetV2, conv5 are not used). Pretrained backbone weights
--                       load with net.backbone:load_state_dict(sd, {strict = false}).
--       opts.backbone   'resnet18' (default) or 'shufflenetv2'
--       opts.classes    2
--       opts.nam_at     0 (stem output), 1 (default), 2, 3 or 4
--       opts.variant    'baseline' | 'nam' (serial, inside the backbone after nam_at) |
--                       'nam+db' (parallel branch fused by one adaptive average pool) |
--                       'nam+db+nvcf' (default, the full model): the rows of Tables 1 and 3
--       opts.nam        options passed to NAM (scale, residual, fused)
local nn = require 'fovea.nn'
local F = require 'fovea.functional'
local resnet = require 'models.resnet'
local shufflenet = require 'models.shufflenetv2'

local M = {}

local NAM = nn.Module:extend('NAM')
M.NAM = NAM

function NAM:init(channels, opts)
  opts = opts or {}
  if channels < 2 then error('NAM: needs at least 2 channels, got ' .. tostring(channels), 2) end
  local inner = math.floor(channels / 2)
  self.theta = nn.Conv2d(channels, inner, 1)
  self.phi = nn.Conv2d(channels, inner, 1)
  self.g = nn.Conv2d(channels, channels, 1)
  self.scale = opts.scale and 1 / math.sqrt(inner) or 1
  self.residual = opts.residual == nil or opts.residual
  self.fused = opts.fused == nil or opts.fused
end

-- (B, C, H, W) -> (B, N, C) with N = H*W positions
local function positions(t)
  local b, c = t:size(1), t:size(2)
  return t:view(b, c, -1):transpose(2, 3)
end

function NAM:forward(x)
  local b, c, h, w = x:size(1), x:size(2), x:size(3), x:size(4)
  local y = F.nam_attention(positions(self.theta(x)), positions(self.phi(x)), positions(self.g(x)),
    { scale = self.scale, fused = self.fused })                      -- (B, N, C)
  y = y:transpose(2, 3):reshape(b, c, h, w)
  if self.residual then y = y + x end
  return y
end

local NVCF = nn.Module:extend('NVCF')
M.NVCF = NVCF

function NVCF:init(opts)
  self.single = opts and opts.single -- only the adaptive average pool ('nam+db')
end

-- z (B, C, H, W) to size {h, w}: (B, 3C, h, w), or (B, C, h, w) when single
function NVCF:forward(z, size)
  local avg = F.adaptive_avg_pool2d(z, size)
  if self.single then return avg end
  return F.cat({ avg, F.adaptive_max_pool2d(z, size), F.interpolate(z, size, { align_corners = false }) }, 2)
end

local backbones = {
  resnet18 = function(classes) return resnet.resnet18 { classes = classes } end,
  shufflenetv2 = function(classes) return shufflenet.shufflenet_v2 { width = 1.0, classes = classes } end,
}
local variants = { baseline = true, nam = true, ['nam+db'] = true, ['nam+db+nvcf'] = true }
local stage_names = { [0] = 'stem', 'e1', 'e2', 'e3', 'e4' }

local DualBranch = nn.Module:extend('DualBranch')
M.DualBranch = DualBranch

function DualBranch:init(opts)
  opts = opts or {}
  local name = opts.backbone or 'resnet18'
  if not backbones[name] then error('dual: unknown backbone ' .. tostring(name) .. ' (resnet18, shufflenetv2)', 2) end
  self.variant = opts.variant or 'nam+db+nvcf'
  if not variants[self.variant] then
    error('dual: unknown variant ' .. tostring(self.variant) .. ' (baseline, nam, nam+db, nam+db+nvcf)', 2)
  end
  self.nam_at = opts.nam_at or 1
  if not stage_names[self.nam_at] then error('dual: nam_at must be 0..4, got ' .. tostring(self.nam_at), 2) end
  local classes = opts.classes or 2
  self.backbone = backbones[name](classes)
  self.backbone.fc = nil -- the classifier below replaces the backbone's own head
  if name == 'shufflenetv2' then self.backbone.conv5 = nil end
  local channels = self.backbone.channels
  local nam_channels = channels[stage_names[self.nam_at]]
  local head_in = channels.e4
  if self.variant ~= 'baseline' then self.nam = NAM(nam_channels, opts.nam) end
  if self.variant == 'nam+db' or self.variant == 'nam+db+nvcf' then
    self.nvcf = NVCF { single = self.variant == 'nam+db' }
    head_in = head_in + nam_channels * (self.variant == 'nam+db' and 1 or 3)
  end
  self.classifier = nn.Linear(head_in, classes)
end

-- The backbone's encoder outputs; with the serial variant NAM replaces the output of
-- stage nam_at before the next stage runs. Returns the features and the NAM output.
function DualBranch:encode(x)
  local bb, serial = self.backbone, self.variant == 'nam'
  local f, z = {}, nil
  local function stage(i, value)
    if self.nam and i == self.nam_at then
      z = self.nam(value)
      if serial then value = z end
    end
    f[stage_names[i]] = value
    return value
  end
  local h
  if bb.layer1 then -- ResNet
    h = stage(0, bb.relu(bb.bn1(bb.conv1(x))))
    h = stage(1, bb.layer1(bb.maxpool(h)))
    h = stage(2, bb.layer2(h))
    h = stage(3, bb.layer3(h))
    stage(4, bb.layer4(h))
  else -- ShuffleNetV2
    h = stage(0, bb.conv1(x))
    h = stage(1, bb.maxpool(h))
    h = stage(2, bb.stage2(h))
    h = stage(3, bb.stage3(h))
    stage(4, bb.stage4(h))
  end
  return f, z
end

-- The map the classifier pools: e4, or [e4, NVCF(NAM)] (what Grad-CAM looks at).
function DualBranch:fused_map(x)
  local f, z = self:encode(x)
  if not self.nvcf then return f.e4 end
  return F.cat({ f.e4, self.nvcf(z, { f.e4:size(3), f.e4:size(4) }) }, 2)
end

function DualBranch:classify(map)
  return self.classifier(F.global_avg_pool(map))
end

function DualBranch:forward(x)
  return self:classify(self:fused_map(x))
end

M.stage_names = stage_names
return M
