/* nn_loss.cu: cross_entropy forward and backward for (B, K) logits, float32 and float64,
 * with core/cpu/nn_loss.inc's semantics: loss_b = -weight[t_b]*(x_b[t_b] - lse_b), lse
 * max-subtracted and accumulated in double; reduction none (B losses), mean (divided by
 * the sum of the targets' weights) or sum; targets counted from index_base. A target
 * outside the classes is FV_ERR_INDEX, found by a checking kernel that raises a device
 * flag before anything is written (the flag is read back: one synchronization per call).
 * Forward: one block per row (lse, the row's weighted loss and weight into double
 * scratch), then one block sums the rows in a fixed order. Backward: one block per row.
 * Backward accumulates (+=) into dlogits.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_loss.cu -o build/cuda/nn_loss.o */
#include "nn_common.cuh"

enum { CE_NONE = 0, CE_MEAN = 1, CE_SUM = 2 }; /* FV_NN_REDUCTION_* of core/cpu/nn_kernels.h */

__global__ void ce_check_kernel(const int64_t *target, int64_t B, int64_t K, int64_t base, int *flag) {
  for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < B; b += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = target[b] - base;
    if (t < 0 || t >= K) *flag = 1;
  }
}

/* lse of row x (all threads of the block call it). */
template <typename T> __device__ double ce_lse(const T *x, int64_t K, double *scratch) {
  T m = (T)-INFINITY;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) m = x[k] > m ? x[k] : m;
  m = (T)fv_nn_block_max((double)m, scratch);
  double s = 0;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) s += (double)fv_nn_exp((T)(x[k] - m));
  s = fv_nn_block_sum(s, scratch);
  return (double)m + log(s);
}

template <typename T>
__global__ void ce_forward_rows(T *loss, T *lse, double *row_loss, double *row_w, const T *logits,
                                const int64_t *target, const T *weight, int64_t B, int64_t K, int64_t base,
                                int reduction) {
  __shared__ double scratch[FV_CUDA_THREADS];
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const T *x = logits + b * K;
    const double l = ce_lse(x, K, scratch);
    if (threadIdx.x == 0) {
      const int64_t t = target[b] - base;
      const double w = weight ? (double)weight[t] : 1;
      const double lb = -w * ((double)x[t] - l);
      if (lse) lse[b] = (T)l;
      if (reduction == CE_NONE) loss[b] = (T)lb;
      else {
        row_loss[b] = lb;
        row_w[b] = w;
      }
    }
  }
}

template <typename T>
__global__ void ce_forward_total(T *loss, const double *row_loss, const double *row_w, int64_t B, int reduction) {
  __shared__ double scratch[FV_CUDA_THREADS];
  double s = 0, w = 0;
  for (int64_t b = threadIdx.x; b < B; b += blockDim.x) {
    s += row_loss[b];
    w += row_w[b];
  }
  s = fv_nn_block_sum(s, scratch);
  w = fv_nn_block_sum(w, scratch);
  if (threadIdx.x == 0) loss[0] = (T)(reduction == CE_MEAN ? s / w : s);
}

/* scale[0] = dloss[0] / sum of the targets' weights (mean) or dloss[0] (sum). */
template <typename T>
__global__ void ce_backward_scale(double *scale, const T *dloss, const int64_t *target, const T *weight, int64_t B,
                                  int64_t base, int reduction) {
  __shared__ double scratch[FV_CUDA_THREADS];
  double w = 0;
  if (reduction == CE_MEAN)
    for (int64_t b = threadIdx.x; b < B; b += blockDim.x) w += weight ? (double)weight[target[b] - base] : 1;
  w = fv_nn_block_sum(w, scratch);
  if (threadIdx.x == 0) scale[0] = reduction == CE_MEAN ? (double)dloss[0] / w : (double)dloss[0];
}

template <typename T>
__global__ void ce_backward_rows(T *dlogits, const T *dloss, const double *scale, const T *logits, const T *lse,
                                 const int64_t *target, const T *weight, int64_t B, int64_t K, int64_t base,
                                 int reduction) {
  __shared__ double scratch[FV_CUDA_THREADS];
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const T *x = logits + b * K;
    T *dx = dlogits + b * K;
    const int64_t t = target[b] - base;
    const double l = lse ? (double)lse[b] : ce_lse(x, K, scratch);
    const double w = weight ? (double)weight[t] : 1;
    const T coef = (T)(w * (reduction == CE_NONE ? (double)dloss[b] : scale[0]));
    const T lt = (T)l;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
      T g = dx[k] + coef * fv_nn_exp((T)(x[k] - lt));
      if (k == t) g -= coef; /* in the CPU's order: dx += coef*e, then dx[t] -= coef */
      dx[k] = g;
    }
  }
}

template <typename T> static int ce_run(const fv_nn_call *c, int backward) {
  const char *op = backward ? "cross_entropy backward" : "cross_entropy";
  const int reduction = (int)c->i[0];
  const int64_t base = c->i[1];
  const fv_tensor *logits_t = c->t[2];
  const int64_t B = logits_t->sizes[0], K = logits_t->sizes[1];
  const int64_t *target = fv_nn_ptr<int64_t>(c, backward ? 4 : 3);
  const T *weight = fv_nn_ptr<T>(c, backward ? 5 : 4);
  const T *logits = fv_nn_ptr<T>(c, 2);
  if (B > 0) {
    int *flag, bad;
    FV_TRY(fv_nn_flag_new(op, &flag));
    ce_check_kernel<<<fv_cuda_blocks(B), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(target, B, K, base, flag);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) {
      fv_cuda_free(flag, sizeof(int));
      return fv_cuda_fail(err, op, "ce_check_kernel<<<>>>", __FILE__, __LINE__);
    }
    FV_TRY(fv_nn_flag_read(op, flag, &bad));
    if (bad)
      return fv_fail(FV_ERR_INDEX, "%s: a target is outside the classes %lld..%lld", op, (long long)base,
                     (long long)(base + K - 1));
  }
  const unsigned grid = fv_nn_row_blocks(B);
  if (!backward) {
    T *loss = fv_nn_ptr<T>(c, 0), *lse = fv_nn_ptr<T>(c, 1);
    double *scratch = NULL;
    size_t bytes = (size_t)(B > 0 ? B : 1) * 2 * sizeof(double);
    if (reduction != CE_NONE) {
      scratch = (double *)fv_cuda_alloc(bytes);
      if (!scratch) return fv_last_status() ? fv_last_status() : fv_fail(FV_ERR_MEMORY, "%s: out of memory", op);
    }
    if (B > 0)
      ce_forward_rows<T><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
          loss, lse, scratch, scratch ? scratch + B : NULL, logits, target, weight, B, K, base, reduction);
    if (reduction != CE_NONE)
      ce_forward_total<T><<<1, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(loss, scratch, scratch + (B > 0 ? B : 0), B,
                                                                      reduction);
    cudaError_t err = cudaGetLastError();
    if (scratch) fv_cuda_free(scratch, bytes); /* ordered on the stream: safe to reuse */
    if (err != cudaSuccess) return fv_cuda_fail(err, op, "cross_entropy kernels", __FILE__, __LINE__);
    return FV_OK;
  }
  if (B == 0) return FV_OK;
  T *dlogits = fv_nn_ptr<T>(c, 0);
  const T *dloss = fv_nn_ptr<T>(c, 1), *lse = fv_nn_ptr<T>(c, 3);
  double *scale = (double *)fv_cuda_alloc(sizeof(double));
  if (!scale) return fv_last_status() ? fv_last_status() : fv_fail(FV_ERR_MEMORY, "%s: out of memory", op);
  ce_backward_scale<T><<<1, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(scale, dloss, target, weight, B, base,
                                                                   reduction);
  ce_backward_rows<T><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(dlogits, dloss, scale, logits, lse, target,
                                                                     weight, B, K, base, reduction);
  cudaError_t err = cudaGetLastError();
  fv_cuda_free(scale, sizeof(double));
  if (err != cudaSuccess) return fv_cuda_fail(err, op, "cross_entropy backward kernels", __FILE__, __LINE__);
  return FV_OK;
}

int fv_cuda_nn_cross_entropy(const fv_nn_call *c, int backward) {
  return fv_nn_is_f64(c) ? ce_run<double>(c, backward) : ce_run<float>(c, backward);
}
