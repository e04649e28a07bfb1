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
 * correctness over speed, where the N x M score matrix is never stored either: one
 * thread per query row; forward makes two passes over the keys (an online max and sum
 * giving lse, then out_i = sum_j exp(s_ij - lse_i) v_j accumulated in the output row),
 * backward recomputes p_ij = exp(s_ij - lse_i) and adds dq_i itself and dk_j, dv_j with
 * atomicAdd. Dot products and sums in the element type (float for float32), the max and
 * softmax sum in double. Backward accumulates (+=) into dq, dk, dv (each may be NULL).
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_nam.cu -o build/cuda/nn_nam.o */
#include <stdlib.h>
#include <string.h>

#include "nn_common.cuh"

template <typename T> __device__ __forceinline__ T dot(const T *a, const T *b, int64_t n) {
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

template <typename T>
__global__ void nam_backward(T *dq, T *dk, T *dv, const T *dout, const T *q, const T *k, const T *v, const T *out,
                             const T *lse, int64_t B, int64_t N, int64_t M, int64_t D, int64_t Cv, T scale) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < B * N; r += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = r / N;
    const T *qi = q + r * D, *kb = k + b * M * D, *vb = v + b * M * Cv, *dy = dout + r * Cv;
    const T Di = dot(dy, out + r * Cv, Cv);
    const T L = lse[r];
    for (int64_t j = 0; j < M; j++) {
      const T *kj = kb + j * D, *vj = vb + j * Cv;
      const T p = fv_nn_exp((T)(scale * dot(qi, kj, D) - L));
      if (dv)
        for (int64_t c = 0; c < Cv; c++) atomicAdd(dv + (b * M + j) * Cv + c, p * dy[c]);
      const T ds = p * (dot(dy, vj, Cv) - Di) * scale;
      if (dq)
        for (int64_t d = 0; d < D; d++) dq[r * D + d] += ds * kj[d];
      if (dk)
        for (int64_t d = 0; d < D; d++) atomicAdd(dk + (b * M + j) * D + d, ds * qi[d]);
    }
  }
}

template <typename T> static int nam_run(const fv_nn_call *c, int backward) {
  const fv_tensor *q = c->t[backward ? 4 : 2], *k = c->t[backward ? 5 : 3], *v = c->t[backward ? 6 : 4];
  const int64_t B = q->sizes[0], N = q->sizes[1], D = q->sizes[2], M = k->sizes[1], Cv = v->sizes[2];
  const T scale = (T)c->d[0];
  if (B * N == 0) return FV_OK;
  /* few rows, long loops: small blocks so that more SMs get work */
  const unsigned threads = 64, grid = (unsigned)((B * N + threads - 1) / threads);
  if (!backward)
    nam_forward<T><<<grid, threads, 0, fv_cuda_stream>>>(fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1), fv_nn_ptr<T>(c, 2),
                                                         fv_nn_ptr<T>(c, 3), fv_nn_ptr<T>(c, 4), B, N, M, D, Cv,
                                                         scale);
  else
    nam_backward<T><<<grid, threads, 0, fv_cuda_stream>>>(
        fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1), fv_nn_ptr<T>(c, 2), fv_nn_ptr<T>(c, 3), fv_nn_ptr<T>(c, 4),
        fv_nn_ptr<T>(c, 5), fv_nn_ptr<T>(c, 6), fv_nn_ptr<T>(c, 7), fv_nn_ptr<T>(c, 8), B, N, M, D, Cv, scale);
  FV_CUDA_LAUNCHED(backward ? "nam_attention backward" : "nam_attention");
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
