/* elementwise.c: front ends of the elementwise ops. They check dtypes, devices and
 * broadcasting, allocate the output and hand broadcast views to the device's kernels. */
#include "internal.h"

static int is_binary(int op) { return op >= FV_OP_ADD && op <= FV_OP_GE; }
static int is_unary(int op) { return op >= FV_OP_NEG && op <= FV_OP_TANH; }

int fv_binary(fv_tensor **out, int op, const fv_tensor *a, const fv_tensor *b) {
  if (!is_binary(op)) return fv_fail(FV_ERR_ARGUMENT, "binary: %s is not a binary op", fv_op_name(op));
  const char *name = fv_op_name(op);
  FV_TRY(fv_check_float(name, a));
  FV_TRY(fv_check_float(name, b));
  FV_TRY(fv_check_same_device(name, a, b));
  if (a->scalar_type != b->scalar_type)
    return fv_fail(FV_ERR_DTYPE, "%s: dtypes differ (%s %s and %s %s); convert one first", name,
                   fv_dtype_name(a->scalar_type), fv_shape_of(a), fv_dtype_name(b->scalar_type), fv_shape_of(b));
  int ndim;
  int64_t shape[FV_MAX_DIMS];
  FV_TRY(fv_broadcast_shapes(name, a, b, &ndim, shape));
  const fv_backend *be = fv_backend_for(name, a->device_type);
  if (!be) return fv_last_status();
  FV_TRY(fv_backend_require(be, op, a->scalar_type));
  fv_tensor *o;
  FV_TRY(fv_alloc_like_shape(&o, ndim, shape, a->scalar_type, a->device_type));
  fv_tensor va, vb;
  fv_broadcast_view(&va, a, ndim, shape);
  fv_broadcast_view(&vb, b, ndim, shape);
  int status = be->binary(op, o, &va, &vb);
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  *out = o;
  return FV_OK;
}

/* Allocates out like a and runs fn's kernel; shared by the scalar and unary front ends. */
static int unary_like(fv_tensor **out, int op, const fv_tensor *a, const fv_backend **be, fv_tensor **o) {
  const char *name = fv_op_name(op);
  FV_TRY(fv_check_float(name, a));
  *be = fv_backend_for(name, a->device_type);
  if (!*be) return fv_last_status();
  FV_TRY(fv_backend_require(*be, op, a->scalar_type));
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "%s: out is NULL", name);
  return fv_alloc_like_shape(o, a->ndim, a->sizes, a->scalar_type, a->device_type);
}

static int finish(fv_tensor **out, fv_tensor *o, int status) {
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  *out = o;
  return FV_OK;
}

int fv_binary_scalar(fv_tensor **out, int op, const fv_tensor *a, double s, int scalar_first) {
  if (!is_binary(op)) return fv_fail(FV_ERR_ARGUMENT, "binary_scalar: %s is not a binary op", fv_op_name(op));
  const fv_backend *be;
  fv_tensor *o;
  FV_TRY(unary_like(out, op, a, &be, &o));
  return finish(out, o, be->binary_scalar(op, o, a, s, scalar_first));
}

int fv_unary(fv_tensor **out, int op, const fv_tensor *a) {
  if (!is_unary(op)) return fv_fail(FV_ERR_ARGUMENT, "unary: %s is not a unary op", fv_op_name(op));
  const fv_backend *be;
  fv_tensor *o;
  FV_TRY(unary_like(out, op, a, &be, &o));
  return finish(out, o, be->unary(op, o, a, 0.0, 0.0));
}

int fv_clamp(fv_tensor **out, const fv_tensor *a, double lo, double hi) {
  if (lo > hi) return fv_fail(FV_ERR_ARGUMENT, "clamp: lower bound %g is above upper bound %g", lo, hi);
  const fv_backend *be;
  fv_tensor *o;
  FV_TRY(unary_like(out, FV_OP_CLAMP, a, &be, &o));
  return finish(out, o, be->unary(FV_OP_CLAMP, o, a, lo, hi));
}
