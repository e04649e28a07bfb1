--[[ progress.lua: a progress bar for long loops.

  local progress = require 'fovea.progress'            -- also fv.progress
  local bar = progress.new{total = #batches, label = 'epoch 3/10', smooth = 0.9}
  for i, batch in ipairs(batches) do
    ...
    bar:update(i, {loss = loss, ['img/s'] = rate})
  end
  bar:finish{loss = mean_loss}

shows, on stderr,

  epoch 3/10 [=============>                ] 45/100 loss 0.420 img/s 12.3 elapsed 0:35 ETA 0:42

On a terminal the line is redrawn in place (\r), at most every `interval` seconds (0.1)
and always at the end; elsewhere (CI logs, files) a plain line is printed each time
another `every` percent (10) is done, and finish() prints the last one. Times come
from fv.clock (monotonic), the ETA from the mean time per step so far.

progress.new(opts)
  total     the number of steps (nil: unknown; no bar and no ETA then)
  label     text at the start of the line ('')
  width     the bar's width in characters (30)
  file      where to write (io.stderr)
  tty       true / false: redraw in place or print lines; by default true when file is
            io.stderr (or io.stdout) and that is a terminal (asked once, with test -t)
  interval  seconds between redraws on a terminal (0.1)
  every     percent between plain lines (10); with no total, a line every 10 s
  smooth    show an exponential running mean of the numeric fields instead of their
            last value: a number beta in [0, 1) for all fields (mean = beta * mean +
            (1 - beta) * value, started at the first value), or a table {loss = 0.9}
            for the fields named; nil: the last values
  fields    an array of field names giving their order on the line; fields not named
            come after, sorted, rates (names ending in /s) last
  formats   {name = '%.4f'} formats for fields; numbers are otherwise shown with about
            3 significant digits (0.420, 12.3, 153)
  clock     a function returning seconds (fv.clock); for tests

bar:update(done, fields)   done steps of total (fields: a table name -> number or
                           string, optional); returns the bar
bar:advance(n, fields)     done + n (n = 1 by default)
bar:finish(fields)         the final line, with the elapsed time ("done in 1:17"; the
                           count is the last one reported, or total when none was);
                           returns the elapsed seconds
bar:line()                 the current line's text, without drawing
bar.values                 the shown (possibly smoothed) field values
]]
local M = {}

-- Errors name the module and are blamed on the caller's line (clib.raise skips
-- fovea's own frames).
local raise = require('fovea.clib').raise
local function fail(msg) raise('fovea.progress: ' .. msg) end

local OPTS = { total = true, label = true, width = true, file = true, tty = true,
  interval = true, every = true, smooth = true, fields = true, formats = true, clock = true }

local tty_cache = {}

-- Whether file descriptor fd (1 or 2) is a terminal, asked once per process.
local function isatty(fd)
  if tty_cache[fd] == nil then
    local ok, answer = pcall(function()
      local p = io.popen(('test -t %d && echo tty'):format(fd))
      if not p then return false end
      local out = p:read('*a') or ''
      p:close()
      return out:match('tty') ~= nil
    end)
    tty_cache[fd] = ok and answer or false
  end
  return tty_cache[fd]
end
M.isatty = isatty

-- m:ss, or h:mm:ss from an hour on.
local function format_time(s)
  if s ~= s or s == math.huge or s < 0 then return '?' end
  s = math.floor(s + 0.5)
  local h, m = math.floor(s / 3600), math.floor(s % 3600 / 60)
  s = s % 60
  if h > 0 then return ('%d:%02d:%02d'):format(h, m, s) end
  return ('%d:%02d'):format(m, s)
end
M.format_time = format_time

-- About 3 significant digits, fixed point: 0.420, 4.20, 12.3, 153; tiny or huge values
-- in exponent form.
local function format_number(v)
  if v ~= v then return 'nan' end
  if v == math.huge then return 'inf' elseif v == -math.huge then return '-inf' end
  local a = math.abs(v)
  if v == math.floor(v) and a < 1e6 then return ('%d'):format(v) end
  if a == 0 then return '0' end
  if a < 1e-3 or a >= 1e6 then return ('%.2e'):format(v) end
  if a < 1 then return ('%.3f'):format(v) end
  if a < 10 then return ('%.2f'):format(v) end
  if a < 100 then return ('%.1f'):format(v) end
  return ('%.0f'):format(v)
end
M.format_number = format_number

local Bar = {}
Bar.__index = Bar

function M.new(opts)
  opts = opts or {}
  if type(opts) ~= 'table' then fail('new: options must be a table') end
  for k in pairs(opts) do if not OPTS[k] then fail('new: unknown option ' .. tostring(k)) end end
  if opts.total ~= nil and (type(opts.total) ~= 'number' or opts.total < 0) then
    fail('new: total must be a number >= 0, got ' .. tostring(opts.total))
  end
  local file = opts.file or io.stderr
  local tty = opts.tty
  if tty == nil then
    if file == io.stderr then tty = isatty(2)
    elseif file == io.stdout then tty = isatty(1)
    else tty = false end
  end
  local smooth = opts.smooth
  if smooth ~= nil and type(smooth) ~= 'number' and type(smooth) ~= 'table' then
    fail('new: smooth must be a number in [0, 1) or a table of them')
  end
  local clock = opts.clock or require 'fovea.clock'
  local self = setmetatable({
    total = opts.total, label = opts.label or '', width = opts.width or 30, file = file,
    tty = tty, interval = opts.interval or 0.1, every = opts.every or 10, smooth = smooth,
    order = opts.fields or {}, formats = opts.formats or {}, clock = clock,
    values = {}, seen = {}, done = 0, start = clock(), last_draw = -math.huge,
    last_line = nil,
    last_bucket = 0, last_len = 0, finished = false, steps = 0,
  }, Bar)
  self.last_line = self.start
  return self
end

local function beta_of(self, name)
  local s = self.smooth
  if type(s) == 'number' then return s end
  if type(s) == 'table' then return s[name] end
  return nil
end

local function merge(self, fields)
  if fields == nil then return end
  if type(fields) ~= 'table' then fail('update: fields must be a table, got ' .. type(fields)) end
  for name, v in pairs(fields) do
    local beta = type(v) == 'number' and beta_of(self, name)
    local old = self.values[name]
    if beta and type(old) == 'number' and old == old and v == v then
      self.values[name] = beta * old + (1 - beta) * v
    else
      self.values[name] = v
    end
    self.seen[name] = true
  end
end

local function field_names(self)
  local names, listed = {}, {}
  for _, n in ipairs(self.order) do
    listed[n] = true
    if self.seen[n] then names[#names + 1] = n end
  end
  local rest = {}
  for n in pairs(self.seen) do if not listed[n] then rest[#rest + 1] = n end end
  table.sort(rest, function(a, b)
    local ra, rb = tostring(a):match('/s$') ~= nil, tostring(b):match('/s$') ~= nil
    if ra ~= rb then return rb end
    return tostring(a) < tostring(b)
  end)
  for _, n in ipairs(rest) do names[#names + 1] = n end
  return names
end

function Bar:line(final)
  local parts = {}
  if self.label ~= '' then parts[#parts + 1] = self.label end
  local total, done = self.total, self.done
  if total then
    local frac = total > 0 and math.min(math.max(done / total, 0), 1) or 1
    local w = self.width
    local fill = math.floor(frac * w + 1e-9)
    local bar
    if fill >= w then bar = ('='):rep(w)
    else bar = ('='):rep(fill) .. '>' .. (' '):rep(w - fill - 1) end
    if w > 0 then parts[#parts + 1] = '[' .. bar .. ']' end
    local tw = #tostring(total)
    parts[#parts + 1] = ('%' .. tw .. 'd/%d'):format(done, total)
  else
    parts[#parts + 1] = tostring(done)
  end
  for _, name in ipairs(field_names(self)) do
    local v = self.values[name]
    local text
    if self.formats[name] then text = self.formats[name]:format(v)
    elseif type(v) == 'number' then text = format_number(v)
    else text = tostring(v) end
    parts[#parts + 1] = tostring(name) .. ' ' .. text
  end
  local elapsed = self.clock() - self.start
  if final then
    parts[#parts + 1] = 'done in ' .. format_time(elapsed)
  else
    parts[#parts + 1] = 'elapsed ' .. format_time(elapsed)
    if total then
      local eta = done > 0 and elapsed / done * math.max(total - done, 0) or 0 / 0
      parts[#parts + 1] = 'ETA ' .. format_time(eta)
    end
  end
  return table.concat(parts, ' ')
end

local function draw(self, final)
  local text = self:line(final)
  if self.tty then
    local pad = math.max(self.last_len - #text, 0)
    self.file:write('\r', text, (' '):rep(pad), final and '\n' or '')
    self.last_len = #text
  else
    self.file:write(text, '\n')
  end
  self.file:flush()
end

function Bar:update(done, fields)
  if self.finished then return self end
  if type(done) ~= 'number' then fail('update: done must be a number, got ' .. type(done)) end
  self.done = done
  merge(self, fields)
  local now = self.clock()
  if self.tty then
    if now - self.last_draw >= self.interval or (self.total and done >= self.total) then
      self.last_draw = now
      draw(self, false)
    end
  elseif self.total and self.total > 0 then
    -- a line each time another `every` percent is done; 100 % is left to finish()
    local bucket = math.floor(done / self.total * 100 / self.every + 1e-9)
    if bucket > self.last_bucket and done < self.total then
      self.last_bucket = bucket
      draw(self, false)
    end
  elseif now - self.last_line >= 10 then   -- unknown total, not a terminal: every 10 s
    self.last_line = now
    draw(self, false)
  end
  return self
end

function Bar:advance(n, fields)
  return self:update(self.done + (n or 1), fields)
end

function Bar:finish(fields)
  if self.finished then return self.elapsed end
  merge(self, fields)
  if self.total and self.done < self.total and self.done == 0 then self.done = self.total end
  draw(self, true)
  self.finished = true
  self.elapsed = self.clock() - self.start
  return self.elapsed
end

return M
