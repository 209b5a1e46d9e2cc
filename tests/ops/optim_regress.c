/*
 * optim_regress.c — regressions of the weight and optimizer normalization found by
 * tests/fuzz/optim.c (docs/security.md "Known bugs found by the harnesses"):
 *   weight_norm_inf_rows  an inf in a row of v makes that row's w, dv and dg NaN, as normkit.h
 *                         says (was: norm inf, scale g/inf = 0, so the row's finite elements
 *                         gave w = 0 and dv = 0, only the inf element NaN).
 */
#include <math.h>

#include "test.h"
#include "util.h"

NK_TEST(weight_norm_inf_rows) {
  enum { R = 3, C = 4, N = R * C };
  float v[N], g[R] = {1.5f, -2.0f, 0.5f}, dw[N], w[N], nrm[R], dv[N], dg[R];
  for (size_t i = 0; i < N; i++) v[i] = 0.25f * (float)(i % 5) - 0.5f, dw[i] = 1.0f;
  v[1 * C + 2] = INFINITY;  /* row 1: +inf */
  v[2 * C + 0] = -INFINITY; /* row 2: -inf */
  for (int e = 0; e < 2; e++) {
    const float eps = e ? 1e-3f : 0.0f;
    NK_REQUIRE(nk_weight_norm_fwd(NULL, R, C, eps, v, g, w, nrm) == NK_STATUS_OK, "fwd");
    NK_REQUIRE(nk_weight_norm_bwd(NULL, R, C, eps, v, g, dw, dv, dg) == NK_STATUS_OK, "bwd");
    for (size_t j = 0; j < C; j++) {
      NK_CHECK(isfinite(w[j]) && isfinite(dv[j]), "row 0 finite (eps %g)", (double)eps);
      for (size_t r = 1; r < R; r++)
        NK_CHECK(isnan(w[r * C + j]) && isnan(dv[r * C + j]), "inf row %zu: w %g dv %g", r,
                 (double)w[r * C + j], (double)dv[r * C + j]);
    }
    NK_CHECK(isfinite(dg[0]) && isnan(dg[1]) && isnan(dg[2]), "dg %g %g %g", (double)dg[0],
             (double)dg[1], (double)dg[2]);
    NK_CHECK(isinf(nrm[1]) && isinf(nrm[2]), "norm output: the unclamped inf norm");
  }
}

int main(void) {
  NK_RUN(weight_norm_inf_rows);
  return nk_test_summary();
}
