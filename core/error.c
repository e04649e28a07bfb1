/* error.c: the per-thread status and message behind fv_last_error(), and the checks
 * every entry point shares (live tensor, float dtype, same device, dim range). */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Thread_local char error_message[1024];
static _Thread_local int error_status;

int fv_fail(int status, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  vsnprintf(error_message, sizeof error_message, fmt, args);
  va_end(args);
  error_status = status;
  return status;
}

const char *fv_last_error(void) { return error_message; }
int fv_last_status(void) { return error_status; }

void fv_clear_error(void) {
  error_message[0] = '\0';
  error_status = FV_OK;
}

const char *fv_shape_str(const fv_tensor *t, char *buf, size_t size) {
  if (size == 0) return buf;
  buf[0] = '\0';
  if (!t) {
    snprintf(buf, size, "(null)");
    return buf;
  }
  if (t->ndim == 0) {
    snprintf(buf, size, "scalar");
    return buf;
  }
  size_t used = 0;
  for (int d = 0; d < t->ndim && used < size; d++) {
    int n = snprintf(buf + used, size - used, d ? "x%lld" : "%lld", (long long)t->sizes[d]);
    if (n < 0) break;
    used += (size_t)n;
  }
  return buf;
}

const char *fv_shape_of(const fv_tensor *t) {
  static _Thread_local char ring[8][128];
  static _Thread_local int next;
  char *buf = ring[next];
  next = (next + 1) % 8;
  return fv_shape_str(t, buf, sizeof ring[0]);
}

int fv_check_live(const char *op, const fv_tensor *t) {
  if (!t) return fv_fail(FV_ERR_ARGUMENT, "%s: tensor argument is nil", op);
  if (!t->storage) return fv_fail(FV_ERR_FREED, "%s: tensor %s was freed by :free()", op, fv_shape_of(t));
  return FV_OK;
}

int fv_check_float(const char *op, const fv_tensor *t) {
  FV_TRY(fv_check_live(op, t));
  if (t->scalar_type != FV_FLOAT32 && t->scalar_type != FV_FLOAT64)
    return fv_fail(FV_ERR_DTYPE, "%s: dtype %s of tensor %s is not supported (float32 or float64 expected)",
                   op, fv_dtype_name(t->scalar_type), fv_shape_of(t));
  return FV_OK;
}

int fv_check_same_device(const char *op, const fv_tensor *a, const fv_tensor *b) {
  if (a->device_type != b->device_type || a->device_index != b->device_index)
    return fv_fail(FV_ERR_DEVICE, "%s: tensors on different devices (%s %s on %s, %s %s on %s)", op,
                   fv_dtype_name(a->scalar_type), fv_shape_of(a), fv_device_name(a->device_type),
                   fv_dtype_name(b->scalar_type), fv_shape_of(b), fv_device_name(b->device_type));
  return FV_OK;
}

int fv_wrap_dim(const char *op, int dim, int ndim, int *out) {
  int d = dim < 0 ? dim + ndim : dim;
  if (d < 0 || d >= ndim || ndim == 0)
    return fv_fail(FV_ERR_INDEX, "%s: dimension %d out of range for a tensor with %d dimension%s", op, dim,
                   ndim, ndim == 1 ? "" : "s");
  *out = d;
  return FV_OK;
}
