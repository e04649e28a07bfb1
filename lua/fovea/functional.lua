-- functional.lua: the neural-network ops as functions on tensors, PyTorch's
-- torch.nn.functional in Lua (local F = require 'fovea.functional'). All are
-- differentiable. Images are NCHW. Pair options take a number or {h, w}.
--   F.conv2d(x, weight, bias, {stride = 1, padding = 0, dilation = 1, groups = 1})
--   F.batch_norm(x, running_mean, running_var, weight, bias, {training = false, momentum = 0.1, eps = 1e-5})
--   F.max_pool2d(x, kernel, {stride = kernel, padding = 0, dilation = 1, ceil_mode = false})
--   F.avg_pool2d(x, kernel, {stride = kernel, padding = 0, ceil_mode = false, count_include_pad = true})
--   F.adaptive_avg_pool2d(x, size), F.adaptive_max_pool2d(x, size), F.global_avg_pool(x) -> (B, C)
--   F.interpolate(x, size, {align_corners = false})   bilinear
--   F.softmax(x, dim), F.log_softmax(x, dim)           dim counts from 1 (default: last)
--   F.cross_entropy(logits, target, {weight = nil, reduction = 'mean'})  targets are 1-based classes
--   F.linear(x, weight, bias), F.dropout(x, p, training, {generator = g})
--   F.channel_shuffle(x, groups), F.cat(list, dim), F.split(x, size, dim), F.chunk(x, n, dim), F.relu(x)
--   F.nam_attention(q, k, v, {scale = 1, fused = true})   q (B, N, D), k (B, M, D), v (B, M, Cv) -> (B, N, Cv)
--   F.criss_cross_attention(query, key, value)             (B, Cq, H, W), (B, Cq, H, W), (B, Cv, H, W)
local ffi = require 'ffi'
local clib = require 'fovea.clib'
local T = require 'fovea.tensor'

local C, check, raise = clib.C, clib.check, clib.raise
local wrap, is_tensor = T.wrap, T.is_tensor
local out1 = ffi.new('fv_tensor*[1]')

local F = {}

local function make(fn, ...)
  check(fn(out1, ...))
  return wrap(out1[0])
end

-- The C pointer of an optional tensor argument.
local function opt_p(t, what)
  if t == nil then return nil end
  if not is_tensor(t) then raise('fovea: ' .. what .. ' must be a tensor or nil, got ' .. type(t)) end
  return t.p
end

-- A (h, w) pair from a number or a table {h, w}.
local function pair(v, what, default)
  if v == nil then v = default end
  if type(v) == 'number' then return v, v end
  if type(v) == 'table' and type(v[1]) == 'number' and type(v[2]) == 'number' then return v[1], v[2] end
  raise('fovea: ' .. what .. ' must be a number or a pair {h, w}, got ' .. tostring(v))
end

function F.conv2d(x, weight, bias, opts)
  opts = opts or {}
  local sh, sw = pair(opts.stride, 'stride', 1)
  local ph, pw = pair(opts.padding, 'padding', 0)
  local dh, dw = pair(opts.dilation, 'dilation', 1)
  return make(C.fv_conv2d, x.p, weight.p, opt_p(bias, 'bias'), sh, sw, ph, pw, dh, dw, opts.groups or 1)
end

function F.batch_norm(x, running_mean, running_var, weight, bias, opts)
  opts = opts or {}
  return make(C.fv_batch_norm, x.p, opt_p(weight, 'weight'), opt_p(bias, 'bias'),
    opt_p(running_mean, 'running_mean'), opt_p(running_var, 'running_var'), opts.training and 1 or 0,
    opts.momentum or 0.1, opts.eps or 1e-5)
end

function F.max_pool2d(x, kernel, opts)
  opts = opts or {}
  local kh, kw = pair(kernel, 'kernel')
  local sh, sw = pair(opts.stride, 'stride', { kh, kw })
  local ph, pw = pair(opts.padding, 'padding', 0)
  local dh, dw = pair(opts.dilation, 'dilation', 1)
  return make(C.fv_max_pool2d, x.p, kh, kw, sh, sw, ph, pw, dh, dw, opts.ceil_mode and 1 or 0)
end

function F.avg_pool2d(x, kernel, opts)
  opts = opts or {}
  local kh, kw = pair(kernel, 'kernel')
  local sh, sw = pair(opts.stride, 'stride', { kh, kw })
  local ph, pw = pair(opts.padding, 'padding', 0)
  local include = opts.count_include_pad == nil or opts.count_include_pad
  return make(C.fv_avg_pool2d, x.p, kh, kw, sh, sw, ph, pw, opts.ceil_mode and 1 or 0, include and 1 or 0)
end

function F.adaptive_avg_pool2d(x, size)
  local oh, ow = pair(size, 'output size')
  return make(C.fv_adaptive_avg_pool2d, x.p, oh, ow)
end

function F.adaptive_max_pool2d(x, size)
  local oh, ow = pair(size, 'output size')
  return make(C.fv_adaptive_max_pool2d, x.p, oh, ow)
end

-- (B, C, H, W) -> (B, C): the mean of each channel
function F.global_avg_pool(x)
  return F.adaptive_avg_pool2d(x, 1):view(x:size(1), x:size(2))
end

-- Bilinear resize to size (a number or {h, w}); align_corners false as PyTorch's default.
function F.interpolate(x, size, opts)
  opts = opts or {}
  if opts.mode and opts.mode ~= 'bilinear' then raise('fovea: interpolate: only mode bilinear is supported') end
  local oh, ow = pair(size, 'size')
  return make(C.fv_upsample_bilinear, x.p, oh, ow, opts.align_corners and 1 or 0)
end

function F.softmax(x, dim) return make(C.fv_softmax, x.p, T.cdim(x, dim or -1)) end
function F.log_softmax(x, dim) return make(C.fv_log_softmax, x.p, T.cdim(x, dim or -1)) end

local reductions = { none = 0, mean = 1, sum = 2 }

-- logits (B, K); target: an int64 tensor or a Lua array of classes 1..K.
function F.cross_entropy(logits, target, opts)
  opts = opts or {}
  if type(target) == 'table' then target = T.tensor(target, { dtype = 'int64' }) end
  local reduction = reductions[opts.reduction or 'mean']
  if not reduction then raise('fovea: cross_entropy: reduction must be none, mean or sum') end
  return make(C.fv_cross_entropy, logits.p, target.p, opt_p(opts.weight, 'weight'), reduction, 1)
end

function F.linear(x, weight, bias) return make(C.fv_linear, x.p, weight.p, opt_p(bias, 'bias')) end

-- Zeroes elements with probability p (default 0.5) when training, scaling the rest.
function F.dropout(x, p, training, opts)
  opts = opts or {}
  return make(C.fv_dropout, x.p, p or 0.5, (training == nil or training) and 1 or 0, opts.generator)
end

function F.channel_shuffle(x, groups) return make(C.fv_channel_shuffle, x.p, groups) end

-- NAM (non-local) attention: softmax(scale * q k^T) v over the last two dims.
-- opts.scale: a number (default 1, the paper's choice) or 'inv_sqrt_d' for 1/sqrt(D).
-- opts.fused (default true): the fused C kernel, which never stores the N x M attention
-- matrix; false composes matmul, softmax and matmul (stores it; a reference for tests).
function F.nam_attention(q, k, v, opts)
  opts = opts or {}
  for _, pair in ipairs { { q, 'q' }, { k, 'k' }, { v, 'v' } } do
    if not is_tensor(pair[1]) then raise('fovea: nam_attention: ' .. pair[2] .. ' must be a tensor') end
  end
  local scale = opts.scale
  if scale == nil then
    scale = 1
  elseif scale == 'inv_sqrt_d' then
    scale = 1 / math.sqrt(q:size(q:dim()))
  elseif type(scale) ~= 'number' then
    raise("fovea: nam_attention: scale must be a number or 'inv_sqrt_d', got " .. tostring(scale))
  end
  if opts.fused == nil or opts.fused then return make(C.fv_nam_attention, q.p, k.p, v.p, scale) end
  local n = k:dim()
  local scores = q:matmul(k:transpose(n - 1, n))
  if scale ~= 1 then scores = scores * scale end
  return F.softmax(scores, scores:dim()):matmul(v)
end

-- Criss-cross attention (CCNet): every position attends to its row and column, itself
-- once, under one softmax over the H + W - 1 energies. No gamma or residual.
function F.criss_cross_attention(query, key, value)
  for _, pair in ipairs { { query, 'query' }, { key, 'key' }, { value, 'value' } } do
    if not is_tensor(pair[1]) then raise('fovea: criss_cross_attention: ' .. pair[2] .. ' must be a tensor') end
  end
  return make(C.fv_criss_cross_attention, query.p, key.p, value.p)
end

function F.relu(x) return x:relu() end
function F.sigmoid(x) return x:sigmoid() end

-- Joins a list of tensors along dim (default 1).
function F.cat(list, dim)
  local n = #list
  if n == 0 then raise('fovea: cat: the list is empty') end
  local ptrs = ffi.new('const fv_tensor*[?]', n)
  for i = 1, n do
    if not is_tensor(list[i]) then raise('fovea: cat: entry ' .. i .. ' is not a tensor') end
    ptrs[i - 1] = list[i].p
  end
  return make(C.fv_cat, n, ptrs, T.cdim(list[1], dim or 1))
end

-- Pieces of size `size` along dim (the last may be smaller): views, differentiable.
function F.split(x, size, dim)
  dim = dim or 1
  local total, parts, start = x:size(dim), {}, 1
  if type(size) ~= 'number' or size < 1 then raise('fovea: split: size must be a positive number') end
  while start <= total do
    local len = math.min(size, total - start + 1)
    parts[#parts + 1] = x:narrow(dim, start, len)
    start = start + len
  end
  return parts
end

-- n pieces of (nearly) equal size along dim, as torch.chunk.
function F.chunk(x, n, dim)
  dim = dim or 1
  return F.split(x, math.ceil(x:size(dim) / n), dim)
end

return F
