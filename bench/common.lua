-- bench/common.lua: what the benchmarks share: option parsing, timing (median wall time
-- after two warm-ups), peak RSS, running a PyTorch twin, and the side-by-side report.
local fv = require 'fovea'

local M = {}

-- --name value options over defaults; exits with a usage line on anything else.
function M.options(defaults, script)
  local opts = {}
  for k, v in pairs(defaults) do opts[k] = v end
  local i = 1
  while i <= #arg do
    local key = arg[i]:match('^%-%-([%w_]+)$')
    if not key or defaults[key] == nil or arg[i + 1] == nil then
      local names = {}
      for k, v in pairs(defaults) do names[#names + 1] = ('[--%s %s]'):format(k, tostring(v)) end
      table.sort(names)
      io.stderr:write('usage: luajit ' .. script .. ' ' .. table.concat(names, ' ') .. '\n')
      os.exit(2)
    end
    opts[key] = type(defaults[key]) == 'number' and tonumber(arg[i + 1]) or arg[i + 1]
    i = i + 2
  end
  return opts
end

-- Median wall seconds of fn over runs calls, after two warm-up calls.
function M.median_time(runs, fn)
  local times = {}
  for i = 1, runs + 2 do
    local start = fv.clock()
    fn()
    if i > 2 then times[#times + 1] = fv.clock() - start end
    collectgarbage('step')
  end
  table.sort(times)
  return times[math.ceil(#times / 2)]
end

function M.peak_rss()
  local f = io.open('/proc/self/status')
  local text = f:read('*a')
  f:close()
  return tonumber(text:match('VmHWM:%s*(%d+) kB')) * 1024
end

-- Runs a PyTorch twin with Debian's python3 ("seconds peak_bytes" on its last line);
-- returns {seconds, peak} or nil and the reason.
function M.python(command, env)
  local p = io.popen(('%s /usr/bin/python3 %s 2>&1'):format(env or '', command))
  local out = p:read('*a')
  p:close()
  local seconds, peak = out:match('([%d%.]+) (%d+)%s*$')
  if not seconds then return nil, out end
  return { tonumber(seconds), tonumber(peak) }
end

function M.report(title, seconds, peak, peers)
  print(title)
  print(('  %-18s %9.3f s  peak RSS %7.0f MiB'):format('fovea', seconds, peak / 2 ^ 20))
  local names = {}
  for name in pairs(peers) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local r = peers[name]
    if r then
      print(('  %-18s %9.3f s  peak RSS %7.0f MiB   fovea/peer: time %.2fx, memory %.2fx'):format(name, r[1],
        r[2] / 2 ^ 20, seconds / r[1], peak / r[2]))
    else
      print(('  %-18s unavailable (python3 with torch not found?)'):format(name))
    end
  end
end

return M
