/* nn_batch_norm.cu: batch_norm of a contiguous (B, C, S) tensor per channel, forward and
 * backward, training and eval, float32 and float64, with core/cpu/nn_batch_norm.inc's
 * arithmetic: statistics in double, biased variance for normalising, invstd =
 * 1/sqrt(var + eps) saved for backward, running stats updated with the UNBIASED variance
 * and momentum; eval uses the running stats. Backward accumulates (+=) into dinp,
 * dweight and dbias (each may be NULL); forward may run in place (out == inp).
 * Three launches per call (no parts when no sums are needed: eval forward, and eval
 * backward without dweight and dbias), so that every SM has work even with few channels:
 *   1. parts: a block per chunk of BN_CHUNK elements of one channel (its values kept in
 *      registers) writes the chunk's sums in double to a scratch buffer: forward, the sum
 *      and the sum of squared deviations from the chunk's own mean (two passes over the
 *      registers); backward, the sums of dout and of (inp - mean) * dout;
 *   2. channels: a block per channel combines its chunks' sums in a fixed order (each
 *      thread takes chunks t, t + 256, ..., then bn_block_sum), so results repeat: the
 *      mean is sum / n and the sum of squared deviations Chan's exact combination
 *      sum_j (M2_j + n_j (mean_j - mean)^2); it writes the saved and running stats (or
 *      the weight's and bias's gradients) and the per-channel coefficients of step 3;
 *   3. apply: a thread per element, out = inp * alpha + beta, or dinp += dout * a + inp *
 *      bc + cc, with the channel (i / S) % C found by fv_cuda_div32 (64-bit division for
 *      tensors of more than INT32_MAX elements).
 * FOVEA_BATCH_NORM_KERNEL=cudnn (read at each call by fv_cuda_nn_batch_norm, at the end)
 * runs the calls through cuDNN instead (cudnn_batch_norm.cu); native (the default) or unset
 * runs the kernels here; eval-mode backward always runs here.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_batch_norm.cu -o build/cuda/nn_batch_norm.o */
#include <stdlib.h>
#include <string.h>

#include "nn_common.cuh"

namespace {

/* elements per thread and per block of the parts kernels; a channel of n elements has
 * ceil(n / BN_CHUNK) chunks, chunk j holding elements j * BN_CHUNK ... of the channel */
enum { BN_PER_THREAD = 16, BN_CHUNK = BN_PER_THREAD * FV_CUDA_THREADS };

/* fv_cuda_div32's stand-in for tensors of more than INT32_MAX elements: plain division */
struct bn_div64 {
  typedef int64_t index;
  int64_t d;
};
__device__ __forceinline__ int64_t fv_cuda_div(const bn_div64 &v, int64_t n) { return n / v.d; }

/* fv_nn_block_sum's contract (every thread of a block of FV_CUDA_THREADS calls it and gets
 * the sum; a fixed order, so sums repeat) with warp shuffles and two barriers instead of
 * ten, as the parts kernels run a block per chunk: a butterfly in each warp, lane 0's
 * result stored, then each thread adds the warps' sums in order.
 * scratch: __shared__ double[FV_CUDA_THREADS / 32]. */
__device__ __forceinline__ double bn_block_sum(double v, double *scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads(); /* scratch may still be read by an earlier call */
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  double sum = 0;
  for (int w = 0; w < FV_CUDA_THREADS / 32; w++) sum += scratch[w];
  return sum;
}

/* The elements k, k + FV_CUDA_THREADS, k + 2 FV_CUDA_THREADS, ... (of the B * S) of channel
 * c, one per next(): at is the current one's offset in the (B, C, S) tensor, kept by
 * additions (the step of FV_CUDA_THREADS is step_b rows and step_j more). */
template <typename Div> struct bn_cursor {
  typedef typename Div::index I;
  I j, at, S, CS, step_j, step_at;
  __device__ __forceinline__ bn_cursor(I k, I c, I C, const Div &Sd) {
    S = Sd.d;
    CS = C * S;
    const I b = fv_cuda_div(Sd, k), step_b = fv_cuda_div(Sd, (I)FV_CUDA_THREADS);
    j = k - b * S;
    at = (b * C + c) * S + j;
    step_j = FV_CUDA_THREADS - step_b * S;
    step_at = step_b * CS + step_j;
  }
  __device__ __forceinline__ void next() {
    j += step_j;
    at += step_at;
    if (j >= S) { /* one row more */
      j -= S;
      at += CS - S;
    }
  }
};

/* parts[c * chunks + j] = (sum, sum of squared deviations from sum / len) over chunk j of
 * channel c (len elements); parts: (C * chunks). At most 64 registers, so that four blocks
 * fit on an SM (the 16 values per thread take a quarter of them). */
template <typename T, typename Div>
__global__ void __launch_bounds__(FV_CUDA_THREADS, 4)
    bn_forward_parts(double2 *parts, const T *inp, typename Div::index C, Div S, typename Div::index n,
                     int64_t chunks) {
  typedef typename Div::index I;
  __shared__ double scratch[FV_CUDA_THREADS / 32];
  for (int64_t u = blockIdx.x; u < (int64_t)C * chunks; u += gridDim.x) {
    const I c = (I)(u / chunks), k0 = (I)(u % chunks) * BN_CHUNK;
    T v[BN_PER_THREAD];
    double s = 0;
    bn_cursor<Div> at(k0 + threadIdx.x, c, C, S);
#pragma unroll
    for (int e = 0; e < BN_PER_THREAD; e++, at.next()) {
      v[e] = k0 + e * FV_CUDA_THREADS + threadIdx.x < n ? inp[at.at] : (T)0;
      s += (double)v[e];
    }
    const double sum = bn_block_sum(s, scratch);
    const double m = sum / (double)(n - k0 < BN_CHUNK ? n - k0 : BN_CHUNK);
    double q = 0;
#pragma unroll
    for (int e = 0; e < BN_PER_THREAD; e++) {
      if (k0 + e * FV_CUDA_THREADS + threadIdx.x < n) {
        const double d = (double)v[e] - m;
        q += d * d;
      }
    }
    const double m2 = bn_block_sum(q, scratch);
    if (threadIdx.x == 0) parts[u] = make_double2(sum, m2);
  }
}

/* Per channel (n elements each): training combines the parts (chunks per channel) into
 * the mean and the biased variance and writes save_mean, save_invstd (each may be NULL)
 * and the running stats (may be NULL); eval takes the running stats. coef: (2, C), the
 * alpha and beta of out = inp * alpha + beta. */
template <typename T>
__global__ void bn_forward_channels(T *coef, T *save_mean, T *save_invstd, T *running_mean, T *running_var,
                                    const double2 *parts, const T *weight, const T *bias, int64_t C, int64_t n,
                                    int64_t chunks, int training, double momentum, double eps) {
  __shared__ double scratch[FV_CUDA_THREADS / 32];
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    double mean, invstd;
    if (training) {
      const double2 *p = parts + c * chunks;
      double s = 0;
      for (int64_t j = threadIdx.x; j < chunks; j += blockDim.x) s += p[j].x;
      mean = bn_block_sum(s, scratch) / (double)n;
      double q = 0;
      for (int64_t j = threadIdx.x; j < chunks; j += blockDim.x) {
        const double len = (double)(n - j * BN_CHUNK < BN_CHUNK ? n - j * BN_CHUNK : BN_CHUNK);
        const double d = p[j].x / len - mean;
        q += p[j].y + len * d * d;
      }
      const double var_sum = bn_block_sum(q, scratch);
      invstd = 1 / sqrt(var_sum / (double)n + eps);
      if (threadIdx.x == 0) {
        if (save_mean) save_mean[c] = (T)mean;
        if (save_invstd) save_invstd[c] = (T)invstd;
        if (running_mean) running_mean[c] = (T)(momentum * mean + (1 - momentum) * (double)running_mean[c]);
        if (running_var) {
          const double unbiased = var_sum / (double)(n - 1);
          running_var[c] = (T)(momentum * unbiased + (1 - momentum) * (double)running_var[c]);
        }
      }
    } else {
      mean = (double)running_mean[c];
      invstd = 1 / sqrt((double)running_var[c] + eps);
    }
    if (threadIdx.x == 0) {
      const double a = invstd * (weight ? (double)weight[c] : 1);
      coef[c] = (T)a;
      coef[C + c] = (T)((bias ? (double)bias[c] : 0) - mean * a);
    }
  }
}

/* out = inp * alpha + beta over all numel elements; coef as bn_forward_channels wrote it */
template <typename T, typename Div>
__global__ void bn_forward_apply(T *out, const T *inp, const T *coef, Div S, Div C, typename Div::index numel) {
  typedef typename Div::index I;
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += (I)gridDim.x * blockDim.x) {
    const I r = fv_cuda_div(S, i); /* row b * C + c */
    const I c = r - fv_cuda_div(C, r) * C.d;
    out[i] = inp[i] * coef[c] + coef[C.d + c];
  }
}

/* parts[c * chunks + j] = (sum of dout, sum of (inp - mean) * dout) over chunk j of channel
 * c, mean = mean_of[c] (save_mean when training, running_mean in eval); parts: (C * chunks) */
template <typename T, typename Div>
__global__ void bn_backward_parts(double2 *parts, const T *dout, const T *inp, const T *mean_of,
                                  typename Div::index C, Div S, typename Div::index n, int64_t chunks) {
  typedef typename Div::index I;
  __shared__ double scratch[FV_CUDA_THREADS / 32];
  for (int64_t u = blockIdx.x; u < (int64_t)C * chunks; u += gridDim.x) {
    const I c = (I)(u / chunks), k0 = (I)(u % chunks) * BN_CHUNK;
    const double mean = (double)mean_of[c];
    double s = 0, d = 0;
    bn_cursor<Div> at(k0 + threadIdx.x, c, C, S);
#pragma unroll
    for (int e = 0; e < BN_PER_THREAD; e++, at.next()) {
      if (k0 + e * FV_CUDA_THREADS + threadIdx.x < n) {
        const double dy = (double)dout[at.at];
        s += dy;
        d += ((double)inp[at.at] - mean) * dy;
      }
    }
    const double sum = bn_block_sum(s, scratch);
    const double dotp = bn_block_sum(d, scratch);
    if (threadIdx.x == 0) parts[u] = make_double2(sum, dotp);
  }
}

/* Per channel: the parts' sums combined (chunks per channel; none when the sums are not
 * needed), dweight += dotp * invstd and dbias += sum (each may be NULL), and coef: (3, C),
 * the a, bc and cc of dinp += dout * a + inp * bc + cc. */
template <typename T>
__global__ void bn_backward_channels(T *coef, T *dweight, T *dbias, const double2 *parts, const T *weight,
                                     const T *running_var, const T *save_mean, const T *save_invstd, int64_t C,
                                     int64_t n, int64_t chunks, int training, double eps) {
  __shared__ double scratch[FV_CUDA_THREADS / 32];
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const double2 *p = parts + c * chunks;
    double s = 0, d = 0;
    for (int64_t j = threadIdx.x; j < chunks; j += blockDim.x) {
      s += p[j].x;
      d += p[j].y;
    }
    const double sum = bn_block_sum(s, scratch);
    const double dotp = bn_block_sum(d, scratch);
    if (threadIdx.x == 0) {
      const double mean = training ? (double)save_mean[c] : 0; /* only training uses it */
      const double invstd = training ? (double)save_invstd[c] : 1 / sqrt((double)running_var[c] + eps);
      const double A = invstd * (weight ? (double)weight[c] : 1);
      double Bc = 0, Cc = 0;
      if (training) {
        const double kk = dotp * invstd * invstd / (double)n;
        Bc = -A * kk;
        Cc = A * (mean * kk - sum / (double)n);
      }
      coef[c] = (T)A;
      coef[C + c] = (T)Bc;
      coef[2 * C + c] = (T)Cc;
      if (dweight) dweight[c] += (T)(dotp * invstd);
      if (dbias) dbias[c] += (T)sum;
    }
  }
}

/* dinp += dout * a + inp * bc + cc over all numel elements; coef as bn_backward_channels
 * wrote it */
template <typename T, typename Div>
__global__ void bn_backward_apply(T *dinp, const T *dout, const T *inp, const T *coef, Div S, Div C,
                                  typename Div::index numel) {
  typedef typename Div::index I;
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += (I)gridDim.x * blockDim.x) {
    const I r = fv_cuda_div(S, i); /* row b * C + c */
    const I c = r - fv_cuda_div(C, r) * C.d;
    dinp[i] += dout[i] * coef[c] + inp[i] * coef[C.d + c] + coef[2 * C.d + c];
  }
}

/* The three launches for (B, C, S), C > 0; Sd and Cd divide by S and C (fv_cuda_div32
 * when B * C * S <= INT32_MAX, else bn_div64). */
template <typename T, typename Div>
int bn_launch(const fv_nn_call *c, int backward, int64_t B, int64_t C, int64_t S, Div Sd, Div Cd) {
  typedef typename Div::index I;
  const char *op = backward ? "batch_norm backward" : "batch_norm";
  const int training = (int)c->i[0];
  const int64_t n = B * S, numel = n * C;
  /* the sums are needed in training, and in eval by backward for dweight and dbias */
  const int sums = training || (backward && (c->t[1] || c->t[2]));
  const int64_t chunks = sums ? (n + BN_CHUNK - 1) / BN_CHUNK : 0;
  const size_t parts_bytes = (size_t)(C * chunks) * sizeof(double2);
  const size_t bytes = parts_bytes + (size_t)(backward ? 3 : 2) * (size_t)C * sizeof(T);
  char *scratch = (char *)fv_cuda_alloc(bytes);
  if (!scratch) return fv_last_status() ? fv_last_status() : fv_fail(FV_ERR_MEMORY, "%s: out of memory", op);
  double2 *parts = (double2 *)scratch;  /* (C, chunks) */
  T *coef = (T *)(scratch + parts_bytes); /* (2, C) forward, (3, C) backward */
  if (!backward) {
    T *out = fv_nn_ptr<T>(c, 0);
    const T *inp = fv_nn_ptr<T>(c, 5);
    if (chunks > 0)
      bn_forward_parts<T, Div><<<fv_nn_row_blocks(C * chunks), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
          parts, inp, (I)C, Sd, (I)n, chunks);
    bn_forward_channels<T><<<fv_nn_row_blocks(C), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        coef, fv_nn_ptr<T>(c, 1), fv_nn_ptr<T>(c, 2), fv_nn_ptr<T>(c, 3), fv_nn_ptr<T>(c, 4), parts,
        fv_nn_ptr<T>(c, 6), fv_nn_ptr<T>(c, 7), C, n, chunks, training, c->d[0], c->d[1]);
    if (numel > 0)
      bn_forward_apply<T, Div><<<fv_cuda_blocks(numel), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(out, inp, coef, Sd, Cd,
                                                                                             (I)numel);
  } else {
    T *dinp = fv_nn_ptr<T>(c, 0);
    const T *dout = fv_nn_ptr<T>(c, 3), *inp = fv_nn_ptr<T>(c, 4);
    if (chunks > 0)
      bn_backward_parts<T, Div><<<fv_nn_row_blocks(C * chunks), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
          parts, dout, inp, training ? fv_nn_ptr<T>(c, 8) : fv_nn_ptr<T>(c, 6), (I)C, Sd, (I)n, chunks);
    bn_backward_channels<T><<<fv_nn_row_blocks(C), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        coef, fv_nn_ptr<T>(c, 1), fv_nn_ptr<T>(c, 2), parts, fv_nn_ptr<T>(c, 5), fv_nn_ptr<T>(c, 7),
        fv_nn_ptr<T>(c, 8), fv_nn_ptr<T>(c, 9), C, n, chunks, training, c->d[1]);
    if (dinp && numel > 0)
      bn_backward_apply<T, Div><<<fv_cuda_blocks(numel), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(dinp, dout, inp, coef,
                                                                                              Sd, Cd, (I)numel);
  }
  const cudaError_t err = cudaGetLastError();
  fv_cuda_free(scratch, bytes); /* ordered on the stream: safe to reuse */
  if (err != cudaSuccess) return fv_cuda_fail(err, op, "batch_norm kernels", __FILE__, __LINE__);
  return FV_OK;
}

template <typename T> int bn_run(const fv_nn_call *c, int backward) {
  int64_t B, C, S;
  fv_nn_bcs(c->t[backward ? 4 : 5], &B, &C, &S);
  if (C == 0) return FV_OK;
  if (B * C * S <= INT32_MAX && C <= INT32_MAX) /* S = 0 makes no element: any divisor does */
    return bn_launch<T>(c, backward, B, C, S, fv_cuda_div32_of((uint32_t)(S > 0 ? S : 1)),
                        fv_cuda_div32_of((uint32_t)C));
  return bn_launch<T>(c, backward, B, C, S, bn_div64{S}, bn_div64{C});
}

}  // namespace

/* cudnn_batch_norm.cu: the call through cuDNN (*taken = 0: one cuDNN does not run, such as
 * eval backward; built without cuDNN, an error) */
int fv_cuda_batch_norm_cudnn(const fv_nn_call *c, int backward, int *taken);

/* The choice of path, read at each call (as FOVEA_NAM_KERNEL): FOVEA_BATCH_NORM_KERNEL unset,
 * empty or "native" runs the kernels above (the default: the path verified on a GPU),
 * "cudnn" cudnn_batch_norm.cu's cuDNN calls (for the calls cuDNN cannot run, the kernels
 * above), anything else is an error. */
int fv_cuda_nn_batch_norm(const fv_nn_call *c, int backward) {
  const char *kind = getenv("FOVEA_BATCH_NORM_KERNEL");
  if (kind && *kind && strcmp(kind, "native") != 0) {
    if (strcmp(kind, "cudnn") != 0)
      return fv_fail(FV_ERR_ARGUMENT, "%s: FOVEA_BATCH_NORM_KERNEL=%s: expected native (the default) or cudnn",
                     backward ? "batch_norm backward" : "batch_norm", kind);
    int taken = 0;
    const int status = fv_cuda_batch_norm_cudnn(c, backward, &taken);
    if (taken || status) return status;
  }
  return fv_nn_is_f64(c) ? bn_run<double>(c, backward) : bn_run<float>(c, backward);
}
