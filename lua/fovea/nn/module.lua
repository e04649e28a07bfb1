--[[ nn/module.lua: nn.Module, the base class of every layer and model, with a small
class mechanism, registration of children, parameters and buffers in a stable order,
and PyTorch's module API (names match torch.nn so torchvision state dicts load).

  local MyNet = nn.Module:extend('MyNet')      -- a class; MyNet:extend('Sub') subclasses it
  function MyNet:init(classes)                 -- the constructor (called by MyNet(...))
    self.conv = nn.Conv2d(3, 8, 3)             -- a module assigned to a field is a child
    self.fc = nn.Linear(8, classes)
    self:register_parameter('scale', fv.ones{1})       -- or: self.scale = nn.Parameter(t)
    self:register_buffer('count', fv.zeros{1})         -- {persistent = false}: not in state_dict
  end
  function MyNet:forward(x) return self.fc(F.global_avg_pool(self.conv(x))) end
  local net = MyNet(10); local y = net(x)      -- net(x) calls net:forward(x)

Registration: children, parameters and buffers live in the module's registry, not as raw
fields, so assignment always goes through __newindex and the order of first
registration is kept (state_dict, named_parameters and the optimizer's state indices
depend on it). Reassigning a registered name replaces the value in place (same position);
assigning nil keeps the name with no value (as PyTorch's None). Other values (numbers,
strings, plain tensors) are ordinary fields. A parameter registered as nil (e.g. a bias
that is off) is skipped everywhere.

Methods (PyTorch's names; "array" is a Lua array, names are dotted paths):
  m:forward(...)                 what m(...) runs; subclasses define it
  m:parameters()                 array of parameter tensors, deduplicated, in order
  m:named_parameters()           array of {name, tensor}, e.g. {'layer1.0.conv1.weight', t}
  m:buffers(), m:named_buffers() the same for buffers
  m:children(), m:named_children()   direct children (array; {name, module})
  m:modules(), m:named_modules() every module, m first, depth first ('' names m)
  m:get_submodule('layer1.0')    a descendant by dotted path (an error names the missing part)
  m:add_module(name, child), m:register_parameter(name, t), m:register_buffer(name, t, {persistent = true})
  m:train(mode = true), m:evaluate() (alias m:eval()), m.training
                                 sets the training flag of m and every descendant; returns m
  m:zero_grad(set_to_none = true)  drops every parameter's gradient (or fills it with zeros)
  m:requires_grad_(flag = true)  sets requires_grad of every parameter (freezing)
  m:to(dtype or device)          float32/float64 (also 'float', 'double'): converts the
                                 floating parameters and buffers (and gradients) in place in
                                 the module, keeping requires_grad and sharing; int64 buffers
                                 stay int64. 'cpu', 'cuda': moves every parameter and buffer
                                 (gradients too), keeping requires_grad and sharing; 'cuda'
                                 raises a clear error when CUDA is not available (fv.cuda).
                                 Returns m. Convert before making an optimizer (it holds the
                                 old tensors).
  m:float(), m:double(), m:cpu(), m:cuda()
  m:state_dict({keep_vars = false})  a table name -> tensor (detached, sharing memory;
                                 keep_vars gives the module's tensors)
  m:state_dict_keys()            the names in order: each module's parameters, then its
                                 persistent buffers, then its children's, depth first
                                 (torch's order, shared tensors under every name)
  m:load_state_dict(sd, {strict = true})
                                 checks everything first, then copies in place under no_grad
                                 (dtype converted). Errors list missing and unexpected keys
                                 (strict) and every shape mismatch (always), naming the key
                                 and both shapes; nothing is copied when there is an error.
                                 Returns {missing_keys = {...}, unexpected_keys = {...}}.
  m:save(path, metadata)         fv.save of the state dict (a safetensors file); returns m
  m:load(path, {strict = true})  load_state_dict of fv.load(path); returns m, the result
  m:num_parameters()             total element count of parameters()
  m:apply(fn)                    fn(module) for every module, children first; returns m
  m:extra_repr()                 the text inside Name(...) in tostring; layers define it
  tostring(m)                    PyTorch's repr tree: "Net(\n  (conv): Conv2d(3, 8, ...)\n)"
  nn.Parameter(t)                marks t for registration as a parameter by assignment
  nn.is_module(x)                true for module instances

Errors raised in a child's forward come back prefixed with the child's path, as Torch7's
containers did: "In module layer1.0.conv1 (Conv2d): <message>". Module calls (m(x) or
m:forward(x), the same thing) keep a stack of the modules running; only the outermost
call runs a pcall (one per forward of the whole model), and paths are relative to it.
nn.set_error_paths(false) turns the pcall off (errors then keep their full traceback,
without the path); it returns the previous setting.
]]
local ffi = require 'ffi'
local clib = require 'fovea.clib'
local T = require 'fovea.tensor'
local dtypes = require 'fovea.dtypes'
local util = require 'fovea.nn.util'

local raise = clib.raise
local is_tensor = T.is_tensor

local Module = {}
Module.__name = 'Module'

local function is_module(x)
  if type(x) ~= 'table' then return false end
  local mt = getmetatable(x)
  return mt ~= nil and rawget(mt, '__module') == true
end

local ParameterMark = {}
local function Parameter(t, requires_grad)
  if not is_tensor(t) then raise('fovea: nn.Parameter expects a tensor, got ' .. type(t)) end
  return setmetatable({ tensor = t, requires_grad = requires_grad ~= false }, ParameterMark)
end

local function kind_of(v)
  if v == nil then return 'nil' end
  if is_tensor(v) then return 'tensor ' .. util.shape(v) end
  if is_module(v) then return 'module ' .. v.__name end
  return type(v)
end

---------------------------------------------------------------------------------------
-- the call stack and error paths

local stack, depth = {}, 0
local error_paths = true

local function clear_stack(from)
  local i = from
  while stack[i] ~= nil do
    stack[i] = nil
    i = i + 1
  end
end

-- The path of child below parent: its name among parent's children, else (a forward
-- that calls a grandchild directly) its dotted path among parent's descendants, or '?'.
local function child_name(parent, child)
  local names, mods = parent:_child_list()
  for i = 1, #mods do
    if rawequal(mods[i], child) then return names[i] end
  end
  for _, nm in ipairs(parent:named_modules()) do
    if rawequal(nm[2], child) then return nm[1] end
  end
  return '?'
end

local function finish(d, ...)
  stack[d + 1] = nil
  depth = d
  return ...
end

local function root_finish(ok, ...)
  if ok then
    clear_stack(1)
    depth = 0
    return ...
  end
  local err, top = (...), depth
  local path, failing
  if type(err) == 'string' and top >= 2 then
    local parts = {}
    for i = 2, top do parts[#parts + 1] = child_name(stack[i - 1], stack[i]) end
    path, failing = table.concat(parts, '.'), stack[top]
  end
  clear_stack(1)
  depth = 0
  if path then err = ('In module %s (%s): %s'):format(path, failing.__name, err) end
  error(err, 0)
end

-- The forward function of an instance: its own field, else its class's.
local function forward_of(self)
  local f = rawget(self, 'forward')
  if f ~= nil then return f end
  return getmetatable(self).__class.forward
end

-- model(...) and model:forward(...): run the class's forward, keeping the stack of
-- running modules. (Instances answer the key forward with this function; a subclass
-- calling its parent's forward, Parent.forward(self, x), gets the plain function.)
local function call(self, ...)
  if not error_paths then return forward_of(self)(self, ...) end
  local d = depth
  depth = d + 1
  stack[d + 1] = self
  if d == 0 then return root_finish(pcall(forward_of(self), self, ...)) end
  return finish(d, forward_of(self)(self, ...))
end

---------------------------------------------------------------------------------------
-- classes and instances

local function register_value(self, k, v)
  local kind = self._kind[k]
  if is_module(v) then
    if kind == 'parameter' or kind == 'buffer' then
      raise(('fovea: %s: cannot assign a module to %s, which is a %s'):format(self.__name, k, kind))
    end
    return Module.add_module(self, k, v)
  end
  if getmetatable(v) == ParameterMark then return Module.register_parameter(self, k, v.tensor, v.requires_grad) end
  if kind == 'parameter' then return Module.register_parameter(self, k, v) end
  if kind == 'buffer' then
    if v ~= nil and not is_tensor(v) then
      raise(('fovea: %s: buffer %s must be a tensor or nil, got %s'):format(self.__name, k, kind_of(v)))
    end
    self._members[k] = v
    return
  end
  if kind == 'module' then
    if v ~= nil then
      raise(('fovea: %s: %s is a child module; cannot assign a %s to it'):format(self.__name, k, kind_of(v)))
    end
    self._members[k] = nil
    return
  end
  rawset(self, k, v)
end

local function repr(m)
  local extra = m:extra_repr() or ''
  local extra_lines = {}
  if extra ~= '' then
    for line in (extra .. '\n'):gmatch('(.-)\n') do extra_lines[#extra_lines + 1] = line end
  end
  local child_lines = {}
  local names, mods = m:_child_list()
  for i = 1, #names do
    child_lines[i] = '(' .. names[i] .. '): ' .. repr(mods[i]):gsub('\n', '\n  ')
  end
  local s = m.__name .. '('
  if #extra_lines + #child_lines > 0 then
    if #extra_lines == 1 and #child_lines == 0 then
      s = s .. extra_lines[1]
    else
      local lines = {}
      for _, l in ipairs(extra_lines) do lines[#lines + 1] = l end
      for _, l in ipairs(child_lines) do lines[#lines + 1] = l end
      s = s .. '\n  ' .. table.concat(lines, '\n  ') .. '\n'
    end
  end
  return s .. ')'
end

local function make_instance_mt(cls)
  return {
    __module = true,
    __class = cls,
    __index = function(self, k)
      local v = self._members[k]
      if v ~= nil then return v end
      if k == 'forward' then return call end
      return cls[k]
    end,
    __newindex = function(self, k, v)
      local handler = cls.__assign
      if handler then return handler(self, k, v) end
      return register_value(self, k, v)
    end,
    __call = call,
    __tostring = repr,
  }
end

local function class_mt(parent)
  return {
    __index = parent,
    __call = function(cls, ...) return cls:new(...) end,
    __tostring = function(cls) return 'fovea.nn class ' .. cls.__name end,
  }
end

-- Module:extend(name): a new class inheriting from this one.
function Module.extend(parent, name)
  if is_module(parent) then raise('fovea: extend is called on a class (nn.Module:extend(name)), not on an instance') end
  if name ~= nil and type(name) ~= 'string' then raise('fovea: extend: the class name must be a string') end
  local cls = { __name = name or ('Sub' .. parent.__name), super = parent }
  cls.__instance_mt = make_instance_mt(cls)
  return setmetatable(cls, class_mt(parent))
end

-- cls:new(...): an instance (also cls(...)).
function Module.new(cls, ...)
  if is_module(cls) then raise('fovea: new is called on a class, not on an instance') end
  local self = setmetatable({
    _members = {},       -- name -> child, parameter or buffer
    _kind = {},          -- name -> 'module', 'parameter' or 'buffer'
    _child_names = {},   -- registration order of each kind
    _param_names = {},
    _buffer_names = {},
    _non_persistent = {},
    training = true,
  }, cls.__instance_mt)
  self:init(...)
  return self
end

Module.__instance_mt = make_instance_mt(Module)
setmetatable(Module, {
  __call = function(cls, ...) return cls:new(...) end,
  __tostring = function() return 'fovea.nn class Module' end,
})

function Module:init() end

function Module:forward()
  raise(('fovea: %s: forward is not implemented (define function %s:forward(x))'):format(self.__name, self.__name))
end

function Module:extra_repr() return '' end

---------------------------------------------------------------------------------------
-- registration

local function check_name(self, name, what)
  if type(name) ~= 'string' or name == '' or name:find('.', 1, true) then
    raise(('fovea: %s: a %s name must be a non-empty string without dots, got %s'):format(
      self.__name, what, tostring(name)))
  end
  if rawget(self, name) ~= nil then
    raise(('fovea: %s: %s is already an ordinary field; cannot register it as a %s'):format(self.__name, name, what))
  end
  local kind = self._kind[name]
  if kind and kind ~= what then
    raise(('fovea: %s: %s is already registered as a %s'):format(self.__name, name, kind))
  end
  return kind == nil
end

function Module:add_module(name, child)
  if child ~= nil and not is_module(child) then
    raise(('fovea: %s: add_module: %s is not a module but a %s'):format(self.__name, tostring(name), kind_of(child)))
  end
  if check_name(self, name, 'module') then
    self._kind[name] = 'module'
    self._child_names[#self._child_names + 1] = name
  end
  self._members[name] = child
  return child
end
Module.register_module = Module.add_module

-- Registers t (a float leaf tensor, or nil) as parameter name; t.requires_grad is set
-- (unless requires_grad == false).
function Module:register_parameter(name, t, requires_grad)
  if t ~= nil then
    if not is_tensor(t) then
      raise(('fovea: %s: parameter %s must be a tensor or nil, got %s'):format(self.__name, tostring(name), kind_of(t)))
    end
    if not util.is_floating(t) then
      raise(('fovea: %s: parameter %s must be a float tensor, got %s'):format(self.__name, tostring(name), t:dtype()))
    end
    if not t:is_leaf() then
      raise(('fovea: %s: parameter %s must be a leaf tensor, not the result of %s (use :detach())')
        :format(self.__name, tostring(name), t.grad_fn))
    end
  end
  if check_name(self, name, 'parameter') then
    self._kind[name] = 'parameter'
    self._param_names[#self._param_names + 1] = name
  end
  if t ~= nil and requires_grad ~= false and not t.requires_grad then t.requires_grad = true end
  self._members[name] = t
  return t
end

function Module:register_buffer(name, t, opts)
  if t ~= nil and not is_tensor(t) then
    raise(('fovea: %s: buffer %s must be a tensor or nil, got %s'):format(self.__name, tostring(name), kind_of(t)))
  end
  opts = util.check_options('register_buffer', opts, { persistent = true })
  if check_name(self, name, 'buffer') then
    self._kind[name] = 'buffer'
    self._buffer_names[#self._buffer_names + 1] = name
  end
  self._non_persistent[name] = opts.persistent == false or nil
  self._members[name] = t
  return t
end

---------------------------------------------------------------------------------------
-- walking the tree

-- Direct children with values, in order: names, modules (list containers override).
function Module:_child_list()
  local names, mods = {}, {}
  for _, n in ipairs(self._child_names) do
    local m = self._members[n]
    if m ~= nil then
      names[#names + 1] = n
      mods[#mods + 1] = m
    end
  end
  return names, mods
end

function Module:named_children()
  local out, seen = {}, {}
  local names, mods = self:_child_list()
  for i = 1, #names do
    if not seen[mods[i]] then
      seen[mods[i]] = true
      out[#out + 1] = { names[i], mods[i] }
    end
  end
  return out
end

function Module:children()
  local out = {}
  for i, nc in ipairs(self:named_children()) do out[i] = nc[2] end
  return out
end

local function walk_modules(m, prefix, seen, out)
  if seen[m] then return end
  seen[m] = true
  out[#out + 1] = { prefix, m }
  local names, mods = m:_child_list()
  for i = 1, #names do
    walk_modules(mods[i], prefix == '' and names[i] or prefix .. '.' .. names[i], seen, out)
  end
end

function Module:named_modules()
  local out = {}
  walk_modules(self, '', {}, out)
  return out
end

function Module:modules()
  local out = {}
  for i, nm in ipairs(self:named_modules()) do out[i] = nm[2] end
  return out
end

local function named_members(self, list_field)
  local out, seen = {}, {}
  for _, nm in ipairs(self:named_modules()) do
    local prefix, m = nm[1], nm[2]
    for _, n in ipairs(m[list_field]) do
      local t = m._members[n]
      if t ~= nil then
        local key = util.key(t)
        if not seen[key] then
          seen[key] = true
          out[#out + 1] = { prefix == '' and n or prefix .. '.' .. n, t }
        end
      end
    end
  end
  return out
end

function Module:named_parameters() return named_members(self, '_param_names') end
function Module:named_buffers() return named_members(self, '_buffer_names') end

function Module:parameters()
  local out = {}
  for i, np in ipairs(named_members(self, '_param_names')) do out[i] = np[2] end
  return out
end

function Module:buffers()
  local out = {}
  for i, nb in ipairs(named_members(self, '_buffer_names')) do out[i] = nb[2] end
  return out
end

function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + p:numel() end
  return n
end

function Module:get_submodule(path)
  if path == '' then return self end
  local m, walked = self, {}
  for part in (path .. '.'):gmatch('([^.]*)%.') do
    local found
    local names, mods = m:_child_list()
    for i = 1, #names do
      if names[i] == part then found = mods[i] break end
    end
    if not found then
      raise(('fovea: %s has no submodule %s (%s%s has children: %s)'):format(self.__name, path,
        #walked > 0 and table.concat(walked, '.') .. ', a ' or '', m.__name, table.concat(names, ', ')))
    end
    walked[#walked + 1] = part
    m = found
  end
  return m
end

function Module:apply(fn)
  local names, mods = self:_child_list()
  for i = 1, #mods do mods[i]:apply(fn) end
  fn(self)
  return self
end

---------------------------------------------------------------------------------------
-- modes and gradients

function Module:train(mode)
  if mode == nil then mode = true end
  for _, m in ipairs(self:modules()) do rawset(m, 'training', mode and true or false) end
  return self
end

function Module:evaluate() return self:train(false) end
Module.eval = Module.evaluate

function Module:zero_grad(set_to_none)
  for _, p in ipairs(self:parameters()) do
    if set_to_none == false then
      local g = p.grad
      if g ~= nil then T.no_grad(function() g:zero_() end) end
    else
      p.grad = nil
    end
  end
  return self
end

function Module:requires_grad_(flag)
  if flag == nil then flag = true end
  for _, p in ipairs(self:parameters()) do p.requires_grad = flag end
  return self
end

---------------------------------------------------------------------------------------
-- conversion

function Module:to(what)
  local dt = dtypes.lookup(what)
  local target
  if dt then
    target = dtypes.name(dt)
    if target ~= 'float32' and target ~= 'float64' and target ~= 'float16' and target ~= 'bfloat16' then
      raise(('fovea: %s:to(%s): modules convert to floating dtypes only (float32 or float64)'):format(self.__name, what))
    end
  else
    dtypes.device_code(what) -- unknown device names are errors
  end
  local memo = {}
  local function convert(t)
    local key = util.key(t)
    if memo[key] then return memo[key] end
    local new = t
    if dt == nil then -- a device move: the module's tensors stay leaves, with their gradients
      new = T.no_grad(function() return t:to(what) end)
      if new ~= t then
        if t.requires_grad then new.requires_grad = true end
        local g = t.grad
        if g ~= nil then new.grad = T.no_grad(function() return g:to(what) end) end
      end
    elseif util.is_floating(t) and t:dtype() ~= target then
      new = T.no_grad(function() return t:to(target) end)
      if t.requires_grad then new.requires_grad = true end
      local g = t.grad
      if g ~= nil then new.grad = T.no_grad(function() return g:to(target) end) end
    end
    memo[key] = new
    return new
  end
  for _, m in ipairs(self:modules()) do
    for _, list in ipairs { m._param_names, m._buffer_names } do
      for _, n in ipairs(list) do
        local t = m._members[n]
        if t ~= nil then m._members[n] = convert(t) end
      end
    end
  end
  return self
end

function Module:float() return self:to('float32') end
function Module:double() return self:to('float64') end
function Module:cpu() return self:to('cpu') end
function Module:cuda(index) return self:to(index and ('cuda:' .. index) or 'cuda') end

---------------------------------------------------------------------------------------
-- state dicts

-- names, tensors (the module's own), kinds: parameters then persistent buffers of each
-- module, depth first, shared modules and tensors under every name (as torch).
local function state_entries(m, prefix, names, tensors, kinds)
  for _, n in ipairs(m._param_names) do
    local t = m._members[n]
    if t ~= nil then
      names[#names + 1], tensors[#tensors + 1], kinds[#kinds + 1] = prefix .. n, t, 'parameter'
    end
  end
  for _, n in ipairs(m._buffer_names) do
    local t = m._members[n]
    if t ~= nil and not m._non_persistent[n] then
      names[#names + 1], tensors[#tensors + 1], kinds[#kinds + 1] = prefix .. n, t, 'buffer'
    end
  end
  local cnames, mods = m:_child_list()
  for i = 1, #cnames do state_entries(mods[i], prefix .. cnames[i] .. '.', names, tensors, kinds) end
  return names, tensors, kinds
end

function Module:state_dict(opts)
  opts = util.check_options('state_dict', opts, { keep_vars = true })
  local names, tensors = state_entries(self, '', {}, {}, {})
  local sd = {}
  for i, n in ipairs(names) do sd[n] = opts.keep_vars and tensors[i] or tensors[i]:detach() end
  return sd
end

function Module:state_dict_keys()
  return (state_entries(self, '', {}, {}, {}))
end

local function quoted(list)
  local q = {}
  for i, n in ipairs(list) do q[i] = '"' .. n .. '"' end
  return table.concat(q, ', ')
end

function Module:load_state_dict(sd, opts)
  opts = util.check_options('load_state_dict', opts, { strict = true })
  if type(sd) ~= 'table' then raise('fovea: load_state_dict expects a table name -> tensor, got ' .. type(sd)) end
  local strict = opts.strict ~= false
  local names, tensors, kinds = state_entries(self, '', {}, {}, {})
  local expected, missing, problems = {}, {}, {}
  for i, n in ipairs(names) do
    expected[n] = true
    local src, dst = sd[n], tensors[i]
    if src == nil then
      missing[#missing + 1] = n
    elseif not is_tensor(src) then
      problems[#problems + 1] = ('%s in the state dict is a %s, not a tensor.'):format(n, kind_of(src))
    elseif not util.same_shape(src, dst) then
      problems[#problems + 1] = ('size mismatch for %s: copying a %s with shape %s from checkpoint, the shape in current model is %s.')
        :format(n, kinds[i] == 'parameter' and 'param' or 'buffer', util.shape(src), util.shape(dst))
    end
  end
  local unexpected = {}
  for k in pairs(sd) do
    if not expected[k] then unexpected[#unexpected + 1] = tostring(k) end
  end
  table.sort(unexpected)
  local lines = {}
  if strict and #unexpected > 0 then lines[#lines + 1] = 'Unexpected key(s) in state_dict: ' .. quoted(unexpected) .. '.' end
  if strict and #missing > 0 then lines[#lines + 1] = 'Missing key(s) in state_dict: ' .. quoted(missing) .. '.' end
  for _, p in ipairs(problems) do lines[#lines + 1] = p end
  if #lines > 0 then
    raise(('fovea: Error(s) in loading state_dict for %s:\n\t%s'):format(self.__name, table.concat(lines, '\n\t')))
  end
  T.no_grad(function()
    for i, n in ipairs(names) do
      local src = sd[n]
      if src ~= nil and src.p ~= tensors[i].p then tensors[i]:copy_(src) end
    end
  end)
  return { missing_keys = missing, unexpected_keys = unexpected }
end

-- m:save(path, metadata): the state dict as a safetensors file (fv.save).
function Module:save(path, metadata)
  local sd = self:state_dict()
  require('fovea.serialize').save(path, sd, metadata)
  return self
end

-- m:load(path, {strict = true}): load_state_dict of a safetensors file; returns m and
-- load_state_dict's result.
function Module:load(path, opts)
  local sd = require('fovea.serialize').load(path)
  return self, self:load_state_dict(sd, opts)
end

local function set_error_paths(on)
  local previous = error_paths
  error_paths = on and true or false
  clear_stack(1)
  depth = 0
  return previous
end

return {
  set_error_paths = set_error_paths,
  Module = Module,
  Parameter = Parameter,
  is_module = is_module,
}
