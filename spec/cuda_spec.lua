-- cuda_spec.lua: the CUDA backend against the CPU, op by op: moves and round trips,
-- copies and dtype conversions, fill, elementwise ops with broadcasting and NaN rules,
-- reductions, matmul (TF32 off and on), random numbers (bit-equality of uniform draws),
-- autograd and modules on the GPU, the optimizers' steps and gradient clipping, the
-- caching allocator's statistics, running out of GPU memory, the profiler's switch
-- (FOVEA_CUDA_PROFILE), mixed devices, and every neural-network op (softmax, cross_entropy, the
-- pools, bilinear, channel_shuffle, batch_norm, conv2d through cuDNN, NAM and criss-cross
-- attention) forward and backward against the CPU, pinned memory and asynchronous uploads
-- (values, autograd, statistics, errors), the loader's pin_memory (a batch in flight is never
-- reused) and train.fit with pinned batches (prefetching; a NaN loss saves nothing of the
-- bad step). Tagged gpu: run on a GPU machine with
--   busted --lua=luajit --tags gpu spec/cuda_spec.lua       (cuda/gpu_check.sh does it)
-- Without a GPU (or without libfovea_cuda.so) every case is reported as pending with the
-- reason. spec/cuda_plumbing_spec.lua also runs this file against a stand-in backend
-- (host memory, CPU kernels) to check everything but the kernels on any machine.
local fv = require 'fovea'
local ffi = require 'ffi'
local helpers = require 'spec.helpers'

local available = fv.cuda.available()
local why = fv.cuda.unavailable_reason()

-- Runs fn only when a GPU is there; otherwise the case is pending, with the reason.
local function gpu_it(name, fn)
  it(name, function()
    if not available then pending('no GPU: ' .. tostring(why)) end
    fn()
  end)
end

-- A tensor's values (any device) as a flat Lua array, row-major.
local function flat(t)
  local c = t:cpu()
  local buf, n = fv.values_f64(c)
  local r = {}
  for i = 1, n do r[i] = buf[i - 1] end
  return r
end

local function shape_str(t) return table.concat(t:size(), 'x') end

-- Asserts that got (on the GPU) matches want (on the CPU): same shape and dtype, values
-- equal within rtol * |want| + atol (NaN matches NaN; infinities must be equal). atol
-- { of_largest = f }: f times the largest finite |want| (at least 1), for results whose
-- rounding error scales with the whole tensor rather than with each element (bfloat16
-- operands summed over many terms).
local function same(want, got, rtol, atol, what)
  rtol, atol = rtol or 0, atol or 0
  what = what or ''
  assert.are.equal('cuda', got:device(), what .. ': result not on cuda')
  assert.are.equal(want:dtype(), got:dtype(), what .. ': dtype')
  assert.are.equal(shape_str(want), shape_str(got), what .. ': shape')
  local a, b = flat(want), flat(got)
  if type(atol) == 'table' then
    local largest = 1
    for i = 1, #a do
      local x = math.abs(a[i])
      if x == x and x ~= math.huge and x > largest then largest = x end
    end
    atol = atol.of_largest * largest
  end
  for i = 1, #a do
    local x, y = a[i], b[i]
    local ok
    if x ~= x then ok = y ~= y
    elseif x == math.huge or x == -math.huge then ok = x == y
    else ok = math.abs(x - y) <= rtol * math.abs(x) + atol end
    if not ok then
      error(('%s: element %d differs: cpu %.17g, cuda %.17g (rtol %g, atol %g)'):format(what, i, x, y, rtol, atol), 2)
    end
  end
end

local specials = { 0, -0.0, 1, -1, 2.5, -3.25, 1e-3, 1e3, 0 / 0, math.huge, -math.huge, 0.5 }

-- A loader for train.fit over the two batches of 4 rows of x and y (rows 1-4, 5-8);
-- wrap(x, y), when given, makes each batch's tensors from the narrowed views.
local function two_batches(x, y, wrap)
  local loader = {}
  function loader:batches() return 2 end
  function loader:epoch()
    local b = 0
    return function()
      b = b + 1
      if b > 2 then return nil end
      local xb, yb = x:narrow(1, 4 * b - 3, 4), y:narrow(1, 4 * b - 3, 4)
      if wrap then return wrap(xb, yb) end
      return xb, yb
    end
  end
  return loader
end

local function sample(shape, opts)
  opts = opts or {}
  local x = fv.randn(shape, { seed = opts.seed or 7, dtype = opts.dtype })
  if opts.positive then x = x:abs() + 0.1 end
  return x
end

describe('cuda #gpu', function()
  gpu_it('moves tensors of every dtype to the GPU and back unchanged', function()
    for _, dt in ipairs { 'float32', 'float64', 'int64', 'uint8' } do
      local x = fv.tensor({ { 1, 2, 3 }, { 4, 5, 250 } }, { dtype = dt })
      local g = x:cuda()
      assert.are.equal('cuda', g:device())
      assert.is_true(g:is_cuda())
      assert.are.equal(dt, g:dtype())
      assert.are.same(x:totable(), g:totable())
      assert.are.same(x:totable(), g:cpu():totable())
      assert.are.same(x:totable(), x:to('cuda'):to('cpu'):totable())
      assert.are.equal(g, g:cuda()) -- already there: the same tensor
    end
    local t = fv.tensor({ 1.5, -2 }, { device = 'cuda' })
    assert.are.equal('cuda', t:device())
    assert.are.same({ 1.5, -2 }, t:totable())
    assert.are.equal(-2, t:get(2))
    assert.are.equal(1.5, t[1])
    t[2] = 4
    local m = fv.zeros({ 2, 3 }, { device = 'cuda' }):set(7, 2, -1)
    assert.are.same({ 1.5, 4 }, t:totable())
    assert.are.same({ { 0, 0, 0 }, { 0, 0, 7 } }, m:totable())
    assert.are.equal(3, fv.tensor({ 3 }, { device = 'cuda' }):sum():item())
    assert.matches('on cuda', tostring(t))
  end)

  gpu_it('creates tensors on the GPU', function()
    same(fv.zeros({ 2, 3 }), fv.zeros({ 2, 3 }, { device = 'cuda' }))
    same(fv.ones({ 4 }, { dtype = 'float64' }), fv.ones({ 4 }, { dtype = 'float64', device = 'cuda' }))
    same(fv.full({ 3, 2 }, 7.5), fv.full({ 3, 2 }, 7.5, { device = 'cuda' }))
    same(fv.arange(0, 10, 3, { dtype = 'int64' }), fv.arange(0, 10, 3, { dtype = 'int64', device = 'cuda' }))
    local e = fv.empty({ 0, 3 }, { device = 'cuda' })
    assert.are.equal(0, e:numel())
    assert.are.equal(0, e:sum():item())
  end)

  gpu_it('copies and converts between every pair of dtypes as the CPU does', function()
    local values = { 0, -0.0, 0.4, 0.5, 1.5, 2.5, -1.5, -7.9, 254.6, 255.5, 300, -300, 1e19, -1e19, 0 / 0,
      math.huge, -math.huge, 123456789.123 }
    local dtypes = { 'float32', 'float64', 'int64', 'uint8' }
    for _, from in ipairs(dtypes) do
      local x = fv.tensor(values, { dtype = 'float64' }):to(from)
      local g = x:cuda()
      for _, to in ipairs(dtypes) do
        same(x:to(to), g:to(to), 0, 0, from .. ' -> ' .. to)
      end
    end
  end)

  gpu_it('copies strided, offset and broadcast views', function()
    local x = sample({ 4, 5, 6 }, { dtype = 'float64' })
    local g = x:cuda()
    same(x:transpose(1, 3):contiguous(), g:transpose(1, 3):contiguous(), 0, 0, 'transpose')
    same(x:narrow(2, 2, 3):clone(), g:narrow(2, 2, 3):clone(), 0, 0, 'narrow')
    same(x:select(1, 3):t():clone(), g:select(1, 3):t():clone(), 0, 0, 'select + t')
    same(x:permute(2, 3, 1):float(), g:permute(2, 3, 1):float(), 0, 0, 'permute + convert')
    -- dense operands: one dtype by cudaMemcpyAsync (offsets included), a conversion flat
    same(x:clone(), g:clone(), 0, 0, 'clone')
    local part_c = fv.zeros({ 2, 5, 6 }, { dtype = 'float64' })
    local part_g = fv.zeros({ 2, 5, 6 }, { dtype = 'float64', device = 'cuda' })
    part_c:copy_(x:narrow(1, 2, 2))
    part_g:copy_(g:narrow(1, 2, 2))
    same(part_c, part_g, 0, 0, 'dense offset copy')
    same(x:narrow(1, 2, 2):float(), g:narrow(1, 2, 2):float(), 0, 0, 'dense offset convert')
    local row = fv.tensor({ 1, 2, 3 })
    same(row:expand(4, 3):clone(), row:cuda():expand(4, 3):clone(), 0, 0, 'expand')
    -- copy_ into a strided GPU view, from the GPU and from the CPU (broadcast, converted)
    local dst_c, dst_g = fv.zeros({ 3, 4 }), fv.zeros({ 3, 4 }, { device = 'cuda' })
    local src = fv.tensor({ 1.25, -2, 3.5 }, { dtype = 'float64' }):view(3, 1)
    dst_c:t():narrow(2, 1, 3):copy_(src:t())
    dst_g:t():narrow(2, 1, 3):copy_(src:t())
    same(dst_c, dst_g, 0, 0, 'cpu -> strided cuda view')
    dst_g:narrow(1, 2, 1):narrow(2, 2, 3):copy_(src:cuda():t())
    dst_c:narrow(1, 2, 1):narrow(2, 2, 3):copy_(src:t())
    same(dst_c, dst_g, 0, 0, 'cuda -> strided cuda view')
    local back = fv.zeros({ 4, 3 }, { dtype = 'float64' })
    back:copy_(dst_g:t())
    assert.are.same(dst_c:t():double():totable(), back:totable())
  end)

  gpu_it('fills tensors of every dtype, strided ones too', function()
    for _, dt in ipairs { 'float32', 'float64', 'int64', 'uint8' } do
      for _, v in ipairs { 3.7, -1, 300, 0 / 0, 0, -0.0 } do
        local c, g = fv.zeros({ 3, 4 }, { dtype = dt }), fv.zeros({ 3, 4 }, { dtype = dt, device = 'cuda' })
        c:t():narrow(1, 2, 2):fill_(v)
        g:t():narrow(1, 2, 2):fill_(v)
        same(c, g, 0, 0, 'fill ' .. dt .. ' ' .. v)
        -- dense: the flat kernel (16-byte stores and a tail), +0 by cudaMemsetAsync
        c, g = fv.ones({ 5, 7 }, { dtype = dt }), fv.ones({ 5, 7 }, { dtype = dt, device = 'cuda' })
        c:fill_(v)
        g:fill_(v)
        same(c, g, 0, 0, 'dense fill ' .. dt .. ' ' .. v)
        if (dt == 'float32' or dt == 'float64') and v == 0 then
          assert.are.equal(1 / v, 1 / flat(g)[35], 'the sign of a zero fill ' .. dt)
        end
      end
    end
  end)

  -- transcendental functions may differ in the last ulps (CUDA's libm is not glibc's)
  local function tolerance(dtype, exact)
    if exact then return 0, 0 end
    if dtype == 'float32' then return 1e-6, 1e-38 end
    return 1e-15, 1e-300
  end

  gpu_it('computes binary ops with broadcasting as the CPU does, NaN rules included', function()
    local ops = { 'add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum', 'eq', 'ne', 'lt', 'le', 'gt', 'ge' }
    for _, dt in ipairs { 'float32', 'float64' } do
      local s = fv.tensor(specials, { dtype = dt })
      local n = #specials
      local pairs_ = {
        { 'special x special', s:view(n, 1), s:view(1, n) },
        { 'same shape', sample({ 4, 5 }, { dtype = dt }), sample({ 4, 5 }, { dtype = dt, seed = 8 }) },
        { '(3,4,5) with (5)', sample({ 3, 4, 5 }, { dtype = dt }), sample({ 5 }, { dtype = dt, seed = 9 }) },
        { 'transposed with (4,1)', sample({ 5, 4 }, { dtype = dt }):t(), sample({ 4, 1 }, { dtype = dt, seed = 3 }) },
        { 'scalar tensor', fv.tensor(2.5, { dtype = dt }), sample({ 2, 3 }, { dtype = dt }) },
        -- the fast paths (cuda/elementwise.cu): dense with a tail after the 16-byte packs,
        -- and per-channel broadcasts on either side
        { 'same shape (7,5)', sample({ 7, 5 }, { dtype = dt }), sample({ 7, 5 }, { dtype = dt, seed = 12 }) },
        { 'per channel (2,3,4,5) with (1,3,1,1)', sample({ 2, 3, 4, 5 }, { dtype = dt }),
          sample({ 1, 3, 1, 1 }, { dtype = dt, seed = 4 }) },
        { '(3,1,1) with (3,4,5)', sample({ 3, 1, 1 }, { dtype = dt, seed = 5 }), sample({ 3, 4, 5 }, { dtype = dt }) },
      }
      for _, op in ipairs(ops) do
        for _, p in ipairs(pairs_) do
          local a, b = p[2], p[3]
          if op == 'pow' then a = a:abs() end
          local rtol, atol = tolerance(dt, op ~= 'pow')
          same(a[op](a, b), a:cuda()[op](a:cuda(), b:cuda()), rtol, atol, op .. ' ' .. dt .. ' ' .. p[1])
        end
      end
      -- operators and scalars on either side
      local a = sample({ 3, 4 }, { dtype = dt })
      local g = a:cuda()
      same(a + 1, g + 1, 0, 0, 'a + 1')
      same(2 - a, 2 - g, 0, 0, '2 - a')
      same(a * 0.1, g * 0.1, 0, 0, 'a * 0.1')
      same(3 / a, 3 / g, 0, 0, '3 / a')
      local rt, at = tolerance(dt)
      same(a:abs() ^ 1.7, g:abs() ^ 1.7, rt, at, 'a ^ 1.7')
      same(2 ^ a, 2 ^ g, rt, at, '2 ^ a')
      same(-a, -g, 0, 0, '-a')
      -- dense but not 16-byte aligned on the GPU (a view one element in): no vector loads
      local u, v = sample({ 38 }, { dtype = dt }):narrow(1, 2, 37), sample({ 37 }, { dtype = dt, seed = 11 })
      local gu = fv.zeros({ 38 }, { dtype = dt, device = 'cuda' }):narrow(1, 2, 37):copy_(u:cuda())
      same(u + v, gu + v:cuda(), 0, 0, 'unaligned add ' .. dt)
      same(u * 3, gu * 3, 0, 0, 'unaligned scalar mul ' .. dt)
      same(u:relu(), gu:relu(), 0, 0, 'unaligned relu ' .. dt)
      for _, op in ipairs { 'maximum', 'minimum', 'eq', 'lt', 'ge' } do
        same(a[op](a, 0.25), g[op](g, 0.25), 0, 0, op .. ' with a scalar')
        same(s[op](0 / 0, s), s:cuda()[op](0 / 0, s:cuda()), 0, 0, op .. ' NaN scalar first')
      end
    end
  end)

  gpu_it('computes unary ops and clamp as the CPU does', function()
    local ops = { neg = true, exp = false, log = false, sqrt = true, abs = true, relu = true, sigmoid = false,
      tanh = false }
    for _, dt in ipairs { 'float32', 'float64' } do
      local inputs = { fv.tensor(specials, { dtype = dt }), sample({ 7, 9 }, { dtype = dt }):t(),
        sample({ 37 }, { dtype = dt }) }
      for _, x in ipairs(inputs) do
        for op, exact in pairs(ops) do
          local rtol, atol = tolerance(dt, exact)
          same(x[op](x), x:cuda()[op](x:cuda()), rtol, atol, op .. ' ' .. dt)
        end
        same(x:clamp(-0.5, 0.75), x:cuda():clamp(-0.5, 0.75), 0, 0, 'clamp ' .. dt)
        same(x:clamp(0), x:cuda():clamp(0), 0, 0, 'clamp low ' .. dt)
        same(x:clamp(nil, 1), x:cuda():clamp(nil, 1), 0, 0, 'clamp high ' .. dt)
      end
    end
  end)

  gpu_it('reduces over each dimension and over everything as the CPU does', function()
    for _, dt in ipairs { 'float32', 'float64' } do
      local rtol = dt == 'float32' and 2e-6 or 1e-12
      local cases = {
        { 'small', sample({ 3, 4, 5 }, { dtype = dt }) },
        { 'long rows', sample({ 5, 3000 }, { dtype = dt }) },     -- the one-block-per-row kernel
        { 'long columns', sample({ 3000, 3 }, { dtype = dt }) },
        { 'ties', fv.tensor({ { 1, 3, 3, 0, 3 }, { -1, -1, 2, -1, 2 } }, { dtype = dt }) },
        { 'NaNs', fv.tensor({ { 1, 0 / 0, 5, 0 / 0 }, { 2, 3, 1, 0 / 0 }, { 7, 7, 7, 7 } }, { dtype = dt }) },
      }
      local big = sample({ 2, 1000 }, { dtype = dt })
      big[1][700] = 0 / 0
      big[2][300] = 50
      big[2][900] = 50
      cases[#cases + 1] = { 'long rows with NaN and ties', big }
      for _, c in ipairs(cases) do
        local x, g = c[2], c[2]:cuda()
        local what = c[1] .. ' ' .. dt
        for d = 0, x:dim() do
          local dim = d > 0 and d or nil
          local where = what .. (dim and (' dim ' .. dim) or ' all')
          same(x:sum(dim), g:sum(dim), rtol, 1e-5, 'sum ' .. where)
          same(x:mean(dim), g:mean(dim), rtol, 1e-6, 'mean ' .. where)
          same(x:var(dim), g:var(dim), rtol, 1e-6, 'var ' .. where)
          same(x:var(dim, { unbiased = false }), g:var(dim, { unbiased = false }), rtol, 1e-6, 'var biased ' .. where)
          same(x:argmax(dim), g:argmax(dim), 0, 0, 'argmax ' .. where)
          same(x:argmin(dim), g:argmin(dim), 0, 0, 'argmin ' .. where)
          if dim then
            local v, i = x:max(dim)
            local gv, gi = g:max(dim)
            same(v, gv, 0, 0, 'max values ' .. where)
            same(i, gi, 0, 0, 'max indices ' .. where)
            v, i = x:min(dim, true)
            gv, gi = g:min(dim, true)
            same(v, gv, 0, 0, 'min values keepdim ' .. where)
            same(i, gi, 0, 0, 'min indices keepdim ' .. where)
            same(x:sum(dim, true), g:sum(dim, true), rtol, 1e-5, 'sum keepdim ' .. where)
          else
            same(x:max(), g:max(), 0, 0, 'max ' .. where)
            same(x:min(), g:min(), 0, 0, 'min ' .. where)
          end
        end
      end
      -- a strided input is made contiguous first
      local x = sample({ 6, 7 }, { dtype = dt })
      same(x:t():sum(2), x:cuda():t():sum(2), rtol, 1e-6, 'sum of a transposed ' .. dt)
      same(x:var(1, { unbiased = true }), x:cuda():var(1), rtol, 1e-6, 'var ' .. dt)
      same(fv.tensor({ 5 }, { dtype = dt }):var(), fv.tensor({ 5 }, { dtype = dt, device = 'cuda' }):var(), 0, 0,
        'var of one element (NaN)')
    end
  end)

  gpu_it('reduces long columns and few long rows (the split path) as the CPU does', function()
    for _, dt in ipairs { 'float32', 'float64' } do
      local rtol = dt == 'float32' and 2e-6 or 1e-12
      local x = sample({ 200000, 3 }, { dtype = dt })
      x[12345][2] = 0 / 0 -- the first NaN of column 2 wins max, min and their indices
      x[190001][2] = 0 / 0
      x[50][1] = 100      -- a tie for column 1's maximum: the first occurrence
      x[150001][1] = 100
      x[7][3] = -math.huge
      local wide = sample({ 4096, 40 }, { dtype = dt, seed = 3 }) -- a full and a partial tile of 32 columns
      wide[4000][33] = 0 / 0
      for _, c in ipairs { { '200000x3', x }, { '4096x40', wide } } do
        local h, g = c[2], c[2]:cuda()
        local what = c[1] .. ' ' .. dt
        same(h:sum(1), g:sum(1), rtol, 1e-5, 'sum ' .. what)
        same(h:mean(1), g:mean(1), rtol, 1e-6, 'mean ' .. what)
        same(h:var(1), g:var(1), rtol, 1e-6, 'var ' .. what)
        same(h:var(1, { unbiased = false }), g:var(1, { unbiased = false }), rtol, 1e-6, 'var biased ' .. what)
        local v, i = h:max(1)
        local gv, gi = g:max(1)
        same(v, gv, 0, 0, 'max values ' .. what)
        same(i, gi, 0, 0, 'max indices ' .. what)
        v, i = h:min(1, true)
        gv, gi = g:min(1, true)
        same(v, gv, 0, 0, 'min values ' .. what)
        same(i, gi, 0, 0, 'min indices ' .. what)
        same(h:argmax(1), g:argmax(1), 0, 0, 'argmax ' .. what)
        same(h:argmin(1), g:argmin(1), 0, 0, 'argmin ' .. what)
      end
      assert.are.equal(12345, x:cuda():argmax(1):cpu()[2])
      assert.are.equal(50, x:cuda():argmax(1):cpu()[1])
      assert.are.equal(7, x:cuda():argmin(1):cpu()[3])
      -- few long rows (inner 1): 3 rows of 70001, and all 600000 elements of a tensor at once
      local rows = sample({ 3, 70001 }, { dtype = dt, seed = 4 })
      rows[2][777] = 0 / 0
      rows[3][60000] = 50
      rows[3][60001] = 50
      local gr = rows:cuda()
      same(rows:sum(2), gr:sum(2), rtol, 1e-5, 'sum of rows ' .. dt)
      same(rows:var(2), gr:var(2), rtol, 1e-6, 'var of rows ' .. dt)
      local v, i = rows:max(2)
      local gv, gi = gr:max(2)
      same(v, gv, 0, 0, 'max of rows ' .. dt)
      same(i, gi, 0, 0, 'max indices of rows ' .. dt)
      same(rows:argmin(2), gr:argmin(2), 0, 0, 'argmin of rows ' .. dt)
      local all = sample({ 600000 }, { dtype = dt, seed = 5 })
      local ga = all:cuda()
      same(all:sum(), ga:sum(), rtol, 1e-4, 'sum of all ' .. dt)
      same(all:mean(), ga:mean(), rtol, 1e-8, 'mean of all ' .. dt)
      same(all:var(), ga:var(), rtol, 1e-8, 'var of all ' .. dt)
      same(all:max(), ga:max(), 0, 0, 'max of all ' .. dt)
      same(all:argmin(), ga:argmin(), 0, 0, 'argmin of all ' .. dt)
    end
  end)

  gpu_it('multiplies matrices as the CPU does (TF32 off), in every layout', function()
    local previous = fv.cuda.set_tf32(false)
    finally(function() fv.cuda.set_tf32(previous) end)
    for _, dt in ipairs { 'float32', 'float64' } do
      local rtol, atol = dt == 'float32' and 1e-5 or 1e-12, dt == 'float32' and 1e-5 or 1e-12
      local function m(shape, seed) return sample(shape, { dtype = dt, seed = seed }) end
      local cases = {
        { '2-D', m({ 5, 7 }), m({ 7, 3 }, 2) },
        { 'vector @ matrix', m({ 7 }), m({ 7, 4 }, 2) },
        { 'matrix @ vector', m({ 4, 7 }), m({ 7 }, 2) },
        { 'vector @ vector', m({ 9 }), m({ 9 }, 2) },
        { 'batched', m({ 2, 3, 4 }), m({ 2, 4, 5 }, 2) },
        { 'broadcast batch', m({ 2, 1, 3, 4 }), m({ 5, 4, 2 }, 2) },
        { 'shared right matrix', m({ 6, 3, 4 }), m({ 4, 5 }, 2) },
        { 'transposed operands', m({ 7, 5 }):t(), m({ 3, 7 }, 2):t() },
        { 'batched transposed', m({ 3, 4, 2 }):transpose(2, 3), m({ 3, 5, 4 }, 2):transpose(2, 3) },
        { 'permuted batch', m({ 4, 2, 3 }):permute(2, 1, 3), m({ 2, 3, 5 }, 2) },
        { 'strided (copied first)', m({ 4, 2, 6, 2 }):select(4, 1):select(2, 1), m({ 6, 8, 2 }, 2):select(3, 1) },
        { 'empty inner dimension', m({ 3, 0 }), m({ 0, 4 }, 2) },
        { 'large', m({ 130, 257 }), m({ 257, 65 }, 2) },
      }
      for _, c in ipairs(cases) do
        local a, b = c[2], c[3]
        same(a:matmul(b), a:cuda():matmul(b:cuda()), rtol, atol * (a:size(-1) + 1), c[1] .. ' ' .. dt)
      end
    end
  end)

  gpu_it('uses TF32 for float32 matmul by default, within TF32 precision', function()
    local previous = fv.cuda.set_tf32(true)
    finally(function() fv.cuda.set_tf32(previous) end)
    local a, b = sample({ 64, 128 }), sample({ 128, 32 }, { seed = 3 })
    same(a:matmul(b), a:cuda():matmul(b:cuda()), 2e-2, 5e-2, 'TF32 matmul')
    local ad, bd = a:double(), b:double()
    same(ad:matmul(bd), ad:cuda():matmul(bd:cuda()), 1e-12, 1e-12, 'float64 is never TF32')
  end)

  gpu_it('draws the same random numbers as the CPU (uniform bit for bit)', function()
    for _, dt in ipairs { 'float32', 'float64' } do
      local gc, gg = fv.generator(1234), fv.generator(1234)
      for round = 1, 2 do -- the second draw continues from the generator's new offset
        same(fv.rand({ 1000, 3 }, { dtype = dt, generator = gc }), fv.rand({ 1000, 3 }, { dtype = dt, generator = gg,
          device = 'cuda' }), 0, 0, 'rand ' .. dt .. ' draw ' .. round)
      end
      -- normals go through CUDA's log and cos: float32 rounds to the same value, float64 may
      -- differ in the last bits
      local rtol = dt == 'float32' and 1.2e-7 or 1e-14
      same(fv.randn({ 5000 }, { dtype = dt, seed = 99 }), fv.randn({ 5000 }, { dtype = dt, seed = 99, device = 'cuda' }),
        rtol, 1e-300, 'randn ' .. dt)
      assert.are.equal(tonumber(gc.offset), tonumber(gg.offset))
    end
    local r = fv.rand({ 100000 }, { seed = 5, device = 'cuda' })
    assert.is_true(r:min():item() >= 0 and r:max():item() < 1)
  end)

  gpu_it('runs autograd on the GPU and through device moves', function()
    local x = fv.tensor({ 1, -2, 3 }, { dtype = 'float64', device = 'cuda' }):requires_grad_()
    local y = (x * x):sum()
    y:backward()
    assert.are.equal('cuda', x.grad:device())
    assert.are.same({ 2, -4, 6 }, x.grad:totable())
    local c = fv.tensor({ 1, 2 }, { dtype = 'float64' }):requires_grad_()
    local z = (c:cuda() * 3):sum()
    assert.are.equal('cuda', z:device())
    z:backward()
    assert.are.equal('cpu', c.grad:device())
    assert.are.same({ 3, 3 }, c.grad:totable())
  end)

  gpu_it('moves modules with :cuda() and :cpu(), keeping leaves and gradients', function()
    local lin = fv.nn.Linear(3, 2, { dtype = 'float64' })
    local x = fv.randn({ 4, 3 }, { dtype = 'float64', seed = 2 })
    local want = lin(x)
    lin.weight.grad = fv.ones({ 2, 3 }, { dtype = 'float64' })
    assert.are.equal(lin, lin:cuda())
    for _, p in ipairs(lin:parameters()) do
      assert.are.equal('cuda', p:device())
      assert.is_true(p.requires_grad and p:is_leaf())
    end
    assert.are.equal('cuda', lin.weight.grad:device())
    same(want, lin(x:cuda()), 1e-12, 1e-12, 'Linear on cuda')
    lin:cpu()
    assert.are.equal('cpu', lin.weight:device())
    assert.is_true(lin.weight.requires_grad and lin.weight:is_leaf())
  end)

  gpu_it('counts, caches and gives back GPU memory', function()
    collectgarbage('collect') -- tensors of earlier cases must not be freed in the middle
    collectgarbage('collect')
    fv.cuda.empty_cache()
    local s0 = fv.cuda.memory_stats()
    assert.is_true(s0.allocated >= 0 and s0.reserved >= s0.allocated and s0.peak >= s0.allocated)
    fv.cuda.reset_peak()
    local mib = 1024 * 1024
    local t = fv.empty({ mib }, { device = 'cuda' }) -- 4 MiB
    local s1 = fv.cuda.memory_stats()
    assert.is_true(s1.allocated >= s0.allocated + 4 * mib, 'allocated grows')
    assert.is_true(s1.reserved >= s1.allocated and s1.peak >= s1.allocated)
    t:free()
    local s2 = fv.cuda.memory_stats()
    assert.is_true(s2.allocated <= s1.allocated - 4 * mib, 'allocated shrinks')
    assert.is_true(s2.peak >= s1.allocated, 'peak remembers')
    if os.getenv('FOVEA_NO_ALLOC_CACHE') == '1' then -- the cache off (cuda/gpu_check.sh's memcheck run)
      assert.are.equal(s2.allocated, s2.reserved, 'with the cache off, a freed block is given back at once')
    else
      assert.is_true(s2.reserved >= s1.allocated, 'the block stays reserved, in the cache')
      local u = fv.empty({ mib }, { device = 'cuda' }) -- the same size again: from the cache
      local s3 = fv.cuda.memory_stats()
      assert.are.equal(s2.reserved, s3.reserved, 'reused, not reserved anew')
      u:free()
    end
    fv.cuda.empty_cache()
    local s4 = fv.cuda.memory_stats()
    assert.are.equal(s4.allocated, s4.reserved) -- nothing cached any more
    assert.is_true(fv.memory.live_bytes() >= 0)
  end)

  gpu_it('reports running out of GPU memory as a Lua error and carries on', function()
    local ok, err = pcall(function() return fv.empty({ 2 ^ 40 }, { device = 'cuda' }) end) -- 4 TiB
    assert.is_false(ok)
    assert.matches('cannot allocate', err)
    assert.matches('out of memory', err)
    local t = fv.ones({ 1000 }, { device = 'cuda' })
    assert.are.equal(1000, t:sum():item())
  end)

  gpu_it('profiles per op only when FOVEA_CUDA_PROFILE was set', function()
    local env = os.getenv('FOVEA_CUDA_PROFILE')
    if env and env ~= '' and env ~= '0' then
      fv.cuda.profile_reset()
      local a = fv.randn({ 64, 64 }, { device = 'cuda' })
      assert.is_number(((a:matmul(a) + 1):relu():sum()):item())
      local report = fv.cuda.profile_report()
      for _, row in ipairs { 'random randn', 'matmul', 'unary relu', 'reduce sum', 'to_host' } do
        assert.is_truthy(report:find('\n' .. row .. ' ', 1, true), row .. ' missing from\n' .. report)
      end
      fv.cuda.profile_reset()
      assert.matches('\ntotal +0 ', fv.cuda.profile_report())
    else
      local ok, err = pcall(fv.cuda.profile_report)
      assert.is_false(ok)
      assert.matches('fv.cuda.profile_report: cuda profile: the profiler is off', err)
      fv.cuda.profile_reset() -- nothing to reset, no error
    end
  end)

  gpu_it('refuses mixed devices', function()
    local ok, err = pcall(function() return fv.ones(2) + fv.ones(2):cuda() end)
    assert.is_false(ok)
    assert.matches('different devices', err)
    ok, err = pcall(fv.F.softmax, fv.ones({ 2, 3 }):cuda():to('int64'))
    assert.is_false(ok)
  end)

  -- The neural-network ops (cuda/nn_*.cu, cuda/cudnn.cu): forward and backward on the
  -- GPU against the CPU, float64 (tight) and float32. On the stand-in backend of
  -- spec/cuda_plumbing_spec.lua the nn kernels are the CPU's (what the cases check there is
  -- the plumbing: device moves, autograd, train.fit, Grad-CAM on 'cuda' tensors), and
  -- GPU-only properties (bfloat16 results) are skipped.
  local standin = (os.getenv('FOVEA_CUDA_LIB') or ''):match('fake%-cuda') ~= nil

  -- Runs fn on CPU inputs and on their GPU copies; compares the outputs and, for the
  -- inputs marked in grads, the gradients of sum(out * r) for a fixed random r. Returns
  -- the CPU and GPU inputs.
  local function check_nn(what, fn, inputs, grads, rtol, atol)
    local cpu_in, gpu_in = {}, {}
    for k, x in ipairs(inputs) do
      cpu_in[k] = grads[k] and x:clone():requires_grad_() or x:clone()
      gpu_in[k] = grads[k] and x:cuda():requires_grad_() or x:cuda()
    end
    local want = fn(unpack(cpu_in))
    local got = fn(unpack(gpu_in))
    same(want, got, rtol, atol, what .. ' forward')
    local any = false
    for k = 1, #inputs do any = any or grads[k] end
    if any then
      if #want:size() == 0 then
        (want * 0.75):backward()
        ;(got * 0.75):backward()
      else
        local r = sample(want:size(), { seed = 11, dtype = want:dtype() })
        ;(want * r):sum():backward()
        ;(got * r:cuda()):sum():backward()
      end
      for k = 1, #inputs do
        if grads[k] then same(cpu_in[k].grad, gpu_in[k].grad, rtol, atol, what .. ' gradient of input ' .. k) end
      end
    end
    return cpu_in, gpu_in
  end

  local F = fv.F
  local tol = { float64 = { 1e-12, 1e-12 }, float32 = { 2e-5, 2e-6 } }

  gpu_it('computes softmax and log_softmax and their gradients as the CPU does', function()
    for dt, t in pairs(tol) do
      for _, shape in ipairs { { 3, 7 }, { 2, 3, 1000 }, { 5, 1 } } do
        local x = sample(shape, { dtype = dt }) * 4
        local name = dt .. ' ' .. table.concat(shape, 'x')
        check_nn('softmax ' .. name, function(a) return F.softmax(a) end, { x }, { true }, t[1], t[2])
        check_nn('log_softmax ' .. name, function(a) return F.log_softmax(a) end, { x }, { true }, t[1], t[2])
        check_nn('softmax dim 1 ' .. name, function(a) return F.softmax(a, 1) end, { x }, { true }, t[1], t[2])
      end
    end
    -- a row with NaN is NaN; rows of -inf are NaN; +inf dominates
    local x = fv.tensor({ { 1, 0 / 0, 2 }, { -math.huge, -math.huge, -math.huge }, { 1, math.huge, 3 } },
      { dtype = 'float64' })
    check_nn('softmax specials', function(a) return F.softmax(a) end, { x }, {})
    check_nn('log_softmax specials', function(a) return F.log_softmax(a) end, { x }, {})
  end)

  gpu_it('computes cross_entropy with weights and every reduction as the CPU does', function()
    for dt, t in pairs(tol) do
      local logits = sample({ 6, 5 }, { dtype = dt }) * 3
      local target = fv.tensor({ 1, 5, 3, 3, 2, 4 }, { dtype = 'int64' })
      local weight = fv.tensor({ 0.5, 1, 2, 0.25, 3 }, { dtype = dt })
      for _, red in ipairs { 'mean', 'sum', 'none' } do
        check_nn('cross_entropy ' .. dt .. ' ' .. red, function(l, tg)
          return F.cross_entropy(l, tg, { reduction = red })
        end, { logits, target }, { true }, t[1], t[2])
        check_nn('cross_entropy weighted ' .. dt .. ' ' .. red, function(l, tg, w)
          return F.cross_entropy(l, tg, { reduction = red, weight = w })
        end, { logits, target, weight }, { true }, t[1], t[2])
      end
      check_nn('cross_entropy many classes ' .. dt, function(l, tg) return F.cross_entropy(l, tg) end,
        { sample({ 3, 1000 }, { dtype = dt }), fv.tensor({ 1, 1000, 517 }, { dtype = 'int64' }) }, { true }, t[1], t[2])
    end
    for _, bad in ipairs { { 1, 6 }, { 0, 2 } } do
      local ok, err = pcall(F.cross_entropy, fv.zeros({ 2, 5 }, { device = 'cuda' }),
        fv.tensor(bad, { dtype = 'int64' }):cuda())
      assert.is_false(ok)
      assert.matches('outside the classes 1%.%.5', err)
    end
    assert.are.equal(1000, fv.ones({ 1000 }, { device = 'cuda' }):sum():item()) -- and carries on
  end)

  gpu_it('pools (max, avg, adaptive) forward and backward as the CPU does', function()
    for dt, t in pairs(tol) do
      local x = sample({ 2, 3, 9, 11 }, { dtype = dt })
      local cases = {
        { 'max 3 s2 p1', function(a) return F.max_pool2d(a, 3, { stride = 2, padding = 1 }) end },
        { 'max 2x3 dil 2 ceil', function(a) return F.max_pool2d(a, { 2, 3 }, { dilation = 2, ceil_mode = true }) end },
        { 'avg 3 s2 p1', function(a) return F.avg_pool2d(a, 3, { stride = 2, padding = 1 }) end },
        { 'avg 3 s2 p1 no pad count', function(a)
          return F.avg_pool2d(a, 3, { stride = 2, padding = 1, count_include_pad = false, ceil_mode = true })
        end },
        { 'avg 2 s1', function(a) return F.avg_pool2d(a, 2, { stride = 1 }) end },
        { 'adaptive avg 4x5', function(a) return F.adaptive_avg_pool2d(a, { 4, 5 }) end },
        { 'adaptive avg 1', function(a) return F.adaptive_avg_pool2d(a, 1) end },
        { 'adaptive max 4x5', function(a) return F.adaptive_max_pool2d(a, { 4, 5 }) end },
        { 'adaptive max 13x2', function(a) return F.adaptive_max_pool2d(a, { 13, 2 }) end },
      }
      for _, c in ipairs(cases) do check_nn(c[1] .. ' ' .. dt, c[2], { x }, { true }, t[1], t[2]) end
    end
    -- ties take the first maximum, a NaN wins
    local x = fv.tensor({ { { { 1, 1, 0 / 0, 2 }, { 1, 1, 3, 3 } } } }, { dtype = 'float64' })
    check_nn('max pool ties and NaN', function(a) return F.max_pool2d(a, 2) end, { x }, { true })
    -- an empty plane with padding: every window lies in the padding (max -inf, avg 0)
    local empty = fv.zeros({ 1, 2, 0, 4 }, { dtype = 'float64' })
    check_nn('max pool of an empty plane', function(a) return F.max_pool2d(a, 2, { padding = 1 }) end, { empty }, { true })
    check_nn('avg pool of an empty plane', function(a) return F.avg_pool2d(a, 2, { padding = 1 }) end, { empty }, { true })
  end)

  gpu_it('resizes bilinearly (both align_corners) and shuffles channels as the CPU does', function()
    for dt, t in pairs(tol) do
      local x = sample({ 2, 4, 5, 7 }, { dtype = dt })
      for _, size in ipairs { { 11, 16 }, { 3, 4 }, { 1, 1 }, { 5, 7 }, { 10, 3 } } do
        for _, ac in ipairs { false, true } do
          check_nn(('interpolate %s %dx%d align_corners %s'):format(dt, size[1], size[2], tostring(ac)),
            function(a) return F.interpolate(a, size, { align_corners = ac }) end, { x }, { true }, t[1], t[2])
        end
      end
      check_nn('channel_shuffle 2 ' .. dt, function(a) return F.channel_shuffle(a, 2) end, { x }, { true }, 0, 0)
      check_nn('channel_shuffle 4 ' .. dt, function(a) return F.channel_shuffle(a, 4) end, { x }, { true }, 0, 0)
    end
  end)

  -- batch_norm on both paths (FOVEA_BATCH_NORM_KERNEL, read at each call): our kernels
  -- (cuda/nn_batch_norm.cu, the default) and cuDNN's (cuda/cudnn_batch_norm.cu; eval-mode
  -- backward stays on ours). cuDNN computes float32 statistics in float (its per-channel
  -- descriptor is float for float32 inputs), where ours sum in double: the float sums of
  -- dweight and dbias over up to 9,000 values of order 1 (tree reductions: an error of
  -- about 2^-24 sqrt(n log2 n), some 2e-5, on values of order sqrt(n), about 100) need
  -- atol 1e-4 where ours pass 2e-6, and 1e-4 relative bounds the rest (means, 1/sqrt(var +
  -- eps) and everything made from them, to a few float ulps). float64: cuDNN's order and
  -- formulas (one or two passes) are its own, so 1e-10 instead of 1e-12. On the stand-in
  -- backend the variable has no effect (its kernels are the CPU's): the loop passes there
  -- with either setting.
  local bn_tol = { native = tol, cudnn = { float64 = { 1e-10, 1e-10 }, float32 = { 1e-4, 1e-4 } } }
  pcall(ffi.cdef, 'int setenv(const char *name, const char *value, int overwrite); int unsetenv(const char *name);')

  gpu_it('runs batch_norm in training and eval, forward and backward, as the CPU does (native and cuDNN)', function()
    local ok, err = pcall(function()
      for _, kernel in ipairs { 'native', 'cudnn' } do
        ffi.C.setenv('FOVEA_BATCH_NORM_KERNEL', kernel, 1)
        for dt, t in pairs(bn_tol[kernel]) do
          -- the last two have several chunks of 4096 per channel (cuda/nn_batch_norm.cu);
          -- 2 to 5 dimensions ((B, C, S, 1) for cuDNN)
          for _, shape in ipairs { { 4, 3, 5, 6 }, { 8, 5 }, { 2, 3, 700 }, { 2, 3, 2, 3, 4 }, { 3, 2, 47, 61 },
              { 9000, 2 } } do
            local C = shape[2]
            local x = sample(shape, { dtype = dt }) * 2 + 0.5
            local rm = sample({ C }, { dtype = dt, seed = 3 })
            local rv = sample({ C }, { dtype = dt, seed = 4, positive = true })
            local w = sample({ C }, { dtype = dt, seed = 5 })
            local b = sample({ C }, { dtype = dt, seed = 6 })
            local name = ('%s %s (%s)'):format(dt, table.concat(shape, 'x'), kernel)
            for _, training in ipairs { true, false } do
              local cpu_in, gpu_in = check_nn(('batch_norm %s training %s'):format(name, tostring(training)),
                function(a, m, v, ww, bb)
                  return F.batch_norm(a, m, v, ww, bb, { training = training, momentum = 0.2, eps = 1e-3 })
                end, { x, rm, rv, w, b }, { true, false, false, true, true }, t[1], t[2])
              same(cpu_in[2], gpu_in[2], t[1], t[2], 'running_mean ' .. name)
              same(cpu_in[3], gpu_in[3], t[1], t[2], 'running_var (unbiased) ' .. name)
            end
            check_nn('batch_norm without affine or running stats ' .. name, function(a)
              return F.batch_norm(a, nil, nil, nil, nil, { training = true })
            end, { x }, { true }, t[1], t[2])
            -- running stats without affine (eval too), and a weight without bias whose
            -- input needs no gradient (no dinp, no dbias: cuDNN's stand-ins)
            for _, training in ipairs { true, false } do
              local cpu_in, gpu_in = check_nn(('batch_norm no affine %s training %s'):format(name, tostring(training)),
                function(a, m, v)
                  return F.batch_norm(a, m, v, nil, nil, { training = training, momentum = 0.1 })
                end, { x, rm, rv }, { true, false, false }, t[1], t[2])
              same(cpu_in[3], gpu_in[3], t[1], t[2], 'running_var (unbiased), no affine ' .. name)
            end
            check_nn('batch_norm weight only, no input gradient ' .. name, function(a, m, v, ww)
              return F.batch_norm(a, m, v, ww, nil, { training = true, momentum = 0.2, eps = 1e-3 })
            end, { x, rm, rv, w }, { false, false, false, true }, t[1], t[2])
          end
        end
      end
    end)
    ffi.C.unsetenv('FOVEA_BATCH_NORM_KERNEL')
    assert(ok, err)
  end)

  gpu_it('refuses an unknown FOVEA_BATCH_NORM_KERNEL, naming the variable and the accepted values', function()
    if standin then return end -- the stand-in's batch_norm is the CPU's: it never reads the variable
    ffi.C.setenv('FOVEA_BATCH_NORM_KERNEL', 'fast', 1)
    local ok, err = pcall(F.batch_norm, sample({ 4, 3, 5 }):cuda(), nil, nil, nil, nil, { training = true })
    ffi.C.unsetenv('FOVEA_BATCH_NORM_KERNEL')
    assert.is_false(ok)
    assert.matches('FOVEA_BATCH_NORM_KERNEL=fast: expected native %(the default%) or cudnn', err)
    -- unset again: our kernels, and the GPU carries on
    local x = sample({ 4, 3, 5 })
    check_nn('batch_norm after the refusal', function(a) return F.batch_norm(a, nil, nil, nil, nil, { training = true }) end,
      { x }, { true }, tol.float32[1], tol.float32[2])
  end)

  gpu_it('convolves (cuDNN) forward and backward as the CPU does', function()
    local tf32 = fv.cuda.set_tf32(false)
    local cases = {
      { 'plain 3x3', { 2, 3, 8, 9 }, { 4, 3, 3, 3 }, {} },
      { 'stride 2 pad 1', { 2, 3, 8, 9 }, { 5, 3, 3, 3 }, { stride = 2, padding = 1 } },
      { 'dilation 2, 2x3 kernel', { 1, 2, 9, 9 }, { 3, 2, 2, 3 }, { dilation = 2, padding = { 1, 2 } } },
      { 'groups 2', { 2, 4, 6, 6 }, { 6, 2, 3, 3 }, { groups = 2, padding = 1 } },
      { 'depthwise', { 2, 4, 6, 6 }, { 4, 1, 3, 3 }, { groups = 4, padding = 1 } },
      { '1x1', { 3, 5, 4, 4 }, { 7, 5, 1, 1 }, {} },
    }
    for dt, t in pairs(tol) do
      for _, c in ipairs(cases) do
        local x = sample(c[2], { dtype = dt })
        local w = sample(c[3], { dtype = dt, seed = 9 })
        local b = sample({ c[3][1] }, { dtype = dt, seed = 10 })
        local rtol, atol = t[1] * 10, t[2] * 10
        check_nn('conv2d ' .. c[1] .. ' ' .. dt, function(a, ww, bb) return F.conv2d(a, ww, bb, c[4]) end,
          { x, w, b }, { true, true, true }, rtol, atol)
        check_nn('conv2d no bias ' .. c[1] .. ' ' .. dt, function(a, ww) return F.conv2d(a, ww, nil, c[4]) end,
          { x, w }, { true, true }, rtol, atol)
      end
    end
    fv.cuda.set_tf32(true)
    check_nn('conv2d float32 with TF32', function(a, ww) return F.conv2d(a, ww, nil, { padding = 1 }) end,
      { sample({ 2, 16, 8, 8 }), sample({ 8, 16, 3, 3 }, { seed = 9 }) }, { true, true }, 1e-2, 5e-2)
    fv.cuda.set_tf32(tf32)
  end)

  -- bf16 autocast (cuda/cudnn.cu): float32 tensors, bfloat16 operands and results with
  -- float accumulation. The output is scaled by 1 / sqrt(fan-in), so the output and the
  -- gradients (of x, w and the bias) are all of order 1 and 3e-2 is well above bfloat16's
  -- rounding (2^-9 relative per operand).
  gpu_it('convolves under bf16 autocast within bfloat16 precision', function()
    local previous, tf32 = fv.cuda.set_autocast('bf16'), fv.cuda.set_tf32(false)
    local ok, err = pcall(function()
      local cases = {
        { 'pad 1', { 2, 16, 12, 12 }, { 8, 16, 3, 3 }, { padding = 1 } },
        { 'stride 2 pad 1 groups 2', { 2, 16, 12, 12 }, { 8, 8, 3, 3 }, { stride = 2, padding = 1, groups = 2 } },
      }
      for _, c in ipairs(cases) do
        local x = sample(c[2])
        local w = sample(c[3], { seed = 9 })
        local b = sample({ c[3][1] }, { seed = 10 })
        local k = 1 / math.sqrt(c[3][2] * c[3][3] * c[3][4])
        check_nn('conv2d bf16 autocast ' .. c[1], function(a, ww, bb) return F.conv2d(a, ww, bb, c[4]) * k end,
          { x, w, b }, { true, true, true }, 3e-2, 3e-2)
        check_nn('conv2d bf16 autocast no bias ' .. c[1], function(a, ww) return F.conv2d(a, ww, nil, c[4]) * k end,
          { x, w }, { true, true }, 3e-2, 3e-2)
      end
      if standin then return end
      -- the convolution's own result is bfloat16: every value has a zero low half
      local bit, bits = require 'bit', ffi.new('union { float f; uint32_t u; }')
      for i, v in ipairs(flat(F.conv2d(sample(cases[1][2]):cuda(), sample(cases[1][3], { seed = 9 }):cuda(), nil,
          cases[1][4]))) do
        bits.f = v
        assert(bit.band(bits.u, 0xffff) == 0, ('element %d (%.9g) is not a bfloat16 value'):format(i, v))
      end
      -- the same shapes without autocast: plans of their own, full float32 again
      fv.cuda.set_autocast(false)
      local x, w = sample(cases[1][2]), sample(cases[1][3], { seed = 9 })
      check_nn('conv2d float32 after autocast', function(a, ww) return F.conv2d(a, ww, nil, cases[1][4]) end,
        { x, w }, { true, true }, 1e-3, 1e-4)
    end)
    fv.cuda.set_autocast(previous)
    fv.cuda.set_tf32(tf32)
    assert(ok, err)
  end)

  -- B, N, M, D, Cv: single tiles, several 64-row query and key tiles with ragged ends,
  -- widths padded inside the tiled kernels (40 -> 64, 72 -> 128), and D over 128 (the
  -- simple kernels)
  local nam_shapes = { { 2, 5, 7, 4, 3 }, { 1, 33, 70, 16, 8 }, { 2, 130, 75, 32, 64 }, { 1, 70, 129, 40, 72 },
    { 1, 9, 10, 130, 3 }, { 2, 65, 131, 20, 36 } }
  local function check_nam(dt, s, rtol, atol, what)
    local B, N, M, D, Cv = unpack(s)
    local q = sample({ B, N, D }, { dtype = dt, seed = 21 })
    local k = sample({ B, M, D }, { dtype = dt, seed = 22 })
    local v = sample({ B, M, Cv }, { dtype = dt, seed = 23 })
    check_nn(('nam_attention %s %s%s'):format(dt, table.concat(s, 'x'), what or ''), function(a, b, c)
      return F.nam_attention(a, b, c, { scale = 0.4 })
    end, { q, k, v }, { true, true, true }, rtol, atol)
  end

  gpu_it('computes NAM attention (fused) and criss-cross attention with gradients as the CPU does', function()
    local atol = { float64 = { 1e-11, 1e-11 }, float32 = { 1e-4, 1e-5 } }
    local tf32 = fv.cuda.set_tf32(false) -- float32 exact: nn_nam_flash.cu's CUDA-core kernels
    for dt, t in pairs(atol) do
      for _, s in ipairs(nam_shapes) do check_nam(dt, s, t[1], t[2]) end
      local qc = sample({ 2, 3, 4, 5 }, { dtype = dt, seed = 24 })
      local kc = sample({ 2, 3, 4, 5 }, { dtype = dt, seed = 25 })
      local vc = sample({ 2, 6, 4, 5 }, { dtype = dt, seed = 26 })
      check_nn('criss_cross_attention ' .. dt, function(a, b, c) return F.criss_cross_attention(a, b, c) end,
        { qc, kc, vc }, { true, true, true }, t[1], t[2])
      -- 400 positions (13 tiles of 32, the last partial), J = H + W - 1 = 38 in 8 segments
      -- (the last one short), 33 value channels (several chunks)
      local ql = sample({ 2, 8, 20, 19 }, { dtype = dt, seed = 27 })
      local kl = sample({ 2, 8, 20, 19 }, { dtype = dt, seed = 28 })
      local vl = sample({ 2, 33, 20, 19 }, { dtype = dt, seed = 29 })
      check_nn('criss_cross_attention 20x19 ' .. dt, function(a, b, c) return F.criss_cross_attention(a, b, c) end,
        { ql, kl, vl }, { true, true, true }, t[1], t[2])
    end
    fv.cuda.set_tf32(tf32)
  end)

  gpu_it('computes NAM attention on TF32 tensor cores (the default) within TF32 precision', function()
    -- both TF32 kernels: the fused mma.sync one (default) and cuBLAS over chunks of
    -- scores (FOVEA_NAM_KERNEL=gemm, read at each call; also the one for D = 130)
    pcall(ffi.cdef, 'int setenv(const char *name, const char *value, int overwrite); int unsetenv(const char *name);')
    local tf32 = fv.cuda.set_tf32(true)
    for _, kernel in ipairs { 'mma', 'gemm' } do
      ffi.C.setenv('FOVEA_NAM_KERNEL', kernel, 1)
      for _, s in ipairs(nam_shapes) do check_nam('float32', s, 1e-2, 1e-2, ' with TF32 (' .. kernel .. ')') end
    end
    ffi.C.unsetenv('FOVEA_NAM_KERNEL')
    -- q one float into its storage, not 16-byte aligned: the mma kernels' tiles load in
    -- 16-byte pieces, so cuBLAS takes it
    local function shifted(a)
      local flat = F.cat({ fv.zeros({ 1 }, { device = a:device(), dtype = a:dtype() }), a:reshape({ a:numel() }) }, 1)
      return flat:narrow(1, 2, a:numel()):view(a:size())
    end
    check_nn('nam_attention float32 with q not 16-byte aligned', function(a, b, c)
      return F.nam_attention(shifted(a), b, c, { scale = 0.4 })
    end, { sample({ 2, 130, 32 }, { seed = 21 }), sample({ 2, 75, 32 }, { seed = 22 }), sample({ 2, 75, 64 }, { seed = 23 }) },
      { true, true, true }, 1e-2, 1e-2)
    fv.cuda.set_tf32(tf32)
  end)

  gpu_it('sets bf16 autocast, restores it after fn even when fn fails, and refuses unknown modes', function()
    assert.is_false(fv.cuda.set_autocast('bf16'))
    assert.equals('bf16', fv.cuda.set_autocast(false))
    local ok, err = pcall(fv.cuda.autocast, 'bf16', function() error('inside') end)
    assert.is_false(ok)
    assert.matches('inside', err)
    assert.is_false(fv.cuda.set_autocast(false))
    assert.equals(7, fv.cuda.autocast('bf16', function(a) return a + 1 end, 6))
    ok, err = pcall(fv.cuda.set_autocast, 'fp8')
    assert.is_false(ok)
    assert.matches("unknown mode fp8 %(expected 'bf16' or false%)", err)
  end)

  gpu_it('computes NAM attention under bf16 autocast within bfloat16 precision', function()
    -- the fused mma kernels with bfloat16 operands where D and Cv fit (64), TF32 elsewhere.
    -- An element's error is that of sums over up to 130 products of bfloat16 operands (8
    -- bits), so it is measured against the tensor's largest value: at 2x130x75x32x64 the
    -- largest dK is 9.6, one bfloat16 step there 0.0375, and the H200 was 0.032 off at an
    -- element of 0.02 (the emulated spec takes the same measure).
    local ok, err = pcall(fv.cuda.autocast, 'bf16', function()
      for _, s in ipairs(nam_shapes) do check_nam('float32', s, 3e-2, { of_largest = 3e-2 }, ' under bf16 autocast') end
    end)
    assert(ok, err)
  end)

  gpu_it('trains under bf16 autocast with train.fit and restores the setting after', function()
    fv.manual_seed(3)
    local net = fv.nn.Sequential(fv.nn.Linear(6, 2)):cuda()
    local x = sample({ 8, 6 }, { seed = 40 })
    local y = fv.tensor({ 1, 2, 1, 2, 1, 2, 1, 2 }, { dtype = 'int64' })
    local loader = two_batches(x, y)
    local dir = helpers.tmpdir()
    local ok, result = pcall(fv.train.fit, { model = net, optimizer = fv.optim.Adam(net, { lr = 0.01 }),
      train = loader, epochs = 2, out_dir = dir, quiet = true, autocast = 'bf16' })
    assert.is_false(fv.cuda.set_autocast(false)) -- restored, also when fit failed
    os.execute('rm -rf ' .. dir)
    assert(ok, result)
    assert.equals(2, result.last.epoch)
  end)

  -- The optimizers' fused steps and gradient clipping (cuda/optim.cu) against the CPU:
  -- the same parameters and gradients (from elementwise ops, exact on both) through a
  -- few steps. Adam, AdamW and SGD are meant to agree bit for bit; clipping's norm is a
  -- block-tree sum on the GPU, so it and what follows it agree to rounding.
  local function optim_run(make_opt, dt, device, steps, clip)
    local shapes = { { 3, 5 }, { 7 }, { 40000 } } -- 40000 elements: several norm blocks
    local params = {}
    for k, sh in ipairs(shapes) do
      params[k] = sample(sh, { dtype = dt, seed = 30 + k }):to(device):requires_grad_()
    end
    local opt, norms = make_opt(params), {}
    for step = 1, steps do
      opt:zero_grad()
      local loss
      for k, p in ipairs(params) do
        local r = sample(shapes[k], { dtype = dt, seed = 40 + 10 * step + k }):to(device)
        local term = (p * r):sum() + (p * p):sum() * 0.5
        loss = loss and loss + term or term
      end
      loss:backward()
      if clip then norms[step] = fv.optim.clip_grad_norm(params, clip[1], clip[2]) end
      opt:step()
    end
    return params, opt, norms
  end

  local function optim_compare(name, make_opt, states, clip, tols)
    for _, dt in ipairs { 'float64', 'float32' } do
      local rtol, atol = 0, 0
      if tols then rtol, atol = tols[dt][1], tols[dt][2] end
      local pc, oc, nc = optim_run(make_opt, dt, 'cpu', 3, clip)
      local pg, og, ng = optim_run(make_opt, dt, 'cuda', 3, clip)
      for k = 1, #pc do
        same(pc[k]:detach(), pg[k]:detach(), rtol, atol, ('%s %s parameter %d'):format(name, dt, k))
        for _, st in ipairs(states) do
          same(oc.state[k][st], og.state[k][st], rtol, atol, ('%s %s parameter %d %s'):format(name, dt, k, st))
        end
      end
      for step = 1, #nc do
        assert(math.abs(nc[step] - ng[step]) <= 1e-12 * math.abs(nc[step]),
          ('%s %s: clip norm at step %d: cpu %.17g, cuda %.17g'):format(name, dt, step, nc[step], ng[step]))
      end
    end
  end

  gpu_it('draws Grad-CAM maps of a model on the GPU as on the CPU', function()
    local models = require 'models'
    fv.manual_seed(5)
    local net = models.build { name = 'dual', classes = 2 }
    local x = sample({ 2, 3, 64, 64 }, { seed = 12 })
    local want = fv.gradcam.maps(net, x, { class = 2 })
    net:cuda()
    local tf32 = fv.cuda.set_tf32(false)
    local ok, got = pcall(fv.gradcam.maps, net, x, { class = 2 }) -- x stays on the CPU
    fv.cuda.set_tf32(tf32)
    assert(ok, got)
    assert.equals('cpu', got:device())
    same(want, got:cuda(), 1e-3, 1e-3, 'Grad-CAM maps')
  end)

  gpu_it('steps Adam, AdamW and amsgrad as the CPU does, bit for bit', function()
    optim_compare('Adam', function(ps) return fv.optim.Adam(ps, { lr = 1e-2, weight_decay = 0.1 }) end,
      { 'exp_avg', 'exp_avg_sq' })
    optim_compare('AdamW amsgrad', function(ps)
      return fv.optim.AdamW(ps, { lr = 1e-2, weight_decay = 0.05, amsgrad = true })
    end, { 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq' })
  end)

  gpu_it('steps SGD (plain, momentum, Nesterov, weight decay) as the CPU does, bit for bit', function()
    optim_compare('SGD', function(ps) return fv.optim.SGD(ps, { lr = 0.1 }) end, {})
    optim_compare('SGD momentum', function(ps)
      return fv.optim.SGD(ps, { lr = 0.1, momentum = 0.9, dampening = 0.1, weight_decay = 1e-3 })
    end, { 'momentum_buffer' })
    optim_compare('SGD nesterov', function(ps)
      return fv.optim.SGD(ps, { lr = 0.1, momentum = 0.9, nesterov = true })
    end, { 'momentum_buffer' })
  end)

  gpu_it('clips gradient norms (2, 1, inf, 3) as the CPU does, to rounding', function()
    local tols = { float64 = { 1e-12, 1e-14 }, float32 = { 1e-5, 1e-7 } }
    for _, nt in ipairs { 2, 1, math.huge, 3 } do
      optim_compare('clip ' .. tostring(nt) .. ' + Adam', function(ps) return fv.optim.Adam(ps, { lr = 1e-2 }) end,
        { 'exp_avg', 'exp_avg_sq' }, { 5.0, nt }, tols)
    end
    -- a NaN gradient gives a NaN norm on both
    local g = fv.tensor({ 1, 0 / 0, 2 }, { dtype = 'float64' }):cuda():requires_grad_()
    ;(g * g):sum():backward()
    local total = fv.optim.clip_grad_norm({ g }, 1.0)
    assert.is_true(total ~= total)
  end)

  gpu_it('clips 320 gradients of mixed sizes and dtypes, some missing, as the CPU does, every norm type', function()
    -- The list handling of cuda/optim.cu's grad_norm_parts and grad_scale: more gradients
    -- than one launch takes (248), float32 and float64 in one call, empty gradients,
    -- parameters without one, gradients of several norm blocks, a NaN in the second launch.
    local sizes = { 1, 3, 17, 255, 2, 5, 100, 1000, 7, 33 }
    local function make(mode, device, nan_at)
      local params = {}
      for i = 1, 320 do
        local dt = mode == 'mixed' and (i % 3 == 0 and 'float64' or 'float32') or mode
        local size = i % 50 == 0 and 40000 or i % 25 == 0 and 16383 + i % 3 or i % 40 == 1 and 0
          or sizes[(i * 7) % #sizes + 1]
        local p = fv.zeros({ size }, { dtype = dt }):to(device)
        if i % 10 ~= 4 then -- every tenth parameter has no gradient
          local g = sample({ size }, { dtype = dt, seed = 200 + i }) * (1 + i % 5)
          if i == nan_at and size > 0 then g[1] = 0 / 0 end
          p.grad = g:to(device)
        end
        params[i] = p
      end
      return params
    end
    -- every gradient within rtol of the cpu's (exactly when rtol is 0), or missing on both
    local function compare(pc, pg, rtol, what)
      for i = 1, #pc do
        local gc, gg = pc[i].grad, pg[i].grad
        assert.are.equal(gc == nil, gg == nil, ('%s: gradient %d present on one device only'):format(what, i))
        if gc and gc:numel() > 0 then
          assert.are.equal('cuda', gg:device())
          local worst = ((gc - gg:cpu()):abs() - gc:abs() * rtol):max():item()
          assert(worst <= 0, ('%s: gradient %d (%s, %d elements) differs by %g beyond rtol %g'):format(what, i,
            gc:dtype(), gc:numel(), worst, rtol))
        end
      end
    end
    for _, mode in ipairs { 'float32', 'float64', 'mixed' } do
      local rtol = mode == 'float64' and 1e-12 or 1e-6
      for _, nt in ipairs { 2, 1, math.huge, 3, 0.5 } do
        local what = ('%s norm %s'):format(mode, tostring(nt))
        for _, max_norm in ipairs(nt == 2 and { 1.0, 1e30 } or { 1.0 }) do -- clipped; left alone (exactly)
          local pc, pg = make(mode, 'cpu'), make(mode, 'cuda')
          local nc = fv.optim.clip_grad_norm(pc, max_norm, nt)
          local ng = fv.optim.clip_grad_norm(pg, max_norm, nt)
          assert(nc > 1 and math.abs(nc - ng) <= 1e-12 * nc,
            ('%s: norm cpu %.17g, cuda %.17g'):format(what, nc, ng))
          compare(pc, pg, max_norm == 1.0 and rtol or 0, what .. ' max_norm ' .. max_norm)
        end
        local pc, pg = make(mode, 'cpu', 300), make(mode, 'cuda', 300)
        local nc, ng = fv.optim.clip_grad_norm(pc, 1.0, nt), fv.optim.clip_grad_norm(pg, 1.0, nt)
        assert(nc ~= nc and ng ~= ng, ('%s with a NaN: norm cpu %s, cuda %s'):format(what, nc, ng))
        for i = 1, #pg do -- a NaN norm scales every gradient by NaN
          local g = pg[i].grad
          if g and g:numel() > 0 then assert.are.equal(0, g:eq(g):sum():item(), what .. ' with a NaN: ' .. i) end
        end
      end
    end
  end)

  gpu_it('resumes an optimizer on the GPU from a checkpoint read on the CPU, as an unbroken run', function()
    local serialize = require 'fovea.serialize'
    local function run(resume_at)
      fv.manual_seed(1)
      local net = fv.nn.Linear(4, 3):cuda()
      local opt = fv.optim.Adam(net, { lr = 0.1 })
      local x = sample({ 5, 4 }, { seed = 2 }):cuda()
      for i = 1, 4 do
        if i == resume_at then -- through a file, as train.fit's resume: the state comes back on the cpu
          local path = helpers.tmpdir() .. '/last.safetensors'
          serialize.save_checkpoint(path, { model = net:state_dict(), optimizer = opt:state_dict(), epoch = 1,
            batch = 0, step = 0 })
          local state = serialize.load_checkpoint(path)
          fv.manual_seed(1)
          net = fv.nn.Linear(4, 3):cuda()
          opt = fv.optim.Adam(net, { lr = 0.1 })
          net:load_state_dict(state.model)
          opt:load_state_dict(state.optimizer)
        end
        opt:zero_grad()
        ;(net(x) * net(x)):sum():backward()
        opt:step()
      end
      return net.weight
    end
    same(run(nil):cpu(), run(3), 0, 0, 'weights after a resume on the GPU')
  end)

  gpu_it('refuses an optimizer call with parameters on two devices', function()
    local a = fv.ones(3):requires_grad_()
    local b = fv.ones(3):cuda():requires_grad_()
    ;(a:sum() + b:sum():cpu()):backward()
    local ok, err = pcall(function() fv.optim.SGD({ a, b }, { lr = 0.1 }):step() end)
    assert.is_false(ok)
    assert.matches('parameter 2 .* is on cuda but parameter 1 is on cpu', err)
    ok, err = pcall(fv.optim.clip_grad_norm, { a, b }, 1.0)
    assert.is_false(ok)
    assert.matches('one device', err)
  end)

  -- Pinned host memory and asynchronous uploads (cuda/transfer.cu; on the stand-in: malloc
  -- and an immediate copy that still holds its source until the next upload or
  -- synchronize, as the real one holds it until its event has completed).
  local function address(t) return tonumber(ffi.cast('intptr_t', t:data_ptr())) end

  gpu_it('pins cpu tensors and uploads them asynchronously with the same values', function()
    collectgarbage('collect')
    collectgarbage('collect')
    fv.cuda.synchronize()
    local s0 = fv.cuda.pinned_stats()
    for _, dt in ipairs { 'float32', 'float64', 'int64', 'uint8' } do
      local x = fv.tensor({ { 1, 2, 3 }, { 4, 5, 250 } }, { dtype = dt })
      assert.is_false(x:is_pinned())
      local p = x:pin_memory()
      assert.is_true(p:is_pinned())
      assert.are.equal('cpu', p:device())
      assert.are.equal(dt, p:dtype())
      assert.are.same(x:totable(), p:totable())
      assert.are.equal(p, p:pin_memory()) -- pinned already: the same tensor
      assert.is_true(p:transpose(1, 2):is_pinned()) -- views share the pinned storage
      local g = p:cuda()
      assert.are.equal('cuda', g:device())
      assert.are.same(x:totable(), g:totable())
      -- into an existing device tensor, converting on the device after the upload
      local d = fv.zeros({ 2, 3 }, { dtype = 'float64', device = 'cuda' })
      d:copy_(p)
      assert.are.same(x:double():totable(), d:totable())
      -- a strided view of pinned memory goes the synchronous way, with the same values
      assert.are.same(x:t():totable(), p:t():cuda():totable())
    end
    -- a large upload followed at once by GPU work: the work sees every value
    local big = fv.rand({ 1024, 1024 }, { seed = 21, dtype = 'float64' })
    local pb = big:pin_memory()
    local s1 = fv.cuda.pinned_stats()
    assert.is_true(s1.in_use >= s0.in_use + 8 * 1024 * 1024, 'the pinned block is counted')
    assert.is_true(s1.allocations > s0.allocations)
    local gb = pb:cuda()
    -- (summed in another order on the GPU: equal to float64's rounding, not bit for bit)
    local want_sum, got_sum = (big * 2):sum():item(), (gb * 2):sum():item()
    assert.is_true(math.abs(want_sum - got_sum) <= 1e-12 * math.abs(want_sum), ('sum %.17g, cpu %.17g'):format(got_sum,
      want_sum))
    same(big, gb, 0, 0, 'uploaded values')
    assert.is_true(fv.cuda.pinned_stats().in_flight >= 1, 'the last upload is held until settled')
    fv.cuda.synchronize()
    assert.are.equal(0, fv.cuda.pinned_stats().in_flight, 'synchronize settles every upload')
    -- autograd through pin_memory and the upload: the gradient reaches the cpu leaf
    local leaf = fv.tensor({ 1, 2, 3 }, { dtype = 'float64' }):requires_grad_()
    ;(leaf:pin_memory():cuda() * 3):sum():backward()
    assert.are.equal('cpu', leaf.grad:device())
    assert.are.same({ 3, 3, 3 }, leaf.grad:totable())
    -- errors name the op, the tensor and the reason
    local ok, err = pcall(function() return gb:pin_memory() end)
    assert.is_false(ok)
    assert.matches('pin_memory: the float64 1024x1024 tensor is on cuda; only cpu tensors can be pinned', err)
    ok, err = pcall(function() return big:pin_memory('cpu') end)
    assert.is_false(ok)
    assert.matches("pin_memory: cannot pin the float64 1024x1024 tensor for cpu: host memory is pinned for a "
      .. "device's transfers %(cuda%), not for cpu", err)
    -- given back: every pinned block of this case is released
    pb, gb, leaf, big = nil, nil, nil, nil
    collectgarbage('collect')
    collectgarbage('collect')
    fv.cuda.synchronize()
    assert.are.equal(s0.in_use, fv.cuda.pinned_stats().in_use, 'pinned blocks returned')
  end)

  gpu_it('loads pinned batches with pin_memory and never reuses one whose upload is in flight', function()
    local T = fv.data.transforms
    local dir = helpers.tmpdir()
    local csv = fv.data.synthetic.generate(dir .. '/synth', { n = 4, size = 24, seed = 3 })
    local ds = fv.data.datasets.CSV(csv)
    local opts = { batch_size = 4, workers = 1, prefetch = 1, seed = 2, transform = T.paper_train(16) }
    local plain = fv.data.Loader(ds, opts)
    opts.pin_memory = true
    local pinned = fv.data.Loader(ds, opts)
    assert.are.equal('c', pinned.mode)
    local function first(loader, e)
      local images, labels = loader:epoch(e)()
      return images, labels
    end
    local want_x, want_y = first(plain, 1)
    -- epoch 1 (one batch an epoch): pinned, the same values as without pinning
    local a, la = first(pinned, 1)
    assert.is_true(a:is_pinned() and la:is_pinned())
    assert.is_false(want_x:is_pinned())
    same(want_x, a:cuda(), 0, 0, 'pinned batch')
    assert.are.same(want_y:totable(), la:totable())
    fv.cuda.synchronize()
    -- the images' upload last, then let go of the batch: in flight, its storage is held
    local ga_labels = la:cuda()
    local ga = a:cuda()
    local a_values, a_address = a:clone(), address(a)
    a, la = nil, nil
    collectgarbage('collect')
    collectgarbage('collect')
    local s1 = fv.cuda.pinned_stats()
    assert.is_true(s1.in_flight >= 1)
    local b = first(pinned, 2)
    assert.are_not.equal(a_address, address(b), 'a batch in flight was reused')
    assert.are.equal(s1.allocations + 2, fv.cuda.pinned_stats().allocations, 'new images and labels')
    same(a_values, ga, 0, 0, 'the upload of the batch in flight')
    assert.are.same(want_y:totable(), ga_labels:totable())
    -- nothing in flight: the slot's pinned tensor is reused
    fv.cuda.synchronize()
    local b_address = address(b)
    b = nil
    collectgarbage('collect')
    collectgarbage('collect')
    local s2 = fv.cuda.pinned_stats()
    local c = first(pinned, 3)
    assert.is_true(c:is_pinned())
    assert.are.equal(b_address, address(c), 'the released batch is reused')
    assert.are.equal(s2.allocations + 1, fv.cuda.pinned_stats().allocations, 'new labels only')
    -- the Lua path pins its stacked batches
    local lua_opts = { batch_size = 4, workers = 0, seed = 2, transform = T.paper_train(16), pin_memory = true }
    local lua_loader = fv.data.Loader(ds, lua_opts)
    assert.are.equal('lua', lua_loader.mode)
    local lx, ly = first(lua_loader, 1)
    assert.is_true(lx:is_pinned() and ly:is_pinned())
    same(want_x, lx:cuda(), 0, 0, 'Lua path pinned batch')
    plain:close()
    pinned:close()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  gpu_it('trains with pinned batches on cuda (prefetching) and stops on a NaN loss with no checkpoint of it',
    function()
    -- elementwise ops, matmul and reductions only (the stand-in has no nn kernels)
    local xs = fv.randn({ 8, 4 }, { seed = 50, dtype = 'float64' })
    local ys = fv.tensor({ 1, 2, 3, 1, 2, 3, 1, 2 }, { dtype = 'int64' })
    local function make_loader(pin)
      return two_batches(xs, ys, function(x, y)
        x, y = x:contiguous(), y:contiguous()
        if pin then return x:pin_memory(), y:pin_memory() end
        return x, y
      end)
    end
    local function run(device, nan_at)
      fv.manual_seed(7)
      local net = fv.nn.Sequential(fv.nn.Linear(4, 6, { dtype = 'float64' }), fv.nn.ReLU(),
        fv.nn.Linear(6, 3, { dtype = 'float64' }))
      net:to(device)
      local calls = 0
      local function loss(logits, labels)
        assert.are.equal(device, labels:device())
        calls = calls + 1
        local l = (logits * logits):mean() + (logits:sum(2) * 0.1):mean()
        if calls == nan_at then l = l * (0 / 0) end
        return l
      end
      local dir = helpers.tmpdir()
      local ok, err = pcall(fv.train.fit, { model = net, optimizer = fv.optim.Adam(net, { lr = 0.05 }),
        train = make_loader(device == 'cuda'), epochs = 2, out_dir = dir, quiet = true, loss = loss })
      return net, ok, err, dir
    end
    local cpu_net = run('cpu')
    local gpu_net, ok, err, dir = run('cuda')
    assert(ok, err)
    for k, p in ipairs(cpu_net:parameters()) do
      same(p:detach(), gpu_net:parameters()[k]:detach(), 1e-9, 1e-12, 'parameter ' .. k)
    end
    os.execute("rm -rf '" .. dir .. "'")
    -- a NaN loss at epoch 2, batch 2 (the 4th step): the same message as on the cpu, and
    -- the checkpoint on disk is epoch 1's, with finite weights
    local net
    net, ok, err, dir = run('cuda', 4)
    assert.is_false(ok)
    assert.matches('fovea: training stopped: the loss is nan at epoch 2, batch 2; the last good checkpoint is', err)
    local state = fv.load_checkpoint(dir .. '/last.safetensors')
    assert.are.equal(2, state.epoch)
    for name, t in pairs(state.model) do
      assert.are.equal(t:numel(), t:eq(t):sum():item(), name .. ' is finite in the checkpoint')
    end
    -- the loss is read after the step is queued: the model in memory took the bad step
    local w = net:parameters()[1]:cpu()
    assert.is_true(w:eq(w):sum():item() < w:numel())
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
