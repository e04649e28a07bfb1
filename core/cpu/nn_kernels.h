/* nn_kernels.h: raw CPU compute kernels for the neural-network ops (internal header).
 *
 * Pure pointer functions in the llm.c style, PyTorch semantics:
 *   x_forward(out, ..., inp, ..., sizes, options)   overwrites out
 *   x_backward(dinp, dweight, dbias, dout, ..., sizes, options)
 * Backward ACCUMULATES (+=) into the gradients; zeroing them is the caller's job.
 * Every buffer is contiguous (NCHW for images), its shape given by the comment next to
 * it. Every kernel exists for float (_f32) and double (_f64) with the same arguments.
 * Arguments are not checked: the caller (core/ops) validates shapes and options and
 * allocates outputs. Parallelism: OpenMP inside the kernels, OpenBLAS for GEMMs; call
 * the kernels from one thread at a time.
 *
 * Threads: libgomp's default wait policy spins each OpenMP worker for milliseconds after
 * a parallel region, and OpenBLAS's pthread workers spin after each GEMM. On 2 cores they
 * take each other's core: measured here, a GEMM right after an OpenMP region ran 2-6x
 * slower and conv2d forward+backward took about 2x as long. Run with
 * OMP_WAIT_POLICY=PASSIVE in the environment before libgomp loads (for LuaJIT: setenv
 * before ffi.load of the library), or link OpenBLAS's OpenMP build so both share one pool.
 *
 * Files: nn_conv2d.c, nn_batch_norm.c, nn_pool.c, nn_upsample.c, nn_softmax.c,
 * nn_loss.c, nn_shuffle.c; each includes its nn_*.inc body once per type through
 * nn_generic.h. Tests: spec/c/test_nn_kernels.c (its header comment has the build line).
 *
 * Not here: dropout (mask multiply), global average pooling (adaptive_avg_pool2d to
 * 1x1), ReLU and the other elementwise ops (the backend table). */
#ifndef FV_NN_KERNELS_H
#define FV_NN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Reductions of the loss kernels (PyTorch's 'none', 'mean', 'sum'). */
enum { FV_NN_REDUCTION_NONE = 0, FV_NN_REDUCTION_MEAN = 1, FV_NN_REDUCTION_SUM = 2 };

/* ---- shape helpers ---- */
/* conv2d output size: floor((in + 2*pad - dil*(k - 1) - 1) / stride) + 1. */
static inline int64_t fv_conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad,
                                       int64_t dil) {
  return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}
/* Pooling output size, PyTorch's pooling_output_shape: with ceil_mode the last window
 * must start inside the input or its left padding. */
static inline int64_t fv_pool_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad,
                                       int64_t dil, int ceil_mode) {
  int64_t num = in + 2 * pad - dil * (k - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  int64_t q = num / stride;
  if (num % stride != 0 && num < 0) q--; /* round towards -infinity */
  int64_t out = q + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) out--;
  return out;
}
/* Adaptive pooling bin i of out over in: [floor(i*in/out), ceil((i+1)*in/out)). */
static inline int64_t fv_adaptive_start(int64_t i, int64_t in, int64_t out) {
  return (i * in) / out;
}
static inline int64_t fv_adaptive_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

/* Bytes of scratch that fv_conv2d_forward/backward need for these sizes; elem_size is
 * sizeof(float) or sizeof(double). 0 for depthwise and 1x1/stride 1/padding 0 convs. */
size_t fv_conv2d_workspace_size(int64_t B, int64_t C_in, int64_t H, int64_t W, int64_t C_out,
                                int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                                int64_t pw, int64_t dh, int64_t dw, int64_t groups,
                                size_t elem_size);

/* ======================= float (_f32) ======================= */

/* ---- conv2d (nn_conv2d.c) ----
 * PyTorch's conv2d: stride, padding and dilation per axis, groups (C_in and C_out
 * divisible by groups), optional bias. OH = fv_conv_out_size(H, KH, sh, ph, dh), OW alike.
 * General case: im2col + GEMM per group, several images per GEMM when OH*OW is small.
 * Depthwise (groups == C_in > 1, any C_out multiple of groups): direct loops, no workspace.
 * 1x1 stride 1 padding 0: GEMM straight on the input, no workspace.
 * workspace: at least fv_conv2d_workspace_size(...) bytes aligned for the element type
 * (NULL when that is 0); the same size serves forward and backward. Not kept between calls.
 * Backward accumulates (+=) into each gradient that is not NULL and skips the NULL ones. */
void fv_conv2d_forward_f32(float *out,           /* (B, C_out, OH, OW), overwritten */
                           const float *inp,     /* (B, C_in, H, W) */
                           const float *weight,  /* (C_out, C_in/groups, KH, KW) */
                           const float *bias,    /* (C_out) or NULL */
                           void *workspace,
                           int64_t B, int64_t C_in, int64_t H, int64_t W, int64_t C_out,
                           int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                           int64_t dh, int64_t dw, int64_t groups);
void fv_conv2d_backward_f32(float *dinp,          /* (B, C_in, H, W) or NULL */
                            float *dweight,       /* (C_out, C_in/groups, KH, KW) or NULL */
                            float *dbias,         /* (C_out) or NULL */
                            const float *dout,    /* (B, C_out, OH, OW) */
                            const float *inp,     /* (B, C_in, H, W) */
                            const float *weight,  /* (C_out, C_in/groups, KH, KW) */
                            void *workspace,
                            int64_t B, int64_t C_in, int64_t H, int64_t W, int64_t C_out,
                            int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                            int64_t dh, int64_t dw, int64_t groups);

/* ---- batch_norm (nn_batch_norm.c) ----
 * Per channel over (B, S), S = H*W (or L for 1-d, 1 for (B, C)). eps and momentum as in
 * PyTorch (1e-5, 0.1). Training: normalises with the batch mean and biased variance,
 * saves mean and invstd = 1/sqrt(var + eps), and when running stats are given updates
 * running = (1 - momentum)*running + momentum*batch with the UNBIASED variance
 * (B*S == 1 makes that NaN: the caller rejects it, as PyTorch does). Eval: normalises
 * with the running stats (required then); save_* are not touched.
 * Forward may run in place (out == inp); backward may not (dinp != dout). */
void fv_batch_norm_forward_f32(float *out,           /* (B, C, S), overwritten */
                               float *save_mean,     /* (C), training; may be NULL */
                               float *save_invstd,   /* (C), training; may be NULL */
                               float *running_mean,  /* (C) or NULL */
                               float *running_var,   /* (C) or NULL */
                               const float *inp,     /* (B, C, S) */
                               const float *weight,  /* (C) or NULL (= 1) */
                               const float *bias,    /* (C) or NULL (= 0) */
                               int64_t B, int64_t C, int64_t S,
                               int training, double momentum, double eps);
/* Training uses save_mean/save_invstd from the forward; eval uses running_mean/var
 * and eps (the mean and variance are then constants). Accumulates into non-NULL grads. */
void fv_batch_norm_backward_f32(float *dinp,               /* (B, C, S) or NULL */
                                float *dweight,            /* (C) or NULL */
                                float *dbias,              /* (C) or NULL */
                                const float *dout,         /* (B, C, S) */
                                const float *inp,          /* (B, C, S) */
                                const float *weight,       /* (C) or NULL (= 1) */
                                const float *running_mean, /* (C), eval */
                                const float *running_var,  /* (C), eval */
                                const float *save_mean,    /* (C), training */
                                const float *save_invstd,  /* (C), training */
                                int64_t B, int64_t C, int64_t S, int training, double eps);

/* ---- pooling (nn_pool.c) ----
 * Output sizes are the caller's: fv_pool_out_size(...) (ceil_mode works through it) or
 * the requested adaptive size. Indices are flat positions ih*W + iw inside each (H, W)
 * plane, as PyTorch stores them; a NaN in a window wins, as in PyTorch. */
void fv_max_pool2d_forward_f32(float *out,         /* (B, C, OH, OW) */
                               int64_t *indices,   /* (B, C, OH, OW) */
                               const float *inp,   /* (B, C, H, W) */
                               int64_t B, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                               int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                               int64_t dh, int64_t dw);
/* Also the backward of adaptive_max_pool2d: routes dout to the stored indices. */
void fv_max_pool2d_backward_f32(float *dinp,             /* (B, C, H, W), accumulated */
                                const float *dout,       /* (B, C, OH, OW) */
                                const int64_t *indices,  /* (B, C, OH, OW) */
                                int64_t B, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW);
/* count_include_pad: divide by the window clipped to the padded input (PyTorch's
 * default, 1) or by the window clipped to the input (0). */
void fv_avg_pool2d_forward_f32(float *out,        /* (B, C, OH, OW) */
                               const float *inp,  /* (B, C, H, W) */
                               int64_t B, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                               int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                               int count_include_pad);
void fv_avg_pool2d_backward_f32(float *dinp,        /* (B, C, H, W), accumulated */
                                const float *dout,  /* (B, C, OH, OW) */
                                int64_t B, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                int count_include_pad);
/* Bins: [fv_adaptive_start(i, in, out), fv_adaptive_end(i, in, out)) per axis.
 * Global average pooling is the 1x1 case. */
void fv_adaptive_avg_pool2d_forward_f32(float *out,        /* (B, C, OH, OW) */
                                        const float *inp,  /* (B, C, H, W) */
                                        int64_t B, int64_t C, int64_t H, int64_t W,
                                        int64_t OH, int64_t OW);
void fv_adaptive_avg_pool2d_backward_f32(float *dinp,        /* (B, C, H, W), accumulated */
                                         const float *dout,  /* (B, C, OH, OW) */
                                         int64_t B, int64_t C, int64_t H, int64_t W,
                                         int64_t OH, int64_t OW);
void fv_adaptive_max_pool2d_forward_f32(float *out,        /* (B, C, OH, OW) */
                                        int64_t *indices,  /* (B, C, OH, OW) */
                                        const float *inp,  /* (B, C, H, W) */
                                        int64_t B, int64_t C, int64_t H, int64_t W,
                                        int64_t OH, int64_t OW);
void fv_adaptive_max_pool2d_backward_f32(float *dinp,             /* (B, C, H, W), accumulated */
                                         const float *dout,       /* (B, C, OH, OW) */
                                         const int64_t *indices,  /* (B, C, OH, OW) */
                                         int64_t B, int64_t C, int64_t H, int64_t W,
                                         int64_t OH, int64_t OW);

/* ---- bilinear interpolation (nn_upsample.c) ----
 * F.interpolate(mode='bilinear') to (OH, OW), up or down. align_corners 0: source
 * = (dst + 0.5)*scale - 0.5 clamped at 0, scale = 1/scale_h when scale_h > 0 (the
 * user's scale_factor, as PyTorch passes it) else H/OH. align_corners 1: source =
 * dst*(H-1)/(OH-1) (0 when OH == 1); scale_h is ignored. Same for w. */
void fv_upsample_bilinear2d_forward_f32(float *out,        /* (B, C, OH, OW) */
                                        const float *inp,  /* (B, C, H, W) */
                                        int64_t B, int64_t C, int64_t H, int64_t W,
                                        int64_t OH, int64_t OW,
                                        int align_corners, double scale_h, double scale_w);
void fv_upsample_bilinear2d_backward_f32(float *dinp,        /* (B, C, H, W), accumulated */
                                         const float *dout,  /* (B, C, OH, OW) */
                                         int64_t B, int64_t C, int64_t H, int64_t W,
                                         int64_t OH, int64_t OW,
                                         int align_corners, double scale_h, double scale_w);

/* ---- softmax, log_softmax (nn_softmax.c) ----
 * Over the last dim of a contiguous (rows, n) matrix; max-subtracted. Forward may run
 * in place (out == inp). Backward takes the forward's output, not its input. */
void fv_softmax_forward_f32(float *out,        /* (rows, n) */
                            const float *inp,  /* (rows, n) */
                            int64_t rows, int64_t n);
void fv_softmax_backward_f32(float *dinp,        /* (rows, n), accumulated */
                             const float *dout,  /* (rows, n) */
                             const float *out,   /* (rows, n) forward output */
                             int64_t rows, int64_t n);
void fv_log_softmax_forward_f32(float *out,        /* (rows, n) */
                                const float *inp,  /* (rows, n) */
                                int64_t rows, int64_t n);
void fv_log_softmax_backward_f32(float *dinp,        /* (rows, n), accumulated */
                                 const float *dout,  /* (rows, n) */
                                 const float *out,   /* (rows, n) forward output */
                                 int64_t rows, int64_t n);

/* ---- cross_entropy (nn_loss.c) ----
 * F.cross_entropy(logits, target, weight, ignore_index, reduction) for (B, K) logits:
 * loss_b = -weight[t_b] * log_softmax(logits_b)[t_b], 0 for t_b == ignore_index.
 * MEAN divides the sum by the sum of weight[t_b] over the rows not ignored (NaN when
 * all are ignored, as PyTorch); SUM does not divide; NONE writes the B losses.
 * Returns 0, or -1 when some target is outside [0, K) and is not ignore_index; nothing
 * is written then (the caller raises the error). */
int fv_cross_entropy_forward_f32(float *loss,            /* (1), or (B) for NONE */
                                 float *lse,             /* (B) log-sum-exp per row for backward, or NULL */
                                 const float *logits,    /* (B, K) */
                                 const int64_t *target,  /* (B) class indices */
                                 const float *weight,    /* (K) class weights or NULL */
                                 int64_t B, int64_t K, int reduction, int64_t ignore_index);
/* lse: the forward's, or NULL to recompute it. Same status rule as the forward. */
int fv_cross_entropy_backward_f32(float *dlogits,         /* (B, K), accumulated */
                                  const float *dloss,     /* (1), or (B) for NONE */
                                  const float *logits,    /* (B, K) */
                                  const float *lse,       /* (B) or NULL */
                                  const int64_t *target,  /* (B) */
                                  const float *weight,    /* (K) or NULL */
                                  int64_t B, int64_t K, int reduction, int64_t ignore_index);

/* ---- channel_shuffle (nn_shuffle.c) ----
 * (B, C, S) viewed as (B, groups, C/groups, S), the two channel dims swapped:
 * out channel j*groups + i = inp channel i*(C/groups) + j. The backward is the same
 * shuffle with C/groups groups, accumulated. */
void fv_channel_shuffle_forward_f32(float *out,        /* (B, C, S) */
                                    const float *inp,  /* (B, C, S) */
                                    int64_t B, int64_t C, int64_t S, int64_t groups);
void fv_channel_shuffle_backward_f32(float *dinp,        /* (B, C, S), accumulated */
                                     const float *dout,  /* (B, C, S) */
                                     int64_t B, int64_t C, int64_t S, int64_t groups);

/* ======================= double (_f64) =======================
 * The same kernels, arguments and shapes as the float ones above. */

void fv_conv2d_forward_f64(double *out,          /* (B, C_out, OH, OW), overwritten */
                           const double *inp,    /* (B, C_in, H, W) */
                           const double *weight, /* (C_out, C_in/groups, KH, KW) */
                           const double *bias,   /* (C_out) or NULL */
                           void *workspace,
                           int64_t B, int64_t C_in, int64_t H, int64_t W, int64_t C_out,
                           int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                           int64_t dh, int64_t dw, int64_t groups);
void fv_conv2d_backward_f64(double *dinp,         /* (B, C_in, H, W) or NULL */
                            double *dweight,      /* (C_out, C_in/groups, KH, KW) or NULL */
                            double *dbias,        /* (C_out) or NULL */
                            const double *dout,   /* (B, C_out, OH, OW) */
                            const double *inp,    /* (B, C_in, H, W) */
                            const double *weight, /* (C_out, C_in/groups, KH, KW) */
                            void *workspace,
                            int64_t B, int64_t C_in, int64_t H, int64_t W, int64_t C_out,
                            int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                            int64_t dh, int64_t dw, int64_t groups);

void fv_batch_norm_forward_f64(double *out,          /* (B, C, S), overwritten */
                               double *save_mean,    /* (C), training; may be NULL */
                               double *save_invstd,  /* (C), training; may be NULL */
                               double *running_mean, /* (C) or NULL */
                               double *running_var,  /* (C) or NULL */
                               const double *inp,    /* (B, C, S) */
                               const double *weight, /* (C) or NULL (= 1) */
                               const double *bias,   /* (C) or NULL (= 0) */
                               int64_t B, int64_t C, int64_t S,
                               int training, double momentum, double eps);
void fv_batch_norm_backward_f64(double *dinp,              /* (B, C, S) or NULL */
                                double *dweight,           /* (C) or NULL */
                                double *dbias,             /* (C) or NULL */
                                const double *dout,        /* (B, C, S) */
                                const double *inp,         /* (B, C, S) */
                                const double *weight,      /* (C) or NULL (= 1) */
                                const double *running_mean, /* (C), eval */
                                const double *running_var, /* (C), eval */
                                const double *save_mean,   /* (C), training */
                                const double *save_invstd, /* (C), training */
                                int64_t B, int64_t C, int64_t S, int training, double eps);

void fv_max_pool2d_forward_f64(double *out,        /* (B, C, OH, OW) */
                               int64_t *indices,   /* (B, C, OH, OW) */
                               const double *inp,  /* (B, C, H, W) */
                               int64_t B, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                               int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                               int64_t dh, int64_t dw);
void fv_max_pool2d_backward_f64(double *dinp,            /* (B, C, H, W), accumulated */
                                const double *dout,      /* (B, C, OH, OW) */
                                const int64_t *indices,  /* (B, C, OH, OW) */
                                int64_t B, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW);
void fv_avg_pool2d_forward_f64(double *out,       /* (B, C, OH, OW) */
                               const double *inp, /* (B, C, H, W) */
                               int64_t B, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                               int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                               int count_include_pad);
void fv_avg_pool2d_backward_f64(double *dinp,       /* (B, C, H, W), accumulated */
                                const double *dout, /* (B, C, OH, OW) */
                                int64_t B, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                int count_include_pad);
void fv_adaptive_avg_pool2d_forward_f64(double *out,       /* (B, C, OH, OW) */
                                        const double *inp, /* (B, C, H, W) */
                                        int64_t B, int64_t C, int64_t H, int64_t W,
                                        int64_t OH, int64_t OW);
void fv_adaptive_avg_pool2d_backward_f64(double *dinp,       /* (B, C, H, W), accumulated */
                                         const double *dout, /* (B, C, OH, OW) */
                                         int64_t B, int64_t C, int64_t H, int64_t W,
                                         int64_t OH, int64_t OW);
void fv_adaptive_max_pool2d_forward_f64(double *out,       /* (B, C, OH, OW) */
                                        int64_t *indices,  /* (B, C, OH, OW) */
                                        const double *inp, /* (B, C, H, W) */
                                        int64_t B, int64_t C, int64_t H, int64_t W,
                                        int64_t OH, int64_t OW);
void fv_adaptive_max_pool2d_backward_f64(double *dinp,            /* (B, C, H, W), accumulated */
                                         const double *dout,      /* (B, C, OH, OW) */
                                         const int64_t *indices,  /* (B, C, OH, OW) */
                                         int64_t B, int64_t C, int64_t H, int64_t W,
                                         int64_t OH, int64_t OW);

void fv_upsample_bilinear2d_forward_f64(double *out,       /* (B, C, OH, OW) */
                                        const double *inp, /* (B, C, H, W) */
                                        int64_t B, int64_t C, int64_t H, int64_t W,
                                        int64_t OH, int64_t OW,
                                        int align_corners, double scale_h, double scale_w);
void fv_upsample_bilinear2d_backward_f64(double *dinp,       /* (B, C, H, W), accumulated */
                                         const double *dout, /* (B, C, OH, OW) */
                                         int64_t B, int64_t C, int64_t H, int64_t W,
                                         int64_t OH, int64_t OW,
                                         int align_corners, double scale_h, double scale_w);

void fv_softmax_forward_f64(double *out,       /* (rows, n) */
                            const double *inp, /* (rows, n) */
                            int64_t rows, int64_t n);
void fv_softmax_backward_f64(double *dinp,       /* (rows, n), accumulated */
                             const double *dout, /* (rows, n) */
                             const double *out,  /* (rows, n) forward output */
                             int64_t rows, int64_t n);
void fv_log_softmax_forward_f64(double *out,       /* (rows, n) */
                                const double *inp, /* (rows, n) */
                                int64_t rows, int64_t n);
void fv_log_softmax_backward_f64(double *dinp,       /* (rows, n), accumulated */
                                 const double *dout, /* (rows, n) */
                                 const double *out,  /* (rows, n) forward output */
                                 int64_t rows, int64_t n);

int fv_cross_entropy_forward_f64(double *loss,           /* (1), or (B) for NONE */
                                 double *lse,            /* (B) log-sum-exp per row for backward, or NULL */
                                 const double *logits,   /* (B, K) */
                                 const int64_t *target,  /* (B) class indices */
                                 const double *weight,   /* (K) class weights or NULL */
                                 int64_t B, int64_t K, int reduction, int64_t ignore_index);
int fv_cross_entropy_backward_f64(double *dlogits,        /* (B, K), accumulated */
                                  const double *dloss,    /* (1), or (B) for NONE */
                                  const double *logits,   /* (B, K) */
                                  const double *lse,      /* (B) or NULL */
                                  const int64_t *target,  /* (B) */
                                  const double *weight,   /* (K) or NULL */
                                  int64_t B, int64_t K, int reduction, int64_t ignore_index);

void fv_channel_shuffle_forward_f64(double *out,       /* (B, C, S) */
                                    const double *inp, /* (B, C, S) */
                                    int64_t B, int64_t C, int64_t S, int64_t groups);
void fv_channel_shuffle_backward_f64(double *dinp,       /* (B, C, S), accumulated */
                                     const double *dout, /* (B, C, S) */
                                     int64_t B, int64_t C, int64_t S, int64_t groups);

#endif
