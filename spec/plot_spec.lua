-- plot_spec.lua: the reporting side of training: fovea.progress (the bar's lines
-- captured in a file, with a fake clock), fovea.csvlog (write, read back, append,
-- crash-cut lines) and fovea.plot (PNG files drawn by gnuplot for training curves and
-- ROC curves; errors when gnuplot is missing or fails). Outputs go to /tmp and are
-- removed.
local helpers = require 'spec.helpers'
local read, write = helpers.read, helpers.write
local fv = require 'fovea'
local progress = require 'fovea.progress'
local csvlog = require 'fovea.csvlog'
local plot = require 'fovea.plot'
local metrics = require 'fovea.metrics'

local function lines_of(s)
  local out = {}
  for l in s:gmatch('([^\n]*)\n') do out[#out + 1] = l end
  return out
end

-- A progress bar writing to a temporary file, with a clock the test moves.
local function captured(opts)
  local path = os.tmpname()
  local f = assert(io.open(path, 'w+b'))
  local now = 100
  opts.file = f
  opts.clock = function() return now end
  local bar = progress.new(opts)
  return bar, function(dt) now = now + dt end, function()
    f:close()
    local s = read(path)
    os.remove(path)
    return s
  end
end

describe('progress', function()
  it('prints a plain line every 10 % when not on a terminal, with fields and an ETA', function()
    local bar, tick, output = captured { total = 100, label = 'epoch 3/10', tty = false }
    for i = 1, 100 do
      tick(0.5)
      bar:update(i, { loss = 0.42, ['img/s'] = 12.3 })
    end
    tick(0.5)
    local elapsed = bar:finish()
    local lines = lines_of(output())
    assert.are.equal(10, #lines)   -- 10 % .. 90 %, then finish
    assert.are.equal('epoch 3/10 [=========>                    ]  30/100 loss 0.420 img/s 12.3 elapsed 0:15 ETA 0:35', lines[3])
    for i = 1, 9 do
      assert.truthy(lines[i]:match('^epoch 3/10 %[=+> *%] +%d+/100 loss 0%.420 img/s 12%.3 elapsed %d:%d%d ETA %d:%d%d$'), lines[i])
    end
    assert.truthy(lines[1]:find(' 10/100 ', 1, true))
    assert.truthy(lines[1]:find('ETA 0:45', 1, true), lines[1])
    assert.are.equal('epoch 3/10 [==============================] 100/100 loss 0.420 img/s 12.3 done in 0:51', lines[10])
    assert.are.equal(50.5, elapsed)
  end)

  it('keeps a running mean when asked, and the field order given', function()
    local bar, tick, output = captured { total = 4, tty = false, every = 25, smooth = 0.5, fields = { 'lr', 'loss' }, width = 4 }
    tick(1); bar:update(1, { loss = 1, lr = 0.001 })
    tick(1); bar:update(2, { loss = 0 })
    tick(1); bar:update(3, { loss = 0 })
    assert.are.equal(0.25, bar.values.loss)
    bar:finish()
    local lines = lines_of(output())
    assert.are.same({
      '[=>  ] 1/4 lr 0.001 loss 1 elapsed 0:01 ETA 0:03',
      '[==> ] 2/4 lr 0.001 loss 0.500 elapsed 0:02 ETA 0:02',
      '[===>] 3/4 lr 0.001 loss 0.250 elapsed 0:03 ETA 0:01',
      '[===>] 3/4 lr 0.001 loss 0.250 done in 0:03',
    }, lines)
  end)

  it('redraws in place with \\r at most every interval on a terminal', function()
    local bar, tick, output = captured { total = 10, label = 'x', tty = true, width = 10 }
    for i = 1, 10 do
      tick(0.04)       -- 25 updates a second: about every third is drawn
      bar:update(i, { loss = 1 / i })
    end
    bar:finish()
    local s = output()
    local _, draws = s:gsub('\r', '')
    assert.is_true(draws >= 3 and draws <= 6, 'draws: ' .. draws)
    assert.are.equal('\n', s:sub(-1))
    local _, newlines = s:gsub('\n', '')
    assert.are.equal(1, newlines)
    assert.truthy(s:find('x [==========] 10/10 loss 0.100 done in 0:00', 1, true), s)
  end)

  it('formats times and handles an unknown total', function()
    assert.are.equal('0:42', progress.format_time(42))
    assert.are.equal('1:02:05', progress.format_time(3725))
    assert.are.equal('?', progress.format_time(0 / 0))
    local bar, tick, output = captured { label = 'steps', tty = false }
    tick(1); bar:update(7)
    bar:finish()
    assert.are.equal('steps 7 done in 0:01\n', output())
  end)

  it('names bad options', function()
    assert.has_error(function() progress.new { totl = 3 } end, 'fovea.progress: new: unknown option totl')
  end)
end)

describe('csvlog', function()
  local path
  before_each(function() path = os.tmpname() end)
  after_each(function() os.remove(path) end)

  it('writes a header once and reads the rows back, numbers exactly', function()
    local log = csvlog.open(path, { 'epoch', 'loss', 'accuracy', 'note' })
    log:write { epoch = 1, loss = 1 / 3, accuracy = 0.5, note = 'warm, "up"' }
    log:write { epoch = 2, loss = 1e-300, note = 'two\nlines' }
    log:write { epoch = 3, loss = 0 / 0, accuracy = math.huge }
    -- flushed at once: the lines are in the file before close
    assert.are.equal(4, select(2, read(path):gsub('\n', '')) - 1)
    log:close()
    assert.are.equal('epoch,loss,accuracy,note\n', read(path):match('^[^\n]*\n'))
    local rows, columns = csvlog.read(path)
    assert.are.same({ 'epoch', 'loss', 'accuracy', 'note' }, columns)
    assert.are.equal(3, #rows)
    assert.are.equal(1, rows[1].epoch)
    assert.are.equal(1 / 3, rows[1].loss)
    assert.are.equal(0.5, rows[1].accuracy)
    assert.are.equal('warm, "up"', rows[1].note)
    assert.are.equal(1e-300, rows[2].loss)
    assert.is_nil(rows[2].accuracy)
    assert.are.equal('two\nlines', rows[2].note)
    assert.is_true(rows[3].loss ~= rows[3].loss)
    assert.are.equal(math.huge, rows[3].accuracy)
  end)

  it('appends without a second header, and replaces without append', function()
    local log = csvlog.open(path, { 'epoch', 'loss' })
    log:write { epoch = 1, loss = 0.9 }
    log:close()
    log = csvlog.open(path, { 'epoch', 'loss' }, { append = true })
    log:write { epoch = 2, loss = 0.8 }
    log:close()
    assert.are.equal('epoch,loss\n1,0.9\n2,0.8\n', read(path))
    log = csvlog.open(path, nil, { append = true })   -- the header from the file
    log:write { epoch = 3 }
    log:close()
    local rows = csvlog.read(path)
    assert.are.same({ { epoch = 1, loss = 0.9 }, { epoch = 2, loss = 0.8 }, { epoch = 3 } }, rows)
    log = csvlog.open(path, { 'epoch', 'loss' })
    log:close()
    assert.are.equal('epoch,loss\n', read(path))
  end)

  it('starts a fresh line after a line cut short by a crash', function()
    write(path, 'epoch,loss\n1,0.9\n2,0.')
    local log = csvlog.open(path, { 'epoch', 'loss' }, { append = true })
    log:write { epoch = 2, loss = 0.85 }
    log:close()
    local rows = csvlog.read(path)
    assert.are.equal(3, #rows)
    assert.are.same({ epoch = 2, loss = 0.85 }, rows[3])
  end)

  it('refuses unknown columns and a different header', function()
    local log = csvlog.open(path, { 'epoch', 'loss' })
    assert.has_error(function() log:write { epoch = 1, los = 2 } end,
      'fovea.csvlog: write: los is not a column of ' .. path .. ' (columns: epoch, loss)')
    log:close()
    assert.has_error(function() csvlog.open(path, { 'epoch', 'acc' }, { append = true }) end)
    assert.has_error(function() csvlog.read('/nonexistent/log.csv') end)
  end)
end)

describe('plot', function()
  local have, why = plot.available()
  local made = {}
  local function out(name)
    local p = os.tmpname() .. '_' .. name .. '.png'
    made[#made + 1] = p
    return p
  end
  after_each(function()
    for _, p in ipairs(made) do os.remove(p); os.remove((p:gsub('_[%w]+%.png$', ''))) end
    made = {}
  end)

  local function is_png(path, w, h)
    local s = read(path)
    assert.is_true(#s > 1000, path .. ' is too small: ' .. #s .. ' bytes')
    assert.are.equal('\137PNG\r\n\26\n', s:sub(1, 8))
    local pw, ph = plot.check_png(path)
    assert.are.equal(w, pw)
    assert.are.equal(h, ph)
  end

  it('draws curves, two y axes, into a PNG', function()
    if not have then pending(why); return end
    local p = out('curves')
    local path, w, h = plot.curves(p, { title = "dual: 'MESSIDOR'", xlabel = 'epoch', ylabel = 'loss',
      y2label = 'accuracy', series = {
        { name = 'train_loss', x = { 1, 2, 3, 4 }, y = { 0.9, 0.7, 0.6, 0.55 } },
        { name = 'test loss', y = { 1.0, 0 / 0, 0.8, 0.75 } },
        { name = 'accuracy', y = { 0.6, 0.7, 0.75, 0.8 }, axis = 'y2', style = 'linespoints' } } })
    assert.are.equal(p, path)
    assert.are.same({ 800, 500 }, { w, h })
    is_png(p, 800, 500)
  end)

  it('draws training curves side by side from a csvlog file', function()
    if not have then pending(why); return end
    local logpath = os.tmpname()
    local log = csvlog.open(logpath, { 'epoch', 'train_loss', 'val_loss', 'accuracy', 'auc', 'lr' })
    for e = 1, 12 do
      log:write { epoch = e, train_loss = 1 / e, val_loss = e % 3 == 0 and 1.1 / e or nil, accuracy = 1 - 0.4 / e, auc = 1 - 0.2 / e, lr = 2e-4 }
    end
    log:close()
    local p = out('training')
    local _, w, h = plot.training(p, logpath, { title = 'dual, run 1' })
    os.remove(logpath)
    is_png(p, 1200, 450)
    assert.are.same({ 1200, 450 }, { w, h })
  end)

  it('draws ROC curves with the AUC in the legend and the diagonal', function()
    if not have then pending(why); return end
    local labels, s1, s2 = {}, {}, {}
    for i = 1, 60 do
      labels[i] = i % 3 == 0 and 2 or 1
      s1[i] = (labels[i] == 2 and 0.4 or 0) + (i * 37 % 60) / 100
      s2[i] = (labels[i] == 2 and 0.1 or 0) + (i * 17 % 60) / 70
    end
    local r1, r2 = metrics.roc_curve(labels, s1), metrics.roc_curve(labels, s2)
    r1.name, r2.name = 'dual', 'resnet18'
    local p = out('roc')
    plot.roc(p, { r1, r2, { name = 'no auc given', fpr = { 0, 0.5, 1 }, tpr = { 0, 0.8, 1 } } }, { title = 'MESSIDOR' })
    is_png(p, 600, 600)
  end)

  it('says how to install gnuplot when it is missing, and shows its errors', function()
    local ok, err = pcall(plot.curves, out('missing'), { gnuplot = '/nonexistent/gnuplot', series = { { name = 'a', y = { 1, 2 } } } })
    assert.is_false(ok)
    assert.truthy(err:find('install gnuplot-nox (make deps', 1, true), err)
    if not have then pending(why); return end
    ok, err = pcall(plot.curves, out('bad'), { series = { { name = 'a', y = { 1, 2 }, color = 'notacolour' } } })
    assert.is_false(ok)
    assert.truthy(err:find('gnuplot failed', 1, true), err)
    assert.truthy(err:find('unrecognized color name', 1, true), err)
    ok, err = pcall(plot.roc, '/nonexistent/dir/roc.png', { { name = 'a', fpr = { 0, 1 }, tpr = { 0, 1 } } })
    assert.is_false(ok)
    assert.truthy(err:find('cannot open file', 1, true), err)
    assert.has_error(function() plot.curves(out('empty'), { series = { { name = 'a', y = { 0 / 0 } } } }) end,
      'fovea.plot: curves: series 1 (a): no finite points to draw')
  end)
end)
