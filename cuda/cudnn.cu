/* cudnn.cu: conv2d forward and backward through cuDNN's legacy convolution API, on the
 * plans of cudnn_plan.cu (the handle, the version check, descriptors and chosen algorithms
 * per shape; cudnn_plan.cuh between the two: the backend's only files that include cuDNN).
 * NCHW tensors, float32 (compute in float; TF32 tensor cores allowed when fv_cuda_set_tf32
 * is on, as for matmul) and float64, stride, padding, dilation and groups as PyTorch's
 * conv2d.
 *
 * bf16 autocast (fv_cuda_set_autocast, for float32 calls only; float64 and autocast off are
 * untouched): the forward converts inp and weight to bfloat16 scratch buffers (round to
 * nearest even), convolves them into a bfloat16 scratch output with float accumulation
 * (cuDNN's PSEUDO_BFLOAT16_CONFIG: bfloat16 tensor and filter descriptors, a float
 * convolution descriptor, CUDNN_TENSOR_OP_MATH), converts that into out and adds the
 * float32 bias. Backward-data and backward-filter read a bfloat16 copy of dout (and of
 * weight or inp), write bfloat16 scratch results (beta = 0) and add them into the float32
 * dinp and dweight (+=, as the float32 passes blend with beta = 1); dbias comes from the
 * float32 dout as without autocast. Autocast plans are keyed apart (their TF32 setting
 * plays no part), search and fallback run on their bfloat16 descriptors, and any result's
 * math type but CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION is taken. Errors name "conv2d (bf16
 * autocast)" or "conv2d backward (bf16 autocast)". Needs a GPU with bfloat16 support in
 * cuDNN (sm_80 and later); elsewhere cuDNN's refusal is reported.
 *
 * Calls: each pass takes its plan (plan_for) and, on its first use with the shape, its
 * algorithm (choose_algo: see cudnn_plan.cu); workspaces come from the caching allocator;
 * the backward calls blend with beta = 1 (under autocast the conversion adds), so dinp,
 * dweight and dbias are accumulated (+=) as the nn_backward contract says; the bias is
 * added with cudnnAddTensor. Every cuDNN call is checked: "conv2d: <call> failed at
 * file:line: <cuDNN's status>" as FV_ERR_DEVICE (FV_ERR_MEMORY for an allocation failure).
 * Single-threaded, as the backend is. The backend's entry points are here:
 * fv_cuda_conv2d, fv_cuda_conv2d_available and fv_cuda_cudnn_check (cudnn_plan.cu's
 * version check, called by fv_cuda_init).
 *
 * Built with cuDNN when the Makefile finds cudnn.h and libcudnn.so under CUDA_HOME (it
 * then defines FV_HAVE_CUDNN and links -lcudnn); otherwise conv2d says "not implemented
 * on cuda yet (built without cuDNN)" and the rest of the backend works as before.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -DFV_HAVE_CUDNN=1 -Icore -c cuda/cudnn.cu -o build/cuda/cudnn.o */
#include "nn_common.cuh"

#if FV_HAVE_CUDNN
#include <cuda_bf16.h>

#include "cudnn_plan.cuh"

using namespace fv_cudnn;

extern "C" int fv_cuda_cudnn_check(void) { return check_version(); }

int fv_cuda_conv2d_available(void) { return 1; }

/* ---- bf16 autocast: bfloat16 copies of float32 operands, and results back ---- */
static __global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

/* dst = src (accumulate 0) or dst += src (accumulate 1), in float32 */
static __global__ void from_bf16_kernel(float *dst, const __nv_bfloat16 *src, int64_t n, int accumulate) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float v = __bfloat162float(src[i]);
    dst[i] = accumulate ? dst[i] + v : v;
  }
}

/* A bfloat16 buffer for as many elements as t has (NULL for none). */
static int bf16_like(const char *op, device_buffer *buf, const fv_tensor *t) {
  return buf->get(op, (size_t)fv_tensor_numel(t) * sizeof(__nv_bfloat16));
}

/* buf = t rounded to bfloat16 (t float32, contiguous). */
static int to_bf16(const char *op, device_buffer *buf, const fv_tensor *t) {
  const int64_t n = fv_tensor_numel(t);
  FV_TRY(bf16_like(op, buf, t));
  if (!n) return FV_OK;
  to_bf16_kernel<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
      (__nv_bfloat16 *)buf->p, (const float *)fv_cuda_first(t), n);
  FV_CUDA_LAUNCHED(op);
  return FV_OK;
}

/* t = buf, or t += buf with accumulate (t float32, contiguous; buf from bf16_like(t)). */
static int from_bf16(const char *op, const fv_tensor *t, const device_buffer &buf, int accumulate) {
  const int64_t n = fv_tensor_numel(t);
  if (!n) return FV_OK;
  from_bf16_kernel<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
      (float *)fv_cuda_first(t), (const __nv_bfloat16 *)buf.p, n, accumulate);
  FV_CUDA_LAUNCHED(op);
  return FV_OK;
}

static int conv_forward(const fv_nn_call *c, int f64, int bf16) {
  const char *op = bf16 ? "conv2d (bf16 autocast)" : "conv2d";
  const fv_tensor *out = c->t[0], *inp = c->t[1], *weight = c->t[2], *bias = c->t[3];
  FV_TRY(cudnn_ready(op));
  if (fv_tensor_numel(out) == 0) return FV_OK;
  conv_plan *p;
  FV_TRY(plan_for(op, &p, inp, weight, out, c->i, f64, bf16));
  /* under autocast the convolution reads bfloat16 copies of inp and weight and writes a
   * bfloat16 result, converted into out; otherwise it reads and writes the tensors */
  device_buffer x16, w16, y16; /* B x C_in x H x W, C_out x C_in/groups x KH x KW, B x C_out x OH x OW */
  const void *x = fv_cuda_first(inp), *w = fv_cuda_first(weight);
  void *y = fv_cuda_first(out);
  if (bf16) {
    FV_TRY(to_bf16(op, &x16, inp));
    FV_TRY(to_bf16(op, &w16, weight));
    FV_TRY(bf16_like(op, &y16, out));
    x = x16.p;
    w = w16.p;
    y = y16.p;
  }
  const conv_io io = {x, w, NULL};
  /* the search writes its trials into y: fresh, and overwritten below (beta = 0) */
  FV_TRY(choose_algo(op, p, PASS_FWD, io, y, 0));
  const conv_choice &ch = p->choice[PASS_FWD];
  device_buffer ws;
  FV_TRY(ws.get(op, ch.ws));
  const double one64 = 1, zero64 = 0;
  const float one32 = 1, zero32 = 0;
  const void *one = f64 ? (const void *)&one64 : (const void *)&one32;
  const void *zero = f64 ? (const void *)&zero64 : (const void *)&zero32;
  FV_CUDNN_TRY(op, cudnnConvolutionForward(handle, one, p->x, x, p->w, w, p->conv[PASS_FWD],
                                           (cudnnConvolutionFwdAlgo_t)ch.algo, ws.p, ws.bytes, zero, p->y, y));
  if (bf16) FV_TRY(from_bf16(op, out, y16, 0));
  if (bias) FV_CUDNN_TRY(op, cudnnAddTensor(handle, one, p->b, fv_cuda_first(bias), one, p->yt, fv_cuda_first(out)));
  return FV_OK;
}

static int conv_backward(const fv_nn_call *c, int f64, int bf16) {
  const char *op = bf16 ? "conv2d backward (bf16 autocast)" : "conv2d backward";
  fv_tensor *dinp = c->t[0], *dweight = c->t[1], *dbias = c->t[2];
  const fv_tensor *dout = c->t[3], *inp = c->t[4], *weight = c->t[5];
  FV_TRY(cudnn_ready(op));
  if (fv_tensor_numel(dout) == 0) return FV_OK; /* nothing flows back: the gradients stay as they are */
  conv_plan *p;
  FV_TRY(plan_for(op, &p, inp, weight, dout, c->i, f64, bf16));
  const int want_data = dinp && fv_tensor_numel(dinp) > 0, want_filter = dweight && fv_tensor_numel(dweight) > 0;
  /* under autocast the passes read bfloat16 copies of dout and of weight (data) or inp
   * (filter), and write bfloat16 results (beta = 0) that are then added into dinp and
   * dweight; otherwise they read the tensors and blend into the gradients (beta = 1) */
  device_buffer x16, w16, dy16; /* B x C_in x H x W, C_out x C_in/groups x KH x KW, B x C_out x OH x OW */
  const void *x = fv_cuda_first(inp), *w = fv_cuda_first(weight), *dy = fv_cuda_first(dout);
  if (bf16 && (want_data || want_filter)) {
    FV_TRY(to_bf16(op, &dy16, dout));
    dy = dy16.p;
  }
  if (bf16 && want_filter) {
    FV_TRY(to_bf16(op, &x16, inp));
    x = x16.p;
  }
  if (bf16 && want_data) {
    FV_TRY(to_bf16(op, &w16, weight));
    w = w16.p;
  }
  const conv_io io = {x, w, dy};
  const size_t elem = bf16 ? sizeof(__nv_bfloat16) : (size_t)fv_dtype_size(dout->scalar_type);
  const double one64 = 1;
  const float one32 = 1, zero32 = 0;
  const void *one = f64 ? (const void *)&one64 : (const void *)&one32;
  const void *beta = bf16 ? (const void *)&zero32 : one;
  /* the searches write into scratch buffers: the bfloat16 results under autocast (then
   * overwritten), else fresh ones, never into the gradients being accumulated */
  if (want_data) {
    device_buffer dx16; /* B x C_in x H x W, under autocast */
    if (bf16) FV_TRY(bf16_like(op, &dx16, inp));
    FV_TRY(choose_algo(op, p, PASS_DATA, io, dx16.p, (size_t)fv_tensor_numel(inp) * elem));
    const conv_choice &ch = p->choice[PASS_DATA];
    device_buffer ws;
    FV_TRY(ws.get(op, ch.ws));
    FV_CUDNN_TRY(op, cudnnConvolutionBackwardData(handle, one, p->w, w, p->y, dy, p->conv[PASS_DATA],
                                                  (cudnnConvolutionBwdDataAlgo_t)ch.algo, ws.p, ws.bytes, beta, p->x,
                                                  bf16 ? dx16.p : fv_cuda_first(dinp)));
    if (bf16) FV_TRY(from_bf16(op, dinp, dx16, 1));
  }
  if (want_filter) {
    device_buffer dw16; /* C_out x C_in/groups x KH x KW, under autocast */
    if (bf16) FV_TRY(bf16_like(op, &dw16, weight));
    FV_TRY(choose_algo(op, p, PASS_FILTER, io, dw16.p, (size_t)fv_tensor_numel(weight) * elem));
    const conv_choice &ch = p->choice[PASS_FILTER];
    device_buffer ws;
    FV_TRY(ws.get(op, ch.ws));
    FV_CUDNN_TRY(op, cudnnConvolutionBackwardFilter(handle, one, p->x, x, p->y, dy, p->conv[PASS_FILTER],
                                                    (cudnnConvolutionBwdFilterAlgo_t)ch.algo, ws.p, ws.bytes, beta,
                                                    p->w, bf16 ? dw16.p : fv_cuda_first(dweight)));
    if (bf16) FV_TRY(from_bf16(op, dweight, dw16, 1));
  }
  if (dbias) /* float32 dout under autocast too */
    FV_CUDNN_TRY(op, cudnnConvolutionBackwardBias(handle, one, p->yt, fv_cuda_first(dout), one, p->b,
                                                  fv_cuda_first(dbias)));
  return FV_OK;
}

int fv_cuda_conv2d(const fv_nn_call *c, int backward) {
  const int f64 = fv_nn_is_f64(c);
  const int bf16 = !f64 && fv_cuda_autocast_bf16();
  return backward ? conv_backward(c, f64, bf16) : conv_forward(c, f64, bf16);
}

#else /* built without cuDNN */

extern "C" int fv_cuda_cudnn_check(void) { return FV_OK; }
int fv_cuda_conv2d_available(void) { return 0; }
int fv_cuda_conv2d(const fv_nn_call *c, int backward) {
  (void)backward;
  return fv_fail(FV_ERR_DEVICE, "%s: not implemented on cuda yet (built without cuDNN)", fv_op_name(c->op));
}

#endif
