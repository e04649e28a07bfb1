/* fovea.h: the public C API of the fovea core.
 *
 * fovea is a neural-network toolkit with a C core and a LuaJIT front end. This header
 * is read as it is by LuaJIT's ffi.cdef (which runs no preprocessor), so it holds no
 * macros, no includes and no include guard: only enums, structs and prototypes.
 * C users include <stdint.h> and <stddef.h> first.
 *
 * Field names differ from the Lua methods on purpose (t:size() reads sizes, t:dtype()
 * reads scalar_type, t.grad wraps gradient), so the FFI never shadows a method.
 *
 * Conventions
 *   - Every entry point that can fail returns an int status: FV_OK (0) or an fv_status
 *     code. The message, naming the op and the shapes involved, is kept per thread and
 *     read with fv_last_error(). Nothing here aborts or longjmps on bad input.
 *   - New tensors come back through an out parameter `fv_tensor **out` holding one
 *     reference owned by the caller; drop it with fv_tensor_release().
 *   - A tensor is a refcounted storage plus shape, strides (in elements), offset,
 *     dtype and device. Views share the storage.
 *
 * Example
 *   fv_tensor *a, *b, *c;
 *   int64_t shape[2] = {2, 3};
 *   if (fv_ones(&a, 2, shape, FV_FLOAT32, FV_CPU) ||
 *       fv_full(&b, 2, shape, 2.0, FV_FLOAT32, FV_CPU) ||
 *       fv_binary(&c, FV_OP_ADD, a, b)) fprintf(stderr, "%s\n", fv_last_error());
 */

typedef enum fv_status {
  FV_OK = 0,
  FV_ERR_SHAPE = 1,       /* shapes do not match or broadcast */
  FV_ERR_INDEX = 2,       /* dimension or index out of range */
  FV_ERR_DTYPE = 3,       /* dtype not supported or mismatched */
  FV_ERR_MEMORY = 4,      /* allocation failed */
  FV_ERR_DEVICE = 5,      /* device missing or tensors on different devices */
  FV_ERR_ARGUMENT = 6,    /* any other bad argument */
  FV_ERR_IO = 7,          /* file missing, unreadable or malformed */
  FV_ERR_FREED = 8,       /* the tensor's memory was released by :free() */
  FV_ERR_INTERNAL = 9
} fv_status;

typedef enum fv_dtype {
  FV_FLOAT32 = 0,
  FV_FLOAT64 = 1,
  FV_FLOAT16 = 2,         /* reserved: not supported by any op yet */
  FV_BFLOAT16 = 3,        /* reserved: not supported by any op yet */
  FV_INT64 = 4,           /* indices (argmax); creation, copy and conversion only */
  FV_UINT8 = 5,           /* images; creation, copy and conversion only */
  FV_DTYPE_COUNT = 6
} fv_dtype;

typedef enum fv_device {
  FV_CPU = 0,
  FV_CUDA = 1,
  FV_DEVICE_COUNT = 2
} fv_device;

enum { FV_MAX_DIMS = 8 };

/* Elementwise and reduction op codes. The name table in core/ops.c must list every one. */
typedef enum fv_op {
  /* binary */
  FV_OP_ADD = 0, FV_OP_SUB, FV_OP_MUL, FV_OP_DIV, FV_OP_POW, FV_OP_MAXIMUM, FV_OP_MINIMUM,
  FV_OP_EQ, FV_OP_NE, FV_OP_LT, FV_OP_LE, FV_OP_GT, FV_OP_GE,
  /* unary */
  FV_OP_NEG, FV_OP_EXP, FV_OP_LOG, FV_OP_SQRT, FV_OP_ABS, FV_OP_RELU, FV_OP_SIGMOID,
  FV_OP_TANH, FV_OP_CLAMP,
  /* reductions */
  FV_OP_SUM, FV_OP_MEAN, FV_OP_MAX, FV_OP_MIN, FV_OP_ARGMAX, FV_OP_ARGMIN, FV_OP_VAR,
  /* other kernels a backend may support */
  FV_OP_COPY, FV_OP_FILL, FV_OP_MATMUL, FV_OP_RAND, FV_OP_RANDN,
  /* neural-network kernels */
  FV_OP_CONV2D, FV_OP_BATCH_NORM, FV_OP_MAX_POOL2D, FV_OP_AVG_POOL2D, FV_OP_ADAPTIVE_AVG_POOL2D,
  FV_OP_ADAPTIVE_MAX_POOL2D, FV_OP_UPSAMPLE_BILINEAR, FV_OP_SOFTMAX, FV_OP_LOG_SOFTMAX,
  FV_OP_CROSS_ENTROPY, FV_OP_CHANNEL_SHUFFLE,
  /* attention kernels */
  FV_OP_NAM, FV_OP_CRISS_CROSS,
  FV_OP_COUNT
} fv_op;

typedef struct fv_storage fv_storage;  /* opaque: data pointer, byte size, refcount */
typedef struct fv_node fv_node;        /* opaque: autograd node that produced a tensor */

typedef struct fv_tensor {
  fv_storage *storage;              /* NULL once the memory was released by fv_tensor_free_data */
  int64_t offset;                   /* first element, in elements from the storage start */
  int64_t sizes[FV_MAX_DIMS];
  int64_t strides[FV_MAX_DIMS];     /* in elements; 0 for broadcast dimensions */
  int32_t ndim;                     /* 0 for a scalar */
  int32_t scalar_type;              /* fv_dtype */
  int32_t device_type;              /* fv_device */
  int32_t device_index;
  int32_t refcount;
  int32_t needs_grad;               /* 1 when gradients flow to this tensor */
  struct fv_tensor *gradient;       /* accumulated gradient, or NULL */
  fv_node *grad_fn;                 /* node that made this tensor, or NULL for leaves */
} fv_tensor;

/* Counter-based random numbers (Philox4x32-10): element i of a draw depends only on
 * (seed, offset, i), so CPU and CUDA give the same numbers. A draw of n elements
 * advances offset by n. */
typedef struct fv_generator {
  uint64_t seed;
  uint64_t offset;
} fv_generator;

/* ---- errors, dtypes, memory ---- */
const char *fv_last_error(void);
int fv_last_status(void);
void fv_clear_error(void);
const char *fv_version(void);
const char *fv_dtype_name(int dtype);
int fv_dtype_size(int dtype);
const char *fv_device_name(int device);
const char *fv_op_name(int op);
int64_t fv_live_bytes(void);        /* bytes held by live storages, all devices */
int64_t fv_peak_bytes(void);
void fv_reset_peak_bytes(void);
/* The CPU caching allocator keeps released blocks of 64 KiB and up for reuse, up to a
 * limit (2 GiB by default); fv_empty_cache gives them back to the system. */
void fv_empty_cache(void);
int64_t fv_cached_bytes(void);
int fv_set_cache_limit(int64_t bytes);
int fv_set_num_threads(int n);      /* OpenBLAS and core kernels */
int fv_get_num_threads(void);

/* ---- backends ---- */
int fv_device_available(int device);
int fv_supports(int device, int op, int dtype);

/* ---- lifetime ---- */
void fv_tensor_retain(fv_tensor *t);
void fv_tensor_release(fv_tensor *t);
int fv_tensor_free_data(fv_tensor *t);        /* releases the storage now; later use is an error */
void *fv_tensor_data(const fv_tensor *t);     /* address of the first element (CPU), or NULL */
int64_t fv_tensor_numel(const fv_tensor *t);
int fv_tensor_is_contiguous(const fv_tensor *t);
int fv_tensor_describe(const fv_tensor *t, char *buf, int size);  /* "float32 2x3 cpu" */

/* ---- creation ---- */
int fv_empty(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device);
int fv_zeros(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device);
int fv_ones(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device);
int fv_full(fv_tensor **out, int ndim, const int64_t *shape, double value, int dtype, int device);
int fv_arange(fv_tensor **out, double start, double end, double step, int dtype, int device);
int fv_rand(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device, fv_generator *gen);
int fv_randn(fv_tensor **out, int ndim, const int64_t *shape, int dtype, int device, fv_generator *gen);
fv_generator *fv_default_generator(void);
int fv_manual_seed(uint64_t seed);
/* values[i] for the i-th element in row-major order; n must equal numel */
int fv_copy_from_f64(fv_tensor *t, const double *values, int64_t n);
int fv_copy_to_f64(const fv_tensor *t, double *values, int64_t n);
int fv_get_f64(const fv_tensor *t, const int64_t *index, double *value);
int fv_set_f64(fv_tensor *t, const int64_t *index, double value);

/* ---- views (share storage) ---- */
int fv_view(fv_tensor **out, const fv_tensor *t, int ndim, const int64_t *shape);   /* one -1 allowed */
int fv_reshape(fv_tensor **out, const fv_tensor *t, int ndim, const int64_t *shape); /* view or copy */
int fv_narrow(fv_tensor **out, const fv_tensor *t, int dim, int64_t start, int64_t length);
int fv_select(fv_tensor **out, const fv_tensor *t, int dim, int64_t index);
int fv_transpose(fv_tensor **out, const fv_tensor *t, int dim0, int dim1);
int fv_permute(fv_tensor **out, const fv_tensor *t, int ndim, const int *perm);
int fv_expand(fv_tensor **out, const fv_tensor *t, int ndim, const int64_t *shape);
int fv_squeeze(fv_tensor **out, const fv_tensor *t, int dim, int all); /* all: every size-1 dim */
int fv_unsqueeze(fv_tensor **out, const fv_tensor *t, int dim);
int fv_contiguous(fv_tensor **out, const fv_tensor *t);           /* new reference to t if already contiguous */

/* ---- copies and conversion ---- */
int fv_clone(fv_tensor **out, const fv_tensor *t);
int fv_to_dtype(fv_tensor **out, const fv_tensor *t, int dtype);
int fv_copy_(fv_tensor *dst, const fv_tensor *src);               /* src broadcast to dst; converts dtype */
int fv_fill_(fv_tensor *t, double value);

/* ---- elementwise (broadcasting) ---- */
int fv_binary(fv_tensor **out, int op, const fv_tensor *a, const fv_tensor *b);
/* op(a, s), or op(s, a) when scalar_first is 1 */
int fv_binary_scalar(fv_tensor **out, int op, const fv_tensor *a, double s, int scalar_first);
int fv_unary(fv_tensor **out, int op, const fv_tensor *a);
int fv_clamp(fv_tensor **out, const fv_tensor *a, double lo, double hi);

/* ---- reductions ---- */
/* Over dimension dim (negative counts from the end), or over all elements when all is 1.
 * Index results (argmax, argmin, fv_max_dim's indices) are int64 counted from
 * index_base: 0 as in C and PyTorch, 1 as in Lua and Torch7. */
int fv_reduce(fv_tensor **out, int op, const fv_tensor *a, int dim, int keepdim, int all, int index_base);
int fv_var(fv_tensor **out, const fv_tensor *a, int dim, int keepdim, int all, int unbiased);
/* values and int64 indices of the maximum (or minimum when op is FV_OP_MIN) along dim */
int fv_max_dim(fv_tensor **values, fv_tensor **indices, int op, const fv_tensor *a, int dim, int keepdim,
               int index_base);

/* ---- linear algebra ---- */
/* 1-D and 2-D as numpy; 3-D and more are batched with broadcast batch dimensions */
int fv_matmul(fv_tensor **out, const fv_tensor *a, const fv_tensor *b);

/* ---- autograd ----
 * A tensor with needs_grad set is a leaf whose gradient accumulates in t->gradient; an
 * op on such tensors (while grad mode is on) records a node in its output's grad_fn.
 * fv_backward walks the nodes in reverse topological order. */
int fv_set_grad_enabled(int enabled);   /* returns the previous setting; per thread */
int fv_is_grad_enabled(void);
int fv_tensor_set_grad(fv_tensor *t, fv_tensor *grad);   /* retains grad (may be NULL) */
/* Backpropagates from t; grad is d(loss)/dt (NULL for a one-element t: 1). Gradients
 * accumulate (+=) into the leaves; the graph's saved tensors are freed afterwards
 * unless retain_graph is 1. */
int fv_backward(fv_tensor *t, const fv_tensor *grad, int retain_graph);
int fv_detach(fv_tensor **out, const fv_tensor *t);   /* shares storage, no grad_fn */
const char *fv_node_name(const fv_node *node);

/* ---- neural-network ops (differentiable; images are NCHW) ----
 * Each records its backward when an input needs gradients. Pairs (h, w) are given as
 * two numbers. */
int fv_conv2d(fv_tensor **out, const fv_tensor *input, const fv_tensor *weight, const fv_tensor *bias,
              int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
              int64_t dilation_w, int64_t groups);
/* training: normalise with batch statistics and update the running ones (unbiased
 * variance, momentum); otherwise use the running statistics. weight, bias, running_* may
 * be NULL (running stats are required when not training). Input (B, C, ...). */
int fv_batch_norm(fv_tensor **out, const fv_tensor *input, const fv_tensor *weight, const fv_tensor *bias,
                  fv_tensor *running_mean, fv_tensor *running_var, int training, double momentum, double eps);
int fv_max_pool2d(fv_tensor **out, const fv_tensor *input, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                  int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                  int ceil_mode);
int fv_avg_pool2d(fv_tensor **out, const fv_tensor *input, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                  int64_t stride_w, int64_t pad_h, int64_t pad_w, int ceil_mode, int count_include_pad);
int fv_adaptive_avg_pool2d(fv_tensor **out, const fv_tensor *input, int64_t out_h, int64_t out_w);
int fv_adaptive_max_pool2d(fv_tensor **out, const fv_tensor *input, int64_t out_h, int64_t out_w);
int fv_upsample_bilinear(fv_tensor **out, const fv_tensor *input, int64_t out_h, int64_t out_w, int align_corners);
int fv_softmax(fv_tensor **out, const fv_tensor *input, int dim);
int fv_log_softmax(fv_tensor **out, const fv_tensor *input, int dim);
/* logits (B, K), target int64 (B) of class indices counted from index_base; weight (K)
 * or NULL; reduction 0 none (B), 1 mean (sum / sum of the targets' weights), 2 sum. */
int fv_cross_entropy(fv_tensor **out, const fv_tensor *logits, const fv_tensor *target, const fv_tensor *weight,
                     int reduction, int index_base);
int fv_channel_shuffle(fv_tensor **out, const fv_tensor *input, int64_t groups);
/* Joins n tensors along dim; shapes must agree elsewhere. */
int fv_cat(fv_tensor **out, int n, const fv_tensor *const *inputs, int dim);
/* y = x W^T + b: input (..., in), weight (out, in), bias (out) or NULL. */
int fv_linear(fv_tensor **out, const fv_tensor *input, const fv_tensor *weight, const fv_tensor *bias);
/* Zeroes elements with probability p and scales the rest by 1/(1-p) when training. */
int fv_dropout(fv_tensor **out, const fv_tensor *input, double p, int training, fv_generator *gen);

/* ---- attention (differentiable) ----
 * NAM (non-local) attention, fused: out_i = sum_j softmax_j(scale * q_i . k_j) v_j with
 * q (B, N, D), k (B, M, D), v (B, M, Cv) -> out (B, N, Cv); N and M are positions
 * (H*W), usually equal. scale 1 is the paper's choice, 1/sqrt(D) the Transformer's. The
 * N x M attention matrix is never stored: online softmax over key tiles, recomputed in
 * backward from the saved per-row log-sum-exp (extra memory O(N (D + Cv))). */
int fv_nam_attention(fv_tensor **out, const fv_tensor *q, const fv_tensor *k, const fv_tensor *v, double scale);
/* Criss-cross attention (CCNet): query, key (B, Cq, H, W), value (B, Cv, H, W) ->
 * (B, Cv, H, W); each position attends to its column and its row, H + W - 1 positions
 * (itself once), one softmax over all of them. No residual or gamma (the caller's). */
int fv_criss_cross_attention(fv_tensor **out, const fv_tensor *query, const fv_tensor *key,
                             const fv_tensor *value);

/* ---- devices ----
 * A copy of t on device (FV_CPU or FV_CUDA, whose backend must be loaded: see
 * cuda/fovea_cuda.h), same shape and dtype, contiguous; a new reference to t when it is
 * already there. Differentiable for float tensors (the gradient goes back to t's
 * device). fv_copy_ also copies between devices. */
int fv_to_device(fv_tensor **out, const fv_tensor *t, int device);
/* Pinned (page-locked) host memory, as PyTorch's pin_memory: *out is a contiguous copy of
 * the cpu tensor t (same values, dtype and shape; still a cpu tensor) in host memory that
 * device's backend (FV_CUDA) pinned for its transfers; a new reference to t when t is
 * contiguous and pinned for device already. Differentiable for float tensors. Fails
 * (FV_ERR_DEVICE, naming t) when t is not on the cpu, device is the cpu, or no backend
 * for device is loaded or it has no pinned memory. fv_to_device and fv_copy_ send a
 * contiguous pinned tensor to its device asynchronously: the call returns at once, the
 * device's later work sees the bytes, and t's memory is kept alive until the copy is done.
 * fv_live_bytes counts pinned memory as any cpu memory. */
int fv_pin_memory(fv_tensor **out, const fv_tensor *t, int device);
/* 1 when t is a cpu tensor in pinned memory (its storage's; views of it are pinned too). */
int fv_tensor_is_pinned(const fv_tensor *t);
