/* copy.c: copies, dtype conversion, fill, contiguous, and the exchange of values with
 * plain double arrays (how Lua tables become tensors and back). */
#include <string.h>

#include "internal.h"

/* the gradient converted back to the input's dtype */
static int convert_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  if (g->scalar_type == node->inputs[0].scalar_type) {
    gin[0] = fv_ref(g);
    return FV_OK;
  }
  return fv_to_dtype(&gin[0], g, node->inputs[0].scalar_type);
}

int fv_copy_(fv_tensor *dst, const fv_tensor *src) {
  FV_TRY(fv_check_live("copy", dst));
  FV_TRY(fv_check_live("copy", src));
  FV_TRY(fv_check_inplace("copy", dst));
  if (dst->device_type == src->device_type) FV_TRY(fv_check_same_device("copy", dst, src));
  int ndim;
  int64_t shape[FV_MAX_DIMS];
  FV_TRY(fv_broadcast_shapes("copy", dst, src, &ndim, shape));
  if (ndim != dst->ndim || fv_shape_numel(ndim, shape) != fv_tensor_numel(dst))
    return fv_fail(FV_ERR_SHAPE, "copy: source %s does not broadcast to destination %s", fv_shape_of(src),
                   fv_shape_of(dst));
  if (dst->device_type != src->device_type) return fv_copy_across_devices(dst, src); /* device.c */
  const fv_backend *be = fv_backend_for("copy", dst->device_type);
  if (!be) return fv_last_status();
  fv_tensor view;
  fv_broadcast_view(&view, src, dst->ndim, dst->sizes);
  return be->copy(dst, &view);
}

int fv_fill_(fv_tensor *t, double value) {
  FV_TRY(fv_check_live("fill", t));
  FV_TRY(fv_check_inplace("fill", t));
  const fv_backend *be = fv_backend_for("fill", t->device_type);
  if (!be) return fv_last_status();
  return be->fill(t, value);
}

int fv_to_dtype(fv_tensor **out, const fv_tensor *t, int dtype) {
  FV_TRY(fv_check_live("to_dtype", t));
  fv_tensor *c;
  FV_TRY(fv_alloc_like_shape(&c, t->ndim, t->sizes, dtype, t->device_type));
  int status = fv_copy_(c, t);
  if (!status && (dtype == FV_FLOAT32 || dtype == FV_FLOAT64)) {
    fv_node *node;
    status = fv_record(&node, c, dtype == t->scalar_type ? "clone" : "to_dtype", convert_backward, 1, &t, 0, NULL);
  }
  if (status) {
    fv_tensor_release(c);
    return status;
  }
  *out = c;
  return FV_OK;
}

int fv_clone(fv_tensor **out, const fv_tensor *t) {
  FV_TRY(fv_check_live("clone", t));
  return fv_to_dtype(out, t, t->scalar_type);
}

int fv_contiguous(fv_tensor **out, const fv_tensor *t) {
  FV_TRY(fv_check_live("contiguous", t));
  if (fv_tensor_is_contiguous(t)) {
    fv_tensor_retain((fv_tensor *)t);
    *out = (fv_tensor *)t;
    return FV_OK;
  }
  return fv_clone(out, t);
}

/* A float64 tensor of t's shape over a caller's buffer, for exchanging values with it. */
static void wrap_doubles(fv_tensor *wrapper, fv_storage *storage, const fv_tensor *t, double *values) {
  memset(wrapper, 0, sizeof *wrapper);
  storage->data = values;
  storage->bytes = (size_t)fv_tensor_numel(t) * sizeof(double);
  storage->refcount = 1;
  storage->device_type = FV_CPU;
  storage->pinned_for = 0;
  wrapper->storage = storage;
  wrapper->ndim = t->ndim;
  memcpy(wrapper->sizes, t->sizes, sizeof wrapper->sizes);
  fv_set_contiguous_strides(wrapper);
  wrapper->scalar_type = FV_FLOAT64;
  wrapper->device_type = FV_CPU;
}

static int check_exchange(const char *op, const fv_tensor *t, int64_t n) {
  FV_TRY(fv_check_live(op, t));
  if (t->device_type != FV_CPU)
    return fv_fail(FV_ERR_DEVICE, "%s: tensor %s is on %s; copy it to the cpu first", op, fv_shape_of(t),
                   fv_device_name(t->device_type));
  if (n != fv_tensor_numel(t))
    return fv_fail(FV_ERR_SHAPE, "%s: %lld values given for tensor %s of %lld elements", op, (long long)n,
                   fv_shape_of(t), (long long)fv_tensor_numel(t));
  return FV_OK;
}

int fv_copy_from_f64(fv_tensor *t, const double *values, int64_t n) {
  FV_TRY(check_exchange("copy_from_f64", t, n));
  fv_tensor src;
  fv_storage storage;
  wrap_doubles(&src, &storage, t, (double *)values);
  return fv_cpu_backend.copy(t, &src);
}

int fv_copy_to_f64(const fv_tensor *t, double *values, int64_t n) {
  FV_TRY(check_exchange("copy_to_f64", t, n));
  fv_tensor dst;
  fv_storage storage;
  wrap_doubles(&dst, &storage, t, values);
  return fv_cpu_backend.copy(&dst, t);
}

/* The single-element view of t at index, for get and set. */
static int element_view(const char *op, const fv_tensor *t, const int64_t *index, fv_tensor *view) {
  FV_TRY(check_exchange(op, t, fv_tensor_numel(t)));
  *view = *t;
  for (int d = 0; d < t->ndim; d++) {
    int64_t i = index[d] < 0 ? index[d] + t->sizes[d] : index[d];
    if (i < 0 || i >= t->sizes[d])
      return fv_fail(FV_ERR_INDEX, "%s: index %lld out of range for dimension %d of size %lld in tensor %s", op,
                     (long long)index[d], d, (long long)t->sizes[d], fv_shape_of(t));
    view->offset += i * t->strides[d];
  }
  view->ndim = 0;
  return FV_OK;
}

int fv_get_f64(const fv_tensor *t, const int64_t *index, double *value) {
  fv_tensor view;
  FV_TRY(element_view("get", t, index, &view));
  return fv_copy_to_f64(&view, value, 1);
}

int fv_set_f64(fv_tensor *t, const int64_t *index, double value) {
  fv_tensor view;
  FV_TRY(element_view("set", t, index, &view));
  return fv_copy_from_f64(&view, &value, 1);
}
