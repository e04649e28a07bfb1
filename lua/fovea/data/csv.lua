-- csv.lua: reading and writing small CSV files (RFC 4180: quoted fields with "" for a
-- quote, commas and newlines inside quotes; CRLF or LF). Enough for annotation sheets
-- and index files; data stay in Lua tables.
local M = {}

-- Rows of a CSV text as lists of strings. A form feed (xls2csv's sheet break) ends a
-- row. Empty lines are skipped.
function M.parse(text, sep)
  sep = sep or ','
  local rows, row, field = {}, {}, {}
  local i, n, quoted, was_quoted = 1, #text, false, false
  local function end_field()
    row[#row + 1] = table.concat(field)
    field, was_quoted = {}, false
  end
  local function end_row()
    end_field()
    if not (#row == 1 and row[1] == '') then rows[#rows + 1] = row end
    row = {}
  end
  while i <= n do
    local ch = text:sub(i, i)
    if quoted then
      if ch == '"' then
        if text:sub(i + 1, i + 1) == '"' then
          field[#field + 1] = '"'
          i = i + 1
        else
          quoted = false
        end
      else
        field[#field + 1] = ch
      end
    elseif ch == '"' and #field == 0 and not was_quoted then
      quoted, was_quoted = true, true
    elseif ch == sep then
      end_field()
    elseif ch == '\n' or ch == '\f' then
      end_row()
    elseif ch ~= '\r' then
      field[#field + 1] = ch
    end
    i = i + 1
  end
  if #field > 0 or #row > 0 then end_row() end
  return rows
end

-- Rows as tables keyed by the header's names (trimmed of spaces), and the header.
function M.records(text, sep)
  local rows = M.parse(text, sep)
  local header = rows[1] or {}
  for k, name in ipairs(header) do header[k] = name:match('^%s*(.-)%s*$') end
  local out = {}
  for r = 2, #rows do
    local rec = {}
    for k, name in ipairs(header) do rec[name] = rows[r][k] end
    out[#out + 1] = rec
  end
  return out, header
end

local function quote(v)
  v = tostring(v)
  if v:find('[,"\r\n]') then return '"' .. v:gsub('"', '""') .. '"' end
  return v
end

-- CSV text for rows (lists of values).
function M.format(rows)
  local lines = {}
  for _, row in ipairs(rows) do
    local cells = {}
    for k, v in ipairs(row) do cells[k] = quote(v) end
    lines[#lines + 1] = table.concat(cells, ',')
  end
  return table.concat(lines, '\n') .. '\n'
end

return M
