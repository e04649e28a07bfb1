/* common.cuh: what the CUDA backend's files share: the core's internal header, the
 * checked-call macros (every CUDA and cuBLAS call names its op, file and line, and
 * failures come back as FV_ERR_DEVICE or FV_ERR_MEMORY, never an abort), the strided
 * element walk used by the copy and elementwise kernels and the tests for their dense
 * fast paths, 16-byte packs for vector loads, a 32-bit divider by multiplication, launch
 * sizes, and the functions that cuda/backend.cu gathers into the backend table.
 * Included by every .cu file of cuda/; see the Makefile rule `cuda` for the build line. */
#ifndef FOVEA_CUDA_COMMON_CUH
#define FOVEA_CUDA_COMMON_CUH

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

extern "C" {
#include "../core/internal.h"
#include "fovea_cuda.h"
}

/* ---- errors ---- */
/* Records "op: call failed at file:line: CUDA's message (its name)" and returns
 * FV_ERR_MEMORY for an allocation failure, else FV_ERR_DEVICE. Clears CUDA's last error
 * when it is not sticky. */
int fv_cuda_fail(cudaError_t err, const char *op, const char *call, const char *file, int line);

/* After a query that said cudaErrorNotReady (no failure): HIP's runtime keeps it as the
 * thread's last error, and CUDA's documentation does not say that CUDA's does not (PyTorch
 * clears it after every query); left there, the next launch check (FV_CUDA_LAUNCHED:
 * cudaGetLastError) would report it as the failure of an unrelated kernel. Clears it, and
 * no other error (errors.cu). */
void fv_cuda_forget_not_ready(void);

/* Whether the caching allocators (device memory, allocator.cu; pinned memory,
 * transfer.cu) keep freed blocks: yes unless FOVEA_NO_ALLOC_CACHE is set to anything but
 * "0" (for compute-sanitizer runs, as for the CPU allocator); read when a pool is made. */
static inline int fv_cuda_alloc_caching(void) {
  const char *off = getenv("FOVEA_NO_ALLOC_CACHE");
  return !(off && strcmp(off, "0") != 0);
}

/* Early return with the status above when a CUDA runtime call fails. */
#define FV_CUDA_TRY(op, call)                                                   \
  do {                                                                          \
    cudaError_t fv_cuda_err_ = (call);                                          \
    if (fv_cuda_err_ != cudaSuccess)                                            \
      return fv_cuda_fail(fv_cuda_err_, (op), #call, __FILE__, __LINE__);       \
  } while (0)

/* After a kernel launch: a bad configuration or an earlier asynchronous fault. */
#define FV_CUDA_LAUNCHED(op) FV_CUDA_TRY(op, cudaGetLastError())

/* The stream every kernel, copy and cuBLAS call of the backend runs on (the legacy
 * default stream: work is ordered, so a block of fv_cuda_alloc freed to the allocator's
 * cache may be reused at once by later work). */
static const cudaStream_t fv_cuda_stream = 0;

/* ---- launch sizes ---- */
enum { FV_CUDA_THREADS = 256 };

/* Blocks for n elements with FV_CUDA_THREADS threads each; kernels loop with a grid
 * stride, so the grid is capped. */
static inline unsigned fv_cuda_blocks(int64_t n) {
  int64_t b = (n + FV_CUDA_THREADS - 1) / FV_CUDA_THREADS;
  if (b < 1) b = 1;
  if (b > 65535 * 16) b = 65535 * 16;
  return (unsigned)b;
}

/* ---- strided walks ----
 * Up to three operands of one shape (broadcast strides allowed), with the dimensions
 * merged where every operand is contiguous across them (the core's fv_iter_init). Element
 * i (row-major over the merged shape) is at base[k] + sum(index[d] * strides[k][d]) in
 * operand k, counted in elements. Passed to kernels by value. */
typedef struct fv_cuda_walk {
  int ndim;
  int count;
  int64_t numel;
  int64_t sizes[FV_MAX_DIMS];
  int64_t strides[3][FV_MAX_DIMS];
  int64_t base[3];
} fv_cuda_walk;

static inline fv_cuda_walk fv_cuda_walk_of(int count, const fv_tensor *const *ts) {
  fv_iter it;
  fv_iter_init(&it, count, ts);
  fv_cuda_walk w;
  w.ndim = it.ndim;
  w.count = count;
  w.numel = 1;
  for (int d = 0; d < FV_MAX_DIMS; d++) {
    w.sizes[d] = d < it.ndim ? it.sizes[d] : 1;
    for (int k = 0; k < 3; k++) w.strides[k][d] = (d < it.ndim && k < count) ? it.strides[k][d] : 0;
  }
  for (int d = 0; d < it.ndim; d++) w.numel *= it.sizes[d];
  for (int k = 0; k < 3; k++) w.base[k] = k < count ? it.base[k] : 0;
  return w;
}

/* Offsets (in elements) of element i in each of the walk's operands. */
__device__ __forceinline__ void fv_cuda_offsets(const fv_cuda_walk &w, int64_t i, int64_t off[3]) {
  off[0] = w.base[0];
  off[1] = w.base[1];
  off[2] = w.base[2];
  if (w.ndim == 1) { /* the common case after merging: one run */
    off[0] += i * w.strides[0][0];
    off[1] += i * w.strides[1][0];
    off[2] += i * w.strides[2][0];
    return;
  }
  for (int d = w.ndim - 1; d >= 0; d--) {
    int64_t size = w.sizes[d];
    int64_t idx = i % size;
    i /= size;
    off[0] += idx * w.strides[0][d];
    off[1] += idx * w.strides[1][d];
    off[2] += idx * w.strides[2][d];
  }
}

/* ---- fast paths ----
 * Whether operand k of w is one dense row-major run over the walk's shape: element i at
 * base[k] + i. */
static inline int fv_cuda_walk_dense(const fv_cuda_walk &w, int k) {
  int64_t s = 1;
  for (int d = w.ndim - 1; d >= 0; d--) {
    if (w.sizes[d] != 1 && w.strides[k][d] != s) return 0;
    s *= w.sizes[d];
  }
  return 1;
}

/* Whether every operand of w is dense and there are at most INT32_MAX elements: the flat
 * kernels then loop with uint32_t indices (i plus a grid's threads, at most 2^28, stays
 * below 2^32). */
static inline int fv_cuda_walk_flat(const fv_cuda_walk &w) {
  if (w.numel > INT32_MAX) return 0;
  for (int k = 0; k < w.count; k++)
    if (!fv_cuda_walk_dense(w, k)) return 0;
  return 1;
}

/* 16 bytes of T: one vector load or store (LDG.128/STG.128) in the flat kernels, for
 * pointers that are fv_cuda_aligned16. */
template <typename T> struct alignas(16) fv_cuda_pack {
  T v[16 / sizeof(T)];
};
static inline int fv_cuda_aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* Division by a fixed divisor 1 <= d <= INT32_MAX of dividends n < 2^31 with a multiply-high,
 * an add and a shift instead of a division (Granlund and Montgomery's round-up method, as
 * PyTorch's IntDivider): s = ceil(log2 d), m = floor(2^32 (2^s - d) / d) + 1 (< 2^32), and
 * n / d = (umulhi(n, m) + n) >> s, where the sum stays below 2^32 because umulhi(n, m) < n.
 * Made on the host by fv_cuda_div32_of, passed to kernels by value. */
struct fv_cuda_div32 {
  typedef uint32_t index; /* the dividends' type (kernels templated on the divider use it) */
  uint32_t d, m, s;
};
static inline fv_cuda_div32 fv_cuda_div32_of(uint32_t d) {
  fv_cuda_div32 v;
  v.d = d;
  v.s = 0;
  while (v.s < 31 && ((uint32_t)1 << v.s) < d) v.s++;
  v.m = (uint32_t)(((uint64_t)1 << 32) * (((uint64_t)1 << v.s) - d) / d + 1);
  return v;
}
__device__ __forceinline__ uint32_t fv_cuda_div(const fv_cuda_div32 &v, uint32_t n) {
  return (__umulhi(n, v.m) + n) >> v.s;
}

/* Base address of a tensor's storage (offsets are added by the walk or the caller). */
static inline char *fv_cuda_base(const fv_tensor *t) { return (char *)t->storage->data; }

/* Address of t's first element. */
static inline char *fv_cuda_first(const fv_tensor *t) {
  return (char *)t->storage->data + t->offset * fv_dtype_size(t->scalar_type);
}

/* ---- the kernels behind the backend table (extern "C": the table is C's) ---- */
extern "C" {
void *fv_cuda_alloc(size_t bytes);
void fv_cuda_free(void *data, size_t bytes);
/* The caching allocator for memory whose first user is `stream`, not fv_cuda_stream (an
 * upload on a copy stream): its own pool, reused only for that stream. Freed with
 * fv_cuda_free, the block is taken to be in use by fv_cuda_stream too and is reused once
 * the compute stream has passed the free (an event; allocator.cu). NULL with fv_fail as
 * fv_cuda_alloc. */
void *fv_cuda_alloc_on(size_t bytes, cudaStream_t stream);
int fv_cuda_copy(fv_tensor *dst, const fv_tensor *src);
int fv_cuda_fill(fv_tensor *dst, double value);
int fv_cuda_to_host(void *host, const fv_tensor *src, size_t bytes);
int fv_cuda_from_host(fv_tensor *dst, const void *host, size_t bytes);
int fv_cuda_binary(int op, fv_tensor *out, const fv_tensor *a, const fv_tensor *b);
int fv_cuda_binary_scalar(int op, fv_tensor *out, const fv_tensor *a, double s, int scalar_first);
int fv_cuda_unary(int op, fv_tensor *out, const fv_tensor *a, double lo, double hi);
int fv_cuda_reduce(int op, fv_tensor *out, fv_tensor *index, const fv_tensor *a, int64_t outer, int64_t n,
                   int64_t inner, int correction, int index_base);
int fv_cuda_matmul(fv_tensor *out, const fv_tensor *a, const fv_tensor *b);
/* Whether float32 products may use TF32 tensor cores (fv_cuda_set_tf32; matmul.cu). */
int fv_cuda_tf32_enabled(void);
/* Whether bf16 autocast is on for float32 conv2d and NAM (fv_cuda_set_autocast; backend.cu). */
int fv_cuda_autocast_bf16(void);
int fv_cuda_random(int op, fv_tensor *out, uint64_t seed, uint64_t offset);
/* optimizer steps and clip_grad_norm's halves (optim.cu; fv_backend's adam_step, sgd_step,
 * grad_norm_parts, grad_scale: multi-tensor launches, one readback per norm) */
int fv_cuda_adam_step(int n, fv_tensor *const *params, fv_tensor *const *exp_avg, fv_tensor *const *exp_avg_sq,
                      fv_tensor *const *max_exp_avg_sq, const fv_adam_coef *c);
int fv_cuda_sgd_step(int n, fv_tensor *const *params, fv_tensor *const *momentum_buf, const fv_sgd_coef *c);
int fv_cuda_grad_norm_parts(int n, const fv_tensor *const *grads, int kind, double p, double *parts);
int fv_cuda_grad_scale(int n, fv_tensor *const *grads, double coef);
/* cuBLAS's handle, made on first use (matmul.cu); released by nothing: it lives until exit */
int fv_cuda_blas_ready(const char *op);
/* Row-major float32 product C = alpha op(A) op(B) + beta C through cuBLAS (matmul.cu) */
int fv_cuda_sgemm_rows(const char *op, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                       int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* pinned host memory and asynchronous uploads (transfer.cu; fv_backend's host_alloc,
 * host_free, upload); fv_cuda_uploads_settle releases the sources of every listed upload
 * once the device is synchronized (fv_cuda_synchronize) */
void *fv_cuda_host_alloc(size_t bytes);
void fv_cuda_host_free(void *ptr, size_t bytes);
int fv_cuda_upload(void **data, const fv_tensor *src, size_t bytes);
int fv_cuda_uploads_settle(void);
/* A side stream for an op's independent work (side_stream.cu): fv_cuda_fork gives it, made
 * to wait for the compute stream's work so far; fv_cuda_join makes the compute stream wait
 * for the side stream's. Memory used in between: allocated before the fork, freed after
 * the join. op names the caller in errors. */
int fv_cuda_fork(const char *op, cudaStream_t *stream);
int fv_cuda_join(const char *op);
/* The profiler (profile.cu): with FOVEA_CUDA_PROFILE set, replaces the table's kernel entries
 * (all but supports) by timing wrappers around them; without it, changes nothing. */
int fv_cuda_profile_install(fv_backend *table);
}

#endif
