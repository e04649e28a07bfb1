/* philox.h: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3")
 * and the mapping of its words to uniform and normal doubles, as inline functions shared
 * by the CPU (core/philox.c) and the GPU (cuda/random.cu), so that both draw the same
 * bits: element i of a draw takes counter offset + i and key seed. */
#ifndef FOVEA_PHILOX_H
#define FOVEA_PHILOX_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define FV_PHILOX_FN __host__ __device__ __forceinline__ static
#else
#define FV_PHILOX_FN static inline
#endif

FV_PHILOX_FN void fv_philox_block(uint64_t counter, uint64_t seed, uint32_t out[4]) {
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
FV_PHILOX_FN double fv_philox_unit(uint32_t hi, uint32_t lo) {
  return (double)(((uint64_t)hi << 21) ^ (lo >> 11)) * (1.0 / 9007199254740992.0);
}

/* Element i of a draw at generator position offset: uniform [0, 1), or standard normal
 * by Box-Muller on the four words. */
FV_PHILOX_FN double fv_philox_draw(int normal, uint64_t seed, uint64_t offset, uint64_t i) {
  uint32_t r[4];
  fv_philox_block(offset + i, seed, r);
  if (!normal) return fv_philox_unit(r[0], r[1]);
  double u1 = 1.0 - fv_philox_unit(r[0], r[1]); /* (0, 1]: log is finite */
  double u2 = fv_philox_unit(r[2], r[3]);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
