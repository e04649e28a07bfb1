/* nn_generic.h: type template for the nn kernel files (core/cpu/nn_*.c).
 *
 * No include guard on purpose: a kernel file includes it once per element type,
 * each time followed by its template body (nn_*.inc), like this:
 *
 *   #define NN_DOUBLE 0
 *   #include "nn_generic.h"      T = float,  FN(x) = x##_f32
 *   #include "nn_conv2d.inc"
 *   #undef NN_DOUBLE
 *   #define NN_DOUBLE 1
 *   #include "nn_generic.h"      T = double, FN(x) = x##_f64
 *   #include "nn_conv2d.inc"
 *
 * T      element type
 * ACC    accumulator type for sums (double for both: PyTorch's CPU acc_type of float)
 * FN(x)  public name with the type suffix; SFN(x) the same for file-local helpers
 * GEMM   cblas_sgemm / cblas_dgemm
 * EXP, LOG, SQRT, FLOOR  math functions of T
 *
 * NN_PAR_MIN: parallel loops carry `if (work >= NN_PAR_MIN)`, work in element visits:
 * waking the OpenMP team costs tens of microseconds, more than small loops take. */
#ifndef NN_PAR_MIN
#define NN_PAR_MIN 32768
#endif
#undef T
#undef ACC
#undef FN
#undef SFN
#undef NN_CAT_
#undef GEMM
#undef EXP
#undef LOG
#undef SQRT
#undef FLOOR

#define NN_CAT_(a, b) a##b
#define ACC double
#if NN_DOUBLE
#define T double
#define FN(x) NN_CAT_(x, _f64)
#define SFN(x) NN_CAT_(x, _f64_)
#define GEMM cblas_dgemm
#define EXP exp
#define LOG log
#define SQRT sqrt
#define FLOOR floor
#else
#define T float
#define FN(x) NN_CAT_(x, _f32)
#define SFN(x) NN_CAT_(x, _f32_)
#define GEMM cblas_sgemm
#define EXP expf
#define LOG logf
#define SQRT sqrtf
#define FLOOR floorf
#endif
