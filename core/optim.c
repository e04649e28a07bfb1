/* optim.c: optimizer updates over many parameters in one call (fovea_optim.h): Adam and
 * AdamW, SGD with momentum, and gradient-norm clipping, on float32 and float64.
 *
 * Each entry point first checks every parameter it will touch (so that a failing call
 * changes nothing; every parameter with a gradient on one device), then calls that
 * device's backend table (adam_step, sgd_step, grad_norm_parts and grad_scale, see
 * internal.h; cuda/optim.cu on the GPU; clip_grad_norm hands each half the list of all
 * the gradients at once). The CPU's kernels below (fv_cpu_*) make one pass over each
 * tensor's memory, split between the OpenMP threads in equal ranges, with loops
 * specialised per option set so that they vectorise (Adam goes through its range in
 * blocks that stay in the L1 cache). The element formulas follow PyTorch's single-tensor
 * CPU implementations operation for operation (torch/optim/adam.py, adamw.py, sgd.py and
 * the ATen kernels they call: add with alpha is a + alpha * b, addcmul is
 * a + value * b * c, addcdiv is a + value * b / c), with the scalar coefficients rounded
 * to the element type as ATen does, so float64 trajectories match PyTorch's to rounding. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"
#include "fovea_optim.h"
#include "cpu/cpu.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#elif defined(__SSE__)
#include <xmmintrin.h>
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

/* Elements per tensor below which a pass stays on one thread. */
enum { PARALLEL_MIN = 32768 };

/* This thread's share [*lo, *lo + *len) of n elements, in runs of 64 (whole cache
 * lines and vectors), for a pass inside an omp parallel region. */
static inline void thread_range(int64_t n, int64_t *lo, int64_t *len) {
  int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
  int64_t units = (n + 63) / 64;
  int64_t per = units / threads, extra = units % threads;
  int64_t first = t * per + (t < extra ? t : extra);
  int64_t count = per + (t < extra);
  int64_t start = first * 64, end = (first + count) * 64;
  if (end > n) end = n;
  if (start > n) start = n;
  *lo = start;
  *len = end - start;
}

/* ---- checks ---- */

static int check_param(const char *op, int i, const fv_tensor *p) {
  if (!p) return fv_fail(FV_ERR_ARGUMENT, "%s: parameter %d is nil", op, i);
  if (!p->storage) return fv_fail(FV_ERR_FREED, "%s: parameter %d (%s) was freed by :free()", op, i, fv_shape_of(p));
  if (p->scalar_type != FV_FLOAT32 && p->scalar_type != FV_FLOAT64)
    return fv_fail(FV_ERR_DTYPE, "%s: parameter %d (%s %s) is not float32 or float64", op, i,
                   fv_dtype_name(p->scalar_type), fv_shape_of(p));
  if (!fv_tensor_is_contiguous(p))
    return fv_fail(FV_ERR_ARGUMENT, "%s: parameter %d (%s %s) is not contiguous", op, i,
                   fv_dtype_name(p->scalar_type), fv_shape_of(p));
  return FV_OK;
}

static int same_shape(const fv_tensor *a, const fv_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int d = 0; d < a->ndim; d++)
    if (a->sizes[d] != b->sizes[d]) return 0;
  return 1;
}

/* t (the gradient or a state tensor called what) against parameter i, p. */
static int check_companion(const char *op, int i, const char *what, const fv_tensor *p, const fv_tensor *t) {
  if (!t) return fv_fail(FV_ERR_ARGUMENT, "%s: parameter %d (%s %s): %s is nil", op, i, fv_dtype_name(p->scalar_type),
                         fv_shape_of(p), what);
  if (!t->storage)
    return fv_fail(FV_ERR_FREED, "%s: parameter %d (%s %s): %s was freed by :free()", op, i,
                   fv_dtype_name(p->scalar_type), fv_shape_of(p), what);
  if (!same_shape(p, t))
    return fv_fail(FV_ERR_SHAPE, "%s: parameter %d: %s has shape %s but the parameter has shape %s", op, i, what,
                   fv_shape_of(t), fv_shape_of(p));
  if (t->scalar_type != p->scalar_type)
    return fv_fail(FV_ERR_DTYPE, "%s: parameter %d (%s): %s is %s but the parameter is %s", op, i, fv_shape_of(p), what,
                   fv_dtype_name(t->scalar_type), fv_dtype_name(p->scalar_type));
  if (t->device_type != p->device_type || t->device_index != p->device_index)
    return fv_fail(FV_ERR_DEVICE, "%s: parameter %d (%s %s): %s is on %s, the parameter on %s", op, i,
                   fv_dtype_name(p->scalar_type), fv_shape_of(p), what, fv_device_name(t->device_type),
                   fv_device_name(p->device_type));
  if (!fv_tensor_is_contiguous(t))
    return fv_fail(FV_ERR_ARGUMENT, "%s: parameter %d (%s %s): %s is not contiguous", op, i,
                   fv_dtype_name(p->scalar_type), fv_shape_of(p), what);
  return FV_OK;
}

/* The tensors of parameter i that one fused pass reads and writes must not share memory
 * (the passes assume no overlap). names[k] names ts[k]; NULL entries are skipped. */
static int check_distinct(const char *op, int i, int count, const fv_tensor *const *ts, const char *const *names) {
  for (int a = 0; a < count; a++)
    for (int b = a + 1; b < count; b++)
      if (ts[a] && ts[b] && ts[a]->storage == ts[b]->storage)
        return fv_fail(FV_ERR_ARGUMENT, "%s: parameter %d (%s): %s and %s share memory", op, i, fv_shape_of(ts[0]),
                       names[a], names[b]);
  return FV_OK;
}

static int check_list(const char *op, int n, const void *list) {
  if (n < 0) return fv_fail(FV_ERR_ARGUMENT, "%s: parameter count %d is negative", op, n);
  if (n > 0 && !list) return fv_fail(FV_ERR_ARGUMENT, "%s: the parameter list is NULL", op);
  return FV_OK;
}

/* All parameters with a gradient must be on one device: *device (-1 before the first
 * such parameter) becomes the first one's, *first its index. */
static int check_device(const char *op, int i, const fv_tensor *t, int *device, int *first) {
  if (*device < 0) {
    *device = t->device_type;
    *first = i;
    return FV_OK;
  }
  if (t->device_type != *device)
    return fv_fail(FV_ERR_DEVICE,
                   "%s: parameter %d (%s) is on %s but parameter %d is on %s; the parameters of one optimizer "
                   "call must all be on one device",
                   op, i, fv_shape_of(t), fv_device_name(t->device_type), *first, fv_device_name(*device));
  return FV_OK;
}

/* The error for a backend without the optimizer entry op needs. */
static int not_on_device(const char *op, const fv_backend *be) {
  return fv_fail(FV_ERR_DEVICE, "%s: not implemented on %s yet", op, be->name);
}

/* ---- Adam / AdamW ---- */

typedef fv_adam_coef adam_coef; /* internal.h: shared with the other backends */

/* Square roots of n values in place. GCC does not vectorise sqrt in the update loops
 * (it keeps errno semantics unless built with -fno-math-errno), so they call this on
 * blocks of BLOCK_ELEMS values: vector instructions where the target has them. Every
 * variant is the correctly rounded square root, so results do not depend on which. */
enum { BLOCK_ELEMS = 256 };

static inline void sqrt_block_f32(float *x, int n) {
  int j = 0;
#if defined(__SSE__)
  for (; j + 4 <= n; j += 4) _mm_storeu_ps(x + j, _mm_sqrt_ps(_mm_loadu_ps(x + j)));
#elif defined(__aarch64__) && defined(__ARM_NEON)
  for (; j + 4 <= n; j += 4) vst1q_f32(x + j, vsqrtq_f32(vld1q_f32(x + j)));
#endif
  for (; j < n; j++) x[j] = sqrtf(x[j]);
}

static inline void sqrt_block_f64(double *x, int n) {
  int j = 0;
#if defined(__SSE2__)
  for (; j + 2 <= n; j += 2) _mm_storeu_pd(x + j, _mm_sqrt_pd(_mm_loadu_pd(x + j)));
#elif defined(__aarch64__) && defined(__ARM_NEON)
  for (; j + 2 <= n; j += 2) vst1q_f64(x + j, vsqrtq_f64(vld1q_f64(x + j)));
#endif
  for (; j < n; j++) x[j] = sqrt(x[j]);
}

/* The Adam update of p, g, m, v (and vmax) over n elements, coefficients rounded to T,
 * in blocks: the moments (a vectorised loop that leaves the second moment in s), their
 * square roots, then the parameter (vectorised). The body is inlined once per
 * (weight-decay mode, amsgrad) so that the loops are branch-free; the checks guarantee
 * that the arrays do not overlap. */
enum { WD_NONE, WD_COUPLED, WD_DECOUPLED };

#define DEFINE_ADAM(T, NAME, SQRT_BLOCK)                                                                 \
  static inline __attribute__((always_inline)) void NAME##_body(                                       \
      int64_t n, T *restrict p, const T *restrict g, T *restrict m, T *restrict v, T *restrict vmax,   \
      const adam_coef *c, const int wd_mode, const int amsgrad) {                                      \
    const T wd = (T)c->weight_decay, decay = (T)(1.0 - c->lr * c->weight_decay);                       \
    const T beta1 = (T)c->beta1, one_minus_beta1 = (T)(1.0 - c->beta1);                                \
    const T beta2 = (T)c->beta2, one_minus_beta2 = (T)(1.0 - c->beta2);                                \
    const T eps = (T)c->eps, neg_step_size = (T)(-c->step_size), bc2 = (T)c->bias_correction2_sqrt;    \
    T s[BLOCK_ELEMS];                                                                                  \
    for (int64_t start = 0; start < n; start += BLOCK_ELEMS) {                                         \
      const int len = n - start < BLOCK_ELEMS ? (int)(n - start) : BLOCK_ELEMS;                        \
      T *restrict pb = p + start, *restrict mb = m + start, *restrict vb = v + start;                  \
      const T *restrict gb = g + start;                                                                \
      T *restrict xb = amsgrad ? vmax + start : NULL;                                                  \
      _Pragma("omp simd")                                                                              \
      for (int j = 0; j < len; j++) {                                                                  \
        T grad = gb[j];                                                                                \
        if (wd_mode == WD_COUPLED) grad = grad + wd * pb[j];                                           \
        T mi = mb[j] * beta1 + one_minus_beta1 * grad;                                                 \
        T vi = vb[j] * beta2 + one_minus_beta2 * grad * grad;                                          \
        mb[j] = mi;                                                                                    \
        vb[j] = vi;                                                                                    \
        if (amsgrad) {                                                                                 \
          T old = xb[j];                                                                               \
          vi = ((old > vi) | (old != old)) ? old : vi;                                                 \
          xb[j] = vi;                                                                                  \
        }                                                                                              \
        s[j] = vi;                                                                                     \
      }                                                                                                \
      SQRT_BLOCK(s, len);                                                                              \
      _Pragma("omp simd")                                                                              \
      for (int j = 0; j < len; j++) {                                                                  \
        T param = pb[j];                                                                               \
        if (wd_mode == WD_DECOUPLED) param = param * decay;                                            \
        T denom = s[j] / bc2 + eps;                                                                    \
        pb[j] = param + neg_step_size * mb[j] / denom;                                                 \
      }                                                                                                \
    }                                                                                                  \
  }                                                                                                    \
  /* one thread's range: picks the specialised body */                                             \
  static __attribute__((noinline)) void NAME##_range(int variant, int64_t len, T *p, const T *g, T *m, \
                                                     T *v, T *vm, const adam_coef *c) {                \
    switch (variant) {                                                                                 \
    case 0: NAME##_body(len, p, g, m, v, vm, c, WD_NONE, 0); break;                                    \
    case 1: NAME##_body(len, p, g, m, v, vm, c, WD_NONE, 1); break;                                    \
    case 2: NAME##_body(len, p, g, m, v, vm, c, WD_COUPLED, 0); break;                                 \
    case 3: NAME##_body(len, p, g, m, v, vm, c, WD_COUPLED, 1); break;                                 \
    case 4: NAME##_body(len, p, g, m, v, vm, c, WD_DECOUPLED, 0); break;                               \
    default: NAME##_body(len, p, g, m, v, vm, c, WD_DECOUPLED, 1); break;                              \
    }                                                                                                  \
  }                                                                                                    \
  static void NAME(int64_t n, T *p, const T *g, T *m, T *v, T *vmax, const adam_coef *c) {             \
    const int variant = (c->weight_decay == 0 ? WD_NONE : c->decoupled ? WD_DECOUPLED : WD_COUPLED) * 2 \
                        + (c->amsgrad != 0);                                                           \
    _Pragma("omp parallel if (n > PARALLEL_MIN)")                                                      \
    {                                                                                                  \
      int64_t lo, len;                                                                                 \
      thread_range(n, &lo, &len);                                                                      \
      if (len > 0) NAME##_range(variant, len, p + lo, g + lo, m + lo, v + lo, vmax ? vmax + lo : NULL, c); \
    }                                                                                                  \
  }

DEFINE_ADAM(float, adam_f32, sqrt_block_f32)
DEFINE_ADAM(double, adam_f64, sqrt_block_f64)

int fv_adam_step(int n, fv_tensor *const *params, fv_tensor *const *exp_avg, fv_tensor *const *exp_avg_sq,
                 fv_tensor *const *max_exp_avg_sq, int64_t step, double lr, double beta1, double beta2,
                 double eps, double weight_decay, int decoupled, int amsgrad) {
  const char *op = decoupled ? "adamw_step" : "adam_step";
  FV_TRY(check_list(op, n, params));
  if (!(lr >= 0)) return fv_fail(FV_ERR_ARGUMENT, "%s: invalid learning rate %g (must be >= 0)", op, lr);
  if (!(eps >= 0)) return fv_fail(FV_ERR_ARGUMENT, "%s: invalid eps %g (must be >= 0)", op, eps);
  if (!(beta1 >= 0 && beta1 < 1)) return fv_fail(FV_ERR_ARGUMENT, "%s: invalid beta1 %g (must be in [0, 1))", op, beta1);
  if (!(beta2 >= 0 && beta2 < 1)) return fv_fail(FV_ERR_ARGUMENT, "%s: invalid beta2 %g (must be in [0, 1))", op, beta2);
  if (!(weight_decay >= 0))
    return fv_fail(FV_ERR_ARGUMENT, "%s: invalid weight_decay %g (must be >= 0)", op, weight_decay);
  if (step < 1) return fv_fail(FV_ERR_ARGUMENT, "%s: step %lld must be >= 1 (the count after this update)", op,
                               (long long)step);
  if (n > 0 && (!exp_avg || !exp_avg_sq))
    return fv_fail(FV_ERR_ARGUMENT, "%s: exp_avg and exp_avg_sq lists are required", op);
  if (n > 0 && amsgrad && !max_exp_avg_sq)
    return fv_fail(FV_ERR_ARGUMENT, "%s: amsgrad needs the max_exp_avg_sq list", op);

  int device = -1, first = 0;
  for (int i = 0; i < n; i++) {
    const fv_tensor *p = params[i];
    FV_TRY(check_param(op, i, p));
    if (!p->gradient) continue;
    FV_TRY(check_device(op, i, p, &device, &first));
    FV_TRY(check_companion(op, i, "gradient", p, p->gradient));
    FV_TRY(check_companion(op, i, "exp_avg", p, exp_avg[i]));
    FV_TRY(check_companion(op, i, "exp_avg_sq", p, exp_avg_sq[i]));
    if (amsgrad) FV_TRY(check_companion(op, i, "max_exp_avg_sq", p, max_exp_avg_sq[i]));
    const fv_tensor *ts[5] = {p, p->gradient, exp_avg[i], exp_avg_sq[i], amsgrad ? max_exp_avg_sq[i] : NULL};
    static const char *const names[5] = {"the parameter", "the gradient", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    FV_TRY(check_distinct(op, i, 5, ts, names));
  }

  adam_coef c;
  c.lr = lr;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.eps = eps;
  c.weight_decay = weight_decay;
  c.decoupled = decoupled != 0;
  c.amsgrad = amsgrad != 0;
  c.step_size = lr / (1.0 - pow(beta1, (double)step));
  c.bias_correction2_sqrt = sqrt(1.0 - pow(beta2, (double)step));

  if (device < 0) return FV_OK; /* no gradients */
  const fv_backend *be = fv_backend_for(op, device);
  if (!be) return fv_last_status();
  if (!be->adam_step) return not_on_device(op, be);
  return be->adam_step(n, params, exp_avg, exp_avg_sq, amsgrad ? max_exp_avg_sq : NULL, &c);
}

/* The CPU's Adam over checked parameters (fv_backend.adam_step). */
int fv_cpu_adam_step(int n, fv_tensor *const *params, fv_tensor *const *exp_avg, fv_tensor *const *exp_avg_sq,
                     fv_tensor *const *max_exp_avg_sq, const fv_adam_coef *cp) {
  const fv_adam_coef c = *cp;
  const int amsgrad = c.amsgrad;
  for (int i = 0; i < n; i++) {
    fv_tensor *p = params[i];
    if (!p->gradient) continue;
    int64_t count = fv_tensor_numel(p);
    void *vmax = amsgrad ? fv_tensor_data(max_exp_avg_sq[i]) : NULL;
    if (p->scalar_type == FV_FLOAT32)
      adam_f32(count, fv_tensor_data(p), fv_tensor_data(p->gradient), fv_tensor_data(exp_avg[i]),
               fv_tensor_data(exp_avg_sq[i]), vmax, &c);
    else
      adam_f64(count, fv_tensor_data(p), fv_tensor_data(p->gradient), fv_tensor_data(exp_avg[i]),
               fv_tensor_data(exp_avg_sq[i]), vmax, &c);
  }
  return FV_OK;
}

/* ---- SGD ---- */

typedef fv_sgd_coef sgd_coef;

/* As for Adam: one branch-free body per (weight decay, momentum kind). */
enum { MOM_NONE, MOM_FIRST, MOM_PLAIN, MOM_FIRST_NESTEROV, MOM_NESTEROV };

#define DEFINE_SGD(T, NAME)                                                                              \
  static inline __attribute__((always_inline)) void NAME##_body(                                       \
      int64_t n, T *restrict p, const T *restrict g, T *restrict buf, const sgd_coef *c,               \
      const int decay, const int mode) {                                                               \
    const T wd = (T)c->weight_decay, mom = (T)c->momentum, one_minus_damp = (T)(1.0 - c->dampening);   \
    const T neg_lr = (T)(-c->lr);                                                                      \
    _Pragma("omp simd")                                                                                \
    for (int64_t i = 0; i < n; i++) {                                                                  \
      T param = p[i], d = g[i];                                                                        \
      if (decay) d = d + wd * param;                                                                   \
      if (mode != MOM_NONE) {                                                                          \
        T b = (mode == MOM_FIRST || mode == MOM_FIRST_NESTEROV) ? d : buf[i] * mom + one_minus_damp * d; \
        buf[i] = b;                                                                                    \
        d = (mode == MOM_FIRST_NESTEROV || mode == MOM_NESTEROV) ? d + mom * b : b;                    \
      }                                                                                                \
      p[i] = param + neg_lr * d;                                                                       \
    }                                                                                                  \
  }                                                                                                    \
  static void NAME(int64_t n, T *p, const T *g, T *buf, const sgd_coef *c) {                           \
    int mode = c->momentum == 0 ? MOM_NONE                                                             \
               : c->nesterov    ? (c->first_step ? MOM_FIRST_NESTEROV : MOM_NESTEROV)                  \
                                : (c->first_step ? MOM_FIRST : MOM_PLAIN);                             \
    const int variant = mode * 2 + (c->weight_decay != 0);                                             \
    _Pragma("omp parallel if (n > PARALLEL_MIN)")                                                      \
    {                                                                                                  \
      int64_t lo, len;                                                                                 \
      thread_range(n, &lo, &len);                                                                      \
      T *b = buf && len > 0 ? buf + lo : NULL;                                                         \
      if (len > 0) switch (variant) {                                                                  \
      case 0: NAME##_body(len, p + lo, g + lo, b, c, 0, MOM_NONE); break;                              \
      case 1: NAME##_body(len, p + lo, g + lo, b, c, 1, MOM_NONE); break;                              \
      case 2: NAME##_body(len, p + lo, g + lo, b, c, 0, MOM_FIRST); break;                             \
      case 3: NAME##_body(len, p + lo, g + lo, b, c, 1, MOM_FIRST); break;                             \
      case 4: NAME##_body(len, p + lo, g + lo, b, c, 0, MOM_PLAIN); break;                             \
      case 5: NAME##_body(len, p + lo, g + lo, b, c, 1, MOM_PLAIN); break;                             \
      case 6: NAME##_body(len, p + lo, g + lo, b, c, 0, MOM_FIRST_NESTEROV); break;                    \
      case 7: NAME##_body(len, p + lo, g + lo, b, c, 1, MOM_FIRST_NESTEROV); break;                    \
      case 8: NAME##_body(len, p + lo, g + lo, b, c, 0, MOM_NESTEROV); break;                          \
      default: NAME##_body(len, p + lo, g + lo, b, c, 1, MOM_NESTEROV); break;                         \
      }                                                                                                \
    }                                                                                                  \
  }

DEFINE_SGD(float, sgd_f32)
DEFINE_SGD(double, sgd_f64)

int fv_sgd_step(int n, fv_tensor *const *params, fv_tensor *const *momentum_buf, double lr, double momentum,
                double dampening, double weight_decay, int nesterov, int first_step) {
  const char *op = "sgd_step";
  FV_TRY(check_list(op, n, params));
  if (!(lr >= 0)) return fv_fail(FV_ERR_ARGUMENT, "%s: invalid learning rate %g (must be >= 0)", op, lr);
  if (!(momentum >= 0)) return fv_fail(FV_ERR_ARGUMENT, "%s: invalid momentum %g (must be >= 0)", op, momentum);
  if (!(weight_decay >= 0))
    return fv_fail(FV_ERR_ARGUMENT, "%s: invalid weight_decay %g (must be >= 0)", op, weight_decay);
  if (dampening != dampening) return fv_fail(FV_ERR_ARGUMENT, "%s: invalid dampening %g", op, dampening);
  if (nesterov && (momentum <= 0 || dampening != 0))
    return fv_fail(FV_ERR_ARGUMENT, "%s: nesterov momentum needs momentum > 0 and dampening 0 (got %g and %g)", op,
                   momentum, dampening);
  if (n > 0 && momentum != 0 && !momentum_buf)
    return fv_fail(FV_ERR_ARGUMENT, "%s: momentum %g needs the momentum_buf list", op, momentum);

  int device = -1, first = 0;
  for (int i = 0; i < n; i++) {
    const fv_tensor *p = params[i];
    FV_TRY(check_param(op, i, p));
    if (!p->gradient) continue;
    FV_TRY(check_device(op, i, p, &device, &first));
    FV_TRY(check_companion(op, i, "gradient", p, p->gradient));
    if (momentum != 0) FV_TRY(check_companion(op, i, "momentum_buffer", p, momentum_buf[i]));
    const fv_tensor *ts[3] = {p, p->gradient, momentum != 0 ? momentum_buf[i] : NULL};
    static const char *const names[3] = {"the parameter", "the gradient", "momentum_buffer"};
    FV_TRY(check_distinct(op, i, 3, ts, names));
  }

  sgd_coef c = {lr, momentum, dampening, weight_decay, nesterov != 0, first_step != 0};
  if (device < 0) return FV_OK; /* no gradients */
  const fv_backend *be = fv_backend_for(op, device);
  if (!be) return fv_last_status();
  if (!be->sgd_step) return not_on_device(op, be);
  return be->sgd_step(n, params, momentum != 0 ? momentum_buf : NULL, &c);
}

/* The CPU's SGD over checked parameters (fv_backend.sgd_step). */
int fv_cpu_sgd_step(int n, fv_tensor *const *params, fv_tensor *const *momentum_buf, const fv_sgd_coef *c) {
  const double momentum = c->momentum;
  for (int i = 0; i < n; i++) {
    fv_tensor *p = params[i];
    if (!p->gradient) continue;
    int64_t count = fv_tensor_numel(p);
    void *buf = momentum != 0 ? fv_tensor_data(momentum_buf[i]) : NULL;
    if (p->scalar_type == FV_FLOAT32)
      sgd_f32(count, fv_tensor_data(p), fv_tensor_data(p->gradient), buf, c);
    else
      sgd_f64(count, fv_tensor_data(p), fv_tensor_data(p->gradient), buf, c);
  }
  return FV_OK;
}

/* ---- gradient-norm clipping ---- */

/* Sums (or maxima) over fixed blocks of BLOCK elements, combined in block order: the
 * result does not depend on the thread count. */
enum { BLOCK = FV_NORM_BLOCK, BLOCKS_PER_ROUND = 256 };
enum { NORM_INF = FV_NORM_INF, NORM_ONE = FV_NORM_ONE, NORM_TWO = FV_NORM_TWO, NORM_P = FV_NORM_P };

/* Largest magnitude, NaN winning (as torch.max). */
static inline double nan_max(double m, double a) { return (a > m || a != a) ? a : m; }

#define DEFINE_NORM_BLOCK(T, NAME, FABS)                                                                 \
  static double NAME(const T *g, int64_t n, int kind, double p) {                                      \
    double acc = 0;                                                                                    \
    switch (kind) {                                                                                    \
    case NORM_INF:                                                                                     \
      for (int64_t i = 0; i < n; i++) acc = nan_max(acc, FABS(g[i]));                                  \
      break;                                                                                           \
    case NORM_ONE:                                                                                     \
      _Pragma("omp simd reduction(+ : acc)")                                                           \
      for (int64_t i = 0; i < n; i++) acc += FABS((double)g[i]);                                       \
      break;                                                                                           \
    case NORM_TWO:                                                                                     \
      _Pragma("omp simd reduction(+ : acc)")                                                           \
      for (int64_t i = 0; i < n; i++) acc += (double)g[i] * (double)g[i];                              \
      break;                                                                                           \
    default:                                                                                           \
      for (int64_t i = 0; i < n; i++) acc += pow(fabs((double)g[i]), p);                               \
    }                                                                                                  \
    return acc;                                                                                        \
  }

DEFINE_NORM_BLOCK(float, norm_block_f32, fabs)
DEFINE_NORM_BLOCK(double, norm_block_f64, fabs)

/* The sum of |g|^p (or the largest |g|) over g's elements. */
static double norm_accumulate(const fv_tensor *g, int kind, double p) {
  int64_t n = fv_tensor_numel(g);
  const void *data = fv_tensor_data(g);
  int f32 = g->scalar_type == FV_FLOAT32;
  int64_t blocks = (n + BLOCK - 1) / BLOCK;
  double total = 0;
  for (int64_t first = 0; first < blocks; first += BLOCKS_PER_ROUND) {
    int64_t count = blocks - first < BLOCKS_PER_ROUND ? blocks - first : BLOCKS_PER_ROUND;
    double part[BLOCKS_PER_ROUND];
#pragma omp parallel for schedule(static) if (count > 1 && n > PARALLEL_MIN)
    for (int64_t b = 0; b < count; b++) {
      int64_t start = (first + b) * BLOCK;
      int64_t len = n - start < BLOCK ? n - start : BLOCK;
      part[b] = f32 ? norm_block_f32((const float *)data + start, len, kind, p)
                    : norm_block_f64((const double *)data + start, len, kind, p);
    }
    for (int64_t b = 0; b < count; b++) total = kind == NORM_INF ? nan_max(total, part[b]) : total + part[b];
  }
  return total;
}

#define DEFINE_SCALE(T, NAME)                                                                            \
  static void NAME(T *g, int64_t n, double coef) {                                                     \
    const T c = (T)coef;                                                                               \
    _Pragma("omp parallel for schedule(static) if (n > PARALLEL_MIN)")                                 \
    for (int64_t i = 0; i < n; i++) g[i] = g[i] * c;                                                   \
  }

DEFINE_SCALE(float, scale_f32)
DEFINE_SCALE(double, scale_f64)

/* The CPU's halves of clip_grad_norm (fv_backend.grad_norm_parts, grad_scale): a tensor
 * at a time, each split between the threads as above. */
int fv_cpu_grad_norm_parts(int n, const fv_tensor *const *grads, int kind, double p, double *parts) {
  for (int i = 0; i < n; i++) parts[i] = norm_accumulate(grads[i], kind, p);
  return FV_OK;
}

int fv_cpu_grad_scale(int n, fv_tensor *const *grads, double coef) {
  for (int i = 0; i < n; i++) {
    fv_tensor *g = grads[i];
    if (g->scalar_type == FV_FLOAT32) scale_f32(fv_tensor_data(g), fv_tensor_numel(g), coef);
    else scale_f64(fv_tensor_data(g), fv_tensor_numel(g), coef);
  }
  return FV_OK;
}

int fv_clip_grad_norm(int n, fv_tensor *const *params, double max_norm, double norm_type, double *total_norm_out) {
  const char *op = "clip_grad_norm";
  FV_TRY(check_list(op, n, params));
  int kind;
  if (isinf(norm_type) && norm_type > 0) kind = NORM_INF;
  else if (norm_type == 1) kind = NORM_ONE;
  else if (norm_type == 2) kind = NORM_TWO;
  else if (norm_type > 0 && isfinite(norm_type)) kind = NORM_P;
  else return fv_fail(FV_ERR_ARGUMENT, "%s: norm_type %g is not supported (a number > 0, or inf)", op, norm_type);
  if (max_norm != max_norm) return fv_fail(FV_ERR_ARGUMENT, "%s: max_norm is NaN", op);

  int device = -1, first = 0, count = 0;
  for (int i = 0; i < n; i++) {
    const fv_tensor *p = params[i];
    if (!p) return fv_fail(FV_ERR_ARGUMENT, "%s: parameter %d is nil", op, i);
    const fv_tensor *g = p->gradient;
    if (!g) continue;
    if (!g->storage) return fv_fail(FV_ERR_FREED, "%s: parameter %d: gradient %s was freed by :free()", op, i,
                                    fv_shape_of(g));
    if (g->scalar_type != FV_FLOAT32 && g->scalar_type != FV_FLOAT64)
      return fv_fail(FV_ERR_DTYPE, "%s: parameter %d: gradient %s %s is not float32 or float64", op, i,
                     fv_dtype_name(g->scalar_type), fv_shape_of(g));
    FV_TRY(check_device(op, i, g, &device, &first));
    if (!fv_tensor_is_contiguous(g))
      return fv_fail(FV_ERR_ARGUMENT, "%s: parameter %d: gradient %s is not contiguous", op, i, fv_shape_of(g));
    count++;
  }
  if (device < 0) {
    if (total_norm_out) *total_norm_out = 0;
    return FV_OK;
  }

  const fv_backend *be = fv_backend_for(op, device);
  if (!be) return fv_last_status();
  if (!(be->grad_norm_parts && be->grad_scale)) return not_on_device(op, be);

  /* The gradients, in parameter order, and their parts: one backend call for each half. */
  void *mem = malloc((size_t)count * (sizeof(fv_tensor *) + sizeof(double)));
  if (!mem) return fv_fail(FV_ERR_MEMORY, "%s: out of host memory for the list of %d gradients", op, count);
  double *parts = (double *)mem;
  fv_tensor **grads = (fv_tensor **)(parts + count);
  for (int i = 0, j = 0; i < n; i++)
    if (params[i]->gradient) grads[j++] = params[i]->gradient;

  int status = be->grad_norm_parts(count, (const fv_tensor *const *)grads, kind, norm_type, parts);
  double total = 0;
  if (status == FV_OK) {
    for (int j = 0; j < count; j++) total = kind == NORM_INF ? nan_max(total, parts[j]) : total + parts[j];
    if (kind == NORM_TWO) total = sqrt(total);
    else if (kind == NORM_P) total = pow(total, 1.0 / norm_type);
    double coef = max_norm / (total + 1e-6);
    if (coef < 1.0 || coef != coef) status = be->grad_scale(count, grads, coef);
  }
  free(mem);
  if (status == FV_OK && total_norm_out) *total_norm_out = total;
  return status;
}
