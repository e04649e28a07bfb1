/* convert.c: images <-> network tensors (HWC uint8 -> normalised CHW float32, CHW float
 * -> HWC uint8 for heat maps) and channel-count changes (gray, RGB, RGBA). */
#include <math.h>

#include "image_internal.h"

int fv_image_to_chw(fv_tensor **out, const fv_tensor *img, const double *mean, const double *std) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "to_chw: out is NULL");
  fvi_image src;
  FV_TRY(fvi_image_input("to_chw", img, 1, &src));
  int64_t h = src.h, w = src.w, c = src.c;
  for (int64_t ch = 0; ch < c; ch++)
    if ((std && !(isfinite(std[ch]) && std[ch] != 0.0)) || (mean && !isfinite(mean[ch]))) {
      fvi_image_free(&src);
      return fv_fail(FV_ERR_ARGUMENT, "to_chw: channel %lld of image %s has mean %g and std %g (std must be nonzero)",
                     (long long)ch, fv_shape_of(img), mean ? mean[ch] : 0.0, std ? std[ch] : 1.0);
    }
  int64_t shape[3] = {c, h, w}; /* (C, H, W) */
  fv_tensor *t;
  int status = fv_empty(&t, 3, shape, FV_FLOAT32, FV_CPU);
  if (status) {
    fvi_image_free(&src);
    return status;
  }
  float *d = fv_tensor_data(t);     /* (C, H, W) */
  const uint8_t *s8 = src.data;     /* (H, W, C) when uint8 */
  const float *sf = src.data;       /* (H, W, C) when float32 */
  int is_u8 = src.dtype == FV_UINT8;
  double unit = is_u8 ? 1.0 / 255.0 : 1.0;
  for (int64_t ch = 0; ch < c; ch++) {
    double m = mean ? mean[ch] : 0.0, inv = std ? 1.0 / std[ch] : 1.0;
    for (int64_t i = 0; i < h * w; i++) {
      double v = is_u8 ? s8[i * c + ch] : sf[i * c + ch];
      d[ch * h * w + i] = (float)((v * unit - m) * inv);
    }
  }
  fvi_image_free(&src);
  *out = t;
  return FV_OK;
}

int fv_image_from_chw(fv_tensor **out, const fv_tensor *chw, double lo, double hi) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "from_chw: out is NULL");
  if (!isfinite(lo) || !isfinite(hi) || lo == hi)
    return fv_fail(FV_ERR_ARGUMENT, "from_chw: range lo=%g hi=%g must be finite and not empty", lo, hi);
  int ndim, dtype;
  int64_t sizes[FV_MAX_DIMS];
  fv_tensor *src;
  FV_TRY(fvi_tensor_input("from_chw", chw, &ndim, sizes, &dtype, &src));
  int shaped = ndim == 2 || ndim == 3;
  int64_t c = ndim == 3 ? sizes[0] : 1, h = shaped ? sizes[ndim - 2] : 0, w = shaped ? sizes[ndim - 1] : 0;
  const char *problem = NULL;
  if (!shaped) problem = "must be C x H x W or H x W";
  else if (dtype != FV_FLOAT32 && dtype != FV_FLOAT64) problem = "must be float32 or float64";
  else if (c < 1 || h < 1 || w < 1) problem = "is empty";
  fvi_image dst;
  int status = problem ? fv_fail(FV_ERR_ARGUMENT, "from_chw: tensor %s of %s %s", fv_shape_of(chw),
                                 fv_dtype_name(dtype), problem)
                       : fvi_image_new(&dst, h, w, c, FV_UINT8);
  if (!status) {
    const void *s = fv_tensor_data(src); /* (C, H, W) */
    uint8_t *d = dst.data;               /* (H, W, C) */
    double scale = 255.0 / (hi - lo);
    for (int64_t ch = 0; ch < c; ch++)
      for (int64_t i = 0; i < h * w; i++) {
        int64_t k = ch * h * w + i;
        double v = dtype == FV_FLOAT32 ? ((const float *)s)[k] : ((const double *)s)[k];
        d[i * c + ch] = fvi_u8((v - lo) * scale);
      }
  }
  fv_tensor_release(src);
  return status ? status : fvi_image_give(out, &dst);
}

/* One pixel's value of channel k when converting from c channels to n. */
static double channel_value(const double *p, int64_t c, int64_t n, int64_t k, double opaque) {
  int from_color = c >= 3, to_color = n >= 3;
  if (k == n - 1 && (n == 2 || n == 4)) /* the target's alpha */
    return c == 2 || c == 4 ? p[c - 1] : opaque;
  if (from_color && !to_color) return 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
  if (!from_color && to_color) return p[0];
  return p[k];
}

int fv_image_channels(fv_tensor **out, const fv_tensor *img, int channels) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "channels: out is NULL");
  if (channels < 1 || channels > 4)
    return fv_fail(FV_ERR_ARGUMENT, "channels: target of %d channels (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA)", channels);
  fvi_image src, dst;
  FV_TRY(fvi_image_input("channels", img, 1, &src));
  if (src.c > 4) {
    fvi_image_free(&src);
    return fv_fail(FV_ERR_SHAPE, "channels: image %s has %lld channels (1..4 expected)", fv_shape_of(img),
                   (long long)src.c);
  }
  int status = fvi_image_new(&dst, src.h, src.w, channels, src.dtype);
  if (status) {
    fvi_image_free(&src);
    return status;
  }
  int is_u8 = src.dtype == FV_UINT8;
  double opaque = is_u8 ? 255.0 : 1.0;
  for (int64_t i = 0; i < src.h * src.w; i++) {
    double p[4];
    for (int64_t k = 0; k < src.c; k++)
      p[k] = is_u8 ? ((const uint8_t *)src.data)[i * src.c + k] : ((const float *)src.data)[i * src.c + k];
    for (int64_t k = 0; k < channels; k++) {
      double v = channel_value(p, src.c, channels, k, opaque);
      if (is_u8)
        ((uint8_t *)dst.data)[i * channels + k] = fvi_u8(v);
      else
        ((float *)dst.data)[i * channels + k] = (float)v;
    }
  }
  fvi_image_free(&src);
  return fvi_image_give(out, &dst);
}
