/*
 * tests/reference/softmax.c — the float64 softmax-family references checked against themselves:
 * closed-form values, identities (rows sum to 1, shift invariance, log/exp consistency, the sink
 * mass), the backward against central differences of the forward, cross-entropy against
 * log_softmax + NLL composed by hand, and the edge-case rules (masked rows, NaN rows).
 * The operator tests (tests/ops/softmax.c, cross_entropy.c) trust these references.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

static int close_to(double a, double b, double tol) { return fabs(a - b) <= tol; }

NK_TEST(closed_forms) {
  const double z[2] = {0.0, log(2.0)};
  double y[3], lse;
  nk_ref_softmax_fwd(1, 2, z, NULL, 0, 0, y, &lse);
  NK_CHECK(close_to(y[0], 1.0 / 3, 1e-16) && close_to(y[1], 2.0 / 3, 1e-16), "%.17g %.17g", y[0],
           y[1]);
  NK_CHECK(close_to(lse, log(3.0), 1e-15), "lse %.17g", lse);
  nk_ref_softmax_fwd(1, 2, z, NULL, 1, 0, y, NULL);
  NK_CHECK(close_to(y[0], -log(3.0), 1e-15) && close_to(y[1], log(2.0 / 3), 1e-15), "log");
  /* sink 0 ("off by one"): y = e^z / (1 + sum e^z) */
  const double s0 = 0.0;
  nk_ref_softmax_fwd(1, 2, z, &s0, 0, 0, y, &lse);
  NK_CHECK(close_to(y[0], 0.25, 1e-16) && close_to(y[1], 0.5, 1e-16), "sink");
  NK_CHECK(close_to(lse, log(4.0), 1e-15), "sink lse");
  /* huge logits: no overflow, exact answer */
  const double h[3] = {FLT_MAX, FLT_MAX, -FLT_MAX};
  nk_ref_softmax_fwd(1, 3, h, NULL, 0, 0, y, &lse);
  NK_CHECK(y[0] == 0.5 && y[1] == 0.5, "FLT_MAX row %.17g", y[0]);
  NK_CHECK(close_to(lse, (double)FLT_MAX, 1e-9 * FLT_MAX), "lse of FLT_MAX");
  double sg[4], zz[4] = {0.0, -INFINITY, INFINITY, NAN};
  nk_ref_sigmoid_fwd(4, zz, sg);
  NK_CHECK(sg[0] == 0.5 && sg[1] == 0.0 && sg[2] == 1.0 && isnan(sg[3]), "sigmoid");
  zz[0] = 2.0;
  nk_ref_sigmoid_fwd(1, zz, sg);
  NK_CHECK(close_to(sg[0], 1.0 / (1.0 + exp(-2.0)), 3e-16), "sigmoid(2)");
}

NK_TEST(identities) {
  nk_rng rng = {7};
  enum { C = 300 };
  static double z[C], z2[C], y[C], y2[C], ly[C];
  for (int scale = 1; scale <= 1000; scale *= 10) {
    for (int j = 0; j < C; j++) {
      z[j] = scale * nk_rng_normal(&rng);
      z2[j] = z[j] + 1000.0; /* exact in double for these magnitudes? close enough */
    }
    double lse, lse2, s = 0.0, ls = 0.0;
    nk_ref_softmax_fwd(1, C, z, NULL, 0, 0, y, &lse);
    nk_ref_softmax_fwd(1, C, z2, NULL, 0, 0, y2, &lse2);
    nk_ref_softmax_fwd(1, C, z, NULL, 1, 0, ly, NULL);
    for (int j = 0; j < C; j++) {
      s += y[j];
      ls += exp(ly[j]);
      NK_CHECK(fabs(y[j] - y2[j]) <= 1e-12 * fabs(y[j]) + 1e-300, "shift invariance %d", j);
      NK_CHECK(fabs(exp(ly[j]) - y[j]) <= 1e-13 * y[j] + 1e-300, "exp(log y) = y");
      NK_CHECK(fabs(ly[j] - (z[j] - lse)) <= 1e-13 * fmax(1.0, fabs(lse)), "log y = z - lse");
    }
    NK_CHECK(fabs(s - 1.0) < 1e-14 && fabs(ls - 1.0) < 1e-13, "sums %.17g %.17g", s, ls);
    NK_CHECK(fabs(lse2 - lse - 1000.0) < 1e-12 * fabs(lse2), "lse shift");
    /* sink mass */
    const double sink = 0.3 * scale;
    nk_ref_softmax_fwd(1, C, z, &sink, 0, 0, y2, &lse2);
    s = 0.0;
    for (int j = 0; j < C; j++) s += y2[j];
    NK_CHECK(fabs(s - (1.0 - exp(sink - lse2))) < 1e-14, "sink mass %.17g", s);
  }
}

/* Backward vs central differences of the forward (double, h = 1e-6). */
NK_TEST(backward_is_the_derivative) {
  nk_rng rng = {11};
  enum { C = 17 };
  double z[C], dy[C], dx[C], y[C], zp[C], yp[C], ym[C], dot;
  for (int log = 0; log < 2; log++) {
    for (int j = 0; j < C; j++) z[j] = 3.0 * nk_rng_normal(&rng), dy[j] = nk_rng_normal(&rng);
    nk_ref_softmax_fwd(1, C, z, NULL, log, 0, y, NULL);
    nk_ref_softmax_bwd(1, C, y, dy, log, 0.5, dx, &dot);
    for (int k = 0; k < C; k++) {
      const double h = 1e-6;
      memcpy(zp, z, sizeof z);
      zp[k] = z[k] + h;
      nk_ref_softmax_fwd(1, C, zp, NULL, log, 0, yp, NULL);
      zp[k] = z[k] - h;
      nk_ref_softmax_fwd(1, C, zp, NULL, log, 0, ym, NULL);
      double fd = 0.0;
      for (int j = 0; j < C; j++) fd += dy[j] * (yp[j] - ym[j]) / (2 * h);
      /* dx is d/dz with z = scale * x: dL/dx = scale * dL/dz */
      NK_CHECK(fabs(0.5 * fd - dx[k]) < 1e-8, "log %d k %d fd %.12g dx %.12g", log, k, 0.5 * fd,
               dx[k]);
    }
  }
  double s[4] = {0.0, 0.5, 0.0, 0.0}, g[4] = {1.0, 2.0, 3.0, 4.0}, d[4];
  s[0] = -3.0;
  nk_ref_sigmoid_fwd(1, s, s + 2);
  nk_ref_sigmoid_bwd(1, s + 2, g, 2.0, d);
  const double hp = 1.0 / (1.0 + exp(3.0 - 1e-6)), hm = 1.0 / (1.0 + exp(3.0 + 1e-6));
  NK_CHECK(fabs(d[0] - 2.0 * (hp - hm) / 2e-6) < 1e-8, "sigmoid bwd %.12g", d[0]);
}

NK_TEST(cross_entropy_is_log_softmax_nll) {
  nk_rng rng = {13};
  enum { R = 6, C = 40 };
  static double z[R * C], ly[R * C], dz[R * C], dz2[R * C], zp[R * C];
  int64_t t[R];
  for (int i = 0; i < R; i++) t[i] = (int64_t)(nk_rng_u64(&rng) % C);
  t[3] = -100;
  for (int k = 0; k < R * C; k++) z[k] = 2.0 * nk_rng_normal(&rng);
  nk_ref_softmax_fwd(R, C, z, NULL, 1, 0, ly, NULL);
  const double lsv[3] = {0.0, 0.1, 1.0};
  for (int a = 0; a < 3; a++)
    for (int red = 0; red < 3; red++) {
      const double ls = lsv[a], zl = 1e-2 * a;
      double loss[R], lse[R], want = 0.0;
      nk_ref_cross_entropy(R, C, z, t, -100, ls, zl, red, 1.5, loss, dz, lse);
      for (int i = 0; i < R; i++) {
        double li = 0.0;
        if (t[i] != -100) {
          double smooth = 0.0;
          for (int j = 0; j < C; j++) smooth -= ly[i * C + j] / C;
          const double L = z[i * C] - ly[i * C];
          li = -(1 - ls) * ly[i * C + t[i]] + ls * smooth + zl * L * L;
        }
        if (red == 0) NK_CHECK(fabs(loss[i] - li) < 1e-13, "none row %d", i);
        want += li;
      }
      if (red == 2) want /= R - 1;
      if (red) NK_CHECK(fabs(loss[0] - want) < 1e-12, "reduced %.17g %.17g", loss[0], want);
      if (red == 0) continue;
      /* dz vs central differences of 1.5 * the reduced loss */
      for (int k = 0; k < R * C; k += 7) {
        double lp, lm;
        memcpy(zp, z, sizeof z);
        zp[k] += 1e-6;
        nk_ref_cross_entropy(R, C, zp, t, -100, ls, zl, red, 1.0, &lp, NULL, NULL);
        zp[k] -= 2e-6;
        nk_ref_cross_entropy(R, C, zp, t, -100, ls, zl, red, 1.0, &lm, NULL, NULL);
        NK_CHECK(fabs(1.5 * (lp - lm) / 2e-6 - dz[k]) < 1e-8, "dz[%d] %.12g fd %.12g", k, dz[k],
                 1.5 * (lp - lm) / 2e-6);
      }
      (void)dz2;
    }
  /* every row ignored: mean is NaN, gradient 0 */
  int64_t ti[R];
  for (int i = 0; i < R; i++) ti[i] = 5;
  double loss1;
  nk_ref_cross_entropy(R, C, z, ti, 5, 0.1, 0.0, 2, 1.0, &loss1, dz, NULL);
  NK_CHECK(isnan(loss1), "mean over nothing");
  for (int k = 0; k < R * C; k++) NK_CHECK(dz[k] == 0.0, "ignored dz");
}

NK_TEST(edge_rules) {
  const double z[6] = {-INFINITY, -INFINITY, -INFINITY, 1.0, NAN, 2.0};
  double y[6], lse[2], dx[6], dot[2];
  nk_ref_softmax_fwd(2, 3, z, NULL, 0, 0, y, lse);
  NK_CHECK(y[0] == 0 && y[1] == 0 && y[2] == 0 && lse[0] == -INFINITY, "masked row");
  NK_CHECK(isnan(y[3]) && isnan(y[4]) && isnan(y[5]) && isnan(lse[1]), "NaN row");
  nk_ref_softmax_fwd(2, 3, z, NULL, 1, 0, y, lse);
  NK_CHECK(y[0] == -INFINITY && y[2] == -INFINITY, "masked log row");
  nk_ref_softmax_bwd(1, 3, y, z + 3, 1, 1.0, dx, dot);
  NK_CHECK(dx[0] == 0 && dx[1] == 0 && dx[2] == 0 && dot[0] == 0, "masked log bwd");
  nk_ref_softmax_fwd(2, 3, z, NULL, 0, 1, y, lse);
  NK_CHECK(isnan(y[0]) && isnan(lse[0]), "masked_nan");
  const double sk[2] = {0.5, INFINITY};
  nk_ref_softmax_fwd(2, 3, z, sk, 0, 1, y, lse);
  NK_CHECK(y[0] == 0 && lse[0] == 0.5 && isnan(lse[1]), "masked row with a sink");
  const double zi[3] = {1.0, INFINITY, 0.0};
  nk_ref_softmax_fwd(1, 3, zi, NULL, 0, 0, y, lse);
  NK_CHECK(isnan(y[0]) && isnan(y[2]), "+inf row");
  /* logits: causal, offset, alibi, broadcast mask, f32 rounding */
  const float x[6] = {1.1f, 2.2f, 3.3f, 4.4f, 5.5f, 6.6f}, m[3] = {0.5f, -INFINITY, 0.25f};
  double zl[6];
  nk_ref_softmax_logits(2, 3, x, m, 1, 0.1f, 0.5f, 1, 0, 1, zl);
  NK_CHECK(zl[0] == (double)(1.1f * 0.1f + 0.5f + 0.5f * (0.0f - 1.0f)), "z00");
  NK_CHECK(zl[1] == -INFINITY && zl[2] == -INFINITY, "mask and causal at p = 1");
  NK_CHECK(zl[4] == -INFINITY && zl[5] == (double)(6.6f * 0.1f + 0.25f + 0.0f), "row 1, p = 2");
  nk_ref_softmax_logits(2, 3, x, NULL, 0, 1.0f, 0.0f, 1, 1, -1, zl);
  for (int k = 0; k < 6; k++) NK_CHECK(zl[k] == -INFINITY, "negative offset masks all");
}

int main(void) {
  NK_RUN(closed_forms);
  NK_RUN(identities);
  NK_RUN(backward_is_the_derivative);
  NK_RUN(cross_entropy_is_log_softmax_nll);
  NK_RUN(edge_rules);
  return nk_test_summary();
}
