-- bench/gpu.lua: fovea on the GPU against PyTorch on the same GPU, in one run
-- (bench/gpu_torch.py): the dual-branch ResNet18 training step at 386x386 with batch 4
-- and 32 (images per second, peak GPU memory), and fused NAM forward + backward against
-- PyTorch's scaled_dot_product_attention at N = 9,409 (97x97) and 37,249 (193x193).
-- Also, fovea alone: the step without the NAM branch (where the time goes), the step
-- at batch 32 with its images sent from the cpu each time (pageable against pinned
-- memory), and the dual model with NAM at the stem (N = 37,249) at batch 4.
-- Needs a GPU and the CUDA backend (make cuda); cuda/gpu_check.sh runs it.
--   luajit bench/gpu.lua [--runs 5] [--python python3] [--autocast none]
--   --python none: fovea alone; --autocast bf16: both under bf16 autocast (fovea's
--   fv.cuda.set_autocast, PyTorch's torch.autocast) instead of TF32.
-- FOVEA_NAM_KERNEL=gemm runs NAM through cuBLAS instead of the fused mma kernel (cuda/README.md).
package.path = './?.lua;./?/init.lua;./lua/?.lua;./lua/?/init.lua;' .. package.path
local fv = require 'fovea'
local models = require 'models'
local common = require 'bench.common'

local opts = common.options({ runs = 5, python = 'python3', autocast = 'none' }, 'bench/gpu.lua')
if not fv.cuda.available() then
  io.stderr:write('bench/gpu.lua: no GPU: ' .. tostring(fv.cuda.unavailable_reason()) .. '\n')
  os.exit(1)
end

local function peer(args)
  if opts.python == 'none' then return '(not run: --python none)' end
  if opts.autocast == 'bf16' then args = args .. ' bf16' end
  local p = io.popen(opts.python .. ' bench/gpu_torch.py ' .. args .. ' 2>&1')
  local out = p:read('*a')
  p:close()
  return out:match('[^\n]*$') ~= '' and out:match('[^\n]*$') or out
end

local function timed(fn)
  return common.median_time(opts.runs, function()
    fn()
    fv.cuda.synchronize()
  end)
end

fv.cuda.set_autocast(opts.autocast)
print(('fovea on cuda (%d device(s)), NAM kernel %s, autocast %s; PyTorch through %s'):format(
  fv.cuda.device_count(), os.getenv('FOVEA_NAM_KERNEL') or 'mma (default)', opts.autocast, opts.python))

-- Median seconds of an Adam training step of models.build(spec) on the GPU for images x
-- and labels y, the peak GPU memory it took (MiB), and the median milliseconds the host
-- took to issue the step (until opt:step() returns, before the synchronization): near
-- the step's time, the host is what limits it (launches, bookkeeping, waits inside the
-- step); well under it, the GPU's kernels are.
local function step_seconds(spec, x, y)
  fv.manual_seed(0)
  local model = models.build(spec):cuda()
  local opt = fv.optim.Adam(model, { lr = 2e-4 })
  fv.cuda.reset_peak()
  local issue = {}
  local seconds = timed(function()
    local start = fv.clock()
    opt:zero_grad()
    fv.F.cross_entropy(model(x), y):backward()
    opt:step()
    issue[#issue + 1] = fv.clock() - start
  end)
  local timed_issue = { unpack(issue, 3) } -- as median_time: the first two runs warm up
  table.sort(timed_issue)
  return seconds, fv.cuda.memory_stats().peak / 2 ^ 20, 1e3 * timed_issue[math.ceil(#timed_issue / 2)]
end

-- (batch) labels 2, 1, 2, 1, ... on the GPU
local function labels(batch)
  local t = {}
  for i = 1, batch do t[i] = 1 + i % 2 end
  return fv.tensor(t, { dtype = 'int64' }):cuda()
end

for _, batch in ipairs { 4, 32 } do
  local x, y = fv.randn({ batch, 3, 386, 386 }, { device = 'cuda' }), labels(batch)
  local seconds, peak, issue_ms = step_seconds({ name = 'dual', classes = 2 }, x, y)
  print(('fovea  step size=386 batch=%d images_per_s=%.2f peak_mb=%.1f host_issue_ms=%.2f step_ms=%.2f'):format(
    batch, batch / seconds, peak, issue_ms, 1e3 * seconds))
  print('torch  ' .. peer(('step 386 %d %d'):format(batch, opts.runs)))
  -- where the time goes: the same step without the NAM branch (fovea alone)
  seconds, peak, issue_ms = step_seconds({ name = 'dual', classes = 2, variant = 'baseline' }, x, y)
  print(('fovea  step size=386 batch=%d variant=baseline images_per_s=%.2f host_issue_ms=%.2f step_ms=%.2f'):format(
    batch, batch / seconds, issue_ms, 1e3 * seconds))
end
-- the images sent from the cpu for each step, as train.fit does: batch i + 1 is sent once
-- step i is queued, then the steps run on without waiting for the GPU in between; from
-- pageable memory (a synchronous copy, which waits for the GPU) and from pinned memory
-- (Loader{pin_memory = true}: an asynchronous copy on the copy stream that overlaps
-- step i's kernels). Median of runs of 4 steps each.
do
  local batch, steps = 32, 4
  local host, y = fv.randn({ batch, 3, 386, 386 }), labels(batch)
  for _, case in ipairs { { 'pageable', host }, { 'pinned', host:pin_memory() } } do
    fv.manual_seed(0)
    local model = models.build({ name = 'dual', classes = 2 }):cuda()
    local opt = fv.optim.Adam(model, { lr = 2e-4 })
    local seconds = timed(function()
      local x = case[2]:cuda()
      for _ = 1, steps do
        opt:zero_grad()
        fv.F.cross_entropy(model(x), y):backward()
        opt:step()
        x = case[2]:cuda() -- the next batch, on its way while this step runs
      end
    end) / steps
    print(('fovea  step size=386 batch=%d upload=%s images_per_s=%.2f'):format(batch, case[1], batch / seconds))
  end
end
-- the acceptance case: NAM at the stem (N = 193 x 193 = 37,249 positions) at batch 4
do
  local seconds, peak = step_seconds({ name = 'dual', classes = 2, nam_at = 0 },
    fv.randn({ 4, 3, 386, 386 }, { device = 'cuda' }), labels(4))
  print(('fovea  step size=386 batch=4 nam_at=0 images_per_s=%.2f peak_mb=%.1f'):format(4 / seconds, peak))
end
for _, side in ipairs { 97, 193 } do
  local n = side * side
  local q = fv.randn({ 4, n, 32 }, { device = 'cuda' }):detach()
  local k = fv.randn({ 4, n, 32 }, { device = 'cuda' }):detach()
  local v = fv.randn({ 4, n, 64 }, { device = 'cuda' }):detach()
  for _, t in ipairs { q, k, v } do t.requires_grad = true end
  fv.cuda.reset_peak()
  local seconds = timed(function()
    local out = fv.F.nam_attention(q, k, v)
    out:backward(fv.ones(out:size(), { device = 'cuda' }))
  end)
  print(('fovea  nam n=%d fwd_bwd_s=%.4f peak_mb=%.1f'):format(n, seconds, fv.cuda.memory_stats().peak / 2 ^ 20))
  print('torch  ' .. peer(('nam %d 4 %d'):format(side, opts.runs)))
end
