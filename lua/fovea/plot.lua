--[[ plot.lua: PNG plots of training curves and ROC curves, drawn by gnuplot (Debian
package gnuplot-nox, installed by make deps). The data go to gnuplot through temporary
files; gnuplot's own errors come back as Lua errors quoting its stderr.

  local plot = require 'fovea.plot'                  -- also fv.plot
  plot.curves('loss.png', {title = 'dual, MESSIDOR', xlabel = 'epoch', ylabel = 'loss',
    series = {{name = 'train loss', x = {1, 2, 3}, y = {0.9, 0.7, 0.6}},
              {name = 'test loss', y = {1.0, 0.8, 0.75}}}})           -- x: 1, 2, ...
  plot.training('run.png', 'runs/dual/log.csv')      -- loss | accuracy, AUC side by side
  plot.roc('roc.png', {{name = 'dual', fpr = r.fpr, tpr = r.tpr, auc = r.auc},
                       {name = 'resnet18', fpr = ..., tpr = ...}})

plot.curves(path, spec)   one panel of line plots. spec:
  series    an array of {name =, y = {...}, x = {...} (default 1..#y), axis = 'y2'
            (to draw on a second y axis at the right), style = 'lines' (default),
            'linespoints' or 'points', color = a gnuplot colour ('#1f77b4', 'red')};
            points whose x or y is NaN, infinite or missing (nil) are left out (the
            line joins the points around them)
  title, xlabel, ylabel, y2label, xrange = {lo, hi}, yrange, y2range, logy (true: a
  log scale on y), key (gnuplot's key position: 'top right', ...; default 'best':
  gnuplot's default), width, height (pixels, 800 x 500), grid (true)
plot.panels(path, {panels = {spec, spec, ...}, layout = {rows, cols} (1 x #panels),
  title =, width =, height =})   several such panels in one image (gnuplot multiplot);
  width defaults to 600 pixels per column, height to 450 per row
plot.training(path, rows, opts)   training curves side by side: loss on the left,
  the other metrics (accuracy, AUC, sensitivity, ...) on the right.
  rows: an array of rows (csvlog.read's first result) or the path of a csvlog file.
  opts: x ('epoch'; the row number when the rows lack it), loss (the columns of the left
  panel: by default those whose name holds 'loss'), metrics (the right panel's: by
  default the numeric columns naming acc, auc, sens, spec, prec, f1, recall),
  columns (the column order, csvlog.read's second result), title, width, height.
  Columns without a number are left out.
plot.roc(path, curves, opts)   ROC curves in the unit square with the chance diagonal.
  curves: an array of {name =, fpr = {...}, tpr = {...}, auc = (shown in the legend as
  "name (AUC 0.932)"; computed by the trapezoidal rule when absent)}; metrics.roc_curve's
  result with a name added will do. opts: title, width, height (600 x 600), digits (3)

Each returns path, width, height (of the PNG written, read back from its header). The
PNG is checked: it must exist, be non-empty and start with the PNG signature.

plot.gnuplot   the command to run ('gnuplot'); opts.gnuplot overrides it per call
plot.available(cmd)   true when gnuplot can be run, or false and the reason
plot.terminal(cmd)    'pngcairo' when gnuplot has it, else 'png'
]]
local M = {}

M.gnuplot = 'gnuplot'

-- Errors name the module and are blamed on the caller's line (clib.raise skips
-- fovea's own frames).
local raise = require('fovea.clib').raise
local read_file = require('fovea.data.fs').read
local function fail(msg) raise('fovea.plot: ' .. msg) end

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- A gnuplot single-quoted string: no escapes inside, '' stands for one quote.
local function gp_string(s)
  s = tostring(s):gsub('[\r\n]+', ' ')
  return "'" .. s:gsub("'", "''") .. "'"
end

local function exit_ok(a, b, c)
  -- Lua 5.1 / LuaJIT: a status number; with 5.2 compatibility: true|nil, 'exit', code
  if type(a) == 'number' then return a == 0 end
  return a == true and (c == nil or c == 0)
end


local available_cache, terminal_cache = {}, {}

function M.available(cmd)
  cmd = cmd or M.gnuplot
  if available_cache[cmd] == nil then
    local ok = exit_ok(os.execute(('command -v %s >/dev/null 2>&1'):format(shell_quote(cmd))))
    available_cache[cmd] = ok
  end
  if available_cache[cmd] then return true end
  return false, ('%s not found: install gnuplot-nox (make deps, or apt-get install -y gnuplot-nox)'):format(cmd)
end

local function need_gnuplot(cmd)
  local ok, why = M.available(cmd)
  if not ok then fail(why) end
end

function M.terminal(cmd)
  cmd = cmd or M.gnuplot
  if terminal_cache[cmd] == nil then
    need_gnuplot(cmd)
    local ok = exit_ok(os.execute(('%s -e %s >/dev/null 2>&1'):format(shell_quote(cmd),
      shell_quote('set terminal pngcairo'))))
    terminal_cache[cmd] = ok and 'pngcairo' or 'png'
  end
  return terminal_cache[cmd]
end

-- Width and height from a PNG's IHDR, or nil and why.
local function check_png(path)
  local data = read_file(path)
  if not data then return nil, 'no file was written' end
  if #data == 0 then return nil, 'the file is empty' end
  if data:sub(1, 8) ~= '\137PNG\r\n\26\n' then return nil, 'the file is not a PNG (bad signature)' end
  if #data < 24 then return nil, 'the PNG is cut short' end
  local function u32(i)
    local a, b, c, d = data:byte(i, i + 3)
    return ((a * 256 + b) * 256 + c) * 256 + d
  end
  return u32(17), u32(21)
end
M.check_png = check_png

-- Runs a gnuplot script whose data files are given by name -> array of lines; {{DATA
-- name}} in the script is replaced by the quoted temporary file of that name.
local function run(path, script, data, cmd)
  cmd = cmd or M.gnuplot
  need_gnuplot(cmd)
  if type(path) ~= 'string' or path == '' then fail('the output path must be a string') end
  local temps = {}
  local function tmp()
    local t = os.tmpname()
    temps[#temps + 1] = t
    return t
  end
  local ok, err = pcall(function()
    local names = {}
    for name, lines in pairs(data) do
      local t = tmp()
      local f = assert(io.open(t, 'wb'))
      f:write(table.concat(lines, '\n'), '\n')
      f:close()
      names[name] = t
    end
    script = script:gsub('{{DATA ([%w_]+)}}', function(name) return gp_string(names[name]) end)
    local script_file, err_file = tmp(), tmp()
    local f = assert(io.open(script_file, 'wb'))
    f:write(script)
    f:close()
    os.remove(path)
    local status = { os.execute(('%s %s >/dev/null 2>%s'):format(shell_quote(cmd),
      shell_quote(script_file), shell_quote(err_file))) }
    local stderr = (read_file(err_file) or ''):gsub('%s+$', '')
    if not exit_ok(unpack(status)) then
      error(('gnuplot failed drawing %s:\n%s'):format(path, stderr ~= '' and stderr or '(no message)'), 0)
    end
    local w, h = check_png(path)
    if not w then
      error(('gnuplot did not write %s: %s%s'):format(path, h, stderr ~= '' and '\n' .. stderr or ''), 0)
    end
    return w, h
  end)
  for _, t in ipairs(temps) do os.remove(t) end
  if not ok then fail(tostring(err)) end
  local w, h = check_png(path)
  return path, w, h
end

local function num(v)
  if type(v) ~= 'number' or v ~= v or v == math.huge or v == -math.huge then return '?' end
  return ('%.17g'):format(v)
end

-- The script's first lines: the PNG terminal.
local function setup_lines(width, height, cmd)
  local term = M.terminal(cmd)
  local font = term == 'pngcairo' and " font 'sans,10'" or ''
  return { ('set terminal %s size %d,%d noenhanced%s'):format(term, width, height, font) }
end

local STYLES = { lines = true, linespoints = true, points = true }

-- The commands of one panel; adds its series' data to data under unique names.
local function panel_lines(spec, data, prefix, where)
  if type(spec) ~= 'table' then fail(where .. ': expected a table') end
  local series = spec.series
  if type(series) ~= 'table' or #series == 0 then fail(where .. ': series must be a non-empty array') end
  local L = {}
  local function add(s) L[#L + 1] = s end
  add(spec.title and 'set title ' .. gp_string(spec.title) or 'unset title')
  add('set xlabel ' .. gp_string(spec.xlabel or ''))
  add('set ylabel ' .. gp_string(spec.ylabel or ''))
  if spec.grid ~= false then add('set grid') end
  if spec.key and spec.key ~= 'best' then add('set key ' .. spec.key) end
  if spec.logy then add('set logscale y') end
  local function range(name, r)
    if r then add(('set %s [%s:%s]'):format(name, r[1] and num(r[1]) or '*', r[2] and num(r[2]) or '*')) end
  end
  range('xrange', spec.xrange)
  range('yrange', spec.yrange)
  local uses_y2 = false
  local items = {}
  for i, s in ipairs(series) do
    local what = ('%s: series %d (%s)'):format(where, i, tostring(s.name))
    if type(s) ~= 'table' or type(s.y) ~= 'table' then fail(what .. ': needs y = {...}') end
    local x = s.x
    if x ~= nil and (type(x) ~= 'table' or #x ~= #s.y) then
      fail(('%s: x has %s values, y %d'):format(what, type(x) == 'table' and #x or type(x), #s.y))
    end
    local lines = {}
    for j = 1, #s.y do
      local xs, ys = num(x and x[j] or j), num(s.y[j])
      if xs ~= '?' and ys ~= '?' then lines[#lines + 1] = xs .. ' ' .. ys end
    end
    if #lines == 0 then fail(what .. ': no finite points to draw') end
    local style = s.style or 'lines'
    if not STYLES[style] then fail(what .. ': style must be lines, linespoints or points') end
    local name = prefix .. i
    data[name] = lines
    local axes = ''
    if s.axis == 'y2' then axes, uses_y2 = ' axes x1y2', true end
    local color = s.color and (' lc rgb ' .. gp_string(s.color)) or ''
    local width = style ~= 'points' and ' lw 2' or ''
    local pt = style ~= 'lines' and ' pt 7 ps 0.6' or ''
    items[#items + 1] = ('{{DATA %s}} using 1:2%s with %s%s%s%s title %s'):format(
      name, axes, style, width, pt, color, gp_string(s.name or ('series ' .. i)))
  end
  if uses_y2 then
    add('set y2label ' .. gp_string(spec.y2label or ''))
    add('set y2tics')
    add('set ytics nomirror')
    range('y2range', spec.y2range)
  end
  add('plot ' .. table.concat(items, ', \\\n     '))
  return L
end

local CURVE_OPTS = { series = true, title = true, xlabel = true, ylabel = true, y2label = true,
  xrange = true, yrange = true, y2range = true, logy = true, key = true, width = true,
  height = true, grid = true, gnuplot = true }

local function check_keys(t, allowed, where)
  for k in pairs(t) do
    if not allowed[k] then fail(where .. ': unknown option ' .. tostring(k)) end
  end
end

function M.curves(path, spec)
  if type(spec) ~= 'table' then fail('curves: expected (path, spec)') end
  need_gnuplot(spec.gnuplot)
  check_keys(spec, CURVE_OPTS, 'curves')
  local data = {}
  local head = setup_lines(spec.width or 800, spec.height or 500, spec.gnuplot)
  head[#head + 1] = 'set output ' .. gp_string(path)
  local body = panel_lines(spec, data, 's', 'curves')
  local script = table.concat(head, '\n') .. '\n' .. table.concat(body, '\n') .. '\nunset output\n'
  return run(path, script, data, spec.gnuplot)
end

function M.panels(path, spec)
  if type(spec) ~= 'table' or type(spec.panels) ~= 'table' or #spec.panels == 0 then
    fail('panels: expected (path, {panels = {spec, ...}})')
  end
  check_keys(spec, { panels = true, layout = true, title = true, width = true, height = true, gnuplot = true }, 'panels')
  need_gnuplot(spec.gnuplot)
  local n = #spec.panels
  local rows, cols = 1, n
  if spec.layout then rows, cols = spec.layout[1], spec.layout[2] end
  if rows * cols < n then fail(('panels: a %dx%d layout cannot hold %d panels'):format(rows, cols, n)) end
  local data = {}
  local head = setup_lines(spec.width or 600 * cols, spec.height or 450 * rows, spec.gnuplot)
  head[#head + 1] = 'set output ' .. gp_string(path)
  head[#head + 1] = ('set multiplot layout %d,%d%s'):format(rows, cols,
    spec.title and (' title ' .. gp_string(spec.title)) or '')
  for i, p in ipairs(spec.panels) do
    if type(p) == 'table' then check_keys(p, CURVE_OPTS, 'panels: panel ' .. i) end
    local body = panel_lines(p, data, 'p' .. i .. '_', 'panels: panel ' .. i)
    if i > 1 then
      -- undo the previous panel's settings (a reset inside a multiplot would end it)
      head[#head + 1] = 'unset logscale; unset y2tics; unset y2label; set ytics mirror; set key default'
      head[#head + 1] = 'set xrange [*:*]; set yrange [*:*]; set y2range [*:*]; unset grid'
    end
    for _, l in ipairs(body) do head[#head + 1] = l end
  end
  head[#head + 1] = 'unset multiplot'
  head[#head + 1] = 'unset output'
  return run(path, table.concat(head, '\n') .. '\n', data, spec.gnuplot)
end

local METRIC_PATTERNS = { 'acc', 'auc', 'sens', 'spec', 'prec', 'f1', 'recall' }

function M.training(path, rows, opts)
  opts = opts or {}
  check_keys(opts, { x = true, loss = true, metrics = true, columns = true, title = true,
    width = true, height = true, gnuplot = true }, 'training')
  need_gnuplot(opts.gnuplot)
  local columns = opts.columns
  if type(rows) == 'string' then
    local csvlog = require 'fovea.csvlog'
    local r, c = csvlog.read(rows)
    rows, columns = r, columns or c
  end
  if type(rows) ~= 'table' or #rows == 0 then fail('training: no rows to plot') end
  if not columns then
    local seen = {}
    columns = {}
    for _, r in ipairs(rows) do
      for k in pairs(r) do
        if not seen[k] then seen[k] = true; columns[#columns + 1] = k end
      end
    end
    table.sort(columns)
  end
  local xname = opts.x or 'epoch'
  local x = {}
  local has_x = true
  for i, r in ipairs(rows) do
    x[i] = r[xname]
    if type(x[i]) ~= 'number' then has_x = false end
  end
  if not has_x then
    for i = 1, #rows do x[i] = i end
    xname = opts.x and (xname .. ' (row)') or 'row'
  end
  local function numeric(c)
    for _, r in ipairs(rows) do
      local v = r[c]
      if type(v) == 'number' and v == v then return true end
    end
    return false
  end
  local function pick(list, test)
    local out = {}
    if list then
      for _, c in ipairs(list) do if numeric(c) then out[#out + 1] = c end end
      return out
    end
    for _, c in ipairs(columns) do
      if c ~= xname and numeric(c) and test(c:lower()) then out[#out + 1] = c end
    end
    return out
  end
  local loss = pick(opts.loss, function(c) return c:find('loss', 1, true) ~= nil end)
  local mets = pick(opts.metrics, function(c)
    if c:find('loss', 1, true) then return false end
    for _, p in ipairs(METRIC_PATTERNS) do if c:find(p, 1, true) then return true end end
    return false
  end)
  local function series_of(cols)
    local s = {}
    for _, c in ipairs(cols) do
      local y = {}
      for i, r in ipairs(rows) do y[i] = type(r[c]) == 'number' and r[c] or 0 / 0 end
      s[#s + 1] = { name = c, x = x, y = y, style = #rows <= 30 and 'linespoints' or 'lines' }
    end
    return s
  end
  local panels = {}
  if #loss > 0 then
    panels[#panels + 1] = { title = 'loss', xlabel = xname, ylabel = 'loss', key = 'below',
      series = series_of(loss) }
  end
  if #mets > 0 then
    panels[#panels + 1] = { title = 'metrics', xlabel = xname, ylabel = 'value', key = 'below',
      series = series_of(mets) }
  end
  if #panels == 0 then fail('training: no loss or metric columns with numbers to plot') end
  return M.panels(path, { panels = panels, title = opts.title, width = opts.width,
    height = opts.height, gnuplot = opts.gnuplot })
end

local function trapezoid(fpr, tpr)
  local area = 0
  for i = 2, #fpr do area = area + (fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2 end
  return area
end

function M.roc(path, curves, opts)
  opts = opts or {}
  check_keys(opts, { title = true, width = true, height = true, digits = true, gnuplot = true }, 'roc')
  need_gnuplot(opts.gnuplot)
  if type(curves) ~= 'table' or #curves == 0 then fail('roc: expected an array of curves {name =, fpr =, tpr =}') end
  local digits = opts.digits or 3
  local data, items = {}, {}
  for i, c in ipairs(curves) do
    if type(c) ~= 'table' or type(c.fpr) ~= 'table' or type(c.tpr) ~= 'table' or #c.fpr ~= #c.tpr or #c.fpr == 0 then
      fail(('roc: curve %d (%s) needs fpr and tpr arrays of the same, non-zero length'):format(i, tostring(c and c.name)))
    end
    local auc = c.auc or trapezoid(c.fpr, c.tpr)
    local auc_text = auc == auc and ('%.' .. digits .. 'f'):format(auc) or 'n/a'
    local lines = {}
    for j = 1, #c.fpr do
      local xs, ys = num(c.fpr[j]), num(c.tpr[j])
      if xs ~= '?' and ys ~= '?' then lines[#lines + 1] = xs .. ' ' .. ys end
    end
    if #lines == 0 then
      fail(('roc: curve %d (%s) has no finite points%s'):format(i, tostring(c.name),
        c.note and ' (' .. c.note .. ')' or ''))
    end
    data['roc' .. i] = lines
    items[#items + 1] = ('{{DATA roc%d}} using 1:2 with lines lw 2 title %s'):format(i,
      gp_string(('%s (AUC %s)'):format(c.name or ('curve ' .. i), auc_text)))
  end
  items[#items + 1] = "x with lines dt 2 lw 1 lc rgb 'gray50' title 'chance'"
  local L = setup_lines(opts.width or 600, opts.height or opts.width or 600, opts.gnuplot)
  local add = function(s) L[#L + 1] = s end
  add('set output ' .. gp_string(path))
  add('set title ' .. gp_string(opts.title or 'ROC'))
  add("set xlabel 'false positive rate (1 - specificity)'")
  add("set ylabel 'true positive rate (sensitivity)'")
  add('set size ratio -1')
  add('set xrange [0:1]')
  add('set yrange [0:1]')
  add('set xtics 0.2')
  add('set ytics 0.2')
  add('set grid')
  add('set key bottom right')
  add('plot ' .. table.concat(items, ', \\\n     '))
  add('unset output')
  return run(path, table.concat(L, '\n') .. '\n', data, opts.gnuplot)
end


return M
