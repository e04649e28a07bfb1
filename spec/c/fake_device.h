/* fake_device.h: a stand-in "cuda" backend for machines without a GPU. Its memory is
 * host memory (malloc) and its kernels are the CPU's, called on copies of the tensor
 * headers marked as cpu; host transfers are memcpy. It registers as FV_CUDA, so the
 * core's device plumbing (fv_to_device, fv_copy_ across devices, autograd through device
 * moves, the Lua side's :cuda()/:cpu(), module moves, allocator statistics, errors) runs
 * for real while the kernels stay the CPU's. Pinned host memory (host_alloc/host_free) is
 * malloc with a live count, and the asynchronous upload is an immediate copy that still
 * retains the source's storage as in flight, as the real one does, until the next upload
 * or fake_settle (fv_cuda_synchronize): then every earlier upload counts as complete and
 * its source is released (the real backend polls its events at those points).
 * Used by spec/c/test_device.c and by
 * spec/c/fake_cuda.c (a fake libfovea_cuda.so for spec/cuda_spec.lua, see
 * spec/cuda_plumbing_spec.lua). It checks nothing of the real CUDA kernels.
 * Include after <stdlib.h>, <string.h> and core/internal.h. */
#ifndef FOVEA_FAKE_DEVICE_H
#define FOVEA_FAKE_DEVICE_H

/* allocations bigger than this fail, like a GPU out of memory */
static const size_t fake_memory_limit = (size_t)1 << 36;
static int64_t fake_allocated, fake_peak, fake_transfers;

/* bytes of host memory that remember their size (in 16 bytes before them), or NULL with
 * "fake cuda: out of <what> for N bytes" past fake_memory_limit */
static void *fake_sized_malloc(size_t bytes, const char *what) {
  if (bytes > fake_memory_limit) {
    fv_fail(FV_ERR_MEMORY, "fake cuda: out of %s for %zu bytes", what, bytes);
    return NULL;
  }
  size_t *p = malloc(bytes + 16);
  if (!p) return NULL;
  p[0] = bytes;
  return (char *)p + 16;
}

/* frees fake_sized_malloc's data (not NULL), which must be given back with its size */
static void fake_sized_free(void *data, size_t bytes) {
  size_t *p = (size_t *)((char *)data - 16);
  if (p[0] != bytes) abort(); /* the core must give back the size it asked for */
  free(p);
}

static void *fake_alloc(size_t bytes) {
  void *p = fake_sized_malloc(bytes, "memory");
  if (!p) return NULL;
  fake_allocated += (int64_t)bytes;
  if (fake_allocated > fake_peak) fake_peak = fake_allocated;
  return p;
}

static void fake_free(void *data, size_t bytes) {
  if (!data) return;
  fake_sized_free(data, bytes);
  fake_allocated -= (int64_t)bytes;
}

/* t's header as a cpu tensor over the same memory */
static fv_tensor fake_cpu(const fv_tensor *t) {
  fv_tensor c = *t;
  c.device_type = FV_CPU;
  return c;
}

/* An op the stand-in refuses (-1: none), set by a test to see the "not implemented" path. */
static int fake_refused_op = -1;

static int fake_supports(int op, int dtype) { return op != fake_refused_op && fv_cpu_backend.supports(op, dtype); }

static int fake_copy(fv_tensor *dst, const fv_tensor *src) {
  if (dst->device_type != FV_CUDA || src->device_type != FV_CUDA) abort();
  fv_tensor d = fake_cpu(dst), s = fake_cpu(src);
  return fv_cpu_backend.copy(&d, &s);
}

static int fake_fill(fv_tensor *dst, double value) {
  fv_tensor d = fake_cpu(dst);
  return fv_cpu_backend.fill(&d, value);
}

static int fake_to_host(void *host, const fv_tensor *src, size_t bytes) {
  if (src->device_type != FV_CUDA || !fv_tensor_is_contiguous(src)) abort();
  fake_transfers++;
  memcpy(host, (char *)src->storage->data + src->offset * fv_dtype_size(src->scalar_type), bytes);
  return FV_OK;
}

/* Pinned host memory: malloc, counted (the loader's workers allocate it: atomics). */
static int64_t fake_pinned_bytes, fake_pinned_allocs;

static void *fake_host_alloc(size_t bytes) {
  void *p = fake_sized_malloc(bytes, "pinned memory");
  if (!p) return NULL;
  __atomic_add_fetch(&fake_pinned_bytes, (int64_t)bytes, __ATOMIC_RELAXED);
  __atomic_add_fetch(&fake_pinned_allocs, 1, __ATOMIC_RELAXED);
  return p;
}

static void fake_host_free(void *ptr, size_t bytes) {
  if (!ptr) return;
  fake_sized_free(ptr, bytes);
  __atomic_sub_fetch(&fake_pinned_bytes, (int64_t)bytes, __ATOMIC_RELAXED);
}

/* Uploads "in flight": their sources' storages, retained until fake_settle. */
static fv_storage **fake_flight;
static int fake_flight_count, fake_flight_cap;
static int64_t fake_uploads;

/* Every upload so far has completed: releases their sources. */
static void fake_settle(void) {
  int n = fake_flight_count;
  fake_flight_count = 0;
  for (int i = 0; i < n; i++) fv_storage_release(fake_flight[i]);
}

static int fake_upload(void **data, const fv_tensor *src, size_t bytes) {
  *data = NULL;
  if (src->device_type != FV_CPU || !src->storage || src->storage->pinned_for != FV_CUDA ||
      !fv_tensor_is_contiguous(src))
    abort(); /* the core uploads contiguous pinned cpu tensors only */
  fake_settle(); /* as the real backend's poll: the copies queued before have finished */
  void *p = fake_alloc(bytes);
  if (!p) return fv_fail(FV_ERR_MEMORY, "fake cuda: out of memory for an upload of %zu bytes", bytes);
  if (fake_flight_count == fake_flight_cap) {
    int cap = fake_flight_cap ? 2 * fake_flight_cap : 16;
    fv_storage **grown = realloc(fake_flight, (size_t)cap * sizeof *grown);
    if (!grown) {
      fake_free(p, bytes);
      return fv_fail(FV_ERR_MEMORY, "fake cuda: out of host memory for the upload list");
    }
    fake_flight = grown;
    fake_flight_cap = cap;
  }
  memcpy(p, (char *)src->storage->data + src->offset * fv_dtype_size(src->scalar_type), bytes);
  fake_transfers++;
  fake_uploads++;
  fv_storage_retain(src->storage);
  fake_flight[fake_flight_count++] = src->storage;
  *data = p;
  return FV_OK;
}

static int fake_from_host(fv_tensor *dst, const void *host, size_t bytes) {
  if (dst->device_type != FV_CUDA || !fv_tensor_is_contiguous(dst)) abort();
  fake_transfers++;
  memcpy((char *)dst->storage->data + dst->offset * fv_dtype_size(dst->scalar_type), host, bytes);
  return FV_OK;
}

static int fake_binary(int op, fv_tensor *out, const fv_tensor *a, const fv_tensor *b) {
  fv_tensor o = fake_cpu(out), x = fake_cpu(a), y = fake_cpu(b);
  return fv_cpu_backend.binary(op, &o, &x, &y);
}

static int fake_binary_scalar(int op, fv_tensor *out, const fv_tensor *a, double s, int scalar_first) {
  fv_tensor o = fake_cpu(out), x = fake_cpu(a);
  return fv_cpu_backend.binary_scalar(op, &o, &x, s, scalar_first);
}

static int fake_unary(int op, fv_tensor *out, const fv_tensor *a, double lo, double hi) {
  fv_tensor o = fake_cpu(out), x = fake_cpu(a);
  return fv_cpu_backend.unary(op, &o, &x, lo, hi);
}

static int fake_reduce(int op, fv_tensor *out, fv_tensor *index, const fv_tensor *a, int64_t outer, int64_t n,
                       int64_t inner, int correction, int index_base) {
  fv_tensor o, i, x = fake_cpu(a);
  if (out) o = fake_cpu(out);
  if (index) i = fake_cpu(index);
  return fv_cpu_backend.reduce(op, out ? &o : NULL, index ? &i : NULL, &x, outer, n, inner, correction, index_base);
}

/* The CPU matmul clones operands it cannot pass to BLAS, on the operand's device (here
 * the cpu, as the headers say), so the fake hands it cpu headers only. */
static int fake_matmul(fv_tensor *out, const fv_tensor *a, const fv_tensor *b) {
  fv_tensor o = fake_cpu(out), x = fake_cpu(a), y = fake_cpu(b);
  return fv_cpu_backend.matmul(&o, &x, &y);
}

static int fake_random(int op, fv_tensor *out, uint64_t seed, uint64_t offset) {
  fv_tensor o = fake_cpu(out);
  return fv_cpu_backend.random(op, &o, seed, offset);
}

/* The call with cpu headers of its tensors (over the same memory), for the CPU's nn
 * kernels; headers (10) receives them. */
static fv_nn_call fake_nn_call(const fv_nn_call *call, fv_tensor *headers) {
  fv_nn_call c = *call;
  for (int i = 0; i < 10; i++)
    if (call->t[i]) {
      headers[i] = fake_cpu(call->t[i]);
      c.t[i] = &headers[i];
    }
  return c;
}

static int fake_nn_forward(const fv_nn_call *call) {
  fv_tensor headers[10];
  fv_nn_call c = fake_nn_call(call, headers);
  return fv_cpu_backend.nn_forward(&c);
}

static int fake_nn_backward(const fv_nn_call *call) {
  fv_tensor headers[10];
  fv_nn_call c = fake_nn_call(call, headers);
  return fv_cpu_backend.nn_backward(&c);
}

/* The optimizer steps: the CPU's kernels on cpu headers of every tensor involved (the
 * parameters' headers point at cpu headers of their gradients). */
typedef struct fake_optim_headers {
  fv_tensor *h;     /* (5 * n) headers: parameter, gradient, then up to three states */
  fv_tensor **ptrs; /* (4 * n) pointer lists: parameters, then the states */
} fake_optim_headers;

static int fake_optim_headers_of(fake_optim_headers *o, int n, fv_tensor *const *params, int states,
                                 fv_tensor *const *s0, fv_tensor *const *s1, fv_tensor *const *s2) {
  o->h = calloc((size_t)(n > 0 ? n : 1) * 5, sizeof(fv_tensor));
  o->ptrs = calloc((size_t)(n > 0 ? n : 1) * 4, sizeof(fv_tensor *));
  if (!o->h || !o->ptrs) {
    free(o->h);
    free(o->ptrs);
    return fv_fail(FV_ERR_MEMORY, "fake cuda: out of host memory for optimizer headers");
  }
  fv_tensor *const *lists[3] = {s0, s1, s2};
  for (int i = 0; i < n; i++) {
    fv_tensor *h = o->h + 5 * i;
    h[0] = fake_cpu(params[i]);
    if (params[i]->gradient) {
      h[1] = fake_cpu(params[i]->gradient);
      h[0].gradient = &h[1];
    }
    o->ptrs[i] = &h[0];
    for (int k = 0; k < states; k++)
      if (lists[k] && lists[k][i]) {
        h[2 + k] = fake_cpu(lists[k][i]);
        o->ptrs[(k + 1) * n + i] = &h[2 + k];
      }
  }
  return FV_OK;
}

static int fake_adam_step(int n, fv_tensor *const *params, fv_tensor *const *exp_avg, fv_tensor *const *exp_avg_sq,
                          fv_tensor *const *max_exp_avg_sq, const fv_adam_coef *c) {
  fake_optim_headers o;
  FV_TRY(fake_optim_headers_of(&o, n, params, 3, exp_avg, exp_avg_sq, max_exp_avg_sq));
  int status = fv_cpu_backend.adam_step(n, o.ptrs, o.ptrs + n, o.ptrs + 2 * n, max_exp_avg_sq ? o.ptrs + 3 * n : NULL, c);
  free(o.h);
  free(o.ptrs);
  return status;
}

static int fake_sgd_step(int n, fv_tensor *const *params, fv_tensor *const *momentum_buf, const fv_sgd_coef *c) {
  fake_optim_headers o;
  FV_TRY(fake_optim_headers_of(&o, n, params, 1, momentum_buf, NULL, NULL));
  int status = fv_cpu_backend.sgd_step(n, o.ptrs, momentum_buf ? o.ptrs + n : NULL, c);
  free(o.h);
  free(o.ptrs);
  return status;
}

/* clip_grad_norm's halves: the CPU's on cpu headers of the list's gradients. The front
 * end hands over only the gradients (never NULL), live, contiguous and on this device. */
static int fake_grad_headers(int n, const fv_tensor *const *grads, fv_tensor **h, fv_tensor ***ptrs) {
  *h = calloc((size_t)(n > 0 ? n : 1), sizeof(fv_tensor));
  *ptrs = calloc((size_t)(n > 0 ? n : 1), sizeof(fv_tensor *));
  if (!*h || !*ptrs) {
    free(*h);
    free(*ptrs);
    return fv_fail(FV_ERR_MEMORY, "fake cuda: out of host memory for gradient headers");
  }
  for (int i = 0; i < n; i++) {
    const fv_tensor *g = grads[i];
    if (!g || !g->storage || g->device_type != FV_CUDA || !fv_tensor_is_contiguous(g)) abort();
    (*h)[i] = fake_cpu(g);
    (*ptrs)[i] = &(*h)[i];
  }
  return FV_OK;
}

static int fake_grad_norm_parts(int n, const fv_tensor *const *grads, int kind, double p, double *parts) {
  fv_tensor *h, **ptrs;
  FV_TRY(fake_grad_headers(n, grads, &h, &ptrs));
  int status = fv_cpu_backend.grad_norm_parts(n, (const fv_tensor *const *)ptrs, kind, p, parts);
  free(h);
  free(ptrs);
  return status;
}

static int fake_grad_scale(int n, fv_tensor *const *grads, double coef) {
  fv_tensor *h, **ptrs;
  FV_TRY(fake_grad_headers(n, (const fv_tensor *const *)grads, &h, &ptrs));
  int status = fv_cpu_backend.grad_scale(n, ptrs, coef);
  free(h);
  free(ptrs);
  return status;
}

static const fv_backend fake_backend = {
    .name = "cuda",
    .device_type = FV_CUDA,
    .supports = fake_supports,
    .alloc = fake_alloc,
    .free = fake_free,
    .copy = fake_copy,
    .fill = fake_fill,
    .to_host = fake_to_host,
    .from_host = fake_from_host,
    .host_alloc = fake_host_alloc,
    .host_free = fake_host_free,
    .upload = fake_upload,
    .binary = fake_binary,
    .binary_scalar = fake_binary_scalar,
    .unary = fake_unary,
    .reduce = fake_reduce,
    .matmul = fake_matmul,
    .random = fake_random,
    .nn_forward = fake_nn_forward,
    .nn_backward = fake_nn_backward,
    .adam_step = fake_adam_step,
    .sgd_step = fake_sgd_step,
    .grad_norm_parts = fake_grad_norm_parts,
    .grad_scale = fake_grad_scale,
};

#endif
