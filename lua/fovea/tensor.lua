-- tensor.lua: the Tensor type. fv_tensor pointers from the C core become FFI metatype
-- objects with operators, methods and Torch7-style printing. Lua conventions: dimensions
-- and positions count from 1 (negative ones from the end: -1 is the last), and index
-- results (argmax, max's indices) are 1-based, as in Torch7.
local ffi = require 'ffi'
local clib = require 'fovea.clib'
local memory = require 'fovea.memory'
local dtypes = require 'fovea.dtypes'

local C, check, raise = clib.C, clib.check, clib.raise
local MAX_DIMS = C.FV_MAX_DIMS

local Tensor = {}          -- methods
local properties = {}      -- t.grad, t.requires_grad, t.shape
local setters = {}
local fv = {}              -- creation functions, exported by init.lua

local out1 = ffi.new('fv_tensor*[1]')
local out2 = ffi.new('fv_tensor*[1]')
local shape_buf = ffi.new('int64_t[?]', MAX_DIMS)
local int_buf = ffi.new('int[?]', MAX_DIMS)

-- A Lua tensor is a small FFI struct holding one reference to a C tensor. (A bare
-- fv_tensor* would not do: the FFI gives pointers their own + and -, pointer
-- arithmetic, and never calls the metamethods.) Field p is the C tensor.
ffi.cdef [[ typedef struct fv_lua_tensor { fv_tensor *p; } fv_lua_tensor; ]]
local Handle = ffi.typeof('fv_lua_tensor')

-- Takes ownership of a new C reference; the handle's __gc releases it.
local function wrap(p)
  memory.after_alloc()
  return Handle(p)
end
fv.wrap = wrap

local function is_tensor(x) return type(x) == 'cdata' and ffi.istype(Handle, x) end
fv.is_tensor = is_tensor

-- The op's single result: calls fn(out1, ...) and wraps out1[0].
local function make(fn, ...)
  check(fn(out1, ...))
  return wrap(out1[0])
end

-- Reads a shape from {2, 3} or from numbers 2, 3; returns ndim and the options table.
local function read_shape(a, ...)
  local dims, opts
  if type(a) == 'table' and not is_tensor(a) then
    dims, opts = a, ...
  else
    dims = { a, ... }
    if type(dims[#dims]) == 'table' then opts = table.remove(dims) end
  end
  if #dims > MAX_DIMS then raise('fovea: at most ' .. MAX_DIMS .. ' dimensions, got ' .. #dims) end
  for i = 1, #dims do
    local n = dims[i]
    if type(n) ~= 'number' or n ~= math.floor(n) then
      raise('fovea: shape entry ' .. i .. ' is ' .. tostring(n) .. ', expected an integer')
    end
    shape_buf[i - 1] = n
  end
  return #dims, opts or {}
end

local function shape_text(t)
  local dims = {}
  for d = 1, t.p.ndim do dims[d] = tostring(tonumber(t.p.sizes[d - 1])) end
  return #dims > 0 and table.concat(dims, 'x') or 'scalar'
end

-- A 1-based (or negative) Lua dimension of t as the C core's 0-based one, checked here
-- so that messages speak Lua's numbering. extra: positions past the end that are
-- allowed (1 for unsqueeze).
local function cdim(t, d, extra)
  local n = t.p.ndim + (extra or 0)
  if type(d) ~= 'number' or d == 0 or d ~= math.floor(d) or d > n or d < -n then
    raise(('fovea: dimension %s out of range for tensor %s (dimensions count from 1, or from -1 at the end)')
      :format(tostring(d), shape_text(t)))
  end
  return d > 0 and d - 1 or n + d
end

-- A 1-based (or negative) position along C dimension d0 as a 0-based one, checked.
-- past_end allows size + 1 (the start of an empty narrow at the end).
local function cindex(t, d0, i, past_end)
  local size = tonumber(t.p.sizes[d0])
  local hi = past_end and size + 1 or size
  if type(i) ~= 'number' or i == 0 or i ~= math.floor(i) or i > hi or i < -size then
    raise(('fovea: index %s out of range for dimension %d of size %d in tensor %s'):format(
      tostring(i), d0 + 1, size, shape_text(t)))
  end
  return i > 0 and i - 1 or size + i
end

---------------------------------------------------------------------------------------
-- creation

local function creation_args(...)
  local ndim, opts = read_shape(...)
  return ndim, opts, dtypes.code(opts.dtype), dtypes.device_code(opts.device)
end

function fv.empty(...)
  local ndim, _, dt, dev = creation_args(...)
  return make(C.fv_empty, ndim, shape_buf, dt, dev)
end

function fv.zeros(...)
  local ndim, _, dt, dev = creation_args(...)
  return make(C.fv_zeros, ndim, shape_buf, dt, dev)
end

function fv.ones(...)
  local ndim, _, dt, dev = creation_args(...)
  return make(C.fv_ones, ndim, shape_buf, dt, dev)
end

-- fv.full({2, 3}, 7) or fv.full({2, 3}, 7, {dtype = 'float64'})
function fv.full(shape, value, opts)
  local ndim = read_shape(shape)
  opts = opts or {}
  return make(C.fv_full, ndim, shape_buf, value, dtypes.code(opts.dtype), dtypes.device_code(opts.device))
end

-- fv.arange(n), fv.arange(start, stop), fv.arange(start, stop, step), each with an
-- optional options table last; stop is excluded, as in PyTorch.
function fv.arange(a, b, c, d)
  local args = { a, b, c, d }
  local opts = {}
  for i = #args, 1, -1 do
    if type(args[i]) == 'table' then opts = table.remove(args, i) end
  end
  local start, stop, step = args[1], args[2], args[3] or 1
  if stop == nil then start, stop = 0, start end
  return make(C.fv_arange, start, stop, step, dtypes.code(opts.dtype), dtypes.device_code(opts.device))
end

-- A generator for opts.seed (a fresh stream), opts.generator, or the global one.
local function generator_for(opts)
  if opts.generator then return opts.generator end
  if opts.seed then return ffi.new('fv_generator', opts.seed, 0) end
  return C.fv_default_generator()
end

function fv.rand(...)
  local ndim, opts, dt, dev = creation_args(...)
  return make(C.fv_rand, ndim, shape_buf, dt, dev, generator_for(opts))
end

function fv.randn(...)
  local ndim, opts, dt, dev = creation_args(...)
  return make(C.fv_randn, ndim, shape_buf, dt, dev, generator_for(opts))
end

function fv.manual_seed(seed) check(C.fv_manual_seed(seed)) end

-- A new generator object for reproducible streams: fv.randn({2}, {generator = g}).
function fv.generator(seed) return ffi.new('fv_generator', seed or 0, 0) end

-- Shape of a nested Lua table {{1, 2}, {3, 4}} (rows must agree).
local function nested_shape(data)
  local shape, node = {}, data
  while type(node) == 'table' do
    shape[#shape + 1] = #node
    node = node[1]
  end
  local count = 1
  for _, n in ipairs(shape) do count = count * n end
  local flat = ffi.new('double[?]', math.max(count, 1))
  local pos = 0
  local function walk(t, depth, path)
    if #t ~= shape[depth] then
      raise(('fovea: tensor data is ragged: %s has %d entries, expected %d'):format(path, #t, shape[depth]))
    end
    for i = 1, #t do
      local v = t[i]
      if depth < #shape then
        if type(v) ~= 'table' then raise('fovea: tensor data is ragged at ' .. path .. '[' .. i .. ']') end
        walk(v, depth + 1, path .. '[' .. i .. ']')
      else
        if type(v) == 'boolean' then v = v and 1 or 0 end
        if type(v) ~= 'number' then
          raise('fovea: tensor data ' .. path .. '[' .. i .. '] is ' .. type(v) .. ', expected a number')
        end
        flat[pos] = v
        pos = pos + 1
      end
    end
  end
  if type(data) == 'table' and #shape > 0 and shape[1] > 0 then walk(data, 1, 'data') end
  return shape, flat, count
end

-- fv.tensor({{1, 2}, {3, 4}}, {dtype = 'float64'}); a number gives a 0-dim tensor.
function fv.tensor(data, opts)
  opts = opts or {}
  local shape, flat, count
  if type(data) == 'number' then
    shape, flat, count = {}, ffi.new('double[1]', data), 1
  elseif type(data) == 'table' then
    shape, flat, count = nested_shape(data)
  else
    raise('fovea: fv.tensor expects a number or a (nested) table of numbers, got ' .. type(data))
  end
  local ndim = read_shape(shape)
  local t = make(C.fv_empty, ndim, shape_buf, dtypes.code(opts.dtype), C.FV_CPU)
  check(C.fv_copy_from_f64(t.p, flat, count))
  if opts.device and dtypes.device_code(opts.device) ~= C.FV_CPU then return t:to(opts.device) end
  return t
end

---------------------------------------------------------------------------------------
-- properties

function Tensor.dim(t) return t.p.ndim end
function Tensor.nDimension(t) return t.p.ndim end
function Tensor.numel(t) return tonumber(C.fv_tensor_numel(t.p)) end
function Tensor.nElement(t) return Tensor.numel(t) end
function Tensor.dtype(t) return dtypes.name(t.p.scalar_type) end
function Tensor.device(t) return ffi.string(C.fv_device_name(t.p.device_type)) end
function Tensor.is_contiguous(t) return C.fv_tensor_is_contiguous(t.p) == 1 end
function Tensor.storage_offset(t) return tonumber(t.p.offset) + 1 end
function Tensor.is_freed(t) return t.p.storage == nil end

-- t:size() is a table {2, 3}; t:size(d) one size (d from 1, or negative from the end).
-- t:size(): a plain array of the sizes, which prints as the tensor's summary line does
-- ("2x3", "scalar") and compares by value (x:size() == y:size() when the shapes are equal).
local size_mt = {
  __tostring = function(s) return #s == 0 and 'scalar' or table.concat(s, 'x') end,
  __eq = function(a, b)
    if #a ~= #b then return false end
    for i = 1, #a do
      if a[i] ~= b[i] then return false end
    end
    return true
  end,
}

function Tensor.size(t, d)
  if d == nil then
    local s = {}
    for i = 0, t.p.ndim - 1 do s[i + 1] = tonumber(t.p.sizes[i]) end
    return setmetatable(s, size_mt)
  end
  return tonumber(t.p.sizes[cdim(t, d)])
end

function Tensor.stride(t, d)
  if d == nil then
    local s = {}
    for i = 0, t.p.ndim - 1 do s[i + 1] = tonumber(t.p.strides[i]) end
    return s
  end
  return tonumber(t.p.strides[cdim(t, d)])
end

function properties.shape(t) return Tensor.size(t) end

function properties.requires_grad(t) return t.p.needs_grad ~= 0 end

-- Marks a leaf as needing gradients (float tensors only; not an op's output).
function setters.requires_grad(t, v)
  if t.p.grad_fn ~= nil then
    raise('fovea: requires_grad can only be set on leaf tensors; this one was made by '
      .. ffi.string(C.fv_node_name(t.p.grad_fn)) .. ' (use :detach())')
  end
  if v and t.p.scalar_type ~= C.FV_FLOAT32 and t.p.scalar_type ~= C.FV_FLOAT64 then
    raise('fovea: only float tensors can require gradients, not ' .. dtypes.name(t.p.scalar_type))
  end
  t.p.needs_grad = v and 1 or 0
end

function Tensor.requires_grad_(t, v)
  setters.requires_grad(t, v == nil or v)
  return t
end

-- The name of the op that made t ('add', 'matmul', ...), or nil for a leaf.
function properties.grad_fn(t)
  if t.p.grad_fn == nil then return nil end
  return ffi.string(C.fv_node_name(t.p.grad_fn))
end

function Tensor.is_leaf(t) return t.p.grad_fn == nil end

-- t.grad = g sets the gradient (shape and dtype must match); t.grad = nil clears it.
function setters.grad(t, g)
  if g ~= nil and not is_tensor(g) then raise('fovea: grad must be a tensor or nil') end
  check(C.fv_tensor_set_grad(t.p, g ~= nil and g.p or nil))
end

-- Backpropagates from t: t:backward() for a one-element t, t:backward(grad) otherwise;
-- opts.retain_graph keeps the saved tensors for another backward.
function Tensor.backward(t, grad, opts)
  if type(grad) == 'table' then grad, opts = nil, grad end
  opts = opts or {}
  check(C.fv_backward(t.p, grad ~= nil and grad.p or nil, opts.retain_graph and 1 or 0))
  memory.after_backward()
end

-- A tensor sharing t's memory with no history: gradients stop here.
function Tensor.detach(t) return make(C.fv_detach, t.p) end

-- Runs fn(...) with gradient recording off (restored afterwards, also on error).
function fv.no_grad(fn, ...)
  local previous = C.fv_set_grad_enabled(0)
  local results = { pcall(fn, ...) }
  C.fv_set_grad_enabled(previous)
  if not results[1] then error(results[2], 0) end
  return unpack(results, 2, table.maxn(results))
end

function fv.set_grad_enabled(on) return C.fv_set_grad_enabled(on and 1 or 0) ~= 0 end
function fv.is_grad_enabled() return C.fv_is_grad_enabled() ~= 0 end

-- The accumulated gradient as a tensor sharing its memory, or nil.
function properties.grad(t)
  local g = t.p.gradient
  if g == nil then return nil end
  C.fv_tensor_retain(g)
  return Handle(g)
end

function Tensor.shape_string(t) return shape_text(t) end

function Tensor.describe(t)
  local buf = ffi.new('char[160]')
  check(C.fv_tensor_describe(t.p, buf, 160))
  return ffi.string(buf)
end

---------------------------------------------------------------------------------------
-- lifetime and values

-- Releases the tensor's memory now (views of it keep theirs); later use is an error.
function Tensor.free(t)
  check(C.fv_tensor_free_data(t.p))
end

function Tensor.data_ptr(t)
  if t.p.device_type ~= C.FV_CPU then raise('fovea: data_ptr: tensor is on ' .. Tensor.device(t)) end
  return C.fv_tensor_data(t.p)
end

-- All values as a flat double array (cdata) and their count.
local function values_f64(t)
  local n = Tensor.numel(t)
  local buf = ffi.new('double[?]', math.max(n, 1))
  check(C.fv_copy_to_f64(t.p, buf, n))
  return buf, n
end
fv.values_f64 = values_f64

-- Nested Lua tables of the values (a number for a 0-dim tensor).
function Tensor.totable(t)
  local cpu = t.p.device_type == C.FV_CPU and t or t:cpu()
  local flat = values_f64(cpu)
  if t.p.ndim == 0 then return flat[0] end
  local sizes, pos = Tensor.size(t), 0
  local function build(depth)
    local r = {}
    for i = 1, sizes[depth] do
      if depth == #sizes then
        r[i] = flat[pos]
        pos = pos + 1
      else
        r[i] = build(depth + 1)
      end
    end
    return r
  end
  return build(1)
end

-- The value of a one-element tensor.
function Tensor.item(t)
  if Tensor.numel(t) ~= 1 then
    raise('fovea: item: tensor ' .. Tensor.shape_string(t) .. ' has ' .. Tensor.numel(t) .. ' elements, not 1')
  end
  if t.p.device_type ~= C.FV_CPU then return Tensor.item(Tensor.cpu(t)) end
  local v = ffi.new('double[1]')
  check(C.fv_copy_to_f64(t.p, v, 1))
  return v[0]
end

-- t:get(i, j, ...) and t:set(value, i, j, ...): one element, positions from 1.
local function read_index(t, ...)
  local n = select('#', ...)
  if n ~= t.p.ndim then
    raise(('fovea: %d indices given for tensor %s'):format(n, Tensor.shape_string(t)))
  end
  for i = 1, n do shape_buf[i - 1] = cindex(t, i - 1, (select(i, ...))) end
  return shape_buf
end

function Tensor.get(t, ...)
  if t.p.device_type ~= C.FV_CPU then return Tensor.get(Tensor.cpu(t), ...) end -- copies all of t
  local v = ffi.new('double[1]')
  check(C.fv_get_f64(t.p, read_index(t, ...), v))
  return v[0]
end

function Tensor.set(t, value, ...)
  if t.p.device_type ~= C.FV_CPU then -- fill the one-element view in place
    read_index(t, ...)
    local v = t
    for i = 1, select('#', ...) do v = Tensor.select(v, 1, (select(i, ...))) end
    check(C.fv_fill_(v.p, value))
    return t
  end
  check(C.fv_set_f64(t.p, read_index(t, ...), value))
  return t
end

---------------------------------------------------------------------------------------
-- views

function Tensor.view(t, ...)
  local ndim = read_shape(...)
  return make(C.fv_view, t.p, ndim, shape_buf)
end

function Tensor.reshape(t, ...)
  local ndim = read_shape(...)
  return make(C.fv_reshape, t.p, ndim, shape_buf)
end

function Tensor.view_as(t, other) return make(C.fv_view, t.p, other.p.ndim, other.p.sizes) end

-- t:narrow(dim, start, length): start from 1 (negative from the end).
function Tensor.narrow(t, dim, start, length)
  local d = cdim(t, dim)
  return make(C.fv_narrow, t.p, d, cindex(t, d, start, true), length)
end

function Tensor.select(t, dim, index)
  local d = cdim(t, dim)
  return make(C.fv_select, t.p, d, cindex(t, d, index))
end

function Tensor.transpose(t, d0, d1) return make(C.fv_transpose, t.p, cdim(t, d0), cdim(t, d1)) end

-- t:t(): transpose of a matrix
function Tensor.t(t)
  if t.p.ndim ~= 2 then raise('fovea: t() expects a 2-D tensor, got ' .. Tensor.shape_string(t)) end
  return make(C.fv_transpose, t.p, 0, 1)
end

function Tensor.permute(t, ...)
  local perm = type(...) == 'table' and ... or { ... }
  for i = 1, #perm do int_buf[i - 1] = cdim(t, perm[i]) end
  return make(C.fv_permute, t.p, #perm, int_buf)
end

function Tensor.expand(t, ...)
  local ndim = read_shape(...)
  return make(C.fv_expand, t.p, ndim, shape_buf)
end

function Tensor.expand_as(t, other) return make(C.fv_expand, t.p, other.p.ndim, other.p.sizes) end

function Tensor.squeeze(t, dim)
  if dim == nil then return make(C.fv_squeeze, t.p, 0, 1) end
  return make(C.fv_squeeze, t.p, cdim(t, dim), 0)
end

-- t:unsqueeze(d): the new size-1 dimension becomes dimension d (1 .. ndim+1, or negative).
function Tensor.unsqueeze(t, dim)
  return make(C.fv_unsqueeze, t.p, cdim(t, dim, 1))
end

function Tensor.contiguous(t) return make(C.fv_contiguous, t.p) end
function Tensor.clone(t) return make(C.fv_clone, t.p) end
function Tensor.flatten(t) return make(C.fv_reshape, t.p, 1, ffi.new('int64_t[1]', -1)) end

---------------------------------------------------------------------------------------
-- copies and conversion

function Tensor.copy_(t, src)
  check(C.fv_copy_(t.p, src.p))
  return t
end

function Tensor.fill_(t, value)
  check(C.fv_fill_(t.p, value))
  return t
end

function Tensor.zero_(t) return Tensor.fill_(t, 0) end

-- t:to('float64'), t:to('cpu'), t:to('cuda'): a converted copy (the same tensor when
-- nothing changes). Device moves are differentiable; 'cuda' loads the CUDA backend
-- (fovea.cuda) and says why when it is not available.
function Tensor.to(t, what)
  local dt = dtypes.lookup(what)
  if dt then
    if dt == t.p.scalar_type then return t end
    return make(C.fv_to_dtype, t.p, dt)
  end
  local dev = dtypes.device_code(what)
  if dev == t.p.device_type then return t end
  if C.fv_device_available(dev) == 0 then
    local why = dev == C.FV_CUDA and require('fovea.cuda').unavailable_reason() or 'no backend is loaded'
    if why then
      raise('fovea: to(' .. tostring(what) .. '): CUDA is not available: ' .. why)
    end
  end
  return make(C.fv_to_device, t.p, dev)
end

-- t:pin_memory(): a copy of the cpu tensor t in page-locked ("pinned") host memory for
-- the GPU's transfers (same values, dtype and shape; still on the cpu), or t itself when
-- it is pinned and contiguous already. t:to('cuda') / t:cuda() of a pinned tensor is
-- asynchronous: it returns at once, the GPU's later work sees the values, and the memory
-- stays alive until the copy is done (PyTorch's pin_memory() + non_blocking). Loads the
-- CUDA backend; raises when CUDA is not available or t is not on the cpu.
-- Differentiable for float tensors. t:is_pinned(): whether t's memory is pinned.
function Tensor.pin_memory(t, device)
  device = device or 'cuda'
  local dev = dtypes.device_code(device)
  if t.p.storage ~= nil and C.fv_tensor_is_pinned(t.p) == 1 and C.fv_tensor_is_contiguous(t.p) == 1 then return t end
  if dev == C.FV_CUDA and t.p.device_type == C.FV_CPU and C.fv_device_available(dev) == 0 then
    raise('fovea: pin_memory: CUDA is not available: ' .. tostring(require('fovea.cuda').unavailable_reason()))
  end
  return make(C.fv_pin_memory, t.p, dev)
end

function Tensor.is_pinned(t) return C.fv_tensor_is_pinned(t.p) == 1 end

function Tensor.float(t) return Tensor.to(t, 'float32') end
function Tensor.double(t) return Tensor.to(t, 'float64') end
function Tensor.long(t) return Tensor.to(t, 'int64') end
function Tensor.byte(t) return Tensor.to(t, 'uint8') end
function Tensor.cpu(t) return Tensor.to(t, 'cpu') end
function Tensor.cuda(t, index) return Tensor.to(t, index and ('cuda:' .. index) or 'cuda') end
function Tensor.is_cuda(t) return t.p.device_type == C.FV_CUDA end
function Tensor.type(t, dtype)
  if dtype == nil then return Tensor.dtype(t) end
  return Tensor.to(t, dtype)
end

---------------------------------------------------------------------------------------
-- elementwise

local binary_ops = {
  add = C.FV_OP_ADD, sub = C.FV_OP_SUB, mul = C.FV_OP_MUL, div = C.FV_OP_DIV, pow = C.FV_OP_POW,
  maximum = C.FV_OP_MAXIMUM, minimum = C.FV_OP_MINIMUM,
  eq = C.FV_OP_EQ, ne = C.FV_OP_NE, lt = C.FV_OP_LT, le = C.FV_OP_LE, gt = C.FV_OP_GT, ge = C.FV_OP_GE,
}

-- op(a, b) with either side a tensor or a number.
local function binary(op, a, b)
  if is_tensor(a) then
    if is_tensor(b) then return make(C.fv_binary, op, a.p, b.p) end
    if type(b) == 'number' then return make(C.fv_binary_scalar, op, a.p, b, 0) end
  elseif type(a) == 'number' and is_tensor(b) then
    return make(C.fv_binary_scalar, op, b.p, a, 1)
  end
  raise(('fovea: %s: expected tensors or numbers, got %s and %s'):format(
    ffi.string(C.fv_op_name(op)), type(a), type(b)))
end

for name, op in pairs(binary_ops) do
  Tensor[name] = function(a, b) return binary(op, a, b) end
end

local unary_ops = {
  neg = C.FV_OP_NEG, exp = C.FV_OP_EXP, log = C.FV_OP_LOG, sqrt = C.FV_OP_SQRT, abs = C.FV_OP_ABS,
  relu = C.FV_OP_RELU, sigmoid = C.FV_OP_SIGMOID, tanh = C.FV_OP_TANH,
}
for name, op in pairs(unary_ops) do
  Tensor[name] = function(t) return make(C.fv_unary, op, t.p) end
end

function Tensor.clamp(t, lo, hi)
  return make(C.fv_clamp, t.p, lo or -math.huge, hi or math.huge)
end

---------------------------------------------------------------------------------------
-- reductions: t:sum() over everything (a 0-dim tensor), t:sum(d) over dimension d;
-- keepdim keeps the reduced dimension with size 1.

local function reduction(op)
  return function(t, dim, keepdim)
    if dim == nil then return make(C.fv_reduce, op, t.p, 0, 0, 1, 1) end
    return make(C.fv_reduce, op, t.p, cdim(t, dim), keepdim and 1 or 0, 0, 1)
  end
end
Tensor.sum = reduction(C.FV_OP_SUM)
Tensor.mean = reduction(C.FV_OP_MEAN)
Tensor.argmax = reduction(C.FV_OP_ARGMAX)
Tensor.argmin = reduction(C.FV_OP_ARGMIN)

-- t:max() is the largest value (0-dim tensor); t:max(d) gives values and 1-based indices.
local function extremum(op)
  return function(t, dim, keepdim)
    if dim == nil then return make(C.fv_reduce, op, t.p, 0, 0, 1, 1) end
    check(C.fv_max_dim(out1, out2, op, t.p, cdim(t, dim), keepdim and 1 or 0, 1))
    local values, indices = out1[0], out2[0]
    return wrap(values), wrap(indices)
  end
end
Tensor.max = extremum(C.FV_OP_MAX)
Tensor.min = extremum(C.FV_OP_MIN)

-- t:var(dim, {unbiased = true, keepdim = false}); t:var() over everything.
function Tensor.var(t, dim, opts)
  if type(dim) == 'table' then dim, opts = nil, dim end
  opts = opts or {}
  local unbiased = opts.unbiased == nil or opts.unbiased
  if dim == nil then return make(C.fv_var, t.p, 0, 0, 1, unbiased and 1 or 0) end
  return make(C.fv_var, t.p, cdim(t, dim), opts.keepdim and 1 or 0, 0, unbiased and 1 or 0)
end

function Tensor.std(t, dim, opts) return Tensor.sqrt(Tensor.var(t, dim, opts)) end

function Tensor.matmul(a, b) return make(C.fv_matmul, a.p, b.p) end
fv.matmul = Tensor.matmul

---------------------------------------------------------------------------------------
-- the metatype

local format = require 'fovea.format'
local mt = {
  __gc = function(t)
    if t.p ~= nil then C.fv_tensor_release(t.p) end
  end,
  __index = function(t, k)
    local m = Tensor[k]
    if m then return m end
    if type(k) == 'number' then
      if t.p.ndim == 1 then return Tensor.get(t, k) end
      return Tensor.select(t, 1, k)
    end
    local p = properties[k]
    if p then return p(t) end
    return nil
  end,
  __newindex = function(t, k, v)
    if type(k) == 'number' then
      if t.p.ndim == 1 and type(v) == 'number' then return Tensor.set(t, v, k) end
      local row = Tensor.select(t, 1, k)
      if type(v) == 'number' then Tensor.fill_(row, v) else Tensor.copy_(row, v) end
      return
    end
    local s = setters[k]
    if not s then raise('fovea: tensors have no settable field ' .. tostring(k)) end
    s(t, v)
  end,
  __add = function(a, b) return binary(C.FV_OP_ADD, a, b) end,
  __sub = function(a, b) return binary(C.FV_OP_SUB, a, b) end,
  __mul = function(a, b) return binary(C.FV_OP_MUL, a, b) end,
  __div = function(a, b) return binary(C.FV_OP_DIV, a, b) end,
  __pow = function(a, b) return binary(C.FV_OP_POW, a, b) end,
  __unm = function(a) return make(C.fv_unary, C.FV_OP_NEG, a.p) end,
  __len = function(t) return t.p.ndim > 0 and tonumber(t.p.sizes[0]) or 0 end,
  __tostring = function(t) return format.tensor(t) end,
}
ffi.metatype(Handle, mt)

fv.Tensor = Tensor
fv.cdim = cdim
fv.make = make
return fv
