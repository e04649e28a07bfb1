/* block_pool.h: the bookkeeping of the CUDA caching allocator for one stream, in plain C
 * with no CUDA in it, so that spec/c/test_block_pool.c drives it over malloc'd memory.
 * cuda/allocator.cu keeps one pool per stream, behind its lock, with cudaMalloc and
 * cudaFree as the segment callbacks (it includes this header inside extern "C").
 *
 * A pool takes segments from its segment allocator and carves blocks out of them, in
 * PyTorch's CUDACachingAllocator manner: requests are rounded up to 512 bytes; those of at
 * most 1 MiB are small and come from 2 MiB segments, the others are large and come from
 * 20 MiB segments below 10 MiB, else from a segment of the request rounded up to 2 MiB.
 * Small and large blocks are kept apart. A free block is found by best fit (the smallest
 * that holds the request, then the lowest address) and split when the rest is worth
 * keeping; a freed block merges with its free neighbours. Segments go back to the segment
 * allocator only when wholly free and asked for (fv_block_pool_release_free_segments).
 * block_pool.c explains the rules and the structures.
 *
 * The pool has no lock and no global state: the caller serialises calls on one pool.
 * Everything is deterministic: the same calls, given the same segment addresses, make
 * the same choices.
 *
 * Build: part of libfovea_cuda.so (gcc -std=c11 -fPIC -c cuda/block_pool.c; see the Makefile). */
#ifndef FOVEA_CUDA_BLOCK_POOL_H
#define FOVEA_CUDA_BLOCK_POOL_H

#include <stddef.h>
#include <stdint.h>

/* Where segments come from: segment_alloc returns `bytes` of memory or NULL (the callback
 * knows why and may remember it in its context); segment_free gives back a segment whole,
 * with the size it was asked for. */
typedef void *(*fv_segment_alloc_fn)(size_t bytes, void *context);
typedef void (*fv_segment_free_fn)(void *segment, size_t bytes, void *context);

typedef struct fv_block_pool_config {
  fv_segment_alloc_fn segment_alloc;
  fv_segment_free_fn segment_free;
  void *context; /* passed to both callbacks */
  /* 1: cache freed blocks. 0: every block is a segment of its rounded size of its own,
   * given back to segment_free as soon as the block is freed (for memory checkers). */
  int caching;
} fv_block_pool_config;

/* What fv_block_pool_alloc did. */
typedef enum fv_block_pool_result {
  FV_BLOCK_POOL_OK = 0,
  FV_BLOCK_POOL_NO_SEGMENT = 1,     /* segment_alloc returned NULL */
  FV_BLOCK_POOL_TOO_LARGE = 2,      /* the request cannot be rounded within size_t */
  FV_BLOCK_POOL_NO_HOST_MEMORY = 3, /* malloc failed for the bookkeeping */
} fv_block_pool_result;

/* Bytes and counts of one pool. reserved = allocated + held + cached. */
typedef struct fv_block_pool_stats {
  int64_t allocated_bytes;      /* in blocks handed out (rounded sizes) */
  int64_t held_bytes;           /* in blocks given back but held (fv_block_pool_hold) */
  int64_t cached_bytes;         /* in free blocks */
  int64_t reserved_bytes;       /* in segments */
  int64_t peak_allocated_bytes; /* the most allocated since creation or the last reset */
  int64_t segments;
  int64_t blocks; /* all of them: allocated + held + free */
  int64_t allocated_blocks;
  int64_t held_blocks;
} fv_block_pool_stats;

/* One live block (allocated or held), as fv_block_pool_lookup finds it. */
typedef struct fv_block_info {
  size_t size;      /* the block's bytes: the rounded request, or more when not split */
  size_t requested; /* the bytes asked of fv_block_pool_alloc */
  int held;         /* 1 after fv_block_pool_hold */
} fv_block_info;

typedef struct fv_block_pool fv_block_pool; /* opaque; owned by its creator */

/* A new empty pool (no segment yet); NULL when host memory runs out. The config is
 * copied. */
fv_block_pool *fv_block_pool_new(const fv_block_pool_config *config);
/* Gives every segment back (live blocks included) and frees the pool. NULL is allowed. */
void fv_block_pool_delete(fv_block_pool *pool);

/* Stores in *out a block of at least `bytes` (0 counts as 1) and returns FV_BLOCK_POOL_OK,
 * or stores NULL and returns why not. A failed call changes nothing. */
fv_block_pool_result fv_block_pool_alloc(fv_block_pool *pool, size_t bytes, void **out);

/* Frees the live block at ptr (allocated or held): it merges with its free neighbours and
 * is reused by later allocations (with caching off, its segment is given back). Returns
 * 1, or 0 when ptr is not a live block of this pool (nothing is done). */
int fv_block_pool_free(fv_block_pool *pool, void *ptr);

/* For a block the caller is done with while the device may still be using it: its bytes
 * stop counting as allocated (they count as held), and it stays out of reuse until
 * fv_block_pool_free(pool, ptr). Returns 1, or 0 when ptr is not an allocated block of
 * this pool (held already, unknown: nothing is done). */
int fv_block_pool_hold(fv_block_pool *pool, void *ptr);

/* Whether ptr is a live block of this pool; fills *info (may be NULL) when it is. */
int fv_block_pool_lookup(const fv_block_pool *pool, const void *ptr, fv_block_info *info);

/* Gives back every wholly free segment; returns the bytes given back. */
size_t fv_block_pool_release_free_segments(fv_block_pool *pool);

fv_block_pool_stats fv_block_pool_get_stats(const fv_block_pool *pool);
/* Sets the peak to what is allocated now. */
void fv_block_pool_reset_peak(fv_block_pool *pool);

#endif
