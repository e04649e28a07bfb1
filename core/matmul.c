/* matmul.c: matmul with numpy's rules (1-D operands are promoted and the added
 * dimension removed afterwards; batch dimensions broadcast): front end and backward. */
#include "internal.h"

/* t as a matrix operand: a 1-D t becomes (1, k) when it is the left operand, (k, 1)
 * when it is the right one; a view sharing t's storage. */
static fv_tensor *promote(const fv_tensor *t, int left) {
  fv_tensor *v;
  if (t->ndim != 1) return fv_ref(t);
  return fv_unsqueeze(&v, t, left ? 0 : 1) ? NULL : v;
}

static fv_tensor *swap_last(const fv_tensor *t) {
  fv_tensor *v;
  return t && !fv_transpose(&v, t, -1, -2) ? v : NULL;
}

/* The gradient of a promoted operand, summed over broadcast batches and shaped as the
 * original operand (meta). */
static fv_tensor *shape_back(fv_tensor *g2, const fv_tensor *promoted, const fv_tensor *meta) {
  fv_tensor *s = promoted ? fv_take_sum_to(g2, promoted) : NULL, *r;
  if (!promoted) fv_tensor_release(g2);
  if (!s) return NULL;
  int status = fv_reshape(&r, s, meta->ndim, meta->sizes);
  fv_tensor_release(s);
  return status ? NULL : r;
}

/* saved = {a, b}: ga = g @ b^T, gb = a^T @ g, on promoted operands */
static int matmul_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  const fv_tensor *a = node->saved[0], *b = node->saved[1];
  fv_tensor *a2 = promote(a, 1), *b2 = promote(b, 0), *g2 = fv_ref(g), *tmp;
  if (a->ndim == 1 && g2) {
    tmp = g2;
    g2 = fv_unsqueeze(&g2, tmp, tmp->ndim - 1) ? NULL : g2;
    fv_tensor_release(tmp);
  }
  if (b->ndim == 1 && g2) {
    tmp = g2;
    g2 = fv_unsqueeze(&g2, tmp, tmp->ndim) ? NULL : g2;
    fv_tensor_release(tmp);
  }
  if (fv_node_needs(node, 0)) {
    fv_tensor *bt = swap_last(b2);
    gin[0] = shape_back(fv_op_matmul(g2, bt), a2, &node->inputs[0]);
    fv_tensor_release(bt);
  }
  if (fv_node_needs(node, 1)) {
    fv_tensor *at = swap_last(a2);
    gin[1] = shape_back(fv_op_matmul(at, g2), b2, &node->inputs[1]);
    fv_tensor_release(at);
  }
  fv_tensor_release(a2);
  fv_tensor_release(b2);
  fv_tensor_release(g2);
  return fv_grads_ready(node, gin);
}

int fv_matmul(fv_tensor **out, const fv_tensor *a, const fv_tensor *b) {
  FV_TRY(fv_check_float("matmul", a));
  FV_TRY(fv_check_float("matmul", b));
  FV_TRY(fv_check_same_device("matmul", a, b));
  if (a->scalar_type != b->scalar_type)
    return fv_fail(FV_ERR_DTYPE, "matmul: dtypes differ (%s %s and %s %s)", fv_dtype_name(a->scalar_type), fv_shape_of(a),
                   fv_dtype_name(b->scalar_type), fv_shape_of(b));
  if (a->ndim == 0 || b->ndim == 0)
    return fv_fail(FV_ERR_SHAPE, "matmul: operands must have at least one dimension (got %s and %s)", fv_shape_of(a),
                   fv_shape_of(b));
  /* promote 1-D operands: a (k) -> (1, k), b (k) -> (k, 1) */
  fv_tensor pa = *a, pb = *b;
  if (a->ndim == 1) {
    pa.ndim = 2;
    pa.sizes[0] = 1; pa.strides[0] = a->sizes[0] * a->strides[0];
    pa.sizes[1] = a->sizes[0]; pa.strides[1] = a->strides[0];
  }
  if (b->ndim == 1) {
    pb.ndim = 2;
    pb.sizes[0] = b->sizes[0]; pb.strides[0] = b->strides[0];
    pb.sizes[1] = 1; pb.strides[1] = 1;
  }
  int64_t m = pa.sizes[pa.ndim - 2], k = pa.sizes[pa.ndim - 1], n = pb.sizes[pb.ndim - 1];
  if (pb.sizes[pb.ndim - 2] != k)
    return fv_fail(FV_ERR_SHAPE, "matmul: inner dimensions differ: %s @ %s (%lld vs %lld)", fv_shape_of(a),
                   fv_shape_of(b), (long long)k, (long long)pb.sizes[pb.ndim - 2]);
  /* broadcast the batch dimensions */
  fv_tensor ba = pa, bb = pb;
  ba.ndim -= 2;
  bb.ndim -= 2;
  int nbatch;
  int64_t shape[FV_MAX_DIMS];
  FV_TRY(fv_broadcast_shapes("matmul", &ba, &bb, &nbatch, shape));
  if (nbatch + 2 > FV_MAX_DIMS) return fv_fail(FV_ERR_SHAPE, "matmul: too many batch dimensions");
  const fv_backend *be = fv_backend_for("matmul", a->device_type);
  if (!be) return fv_last_status();
  FV_TRY(fv_backend_require(be, FV_OP_MATMUL, a->scalar_type));
  int64_t full[FV_MAX_DIMS];
  for (int d = 0; d < nbatch; d++) full[d] = shape[d];
  fv_tensor va, vb;
  full[nbatch] = m; full[nbatch + 1] = k;
  fv_broadcast_view(&va, &pa, nbatch + 2, full);
  full[nbatch] = k; full[nbatch + 1] = n;
  fv_broadcast_view(&vb, &pb, nbatch + 2, full);
  full[nbatch] = m; full[nbatch + 1] = n;
  fv_tensor *o;
  FV_TRY(fv_alloc_like_shape(&o, nbatch + 2, full, a->scalar_type, a->device_type));
  int status = be->matmul(o, &va, &vb);
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  /* drop the promoted dimensions (o is contiguous, so removing a size-1 dim keeps it valid) */
  if (a->ndim == 1) {
    for (int d = nbatch; d < o->ndim - 1; d++) { o->sizes[d] = o->sizes[d + 1]; o->strides[d] = o->strides[d + 1]; }
    o->ndim--;
  }
  if (b->ndim == 1) o->ndim--;
  const fv_tensor *inputs[2] = {a, b};
  fv_node *node;
  status = fv_record(&node, o, "matmul", matmul_backward, 2, inputs, 2, inputs);
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  *out = o;
  return FV_OK;
}

fv_tensor *fv_op_matmul(const fv_tensor *a, const fv_tensor *b) {
  fv_tensor *o;
  return a && b && !fv_matmul(&o, a, b) ? o : NULL;
}
