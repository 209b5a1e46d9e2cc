/*
 * tests/ops/ttstats.c — test-time statistics (alpha-BN, UnMix-TNS, AdaB2N) against the float64
 * reference, over sequences of random batches, plus the edge cases and invalid arguments of
 * include/normkit.h "Test-time statistics".
 *
 * The data are B x C x L activations in double. The library gets their moments, computed here
 * with plain double loops (two-pass); the reference gets the activations themselves.
 *
 * Tolerances (|got - ref| <= bound):
 *   F32_STEP  an f32 output of one step from the same inputs and state: 1 ulp of f32 at |ref|
 *             (the library rounds a double result once; the reference's double result differs
 *             from it by ~1e-15 relative) plus 1e-12 * scale for cancellation near 0.
 *   DRIFT     the library's f32 state and outputs against an independent float64 trajectory
 *             over the whole sequence: 4e-6 * (|ref| + scale) (p: 4e-6 absolute). The state is
 *             rounded to f32 after every step (~6e-8 relative each), and UnMix-TNS's softmax at
 *             tau = 0.07 magnifies a state perturbation by up to ~1/tau; the measured worst
 *             case is printed by the test and stated in docs/ops/test-time.md.
 *   DOUBLE    double outputs (p, w, omega, eta, reg) of one step from the same state: 1e-12
 *             relative (+ 1e-15 absolute).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static double xat(const double *x, size_t C, size_t L, size_t b, size_t c, size_t l) {
  return x[(b * C + c) * L + l];
}

static double sq(double v) { return v * v; }

/* Moments of channel c over (b, l): two-pass in double. */
static void channel_moments(size_t B, size_t C, size_t L, const double *x, nk_moments *out) {
  for (size_t c = 0; c < C; c++) {
    double s = 0.0;
    for (size_t b = 0; b < B; b++)
      for (size_t l = 0; l < L; l++) s += xat(x, C, L, b, c, l);
    const double n = (double)(B * L), mu = s / n;
    double m2 = 0.0;
    for (size_t b = 0; b < B; b++)
      for (size_t l = 0; l < L; l++) m2 += sq(xat(x, C, L, b, c, l) - mu);
    out[c] = (nk_moments){n, mu, m2};
  }
}

/* Moments of each (b, c) over l, laid out [b][c]. */
static void instance_moments(size_t B, size_t C, size_t L, const double *x, nk_moments *out) {
  for (size_t b = 0; b < B; b++)
    for (size_t c = 0; c < C; c++) {
      double s = 0.0;
      for (size_t l = 0; l < L; l++) s += xat(x, C, L, b, c, l);
      const double mu = s / (double)L;
      double m2 = 0.0;
      for (size_t l = 0; l < L; l++) m2 += sq(xat(x, C, L, b, c, l) - mu);
      out[b * C + c] = (nk_moments){(double)L, mu, m2};
    }
}

static double f32_step_bound(double ref, double scale) {
  return nk_t_ulp(ref, NK_DTYPE_F32) + 1e-12 * scale;
}
static double drift_bound(double ref, double scale) { return 4e-6 * (fabs(ref) + scale); }
static double double_bound(double ref) { return 1e-12 * fabs(ref) + 1e-15; }

/* Largest |got - ref| / bound over n floats; <= 1 passes. */
static double worst_f32(size_t n, const float *got, const double *ref, double scale, int drift) {
  double worst = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double bound = drift ? drift_bound(ref[i], scale) : f32_step_bound(ref[i], scale);
    const double e = fabs((double)got[i] - ref[i]) / bound;
    if (!(e <= worst)) worst = e; /* NaN propagates to a failure */
  }
  return worst;
}
static double worst_double(size_t n, const double *got, const double *ref) {
  double worst = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double e = fabs(got[i] - ref[i]) / double_bound(ref[i]);
    if (!(e <= worst)) worst = e;
  }
  return worst;
}

static void widen(size_t n, const float *f, double *d) {
  for (size_t i = 0; i < n; i++) d[i] = f[i];
}

static int all_bytes(const void *p, size_t n, unsigned char v) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != v) return 0;
  return 1;
}

#define POISON 0x5A

/* ---- alpha-BN ----------------------------------------------------------------------------- */

NK_TEST(alpha_bn_sequence) {
  enum { C = 7, L = 9, BMAX = 12 };
  nk_rng rng = {0x1234};
  const float alphas[6] = {NK_TTA_ALPHA_DEFAULT, 0.25f, 0.5f, 0.9f, 0.01f, 0.7f};
  float sm[C], sv[C], mean[C], var[C];
  double smd[C], svd[C], rmean[C], rvar[C];
  static double x[BMAX * C * L];
  nk_moments mom[C];
  for (size_t c = 0; c < C; c++) {
    sm[c] = (float)(3.0 * nk_rng_normal(&rng));
    sv[c] = (float)(0.5 + 2.0 * nk_rng_uniform(&rng));
    smd[c] = sm[c];
    svd[c] = sv[c];
  }
  double worst = 0.0;
  for (int step = 0; step < 6; step++) {
    const size_t B = 3 + (size_t)step; /* 3..8 */
    for (size_t i = 0; i < B * C * L; i++)
      x[i] = 1.5 * step - 2.0 + (1.0 + 0.3 * step) * nk_rng_normal(&rng);
    channel_moments(B, C, L, x, mom);
    const int unbiased = step % 2 == 0;
    NK_REQUIRE(nk_tta_alpha_bn_stats(NULL, C, alphas[step], unbiased, sm, sv, mom, mean, var) ==
                   NK_OK,
               "step %d", step);
    nk_ref_alpha_bn_stats(B, C, L, x, alphas[step], unbiased, smd, svd, rmean, rvar);
    const double e = fmax(worst_f32(C, mean, rmean, 10.0, 0), worst_f32(C, var, rvar, 10.0, 0));
    NK_CHECK(e <= 1.0, "step %d: error %.3g bounds", step, e);
    worst = fmax(worst, e);
  }
  printf("        alpha-BN: worst error %.3f of the 1-ulp bound\n", worst);
}

NK_TEST(alpha_bn_endpoints) {
  enum { C = 5, B = 4, L = 3 };
  nk_rng rng = {77};
  float sm[C], sv[C], mean[C], var[C];
  double x[B * C * L];
  nk_moments mom[C];
  for (size_t c = 0; c < C; c++) {
    sm[c] = (float)nk_rng_normal(&rng);
    sv[c] = (float)(1.0 + nk_rng_uniform(&rng));
  }
  for (size_t i = 0; i < B * C * L; i++) x[i] = 5.0 + nk_rng_normal(&rng);
  channel_moments(B, C, L, x, mom);
  for (int unbiased = 0; unbiased <= 1; unbiased++) {
    /* alpha_test = 0: the source statistics, exactly */
    NK_REQUIRE(nk_tta_alpha_bn_stats(NULL, C, 0.0f, unbiased, sm, sv, mom, mean, var) == NK_OK,
               "alpha 0");
    for (size_t c = 0; c < C; c++)
      NK_CHECK(mean[c] == sm[c] && var[c] == sv[c], "alpha 0, c %zu: %g %g vs %g %g", c,
               (double)mean[c], (double)var[c], (double)sm[c], (double)sv[c]);
    /* alpha_test = 1: the test statistics, rounded to f32 */
    NK_REQUIRE(nk_tta_alpha_bn_stats(NULL, C, 1.0f, unbiased, sm, sv, mom, mean, var) == NK_OK,
               "alpha 1");
    for (size_t c = 0; c < C; c++) {
      const double vt = mom[c].m2 / (unbiased ? mom[c].count - 1.0 : mom[c].count);
      NK_CHECK(mean[c] == (float)mom[c].mean && var[c] == (float)vt, "alpha 1, c %zu", c);
    }
  }
  /* channels == 0: nothing read or written, pointers may be NULL */
  NK_CHECK(nk_tta_alpha_bn_stats(NULL, 0, 0.1f, 1, NULL, NULL, NULL, NULL, NULL) == NK_OK,
           "C == 0");
}

NK_TEST(alpha_bn_counts) {
  enum { C = 3 };
  float sm[C] = {1.0f, 2.0f, 3.0f}, sv[C] = {1.0f, 4.0f, 9.0f}, mean[C], var[C];
  nk_moments mom[C] = {{10.0, 0.5, 3.0}, {1.0, -7.0, 0.0}, {4.0, 2.0, 1.0}};
  nk_context *ctx = NULL;
  NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "context");
  /* unbiased with one element in channel 1: rejected, nothing written */
  memset(mean, POISON, sizeof mean);
  memset(var, POISON, sizeof var);
  NK_CHECK(nk_tta_alpha_bn_stats(ctx, C, 0.1f, 1, sm, sv, mom, mean, var) ==
               NK_STATUS_INVALID_ARGUMENT,
           "unbiased, count 1 accepted");
  NK_CHECK(strstr(nk_context_message(ctx), "test[1].count") != NULL, "message \"%s\"",
           nk_context_message(ctx));
  NK_CHECK(all_bytes(mean, sizeof mean, POISON) && all_bytes(var, sizeof var, POISON),
           "outputs written on failure");
  /* biased: one element is fine (its variance is 0) */
  NK_CHECK(nk_tta_alpha_bn_stats(ctx, C, 0.1f, 0, sm, sv, mom, mean, var) == NK_OK, "biased");
  const double a = 0.1f; /* alpha as the function sees it */
  NK_CHECK(var[1] == (float)((1.0 - a) * (double)sv[1] + a * 0.0), "biased count-1 var %g",
           (double)var[1]);
  NK_CHECK(mean[1] == (float)((1.0 - a) * 2.0 + a * -7.0), "biased count-1 mean %g",
           (double)mean[1]);
  NK_CHECK(nk_context_message(ctx)[0] == '\0', "message not cleared on success");
  /* count 0 and NaN counts: rejected either way */
  const double bad_counts[3] = {0.0, 0.5, NAN};
  for (int i = 0; i < 3; i++)
    for (int unbiased = 0; unbiased <= 1; unbiased++) {
      nk_moments m2[C] = {mom[0], {bad_counts[i], 1.0, 0.0}, mom[2]};
      memset(mean, POISON, sizeof mean);
      NK_CHECK(nk_tta_alpha_bn_stats(ctx, C, 0.1f, unbiased, sm, sv, m2, mean, var) ==
                   NK_STATUS_INVALID_ARGUMENT,
               "count %g accepted (unbiased %d)", bad_counts[i], unbiased);
      NK_CHECK(all_bytes(mean, sizeof mean, POISON), "written on failure");
    }
  nk_context_destroy(ctx);
}

NK_TEST(alpha_bn_nan_stays_in_channel) {
  enum { C = 3 };
  float sm[C] = {1.0f, 2.0f, 3.0f}, sv[C] = {1.0f, 4.0f, 9.0f}, mean[C], var[C];
  nk_moments mom[C] = {{10.0, 0.5, 3.0}, {10.0, NAN, NAN}, {4.0, 2.0, 1.0}};
  NK_REQUIRE(nk_tta_alpha_bn_stats(NULL, C, 0.0f, 1, sm, sv, mom, mean, var) == NK_OK, "call");
  NK_CHECK(isnan(mean[1]) && isnan(var[1]), "NaN lost (0 * NaN is NaN)");
  NK_CHECK(mean[0] == 1.0f && var[2] == 9.0f, "other channels touched");
}

/* ---- UnMix-TNS ---------------------------------------------------------------------------- */

/* The generator as documented in normkit.h, written out again here. */
static uint64_t t_splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

NK_TEST(unmixtns_noise_generator) {
  uint64_t s = 0;
  NK_CHECK(t_splitmix64(&s) == 0xE220A8397B1DCDAFull, "splitmix64(0) is not the published value");
  enum { N = 1001 };
  static float xi[N], xi2[N];
  NK_REQUIRE(nk_unmixtns_noise(NULL, 42, N, xi) == NK_OK, "noise");
  s = 42;
  int mismatches = 0;
  for (size_t i = 0; i < N; i += 2) {
    const double u1 = ((double)(t_splitmix64(&s) >> 11) + 0.5) * 0x1p-53;
    const double u2 = ((double)(t_splitmix64(&s) >> 11) + 0.5) * 0x1p-53;
    const double r = sqrt(-2.0 * log(u1));
    mismatches += xi[i] != (float)(r * cos(2.0 * M_PI * u2));
    if (i + 1 < N) mismatches += xi[i + 1] != (float)(r * sin(2.0 * M_PI * u2));
  }
  NK_CHECK(mismatches == 0, "%d values differ from the documented generator", mismatches);
  /* the first n values do not depend on n; seeds give different streams */
  memset(xi2, 0, sizeof xi2);
  NK_REQUIRE(nk_unmixtns_noise(NULL, 42, 7, xi2) == NK_OK, "noise 7");
  NK_CHECK(memcmp(xi, xi2, 7 * sizeof(float)) == 0 && xi2[7] == 0.0f, "prefix property");
  NK_REQUIRE(nk_unmixtns_noise(NULL, 43, N, xi2) == NK_OK, "noise seed 43");
  NK_CHECK(memcmp(xi, xi2, sizeof xi) != 0, "seeds 42 and 43 give the same stream");
  NK_CHECK(nk_unmixtns_noise(NULL, 1, 0, NULL) == NK_OK, "n == 0 with NULL");
  /* standard normal: mean and variance of 2e5 draws (standard errors 0.0022 and 0.0032) */
  enum { M = 200000 };
  static float big[M];
  NK_REQUIRE(nk_unmixtns_noise(NULL, 7, M, big) == NK_OK, "noise 2e5");
  double s1 = 0.0, s2 = 0.0;
  for (size_t i = 0; i < M; i++) s1 += big[i], s2 += (double)big[i] * big[i];
  const double mu = s1 / M, var = s2 / M - mu * mu;
  NK_CHECK(fabs(mu) < 0.012 && fabs(var - 1.0) < 0.016, "mean %g var %g", mu, var);
}

NK_TEST(unmixtns_lambda_values) {
  const struct {
    float m;
    size_t b, bmax;
  } cases[] = {{0.1f, 64, 64}, {0.1f, 16, 64}, {0.1f, 128, 64}, {0.3f, 1, 16},
               {0.0f, 8, 64},  {1.0f, 8, 64},  {0.1f, 16, 16}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    float lam = -1.0f;
    NK_REQUIRE(nk_unmixtns_lambda(NULL, cases[i].m, cases[i].b, cases[i].bmax, &lam) == NK_OK,
               "case %zu", i);
    const double ref = nk_ref_unmixtns_lambda(cases[i].m, (double)cases[i].b,
                                              (double)cases[i].bmax);
    NK_CHECK(fabs(lam - ref) <= f32_step_bound(ref, 1.0), "case %zu: %.9g vs %.9g", i,
             (double)lam, ref);
  }
  float lam;
  NK_REQUIRE(nk_unmixtns_lambda(NULL, 0.1f, 64, 64, &lam) == NK_OK, "default");
  NK_CHECK(lam == 0.1f, "m = 0.1, B = B_max gives %.9g, not 0.1", (double)lam);
  nk_unmixtns_desc d = nk_unmixtns_desc_default(16, 3);
  NK_CHECK(d.components == 16 && d.channels == 3 && d.tau == 0.07f && d.lambda == 0.1f &&
               d.alpha_init == 0.5f,
           "desc defaults");
}

NK_TEST(unmixtns_init_single_component) {
  enum { C = 6 };
  float sm[C] = {0.0f, -1.5f, 2.25f, 1e-30f, 3e30f, -0.0f};
  float sv[C] = {1.0f, 0.0f, 2.0f, 3.5f, 1e-20f, 7.0f};
  float cm[C], cv[C], xi[C] = {9, 9, 9, 9, 9, 9};
  nk_unmixtns_desc d = nk_unmixtns_desc_default(1, C);
  /* K == 1: the source statistics exactly, no noise; xi not read (NULL or not) */
  NK_REQUIRE(nk_unmixtns_init(NULL, &d, sm, sv, NULL, cm, cv) == NK_OK, "K 1, xi NULL");
  NK_CHECK(memcmp(cm, sm, sizeof cm) == 0 && memcmp(cv, sv, sizeof cv) == 0, "K 1 not exact");
  NK_REQUIRE(nk_unmixtns_init(NULL, &d, sm, sv, xi, cm, cv) == NK_OK, "K 1, xi given");
  NK_CHECK(memcmp(cm, sm, sizeof cm) == 0 && memcmp(cv, sv, sizeof cv) == 0, "K 1 read xi");
}

NK_TEST(unmixtns_init_components) {
  enum { K = 16, C = 10 };
  nk_rng rng = {5};
  float sm[C], sv[C], xi[K * C], cm[K * C], cv[K * C];
  double smd[C], svd[C], xid[K * C], rm[K * C], rv[K * C];
  for (size_t c = 0; c < C; c++) {
    sm[c] = (float)(2.0 * nk_rng_normal(&rng));
    sv[c] = (float)(0.1 + 3.0 * nk_rng_uniform(&rng));
  }
  sv[3] = 0.0f; /* a dead channel: components equal the source mean */
  NK_REQUIRE(nk_unmixtns_noise(NULL, 2024, K * C, xi) == NK_OK, "noise");
  widen(C, sm, smd);
  widen(C, sv, svd);
  widen(K * C, xi, xid);
  const float alphas[3] = {0.5f, 0.0f, 1.0f};
  for (int i = 0; i < 3; i++) {
    nk_unmixtns_desc d = nk_unmixtns_desc_default(K, C);
    d.alpha_init = alphas[i];
    NK_REQUIRE(nk_unmixtns_init(NULL, &d, sm, sv, xi, cm, cv) == NK_OK, "init");
    nk_ref_unmixtns_init(K, C, alphas[i], smd, svd, xid, rm, rv);
    NK_CHECK(worst_f32(K * C, cm, rm, 1.0, 0) <= 1.0 && worst_f32(K * C, cv, rv, 1.0, 0) <= 1.0,
             "alpha_init %g", (double)alphas[i]);
    for (size_t k = 0; k < K; k++) NK_CHECK(cm[k * C + 3] == sm[3], "dead channel moved");
  }
}

/* Activations of one UnMix-TNS batch: instance b comes from domain (b / 2 + step) % D, so the
 * label distribution drifts over the sequence (temporally correlated, the paper's setting). */
static void unmix_batch(nk_rng *rng, size_t B, size_t C, size_t L, size_t step, size_t D,
                        const double *centers, double *x) {
  for (size_t b = 0; b < B; b++) {
    const double *ctr = centers + ((b / 2 + step) % D) * C;
    for (size_t c = 0; c < C; c++) {
      const double sd = 0.3 + 0.2 * (double)(c % 3);
      for (size_t l = 0; l < L; l++) x[(b * C + c) * L + l] = ctr[c] + sd * nk_rng_normal(rng);
    }
  }
}

/* One sequence: K components, B instances of L elements per batch, `steps` batches. The library
 * is compared after every step with (a) the reference stepped from the library's own state
 * (F32_STEP / DOUBLE) and (b) an independent float64 trajectory (DRIFT). */
static void unmix_sequence(size_t K, size_t C, size_t B, size_t L, size_t steps, float lambda,
                           uint64_t seed, double *worst_step, double *worst_drift) {
  nk_rng rng = {seed};
  const size_t D = 3;
  double *centers = malloc(D * C * sizeof(double));
  float *sm = malloc(C * sizeof(float)), *sv = malloc(C * sizeof(float));
  float *xi = malloc(K * C * sizeof(float));
  float *cm = malloc(K * C * sizeof(float)), *cv = malloc(K * C * sizeof(float));
  float *mb = malloc(B * C * sizeof(float)), *vb = malloc(B * C * sizeof(float));
  double *prob = malloc(B * K * sizeof(double));
  double *smd = malloc(C * sizeof(double)), *svd = malloc(C * sizeof(double));
  double *xid = malloc(K * C * sizeof(double));
  double *x = malloc(B * C * L * sizeof(double));
  nk_moments *inst = malloc(B * C * sizeof(nk_moments));
  /* (a) lock-step reference state and outputs; (b) independent trajectory */
  double *lm = malloc(K * C * sizeof(double)), *lv = malloc(K * C * sizeof(double));
  double *lmb = malloc(B * C * sizeof(double)), *lvb = malloc(B * C * sizeof(double));
  double *lp = malloc(B * K * sizeof(double));
  double *tm = malloc(K * C * sizeof(double)), *tv = malloc(K * C * sizeof(double));
  double *tmb = malloc(B * C * sizeof(double)), *tvb = malloc(B * C * sizeof(double));
  double *tp = malloc(B * K * sizeof(double));
  for (size_t i = 0; i < D * C; i++) centers[i] = 1.5 * nk_rng_normal(&rng);
  for (size_t c = 0; c < C; c++) {
    sm[c] = (float)((centers[c] + centers[C + c] + centers[2 * C + c]) / 3.0);
    sv[c] = (float)(1.0 + nk_rng_uniform(&rng));
  }
  widen(C, sm, smd);
  widen(C, sv, svd);
  nk_unmixtns_desc d = nk_unmixtns_desc_default(K, C);
  d.lambda = lambda;
  NK_CHECK(nk_unmixtns_noise(NULL, seed, K * C, xi) == NK_OK, "noise");
  widen(K * C, xi, xid);
  NK_CHECK(nk_unmixtns_init(NULL, &d, sm, sv, xi, cm, cv) == NK_OK, "init");
  nk_ref_unmixtns_init(K, C, d.alpha_init, smd, svd, xid, tm, tv);
  const double lam = d.lambda, tau = d.tau, scale = 5.0;
  for (size_t step = 0; step < steps; step++) {
    unmix_batch(&rng, B, C, L, step, D, centers, x);
    instance_moments(B, C, L, x, inst);
    widen(K * C, cm, lm);
    widen(K * C, cv, lv);
    NK_CHECK(nk_unmixtns_fwd(NULL, &d, B, inst, cm, cv, mb, vb, prob) == NK_OK, "step %zu", step);
    nk_ref_unmixtns_fwd(K, C, B, L, x, tau, lam, lm, lv, lmb, lvb, lp);
    nk_ref_unmixtns_fwd(K, C, B, L, x, tau, lam, tm, tv, tmb, tvb, tp);
    const double es = fmax(fmax(fmax(worst_f32(B * C, mb, lmb, scale, 0),
                                     worst_f32(B * C, vb, lvb, scale, 0)),
                                fmax(worst_f32(K * C, cm, lm, scale, 0),
                                     worst_f32(K * C, cv, lv, scale, 0))),
                           worst_double(B * K, prob, lp));
    double ed = fmax(fmax(worst_f32(B * C, mb, tmb, scale, 1), worst_f32(B * C, vb, tvb, scale, 1)),
                     fmax(worst_f32(K * C, cm, tm, scale, 1), worst_f32(K * C, cv, tv, scale, 1)));
    for (size_t i = 0; i < B * K; i++) ed = fmax(ed, fabs(prob[i] - tp[i]) / 4e-6);
    NK_CHECK(es <= 1.0, "K %zu step %zu: one-step error %.3g bounds", K, step, es);
    NK_CHECK(ed <= 1.0, "K %zu step %zu: trajectory drift %.3g bounds", K, step, ed);
    *worst_step = fmax(*worst_step, es);
    *worst_drift = fmax(*worst_drift, ed);
    for (size_t i = 0; i < B * C; i++) NK_CHECK(vb[i] >= 0.0f, "negative var_bar");
  }
  free(centers), free(sm), free(sv), free(xi), free(cm), free(cv), free(mb), free(vb);
  free(prob), free(smd), free(svd), free(xid), free(x), free(inst), free(lm), free(lv);
  free(lmb), free(lvb), free(lp), free(tm), free(tv), free(tmb), free(tvb), free(tp);
}

NK_TEST(unmixtns_sequence) {
  double ws = 0.0, wd = 0.0;
  float lam16;
  NK_REQUIRE(nk_unmixtns_lambda(NULL, 0.1f, 6, 64, &lam16) == NK_OK, "lambda");
  unmix_sequence(4, 8, 6, 5, 8, 0.1f, 11, &ws, &wd);
  unmix_sequence(16, 12, 6, 4, 6, lam16, 12, &ws, &wd);
  unmix_sequence(1, 5, 3, 7, 5, 0.1f, 13, &ws, &wd);  /* K = 1: instance statistics */
  unmix_sequence(3, 1, 4, 6, 5, 0.9f, 14, &ws, &wd);  /* C = 1: sim is +-1 */
  unmix_sequence(8, 16, 1, 16, 6, 1.0f, 15, &ws, &wd); /* B = 1, lambda = 1 */
  printf("        UnMix-TNS: one-step worst %.3f of bound, trajectory worst %.3f of bound\n", ws,
         wd);
}

NK_TEST(unmixtns_zero_instance_mean) {
  enum { K = 3, C = 4, B = 2, L = 4 };
  nk_rng rng = {3};
  float cm[K * C], cv[K * C], mb[B * C], vb[B * C];
  double prob[B * K], x[B * C * L];
  for (size_t i = 0; i < K * C; i++) {
    cm[i] = (float)nk_rng_normal(&rng);
    cv[i] = 1.0f;
  }
  /* instance 0: +-a around 0 in every channel, so its mean is exactly 0; instance 1 random */
  for (size_t c = 0; c < C; c++)
    for (size_t l = 0; l < L; l++) {
      x[(0 * C + c) * L + l] = (l % 2 ? 1.0 : -1.0) * (double)(c + 1);
      x[(1 * C + c) * L + l] = nk_rng_normal(&rng);
    }
  nk_moments inst[B * C];
  instance_moments(B, C, L, x, inst);
  for (size_t c = 0; c < C; c++) NK_REQUIRE(inst[c].mean == 0.0, "setup");
  nk_unmixtns_desc d = nk_unmixtns_desc_default(K, C);
  NK_REQUIRE(nk_unmixtns_fwd(NULL, &d, B, inst, cm, cv, mb, vb, prob) == NK_OK, "fwd");
  for (size_t k = 0; k < K; k++)
    NK_CHECK(prob[k] == 1.0 / K, "p[0][%zu] = %.17g, want 1/K", k, prob[k]);
  for (size_t i = 0; i < B * C; i++) NK_CHECK(isfinite(mb[i]) && isfinite(vb[i]), "non-finite");
  /* all-zero component means too: every similarity is 0, p uniform for every instance */
  for (size_t i = 0; i < K * C; i++) cm[i] = 0.0f;
  NK_REQUIRE(nk_unmixtns_fwd(NULL, &d, B, inst, cm, cv, mb, vb, prob) == NK_OK, "fwd");
  for (size_t i = 0; i < B * K; i++) NK_CHECK(prob[i] == 1.0 / K, "p[%zu] = %.17g", i, prob[i]);
}

NK_TEST(unmixtns_lambda_zero_freezes) {
  enum { K = 4, C = 5, B = 3, L = 6 };
  nk_rng rng = {8};
  float cm[K * C], cv[K * C], cm0[K * C], cv0[K * C], mb[B * C], vb[B * C];
  double prob[B * K], x[B * C * L];
  nk_moments inst[B * C];
  for (size_t i = 0; i < K * C; i++) cm[i] = (float)nk_rng_normal(&rng), cv[i] = 2.0f;
  for (size_t i = 0; i < B * C * L; i++) x[i] = nk_rng_normal(&rng);
  instance_moments(B, C, L, x, inst);
  memcpy(cm0, cm, sizeof cm);
  memcpy(cv0, cv, sizeof cv);
  nk_unmixtns_desc d = nk_unmixtns_desc_default(K, C);
  d.lambda = 0.0f;
  memset(mb, POISON, sizeof mb);
  NK_REQUIRE(nk_unmixtns_fwd(NULL, &d, B, inst, cm, cv, mb, vb, prob) == NK_OK, "fwd");
  NK_CHECK(memcmp(cm, cm0, sizeof cm) == 0 && memcmp(cv, cv0, sizeof cv) == 0, "moved");
  NK_CHECK(!all_bytes(mb, sizeof mb, POISON), "outputs not written");
  /* B == 0 or C == 0: nothing read or written */
  NK_CHECK(nk_unmixtns_fwd(NULL, &d, 0, NULL, NULL, NULL, NULL, NULL, NULL) == NK_OK, "B 0");
  nk_unmixtns_desc d0 = nk_unmixtns_desc_default(K, 0);
  NK_CHECK(nk_unmixtns_fwd(NULL, &d0, B, NULL, NULL, NULL, NULL, NULL, NULL) == NK_OK, "C 0");
}

NK_TEST(unmixtns_var_clamped) {
  /* Component variances can only be negative if the caller made them so; the clamp then
   * keeps var_bar at 0 (the spec's "clamp v_bar >= 0"). */
  enum { K = 2, C = 2, B = 1 };
  float cm[K * C] = {1.0f, 0.0f, 0.0f, 1.0f}, cv[K * C] = {-100.0f, -100.0f, -100.0f, -100.0f};
  float mb[B * C], vb[B * C];
  double prob[B * K];
  nk_moments inst[B * C] = {{4.0, 1.0, 0.0}, {4.0, 1.0, 0.0}};
  nk_unmixtns_desc d = nk_unmixtns_desc_default(K, C);
  d.lambda = 0.0f;
  NK_REQUIRE(nk_unmixtns_fwd(NULL, &d, B, inst, cm, cv, mb, vb, prob) == NK_OK, "fwd");
  NK_CHECK(vb[0] == 0.0f && vb[1] == 0.0f && !signbit(vb[0]), "var_bar %g %g", (double)vb[0],
           (double)vb[1]);
}

/* ---- AdaB2N ------------------------------------------------------------------------------- */

NK_TEST(adab2n_eta_kappa_endpoints) {
  nk_adab2n_desc d = nk_adab2n_desc_default(4);
  NK_CHECK(d.channels == 4 && d.momentum == 0.1f && d.kappa == 1.0f, "desc defaults");
  /* kappa = 0: 1/t, the cumulative average */
  nk_adab2n_state st = {0, 0.0, 0};
  d.kappa = 0.0f;
  for (int t = 1; t <= 12; t++) {
    double eta = -1.0;
    NK_REQUIRE(nk_adab2n_next_eta(NULL, &d, &st, &eta) == NK_OK, "kappa 0");
    NK_CHECK(eta == 1.0 / t && st.num_batches_tracked == t && st.last_eta == 0.0,
             "t %d: eta %.17g", t, eta);
  }
  /* kappa = 1: m, the plain EMA (whatever num_batches_tracked is) */
  d.kappa = 1.0f;
  for (int t = 1; t <= 5; t++) {
    double eta = -1.0;
    NK_REQUIRE(nk_adab2n_next_eta(NULL, &d, &st, &eta) == NK_OK, "kappa 1");
    NK_CHECK(eta == (double)0.1f && st.num_batches_tracked == 12 + t, "t %d: eta %.17g", t, eta);
  }
  NK_CHECK(nk_adab2n_next_eta(NULL, &d, &st, NULL) == NK_OK, "eta NULL");
  NK_CHECK(st.num_batches_tracked == 18, "eta NULL did not advance");
}

NK_TEST(adab2n_eta_recursion) {
  const float ms[3] = {0.1f, 0.3f, 0.01f}, kappas[3] = {0.1f, 0.4f, 0.7f};
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      nk_adab2n_desc d = nk_adab2n_desc_default(1);
      d.momentum = ms[i];
      d.kappa = kappas[j];
      const double m = ms[i], kappa = kappas[j], q = pow(1.0 - m, kappa);
      nk_adab2n_state st = {0, 0.0, 0};
      nk_ref_adab2n_state rs = {0.0, 0, 0.0, 0};
      double prev = 2.0, eta = 0.0;
      for (int t = 1; t <= 3000; t++) {
        NK_REQUIRE(nk_adab2n_next_eta(NULL, &d, &st, &eta) == NK_OK, "next_eta");
        const double ref = nk_ref_adab2n_eta(m, kappa, &rs);
        /* closed form of eta_t = eta_{t-1} / (eta_{t-1} + q), eta_1 = m^kappa:
         * 1/eta_t = (1 - q^(t-1)) / (1 - q) + q^(t-1) / m^kappa */
        const double qt = pow(q, t - 1);
        const double closed = 1.0 / ((1.0 - qt) / (1.0 - q) + qt / pow(m, kappa));
        if (t == 1) NK_CHECK(eta == pow(m, kappa), "first eta %.17g", eta);
        NK_CHECK(fabs(eta - ref) <= double_bound(ref), "t %d: %.17g vs reference %.17g", t, eta,
                 ref);
        NK_CHECK(fabs(eta - closed) <= 1e-12 * closed, "t %d: %.17g vs closed form %.17g", t, eta,
                 closed);
        /* strictly decreasing until it reaches the fixed point in double */
        NK_CHECK(eta < prev || (eta == prev && fabs(eta - (1.0 - q)) <= 1e-15),
                 "t %d: not decreasing (%.17g after %.17g)", t, eta, prev);
        NK_CHECK(st.last_eta == eta && st.num_batches_tracked == t, "state");
        prev = eta;
        if (nk_t_cur_failed) return;
      }
      /* the fixed point 1 - (1-m)^kappa, where q^t has died out (m = 0.01, kappa = 0.1 has
       * q = 0.999: not yet after 3000 steps; the closed form covered it) */
      if (pow(q, 2999) < 1e-12)
        NK_CHECK(fabs(eta - (1.0 - q)) <= 1e-12,
                 "m %g kappa %g: limit %.17g vs 1 - (1-m)^kappa %.17g", m, kappa, eta, 1.0 - q);
    }
}

NK_TEST(adab2n_weights_formula) {
  enum { T = 3, B = 10 };
  const int64_t ids[B] = {0, 1, 2, 3, 3, 1, 0, 0, 2, 3};
  const float phi[T + 1] = {0.0f, 0.5f, -1.25f, 2.0f};
  double w[T + 1], omega[B];
  NK_REQUIRE(nk_adab2n_weights(NULL, T, B, ids, phi, w, omega) == NK_OK, "weights");
  const double n[T + 1] = {3, 2, 2, 3};
  double a[T + 1], sum = 0.0;
  for (int k = 0; k <= T; k++) a[k] = exp((double)phi[k]) + n[k], sum += a[k];
  double so = 0.0;
  for (int k = 0; k <= T; k++) NK_CHECK(fabs(w[k] - a[k] / sum) <= double_bound(w[k]), "w[%d]", k);
  for (int b = 0; b < B; b++) {
    NK_CHECK(fabs(omega[b] - a[ids[b]] / sum / n[ids[b]]) <= double_bound(omega[b]), "omega[%d]",
             b);
    so += omega[b];
  }
  NK_CHECK(fabs(so - 1.0) <= 1e-15, "every task present: sum omega %.17g != 1", so);
  /* phi = 0 everywhere (the init): a_k = 1 + n_k */
  const float zero[T + 1] = {0};
  NK_REQUIRE(nk_adab2n_weights(NULL, T, B, ids, zero, w, omega) == NK_OK, "weights");
  NK_CHECK(fabs(w[0] - 4.0 / 14.0) <= 1e-16 && fabs(w[1] - 3.0 / 14.0) <= 1e-16, "phi 0");
}

/* AdaB2N activations: sample b of task t is task_offset[t] + scale_c * N(0, 1) with a per-sample
 * shift, so the tasks' statistics differ and weighting matters. */
static void adab2n_batch(nk_rng *rng, size_t B, size_t C, size_t L, const int64_t *ids,
                         double *x) {
  for (size_t b = 0; b < B; b++) {
    const double shift = 0.3 * nk_rng_normal(rng);
    for (size_t c = 0; c < C; c++)
      for (size_t l = 0; l < L; l++)
        x[(b * C + c) * L + l] = 2.0 * (double)ids[b] - 1.0 + 0.2 * (double)c + shift +
                                 (0.5 + 0.1 * (double)c) * nk_rng_normal(rng);
  }
}

/* A sequence of AdaB2N steps, compared after each step with the reference stepped from the
 * library's state (F32_STEP / DOUBLE) and with an independent float64 trajectory (DRIFT).
 * present: tasks that may appear in the batch (bit k); with_ids 0 runs the plain path. */
static void adab2n_sequence(size_t C, size_t B, size_t L, size_t tasks, unsigned present,
                            int with_ids, float m, float kappa, size_t steps, uint64_t seed,
                            double *worst_step, double *worst_drift, double *min_omega_sum) {
  nk_rng rng = {seed};
  nk_adab2n_desc d = nk_adab2n_desc_default(C);
  d.momentum = m;
  d.kappa = kappa;
  nk_adab2n_state st = {0, 0.0, tasks};
  nk_ref_adab2n_state ts = {0.0, 0, 0.0, tasks}; /* independent trajectory */
  float *rm = malloc(C * sizeof(float)), *rv = malloc(C * sizeof(float));
  float *mean = malloc(C * sizeof(float)), *var = malloc(C * sizeof(float));
  float *phi = malloc((tasks + 1) * sizeof(float));
  double *phid = malloc((tasks + 1) * sizeof(double));
  double *w = malloc((tasks + 1) * sizeof(double)), *omega = malloc(B * sizeof(double));
  double *lrm = malloc(C * sizeof(double)), *lrv = malloc(C * sizeof(double));
  double *lmean = malloc(C * sizeof(double)), *lvar = malloc(C * sizeof(double));
  double *lw = malloc((tasks + 1) * sizeof(double)), *lomega = malloc(B * sizeof(double));
  double *trm = malloc(C * sizeof(double)), *trv = malloc(C * sizeof(double));
  double *tmean = malloc(C * sizeof(double)), *tvar = malloc(C * sizeof(double));
  double *x = malloc(B * C * L * sizeof(double));
  int64_t *ids = malloc(B * sizeof(int64_t));
  nk_moments *inst = malloc(B * C * sizeof(nk_moments));
  for (size_t c = 0; c < C; c++) {
    rm[c] = (float)(0.1 * (double)c);
    rv[c] = 1.0f;
    trm[c] = rm[c];
    trv[c] = rv[c];
  }
  const double scale = 10.0;
  for (size_t step = 0; step < steps; step++) {
    for (size_t k = 0; k <= tasks; k++) {
      phi[k] = (float)(0.3 * nk_rng_normal(&rng)); /* the logits are learned between steps */
      phid[k] = phi[k];
    }
    for (size_t b = 0; b < B; b++) {
      int64_t t;
      do t = (int64_t)(nk_rng_u64(&rng) % (tasks + 1));
      while (!(present >> t & 1u));
      ids[b] = t;
    }
    adab2n_batch(&rng, B, C, L, ids, x);
    instance_moments(B, C, L, x, inst);
    nk_ref_adab2n_state ls = {(double)st.num_batches_tracked, st.last_eta != 0.0, st.last_eta,
                              st.tasks};
    widen(C, rm, lrm);
    widen(C, rv, lrv);
    double reg = -1.0, lreg, treg;
    const int64_t *pass_ids = with_ids ? ids : NULL;
    NK_CHECK(nk_adab2n_fwd(NULL, &d, &st, B, inst, pass_ids, phi, rm, rv, mean, var, w, omega,
                           &reg) == NK_OK,
             "step %zu", step);
    const double leta = nk_ref_adab2n_fwd(B, C, L, x, pass_ids, phid, m, kappa, &ls, lrm, lrv,
                                          lmean, lvar, lw, lomega, &lreg);
    nk_ref_adab2n_fwd(B, C, L, x, pass_ids, phid, m, kappa, &ts, trm, trv, tmean, tvar, NULL,
                      NULL, &treg);
    NK_CHECK(st.num_batches_tracked == (int64_t)step + 1, "num_batches_tracked");
    if (kappa != 0.0f && kappa != 1.0f)
      NK_CHECK(fabs(st.last_eta - leta) <= double_bound(leta), "eta %.17g vs %.17g", st.last_eta,
               leta);
    double es = fmax(fmax(worst_f32(C, mean, lmean, scale, 0), worst_f32(C, var, lvar, scale, 0)),
                     fmax(worst_f32(C, rm, lrm, scale, 0), worst_f32(C, rv, lrv, scale, 0)));
    es = fmax(es, fabs(reg - lreg) / (1e-12 * fabs(lreg) + 1e-13));
    if (with_ids && tasks > 0) {
      es = fmax(es, fmax(worst_double(tasks + 1, w, lw), worst_double(B, omega, lomega)));
      double so = 0.0;
      for (size_t b = 0; b < B; b++) so += omega[b];
      *min_omega_sum = fmin(*min_omega_sum, so);
    }
    const double ed =
        fmax(fmax(fmax(worst_f32(C, mean, tmean, scale, 1), worst_f32(C, var, tvar, scale, 1)),
                  fmax(worst_f32(C, rm, trm, scale, 1), worst_f32(C, rv, trv, scale, 1))),
             fabs(reg - treg) / drift_bound(treg, 1e-2));
    NK_CHECK(es <= 1.0, "step %zu: one-step error %.3g bounds", step, es);
    NK_CHECK(ed <= 1.0, "step %zu: trajectory drift %.3g bounds", step, ed);
    *worst_step = fmax(*worst_step, es);
    *worst_drift = fmax(*worst_drift, ed);
  }
  free(rm), free(rv), free(mean), free(var), free(phi), free(phid), free(w), free(omega);
  free(lrm), free(lrv), free(lmean), free(lvar), free(lw), free(lomega), free(trm), free(trv);
  free(tmean), free(tvar), free(x), free(ids), free(inst);
}

NK_TEST(adab2n_sequence_weighted) {
  double ws = 0.0, wd = 0.0, so = 2.0;
  adab2n_sequence(6, 12, 7, 2, 0x7u, 1, 0.1f, 0.4f, 8, 21, &ws, &wd, &so);
  adab2n_sequence(9, 20, 4, 4, 0x1Fu, 1, 0.1f, 0.7f, 6, 22, &ws, &wd, &so);
  adab2n_sequence(3, 5, 16, 1, 0x3u, 1, 0.3f, 1.0f, 6, 23, &ws, &wd, &so);
  adab2n_sequence(4, 8, 1, 2, 0x7u, 1, 0.1f, 0.0f, 6, 24, &ws, &wd, &so); /* L = 1, 1/t */
  printf("        AdaB2N weighted: one-step worst %.3f, trajectory worst %.3f of bound\n", ws, wd);
}

NK_TEST(adab2n_absent_tasks) {
  /* tasks 0..3 seen, the batches only hold tasks 0 and 2: w_1 and w_3 are carried by no sample,
   * sum omega < 1 and the statistics shrink toward 0 (the code's behaviour, reproduced) */
  double ws = 0.0, wd = 0.0, so = 2.0;
  adab2n_sequence(5, 10, 6, 3, 0x5u, 1, 0.1f, 0.4f, 6, 31, &ws, &wd, &so);
  NK_CHECK(so < 0.95, "sum omega %.6g, want < 1", so);
  /* and directly: one batch, the weights of the absent tasks are missing from sum omega */
  enum { T = 3, B = 4 };
  const int64_t ids[B] = {0, 2, 2, 0};
  const float phi[T + 1] = {0};
  double w[T + 1], omega[B];
  NK_REQUIRE(nk_adab2n_weights(NULL, T, B, ids, phi, w, omega) == NK_OK, "weights");
  const double s = omega[0] + omega[1] + omega[2] + omega[3];
  NK_CHECK(fabs(s - (w[0] + w[2])) <= 1e-15 && fabs(s - 6.0 / 8.0) <= 1e-15,
           "sum omega %.17g, w0 + w2 %.17g", s, w[0] + w[2]);
}

NK_TEST(adab2n_plain_path) {
  double ws = 0.0, wd = 0.0, so = 2.0;
  /* T = 0 with task ids: ignored, plain batch statistics (the code's `cur_tasks > 0` test) */
  adab2n_sequence(6, 8, 5, 0, 0x1u, 1, 0.1f, 0.4f, 6, 41, &ws, &wd, &so);
  /* T > 0 without task ids: plain too */
  adab2n_sequence(6, 8, 5, 2, 0x7u, 0, 0.1f, 0.0f, 6, 42, &ws, &wd, &so);
  printf("        AdaB2N plain: one-step worst %.3f, trajectory worst %.3f of bound\n", ws, wd);
  /* and task_weight/omega are not touched on the plain path */
  enum { C = 2, B = 3 };
  nk_adab2n_desc d = nk_adab2n_desc_default(C);
  nk_adab2n_state st = {0, 0.0, 0};
  nk_moments inst[B * C] = {{2, 1, 1}, {2, 2, 2}, {2, 3, 3}, {2, 4, 4}, {2, 5, 5}, {2, 6, 6}};
  const int64_t ids[B] = {0, 0, 0};
  const float phi[1] = {0.0f};
  float rm[C] = {0, 0}, rv[C] = {1, 1}, mean[C], var[C];
  double w[1], omega[B];
  memset(w, POISON, sizeof w);
  memset(omega, POISON, sizeof omega);
  NK_REQUIRE(nk_adab2n_fwd(NULL, &d, &st, B, inst, ids, phi, rm, rv, mean, var, w, omega, NULL) ==
                 NK_OK,
             "T 0");
  NK_CHECK(all_bytes(w, sizeof w, POISON) && all_bytes(omega, sizeof omega, POISON),
           "weights written on the plain path");
  /* pooled statistics of channel 0: means 1, 3, 5 (2 elements each, M2 1, 3, 5) */
  const double mu = 3.0, v = ((1.0 + 3.0 + 5.0) + 2.0 * (4.0 + 0.0 + 4.0)) / 6.0;
  NK_CHECK(mean[0] == (float)mu && var[0] == (float)v, "plain %g %g", (double)mean[0],
           (double)var[0]);
}

NK_TEST(adab2n_unequal_counts) {
  /* instance moments over different numbers of elements: the plain path pools them (Chan), the
   * weighted path uses each instance's own L */
  enum { C = 1, B = 3 };
  nk_moments inst[B] = {{1.0, 2.0, 0.0}, {4.0, -1.0, 8.0}, {3.0, 0.5, 1.5}};
  nk_adab2n_desc d = nk_adab2n_desc_default(C);
  nk_adab2n_state st = {0, 0.0, 0};
  float rm[1] = {0}, rv[1] = {1}, mean[1], var[1];
  NK_REQUIRE(nk_adab2n_fwd(NULL, &d, &st, B, inst, NULL, NULL, rm, rv, mean, var, NULL, NULL,
                           NULL) == NK_OK,
             "plain");
  const double n = 8.0, mu = (2.0 - 4.0 + 1.5) / n;
  const double m2 = 0.0 + 8.0 + 1.5 + 1.0 * (2.0 - mu) * (2.0 - mu) +
                    4.0 * (-1.0 - mu) * (-1.0 - mu) + 3.0 * (0.5 - mu) * (0.5 - mu);
  NK_CHECK(fabs(mean[0] - mu) <= f32_step_bound(mu, 1.0) &&
               fabs(var[0] - m2 / n) <= f32_step_bound(m2 / n, 1.0),
           "pooled %g %g vs %g %g", (double)mean[0], (double)var[0], mu, m2 / n);
  st.tasks = 1;
  const int64_t ids[B] = {0, 1, 1};
  const float phi[2] = {0.0f, 0.0f};
  double w[2], omega[B];
  NK_REQUIRE(nk_adab2n_fwd(NULL, &d, &st, B, inst, ids, phi, rm, rv, mean, var, w, omega, NULL) ==
                 NK_OK,
             "weighted");
  /* a = (2, 3), w = (0.4, 0.6), omega = (0.4, 0.3, 0.3) */
  const double mw = 0.4 * 2.0 + 0.3 * -1.0 + 0.3 * 0.5;
  const double vw =
      0.4 * (0.0 + sq(2.0 - mw)) + 0.3 * (2.0 + sq(-1.0 - mw)) + 0.3 * (0.5 + sq(0.5 - mw));
  NK_CHECK(fabs(mean[0] - mw) <= f32_step_bound(mw, 1.0) &&
               fabs(var[0] - vw) <= f32_step_bound(vw, 1.0),
           "weighted %g %g vs %g %g", (double)mean[0], (double)var[0], mw, vw);
}

NK_TEST(adab2n_zero_channels) {
  nk_adab2n_desc d = nk_adab2n_desc_default(0);
  d.kappa = 0.5f;
  nk_adab2n_state st = {3, 0.25, 1};
  const int64_t ids[2] = {1, 1};
  const float phi[2] = {0.0f, 0.0f};
  double w[2], omega[2], reg = -1.0;
  NK_REQUIRE(nk_adab2n_fwd(NULL, &d, &st, 2, NULL, ids, phi, NULL, NULL, NULL, NULL, w, omega,
                           &reg) == NK_OK,
             "C 0");
  NK_CHECK(st.num_batches_tracked == 4 && st.last_eta < 0.25 && reg == 0.0, "state/reg");
  NK_CHECK(w[1] == 3.0 / 4.0 && omega[0] == 3.0 / 8.0, "weights %g %g", w[1], omega[0]);
}

/* ---- invalid arguments -------------------------------------------------------------------- */

static nk_context *actx;

#define EXPECT_INVALID(call, clean)                                                              \
  do {                                                                                           \
    nk_status got_ = (call);                                                                     \
    NK_CHECK(got_ == NK_STATUS_INVALID_ARGUMENT, "%s: got %s", #call, nk_status_string(got_));   \
    NK_CHECK(nk_context_message(actx)[0] != '\0', "%s: no message", #call);                     \
    NK_CHECK(clean, "%s: wrote an output or the state", #call);                                  \
  } while (0)

NK_TEST(alpha_bn_invalid) {
  enum { C = 4 };
  float sm[C] = {0, 1, 2, 3}, sv[C] = {1, 1, 1, 1};
  nk_moments mom[C] = {{5, 0, 1}, {5, 0, 1}, {5, 0, 1}, {5, 0, 1}};
  float out[8 * C]; /* room for a moments array built on top of it */
  float *mean = out, *var = out + C;
#define CLEAN all_bytes(out, sizeof out, POISON)
#define CALL(a, u, smp, svp, mp, me, va) nk_tta_alpha_bn_stats(actx, C, a, u, smp, svp, mp, me, va)
  memset(out, POISON, sizeof out);
  EXPECT_INVALID(CALL(-0.01f, 1, sm, sv, mom, mean, var), CLEAN);
  EXPECT_INVALID(CALL(1.01f, 1, sm, sv, mom, mean, var), CLEAN);
  EXPECT_INVALID(CALL(NAN, 1, sm, sv, mom, mean, var), CLEAN);
  EXPECT_INVALID(nk_tta_alpha_bn_stats(actx, 0, NAN, 1, NULL, NULL, NULL, NULL, NULL), CLEAN);
  EXPECT_INVALID(CALL(0.1f, 1, NULL, sv, mom, mean, var), CLEAN);
  EXPECT_INVALID(CALL(0.1f, 1, sm, NULL, mom, mean, var), CLEAN);
  EXPECT_INVALID(CALL(0.1f, 1, sm, sv, NULL, mean, var), CLEAN);
  EXPECT_INVALID(CALL(0.1f, 1, sm, sv, mom, NULL, var), CLEAN);
  EXPECT_INVALID(CALL(0.1f, 1, sm, sv, mom, mean, NULL), CLEAN);
  EXPECT_INVALID(CALL(0.1f, 1, sm, sv, mom, mean, out + 2), CLEAN); /* var overlaps mean */
  EXPECT_INVALID(CALL(0.1f, 1, sm, sv, mom, mean, mean), CLEAN);    /* no in-place form */
  EXPECT_INVALID(CALL(0.1f, 1, sm, sv, (const nk_moments *)(void *)out, mean + C, var + C),
                 CLEAN);                                            /* test overlaps var */
  sv[2] = -1.0f;
  EXPECT_INVALID(CALL(0.1f, 1, sm, sv, mom, mean, var), CLEAN);
  sv[2] = 1.0f;
  mom[3].m2 = -1e-300;
  EXPECT_INVALID(CALL(0.1f, 1, sm, sv, mom, mean, var), CLEAN);
  mom[3].m2 = 1.0;
  mom[0].count = 1.0;
  EXPECT_INVALID(CALL(0.1f, 1, sm, sv, mom, mean, var), CLEAN);
  mom[0].count = INFINITY;
  EXPECT_INVALID(CALL(0.1f, 0, sm, sv, mom, mean, var), CLEAN);
  NK_CHECK(strstr(nk_context_message(actx), "tta_alpha_bn_stats") != NULL, "op not named");
#undef CALL
#undef CLEAN
}

NK_TEST(unmixtns_invalid) {
  enum { K = 3, C = 4, B = 2 };
  float sm[C] = {0, 1, 2, 3}, sv[C] = {1, 1, 1, 1}, xi[K * C] = {0};
  nk_moments inst[B * C];
  for (size_t i = 0; i < B * C; i++) inst[i] = (nk_moments){3, 0.5 * (double)i, 1};
  /* one poisoned arena holds every output so that overlaps can be built from it */
  static float arena[4 * K * C + 2 * B * C + 64];
  static double parr[B * K + 8];
  float *cm = arena, *cv = arena + K * C, *mb = arena + 2 * K * C, *vb = mb + B * C;
  double *prob = parr;
  float lam = -1.0f;
  nk_unmixtns_desc d = nk_unmixtns_desc_default(K, C);
#define CLEAN                                                                                    \
  (all_bytes(arena, sizeof arena, POISON) && all_bytes(parr, sizeof parr, POISON) &&              \
   lam == -1.0f)
  memset(arena, POISON, sizeof arena);
  memset(parr, POISON, sizeof parr);
  /* the descriptor, for both init and fwd */
  nk_unmixtns_desc bad[8];
  for (int i = 0; i < 8; i++) bad[i] = d;
  bad[0].components = 0;
  bad[1].tau = 0.0f;
  bad[2].tau = -0.07f;
  bad[3].tau = INFINITY;
  bad[4].tau = NAN;
  bad[5].lambda = 1.5f;
  bad[6].lambda = NAN;
  bad[7].alpha_init = -0.5f;
  for (int i = 0; i < 8; i++) {
    EXPECT_INVALID(nk_unmixtns_init(actx, &bad[i], sm, sv, xi, cm, cv), CLEAN);
    EXPECT_INVALID(nk_unmixtns_fwd(actx, &bad[i], B, inst, cm, cv, mb, vb, prob), CLEAN);
  }
  EXPECT_INVALID(nk_unmixtns_init(actx, NULL, sm, sv, xi, cm, cv), CLEAN);
  EXPECT_INVALID(nk_unmixtns_fwd(actx, NULL, B, inst, cm, cv, mb, vb, prob), CLEAN);
  /* init */
  EXPECT_INVALID(nk_unmixtns_init(actx, &d, NULL, sv, xi, cm, cv), CLEAN);
  EXPECT_INVALID(nk_unmixtns_init(actx, &d, sm, NULL, xi, cm, cv), CLEAN);
  EXPECT_INVALID(nk_unmixtns_init(actx, &d, sm, sv, NULL, cm, cv), CLEAN); /* K > 1 needs xi */
  EXPECT_INVALID(nk_unmixtns_init(actx, &d, sm, sv, xi, NULL, cv), CLEAN);
  EXPECT_INVALID(nk_unmixtns_init(actx, &d, sm, sv, xi, cm, NULL), CLEAN);
  EXPECT_INVALID(nk_unmixtns_init(actx, &d, sm, sv, xi, cm, cm + 1), CLEAN);
  EXPECT_INVALID(nk_unmixtns_init(actx, &d, sm, sv, cv, cm, cv), CLEAN); /* xi is comp_var */
  sv[1] = -2.0f;
  EXPECT_INVALID(nk_unmixtns_init(actx, &d, sm, sv, xi, cm, cv), CLEAN);
  sv[1] = 1.0f;
  nk_unmixtns_desc huge = d;
  huge.components = SIZE_MAX / 2;
  EXPECT_INVALID(nk_unmixtns_init(actx, &huge, sm, sv, xi, cm, cv), CLEAN);
  /* fwd */
  EXPECT_INVALID(nk_unmixtns_fwd(actx, &d, B, NULL, cm, cv, mb, vb, prob), CLEAN);
  EXPECT_INVALID(nk_unmixtns_fwd(actx, &d, B, inst, NULL, cv, mb, vb, prob), CLEAN);
  EXPECT_INVALID(nk_unmixtns_fwd(actx, &d, B, inst, cm, NULL, mb, vb, prob), CLEAN);
  EXPECT_INVALID(nk_unmixtns_fwd(actx, &d, B, inst, cm, cv, NULL, vb, prob), CLEAN);
  EXPECT_INVALID(nk_unmixtns_fwd(actx, &d, B, inst, cm, cv, mb, NULL, prob), CLEAN);
  EXPECT_INVALID(nk_unmixtns_fwd(actx, &d, B, inst, cm, cv, mb, vb, NULL), CLEAN);
  EXPECT_INVALID(nk_unmixtns_fwd(actx, &d, B, inst, cm, cm + 2, mb, vb, prob), CLEAN);
  EXPECT_INVALID(nk_unmixtns_fwd(actx, &d, B, inst, cm, cv, mb, mb + 1, prob), CLEAN);
  EXPECT_INVALID(nk_unmixtns_fwd(actx, &d, B, inst, cm, cv, mb, vb, (double *)(void *)vb), CLEAN);
  EXPECT_INVALID(nk_unmixtns_fwd(actx, &d, SIZE_MAX / 2, inst, cm, cv, mb, vb, prob), CLEAN);
  inst[5].count = 0.0;
  EXPECT_INVALID(nk_unmixtns_fwd(actx, &d, B, inst, cm, cv, mb, vb, prob), CLEAN);
  inst[5].count = 3.0;
  inst[2].m2 = -1.0;
  EXPECT_INVALID(nk_unmixtns_fwd(actx, &d, B, inst, cm, cv, mb, vb, prob), CLEAN);
  inst[2].m2 = 1.0;
  NK_CHECK(strstr(nk_context_message(actx), "unmixtns_fwd") != NULL, "op not named");
  /* lambda and noise */
  EXPECT_INVALID(nk_unmixtns_lambda(actx, -0.1f, 8, 64, &lam), CLEAN);
  EXPECT_INVALID(nk_unmixtns_lambda(actx, 1.1f, 8, 64, &lam), CLEAN);
  EXPECT_INVALID(nk_unmixtns_lambda(actx, 0.1f, 0, 64, &lam), CLEAN);
  EXPECT_INVALID(nk_unmixtns_lambda(actx, 0.1f, 8, 0, &lam), CLEAN);
  EXPECT_INVALID(nk_unmixtns_lambda(actx, 0.1f, 8, 64, NULL), CLEAN);
  EXPECT_INVALID(nk_unmixtns_noise(actx, 1, 5, NULL), CLEAN);
  /* and a valid call after all that works and clears the message */
  NK_CHECK(nk_unmixtns_fwd(actx, &d, B, inst, cm, cv, mb, vb, prob) == NK_OK, "valid call");
  NK_CHECK(nk_context_message(actx)[0] == '\0', "message kept");
#undef CLEAN
}

NK_TEST(adab2n_invalid) {
  enum { C = 3, B = 4, T = 2 };
  nk_moments inst[B * C];
  for (size_t i = 0; i < B * C; i++) inst[i] = (nk_moments){5, 0.1 * (double)i, 2};
  int64_t ids[B] = {0, 1, 2, 1};
  const float phi[T + 1] = {0};
  static float arena[8 * C];
  static double darena[2 * (T + 1) + 2 * B + 4];
  float *rm = arena, *rv = arena + C, *mean = arena + 2 * C, *var = arena + 3 * C;
  double *w = darena, *omega = darena + T + 1, *reg = darena + T + 1 + B;
  nk_adab2n_desc d = nk_adab2n_desc_default(C);
  d.kappa = 0.4f;
  const nk_adab2n_state st0 = {7, 0.3, T};
  nk_adab2n_state st = st0;
  double eta = -1.0;
#define CLEAN                                                                                    \
  (all_bytes(arena, sizeof arena, POISON) && all_bytes(darena, sizeof darena, POISON) &&          \
   memcmp(&st, &st0, sizeof st) == 0 && eta == -1.0)
#define FWD(dp, sp, b, in, id, ph, a, bb, c, dd, e, f, g)                                        \
  nk_adab2n_fwd(actx, dp, sp, b, in, id, ph, a, bb, c, dd, e, f, g)
  memset(arena, POISON, sizeof arena);
  memset(darena, POISON, sizeof darena);
  /* descriptor and state, for next_eta and fwd */
  nk_adab2n_desc bd[5] = {d, d, d, d, d};
  bd[0].momentum = -0.1f;
  bd[1].momentum = NAN;
  bd[2].kappa = 1.5f;
  bd[3].kappa = -0.0001f;
  bd[4].kappa = NAN;
  for (int i = 0; i < 5; i++) {
    EXPECT_INVALID(nk_adab2n_next_eta(actx, &bd[i], &st, &eta), CLEAN);
    EXPECT_INVALID(FWD(&bd[i], &st, B, inst, ids, phi, rm, rv, mean, var, w, omega, reg), CLEAN);
  }
  EXPECT_INVALID(nk_adab2n_next_eta(actx, NULL, &st, &eta), CLEAN);
  EXPECT_INVALID(nk_adab2n_next_eta(actx, &d, NULL, &eta), CLEAN);
  EXPECT_INVALID(nk_adab2n_next_eta(actx, &d, &st, (double *)(void *)&st), CLEAN);
  EXPECT_INVALID(FWD(NULL, &st, B, inst, ids, phi, rm, rv, mean, var, w, omega, reg), CLEAN);
  EXPECT_INVALID(FWD(&d, NULL, B, inst, ids, phi, rm, rv, mean, var, w, omega, reg), CLEAN);
  const nk_adab2n_state bad_states[4] = {{-1, 0.3, T}, {INT64_MAX, 0.3, T}, {7, 1.5, T},
                                         {7, NAN, T}};
  for (int i = 0; i < 4; i++) {
    nk_adab2n_state bs = bad_states[i];
    EXPECT_INVALID(nk_adab2n_next_eta(actx, &d, &bs, &eta),
                   CLEAN && memcmp(&bs, &bad_states[i], sizeof bs) == 0);
  }
  /* sizes, pointers, task ids, moments */
  EXPECT_INVALID(FWD(&d, &st, 0, inst, ids, phi, rm, rv, mean, var, w, omega, reg), CLEAN);
  EXPECT_INVALID(FWD(&d, &st, SIZE_MAX / 2, inst, ids, phi, rm, rv, mean, var, w, omega, reg),
                 CLEAN);
  EXPECT_INVALID(FWD(&d, &st, B, NULL, ids, phi, rm, rv, mean, var, w, omega, reg), CLEAN);
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, NULL, rm, rv, mean, var, w, omega, reg), CLEAN);
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, NULL, rv, mean, var, w, omega, reg), CLEAN);
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, NULL, mean, var, w, omega, reg), CLEAN);
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, rv, NULL, var, w, omega, reg), CLEAN);
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, rv, mean, NULL, w, omega, reg), CLEAN);
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, rv, mean, var, NULL, omega, reg), CLEAN);
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, rv, mean, var, w, NULL, reg), CLEAN);
  ids[3] = T + 1;
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, rv, mean, var, w, omega, reg), CLEAN);
  ids[3] = -1;
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, rv, mean, var, w, omega, reg), CLEAN);
  ids[3] = 1;
  inst[7].count = 0.0;
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, rv, mean, var, w, omega, reg), CLEAN);
  inst[7].count = NAN;
  EXPECT_INVALID(FWD(&d, &st, B, inst, NULL, NULL, rm, rv, mean, var, NULL, NULL, reg), CLEAN);
  inst[7].count = 5.0;
  inst[1].m2 = -3.0;
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, rv, mean, var, w, omega, reg), CLEAN);
  inst[1].m2 = 2.0;
  /* overlaps */
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, rm + 1, mean, var, w, omega, reg), CLEAN);
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, rv, mean, rm, w, omega, reg), CLEAN);
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, rv, mean, var, w, w + 1, reg), CLEAN);
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, rv, mean, var, w, omega, omega + 1), CLEAN);
  EXPECT_INVALID(FWD(&d, &st, B, inst, ids, phi, rm, rv, mean, var, w, omega, &st.last_eta),
                 CLEAN);
  /* the weights alone */
  EXPECT_INVALID(nk_adab2n_weights(actx, T, 0, ids, phi, w, omega), CLEAN);
  EXPECT_INVALID(nk_adab2n_weights(actx, T, B, NULL, phi, w, omega), CLEAN);
  EXPECT_INVALID(nk_adab2n_weights(actx, T, B, ids, NULL, w, omega), CLEAN);
  EXPECT_INVALID(nk_adab2n_weights(actx, T, B, ids, phi, NULL, omega), CLEAN);
  EXPECT_INVALID(nk_adab2n_weights(actx, T, B, ids, phi, w, NULL), CLEAN);
  EXPECT_INVALID(nk_adab2n_weights(actx, 1, B, ids, phi, w, omega), CLEAN); /* id 2 > T = 1 */
  EXPECT_INVALID(nk_adab2n_weights(actx, SIZE_MAX, B, ids, phi, w, omega), CLEAN);
  EXPECT_INVALID(nk_adab2n_weights(actx, T, B, ids, phi, w, w + 2), CLEAN);
  NK_CHECK(strstr(nk_context_message(actx), "adab2n_weights") != NULL, "op not named");
  /* a valid call then works */
  NK_CHECK(FWD(&d, &st, B, inst, ids, phi, rm, rv, mean, var, w, omega, reg) == NK_OK, "valid");
  NK_CHECK(st.num_batches_tracked == 8, "state not advanced");
#undef FWD
#undef CLEAN
}

int main(void) {
  if (nk_context_create(&actx) != NK_OK) return 1;
  NK_RUN(alpha_bn_sequence);
  NK_RUN(alpha_bn_endpoints);
  NK_RUN(alpha_bn_counts);
  NK_RUN(alpha_bn_nan_stays_in_channel);
  NK_RUN(unmixtns_noise_generator);
  NK_RUN(unmixtns_lambda_values);
  NK_RUN(unmixtns_init_single_component);
  NK_RUN(unmixtns_init_components);
  NK_RUN(unmixtns_sequence);
  NK_RUN(unmixtns_zero_instance_mean);
  NK_RUN(unmixtns_lambda_zero_freezes);
  NK_RUN(unmixtns_var_clamped);
  NK_RUN(adab2n_eta_kappa_endpoints);
  NK_RUN(adab2n_eta_recursion);
  NK_RUN(adab2n_weights_formula);
  NK_RUN(adab2n_sequence_weighted);
  NK_RUN(adab2n_absent_tasks);
  NK_RUN(adab2n_plain_path);
  NK_RUN(adab2n_unequal_counts);
  NK_RUN(adab2n_zero_channels);
  NK_RUN(alpha_bn_invalid);
  NK_RUN(unmixtns_invalid);
  NK_RUN(adab2n_invalid);
  nk_context_destroy(actx);
  return nk_test_summary();
}
