/* nn_nam.cu: the fused NAM attention (FV_OP_NAM) on the GPU, float32 and float64:
 *   out_i = sum_j softmax_j(scale * q_i . k_j) v_j,  lse_i = log sum_j exp(scale * q_i . k_j)
 * with q (B, N, D), k (B, M, D), v (B, M, Cv), out (B, N, Cv), lse (B, N). The choice of
 * kernel (fv_cuda_nn_nam), for float32 with keys and rows:
 *   bf16 autocast          nn_nam_mma.cu's fused kernels with bfloat16 operands when D and
 *                          Cv are at most 64 on sm_80 and later; else as below.
 *   TF32 on (the default)  nn_nam_mma.cu's fused mma.sync kernels when D and Cv are at
 *                          most 64 on sm_80 and later, else nn_nam_gemm.cu's cuBLAS
 *                          products over bounded chunks of scores; FOVEA_NAM_KERNEL=gemm
 *                          forces the latter (FOVEA_NAM_KERNEL=mma is the default).
 *   TF32 off               nn_nam_flash.cu's exact tiled kernels (D and Cv up to 128).
 * The rest (float64, wider rows with TF32 off, no keys) runs the simple kernels below,
 * correctness over speed, where the N x M score matrix is never stored either. Forward:
 * one thread per query row, two passes over the keys (an online max and sum giving lse,
 * then out_i = sum_j exp(s_ij - lse_i) v_j accumulated in the output row). Backward,
 * with no atomics, so gradients are the same on every run: delta_i = dout_i . out_i (a
 * thread per query row, into scratch), then a thread per query row for dq (dq_i +=
 * sum_j ds_ij k_j, j ascending) and a thread per key row for dk and dv (sum_i p_ij dout_i
 * and sum_i ds_ij q_i, i ascending, in scratch rows of the thread's own, then added into
 * dk_j and dv_j once; scratch of B*N + B*M*(D + Cv) elements, as much again as dk and dv),
 * each recomputing p_ij = exp(s_ij - lse_i) and ds_ij = p_ij (dout_i . v_j - delta_i) scale
 * with the same expressions as the other. The per-row bodies are __host__ __device__
 * (a host test can run them over an emulated grid). Dot products and sums in the element
 * type (float for float32), the forward's max and softmax sum in double. Backward
 * accumulates (+=) into dq, dk, dv (each may be NULL).
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_nam.cu -o build/cuda/nn_nam.o */
#include <stdlib.h>
#include <string.h>

#include "nn_common.cuh"

template <typename T> __host__ __device__ __forceinline__ T dot(const T *a, const T *b, int64_t n) {
  T s = 0;
  for (int64_t d = 0; d < n; d++) s += a[d] * b[d];
  return s;
}

template <typename T>
__global__ void nam_forward(T *out, T *lse, const T *q, const T *k, const T *v, int64_t B, int64_t N, int64_t M,
                            int64_t D, int64_t Cv, T scale) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < B * N; r += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = r / N;
    const T *qi = q + r * D, *kb = k + b * M * D, *vb = v + b * M * Cv;
    T *o = out + r * Cv;
    double m = -INFINITY, l = 0;
    for (int64_t j = 0; j < M; j++) {
      const double s = (double)(scale * dot(qi, kb + j * D, D));
      if (s > m) {
        l = l * exp(m - s) + 1;
        m = s;
      } else {
        l += exp(s - m);
      }
    }
    const T L = (T)(m + log(l));
    lse[r] = L;
    for (int64_t c = 0; c < Cv; c++) o[c] = 0;
    for (int64_t j = 0; j < M; j++) {
      const T p = fv_nn_exp((T)(scale * dot(qi, kb + j * D, D) - L));
      const T *vj = vb + j * Cv;
      for (int64_t c = 0; c < Cv; c++) o[c] += p * vj[c];
    }
  }
}

/* The backward's per-row bodies; r is a query row (b * N + i), or a key row (b * M + j). */
/* delta[r] = dout_r . out_r */
template <typename T>
__host__ __device__ __forceinline__ void nam_delta_row(T *delta, const T *dout, const T *out, int64_t Cv, int64_t r) {
  delta[r] = dot(dout + r * Cv, out + r * Cv, Cv);
}

/* dq_r += sum_j ds_rj k_j, j ascending, each term added into dq_r */
template <typename T>
__host__ __device__ __forceinline__ void nam_dq_row(T *dq, const T *dout, const T *q, const T *k, const T *v,
                                                    const T *lse, const T *delta, int64_t N, int64_t M, int64_t D,
                                                    int64_t Cv, T scale, int64_t r) {
  const int64_t b = r / N;
  const T *qi = q + r * D, *kb = k + b * M * D, *vb = v + b * M * Cv, *dy = dout + r * Cv;
  const T L = lse[r], Di = delta[r];
  T *dqi = dq + r * D;
  for (int64_t j = 0; j < M; j++) {
    const T *kj = kb + j * D, *vj = vb + j * Cv;
    const T p = fv_nn_exp((T)(scale * dot(qi, kj, D) - L));
    const T ds = p * (dot(dy, vj, Cv) - Di) * scale;
    for (int64_t d = 0; d < D; d++) dqi[d] += ds * kj[d];
  }
}

/* Key row r (b * M + j): sk = sum_i ds_ij q_i and sv = sum_i p_ij dout_i over the batch's
 * query rows, i ascending, in the thread's own scratch rows sk (D wide) and sv (Cv wide),
 * then dk_j += sk, dv_j += sv; dk with sk, or dv with sv, may be NULL (delta too without dk). */
template <typename T>
__host__ __device__ __forceinline__ void nam_dkdv_row(T *dk, T *dv, T *sk, T *sv, const T *dout, const T *q,
                                                      const T *k, const T *v, const T *lse, const T *delta,
                                                      int64_t N, int64_t M, int64_t D, int64_t Cv, T scale,
                                                      int64_t r) {
  const int64_t b = r / M;
  const T *kj = k + r * D, *vj = v + r * Cv, *qb = q + b * N * D, *dyb = dout + b * N * Cv;
  T *ak = dk ? sk + r * D : NULL, *av = dv ? sv + r * Cv : NULL;
  if (ak)
    for (int64_t d = 0; d < D; d++) ak[d] = 0;
  if (av)
    for (int64_t c = 0; c < Cv; c++) av[c] = 0;
  for (int64_t i = 0; i < N; i++) {
    const T *qi = qb + i * D, *dy = dyb + i * Cv;
    const T p = fv_nn_exp((T)(scale * dot(qi, kj, D) - lse[b * N + i]));
    if (av)
      for (int64_t c = 0; c < Cv; c++) av[c] += p * dy[c];
    if (ak) {
      const T ds = p * (dot(dy, vj, Cv) - delta[b * N + i]) * scale;
      for (int64_t d = 0; d < D; d++) ak[d] += ds * qi[d];
    }
  }
  if (ak)
    for (int64_t d = 0; d < D; d++) dk[r * D + d] += ak[d];
  if (av)
    for (int64_t c = 0; c < Cv; c++) dv[r * Cv + c] += av[c];
}

template <typename T> __global__ void nam_delta(T *delta, const T *dout, const T *out, int64_t rows, int64_t Cv) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows; r += (int64_t)gridDim.x * blockDim.x)
    nam_delta_row(delta, dout, out, Cv, r);
}

template <typename T>
__global__ void nam_backward_dq(T *dq, const T *dout, const T *q, const T *k, const T *v, const T *lse,
                                const T *delta, int64_t B, int64_t N, int64_t M, int64_t D, int64_t Cv, T scale) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < B * N; r += (int64_t)gridDim.x * blockDim.x)
    nam_dq_row(dq, dout, q, k, v, lse, delta, N, M, D, Cv, scale, r);
}

template <typename T>
__global__ void nam_backward_dkdv(T *dk, T *dv, T *sk, T *sv, const T *dout, const T *q, const T *k, const T *v,
                                  const T *lse, const T *delta, int64_t B, int64_t N, int64_t M, int64_t D,
                                  int64_t Cv, T scale) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < B * M; r += (int64_t)gridDim.x * blockDim.x)
    nam_dkdv_row(dk, dv, sk, sv, dout, q, k, v, lse, delta, N, M, D, Cv, scale, r);
}

/* few rows, long loops: small blocks so that more SMs get work */
static const unsigned nam_threads = 64;
static unsigned nam_blocks(int64_t rows) { return (unsigned)((rows + nam_threads - 1) / nam_threads); }

/* Backward (slots dq, dk, dv, dout, q, k, v, out, lse): scratch for delta (B * N, when dq
 * or dk is wanted) and the key rows' sums (B * M rows of D for dk, of Cv for dv), then
 * delta, dq and dk/dv in turn on the compute stream; the scratch is freed after. */
template <typename T>
static int nam_backward_run(const fv_nn_call *c, int64_t B, int64_t N, int64_t M, int64_t D, int64_t Cv, T scale) {
  const char *op = "nam_attention backward";
  T *dq = fv_nn_ptr<T>(c, 0), *dk = fv_nn_ptr<T>(c, 1), *dv = fv_nn_ptr<T>(c, 2);
  const T *dout = fv_nn_ptr<T>(c, 3), *q = fv_nn_ptr<T>(c, 4), *k = fv_nn_ptr<T>(c, 5), *v = fv_nn_ptr<T>(c, 6),
          *out = fv_nn_ptr<T>(c, 7), *lse = fv_nn_ptr<T>(c, 8);
  if (M == 0 || (!dq && !dk && !dv)) return FV_OK; /* every gradient term is 0 */
  const size_t n_delta = dq || dk ? (size_t)(B * N) : 0, n_sk = dk ? (size_t)(B * M * D) : 0,
               n_sv = dv ? (size_t)(B * M * Cv) : 0;
  const size_t bytes = sizeof(T) * (n_delta + n_sk + n_sv);
  T *scratch = bytes ? (T *)fv_cuda_alloc(bytes) : NULL;
  if (bytes && !scratch)
    return fv_last_status() ? fv_last_status() : fv_fail(FV_ERR_MEMORY, "%s: no memory for scratch", op);
  T *delta = n_delta ? scratch : NULL, *sk = dk ? scratch + n_delta : NULL, *sv = dv ? scratch + n_delta + n_sk : NULL;
  if (delta) nam_delta<T><<<nam_blocks(B * N), nam_threads, 0, fv_cuda_stream>>>(delta, dout, out, B * N, Cv);
  if (dq)
    nam_backward_dq<T><<<nam_blocks(B * N), nam_threads, 0, fv_cuda_stream>>>(dq, dout, q, k, v, lse, delta, B, N, M,
                                                                              D, Cv, scale);
  if (dk || dv)
    nam_backward_dkdv<T><<<nam_blocks(B * M), nam_threads, 0, fv_cuda_stream>>>(dk, dv, sk, sv, dout, q, k, v, lse,
                                                                                delta, B, N, M, D, Cv, scale);
  const cudaError_t err = cudaGetLastError();
  if (scratch) fv_cuda_free(scratch, bytes); /* ordered on the stream: safe to reuse */
  if (err != cudaSuccess) return fv_cuda_fail(err, op, "nam backward kernels", __FILE__, __LINE__);
  return FV_OK;
}

template <typename T> static int nam_run(const fv_nn_call *c, int backward) {
  const fv_tensor *q = c->t[backward ? 4 : 2], *k = c->t[backward ? 5 : 3], *v = c->t[backward ? 6 : 4];
  const int64_t B = q->sizes[0], N = q->sizes[1], D = q->sizes[2], M = k->sizes[1], Cv = v->sizes[2];
  const T scale = (T)c->d[0];
  if (B * N == 0) return FV_OK;
  if (backward) return nam_backward_run<T>(c, B, N, M, D, Cv, scale);
  nam_forward<T><<<nam_blocks(B * N), nam_threads, 0, fv_cuda_stream>>>(
      fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1), fv_nn_ptr<T>(c, 2), fv_nn_ptr<T>(c, 3), fv_nn_ptr<T>(c, 4), B, N, M, D,
      Cv, scale);
  FV_CUDA_LAUNCHED("nam_attention");
  return FV_OK;
}

int fv_cuda_nn_nam(const fv_nn_call *c, int backward) {
  const fv_tensor *q = c->t[backward ? 4 : 2], *k = c->t[backward ? 5 : 3];
  if (fv_nn_is_f64(c)) return nam_run<double>(c, backward);
  if (k->sizes[1] > 0 && q->sizes[0] * q->sizes[1] > 0) {
    int taken = 0, status;
    if (fv_cuda_autocast_bf16()) {
      status = fv_cuda_nam_mma(c, backward, 1, &taken);
      if (taken) return status;
    }
    if (fv_cuda_tf32_enabled()) {
      const char *kind = getenv("FOVEA_NAM_KERNEL");
      const int gemm = kind && !strcmp(kind, "gemm");
      if (kind && *kind && !gemm && strcmp(kind, "mma"))
        return fv_fail(FV_ERR_ARGUMENT, "nam_attention: FOVEA_NAM_KERNEL=%s: expected mma (the default) or gemm", kind);
      if (!gemm) {
        status = fv_cuda_nam_mma(c, backward, 0, &taken);
        if (taken) return status;
      }
      return fv_cuda_nam_gemm(c, backward);
    }
    status = fv_cuda_nam_exact(c, backward, &taken);
    if (taken) return status;
  }
  return nam_run<float>(c, backward);
}
