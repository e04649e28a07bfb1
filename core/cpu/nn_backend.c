/* cpu/nn_backend.c: the CPU backend's neural-network entries: unpacks an fv_nn_call
 * (slots in core/internal.h) into the raw kernels of nn_kernels.h for float32 or
 * float64, and keeps the convolution workspace between calls. float32 conv2d goes to
 * oneDNN (cpu/conv_dnnl.c) when the build has it; float64 and the shapes it rejects stay
 * on im2col + GEMM (cpu/nn_conv2d.inc). */
#include <stdlib.h>

#include "attention.h"
#include "conv_dnnl.h"
#include "cpu.h"
#include "nn_kernels.h"

/* The data pointer of slot k, or NULL when the slot is empty. */
static void *ptr(const fv_nn_call *c, int k) { return c->t[k] ? fv_tensor_data(c->t[k]) : NULL; }

/* Scratch for im2col, grown as needed and kept (kernels run from one thread at a time). */
static void *workspace;
static size_t workspace_bytes;

static int conv_workspace(const fv_nn_call *c, const fv_tensor *inp, const fv_tensor *weight, void **ws) {
  size_t esize = (size_t)fv_dtype_size(inp->scalar_type);
  size_t need = fv_conv2d_workspace_size(inp->sizes[0], inp->sizes[1], inp->sizes[2], inp->sizes[3],
                                         weight->sizes[0], weight->sizes[2], weight->sizes[3], c->i[0], c->i[1],
                                         c->i[2], c->i[3], c->i[4], c->i[5], c->i[6], esize);
  if (need > workspace_bytes) {
    free(workspace);
    workspace = aligned_alloc(64, (need + 63) & ~(size_t)63);
    workspace_bytes = workspace ? need : 0;
    if (!workspace) return fv_fail(FV_ERR_MEMORY, "conv2d: cannot allocate %zu bytes of workspace", need);
  }
  *ws = need ? workspace : NULL;
  return FV_OK;
}

/* B, C and the product of the remaining sizes of t */
static void bcs(const fv_tensor *t, int64_t *B, int64_t *C, int64_t *S) {
  *B = t->sizes[0];
  *C = t->ndim > 1 ? t->sizes[1] : 1;
  *S = 1;
  for (int d = 2; d < t->ndim; d++) *S *= t->sizes[d];
}

/* Target classes counted from 0: a shifted copy when they count from index_base. */
static int zero_based_target(const fv_tensor *target, int64_t base, int64_t **out, int64_t **owned) {
  int64_t n = fv_tensor_numel(target);
  const int64_t *t = fv_tensor_data(target);
  *owned = NULL;
  if (base == 0) {
    *out = (int64_t *)t;
    return FV_OK;
  }
  *owned = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
  if (!*owned) return fv_fail(FV_ERR_MEMORY, "cross_entropy: out of memory");
  for (int64_t k = 0; k < n; k++) (*owned)[k] = t[k] - base;
  *out = *owned;
  return FV_OK;
}

/* One body per element type T with kernel suffix S. */
#define NN_DISPATCH(T, S)                                                                                    \
  static int nn_forward_##S(const fv_nn_call *c) {                                                           \
    const int64_t *i = c->i;                                                                                 \
    switch (c->op) {                                                                                         \
      case FV_OP_CONV2D: {                                                                                   \
        const fv_tensor *inp = c->t[1], *w = c->t[2];                                                        \
        void *ws;                                                                                            \
        FV_TRY(conv_workspace(c, inp, w, &ws));                                                              \
        fv_conv2d_forward_##S(ptr(c, 0), ptr(c, 1), ptr(c, 2), ptr(c, 3), ws, inp->sizes[0], inp->sizes[1],  \
                              inp->sizes[2], inp->sizes[3], w->sizes[0], w->sizes[2], w->sizes[3], i[0], i[1], \
                              i[2], i[3], i[4], i[5], i[6]);                                                 \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_BATCH_NORM: {                                                                               \
        int64_t B, C, Sz;                                                                                    \
        bcs(c->t[5], &B, &C, &Sz);                                                                           \
        fv_batch_norm_forward_##S(ptr(c, 0), ptr(c, 1), ptr(c, 2), ptr(c, 3), ptr(c, 4), ptr(c, 5),         \
                                  ptr(c, 6), ptr(c, 7), B, C, Sz, (int)i[0], c->d[0], c->d[1]);              \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_MAX_POOL2D: {                                                                               \
        const fv_tensor *in = c->t[2], *o = c->t[0];                                                         \
        fv_max_pool2d_forward_##S(ptr(c, 0), ptr(c, 1), ptr(c, 2), in->sizes[0], in->sizes[1], in->sizes[2], \
                                  in->sizes[3], o->sizes[2], o->sizes[3], i[0], i[1], i[2], i[3], i[4], i[5], \
                                  i[6], i[7]);                                                               \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_AVG_POOL2D: {                                                                               \
        const fv_tensor *in = c->t[1], *o = c->t[0];                                                         \
        fv_avg_pool2d_forward_##S(ptr(c, 0), ptr(c, 1), in->sizes[0], in->sizes[1], in->sizes[2],            \
                                  in->sizes[3], o->sizes[2], o->sizes[3], i[0], i[1], i[2], i[3], i[4], i[5], \
                                  (int)i[6]);                                                                \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_ADAPTIVE_AVG_POOL2D: {                                                                      \
        const fv_tensor *in = c->t[1], *o = c->t[0];                                                         \
        fv_adaptive_avg_pool2d_forward_##S(ptr(c, 0), ptr(c, 1), in->sizes[0], in->sizes[1], in->sizes[2],   \
                                           in->sizes[3], o->sizes[2], o->sizes[3]);                          \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_ADAPTIVE_MAX_POOL2D: {                                                                      \
        const fv_tensor *in = c->t[2], *o = c->t[0];                                                         \
        fv_adaptive_max_pool2d_forward_##S(ptr(c, 0), ptr(c, 1), ptr(c, 2), in->sizes[0], in->sizes[1],      \
                                           in->sizes[2], in->sizes[3], o->sizes[2], o->sizes[3]);            \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_UPSAMPLE_BILINEAR: {                                                                        \
        const fv_tensor *in = c->t[1], *o = c->t[0];                                                         \
        fv_upsample_bilinear2d_forward_##S(ptr(c, 0), ptr(c, 1), in->sizes[0], in->sizes[1], in->sizes[2],   \
                                           in->sizes[3], o->sizes[2], o->sizes[3], (int)i[0], 0.0, 0.0);     \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_SOFTMAX:                                                                                    \
      case FV_OP_LOG_SOFTMAX: {                                                                              \
        const fv_tensor *in = c->t[1];                                                                       \
        int64_t n = in->sizes[in->ndim - 1], rows = n ? fv_tensor_numel(in) / n : 0;                         \
        if (c->op == FV_OP_SOFTMAX) fv_softmax_forward_##S(ptr(c, 0), ptr(c, 1), rows, n);                   \
        else fv_log_softmax_forward_##S(ptr(c, 0), ptr(c, 1), rows, n);                                      \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_CROSS_ENTROPY: {                                                                            \
        const fv_tensor *logits = c->t[2];                                                                   \
        int64_t *target, *owned;                                                                             \
        FV_TRY(zero_based_target(c->t[3], i[1], &target, &owned));                                           \
        int bad = fv_cross_entropy_forward_##S(ptr(c, 0), ptr(c, 1), ptr(c, 2), target, ptr(c, 4),           \
                                               logits->sizes[0], logits->sizes[1], (int)i[0], INT64_MIN);    \
        free(owned);                                                                                         \
        if (bad)                                                                                             \
          return fv_fail(FV_ERR_INDEX, "cross_entropy: a target is outside the classes %lld..%lld",          \
                         (long long)i[1], (long long)(i[1] + logits->sizes[1] - 1));                         \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_CHANNEL_SHUFFLE: {                                                                          \
        int64_t B, C, Sz;                                                                                    \
        bcs(c->t[1], &B, &C, &Sz);                                                                           \
        fv_channel_shuffle_forward_##S(ptr(c, 0), ptr(c, 1), B, C, Sz, i[0]);                                \
        return FV_OK;                                                                                        \
      }                                                                                                      \
    }                                                                                                        \
    return fv_fail(FV_ERR_INTERNAL, "cpu: no forward kernel for %s", fv_op_name(c->op));                    \
  }                                                                                                          \
                                                                                                             \
  static int nn_backward_##S(const fv_nn_call *c) {                                                          \
    const int64_t *i = c->i;                                                                                 \
    switch (c->op) {                                                                                         \
      case FV_OP_CONV2D: {                                                                                   \
        const fv_tensor *inp = c->t[4], *w = c->t[5];                                                        \
        void *ws;                                                                                            \
        FV_TRY(conv_workspace(c, inp, w, &ws));                                                              \
        fv_conv2d_backward_##S(ptr(c, 0), ptr(c, 1), ptr(c, 2), ptr(c, 3), ptr(c, 4), ptr(c, 5), ws,         \
                               inp->sizes[0], inp->sizes[1], inp->sizes[2], inp->sizes[3], w->sizes[0],      \
                               w->sizes[2], w->sizes[3], i[0], i[1], i[2], i[3], i[4], i[5], i[6]);          \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_BATCH_NORM: {                                                                               \
        int64_t B, C, Sz;                                                                                    \
        bcs(c->t[4], &B, &C, &Sz);                                                                           \
        fv_batch_norm_backward_##S(ptr(c, 0), ptr(c, 1), ptr(c, 2), ptr(c, 3), ptr(c, 4), ptr(c, 5),        \
                                   ptr(c, 6), ptr(c, 7), ptr(c, 8), ptr(c, 9), B, C, Sz, (int)i[0], c->d[1]); \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_MAX_POOL2D:                                                                                 \
      case FV_OP_ADAPTIVE_MAX_POOL2D: {                                                                      \
        const fv_tensor *in = c->t[0], *o = c->t[1];                                                         \
        fv_max_pool2d_backward_##S(ptr(c, 0), ptr(c, 1), ptr(c, 2), in->sizes[0], in->sizes[1],              \
                                   in->sizes[2], in->sizes[3], o->sizes[2], o->sizes[3]);                    \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_AVG_POOL2D: {                                                                               \
        const fv_tensor *in = c->t[0], *o = c->t[1];                                                         \
        fv_avg_pool2d_backward_##S(ptr(c, 0), ptr(c, 1), in->sizes[0], in->sizes[1], in->sizes[2],           \
                                   in->sizes[3], o->sizes[2], o->sizes[3], i[0], i[1], i[2], i[3], i[4],     \
                                   i[5], (int)i[6]);                                                         \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_ADAPTIVE_AVG_POOL2D: {                                                                      \
        const fv_tensor *in = c->t[0], *o = c->t[1];                                                         \
        fv_adaptive_avg_pool2d_backward_##S(ptr(c, 0), ptr(c, 1), in->sizes[0], in->sizes[1], in->sizes[2],  \
                                            in->sizes[3], o->sizes[2], o->sizes[3]);                         \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_UPSAMPLE_BILINEAR: {                                                                        \
        const fv_tensor *in = c->t[0], *o = c->t[1];                                                         \
        fv_upsample_bilinear2d_backward_##S(ptr(c, 0), ptr(c, 1), in->sizes[0], in->sizes[1], in->sizes[2],  \
                                            in->sizes[3], o->sizes[2], o->sizes[3], (int)i[0], 0.0, 0.0);    \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_SOFTMAX:                                                                                    \
      case FV_OP_LOG_SOFTMAX: {                                                                              \
        const fv_tensor *in = c->t[0];                                                                       \
        int64_t n = in->sizes[in->ndim - 1], rows = n ? fv_tensor_numel(in) / n : 0;                         \
        if (c->op == FV_OP_SOFTMAX) fv_softmax_backward_##S(ptr(c, 0), ptr(c, 1), ptr(c, 2), rows, n);       \
        else fv_log_softmax_backward_##S(ptr(c, 0), ptr(c, 1), ptr(c, 2), rows, n);                          \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_CROSS_ENTROPY: {                                                                            \
        const fv_tensor *logits = c->t[2];                                                                   \
        int64_t *target, *owned;                                                                             \
        FV_TRY(zero_based_target(c->t[4], i[1], &target, &owned));                                           \
        int bad = fv_cross_entropy_backward_##S(ptr(c, 0), ptr(c, 1), ptr(c, 2), ptr(c, 3), target,          \
                                                ptr(c, 5), logits->sizes[0], logits->sizes[1], (int)i[0],    \
                                                INT64_MIN);                                                  \
        free(owned);                                                                                         \
        if (bad) return fv_fail(FV_ERR_INDEX, "cross_entropy backward: a target is out of range");          \
        return FV_OK;                                                                                        \
      }                                                                                                      \
      case FV_OP_CHANNEL_SHUFFLE: {                                                                          \
        int64_t B, C, Sz;                                                                                    \
        bcs(c->t[0], &B, &C, &Sz);                                                                           \
        fv_channel_shuffle_backward_##S(ptr(c, 0), ptr(c, 1), B, C, Sz, i[0]);                               \
        return FV_OK;                                                                                        \
      }                                                                                                      \
    }                                                                                                        \
    return fv_fail(FV_ERR_INTERNAL, "cpu: no backward kernel for %s", fv_op_name(c->op));                   \
  }

NN_DISPATCH(float, f32)
NN_DISPATCH(double, f64)

/* 1 when the call's element type is float64: that of its first float operand. */
static int is_f64(const fv_nn_call *c) {
  for (int k = 0; k < 10; k++)
    if (c->t[k] && (c->t[k]->scalar_type == FV_FLOAT32 || c->t[k]->scalar_type == FV_FLOAT64))
      return c->t[k]->scalar_type == FV_FLOAT64;
  return 0;
}

/* The attention ops (cpu/nam.c, cpu/criss_cross.c) go first: they dispatch themselves. */
int fv_cpu_nn_forward(const fv_nn_call *c) {
  int handled, status = fv_cpu_attention_forward(c, &handled);
  if (handled) return status;
  if (c->op == FV_OP_CONV2D) {
    status = fv_dnnl_conv2d_forward(c, &handled);
    if (handled) return status;
  }
  return is_f64(c) ? nn_forward_f64(c) : nn_forward_f32(c);
}
int fv_cpu_nn_backward(const fv_nn_call *c) {
  int handled, status = fv_cpu_attention_backward(c, &handled);
  if (handled) return status;
  if (c->op == FV_OP_CONV2D) {
    status = fv_dnnl_conv2d_backward(c, &handled);
    if (handled) return status;
  }
  return is_f64(c) ? nn_backward_f64(c) : nn_backward_f32(c);
}
