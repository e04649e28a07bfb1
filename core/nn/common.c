/* nn/common.c: helpers shared by the neural-network front ends (see nn.h). */
#include "nn.h"

int fv_nn_check(const char *op, const char *what, const fv_tensor *t, int ndim, int dtype, int device) {
  if (!t) return fv_fail(FV_ERR_ARGUMENT, "%s: %s is missing", op, what);
  if (!t->storage) return fv_fail(FV_ERR_FREED, "%s: %s %s was freed by :free()", op, what, fv_shape_of(t));
  if (dtype < 0 && t->scalar_type != FV_FLOAT32 && t->scalar_type != FV_FLOAT64)
    return fv_fail(FV_ERR_DTYPE, "%s: %s has dtype %s (float32 or float64 expected)", op, what,
                   fv_dtype_name(t->scalar_type));
  if (dtype >= 0 && t->scalar_type != dtype)
    return fv_fail(FV_ERR_DTYPE, "%s: %s has dtype %s, expected %s", op, what, fv_dtype_name(t->scalar_type),
                   fv_dtype_name(dtype));
  if (ndim >= 0 && t->ndim != ndim)
    return fv_fail(FV_ERR_SHAPE, "%s: %s must have %d dimensions, got %s", op, what, ndim, fv_shape_of(t));
  if (device >= 0 && t->device_type != device)
    return fv_fail(FV_ERR_DEVICE, "%s: %s is on %s, expected %s", op, what, fv_device_name(t->device_type),
                   fv_device_name(device));
  return FV_OK;
}

int fv_nn_contiguous(fv_tensor **out, const fv_tensor *t) {
  if (!t) {
    *out = NULL;
    return FV_OK;
  }
  return fv_contiguous(out, t);
}

int fv_nn_run(const fv_nn_call *call, int device, int dtype, int backward) {
  const char *name = fv_op_name(call->op);
  const fv_backend *be = fv_backend_for(name, device);
  if (!be) return fv_last_status();
  FV_TRY(fv_backend_require(be, call->op, dtype));
  if (!be->nn_forward || !be->nn_backward)
    return fv_fail(FV_ERR_DEVICE, "%s: the %s backend has no neural-network kernels", name, be->name);
  return backward ? be->nn_backward(call) : be->nn_forward(call);
}

int fv_nn_grad_buffer(const fv_node *node, int i, fv_tensor **out) {
  *out = NULL;
  if (!fv_node_needs(node, i)) return FV_OK;
  const fv_tensor *in = &node->inputs[i];
  return fv_zeros(out, in->ndim, in->sizes, in->scalar_type, in->device_type);
}

void fv_nn_release(int n, fv_tensor **list) {
  for (int k = 0; k < n; k++) fv_tensor_release(list[k]);
}
