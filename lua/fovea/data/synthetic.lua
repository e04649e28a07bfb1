-- synthetic.lua: a synthetic tiny-lesion data set (fv.data.synthetic), generated
-- deterministically from a seed, for testing the pipeline and the models when the real
-- data sets are not at hand.
--
--   local csv_path, meta = fv.data.synthetic.generate('/tmp/synth', {n = 400, size = 386, seed = 1})
--   local ds = fv.data.datasets.CSV(csv_path)      -- classes {'negative', 'positive'}
--
-- Images are fundus-like RGB: a dark background, an orange-red disc darker at the rim,
-- faint large brightness variations, a darker macula, a bright optic disc with four
-- curved vessel arcades and their branches, and noise. Positive images carry 2 to 6
-- tiny lesions anywhere on the disc outside the optic disc: microaneurysm-like dark red
-- dots and exudate-like bright yellow specks, 2 to 6 pixels across at 386 px (scaled
-- with the size; opts.lesion_size = {lo, hi} in pixels of the generated image sets it
-- directly, e.g. to keep lesions visible in a small image generated for a quick run). Both classes carry the same larger distractors (soft blobs 16 to 40
-- px across, darker or brighter) and the same brightness variations, so only the tiny
-- lesions tell the classes apart: at 96 px they are a pixel or less.
--
-- Everything about image i comes from fv_data_uniform(seed, 0, i - 1, k) (Philox), so
-- a seed gives identical files on any machine. The geometry is chosen here; the
-- drawing is C (core/synthetic.c).
--
-- Layout of dir: images/00001.png ..., index.csv (path,label: paths relative to dir,
-- labels 'negative' or 'positive'), lesions.csv (path,kind,y,x,diameter: centres in
-- pixels counted from 1), manifest.txt (the configuration; written last, so an
-- interrupted run is redone). generate skips the work when the manifest matches.
local ffi = require 'ffi'
local clib = require 'fovea.clib'
local tensor = require 'fovea.tensor'
local image = require 'fovea.image'
local fs = require 'fovea.data.fs'
local csv = require 'fovea.data.csv'

local C, check, raise = clib.C, clib.check, clib.raise
local M = {}

M.VERSION = 1
M.classes = { 'negative', 'positive' }
local POSITIVE_STREAM = 0xFFFFFFFD -- the sample index reserved for choosing the positives

-- Draws of image `index` for `seed`: r() uniform [0, 1), r(lo, hi) uniform [lo, hi).
local function stream(seed, index)
  local k = -1
  return function(lo, hi)
    k = k + 1
    local u = C.fv_data_uniform(seed, 0, index, k)
    if lo then return lo + (hi - lo) * u end
    return u
  end
end

local colour = ffi.new('double[4]')
local function rgb(c)
  colour[0], colour[1], colour[2] = c[1], c[2], c[3]
  return colour
end

local function disc(img, y, x, radius, c, opacity, softness, vignette)
  check(C.fv_draw_disc(img.p, y, x, radius, rgb(c), opacity, softness, vignette or 0))
end

local function scaled(c, f) return { c[1] * f, c[2] * f, c[3] * f } end

-- A curved vessel from (y, x) heading `angle` (radians), bending by `bend` radians in
-- all; points stop at the fundus rim. Returns the points as C arrays and their count.
local function vessel(r, y, x, angle, bend, length, cy, cx, R)
  local n = 32
  local ys, xs = ffi.new('double[?]', n), ffi.new('double[?]', n)
  local count = 0
  for k = 0, n - 1 do
    if (y - cy) ^ 2 + (x - cx) ^ 2 > (0.97 * R) ^ 2 then break end
    ys[k], xs[k] = y, x
    count = k + 1
    local step = length / (n - 1)
    angle = angle + bend / (n - 1) + r(-0.04, 0.04)
    y, x = y + step * math.sin(angle), x + step * math.cos(angle)
  end
  return ys, xs, count
end

local function polyline(img, ys, xs, count, w0, w1, c, opacity, softness)
  if count < 2 then return end
  check(C.fv_draw_polyline(img.p, count, ys, xs, w0, w1, rgb(c), opacity, softness))
end

-- Image `index` (from 0) of a set: an H x W x 3 uint8 tensor and its lesions
-- { {kind = 'microaneurysm' | 'exudate', y =, x =, diameter =}, ... } (centres counted
-- from 1). positive: whether it carries lesions.
-- lesion_size: {lo, hi} diameters in pixels (default {2, 6} scaled by size / 386).
function M.render(size, seed, index, positive, lesion_size)
  local r = stream(seed, index)
  local s = size / 386
  local lesion_lo, lesion_hi = 2 * s, 6 * s
  if lesion_size then lesion_lo, lesion_hi = lesion_size[1], lesion_size[2] end
  local img = tensor.empty({ size, size, 3 }, { dtype = 'uint8' })
  ffi.fill(img:data_ptr(), size * size * 3, 0)
  local cy, cx = size / 2 + r(-0.02, 0.02) * size, size / 2 + r(-0.02, 0.02) * size
  local R = size * r(0.44, 0.48)
  local brightness = r(0.8, 1.15)
  local base = { r(185, 225) * brightness, r(70, 100) * brightness, r(25, 45) * brightness }
  local noise_amplitude, noise_seed = r(3, 5), math.floor(r() * 2 ^ 32)

  -- the fundus, darker at the rim, and broad brightness variations
  disc(img, cy, cx, R, base, 1, 1.5 * s, r(0.45, 0.65))
  for _ = 1, 3 + math.floor(r() * 4) do
    local rho, phi, rad = R * math.sqrt(r()), r(0, 2 * math.pi), R * r(0.2, 0.45)
    disc(img, cy + rho * math.sin(phi), cx + rho * math.cos(phi), rad, scaled(base, r(0.8, 1.2)), r(0.08, 0.2), rad, 0)
  end

  -- optic disc on one side, macula towards the other
  local side = r() < 0.5 and -1 or 1
  local oy, ox = cy + r(-0.08, 0.08) * R, cx + side * R * r(0.5, 0.6)
  local my, mx = cy + r(-0.05, 0.05) * R, cx - side * R * r(0.12, 0.22)
  disc(img, my, mx, R * 0.16, scaled(base, 0.55), 0.45, R * 0.12, 0)
  local odr = R * r(0.11, 0.14)
  disc(img, oy, ox, odr, { 250, 222, 160 }, 0.92, 3 * s, 0.25)
  disc(img, oy + r(-0.2, 0.2) * odr, ox + r(-0.2, 0.2) * odr, odr * 0.45, { 255, 246, 215 }, 0.7, odr * 0.3, 0)

  -- four arcades (upper and lower, towards the macula and away from it) and branches
  local vessel_colour = { r(115, 150), r(20, 35), r(15, 30) }
  local toward = side > 0 and math.pi or 0 -- the direction from the optic disc to the macula
  local arcades = { { toward, -1, 1.3 }, { toward, 1, 1.3 }, { toward + math.pi, -1, 0.7 }, { toward + math.pi, 1, 0.7 } }
  for _, a in ipairs(arcades) do
    local dir, updown, reach = a[1], a[2], a[3] -- updown -1: the upper arcade (y grows downwards)
    local h = math.cos(dir) > 0 and 1 or -1      -- heading right or left
    local start = dir + updown * h * r(0.5, 0.9)  -- leaves the disc slanted, then bends back
    local bend = -updown * h * r(0.6, 1.1)
    local ys, xs, count = vessel(r, oy, ox, start, bend, R * reach * r(0.8, 1.0), cy, cx, R)
    polyline(img, ys, xs, count, 5.5 * s, 1.5 * s, vessel_colour, r(0.55, 0.7), 0.8)
    for _ = 1, 2 do
      local k = math.floor(count * r(0.25, 0.75))
      if k >= 1 and k < count then
        local by, bx = ys[k], xs[k]
        local bys, bxs, bcount = vessel(r, by, bx, start + bend * k / 31 + r(-1, 1) * 0.9, r(-0.6, 0.6),
          R * r(0.25, 0.5), cy, cx, R)
        polyline(img, bys, bxs, bcount, 3 * s, 1 * s, vessel_colour, r(0.45, 0.6), 0.8)
      end
    end
  end

  -- larger distractors, the same for both classes
  for _ = 1, math.floor(r() * 4) do
    local rho, phi = R * 0.85 * math.sqrt(r()), r(0, 2 * math.pi)
    local rad = r(8, 20) * s
    local c = r() < 0.5 and scaled(base, 0.6) or { 240, 215, 130 }
    disc(img, cy + rho * math.sin(phi), cx + rho * math.cos(phi), rad, c, r(0.15, 0.35), rad * 0.8, 0)
  end

  -- tiny lesions, positives only
  local lesions = {}
  if positive then
    for _ = 1, 2 + math.floor(r() * 5) do
      local y, x
      for _ = 1, 20 do -- a place on the disc, off the optic disc
        local rho, phi = R * 0.85 * math.sqrt(r()), r(0, 2 * math.pi)
        y, x = cy + rho * math.sin(phi), cx + rho * math.cos(phi)
        if (y - oy) ^ 2 + (x - ox) ^ 2 > (1.6 * odr) ^ 2 then break end
      end
      local diameter = r(lesion_lo, lesion_hi)
      local kind, c
      if r() < 0.6 then
        kind, c = 'microaneurysm', { r(85, 115), r(8, 22), r(6, 18) }
      else
        kind, c = 'exudate', { r(238, 255), r(218, 242), r(90, 140) }
      end
      disc(img, y, x, diameter / 2, c, 0.95, 0.6, 0)
      lesions[#lesions + 1] = { kind = kind, y = y + 1, x = x + 1, diameter = diameter }
    end
  end

  -- lesions draw last but for noise and mask, so a positive image differs from the
  -- negative one of the same (seed, index) at the lesions only
  check(C.fv_draw_noise(img.p, noise_amplitude, noise_seed))
  check(C.fv_draw_mask_circle(img.p, cy, cx, R, 1.5 * s, rgb { 0, 0, 0 }))
  return img, lesions
end

local function manifest_text(o)
  local text = ('fovea synthetic v%d\nn=%d\nsize=%d\nseed=%.17g\npositive_fraction=%.17g\n'):format(M.VERSION, o.n,
    o.size, o.seed, o.positive_fraction)
  if o.lesion_size then text = text .. ('lesion_size=%.17g,%.17g\n'):format(o.lesion_size[1], o.lesion_size[2]) end
  return text
end

-- Which images are positive: round(n * fraction) of them, chosen by a seeded shuffle.
local function positives(n, fraction, seed)
  local perm = {}
  for i = 1, n do perm[i] = i end
  for i = n, 2, -1 do
    local j = 1 + math.floor(C.fv_data_uniform(seed, 0, POSITIVE_STREAM, n - i) * i)
    perm[i], perm[j] = perm[j], perm[i]
  end
  local is = {}
  for k = 1, math.floor(n * fraction + 0.5) do is[perm[k]] = true end
  return is
end

-- The metadata of a generated folder, from its index.csv and lesions.csv.
local function read_meta(dir)
  local items, by_file = {}, {}
  for _, rec in ipairs((csv.records(assert(fs.read(fs.join(dir, 'index.csv')))))) do
    local item = { file = rec.path, path = fs.join(dir, rec.path), label = rec.label,
      positive = rec.label == 'positive', lesions = {} }
    items[#items + 1] = item
    by_file[rec.path] = item
  end
  for _, rec in ipairs((csv.records(assert(fs.read(fs.join(dir, 'lesions.csv')))))) do
    local item = by_file[rec.path]
    if item then
      item.lesions[#item.lesions + 1] = { kind = rec.kind, y = tonumber(rec.y), x = tonumber(rec.x),
        diameter = tonumber(rec.diameter) }
    end
  end
  return items
end

-- Generates the set into dir (created if needed) unless dir already holds the same
-- configuration; returns the path of index.csv and the metadata {csv =, dir =,
-- classes =, items = { {path =, file =, label =, positive =, lesions = {...}}, ... },
-- generated = true when files were written}.
-- opts: n (400), size (386), seed (1), positive_fraction (0.5), lesion_size ({2, 6}
-- pixels scaled by size / 386).
function M.generate(dir, opts)
  opts = opts or {}
  local o = { n = opts.n or 400, size = opts.size or 386, seed = opts.seed or 1,
    positive_fraction = opts.positive_fraction or 0.5, lesion_size = opts.lesion_size }
  if type(dir) ~= 'string' or dir == '' then raise('fovea: synthetic.generate: dir must be a path') end
  if o.n < 1 or o.n ~= math.floor(o.n) then raise('fovea: synthetic.generate: n must be a positive integer') end
  if o.size < 16 or o.size ~= math.floor(o.size) then
    raise('fovea: synthetic.generate: size must be an integer >= 16')
  end
  if o.positive_fraction < 0 or o.positive_fraction > 1 then
    raise('fovea: synthetic.generate: positive_fraction must be in [0, 1]')
  end
  local csv_path, manifest = fs.join(dir, 'index.csv'), fs.join(dir, 'manifest.txt')
  local meta = { csv = csv_path, dir = dir, classes = M.classes }
  if fs.read(manifest) == manifest_text(o) and fs.is_file(csv_path) and fs.is_file(fs.join(dir, 'lesions.csv')) then
    meta.items = read_meta(dir)
    return csv_path, meta
  end
  fs.mkdirs(fs.join(dir, 'images'))
  os.remove(manifest)
  local is_positive = positives(o.n, o.positive_fraction, o.seed)
  local index, lesion_rows, items = { { 'path', 'label' } }, { { 'path', 'kind', 'y', 'x', 'diameter' } }, {}
  for i = 1, o.n do
    local file = ('images/%05d.png'):format(i)
    local img, lesions = M.render(o.size, o.seed, i - 1, is_positive[i] == true, o.lesion_size)
    image.save(fs.join(dir, file), img)
    img:free()
    local label = is_positive[i] and 'positive' or 'negative'
    index[#index + 1] = { file, label }
    for _, l in ipairs(lesions) do
      lesion_rows[#lesion_rows + 1] = { file, l.kind, ('%.3f'):format(l.y), ('%.3f'):format(l.x),
        ('%.3f'):format(l.diameter) }
    end
    items[i] = { file = file, path = fs.join(dir, file), label = label, positive = is_positive[i] == true,
      lesions = lesions }
  end
  fs.write(csv_path, csv.format(index))
  fs.write(fs.join(dir, 'lesions.csv'), csv.format(lesion_rows))
  fs.write(manifest, manifest_text(o))
  meta.items = items
  meta.generated = true
  return csv_path, meta
end

return M
