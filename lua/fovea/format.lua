-- format.lua: prints tensors as Torch7 did: the values (matrices one row per line,
-- higher dimensions as "(i,j,.,.) =" slices), then a summary line with dtype, shape and
-- device. Tensors of more than `threshold` elements show the first and last `edge`
-- entries of each dimension with "..." between.
local ffi = require 'ffi'
local clib = require 'fovea.clib'
local dtypes = require 'fovea.dtypes'

local C, raise = clib.C, clib.raise
local M = { threshold = 1000, edge = 3, linewidth = 80 }

-- Positions (1-based) shown along a dimension of size n.
local function shown_positions(n, abbreviate)
  local pos = {}
  if abbreviate and n > 2 * M.edge then
    for i = 1, M.edge do pos[#pos + 1] = i end
    pos[#pos + 1] = false -- the "..." marker
    for i = n - M.edge + 1, n do pos[#pos + 1] = i end
  else
    for i = 1, n do pos[i] = i end
  end
  return pos
end

-- A function giving the value at 1-based indices {i, j, ...}; reads all values at once
-- for small tensors and single elements for large ones.
local function value_reader(t, numel, abbreviate)
  local nd = t.ndim
  if not abbreviate then
    local buf = ffi.new('double[?]', math.max(numel, 1))
    clib.check(C.fv_copy_to_f64(t, buf, numel))
    local sizes = {}
    for d = 1, nd do sizes[d] = tonumber(t.sizes[d - 1]) end
    return function(idx)
      local flat = 0
      for d = 1, nd do flat = flat * sizes[d] + (idx[d] - 1) end
      return buf[flat]
    end
  end
  local index, value = ffi.new('int64_t[?]', math.max(nd, 1)), ffi.new('double[1]')
  return function(idx)
    for d = 1, nd do index[d - 1] = idx[d] - 1 end
    clib.check(C.fv_get_f64(t, index, value))
    return value[0]
  end
end

-- Chooses one number format for all shown values: integers, fixed or scientific.
local function number_format(values, integer_dtype)
  local maxabs, all_integer, finite = 0, true, false
  for _, v in ipairs(values) do
    if v == v and v ~= math.huge and v ~= -math.huge then
      finite = true
      local a = math.abs(v)
      if a > maxabs then maxabs = a end
      if v ~= math.floor(v) then all_integer = false end
    end
  end
  if not finite then return '%g' end
  if integer_dtype or (all_integer and maxabs < 1e9) then return '%.0f' end
  if maxabs >= 1e5 or maxabs < 1e-3 then return '%.4e' end
  return '%.4f'
end

local function show(v, fmt)
  if v ~= v then return 'nan' end
  if v == math.huge then return 'inf' end
  if v == -math.huge then return '-inf' end
  return fmt:format(v)
end

function M.tensor(handle)
  local t = handle.p
  local dims = {}
  for d = 1, t.ndim do dims[d] = tostring(tonumber(t.sizes[d - 1])) end
  local summary = ('[fovea.Tensor %s %s on %s%s]'):format(dtypes.name(t.scalar_type),
    t.ndim == 0 and 'scalar' or 'of size ' .. table.concat(dims, 'x'), ffi.string(C.fv_device_name(t.device_type)),
    t.storage == nil and ' (freed)' or '')
  if t.storage == nil then return summary end
  if t.device_type ~= C.FV_CPU then
    local ok, cpu = pcall(function() return handle:cpu() end)
    if not ok then return summary end
    return M.tensor(cpu):gsub('on cpu%]$', 'on ' .. ffi.string(C.fv_device_name(t.device_type)) .. ']')
  end
  local numel = tonumber(C.fv_tensor_numel(t))
  local nd = t.ndim
  if numel == 0 then return summary end
  local abbreviate = numel > M.threshold
  local read = value_reader(t, numel, abbreviate)
  local dtype = dtypes.name(t.scalar_type)
  local integer_dtype = dtype == 'int64' or dtype == 'uint8'
  if nd == 0 then
    local v = read({})
    return show(v, number_format({ v }, integer_dtype)) .. '\n' .. summary
  end

  local positions = {}
  for d = 1, nd do positions[d] = shown_positions(tonumber(t.sizes[d - 1]), abbreviate) end

  -- every shown value, to choose one format and width
  local all = {}
  local function collect(depth, idx)
    for _, p in ipairs(positions[depth]) do
      if p then
        idx[depth] = p
        if depth == nd then all[#all + 1] = read(idx) else collect(depth + 1, idx) end
      end
    end
  end
  collect(1, {})
  local fmt = number_format(all, integer_dtype)
  local width = 0
  for _, v in ipairs(all) do width = math.max(width, #show(v, fmt)) end
  local function cell(v) return (' '):rep(width - #show(v, fmt) + 1) .. show(v, fmt) end
  local ellipsis = (' '):rep(math.max(width - 2, 0)) .. '...'

  local lines = {}
  local function row_line(idx, last_dim)
    local parts = {}
    for _, p in ipairs(positions[last_dim]) do
      if p then
        idx[last_dim] = p
        parts[#parts + 1] = cell(read(idx))
      else
        parts[#parts + 1] = ellipsis
      end
    end
    return table.concat(parts)
  end
  local function matrix(idx)
    local rows = positions[nd - 1]
    for _, r in ipairs(rows) do
      if r then
        idx[nd - 1] = r
        lines[#lines + 1] = row_line(idx, nd)
      else
        lines[#lines + 1] = ' ...'
      end
    end
  end

  if nd == 1 then
    lines[1] = row_line({}, 1)
  elseif nd == 2 then
    matrix({})
  else
    local function slices(depth, idx)
      if depth == nd - 1 then
        local label = {}
        for d = 1, nd - 2 do label[d] = tostring(idx[d]) end
        lines[#lines + 1] = '(' .. table.concat(label, ',') .. ',.,.) = '
        matrix(idx)
        lines[#lines + 1] = ''
        return
      end
      for _, p in ipairs(positions[depth]) do
        if p then
          idx[depth] = p
          slices(depth + 1, idx)
        else
          lines[#lines + 1] = '(...)'
          lines[#lines + 1] = ''
        end
      end
    end
    slices(1, {})
  end
  lines[#lines + 1] = summary
  return table.concat(lines, '\n')
end

return M
