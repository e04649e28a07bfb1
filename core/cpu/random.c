/* cpu/random.c: uniform and normal draws from the Philox generator; element i of the
 * output (row-major) takes counter offset + i, as the CUDA kernel will. */
#include "cpu.h"

int fv_cpu_random(int op, fv_tensor *out, uint64_t seed, uint64_t offset) {
  int64_t n = fv_tensor_numel(out);
  int normal = op == FV_OP_RANDN;
  if (out->scalar_type == FV_FLOAT64) {
    double *o = fv_tensor_data(out); /* (numel) contiguous */
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++)
      o[i] = normal ? fv_philox_normal(seed, offset, (uint64_t)i) : fv_philox_uniform(seed, offset, (uint64_t)i);
  } else {
    float *o = fv_tensor_data(out); /* (numel) contiguous */
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
      double v = normal ? fv_philox_normal(seed, offset, (uint64_t)i) : fv_philox_uniform(seed, offset, (uint64_t)i);
      float f = (float)v;
      o[i] = (!normal && f >= 1.0f) ? 0x1.fffffep-1f : f; /* rounding must not reach 1 */
    }
  }
  return FV_OK;
}
