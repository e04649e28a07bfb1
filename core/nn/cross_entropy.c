/* nn/cross_entropy.c: cross-entropy from logits and class indices, with optional class
 * weights and mean or sum reduction (PyTorch's F.cross_entropy). */
#include "nn.h"

/* saved = {logits, lse, target, weight}; iarg = {reduction, index_base} */
static int cross_entropy_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  fv_tensor *gc = NULL, *dlogits = NULL;
  int status = fv_contiguous(&gc, g);
  if (!status) status = fv_nn_grad_buffer(node, 0, &dlogits);
  if (!status && dlogits) {
    fv_tensor **s = node->saved;
    fv_nn_call call = {.op = FV_OP_CROSS_ENTROPY, .t = {dlogits, gc, s[0], s[1], s[2], s[3]},
                       .i = {node->iarg[0], node->iarg[1]}};
    status = fv_nn_run(&call, gc->device_type, gc->scalar_type, 1);
  }
  fv_tensor_release(gc);
  if (status) {
    fv_tensor_release(dlogits);
    return status;
  }
  gin[0] = dlogits;
  return FV_OK;
}

int fv_cross_entropy(fv_tensor **out, const fv_tensor *logits, const fv_tensor *target, const fv_tensor *weight,
                     int reduction, int index_base) {
  const char *op = "cross_entropy";
  FV_TRY(fv_nn_check(op, "logits", logits, 2, -1, -1));
  FV_TRY(fv_nn_check(op, "target", target, 1, FV_INT64, logits->device_type));
  int64_t B = logits->sizes[0], K = logits->sizes[1];
  if (target->sizes[0] != B)
    return fv_fail(FV_ERR_SHAPE, "cross_entropy: target %s does not match logits %s (one class per row)",
                   fv_shape_of(target), fv_shape_of(logits));
  if (weight) {
    FV_TRY(fv_nn_check(op, "weight", weight, 1, logits->scalar_type, logits->device_type));
    if (weight->sizes[0] != K)
      return fv_fail(FV_ERR_SHAPE, "cross_entropy: weight %s does not match %lld classes", fv_shape_of(weight),
                     (long long)K);
  }
  if (reduction < 0 || reduction > 2)
    return fv_fail(FV_ERR_ARGUMENT, "cross_entropy: reduction %d (0 none, 1 mean, 2 sum)", reduction);
  fv_tensor *cl = NULL, *ct = NULL, *cw = NULL, *lse = NULL, *o = NULL;
  int status = fv_contiguous(&cl, logits);
  if (!status) status = fv_contiguous(&ct, target);
  if (!status) status = fv_nn_contiguous(&cw, weight);
  if (!status) status = fv_alloc_like_shape(&lse, 1, &B, logits->scalar_type, logits->device_type);
  if (!status) status = fv_alloc_like_shape(&o, reduction == 0 ? 1 : 0, &B, logits->scalar_type, logits->device_type);
  if (!status) {
    fv_nn_call call = {.op = FV_OP_CROSS_ENTROPY, .t = {o, lse, cl, ct, cw}, .i = {reduction, index_base}};
    status = fv_nn_run(&call, o->device_type, o->scalar_type, 0);
  }
  if (!status) {
    const fv_tensor *inputs[1] = {logits}, *saved[4] = {cl, lse, ct, cw};
    fv_node *node;
    status = fv_record(&node, o, op, cross_entropy_backward, 1, inputs, 4, saved);
    if (node) {
      node->iarg[0] = reduction;
      node->iarg[1] = index_base;
    }
  }
  fv_tensor *temps[4] = {cl, ct, cw, lse};
  fv_nn_release(4, temps);
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  *out = o;
  return FV_OK;
}
