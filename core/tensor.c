/* tensor.c: tensor lifetime (refcounts, explicit free), dtype and device names,
 * element counts, and allocation of new contiguous tensors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *const dtype_names[FV_DTYPE_COUNT] = {"float32", "float64", "float16", "bfloat16", "int64", "uint8"};
static const int dtype_sizes[FV_DTYPE_COUNT] = {4, 8, 2, 2, 8, 1};
static const char *const device_names[FV_DEVICE_COUNT] = {"cpu", "cuda"};

const char *fv_version(void) { return "0.1.0"; }

const char *fv_dtype_name(int dtype) {
  return dtype >= 0 && dtype < FV_DTYPE_COUNT ? dtype_names[dtype] : "invalid-dtype";
}

int fv_dtype_size(int dtype) { return dtype >= 0 && dtype < FV_DTYPE_COUNT ? dtype_sizes[dtype] : 0; }

const char *fv_device_name(int device) {
  return device >= 0 && device < FV_DEVICE_COUNT ? device_names[device] : "invalid-device";
}

void fv_tensor_retain(fv_tensor *t) {
  if (t) __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
}

void fv_tensor_release(fv_tensor *t) {
  if (!t || __atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
  fv_storage_release(t->storage);
  fv_tensor_release(t->gradient);
  fv_node_release(t->grad_fn);
  free(t);
}

int fv_tensor_free_data(fv_tensor *t) {
  if (!t) return fv_fail(FV_ERR_ARGUMENT, "free: tensor argument is nil");
  fv_storage_release(t->storage);
  t->storage = NULL;
  fv_tensor_release(t->gradient);
  t->gradient = NULL;
  return FV_OK;
}

void *fv_tensor_data(const fv_tensor *t) {
  if (!t || !t->storage || t->device_type != FV_CPU) return NULL;
  return (char *)t->storage->data + t->offset * dtype_sizes[t->scalar_type];
}

int64_t fv_shape_numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  return n;
}

int64_t fv_tensor_numel(const fv_tensor *t) { return t ? fv_shape_numel(t->ndim, t->sizes) : 0; }

void fv_set_contiguous_strides(fv_tensor *t) {
  int64_t s = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    t->strides[d] = s;
    s *= t->sizes[d] > 0 ? t->sizes[d] : 1;
  }
}

int fv_tensor_is_contiguous(const fv_tensor *t) {
  int64_t s = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->sizes[d] != 1 && t->strides[d] != s) return 0;
    s *= t->sizes[d];
  }
  return 1;
}

int fv_tensor_describe(const fv_tensor *t, char *buf, int size) {
  if (!t || size <= 0) return fv_fail(FV_ERR_ARGUMENT, "describe: bad arguments");
  snprintf(buf, (size_t)size, "%s %s %s%s", fv_dtype_name(t->scalar_type), fv_shape_of(t), fv_device_name(t->device_type),
           t->storage ? "" : " (freed)");
  return FV_OK;
}

int fv_tensor_alias(fv_tensor **out, const fv_tensor *src) {
  fv_tensor *t = calloc(1, sizeof *t);
  if (!t) return fv_fail(FV_ERR_MEMORY, "view: out of host memory for a tensor header");
  t->storage = src->storage;
  fv_storage_retain(t->storage);
  t->offset = src->offset;
  t->ndim = src->ndim;
  memcpy(t->sizes, src->sizes, sizeof t->sizes);
  memcpy(t->strides, src->strides, sizeof t->strides);
  t->scalar_type = src->scalar_type;
  t->device_type = src->device_type;
  t->device_index = src->device_index;
  t->refcount = 1;
  *out = t;
  return FV_OK;
}

static int check_new_shape(const char *op, int ndim, const int64_t *shape, int dtype, int device) {
  if (ndim < 0 || ndim > FV_MAX_DIMS)
    return fv_fail(FV_ERR_SHAPE, "%s: %d dimensions requested (at most %d)", op, ndim, FV_MAX_DIMS);
  if (ndim > 0 && !shape) return fv_fail(FV_ERR_ARGUMENT, "%s: shape is missing", op);
  if (dtype < 0 || dtype >= FV_DTYPE_COUNT) return fv_fail(FV_ERR_DTYPE, "%s: unknown dtype %d", op, dtype);
  if (dtype == FV_FLOAT16 || dtype == FV_BFLOAT16)
    return fv_fail(FV_ERR_DTYPE, "%s: dtype %s is reserved and not supported yet", op, fv_dtype_name(dtype));
  if (device < 0 || device >= FV_DEVICE_COUNT) return fv_fail(FV_ERR_DEVICE, "%s: unknown device %d", op, device);
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0) return fv_fail(FV_ERR_SHAPE, "%s: negative size %lld in dimension %d", op, (long long)shape[d], d);
    if (shape[d] > 0 && n > INT64_MAX / 8 / shape[d])
      return fv_fail(FV_ERR_MEMORY, "%s: shape too large to address", op);
    n *= shape[d];
  }
  return FV_OK;
}

int fv_tensor_header(fv_tensor **out, const char *op, int ndim, const int64_t *shape, int dtype, int device) {
  FV_TRY(check_new_shape(op, ndim, shape, dtype, device));
  fv_tensor *t = calloc(1, sizeof *t);
  if (!t) return fv_fail(FV_ERR_MEMORY, "%s: out of host memory for a tensor header", op);
  t->ndim = ndim;
  for (int d = 0; d < ndim; d++) t->sizes[d] = shape[d];
  fv_set_contiguous_strides(t);
  t->scalar_type = dtype;
  t->device_type = device;
  t->refcount = 1;
  *out = t;
  return FV_OK;
}

/* A contiguous tensor with storage from fv_storage_new, or pinned host memory for pin_device. */
static int alloc_shape(fv_tensor **out, const char *op, int ndim, const int64_t *shape, int dtype, int device,
                       int pin_device) {
  fv_tensor *t;
  FV_TRY(fv_tensor_header(&t, op, ndim, shape, dtype, device));
  size_t bytes = (size_t)fv_shape_numel(ndim, shape) * (size_t)dtype_sizes[dtype];
  int status = pin_device ? fv_storage_new_pinned(&t->storage, bytes ? bytes : 1, pin_device, op)
                          : fv_storage_new(&t->storage, bytes ? bytes : 1, device);
  if (status) {
    free(t);
    return status;
  }
  *out = t;
  return FV_OK;
}

int fv_alloc_like_shape(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device) {
  return alloc_shape(out, "empty", ndim, shape, dtype, device, 0);
}

int fv_alloc_pinned_shape(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device, const char *op) {
  if (device <= FV_CPU || device >= FV_DEVICE_COUNT)
    return fv_fail(FV_ERR_DEVICE, "%s: host memory is pinned for a device's transfers (cuda), not for %s", op,
                   fv_device_name(device));
  return alloc_shape(out, op, ndim, shape, dtype, FV_CPU, device);
}

int fv_empty(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "empty: out is NULL");
  return fv_alloc_like_shape(out, ndim, shape, dtype, device);
}
