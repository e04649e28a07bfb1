/* storage.c: refcounted allocations on a device, and the live-byte counters that let
 * the Lua side collect garbage tensors before memory piles up. A cpu storage may hold
 * pinned host memory from a device backend (fv_storage.pinned_for: that backend's
 * host_free gives it back); a device storage may be filled by the backend's asynchronous
 * upload. Both count in the live bytes as any other storage. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static _Atomic int64_t live_bytes;
static _Atomic int64_t peak_bytes;

int64_t fv_live_bytes(void) { return atomic_load(&live_bytes); }
int64_t fv_peak_bytes(void) { return atomic_load(&peak_bytes); }
void fv_reset_peak_bytes(void) { atomic_store(&peak_bytes, atomic_load(&live_bytes)); }

static void count_bytes(int64_t delta) {
  int64_t now = atomic_fetch_add(&live_bytes, delta) + delta;
  int64_t peak = atomic_load(&peak_bytes);
  while (now > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, now)) {
  }
}

int fv_storage_new(fv_storage **out, size_t bytes, int device) {
  const fv_backend *be = fv_backend_for("allocate", device);
  if (!be) return fv_last_status();
  fv_storage *s = malloc(sizeof *s);
  if (!s) return fv_fail(FV_ERR_MEMORY, "allocate: out of host memory for a storage header");
  if (device != FV_CPU) fv_clear_error(); /* a device allocator may say why it failed */
  s->data = be->alloc(bytes);
  if (!s->data) {
    free(s);
    char why[512] = "";
    if (device != FV_CPU && fv_last_status()) snprintf(why, sizeof why, " (%s)", fv_last_error());
    return fv_fail(FV_ERR_MEMORY, "allocate: cannot allocate %zu bytes on %s%s", bytes, fv_device_name(device), why);
  }
  s->bytes = bytes;
  s->refcount = 1;
  s->device_type = device;
  s->pinned_for = 0;
  count_bytes((int64_t)bytes);
  *out = s;
  return FV_OK;
}

int fv_storage_new_pinned(fv_storage **out, size_t bytes, int device, const char *op) {
  FV_TRY(fv_check_pinned(op, device));
  const fv_backend *be = fv_backend_for(op, device);
  fv_storage *s = malloc(sizeof *s);
  if (!s) return fv_fail(FV_ERR_MEMORY, "%s: out of host memory for a storage header", op);
  fv_clear_error(); /* the backend may say why it failed */
  s->data = be->host_alloc(bytes);
  if (!s->data) {
    free(s);
    char why[512] = "";
    if (fv_last_status()) snprintf(why, sizeof why, " (%s)", fv_last_error());
    return fv_fail(FV_ERR_MEMORY, "%s: cannot allocate %zu bytes of host memory pinned for %s%s", op, bytes,
                   fv_device_name(device), why);
  }
  s->bytes = bytes;
  s->refcount = 1;
  s->device_type = FV_CPU;
  s->pinned_for = device;
  count_bytes((int64_t)bytes);
  *out = s;
  return FV_OK;
}

int fv_storage_upload(fv_storage **out, const fv_tensor *src, size_t bytes, int device) {
  const fv_backend *be = fv_backend_for("upload", device);
  if (!be) return fv_last_status();
  if (!be->upload) return fv_fail(FV_ERR_DEVICE, "upload: the %s backend has no asynchronous upload", be->name);
  fv_storage *s = malloc(sizeof *s); /* before the upload: nothing to undo once it is queued */
  if (!s) return fv_fail(FV_ERR_MEMORY, "upload: out of host memory for a storage header");
  s->data = NULL;
  int status = be->upload(&s->data, src, bytes);
  if (status || !s->data) {
    free(s);
    return status ? status : fv_fail(FV_ERR_INTERNAL, "upload: the %s backend gave no memory", be->name);
  }
  s->bytes = bytes;
  s->refcount = 1;
  s->device_type = device;
  s->pinned_for = 0;
  count_bytes((int64_t)bytes);
  *out = s;
  return FV_OK;
}

void fv_storage_retain(fv_storage *s) {
  if (s) __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
}

void fv_storage_release(fv_storage *s) {
  if (!s || __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
  if (s->pinned_for) {
    const fv_backend *be = fv_backend_for("free", s->pinned_for);
    if (be && be->host_free) be->host_free(s->data, s->bytes);
  } else {
    const fv_backend *be = fv_backend_for("free", s->device_type);
    if (be) be->free(s->data, s->bytes);
  }
  count_bytes(-(int64_t)s->bytes);
  free(s);
}
