/*
 * resnorm_util.h — helpers of the research-norm tests (PowerNorm, UN, EvoNorm): token tensors
 * (N x S x C channel-last with padding), conversion to the dense double layout of the
 * references, per-channel comparisons, contexts over ISAs and thread counts.
 */
#ifndef NK_TEST_RESNORM_UTIL_H
#define NK_TEST_RESNORM_UTIL_H

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chnorm_util.h"
#include "reference.h"
#include "test.h"
#include "util.h"

/* A token tensor: N x S rows of C, row_stride >= C, n_stride >= S * row_stride. */
typedef struct tk_geom {
  size_t N, S, C;
  ptrdiff_t ns, rs;
} tk_geom;

static inline tk_geom tk_make(size_t N, size_t S, size_t C, size_t pad_row, size_t pad_n) {
  tk_geom g = {N, S, C, 0, 0};
  g.rs = (ptrdiff_t)(C + pad_row);
  g.ns = (ptrdiff_t)(S * (size_t)g.rs + pad_n);
  return g;
}
static inline size_t tk_span(const tk_geom *g) {
  return (g->N && g->S && g->C) ? (g->N - 1) * (size_t)g->ns + (g->S - 1) * (size_t)g->rs + g->C : 0;
}
static inline size_t tk_idx(const tk_geom *g, size_t row, size_t c) {
  return (row / g->S) * (size_t)g->ns + (row % g->S) * (size_t)g->rs + c;
}
/* A buffer for the tensor (padding filled with NaN for inputs, 0x5A bytes for outputs). */
static inline void *tk_alloc(const tk_geom *g, nk_dtype dt, int input) {
  const size_t n = tk_span(g), es = nk_dtype_size(dt);
  void *p = nk_t_alloc(n * es + 64);
  if (input)
    for (size_t i = 0; i < n; i++) nk_t_set(p, i, NAN, dt);
  else
    memset(p, 0x5A, n * es);
  return p;
}
/* Dense R x C double copy (the values as stored). */
static inline void tk_to_ref(const tk_geom *g, const void *p, nk_dtype dt, double *out) {
  const size_t R = g->N * g->S;
  for (size_t i = 0; i < R; i++)
    for (size_t c = 0; c < g->C; c++) out[i * g->C + c] = nk_t_get(p, tk_idx(g, i, c), dt);
}
/* Sets every element from a generator of (row, channel). */
static inline void tk_fill(const tk_geom *g, void *p, nk_dtype dt, nk_rng *rng, double scale) {
  const size_t R = g->N * g->S;
  for (size_t i = 0; i < R; i++)
    for (size_t c = 0; c < g->C; c++)
      nk_t_set(p, tk_idx(g, i, c), scale * (0.5 + 0.1 * (double)(c % 7)) * nk_rng_normal(rng) +
                                       0.05 * (double)(c % 3),
               dt);
}

/* Compares a library token tensor with a dense reference: bound per element
 * rel * max_row |ref[., c]| + (dt != f32: 1 ulp of dt at ref) + floor. Returns the worst ratio. */
static inline double tk_compare(const char *what, const tk_geom *g, nk_dtype dt, const void *lib,
                                const double *ref, double rel, double floor_) {
  const size_t R = g->N * g->S, C = g->C;
  double worst = 0.0;
  for (size_t c = 0; c < C; c++) {
    double mx = 0.0;
    for (size_t i = 0; i < R; i++)
      if (fabs(ref[i * C + c]) > mx) mx = fabs(ref[i * C + c]);
    for (size_t i = 0; i < R; i++) {
      const double r = ref[i * C + c], got = nk_t_get(lib, tk_idx(g, i, c), dt);
      const double bound = rel * mx + (dt != NK_DTYPE_F32 ? nk_t_ulp(r, dt) : 0.0) + floor_;
      const double q = ch_ratio32(got, r, bound);
      if (q > worst) worst = q;
      NK_CHECK(q <= 1.0, "%s[row %zu, c %zu] = %.9g, reference %.9g (bound %.3g)", what, i, c,
               got, r, bound);
    }
  }
  return worst;
}

/* Per-channel vectors: |got - ref| <= rel * max|ref| + abs_. */
static inline void vec_compare(const char *what, size_t n, const float *got, const double *ref,
                               double rel, double abs_) {
  double mx = 0.0;
  for (size_t i = 0; i < n; i++)
    if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
  for (size_t i = 0; i < n; i++) {
    const double q = ch_ratio((double)got[i], ref[i], rel * mx + abs_);
    NK_CHECK(q <= 1.0, "%s[%zu] = %.9g, reference %.9g", what, i, (double)got[i], ref[i]);
  }
}

/* The (isa, threads) combinations of the bitwise tests; ctx NULL when the ISA is missing. */
static const nk_isa rn_isas[3] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};

#endif /* NK_TEST_RESNORM_UTIL_H */
