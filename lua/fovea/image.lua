-- image.lua: image files and image processing (fv.image), over the C functions of
-- core/fovea_image.h. Images are CPU tensors H x W x C (HWC): uint8 0..255 with C = 1
-- (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA), or float32. Network inputs are float32
-- C x H x W (to_tensor). Errors come from the C core and name the op and the file.
--
--   local img = fv.image.load('fundus.tif')                 -- 960x1440x3 uint8
--   local small = fv.image.resize(img, 386, 386, {mode = 'linear_aa'})
--   local eq = fv.image.clahe(small, {clip = 40, tiles = {8, 8}, mode = 'lab'})
--   local x = fv.image.to_tensor(eq, {mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225}})
--   fv.image.save('out.png', eq)
local ffi = require 'ffi'
local clib = require 'fovea.clib'
local tensor = require 'fovea.tensor'

local C, check, raise = clib.C, clib.check, clib.raise
local make, is_tensor = tensor.make, tensor.is_tensor

local M = {}

local resize_modes = { linear = C.FV_RESIZE_LINEAR, linear_aa = C.FV_RESIZE_LINEAR_AA, area = C.FV_RESIZE_AREA }
local clahe_modes = { auto = C.FV_DATA_CLAHE_AUTO, gray = C.FV_DATA_CLAHE_GRAY, lab = C.FV_DATA_CLAHE_LAB,
  green = C.FV_DATA_CLAHE_GREEN }
M.resize_modes, M.clahe_modes = resize_modes, clahe_modes

local function need_image(name, img)
  if not is_tensor(img) then raise('fovea: image.' .. name .. ': expected an image tensor, got ' .. type(img)) end
end

local function need_int(name, what, v, lo)
  if type(v) ~= 'number' or v ~= math.floor(v) or v < (lo or -math.huge) then
    raise(('fovea: image.%s: %s must be an integer%s, got %s'):format(name, what,
      lo and (' >= ' .. lo) or '', tostring(v)))
  end
  return v
end

local function mode_code(name, modes, mode, default)
  mode = mode or default
  local code = modes[mode]
  if not code then
    local names = {}
    for k in pairs(modes) do names[#names + 1] = "'" .. k .. "'" end
    table.sort(names)
    raise(('fovea: image.%s: unknown mode %s (one of %s)'):format(name, tostring(mode), table.concat(names, ', ')))
  end
  return tonumber(code)
end

---------------------------------------------------------------------------------------
-- files

-- A PNG or TIFF file as an H x W x C uint8 image. opts.keep16: a 16-bit PNG gives
-- float32 holding 0..65535 instead of uint8.
function M.load(path, opts)
  if type(path) ~= 'string' then raise('fovea: image.load: path must be a string, got ' .. type(path)) end
  opts = opts or {}
  if opts.keep16 then
    local f = io.open(path, 'rb')
    local magic = f and f:read(8)
    if f then f:close() end
    if magic == '\137PNG\r\n\26\n' then return make(C.fv_image_read_png, path, 1) end
  end
  return make(C.fv_image_read, path)
end

-- Writes img as PNG: uint8 (C = 1..4) as 8-bit, float32 as 16-bit (rounded, clamped).
function M.save(path, img)
  if type(path) ~= 'string' then raise('fovea: image.save: path must be a string, got ' .. type(path)) end
  need_image('save', img)
  check(C.fv_image_write_png(path, img.p))
end

---------------------------------------------------------------------------------------
-- processing

-- To h x w. opts.mode: 'linear' (default; OpenCV INTER_LINEAR, torch bilinear without
-- antialias), 'linear_aa' (Pillow BILINEAR, torch antialias = true) or 'area'.
function M.resize(img, h, w, opts)
  need_image('resize', img)
  if type(w) == 'table' or w == nil then opts, w = w, h end
  need_int('resize', 'height', h, 1)
  need_int('resize', 'width', w, 1)
  opts = opts or {}
  return make(C.fv_image_resize, img.p, h, w, mode_code('resize', resize_modes, opts.mode, 'linear'))
end

-- Contrast limited adaptive histogram equalisation as OpenCV's createCLAHE (uint8).
-- opts.clip (default 40, OpenCV's; <= 0: no clipping), opts.tiles = {x, y} (default
-- {8, 8}), opts.mode: 'auto' (default: gray images and gray-replicated colour ones on
-- the gray plane, colour ones on L of LAB), 'gray', 'lab' or 'green' (fovea_data.h).
function M.clahe(img, opts)
  need_image('clahe', img)
  opts = opts or {}
  local clip = opts.clip or 40
  local tiles = opts.tiles or { 8, 8 }
  if type(tiles) == 'number' then tiles = { tiles, tiles } end
  if type(clip) ~= 'number' then raise('fovea: image.clahe: clip must be a number') end
  need_int('clahe', 'tiles[1]', tiles[1], 1)
  need_int('clahe', 'tiles[2]', tiles[2], 1)
  return make(C.fv_data_clahe, img.p, clip, tiles[1], tiles[2], mode_code('clahe', clahe_modes, opts.mode, 'auto'))
end

function M.hflip(img)
  need_image('hflip', img)
  return make(C.fv_image_flip, img.p, C.FV_FLIP_HORIZONTAL)
end

function M.vflip(img)
  need_image('vflip', img)
  return make(C.fv_image_flip, img.p, C.FV_FLIP_VERTICAL)
end

-- The diagonal flip: rows become columns (W x H x C).
function M.transpose(img)
  need_image('transpose', img)
  return make(C.fv_image_flip, img.p, C.FV_FLIP_TRANSPOSE)
end

-- By degrees counter-clockwise about the centre, same size, bilinear; outside samples
-- read opts.fill (default 0).
function M.rotate(img, degrees, opts)
  need_image('rotate', img)
  if type(degrees) ~= 'number' then raise('fovea: image.rotate: degrees must be a number') end
  opts = opts or {}
  return make(C.fv_image_rotate, img.p, degrees, opts.fill or 0)
end

-- Rows y .. y+h-1 and columns x .. x+w-1, counted from 1; the window must lie inside.
function M.crop(img, y, x, h, w)
  need_image('crop', img)
  need_int('crop', 'y', y, 1)
  need_int('crop', 'x', x, 1)
  need_int('crop', 'height', h, 1)
  need_int('crop', 'width', w, 1)
  return make(C.fv_image_crop, img.p, y - 1, x - 1, h, w)
end

-- Adds rows and columns of opts.value (default 0): pad(img, top, bottom, left, right,
-- opts), or pad(img, n, opts) for n on every side.
function M.pad(img, top, bottom, left, right, opts)
  need_image('pad', img)
  if type(bottom) ~= 'number' then opts, bottom, left, right = bottom, top, top, top end
  for _, v in ipairs { top, bottom, left, right } do need_int('pad', 'padding', v, 0) end
  opts = opts or {}
  return make(C.fv_image_pad, img.p, top, bottom, left, right, opts.value or 0)
end

---------------------------------------------------------------------------------------
-- conversion

local function channel_values(name, what, v, c)
  if v == nil then return nil end
  if type(v) == 'number' then v = { v } end
  if type(v) ~= 'table' or (#v ~= 1 and #v ~= c) then
    raise(('fovea: image.%s: %s needs 1 or %d values'):format(name, what, c))
  end
  local buf = ffi.new('double[?]', c)
  for k = 1, c do buf[k - 1] = v[#v == 1 and 1 or k] end
  return buf
end

-- H x W x C image -> float32 C x H x W: uint8 divided by 255; then (v - mean) / std
-- per channel when opts.mean / opts.std are given (one value, or one per channel).
function M.to_tensor(img, opts)
  need_image('to_tensor', img)
  opts = opts or {}
  local c = img:dim() == 3 and img:size(3) or 1
  local mean = channel_values('to_tensor', 'mean', opts.mean, c)
  local std = channel_values('to_tensor', 'std', opts.std, c)
  return make(C.fv_image_to_chw, img.p, mean, std)
end

-- float C x H x W (or H x W) -> uint8 H x W x C, opts.lo -> 0 and opts.hi -> 255
-- (defaults 0 and 1), rounded and clamped.
function M.from_tensor(chw, opts)
  need_image('from_tensor', chw)
  opts = opts or {}
  return make(C.fv_image_from_chw, chw.p, opts.lo or 0, opts.hi or 1)
end

-- The image with n channels: 1 gray (luma as OpenCV), 2 gray+alpha, 3 RGB (gray
-- replicated), 4 RGBA; alpha kept, dropped or added opaque.
function M.channels(img, n)
  need_image('channels', img)
  need_int('channels', 'channels', n, 1)
  return make(C.fv_image_channels, img.p, n)
end

-- Height, width and channels of an H x W x C image.
function M.size(img)
  need_image('size', img)
  return img:size(1), img:size(2), img:dim() == 3 and img:size(3) or 1
end

return M
