-- ops_spec.lua: elementwise ops with broadcasting, reductions and matmul, checked
-- against values computed in Lua, for float32 and float64 and strided inputs.
local fv = require 'fovea'

local function close(a, b, tol)
  tol = tol or 1e-5
  if type(a) == 'table' then
    assert.are.equal(#a, #b)
    for i = 1, #a do close(a[i], b[i], tol) end
    return
  end
  if a ~= a and b ~= b then return end
  assert(math.abs(a - b) <= tol * math.max(1, math.abs(b)), ('%.9g vs %.9g'):format(a, b))
end

-- applies f elementwise to nested tables
local function map(t, f)
  if type(t) ~= 'table' then return f(t) end
  local r = {}
  for i, v in ipairs(t) do r[i] = map(v, f) end
  return r
end

for _, dtype in ipairs { 'float32', 'float64' } do
  local tol = dtype == 'float32' and 1e-5 or 1e-12
  describe('elementwise (' .. dtype .. ')', function()
    local a = fv.tensor({{1, -2, 3}, {0.5, 4, -6}}, {dtype = dtype})
    local b = fv.tensor({10, 20, 30}, {dtype = dtype})

    it('adds, subtracts, multiplies and divides with broadcasting', function()
      close((a + b):totable(), {{11, 18, 33}, {10.5, 24, 24}}, tol)
      close((a - b):totable(), {{-9, -22, -27}, {-9.5, -16, -36}}, tol)
      close((a * b):totable(), {{10, -40, 90}, {5, 80, -180}}, tol)
      close((a / b):totable(), {{0.1, -0.1, 0.1}, {0.05, 0.2, -0.2}}, tol)
      local col = fv.tensor({{1}, {2}}, {dtype = dtype})
      close((col + b):totable(), {{11, 21, 31}, {12, 22, 32}}, tol)
    end)

    it('mixes tensors and numbers on either side', function()
      close((a + 1):totable(), map(a:totable(), function(x) return x + 1 end), tol)
      close((1 - a):totable(), map(a:totable(), function(x) return 1 - x end), tol)
      close((2 * a):totable(), map(a:totable(), function(x) return 2 * x end), tol)
      close((12 / b):totable(), {1.2, 0.6, 0.4}, tol)
      close((b ^ 2):totable(), {100, 400, 900}, tol)
      close((2 ^ fv.tensor({1, 3}, {dtype = dtype})):totable(), {2, 8}, tol)
      close((-a):totable(), map(a:totable(), function(x) return -x end), tol)
    end)

    it('computes the unary functions', function()
      local x = fv.tensor({0.25, 1, 2.5}, {dtype = dtype})
      close(x:exp():totable(), map(x:totable(), math.exp), tol)
      close(x:log():totable(), map(x:totable(), math.log), tol)
      close(x:sqrt():totable(), map(x:totable(), math.sqrt), tol)
      close(a:abs():totable(), map(a:totable(), math.abs), tol)
      close(a:relu():totable(), map(a:totable(), function(v) return math.max(v, 0) end), tol)
      close(a:sigmoid():totable(), map(a:totable(), function(v) return 1 / (1 + math.exp(-v)) end), tol)
      close(a:tanh():totable(), map(a:totable(), function(v)
        return (math.exp(v) - math.exp(-v)) / (math.exp(v) + math.exp(-v))
      end), tol)
      close(a:clamp(-1, 2):totable(), {{1, -1, 2}, {0.5, 2, -1}}, tol)
      close(a:clamp(0):totable(), {{1, 0, 3}, {0.5, 4, 0}}, tol)
    end)

    it('compares, giving 0 and 1 in the same dtype', function()
      close(a:gt(0):totable(), {{1, 0, 1}, {1, 1, 0}})
      close(a:le(1):totable(), {{1, 1, 0}, {1, 0, 1}})
      close(a:eq(fv.tensor({1, 4, 3}, {dtype = dtype})):totable(), {{1, 0, 1}, {0, 1, 0}})
      close(a:ne(1):totable(), {{0, 1, 1}, {1, 1, 1}})
      close(a:lt(a):totable(), {{0, 0, 0}, {0, 0, 0}})
      close(a:ge(3):totable(), {{0, 0, 1}, {0, 1, 0}})
      close(a:maximum(0):totable(), {{1, 0, 3}, {0.5, 4, 0}}, tol)
      close(a:minimum(b):totable(), a:totable(), tol)
      assert.are.equal(dtype, a:gt(0):dtype())
    end)

    it('works on non-contiguous inputs', function()
      local m = fv.arange(12, {dtype = dtype}):view(3, 4)
      local mt = m:t() -- 4x3, strided
      close((mt + mt):totable(), map(mt:totable(), function(v) return 2 * v end), tol)
      local e = fv.tensor({1, 2, 3}, {dtype = dtype}):view(3, 1):expand(3, 4)
      close((m * e):totable(), {{0, 1, 2, 3}, {8, 10, 12, 14}, {24, 27, 30, 33}}, tol)
      close(m:narrow(2, 2, 2):exp():totable(), map(m:narrow(2, 2, 2):totable(), math.exp), tol)
    end)

    it('reduces over one dimension or all', function()
      local m = fv.tensor({{1, 5, 3}, {4, 2, 6}}, {dtype = dtype})
      close(m:sum():item(), 21, tol)
      close(m:sum(1):totable(), {5, 7, 9}, tol)
      close(m:sum(2):totable(), {9, 12}, tol)
      assert.are.same({2, 1}, m:sum(2, true):size())
      close(m:mean(-1):totable(), {3, 4}, tol)
      close(m:mean():item(), 3.5, tol)
      local values, indices = m:max(2)
      close(values:totable(), {5, 6})
      assert.are.same({2, 3}, indices:totable())
      assert.are.equal('int64', indices:dtype())
      values, indices = m:min(1)
      close(values:totable(), {1, 2, 3})
      assert.are.same({1, 2, 1}, indices:totable())
      assert.are.same({2, 1, 2}, m:argmax(1):totable())
      assert.are.same({1, 2}, m:argmin(2):totable())
      assert.are.equal(6, m:argmax():item())
      close(m:max():item(), 6)
      close(m:min():item(), 1)
      close(m:var(2):totable(), {4, 4}, tol)
      close(m:var(2, {unbiased = false}):totable(), {8 / 3, 8 / 3}, tol)
      close(m:var():item(), 3.5, tol)
      close(m:std():item(), math.sqrt(3.5), tol)
      close(m:t():sum(2):totable(), {5, 7, 9}, tol)
    end)

    it('propagates NaN through max as PyTorch does', function()
      local m = fv.tensor({1, 0 / 0, 3}, {dtype = dtype})
      assert.is_true(m:max():item() ~= m:max():item())
    end)

    it('multiplies matrices, vectors and batches', function()
      local x = fv.tensor({{1, 2}, {3, 4}, {5, 6}}, {dtype = dtype})
      local y = fv.tensor({{1, 0, 2}, {0, 1, 3}}, {dtype = dtype})
      close(x:matmul(y):totable(), {{1, 2, 8}, {3, 4, 18}, {5, 6, 28}}, tol)
      close(x:matmul(fv.tensor({1, 1}, {dtype = dtype})):totable(), {3, 7, 11}, tol)
      close(fv.tensor({1, 1, 1}, {dtype = dtype}):matmul(x):totable(), {9, 12}, tol)
      close(fv.tensor({1, 2}, {dtype = dtype}):matmul(fv.tensor({3, 4}, {dtype = dtype})):item(), 11, tol)
      -- transposed operands go to BLAS without copies; results must match
      close(y:t():matmul(x:t()):totable(), x:matmul(y):t():totable(), tol)
      -- batched with broadcasting: (2, 3, 2) @ (2, 3)
      local bx = fv.arange(12, {dtype = dtype}):view(2, 3, 2)
      local out = bx:matmul(y)
      assert.are.same({2, 3, 3}, out:size())
      close(out[2]:totable(), bx[2]:matmul(y):totable(), tol)
      -- a column slice is neither row- nor column-major: copied first
      local z = fv.arange(16, {dtype = dtype}):view(4, 4):narrow(2, 1, 2):narrow(1, 1, 2)
      close(z:matmul(z):totable(), z:contiguous():matmul(z:contiguous()):totable(), tol)
      local big = fv.randn({64, 33}, {seed = 1, dtype = dtype})
      local ref = big:t():matmul(big)
      close(ref:get(3, 5), (big:select(2, 3) * big:select(2, 5)):sum():item(), dtype == 'float32' and 1e-4 or 1e-10)
    end)
  end)
end

describe('op errors', function()
  it('names both shapes when broadcasting fails', function()
    local ok, err = pcall(function() return fv.ones{2, 3} + fv.ones{4} end)
    assert.is_false(ok)
    assert.matches('2x3', err)
    assert.matches('%f[%w]4%f[^%w]', err)
    assert.matches('add', err)
  end)

  it('rejects mixed dtypes, integer math and bad matmul shapes', function()
    local ok, err = pcall(function() return fv.ones(2) + fv.ones({2}, {dtype = 'float64'}) end)
    assert.matches('dtypes differ', err)
    ok, err = pcall(function() return fv.ones({2}, {dtype = 'int64'}):exp() end)
    assert.matches('int64', err)
    ok, err = pcall(function() return fv.ones(2, 3):matmul(fv.ones(2, 3)) end)
    assert.matches('matmul: inner dimensions differ: 2x3 @ 2x3', err)
    ok, err = pcall(function() return fv.ones(2) + 'x' end)
    assert.matches('expected tensors or numbers', err)
    ok, err = pcall(function() return fv.ones(2):clamp(3, 1) end)
    assert.matches('lower bound', err)
    ok, err = pcall(function() return fv.zeros(0):max() end)
    assert.matches('empty', err)
  end)

  it('raises errors at the caller', function()
    local ok, err = pcall(function() return fv.ones{2, 3} + fv.ones{4} end)
    assert.matches('ops_spec.lua', err)
  end)
end)
