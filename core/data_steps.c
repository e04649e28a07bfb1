/* data_steps.c: transform pipelines described as data (fovea_data.h): per-sample random
 * numbers, CLAHE on gray or colour images, and fv_data_apply, which runs a list of steps
 * on one image. The threaded loader (loader.c) and the Lua transforms
 * (lua/fovea/data/transforms.lua) both come here, so they give the same images. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "fovea_image.h"
#include "fovea_data.h"

double fv_data_uniform(uint64_t seed, uint64_t epoch, uint64_t index, uint64_t draw) {
  /* one Philox block keyed by the seed hashes (epoch, index) into the key of the
   * sample's own stream; draw is the position in that stream */
  uint32_t r[4];
  fv_philox4x32((epoch << 32) ^ index, seed, r);
  uint64_t key = ((uint64_t)r[0] << 32) | r[1];
  return fv_philox_uniform(key, 0, draw);
}

/* Checks that img is a live uint8 H x W x C CPU image; returns a contiguous reference. */
static int u8_image(const char *op, const fv_tensor *img, fv_tensor **contig) {
  FV_TRY(fv_check_live(op, img));
  if (img->device_type != FV_CPU)
    return fv_fail(FV_ERR_DEVICE, "%s: image %s must be on the cpu", op, fv_shape_of(img));
  if (img->ndim != 3 || img->sizes[0] < 1 || img->sizes[1] < 1 || img->sizes[2] < 1 || img->sizes[2] > 4)
    return fv_fail(FV_ERR_SHAPE, "%s: image must be H x W x C with C in 1..4, got %s", op, fv_shape_of(img));
  if (img->scalar_type != FV_UINT8)
    return fv_fail(FV_ERR_DTYPE, "%s: image must be uint8, not %s", op, fv_dtype_name(img->scalar_type));
  return fv_contiguous(contig, img);
}

/* 1 when every pixel of a (h*w, c >= 3) image has equal R, G and B. */
static int channels_equal(const uint8_t *p, int64_t n, int64_t c) {
  for (int64_t i = 0; i < n; i++, p += c)
    if (p[0] != p[1] || p[0] != p[2]) return 0;
  return 1;
}

/* Equalises one plane taken from img (channel 0, or luma when use_luma) and writes it
 * back into the colour channels (all but alpha) of a copy of img. */
static int clahe_gray_plane(fv_tensor **out, fv_tensor *img, int use_luma, double clip, int tx, int ty) {
  int64_t h = img->sizes[0], w = img->sizes[1], c = img->sizes[2];
  int64_t shape[3] = {h, w, 1}; /* (H, W, 1) */
  fv_tensor *plane = NULL, *eq = NULL, *copy = NULL;
  int status;
  if (use_luma) {
    status = fv_image_channels(&plane, img, 1);
  } else {
    status = fv_empty(&plane, 3, shape, FV_UINT8, FV_CPU);
    if (!status) {
      const uint8_t *s = fv_tensor_data(img);
      uint8_t *d = fv_tensor_data(plane);
      for (int64_t i = 0; i < h * w; i++) d[i] = s[i * c];
    }
  }
  if (!status) status = fv_image_clahe(&eq, plane, clip, tx, ty, FV_CLAHE_LAB);
  if (!status) status = fv_clone(&copy, img);
  if (!status) {
    const uint8_t *e = fv_tensor_data(eq);
    uint8_t *d = fv_tensor_data(copy);
    int64_t colour = c >= 3 ? 3 : 1; /* channels that are not alpha */
    for (int64_t i = 0; i < h * w; i++)
      for (int64_t k = 0; k < colour; k++) d[i * c + k] = e[i];
    *out = copy;
  }
  fv_tensor_release(plane);
  fv_tensor_release(eq);
  return status;
}

int fv_data_clahe(fv_tensor **out, const fv_tensor *img, double clip_limit, int tiles_x, int tiles_y, int mode) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "clahe: out is NULL");
  if (mode < FV_DATA_CLAHE_AUTO || mode > FV_DATA_CLAHE_GREEN)
    return fv_fail(FV_ERR_ARGUMENT, "clahe: mode %d is not auto (0), gray (1), lab (2) or green (3)", mode);
  fv_tensor *src;
  FV_TRY(u8_image("clahe", img, &src));
  int64_t h = src->sizes[0], w = src->sizes[1], c = src->sizes[2];
  int status;
  if (c == 1) {
    status = fv_image_clahe(out, src, clip_limit, tiles_x, tiles_y, FV_CLAHE_LAB);
  } else if (c == 2) {
    status = clahe_gray_plane(out, src, 0, clip_limit, tiles_x, tiles_y);
  } else {
    int equal = mode == FV_DATA_CLAHE_AUTO || mode == FV_DATA_CLAHE_GRAY
                    ? channels_equal(fv_tensor_data(src), h * w, c) : 0;
    if (mode == FV_DATA_CLAHE_GRAY || (mode == FV_DATA_CLAHE_AUTO && equal))
      status = clahe_gray_plane(out, src, !equal, clip_limit, tiles_x, tiles_y);
    else
      status = fv_image_clahe(out, src, clip_limit, tiles_x, tiles_y,
                              mode == FV_DATA_CLAHE_GREEN ? FV_CLAHE_GREEN : FV_CLAHE_LAB);
  }
  fv_tensor_release(src);
  return status;
}

/* (C, H, W) float32 -> (v - mean[c]) / std[c]. */
static int normalize(fv_tensor **out, const fv_tensor *x, const fv_data_step *st) {
  FV_TRY(fv_check_live("normalize", x));
  if (x->device_type != FV_CPU || x->ndim != 3 || x->scalar_type != FV_FLOAT32)
    return fv_fail(FV_ERR_SHAPE, "normalize: expects a float32 C x H x W cpu tensor (after to_tensor), got %s %s",
                   fv_dtype_name(x->scalar_type), fv_shape_of(x));
  int64_t c = x->sizes[0], hw = x->sizes[1] * x->sizes[2], n = st->i[0];
  if (n != 1 && n != c)
    return fv_fail(FV_ERR_SHAPE, "normalize: %lld mean/std values for a tensor of %lld channels (%s)", (long long)n,
                   (long long)c, fv_shape_of(x));
  fv_tensor *src, *dst;
  FV_TRY(fv_contiguous(&src, x));
  int status = fv_empty(&dst, 3, src->sizes, FV_FLOAT32, FV_CPU);
  if (!status) {
    const float *s = fv_tensor_data(src); /* (C, H, W) */
    float *d = fv_tensor_data(dst);
    for (int64_t ch = 0; ch < c; ch++) {
      double m = st->d[n == 1 ? 0 : ch], sd = st->d[4 + (n == 1 ? 0 : ch)];
      for (int64_t i = 0; i < hw; i++) d[ch * hw + i] = (float)((s[ch * hw + i] - m) / sd);
    }
    *out = dst;
  }
  fv_tensor_release(src);
  return status;
}

static const char *const step_names[FV_STEP_KIND_COUNT] = {"channels", "resize", "clahe", "random_flips",
                                                           "random_rotation", "to_tensor", "normalize"};

/* Checks one step's parameters; the message names the step. */
static int check_step(const fv_data_step *st, int k) {
  if (st->kind < 0 || st->kind >= FV_STEP_KIND_COUNT)
    return fv_fail(FV_ERR_ARGUMENT, "pipeline: step %d has unknown kind %d", k + 1, (int)st->kind);
  const char *name = step_names[st->kind];
  const char *problem = NULL;
  switch (st->kind) {
  case FV_STEP_CHANNELS:
    if (st->i[0] < 1 || st->i[0] > 4) problem = "channels must be 1..4";
    break;
  case FV_STEP_RESIZE:
    if (st->i[0] < 1 || st->i[1] < 1 || st->i[0] > 65536 || st->i[1] > 65536) problem = "size must be 1..65536";
    else if (st->i[2] < FV_RESIZE_LINEAR || st->i[2] > FV_RESIZE_AREA) problem = "unknown resize mode";
    break;
  case FV_STEP_CLAHE:
    if (isnan(st->d[0])) problem = "clip limit is NaN";
    else if (st->i[0] < 1 || st->i[1] < 1 || st->i[0] > 4096 || st->i[1] > 4096) problem = "tiles must be 1..4096";
    else if (st->i[2] < FV_DATA_CLAHE_AUTO || st->i[2] > FV_DATA_CLAHE_GREEN) problem = "unknown CLAHE mode";
    break;
  case FV_STEP_FLIPS:
    for (int j = 0; j < 3; j++)
      if (!(st->d[j] >= 0 && st->d[j] <= 1)) problem = "probabilities must be in [0, 1]";
    break;
  case FV_STEP_ROTATION:
    if (!(st->d[0] >= 0 && st->d[0] <= 1)) problem = "probability must be in [0, 1]";
    else if (!isfinite(st->d[1]) || !isfinite(st->d[2]) || st->d[1] > st->d[2]) problem = "angles must be lo <= hi";
    else if (!isfinite(st->d[3])) problem = "fill must be finite";
    break;
  case FV_STEP_TO_TENSOR:
    if (st->i[0] < 0 || st->i[0] > 4) problem = "channels must be 0 (keep) or 1..4";
    break;
  case FV_STEP_NORMALIZE:
    if (st->i[0] < 1 || st->i[0] > 4) problem = "1..4 mean/std values expected";
    else
      for (int j = 0; j < st->i[0]; j++)
        if (!isfinite(st->d[j]) || !isfinite(st->d[4 + j]) || st->d[4 + j] == 0) problem = "std must be nonzero";
    break;
  }
  if (st->slot < -1) problem = "slot must be >= -1";
  if (problem) return fv_fail(FV_ERR_ARGUMENT, "pipeline: step %d (%s): %s", k + 1, name, problem);
  return FV_OK;
}

int fv_data_check_steps(int n, const fv_data_step *steps) {
  if (n < 0 || (n > 0 && !steps)) return fv_fail(FV_ERR_ARGUMENT, "pipeline: %d steps and no array", n);
  for (int k = 0; k < n; k++) FV_TRY(check_step(&steps[k], k));
  return FV_OK;
}

/* One step on cur; *next is a new reference (possibly cur itself, retained). */
static int apply_step(fv_tensor **next, fv_tensor *cur, const fv_data_step *st, uint64_t seed, uint64_t epoch,
                      uint64_t index) {
  uint64_t base = (uint64_t)(st->slot < 0 ? 0 : st->slot) * 16;
  switch (st->kind) {
  case FV_STEP_CHANNELS:
    if (cur->ndim == 3 && cur->sizes[2] == st->i[0]) return *next = fv_ref(cur), FV_OK;
    return fv_image_channels(next, cur, (int)st->i[0]);
  case FV_STEP_RESIZE:
    if (cur->ndim == 3 && cur->sizes[0] == st->i[0] && cur->sizes[1] == st->i[1]) return *next = fv_ref(cur), FV_OK;
    return fv_image_resize(next, cur, st->i[0], st->i[1], (int)st->i[2]);
  case FV_STEP_CLAHE:
    return fv_data_clahe(next, cur, st->d[0], (int)st->i[0], (int)st->i[1], (int)st->i[2]);
  case FV_STEP_FLIPS: {
    fv_tensor *img = fv_ref(cur);
    static const int modes[3] = {FV_FLIP_HORIZONTAL, FV_FLIP_VERTICAL, FV_FLIP_TRANSPOSE};
    for (int j = 0; j < 3; j++) {
      if (!(fv_data_uniform(seed, epoch, index, base + (uint64_t)j) < st->d[j])) continue;
      fv_tensor *flipped;
      int status = fv_image_flip(&flipped, img, modes[j]);
      fv_tensor_release(img);
      if (status) return status;
      img = flipped;
    }
    *next = img;
    return FV_OK;
  }
  case FV_STEP_ROTATION: {
    if (!(fv_data_uniform(seed, epoch, index, base) < st->d[0])) return *next = fv_ref(cur), FV_OK;
    double angle = st->d[1] + (st->d[2] - st->d[1]) * fv_data_uniform(seed, epoch, index, base + 1);
    return fv_image_rotate(next, cur, angle, st->d[3]);
  }
  case FV_STEP_TO_TENSOR: {
    if (st->i[0] == 0 || (cur->ndim == 3 && cur->sizes[2] == st->i[0])) return fv_image_to_chw(next, cur, NULL, NULL);
    fv_tensor *conv;
    FV_TRY(fv_image_channels(&conv, cur, (int)st->i[0]));
    int status = fv_image_to_chw(next, conv, NULL, NULL);
    fv_tensor_release(conv);
    return status;
  }
  case FV_STEP_NORMALIZE:
    return normalize(next, cur, st);
  }
  return fv_fail(FV_ERR_ARGUMENT, "pipeline: unknown step kind %d", (int)st->kind);
}

int fv_data_apply(fv_tensor **out, const fv_tensor *img, int n, const fv_data_step *steps, uint64_t seed,
                  uint64_t epoch, uint64_t index) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "pipeline: out is NULL");
  FV_TRY(fv_check_live("pipeline", img));
  FV_TRY(fv_data_check_steps(n, steps));
  fv_tensor *cur = fv_ref(img);
  for (int k = 0; k < n; k++) {
    fv_tensor *next;
    int status = apply_step(&next, cur, &steps[k], seed, epoch, index);
    fv_tensor_release(cur);
    if (status) return status;
    cur = next;
  }
  *out = cur;
  return FV_OK;
}
