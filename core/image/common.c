/* common.c: argument checks and allocation shared by the image ops (core/image/). The
 * only file here that reads fv_tensor's fields. */
#include <string.h>

#include "image_internal.h"

int fvi_tensor_input(const char *op, const fv_tensor *t, int *ndim, int64_t *sizes, int *dtype,
                     fv_tensor **contig) {
  FV_TRY(fv_check_live(op, t));
  if (t->device_type != FV_CPU)
    return fv_fail(FV_ERR_DEVICE, "%s: tensor %s must be on the cpu, not %s", op, fv_shape_of(t),
                   fv_device_name(t->device_type));
  *ndim = t->ndim;
  memcpy(sizes, t->sizes, sizeof t->sizes);
  *dtype = t->scalar_type;
  return fv_contiguous(contig, t);
}

int fvi_image_input(const char *op, const fv_tensor *img, int allow_float, fvi_image *out) {
  FV_TRY(fv_check_live(op, img));
  if (img->ndim != 3)
    return fv_fail(FV_ERR_SHAPE, "%s: image must be H x W x C (3 dimensions), got %s", op, fv_shape_of(img));
  if (img->sizes[0] < 1 || img->sizes[1] < 1 || img->sizes[2] < 1)
    return fv_fail(FV_ERR_SHAPE, "%s: image %s is empty", op, fv_shape_of(img));
  if (img->scalar_type != FV_UINT8 && !(allow_float && img->scalar_type == FV_FLOAT32))
    return fv_fail(FV_ERR_DTYPE, "%s: image dtype %s is not supported (%s expected)", op,
                   fv_dtype_name(img->scalar_type), allow_float ? "uint8 or float32" : "uint8");
  int ndim, dtype;
  int64_t sizes[FV_MAX_DIMS];
  fv_tensor *t;
  FV_TRY(fvi_tensor_input(op, img, &ndim, sizes, &dtype, &t));
  *out = (fvi_image){t, sizes[0], sizes[1], sizes[2], dtype, fv_tensor_data(t)};
  return FV_OK;
}

int fvi_image_new(fvi_image *out, int64_t h, int64_t w, int64_t c, int dtype) {
  int64_t shape[3] = {h, w, c}; /* (H, W, C) */
  fv_tensor *t;
  FV_TRY(fv_empty(&t, 3, shape, dtype, FV_CPU));
  *out = (fvi_image){t, h, w, c, dtype, fv_tensor_data(t)};
  return FV_OK;
}

void fvi_image_free(fvi_image *im) {
  fv_tensor_release(im->tensor);
  im->tensor = NULL;
}

int fvi_image_give(fv_tensor **out, fvi_image *im) {
  *out = im->tensor;
  im->tensor = NULL;
  return FV_OK;
}
