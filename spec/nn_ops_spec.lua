-- nn_ops_spec.lua: the neural-network ops: float64 gradient checks with odd sizes,
-- strides, padding, dilation, groups and non-contiguous inputs; known values; errors.
local fv = require 'fovea'
local F = require 'fovea.functional'

local function leaf(shape, seed, opts)
  opts = opts or {}
  local t = fv.randn(shape, {seed = seed, dtype = opts.dtype or 'float64'})
  if opts.noncontiguous then -- same values pattern, permuted storage
    local n = #shape
    t = t:transpose(n - 1, n):contiguous():transpose(n - 1, n)
  end
  t = t:detach()
  t.requires_grad = true
  return t
end

local function close(a, b, tol)
  if type(a) == 'table' then
    for i = 1, #b do close(a[i], b[i], tol) end
    return
  end
  assert(math.abs(a - b) <= (tol or 1e-6) * math.max(1, math.abs(b)), ('%.9g vs %.9g'):format(a, b))
end

describe('gradcheck of the nn ops', function()
  local cases = {
    {'conv2d stride 2, padding 1, dilation 2, groups 3', function(x, w, b)
      return F.conv2d(x, w, b, {stride = 2, padding = 1, dilation = 2, groups = 3})
    end, {{2, 3, 7, 5}, {6, 1, 3, 3}, {6}}},
    {'conv2d asymmetric, no bias', function(x, w)
      return F.conv2d(x, w, nil, {stride = {1, 2}, padding = {2, 0}})
    end, {{1, 4, 6, 7}, {5, 4, 3, 2}}},
    {'conv2d depthwise', function(x, w) return F.conv2d(x, w, nil, {padding = 1, groups = 4}) end,
      {{2, 4, 5, 5}, {4, 1, 3, 3}}},
    {'conv2d 1x1', function(x, w, b) return F.conv2d(x, w, b) end, {{2, 3, 4, 3}, {5, 3, 1, 1}, {5}}},
    {'batch_norm training', function(x, w, b)
      return F.batch_norm(x, nil, nil, w, b, {training = true})
    end, {{3, 4, 3, 2}, {4}, {4}}},
    {'max_pool2d with padding', function(x) return F.max_pool2d(x, 3, {stride = 2, padding = 1}) end, {{2, 3, 7, 6}}},
    {'max_pool2d ceil_mode and dilation', function(x)
      return F.max_pool2d(x, 2, {stride = 2, dilation = {1, 2}, ceil_mode = true})
    end, {{1, 2, 7, 9}}},
    {'avg_pool2d', function(x) return F.avg_pool2d(x, {3, 2}, {stride = {2, 1}, padding = {1, 0}}) end, {{2, 2, 7, 5}}},
    {'avg_pool2d without padded cells', function(x)
      return F.avg_pool2d(x, 3, {stride = 2, padding = 1, count_include_pad = false})
    end, {{1, 2, 6, 6}}},
    {'adaptive_avg_pool2d overlapping bins', function(x) return F.adaptive_avg_pool2d(x, {3, 4}) end, {{2, 3, 7, 9}}},
    {'adaptive_max_pool2d', function(x) return F.adaptive_max_pool2d(x, {2, 3}) end, {{2, 2, 5, 7}}},
    {'global_avg_pool', function(x) return F.global_avg_pool(x) end, {{2, 3, 4, 5}}},
    {'bilinear down, align_corners false', function(x) return F.interpolate(x, {3, 4}) end, {{1, 2, 7, 9}}},
    {'bilinear up, align_corners true', function(x) return F.interpolate(x, {7, 5}, {align_corners = true}) end,
      {{2, 1, 3, 4}}},
    {'softmax over a middle dim', function(x) return F.softmax(x, 2) end, {{2, 5, 3}}},
    {'log_softmax over the last dim', function(x) return F.log_softmax(x) end, {{4, 7}}},
    {'cross_entropy with class weights', function(x)
      return F.cross_entropy(x, {3, 1, 2, 3, 2}, {weight = fv.tensor({0.5, 2, 1.5}, {dtype = 'float64'})})
    end, {{5, 3}}},
    {'cross_entropy sum and none', function(x)
      return F.cross_entropy(x, {1, 4}, {reduction = 'sum'}) + F.cross_entropy(x, {2, 2}, {reduction = 'none'}):sum()
    end, {{2, 4}}},
    {'channel_shuffle', function(x) return F.channel_shuffle(x, 3) end, {{2, 6, 2, 3}}},
    {'cat', function(a, b) return F.cat({a, b, a}, 2) end, {{2, 3, 4}, {2, 1, 4}}},
    {'split and chunk', function(x)
      local parts = F.split(x, 2, 2)
      local chunks = F.chunk(x, 2, 1)
      return parts[1]:sum() + parts[3] * 2 + chunks[2]:sum()
    end, {{3, 5}}},
    {'linear', function(x, w, b) return F.linear(x, w, b) end, {{3, 4}, {2, 4}, {2}}},
    {'linear on a batch of sequences', function(x, w) return F.linear(x, w) end, {{2, 3, 4}, {5, 4}}},
  }
  for _, case in ipairs(cases) do
    local name, fn, shapes = case[1], case[2], case[3]
    for _, layout in ipairs {'contiguous', 'non-contiguous'} do
      it(name .. ' (' .. layout .. ')', function()
        local inputs = {}
        for i, shape in ipairs(shapes) do
          inputs[i] = leaf(shape, 10 * i + #shape, {noncontiguous = layout == 'non-contiguous' and #shape >= 2})
        end
        assert.is_true(fv.gradcheck(fn, inputs))
      end)
    end
  end

  it('batch_norm in evaluation mode', function()
    local mean = fv.tensor({0.1, -0.2, 0.3}, {dtype = 'float64'})
    local var = fv.tensor({1.5, 0.5, 2}, {dtype = 'float64'})
    assert.is_true(fv.gradcheck(function(x, w, b)
      return F.batch_norm(x, mean, var, w, b, {training = false})
    end, {leaf({2, 3, 4}, 1), leaf({3}, 2), leaf({3}, 3)}))
  end)

  it('dropout scales the kept elements and passes their gradient', function()
    local x = leaf({1000}, 4)
    local y = F.dropout(x, 0.25, true, {generator = fv.generator(1)})
    local kept = y:ne(0):sum():item()
    assert.is_true(kept > 650 and kept < 850)
    close(((y - x * (4 / 3)) * y:ne(0)):abs():max():item(), 0, 1e-12)
    y:sum():backward()
    close(x.grad:sum():item(), kept * 4 / 3, 1e-9)
    assert.are.equal(x.p, F.dropout(x, 0.5, false).p) -- evaluation: the input itself
  end)
end)

describe('nn op values', function()
  it('computes a known convolution', function()
    local x = fv.arange(16, {dtype = 'float64'}):view(1, 1, 4, 4)
    local w = fv.ones({1, 1, 2, 2}, {dtype = 'float64'})
    assert.are.same({{{{10, 18}, {42, 50}}}}, F.conv2d(x, w, nil, {stride = 2}):totable())
  end)

  it('updates running statistics with the unbiased variance', function()
    local x = fv.tensor({{1}, {3}}, {dtype = 'float64'}) -- (B=2, C=1)
    local rm, rv = fv.zeros({1}, {dtype = 'float64'}), fv.ones({1}, {dtype = 'float64'})
    local y = F.batch_norm(x, rm, rv, nil, nil, {training = true, momentum = 0.1})
    close(rm:item(), 0.2)
    close(rv:item(), 0.9 + 0.1 * 2) -- unbiased variance of {1, 3} is 2
    close(y:totable(), {{-1 / math.sqrt(1 + 1e-5)}, {1 / math.sqrt(1 + 1e-5)}}, 1e-9)
  end)

  it('max-pools a window with no input position (dilation, every tap in the padding) to -inf, no gradient', function()
    -- 1x1 input, kernel 2, dilation 2, padding 1: the one window's taps are at -1 and 1
    local x = fv.tensor({{{{5}}}}, {dtype = 'float64'}):requires_grad_()
    local y = F.max_pool2d(x, 2, {stride = 1, padding = 1, dilation = 2})
    assert.are.same({{{{-math.huge}}}}, y:totable())
    y:sum():backward()
    assert.are.same({{{{0}}}}, x.grad:totable())
    -- 3x1, kernel 1x2, padding (0, 1), dilation (1, 2): every window's column taps miss too
    local z = fv.tensor({{{{1}, {2}, {3}}}}, {dtype = 'float64'}):requires_grad_()
    local w = F.max_pool2d(z, {1, 2}, {stride = 1, padding = {0, 1}, dilation = {1, 2}})
    assert.are.same({{{{-math.huge}, {-math.huge}, {-math.huge}}}}, w:totable())
    w:sum():backward()
    assert.are.same({{{{0}, {0}, {0}}}}, z.grad:totable())
  end)

  it('pools 97 into 13 adaptive bins of 8 or 9', function()
    local x = fv.arange(97, {dtype = 'float64'}):view(1, 1, 1, 97):expand(1, 1, 2, 97):contiguous()
    local y = F.adaptive_max_pool2d(x, {1, 13})
    assert.are.same({1, 1, 1, 13}, y:size())
    -- bin i ends at ceil((i+1)*97/13) - 1
    for i = 0, 12 do assert.are.equal(math.ceil((i + 1) * 97 / 13) - 1, y:get(1, 1, 1, i + 1)) end
  end)

  it('computes the cross-entropy of uniform logits', function()
    local logits = fv.zeros({3, 4}, {dtype = 'float64'})
    close(F.cross_entropy(logits, {1, 2, 4}):item(), math.log(4), 1e-12)
  end)

  it('softmax rows sum to one in float32', function()
    local s = F.softmax(fv.randn({5, 9}, {seed = 3}) * 10, 2):sum(2)
    close(s:totable(), {1, 1, 1, 1, 1}, 1e-5)
  end)
end)

describe('nn op errors', function()
  it('names the shapes that do not fit', function()
    local ok, err = pcall(F.conv2d, fv.zeros(1, 3, 8, 8), fv.zeros(4, 2, 3, 3))
    assert.matches('input 1x3x8x8 and weight 4x2x3x3 do not fit', err)
    ok, err = pcall(F.conv2d, fv.zeros(3, 8, 8), fv.zeros(4, 3, 3, 3))
    assert.matches('input must have 4 dimensions, got 3x8x8', err)
    ok, err = pcall(F.conv2d, fv.zeros(1, 3, 2, 2), fv.zeros(4, 3, 3, 3))
    assert.matches('smaller than the 3x3 kernel', err)
    ok, err = pcall(F.cross_entropy, fv.zeros(2, 3), {1, 4})
    assert.matches('outside the classes 1..3', err)
    ok, err = pcall(F.cross_entropy, fv.zeros(2, 3), {1})
    assert.matches('does not match logits', err)
    ok, err = pcall(F.batch_norm, fv.zeros(2, 3), nil, nil, nil, nil, {training = false})
    assert.matches('running_mean', err)
    ok, err = pcall(F.cat, {fv.zeros(2, 3), fv.zeros(3, 3)}, 2)
    assert.matches('tensor 2 3x3 does not match tensor 1 2x3', err)
    ok, err = pcall(F.max_pool2d, fv.zeros(1, 1, 4, 4), 2, {padding = 2})
    assert.matches('at most half', err)
  end)
end)
