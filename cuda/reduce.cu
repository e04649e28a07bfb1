/* reduce.cu: the CUDA reductions of a contiguous input viewed as (outer, n, inner) over
 * n, for float32 and float64, with core/cpu/reduce.c's semantics: sum and mean
 * accumulated in double, var in two passes with a given correction (NaN when
 * n - correction <= 0), max/min and argmax/argmin with the first occurrence of the
 * extremum and NaN winning (the first NaN), indices counted from index_base.
 * Two kernels:
 *   - column: one thread per output element walks its n inputs in order, exactly as the
 *     CPU loop does (so sums agree with the CPU to the bit); used when inner > 1 (the
 *     threads of a warp then read neighbouring addresses) or n is small;
 *   - row: one block per output element when inner == 1 and n is large; the threads
 *     share the row and combine their partial results in shared memory (sums then differ
 *     from the CPU's in rounding only; extrema and their indices are the same).
 *
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/reduce.cu (see backend.cu)
 */
#include <math.h>

#include "common.cuh"

namespace {

enum { ROW_THREADS = 256, ROW_MIN_N = 256 };

__device__ __forceinline__ bool is_sum_like(int op) { return op == FV_OP_SUM || op == FV_OP_MEAN || op == FV_OP_VAR; }

template <typename T>
__global__ void column_kernel(int op, T *out, int64_t *index, const T *a, int64_t outer, int64_t n, int64_t inner,
                              int correction, int64_t base) {
  int64_t tasks = outer * inner;
  for (int64_t task = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; task < tasks;
       task += (int64_t)gridDim.x * blockDim.x) {
    int64_t o = task / inner, i = task % inner;
    const T *p = a + o * n * inner + i; /* p[j * inner], j < n */
    if (is_sum_like(op)) {
      double sum = 0;
      for (int64_t j = 0; j < n; j++) sum += p[j * inner];
      if (op == FV_OP_SUM) {
        out[task] = (T)sum;
        continue;
      }
      double mean = sum / (double)n;
      if (op == FV_OP_MEAN) {
        out[task] = (T)mean;
        continue;
      }
      double sq = 0;
      for (int64_t j = 0; j < n; j++) {
        double dv = p[j * inner] - mean;
        sq += dv * dv;
      }
      out[task] = (T)(n - correction > 0 ? sq / (double)(n - correction) : (double)NAN);
      continue;
    }
    bool want_max = op == FV_OP_MAX || op == FV_OP_ARGMAX;
    int64_t best = 0;
    T bv = p[0];
    for (int64_t j = 1; j < n && bv == bv; j++) {
      T v = p[j * inner];
      if (v != v || (want_max ? v > bv : v < bv)) {
        bv = v;
        best = j;
      }
    }
    if (out) out[task] = bv;
    if (index) index[task] = best + base;
  }
}

/* The block's sum of v, returned to every thread (blockDim.x == ROW_THREADS). */
__device__ double block_sum(double v, double *shared) {
  int t = threadIdx.x;
  __syncthreads(); /* earlier readers of shared are done */
  shared[t] = v;
  __syncthreads();
  for (int s = ROW_THREADS / 2; s > 0; s >>= 1) {
    if (t < s) shared[t] += shared[t + s];
    __syncthreads();
  }
  return shared[0];
}

/* Whether candidate (v, j) beats the current (bv, bi): a NaN beats any number, then the
 * larger (smaller) value, then on ties the smaller position; j < 0 is no candidate. */
template <typename T>
__device__ __forceinline__ bool beats(bool want_max, T v, int64_t j, T bv, int64_t bi) {
  if (j < 0) return false;
  if (bi < 0) return true;
  bool v_nan = v != v, b_nan = bv != bv;
  if (b_nan) return v_nan && j < bi;
  if (v_nan) return true;
  if (want_max ? v > bv : v < bv) return true;
  return v == bv && j < bi;
}

template <typename T>
__global__ void row_kernel(int op, T *out, int64_t *index, const T *a, int64_t outer, int64_t n, int correction,
                           int64_t base) {
  __shared__ double sums[ROW_THREADS];
  __shared__ T values[ROW_THREADS];
  __shared__ int64_t places[ROW_THREADS];
  int t = threadIdx.x;
  for (int64_t row = blockIdx.x; row < outer; row += gridDim.x) {
    const T *p = a + row * n;
    if (is_sum_like(op)) {
      double sum = 0;
      for (int64_t j = t; j < n; j += ROW_THREADS) sum += p[j];
      sum = block_sum(sum, sums);
      double mean = sum / (double)n;
      double result = op == FV_OP_SUM ? sum : mean;
      if (op == FV_OP_VAR) {
        double sq = 0;
        for (int64_t j = t; j < n; j += ROW_THREADS) {
          double dv = p[j] - mean;
          sq += dv * dv;
        }
        sq = block_sum(sq, sums);
        result = n - correction > 0 ? sq / (double)(n - correction) : (double)NAN;
      }
      if (t == 0) out[row] = (T)result;
      continue;
    }
    bool want_max = op == FV_OP_MAX || op == FV_OP_ARGMAX;
    T bv = 0;
    int64_t bi = -1;
    for (int64_t j = t; j < n; j += ROW_THREADS) { /* this thread's share, in order, as the CPU scans */
      T v = p[j];
      if (bi < 0) {
        bv = v;
        bi = j;
      } else if (bv != bv) {
        break;
      } else if (v != v || (want_max ? v > bv : v < bv)) {
        bv = v;
        bi = j;
      }
    }
    __syncthreads(); /* the previous row's readers are done */
    values[t] = bv;
    places[t] = bi;
    __syncthreads();
    for (int s = ROW_THREADS / 2; s > 0; s >>= 1) {
      if (t < s && beats(want_max, values[t + s], places[t + s], values[t], places[t])) {
        values[t] = values[t + s];
        places[t] = places[t + s];
      }
      __syncthreads();
    }
    if (t == 0) {
      if (out) out[row] = values[0];
      if (index) index[row] = places[0] + base;
    }
  }
}

template <typename T>
int launch(int op, fv_tensor *out, fv_tensor *index, const fv_tensor *a, int64_t outer, int64_t n, int64_t inner,
           int correction, int index_base) {
  T *o = out ? (T *)fv_cuda_first(out) : (T *)0;
  int64_t *idx = index ? (int64_t *)fv_cuda_first(index) : (int64_t *)0;
  const T *pa = (const T *)fv_cuda_first(a);
  if (outer * inner == 0) return FV_OK;
  if (inner == 1 && n >= ROW_MIN_N) {
    int64_t blocks = outer < 65535 * 16 ? outer : 65535 * 16;
    row_kernel<T><<<(unsigned)blocks, ROW_THREADS, 0, fv_cuda_stream>>>(op, o, idx, pa, outer, n, correction,
                                                                       index_base);
  } else {
    column_kernel<T><<<fv_cuda_blocks(outer * inner), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        op, o, idx, pa, outer, n, inner, correction, index_base);
  }
  FV_CUDA_LAUNCHED(fv_op_name(op));
  return FV_OK;
}

}  // namespace

extern "C" int fv_cuda_reduce(int op, fv_tensor *out, fv_tensor *index, const fv_tensor *a, int64_t outer, int64_t n,
                              int64_t inner, int correction, int index_base) {
  if (a->scalar_type == FV_FLOAT64) return launch<double>(op, out, index, a, outer, n, inner, correction, index_base);
  if (a->scalar_type == FV_FLOAT32) return launch<float>(op, out, index, a, outer, n, inner, correction, index_base);
  return fv_fail(FV_ERR_DTYPE, "%s: dtype %s is not supported on cuda", fv_op_name(op), fv_dtype_name(a->scalar_type));
}
