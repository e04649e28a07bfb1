/* reduce.c: front ends of the reductions (sum, mean, max, min, argmax, argmin, var)
 * over one dimension or over all elements. */
#include "internal.h"

/* Output shape of reducing dim (or everything) with or without keepdim. */
static void reduced_shape(const fv_tensor *a, int dim, int keepdim, int all, int *ndim, int64_t *shape) {
  int n = 0;
  for (int d = 0; d < a->ndim; d++) {
    if (all || d == dim) {
      if (keepdim) shape[n++] = 1;
    } else {
      shape[n++] = a->sizes[d];
    }
  }
  *ndim = n;
}

/* Runs the kernel of op with a viewed as (outer, n, inner); values and/or index may be requested. */
static int reduce_into(int op, fv_tensor **values, fv_tensor **indices, const fv_tensor *a, int dim, int keepdim,
                       int all, int correction, int index_base) {
  const char *name = fv_op_name(op);
  FV_TRY(fv_check_float(name, a));
  int d = 0;
  if (!all) FV_TRY(fv_wrap_dim(name, dim, a->ndim, &d));
  const fv_backend *be = fv_backend_for(name, a->device_type);
  if (!be) return fv_last_status();
  FV_TRY(fv_backend_require(be, op, a->scalar_type));
  fv_tensor *c;
  FV_TRY(fv_contiguous(&c, a));
  int64_t outer = 1, n = 1, inner = 1;
  for (int k = 0; k < a->ndim; k++) {
    if (all) n *= a->sizes[k];
    else if (k < d) outer *= a->sizes[k];
    else if (k == d) n = a->sizes[k];
    else inner *= a->sizes[k];
  }
  int status = FV_OK;
  if (n == 0 && op != FV_OP_SUM && op != FV_OP_MEAN)
    status = fv_fail(FV_ERR_SHAPE, "%s: cannot reduce over an empty dimension of tensor %s", name, fv_shape_of(a));
  int ndim;
  int64_t shape[FV_MAX_DIMS];
  reduced_shape(a, d, keepdim, all, &ndim, shape);
  fv_tensor *v = NULL, *i = NULL;
  if (!status && values) status = fv_alloc_like_shape(&v, ndim, shape, a->scalar_type, a->device_type);
  if (!status && indices) status = fv_alloc_like_shape(&i, ndim, shape, FV_INT64, a->device_type);
  if (!status) status = be->reduce(op, v, i, c, outer, n, inner, correction, index_base);
  fv_tensor_release(c);
  if (status) {
    fv_tensor_release(v);
    fv_tensor_release(i);
    return status;
  }
  if (values) *values = v;
  if (indices) *indices = i;
  return FV_OK;
}

int fv_reduce(fv_tensor **out, int op, const fv_tensor *a, int dim, int keepdim, int all, int index_base) {
  switch (op) {
    case FV_OP_SUM: case FV_OP_MEAN: case FV_OP_MAX: case FV_OP_MIN:
      return reduce_into(op, out, NULL, a, dim, keepdim, all, 0, 0);
    case FV_OP_ARGMAX: case FV_OP_ARGMIN:
      return reduce_into(op, NULL, out, a, dim, keepdim, all, 0, index_base);
    case FV_OP_VAR:
      return reduce_into(op, out, NULL, a, dim, keepdim, all, 1, 0);
    default:
      return fv_fail(FV_ERR_ARGUMENT, "reduce: %s is not a reduction", fv_op_name(op));
  }
}

int fv_var(fv_tensor **out, const fv_tensor *a, int dim, int keepdim, int all, int unbiased) {
  return reduce_into(FV_OP_VAR, out, NULL, a, dim, keepdim, all, unbiased ? 1 : 0, 0);
}

int fv_max_dim(fv_tensor **values, fv_tensor **indices, int op, const fv_tensor *a, int dim, int keepdim,
               int index_base) {
  if (op != FV_OP_MAX && op != FV_OP_MIN)
    return fv_fail(FV_ERR_ARGUMENT, "max_dim: op must be max or min, not %s", fv_op_name(op));
  return reduce_into(op, values, indices, a, dim, keepdim, 0, 0, index_base);
}
