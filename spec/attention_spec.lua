-- attention_spec.lua: the attention ops. Fused NAM attention against the plain
-- matmul + softmax + matmul path (forward and the gradients of q, k, v) with sizes that
-- do not fill the kernel's tiles (128 queries x 512 keys forward, 128 x 256 backward),
-- odd D and Cv, both dtypes, the scale option, scores that grow across key tiles and
-- the AVX2 and baseline float code; float64 gradient checks of both ops; criss-cross
-- attention against a naive reference built from explicit H + W - 1 energies and
-- against a tensor-op composition (CCNet's); memory; errors naming the shapes.
local fv = require 'fovea'
local F = require 'fovea.functional'

local function leaf(shape, seed, opts)
  opts = opts or {}
  local t = fv.randn(shape, {seed = seed, dtype = opts.dtype or 'float64'})
  if opts.mul then t = t * opts.mul end
  if opts.noncontiguous then -- same shape, other strides
    local n = #shape
    t = t:transpose(n - 1, n):contiguous():transpose(n - 1, n)
  end
  t = t:detach()
  t.requires_grad = true
  return t
end

-- max |a - b| / max |b| (/ floor when |b| is smaller: values that are 0 exactly)
local function rel_err(a, b, floor)
  local scale = b:abs():max():item()
  return (a - b):abs():max():item() / math.max(scale, floor or 1e-30)
end

local function nam_both(shape, dtype, opts, seed)
  local B, N, M, D, Cv = shape[1], shape[2], shape[3], shape[4], shape[5]
  local results = {}
  for i, fused in ipairs {true, false} do
    local q = leaf({B, N, D}, seed + 1, {dtype = dtype, mul = 0.7, noncontiguous = opts.noncontiguous})
    local k = leaf({B, M, D}, seed + 2, {dtype = dtype, mul = 0.7})
    local v = leaf({B, M, Cv}, seed + 3, {dtype = dtype})
    local g = fv.randn({B, N, Cv}, {seed = seed + 4, dtype = dtype})
    local y = F.nam_attention(q, k, v, {scale = opts.scale, fused = fused})
    y:backward(g)
    results[i] = {y = y:detach(), dq = q.grad, dk = k.grad, dv = v.grad}
  end
  return results[1], results[2]
end

describe('fused NAM attention', function()
  local shapes = {
    {2, 1, 1, 3, 5},     -- one query, one key
    {1, 7, 7, 5, 3},
    {2, 130, 130, 7, 9}, -- past one query tile
    {2, 300, 300, 5, 3}, -- several query and key tiles, ragged ends
    {1, 70, 513, 4, 6},  -- M != N, three key tiles
  }
  for _, dtype in ipairs {'float32', 'float64'} do
    local tol = dtype == 'float32' and 1e-4 or 1e-10
    for _, shape in ipairs(shapes) do
      for _, scale in ipairs {1, 'inv_sqrt_d', 0.37} do
        local name = ('%s B=%d N=%d M=%d D=%d Cv=%d scale %s'):format(dtype, shape[1], shape[2], shape[3], shape[4],
          shape[5], tostring(scale))
        it('equals the plain path forward and backward: ' .. name, function()
          local a, b = nam_both(shape, dtype, {scale = scale}, shape[2] * 10 + shape[4])
          assert.are.same(b.y:size(), a.y:size())
          for _, key in ipairs {'y', 'dq', 'dk', 'dv'} do
            -- one key: the softmax is constant 1, dq and dk are 0 up to rounding
            local e = rel_err(a[key], b[key], shape[3] == 1 and 1 or nil)
            assert(e < tol, ('%s: relative error %.3g (tolerance %g)'):format(key, e, tol))
          end
        end)
      end
    end
  end

  it('takes non-contiguous inputs', function()
    local a, b = nam_both({2, 9, 9, 4, 4}, 'float64', {noncontiguous = true}, 5)
    for _, key in ipairs {'y', 'dq', 'dk', 'dv'} do assert(rel_err(a[key], b[key]) < 1e-10, key) end
  end)

  it('is stable for large scores (float32, scale 30)', function()
    local a, b = nam_both({1, 40, 1100, 6, 4}, 'float32', {scale = 30}, 9)
    for _, key in ipairs {'y', 'dq', 'dk', 'dv'} do
      local e = rel_err(a[key], b[key])
      assert(e < 1e-4, key .. ' ' .. e)
    end
  end)

  it('follows scores that grow from key tile to key tile', function()
    -- keys grow along M, so each key tile's maxima pass the previous ones by far
    local N, M, D = 50, 1500, 4
    local ramp = fv.arange(M, {dtype = 'float64'}):view(1, M, 1) * (3 / M) + 0.05
    for _, dtype in ipairs {'float64', 'float32'} do
      local res = {}
      for i, fused in ipairs {true, false} do
        local q = leaf({1, N, D}, 1, {dtype = dtype})
        local k = ((fv.randn({1, M, D}, {seed = 2, dtype = 'float64'}) * ramp):to(dtype)):detach()
        k.requires_grad = true
        local v = leaf({1, M, 3}, 3, {dtype = dtype})
        local y = F.nam_attention(q, k, v, {scale = 4, fused = fused})
        y:backward(fv.randn({1, N, 3}, {seed = 4, dtype = dtype}))
        res[i] = {y:detach(), q.grad, k.grad, v.grad}
      end
      local tol = dtype == 'float32' and 1e-4 or 1e-10
      for j = 1, 4 do
        local e = rel_err(res[1][j], res[2][j])
        assert(e < tol, ('%s item %d: relative error %.3g'):format(dtype, j, e))
      end
    end
  end)

  it('passes a float64 gradient check', function()
    assert.is_true(fv.gradcheck(function(q, k, v) return F.nam_attention(q, k, v) end,
      {leaf({2, 5, 3}, 1), leaf({2, 6, 3}, 2), leaf({2, 6, 2}, 3)}))
    assert.is_true(fv.gradcheck(function(q, k, v) return F.nam_attention(q, k, v, {scale = 'inv_sqrt_d'}) end,
      {leaf({1, 4, 2}, 4), leaf({1, 4, 2}, 5), leaf({1, 4, 3}, 6)}))
  end)

  it('passes a float64 gradient check across key tiles', function()
    assert.is_true(fv.gradcheck(function(q, k, v) return F.nam_attention(q, k, v, {scale = 0.5}) end,
      {leaf({1, 3, 2}, 7), leaf({1, 600, 2}, 8), leaf({1, 600, 1}, 9)}))
  end)

  it('gives gradients only to the inputs that need them', function()
    local q, k = leaf({1, 6, 3}, 1), fv.randn({1, 6, 3}, {seed = 2, dtype = 'float64'})
    local v = fv.randn({1, 6, 2}, {seed = 3, dtype = 'float64'})
    F.nam_attention(q, k, v):sum():backward()
    local q2 = leaf({1, 6, 3}, 1)
    F.nam_attention(q2, k, v, {fused = false}):sum():backward()
    assert(rel_err(q.grad, q2.grad) < 1e-10)
    local v3 = leaf({1, 6, 2}, 3)
    F.nam_attention(q:detach(), k, v3):sum():backward()
    -- d sum(P v) / dv_j = sum_i P_ij: the columns of the attention sum to N in total
    assert(math.abs(v3.grad:sum():item() - 6 * 2) < 1e-10)
  end)

  it('does not store the N x N attention matrix', function()
    local N, D, Cv = 2048, 8, 8
    local q, k = leaf({1, N, D}, 1, {dtype = 'float32'}), leaf({1, N, D}, 2, {dtype = 'float32'})
    local v = leaf({1, N, Cv}, 3, {dtype = 'float32'})
    local g = fv.randn({1, N, Cv}, {seed = 4})
    collectgarbage()
    fv.memory.reset_peak()
    local base = fv.memory.live_bytes()
    F.nam_attention(q, k, v):backward(g)
    local extra = fv.memory.peak_bytes() - base
    -- outputs and gradients are 4 * N * (D + D + Cv + Cv) bytes; the matrix alone is 4 N^2 = 16 MiB
    assert(extra < 4 * 1024 * 1024, 'peak extra bytes ' .. extra)
  end)

  it('handles a key set of one position and zero-size batches', function()
    local q, k, v = leaf({2, 3, 2}, 1), leaf({2, 1, 2}, 2), leaf({2, 1, 4}, 3)
    local y = F.nam_attention(q, k, v)
    assert(rel_err(y, v:detach():expand(2, 3, 4)) < 1e-15)
    local e = F.nam_attention(fv.zeros(0, 3, 2), fv.zeros(0, 4, 2), fv.zeros(0, 4, 5))
    assert.are.same({0, 3, 5}, e:size())
    -- D = 0: every score is 0, the attention is uniform
    local v0 = leaf({1, 4, 3}, 4)
    local u = F.nam_attention(fv.zeros({1, 2, 0}, {dtype = 'float64'}), fv.zeros({1, 4, 0}, {dtype = 'float64'}), v0)
    assert(rel_err(u, v0:detach():mean(2):expand(1, 2, 3)) < 1e-15)
    u:sum():backward()
    assert(rel_err(v0.grad, fv.full({1, 4, 3}, 0.5, {dtype = 'float64'})) < 1e-15)
  end)

  it('gives the same results with the AVX2, baseline and OpenBLAS float code', function()
    -- the instruction set is picked once per process: ask child processes
    local code = [[
      local fv = require 'fovea'
      local F = require 'fovea.functional'
      local worst = 0
      local function leaf(shape, seed)
        local t = (fv.randn(shape, {seed = seed}) * 0.7):detach()
        t.requires_grad = true
        return t
      end
      local out = {}
      for i, fused in ipairs {true, false} do
        local q, k, v = leaf({2, 150, 7}, 1), leaf({2, 270, 7}, 2), leaf({2, 270, 5}, 3)
        local y = F.nam_attention(q, k, v, {fused = fused, scale = 0.8})
        y:backward(fv.randn({2, 150, 5}, {seed = 4}))
        out[i] = {y:detach(), q.grad, k.grad, v.grad}
      end
      for j = 1, 4 do
        local e = (out[1][j] - out[2][j]):abs():max():item() / out[2][j]:abs():max():item()
        worst = math.max(worst, e)
      end
      io.write(('worst=%.3g'):format(worst))
    ]]
    local path = os.tmpname()
    local f = assert(io.open(path, 'w'))
    f:write(code)
    f:close()
    for _, env in ipairs {'FOVEA_NAM_ISA=base', 'FOVEA_NAM_ISA=avx2', 'FOVEA_NAM_GEMM=blas'} do
      local p = io.popen(('%s luajit %s 2>&1'):format(env, path))
      local text = p:read('*a')
      p:close()
      local worst = tonumber(text:match('worst=(%S+)'))
      assert(worst and worst < 1e-4, env .. ': ' .. text)
    end
    os.remove(path)
  end)

  it('names the shapes that do not fit', function()
    local ok, err = pcall(F.nam_attention, fv.zeros(2, 5, 4), fv.zeros(2, 5, 3), fv.zeros(2, 5, 6))
    assert.is_false(ok)
    assert.matches('q 2x5x4 and k 2x5x3 do not fit', err, 1, true)
    ok, err = pcall(F.nam_attention, fv.zeros(2, 5, 4), fv.zeros(2, 5, 4), fv.zeros(2, 6, 6))
    assert.matches('k 2x5x4 and v 2x6x6 do not fit', err, 1, true)
    ok, err = pcall(F.nam_attention, fv.zeros(2, 5, 4), fv.zeros(3, 5, 4), fv.zeros(3, 5, 6))
    assert.matches('q 2x5x4 and k 3x5x4 do not fit', err, 1, true)
    ok, err = pcall(F.nam_attention, fv.zeros(5, 4), fv.zeros(5, 4), fv.zeros(5, 6))
    assert.matches('q must have 3 dimensions, got 5x4', err, 1, true)
    ok, err = pcall(F.nam_attention, fv.zeros(1, 5, 4), fv.zeros(1, 5, 4, {dtype = 'float64'}), fv.zeros(1, 5, 6))
    assert.matches('k has dtype float64, expected float32', err, 1, true)
    ok, err = pcall(F.nam_attention, fv.zeros(1, 5, 4), fv.zeros(1, 5, 4), fv.zeros(1, 5, 6), {scale = 'big'})
    assert.matches('scale must be a number', err, 1, true)
    ok, err = pcall(F.nam_attention, fv.zeros(1, 5, 4), fv.zeros(1, 5, 4), fv.zeros(1, 5, 6), {scale = 1 / 0})
    assert.matches('not finite', err, 1, true)
  end)
end)

-- Criss-cross attention from explicit energies, in Lua numbers: for (h, w), the column
-- h' ~= h and the whole row (w' = w included), one softmax.
local function criss_cross_naive(q, k, v)
  local Q, K, V = q:totable(), k:totable(), v:totable()
  local B, Cq, H, W, Cv = q:size(1), q:size(2), q:size(3), q:size(4), v:size(2)
  local out = {}
  for b = 1, B do
    out[b] = {}
    for c = 1, Cv do
      out[b][c] = {}
      for h = 1, H do out[b][c][h] = {} end
    end
    for h = 1, H do
      for w = 1, W do
        local pos, e = {}, {}
        for hp = 1, H do
          if hp ~= h then pos[#pos + 1] = {hp, w} end
        end
        for wp = 1, W do pos[#pos + 1] = {h, wp} end
        assert(#pos == H + W - 1)
        local mx = -math.huge
        for i, p in ipairs(pos) do
          local s = 0
          for c = 1, Cq do s = s + Q[b][c][h][w] * K[b][c][p[1]][p[2]] end
          e[i] = s
          mx = math.max(mx, s)
        end
        local total = 0
        for i = 1, #e do
          e[i] = math.exp(e[i] - mx)
          total = total + e[i]
        end
        for c = 1, Cv do
          local acc = 0
          for i, p in ipairs(pos) do acc = acc + e[i] / total * V[b][c][p[1]][p[2]] end
          out[b][c][h][w] = acc
        end
      end
    end
  end
  return fv.tensor(out, {dtype = 'float64'})
end

-- CCNet's composition from tensor ops: column energies with the self entry at -inf,
-- row energies, one softmax over both; differentiable, for comparing gradients.
local function criss_cross_ops(q, k, v)
  local B, H, W = q:size(1), q:size(3), q:size(4)
  local mask = fv.zeros({H, H}, {dtype = q:dtype()})
  for h = 1, H do mask:set(-math.huge, h, h) end
  -- (B, W, H, C) x (B, W, C, H') -> (B, W, H, H') -> (B, H, W, H')
  local eh = q:permute(1, 4, 3, 2):matmul(k:permute(1, 4, 2, 3)) + mask
  eh = eh:permute(1, 3, 2, 4)
  -- (B, H, W, C) x (B, H, C, W') -> (B, H, W, W')
  local ew = q:permute(1, 3, 4, 2):matmul(k:permute(1, 3, 2, 4))
  local att = F.softmax(F.cat({eh, ew}, 4), 4)
  local ah, aw = att:narrow(4, 1, H), att:narrow(4, H + 1, W)
  -- out_h[b, c, h, w] = sum_h' ah[b, h, w, h'] v[b, c, h', w]: (B, W, C, H') x (B, W, H', H)
  local oh = v:permute(1, 4, 2, 3):matmul(ah:permute(1, 3, 4, 2)):permute(1, 3, 4, 2)
  -- out_w[b, c, h, w] = sum_w' aw[b, h, w, w'] v[b, c, h, w']: (B, H, C, W') x (B, H, W', W)
  local ow = v:permute(1, 3, 2, 4):matmul(aw:permute(1, 2, 4, 3)):permute(1, 3, 2, 4)
  return oh + ow
end

describe('criss-cross attention', function()
  local shapes = {{1, 2, 3, 1, 1}, {2, 3, 2, 4, 5}, {1, 2, 3, 5, 1}, {2, 1, 4, 1, 6}, {1, 4, 3, 9, 7}}
  for _, s in ipairs(shapes) do
    local B, Cq, Cv, H, W = s[1], s[2], s[3], s[4], s[5]
    local name = ('B=%d Cq=%d Cv=%d H=%d W=%d'):format(B, Cq, Cv, H, W)
    it('matches explicit H + W - 1 energies: ' .. name, function()
      local q, k, v = leaf({B, Cq, H, W}, 1), leaf({B, Cq, H, W}, 2), leaf({B, Cv, H, W}, 3)
      local y = F.criss_cross_attention(q, k, v)
      assert.are.same({B, Cv, H, W}, y:size())
      assert(rel_err(y:detach(), criss_cross_naive(q, k, v)) < 1e-12)
      local y32 = F.criss_cross_attention(q:float(), k:float(), v:float())
      assert(rel_err(y32:double(), y:detach()) < 1e-5)
    end)
  end

  it('matches the tensor-op composition forward and backward (float64 and float32)', function()
    for _, dtype in ipairs {'float64', 'float32'} do
      local tol = dtype == 'float64' and 1e-10 or 1e-4
      local grads = {}
      for i, fn in ipairs {F.criss_cross_attention, criss_cross_ops} do
        local q = leaf({2, 3, 6, 7}, 1, {dtype = dtype})
        local k = leaf({2, 3, 6, 7}, 2, {dtype = dtype})
        local v = leaf({2, 5, 6, 7}, 3, {dtype = dtype})
        local y = fn(q, k, v)
        y:backward(fv.randn({2, 5, 6, 7}, {seed = 4, dtype = dtype}))
        grads[i] = {y:detach(), q.grad, k.grad, v.grad}
      end
      for j = 1, 4 do
        local e = rel_err(grads[1][j], grads[2][j])
        assert(e < tol, ('%s item %d: relative error %.3g'):format(dtype, j, e))
      end
    end
  end)

  it('is parallel-safe on a larger map (matches the composition)', function()
    local grads = {}
    for i, fn in ipairs {F.criss_cross_attention, criss_cross_ops} do
      local q, k = leaf({2, 4, 23, 19}, 1), leaf({2, 4, 23, 19}, 2)
      local v = leaf({2, 6, 23, 19}, 3)
      fn(q, k, v):backward(fv.randn({2, 6, 23, 19}, {seed = 4, dtype = 'float64'}))
      grads[i] = {q.grad, k.grad, v.grad}
    end
    for j = 1, 3 do assert(rel_err(grads[1][j], grads[2][j]) < 1e-10) end
  end)

  it('passes a float64 gradient check', function()
    assert.is_true(fv.gradcheck(F.criss_cross_attention, {leaf({2, 2, 3, 4}, 1), leaf({2, 2, 3, 4}, 2),
      leaf({2, 3, 3, 4}, 3)}))
    assert.is_true(fv.gradcheck(F.criss_cross_attention, {leaf({1, 3, 4, 2}, 4, {noncontiguous = true}),
      leaf({1, 3, 4, 2}, 5), leaf({1, 1, 4, 2}, 6)}))
  end)

  it('names the shapes that do not fit', function()
    local ok, err = pcall(F.criss_cross_attention, fv.zeros(1, 2, 3, 4), fv.zeros(1, 2, 3, 5), fv.zeros(1, 6, 3, 4))
    assert.is_false(ok)
    assert.matches('query 1x2x3x4 and key 1x2x3x5 must have the same shape', err, 1, true)
    ok, err = pcall(F.criss_cross_attention, fv.zeros(1, 2, 3, 4), fv.zeros(1, 2, 3, 4), fv.zeros(1, 6, 4, 4))
    assert.matches('query 1x2x3x4 and value 1x6x4x4 do not fit', err, 1, true)
    ok, err = pcall(F.criss_cross_attention, fv.zeros(2, 3, 4), fv.zeros(2, 3, 4), fv.zeros(2, 3, 4))
    assert.matches('query must have 4 dimensions, got 2x3x4', err, 1, true)
    ok, err = pcall(F.criss_cross_attention, fv.zeros(1, 2, 3, 4), fv.zeros(1, 2, 3, 4), fv.zeros(1, 6, 3, 4,
      {dtype = 'float64'}))
    assert.matches('value has dtype float64, expected float32', err, 1, true)
  end)
end)
