-- nn/util.lua: small helpers shared by the fovea.nn files (no classes here).
--   util.read_args(who, positional_names, allowed, ...)
--       reads a constructor's trailing arguments: numbers or pairs {h, w} fill
--       positional_names in order (PyTorch's positional style, e.g. stride then
--       padding), then an options table (string keys) may come last; option names not
--       in allowed (a set) are errors naming the option. Returns the options table.
--   util.pair(v, who, what)      a number or {h, w} as a table {h, w}
--   util.pyfloat(x)              x as Python's repr(float) writes it: 1e-05, 0.1, 1.0
--   util.pybool(b)               'True' or 'False'
--   util.pyvalue(v)              numbers as integers (3) or floats (0.5), pairs as (3, 3)
--   util.shape(t)                '2x3' (a tensor's shape, 'scalar' for 0-dim)
--   util.key(t)                  a number identifying a tensor's C object (dedup)
local ffi = require 'ffi'
local clib = require 'fovea.clib'

local raise = clib.raise
local util = {}

local function is_options(v)
  return type(v) == 'table' and (next(v) == nil or v[1] == nil) and getmetatable(v) == nil
end

function util.read_args(who, positional, allowed, ...)
  local n = select('#', ...)
  local opts, out = nil, {}
  for i = 1, n do
    local v = select(i, ...)
    if is_options(v) then
      if i ~= n then raise(('fovea: %s: the options table must be the last argument'):format(who)) end
      opts = v
    elseif v ~= nil then
      if i > #positional then
        raise(('fovea: %s: too many arguments (after the sizes it takes %s, then an options table)')
          :format(who, #positional > 0 and table.concat(positional, ', ') or 'only an options table'))
      end
      out[positional[i]] = v
    end
  end
  for k, v in pairs(opts or {}) do
    if not allowed[k] then
      local names = {}
      for name in pairs(allowed) do names[#names + 1] = name end
      table.sort(names)
      raise(('fovea: %s: unknown option %s (options: %s)'):format(who, tostring(k), table.concat(names, ', ')))
    end
    if out[k] ~= nil then raise(('fovea: %s: %s is given twice'):format(who, k)) end
    out[k] = v
  end
  return out
end

-- Checks an options table's names only (for constructors without positional extras).
function util.check_options(who, opts, allowed)
  if opts == nil then return {} end
  if not is_options(opts) then raise(('fovea: %s: expected an options table, got %s'):format(who, tostring(opts))) end
  return util.read_args(who, {}, allowed, opts)
end

function util.pair(v, who, what)
  if type(v) == 'number' then return { v, v } end
  if type(v) == 'table' and type(v[1]) == 'number' and type(v[2]) == 'number' and v[3] == nil then
    return { v[1], v[2] }
  end
  raise(('fovea: %s: %s must be a number or a pair {h, w}, got %s'):format(who, what, tostring(v)))
end

function util.positive_int(v, who, what)
  if type(v) ~= 'number' or v ~= math.floor(v) or v < 1 then
    raise(('fovea: %s: %s must be a positive integer, got %s'):format(who, what, tostring(v)))
  end
  return v
end

function util.pyfloat(x)
  if x ~= x then return 'nan' end
  if x == math.huge then return 'inf' end
  if x == -math.huge then return '-inf' end
  if x == 0 then return 1 / x < 0 and '-0.0' or '0.0' end
  local s
  for p = 0, 16 do
    s = ('%.' .. p .. 'e'):format(x)
    if tonumber(s) == x then break end
  end
  local sign, int, frac, exp = s:match('^(-?)(%d)%.?(%d*)e([-+]%d+)$')
  exp = tonumber(exp)
  local digits = (int .. frac):gsub('0+$', '')
  if digits == '' then digits = '0' end
  if exp < -4 or exp >= 16 then
    local m = digits:sub(1, 1) .. (#digits > 1 and '.' .. digits:sub(2) or '')
    return ('%s%se%s%02d'):format(sign, m, exp < 0 and '-' or '+', math.abs(exp))
  end
  if exp < 0 then return sign .. '0.' .. ('0'):rep(-exp - 1) .. digits end
  if #digits <= exp + 1 then return sign .. digits .. ('0'):rep(exp + 1 - #digits) .. '.0' end
  return sign .. digits:sub(1, exp + 1) .. '.' .. digits:sub(exp + 2)
end

function util.pybool(b) return b and 'True' or 'False' end

function util.pyvalue(v)
  if type(v) == 'number' then
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return ('%d'):format(v) end
    return util.pyfloat(v)
  end
  if type(v) == 'table' then
    local parts = {}
    for i = 1, #v do parts[i] = util.pyvalue(v[i]) end
    return '(' .. table.concat(parts, ', ') .. (#v == 1 and ',)' or ')')
  end
  if type(v) == 'boolean' then return util.pybool(v) end
  if v == nil then return 'None' end
  return tostring(v)
end

function util.shape(t)
  local dims = {}
  for d = 1, t.p.ndim do dims[d] = tostring(tonumber(t.p.sizes[d - 1])) end
  return #dims > 0 and table.concat(dims, 'x') or 'scalar'
end

function util.same_shape(a, b)
  if a.p.ndim ~= b.p.ndim then return false end
  for d = 0, a.p.ndim - 1 do
    if a.p.sizes[d] ~= b.p.sizes[d] then return false end
  end
  return true
end

function util.key(t) return tonumber(ffi.cast('intptr_t', t.p)) end

local floating = { float32 = true, float64 = true, float16 = true, bfloat16 = true }
function util.is_floating(t) return floating[t:dtype()] == true end

return util
