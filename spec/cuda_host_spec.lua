-- cuda_host_spec.lua: the CUDA backend's host logic on a machine without a GPU.
-- spec/cuda_host/test_cuda_host.cpp drives cuda/allocator.cu (over cuda/block_pool.c),
-- cuda/transfer.cu and cuda/side_stream.cu, with cuda/errors.cu, against a fake CUDA
-- runtime (spec/cuda_host/fake_cudart.cpp) linked in place of libcudart: the caching
-- allocator's per-stream pools and held blocks, the out-of-memory retry, pinned memory,
-- uploads in flight and their sources, the exit drain, the side stream's events, and the
-- CUDA errors left behind. `make cuda-host-test` builds it with nvcc (host code only; no
-- GPU needed); under `make sanitize` with the sanitizers too (FOVEA_BUILD and
-- FOVEA_SANITIZE, as spec/c_programs_spec.lua). Each scenario runs in a process of its
-- own. Without nvcc the cases are pending, never passed. The harness under valgrind and
-- ThreadSanitizer is too slow for the specs: spec/cuda_host/run_all.sh runs everything.
local helpers = require 'spec.helpers'
local run = helpers.run
local build = os.getenv('FOVEA_BUILD') or 'build'
local sanitize = os.getenv('FOVEA_SANITIZE') or ''

local function nvcc_found()
  local ok = os.execute('command -v nvcc >/dev/null 2>&1 || test -x /usr/local/cuda/bin/nvcc')
  return ok == 0 or ok == true
end

-- scenario, what it checks, environment (FOVEA_NO_ALLOC_CACHE is 0 unless set here:
-- `make sanitize` sets it to 1 for the whole run)
local scenarios = {
  { 'main', 'the caching allocator, pinned memory, uploads and the side stream', '' },
  { 'main', 'the same with a runtime that leaves no "not ready" error behind', 'FAKE_NOTREADY_CLEAN=1' },
  { 'nocache', 'the allocators with caching off', 'FOVEA_NO_ALLOC_CACHE=1' },
  { 'exitdrain', 'uploads in flight at exit, drained', '' },
  { 'exitdrain', 'uploads in flight at exit, drained, caching off', 'FOVEA_NO_ALLOC_CACHE=1' },
  { 'threads', 'pinned memory from threads beside uploads', '' },
  { 'threads', 'pinned memory from threads beside uploads, caching off', 'FOVEA_NO_ALLOC_CACHE=1' },
  { 'fragmentation', 'a cached block too big to lend, lent when no segment can be had', '' },
}

describe('CUDA host logic against a fake runtime (spec/cuda_host/)', function()
  local has_nvcc, built, build_log
  local program = build .. '/spec/cuda_host/test_cuda_host'
  setup(function()
    has_nvcc = nvcc_found()
    if not has_nvcc then return end
    -- without `make sanitize`'s LD_PRELOAD of the sanitizer runtimes, which crashes nvcc
    local status
    status, build_log = run(('env -u LD_PRELOAD make -s cuda-host-test BUILD=%s SANITIZE="%s" CFLAGS="-O1 -g"')
      :format(build, sanitize))
    built = status == 0
  end)

  local function require_build()
    if not has_nvcc then pending('nvcc not found (PATH or /usr/local/cuda/bin): spec/cuda_host is not built') end
    assert(built, 'make cuda-host-test failed:\n' .. tostring(build_log))
  end

  it('links the fake runtime, not libcudart', function()
    require_build()
    local status, out = run('ldd ' .. program)
    assert(status == 0, out)
    assert.is_nil(out:match('libcudart'), out)
    assert.matches('libfovea%.so', out)
  end)

  for _, s in ipairs(scenarios) do
    local scenario, what, env = s[1], s[2], s[3]
    it(('%s: %s%s'):format(scenario, what, env ~= '' and (' (' .. env .. ')') or ''), function()
      require_build()
      local status, out = run(('env FOVEA_NO_ALLOC_CACHE=0 FAKE_NOTREADY_CLEAN=0 %s %s %s')
        :format(env, program, scenario))
      assert(status == 0, out)
      local checks, failed = out:match(scenario .. ': (%d+) checks, (%d+) failed')
      assert(checks and tonumber(checks) > 0 and tonumber(failed) == 0, out)
      assert.is_nil(out:match('BAD CALL'), out)
      if scenario == 'exitdrain' then assert.matches('exitdrain: host_frees 3 of 3, .*: ok', out) end
      if scenario == 'fragmentation' then assert.matches('alloc%(9 MiB%) succeeded', out) end
    end)
  end
end)
