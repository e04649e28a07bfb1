-- optim_spec.lua: fovea.optim (Adam, AdamW, SGD, clip_grad_norm, StepLR,
-- CosineAnnealingLR) against PyTorch's formulas written out in plain Lua below, and
-- against trajectories recorded from PyTorch itself (spec/fixtures/optim/, made by
-- tools/make_optim_fixture.py).
local fv = require 'fovea'
local optim = require 'fovea.optim'
local ffi = require 'ffi'

local C = fv.C

-- p.grad = g (g may be nil), through the C setter when the Lua one is missing.
local function set_grad(p, g)
  local ok = pcall(function() p.grad = g end)
  if not ok then assert(C.fv_tensor_set_grad(p.p, g and g.p or nil) == 0, ffi.string(C.fv_last_error())) end
end

local function flat(t) return t:contiguous():reshape(-1):totable() end

local function tensor_of(values, shape, dtype)
  return fv.tensor(values, { dtype = dtype or 'float64' }):view(shape)
end

local function copy_list(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = type(v) == 'table' and copy_list(v) or v end
  return out
end

-- |got - want| <= tol * max(1, |want|) for every element, with a message naming it.
local function assert_close(want, got, tol, what)
  assert.are.equal(#want, #got, what .. ': lengths differ')
  for i = 1, #want do
    local w, g = want[i], got[i]
    if not (math.abs(g - w) <= tol * math.max(1, math.abs(w))) then
      error(('%s: element %d is %.17g, expected %.17g (difference %.3g, tolerance %.3g)'):format(
        what, i, g, w, math.abs(g - w), tol), 2)
    end
  end
end

local SHAPES = { { 2, 3 }, { 4 }, { 1 } }
local INIT = {
  { 0.5, -1.25, 2.0, 0.0, 3.5, -0.75 },
  { 1.0, -2.0, 0.25, 4.0 },
  { -0.3 },
}

-- Gradients for step k, parameter j: varied signs and sizes (false: no gradient).
local function make_grads(steps, skip)
  local grads = {}
  for k = 1, steps do
    grads[k] = {}
    for j = 1, #INIT do
      if skip and skip[k .. ',' .. j] then
        grads[k][j] = false
      else
        local g = {}
        for e = 1, #INIT[j] do
          g[e] = math.sin(1.3 * k + j + 0.7 * e) * (1 + 0.5 * e) * (k % 3 == 0 and 4 or 1)
        end
        grads[k][j] = g
      end
    end
  end
  return grads
end

local function make_params(dtype)
  local ps = {}
  for j = 1, #INIT do ps[j] = tensor_of(INIT[j], SHAPES[j], dtype) end
  return ps
end

-- Runs opt over grads; returns the parameters' values after each step.
local function run(opt, params, grads, dtype)
  local traj = {}
  for k = 1, #grads do
    for j = 1, #params do
      set_grad(params[j], grads[k][j] and tensor_of(grads[k][j], SHAPES[j], dtype) or nil)
    end
    opt:step()
    traj[k] = {}
    for j = 1, #params do traj[k][j] = flat(params[j]) end
  end
  return traj
end

---------------------------------------------------------------------------------------
-- PyTorch's algorithms, straight from the torch.optim documentation, in plain Lua

local function ref_adam(grads, o, decoupled)
  local lr, b1, b2 = o.lr or 1e-3, (o.betas or { 0.9, 0.999 })[1], (o.betas or { 0.9, 0.999 })[2]
  local eps = o.eps or 1e-8
  local wd = o.weight_decay or (decoupled and 1e-2 or 0)
  local P, M, V, X, S = copy_list(INIT), {}, {}, {}, {}
  local traj = {}
  for k = 1, #grads do
    for j = 1, #P do
      local g = grads[k][j]
      if g then
        if not S[j] then
          S[j], M[j], V[j], X[j] = 0, {}, {}, {}
          for e = 1, #P[j] do M[j][e], V[j][e], X[j][e] = 0, 0, 0 end
        end
        S[j] = S[j] + 1
        local t = S[j]
        local bc1, bc2 = 1 - b1 ^ t, 1 - b2 ^ t
        for e = 1, #P[j] do
          local p, gi = P[j][e], g[e]
          if decoupled then p = p * (1 - lr * wd) elseif wd ~= 0 then gi = gi + wd * p end
          M[j][e] = b1 * M[j][e] + (1 - b1) * gi
          V[j][e] = b2 * V[j][e] + (1 - b2) * gi * gi
          local v = V[j][e]
          if o.amsgrad then
            X[j][e] = math.max(X[j][e], v)
            v = X[j][e]
          end
          P[j][e] = p - lr / bc1 * M[j][e] / (math.sqrt(v) / math.sqrt(bc2) + eps)
        end
      end
    end
    traj[k] = copy_list(P)
  end
  return traj, { step = S, exp_avg = M, exp_avg_sq = V, max_exp_avg_sq = X }
end

local function ref_sgd(grads, o)
  local lr, mom, damp, wd = o.lr, o.momentum or 0, o.dampening or 0, o.weight_decay or 0
  local P, B = copy_list(INIT), {}
  local traj = {}
  for k = 1, #grads do
    for j = 1, #P do
      local g = grads[k][j]
      if g then
        local first = B[j] == nil
        B[j] = B[j] or {}
        for e = 1, #P[j] do
          local d = g[e]
          if wd ~= 0 then d = d + wd * P[j][e] end
          if mom ~= 0 then
            B[j][e] = first and d or mom * B[j][e] + (1 - damp) * d
            d = o.nesterov and d + mom * B[j][e] or B[j][e]
          end
          P[j][e] = P[j][e] - lr * d
        end
      end
    end
    traj[k] = copy_list(P)
  end
  return traj, B
end

local function compare(ref, got, tol, what)
  for k = 1, #ref do
    for j = 1, #ref[k] do assert_close(ref[k][j], got[k][j], tol, ('%s, step %d, parameter %d'):format(what, k, j)) end
  end
end

---------------------------------------------------------------------------------------

describe('optim against PyTorch\'s formulas', function()
  local adam_cases = {
    { 'Adam', { lr = 0.1 } },
    { 'Adam', { lr = 0.05, betas = { 0.8, 0.95 }, eps = 1e-6, weight_decay = 0.1 } },
    { 'Adam', { lr = 0.1, amsgrad = true } },
    { 'Adam', { lr = 0.1, weight_decay = 0.2, amsgrad = true } },
    { 'AdamW', { lr = 0.1 } },
    { 'AdamW', { lr = 0.05, weight_decay = 0.3, amsgrad = true } },
  }
  local sgd_cases = {
    { lr = 0.1 },
    { lr = 0.1, weight_decay = 0.2 },
    { lr = 0.05, momentum = 0.9 },
    { lr = 0.05, momentum = 0.9, dampening = 0.4, weight_decay = 0.1 },
    { lr = 0.05, momentum = 0.8, nesterov = true },
    { lr = 0.05, momentum = 0.8, nesterov = true, weight_decay = 0.3 },
  }

  local function describe_opts(o)
    local keys = {}
    for k, v in pairs(o) do keys[#keys + 1] = k .. '=' .. (type(v) == 'table' and table.concat(v, '/') or tostring(v)) end
    table.sort(keys)
    return table.concat(keys, ' ')
  end

  for _, dtype in ipairs { 'float64', 'float32' } do
    local tol = dtype == 'float64' and 1e-12 or 2e-5
    for _, case in ipairs(adam_cases) do
      local name, o = case[1], case[2]
      it(('%s %s (%s) over 6 steps'):format(name, describe_opts(o), dtype), function()
        local grads = make_grads(6)
        local params = make_params(dtype)
        local opt = optim[name](params, o)
        local got = run(opt, params, grads, dtype)
        local ref, st = ref_adam(grads, o, name == 'AdamW')
        compare(ref, got, tol, name)
        for j = 1, #params do
          local s = opt.state[j]
          assert.are.equal(6, s.step)
          assert.are.equal(dtype, s.exp_avg:dtype())
          assert.are.same(params[j]:size(), s.exp_avg_sq:size())
          assert_close(st.exp_avg[j], flat(s.exp_avg), tol, 'exp_avg')
          assert_close(st.exp_avg_sq[j], flat(s.exp_avg_sq), tol, 'exp_avg_sq')
          if o.amsgrad then assert_close(st.max_exp_avg_sq[j], flat(s.max_exp_avg_sq), tol, 'max_exp_avg_sq')
          else assert.is_nil(s.max_exp_avg_sq) end
        end
      end)
    end
    for _, o in ipairs(sgd_cases) do
      it(('SGD %s (%s) over 6 steps'):format(describe_opts(o), dtype), function()
        local grads = make_grads(6)
        local params = make_params(dtype)
        local opt = optim.SGD(params, o)
        local got = run(opt, params, grads, dtype)
        local ref, B = ref_sgd(grads, o)
        compare(ref, got, tol, 'SGD')
        for j = 1, #params do
          if (o.momentum or 0) ~= 0 then assert_close(B[j], flat(opt.state[j].momentum_buffer), tol, 'momentum_buffer')
          else assert.is_nil(opt.state[j]) end
        end
      end)
    end
  end

  it('uses AdamW\'s default weight decay of 1e-2 and Adam\'s of 0', function()
    local a = optim.Adam({ fv.zeros(1) })
    local w = optim.AdamW({ fv.zeros(1) })
    assert.are.equal(0, a.weight_decay)
    assert.are.equal(1e-2, w.weight_decay)
    assert.are.equal(1e-3, w.lr)
    assert.are.same({ 0.9, 0.999 }, w.betas)
    assert.are.equal(1e-8, w.eps)
    assert.is_false(w.amsgrad)
  end)

  it('skips parameters without a gradient: no state, and their step counts lag', function()
    local skip = { ['1,2'] = true, ['2,2'] = true, ['3,3'] = true, ['4,1'] = true, ['5,3'] = true }
    local grads = make_grads(6, skip)
    for _, name in ipairs { 'Adam', 'AdamW' } do
      local o = { lr = 0.1, amsgrad = name == 'Adam', weight_decay = 0.05 }
      local params = make_params('float64')
      local opt = optim[name](params, o)
      -- after step 1 parameter 2 has no state and is unchanged
      for j = 1, 3 do set_grad(params[j], grads[1][j] and tensor_of(grads[1][j], SHAPES[j]) or nil) end
      opt:step()
      assert.is_nil(opt.state[2])
      assert.are.same(INIT[2], flat(params[2]))
      params = make_params('float64')
      opt = optim[name](params, o)
      local got = run(opt, params, grads, 'float64')
      local ref, st = ref_adam(grads, o, name == 'AdamW')
      compare(ref, got, 1e-12, name .. ' with skips')
      assert.are.same({ 5, 4, 4 }, { opt.state[1].step, opt.state[2].step, opt.state[3].step })
      assert.are.same(st.step, { opt.state[1].step, opt.state[2].step, opt.state[3].step })
    end
    local o = { lr = 0.1, momentum = 0.9, dampening = 0.2 }
    local params = make_params('float64')
    local got = run(optim.SGD(params, o), params, grads, 'float64')
    compare(ref_sgd(grads, o), got, 1e-12, 'SGD with skips')
  end)

  it('does nothing when no parameter has a gradient', function()
    local params = make_params('float64')
    local opt = optim.Adam(params, { lr = 0.1 })
    opt:step()
    assert.are.same({}, opt.state)
    assert.are.same(INIT[1], flat(params[1]))
    local sgd = optim.SGD(params, { lr = 0.1, momentum = 0.9 })
    sgd:step()
    assert.are.same(INIT[1], flat(params[1]))
    -- empty tensors are fine
    local e = fv.zeros({ 0 }, { dtype = 'float64' })
    set_grad(e, fv.zeros({ 0 }, { dtype = 'float64' }))
    for _, o in ipairs { optim.Adam({ e }, { amsgrad = true }), optim.SGD({ e }, { lr = 0.1, momentum = 0.9 }) } do
      o:step()
      o:step()
    end
    assert.are.equal(0, optim.clip_grad_norm({ e }, 1))
  end)

  it('handles float32 and float64 parameters in one optimizer', function()
    local grads = make_grads(4)
    local params = { tensor_of(INIT[1], SHAPES[1], 'float32'), tensor_of(INIT[2], SHAPES[2], 'float64'),
                     tensor_of(INIT[3], SHAPES[3], 'float32') }
    local opt = optim.Adam(params, { lr = 0.1 })
    for k = 1, 4 do
      for j = 1, 3 do set_grad(params[j], tensor_of(grads[k][j], SHAPES[j], params[j]:dtype())) end
      opt:step()
    end
    local ref = ref_adam(grads, { lr = 0.1 })
    assert_close(ref[4][1], flat(params[1]), 2e-5, 'float32 parameter')
    assert_close(ref[4][2], flat(params[2]), 1e-12, 'float64 parameter')
    assert.are.equal('float32', opt.state[1].exp_avg:dtype())
    assert.are.equal('float64', opt.state[2].exp_avg:dtype())
  end)

  it('updates large tensors (the parallel path) like small ones', function()
    local n = 200003
    for _, name in ipairs { 'Adam', 'SGD' } do
      local big = fv.full({ n }, 0.75, { dtype = 'float64' })
      local small = fv.full({ 1 }, 0.75, { dtype = 'float64' })
      local o = name == 'Adam' and { lr = 0.1, amsgrad = true, weight_decay = 0.1 } or { lr = 0.1, momentum = 0.9 }
      local a, b = optim[name]({ big }, o), optim[name]({ small }, o)
      for k = 1, 3 do
        set_grad(big, fv.full({ n }, k - 1.5, { dtype = 'float64' }))
        set_grad(small, fv.full({ 1 }, k - 1.5, { dtype = 'float64' }))
        a:step()
        b:step()
      end
      local v = small:item()
      assert.are.equal(v, big:max():item())
      assert.are.equal(v, big:min():item())
    end
  end)

  it('takes the parameters of an object with :parameters()', function()
    local w, b = fv.ones({ 2, 2 }, { dtype = 'float64' }), fv.zeros({ 2 }, { dtype = 'float64' })
    local model = setmetatable({}, { __index = { parameters = function() return { w, b } end } })
    local opt = optim.SGD(model, { lr = 0.5 })
    assert.are.equal(2, #opt.params)
    set_grad(w, fv.ones({ 2, 2 }, { dtype = 'float64' }))
    set_grad(b, fv.ones({ 2 }, { dtype = 'float64' }))
    opt:step()
    assert.are.same({ 0.5, 0.5, 0.5, 0.5 }, flat(w))
    assert.are.same({ -0.5, -0.5 }, flat(b))
  end)

  it('reads opt.lr at every step, so it can be changed between steps', function()
    local p = fv.zeros({ 1 }, { dtype = 'float64' })
    local opt = optim.SGD({ p }, { lr = 1 })
    set_grad(p, fv.ones({ 1 }, { dtype = 'float64' }))
    opt:step()
    opt.lr = 0.25
    opt:step()
    assert.are.equal(-1.25, p:item())
  end)

  it('zero_grad sets gradients to nil by default, or to zeros in place', function()
    local p, q = fv.ones(3), fv.ones(2)
    local opt = optim.Adam({ p, q })
    set_grad(p, fv.ones(3))
    opt:zero_grad()
    assert.is_nil(p.grad)
    assert.is_nil(q.grad)
    local g = fv.ones(3)
    set_grad(p, g)
    opt:zero_grad(false)
    assert.are.same({ 0, 0, 0 }, p.grad:totable())
    assert.are.same({ 0, 0, 0 }, g:totable())
  end)

  it('trains a least-squares model with autograd gradients', function()
    if not pcall(function() return C.fv_backward end) then
      pending('autograd is not built')
      return
    end
    local x = fv.randn({ 64, 3 }, { seed = 3, dtype = 'float64' })
    local true_w = fv.tensor({ { 1.5 }, { -2 }, { 0.5 } }, { dtype = 'float64' })
    local y = x:matmul(true_w)
    local w = fv.zeros({ 3, 1 }, { dtype = 'float64' })
    w.requires_grad = true
    local opt = optim.Adam({ w }, { lr = 0.1 })
    local first, last
    for i = 1, 300 do
      opt:zero_grad()
      local d = x:matmul(w) - y
      local loss = (d * d):mean()
      loss:backward()
      opt:step()
      if i == 1 then first = loss:item() end
      last = loss:item()
    end
    assert.is_true(last < first * 1e-4, ('loss %g -> %g'):format(first, last))
    assert_close(flat(true_w), flat(w:detach()), 1e-2, 'fitted weights')
  end)
end)

describe('optim state_dict', function()
  local function continue_identically(name, o)
    local grads = make_grads(7)
    local params = make_params('float64')
    local opt = optim[name](params, o)
    for k = 1, 4 do
      for j = 1, 3 do set_grad(params[j], tensor_of(grads[k][j], SHAPES[j])) end
      opt:step()
    end
    local sd = opt:state_dict()
    -- a second optimizer on copies of the parameters, loaded from sd
    local copies = {}
    for j = 1, 3 do copies[j] = params[j]:clone() end
    local other = optim[name](copies, name == 'SGD' and { lr = 123 } or { lr = 123, amsgrad = o.amsgrad })
    other:load_state_dict(sd)
    assert.are.equal(opt.lr, other.lr)
    for k = 5, 7 do
      for j = 1, 3 do
        set_grad(params[j], tensor_of(grads[k][j], SHAPES[j]))
        set_grad(copies[j], tensor_of(grads[k][j], SHAPES[j]))
      end
      opt:step()
      other:step()
    end
    for j = 1, 3 do assert.are.same(flat(params[j]), flat(copies[j])) end
    return sd, opt
  end

  it('round-trips Adam (amsgrad) and continues identically', function()
    local sd, opt = continue_identically('Adam', { lr = 0.1, amsgrad = true, weight_decay = 0.01 })
    assert.are.equal(4, sd.state[1].step)
    assert.are.same({ 2, 3 }, sd.state[1].exp_avg:size())
    assert.is_not_nil(sd.state[3].max_exp_avg_sq)
    local g = sd.param_groups[1]
    assert.are.same({ lr = 0.1, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 0.01, amsgrad = true,
                      params = { 1, 2, 3 } }, g)
    -- the state dict is a snapshot: later steps do not change it
    assert.are_not.same(flat(opt.state[1].exp_avg), flat(sd.state[1].exp_avg))
  end)

  it('round-trips AdamW and SGD with momentum', function()
    continue_identically('AdamW', { lr = 0.1 })
    local sd = continue_identically('SGD', { lr = 0.1, momentum = 0.9, dampening = 0.1, nesterov = false })
    assert.are.same({ 4 }, sd.state[2].momentum_buffer:size())
    assert.are.equal(0.9, sd.param_groups[1].momentum)
  end)

  it('casts loaded state to the parameters\' dtype', function()
    local p64 = fv.ones({ 3 }, { dtype = 'float64' })
    local a = optim.Adam({ p64 }, { lr = 0.1 })
    set_grad(p64, fv.ones({ 3 }, { dtype = 'float64' }))
    a:step()
    local p32 = fv.ones({ 3 }, { dtype = 'float32' })
    local b = optim.Adam({ p32 }, { lr = 0.1 })
    b:load_state_dict(a:state_dict())
    assert.are.equal('float32', b.state[1].exp_avg:dtype())
    set_grad(p32, fv.ones({ 3 }, { dtype = 'float32' }))
    b:step()
    assert.are.equal(2, b.state[1].step)
  end)

  it('rejects state dicts that do not fit, naming the parameter, and changes nothing', function()
    local params = make_params('float64')
    local opt = optim.Adam(params, { lr = 0.1 })
    for j = 1, 3 do set_grad(params[j], tensor_of(make_grads(1)[1][j], SHAPES[j])) end
    opt:step()
    local sd = opt:state_dict()
    sd.state[2].exp_avg = fv.zeros({ 5 }, { dtype = 'float64' })
    local other = optim.Adam(make_params('float64'), { lr = 0.5 })
    assert.has_error(function() other:load_state_dict(sd) end,
      'fovea: optim.Adam:load_state_dict: state exp_avg of parameter 2 has shape 5 but the parameter has shape 4')
    assert.are.equal(0.5, other.lr)
    assert.are.same({}, other.state)

    local ok, err = pcall(other.load_state_dict, other, optim.Adam({ fv.zeros(2) }):state_dict())
    assert.is_false(ok)
    assert.is_truthy(err:find('is for 1 parameters; this optimizer has 3', 1, true))

    sd = opt:state_dict()
    sd.state[3].exp_avg_sq = nil
    ok, err = pcall(other.load_state_dict, other, sd)
    assert.is_false(ok)
    assert.is_truthy(err:find('state of parameter 3 lacks exp_avg_sq', 1, true))

    sd = opt:state_dict()
    sd.state[1].exp_avg = 'not a tensor'
    ok, err = pcall(other.load_state_dict, other, sd)
    assert.is_truthy(err:find('state exp_avg of parameter 1 is a string', 1, true))

    -- an SGD state dict in an Adam optimizer
    local sgd = optim.SGD(params, { lr = 0.1, momentum = 0.9 })
    sgd:step()
    ok, err = pcall(other.load_state_dict, other, sgd:state_dict())
    assert.is_false(ok)
    assert.is_truthy(err:find('unknown entry momentum_buffer', 1, true))
    ok, err = pcall(other.load_state_dict, other, { state = {} })
    assert.is_truthy(err:find('expected a table with fields state and param_groups', 1, true))
  end)
end)

describe('optim errors', function()
  it('checks constructor arguments', function()
    local p = fv.zeros(3)
    local function err(f)
      local ok, e = pcall(f)
      assert.is_false(ok)
      return e
    end
    assert.is_truthy(err(function() optim.Adam({ p }, { lr = -1 }) end):find('invalid learning rate -1', 1, true))
    assert.is_truthy(err(function() optim.Adam({ p }, { betas = { 1, 0.9 } }) end):find('invalid beta1 1', 1, true))
    assert.is_truthy(err(function() optim.Adam({ p }, { betas = 0.9 }) end):find('betas must be a pair', 1, true))
    assert.is_truthy(err(function() optim.AdamW({ p }, { eps = -1 }) end):find('invalid eps', 1, true))
    assert.is_truthy(err(function() optim.Adam({ p }, { weight_decay = -0.1 }) end):find('invalid weight_decay', 1, true))
    assert.is_truthy(err(function() optim.Adam({ p }, { amsgrad = 1 }) end):find('amsgrad must be true or false', 1, true))
    assert.is_truthy(err(function() optim.Adam({ p }, { lr = 0.1, wieght_decay = 1 }) end)
      :find('unknown option wieght_decay', 1, true))
    assert.is_truthy(err(function() optim.SGD({ p }, {}) end):find('the learning rate lr is required', 1, true))
    assert.is_truthy(err(function() optim.SGD({ p }, { lr = 0.1, nesterov = true }) end)
      :find('nesterov momentum needs momentum > 0 and dampening 0', 1, true))
    assert.is_truthy(err(function() optim.SGD({ p }, { lr = 0.1, momentum = 0.9, dampening = 0.1, nesterov = true }) end)
      :find('nesterov', 1, true))
    assert.is_truthy(err(function() optim.Adam({}) end):find('empty parameter list', 1, true))
    assert.is_truthy(err(function() optim.Adam(p) end):find('wrap it in a table', 1, true))
    assert.is_truthy(err(function() optim.Adam({ p, 3 }) end):find('parameter 2 is a number', 1, true))
    assert.is_truthy(err(function() optim.Adam({ p, fv.zeros(2), p }) end)
      :find('parameter 3 is the same tensor as parameter 1', 1, true))
    assert.is_truthy(err(function() optim.Adam({ fv.zeros(2, { dtype = 'int64' }) }) end)
      :find('parameter 1 (2) is int64', 1, true))
  end)

  it('reports bad gradients and parameters with the parameter index, changing nothing', function()
    local a, b = fv.ones({ 2, 2 }, { dtype = 'float64' }), fv.ones({ 2, 2 }, { dtype = 'float64' })
    local opt = optim.Adam({ a, b }, { lr = 0.1 })
    set_grad(a, fv.ones({ 2, 2 }, { dtype = 'float64' }))
    set_grad(b, fv.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = 'float64' }):t())   -- not contiguous
    local ok, e = pcall(opt.step, opt)
    assert.is_false(ok)
    assert.is_truthy(e:find('adam_step: parameter 2 (float64 2x2): gradient is not contiguous', 1, true), e)
    assert.are.same({ 1, 1, 1, 1 }, flat(a))    -- parameter 1 untouched
    assert.is_nil(opt.state[1])                 -- and no state was left behind
    set_grad(b, fv.ones({ 2, 2 }, { dtype = 'float64' }))
    opt:step()
    assert.are.equal(1, opt.state[1].step)

    local sgd = optim.SGD({ a, b }, { lr = 0.1, momentum = 0.5 })
    set_grad(a, fv.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = 'float64' }):t())
    ok, e = pcall(sgd.step, sgd)
    assert.is_truthy(e:find('sgd_step: parameter 1 (float64 2x2): gradient is not contiguous', 1, true), e)
    assert.is_nil(sgd.state[1])

    set_grad(a, nil)
    local t = fv.ones({ 2, 3 }, { dtype = 'float64' }):t()
    ok, e = pcall(optim.SGD, { a, t }, { lr = 0.1 })
    assert.is_truthy(e:find('optim.SGD: parameter 2 (3x2) is not contiguous', 1, true), e)
    set_grad(t, fv.ones({ 3, 2 }, { dtype = 'float64' }))
    assert.are.equal(C.FV_ERR_ARGUMENT, C.fv_sgd_step(1, ffi.new('fv_tensor*[1]', { t.p }), nil, 0.1, 0, 0, 0, 0, 0))
    assert.are.equal('sgd_step: parameter 0 (float64 3x2) is not contiguous', ffi.string(C.fv_last_error()))

    local opt3 = optim.Adam({ a }, { lr = 0.1 })
    opt3.lr = 'fast'
    ok, e = pcall(opt3.step, opt3)
    assert.is_truthy(e:find('invalid learning rate fast', 1, true), e)
  end)

  it('checks state tensors in the C entry points, naming the index and shapes', function()
    local p = fv.ones({ 2, 3 }, { dtype = 'float64' })
    set_grad(p, fv.ones({ 2, 3 }, { dtype = 'float64' }))
    local m, v = fv.zeros({ 3, 2 }, { dtype = 'float64' }), fv.zeros({ 2, 3 }, { dtype = 'float64' })
    local P = ffi.new('fv_tensor*[1]', { p.p })
    local M = ffi.new('fv_tensor*[1]', { m.p })
    local V = ffi.new('fv_tensor*[1]', { v.p })
    assert.are.equal(C.FV_ERR_SHAPE, C.fv_adam_step(1, P, M, V, nil, 1, 0.1, 0.9, 0.999, 1e-8, 0, 0, 0))
    assert.are.equal('adam_step: parameter 0: exp_avg has shape 3x2 but the parameter has shape 2x3',
      ffi.string(C.fv_last_error()))
    local m32 = fv.zeros({ 2, 3 }, { dtype = 'float32' })
    M[0] = m32.p
    assert.are.equal(C.FV_ERR_DTYPE, C.fv_adam_step(1, P, M, V, nil, 1, 0.1, 0.9, 0.999, 1e-8, 0, 1, 0))
    assert.is_truthy(ffi.string(C.fv_last_error()):find('adamw_step: parameter 0 (2x3): exp_avg is float32', 1, true))
    M[0] = v.p
    assert.are.equal(C.FV_ERR_ARGUMENT, C.fv_adam_step(1, P, M, V, nil, 1, 0.1, 0.9, 0.999, 1e-8, 0, 0, 1))
    assert.is_truthy(ffi.string(C.fv_last_error()):find('amsgrad needs', 1, true))
    assert.are.equal(C.FV_ERR_ARGUMENT, C.fv_adam_step(1, P, M, V, nil, 0, 0.1, 0.9, 0.999, 1e-8, 0, 0, 0))
    assert.are.equal(C.FV_ERR_ARGUMENT, C.fv_adam_step(1, P, M, V, nil, 1, 0.1, 1.0, 0.999, 1e-8, 0, 0, 0))
    assert.are.equal(C.FV_ERR_ARGUMENT, C.fv_sgd_step(1, P, nil, 0.1, 0.9, 0, 0, 0, 1))
    assert.are.equal(C.FV_ERR_ARGUMENT, C.fv_sgd_step(1, P, nil, 0.1, 0, 0, 0, 1, 0))
    assert.are.equal(0, C.fv_sgd_step(1, P, nil, 0.5, 0, 0, 0, 0, 0))
    assert.are.same({ 0.5, 0.5, 0.5, 0.5, 0.5, 0.5 }, flat(p))
    local B = ffi.new('fv_tensor*[1]', { fv.zeros({ 6 }, { dtype = 'float64' }).p })
    assert.are.equal(C.FV_ERR_SHAPE, C.fv_sgd_step(1, P, B, 0.1, 0.9, 0, 0, 0, 0))
    assert.is_truthy(ffi.string(C.fv_last_error()):find('momentum_buffer has shape 6 but the parameter has shape 2x3', 1, true))
    assert.are.equal(0, C.fv_adam_step(0, nil, nil, nil, nil, 1, 0.1, 0.9, 0.999, 1e-8, 0, 0, 0))
    -- state tensors that share memory
    M[0] = v.p
    assert.are.equal(C.FV_ERR_ARGUMENT, C.fv_adam_step(1, P, M, V, nil, 1, 0.1, 0.9, 0.999, 1e-8, 0, 0, 0))
    assert.are.equal('adam_step: parameter 0 (2x3): exp_avg and exp_avg_sq share memory', ffi.string(C.fv_last_error()))
    local r = fv.ones({ 3 }, { dtype = 'float64' })
    set_grad(r, r:view(3))
    local sgd = optim.SGD({ r }, { lr = 0.1 })
    local ok0, e0 = pcall(sgd.step, sgd)
    assert.is_false(ok0)
    assert.is_truthy(e0:find('sgd_step: parameter 1 (3): the parameter and the gradient share memory', 1, true), e0)
    set_grad(r, nil)
    -- a freed parameter
    local q = fv.ones(2)
    set_grad(q, fv.ones(2))
    q:free()
    local opt = optim.SGD({ q }, { lr = 0.1 })
    local ok, e = pcall(opt.step, opt)
    assert.is_false(ok)
    assert.is_truthy(e:find('parameter 1 (2) was freed', 1, true), e)
  end)
end)

describe('optim.clip_grad_norm', function()
  it('scales gradients to max_norm by the 2-norm, as computed by hand', function()
    local a, b = fv.zeros({ 2 }, { dtype = 'float64' }), fv.zeros({ 1 }, { dtype = 'float64' })
    local c = fv.zeros({ 3 }, { dtype = 'float64' })    -- no gradient
    set_grad(a, fv.tensor({ 3, 4 }, { dtype = 'float64' }))
    set_grad(b, fv.tensor({ 12 }, { dtype = 'float64' }))
    local total = optim.clip_grad_norm({ a, b, c }, 1.0)
    assert.are.equal(13, total)                      -- sqrt(9 + 16 + 144)
    local s = 1 / (13 + 1e-6)
    assert_close({ 3 * s, 4 * s }, a.grad:totable(), 1e-15, 'a')
    assert_close({ 12 * s }, b.grad:totable(), 1e-15, 'b')
    assert.is_nil(c.grad)
    -- under the limit: unchanged
    total = optim.clip_grad_norm({ a, b }, 5)
    assert_close({ 1 }, { total }, 1e-6, 'norm after clipping')
    assert_close({ 3 * s, 4 * s }, a.grad:totable(), 1e-15, 'a unchanged')
  end)

  it('supports the inf-norm, other p-norms, float32 and no gradients', function()
    local a = fv.zeros({ 2, 2 })
    set_grad(a, fv.tensor({ { 1, -8 }, { 2, 0.5 } }))
    assert.are.equal(8, optim.clip_grad_norm({ a }, 2, math.huge))
    assert_close({ 0.25, -2, 0.5, 0.125 }, flat(a.grad), 1e-6, 'inf-norm clipping')
    set_grad(a, fv.tensor({ { 1, -2 }, { 2, 0 } }))
    assert.are.equal(2, optim.clip_grad_norm(a, 10, 'inf'))
    assert_close({ 5 }, { optim.clip_grad_norm({ a }, 10, 1) }, 1e-12, '1-norm')
    assert_close({ 17 ^ (1 / 3) }, { optim.clip_grad_norm({ a }, 10, 3) }, 1e-6, '3-norm')
    assert.are.equal(0, optim.clip_grad_norm({ fv.zeros(3) }, 1))
    local ok, e = pcall(optim.clip_grad_norm, { a }, 1, -1)
    assert.is_false(ok)
    assert.is_truthy(e:find('invalid norm_type -1', 1, true))
    assert.are.equal(C.FV_ERR_ARGUMENT, C.fv_clip_grad_norm(0, nil, 1, 0, nil))
  end)

  it('gives the same norm for a large gradient on any thread count', function()
    local p = fv.zeros({ 300001 }, { dtype = 'float32' })
    set_grad(p, fv.randn({ 300001 }, { seed = 5, dtype = 'float32' }))
    local threads = fv.get_num_threads()
    local g0 = p.grad:clone()
    local norms = {}
    for _, n in ipairs { 1, 3, threads } do
      fv.set_num_threads(n)
      set_grad(p, g0:clone())
      norms[#norms + 1] = optim.clip_grad_norm({ p }, 1e9)
    end
    fv.set_num_threads(threads)
    assert.are.equal(norms[1], norms[2])
    assert.are.equal(norms[1], norms[3])
    local ref = math.sqrt((g0:double() * g0:double()):sum():item())
    assert_close({ ref }, { norms[1] }, 1e-12, '2-norm')
  end)
end)

describe('optim schedules', function()
  local function sgd(lr) return optim.SGD({ fv.zeros(1) }, { lr = lr }) end

  it('StepLR follows lr * gamma ^ floor(epoch / step_size)', function()
    local opt = sgd(0.1)
    local s = optim.StepLR(opt, { step_size = 3, gamma = 0.5 })
    assert.are.equal(0.1, opt.lr)
    assert.are.equal(0, s.last_epoch)
    assert.are.equal(0.1, opt.initial_lr)
    for epoch = 1, 20 do
      s:step()
      local want = 0.1 * 0.5 ^ math.floor(epoch / 3)
      assert_close({ want }, { opt.lr }, 1e-15, 'epoch ' .. epoch)
      assert.are.equal(opt.lr, s:get_lr())
      assert.are.equal(opt.lr, s:get_last_lr())
    end
    local d = optim.StepLR(sgd(1), { step_size = 2 })
    d:step(); d:step()
    assert_close({ 0.1 }, { d:get_last_lr() }, 1e-15, 'default gamma 0.1')
  end)

  it('CosineAnnealingLR follows the closed form, past T_max too', function()
    local opt = sgd(0.05)
    local s = optim.CosineAnnealingLR(opt, { T_max = 7, eta_min = 0.001 })
    assert.are.equal(0.05, opt.lr)
    for epoch = 1, 30 do
      s:step()
      local want = 0.001 + (0.05 - 0.001) * (1 + math.cos(math.pi * epoch / 7)) / 2
      assert_close({ want }, { opt.lr }, 1e-14, 'epoch ' .. epoch)
    end
    assert_close({ 0.001 }, { s:step(35) }, 1e-14, 'step(35)')
    local z = optim.CosineAnnealingLR(sgd(1), { T_max = 4 })
    z:step(); z:step()
    assert_close({ 0.5 }, { z:get_lr() }, 1e-15, 'eta_min 0 at T_max / 2')
  end)

  it('round-trips state_dict and resumes with last_epoch', function()
    local opt = sgd(0.1)
    local s = optim.CosineAnnealingLR(opt, { T_max = 10, eta_min = 0.01 })
    for _ = 1, 4 do s:step() end
    local sd, osd = s:state_dict(), opt:state_dict()
    assert.are.equal(4, sd.last_epoch)
    assert.are.equal(10, sd.T_max)
    assert.are.equal(0.1, osd.param_groups[1].initial_lr)
    -- a fresh optimizer and schedule, loaded
    local opt2 = sgd(0.7)
    local s2 = optim.CosineAnnealingLR(opt2, { T_max = 3 })
    opt2:load_state_dict(osd)
    s2:load_state_dict(sd)
    assert.are.equal(opt.lr, opt2.lr)
    for _ = 1, 5 do assert.are.equal(s:step(), s2:step()) end
    -- resuming with last_epoch
    local opt3 = sgd(0.7)
    opt3:load_state_dict(osd)
    local s3 = optim.CosineAnnealingLR(opt3, { T_max = 10, eta_min = 0.01, last_epoch = 8 })
    assert.are.equal(9, s3.last_epoch)
    assert.are.equal(s:get_lr(), s3:get_lr())
    local step = optim.StepLR(sgd(1), { step_size = 2, gamma = 0.3 })
    step:step(); step:step(); step:step()
    local step2 = optim.StepLR(sgd(1), { step_size = 5 })
    step2:load_state_dict(step:state_dict())
    assert.are.equal(step:step(), step2:step())
  end)

  it('checks its arguments', function()
    local function err(f)
      local ok, e = pcall(f)
      assert.is_false(ok)
      return e
    end
    assert.is_truthy(err(function() optim.StepLR(sgd(1), {}) end):find('step_size is required', 1, true))
    assert.is_truthy(err(function() optim.StepLR(sgd(1), { step_size = 1.5 }) end):find('invalid step_size 1.5', 1, true))
    assert.is_truthy(err(function() optim.CosineAnnealingLR(sgd(1), {}) end):find('T_max is required', 1, true))
    assert.is_truthy(err(function() optim.CosineAnnealingLR(sgd(1), { T_max = 0 }) end):find('invalid T_max 0', 1, true))
    assert.is_truthy(err(function() optim.CosineAnnealingLR(sgd(1), { T_max = 3, gama = 1 }) end)
      :find('unknown option gama', 1, true))
    assert.is_truthy(err(function() optim.StepLR({}, { step_size = 1 }) end):find('must be an optimizer', 1, true))
    assert.is_truthy(err(function() optim.StepLR(sgd(1), { step_size = 1, last_epoch = 3 }) end)
      :find('needs opt.initial_lr', 1, true))
    assert.is_truthy(err(function() optim.StepLR(sgd(1), { step_size = 1 }):load_state_dict({ last_epoch = 2 }) end)
      :find('invalid base_lr', 1, true))
  end)
end)

---------------------------------------------------------------------------------------
-- PyTorch's own trajectories

local fixture_path = 'spec/fixtures/optim/torch_trajectories.json'

local function load_fixture()
  local f = io.open(fixture_path, 'rb')
  if not f then return nil, 'missing ' .. fixture_path end
  local text = f:read('*a')
  f:close()
  local ok, json = pcall(require, 'dkjson')
  if not ok then return nil, 'dkjson (a dependency of busted) is not installed' end
  return json.decode(text)
end

describe('optim against PyTorch\'s recorded trajectories', function()
  local data, why = load_fixture()
  if not data then
    it('needs the fixture', function() pending(why) end)
    return
  end

  for _, case in ipairs(data.optimizers) do
    it(('%s (%s, torch %s)'):format(case.name, case.dtype, data.torch_version), function()
      local tol = case.dtype == 'float64' and 1e-6 or 1e-5
      local params = {}
      for j, shape in ipairs(case.shapes) do params[j] = tensor_of(case.init[j], shape, case.dtype) end
      local opt = optim[case.optimizer](params, case.options)
      local worst = 0
      for k, step in ipairs(case.steps) do
        for j, shape in ipairs(case.shapes) do
          local g = step.grads[j]
          set_grad(params[j], type(g) == 'table' and tensor_of(g, shape, case.dtype) or nil)
        end
        opt:step()
        for j = 1, #params do
          local got = flat(params[j])
          assert_close(step.params[j], got, tol, ('%s step %d parameter %d'):format(case.name, k, j))
          for e = 1, #got do worst = math.max(worst, math.abs(got[e] - step.params[j][e])) end
        end
      end
      if case.dtype == 'float64' then assert.is_true(worst < 1e-13, 'float64 differs from torch by ' .. worst) end
      for j, want in ipairs(case.state) do
        if type(want) ~= 'table' then
          assert.is_nil(opt.state[j])
        else
          for key, value in pairs(want) do
            if key == 'step' then assert.are.equal(value, opt.state[j].step)
            else assert_close(value, flat(opt.state[j][key]), tol, case.name .. ' state ' .. key) end
          end
        end
      end
    end)
  end

  it('matches torch.nn.utils.clip_grad_norm_', function()
    for _, case in ipairs(data.clip) do
      local params = {}
      for j, shape in ipairs(SHAPES) do
        params[j] = fv.zeros(shape, { dtype = 'float64' })
        set_grad(params[j], tensor_of(case.grads[j], shape))
      end
      local norm_type = case.norm_type == 'inf' and math.huge or case.norm_type
      local total = optim.clip_grad_norm(params, case.max_norm, norm_type)
      local what = 'norm_type ' .. tostring(case.norm_type)
      assert_close({ case.total }, { total }, 1e-12, what)
      for j = 1, #params do assert_close(case.clipped[j], flat(params[j].grad), 1e-12, what) end
    end
  end)

  it('matches torch.optim.lr_scheduler', function()
    for _, case in ipairs(data.schedules) do
      local opt = optim.SGD({ fv.zeros(1) }, { lr = case.lr })
      local s = optim[case.scheduler](opt, case.options)
      local lrs = { opt.lr }
      for _ = 1, #case.lrs - 1 do
        opt:step()
        s:step()
        lrs[#lrs + 1] = opt.lr
      end
      assert_close(case.lrs, lrs, 1e-12, case.name)
    end
  end)
end)
