/* nn/batch_norm.c: batch normalisation over (B, C, ...) per channel: batch statistics
 * and a running-statistics update when training, running statistics otherwise. */
#include "nn.h"

/* saved = {input, weight, running_mean, running_var, save_mean, save_invstd} (contiguous);
 * iarg[0] = training, darg[1] = eps */
static int batch_norm_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  fv_tensor *gc = NULL, *grads[3] = {NULL, NULL, NULL};
  int status = fv_contiguous(&gc, g);
  for (int k = 0; k < 3 && !status; k++) status = fv_nn_grad_buffer(node, k, &grads[k]);
  if (!status) {
    fv_tensor **s = node->saved;
    fv_nn_call call = {.op = FV_OP_BATCH_NORM,
                       .t = {grads[0], grads[1], grads[2], gc, s[0], s[1], s[2], s[3], s[4], s[5]},
                       .i = {node->iarg[0]},
                       .d = {0.0, node->darg[1]}};
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

static int check_channel_vector(const char *what, const fv_tensor *t, const fv_tensor *input, int64_t C) {
  if (!t) return FV_OK;
  FV_TRY(fv_nn_check("batch_norm", what, t, 1, input->scalar_type, input->device_type));
  if (t->sizes[0] != C)
    return fv_fail(FV_ERR_SHAPE, "batch_norm: %s %s does not match the %lld channels of input %s", what,
                   fv_shape_of(t), (long long)C, fv_shape_of(input));
  if (!fv_tensor_is_contiguous(t))
    return fv_fail(FV_ERR_ARGUMENT, "batch_norm: %s must be contiguous", what);
  return FV_OK;
}

int fv_batch_norm(fv_tensor **out, const fv_tensor *input, const fv_tensor *weight, const fv_tensor *bias,
                  fv_tensor *running_mean, fv_tensor *running_var, int training, double momentum, double eps) {
  const char *op = "batch_norm";
  FV_TRY(fv_nn_check(op, "input", input, -1, -1, -1));
  if (input->ndim < 2)
    return fv_fail(FV_ERR_SHAPE, "batch_norm: input %s must be (B, C, ...)", fv_shape_of(input));
  int64_t C = input->sizes[1], count = fv_tensor_numel(input) / (C ? C : 1);
  FV_TRY(check_channel_vector("weight", weight, input, C));
  FV_TRY(check_channel_vector("bias", bias, input, C));
  FV_TRY(check_channel_vector("running_mean", running_mean, input, C));
  FV_TRY(check_channel_vector("running_var", running_var, input, C));
  if (!training && (!running_mean || !running_var))
    return fv_fail(FV_ERR_ARGUMENT, "batch_norm: evaluation needs running_mean and running_var");
  if (training && count <= 1)
    return fv_fail(FV_ERR_SHAPE, "batch_norm: training needs more than one value per channel, input is %s",
                   fv_shape_of(input));
  if (!(eps > 0)) return fv_fail(FV_ERR_ARGUMENT, "batch_norm: eps must be positive, got %g", eps);
  fv_tensor *ci = NULL, *cw = NULL, *cb = NULL, *o = NULL, *mean = NULL, *invstd = NULL;
  int status = fv_nn_contiguous(&ci, input);
  if (!status) status = fv_nn_contiguous(&cw, weight);
  if (!status) status = fv_nn_contiguous(&cb, bias);
  if (!status) status = fv_alloc_like_shape(&o, input->ndim, input->sizes, input->scalar_type, input->device_type);
  if (!status && training) status = fv_alloc_like_shape(&mean, 1, &C, input->scalar_type, input->device_type);
  if (!status && training) status = fv_alloc_like_shape(&invstd, 1, &C, input->scalar_type, input->device_type);
  if (!status) {
    fv_nn_call call = {.op = FV_OP_BATCH_NORM,
                       .t = {o, mean, invstd, running_mean, running_var, ci, cw, cb},
                       .i = {training},
                       .d = {momentum, eps}};
    status = fv_nn_run(&call, o->device_type, o->scalar_type, 0);
  }
  if (!status) {
    const fv_tensor *inputs[3] = {input, weight, bias};
    const fv_tensor *saved[6] = {ci, cw, training ? NULL : running_mean, training ? NULL : running_var, mean, invstd};
    fv_node *node;
    status = fv_record(&node, o, op, batch_norm_backward, 3, inputs, 6, saved);
    if (node) {
      node->iarg[0] = training;
      node->darg[1] = eps;
    }
  }
  fv_tensor *temps[5] = {ci, cw, cb, mean, invstd};
  fv_nn_release(5, temps);
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  *out = o;
  return FV_OK;
}
