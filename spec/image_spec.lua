-- image_spec.lua: fv.image, the Lua face of core/fovea_image.h: loading against the PNG
-- fixtures, save/load round trips, errors that name the file, geometry on small known
-- images, CLAHE against OpenCV's output, conversion to and from network tensors.
local helpers = require 'spec.helpers'
local tmpdir, read, write = helpers.tmpdir, helpers.read, helpers.write
local fv = require 'fovea'
local ffi = require 'ffi'

local fixtures = 'spec/fixtures/'

-- A uint8 H x W x C image from nested tables {{{r, g, b}, ...}, ...}.
local function img(rows) return fv.tensor(rows, { dtype = 'uint8' }) end

local function same(a, b)
  if a:shape_string() ~= b:shape_string() then return false end
  return (a:double() - b:double()):abs():max():item() == 0
end

describe('fv.image', function()
  local dir
  setup(function() dir = tmpdir() end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  describe('load and save', function()
    it('loads 8-bit PNGs as the fixtures expect', function()
      for _, name in ipairs { 'rgb8', 'rgba8', 'gray8', 'pal8', 'ga8' } do
        local expect = read(fixtures .. 'png/' .. name .. '.expect')
        local h, w, c = expect:match('^(%d+) (%d+) (%d+) 8\n')
        local data = expect:sub(#expect:match('^[^\n]*\n') + 1)
        local im = fv.image.load(fixtures .. 'png/' .. name .. '.png')
        assert.are.same({ tonumber(h), tonumber(w), tonumber(c) }, im:size())
        assert.are.equal('uint8', im:dtype())
        assert.are.equal(data, ffi.string(im:contiguous():data_ptr(), im:numel()))
      end
    end)

    it('keeps 16-bit samples with keep16', function()
      local im = fv.image.load(fixtures .. 'png/gray16.png', { keep16 = true })
      assert.are.equal('float32', im:dtype())
      assert.is_true(im:max():item() > 255)
      assert.are.equal('uint8', fv.image.load(fixtures .. 'png/gray16.png'):dtype())
    end)

    it('round-trips uint8 images of 1 to 4 channels and float32 as 16-bit', function()
      for c = 1, 4 do
        local im = fv.rand({ 5, 7, c }, { seed = c }):mul(255):byte()
        local path = dir .. '/rt' .. c .. '.png'
        fv.image.save(path, im)
        assert.is_true(same(im, fv.image.load(path)))
      end
      local f = fv.tensor({ { { 0 }, { 1000.4 } }, { { 65535 }, { 70000 } } }, { dtype = 'float32' })
      fv.image.save(dir .. '/f.png', f)
      local back = fv.image.load(dir .. '/f.png', { keep16 = true })
      assert.are.same({ { { 0 }, { 1000 } }, { { 65535 }, { 65535 } } }, back:totable())
    end)

    it('raises errors that name the file', function()
      local ok, err = pcall(fv.image.load, dir .. '/missing.png')
      assert.is_false(ok)
      assert.matches('missing%.png', err)
      local good = read(fixtures .. 'png/rgb8.png')
      write(dir .. '/truncated.png', good:sub(1, math.floor(#good / 2)))
      ok, err = pcall(fv.image.load, dir .. '/truncated.png')
      assert.is_false(ok)
      assert.matches('truncated%.png', err)
      write(dir .. '/text.png', 'hello, not an image')
      ok, err = pcall(fv.image.load, dir .. '/text.png')
      assert.is_false(ok)
      assert.matches('text%.png.*neither PNG nor TIFF', err)
      ok, err = pcall(fv.image.save, dir .. '/no/such/folder/x.png', img { { { 1 } } })
      assert.is_false(ok)
      assert.matches('no/such/folder/x%.png', err)
      ok, err = pcall(fv.image.load, 42)
      assert.is_false(ok)
      assert.matches('path must be a string', err)
    end)
  end)

  describe('geometry', function()
    -- 2 x 3 gray image
    local a = img { { { 1 }, { 2 }, { 3 } }, { { 4 }, { 5 }, { 6 } } }

    it('flips horizontally, vertically and diagonally', function()
      assert.are.same({ { { 3 }, { 2 }, { 1 } }, { { 6 }, { 5 }, { 4 } } }, fv.image.hflip(a):totable())
      assert.are.same({ { { 4 }, { 5 }, { 6 } }, { { 1 }, { 2 }, { 3 } } }, fv.image.vflip(a):totable())
      assert.are.same({ { { 1 }, { 4 } }, { { 2 }, { 5 } }, { { 3 }, { 6 } } }, fv.image.transpose(a):totable())
    end)

    it('rotates a square image by 90 degrees exactly (counter-clockwise)', function()
      local sq = img { { { 1 }, { 2 } }, { { 3 }, { 4 } } }
      assert.are.same({ { { 2 }, { 4 } }, { { 1 }, { 3 } } }, fv.image.rotate(sq, 90):totable())
      assert.are.same({ { { 4 }, { 3 } }, { { 2 }, { 1 } } }, fv.image.rotate(sq, 180):totable())
      assert.is_true(same(sq, fv.image.rotate(sq, 360)))
      -- 45 degrees on a 3x3: the corners read outside and take the fill partly
      local ones = fv.full({ 3, 3, 1 }, 200, { dtype = 'uint8' })
      local r = fv.image.rotate(ones, 45, { fill = 0 })
      assert.are.equal(200, r:get(2, 2, 1))
      assert.is_true(r:get(1, 1, 1) < 200)
    end)

    it('crops (positions from 1) and pads', function()
      assert.are.same({ { { 5 }, { 6 } } }, fv.image.crop(a, 2, 2, 1, 2):totable())
      local ok, err = pcall(fv.image.crop, a, 2, 2, 2, 2)
      assert.is_false(ok)
      assert.matches('crop', err)
      local p = fv.image.pad(a, 1, 0, 0, 2, { value = 9 })
      assert.are.same({ 3, 5, 1 }, p:size())
      assert.are.same({ { { 9 }, { 9 }, { 9 }, { 9 }, { 9 } }, { { 1 }, { 2 }, { 3 }, { 9 }, { 9 } },
        { { 4 }, { 5 }, { 6 }, { 9 }, { 9 } } }, p:totable())
      assert.are.same({ 4, 5, 1 }, fv.image.pad(a, 1):size())
    end)

    it('resizes with every mode and rejects unknown ones', function()
      local im = fv.rand({ 40, 30, 3 }, { seed = 2 }):mul(255):byte()
      for _, mode in ipairs { 'linear', 'linear_aa', 'area' } do
        local r = fv.image.resize(im, 10, 12, { mode = mode })
        assert.are.same({ 10, 12, 3 }, r:size())
        assert.are.equal('uint8', r:dtype())
      end
      assert.are.same({ 16, 16, 3 }, fv.image.resize(im, 16):size())
      local flat = fv.full({ 8, 8, 1 }, 77, { dtype = 'uint8' })
      assert.are.equal(77, fv.image.resize(flat, 3, 5, { mode = 'area' }):float():min():item())
      local ok, err = pcall(fv.image.resize, im, 10, 10, { mode = 'cubic' })
      assert.is_false(ok)
      assert.matches("unknown mode cubic", err)
    end)
  end)

  describe('clahe', function()
    it("equals OpenCV's output (gray, colour on L of LAB, green channel)", function()
      local gray = fv.image.load(fixtures .. 'clahe/grad64.png')
      assert.is_true(same(fv.image.load(fixtures .. 'clahe/grad64_clip2_8x8_gray.png'),
        fv.image.clahe(gray, { clip = 2 })))
      assert.is_true(same(fv.image.load(fixtures .. 'clahe/grad64_clip40_8x8_gray.png'), fv.image.clahe(gray)))
      local rgb = fv.image.load(fixtures .. 'clahe/rgb80x60.png')
      assert.is_true(same(fv.image.load(fixtures .. 'clahe/rgb80x60_clip2_8x8_lab.png'),
        fv.image.clahe(rgb, { clip = 2, mode = 'lab' })))
      assert.is_true(same(fv.image.load(fixtures .. 'clahe/rgb80x60_clip2_8x8_green.png'),
        fv.image.clahe(rgb, { clip = 2, mode = 'green' })))
      assert.is_true(same(fv.image.load(fixtures .. 'clahe/rgb80x60_clip4_4x4_lab.png'),
        fv.image.clahe(rgb, { clip = 4, tiles = { 4, 4 } }))) -- auto: colour on L
    end)

    it('equalises gray-replicated colour images on the gray plane', function()
      local gray = fv.image.load(fixtures .. 'clahe/grad64.png')
      local eq = fv.image.clahe(gray, { clip = 2 })
      local rgb = fv.image.channels(gray, 3)
      assert.is_true(same(fv.image.channels(eq, 3), fv.image.clahe(rgb, { clip = 2 })))
      assert.is_true(same(fv.image.channels(eq, 3), fv.image.clahe(rgb, { clip = 2, mode = 'gray' })))
      local ok, err = pcall(fv.image.clahe, rgb, { mode = 'hsv' })
      assert.is_false(ok)
      assert.matches("unknown mode hsv", err)
      ok, err = pcall(fv.image.clahe, rgb:float())
      assert.is_false(ok)
      assert.matches('uint8', err)
    end)
  end)

  describe('conversion', function()
    it('makes CHW float tensors and back', function()
      local im = img { { { 0, 51, 255 }, { 255, 102, 0 } } } -- 1 x 2 x 3
      local x = fv.image.to_tensor(im)
      assert.are.same({ 3, 1, 2 }, x:size())
      assert.are.equal('float32', x:dtype())
      assert.is_true(math.abs(x:get(2, 1, 1) - 0.2) < 1e-6)
      assert.is_true(same(im, fv.image.from_tensor(x)))
      local n = fv.image.to_tensor(im, { mean = { 0.5, 0.5, 0.5 }, std = 0.5 })
      assert.is_true(math.abs(n:get(1, 1, 1) + 1) < 1e-6 and math.abs(n:get(3, 1, 1) - 1) < 1e-6)
      assert.is_true(same(im, fv.image.from_tensor(n, { lo = -1, hi = 1 })))
      local ok, err = pcall(fv.image.to_tensor, im, { mean = { 1, 2 } })
      assert.is_false(ok)
      assert.matches('mean needs 1 or 3 values', err)
    end)

    it('changes the number of channels', function()
      local im = img { { { 10, 20, 30 } } }
      local g = fv.image.channels(im, 1)
      assert.are.equal(18, g:get(1, 1, 1)) -- 0.299*10 + 0.587*20 + 0.114*30 = 18.15
      assert.are.same({ { { 18, 18, 18 } } }, fv.image.channels(g, 3):totable())
      assert.are.same({ { { 10, 20, 30, 255 } } }, fv.image.channels(im, 4):totable())
      local ok, err = pcall(fv.image.channels, im, 5)
      assert.is_false(ok)
      assert.matches('channels', err)
    end)
  end)
end)
