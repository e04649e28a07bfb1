-- bench/train.lua: one training step (forward, cross-entropy, backward, Adam) of the
-- full dual-branch model (ResNet18, NAM on e1 with the fused kernel, NVCF) on the CPU,
-- fovea against the same model in PyTorch (bench/dual_torch.py: torch.bmm + softmax) in
-- the same invocation with the same thread count; float32, batch 4; median of RUNS steps
-- after two warm-ups; peak RSS of each process. PyTorch also runs with
-- glibc.malloc.hugetlb=1, its best setting (performance-notes.md).
--   luajit bench/train.lua [--size 386] [--batch 4] [--threads 2] [--runs 3] [--nam_at 1]
package.path = './?.lua;./?/init.lua;./lua/?.lua;./lua/?/init.lua;' .. package.path
local fv = require 'fovea'
local models = require 'models'
local common = require 'bench.common'

local opts = common.options({ size = 386, batch = 4, threads = 2, runs = 3, nam_at = 1 }, 'bench/train.lua')

fv.set_num_threads(opts.threads)
fv.manual_seed(0)
local model = models.build { name = 'dual', classes = 2, nam_at = opts.nam_at }
local opt = fv.optim.Adam(model, { lr = 2e-4 })
local x = fv.randn({ opts.batch, 3, opts.size, opts.size })
local y = {}
for i = 1, opts.batch do y[i] = 1 + i % 2 end
local seconds = common.median_time(opts.runs, function()
  opt:zero_grad()
  fv.F.cross_entropy(model(x), y):backward()
  opt:step()
end)
local peers = {}
if opts.nam_at == 1 then
  local args = ('bench/dual_torch.py %d %d %d %d'):format(opts.size, opts.batch, opts.threads, opts.runs)
  peers['pytorch'] = common.python(args)
  peers['pytorch hugetlb'] = common.python(args, 'GLIBC_TUNABLES=glibc.malloc.hugetlb=1')
end
common.report(('dual-branch ResNet18 training step (NAM at e%d), %dx%d, batch %d, %d threads'):format(opts.nam_at,
  opts.size, opts.size, opts.batch, opts.threads), seconds, common.peak_rss(), peers)
