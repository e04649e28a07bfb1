-- train_spec.lua: the training loop: a run learns, logs and checkpoints; resuming after
-- an interruption (mid-epoch) or after a finished epoch ends with the same weights and
-- metrics as an uninterrupted run; a NaN loss stops cleanly with the last good
-- checkpoint intact.
local helpers = require 'spec.helpers'
local tmpdir = helpers.tmpdir
local fv = require 'fovea'
local nn = fv.nn

-- A small in-memory loader: two classes of 8x8 images (a bright left or right half).
local function make_loader(n, seed, opts)
  opts = opts or {}
  local images = fv.randn({n, 1, 8, 8}, {seed = seed}) * 0.5
  local labels = {}
  for i = 1, n do
    labels[i] = 1 + i % 2
    local half = images[i]:narrow(3, labels[i] == 1 and 1 or 5, 4)
    fv.no_grad(function() half:copy_(half + 1) end)
  end
  local loader = {}
  function loader:batches() return math.ceil(n / 4) end
  function loader:epoch(e)
    local order = fv.rand({n}, {seed = 1000 + e}):argmax(1) -- varies per epoch, fixed per seed
    local start = order:item() - 1
    local b = 0
    return function()
      b = b + 1
      if opts.interrupt_at and e == opts.interrupt_at[1] and b == opts.interrupt_at[2] then
        opts.interrupt_at = nil
        error('interrupted!')
      end
      if b > loader:batches() then return nil end
      local idx = {}
      for k = 1, 4 do
        local i = (start + (b - 1) * 4 + k - 1) % n + 1
        idx[k] = i
      end
      local batch = fv.F.cat((function()
        local list = {}
        for k, i in ipairs(idx) do list[k] = images[i]:unsqueeze(1) end
        return list
      end)(), 1)
      local l = {}
      for k, i in ipairs(idx) do l[k] = labels[i] end
      local tl = fv.tensor(l, {dtype = 'int64'})
      if opts.poison and e == opts.poison then batch = batch * (0 / 0) end
      return batch, tl, idx
    end
  end
  return loader
end

local function make_model()
  fv.manual_seed(7)
  local net = nn.Sequential(nn.Conv2d(1, 4, 3, {padding = 1}), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
    nn.GlobalAvgPool(), nn.Linear(4, 2))
  return net, fv.optim.Adam(net, {lr = 0.05})
end

local function weights(net)
  local out = {}
  for _, p in ipairs(net:parameters()) do
    for _, v in ipairs(p:contiguous():view(-1):totable()) do out[#out + 1] = v end
  end
  return out
end

describe('train.fit', function()
  it('learns, logs each epoch and writes the best and last checkpoints', function()
    local dir = tmpdir()
    local net, opt = make_model()
    local result = fv.train.fit {model = net, optimizer = opt, train = make_loader(32, 1), test = make_loader(16, 2),
      epochs = 4, out_dir = dir, quiet = true}
    assert.is_true(result.last.test_auc > 0.9)
    local rows = fv.csvlog.read(dir .. '/log.csv')
    assert.are.equal(4, #rows)
    assert.is_true(rows[4].train_loss < rows[1].train_loss)
    local state = fv.load_checkpoint(dir .. '/last.safetensors')
    assert.are.equal(5, state.epoch)
    local best = fv.load(dir .. '/best.safetensors')
    assert.is_not_nil(best['1.weight'])
    os.execute('rm -rf ' .. dir)
  end)

  it('resumes after an interruption mid-epoch to the same final weights', function()
    local reference_dir, dir = tmpdir(), tmpdir()
    local net, opt = make_model()
    local ref = fv.train.fit {model = net, optimizer = opt, train = make_loader(32, 1), test = make_loader(16, 2),
      epochs = 3, out_dir = reference_dir, quiet = true}
    local expected = weights(net)

    local net2, opt2 = make_model()
    local ok, err = pcall(fv.train.fit, {model = net2, optimizer = opt2,
      train = make_loader(32, 1, {interrupt_at = {2, 3}}), test = make_loader(16, 2), epochs = 3, out_dir = dir,
      quiet = true})
    assert.is_false(ok)
    assert.matches('interrupted at epoch 2, batch 2', err)
    assert.matches('%-%-resume', err)
    fv.manual_seed(12345) -- a fresh process would not share the generator's position
    local net3, opt3 = make_model()
    local resumed = fv.train.fit {model = net3, optimizer = opt3, train = make_loader(32, 1),
      test = make_loader(16, 2), epochs = 3, out_dir = dir, resume = true, quiet = true}
    assert.are.same(expected, weights(net3))
    assert.are.equal(ref.last.test_auc, resumed.last.test_auc)
    assert.are.equal(ref.last.test_loss, resumed.last.test_loss)
    assert.are.equal(3, #fv.csvlog.read(dir .. '/log.csv'))
    os.execute('rm -rf ' .. reference_dir .. ' ' .. dir)
  end)

  it('stops on a NaN loss and keeps the last good checkpoint', function()
    local dir = tmpdir()
    local net, opt = make_model()
    local ok, err = pcall(fv.train.fit, {model = net, optimizer = opt, train = make_loader(32, 1, {poison = 2}),
      epochs = 3, out_dir = dir, quiet = true})
    assert.is_false(ok)
    assert.matches('the loss is nan at epoch 2, batch 1', err)
    local state = fv.load_checkpoint(dir .. '/last.safetensors')
    assert.are.equal(2, state.epoch) -- written after epoch 1
    for name, t in pairs(state.model) do
      if t:dtype() ~= 'int64' then assert.are.equal(t:numel(), t:eq(t):sum():item(), name) end
    end
    os.execute('rm -rf ' .. dir)
  end)

  it('refuses autocast for a model on the cpu, naming the fix', function()
    local net, opt = make_model()
    local ok, err = pcall(fv.train.fit, {model = net, optimizer = opt, train = make_loader(8, 1), out_dir = tmpdir(),
      autocast = 'bf16', quiet = true})
    assert.is_false(ok)
    assert.matches("autocast = 'bf16' needs the model on cuda %(model:cuda%(%)%)", err)
  end)

  it('refuses to resume without a checkpoint', function()
    local net, opt = make_model()
    local ok, err = pcall(fv.train.fit, {model = net, optimizer = opt, train = make_loader(8, 1), out_dir = '/nonexistent/x',
      resume = true, quiet = true})
    assert.is_false(ok)
    assert.matches('no checkpoint', err)
  end)
end)
