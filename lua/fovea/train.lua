-- train.lua: the training loop users would otherwise write by hand, made safe.
--   local result = fv.train.fit{
--     model = net, optimizer = opt, train = train_loader, test = test_loader,
--     epochs = 10, out_dir = 'runs/x', resume = false, positive = 2,
--   }
--   local ev = fv.train.evaluate(net, test_loader)   -- {loss, labels, probs, metrics}
--
-- Batches are moved to the model's device (its first parameter's) before the forward, so
-- a model moved with net:to('cuda') trains on the GPU; losses and metrics are computed
-- from copies on the cpu. On a GPU the loop does not wait for the GPU between steps:
-- batch i + 1 is read from the loader and moved to the device as soon as step i's work
-- (forward, backward, optimizer step) is queued, so that its copy (asynchronous from a
-- loader with pin_memory = true) and the loader's work overlap step i on the GPU; step
-- i's loss is read (which waits for the GPU) only after that.
-- Each epoch: a progress bar (running loss, images per second, ETA); evaluation on
-- `test` (loss, accuracy, AUC, sensitivity, specificity, precision, F1 via fv.metrics);
-- a row in out_dir/log.csv; out_dir/last.safetensors (a training checkpoint: model,
-- optimizer, RNG, epoch and position) and out_dir/best.safetensors (the model with the
-- best test AUC so far, or the lowest test loss when AUC is undefined), both written
-- atomically.
--   - resume = true continues from out_dir/last.safetensors exactly where it stopped:
--     the data order and augmentation depend only on (seed, epoch, index) and the RNG
--     state is restored, so on the CPU the result equals an uninterrupted run.
--   - A NaN or infinite loss stops training with a clear error; the last checkpoint on
--     disk is the last good one (nothing is saved after the bad step). On the cpu it stops
--     before the optimizer step; on a GPU the loss is read once the step is queued, so
--     the model in memory has taken the bad step (reload last.safetensors).
--   - Ctrl-C (SIGINT) writes a resumable checkpoint at the current batch and then
--     raises an error that says how to resume.
-- Options: model, optimizer, train (an fv.data.Loader or anything with :epoch(e),
-- :batches()), test (optional loader), epochs (1), out_dir (required), resume (false),
-- positive (2: the positive class for binary metrics), schedule (optional, :step() per
-- epoch), quiet (false: no progress bar), loss (F.cross_entropy), on_epoch(row)
-- (called after each epoch's log row), metadata (a table of strings kept in both
-- checkpoints: what recipes/predict.lua needs to rebuild the model), autocast (nil; 'bf16'
-- with the model on cuda: conv2d and NAM take bfloat16 operands during fit, training and
-- evaluation, see fv.cuda.set_autocast; the setting before fit is restored after).
local C = require('fovea.clib').C
local tensor = require 'fovea.tensor'
local F = require 'fovea.functional'
local metrics = require 'fovea.metrics'
local progress = require 'fovea.progress'
local csvlog = require 'fovea.csvlog'
local serialize = require 'fovea.serialize'
local clock = require 'fovea.clock'
local fs = require 'fovea.data.fs'

local M = {}

local COLUMNS = { 'epoch', 'train_loss', 'train_accuracy', 'test_loss', 'test_accuracy', 'test_auc',
  'test_sensitivity', 'test_specificity', 'test_precision', 'test_f1', 'lr', 'seconds' }
M.COLUMNS = COLUMNS

local function path_join(dir, name) return dir:gsub('/$', '') .. '/' .. name end

local function is_finite(x) return x == x and x ~= math.huge and x ~= -math.huge end

-- The global generator's state as checkpoint numbers, and back.
local function rng_state()
  local g = C.fv_default_generator()
  return { seed = g.seed, offset = g.offset }
end

local function set_rng_state(state)
  local g = C.fv_default_generator()
  g.seed = state.seed
  g.offset = state.offset
end

-- The model's device: that of its first parameter ('cpu' without parameters). Batches
-- come from the loader on the cpu and are moved there before the forward (t:to returns t
-- itself when it is already there); metrics stay on the cpu.
local function model_device(model)
  local params = model.parameters and model:parameters() or {}
  return params[1] and params[1]:device() or 'cpu'
end
M.model_device = model_device

local function to_device(t, device)
  if device == 'cpu' then return t end -- loaders give cpu tensors: nothing to move
  return t:to(device)
end

-- The batches of loader's epoch e after the first `skip`, moved to device: a function
-- that returns the next {batch = its number, images =, labels = (on device), truth = the
-- labels as the loader gave them}, or nil at the end.
local function device_batches(loader, e, device, skip)
  local f, s, var = loader:epoch(e)
  local batch = 0
  return function()
    while true do
      local images, labels = f(s, var)
      var = images
      if images == nil then return nil end
      batch = batch + 1
      if batch > skip then
        return { batch = batch, images = to_device(images, device), labels = to_device(labels, device),
          truth = labels }
      end
    end
  end
end

-- Probabilities (N, K) as Lua rows, and labels, of a model over a loader, in eval mode.
-- The next batch is fetched and moved to the model's device before a batch's results are
-- read, so on a GPU its copy and the loader's work overlap the batch's kernels.
function M.evaluate(model, loader, opts)
  opts = opts or {}
  local was_training = model.training
  model:evaluate()
  local labels, probs, loss_sum, count = {}, {}, 0, 0
  local device = model_device(model)
  tensor.no_grad(function()
    local fetch = device_batches(loader, opts.epoch or 1, device, 0)
    local current = fetch()
    while current do
      local logits = model(current.images)
      local loss = F.cross_entropy(logits, current.labels, { reduction = 'sum' })
      local p = F.softmax(logits, 2)
      local following = fetch() -- on its way while this batch runs on the device
      local n = logits:size(1)
      loss_sum = loss_sum + loss:item()
      count = count + n
      local pt, l = p:totable(), current.truth:totable()
      for i = 1, n do
        labels[#labels + 1] = l[i]
        probs[#probs + 1] = pt[i]
      end
      current = following
    end
  end)
  model:train(was_training)
  local summary = count > 0 and metrics.summary(labels, probs, { positive = opts.positive or 2 }) or {}
  return { loss = count > 0 and loss_sum / count or 0 / 0, labels = labels, probs = probs, metrics = summary }
end

-- Writes the training checkpoint (atomic).
local function save_last(path, model, optimizer, position, metadata)
  serialize.save_checkpoint(path, {
    config = metadata,
    model = model:state_dict(),
    optimizer = optimizer:state_dict(),
    rng = rng_state(),
    epoch = position.epoch,
    batch = position.batch,
    step = position.step,
    partial = position.partial,
    best = position.best,
  })
end

local function interrupted(err)
  return type(err) == 'string' and err:match('interrupted!') ~= nil
end

-- One epoch of training from batch position.batch + 1; returns the sums of loss and
-- correct predictions and the count. position is updated as batches complete.
-- A step is settled (its loss read, its counts added, position moved past it) only after
-- the next batch has been fetched and sent to the device, so that on a GPU nothing waits
-- for the GPU in between; o.pending is the step taken but not yet settled, which fit
-- settles before writing an interrupt's checkpoint.
local function train_epoch(o, e, position, bar)
  local partial = position.partial or { loss = 0, correct = 0, count = 0 }
  local start, images_seen = clock(), 0
  local device = model_device(o.model)
  local fetch = device_batches(o.train, e, device, position.batch) -- the batches still to train on

  local function stop_on(value, b)
    if not is_finite(value) then
      error(('fovea: training stopped: the loss is %s at epoch %d, batch %d; the last good checkpoint is %s')
        :format(tostring(value), e, b, o.last_path), 0)
    end
  end

  -- Reads a taken step's loss and predictions (waiting for the device) and counts it.
  local function settle(step)
    local value = step.value or step.loss:item()
    stop_on(value, step.batch)
    local n = step.logits:size(1)
    local predicted = step.logits:argmax(2):totable()
    local truth = step.truth:totable()
    local correct = 0
    for i = 1, n do if predicted[i] == truth[i] then correct = correct + 1 end end
    o.pending = nil
    partial.correct, partial.loss, partial.count = partial.correct + correct, partial.loss + value * n, partial.count + n
    position.batch, position.step, position.partial = step.batch, position.step + 1, partial
    images_seen = images_seen + n
    if bar then
      bar:update(step.batch, { loss = partial.loss / partial.count, ['img/s'] = images_seen / (clock() - start) })
    end
  end

  local current = fetch()
  while current do
    local logits = o.model(current.images)
    local loss = o.loss(logits, current.labels)
    local value
    if device == 'cpu' then -- nothing to overlap: stop before a bad step
      value = loss:item()
      stop_on(value, current.batch)
    end
    o.optimizer:zero_grad()
    loss:backward()
    o.optimizer:step()
    o.pending = { batch = current.batch, loss = loss, value = value, logits = logits, truth = current.truth,
      settle = settle }
    current = nil
    current = fetch() -- batch i + 1 on its way while step i runs on the device
    settle(o.pending)
  end
  o.pending = nil
  return partial
end

function M.fit(opts)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  assert(o.model and o.optimizer and o.train, 'fovea: train.fit needs model, optimizer and train')
  assert(o.out_dir, 'fovea: train.fit needs out_dir')
  o.epochs = o.epochs or 1
  o.loss = o.loss or F.cross_entropy
  fs.mkdirs(o.out_dir)
  o.last_path = path_join(o.out_dir, 'last.safetensors')
  local best_path = path_join(o.out_dir, 'best.safetensors')
  local log_path = path_join(o.out_dir, 'log.csv')

  local position = { epoch = 1, batch = 0, step = 0, best = -math.huge }
  if o.resume then
    local f = io.open(o.last_path, 'rb')
    if not f then error('fovea: --resume: no checkpoint at ' .. o.last_path, 0) end
    f:close()
    local state = serialize.load_checkpoint(o.last_path)
    o.model:load_state_dict(state.model)
    o.optimizer:load_state_dict(state.optimizer)
    set_rng_state(state.rng)
    position = { epoch = state.epoch, batch = state.batch, step = state.step, partial = state.partial,
      best = state.best }
    if position.epoch > o.epochs then return { resumed_finished = true, out_dir = o.out_dir } end
  end
  local autocast = o.autocast ~= nil and o.autocast ~= false and o.autocast ~= 'none'
  if autocast and model_device(o.model) ~= 'cuda' then
    error(("fovea: train.fit: autocast = '%s' needs the model on cuda (model:cuda())"):format(tostring(o.autocast)), 0)
  end
  local log = csvlog.open(log_path, COLUMNS, { append = o.resume })
  -- set after the log opened (an error there leaves the setting as it was), restored after
  local previous_autocast
  if autocast then
    local set, previous = pcall(require('fovea.cuda').set_autocast, o.autocast)
    if not set then
      log:close()
      error(previous, 0)
    end
    previous_autocast = previous
  end
  local last_row
  local ok, err = pcall(function()
    for e = position.epoch, o.epochs do
      position.epoch = e
      local started = clock()
      o.model:train()
      local bar = not o.quiet and progress.new { total = o.train:batches(), label = ('epoch %d/%d'):format(e, o.epochs) }
      local sums = train_epoch(o, e, position, bar)
      if bar then bar:finish() end
      local row = { epoch = e, train_loss = sums.loss / math.max(sums.count, 1),
        train_accuracy = sums.correct / math.max(sums.count, 1), lr = o.optimizer.lr }
      if o.test then
        local ev = M.evaluate(o.model, o.test, { positive = o.positive })
        local m = ev.metrics
        row.test_loss, row.test_accuracy, row.test_auc = ev.loss, m.accuracy, m.auc
        row.test_sensitivity, row.test_specificity = m.sensitivity, m.specificity
        row.test_precision, row.test_f1 = m.precision, m.f1
        local score = is_finite(m.auc or 0 / 0) and m.auc or -ev.loss
        if score > position.best then
          position.best = score
          local meta = { epoch = tostring(e), score = tostring(score) }
          for k, v in pairs(o.metadata or {}) do meta[k] = tostring(v) end
          serialize.save(best_path, o.model:state_dict(), meta)
        end
      end
      if o.schedule then o.schedule:step() end
      row.seconds = clock() - started
      log:write(row)
      last_row = row
      if not o.quiet then
        local test = row.test_loss and (' | test loss %.4f accuracy %.3f AUC %.3f'):format(row.test_loss,
          row.test_accuracy, row.test_auc) or ''
        io.stderr:write(('epoch %d/%d: train loss %.4f accuracy %.3f%s (%.0f s)\n'):format(e, o.epochs,
          row.train_loss, row.train_accuracy, test, row.seconds))
      end
      position.epoch, position.batch, position.partial = e + 1, 0, nil
      save_last(o.last_path, o.model, o.optimizer, position, o.metadata)
      if o.on_epoch then o.on_epoch(row) end
    end
  end)
  log:close()
  if previous_autocast ~= nil then require('fovea.cuda').set_autocast(previous_autocast) end
  if not ok then
    if interrupted(err) then
      local pending = o.pending -- a step taken whose loss was not read yet: count it first
      o.pending = nil
      if pending then
        local settled, why = pcall(pending.settle, pending)
        if not settled then error(why, 0) end -- a bad loss: no checkpoint from that step
      end
      save_last(o.last_path, o.model, o.optimizer, position, o.metadata)
      error(('fovea: interrupted at epoch %d, batch %d: a resumable checkpoint is in %s (run again with --resume)')
        :format(position.epoch, position.batch, o.last_path), 0)
    end
    error(err, 0)
  end
  return { last = last_row, out_dir = o.out_dir, best_path = best_path, last_path = o.last_path, log_path = log_path }
end

return M
