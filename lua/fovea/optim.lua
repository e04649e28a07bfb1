--[[ optim.lua: optimizers and learning-rate schedules.

  local optim = require 'fovea.optim'
  local opt = optim.AdamW(model, {lr = 1e-3})          -- or a Lua array of tensors
  local sched = optim.CosineAnnealingLR(opt, {T_max = epochs})
  for epoch = 1, epochs do
    for batch in batches do
      opt:zero_grad(); loss(batch):backward(); opt:step()
    end
    sched:step()
  end

The algorithms are PyTorch's torch.optim ones (maximize = false, one parameter group);
the update runs in C (core/optim.c, fovea_optim.h) over all parameters in one call, one
fused pass per tensor. Parameters are CPU float32 or float64 tensors, contiguous; a
parameter whose gradient is nil is skipped (its state is neither created nor advanced).

Optimizers: optim.X(params, opts). params: a Lua array of tensors, or a table with a
:parameters() method returning one (an nn module). Unknown option names are errors.

  optim.Adam(params, opts)     Adam (Kingma and Ba), L2 penalty added to the gradient
    lr            1e-3          learning rate, >= 0
    betas         {0.9, 0.999}  running-average coefficients, each in [0, 1)
    eps           1e-8          added to the denominator, >= 0
    weight_decay  0             L2 penalty: grad + weight_decay * param
    amsgrad       false         use the maximum of the second moments (AMSGrad)
  optim.AdamW(params, opts)    Adam with decoupled weight decay (Loshchilov and Hutter):
                                param * (1 - lr * weight_decay) before the Adam update;
                                the same options, with weight_decay 1e-2 by default
  optim.SGD(params, opts)      stochastic gradient descent
    lr            (required)    learning rate, >= 0
    momentum      0             momentum factor, >= 0
    dampening     0             dampening of the momentum: b = m * b + (1 - dampening) * g
    weight_decay  0             L2 penalty: grad + weight_decay * param
    nesterov      false         Nesterov momentum (needs momentum > 0, dampening 0)

  opt:step()                   one update of every parameter that has a gradient
  opt:zero_grad(set_to_none)   drops the gradients (set_to_none, the default: true, as
                               PyTorch), or fills them with zeros (false)
  opt.lr, opt.betas, opt.eps, opt.weight_decay, opt.amsgrad, opt.momentum, ...
                               the hyper-parameters, readable and writable between steps
  opt.params, opt.state        the parameter list; state[i] for parameter i once stepped:
                               Adam: step (number), exp_avg, exp_avg_sq, max_exp_avg_sq
                               (amsgrad); SGD: momentum_buffer (when momentum ~= 0)
  opt:state_dict()             { state = { [i] = {...} }, param_groups = { { lr = ...,
                               <hyper-parameters>, params = {1, ..., n} } } } holding
                               copies of the state tensors (a snapshot)
  opt:load_state_dict(sd)      checks sd against the parameters (errors name the
                               parameter index), then copies its state (cast to each
                               parameter's dtype) and hyper-parameters in

Schedules: set opt.lr from the epoch count; call sched:step() once per epoch, after the
epoch's opt:step() calls. Created with last_epoch = -1 (the default), a schedule records
opt.initial_lr (when not yet set) and sets opt.lr to it (epoch 0).
  optim.StepLR(opt, opts)      lr = initial_lr * gamma ^ floor(epoch / step_size)
    step_size     (required)    epochs per decay, an integer >= 1
    gamma         0.1           decay factor
    last_epoch    -1            the epoch to resume after (needs opt.initial_lr)
  optim.CosineAnnealingLR(opt, opts)
                               lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2
    T_max         (required)    half period in epochs, > 0
    eta_min       0             the lowest learning rate
    last_epoch    -1            as for StepLR
  sched:step([epoch])          advances one epoch (or jumps to epoch) and sets opt.lr
  sched:get_lr()               the schedule's lr at the current epoch (closed form)
  sched:get_last_lr()          the lr the last step set
  sched.last_epoch             the current epoch (0 after creation)
  sched:state_dict(), sched:load_state_dict(sd)   the schedule's own fields; as in
                               PyTorch, loading does not change opt.lr (load the
                               optimizer's state_dict too)

Gradient clipping:
  optim.clip_grad_norm(params, max_norm, norm_type)  (alias clip_grad_norm_)
                               scales the gradients in place so that their total norm
                               (norm_type: 2 by default, any number > 0, or math.huge /
                               'inf') is at most max_norm, as torch.nn.utils.clip_grad_norm_;
                               returns the total norm before clipping
]]
local ffi = require 'ffi'
local clib = require 'fovea.clib'
local tensor = require 'fovea.tensor'
local same_shape = require('fovea.nn.util').same_shape

local C, raise = clib.C, clib.raise
local is_tensor, wrap = tensor.is_tensor, tensor.wrap

local optim = {}

local PtrArray = ffi.typeof('fv_tensor*[?]')
local out1 = ffi.new('fv_tensor*[1]')
local FLOAT32, FLOAT64 = tonumber(C.FV_FLOAT32), tonumber(C.FV_FLOAT64)

---------------------------------------------------------------------------------------
-- helpers

local function shape_text(t)
  local dims = {}
  for d = 1, t.p.ndim do dims[d] = tostring(tonumber(t.p.sizes[d - 1])) end
  return #dims > 0 and table.concat(dims, 'x') or 'scalar'
end


-- A new tensor of zeros with p's shape, dtype and device.
local function zeros_like(p)
  clib.check(C.fv_zeros(out1, p.p.ndim, p.p.sizes, p.p.scalar_type, p.p.device_type))
  return wrap(out1[0])
end

-- A copy of t (contiguous) with like's dtype, on like's device.
local function copy_as(t, like)
  if t.p.scalar_type == like.p.scalar_type then
    clib.check(C.fv_clone(out1, t.p))
  else
    clib.check(C.fv_to_dtype(out1, t.p, like.p.scalar_type))
  end
  if out1[0].device_type ~= like.p.device_type then -- a checkpoint read on the cpu, a model on the GPU
    local on_host = wrap(out1[0])
    clib.check(C.fv_to_device(out1, on_host.p, like.p.device_type))
    on_host:free()
  end
  return wrap(out1[0])
end

-- Raises the C error for a failed status, with the 0-based "parameter K" of the call's
-- arrays turned into the optimizer's 1-based index (index_of[K + 1], or K + 1).
local function check_call(status, index_of)
  if status == 0 then return end
  local msg = ffi.string(C.fv_last_error())
  msg = msg:gsub('parameter (%d+)', function(k)
    local i = tonumber(k) + 1
    return 'parameter ' .. tostring(index_of and index_of[i] or i)
  end) -- every index the message names (a mixed-device error names two)
  raise('fovea: ' .. msg)
end

-- The Lua array of tensors in params (an array, or an object with :parameters()).
local function read_params(params, who, any_layout)
  if type(params) == 'table' and not is_tensor(params) and type(params.parameters) == 'function' then
    params = params:parameters()
  end
  if type(params) ~= 'table' then
    raise(('fovea: %s: params must be a Lua array of tensors or an object with :parameters(), got %s')
      :format(who, is_tensor(params) and 'a tensor (wrap it in a table: {t})' or type(params)))
  end
  local list, seen = {}, {}
  local n = #params
  if n == 0 then raise('fovea: ' .. who .. ': got an empty parameter list') end
  for i = 1, n do
    local p = params[i]
    if not is_tensor(p) then
      raise(('fovea: %s: parameter %d is a %s, expected a tensor'):format(who, i, type(p)))
    end
    local dt = tonumber(p.p.scalar_type)
    if dt ~= FLOAT32 and dt ~= FLOAT64 then
      raise(('fovea: %s: parameter %d (%s) is %s; parameters must be float32 or float64')
        :format(who, i, shape_text(p), p:dtype()))
    end
    if not any_layout and C.fv_tensor_is_contiguous(p.p) ~= 1 then
      raise(('fovea: %s: parameter %d (%s) is not contiguous (use :contiguous() before training)')
        :format(who, i, shape_text(p)))
    end
    local key = tostring(ffi.cast('uintptr_t', p.p))
    if seen[key] then
      raise(('fovea: %s: parameter %d is the same tensor as parameter %d'):format(who, i, seen[key]))
    end
    seen[key] = i
    list[i] = p
  end
  return list
end

local function check_number(who, name, v, ok, what)
  if type(v) ~= 'number' or v ~= v or not ok(v) then
    raise(('fovea: %s: invalid %s %s (%s)'):format(who, name, tostring(v), what))
  end
end

local function check_bool(who, name, v)
  if type(v) ~= 'boolean' then
    raise(('fovea: %s: %s must be true or false, got %s'):format(who, name, tostring(v)))
  end
end

local function nonneg(v) return v >= 0 end
local function unit(v) return v >= 0 and v < 1 end

-- opts merged over defaults; unknown names are errors.
local function read_opts(who, opts, defaults)
  if opts ~= nil and type(opts) ~= 'table' then raise('fovea: ' .. who .. ': options must be a table') end
  local out = {}
  for k, v in pairs(defaults) do out[k] = v end
  for k, v in pairs(opts or {}) do
    if defaults[k] == nil then
      local names = {}
      for name in pairs(defaults) do names[#names + 1] = name end
      table.sort(names)
      raise(('fovea: %s: unknown option %s (options: %s)'):format(who, tostring(k), table.concat(names, ', ')))
    end
    out[k] = v
  end
  return out
end

---------------------------------------------------------------------------------------
-- the shared optimizer methods

local Optimizer = {}

-- Cached pointer arrays for the C call: params and state tensors by position. Filled
-- again only when marked dirty (a new parameter state, load_state_dict). anchor keeps
-- every tensor the arrays point to alive.
function Optimizer._arrays(self)
  local a = self._cache
  if a and not self._dirty then return a end
  local n = #self.params
  if not a or a.n ~= n then
    a = { n = n }
    for _, name in ipairs(self._state_names) do a[name] = PtrArray(n) end
    a.params = PtrArray(n)
  end
  local anchor = {}
  for i = 1, n do
    local p = self.params[i]
    a.params[i - 1] = p.p
    anchor[#anchor + 1] = p
    local s = self.state[i]
    for _, name in ipairs(self._state_names) do
      local t = s and s[name]
      a[name][i - 1] = t and t.p or nil
      if t then anchor[#anchor + 1] = t end
    end
  end
  a.anchor = anchor
  self._cache = a
  self._dirty = false
  return a
end

-- Temporary arrays for the parameters at positions idx (an array of indices).
function Optimizer._subset(self, idx)
  local n = #idx
  local a = { n = n, params = PtrArray(n), index_of = idx }
  for _, name in ipairs(self._state_names) do a[name] = PtrArray(n) end
  for j = 1, n do
    local i = idx[j]
    a.params[j - 1] = self.params[i].p
    local s = self.state[i]
    for _, name in ipairs(self._state_names) do
      local t = s and s[name]
      a[name][j - 1] = t and t.p or nil
    end
  end
  return a
end

function Optimizer.zero_grad(self, set_to_none)
  if set_to_none == nil then set_to_none = true end
  for _, p in ipairs(self.params) do
    local g = p.p.gradient
    if g ~= nil then
      if set_to_none then
        clib.check(C.fv_tensor_set_grad(p.p, nil))
      else
        clib.check(C.fv_fill_(g, 0))
      end
    end
  end
end

-- The hyper-parameters as a param_groups entry, with params = {1, ..., n}.
function Optimizer._group(self)
  local g = {}
  for _, name in ipairs(self._hyper_names) do
    local v = self[name]
    if type(v) == 'table' then
      local c = {}
      for k, x in pairs(v) do c[k] = x end
      v = c
    end
    g[name] = v
  end
  g.initial_lr = self.initial_lr
  local idx = {}
  for i = 1, #self.params do idx[i] = i end
  g.params = idx
  return g
end

function Optimizer.state_dict(self)
  local state = {}
  for i, s in pairs(self.state) do
    local c = {}
    for k, v in pairs(s) do c[k] = is_tensor(v) and v:clone() or v end
    state[i] = c
  end
  return { state = state, param_groups = { self:_group() } }
end

function Optimizer.load_state_dict(self, sd)
  local who = self._name .. ':load_state_dict'
  if type(sd) ~= 'table' or type(sd.state) ~= 'table' or type(sd.param_groups) ~= 'table' then
    raise('fovea: ' .. who .. ': expected a table with fields state and param_groups')
  end
  local groups = sd.param_groups
  if #groups ~= 1 or type(groups[1]) ~= 'table' then
    raise(('fovea: %s: the state dict has %d parameter groups; this optimizer has 1'):format(who, #groups))
  end
  local group = groups[1]
  local n = #self.params
  local count = type(group.params) == 'table' and #group.params or nil
  if count ~= n then
    raise(('fovea: %s: the state dict is for %s parameters; this optimizer has %d')
      :format(who, tostring(count), n))
  end
  -- hyper-parameters: checked on a copy of self
  local hyper = {}
  for _, name in ipairs(self._hyper_names) do
    local v = group[name]
    if v == nil then v = self[name] end
    if type(v) == 'table' then
      local c = {}
      for k, x in pairs(v) do c[k] = x end
      v = c
    end
    hyper[name] = v
  end
  self._check_hyper(who, hyper)
  if group.initial_lr ~= nil then check_number(who, 'initial_lr', group.initial_lr, nonneg, 'must be >= 0') end
  -- state: checked and copied before anything of self changes
  local state = {}
  for i, s in pairs(sd.state) do
    if type(i) ~= 'number' or i ~= math.floor(i) or i < 1 or i > n then
      raise(('fovea: %s: state for parameter %s, but there are %d parameters'):format(who, tostring(i), n))
    end
    if type(s) ~= 'table' then raise(('fovea: %s: state of parameter %d is not a table'):format(who, i)) end
    local p = self.params[i]
    local c = {}
    for k, v in pairs(s) do
      local kind = self._state_kinds[k]
      if not kind then
        raise(('fovea: %s: state of parameter %d has an unknown entry %s'):format(who, i, tostring(k)))
      end
      if kind == 'tensor' then
        if not is_tensor(v) then
          raise(('fovea: %s: state %s of parameter %d is a %s, expected a tensor'):format(who, k, i, type(v)))
        end
        if not same_shape(v, p) then
          raise(('fovea: %s: state %s of parameter %d has shape %s but the parameter has shape %s')
            :format(who, k, i, shape_text(v), shape_text(p)))
        end
        local dt = tonumber(v.p.scalar_type)
        if dt ~= FLOAT32 and dt ~= FLOAT64 then
          raise(('fovea: %s: state %s of parameter %d is %s, expected float32 or float64'):format(who, k, i, v:dtype()))
        end
        c[k] = copy_as(v, p)
      else
        if type(v) ~= 'number' or v < 0 or v ~= math.floor(v) then
          raise(('fovea: %s: state %s of parameter %d is %s, expected an integer >= 0'):format(who, k, i, tostring(v)))
        end
        c[k] = v
      end
    end
    self._check_state(who, i, c, hyper)
    state[i] = c
  end
  for name, v in pairs(hyper) do self[name] = v end
  if group.initial_lr ~= nil then self.initial_lr = group.initial_lr end
  self.state = state
  self._dirty = true
end

local function optimizer_class(name)
  local class = {}
  for k, v in pairs(Optimizer) do class[k] = v end
  class.__index = class
  class.__tostring = function(self)
    local parts = {}
    for _, h in ipairs(self._hyper_names) do
      local v = self[h]
      if type(v) == 'table' then v = '{' .. table.concat(v, ', ') .. '}' end
      parts[#parts + 1] = h .. ' = ' .. tostring(v)
    end
    return ('fovea.%s(%d parameters; %s)'):format(self._name, #self.params, table.concat(parts, ', '))
  end
  return class
end

---------------------------------------------------------------------------------------
-- Adam and AdamW

local Adam = optimizer_class('Adam')
Adam._state_names = { 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq' }
Adam._state_kinds = { step = 'number', exp_avg = 'tensor', exp_avg_sq = 'tensor', max_exp_avg_sq = 'tensor' }
Adam._hyper_names = { 'lr', 'betas', 'eps', 'weight_decay', 'amsgrad' }

function Adam._check_hyper(who, h)
  check_number(who, 'learning rate', h.lr, nonneg, 'must be >= 0')
  check_number(who, 'eps', h.eps, nonneg, 'must be >= 0')
  check_number(who, 'weight_decay', h.weight_decay, nonneg, 'must be >= 0')
  if type(h.betas) ~= 'table' or #h.betas ~= 2 then
    raise('fovea: ' .. who .. ': betas must be a pair {beta1, beta2}, got ' .. tostring(h.betas))
  end
  check_number(who, 'beta1', h.betas[1], unit, 'must be in [0, 1)')
  check_number(who, 'beta2', h.betas[2], unit, 'must be in [0, 1)')
  check_bool(who, 'amsgrad', h.amsgrad)
end

function Adam._check_state(who, i, s, h)
  for _, k in ipairs { 'step', 'exp_avg', 'exp_avg_sq' } do
    if s[k] == nil then raise(('fovea: %s: state of parameter %d lacks %s'):format(who, i, k)) end
  end
  if h.amsgrad and s.max_exp_avg_sq == nil then
    raise(('fovea: %s: amsgrad is on but the state of parameter %d lacks max_exp_avg_sq'):format(who, i))
  end
end

local function make_adam(name, decoupled, default_wd)
  return function(params, opts)
    local who = 'optim.' .. name
    local o = read_opts(who, opts, { lr = 1e-3, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = default_wd,
                                     amsgrad = false })
    local self = setmetatable({ _name = who, params = read_params(params, who), state = {}, _dirty = true,
                                decoupled = decoupled }, Adam)
    self.lr, self.eps, self.weight_decay, self.amsgrad = o.lr, o.eps, o.weight_decay, o.amsgrad
    self.betas = o.betas
    if type(o.betas) == 'table' then self.betas = { unpack(o.betas) } end
    Adam._check_hyper(who, self)
    return self
  end
end

optim.Adam = make_adam('Adam', false, 0)
optim.AdamW = make_adam('AdamW', true, 1e-2)

function Adam.step(self)
  local who = self._name .. ':step'
  Adam._check_hyper(who, self)
  local params, state = self.params, self.state
  local amsgrad = self.amsgrad
  local created
  local t_common, mixed = nil, false
  for i = 1, #params do
    local p = params[i]
    if p.p.gradient ~= nil then
      local s = state[i]
      if not s then
        s = { step = 0, exp_avg = zeros_like(p), exp_avg_sq = zeros_like(p) }
        state[i] = s
        created = created or {}
        created[#created + 1] = i
        self._dirty = true
      end
      if amsgrad and not s.max_exp_avg_sq then
        s.max_exp_avg_sq = zeros_like(p)
        self._dirty = true
      end
      local t = s.step + 1
      if t_common == nil then t_common = t elseif t ~= t_common then mixed = true end
    end
  end
  if t_common == nil then return end
  local b1, b2 = self.betas[1], self.betas[2]
  local dec, ams = self.decoupled and 1 or 0, amsgrad and 1 or 0

  local function run(a, t)
    local status = C.fv_adam_step(a.n, a.params, a.exp_avg, a.exp_avg_sq, a.max_exp_avg_sq, t, self.lr, b1, b2,
                                  self.eps, self.weight_decay, dec, ams)
    if status ~= 0 and created then
      for _, i in ipairs(created) do state[i] = nil end
      self._dirty = true
    end
    check_call(status, a.index_of)
  end

  if not mixed then
    run(self:_arrays(), t_common)
    for i = 1, #params do
      if params[i].p.gradient ~= nil then state[i].step = t_common end
    end
  else
    -- parameters whose step counts differ (some were skipped earlier): one call per count
    local by_step, order = {}, {}
    for i = 1, #params do
      if params[i].p.gradient ~= nil then
        local t = state[i].step + 1
        if not by_step[t] then by_step[t] = {}; order[#order + 1] = t end
        table.insert(by_step[t], i)
      end
    end
    table.sort(order)
    for _, t in ipairs(order) do
      run(self:_subset(by_step[t]), t)
      for _, i in ipairs(by_step[t]) do state[i].step = t end
      created = nil
    end
  end
end

---------------------------------------------------------------------------------------
-- SGD

local SGD = optimizer_class('SGD')
SGD._state_names = { 'momentum_buffer' }
SGD._state_kinds = { momentum_buffer = 'tensor' }
SGD._hyper_names = { 'lr', 'momentum', 'dampening', 'weight_decay', 'nesterov' }

function SGD._check_hyper(who, h)
  if not h.lr then raise('fovea: ' .. who .. ': the learning rate lr is required') end
  check_number(who, 'learning rate', h.lr, nonneg, 'must be >= 0')
  check_number(who, 'momentum', h.momentum, nonneg, 'must be >= 0')
  check_number(who, 'dampening', h.dampening, function() return true end, 'must be a number')
  check_number(who, 'weight_decay', h.weight_decay, nonneg, 'must be >= 0')
  check_bool(who, 'nesterov', h.nesterov)
  if h.nesterov and (h.momentum <= 0 or h.dampening ~= 0) then
    raise(('fovea: %s: nesterov momentum needs momentum > 0 and dampening 0 (got %s and %s)')
      :format(who, tostring(h.momentum), tostring(h.dampening)))
  end
end

function SGD._check_state() end

function optim.SGD(params, opts)
  local who = 'optim.SGD'
  local o = read_opts(who, opts, { lr = false, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false })
  local self = setmetatable({ _name = who, params = read_params(params, who), state = {}, _dirty = true }, SGD)
  self.lr, self.momentum, self.dampening, self.weight_decay, self.nesterov =
    o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov
  SGD._check_hyper(who, self)
  return self
end

function SGD.step(self)
  local who = self._name .. ':step'
  SGD._check_hyper(who, self)
  local params, state = self.params, self.state
  local momentum = self.momentum
  local lr, damp, wd, nest = self.lr, self.dampening, self.weight_decay, self.nesterov and 1 or 0
  if momentum == 0 then
    local a = self:_arrays()
    check_call(C.fv_sgd_step(a.n, a.params, a.momentum_buffer, lr, 0, damp, wd, nest, 0))
    return
  end
  -- momentum buffers: new ones start as the gradient (first_step), old ones update
  local new, old = {}, {}
  for i = 1, #params do
    local p = params[i]
    if p.p.gradient ~= nil then
      local s = state[i]
      if s and s.momentum_buffer then old[#old + 1] = i else new[#new + 1] = i end
    end
  end
  if #new == 0 and #old == 0 then return end
  for _, i in ipairs(new) do
    state[i] = state[i] or {}
    state[i].momentum_buffer = zeros_like(params[i])
  end
  if #new > 0 then self._dirty = true end
  local function run(a, first)
    local status = C.fv_sgd_step(a.n, a.params, a.momentum_buffer, lr, momentum, damp, wd, nest, first)
    if status ~= 0 then
      for _, i in ipairs(new) do state[i] = nil end
      self._dirty = true
    end
    check_call(status, a.index_of)
  end
  if #old == 0 then
    run(self:_arrays(), 1)
  elseif #new == 0 then
    run(self:_arrays(), 0)
  else
    run(self:_subset(old), 0)
    run(self:_subset(new), 1)
  end
end

---------------------------------------------------------------------------------------
-- gradient clipping

function optim.clip_grad_norm(params, max_norm, norm_type)
  local who = 'optim.clip_grad_norm'
  if is_tensor(params) then params = { params } end
  local list = read_params(params, who, true)
  check_number(who, 'max_norm', max_norm, function() return true end, 'must be a number')
  if norm_type == nil then norm_type = 2 end
  if norm_type == 'inf' then norm_type = math.huge end
  check_number(who, 'norm_type', norm_type, function(v) return v > 0 end, 'a number > 0, or math.huge')
  local n = #list
  local ptrs = PtrArray(n)
  for i = 1, n do ptrs[i - 1] = list[i].p end
  local total = ffi.new('double[1]')
  check_call(C.fv_clip_grad_norm(n, ptrs, max_norm, norm_type, total))
  return total[0]
end
optim.clip_grad_norm_ = optim.clip_grad_norm

---------------------------------------------------------------------------------------
-- learning-rate schedules

local function scheduler_class(name, closed_form, fields)
  local class = { _fields = fields, _closed_form = closed_form }
  class.__index = class
  class.__tostring = function(self)
    return ('fovea.optim.%s(epoch %d, lr %g)'):format(name, self.last_epoch, self:get_last_lr())
  end

  function class.get_lr(self) return self:_closed_form(self.last_epoch) end
  function class.get_last_lr(self) return self._last_lr end

  function class.step(self, epoch)
    if epoch ~= nil then
      if type(epoch) ~= 'number' or epoch ~= math.floor(epoch) then
        raise('fovea: ' .. self._name .. ':step: epoch must be an integer, got ' .. tostring(epoch))
      end
      self.last_epoch = epoch
    else
      self.last_epoch = self.last_epoch + 1
    end
    local lr = self:_closed_form(self.last_epoch)
    self.optimizer.lr = lr
    self._last_lr = lr
    return lr
  end

  function class.state_dict(self)
    local sd = { last_epoch = self.last_epoch, base_lr = self.base_lr, base_lrs = { self.base_lr },
                 last_lr = self._last_lr }
    for _, f in ipairs(fields) do sd[f] = self[f] end
    return sd
  end

  function class.load_state_dict(self, sd)
    local who = self._name .. ':load_state_dict'
    if type(sd) ~= 'table' then raise('fovea: ' .. who .. ': expected a table') end
    local base = sd.base_lr
    if base == nil and type(sd.base_lrs) == 'table' then base = sd.base_lrs[1] end
    check_number(who, 'base_lr', base, nonneg, 'must be >= 0')
    check_number(who, 'last_epoch', sd.last_epoch, function(v) return v == math.floor(v) and v >= -1 end,
                 'must be an integer >= -1')
    local copy = { _name = self._name }
    for _, f in ipairs(fields) do copy[f] = sd[f] == nil and self[f] or sd[f] end
    class._check(who, copy)
    for _, f in ipairs(fields) do self[f] = copy[f] end
    self.base_lr = base
    self.last_epoch = sd.last_epoch
    self._last_lr = sd.last_lr or self:_closed_form(self.last_epoch)
  end

  return class
end

-- Common construction: records initial_lr as PyTorch's LRScheduler does, then steps
-- once to epoch last_epoch + 1 (0 for a new schedule).
local function new_scheduler(class, name, opt, opts, defaults)
  local who = 'optim.' .. name
  if type(opt) ~= 'table' or opt.params == nil or opt.lr == nil then
    raise('fovea: ' .. who .. ': the first argument must be an optimizer from fovea.optim')
  end
  local o = read_opts(who, opts, defaults)
  local self = setmetatable({ _name = who, optimizer = opt }, class)
  for _, f in ipairs(class._fields) do self[f] = o[f] end
  class._check(who, self)
  local last_epoch = o.last_epoch
  check_number(who, 'last_epoch', last_epoch, function(v) return v == math.floor(v) and v >= -1 end,
               'must be an integer >= -1')
  if last_epoch == -1 then
    if opt.initial_lr == nil then opt.initial_lr = opt.lr end
  elseif opt.initial_lr == nil then
    raise('fovea: ' .. who .. ': resuming at last_epoch ' .. last_epoch .. ' needs opt.initial_lr (load the '
      .. 'optimizer\'s state_dict first, or set it)')
  end
  self.base_lr = opt.initial_lr
  self.last_epoch = last_epoch
  self:step()
  return self
end

local StepLR = scheduler_class('StepLR', function(self, epoch)
  return self.base_lr * self.gamma ^ math.floor(epoch / self.step_size)
end, { 'step_size', 'gamma' })

function StepLR._check(who, s)
  if not s.step_size then raise('fovea: ' .. who .. ': step_size is required') end
  check_number(who, 'step_size', s.step_size, function(v) return v >= 1 and v == math.floor(v) end,
               'must be an integer >= 1')
  check_number(who, 'gamma', s.gamma, function() return true end, 'must be a number')
end

function optim.StepLR(opt, opts)
  return new_scheduler(StepLR, 'StepLR', opt, opts, { step_size = false, gamma = 0.1, last_epoch = -1 })
end

local CosineAnnealingLR = scheduler_class('CosineAnnealingLR', function(self, epoch)
  return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
end, { 'T_max', 'eta_min' })

function CosineAnnealingLR._check(who, s)
  if not s.T_max then raise('fovea: ' .. who .. ': T_max is required') end
  check_number(who, 'T_max', s.T_max, function(v) return v > 0 end, 'must be > 0')
  check_number(who, 'eta_min', s.eta_min, function() return true end, 'must be a number')
end

function optim.CosineAnnealingLR(opt, opts)
  return new_scheduler(CosineAnnealingLR, 'CosineAnnealingLR', opt, opts,
                       { T_max = false, eta_min = 0, last_epoch = -1 })
end

return optim
