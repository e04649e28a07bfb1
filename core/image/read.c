/* read.c: fv_image_read, which picks the decoder from the file's first bytes (PNG
 * signature, TIFF "II*\0" / "MM\0*" and BigTIFF "II+\0" / "MM\0+"). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "image_internal.h"

static const unsigned char png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static int is_tiff(const unsigned char *m, size_t n) {
  if (n < 4) return 0;
  return (m[0] == 'I' && m[1] == 'I' && (m[2] == 42 || m[2] == 43) && m[3] == 0) ||
         (m[0] == 'M' && m[1] == 'M' && m[2] == 0 && (m[3] == 42 || m[3] == 43));
}

/* A hint for formats that are recognised but not decoded. */
static const char *known_format(const unsigned char *m, size_t n) {
  if (n >= 3 && m[0] == 0xff && m[1] == 0xd8 && m[2] == 0xff) return " (a JPEG file: convert it to PNG)";
  if (n >= 2 && m[0] == 'B' && m[1] == 'M') return " (a BMP file: convert it to PNG)";
  return "";
}

int fv_image_read(fv_tensor **out, const char *path) {
  if (!out || !path) return fv_fail(FV_ERR_ARGUMENT, "read_image: out and path are required");
  FILE *fp = fopen(path, "rb");
  if (!fp) return fv_fail(FV_ERR_IO, "read_image: cannot open '%s': %s", path, strerror(errno));
  unsigned char magic[8];
  size_t n = fread(magic, 1, sizeof magic, fp);
  fclose(fp);
  if (n == sizeof magic && memcmp(magic, png_magic, sizeof magic) == 0) return fv_image_read_png(out, path, 0);
  if (is_tiff(magic, n)) return fv_image_read_tiff(out, path);
  if (n == 0) return fv_fail(FV_ERR_IO, "read_image: '%s' is empty", path);
  return fv_fail(FV_ERR_IO, "read_image: '%s' is neither PNG nor TIFF%s", path, known_format(magic, n));
}
