-- bench/resnet18.lua: one training step (forward, cross-entropy, backward, Adam) of
-- ResNet18 (2 classes) on the CPU, fovea against PyTorch (bench/resnet18_torch.py, run
-- in the same invocation with the same thread count), float32, median of RUNS steps
-- after two warm-ups; peak RSS of each process. PyTorch runs twice: with glibc's
-- default malloc and with glibc.malloc.hugetlb=1 (its best, see performance-notes).
--   luajit bench/resnet18.lua [--size 224] [--batch 4] [--threads 2] [--runs 5]
package.path = './?.lua;./lua/?.lua;./lua/?/init.lua;' .. package.path
local fv = require 'fovea'
local resnet = require 'models.resnet'
local common = require 'bench.common'

local opts = common.options({ size = 224, batch = 4, threads = 2, runs = 5 }, 'bench/resnet18.lua')

local function fovea_step()
  fv.set_num_threads(opts.threads)
  fv.manual_seed(0)
  local model = resnet.resnet18 { classes = 2 }
  local opt = fv.optim.Adam(model, { lr = 2e-4 })
  local x = fv.randn({ opts.batch, 3, opts.size, opts.size })
  local y = {}
  for i = 1, opts.batch do y[i] = 1 + i % 2 end
  return common.median_time(opts.runs, function()
    opt:zero_grad()
    local loss = fv.F.cross_entropy(model(x), y)
    loss:backward()
    opt:step()
  end)
end

local ours = fovea_step()
local ours_rss = common.peak_rss()
local args = ('%d %d %d %d'):format(opts.size, opts.batch, opts.threads, opts.runs)
local torch_default = common.python('bench/resnet18_torch.py ' .. args)
local torch_huge = common.python('bench/resnet18_torch.py ' .. args, 'GLIBC_TUNABLES=glibc.malloc.hugetlb=1')
common.report(('ResNet18 training step, %dx%d, batch %d, %d threads'):format(opts.size, opts.size, opts.batch,
  opts.threads), ours, ours_rss, { ['pytorch'] = torch_default, ['pytorch hugetlb'] = torch_huge })
