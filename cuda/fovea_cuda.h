/* fovea_cuda.h: the public C API of libfovea_cuda.so, the CUDA backend of fovea.
 *
 * Read as it is by LuaJIT's ffi.cdef (lua/fovea/cuda.lua, only once the library has
 * loaded), so like core/fovea.h it holds no macros, no includes and no include guard.
 * C users include <stdint.h> and fovea.h first, and link with -lfovea_cuda -lfovea.
 *
 * Statuses and messages are fovea's (fv_status, fv_last_error()). Nothing here aborts:
 * a missing driver or GPU, a failed CUDA call or an exhausted GPU memory come back as
 * FV_ERR_DEVICE or FV_ERR_MEMORY with CUDA's own words, the file and line of the call and
 * the op that made it.
 *
 * Example
 *   if (fv_cuda_init() != FV_OK) fprintf(stderr, "no GPU: %s\n", fv_last_error());
 *   else fv_to_device(&g, t, FV_CUDA);   // ops on g now run on the GPU
 */

/* Finds the GPU (device 0), makes it current and registers the CUDA backend with the
 * core (fv_device_available(FV_CUDA) becomes 1). FV_ERR_DEVICE with a message when
 * cudaGetDeviceCount fails (no driver) or finds no device. Calling it again is cheap. */
int fv_cuda_init(void);
/* GPUs visible to the CUDA runtime; 0 when there are none or the runtime cannot tell. */
int fv_cuda_device_count(void);
/* Gives the caching allocator's free blocks back to the driver. */
void fv_cuda_empty_cache(void);
/* Bytes of the caching allocator: allocated (blocks in use, rounded sizes), reserved
 * (taken from the driver: in use plus cached), peak (the most allocated since the start
 * or fv_cuda_reset_peak). Any pointer may be NULL. */
int fv_cuda_memory_stats(int64_t *allocated, int64_t *reserved, int64_t *peak);
void fv_cuda_reset_peak(void);
/* TF32 tensor-core math for float32 matmul (cuBLAS), on (1) by default; returns the
 * previous setting. float64 is never affected. */
int fv_cuda_set_tf32(int enabled);
/* bf16 autocast, off (0) by default: float32 convolutions (cuDNN) and NAM attention on
 * the GPU take bfloat16 operands with float32 accumulation, while tensors, parameters and
 * gradients stay float32 (float32 master weights). Overrides TF32 for those ops; other ops
 * are unchanged. Returns the previous setting. */
int fv_cuda_set_autocast(int bf16);
/* Waits until the GPU has finished all work (for timings); reports any pending error.
 * Also releases the sources of every finished asynchronous upload (see below). */
int fv_cuda_synchronize(void);

/* Pinned host memory (cuda/transfer.cu): fv_pin_memory(&p, t, FV_CUDA) and the loader's
 * pin_memory take page-locked blocks from a cache (sizes rounded, cudaHostAlloc only when
 * none is free); a contiguous pinned tensor goes to the GPU by fv_to_device as an
 * asynchronous copy on a separate stream that the compute stream waits for, its storage
 * held until the copy has completed (checked at each upload and by fv_cuda_synchronize).
 * fv_cuda_pinned_stats: bytes of pinned blocks in use (rounded) and cached (free), blocks
 * handed out since the start (cached or new), uploads still held as in flight. Any
 * pointer may be NULL. fv_cuda_pinned_empty_cache gives the wholly free segments of
 * pinned memory back (cudaFreeHost). */
int fv_cuda_pinned_stats(int64_t *in_use, int64_t *cached, int64_t *allocations, int64_t *in_flight);
void fv_cuda_pinned_empty_cache(void);

/* The per-op profiler (cuda/profile.cu), on when FOVEA_CUDA_PROFILE is set to anything
 * but "" or "0" as fv_cuda_init runs (read once there; off, the backend runs unwrapped).
 * On, every backend call is timed with CUDA events and synchronized, and counted per op
 * ("nn conv2d backward", "binary add", "adam_step", ...): calls, GPU milliseconds, host
 * milliseconds (the wait included).
 * fv_cuda_profile_report writes the table, sorted by GPU time (op, calls, gpu ms, host ms,
 * gpu ms per call, share of the GPU total), into buf as snprintf would: at most size bytes
 * with the NUL, and returns the whole report's length (buf NULL and size 0 ask for it);
 * -1 with fv_last_error() set when the profiler is off. fv_cuda_profile_reset zeroes the
 * counts (nothing when off). */
int fv_cuda_profile_report(char *buf, size_t size);
void fv_cuda_profile_reset(void);
