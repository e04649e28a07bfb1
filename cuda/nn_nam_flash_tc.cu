/* nn_nam_flash_tc.cu: the fused NAM attention for float32 on TF32 tensor cores, taken with
 * TF32 on when FOVEA_NAM_KERNEL=flash (by default nn_nam_flash.cu sends TF32 calls to
 * nn_nam_gemm.cu's cuBLAS products; cuda/README.md has both measured). The same
 * FlashAttention-2 schedule as nn_nam_flash.cu, with every 64 x 64 product (Q K^T, P V,
 * and in backward dO V^T, P^T dO, dS^T Q, dS K) done by WMMA m16n16k8 TF32 fragments with
 * float32 accumulation; the softmax, its online rescaling and dS = P (dP - delta) stay in
 * float32 on CUDA cores, in shared memory:
 *   forward  a block per (64 query rows, batch); S -> shared, softmax in place (P), the
 *            output tile O kept in shared memory so that rows can be rescaled, O += P V.
 *   backward delta (nam_tiles.cuh), then a block per 64-key tile accumulating dK and dV
 *            in register fragments across all query tiles, and a block per 64-query tile
 *            accumulating dQ: no atomics, the same gradients on every run.
 * Eight warps per block, two blocks per SM at least (128 registers a thread); warp w
 * computes 16 x 16 output tiles w, w + 8, ... of each product. Shared rows are padded to a
 * multiple of 4 floats (WMMA's rule) plus 4. Tensor cores with TF32 need compute
 * capability 8.0: for older GPUs (the compute_75 PTX) the kernels compile empty and
 * fv_cuda_nam_flash_tc_ready() says no.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_nam_flash_tc.cu -o build/cuda/nn_nam_flash_tc.o */
#include <mma.h>

#include "nam_tiles.cuh"

/* 1 where WMMA's TF32 fragments exist: the host pass and devices from sm_80 on */
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define FV_NAM_TC 1
#else
#define FV_NAM_TC 0
#endif

namespace {
using namespace nam_tiles;
using namespace nvcuda;

constexpr int SS = TILE + 4; /* row stride of the 64 x 64 score tiles */

#if FV_NAM_TC
constexpr int WARPS = THREADS / 32;

typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> frag_b_row;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> frag_b_col;
typedef wmma::fragment<wmma::accumulator, 16, 16, 8, float> frag_acc;

template <typename F> __device__ __forceinline__ void to_tf32(F &f) {
#pragma unroll
  for (int t = 0; t < f.num_elements; t++) f.x[t] = wmma::__float_to_tf32(f.x[t]);
}

/* acc += A[16 rows at a] (row-major, lda) times B: 16 columns at b, K deep; B row-major
 * (element (k, n) at b[k * ldb + n]) when TRANSPOSED_B is false, else B = X^T for a
 * row-major X (element (k, n) at b[n * ldb + k]). */
template <int K, bool TRANSPOSED_B>
__device__ __forceinline__ void mma_rows(frag_acc &acc, const float *a, int lda, const float *b, int ldb) {
#pragma unroll 2
  for (int k0 = 0; k0 < K; k0 += 8) {
    frag_a fa;
    wmma::load_matrix_sync(fa, a + k0, lda);
    to_tf32(fa);
    if (TRANSPOSED_B) {
      frag_b_col fb;
      wmma::load_matrix_sync(fb, b + k0, ldb);
      to_tf32(fb);
      wmma::mma_sync(acc, fa, fb, acc);
    } else {
      frag_b_row fb;
      wmma::load_matrix_sync(fb, b + (size_t)k0 * ldb, ldb);
      to_tf32(fb);
      wmma::mma_sync(acc, fa, fb, acc);
    }
  }
}

/* out (64 x 64, stride SS) = X Y^T for row-major X (64 x K, stride ldx) and Y (64 x K,
 * stride ldy): the 16 tiles, two per warp. */
template <int K> __device__ __forceinline__ void scores(float *out, const float *x, int ldx, const float *y, int ldy) {
  const int w = threadIdx.x >> 5;
#pragma unroll
  for (int u = 0; u < 2; u++) {
    const int t = w + WARPS * u, rb = t >> 2, cb = t & 3;
    frag_acc acc;
    wmma::fill_fragment(acc, 0.f);
    mma_rows<K, true>(acc, x + rb * 16 * ldx, ldx, y + cb * 16 * ldy, ldy);
    wmma::store_matrix_sync(out + rb * 16 * SS + cb * 16, acc, SS, wmma::mem_row_major);
  }
}

/* The accumulator fragments of a 64 x W product held across tiles: tile t = w + 8 u is
 * rows 16 (t / (W / 16)), columns 16 (t % (W / 16)). */
template <int W> struct tiles {
  static constexpr int COUNT = 4 * W / 16;
  static constexpr int PER_WARP = (COUNT + WARPS - 1) / WARPS;
  frag_acc f[PER_WARP];
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int u = 0; u < PER_WARP; u++) wmma::fill_fragment(f[u], 0.f);
  }
  /* f += P (64 x 64, stride SS) times X (64 x W row-major, stride ldx) */
  __device__ __forceinline__ void add(const float *p, const float *x, int ldx) {
    const int w = threadIdx.x >> 5;
#pragma unroll
    for (int u = 0; u < PER_WARP; u++) {
      const int t = w + WARPS * u;
      if (t >= COUNT) break;
      const int rb = t / (W / 16), cb = t % (W / 16);
      mma_rows<TILE, false>(f[u], p + rb * 16 * SS, SS, x + cb * 16, ldx);
    }
  }
  /* dst (64 x W, stride ld) = f */
  __device__ __forceinline__ void store(float *dst, int ld) {
    const int w = threadIdx.x >> 5;
#pragma unroll
    for (int u = 0; u < PER_WARP; u++) {
      const int t = w + WARPS * u;
      if (t >= COUNT) break;
      const int rb = t / (W / 16), cb = t % (W / 16);
      wmma::store_matrix_sync(dst + rb * 16 * ld + cb * 16, f[u], ld, wmma::mem_row_major);
    }
  }
};

/* g[(r0 + r) * cols + c] += src[r * ld + c] over the tile inside rows x cols; g may be NULL. */
__device__ __forceinline__ void add_tile(float *g, const float *src, int ld, int width, int64_t r0, int64_t rows,
                                         int cols) {
  if (!g) return;
  for (int e = threadIdx.x; e < TILE * width; e += THREADS) {
    const int r = e / width, c = e % width;
    if (r0 + r < rows && c < cols) g[(r0 + r) * cols + c] += src[r * ld + c];
  }
}

#endif

template <int DP, int CP>
__global__ void __launch_bounds__(THREADS, 2)
    tc_forward(float *out, float *lse, const float *q, const float *k, const float *v, int64_t N, int64_t M, int D,
               int Cv, float scale) {
#if FV_NAM_TC
  extern __shared__ __align__(128) float smem[];
  constexpr int LQ = DP + 4, LV = CP + 4;
  float *Qs = smem;            /* (64, LQ) */
  float *Ks = Qs + TILE * LQ;  /* (64, LQ) */
  float *Vs = Ks + TILE * LQ;  /* (64, LV) */
  float *Os = Vs + TILE * LV;  /* (64, LV): the unnormalised output rows */
  float *Ss = Os + TILE * LV;  /* (64, SS): scores, then P */
  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
  const int64_t b = blockIdx.y, row0 = (int64_t)blockIdx.x * TILE;
  const float *kb = k + b * M * D, *vb = v + b * M * Cv;
  load_tile<DP>(Qs, LQ, q + b * N * D, row0, N, D);
  for (int e = threadIdx.x; e < TILE * LV; e += THREADS) Os[e] = 0.f;
  float m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    m[i] = -INFINITY;
    l[i] = 0.f;
  }
  for (int64_t c0 = 0; c0 < M; c0 += TILE) {
    __syncthreads(); /* the last tile's K, V and P are used up */
    load_tile<DP>(Ks, LQ, kb, c0, M, D);
    load_tile<CP>(Vs, LV, vb, c0, M, Cv);
    __syncthreads();
    scores<DP>(Ss, Qs, LQ, Ks, LQ);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float *row = Ss + (4 * ty + i) * SS;
      float s[4], mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        s[j] = (c0 + tx + 16 * j < M) ? row[tx + 16 * j] * scale : -INFINITY;
        mx = fmaxf(mx, s[j]);
      }
      const float mnew = fmaxf(m[i], group_max(mx)); /* finite: column c0 is a key */
      const float alpha = expf(m[i] - mnew);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const float p = expf(s[j] - mnew);
        row[tx + 16 * j] = p;
        sum += p;
      }
      l[i] = l[i] * alpha + group_sum(sum);
      m[i] = mnew;
#pragma unroll
      for (int c = 0; c < CP / 16; c++) Os[(4 * ty + i) * LV + tx + 16 * c] *= alpha;
    }
    __syncthreads();
    /* O += P V, tile by tile through the shared output rows */
    const int w = threadIdx.x >> 5;
    for (int t = w; t < 4 * CP / 16; t += WARPS) {
      const int rb = t / (CP / 16), cb = t % (CP / 16);
      frag_acc acc;
      float *o = Os + rb * 16 * LV + cb * 16;
      wmma::load_matrix_sync(acc, o, LV, wmma::mem_row_major);
      mma_rows<TILE, false>(acc, Ss + rb * 16 * SS, SS, Vs + cb * 16, LV);
      wmma::store_matrix_sync(o, acc, LV, wmma::mem_row_major);
    }
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t r = row0 + 4 * ty + i;
    if (r >= N) continue;
    const float inv = 1.f / l[i];
#pragma unroll
    for (int c = 0; c < CP / 16; c++)
      if (tx + 16 * c < Cv) out[(b * N + r) * Cv + tx + 16 * c] = Os[(4 * ty + i) * LV + tx + 16 * c] * inv;
    if (tx == 0) lse[b * N + r] = m[i] + logf(l[i]);
  }
#endif
}

/* dK and dV of one 64-key tile against every query tile. Score tiles are keys x queries. */
template <int DP, int CP>
__global__ void __launch_bounds__(THREADS, 2)
    tc_dkdv(float *dk, float *dv, const float *q, const float *k, const float *v, const float *dout,
            const float *lse, const float *delta, int64_t N, int64_t M, int D, int Cv, float scale) {
#if FV_NAM_TC
  extern __shared__ __align__(128) float smem[];
  constexpr int LQ = DP + 4, LV = CP + 4;
  float *Ks = smem;              /* (64, LQ) */
  float *Vs = Ks + TILE * LQ;    /* (64, LV) */
  float *Qs = Vs + TILE * LV;    /* (64, LQ) */
  float *dOs = Qs + TILE * LQ;   /* (64, LV) */
  float *Ps = dOs + TILE * LV;   /* (64, SS): S^T, then P^T */
  float *dSs = Ps + TILE * SS;   /* (64, SS): dP^T, then dS^T */
  float *Ls = dSs + TILE * SS;   /* (64): lse of the query tile, +inf past N */
  float *Dl = Ls + TILE;         /* (64): delta of the query tile */
  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
  const int64_t b = blockIdx.y, key0 = (int64_t)blockIdx.x * TILE;
  const float *qb = q + b * N * D, *ob = dout + b * N * Cv;
  load_tile<DP>(Ks, LQ, k + b * M * D, key0, M, D);
  load_tile<CP>(Vs, LV, v + b * M * Cv, key0, M, Cv);
  tiles<DP> dka;
  tiles<CP> dva;
  dka.zero();
  dva.zero();
  for (int64_t r0 = 0; r0 < N; r0 += TILE) {
    __syncthreads(); /* the last query tile is used up */
    load_tile<DP>(Qs, LQ, qb, r0, N, D);
    load_tile<CP>(dOs, LV, ob, r0, N, Cv);
    if (threadIdx.x < TILE) {
      const int64_t r = r0 + threadIdx.x;
      Ls[threadIdx.x] = r < N ? lse[b * N + r] : INFINITY;
      Dl[threadIdx.x] = r < N ? delta[b * N + r] : 0.f;
    }
    __syncthreads();
    scores<DP>(Ps, Ks, LQ, Qs, LQ);
    scores<CP>(dSs, Vs, LV, dOs, LV);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int e = (4 * ty + i) * SS + tx + 16 * j, qc = tx + 16 * j;
        const float p = expf(Ps[e] * scale - Ls[qc]);
        Ps[e] = p;
        dSs[e] = p * (dSs[e] - Dl[qc]) * scale;
      }
    __syncthreads();
    dva.add(Ps, dOs, LV);
    dka.add(dSs, Qs, LQ);
  }
  __syncthreads(); /* Qs and dOs are free: they take the results */
  dka.store(Qs, LQ);
  dva.store(dOs, LV);
  __syncthreads();
  add_tile(dk ? dk + b * M * D : NULL, Qs, LQ, DP, key0, M, D);
  add_tile(dv ? dv + b * M * Cv : NULL, dOs, LV, CP, key0, M, Cv);
#endif
}

/* dQ of one 64-query tile against every key tile. */
template <int DP, int CP>
__global__ void __launch_bounds__(THREADS, 2)
    tc_dq(float *dq, const float *q, const float *k, const float *v, const float *dout, const float *lse,
          const float *delta, int64_t N, int64_t M, int D, int Cv, float scale) {
#if FV_NAM_TC
  extern __shared__ __align__(128) float smem[];
  constexpr int LQ = DP + 4, LV = CP + 4;
  float *Qs = smem;              /* (64, LQ) */
  float *dOs = Qs + TILE * LQ;   /* (64, LV) */
  float *Ks = dOs + TILE * LV;   /* (64, LQ) */
  float *Vs = Ks + TILE * LQ;    /* (64, LV) */
  float *Ss = Vs + TILE * LV;    /* (64, SS): S, then dS */
  float *dPs = Ss + TILE * SS;   /* (64, SS): dP */
  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
  const int64_t b = blockIdx.y, row0 = (int64_t)blockIdx.x * TILE;
  const float *kb = k + b * M * D, *vb = v + b * M * Cv;
  load_tile<DP>(Qs, LQ, q + b * N * D, row0, N, D);
  load_tile<CP>(dOs, LV, dout + b * N * Cv, row0, N, Cv);
  float L[4], Dr[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t r = row0 + 4 * ty + i;
    L[i] = r < N ? lse[b * N + r] : INFINITY;
    Dr[i] = r < N ? delta[b * N + r] : 0.f;
  }
  tiles<DP> dqa;
  dqa.zero();
  for (int64_t c0 = 0; c0 < M; c0 += TILE) {
    __syncthreads(); /* the last key tile is used up */
    load_tile<DP>(Ks, LQ, kb, c0, M, D);
    load_tile<CP>(Vs, LV, vb, c0, M, Cv);
    __syncthreads();
    scores<DP>(Ss, Qs, LQ, Ks, LQ);
    scores<CP>(dPs, dOs, LV, Vs, LV);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int e = (4 * ty + i) * SS + tx + 16 * j;
        const float p = (c0 + tx + 16 * j < M) ? expf(Ss[e] * scale - L[i]) : 0.f;
        Ss[e] = p * (dPs[e] - Dr[i]) * scale;
      }
    __syncthreads();
    dqa.add(Ss, Ks, LQ);
  }
  __syncthreads(); /* Qs is free: it takes the result */
  dqa.store(Qs, LQ);
  __syncthreads();
  add_tile(dq ? dq + b * N * D : NULL, Qs, LQ, DP, row0, N, D);
#endif
}

/* Shared bytes of each kernel for DP, CP. */
constexpr size_t forward_smem(int DP, int CP) { return sizeof(float) * TILE * (2 * (DP + 4) + 2 * (CP + 4) + SS); }
constexpr size_t dkdv_smem(int DP, int CP) {
  return sizeof(float) * (TILE * (2 * (DP + 4) + 2 * (CP + 4) + 2 * SS) + 2 * TILE);
}
constexpr size_t dq_smem(int DP, int CP) { return sizeof(float) * TILE * (2 * (DP + 4) + 2 * (CP + 4) + 2 * SS); }

template <int DP, int CP> static int run(const fv_nn_call *c, int backward) {
  const fv_tensor *q = c->t[backward ? 4 : 2], *k = c->t[backward ? 5 : 3], *v = c->t[backward ? 6 : 4];
  const int64_t B = q->sizes[0], N = q->sizes[1], M = k->sizes[1];
  const int D = (int)q->sizes[2], Cv = (int)v->sizes[2];
  const float scale = (float)c->d[0];
  const dim3 rows_grid((unsigned)((N + TILE - 1) / TILE), (unsigned)B);
  if (!backward)
    return launch(tc_forward<DP, CP>, "nam_attention (TF32)", rows_grid, forward_smem(DP, CP),
                  fv_nn_ptr<float>(c, 0), fv_nn_ptr<float>(c, 1), fv_nn_ptr<float>(c, 2), fv_nn_ptr<float>(c, 3),
                  fv_nn_ptr<float>(c, 4), N, M, D, Cv, scale);
  float *dq = fv_nn_ptr<float>(c, 0), *dk = fv_nn_ptr<float>(c, 1), *dv = fv_nn_ptr<float>(c, 2);
  const float *dout = fv_nn_ptr<float>(c, 3), *qp = fv_nn_ptr<float>(c, 4), *kp = fv_nn_ptr<float>(c, 5),
              *vp = fv_nn_ptr<float>(c, 6), *out = fv_nn_ptr<float>(c, 7), *lse = fv_nn_ptr<float>(c, 8);
  float *delta; /* (B, N) */
  size_t delta_bytes;
  int status = backward_delta(&delta, &delta_bytes, dout, out, B * N, Cv);
  if (status != FV_OK) return status;
  if (dk || dv)
    status = launch(tc_dkdv<DP, CP>, "nam_attention backward (dk, dv; TF32)",
                    dim3((unsigned)((M + TILE - 1) / TILE), (unsigned)B), dkdv_smem(DP, CP), dk, dv, qp, kp, vp, dout,
                    lse, (const float *)delta, N, M, D, Cv, scale);
  if (status == FV_OK && dq)
    status = launch(tc_dq<DP, CP>, "nam_attention backward (dq; TF32)", rows_grid, dq_smem(DP, CP), dq, qp, kp, vp,
                    dout, lse, (const float *)delta, N, M, D, Cv, scale);
  fv_cuda_free(delta, delta_bytes);
  return status;
}

template <int DP> static int run_cp(const fv_nn_call *c, int backward, int cp) {
  switch (cp) {
  case 16:
  case 32: return run<DP, 32>(c, backward);
  case 64: return run<DP, 64>(c, backward);
  default: return run<DP, 128>(c, backward);
  }
}

} // namespace

/* Whether the GPU has TF32 tensor cores (compute capability 8.0 or later). */
int fv_cuda_nam_flash_tc_ready(void) {
  static int ready = -1;
  if (ready < 0) {
    int device = 0, major = 0;
    ready = cudaGetDevice(&device) == cudaSuccess &&
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major >= 8;
  }
  return ready;
}

/* nn_nam_flash.cu's TF32 branch: the call is float32, dp and cp its padded widths. */
int fv_cuda_nam_flash_tc(const fv_nn_call *c, int backward, int dp, int cp) {
  switch (dp) {
  case 16: return run_cp<16>(c, backward, cp);
  case 32: return run_cp<32>(c, backward, cp);
  case 64: return run_cp<64>(c, backward, cp);
  default: return run_cp<128>(c, backward, cp);
  }
}
