-- recipes_spec.lua: the recipes as users run them, shrunk to seconds: the main job on a
-- tiny built-in set writes every output the README lists; predict and gradcam read its
-- checkpoint; --help lists the options with defaults; bad input ends with a one-line
-- error and exit status 1; tables.lua rejects an unknown table.
local helpers = require 'spec.helpers'
local run, exists = helpers.run, helpers.exists

describe('recipes', function()
  local dir = os.tmpname()
  os.remove(dir)
  local tiny = ('--synthetic_n 24 --size 48 --epochs 2 --gradcam 2 --workers 1 --cache %s/cache --out %s/run'):format(dir,
    dir)

  teardown(function() os.execute('rm -rf ' .. dir) end)

  it('messidor.lua runs end to end on the built-in set and writes every output', function()
    local status, out = run('luajit recipes/messidor.lua ' .. tiny)
    assert(status == 0, out)
    assert.matches('| name | auc | sensitivity | specificity | accuracy | precision | f1 |', out, 1, true)
    for _, f in ipairs { 'results.md', 'results.csv', 'run-1/log.csv', 'run-1/last.safetensors',
      'run-1/best.safetensors', 'run-1/curves.png', 'run-1/roc.png', 'run-1/gradcam-1.png', 'run-1/gradcam-2.png' } do
      assert.is_true(exists(dir .. '/run/' .. f), f)
    end
    -- resuming a finished run changes nothing and succeeds
    status, out = run('luajit recipes/messidor.lua --resume ' .. tiny)
    assert(status == 0, out)
  end)

  it('predict.lua and gradcam.lua use the checkpoint the main job wrote', function()
    local images = ('%s/cache/synthetic-24-48-1/images'):format(dir)
    local status, out = run(('luajit recipes/predict.lua --checkpoint %s/run/run-1/best.safetensors --images %s --out %s/p.csv')
      :format(dir, images, dir))
    assert(status == 0, out)
    local f = assert(io.open(dir .. '/p.csv'))
    local header = f:read('*l')
    local rows = 0
    for _ in f:lines() do rows = rows + 1 end
    f:close()
    assert.are.equal('path,predicted,negative,positive', header)
    assert.are.equal(24, rows)
    status, out = run(('luajit recipes/gradcam.lua --a %s/run/run-1/best.safetensors --b %s/run/run-1/last.safetensors '
      .. '--images %s --limit 1 --out %s/gc'):format(dir, dir, images, dir))
    assert(status == 0, out)
    assert.is_true(exists(dir .. '/gc/001.png'))
  end)

  it('--help lists every option with its default', function()
    local status, out = run('luajit recipes/messidor.lua --help')
    assert.are.equal(0, status)
    for _, name in ipairs { 'data', 'task', 'backbone', 'variant', 'nam_at', 'size', 'epochs', 'batch', 'lr', 'device',
      'workers', 'seed', 'out', 'resume', 'pretrained', 'repeats' } do
      assert.matches('%-%-' .. name .. ' ', out)
    end
    assert.matches('default: normal%-vs%-abnormal', out)
  end)

  it('ends with a one-line error and status 1 on bad input', function()
    local status, out = run('luajit recipes/messidor.lua --data /nonexistent/messidor')
    assert.are.equal(1, status)
    assert.matches('^error: .*nonexistent', out)
    assert.is_nil(out:match('traceback'))
    status, out = run('luajit recipes/messidor.lua --epochs lots')
    assert.are.equal(2, status)
    assert.matches('expects a number', out)
    status, out = run('luajit recipes/messidor.lua --device cuda ' .. tiny)
    assert.are.equal(1, status)
    assert.matches('CUDA', out)
    status = run('luajit recipes/tables.lua --table 9')
    assert.are.equal(2, status)
  end)
end)
