/* cpu/backend.c: the CPU backend table (allocation through the caching allocator in
 * cpu/alloc.c), the supports query, and the thread count shared by OpenMP kernels and
 * OpenBLAS. */
#include <dlfcn.h>
#include <omp.h>

#include "cpu.h"

static int cpu_supports(int op, int dtype) {
  if (op == FV_OP_COPY || op == FV_OP_FILL)
    return dtype == FV_FLOAT32 || dtype == FV_FLOAT64 || dtype == FV_INT64 || dtype == FV_UINT8;
  return dtype == FV_FLOAT32 || dtype == FV_FLOAT64;
}

const fv_backend fv_cpu_backend = {
    .name = "cpu",
    .device_type = FV_CPU,
    .supports = cpu_supports,
    .alloc = fv_cpu_alloc,
    .free = fv_cpu_free,
    .copy = fv_cpu_copy,
    .fill = fv_cpu_fill,
    .to_host = NULL,
    .from_host = NULL,
    .binary = fv_cpu_binary,
    .binary_scalar = fv_cpu_binary_scalar,
    .unary = fv_cpu_unary,
    .reduce = fv_cpu_reduce,
    .matmul = fv_cpu_matmul,
    .random = fv_cpu_random,
    .nn_forward = fv_cpu_nn_forward,
    .nn_backward = fv_cpu_nn_backward,
    .adam_step = fv_cpu_adam_step,
    .sgd_step = fv_cpu_sgd_step,
    .grad_norm_parts = fv_cpu_grad_norm_parts,
    .grad_scale = fv_cpu_grad_scale,
};

/* OpenBLAS exports openblas_set_num_threads; another BLAS may not, so look it up. */
int fv_set_num_threads(int n) {
  if (n < 1) return fv_fail(FV_ERR_ARGUMENT, "set_num_threads: %d threads requested (at least 1)", n);
  omp_set_num_threads(n);
  void (*set_blas_threads)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
  if (set_blas_threads) set_blas_threads(n);
  return FV_OK;
}

int fv_get_num_threads(void) { return omp_get_max_threads(); }
