-- bench/gpu_nam_kernels.lua: one fused NAM forward + backward on the GPU at the size that
-- decides the batch-4 training step (q, k (4, 9409, 32), v (4, 9409, 64): the dual model's
-- NAM at e1 on 386x386 images), after one warm-up pass, for a kernel profiler to look
-- at: cuda/gpu_check.sh runs it under Nsight Compute (ncu), skipping the warm-up's
-- launches, to report each NAM kernel's occupancy, issue-slot use and stall reasons.
-- With --passes P > 2, the median of passes 2 .. P is printed last, the forward's alone
-- beside it (cuda/gpu_check.sh times NAM alone with it; to compare builds of nn_nam_mma.cu, run it
-- with FOVEA_CUDA_LIB naming each build's libfovea_cuda.so).
-- Needs a GPU and the CUDA backend (make cuda):
--   luajit bench/gpu_nam_kernels.lua [--side 97] [--batch 4] [--passes 2]
package.path = './?.lua;./?/init.lua;./lua/?.lua;./lua/?/init.lua;' .. package.path
local fv = require 'fovea'
local common = require 'bench.common'

local opts = common.options({ side = 97, batch = 4, passes = 2 }, 'bench/gpu_nam_kernels.lua')
if not fv.cuda.available() then
  io.stderr:write('bench/gpu_nam_kernels.lua: no GPU: ' .. tostring(fv.cuda.unavailable_reason()) .. '\n')
  os.exit(1)
end
local n = opts.side * opts.side
local q = fv.randn({ opts.batch, n, 32 }, { device = 'cuda' }):requires_grad_()
local k = fv.randn({ opts.batch, n, 32 }, { device = 'cuda' }):requires_grad_()
local v = fv.randn({ opts.batch, n, 64 }, { device = 'cuda' }):requires_grad_()
local dout = fv.ones({ opts.batch, n, 64 }, { device = 'cuda' })
local both, forward = {}, {} -- ms of passes 2 .. passes
for pass = 1, math.max(2, opts.passes) do -- the first pass warms up (allocations, module loading)
  fv.cuda.synchronize()
  local start = fv.clock()
  local out = fv.F.nam_attention(q, k, v)
  fv.cuda.synchronize()
  local mid = fv.clock()
  out:backward(dout)
  fv.cuda.synchronize()
  local ms, fwd = 1e3 * (fv.clock() - start), 1e3 * (mid - start)
  if pass > 1 then both[#both + 1], forward[#forward + 1] = ms, fwd end
  print(('pass %d: nam_attention forward + backward, n=%d batch=%d: %.2f ms (forward %.2f ms)'):format(pass, n,
    opts.batch, ms, fwd))
end
if #both > 1 then
  local function median(t)
    table.sort(t)
    return t[math.floor((#t + 1) / 2)]
  end
  print(('median of passes 2-%d: %.2f ms (forward %.2f ms)'):format(#both + 1, median(both), median(forward)))
end
