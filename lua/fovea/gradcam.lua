-- gradcam.lua: Grad-CAM (Selvaraju et al.) heat maps. For a model with :fused_map(x)
-- (the feature map its classifier pools, A: (B, K, h, w)) and :classify(map) (logits),
-- the map of class c is ReLU(sum_k w_k A_k) with w_k = the mean over positions of
-- d(score_c)/dA_k (the score before softmax), upsampled bilinearly to the input size and
-- min-max normalised to [0, 1].
--   local cams = fv.gradcam.maps(model, x, {class = 2})   -- (B, H, W) float32 in [0, 1], on the CPU
--   (x may be on any device: it runs where the model's parameters are)
--   local rgb = fv.gradcam.overlay(image_hwc_uint8, cams[1], {alpha = 0.5})  -- H x W x 3 uint8
--   fv.gradcam.save_panel(path, {rgb_a, rgb_b, ...})     -- side by side, one PNG
local tensor = require 'fovea.tensor'
local F = require 'fovea.functional'
local image = require 'fovea.image'
local raise = require('fovea.clib').raise

local M = {}

-- Heat maps of class opts.class (default: each image's predicted class) for a batch.
function M.maps(model, x, opts)
  opts = opts or {}
  if not (model.fused_map and model.classify) then
    raise('fovea: gradcam: the model needs :fused_map(x) and :classify(map) (the dual-branch models have them)')
  end
  local params = model:parameters()
  local device = params[1] and params[1]:device() or 'cpu'
  x = x:to(device)
  local was_training = model.training
  model:evaluate()
  local map = tensor.no_grad(function() return model:fused_map(x) end):detach()
  map.requires_grad = true
  local logits = model:classify(map)
  local b, k = logits:size(1), logits:size(2)
  local classes = {}
  if opts.class then
    for i = 1, b do classes[i] = opts.class end
  else
    classes = logits:argmax(2):cpu():totable()
  end
  local onehot = tensor.zeros({ b, k })
  for i = 1, b do onehot:set(1, i, classes[i]) end
  onehot = onehot:to(device)
  ;(logits * onehot):sum():backward()
  model:train(was_training)
  local grad = map.grad
  local weights = grad:mean(4):mean(3)                                   -- (B, K)
  local cam = (map:detach() * weights:view(b, -1, 1, 1)):sum(2, true):relu() -- (B, 1, h, w)
  cam = F.interpolate(cam, { x:size(3), x:size(4) }):squeeze(2)          -- (B, H, W)
  local lo = cam:view(b, -1):min(2):view(b, 1, 1)
  local hi = cam:view(b, -1):max(2):view(b, 1, 1)
  return ((cam - lo) / (hi - lo):maximum(1e-12)):cpu(), classes
end

-- The jet colour map of v in [0, 1] (H, W) as (3, H, W) floats in [0, 1].
local function jet(v)
  local channels = {}
  for i, centre in ipairs { 3, 2, 1 } do
    channels[i] = (1.5 - (v * 4 - centre):abs()):clamp(0, 1):unsqueeze(1)
  end
  return F.cat(channels, 1)
end

-- The heat map blended over an H x W x 3 uint8 image; alpha is the map's weight.
function M.overlay(img, cam, opts)
  local alpha = (opts and opts.alpha) or 0.5
  local base = image.to_tensor(image.channels(img, 3))                    -- (3, H, W)
  if base:size(2) ~= cam:size(1) or base:size(3) ~= cam:size(2) then
    raise(('fovea: gradcam.overlay: image %dx%d and map %dx%d differ'):format(base:size(2), base:size(3),
      cam:size(1), cam:size(2)))
  end
  return image.from_tensor(base * (1 - alpha) + jet(cam) * alpha, { lo = 0, hi = 1 })
end

-- Images (H x W x C uint8, equal heights) side by side with a 4-pixel gap, as a PNG.
function M.save_panel(path, images)
  local parts = {}
  for i, img in ipairs(images) do
    parts[#parts + 1] = image.to_tensor(image.channels(img, 3))
    if i < #images then parts[#parts + 1] = tensor.ones({ 3, img:size(1), 4 }) end
  end
  image.save(path, image.from_tensor(F.cat(parts, 3), { lo = 0, hi = 1 }))
  return path
end

return M
