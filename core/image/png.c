/* png.c: PNG files <-> image tensors through libpng.
 *
 * Read: every colour type (gray, gray+alpha, RGB, RGBA, palette), bit depths 1..16,
 * tRNS transparency (becomes an alpha channel) and Adam7 interlacing. Write: uint8
 * H x W x C (C = 1..4) as 8-bit, float32 as 16-bit.
 * libpng reports errors by longjmp: each entry point keeps its setjmp here, its
 * locals that change after setjmp are volatile, and the error path frees everything. */
#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_internal.h"

/* libpng's last error message, filled by on_png_error before it jumps. */
static _Thread_local char png_message[256];

static void on_png_error(png_structp png, png_const_charp msg) {
  snprintf(png_message, sizeof png_message, "%s", msg);
  png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg;
}

/* Allocates the output of read_png inside the setjmp region: on failure the core's
 * message is kept for the error text and libpng unwinds through png_error. */
static fv_tensor *new_image_or_jump(png_structp png, png_uint_32 h, png_uint_32 w, int c, int dtype) {
  fvi_image im;
  if (fvi_image_new(&im, h, w, c, dtype)) {
    char why[200];
    snprintf(why, sizeof why, "cannot allocate a %ux%ux%d image: %s", (unsigned)h, (unsigned)w, c, fv_last_error());
    png_error(png, why);
  }
  return im.tensor;
}

int fv_image_read_png(fv_tensor **out, const char *path, int keep16) {
  if (!out || !path) return fv_fail(FV_ERR_ARGUMENT, "read_png: out and path are required");
  FILE *fp = fopen(path, "rb");
  if (!fp) return fv_fail(FV_ERR_IO, "read_png: cannot open '%s': %s", path, strerror(errno));
  unsigned char signature[8];
  size_t got = fread(signature, 1, sizeof signature, fp);
  if (got < sizeof signature || png_sig_cmp(signature, 0, sizeof signature)) {
    fclose(fp);
    return fv_fail(FV_ERR_IO, "read_png: '%s' is not a PNG file (%s)", path,
                   got < sizeof signature ? "shorter than the 8-byte signature" : "no PNG signature");
  }
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, on_png_error, on_png_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!info) {
    png_destroy_read_struct(&png, NULL, NULL);
    fclose(fp);
    return fv_fail(FV_ERR_MEMORY, "read_png: '%s': cannot allocate libpng's state", path);
  }
  fv_tensor *volatile img = NULL;        /* (H, W, C) uint8 or float32 result */
  unsigned char *volatile wide = NULL;   /* (H, W*C*2) big-endian 16-bit samples when keep16 */
  png_bytep *volatile rows = NULL;       /* (H) row addresses for png_read_image */
  if (setjmp(png_jmpbuf(png))) {
    free(rows);
    free(wide);
    fv_tensor_release(img);
    png_destroy_read_struct(&png, &info, NULL);
    int truncated = feof(fp);
    fclose(fp);
    return fv_fail(FV_ERR_IO, "read_png: '%s': %s%s", path, png_message, truncated ? " (the file is truncated)" : "");
  }
  png_init_io(png, fp);
  png_set_sig_bytes(png, sizeof signature);
  png_read_info(png, info);
  /* palette -> RGB, gray of 1/2/4 bits -> 8 bits, tRNS -> alpha */
  png_set_expand(png);
  int sixteen = png_get_bit_depth(png, info) == 16;
  if (sixteen && !keep16) png_set_scale_16(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  png_uint_32 h = png_get_image_height(png, info), w = png_get_image_width(png, info);
  int c = png_get_channels(png, info);
  int keep = sixteen && keep16;
  size_t row_bytes = (size_t)w * (size_t)c * (keep ? 2 : 1);
  if (png_get_rowbytes(png, info) != row_bytes) png_error(png, "unexpected row size after conversion");
  img = new_image_or_jump(png, h, w, c, keep ? FV_FLOAT32 : FV_UINT8);
  rows = malloc((size_t)h * sizeof *rows);
  if (keep) wide = malloc((size_t)h * row_bytes);
  if (!rows || (keep && !wide)) png_error(png, "out of memory for the row buffers");
  unsigned char *base = keep ? wide : fv_tensor_data(img);
  for (png_uint_32 y = 0; y < h; y++) rows[y] = base + (size_t)y * row_bytes;
  png_read_image(png, rows);
  png_read_end(png, NULL);
  if (keep) {
    float *dst = fv_tensor_data(img);  /* (H, W, C) values 0..65535 */
    size_t n = (size_t)h * w * (size_t)c;
    for (size_t i = 0; i < n; i++) dst[i] = (float)((wide[2 * i] << 8) | wide[2 * i + 1]);
  }
  free(rows);
  free(wide);
  png_destroy_read_struct(&png, &info, NULL);
  fclose(fp);
  *out = img;
  return FV_OK;
}

static const int color_types[4] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                   PNG_COLOR_TYPE_RGB_ALPHA};

/* Rows of the file to write: the image's own for uint8, 16-bit big-endian samples
 * rounded and clamped from float32 (into *wide, which the caller frees). */
static int prepare_rows(const fvi_image *src, png_bytep *rows, unsigned char **wide) {
  size_t n = (size_t)(src->h * src->w * src->c);
  unsigned char *base = src->data;
  size_t row_bytes = (size_t)(src->w * src->c);
  if (src->dtype == FV_FLOAT32) {
    const float *v = src->data; /* (H, W, C) */
    *wide = malloc(2 * n);
    if (!*wide) return 0;
    for (size_t i = 0; i < n; i++) {
      double x = v[i];
      unsigned s = !(x > 0.0) ? 0 : x >= 65535.0 ? 65535 : (unsigned)__builtin_lrint(x);
      (*wide)[2 * i] = (unsigned char)(s >> 8);
      (*wide)[2 * i + 1] = (unsigned char)(s & 0xff);
    }
    base = *wide;
    row_bytes *= 2;
  }
  for (int64_t y = 0; y < src->h; y++) rows[y] = base + (size_t)y * row_bytes;
  return 1;
}

/* Writes the PNG stream; 0 with png_message set when libpng fails. */
static int encode(FILE *fp, png_bytep *rows, png_uint_32 h, png_uint_32 w, int depth, int color_type) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, on_png_error, on_png_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!info) {
    png_destroy_write_struct(&png, NULL);
    snprintf(png_message, sizeof png_message, "cannot allocate libpng's state");
    return 0;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return 0;
  }
  png_init_io(png, fp);
  png_set_IHDR(png, info, w, h, depth, color_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  return 1;
}

int fv_image_write_png(const char *path, const fv_tensor *img) {
  if (!path) return fv_fail(FV_ERR_ARGUMENT, "write_png: path is required");
  fvi_image src;
  FV_TRY(fvi_image_input("write_png", img, 1, &src));
  int64_t h = src.h, w = src.w, c = src.c;
  int status = FV_OK;
  unsigned char *wide = NULL;  /* (H, W*C*2) 16-bit samples for float32 */
  png_bytep *rows = NULL;      /* (H) row addresses */
  FILE *fp = NULL;
  if (c > 4 || h > 0x7fffffff || w > 0x7fffffff) {
    status = fv_fail(FV_ERR_SHAPE, "write_png: '%s': image %s cannot be a PNG (C must be 1..4, sides < 2^31)",
                     path, fv_shape_of(img));
    goto done;
  }
  rows = malloc((size_t)h * sizeof *rows);
  if (!rows || !prepare_rows(&src, rows, &wide)) {
    status = fv_fail(FV_ERR_MEMORY, "write_png: '%s': out of memory for the rows", path);
    goto done;
  }
  fp = fopen(path, "wb");
  if (!fp) {
    status = fv_fail(FV_ERR_IO, "write_png: cannot create '%s': %s", path, strerror(errno));
    goto done;
  }
  int written = encode(fp, rows, (png_uint_32)h, (png_uint_32)w, wide ? 16 : 8, color_types[c - 1]);
  if (fclose(fp) != 0 && written) {
    written = 0;
    snprintf(png_message, sizeof png_message, "%s", strerror(errno));
  }
  if (!written) {
    remove(path);
    status = fv_fail(FV_ERR_IO, "write_png: cannot write '%s': %s", path, png_message);
  }
done:
  free(rows);
  free(wide);
  fvi_image_free(&src);
  return status;
}
