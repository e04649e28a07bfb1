-- serialize.lua: tensors to and from safetensors files, and training checkpoints, over
-- the C reader and writer in core/safetensors.c (API and format: core/fovea_io.h).
--
--   fv.save(path, {name = tensor, ...}, {key = 'value', ...})   -- metadata optional
--   local tensors, metadata = fv.load(path)
--   fv.save_checkpoint(path, state)
--   local state = fv.load_checkpoint(path)
--
-- Files are written atomically (a temporary file, fsync, rename): a crash mid-save
-- leaves the previous file as it was. Tensors of any dtype fovea stores in safetensors
-- (float32, float64, int64, uint8), any strides; they load as contiguous CPU tensors.
-- Metadata values are strings (numbers and booleans are written with tostring).
--
-- Checkpoint layout: one safetensors file that the reference readers (Python's
-- safetensors, PyTorch) open as any other.
--   - state.model, a flat table name -> tensor, becomes the tensors "model.<name>"
--     (names as they are: "model.conv1.weight").
--   - Every other entry of state (state.optimizer, state.rng, state.epoch,
--     state.step, and anything else) is flattened into dotted paths, one component per
--     table key: "optimizer.state.3.exp_avg" is state.optimizer.state[3].exp_avg.
--     Integer keys are written in decimal; string keys as they are, except that '%',
--     '.' and ':' are written %25, %2E and %3A, and a string key that reads as an
--     integer (or is empty) has its first character written as %XX too, so
--     state.optimizer.state['3'] is "optimizer.state.%33" and keys come back with
--     their types.
--   - Tensors at those paths are tensors of the file under the path's name.
--   - Scalars are __metadata__ entries under the path's name, a type tag, a colon and
--     the value as text:
--       "number:0.001"   Lua numbers; integers up to 2^64 in plain decimal ("%.0f" of the
--                        double, exact), others as "%.17g" (exact too), and
--                        "inf", "-inf", "nan"
--       "string:adam"    strings (UTF-8, no NUL bytes)
--       "boolean:true"   booleans
--       "uint64:18446744073709551615", "int64:-5"
--                        64-bit integer cdata (an fv_generator's seed and offset are
--                        uint64_t): decimal strings, so rng state up to 2^64 - 1 is exact
--       "table:"         an empty table, so that it comes back (state.optimizer.state
--                        before the first step)
--   - "fovea:checkpoint" = "1" in __metadata__ marks the file (no path encodes to it).
-- So state.rng = {seed = 42, offset = 1234} is "rng.seed" = "number:42" and
-- "rng.offset" = "number:1234"; state.epoch = 3 is "epoch" = "number:3".
-- load_checkpoint rebuilds the same nested tables: tensors (contiguous, CPU), numbers,
-- strings, booleans, uint64_t/int64_t cdata and empty tables where they were.
local ffi = require 'ffi'
local clib = require 'fovea.clib'
local tensor = require 'fovea.tensor'

local C, raise = clib.C, clib.raise
local is_tensor, wrap = tensor.is_tensor, tensor.wrap

local M = {}

local CHECKPOINT_KEY = 'fovea:checkpoint'
local CHECKPOINT_VERSION = '1'

local out1 = ffi.new('fv_tensor*[1]')
local file_out = ffi.new('fv_safetensors*[1]')

local function check_path(op, path)
  if type(path) ~= 'string' or path == '' then
    raise(('fovea: %s: path must be a non-empty string, got %s'):format(op, type(path)))
  end
  if path:find('\0', 1, true) then raise(('fovea: %s: path contains a NUL byte'):format(op)) end
end

local function check_text(op, what, s)
  if s:find('\0', 1, true) then raise(('fovea: %s: %s contains a NUL byte'):format(op, what)) end
end

-- Writes names[i] -> tensors[i] and the metadata pairs (arrays of strings).
local function write(op, path, names, tensors, meta_keys, meta_values)
  local n, n_meta = #names, #meta_keys
  local c_names = ffi.new('const char*[?]', math.max(n, 1))
  local c_tensors = ffi.new('const fv_tensor*[?]', math.max(n, 1))
  for i = 1, n do
    c_names[i - 1] = names[i]
    c_tensors[i - 1] = tensors[i].p
  end
  local c_keys = ffi.new('const char*[?]', math.max(n_meta, 1))
  local c_values = ffi.new('const char*[?]', math.max(n_meta, 1))
  for i = 1, n_meta do
    c_keys[i - 1] = meta_keys[i]
    c_values[i - 1] = meta_values[i]
  end
  -- names, tensors, meta_keys and meta_values keep the strings and tensors alive
  local status = C.fv_safetensors_save(path, n, c_names, c_tensors, n_meta, c_keys, c_values)
  if status ~= 0 then raise('fovea: ' .. ffi.string(C.fv_last_error())) end
end

-- The sorted keys of t (strings).
local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- fv.save(path, tensors, metadata): tensors maps names to tensors; metadata (optional)
-- maps string keys to strings (numbers and booleans are converted with tostring).
function M.save(path, tensors, metadata)
  check_path('save', path)
  if type(tensors) ~= 'table' or is_tensor(tensors) then
    raise('fovea: save: expected a table of name = tensor, got ' .. type(tensors))
  end
  for k, v in pairs(tensors) do
    if type(k) ~= 'string' then raise(('fovea: save: tensor names must be strings, got %s %s'):format(type(k), tostring(k))) end
    check_text('save', 'tensor name ' .. ('%q'):format(k), k)
    if not is_tensor(v) then raise(('fovea: save: tensors[%q] is a %s, expected a tensor'):format(k, type(v))) end
  end
  local names = sorted_keys(tensors)
  local list = {}
  for i, name in ipairs(names) do list[i] = tensors[name] end
  local keys, values = {}, {}
  if metadata ~= nil then
    if type(metadata) ~= 'table' then raise('fovea: save: metadata must be a table of strings, got ' .. type(metadata)) end
    for k, v in pairs(metadata) do
      if type(k) ~= 'string' then raise(('fovea: save: metadata keys must be strings, got %s %s'):format(type(k), tostring(k))) end
      local tv = type(v)
      if tv ~= 'string' and tv ~= 'number' and tv ~= 'boolean' then
        raise(('fovea: save: metadata[%q] is a %s, expected a string'):format(k, tv))
      end
      check_text('save', ('metadata key %q'):format(k), k)
      check_text('save', ('metadata[%q]'):format(k), tostring(v))
    end
    keys = sorted_keys(metadata)
    for i, k in ipairs(keys) do values[i] = tostring(metadata[k]) end
  end
  write('save', path, names, list, keys, values)
end

-- fv.load(path) -> {name = tensor, ...}, {key = value, ...}: every tensor of the file as
-- a contiguous CPU tensor, and the file's metadata (strings).
function M.load(path)
  check_path('load', path)
  if C.fv_safetensors_open(file_out, path) ~= 0 then raise('fovea: ' .. ffi.string(C.fv_last_error())) end
  local f = ffi.gc(file_out[0], C.fv_safetensors_close)
  local tensors, metadata = {}, {}
  for i = 0, C.fv_safetensors_count(f) - 1 do
    local name = ffi.string(C.fv_safetensors_name(f, i))
    if C.fv_safetensors_get(out1, f, name) ~= 0 then
      local msg = ffi.string(C.fv_last_error())
      C.fv_safetensors_close(ffi.gc(f, nil))
      raise('fovea: ' .. msg)
    end
    tensors[name] = wrap(out1[0])
  end
  for i = 0, C.fv_safetensors_meta_count(f) - 1 do
    metadata[ffi.string(C.fv_safetensors_meta_key(f, i))] = ffi.string(C.fv_safetensors_meta_value(f, i))
  end
  C.fv_safetensors_close(ffi.gc(f, nil))
  return tensors, metadata
end

---------------------------------------------------------------------------------------
-- checkpoints

local function escape_char(c) return ('%%%02X'):format(c:byte()) end

-- One path component for table key k.
local function encode_key(k, where)
  if type(k) == 'number' then
    if k ~= math.floor(k) or math.abs(k) >= 2 ^ 53 then
      raise(('fovea: save_checkpoint: key %s in %s is not an integer or a string'):format(tostring(k), where))
    end
    return ('%d'):format(k)
  elseif type(k) == 'string' then
    local s = k:gsub('[%%%.:]', escape_char)
    if s == '' then return '%' end   -- "%" alone: the empty string (see decode_key)
    if s:match('^%-?%d+$') then s = escape_char(s:sub(1, 1)) .. s:sub(2) end
    return s
  end
  raise(('fovea: save_checkpoint: key %s in %s is a %s; keys must be strings or integers'):format(
    tostring(k), where, type(k)))
end

local function decode_key(s)
  if s:match('^%-?%d+$') then return tonumber(s) end
  if s == '%' then return '' end
  if s:find('%', 1, true) then
    if s:find('%%%x?%X') or s:find('%%%x?$') then return nil end
    s = s:gsub('%%(%x%x)', function(h) return string.char(tonumber(h, 16)) end)
  end
  return s
end

-- "state.optimizer.state[3].exp_avg" for messages.
local function show_path(parts)
  local out = { 'state' }
  for _, k in ipairs(parts) do
    if type(k) == 'string' and k:match('^[%a_][%w_]*$') then out[#out + 1] = '.' .. k
    else out[#out + 1] = ('[%s]'):format(type(k) == 'string' and ('%q'):format(k) or tostring(k)) end
  end
  return table.concat(out)
end

local function number_text(x)
  if x ~= x then return 'nan' end
  if x == math.huge then return 'inf' end
  if x == -math.huge then return '-inf' end
  if x == math.floor(x) and math.abs(x) <= 2 ^ 64 then return ('%.0f'):format(x) end
  return ('%.17g'):format(x)
end

local u64_t, i64_t = ffi.typeof('uint64_t'), ffi.typeof('int64_t')
local U64_MAX = 0xffffffffffffffffULL
local I64_MIN_MAG = 0x8000000000000000ULL

local function u64_text(v) return (tostring(v):gsub('U?LL$', '')) end

-- Decimal digits (at most 2^64 - 1) as a uint64_t, or nil.
local function parse_u64(s)
  if not s:match('^%d+$') or #s > 20 then return nil end
  local v = ffi.new('uint64_t', 0)
  for i = 1, #s do
    local d = s:byte(i) - 48
    if v > (U64_MAX - d) / 10 then return nil end
    v = v * 10 + d
  end
  return v
end

local function parse_i64(s)
  local neg, digits = s:match('^(%-?)(%d+)$')
  if not digits then return nil end
  local mag = parse_u64(digits)
  if not mag then return nil end
  if neg == '-' then
    if mag > I64_MIN_MAG then return nil end
    return -ffi.cast(i64_t, mag)
  end
  if mag >= I64_MIN_MAG then return nil end
  return ffi.cast(i64_t, mag)
end

-- "tag:text" for a scalar leaf, or nil when v is not one.
local function scalar_text(v, parts)
  local tv = type(v)
  if tv == 'number' then return 'number:' .. number_text(v) end
  if tv == 'boolean' then return 'boolean:' .. tostring(v) end
  if tv == 'string' then
    check_text('save_checkpoint', show_path(parts), v)
    return 'string:' .. v
  end
  if tv == 'cdata' then
    if ffi.istype(u64_t, v) then return 'uint64:' .. u64_text(v) end
    if ffi.istype(i64_t, v) then return 'int64:' .. u64_text(v) end
  end
  return nil
end

local function scalar_value(text, key, path)
  local tag, body = text:match('^(%w+):(.*)$')
  local v
  if tag == 'number' then
    if body == 'nan' then v = 0 / 0
    elseif body == 'inf' then v = math.huge
    elseif body == '-inf' then v = -math.huge
    elseif body:match('^[-+]?[%d.]+[eE]?[-+]?%d*$') then v = tonumber(body) end
  elseif tag == 'string' then v = body
  elseif tag == 'boolean' then
    if body == 'true' then v = true elseif body == 'false' then v = false end
  elseif tag == 'uint64' then v = parse_u64(body)
  elseif tag == 'int64' then v = parse_i64(body)
  elseif tag == 'table' and body == '' then v = {}
  end
  if v == nil then
    raise(('fovea: load_checkpoint %q: metadata %q has a value %q that is not a tagged scalar'):format(
      path, key, #text > 60 and text:sub(1, 60) .. '...' or text))
  end
  return v
end

-- The keys of table t (but skip) as {key, encoded} pairs sorted by encoded text.
local function encoded_keys(t, parts, skip)
  local list = {}
  for k in pairs(t) do
    if k ~= skip then list[#list + 1] = { k, encode_key(k, show_path(parts)) } end
  end
  table.sort(list, function(a, b) return a[2] < b[2] end)
  return list
end

-- fv.save_checkpoint(path, state): state.model (name -> tensor), state.optimizer (nested
-- tables of tensors and scalars), state.rng, state.epoch, state.step and any other
-- entries of the same kinds, in one safetensors file (layout above).
function M.save_checkpoint(path, state)
  check_path('save_checkpoint', path)
  if type(state) ~= 'table' or is_tensor(state) then
    raise('fovea: save_checkpoint: state must be a table, got ' .. type(state))
  end
  local names, tensors, keys, values = {}, {}, { CHECKPOINT_KEY }, { CHECKPOINT_VERSION }
  local function add_tensor(name, t) names[#names + 1] = name; tensors[#tensors + 1] = t end
  local function add_meta(k, v) keys[#keys + 1] = k; values[#values + 1] = v end

  if state.model ~= nil then
    local model = state.model
    if type(model) ~= 'table' or is_tensor(model) then
      raise('fovea: save_checkpoint: state.model must be a table of name = tensor, got ' .. type(model))
    end
    local mnames = {}
    for k, v in pairs(model) do
      if type(k) ~= 'string' then
        raise(('fovea: save_checkpoint: state.model has a %s key %s; parameter names are strings'):format(type(k), tostring(k)))
      end
      if not is_tensor(v) then
        raise(('fovea: save_checkpoint: state.model[%q] is a %s, expected a tensor'):format(k, type(v)))
      end
      check_text('save_checkpoint', ('state.model name %q'):format(k), k)
      mnames[#mnames + 1] = k
    end
    table.sort(mnames)
    for _, k in ipairs(mnames) do add_tensor('model.' .. k, model[k]) end
    if #mnames == 0 then add_meta('model', 'table:') end
  end

  local active = {}   -- tables on the current path, to refuse cycles
  local parts = {}
  local function walk(v, encoded)
    if is_tensor(v) then return add_tensor(encoded, v) end
    local text = scalar_text(v, parts)
    if text then return add_meta(encoded, text) end
    if type(v) ~= 'table' then
      raise(('fovea: save_checkpoint: %s is a %s; checkpoints hold tensors, numbers, strings, booleans, '
        .. '64-bit integers and tables of them'):format(show_path(parts), type(v)))
    end
    if active[v] then raise(('fovea: save_checkpoint: %s refers back to a table that holds it'):format(show_path(parts))) end
    if next(v) == nil then return add_meta(encoded, 'table:') end
    active[v] = true
    for _, entry in ipairs(encoded_keys(v, parts)) do
      parts[#parts + 1] = entry[1]
      walk(v[entry[1]], encoded .. '.' .. entry[2])
      parts[#parts] = nil
    end
    active[v] = nil
  end
  active[state] = true
  for _, entry in ipairs(encoded_keys(state, {}, 'model')) do
    parts[1] = entry[1]
    walk(state[entry[1]], entry[2])
    parts[1] = nil
  end
  write('save_checkpoint', path, names, tensors, keys, values)
end

-- fv.load_checkpoint(path) -> state, rebuilt as save_checkpoint wrote it.
function M.load_checkpoint(path)
  check_path('load_checkpoint', path)
  local tensors, metadata = M.load(path)
  if metadata[CHECKPOINT_KEY] == nil then
    raise(('fovea: load_checkpoint %q: not a fovea checkpoint (no %q in its metadata; fv.load reads any safetensors file)')
      :format(path, CHECKPOINT_KEY))
  end
  if metadata[CHECKPOINT_KEY] ~= CHECKPOINT_VERSION then
    raise(('fovea: load_checkpoint %q: checkpoint version %q, this fovea reads version %s'):format(
      path, metadata[CHECKPOINT_KEY], CHECKPOINT_VERSION))
  end
  local state = {}
  local function place(name, value)
    local comps = {}
    for part in (name .. '.'):gmatch('([^.]*)%.') do
      local k = decode_key(part)
      if k == nil then raise(('fovea: load_checkpoint %q: entry %q has a badly escaped key %q'):format(path, name, part)) end
      comps[#comps + 1] = k
    end
    local node = state
    for i = 1, #comps - 1 do
      local k = comps[i]
      if node[k] == nil then node[k] = {} end
      node = node[k]
      if type(node) ~= 'table' or is_tensor(node) then
        raise(('fovea: load_checkpoint %q: entry %q runs through a value that is not a table'):format(path, name))
      end
    end
    local k = comps[#comps]
    local old = node[k]
    if old ~= nil then
      -- an empty-table marker for a table that also has entries is harmless
      if type(value) == 'table' and not is_tensor(value) and type(old) == 'table' and not is_tensor(old) then return end
      raise(('fovea: load_checkpoint %q: entry %q is given twice or clashes with another'):format(path, name))
    end
    node[k] = value
  end
  local tnames = {}
  for name in pairs(tensors) do tnames[#tnames + 1] = name end
  table.sort(tnames)
  for _, name in ipairs(tnames) do
    local t = tensors[name]
    if name:sub(1, 6) == 'model.' then
      state.model = state.model or {}
      if type(state.model) ~= 'table' or is_tensor(state.model) then
        raise(('fovea: load_checkpoint %q: state.model is not a table'):format(path))
      end
      state.model[name:sub(7)] = t
    else
      place(name, t)
    end
  end
  local mkeys = {}
  for k in pairs(metadata) do if k ~= CHECKPOINT_KEY then mkeys[#mkeys + 1] = k end end
  table.sort(mkeys)
  for _, k in ipairs(mkeys) do
    local v = scalar_value(metadata[k], k, path)
    if k == 'model' then
      if type(v) ~= 'table' then raise(('fovea: load_checkpoint %q: metadata "model" is not a table marker'):format(path)) end
      state.model = state.model or v
    else
      place(k, v)
    end
  end
  return state
end

return M
