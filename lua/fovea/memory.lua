-- memory.lua: keeps garbage tensors from piling up. The C core counts the bytes held by
-- live storages; Lua's collector cannot see them, so after an allocation that takes the
-- count more than soft_limit past what was live after the last collection, a full
-- collection runs (as Torch7 users had to do by hand); so does the end of each backward
-- pass (after_backward), when a step's activations have just become garbage.
local clib = require 'fovea.clib'
local C = clib.C

local M = {}
local soft_limit = 512 * 1024 * 1024
local baseline = 0
local collections = 0

local function collect()
  collectgarbage('collect')
  collections = collections + 1
  baseline = tonumber(C.fv_live_bytes())
end

function M.after_alloc()
  if tonumber(C.fv_live_bytes()) - baseline > soft_limit then collect() end
end

-- After a backward pass the step's activations are garbage that only a collection
-- frees (their C memory is invisible to Lua's collector). A full collection of a small
-- Lua heap costs about a millisecond, far less than a training step, so one runs here
-- whenever live memory grew by a sixteenth of the soft limit since the last.
function M.after_backward()
  if tonumber(C.fv_live_bytes()) - baseline > soft_limit / 16 then collect() end
end

-- Bytes of growth between automatic collections (default 512 MiB).
function M.set_soft_limit(bytes)
  assert(type(bytes) == 'number' and bytes > 0, 'fovea: soft limit must be a positive number of bytes')
  soft_limit = bytes
end

function M.soft_limit() return soft_limit end
function M.live_bytes() return tonumber(C.fv_live_bytes()) end
function M.peak_bytes() return tonumber(C.fv_peak_bytes()) end
function M.reset_peak() C.fv_reset_peak_bytes() end
function M.collections() return collections end

-- The CPU allocator's cache of released blocks: its size, a bound, and a flush.
function M.cached_bytes() return tonumber(C.fv_cached_bytes()) end
function M.set_cache_limit(bytes) clib.check(C.fv_set_cache_limit(bytes)) end
function M.empty_cache() C.fv_empty_cache() end

return M
