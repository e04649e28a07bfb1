-- cli.lua: command-line options for recipes. Each option has a name, a default (its
-- type sets how the value is read: number, string or boolean flag) and a help line;
-- --help prints them all with their defaults and exits.
--   local opts = fv.cli.parse(arg, {
--     {'epochs', 10, 'training epochs'},
--     {'data', '', 'data set folder (empty: the built-in synthetic set)'},
--     {'resume', false, 'continue from the last checkpoint'},
--   }, {usage = 'luajit recipes/x.lua [options]', about = 'What the recipe does.'})
-- Writes: --epochs 5, --epochs=5, --resume (flag), --no-resume.
local M = {}

local function help(spec, info)
  local lines = { info.usage or 'usage: luajit <recipe> [options]' }
  if info.about then lines[#lines + 1] = info.about end
  lines[#lines + 1] = ''
  lines[#lines + 1] = 'options:'
  for _, o in ipairs(spec) do
    local name, default, text = o[1], o[2], o[3]
    local shown = type(default) == 'boolean' and ('--' .. name) or ('--' .. name .. ' ' .. (
      type(default) == 'number' and 'N' or 'TEXT'))
    local default_text = type(default) == 'string' and (default == '' and '(none)' or default) or tostring(default)
    lines[#lines + 1] = ('  %-24s %s (default: %s)'):format(shown, text, default_text)
  end
  lines[#lines + 1] = '  --help                   this list'
  return table.concat(lines, '\n')
end

-- Returns the options table, or prints help and exits (0), or prints an error and
-- exits (2) on an unknown option or a bad value.
function M.parse(argv, spec, info)
  info = info or {}
  local opts, by_name = {}, {}
  for _, o in ipairs(spec) do
    opts[o[1]] = o[2]
    by_name[o[1]] = o
  end
  local function fail(msg)
    io.stderr:write(msg .. ' (--help lists the options)\n')
    os.exit(2)
  end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == '--help' or a == '-h' then
      print(help(spec, info))
      os.exit(0)
    end
    local name, value = a:match('^%-%-([%w_%-]+)=(.*)$')
    if not name then name = a:match('^%-%-([%w_%-]+)$') end
    if not name then fail('unexpected argument ' .. a) end
    name = name:gsub('%-', '_')
    local negated = name:match('^no_(.+)$')
    if negated and by_name[negated] and type(by_name[negated][2]) == 'boolean' then
      opts[negated] = false
    elseif not by_name[name] then
      fail('unknown option --' .. name)
    elseif type(by_name[name][2]) == 'boolean' then
      opts[name] = value == nil or value == 'true' or value == '1'
    else
      if value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then fail('--' .. name .. ' needs a value') end
      end
      if type(by_name[name][2]) == 'number' then
        local n = tonumber(value)
        if not n then fail('--' .. name .. ' expects a number, got ' .. value) end
        opts[name] = n
      else
        opts[name] = value
      end
    end
    i = i + 1
  end
  return opts
end

M.help = help
return M
