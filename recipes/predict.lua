-- recipes/predict.lua: class probabilities for a folder of images from a checkpoint a
-- recipe wrote (best.safetensors or last.safetensors: they carry the model's
-- description, input size and class names). Images go through the evaluation pipeline
-- (resize, CLAHE) and the CSV gets one row per image: path, predicted class, then one
-- probability column per class.
--   luajit recipes/predict.lua --checkpoint runs/messidor/run-1/best.safetensors --images DIR --out predictions.csv
package.path = './?.lua;./?/init.lua;./lua/?.lua;./lua/?/init.lua;' .. package.path
local fv = require 'fovea'
local job = require 'recipes.job'

local opts = fv.cli.parse(arg, {
  { 'checkpoint', '', 'a checkpoint written by a recipe' },
  { 'images', '', 'a folder of PNG or TIFF images (or one image file)' },
  { 'out', 'predictions.csv', 'the CSV to write' },
  { 'batch', 8, 'images per forward pass' },
  { 'workers', 2, 'loader threads' },
  { 'threads', 2, 'compute threads' },
  { 'device', 'cpu', 'cpu or cuda' },
}, { usage = 'usage: luajit recipes/predict.lua --checkpoint FILE --images DIR [--out FILE]',
  about = 'Writes the class probabilities of every image in a folder.' })
if opts.checkpoint == '' or opts.images == '' then
  io.stderr:write('--checkpoint and --images are required (--help lists the options)\n')
  os.exit(2)
end
job.main(function()
  fv.set_num_threads(opts.threads)
  job.check_device(opts.device)

  local net, size, classes = job.load_model(opts.checkpoint)
  net:to(opts.device)
  local files = job.image_files(opts.images)
  local ds = fv.data.datasets.Files(files)
  local loader = fv.data.Loader(ds, { batch_size = opts.batch, workers = opts.workers, shuffle = false,
    transform = fv.data.transforms.paper_eval(size), pin_memory = opts.device == 'cuda' })
  local rows = { 'path,predicted,' .. table.concat(classes, ',') }
  local bar = fv.progress.new { total = loader:batches(), label = 'predict' }
  local done = 0
  fv.no_grad(function()
    for images, _, indices in loader:epoch(1) do
      local probs = fv.F.softmax(net(images:to(opts.device)), 2):cpu():totable()
      for k, i in ipairs(indices) do
        local p = probs[k]
        local best = 1
        for c = 2, #p do if p[c] > p[best] then best = c end end
        local cells = {}
        for c = 1, #p do cells[c] = ('%.6f'):format(p[c]) end
        rows[#rows + 1] = ('"%s",%s,%s'):format(files[i]:gsub('"', '""'), classes[best], table.concat(cells, ','))
      end
      done = done + 1
      bar:update(done)
    end
  end)
  bar:finish()
  loader:close()
  local f = assert(io.open(opts.out, 'w'))
  f:write(table.concat(rows, '\n'), '\n')
  f:close()
  print(('%d images -> %s'):format(#files, opts.out))
end)
