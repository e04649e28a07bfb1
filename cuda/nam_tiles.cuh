/* nam_tiles.cuh: what the float32 NAM kernels share (cuda/nn_nam_flash.cu exact on CUDA
 * cores, cuda/nn_nam_mma.cu and cuda/nn_nam_gemm.cu on TF32 tensor cores): the tile shape
 * (64 query rows by 64 keys; nn_nam_flash.cu's 256 threads as 16 x 16, thread (ty, tx)
 * owning rows 4*ty .. 4*ty+3 and columns tx, tx+16, ...), zero-padded tile loads,
 * reductions over a row's 16 threads, the padded widths, the launch with dynamic shared
 * memory, and the backward's delta_i = dout_i . out_i; for the fused kernels of
 * nn_nam_flash.cu and nn_nam_mma.cu also their prologue (nam_block: the block's batch and
 * rows, the batch's operands, the tile and lse/delta loads) and their host side
 * (run_kernels: a kernel_set's forward, or the backward's delta, dK/dV and dQ launches).
 * Included by those files only. */
#ifndef FOVEA_CUDA_NAM_TILES_CUH
#define FOVEA_CUDA_NAM_TILES_CUH

#include "nn_common.cuh"

namespace nam_tiles {

constexpr int TILE = 64;     /* query rows and key columns per tile */
constexpr int THREADS = 256; /* 16 x 16 */

/* The values of a tile as they are: the default conversion of load_tile. */
struct as_is {
  __device__ __forceinline__ float operator()(float x) const { return x; }
};

/* conv's values of the four floats x at dst[0..3]: one 16-byte store into a float tile; one
 * 8-byte store of two pairs (conv.pair: two values in a register, the first in the low
 * half) into a tile of 16-bit values (nn_nam_mma.cu's bfloat16 tiles). */
template <typename Conv> __device__ __forceinline__ void put4(float *dst, float4 x, Conv conv) {
  *reinterpret_cast<float4 *>(dst) = make_float4(conv(x.x), conv(x.y), conv(x.z), conv(x.w));
}
template <typename Conv> __device__ __forceinline__ void put4(uint16_t *dst, float4 x, Conv conv) {
  *reinterpret_cast<uint2 *>(dst) = make_uint2(conv.pair(x.x, x.y), conv.pair(x.z, x.w));
}

/* dst[r][c] (row stride ld) = conv(src[(r0 + r) * cols + c]) for r < 64, c < W; zero
 * outside rows x cols. T: float, or uint16_t for a conv that gives 16-bit values (VEC
 * only). Blocks of NT threads. VEC: in pieces of 4 columns (a float4 load, put4's store),
 * for callers that guarantee W, cols and ld multiples of 4 and src and dst aligned to a
 * piece (one path only: both in one kernel cost the mma kernels registers and spills);
 * else a float at a time. */
template <int W, int NT = THREADS, bool VEC = false, typename Conv = as_is, typename T>
__device__ __forceinline__ void load_tile(T *dst, int ld, const float *src, int64_t r0, int64_t rows, int cols,
                                          Conv conv = Conv()) {
  if constexpr (VEC) {
    static_assert(W % 4 == 0, "load_tile: 16-byte pieces need W a multiple of 4");
    constexpr int W4 = W / 4; /* pieces per row */
    for (int e = threadIdx.x; e < TILE * W4; e += NT) {
      const int r = e / W4, c = 4 * (e % W4);
      const int64_t gr = r0 + r;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f); /* cols % 4 == 0: a piece is wholly in or out */
      if (gr < rows && c < cols) x = *reinterpret_cast<const float4 *>(src + gr * cols + c);
      put4(dst + r * ld + c, x, conv);
    }
  } else {
    static_assert(sizeof(T) == sizeof(float), "load_tile: 16-bit tiles load in pieces (VEC)");
    for (int e = threadIdx.x; e < TILE * W; e += NT) {
      const int r = e / W, c = e % W;
      const int64_t gr = r0 + r;
      dst[r * ld + c] = (gr < rows && c < cols) ? conv(src[gr * cols + c]) : 0.f;
    }
  }
}

/* Sum and max over the 16 threads of a row group (lanes 0-15 or 16-31 of a warp). */
__device__ __forceinline__ float group_sum(float v) {
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float group_max(float v) {
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* The prologue of every fused kernel (nn_nam_flash.cu, nn_nam_mma.cu). Each side of the
 * attention is rows of two operands, one D wide and one Cv wide: the queries (q and dout,
 * N rows) and the keys (k and v, M rows). A block owns 64 rows of one side (the queries in
 * the forward and dQ passes, the keys in the dK/dV pass) and streams the other side's rows
 * through shared memory in 64-row tiles; the grid is (ceil(own rows / 64), B). */
struct nam_block {
  int64_t b, row0; /* the batch (blockIdx.y) and the first own row (64 blockIdx.x) */
  int D, Cv;
  const float *own_d, *own_c; /* the own side's operands, every batch's rows (own_c NULL in the forward) */
  int64_t own_rows;
  const float *str_d, *str_c; /* the streamed side's, batch b's rows */
  int64_t str_rows;

  __device__ __forceinline__ nam_block(const float *own_d_, const float *own_c_, int64_t own_rows_,
                                       const float *str_d_, const float *str_c_, int64_t str_rows_, int D_, int Cv_)
      : b(blockIdx.y), row0((int64_t)blockIdx.x * TILE), D(D_), Cv(Cv_), own_d(own_d_), own_c(own_c_),
        own_rows(own_rows_), str_d(str_d_ + b * str_rows_ * D_), str_c(str_c_ + b * str_rows_ * Cv_),
        str_rows(str_rows_) {}

  /* The block's own rows of the D-wide operand into A (WA wide, row stride lda), each
   * value through conv (load_tile, VEC as there); zero past the side's rows. */
  template <int WA, int NT = THREADS, bool VEC = false, typename Conv = as_is, typename T>
  __device__ __forceinline__ void load_own(T *A, int lda, Conv conv = Conv()) const {
    load_tile<WA, NT, VEC>(A, lda, own_d + b * own_rows * D, row0, own_rows, D, conv);
  }
  /* The same, then those rows of the Cv-wide operand into C (WC wide, stride ldc). */
  template <int WA, int WC, int NT = THREADS, bool VEC = false, typename Conv = as_is, typename T>
  __device__ __forceinline__ void load_own(T *A, int lda, T *C, int ldc, Conv conv = Conv()) const {
    load_own<WA, NT, VEC>(A, lda, conv);
    load_tile<WC, NT, VEC>(C, ldc, own_c + b * own_rows * Cv, row0, own_rows, Cv, conv);
  }
  /* Streamed rows r0 .. r0+63 of both operands into A and C, as load_own. */
  template <int WA, int WC, int NT = THREADS, bool VEC = false, typename Conv = as_is, typename T>
  __device__ __forceinline__ void load_streamed(T *A, int lda, T *C, int ldc, int64_t r0,
                                                Conv conv = Conv()) const {
    load_tile<WA, NT, VEC>(A, lda, str_d, r0, str_rows, D, conv);
    load_tile<WC, NT, VEC>(C, ldc, str_c, r0, str_rows, Cv, conv);
  }

  /* *L, *Dr = lse (times lse_factor: the mma kernels' base 2) and delta of query row r of
   * the batch; +inf and 0 past N (p is then 0). */
  __device__ __forceinline__ void row_stats(float *L, float *Dr, const float *lse, const float *delta, int64_t r,
                                            int64_t N, float lse_factor = 1.f) const {
    *L = r < N ? lse[b * N + r] * lse_factor : INFINITY;
    *Dr = r < N ? delta[b * N + r] : 0.f;
  }
  /* The dK/dV pass: Ls[i], Dl[i] = row_stats of query row r0 + i, for i < 64 (threads 0-63). */
  __device__ __forceinline__ void tile_stats(float *Ls, float *Dl, const float *lse, const float *delta, int64_t r0,
                                             int64_t N, float lse_factor = 1.f) const {
    if (threadIdx.x < TILE) {
      const int64_t r = r0 + threadIdx.x;
      row_stats(Ls + threadIdx.x, Dl + threadIdx.x, lse, delta, r, N, lse_factor);
    }
  }

  /* The batch's part of a gradient with rows x cols per batch, or NULL for none. */
  __device__ __forceinline__ float *grad(float *g, int64_t rows, int cols) const {
    return g ? g + b * rows * cols : NULL;
  }
};

/* The padded width for n: 16, 32, 64 or 128; 0 over 128. */
static inline int padded(int64_t n) { return n <= 16 ? 16 : n <= 32 ? 32 : n <= 64 ? 64 : n <= 128 ? 128 : 0; }

/* Launches kernel on stream with threads threads and smem dynamic shared bytes (opting in
 * above 48 KiB). */
template <typename K, typename... A>
static int launch_on(cudaStream_t stream, K kernel, const char *op, dim3 grid, unsigned threads, size_t smem,
                     A... args) {
  FV_CUDA_TRY(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  kernel<<<grid, threads, smem, stream>>>(args...);
  FV_CUDA_LAUNCHED(op);
  return FV_OK;
}

/* launch_on the compute stream. */
template <typename K, typename... A>
static int launch_with(K kernel, const char *op, dim3 grid, unsigned threads, size_t smem, A... args) {
  return launch_on(fv_cuda_stream, kernel, op, grid, threads, smem, args...);
}

/* delta[r] = dout[r] . out[r] over Cv, for the B * N rows */
static __global__ void delta_rows(float *delta, const float *dout, const float *out, int64_t rows, int Cv) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows; r += (int64_t)gridDim.x * blockDim.x) {
    float s = 0.f;
    for (int c = 0; c < Cv; c++) s = fmaf(dout[r * Cv + c], out[r * Cv + c], s);
    delta[r] = s;
  }
}

/* The backward's rows of delta (B * N floats from the caching allocator, freed by the
 * caller with fv_cuda_free(*delta, *bytes) after FV_OK); FV_OK or an error status. */
static int backward_delta(float **delta, size_t *bytes, const float *dout, const float *out, int64_t rows, int Cv) {
  *bytes = sizeof(float) * (size_t)rows;
  *delta = (float *)fv_cuda_alloc(*bytes);
  if (!*delta) return fv_last_status() ? fv_last_status() : fv_fail(FV_ERR_MEMORY, "nam_attention backward: no memory");
  delta_rows<<<(unsigned)((rows + 255) / 256), 256, 0, fv_cuda_stream>>>(*delta, dout, out, rows, Cv);
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return FV_OK;
  fv_cuda_free(*delta, *bytes);
  *delta = NULL;
  return fv_fail(FV_ERR_DEVICE, "nam_attention backward (delta): %s", cudaGetErrorString(e));
}

/* The kernels of one fused implementation (nn_nam_flash.cu, nn_nam_mma.cu) for one pair of
 * padded widths: their block size, dynamic shared bytes and names in errors. */
typedef void (*forward_kernel)(float *out, float *lse, const float *q, const float *k, const float *v, int64_t N,
                               int64_t M, int D, int Cv, float scale);
typedef void (*dkdv_kernel)(float *dk, float *dv, const float *q, const float *k, const float *v, const float *dout,
                            const float *lse, const float *delta, int64_t N, int64_t M, int D, int Cv, float scale);
typedef void (*dq_kernel)(float *dq, const float *q, const float *k, const float *v, const float *dout,
                          const float *lse, const float *delta, int64_t N, int64_t M, int D, int Cv, float scale);
struct kernel_set {
  forward_kernel forward;
  dkdv_kernel dkdv;
  dq_kernel dq;
  unsigned threads;
  size_t forward_smem, dkdv_smem, dq_smem;
  const char *forward_op, *dkdv_op, *dq_op;
};

/* Runs the call on ks. Forward (slots out, lse, q, k, v): a block per 64 query rows.
 * Backward (slots dq, dk, dv, dout, q, k, v, out, lse): delta (backward_delta), then dK and
 * dV when either is wanted (a block per 64 keys) and dQ when wanted (a block per 64 query
 * rows); with both, dQ runs on the side stream (side_stream.cu) beside dK and dV, which
 * only read what both share, so that one's last wave of blocks overlaps the other's; delta
 * is freed after, whatever failed. */
static inline int run_kernels(const fv_nn_call *c, int backward, const kernel_set &ks) {
  const fv_tensor *q = c->t[backward ? 4 : 2], *k = c->t[backward ? 5 : 3], *v = c->t[backward ? 6 : 4];
  const int64_t B = q->sizes[0], N = q->sizes[1], M = k->sizes[1];
  const int D = (int)q->sizes[2], Cv = (int)v->sizes[2];
  const float scale = (float)c->d[0];
  const dim3 rows_grid((unsigned)((N + TILE - 1) / TILE), (unsigned)B);
  if (!backward)
    return launch_with(ks.forward, ks.forward_op, rows_grid, ks.threads, ks.forward_smem, fv_nn_ptr<float>(c, 0),
                       fv_nn_ptr<float>(c, 1), (const float *)fv_nn_ptr<float>(c, 2),
                       (const float *)fv_nn_ptr<float>(c, 3), (const float *)fv_nn_ptr<float>(c, 4), N, M, D, Cv,
                       scale);
  float *dq = fv_nn_ptr<float>(c, 0), *dk = fv_nn_ptr<float>(c, 1), *dv = fv_nn_ptr<float>(c, 2);
  const float *dout = fv_nn_ptr<float>(c, 3), *qp = fv_nn_ptr<float>(c, 4), *kp = fv_nn_ptr<float>(c, 5),
              *vp = fv_nn_ptr<float>(c, 6), *out = fv_nn_ptr<float>(c, 7), *lse = fv_nn_ptr<float>(c, 8);
  float *delta; /* (B, N) */
  size_t delta_bytes;
  FV_TRY(backward_delta(&delta, &delta_bytes, dout, out, B * N, Cv));
  cudaStream_t dq_stream = fv_cuda_stream;
  int status = (dk || dv) && dq ? fv_cuda_fork(ks.dq_op, &dq_stream) : FV_OK;
  const int forked = status == FV_OK && dq_stream != fv_cuda_stream;
  if (status == FV_OK && dq)
    status = launch_on(dq_stream, ks.dq, ks.dq_op, rows_grid, ks.threads, ks.dq_smem, dq, qp, kp, vp, dout, lse,
                       (const float *)delta, N, M, D, Cv, scale);
  if (status == FV_OK && (dk || dv))
    status = launch_with(ks.dkdv, ks.dkdv_op, dim3((unsigned)((M + TILE - 1) / TILE), (unsigned)B), ks.threads,
                         ks.dkdv_smem, dk, dv, qp, kp, vp, dout, lse, (const float *)delta, N, M, D, Cv, scale);
  if (forked) { /* the compute stream waits for dQ, also after a failed launch */
    const int joined = fv_cuda_join(ks.dq_op);
    if (status == FV_OK) status = joined;
  }
  fv_cuda_free(delta, delta_bytes);
  return status;
}

} // namespace nam_tiles

#endif
