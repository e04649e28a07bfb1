/* reduce.c: the reductions (sum, mean, max, min, argmax, argmin, var) over one
 * dimension or over all elements: front ends and backward functions. */
#include "internal.h"

/* g (the reduced shape) viewed with the reduced dims put back as size 1 and expanded
 * to the input's shape; iarg = {op, dim, keepdim, all}. NULL-propagating. */
static fv_tensor *expand_back(const fv_node *node, const fv_tensor *g) {
  const fv_tensor *in = &node->inputs[0];
  int dim = (int)node->iarg[1], all = (int)node->iarg[3];
  int64_t shape[FV_MAX_DIMS];
  for (int d = 0; d < in->ndim; d++) shape[d] = (all || d == dim) ? 1 : in->sizes[d];
  fv_tensor *v, *e;
  if (!g || fv_reshape(&v, g, in->ndim, shape)) return NULL;
  int status = fv_expand(&e, v, in->ndim, in->sizes);
  fv_tensor_release(v);
  return status ? NULL : e;
}

/* saved = {a, out (the reduced values, for max/min)}; darg[0] = n (elements reduced),
 * darg[1] = correction (var) */
static int reduce_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  const fv_tensor *a = node->saved[0], *values = node->saved[1];
  double n = node->darg[0];
  fv_tensor *ge = expand_back(node, g), *t = NULL, *u = NULL, *r = NULL;
  switch (node->iarg[0]) {
    case FV_OP_SUM: r = ge ? fv_ref(ge) : NULL; break;
    case FV_OP_MEAN: r = fv_op2s(FV_OP_MUL, ge, 1.0 / n, 0); break;
    case FV_OP_VAR: { /* g 2 (a - mean) / (n - correction) */
      fv_tensor *mean;
      if (node->iarg[3]) {
        if (fv_reduce(&mean, FV_OP_MEAN, a, 0, 0, 1, 0)) mean = NULL;
      } else if (fv_reduce(&mean, FV_OP_MEAN, a, (int)node->iarg[1], 1, 0, 0)) {
        mean = NULL;
      }
      t = fv_op2(FV_OP_SUB, a, mean);
      u = fv_op2s(FV_OP_MUL, t, 2.0 / (n - node->darg[1]), 0);
      r = fv_op2(FV_OP_MUL, ge, u);
      fv_tensor_release(mean);
      break;
    }
    case FV_OP_MAX:
    case FV_OP_MIN: { /* shared equally by the elements equal to the extremum */
      fv_tensor *ve = expand_back(node, values);
      t = fv_op2(FV_OP_EQ, a, ve);
      fv_tensor *count;
      if (node->iarg[3]) {
        if (fv_reduce(&count, FV_OP_SUM, t, 0, 0, 1, 0)) count = NULL;
      } else if (fv_reduce(&count, FV_OP_SUM, t, (int)node->iarg[1], 1, 0, 0)) {
        count = NULL;
      }
      u = fv_op2(FV_OP_DIV, t, count);
      r = fv_op2(FV_OP_MUL, ge, u);
      fv_tensor_release(ve);
      fv_tensor_release(count);
      break;
    }
  }
  fv_tensor_release(ge);
  fv_tensor_release(t);
  fv_tensor_release(u);
  gin[0] = r;
  return fv_grads_ready(node, gin);
}

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
  if (!status && v) {
    const fv_tensor *saved[2] = {a, (op == FV_OP_MAX || op == FV_OP_MIN) ? v : NULL};
    if (op == FV_OP_SUM || op == FV_OP_MEAN) saved[0] = NULL;
    fv_node *node;
    status = fv_record(&node, v, name, reduce_backward, 1, &a, 2, saved);
    if (node) {
      node->iarg[0] = op;
      node->iarg[1] = d;
      node->iarg[2] = keepdim;
      node->iarg[3] = all;
      node->darg[0] = (double)n;
      node->darg[1] = correction;
    }
  }
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
