/* test_image.c: checks the image files and ops of core/image/ against fixtures and
 * known answers: PNG decoding of every colour type and depth (spec/fixtures/png, from
 * tools/make_png_fixtures.py), PNG write round trips, hostile files (missing, empty,
 * random, truncated, bad CRC, randomly mutated), TIFF reading (files written here with
 * libtiff, also truncated and mutated), the magic-byte dispatch, resize, flips,
 * rotation, crop, pad, conversions, and CLAHE (gray, LAB, green) against OpenCV's
 * output (spec/fixtures/clahe, from tools/make_clahe_fixture.py).
 *
 * Build and run from the repository root, after `make`:
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Icore spec/c/test_image.c -Lbuild -lfovea \
 *       -ltiff -lm -Wl,-rpath,"$PWD/build" -o build/test_image && build/test_image spec/fixtures
 * Prints one line per failure and a summary; exits 1 when anything failed. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <unistd.h>

#include "fovea.h"
#include "fovea_image.h"

static int checks, failures;
static char tmpdir[256];
static const char *fixtures = "spec/fixtures";

#define CHECK(cond, ...)                                   \
  do {                                                     \
    checks++;                                              \
    if (!(cond)) {                                         \
      failures++;                                          \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);          \
      printf(__VA_ARGS__);                                 \
      printf("\n");                                        \
    }                                                      \
  } while (0)

/* Runs an fv call that must succeed; reports fv_last_error() when it does not. */
#define OK(call) CHECK((call) == FV_OK, "%s -> %s", #call, fv_last_error())

static const char *tmp_path(const char *name) {
  static char buf[4][512];
  static int next;
  char *p = buf[next++ % 4];
  snprintf(p, 512, "%s/%s", tmpdir, name);
  return p;
}

static const char *fixture(const char *dir, const char *name) {
  static char buf[4][512];
  static int next;
  char *p = buf[next++ % 4];
  snprintf(p, 512, "%s/%s/%s", fixtures, dir, name);
  return p;
}

static unsigned char *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc(size > 0 ? (size_t)size : 1);
  *n = fread(buf, 1, (size_t)size, f);
  fclose(f);
  return buf;
}

static void write_all(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return;
  fwrite(data, 1, n, f);
  fclose(f);
}

/* A new uint8 or float32 image (h, w, c) filled by value(y, x, ch). */
static fv_tensor *make_image(int64_t h, int64_t w, int64_t c, int dtype, double (*value)(int64_t, int64_t, int64_t)) {
  int64_t shape[3] = {h, w, c};
  fv_tensor *t = NULL;
  if (fv_empty(&t, 3, shape, dtype, FV_CPU)) return NULL;
  for (int64_t i = 0; i < h * w * c; i++) {
    double v = value(i / (w * c), i / c % w, i % c);
    if (dtype == FV_UINT8)
      ((uint8_t *)fv_tensor_data(t))[i] = (uint8_t)v;
    else
      ((float *)fv_tensor_data(t))[i] = (float)v;
  }
  return t;
}

static double pattern(int64_t y, int64_t x, int64_t c) { return (double)((y * 31 + x * 17 + c * 101 + x * y) % 256); }

static double at(const fv_tensor *t, int64_t i) {
  return t->scalar_type == FV_UINT8 ? ((const uint8_t *)fv_tensor_data(t))[i] : ((const float *)fv_tensor_data(t))[i];
}

static int same_shape(const fv_tensor *t, int64_t h, int64_t w, int64_t c) {
  return t && t->ndim == 3 && t->sizes[0] == h && t->sizes[1] == w && t->sizes[2] == c;
}

/* Largest absolute difference of two tensors of the same shape, or INFINITY. */
static double max_diff(const fv_tensor *a, const fv_tensor *b) {
  if (!a || !b || a->ndim != b->ndim) return INFINITY;
  for (int d = 0; d < a->ndim; d++)
    if (a->sizes[d] != b->sizes[d]) return INFINITY;
  double m = 0;
  for (int64_t i = 0; i < fv_tensor_numel(a); i++) m = fmax(m, fabs(at(a, i) - at(b, i)));
  return m;
}

/* An fv call that must fail with status and a message containing every needle. */
static void expect_error(int got, int status, const char *what, const char *needle1, const char *needle2) {
  const char *msg = fv_last_error();
  CHECK(got == status, "%s: status %d, expected %d (%s)", what, got, status, msg);
  CHECK(!needle1 || strstr(msg, needle1), "%s: message '%s' lacks '%s'", what, msg, needle1);
  CHECK(!needle2 || strstr(msg, needle2), "%s: message '%s' lacks '%s'", what, msg, needle2);
}

/* ---- PNG ---- */

static void test_png_fixtures(void) {
  static const char *names[] = {"gray1", "gray2", "gray4", "gray8", "gray16", "ga8", "ga16", "rgb8", "rgb16",
                                "rgba8", "rgba16", "gray8_trns", "rgb8_trns", "rgb16_trns", "pal1", "pal2",
                                "pal4", "pal8", "pal8_trns", "pal4_trns", "gray1_adam7", "gray16_adam7",
                                "rgba8_adam7", "pal4_adam7"};
  for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
    char file[64];
    snprintf(file, sizeof file, "%s.expect", names[k]);
    size_t n;
    unsigned char *expect = read_all(fixture("png", file), &n);
    CHECK(expect, "missing fixture %s (run tools/make_png_fixtures.py)", file);
    if (!expect) continue;
    int h, w, c, bits, skip;
    sscanf((char *)expect, "%d %d %d %d\n%n", &h, &w, &c, &bits, &skip);
    const unsigned char *px = expect + skip;
    snprintf(file, sizeof file, "%s.png", names[k]);
    for (int keep16 = 0; keep16 < 2; keep16++) {
      fv_tensor *img = NULL;
      OK(fv_image_read_png(&img, fixture("png", file), keep16));
      int wide = bits == 16 && keep16;
      CHECK(same_shape(img, h, w, c) && img->scalar_type == (wide ? FV_FLOAT32 : FV_UINT8),
            "%s keep16=%d: got %s", file, keep16, img ? "another shape or dtype" : "nothing");
      if (!same_shape(img, h, w, c)) {
        fv_tensor_release(img);
        continue;
      }
      double worst = 0;
      for (int64_t i = 0; i < (int64_t)h * w * c; i++) {
        double want = bits == 16 ? px[2 * i] << 8 | px[2 * i + 1] : px[i];
        if (bits == 16 && !keep16) want = floor(want / 257.0 + 0.5);
        worst = fmax(worst, fabs(at(img, i) - want));
      }
      CHECK(worst == 0, "%s keep16=%d: differs from the expected pixels by up to %g", file, keep16, worst);
      fv_tensor_release(img);
    }
    free(expect);
  }
}

static void test_png_round_trip(void) {
  for (int c = 1; c <= 4; c++) {
    fv_tensor *img = make_image(9, 14, c, FV_UINT8, pattern), *back = NULL;
    char name[32];
    snprintf(name, sizeof name, "rt%d.png", c);
    OK(fv_image_write_png(tmp_path(name), img));
    OK(fv_image_read_png(&back, tmp_path(name), 0));
    CHECK(max_diff(img, back) == 0, "8-bit round trip with C=%d changed pixels", c);
    fv_tensor *any = NULL;
    OK(fv_image_read(&any, tmp_path(name)));
    CHECK(max_diff(img, any) == 0, "fv_image_read of a PNG with C=%d differs", c);
    fv_tensor_release(img);
    fv_tensor_release(back);
    fv_tensor_release(any);
  }
  /* 16-bit from float32: values round and clamp to 0..65535 */
  int64_t shape[3] = {3, 5, 2};
  fv_tensor *f = NULL, *back = NULL;
  OK(fv_empty(&f, 3, shape, FV_FLOAT32, FV_CPU));
  float *v = fv_tensor_data(f);
  for (int i = 0; i < 30; i++) v[i] = (float)(i * 2113.4);
  v[0] = -5.0f;
  v[1] = 70000.0f;
  OK(fv_image_write_png(tmp_path("rt16.png"), f));
  OK(fv_image_read_png(&back, tmp_path("rt16.png"), 1));
  CHECK(same_shape(back, 3, 5, 2) && back->scalar_type == FV_FLOAT32, "16-bit round trip shape or dtype");
  if (same_shape(back, 3, 5, 2)) {
    const float *b = fv_tensor_data(back);
    int bad = b[0] != 0.0f || b[1] != 65535.0f;
    for (int i = 2; i < 30; i++) bad |= b[i] != (float)floor(i * 2113.4 + 0.5);
    CHECK(!bad, "16-bit round trip changed values");
  }
  fv_tensor_release(f);
  fv_tensor_release(back);
}

static void test_png_hostile(void) {
  fv_tensor *img = NULL;
  const char *missing = tmp_path("no-such-file.png");
  expect_error(fv_image_read_png(&img, missing, 0), FV_ERR_IO, "missing png", missing, "No such file");
  expect_error(fv_image_read(&img, missing), FV_ERR_IO, "missing image", missing, "No such file");
  write_all(tmp_path("empty.png"), "", 0);
  expect_error(fv_image_read_png(&img, tmp_path("empty.png"), 0), FV_ERR_IO, "empty png", "empty.png", "signature");
  expect_error(fv_image_read(&img, tmp_path("empty.png")), FV_ERR_IO, "empty image", "empty.png", "empty");
  unsigned char noise[4096];
  srand(7);
  for (size_t i = 0; i < sizeof noise; i++) noise[i] = (unsigned char)(rand() >> 7);
  write_all(tmp_path("noise.bin"), noise, sizeof noise);
  expect_error(fv_image_read_png(&img, tmp_path("noise.bin"), 0), FV_ERR_IO, "random bytes", "noise.bin", "not a PNG");
  expect_error(fv_image_read(&img, tmp_path("noise.bin")), FV_ERR_IO, "random bytes", "noise.bin", "neither PNG");
  memcpy(noise, "\x89PNG\r\n\x1a\n", 8);
  write_all(tmp_path("signed_noise.png"), noise, sizeof noise);
  expect_error(fv_image_read_png(&img, tmp_path("signed_noise.png"), 0), FV_ERR_IO, "signature + noise",
               "signed_noise.png", NULL);
  write_all(tmp_path("fake.jpg"), "\xff\xd8\xff\xe0\0\x10JFIF", 10);
  expect_error(fv_image_read(&img, tmp_path("fake.jpg")), FV_ERR_IO, "jpeg", "fake.jpg", "JPEG");

  /* every truncation of a valid file fails cleanly */
  size_t n;
  unsigned char *good = read_all(fixture("png", "rgba8_adam7.png"), &n);
  CHECK(good != NULL, "missing rgba8_adam7.png");
  if (!good) return;
  int all_failed = 1;
  for (size_t cut = 0; cut < n; cut++) {
    write_all(tmp_path("cut.png"), good, cut);
    img = NULL;
    int st = fv_image_read_png(&img, tmp_path("cut.png"), 0);
    if (st != FV_ERR_IO || !strstr(fv_last_error(), "cut.png") || img) all_failed = 0;
    fv_tensor_release(img);
  }
  CHECK(all_failed, "some truncation of rgba8_adam7.png did not fail with FV_ERR_IO naming the file");
  write_all(tmp_path("cut.png"), good, n - 20);
  expect_error(fv_image_read_png(&img, tmp_path("cut.png"), 0), FV_ERR_IO, "truncated png", "cut.png", "truncated");
  printf("  truncated PNG: %s\n", fv_last_error());

  /* a flipped byte in IDAT data breaks its CRC; in IHDR too */
  unsigned char *bad = malloc(n);
  memcpy(bad, good, n);
  size_t idat = 8;
  while (idat + 8 < n && memcmp(bad + idat + 4, "IDAT", 4) != 0)
    idat += 12 + ((size_t)bad[idat] << 24 | (size_t)bad[idat + 1] << 16 | (size_t)bad[idat + 2] << 8 | bad[idat + 3]);
  size_t idat_len = (size_t)bad[idat] << 24 | (size_t)bad[idat + 1] << 16 | (size_t)bad[idat + 2] << 8 | bad[idat + 3];
  bad[idat + 8 + idat_len] ^= 0x55; /* first byte of the CRC */
  write_all(tmp_path("badcrc.png"), bad, n);
  expect_error(fv_image_read_png(&img, tmp_path("badcrc.png"), 0), FV_ERR_IO, "IDAT CRC", "badcrc.png", "CRC");
  printf("  bad IDAT CRC: %s\n", fv_last_error());
  memcpy(bad, good, n);
  bad[idat + 10] ^= 0x55; /* inside the compressed data */
  write_all(tmp_path("baddata.png"), bad, n);
  expect_error(fv_image_read_png(&img, tmp_path("baddata.png"), 0), FV_ERR_IO, "IDAT data", "baddata.png", "IDAT");
  printf("  corrupt IDAT data: %s\n", fv_last_error());
  memcpy(bad, good, n);
  bad[16 + 3] ^= 0x01; /* width in IHDR */
  write_all(tmp_path("badihdr.png"), bad, n);
  expect_error(fv_image_read_png(&img, tmp_path("badihdr.png"), 0), FV_ERR_IO, "IHDR CRC", "badihdr.png", NULL);
  /* random garbage after a valid header and IHDR */
  memcpy(bad, good, 33);
  for (size_t i = 33; i < n; i++) bad[i] = noise[i % sizeof noise];
  write_all(tmp_path("garbage.png"), bad, n);
  expect_error(fv_image_read_png(&img, tmp_path("garbage.png"), 0), FV_ERR_IO, "garbage chunks", "garbage.png", NULL);
  free(bad);
  free(good);

  /* writing where it cannot, and images a PNG cannot hold */
  fv_tensor *ok = make_image(2, 2, 3, FV_UINT8, pattern), *five = make_image(2, 2, 5, FV_UINT8, pattern);
  const char *nodir = tmp_path("no/such/dir/x.png");
  expect_error(fv_image_write_png(nodir, ok), FV_ERR_IO, "write to missing dir", nodir, "No such file");
  expect_error(fv_image_write_png(tmp_path("five.png"), five), FV_ERR_SHAPE, "5 channels", "five.png", "1..4");
  CHECK(access(tmp_path("five.png"), F_OK) != 0, "a failed write left a file behind");
  int64_t shape[3] = {2, 2, 3};
  fv_tensor *d = NULL;
  OK(fv_zeros(&d, 3, shape, FV_FLOAT64, FV_CPU));
  expect_error(fv_image_write_png(tmp_path("f64.png"), d), FV_ERR_DTYPE, "float64 image", "write_png", "float64");
  expect_error(fv_image_write_png(tmp_path("nil.png"), NULL), FV_ERR_ARGUMENT, "nil image", "write_png", NULL);
  fv_tensor_release(ok);
  fv_tensor_release(five);
  fv_tensor_release(d);
}

/* Reads `count` copies of a valid file with 1..8 random bytes changed through read():
 * each must either decode or fail with FV_ERR_IO naming the file, never crash. */
static void mutate_and_read(const char *valid, const char *name, int count, int (*read)(fv_tensor **, const char *)) {
  size_t n;
  unsigned char *good = read_all(valid, &n), *bad = good ? malloc(n) : NULL;
  CHECK(good != NULL, "missing %s", valid);
  if (!good) return;
  int clean = 1, decoded = 0;
  srand(11);
  for (int k = 0; k < count; k++) {
    memcpy(bad, good, n);
    for (int m = 1 + rand() % 8; m > 0; m--) bad[(size_t)rand() % n] = (unsigned char)rand();
    write_all(tmp_path(name), bad, n);
    fv_tensor *img = NULL;
    int st = read(&img, tmp_path(name));
    decoded += st == FV_OK;
    if (st != FV_OK && (st != FV_ERR_IO || !strstr(fv_last_error(), name))) {
      printf("  mutation %d of %s: status %d: %s\n", k, valid, st, fv_last_error());
      clean = 0;
    }
    fv_tensor_release(img);
  }
  CHECK(clean, "a mutated %s failed without FV_ERR_IO naming the file", name);
  printf("  %d mutations of %s: %d decoded, the rest failed cleanly\n", count, name, decoded);
  free(bad);
  free(good);
}

/* ---- TIFF ---- */

/* Writes a (h, w, spp) TIFF of `bits` bits per sample from pattern(); 16-bit samples
 * hold pattern * 257 so that their high byte is pattern. Alpha (spp = 4) is opaque:
 * libtiff's RGBA reader premultiplies colour by unassociated alpha. */
static int write_tiff(const char *path, int h, int w, int spp, int bits, int compression, int tiled) {
  TIFF *t = TIFFOpen(path, "w");
  if (!t) return 0;
  TIFFSetField(t, TIFFTAG_IMAGEWIDTH, w);
  TIFFSetField(t, TIFFTAG_IMAGELENGTH, h);
  TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, spp);
  TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, bits);
  TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
  TIFFSetField(t, TIFFTAG_PHOTOMETRIC, spp >= 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK);
  TIFFSetField(t, TIFFTAG_COMPRESSION, compression);
  if (spp == 4) {
    uint16_t extra = EXTRASAMPLE_UNASSALPHA;
    TIFFSetField(t, TIFFTAG_EXTRASAMPLES, 1, &extra);
  }
  size_t bps = (size_t)bits / 8;
  unsigned char *buf = malloc((size_t)h * w * spp * bps);
  for (int i = 0; i < h * w * spp; i++) {
    int v = spp == 4 && i % 4 == 3 ? 255 : (int)pattern(i / (w * spp), i / spp % w, i % spp); /* opaque */
    if (bits == 8)
      buf[i] = (unsigned char)v;
    else
      ((uint16_t *)buf)[i] = (uint16_t)(v * 257);
  }
  int ok = 1;
  if (tiled) {
    TIFFSetField(t, TIFFTAG_TILEWIDTH, 16);
    TIFFSetField(t, TIFFTAG_TILELENGTH, 16);
    size_t tile_bytes = (size_t)TIFFTileSize(t);
    unsigned char *tile = malloc(tile_bytes);
    for (int ty = 0; ty < h; ty += 16)
      for (int tx = 0; tx < w; tx += 16) {
        memset(tile, 0, tile_bytes);
        for (int y = ty; y < ty + 16 && y < h; y++)
          for (int x = tx; x < tx + 16 && x < w; x++)
            memcpy(tile + ((size_t)(y - ty) * 16 + (x - tx)) * spp * bps, buf + ((size_t)y * w + x) * spp * bps,
                   spp * bps);
        ok &= TIFFWriteTile(t, tile, (uint32_t)tx, (uint32_t)ty, 0, 0) >= 0;
      }
    free(tile);
  } else {
    TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, 4);
    for (int y = 0; y < h; y++) ok &= TIFFWriteScanline(t, buf + (size_t)y * w * spp * bps, (uint32_t)y, 0) >= 0;
  }
  TIFFClose(t);
  free(buf);
  return ok;
}

static void check_tiff(const char *name, int spp, int bits, int compression, int tiled) {
  const int h = 21, w = 37;
  CHECK(write_tiff(tmp_path(name), h, w, spp, bits, compression, tiled), "could not write test TIFF %s", name);
  fv_tensor *img = NULL, *any = NULL;
  OK(fv_image_read_tiff(&img, tmp_path(name)));
  int c = spp == 1 ? 1 : 3;
  CHECK(same_shape(img, h, w, c) && img->scalar_type == FV_UINT8, "%s: wrong shape or dtype", name);
  if (same_shape(img, h, w, c)) {
    int bad = 0;
    for (int64_t i = 0; i < (int64_t)h * w * c; i++) bad |= at(img, i) != pattern(i / (w * c), i / c % w, i % c);
    CHECK(!bad, "%s: pixels differ from what was written", name);
  }
  OK(fv_image_read(&any, tmp_path(name)));
  CHECK(max_diff(img, any) == 0, "%s: fv_image_read differs from fv_image_read_tiff", name);
  fv_tensor_release(img);
  fv_tensor_release(any);
}

static void test_mutations(void) {
  static const char *pngs[] = {"rgba8_adam7.png", "pal4_trns.png", "gray16.png"};
  for (int i = 0; i < 3; i++) mutate_and_read(fixture("png", pngs[i]), "mutant.png", 300, fv_image_read);
  mutate_and_read(tmp_path("rgb8.tif"), "mutant.tif", 300, fv_image_read);
  mutate_and_read(tmp_path("rgb8_tiled.tif"), "mutant_tiled.tif", 300, fv_image_read);
}

static void test_tiff(void) {
  check_tiff("gray8.tif", 1, 8, COMPRESSION_NONE, 0);
  check_tiff("gray16.tif", 1, 16, COMPRESSION_LZW, 0);
  check_tiff("rgb8.tif", 3, 8, COMPRESSION_LZW, 0);
  check_tiff("rgb8_tiled.tif", 3, 8, COMPRESSION_ADOBE_DEFLATE, 1);
  check_tiff("rgba8.tif", 4, 8, COMPRESSION_NONE, 0);
  check_tiff("rgb16.tif", 3, 16, COMPRESSION_NONE, 1);

  fv_tensor *img = NULL;
  const char *missing = tmp_path("missing.tif");
  expect_error(fv_image_read_tiff(&img, missing), FV_ERR_IO, "missing tiff", missing, NULL);
  printf("  missing TIFF: %s\n", fv_last_error());
  write_all(tmp_path("header_only.tif"), "II*\0\x08\0\0\0", 8);
  expect_error(fv_image_read(&img, tmp_path("header_only.tif")), FV_ERR_IO, "tiff header only", "header_only.tif",
               NULL);
  printf("  TIFF header only: %s\n", fv_last_error());
  size_t n;
  unsigned char *good = read_all(tmp_path("rgb8.tif"), &n);
  if (good) {
    int all_failed = 1;
    for (size_t cut = 0; cut < n; cut += 7) {
      write_all(tmp_path("cut.tif"), good, cut);
      img = NULL;
      int st = fv_image_read_tiff(&img, tmp_path("cut.tif"));
      /* a cut inside unused trailing bytes may still decode; anything else must fail cleanly */
      if (st != FV_OK && (st != FV_ERR_IO || !strstr(fv_last_error(), "cut.tif"))) all_failed = 0;
      fv_tensor_release(img);
    }
    CHECK(all_failed, "a truncated TIFF failed without FV_ERR_IO naming the file");
    write_all(tmp_path("cut.tif"), good, n / 2);
    expect_error(fv_image_read_tiff(&img, tmp_path("cut.tif")), FV_ERR_IO, "tiff cut in half", "cut.tif", NULL);
    printf("  truncated TIFF: %s\n", fv_last_error());
    free(good);
  }
}

/* ---- resize ---- */

static double ramp(int64_t y, int64_t x, int64_t c) { return (double)(x * 10 + y * 100 + c); }
static double constant(int64_t y, int64_t x, int64_t c) { return (double)(77 + 0 * (y + x + c)); }

static void test_resize(void) {
  fv_tensor *f = make_image(4, 6, 2, FV_FLOAT32, ramp), *r = NULL;
  for (int mode = 0; mode < 3; mode++) {
    OK(fv_image_resize(&r, f, 4, 6, mode));
    CHECK(max_diff(r, f) < 1e-5, "resize mode %d to the same size changed the image", mode);
    fv_tensor_release(r);
    r = NULL;
  }
  /* LINEAR 6 -> 12 wide: half-pixel centres, edges replicated */
  OK(fv_image_resize(&r, f, 4, 12, FV_RESIZE_LINEAR));
  if (same_shape(r, 4, 12, 2)) {
    static const double want[12] = {0, 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 32.5, 37.5, 42.5, 47.5, 50};
    double worst = 0;
    for (int x = 0; x < 12; x++) worst = fmax(worst, fabs(at(r, x * 2) - want[x]));
    CHECK(worst < 1e-5, "linear upscale of a ramp is off by %g", worst);
  }
  fv_tensor_release(r);
  /* AREA 4x6 -> 2x3: means of 2x2 blocks */
  OK(fv_image_resize(&r, f, 2, 3, FV_RESIZE_AREA));
  if (same_shape(r, 2, 3, 2)) {
    double worst = 0;
    for (int y = 0; y < 2; y++)
      for (int x = 0; x < 3; x++) {
        double want = 1 + (2 * x + 0.5) * 10 + (2 * y + 0.5) * 100; /* channel 1 */
        worst = fmax(worst, fabs(at(r, (y * 3 + x) * 2 + 1) - want));
      }
    CHECK(worst < 1e-4, "area downscale by 2 is off by %g", worst);
  }
  fv_tensor_release(r);
  /* AA shrink by 2 along x: a triangle of radius 2 input pixels, cut at the left edge */
  OK(fv_image_resize(&r, f, 4, 3, FV_RESIZE_LINEAR_AA));
  if (same_shape(r, 4, 3, 2)) {
    double want0 = (0 * 3 + 10 * 3 + 20 * 1) / 7.0, want1 = (10 * 1 + 20 * 3 + 30 * 3 + 40 * 1) / 8.0;
    CHECK(fabs(at(r, 0) - want0) < 1e-4 && fabs(at(r, 2) - want1) < 1e-4, "AA shrink gives %g %g, expected %g %g",
          at(r, 0), at(r, 2), want0, want1);
  }
  fv_tensor_release(r);
  fv_tensor_release(f);
  /* a constant stays constant in every mode and size, uint8 included */
  fv_tensor *k = make_image(17, 23, 3, FV_UINT8, constant);
  static const int sizes[4][2] = {{5, 7}, {40, 9}, {17, 50}, {1, 1}};
  for (int mode = 0; mode < 3; mode++)
    for (int s = 0; s < 4; s++) {
      r = NULL;
      OK(fv_image_resize(&r, k, sizes[s][0], sizes[s][1], mode));
      double worst = 0;
      for (int64_t i = 0; r && i < fv_tensor_numel(r); i++) worst = fmax(worst, fabs(at(r, i) - 77));
      CHECK(r && r->scalar_type == FV_UINT8 && worst == 0, "resize mode %d to %dx%d of a constant is off by %g", mode,
            sizes[s][0], sizes[s][1], worst);
      fv_tensor_release(r);
    }
  r = NULL;
  expect_error(fv_image_resize(&r, k, 0, 5, FV_RESIZE_LINEAR), FV_ERR_ARGUMENT, "resize to 0", "resize", NULL);
  expect_error(fv_image_resize(&r, k, 5, 5, 9), FV_ERR_ARGUMENT, "resize mode 9", "resize", "mode");
  fv_tensor_release(k);
}

/* ---- geometry ---- */

static double small(int64_t y, int64_t x, int64_t c) { return (double)(y * 10 + x + c * 100); }

static void test_geometry(void) {
  for (int dtype = 0; dtype < 2; dtype++) {
    int dt = dtype ? FV_FLOAT32 : FV_UINT8;
    fv_tensor *img = make_image(3, 4, 2, dt, small), *h = NULL, *v = NULL, *t = NULL;
    OK(fv_image_flip(&h, img, FV_FLIP_HORIZONTAL));
    OK(fv_image_flip(&v, img, FV_FLIP_VERTICAL));
    OK(fv_image_flip(&t, img, FV_FLIP_TRANSPOSE));
    int bad_h = 0, bad_v = 0, bad_t = !same_shape(t, 4, 3, 2);
    for (int y = 0; y < 3; y++)
      for (int x = 0; x < 4; x++)
        for (int c = 0; c < 2; c++) {
          double want = small(y, x, c);
          bad_h |= at(h, (y * 4 + (3 - x)) * 2 + c) != want;
          bad_v |= at(v, ((2 - y) * 4 + x) * 2 + c) != want;
          bad_t |= !bad_t && at(t, (x * 3 + y) * 2 + c) != want;
        }
    CHECK(!bad_h && !bad_v && !bad_t, "%s flips: horizontal %d vertical %d transpose %d wrong", fv_dtype_name(dt),
          bad_h, bad_v, bad_t);
    /* 180 degrees = both flips, 360 = identity, on a non-square image */
    fv_tensor *r180 = NULL, *hv = NULL, *r360 = NULL;
    OK(fv_image_rotate(&r180, img, 180, 0));
    OK(fv_image_flip(&hv, h, FV_FLIP_VERTICAL));
    OK(fv_image_rotate(&r360, img, -360, 0));
    CHECK(max_diff(r180, hv) == 0, "%s: rotate 180 != both flips", fv_dtype_name(dt));
    CHECK(max_diff(r360, img) == 0, "%s: rotate -360 changed the image", fv_dtype_name(dt));
    fv_tensor_release(r180);
    fv_tensor_release(hv);
    fv_tensor_release(r360);
    fv_tensor_release(img);
    fv_tensor_release(h);
    fv_tensor_release(v);
    fv_tensor_release(t);
  }
  /* 90 degrees counter-clockwise on a square = transpose then vertical flip */
  fv_tensor *sq = make_image(5, 5, 3, FV_UINT8, pattern), *r90 = NULL, *tr = NULL, *want = NULL, *r450 = NULL;
  fv_tensor *r270 = NULL, *rm90 = NULL;
  OK(fv_image_rotate(&r90, sq, 90, 0));
  OK(fv_image_rotate(&r450, sq, 450, 0));
  OK(fv_image_flip(&tr, sq, FV_FLIP_TRANSPOSE));
  OK(fv_image_flip(&want, tr, FV_FLIP_VERTICAL));
  CHECK(max_diff(r90, want) == 0, "rotate 90 is not transpose + vertical flip");
  CHECK(max_diff(r450, want) == 0, "rotate 450 differs from rotate 90");
  OK(fv_image_rotate(&r270, sq, 270, 0));
  OK(fv_image_rotate(&rm90, sq, -90, 0));
  CHECK(max_diff(r270, rm90) == 0, "rotate 270 differs from rotate -90");
  if (same_shape(r90, 5, 5, 3)) /* the top-right corner goes to the top-left */
    CHECK(at(r90, 0) == pattern(0, 4, 0), "rotate 90: top-left is %g, expected %g", at(r90, 0), pattern(0, 4, 0));
  fv_tensor_release(r90);
  fv_tensor_release(r450);
  fv_tensor_release(r270);
  fv_tensor_release(rm90);
  fv_tensor_release(tr);
  fv_tensor_release(want);
  fv_tensor_release(sq);
  /* 45 degrees of a constant: centre kept, corners take the fill */
  fv_tensor *k = make_image(21, 21, 1, FV_FLOAT32, constant), *r45 = NULL;
  OK(fv_image_rotate(&r45, k, 45, -1));
  if (same_shape(r45, 21, 21, 1))
    CHECK(fabs(at(r45, 10 * 21 + 10) - 77) < 1e-4 && at(r45, 0) == -1 && at(r45, 21 * 21 - 1) == -1,
          "rotate 45: centre %g corners %g %g", at(r45, 10 * 21 + 10), at(r45, 0), at(r45, 21 * 21 - 1));
  fv_tensor_release(r45);
  fv_tensor_release(k);
  /* a non-contiguous view (transposed) is read through its strides */
  fv_tensor *img = make_image(3, 4, 2, FV_UINT8, small), *view = NULL, *copy = NULL, *tr2 = NULL;
  OK(fv_transpose(&view, img, 0, 1));
  OK(fv_image_flip(&copy, view, FV_FLIP_VERTICAL));
  OK(fv_image_flip(&tr2, img, FV_FLIP_TRANSPOSE));
  fv_tensor *tv = NULL;
  OK(fv_image_flip(&tv, tr2, FV_FLIP_VERTICAL));
  CHECK(max_diff(copy, tv) == 0, "flip of a transposed view differs from flip of its copy");
  fv_tensor_release(view);
  fv_tensor_release(copy);
  fv_tensor_release(tr2);
  fv_tensor_release(tv);
  /* crop and pad */
  fv_tensor *crop = NULL, *pad = NULL;
  OK(fv_image_crop(&crop, img, 1, 2, 2, 2));
  CHECK(same_shape(crop, 2, 2, 2) && at(crop, 0) == small(1, 2, 0) && at(crop, 7) == small(2, 3, 1),
        "crop took the wrong window");
  OK(fv_image_pad(&pad, img, 1, 2, 3, 0, 9));
  CHECK(same_shape(pad, 6, 7, 2) && at(pad, 0) == 9 && at(pad, (1 * 7 + 3) * 2) == small(0, 0, 0) &&
            at(pad, (3 * 7 + 6) * 2 + 1) == small(2, 3, 1) && at(pad, (5 * 7 + 6) * 2 + 1) == 9,
        "pad put the image or the fill in the wrong place");
  fv_tensor *none = NULL;
  expect_error(fv_image_crop(&none, img, 2, 0, 2, 4), FV_ERR_INDEX, "crop outside", "crop", "3x4x2");
  expect_error(fv_image_pad(&none, img, -1, 0, 0, 0, 0), FV_ERR_ARGUMENT, "negative pad", "pad", NULL);
  expect_error(fv_image_flip(&none, img, 7), FV_ERR_ARGUMENT, "flip mode", "flip", NULL);
  int64_t shape2[2] = {3, 4};
  fv_tensor *flat = NULL;
  OK(fv_zeros(&flat, 2, shape2, FV_UINT8, FV_CPU));
  expect_error(fv_image_rotate(&none, flat, 10, 0), FV_ERR_SHAPE, "2-d image", "rotate", "H x W x C");
  fv_tensor_release(flat);
  fv_tensor_release(crop);
  fv_tensor_release(pad);
  fv_tensor_release(img);
}

/* ---- conversion ---- */

static void test_convert(void) {
  fv_tensor *img = make_image(2, 3, 3, FV_UINT8, pattern), *chw = NULL, *back = NULL;
  double mean[3] = {0.5, 0.25, 0}, std[3] = {0.5, 2, 1};
  OK(fv_image_to_chw(&chw, img, mean, std));
  CHECK(chw && chw->ndim == 3 && chw->sizes[0] == 3 && chw->sizes[1] == 2 && chw->sizes[2] == 3 &&
            chw->scalar_type == FV_FLOAT32,
        "to_chw shape or dtype");
  if (chw) {
    double worst = 0;
    for (int c = 0; c < 3; c++)
      for (int i = 0; i < 6; i++)
        worst = fmax(worst, fabs(at(chw, c * 6 + i) - (pattern(i / 3, i % 3, c) / 255.0 - mean[c]) / std[c]));
    CHECK(worst < 1e-6, "to_chw values off by %g", worst);
  }
  fv_tensor_release(chw);
  OK(fv_image_to_chw(&chw, img, NULL, NULL));
  OK(fv_image_from_chw(&back, chw, 0, 1));
  CHECK(max_diff(back, img) == 0, "to_chw then from_chw(0, 1) changed the image");
  double zero_std[3] = {1, 0, 1};
  fv_tensor *none = NULL;
  expect_error(fv_image_to_chw(&none, img, NULL, zero_std), FV_ERR_ARGUMENT, "zero std", "to_chw", "std");
  expect_error(fv_image_from_chw(&none, chw, 1, 1), FV_ERR_ARGUMENT, "empty range", "from_chw", NULL);
  fv_tensor_release(back);
  fv_tensor_release(chw);
  /* a 2-d heat map, clamped and rounded */
  int64_t hw[2] = {1, 4};
  fv_tensor *heat = NULL;
  OK(fv_empty(&heat, 2, hw, FV_FLOAT32, FV_CPU));
  float *hv = fv_tensor_data(heat);
  hv[0] = -0.5f, hv[1] = 0.5f, hv[2] = 0.8f, hv[3] = 3.0f;
  OK(fv_image_from_chw(&back, heat, 0, 1));
  CHECK(same_shape(back, 1, 4, 1) && at(back, 0) == 0 && at(back, 1) == 128 && at(back, 2) == 204 && at(back, 3) == 255,
        "heat map to uint8 wrong");
  fv_tensor_release(back);
  fv_tensor_release(heat);
  /* channel counts */
  fv_tensor *gray = NULL, *rgb = NULL, *rgba = NULL;
  OK(fv_image_channels(&gray, img, 1));
  if (same_shape(gray, 2, 3, 1)) {
    double want = floor(0.299 * pattern(1, 2, 0) + 0.587 * pattern(1, 2, 1) + 0.114 * pattern(1, 2, 2) + 0.5);
    CHECK(fabs(at(gray, 5) - want) <= 0.5, "RGB -> gray: %g, expected %g", at(gray, 5), want);
  }
  OK(fv_image_channels(&rgb, gray, 3));
  OK(fv_image_channels(&rgba, rgb, 4));
  CHECK(same_shape(rgba, 2, 3, 4) && at(rgba, 4 * 4 + 0) == at(gray, 4) && at(rgba, 4 * 4 + 2) == at(gray, 4) &&
            at(rgba, 4 * 4 + 3) == 255,
        "gray -> RGB -> RGBA wrong");
  fv_tensor_release(gray);
  fv_tensor_release(rgb);
  fv_tensor_release(rgba);
  fv_tensor_release(img);
}

/* ---- CLAHE against OpenCV ---- */

static void test_clahe(void) {
  FILE *f = fopen(fixture("clahe", "cases.txt"), "r");
  CHECK(f != NULL, "missing %s (run tools/make_clahe_fixture.py)", fixture("clahe", "cases.txt"));
  if (!f) return;
  char in[128], want[128], mode[16];
  double clip;
  int tx, ty, cases = 0;
  while (fscanf(f, "%127s %127s %lf %d %d %15s", in, want, &clip, &tx, &ty, mode) == 6) {
    fv_tensor *src = NULL, *expected = NULL, *got = NULL;
    OK(fv_image_read_png(&src, fixture("clahe", in), 0));
    OK(fv_image_read_png(&expected, fixture("clahe", want), 0));
    int m = strcmp(mode, "green") == 0 ? FV_CLAHE_GREEN : FV_CLAHE_LAB;
    OK(fv_image_clahe(&got, src, clip, tx, ty, m));
    double d = max_diff(got, expected), sum = 0;
    int64_t differ = 0, n = d < INFINITY ? fv_tensor_numel(got) : 0;
    for (int64_t i = 0; i < n; i++) {
      differ += at(got, i) != at(expected, i);
      sum += fabs(at(got, i) - at(expected, i));
    }
    CHECK(d == 0, "clahe %s clip %g grid %dx%d %s: max diff %g, mean %g (%lld values differ)", in, clip, tx, ty,
          mode, d, n ? sum / n : INFINITY, (long long)differ);
    cases++;
    fv_tensor_release(src);
    fv_tensor_release(expected);
    fv_tensor_release(got);
  }
  fclose(f);
  CHECK(cases >= 10, "only %d CLAHE cases read", cases);
  fv_tensor *rgb = make_image(4, 4, 2, FV_UINT8, pattern), *none = NULL;
  expect_error(fv_image_clahe(&none, rgb, 2, 2, 2, FV_CLAHE_LAB), FV_ERR_ARGUMENT, "2 channels", "clahe", "C must");
  expect_error(fv_image_clahe(&none, rgb, 2, 0, 2, FV_CLAHE_LAB), FV_ERR_ARGUMENT, "0 tiles", "clahe", "grid");
  fv_tensor_release(rgb);
  fv_tensor *fl = make_image(4, 4, 1, FV_FLOAT32, pattern);
  expect_error(fv_image_clahe(&none, fl, 2, 2, 2, 0), FV_ERR_DTYPE, "float clahe", "clahe", "uint8");
  fv_tensor_release(fl);
}

int main(int argc, char **argv) {
  if (argc > 1) fixtures = argv[1];
  snprintf(tmpdir, sizeof tmpdir, "/tmp/fovea_test_image_XXXXXX");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  int64_t live = fv_live_bytes();
  test_png_fixtures();
  test_png_round_trip();
  test_png_hostile();
  test_tiff();
  test_mutations();
  test_resize();
  test_geometry();
  test_convert();
  test_clahe();
  CHECK(fv_live_bytes() == live, "%lld bytes of tensors leaked", (long long)(fv_live_bytes() - live));
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) printf("could not remove %s\n", tmpdir);
  printf("%d checks, %d failures\n", checks, failures);
  return failures ? 1 : 0;
}
