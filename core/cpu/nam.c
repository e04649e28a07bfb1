/* nam.c: fused NAM (non-local) attention on the CPU, float and double; the kernels are
 * described in attention.h.
 *
 * Forward: OpenMP over (batch, block of NAM_FWD_BQ queries); per key block of NAM_FWD_BK,
 * S = scale * Q K^T into the thread's tile, an online-softmax step (a per-row reference
 * max m and running sum l; the output rows are rescaled only when a row's max passes m
 * by more than NAM_LAZY), then O += P V straight into the output rows. At the end
 * O /= l and lse = m + log l is kept for backward. Memory beyond the output: lse (B, N),
 * one tile per thread and, on the AVX-512 path, k transposed (B, D, M).
 * Backward: D_i = sum_c dY_ic Y_ic, then OpenMP over key blocks (a few images at a time):
 * each thread owns dK_j and dV_j of its key block and walks every query block,
 * recomputing P = exp(S - lse), dP = dY_i V_j^T, dS = P (dP - D), dV_j += P^T dY_i,
 * dK_j += scale dS^T Q_i, dQ_i += scale dS K_j; dQ goes into per-thread copies (thread 0
 * writes dq itself) summed at the end, so no two threads write one element.
 * Products: on CPUs with AVX-512 (float) the register-blocked micro-kernels of
 * nam_gemm.inc, which read the score tiles in place (no packing) and, in backward, turn
 * the GEMM results into P and dS in registers; elsewhere (and for double) OpenBLAS, run
 * single-threaded inside the OpenMP team (its pool is set to 1 thread for the call and
 * restored after).
 * Scores are kept in base 2 (the GEMM's alpha is scale * log2(e)), so the softmax takes
 * exp2. The float exp2 is a polynomial (relative error 2.5e-7), in vector code compiled
 * for AVX-512 (with vscalefps), AVX2 and the baseline and chosen at run time; double
 * uses libm's exp2. FOVEA_NAM_ISA and FOVEA_NAM_GEMM (see nam_pick_isa) pin the choice. */
#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"

/* Tiles: queries x keys per score tile, forward and backward; the tiles' rows are
 * NAM_PAD elements longer than a key block (no power-of-2 strides). */
#ifndef NAM_FWD_BQ
#define NAM_FWD_BQ 128
#endif
#ifndef NAM_FWD_BK
#define NAM_FWD_BK 512
#endif
#ifndef NAM_BWD_BQ
#define NAM_BWD_BQ 128
#endif
#ifndef NAM_BWD_BK
#define NAM_BWD_BK 256
#endif
#ifndef NAM_PAD
#define NAM_PAD 16
#endif
#define NAM_FWD_LD (NAM_FWD_BK + NAM_PAD)
#define NAM_BWD_LD (NAM_BWD_BK + NAM_PAD)

/* Work (multiply-adds) below which a call runs on one thread. */
#define NAM_PAR_MIN (1 << 18)

/* ---- OpenBLAS's thread pool: one thread while OpenMP threads call GEMM ---- */
static void (*blas_set_threads)(int);
static int (*blas_get_threads)(void);
static int blas_looked_up;

static int nam_blas_park(void) {
  if (!blas_looked_up) {
    blas_set_threads = (void (*)(int))dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
    blas_get_threads = (int (*)(void))dlsym(RTLD_DEFAULT, "openblas_get_num_threads");
    blas_looked_up = 1;
  }
  if (!blas_set_threads || !blas_get_threads) return 0;
  int previous = blas_get_threads();
  if (previous != 1) blas_set_threads(1);
  return previous;
}

static void nam_blas_unpark(int previous) {
  if (previous > 1 && blas_set_threads) blas_set_threads(previous);
}

/* ---- workspace layout ---- */
static size_t nam_round16(int64_t n) { return ((size_t)n + 15) & ~(size_t)15; }

/* Images per backward pass: enough key blocks to keep every thread busy. */
static int64_t nam_batch_chunk(int64_t B, int64_t M, int threads) {
  if (B < 1) return 1;
  if (threads <= 1) return B;
  int64_t nk = (M + NAM_BWD_BK - 1) / NAM_BWD_BK;
  if (nk < 1) nk = 1;
  int64_t bc = (16 * (int64_t)threads + nk - 1) / nk;
  return bc < 1 ? 1 : bc > B ? B : bc;
}

/* Elements of one thread's scratch: the score tile (forward), or the score and dP tiles,
 * a dq copy (threads > 1) and k_j, v_j transposed (fast path) (backward). */
static size_t nam_thread_floats(int backward, int threads, int64_t bc, int64_t N, int64_t D, int64_t Cv,
                                int fast) {
  if (!backward) return nam_round16(NAM_FWD_BQ * NAM_FWD_LD + 2 * NAM_FWD_BQ);
  return nam_round16(2 * NAM_BWD_BQ * NAM_BWD_LD + (threads > 1 ? bc * N * D : 0) +
                     (fast ? (D + Cv) * NAM_BWD_BK : 0));
}

static int nam_fast; /* the AVX-512 micro-kernels of nam_gemm.inc do the float GEMMs */
static void nam_pick_isa(void);

size_t fv_nam_workspace_size(int64_t B, int64_t N, int64_t M, int64_t D, int64_t Cv, int threads, int backward,
                             size_t elem_size) {
  if (threads < 1) threads = 1;
  if (B <= 0 || N <= 0 || M <= 0) return 0;
  nam_pick_isa();
  const int fast = nam_fast && elem_size == sizeof(float);
  if (!backward)
    return elem_size * ((fast ? nam_round16(B * D * M) : 0) +
                        (size_t)threads * nam_thread_floats(0, threads, 0, 0, 0, 0, 0));
  int64_t bc = nam_batch_chunk(B, M, threads);
  return elem_size * (nam_round16(B * N) + (size_t)threads * nam_thread_floats(1, threads, bc, N, D, Cv, fast));
}

/* ---- the elementwise tile functions ---- */
/* Slack of the forward's softmax reference, in powers of 2 (float): terms stay below
 * 2^NAM_LAZY, and the output is rescaled only when a row's max grows past it. */
#define NAM_LAZY 8.0f
/* float: vector code for AVX-512, AVX2 and the baseline (multiply-adds may fuse) */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
#define NAM_TILE_VECTOR 1
#define TT float
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include "nam_gemm.inc"
#define TATTR __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512")))
#define TNAME(x) x##_f32_avx512
#define VL 16
#define TEXP2_VEC(t) nam_exp2_512((__m512)(t))
#include "nam_tile.inc"
#undef TEXP2_VEC
#undef TATTR
#undef TNAME
#undef VL
#define TATTR __attribute__((target("avx2,fma")))
#define TNAME(x) x##_f32_avx2
#define VL 8
#include "nam_tile.inc"
#undef TATTR
#undef TNAME
#undef VL
#define NAM_ISA_VARIANTS 1
#endif
#define TATTR
#define TNAME(x) x##_f32_base
#define VL 4
#include "nam_tile.inc"
#undef TATTR
#undef TNAME
#undef VL
#undef TT
#undef NAM_TILE_VECTOR
#pragma GCC pop_options

/* double: scalar, libm's exp2 */
#define TT double
#define TATTR
#define TNAME(x) x##_f64_
#include "nam_tile.inc"
#undef TATTR
#undef TNAME
#undef TT

typedef void (*tile_forward_fn)(float *, int64_t, int64_t, int64_t, float *, float *, float *, int64_t, int64_t,
                                int);
typedef void (*tile_backward_fn)(float *, float *, int64_t, int64_t, int64_t, const float *, const float *);
static tile_forward_fn tile_forward_f32;
static tile_backward_fn tile_backward_f32;

/* Picks the float tile functions and GEMMs for this CPU (once; kernels run from one
 * thread at a time). FOVEA_NAM_ISA=base or avx2 caps the instruction set and
 * FOVEA_NAM_GEMM=blas keeps OpenBLAS for the GEMMs (for tests and comparisons). */
static void nam_pick_isa(void) {
  if (tile_forward_f32) return;
  tile_forward_fn f = tile_forward_f32_base;
  tile_backward_fn b = tile_backward_f32_base;
#ifdef NAM_ISA_VARIANTS
  const char *cap = getenv("FOVEA_NAM_ISA"), *gemm = getenv("FOVEA_NAM_GEMM");
  int avx512 = !cap || strcmp(cap, "avx512") == 0, avx2 = avx512 || (cap && strcmp(cap, "avx2") == 0);
  if (avx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    f = tile_forward_f32_avx512;
    b = tile_backward_f32_avx512;
    nam_fast = !gemm || strcmp(gemm, "blas") != 0;
  } else if (avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    f = tile_forward_f32_avx2;
    b = tile_backward_f32_avx2;
  }
#endif
  tile_backward_f32 = b;
  tile_forward_f32 = f;
}

/* ---- the kernels, once per element type ---- */
/* stand-ins where the micro-kernels do not exist; never called (FAST_FLAG is 0 there) */
#define NAM_NO_FAST_GEMM(name, T)                                                                            \
  static void name(int64_t m, int64_t n, int64_t k, T alpha, const T *A, int64_t sr, int64_t sk, const T *B, \
                   int64_t ldb, int accumulate, T *C, int64_t ldc) {                                         \
    (void)m, (void)n, (void)k, (void)alpha, (void)A, (void)sr, (void)sk, (void)B, (void)ldb, (void)accumulate, \
        (void)C, (void)ldc;                                                                                  \
  }
NAM_NO_FAST_GEMM(nam_no_fast_gemm_f64, double)
/* FAST_SCORES(m, n, k, alpha, A, lda, Bt, ldb, C, ldc, row, rowscale, P, ldp): the fused
 * backward tiles (2^(scores - lse) and P (dP - D)); float on AVX-512 only */
#define NAM_NO_FAST_SCORES(name, T)                                                                      \
  static void name(int mode, int64_t m, int64_t n, int64_t k, T alpha, const T *A, int64_t lda, const T *B, \
                   int64_t ldb, T *C, int64_t ldc, const T *row, const T *P, int64_t ldp) {              \
    (void)mode, (void)m, (void)n, (void)k, (void)alpha, (void)A, (void)lda, (void)B, (void)ldb, (void)C,   \
        (void)ldc, (void)row, (void)P, (void)ldp;                                                        \
  }
NAM_NO_FAST_SCORES(nam_no_fast_scores_f64, double)

#define NN_DOUBLE 0
#include "nn_generic.h"
#define TILE_FORWARD tile_forward_f32
#define TILE_BACKWARD tile_backward_f32
#ifdef NAM_ISA_VARIANTS
#define FAST_FLAG nam_fast
#define FAST_GEMM nam_mk_gemm
#define FAST_SCORES nam_mk_scores
#else
NAM_NO_FAST_GEMM(nam_no_fast_gemm_f32, float)
NAM_NO_FAST_SCORES(nam_no_fast_scores_f32, float)
#define FAST_FLAG 0
#define FAST_GEMM nam_no_fast_gemm_f32
#define FAST_SCORES nam_no_fast_scores_f32
#endif
#include "nam.inc"
#undef TILE_FORWARD
#undef TILE_BACKWARD
#undef FAST_FLAG
#undef FAST_GEMM
#undef FAST_SCORES
#undef NN_DOUBLE
#define NN_DOUBLE 1
#include "nn_generic.h"
#define TILE_FORWARD tile_forward_f64_
#define TILE_BACKWARD tile_backward_f64_
#define FAST_FLAG 0
#define FAST_GEMM nam_no_fast_gemm_f64
#define FAST_SCORES nam_no_fast_scores_f64
#include "nam.inc"
#undef TILE_FORWARD
#undef TILE_BACKWARD
#undef FAST_FLAG
#undef FAST_GEMM
#undef FAST_SCORES

/* ---- the backend's entries for both attention ops (slots in core/internal.h) ---- */
static void *data_of(const fv_nn_call *c, int k) { return c->t[k] ? fv_tensor_data(c->t[k]) : NULL; }

/* Scratch as a uint8 tensor, so that fv_live_bytes and fv_peak_bytes count it. */
static int scratch(const char *op, size_t bytes, fv_tensor **out, void **data) {
  *out = NULL;
  *data = NULL;
  if (!bytes) return FV_OK;
  int64_t n = (int64_t)bytes;
  int status = fv_alloc_like_shape(out, 1, &n, FV_UINT8, FV_CPU);
  if (status) return fv_fail(status, "%s: cannot allocate %zu bytes of workspace", op, bytes);
  *data = fv_tensor_data(*out);
  return FV_OK;
}

static int attention_call(const fv_nn_call *c, int backward) {
  const int threads = omp_get_max_threads();
  const char *name = fv_op_name(c->op);
  fv_tensor *ws_t;
  void *ws;
  if (c->op == FV_OP_NAM) {
    /* fwd t: out, lse, q, k, v;  bwd t: dq, dk, dv, dout, q, k, v, out, lse;  d: scale */
    const fv_tensor *q = c->t[backward ? 4 : 2], *k = c->t[backward ? 5 : 3], *v = c->t[backward ? 6 : 4];
    const int64_t B = q->sizes[0], N = q->sizes[1], D = q->sizes[2], M = k->sizes[1], Cv = v->sizes[2];
    const int f64 = q->scalar_type == FV_FLOAT64;
    FV_TRY(scratch(name, fv_nam_workspace_size(B, N, M, D, Cv, threads, backward, f64 ? 8 : 4), &ws_t, &ws));
    if (!backward && f64)
      fv_nam_forward_f64(data_of(c, 0), data_of(c, 1), data_of(c, 2), data_of(c, 3), data_of(c, 4), ws, threads,
                         B, N, M, D, Cv, c->d[0]);
    else if (!backward)
      fv_nam_forward_f32(data_of(c, 0), data_of(c, 1), data_of(c, 2), data_of(c, 3), data_of(c, 4), ws, threads,
                         B, N, M, D, Cv, c->d[0]);
    else if (f64)
      fv_nam_backward_f64(data_of(c, 0), data_of(c, 1), data_of(c, 2), data_of(c, 3), data_of(c, 4),
                          data_of(c, 5), data_of(c, 6), data_of(c, 7), data_of(c, 8), ws, threads, B, N, M, D, Cv,
                          c->d[0]);
    else
      fv_nam_backward_f32(data_of(c, 0), data_of(c, 1), data_of(c, 2), data_of(c, 3), data_of(c, 4),
                          data_of(c, 5), data_of(c, 6), data_of(c, 7), data_of(c, 8), ws, threads, B, N, M, D, Cv,
                          c->d[0]);
  } else {
    /* fwd t: out, query, key, value;  bwd t: dquery, dkey, dvalue, dout, query, key, value */
    const fv_tensor *q = c->t[backward ? 4 : 1], *v = c->t[backward ? 6 : 3];
    const int64_t B = q->sizes[0], Cq = q->sizes[1], H = q->sizes[2], W = q->sizes[3], Cv = v->sizes[1];
    const int f64 = q->scalar_type == FV_FLOAT64;
    FV_TRY(scratch(name, fv_criss_cross_workspace_size(B, H, W, threads, backward, f64 ? 8 : 4), &ws_t, &ws));
    if (!backward && f64)
      fv_criss_cross_forward_f64(data_of(c, 0), data_of(c, 1), data_of(c, 2), data_of(c, 3), ws, threads, B, Cq,
                                 Cv, H, W);
    else if (!backward)
      fv_criss_cross_forward_f32(data_of(c, 0), data_of(c, 1), data_of(c, 2), data_of(c, 3), ws, threads, B, Cq,
                                 Cv, H, W);
    else if (f64)
      fv_criss_cross_backward_f64(data_of(c, 0), data_of(c, 1), data_of(c, 2), data_of(c, 3), data_of(c, 4),
                                  data_of(c, 5), data_of(c, 6), ws, threads, B, Cq, Cv, H, W);
    else
      fv_criss_cross_backward_f32(data_of(c, 0), data_of(c, 1), data_of(c, 2), data_of(c, 3), data_of(c, 4),
                                  data_of(c, 5), data_of(c, 6), ws, threads, B, Cq, Cv, H, W);
  }
  fv_tensor_release(ws_t);
  return FV_OK;
}

int fv_cpu_attention_forward(const fv_nn_call *c, int *handled) {
  *handled = c->op == FV_OP_NAM || c->op == FV_OP_CRISS_CROSS;
  return *handled ? attention_call(c, 0) : FV_OK;
}

int fv_cpu_attention_backward(const fv_nn_call *c, int *handled) {
  *handled = c->op == FV_OP_NAM || c->op == FV_OP_CRISS_CROSS;
  return *handled ? attention_call(c, 1) : FV_OK;
}
