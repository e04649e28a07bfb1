/* attention.h: raw CPU kernels of the attention ops (internal header), in the style of
 * nn_kernels.h: pure pointer functions, contiguous row-major buffers whose shapes are in
 * the comments, float (_f32) and double (_f64) with the same arguments, no checks (the
 * front ends in core/nn/nam.c and core/nn/criss_cross.c validate). Backward ACCUMULATES
 * (+=) into every gradient that is not NULL and skips the NULL ones. Call the kernels
 * from one thread at a time: they run OpenMP teams of `threads` threads and, inside
 * them, single-threaded BLAS (OpenBLAS's own threads are parked for the duration).
 *
 * NAM attention (nam.c, body nam.inc), flash-attention style:
 *   out_i = sum_j softmax_j(scale * q_i . k_j) v_j,  lse_i = log sum_j exp(scale * q_i . k_j)
 * with q (B, N, D), k (B, M, D), v (B, M, Cv). The N x M score matrix is never stored:
 * queries and keys go in blocks (nam.c); each tile of scores is one GEMM into a
 * per-thread buffer, folded into the output with an online (running max and sum)
 * softmax. Backward recomputes the tiles from lse. Scratch is the caller's:
 * fv_nam_workspace_size bytes, O(B * N + B * D * M + threads * (tiles + N * D)).
 *
 * Criss-cross attention (criss_cross.c), CCNet: each position (h, w) attends to its
 * column (h', w), h' != h, and its row (h, w'), all w' (the self position once), one
 * softmax over the H + W - 1 energies q(h, w) . k(position). Direct loops, OpenMP over
 * (batch, row). Backward scratch: fv_criss_cross_workspace_size bytes. */
#ifndef FV_ATTENTION_H
#define FV_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "../internal.h"

/* Bytes of scratch for one forward or backward call with `threads` OpenMP threads;
 * elem_size is sizeof(float) or sizeof(double); backward is 0 or 1. */
size_t fv_nam_workspace_size(int64_t B, int64_t N, int64_t M, int64_t D, int64_t Cv, int threads,
                             int backward, size_t elem_size);

void fv_nam_forward_f32(float *out,        /* (B, N, Cv), overwritten */
                        float *lse,        /* (B, N), overwritten */
                        const float *q,    /* (B, N, D) */
                        const float *k,    /* (B, M, D) */
                        const float *v,    /* (B, M, Cv) */
                        void *workspace, int threads,
                        int64_t B, int64_t N, int64_t M, int64_t D, int64_t Cv, double scale);
void fv_nam_backward_f32(float *dq,          /* (B, N, D) or NULL */
                         float *dk,          /* (B, M, D) or NULL */
                         float *dv,          /* (B, M, Cv) or NULL */
                         const float *dout,  /* (B, N, Cv) */
                         const float *q, const float *k, const float *v,
                         const float *out,   /* the forward's out */
                         const float *lse,   /* the forward's lse */
                         void *workspace, int threads,
                         int64_t B, int64_t N, int64_t M, int64_t D, int64_t Cv, double scale);
void fv_nam_forward_f64(double *out, double *lse, const double *q, const double *k, const double *v,
                        void *workspace, int threads, int64_t B, int64_t N, int64_t M, int64_t D, int64_t Cv,
                        double scale);
void fv_nam_backward_f64(double *dq, double *dk, double *dv, const double *dout, const double *q,
                         const double *k, const double *v, const double *out, const double *lse,
                         void *workspace, int threads, int64_t B, int64_t N, int64_t M, int64_t D, int64_t Cv,
                         double scale);

/* Bytes of scratch for one call with `threads` OpenMP threads; backward is 0 or 1. The
 * backward keeps the column attention and its gradient, 2 * B * H * H * W elements. */
size_t fv_criss_cross_workspace_size(int64_t B, int64_t H, int64_t W, int threads, int backward,
                                     size_t elem_size);
void fv_criss_cross_forward_f32(float *out,          /* (B, Cv, H, W), overwritten */
                                const float *query,  /* (B, Cq, H, W) */
                                const float *key,    /* (B, Cq, H, W) */
                                const float *value,  /* (B, Cv, H, W) */
                                void *workspace, int threads,
                                int64_t B, int64_t Cq, int64_t Cv, int64_t H, int64_t W);
void fv_criss_cross_backward_f32(float *dquery,      /* (B, Cq, H, W) or NULL */
                                 float *dkey,        /* (B, Cq, H, W) or NULL */
                                 float *dvalue,      /* (B, Cv, H, W) or NULL */
                                 const float *dout,  /* (B, Cv, H, W) */
                                 const float *query, const float *key, const float *value,
                                 void *workspace, int threads,
                                 int64_t B, int64_t Cq, int64_t Cv, int64_t H, int64_t W);
void fv_criss_cross_forward_f64(double *out, const double *query, const double *key, const double *value,
                                void *workspace, int threads, int64_t B, int64_t Cq, int64_t Cv, int64_t H,
                                int64_t W);
void fv_criss_cross_backward_f64(double *dquery, double *dkey, double *dvalue, const double *dout,
                                 const double *query, const double *key, const double *value, void *workspace,
                                 int threads, int64_t B, int64_t Cq, int64_t Cv, int64_t H, int64_t W);

/* The backend's entries for FV_OP_NAM and FV_OP_CRISS_CROSS (slots in core/internal.h):
 * 1 in *handled when call->op is one of them, with the kernel's status returned. */
int fv_cpu_attention_forward(const fv_nn_call *call, int *handled);
int fv_cpu_attention_backward(const fv_nn_call *call, int *handled);

#endif
