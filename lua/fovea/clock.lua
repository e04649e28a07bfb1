-- clock.lua: a monotonic wall clock in seconds (clock_gettime), for progress, ETA and
-- benchmarks; os.clock counts CPU time of all threads, which is not what they need.
local ffi = require 'ffi'

ffi.cdef [[
  typedef struct fv_timespec { long tv_sec; long tv_nsec; } fv_timespec;
  int clock_gettime(int clock_id, fv_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new('fv_timespec')

return function()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
