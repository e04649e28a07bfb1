-- c_programs_spec.lua: builds the C test programs in spec/c/ (make ctest) against the
-- library under test and runs them: image I/O and processing against fixtures (PNG
-- colour types, hostile files, OpenCV's CLAHE), the raw nn kernels against naive
-- references and finite differences, the device plumbing against a stand-in
-- backend, and the CUDA caching allocator's bookkeeping (cuda/block_pool.c) over host
-- memory. Under `make sanitize` they are built with the sanitizers too (FOVEA_BUILD
-- and FOVEA_SANITIZE).
local helpers = require 'spec.helpers'
local run = helpers.run
local build = os.getenv('FOVEA_BUILD') or 'build'
local sanitize = os.getenv('FOVEA_SANITIZE') or ''

describe('C test programs', function()
  local built, build_log
  setup(function()
    local status
    status, build_log = run(('make -s ctest BUILD=%s SANITIZE="%s" CFLAGS="-O1 -g"'):format(build, sanitize))
    built = status == 0
  end)

  local programs = {
    {'image I/O and processing', 'test_image', 'spec/fixtures'},
    {'nn kernels', 'test_nn_kernels', ''},
    {'device moves and cross-device copies (stand-in cuda backend)', 'test_device', ''},
    {"the CUDA caching allocator's block pools over host memory", 'test_block_pool', ''},
  }
  for _, p in ipairs(programs) do
    it(p[1] .. ' (spec/c/' .. p[2] .. '.c)', function()
      assert(built, 'make ctest failed:\n' .. tostring(build_log))
      local status, out = run(('%s/spec/%s %s'):format(build, p[2], p[3]))
      assert(status == 0, out)
      assert.matches(' 0 fail', out)
    end)
  end
end)
