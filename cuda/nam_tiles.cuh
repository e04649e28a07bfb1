/* nam_tiles.cuh: what the float32 NAM kernels share (cuda/nn_nam_flash.cu exact on CUDA
 * cores, cuda/nn_nam_mma.cu and cuda/nn_nam_gemm.cu on TF32 tensor cores): the tile shape
 * (64 query rows by 64 keys; nn_nam_flash.cu's 256 threads as 16 x 16, thread (ty, tx)
 * owning rows 4*ty .. 4*ty+3 and columns tx, tx+16, ...), zero-padded tile loads,
 * reductions over a row's 16 threads, the padded widths, the launch with dynamic shared
 * memory, and the backward's delta_i = dout_i . out_i. Included by those files only. */
#ifndef FOVEA_CUDA_NAM_TILES_CUH
#define FOVEA_CUDA_NAM_TILES_CUH

#include "nn_common.cuh"

namespace nam_tiles {

constexpr int TILE = 64;     /* query rows and key columns per tile */
constexpr int THREADS = 256; /* 16 x 16 */

/* dst[r][c] (row stride ld) = src[(r0 + r) * cols + c] for r < 64, c < W; zero outside
 * rows x cols. Blocks of NT threads. */
template <int W, int NT = THREADS>
__device__ __forceinline__ void load_tile(float *dst, int ld, const float *src, int64_t r0, int64_t rows, int cols) {
  for (int e = threadIdx.x; e < TILE * W; e += NT) {
    const int r = e / W, c = e % W;
    const int64_t gr = r0 + r;
    dst[r * ld + c] = (gr < rows && c < cols) ? src[gr * cols + c] : 0.f;
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

/* The padded width for n: 16, 32, 64 or 128; 0 over 128. */
static inline int padded(int64_t n) { return n <= 16 ? 16 : n <= 32 ? 32 : n <= 64 ? 64 : n <= 128 ? 128 : 0; }

/* Launches kernel with threads threads and smem dynamic shared bytes (opting in above
 * 48 KiB). */
template <typename K, typename... A>
static int launch_with(K kernel, const char *op, dim3 grid, unsigned threads, size_t smem, A... args) {
  FV_CUDA_TRY(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  kernel<<<grid, threads, smem, fv_cuda_stream>>>(args...);
  FV_CUDA_LAUNCHED(op);
  return FV_OK;
}

/* The same with THREADS threads. */
template <typename K, typename... A>
static int launch(K kernel, const char *op, dim3 grid, size_t smem, A... args) {
  return launch_with(kernel, op, grid, THREADS, smem, args...);
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

} // namespace nam_tiles

#endif
