-- autograd_spec.lua: the autograd engine (accumulation, routing, no_grad, detach,
-- retain_graph, errors) and a float64 gradient check of every differentiable core op,
-- with odd sizes, broadcasting and non-contiguous inputs.
local fv = require 'fovea'

local function leaf(shape, seed, opts)
  opts = opts or {}
  local t = fv.randn(shape, {seed = seed, dtype = 'float64'})
  if opts.positive then t = t:abs() + 0.5 end
  if opts.transposed then t = t:t():contiguous():t() end -- same shape, column-major strides
  t = t:detach()
  t.requires_grad = true
  return t
end

describe('autograd engine', function()
  it('accumulates gradients across uses and calls', function()
    local x = leaf({3}, 1)
    local y = (x * x + x):sum()
    y:backward()
    local expected = (x:detach() * 2 + 1):totable()
    assert.are.same(expected, x.grad:totable())
    ;(x * 3):sum():backward()
    local after = x.grad:totable()
    for i = 1, 3 do assert.is_true(math.abs(after[i] - expected[i] - 3) < 1e-12) end
    x.grad = nil
    assert.is_nil(x.grad)
  end)

  it('gives every leaf a gradient of its own, however the backward shares its results', function()
    -- a first gradient is kept without a copy only when nothing else holds it or its memory
    local a, b = leaf({2, 3}, 11), leaf({2, 3}, 12)
    ;(a + b):sum():backward() -- add's backward hands one gradient to both inputs
    a.grad:fill_(7)
    assert.are.same({{1, 1, 1}, {1, 1, 1}}, b.grad:totable())
    local x = leaf({4}, 13)
    local parts = x:narrow(1, 1, 2) * 2 + x:narrow(1, 3, 2) * 3 -- views of one gradient buffer
    parts:sum():backward()
    assert.are.same({2, 2, 3, 3}, x.grad:totable())
    assert.is_true(x.grad:is_contiguous())
    local w = leaf({3}, 14)
    local seed = fv.ones({3}, {dtype = 'float64'})
    w:backward(seed) -- a leaf's own backward: the caller keeps the seed
    seed:fill_(5)
    assert.are.same({1, 1, 1}, w.grad:totable())
    local z = leaf({3, 2}, 16)
    z:backward(fv.ones({2, 3}, {dtype = 'float64'}):t()) -- a non-contiguous seed nobody keeps
    assert.is_true(z.grad:is_contiguous())
    assert.are.same({{1, 1}, {1, 1}, {1, 1}}, z.grad:totable())
  end)

  it('routes gradients through a diamond graph', function()
    local x = leaf({2, 2}, 2)
    local a = x:exp()
    local b = a * a + a:sum(1)
    b:sum():backward()
    -- d/dx sum(e^2x) + 2 * sum over columns(e^x) = 2e^2x + 2e^x
    local ex = x:detach():exp()
    local expected = (ex * ex * 2 + ex * 2):totable()
    local got = x.grad:totable()
    for i = 1, 2 do for j = 1, 2 do assert.is_true(math.abs(got[i][j] - expected[i][j]) < 1e-10) end end
  end)

  it('records nothing under no_grad and stops at detach', function()
    local x = leaf({3}, 3)
    local y = fv.no_grad(function() return x * 2 end)
    assert.is_false(y.requires_grad)
    assert.is_true(fv.is_grad_enabled())
    local ok = pcall(fv.no_grad, function() error('inside') end)
    assert.is_false(ok)
    assert.is_true(fv.is_grad_enabled())
    local d = (x * 2):detach()
    assert.is_nil(d.grad_fn)
    local z = x * 2
    assert.are.equal('mul', z.grad_fn)
  end)

  it('takes a gradient for non-scalar outputs and insists on it', function()
    local x = leaf({2, 3}, 4)
    local y = x * 2
    local ok, err = pcall(function() y:backward() end)
    assert.is_false(ok)
    assert.matches('give the gradient', err)
    y:backward(fv.ones({2, 3}, {dtype = 'float64'}))
    assert.are.same({{2, 2, 2}, {2, 2, 2}}, x.grad:totable())
  end)

  it('frees saved tensors after backward unless retain_graph', function()
    local x = leaf({3}, 5)
    local y = (x * x):sum()
    y:backward({retain_graph = true})
    y:backward()
    local ok, err = pcall(function() y:backward() end)
    assert.is_false(ok)
    assert.matches('second time', err)
  end)

  it('refuses in-place changes of tensors that need gradients', function()
    local x = leaf({3}, 6)
    local ok, err = pcall(function() x:fill_(0) end)
    assert.is_false(ok)
    assert.matches('needs gradients', err)
    fv.no_grad(function() x:fill_(0) end)
    assert.are.same({0, 0, 0}, x:totable())
    ok, err = pcall(function() fv.ones(2):backward() end)
    assert.matches('does not need gradients', err)
    ok, err = pcall(function() (x * 2).requires_grad = false end)
    assert.matches('leaf', err)
  end)

  it('frees a long chain without piling up memory', function()
    local x = leaf({1000}, 7)
    local before = fv.memory.live_bytes()
    for _ = 1, 20 do
      local y = x
      for _ = 1, 50 do y = y * 1.0001 end
      y:sum():backward()
    end
    collectgarbage('collect')
    collectgarbage('collect')
    assert.is_true(fv.memory.live_bytes() - before < 100000)
  end)
end)

describe('gradcheck of the core ops', function()
  local cases = {
    {'add with broadcasting', function(a, b) return a + b end, {{3, 4}, {4}}},
    {'sub with broadcasting', function(a, b) return a - b end, {{3, 1}, {1, 5}}},
    {'mul', function(a, b) return a * b end, {{2, 3}, {2, 3}}},
    {'div', function(a, b) return a / b end, {{2, 3}, {3}}, {positive = {false, true}}},
    {'pow', function(a, b) return a ^ b end, {{2, 3}, {2, 3}}, {positive = {true, false}}},
    {'maximum and minimum', function(a, b) return a:maximum(b) + a:minimum(b) * 2 end, {{5}, {5}}},
    {'scalar ops', function(a) return (2 - a) * 3 + a / 4 - 1 + 2 / (a + 3) end, {{4}}, {positive = {true}}},
    {'scalar powers', function(a) return a ^ 3 + 2 ^ a + a:maximum(0.5) end, {{4}}, {positive = {true}}},
    {'neg exp log sqrt', function(a) return (-a):exp() + a:log() + a:sqrt() end, {{3, 2}}, {positive = {true}}},
    {'abs relu sigmoid tanh', function(a) return a:abs() + a:relu() * 2 + a:sigmoid() + a:tanh() end, {{7}}},
    {'clamp', function(a) return a:clamp(-0.5, 0.5) end, {{9}}},
    {'sum and mean', function(a) return a:sum(2) + a:mean(2, true):squeeze(2) + a:sum() end, {{3, 5}}},
    {'max and min', function(a) return a:max(1) + a:min(2):sum() + a:max() end, {{4, 3}}},
    {'var', function(a) return a:var(2) + a:var() + a:var(1, {unbiased = false}):sum() end, {{3, 4}}},
    {'matmul 2-D', function(a, b) return a:matmul(b) end, {{3, 4}, {4, 2}}},
    {'matmul vector cases', function(a, b, v) return a:matmul(v) + v:matmul(b:t()):sum() end, {{3, 4}, {2, 4}, {4}}},
    {'batched matmul with broadcasting', function(a, b) return a:matmul(b) end, {{2, 3, 4}, {4, 5}}},
    {'views', function(a) return a:reshape(6, 2):t():narrow(2, 2, 3):select(1, 2) end, {{3, 4}}},
    {'permute expand unsqueeze', function(a) return a:permute(3, 1, 2):unsqueeze(1):expand(2, 4, 2, 3) end, {{2, 3, 4}}},
    {'reshape of a non-contiguous view', function(a) return a:t():reshape(12) end, {{3, 4}}},
    {'conversion round trip (float32 in the middle)', function(a) return a:float():double() * 2 end, {{3}},
      {check = {eps = 1e-2, atol = 1e-4}}},
  }
  for _, case in ipairs(cases) do
    local name, fn, shapes, opts = case[1], case[2], case[3], case[4] or {}
    for _, layout in ipairs {'contiguous', 'transposed'} do
      it(name .. ' (' .. layout .. ')', function()
        local inputs = {}
        for i, shape in ipairs(shapes) do
          inputs[i] = leaf(shape, 100 + i, {
            positive = opts.positive and opts.positive[i],
            transposed = layout == 'transposed' and #shape == 2,
          })
        end
        assert.is_true(fv.gradcheck(fn, inputs, opts.check))
      end)
    end
  end

  it('reports a wrong gradient', function()
    local x = leaf({3}, 9)
    local ok, err = pcall(fv.gradcheck, function(a)
      return a * fv.no_grad(function() return a * 1 end) -- second factor hides its gradient
    end, {x})
    assert.is_false(ok)
    assert.matches('analytic', err)
  end)
end)
