/* philox.c: the counter-based generator behind rand and randn (the shared code is in
 * philox.h). Element i of a draw depends only on (seed, offset + i), so any device or
 * thread count reproduces the same numbers. */
#include "internal.h"
#include "philox.h"

void fv_philox4x32(uint64_t counter, uint64_t seed, uint32_t out[4]) { fv_philox_block(counter, seed, out); }

double fv_philox_uniform(uint64_t seed, uint64_t offset, uint64_t i) { return fv_philox_draw(0, seed, offset, i); }

double fv_philox_normal(uint64_t seed, uint64_t offset, uint64_t i) { return fv_philox_draw(1, seed, offset, i); }
