/* cpu/copy.c: strided copy with dtype conversion between float32, float64, int64 and
 * uint8, and fill. Float to uint8 rounds and saturates (image use); float to int64
 * truncates toward zero; NaN becomes 0 in both. */
#include <math.h>

#include "cpu.h"

typedef struct {
  char *dst, *src;
} copy_ctx;

static inline uint8_t to_u8(double v) {
  if (!(v > 0)) return 0;
  if (v >= 255) return 255;
  return (uint8_t)(v + 0.5);
}

static inline int64_t to_i64(double v) {
  if (v != v) return 0;
  if (v >= 9.2233720368547758e18) return INT64_MAX;
  if (v <= -9.2233720368547758e18) return INT64_MIN;
  return (int64_t)v;
}

#define CONVERT_float(v) ((float)(v))
#define CONVERT_double(v) ((double)(v))
#define CONVERT_int64_t(v) (to_i64((double)(v)))
#define CONVERT_uint8_t(v) (to_u8((double)(v)))

#define COPY_ROW(DT, ST)                                                                          \
  static void copy_##DT##_##ST(void *ctx, const int64_t *off, int64_t n, const int64_t *stride) { \
    const copy_ctx *c = ctx;                                                                      \
    DT *d = (DT *)c->dst + off[0];                                                                \
    const ST *s = (const ST *)c->src + off[1];                                                    \
    for (int64_t i = 0; i < n; i++) d[i * stride[0]] = CONVERT_##DT(s[i * stride[1]]);           \
  }

#define COPY_ROWS_FROM(ST) COPY_ROW(float, ST) COPY_ROW(double, ST) COPY_ROW(int64_t, ST) COPY_ROW(uint8_t, ST)
COPY_ROWS_FROM(float)
COPY_ROWS_FROM(double)
COPY_ROWS_FROM(int64_t)
COPY_ROWS_FROM(uint8_t)

/* index of a supported dtype in the table below, or -1 */
static int slot(int dtype) {
  switch (dtype) {
    case FV_FLOAT32: return 0;
    case FV_FLOAT64: return 1;
    case FV_INT64: return 2;
    case FV_UINT8: return 3;
    default: return -1;
  }
}

static const fv_row_fn copy_rows[4][4] = {
    {copy_float_float, copy_float_double, copy_float_int64_t, copy_float_uint8_t},
    {copy_double_float, copy_double_double, copy_double_int64_t, copy_double_uint8_t},
    {copy_int64_t_float, copy_int64_t_double, copy_int64_t_int64_t, copy_int64_t_uint8_t},
    {copy_uint8_t_float, copy_uint8_t_double, copy_uint8_t_int64_t, copy_uint8_t_uint8_t},
};

int fv_cpu_copy(fv_tensor *dst, const fv_tensor *src) {
  int d = slot(dst->scalar_type), s = slot(src->scalar_type);
  if (d < 0 || s < 0)
    return fv_fail(FV_ERR_DTYPE, "copy: %s to %s is not supported on cpu", fv_dtype_name(src->scalar_type),
                   fv_dtype_name(dst->scalar_type));
  copy_ctx ctx = {fv_cpu_base(dst), fv_cpu_base(src)};
  const fv_tensor *ts[2] = {dst, src};
  fv_iter it;
  fv_iter_init(&it, 2, ts);
  fv_iter_rows(&it, copy_rows[d][s], &ctx);
  return FV_OK;
}

int fv_cpu_fill(fv_tensor *dst, double value) {
  fv_storage storage = {&value, sizeof value, 1, FV_CPU, 0};
  fv_tensor scalar = {0};
  scalar.storage = &storage;
  scalar.scalar_type = FV_FLOAT64;
  fv_tensor src;
  fv_broadcast_view(&src, &scalar, dst->ndim, dst->sizes);
  return fv_cpu_copy(dst, &src);
}
