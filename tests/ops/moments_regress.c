/*
 * moments_regress.c — regression tests of moments findings of the fuzz harness
 * tests/fuzz/moments.c (tests/fuzz/known/ holds the fuzz inputs).
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "normkit.h"
#include "reference.h"
#include "test.h"

static const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};

/* tests/fuzz/known/moments-layernorm-moments-flt-max-inf: nk_layernorm_fwd_moments on a row
 * holding +-0x1.ff933cp+127 with a mean of -2.7e36 gave y = inf: the f32 centred value
 * x - mean_hi overflowed. Rows with |mean| >= 2^100 are now centred in double. Every placement
 * of one +FLT_MAX-ish and two -FLT_MAX-ish values (and the mirror image), whole rows and
 * column slices, every ISA, f32 and bf16. */
NK_TEST(layernorm_moments_near_flt_max) {
  enum { C = 61 };
  static float x[C], y[C];
  static uint16_t xb[C], yb[C];
  double h[C], ref[C], rm, rr;
  for (size_t k = 0; k < 3; k++) {
    if (!nk_isa_supported(isas[k])) continue;
    nk_context *ctx;
    NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "context");
    nk_context_set_isa(ctx, isas[k]);
    for (int bf = 0; bf < 2; bf++)
      for (int sign = -1; sign <= 1; sign += 2)
        for (int a = 0; a < C; a += 4)
          for (int b = 1; b < C; b += 9) {
            const int c = (a + b + 17) % C;
            if (a == b || a == c || b == c) continue;
            const nk_dtype dt = bf ? NK_DTYPE_BF16 : NK_DTYPE_F32;
            for (int i = 0; i < C; i++) x[i] = 0.37f * (float)((i * 7) % 11) - 1.0f;
            const float big = bf ? 0x1.fep+127f : 0x1.ff933cp+127f; /* the largest bf16 */
            x[a] = (float)sign * big;
            x[b] = -(float)sign * big;
            x[c] = -(float)sign * big;
            for (int i = 0; i < C; i++) {
              xb[i] = nk_f32_to_bf16(x[i]);
              h[i] = bf ? (double)nk_bf16_to_f32(xb[i]) : (double)x[i];
            }
            const void *X = bf ? (const void *)xb : (const void *)x;
            void *Y = bf ? (void *)yb : (void *)y;
            nk_moments m;
            NK_REQUIRE(nk_moments_rows(ctx, 1, C, dt, X, C, &m) == NK_OK, "moments");
            nk_ref_layernorm_fwd(1, C, h, NULL, NULL, 0, 1e-5, ref, &rm, &rr);
            double mx = 0.0;
            for (int i = 0; i < C; i++) mx = fmax(mx, fabs(ref[i]));
            /* the whole row, then the slice [a/2, a/2 + 13) */
            for (int part = 0; part < 2; part++) {
              const size_t c0 = part ? (size_t)a / 2 : 0, w = part ? (C - c0 < 13 ? C - c0 : 13) : C;
              nk_norm_desc d = nk_norm_desc_dense(1, w, dt, 1e-5f);
              float mean, rstd;
              const size_t es = nk_dtype_size(dt);
              NK_REQUIRE(nk_layernorm_fwd_moments(ctx, &d, &m, (const char *)X + c0 * es, NULL, NULL,
                                                  (char *)Y + c0 * es, &mean, &rstd) == NK_OK,
                         "status");
              for (size_t i = c0; i < c0 + w; i++) {
                const double got = bf ? (double)nk_bf16_to_f32(yb[i]) : (double)y[i];
                const double bound = 2e-6 * mx + (bf ? ldexp(1.0, (ref[i] != 0.0 && ilogb(fabs(ref[i])) > -126 ? ilogb(fabs(ref[i])) : -126) - 7) : 0.0);
                NK_CHECK(fabs(got - ref[i]) <= bound, "%s %s a=%d b=%d c=%d part %d: y[%zu] = %g, ref %g",
                         nk_isa_name(isas[k]), bf ? "bf16" : "f32", a, b, c, part, i, got, ref[i]);
              }
              NK_CHECK(fabs(rstd - rr) <= 2e-6 * rr, "rstd %g, ref %g", rstd, rr);
            }
          }
    nk_context_destroy(ctx);
  }
}

/* tests/fuzz/known/moments-cols-m2-bound: a 70-row bf16 column of values ~1e-30 with one -70144
 * (row 36): the column block's f32 sum of 32 squared deviations (31 small ones added to one
 * large one) gave M2 1.5e-6 off. The header's bound is now 2e-6 M2 (the worst case of such a
 * sum); this keeps the library within it, for every ISA and outlier row. */
NK_TEST(cols_m2_worst_case_bound) {
  enum { R = 70 };
  static uint16_t x[R];
  double v[R];
  for (size_t k = 0; k < 3; k++) {
    if (!nk_isa_supported(isas[k])) continue;
    nk_context *ctx;
    NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "context");
    nk_context_set_isa(ctx, isas[k]);
    double worst = 0.0;
    for (int out = 0; out < R; out++) {
      for (int i = 0; i < R; i++) {
        x[i] = nk_f32_to_bf16((float)(1e-30 * (double)((i * 37) % 19 - 9) / 7.0));
        if (i == out) x[i] = nk_f32_to_bf16(-70144.0f);
        v[i] = nk_bf16_to_f32(x[i]);
      }
      nk_moments m;
      NK_REQUIRE(nk_moments_cols(ctx, R, 1, NK_DTYPE_BF16, x, 1, &m) == NK_OK, "moments");
      double mean, m2;
      nk_ref_moments(R, v, 1, &mean, &m2);
      const double e = fabs(m.m2 - m2) / m2;
      worst = fmax(worst, e);
      NK_CHECK(m.count == R && e <= 2e-6, "%s outlier row %d: m2 %.17g ref %.17g (%.3g relative)",
               nk_isa_name(isas[k]), out, m.m2, m2, e);
      NK_CHECK(fabs(m.mean - mean) <= 5e-7 * sqrt(m2 / R) + 4 * DBL_EPSILON * fabs(mean), "mean");
    }
    printf("  %s: worst m2 error %.3g relative\n", nk_isa_name(isas[k]), worst);
    nk_context_destroy(ctx);
  }
}

/* tests/fuzz/known/moments-layernorm-moments-subnormal-row: a row {0x1.f687b4p-127,
 * 0x1.e4026p-127} with eps 2^-23 (rstd 2896): mean_lo of the subnormal mean was rounded to the
 * subnormal grid, y 3.3e-6 off. Such rows are now centred in double. */
NK_TEST(layernorm_moments_subnormal_row) {
  for (size_t k = 0; k < 3; k++) {
    if (!nk_isa_supported(isas[k])) continue;
    nk_context *ctx;
    NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "context");
    nk_context_set_isa(ctx, isas[k]);
    for (int t = 0; t < 200; t++) {
      enum { C = 5 };
      float x[C], y[C], mean, rstd;
      double h[C], ref[C], rm, rr;
      for (int i = 0; i < C; i++) {
        x[i] = (float)(0x1.f687b4p-127 * (1.0 + 0.03 * (double)(((t + 3) * (i + 1) * 7919) % 23 - 11) / 11.0));
        if (t % 3 == 1 && i == 0) x[i] = -x[i];
        h[i] = x[i];
      }
      const size_t n = 2 + (size_t)t % 4;
      nk_moments m;
      NK_REQUIRE(nk_moments_rows(ctx, 1, n, NK_DTYPE_F32, x, C, &m) == NK_OK, "moments");
      nk_norm_desc d = nk_norm_desc_dense(1, n, NK_DTYPE_F32, 0x1p-23f);
      NK_REQUIRE(nk_layernorm_fwd_moments(ctx, &d, &m, x, NULL, NULL, y, &mean, &rstd) == NK_OK, "status");
      nk_ref_layernorm_fwd(1, n, h, NULL, NULL, 0, 0x1p-23, ref, &rm, &rr);
      double mx = 0.0;
      for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
      for (size_t i = 0; i < n; i++)
        NK_CHECK(fabs(y[i] - ref[i]) <= 2e-6 * mx + 0x1p-148, "%s t=%d: y[%zu] = %.9g, ref %.9g",
                 nk_isa_name(isas[k]), t, i, (double)y[i], ref[i]);
    }
    nk_context_destroy(ctx);
  }
}

int main(void) {
  NK_RUN(layernorm_moments_subnormal_row);
  NK_RUN(layernorm_moments_near_flt_max);
  NK_RUN(cols_m2_worst_case_bound);
  return nk_test_summary();
}
