/* matmul.c: front end of matmul with numpy's rules: 1-D operands are promoted and the
 * added dimension removed afterwards; batch dimensions broadcast. */
#include "internal.h"

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
  *out = o;
  return FV_OK;
}
