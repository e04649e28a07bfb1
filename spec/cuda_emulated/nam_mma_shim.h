/* nam_mma_shim.h: what cuda/nn_nam_mma.cu's kernels need from CUDA, on the host, for
 * spec/nam_mma_emulated_spec.lua: a block is 128 threads (std::thread, run by
 * nam_mma_check.cpp), __syncthreads a barrier of the block, __syncwarp one of the warp;
 * shuffles and mma.sync exchange the lanes' registers through per-warp slots between two
 * warp barriers, each lane then computing its own results as the PTX ISA lays them out
 * (m16n8k8 TF32 with the operands' low 13 bits ignored, m16n8k16 bfloat16; products
 * summed in double); cvt.rna.tf32 (nearest, ties away), ex2.approx.ftz (exp2f, subnormal
 * results flushed), ldmatrix (x4, plain and transposed) and bfloat16 rounding (nearest
 * even) emulated. */
#ifndef FOVEA_SPEC_NAM_MMA_SHIM_H
#define FOVEA_SPEC_NAM_MMA_SHIM_H
#include <pthread.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
struct dim3 { unsigned x = 0, y = 0, z = 0; };
thread_local dim3 threadIdx, blockIdx;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n)
struct float4 { float x, y, z, w; };
static inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
struct uint2 { uint32_t x, y; };
static inline uint2 make_uint2(uint32_t a, uint32_t b) { return {a, b}; }
static inline float __uint_as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t __float_as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
struct __nv_bfloat162 { uint16_t x, y; };
static inline uint16_t bf16_rn(float v) {
  uint32_t b = __float_as_uint(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40);
  b += 0x7fffu + ((b >> 16) & 1u);
  return (uint16_t)(b >> 16);
}
static inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) { return {bf16_rn(lo), bf16_rn(hi)}; }
static pthread_barrier_t block_bar, warp_bar[4];
static inline void __syncthreads() { pthread_barrier_wait(&block_bar); }
static inline void __syncwarp() { pthread_barrier_wait(&warp_bar[threadIdx.x >> 5]); }
static float xf[4][32];
static uint32_t xu[4][32][6];
static inline float __shfl_xor_sync(unsigned, float v, int o) {
  int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  xf[w][lane] = v;
  __syncwarp();
  float r = xf[w][lane ^ o];
  __syncwarp();
  return r;
}
// cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits
static inline uint32_t emu_tf32(float x) {
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7f800000u) == 0x7f800000u) return u;
  u += 0x1000u;
  return u & 0xffffe000u;
}
static inline float emu_ex2(float x) { float r = exp2f(x); return std::fpclassify(r) == FP_SUBNORMAL ? 0.f : r; }
/* ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: lanes 8 m .. 8 m + 7 give the rows of
 * matrix m (8 16-bit values each, which must be 16-byte aligned); lane 4 g + t gets in r[m]
 * matrix m's row g, columns 2 t, 2 t + 1, or with trans its rows 2 t, 2 t + 1 of column g,
 * the first in the low half. */
static const uint16_t *xa[4][32];
static inline size_t __cvta_generic_to_shared(const void *p) { return (size_t)p; }
static inline void emu_ldmatrix(uint32_t (&r)[4], const uint16_t *row, bool trans) {
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  if ((uintptr_t)row % 16) {
    fprintf(stderr, "ldmatrix: lane %d's row address %p is not 16-byte aligned\n", lane, (const void *)row);
    abort();
  }
  xa[w][lane] = row;
  __syncwarp();
  for (int m = 0; m < 4; m++) {
    const uint16_t *lo = trans ? xa[w][8 * m + 2 * t] + g : xa[w][8 * m + g] + 2 * t;
    const uint16_t *hi = trans ? xa[w][8 * m + 2 * t + 1] + g : lo + 1;
    r[m] = *lo | (uint32_t)*hi << 16;
  }
  __syncwarp();
}
static inline float tfv(uint32_t u) { return __uint_as_float(u & 0xffffe000u); }
static inline float bfv(uint32_t u, int hi) { return __uint_as_float(hi ? (u & 0xffff0000u) : (u << 16)); }
static inline void emu_mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, bool bf16) {
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  for (int q = 0; q < 4; q++) xu[w][lane][q] = a[q];
  xu[w][lane][4] = b0;
  xu[w][lane][5] = b1;
  __syncwarp();
  for (int q = 0; q < 4; q++) {
    const int r = g + 8 * (q >> 1), n = 2 * t + (q & 1);
    double s = 0;
    if (!bf16) {
      for (int k = 0; k < 8; k++) {
        const float A = tfv(xu[w][4 * (r % 8) + k % 4][(r >= 8) + 2 * (k >= 4)]);
        const float B = tfv(xu[w][4 * n + k % 4][4 + (k >= 4)]);
        s += (double)A * B;
      }
    } else {
      for (int k = 0; k < 16; k++) {
        const float A = bfv(xu[w][4 * (r % 8) + (k % 8) / 2][(r >= 8) + 2 * (k >= 8)], k % 2);
        const float B = bfv(xu[w][4 * n + (k % 8) / 2][4 + (k >= 8)], k % 2);
        s += (double)A * B;
      }
    }
    c[q] = (float)((double)c[q] + s);
  }
  __syncwarp();
}

#endif
