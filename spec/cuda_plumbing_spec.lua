-- cuda_plumbing_spec.lua: the CUDA backend's surroundings on a machine without a GPU:
-- fv.cuda reports itself unavailable with a reason and :cuda() raises a clear error;
-- and spec/cuda_spec.lua passes, in a separate busted process, against a stand-in
-- libfovea_cuda.so (spec/c/fake_cuda.c: host memory and the CPU's kernels registered as
-- the cuda device). That checks the loading, device moves, cross-device copies, module
-- moves, statistics and error paths, the optimizers' dispatch to the device's table,
-- train.fit moving batches to the model's device (a short run on 'cuda' that must equal
-- the cpu's bit for bit), the main job and predict/gradcam with --device cuda (equal to
-- the cpu's, the timing aside), pinned memory and uploads (the stand-in holds an upload's source
-- as the real backend does), and the GPU spec itself; the CUDA kernels are
-- checked only on a GPU (cuda/gpu_check.sh).
local helpers = require 'spec.helpers'
local run = helpers.run
local fv = require 'fovea'

local build = os.getenv('FOVEA_BUILD') or 'build'
local sanitize = os.getenv('FOVEA_SANITIZE') or ''

local function abspath(path)
  if path:sub(1, 1) == '/' then return path end
  local p = io.popen('pwd')
  local cwd = p:read('*l')
  p:close()
  return cwd .. '/' .. path
end

describe('cuda without a GPU', function()
  it('is unavailable with a reason, and device requests raise errors naming CUDA', function()
    if fv.cuda.available() then pending('a GPU is present: spec/cuda_spec.lua covers it') end
    assert.is_false(fv.cuda.available())
    assert.is_string(fv.cuda.unavailable_reason())
    assert.are.equal(0, fv.cuda.device_count())
    assert.are.same({ allocated = 0, reserved = 0, peak = 0 }, fv.cuda.memory_stats())
    fv.cuda.empty_cache()
    fv.cuda.synchronize()
    local ok, err = pcall(function() return fv.ones(2):cuda() end)
    assert.is_false(ok)
    assert.matches('CUDA is not available', err)
    ok, err = pcall(function() return fv.ones(2):to('cuda:0') end)
    assert.matches('CUDA is not available', err)
    ok, err = pcall(function() return fv.zeros({ 2 }, { device = 'cuda' }) end)
    assert.is_false(ok)
    assert.matches('no cuda backend is loaded', err)
    ok, err = pcall(function() return fv.nn.Linear(2, 2):cuda() end)
    assert.is_false(ok)
    assert.matches('CUDA', err)
    assert.are.equal('cpu', fv.ones(2):cpu():device())
  end)

  it('refuses pinned memory without a cuda backend, naming the tensor and the reason', function()
    if fv.cuda.available() then pending('a GPU is present: spec/cuda_spec.lua covers it') end
    local ffi = require 'ffi'
    local C = require('fovea.clib').C
    local t = fv.ones(2)
    assert.is_false(t:is_pinned())
    local ok, err = pcall(function() return t:pin_memory() end)
    assert.is_false(ok)
    assert.matches('fovea: pin_memory: CUDA is not available: ', err)
    -- the C API says why too
    local out = ffi.new('fv_tensor*[1]')
    assert.are.equal(C.FV_ERR_DEVICE, C.fv_pin_memory(out, t.p, C.FV_CUDA))
    assert.matches('pin_memory: cannot pin the float32 2 tensor for cuda: no cuda backend is loaded',
      ffi.string(C.fv_last_error()))
    assert.are.equal(C.FV_ERR_DEVICE, C.fv_pin_memory(out, t.p, C.FV_CPU))
    assert.matches("host memory is pinned for a device's transfers %(cuda%), not for cpu", ffi.string(C.fv_last_error()))
    assert.are.equal(0, C.fv_tensor_is_pinned(t.p))
    assert.are.same({ in_use = 0, cached = 0, allocations = 0, in_flight = 0 }, fv.cuda.pinned_stats())
    -- the loader: its option, and the C setter
    local made = { size = function() return 2 end, get = function() return fv.zeros({ 2, 2, 1 }, { dtype = 'uint8' }), 1 end }
    ok, err = pcall(fv.data.Loader, made, { pin_memory = true })
    assert.is_false(ok)
    assert.matches('fovea: Loader: pin_memory needs CUDA %(pinned memory is for copies to the GPU%), and CUDA is not '
      .. 'available: ', err)
    assert.has_no_error(function() fv.data.Loader(made, { pin_memory = false }) end)
    local lo = ffi.new('fv_loader*[1]')
    assert.are.equal(0, C.fv_loader_new(lo, 0, nil, nil, 0, nil, 1, 1, 1, nil))
    assert.are.equal(C.FV_ERR_DEVICE, C.fv_loader_pin_memory(lo[0], C.FV_CUDA))
    assert.matches('loader: pin_memory: no cuda backend is loaded', ffi.string(C.fv_last_error()))
    assert.are.equal(0, C.fv_loader_pin_memory(lo[0], C.FV_CPU))
    C.fv_loader_free(lo[0])
  end)
end)

describe('cuda plumbing (stand-in backend)', function()
  local lib, built, log
  setup(function()
    local status
    status, log = run(('make -s fake-cuda BUILD=%s SANITIZE="%s" CFLAGS="-O1 -g"'):format(build, sanitize))
    built = status == 0
    lib = abspath(build .. '/spec/fake-cuda/libfovea_cuda.so')
  end)

  it('passes spec/cuda_spec.lua with host memory and the CPU kernels', function()
    assert(built, 'make fake-cuda failed:\n' .. tostring(log))
    -- FOVEA_CUDA_PROFILE empty: the stand-in has no profiler, so the spec must expect it off
    local status, out = run(('FOVEA_CUDA_PROFILE= FOVEA_CUDA_LIB=%s %s --lua=%s --tags=gpu '
      .. '--output=spec/count_output.lua spec/cuda_spec.lua')
      :format(lib, os.getenv('BUSTED') or 'busted', os.getenv('LUAJIT') or 'luajit'))
    local passed, failed = out:match('(%d+) passed, (%d+) failed%s*$')
    assert(status == 0 and passed and tonumber(passed) > 0 and tonumber(failed) == 0, out)
    assert.is_nil(out:match('skipped'), out)
  end)

  it('trains with train.fit on cuda (Adam, 2 steps) exactly as on the cpu', function()
    assert(built, 'make fake-cuda failed:\n' .. tostring(log))
    -- A tiny model and a loss of elementwise ops and reductions only (the stand-in has no
    -- nn kernels): batches come from the loader on the cpu and train.fit moves them.
    local script = [[
      local fv = require 'fovea'
      assert(fv.cuda.available(), fv.cuda.unavailable_reason())
      local loader = { batches = function() return 2 end }
      function loader:epoch()
        local i = 0
        return function()
          i = i + 1
          if i > 2 then return nil end
          local x = fv.randn({ 5, 4 }, { seed = 100 + i })
          return x, fv.tensor({ 1, 2, 3, 1, 2 }, { dtype = 'int64' })
        end
      end
      local function run(device, dir)
        fv.manual_seed(7)
        local net = fv.nn.Sequential(fv.nn.Linear(4, 6), fv.nn.ReLU(), fv.nn.Linear(6, 3))
        net:to(device)
        local opt = fv.optim.Adam(net, { lr = 0.05, weight_decay = 0.01 })
        local seen = {}
        local function loss(logits, labels)
          seen[#seen + 1] = logits:device() .. '/' .. labels:device()
          return (logits * logits):mean() + (logits:sum(2) * 0.1):mean()
        end
        fv.train.fit { model = net, optimizer = opt, train = loader, epochs = 1, out_dir = dir, quiet = true,
          loss = loss }
        local values = {}
        for _, p in ipairs(net:parameters()) do
          assert(p:device() == device, 'a parameter left ' .. device)
          for _, v in ipairs(p:cpu():reshape({ -1 }):totable()) do
            values[#values + 1] = ('%a'):format(v)
          end
        end
        for _, st in pairs(opt.state) do
          assert(st.step == 2 and st.exp_avg:device() == device, 'optimizer state on ' .. st.exp_avg:device())
        end
        return table.concat(values, ' '), table.concat(seen, ' ')
      end
      local dir = os.tmpname()
      os.remove(dir)
      local cpu, cpu_seen = run('cpu', dir .. '-cpu')
      local gpu, gpu_seen = run('cuda', dir .. '-cuda')
      os.execute("rm -rf '" .. dir .. "-cpu' '" .. dir .. "-cuda'")
      io.write('cpu: ', cpu_seen, '\ncuda: ', gpu_seen, '\n')
      if cpu ~= gpu then error('parameters differ:\ncpu  ' .. cpu .. '\ncuda ' .. gpu) end
      io.write('same\n')
    ]]
    local path = os.tmpname()
    local f = assert(io.open(path, 'w'))
    f:write(script)
    f:close()
    local status, out = run(('FOVEA_CUDA_LIB=%s %s %s'):format(lib, os.getenv('LUAJIT') or 'luajit', path))
    os.remove(path)
    assert.are.equal(0, status, out)
    assert.matches('cpu: cpu/cpu cpu/cpu\ncuda: cuda/cuda cuda/cuda\nsame', out)
  end)

  it('runs the main job with --device cuda as on the cpu, resumes it, and predicts and draws Grad-CAM on cuda',
    function()
    assert(built, 'make fake-cuda failed:\n' .. tostring(log))
    -- the stand-in's kernels are the CPU's, so everything but the timing must be the same:
    -- this checks the recipes' cuda path (pinned loader, train.fit's prefetching and late
    -- loss reads, evaluation, checkpoints on 'cuda', Grad-CAM) end to end
    local dir = os.tmpname()
    os.remove(dir)
    local luajit = os.getenv('LUAJIT') or 'luajit'
    local tiny = ('--synthetic_n 24 --size 48 --epochs 2 --gradcam 1 --workers 1 --cache %s/cache'):format(dir)
    local function job(device, extra)
      return run(('FOVEA_CUDA_LIB=%s %s recipes/messidor.lua --device %s %s --out %s/%s %s'):format(lib, luajit, device,
        tiny, dir, device, extra or ''))
    end
    -- log.csv without its last column (seconds)
    local function log_rows(device)
      local rows = {}
      for line in io.lines(('%s/%s/run-1/log.csv'):format(dir, device)) do rows[#rows + 1] = line:gsub(',[^,]*$', '') end
      return rows
    end
    local status, out = job('cpu')
    assert(status == 0, out)
    status, out = job('cuda')
    assert(status == 0, out)
    assert.are.same(log_rows('cpu'), log_rows('cuda'))
    assert.are.equal(helpers.read(dir .. '/cpu/results.csv'), helpers.read(dir .. '/cuda/results.csv'))
    status, out = job('cuda', '--resume')
    assert(status == 0, out)
    local images, ckpt = dir .. '/cache/synthetic-24-48-1/images', dir .. '/cuda/run-1/best.safetensors'
    for _, device in ipairs { 'cpu', 'cuda' } do
      status, out = run(('FOVEA_CUDA_LIB=%s %s recipes/predict.lua --device %s --checkpoint %s --images %s --out %s/%s.csv')
        :format(lib, luajit, device, ckpt, images, dir, device))
      assert(status == 0, out)
    end
    assert.are.equal(helpers.read(dir .. '/cpu.csv'), helpers.read(dir .. '/cuda.csv'))
    status, out = run(('FOVEA_CUDA_LIB=%s %s recipes/gradcam.lua --device cuda --a %s --images %s --limit 1 --out %s/gc')
      :format(lib, luajit, ckpt, images, dir))
    assert(status == 0, out)
    assert.is_true(helpers.exists(dir .. '/gc/001.png'))
    os.execute('rm -rf ' .. dir)
  end)

  it('reports a failing fv_cuda_init as unavailable, with its message', function()
    assert(built, 'make fake-cuda failed:\n' .. tostring(log))
    local script = [[
      local fv = require 'fovea'
      assert(not fv.cuda.available())
      io.write(fv.cuda.unavailable_reason(), '\n')
      local ok, err = pcall(function() return fv.ones(2):cuda() end)
      io.write(tostring(ok), ' ', err, '\n')
    ]]
    local path = os.tmpname()
    local f = assert(io.open(path, 'w'))
    f:write(script)
    f:close()
    local status, out = run(("FOVEA_CUDA_LIB=%s FOVEA_FAKE_CUDA_FAIL='driver missing' %s %s")
      :format(lib, os.getenv('LUAJIT') or 'luajit', path))
    os.remove(path)
    assert.are.equal(0, status, out)
    assert.matches('cuda: no usable GPU: driver missing', out)
    assert.matches('false .*CUDA is not available: cuda: no usable GPU: driver missing', out)
  end)
end)
