/* geometry.c: flips (horizontal, vertical, transpose), rotation about the centre with
 * bilinear sampling and a constant fill, crop and constant padding of H x W x C images
 * (uint8 or float32). Every op returns a new contiguous image of the input's dtype. */
#include <math.h>
#include <string.h>

#include "image_internal.h"

/* A new image (h, w, C) of src's dtype; src is freed when that fails. */
static int new_like(fvi_image *src, int64_t h, int64_t w, fvi_image *dst) {
  int status = fvi_image_new(dst, h, w, src->c, src->dtype);
  if (status) fvi_image_free(src);
  return status;
}

static int finish(fv_tensor **out, fvi_image *src, fvi_image *dst) {
  fvi_image_free(src);
  return fvi_image_give(out, dst);
}

static size_t pixel_bytes(const fvi_image *im) { return (size_t)im->c * (size_t)fv_dtype_size(im->dtype); }

int fv_image_flip(fv_tensor **out, const fv_tensor *img, int mode) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "flip: out is NULL");
  if (mode != FV_FLIP_HORIZONTAL && mode != FV_FLIP_VERTICAL && mode != FV_FLIP_TRANSPOSE)
    return fv_fail(FV_ERR_ARGUMENT, "flip: unknown mode %d (FV_FLIP_HORIZONTAL, _VERTICAL or _TRANSPOSE)", mode);
  fvi_image src, dst;
  FV_TRY(fvi_image_input("flip", img, 1, &src));
  int64_t h = src.h, w = src.w;
  int transpose = mode == FV_FLIP_TRANSPOSE;
  FV_TRY(new_like(&src, transpose ? w : h, transpose ? h : w, &dst));
  size_t px = pixel_bytes(&src);
  const char *s = src.data; /* (H, W, C) */
  char *d = dst.data;       /* (H, W, C), or (W, H, C) for transpose */
  for (int64_t y = 0; y < h; y++) {
    if (mode == FV_FLIP_VERTICAL) {
      memcpy(d + (size_t)(h - 1 - y) * w * px, s + (size_t)y * w * px, (size_t)w * px);
      continue;
    }
    for (int64_t x = 0; x < w; x++) {
      size_t to = transpose ? (size_t)(x * h + y) : (size_t)(y * w + (w - 1 - x));
      memcpy(d + to * px, s + (size_t)(y * w + x) * px, px);
    }
  }
  return finish(out, &src, &dst);
}

/* cos and sin of degrees, exact for multiples of 90. */
static void rotation(double degrees, double *c, double *s) {
  static const double quarter[4][2] = {{1, 0}, {0, 1}, {-1, 0}, {0, -1}};
  const double pi = 3.14159265358979323846;
  double r = fmod(degrees, 360.0);
  if (r < 0) r += 360.0;
  if (r == 0.0 || r == 90.0 || r == 180.0 || r == 270.0) {
    *c = quarter[(int)(r / 90.0)][0];
    *s = quarter[(int)(r / 90.0)][1];
    return;
  }
  *c = cos(r * pi / 180.0);
  *s = sin(r * pi / 180.0);
}

int fv_image_rotate(fv_tensor **out, const fv_tensor *img, double degrees, double fill) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "rotate: out is NULL");
  if (!isfinite(degrees)) return fv_fail(FV_ERR_ARGUMENT, "rotate: angle %g is not finite", degrees);
  fvi_image src, dst;
  FV_TRY(fvi_image_input("rotate", img, 1, &src));
  int64_t h = src.h, w = src.w, c = src.c;
  FV_TRY(new_like(&src, h, w, &dst));
  int is_u8 = src.dtype == FV_UINT8;
  const uint8_t *s8 = src.data; /* (H, W, C) when uint8 */
  const float *sf = src.data;   /* (H, W, C) when float32 */
  uint8_t *d8 = dst.data;
  float *df = dst.data;
  double cs, sn, cx = (w - 1) / 2.0, cy = (h - 1) / 2.0;
  rotation(degrees, &cs, &sn);
  for (int64_t y = 0; y < h; y++)
    for (int64_t x = 0; x < w; x++) {
      /* the source point that lands on (x, y): the inverse rotation */
      double dx = x - cx, dy = y - cy;
      double sx = cx + cs * dx - sn * dy, sy = cy + sn * dx + cs * dy;
      double fx0 = floor(sx), fy0 = floor(sy), fx = sx - fx0, fy = sy - fy0;
      int64_t x0 = (int64_t)fx0, y0 = (int64_t)fy0;
      for (int64_t ch = 0; ch < c; ch++) {
        double v[4]; /* taps (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1) */
        for (int k = 0; k < 4; k++) {
          int64_t tx = x0 + (k & 1), ty = y0 + (k >> 1);
          int64_t i = (ty * w + tx) * c + ch;
          v[k] = tx < 0 || tx >= w || ty < 0 || ty >= h ? fill : is_u8 ? s8[i] : sf[i];
        }
        double r = (v[0] * (1 - fx) + v[1] * fx) * (1 - fy) + (v[2] * (1 - fx) + v[3] * fx) * fy;
        int64_t o = (y * w + x) * c + ch;
        if (is_u8)
          d8[o] = fvi_u8(r);
        else
          df[o] = (float)r;
      }
    }
  return finish(out, &src, &dst);
}

int fv_image_crop(fv_tensor **out, const fv_tensor *img, int64_t y, int64_t x, int64_t h, int64_t w) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "crop: out is NULL");
  fvi_image src, dst;
  FV_TRY(fvi_image_input("crop", img, 1, &src));
  if (y < 0 || x < 0 || h < 1 || w < 1 || y > src.h - h || x > src.w - w) {
    fvi_image_free(&src);
    return fv_fail(FV_ERR_INDEX, "crop: window y=%lld x=%lld h=%lld w=%lld does not lie inside image %s",
                   (long long)y, (long long)x, (long long)h, (long long)w, fv_shape_of(img));
  }
  FV_TRY(new_like(&src, h, w, &dst));
  size_t px = pixel_bytes(&src);
  const char *s = src.data; /* (H, W, C) */
  char *d = dst.data;       /* (h, w, C) */
  for (int64_t r = 0; r < h; r++)
    memcpy(d + (size_t)r * w * px, s + ((size_t)(y + r) * src.w + x) * px, (size_t)w * px);
  return finish(out, &src, &dst);
}

int fv_image_pad(fv_tensor **out, const fv_tensor *img, int64_t top, int64_t bottom, int64_t left, int64_t right,
                 double value) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "pad: out is NULL");
  const int64_t most = 0x7fffffff;
  if (top < 0 || bottom < 0 || left < 0 || right < 0 || top > most || bottom > most || left > most || right > most)
    return fv_fail(FV_ERR_ARGUMENT, "pad: padding top=%lld bottom=%lld left=%lld right=%lld must be 0..2^31-1",
                   (long long)top, (long long)bottom, (long long)left, (long long)right);
  fvi_image src, dst;
  FV_TRY(fvi_image_input("pad", img, 1, &src));
  int64_t w = src.w + left + right;
  FV_TRY(new_like(&src, src.h + top + bottom, w, &dst));
  int64_t n = dst.h * dst.w * dst.c;
  if (dst.dtype == FV_UINT8)
    memset(dst.data, fvi_u8(value), (size_t)n);
  else
    for (int64_t i = 0; i < n; i++) ((float *)dst.data)[i] = (float)value;
  size_t px = pixel_bytes(&src);
  const char *s = src.data; /* (H, W, C) */
  char *d = dst.data;       /* (H + top + bottom, w, C) */
  for (int64_t r = 0; r < src.h; r++)
    memcpy(d + ((size_t)(r + top) * w + left) * px, s + (size_t)r * src.w * px, (size_t)src.w * px);
  return finish(out, &src, &dst);
}
