/* tiff.c: the first page of a TIFF file -> an image tensor, through libtiff's RGBA
 * reader (any compression, strips or tiles, photometric interpretation and bit depth
 * it supports). Gives uint8 H x W x 3, or H x W x 1 for one-sample files that are not
 * palette images (gray of any bit depth; samples wider than 8 bits keep the high 8).
 * libtiff's error and warning handlers are replaced by ones that print nothing and
 * keep the first error for the message. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <tiffio.h>

#include "image_internal.h"

/* The first libtiff error of the current read on this thread: module (often the file
 * name) and text. */
static _Thread_local char tiff_module[128];
static _Thread_local char tiff_text[256];

static void on_tiff_error(const char *module, const char *fmt, va_list args) {
  if (tiff_text[0]) return;
  snprintf(tiff_module, sizeof tiff_module, "%s", module ? module : "");
  vsnprintf(tiff_text, sizeof tiff_text, fmt, args);
  if (!tiff_text[0]) snprintf(tiff_text, sizeof tiff_text, "unknown libtiff error");
}

static void on_tiff_warning(const char *module, const char *fmt, va_list args) {
  (void)module;
  (void)fmt;
  (void)args;
}

/* Fails naming path with libtiff's error (its module unless that is the path), or
 * fallback when libtiff said nothing. */
static int tiff_fail(const char *path, const char *what, const char *fallback) {
  if (!tiff_text[0]) return fv_fail(FV_ERR_IO, "read_tiff: '%s': %s: %s", path, what, fallback);
  int module = tiff_module[0] && strcmp(tiff_module, path) != 0;
  return fv_fail(FV_ERR_IO, "read_tiff: '%s': %s: %s%s%s", path, what, module ? tiff_module : "",
                 module ? ": " : "", tiff_text);
}

/* Copies the RGBA raster (top-left origin) into the image: R only, or R, G, B. */
static void copy_raster(const uint32_t *raster, uint8_t *dst, size_t n, int c) {
  for (size_t i = 0; i < n; i++) {
    uint32_t p = raster[i];
    dst[i * c] = (uint8_t)TIFFGetR(p);
    if (c == 3) {
      dst[i * 3 + 1] = (uint8_t)TIFFGetG(p);
      dst[i * 3 + 2] = (uint8_t)TIFFGetB(p);
    }
  }
}

int fv_image_read_tiff(fv_tensor **out, const char *path) {
  if (!out || !path) return fv_fail(FV_ERR_ARGUMENT, "read_tiff: out and path are required");
  TIFFSetErrorHandler(on_tiff_error);
  TIFFSetWarningHandler(on_tiff_warning);
  tiff_text[0] = '\0';
  TIFF *tif = TIFFOpen(path, "r");
  if (!tif) return tiff_fail(path, "cannot open", "not a readable TIFF");
  tiff_text[0] = '\0'; /* errors libtiff recovered from while opening do not count */
  uint32_t w = 0, h = 0;
  uint16_t spp = 1, photometric = PHOTOMETRIC_MINISBLACK;
  TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w);
  TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
  TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &photometric);
  char why[1024] = "";
  int status = FV_OK;
  fvi_image img = {0};    /* (H, W, C) uint8 */
  uint32_t *raster = NULL; /* (H, W) packed ABGR pixels from libtiff */
  if (w == 0 || h == 0) {
    status = fv_fail(FV_ERR_IO, "read_tiff: '%s': image has no pixels (%ux%u)", path, (unsigned)h, (unsigned)w);
    goto done;
  }
  if (!TIFFRGBAImageOK(tif, why)) {
    status = fv_fail(FV_ERR_IO, "read_tiff: '%s': unsupported TIFF layout: %s", path, why);
    goto done;
  }
  int c = spp == 1 && photometric != PHOTOMETRIC_PALETTE ? 1 : 3;
  if ((status = fvi_image_new(&img, h, w, c, FV_UINT8))) {
    char reason[256];
    snprintf(reason, sizeof reason, "%s", fv_last_error());
    status = fv_fail(status, "read_tiff: '%s': cannot allocate a %ux%ux%d image: %s", path, (unsigned)h,
                     (unsigned)w, c, reason);
    goto done;
  }
  raster = _TIFFmalloc((tmsize_t)((size_t)w * h * sizeof *raster));
  if (!raster) {
    status = fv_fail(FV_ERR_MEMORY, "read_tiff: '%s': out of memory for a %ux%u raster", path, (unsigned)h,
                     (unsigned)w);
    goto done;
  }
  if (!TIFFReadRGBAImageOriented(tif, w, h, raster, ORIENTATION_TOPLEFT, 1) || tiff_text[0]) {
    status = tiff_fail(path, "cannot decode", "libtiff's RGBA reader failed");
    goto done;
  }
  copy_raster(raster, img.data, (size_t)w * h, c);
done:
  if (raster) _TIFFfree(raster);
  TIFFClose(tif);
  if (status) {
    fvi_image_free(&img);
    return status;
  }
  return fvi_image_give(out, &img);
}
