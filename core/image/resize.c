/* resize.c: separable resampling of H x W x C images (uint8 or float32) to h x w.
 *
 * Each axis gets a table of taps (input index, weight) per output index, then rows
 * are filtered horizontally into a float32 buffer and that is filtered vertically.
 * Coordinates use pixel centres: output i sits at input (i + 0.5) * scale - 0.5, with
 * scale = in / out.
 *   FV_RESIZE_LINEAR     2 taps, indices clamped to the edge (OpenCV INTER_LINEAR).
 *   FV_RESIZE_LINEAR_AA  the same when scale <= 1; when shrinking, a triangle of
 *                        radius `scale` input pixels, normalised (Pillow's BILINEAR).
 *   FV_RESIZE_AREA       output i covers input [i * scale, (i + 1) * scale); each input
 *                        pixel weighs its overlap (OpenCV INTER_AREA). */
#include <math.h>
#include <stdlib.h>

#include "image_internal.h"

typedef struct axis_taps {
  int n;          /* taps per output index */
  int64_t *index; /* (out, n) input indices */
  float *weight;  /* (out, n) weights summing to 1; unused taps weigh 0 */
} axis_taps;

static void linear_taps(axis_taps *t, int64_t in, int64_t out, double scale) {
  for (int64_t i = 0; i < out; i++) {
    double centre = (i + 0.5) * scale - 0.5;
    double x0 = floor(centre), f = centre - x0;
    int64_t a = (int64_t)x0, b = a + 1;
    if (a < 0) a = 0;
    if (b < 0) b = 0;
    if (a > in - 1) a = in - 1;
    if (b > in - 1) b = in - 1;
    t->index[i * 2] = a;
    t->index[i * 2 + 1] = b;
    t->weight[i * 2] = (float)(1.0 - f);
    t->weight[i * 2 + 1] = (float)f;
  }
}

/* Taps over input [lo, hi) weighed by weight_of(x); normalised to sum 1. */
typedef double (*weight_fn)(int64_t x, double centre, double scale);

static double triangle(int64_t x, double centre, double scale) {
  double d = fabs((x + 0.5 - centre) / scale);
  return d < 1.0 ? 1.0 - d : 0.0;
}

static double overlap(int64_t x, double start, double scale) {
  double lo = x > start ? x : start, hi = x + 1.0 < start + scale ? x + 1.0 : start + scale;
  return hi > lo ? hi - lo : 0.0;
}

static void window_taps(axis_taps *t, int64_t in, int64_t out, double scale, int area) {
  for (int64_t i = 0; i < out; i++) {
    double centre = area ? i * scale : (i + 0.5) * scale;
    int64_t lo = area ? (int64_t)floor(centre) : (int64_t)floor(centre - scale + 0.5);
    int64_t hi = area ? (int64_t)ceil(centre + scale) : (int64_t)floor(centre + scale + 0.5);
    if (lo < 0) lo = 0;
    if (hi > in) hi = in;
    if (hi - lo > t->n) hi = lo + t->n;
    weight_fn fn = area ? overlap : triangle;
    double sum = 0.0;
    for (int64_t x = lo; x < hi; x++) sum += fn(x, centre, scale);
    for (int k = 0; k < t->n; k++) {
      int64_t x = lo + k;
      int inside = x < hi && sum > 0.0;
      t->index[i * t->n + k] = inside ? x : lo;
      t->weight[i * t->n + k] = inside ? (float)(fn(x, centre, scale) / sum) : 0.0f;
    }
  }
}

static int make_taps(axis_taps *t, int64_t in, int64_t out, int mode) {
  double scale = (double)in / (double)out;
  int windowed = mode == FV_RESIZE_AREA || (mode == FV_RESIZE_LINEAR_AA && scale > 1.0);
  t->n = !windowed ? 2 : (int)ceil(mode == FV_RESIZE_AREA ? scale : 2.0 * scale) + 2;
  t->index = malloc((size_t)out * (size_t)t->n * sizeof *t->index);
  t->weight = malloc((size_t)out * (size_t)t->n * sizeof *t->weight);
  if (!t->index || !t->weight) return 0;
  if (windowed)
    window_taps(t, in, out, scale, mode == FV_RESIZE_AREA);
  else
    linear_taps(t, in, out, scale);
  return 1;
}

/* Reads element i of the source as float. */
static inline float source_at(const void *src, int is_u8, int64_t i) {
  return is_u8 ? (float)((const uint8_t *)src)[i] : ((const float *)src)[i];
}

/* tmp (H, w, C) = src (H, W, C) filtered along W. */
static void filter_rows(const void *src, int is_u8, float *tmp, int64_t h, int64_t in_w, int64_t w, int64_t c,
                        const axis_taps *tx) {
  for (int64_t y = 0; y < h; y++)
    for (int64_t x = 0; x < w; x++)
      for (int64_t ch = 0; ch < c; ch++) {
        float acc = 0.0f;
        for (int k = 0; k < tx->n; k++)
          acc += tx->weight[x * tx->n + k] * source_at(src, is_u8, (y * in_w + tx->index[x * tx->n + k]) * c + ch);
        tmp[(y * w + x) * c + ch] = acc;
      }
}

/* dst (h, w, C) = tmp (H, w, C) filtered along H. */
static void filter_columns(const float *tmp, void *dst, int is_u8, int64_t h, int64_t w, int64_t c,
                           const axis_taps *ty) {
  int64_t row = w * c;
  for (int64_t y = 0; y < h; y++)
    for (int64_t j = 0; j < row; j++) {
      float acc = 0.0f;
      for (int k = 0; k < ty->n; k++) acc += ty->weight[y * ty->n + k] * tmp[ty->index[y * ty->n + k] * row + j];
      if (is_u8)
        ((uint8_t *)dst)[y * row + j] = fvi_u8(acc);
      else
        ((float *)dst)[y * row + j] = acc;
    }
}

int fv_image_resize(fv_tensor **out, const fv_tensor *img, int64_t h, int64_t w, int mode) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "resize: out is NULL");
  if (mode != FV_RESIZE_LINEAR && mode != FV_RESIZE_LINEAR_AA && mode != FV_RESIZE_AREA)
    return fv_fail(FV_ERR_ARGUMENT, "resize: unknown mode %d (FV_RESIZE_LINEAR, _LINEAR_AA or _AREA)", mode);
  if (h < 1 || w < 1 || h > 0x7fffffff || w > 0x7fffffff)
    return fv_fail(FV_ERR_ARGUMENT, "resize: target size %lldx%lld is out of range (1..2^31-1)", (long long)h,
                   (long long)w);
  fvi_image src, dst = {0};
  FV_TRY(fvi_image_input("resize", img, 1, &src));
  int is_u8 = src.dtype == FV_UINT8;
  axis_taps tx = {0, NULL, NULL}, ty = {0, NULL, NULL};
  float *tmp = NULL; /* (H, w, C) after the horizontal pass */
  int status = fvi_image_new(&dst, h, w, src.c, src.dtype);
  if (!status) {
    tmp = malloc((size_t)(src.h * w * src.c) * sizeof *tmp);
    if (!make_taps(&tx, src.w, w, mode) || !make_taps(&ty, src.h, h, mode) || !tmp)
      status = fv_fail(FV_ERR_MEMORY, "resize: out of memory resizing %s to %lldx%lld", fv_shape_of(img),
                       (long long)h, (long long)w);
  }
  if (!status) {
    filter_rows(src.data, is_u8, tmp, src.h, src.w, w, src.c, &tx);
    filter_columns(tmp, dst.data, is_u8, h, w, src.c, &ty);
  }
  free(tx.index);
  free(tx.weight);
  free(ty.index);
  free(ty.weight);
  free(tmp);
  fvi_image_free(&src);
  if (status) {
    fvi_image_free(&dst);
    return status;
  }
  return fvi_image_give(out, &dst);
}
