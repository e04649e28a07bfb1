/* nn/pool.c: max and average pooling, and their adaptive forms (PyTorch's bin rule
 * start = floor(i*in/out), end = ceil((i+1)*in/out)), with backward. */
#include "nn.h"

/* Pooling output size as PyTorch computes it (ceil_mode: the last window must start
 * inside the input or its left padding). */
static int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, int ceil_mode) {
  int64_t num = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
  int64_t out = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) out--;
  return out;
}

/* saved = {indices} for max, none for avg; iarg = the forward's kernel arguments */
static int pool_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  fv_tensor *gc = NULL, *dinp = NULL;
  int status = fv_contiguous(&gc, g);
  if (!status) status = fv_nn_grad_buffer(node, 0, &dinp);
  if (!status && dinp) {
    fv_nn_call call = {.op = (int)node->iarg[9], .t = {dinp, gc, node->saved[0]}};
    for (int k = 0; k < 9; k++) call.i[k] = node->iarg[k];
    status = fv_nn_run(&call, gc->device_type, gc->scalar_type, 1);
  }
  fv_tensor_release(gc);
  if (status) {
    fv_tensor_release(dinp);
    return status;
  }
  gin[0] = dinp;
  return FV_OK;
}

/* Runs pooling op on input into (B, C, oh, ow); with_indices for the max forms. */
static int pool(fv_tensor **out, int op, const fv_tensor *input, int64_t oh, int64_t ow, const int64_t *args,
                int nargs, int with_indices) {
  const char *name = fv_op_name(op);
  fv_tensor *ci = NULL, *o = NULL, *idx = NULL;
  int64_t shape[4] = {input->sizes[0], input->sizes[1], oh, ow};
  int status = fv_contiguous(&ci, input);
  if (!status) status = fv_alloc_like_shape(&o, 4, shape, input->scalar_type, input->device_type);
  if (!status && with_indices) status = fv_alloc_like_shape(&idx, 4, shape, FV_INT64, input->device_type);
  if (!status) {
    fv_nn_call call = {.op = op};
    call.t[0] = o;
    call.t[1] = with_indices ? idx : ci;
    call.t[2] = with_indices ? ci : NULL;
    for (int k = 0; k < nargs; k++) call.i[k] = args[k];
    status = fv_nn_run(&call, o->device_type, o->scalar_type, 0);
  }
  if (!status) {
    const fv_tensor *saved[1] = {idx};
    fv_node *node;
    status = fv_record(&node, o, name, pool_backward, 1, &input, 1, saved);
    if (node) {
      for (int k = 0; k < nargs; k++) node->iarg[k] = args[k];
      node->iarg[9] = op;
    }
  }
  fv_tensor_release(ci);
  fv_tensor_release(idx);
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  *out = o;
  return FV_OK;
}

static int check_window(const char *op, const fv_tensor *input, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                        int64_t ph, int64_t pw, int64_t dh, int64_t dw, int ceil_mode, int64_t *oh, int64_t *ow) {
  FV_TRY(fv_nn_check(op, "input", input, 4, -1, -1));
  if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || ph < 0 || pw < 0)
    return fv_fail(FV_ERR_ARGUMENT, "%s: invalid kernel %lldx%lld, stride (%lld, %lld), padding (%lld, %lld) or "
                   "dilation (%lld, %lld)", op, (long long)kh, (long long)kw, (long long)sh, (long long)sw,
                   (long long)ph, (long long)pw, (long long)dh, (long long)dw);
  if (2 * ph > kh || 2 * pw > kw)
    return fv_fail(FV_ERR_ARGUMENT, "%s: padding (%lld, %lld) must be at most half the kernel %lldx%lld", op,
                   (long long)ph, (long long)pw, (long long)kh, (long long)kw);
  *oh = pool_out(input->sizes[2], kh, sh, ph, dh, ceil_mode);
  *ow = pool_out(input->sizes[3], kw, sw, pw, dw, ceil_mode);
  if (*oh < 1 || *ow < 1)
    return fv_fail(FV_ERR_SHAPE, "%s: input %s is too small for the %lldx%lld window", op, fv_shape_of(input),
                   (long long)kh, (long long)kw);
  return FV_OK;
}

int fv_max_pool2d(fv_tensor **out, const fv_tensor *input, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                  int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                  int ceil_mode) {
  int64_t oh, ow;
  FV_TRY(check_window("max_pool2d", input, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                      dilation_w, ceil_mode, &oh, &ow));
  int64_t args[8] = {kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w};
  return pool(out, FV_OP_MAX_POOL2D, input, oh, ow, args, 8, 1);
}

int fv_avg_pool2d(fv_tensor **out, const fv_tensor *input, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                  int64_t stride_w, int64_t pad_h, int64_t pad_w, int ceil_mode, int count_include_pad) {
  int64_t oh, ow;
  FV_TRY(check_window("avg_pool2d", input, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, 1, 1, ceil_mode,
                      &oh, &ow));
  int64_t args[7] = {kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, count_include_pad};
  return pool(out, FV_OP_AVG_POOL2D, input, oh, ow, args, 7, 0);
}

static int check_adaptive(const char *op, const fv_tensor *input, int64_t oh, int64_t ow) {
  FV_TRY(fv_nn_check(op, "input", input, 4, -1, -1));
  if (oh < 1 || ow < 1) return fv_fail(FV_ERR_ARGUMENT, "%s: output size %lldx%lld", op, (long long)oh, (long long)ow);
  if (input->sizes[2] < 1 || input->sizes[3] < 1)
    return fv_fail(FV_ERR_SHAPE, "%s: input %s has an empty plane", op, fv_shape_of(input));
  return FV_OK;
}

int fv_adaptive_avg_pool2d(fv_tensor **out, const fv_tensor *input, int64_t out_h, int64_t out_w) {
  FV_TRY(check_adaptive("adaptive_avg_pool2d", input, out_h, out_w));
  return pool(out, FV_OP_ADAPTIVE_AVG_POOL2D, input, out_h, out_w, NULL, 0, 0);
}

int fv_adaptive_max_pool2d(fv_tensor **out, const fv_tensor *input, int64_t out_h, int64_t out_w) {
  FV_TRY(check_adaptive("adaptive_max_pool2d", input, out_h, out_w));
  return pool(out, FV_OP_ADAPTIVE_MAX_POOL2D, input, out_h, out_w, NULL, 0, 1);
}
