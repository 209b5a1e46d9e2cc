/*
 * util.h — helpers shared by the C tests: a seeded RNG, typed buffers, reference comparisons.
 */
#ifndef NK_TEST_UTIL_H
#define NK_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "normkit.h"

/* xorshift64* — deterministic, seeded per test. */
typedef struct nk_rng {
  uint64_t s;
} nk_rng;

static inline uint64_t nk_rng_u64(nk_rng *r) {
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return r->s * 0x2545F4914F6CDD1DULL;
}
static inline double nk_rng_uniform(nk_rng *r) { /* (0, 1) */
  return ((double)(nk_rng_u64(r) >> 11) + 0.5) * 0x1p-53;
}
static inline double nk_rng_normal(nk_rng *r) {
  const double u = nk_rng_uniform(r), v = nk_rng_uniform(r);
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Element access for any dtype. */
static inline double nk_t_get(const void *p, size_t i, nk_dtype dt) {
  return nk__load_f32(p, i, dt);
}
static inline void nk_t_set(void *p, size_t i, double v, nk_dtype dt) {
  nk__store_f32(p, i, (float)v, dt);
}
/* The value v takes once stored in dt. */
static inline double nk_t_round(double v, nk_dtype dt) { return nk__round_to((float)v, dt); }
/* One unit in the last place of dt at magnitude |v| (the spacing of dt values around v). */
static inline double nk_t_ulp(double v, nk_dtype dt) {
  const int mant = dt == NK_DTYPE_F32 ? 24 : dt == NK_DTYPE_BF16 ? 8 : 11;
  const int emin = dt == NK_DTYPE_F16 ? -14 : -126;
  int e;
  frexp(fabs(v), &e); /* |v| in [2^(e-1), 2^e) */
  e -= 1;
  if (e < emin || v == 0.0) e = emin;
  return ldexp(1.0, e - (mant - 1));
}

static inline void *nk_t_alloc(size_t bytes) {
  void *p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
  memset(p, 0, bytes ? bytes : 64);
  return p;
}

#endif /* NK_TEST_UTIL_H */
