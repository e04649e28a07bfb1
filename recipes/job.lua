-- recipes/job.lua: what the classification recipes share: resolving defaults, the data
-- set (a real one, or the built-in synthetic set), repeated stratified splits, loaders
-- with the paper's transforms, building and training the models, and the reports
-- (results table as mean +- std over repeats in Markdown and CSV, curves, ROC,
-- Grad-CAM). recipes/messidor.lua, covid19.lua and tables.lua call run(opts, recipe):
--   recipe.name        printed and used in file names
--   recipe.dataset(o)  the real data set, or nil for the built-in synthetic set
--   recipe.defaults    {real = {...}, builtin = {...}}: values for options left at 0
--   recipe.positive    the positive class of binary metrics (2)
--   recipe.rows(o)     optional: the table's rows, each {label =, model = {models.build
--                      options}}; default: one row from --model, --backbone, --variant,
--                      --nam_at
-- One row writes OUT/run-N/...; several write OUT/<row>/run-N/... and one table.
local fv = require 'fovea'
local models = require 'models'

local M = {}

-- The paper's settings for real data, and a quick configuration for the built-in set
-- (2 CPU cores, well under 10 minutes).
M.DEFAULTS = {
  real = { size = 386, epochs = 30, batch = 4, lr = 2e-4, repeats = 5 },
  builtin = { size = 160, epochs = 10, batch = 8, lr = 5e-4, repeats = 1 },
}

local function home_cache()
  return (os.getenv('XDG_CACHE_HOME') or ((os.getenv('HOME') or '.') .. '/.cache')) .. '/fovea'
end

-- Options left at 0 or '' take the recipe's defaults for real or built-in data.
local function resolve(opts, recipe, builtin)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  local defaults = builtin and recipe.defaults.builtin or recipe.defaults.real
  for k, v in pairs(defaults) do
    if o[k] == 0 or o[k] == '' then o[k] = v end
  end
  if o.cache == '' then o.cache = home_cache() end
  return o
end

-- The built-in synthetic set: generated once into the cache, lesions kept 2.5 to 4.5
-- pixels across at small sizes so that a short run can learn them.
local function builtin_dataset(o)
  local lesion = o.size < 386 and { 2.5, 4.5 } or nil
  local dir = ('%s/synthetic-%d-%d-%d'):format(o.cache, o.synthetic_n, o.size, o.seed)
  io.stderr:write(('built-in data: %d synthetic fundus images of %dx%d in %s\n'):format(o.synthetic_n, o.size, o.size,
    dir))
  local csv = fv.data.synthetic.generate(dir, { n = o.synthetic_n, size = o.size, seed = o.seed, lesion_size = lesion })
  return fv.data.datasets.CSV(csv)
end

-- Loads backbone weights from a safetensors file, keeping the entries whose names and
-- shapes match (a classifier for another number of classes is left out).
local function load_pretrained(net, path)
  local target = net.backbone or net
  local weights = fv.load(path)
  local own = target:state_dict()
  local kept, skipped = {}, {}
  for name, t in pairs(weights) do
    local mine = own[name]
    if mine and table.concat(mine:size(), 'x') == table.concat(t:size(), 'x') then
      kept[name] = t
    else
      skipped[#skipped + 1] = name
    end
  end
  target:load_state_dict(kept, { strict = false })
  table.sort(skipped)
  local count = 0
  for _ in pairs(kept) do count = count + 1 end
  io.stderr:write(('pretrained: %s: loaded %d tensors%s\n'):format(path, count,
    #skipped > 0 and ('; left out ' .. table.concat(skipped, ', ')) or ''))
end

-- Raises a clear error unless device is 'cpu', or 'cuda' with a usable GPU.
function M.check_device(device)
  if device == 'cpu' then return end
  if device ~= 'cuda' then error(('--device %s: expected cpu or cuda'):format(tostring(device)), 0) end
  if not (fv.cuda and fv.cuda.available()) then
    error(('--device %s: no CUDA backend is available on this machine (%s)')
      :format(device, tostring(fv.cuda and fv.cuda.unavailable_reason() or 'build with nvcc and run on a GPU')), 0)
  end
end

local function build_model(o, spec, classes)
  fv.manual_seed(o.seed)
  local full = { classes = classes }
  for k, v in pairs(spec) do full[k] = v end
  local net = models.build(full)
  if o.pretrained ~= '' then load_pretrained(net, o.pretrained) end
  if o.device ~= 'cpu' then net:to(o.device) end
  return net
end

-- The single row given by the command line.
local function default_rows(o)
  local spec = { name = o.model }
  local label = o.model
  if o.model == 'dual' then
    spec.backbone, spec.variant, spec.nam_at = o.backbone, o.variant, o.nam_at
    label = ('%s %s (NAM at %s)'):format(o.backbone, o.variant, o.nam_at == 0 and 'stem' or ('e' .. o.nam_at))
    if o.variant == 'baseline' then label = o.backbone end
  end
  return { { label = label, model = spec } }
end

-- What a checkpoint needs to rebuild its model and preprocess new images.
function M.model_metadata(spec, o, ds)
  local meta = { ['fovea.size'] = tostring(o.size), ['fovea.classes'] = table.concat(ds.classes, '\t') }
  for k, v in pairs(spec) do meta['fovea.model.' .. k] = tostring(v) end
  return meta
end

-- The model of a checkpoint written by a recipe (best.safetensors or last.safetensors),
-- in evaluation mode, with its input size and class names.
function M.load_model(path)
  local tensors, meta = fv.load(path)
  local weights = tensors
  if meta['fovea:checkpoint'] then
    local state = fv.load_checkpoint(path)
    meta, weights = {}, state.model
    for k, v in pairs(state.config or {}) do meta[k] = v end
  end
  if not meta['fovea.size'] then
    error('fovea: ' .. path .. ' has no model description (was it written by a recipe?)', 0)
  end
  local spec, classes = {}, {}
  for k, v in pairs(meta) do
    local key = k:match('^fovea%.model%.(.+)$')
    if key then spec[key] = tonumber(v) or v end
  end
  for name in (meta['fovea.classes'] .. '\t'):gmatch('([^\t]*)\t') do classes[#classes + 1] = name end
  spec.classes = #classes
  local net = models.build(spec)
  net:load_state_dict(weights)
  net:evaluate()
  return net, tonumber(meta['fovea.size']), classes, spec
end

-- The PNG and TIFF files of a folder (sorted, at most limit), or the one file given.
function M.image_files(path, limit)
  if not fv.data.fs.is_dir(path) then return { path } end
  local files = {}
  for _, e in ipairs(fv.data.fs.list(path, { kind = 'file' })) do
    local name = e.name:lower()
    if name:match('%.png$') or name:match('%.tiff?$') then files[#files + 1] = fv.data.fs.join(path, e.name) end
  end
  table.sort(files)
  while limit and #files > limit do files[#files] = nil end
  if #files == 0 then error('fovea: no PNG or TIFF images in ' .. path, 0) end
  return files
end

local function slug(text) return (text:lower():gsub('[^%w]+', '-'):gsub('^%-+', ''):gsub('%-+$', '')) end

-- Grad-CAM panels [image | heat map] for up to n test images, positives first.
local function gradcam_panels(net, test_set, transform, dir, n, positive)
  if n <= 0 or not net.fused_map then return {} end
  local picks = {}
  for pass = 1, 2 do
    for i = 1, test_set:size() do
      if #picks < n and ((pass == 1) == (test_set:label(i) == positive)) then picks[#picks + 1] = i end
    end
  end
  local written = {}
  for k, i in ipairs(picks) do
    local img = test_set:get(i)
    local x = transform(img, { seed = 0, epoch = 0, index = i - 1 })
    local shown = fv.image.from_tensor(x, { lo = 0, hi = 1 })
    local cams = fv.gradcam.maps(net, x:unsqueeze(1), { class = positive })
    local path = ('%s/gradcam-%d.png'):format(dir, k)
    fv.gradcam.save_panel(path, { shown, fv.gradcam.overlay(shown, cams[1]) })
    written[#written + 1] = path
  end
  return written
end

-- Plots need gnuplot; without it the run still writes every result and says once why
-- curves.png and roc.png are missing.
local plot_warned = false
local function plot(fn, ...)
  local ok, why = fv.plot.available()
  if ok then return fn(...) end
  if not plot_warned then
    io.stderr:write('warning: plots skipped (curves.png, roc.png): ' .. why .. '\n')
    plot_warned = true
  end
end

local REPORTED = { 'auc', 'sensitivity', 'specificity', 'accuracy', 'precision', 'f1' }

-- Trains and evaluates one row of the table over the repeats; returns the metrics of
-- each run and the ROC curves.
local function run_row(o, ds, row, out, transforms, positive)
  local classes = #ds.classes
  local runs, curves = {}, {}
  for run = 1, o.repeats do
    local dir = ('%s/run-%d'):format(out, run)
    local seed = o.seed + run - 1
    local train_idx, test_idx = fv.data.splits.train_test(ds, { test_fraction = o.test_fraction, seed = seed })
    local train_set, test_set = ds:subset(train_idx), ds:subset(test_idx)
    -- on a GPU, batches in pinned memory: their copies to the device overlap its work
    local pin = o.device == 'cuda'
    local train_loader = fv.data.Loader(train_set, { batch_size = o.batch, workers = o.workers, seed = seed,
      transform = transforms.train, pin_memory = pin })
    local test_loader = fv.data.Loader(test_set, { batch_size = o.batch, workers = o.workers, seed = seed,
      transform = transforms.eval, shuffle = false, pin_memory = pin })
    local net = build_model(o, row.model, classes)
    local opt = fv.optim.Adam(net, { lr = o.lr })
    print(('%s, run %d/%d: %d training and %d test images -> %s'):format(row.label, run, o.repeats, train_set:size(),
      test_set:size(), dir))
    fv.train.fit { model = net, optimizer = opt, train = train_loader, test = test_loader, epochs = o.epochs,
      out_dir = dir, resume = o.resume, positive = positive, metadata = M.model_metadata(row.model, o, ds),
      autocast = o.autocast }
    local ev
    if o.autocast == 'none' then
      ev = fv.train.evaluate(net, test_loader, { positive = positive })
    else
      ev = fv.cuda.autocast(o.autocast, fv.train.evaluate, net, test_loader, { positive = positive })
    end
    runs[#runs + 1] = ev.metrics
    plot(fv.plot.training, dir .. '/curves.png', dir .. '/log.csv')
    if classes == 2 then
      local scores = {}
      for i, p in ipairs(ev.probs) do scores[i] = p[positive] end
      local roc = fv.metrics.roc_curve(ev.labels, scores, { positive = positive })
      curves[#curves + 1] = { name = ('%s, run %d'):format(row.label, run), fpr = roc.fpr, tpr = roc.tpr, auc = roc.auc }
      plot(fv.plot.roc, dir .. '/roc.png', { curves[#curves] })
    end
    gradcam_panels(net, test_set, transforms.eval, dir, o.gradcam, positive)
    train_loader:close()
    test_loader:close()
  end
  return runs, curves
end

-- Runs fn; an error ends the program with its message (no Lua traceback unless
-- FOVEA_TRACEBACK is set) and exit status 1.
function M.main(fn, ...)
  local args = { ... }
  local ok, err = xpcall(function() return fn(unpack(args)) end, function(e)
    if os.getenv('FOVEA_TRACEBACK') then return debug.traceback(tostring(e), 2) end
    return tostring(e)
  end)
  if not ok then
    io.stderr:write('error: ', err, '\n')
    os.exit(1)
  end
  return err
end

function M.run(opts, recipe)
  return M.main(M.run_unprotected, opts, recipe)
end

function M.run_unprotected(opts, recipe)
  io.stdout:setvbuf('line') -- interleave with the progress lines on stderr in order
  local real = recipe.dataset(opts)
  local o = resolve(opts, recipe, real == nil)
  M.check_device(o.device)
  if o.autocast ~= 'none' and (o.autocast ~= 'bf16' or o.device ~= 'cuda') then
    error(('--autocast %s: expected none, or bf16 with --device cuda'):format(o.autocast), 0)
  end
  fv.set_num_threads(o.threads)
  local ds = real or builtin_dataset(o)
  local positive = recipe.positive or 2
  local T = fv.data.transforms
  local transforms = { train = T.paper_train(o.size), eval = T.paper_eval(o.size) }
  local rows = recipe.rows and recipe.rows(o) or default_rows(o)
  fv.data.fs.mkdirs(o.out)
  print(('%s: %d images, %d classes (%s); %d model(s); %dx%d, %d epochs, batch %d, lr %g, %d repeat(s)')
    :format(recipe.name, ds:size(), #ds.classes, table.concat(ds.classes, ', '), #rows, o.size, o.size, o.epochs,
      o.batch, o.lr, o.repeats))

  local table_rows, all_curves = {}, {}
  for _, row in ipairs(rows) do
    local out = #rows == 1 and o.out or (o.out .. '/' .. slug(row.label))
    local runs, curves = run_row(o, ds, row, out, transforms, positive)
    local entry = { name = row.label }
    for _, key in ipairs(REPORTED) do
      entry[key] = {}
      for i, m in ipairs(runs) do entry[key][i] = m[key] end
    end
    table_rows[#table_rows + 1] = entry
    all_curves[#all_curves + 1] = curves[1]
  end

  local md, csv = fv.metrics.format_table(table_rows, { 'name', unpack(REPORTED) })
  fv.data.fs.write(o.out .. '/results.md', md)
  fv.data.fs.write(o.out .. '/results.csv', csv)
  if #all_curves > 1 then plot(fv.plot.roc, o.out .. '/roc.png', all_curves) end
  print(('\n%s (mean +- std over %d repeat(s))\n%s'):format(recipe.name, o.repeats, md))
  print(('results: %s/results.md and results.csv; per run: log.csv, last.safetensors, best.safetensors, '
    .. 'curves.png, roc.png, gradcam-*.png'):format(o.out))
  return table_rows
end

return M
