-- bench/nam.lua: fused NAM attention, forward + backward, at the paper's e1 size
-- (97 x 97 = 9409 positions, D = C/2 = 32, Cv = C = 64, batch 4, float32): median time
-- of a few runs after a warm-up and the peak memory beyond inputs and outputs, side by
-- side with the PyTorch twin (bench/nam_torch.py: bmm + softmax + bmm, which stores the
-- B x N x N attention), run with the same thread count, plain and with glibc's hugetlb
-- malloc tunable (the peer's best, see shared/design/performance-notes.md).
--   luajit bench/nam.lua [--side 97] [--batch 4] [--d 32] [--cv 64] [--threads 2]
--                        [--runs 3] [--warmup 1] [--no-torch] [--chunked] [--python PATH]
-- --chunked adds the peer's chunked + checkpointed variant (slower, less memory).
package.path = './lua/?.lua;./lua/?/init.lua;' .. package.path
local fv = require 'fovea'
local F = require 'fovea.functional'
local ffi = require 'ffi'

-- a monotonic wall clock: fovea.clock when present, else clock_gettime directly
local ok_clock, now = pcall(require, 'fovea.clock')
if not ok_clock then
  ffi.cdef [[
  typedef struct fv_timespec { long tv_sec; long tv_nsec; } fv_timespec;
  int clock_gettime(int clock_id, fv_timespec *tp);
  ]]
  local ts = ffi.new('fv_timespec')
  now = function()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
  end
end

local opts = {side = 97, batch = 4, d = 32, cv = 64, threads = 2, runs = 3, warmup = 1,
  python = os.getenv('FOVEA_PYTHON') or '/usr/bin/python3'}
local i = 1
while i <= #arg do
  local a = arg[i]
  if a == '--no-torch' then opts.no_torch = true
  elseif a == '--chunked' then opts.chunked = true
  elseif a:match('^%-%-') and arg[i + 1] then
    local key = a:sub(3)
    opts[key] = tonumber(arg[i + 1]) or arg[i + 1]
    i = i + 1
  else
    error('bench/nam.lua: unknown argument ' .. a)
  end
  i = i + 1
end

local function median(t)
  local s = {}
  for k, v in ipairs(t) do s[k] = v end
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) / 2] or (s[n / 2] + s[n / 2 + 1]) / 2
end

fv.set_num_threads(opts.threads)
local B, N, D, Cv = opts.batch, opts.side * opts.side, opts.d, opts.cv
print(('NAM attention: B=%d N=%d (%dx%d) D=%d Cv=%d float32, %d threads, median of %d runs after %d warm-up'):format(
  B, N, opts.side, opts.side, D, Cv, opts.threads, opts.runs, opts.warmup))

local function leaf(shape, seed, mul)
  local t = (fv.randn(shape, {seed = seed}) * mul):detach()
  t.requires_grad = true
  return t
end
local q, k, v = leaf({B, N, D}, 1, 0.2), leaf({B, N, D}, 2, 0.2), leaf({B, N, Cv}, 3, 1)
local dy = fv.randn({B, N, Cv}, {seed = 4})

local fwd, total, peak_extra = {}, {}, 0
local out_bytes = 4 * B * N * (Cv + D + D + Cv) -- y, dq, dk, dv
for r = 1, opts.warmup + opts.runs do
  q.grad, k.grad, v.grad = nil, nil, nil
  collectgarbage()
  collectgarbage()
  fv.memory.reset_peak()
  local base = fv.memory.live_bytes() -- q, k, v, dy
  local t0 = now()
  local y = F.nam_attention(q, k, v)
  local t1 = now()
  y:backward(dy)
  local t2 = now()
  local extra = fv.memory.peak_bytes() - base - out_bytes
  y = nil
  if r > opts.warmup then
    fwd[#fwd + 1], total[#total + 1] = t1 - t0, t2 - t0
    peak_extra = math.max(peak_extra, extra)
  end
end
local flops = 2 * B * N * N * ((D + Cv) + (3 * D + 2 * Cv))
local ours = {name = 'fovea fused', total = median(total), fwd = median(fwd), min = math.min(unpack(total)),
  mb = peak_extra / 2 ^ 20}
print(('fovea fused: fwd+bwd %.3f s (fwd %.3f s, fastest %.3f s), %.1f GFLOP/s, peak extra %.1f MiB (limit 100)')
  :format(ours.total, ours.fwd, ours.min, flops / ours.min / 1e9, ours.mb))

local rows = {ours}
if not opts.no_torch then
  local base_cmd = ('%s bench/nam_torch.py --side %d --batch %d --d %d --cv %d --threads %d --runs %d --warmup %d')
    :format(opts.python, opts.side, B, D, Cv, opts.threads, opts.runs, opts.warmup)
  local variants = {
    {'torch bmm', '', '--method bmm'},
    {'torch bmm, hugetlb malloc', 'GLIBC_TUNABLES=glibc.malloc.hugetlb=1 ', '--method bmm'},
    {'torch sdpa', '', '--method sdpa'},
  }
  if opts.chunked then
    variants[#variants + 1] = {'torch chunked+checkpoint', 'GLIBC_TUNABLES=glibc.malloc.hugetlb=1 ',
      '--method chunked'}
  end
  for _, var in ipairs(variants) do
    local cmd = var[2] .. base_cmd .. ' ' .. var[3] .. ' 2>&1'
    io.write(var[1] .. ': ')
    io.flush()
    local p = io.popen(cmd)
    local text = p:read('*a')
    p:close()
    local line = text:match('(torch %S+ [^\n]*)')
    if not line then
      print('failed to run (' .. cmd .. '):\n' .. text)
    elseif line:match('unavailable=1') then
      print('not available in PyTorch ' .. (line:match('version=(%S+)') or '?')
        .. ' (torch.nn.functional.scaled_dot_product_attention arrived in 2.0)')
    else
      local row = {name = var[1], total = tonumber(line:match(' fwd_bwd_s=(%S+)')),
        fwd = tonumber(line:match(' fwd_s=(%S+)')), min = tonumber(line:match('min_fwd_bwd_s=(%S+)')),
        mb = tonumber(line:match('peak_extra_mb=(%S+)'))}
      print(('fwd+bwd %.3f s (fwd %.3f s, fastest %.3f s), peak extra %.0f MiB (RSS)'):format(row.total, row.fwd,
        row.min, row.mb))
      rows[#rows + 1] = row
    end
  end
end

print()
print('medians (fastest run in brackets); ratios are fovea / that row')
print(('%-26s %10s %9s %9s %12s %14s %12s'):format('', 'fwd+bwd s', '(fastest)', 'fwd s', 'extra MiB',
  'time ratio', 'memory ratio'))
for _, row in ipairs(rows) do
  print(('%-26s %10.3f %9s %9.3f %12.1f %7.3f (%.3f) %12.4f'):format(row.name, row.total,
    ('(%.3f)'):format(row.min), row.fwd, row.mb, ours.total / row.total, ours.min / row.min,
    ours.mb / math.max(row.mb, 1e-9)))
end
