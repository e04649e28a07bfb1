/* device.c: moving tensors between devices. fv_to_device makes a copy of a tensor on
 * another device (differentiable for float tensors: the gradient goes back to the
 * source device); fv_copy_ calls fv_copy_across_devices when dst and src are on
 * different devices. Both use the backends' host transfers (to_host, from_host) of
 * contiguous tensors: a strided, broadcast or converting copy is made contiguous on the
 * source device first and finished by the destination device's own copy kernel.
 *
 * Pinned memory: fv_pin_memory copies a cpu tensor into page-locked host memory from a
 * device backend (host_alloc). A contiguous pinned source goes to that device by the
 * backend's asynchronous upload instead of the synchronous from_host: the call returns
 * at once, the device's later work sees the bytes, and the backend keeps the source's
 * storage alive until the copy has completed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Moves the contiguous src's bytes into the contiguous dst of the same byte size (one of
 * them may be on the cpu; with neither on the cpu, through a host buffer). */
static int transfer(fv_tensor *dst, const fv_tensor *src, size_t bytes) {
  if (bytes == 0) return FV_OK;
  const fv_backend *bd = fv_backend_for("copy", dst->device_type);
  const fv_backend *bs = fv_backend_for("copy", src->device_type);
  if (!bd || !bs) return fv_last_status();
  if (src->device_type == FV_CPU) {
    if (!bd->from_host) return fv_fail(FV_ERR_DEVICE, "copy: the %s backend cannot copy from the cpu", bd->name);
    return bd->from_host(dst, fv_tensor_data(src), bytes);
  }
  if (dst->device_type == FV_CPU) {
    if (!bs->to_host) return fv_fail(FV_ERR_DEVICE, "copy: the %s backend cannot copy to the cpu", bs->name);
    return bs->to_host(fv_tensor_data(dst), src, bytes);
  }
  if (!bs->to_host || !bd->from_host)
    return fv_fail(FV_ERR_DEVICE, "copy: no way to copy from %s to %s", bs->name, bd->name);
  void *host = malloc(bytes);
  if (!host) return fv_fail(FV_ERR_MEMORY, "copy: cannot allocate %zu bytes of host memory for a transfer", bytes);
  int status = bs->to_host(host, src, bytes);
  if (!status) status = bd->from_host(dst, host, bytes);
  free(host);
  return status;
}

static int same_shape(const fv_tensor *a, const fv_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int d = 0; d < a->ndim; d++)
    if (a->sizes[d] != b->sizes[d]) return 0;
  return 1;
}

int fv_check_pinned(const char *op, int device) {
  if (device <= FV_CPU || device >= FV_DEVICE_COUNT)
    return fv_fail(FV_ERR_DEVICE, "%s: host memory is pinned for a device's transfers (cuda), not for %s", op,
                   fv_device_name(device));
  const fv_backend *be = fv_backend_for(op, device);
  if (!be) return fv_last_status();
  if (!be->host_alloc || !be->host_free)
    return fv_fail(FV_ERR_DEVICE, "%s: the %s backend has no pinned host memory", op, be->name);
  return FV_OK;
}

int fv_tensor_is_pinned(const fv_tensor *t) {
  return t && t->storage && t->device_type == FV_CPU && t->storage->pinned_for != 0;
}

/* Whether src, on the cpu, goes to the device of bd by bd's asynchronous upload: bd has
 * one, and src is a contiguous non-empty tensor in memory pinned for that device. */
static int can_upload(const fv_tensor *src, const fv_backend *bd, size_t bytes) {
  return bd->upload && bytes > 0 && src->device_type == FV_CPU && src->storage &&
         src->storage->pinned_for == bd->device_type && fv_tensor_is_contiguous(src);
}

/* A new contiguous tensor on device with src's shape and dtype, filled by the backend's
 * asynchronous upload of src's bytes (can_upload holds). */
static int upload_new(const char *op, fv_tensor **out, const fv_tensor *src, size_t bytes, int device) {
  fv_tensor *t;
  FV_TRY(fv_tensor_header(&t, op, src->ndim, src->sizes, src->scalar_type, device));
  int status = fv_storage_upload(&t->storage, src, bytes, device);
  if (status) {
    free(t);
    char why[1024];
    snprintf(why, sizeof why, "%s", fv_last_error());
    return fv_fail(status, "%s: cannot upload the pinned %s %s tensor (%zu bytes) to %s: %s", op,
                   fv_dtype_name(src->scalar_type), fv_shape_of(src), bytes, fv_device_name(device), why);
  }
  *out = t;
  return FV_OK;
}

/* dst and src on different devices; src broadcasts to dst's shape (checked by fv_copy_). */
int fv_copy_across_devices(fv_tensor *dst, const fv_tensor *src) {
  const fv_backend *bs = fv_backend_for("copy", src->device_type);
  const fv_backend *bd = fv_backend_for("copy", dst->device_type);
  if (!bs || !bd) return fv_last_status();
  FV_TRY(fv_backend_require(bs, FV_OP_COPY, src->scalar_type));
  FV_TRY(fv_backend_require(bd, FV_OP_COPY, dst->scalar_type));
  /* src's elements, contiguous, on src's device */
  fv_tensor *packed;
  if (fv_tensor_is_contiguous(src)) {
    packed = fv_ref(src);
  } else {
    FV_TRY(fv_alloc_like_shape(&packed, src->ndim, src->sizes, src->scalar_type, src->device_type));
    int status = bs->copy(packed, src);
    if (status) {
      fv_tensor_release(packed);
      return status;
    }
  }
  size_t bytes = (size_t)fv_tensor_numel(packed) * (size_t)fv_dtype_size(packed->scalar_type);
  int upload = can_upload(packed, bd, bytes); /* pinned: asynchronous, into new memory */
  int status;
  if (!upload && fv_tensor_is_contiguous(dst) && dst->scalar_type == src->scalar_type && same_shape(dst, src)) {
    status = transfer(dst, packed, bytes); /* straight into place */
  } else { /* to a contiguous copy on dst's device, then broadcast and convert there */
    fv_tensor *staged;
    if (upload) {
      status = upload_new("copy", &staged, packed, bytes, dst->device_type);
    } else {
      status = fv_alloc_like_shape(&staged, packed->ndim, packed->sizes, packed->scalar_type, dst->device_type);
      if (!status) {
        status = transfer(staged, packed, bytes);
        if (status) fv_tensor_release(staged);
      }
    }
    if (!status) {
      fv_tensor view;
      fv_broadcast_view(&view, staged, dst->ndim, dst->sizes);
      status = bd->copy(dst, &view); /* on the device, after the upload (stream order) */
      fv_tensor_release(staged);
    }
  }
  fv_tensor_release(packed);
  return status;
}

/* the gradient moved back to the input's device */
static int to_device_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  return fv_to_device(&gin[0], g, node->inputs[0].device_type);
}

int fv_to_device(fv_tensor **out, const fv_tensor *t, int device) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "to_device: out is NULL");
  FV_TRY(fv_check_live("to_device", t));
  if (device < 0 || device >= FV_DEVICE_COUNT) return fv_fail(FV_ERR_DEVICE, "to_device: unknown device %d", device);
  if (device == t->device_type) {
    *out = fv_ref(t);
    return FV_OK;
  }
  const fv_backend *bd = fv_backend_for("to_device", device);
  if (!bd || !fv_backend_for("to_device", t->device_type)) return fv_last_status();
  fv_tensor *c;
  int status;
  size_t bytes = (size_t)fv_tensor_numel(t) * (size_t)fv_dtype_size(t->scalar_type);
  if (can_upload(t, bd, bytes)) { /* pinned and contiguous: asynchronous */
    FV_TRY(fv_backend_require(bd, FV_OP_COPY, t->scalar_type));
    FV_TRY(upload_new("to_device", &c, t, bytes, device));
    status = FV_OK;
  } else {
    FV_TRY(fv_alloc_like_shape(&c, t->ndim, t->sizes, t->scalar_type, device));
    status = fv_copy_(c, t);
  }
  if (!status && (t->scalar_type == FV_FLOAT32 || t->scalar_type == FV_FLOAT64)) {
    fv_node *node;
    status = fv_record(&node, c, "to_device", to_device_backward, 1, &t, 0, NULL);
  }
  if (status) {
    fv_tensor_release(c);
    return status;
  }
  *out = c;
  return FV_OK;
}

/* the gradient of a pinned copy: the same values (both on the cpu) */
static int pin_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  (void)node;
  gin[0] = fv_ref(g);
  return FV_OK;
}

int fv_pin_memory(fv_tensor **out, const fv_tensor *t, int device) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "pin_memory: out is NULL");
  FV_TRY(fv_check_live("pin_memory", t));
  if (t->device_type != FV_CPU)
    return fv_fail(FV_ERR_DEVICE, "pin_memory: the %s %s tensor is on %s; only cpu tensors can be pinned",
                   fv_dtype_name(t->scalar_type), fv_shape_of(t), fv_device_name(t->device_type));
  if (fv_check_pinned("pin_memory", device)) {
    char why[1024];
    snprintf(why, sizeof why, "%s", fv_last_error());
    return fv_fail(fv_last_status(), "pin_memory: cannot pin the %s %s tensor for %s: %s",
                   fv_dtype_name(t->scalar_type), fv_shape_of(t), fv_device_name(device),
                   strncmp(why, "pin_memory: ", 12) == 0 ? why + 12 : why);
  }
  if (t->storage->pinned_for == device && fv_tensor_is_contiguous(t)) { /* already there */
    *out = fv_ref(t);
    return FV_OK;
  }
  fv_tensor *c;
  FV_TRY(fv_alloc_pinned_shape(&c, t->ndim, t->sizes, t->scalar_type, device, "pin_memory"));
  int status = fv_copy_(c, t);
  if (!status && (t->scalar_type == FV_FLOAT32 || t->scalar_type == FV_FLOAT64)) {
    fv_node *node;
    status = fv_record(&node, c, "pin_memory", pin_backward, 1, &t, 0, NULL);
  }
  if (status) {
    fv_tensor_release(c);
    return status;
  }
  *out = c;
  return FV_OK;
}
