/* views.c: views that share storage: view/reshape, narrow, select, transpose, permute,
 * expand, squeeze, unsqueeze, with their backward functions; and the broadcasting
 * rules shared with elementwise ops. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

enum view_kind { VIEW_RESHAPE, VIEW_EXPAND, VIEW_TRANSPOSE, VIEW_PERMUTE, VIEW_NARROW, VIEW_SELECT };

/* g of the view back to the base's shape; iarg = {kind, args...} */
static int view_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  const fv_tensor *in = &node->inputs[0];
  const int64_t *arg = node->iarg;
  fv_tensor *r = NULL, *z = NULL, *slot = NULL;
  int status = FV_OK;
  switch (arg[0]) {
    case VIEW_RESHAPE: status = fv_reshape(&r, g, in->ndim, in->sizes); break;
    case VIEW_EXPAND: status = fv_sum_to(&r, g, in); break;
    case VIEW_TRANSPOSE: status = fv_transpose(&r, g, (int)arg[1], (int)arg[2]); break;
    case VIEW_PERMUTE: {
      int inverse[FV_MAX_DIMS];
      for (int d = 0; d < in->ndim; d++) inverse[arg[1 + d]] = d;
      status = fv_permute(&r, g, in->ndim, inverse);
      break;
    }
    case VIEW_NARROW:
    case VIEW_SELECT: /* zeros of the base's shape with g in the viewed part */
      status = fv_zeros(&z, in->ndim, in->sizes, in->scalar_type, in->device_type);
      if (!status) status = arg[0] == VIEW_NARROW ? fv_narrow(&slot, z, (int)arg[1], arg[2], arg[3])
                                                  : fv_select(&slot, z, (int)arg[1], arg[2]);
      if (!status) status = fv_copy_(slot, g);
      fv_tensor_release(slot);
      if (!status) r = fv_ref(z);
      fv_tensor_release(z);
      break;
  }
  if (status) return status;
  gin[0] = r;
  return FV_OK;
}

/* Hands the view v to the caller, recording its backward when t needs gradients. */
static int finish_view(fv_tensor **out, fv_tensor *v, const fv_tensor *t, int kind, int64_t a1, int64_t a2,
                       int64_t a3) {
  fv_node *node;
  int status = fv_record(&node, v, "view", view_backward, 1, &t, 0, NULL);
  if (status) {
    fv_tensor_release(v);
    return status;
  }
  if (node) {
    static const char *const names[] = {"reshape", "expand", "transpose", "permute", "narrow", "select"};
    node->name = names[kind];
    node->iarg[0] = kind;
    node->iarg[1] = a1;
    node->iarg[2] = a2;
    node->iarg[3] = a3;
  }
  *out = v;
  return FV_OK;
}

static const char *dims_str(int ndim, const int64_t *shape, char *buf, size_t size) {
  fv_tensor tmp;
  tmp.ndim = ndim;
  for (int d = 0; d < ndim; d++) tmp.sizes[d] = shape[d];
  return fv_shape_str(&tmp, buf, size);
}

/* Resolves one -1 in shape against numel; checks the element counts agree. */
static int infer_shape(const char *op, const fv_tensor *t, int ndim, const int64_t *shape, int64_t *out) {
  if (ndim < 0 || ndim > FV_MAX_DIMS)
    return fv_fail(FV_ERR_SHAPE, "%s: %d dimensions requested (at most %d)", op, ndim, FV_MAX_DIMS);
  int infer = -1;
  int64_t known = 1;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] == -1) {
      if (infer >= 0) return fv_fail(FV_ERR_SHAPE, "%s: only one dimension can be -1", op);
      infer = d;
    } else if (shape[d] < 0) {
      return fv_fail(FV_ERR_SHAPE, "%s: invalid size %lld in dimension %d", op, (long long)shape[d], d);
    } else {
      known *= shape[d];
    }
    out[d] = shape[d];
  }
  int64_t numel = fv_tensor_numel(t);
  char buf[128];
  if (infer >= 0) {
    if (known == 0 || numel % known)
      return fv_fail(FV_ERR_SHAPE, "%s: cannot view tensor %s (%lld elements) as %s", op, fv_shape_of(t),
                     (long long)numel, dims_str(ndim, shape, buf, sizeof buf));
    out[infer] = numel / known;
  } else if (known != numel) {
    return fv_fail(FV_ERR_SHAPE, "%s: cannot view tensor %s (%lld elements) as %s (%lld elements)", op,
                   fv_shape_of(t), (long long)numel, dims_str(ndim, shape, buf, sizeof buf), (long long)known);
  }
  return FV_OK;
}

/* Strides for viewing t as new_shape without a copy (numpy's rule), or 0 when impossible. */
static int view_strides(const fv_tensor *t, int ndim, const int64_t *shape, int64_t *stride) {
  int64_t numel = fv_tensor_numel(t);
  if (numel == 0 || t->ndim == 0) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
      stride[d] = s;
      s *= shape[d] ? shape[d] : 1;
    }
    return 1;
  }
  int nd = ndim - 1;
  int64_t chunk = t->ndim ? t->strides[t->ndim - 1] : 1, tensor_numel = 1, view_numel = 1;
  for (int td = t->ndim - 1; td >= 0; td--) {
    tensor_numel *= t->sizes[td];
    if (td == 0 || (t->sizes[td - 1] != 1 && t->strides[td - 1] != tensor_numel * chunk)) {
      while (nd >= 0 && (view_numel < tensor_numel || shape[nd] == 1)) {
        stride[nd] = view_numel * chunk;
        view_numel *= shape[nd];
        nd--;
      }
      if (view_numel != tensor_numel) return 0;
      if (td > 0) {
        chunk = t->strides[td - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return nd == -1;
}

int fv_view(fv_tensor **out, const fv_tensor *t, int ndim, const int64_t *shape) {
  FV_TRY(fv_check_live("view", t));
  int64_t resolved[FV_MAX_DIMS], stride[FV_MAX_DIMS];
  FV_TRY(infer_shape("view", t, ndim, shape, resolved));
  if (!view_strides(t, ndim, resolved, stride)) {
    char buf[128];
    return fv_fail(FV_ERR_SHAPE, "view: tensor %s with its strides cannot be viewed as %s without a copy "
                   "(use reshape or contiguous)", fv_shape_of(t), dims_str(ndim, resolved, buf, sizeof buf));
  }
  fv_tensor *v;
  FV_TRY(fv_tensor_alias(&v, t));
  v->ndim = ndim;
  for (int d = 0; d < ndim; d++) {
    v->sizes[d] = resolved[d];
    v->strides[d] = stride[d];
  }
  return finish_view(out, v, t, VIEW_RESHAPE, 0, 0, 0);
}

int fv_reshape(fv_tensor **out, const fv_tensor *t, int ndim, const int64_t *shape) {
  FV_TRY(fv_check_live("reshape", t));
  int64_t resolved[FV_MAX_DIMS], stride[FV_MAX_DIMS];
  FV_TRY(infer_shape("reshape", t, ndim, shape, resolved));
  if (view_strides(t, ndim, resolved, stride)) return fv_view(out, t, ndim, resolved);
  fv_tensor *c;
  FV_TRY(fv_contiguous(&c, t));
  int status = fv_view(out, c, ndim, resolved);
  fv_tensor_release(c);
  return status;
}

int fv_narrow(fv_tensor **out, const fv_tensor *t, int dim, int64_t start, int64_t length) {
  FV_TRY(fv_check_live("narrow", t));
  int d;
  FV_TRY(fv_wrap_dim("narrow", dim, t->ndim, &d));
  if (start < 0) start += t->sizes[d];
  if (start < 0 || length < 0 || start + length > t->sizes[d])
    return fv_fail(FV_ERR_INDEX, "narrow: range [%lld, %lld) out of bounds for dimension %d of size %lld in tensor %s",
                   (long long)start, (long long)(start + length), dim, (long long)t->sizes[d], fv_shape_of(t));
  fv_tensor *v;
  FV_TRY(fv_tensor_alias(&v, t));
  v->offset += start * t->strides[d];
  v->sizes[d] = length;
  return finish_view(out, v, t, VIEW_NARROW, d, start, length);
}

int fv_select(fv_tensor **out, const fv_tensor *t, int dim, int64_t index) {
  FV_TRY(fv_check_live("select", t));
  int d;
  FV_TRY(fv_wrap_dim("select", dim, t->ndim, &d));
  int64_t i = index < 0 ? index + t->sizes[d] : index;
  if (i < 0 || i >= t->sizes[d])
    return fv_fail(FV_ERR_INDEX, "select: index %lld out of range for dimension %d of size %lld in tensor %s",
                   (long long)index, dim, (long long)t->sizes[d], fv_shape_of(t));
  fv_tensor *v;
  FV_TRY(fv_tensor_alias(&v, t));
  v->offset += i * t->strides[d];
  for (int k = d; k < t->ndim - 1; k++) {
    v->sizes[k] = t->sizes[k + 1];
    v->strides[k] = t->strides[k + 1];
  }
  v->ndim = t->ndim - 1;
  return finish_view(out, v, t, VIEW_SELECT, d, i, 0);
}

int fv_transpose(fv_tensor **out, const fv_tensor *t, int dim0, int dim1) {
  FV_TRY(fv_check_live("transpose", t));
  int a, b;
  FV_TRY(fv_wrap_dim("transpose", dim0, t->ndim, &a));
  FV_TRY(fv_wrap_dim("transpose", dim1, t->ndim, &b));
  fv_tensor *v;
  FV_TRY(fv_tensor_alias(&v, t));
  v->sizes[a] = t->sizes[b];
  v->strides[a] = t->strides[b];
  v->sizes[b] = t->sizes[a];
  v->strides[b] = t->strides[a];
  return finish_view(out, v, t, VIEW_TRANSPOSE, a, b, 0);
}

int fv_permute(fv_tensor **out, const fv_tensor *t, int ndim, const int *perm) {
  FV_TRY(fv_check_live("permute", t));
  if (ndim != t->ndim)
    return fv_fail(FV_ERR_SHAPE, "permute: %d dimensions given for tensor %s with %d", ndim, fv_shape_of(t), t->ndim);
  int seen[FV_MAX_DIMS] = {0}, p[FV_MAX_DIMS];
  for (int d = 0; d < ndim; d++) {
    FV_TRY(fv_wrap_dim("permute", perm[d], ndim, &p[d]));
    if (seen[p[d]]++) return fv_fail(FV_ERR_ARGUMENT, "permute: dimension %d repeated", perm[d]);
  }
  fv_tensor *v;
  FV_TRY(fv_tensor_alias(&v, t));
  for (int d = 0; d < ndim; d++) {
    v->sizes[d] = t->sizes[p[d]];
    v->strides[d] = t->strides[p[d]];
  }
  fv_node *node;
  int status = fv_record(&node, v, "permute", view_backward, 1, &t, 0, NULL);
  if (status) {
    fv_tensor_release(v);
    return status;
  }
  if (node) {
    node->iarg[0] = VIEW_PERMUTE;
    for (int d = 0; d < ndim; d++) node->iarg[1 + d] = p[d];
  }
  *out = v;
  return FV_OK;
}

int fv_broadcast_shapes(const char *op, const fv_tensor *a, const fv_tensor *b, int *ndim, int64_t *out_shape) {
  int n = a->ndim > b->ndim ? a->ndim : b->ndim;
  for (int i = 0; i < n; i++) {
    int da = a->ndim - n + i, db = b->ndim - n + i;
    int64_t sa = da >= 0 ? a->sizes[da] : 1, sb = db >= 0 ? b->sizes[db] : 1;
    if (sa != sb && sa != 1 && sb != 1)
      return fv_fail(FV_ERR_SHAPE, "%s: shapes %s and %s do not broadcast (sizes %lld and %lld in dimension %d from the end)",
                     op, fv_shape_of(a), fv_shape_of(b), (long long)sa, (long long)sb, n - i);
    out_shape[i] = sa == 1 ? sb : sa;
  }
  *ndim = n;
  return FV_OK;
}

void fv_broadcast_view(fv_tensor *view, const fv_tensor *t, int ndim, const int64_t *shape) {
  *view = *t;
  view->ndim = ndim;
  for (int i = 0; i < ndim; i++) {
    int d = t->ndim - ndim + i;
    view->sizes[i] = shape[i];
    view->strides[i] = (d >= 0 && t->sizes[d] == shape[i]) ? t->strides[d] : 0;
  }
}

int fv_expand(fv_tensor **out, const fv_tensor *t, int ndim, const int64_t *shape) {
  FV_TRY(fv_check_live("expand", t));
  if (ndim < t->ndim || ndim > FV_MAX_DIMS)
    return fv_fail(FV_ERR_SHAPE, "expand: cannot expand tensor %s to %d dimensions", fv_shape_of(t), ndim);
  int64_t target[FV_MAX_DIMS];
  char buf[128];
  for (int i = 0; i < ndim; i++) {
    int d = t->ndim - ndim + i;
    target[i] = (shape[i] == -1 && d >= 0) ? t->sizes[d] : shape[i];
    if (target[i] < 0 || (d >= 0 && t->sizes[d] != 1 && t->sizes[d] != target[i]))
      return fv_fail(FV_ERR_SHAPE, "expand: tensor %s cannot be expanded to %s", fv_shape_of(t),
                     dims_str(ndim, shape, buf, sizeof buf));
  }
  fv_tensor *v;
  FV_TRY(fv_tensor_alias(&v, t));
  fv_broadcast_view(v, t, ndim, target);
  v->refcount = 1;
  v->gradient = NULL;
  v->grad_fn = NULL;
  v->needs_grad = 0;
  return finish_view(out, v, t, VIEW_EXPAND, 0, 0, 0);
}

int fv_squeeze(fv_tensor **out, const fv_tensor *t, int dim, int all) {
  FV_TRY(fv_check_live("squeeze", t));
  int only = -1;
  if (!all) FV_TRY(fv_wrap_dim("squeeze", dim, t->ndim, &only));
  fv_tensor *v;
  FV_TRY(fv_tensor_alias(&v, t));
  int n = 0;
  for (int d = 0; d < t->ndim; d++) {
    if (t->sizes[d] == 1 && (all || d == only)) continue;
    v->sizes[n] = t->sizes[d];
    v->strides[n] = t->strides[d];
    n++;
  }
  v->ndim = n;
  return finish_view(out, v, t, VIEW_RESHAPE, 0, 0, 0);
}

int fv_unsqueeze(fv_tensor **out, const fv_tensor *t, int dim) {
  FV_TRY(fv_check_live("unsqueeze", t));
  if (t->ndim >= FV_MAX_DIMS)
    return fv_fail(FV_ERR_SHAPE, "unsqueeze: tensor %s already has %d dimensions", fv_shape_of(t), FV_MAX_DIMS);
  int d;
  FV_TRY(fv_wrap_dim("unsqueeze", dim, t->ndim + 1, &d));
  fv_tensor *v;
  FV_TRY(fv_tensor_alias(&v, t));
  for (int k = t->ndim; k > d; k--) {
    v->sizes[k] = t->sizes[k - 1];
    v->strides[k] = t->strides[k - 1];
  }
  v->sizes[d] = 1;
  v->strides[d] = d + 1 < t->ndim + 1 ? v->strides[d + 1] * v->sizes[d + 1] : 1;
  v->ndim = t->ndim + 1;
  return finish_view(out, v, t, VIEW_RESHAPE, 0, 0, 0);
}
