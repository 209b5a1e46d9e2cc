/*
 * tests/runtime/cpu.c — CPU detection, ISA names and selection (normkit.h "CPU features and
 * ISA selection", CONVENTIONS C6), and nk_context_set_isa.
 *
 * The detected features are compared with two independent sources where they exist: the
 * compiler's __builtin_cpu_supports (which also checks the OS state via XGETBV) and the flags
 * line of /proc/cpuinfo (the kernel clears flags whose state it does not save). NK_ISA is read
 * once per process, so its parsing is tested in child processes (this binary re-executed with
 * --isa-child and NK_ISA set).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "normkit.h"
#include "test.h"

static const nk_isa all_isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* What NK_ISA_AUTO must resolve to with no (valid) NK_ISA: the best supported path. */
static nk_isa best_supported(void) {
  if (nk_isa_supported(NK_ISA_AVX512)) return NK_ISA_AVX512;
  if (nk_isa_supported(NK_ISA_AVX2)) return NK_ISA_AVX2;
  return NK_ISA_SCALAR;
}

/* ---- first use from many threads at once (pthread_once; meaningful under TSan) -------------- */

static void *first_use_thread(void *p) {
  const nk_cpu_features **out = p;
  *out = nk_cpu_features_get();
  (void)nk_isa_default();
  (void)nk_isa_env_error();
  return NULL;
}

NK_TEST(first_use_from_many_threads) {
  enum { N = 8 };
  pthread_t th[N];
  const nk_cpu_features *got[N] = {0};
  int started = 0;
  for (int i = 0; i < N; i++) {
    if (pthread_create(&th[i], NULL, first_use_thread, (void *)&got[i]) != 0) break;
    started++;
  }
  NK_CHECK(started == N, "pthread_create");
  for (int i = 0; i < started; i++) {
    pthread_join(th[i], NULL);
    NK_CHECK(got[i] != NULL && got[i] == nk_cpu_features_get(), "thread %d got another pointer",
             i);
  }
}

/* ---- features ------------------------------------------------------------------------------ */

NK_TEST(features_consistent_with_paths) {
  const nk_cpu_features *f = nk_cpu_features_get();
  NK_REQUIRE(f != NULL, "nk_cpu_features_get() returned NULL");
  NK_CHECK(f == nk_cpu_features_get(), "the pointer changes between calls");
  const int avx2_path = f->avx2 && f->fma && f->f16c;
  const int avx512_path = avx2_path && f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq;
  NK_CHECK(nk_isa_supported(NK_ISA_AVX2) == avx2_path, "avx2 supported %d, features say %d",
           nk_isa_supported(NK_ISA_AVX2), avx2_path);
  NK_CHECK(nk_isa_supported(NK_ISA_AVX512) == avx512_path,
           "avx512 supported %d, features say %d", nk_isa_supported(NK_ISA_AVX512), avx512_path);
  NK_CHECK(nk__cpu_has_avx2_path() == avx2_path, "nk__cpu_has_avx2_path");
  NK_CHECK(nk__cpu_has_avx512_path() == avx512_path, "nk__cpu_has_avx512_path");
  /* Every AVX-512 subset implies AVX512F; the paths are nested. */
  NK_CHECK(f->avx512f || !(f->avx512bw || f->avx512vl || f->avx512dq || f->avx512bf16 ||
                           f->avx512fp16),
           "an AVX-512 subset without AVX512F");
  NK_CHECK(!avx512_path || avx2_path, "avx512 path without the avx2 path");
  /* Flags are 0 or 1. */
  const int all[] = {f->avx2, f->fma, f->f16c, f->avx512f, f->avx512bw, f->avx512vl,
                     f->avx512dq, f->avx512bf16, f->avx512fp16};
  for (size_t i = 0; i < NELEM(all); i++) NK_CHECK(all[i] == 0 || all[i] == 1, "flag %zu", i);
  printf("        (avx2 %d fma %d f16c %d avx512 f %d bw %d vl %d dq %d bf16 %d fp16 %d)\n",
         f->avx2, f->fma, f->f16c, f->avx512f, f->avx512bw, f->avx512vl, f->avx512dq,
         f->avx512bf16, f->avx512fp16);
}

NK_TEST(features_match_compiler_builtin) {
#if defined(__x86_64__) || defined(__i386__)
  const nk_cpu_features *f = nk_cpu_features_get();
  __builtin_cpu_init();
  /* Names both gcc 12 and clang 14 know. They check XGETBV as well. */
  NK_CHECK(f->avx2 == !!__builtin_cpu_supports("avx2"), "avx2 %d", f->avx2);
  NK_CHECK(f->fma == !!__builtin_cpu_supports("fma"), "fma %d", f->fma);
  NK_CHECK(f->avx512f == !!__builtin_cpu_supports("avx512f"), "avx512f %d", f->avx512f);
  NK_CHECK(f->avx512bw == !!__builtin_cpu_supports("avx512bw"), "avx512bw %d", f->avx512bw);
  NK_CHECK(f->avx512vl == !!__builtin_cpu_supports("avx512vl"), "avx512vl %d", f->avx512vl);
  NK_CHECK(f->avx512dq == !!__builtin_cpu_supports("avx512dq"), "avx512dq %d", f->avx512dq);
#else
  const nk_cpu_features *f = nk_cpu_features_get();
  NK_CHECK(!f->avx2 && !f->avx512f, "x86 features reported on another architecture");
  NK_CHECK(!nk_isa_supported(NK_ISA_AVX2) && !nk_isa_supported(NK_ISA_AVX512), "x86 paths");
#endif
}

/* 1 if word is in the space-separated flags line, else 0. */
static int has_flag(const char *line, const char *word) {
  const size_t n = strlen(word);
  for (const char *p = line; (p = strstr(p, word)) != NULL; p += n) {
    const int start_ok = p == line || p[-1] == ' ' || p[-1] == '\t' || p[-1] == ':';
    const int end_ok = p[n] == '\0' || p[n] == ' ' || p[n] == '\n';
    if (start_ok && end_ok) return 1;
  }
  return 0;
}

NK_TEST(features_match_proc_cpuinfo) {
#if defined(__linux__) && (defined(__x86_64__) || defined(__i386__))
  FILE *fp = fopen("/proc/cpuinfo", "r");
  if (fp == NULL) NK_SKIP("/proc/cpuinfo not readable");
  static char line[1 << 16];
  int found = 0;
  while (fgets(line, sizeof line, fp) != NULL) {
    if (strncmp(line, "flags", 5) == 0) {
      found = 1;
      break;
    }
  }
  fclose(fp);
  if (!found) NK_SKIP("/proc/cpuinfo has no flags line");
  const nk_cpu_features *f = nk_cpu_features_get();
  /* Under an emulator (valgrind, qemu-user) CPUID is the emulated CPU's while /proc/cpuinfo
   * is the host's: compare only when the compiler's view of CPUID matches the kernel's. */
  __builtin_cpu_init();
  static const char *const known[] = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                                      "avx512dq"};
  const int builtin[] = {!!__builtin_cpu_supports("avx2"),     !!__builtin_cpu_supports("fma"),
                         !!__builtin_cpu_supports("avx512f"),  !!__builtin_cpu_supports("avx512bw"),
                         !!__builtin_cpu_supports("avx512vl"), !!__builtin_cpu_supports("avx512dq")};
  for (size_t i = 0; i < NELEM(known); i++)
    if (has_flag(line, known[i]) != builtin[i])
      NK_SKIP("CPUID looks emulated: %s is %d in /proc/cpuinfo, %d for CPUID", known[i],
              has_flag(line, known[i]), builtin[i]);
  const struct {
    const char *flag;
    int have;
  } cmp[] = {
      {"avx2", f->avx2},         {"fma", f->fma},           {"f16c", f->f16c},
      {"avx512f", f->avx512f},   {"avx512bw", f->avx512bw}, {"avx512vl", f->avx512vl},
      {"avx512dq", f->avx512dq}, {"avx512_bf16", f->avx512bf16},
      {"avx512_fp16", f->avx512fp16},
  };
  for (size_t i = 0; i < NELEM(cmp); i++)
    NK_CHECK(has_flag(line, cmp[i].flag) == cmp[i].have, "%s: /proc/cpuinfo %d, detected %d",
             cmp[i].flag, has_flag(line, cmp[i].flag), cmp[i].have);
#else
  NK_SKIP("not Linux on x86");
#endif
}

/* ---- names and support ------------------------------------------------------------------------ */

NK_TEST(isa_names) {
  NK_CHECK(strcmp(nk_isa_name(NK_ISA_AUTO), "auto") == 0, "auto");
  NK_CHECK(strcmp(nk_isa_name(NK_ISA_SCALAR), "scalar") == 0, "scalar");
  NK_CHECK(strcmp(nk_isa_name(NK_ISA_AVX2), "avx2") == 0, "avx2");
  NK_CHECK(strcmp(nk_isa_name(NK_ISA_AVX512), "avx512") == 0, "avx512");
  NK_CHECK(strcmp(nk_isa_name((nk_isa)42), "?") == 0, "unknown");
  NK_CHECK(strcmp(nk_isa_name((nk_isa)-1), "?") == 0, "negative");
}

NK_TEST(isa_supported_basics) {
  NK_CHECK(nk_isa_supported(NK_ISA_AUTO) == 1, "auto");
  NK_CHECK(nk_isa_supported(NK_ISA_SCALAR) == 1, "scalar");
  NK_CHECK(nk_isa_supported((nk_isa)42) == 0, "unknown value supported");
  NK_CHECK(nk_isa_supported((nk_isa)-1) == 0, "negative value supported");
  NK_CHECK(!nk_isa_supported(NK_ISA_AVX512) || nk_isa_supported(NK_ISA_AVX2),
           "avx512 without avx2");
}

/* The default honours NK_ISA from this process's environment, whatever CI set it to. */
NK_TEST(isa_default_is_supported) {
  const nk_isa d = nk_isa_default();
  NK_CHECK(d != NK_ISA_AUTO, "the default is AUTO");
  NK_CHECK(nk_isa_supported(d), "the default %s is not supported", nk_isa_name(d));
  NK_CHECK(d == nk_isa_default(), "the default changes between calls");
  const char *env = getenv("NK_ISA");
  nk_isa want = best_supported();
  int want_error = 0;
  if (env != NULL && env[0] != '\0' && strcasecmp(env, "auto") != 0) {
    want_error = 1;
    for (size_t i = 0; i < NELEM(all_isas); i++) {
      if (strcasecmp(env, nk_isa_name(all_isas[i])) == 0 && nk_isa_supported(all_isas[i])) {
        want = all_isas[i];
        want_error = 0;
      }
    }
  }
  NK_CHECK(d == want, "NK_ISA=%s: default %s, want %s", env ? env : "(unset)", nk_isa_name(d),
           nk_isa_name(want));
  const char *err = nk_isa_env_error();
  NK_CHECK(want_error ? (err != NULL && err[0] != '\0') : err == NULL,
           "NK_ISA=%s: env error \"%s\"", env ? env : "(unset)", err ? err : "(null)");
  printf("        (NK_ISA=%s: default %s)\n", env ? env : "(unset)", nk_isa_name(d));
}

/* ---- NK_ISA in child processes ---------------------------------------------------------------- */

static char self_path[4096];

static void copy_string(char *dst, size_t size, const char *src) {
  const size_t n = strlen(src) < size - 1 ? strlen(src) : size - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* What a child process reports. */
typedef struct {
  char isa[64];  /* nk_isa_name(nk_isa_default()) */
  char err[256]; /* nk_isa_env_error() or "(null)" */
  int avx2, avx512; /* nk_isa_supported in the child (it may run natively under an emulator) */
} child_report;

/* Runs this binary with NK_ISA=value (NULL: unset) and --isa-child; reads back
 * "<default isa name>\n<env error or (null)>\n<avx2> <avx512>\n". Returns 0 on failure. */
static int run_child(const char *value, child_report *rep) {
  int fds[2];
  if (pipe(fds) != 0) return 0;
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return 0;
  }
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    if (value) {
      setenv("NK_ISA", value, 1);
    } else {
      unsetenv("NK_ISA");
    }
    char *const args[] = {self_path, (char *)"--isa-child", NULL};
    execv(self_path, args);
    _exit(127);
  }
  close(fds[1]);
  char buf[512];
  size_t len = 0;
  ssize_t r;
  while (len < sizeof buf - 1 && ((r = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0 ||
                                  (r < 0 && errno == EINTR)))
    if (r > 0) len += (size_t)r;
  buf[len] = '\0';
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 0;
  char *nl = strchr(buf, '\n');
  if (nl == NULL) return 0;
  *nl = '\0';
  copy_string(rep->isa, sizeof rep->isa, buf);
  char *rest = nl + 1;
  char *nl2 = strchr(rest, '\n');
  if (nl2 == NULL) return 0;
  *nl2 = '\0';
  copy_string(rep->err, sizeof rep->err, rest);
  return sscanf(nl2 + 1, "%d %d", &rep->avx2, &rep->avx512) == 2;
}

static int isa_child_main(void) {
  const char *err = nk_isa_env_error();
  printf("%s\n%s\n%d %d\n", nk_isa_name(nk_isa_default()), err ? err : "(null)",
         nk_isa_supported(NK_ISA_AVX2), nk_isa_supported(NK_ISA_AVX512));
  return 0;
}

/* value: NK_ISA (NULL: unset). named: the path it names, or NK_ISA_AUTO when it names none
 * (unset, empty, "auto"); valid: 0 when the value is not a path name at all. */
static void check_env(const char *value, nk_isa named, int valid) {
  child_report rep;
  const char *shown = value ? value : "(unset)";
  const int ran = run_child(value, &rep); /* not inside NK_REQUIRE: it evaluates twice */
  NK_REQUIRE(ran, "child with NK_ISA=%s failed", shown);
  const nk_isa best = rep.avx512 ? NK_ISA_AVX512 : rep.avx2 ? NK_ISA_AVX2 : NK_ISA_SCALAR;
  const int runs = named == NK_ISA_SCALAR || (named == NK_ISA_AVX2 && rep.avx2) ||
                   (named == NK_ISA_AVX512 && rep.avx512);
  const nk_isa want = valid && runs ? named : best;
  const int want_error = !valid || (named != NK_ISA_AUTO && !runs);
  NK_CHECK(strcmp(rep.isa, nk_isa_name(want)) == 0, "NK_ISA=%s: default %s, want %s", shown,
           rep.isa, nk_isa_name(want));
  if (want_error) {
    NK_CHECK(strcmp(rep.err, "(null)") != 0 && strstr(rep.err, "ignored") != NULL,
             "NK_ISA=%s: error message \"%s\"", shown, rep.err);
  } else {
    NK_CHECK(strcmp(rep.err, "(null)") == 0, "NK_ISA=%s: unexpected error \"%s\"", shown,
             rep.err);
  }
}

NK_TEST(nk_isa_environment_variable) {
#if defined(__linux__)
  const ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
  if (n <= 0) NK_SKIP("cannot find this executable to re-run it");
  self_path[n] = '\0';
  check_env(NULL, NK_ISA_AUTO, 1);
  check_env("", NK_ISA_AUTO, 1);
  check_env("auto", NK_ISA_AUTO, 1);
  check_env("scalar", NK_ISA_SCALAR, 1);
  check_env("SCALAR", NK_ISA_SCALAR, 1);
  check_env("bogus", NK_ISA_AUTO, 0);
  check_env("avx", NK_ISA_AUTO, 0);
  check_env("avx2 ", NK_ISA_AUTO, 0);
  check_env("a-very-long-value-that-goes-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on",
            NK_ISA_AUTO, 0);
  /* Supported: used. Unsupported: "NK_ISA=avx512 ignored: this CPU cannot run it". */
  check_env("avx2", NK_ISA_AVX2, 1);
  check_env("avx512", NK_ISA_AVX512, 1);
  check_env("AVX512", NK_ISA_AVX512, 1);
#else
  NK_SKIP("re-running the test binary needs /proc/self/exe");
#endif
}

/* ---- nk_context_set_isa ------------------------------------------------------------------------ */

NK_TEST(context_set_isa_accepts_supported_paths) {
  nk_context *ctx = NULL;
  const nk_status st = nk_context_create(&ctx);
  NK_REQUIRE(st == NK_OK && ctx != NULL, "nk_context_create");
  NK_CHECK(nk_context_isa(ctx) == nk_isa_default(), "a new context does not use the default");
  for (size_t i = 0; i < NELEM(all_isas); i++) {
    if (!nk_isa_supported(all_isas[i])) continue;
    NK_CHECK(nk_context_set_isa(ctx, all_isas[i]) == NK_OK, "set %s",
             nk_isa_name(all_isas[i]));
    NK_CHECK(nk_context_isa(ctx) == all_isas[i], "isa %s after setting %s",
             nk_isa_name(nk_context_isa(ctx)), nk_isa_name(all_isas[i]));
    NK_CHECK(nk_context_message(ctx)[0] == '\0', "message after success: %s",
             nk_context_message(ctx));
  }
  NK_CHECK(nk_context_set_isa(ctx, NK_ISA_AUTO) == NK_OK, "set auto");
  NK_CHECK(nk_context_isa(ctx) == nk_isa_default(), "auto does not restore the default");
  NK_CHECK(nk_context_isa(NULL) == nk_isa_default(), "NULL context");
  nk_context_destroy(ctx);
}

NK_TEST(context_set_isa_rejects_unknown_isa) {
  nk_context *ctx = NULL;
  const nk_status st = nk_context_create(&ctx);
  NK_REQUIRE(st == NK_OK && ctx != NULL, "nk_context_create");
  NK_CHECK(nk_context_set_isa(ctx, NK_ISA_SCALAR) == NK_OK, "set scalar");
  const nk_isa bad[] = {(nk_isa)4, (nk_isa)42, (nk_isa)-1};
  for (size_t i = 0; i < NELEM(bad); i++) {
    NK_CHECK(nk_context_set_isa(ctx, bad[i]) == NK_STATUS_INVALID_ARGUMENT, "isa %d",
             (int)bad[i]);
    NK_CHECK(nk_context_message(ctx)[0] != '\0', "isa %d: empty message", (int)bad[i]);
    NK_CHECK(nk_context_isa(ctx) == NK_ISA_SCALAR, "the setting changed");
  }
  NK_CHECK(nk_context_set_isa(NULL, NK_ISA_SCALAR) == NK_STATUS_INVALID_ARGUMENT, "NULL ctx");
  NK_CHECK(nk_context_message(NULL)[0] == '\0', "message of NULL");
  nk_context_destroy(ctx);
}

NK_TEST(context_set_isa_rejects_unsupported_paths) {
  nk_context *ctx = NULL;
  const nk_status st = nk_context_create(&ctx);
  NK_REQUIRE(st == NK_OK && ctx != NULL, "nk_context_create");
  int tested = 0;
  for (size_t i = 0; i < NELEM(all_isas); i++) {
    if (nk_isa_supported(all_isas[i])) continue;
    tested++;
    NK_CHECK(nk_context_set_isa(ctx, NK_ISA_SCALAR) == NK_OK, "set scalar");
    NK_CHECK(nk_context_set_isa(ctx, all_isas[i]) == NK_STATUS_UNSUPPORTED_HARDWARE,
             "set unsupported %s", nk_isa_name(all_isas[i]));
    NK_CHECK(strstr(nk_context_message(ctx), nk_isa_name(all_isas[i])) != NULL,
             "message \"%s\" does not name %s", nk_context_message(ctx),
             nk_isa_name(all_isas[i]));
    NK_CHECK(nk_context_isa(ctx) == NK_ISA_SCALAR, "the setting changed");
  }
  nk_context_destroy(ctx);
  if (!tested) NK_SKIP("this CPU runs every path: no unsupported path to reject");
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--isa-child") == 0) return isa_child_main();
  NK_RUN(first_use_from_many_threads);
  NK_RUN(features_consistent_with_paths);
  NK_RUN(features_match_compiler_builtin);
  NK_RUN(features_match_proc_cpuinfo);
  NK_RUN(isa_names);
  NK_RUN(isa_supported_basics);
  NK_RUN(isa_default_is_supported);
  NK_RUN(nk_isa_environment_variable);
  NK_RUN(context_set_isa_accepts_supported_paths);
  NK_RUN(context_set_isa_rejects_unknown_isa);
  NK_RUN(context_set_isa_rejects_unsupported_paths);
  return nk_test_summary();
}
