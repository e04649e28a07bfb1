/* abort_backtrace.c: a library to preload (LD_PRELOAD) into a process that dies of a
 * signal with no word about where. On SIGABRT it writes to stderr, in this order:
 *  1. the interrupted instruction and stack pointers, each with the mapping that holds it
 *     (path and offset, from /proc/self/maps);
 *  2. a scan of the raw stack from that stack pointer up: every word that points into an
 *     executable mapping, as path + offset (return addresses and stale ones alike; read
 *     innermost first). This needs no unwind tables, so it works where the unwinder itself
 *     is what aborted;
 *  3. glibc's backtrace (symbol names from the dynamic symbol tables), which uses the
 *     unwinder and may die on the way;
 * then lets the signal kill the process as it would have. cuda/gpu_check.sh builds it on
 * the device machine and preloads it into the spec run under compute-sanitizer, which
 * aborts there with no memcheck error reported. Offsets in our libraries read back here
 * with `addr2line -f -e build/libfovea_cuda.so 0xOFFSET`.
 *
 * Build: gcc -shared -fPIC -O1 -g -o abort_backtrace.so tools/abort_backtrace.c
 * Use:   LD_PRELOAD=$PWD/abort_backtrace.so luajit ... */
#define _GNU_SOURCE
#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

enum { MAPS_BYTES = 1 << 20, MAX_MAPPINGS = 4096, SCAN_WORDS = 1 << 15, MAX_HITS = 80 };

/* The process's mappings, read in the handler (open/read are async-signal-safe). */
struct mapping {
  uintptr_t lo, hi, file_offset;
  int executable;
  const char *path; /* into maps_text, NUL-terminated; "" for anonymous */
};
static char maps_text[MAPS_BYTES];
static struct mapping mappings[MAX_MAPPINGS];
static int mapping_count;

static void write_text(const char *text) { (void)!write(STDERR_FILENO, text, strlen(text)); }

static void write_hex(uintptr_t v) {
  char buf[2 + 16 + 1];
  int n = sizeof buf - 1;
  buf[n] = 0;
  do {
    buf[--n] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v && n > 2);
  buf[--n] = 'x';
  buf[--n] = '0';
  write_text(buf + n);
}

static uintptr_t parse_hex(const char **p) {
  uintptr_t v = 0;
  for (;; (*p)++) {
    const char c = **p;
    if (c >= '0' && c <= '9') v = v * 16 + (uintptr_t)(c - '0');
    else if (c >= 'a' && c <= 'f') v = v * 16 + (uintptr_t)(c - 'a' + 10);
    else return v;
  }
}

/* Fills mappings from /proc/self/maps: "lo-hi perms offset dev inode   path". */
static void read_mappings(void) {
  mapping_count = 0;
  const int fd = open("/proc/self/maps", O_RDONLY);
  if (fd < 0) return;
  size_t used = 0;
  for (ssize_t got; used < MAPS_BYTES - 1 && (got = read(fd, maps_text + used, MAPS_BYTES - 1 - used)) > 0;)
    used += (size_t)got;
  close(fd);
  maps_text[used] = 0;
  for (char *line = maps_text; *line && mapping_count < MAX_MAPPINGS;) {
    char *end = strchr(line, '\n');
    if (end) *end = 0;
    struct mapping *m = &mappings[mapping_count++];
    const char *p = line;
    m->lo = parse_hex(&p);
    p++; /* '-' */
    m->hi = parse_hex(&p);
    p++; /* ' ' */
    m->executable = p[2] == 'x';
    p += 5; /* "r-xp " */
    m->file_offset = parse_hex(&p);
    for (int field = 0; field < 2 && *p; field++) { /* device, inode */
      while (*p == ' ') p++;
      while (*p && *p != ' ') p++;
    }
    while (*p == ' ') p++;
    m->path = p;
    if (!end) break;
    line = end + 1;
  }
}

static const struct mapping *mapping_of(uintptr_t a) {
  for (int i = 0; i < mapping_count; i++)
    if (a >= mappings[i].lo && a < mappings[i].hi) return &mappings[i];
  return NULL;
}

/* "0xADDR path+0xOFFSET" (offset into the file, as addr2line takes it), or "0xADDR ?". */
static void write_place(uintptr_t a) {
  write_hex(a);
  const struct mapping *m = mapping_of(a);
  if (!m) {
    write_text(" ?\n");
    return;
  }
  write_text(" ");
  write_text(*m->path ? m->path : "[anonymous]");
  write_text("+");
  write_hex(a - m->lo + m->file_offset);
  write_text("\n");
}

static void on_fatal_signal(int sig, siginfo_t *info, void *context) {
  (void)info;
  const ucontext_t *uc = context;
  write_text("\n== abort_backtrace: ");
  write_text(strsignal(sig));
  write_text("\n");
  read_mappings();
#if defined(__x86_64__)
  const uintptr_t pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP], sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
  const uintptr_t pc = (uintptr_t)uc->uc_mcontext.pc, sp = (uintptr_t)uc->uc_mcontext.sp;
#else
  const uintptr_t pc = 0, sp = (uintptr_t)&context;
#endif
  write_text("pc ");
  write_place(pc);
  write_text("sp ");
  write_place(sp);
  write_text("== stack scan (words pointing into executable mappings, innermost first):\n");
  const struct mapping *stack = mapping_of(sp);
  const uintptr_t *word = (const uintptr_t *)sp;
  const uintptr_t *top = stack ? (const uintptr_t *)stack->hi : word + SCAN_WORDS;
  int hits = 0;
  for (int i = 0; i < SCAN_WORDS && word + i < top && hits < MAX_HITS; i++) {
    const struct mapping *m = mapping_of(word[i]);
    if (m && m->executable) {
      write_place(word[i]);
      hits++;
    }
  }
  write_text("== unwinder's backtrace (may abort again):\n");
  void *frames[64];
  const int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  write_text("== end of stack\n");
  raise(sig); /* SA_RESETHAND: the default action now */
}

__attribute__((constructor)) static void install(void) {
  void *warm[1];
  (void)backtrace(warm, 1); /* its first call may load libgcc: not inside the handler */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fatal_signal;
  sa.sa_flags = SA_RESETHAND | SA_SIGINFO;
  sigaction(SIGABRT, &sa, NULL);
}
