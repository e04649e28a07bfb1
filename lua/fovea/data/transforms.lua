-- transforms.lua: image transforms composed in Lua (fv.data.transforms).
--
--   local T = fv.data.transforms
--   local train = T.Compose { T.Resize(386), T.CLAHE(), T.RandomFlips(), T.RandomRotation(),
--                             T.ToTensor { channels = 3 } }
--   local x = train(img, { seed = 1, epoch = 1, index = 0 })   -- float32 3 x 386 x 386
--   local same = T.paper_train(386)                              -- the paper's pipeline
--
-- Each transform is a Lua object called as t(img, ctx) and knows its C step
-- (t:step(), fovea_data.h), so that the threaded loader can run a Compose of them in C
-- threads; T.Lambda(fn) has no C step and makes the loader run the pipeline in Lua.
--
-- Randomness. A random transform draws number j from
--   fv_data_uniform(ctx.seed, ctx.epoch, ctx.index, slot * 16 + j)
-- (Philox4x32-10; core/data_steps.c), where slot is the transform's position in its
-- Compose (from 0) and ctx.index the sample's dataset index counted from 0. A sample's
-- augmentation thus depends on (seed, epoch, index) alone, not on the number of loader
-- threads nor the order samples are processed in, and the Lua and C paths agree bit
-- for bit. Called without ctx, a transform uses seed 0, epoch 0 and a running counter
-- as the index.
local ffi = require 'ffi'
local clib = require 'fovea.clib'
local tensor = require 'fovea.tensor'
local image = require 'fovea.image'

local C, raise = clib.C, clib.raise
local T = {}

local Transform = {}
Transform.__index = Transform

local counter = 0
local function default_ctx()
  counter = counter + 1
  return { seed = 0, epoch = 0, index = counter - 1 }
end

function Transform:__call(img, ctx)
  ctx = ctx or default_ctx()
  return self:apply(img, ctx, ctx.slot or 0)
end

function Transform:__tostring() return 'fovea.data.transforms.' .. self.name end

-- This transform's C step as a table {kind, i = {...}, d = {...}}, or nil.
function Transform:step() return nil end

local function new(name, fields)
  fields.name = name
  return setmetatable(fields, Transform)
end

local function uniform(ctx, slot, j)
  return C.fv_data_uniform(ctx.seed or 0, ctx.epoch or 0, ctx.index or 0, slot * 16 + j)
end
T.uniform = uniform

-- The steps as a C array (fv_data_step[n]); slots as given in the tables.
function T.c_array(steps)
  local arr = ffi.new('fv_data_step[?]', math.max(#steps, 1))
  for k, s in ipairs(steps) do
    arr[k - 1].kind = s.kind
    arr[k - 1].slot = s.slot or -1
    for j = 1, 4 do arr[k - 1].i[j - 1] = (s.i or {})[j] or 0 end
    for j = 1, 8 do arr[k - 1].d[j - 1] = (s.d or {})[j] or 0 end
  end
  return arr
end

-- Runs C steps on img in C (used by Normalize; the loader runs whole pipelines so).
local out1 = ffi.new('fv_tensor*[1]')
function T.apply_steps(img, steps, ctx)
  clib.check(C.fv_data_apply(out1, img.p, #steps, T.c_array(steps), ctx.seed or 0, ctx.epoch or 0, ctx.index or 0))
  return tensor.wrap(out1[0])
end

---------------------------------------------------------------------------------------
-- Compose

-- Runs transforms in order; nested Composes are flattened, so slots are positions in
-- the flat list.
function T.Compose(list)
  if type(list) ~= 'table' then raise('fovea: Compose expects a list of transforms') end
  local flat = {}
  local function add(t)
    if type(t) == 'table' and t.name == 'Compose' then
      for _, u in ipairs(t.transforms) do add(u) end
    elseif type(t) == 'function' then
      add(T.Lambda(t))
    elseif getmetatable(t) == Transform then
      flat[#flat + 1] = t
    else
      raise('fovea: Compose: entry is not a transform (' .. type(t) .. ')')
    end
  end
  for _, t in ipairs(list) do add(t) end
  local self = new('Compose', { transforms = flat })
  function self.apply(s, img, ctx)
    for k, t in ipairs(s.transforms) do img = t:apply(img, ctx, k - 1) end
    return img
  end
  -- The C steps of the whole pipeline (slots set), or nil when one has none.
  function self.step() return nil end
  function self.steps(s)
    local steps = {}
    for k, t in ipairs(s.transforms) do
      local st = t:step()
      if not st then return nil end
      st.slot = k - 1
      steps[#steps + 1] = st
    end
    return steps
  end
  return self
end

-- A Compose of x: a transform, a list of them, or nil (ToTensor alone).
function T.as_compose(x)
  if x == nil then return T.Compose { T.ToTensor() } end
  if type(x) == 'table' and x.name == 'Compose' then return x end
  if type(x) == 'table' and getmetatable(x) ~= Transform then return T.Compose(x) end
  return T.Compose { x }
end

---------------------------------------------------------------------------------------
-- deterministic transforms

-- Resize(size) to size x size, or Resize(h, w); opts.mode 'linear_aa' (default: Pillow's
-- and torchvision's antialiased bilinear), 'linear' or 'area'. An image already of
-- that size is kept as it is.
function T.Resize(h, w, opts)
  if type(w) == 'table' then opts, w = w, nil end
  if type(h) == 'table' then h, w = h[1], h[2] end
  w = w or h
  opts = opts or {}
  local mode = opts.mode or 'linear_aa'
  local code = image.resize_modes[mode]
  if not code then raise('fovea: Resize: unknown mode ' .. tostring(mode)) end
  if type(h) ~= 'number' or type(w) ~= 'number' or h < 1 or w < 1 then raise('fovea: Resize: size must be positive') end
  return new('Resize', {
    h = h, w = w, mode = mode,
    apply = function(s, img)
      if img:size(1) == s.h and img:size(2) == s.w then return img end
      return image.resize(img, s.h, s.w, { mode = s.mode })
    end,
    step = function(s) return { kind = C.FV_STEP_RESIZE, i = { s.h, s.w, tonumber(code) } } end,
  })
end

-- CLAHE{clip = 40, tiles = {8, 8}, mode = 'auto'} (fv.image.clahe).
function T.CLAHE(opts)
  opts = opts or {}
  local tiles = opts.tiles or { 8, 8 }
  if type(tiles) == 'number' then tiles = { tiles, tiles } end
  local mode = opts.mode or 'auto'
  local code = image.clahe_modes[mode]
  if not code then raise('fovea: CLAHE: unknown mode ' .. tostring(mode)) end
  return new('CLAHE', {
    clip = opts.clip or 40, tiles = tiles, mode = mode,
    apply = function(s, img) return image.clahe(img, { clip = s.clip, tiles = s.tiles, mode = s.mode }) end,
    step = function(s)
      return { kind = C.FV_STEP_CLAHE, i = { s.tiles[1], s.tiles[2], tonumber(code) }, d = { s.clip } }
    end,
  })
end

-- Channels(n): to n channels (fv.image.channels).
function T.Channels(n)
  return new('Channels', {
    n = n,
    apply = function(s, img)
      if img:size(3) == s.n then return img end
      return image.channels(img, s.n)
    end,
    step = function(s) return { kind = C.FV_STEP_CHANNELS, i = { s.n } } end,
  })
end

-- ToTensor{channels = nil}: H x W x C uint8 -> float32 C x H x W in 0..1, after
-- converting to opts.channels when given (3 for networks that expect RGB).
function T.ToTensor(opts)
  opts = opts or {}
  return new('ToTensor', {
    channels = opts.channels,
    apply = function(s, img)
      if s.channels and img:size(3) ~= s.channels then img = image.channels(img, s.channels) end
      return image.to_tensor(img)
    end,
    step = function(s) return { kind = C.FV_STEP_TO_TENSOR, i = { s.channels or 0 } } end,
  })
end

-- Normalize(mean, std) on a float32 C x H x W tensor: (v - mean[c]) / std[c]; one value
-- or one per channel (at most 4).
function T.Normalize(mean, std)
  if type(mean) == 'number' then mean = { mean } end
  if type(std) == 'number' then std = { std } end
  if type(mean) ~= 'table' or type(std) ~= 'table' or #mean ~= #std or #mean < 1 or #mean > 4 then
    raise('fovea: Normalize: mean and std need the same number of values (1 to 4)')
  end
  local d = { 0, 0, 0, 0, 0, 0, 0, 0 }
  for k = 1, #mean do d[k], d[4 + k] = mean[k], std[k] end
  local self = new('Normalize', {
    mean = mean, std = std,
    step = function() return { kind = C.FV_STEP_NORMALIZE, i = { #mean }, d = d } end,
  })
  self.apply = function(s, x, ctx) return T.apply_steps(x, { s:step() }, ctx) end
  clib.check(C.fv_data_check_steps(1, T.c_array { self:step() })) -- std must be nonzero
  return self
end

-- ImageNet statistics, for ImageNet-pretrained backbones: T.Normalize(T.IMAGENET_MEAN, T.IMAGENET_STD).
T.IMAGENET_MEAN = { 0.485, 0.456, 0.406 }
T.IMAGENET_STD = { 0.229, 0.224, 0.225 }

-- Lambda(fn): fn(img, ctx) in Lua; a pipeline holding one runs in Lua, not in C threads.
function T.Lambda(fn)
  return new('Lambda', { fn = fn, apply = function(s, img, ctx) return s.fn(img, ctx) end })
end

---------------------------------------------------------------------------------------
-- random transforms

local function probability(name, p, default)
  p = p == nil and default or p
  if type(p) ~= 'number' or p < 0 or p > 1 then raise('fovea: ' .. name .. ': probability must be in [0, 1]') end
  return p
end

-- RandomFlips{horizontal = 0.5, vertical = 0.5, diagonal = 0.5}: each flip on its own
-- with its probability, in that order (diagonal = transpose: rows become columns). The
-- paper: "randomly flipped (horizontally, vertically, or diagonally)".
function T.RandomFlips(opts)
  opts = opts or {}
  return new('RandomFlips', {
    p = { probability('RandomFlips', opts.horizontal, 0.5), probability('RandomFlips', opts.vertical, 0.5),
      probability('RandomFlips', opts.diagonal, 0.5) },
    apply = function(s, img, ctx, slot)
      if uniform(ctx, slot, 0) < s.p[1] then img = image.hflip(img) end
      if uniform(ctx, slot, 1) < s.p[2] then img = image.vflip(img) end
      if uniform(ctx, slot, 2) < s.p[3] then img = image.transpose(img) end
      return img
    end,
    step = function(s) return { kind = C.FV_STEP_FLIPS, d = { s.p[1], s.p[2], s.p[3] } } end,
  })
end

-- RandomRotation{p = 0.5, degrees = {30, 270}, fill = 0}: with probability p, rotate
-- counter-clockwise by an angle drawn uniformly from [30, 270] degrees (bilinear, same
-- size, corners filled with fill). Choice: the paper says "randomly rotated (by 30° to
-- 270°)" without a distribution or a probability; a continuous uniform angle applied
-- to half of the samples keeps unrotated images in the training stream as well.
function T.RandomRotation(opts)
  opts = opts or {}
  local degrees = opts.degrees or { 30, 270 }
  if type(degrees) == 'number' then degrees = { -degrees, degrees } end
  if degrees[1] > degrees[2] then raise('fovea: RandomRotation: degrees must be {lo, hi} with lo <= hi') end
  return new('RandomRotation', {
    p = probability('RandomRotation', opts.p, 0.5), lo = degrees[1], hi = degrees[2], fill = opts.fill or 0,
    apply = function(s, img, ctx, slot)
      if not (uniform(ctx, slot, 0) < s.p) then return img end
      local angle = s.lo + (s.hi - s.lo) * uniform(ctx, slot, 1)
      return image.rotate(img, angle, { fill = s.fill })
    end,
    step = function(s) return { kind = C.FV_STEP_ROTATION, d = { s.p, s.lo, s.hi, s.fill } } end,
  })
end

---------------------------------------------------------------------------------------
-- the paper's pipelines (section 4.1)

-- Resize to size x size (antialiased bilinear), CLAHE, then for training random flips
-- and a random rotation, then a float32 3 x size x size tensor. Choices (the paper
-- names the operations only): CLAHE with OpenCV's defaults (clip 40, 8 x 8 tiles) in
-- mode 'auto': colour fundus images on L of LAB (as albumentations does), gray or
-- gray-replicated X-rays on the gray plane; CLAHE after resizing, so tiles cover the
-- same fraction of every image whatever its original size. opts: clahe = {clip, tiles,
-- mode} (false to skip), resize_mode, flip_p, rotation_p, degrees, mean and std (adds
-- a Normalize, e.g. T.IMAGENET_MEAN / T.IMAGENET_STD for pretrained backbones).
local function paper(size, opts, train)
  size = size or 386
  opts = opts or {}
  local list = { T.Resize(size, size, { mode = opts.resize_mode }) }
  if opts.clahe ~= false then list[#list + 1] = T.CLAHE(opts.clahe) end
  if train then
    local p = opts.flip_p or 0.5
    list[#list + 1] = T.RandomFlips { horizontal = p, vertical = p, diagonal = p }
    list[#list + 1] = T.RandomRotation { p = opts.rotation_p, degrees = opts.degrees }
  end
  list[#list + 1] = T.ToTensor { channels = 3 }
  if opts.mean or opts.std then list[#list + 1] = T.Normalize(opts.mean or { 0 }, opts.std or { 1 }) end
  return T.Compose(list)
end

function T.paper_train(size, opts) return paper(size, opts, true) end
function T.paper_eval(size, opts) return paper(size, opts, false) end

return T
