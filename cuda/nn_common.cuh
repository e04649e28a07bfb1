/* nn_common.cuh: what the CUDA neural-network files (cuda/nn_*.cu, cuda/cudnn.cu) share:
 * slot pointers of an fv_nn_call (core/internal.h documents the slots), block
 * reductions in double (the CPU kernels accumulate float32 in double too), a device
 * error flag for data-dependent failures (out-of-range targets), and the entry point of
 * each op family, which cuda/backend.cu dispatches to.
 * Included by the nn .cu files; see the Makefile rule `cuda` for the build line. */
#ifndef FOVEA_CUDA_NN_COMMON_CUH
#define FOVEA_CUDA_NN_COMMON_CUH

#include "common.cuh"

/* The data of slot k as T*, or NULL when the slot is empty. */
template <typename T> static inline T *fv_nn_ptr(const fv_nn_call *c, int k) {
  return c->t[k] ? (T *)fv_cuda_first(c->t[k]) : (T *)NULL;
}

/* 1 when the call's element type is float64: that of its first float operand (as the
 * CPU backend decides). */
static inline int fv_nn_is_f64(const fv_nn_call *c) {
  for (int k = 0; k < 10; k++)
    if (c->t[k] && (c->t[k]->scalar_type == FV_FLOAT32 || c->t[k]->scalar_type == FV_FLOAT64))
      return c->t[k]->scalar_type == FV_FLOAT64;
  return 0;
}

/* B, C and the product of the remaining sizes of t. */
static inline void fv_nn_bcs(const fv_tensor *t, int64_t *B, int64_t *C, int64_t *S) {
  *B = t->sizes[0];
  *C = t->ndim > 1 ? t->sizes[1] : 1;
  *S = 1;
  for (int d = 2; d < t->ndim; d++) *S *= t->sizes[d];
}

/* Block-wide reductions for blocks of FV_CUDA_THREADS threads; every thread of the block
 * must call them and gets the result. scratch: __shared__ double[FV_CUDA_THREADS]. The
 * summation order is fixed (a tree over the threads' partial sums), so results repeat. */
__device__ __forceinline__ double fv_nn_block_sum(double v, double *scratch) {
  __syncthreads(); /* scratch may still be read by an earlier call */
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int s = FV_CUDA_THREADS / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) scratch[threadIdx.x] += scratch[threadIdx.x + s];
    __syncthreads();
  }
  return scratch[0];
}
/* Maximum, NaNs skipped (as the CPU's `x > m ? x : m`); -inf for no values. */
__device__ __forceinline__ double fv_nn_block_max(double v, double *scratch) {
  __syncthreads();
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int s = FV_CUDA_THREADS / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) {
      double o = scratch[threadIdx.x + s];
      if (o > scratch[threadIdx.x]) scratch[threadIdx.x] = o;
    }
    __syncthreads();
  }
  return scratch[0];
}

/* exp in the element type: expf for float (as the CPU's EXP), exp for double; also on the
 * host (the kernels' __host__ __device__ bodies, emulated there). */
__host__ __device__ __forceinline__ float fv_nn_exp(float x) { return expf(x); }
__host__ __device__ __forceinline__ double fv_nn_exp(double x) { return exp(x); }

/* Grid size for one block per row over rows rows (the kernels loop with a grid stride). */
static inline unsigned fv_nn_row_blocks(int64_t rows) {
  if (rows < 1) return 1;
  return rows > 65535 * 16 ? 65535u * 16u : (unsigned)rows;
}

/* A device int set to 0, for kernels to raise; fv_nn_flag_read copies it back (and
 * synchronizes) and frees it. */
int fv_nn_flag_new(const char *op, int **flag);
int fv_nn_flag_read(const char *op, int *flag, int *value);

/* The op families (each file's entry; backward 0 or 1). Each returns FV_OK or a status
 * with a message naming the op. */
int fv_cuda_nn_softmax(const fv_nn_call *c, int backward);       /* nn_softmax.cu: SOFTMAX, LOG_SOFTMAX */
int fv_cuda_nn_cross_entropy(const fv_nn_call *c, int backward); /* nn_loss.cu */
int fv_cuda_nn_pool(const fv_nn_call *c, int backward);          /* nn_pool.cu: the four poolings */
int fv_cuda_nn_upsample(const fv_nn_call *c, int backward);      /* nn_upsample.cu */
int fv_cuda_nn_shuffle(const fv_nn_call *c, int backward);       /* nn_shuffle.cu */
int fv_cuda_nn_batch_norm(const fv_nn_call *c, int backward);    /* nn_batch_norm.cu */
int fv_cuda_nn_nam(const fv_nn_call *c, int backward);            /* nn_nam.cu: FV_OP_NAM */
/* The float32 NAM kernels nn_nam.cu chooses among (*taken = 0: the call does not fit):
 * nn_nam_mma.cu (TF32 or bf16, fused), nn_nam_gemm.cu (TF32, cuBLAS), nn_nam_flash.cu (exact) */
int fv_cuda_nam_mma(const fv_nn_call *c, int backward, int bf16, int *taken);
int fv_cuda_nam_gemm(const fv_nn_call *c, int backward);
int fv_cuda_nam_exact(const fv_nn_call *c, int backward, int *taken);
int fv_cuda_nn_criss_cross(const fv_nn_call *c, int backward);    /* nn_criss_cross.cu */
int fv_cuda_conv2d(const fv_nn_call *c, int backward);           /* cudnn.cu (stub without cuDNN) */
int fv_cuda_conv2d_available(void);                              /* 1 when cudnn.cu has cuDNN */
/* cudnn.cu: compares cudnnGetVersion() with the headers' CUDNN_VERSION once; FV_OK, or
 * FV_ERR_DEVICE on a major mismatch (conv2d then reports both versions). */
extern "C" int fv_cuda_cudnn_check(void);

#endif
