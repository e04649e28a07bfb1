-- nam_mma_emulated_spec.lua: cuda/nn_nam_mma.cu's kernels (the fused NAM attention on
-- tensor cores: forward, dK/dV, dQ; TF32 and bfloat16) run on the CPU, without nvcc or a
-- GPU, against a float64 attention. The kernels' own source is used: their device code
-- (and cuda/nam_tiles.cuh's) is cut out of the files, its inline PTX (cvt.rna.tf32,
-- ex2.approx, the two mma.sync, the two ldmatrix) replaced by calls to the emulations of
-- spec/cuda_emulated/nam_mma_shim.h, and compiled with the host's C++ compiler into
-- spec/cuda_emulated/nam_mma_check.cpp, which runs every block of each kernel's grid as
-- 128 threads. What this checks: the fragment layouts, the softmax and its rescaling,
-- padding and tails of rows and columns, the 16-byte tile loads, the gradients' +=. What
-- it cannot: timing, memory ordering on the GPU, the compiler's code for sm_90; the
-- #gpu cases of spec/cuda_spec.lua check those on a GPU.
local helpers = require 'spec.helpers'
local run = helpers.run
local build = os.getenv('FOVEA_BUILD') or 'build'
local dir = build .. '/spec/nam_mma_emulated'

local function read(path)
  local f = assert(io.open(path, 'rb'))
  local text = f:read('*a')
  f:close()
  return text
end

-- text from the first `from` (included) to the first `to` after it (excluded)
local function cut(text, from, to, what)
  local a = text:find(from, 1, true)
  local b = a and text:find(to, a, true)
  assert(a and b, ('%s: cannot find "%s" ... "%s"'):format(what, from, to))
  return text:sub(a, b - 1)
end

-- text with the one statement that starts with `head` (up to its ");") replaced by `by`
local function replace_statement(text, head, by, what)
  local a = text:find(head, 1, true)
  assert(a, ('%s: cannot find %s'):format(what, head))
  assert(not text:find(head, a + 1, true), ('%s: %s found twice'):format(what, head))
  local b = assert(text:find(');', a, true), what .. ': unterminated ' .. head)
  return text:sub(1, a - 1) .. by .. text:sub(b + 2)
end

-- The kernels' source for the host: nam_tiles.cuh's device part, nn_nam_mma.cu's kernels.
local function kernel_source()
  local tiles = cut(read('cuda/nam_tiles.cuh'), 'namespace nam_tiles {', '/* The padded width', 'nam_tiles.cuh')
  local mma = cut(read('cuda/nn_nam_mma.cu'), '#if !defined(__CUDA_ARCH__)', 'template <int DP, int CP, bool BF16> int run(',
    'nn_nam_mma.cu')
  for _, r in ipairs {
    { 'asm("cvt.rna.tf32.f32', 'r = emu_tf32(x);' },
    { 'asm("ex2.approx.ftz.f32', 'r = emu_ex2(x);' },
    { 'asm volatile("mma.sync.aligned.m16n8k8.', 'emu_mma(c, a, b0, b1, false);' },
    { 'asm volatile("mma.sync.aligned.m16n8k16.', 'emu_mma(c, a, b0, b1, true);' },
    { 'asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.', 'emu_ldmatrix(r, row, true);' },
    { 'asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.', 'emu_ldmatrix(r, row, false);' },
  } do
    mma = replace_statement(mma, r[1], r[2], 'nn_nam_mma.cu')
  end
  assert(not mma:find('asm', 1, true), 'nn_nam_mma.cu: inline PTX this spec does not emulate')
  return '#include "nam_mma_shim.h"\nnamespace { alignas(16) float smem[65536]; }\n' .. tiles ..
    '\n} // namespace nam_tiles\n' .. mma .. '\n} // namespace\n'
end

describe('NAM mma kernels emulated on the CPU (spec/cuda_emulated/)', function()
  local built, log
  local program = dir .. '/nam_mma_check'
  setup(function()
    os.execute('mkdir -p ' .. dir)
    local ok, source = pcall(kernel_source)
    if not ok then
      built, log = false, source
      return
    end
    local f = assert(io.open(dir .. '/nam_mma_kernels.inc', 'wb'))
    f:write(source)
    f:close()
    -- without `make sanitize`'s LD_PRELOAD of the sanitizer runtimes
    local status, out = run(('env -u LD_PRELOAD c++ -std=c++17 -O1 -w -Ispec/cuda_emulated -I%s ' ..
      '-DNAM_MMA_KERNELS=\'"nam_mma_kernels.inc"\' -o %s spec/cuda_emulated/nam_mma_check.cpp -lpthread'):format(dir,
      program))
    built, log = status == 0, out
  end)

  -- B, N, M, D, Cv: tails of query and key tiles, D and Cv padded (20 -> 32, 36 -> 64),
  -- every padded width, and the batch-4 model's widths
  for _, s in ipairs { { 2, 130, 75, 32, 64 }, { 1, 33, 70, 16, 8 }, { 2, 65, 131, 20, 36 }, { 1, 64, 64, 64, 64 },
    { 1, 40, 50, 64, 24 } } do
    it(('agrees with float64 attention at B N M D Cv = %s (TF32 and bfloat16)'):format(table.concat(s, ' ')), function()
      assert(built, 'building the emulated kernels failed:\n' .. tostring(log))
      local status, out = run(('env -u LD_PRELOAD %s %s'):format(program, table.concat(s, ' ')))
      assert(status == 0 and out:match('all ok'), program .. ':\n' .. out)
    end)
  end
end)
