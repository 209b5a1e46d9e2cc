/*
 * test.h — the tiny test harness of normkit's C tests.
 *
 *   NK_TEST(name) { ... NK_CHECK(cond, "fmt", ...); ... }   define a test
 *   NK_SKIP("why")                                          report the test as skipped
 *   int main(void) { NK_RUN(name); ...; return nk_test_summary(); }
 *
 * A test fails if any check fails. A skipped test is reported as skipped, never as passed.
 * The summary prints "N passed, N failed, N skipped" and main returns nonzero on failure.
 */
#ifndef NK_TEST_H
#define NK_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int nk_t_passed, nk_t_failed, nk_t_skipped;
static int nk_t_cur_failed, nk_t_cur_skipped, nk_t_cur_checks_failed;

#define NK_TEST(name) static void name(void)

#define NK_CHECK(cond, ...)                                                                      \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      nk_t_cur_failed = 1;                                                                       \
      if (nk_t_cur_checks_failed++ < 10) {                                                       \
        fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
        fprintf(stderr, __VA_ARGS__);                                                            \
        fprintf(stderr, "\n");                                                                   \
      }                                                                                          \
    }                                                                                            \
  } while (0)

/* Like NK_CHECK but returns from the test on failure. Evaluates cond once. */
#define NK_REQUIRE(cond, ...)                                                                    \
  do {                                                                                           \
    const int nk_req_ok_ = (cond) ? 1 : 0;                                                       \
    NK_CHECK(nk_req_ok_, __VA_ARGS__);                                                           \
    if (!nk_req_ok_) return;                                                                     \
  } while (0)

#define NK_SKIP(...)                                                                             \
  do {                                                                                           \
    nk_t_cur_skipped = 1;                                                                        \
    fprintf(stderr, "  skip: ");                                                                 \
    fprintf(stderr, __VA_ARGS__);                                                                \
    fprintf(stderr, "\n");                                                                       \
    return;                                                                                      \
  } while (0)

#define NK_RUN(name)                                                                             \
  do {                                                                                           \
    nk_t_cur_failed = 0;                                                                         \
    nk_t_cur_skipped = 0;                                                                        \
    nk_t_cur_checks_failed = 0;                                                                  \
    name();                                                                                      \
    if (nk_t_cur_failed) {                                                                       \
      nk_t_failed++;                                                                             \
      fprintf(stderr, "FAILED  %s\n", #name);                                                    \
    } else if (nk_t_cur_skipped) {                                                               \
      nk_t_skipped++;                                                                            \
      printf("SKIPPED %s\n", #name);                                                             \
    } else {                                                                                     \
      nk_t_passed++;                                                                             \
      printf("ok      %s\n", #name);                                                             \
    }                                                                                            \
    fflush(stdout);                                                                              \
  } while (0)

/* NK_RUN, then the test's wall time on its own line (for the suites that watch their budget). */
#define NK_RUN_TIMED(name)                                                                       \
  do {                                                                                           \
    struct timespec nk_t0_, nk_t1_;                                                              \
    clock_gettime(CLOCK_MONOTONIC, &nk_t0_);                                                     \
    NK_RUN(name);                                                                                \
    clock_gettime(CLOCK_MONOTONIC, &nk_t1_);                                                     \
    printf("        (%.2f s)\n", (double)(nk_t1_.tv_sec - nk_t0_.tv_sec) +                       \
                                     1e-9 * (double)(nk_t1_.tv_nsec - nk_t0_.tv_nsec));         \
  } while (0)

static inline int nk_test_summary(void) {
  printf("%d passed, %d failed, %d skipped\n", nk_t_passed, nk_t_failed, nk_t_skipped);
  return nk_t_failed ? 1 : 0;
}

#endif /* NK_TEST_H */
