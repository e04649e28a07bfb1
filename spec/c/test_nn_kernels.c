/* test_nn_kernels.c: checks of the CPU nn kernels (core/cpu/nn_kernels.h).
 *
 * Build and run from the repository root (no Makefile needed):
 *   K="conv2d batch_norm pool upsample softmax loss shuffle"
 *   gcc -std=c11 -O2 -Wall -Wextra -fopenmp -o /tmp/test_nn_kernels spec/c/test_nn_kernels.c \
 *       $(for k in $K; do echo core/cpu/nn_$k.c; done) -lblas -lm && /tmp/test_nn_kernels
 *   OMP_WAIT_POLICY=passive /tmp/test_nn_kernels bench   # float32 conv2d timings, ResNet18 sizes
 * (OMP_WAIT_POLICY=passive: see "Threads" at the top of core/cpu/nn_kernels.h.)
 * Add -DNN_PAR_MIN=1 to run every kernel loop in parallel even at these small sizes.
 * `make ctest` builds the same program against build/libfovea.so.
 *
 * For every kernel, in double:
 *   (a) forward against a naive reference written here (small odd sizes), plus a few
 *       values known from PyTorch;
 *   (b) backward against central finite differences (eps 1e-6) of L = sum(r * out)
 *       for a random r, per input element (random directions for the bigger cases);
 *       gradient buffers start non-zero, so this also checks that backward adds;
 *   (c) float against double, forward and backward.
 * Outputs and the conv workspace start full of NaNs, so unwritten elements show up.
 * Exits 1 when a check fails. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../core/cpu/nn_kernels.h"

/* ---- utilities ---- */

static int g_fail = 0, g_checks = 0;
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static double urand(void) { /* uniform [-1, 1) */
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static double *dalloc(size_t n) {
  double *p = calloc(n ? n : 1, sizeof(double));
  if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
  return p;
}
static float *falloc(size_t n) {
  float *p = calloc(n ? n : 1, sizeof(float));
  if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
  return p;
}
static double *drand_new(size_t n, double scale) {
  double *p = dalloc(n);
  for (size_t i = 0; i < n; i++) p[i] = urand() * scale;
  return p;
}
static void d2f(float *dst, const double *src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}
static void f2d(double *dst, const float *src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = src[i];
}
static double maxabs(const double *a, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
  return m;
}
/* max |a - b| / max(1, max|b|) */
static double relerr(const double *a, const double *b, size_t n) {
  double e = 0, s = maxabs(b, n);
  if (s < 1) s = 1;
  for (size_t i = 0; i < n; i++) {
    double d = fabs(a[i] - b[i]);
    if (!(d <= e)) e = d; /* NaN wins */
  }
  return e / s;
}
static void check(int ok, const char *what, const char *name, double err) {
  g_checks++;
  if (!ok) {
    g_fail++;
    printf("FAIL %-44s %-22s err %.3g\n", name, what, err);
  }
}

/* ---- generic harness ---- */

enum { MAXP = 3 };
typedef struct tcase tcase;
struct tcase {
  char name[96];
  int np;                  /* differentiable inputs */
  double *x[MAXP];         /* inputs (double) */
  float *x32[MAXP];        /* their float copies, filled by the harness */
  size_t n[MAXP];
  const char *xname[MAXP];
  double *gx[MAXP];        /* gradients (double), accumulated by bwd */
  float *g32[MAXP];
  double *out;             /* forward output */
  float *out32;
  size_t nout;
  double *dout;            /* upstream gradient r */
  float *dout32;
  void (*fwd)(tcase *t, int f32);  /* out (or out32) <- forward(x) */
  void (*bwd)(tcase *t, int f32);  /* gx (or g32) += backward(dout) */
  void *cfg;
  int directional;         /* finite differences along random directions only */
  double f32_tol;
};

static void tcase_init(tcase *t, const char *name, size_t nout) {
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->nout = nout;
  t->out = dalloc(nout);
  t->out32 = falloc(nout);
  t->dout = dalloc(nout);
  t->dout32 = falloc(nout);
  t->f32_tol = 1e-4;
}
static void tcase_param(tcase *t, const char *name, double *x, size_t n) {
  int i = t->np++;
  t->x[i] = x;
  t->n[i] = n;
  t->xname[i] = name;
  t->x32[i] = falloc(n);
  t->gx[i] = dalloc(n);
  t->g32[i] = falloc(n);
}
static void tcase_free(tcase *t) {
  for (int i = 0; i < t->np; i++) {
    free(t->x[i]); free(t->x32[i]); free(t->gx[i]); free(t->g32[i]);
  }
  free(t->out); free(t->out32); free(t->dout); free(t->dout32);
}
/* Forward with the output pre-filled with NaN: every element must be written. */
static void fwd_call(tcase *t, int f32) {
  for (size_t i = 0; i < t->nout; i++) {
    t->out[i] = NAN;
    t->out32[i] = NAN;
  }
  t->fwd(t, f32);
}
static double loss_of(tcase *t) {
  fwd_call(t, 0);
  double s = 0;
  for (size_t i = 0; i < t->nout; i++) s += t->dout[i] * t->out[i];
  return s;
}

/* Runs (a) against expected (may be NULL when checked by the caller), (b) and (c). */
static void run_case(tcase *t, const double *expected) {
  const double eps = 1e-6;
  char what[64];
  /* (a) forward */
  fwd_call(t, 0);
  double *out64 = dalloc(t->nout);
  memcpy(out64, t->out, t->nout * sizeof(double));
  if (expected) {
    double e = relerr(out64, expected, t->nout);
    check(e <= 1e-12, "forward vs reference", t->name, e);
  }
  /* (b) backward: gradients start at g0, the kernel adds */
  for (size_t i = 0; i < t->nout; i++) t->dout[i] = urand();
  double *g0[MAXP], *an[MAXP];
  for (int p = 0; p < t->np; p++) {
    g0[p] = drand_new(t->n[p], 1.0);
    an[p] = dalloc(t->n[p]);
    memcpy(t->gx[p], g0[p], t->n[p] * sizeof(double));
  }
  t->bwd(t, 0);
  double worst_fd = 0;
  for (int p = 0; p < t->np; p++) {
    for (size_t i = 0; i < t->n[p]; i++) an[p][i] = t->gx[p][i] - g0[p][i];
    double e = 0;
    if (!t->directional) {
      for (size_t i = 0; i < t->n[p]; i++) {
        double s = t->x[p][i];
        t->x[p][i] = s + eps;
        double lp = loss_of(t);
        t->x[p][i] = s - eps;
        double lm = loss_of(t);
        t->x[p][i] = s;
        double fd = (lp - lm) / (2 * eps);
        double d = fabs(fd - an[p][i]) / fmax(1.0, fabs(fd));
        if (!(d <= e)) e = d;
      }
    } else {
      double *v = dalloc(t->n[p]), *save = dalloc(t->n[p]);
      memcpy(save, t->x[p], t->n[p] * sizeof(double));
      for (int k = 0; k < 3; k++) {
        double dir = 0;
        for (size_t i = 0; i < t->n[p]; i++) {
          v[i] = urand();
          dir += v[i] * an[p][i];
        }
        for (size_t i = 0; i < t->n[p]; i++) t->x[p][i] = save[i] + eps * v[i];
        double lp = loss_of(t);
        for (size_t i = 0; i < t->n[p]; i++) t->x[p][i] = save[i] - eps * v[i];
        double lm = loss_of(t);
        memcpy(t->x[p], save, t->n[p] * sizeof(double));
        double fd = (lp - lm) / (2 * eps);
        double d = fabs(fd - dir) / fmax(1.0, fabs(fd));
        if (!(d <= e)) e = d;
      }
      free(v);
      free(save);
    }
    snprintf(what, sizeof what, "grad %s vs fin.diff", t->xname[p]);
    check(e <= 1e-6, what, t->name, e);
    if (!(e <= worst_fd)) worst_fd = e;
  }
  /* (c) float against double */
  for (int p = 0; p < t->np; p++) d2f(t->x32[p], t->x[p], t->n[p]);
  fwd_call(t, 1);
  double *o32 = dalloc(t->nout);
  f2d(o32, t->out32, t->nout);
  double ef = relerr(o32, out64, t->nout);
  check(ef <= t->f32_tol, "float forward vs double", t->name, ef);
  d2f(t->dout32, t->dout, t->nout);
  for (int p = 0; p < t->np; p++) d2f(t->g32[p], g0[p], t->n[p]);
  t->bwd(t, 1);
  double eb = 0;
  for (int p = 0; p < t->np; p++) {
    double *g = dalloc(t->n[p]);
    for (size_t i = 0; i < t->n[p]; i++) g[i] = (double)t->g32[p][i] - (double)(float)g0[p][i];
    double e = relerr(g, an[p], t->n[p]);
    snprintf(what, sizeof what, "float grad %s", t->xname[p]);
    check(e <= t->f32_tol * 10, what, t->name, e);
    if (!(e <= eb)) eb = e;
    free(g);
  }
  printf("  %-46s fd %.1e  f32 fwd %.1e bwd %.1e\n", t->name, worst_fd, ef, eb);
  for (int p = 0; p < t->np; p++) { free(g0[p]); free(an[p]); }
  free(out64);
  free(o32);
}

/* ================= conv2d ================= */

typedef struct {
  int64_t B, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw, dh, dw, groups, OH, OW;
  int bias;
} conv_cfg;
#define CONV_ARGS(c) \
  (c)->B, (c)->Cin, (c)->H, (c)->W, (c)->Cout, (c)->KH, (c)->KW, (c)->sh, (c)->sw, (c)->ph, \
      (c)->pw, (c)->dh, (c)->dw, (c)->groups

/* A workspace of the advertised size, full of NaNs (bytes 0xFF), then guard bytes. */
static unsigned char *ws_new(const conv_cfg *c, size_t elem, size_t *size) {
  *size = fv_conv2d_workspace_size(CONV_ARGS(c), elem);
  unsigned char *ws = malloc(*size + 64);
  if (!ws) exit(2);
  memset(ws, 0xFF, *size);
  memset(ws + *size, 0x5A, 64);
  return ws;
}
static void ws_done(unsigned char *ws, size_t size, const char *name) {
  int ok = 1;
  for (size_t i = 0; i < 64; i++) ok &= ws[size + i] == 0x5A;
  check(ok, "workspace overrun", name, 0);
  free(ws);
}

static void conv_fwd(tcase *t, int f32) {
  conv_cfg *c = t->cfg;
  size_t sz;
  unsigned char *ws = ws_new(c, f32 ? sizeof(float) : sizeof(double), &sz);
  void *w = sz ? ws : NULL; /* NULL when no workspace is needed, as the backend passes it */
  if (f32)
    fv_conv2d_forward_f32(t->out32, t->x32[0], t->x32[1], c->bias ? t->x32[2] : NULL, w, CONV_ARGS(c));
  else
    fv_conv2d_forward_f64(t->out, t->x[0], t->x[1], c->bias ? t->x[2] : NULL, w, CONV_ARGS(c));
  ws_done(ws, sz, t->name);
}
static void conv_bwd(tcase *t, int f32) {
  conv_cfg *c = t->cfg;
  size_t sz;
  unsigned char *ws = ws_new(c, f32 ? sizeof(float) : sizeof(double), &sz);
  void *w = sz ? ws : NULL;
  if (f32)
    fv_conv2d_backward_f32(t->g32[0], t->g32[1], c->bias ? t->g32[2] : NULL, t->dout32, t->x32[0],
                           t->x32[1], w, CONV_ARGS(c));
  else
    fv_conv2d_backward_f64(t->gx[0], t->gx[1], c->bias ? t->gx[2] : NULL, t->dout, t->x[0], t->x[1],
                           w, CONV_ARGS(c));
  ws_done(ws, sz, t->name);
}
static void conv_ref(const conv_cfg *c, double *out, const double *x, const double *w,
                     const double *b) {
  int64_t Cg = c->Cin / c->groups, Mg = c->Cout / c->groups;
  for (int64_t n = 0; n < c->B; n++)
    for (int64_t oc = 0; oc < c->Cout; oc++)
      for (int64_t oh = 0; oh < c->OH; oh++)
        for (int64_t ow = 0; ow < c->OW; ow++) {
          double s = b ? b[oc] : 0;
          int64_t g = oc / Mg;
          for (int64_t ci = 0; ci < Cg; ci++)
            for (int64_t kh = 0; kh < c->KH; kh++)
              for (int64_t kw = 0; kw < c->KW; kw++) {
                int64_t ih = oh * c->sh - c->ph + kh * c->dh, iw = ow * c->sw - c->pw + kw * c->dw;
                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                s += x[((n * c->Cin + g * Cg + ci) * c->H + ih) * c->W + iw] *
                     w[((oc * Cg + ci) * c->KH + kh) * c->KW + kw];
              }
          out[((n * c->Cout + oc) * c->OH + oh) * c->OW + ow] = s;
        }
}

static void test_conv(const char *label, int64_t B, int64_t Cin, int64_t H, int64_t W,
                      int64_t Cout, int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                      int64_t pw, int64_t dh, int64_t dw, int64_t groups, int bias) {
  conv_cfg c = {B, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw, dh, dw, groups, 0, 0, bias};
  c.OH = fv_conv_out_size(H, KH, sh, ph, dh);
  c.OW = fv_conv_out_size(W, KW, sw, pw, dw);
  tcase t;
  char name[96];
  snprintf(name, sizeof name, "conv2d %s", label);
  tcase_init(&t, name, (size_t)(B * Cout * c.OH * c.OW));
  size_t nx = (size_t)(B * Cin * H * W), nw = (size_t)(Cout * (Cin / groups) * KH * KW);
  tcase_param(&t, "inp", drand_new(nx, 1.0), nx);
  tcase_param(&t, "weight", drand_new(nw, 1.0), nw);
  if (bias) tcase_param(&t, "bias", drand_new((size_t)Cout, 1.0), (size_t)Cout);
  t.cfg = &c;
  t.fwd = conv_fwd;
  t.bwd = conv_bwd;
  t.directional = t.nout * (nx + nw) > 400000;
  double *ref = dalloc(t.nout);
  conv_ref(&c, ref, t.x[0], t.x[1], bias ? t.x[2] : NULL);
  run_case(&t, ref);

  /* NULL gradients are skipped, the others are the same as with all three */
  double *gw_all = dalloc(nw), *gw_one = dalloc(nw), *gb = dalloc((size_t)Cout);
  size_t sz;
  unsigned char *ws = ws_new(&c, sizeof(double), &sz);
  double *gi = dalloc(nx);
  fv_conv2d_backward_f64(gi, gw_all, bias ? gb : NULL, t.dout, t.x[0], t.x[1], ws, CONV_ARGS(&c));
  fv_conv2d_backward_f64(NULL, gw_one, NULL, t.dout, t.x[0], t.x[1], ws, CONV_ARGS(&c));
  double e = relerr(gw_one, gw_all, nw);
  check(e <= 1e-12, "dweight alone", t.name, e);
  double *gi_one = dalloc(nx);
  fv_conv2d_backward_f64(gi_one, NULL, NULL, t.dout, t.x[0], t.x[1], ws, CONV_ARGS(&c));
  e = relerr(gi_one, gi, nx);
  check(e <= 1e-12, "dinp alone", t.name, e);
  ws_done(ws, sz, t.name);
  free(gw_all); free(gw_one); free(gb); free(gi); free(gi_one); free(ref);
  tcase_free(&t);
}

/* ================= batch_norm ================= */

typedef struct {
  int64_t B, C, S;
  int training, affine;
  double momentum, eps;
  double *rm0, *rv0;        /* running stats before the call */
  double *rm, *rv, *sm, *si; /* after the latest double call */
  float *rm32, *rv32, *sm32, *si32;
} bn_cfg;

static void bn_fwd(tcase *t, int f32) {
  bn_cfg *c = t->cfg;
  size_t C = (size_t)c->C;
  if (f32) {
    d2f(c->rm32, c->rm0, C);
    d2f(c->rv32, c->rv0, C);
    fv_batch_norm_forward_f32(t->out32, c->sm32, c->si32, c->rm32, c->rv32, t->x32[0],
                              c->affine ? t->x32[1] : NULL, c->affine ? t->x32[2] : NULL, c->B,
                              c->C, c->S, c->training, c->momentum, c->eps);
  } else {
    memcpy(c->rm, c->rm0, C * sizeof(double));
    memcpy(c->rv, c->rv0, C * sizeof(double));
    fv_batch_norm_forward_f64(t->out, c->sm, c->si, c->rm, c->rv, t->x[0],
                              c->affine ? t->x[1] : NULL, c->affine ? t->x[2] : NULL, c->B, c->C,
                              c->S, c->training, c->momentum, c->eps);
  }
}
static void bn_bwd(tcase *t, int f32) {
  bn_cfg *c = t->cfg;
  bn_fwd(t, f32); /* saved stats of this precision */
  if (f32) {
    float *rv0 = falloc((size_t)c->C), *rm0 = falloc((size_t)c->C);
    d2f(rm0, c->rm0, (size_t)c->C);
    d2f(rv0, c->rv0, (size_t)c->C);
    fv_batch_norm_backward_f32(t->g32[0], c->affine ? t->g32[1] : NULL, c->affine ? t->g32[2] : NULL,
                               t->dout32, t->x32[0], c->affine ? t->x32[1] : NULL, rm0, rv0,
                               c->sm32, c->si32, c->B, c->C, c->S, c->training, c->eps);
    free(rv0); free(rm0);
  } else {
    fv_batch_norm_backward_f64(t->gx[0], c->affine ? t->gx[1] : NULL, c->affine ? t->gx[2] : NULL,
                               t->dout, t->x[0], c->affine ? t->x[1] : NULL, c->rm0, c->rv0, c->sm,
                               c->si, c->B, c->C, c->S, c->training, c->eps);
  }
}

static void test_bn(const char *label, int64_t B, int64_t C, int64_t S, int training, int affine) {
  bn_cfg c = {B, C, S, training, affine, 0.1, 1e-5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  c.rm0 = drand_new((size_t)C, 0.5);
  c.rv0 = dalloc((size_t)C);
  for (int64_t i = 0; i < C; i++) c.rv0[i] = 0.5 + urand() * 0.25 + 0.25;
  c.rm = dalloc((size_t)C); c.rv = dalloc((size_t)C); c.sm = dalloc((size_t)C); c.si = dalloc((size_t)C);
  c.rm32 = falloc((size_t)C); c.rv32 = falloc((size_t)C); c.sm32 = falloc((size_t)C); c.si32 = falloc((size_t)C);
  tcase t;
  char name[96];
  snprintf(name, sizeof name, "batch_norm %s", label);
  size_t n = (size_t)(B * C * S);
  tcase_init(&t, name, n);
  double *x = dalloc(n);
  for (size_t i = 0; i < n; i++) x[i] = urand() * 2 + 0.7; /* non-zero mean */
  tcase_param(&t, "inp", x, n);
  if (affine) {
    tcase_param(&t, "weight", drand_new((size_t)C, 1.0), (size_t)C);
    tcase_param(&t, "bias", drand_new((size_t)C, 1.0), (size_t)C);
  }
  t.cfg = &c;
  t.fwd = bn_fwd;
  t.bwd = bn_bwd;
  t.f32_tol = 2e-4;
  /* reference */
  double *ref = dalloc(n), *rm = dalloc((size_t)C), *rv = dalloc((size_t)C);
  for (int64_t ch = 0; ch < C; ch++) {
    double mean, var, cnt = (double)(B * S);
    if (training) {
      double s = 0, s2 = 0;
      for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < S; j++) s += x[(b * C + ch) * S + j];
      mean = s / cnt;
      for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < S; j++) {
          double d = x[(b * C + ch) * S + j] - mean;
          s2 += d * d;
        }
      var = s2 / cnt;
      rm[ch] = 0.9 * c.rm0[ch] + 0.1 * mean;
      rv[ch] = 0.9 * c.rv0[ch] + 0.1 * s2 / (cnt - 1);
    } else {
      mean = c.rm0[ch];
      var = c.rv0[ch];
      rm[ch] = c.rm0[ch];
      rv[ch] = c.rv0[ch];
    }
    for (int64_t b = 0; b < B; b++)
      for (int64_t j = 0; j < S; j++) {
        size_t i = (size_t)((b * C + ch) * S + j);
        double y = (x[i] - mean) / sqrt(var + 1e-5);
        ref[i] = affine ? y * t.x[1][ch] + t.x[2][ch] : y;
      }
  }
  run_case(&t, ref);
  bn_fwd(&t, 0);
  double e = fmax(relerr(c.rm, rm, (size_t)C), relerr(c.rv, rv, (size_t)C));
  check(e <= 1e-12, "running stats", t.name, e);
  free(ref); free(rm); free(rv);
  free(c.rm0); free(c.rv0); free(c.rm); free(c.rv); free(c.sm); free(c.si);
  free(c.rm32); free(c.rv32); free(c.sm32); free(c.si32);
  tcase_free(&t);
}

/* ================= pooling ================= */

typedef struct {
  int kind; /* 0 max, 1 avg, 2 adaptive avg, 3 adaptive max */
  int64_t B, C, H, W, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw;
  int count_include_pad;
  int64_t *ind;
} pool_cfg;

static void pool_fwd(tcase *t, int f32) {
  pool_cfg *c = t->cfg;
  if (c->kind == 0) {
    if (f32) fv_max_pool2d_forward_f32(t->out32, c->ind, t->x32[0], c->B, c->C, c->H, c->W, c->OH, c->OW, c->KH, c->KW, c->sh, c->sw, c->ph, c->pw, c->dh, c->dw);
    else fv_max_pool2d_forward_f64(t->out, c->ind, t->x[0], c->B, c->C, c->H, c->W, c->OH, c->OW, c->KH, c->KW, c->sh, c->sw, c->ph, c->pw, c->dh, c->dw);
  } else if (c->kind == 1) {
    if (f32) fv_avg_pool2d_forward_f32(t->out32, t->x32[0], c->B, c->C, c->H, c->W, c->OH, c->OW, c->KH, c->KW, c->sh, c->sw, c->ph, c->pw, c->count_include_pad);
    else fv_avg_pool2d_forward_f64(t->out, t->x[0], c->B, c->C, c->H, c->W, c->OH, c->OW, c->KH, c->KW, c->sh, c->sw, c->ph, c->pw, c->count_include_pad);
  } else if (c->kind == 2) {
    if (f32) fv_adaptive_avg_pool2d_forward_f32(t->out32, t->x32[0], c->B, c->C, c->H, c->W, c->OH, c->OW);
    else fv_adaptive_avg_pool2d_forward_f64(t->out, t->x[0], c->B, c->C, c->H, c->W, c->OH, c->OW);
  } else {
    if (f32) fv_adaptive_max_pool2d_forward_f32(t->out32, c->ind, t->x32[0], c->B, c->C, c->H, c->W, c->OH, c->OW);
    else fv_adaptive_max_pool2d_forward_f64(t->out, c->ind, t->x[0], c->B, c->C, c->H, c->W, c->OH, c->OW);
  }
}
static void pool_bwd(tcase *t, int f32) {
  pool_cfg *c = t->cfg;
  pool_fwd(t, f32); /* indices */
  if (c->kind == 0) {
    if (f32) fv_max_pool2d_backward_f32(t->g32[0], t->dout32, c->ind, c->B, c->C, c->H, c->W, c->OH, c->OW);
    else fv_max_pool2d_backward_f64(t->gx[0], t->dout, c->ind, c->B, c->C, c->H, c->W, c->OH, c->OW);
  } else if (c->kind == 1) {
    if (f32) fv_avg_pool2d_backward_f32(t->g32[0], t->dout32, c->B, c->C, c->H, c->W, c->OH, c->OW, c->KH, c->KW, c->sh, c->sw, c->ph, c->pw, c->count_include_pad);
    else fv_avg_pool2d_backward_f64(t->gx[0], t->dout, c->B, c->C, c->H, c->W, c->OH, c->OW, c->KH, c->KW, c->sh, c->sw, c->ph, c->pw, c->count_include_pad);
  } else if (c->kind == 2) {
    if (f32) fv_adaptive_avg_pool2d_backward_f32(t->g32[0], t->dout32, c->B, c->C, c->H, c->W, c->OH, c->OW);
    else fv_adaptive_avg_pool2d_backward_f64(t->gx[0], t->dout, c->B, c->C, c->H, c->W, c->OH, c->OW);
  } else {
    if (f32) fv_adaptive_max_pool2d_backward_f32(t->g32[0], t->dout32, c->ind, c->B, c->C, c->H, c->W, c->OH, c->OW);
    else fv_adaptive_max_pool2d_backward_f64(t->gx[0], t->dout, c->ind, c->B, c->C, c->H, c->W, c->OH, c->OW);
  }
}

/* Reference: windows as sets of input positions, written without PyTorch's clamping. */
static void pool_ref(const pool_cfg *c, const double *x, double *out, int64_t *ind) {
  for (int64_t p = 0; p < c->B * c->C; p++)
    for (int64_t oh = 0; oh < c->OH; oh++)
      for (int64_t ow = 0; ow < c->OW; ow++) {
        double best = -INFINITY, sum = 0;
        int64_t bi = -1, inside = 0, padded = 0;
        int64_t h_lo, h_hi, w_lo, w_hi, hstep = 1, wstep = 1;
        if (c->kind >= 2) { /* adaptive bins from floating floor/ceil */
          h_lo = (int64_t)floor((double)oh * c->H / c->OH);
          h_hi = (int64_t)ceil((double)(oh + 1) * c->H / c->OH);
          w_lo = (int64_t)floor((double)ow * c->W / c->OW);
          w_hi = (int64_t)ceil((double)(ow + 1) * c->W / c->OW);
        } else {
          h_lo = oh * c->sh - c->ph; h_hi = h_lo + (c->KH - 1) * c->dh + 1; hstep = c->dh;
          w_lo = ow * c->sw - c->pw; w_hi = w_lo + (c->KW - 1) * c->dw + 1; wstep = c->dw;
        }
        for (int64_t ih = h_lo; ih < h_hi; ih += hstep)
          for (int64_t iw = w_lo; iw < w_hi; iw += wstep) {
            if (ih < c->H + c->ph && iw < c->W + c->pw) padded++;
            if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
            inside++;
            double v = x[p * c->H * c->W + ih * c->W + iw];
            sum += v;
            if (v > best) { best = v; bi = ih * c->W + iw; }
          }
        int64_t o = p * c->OH * c->OW + oh * c->OW + ow;
        if (c->kind == 0 || c->kind == 3) {
          out[o] = best;
          ind[o] = bi;
        } else if (c->kind == 1) {
          out[o] = inside ? sum / (double)(c->count_include_pad ? padded : inside) : 0;
        } else {
          out[o] = sum / (double)inside;
        }
      }
}

static void test_pool(const char *label, int kind, int64_t B, int64_t C, int64_t H, int64_t W,
                      int64_t OH, int64_t OW, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                      int64_t ph, int64_t pw, int64_t dh, int64_t dw, int cip) {
  static const char *kinds[] = {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"};
  pool_cfg c = {kind, B, C, H, W, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, cip, NULL};
  size_t nout = (size_t)(B * C * OH * OW), n = (size_t)(B * C * H * W);
  c.ind = calloc(nout, sizeof(int64_t));
  tcase t;
  char name[96];
  snprintf(name, sizeof name, "%s %s", kinds[kind], label);
  tcase_init(&t, name, nout);
  tcase_param(&t, "inp", drand_new(n, 1.0), n);
  t.cfg = &c;
  t.fwd = pool_fwd;
  t.bwd = pool_bwd;
  double *ref = dalloc(nout);
  int64_t *rind = calloc(nout, sizeof(int64_t));
  pool_ref(&c, t.x[0], ref, rind);
  run_case(&t, ref);
  if (kind == 0 || kind == 3) {
    pool_fwd(&t, 0);
    int same = memcmp(rind, c.ind, nout * sizeof(int64_t)) == 0;
    check(same, "indices vs reference", t.name, 0);
    d2f(t.x32[0], t.x[0], n);
    pool_fwd(&t, 1);
    same = memcmp(rind, c.ind, nout * sizeof(int64_t)) == 0;
    check(same, "float indices", t.name, 0);
    /* ties: the first maximum of each window */
    double *save = dalloc(n);
    memcpy(save, t.x[0], n * sizeof(double));
    for (size_t i = 0; i < n; i++) t.x[0][i] = (i % 5) < 3 ? 0.5 : -1.0;
    pool_ref(&c, t.x[0], ref, rind);
    pool_fwd(&t, 0);
    same = memcmp(rind, c.ind, nout * sizeof(int64_t)) == 0;
    check(same, "indices of ties", t.name, 0);
    memcpy(t.x[0], save, n * sizeof(double));
    free(save);
    /* a NaN in the input wins its windows */
    t.x[0][3] = NAN;
    pool_fwd(&t, 0);
    int nan_ok = 1;
    for (size_t o = 0; o < (size_t)(OH * OW); o++)
      if (c.ind[o] == 3) nan_ok &= isnan(t.out[o]);
    int any = 0;
    for (size_t o = 0; o < (size_t)(OH * OW); o++) any |= c.ind[o] == 3;
    check(nan_ok && any, "NaN propagation", t.name, 0);
  }
  free(ref); free(rind); free(c.ind);
  tcase_free(&t);
}

/* ================= bilinear ================= */

typedef struct {
  int64_t B, C, H, W, OH, OW;
  int align;
  double scale_h, scale_w;
} up_cfg;

static void up_fwd(tcase *t, int f32) {
  up_cfg *c = t->cfg;
  if (f32) fv_upsample_bilinear2d_forward_f32(t->out32, t->x32[0], c->B, c->C, c->H, c->W, c->OH, c->OW, c->align, c->scale_h, c->scale_w);
  else fv_upsample_bilinear2d_forward_f64(t->out, t->x[0], c->B, c->C, c->H, c->W, c->OH, c->OW, c->align, c->scale_h, c->scale_w);
}
static void up_bwd(tcase *t, int f32) {
  up_cfg *c = t->cfg;
  if (f32) fv_upsample_bilinear2d_backward_f32(t->g32[0], t->dout32, c->B, c->C, c->H, c->W, c->OH, c->OW, c->align, c->scale_h, c->scale_w);
  else fv_upsample_bilinear2d_backward_f64(t->gx[0], t->dout, c->B, c->C, c->H, c->W, c->OH, c->OW, c->align, c->scale_h, c->scale_w);
}
/* Source coordinate of dst along one axis, from the documented formulas. */
static double up_src(int64_t dst, int64_t in, int64_t out, int align, double scale) {
  if (align) return out > 1 ? dst * (double)(in - 1) / (double)(out - 1) : 0;
  double r = scale > 0 ? 1 / scale : (double)in / (double)out;
  double s = (dst + 0.5) * r - 0.5;
  return s < 0 ? 0 : s;
}
static double up_at(const double *x, int64_t H, int64_t W, double sy, double sx) {
  int64_t y0 = (int64_t)floor(sy), x0 = (int64_t)floor(sx);
  if (y0 > H - 1) y0 = H - 1;
  if (x0 > W - 1) x0 = W - 1;
  int64_t y1 = y0 + 1 < H ? y0 + 1 : H - 1, x1 = x0 + 1 < W ? x0 + 1 : W - 1;
  double ly = sy - y0, lx = sx - x0;
  return (1 - ly) * ((1 - lx) * x[y0 * W + x0] + lx * x[y0 * W + x1]) +
         ly * ((1 - lx) * x[y1 * W + x0] + lx * x[y1 * W + x1]);
}
static void test_up(const char *label, int64_t B, int64_t C, int64_t H, int64_t W, int64_t OH,
                    int64_t OW, int align, double scale_h, double scale_w) {
  up_cfg c = {B, C, H, W, OH, OW, align, scale_h, scale_w};
  size_t nout = (size_t)(B * C * OH * OW), n = (size_t)(B * C * H * W);
  tcase t;
  char name[96];
  snprintf(name, sizeof name, "upsample_bilinear2d %s", label);
  tcase_init(&t, name, nout);
  tcase_param(&t, "inp", drand_new(n, 1.0), n);
  t.cfg = &c;
  t.fwd = up_fwd;
  t.bwd = up_bwd;
  double *ref = dalloc(nout);
  for (int64_t p = 0; p < B * C; p++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++)
        ref[(p * OH + oh) * OW + ow] = up_at(t.x[0] + p * H * W, H, W, up_src(oh, H, OH, align, scale_h),
                                             up_src(ow, W, OW, align, scale_w));
  run_case(&t, ref);
  free(ref);
  tcase_free(&t);
}
/* Values printed by PyTorch for [[1, 2], [3, 4]] interpolated to 4x4. */
static void test_up_known(void) {
  const double x[4] = {1, 2, 3, 4};
  const double want0[16] = {1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5,
                            2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0};
  const double want1[16] = {1.0, 4.0 / 3, 5.0 / 3, 2.0, 5.0 / 3, 2.0, 7.0 / 3, 8.0 / 3,
                            7.0 / 3, 8.0 / 3, 3.0, 10.0 / 3, 3.0, 10.0 / 3, 11.0 / 3, 4.0};
  double out[16];
  fv_upsample_bilinear2d_forward_f64(out, x, 1, 1, 2, 2, 4, 4, 0, 0, 0);
  double e = relerr(out, want0, 16);
  check(e <= 1e-15, "PyTorch values", "upsample_bilinear2d align_corners=False", e);
  fv_upsample_bilinear2d_forward_f64(out, x, 1, 1, 2, 2, 4, 4, 1, 0, 0);
  e = relerr(out, want1, 16);
  check(e <= 1e-15, "PyTorch values", "upsample_bilinear2d align_corners=True", e);
}

/* ================= softmax, log_softmax ================= */

typedef struct {
  int64_t rows, n;
  int log;
} sm_cfg;

static void sm_fwd(tcase *t, int f32) {
  sm_cfg *c = t->cfg;
  if (c->log) {
    if (f32) fv_log_softmax_forward_f32(t->out32, t->x32[0], c->rows, c->n);
    else fv_log_softmax_forward_f64(t->out, t->x[0], c->rows, c->n);
  } else {
    if (f32) fv_softmax_forward_f32(t->out32, t->x32[0], c->rows, c->n);
    else fv_softmax_forward_f64(t->out, t->x[0], c->rows, c->n);
  }
}
static void sm_bwd(tcase *t, int f32) {
  sm_cfg *c = t->cfg;
  sm_fwd(t, f32);
  if (c->log) {
    if (f32) fv_log_softmax_backward_f32(t->g32[0], t->dout32, t->out32, c->rows, c->n);
    else fv_log_softmax_backward_f64(t->gx[0], t->dout, t->out, c->rows, c->n);
  } else {
    if (f32) fv_softmax_backward_f32(t->g32[0], t->dout32, t->out32, c->rows, c->n);
    else fv_softmax_backward_f64(t->gx[0], t->dout, t->out, c->rows, c->n);
  }
}
static void test_softmax(int is_log, int64_t rows, int64_t n) {
  sm_cfg c = {rows, n, is_log};
  size_t N = (size_t)(rows * n);
  tcase t;
  tcase_init(&t, is_log ? "log_softmax 5x7" : "softmax 5x7", N);
  double *x = drand_new(N, 3.0);
  for (int64_t j = 0; j < n; j++) x[n + j] += 1000; /* row 1: large logits */
  tcase_param(&t, "inp", x, N);
  t.cfg = &c;
  t.fwd = sm_fwd;
  t.bwd = sm_bwd;
  double *ref = dalloc(N);
  for (int64_t r = 0; r < rows; r++) {
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < n; j++) m = fmax(m, x[r * n + j]);
    for (int64_t j = 0; j < n; j++) s += exp(x[r * n + j] - m);
    for (int64_t j = 0; j < n; j++)
      ref[r * n + j] = is_log ? x[r * n + j] - m - log(s) : exp(x[r * n + j] - m) / s;
  }
  run_case(&t, ref);
  /* a NaN makes its row NaN and leaves the others alone (PyTorch) */
  x[2] = NAN;
  fwd_call(&t, 0);
  int ok = 1;
  for (int64_t j = 0; j < n; j++) ok &= isnan(t.out[j]) && !isnan(t.out[n + j]);
  check(ok, "NaN row", t.name, 0);
  free(ref);
  tcase_free(&t);
}

/* ================= cross_entropy ================= */

typedef struct {
  int64_t B, K, ignore;
  int reduction;
  int64_t *target;
  double *weight; /* NULL: none */
  float *weight32;
  double *lse;
  float *lse32;
} ce_cfg;

static void ce_fwd(tcase *t, int f32) {
  ce_cfg *c = t->cfg;
  int st;
  if (f32) st = fv_cross_entropy_forward_f32(t->out32, c->lse32, t->x32[0], c->target, c->weight ? c->weight32 : NULL, c->B, c->K, c->reduction, c->ignore);
  else st = fv_cross_entropy_forward_f64(t->out, c->lse, t->x[0], c->target, c->weight, c->B, c->K, c->reduction, c->ignore);
  check(st == 0, "status", t->name, st);
}
static void ce_bwd(tcase *t, int f32) {
  ce_cfg *c = t->cfg;
  ce_fwd(t, f32);
  int st;
  if (f32) st = fv_cross_entropy_backward_f32(t->g32[0], t->dout32, t->x32[0], c->lse32, c->target, c->weight ? c->weight32 : NULL, c->B, c->K, c->reduction, c->ignore);
  else st = fv_cross_entropy_backward_f64(t->gx[0], t->dout, t->x[0], c->lse, c->target, c->weight, c->B, c->K, c->reduction, c->ignore);
  check(st == 0, "status", t->name, st);
}
static void test_ce(const char *label, int reduction, int weighted, int64_t ignore) {
  enum { B = 6, K = 5 };
  int64_t target[B] = {0, 4, 2, ignore, 1, 2}; /* row 3 ignored (rows 2, 5 too when ignore is 2) */
  ce_cfg c = {B, K, ignore, reduction, target, NULL, NULL, dalloc(B), falloc(B)};
  if (weighted) {
    c.weight = dalloc(K);
    c.weight32 = falloc(K);
    for (int k = 0; k < K; k++) c.weight[k] = 0.5 + 0.3 * k;
    d2f(c.weight32, c.weight, K);
  }
  size_t nout = reduction == FV_NN_REDUCTION_NONE ? B : 1;
  tcase t;
  char name[96];
  snprintf(name, sizeof name, "cross_entropy %s", label);
  tcase_init(&t, name, nout);
  tcase_param(&t, "logits", drand_new(B * K, 4.0), B * K);
  t.cfg = &c;
  t.fwd = ce_fwd;
  t.bwd = ce_bwd;
  /* reference: log_softmax + nll_loss */
  double ref[B], tot = 0, wsum = 0;
  for (int b = 0; b < B; b++) {
    const double *x = t.x[0] + b * K;
    double s = 0;
    for (int k = 0; k < K; k++) s += exp(x[k]);
    ref[b] = 0;
    if (target[b] == ignore) continue;
    double w = weighted ? c.weight[target[b]] : 1;
    ref[b] = -w * (x[target[b]] - log(s));
    tot += ref[b];
    wsum += w;
  }
  if (reduction == FV_NN_REDUCTION_MEAN) ref[0] = tot / wsum;
  if (reduction == FV_NN_REDUCTION_SUM) ref[0] = tot;
  run_case(&t, ref);

  /* backward without the saved lse recomputes it */
  double *g1 = dalloc(B * K), *g2 = dalloc(B * K);
  ce_fwd(&t, 0);
  fv_cross_entropy_backward_f64(g1, t.dout, t.x[0], c.lse, target, c.weight, B, K, reduction, ignore);
  fv_cross_entropy_backward_f64(g2, t.dout, t.x[0], NULL, target, c.weight, B, K, reduction, ignore);
  double e = relerr(g2, g1, B * K);
  check(e <= 1e-14, "backward without lse", t.name, e);
  /* a target out of range: status -1 and nothing written */
  int64_t bad[B];
  memcpy(bad, target, sizeof bad);
  bad[2] = K;
  double loss[B] = {7, 7, 7, 7, 7, 7};
  int st = fv_cross_entropy_forward_f64(loss, NULL, t.x[0], bad, c.weight, B, K, reduction, ignore);
  int untouched = 1;
  for (int b = 0; b < B; b++) untouched &= loss[b] == 7;
  check(st != 0 && untouched, "bad target (forward)", t.name, st);
  memcpy(g2, g1, B * K * sizeof(double));
  st = fv_cross_entropy_backward_f64(g2, t.dout, t.x[0], NULL, bad, c.weight, B, K, reduction, ignore);
  check(st != 0 && memcmp(g1, g2, B * K * sizeof(double)) == 0, "bad target (backward)", t.name, st);
  bad[2] = -1;
  st = fv_cross_entropy_forward_f64(loss, NULL, t.x[0], bad, c.weight, B, K, reduction, ignore);
  check(st != 0, "negative target", t.name, st);
  free(g1); free(g2);
  free(c.weight); free(c.weight32); free(c.lse); free(c.lse32);
  tcase_free(&t);
}

/* ================= channel_shuffle ================= */

typedef struct {
  int64_t B, C, S, groups;
} cs_cfg;

static void cs_fwd(tcase *t, int f32) {
  cs_cfg *c = t->cfg;
  if (f32) fv_channel_shuffle_forward_f32(t->out32, t->x32[0], c->B, c->C, c->S, c->groups);
  else fv_channel_shuffle_forward_f64(t->out, t->x[0], c->B, c->C, c->S, c->groups);
}
static void cs_bwd(tcase *t, int f32) {
  cs_cfg *c = t->cfg;
  if (f32) fv_channel_shuffle_backward_f32(t->g32[0], t->dout32, c->B, c->C, c->S, c->groups);
  else fv_channel_shuffle_backward_f64(t->gx[0], t->dout, c->B, c->C, c->S, c->groups);
}
static void test_shuffle(int64_t groups, const int *order) {
  cs_cfg c = {2, 6, 35, groups};
  size_t n = 2 * 6 * 35;
  tcase t;
  char name[96];
  snprintf(name, sizeof name, "channel_shuffle C=6 groups=%d", (int)groups);
  tcase_init(&t, name, n);
  tcase_param(&t, "inp", drand_new(n, 1.0), n);
  t.cfg = &c;
  t.fwd = cs_fwd;
  t.bwd = cs_bwd;
  double *ref = dalloc(n); /* order: PyTorch's output channel order */
  for (int b = 0; b < 2; b++)
    for (int oc = 0; oc < 6; oc++)
      memcpy(ref + (b * 6 + oc) * 35, t.x[0] + (b * 6 + order[oc]) * 35, 35 * sizeof(double));
  run_case(&t, ref);
  free(ref);
  tcase_free(&t);
}

/* ================= shape helpers ================= */

static void test_shapes(void) {
  int ok = fv_pool_out_size(7, 3, 2, 1, 1, 0) == 4 && fv_pool_out_size(6, 3, 2, 0, 1, 1) == 3 &&
           fv_pool_out_size(6, 3, 2, 0, 1, 0) == 2 && fv_pool_out_size(5, 2, 2, 1, 1, 1) == 3 &&
           fv_pool_out_size(112, 3, 2, 1, 1, 0) == 56 && fv_conv_out_size(224, 7, 2, 3, 1) == 112 &&
           fv_conv_out_size(7, 3, 2, 1, 2) == 3;
  check(ok, "output sizes", "shape helpers", 0);
  /* 97 -> 13 adaptive bins are 8 or 9 wide and cover the input */
  int bins = fv_adaptive_start(0, 97, 13) == 0 && fv_adaptive_end(12, 97, 13) == 97;
  for (int i = 0; i < 13; i++) {
    int64_t w = fv_adaptive_end(i, 97, 13) - fv_adaptive_start(i, 97, 13);
    bins &= w == 8 || w == 9;
  }
  check(bins, "adaptive bins 97->13", "shape helpers", 0);
  check(fv_conv2d_workspace_size(2, 6, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 6, 4) == 0 &&
            fv_conv2d_workspace_size(2, 6, 7, 5, 8, 1, 1, 1, 1, 0, 0, 1, 1, 1, 4) == 0 &&
            fv_conv2d_workspace_size(2, 6, 7, 5, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4) > 0,
        "workspace 0 for depthwise and 1x1", "shape helpers", 0);
}

/* ================= benchmark ================= */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
static void bench_conv(const char *label, int64_t B, int64_t Cin, int64_t H, int64_t Cout,
                       int64_t K, int64_t s, int64_t p, int64_t groups, int need_dinp) {
  conv_cfg c = {B, Cin, H, H, Cout, K, K, s, s, p, p, 1, 1, groups, 0, 0, 0};
  c.OH = c.OW = fv_conv_out_size(H, K, s, p, 1);
  size_t nx = (size_t)(B * Cin * H * H), nw = (size_t)(Cout * Cin / groups * K * K);
  size_t no = (size_t)(B * Cout * c.OH * c.OW);
  float *x = falloc(nx), *w = falloc(nw), *o = falloc(no), *go = falloc(no), *gx = falloc(nx),
        *gw = falloc(nw);
  for (size_t i = 0; i < nx; i++) x[i] = (float)urand();
  for (size_t i = 0; i < nw; i++) w[i] = (float)urand() * 0.1f;
  for (size_t i = 0; i < no; i++) go[i] = (float)urand();
  size_t wsz = fv_conv2d_workspace_size(CONV_ARGS(&c), sizeof(float));
  void *ws = malloc(wsz ? wsz : 1);
  enum { REPS = 11 };
  double tf[REPS], tb[REPS];
  for (int r = 0; r < REPS; r++) {
    double t0 = now();
    fv_conv2d_forward_f32(o, x, w, NULL, ws, CONV_ARGS(&c));
    double t1 = now();
    fv_conv2d_backward_f32(need_dinp ? gx : NULL, gw, NULL, go, x, w, ws, CONV_ARGS(&c));
    double t2 = now();
    tf[r] = t1 - t0;
    tb[r] = t2 - t1;
  }
  qsort(tf, REPS, sizeof(double), cmp_double);
  qsort(tb, REPS, sizeof(double), cmp_double);
  double flop = 2.0 * (double)no * (double)(Cin / groups * K * K);
  double fb = flop * (need_dinp ? 2 : 1);
  printf("  %-34s fwd %6.2f / %6.2f ms (%5.1f GFLOP/s)  bwd %6.2f / %6.2f ms (%5.1f GFLOP/s)  ws %.1f MiB\n",
         label, tf[0] * 1e3, tf[REPS / 2] * 1e3, flop / tf[0] * 1e-9, tb[0] * 1e3, tb[REPS / 2] * 1e3,
         fb / tb[0] * 1e-9, wsz / 1048576.0);
  free(x); free(w); free(o); free(go); free(gx); free(gw); free(ws);
}
/* Memory-bound kernels at the ResNet18 stem size, float32, min of 11. */
static void bench_other(void) {
  enum { B = 4, C = 64, H = 112, REPS = 11 };
  const size_t n = (size_t)B * C * H * H, np = (size_t)B * C * 56 * 56;
  float *x = falloc(n), *y = falloc(n), *g = falloc(n), *dx = falloc(n), *p = falloc(np), *gp = falloc(np);
  float w[C], b[C], rm[C], rv[C], sm[C], si[C], dw[C], db[C];
  int64_t *ind = calloc(np, sizeof(int64_t));
  for (size_t i = 0; i < n; i++) { x[i] = (float)urand(); g[i] = (float)urand(); }
  for (int c = 0; c < C; c++) { w[c] = 1; b[c] = 0; rm[c] = 0; rv[c] = 1; }
  double best[4] = {1e9, 1e9, 1e9, 1e9};
  for (int r = 0; r < REPS; r++) {
    double t0 = now();
    fv_batch_norm_forward_f32(y, sm, si, rm, rv, x, w, b, B, C, H * H, 1, 0.1, 1e-5);
    double t1 = now();
    fv_batch_norm_backward_f32(dx, dw, db, g, x, w, rm, rv, sm, si, B, C, H * H, 1, 1e-5);
    double t2 = now();
    fv_max_pool2d_forward_f32(p, ind, x, B, C, H, H, 56, 56, 3, 3, 2, 2, 1, 1, 1, 1);
    double t3 = now();
    fv_max_pool2d_backward_f32(dx, gp, ind, B, C, H, H, 56, 56);
    double t4 = now();
    double t[4] = {t1 - t0, t2 - t1, t3 - t2, t4 - t3};
    for (int k = 0; k < 4; k++) best[k] = t[k] < best[k] ? t[k] : best[k];
  }
  printf("float32 on 4x64x112x112, min of 11: batch_norm train fwd %.2f ms, bwd %.2f ms; "
         "max_pool2d 3x3/2 fwd %.2f ms, bwd %.2f ms\n",
         best[0] * 1e3, best[1] * 1e3, best[2] * 1e3, best[3] * 1e3);
  free(x); free(y); free(g); free(dx); free(p); free(gp); free(ind);
}

static void bench(void) {
  printf("float32 conv2d, min / median of 11 (GFLOP/s at the min); backward: dinp + dweight\n");
  bench_conv("64->64 3x3 s1 on 4x64x56x56", 4, 64, 56, 64, 3, 1, 1, 1, 1);
  bench_conv("stem 3->64 7x7 s2 on 4x3x224x224", 4, 3, 224, 64, 7, 2, 3, 1, 0);
  bench_conv("64->128 3x3 s2 on 4x64x56x56", 4, 64, 56, 128, 3, 2, 1, 1, 1);
  bench_conv("128->128 3x3 s1 on 4x128x28x28", 4, 128, 28, 128, 3, 1, 1, 1, 1);
  bench_conv("256->256 3x3 s1 on 4x256x14x14", 4, 256, 14, 256, 3, 1, 1, 1, 1);
  bench_conv("512->512 3x3 s1 on 4x512x7x7", 4, 512, 7, 512, 3, 1, 1, 1, 1);
  bench_conv("64->128 1x1 s2 on 4x64x56x56", 4, 64, 56, 128, 1, 2, 0, 1, 1);
  bench_conv("dw 116 3x3 s1 on 4x116x28x28", 4, 116, 28, 116, 3, 1, 1, 116, 1);
  bench_other();
}

/* ================= main ================= */

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "bench") == 0) {
    bench();
    return 0;
  }
  double t0 = now();
  test_shapes();
  printf("conv2d\n");
  /*        label                               B Cin H  W Cout KH KW sh sw ph pw dh dw g bias */
  test_conv("3->4 3x3 s2 p1 d2", 2, 3, 7, 5, 4, 3, 3, 2, 2, 1, 1, 2, 2, 1, 1);
  test_conv("groups 3, 6->9 3x2 s(1,2) p(1,0) d(1,2)", 2, 6, 7, 5, 9, 3, 2, 1, 2, 1, 0, 1, 2, 3, 1);
  test_conv("depthwise 3 3x3 s2 p1", 2, 3, 7, 5, 3, 3, 3, 2, 2, 1, 1, 1, 1, 3, 1);
  test_conv("depthwise x2 3->6 3x3 s1 p2 d2", 2, 3, 7, 5, 6, 3, 3, 1, 1, 2, 2, 2, 2, 3, 0);
  test_conv("depthwise 3 2x3 s(2,1) p(0,1)", 2, 3, 7, 5, 3, 2, 3, 2, 1, 0, 1, 1, 1, 3, 1);
  test_conv("1x1 s1 p0 3->5 (no im2col)", 2, 3, 7, 5, 5, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0);
  test_conv("1x1 s2 groups 3, 6->3", 2, 6, 7, 5, 3, 1, 1, 2, 2, 0, 0, 1, 1, 3, 1);
  test_conv("3->2 5x5 p3 (kernel over pad)", 1, 3, 3, 4, 2, 5, 5, 1, 1, 3, 3, 1, 1, 1, 1);
  test_conv("chunks of 2 images + 1, 24x24", 3, 2, 24, 24, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1);
  test_conv("one image per GEMM, 2x 33x33", 2, 2, 33, 33, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0);
  printf("batch_norm\n");
  test_bn("train affine 2x3x35", 2, 3, 35, 1, 1);
  test_bn("train no affine 3x4x5", 3, 4, 5, 1, 0);
  test_bn("train (B, C) 5x3", 5, 3, 1, 1, 1);
  test_bn("eval affine 2x3x35", 2, 3, 35, 0, 1);
  test_bn("eval no affine 2x3x35", 2, 3, 35, 0, 0);
  printf("pooling\n");
  /*                 label                     kind B C H W OH OW KH KW sh sw ph pw dh dw cip */
  test_pool("3x3 s2 p1 7x5", 0, 2, 3, 7, 5, 4, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1);
  test_pool("3x2 s(1,2) p1 d(2,1)", 0, 2, 3, 7, 5, fv_pool_out_size(7, 3, 1, 1, 2, 0),
            fv_pool_out_size(5, 2, 2, 1, 1, 0), 3, 2, 1, 2, 1, 1, 2, 1, 1);
  test_pool("2x2 s2 ceil_mode 7x5", 0, 2, 3, 7, 5, fv_pool_out_size(7, 2, 2, 0, 1, 1),
            fv_pool_out_size(5, 2, 2, 0, 1, 1), 2, 2, 2, 2, 0, 0, 1, 1, 1);
  test_pool("3x3 s2 p1 7x5", 1, 2, 3, 7, 5, 4, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1);
  test_pool("3x3 s2 p1 7x5 count_include_pad=0", 1, 2, 3, 7, 5, 4, 3, 3, 3, 2, 2, 1, 1, 1, 1, 0);
  test_pool("3x2 s(2,1) p(1,0) ceil_mode 6x5", 1, 2, 3, 6, 5, fv_pool_out_size(6, 3, 2, 1, 1, 1),
            fv_pool_out_size(5, 2, 1, 0, 1, 1), 3, 2, 2, 1, 1, 0, 1, 1, 1);
  test_pool("3x3 s2 ceil_mode 6x6 count_include_pad=0", 1, 1, 2, 6, 6, 3, 3, 3, 3, 2, 2, 0, 0, 1, 1, 0);
  test_pool("7x5 -> 3x2", 2, 2, 3, 7, 5, 3, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1);
  test_pool("7x5 -> 1x1 (global)", 2, 2, 3, 7, 5, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1);
  test_pool("3x2 -> 5x4 (bins overlap)", 2, 2, 3, 3, 2, 5, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1);
  test_pool("7x5 -> 3x2", 3, 2, 3, 7, 5, 3, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1);
  test_pool("9x7 -> 4x4", 3, 2, 3, 9, 7, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1);
  printf("upsample_bilinear2d\n");
  test_up_known();
  test_up("7x5 -> 11x8", 2, 3, 7, 5, 11, 8, 0, 0, 0);
  test_up("7x5 -> 11x8 align_corners", 2, 3, 7, 5, 11, 8, 1, 0, 0);
  test_up("7x5 -> 3x2", 2, 3, 7, 5, 3, 2, 0, 0, 0);
  test_up("7x5 -> 3x2 align_corners", 2, 3, 7, 5, 3, 2, 1, 0, 0);
  test_up("5x7 scale_factor 1.5 -> 7x10", 2, 3, 5, 7, 7, 10, 0, 1.5, 1.5);
  test_up("7x5 -> 1x1 align_corners", 2, 3, 7, 5, 1, 1, 1, 0, 0);
  printf("softmax\n");
  test_softmax(0, 5, 7);
  test_softmax(1, 5, 7);
  printf("cross_entropy\n");
  test_ce("mean, weights", FV_NN_REDUCTION_MEAN, 1, -100);
  test_ce("mean, ignore_index 2", FV_NN_REDUCTION_MEAN, 0, 2);
  test_ce("sum", FV_NN_REDUCTION_SUM, 0, -100);
  test_ce("none, weights", FV_NN_REDUCTION_NONE, 1, -100);
  printf("channel_shuffle\n");
  static const int order2[6] = {0, 3, 1, 4, 2, 5}, order3[6] = {0, 2, 4, 1, 3, 5};
  test_shuffle(2, order2);
  test_shuffle(3, order3);
  printf("%d checks, %d failed (%.2f s)\n", g_checks, g_fail, now() - t0);
  return g_fail ? 1 : 0;
}
