--[[ nn/containers.lua: modules that hold a list of modules.

  nn.Sequential(m1, m2, ...)      (or nn.Sequential({m1, m2, ...})) runs its modules in
                                  order: y = m_n(...m_2(m_1(x)))
  nn.ModuleList({m1, m2, ...})    holds modules (registered, so their parameters count)
                                  with no forward of its own

Both keep their modules in the Lua array part, 1-based as everything in Lua:
  seq[i], seq:get(i)     module i (i from 1; negative from the end with get)
  #seq, seq:size()       the count (# works because the modules are raw array entries)
  seq[i] = m             replaces module i (or appends at #seq + 1)
  seq:add(m)             appends, returns seq (ModuleList: ml:append(m), ml:extend(list))
  seq:insert(m, i)       inserts at position i (default: the end), returns seq
  seq:remove(i)          removes and returns module i (default: the last)
  ipairs(seq)            iterates the modules
Their children are NAMED "0", "1", ... (0-based, as torch.nn names them), so paths and
state_dict keys match torchvision's: layer1.0.conv1.weight is layer1[1].conv1.weight.
Modules assigned to string-named fields of a container are children too, after the list.
]]
local clib = require 'fovea.clib'
local M = require 'fovea.nn.module'

local raise = clib.raise
local Module, is_module = M.Module, M.is_module

local function check_module(self, m, what)
  if not is_module(m) then
    raise(('fovea: %s: %s must be a module, got %s'):format(self.__name, what, type(m) == 'table' and 'a plain table' or type(m)))
  end
  return m
end

-- Shared methods of the list containers.
local function install_list_methods(cls)
  -- integer keys go to the array part; others register as usual
  function cls.__assign(self, k, v)
    if type(k) == 'number' then
      local n = #self
      if k ~= math.floor(k) or k < 1 or k > n + 1 then
        raise(('fovea: %s: index %s out of range (1 .. %d)'):format(self.__name, tostring(k), n + 1))
      end
      if v == nil then
        raise(('fovea: %s: use :remove(i) to remove a module'):format(self.__name))
      end
      rawset(self, k, check_module(self, v, 'entry ' .. k))
      return
    end
    return Module.__instance_mt.__newindex(self, k, v)
  end

  function cls:_child_list()
    local names, mods = {}, {}
    for i = 1, #self do
      names[i] = tostring(i - 1)
      mods[i] = self[i]
    end
    local more_names, more = Module._child_list(self)
    for i = 1, #more do
      names[#names + 1] = more_names[i]
      mods[#mods + 1] = more[i]
    end
    return names, mods
  end

  function cls:get(i)
    local n = #self
    if type(i) ~= 'number' or i == 0 or i ~= math.floor(i) or i > n or i < -n then
      raise(('fovea: %s: index %s out of range (1 .. %d, or negative from the end)'):format(self.__name, tostring(i), n))
    end
    return self[i > 0 and i or n + i + 1]
  end

  function cls:size() return #self end

  function cls:add(m)
    rawset(self, #self + 1, check_module(self, m, 'add: the argument'))
    return self
  end

  function cls:insert(m, i)
    local n = #self
    i = i or n + 1
    if type(i) ~= 'number' or i < 1 or i > n + 1 or i ~= math.floor(i) then
      raise(('fovea: %s: insert position %s out of range (1 .. %d)'):format(self.__name, tostring(i), n + 1))
    end
    table.insert(self, i, check_module(self, m, 'insert: the argument'))
    return self
  end

  function cls:remove(i)
    local n = #self
    i = i or n
    if type(i) ~= 'number' or i < 1 or i > n or i ~= math.floor(i) then
      raise(('fovea: %s: remove position %s out of range (1 .. %d)'):format(self.__name, tostring(i), n))
    end
    return table.remove(self, i)
  end

  function cls:init(...)
    local args, n = { ... }, select('#', ...)
    if n == 1 and type(args[1]) == 'table' and not is_module(args[1]) then
      args = args[1]
      n = #args
    end
    for i = 1, n do self:add(args[i]) end
  end
end

local Sequential = Module:extend('Sequential')
install_list_methods(Sequential)

function Sequential:forward(x, ...)
  local n = #self
  if n == 0 then return x, ... end
  x = self[1](x, ...)
  for i = 2, n do x = self[i](x) end
  return x
end

local ModuleList = Module:extend('ModuleList')
install_list_methods(ModuleList)
ModuleList.append = ModuleList.add

-- On the class: subclassing (ModuleList:extend('Name')); on an instance: appends every
-- module of a list.
function ModuleList.extend(self, arg)
  if not is_module(self) then return Module.extend(self, arg) end
  if type(arg) ~= 'table' or is_module(arg) then raise('fovea: ModuleList:extend expects a list of modules') end
  for i = 1, #arg do self:add(arg[i]) end
  return self
end

function ModuleList:forward()
  raise('fovea: ModuleList has no forward; index it (list[i](x)) or iterate it (ipairs(list)) in your module\'s forward')
end

return { Sequential = Sequential, ModuleList = ModuleList }
