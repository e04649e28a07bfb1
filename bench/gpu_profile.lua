-- bench/gpu_profile.lua: where a training step's GPU time goes, op by op. Trains the
-- dual-branch model (models.build { name = 'dual', classes = 2 }) with Adam on cuda at
-- 386x386, batch 4 then batch 32: warm-up steps, the profile reset, timed steps, then the
-- per-op table of cuda/profile.cu (fv.cuda.profile_report: op, calls, gpu ms, host ms,
-- gpu ms per call, share of the GPU total) and the mean wall time per step.
-- The profiler synchronizes after every backend call, so these steps are slower than
-- unprofiled ones (bench/gpu.lua); the gpu ms column is what each op took on the device,
-- and host ms - gpu ms roughly what the host spent around it.
-- Needs a GPU, the CUDA backend (make cuda) and the profiler switched on:
--   FOVEA_CUDA_PROFILE=1 luajit bench/gpu_profile.lua [--warmup 3] [--steps 5] [--batches 4,32] [--size 386]
package.path = './?.lua;./?/init.lua;./lua/?.lua;./lua/?/init.lua;' .. package.path
local fv = require 'fovea'
local models = require 'models'
local common = require 'bench.common'

local opts = common.options({ warmup = 3, steps = 5, batches = '4,32', size = 386 }, 'bench/gpu_profile.lua')

local function fail(msg)
  io.stderr:write('bench/gpu_profile.lua: ' .. msg .. '\n')
  os.exit(1)
end

local env = os.getenv('FOVEA_CUDA_PROFILE')
if not env or env == '' or env == '0' then
  fail('the profiler is off: run it as  FOVEA_CUDA_PROFILE=1 luajit bench/gpu_profile.lua')
end
if not fv.cuda.available() then fail('no GPU: ' .. tostring(fv.cuda.unavailable_reason())) end
local on, why = pcall(fv.cuda.profile_report)
if not on then fail(tostring(why)) end

print(('fovea on cuda (%d device(s)), profiled: dual model, Adam, %dx%d, %d warm-up and %d timed steps')
  :format(fv.cuda.device_count(), opts.size, opts.size, opts.warmup, opts.steps))
for batch in tostring(opts.batches):gmatch('%d+') do
  batch = tonumber(batch)
  fv.manual_seed(0)
  local model = models.build { name = 'dual', classes = 2 }:cuda()
  local opt = fv.optim.Adam(model, { lr = 2e-4 })
  local x = fv.randn({ batch, 3, opts.size, opts.size }, { device = 'cuda' })
  local labels = {}
  for i = 1, batch do labels[i] = 1 + i % 2 end
  local y = fv.tensor(labels, { dtype = 'int64' }):cuda()
  local function step()
    opt:zero_grad()
    fv.F.cross_entropy(model(x), y):backward()
    opt:step()
  end
  for _ = 1, opts.warmup do
    step()
    collectgarbage('step')
  end
  fv.cuda.synchronize()
  fv.cuda.reset_peak()
  fv.cuda.profile_reset()
  local total = 0
  for _ = 1, opts.steps do
    local start = fv.clock()
    step()
    fv.cuda.synchronize()
    total = total + (fv.clock() - start)
    collectgarbage('step') -- outside the timing, as bench/common.lua's median_time does
  end
  local report = fv.cuda.profile_report() -- the GC steps' frees are in it
  local mean = total / opts.steps
  print(('\n== batch %d: %d steps, mean wall %.1f ms per step (%.2f images/s, profiled), peak %.1f MiB')
    :format(batch, opts.steps, mean * 1e3, batch / mean, fv.cuda.memory_stats().peak / 2 ^ 20))
  io.write(report)
  model, opt, x, y = nil, nil, nil, nil
  collectgarbage('collect')
  collectgarbage('collect')
  fv.cuda.empty_cache()
end
