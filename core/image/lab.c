/* lab.c: 8-bit RGB <-> CIE LAB exactly as OpenCV's cvtColor on CV_8U (COLOR_RGB2LAB,
 * COLOR_LAB2RGB): L * 255 / 100, a + 128, b + 128; sRGB primaries and gamma, D65 white.
 * Both directions are OpenCV's fixed-point algorithms (RGB2Lab_b, Lab2RGBinteger in
 * imgproc/src/color_lab.cpp) with their tables built the way OpenCV builds them (float
 * steps, double gamma, OpenCV's own float cube root, fused multiply-add where it uses
 * one); every one of the 2^24 inputs gives OpenCV 4.6's output in each direction.
 * CLAHE (clahe.c) equalises L, so a single L off by one would change its results. */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "image_internal.h"

static const double xyz_from_rgb[9] = {0.412453, 0.357580, 0.180423, 0.212671, 0.715160,
                                       0.072169, 0.019334, 0.119193, 0.950227};
static const double rgb_from_xyz[9] = {3.240479, -1.53715, -0.498535, -0.969256, 1.875991,
                                       0.041556, 0.055648, -0.204043, 1.057311};
static const double white[3] = {0.950456, 1.0, 1.088754};

enum {
  xyz_shift = 12,                            /* matrices scaled by 2^12 */
  gamma_shift = 3,                           /* linear light scaled by 255 * 2^3 */
  lab_shift = xyz_shift + gamma_shift,       /* f(t) scaled by 2^15 */
  cbrt_size = 256 * 3 / 2 * (1 << gamma_shift),
  base_shift = 14, base = 1 << base_shift,   /* LAB -> RGB fixed point */
  min_ab = -8145, ab_size = base * 9 / 4,    /* range of f(x), f(z) reached from 8-bit LAB */
  inv_gamma_shift = 12, inv_gamma_size = 1 << inv_gamma_shift
};

/* RGB -> LAB */
static uint16_t gamma_tab[256];      /* linear light of each 8-bit value, scaled by 255 * 2^3 */
static uint16_t cbrt_tab[cbrt_size]; /* f(t) = cbrt(t) or 7.787 t + 16/116, t = i / (255 * 2^3), scaled by 2^15 */
static int coeffs[9];                /* XYZ / white from RGB, scaled by 2^12 */
/* LAB -> RGB */
static uint16_t l_to_y[256], l_to_fy[256]; /* y and f(y) of each 8-bit L, scaled by base */
static int ab_to_xz[ab_size];              /* f^-1((i + min_ab) / base), scaled by base */
static uint16_t inv_gamma_tab[inv_gamma_size]; /* 8-bit sRGB of linear light i / 4096 */
static int inv_coeffs[9];                  /* RGB from XYZ * white, scaled by 2^12 */
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static double to_linear(double v) { return v <= 0.04045 ? v / 12.92 : pow((v + 0.055) / (1.0 + 0.055), 2.4); }

static double from_linear(double v) { return v <= 0.0031308 ? v * 12.92 : pow(v, 1.0 / 2.4) * (1.0 + 0.055) - 0.055; }

/* Cube root of a positive normal float as OpenCV's softfloat computes it (Ken
 * Turkowski's rational approximation in double on a mantissa scaled to [1/8, 1), the
 * result's mantissa truncated): libm's cbrtf rounds a few table entries differently. */
static float cbrt_opencv(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  int ex = (int)((u >> 23) & 0xff) - 127;
  int shx = ex % 3;
  shx -= shx >= 0 ? 3 : 0;
  ex = (ex - shx) / 3 - 1;
  uint64_t bits = (uint64_t)(shx + 1023) << 52 | (uint64_t)(u & 0x7fffff) << 29;
  double fr;
  memcpy(&fr, &bits, sizeof fr);
  fr = ((((0x1.6a09e6653ba70p+5 * fr + 0x1.808f46c6116e0p+7) * fr + 0x1.dca97439cae14p+6) * fr +
         0x1.add70d2827500p+3) * fr + 0x1.4f15f83f55d2dp-3) /
       ((((0x1.d9e20660edb21p+3 * fr + 0x1.2ff15c0285815p+7) * fr + 0x1.510d06a8112cep+7) * fr +
         0x1.0fecbc9e2c375p+5) * fr + 1.0);
  memcpy(&bits, &fr, sizeof bits);
  uint32_t y = (uint32_t)(ex + 127) << 23 | (uint32_t)((bits & 0xfffffffffffffULL) >> 29);
  float r;
  memcpy(&r, &y, sizeof r);
  return r;
}

static void build_tables(void) {
  for (int i = 0; i < 256; i++) gamma_tab[i] = (uint16_t)lrintf(2040.0f * (float)to_linear((float)i / 255.0f));
  const float scale = 1.0f / 2040.0f, thresh = 216.0f / 24389.0f, slope = 841.0f / 108.0f, bias = 16.0f / 116.0f;
  for (int i = 0; i < cbrt_size; i++) {
    float t = scale * (float)i;
    cbrt_tab[i] = (uint16_t)lrintf(32768.0f * (t < thresh ? fmaf(t, slope, bias) : cbrt_opencv(t)));
  }
  for (int i = 0; i < 9; i++) coeffs[i] = (int)lrint(4096.0 * xyz_from_rgb[i] / white[i / 3]);

  for (int i = 0; i < 256; i++) {
    if (i <= 20) { /* L <= 8: the linear part */
      l_to_y[i] = (uint16_t)lrintf((float)(i * base * 20 * 9) / (float)(17 * 29 * 29 * 29));
      l_to_fy[i] = (uint16_t)lrintf((float)base * (16.0f / 116.0f + (float)(i * 5) / (float)(3 * 17 * 29)));
    } else {
      float fy = (float)(i * 100 * base) / (float)(255 * 116) + (float)(16 * base) / 116.0f;
      l_to_fy[i] = (uint16_t)lrintf(fy);
      l_to_y[i] = (uint16_t)lrintf(fy * fy * fy / (float)(base * base));
    }
  }
  for (int i = min_ab; i < ab_size + min_ab; i++)
    ab_to_xz[i - min_ab] = i <= 3390 ? i * 108 / 841 - base * 16 / 116 * 108 / 841 : i * i / base * i / base;
  for (int i = 0; i < inv_gamma_size; i++)
    inv_gamma_tab[i] = (uint16_t)lrintf(255.0f * (float)from_linear((1.0f / inv_gamma_size) * (float)i));
  for (int i = 0; i < 9; i++) inv_coeffs[i] = (int)lrint(4096.0 * rgb_from_xyz[i] * white[i % 3]);
}

static uint8_t clamp_u8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

void fvi_rgb_to_lab8(const uint8_t *rgb, int rgb_step, uint8_t *lab, int64_t n) {
  pthread_once(&tables_once, build_tables);
  const int l_scale = (116 * 255 + 50) / 100, l_shift = -((16 * 255 * (1 << lab_shift) + 50) / 100);
  const int half = 1 << (xyz_shift - 1), half2 = 1 << (lab_shift - 1);
  for (int64_t p = 0; p < n; p++) {
    const uint8_t *s = rgb + p * rgb_step;
    int r = gamma_tab[s[0]], g = gamma_tab[s[1]], b = gamma_tab[s[2]];
    int fx = cbrt_tab[(r * coeffs[0] + g * coeffs[1] + b * coeffs[2] + half) >> xyz_shift];
    int fy = cbrt_tab[(r * coeffs[3] + g * coeffs[4] + b * coeffs[5] + half) >> xyz_shift];
    int fz = cbrt_tab[(r * coeffs[6] + g * coeffs[7] + b * coeffs[8] + half) >> xyz_shift];
    lab[p * 3] = clamp_u8((l_scale * fy + l_shift + half2) >> lab_shift);
    lab[p * 3 + 1] = clamp_u8((500 * (fx - fy) + 128 * (1 << lab_shift) + half2) >> lab_shift);
    lab[p * 3 + 2] = clamp_u8((200 * (fy - fz) + 128 * (1 << lab_shift) + half2) >> lab_shift);
  }
}

void fvi_lab8_to_rgb(const uint8_t *lab, uint8_t *rgb, int rgb_step, int64_t n) {
  pthread_once(&tables_once, build_tables);
  const int shift = xyz_shift + base_shift - inv_gamma_shift, half = 1 << (shift - 1);
  for (int64_t p = 0; p < n; p++) {
    const uint8_t *s = lab + p * 3;
    int y = l_to_y[s[0]], fy = l_to_fy[s[0]];
    /* a * base / 500 and b * base / 200, less the offsets, in OpenCV's approximation */
    int adiv = ((5 * s[1] * 53687 + (1 << 7)) >> 13) - 128 * base / 500;
    int bdiv = ((s[2] * 41943 + (1 << 4)) >> 9) - 128 * base / 200 + 1;
    int x = ab_to_xz[fy + adiv - min_ab], z = ab_to_xz[fy - bdiv - min_ab];
    for (int i = 0; i < 3; i++) {
      int v = (inv_coeffs[i * 3] * x + inv_coeffs[i * 3 + 1] * y + inv_coeffs[i * 3 + 2] * z + half) >> shift;
      rgb[p * rgb_step + i] = (uint8_t)inv_gamma_tab[v < 0 ? 0 : v > inv_gamma_size - 1 ? inv_gamma_size - 1 : v];
    }
  }
}
