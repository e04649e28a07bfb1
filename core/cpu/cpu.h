/* cpu/cpu.h: the CPU backend's kernels, gathered into fv_cpu_backend by cpu/backend.c. */
#ifndef FOVEA_CPU_H
#define FOVEA_CPU_H

#include "../internal.h"

/* Base address of element 0 of the storage behind t (offsets are added by the iterator). */
static inline char *fv_cpu_base(const fv_tensor *t) { return (char *)t->storage->data; }

void *fv_cpu_alloc(size_t bytes);
void fv_cpu_free(void *data, size_t bytes);
int fv_cpu_copy(fv_tensor *dst, const fv_tensor *src);
int fv_cpu_fill(fv_tensor *dst, double value);
int fv_cpu_binary(int op, fv_tensor *out, const fv_tensor *a, const fv_tensor *b);
int fv_cpu_binary_scalar(int op, fv_tensor *out, const fv_tensor *a, double s, int scalar_first);
int fv_cpu_unary(int op, fv_tensor *out, const fv_tensor *a, double lo, double hi);
int fv_cpu_reduce(int op, fv_tensor *out, fv_tensor *index, const fv_tensor *a, int64_t outer, int64_t n,
                  int64_t inner, int correction, int index_base);
int fv_cpu_matmul(fv_tensor *out, const fv_tensor *a, const fv_tensor *b);
int fv_cpu_random(int op, fv_tensor *out, uint64_t seed, uint64_t offset);
int fv_cpu_nn_forward(const fv_nn_call *call);
int fv_cpu_nn_backward(const fv_nn_call *call);
/* optimizer steps (core/optim.c, which also holds the front ends that check and dispatch) */
int fv_cpu_adam_step(int n, fv_tensor *const *params, fv_tensor *const *exp_avg, fv_tensor *const *exp_avg_sq,
                     fv_tensor *const *max_exp_avg_sq, const fv_adam_coef *c);
int fv_cpu_sgd_step(int n, fv_tensor *const *params, fv_tensor *const *momentum_buf, const fv_sgd_coef *c);
int fv_cpu_grad_norm_parts(int n, const fv_tensor *const *grads, int kind, double p, double *parts);
int fv_cpu_grad_scale(int n, fv_tensor *const *grads, double coef);

#endif
