/* nn/resample.c: ops that map one NCHW-like input to one output through a kernel pair
 * with no saved state but the forward output: bilinear interpolation, channel shuffle,
 * softmax and log_softmax (over any dim, moved last for the kernel). */
#include "nn.h"

/* saved = {out} for softmax forms; iarg[0] = op, iarg[1..] = the kernel's arguments */
static int simple_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  fv_tensor *gc = NULL, *dinp = NULL;
  int status = fv_contiguous(&gc, g);
  if (!status) status = fv_nn_grad_buffer(node, 0, &dinp);
  if (!status && dinp) {
    fv_nn_call call = {.op = (int)node->iarg[0], .t = {dinp, gc, node->saved[0]}, .i = {node->iarg[1]}};
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

/* op on contiguous input into a new tensor of shape (ndim, shape); arg is the kernel's
 * integer argument; save_out keeps the output for backward. */
static int run_simple(fv_tensor **out, int op, const fv_tensor *input, int ndim, const int64_t *shape, int64_t arg,
                      int save_out) {
  fv_tensor *ci = NULL, *o = NULL;
  int status = fv_contiguous(&ci, input);
  if (!status) status = fv_alloc_like_shape(&o, ndim, shape, input->scalar_type, input->device_type);
  if (!status) {
    fv_nn_call call = {.op = op, .t = {o, ci}, .i = {arg}};
    status = fv_nn_run(&call, o->device_type, o->scalar_type, 0);
  }
  if (!status) {
    const fv_tensor *saved[1] = {save_out ? o : NULL};
    fv_node *node;
    status = fv_record(&node, o, fv_op_name(op), simple_backward, 1, &input, 1, saved);
    if (node) {
      node->iarg[0] = op;
      node->iarg[1] = arg;
    }
  }
  fv_tensor_release(ci);
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  *out = o;
  return FV_OK;
}

int fv_upsample_bilinear(fv_tensor **out, const fv_tensor *input, int64_t out_h, int64_t out_w, int align_corners) {
  FV_TRY(fv_nn_check("upsample_bilinear", "input", input, 4, -1, -1));
  if (out_h < 1 || out_w < 1 || input->sizes[2] < 1 || input->sizes[3] < 1)
    return fv_fail(FV_ERR_SHAPE, "upsample_bilinear: cannot resize %s to %lldx%lld", fv_shape_of(input),
                   (long long)out_h, (long long)out_w);
  int64_t shape[4] = {input->sizes[0], input->sizes[1], out_h, out_w};
  return run_simple(out, FV_OP_UPSAMPLE_BILINEAR, input, 4, shape, align_corners ? 1 : 0, 0);
}

int fv_channel_shuffle(fv_tensor **out, const fv_tensor *input, int64_t groups) {
  FV_TRY(fv_nn_check("channel_shuffle", "input", input, -1, -1, -1));
  if (input->ndim < 2 || groups < 1 || input->sizes[1] % groups)
    return fv_fail(FV_ERR_SHAPE, "channel_shuffle: %lld groups do not divide the channels of input %s",
                   (long long)groups, fv_shape_of(input));
  return run_simple(out, FV_OP_CHANNEL_SHUFFLE, input, input->ndim, input->sizes, groups, 0);
}

/* softmax forms: the kernel works on the last dim; another dim is swapped there first
 * (the swaps are views recorded by autograd). */
static int softmax_any(fv_tensor **out, int op, const fv_tensor *input, int dim) {
  const char *name = fv_op_name(op);
  FV_TRY(fv_nn_check(name, "input", input, -1, -1, -1));
  int d;
  FV_TRY(fv_wrap_dim(name, dim, input->ndim, &d));
  if (d == input->ndim - 1) return run_simple(out, op, input, input->ndim, input->sizes, 0, 1);
  fv_tensor *moved, *result;
  FV_TRY(fv_transpose(&moved, input, d, -1));
  int status = run_simple(&result, op, moved, moved->ndim, moved->sizes, 0, 1);
  fv_tensor_release(moved);
  if (status) return status;
  status = fv_transpose(out, result, d, -1);
  fv_tensor_release(result);
  return status;
}

int fv_softmax(fv_tensor **out, const fv_tensor *input, int dim) {
  return softmax_any(out, FV_OP_SOFTMAX, input, dim);
}

int fv_log_softmax(fv_tensor **out, const fv_tensor *input, int dim) {
  return softmax_any(out, FV_OP_LOG_SOFTMAX, input, dim);
}
