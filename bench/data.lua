-- bench/data.lua: images per second through fv.data.Loader for the paper's training
-- pipeline at 386 (PNG decode, resize (a no-op here: the images are 386 already),
-- CLAHE on L of LAB, random flips and rotation, to a float32 tensor), batch 4, with 1
-- and 2 worker threads, on the synthetic set (generated into /tmp when absent), plus
-- the Lua path, the eval pipeline and decoding alone for comparison. Each line is the
-- best of `epochs` epochs after a warm-up one (wall time: the workers' time counts
-- once), the median, and the CPU time per image of all threads together (the least
-- over the epochs; what the work costs, whatever else runs on the machine).
--
--   luajit bench/data.lua [--n 400] [--epochs 3]
local fv = require 'fovea'
local common = require 'bench.common'

local opts = common.options({ n = 400, epochs = 3 }, 'bench/data.lua')
local now = fv.clock
local dir = ('/tmp/fovea-synthetic-386-n%d-s1'):format(opts.n)
local t0 = now()
local csv, meta = fv.data.synthetic.generate(dir, { n = opts.n, size = 386, seed = 1 })
print(('synthetic set: %d images of 386x386 in %s (%s in %.1f s)'):format(opts.n, dir,
  meta.generated and 'generated' or 'already there', now() - t0))

local ds = fv.data.datasets.CSV(csv)
local T = fv.data.transforms

local function run(name, o)
  o.batch_size, o.seed = 4, 1
  local loader = fv.data.Loader(ds, o)
  for _ in loader:epoch(0) do end -- warm-up (page cache, allocator)
  local rates, cpu = {}, {}
  for e = 1, opts.epochs do
    local start, cpu_start, count = now(), os.clock(), 0
    for x in loader:epoch(e) do count = count + x:size(1) end
    rates[e] = count / (now() - start)
    cpu[e] = (os.clock() - cpu_start) / count -- CPU seconds of all threads per image
  end
  loader:close()
  table.sort(rates)
  table.sort(cpu)
  local best, median = rates[#rates], rates[math.ceil(#rates / 2)]
  print(('%-46s %7.1f images/s (median %7.1f); CPU %5.2f ms/image'):format(name, best, median, 1000 * cpu[1]))
end

local p = io.popen('nproc')
local cpus = p:read('*l')
p:close()
print(('fovea %s, %s CPUs online, best of %d epochs of %d images, batch 4'):format(fv.version(), cpus, opts.epochs,
  opts.n))
run('train (decode+CLAHE+flips+rotation), 1 worker', { workers = 1, transform = T.paper_train(386) })
run('train (decode+CLAHE+flips+rotation), 2 workers', { workers = 2, transform = T.paper_train(386) })
run('train, Lua path (workers = 0)', { workers = 0, transform = T.paper_train(386) })
run('eval (decode+CLAHE), 1 worker', { workers = 1, transform = T.paper_eval(386) })
run('eval (decode+CLAHE), 2 workers', { workers = 2, transform = T.paper_eval(386) })
run('decode + to tensor only, 1 worker', { workers = 1, transform = T.ToTensor() })
run('decode + to tensor only, 2 workers', { workers = 2, transform = T.ToTensor() })
