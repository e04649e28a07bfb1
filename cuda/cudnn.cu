/* cudnn.cu: conv2d forward and backward through cuDNN's legacy convolution API (the only
 * file of the backend that includes cuDNN). NCHW tensors, float32 (compute in float;
 * TF32 tensor cores allowed when fv_cuda_set_tf32 is on, as for matmul) and float64,
 * stride, padding, dilation and groups as PyTorch's conv2d. Algorithms come from
 * cudnnGet*Algorithm_v7 (the first one that succeeds in cuDNN's order) and are cached per
 * shape (sizes, options, dtype, TF32 setting); workspaces come from the caching
 * allocator. The backward calls blend with beta = 1, so dinp, dweight and dbias are
 * accumulated (+=) as the nn_backward contract says; the bias is added with
 * cudnnAddTensor. Every cuDNN call is checked: "conv2d: <call> failed at file:line:
 * <cuDNN's status>" as FV_ERR_DEVICE (FV_ERR_MEMORY for an allocation failure).
 * The library's version (cudnnGetVersion) is compared with the headers' CUDNN_VERSION
 * once (fv_cuda_cudnn_check, called by fv_cuda_init); a different major version is
 * reported with both numbers by every conv2d call instead of running it.
 *
 * Built with cuDNN when the Makefile finds cudnn.h and libcudnn.so under CUDA_HOME (it
 * then defines FV_HAVE_CUDNN and links -lcudnn); otherwise conv2d says "not implemented
 * on cuda yet (built without cuDNN)" and the rest of the backend works as before.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -DFV_HAVE_CUDNN=1 -Icore -c cuda/cudnn.cu -o build/cuda/cudnn.o */
#include <stdio.h>
#include <string.h>

#include "nn_common.cuh"

#if FV_HAVE_CUDNN
#include <cudnn.h>


static cudnnHandle_t handle;
static int version_checked;
static char version_error[256];

static int cudnn_fail(cudnnStatus_t st, const char *op, const char *call, const char *file, int line) {
  int status = st == CUDNN_STATUS_ALLOC_FAILED ? FV_ERR_MEMORY : FV_ERR_DEVICE;
  return fv_fail(status, "%s: %s failed at %s:%d: %s", op, call, file, line, cudnnGetErrorString(st));
}

#define FV_CUDNN_TRY(op, call)                                                 \
  do {                                                                         \
    cudnnStatus_t fv_cudnn_st_ = (call);                                       \
    if (fv_cudnn_st_ != CUDNN_STATUS_SUCCESS)                                  \
      return cudnn_fail(fv_cudnn_st_, (op), #call, __FILE__, __LINE__);        \
  } while (0)

extern "C" int fv_cuda_cudnn_check(void) {
  if (version_checked) return version_error[0] ? FV_ERR_DEVICE : FV_OK;
  version_checked = 1;
  size_t have = cudnnGetVersion();
  if (have / 10000 != (size_t)CUDNN_VERSION / 10000)
    snprintf(version_error, sizeof version_error,
             "cuDNN library version %zu does not match the headers' version %d (major %zu vs %d)", have,
             (int)CUDNN_VERSION, have / 10000, (int)CUDNN_VERSION / 10000);
  return version_error[0] ? FV_ERR_DEVICE : FV_OK;
}

static int cudnn_ready(const char *op) {
  if (fv_cuda_cudnn_check()) return fv_fail(FV_ERR_DEVICE, "%s: %s", op, version_error);
  if (handle) return FV_OK;
  FV_CUDNN_TRY(op, cudnnCreate(&handle));
  FV_CUDNN_TRY(op, cudnnSetStream(handle, fv_cuda_stream));
  return FV_OK;
}

int fv_cuda_conv2d_available(void) { return 1; }

/* ---- the descriptors of one call, destroyed on every path ---- */
struct conv_descs {
  cudnnTensorDescriptor_t x = NULL, y = NULL, b = NULL;
  cudnnFilterDescriptor_t w = NULL;
  cudnnConvolutionDescriptor_t conv = NULL;
  ~conv_descs() {
    if (x) cudnnDestroyTensorDescriptor(x);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (b) cudnnDestroyTensorDescriptor(b);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
  }
};

/* ---- the per-shape algorithm cache ---- */
struct conv_key {
  int64_t v[18]; /* B C_in H W C_out KH KW OH OW sh sw ph pw dh dw groups dtype tf32 */
};
struct conv_algos {
  conv_key key;
  int have_fwd, have_data, have_filter;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t data;
  cudnnConvolutionBwdFilterAlgo_t filter;
  size_t fwd_ws, data_ws, filter_ws;
};
enum { CACHE_SIZE = 256 };
static conv_algos cache[CACHE_SIZE];
static int cache_count, cache_next;

static conv_algos *cache_entry(const conv_key &key) {
  for (int k = 0; k < cache_count; k++)
    if (memcmp(&cache[k].key, &key, sizeof key) == 0) return &cache[k];
  conv_algos *e = &cache[cache_next];
  cache_next = (cache_next + 1) % CACHE_SIZE; /* full: the oldest entry goes */
  if (cache_count < CACHE_SIZE) cache_count++;
  memset(e, 0, sizeof *e);
  e->key = key;
  return e;
}

static int set_descs(const char *op, conv_descs &d, const fv_tensor *inp, const fv_tensor *weight,
                     const fv_tensor *out, const int64_t *i, int f64) {
  const cudnnDataType_t dt = f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
  for (int k = 0; k < 4; k++)
    if (inp->sizes[k] > INT32_MAX || weight->sizes[k] > INT32_MAX || out->sizes[k] > INT32_MAX)
      return fv_fail(FV_ERR_SHAPE, "%s: sizes beyond 2^31 are not supported by cuDNN", op);
  FV_CUDNN_TRY(op, cudnnCreateTensorDescriptor(&d.x));
  FV_CUDNN_TRY(op, cudnnCreateTensorDescriptor(&d.y));
  FV_CUDNN_TRY(op, cudnnCreateFilterDescriptor(&d.w));
  FV_CUDNN_TRY(op, cudnnCreateConvolutionDescriptor(&d.conv));
  FV_CUDNN_TRY(op, cudnnSetTensor4dDescriptor(d.x, CUDNN_TENSOR_NCHW, dt, (int)inp->sizes[0], (int)inp->sizes[1],
                                              (int)inp->sizes[2], (int)inp->sizes[3]));
  FV_CUDNN_TRY(op, cudnnSetTensor4dDescriptor(d.y, CUDNN_TENSOR_NCHW, dt, (int)out->sizes[0], (int)out->sizes[1],
                                              (int)out->sizes[2], (int)out->sizes[3]));
  FV_CUDNN_TRY(op, cudnnSetFilter4dDescriptor(d.w, dt, CUDNN_TENSOR_NCHW, (int)weight->sizes[0],
                                              (int)weight->sizes[1], (int)weight->sizes[2], (int)weight->sizes[3]));
  FV_CUDNN_TRY(op, cudnnSetConvolution2dDescriptor(d.conv, (int)i[2], (int)i[3], (int)i[0], (int)i[1], (int)i[4],
                                                   (int)i[5], CUDNN_CROSS_CORRELATION, dt));
  FV_CUDNN_TRY(op, cudnnSetConvolutionGroupCount(d.conv, (int)i[6]));
  FV_CUDNN_TRY(op, cudnnSetConvolutionMathType(d.conv, (!f64 && fv_cuda_tf32_enabled()) ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
  /* cuDNN must agree with the core's output size */
  int n, c, h, w;
  FV_CUDNN_TRY(op, cudnnGetConvolution2dForwardOutputDim(d.conv, d.x, d.w, &n, &c, &h, &w));
  if (n != out->sizes[0] || c != out->sizes[1] || h != out->sizes[2] || w != out->sizes[3])
    return fv_fail(FV_ERR_INTERNAL, "%s: cuDNN's output size %dx%dx%dx%d differs from %s", op, n, c, h, w,
                   fv_shape_of(out));
  return FV_OK;
}

static conv_key key_of(const fv_tensor *inp, const fv_tensor *weight, const fv_tensor *out, const int64_t *i,
                       int f64) {
  conv_key k;
  memset(&k, 0, sizeof k);
  int64_t v[18] = {inp->sizes[0], inp->sizes[1], inp->sizes[2], inp->sizes[3], weight->sizes[0], weight->sizes[2],
                   weight->sizes[3], out->sizes[2], out->sizes[3], i[0], i[1], i[2], i[3], i[4], i[5], i[6],
                   f64, f64 ? 0 : fv_cuda_tf32_enabled()};
  memcpy(k.v, v, sizeof v);
  return k;
}

/* Workspace from the caching allocator (NULL for 0 bytes); given back after the call is
 * queued (the stream keeps the order). */
struct workspace {
  void *p = NULL;
  size_t bytes = 0;
  ~workspace() {
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

static int conv_forward(const fv_nn_call *c, int f64) {
  const char *op = "conv2d";
  const fv_tensor *out = c->t[0], *inp = c->t[1], *weight = c->t[2], *bias = c->t[3];
  FV_TRY(cudnn_ready(op));
  if (fv_tensor_numel(out) == 0) return FV_OK;
  conv_descs d;
  FV_TRY(set_descs(op, d, inp, weight, out, c->i, f64));
  conv_algos *e = cache_entry(key_of(inp, weight, out, c->i, f64));
  if (!e->have_fwd) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int found = 0;
    FV_CUDNN_TRY(op, cudnnGetConvolutionForwardAlgorithm_v7(handle, d.x, d.w, d.conv, d.y,
                                                            CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &found, perf));
    int k = 0;
    while (k < found && perf[k].status != CUDNN_STATUS_SUCCESS) k++;
    if (k == found) return fv_fail(FV_ERR_DEVICE, "%s: cuDNN has no forward algorithm for %s * %s", op,
                                   fv_shape_of(inp), fv_shape_of(weight));
    e->fwd = perf[k].algo;
    FV_CUDNN_TRY(op, cudnnGetConvolutionForwardWorkspaceSize(handle, d.x, d.w, d.conv, d.y, e->fwd, &e->fwd_ws));
    e->have_fwd = 1;
  }
  workspace ws;
  FV_TRY(ws.get(op, e->fwd_ws));
  const double one64 = 1, zero64 = 0;
  const float one32 = 1, zero32 = 0;
  const void *one = f64 ? (const void *)&one64 : (const void *)&one32;
  const void *zero = f64 ? (const void *)&zero64 : (const void *)&zero32;
  FV_CUDNN_TRY(op, cudnnConvolutionForward(handle, one, d.x, fv_cuda_first(inp), d.w, fv_cuda_first(weight), d.conv,
                                           e->fwd, ws.p, ws.bytes, zero, d.y, fv_cuda_first(out)));
  if (bias) {
    FV_CUDNN_TRY(op, cudnnCreateTensorDescriptor(&d.b));
    FV_CUDNN_TRY(op, cudnnSetTensor4dDescriptor(d.b, CUDNN_TENSOR_NCHW, f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT, 1,
                                                (int)out->sizes[1], 1, 1));
    FV_CUDNN_TRY(op, cudnnAddTensor(handle, one, d.b, fv_cuda_first(bias), one, d.y, fv_cuda_first(out)));
  }
  return FV_OK;
}

static int conv_backward(const fv_nn_call *c, int f64) {
  const char *op = "conv2d backward";
  fv_tensor *dinp = c->t[0], *dweight = c->t[1], *dbias = c->t[2];
  const fv_tensor *dout = c->t[3], *inp = c->t[4], *weight = c->t[5];
  FV_TRY(cudnn_ready(op));
  if (fv_tensor_numel(dout) == 0) return FV_OK; /* nothing flows back: the gradients stay as they are */
  conv_descs d;
  FV_TRY(set_descs(op, d, inp, weight, dout, c->i, f64));
  conv_algos *e = cache_entry(key_of(inp, weight, dout, c->i, f64));
  const double one64 = 1;
  const float one32 = 1;
  const void *one = f64 ? (const void *)&one64 : (const void *)&one32;
  if (dinp && fv_tensor_numel(dinp) > 0) {
    if (!e->have_data) {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      int found = 0;
      FV_CUDNN_TRY(op, cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, d.w, d.y, d.conv, d.x,
                                                                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &found, perf));
      int k = 0;
      while (k < found && perf[k].status != CUDNN_STATUS_SUCCESS) k++;
      if (k == found) return fv_fail(FV_ERR_DEVICE, "%s: cuDNN has no backward-data algorithm for %s * %s", op,
                                     fv_shape_of(inp), fv_shape_of(weight));
      e->data = perf[k].algo;
      FV_CUDNN_TRY(op, cudnnGetConvolutionBackwardDataWorkspaceSize(handle, d.w, d.y, d.conv, d.x, e->data,
                                                                    &e->data_ws));
      e->have_data = 1;
    }
    workspace ws;
    FV_TRY(ws.get(op, e->data_ws));
    FV_CUDNN_TRY(op, cudnnConvolutionBackwardData(handle, one, d.w, fv_cuda_first(weight), d.y, fv_cuda_first(dout),
                                                  d.conv, e->data, ws.p, ws.bytes, one, d.x, fv_cuda_first(dinp)));
  }
  if (dweight && fv_tensor_numel(dweight) > 0) {
    if (!e->have_filter) {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      int found = 0;
      FV_CUDNN_TRY(op, cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                           handle, d.x, d.y, d.conv, d.w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &found, perf));
      int k = 0;
      while (k < found && perf[k].status != CUDNN_STATUS_SUCCESS) k++;
      if (k == found) return fv_fail(FV_ERR_DEVICE, "%s: cuDNN has no backward-filter algorithm for %s * %s", op,
                                     fv_shape_of(inp), fv_shape_of(weight));
      e->filter = perf[k].algo;
      FV_CUDNN_TRY(op, cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, d.x, d.y, d.conv, d.w, e->filter,
                                                                      &e->filter_ws));
      e->have_filter = 1;
    }
    workspace ws;
    FV_TRY(ws.get(op, e->filter_ws));
    FV_CUDNN_TRY(op, cudnnConvolutionBackwardFilter(handle, one, d.x, fv_cuda_first(inp), d.y, fv_cuda_first(dout),
                                                    d.conv, e->filter, ws.p, ws.bytes, one, d.w,
                                                    fv_cuda_first(dweight)));
  }
  if (dbias) {
    FV_CUDNN_TRY(op, cudnnCreateTensorDescriptor(&d.b));
    FV_CUDNN_TRY(op, cudnnSetTensor4dDescriptor(d.b, CUDNN_TENSOR_NCHW, f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT, 1,
                                                (int)dout->sizes[1], 1, 1));
    FV_CUDNN_TRY(op, cudnnConvolutionBackwardBias(handle, one, d.y, fv_cuda_first(dout), one, d.b,
                                                  fv_cuda_first(dbias)));
  }
  return FV_OK;
}

int fv_cuda_conv2d(const fv_nn_call *c, int backward) {
  const int f64 = fv_nn_is_f64(c);
  return backward ? conv_backward(c, f64) : conv_forward(c, f64);
}

#else /* built without cuDNN */

extern "C" int fv_cuda_cudnn_check(void) { return FV_OK; }
int fv_cuda_conv2d_available(void) { return 0; }
int fv_cuda_conv2d(const fv_nn_call *c, int backward) {
  (void)backward;
  return fv_fail(FV_ERR_DEVICE, "%s: not implemented on cuda yet (built without cuDNN)", fv_op_name(c->op));
}

#endif
