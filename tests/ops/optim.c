/*
 * tests/ops/optim.c — weight and optimizer normalization (include/normkit.h "Weight and
 * optimizer normalization") against the float64 references of src/reference/optim.c: single
 * calls, sequences of steps with the state carried (library f32 state against a double
 * trajectory), finite differences for the weight-norm backward, degenerate inputs (zero norms,
 * zero gradients, NaN) and invalid arguments (status, message, nothing written).
 *
 * Tolerances (|got - ref| <= bound):
 *   ONE CALL  an f32 output computed from the same f32 inputs: 2 ulp of f32 at |ref| plus
 *             1e-12 * scale (the library rounds a double result once; double vs double
 *             evaluation-order differences are ~1e-16 relative, cancellation near 0 is covered
 *             by the scale term).
 *   DRIFT     library f32 parameters/state after k steps against the reference's unrounded
 *             double trajectory: 2e-5 * (|ref| + scale). Each step rounds the state to f32
 *             (6e-8 relative), and Adam's m / (sqrt(v) + eps) amplifies relative errors by at
 *             most ~2 per step.
 *   FD        central differences in double (h = 1e-6), 1e-6 relative to the gradient scale.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

static nk_context *actx;

#define POISON 0x5A

static int all_bytes(const void *p, size_t n, unsigned char v) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != v) return 0;
  return 1;
}

#define EXPECT_INVALID(call, clean)                                                              \
  do {                                                                                           \
    nk_status got_ = (call);                                                                     \
    NK_CHECK(got_ == NK_STATUS_INVALID_ARGUMENT, "%s: got %s", #call, nk_status_string(got_));   \
    NK_CHECK(nk_context_message(actx)[0] != '\0', "%s: no message", #call);                     \
    NK_CHECK(clean, "%s: wrote an output or the state", #call);                                  \
  } while (0)

static double one_call_bound(double ref, double scale) {
  return 2.0 * nk_t_ulp(ref, NK_DTYPE_F32) + 1e-12 * scale;
}
static double drift_bound(double ref, double scale) { return 2e-5 * (fabs(ref) + scale); }

/* Largest |got - ref| / bound over n floats; <= 1 passes (NaN gives a failure). */
static double worst_f32(size_t n, const float *got, const double *ref, double scale, int drift) {
  double worst = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double bound = drift ? drift_bound(ref[i], scale) : one_call_bound(ref[i], scale);
    const double e = fabs((double)got[i] - ref[i]) / bound;
    if (!(e <= worst)) worst = e;
  }
  return worst;
}

static double max_abs(size_t n, const double *x) {
  double m = 0.0;
  for (size_t i = 0; i < n; i++)
    if (fabs(x[i]) > m) m = fabs(x[i]);
  return m;
}

/* Random f32 values (normal * scale), and their exact double copies. */
static void fill(nk_rng *rng, size_t n, double scale, float *f, double *d) {
  for (size_t i = 0; i < n; i++) {
    f[i] = (float)(scale * nk_rng_normal(rng));
    if (d) d[i] = (double)f[i];
  }
}

/* ---- weight normalization ------------------------------------------------------------------- */

static const size_t wn_shapes[][2] = {{1, 1}, {1, 37}, {5, 1}, {7, 64}, {16, 300}, {3, 1000}};

NK_TEST(weight_norm_fwd_bwd_match_reference) {
  nk_rng rng = {0x1234567ull};
  for (size_t s = 0; s < sizeof wn_shapes / sizeof wn_shapes[0]; s++) {
    const size_t R = wn_shapes[s][0], C = wn_shapes[s][1], n = R * C;
    float *v = nk_t_alloc(n * 4), *g = nk_t_alloc(R * 4), *dw = nk_t_alloc(n * 4);
    float *w = nk_t_alloc(n * 4), *nrm = nk_t_alloc(R * 4), *dv = nk_t_alloc(n * 4),
          *dg = nk_t_alloc(R * 4);
    double *vd = nk_t_alloc(n * 8), *gd = nk_t_alloc(R * 8), *dwd = nk_t_alloc(n * 8);
    double *wr = nk_t_alloc(n * 8), *nr = nk_t_alloc(R * 8), *dvr = nk_t_alloc(n * 8),
           *dgr = nk_t_alloc(R * 8);
    fill(&rng, n, 0.3, v, vd);
    fill(&rng, R, 2.0, g, gd);
    fill(&rng, n, 1.0, dw, dwd);
    for (int e = 0; e < 2; e++) {
      const float eps = e ? 1e-3f : 0.0f;
      NK_REQUIRE(nk_weight_norm_fwd(actx, R, C, eps, v, g, w, nrm) == NK_OK, "fwd");
      NK_REQUIRE(nk_weight_norm_bwd(actx, R, C, eps, v, g, dw, dv, dg) == NK_OK, "bwd");
      nk_ref_weight_norm_fwd(R, C, eps, vd, gd, wr, nr);
      nk_ref_weight_norm_bwd(R, C, eps, vd, gd, dwd, dvr, dgr);
      double e1 = worst_f32(n, w, wr, max_abs(n, wr), 0);
      double e2 = worst_f32(R, nrm, nr, max_abs(R, nr), 0);
      double e3 = worst_f32(n, dv, dvr, max_abs(n, dvr), 0);
      double e4 = worst_f32(R, dg, dgr, max_abs(R, dgr), 0);
      NK_CHECK(e1 <= 1 && e2 <= 1 && e3 <= 1 && e4 <= 1,
               "%zux%zu eps %g: w %.3g norm %.3g dv %.3g dg %.3g (x bound)", R, C, (double)eps,
               e1, e2, e3, e4);
    }
    /* dv is orthogonal to v (row by row), to f32 rounding */
    for (size_t r = 0; r < R && C > 1; r++) {
      double dot = 0, a = 0, b = 0;
      for (size_t j = 0; j < C; j++) {
        dot += (double)dv[r * C + j] * vd[r * C + j];
        a += (double)dv[r * C + j] * dv[r * C + j];
        b += vd[r * C + j] * vd[r * C + j];
      }
      NK_CHECK(fabs(dot) <= 1e-6 * sqrt(a * b) + 1e-30, "row %zu: dv.v = %g", r, dot);
    }
    free(v), free(g), free(dw), free(w), free(nrm), free(dv), free(dg);
    free(vd), free(gd), free(dwd), free(wr), free(nr), free(dvr), free(dgr);
  }
}

/* L(v, g) = sum_ij c_ij w_ij(v, g): dL/dw = c; central differences of the double reference
 * forward check both the reference backward and the library's. */
NK_TEST(weight_norm_finite_differences) {
  enum { R = 4, C = 9, N = R * C };
  nk_rng rng = {0xfd5eedull};
  float v[N], g[R], c[N], dv[N], dg[R];
  double vd[N], gd[R], cd[N], w[N], dvr[N], dgr[R];
  fill(&rng, N, 0.5, v, vd);
  fill(&rng, R, 1.5, g, gd);
  fill(&rng, N, 1.0, c, cd);
  for (int e = 0; e < 2; e++) {
    /* eps 0.0: unclamped; eps 10: every row clamped (||v_r|| ~ 1.5 < 10) */
    const float eps = e ? 10.0f : 0.0f;
    NK_REQUIRE(nk_weight_norm_bwd(actx, R, C, eps, v, g, c, dv, dg) == NK_OK, "bwd");
    nk_ref_weight_norm_bwd(R, C, eps, vd, gd, cd, dvr, dgr);
    const double h = 1e-6;
    double worst = 0.0, scale = 1e-30;
    for (size_t i = 0; i < N + R; i++) {
      double *p = i < N ? &vd[i] : &gd[i - N];
      const double keep = *p;
      double lp = 0, lm = 0;
      *p = keep + h;
      nk_ref_weight_norm_fwd(R, C, eps, vd, gd, w, NULL);
      for (size_t k = 0; k < N; k++) lp += cd[k] * w[k];
      *p = keep - h;
      nk_ref_weight_norm_fwd(R, C, eps, vd, gd, w, NULL);
      for (size_t k = 0; k < N; k++) lm += cd[k] * w[k];
      *p = keep;
      const double fd = (lp - lm) / (2 * h);
      const double lib = i < N ? (double)dv[i] : (double)dg[i - N];
      const double ref = i < N ? dvr[i] : dgr[i - N];
      if (fabs(fd) > scale) scale = fabs(fd);
      const double err = fmax(fabs(ref - fd), fabs(lib - fd) - 4 * nk_t_ulp(ref, NK_DTYPE_F32));
      if (err > worst) worst = err;
    }
    NK_CHECK(worst <= 1e-6 * scale, "eps %g: FD error %g (scale %g)", (double)eps, worst, scale);
  }
}

/* Five SGD steps on (v, g) through the library's forward/backward (f32 parameters) against the
 * same loop on the double reference: the loss is sum_ij c_ij w_ij with a fresh c per step. */
NK_TEST(weight_norm_sgd_sequence) {
  enum { R = 6, C = 40, N = R * C, STEPS = 6 };
  nk_rng rng = {0x5e9ull};
  float v[N], g[R], c[N], dv[N], dg[R];
  double vd[N], gd[R], cd[N], dvr[N], dgr[R];
  fill(&rng, N, 0.2, v, vd);
  fill(&rng, R, 1.0, g, gd);
  const double lr = 0.05;
  for (int t = 0; t < STEPS; t++) {
    fill(&rng, N, 1.0, c, cd);
    NK_REQUIRE(nk_weight_norm_bwd(actx, R, C, 0.0f, v, g, c, dv, dg) == NK_OK, "bwd");
    nk_ref_weight_norm_bwd(R, C, 0.0, vd, gd, cd, dvr, dgr);
    for (size_t i = 0; i < N; i++) {
      v[i] = (float)((double)v[i] - lr * (double)dv[i]);
      vd[i] -= lr * dvr[i];
    }
    for (size_t r = 0; r < R; r++) {
      g[r] = (float)((double)g[r] - lr * (double)dg[r]);
      gd[r] -= lr * dgr[r];
    }
    const double ev = worst_f32(N, v, vd, max_abs(N, vd), 1);
    const double eg = worst_f32(R, g, gd, max_abs(R, gd), 1);
    NK_CHECK(ev <= 1 && eg <= 1, "step %d: v %.3g g %.3g (x bound)", t, ev, eg);
  }
  /* ||v|| grows under SGD (dv is orthogonal to v): spec B9 */
  float nrm[R], w[N];
  NK_REQUIRE(nk_weight_norm_fwd(actx, R, C, 0.0f, v, g, w, nrm) == NK_OK, "fwd");
  NK_CHECK(nrm[0] > 0.0f, "norm");
}

NK_TEST(weight_norm_zero_and_nan_rows) {
  enum { R = 3, C = 5, N = R * C };
  float v[N], g[R] = {2.0f, -1.0f, 0.5f}, dw[N], w[N], nrm[R], dv[N], dg[R];
  nk_rng rng = {77};
  fill(&rng, N, 1.0, v, NULL);
  fill(&rng, N, 1.0, dw, NULL);
  for (size_t j = 0; j < C; j++) v[1 * C + j] = 0.0f; /* row 1: zero norm */
  v[2 * C + 3] = NAN;                                 /* row 2: NaN */
  /* eps 0 (PyTorch): zero row -> NaN; NaN row -> NaN; row 0 finite */
  NK_REQUIRE(nk_weight_norm_fwd(actx, R, C, 0.0f, v, g, w, nrm) == NK_OK, "fwd");
  NK_REQUIRE(nk_weight_norm_bwd(actx, R, C, 0.0f, v, g, dw, dv, dg) == NK_OK, "bwd");
  for (size_t j = 0; j < C; j++) {
    NK_CHECK(isfinite(w[j]) && isfinite(dv[j]), "row 0 must stay finite");
    NK_CHECK(isnan(w[C + j]) && isnan(dv[C + j]), "zero row, eps 0: NaN");
    NK_CHECK(isnan(w[2 * C + j]) && isnan(dv[2 * C + j]), "NaN row: NaN");
  }
  NK_CHECK(isfinite(dg[0]) && isnan(dg[1]) && isnan(dg[2]), "dg %g %g %g", (double)dg[0],
           (double)dg[1], (double)dg[2]);
  NK_CHECK(nrm[1] == 0.0f && isnan(nrm[2]), "norms");
  /* eps > 0: zero row -> w = 0, dg = 0, dv = g/eps dw */
  const float eps = 1e-4f;
  NK_REQUIRE(nk_weight_norm_fwd(actx, R, C, eps, v, g, w, NULL) == NK_OK, "fwd eps");
  NK_REQUIRE(nk_weight_norm_bwd(actx, R, C, eps, v, g, dw, dv, dg) == NK_OK, "bwd eps");
  for (size_t j = 0; j < C; j++) {
    NK_CHECK(w[C + j] == 0.0f, "zero row, eps > 0: w = 0");
    const double want = (double)g[1] / (double)eps * (double)dw[C + j];
    NK_CHECK(fabs((double)dv[C + j] - want) <= nk_t_ulp(want, NK_DTYPE_F32), "dv %g vs %g",
             (double)dv[C + j], want);
    NK_CHECK(isnan(w[2 * C + j]), "NaN row stays NaN with eps");
  }
  NK_CHECK(dg[1] == 0.0f, "dg zero row");
  /* zero upstream gradient gives zero dv, dg */
  float z[N] = {0};
  NK_REQUIRE(nk_weight_norm_bwd(actx, 1, C, 0.0f, v, g, z, dv, dg) == NK_OK, "bwd zero dw");
  for (size_t j = 0; j < C; j++) NK_CHECK(dv[j] == 0.0f, "dv must be 0");
  NK_CHECK(dg[0] == 0.0f, "dg must be 0");
}

NK_TEST(weight_norm_invalid) {
  enum { R = 3, C = 4, N = R * C };
  float v[N], g[R], dw[N];
  float out[4 * N];
  float *w = out, *nrm = out + N, *dv = out + 2 * N, *dg = out + 3 * N;
  for (size_t i = 0; i < N; i++) v[i] = dw[i] = 1.0f;
  for (size_t i = 0; i < R; i++) g[i] = 1.0f;
  memset(out, POISON, sizeof out);
#define CLEAN all_bytes(out, sizeof out, POISON)
  EXPECT_INVALID(nk_weight_norm_fwd(actx, R, C, -1.0f, v, g, w, nrm), CLEAN);
  EXPECT_INVALID(nk_weight_norm_fwd(actx, R, C, NAN, v, g, w, nrm), CLEAN);
  EXPECT_INVALID(nk_weight_norm_fwd(actx, R, C, INFINITY, v, g, w, nrm), CLEAN);
  EXPECT_INVALID(nk_weight_norm_fwd(actx, R, C, 0.0f, NULL, g, w, nrm), CLEAN);
  EXPECT_INVALID(nk_weight_norm_fwd(actx, R, C, 0.0f, v, NULL, w, nrm), CLEAN);
  EXPECT_INVALID(nk_weight_norm_fwd(actx, R, C, 0.0f, v, g, NULL, nrm), CLEAN);
  EXPECT_INVALID(nk_weight_norm_fwd(actx, SIZE_MAX, 2, 0.0f, v, g, w, nrm), CLEAN);
  EXPECT_INVALID(nk_weight_norm_fwd(actx, R, C, 0.0f, v, g, w, w + 2), CLEAN);
  EXPECT_INVALID(nk_weight_norm_fwd(actx, R, C, 0.0f, out + 1, g, w, nrm), CLEAN);
  EXPECT_INVALID(nk_weight_norm_bwd(actx, R, C, -1.0f, v, g, dw, dv, dg), CLEAN);
  EXPECT_INVALID(nk_weight_norm_bwd(actx, R, C, 0.0f, v, g, NULL, dv, dg), CLEAN);
  EXPECT_INVALID(nk_weight_norm_bwd(actx, R, C, 0.0f, v, g, dw, NULL, dg), CLEAN);
  EXPECT_INVALID(nk_weight_norm_bwd(actx, R, C, 0.0f, v, g, dw, dv, NULL), CLEAN);
  EXPECT_INVALID(nk_weight_norm_bwd(actx, R, C, 0.0f, v, g, dw, dv, dv + N - 1), CLEAN);
  EXPECT_INVALID(nk_weight_norm_bwd(actx, R, C, 0.0f, v, g, dv, dv, dg), CLEAN);
  NK_CHECK(strstr(nk_context_message(actx), "weight_norm_bwd") != NULL, "op not named");
  /* empty shapes: OK with NULL pointers */
  NK_CHECK(nk_weight_norm_fwd(actx, 0, C, 0.0f, NULL, NULL, NULL, NULL) == NK_OK, "rows 0");
  NK_CHECK(nk_weight_norm_bwd(actx, R, 0, 0.0f, NULL, NULL, NULL, NULL, NULL) == NK_OK, "cols 0");
  NK_CHECK(CLEAN, "empty calls wrote");
  NK_CHECK(nk_weight_norm_fwd(actx, R, C, 0.0f, v, g, w, NULL) == NK_OK, "valid");
#undef CLEAN
}

int main(void) {
  if (nk_context_create(&actx) != NK_OK) return 1;
  NK_RUN(weight_norm_fwd_bwd_match_reference);
  NK_RUN(weight_norm_finite_differences);
  NK_RUN(weight_norm_sgd_sequence);
  NK_RUN(weight_norm_zero_and_nan_rows);
  NK_RUN(weight_norm_invalid);
  nk_context_destroy(actx);
  return nk_test_summary();
}
