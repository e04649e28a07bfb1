/* cpu/reduce.c: reductions of a contiguous input viewed as (outer, n, inner) over n:
 * sum and mean (accumulated in double), max/min with first-occurrence indices (NaN
 * wins, as in PyTorch), argmax/argmin, and var with a chosen correction. */
#include <math.h>

#include "cpu.h"

#define REDUCE_KERNEL(T)                                                                             \
  static void reduce_##T(int op, T *out, int64_t *index, const T *a, int64_t outer, int64_t n,       \
                         int64_t inner, int correction, int64_t base) {                              \
    _Pragma("omp parallel for schedule(static) if (outer * inner * n > 65536)")                      \
    for (int64_t task = 0; task < outer * inner; task++) {                                           \
      int64_t o = task / inner, i = task % inner;                                                    \
      const T *p = a + o * n * inner + i; /* p[j * inner], j < n */                                  \
      if (op == FV_OP_SUM || op == FV_OP_MEAN || op == FV_OP_VAR) {                                  \
        double sum = 0;                                                                              \
        for (int64_t j = 0; j < n; j++) sum += p[j * inner];                                         \
        if (op == FV_OP_SUM) { out[task] = (T)sum; continue; }                                       \
        double mean = sum / (double)n;                                                               \
        if (op == FV_OP_MEAN) { out[task] = (T)mean; continue; }                                     \
        double sq = 0;                                                                               \
        for (int64_t j = 0; j < n; j++) {                                                            \
          double dv = p[j * inner] - mean;                                                           \
          sq += dv * dv;                                                                             \
        }                                                                                            \
        out[task] = (T)(n - correction > 0 ? sq / (double)(n - correction) : NAN);                   \
        continue;                                                                                    \
      }                                                                                              \
      int want_max = op == FV_OP_MAX || op == FV_OP_ARGMAX;                                          \
      int64_t best = 0;                                                                              \
      T bv = p[0];                                                                                   \
      for (int64_t j = 1; j < n && bv == bv; j++) {                                                  \
        T v = p[j * inner];                                                                          \
        if (v != v || (want_max ? v > bv : v < bv)) { bv = v; best = j; }                            \
      }                                                                                              \
      if (out) out[task] = bv;                                                                       \
      if (index) index[task] = best + base;                                                                \
    }                                                                                                \
  }

REDUCE_KERNEL(float)
REDUCE_KERNEL(double)

int fv_cpu_reduce(int op, fv_tensor *out, fv_tensor *index, const fv_tensor *a, int64_t outer, int64_t n,
                  int64_t inner, int correction, int index_base) {
  int64_t *idx = index ? fv_tensor_data(index) : NULL;
  if (a->scalar_type == FV_FLOAT64)
    reduce_double(op, out ? fv_tensor_data(out) : NULL, idx, fv_tensor_data(a), outer, n, inner, correction, index_base);
  else
    reduce_float(op, out ? fv_tensor_data(out) : NULL, idx, fv_tensor_data(a), outer, n, inner, correction, index_base);
  return FV_OK;
}
