/* cpu/conv_dnnl.c: float32 conv2d on oneDNN (Debian's libdnnl, 2.6 C API), the engine
 * PyTorch's CPU convolutions run on.
 *
 * Layouts: fovea's tensors are NCHW and its weights (C_out, C_in/groups, KH, KW), which
 * is oneDNN's nchw and oihw (goihw with groups). The primitives are created with
 * format_tag_any, so oneDNN picks its blocked layouts (nChw16c, OIhw16i16o, ... on
 * AVX-512), and reorders convert at the boundaries; that is what PyTorch does with
 * NCHW tensors too. The blocked kernels beat the plain-layout ones (oneDNN's gemm-based
 * convolution) by far more than the reorders cost: a ResNet18 training step at 224,
 * batch 4, 2 threads took 0.275 s blocked against 0.353 s plain on the 2-core AVX-512
 * machine, the reorders being about 35 ms of it. FOVEA_DNNL_LAYOUT=plain forces the
 * plain layouts, to compare.
 *
 * Accumulation: backward kernels add into the gradients they are given. oneDNN's
 * backward primitives write, so diff_src and diff_weights go to a buffer of ours and a
 * reorder with a sum post-op (dst = dst + src) adds them into the caller's tensor, in
 * the same pass that converts the layout back. The bias gradient (C_out floats) is
 * added by hand.
 *
 * Caching: one entry per (shape, stride, padding, dilation, groups, thread count), in an
 * LRU of CACHE_SIZE entries; each holds the forward primitive (with and without bias),
 * backward-data and backward-weights (with and without bias), created when first needed,
 * with their reorders. Shapes oneDNN rejects are remembered as rejected and go to the
 * im2col path (cpu/nn_conv2d.inc). The thread count is part of the key because oneDNN
 * (OpenMP build) sizes its work split when a primitive is created: fv_set_num_threads
 * (omp_set_num_threads) then takes effect on the next call.
 *
 * Memory: one engine and one stream, created on first use; scratchpads are ours
 * (scratchpad_mode_user) and, with the reordered copies, live in one arena that grows
 * to the largest call and is kept, so that steady-state steps allocate nothing here.
 * A mutex serialises the calls (the arena and the cache are shared).
 *
 * Off switch: FOVEA_DNNL=0 in the environment sends every call to im2col.
 * Built when the Makefile finds oneDNN's header (it then defines FV_HAVE_DNNL and links
 * -ldnnl); without it the entries below answer "not handled". */
#include "conv_dnnl.h"

#ifndef FV_HAVE_DNNL

int fv_dnnl_conv2d_forward(const fv_nn_call *c, int *handled) {
  (void)c;
  *handled = 0;
  return FV_OK;
}
int fv_dnnl_conv2d_backward(const fv_nn_call *c, int *handled) {
  (void)c;
  *handled = 0;
  return FV_OK;
}
int fv_dnnl_conv2d_active(void) { return 0; }

#else

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_SIZE 48
#define ALIGN 4096 /* buffers in the arena start on page boundaries */

enum { K_B, K_C, K_H, K_W, K_CO, K_KH, K_KW, K_SH, K_SW, K_PH, K_PW, K_DH, K_DW, K_G, K_THREADS, K_N };

typedef struct conv_key {
  int64_t v[K_N];
} conv_key;

/* Moves one operand between the caller's plain buffer and a primitive's layout. */
typedef struct xfer {
  dnnl_memory_desc_t md;    /* the primitive's layout of the operand */
  dnnl_primitive_t reorder; /* inputs: user -> md; outputs: md -> user; NULL: the user's buffer is used */
  size_t bytes;             /* the arena buffer for md, when reorder is set */
  size_t scratch;           /* the reorder's scratchpad */
} xfer;

/* One primitive and the reorders around it: forward x = {src, weights, dst};
 * backward data x = {diff_dst, weights, diff_src}; backward weights x = {src, diff_dst,
 * diff_weights}. */
typedef struct prim {
  int state; /* 0: not tried; 1: ready; -1: oneDNN rejected it */
  dnnl_primitive_desc_t pd;
  dnnl_primitive_t p;
  size_t scratch;
  xfer x[3];
} prim;

typedef struct entry {
  int used;
  conv_key key;
  uint64_t last_use;
  dnnl_memory_desc_t src, wei, dst, bias; /* the caller's plain layouts */
  prim fwd[2];                            /* [has bias] */
  prim bwd_data;
  prim bwd_weights[2]; /* [has bias] */
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int enabled = -1; /* -1: not decided yet */
static int plain_layout;
static dnnl_engine_t engine;
static dnnl_stream_t stream;
static entry cache[CACHE_SIZE];
static uint64_t clock_now;
static char *arena;
static size_t arena_bytes;

static size_t round_up(size_t n) { return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1); }

/* Decides once whether oneDNN is used: not with FOVEA_DNNL=0, nor when its engine fails. */
static int init_locked(void) {
  if (enabled >= 0) return enabled;
  const char *env = getenv("FOVEA_DNNL");
  const char *layout = getenv("FOVEA_DNNL_LAYOUT");
  plain_layout = layout && strcmp(layout, "plain") == 0;
  enabled = 0;
  if (env && strcmp(env, "0") == 0) return 0;
  if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return 0;
  if (dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) {
    dnnl_engine_destroy(engine);
    engine = NULL;
    return 0;
  }
  enabled = 1;
  return 1;
}

int fv_dnnl_conv2d_active(void) {
  pthread_mutex_lock(&lock);
  int on = init_locked();
  pthread_mutex_unlock(&lock);
  return on;
}

static void prim_destroy(prim *p) {
  for (int k = 0; k < 3; k++)
    if (p->x[k].reorder) dnnl_primitive_destroy(p->x[k].reorder);
  if (p->p) dnnl_primitive_destroy(p->p);
  if (p->pd) dnnl_primitive_desc_destroy(p->pd);
  memset(p, 0, sizeof *p);
}

static void entry_destroy(entry *e) {
  for (int k = 0; k < 2; k++) {
    prim_destroy(&e->fwd[k]);
    prim_destroy(&e->bwd_weights[k]);
  }
  prim_destroy(&e->bwd_data);
  memset(e, 0, sizeof *e);
}

/* An attribute with a user-managed scratchpad and, when sum is set, dst += result. */
static dnnl_primitive_attr_t make_attr(int sum) {
  dnnl_primitive_attr_t attr = NULL;
  if (dnnl_primitive_attr_create(&attr) != dnnl_success) return NULL;
  if (dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) != dnnl_success) goto fail;
  if (sum) {
    dnnl_post_ops_t ops = NULL;
    if (dnnl_post_ops_create(&ops) != dnnl_success) goto fail;
    int ok = dnnl_post_ops_append_sum(ops, 1.0f) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success;
    dnnl_post_ops_destroy(ops);
    if (!ok) goto fail;
  }
  return attr;
fail:
  dnnl_primitive_attr_destroy(attr);
  return NULL;
}

static size_t scratch_size(const_dnnl_primitive_desc_t pd) {
  const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  return md ? dnnl_memory_desc_get_size(md) : 0;
}

/* Sets up x for an operand whose caller layout is user and primitive layout is md.
 * out: the primitive produces it; accumulate: the caller's tensor gets += (a reorder
 * even when the layouts agree). Returns 0 on success. */
static int make_xfer(xfer *x, const dnnl_memory_desc_t *user, const dnnl_memory_desc_t *md, int out,
                     int accumulate) {
  x->md = *md;
  x->reorder = NULL;
  x->bytes = x->scratch = 0;
  if (!accumulate && dnnl_memory_desc_equal(user, md)) return 0;
  dnnl_primitive_attr_t attr = make_attr(accumulate);
  if (!attr) return -1;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t st = out ? dnnl_reorder_primitive_desc_create(&pd, md, engine, user, engine, attr)
                         : dnnl_reorder_primitive_desc_create(&pd, user, engine, md, engine, attr);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return -1;
  st = dnnl_primitive_create(&x->reorder, pd);
  x->scratch = scratch_size(pd);
  dnnl_primitive_desc_destroy(pd);
  if (st != dnnl_success) {
    x->reorder = NULL;
    return -1;
  }
  x->bytes = dnnl_memory_desc_get_size(md);
  return 0;
}

/* Logical memory descriptors of a conv: plain (the caller's) or any (oneDNN's choice). */
typedef struct conv_mds {
  dnnl_memory_desc_t src, wei, dst, bias;
  dnnl_dims_t strides, dilates, pad_l, pad_r;
} conv_mds;

static int make_mds(conv_mds *m, const conv_key *k, int any) {
  const int64_t *v = k->v;
  const int64_t OH = (v[K_H] + 2 * v[K_PH] - v[K_DH] * (v[K_KH] - 1) - 1) / v[K_SH] + 1;
  const int64_t OW = (v[K_W] + 2 * v[K_PW] - v[K_DW] * (v[K_KW] - 1) - 1) / v[K_SW] + 1;
  dnnl_dims_t src = {v[K_B], v[K_C], v[K_H], v[K_W]}, dst = {v[K_B], v[K_CO], OH, OW}, bias = {v[K_CO]};
  dnnl_dims_t wei4 = {v[K_CO], v[K_C], v[K_KH], v[K_KW]};
  dnnl_dims_t wei5 = {v[K_G], v[K_CO] / v[K_G], v[K_C] / v[K_G], v[K_KH], v[K_KW]};
  const int grouped = v[K_G] > 1;
  if (dnnl_memory_desc_init_by_tag(&m->src, 4, src, dnnl_f32, any ? dnnl_format_tag_any : dnnl_nchw) ||
      dnnl_memory_desc_init_by_tag(&m->dst, 4, dst, dnnl_f32, any ? dnnl_format_tag_any : dnnl_nchw) ||
      dnnl_memory_desc_init_by_tag(&m->wei, grouped ? 5 : 4, grouped ? wei5 : wei4, dnnl_f32,
                                   any ? dnnl_format_tag_any : grouped ? dnnl_goihw : dnnl_oihw) ||
      dnnl_memory_desc_init_by_tag(&m->bias, 1, bias, dnnl_f32, dnnl_x))
    return -1;
  m->strides[0] = v[K_SH];
  m->strides[1] = v[K_SW];
  m->dilates[0] = v[K_DH] - 1;
  m->dilates[1] = v[K_DW] - 1;
  m->pad_l[0] = m->pad_r[0] = v[K_PH];
  m->pad_l[1] = m->pad_r[1] = v[K_PW];
  return 0;
}

/* Creates the primitive and reorders of p from an op descriptor; marks it rejected on failure. */
static int finish_prim(prim *p, const void *op_desc, const_dnnl_primitive_desc_t hint) {
  dnnl_primitive_attr_t attr = make_attr(0);
  if (!attr) return -1;
  dnnl_status_t st = dnnl_primitive_desc_create(&p->pd, op_desc, attr, engine, hint);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) {
    p->pd = NULL;
    return -1;
  }
  if (dnnl_primitive_create(&p->p, p->pd) != dnnl_success) {
    p->p = NULL;
    return -1;
  }
  p->scratch = scratch_size(p->pd);
  return 0;
}

static int fail_prim(prim *p) {
  prim_destroy(p);
  p->state = -1;
  return -1;
}

static const dnnl_memory_desc_t *qmd(const prim *p, dnnl_query_t what) {
  return dnnl_primitive_desc_query_md(p->pd, what, 0);
}

static prim *get_fwd(entry *e, int bias) {
  prim *p = &e->fwd[bias];
  if (p->state) return p;
  conv_mds m;
  dnnl_convolution_desc_t cd;
  if (make_mds(&m, &e->key, !plain_layout) ||
      dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct, &m.src,
                                                 &m.wei, bias ? &m.bias : NULL, &m.dst, m.strides, m.dilates,
                                                 m.pad_l, m.pad_r) != dnnl_success ||
      finish_prim(p, &cd, NULL) ||
      make_xfer(&p->x[0], &e->src, qmd(p, dnnl_query_src_md), 0, 0) ||
      make_xfer(&p->x[1], &e->wei, qmd(p, dnnl_query_weights_md), 0, 0) ||
      make_xfer(&p->x[2], &e->dst, qmd(p, dnnl_query_dst_md), 1, 0)) {
    fail_prim(p);
    return p;
  }
  p->state = 1;
  return p;
}

/* The forward primitive descriptor the backward ones take as a hint, or NULL. */
static const_dnnl_primitive_desc_t hint_for(entry *e) {
  if (e->fwd[0].state == 1) return e->fwd[0].pd;
  if (e->fwd[1].state == 1) return e->fwd[1].pd;
  prim *f = get_fwd(e, 0);
  return f->state == 1 ? f->pd : NULL;
}

static prim *get_bwd_data(entry *e) {
  prim *p = &e->bwd_data;
  if (p->state) return p;
  const_dnnl_primitive_desc_t hint = hint_for(e);
  conv_mds m;
  dnnl_convolution_desc_t cd;
  if (!hint || make_mds(&m, &e->key, !plain_layout) ||
      dnnl_dilated_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &m.src, &m.wei, &m.dst,
                                                       m.strides, m.dilates, m.pad_l, m.pad_r) != dnnl_success ||
      finish_prim(p, &cd, hint) ||
      make_xfer(&p->x[0], &e->dst, qmd(p, dnnl_query_diff_dst_md), 0, 0) ||
      make_xfer(&p->x[1], &e->wei, qmd(p, dnnl_query_weights_md), 0, 0) ||
      make_xfer(&p->x[2], &e->src, qmd(p, dnnl_query_diff_src_md), 1, 1)) {
    fail_prim(p);
    return p;
  }
  p->state = 1;
  return p;
}

static prim *get_bwd_weights(entry *e, int bias) {
  prim *p = &e->bwd_weights[bias];
  if (p->state) return p;
  const_dnnl_primitive_desc_t hint = hint_for(e);
  conv_mds m;
  dnnl_convolution_desc_t cd;
  if (!hint || make_mds(&m, &e->key, !plain_layout) ||
      dnnl_dilated_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &m.src, &m.wei,
                                                          bias ? &m.bias : NULL, &m.dst, m.strides, m.dilates,
                                                          m.pad_l, m.pad_r) != dnnl_success ||
      finish_prim(p, &cd, hint) ||
      make_xfer(&p->x[0], &e->src, qmd(p, dnnl_query_src_md), 0, 0) ||
      make_xfer(&p->x[1], &e->dst, qmd(p, dnnl_query_diff_dst_md), 0, 0) ||
      make_xfer(&p->x[2], &e->wei, qmd(p, dnnl_query_diff_weights_md), 1, 1)) {
    fail_prim(p);
    return p;
  }
  /* the bias gradient must come out plain (a C_out vector): checked, not assumed */
  if (bias) {
    const dnnl_memory_desc_t *db = dnnl_primitive_desc_query_md(p->pd, dnnl_query_diff_weights_md, 1);
    if (!db || !dnnl_memory_desc_equal(db, &e->bias)) {
      fail_prim(p);
      return p;
    }
  }
  p->state = 1;
  return p;
}

/* The cache entry for a call's geometry (B C H W C_out KH KW and the i slots), created
 * (evicting the least recently used) when missing; NULL when its descriptors fail. */
static entry *lookup(const fv_tensor *inp, const fv_tensor *w, const int64_t *i) {
  conv_key k;
  memset(&k, 0, sizeof k);
  k.v[K_B] = inp->sizes[0];
  k.v[K_C] = inp->sizes[1];
  k.v[K_H] = inp->sizes[2];
  k.v[K_W] = inp->sizes[3];
  k.v[K_CO] = w->sizes[0];
  k.v[K_KH] = w->sizes[2];
  k.v[K_KW] = w->sizes[3];
  for (int j = 0; j < 7; j++) k.v[K_SH + j] = i[j];
  k.v[K_THREADS] = omp_get_max_threads();
  clock_now++;
  entry *victim = &cache[0];
  for (int j = 0; j < CACHE_SIZE; j++) {
    entry *e = &cache[j];
    if (e->used && memcmp(&e->key, &k, sizeof k) == 0) {
      e->last_use = clock_now;
      return e;
    }
    if (!e->used) {
      if (victim->used) victim = e;
    } else if (victim->used && e->last_use < victim->last_use) {
      victim = e;
    }
  }
  if (victim->used) entry_destroy(victim);
  entry *e = victim;
  e->key = k;
  conv_mds m;
  if (make_mds(&m, &k, 0)) return NULL;
  e->src = m.src;
  e->wei = m.wei;
  e->dst = m.dst;
  e->bias = m.bias;
  e->used = 1;
  e->last_use = clock_now;
  return e;
}

static int arena_reserve(size_t need) {
  if (need <= arena_bytes) return 0;
  free(arena);
  arena = aligned_alloc(ALIGN, round_up(need));
  arena_bytes = arena ? round_up(need) : 0;
  return arena ? 0 : -1;
}

/* ---- execution: memory objects over the caller's and the arena's buffers ---- */

typedef struct run {
  dnnl_memory_t mem[24];
  int n;
  int failed;
  char *scratch;
  size_t scratch_bytes;
} run;

static dnnl_memory_t mem_of(run *r, const dnnl_memory_desc_t *md, void *data) {
  dnnl_memory_t m = NULL;
  if (r->failed || r->n == (int)(sizeof r->mem / sizeof r->mem[0]) ||
      dnnl_memory_create(&m, md, engine, data) != dnnl_success) {
    r->failed = 1;
    return NULL;
  }
  r->mem[r->n++] = m;
  return m;
}

static void run_done(run *r) {
  for (int k = 0; k < r->n; k++) dnnl_memory_destroy(r->mem[k]);
  r->n = 0;
}

static void execute(run *r, const_dnnl_primitive_t p, int n, dnnl_exec_arg_t *args, size_t scratch) {
  if (r->failed) return;
  dnnl_exec_arg_t all[8];
  memcpy(all, args, (size_t)n * sizeof *args);
  if (scratch) {
    const dnnl_memory_desc_t *md;
    const_dnnl_primitive_desc_t pd;
    if (dnnl_primitive_get_primitive_desc(p, &pd) != dnnl_success ||
        !(md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0))) {
      r->failed = 1;
      return;
    }
    all[n].arg = DNNL_ARG_SCRATCHPAD;
    all[n].memory = mem_of(r, md, r->scratch);
    n++;
  }
  if (r->failed || dnnl_primitive_execute(p, stream, n, all) != dnnl_success) r->failed = 1;
}

/* Runs reorder from (from_md, from) to (to_md, to). */
static void reorder(run *r, const xfer *x, const dnnl_memory_desc_t *from_md, void *from,
                    const dnnl_memory_desc_t *to_md, void *to) {
  dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, mem_of(r, from_md, from)}, {DNNL_ARG_TO, mem_of(r, to_md, to)}};
  execute(r, x->reorder, 2, args, x->scratch);
}

/* Where the primitive reads input x: the caller's buffer, or its reordered copy at *off in the arena. */
static void *stage_in(run *r, const xfer *x, const dnnl_memory_desc_t *user, const void *data, size_t *off) {
  if (!x->reorder) return (void *)data;
  void *buf = arena + *off;
  *off += round_up(x->bytes);
  reorder(r, x, user, (void *)data, &x->md, buf);
  return buf;
}

/* Where the primitive writes output x: the caller's buffer, or an arena buffer at *off. */
static void *stage_out(const xfer *x, void *data, size_t *off) {
  if (!x->reorder) return data;
  void *buf = arena + *off;
  *off += round_up(x->bytes);
  return buf;
}

static void finish_out(run *r, const xfer *x, const dnnl_memory_desc_t *user, void *buf, void *data) {
  if (x->reorder) reorder(r, x, &x->md, buf, user, data);
}

static size_t max_scratch(const prim *p) {
  size_t s = p->scratch;
  for (int k = 0; k < 3; k++)
    if (p->x[k].scratch > s) s = p->x[k].scratch;
  return s;
}

static size_t xfer_bytes(const prim *p) {
  size_t s = 0;
  for (int k = 0; k < 3; k++)
    if (p->x[k].reorder) s += round_up(p->x[k].bytes);
  return s;
}

static int exec_failed(run *r) {
  run_done(r);
  dnnl_stream_wait(stream);
  return fv_fail(FV_ERR_INTERNAL, "conv2d: a oneDNN primitive failed to run");
}

static void *data_of(const fv_tensor *t) { return t ? fv_tensor_data(t) : NULL; }

/* Whether the call is one for oneDNN: float32, non-empty. */
static int wanted(const fv_tensor *inp, const fv_tensor *w, const fv_tensor *probe) {
  if (!probe || probe->scalar_type != FV_FLOAT32 || inp->scalar_type != FV_FLOAT32) return 0;
  for (int d = 0; d < 4; d++)
    if (inp->sizes[d] <= 0 || w->sizes[d] <= 0) return 0;
  return 1;
}

int fv_dnnl_conv2d_forward(const fv_nn_call *c, int *handled) {
  const fv_tensor *out = c->t[0], *inp = c->t[1], *w = c->t[2], *b = c->t[3];
  *handled = 0;
  if (!wanted(inp, w, out)) return FV_OK;
  pthread_mutex_lock(&lock);
  entry *e = init_locked() ? lookup(inp, w, c->i) : NULL;
  prim *p = e ? get_fwd(e, b != NULL) : NULL;
  if (!p || p->state != 1) {
    pthread_mutex_unlock(&lock);
    return FV_OK;
  }
  *handled = 1;
  size_t off = round_up(max_scratch(p));
  if (arena_reserve(off + xfer_bytes(p))) {
    pthread_mutex_unlock(&lock);
    return fv_fail(FV_ERR_MEMORY, "conv2d: cannot allocate %zu bytes of oneDNN workspace", off + xfer_bytes(p));
  }
  run r = {.scratch = arena};
  off = round_up(max_scratch(p));
  void *src = stage_in(&r, &p->x[0], &e->src, data_of(inp), &off);
  void *wei = stage_in(&r, &p->x[1], &e->wei, data_of(w), &off);
  void *dst = stage_out(&p->x[2], data_of(out), &off);
  dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, mem_of(&r, &p->x[0].md, src)},
                             {DNNL_ARG_WEIGHTS, mem_of(&r, &p->x[1].md, wei)},
                             {DNNL_ARG_DST, mem_of(&r, &p->x[2].md, dst)},
                             {DNNL_ARG_BIAS, b ? mem_of(&r, &e->bias, data_of(b)) : NULL}};
  execute(&r, p->p, b ? 4 : 3, args, p->scratch);
  finish_out(&r, &p->x[2], &e->dst, dst, data_of(out));
  int status = r.failed ? exec_failed(&r) : FV_OK;
  run_done(&r);
  pthread_mutex_unlock(&lock);
  return status;
}

/* dbias[oc] += sum of dout over images and positions (when there is no backward-weights primitive to do it). */
static void bias_grad(float *dbias, const float *dout, int64_t B, int64_t C, int64_t S) {
#pragma omp parallel for schedule(static) if (B * C * S >= 32768)
  for (int64_t oc = 0; oc < C; oc++) {
    double s = 0;
    for (int64_t n = 0; n < B; n++) {
      const float *g = dout + (n * C + oc) * S;
      float part = 0;
#pragma omp simd reduction(+ : part)
      for (int64_t j = 0; j < S; j++) part += g[j];
      s += part;
    }
    dbias[oc] += (float)s;
  }
}

int fv_dnnl_conv2d_backward(const fv_nn_call *c, int *handled) {
  const fv_tensor *dinp = c->t[0], *dw = c->t[1], *db = c->t[2], *dout = c->t[3], *inp = c->t[4], *w = c->t[5];
  *handled = 0;
  if (!wanted(inp, w, dout)) return FV_OK;
  pthread_mutex_lock(&lock);
  entry *e = init_locked() ? lookup(inp, w, c->i) : NULL;
  prim *pd = NULL, *pw = NULL;
  if (e && dinp) pd = get_bwd_data(e);
  if (e && dw) pw = get_bwd_weights(e, db != NULL);
  if (!e || (pd && pd->state != 1) || (pw && pw->state != 1)) {
    pthread_mutex_unlock(&lock);
    return FV_OK;
  }
  *handled = 1;
  /* diff_dst once for both primitives when they want the same layout */
  const int share = pd && pw && pd->x[0].reorder && pw->x[1].reorder && dnnl_memory_desc_equal(&pd->x[0].md, &pw->x[1].md);
  size_t scratch = 0, bytes = 0;
  if (pd) {
    scratch = max_scratch(pd);
    bytes += xfer_bytes(pd);
  }
  if (pw) {
    if (max_scratch(pw) > scratch) scratch = max_scratch(pw);
    bytes += xfer_bytes(pw) + round_up((size_t)w->sizes[0] * sizeof(float));
    if (share) bytes -= round_up(pw->x[1].bytes);
  }
  if (arena_reserve(round_up(scratch) + bytes)) {
    pthread_mutex_unlock(&lock);
    return fv_fail(FV_ERR_MEMORY, "conv2d: cannot allocate %zu bytes of oneDNN workspace", round_up(scratch) + bytes);
  }
  run r = {.scratch = arena};
  size_t off = round_up(scratch);
  void *gout = NULL;
  if (pd) {
    gout = stage_in(&r, &pd->x[0], &e->dst, data_of(dout), &off);
    void *wei = stage_in(&r, &pd->x[1], &e->wei, data_of(w), &off);
    void *gin = stage_out(&pd->x[2], data_of(dinp), &off);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_DIFF_DST, mem_of(&r, &pd->x[0].md, gout)},
                               {DNNL_ARG_WEIGHTS, mem_of(&r, &pd->x[1].md, wei)},
                               {DNNL_ARG_DIFF_SRC, mem_of(&r, &pd->x[2].md, gin)}};
    execute(&r, pd->p, 3, args, pd->scratch);
    finish_out(&r, &pd->x[2], &e->src, gin, data_of(dinp));
  }
  if (pw) {
    void *src = stage_in(&r, &pw->x[0], &e->src, data_of(inp), &off);
    void *g = share ? gout : stage_in(&r, &pw->x[1], &e->dst, data_of(dout), &off);
    void *gw = stage_out(&pw->x[2], data_of(dw), &off);
    float *gb = db ? (float *)(arena + off) : NULL;
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, mem_of(&r, &pw->x[0].md, src)},
                               {DNNL_ARG_DIFF_DST, mem_of(&r, &pw->x[1].md, g)},
                               {DNNL_ARG_DIFF_WEIGHTS, mem_of(&r, &pw->x[2].md, gw)},
                               {DNNL_ARG_DIFF_BIAS, db ? mem_of(&r, &e->bias, gb) : NULL}};
    execute(&r, pw->p, db ? 4 : 3, args, pw->scratch);
    finish_out(&r, &pw->x[2], &e->wei, gw, data_of(dw));
    if (db && !r.failed) {
      float *d = data_of(db);
      for (int64_t k = 0; k < w->sizes[0]; k++) d[k] += gb[k];
    }
  } else if (db) {
    const fv_tensor *o = dout;
    bias_grad(data_of(db), data_of(o), o->sizes[0], o->sizes[1], o->sizes[2] * o->sizes[3]);
  }
  int status = r.failed ? exec_failed(&r) : FV_OK;
  run_done(&r);
  pthread_mutex_unlock(&lock);
  return status;
}

#endif
