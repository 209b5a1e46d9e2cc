/*
 * rlcal_regress.c — regression tests of RL/calibration findings of the fuzz harnesses
 * tests/fuzz/rlcal.c and tests/fuzz/calib.c (tests/fuzz/known/ holds the fuzz inputs).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "normkit.h"
#include "reference.h"
#include "test.h"
#include "util.h"

/* tests/fuzz/known/rlcal-two-hot-last-centre: y beyond the last centre is clipped to c_{m-1};
 * t = (c_{m-1} - c_0) / zeta rounded to just below m - 1, which put 7e-15 on bin m - 2 (the
 * header: y == c_{m-1} puts mass 1 on the last centre). */
NK_TEST(two_hot_last_centre_exact) {
  enum { MMAX = 64 };
  float p[MMAX];
  static const float sup[][2] = {{-10.0f, 10.0f}, {0.0f, 11.0f}, {-3.0f, 4.0f}, {1e4f, 1.01e4f}};
  for (size_t s = 0; s < 4; s++)
    for (size_t m = 2; m <= MMAX; m++) {
      const float lo = sup[s][0], hi = sup[s][1];
      const double zeta = ((double)hi - lo) / (double)m;
      const float ys[3] = {hi, hi + 1.0f, (float)(lo + ((double)m - 0.5) * zeta)};
      for (int k = 0; k < 3; k++) {
        if ((double)ys[k] < lo + ((double)m - 0.5) * zeta) continue; /* rounded below c_{m-1} */
        NK_REQUIRE(nk_two_hot_target(NULL, 1, m, lo, hi, &ys[k], p) == NK_OK, "two-hot");
        NK_CHECK(p[m - 1] == 1.0f, "[%g, %g] m %zu y %.9g: p[m-1] = %.9g", (double)lo,
                 (double)hi, m, (double)ys[k], (double)p[m - 1]);
        for (size_t i = 0; i + 1 < m; i++)
          NK_CHECK(p[i] == 0.0f, "[%g, %g] m %zu y %.9g: p[%zu] = %.9g", (double)lo, (double)hi,
                   m, (double)ys[k], i, (double)p[i]);
      }
    }
}

/* tests/fuzz/known/rlcal-hlgauss-xent-large-constant-row: lse was formed as mx + log(sum) and
 * then l_i subtracted, so log(sum) vanished for |logits| ~ 1e30: a constant row gave loss 0
 * (instead of S log m) and dlogits S - p (instead of S / m - p). */
NK_TEST(hlgauss_xent_large_constant_rows) {
  enum { M = 21 };
  static const float vals[] = {-1e30f, 1e30f, FLT_MAX, -FLT_MAX, 1e17f, 0.0f};
  float l[M], t[M], loss, dl[M];
  double ld[M], td[M];
  for (size_t v = 0; v < sizeof vals / sizeof vals[0]; v++) {
    double S = 0.0;
    for (size_t i = 0; i < M; i++) {
      l[i] = vals[v], ld[i] = l[i];
      t[i] = (float)((double)(1 + i % 4) / 50.0), td[i] = t[i], S += td[i];
    }
    NK_REQUIRE(nk_hlgauss_xent(NULL, 1, M, l, t, &loss, dl) == NK_OK, "xent");
    const double ref = nk_ref_categorical_xent(M, ld, td);
    NK_CHECK(fabs(ref - S * log((double)M)) < 1e-12, "reference %.17g", ref);
    NK_CHECK(fabs(loss - ref) <= nk_t_ulp(ref, NK_DTYPE_F32) + 1e-12,
             "logit %g: loss %.9g, ref %.17g", (double)vals[v], (double)loss, ref);
    for (size_t i = 0; i < M; i++) {
      const double g = S / M - td[i];
      NK_CHECK(fabs(dl[i] - g) <= 1e-7 * S + 1e-6 * fabs(g), "logit %g: dlogits[%zu] %.9g vs %.9g",
               (double)vals[v], i, (double)dl[i], g);
    }
  }
}

/* Findings in the float64 reference (src/reference/rlcal.c), fixed there:
 * tests/fuzz/known/rlcal-ref-clip-nan: the reference's clip returned a bound for NaN
 * (fmin/fmax drop NaN), where SB3's np.clip and normkit keep NaN;
 * tests/fuzz/known/rlcal-ref-bnpo-tgamma: the reference's Beta density overflowed tgamma for
 * concentrated fits (alpha + beta > 171), giving NaN advantages where normkit is finite. */
NK_TEST(reference_nan_clip_and_bnpo_concentrated) {
  double mean = 0.0, var = 1.0, x[2] = {NAN, 3.0}, y[2];
  nk_ref_rms s = {&mean, &var, 1.0};
  nk_ref_rms_normalize(2, 1, &s, 1e-8, 10.0, x, y);
  NK_CHECK(isnan(y[0]) && fabs(y[1] - 3.0) < 1e-6, "reference clip: %g %g", y[0], y[1]);
  float xf[2] = {NAN, 3.0f}, yf[2];
  nk_moments st;
  NK_REQUIRE(nk_running_norm_init(NULL, 1, &st) == NK_OK, "init");
  st.count = 1.0, st.m2 = 1.0;
  NK_REQUIRE(nk_running_norm_apply(NULL, 2, 1, &st, 1e-8f, 10.0f, xf, yf) == NK_OK, "apply");
  NK_CHECK(isnan(yf[0]), "apply keeps NaN");

  /* 8 groups of 64, success rates 32/64 except one 33/64: s2 ~ 3e-5, alpha, beta ~ 1.4e3 */
  enum { Q = 8, G = 64 };
  size_t sizes[Q];
  static float r[Q * G], adv[Q * G];
  static double rd[Q * G], ref[Q * G];
  double a, b, ra, rb;
  for (size_t q = 0; q < Q; q++) {
    sizes[q] = G;
    for (size_t i = 0; i < G; i++) {
      r[q * G + i] = (float)(i < (size_t)(q == 1 ? 33 : 32));
      rd[q * G + i] = r[q * G + i];
    }
  }
  NK_REQUIRE(nk_bnpo_advantages(NULL, Q, sizes, r, 0.0f, 1.0f, 1e6, adv, &a, &b) == NK_OK, "bnpo");
  nk_ref_bnpo(Q, sizes, rd, 0.0, 1.0, 1e6, ref, &ra, &rb);
  NK_CHECK(a + b > 171.0, "alpha %g beta %g: not concentrated", a, b);
  NK_CHECK(fabs(a - ra) <= 1e-12 * ra && fabs(b - rb) <= 1e-12 * rb, "alpha/beta %g %g vs %g %g",
           a, b, ra, rb);
  for (size_t i = 0; i < Q * G; i++)
    NK_CHECK(isfinite(ref[i]) && fabs(adv[i] - ref[i]) <= nk_t_ulp(ref[i], NK_DTYPE_F32) +
                                                               1e-12 * fabs(ref[i]),
             "adv[%zu] %.9g vs %.17g", i, (double)adv[i], ref[i]);
}

/* tests/fuzz/known/rlcal-quantile-inf: with infinite samples an integral h gives the order
 * statistic itself (the header); the reference's lerp gave inf * 0 = NaN there. */
NK_TEST(lsc_reference_infinite_samples) {
  const float x[5] = {-INFINITY, 1.0f, 2.0f, INFINITY, 3.0f};
  double xd[5];
  for (int i = 0; i < 5; i++) xd[i] = x[i];
  static const float levels[] = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 0.1f, 0.9f};
  for (size_t l = 0; l < sizeof levels / sizeof levels[0]; l++) {
    float got;
    NK_REQUIRE(nk_lsc_reward_reference(NULL, 5, x, levels[l], &got) == NK_OK, "quantile");
    const double e = nk_ref_quantile_linear(5, xd, levels[l]);
    NK_CHECK(isnan(e) ? isnan(got) : got == (float)e, "level %g: %g vs %g", (double)levels[l],
             (double)got, e);
  }
  float got;
  NK_REQUIRE(nk_lsc_reward_reference(NULL, 5, x, 0.0f, &got) == NK_OK && got == -INFINITY, "min");
  NK_REQUIRE(nk_lsc_reward_reference(NULL, 5, x, 1.0f, &got) == NK_OK && got == INFINITY, "max");
  NK_REQUIRE(nk_lsc_reward_reference(NULL, 5, x, 0.1f, &got) == NK_OK && isnan(got), "between");
}

/* tests/fuzz/known/rlcal-update-inf-column: the header said NaN/inf in a column makes the
 * feature's mean and m2 NaN; an infinity of one sign makes the mean +-inf (SB3/numpy and the
 * reference do the same). The header now says so. */
NK_TEST(running_norm_update_infinite_column) {
  nk_moments st[3];
  NK_REQUIRE(nk_running_norm_init(NULL, 3, st) == NK_OK, "init");
  const float x[6] = {-INFINITY, NAN, INFINITY, 1.0f, 2.0f, -INFINITY};
  NK_REQUIRE(nk_running_norm_update(NULL, 2, 3, x, st) == NK_OK, "update");
  NK_CHECK(st[0].mean == -INFINITY && isnan(st[0].m2), "-inf column: %g %g", st[0].mean, st[0].m2);
  NK_CHECK(isnan(st[1].mean) && isnan(st[1].m2), "NaN column: %g %g", st[1].mean, st[1].m2);
  NK_CHECK(isnan(st[2].mean) && isnan(st[2].m2), "both signs: %g %g", st[2].mean, st[2].m2);
}

/* tests/fuzz/known/calib-temperature-nll-large-logits: NLL summed mx + log(s) - beta z_y, so
 * log(s) lost bits against |beta z| (logits ~1e4: 2e-13 relative; a constant row of 1e30: all of
 * log(classes)). */
NK_TEST(temperature_nll_large_logits) {
  enum { N = 3, C = 5 };
  static const float vals[] = {1e4f, -1e30f, 1e30f, 3e38f};
  float z[N * C];
  double zd[N * C];
  const int64_t y[N] = {0, 2, 4};
  for (size_t v = 0; v < 4; v++) {
    for (size_t i = 0; i < N * C; i++) {
      z[i] = vals[v] + (v == 0 ? (float)(i % 3) * 0.0078125f : 0.0f);
      zd[i] = z[i];
    }
    double nll;
    NK_REQUIRE(nk_temperature_nll(NULL, N, C, z, y, 2.0, &nll, NULL) == NK_OK, "nll");
    const double ref = nk_ref_temperature_nll(N, C, zd, y, 2.0);
    NK_CHECK(fabs(nll - ref) <= 1e-13 * fabs(ref) + 1e-15, "logits %g: nll %.17g, ref %.17g",
             (double)vals[v], nll, ref);
  }
}

/* tests/fuzz/known/calib-cpn-score-misaligned-double: cpn_score described its doubles as f32
 * rows, so a double at an address of 4 mod 8 passed validation and was stored misaligned
 * (UBSan): INVALID_ARGUMENT now, nothing written. tests/fuzz/known/
 * calib-clr-partial-corr-misaligned-workspace: the workspace was used unaligned; it may now be
 * at any address (normkit.h, "Workspaces": aligned inside, the size includes the slack). */
NK_TEST(misaligned_doubles_rejected) {
  nk_context *ctx;
  NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "context");
  static double buf[16];
  const double cond[2] = {1.0, 2.0}, prior[2] = {0.5, 0.25};
  memset(buf, 0x5A, sizeof buf);
  double *score = (double *)(void *)((char *)buf + 4);
  NK_CHECK(nk_cpn_score(ctx, 2, cond, prior, 0.5, score) == NK_STATUS_INVALID_ARGUMENT &&
               nk_context_message(ctx)[0],
           "cpn_score with a misaligned score");
  const unsigned char *b = (const unsigned char *)buf;
  for (size_t i = 0; i < sizeof buf; i++) NK_CHECK(b[i] == 0x5A, "byte %zu written", i);
  NK_CHECK(nk_cpn_score(ctx, 2, (const double *)(const void *)((const char *)buf + 4), prior,
                        0.5, buf + 8) == NK_STATUS_INVALID_ARGUMENT,
           "cpn_score with a misaligned cond");
  enum { N = 6, D = 3 };
  float x[N * D];
  for (size_t i = 0; i < N * D; i++) x[i] = (float)(1.0 + (double)((i * 7) % 5));
  static double ws[256];
  double rho[D * D];
  const size_t need = nk_clr_partial_corr_workspace_size(D);
  NK_REQUIRE(need + 8 <= sizeof ws, "workspace");
  memset(rho, 0x5A, sizeof rho);
  double rho0[D * D];
  NK_CHECK(nk_clr_partial_corr(ctx, N, D, x, 1e-10, rho0, NULL, ws, need) == NK_OK, "aligned");
  for (int off = 1; off < 8; off++)
    NK_CHECK(nk_clr_partial_corr(ctx, N, D, x, 1e-10, rho, NULL, (char *)ws + off, need) ==
                     NK_OK &&
                 memcmp(rho, rho0, sizeof rho) == 0,
             "clr_partial_corr with the workspace at offset %d", off);
  memset(rho, 0x5A, sizeof rho);
  NK_CHECK(nk_clr_partial_corr(ctx, N, D, x, 1e-10, rho, NULL, (char *)ws + 3, need - 1) ==
               NK_STATUS_MISUSE,
           "one byte short");
  b = (const unsigned char *)rho;
  for (size_t i = 0; i < sizeof rho; i++) NK_CHECK(b[i] == 0x5A, "rho byte %zu written", i);
  nk_context_destroy(ctx);
}

int main(void) {
  NK_RUN(temperature_nll_large_logits);
  NK_RUN(misaligned_doubles_rejected);
  NK_RUN(two_hot_last_centre_exact);
  NK_RUN(hlgauss_xent_large_constant_rows);
  NK_RUN(reference_nan_clip_and_bnpo_concentrated);
  NK_RUN(lsc_reference_infinite_samples);
  NK_RUN(running_norm_update_infinite_column);
  return nk_test_summary();
}
