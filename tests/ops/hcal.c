/*
 * tests/ops/hcal.c — h-calibration (include/normkit.h "Calibration and model merging") against
 * the float64 reference of src/reference/hcal.c (the official loss written as the code computes
 * it), gradients by central finite differences (dH/dP; dH/dtheta and dH/dnu of the ensemble
 * calibrator), the fit (loss decreases, top-1 unchanged, deterministic), degenerate inputs and
 * invalid arguments.
 *
 * Tolerances: loss vs reference 1e-10 relative (both double; the reference sums p(1-o)/w and
 * (1-p)o/w separately as the code does, the library sums p - o: rounding differences of order
 * w 1e-16); finite differences h = 1e-6 (relative to the parameter for theta/nu), bound
 * 1e-5 of the gradient's largest magnitude plus 1e-9 (the loss is piecewise linear in P between
 * sort-order, cluster and tolerance changes, so central differences are exact up to rounding
 * when no change is crossed; the inputs keep their gaps far above h).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

static nk_context *actx;

static void *ws_for(size_t n, size_t K, size_t M, size_t *bytes) {
  if (nk_hcal_workspace_size(actx, n, K, M, bytes) != NK_OK) return NULL;
  return nk_t_alloc(*bytes);
}

/* Softmax probabilities of random logits (scale s) and labels drawn from them. */
static void make_data(nk_rng *rng, size_t n, size_t K, double s, double *z, double *P,
                      int64_t *y) {
  for (size_t r = 0; r < n; r++) {
    double m = -1e300, sum = 0.0;
    for (size_t c = 0; c < K; c++) {
      z[r * K + c] = s * nk_rng_normal(rng);
      m = fmax(m, z[r * K + c]);
    }
    for (size_t c = 0; c < K; c++) sum += exp(z[r * K + c] - m);
    double u = nk_rng_uniform(rng), acc = 0.0;
    y[r] = (int64_t)K - 1;
    for (size_t c = 0; c < K; c++) {
      P[r * K + c] = exp(z[r * K + c] - m) / sum;
      acc += P[r * K + c];
      if (u < acc && y[r] == (int64_t)K - 1 && acc - P[r * K + c] <= u) y[r] = (int64_t)c;
    }
    /* calibrated labels would be perfect; tilt: every 3rd row takes the argmax (overconfident) */
    if (r % 3 == 0) {
      size_t b = 0;
      for (size_t c = 1; c < K; c++)
        if (z[r * K + c] > z[r * K + b]) b = c;
      y[r] = (int64_t)b;
    }
  }
}

static double ref_loss(const nk_hcal_desc *d, size_t n, size_t K, const double *P,
                       const int64_t *y) {
  return nk_ref_hcal_loss(n, K, P, y, d->veclen, d->epsilon, d->lossweight, d->leave_one_out,
                          d->weighting == NK_HCAL_CLUSTER, d->clusters, d->kmeans_iters);
}

NK_TEST(loss_vs_reference) {
  enum { N = 60, K = 5 };
  nk_rng rng = {0x4ca1};
  double z[N * K], P[N * K];
  int64_t y[N];
  make_data(&rng, N, K, 2.0, z, P, y);
  size_t bytes;
  void *ws = ws_for(N, K, 0, &bytes);
  NK_REQUIRE(ws, "workspace");
  const size_t veclens[3] = {0, 10, 400};
  for (int w = 0; w < 2; w++)
    for (int loo = 0; loo < 2; loo++)
      for (int v = 0; v < 3; v++) {
        nk_hcal_desc d = nk_hcal_desc_default();
        d.weighting = w ? NK_HCAL_CLUSTER : NK_HCAL_UNWEIGHTED;
        d.leave_one_out = loo;
        d.veclen = veclens[v];
        if (v == 1) d.epsilon = 1e-3; /* a tolerance that bites */
        double got = -1.0;
        NK_REQUIRE(nk_hcal_loss(actx, &d, N, K, P, y, &got, NULL, ws, bytes) == NK_OK, "%s",
                   nk_context_message(actx));
        const double ref = ref_loss(&d, N, K, P, y);
        NK_CHECK(fabs(got - ref) <= 1e-10 * fabs(ref) + 1e-12 && ref > 0.0,
                 "w %d loo %d veclen %zu: %.17g vs %.17g", w, loo, d.veclen, got, ref);
      }
  free(ws);
}

/* dH/dP by central differences of the library loss, for both weightings. */
NK_TEST(loss_gradient_finite_differences) {
  enum { N = 14, K = 3 };
  nk_rng rng = {0xfd01};
  double z[N * K], P[N * K], G[N * K];
  int64_t y[N];
  make_data(&rng, N, K, 1.5, z, P, y);
  size_t bytes;
  void *ws = ws_for(N, K, 0, &bytes);
  NK_REQUIRE(ws, "workspace");
  for (int w = 0; w < 2; w++) {
    nk_hcal_desc d = nk_hcal_desc_default();
    d.veclen = 6;
    d.clusters = 4;
    d.weighting = w ? NK_HCAL_CLUSTER : NK_HCAL_UNWEIGHTED;
    double L;
    NK_REQUIRE(nk_hcal_loss(actx, &d, N, K, P, y, &L, G, ws, bytes) == NK_OK, "grad");
    double gmax = 0.0, worst = 0.0;
    for (size_t i = 0; i < N * K; i++) gmax = fmax(gmax, fabs(G[i]));
    const double h = 1e-6;
    for (size_t i = 0; i < N * K; i++) {
      const double keep = P[i];
      double lp, lm;
      P[i] = keep + h;
      nk_hcal_loss(actx, &d, N, K, P, y, &lp, NULL, ws, bytes);
      P[i] = keep - h;
      nk_hcal_loss(actx, &d, N, K, P, y, &lm, NULL, ws, bytes);
      P[i] = keep;
      worst = fmax(worst, fabs((lp - lm) / (2 * h) - G[i]));
    }
    NK_CHECK(gmax > 0.0, "weighting %d: zero gradient (test too weak)", w);
    NK_CHECK(worst <= 1e-5 * gmax + 1e-9, "weighting %d: worst |fd - grad| %.3g (max %.3g)", w,
             worst, gmax);
  }
  free(ws);
}

NK_TEST(ensemble_probs_and_gradients) {
  enum { N = 30, K = 4, M = 5 };
  nk_rng rng = {0xe75};
  double z[N * K], P[N * K], R[N * K], Q[N * K];
  int64_t y[N];
  make_data(&rng, N, K, 3.0, z, P, y);
  double th[M] = {0.4, -1.3, 2.0, 0.7, 3.1}, nu[M] = {0.5, 1.0, -0.2, 0.8, 0.3};
  NK_REQUIRE(nk_hcal_ensemble_probs(actx, N, K, z, M, th, nu, Q) == NK_OK, "probs");
  nk_ref_hcal_ensemble_probs(N, K, z, M, th, nu, R);
  for (size_t i = 0; i < N * K; i++)
    NK_CHECK(fabs(Q[i] - R[i]) <= 1e-14, "probs[%zu] %.17g vs %.17g", i, Q[i], R[i]);
  /* rows sum to 1 and keep the order of the logits */
  for (size_t r = 0; r < N; r++) {
    double s = 0.0;
    for (size_t c = 0; c < K; c++) {
      s += Q[r * K + c];
      for (size_t c2 = 0; c2 < K; c2++)
        if (z[r * K + c] < z[r * K + c2]) NK_CHECK(Q[r * K + c] <= Q[r * K + c2], "order");
    }
    NK_CHECK(fabs(s - 1.0) <= 1e-14, "row %zu sums to %.17g", r, s);
  }
  size_t bytes;
  void *ws = ws_for(N, K, M, &bytes);
  NK_REQUIRE(ws, "workspace");
  for (int w = 0; w < 2; w++) {
    nk_hcal_desc d = nk_hcal_desc_default();
    d.veclen = 8;
    d.clusters = 5;
    d.weighting = w ? NK_HCAL_CLUSTER : NK_HCAL_UNWEIGHTED;
    double L, dth[M], dnu[M], probs[N * K];
    NK_REQUIRE(nk_hcal_ensemble_loss(actx, &d, N, K, z, y, M, th, nu, &L, dth, dnu, probs, ws,
                                     bytes) == NK_OK,
               "%s", nk_context_message(actx));
    NK_CHECK(fabs(L - ref_loss(&d, N, K, R, y)) <= 1e-10 * L, "loss %.17g", L);
    double gmax = 0.0, worst = 0.0;
    for (int k = 0; k < M; k++) gmax = fmax(gmax, fmax(fabs(dth[k]), fabs(dnu[k])));
    for (int k = 0; k < 2 * M; k++) {
      double *p = k < M ? &th[k] : &nu[k - M];
      const double keep = *p, h = 1e-6 * fmax(fabs(keep), 1.0);
      double lp, lm;
      *p = keep + h;
      nk_hcal_ensemble_loss(actx, &d, N, K, z, y, M, th, nu, &lp, NULL, NULL, NULL, ws, bytes);
      *p = keep - h;
      nk_hcal_ensemble_loss(actx, &d, N, K, z, y, M, th, nu, &lm, NULL, NULL, NULL, ws, bytes);
      *p = keep;
      const double fd = (lp - lm) / (2 * h), g = k < M ? dth[k] : dnu[k - M];
      worst = fmax(worst, fabs(fd - g));
    }
    NK_CHECK(gmax > 0.0, "zero gradient");
    NK_CHECK(worst <= 1e-5 * gmax + 1e-9, "weighting %d: worst %.3g of max %.3g", w, worst, gmax);
  }
  free(ws);
}

NK_TEST(fit_reduces_loss_keeps_top1) {
  enum { N = 120, K = 4, M = 8 };
  nk_rng rng = {0xf17};
  double z[N * K], P[N * K];
  int64_t y[N];
  make_data(&rng, N, K, 4.0, z, P, y);
  size_t bytes;
  void *ws = ws_for(N, K, M, &bytes);
  NK_REQUIRE(ws, "workspace");
  nk_hcal_desc d = nk_hcal_desc_default();
  d.veclen = 20;
  nk_hcal_fit_desc f = nk_hcal_fit_desc_default();
  f.epochs = 40;
  f.lr = 0.05;
  double th[M], nu[M], th2[M], nu2[M], L0, L1, L2, Lchk;
  NK_REQUIRE(nk_hcal_ensemble_init(actx, M, th, nu) == NK_OK, "init");
  NK_CHECK(fabs(th[M - 1] - 1.0 / sqrt((double)M)) < 1e-15 && th[0] > 0.0, "init range");
  memcpy(th2, th, sizeof th);
  memcpy(nu2, nu, sizeof nu);
  NK_REQUIRE(nk_hcal_ensemble_loss(actx, &d, N, K, z, y, M, th, nu, &L0, NULL, NULL, NULL, ws,
                                   bytes) == NK_OK, "L0");
  NK_REQUIRE(nk_hcal_ensemble_fit(actx, &d, &f, N, K, z, y, M, th, nu, &L1, ws, bytes) == NK_OK,
             "%s", nk_context_message(actx));
  NK_REQUIRE(nk_hcal_ensemble_fit(actx, &d, &f, N, K, z, y, M, th2, nu2, &L2, ws, bytes) ==
                 NK_OK, "fit 2");
  NK_CHECK(L1 < 0.9 * L0, "fit: %.6g -> %.6g", L0, L1);
  NK_CHECK(L1 == L2 && memcmp(th, th2, sizeof th) == 0 && memcmp(nu, nu2, sizeof nu) == 0,
           "two fits differ");
  double Q[N * K];
  NK_REQUIRE(nk_hcal_ensemble_loss(actx, &d, N, K, z, y, M, th, nu, &Lchk, NULL, NULL, Q, ws,
                                   bytes) == NK_OK, "check");
  NK_CHECK(Lchk == L1, "returned loss %.17g, recomputed %.17g", L1, Lchk);
  for (size_t r = 0; r < N; r++) {
    size_t bz = 0, bq = 0;
    for (size_t c = 1; c < K; c++) {
      if (z[r * K + c] > z[r * K + bz]) bz = c;
      if (Q[r * K + c] > Q[r * K + bq]) bq = c;
    }
    NK_CHECK(bz == bq, "row %zu: top-1 changed", r);
  }
  free(ws);
}

NK_TEST(degenerate_inputs) {
  size_t bytes;
  void *ws = ws_for(8, 3, 0, &bytes);
  NK_REQUIRE(ws, "workspace");
  nk_hcal_desc d = nk_hcal_desc_default();
  double L = -1.0;
  /* n == 0 */
  NK_CHECK(nk_hcal_loss(actx, &d, 0, 3, NULL, NULL, &L, NULL, ws, bytes) == NK_OK && L == 0.0,
           "n 0");
  /* one-hot probabilities equal to the outcomes: every gap is 0, loss and gradient 0 */
  double P[8 * 3] = {0}, G[8 * 3];
  int64_t y[8];
  for (int r = 0; r < 8; r++) {
    y[r] = r % 3;
    P[r * 3 + r % 3] = 1.0;
  }
  for (int w = 0; w < 2; w++) {
    d.weighting = w ? NK_HCAL_CLUSTER : NK_HCAL_UNWEIGHTED;
    NK_REQUIRE(nk_hcal_loss(actx, &d, 8, 3, P, y, &L, G, ws, bytes) == NK_OK, "one-hot");
    NK_CHECK(L == 0.0, "perfect: loss %g", L);
    for (int i = 0; i < 24; i++) NK_CHECK(G[i] == 0.0, "perfect: grad[%d] %g", i, G[i]);
  }
  /* every row of class 0 with leave-one-out: the set of class 0 is empty (H 0), the others
   * hold all rows; matches the reference, finite */
  for (int r = 0; r < 8; r++) {
    y[r] = 0;
    P[r * 3] = 0.5, P[r * 3 + 1] = 0.3, P[r * 3 + 2] = 0.2;
  }
  d.weighting = NK_HCAL_CLUSTER;
  d.veclen = 4; /* windows shorter than the set: local gaps (the whole set sums to 0) */
  NK_REQUIRE(nk_hcal_loss(actx, &d, 8, 3, P, y, &L, G, ws, bytes) == NK_OK, "one class");
  NK_CHECK(isfinite(L) && L > 0.0 && fabs(L - ref_loss(&d, 8, 3, P, y)) <= 1e-10 * L,
           "one class: %g", L);
  /* K == 1: p = 1 = o everywhere */
  double P1[4] = {1, 1, 1, 1};
  int64_t y1[4] = {0, 0, 0, 0};
  NK_CHECK(nk_hcal_loss(actx, &d, 4, 1, P1, y1, &L, NULL, ws, bytes) == NK_OK && L == 0.0,
           "K 1: %g", L);
  /* fewer events than clusters */
  d.clusters = 15;
  NK_REQUIRE(nk_hcal_loss(actx, &d, 2, 3, P, y, &L, NULL, ws, bytes) == NK_OK, "tiny");
  NK_CHECK(isfinite(L) && fabs(L - ref_loss(&d, 2, 3, P, y)) <= 1e-10 * L + 1e-300, "tiny %g", L);
  free(ws);
}

NK_TEST(invalid_arguments) {
  enum { N = 4, K = 3 };
  double P[N * K], z[N * K], G[N * K];
  int64_t y[N] = {0, 1, 2, 1};
  for (int i = 0; i < N * K; i++) P[i] = z[i] = 1.0 / 3.0;
  size_t bytes;
  void *ws = ws_for(N, K, 2, &bytes);
  NK_REQUIRE(ws, "workspace");
  nk_hcal_desc d = nk_hcal_desc_default(), b;
  double L = 7.0;
#define INV(expr)                                                                                \
  do {                                                                                           \
    const nk_status st_ = (expr);                                                                \
    NK_CHECK(st_ == NK_STATUS_INVALID_ARGUMENT, "%s: %s", #expr, nk_status_string(st_));         \
    NK_CHECK(nk_context_message(actx)[0] != '\0', "%s: no message", #expr);                     \
  } while (0)
  b = d, b.veclen = 7;
  INV(nk_hcal_loss(actx, &b, N, K, P, y, &L, NULL, ws, bytes));
  b = d, b.epsilon = -1;
  INV(nk_hcal_loss(actx, &b, N, K, P, y, &L, NULL, ws, bytes));
  b = d, b.lossweight = 0;
  INV(nk_hcal_loss(actx, &b, N, K, P, y, &L, NULL, ws, bytes));
  b = d, b.clusters = 0;
  INV(nk_hcal_loss(actx, &b, N, K, P, y, &L, NULL, ws, bytes));
  b = d, b.weighting = (nk_hcal_weighting)7;
  INV(nk_hcal_loss(actx, &b, N, K, P, y, &L, NULL, ws, bytes));
  INV(nk_hcal_loss(actx, &d, N, 0, P, y, &L, NULL, ws, bytes));
  INV(nk_hcal_loss(actx, &d, N, K, NULL, y, &L, NULL, ws, bytes));
  INV(nk_hcal_loss(actx, &d, N, K, P, y, NULL, NULL, ws, bytes));
  NK_CHECK(nk_hcal_loss(actx, &d, N, K, P, y, &L, NULL, ws, 8) == NK_STATUS_MISUSE,
           "short workspace"); /* MISUSE, as every workspace */
  NK_CHECK(nk_hcal_loss(actx, &d, N, K, P, y, &L, NULL, NULL, bytes) == NK_STATUS_MISUSE,
           "NULL workspace");
  INV(nk_hcal_loss(actx, &d, N, K, P, y, &L, P, ws, bytes)); /* dprobs == probs */
  P[4] = NAN;
  INV(nk_hcal_loss(actx, &d, N, K, P, y, &L, NULL, ws, bytes));
  P[4] = 1.5;
  INV(nk_hcal_loss(actx, &d, N, K, P, y, &L, NULL, ws, bytes));
  P[4] = 1.0 / 3.0;
  y[2] = 3;
  INV(nk_hcal_loss(actx, &d, N, K, P, y, &L, G, ws, bytes));
  y[2] = -1;
  INV(nk_hcal_loss(actx, &d, N, K, P, y, &L, G, ws, bytes));
  y[2] = 2;
  NK_CHECK(L == 7.0, "loss written on failure");
  const double th[2] = {1, 2}, zero[2] = {0, 0}, bad[2] = {NAN, 1};
  INV(nk_hcal_ensemble_probs(actx, N, K, z, 2, th, zero, G));
  INV(nk_hcal_ensemble_probs(actx, N, K, z, 2, bad, th, G));
  INV(nk_hcal_ensemble_probs(actx, N, K, z, 0, th, th, G));
  INV(nk_hcal_ensemble_probs(actx, N, K, z, 2, th, th, z));
  z[3] = INFINITY;
  INV(nk_hcal_ensemble_probs(actx, N, K, z, 2, th, th, G));
  z[3] = 0.0;
  nk_hcal_fit_desc f = nk_hcal_fit_desc_default(), fb;
  double t2[2] = {1, 2}, n2[2] = {1, 1};
  fb = f, fb.beta1 = 1.0;
  INV(nk_hcal_ensemble_fit(actx, &d, &fb, N, K, z, y, 2, t2, n2, NULL, ws, bytes));
  fb = f, fb.eps = 0.0;
  INV(nk_hcal_ensemble_fit(actx, &d, &fb, N, K, z, y, 2, t2, n2, NULL, ws, bytes));
  NK_CHECK(nk_hcal_ensemble_fit(actx, &d, &f, N, K, z, y, 2, t2, n2, NULL, ws, bytes / 2) ==
               NK_STATUS_MISUSE, "fit: short workspace");
  NK_CHECK(t2[0] == 1 && t2[1] == 2 && n2[0] == 1, "fit wrote on failure");
  INV(nk_hcal_ensemble_init(actx, 0, t2, n2));
  INV(nk_hcal_workspace_size(actx, SIZE_MAX / 2, 4, 0, &bytes));
#undef INV
  free(ws);
}

int main(void) {
  if (nk_context_create(&actx) != NK_OK) return 1;
  NK_RUN(loss_vs_reference);
  NK_RUN(loss_gradient_finite_differences);
  NK_RUN(ensemble_probs_and_gradients);
  NK_RUN(fit_reduces_loss_keeps_top1);
  NK_RUN(degenerate_inputs);
  NK_RUN(invalid_arguments);
  nk_context_destroy(actx);
  return nk_test_summary();
}
