/* clahe.c: contrast limited adaptive histogram equalisation, step for step as OpenCV's
 * CLAHE_Impl::apply for 8-bit images (imgproc/src/clahe.cpp), so results match it:
 *   - when W or H is not divisible by the grid, the image is extended at the bottom
 *     and right by reflection-101 by (tiles - size % tiles) in BOTH directions (a full
 *     extra tile's worth where that side was divisible: OpenCV's quirk, kept);
 *   - per tile a 256-bin histogram, clipped at max(1, int(clip * area / 256)) when
 *     clip > 0, the excess spread evenly and its remainder one per `step` bins;
 *   - LUT = round(cumsum * (255f / area)) in float;
 *   - each pixel blends the LUTs of the four nearest tile centres bilinearly, in
 *     float, with OpenCV's exact expression order, rounded half to even.
 * Colour images: the L channel of 8-bit LAB (lab.c) or the green channel. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image_internal.h"

/* OpenCV's borderInterpolate for BORDER_REFLECT_101 (any distance outside). */
static int reflect101(int p, int len) {
  if (len == 1) return 0;
  while (p < 0 || p >= len) p = p < 0 ? -p : 2 * (len - 1) - p;
  return p;
}

/* lut (tiles_y * tiles_x, 256) of the tiles of the extended image, whose row y and
 * column x are src's rows[y] and cols[x]. */
static void tile_luts(const uint8_t *src, int w, const int *rows, const int *cols, int tw, int th, int tiles_x,
                      int tiles_y, int clip, uint8_t *lut) {
  float lut_scale = 255.0f / (float)(tw * th);
  for (int k = 0; k < tiles_x * tiles_y; k++) {
    int ty = k / tiles_x, tx = k % tiles_x;
    int hist[256] = {0};
    for (int y = ty * th; y < (ty + 1) * th; y++) {
      const uint8_t *row = src + (size_t)rows[y] * w;
      for (int x = tx * tw; x < (tx + 1) * tw; x++) hist[row[cols[x]]]++;
    }
    if (clip > 0) {
      int clipped = 0;
      for (int i = 0; i < 256; i++)
        if (hist[i] > clip) {
          clipped += hist[i] - clip;
          hist[i] = clip;
        }
      int batch = clipped / 256, residual = clipped - batch * 256;
      for (int i = 0; i < 256; i++) hist[i] += batch;
      if (residual != 0) {
        int step = 256 / residual > 1 ? 256 / residual : 1;
        for (int i = 0; i < 256 && residual > 0; i += step, residual--) hist[i]++;
      }
    }
    int sum = 0;
    for (int i = 0; i < 256; i++) {
      sum += hist[i];
      lut[k * 256 + i] = fvi_u8((float)sum * lut_scale);
    }
  }
}

/* dst = the LUTs of the tiles around each pixel, blended bilinearly (src may be dst). */
static void interpolate(const uint8_t *src, uint8_t *dst, int h, int w, const uint8_t *lut, int tw, int th,
                        int tiles_x, int tiles_y, int *ind1, int *ind2, float *xa) {
  float inv_tw = 1.0f / (float)tw, inv_th = 1.0f / (float)th;
  for (int x = 0; x < w; x++) {
    float txf = (float)x * inv_tw - 0.5f;
    int tx1 = (int)floorf(txf), tx2 = tx1 + 1;
    xa[x] = txf - (float)tx1;
    ind1[x] = (tx1 > 0 ? tx1 : 0) * 256;
    ind2[x] = (tx2 < tiles_x - 1 ? tx2 : tiles_x - 1) * 256;
  }
  for (int y = 0; y < h; y++) {
    float tyf = (float)y * inv_th - 0.5f;
    int ty1 = (int)floorf(tyf), ty2 = ty1 + 1;
    float ya = tyf - (float)ty1, ya1 = 1.0f - ya;
    ty1 = ty1 > 0 ? ty1 : 0;
    ty2 = ty2 < tiles_y - 1 ? ty2 : tiles_y - 1;
    const uint8_t *plane1 = lut + (size_t)ty1 * tiles_x * 256, *plane2 = lut + (size_t)ty2 * tiles_x * 256;
    for (int x = 0; x < w; x++) {
      int v = src[(size_t)y * w + x];
      float xa1 = 1.0f - xa[x];
      float res = (plane1[ind1[x] + v] * xa1 + plane1[ind2[x] + v] * xa[x]) * ya1 +
                  (plane2[ind1[x] + v] * xa1 + plane2[ind2[x] + v] * xa[x]) * ya;
      dst[(size_t)y * w + x] = fvi_u8(res);
    }
  }
}

/* CLAHE of one h x w plane (src and dst may be the same buffer). */
static int clahe_plane(const uint8_t *src, uint8_t *dst, int h, int w, double clip_limit, int tiles_x, int tiles_y) {
  int pad_h = 0, pad_w = 0;
  if (w % tiles_x != 0 || h % tiles_y != 0) {
    pad_h = tiles_y - h % tiles_y;
    pad_w = tiles_x - w % tiles_x;
  }
  int tw = (w + pad_w) / tiles_x, th = (h + pad_h) / tiles_y;
  if ((int64_t)tw * th > INT_MAX / 2)
    return fv_fail(FV_ERR_ARGUMENT, "clahe: tiles of %dx%d pixels are too large (use a finer grid)", th, tw);
  int area = tw * th, clip = 0;
  if (clip_limit > 0.0) {
    double c = clip_limit * area / 256;
    clip = c >= INT_MAX ? INT_MAX : (int)c;
    clip = clip > 1 ? clip : 1;
  }
  uint8_t *lut = malloc((size_t)tiles_x * tiles_y * 256); /* (tiles_y * tiles_x, 256) */
  int *rows = malloc((size_t)(h + pad_h) * sizeof *rows); /* (H + pad_h) source row of each row */
  int *cols = malloc((size_t)(w + pad_w) * sizeof *cols); /* (W + pad_w) source column of each column */
  int *ind = malloc((size_t)w * 2 * sizeof *ind);         /* (2, W) LUT offsets of the left/right tiles */
  float *xa = malloc((size_t)w * sizeof *xa);             /* (W) weight of the right tile */
  int ok = lut && rows && cols && ind && xa;
  if (ok) {
    for (int y = 0; y < h + pad_h; y++) rows[y] = reflect101(y, h);
    for (int x = 0; x < w + pad_w; x++) cols[x] = reflect101(x, w);
    tile_luts(src, w, rows, cols, tw, th, tiles_x, tiles_y, clip, lut);
    interpolate(src, dst, h, w, lut, tw, th, tiles_x, tiles_y, ind, ind + w, xa);
  }
  free(lut);
  free(rows);
  free(cols);
  free(ind);
  free(xa);
  return ok ? FV_OK : fv_fail(FV_ERR_MEMORY, "clahe: out of memory for a %dx%d image", h, w);
}

/* d (H, W, C) = s with one channel equalised: L of 8-bit LAB (converted back to RGB) or
 * green. C is 3 or 4; alpha is copied. */
static int clahe_colour(const uint8_t *s, uint8_t *d, int h, int w, int c, int lab_mode, double clip_limit,
                        int tiles_x, int tiles_y) {
  size_t n = (size_t)h * w;
  uint8_t *plane = calloc(n, 1);                     /* (H, W) the channel */
  uint8_t *lab = lab_mode ? malloc(3 * n) : NULL;    /* (H, W, 3) 8-bit LAB */
  if (!plane || (lab_mode && !lab)) {
    free(plane);
    free(lab);
    return fv_fail(FV_ERR_MEMORY, "clahe: out of memory for a %dx%dx%d image", h, w, c);
  }
  memcpy(d, s, n * c);
  if (lab_mode) fvi_rgb_to_lab8(s, c, lab, (int64_t)n);
  const uint8_t *chan = lab_mode ? lab : s + 1;
  int step = lab_mode ? 3 : c;
  for (size_t i = 0; i < n; i++) plane[i] = chan[i * step];
  int status = clahe_plane(plane, plane, h, w, clip_limit, tiles_x, tiles_y);
  if (!status && lab_mode) {
    for (size_t i = 0; i < n; i++) lab[i * 3] = plane[i];
    fvi_lab8_to_rgb(lab, d, c, (int64_t)n);
  }
  if (!status && !lab_mode)
    for (size_t i = 0; i < n; i++) d[i * c + 1] = plane[i];
  free(plane);
  free(lab);
  return status;
}

int fv_image_clahe(fv_tensor **out, const fv_tensor *img, double clip_limit, int tiles_x, int tiles_y, int mode) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "clahe: out is NULL");
  if (isnan(clip_limit)) return fv_fail(FV_ERR_ARGUMENT, "clahe: clip limit is NaN");
  if (tiles_x < 1 || tiles_y < 1 || tiles_x > 4096 || tiles_y > 4096)
    return fv_fail(FV_ERR_ARGUMENT, "clahe: tile grid %dx%d must be 1..4096 on each side", tiles_x, tiles_y);
  fvi_image src, dst;
  FV_TRY(fvi_image_input("clahe", img, 0, &src));
  const char *problem = NULL;
  if (src.c == 2 || src.c > 4) problem = "C must be 1 (gray), 3 (RGB) or 4 (RGBA)";
  if (src.c >= 3 && mode != FV_CLAHE_LAB && mode != FV_CLAHE_GREEN) problem = "mode must be FV_CLAHE_LAB or _GREEN";
  if (src.h >= INT_MAX / 2 || src.w >= INT_MAX / 2) problem = "sides must be below 2^30";
  if (problem) {
    fvi_image_free(&src);
    return fv_fail(FV_ERR_ARGUMENT, "clahe: image %s (mode %d): %s", fv_shape_of(img), mode, problem);
  }
  int h = (int)src.h, w = (int)src.w, c = (int)src.c;
  int status = fvi_image_new(&dst, h, w, c, FV_UINT8);
  if (status) {
    fvi_image_free(&src);
    return status;
  }
  if (c == 1)
    status = clahe_plane(src.data, dst.data, h, w, clip_limit, tiles_x, tiles_y);
  else
    status = clahe_colour(src.data, dst.data, h, w, c, mode == FV_CLAHE_LAB, clip_limit, tiles_x, tiles_y);
  fvi_image_free(&src);
  if (status) {
    fvi_image_free(&dst);
    return status;
  }
  return fvi_image_give(out, &dst);
}
