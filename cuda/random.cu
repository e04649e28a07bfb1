/* random.cu: uniform and normal draws on the GPU from Philox4x32-10, the generator of
 * core/philox.c, step for step: element i of the (contiguous, row-major) output takes
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

namespace {

__device__ __forceinline__ void philox4x32(uint64_t counter, uint64_t seed, uint32_t out[4]) {
  uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int round = 0; round < 10; round++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c0;
    uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c0 = n0;
    c1 = (uint32_t)p1;
    c2 = n2;
    c3 = (uint32_t)p0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/* 53 random bits from two words, mapped to [0, 1) */
__device__ __forceinline__ double to_unit(uint32_t hi, uint32_t lo) {
  return (double)(((uint64_t)hi << 21) ^ (lo >> 11)) * (1.0 / 9007199254740992.0);
}

__device__ __forceinline__ double draw(bool normal, uint64_t seed, uint64_t offset, uint64_t i) {
  uint32_t r[4];
  philox4x32(offset + i, seed, r);
  if (!normal) return to_unit(r[0], r[1]);
  double u1 = 1.0 - to_unit(r[0], r[1]); /* (0, 1]: log is finite */
  double u2 = to_unit(r[2], r[3]);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

__global__ void random_f64(double *out, int64_t n, bool normal, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = draw(normal, seed, offset, (uint64_t)i);
}

__global__ void random_f32(float *out, int64_t n, bool normal, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float f = (float)draw(normal, seed, offset, (uint64_t)i);
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
