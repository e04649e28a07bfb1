/* nn_nam_gemm.cu: the fused NAM attention for float32 with TF32 on, as cuBLAS products
 * over chunks of query rows: the scores of a chunk (rows x M) exist only in a bounded
 * scratch buffer (SCORE_BYTES), never the whole N x M matrix. Per batch element and chunk:
 *   forward   S = scale Q_c K^T (cuBLAS), P = softmax rows of S in place with lse saved
 *             (a block per row), out_c = P V (cuBLAS).
 *   backward  S again, dP = dout_c V^T (cuBLAS); P = exp(S - lse), dS = P (dP - delta)
 *             scale in place (one pass); dV += P^T dout_c, dK += dS^T Q_c, dQ_c += dS K
 *             (cuBLAS with beta = 1; a NULL gradient skips its product).
 * The products run on TF32 tensor cores (cuBLAS's math mode follows fv_cuda_set_tf32), the
 * softmax in float32. nn_nam.cu sends TF32 calls here that nn_nam_mma.cu's fused kernels
 * do not take (D or Cv over 64, GPUs before sm_80), and all of them with
 * FOVEA_NAM_KERNEL=gemm.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_nam_gemm.cu -o build/cuda/nn_nam_gemm.o */
#include <algorithm>

#include "nam_tiles.cuh"

namespace {

constexpr size_t SCORE_BYTES = (size_t)256 << 20; /* each score buffer: rows x M floats at most */
constexpr int ROW_THREADS = 256;

/* The block's maximum or sum of v (ROW_THREADS threads); every thread gets it. */
template <bool MAX> __device__ __forceinline__ float block_reduce(float v, float *scratch /* [32] */) {
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = MAX ? fmaxf(v, w) : v + w;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads(); /* scratch is free from an earlier call */
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < ROW_THREADS / 32 ? scratch[lane] : (MAX ? -INFINITY : 0.f);
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = MAX ? fmaxf(v, w) : v + w;
  }
  return v;
}

/* Row r of S (rows x M, scores already scaled) becomes its softmax; lse[r] = log sum exp. */
__global__ void __launch_bounds__(ROW_THREADS) softmax_rows(float *S, float *lse, int64_t M) {
  __shared__ float scratch[32];
  float *s = S + (int64_t)blockIdx.x * M;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < M; j += ROW_THREADS) m = fmaxf(m, s[j]);
  m = block_reduce<true>(m, scratch);
  float l = 0.f;
  for (int64_t j = threadIdx.x; j < M; j += ROW_THREADS) l += expf(s[j] - m);
  l = block_reduce<false>(l, scratch);
  const float inv = 1.f / l;
  for (int64_t j = threadIdx.x; j < M; j += ROW_THREADS) s[j] = expf(s[j] - m) * inv;
  if (threadIdx.x == 0) lse[blockIdx.x] = m + logf(l);
}

/* Per element of row r: P = exp(S - lse[r]) into S, dS = P (dP - delta[r]) scale into dP. */
__global__ void softmax_grad(float *S, float *dP, const float *lse, const float *delta, int64_t M, float scale) {
  const int64_t r = blockIdx.y;
  const float L = lse[r], Dr = delta[r];
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < M; j += (int64_t)gridDim.x * blockDim.x) {
    const int64_t e = r * M + j;
    const float p = expf(S[e] - L);
    S[e] = p;
    dP[e] = p * (dP[e] - Dr) * scale;
  }
}

/* A score buffer of rows x M floats from the caching allocator. */
struct scores {
  float *p = NULL; /* (rows, M) */
  size_t bytes = 0;
  int get(int64_t rows, int64_t M) {
    bytes = sizeof(float) * (size_t)(rows * M);
    p = (float *)fv_cuda_alloc(bytes);
    if (p) return FV_OK;
    return fv_last_status() ? fv_last_status() : fv_fail(FV_ERR_MEMORY, "nam_attention: no memory for the scores");
  }
  ~scores() {
    if (p) fv_cuda_free(p, bytes);
  }
};

int forward(const fv_nn_call *c) {
  const fv_tensor *q = c->t[2], *k = c->t[3], *v = c->t[4];
  const int64_t B = q->sizes[0], N = q->sizes[1], M = k->sizes[1], D = q->sizes[2], Cv = v->sizes[2];
  const float scale = (float)c->d[0];
  float *out = fv_nn_ptr<float>(c, 0), *lse = fv_nn_ptr<float>(c, 1);
  const float *qp = fv_nn_ptr<float>(c, 2), *kp = fv_nn_ptr<float>(c, 3), *vp = fv_nn_ptr<float>(c, 4);
  const int64_t R = std::max<int64_t>(1, std::min<int64_t>(N, (int64_t)(SCORE_BYTES / sizeof(float)) / M));
  scores S;
  FV_TRY(S.get(R, M));
  for (int64_t b = 0; b < B; b++)
    for (int64_t r0 = 0; r0 < N; r0 += R) {
      const int64_t rows = std::min(R, N - r0);
      FV_TRY(fv_cuda_sgemm_rows("nam_attention", 0, 1, rows, M, D, scale, qp + (b * N + r0) * D, D, kp + b * M * D, D,
                                 0.f, S.p, M));
      softmax_rows<<<(unsigned)rows, ROW_THREADS, 0, fv_cuda_stream>>>(S.p, lse + b * N + r0, M);
      FV_CUDA_LAUNCHED("nam_attention (softmax)");
      FV_TRY(fv_cuda_sgemm_rows("nam_attention", 0, 0, rows, Cv, M, 1.f, S.p, M, vp + b * M * Cv, Cv, 0.f,
                                 out + (b * N + r0) * Cv, Cv));
    }
  return FV_OK;
}

int backward(const fv_nn_call *c) {
  const fv_tensor *q = c->t[4], *k = c->t[5], *v = c->t[6];
  const int64_t B = q->sizes[0], N = q->sizes[1], M = k->sizes[1], D = q->sizes[2], Cv = v->sizes[2];
  const float scale = (float)c->d[0];
  float *dq = fv_nn_ptr<float>(c, 0), *dk = fv_nn_ptr<float>(c, 1), *dv = fv_nn_ptr<float>(c, 2);
  const float *dout = fv_nn_ptr<float>(c, 3), *qp = fv_nn_ptr<float>(c, 4), *kp = fv_nn_ptr<float>(c, 5),
              *vp = fv_nn_ptr<float>(c, 6), *out = fv_nn_ptr<float>(c, 7), *lse = fv_nn_ptr<float>(c, 8);
  /* rows per chunk: at most 65535 (the grid's y) */
  const int64_t R =
      std::max<int64_t>(1, std::min<int64_t>({ N, (int64_t)65535, (int64_t)(SCORE_BYTES / sizeof(float)) / M }));
  float *delta; /* (B, N) */
  size_t delta_bytes;
  FV_TRY(nam_tiles::backward_delta(&delta, &delta_bytes, dout, out, B * N, (int)Cv));
  int status = FV_OK;
  {
    scores S, dP;
    status = S.get(R, M);
    if (!status) status = dP.get(R, M);
    const unsigned col_blocks = (unsigned)std::min<int64_t>((M + 255) / 256, 64);
    for (int64_t b = 0; b < B && !status; b++)
      for (int64_t r0 = 0; r0 < N && !status; r0 += R) {
        const int64_t rows = std::min(R, N - r0);
        const float *q_c = qp + (b * N + r0) * D, *do_c = dout + (b * N + r0) * Cv;
        const float *k_b = kp + b * M * D, *v_b = vp + b * M * Cv;
        status = fv_cuda_sgemm_rows("nam_attention backward", 0, 1, rows, M, D, scale, q_c, D, k_b, D, 0.f, S.p, M);
        if (!status)
          status = fv_cuda_sgemm_rows("nam_attention backward", 0, 1, rows, M, Cv, 1.f, do_c, Cv, v_b, Cv, 0.f, dP.p, M);
        if (status) break;
        softmax_grad<<<dim3(col_blocks, (unsigned)rows), 256, 0, fv_cuda_stream>>>(S.p, dP.p, lse + b * N + r0,
                                                                                 delta + b * N + r0, M, scale);
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) {
          status = fv_fail(FV_ERR_DEVICE, "nam_attention backward (softmax): %s", cudaGetErrorString(e));
          break;
        }
        if (dv) /* dV += P^T dout_c */
          status = fv_cuda_sgemm_rows("nam_attention backward", 1, 0, M, Cv, rows, 1.f, S.p, M, do_c, Cv, 1.f,
                                      dv + b * M * Cv, Cv);
        if (!status && dk) /* dK += dS^T Q_c */
          status = fv_cuda_sgemm_rows("nam_attention backward", 1, 0, M, D, rows, 1.f, dP.p, M, q_c, D, 1.f,
                                      dk + b * M * D, D);
        if (!status && dq) /* dQ_c += dS K */
          status = fv_cuda_sgemm_rows("nam_attention backward", 0, 0, rows, D, M, 1.f, dP.p, M, k_b, D, 1.f,
                                      dq + (b * N + r0) * D, D);
      }
  }
  fv_cuda_free(delta, delta_bytes);
  return status;
}

} // namespace

/* nn_nam.cu's choice for float32 with TF32 on when nn_nam_mma.cu's kernels do not fit. */
int fv_cuda_nam_gemm(const fv_nn_call *c, int backward_pass) { return backward_pass ? backward(c) : forward(c); }
