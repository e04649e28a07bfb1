/* block_pool.c: one stream's pools of the CUDA caching allocator (block_pool.h), the
 * bookkeeping only: memory comes from the segment callbacks and is never touched here.
 *
 * Sizes and rules (PyTorch's CUDACachingAllocator, with its constants):
 * - A request is rounded up to a multiple of 512 bytes (0 and 1 give 512).
 * - Rounded requests of at most 1 MiB are small: they come from 2 MiB segments and their
 *   blocks stay in the small pool. The others are large: a 20 MiB segment serves those
 *   under 10 MiB, and from 10 MiB on a request gets a segment of its own, its size rounded
 *   up to 2 MiB. The two pools never lend to each other, so small short-lived buffers do
 *   not scatter over the segments of big tensors.
 * - Best fit: the free block of the request's pool with the smallest size that holds it,
 *   the lowest address among equals.
 * - A block handed out is split when the rest is worth keeping as a free block: at least
 *   512 bytes in the small pool, more than 1 MiB in the large one (a large block keeps up
 *   to 1 MiB of slack instead).
 * - A cached block is not handed out when the rest would exceed both the request and 20
 *   MiB (a large segment): a 1 GiB block freed by a big tensor is not cut up for a 2 MiB
 *   request, which takes a fresh 20 MiB segment instead, and the big block stays whole
 *   for the next big tensor. When the segment allocator refuses that segment, the big
 *   block is lent all the same (split as usual) rather than the request failing while
 *   the cache holds room for it. This plays the part of PyTorch's max_split_size, relative to
 *   the request instead of a fixed size: a fresh 20 MiB segment always serves any large
 *   request under 10 MiB, and blocks up to twice a request serve it. The smallest block
 *   that fits is the one to test: if it is too big, every other is too.
 * - A freed block merges with its free neighbours in its segment at once. Segments go
 *   back only through fv_block_pool_release_free_segments (empty_cache, and the allocator's
 *   retry after an out-of-memory), or at once with caching off.
 *
 * Structures:
 * - A segment's blocks form a doubly linked list in address order (prev, next): a freed
 *   block looks at its two neighbours to merge, and a block with neither is a whole
 *   segment.
 * - The free blocks of each pool are a treap ordered by (size, address): a binary search
 *   tree kept balanced in expectation by heap-ordered random priorities, here from a
 *   splitmix64 sequence with a fixed seed, so that runs repeat. Best fit (the lower bound
 *   of the size), insertion and removal cost O(log n) expected, with the links inside the
 *   blocks (freeing never allocates), in about forty lines of split and join. A list
 *   scanned linearly costs O(n) per allocation with thousands of cached blocks; a sorted
 *   array costs an O(n) shift per insertion and must grow (allocate) when a block is
 *   freed; a red-black tree does as well as the treap in four times the code.
 * - Live blocks (allocated or held) are found by address in a hash table: open
 *   addressing with linear probing, Fibonacci hashing of the address, at most half full,
 *   deletion by backward shift (no tombstones), so free(ptr) costs O(1) expected.
 * - Block records of merged blocks are kept as spares for later splits. The host memory an
 *   allocation may need (two block records, a hash slot) is secured before anything
 *   changes, so a failed call changes nothing and a free never allocates.
 *
 * Build: see block_pool.h. */
#include "block_pool.h"

#include <stdlib.h>

enum {
  MIN_BLOCK = 512,               /* requests are rounded up to multiples of this */
  SMALL_REQUEST = 1 << 20,       /* rounded requests up to this are small */
  SMALL_SEGMENT = 2 << 20,       /* the segment of the small pool */
  LARGE_SEGMENT = 20 << 20,      /* the segment for large requests under OWN_SEGMENT_FROM */
  OWN_SEGMENT_FROM = 10 << 20,   /* from this size a request gets a segment of its own */
  OWN_SEGMENT_ROUND = 2 << 20,   /* ... rounded up to a multiple of this */
  MIN_LARGE_REST = SMALL_REQUEST /* a large block is split when more than this is left */
};

/* Block records an allocation may need: its own segment's and the rest after a split. */
enum { SPARES_NEEDED = 2, FIRST_HASH_SLOTS = 64 };

typedef enum block_state { BLOCK_FREE, BLOCK_ALLOCATED, BLOCK_HELD } block_state;

typedef struct block block;
struct block {
  char *ptr;
  size_t size;
  size_t requested; /* live blocks: the bytes asked for */
  block_state state;
  int small;             /* carved from a small segment */
  block *prev, *next;    /* the segment's blocks in address order (spares: next chains them) */
  block *left, *right;   /* free blocks: children in their pool's tree */
  uint64_t priority;     /* free blocks: the treap's heap order, greater above */
};

struct fv_block_pool {
  fv_block_pool_config config;
  block *small_free, *large_free; /* the free blocks of each pool: treaps */
  block **live;                   /* the hash table of live blocks by address; NULL: empty */
  size_t live_mask;               /* its slot count - 1 (a power of two) */
  size_t live_count;
  block *spares; /* unused block records, chained by next */
  int spare_count;
  uint64_t priority_seed;
  fv_block_pool_stats stats;
};

/* ---- sizes ---- */

static int round_request(size_t bytes, size_t *size) {
  if (bytes > SIZE_MAX - MIN_BLOCK) return 0;
  *size = bytes <= MIN_BLOCK ? MIN_BLOCK : (bytes + MIN_BLOCK - 1) / MIN_BLOCK * MIN_BLOCK;
  return 1;
}

static int is_small(size_t size) { return size <= SMALL_REQUEST; }

static int segment_size_for(const fv_block_pool *pool, size_t size, size_t *segment) {
  if (!pool->config.caching) *segment = size;
  else if (is_small(size)) *segment = SMALL_SEGMENT;
  else if (size < OWN_SEGMENT_FROM) *segment = LARGE_SEGMENT;
  else if (size > SIZE_MAX - OWN_SEGMENT_ROUND) return 0;
  else *segment = (size + OWN_SEGMENT_ROUND - 1) / OWN_SEGMENT_ROUND * OWN_SEGMENT_ROUND;
  return 1;
}

static int worth_splitting(const block *b, size_t size) {
  size_t rest = b->size - size;
  return b->small ? rest >= MIN_BLOCK : rest > MIN_LARGE_REST;
}

static int too_big_to_lend(const block *b, size_t size) {
  size_t rest = b->size - size;
  return rest > size && rest > LARGE_SEGMENT;
}

/* ---- the free trees: treaps ordered by (size, address) ---- */

static int precedes(const block *a, const block *b) {
  if (a->size != b->size) return a->size < b->size;
  return (uintptr_t)a->ptr < (uintptr_t)b->ptr;
}

/* Splits tree t into the blocks that precede key (*before) and the others (*after). */
static void tree_split(block *t, const block *key, block **before, block **after) {
  while (t) {
    if (precedes(t, key)) {
      *before = t;
      before = &t->right;
      t = t->right;
    } else {
      *after = t;
      after = &t->left;
      t = t->left;
    }
  }
  *before = *after = NULL;
}

/* Joins two trees whose blocks all precede those of the second. */
static block *tree_join(block *first, block *second) {
  block *root = NULL, **link = &root;
  while (first && second) {
    if (first->priority > second->priority) {
      *link = first;
      link = &first->right;
      first = first->right;
    } else {
      *link = second;
      link = &second->left;
      second = second->left;
    }
  }
  *link = first ? first : second;
  return root;
}

static void tree_insert(block **root, block *b) {
  while (*root && (*root)->priority > b->priority) root = precedes(b, *root) ? &(*root)->left : &(*root)->right;
  tree_split(*root, b, &b->left, &b->right);
  *root = b;
}

/* b must be in the tree. */
static void tree_remove(block **root, const block *b) {
  while (*root != b) root = precedes(b, *root) ? &(*root)->left : &(*root)->right;
  *root = tree_join(b->left, b->right);
}

/* The first block of at least size bytes in the tree's order, or NULL. */
static block *tree_best_fit(block *t, size_t size) {
  block *best = NULL;
  while (t) {
    if (t->size >= size) {
      best = t;
      t = t->left;
    } else {
      t = t->right;
    }
  }
  return best;
}

static block **free_tree_of(fv_block_pool *pool, int small) { return small ? &pool->small_free : &pool->large_free; }

/* splitmix64 */
static uint64_t next_priority(fv_block_pool *pool) {
  uint64_t z = pool->priority_seed += 0x9E3779B97F4A7C15u;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
  return z ^ (z >> 31);
}

static void insert_free(fv_block_pool *pool, block *b) {
  b->state = BLOCK_FREE;
  b->priority = next_priority(pool);
  tree_insert(free_tree_of(pool, b->small), b);
  pool->stats.cached_bytes += (int64_t)b->size;
}

static void remove_free(fv_block_pool *pool, block *b) {
  tree_remove(free_tree_of(pool, b->small), b);
  pool->stats.cached_bytes -= (int64_t)b->size;
}

/* ---- the live blocks by address: a hash table ---- */

static size_t home_slot(const fv_block_pool *pool, const void *ptr) {
  return (size_t)(((uint64_t)(uintptr_t)ptr * 0x9E3779B97F4A7C15u) >> 32) & pool->live_mask;
}

/* The slot that holds ptr, or the empty slot where its probe ends. */
static size_t live_slot(const fv_block_pool *pool, const void *ptr) {
  size_t i = home_slot(pool, ptr);
  while (pool->live[i] && pool->live[i]->ptr != ptr) i = (i + 1) & pool->live_mask;
  return i;
}

static block *live_find(const fv_block_pool *pool, const void *ptr) { return pool->live[live_slot(pool, ptr)]; }

/* Needs a free slot beyond half the table: see reserve_bookkeeping. */
static void live_insert(fv_block_pool *pool, block *b) {
  pool->live[live_slot(pool, b->ptr)] = b;
  pool->live_count++;
}

/* Takes ptr's block out of the table (NULL when absent), shifting back the entries
 * after it whose probe passed its slot. */
static block *live_remove(fv_block_pool *pool, const void *ptr) {
  size_t hole = live_slot(pool, ptr), mask = pool->live_mask;
  block *found = pool->live[hole];
  if (!found) return NULL;
  pool->live[hole] = NULL;
  for (size_t i = (hole + 1) & mask; pool->live[i]; i = (i + 1) & mask) {
    size_t home = home_slot(pool, pool->live[i]->ptr);
    if (((i - home) & mask) >= ((i - hole) & mask)) {
      pool->live[hole] = pool->live[i];
      pool->live[i] = NULL;
      hole = i;
    }
  }
  pool->live_count--;
  return found;
}

static int live_grow(fv_block_pool *pool) {
  size_t old_slots = pool->live_mask + 1;
  block **old = pool->live, **table = calloc(old_slots * 2, sizeof *table);
  if (!table) return 0;
  pool->live = table;
  pool->live_mask = old_slots * 2 - 1;
  for (size_t i = 0; i < old_slots; i++)
    if (old[i]) pool->live[live_slot(pool, old[i]->ptr)] = old[i];
  free(old);
  return 1;
}

/* ---- block records ---- */

static block *take_spare(fv_block_pool *pool) {
  block *b = pool->spares;
  pool->spares = b->next;
  pool->spare_count--;
  return b;
}

static void keep_spare(fv_block_pool *pool, block *b) {
  b->next = pool->spares;
  pool->spares = b;
  pool->spare_count++;
}

/* Secures the host memory that one allocation may need: two block records and a hash
 * slot with the table at most half full. */
static int reserve_bookkeeping(fv_block_pool *pool) {
  while (pool->spare_count < SPARES_NEEDED) {
    block *b = malloc(sizeof *b);
    if (!b) return 0;
    keep_spare(pool, b);
  }
  return (pool->live_count + 1) * 2 <= pool->live_mask + 1 || live_grow(pool);
}

/* ---- allocation ---- */

/* The best-fit free block for size, off its tree, or NULL; any_size: lent even when too
 * big (the last resort when no new segment can be had). */
static block *take_cached_block(fv_block_pool *pool, size_t size, int any_size) {
  block *b = tree_best_fit(*free_tree_of(pool, is_small(size)), size);
  if (!b || (!any_size && too_big_to_lend(b, size))) return NULL;
  remove_free(pool, b);
  return b;
}

static fv_block_pool_result take_new_segment(fv_block_pool *pool, size_t size, block **out) {
  size_t bytes;
  if (!segment_size_for(pool, size, &bytes)) return FV_BLOCK_POOL_TOO_LARGE;
  void *segment = pool->config.segment_alloc(bytes, pool->config.context);
  if (!segment) return FV_BLOCK_POOL_NO_SEGMENT;
  block *b = take_spare(pool);
  b->ptr = segment;
  b->size = bytes;
  b->small = is_small(size);
  b->prev = b->next = NULL;
  pool->stats.segments++;
  pool->stats.reserved_bytes += (int64_t)bytes;
  pool->stats.blocks++;
  *out = b;
  return FV_BLOCK_POOL_OK;
}

/* Cuts b down to size bytes; the rest becomes a free block after it. */
static void split_off_rest(fv_block_pool *pool, block *b, size_t size) {
  block *rest = take_spare(pool);
  rest->ptr = b->ptr + size;
  rest->size = b->size - size;
  rest->small = b->small;
  rest->prev = b;
  rest->next = b->next;
  if (b->next) b->next->prev = rest;
  b->next = rest;
  b->size = size;
  pool->stats.blocks++;
  insert_free(pool, rest);
}

static void hand_out(fv_block_pool *pool, block *b, size_t requested) {
  b->state = BLOCK_ALLOCATED;
  b->requested = requested;
  live_insert(pool, b);
  pool->stats.allocated_blocks++;
  pool->stats.allocated_bytes += (int64_t)b->size;
  if (pool->stats.allocated_bytes > pool->stats.peak_allocated_bytes)
    pool->stats.peak_allocated_bytes = pool->stats.allocated_bytes;
}

fv_block_pool_result fv_block_pool_alloc(fv_block_pool *pool, size_t bytes, void **out) {
  size_t size;
  *out = NULL;
  if (!round_request(bytes, &size)) return FV_BLOCK_POOL_TOO_LARGE;
  if (!reserve_bookkeeping(pool)) return FV_BLOCK_POOL_NO_HOST_MEMORY;
  block *b = take_cached_block(pool, size, 0);
  if (!b) {
    fv_block_pool_result result = take_new_segment(pool, size, &b);
    if (result == FV_BLOCK_POOL_NO_SEGMENT) b = take_cached_block(pool, size, 1);
    if (!b) return result;
  }
  if (worth_splitting(b, size)) split_off_rest(pool, b, size);
  hand_out(pool, b, bytes);
  *out = b->ptr;
  return FV_BLOCK_POOL_OK;
}

/* ---- freeing ---- */

/* b takes in its next block (free, out of the tree), whose record becomes a spare. */
static void absorb_next(fv_block_pool *pool, block *b) {
  block *next = b->next;
  b->size += next->size;
  b->next = next->next;
  if (next->next) next->next->prev = b;
  pool->stats.blocks--;
  keep_spare(pool, next);
}

/* Merges b with its free neighbours; returns the merged block (not in a tree yet). */
static block *merge_with_free_neighbours(fv_block_pool *pool, block *b) {
  if (b->next && b->next->state == BLOCK_FREE) {
    remove_free(pool, b->next);
    absorb_next(pool, b);
  }
  if (b->prev && b->prev->state == BLOCK_FREE) {
    b = b->prev;
    remove_free(pool, b);
    absorb_next(pool, b);
  }
  return b;
}

/* Gives back the segment that is the whole of b (in no tree, not live). */
static void release_segment(fv_block_pool *pool, block *b) {
  pool->config.segment_free(b->ptr, b->size, pool->config.context);
  pool->stats.segments--;
  pool->stats.reserved_bytes -= (int64_t)b->size;
  pool->stats.blocks--;
  keep_spare(pool, b);
}

static void stop_counting_live(fv_block_pool *pool, const block *b) {
  if (b->state == BLOCK_HELD) {
    pool->stats.held_blocks--;
    pool->stats.held_bytes -= (int64_t)b->size;
  } else {
    pool->stats.allocated_blocks--;
    pool->stats.allocated_bytes -= (int64_t)b->size;
  }
}

int fv_block_pool_free(fv_block_pool *pool, void *ptr) {
  block *b = live_remove(pool, ptr);
  if (!b) return 0;
  stop_counting_live(pool, b);
  if (pool->config.caching) insert_free(pool, merge_with_free_neighbours(pool, b));
  else release_segment(pool, b);
  return 1;
}

int fv_block_pool_hold(fv_block_pool *pool, void *ptr) {
  block *b = live_find(pool, ptr);
  if (!b || b->state != BLOCK_ALLOCATED) return 0;
  stop_counting_live(pool, b);
  b->state = BLOCK_HELD;
  pool->stats.held_blocks++;
  pool->stats.held_bytes += (int64_t)b->size;
  return 1;
}

int fv_block_pool_lookup(const fv_block_pool *pool, const void *ptr, fv_block_info *info) {
  const block *b = live_find(pool, ptr);
  if (!b) return 0;
  if (info) {
    info->size = b->size;
    info->requested = b->requested;
    info->held = b->state == BLOCK_HELD;
  }
  return 1;
}

/* ---- giving segments back ---- */

/* Takes apart the tree t: its whole-segment blocks are given back, the others go into
 * *kept. */
static void sift_free_tree(fv_block_pool *pool, block *t, block **kept) {
  if (!t) return;
  block *left = t->left, *right = t->right;
  sift_free_tree(pool, left, kept);
  sift_free_tree(pool, right, kept);
  if (t->prev || t->next) {
    tree_insert(kept, t);
    return;
  }
  pool->stats.cached_bytes -= (int64_t)t->size;
  release_segment(pool, t);
}

size_t fv_block_pool_release_free_segments(fv_block_pool *pool) {
  int64_t reserved = pool->stats.reserved_bytes;
  for (int small = 0; small < 2; small++) {
    block **tree = free_tree_of(pool, small), *all = *tree;
    *tree = NULL;
    sift_free_tree(pool, all, tree);
  }
  return (size_t)(reserved - pool->stats.reserved_bytes);
}

/* ---- the pool ---- */

fv_block_pool *fv_block_pool_new(const fv_block_pool_config *config) {
  fv_block_pool *pool = calloc(1, sizeof *pool);
  if (!pool) return NULL;
  pool->live = calloc(FIRST_HASH_SLOTS, sizeof *pool->live);
  if (!pool->live) {
    free(pool);
    return NULL;
  }
  pool->live_mask = FIRST_HASH_SLOTS - 1;
  pool->config = *config;
  return pool;
}

fv_block_pool_stats fv_block_pool_get_stats(const fv_block_pool *pool) { return pool->stats; }

void fv_block_pool_reset_peak(fv_block_pool *pool) {
  pool->stats.peak_allocated_bytes = pool->stats.allocated_bytes;
}

/* Calls visit on every block record in use: live, then free; visit may free b. */
static void visit_tree(fv_block_pool *pool, block *t, void (*visit)(fv_block_pool *, block *)) {
  if (!t) return;
  block *left = t->left, *right = t->right;
  visit_tree(pool, left, visit);
  visit_tree(pool, right, visit);
  visit(pool, t);
}

static void visit_blocks(fv_block_pool *pool, void (*visit)(fv_block_pool *, block *)) {
  for (size_t i = 0; i <= pool->live_mask; i++)
    if (pool->live[i]) visit(pool, pool->live[i]);
  visit_tree(pool, pool->small_free, visit);
  visit_tree(pool, pool->large_free, visit);
}

/* Gives back b's segment when b is its first block. */
static void release_segment_at_head(fv_block_pool *pool, block *b) {
  if (b->prev) return;
  size_t bytes = 0;
  for (const block *in = b; in; in = in->next) bytes += in->size;
  pool->config.segment_free(b->ptr, bytes, pool->config.context);
}

static void free_record(fv_block_pool *pool, block *b) {
  (void)pool;
  free(b);
}

void fv_block_pool_delete(fv_block_pool *pool) {
  if (!pool) return;
  visit_blocks(pool, release_segment_at_head);
  visit_blocks(pool, free_record);
  while (pool->spares) free(take_spare(pool));
  free(pool->live);
  free(pool);
}
