/* nn_conv2d.c: conv2d forward and backward on the CPU (float and double).
 *
 * General case: im2col + GEMM (OpenBLAS) per group. The column matrix of one group is
 * (Kg, nb*OH*OW) row-major with Kg = C_in/groups*KH*KW, row (c, kh, kw), column
 * (image, oh, ow): the weight (C_out/groups, Kg) multiplies it with no transposes.
 * When OH*OW is small (late ResNet stages) nb images share one GEMM so it stays wide.
 * 1x1 convs with stride 1 and no padding use the input itself as the column matrix.
 * Depthwise convs (one input channel per group) use direct loops.
 * im2col is parallel over column rows, col2im over (image, input channel): no races.
 * The body is nn_conv2d.inc, compiled once per element type (see nn_generic.h).
 * Build: part of the core library; standalone test line in spec/c/test_nn_kernels.c. */
#include <cblas.h>
#include <string.h>

#include "nn_kernels.h"

/* GEMMs get at least this many columns where the batch allows it. */
#define CONV_GEMM_COLS 1024

typedef struct conv_plan {
  int64_t B, C_in, H, W, C_out, KH, KW, sh, sw, ph, pw, dh, dw, groups;
  int64_t OH, OW, OHW, HW;
  int64_t Cg;  /* input channels per group */
  int64_t Mg;  /* output channels per group */
  int64_t Kg;  /* rows of a group's column matrix: Cg*KH*KW */
  int64_t nb;  /* images per GEMM */
  int depthwise;  /* one input channel per group, groups > 1: direct loops */
  int direct1x1;  /* 1x1, stride 1, padding 0: the input is the column matrix */
} conv_plan;

static conv_plan conv_make_plan(int64_t B, int64_t C_in, int64_t H, int64_t W, int64_t C_out,
                                int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                                int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
  conv_plan p;
  p.B = B; p.C_in = C_in; p.H = H; p.W = W; p.C_out = C_out;
  p.KH = KH; p.KW = KW; p.sh = sh; p.sw = sw; p.ph = ph; p.pw = pw; p.dh = dh; p.dw = dw;
  p.groups = groups;
  p.OH = fv_conv_out_size(H, KH, sh, ph, dh);
  p.OW = fv_conv_out_size(W, KW, sw, pw, dw);
  p.OHW = p.OH * p.OW;
  p.HW = H * W;
  p.Cg = C_in / groups;
  p.Mg = C_out / groups;
  p.Kg = p.Cg * KH * KW;
  p.depthwise = groups > 1 && p.Cg == 1;
  p.direct1x1 = KH == 1 && KW == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
  p.nb = 1;
  if (!p.direct1x1 && p.OHW > 0 && p.OHW < CONV_GEMM_COLS) {
    p.nb = (CONV_GEMM_COLS + p.OHW - 1) / p.OHW;
    if (p.nb > B) p.nb = B;
    if (p.nb < 1) p.nb = 1;
  }
  return p;
}

size_t fv_conv2d_workspace_size(int64_t B, int64_t C_in, int64_t H, int64_t W, int64_t C_out,
                                int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                                int64_t pw, int64_t dh, int64_t dw, int64_t groups,
                                size_t elem_size) {
  conv_plan p = conv_make_plan(B, C_in, H, W, C_out, KH, KW, sh, sw, ph, pw, dh, dw, groups);
  if (p.depthwise || p.direct1x1 || p.OHW <= 0) return 0;
  size_t cols = (size_t)(p.nb * p.OHW);
  size_t elems = (size_t)p.Kg * cols + (p.nb > 1 ? (size_t)p.Mg * cols : 0);
  return elems * elem_size;
}

/* Output positions o in [lo, hi) of one axis whose input o*stride + off is inside [0, in). */
static inline void conv_range(int64_t off, int64_t stride, int64_t in, int64_t out, int64_t *lo,
                              int64_t *hi) {
  int64_t l = off >= 0 ? 0 : (-off + stride - 1) / stride;
  int64_t h = in - 1 - off < 0 ? 0 : (in - 1 - off) / stride + 1;
  if (l > out) l = out;
  if (h > out) h = out;
  if (h < l) h = l;
  *lo = l;
  *hi = h;
}

#define NN_DOUBLE 0
#include "nn_generic.h"
#include "nn_conv2d.inc"
#undef NN_DOUBLE
#define NN_DOUBLE 1
#include "nn_generic.h"
#include "nn_conv2d.inc"
