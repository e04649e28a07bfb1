/* safetensors.c: tensors to and from safetensors files (see fovea_io.h for the format
 * and the API). Writes are atomic (temporary file, fsync, rename, fsync of the
 * directory). Reads treat the file as hostile: the header is parsed by a small strict
 * JSON parser that knows only the shapes the format uses, every size is checked in
 * 64-bit unsigned arithmetic before use, and every violation is an FV_ERR_IO naming
 * the file and the problem.
 *
 * Test hook: when the environment variable FOVEA_TEST_CRASH_AFTER_BYTES=K is set, the
 * writer calls _exit(1) once K bytes of the temporary file are written, so that the
 * specs can check that a save dying part way leaves the previous file intact. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "internal.h"
#include "fovea_io.h"

enum { HEADER_LIMIT = 100000000 };  /* bytes of JSON a reader accepts */
enum { NAME_SHOWN = 200 };          /* characters of a name quoted in messages */

static const int big_endian = __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__;

/* The dtypes of the format. size 0: sub-byte types, refused when opening. fv -1: known
 * but not readable into a fovea tensor (getting one fails). */
typedef struct st_dtype {
  const char *name;
  int size;
  int fv;
} st_dtype;

static const st_dtype st_dtypes[] = {
    {"F32", 4, FV_FLOAT32}, {"F64", 8, FV_FLOAT64}, {"I64", 8, FV_INT64}, {"U8", 1, FV_UINT8},
    {"F16", 2, -1},        {"BF16", 2, -1},        {"BOOL", 1, -1},      {"I8", 1, -1},
    {"I16", 2, -1},        {"U16", 2, -1},         {"I32", 4, -1},       {"U32", 4, -1},
    {"U64", 8, -1},        {"C64", 8, -1},         {"F8_E5M2", 1, -1},   {"F8_E4M3", 1, -1},
    {"F8_E8M0", 1, -1},    {"F4", 0, -1},          {"F6_E2M3", 0, -1},   {"F6_E3M2", 0, -1},
};
enum { ST_DTYPE_COUNT = sizeof st_dtypes / sizeof st_dtypes[0] };

static int st_dtype_of_fv(int dtype) {
  for (int i = 0; i < ST_DTYPE_COUNT; i++)
    if (st_dtypes[i].fv == dtype) return i;
  return -1;
}

/* Reverses the bytes of each size-byte element (big-endian hosts only). */
static void swap_elements(unsigned char *p, size_t bytes, int size) {
  if (size <= 1) return;
  for (size_t i = 0; i + (size_t)size <= bytes; i += (size_t)size)
    for (int a = 0, b = size - 1; a < b; a++, b--) {
      unsigned char c = p[i + a];
      p[i + a] = p[i + b];
      p[i + b] = c;
    }
}

/* Length of the valid UTF-8 sequence (no overlong forms, no surrogates, at most
 * U+10FFFF) at the start of s[0..n), or 0 when it is not one. */
static size_t utf8_sequence(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  unsigned cp, min;
  if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1f, min = 0x80;
  else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0f, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07, min = 0x10000;
  else return 0;
  if (n < len) return 0;
  for (size_t k = 1; k < len; k++) {
    if ((s[k] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[k] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

/* 1 when the C string s is valid UTF-8. */
static int utf8_valid(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  size_t n = strlen(s), i = 0;
  while (i < n) {
    size_t k = utf8_sequence(p + i, n - i);
    if (!k) return 0;
    i += k;
  }
  return 1;
}

/* ======================================================================================
 * writing */

typedef struct sbuf {
  char *data;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
      b->oom = 1;
      return;
    }
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v) {
  char tmp[32];
  snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
  sb_puts(b, tmp);
}

/* s as a JSON string: quotes, backslashes and control characters escaped; UTF-8 as is. */
static void sb_json_string(sbuf *b, const char *s) {
  sb_put(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char tmp[8];
    switch (*p) {
    case '"': sb_put(b, "\\\"", 2); break;
    case '\\': sb_put(b, "\\\\", 2); break;
    case '\b': sb_put(b, "\\b", 2); break;
    case '\f': sb_put(b, "\\f", 2); break;
    case '\n': sb_put(b, "\\n", 2); break;
    case '\r': sb_put(b, "\\r", 2); break;
    case '\t': sb_put(b, "\\t", 2); break;
    default:
      if (*p < 0x20) {
        snprintf(tmp, sizeof tmp, "\\u%04x", *p);
        sb_puts(b, tmp);
      } else {
        sb_put(b, (const char *)p, 1);
      }
    }
  }
  sb_put(b, "\"", 1);
}

static int cmp_strptr(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first string that occurs twice in s[0..n), or NULL. */
static const char *find_duplicate(const char *const *s, int n, int *oom) {
  *oom = 0;
  if (n < 2) return NULL;
  const char **sorted = malloc((size_t)n * sizeof *sorted);
  if (!sorted) {
    *oom = 1;
    return NULL;
  }
  memcpy(sorted, s, (size_t)n * sizeof *sorted);
  qsort(sorted, (size_t)n, sizeof *sorted, cmp_strptr);
  const char *dup = NULL;
  for (int i = 1; i < n && !dup; i++)
    if (strcmp(sorted[i - 1], sorted[i]) == 0) dup = sorted[i];
  free(sorted);
  return dup;
}

typedef struct writer {
  const char *path;
  char *tmp;
  int fd;
  uint64_t written;
  long long crash_after;   /* FOVEA_TEST_CRASH_AFTER_BYTES, or -1 */
} writer;

static int write_fail(writer *w, const char *what) {
  return fv_fail(FV_ERR_IO, "save '%s': cannot %s '%s': %s", w->path, what, w->tmp, strerror(errno));
}

/* Writes n bytes to the temporary file. The test hook FOVEA_TEST_CRASH_AFTER_BYTES=K
 * makes the process _exit(1) once K bytes are written, as a crash mid-write would. */
static int write_all(writer *w, const void *data, size_t n) {
  const char *p = data;
  if (w->crash_after >= 0 && w->written + n > (uint64_t)w->crash_after) {
    size_t part = (size_t)((uint64_t)w->crash_after - w->written);
    while (part > 0) {
      ssize_t k = write(w->fd, p, part);
      if (k <= 0) break;
      p += k;
      part -= (size_t)k;
    }
    _exit(1);
  }
  while (n > 0) {
    ssize_t k = write(w->fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return write_fail(w, "write");
    }
    if (k == 0) {
      errno = EIO;
      return write_fail(w, "write");
    }
    p += k;
    n -= (size_t)k;
    w->written += (uint64_t)k;
  }
  return FV_OK;
}

/* Writes bytes of elements of size elsize, little-endian. */
static int write_elements(writer *w, const void *data, size_t bytes, int elsize) {
  if (!big_endian || elsize <= 1) return write_all(w, data, bytes);
  enum { CHUNK = 1 << 20 };
  unsigned char *chunk = malloc(CHUNK);
  if (!chunk) return fv_fail(FV_ERR_MEMORY, "save '%s': out of memory", w->path);
  const unsigned char *p = data;
  int status = FV_OK;
  while (bytes > 0 && !status) {
    size_t k = bytes < CHUNK ? bytes : CHUNK;
    memcpy(chunk, p, k);
    swap_elements(chunk, k, elsize);
    status = write_all(w, chunk, k);
    p += k;
    bytes -= k;
  }
  free(chunk);
  return status;
}

/* Copies the message of the last error, so that a new one can quote it. */
static void last_error_copy(char *buf, size_t size) { snprintf(buf, size, "%s", fv_last_error()); }

static int write_tensor(writer *w, const char *name, const fv_tensor *t, size_t bytes) {
  char reason[512];
  fv_tensor *c = NULL;
  int status = fv_contiguous(&c, t);
  if (status) {
    last_error_copy(reason, sizeof reason);
    return fv_fail(status, "save '%s': tensor '%.*s': %s", w->path, NAME_SHOWN, name, reason);
  }
  int elsize = fv_dtype_size(c->scalar_type);
  if (c->device_type == FV_CPU) {
    status = write_elements(w, fv_tensor_data(c), bytes, elsize);
  } else {
    const fv_backend *be = fv_backend_for("save", c->device_type);
    void *host = bytes ? malloc(bytes) : NULL;
    if (!be || !be->to_host) {
      status = fv_fail(FV_ERR_DEVICE, "save '%s': tensor '%.*s': no way to copy it from %s", w->path, NAME_SHOWN,
                       name, fv_device_name(c->device_type));
    } else if (bytes && !host) {
      status = fv_fail(FV_ERR_MEMORY, "save '%s': tensor '%.*s': cannot allocate %zu bytes of host memory", w->path,
                       NAME_SHOWN, name, bytes);
    } else if (bytes && (status = be->to_host(host, c, bytes)) != FV_OK) {
      last_error_copy(reason, sizeof reason);
      status = fv_fail(status, "save '%s': tensor '%.*s': %s", w->path, NAME_SHOWN, name, reason);
    } else {
      status = write_elements(w, host, bytes, elsize);
    }
    free(host);
  }
  fv_tensor_release(c);
  return status;
}

/* The directory part of path ("." when there is none), malloc'ed. */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return strdup(".");
  if (slash == path) return strdup("/");
  size_t n = (size_t)(slash - path);
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, path, n);
    d[n] = '\0';
  }
  return d;
}

/* Checks the arguments; on success *st_types holds each tensor's dtype index. */
static int check_save_args(const char *path, int n, const char *const *names, const fv_tensor *const *tensors,
                           int n_meta, const char *const *meta_keys, const char *const *meta_values, int *st_types) {
  for (int i = 0; i < n; i++) {
    const char *name = names[i];
    const fv_tensor *t = tensors[i];
    if (!name) return fv_fail(FV_ERR_ARGUMENT, "save '%s': name %d is NULL", path, i);
    if (!utf8_valid(name))
      return fv_fail(FV_ERR_ARGUMENT, "save '%s': name '%.*s' is not valid UTF-8", path, NAME_SHOWN, name);
    if (strcmp(name, "__metadata__") == 0)
      return fv_fail(FV_ERR_ARGUMENT, "save '%s': '__metadata__' is reserved and cannot name a tensor", path);
    if (!t) return fv_fail(FV_ERR_ARGUMENT, "save '%s': tensor '%.*s' is NULL", path, NAME_SHOWN, name);
    if (!t->storage)
      return fv_fail(FV_ERR_FREED, "save '%s': tensor '%.*s' (%s) was freed by :free()", path, NAME_SHOWN, name,
                     fv_shape_of(t));
    st_types[i] = st_dtype_of_fv(t->scalar_type);
    if (st_types[i] < 0)
      return fv_fail(FV_ERR_DTYPE, "save '%s': tensor '%.*s' has dtype %s; safetensors files hold float32, float64, "
                     "int64 and uint8", path, NAME_SHOWN, name, fv_dtype_name(t->scalar_type));
  }
  for (int i = 0; i < n_meta; i++) {
    const char *k = meta_keys[i], *v = meta_values[i];
    if (!k || !v) return fv_fail(FV_ERR_ARGUMENT, "save '%s': metadata key or value %d is NULL", path, i);
    if (!utf8_valid(k))
      return fv_fail(FV_ERR_ARGUMENT, "save '%s': metadata key '%.*s' is not valid UTF-8", path, NAME_SHOWN, k);
    if (!utf8_valid(v))
      return fv_fail(FV_ERR_ARGUMENT, "save '%s': metadata value of '%.*s' is not valid UTF-8", path, NAME_SHOWN, k);
  }
  int oom;
  const char *dup = find_duplicate(names, n, &oom);
  if (oom) return fv_fail(FV_ERR_MEMORY, "save '%s': out of memory", path);
  if (dup) return fv_fail(FV_ERR_ARGUMENT, "save '%s': tensor name '%.*s' given twice", path, NAME_SHOWN, dup);
  dup = find_duplicate(meta_keys, n_meta, &oom);
  if (oom) return fv_fail(FV_ERR_MEMORY, "save '%s': out of memory", path);
  if (dup) return fv_fail(FV_ERR_ARGUMENT, "save '%s': metadata key '%.*s' given twice", path, NAME_SHOWN, dup);
  return FV_OK;
}

/* The JSON header, padded with spaces to a multiple of 8 bytes. */
static int build_header(sbuf *h, const char *path, int n, const char *const *names, const fv_tensor *const *tensors,
                        int n_meta, const char *const *meta_keys, const char *const *meta_values,
                        const int *st_types, size_t *bytes) {
  sb_put(h, "{", 1);
  if (n_meta > 0) {
    sb_puts(h, "\"__metadata__\":{");
    for (int i = 0; i < n_meta; i++) {
      if (i) sb_put(h, ",", 1);
      sb_json_string(h, meta_keys[i]);
      sb_put(h, ":", 1);
      sb_json_string(h, meta_values[i]);
    }
    sb_put(h, "}", 1);
  }
  uint64_t offset = 0;
  for (int i = 0; i < n; i++) {
    const fv_tensor *t = tensors[i];
    bytes[i] = (size_t)fv_tensor_numel(t) * (size_t)st_dtypes[st_types[i]].size;
    if (n_meta > 0 || i) sb_put(h, ",", 1);
    sb_json_string(h, names[i]);
    sb_puts(h, ":{\"dtype\":\"");
    sb_puts(h, st_dtypes[st_types[i]].name);
    sb_puts(h, "\",\"shape\":[");
    for (int d = 0; d < t->ndim; d++) {
      if (d) sb_put(h, ",", 1);
      sb_u64(h, (uint64_t)t->sizes[d]);
    }
    sb_puts(h, "],\"data_offsets\":[");
    sb_u64(h, offset);
    sb_put(h, ",", 1);
    offset += bytes[i];
    sb_u64(h, offset);
    sb_puts(h, "]}");
  }
  sb_put(h, "}", 1);
  while (!h->oom && h->len % 8) sb_put(h, " ", 1);
  if (h->oom) return fv_fail(FV_ERR_MEMORY, "save '%s': out of memory for the header", path);
  return FV_OK;
}

static int write_file(writer *w, const sbuf *h, int n, const char *const *names, const fv_tensor *const *tensors,
                      const size_t *bytes) {
  unsigned char len[8];
  uint64_t hl = h->len;
  for (int i = 0; i < 8; i++) len[i] = (unsigned char)(hl >> (8 * i));
  FV_TRY(write_all(w, len, sizeof len));
  FV_TRY(write_all(w, h->data, h->len));
  for (int i = 0; i < n; i++) FV_TRY(write_tensor(w, names[i], tensors[i], bytes[i]));
  while (fsync(w->fd) != 0)
    if (errno != EINTR) return write_fail(w, "sync");
  return FV_OK;
}

int fv_safetensors_save(const char *path, int n, const char *const *names, const fv_tensor *const *tensors,
                        int n_meta, const char *const *meta_keys, const char *const *meta_values) {
  if (!path || !*path) return fv_fail(FV_ERR_ARGUMENT, "save: a path is required");
  if (n < 0 || (n > 0 && (!names || !tensors)))
    return fv_fail(FV_ERR_ARGUMENT, "save '%s': %d tensors, names and tensors arrays are required", path, n);
  if (n_meta < 0 || (n_meta > 0 && (!meta_keys || !meta_values)))
    return fv_fail(FV_ERR_ARGUMENT, "save '%s': %d metadata entries, key and value arrays are required", path, n_meta);

  int *st_types = malloc(((size_t)n + 1) * sizeof *st_types);
  size_t *bytes = malloc(((size_t)n + 1) * sizeof *bytes);
  sbuf h = {0};
  writer w = {path, NULL, -1, 0, -1};
  int status = FV_OK;
  if (!st_types || !bytes) {
    status = fv_fail(FV_ERR_MEMORY, "save '%s': out of memory", path);
    goto done;
  }
  status = check_save_args(path, n, names, tensors, n_meta, meta_keys, meta_values, st_types);
  if (!status) status = build_header(&h, path, n, names, tensors, n_meta, meta_keys, meta_values, st_types, bytes);
  if (status) goto done;

  const char *crash = getenv("FOVEA_TEST_CRASH_AFTER_BYTES");
  if (crash && *crash) {
    char *end;
    long long k = strtoll(crash, &end, 10);
    if (*end == '\0' && k >= 0) w.crash_after = k;
  }
  size_t tmp_size = strlen(path) + 32;
  w.tmp = malloc(tmp_size);
  if (!w.tmp) {
    status = fv_fail(FV_ERR_MEMORY, "save '%s': out of memory", path);
    goto done;
  }
  snprintf(w.tmp, tmp_size, "%s.tmp.%ld", path, (long)getpid());
  w.fd = open(w.tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (w.fd < 0) {
    status = write_fail(&w, "create");
    goto done;
  }
  status = write_file(&w, &h, n, names, tensors, bytes);
  int fd = w.fd;
  w.fd = -1;
  if (close(fd) != 0 && !status) status = write_fail(&w, "close");
  if (!status && rename(w.tmp, path) != 0)
    status = fv_fail(FV_ERR_IO, "save '%s': cannot rename '%s' over it: %s", path, w.tmp, strerror(errno));
  if (status) {
    unlink(w.tmp);
    goto done;
  }
  /* the rename is durable once the directory is synced */
  char *dir = dir_of(path);
  if (!dir) {
    status = fv_fail(FV_ERR_MEMORY, "save '%s': out of memory", path);
    goto done;
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    status = fv_fail(FV_ERR_IO, "save '%s': written, but cannot open its directory '%s' to sync it: %s", path, dir,
                     strerror(errno));
  } else {
    int r;
    while ((r = fsync(dfd)) != 0 && errno == EINTR) {
    }
    if (r != 0 && errno != EINVAL && errno != ENOTSUP && errno != EOPNOTSUPP)
      status = fv_fail(FV_ERR_IO, "save '%s': written, but cannot sync its directory '%s': %s", path, dir,
                       strerror(errno));
    close(dfd);
  }
  free(dir);

done:
  if (w.fd >= 0) close(w.fd);
  free(w.tmp);
  free(h.data);
  free(st_types);
  free(bytes);
  return status;
}

/* ======================================================================================
 * reading */

typedef struct st_entry {
  char *name;
  int dtype;                       /* index into st_dtypes */
  int ndim;                        /* may exceed FV_MAX_DIMS: fv_safetensors_get refuses those */
  int64_t shape[FV_MAX_DIMS];
  uint64_t nbytes;                 /* numel * element size */
  uint64_t begin, end;             /* within the data section */
} st_entry;

struct fv_safetensors {
  char *path;
  int fd;
  uint64_t data_start, data_size;
  int n, cap;
  st_entry *entries;
  st_entry **by_name;              /* sorted by name, for lookups */
  int n_meta, meta_cap;
  char **meta_keys, **meta_values;
};

/* Fails with FV_ERR_IO and "load 'path': <message>". */
static int load_fail(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int load_fail(const char *path, const char *fmt, ...) {
  char msg[768];
  va_list args;
  va_start(args, fmt);
  vsnprintf(msg, sizeof msg, fmt, args);
  va_end(args);
  return fv_fail(FV_ERR_IO, "load '%s': %s", path, msg);
}

typedef struct parser {
  const char *path;
  const unsigned char *s;
  size_t n, pos;
  fv_safetensors *f;
} parser;

static int syntax(parser *p, const char *expected) {
  if (p->pos >= p->n)
    return load_fail(p->path, "header is not valid JSON: expected %s, found the end of the header (%zu bytes)",
                     expected, p->n);
  unsigned c = p->s[p->pos];
  if (c >= 0x20 && c < 0x7f)
    return load_fail(p->path, "header is not valid JSON: expected %s at header byte %zu, found '%c'", expected, p->pos,
                     (char)c);
  return load_fail(p->path, "header is not valid JSON: expected %s at header byte %zu, found byte 0x%02x", expected,
                   p->pos, c);
}

static void skip_ws(parser *p) {
  while (p->pos < p->n) {
    unsigned char c = p->s[p->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->pos++;
  }
}

static int peek(parser *p) { return p->pos < p->n ? p->s[p->pos] : -1; }

static int expect(parser *p, char c, const char *what) {
  skip_ws(p);
  if (peek(p) != (unsigned char)c) return syntax(p, what);
  p->pos++;
  return FV_OK;
}

/* The 4 hex digits at header byte at (the caller checked that they are there). */
static int hex4(parser *p, size_t at, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = p->s[at + i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return load_fail(p->path, "header is not valid JSON: bad \\u escape at header byte %zu", at - 2);
    v = v * 16 + d;
  }
  *out = v;
  return FV_OK;
}

/* A JSON string at the current position, decoded into a new NUL-terminated string.
 * Strings holding U+0000 are refused (names and metadata are C strings). */
static int parse_string(parser *p, char **out) {
  *out = NULL;
  skip_ws(p);
  if (peek(p) != '"') return syntax(p, "a string");
  size_t start = ++p->pos, end = start;
  while (end < p->n && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
  if (end >= p->n)
    return load_fail(p->path, "header is not valid JSON: string at header byte %zu has no closing quote", start - 1);
  char *d = malloc(end - start + 1);
  if (!d) return fv_fail(FV_ERR_MEMORY, "load '%s': out of memory for the header", p->path);
  size_t o = 0, i = start;
  while (i < end) {
    unsigned c = p->s[i];
    if (c < 0x20) {
      free(d);
      return load_fail(p->path, "header is not valid JSON: control character 0x%02x in a string at header byte %zu", c,
                       i);
    }
    if (c >= 0x80) {
      size_t k = utf8_sequence(p->s + i, end - i);
      if (!k) {
        free(d);
        return load_fail(p->path, "header is not valid UTF-8 at header byte %zu", i);
      }
      memcpy(d + o, p->s + i, k);
      o += k;
      i += k;
      continue;
    }
    if (c != '\\') {
      d[o++] = (char)c;
      i++;
      continue;
    }
    unsigned e = p->s[i + 1];   /* i + 1 < end: the scan above stepped over it */
    i += 2;
    switch (e) {
    case '"': d[o++] = '"'; break;
    case '\\': d[o++] = '\\'; break;
    case '/': d[o++] = '/'; break;
    case 'b': d[o++] = '\b'; break;
    case 'f': d[o++] = '\f'; break;
    case 'n': d[o++] = '\n'; break;
    case 'r': d[o++] = '\r'; break;
    case 't': d[o++] = '\t'; break;
    case 'u': {
      unsigned cp, lo;
      if (i + 4 > end) {
        free(d);
        return load_fail(p->path, "header is not valid JSON: short \\u escape at header byte %zu", i - 2);
      }
      if (hex4(p, i, &cp)) {
        free(d);
        return FV_ERR_IO;
      }
      i += 4;
      if (cp >= 0xdc00 && cp <= 0xdfff) {
        free(d);
        return load_fail(p->path, "header is not valid JSON: lone low surrogate \\u%04x at header byte %zu", cp, i - 6);
      }
      if (cp >= 0xd800 && cp <= 0xdbff) {
        if (i + 6 > end || p->s[i] != '\\' || p->s[i + 1] != 'u' || hex4(p, i + 2, &lo) || lo < 0xdc00 ||
            lo > 0xdfff) {
          free(d);
          return load_fail(p->path, "header is not valid JSON: high surrogate \\u%04x at header byte %zu is not "
                           "followed by a low one", cp, i - 6);
        }
        i += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
      }
      if (cp == 0) {
        free(d);
        return load_fail(p->path, "string at header byte %zu holds \\u0000, which names and metadata cannot", i - 6);
      }
      if (cp < 0x80) {
        d[o++] = (char)cp;
      } else if (cp < 0x800) {
        d[o++] = (char)(0xc0 | (cp >> 6));
        d[o++] = (char)(0x80 | (cp & 0x3f));
      } else if (cp < 0x10000) {
        d[o++] = (char)(0xe0 | (cp >> 12));
        d[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        d[o++] = (char)(0x80 | (cp & 0x3f));
      } else {
        d[o++] = (char)(0xf0 | (cp >> 18));
        d[o++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        d[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        d[o++] = (char)(0x80 | (cp & 0x3f));
      }
      break;
    }
    default:
      free(d);
      return load_fail(p->path, "header is not valid JSON: bad escape '\\%c' at header byte %zu",
                       e >= 0x20 && e < 0x7f ? (char)e : '?', i - 2);
    }
  }
  d[o] = '\0';
  p->pos = end + 1;
  *out = d;
  return FV_OK;
}

/* A JSON integer (no fraction or exponent) as a sign and a magnitude. */
static int parse_int(parser *p, int *negative, uint64_t *value) {
  skip_ws(p);
  size_t start = p->pos;
  *negative = 0;
  if (peek(p) == '-') {
    *negative = 1;
    p->pos++;
  }
  int c = peek(p);
  if (c < '0' || c > '9') {
    p->pos = start;
    return syntax(p, "an integer");
  }
  uint64_t v = 0;
  if (c == '0') {
    p->pos++;
    c = peek(p);
    if (c >= '0' && c <= '9')
      return load_fail(p->path, "header is not valid JSON: number with a leading zero at header byte %zu", start);
  } else {
    while ((c = peek(p)) >= '0' && c <= '9') {
      unsigned digit = (unsigned)(c - '0');
      if (v > (UINT64_MAX - digit) / 10)
        return load_fail(p->path, "integer at header byte %zu is too large", start);
      v = v * 10 + digit;
      p->pos++;
    }
  }
  c = peek(p);
  if (c == '.' || c == 'e' || c == 'E')
    return load_fail(p->path, "number at header byte %zu is not an integer", start);
  *value = v;
  return FV_OK;
}

/* "2x3x4" (or "scalar") for messages; at most FV_MAX_DIMS dims are known. */
static const char *shape_text(const st_entry *e, char *buf, size_t size) {
  if (e->ndim == 0) {
    snprintf(buf, size, "scalar");
    return buf;
  }
  size_t used = 0;
  buf[0] = '\0';
  for (int d = 0; d < e->ndim && d < FV_MAX_DIMS && used < size; d++) {
    int k = snprintf(buf + used, size - used, d ? "x%lld" : "%lld", (long long)e->shape[d]);
    if (k < 0) break;
    used += (size_t)k;
  }
  if (e->ndim > FV_MAX_DIMS && used < size) snprintf(buf + used, size - used, "x... (%d dims)", e->ndim);
  return buf;
}

/* One tensor's {"dtype": .., "shape": [..], "data_offsets": [b, e]}. */
static int parse_entry(parser *p, st_entry *e) {
  const char *path = p->path, *name = e->name;
  int have_dtype = 0, have_shape = 0, have_offsets = 0, neg;
  uint64_t numel = 1, v;
  int overflow = 0;
  e->dtype = -1;
  skip_ws(p);
  if (peek(p) != '{')
    return load_fail(path, "tensor '%.*s': expected an object {\"dtype\", \"shape\", \"data_offsets\"} at header "
                     "byte %zu", NAME_SHOWN, name, p->pos);
  p->pos++;
  skip_ws(p);
  if (peek(p) == '}') {
    p->pos++;
  } else {
    for (;;) {
      char *key;
      FV_TRY(parse_string(p, &key));
      int status = expect(p, ':', "':'");
      int *seen = strcmp(key, "dtype") == 0 ? &have_dtype
                  : strcmp(key, "shape") == 0 ? &have_shape
                  : strcmp(key, "data_offsets") == 0 ? &have_offsets : NULL;
      if (!status && !seen)
        status = load_fail(path, "tensor '%.*s' has an unknown key '%.*s'", NAME_SHOWN, name, NAME_SHOWN, key);
      if (!status && *seen)
        status = load_fail(path, "tensor '%.*s' has the key '%s' twice", NAME_SHOWN, name, key);
      if (status) {
        free(key);
        return status;
      }
      *seen = 1;
      if (seen == &have_dtype) {
        free(key);
        char *dt;
        FV_TRY(parse_string(p, &dt));
        for (int i = 0; i < ST_DTYPE_COUNT; i++)
          if (strcmp(dt, st_dtypes[i].name) == 0) e->dtype = i;
        if (e->dtype < 0) {
          status = load_fail(path, "tensor '%.*s' has an unknown dtype '%.*s'", NAME_SHOWN, name, 40, dt);
        } else if (st_dtypes[e->dtype].size == 0) {
          status = load_fail(path, "tensor '%.*s': dtype %s not supported (fovea reads F32, F64, I64 and U8)",
                             NAME_SHOWN, name, dt);
        }
        free(dt);
        FV_TRY(status);
      } else if (seen == &have_shape) {
        free(key);
        FV_TRY(expect(p, '[', "'[' (the shape)"));
        skip_ws(p);
        e->ndim = 0;
        if (peek(p) == ']') {
          p->pos++;
        } else {
          for (;;) {
            FV_TRY(parse_int(p, &neg, &v));
            if (neg && v)
              return load_fail(path, "tensor '%.*s' has a negative size -%llu in its shape", NAME_SHOWN, name,
                               (unsigned long long)v);
            if (v > (uint64_t)INT64_MAX)
              return load_fail(path, "tensor '%.*s' has a size %llu in its shape that is too large", NAME_SHOWN,
                               name, (unsigned long long)v);
            if (e->ndim == INT_MAX) return load_fail(path, "tensor '%.*s' has too many dimensions", NAME_SHOWN, name);
            if (e->ndim < FV_MAX_DIMS) e->shape[e->ndim] = (int64_t)v;
            e->ndim++;
            if (v == 0) numel = 0, overflow = 0;
            else if (numel && numel > (uint64_t)INT64_MAX / v) overflow = 1;
            else numel *= v;
            skip_ws(p);
            if (peek(p) == ',') {
              p->pos++;
              continue;
            }
            FV_TRY(expect(p, ']', "',' or ']' in the shape"));
            break;
          }
        }
        /* a later zero clears an earlier overflow; see the check below */
      } else {
        free(key);
        uint64_t b, en;
        int nb, ne;
        FV_TRY(expect(p, '[', "'[' (data_offsets)"));
        FV_TRY(parse_int(p, &nb, &b));
        FV_TRY(expect(p, ',', "',' (data_offsets holds two integers)"));
        FV_TRY(parse_int(p, &ne, &en));
        FV_TRY(expect(p, ']', "']' (data_offsets holds two integers)"));
        if ((nb && b) || (ne && en))
          return load_fail(path, "tensor '%.*s' has negative data_offsets", NAME_SHOWN, name);
        e->begin = nb ? 0 : b;
        e->end = ne ? 0 : en;
      }
      skip_ws(p);
      if (peek(p) == ',') {
        p->pos++;
        continue;
      }
      FV_TRY(expect(p, '}', "',' or '}' in a tensor's entry"));
      break;
    }
  }
  if (!have_dtype) return load_fail(path, "tensor '%.*s' has no \"dtype\"", NAME_SHOWN, name);
  if (!have_shape) return load_fail(path, "tensor '%.*s' has no \"shape\"", NAME_SHOWN, name);
  if (!have_offsets) return load_fail(path, "tensor '%.*s' has no \"data_offsets\"", NAME_SHOWN, name);

  char shape[160];
  uint64_t elsize = (uint64_t)st_dtypes[e->dtype].size;
  if (overflow || (numel && numel > (uint64_t)INT64_MAX / elsize))
    return load_fail(path, "tensor '%.*s' has shape %s, too many elements", NAME_SHOWN, name,
                     shape_text(e, shape, sizeof shape));
  e->nbytes = numel * elsize;
  if (e->begin > e->end)
    return load_fail(path, "tensor '%.*s' has data_offsets [%llu, %llu] with begin after end", NAME_SHOWN, name,
                     (unsigned long long)e->begin, (unsigned long long)e->end);
  if (e->end > p->f->data_size)
    return load_fail(path, "tensor '%.*s' data_offsets [%llu, %llu] end past the data (%llu bytes)", NAME_SHOWN, name,
                     (unsigned long long)e->begin, (unsigned long long)e->end,
                     (unsigned long long)p->f->data_size);
  if (e->end - e->begin != e->nbytes)
    return load_fail(path, "tensor '%.*s' data_offsets [%llu, %llu] hold %llu bytes, but shape %s of %s needs %llu",
                     NAME_SHOWN, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                     (unsigned long long)(e->end - e->begin), shape_text(e, shape, sizeof shape),
                     st_dtypes[e->dtype].name, (unsigned long long)e->nbytes);
  return FV_OK;
}

static int parse_metadata(parser *p) {
  fv_safetensors *f = p->f;
  if (f->meta_keys) return load_fail(p->path, "header has \"__metadata__\" twice");
  f->meta_cap = 8;
  f->meta_keys = calloc((size_t)f->meta_cap, sizeof *f->meta_keys);
  f->meta_values = calloc((size_t)f->meta_cap, sizeof *f->meta_values);
  if (!f->meta_keys || !f->meta_values) return fv_fail(FV_ERR_MEMORY, "load '%s': out of memory", p->path);
  skip_ws(p);
  if (peek(p) != '{') return load_fail(p->path, "\"__metadata__\" is not an object at header byte %zu", p->pos);
  p->pos++;
  skip_ws(p);
  if (peek(p) == '}') {
    p->pos++;
    return FV_OK;
  }
  for (;;) {
    if (f->n_meta == f->meta_cap) {
      if (f->meta_cap > INT_MAX / 2) return load_fail(p->path, "too many metadata entries");
      int cap = f->meta_cap * 2;
      char **k = realloc(f->meta_keys, (size_t)cap * sizeof *k);
      if (k) f->meta_keys = k;
      char **v = realloc(f->meta_values, (size_t)cap * sizeof *v);
      if (v) f->meta_values = v;
      if (!k || !v) return fv_fail(FV_ERR_MEMORY, "load '%s': out of memory", p->path);
      f->meta_cap = cap;
    }
    char *key, *value;
    FV_TRY(parse_string(p, &key));
    f->meta_keys[f->n_meta] = key;
    f->meta_values[f->n_meta] = NULL;
    f->n_meta++;
    FV_TRY(expect(p, ':', "':'"));
    skip_ws(p);
    if (peek(p) != '"')
      return load_fail(p->path, "metadata value of '%.*s' is not a string (header byte %zu)", NAME_SHOWN, key, p->pos);
    FV_TRY(parse_string(p, &value));
    f->meta_values[f->n_meta - 1] = value;
    skip_ws(p);
    if (peek(p) == ',') {
      p->pos++;
      continue;
    }
    FV_TRY(expect(p, '}', "',' or '}' in \"__metadata__\""));
    break;
  }
  int oom;
  const char *dup = find_duplicate((const char *const *)f->meta_keys, f->n_meta, &oom);
  if (oom) return fv_fail(FV_ERR_MEMORY, "load '%s': out of memory", p->path);
  if (dup) return load_fail(p->path, "metadata key '%.*s' appears twice", NAME_SHOWN, dup);
  return FV_OK;
}

static int cmp_entry_name(const void *a, const void *b) {
  return strcmp((*(st_entry *const *)a)->name, (*(st_entry *const *)b)->name);
}

static int cmp_entry_begin(const void *a, const void *b) {
  const st_entry *x = *(st_entry *const *)a, *y = *(st_entry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

static int parse_header(parser *p) {
  fv_safetensors *f = p->f;
  skip_ws(p);
  if (p->pos >= p->n) return load_fail(p->path, "header is empty (not a safetensors file?)");
  if (peek(p) != '{') return load_fail(p->path, "header is not a JSON object (not a safetensors file?)");
  p->pos++;
  skip_ws(p);
  if (peek(p) == '}') {
    p->pos++;
  } else {
    for (;;) {
      char *name;
      FV_TRY(parse_string(p, &name));
      if (expect(p, ':', "':'")) {
        free(name);
        return FV_ERR_IO;
      }
      if (strcmp(name, "__metadata__") == 0) {
        free(name);
        FV_TRY(parse_metadata(p));
      } else {
        if (f->n == f->cap) {
          if (f->cap > INT_MAX / 2) {
            free(name);
            return load_fail(p->path, "too many tensors");
          }
          int cap = f->cap ? f->cap * 2 : 16;
          st_entry *e = realloc(f->entries, (size_t)cap * sizeof *e);
          if (!e) {
            free(name);
            return fv_fail(FV_ERR_MEMORY, "load '%s': out of memory", p->path);
          }
          f->entries = e;
          f->cap = cap;
        }
        st_entry *e = &f->entries[f->n++];
        memset(e, 0, sizeof *e);
        e->name = name;
        FV_TRY(parse_entry(p, e));
      }
      skip_ws(p);
      if (peek(p) == ',') {
        p->pos++;
        continue;
      }
      FV_TRY(expect(p, '}', "',' or '}' at the top level"));
      break;
    }
  }
  skip_ws(p);
  if (p->pos < p->n)
    return load_fail(p->path, "header has trailing bytes after the JSON object (header byte %zu)", p->pos);

  /* names distinct; byte ranges disjoint */
  if (f->n > 0) {
    f->by_name = malloc((size_t)f->n * sizeof *f->by_name);
    st_entry **by_begin = malloc((size_t)f->n * sizeof *by_begin);
    if (!f->by_name || !by_begin) {
      free(by_begin);
      return fv_fail(FV_ERR_MEMORY, "load '%s': out of memory", p->path);
    }
    for (int i = 0; i < f->n; i++) f->by_name[i] = by_begin[i] = &f->entries[i];
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_entry_name);
    qsort(by_begin, (size_t)f->n, sizeof *by_begin, cmp_entry_begin);
    int status = FV_OK;
    for (int i = 1; i < f->n && !status; i++)
      if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0)
        status = load_fail(p->path, "tensor name '%.*s' appears twice", NAME_SHOWN, f->by_name[i]->name);
    const st_entry *last = NULL;   /* the non-empty range reaching furthest so far */
    for (int i = 0; i < f->n && !status; i++) {
      const st_entry *e = by_begin[i];
      if (e->begin == e->end) continue;
      if (last && e->begin < last->end)
        status = load_fail(p->path, "tensors '%.*s' [%llu, %llu] and '%.*s' [%llu, %llu] overlap", NAME_SHOWN,
                           last->name, (unsigned long long)last->begin, (unsigned long long)last->end, NAME_SHOWN,
                           e->name, (unsigned long long)e->begin, (unsigned long long)e->end);
      if (!last || e->end > last->end) last = e;
    }
    free(by_begin);
    FV_TRY(status);
  }
  return FV_OK;
}

/* Reads n bytes at offset; *got receives how many were read before the end. */
static int read_at(int fd, void *buf, size_t n, uint64_t offset, size_t *got) {
  char *p = buf;
  *got = 0;
  while (*got < n) {
    size_t want = n - *got;
    if (want > ((size_t)1 << 30)) want = (size_t)1 << 30;
    ssize_t k = pread(fd, p + *got, want, (off_t)(offset + *got));
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (k == 0) break;
    *got += (size_t)k;
  }
  return 0;
}

void fv_safetensors_close(fv_safetensors *f) {
  if (!f) return;
  if (f->fd >= 0) close(f->fd);
  for (int i = 0; i < f->n; i++) free(f->entries[i].name);
  free(f->entries);
  free(f->by_name);
  for (int i = 0; i < f->n_meta; i++) {
    free(f->meta_keys[i]);
    free(f->meta_values[i]);
  }
  free(f->meta_keys);
  free(f->meta_values);
  free(f->path);
  free(f);
}

static int open_checked(fv_safetensors *f, const char *path) {
  f->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (f->fd < 0) return fv_fail(FV_ERR_IO, "load '%s': cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(f->fd, &st) != 0) return fv_fail(FV_ERR_IO, "load '%s': cannot stat: %s", path, strerror(errno));
  if (S_ISDIR(st.st_mode)) return load_fail(path, "is a directory");
  if (!S_ISREG(st.st_mode)) return load_fail(path, "not a regular file");
  uint64_t size = (uint64_t)st.st_size;
  if (size == 0) return load_fail(path, "the file is empty");
  if (size < 8)
    return load_fail(path, "truncated: %llu bytes, shorter than the 8-byte header length", (unsigned long long)size);
  unsigned char len[8];
  size_t got;
  if (read_at(f->fd, len, 8, 0, &got)) return fv_fail(FV_ERR_IO, "load '%s': cannot read: %s", path, strerror(errno));
  if (got < 8) return load_fail(path, "truncated while reading the header length");
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = (hl << 8) | len[i];
  if (hl > HEADER_LIMIT)
    return load_fail(path, "header length %llu is over the limit of %d bytes (not a safetensors file?)",
                     (unsigned long long)hl, HEADER_LIMIT);
  if (hl > size - 8)
    return load_fail(path, "truncated: the header is %llu bytes but only %llu follow the length",
                     (unsigned long long)hl, (unsigned long long)(size - 8));
  f->data_start = 8 + hl;
  f->data_size = size - 8 - hl;
  unsigned char *header = malloc(hl ? (size_t)hl : 1);
  if (!header) return fv_fail(FV_ERR_MEMORY, "load '%s': out of memory for a %llu-byte header", path,
                              (unsigned long long)hl);
  errno = 0;
  if (read_at(f->fd, header, (size_t)hl, 8, &got) || got < hl) {
    int e = errno;
    free(header);
    if (e) return fv_fail(FV_ERR_IO, "load '%s': cannot read the header: %s", path, strerror(e));
    return load_fail(path, "truncated while reading the header");
  }
  parser p = {path, header, (size_t)hl, 0, f};
  int status = parse_header(&p);
  free(header);
  return status;
}

int fv_safetensors_open(fv_safetensors **out, const char *path) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "load: out is NULL");
  *out = NULL;
  if (!path || !*path) return fv_fail(FV_ERR_ARGUMENT, "load: a path is required");
  fv_safetensors *f = calloc(1, sizeof *f);
  if (!f || !(f->path = strdup(path))) {
    free(f);
    return fv_fail(FV_ERR_MEMORY, "load '%s': out of memory", path);
  }
  f->fd = -1;
  int status = open_checked(f, path);
  if (status) {
    fv_safetensors_close(f);
    return status;
  }
  *out = f;
  return FV_OK;
}

int fv_safetensors_count(const fv_safetensors *f) { return f ? f->n : 0; }

const char *fv_safetensors_name(const fv_safetensors *f, int i) {
  return f && i >= 0 && i < f->n ? f->entries[i].name : NULL;
}

int fv_safetensors_meta_count(const fv_safetensors *f) { return f ? f->n_meta : 0; }

const char *fv_safetensors_meta_key(const fv_safetensors *f, int i) {
  return f && i >= 0 && i < f->n_meta ? f->meta_keys[i] : NULL;
}

const char *fv_safetensors_meta_value(const fv_safetensors *f, int i) {
  return f && i >= 0 && i < f->n_meta ? f->meta_values[i] : NULL;
}

int fv_safetensors_get(fv_tensor **out, const fv_safetensors *f, const char *name) {
  if (!out || !f || !name) return fv_fail(FV_ERR_ARGUMENT, "load: out, file and name are required");
  st_entry key, *kp = &key, **found = NULL;
  key.name = (char *)name;
  if (f->n > 0) found = bsearch(&kp, f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_entry_name);
  if (!found)
    return fv_fail(FV_ERR_ARGUMENT, "load '%s': no tensor named '%.*s'", f->path, NAME_SHOWN, name);
  const st_entry *e = *found;
  const st_dtype *dt = &st_dtypes[e->dtype];
  if (dt->fv < 0)
    return load_fail(f->path, "tensor '%.*s': dtype %s not supported (fovea reads F32, F64, I64 and U8)", NAME_SHOWN,
                     name, dt->name);
  if (e->ndim > FV_MAX_DIMS)
    return load_fail(f->path, "tensor '%.*s' has %d dimensions; fovea supports at most %d", NAME_SHOWN, name, e->ndim,
                     FV_MAX_DIMS);
  fv_tensor *t;
  int status = fv_alloc_like_shape(&t, e->ndim, e->shape, dt->fv, FV_CPU);
  if (status) {
    char reason[512];
    last_error_copy(reason, sizeof reason);
    return fv_fail(status, "load '%s': tensor '%.*s': %s", f->path, NAME_SHOWN, name, reason);
  }
  size_t got;
  errno = 0;
  if (e->nbytes && (read_at(f->fd, fv_tensor_data(t), (size_t)e->nbytes, f->data_start + e->begin, &got) ||
                    got < e->nbytes)) {
    int err = errno;
    fv_tensor_release(t);
    if (err) return fv_fail(FV_ERR_IO, "load '%s': cannot read tensor '%.*s': %s", f->path, NAME_SHOWN, name,
                            strerror(err));
    return load_fail(f->path, "tensor '%.*s': the file ended early (was it truncated after opening?)", NAME_SHOWN, name);
  }
  if (big_endian) swap_elements(fv_tensor_data(t), (size_t)e->nbytes, dt->size);
  *out = t;
  return FV_OK;
}
