/* internal.h: what the core's C files share and the public header does not show:
 * the storage layout, the error helpers, the backend table and shape utilities. */
#ifndef FOVEA_INTERNAL_H
#define FOVEA_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "fovea.h"

/* ---- storage: one allocation on one device, shared by views ---- */
struct fv_storage {
  void *data;
  size_t bytes;
  int refcount;
  int device_type;
  /* 0: memory of device_type's own allocator. Else a cpu storage in page-locked
   * ("pinned") host memory that the backend of device pinned_for (FV_CUDA) gave by its
   * host_alloc and takes back by its host_free (fv_pin_memory, the loader's batches). */
  int pinned_for;
};

/* ---- errors (error.c) ---- */
/* Records status and a printf-style message for fv_last_error(); returns status. */
int fv_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes "2x3x4" (or "scalar") into buf; returns buf. */
const char *fv_shape_str(const fv_tensor *t, char *buf, size_t size);
/* Shape strings for messages, in a small per-thread ring: valid until 8 more calls. */
const char *fv_shape_of(const fv_tensor *t);

/* Early return on a failed status. */
#define FV_TRY(expr)           \
  do {                         \
    int fv_try_status_ = (expr); \
    if (fv_try_status_) return fv_try_status_; \
  } while (0)

/* Checks that t exists, has memory and the dtype is one of the float types. */
int fv_check_live(const char *op, const fv_tensor *t);
int fv_check_float(const char *op, const fv_tensor *t);
int fv_check_same_device(const char *op, const fv_tensor *a, const fv_tensor *b);
/* Normalises a possibly negative dim against ndim (ndim + extra valid positions). */
int fv_wrap_dim(const char *op, int dim, int ndim, int *out);

/* ---- storage and tensor construction (storage.c, tensor.c) ---- */
int fv_storage_new(fv_storage **out, size_t bytes, int device);
/* A cpu storage of pinned host memory from device's backend (its host_alloc); the error
 * names op and says why (no backend, no pinned memory there, out of pinned memory). */
int fv_storage_new_pinned(fv_storage **out, size_t bytes, int device, const char *op);
/* A storage on device whose memory the backend's upload allocates and fills, asynchronously,
 * from src (contiguous, on the cpu, pinned for device); see fv_backend.upload. */
int fv_storage_upload(fv_storage **out, const fv_tensor *src, size_t bytes, int device);
void fv_storage_retain(fv_storage *s);
void fv_storage_release(fv_storage *s);
/* A tensor struct with refcount 1 sharing src's storage (retained), same dtype/device. */
int fv_tensor_alias(fv_tensor **out, const fv_tensor *src);
/* Fills contiguous row-major strides for t->sizes. */
void fv_set_contiguous_strides(fv_tensor *t);
int64_t fv_shape_numel(int ndim, const int64_t *shape);
/* A contiguous tensor header (refcount 1) with no storage yet; the shape is checked as
 * fv_empty does, errors naming op. */
int fv_tensor_header(fv_tensor **out, const char *op, int ndim, const int64_t *shape, int dtype, int device);
/* Allocates a contiguous tensor like fv_empty, with no status message on success. */
int fv_alloc_like_shape(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device);
/* The same on the cpu, in host memory pinned for device's transfers (fv_storage_new_pinned). */
int fv_alloc_pinned_shape(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device, const char *op);
/* FV_OK when device's backend is loaded and gives pinned host memory, else an error naming op. */
int fv_check_pinned(const char *op, int device);
/* Broadcast shape of a and b into out_shape (FV_MAX_DIMS long); error names op and both shapes. */
int fv_broadcast_shapes(const char *op, const fv_tensor *a, const fv_tensor *b, int *ndim, int64_t *out_shape);
/* A view of t expanded to (ndim, shape) with stride 0 on broadcast dims; t must broadcast. */
void fv_broadcast_view(fv_tensor *view, const fv_tensor *t, int ndim, const int64_t *shape);

/* ---- autograd (autograd.c) ----
 * A node is what an op records on its output when grad mode is on and an input needs
 * gradients. It holds an edge per input (the input's own node, or the input itself when
 * it is a leaf), copies of the inputs' metadata (shapes, dtypes; no storage), the
 * tensors its backward needs (aliases: storage only, never grad_fn, so no cycles),
 * and the op's scalar arguments. */
typedef struct fv_edge {
  fv_node *node;      /* the input's grad_fn (retained), or */
  fv_tensor *leaf;    /* the input itself when it is a leaf that needs gradients (retained) */
} fv_edge;

/* Computes grad_in[i] (new references, or NULL for no gradient) from grad_out. Runs with
 * grad mode off. */
typedef int (*fv_backward_fn)(fv_node *node, const fv_tensor *grad_out, fv_tensor **grad_in);

struct fv_node {
  int refcount;
  const char *name;
  fv_backward_fn backward;
  int n_inputs;
  fv_edge *edges;          /* (n_inputs) */
  fv_tensor *inputs;       /* (n_inputs) metadata copies: sizes, strides, dtype; storage NULL */
  int n_saved;
  fv_tensor **saved;       /* (n_saved) aliases, NULL once released after backward */
  int released;            /* saved tensors freed by a backward without retain_graph */
  int64_t iarg[12];        /* op arguments */
  double darg[4];
  /* engine scratch */
  fv_tensor *grad;         /* gradient accumulated for this node's output */
  int pending;             /* consumers still to run */
  int visited;
};

/* 1 when input i of node needs a gradient. */
static inline int fv_node_needs(const fv_node *node, int i) { return node->edges[i].node || node->edges[i].leaf; }

/* 1 when grad mode is on and some input needs gradients. */
int fv_should_record(int n, const fv_tensor *const *inputs);
/* Records a node on out for the given inputs; *node is NULL when nothing is recorded.
 * saved tensors are kept (as aliases) for backward. */
int fv_record(fv_node **node, fv_tensor *out, const char *name, fv_backward_fn backward, int n_inputs,
              const fv_tensor *const *inputs, int n_saved, const fv_tensor *const *saved);
void fv_node_release(fv_node *node);
/* Sums g over broadcast dimensions down to the shape of like (its sizes only). */
int fv_sum_to(fv_tensor **out, const fv_tensor *g, const fv_tensor *like);
/* Expression helpers for backward functions: each returns a new tensor, or NULL when
 * an argument is NULL or the op fails (the error stays in fv_last_error). */
fv_tensor *fv_op2(int op, const fv_tensor *a, const fv_tensor *b);
fv_tensor *fv_op2s(int op, const fv_tensor *a, double s, int scalar_first);
fv_tensor *fv_op1(int op, const fv_tensor *a);
fv_tensor *fv_op_matmul(const fv_tensor *a, const fv_tensor *b);
/* A new reference to t. */
static inline fv_tensor *fv_ref(const fv_tensor *t) {
  fv_tensor_retain((fv_tensor *)t);
  return (fv_tensor *)t;
}
/* fv_sum_to(g, like) that releases g; NULL-propagating. */
fv_tensor *fv_take_sum_to(fv_tensor *g, const fv_tensor *like);
/* FV_OK when every gin[i] the node's edges need is present, else the pending error. */
int fv_grads_ready(const fv_node *node, fv_tensor **gin);
/* Fails when an in-place op would write to a tensor that needs gradients. */
int fv_check_inplace(const char *op, const fv_tensor *t);

/* ---- strided iteration (iter.c) ----
 * Walks up to three tensors of one shape (broadcast strides allowed) as a set of
 * rows: the last dim after merging dims that are contiguous for every operand.
 * Each row calls fn with the base element offsets and the row's strides. */
typedef struct fv_iter {
  int ndim;                        /* merged dims */
  int64_t sizes[FV_MAX_DIMS];
  int64_t strides[3][FV_MAX_DIMS];  /* per operand, in elements */
  int64_t base[3];                 /* per operand offset of element 0 */
  int count;                       /* operands */
} fv_iter;
void fv_iter_init(fv_iter *it, int count, const fv_tensor *const *ts);
/* Calls row(ctx, offsets[3], n, strides[3]) for every row; rows are independent. */
typedef void (*fv_row_fn)(void *ctx, const int64_t *off, int64_t n, const int64_t *stride);
void fv_iter_rows(const fv_iter *it, fv_row_fn row, void *ctx);

/* ---- random numbers (philox.c) ---- */
/* Philox4x32-10 block for counter (ctr_lo, ctr_hi) and key (seed); writes 4 words. */
void fv_philox4x32(uint64_t counter, uint64_t seed, uint32_t out[4]);
/* Element i of a uniform [0,1) or standard normal draw at generator position offset. */
double fv_philox_uniform(uint64_t seed, uint64_t offset, uint64_t i);
double fv_philox_normal(uint64_t seed, uint64_t offset, uint64_t i);

/* ---- backends ----
 * Each device has a table of kernels. Front ends (core/elementwise.c, reduce.c, matmul.c, ...) validate arguments,
 * compute shapes, allocate outputs, then call the table of the inputs' device. No op
 * knows which devices exist: CUDA registers its own table at load time.
 * Kernels receive operands already checked and, for elementwise ops, already
 * broadcast to the output's shape (stride 0 on broadcast dims). */
/* A neural-network kernel call: the operands (contiguous, on the backend's device) and
 * arguments of one op's forward or backward. Slots, by op (NULL where optional):
 *   CONV2D       fwd t: out, inp, weight, bias           i: sh sw ph pw dh dw groups
 *                bwd t: dinp, dweight, dbias, dout, inp, weight                  (same i)
 *   BATCH_NORM   fwd t: out, save_mean, save_invstd, running_mean, running_var, inp, weight, bias
 *                    i: training   d: momentum eps
 *                bwd t: dinp, dweight, dbias, dout, inp, weight, running_mean, running_var,
 *                       save_mean, save_invstd                 i: training   d: - eps
 *   MAX_POOL2D   fwd t: out, indices, inp   i: kh kw sh sw ph pw dh dw;   bwd t: dinp, dout, indices
 *   AVG_POOL2D   fwd t: out, inp            i: kh kw sh sw ph pw count_include_pad
 *                bwd t: dinp, dout          (same i)
 *   ADAPTIVE_AVG_POOL2D  fwd t: out, inp;  bwd t: dinp, dout
 *   ADAPTIVE_MAX_POOL2D  fwd t: out, indices, inp;  bwd t: dinp, dout, indices
 *   UPSAMPLE_BILINEAR    fwd t: out, inp;  bwd t: dinp, dout;   i: align_corners
 *   SOFTMAX, LOG_SOFTMAX over the last dim:  fwd t: out, inp;  bwd t: dinp, dout, out
 *   CROSS_ENTROPY fwd t: loss, lse, logits, target, weight   i: reduction index_base
 *                 bwd t: dlogits, dloss, logits, lse, target, weight        (same i)
 *   CHANNEL_SHUFFLE      fwd t: out, inp;  bwd t: dinp, dout;   i: groups
 *   NAM          fwd t: out, lse, q, k, v                               d: scale
 *                bwd t: dq, dk, dv, dout, q, k, v, out, lse             d: scale
 *   CRISS_CROSS  fwd t: out, query, key, value
 *                bwd t: dquery, dkey, dvalue, dout, query, key, value
 * Backward kernels accumulate (+=) into the gradients they are given. */
typedef struct fv_nn_call {
  int op;
  fv_tensor *t[10];
  int64_t i[10];
  double d[2];
} fv_nn_call;

/* Optimizer updates (core/optim.c, fovea_optim.h): the front end checks every tensor
 * (live, contiguous, float32/float64, all on the backend's device, companions of the
 * parameter's shape and dtype, no shared memory) and computes these coefficients in
 * double; the backend rounds each to the element type and applies core/optim.c's
 * per-element expressions in the same order. Parameters whose gradient is NULL are
 * skipped by the backend. */
typedef struct fv_adam_coef {
  double lr, beta1, beta2, eps, weight_decay;
  double step_size;             /* lr / (1 - beta1^t) */
  double bias_correction2_sqrt; /* sqrt(1 - beta2^t) */
  int decoupled, amsgrad;
} fv_adam_coef;

typedef struct fv_sgd_coef {
  double lr, momentum, dampening, weight_decay;
  int nesterov, first_step;
} fv_sgd_coef;

/* Norm kinds of grad_norm_parts (clip_grad_norm). */
enum { FV_NORM_INF, FV_NORM_ONE, FV_NORM_TWO, FV_NORM_P };

typedef struct fv_backend {
  const char *name;
  int device_type;
  int (*supports)(int op, int dtype);
  void *(*alloc)(size_t bytes);
  void (*free)(void *data, size_t bytes);
  /* dst and src on this device, same shape (src may be broadcast), any dtypes */
  int (*copy)(fv_tensor *dst, const fv_tensor *src);
  int (*fill)(fv_tensor *dst, double value);
  /* host <-> device transfer of a contiguous tensor's bytes (NULL on CPU) */
  int (*to_host)(void *host, const fv_tensor *src, size_t bytes);
  int (*from_host)(fv_tensor *dst, const void *host, size_t bytes);
  /* Page-locked ("pinned") host memory for this device's transfers (NULL: none; never on
   * the cpu's table). A cpu storage whose memory host_alloc gave records the device in
   * fv_storage.pinned_for and is given back by host_free with the same size. Both may be
   * called from any thread (the loader's workers allocate pinned batches). On failure
   * host_alloc returns NULL, with a message when it can say why. */
  void *(*host_alloc)(size_t bytes);
  void (*host_free)(void *ptr, size_t bytes);
  /* Asynchronous host-to-device copy (NULL: none), used by fv_to_device and fv_copy_
   * when the source is a contiguous cpu tensor pinned for this device: allocates `bytes`
   * of device memory (given back later by `free(*data, bytes)`) and queues a copy of the
   * first `bytes` bytes of src into it; returns at once with *data set. Work of this device
   * queued after the call sees the bytes (stream order). src->storage is retained until
   * the copy has completed, then released by the backend, so that the pinned memory is
   * neither freed nor reused (a loader reuses a batch only when its storage's refcount
   * is 1) while it is read. On failure nothing is queued or retained, *data is NULL. */
  int (*upload)(void **data, const fv_tensor *src, size_t bytes);
  int (*binary)(int op, fv_tensor *out, const fv_tensor *a, const fv_tensor *b);
  int (*binary_scalar)(int op, fv_tensor *out, const fv_tensor *a, double s, int scalar_first);
  /* unary ops; lo and hi are used by FV_OP_CLAMP */
  int (*unary)(int op, fv_tensor *out, const fv_tensor *a, double lo, double hi);
  /* reduce a, viewed as (outer, n, inner), over n into out (outer*inner elements);
   * index (int64, may be NULL) receives arg positions for MAX/MIN/ARGMAX/ARGMIN;
   * counted from index_base; correction is subtracted from n for FV_OP_VAR */
  int (*reduce)(int op, fv_tensor *out, fv_tensor *index, const fv_tensor *a,
                int64_t outer, int64_t n, int64_t inner, int correction, int index_base);
  /* out = a @ b over the last two dims: out (..., m, n) contiguous, a (..., m, k) and
   * b (..., k, n) with the same ndim >= 2, batch dims already broadcast (stride 0 allowed) */
  int (*matmul)(fv_tensor *out, const fv_tensor *a, const fv_tensor *b);
  int (*random)(int op, fv_tensor *out, uint64_t seed, uint64_t offset);
  int (*nn_forward)(const fv_nn_call *call);
  int (*nn_backward)(const fv_nn_call *call);
  /* Optimizer steps over n parameters (see fv_adam_coef; NULL: not on this device).
   * max_exp_avg_sq is NULL unless c->amsgrad; momentum_buf is NULL when momentum is 0. */
  int (*adam_step)(int n, fv_tensor *const *params, fv_tensor *const *exp_avg, fv_tensor *const *exp_avg_sq,
                   fv_tensor *const *max_exp_avg_sq, const fv_adam_coef *c);
  int (*sgd_step)(int n, fv_tensor *const *params, fv_tensor *const *momentum_buf, const fv_sgd_coef *c);
  /* clip_grad_norm's halves over a list of n gradients: every entry a live, contiguous
   * float32 or float64 tensor on this device (never NULL: the front end leaves out the
   * parameters without a gradient and passes the others in parameter order; float32 and
   * float64 may be mixed; a backend may assume that no two entries share memory, which
   * fv_clip_grad_norm does not check: optim.lua refuses a tensor listed twice).
   * grad_norm_parts: parts[i] = the sum of |grads[i]|^p (FV_NORM_ONE, _TWO with p 2, _P)
   * or its largest |element|, NaN winning (FV_NORM_INF), accumulated in double over
   * blocks of FV_NORM_BLOCK elements (block k: elements [k * FV_NORM_BLOCK,
   * (k + 1) * FV_NORM_BLOCK) of grads[i]), the blocks combined in block order starting
   * from 0; the front end combines the parts in list order. grad_scale: every element of
   * every grads[i] becomes g * (T)coef, T its element type. Either does the whole list in
   * one call, so that a device can batch it (cuda/optim.cu: multi-tensor launches and one
   * readback for all the norms' blocks). */
  int (*grad_norm_parts)(int n, const fv_tensor *const *grads, int kind, double p, double *parts);
  int (*grad_scale)(int n, fv_tensor *const *grads, double coef);
} fv_backend;
enum { FV_NORM_BLOCK = 16384 };

int fv_backend_register(const fv_backend *backend);
/* fv_copy_ between devices (device.c): dst and src on different devices, src broadcasting
 * to dst's shape; goes through the backends' to_host/from_host. */
int fv_copy_across_devices(fv_tensor *dst, const fv_tensor *src);
/* The table for device, or NULL with an error naming op when none is loaded. */
const fv_backend *fv_backend_for(const char *op, int device);
/* Fails with FV_ERR_DTYPE (or FV_ERR_DEVICE) naming op when the backend lacks it. */
int fv_backend_require(const fv_backend *be, int op, int dtype);
extern const fv_backend fv_cpu_backend;

#endif
