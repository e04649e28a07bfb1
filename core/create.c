/* create.c: tensors made from nothing: zeros, ones, full, arange, rand, randn, and the
 * default random generator. */
#include <math.h>

#include "internal.h"

static fv_generator default_generator = {0x5eed, 0};

fv_generator *fv_default_generator(void) { return &default_generator; }

int fv_manual_seed(uint64_t seed) {
  default_generator.seed = seed;
  default_generator.offset = 0;
  return FV_OK;
}

int fv_full(fv_tensor **out, int ndim, const int64_t *shape, double value, int dtype, int device) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "full: out is NULL");
  fv_tensor *t;
  FV_TRY(fv_alloc_like_shape(&t, ndim, shape, dtype, device));
  int status = fv_fill_(t, value);
  if (status) {
    fv_tensor_release(t);
    return status;
  }
  *out = t;
  return FV_OK;
}

int fv_zeros(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device) {
  return fv_full(out, ndim, shape, 0.0, dtype, device);
}

int fv_ones(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device) {
  return fv_full(out, ndim, shape, 1.0, dtype, device);
}

int fv_arange(fv_tensor **out, double start, double end, double step, int dtype, int device) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "arange: out is NULL");
  if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step))
    return fv_fail(FV_ERR_ARGUMENT, "arange: bad range start %g end %g step %g", start, end, step);
  double count = ceil((end - start) / step);
  int64_t n = count > 0 ? (int64_t)count : 0;
  fv_tensor *t;
  FV_TRY(fv_alloc_like_shape(&t, 1, &n, dtype, FV_CPU));
  int status = FV_OK;
  if (n > 0) {
    fv_tensor *values;
    status = fv_alloc_like_shape(&values, 1, &n, FV_FLOAT64, FV_CPU);
    if (!status) {
      double *v = fv_tensor_data(values);
      for (int64_t i = 0; i < n; i++) v[i] = start + (double)i * step;
      status = fv_copy_(t, values);
      fv_tensor_release(values);
    }
  }
  if (status) {
    fv_tensor_release(t);
    return status;
  }
  if (device == FV_CPU) {
    *out = t;
    return FV_OK;
  }
  status = fv_to_device(out, t, device); /* made on the cpu, then moved */
  fv_tensor_release(t);
  return status;
}

static int random_tensor(int op, fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device,
                         fv_generator *gen) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "%s: out is NULL", fv_op_name(op));
  const fv_backend *be = fv_backend_for(fv_op_name(op), device);
  if (!be) return fv_last_status();
  if (dtype != FV_FLOAT32 && dtype != FV_FLOAT64)
    return fv_fail(FV_ERR_DTYPE, "%s: dtype %s is not supported (float32 or float64)", fv_op_name(op),
                   fv_dtype_name(dtype));
  fv_tensor *t;
  FV_TRY(fv_alloc_like_shape(&t, ndim, shape, dtype, device));
  if (!gen) gen = &default_generator;
  int status = be->random(op, t, gen->seed, gen->offset);
  if (status) {
    fv_tensor_release(t);
    return status;
  }
  gen->offset += (uint64_t)fv_tensor_numel(t);
  *out = t;
  return FV_OK;
}

int fv_rand(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device, fv_generator *gen) {
  return random_tensor(FV_OP_RAND, out, ndim, shape, dtype, device, gen);
}

int fv_randn(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device, fv_generator *gen) {
  return random_tensor(FV_OP_RANDN, out, ndim, shape, dtype, device, gen);
}
