/* nn_nam_flash.cu: the fused NAM attention for float32 with TF32 off, as tiled
 * flash-attention kernels on CUDA cores (FlashAttention-2's schedule, exact float32: fmaf,
 * float32 sums; nn_nam.cu chooses it):
 *   forward   a block per (64 query rows, batch): the query tile stays in shared memory,
 *             64-key tiles of K and V stream through it; scores, the online row max and
 *             sum, and the output rows live in registers; P goes through shared memory to
 *             meet V. Writes out (B, N, Cv) and lse (B, N).
 *   backward  delta_i = dout_i . out_i (a thread per row), then two kernels that need no
 *             atomics (so gradients are the same on every run): a block per 64-key tile
 *             recomputes P and dP against every query tile and accumulates dK and dV in
 *             registers; a block per 64-query tile recomputes them against every key tile
 *             and accumulates dQ. Each adds (+=) into its gradient, which may be NULL.
 * Block: 256 threads as 16 x 16; thread (ty, tx) owns rows 4*ty .. 4*ty+3 of its tile and
 * columns tx, tx+16, ... (conflict-free shared-memory columns). D and Cv are padded to
 * the template's DP and CP (16, 32, 64, 128) with zeros in shared memory. Each kernel's
 * prologue (its batch and rows, the batch's operands, tile and lse/delta loads: nam_block)
 * and the host side (the launches and delta: run_kernels) are nam_tiles.cuh's, shared with
 * nn_nam_mma.cu.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_nam_flash.cu -o build/cuda/nn_nam_flash.o */
#include "nam_tiles.cuh"

namespace {
using namespace nam_tiles;

constexpr int PS = TILE + 1; /* row stride of the 64 x 64 score tiles in shared memory */

/* s[i][j] = a[4*ty + i] . b[tx + 16*j] over n (rows of a and b in shared memory). */
template <int n>
__device__ __forceinline__ void dots(float (&s)[4][4], const float *a, int lda, const float *b, int ldb) {
  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) s[i][j] = 0.f;
#pragma unroll 8
  for (int d = 0; d < n; d++) {
    float x[4], y[4];
#pragma unroll
    for (int i = 0; i < 4; i++) x[i] = a[(4 * ty + i) * lda + d];
#pragma unroll
    for (int j = 0; j < 4; j++) y[j] = b[(tx + 16 * j) * ldb + d];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) s[i][j] = fmaf(x[i], y[j], s[i][j]);
  }
}

/* The backward's two products for a pair of tiles: s = a . b over DP (Q and K rows, either
 * way round), dp = c . e over CP (dO and V rows); strides DP + 1 and CP + 1. */
template <int DP, int CP>
__device__ __forceinline__ void products(float (&s)[4][4], float (&dp)[4][4], const float *a, const float *b,
                                         const float *c, const float *e) {
  dots<DP>(s, a, DP + 1, b, DP + 1);
  dots<CP>(dp, c, CP + 1, e, CP + 1);
}

/* acc[i][c] += sum_k w[4*ty + i][k] * m[k][tx + 16*c] for k < 64: a 64 x 64 weight tile
 * (stride PS) times a 64 x W tile (stride ldm). */
template <int W>
__device__ __forceinline__ void accumulate(float (&acc)[4][W / 16], const float *w, const float *m, int ldm) {
  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
#pragma unroll 4
  for (int k = 0; k < TILE; k++) {
    float x[4], y[W / 16];
#pragma unroll
    for (int i = 0; i < 4; i++) x[i] = w[(4 * ty + i) * PS + k];
#pragma unroll
    for (int c = 0; c < W / 16; c++) y[c] = m[k * ldm + tx + 16 * c];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int c = 0; c < W / 16; c++) acc[i][c] = fmaf(x[i], y[c], acc[i][c]);
  }
}

/* g[(r0 + 4*ty + i) * cols + tx + 16*c] += acc[i][c] inside rows x cols; g may be NULL. */
template <int W>
__device__ __forceinline__ void add_rows(float *g, const float (&acc)[4][W / 16], int64_t r0, int64_t rows, int cols) {
  if (!g) return;
  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t r = r0 + 4 * ty + i;
    if (r >= rows) continue;
#pragma unroll
    for (int c = 0; c < W / 16; c++)
      if (tx + 16 * c < cols) g[r * cols + tx + 16 * c] += acc[i][c];
  }
}

template <int DP, int CP>
__global__ void __launch_bounds__(THREADS)
    flash_forward(float *out, float *lse, const float *q, const float *k, const float *v, int64_t N, int64_t M,
                  int D, int Cv, float scale) {
  extern __shared__ float smem[];
  float *Qs = smem;                  /* (64, DP + 1) */
  float *Ks = Qs + TILE * (DP + 1);  /* (64, DP + 1) */
  float *Vs = Ks + TILE * (DP + 1);  /* (64, CP) */
  float *Ps = Vs + TILE * CP;        /* (64, PS) */
  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
  const nam_block at(q, NULL, N, k, v, M, D, Cv); /* owns queries, streams keys */
  at.load_own<DP>(Qs, DP + 1);
  float o[4][CP / 16], m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int c = 0; c < CP / 16; c++) o[i][c] = 0.f;
  }
  for (int64_t c0 = 0; c0 < M; c0 += TILE) {
    __syncthreads(); /* the last tile's K, V and P are used up */
    at.load_streamed<DP, CP>(Ks, DP + 1, Vs, CP, c0);
    __syncthreads();
    float s[4][4];
    dots<DP>(s, Qs, DP + 1, Ks, DP + 1);
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        s[i][j] = (c0 + tx + 16 * j < M) ? s[i][j] * scale : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
      const float mnew = fmaxf(m[i], group_max(mx)); /* finite: column c0 is a key */
      const float alpha = expf(m[i] - mnew);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const float p = expf(s[i][j] - mnew);
        Ps[(4 * ty + i) * PS + tx + 16 * j] = p;
        sum += p;
      }
      l[i] = l[i] * alpha + group_sum(sum);
      m[i] = mnew;
#pragma unroll
      for (int c = 0; c < CP / 16; c++) o[i][c] *= alpha;
    }
    __syncthreads();
    accumulate<CP>(o, Ps, Vs, CP);
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t r = at.row0 + 4 * ty + i;
    if (r >= N) continue;
    const float inv = 1.f / l[i];
#pragma unroll
    for (int c = 0; c < CP / 16; c++)
      if (tx + 16 * c < Cv) out[(at.b * N + r) * Cv + tx + 16 * c] = o[i][c] * inv;
    if (tx == 0) lse[at.b * N + r] = m[i] + logf(l[i]);
  }
}

/* dK and dV of one 64-key tile against every query tile. Thread rows are keys here. */
template <int DP, int CP>
__global__ void __launch_bounds__(THREADS)
    flash_dkdv(float *dk, float *dv, const float *q, const float *k, const float *v, const float *dout,
               const float *lse, const float *delta, int64_t N, int64_t M, int D, int Cv, float scale) {
  extern __shared__ float smem[];
  float *Ks = smem;                   /* (64, DP + 1) */
  float *Vs = Ks + TILE * (DP + 1);   /* (64, CP + 1) */
  float *Qs = Vs + TILE * (CP + 1);   /* (64, DP + 1) */
  float *dOs = Qs + TILE * (DP + 1);  /* (64, CP + 1) */
  float *Ps = dOs + TILE * (CP + 1);  /* (64, PS): P transposed, keys x queries */
  float *dSs = Ps + TILE * PS;        /* (64, PS): dS transposed */
  float *Ls = dSs + TILE * PS;        /* (64): lse of the query tile, +inf past N */
  float *Dl = Ls + TILE;              /* (64): delta of the query tile */
  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
  const nam_block at(k, v, M, q, dout, N, D, Cv); /* owns keys, streams queries */
  at.load_own<DP, CP>(Ks, DP + 1, Vs, CP + 1);
  float dka[4][DP / 16], dva[4][CP / 16];
#pragma unroll
  for (int i = 0; i < 4; i++) {
#pragma unroll
    for (int c = 0; c < DP / 16; c++) dka[i][c] = 0.f;
#pragma unroll
    for (int c = 0; c < CP / 16; c++) dva[i][c] = 0.f;
  }
  for (int64_t r0 = 0; r0 < N; r0 += TILE) {
    __syncthreads(); /* the last query tile is used up */
    at.load_streamed<DP, CP>(Qs, DP + 1, dOs, CP + 1, r0);
    at.tile_stats(Ls, Dl, lse, delta, r0, N);
    __syncthreads();
    float s[4][4], dp[4][4];
    products<DP, CP>(s, dp, Ks, Qs, Vs, dOs);
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int qc = tx + 16 * j;
        const float p = expf(s[i][j] * scale - Ls[qc]);
        Ps[(4 * ty + i) * PS + qc] = p;
        dSs[(4 * ty + i) * PS + qc] = p * (dp[i][j] - Dl[qc]) * scale;
      }
    __syncthreads();
    accumulate<CP>(dva, Ps, dOs, CP + 1);
    accumulate<DP>(dka, dSs, Qs, DP + 1);
  }
  add_rows<DP>(at.grad(dk, M, D), dka, at.row0, M, D);
  add_rows<CP>(at.grad(dv, M, Cv), dva, at.row0, M, Cv);
}

/* dQ of one 64-query tile against every key tile. Thread rows are queries. */
template <int DP, int CP>
__global__ void __launch_bounds__(THREADS)
    flash_dq(float *dq, const float *q, const float *k, const float *v, const float *dout, const float *lse,
             const float *delta, int64_t N, int64_t M, int D, int Cv, float scale) {
  extern __shared__ float smem[];
  float *Qs = smem;                   /* (64, DP + 1) */
  float *dOs = Qs + TILE * (DP + 1);  /* (64, CP + 1) */
  float *Ks = dOs + TILE * (CP + 1);  /* (64, DP + 1) */
  float *Vs = Ks + TILE * (DP + 1);   /* (64, CP + 1) */
  float *dSs = Vs + TILE * (CP + 1);  /* (64, PS) */
  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
  const nam_block at(q, dout, N, k, v, M, D, Cv); /* owns queries, streams keys */
  at.load_own<DP, CP>(Qs, DP + 1, dOs, CP + 1);
  float L[4], Dr[4], dqa[4][DP / 16];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    at.row_stats(&L[i], &Dr[i], lse, delta, at.row0 + 4 * ty + i, N);
#pragma unroll
    for (int c = 0; c < DP / 16; c++) dqa[i][c] = 0.f;
  }
  for (int64_t c0 = 0; c0 < M; c0 += TILE) {
    __syncthreads(); /* the last key tile is used up */
    at.load_streamed<DP, CP>(Ks, DP + 1, Vs, CP + 1, c0);
    __syncthreads();
    float s[4][4], dp[4][4];
    products<DP, CP>(s, dp, Qs, Ks, dOs, Vs);
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const float p = (c0 + tx + 16 * j < M) ? expf(s[i][j] * scale - L[i]) : 0.f;
        dSs[(4 * ty + i) * PS + tx + 16 * j] = p * (dp[i][j] - Dr[i]) * scale;
      }
    __syncthreads();
    accumulate<DP>(dqa, dSs, Ks, DP + 1);
  }
  add_rows<DP>(at.grad(dq, N, D), dqa, at.row0, N, D);
}

/* Shared bytes of each kernel for DP, CP. */
constexpr size_t forward_smem(int DP, int CP) { return sizeof(float) * TILE * (2 * (DP + 1) + CP + PS); }
constexpr size_t dkdv_smem(int DP, int CP) {
  return sizeof(float) * (TILE * (2 * (DP + 1) + 2 * (CP + 1) + 2 * PS) + 2 * TILE);
}
constexpr size_t dq_smem(int DP, int CP) { return sizeof(float) * TILE * (2 * (DP + 1) + 2 * (CP + 1) + PS); }

template <int DP, int CP> static int run(const fv_nn_call *c, int backward) {
  const kernel_set ks = {flash_forward<DP, CP>, flash_dkdv<DP, CP>, flash_dq<DP, CP>, THREADS,
                         forward_smem(DP, CP), dkdv_smem(DP, CP), dq_smem(DP, CP),
                         "nam_attention", "nam_attention backward (dk, dv)", "nam_attention backward (dq)"};
  return run_kernels(c, backward, ks);
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

/* The exact tiled kernels (TF32 off): *taken = 0 when D or Cv is over 128 or B over 65535. */
int fv_cuda_nam_exact(const fv_nn_call *c, int backward, int *taken) {
  const fv_tensor *q = c->t[backward ? 4 : 2], *v = c->t[backward ? 6 : 4];
  const int dp = padded(q->sizes[2]), cp = padded(v->sizes[2]);
  *taken = dp && cp && q->sizes[0] <= 65535;
  if (!*taken) return FV_OK;
  switch (dp) {
  case 16: return run_cp<16>(c, backward, cp);
  case 32: return run_cp<32>(c, backward, cp);
  case 64: return run_cp<64>(c, backward, cp);
  default: return run_cp<128>(c, backward, cp);
  }
}
