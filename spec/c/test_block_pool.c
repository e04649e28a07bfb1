/* test_block_pool.c: checks of the CUDA caching allocator's bookkeeping (cuda/block_pool.c)
 * over malloc'd segments, so that they run without a GPU: rounding, small and large pools
 * and their segment sizes, best fit, splitting and merging (exact addresses), the rule
 * that keeps big cached blocks whole, held blocks, giving back free segments only,
 * statistics after each step, a refused segment, caching off, and a randomized run
 * (fixed seed) that checks after every step that live blocks lie inside their segments
 * and never overlap and that the statistics add up, then repeats to see the same choices.
 * The CUDA layer around it (cuda/allocator.cu: streams, events, cudaMalloc) needs a GPU.
 *
 * `make ctest` builds it with cuda/block_pool.c; spec/c_programs_spec.lua runs it.
 * Exits 1 when a check fails; the last line is "N checks, N fail". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block_pool.h"

static int g_fail = 0, g_checks = 0;

#define CHECK(cond, ...)                                  \
  do {                                                    \
    g_checks++;                                           \
    if (!(cond)) {                                        \
      if (++g_fail <= 50) {                               \
        printf("FAIL %s:%d: ", __FILE__, __LINE__);       \
        printf(__VA_ARGS__);                              \
        printf("\n");                                     \
      }                                                   \
    }                                                     \
  } while (0)

static const size_t KiB = 1024, MiB = 1024 * 1024;
static const size_t ARENA = (size_t)256 << 20; /* the segment source's memory in most cases */

/* ---- the segment source: first fit in one malloc'd arena, recording every segment ----
 * Segments at the same offsets from run to run (whatever address the arena has) let the
 * randomized run check that the same calls make the same choices. */

enum { MAX_SEGMENTS = 1024 };

typedef struct segment {
  char *base;
  size_t bytes;
  int serial; /* the how-manieth segment of its source */
} segment;

typedef struct source {
  char *arena;
  size_t arena_bytes, outstanding;
  segment segments[MAX_SEGMENTS]; /* by address */
  int count, made, refused;
  size_t last_request;
} source;

static void *source_alloc(size_t bytes, void *context) {
  source *s = context;
  s->last_request = bytes;
  size_t at = 0; /* offset of the gap before segments[i] */
  int i = 0;
  for (; i < s->count; i++) {
    size_t start = (size_t)(s->segments[i].base - s->arena);
    if (start - at >= bytes) break;
    at = start + s->segments[i].bytes;
  }
  if (s->count == MAX_SEGMENTS || (i == s->count && bytes > s->arena_bytes - at)) {
    s->refused++;
    return NULL;
  }
  memmove(&s->segments[i + 1], &s->segments[i], sizeof s->segments[0] * (size_t)(s->count - i));
  s->segments[i] = (segment){s->arena + at, bytes, s->made++};
  s->count++;
  s->outstanding += bytes;
  return s->arena + at;
}

static void source_free(void *ptr, size_t bytes, void *context) {
  source *s = context;
  for (int i = 0; i < s->count; i++) {
    if (s->segments[i].base != ptr) continue;
    CHECK(s->segments[i].bytes == bytes, "segment given back with %zu bytes, made with %zu", bytes,
          s->segments[i].bytes);
    s->outstanding -= s->segments[i].bytes;
    memmove(&s->segments[i], &s->segments[i + 1], sizeof s->segments[0] * (size_t)(s->count - i - 1));
    s->count--;
    return;
  }
  CHECK(0, "segment_free of %p, which is no segment", ptr);
}

static fv_block_pool *new_pool(source *s, size_t arena_bytes, int caching) {
  memset(s, 0, sizeof *s);
  s->arena = malloc(arena_bytes);
  s->arena_bytes = arena_bytes;
  fv_block_pool_config config = {source_alloc, source_free, s, caching};
  fv_block_pool *pool = s->arena ? fv_block_pool_new(&config) : NULL;
  if (!pool) {
    printf("out of host memory\n");
    exit(1);
  }
  return pool;
}

static void delete_pool(fv_block_pool *pool, source *s) {
  fv_block_pool_delete(pool);
  CHECK(s->count == 0 && s->outstanding == 0, "delete gives every segment back (%d left)", s->count);
  free(s->arena);
}

/* ---- helpers ---- */

static char *alloc_ok(fv_block_pool *pool, size_t bytes) {
  void *p = NULL;
  fv_block_pool_result result = fv_block_pool_alloc(pool, bytes, &p);
  CHECK(result == FV_BLOCK_POOL_OK && p, "alloc(%zu) gives a block (result %d)", bytes, (int)result);
  return p;
}

static size_t size_of(const fv_block_pool *pool, const void *p) {
  fv_block_info info;
  return fv_block_pool_lookup(pool, p, &info) ? info.size : 0;
}

static void free_ok(fv_block_pool *pool, void *p) {
  CHECK(fv_block_pool_free(pool, p) == 1, "free(%p) finds its block", p);
}

typedef struct expected {
  int64_t allocated, held, reserved, segments, blocks;
} expected;

/* The pool's numbers against e; cached bytes must make up the rest of reserved, and the
 * source must hold what the pool says it reserved. */
static void expect_stats(int line, const fv_block_pool *pool, const source *s, expected e) {
  fv_block_pool_stats st = fv_block_pool_get_stats(pool);
  CHECK(st.allocated_bytes == e.allocated && st.held_bytes == e.held && st.reserved_bytes == e.reserved &&
            st.segments == e.segments && st.blocks == e.blocks,
        "line %d: allocated %lld held %lld reserved %lld segments %lld blocks %lld, expected %lld %lld %lld %lld %lld",
        line, (long long)st.allocated_bytes, (long long)st.held_bytes, (long long)st.reserved_bytes,
        (long long)st.segments, (long long)st.blocks, (long long)e.allocated, (long long)e.held,
        (long long)e.reserved, (long long)e.segments, (long long)e.blocks);
  CHECK(st.cached_bytes == st.reserved_bytes - st.allocated_bytes - st.held_bytes,
        "line %d: cached %lld = reserved - allocated - held", line, (long long)st.cached_bytes);
  CHECK((int64_t)s->outstanding == st.reserved_bytes && s->count == st.segments,
        "line %d: the source holds %zu bytes in %d segments", line, s->outstanding, s->count);
}

#define EXPECT_STATS(pool, s, ...) expect_stats(__LINE__, pool, s, (expected){__VA_ARGS__})

/* ---- the cases ---- */

static void rounding(void) {
  source s;
  fv_block_pool *pool = new_pool(&s, ARENA, 1);
  size_t asked[] = {0, 1, 511, 512, 513, 1000, 1024, 1025, 1 << 20};
  size_t rounded[] = {512, 512, 512, 512, 1024, 1024, 1024, 1536, 1 << 20};
  for (int i = 0; i < (int)(sizeof asked / sizeof asked[0]); i++) {
    char *p = alloc_ok(pool, asked[i]);
    fv_block_info info;
    CHECK(fv_block_pool_lookup(pool, p, &info) && info.size == rounded[i] && info.requested == asked[i] && !info.held,
          "%zu bytes: a block of %zu (got %zu, requested %zu)", asked[i], rounded[i], info.size, info.requested);
  }
  delete_pool(pool, &s);
}

static void splitting_and_merging(void) {
  source s;
  fv_block_pool *pool = new_pool(&s, ARENA, 1);
  char *a = alloc_ok(pool, 512);
  char *base = s.segments[0].base;
  CHECK(s.last_request == 2 * MiB && a == base, "a small block starts a 2 MiB segment");
  EXPECT_STATS(pool, &s, 512, 0, 2 * MiB, 1, 2);
  char *b = alloc_ok(pool, 1000);
  char *c = alloc_ok(pool, 512);
  CHECK(b == base + 512 && c == base + 1536, "blocks are cut one after the other");
  EXPECT_STATS(pool, &s, 2048, 0, 2 * MiB, 1, 4);
  free_ok(pool, b); /* between two live blocks: nothing to merge */
  EXPECT_STATS(pool, &s, 1024, 0, 2 * MiB, 1, 4);
  free_ok(pool, a); /* merges with b */
  EXPECT_STATS(pool, &s, 512, 0, 2 * MiB, 1, 3);
  char *d = alloc_ok(pool, 1536);
  CHECK(d == base && size_of(pool, d) == 1536, "the merged 1536-byte hole serves 1536 bytes whole");
  EXPECT_STATS(pool, &s, 2048, 0, 2 * MiB, 1, 3);
  free_ok(pool, c); /* merges with the rest of the segment */
  EXPECT_STATS(pool, &s, 1536, 0, 2 * MiB, 1, 2);
  free_ok(pool, d); /* the segment is one free block again */
  EXPECT_STATS(pool, &s, 0, 0, 2 * MiB, 1, 1);
  char *e = alloc_ok(pool, 2 * KiB);
  CHECK(e == base && s.made == 1, "the merged segment is reused from its start");
  free_ok(pool, e);
  CHECK(fv_block_pool_release_free_segments(pool) == 2 * MiB, "the free segment is given back");
  EXPECT_STATS(pool, &s, 0, 0, 0, 0, 0);
  delete_pool(pool, &s);
}

static void best_fit(void) {
  source s;
  fv_block_pool *pool = new_pool(&s, ARENA, 1);
  char *x0 = alloc_ok(pool, 4096), *s0 = alloc_ok(pool, 512);
  char *x1 = alloc_ok(pool, 1024), *s1 = alloc_ok(pool, 512);
  char *x2 = alloc_ok(pool, 2048), *s2 = alloc_ok(pool, 512);
  char *base = s.segments[0].base;
  CHECK(x0 == base && s0 == base + 4096 && x1 == base + 4608 && s1 == base + 5632 && x2 == base + 6144 &&
            s2 == base + 8192,
        "six blocks in a row");
  free_ok(pool, x0);
  free_ok(pool, x1);
  free_ok(pool, x2); /* holes: 4096 at 0, 1024 at 4608, 2048 at 6144, and the rest from 8704 */
  EXPECT_STATS(pool, &s, 1536, 0, 2 * MiB, 1, 7);
  char *p = alloc_ok(pool, 1500);
  CHECK(p == base + 6144 && size_of(pool, p) == 1536, "1536 bytes from the 2048 hole, the smallest that fits");
  EXPECT_STATS(pool, &s, 3072, 0, 2 * MiB, 1, 8); /* the hole's last 512 bytes: a block */
  char *q = alloc_ok(pool, 1024);
  CHECK(q == base + 4608, "1024 bytes fill the 1024 hole exactly");
  char *r = alloc_ok(pool, 600);
  CHECK(r == base && size_of(pool, r) == 1024, "1024 bytes from the 4096 hole, the only one left that fits");
  char *t = alloc_ok(pool, 512);
  CHECK(t == base + 7680, "512 bytes from the 512 left of the 2048 hole");
  EXPECT_STATS(pool, &s, 5632, 0, 2 * MiB, 1, 9);
  delete_pool(pool, &s);

  /* equal sizes: the lower address, whatever the order of freeing */
  pool = new_pool(&s, ARENA, 1);
  char *run[5];
  for (int i = 0; i < 5; i++) run[i] = alloc_ok(pool, 1024);
  free_ok(pool, run[1]);
  free_ok(pool, run[3]);
  CHECK(alloc_ok(pool, 1024) == run[1], "of two equal holes the lower is taken, freed first");
  free_ok(pool, run[1]);
  CHECK(alloc_ok(pool, 1024) == run[1], "of two equal holes the lower is taken, freed last");
  delete_pool(pool, &s);
}

static void small_and_large_pools(void) {
  source s;
  fv_block_pool *pool = new_pool(&s, ARENA, 1);
  char *small = alloc_ok(pool, MiB);
  CHECK(s.last_request == 2 * MiB && size_of(pool, small) == MiB, "1 MiB is small: a 2 MiB segment");
  EXPECT_STATS(pool, &s, MiB, 0, 2 * MiB, 1, 2);
  char *large = alloc_ok(pool, MiB + 1);
  CHECK(s.last_request == 20 * MiB && size_of(pool, large) == MiB + 512, "1 MiB + 1 is large: a 20 MiB segment");
  EXPECT_STATS(pool, &s, 2 * MiB + 512, 0, 22 * MiB, 2, 4);
  free_ok(pool, small); /* a whole free 2 MiB segment in the small pool */
  char *large2 = alloc_ok(pool, MiB + 1);
  CHECK(large2 == large + MiB + 512 && s.made == 2, "a large request does not take the small pool's free block");
  free_ok(pool, large);
  free_ok(pool, large2); /* the 20 MiB segment is whole and free */
  char *small2 = alloc_ok(pool, 512);
  CHECK(small2 == small && s.made == 2, "a small request does not take the large pool's free block");
  EXPECT_STATS(pool, &s, 512, 0, 22 * MiB, 2, 3);
  delete_pool(pool, &s);

  /* segment sizes of large requests, and the 1 MiB split threshold */
  pool = new_pool(&s, ARENA, 1);
  char *own = alloc_ok(pool, 12 * MiB);
  CHECK(s.last_request == 12 * MiB && size_of(pool, own) == 12 * MiB, "12 MiB: a segment of its own");
  char *own2 = alloc_ok(pool, 11 * MiB + 1);
  CHECK(s.last_request == 12 * MiB && size_of(pool, own2) == 12 * MiB,
        "11 MiB + 1: a 12 MiB segment (rounded to 2 MiB), not split for the 1 MiB - 512 left");
  char *mid = alloc_ok(pool, 10 * MiB - 512);
  CHECK(s.last_request == 20 * MiB && size_of(pool, mid) == 10 * MiB - 512, "under 10 MiB: a 20 MiB segment, split");
  EXPECT_STATS(pool, &s, 34 * MiB - 512, 0, 44 * MiB, 3, 4);
  char *ten = alloc_ok(pool, 10 * MiB);
  CHECK(ten == mid + 10 * MiB - 512 && size_of(pool, ten) == 10 * MiB + 512 && s.made == 3,
        "10 MiB takes the cached 10 MiB + 512 whole (512 bytes are not worth a block)");
  EXPECT_STATS(pool, &s, 44 * MiB, 0, 44 * MiB, 3, 4);
  delete_pool(pool, &s);

  pool = new_pool(&s, ARENA, 1);
  char *nine = alloc_ok(pool, 9 * MiB); /* leaves 11 MiB free in its 20 MiB segment */
  char *split = alloc_ok(pool, 10 * MiB - 512);
  CHECK(split == nine + 9 * MiB && size_of(pool, split) == 10 * MiB - 512, "1 MiB + 512 left over: split");
  EXPECT_STATS(pool, &s, 19 * MiB - 512, 0, 20 * MiB, 1, 3);
  free_ok(pool, split);
  EXPECT_STATS(pool, &s, 9 * MiB, 0, 20 * MiB, 1, 2);
  char *whole = alloc_ok(pool, 10 * MiB);
  CHECK(whole == split && size_of(pool, whole) == 11 * MiB, "exactly 1 MiB left over: not split");
  EXPECT_STATS(pool, &s, 20 * MiB, 0, 20 * MiB, 1, 2);
  delete_pool(pool, &s);
}

static void big_blocks_stay_whole(void) {
  source s;
  fv_block_pool *pool = new_pool(&s, ARENA, 1);
  char *big = alloc_ok(pool, 100 * MiB);
  free_ok(pool, big);
  char *tiny = alloc_ok(pool, 2 * MiB);
  CHECK(s.made == 2 && s.last_request == 20 * MiB && (tiny < big || tiny >= big + 100 * MiB),
        "2 MiB does not cut into a cached 100 MiB block: a new 20 MiB segment");
  char *half = alloc_ok(pool, 50 * MiB);
  CHECK(half == big && size_of(pool, half) == 50 * MiB && s.made == 2, "50 MiB may take the 100 MiB block, split");
  char *third = alloc_ok(pool, 30 * MiB);
  CHECK(third == big + 50 * MiB && s.made == 2, "30 MiB may take the 50 MiB left (20 MiB over)");
  EXPECT_STATS(pool, &s, 82 * MiB, 0, 120 * MiB, 2, 5);
  delete_pool(pool, &s);

  pool = new_pool(&s, ARENA, 1);
  char *block = alloc_ok(pool, 22 * MiB);
  free_ok(pool, block);
  char *r = alloc_ok(pool, 2 * MiB);
  CHECK(r == block && s.made == 1, "22 MiB is lent to 2 MiB: 20 MiB over is not more than a large segment");
  free_ok(pool, r);
  r = alloc_ok(pool, 1536 * KiB);
  CHECK(r != block && s.made == 2, "but not to 1.5 MiB: 20.5 MiB over is too much");
  delete_pool(pool, &s);

  /* no room for the new segment: the big cached block is lent rather than the request failing */
  pool = new_pool(&s, 70 * MiB, 1);
  big = alloc_ok(pool, 60 * MiB);
  free_ok(pool, big);
  char *thirty = alloc_ok(pool, 30 * MiB);
  CHECK(thirty == big && s.made == 1, "30 MiB takes half of the cached 60 MiB");
  char *nine = alloc_ok(pool, 9 * MiB);
  CHECK(s.refused == 1 && s.made == 1 && nine == big + 30 * MiB && size_of(pool, nine) == 9 * MiB,
        "9 MiB: the 20 MiB segment is refused, so the 30 MiB left is lent, split");
  EXPECT_STATS(pool, &s, 39 * MiB, 0, 60 * MiB, 1, 3);
  delete_pool(pool, &s);
}

static void held_blocks(void) {
  source s;
  fv_block_pool *pool = new_pool(&s, ARENA, 1);
  char *a = alloc_ok(pool, 4096), *b = alloc_ok(pool, 4096);
  char *base = s.segments[0].base;
  CHECK(fv_block_pool_hold(pool, a) == 1, "hold a");
  fv_block_info info;
  CHECK(fv_block_pool_lookup(pool, a, &info) && info.held && info.size == 4096, "a is held");
  EXPECT_STATS(pool, &s, 4096, 4096, 2 * MiB, 1, 3);
  CHECK(fv_block_pool_hold(pool, a) == 0, "holding a held block again is refused");
  char *c = alloc_ok(pool, 4096);
  CHECK(c == base + 8192, "a held block is not reused");
  CHECK(fv_block_pool_release_free_segments(pool) == 0, "a segment with held blocks stays");
  free_ok(pool, a);
  EXPECT_STATS(pool, &s, 8192, 0, 2 * MiB, 1, 4);
  char *d = alloc_ok(pool, 4096);
  CHECK(d == a, "once freed, the held block is reused");
  CHECK(fv_block_pool_free(pool, base + 100) == 0 && fv_block_pool_hold(pool, base + 100) == 0 &&
            !fv_block_pool_lookup(pool, base + 100, NULL),
        "an address inside a block is not a block");
  free_ok(pool, d);
  CHECK(fv_block_pool_free(pool, d) == 0, "a second free is refused");
  EXPECT_STATS(pool, &s, 8192, 0, 2 * MiB, 1, 4);
  free_ok(pool, b);
  free_ok(pool, c);
  EXPECT_STATS(pool, &s, 0, 0, 2 * MiB, 1, 1);
  delete_pool(pool, &s);
}

static void giving_back_free_segments(void) {
  source s;
  fv_block_pool *pool = new_pool(&s, ARENA, 1);
  char *a = alloc_ok(pool, 512), *c = alloc_ok(pool, 12 * MiB), *b = alloc_ok(pool, 2 * MiB);
  char *b2 = alloc_ok(pool, 4 * MiB);
  EXPECT_STATS(pool, &s, 18 * MiB + 512, 0, 34 * MiB, 3, 6);
  free_ok(pool, a);
  free_ok(pool, c);
  free_ok(pool, b2); /* b keeps its 20 MiB segment */
  CHECK(fv_block_pool_release_free_segments(pool) == 14 * MiB, "the small and the 12 MiB segment are given back");
  EXPECT_STATS(pool, &s, 2 * MiB, 0, 20 * MiB, 1, 2);
  CHECK(s.segments[0].bytes == 20 * MiB && size_of(pool, b) == 2 * MiB, "the segment in use stays, b with it");
  CHECK(fv_block_pool_release_free_segments(pool) == 0, "nothing more to give back");
  fv_block_pool_stats st = fv_block_pool_get_stats(pool);
  CHECK(st.peak_allocated_bytes == 18 * MiB + 512, "peak %lld", (long long)st.peak_allocated_bytes);
  fv_block_pool_reset_peak(pool);
  st = fv_block_pool_get_stats(pool);
  CHECK(st.peak_allocated_bytes == 2 * MiB, "peak after reset %lld", (long long)st.peak_allocated_bytes);
  free_ok(pool, b);
  CHECK(fv_block_pool_release_free_segments(pool) == 20 * MiB, "then the last one");
  EXPECT_STATS(pool, &s, 0, 0, 0, 0, 0);
  delete_pool(pool, &s);
}

static void refused_segments(void) {
  source s;
  fv_block_pool *pool = new_pool(&s, 32 * MiB, 1);
  char *a = alloc_ok(pool, 2 * MiB), *b = alloc_ok(pool, 100);
  fv_block_pool_stats before = fv_block_pool_get_stats(pool);
  void *p = (void *)1;
  fv_block_pool_result result = fv_block_pool_alloc(pool, 30 * MiB, &p);
  fv_block_pool_stats after = fv_block_pool_get_stats(pool);
  CHECK(result == FV_BLOCK_POOL_NO_SEGMENT && p == NULL && s.last_request == 30 * MiB && s.refused == 1,
        "a refused segment: NO_SEGMENT and NULL (result %d)", (int)result);
  CHECK(memcmp(&before, &after, sizeof before) == 0, "a failed allocation changes no number");
  free_ok(pool, a);
  free_ok(pool, b);
  CHECK(fv_block_pool_release_free_segments(pool) == 22 * MiB, "the cache is emptied");
  char *c = alloc_ok(pool, 30 * MiB); /* the allocator's retry */
  CHECK(c && s.made == 3, "then the same request succeeds");
  EXPECT_STATS(pool, &s, 30 * MiB, 0, 30 * MiB, 1, 1);
  p = (void *)1;
  CHECK(fv_block_pool_alloc(pool, SIZE_MAX, &p) == FV_BLOCK_POOL_TOO_LARGE && p == NULL, "SIZE_MAX: too large");
  CHECK(fv_block_pool_alloc(pool, SIZE_MAX - MiB, &p) == FV_BLOCK_POOL_TOO_LARGE && p == NULL,
        "a segment size past SIZE_MAX: too large");
  CHECK(fv_block_pool_alloc(pool, SIZE_MAX / 2, &p) == FV_BLOCK_POOL_NO_SEGMENT && p == NULL,
        "SIZE_MAX / 2 goes to the source, which refuses");
  EXPECT_STATS(pool, &s, 30 * MiB, 0, 30 * MiB, 1, 1);
  delete_pool(pool, &s);
}

static void caching_off(void) {
  source s;
  fv_block_pool *pool = new_pool(&s, ARENA, 0);
  char *a = alloc_ok(pool, 100);
  CHECK(s.last_request == 512 && a == s.segments[0].base, "each block is a segment of its rounded size");
  char *b = alloc_ok(pool, 3 * MiB + 1);
  CHECK(s.last_request == 3 * MiB + 512, "large ones too, not rounded to 2 MiB");
  EXPECT_STATS(pool, &s, 3 * MiB + 1024, 0, 3 * MiB + 1024, 2, 2);
  free_ok(pool, a);
  EXPECT_STATS(pool, &s, 3 * MiB + 512, 0, 3 * MiB + 512, 1, 1);
  CHECK(fv_block_pool_hold(pool, b) == 1, "hold b");
  EXPECT_STATS(pool, &s, 0, 3 * MiB + 512, 3 * MiB + 512, 1, 1);
  free_ok(pool, b);
  EXPECT_STATS(pool, &s, 0, 0, 0, 0, 0);
  delete_pool(pool, &s);
}

/* ---- the randomized run ---- */

enum { STRESS_STEPS = 20000, MAX_LIVE = 300 };

typedef struct live_block {
  char *ptr;
  size_t requested, size;
  int held;
  unsigned char tag;
} live_block;

typedef struct stress {
  source s;
  fv_block_pool *pool;
  live_block live[MAX_LIVE];
  int count;
  uint64_t rng;
  int64_t peak;
  uint64_t digest; /* of every choice: segment serial and offset */
  int refusals, retries_ok;
} stress;

static uint64_t next_random(stress *st) {
  st->rng ^= st->rng >> 12;
  st->rng ^= st->rng << 25;
  st->rng ^= st->rng >> 27;
  return st->rng * 0x2545F4914F6CDD1Du;
}

static size_t random_request(stress *st) {
  uint64_t kind = next_random(st) % 100;
  if (kind < 70) { /* 0 .. 1 MiB, spread over the powers of two */
    uint64_t bits = next_random(st) % 21;
    return (size_t)(next_random(st) % ((uint64_t)1 << bits));
  }
  if (kind < 95) return MiB + (size_t)(next_random(st) % (12 * MiB));
  return 12 * MiB + (size_t)(next_random(st) % (52 * MiB));
}

static const segment *segment_holding(const source *s, const char *p) {
  for (int i = 0; i < s->count; i++)
    if ((uintptr_t)p >= (uintptr_t)s->segments[i].base &&
        (uintptr_t)p < (uintptr_t)s->segments[i].base + s->segments[i].bytes)
      return &s->segments[i];
  return NULL;
}

/* The first and last byte of a block carry its tag: another block written over it shows. */
static void write_tag(live_block *b) {
  b->ptr[0] = (char)b->tag;
  b->ptr[b->size - 1] = (char)~b->tag;
}

static int tag_intact(const live_block *b) {
  return b->ptr[0] == (char)b->tag && b->ptr[b->size - 1] == (char)~b->tag;
}

static int by_address(const void *x, const void *y) {
  uintptr_t a = (uintptr_t)((const live_block *)x)->ptr, b = (uintptr_t)((const live_block *)y)->ptr;
  return (a > b) - (a < b);
}

static void stress_alloc(stress *st) {
  size_t bytes = random_request(st);
  void *p;
  fv_block_pool_result result = fv_block_pool_alloc(st->pool, bytes, &p);
  if (result == FV_BLOCK_POOL_NO_SEGMENT) { /* as the allocator: empty the cache, try again */
    st->refusals++;
    fv_block_pool_release_free_segments(st->pool);
    result = fv_block_pool_alloc(st->pool, bytes, &p);
    if (result == FV_BLOCK_POOL_OK) st->retries_ok++;
  }
  CHECK(result == FV_BLOCK_POOL_OK || result == FV_BLOCK_POOL_NO_SEGMENT, "alloc(%zu): result %d", bytes, (int)result);
  if (result != FV_BLOCK_POOL_OK) return;
  live_block *b = &st->live[st->count++];
  fv_block_info info;
  fv_block_pool_lookup(st->pool, p, &info);
  *b = (live_block){p, bytes, info.size, 0, (unsigned char)(next_random(st) | 1)};
  write_tag(b);
  const segment *seg = segment_holding(&st->s, p);
  st->digest = st->digest * 1000003u + (seg ? (uint64_t)seg->serial : 999u);
  st->digest = st->digest * 1000003u + (seg ? (uint64_t)(b->ptr - seg->base) : 0u);
  int64_t allocated = fv_block_pool_get_stats(st->pool).allocated_bytes;
  if (allocated > st->peak) st->peak = allocated;
}

static void stress_free(stress *st, int i) {
  live_block *b = &st->live[i];
  CHECK(tag_intact(b), "block %p kept its tag until freed", (void *)b->ptr);
  CHECK(fv_block_pool_free(st->pool, b->ptr) == 1, "free a live block");
  *b = st->live[--st->count];
}

static void stress_step(stress *st) {
  uint64_t op = next_random(st) % 100;
  if (st->count == MAX_LIVE || (op >= 45 && op < 80 && st->count > 0)) {
    stress_free(st, (int)(next_random(st) % (uint64_t)st->count));
  } else if (op >= 80 && op < 90 && st->count > 0) {
    live_block *b = &st->live[next_random(st) % (uint64_t)st->count];
    CHECK(fv_block_pool_hold(st->pool, b->ptr) == !b->held, "hold: 1 for an allocated block, 0 for a held one");
    b->held = 1;
  } else if (op >= 90 && op < 98 && st->count > 0) {
    int i = (int)(next_random(st) % (uint64_t)st->count);
    if (st->live[i].held) stress_free(st, i);
  } else if (op >= 98) {
    fv_block_pool_release_free_segments(st->pool);
  } else {
    stress_alloc(st);
  }
}

static size_t rounded(size_t bytes) { return bytes <= 512 ? 512 : (bytes + 511) / 512 * 512; }

/* After every step: each live block is the pool's, of the size its request allows, inside
 * one segment and clear of the others, its tag intact; the numbers add up. */
static void stress_check(stress *st, int step) {
  int64_t allocated = 0, held = 0;
  for (int i = 0; i < st->count; i++) {
    const live_block *b = &st->live[i];
    fv_block_info info;
    size_t r = rounded(b->requested);
    int found = fv_block_pool_lookup(st->pool, b->ptr, &info);
    CHECK(found && info.size == b->size && info.requested == b->requested && info.held == b->held,
          "step %d: block %p known as handed out", step, (void *)b->ptr);
    CHECK(b->size == r || (r > MiB && b->size > r && b->size - r <= MiB),
          "step %d: %zu bytes asked, a block of %zu", step, b->requested, b->size);
    const segment *seg = segment_holding(&st->s, b->ptr);
    CHECK(seg && (uintptr_t)b->ptr + b->size <= (uintptr_t)seg->base + seg->bytes,
          "step %d: block %p + %zu inside a segment", step, (void *)b->ptr, b->size);
    CHECK(tag_intact(b), "step %d: block %p kept its tag", step, (void *)b->ptr);
    if (b->held) held += (int64_t)b->size;
    else allocated += (int64_t)b->size;
  }
  live_block sorted[MAX_LIVE];
  memcpy(sorted, st->live, sizeof sorted[0] * (size_t)st->count);
  qsort(sorted, (size_t)st->count, sizeof sorted[0], by_address);
  for (int i = 1; i < st->count; i++)
    CHECK((uintptr_t)sorted[i - 1].ptr + sorted[i - 1].size <= (uintptr_t)sorted[i].ptr,
          "step %d: blocks %p and %p overlap", step, (void *)sorted[i - 1].ptr, (void *)sorted[i].ptr);
  fv_block_pool_stats s = fv_block_pool_get_stats(st->pool);
  CHECK(s.allocated_bytes == allocated && s.held_bytes == held && s.allocated_blocks + s.held_blocks == st->count,
        "step %d: allocated %lld (expected %lld), held %lld (expected %lld)", step, (long long)s.allocated_bytes,
        (long long)allocated, (long long)s.held_bytes, (long long)held);
  CHECK(s.reserved_bytes == s.allocated_bytes + s.held_bytes + s.cached_bytes &&
            s.reserved_bytes == (int64_t)st->s.outstanding && s.segments == st->s.count &&
            s.blocks >= st->count && s.blocks >= s.segments,
        "step %d: reserved %lld = allocated + held + cached, the source's %zu in %d segments", step,
        (long long)s.reserved_bytes, st->s.outstanding, st->s.count);
  CHECK(s.peak_allocated_bytes == st->peak, "step %d: peak %lld, expected %lld", step,
        (long long)s.peak_allocated_bytes, (long long)st->peak);
}

/* A fixed-seed run; returns the digest of its choices. */
static uint64_t stress_run(void) {
  static stress st;
  memset(&st, 0, sizeof st);
  st.rng = 0x5EED5EED12345678u;
  st.pool = new_pool(&st.s, 512 * MiB, 1);
  int failed_before = g_fail;
  for (int step = 0; step < STRESS_STEPS && g_fail == failed_before; step++) {
    stress_step(&st);
    stress_check(&st, step);
  }
  CHECK(st.refusals > 0 && st.retries_ok > 0, "the run met refused segments (%d) and retried with success (%d)",
        st.refusals, st.retries_ok);
  while (st.count) stress_free(&st, st.count - 1);
  fv_block_pool_release_free_segments(st.pool);
  fv_block_pool_stats s = fv_block_pool_get_stats(st.pool);
  CHECK(s.reserved_bytes == 0 && s.blocks == 0 && s.segments == 0, "all freed: every segment given back");
  printf("stress: %d steps, peak %lld MiB, %d refused segments (%d retries succeeded)\n", STRESS_STEPS,
         (long long)(st.peak / (int64_t)MiB), st.refusals, st.retries_ok);
  delete_pool(st.pool, &st.s);
  return st.digest;
}

int main(void) {
  rounding();
  splitting_and_merging();
  best_fit();
  small_and_large_pools();
  big_blocks_stay_whole();
  held_blocks();
  giving_back_free_segments();
  refused_segments();
  caching_off();
  uint64_t first = stress_run();
  CHECK(stress_run() == first, "a second run with the same seed makes the same choices");
  printf("%d checks, %d fail\n", g_checks, g_fail);
  return g_fail ? 1 : 0;
}
