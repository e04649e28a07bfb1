-- data_spec.lua: fv.data: transforms on small known images, the threaded loader
-- (determinism across worker counts, the Lua path, the cache, errors naming the file,
-- clean shutdown), data sets on generated fake layouts (MESSIDOR with TIFFs written
-- here, COVID-19 versions 1 and 2, folders, CSV), stratified splits, and the synthetic
-- tiny-lesion generator.
local helpers = require 'spec.helpers'
local tmpdir, read, write = helpers.tmpdir, helpers.read, helpers.write
local fv = require 'fovea'
local ffi = require 'ffi'

local T, D, S, fs = fv.data.transforms, fv.data.datasets, fv.data.splits, fv.data.fs

local function img(rows) return fv.tensor(rows, { dtype = 'uint8' }) end

local function same(a, b)
  if a:shape_string() ~= b:shape_string() or a:dtype() ~= b:dtype() then return false end
  return (a:double() - b:double()):abs():max():item() == 0
end

-- A baseline uncompressed RGB TIFF (one strip, little-endian) of an H x W x 3 uint8 image.
local function write_tiff(path, im)
  local h, w = im:size(1), im:size(2)
  local function u16(v) return string.char(v % 256, math.floor(v / 256) % 256) end
  local function u32(v) return u16(v % 65536) .. u16(math.floor(v / 65536)) end
  local entries = {
    { 256, 3, 1, w }, { 257, 3, 1, h }, { 258, 3, 3, 134 }, { 259, 3, 1, 1 }, { 262, 3, 1, 2 },
    { 273, 4, 1, 140 }, { 277, 3, 1, 3 }, { 278, 3, 1, h }, { 279, 4, 1, h * w * 3 }, { 284, 3, 1, 1 },
  }
  local parts = { 'II', u16(42), u32(8), u16(#entries) }
  for _, e in ipairs(entries) do
    local value = (e[2] == 3 and e[3] == 1) and (u16(e[4]) .. u16(0)) or u32(e[4])
    parts[#parts + 1] = u16(e[1]) .. u16(e[2]) .. u32(e[3]) .. value
  end
  parts[#parts + 1] = u32(0) .. u16(8) .. u16(8) .. u16(8) -- next IFD; BitsPerSample at 134
  parts[#parts + 1] = ffi.string(im:contiguous():data_ptr(), h * w * 3) -- pixels at 140
  write(path, table.concat(parts))
end

local function random_image(h, w, c, seed) return fv.rand({ h, w, c }, { seed = seed }):mul(255):byte() end

local function batches(loader, e)
  local out = {}
  for x, y, idx in loader:epoch(e) do out[#out + 1] = { x = x, y = y, idx = idx } end
  return out
end

local function same_batches(a, b)
  if #a ~= #b then return false end
  for k = 1, #a do
    if not same(a[k].x, b[k].x) or not same(a[k].y, b[k].y) then return false end
    for j = 1, #a[k].idx do if a[k].idx[j] ~= b[k].idx[j] then return false end end
  end
  return true
end

describe('fv.data', function()
  local dir, synth_csv, synth_meta
  setup(function()
    dir = tmpdir()
    synth_csv, synth_meta = fv.data.synthetic.generate(dir .. '/synth', { n = 12, size = 48, seed = 3 })
  end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  describe('transforms', function()
    local a = img { { { 1 }, { 2 } }, { { 3 }, { 4 } } }

    it('flips and rotates when their probability is 1, never when it is 0', function()
      local ctx = { seed = 1, epoch = 1, index = 0 }
      assert.is_true(same(fv.image.hflip(a), T.RandomFlips { horizontal = 1, vertical = 0, diagonal = 0 }(a, ctx)))
      assert.is_true(same(fv.image.vflip(a), T.RandomFlips { horizontal = 0, vertical = 1, diagonal = 0 }(a, ctx)))
      assert.is_true(same(fv.image.transpose(a), T.RandomFlips { horizontal = 0, vertical = 0, diagonal = 1 }(a, ctx)))
      assert.is_true(same(a, T.RandomFlips { horizontal = 0, vertical = 0, diagonal = 0 }(a, ctx)))
      local rot = T.RandomRotation { p = 1, degrees = { 90, 90 } }(a, ctx)
      assert.are.same({ { { 2 }, { 4 } }, { { 1 }, { 3 } } }, rot:totable())
      assert.is_true(same(a, T.RandomRotation { p = 0 }(a, ctx)))
    end)

    it('draws from (seed, epoch, index): the same context gives the same result', function()
      local im = random_image(16, 16, 3, 1)
      local t = T.Compose { T.RandomFlips(), T.RandomRotation() }
      local seen = {}
      for index = 0, 15 do
        local x = t(im, { seed = 7, epoch = 2, index = index })
        assert.is_true(same(x, t(im, { seed = 7, epoch = 2, index = index })))
        seen[ffi.string(x:contiguous():data_ptr(), x:numel())] = true
      end
      local distinct = 0
      for _ in pairs(seen) do distinct = distinct + 1 end
      assert.is_true(distinct > 4)
      -- the rotation angle stays within [30, 270]
      for index = 0, 20 do
        local u0 = T.uniform({ seed = 7, epoch = 2, index = index }, 0, 0)
        local u1 = T.uniform({ seed = 7, epoch = 2, index = index }, 0, 1)
        assert.is_true(u0 >= 0 and u0 < 1 and u1 >= 0 and u1 < 1)
      end
    end)

    it('builds the paper pipelines and their C steps', function()
      local train, eval = T.paper_train(24), T.paper_eval(24)
      local im = random_image(40, 30, 3, 2)
      local x = train(im, { seed = 1, epoch = 1, index = 3 })
      assert.are.same({ 3, 24, 24 }, x:size())
      assert.are.equal('float32', x:dtype())
      local e = eval(fv.image.channels(im, 1))
      assert.are.same({ 3, 24, 24 }, e:size()) -- gray comes out as 3 channels
      local kinds = {}
      for _, s in ipairs(train:steps()) do kinds[#kinds + 1] = s.kind end
      assert.are.same({ fv.C.FV_STEP_RESIZE, fv.C.FV_STEP_CLAHE, fv.C.FV_STEP_FLIPS, fv.C.FV_STEP_ROTATION,
        fv.C.FV_STEP_TO_TENSOR }, kinds)
      assert.are.equal(3, #eval:steps())
      assert.is_nil(T.Compose { T.Resize(8), T.Lambda(function(i) return i end) }:steps())
      local n = T.Compose { T.ToTensor(), T.Normalize({ 0.5, 0.5, 0.5 }, { 0.25, 0.25, 0.25 }) }(im)
      assert.is_true(math.abs(n:get(1, 1, 1) - (im:get(1, 1, 1) / 255 - 0.5) / 0.25) < 1e-5)
      assert.has_error(function() T.Normalize({ 0 }, { 0 }) end)
    end)
  end)

  describe('Loader', function()
    it('gives the same batches for a seed with 1 and with 4 workers', function()
      local ds = D.CSV(synth_csv)
      local opts = { batch_size = 5, shuffle = true, seed = 11, transform = T.paper_train(32) }
      opts.workers = 1
      local l1 = fv.data.Loader(ds, opts)
      opts.workers = 4
      local l4 = fv.data.Loader(ds, opts)
      assert.are.equal('c', l1.mode)
      local b1, b4 = batches(l1, 1), batches(l4, 1)
      assert.are.equal(3, #b1)
      assert.are.same({ 5, 3, 32, 32 }, b1[1].x:size())
      assert.are.same({ 2, 3, 32, 32 }, b1[3].x:size()) -- the last batch is shorter
      assert.is_true(same_batches(b1, b4))
      -- labels follow the indices
      for _, b in ipairs(b1) do
        for j, i in ipairs(b.idx) do assert.are.equal(ds:label(i), b.y:get(j)) end
      end
      -- another epoch: another order and other augmentations
      assert.is_false(same_batches(b1, batches(l1, 2)))
      assert.is_true(same_batches(batches(l1, 2), batches(l4, 2)))
      l1:close()
      l4:close()
    end)

    it('gives the same batches on the Lua path (workers = 0) as in C threads', function()
      local ds = D.CSV(synth_csv)
      local opts = { batch_size = 4, seed = 5, transform = T.paper_train(24), workers = 0 }
      local lua = fv.data.Loader(ds, opts)
      opts.workers = 2
      local c = fv.data.Loader(ds, opts)
      assert.are.equal('lua', lua.mode)
      assert.is_true(same_batches(batches(lua, 3), batches(c, 3)))
      -- a Lua transform in the pipeline: Lua path, same numbers for the C-able steps
      local with_lambda = fv.data.Loader(ds, { batch_size = 4, seed = 5, workers = 2,
        transform = T.Compose { T.paper_train(24), T.Lambda(function(x) return x end) } })
      assert.are.equal('lua', with_lambda.mode)
      assert.is_true(same_batches(batches(with_lambda, 3), batches(c, 3)))
    end)

    it('takes data sets made by Lua code', function()
      local made = {
        size = function() return 5 end,
        get = function(_, i) return fv.full({ 10, 12, 1 }, i * 10, { dtype = 'uint8' }), 6 - i end,
      }
      local l = fv.data.Loader(made, { batch_size = 2, shuffle = false, transform = T.ToTensor { channels = 3 } })
      assert.are.equal('lua', l.mode)
      local b = batches(l, 1)
      assert.are.equal(3, #b)
      assert.are.same({ 2, 3, 10, 12 }, b[1].x:size())
      assert.are.same({ 5, 4 }, b[1].y:totable())
      assert.is_true(math.abs(b[3].x:get(1, 3, 1, 1) - 50 / 255) < 1e-6)
    end)

    it('keeps order without shuffle, drops the last batch on request, and takes file lists', function()
      local ds = D.CSV(synth_csv)
      local l = fv.data.Loader(ds, { batch_size = 5, shuffle = false, drop_last = true, transform = T.paper_eval(16) })
      local b = batches(l, 1)
      assert.are.equal(2, #b)
      assert.are.equal(2, l:batches())
      assert.are.same({ 1, 2, 3, 4, 5 }, b[1].idx)
      local files = {}
      for i = 1, 3 do files[i] = { ds:path(i), i } end
      local fl = fv.data.Loader(files, { batch_size = 3, shuffle = false, transform = T.Resize(8),
        workers = 1 })
      local only = batches(fl, 1)
      assert.are.same({ 3, 8, 8, 3 }, only[1].x:size()) -- no ToTensor: uint8 HWC batches
      assert.are.equal('uint8', only[1].x:dtype())
      assert.are.same({ { 1, 2, 3 } }, { only[1].y:totable() })
    end)

    it('caches resized and equalised images and gives the same batches', function()
      local ds = D.CSV(synth_csv)
      local cache = dir .. '/cache'
      local opts = { batch_size = 4, seed = 2, transform = T.paper_train(24), workers = 2 }
      local plain = fv.data.Loader(ds, opts)
      opts.cache_dir = cache
      local cached = fv.data.Loader(ds, opts)
      local first = batches(cached, 1)
      assert.are.same({ 0, 12 }, { cached:cache_stats() })
      assert.is_true(same_batches(first, batches(plain, 1)))
      assert.is_true(same_batches(batches(cached, 2), batches(plain, 2)))
      assert.are.same({ 12, 12 }, { cached:cache_stats() })
      assert.are.equal(12, #fs.list(cache))
      -- other CLAHE parameters: other cache files
      local other = fv.data.Loader(ds, { batch_size = 4, transform = T.paper_eval(24, { clahe = { clip = 2 } }),
        cache_dir = cache })
      batches(other, 1)
      assert.are.same({ 0, 12 }, { other:cache_stats() })
      assert.are.equal(24, #fs.list(cache))
    end)

    it('raises an error naming a corrupt or missing file, and goes on afterwards', function()
      local ds = D.CSV(synth_csv)
      local good = read(ds:path(1))
      write(dir .. '/corrupt.png', good:sub(1, math.floor(#good / 3)))
      local files = { ds:path(2), ds:path(3), dir .. '/corrupt.png', ds:path(4), ds:path(5) }
      for _, workers in ipairs { 1, 3 } do
        local l = fv.data.Loader(files, { batch_size = 2, shuffle = false, workers = workers,
          transform = T.paper_eval(16) })
        local seen = 0
        local ok, err = pcall(function() for _ in l:epoch(1) do seen = seen + 1 end end)
        assert.is_false(ok)
        assert.matches("item 3 %('[^']*corrupt%.png'%)", err)
        assert.are.equal(1, seen)
        -- the loader works again: a new epoch starts from the beginning
        local it = l:epoch(2)
        assert.are.same({ 1, 2 }, select(3, it()))
        l:close()
        assert.has_error(function() it() end, 'fovea: Loader: the loader was closed during the epoch')
      end
      local missing = fv.data.Loader({ dir .. '/nowhere.png' }, { workers = 1 })
      local ok, err = pcall(function() for _ in missing:epoch() do end end)
      assert.is_false(ok)
      assert.matches('nowhere%.png', err)
    end)

    it('reports samples of different sizes', function()
      local a, b = dir .. '/a16.png', dir .. '/b20.png'
      fv.image.save(a, random_image(16, 16, 3, 1))
      fv.image.save(b, random_image(20, 16, 3, 2))
      local l = fv.data.Loader({ a, b }, { batch_size = 2, shuffle = false, workers = 2 })
      local ok, err = pcall(function() for _ in l:epoch() do end end)
      assert.is_false(ok)
      assert.matches("b20%.png.*3x20x16 sample but the batch holds float32 3x16x16", err)
    end)

    it('reuses batch tensors only once the caller holds neither them nor a view of them', function()
      -- the second file is big, so the worker is still busy with it while the caller
      -- keeps a view of the first batch and drops the batch itself
      local small, big = dir .. '/small.png', dir .. '/big.png'
      fv.image.save(small, random_image(16, 16, 3, 1))
      local b = fv.empty({ 1500, 1500, 3 }, { dtype = 'uint8' })
      ffi.fill(b:data_ptr(), 1500 * 1500 * 3, 90)
      fv.image.save(big, b)
      local l = fv.data.Loader({ small, big }, { batch_size = 1, shuffle = false, workers = 1, prefetch = 1,
        transform = T.Compose { T.Resize(16), T.ToTensor() } })
      local it = l:epoch(1)
      local x = it()
      local view, copy = x:select(1, 1), x:select(1, 1):clone()
      x = nil -- luacheck: ignore
      collectgarbage()
      collectgarbage()
      local second = it()
      assert.is_true(same(view, copy))
      assert.is_true(math.abs(second:get(1, 1, 1, 1) - 90 / 255) < 1e-6)
      assert.is_nil(it())
    end)

    it('stops its threads when collected, closed, or left in the middle of an epoch', function()
      local ds = D.CSV(synth_csv)
      for _ = 1, 5 do
        local l = fv.data.Loader(ds, { batch_size = 2, workers = 3, transform = T.paper_eval(16) })
        local it = l:epoch(1)
        it() -- one batch, then abandon the loader with workers busy
      end
      collectgarbage()
      collectgarbage()
      local l = fv.data.Loader(ds, { batch_size = 2, workers = 2, transform = T.paper_eval(16) })
      local it = l:epoch(1)
      it()
      assert.are.equal(6, #batches(l, 2)) -- a new epoch ends the unfinished one
      l:close()
      l:close()
    end)
  end)

  describe('data sets', function()
    it('reads a MESSIDOR tree with CSV and XLS sheets, tasks and duplicates', function()
      local root = dir .. '/messidor'
      fs.mkdirs(root .. '/Base11')
      fs.mkdirs(root .. '/Base12')
      local pixels = {}
      for k, name in ipairs { 'Base11/a.tif', 'Base11/b.tif', 'Base12/c.tif', 'Base12/d.tif', 'Base12/a.tif' } do
        pixels[name] = random_image(6, 9, 3, k)
        write_tiff(root .. '/' .. name, pixels[name])
      end
      write(root .. '/Base11/Annotation_Base11.csv', '"Image name","Ophthalmologic department",'
        .. '"Retinopathy grade","Risk of macular edema "\n"a.tif","Service Ophtalmologie Lariboisière",0,0\n'
        .. 'b.tif,Service,1,1\n')
      -- an .xls read through a stand-in for catdoc's xls2csv
      write(root .. '/Base12/Annotation_Base12.xls', '"Image name ","Ophthalmologic department","Retinopathy grade",'
        .. '"Risk of macular edema "\r\n"c.tif","CHU",2,2\r\n"d.tif","CHU",3,0\r\n"a.tif","CHU",3,1\r\n\f')
      local tool = dir .. '/fake_xls2csv'
      write(tool, '#!/bin/sh\nshift\ncat "$1"\n')
      os.execute("chmod +x '" .. tool .. "'")
      local warnings = {}
      local function warn(msg) warnings[#warnings + 1] = msg end
      local ds = D.MESSIDOR(root, { xls2csv = tool, warn = warn })
      assert.are.equal(4, ds:size())
      assert.are.same({ 'normal', 'abnormal' }, ds.classes)
      assert.are.equal('normal-vs-abnormal', ds.task)
      assert.are.same({ 1, 2, 2, 2 }, ds:labels())
      assert.are.same({ 'a.tif' }, ds.duplicates)
      assert.are.equal(1, #warnings)
      assert.matches('a%.tif', warnings[1])
      local im, label = ds:get(1)
      assert.is_true(same(pixels['Base11/a.tif'], im)) -- the TIFF writer and reader agree
      assert.are.equal(1, label)
      assert.are.same({ 1, 1, 2, 2 }, D.MESSIDOR(root, { xls2csv = tool, warn = warn, task = 'referable' }):labels())
      assert.are.same({ 1, 2, 3, 4 }, D.MESSIDOR(root, { xls2csv = tool, warn = warn, task = 'grade' }):labels())
      assert.are.same({ 1, 2, 3, 1 }, D.MESSIDOR(root, { xls2csv = tool, warn = warn, task = 'edema' }):labels())
      -- the loader reads the TIFFs in C
      local l = fv.data.Loader(ds, { batch_size = 4, shuffle = false, transform = T.paper_eval(8) })
      assert.are.same({ 4, 3, 8, 8 }, batches(l, 1)[1].x:size())
      -- without xls2csv the error says what to install
      local ok, err = pcall(D.MESSIDOR, root, { xls2csv = dir .. '/no-such-tool', warn = warn })
      assert.is_false(ok)
      assert.matches('catdoc', err)
      -- an annotated image that is missing
      os.remove(root .. '/Base12/d.tif')
      ok, err = pcall(D.MESSIDOR, root, { xls2csv = tool, warn = warn })
      assert.is_false(ok)
      assert.matches('Base12/d%.tif', err)
    end)

    it("reads a real .xls annotation sheet through catdoc's xls2csv", function()
      local p = io.popen('command -v xls2csv')
      local found = p:read('*a')
      p:close()
      if found == '' then
        pending('xls2csv is not installed (make deps installs catdoc)')
        return
      end
      local base = dir .. '/messidor_xls/Base11'
      fs.mkdirs(base)
      write(base .. '/Annotation_Base11.xls', read('spec/fixtures/messidor/Annotation_Base11.xls'))
      for k, name in ipairs { '20051019_38557_0100_PP.tif', '20051020_43808_0100_PP.tif',
        '20051020_43832_0100_PP.tif', '20051020_44261_0100_PP.tif' } do
        write_tiff(base .. '/' .. name, random_image(4, 6, 3, k))
      end
      local ds = D.MESSIDOR(dir .. '/messidor_xls', { task = 'grade' })
      assert.are.same({ 1, 2, 3, 4 }, ds:labels())
      assert.are.same({ 0, 0, 1, 2 }, { ds:item(1).edema, ds:item(2).edema, ds:item(3).edema, ds:item(4).edema })
      assert.matches('Lariboisi', ds:item(1).department)
      assert.are.same({ 1, 2, 2, 2 }, D.MESSIDOR(dir .. '/messidor_xls'):labels())
    end)

    it('reads both layouts of the COVID-19 Radiography Database as gray on 3 channels', function()
      local v1 = dir .. '/covid1'
      for k, class in ipairs { 'COVID-19', 'NORMAL', 'Viral Pneumonia' } do
        fs.mkdirs(v1 .. '/' .. class)
        for j = 1, k do fv.image.save(('%s/%s/%s (%d).png'):format(v1, class, class, j), random_image(8, 8, 1, j)) end
      end
      fv.image.save(v1 .. '/NORMAL/rgb.png', random_image(8, 8, 3, 9))
      local ds = D.COVID19(v1)
      assert.are.equal(1, ds.version)
      assert.are.same({ 'COVID-19', 'NORMAL', 'Viral Pneumonia' }, ds.classes)
      assert.are.equal(1 + 3 + 3, ds:size())
      assert.are.same({ 1, 2, 2, 2, 3, 3, 3 }, ds:labels())
      for i = 1, ds:size() do
        local im = ds:get(i)
        assert.are.equal(3, im:size(3))
        assert.is_true(same(im:select(3, 1), im:select(3, 2)) and same(im:select(3, 1), im:select(3, 3)))
      end
      local top = dir .. '/covid2'
      local v2 = top .. '/COVID-19_Radiography_Dataset'
      for _, class in ipairs { 'COVID', 'Normal', 'Lung_Opacity', 'Viral Pneumonia' } do
        fs.mkdirs(v2 .. '/' .. class .. '/images')
        fs.mkdirs(v2 .. '/' .. class .. '/masks')
        fv.image.save(v2 .. '/' .. class .. '/images/' .. class .. '-1.png', random_image(8, 8, 1, 1))
        fv.image.save(v2 .. '/' .. class .. '/masks/' .. class .. '-1.png', random_image(8, 8, 1, 2))
      end
      local ds2 = D.COVID19(top)
      assert.are.equal(2, ds2.version)
      assert.are.same({ 'COVID', 'Normal', 'Lung_Opacity', 'Viral Pneumonia' }, ds2.classes)
      assert.are.same({ 1, 2, 3, 4 }, ds2:labels())
      local three = D.COVID19(top, { classes = { 'COVID', 'Normal', 'Viral Pneumonia' } })
      assert.are.same({ 1, 2, 3 }, three:labels())
      assert.has_error(function() D.COVID19(dir .. '/messidor') end)
    end)

    it('reads class folders, CSV indexes with names or numbers, and file lists', function()
      local root = dir .. '/folders'
      for _, class in ipairs { 'dog', 'cat' } do
        fs.mkdirs(root .. '/' .. class)
        for j = 1, 2 do fv.image.save(('%s/%s/%d.png'):format(root, class, j), random_image(4, 4, 3, j)) end
      end
      write(root .. '/cat/notes.txt', 'not an image')
      local ds = D.ImageFolder(root)
      assert.are.same({ 'cat', 'dog' }, ds.classes)
      assert.are.same({ 1, 1, 2, 2 }, ds:labels())
      assert.matches('folders/cat/1%.png$', ds:path(1))
      write(root .. '/named.csv', 'path,label\ndog/1.png,dog\ncat/2.png,cat\n')
      local named = D.CSV(root .. '/named.csv')
      assert.are.same({ 'cat', 'dog' }, named.classes)
      assert.are.same({ 2, 1 }, named:labels())
      assert.is_true(same(named:get(1), fv.image.load(root .. '/dog/1.png')))
      write(root .. '/numbered.csv', 'label,path\n0,dog/1.png\n2,cat/2.png\n')
      local numbered = D.CSV(root .. '/numbered.csv')
      assert.are.same({ '0', '1', '2' }, numbered.classes)
      assert.are.same({ 1, 3 }, numbered:labels())
      local ordered = D.CSV(root .. '/named.csv', { classes = { 'dog', 'cat' } })
      assert.are.same({ 1, 2 }, ordered:labels())
      write(root .. '/bad.csv', 'file,class\nx.png,1\n')
      local ok, err = pcall(D.CSV, root .. '/bad.csv')
      assert.is_false(ok)
      assert.matches("needs columns 'path' and 'label'", err)
      local files = D.Files { { root .. '/dog/1.png', 'dog' }, { root .. '/cat/1.png', 'cat' } }
      assert.are.same({ 2, 1 }, files:labels())
      local sub = named:subset { 2 }
      assert.are.equal(1, sub:size())
      assert.are.equal(1, sub:label(1))
      assert.are.equal(named:path(2), sub:path(1))
    end)
  end)

  describe('splits', function()
    local labels = {}
    for i = 1, 100 do labels[i] = i <= 70 and 1 or 2 end

    it('are stratified, disjoint, complete and reproducible', function()
      local train, test = S.train_test(labels, { seed = 1 })
      assert.are.equal(90, #train)
      assert.are.equal(10, #test)
      local seen, per_class = {}, { 0, 0 }
      for _, i in ipairs(train) do seen[i] = 'train' end
      for _, i in ipairs(test) do
        assert.is_nil(seen[i])
        seen[i] = 'test'
        per_class[labels[i]] = per_class[labels[i]] + 1
      end
      for i = 1, 100 do assert.is_not_nil(seen[i]) end
      assert.are.same({ 7, 3 }, per_class)
      local train2, test2 = S.train_test(labels, { seed = 1 })
      assert.are.same(test, test2)
      assert.are.same(train, train2)
      local runs = S.repeated(labels, { runs = 5, seed = 1 })
      assert.are.equal(5, #runs)
      assert.are.same(test, runs[1].test)
      assert.are.not_same(runs[1].test, runs[2].test)
      assert.are.same({ 1, 2, 3, 4, 5 }, { runs[1].seed, runs[2].seed, runs[3].seed, runs[4].seed, runs[5].seed })
    end)

    it('make stratified k folds that cover every item once', function()
      local folds = S.kfold(labels, { k = 5, seed = 3 })
      local count = {}
      for _, f in ipairs(folds) do
        assert.are.equal(20, #f.test)
        assert.are.equal(80, #f.train)
        local c1 = 0
        for _, i in ipairs(f.test) do
          count[i] = (count[i] or 0) + 1
          if labels[i] == 1 then c1 = c1 + 1 end
        end
        assert.are.equal(14, c1)
      end
      for i = 1, 100 do assert.are.equal(1, count[i]) end
    end)

    it('take data sets and make subsets', function()
      local ds = D.CSV(synth_csv)
      local train, test = S.train_test(ds, { test_fraction = 0.25, seed = 2 })
      assert.are.equal(8, #train) -- 2 of each class's 6 (1.5 rounded)
      local tr, te = S.subsets(ds, train, test)
      assert.are.equal(4, te:size())
      local counts = { 0, 0 }
      for _, label in ipairs(te:labels()) do counts[label] = counts[label] + 1 end
      assert.are.same({ 2, 2 }, counts)
      local l = fv.data.Loader(te, { batch_size = 4, transform = T.paper_eval(16), workers = 1 })
      assert.are.equal('c', l.mode)
      local b = batches(l, 1)
      table.sort(b[1].idx)
      assert.are.same({ 1, 2, 3, 4 }, b[1].idx) -- indices into the subset
      assert.are.equal(8, tr:size())
    end)
  end)

  describe('synthetic', function()
    it('is deterministic, skips work it has done, and balances the classes', function()
      local again, meta = fv.data.synthetic.generate(dir .. '/synth', { n = 12, size = 48, seed = 3 })
      assert.are.equal(synth_csv, again)
      assert.is_nil(meta.generated)
      assert.is_true(synth_meta.generated)
      local other = fv.data.synthetic.generate(dir .. '/synth2', { n = 12, size = 48, seed = 3 })
      for i = 1, 12 do
        local name = ('/images/%05d.png'):format(i)
        assert.are.equal(read(dir .. '/synth' .. name), read(dir .. '/synth2' .. name))
      end
      assert.are.equal(read(synth_csv), read(other))
      local ds = D.CSV(synth_csv)
      assert.are.same({ 'negative', 'positive' }, ds.classes)
      assert.are.same({ 6, 6 }, ds:class_counts())
      local changed = fv.data.synthetic.generate(dir .. '/synth2', { n = 12, size = 48, seed = 4 })
      assert.are_not.equal(read(synth_csv), read(changed))
    end)

    it('draws tiny lesions on positives only, and nothing else differs', function()
      local positives = 0
      for i, item in ipairs(synth_meta.items) do
        assert.are.equal(item.positive, #item.lesions > 0)
        if item.positive then
          positives = positives + 1
          assert.is_true(#item.lesions >= 2 and #item.lesions <= 6)
          local with = fv.data.synthetic.render(386, 3, i - 1, true)
          local without, none = fv.data.synthetic.render(386, 3, i - 1, false)
          assert.are.equal(0, #none)
          local diff = (with:double() - without:double()):abs():sum(3) -- H x W
          local lesions = select(2, fv.data.synthetic.render(386, 3, i - 1, true))
          for _, l in ipairs(lesions) do
            assert.is_true(l.diameter >= 2 and l.diameter <= 6)
            assert.is_true(diff:get(math.floor(l.y + 0.5), math.floor(l.x + 0.5)) > 30)
            -- blank out the lesion's neighbourhood: nothing else may differ
            local r = math.ceil(l.diameter / 2 + 1)
            local y0, x0 = math.max(1, math.floor(l.y) - r), math.max(1, math.floor(l.x) - r)
            local h, w = math.min(2 * r + 2, 386 - y0 + 1), math.min(2 * r + 2, 386 - x0 + 1)
            diff:narrow(1, y0, h):narrow(2, x0, w):fill_(0)
          end
          assert.are.equal(0, diff:max():item())
          if positives >= 2 then break end
        end
      end
    end)
  end)
end)
