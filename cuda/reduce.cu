/* reduce.cu: the CUDA reductions of a contiguous input viewed as (outer, n, inner) over
 * n, for float32 and float64, with core/cpu/reduce.c's semantics: sum and mean
 * accumulated in double, var in two passes with a given correction (NaN when
 * n - correction <= 0), max/min and argmax/argmin with the first occurrence of the
 * extremum and NaN winning (the first NaN), indices counted from index_base.
 * Three paths:
 *   - column: one thread per output element walks its n inputs in order, exactly as the
 *     CPU loop does (so sums agree with the CPU to the bit); used when inner > 1 (the
 *     threads of a warp then read neighbouring addresses) or n is small;
 *   - row: one block per output element when inner == 1 and n is large; the threads
 *     share the row and combine their partial results in shared memory (sums then differ
 *     from the CPU's in rounding only; extrema and their indices are the same);
 *   - split: when inner > 1, there are fewer than SPLIT_MAX_OUTPUTS outputs (too few
 *     threads for the column kernel to fill the GPU) and n >= SPLIT_MIN_N, or when inner
 *     == 1 and there are fewer than SPLIT_FEW_ROWS rows (too few blocks for the row kernel;
 *     x:sum() of a whole tensor is one row) of at least SPLIT_MIN_ROW_N, n is cut into
 *     chunks of rows. Pass 1 (split_parts_kernel): a block per (tile of up to 32 columns of
 *     one outer index, chunk); its threads are (tx lanes over the columns, ty rows), so a
 *     warp reads neighbouring addresses (32 adjacent columns, or, when inner < 32, whole
 *     rows of inner elements: consecutive threads, consecutive addresses); each thread
 *     walks its rows of the chunk in order, then a fixed tree over the rows combines them
 *     into one partial per (chunk, output) in scratch (fv_cuda_alloc): a double sum, or a
 *     value and first index. Pass 2 (split_finish_kernel): a thread per output combines its
 *     chunks in chunk order. var runs both passes twice, as the CPU's two passes: the sum
 *     gives the mean, then the sum of squared deviations from that mean (rather than
 *     per-chunk (count, mean, M2) merged by Chan's formula: the same deviations as the
 *     CPU, no extra rounding in the merge, and the same kernels). Sums differ from the CPU's
 *     in rounding only; extrema and indices are exact (the merge keeps the first NaN, else
 *     the first position of the extremum, whatever the grouping). The chunking depends on
 *     the shape only, so results are the same run to run and on every GPU.
 *
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/reduce.cu (see backend.cu)
 */
#include <math.h>

#include "common.cuh"

namespace {

enum { ROW_THREADS = 256, ROW_MIN_N = 256 };

__host__ __device__ __forceinline__ bool is_sum_like(int op) {
  return op == FV_OP_SUM || op == FV_OP_MEAN || op == FV_OP_VAR;
}

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
__host__ __device__ __forceinline__ bool beats(bool want_max, T v, int64_t j, T bv, int64_t bi) {
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

/* ---- split: few outputs, long columns ---- */

enum {
  SPLIT_MAX_OUTPUTS = 4096, /* fewer outputs (outer * inner) than this: 16 blocks of the column kernel */
  SPLIT_MIN_N = 1024,       /* and at least this many rows */
  SPLIT_FEW_ROWS = 264,     /* inner == 1: fewer rows than this, 2 row-kernel blocks per SM of an H100 */
  SPLIT_MIN_ROW_N = 16384,  /* and rows at least this long: 8 chunks of 256 threads x 8 elements */
  SPLIT_THREADS = 256,      /* threads of a pass-1 block: at most; tx * ty of them */
  SPLIT_BLOCKS = 1024,      /* pass-1 blocks aimed at (8 blocks of 256 threads per SM on a 132-SM H100) */
  SPLIT_PER_THREAD = 8      /* a chunk gives each thread at least this many rows */
};

/* The split path's shape, made on the host by split_geometry_of and passed by value. */
struct split_geometry {
  int64_t outer, n, inner, tasks; /* tasks = outer * inner outputs */
  int tx, ty;                     /* a block's lanes over columns, rows (tx * ty threads) */
  int top;                        /* the tree's first stride: the largest power of two below ty */
  int64_t col_tiles, tiles;       /* column tiles per outer index: ceil(inner / tx); outer * col_tiles */
  int64_t len, chunks;            /* rows per chunk (the last may have fewer); chunks = ceil(n / len) */
};

static inline split_geometry split_geometry_of(int64_t outer, int64_t n, int64_t inner) {
  split_geometry g;
  g.outer = outer;
  g.n = n;
  g.inner = inner;
  g.tasks = outer * inner;
  g.tx = inner < 32 ? (int)inner : 32;
  g.ty = SPLIT_THREADS / g.tx;
  g.top = 1;
  while (2 * g.top < g.ty) g.top *= 2;
  if (g.ty == 1) g.top = 0; /* ty == 8 gives 4, ty == 85 gives 64 */
  g.col_tiles = (inner + g.tx - 1) / g.tx;
  g.tiles = outer * g.col_tiles;
  int64_t want = (SPLIT_BLOCKS + g.tiles - 1) / g.tiles;
  int64_t most = n / ((int64_t)SPLIT_PER_THREAD * g.ty);
  int64_t chunks = want < most ? want : most;
  if (chunks < 1) chunks = 1;
  g.len = (n + chunks - 1) / chunks;
  g.chunks = (n + g.len - 1) / g.len; /* no empty chunk */
  return g;
}

/* One thread's (or one chunk's) partial result: a double sum, or a value and its position
 * (i < 0: none yet). */
template <typename T> struct split_part {
  double sum;
  T v;
  int64_t i;
};

/* Thread t of pass-1 block `block`: its column's rows j = j0 + ty, j0 + ty + g.ty, ... of
 * the chunk, in order: the sum of the values (or, given mean, of the squared deviations
 * from mean[output]), or the CPU's scan for the extremum (the first NaN stops it). */
template <typename T>
__host__ __device__ __forceinline__ split_part<T> split_scan(int op, const T *a, const split_geometry &g,
                                                             int64_t block, int t, const double *mean) {
  split_part<T> r;
  r.sum = 0;
  r.v = 0;
  r.i = -1;
  int64_t tile = block % g.tiles, chunk = block / g.tiles;
  int64_t o = tile / g.col_tiles, col = (tile % g.col_tiles) * g.tx + t % g.tx;
  if (col >= g.inner) return r;
  int64_t j0 = chunk * g.len + t / g.tx, j1 = (chunk + 1) * g.len < g.n ? (chunk + 1) * g.len : g.n;
  const T *p = a + o * g.n * g.inner + col; /* p[j * inner] */
  if (is_sum_like(op)) {
    double sum = 0;
    if (mean) {
      double m = mean[o * g.inner + col];
      for (int64_t j = j0; j < j1; j += g.ty) {
        double dv = p[j * g.inner] - m;
        sum += dv * dv;
      }
    } else {
      for (int64_t j = j0; j < j1; j += g.ty) sum += p[j * g.inner];
    }
    r.sum = sum;
    return r;
  }
  bool want_max = op == FV_OP_MAX || op == FV_OP_ARGMAX;
  for (int64_t j = j0; j < j1; j += g.ty) {
    T v = p[j * g.inner];
    if (r.i < 0) {
      r.v = v;
      r.i = j;
    } else if (r.v != r.v) {
      break;
    } else if (v != v || (want_max ? v > r.v : v < r.v)) {
      r.v = v;
      r.i = j;
    }
  }
  return r;
}

/* Folds `from` into `into`: sums add; an extremum is replaced when `from` beats it. */
template <typename T>
__host__ __device__ __forceinline__ void split_merge(int op, split_part<T> &into, const split_part<T> &from) {
  if (is_sum_like(op)) {
    into.sum += from.sum;
  } else if (beats(op == FV_OP_MAX || op == FV_OP_ARGMAX, from.v, from.i, into.v, into.i)) {
    into.v = from.v;
    into.i = from.i;
  }
}

/* One level (stride s) of pass 1's tree over a block's rows, for thread t: row ty takes in
 * row ty + s of its column. */
template <typename T>
__host__ __device__ __forceinline__ void split_tree_step(int op, split_part<T> *shared, const split_geometry &g, int t,
                                                         int s) {
  int ty = t / g.tx;
  if (ty < s && ty + s < g.ty) split_merge(op, shared[t], shared[t + s * g.tx]);
}

/* After the tree, row 0's threads write their column's partial: parts[chunk * tasks + output]. */
template <typename T>
__host__ __device__ __forceinline__ void split_store(split_part<T> *parts, const split_part<T> *shared,
                                                     const split_geometry &g, int64_t block, int t) {
  if (t >= g.tx) return;
  int64_t tile = block % g.tiles, chunk = block / g.tiles;
  int64_t o = tile / g.col_tiles, col = (tile % g.col_tiles) * g.tx + t;
  if (col < g.inner) parts[chunk * g.tasks + o * g.inner + col] = shared[t];
}

/* Pass 2 for output `task`: its chunks' partials combined in chunk order. Phase 0 of var
 * writes the mean to mean[task]; phase 1 the variance. */
template <typename T>
__host__ __device__ __forceinline__ void split_finish(int op, int phase, T *out, int64_t *index, double *mean,
                                                      const split_part<T> *parts, const split_geometry &g,
                                                      int correction, int64_t base, int64_t task) {
  if (is_sum_like(op)) {
    double sum = 0;
#ifdef __CUDA_ARCH__
#pragma unroll 8 /* the loads issued ahead; the adds stay in chunk order */
#endif
    for (int64_t c = 0; c < g.chunks; c++) sum += parts[c * g.tasks + task].sum;
    if (op == FV_OP_SUM) {
      out[task] = (T)sum;
    } else if (op == FV_OP_MEAN) {
      out[task] = (T)(sum / (double)g.n);
    } else if (phase == 0) {
      mean[task] = sum / (double)g.n;
    } else {
      out[task] = (T)(g.n - correction > 0 ? sum / (double)(g.n - correction) : (double)NAN);
    }
    return;
  }
  split_part<T> best = parts[task];
  for (int64_t c = 1; c < g.chunks; c++) split_merge(op, best, parts[c * g.tasks + task]);
  if (out) out[task] = best.v;
  if (index) index[task] = best.i + base;
}

template <typename T>
__global__ void split_parts_kernel(int op, split_part<T> *parts, const T *a, split_geometry g, const double *mean) {
  __shared__ split_part<T> shared[SPLIT_THREADS];
  int t = threadIdx.x;
  shared[t] = split_scan<T>(op, a, g, blockIdx.x, t, mean);
  __syncthreads();
  for (int s = g.top; s > 0; s >>= 1) {
    split_tree_step<T>(op, shared, g, t, s);
    __syncthreads();
  }
  split_store<T>(parts, shared, g, blockIdx.x, t);
}

template <typename T>
__global__ void split_finish_kernel(int op, int phase, T *out, int64_t *index, double *mean,
                                    const split_part<T> *parts, split_geometry g, int correction, int64_t base) {
  for (int64_t task = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; task < g.tasks;
       task += (int64_t)gridDim.x * blockDim.x)
    split_finish<T>(op, phase, out, index, mean, parts, g, correction, base, task);
}

/* The split path: pass 1 and pass 2 (twice for var), each launch checked; the scratch
 * (partials, and var's means) is freed on every path, ordered on the stream. */
template <typename T>
int launch_split(int op, T *out, int64_t *index, const T *a, int64_t outer, int64_t n, int64_t inner, int correction,
                 int64_t base) {
  const char *name = fv_op_name(op);
  const split_geometry g = split_geometry_of(outer, n, inner);
  const size_t parts_bytes = (size_t)(g.chunks * g.tasks) * sizeof(split_part<T>);
  const size_t bytes = parts_bytes + (op == FV_OP_VAR ? (size_t)g.tasks * sizeof(double) : 0);
  char *scratch = (char *)fv_cuda_alloc(bytes);
  if (!scratch) return fv_last_status() ? fv_last_status() : fv_fail(FV_ERR_MEMORY, "%s: out of memory", name);
  split_part<T> *parts = (split_part<T> *)scratch;
  double *mean = op == FV_OP_VAR ? (double *)(scratch + parts_bytes) : (double *)0;
  cudaError_t err = cudaSuccess;
  for (int phase = 0; phase < (op == FV_OP_VAR ? 2 : 1); phase++) {
    split_parts_kernel<T><<<(unsigned)(g.tiles * g.chunks), g.tx * g.ty, 0, fv_cuda_stream>>>(
        op, parts, a, g, phase ? (const double *)mean : (const double *)0);
    if ((err = cudaGetLastError()) != cudaSuccess) break;
    split_finish_kernel<T><<<fv_cuda_blocks(g.tasks), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        op, phase, out, index, mean, parts, g, correction, base);
    if ((err = cudaGetLastError()) != cudaSuccess) break;
  }
  fv_cuda_free(scratch, bytes); /* on every path; ordered on the stream: safe to reuse */
  if (err != cudaSuccess) return fv_cuda_fail(err, name, "reduce split kernels", __FILE__, __LINE__);
  return FV_OK;
}

template <typename T>
int launch(int op, fv_tensor *out, fv_tensor *index, const fv_tensor *a, int64_t outer, int64_t n, int64_t inner,
           int correction, int index_base) {
  T *o = out ? (T *)fv_cuda_first(out) : (T *)0;
  int64_t *idx = index ? (int64_t *)fv_cuda_first(index) : (int64_t *)0;
  const T *pa = (const T *)fv_cuda_first(a);
  if (outer * inner == 0) return FV_OK;
  if (inner > 1 ? outer * inner < SPLIT_MAX_OUTPUTS && n >= SPLIT_MIN_N
                : outer < SPLIT_FEW_ROWS && n >= SPLIT_MIN_ROW_N)
    return launch_split<T>(op, o, idx, pa, outer, n, inner, correction, index_base);
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
