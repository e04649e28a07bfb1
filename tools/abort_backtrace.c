/* abort_backtrace.c: a library to preload (LD_PRELOAD) into a process that dies of a
 * signal with no word about where: on SIGABRT it writes the signal's name and the native call stack (glibc's backtrace, symbol names from the
 * dynamic symbol tables) to stderr, then lets the signal kill the process as it would
 * have. cuda/gpu_check.sh builds it on the device machine and preloads it into the spec
 * run under compute-sanitizer, which aborts there with no memcheck error reported.
 *
 * Build: gcc -shared -fPIC -O1 -g -o abort_backtrace.so tools/abort_backtrace.c
 * Use:   LD_PRELOAD=$PWD/abort_backtrace.so luajit ... */
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static void write_text(const char *text) { (void)!write(STDERR_FILENO, text, strlen(text)); }

/* Only async-signal-safe calls, apart from backtrace (its first call may load libgcc:
 * done once at load time below, so that it does not happen inside the handler). */
static void on_fatal_signal(int sig) {
  void *frames[64];
  write_text("\n== abort_backtrace: ");
  write_text(strsignal(sig));
  write_text("; native stack, innermost first:\n");
  int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  write_text("== end of stack\n");
  raise(sig); /* SA_RESETHAND: the default action now */
}

__attribute__((constructor)) static void install(void) {
  void *warm[1];
  (void)backtrace(warm, 1);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_fatal_signal;
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGABRT, &sa, NULL);
}
