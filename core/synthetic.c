/* synthetic.c: drawing primitives for synthetic images (fovea_data.h): soft discs with
 * vignetting, polylines of varying width, noise and a circular mask, all blended into
 * a uint8 H x W x C tensor in place. lua/fovea/data/synthetic.lua composes them into
 * fundus-like images; the geometry is chosen there. */
#include <math.h>
#include <stdlib.h>

#include "internal.h"
#include "fovea_data.h"

typedef struct canvas {
  uint8_t *px; /* (H, W, C) */
  int64_t h, w, c;
} canvas;

static int canvas_of(const char *op, fv_tensor *img, canvas *cv) {
  FV_TRY(fv_check_live(op, img));
  if (img->device_type != FV_CPU || img->scalar_type != FV_UINT8 || img->ndim != 3 || img->sizes[2] < 1 ||
      img->sizes[2] > 4 || !fv_tensor_is_contiguous(img))
    return fv_fail(FV_ERR_ARGUMENT, "%s: image must be a contiguous uint8 H x W x C cpu tensor, C in 1..4, not %s %s",
                   op, fv_dtype_name(img->scalar_type), fv_shape_of(img));
  *cv = (canvas){fv_tensor_data(img), img->sizes[0], img->sizes[1], img->sizes[2]};
  return FV_OK;
}

static inline double clamp01(double v) { return v < 0 ? 0 : v > 1 ? 1 : v; }

/* Edge coverage of a shape whose signed inside distance is `inside` (pixels). */
static inline double coverage(double inside, double softness) {
  if (softness <= 1e-9) return inside >= 0 ? 1.0 : 0.0;
  return clamp01(inside / softness + 0.5);
}

static inline uint8_t to_u8(double v) { return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)lrint(v); }

/* Pixel rows and columns [lo, hi) that a box around (cy, cx) of half size r covers. */
static void span(double centre, double r, int64_t n, int64_t *lo, int64_t *hi) {
  double a = floor(centre - r), b = ceil(centre + r) + 1;
  *lo = a < 0 ? 0 : a > (double)n ? n : (int64_t)a;
  *hi = b < 0 ? 0 : b > (double)n ? n : (int64_t)b;
}

static int check_finite(const char *op, int n, const double *v) {
  for (int i = 0; i < n; i++)
    if (!isfinite(v[i])) return fv_fail(FV_ERR_ARGUMENT, "%s: argument %d is not finite", op, i + 1);
  return FV_OK;
}

int fv_draw_disc(fv_tensor *img, double cy, double cx, double radius, const double *color, double opacity,
                 double softness, double vignette) {
  canvas cv;
  FV_TRY(canvas_of("draw_disc", img, &cv));
  double args[6] = {cy, cx, radius, opacity, softness, vignette};
  FV_TRY(check_finite("draw_disc", 6, args));
  if (!color || radius < 0 || softness < 0)
    return fv_fail(FV_ERR_ARGUMENT, "draw_disc: needs a colour, radius >= 0, softness >= 0");
  int64_t y0, y1, x0, x1;
  span(cy, radius + softness, cv.h, &y0, &y1);
  span(cx, radius + softness, cv.w, &x0, &x1);
  for (int64_t y = y0; y < y1; y++)
    for (int64_t x = x0; x < x1; x++) {
      double ddy = (double)y - cy, ddx = (double)x - cx, d = sqrt(ddy * ddy + ddx * ddx);
      double a = opacity * coverage(radius - d, softness);
      if (a <= 0) continue;
      double rel = radius > 0 ? fmin(d / radius, 1.0) : 0.0, shade = 1.0 - vignette * rel * rel;
      uint8_t *p = cv.px + (y * cv.w + x) * cv.c;
      for (int64_t k = 0; k < cv.c; k++) p[k] = to_u8(p[k] * (1 - a) + color[k] * shade * a);
    }
  return FV_OK;
}

int fv_draw_polyline(fv_tensor *img, int n, const double *ys, const double *xs, double width0, double width1,
                     const double *color, double opacity, double softness) {
  canvas cv;
  FV_TRY(canvas_of("draw_polyline", img, &cv));
  if (n < 2 || !ys || !xs || !color)
    return fv_fail(FV_ERR_ARGUMENT, "draw_polyline: needs 2 or more points and a colour");
  double args[4] = {width0, width1, opacity, softness};
  FV_TRY(check_finite("draw_polyline", 4, args));
  FV_TRY(check_finite("draw_polyline (ys)", n, ys));
  FV_TRY(check_finite("draw_polyline (xs)", n, xs));
  if (width0 < 0 || width1 < 0 || softness < 0)
    return fv_fail(FV_ERR_ARGUMENT, "draw_polyline: widths and softness must be >= 0");
  double reach = fmax(width0, width1) / 2 + softness;
  double ymin = ys[0], ymax = ys[0], xmin = xs[0], xmax = xs[0];
  for (int i = 1; i < n; i++) {
    ymin = fmin(ymin, ys[i]), ymax = fmax(ymax, ys[i]);
    xmin = fmin(xmin, xs[i]), xmax = fmax(xmax, xs[i]);
  }
  int64_t by0, by1, bx0, bx1;
  span((ymin + ymax) / 2, (ymax - ymin) / 2 + reach, cv.h, &by0, &by1);
  span((xmin + xmax) / 2, (xmax - xmin) / 2 + reach, cv.w, &bx0, &bx1);
  int64_t bh = by1 - by0, bw = bx1 - bx0;
  if (bh <= 0 || bw <= 0) return FV_OK;
  float *cov = calloc((size_t)(bh * bw), sizeof *cov); /* (bh, bw) coverage, the maximum over segments */
  if (!cov) return fv_fail(FV_ERR_MEMORY, "draw_polyline: out of memory");
  for (int k = 0; k + 1 < n; k++) {
    double ay = ys[k], ax = xs[k], dy = ys[k + 1] - ay, dx = xs[k + 1] - ax, len2 = dy * dy + dx * dx;
    int64_t y0, y1, x0, x1;
    span((ay + ys[k + 1]) / 2, fabs(dy) / 2 + reach, cv.h, &y0, &y1);
    span((ax + xs[k + 1]) / 2, fabs(dx) / 2 + reach, cv.w, &x0, &x1);
    for (int64_t y = y0; y < y1; y++)
      for (int64_t x = x0; x < x1; x++) {
        double py = (double)y - ay, pxx = (double)x - ax;
        double t = len2 > 0 ? clamp01((py * dy + pxx * dx) / len2) : 0.0;
        double ey = py - t * dy, ex = pxx - t * dx, d = sqrt(ey * ey + ex * ex);
        double width = width0 + (width1 - width0) * ((double)k + t) / (double)(n - 1);
        float c = (float)coverage(width / 2 - d, softness);
        float *slot = &cov[(y - by0) * bw + (x - bx0)];
        if (c > *slot) *slot = c;
      }
  }
  for (int64_t y = by0; y < by1; y++)
    for (int64_t x = bx0; x < bx1; x++) {
      double a = opacity * cov[(y - by0) * bw + (x - bx0)];
      if (a <= 0) continue;
      uint8_t *p = cv.px + (y * cv.w + x) * cv.c;
      for (int64_t k = 0; k < cv.c; k++) p[k] = to_u8(p[k] * (1 - a) + color[k] * a);
    }
  free(cov);
  return FV_OK;
}

int fv_draw_noise(fv_tensor *img, double amplitude, uint64_t seed) {
  canvas cv;
  FV_TRY(canvas_of("draw_noise", img, &cv));
  if (!isfinite(amplitude)) return fv_fail(FV_ERR_ARGUMENT, "draw_noise: amplitude is not finite");
  int64_t colour = cv.c == 2 || cv.c == 4 ? cv.c - 1 : cv.c; /* alpha untouched */
  uint32_t words[4];
  for (int64_t i = 0; i < cv.h * cv.w; i++) {
    if (i % 4 == 0) fv_philox4x32((uint64_t)i / 4, seed, words); /* one block, four pixels */
    double v = amplitude * (2 * (words[i % 4] * (1.0 / 4294967296.0)) - 1);
    uint8_t *p = cv.px + i * cv.c;
    for (int64_t k = 0; k < colour; k++) p[k] = to_u8(p[k] + v);
  }
  return FV_OK;
}

int fv_draw_mask_circle(fv_tensor *img, double cy, double cx, double radius, double softness,
                        const double *outside) {
  canvas cv;
  FV_TRY(canvas_of("draw_mask_circle", img, &cv));
  double args[4] = {cy, cx, radius, softness};
  FV_TRY(check_finite("draw_mask_circle", 4, args));
  if (!outside || softness < 0) return fv_fail(FV_ERR_ARGUMENT, "draw_mask_circle: needs a colour and softness >= 0");
  for (int64_t y = 0; y < cv.h; y++)
    for (int64_t x = 0; x < cv.w; x++) {
      double ddy = (double)y - cy, ddx = (double)x - cx;
      double keep = coverage(radius - sqrt(ddy * ddy + ddx * ddx), softness);
      if (keep >= 1) continue;
      uint8_t *p = cv.px + (y * cv.w + x) * cv.c;
      for (int64_t k = 0; k < cv.c; k++) p[k] = to_u8(p[k] * keep + outside[k] * (1 - keep));
    }
  return FV_OK;
}
