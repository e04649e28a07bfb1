/* nn/nam.c: fused NAM (non-local) attention, out = softmax(scale q k^T) v per image,
 * with its backward, on the backend's NAM kernels (cpu/nam.c): the attention matrix is
 * never stored; the forward keeps the per-row log-sum-exp for the backward. */
#include <math.h>

#include "nn.h"

/* saved = {q, k, v, out, lse} (contiguous); darg[0] = scale */
static int nam_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  fv_tensor *gc = NULL, *grads[3] = {NULL, NULL, NULL};
  int status = fv_contiguous(&gc, g);
  for (int k = 0; k < 3 && !status; k++) status = fv_nn_grad_buffer(node, k, &grads[k]);
  if (!status) {
    fv_nn_call call = {.op = FV_OP_NAM,
                       .t = {grads[0], grads[1], grads[2], gc, node->saved[0], node->saved[1], node->saved[2],
                             node->saved[3], node->saved[4]},
                       .d = {node->darg[0]}};
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

int fv_nam_attention(fv_tensor **out, const fv_tensor *q, const fv_tensor *k, const fv_tensor *v, double scale) {
  const char *op = "nam_attention";
  FV_TRY(fv_nn_check(op, "q", q, 3, -1, -1));
  FV_TRY(fv_nn_check(op, "k", k, 3, q->scalar_type, q->device_type));
  FV_TRY(fv_nn_check(op, "v", v, 3, q->scalar_type, q->device_type));
  const int64_t B = q->sizes[0], N = q->sizes[1], M = k->sizes[1], Cv = v->sizes[2];
  if (k->sizes[0] != B || k->sizes[2] != q->sizes[2])
    return fv_fail(FV_ERR_SHAPE, "nam_attention: q %s and k %s do not fit (q (B, N, D) and k (B, M, D) share B and D)",
                   fv_shape_of(q), fv_shape_of(k));
  if (v->sizes[0] != B || v->sizes[1] != M)
    return fv_fail(FV_ERR_SHAPE, "nam_attention: k %s and v %s do not fit (k (B, M, D) and v (B, M, Cv) share B and M)",
                   fv_shape_of(k), fv_shape_of(v));
  if (!isfinite(scale)) return fv_fail(FV_ERR_ARGUMENT, "nam_attention: scale %g is not finite", scale);
  if (B * N > 0 && M > 0 && (q->sizes[2] > INT32_MAX || Cv > INT32_MAX || M > INT32_MAX))
    return fv_fail(FV_ERR_SHAPE, "nam_attention: sizes of q %s, k %s or v %s are too large for BLAS", fv_shape_of(q),
                   fv_shape_of(k), fv_shape_of(v));
  fv_tensor *cq = NULL, *ck = NULL, *cv = NULL, *o = NULL, *lse = NULL;
  int status = fv_nn_contiguous(&cq, q);
  if (!status) status = fv_nn_contiguous(&ck, k);
  if (!status) status = fv_nn_contiguous(&cv, v);
  int64_t shape[3] = {B, N, Cv};
  if (!status) status = fv_alloc_like_shape(&o, 3, shape, q->scalar_type, q->device_type);
  if (!status) status = fv_alloc_like_shape(&lse, 2, shape, q->scalar_type, q->device_type);
  if (!status) {
    fv_nn_call call = {.op = FV_OP_NAM, .t = {o, lse, cq, ck, cv}, .d = {scale}};
    status = fv_nn_run(&call, o->device_type, o->scalar_type, 0);
  }
  if (!status) {
    const fv_tensor *inputs[3] = {q, k, v}, *saved[5] = {cq, ck, cv, o, lse};
    fv_node *node;
    status = fv_record(&node, o, op, nam_backward, 3, inputs, 5, saved);
    if (node) node->darg[0] = scale;
  }
  fv_tensor *temps[4] = {cq, ck, cv, lse};
  fv_nn_release(4, temps);
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  *out = o;
  return FV_OK;
}
