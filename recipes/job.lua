-- recipes/job.lua: what the classification recipes share: resolving defaults, the data
-- set (a real one, or the built-in synthetic set), repeated stratified splits, loaders
-- with the paper's transforms, building and training the model, and the reports
-- (results table, curves, ROC, Grad-CAM). recipes/messidor.lua and recipes/covid19.lua
-- call run(opts, recipe); recipe = {name, dataset(opts) -> data set or nil (built-in),
-- defaults = {real = {...}, builtin = {...}}, positive (2)}.
local fv = require 'fovea'
local models = require 'models'

local M = {}

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

local function build_model(o, classes)
  fv.manual_seed(o.seed)
  local spec = { name = o.model, classes = classes }
  if o.model == 'dual' then
    spec.backbone, spec.variant, spec.nam_at = o.backbone, o.variant, o.nam_at
  end
  local net = models.build(spec)
  if o.pretrained ~= '' then load_pretrained(net, o.pretrained) end
  if o.device ~= 'cpu' then net:to(o.device) end
  return net
end

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

local REPORTED = { 'auc', 'sensitivity', 'specificity', 'accuracy', 'precision', 'f1' }

function M.run(opts, recipe)
  local real = recipe.dataset(opts)
  local o = resolve(opts, recipe, real == nil)
  if o.device ~= 'cpu' and not (fv.cuda and fv.cuda.available()) then
    error(('--device %s: no CUDA backend is available on this machine (build with nvcc and run on a GPU)')
      :format(o.device), 0)
  end
  fv.set_num_threads(o.threads)
  local ds = real or builtin_dataset(o)
  local classes = #ds.classes
  local positive = recipe.positive or 2
  local T = fv.data.transforms
  local train_transform, eval_transform = T.paper_train(o.size), T.paper_eval(o.size)
  os.execute(("mkdir -p '%s'"):format(o.out))
  print(('%s: %d images, %d classes (%s); model %s%s; %dx%d, %d epochs, batch %d, lr %g, %d repeat(s)')
    :format(recipe.name, ds:size(), classes, table.concat(ds.classes, ', '), o.model,
      o.model == 'dual' and (' ' .. o.backbone .. ' ' .. o.variant .. ' nam_at ' .. o.nam_at) or '', o.size, o.size,
      o.epochs, o.batch, o.lr, o.repeats))

  local rows, curves = {}, {}
  for run = 1, o.repeats do
    local dir = ('%s/run-%d'):format(o.out, run)
    local train_idx, test_idx = fv.data.splits.train_test(ds, { test_fraction = o.test_fraction, seed = o.seed + run - 1 })
    local train_set, test_set = ds:subset(train_idx), ds:subset(test_idx)
    local seed = o.seed + run - 1
    local train_loader = fv.data.Loader(train_set, { batch_size = o.batch, workers = o.workers, seed = seed,
      transform = train_transform })
    local test_loader = fv.data.Loader(test_set, { batch_size = o.batch, workers = o.workers, seed = seed,
      transform = eval_transform, shuffle = false })
    local net = build_model(o, classes)
    local opt = fv.optim.Adam(net, { lr = o.lr })
    print(('run %d/%d: %d training and %d test images -> %s'):format(run, o.repeats, train_set:size(), test_set:size(),
      dir))
    fv.train.fit { model = net, optimizer = opt, train = train_loader, test = test_loader, epochs = o.epochs,
      out_dir = dir, resume = o.resume, positive = positive }
    local ev = fv.train.evaluate(net, test_loader, { positive = positive })
    local m = ev.metrics
    local row = { name = ('run %d'):format(run) }
    for _, key in ipairs(REPORTED) do row[key] = m[key] end
    rows[#rows + 1] = row
    fv.plot.training(dir .. '/curves.png', dir .. '/log.csv')
    if classes == 2 then
      local scores = {}
      for i, p in ipairs(ev.probs) do scores[i] = p[positive] end
      local roc = fv.metrics.roc_curve(ev.labels, scores, { positive = positive })
      curves[#curves + 1] = { name = 'run ' .. run, fpr = roc.fpr, tpr = roc.tpr, auc = roc.auc }
      fv.plot.roc(dir .. '/roc.png', { curves[#curves] })
    end
    gradcam_panels(net, test_set, eval_transform, dir, o.gradcam, positive)
    train_loader:close()
    test_loader:close()
  end

  -- the paper's table: mean +- std over repeats
  local summary = { name = o.model == 'dual' and ('dual ' .. o.variant) or o.model }
  for _, key in ipairs(REPORTED) do
    local values = {}
    for _, r in ipairs(rows) do values[#values + 1] = r[key] end
    summary[key] = values
  end
  local md, csv = fv.metrics.format_table({ summary }, { 'name', unpack(REPORTED) })
  local function write(path, text)
    local f = assert(io.open(path, 'w'))
    f:write(text)
    f:close()
  end
  write(o.out .. '/results.md', md)
  write(o.out .. '/results.csv', csv)
  if #curves > 1 then fv.plot.roc(o.out .. '/roc.png', curves) end
  print('\n' .. md)
  print(('results: %s/results.md, %s/results.csv; per run: log.csv, last.safetensors, best.safetensors, '
    .. 'curves.png, roc.png, gradcam-*.png'):format(o.out, o.out))
  return rows
end

return M
