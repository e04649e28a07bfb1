/* random.cu: uniform and normal draws on the GPU from Philox4x32-10, with the code the
 * CPU runs (core/philox.h): element i of the (contiguous, row-major) output takes
 * counter offset + i and key seed, its first two words give 53 bits mapped to [0, 1),
 * normals use Box-Muller on the four words, and a float32 uniform that rounds up to 1
 * becomes the largest float below 1 (core/cpu/random.c). Uniform draws are therefore
 * bit-identical to the CPU's. Normal draws go through CUDA's log and cos, which are not
 * glibc's (both are within an ulp or two of exact): float64 normals may differ from the
 * CPU's in the last bits, float32 ones almost never.
 *
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/random.cu (see backend.cu)
 */
#include "common.cuh"
#include "../core/philox.h"

namespace {

__global__ void random_f64(double *out, int64_t n, bool normal, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = fv_philox_draw(normal, seed, offset, (uint64_t)i);
}

__global__ void random_f32(float *out, int64_t n, bool normal, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float f = (float)fv_philox_draw(normal, seed, offset, (uint64_t)i);
    out[i] = (!normal && f >= 1.0f) ? 0x1.fffffep-1f : f; /* rounding must not reach 1 */
  }
}

}  // namespace

extern "C" int fv_cuda_random(int op, fv_tensor *out, uint64_t seed, uint64_t offset) {
  int64_t n = fv_tensor_numel(out);
  bool normal = op == FV_OP_RANDN;
  if (n == 0) return FV_OK;
  if (out->scalar_type == FV_FLOAT64)
    random_f64<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, fv_cuda_stream>>>((double *)fv_cuda_first(out), n, normal, seed,
                                                                          offset);
  else if (out->scalar_type == FV_FLOAT32)
    random_f32<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, fv_cuda_stream>>>((float *)fv_cuda_first(out), n, normal, seed,
                                                                          offset);
  else
    return fv_fail(FV_ERR_DTYPE, "%s: dtype %s is not supported on cuda", fv_op_name(op), fv_dtype_name(out->scalar_type));
  FV_CUDA_LAUNCHED(fv_op_name(op));
  return FV_OK;
}
