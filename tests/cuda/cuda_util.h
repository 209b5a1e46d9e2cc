/*
 * tests/cuda/cuda_util.h — what the CUDA tests (tests/cuda/<name>.c) share: the device check and
 * the skip (exit 77), the run's seed, one line per case with its worst error as a multiple of the
 * bound, checked CUDA calls and statuses, device buffers with host mirrors (freed at the end of
 * each case), output poisoning, element checks against the float64 references, and the choice
 * of the rows that are compared with the references.
 *
 * Conventions:
 * - Outputs are set to 0xFF bytes on the device before every call (cu_poison). All-ones is a
 *   NaN in f32, bf16 and f16 (negative, every payload bit set) that no computation produces: the
 *   GPU's arithmetic gives the canonical NaN (0x7FFFFFFF, 0x7FFF), normkit's NaN rows 0x7FC00000,
 *   and the tests' own NaN inputs are NAN (0x7FC00000). An element that still holds all-ones was
 *   not written, whatever the reference says (also where the reference is NaN).
 * - Host mirrors start as 0xFF too, so the padding between rows of a strided input holds NaN:
 *   a kernel that reads past `cols` poisons its row and fails the comparison.
 * - A case is cu_case_begin .. cu_case_end; the checks in between record failures (at most 10
 *   are printed per case) and the worst |error| / bound (inf for a NaN where the reference is
 *   finite, or an element not written).
 * - Every helper is static inline: each test uses a subset.
 */
#ifndef NK_TEST_CUDA_UTIL_H
#define NK_TEST_CUDA_UTIL_H

#include <cuda_runtime.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "normkit_cuda.h"
#include "reference/reference.h" /* src/reference/ */
#include "test.h"
#include "util.h"

/* ---- cases ------------------------------------------------------------------------------------
 */

#define CU_MAX_ALLOCS 96

typedef struct cu_case_state {
  char name[256];
  double worst; /* worst |error| / bound of the case */
  double t0;
  unsigned index; /* cases started so far: the case's RNG stream */
  int ndev, nhost;
  void *dev[CU_MAX_ALLOCS];
  void *host[CU_MAX_ALLOCS];
  int broken; /* a CUDA call failed with a sticky error: the context is lost */
} cu_case_state;

static cu_case_state cu_case;
static uint64_t cu_seed;
static double cu_run_t0;
/* NK_CUDA_TEST_QUICK set (and not "0"): a small subset of the cases on small tensors, for
 * compute-sanitizer (scripts/cuda_device_check.sh runs memcheck and racecheck that way). */
static int cu_quick;

static inline double cu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Records a failure of the current case (printed for the first 10). */
static inline void cu_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void cu_fail_at(const char *file, int line, const char *fmt, ...) {
  nk_t_cur_failed = 1;
  if (nk_t_cur_checks_failed++ < 10) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
  } else if (nk_t_cur_checks_failed == 11) {
    fprintf(stderr, "  (further failures of this case not shown)\n");
  }
}
#define CU_FAIL(...) cu_fail_at(__FILE__, __LINE__, __VA_ARGS__)
/* A condition of the current case; evaluates to the condition. */
#define CU_EXPECT(cond, ...) ((cond) ? 1 : (CU_FAIL(__VA_ARGS__), cu_case.worst = INFINITY, 0))

/* Starts a case; returns 0 (and the caller skips the case) once the CUDA context is lost. */
static inline int cu_case_begin(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int cu_case_begin(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cu_case.name, sizeof cu_case.name, fmt, ap);
  va_end(ap);
  cu_case.index++;
  if (cu_case.broken) return 0;
  nk_t_cur_failed = 0;
  nk_t_cur_skipped = 0;
  nk_t_cur_checks_failed = 0;
  cu_case.worst = 0.0;
  cu_case.ndev = cu_case.nhost = 0;
  cu_case.t0 = cu_now();
  return 1;
}

/* The RNG of the current case: a function of the run's seed and the case's position only. */
static inline nk_rng cu_case_rng(void) {
  uint64_t z = cu_seed + 0x9E3779B97F4A7C15ull * (uint64_t)(cu_case.index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  nk_rng r = {z ? z : 1};
  return r;
}

/* Frees the case's buffers, prints its line and counts it. */
static inline void cu_case_end(void) {
  for (int k = 0; k < cu_case.ndev; k++) {
    const cudaError_t e = cudaFree(cu_case.dev[k]);
    if (e != cudaSuccess) CU_FAIL("cudaFree: %s", cudaGetErrorString(e));
  }
  for (int k = 0; k < cu_case.nhost; k++) free(cu_case.host[k]);
  cu_case.ndev = cu_case.nhost = 0;
  /* a fault inside a kernel makes every later CUDA call fail: say so once and stop */
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) {
    CU_FAIL("cudaDeviceSynchronize after the case: %s", cudaGetErrorString(e));
    (void)cudaGetLastError(); /* clears an error that is not sticky */
    if (cudaDeviceSynchronize() != cudaSuccess) {
      cu_case.broken = 1;
      fprintf(stderr, "  the CUDA context is lost (%s): the remaining cases are not run\n",
              cudaGetErrorString(e));
    }
  }
  const int pass = !nk_t_cur_failed;
  printf("%-78s worst %8.3f  %s  (%.2f s)\n", cu_case.name, cu_case.worst, pass ? "PASS" : "FAIL",
         cu_now() - cu_case.t0);
  fflush(stdout);
  if (pass)
    nk_t_passed++;
  else
    nk_t_failed++;
}

/* ---- the run ----------------------------------------------------------------------------------
 */

/* Prints the device and the seed; returns 0 when there is no usable device (the caller returns
 * 77, which ctest reports as skipped). The seed comes from NK_TEST_SEED, else from the time and
 * the process id; the line printed says how to repeat the run. */
static inline int cu_start(const char *prog) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (nk_cuda_device_count() == 0) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    printf("SKIPPED: no CUDA device (%s)\n", cudaGetErrorString(e));
    return 0;
  }
  struct cudaDeviceProp prop;
  const cudaError_t e = cudaGetDeviceProperties(&prop, 0);
  if (e == cudaSuccess)
    printf("%s: device 0: %s (sm_%d%d, %.1f GiB)\n", prog, prop.name, prop.major, prop.minor,
           (double)prop.totalGlobalMem / 1073741824.0);
  else
    printf("%s: cudaGetDeviceProperties: %s\n", prog, cudaGetErrorString(e));
  const char *s = getenv("NK_TEST_SEED");
  if (s != NULL && *s != '\0') {
    cu_seed = (uint64_t)strtoull(s, NULL, 0);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cu_seed =
        ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 40);
  }
  const char *q = getenv("NK_CUDA_TEST_QUICK");
  cu_quick = q != NULL && *q != '\0' && strcmp(q, "0") != 0;
  printf("%s: seed %llu (NK_TEST_SEED=%llu repeats this run)%s\n", prog,
         (unsigned long long)cu_seed, (unsigned long long)cu_seed,
         cu_quick ? ", quick mode (NK_CUDA_TEST_QUICK)" : "");
  cu_run_t0 = cu_now();
  return 1;
}

/* The summary line; 0 when every case passed, 1 otherwise. */
static inline int cu_finish(const char *prog) {
  printf("%s: %.1f s, seed %llu\n", prog, cu_now() - cu_run_t0, (unsigned long long)cu_seed);
  if (cu_case.broken) nk_t_failed++;
  return nk_test_summary() ? 1 : 0;
}

/* ---- checked CUDA calls and statuses ----------------------------------------------------------
 */

static inline int cu_ok_(cudaError_t e, const char *what, const char *file, int line) {
  if (e == cudaSuccess) return 1;
  cu_fail_at(file, line, "%s: %s", what, cudaGetErrorString(e));
  cu_case.worst = INFINITY;
  return 0;
}
/* Evaluates a CUDA call; 1 on success, else records the failure and gives 0. */
#define CU_OK(call) cu_ok_((call), #call, __FILE__, __LINE__)

static inline int cu_status_(nk_status got, nk_status want, const char *what, const char *file,
                             int line) {
  if (got == want) return 1;
  cu_fail_at(file, line, "%s returned %s, expected %s (nk_cuda_last_error: \"%s\")", what,
             nk_status_string(got), nk_status_string(want), nk_cuda_last_error());
  cu_case.worst = INFINITY;
  return 0;
}
/* A status compared with the expected one. */
#define CU_STATUS(got, want, what) cu_status_((got), (want), (what), __FILE__, __LINE__)

/* After an operator: wait for the default stream and collect any launch error. */
static inline int cu_sync_(const char *what, const char *file, int line) {
  const cudaError_t e1 = cudaStreamSynchronize(0);
  const cudaError_t e2 = cudaGetLastError();
  if (e1 == cudaSuccess && e2 == cudaSuccess) return 1;
  cu_fail_at(file, line, "%s: cudaStreamSynchronize: %s, cudaGetLastError: %s", what,
             cudaGetErrorString(e1), cudaGetErrorString(e2));
  cu_case.worst = INFINITY;
  return 0;
}
#define CU_SYNC(what) cu_sync_((what), __FILE__, __LINE__)

/* ---- allocations (freed by cu_case_end) -------------------------------------------------------
 */

static inline void *cu_host(size_t bytes) {
  if (cu_case.nhost == CU_MAX_ALLOCS) {
    CU_FAIL("too many host allocations in one case");
    return NULL;
  }
  void *p = malloc(bytes ? bytes : 1);
  if (p == NULL) {
    CU_FAIL("host allocation of %zu bytes", bytes);
    return NULL;
  }
  cu_case.host[cu_case.nhost++] = p;
  return p;
}

static inline void *cu_dev(size_t bytes) {
  if (cu_case.ndev == CU_MAX_ALLOCS) {
    CU_FAIL("too many device allocations in one case");
    return NULL;
  }
  void *p = NULL;
  if (!CU_OK(cudaMalloc(&p, bytes ? bytes : 16))) return NULL;
  cu_case.dev[cu_case.ndev++] = p;
  return p;
}

/* A device buffer and its host mirror (h), `bytes` each. */
typedef struct cu_buf {
  void *h, *d;
  size_t bytes;
} cu_buf;

static inline int cu_poison(const cu_buf *b) { return CU_OK(cudaMemset(b->d, 0xFF, b->bytes)); }
static inline int cu_up(const cu_buf *b) {
  return CU_OK(cudaMemcpy(b->d, b->h, b->bytes, cudaMemcpyHostToDevice));
}
static inline int cu_down(const cu_buf *b) {
  return CU_OK(cudaMemcpy(b->h, b->d, b->bytes, cudaMemcpyDeviceToHost));
}
/* Both sides all-ones. Returns 0 on failure. */
static inline int cu_buf_alloc(cu_buf *b, size_t bytes) {
  b->bytes = bytes;
  b->h = cu_host(bytes);
  b->d = cu_dev(bytes);
  if (b->h == NULL || b->d == NULL) return 0;
  memset(b->h, 0xFF, bytes);
  return cu_poison(b);
}
/* Downloads the device side into a fresh host array and compares it byte for byte with the
 * host mirror (a second run of the same call against the first). */
static inline int cu_same_as_mirror(const cu_buf *b, const char *what) {
  unsigned char *t = cu_host(b->bytes);
  if (t == NULL || !CU_OK(cudaMemcpy(t, b->d, b->bytes, cudaMemcpyDeviceToHost))) return 0;
  const unsigned char *m = b->h;
  for (size_t k = 0; k < b->bytes; k++)
    if (t[k] != m[k]) {
      CU_FAIL("%s: run twice, the results differ (first at byte %zu of %zu)", what, k, b->bytes);
      cu_case.worst = INFINITY;
      return 0;
    }
  return 1;
}

/* Elements a rows x cols tensor with this row stride spans. */
static inline size_t cu_extent(size_t rows, size_t cols, size_t stride) {
  return rows ? (rows - 1) * stride + cols : 0;
}

/* ---- elements ---------------------------------------------------------------------------------
 */

/* The never-written pattern (see the top of the file). */
static inline int cu_unwritten(const void *p, size_t k, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) {
    uint32_t u;
    memcpy(&u, (const char *)p + 4 * k, 4);
    return u == 0xFFFFFFFFu;
  }
  uint16_t h;
  memcpy(&h, (const char *)p + 2 * k, 2);
  return h == 0xFFFFu;
}

/* |got - ref| / bound: 0 when equal, inf for a NaN on one side only or a wrong infinity. */
static inline double cu_ratio(double got, double ref, double bound) {
  if (isnan(ref)) return isnan(got) ? 0.0 : INFINITY;
  if (isnan(got)) return INFINITY;
  if (got == ref) return 0.0;
  if (isinf(ref) || isinf(got)) return INFINITY;
  return bound > 0.0 ? fabs(got - ref) / bound : INFINITY;
}

/* Element k of buf (dtype dt) against ref within bound; the value of ref rounded to dt is
 * always accepted (e.g. +-inf where ref overflows f16). Records the ratio. */
static inline int cu_close_(const char *file, int line, const void *buf, size_t k, nk_dtype dt,
                            double ref, double bound, const char *what, size_t i, size_t j) {
  if (cu_unwritten(buf, k, dt)) {
    cu_fail_at(file, line, "%s[%zu][%zu] was not written (reference %.9g)", what, i, j, ref);
    cu_case.worst = INFINITY;
    return 0;
  }
  const double got = nk_t_get(buf, k, dt);
  const double q = (!isnan(ref) && got == nk_t_round(ref, dt)) ? 0.0 : cu_ratio(got, ref, bound);
  if (q > cu_case.worst) cu_case.worst = q;
  if (q <= 1.0) return 1;
  cu_fail_at(file, line, "%s[%zu][%zu] = %.9g, reference %.9g, bound %.3g (%.3g x bound)", what, i,
             j, got, ref, bound, q);
  return 0;
}
#define CU_CLOSE(buf, k, dt, ref, bound, what, i, j) \
  cu_close_(__FILE__, __LINE__, (buf), (k), (dt), (ref), (bound), (what), (i), (j))

/* Element k must be exactly want (NaN: any NaN that was written). */
static inline int cu_exact_(const char *file, int line, const void *buf, size_t k, nk_dtype dt,
                            double want, const char *what, size_t i, size_t j) {
  const int unwritten = cu_unwritten(buf, k, dt);
  const double got = nk_t_get(buf, k, dt);
  if (!unwritten && (isnan(want) ? isnan(got) : got == want)) return 1;
  if (unwritten)
    cu_fail_at(file, line, "%s[%zu][%zu] was not written (expected %.9g)", what, i, j, want);
  else
    cu_fail_at(file, line, "%s[%zu][%zu] = %.9g, expected exactly %.9g", what, i, j, got, want);
  cu_case.worst = INFINITY;
  return 0;
}
#define CU_EXACT(buf, k, dt, want, what, i, j) \
  cu_exact_(__FILE__, __LINE__, (buf), (k), (dt), (want), (what), (i), (j))

/* Every element of a rows x cols tensor (row stride `stride`) was written; the padding between
 * rows (stride > cols) was not (it holds the poison, or the input's 0xFF padding in place). */
static inline int cu_written_(const char *file, int line, const void *buf, size_t rows, size_t cols,
                              size_t stride, nk_dtype dt, const char *what) {
  size_t bad = 0, first_i = 0, first_j = 0, pad_bad = 0;
  for (size_t i = 0; i < rows; i++) {
    for (size_t j = 0; j < cols; j++)
      if (cu_unwritten(buf, i * stride + j, dt) && bad++ == 0) first_i = i, first_j = j;
    if (i + 1 < rows)
      for (size_t j = cols; j < stride; j++)
        if (!cu_unwritten(buf, i * stride + j, dt)) pad_bad++;
  }
  if (bad)
    cu_fail_at(file, line, "%s: %zu of %zu elements not written (first [%zu][%zu])", what, bad,
               rows * cols, first_i, first_j);
  if (pad_bad)
    cu_fail_at(file, line, "%s: %zu padding elements between rows written", what, pad_bad);
  if (bad || pad_bad) {
    cu_case.worst = INFINITY;
    return 0;
  }
  return 1;
}
#define CU_WRITTEN(buf, rows, cols, stride, dt, what) \
  cu_written_(__FILE__, __LINE__, (buf), (rows), (cols), (stride), (dt), (what))

/* Every byte of a buffer is still the poison (a call that must write nothing). */
static inline int cu_untouched_(const char *file, int line, const cu_buf *b, const char *what) {
  unsigned char *t = cu_host(b->bytes);
  if (t == NULL || !CU_OK(cudaMemcpy(t, b->d, b->bytes, cudaMemcpyDeviceToHost))) return 0;
  for (size_t k = 0; k < b->bytes; k++)
    if (t[k] != 0xFF) {
      cu_fail_at(file, line, "%s: byte %zu written by a call that must write nothing", what, k);
      cu_case.worst = INFINITY;
      return 0;
    }
  return 1;
}
#define CU_UNTOUCHED(b, what) cu_untouched_(__FILE__, __LINE__, (b), (what))

/* ---- data -------------------------------------------------------------------------------------
 */

/* About N(0,1) (Irwin-Hall of 4 uniforms, |v| < 3.47), cheap enough for millions of values;
 * never exactly 0 in practice but the tests do not rely on that. */
static inline double cu_normal(nk_rng *rng) {
  const uint64_t u = nk_rng_u64(rng);
  const double s = (double)(u & 0xFFFF) + (double)((u >> 16) & 0xFFFF) +
                   (double)((u >> 32) & 0xFFFF) + (double)(u >> 48);
  return ((s + 2.0) / 65536.0 - 2.0) * 1.7320508075688772;
}
/* Uniform in (-1, 1). */
static inline double cu_sym(nk_rng *rng) { return 2.0 * nk_rng_uniform(rng) - 1.0; }

/* The rows compared with the reference: every row when rows * cols <= full (or rows <= want),
 * else about `want` rows (at least 3): the first and the last (and the second and the one
 * before the last when want >= 4), the rest spread evenly from a random phase. Returns the
 * count; *idx (increasing) is a case allocation, NULL on failure. */
static inline size_t cu_pick_rows(size_t rows, size_t cols, size_t full, size_t want, nk_rng *rng,
                                  size_t **idx) {
  *idx = NULL;
  if (rows == 0) return 0;
  if (want < 3) want = 3;
  const int all = rows * cols <= full || rows <= want;
  size_t *out = cu_host((all ? rows : want) * sizeof(size_t));
  if (out == NULL) return 0;
  size_t n = 0;
  if (all) {
    for (size_t i = 0; i < rows; i++) out[n++] = i;
  } else {
    unsigned char *mark = cu_host(rows);
    if (mark == NULL) return 0;
    memset(mark, 0, rows);
    mark[0] = mark[rows - 1] = 1;
    if (want >= 4) mark[1] = mark[rows - 2] = 1;
    const size_t spread = want - (want >= 4 ? 4 : 2);
    const size_t phase = (size_t)(nk_rng_u64(rng) % rows);
    for (size_t k = 0; k < spread; k++) mark[(phase + k * (rows / spread)) % rows] = 1;
    for (size_t i = 0; i < rows && n < want; i++)
      if (mark[i]) out[n++] = i;
  }
  *idx = out;
  return n;
}

/* The widths' row counts: about 2^21 elements per case, at least 2 rows, at most 2^20, and odd
 * above 2 (row counts that are no multiple of any chunk or block size). */
static inline size_t cu_rows_for(size_t cols, size_t elements) {
  size_t r = elements / cols;
  if (r > ((size_t)1 << 20)) r = (size_t)1 << 20;
  if (r < 2) r = 2;
  if (r > 2 && r % 2 == 0) r--;
  return r;
}

/* Short names. */
static inline const char *cu_dt(nk_dtype dt) { return nk_dtype_name(dt); }

#endif /* NK_TEST_CUDA_UTIL_H */
