/*
 * exp_ulp.c — the accuracy of normkit's exp (softmax.h "exp(t)") over every float32 input.
 *
 * For every float in [-104, 88.75] it runs each nk_f32_exp__<isa>_u64 kernel this CPU supports
 * (softmax.inc), checks that all of them give the same bits, and compares the result with
 * exp() computed in double: the error in units in the last place of the f32 result at the
 * reference value (subnormal results in units of the subnormal spacing 2^-149). The double
 * exp rounded to f32 is the correctly rounded result except in astronomically rare cases
 * (the double error would have to straddle an f32 rounding boundary). Every float outside the
 * range is checked too: below -104 (and -inf) gives +0, above 88.75 (and +inf) gives +inf, NaN
 * gives NaN.
 *
 * Prints the maximum error, where it occurs, a histogram (correctly rounded, 0.5-1, 1-2, > 2
 * ulp) and whether all ISAs agree. Two threads. Built with the tools (target nk_exp_ulp), not
 * run by the tests: minutes in a Release build (6.5 min on a busy 2-core machine).
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/softmax/softmax.h"

typedef struct exp_kernel {
  nk_isa isa;
  nk_exp_fn fn;
  const char *name;
} exp_kernel;

static const exp_kernel all_kernels[] = {
#define NK_SOFTMAX_FWD(isa, algo, dtype, fn)
#define NK_SOFTMAX_BWD(isa, dtype, fn)
#define NK_XENT(isa, dtype, fn)
#define NK_SIGMOID_FWD(isa, dtype, fn)
#define NK_SIGMOID_BWD(isa, dtype, fn)
#define NK_EXP(isa, fn) {isa, fn, #fn},
#include "kernels/softmax/softmax.inc"
#undef NK_SOFTMAX_FWD
#undef NK_SOFTMAX_BWD
#undef NK_XENT
#undef NK_SIGMOID_FWD
#undef NK_SIGMOID_BWD
#undef NK_EXP
};
#define NALL (sizeof all_kernels / sizeof all_kernels[0])

static const exp_kernel *kern[NALL];
static size_t nkern;

#define CHUNK 65536
#define NTHREADS 2

typedef struct stats {
  uint64_t count, hist[4], mismatch, outside, outside_bad;
  double max_ulp;
  float max_at;
  float max_got;
  double max_ref;
  uint32_t first_mismatch;
  int has_mismatch;
} stats;

static float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static uint32_t to_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static double ulp_at(double v) {
  int e;
  frexp(fabs(v), &e); /* |v| in [2^(e-1), 2^e): f32 spacing 2^(e-24) */
  return ldexp(1.0, e - 24 < -149 ? -149 : e - 24);
}

/* Bit patterns [lo, hi) of one thread. */
typedef struct job {
  uint64_t lo, hi;
  stats s;
} job;

static void *work(void *arg) {
  job *j = arg;
  stats *s = &j->s;
  float *x = malloc(CHUNK * 4), *y[8];
  for (size_t k = 0; k < nkern; k++) y[k] = malloc(CHUNK * 4);
  for (uint64_t u0 = j->lo; u0 < j->hi; u0 += CHUNK) {
    const size_t cnt = j->hi - u0 < CHUNK ? (size_t)(j->hi - u0) : CHUNK;
    for (size_t i = 0; i < cnt; i++) x[i] = from_bits((uint32_t)(u0 + i));
    for (size_t k = 0; k < nkern; k++) kern[k]->fn(cnt, x, y[k]);
    for (size_t i = 0; i < cnt; i++) {
      const uint32_t b0 = to_bits(y[0][i]);
      for (size_t k = 1; k < nkern; k++)
        if (to_bits(y[k][i]) != b0) {
          if (!s->has_mismatch) s->first_mismatch = (uint32_t)(u0 + i), s->has_mismatch = 1;
          s->mismatch++;
          break;
        }
      const float t = x[i], r = y[0][i];
      if (isnan(t)) {
        s->outside++;
        s->outside_bad += !isnan(r);
        continue;
      }
      if (t < -104.0f || t > 88.75f) {
        s->outside++;
        s->outside_bad += t < 0 ? to_bits(r) != 0u : r != INFINITY;
        continue;
      }
      const double ref = exp((double)t);
      const float cr = (float)ref;
      double err;
      if (isinf(cr)) err = isinf(r) ? 0.0 : INFINITY;
      else if (isinf(r)) err = INFINITY;
      else err = fabs((double)r - ref) / ulp_at(ref);
      s->count++;
      s->hist[r == cr ? 0 : err <= 1.0 ? 1 : err <= 2.0 ? 2 : 3]++;
      if (err > s->max_ulp) s->max_ulp = err, s->max_at = t, s->max_got = r, s->max_ref = ref;
    }
  }
  free(x);
  for (size_t k = 0; k < nkern; k++) free(y[k]);
  return NULL;
}

int main(void) {
  for (size_t k = 0; k < NALL; k++)
    if (nk_isa_supported(all_kernels[k].isa) && nkern < 8) kern[nkern++] = &all_kernels[k];
  printf("normkit exp: every float32 input, %zu kernel(s):", nkern);
  for (size_t k = 0; k < nkern; k++) printf(" %s", kern[k]->name);
  printf("\n");
  const time_t t0 = time(NULL);
  job jobs[NTHREADS];
  pthread_t th[NTHREADS];
  const uint64_t total = (uint64_t)1 << 32;
  for (int t = 0; t < NTHREADS; t++) {
    memset(&jobs[t], 0, sizeof jobs[t]);
    jobs[t].lo = total / NTHREADS * (uint64_t)t;
    jobs[t].hi = total / NTHREADS * (uint64_t)(t + 1);
    pthread_create(&th[t], NULL, work, &jobs[t]);
  }
  stats s;
  memset(&s, 0, sizeof s);
  for (int t = 0; t < NTHREADS; t++) {
    pthread_join(th[t], NULL);
    const stats *q = &jobs[t].s;
    s.count += q->count;
    for (int h = 0; h < 4; h++) s.hist[h] += q->hist[h];
    s.mismatch += q->mismatch;
    s.outside += q->outside;
    s.outside_bad += q->outside_bad;
    if (q->has_mismatch && !s.has_mismatch) s.has_mismatch = 1, s.first_mismatch = q->first_mismatch;
    if (q->max_ulp > s.max_ulp) s.max_ulp = q->max_ulp, s.max_at = q->max_at, s.max_got = q->max_got, s.max_ref = q->max_ref;
  }
  printf("inputs in [-104, 88.75]: %llu\n", (unsigned long long)s.count);
  printf("max error: %.4f ulp at x = %a (%.9g): got %a, exp = %.17g\n", s.max_ulp, (double)s.max_at,
         (double)s.max_at, (double)s.max_got, s.max_ref);
  static const char *bins[4] = {"correctly rounded", "(0.5, 1] ulp", "(1, 2] ulp", "> 2 ulp"};
  for (int h = 0; h < 4; h++)
    printf("  %-18s %12llu  (%.6f%%)\n", bins[h], (unsigned long long)s.hist[h],
           100.0 * (double)s.hist[h] / (double)s.count);
  printf("inputs outside (incl. +-inf, NaN): %llu, wrong (not 0 / inf / NaN): %llu\n",
         (unsigned long long)s.outside, (unsigned long long)s.outside_bad);
  if (nkern > 1) {
    if (s.mismatch)
      printf("ISAs identical: NO (%llu inputs differ, first 0x%08x)\n", (unsigned long long)s.mismatch,
             s.first_mismatch);
    else
      printf("ISAs identical: yes (all %llu bit patterns)\n", (unsigned long long)total);
  } else {
    printf("ISAs identical: only one ISA on this CPU\n");
  }
  printf("time: %ld s, %d threads\n", (long)(time(NULL) - t0), NTHREADS);
  return s.mismatch || s.outside_bad ? 1 : 0;
}
