-- recipes/gradcam.lua: Grad-CAM heat maps of two models side by side (the paper's
-- Fig. 4): for each image, a PNG with the image, model A's map and model B's map
-- (positive class by default), from checkpoints written by a recipe.
--   luajit recipes/gradcam.lua --a runs/table-1/resnet18/run-1/best.safetensors \
--     --b runs/messidor/run-1/best.safetensors --images DIR --out gradcam/
package.path = './?.lua;./?/init.lua;./lua/?.lua;./lua/?/init.lua;' .. package.path
local fv = require 'fovea'
local job = require 'recipes.job'

local opts = fv.cli.parse(arg, {
  { 'a', '', 'checkpoint of the first model (e.g. the plain backbone)' },
  { 'b', '', 'checkpoint of the second model (optional: one model alone)' },
  { 'images', '', 'a folder of PNG or TIFF images, or one image' },
  { 'class', 0, 'class to explain (0: the last class, e.g. positive)' },
  { 'out', 'gradcam', 'output folder' },
  { 'limit', 16, 'at most this many images' },
  { 'threads', 2, 'compute threads' },
  { 'device', 'cpu', 'cpu or cuda' },
}, { usage = 'usage: luajit recipes/gradcam.lua --a CKPT [--b CKPT] --images DIR [--out DIR]',
  about = 'Writes Grad-CAM panels: image | model A | model B.' })
if opts.a == '' or opts.images == '' then
  io.stderr:write('--a and --images are required (--help lists the options)\n')
  os.exit(2)
end
job.main(function()
  fv.set_num_threads(opts.threads)
  job.check_device(opts.device)

  local nets = {}
  for _, path in ipairs { opts.a, opts.b } do
    if path ~= '' then
      local net, size, classes = job.load_model(path)
      net:to(opts.device)
      nets[#nets + 1] = { net = net, size = size, classes = classes }
    end
  end
  local files = job.image_files(opts.images, opts.limit)
  fv.data.fs.mkdirs(opts.out)
  for k, path in ipairs(files) do
    local img = fv.image.channels(fv.image.load(path), 3)
    local panel
    for _, m in ipairs(nets) do
      local x = fv.data.transforms.paper_eval(m.size)(img, { seed = 0, epoch = 0, index = k - 1 })
      local shown = fv.image.from_tensor(x, { lo = 0, hi = 1 })
      local class = opts.class > 0 and opts.class or #m.classes
      local cams = fv.gradcam.maps(m.net, x:unsqueeze(1), { class = class })
      panel = panel or { shown }
      panel[#panel + 1] = fv.gradcam.overlay(shown, cams[1])
    end
    local out = ('%s/%03d.png'):format(opts.out, k)
    fv.gradcam.save_panel(out, panel)
    print(path .. ' -> ' .. out)
  end
end)
