--[[ csvlog.lua: a CSV training log, one line per epoch (or step), flushed as written so
that a crash loses nothing; read back to resume a run or to plot it.

  local csvlog = require 'fovea.csvlog'                  -- also fv.csvlog
  local log = csvlog.open('runs/dual/log.csv', {'epoch', 'loss', 'accuracy', 'auc'},
                          {append = true})
  log:write{epoch = 1, loss = 0.693, accuracy = 0.71, auc = 0.80}
  log:close()
  local rows, columns = csvlog.read('runs/dual/log.csv')  -- rows[1].loss == 0.693

csvlog.open(path, columns, opts)
  columns  an array of column names, in order (nil when appending to an existing log:
           its header is used)
  opts     append  false: start a new file (replacing an old one); true: add to the
                   file when it exists and is not empty, after checking that its header
                   names the same columns in the same order (an error otherwise), or
                   start it with the header when it does not
  The header line is written once, when the file is started.
log:write(row)  one line: row[name] for each column; a missing value is an empty cell;
                a name that is not a column is an error (a typo would otherwise lose the
                value). Numbers are written so that they read back exactly (integers as
                integers, NaN as nan, infinities as inf / -inf); strings are quoted when
                they hold a comma, a quote or a line break. The line goes out with one
                write and a flush.
log:close()     closes the file (also done by the garbage collector)
log.path, log.columns

csvlog.read(path) -> rows, columns. rows: an array of tables keyed by column name;
cells that are numbers (including nan, inf, -inf) become numbers, empty cells are
absent (nil), other cells stay strings. A last line cut short by a crash (no final
newline) is kept with the cells it has.
]]
local M = {}

-- Errors name the module and are blamed on the caller's line (clib.raise skips
-- fovea's own frames).
local raise = require('fovea.clib').raise
local read_text = require('fovea.data.fs').read
local function fail(msg) raise('fovea.csvlog: ' .. msg) end

local function format_value(v)
  local t = type(v)
  if t == 'number' then
    if v ~= v then return 'nan' end
    if v == math.huge then return 'inf' elseif v == -math.huge then return '-inf' end
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return ('%d'):format(v) end
    for _, f in ipairs({ '%.15g', '%.16g', '%.17g' }) do
      local s = f:format(v)
      if tonumber(s) == v then return s end
    end
    return ('%.17g'):format(v)
  elseif t == 'boolean' then
    return tostring(v)
  elseif t == 'string' then
    if v:find('[,"\r\n]') or v:match('^%s') or v:match('%s$') then
      return '"' .. v:gsub('"', '""') .. '"'
    end
    return v
  elseif v == nil then
    return ''
  end
  return format_value(tostring(v))
end
M.format_value = format_value

-- Splits CSV text into records of raw cells (RFC 4180: quoted cells may hold commas,
-- doubled quotes and line breaks). Returns an array of arrays of {text, quoted}.
local function parse(text)
  local records, record, i, n = {}, {}, 1, #text
  if n == 0 then return records end
  while true do
    local cell, quoted
    if text:sub(i, i) == '"' then
      quoted = true
      local parts, j = {}, i + 1
      while true do
        local q = text:find('"', j, true)
        if not q then parts[#parts + 1] = text:sub(j); i = n + 1; break end
        parts[#parts + 1] = text:sub(j, q - 1)
        if text:sub(q + 1, q + 1) == '"' then
          parts[#parts + 1] = '"'
          j = q + 2
        else
          i = q + 1
          break
        end
      end
      cell = table.concat(parts)
      -- anything between the closing quote and the separator is kept as text
      local e = text:find('[,\r\n]', i)
      if e then cell = cell .. text:sub(i, e - 1); i = e else cell = cell .. text:sub(i); i = n + 1 end
    else
      local e = text:find('[,\r\n]', i)
      if e then cell = text:sub(i, e - 1); i = e else cell = text:sub(i); i = n + 1 end
    end
    record[#record + 1] = { cell, quoted }
    local c = text:sub(i, i)
    if c == ',' then
      i = i + 1
    else
      records[#records + 1] = record
      record = {}
      if c == '\r' and text:sub(i + 1, i + 1) == '\n' then i = i + 2
      elseif c == '\r' or c == '\n' then i = i + 1 end
      if i > n then break end
    end
  end
  return records
end

local function convert(cell)
  local text, quoted = cell[1], cell[2]
  if quoted then return text end
  if text == '' then return nil end
  if text == 'nan' or text == '-nan' or text == 'NaN' then return 0 / 0 end
  if text == 'inf' or text == 'Inf' then return math.huge end
  if text == '-inf' or text == '-Inf' then return -math.huge end
  local v = tonumber(text)
  if v then return v end
  return text
end


function M.read(path)
  local text, err = read_text(path)
  if not text then fail('read: cannot open ' .. tostring(path) .. ': ' .. tostring(err)) end
  if text:sub(1, 3) == '\239\187\191' then text = text:sub(4) end   -- a UTF-8 BOM
  local records = parse(text)
  if #records == 0 then return {}, {} end
  local columns = {}
  for j, cell in ipairs(records[1]) do columns[j] = cell[1] end
  local rows = {}
  for r = 2, #records do
    local rec = records[r]
    if not (#rec == 1 and rec[1][1] == '' and not rec[1][2]) then   -- skip blank lines
      if #rec > #columns then
        fail(('read: %s line %d has %d cells, the header %d'):format(path, r, #rec, #columns))
      end
      local row = {}
      for j, cell in ipairs(rec) do row[columns[j]] = convert(cell) end
      rows[#rows + 1] = row
    end
  end
  return rows, columns
end

local Log = {}
Log.__index = Log

local function header_line(columns)
  local cells = {}
  for j, c in ipairs(columns) do cells[j] = format_value(c) end
  return table.concat(cells, ',') .. '\n'
end

function M.open(path, columns, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= 'append' then fail('open: unknown option ' .. tostring(k)) end
  end
  if type(path) ~= 'string' then fail('open: path must be a string') end
  local existing
  if opts.append then
    local text = read_text(path)
    if text and text ~= '' then
      local first = parse(text:match('^[^\r\n]*'))[1] or {}
      existing = {}
      for j, cell in ipairs(first) do existing[j] = cell[1] end
    end
  end
  if columns == nil then
    if not existing then fail('open: columns are needed to start ' .. path) end
    columns = existing
  end
  if type(columns) ~= 'table' or #columns == 0 then fail('open: columns must be a non-empty array of names') end
  local index = {}
  for j, c in ipairs(columns) do
    if type(c) ~= 'string' then fail(('open: column %d is a %s, not a name'):format(j, type(c))) end
    if index[c] then fail('open: column ' .. c .. ' is named twice') end
    index[c] = j
  end
  if existing then
    if table.concat(existing, '\0') ~= table.concat(columns, '\0') then
      fail(('open: %s has the columns %s, not %s; start a new log or append with the same columns')
        :format(path, table.concat(existing, ','), table.concat(columns, ',')))
    end
  end
  local f, err = io.open(path, existing and 'ab' or 'wb')
  if not f then fail('open: cannot open ' .. path .. ': ' .. tostring(err)) end
  if existing then
    -- a log cut short mid-line by a crash: start on a fresh line
    local text = read_text(path)
    if text:sub(-1) ~= '\n' then f:write('\n') end
  else
    f:write(header_line(columns))
  end
  f:flush()
  local copy = {}
  for j, c in ipairs(columns) do copy[j] = c end
  return setmetatable({ path = path, columns = copy, index = index, file = f }, Log)
end

function Log:write(row)
  if not self.file then fail('write: the log ' .. self.path .. ' is closed') end
  if type(row) ~= 'table' then fail('write: expected a table of column values, got ' .. type(row)) end
  for k in pairs(row) do
    if not self.index[k] then
      fail(('write: %s is not a column of %s (columns: %s)'):format(tostring(k), self.path,
        table.concat(self.columns, ', ')))
    end
  end
  local cells = {}
  for j, c in ipairs(self.columns) do cells[j] = format_value(row[c]) end
  local ok, err = self.file:write(table.concat(cells, ',') .. '\n')
  if not ok then fail('write: ' .. self.path .. ': ' .. tostring(err)) end
  self.file:flush()
  return self
end

function Log:close()
  if self.file then
    self.file:close()
    self.file = nil
  end
end

return M
