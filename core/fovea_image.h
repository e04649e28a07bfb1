/* fovea_image.h: image files and image processing on CPU tensors.
 *
 * Read by LuaJIT's ffi.cdef right after fovea.h (no macros, no includes, no include
 * guard). C users include <stdint.h>, <stddef.h> and fovea.h first.
 *
 * Images are contiguous CPU tensors of shape H x W x C (HWC, row-major):
 *   - uint8 (FV_UINT8): values 0..255, C = 1 (gray), 2 (gray+alpha), 3 (RGB), 4 (RGBA);
 *   - float32 (FV_FLOAT32): any range; ops that take both keep the input's dtype.
 * Inputs may be non-contiguous views: ops copy them to contiguous first.
 * Conventions are fovea.h's: an int status (FV_OK or an fv_status code), the message in
 * fv_last_error() names the op, the file for I/O, and the reason; outputs come back
 * through fv_tensor ** with one reference owned by the caller. Bad or hostile files give
 * FV_ERR_IO; nothing here aborts, exits or prints.
 *
 * Files
 *   fv_image_read       PNG or TIFF, chosen by the file's first bytes (PNG as keep16 = 0).
 *   fv_image_read_png   8-bit PNGs (and bit depths 1, 2, 4) give uint8; palettes expand
 *                       to RGB, a tRNS chunk to an alpha channel; interlaced files are
 *                       read. 16-bit PNGs give uint8 (scaled, rounded) when keep16 = 0,
 *                       and float32 holding the raw values 0..65535 when keep16 = 1.
 *   fv_image_read_tiff  first page of a TIFF through libtiff's RGBA reader: uint8 RGB
 *                       (H x W x 3), or H x W x 1 for one-sample files other than
 *                       palette ones (gray); 16-bit samples keep their high 8 bits;
 *                       alpha is dropped (libtiff first multiplies colour by an
 *                       unassociated alpha).
 *   fv_image_write_png  uint8 with C = 1..4 as an 8-bit PNG (gray, gray+alpha, RGB, RGBA);
 *                       float32 as a 16-bit PNG, values rounded and clamped to 0..65535.
 *
 * Processing (uint8 or float32 unless said otherwise; same dtype out)
 *   fv_image_resize     to h x w. FV_RESIZE_LINEAR: bilinear, half-pixel centres, edge
 *                       replicated (OpenCV INTER_LINEAR, torch bilinear with
 *                       align_corners = false, antialias = false). FV_RESIZE_LINEAR_AA:
 *                       the same when enlarging; when shrinking, a triangle filter widened
 *                       by the scale factor (Pillow's BILINEAR, torch antialias = true).
 *                       FV_RESIZE_AREA: each output pixel is the mean of the input area it
 *                       covers, weighted by overlap (OpenCV INTER_AREA; when enlarging,
 *                       OpenCV takes the previous input row or column where an output
 *                       pixel starts exactly on an input boundary, fovea the right one).
 *                       uint8 results are within 1 of OpenCV's and Pillow's.
 *   fv_image_clahe      contrast limited adaptive histogram equalisation as OpenCV's
 *                       createCLAHE(clip_limit, (tiles_x, tiles_y)).apply (clip_limit <= 0:
 *                       no clipping; sizes not divisible by the grid are padded by
 *                       reflection-101). uint8 only. C = 1: the gray plane. C = 3 or 4
 *                       (RGB, alpha kept): FV_CLAHE_LAB equalises L of 8-bit LAB and
 *                       converts back (OpenCV's COLOR_RGB2LAB / COLOR_LAB2RGB, bit for
 *                       bit, as albumentations' CLAHE does); FV_CLAHE_GREEN equalises
 *                       the green channel only. Results equal OpenCV 4.6's exactly.
 *   fv_image_flip       FV_FLIP_HORIZONTAL mirrors left-right, FV_FLIP_VERTICAL
 *                       top-bottom, FV_FLIP_TRANSPOSE swaps rows and columns (W x H x C).
 *   fv_image_rotate     by degrees counter-clockwise about the centre ((W-1)/2, (H-1)/2),
 *                       same size, bilinear; samples outside the image read fill.
 *                       Multiples of 90 degrees on square images move pixels exactly.
 *   fv_image_crop       rows y..y+h-1, columns x..x+w-1; the window must lie inside.
 *   fv_image_pad        adds rows and columns of value on each side.
 *
 * Conversion to and from network tensors
 *   fv_image_to_chw     H x W x C image -> float32 C x H x W: uint8 is divided by 255,
 *                       float32 taken as it is; then (v - mean[c]) / std[c] when mean or
 *                       std (arrays of C values) are given (NULL: 0 and 1).
 *   fv_image_from_chw   float32 or float64 C x H x W (or H x W: one channel) -> uint8
 *                       H x W x C, mapping lo -> 0 and hi -> 255, rounded and clamped
 *                       (heat maps: lo = 0, hi = 1).
 *   fv_image_channels   uint8 or float32 image with C in 1..4 -> the same with
 *                       `channels` = 1 (gray: luma 0.299 R + 0.587 G + 0.114 B as
 *                       OpenCV), 2 (gray+alpha), 3 (RGB: gray replicated) or 4 (RGBA);
 *                       alpha is kept, dropped, or added opaque (255, or 1 for float32).
 *
 * Example (C)
 *   fv_tensor *img, *small, *x;
 *   double mean[3] = {0.485, 0.456, 0.406}, std[3] = {0.229, 0.224, 0.225};
 *   if (fv_image_read(&img, "fundus.tif") ||
 *       fv_image_resize(&small, img, 386, 386, FV_RESIZE_LINEAR_AA) ||
 *       fv_image_to_chw(&x, small, mean, std)) fprintf(stderr, "%s\n", fv_last_error());
 */

typedef enum fv_resize_mode {
  FV_RESIZE_LINEAR = 0,
  FV_RESIZE_LINEAR_AA = 1,
  FV_RESIZE_AREA = 2
} fv_resize_mode;

typedef enum fv_flip_mode {
  FV_FLIP_HORIZONTAL = 0,
  FV_FLIP_VERTICAL = 1,
  FV_FLIP_TRANSPOSE = 2
} fv_flip_mode;

typedef enum fv_clahe_mode {
  FV_CLAHE_LAB = 0,
  FV_CLAHE_GREEN = 1
} fv_clahe_mode;

/* ---- files ---- */
int fv_image_read(fv_tensor **out, const char *path);
int fv_image_read_png(fv_tensor **out, const char *path, int keep16);
int fv_image_read_tiff(fv_tensor **out, const char *path);
int fv_image_write_png(const char *path, const fv_tensor *img);

/* ---- processing ---- */
int fv_image_resize(fv_tensor **out, const fv_tensor *img, int64_t h, int64_t w, int mode);
int fv_image_clahe(fv_tensor **out, const fv_tensor *img, double clip_limit, int tiles_x, int tiles_y, int mode);
int fv_image_flip(fv_tensor **out, const fv_tensor *img, int mode);
int fv_image_rotate(fv_tensor **out, const fv_tensor *img, double degrees, double fill);
int fv_image_crop(fv_tensor **out, const fv_tensor *img, int64_t y, int64_t x, int64_t h, int64_t w);
int fv_image_pad(fv_tensor **out, const fv_tensor *img, int64_t top, int64_t bottom, int64_t left, int64_t right,
                 double value);

/* ---- conversion ---- */
int fv_image_to_chw(fv_tensor **out, const fv_tensor *img, const double *mean, const double *std);
int fv_image_from_chw(fv_tensor **out, const fv_tensor *chw, double lo, double hi);
int fv_image_channels(fv_tensor **out, const fv_tensor *img, int channels);
