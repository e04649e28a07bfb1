/* cudnn_plan.cuh: between cuda/cudnn.cu (conv2d's passes, bias and bf16 autocast) and
 * cuda/cudnn_plan.cu (the cuDNN handle, the version check, a plan per shape and the choice
 * of each pass's algorithm): the checked-call macro, the plan with its descriptors and
 * choices, device buffers from the caching allocator, and the plan side's entry points.
 * cuda/cudnn_batch_norm.cu (batch norm through cuDNN) uses its handle, macro and buffers
 * too. These files are the backend's only ones that include cuDNN; the .cu files include
 * this one only when built with it (FV_HAVE_CUDNN). */
#ifndef FOVEA_CUDA_CUDNN_PLAN_CUH
#define FOVEA_CUDA_CUDNN_PLAN_CUH

#include <cudnn.h>

#include "nn_common.cuh"

namespace fv_cudnn {

extern cudnnHandle_t handle; /* cudnn_ready's, on the backend's stream */

/* A failed cuDNN call as an error status and message: "op: call failed at file:line:
 * cuDNN's status", FV_ERR_MEMORY for CUDNN_STATUS_ALLOC_FAILED, else FV_ERR_DEVICE. */
int cudnn_fail(cudnnStatus_t st, const char *op, const char *call, const char *file, int line);

#define FV_CUDNN_TRY(op, call)                                                 \
  do {                                                                         \
    cudnnStatus_t fv_cudnn_st_ = (call);                                       \
    if (fv_cudnn_st_ != CUDNN_STATUS_SUCCESS)                                  \
      return cudnn_fail(fv_cudnn_st_, (op), #call, __FILE__, __LINE__);        \
  } while (0)

/* cudnnGetVersion() against the headers' CUDNN_VERSION, compared once: FV_OK, or
 * FV_ERR_DEVICE on a major mismatch (fv_cuda_cudnn_check). */
int check_version(void);

/* FV_OK when the versions agree and the handle exists (made on the first call); else the
 * error, named after op. */
int cudnn_ready(const char *op);

/* ---- plans: descriptors and chosen algorithms per shape ---- */
enum { PASS_FWD, PASS_DATA, PASS_FILTER, PASS_COUNT };

enum { KEY_LEN = 19 };
struct conv_key {
  int64_t v[KEY_LEN]; /* B C_in H W C_out KH KW OH OW sh sw ph pw dh dw groups f64 tf32 bf16 */
};
enum { KEY_F64 = 16, KEY_TF32 = 17, KEY_BF16 = 18 };

struct conv_choice {
  int have;             /* chosen (the pass's convolution descriptor carries `math`) */
  int algo;             /* a cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t */
  cudnnMathType_t math; /* the math type it runs with */
  size_t ws;            /* its workspace in bytes */
};

struct conv_plan {
  int valid; /* key, descriptors and choices describe one shape */
  uint64_t hash, used;
  conv_key key;
  /* the convolution's input, output and filter (bfloat16 under autocast); the output again
   * and the bias (1 x C_out x 1 x 1) in the call's dtype, for the bias's add and gradient */
  cudnnTensorDescriptor_t x, y, yt, b;
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t conv[PASS_COUNT];
  conv_choice choice[PASS_COUNT];
};

/* The plan of this shape: found by key, else a new or the least recently used entry, set
 * for it (its choices start empty). */
int plan_for(const char *op, conv_plan **plan, const fv_tensor *inp, const fv_tensor *weight, const fv_tensor *out,
             const int64_t *i, int f64, int bf16);

/* ---- device buffers from the caching allocator (NULL for 0 bytes), given back at scope
 * end (the stream keeps the order, so work queued on them finishes first) ---- */
struct device_buffer {
  void *p = NULL;
  size_t bytes = 0;
  ~device_buffer() {
    if (p) fv_cuda_free(p, bytes);
  }
  int get(const char *op, size_t n) {
    if (!n) return FV_OK;
    p = fv_cuda_alloc(n);
    if (!p) return fv_last_status() ? fv_last_status() : fv_fail(FV_ERR_MEMORY, "%s: no workspace", op);
    bytes = n;
    return FV_OK;
  }
};

struct conv_io { /* the operands the search reads: input, weight, output gradient */
  const void *x, *w, *dy;
};

/* Chooses the algorithm of pass (PASS_FWD, PASS_DATA, PASS_FILTER) for the plan once: the
 * timed search on io's operands (trial results into result, or a scratch buffer of
 * result_bytes when it is NULL) unless FOVEA_CUDNN_BENCHMARK=0, else or when that fails
 * cuDNN's heuristic. FV_OK with p->choice[pass] set, or the error. */
int choose_algo(const char *op, conv_plan *p, int pass, const conv_io &io, void *result, size_t result_bytes);

} // namespace fv_cudnn

#endif
