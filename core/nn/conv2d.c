/* nn/conv2d.c: 2-D convolution (stride, padding, dilation, groups) with its backward,
 * on the backend's conv2d kernels. */
#include "nn.h"

/* saved = {input, weight} (contiguous); iarg = sh sw ph pw dh dw groups */
static int conv2d_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  fv_tensor *gc = NULL, *grads[3] = {NULL, NULL, NULL};
  int status = fv_contiguous(&gc, g);
  for (int k = 0; k < 3 && !status; k++) status = fv_nn_grad_buffer(node, k, &grads[k]);
  if (!status) {
    fv_nn_call call = {.op = FV_OP_CONV2D, .t = {grads[0], grads[1], grads[2], gc, node->saved[0], node->saved[1]}};
    for (int k = 0; k < 7; k++) call.i[k] = node->iarg[k];
    status = fv_nn_run(&call, gc->device_type, gc->scalar_type, 1);
  }
  fv_tensor_release(gc);
  if (status) {
    fv_nn_release(3, grads);
    return status;
  }
  for (int k = 0; k < 3; k++) gin[k] = grads[k];
  return FV_OK;
}

int fv_conv2d(fv_tensor **out, const fv_tensor *input, const fv_tensor *weight, const fv_tensor *bias,
              int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
              int64_t dilation_w, int64_t groups) {
  const char *op = "conv2d";
  FV_TRY(fv_nn_check(op, "input", input, 4, -1, -1));
  FV_TRY(fv_nn_check(op, "weight", weight, 4, input->scalar_type, input->device_type));
  if (bias) FV_TRY(fv_nn_check(op, "bias", bias, 1, input->scalar_type, input->device_type));
  if (stride_h < 1 || stride_w < 1 || pad_h < 0 || pad_w < 0 || dilation_h < 1 || dilation_w < 1 || groups < 1)
    return fv_fail(FV_ERR_ARGUMENT, "conv2d: invalid stride (%lld, %lld), padding (%lld, %lld), dilation (%lld, "
                   "%lld) or groups %lld", (long long)stride_h, (long long)stride_w, (long long)pad_h,
                   (long long)pad_w, (long long)dilation_h, (long long)dilation_w, (long long)groups);
  int64_t B = input->sizes[0], C = input->sizes[1], H = input->sizes[2], W = input->sizes[3];
  int64_t CO = weight->sizes[0], KH = weight->sizes[2], KW = weight->sizes[3];
  if (C % groups || CO % groups || weight->sizes[1] != C / groups)
    return fv_fail(FV_ERR_SHAPE, "conv2d: input %s and weight %s do not fit with %lld groups (weight must be "
                   "out x in/groups x kh x kw)", fv_shape_of(input), fv_shape_of(weight), (long long)groups);
  if (bias && bias->sizes[0] != CO)
    return fv_fail(FV_ERR_SHAPE, "conv2d: bias %s does not match %lld output channels", fv_shape_of(bias),
                   (long long)CO);
  int64_t OH = (H + 2 * pad_h - dilation_h * (KH - 1) - 1) / stride_h + 1;
  int64_t OW = (W + 2 * pad_w - dilation_w * (KW - 1) - 1) / stride_w + 1;
  if (H + 2 * pad_h < dilation_h * (KH - 1) + 1 || W + 2 * pad_w < dilation_w * (KW - 1) + 1 || OH < 1 || OW < 1)
    return fv_fail(FV_ERR_SHAPE, "conv2d: input %s is smaller than the %lldx%lld kernel (dilation %lld, %lld, "
                   "padding %lld, %lld)", fv_shape_of(input), (long long)KH, (long long)KW, (long long)dilation_h,
                   (long long)dilation_w, (long long)pad_h, (long long)pad_w);
  fv_tensor *ci = NULL, *cw = NULL, *cb = NULL, *o = NULL;
  int status = fv_nn_contiguous(&ci, input);
  if (!status) status = fv_nn_contiguous(&cw, weight);
  if (!status) status = fv_nn_contiguous(&cb, bias);
  int64_t shape[4] = {B, CO, OH, OW};
  if (!status) status = fv_alloc_like_shape(&o, 4, shape, input->scalar_type, input->device_type);
  int64_t params[7] = {stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups};
  if (!status) {
    fv_nn_call call = {.op = FV_OP_CONV2D, .t = {o, ci, cw, cb}};
    for (int k = 0; k < 7; k++) call.i[k] = params[k];
    status = fv_nn_run(&call, o->device_type, o->scalar_type, 0);
  }
  if (!status) {
    const fv_tensor *inputs[3] = {input, weight, bias}, *saved[2] = {ci, cw};
    fv_node *node;
    status = fv_record(&node, o, op, conv2d_backward, 3, inputs, 2, saved);
    if (node)
      for (int k = 0; k < 7; k++) node->iarg[k] = params[k];
  }
  fv_tensor *temps[3] = {ci, cw, cb};
  fv_nn_release(3, temps);
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  *out = o;
  return FV_OK;
}
