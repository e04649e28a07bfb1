/* image_internal.h: helpers shared by the image files in core/image/ (argument checks,
 * output allocation, rounding to uint8, the LAB conversion used by CLAHE). Not public. */
#ifndef FOVEA_IMAGE_INTERNAL_H
#define FOVEA_IMAGE_INTERNAL_H

#include <stdint.h>

#include "../internal.h"
#include "../fovea_image.h"

/* An image tensor and what the ops need of it. Only common.c reads fv_tensor fields, so
 * a change of the struct touches that file alone. */
typedef struct fvi_image {
  fv_tensor *tensor; /* one reference to a contiguous CPU tensor */
  int64_t h, w, c;
  int dtype;         /* FV_UINT8 or FV_FLOAT32 */
  void *data;        /* (h, w, c) */
} fvi_image;

/* Checks that img is a live CPU tensor of shape H x W x C (H, W, C >= 1) with dtype
 * uint8 or float32 (float32 only when allow_float) and describes a contiguous
 * reference to it (the same tensor, retained, when it already is). */
int fvi_image_input(const char *op, const fv_tensor *img, int allow_float, fvi_image *out);

/* A new contiguous CPU image of shape h x w x c. */
int fvi_image_new(fvi_image *out, int64_t h, int64_t w, int64_t c, int dtype);

/* Drops the reference (the tensor may be NULL). */
void fvi_image_free(fvi_image *im);

/* Hands the tensor to the caller: *out = im->tensor, and im no longer owns it. */
int fvi_image_give(fv_tensor **out, fvi_image *im);

/* Checks that t is a live CPU tensor; copies its dims into sizes (FV_MAX_DIMS long) and
 * returns them through ndim and dtype, with a contiguous reference in *contig. */
int fvi_tensor_input(const char *op, const fv_tensor *t, int *ndim, int64_t *sizes, int *dtype,
                     fv_tensor **contig);

/* Rounds to nearest (ties to even, like OpenCV's saturate_cast) and clamps to 0..255;
 * NaN gives 0. */
static inline uint8_t fvi_u8(double v) {
  if (!(v > 0.0)) return 0;
  if (v >= 255.0) return 255;
  return (uint8_t)__builtin_lrint(v);
}

/* 8-bit RGB <-> 8-bit LAB exactly as OpenCV's cvtColor (lab.c): L scaled to 0..255, a
 * and b offset by 128. n pixels; rgb_step bytes between RGB pixels (3, or 4 with alpha). */
void fvi_rgb_to_lab8(const uint8_t *rgb, int rgb_step, uint8_t *lab, int64_t n);
void fvi_lab8_to_rgb(const uint8_t *lab, uint8_t *rgb, int rgb_step, int64_t n);

#endif
