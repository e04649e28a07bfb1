/* nn/criss_cross.c: criss-cross attention (CCNet) with its backward, on the backend's
 * kernels (cpu/criss_cross.c): each position attends to its row and its column (itself
 * once) under one softmax; out (B, Cv, H, W). */
#include "nn.h"

/* saved = {query, key, value} (contiguous) */
static int criss_cross_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  fv_tensor *gc = NULL, *grads[3] = {NULL, NULL, NULL};
  int status = fv_contiguous(&gc, g);
  for (int k = 0; k < 3 && !status; k++) status = fv_nn_grad_buffer(node, k, &grads[k]);
  if (!status) {
    fv_nn_call call = {.op = FV_OP_CRISS_CROSS,
                       .t = {grads[0], grads[1], grads[2], gc, node->saved[0], node->saved[1], node->saved[2]}};
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

int fv_criss_cross_attention(fv_tensor **out, const fv_tensor *query, const fv_tensor *key,
                             const fv_tensor *value) {
  const char *op = "criss_cross_attention";
  FV_TRY(fv_nn_check(op, "query", query, 4, -1, -1));
  FV_TRY(fv_nn_check(op, "key", key, 4, query->scalar_type, query->device_type));
  FV_TRY(fv_nn_check(op, "value", value, 4, query->scalar_type, query->device_type));
  for (int d = 0; d < 4; d++)
    if (key->sizes[d] != query->sizes[d])
      return fv_fail(FV_ERR_SHAPE, "criss_cross_attention: query %s and key %s must have the same shape (B, Cq, H, W)",
                     fv_shape_of(query), fv_shape_of(key));
  if (value->sizes[0] != query->sizes[0] || value->sizes[2] != query->sizes[2] || value->sizes[3] != query->sizes[3])
    return fv_fail(FV_ERR_SHAPE, "criss_cross_attention: query %s and value %s do not fit (value (B, Cv, H, W) "
                   "shares B, H and W)", fv_shape_of(query), fv_shape_of(value));
  fv_tensor *cq = NULL, *ck = NULL, *cv = NULL, *o = NULL;
  int status = fv_nn_contiguous(&cq, query);
  if (!status) status = fv_nn_contiguous(&ck, key);
  if (!status) status = fv_nn_contiguous(&cv, value);
  int64_t shape[4] = {query->sizes[0], value->sizes[1], query->sizes[2], query->sizes[3]};
  if (!status) status = fv_alloc_like_shape(&o, 4, shape, query->scalar_type, query->device_type);
  if (!status) {
    fv_nn_call call = {.op = FV_OP_CRISS_CROSS, .t = {o, cq, ck, cv}};
    status = fv_nn_run(&call, o->device_type, o->scalar_type, 0);
  }
  if (!status) {
    const fv_tensor *inputs[3] = {query, key, value}, *saved[3] = {cq, ck, cv};
    fv_node *node;
    status = fv_record(&node, o, op, criss_cross_backward, 3, inputs, 3, saved);
  }
  fv_tensor *temps[3] = {cq, ck, cv};
  fv_nn_release(3, temps);
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  *out = o;
  return FV_OK;
}
