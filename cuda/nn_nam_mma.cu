/* nn_nam_mma.cu: the fused NAM attention for float32 on tensor cores with warp-level
 * mma.sync, TF32 (m16n8k8; the default) or, under bf16 autocast, bfloat16 operands
 * (m16n8k16), float32 accumulation either way. FlashAttention-2's schedule with the
 * scores, the softmax state and the accumulators in registers: a block of 4 warps takes
 * 64 rows (queries, or keys in the dK/dV pass), each warp 16 of them; 64-row tiles of the
 * other side stream through shared memory (float32 rounded to TF32, or bfloat16). P (or
 * dS) stays in registers: the accumulator fragments of one product are the A fragments of
 * the next (warp_mma_p).
 *   forward   S = Q K^T, online max per row (quad shuffles) and sums per lane (added
 *             across the quad once, at the end), O = O alpha + P V;
 *             writes out (B, N, Cv) and lse (B, N). The exponentials are base 2
 *             (exp2_approx) on scores scaled by log2(e) too, in every kernel.
 *   backward  delta (nam_tiles.cuh); per 64-key block S^T = K Q^T, dP^T = V dO^T,
 *             P^T and dS^T = P^T (dP^T - delta) scale, dV += P^T dO, dK += dS^T Q; per
 *             64-query block S, dP, dS, dQ += dS K (dS kept without its factor scale,
 *             which multiplies dK and dQ once, at the end). No atomics: the same
 *             gradients on every run. Each adds (+=) into its gradient, which may be NULL.
 * Accumulator layout (both kinds), lane = 4 g + t: c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t),
 * c3 (g+8, 2t+1); the operand layouts are at warp_mma. TF32 operands are rounded with
 * cvt.rna once, as they enter shared memory (tile loads), and P or dS as they become A
 * fragments, not at each fragment load; bfloat16 ones to nearest even, likewise, the tiles
 * then holding bfloat16 (half the shared memory; fragments by ldmatrix, .trans for
 * operands down a column).
 * D and Cv are padded to DP (16, 32, 64) and CP (32, 64) with zeros; sm_80 and later
 * (the kernels compile empty for compute_75, which mma_ready refuses). nn_nam.cu
 * chooses it. Each kernel's prologue (nam_block) and the host side (run_kernels) are
 * nam_tiles.cuh's, shared with nn_nam_flash.cu.
 * spec/nam_mma_emulated_spec.lua runs these kernels on the CPU with their inline PTX
 * emulated: it knows each asm statement here by its first words, and stops at a new one.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_nam_mma.cu -o build/cuda/nn_nam_mma.o */
#include <cuda_bf16.h>

#include <type_traits>

#include "nam_tiles.cuh"

/* 1 where mma.sync with TF32 and bf16 exists: the host pass and devices from sm_80 on */
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define FV_NAM_MMA 1
#else
#define FV_NAM_MMA 0
#endif

namespace {
using namespace nam_tiles;

constexpr int BLOCK = 128; /* 4 warps: TILE rows */

/* Blocks per SM that the forward's registers must allow (__launch_bounds__): 5 (96
 * registers, 28 bytes spilled at DP 32, CP 64), so that with 132 SMs the 592 blocks of the
 * batch-4 NAM fit one wave instead of 1.12. On the H200, NAM alone at N = 9,409, batch 4
 * took 3.26 ms forward + backward (forward 0.92) against 3.36 (0.98) at 4 blocks (128
 * registers, no spill), and 3.90 (1.13) with the K/V tiles double-buffered by cp.async (3
 * blocks per SM, what its shared memory allowed; that code is gone).
 * The dK/dV kernel asks for 4 (128 registers, no spill at DP 32, CP 64, where it would take
 * 161 and allow 3). */
constexpr int FORWARD_BLOCKS = 5;

/* What a kernel's shared tiles hold: bfloat16 bits, or floats rounded to TF32; and their
 * row padding (elements), which keeps each warp's fragment loads free of bank conflicts:
 * rows of W + 4 floats for the TF32 loads (a lane's row g and column t: banks 4 g + t), of
 * W + 8 bfloat16 for ldmatrix (rows of a multiple of 16 bytes whose 8 rows per matrix start
 * in different 4-bank groups). */
template <bool BF16> using tile_elem = typename std::conditional<BF16, uint16_t, float>::type;
template <bool BF16> constexpr int tile_pad = BF16 ? 8 : 4;

#if FV_NAM_MMA
constexpr int WARP_ROWS = 16; /* rows per warp */

__device__ __forceinline__ uint32_t tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}

/* x rounded to TF32 (its low 13 mantissa bits zero), kept as a float: the TF32 kernels
 * round each operand once, when it enters shared memory, instead of at every fragment load. */
struct to_tf32 {
  __device__ __forceinline__ float operator()(float x) const { return __uint_as_float(tf32(x)); }
};

/* 2^x by the special function unit (ex2.approx.ftz: relative error about 2^-22, far
 * below TF32's and bfloat16's; 2^-inf = 0, results below 2^-126 flushed to 0), one
 * instruction where expf takes about eight: the softmax runs in base 2, on scores scaled
 * by scale * log2(e). */
__device__ __forceinline__ float exp2_approx(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;

__device__ __forceinline__ void mma8(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma16_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Two floats rounded to bfloat16 in one register, lo in the low half (the lower k). */
__device__ __forceinline__ uint32_t bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t *>(&v);
}

/* The bfloat16 kernels' tile conversion: load_tile's put4 stores pairs, rounded to nearest
 * even. */
struct to_bf16 {
  __device__ __forceinline__ uint32_t pair(float lo, float hi) const { return bf16x2(lo, hi); }
};

/* The conversion of a kernel's tiles as they load (tile_elem). */
template <bool BF16> using tile_conv = typename std::conditional<BF16, to_bf16, to_tf32>::type;

/* Four 8 x 8 matrices of bfloat16 from shared memory into a warp's registers (ldmatrix
 * .x4): lanes 8 m .. 8 m + 7 give the addresses of matrix m's rows (8 values, 16 bytes,
 * 16-byte aligned); lane 4 g + t gets in r[m] matrix m's row g, columns 2 t and 2 t + 1
 * (an A fragment's or a row-major B's pair), or with TRANS its rows 2 t and 2 t + 1 of
 * column g (a pair down a column); the first value in the low half. One instruction for
 * what took four 32-bit or eight 16-bit loads. */
template <bool TRANS> __device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const uint16_t *row) {
  const unsigned shared = (unsigned)__cvta_generic_to_shared(row);
  if (TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared));
}

/* acc[j] += A (16 x K: rows at a, stride lda) times B (K x 8 NT), B(k, n) = b[n * ldb + k]
 * (the rows of b are B's columns, as K for Q K^T), from a kernel's tiles. BF16: bfloat16
 * tiles, m16n8k16 (K a multiple of 16, NT even), the fragments by ldmatrix (A's four
 * registers in one, B's two for column tiles j and j + 1 in one); else TF32,
 * m16n8k8, on floats already rounded to TF32 (tile_conv). Fragments (PTX ISA) for lane 4 g
 * + t: TF32 A a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4), B b0 (t, g), b1 (t+4, g);
 * BF16 A a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..), B b0
 * (2t..2t+1, g), b1 (2t+8..2t+9, g). */
template <int K, int NT, bool BF16>
__device__ __forceinline__ void warp_mma(float (&acc)[NT][4], const tile_elem<BF16> *a, int lda,
                                         const tile_elem<BF16> *b, int ldb) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  if constexpr (BF16) {
    static_assert(NT % 2 == 0, "warp_mma: B fragments load two column tiles at a time");
    const int m = lane >> 3, row = lane & 7; /* the matrix and the row whose address this lane gives */
#pragma unroll 2
    for (int k0 = 0; k0 < K; k0 += 16) {
      uint32_t fa[4]; /* matrices: rows 0-7 and 8-15 at k0, then at k0 + 8 */
      ldmatrix_x4<false>(fa, a + (row + 8 * (m & 1)) * lda + k0 + 8 * (m >> 1));
#pragma unroll
      for (int j = 0; j < NT; j += 2) {
        uint32_t fb[4]; /* matrices: b rows 8 j .. 8 j + 7 at k0, k0 + 8, then rows 8 (j + 1) .. likewise */
        ldmatrix_x4<false>(fb, b + (8 * j + row + 8 * (m >> 1)) * ldb + k0 + 8 * (m & 1));
        mma16_bf16(acc[j], fa, fb[0], fb[1]);
        mma16_bf16(acc[j + 1], fa, fb[2], fb[3]);
      }
    }
  } else {
#pragma unroll 2
    for (int k0 = 0; k0 < K; k0 += 8) {
      const uint32_t fa[4] = { __float_as_uint(a[g * lda + k0 + t]), __float_as_uint(a[(g + 8) * lda + k0 + t]),
                               __float_as_uint(a[g * lda + k0 + t + 4]),
                               __float_as_uint(a[(g + 8) * lda + k0 + t + 4]) };
#pragma unroll
      for (int j = 0; j < NT; j++) {
        const float *bn = b + (8 * j + g) * ldb + k0 + t;
        mma8(acc[j], fa, __float_as_uint(bn[0]), __float_as_uint(bn[4]));
      }
    }
  }
}

template <int NT> __device__ __forceinline__ void zero(float (&acc)[NT][4]) {
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int q = 0; q < 4; q++) acc[j][q] = 0.f;
}

/* The backward's two products for warp w's 16 rows against a 64-row tile: s = a b^T over DP
 * (Q and K rows, either way round; stride DP + tile_pad), dp = c e^T over CP (dO and V rows;
 * stride CP + tile_pad); a and c are the block's tiles, the warp's rows taken from them. */
template <int DP, int CP, bool BF16>
__device__ __forceinline__ void products(float (&s)[8][4], float (&dp)[8][4], const tile_elem<BF16> *a,
                                         const tile_elem<BF16> *b, const tile_elem<BF16> *c,
                                         const tile_elem<BF16> *e, int w) {
  constexpr int LQ = DP + tile_pad<BF16>, LV = CP + tile_pad<BF16>;
  zero(s);
  zero(dp);
  warp_mma<DP, 8, BF16>(s, a + w * WARP_ROWS * LQ, LQ, b, LQ);
  warp_mma<CP, 8, BF16>(dp, c + w * WARP_ROWS * LV, LV, e, LV);
}

/* acc[n] += P (16 x 64: the accumulators p of a product against a 64-row tile, P(g + 8 (e
 * >> 1), 8 j + 2 t + (e & 1)) = p[j][e]) times B (64 x 8 NT), B(k, n) = b[k * ldb + n]: P
 * goes from registers straight into A fragments. BF16: the accumulators of column tiles 2i
 * and 2i+1 are m16n8k16's A fragment for k = 16i .. 16i+15 as they are (a0 = p[2i][0..1],
 * a1 = p[2i][2..3], a2 = p[2i+1][0..1], a3 = p[2i+1][2..3]); B's pairs lie down a column
 * of b: ldmatrix .trans, column tiles j and j + 1 in one (NT even). TF32: a lane holds columns 2t
 * and 2t+1 of tile j where m16n8k8 wants t and t+4, so the sum over the tile's 8 k runs in
 * another order: fragment index kappa stands for column 2 kappa (kappa < 4) or 2 (kappa - 4)
 * + 1, A's a0, a1, a2, a3 are p[j][0], p[j][2], p[j][1], p[j][3], and B's b0, b1 rows 8 j +
 * 2 t and 8 j + 2 t + 1 (with P rounded to TF32 here). */
template <int NT, bool BF16>
__device__ __forceinline__ void warp_mma_p(float (&acc)[NT][4], const float (&p)[8][4], const tile_elem<BF16> *b,
                                           int ldb) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  if constexpr (BF16) {
    static_assert(NT % 2 == 0, "warp_mma_p: B fragments load two column tiles at a time");
    const int m = lane >> 3, row = lane & 7; /* the matrix and the row whose address this lane gives */
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const uint32_t fa[4] = { bf16x2(p[2 * i][0], p[2 * i][1]), bf16x2(p[2 * i][2], p[2 * i][3]),
                               bf16x2(p[2 * i + 1][0], p[2 * i + 1][1]), bf16x2(p[2 * i + 1][2], p[2 * i + 1][3]) };
#pragma unroll
      for (int j = 0; j < NT; j += 2) {
        uint32_t fb[4]; /* matrices: rows 16 i .. 16 i + 7 and + 8 .. + 15 at column 8 j, then at 8 (j + 1) */
        ldmatrix_x4<true>(fb, b + (16 * i + row + 8 * (m & 1)) * ldb + 8 * j + 8 * (m >> 1));
        mma16_bf16(acc[j], fa, fb[0], fb[1]);
        mma16_bf16(acc[j + 1], fa, fb[2], fb[3]);
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < 8; i++) {
      const uint32_t fa[4] = { tf32(p[i][0]), tf32(p[i][2]), tf32(p[i][1]), tf32(p[i][3]) };
      const float *r = b + (8 * i + 2 * t) * ldb; /* rows 8 i + 2 t, +1 */
#pragma unroll
      for (int j = 0; j < NT; j++) {
        const int n = 8 * j + g;
        mma8(acc[j], fa, __float_as_uint(r[n]), __float_as_uint(r[ldb + n]));
      }
    }
  }
}

/* gp[(r0 + row) * cols + col] += f acc over the warp's 16 rows at r0, inside rows x cols; gp may be NULL. */
template <int NT>
__device__ __forceinline__ void warp_add(float *gp, const float (&acc)[NT][4], int64_t r0, int64_t rows, int cols,
                                         float f = 1.f) {
  if (!gp) return;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const int64_t r = r0 + g + 8 * (q >> 1);
      const int col = 8 * j + 2 * t + (q & 1);
      if (r < rows && col < cols) gp[r * cols + col] += f * acc[j][q];
    }
}

/* Max and sum over the 4 lanes of a quad (the lanes holding one row of a C fragment). */
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
#endif

template <int DP, int CP, bool BF16>
__global__ void __launch_bounds__(BLOCK, FORWARD_BLOCKS)
    mma_forward(float *out, float *lse, const float *q, const float *k, const float *v, int64_t N, int64_t M, int D,
                int Cv, float scale) {
#if FV_NAM_MMA
  extern __shared__ __align__(16) float smem[];
  using E = tile_elem<BF16>;
  constexpr int LQ = DP + tile_pad<BF16>, LV = CP + tile_pad<BF16>;
  E *Qs = reinterpret_cast<E *>(smem); /* (64, LQ) */
  E *Ks = Qs + TILE * LQ;              /* (64, LQ) */
  E *Vs = Ks + TILE * LQ;              /* (64, LV) */
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const nam_block at(q, NULL, N, k, v, M, D, Cv); /* owns queries, streams keys */
  at.load_own<DP, BLOCK, true>(Qs, LQ, tile_conv<BF16>());
  const float scale2 = scale * LOG2E; /* scores in base 2: m and the exponents too */
  float o[CP / 8][4], m[2] = { -INFINITY, -INFINITY }, l[2] = { 0.f, 0.f };
  zero(o);
  for (int64_t c0 = 0; c0 < M; c0 += TILE) {
    __syncthreads(); /* the last key tile is used up */
    at.load_streamed<DP, CP, BLOCK, true>(Ks, LQ, Vs, LV, c0, tile_conv<BF16>());
    __syncthreads();
    float s[8][4];
    zero(s);
    warp_mma<DP, 8, BF16>(s, Qs + w * WARP_ROWS * LQ, LQ, Ks, LQ);
    const int keys = M - c0 < TILE ? (int)(M - c0) : TILE; /* of this tile: 32-bit tests below */
    float mx[2] = { -INFINITY, -INFINITY };
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        s[j][e] = 8 * j + 2 * t + (e & 1) < keys ? s[j][e] * scale2 : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[j][e]);
      }
    float alpha[2], sum[2] = { 0.f, 0.f };
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const float mnew = fmaxf(m[h], quad_max(mx[h])); /* finite: column c0 is a key */
      alpha[h] = exp2_approx(m[h] - mnew);
      m[h] = mnew;
    }
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        s[j][e] = exp2_approx(s[j][e] - m[e >> 1]);
        sum[e >> 1] += s[j][e];
      }
#pragma unroll
    for (int h = 0; h < 2; h++) l[h] = l[h] * alpha[h] + sum[h]; /* this lane's columns; m is the quad's */
#pragma unroll
    for (int j = 0; j < CP / 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) o[j][e] *= alpha[e >> 1];
    warp_mma_p<CP / 8, BF16>(o, s, Vs, LV);
  }
#pragma unroll
  for (int h = 0; h < 2; h++) l[h] = quad_sum(l[h]); /* the row's sum, once (every lane: shuffles) */
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int64_t r = at.row0 + w * WARP_ROWS + g + 8 * h;
    if (r >= N) continue;
    const float inv = 1.f / l[h];
#pragma unroll
    for (int j = 0; j < CP / 8; j++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        const int col = 8 * j + 2 * t + e;
        if (col < Cv) out[(at.b * N + r) * Cv + col] = o[j][2 * h + e] * inv;
      }
    if (t == 0) lse[at.b * N + r] = m[h] * LN2 + logf(l[h]); /* natural log, as the CPU's */
  }
#endif
}

/* dK and dV of one 64-key block against every query tile; warp rows are keys. */
template <int DP, int CP, bool BF16>
__global__ void __launch_bounds__(BLOCK, 4)
    mma_dkdv(float *dk, float *dv, const float *q, const float *k, const float *v, const float *dout,
             const float *lse, const float *delta, int64_t N, int64_t M, int D, int Cv, float scale) {
#if FV_NAM_MMA
  extern __shared__ __align__(16) float smem[];
  using E = tile_elem<BF16>;
  constexpr int LQ = DP + tile_pad<BF16>, LV = CP + tile_pad<BF16>;
  float *Ls = smem;                         /* (64): lse log2 e of the query tile, +inf past N */
  float *Dl = Ls + TILE;                    /* (64): delta of the query tile */
  E *Ks = reinterpret_cast<E *>(Dl + TILE); /* (64, LQ) */
  E *Vs = Ks + TILE * LQ;                   /* (64, LV) */
  E *Qs = Vs + TILE * LV;                   /* (64, LQ) */
  E *dOs = Qs + TILE * LQ;                  /* (64, LV) */
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, t = lane & 3;
  const nam_block at(k, v, M, q, dout, N, D, Cv); /* owns keys, streams queries */
  at.load_own<DP, CP, BLOCK, true>(Ks, LQ, Vs, LV, tile_conv<BF16>());
  const float scale2 = scale * LOG2E; /* P = 2^(S scale log2 e - lse log2 e) */
  float dka[DP / 8][4], dva[CP / 8][4];
  zero(dka);
  zero(dva);
  for (int64_t r0 = 0; r0 < N; r0 += TILE) {
    __syncthreads(); /* the last query tile is used up */
    at.load_streamed<DP, CP, BLOCK, true>(Qs, LQ, dOs, LV, r0, tile_conv<BF16>());
    at.tile_stats(Ls, Dl, lse, delta, r0, N, LOG2E); /* Ls in base 2 */
    __syncthreads();
    float st[8][4], dpt[8][4]; /* (16 keys, 64 queries): S^T and dP^T */
    products<DP, CP, BF16>(st, dpt, Ks, Qs, Vs, dOs, w);
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int qc = 8 * j + 2 * t + (e & 1);
        const float p = exp2_approx(st[j][e] * scale2 - Ls[qc]);
        st[j][e] = p;
        dpt[j][e] = p * (dpt[j][e] - Dl[qc]); /* dS^T / scale: scale goes onto dK at the end */
      }
    warp_mma_p<CP / 8, BF16>(dva, st, dOs, LV);  /* dV += P^T dO */
    warp_mma_p<DP / 8, BF16>(dka, dpt, Qs, LQ); /* dK += dS^T Q */
  }
  warp_add(at.grad(dk, M, D), dka, at.row0 + w * WARP_ROWS, M, D, scale);
  warp_add(at.grad(dv, M, Cv), dva, at.row0 + w * WARP_ROWS, M, Cv);
#endif
}

/* dQ of one 64-query block against every key tile; warp rows are queries. */
template <int DP, int CP, bool BF16>
__global__ void __launch_bounds__(BLOCK)
    mma_dq(float *dq, const float *q, const float *k, const float *v, const float *dout, const float *lse,
           const float *delta, int64_t N, int64_t M, int D, int Cv, float scale) {
#if FV_NAM_MMA
  extern __shared__ __align__(16) float smem[];
  using E = tile_elem<BF16>;
  constexpr int LQ = DP + tile_pad<BF16>, LV = CP + tile_pad<BF16>;
  E *Qs = reinterpret_cast<E *>(smem); /* (64, LQ) */
  E *dOs = Qs + TILE * LQ;             /* (64, LV) */
  E *Ks = dOs + TILE * LV;             /* (64, LQ) */
  E *Vs = Ks + TILE * LQ;              /* (64, LV) */
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const nam_block at(q, dout, N, k, v, M, D, Cv); /* owns queries, streams keys */
  at.load_own<DP, CP, BLOCK, true>(Qs, LQ, dOs, LV, tile_conv<BF16>());
  float L[2], Dr[2];
#pragma unroll
  for (int h = 0; h < 2; h++) {
    at.row_stats(&L[h], &Dr[h], lse, delta, at.row0 + w * WARP_ROWS + g + 8 * h, N, LOG2E); /* in base 2 */
  }
  const float scale2 = scale * LOG2E;
  float dqa[DP / 8][4];
  zero(dqa);
  for (int64_t c0 = 0; c0 < M; c0 += TILE) {
    __syncthreads(); /* the last key tile is used up */
    at.load_streamed<DP, CP, BLOCK, true>(Ks, LQ, Vs, LV, c0, tile_conv<BF16>());
    __syncthreads();
    float s[8][4], dp[8][4];
    products<DP, CP, BF16>(s, dp, Qs, Ks, dOs, Vs, w);
    const int keys = M - c0 < TILE ? (int)(M - c0) : TILE; /* of this tile: 32-bit tests below */
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int h = e >> 1;
        const float p = 8 * j + 2 * t + (e & 1) < keys ? exp2_approx(s[j][e] * scale2 - L[h]) : 0.f;
        s[j][e] = p * (dp[j][e] - Dr[h]); /* dS / scale: scale goes onto dQ at the end */
      }
    warp_mma_p<DP / 8, BF16>(dqa, s, Ks, LQ); /* dQ += dS K */
  }
  warp_add(at.grad(dq, N, D), dqa, at.row0 + w * WARP_ROWS, N, D, scale);
#endif
}

/* Shared bytes of each kernel for DP, CP: its tiles of TILE rows, DP or CP wide and padded. */
template <bool BF16> constexpr size_t tile_bytes(int width) {
  return sizeof(tile_elem<BF16>) * TILE * (width + tile_pad<BF16>);
}
template <bool BF16> constexpr size_t forward_smem(int DP, int CP) { /* Q, K, V */
  return 2 * tile_bytes<BF16>(DP) + tile_bytes<BF16>(CP);
}
template <bool BF16> constexpr size_t dkdv_smem(int DP, int CP) { /* lse and delta, then K, V, Q, dO */
  return sizeof(float) * 2 * TILE + 2 * tile_bytes<BF16>(DP) + 2 * tile_bytes<BF16>(CP);
}
template <bool BF16> constexpr size_t dq_smem(int DP, int CP) { /* Q, dO, K, V */
  return 2 * tile_bytes<BF16>(DP) + 2 * tile_bytes<BF16>(CP);
}

template <int DP, int CP, bool BF16> int run(const fv_nn_call *c, int backward) {
  const kernel_set ks = {mma_forward<DP, CP, BF16>, mma_dkdv<DP, CP, BF16>, mma_dq<DP, CP, BF16>, BLOCK,
                         forward_smem<BF16>(DP, CP), dkdv_smem<BF16>(DP, CP), dq_smem<BF16>(DP, CP),
                         BF16 ? "nam_attention (bf16 mma)" : "nam_attention (TF32 mma)",
                         "nam_attention backward (dk, dv; mma)", "nam_attention backward (dq; mma)"};
  return run_kernels(c, backward, ks);
}

template <int DP, bool BF16> int run_cp(const fv_nn_call *c, int backward, int cp) {
  return cp <= 32 ? run<DP, 32, BF16>(c, backward) : run<DP, 64, BF16>(c, backward);
}

template <bool BF16> int run_dp(const fv_nn_call *c, int backward, int dp, int cp) {
  switch (dp) {
  case 16: return run_cp<16, BF16>(c, backward, cp);
  case 32: return run_cp<32, BF16>(c, backward, cp);
  default: return run_cp<64, BF16>(c, backward, cp);
  }
}

} // namespace

/* Whether the kernels this GPU runs hold their mma.sync code: built from sm_80 or later
 * PTX. A compute capability of 8 or more is not enough: a GPU with no cubin of its own in
 * the build runs the driver's compilation of the newest PTX it can take, and in a build
 * whose CUDA_ARCH has only compute_75 PTX (the Makefile's default adds compute_80) the
 * kernels there are empty. */
static int mma_ready(void) {
  static int ready = -1;
  if (ready < 0) {
    cudaFuncAttributes attr;
    const cudaError_t e = cudaFuncGetAttributes(&attr, mma_forward<16, 32, false>);
    if (e != cudaSuccess) cudaGetLastError(); /* not a later launch's error */
    ready = e == cudaSuccess && attr.ptxVersion >= 80;
  }
  return ready;
}

/* The fused kernels, TF32 or (bf16) bfloat16 operands: *taken = 0 when D or Cv is over 64
 * or not a multiple of 4, an operand not 16-byte aligned,
 * B over 65535, or the GPU runs them without mma code (mma_ready; nn_nam.cu then chooses
 * another). */
int fv_cuda_nam_mma(const fv_nn_call *c, int backward, int bf16, int *taken) {
  const fv_tensor *q = c->t[backward ? 4 : 2], *v = c->t[backward ? 6 : 4];
  const int dp = padded(q->sizes[2]), cp = padded(v->sizes[2]);
  /* the tiles load in 16-byte pieces: rows of multiples of 4 floats, 16-byte aligned */
  uintptr_t operands = 0; /* the addresses the tiles read, or-ed */
  for (int k = backward ? 3 : 2; k <= (backward ? 6 : 4); k++) operands |= (uintptr_t)fv_nn_ptr<float>(c, k);
  *taken = dp && cp && dp <= 64 && cp <= 64 && q->sizes[2] % 4 == 0 && v->sizes[2] % 4 == 0 &&
           operands % 16 == 0 && q->sizes[0] <= 65535 && mma_ready();
  if (!*taken) return FV_OK;
  return bf16 ? run_dp<true>(c, backward, dp, cp) : run_dp<false>(c, backward, dp, cp);
}
