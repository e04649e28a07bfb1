-- conv_dnnl_spec.lua: float32 conv2d runs on oneDNN (core/cpu/conv_dnnl.c) when the build
-- has it; float64 stays on im2col + GEMM. Here the float32 forward and all three
-- gradients are compared with the float64 path cast to float32 (max |a - b| below 1e-4
-- of max |b|) over strides, padding, dilation, groups, depthwise, 1x1 and odd sizes; and
-- the kernel's own contract is checked through its C entry: backward adds into the
-- gradient buffers it is given, float64 is left to im2col, and the primitive cache
-- survives eviction and thread-count changes. Without oneDNN in the build the same
-- comparisons run against im2col in float32.
local fv = require 'fovea'
local F = require 'fovea.functional'
local clib = require 'fovea.clib'
local ffi = require 'ffi'

ffi.cdef [[
  typedef struct fv_spec_nn_call { int op; fv_tensor *t[10]; int64_t i[10]; double d[2]; } fv_spec_nn_call;
  int fv_dnnl_conv2d_active(void);
  int fv_dnnl_conv2d_forward(const fv_spec_nn_call *c, int *handled);
  int fv_dnnl_conv2d_backward(const fv_spec_nn_call *c, int *handled);
]]
local C = clib.C

local TOL = 1e-4

-- max |a - b| / max |b| over all elements (a, b float64 tensors of one shape)
local function rel_err(a, b)
  local scale = b:abs():max():item()
  return (a - b):abs():max():item() / math.max(scale, 1e-30)
end

local function pair(v) return type(v) == 'table' and v or {v, v} end

-- {name, input shape, weight shape, has bias, opts, needs input grad, needs weight grad}
local cases = {
  {'3x3 stride 1, padding 1 (ResNet body)', {2, 64, 14, 14}, {64, 64, 3, 3}, false, {padding = 1}},
  {'7x7 stride 2, padding 3, 3 input channels (stem, no input grad)', {2, 3, 29, 27}, {16, 3, 7, 7}, false,
    {stride = 2, padding = 3}, false},
  {'3x3 stride 2, padding 1, odd sizes, bias', {3, 16, 13, 11}, {32, 16, 3, 3}, true, {stride = 2, padding = 1}},
  {'1x1 stride 1 with bias', {2, 24, 9, 7}, {40, 24, 1, 1}, true, {}},
  {'1x1 stride 2 (downsample)', {2, 64, 14, 14}, {128, 64, 1, 1}, false, {stride = 2}},
  {'dilation 2, padding 2', {2, 16, 15, 12}, {16, 16, 3, 3}, true, {padding = 2, dilation = 2}},
  {'groups 4', {2, 32, 9, 9}, {64, 8, 3, 3}, false, {padding = 1, groups = 4}},
  {'groups 3, stride 2, padding 1, dilation 2, bias', {2, 3, 7, 5}, {6, 1, 3, 3}, true,
    {stride = 2, padding = 1, dilation = 2, groups = 3}},
  {'depthwise 3x3', {2, 32, 11, 13}, {32, 1, 3, 3}, true, {padding = 1, groups = 32}},
  {'depthwise, multiplier 2, stride 2, dilation 2', {2, 24, 10, 10}, {48, 1, 3, 3}, false,
    {stride = 2, padding = 2, dilation = 2, groups = 24}},
  {'asymmetric kernel, stride and padding', {1, 4, 6, 7}, {5, 4, 3, 2}, false, {stride = {1, 2}, padding = {2, 0}}},
  {'kernel as large as the padded input', {2, 8, 5, 5}, {8, 8, 5, 5}, true, {}},
  {'batch 1, frozen weights (input grad only)', {1, 32, 8, 8}, {48, 32, 3, 3}, false, {padding = 1}, true, false},
}

-- forward and gradients of sum(conv(x, w, b) * r) in dtype, from float64 originals
local function run(c, dtype, seed)
  local x64 = fv.randn(c[2], {seed = seed, dtype = 'float64'})
  local w64 = fv.randn(c[3], {seed = seed + 1, dtype = 'float64'})
  local b64 = c[4] and fv.randn({c[3][1]}, {seed = seed + 2, dtype = 'float64'}) or nil
  local x, w = x64:to(dtype):detach(), w64:to(dtype):detach()
  local b = b64 and b64:to(dtype):detach()
  x.requires_grad = c[6] ~= false
  w.requires_grad = c[7] ~= false
  if b then b.requires_grad = true end
  local y = F.conv2d(x, w, b, c[5])
  local r = fv.randn(y:size(), {seed = seed + 3, dtype = 'float64'}):to(dtype)
  ;(y * r):sum():backward()
  local function d(t) return t and t:double() end
  return d(y), d(x.grad), d(w.grad), b and d(b.grad)
end

describe('float32 conv2d on oneDNN', function()
  it('is in use in this build (FOVEA_DNNL=0 turns it off)', function()
    if C.fv_dnnl_conv2d_active() == 0 then
      pending('oneDNN is not in this build or FOVEA_DNNL=0: float32 runs on im2col here')
      return
    end
    assert.are.equal(1, C.fv_dnnl_conv2d_active())
  end)

  -- the raw entry points, as the CPU backend calls them
  local function call(t, opts)
    local s, p, d = pair(opts.stride or 1), pair(opts.padding or 0), pair(opts.dilation or 1)
    local cl = ffi.new('fv_spec_nn_call')
    cl.op = C.FV_OP_CONV2D
    for i = 1, 6 do cl.t[i - 1] = t[i] and t[i].p or nil end
    local args = {s[1], s[2], p[1], p[2], d[1], d[2], opts.groups or 1}
    for i = 1, 7 do cl.i[i - 1] = args[i] end
    return cl
  end

  for k, c in ipairs(cases) do
    it('matches the float64 path: ' .. c[1], function()
      local y32, gx32, gw32, gb32 = run(c, 'float32', 10 * k)
      local y64, gx64, gw64, gb64 = run(c, 'float64', 10 * k)
      -- the float64 reference rounded to float32, as a float32 result at best can be
      local function ref(t) return t and t:float():double() end
      local checks = {{'output', y32, ref(y64)}, {'input grad', gx32, ref(gx64)}, {'weight grad', gw32, ref(gw64)},
        {'bias grad', gb32, ref(gb64)}}
      for _, ch in ipairs(checks) do
        assert.are.equal(ch[3] == nil, ch[2] == nil, ch[1] .. ': gradient presence differs')
        if ch[3] then
          local e = rel_err(ch[2], ch[3])
          assert.is_true(e < TOL, ('%s: relative error %.3g (tolerance %g)'):format(ch[1], e, TOL))
        end
      end
      -- and it was oneDNN that ran it, not the im2col fallback
      if C.fv_dnnl_conv2d_active() ~= 0 then
        local x = fv.randn(c[2], {seed = 10 * k})
        local w = fv.randn(c[3], {seed = 10 * k + 1})
        local out = fv.zeros(y32:size())
        local handled = ffi.new('int[1]')
        clib.check(C.fv_dnnl_conv2d_forward(call({out, x, w}, c[5]), handled))
        assert.are.equal(1, handled[0], 'oneDNN did not take this shape')
      end
    end)
  end

  it('adds into the gradient buffers it is given (backward accumulates)', function()
    if C.fv_dnnl_conv2d_active() == 0 then pending('oneDNN is not in use') return end
    for _, c in ipairs {cases[1], cases[3], cases[7], cases[9]} do
      local x = fv.randn(c[2], {seed = 1}):contiguous()
      local w = fv.randn(c[3], {seed = 2}):contiguous()
      local y = F.conv2d(x, w, nil, c[5])
      local gy = fv.randn(y:size(), {seed = 3}):contiguous()
      local start = {fv.randn(c[2], {seed = 4}), fv.randn(c[3], {seed = 5}), fv.randn({c[3][1]}, {seed = 6})}
      local g = {start[1]:clone(), start[2]:clone(), start[3]:clone()}
      local handled = ffi.new('int[1]')
      clib.check(C.fv_dnnl_conv2d_backward(call({g[1], g[2], g[3], gy, x, w}, c[5]), handled))
      assert.are.equal(1, handled[0])
      -- the same gradients from zero, through autograd in float64
      local x64, w64 = x:double():detach(), w:double():detach()
      x64.requires_grad, w64.requires_grad = true, true
      local b64 = fv.zeros({c[3][1]}, {dtype = 'float64'})
      b64.requires_grad = true
      ;(F.conv2d(x64, w64, b64, c[5]) * gy:double()):sum():backward()
      local want = {start[1]:double() + x64.grad, start[2]:double() + w64.grad, start[3]:double() + b64.grad}
      for i = 1, 3 do
        local e = rel_err(g[i]:double(), want[i])
        assert.is_true(e < TOL, ('%s, gradient %d: relative error %.3g'):format(c[1], i, e))
      end
    end
  end)

  it('leaves float64 to im2col', function()
    local x = fv.randn({1, 2, 5, 5}, {dtype = 'float64'})
    local w = fv.randn({3, 2, 3, 3}, {dtype = 'float64'})
    local out = fv.zeros({1, 3, 3, 3}, {dtype = 'float64'})
    local cl = call({out, x, w}, {})
    local handled = ffi.new('int[1]', 7)
    clib.check(C.fv_dnnl_conv2d_forward(cl, handled))
    assert.are.equal(0, handled[0])
  end)

  it('gives the same results after its cache evicts an entry and after a thread-count change', function()
    local x = fv.randn({2, 8, 9, 9}, {seed = 7})
    local w = fv.randn({8, 8, 3, 3}, {seed = 8})
    local first = F.conv2d(x, w, nil, {padding = 1})
    for size = 4, 70 do -- more shapes than the cache holds
      F.conv2d(fv.randn({1, 4, size, 5}, {seed = size}), fv.randn({4, 4, 3, 3}, {seed = 9}))
    end
    local threads = fv.get_num_threads()
    fv.set_num_threads(1)
    local one = F.conv2d(x, w, nil, {padding = 1})
    fv.set_num_threads(threads)
    local again = F.conv2d(x, w, nil, {padding = 1})
    assert.is_true(rel_err(one:double(), first:double()) < 1e-6)
    assert.is_true(rel_err(again:double(), first:double()) < 1e-6)
  end)
end)
