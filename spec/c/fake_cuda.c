/* fake_cuda.c: a stand-in libfovea_cuda.so with the API of cuda/fovea_cuda.h over the
 * fake backend of fake_device.h (host memory, the CPU's kernels). With it,
 * spec/cuda_spec.lua runs on a machine without a GPU, which checks the spec itself and
 * everything around the kernels: lua/fovea/cuda.lua's loading, device moves, cross-device
 * copies, module moves, pinned memory and uploads (retained sources), statistics and error
 * paths. spec/cuda_plumbing_spec.lua does
 * this as part of `make test`; by hand:
 *   make fake-cuda && FOVEA_CUDA_LIB=$PWD/build/spec/fake-cuda/libfovea_cuda.so \
 *     busted --lua=luajit --tags gpu spec/cuda_spec.lua
 * It says nothing about the real CUDA kernels: those need a GPU (cuda/gpu_check.sh). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "fake_device.h"
#include "../../cuda/fovea_cuda.h"

static int tf32 = 1;
static int autocast; /* fv_cuda_set_autocast: recorded, no effect on the CPU kernels */
/* what a caching allocator would hold: the most allocated since the last empty_cache, or
 * with FOVEA_NO_ALLOC_CACHE=1 (the cache off, as cuda/allocator.cu) what is allocated */
static int64_t reserved;

static int64_t fake_reserved(void) {
  const char *no_cache = getenv("FOVEA_NO_ALLOC_CACHE");
  if (fake_allocated > reserved || (no_cache && !strcmp(no_cache, "1"))) reserved = fake_allocated;
  return reserved;
}

int fv_cuda_init(void) {
  const char *fail = getenv("FOVEA_FAKE_CUDA_FAIL"); /* to check the no-GPU path */
  if (fail && *fail) return fv_fail(FV_ERR_DEVICE, "cuda: no usable GPU: %s", fail);
  return fv_backend_register(&fake_backend);
}

int fv_cuda_device_count(void) { return 1; }
void fv_cuda_empty_cache(void) { reserved = fake_allocated; }

int fv_cuda_memory_stats(int64_t *allocated, int64_t *reserved_out, int64_t *peak) {
  if (allocated) *allocated = fake_allocated;
  if (reserved_out) *reserved_out = fake_reserved();
  if (peak) *peak = fake_peak;
  return FV_OK;
}

void fv_cuda_reset_peak(void) { fake_peak = fake_allocated; }

int fv_cuda_set_tf32(int enabled) {
  int previous = tf32;
  tf32 = enabled != 0;
  return previous;
}

int fv_cuda_set_autocast(int bf16) {
  int previous = autocast;
  autocast = bf16 != 0;
  return previous;
}

/* Every upload has completed: their sources are released, as by the real one. */
int fv_cuda_synchronize(void) {
  fake_settle();
  return FV_OK;
}

/* Pinned blocks are plain malloc here: nothing cached. */
int fv_cuda_pinned_stats(int64_t *in_use, int64_t *cached, int64_t *allocations, int64_t *in_flight) {
  if (in_use) *in_use = __atomic_load_n(&fake_pinned_bytes, __ATOMIC_RELAXED);
  if (cached) *cached = 0;
  if (allocations) *allocations = __atomic_load_n(&fake_pinned_allocs, __ATOMIC_RELAXED);
  if (in_flight) *in_flight = fake_flight_count;
  return FV_OK;
}

void fv_cuda_pinned_empty_cache(void) {}

/* The stand-in has no profiler (cuda/profile.cu times CUDA events): always off. */
int fv_cuda_profile_report(char *buf, size_t size) {
  (void)buf;
  (void)size;
  fv_fail(FV_ERR_ARGUMENT, "cuda profile: the profiler is off (the stand-in backend has none)");
  return -1;
}

void fv_cuda_profile_reset(void) {}
