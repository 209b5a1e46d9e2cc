/*
 * rownorm_regress.c — regression tests of row-norm bugs found by the fuzz harnesses
 * (tests/fuzz/known/ holds the fuzz inputs).
 */
#include <math.h>

#include "normkit.h"
#include "reference.h"
#include "test.h"

/* tests/fuzz/known/rownorm-layernorm-flt-max-row-nan: a LayerNorm row holding -FLT_MAX-ish and
 * +FLT_MAX-ish values overflowed the f32 sums of the second pass (centred values beyond
 * FLT_MAX); the refinement then produced mean -inf and y NaN on every ISA. Every placement of
 * one -0x1.ff933cp+127 and two +0x1.ff933cp+127 among 54 values must match the reference. */
NK_TEST(layernorm_near_flt_max_both_signs) {
  static const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  enum { C = 54 };
  float x[C], y[C], mean, rstd;
  double h[C], ref[C], rm, rr;
  nk_norm_desc d = nk_norm_desc_dense(1, C, NK_DTYPE_F32, 1e-5f);
  for (size_t k = 0; k < 3; k++) {
    if (!nk_isa_supported(isas[k])) continue;
    nk_context *ctx;
    NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "context");
    nk_context_set_isa(ctx, isas[k]);
    for (int a = 0; a < C; a += 5)
      for (int b = 0; b < C; b += 3)
        for (int c = b + 1; c < C; c += 7) {
          if (a == b || a == c) continue;
          for (int i = 0; i < C; i++) x[i] = 0.37f * (float)((i * 7) % 11) - 1.0f;
          x[a] = -0x1.ff933cp+127f;
          x[b] = 0x1.ff933cp+127f;
          x[c] = 0x1.ff933cp+127f;
          for (int i = 0; i < C; i++) h[i] = x[i];
          NK_REQUIRE(nk_layernorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, &mean, &rstd) == NK_OK,
                     "status");
          nk_ref_layernorm_fwd(1, C, h, NULL, NULL, 0, 1e-5, ref, &rm, &rr);
          double m = 0.0;
          for (int i = 0; i < C; i++) m = fmax(m, fabs(ref[i]));
          for (int i = 0; i < C; i++)
            NK_CHECK(fabs(y[i] - ref[i]) <= 2e-6 * m, "%s a=%d b=%d c=%d: y[%d] = %g, ref %g",
                     nk_isa_name(isas[k]), a, b, c, i, y[i], ref[i]);
          NK_CHECK(fabs(mean - rm) <= 1e-6 * fabs(rm), "mean %g, ref %g", mean, rm);
          NK_CHECK(fabs(rstd - rr) <= 1e-6 * rr, "rstd %g, ref %g", rstd, rr);
        }
    nk_context_destroy(ctx);
  }
}

int main(void) {
  NK_RUN(layernorm_near_flt_max_both_signs);
  return nk_test_summary();
}
