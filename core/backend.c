/* backend.c: the registry of device backends. The CPU table is always present; the
 * CUDA library registers its own when it is loaded on a machine with a GPU. */
#include "internal.h"

static const fv_backend *backends[FV_DEVICE_COUNT] = {&fv_cpu_backend};

int fv_backend_register(const fv_backend *backend) {
  if (!backend || backend->device_type < 0 || backend->device_type >= FV_DEVICE_COUNT)
    return fv_fail(FV_ERR_ARGUMENT, "register backend: invalid backend table");
  backends[backend->device_type] = backend;
  return FV_OK;
}

const fv_backend *fv_backend_for(const char *op, int device) {
  if (device < 0 || device >= FV_DEVICE_COUNT) {
    fv_fail(FV_ERR_DEVICE, "%s: unknown device %d", op, device);
    return NULL;
  }
  if (!backends[device]) {
    fv_fail(FV_ERR_DEVICE, "%s: no %s backend is loaded (is a GPU present and libfovea_cuda built?)", op,
            fv_device_name(device));
    return NULL;
  }
  return backends[device];
}

int fv_device_available(int device) { return device >= 0 && device < FV_DEVICE_COUNT && backends[device] != NULL; }

int fv_supports(int device, int op, int dtype) {
  return fv_device_available(device) && op >= 0 && op < FV_OP_COUNT && backends[device]->supports(op, dtype);
}

int fv_backend_require(const fv_backend *be, int op, int dtype) {
  if (be->supports(op, dtype)) return FV_OK;
  if (!be->supports(op, FV_FLOAT32) && !be->supports(op, FV_FLOAT64)) /* no dtype at all */
    return fv_fail(FV_ERR_DEVICE, "%s: not implemented on %s yet", fv_op_name(op), be->name);
  return fv_fail(FV_ERR_DTYPE, "%s: dtype %s is not supported on %s", fv_op_name(op), fv_dtype_name(dtype), be->name);
}
