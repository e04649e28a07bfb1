/* test_device.c: checks of the core's device plumbing (core/device.c, fv_copy_ across
 * devices, arange on a device, the "not implemented" and allocation-failure messages)
 * against the stand-in cuda backend of fake_device.h, so that they run on machines
 * without a GPU. The real CUDA kernels are checked by spec/cuda_spec.lua on a GPU.
 *
 * `make ctest` builds it against build/libfovea.so; spec/c_programs_spec.lua runs it.
 * Exits 1 when a check fails; the last line is "N checks, N fail". */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "fake_device.h"

static int g_fail = 0, g_checks = 0;

#define CHECK(cond, ...)                                  \
  do {                                                    \
    g_checks++;                                           \
    if (!(cond)) {                                        \
      g_fail++;                                           \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);         \
      printf(__VA_ARGS__);                                \
      printf(" [%s]\n", fv_last_error());                 \
    }                                                     \
  } while (0)

static fv_tensor *from_values(int ndim, const int64_t *shape, const double *v, int dtype) {
  fv_tensor *t;
  if (fv_empty(&t, ndim, shape, dtype, FV_CPU)) return NULL;
  if (fv_copy_from_f64(t, v, fv_shape_numel(ndim, shape))) return NULL;
  return t;
}

/* t's values (any device) as doubles in row-major order; n elements */
static int values(const fv_tensor *t, double *out, int64_t n) {
  fv_tensor *c;
  if (fv_to_device(&c, t, FV_CPU)) return 1;
  int status = fv_copy_to_f64(c, out, n);
  fv_tensor_release(c);
  return status;
}

static int same(const double *a, const double *b, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!(a[i] == b[i] || (a[i] != a[i] && b[i] != b[i]))) return 0;
  return 1;
}

static void round_trips(void) {
  int64_t shape[2] = {2, 3};
  double v[6] = {1, -2.5, 3, 0.25, NAN, 6};
  int dtypes[4] = {FV_FLOAT32, FV_FLOAT64, FV_INT64, FV_UINT8};
  for (int k = 0; k < 4; k++) {
    fv_tensor *t = from_values(2, shape, v, dtypes[k]), *g = NULL, *back = NULL;
    CHECK(t && !fv_to_device(&g, t, FV_CUDA), "to cuda (%s)", fv_dtype_name(dtypes[k]));
    if (!g) continue;
    CHECK(g->device_type == FV_CUDA && g->scalar_type == dtypes[k] && fv_tensor_is_contiguous(g),
          "device, dtype and layout of the copy");
    CHECK(fv_tensor_data(g) == NULL, "no host pointer for a device tensor");
    CHECK(!fv_to_device(&back, g, FV_CPU) && back->device_type == FV_CPU, "back to cpu");
    double a[6], b[6];
    CHECK(!fv_copy_to_f64(t, a, 6) && !fv_copy_to_f64(back, b, 6) && same(a, b, 6), "round trip keeps values (%s)",
          fv_dtype_name(dtypes[k]));
    fv_tensor_release(t);
    fv_tensor_release(g);
    fv_tensor_release(back);
  }
  /* same device: a new reference to the same tensor */
  fv_tensor *t = from_values(2, shape, v, FV_FLOAT32), *same_t = NULL;
  int before = t->refcount;
  CHECK(!fv_to_device(&same_t, t, FV_CPU) && same_t == t && t->refcount == before + 1, "to the same device");
  fv_tensor_release(same_t);
  fv_tensor_release(t);
}

static void strided_sources(void) {
  int64_t shape[2] = {2, 3};
  double v[6] = {1, 2, 3, 4, 5, 6};
  fv_tensor *t = from_values(2, shape, v, FV_FLOAT64), *tt, *g, *n, *gn;
  /* a transposed (non-contiguous) cpu tensor to the device */
  CHECK(!fv_transpose(&tt, t, 0, 1) && !fv_to_device(&g, tt, FV_CUDA), "transposed to cuda");
  double got[6], want[6] = {1, 4, 2, 5, 3, 6};
  CHECK(!values(g, got, 6) && same(got, want, 6), "transposed values");
  /* a narrowed view with an offset, device to cpu */
  fv_tensor *gt;
  CHECK(!fv_to_device(&gt, t, FV_CUDA) && !fv_narrow(&n, gt, 1, 1, 2) && !fv_to_device(&gn, n, FV_CPU),
        "narrowed device view to cpu");
  double want_n[4] = {2, 3, 5, 6};
  CHECK(!fv_copy_to_f64(gn, got, 4) && same(got, want_n, 4), "narrowed values");
  /* an expanded (stride 0) view */
  fv_tensor *row, *e, *ge;
  int64_t one[1] = {3}, big[2] = {4, 3};
  double r[3] = {7, 8, 9};
  row = from_values(1, one, r, FV_FLOAT32);
  CHECK(!fv_expand(&e, row, 2, big) && !fv_to_device(&ge, e, FV_CUDA), "expanded to cuda");
  double want_e[12] = {7, 8, 9, 7, 8, 9, 7, 8, 9, 7, 8, 9}, got_e[12];
  CHECK(!values(ge, got_e, 12) && same(got_e, want_e, 12), "expanded values");
  fv_tensor *list[] = {t, tt, g, n, gn, gt, row, e, ge};
  for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) fv_tensor_release(list[i]);
}

static void copies_across(void) {
  /* float64 cpu (3) broadcast into a transposed float32 device view (2, 3) */
  int64_t s3[1] = {3}, s32[2] = {3, 2};
  double v[3] = {1.5, -2, 300};
  fv_tensor *src = from_values(1, s3, v, FV_FLOAT64), *dst, *dt;
  CHECK(!fv_zeros(&dst, 2, s32, FV_FLOAT32, FV_CUDA) && !fv_transpose(&dt, dst, 0, 1), "device destination");
  CHECK(!fv_copy_(dt, src), "copy cpu -> cuda with broadcast, conversion and strides");
  double got[6], want[6] = {1.5, 1.5, -2, -2, 300, 300}; /* dst (3, 2) row-major */
  CHECK(!values(dst, got, 6) && same(got, want, 6), "values after the copy");
  /* device float32 -> cpu uint8 (rounding, saturation) */
  fv_tensor *u;
  CHECK(!fv_empty(&u, 2, s32, FV_UINT8, FV_CPU) && !fv_copy_(u, dst), "copy cuda -> cpu uint8");
  double want_u[6] = {2, 2, 0, 0, 255, 255};
  CHECK(!fv_copy_to_f64(u, got, 6) && same(got, want_u, 6), "uint8 values");
  /* same dtype, contiguous, same shape: straight transfer */
  int64_t before = fake_transfers;
  fv_tensor *c;
  CHECK(!fv_empty(&c, 2, s32, FV_FLOAT32, FV_CPU) && !fv_copy_(c, dst), "plain copy back");
  CHECK(fake_transfers == before + 1, "one transfer for a plain copy (%lld)", (long long)(fake_transfers - before));
  /* shape mismatch across devices is still an error */
  int64_t s4[1] = {4};
  fv_tensor *bad;
  CHECK(!fv_zeros(&bad, 1, s4, FV_FLOAT32, FV_CPU) && fv_copy_(dst, bad) == FV_ERR_SHAPE, "shape checked");
  fv_tensor *list[] = {src, dst, dt, u, c, bad};
  for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) fv_tensor_release(list[i]);
}

static void autograd_through_moves(void) {
  int64_t s[1] = {3};
  double v[3] = {1, 2, 3};
  fv_tensor *x = from_values(1, s, v, FV_FLOAT64), *g, *y, *z;
  x->needs_grad = 1;
  CHECK(!fv_to_device(&g, x, FV_CUDA) && g->grad_fn != NULL, "the move is recorded");
  CHECK(!fv_binary_scalar(&y, FV_OP_MUL, g, 2.0, 0) && !fv_reduce(&z, FV_OP_SUM, y, 0, 0, 1, 0), "ops on the device");
  CHECK(!fv_backward(z, NULL, 0), "backward");
  double got[3], want[3] = {2, 2, 2};
  CHECK(x->gradient && x->gradient->device_type == FV_CPU && !fv_copy_to_f64(x->gradient, got, 3) &&
            same(got, want, 3),
        "the gradient is on the cpu, where x is");
  fv_tensor *list[] = {x, g, y, z};
  for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) fv_tensor_release(list[i]);
}

static void creation_and_errors(void) {
  fv_tensor *a;
  CHECK(!fv_arange(&a, 0, 5, 1, FV_INT64, FV_CUDA) && a->device_type == FV_CUDA, "arange on the device");
  double got[5], want[5] = {0, 1, 2, 3, 4};
  CHECK(!values(a, got, 5) && same(got, want, 5), "arange values");
  fv_tensor_release(a);
  fv_tensor *x, *out;
  int64_t s4[4] = {1, 1, 4, 4}, sw[4] = {1, 1, 3, 3};
  fv_tensor *w;
  CHECK(!fv_zeros(&x, 4, s4, FV_FLOAT32, FV_CUDA) && !fv_zeros(&w, 4, sw, FV_FLOAT32, FV_CUDA), "device inputs");
  fake_refused_op = FV_OP_CONV2D;
  int status = fv_conv2d(&out, x, w, NULL, 1, 1, 0, 0, 1, 1, 1);
  CHECK(status == FV_ERR_DEVICE && strstr(fv_last_error(), "not implemented on cuda yet"),
        "an op the backend lacks says so (status %d)", status);
  fake_refused_op = -1;
  CHECK(!fv_conv2d(&out, x, w, NULL, 1, 1, 0, 0, 1, 1, 1) && out->device_type == FV_CUDA && out->sizes[2] == 2,
        "the stand-in's nn kernels (the CPU's) run on device tensors");
  fv_tensor_release(out);
  fv_tensor_release(x);
  fv_tensor_release(w);
  int64_t huge[1] = {(int64_t)1 << 40};
  status = fv_empty(&x, 1, huge, FV_FLOAT64, FV_CUDA);
  CHECK(status == FV_ERR_MEMORY && strstr(fv_last_error(), "cannot allocate") &&
            strstr(fv_last_error(), "fake cuda: out of memory"),
        "allocation failure keeps the backend's reason (status %d)", status);
  fv_tensor *t;
  int64_t s1[1] = {2};
  CHECK(!fv_zeros(&t, 1, s1, FV_FLOAT32, FV_CPU) && fv_to_device(&out, t, 7) == FV_ERR_DEVICE, "unknown device");
  fv_tensor_release(t);
}

/* Pinned memory and the asynchronous upload: fv_pin_memory's copy, is_pinned, the
 * upload path of fv_to_device and fv_copy_ (the source retained until settled), the
 * pinned loader's reuse rule, and the errors. */
static void pinned_uploads(void) {
  int64_t shape[2] = {2, 3};
  double v[6] = {1, -2.5, 3, 0.25, 5, 6};
  fv_tensor *t = from_values(2, shape, v, FV_FLOAT32), *p = NULL, *p2 = NULL, *g = NULL;
  int64_t live0 = fv_live_bytes(), allocs0 = fake_pinned_allocs;
  CHECK(!fv_tensor_is_pinned(t), "a plain tensor is not pinned");
  CHECK(!fv_pin_memory(&p, t, FV_CUDA) && p != t && fv_tensor_is_pinned(p) && p->device_type == FV_CPU &&
            p->scalar_type == FV_FLOAT32 && fv_tensor_is_contiguous(p),
        "pin_memory gives a pinned contiguous cpu copy");
  CHECK(fake_pinned_bytes == 24 && fake_pinned_allocs == allocs0 + 1, "one pinned block of 24 bytes (%lld)",
        (long long)fake_pinned_bytes);
  CHECK(fv_live_bytes() == live0 + 24, "pinned memory counts in the live bytes");
  double got[6];
  CHECK(p && !fv_copy_to_f64(p, got, 6) && same(got, v, 6), "same values");
  CHECK(!fv_pin_memory(&p2, p, FV_CUDA) && p2 == p, "pinning a pinned tensor gives it back");
  fv_tensor_release(p2);
  /* upload: an immediate copy here, the source held until settled */
  int64_t uploads = fake_uploads, transfers = fake_transfers;
  int refs = p->storage->refcount;
  CHECK(!fv_to_device(&g, p, FV_CUDA) && g->device_type == FV_CUDA, "a pinned tensor to cuda");
  CHECK(fake_uploads == uploads + 1 && fake_transfers == transfers + 1, "by one upload");
  CHECK(p->storage->refcount == refs + 1 && fake_flight_count == 1, "the source is held while in flight");
  CHECK(g && !values(g, got, 6) && same(got, v, 6), "uploaded values");
  fv_storage *held = p->storage;
  fv_tensor_release(p); /* the caller lets go: the memory stays until the copy is done */
  CHECK(fake_pinned_bytes == 24 && held->refcount == 1, "still alive while in flight");
  fake_settle();
  CHECK(fake_pinned_bytes == 0 && fake_flight_count == 0, "given back once settled (%lld)",
        (long long)fake_pinned_bytes);
  /* fv_copy_ into an existing device tensor, converting: uploaded, then the device's copy */
  fv_tensor *q = NULL, *d = NULL;
  CHECK(!fv_pin_memory(&q, t, FV_CUDA) && !fv_zeros(&d, 2, shape, FV_FLOAT64, FV_CUDA), "pinned source, device dst");
  uploads = fake_uploads;
  CHECK(!fv_copy_(d, q) && fake_uploads == uploads + 1, "copy_ from a pinned tensor uploads");
  CHECK(!values(d, got, 6) && same(got, v, 6), "copied values");
  /* a non-contiguous view of pinned memory takes the synchronous path */
  fv_tensor *qt = NULL, *gt = NULL;
  uploads = fake_uploads;
  CHECK(!fv_transpose(&qt, q, 0, 1) && fv_tensor_is_pinned(qt) && !fv_to_device(&gt, qt, FV_CUDA) &&
            fake_uploads == uploads,
        "a strided pinned view is not uploaded");
  double want_t[6] = {1, 0.25, -2.5, 5, 3, 6};
  CHECK(gt && !values(gt, got, 6) && same(got, want_t, 6), "transposed values");
  /* autograd through pin_memory and the upload */
  fv_tensor *x = from_values(1, shape + 1, v, FV_FLOAT64), *xp = NULL, *xg = NULL, *y = NULL, *z = NULL;
  x->needs_grad = 1;
  CHECK(!fv_pin_memory(&xp, x, FV_CUDA) && xp->grad_fn && !fv_to_device(&xg, xp, FV_CUDA) && xg->grad_fn,
        "pin_memory and the upload are recorded");
  CHECK(!fv_binary_scalar(&y, FV_OP_MUL, xg, 3.0, 0) && !fv_reduce(&z, FV_OP_SUM, y, 0, 0, 1, 0),
        "ops on the uploaded tensor");
  CHECK(!fv_backward(z, NULL, 0) && x->gradient && !fv_copy_to_f64(x->gradient, got, 3) && got[0] == 3 &&
            got[1] == 3 && got[2] == 3,
        "the gradient reaches the cpu leaf");
  /* errors */
  CHECK(fv_pin_memory(&p2, g, FV_CUDA) == FV_ERR_DEVICE && strstr(fv_last_error(), "pin_memory: the float32 2x3") &&
            strstr(fv_last_error(), "only cpu tensors can be pinned"),
        "a device tensor cannot be pinned");
  CHECK(fv_pin_memory(&p2, t, FV_CPU) == FV_ERR_DEVICE && strstr(fv_last_error(), "not for cpu"),
        "pinned for the cpu is refused");
  fake_settle();
  fv_tensor *list[] = {t, g, q, d, qt, gt, x, xp, xg, y, z};
  for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) fv_tensor_release(list[i]);
  CHECK(fake_pinned_bytes == 0, "every pinned block given back (%lld)", (long long)fake_pinned_bytes);
}

int main(void) {
  if (fv_backend_register(&fake_backend)) {
    printf("cannot register the fake backend: %s\n", fv_last_error());
    return 1;
  }
  round_trips();
  strided_sources();
  copies_across();
  autograd_through_moves();
  creation_and_errors();
  pinned_uploads();
  fake_settle();
  CHECK(fake_allocated == 0, "every device allocation freed (%lld bytes left)", (long long)fake_allocated);
  printf("%d checks, %d fail\n", g_checks, g_fail);
  return g_fail ? 1 : 0;
}
