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
    const double diff = fabs((double)got[i] - ref[i]);
    const double e = diff == 0.0 ? 0.0 : diff / bound;
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

/* ---- AdamP / SGDP --------------------------------------------------------------------------- */

enum grad_kind { G_RANDOM, G_TANGENT, G_LAYER, G_ZERO };

/* A gradient for the current (reference) weights th (rows x cols; rows 0 = one row):
 *   G_RANDOM   normal;
 *   G_TANGENT  normal minus its radial part, row by row (a scale-invariant weight's gradient:
 *              every channel cosine ~ 1e-7, the channel view passes);
 *   G_LAYER    per row: a tangent part of norm 0.5/||th_r|| plus s_r th_r/||th_r||^2 with
 *              s_r = +-1 alternating (rows even): each channel cosine ~ 0.89 fails the channel
 *              test, but <g, th> over the whole tensor is sum_r s_r = 0: the layer view passes;
 *   G_ZERO     zeros. */
static void make_grad(nk_rng *rng, enum grad_kind kind, size_t rows, size_t cols,
                      const double *th, float *g, double *gd) {
  const size_t R = rows ? rows : 1, n = R * cols;
  for (size_t i = 0; i < n; i++) gd[i] = kind == G_ZERO ? 0.0 : nk_rng_normal(rng);
  if (kind == G_TANGENT || kind == G_LAYER) {
    for (size_t r = 0; r < R; r++) {
      double *gr = gd + r * cols;
      const double *tr = th + r * cols;
      double tt = 0, gt = 0;
      for (size_t j = 0; j < cols; j++) tt += tr[j] * tr[j], gt += gr[j] * tr[j];
      for (size_t j = 0; j < cols; j++) gr[j] -= gt / tt * tr[j];
      if (kind == G_LAYER) {
        double gg = 0;
        for (size_t j = 0; j < cols; j++) gg += gr[j] * gr[j];
        const double scale = 0.5 / sqrt(tt) / sqrt(gg), s = (r % 2) ? -1.0 : 1.0;
        for (size_t j = 0; j < cols; j++) gr[j] = gr[j] * scale + s * tr[j] / tt;
      }
    }
  }
  for (size_t i = 0; i < n; i++) {
    g[i] = (float)gd[i];
    gd[i] = (double)g[i];
  }
}

static const char *view_name(int v) { return v == 0 ? "none" : v == 1 ? "channel" : "layer"; }

typedef struct optim_case {
  const char *name;
  size_t rows, cols; /* rows 0: an ndim <= 1 tensor of cols elements */
  enum grad_kind kind;
  int want_view; /* -1: whatever the reference says (checked to agree) */
} optim_case;

static const optim_case optim_cases[] = {
    {"random_2d", 8, 50, G_RANDOM, -1},   {"tangent_channel", 8, 50, G_TANGENT, 1},
    {"layer_only", 6, 40, G_LAYER, 2},   {"bias_1d", 0, 33, G_TANGENT, 0},
    {"single_row", 1, 64, G_TANGENT, 1}, {"zero_grad", 4, 16, G_ZERO, 1},
};

NK_TEST(adamp_sequences) {
  enum { STEPS = 8 };
  for (size_t c = 0; c < sizeof optim_cases / sizeof optim_cases[0]; c++) {
    const optim_case *oc = &optim_cases[c];
    const size_t n = (oc->rows ? oc->rows : 1) * oc->cols;
    for (int variant = 0; variant < 2; variant++) {
      nk_rng rng = {0xada0ull + 17 * c + variant};
      nk_adamp_desc d = nk_adamp_desc_default();
      d.lr = 0.01;
      d.weight_decay = variant ? 0.05 : 0.0;
      d.nesterov = variant;
      const nk_ref_adamp_hp hp = {d.lr,           d.beta1, d.beta2,    d.eps,
                                  d.weight_decay, d.delta, d.wd_ratio, d.nesterov};
      float *p = nk_t_alloc(n * 4), *g = nk_t_alloc(n * 4), *m = nk_t_alloc(n * 4),
            *v = nk_t_alloc(n * 4);
      double *pd = nk_t_alloc(n * 8), *gd = nk_t_alloc(n * 8), *md = nk_t_alloc(n * 8),
             *vd = nk_t_alloc(n * 8), *tmp = nk_t_alloc(n * 8);
      fill(&rng, n, 0.5, p, pd);
      int64_t step = 0;
      double stepd = 0;
      for (int t = 0; t < STEPS; t++) {
        make_grad(&rng, oc->kind, oc->rows, oc->cols, pd, g, gd);
        nk_optim_projection view = (nk_optim_projection)99;
        NK_REQUIRE(nk_adamp_step(actx, &d, n, oc->rows, p, g, m, v, &step, &view) == NK_OK,
                   "%s: %s", oc->name, nk_context_message(actx));
        const int rv = nk_ref_adamp_step(n, oc->rows, &hp, pd, gd, md, vd, &stepd);
        NK_CHECK((int)view == rv, "%s step %d: view %s, reference %s", oc->name, t,
                 view_name((int)view), view_name(rv));
        if (oc->want_view >= 0)
          NK_CHECK(rv == oc->want_view, "%s step %d: reference view %s, expected %s", oc->name,
                   t, view_name(rv), view_name(oc->want_view));
        NK_CHECK(step == t + 1 && stepd == t + 1, "step counter");
        const double ep = worst_f32(n, p, pd, max_abs(n, pd), 1);
        const double em = worst_f32(n, m, md, max_abs(n, md), 1);
        const double ev = worst_f32(n, v, vd, max_abs(n, vd), 1);
        NK_CHECK(ep <= 1 && em <= 1 && ev <= 1,
                 "%s nesterov %d step %d: param %.3g m %.3g v %.3g (x bound)", oc->name, variant,
                 t, ep, em, ev);
      }
      (void)tmp;
      free(p), free(g), free(m), free(v), free(pd), free(gd), free(md), free(vd), free(tmp);
    }
  }
}

NK_TEST(sgdp_sequences) {
  enum { STEPS = 8 };
  for (size_t c = 0; c < sizeof optim_cases / sizeof optim_cases[0]; c++) {
    const optim_case *oc = &optim_cases[c];
    const size_t n = (oc->rows ? oc->rows : 1) * oc->cols;
    for (int variant = 0; variant < 3; variant++) {
      nk_rng rng = {0x5d90ull + 31 * c + variant};
      nk_sgdp_desc d = nk_sgdp_desc_default(0.05);
      d.momentum = variant ? 0.9 : 0.0;
      d.dampening = variant == 2 ? 0.1 : 0.0;
      d.weight_decay = variant ? 1e-2 : 0.0;
      d.nesterov = variant == 1;
      const nk_ref_sgdp_hp hp = {d.lr,           d.momentum, d.dampening, d.eps,
                                 d.weight_decay, d.delta,    d.wd_ratio,  d.nesterov};
      float *p = nk_t_alloc(n * 4), *g = nk_t_alloc(n * 4), *b = nk_t_alloc(n * 4);
      double *pd = nk_t_alloc(n * 8), *gd = nk_t_alloc(n * 8), *bd = nk_t_alloc(n * 8);
      fill(&rng, n, 0.5, p, pd);
      for (int t = 0; t < STEPS; t++) {
        make_grad(&rng, oc->kind, oc->rows, oc->cols, pd, g, gd);
        nk_optim_projection view = (nk_optim_projection)99;
        NK_REQUIRE(nk_sgdp_step(actx, &d, n, oc->rows, p, g, b, &view) == NK_OK, "%s: %s",
                   oc->name, nk_context_message(actx));
        const int rv = nk_ref_sgdp_step(n, oc->rows, &hp, pd, gd, bd);
        NK_CHECK((int)view == rv, "%s step %d: view %s, reference %s", oc->name, t,
                 view_name((int)view), view_name(rv));
        if (oc->want_view >= 0)
          NK_CHECK(rv == oc->want_view, "%s step %d: reference view %s, expected %s", oc->name,
                   t, view_name(rv), view_name(oc->want_view));
        const double ep = worst_f32(n, p, pd, max_abs(n, pd), 1);
        const double eb = worst_f32(n, b, bd, max_abs(n, bd) + 1e-30, 1);
        NK_CHECK(ep <= 1 && eb <= 1, "%s variant %d step %d: param %.3g buf %.3g (x bound)",
                 oc->name, variant, t, ep, eb);
      }
      free(p), free(g), free(b), free(pd), free(gd), free(bd);
    }
  }
}

/* The projected update is orthogonal to each row (channel view): with no decay, one SGDP step
 * from a tangent gradient changes ||theta_r|| only at second order (||theta_r + d||^2 =
 * ||theta_r||^2 + ||d||^2 when <theta_r, d> = 0). And a radial gradient that the test cannot
 * see as scale-invariant (cos 1) is not projected. */
NK_TEST(sgdp_projection_geometry) {
  enum { R = 4, C = 32, N = R * C };
  nk_rng rng = {0x9e0ull};
  float p[N], g[N], b[N] = {0}, p0[N];
  double pd[N], gd[N];
  fill(&rng, N, 1.0, p, pd);
  memcpy(p0, p, sizeof p);
  make_grad(&rng, G_TANGENT, R, C, pd, g, gd);
  nk_sgdp_desc d = nk_sgdp_desc_default(0.1);
  nk_optim_projection view;
  NK_REQUIRE(nk_sgdp_step(actx, &d, N, R, p, g, b, &view) == NK_OK, "step");
  NK_CHECK(view == NK_OPTIM_PROJECTION_CHANNEL, "view %d", (int)view);
  for (size_t r = 0; r < R; r++) {
    double dot = 0, n0 = 0, nd = 0;
    for (size_t j = 0; j < C; j++) {
      const double dd = (double)p[r * C + j] - (double)p0[r * C + j];
      dot += dd * p0[r * C + j], n0 += (double)p0[r * C + j] * p0[r * C + j], nd += dd * dd;
    }
    NK_CHECK(fabs(dot) <= 1e-5 * sqrt(n0 * nd), "row %zu: <delta, theta> = %g", r, dot);
  }
  /* g = theta: cos 1 everywhere, no projection, plain SGD */
  memcpy(p, p0, sizeof p);
  memset(b, 0, sizeof b);
  NK_REQUIRE(nk_sgdp_step(actx, &d, N, R, p, p0, b, &view) == NK_OK, "step");
  NK_CHECK(view == NK_OPTIM_PROJECTION_NONE, "view %d", (int)view);
  for (size_t i = 0; i < N; i++)
    NK_CHECK(p[i] == (float)((double)p0[i] - 0.1 * (double)p0[i]), "plain SGD at %zu", i);
}

/* Zero weights (cos 0: projected, the projection is the identity, wd_ratio applies), zero
 * gradients (Adam direction 0: only the decay moves theta), NaN gradients (that element NaN,
 * the cosine NaN: no projection anywhere, other elements take the unprojected update). */
NK_TEST(adamp_degenerate_inputs) {
  enum { R = 2, C = 8, N = R * C };
  nk_adamp_desc d = nk_adamp_desc_default();
  d.weight_decay = 0.5;
  float p[N] = {0}, g[N], m[N] = {0}, v[N] = {0};
  int64_t step = 0;
  nk_optim_projection view;
  for (size_t i = 0; i < N; i++) g[i] = (float)(0.1 * (double)(i + 1));
  NK_REQUIRE(nk_adamp_step(actx, &d, N, R, p, g, m, v, &step, &view) == NK_OK, "zero theta");
  NK_CHECK(view == NK_OPTIM_PROJECTION_CHANNEL, "zero theta view %d", (int)view);
  for (size_t i = 0; i < N; i++) /* step 1: u = m/(sqrt(v)/sqrt(bc2)+eps) ~ sign(g) */
    NK_CHECK(fabs((double)p[i] + 1e-3) < 1e-9, "zero theta: p[%zu] = %g", i, (double)p[i]);
  /* zero gradient: from a fresh state, only the decay with wd_ratio (cos 0: projected) */
  float q[N], q0[N], z[N] = {0};
  for (size_t i = 0; i < N; i++) q[i] = q0[i] = (float)(i % 3) - 1.0f;
  memset(m, 0, sizeof m), memset(v, 0, sizeof v), step = 0;
  NK_REQUIRE(nk_adamp_step(actx, &d, N, R, q, z, m, v, &step, &view) == NK_OK, "zero grad");
  NK_CHECK(view == NK_OPTIM_PROJECTION_CHANNEL, "zero grad view %d", (int)view);
  const double decay = 1.0 - d.lr * d.weight_decay * d.wd_ratio;
  for (size_t i = 0; i < N; i++)
    NK_CHECK(q[i] == (float)((double)q0[i] * decay), "zero grad: q[%zu] = %g", i, (double)q[i]);
  /* NaN gradient element */
  nk_rng rng = {5};
  double qd[N], gd[N], md[N] = {0}, vd[N] = {0}, sd = 0;
  fill(&rng, N, 1.0, q, qd);
  make_grad(&rng, G_TANGENT, R, C, qd, g, gd);
  g[3] = NAN;
  gd[3] = NAN;
  memset(m, 0, sizeof m), memset(v, 0, sizeof v), step = 0;
  NK_REQUIRE(nk_adamp_step(actx, &d, N, R, q, g, m, v, &step, &view) == NK_OK, "NaN grad");
  const nk_ref_adamp_hp hp = {d.lr,           d.beta1, d.beta2,    d.eps,
                              d.weight_decay, d.delta, d.wd_ratio, d.nesterov};
  const int rv = nk_ref_adamp_step(N, R, &hp, qd, gd, md, vd, &sd);
  NK_CHECK(view == NK_OPTIM_PROJECTION_NONE && rv == 0, "NaN grad: view %d ref %d", (int)view,
           rv);
  for (size_t i = 0; i < N; i++) {
    if (i == 3) {
      NK_CHECK(isnan(q[i]) && isnan(m[i]) && isnan(v[i]), "NaN element must be NaN");
      continue;
    }
    NK_CHECK(fabs((double)q[i] - qd[i]) <= drift_bound(qd[i], 1.0), "q[%zu] %g vs %g", i,
             (double)q[i], qd[i]);
  }
}

NK_TEST(optim_steps_invalid) {
  enum { R = 3, C = 4, N = R * C };
  float g[N];
  for (size_t i = 0; i < N; i++) g[i] = 1.0f;
  float buf[4 * N];
  float *p = buf, *m = buf + N, *v = buf + 2 * N, *b = buf + 3 * N;
  int64_t step;
  nk_optim_projection view;
  memset(buf, POISON, sizeof buf);
  memset(&step, POISON, sizeof step);
  memset(&view, POISON, sizeof view);
  step = 4;
  const int64_t step0 = step;
#define CLEAN                                                                                    \
  (all_bytes(buf, sizeof buf, POISON) && step == step0 && all_bytes(&view, sizeof view, POISON))
  const nk_adamp_desc d0 = nk_adamp_desc_default();
  nk_adamp_desc d = d0;
#define ADAMP(...) nk_adamp_step(actx, __VA_ARGS__)
  EXPECT_INVALID(ADAMP(NULL, N, R, p, g, m, v, &step, &view), CLEAN);
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, v, NULL, &view), CLEAN);
  EXPECT_INVALID(ADAMP(&d, N, R, NULL, g, m, v, &step, &view), CLEAN);
  EXPECT_INVALID(ADAMP(&d, N, R, p, NULL, m, v, &step, &view), CLEAN);
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, NULL, v, &step, &view), CLEAN);
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, NULL, &step, &view), CLEAN);
  EXPECT_INVALID(ADAMP(&d, N, 5, p, g, m, v, &step, &view), CLEAN); /* 5 does not divide 12 */
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, m, &step, &view), CLEAN);
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, m + 1, &step, &view), CLEAN);
  EXPECT_INVALID(ADAMP(&d, N, R, p, p, m, v, &step, &view), CLEAN);
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, v, &step, (nk_optim_projection *)(void *)(p + 3)), CLEAN);
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, v, (int64_t *)(void *)m, &view), CLEAN);
  d.lr = -1;
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, v, &step, &view), CLEAN);
  d = d0, d.lr = INFINITY;
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, v, &step, &view), CLEAN);
  d = d0, d.beta1 = 1.0;
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, v, &step, &view), CLEAN);
  d = d0, d.beta2 = NAN;
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, v, &step, &view), CLEAN);
  d = d0, d.eps = 0.0;
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, v, &step, &view), CLEAN);
  d = d0, d.weight_decay = -0.1;
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, v, &step, &view), CLEAN);
  d = d0, d.delta = NAN;
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, v, &step, &view), CLEAN);
  d = d0, d.wd_ratio = -1;
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, v, &step, &view), CLEAN);
  d = d0;
  step = -1;
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, v, &step, &view), step == -1);
  step = INT64_MAX;
  EXPECT_INVALID(ADAMP(&d, N, R, p, g, m, v, &step, &view), step == INT64_MAX);
  step = step0;
  NK_CHECK(strstr(nk_context_message(actx), "adamp_step") != NULL, "op not named");
#undef ADAMP
  nk_sgdp_desc s0 = nk_sgdp_desc_default(0.1), s = s0;
#define SGDP(...) nk_sgdp_step(actx, __VA_ARGS__)
  EXPECT_INVALID(SGDP(NULL, N, R, p, g, b, &view), CLEAN);
  EXPECT_INVALID(SGDP(&s, N, R, NULL, g, b, &view), CLEAN);
  EXPECT_INVALID(SGDP(&s, N, R, p, NULL, b, &view), CLEAN);
  EXPECT_INVALID(SGDP(&s, N, R, p, g, NULL, &view), CLEAN);
  EXPECT_INVALID(SGDP(&s, N, 7, p, g, b, &view), CLEAN);
  EXPECT_INVALID(SGDP(&s, N, R, p, g, p + 1, &view), CLEAN);
  EXPECT_INVALID(SGDP(&s, N, R, p, b, b, &view), CLEAN);
  s.momentum = 1.0;
  EXPECT_INVALID(SGDP(&s, N, R, p, g, b, &view), CLEAN);
  s = s0, s.dampening = 1.5;
  EXPECT_INVALID(SGDP(&s, N, R, p, g, b, &view), CLEAN);
  s = s0, s.lr = NAN;
  EXPECT_INVALID(SGDP(&s, N, R, p, g, b, &view), CLEAN);
  s = s0, s.eps = -1e-8;
  EXPECT_INVALID(SGDP(&s, N, R, p, g, b, &view), CLEAN);
  s = s0, s.weight_decay = NAN;
  EXPECT_INVALID(SGDP(&s, N, R, p, g, b, &view), CLEAN);
  NK_CHECK(strstr(nk_context_message(actx), "sgdp_step") != NULL, "op not named");
#undef SGDP
  /* n == 0: AdamP's counter advances, nothing else is touched */
  NK_CHECK(nk_adamp_step(actx, &d0, 0, 0, NULL, NULL, NULL, NULL, &step, NULL) == NK_OK, "n 0");
  NK_CHECK(step == step0 + 1, "n 0: step");
  NK_CHECK(nk_sgdp_step(actx, &s0, 0, 0, NULL, NULL, NULL, NULL) == NK_OK, "n 0");
  NK_CHECK(all_bytes(buf, sizeof buf, POISON), "n 0 wrote");
#undef CLEAN
}

/* ---- Normalize-and-Project ------------------------------------------------------------------ */

/* Six steps of "update, then project" per mode: the update is a random step scaled by the
 * schedule's lr(t); after each step the reference projects the library's pre-projection weights
 * (in double) and the library's projected f32 weights must match it to the one-call bound; the
 * projected norms must stay at rho. */
NK_TEST(nap_sequence) {
  enum { R = 6, C = 30, N = R * C, STEPS = 6 };
  for (int mode = 0; mode < 2; mode++) {
    nk_rng rng = {0x4a9ull + mode};
    float w[N], upd[N];
    double wd[N], rho_ref[R], rho[R], norm[R];
    fill(&rng, N, 0.3, w, wd);
    const size_t groups = mode ? R : 1;
    NK_REQUIRE(nk_nap_norms(actx, (nk_nap_mode)mode, R, C, w, rho) == NK_OK, "norms");
    nk_ref_nap_norms(mode, R, C, wd, rho_ref);
    for (size_t k = 0; k < groups; k++)
      NK_CHECK(fabs(rho[k] - rho_ref[k]) <= 1e-14 * rho_ref[k], "rho[%zu] %.17g vs %.17g", k,
               rho[k], rho_ref[k]);
    const nk_nap_schedule sch = {NK_NAP_SCHEDULE_COSINE, 0.1, 0.01, 2, STEPS};
    for (int t = 0; t < STEPS; t++) {
      double lr;
      NK_REQUIRE(nk_nap_schedule_lr(actx, &sch, t, &lr) == NK_OK, "lr");
      for (size_t i = 0; i < N; i++) {
        upd[i] = (float)(lr * nk_rng_normal(&rng));
        w[i] = (float)((double)w[i] + (double)upd[i]);
      }
      for (size_t i = 0; i < N; i++) wd[i] = (double)w[i]; /* same pre-projection weights */
      NK_REQUIRE(nk_nap_project(actx, (nk_nap_mode)mode, R, C, w, rho, norm) == NK_OK, "project");
      nk_ref_nap_project(mode, R, C, wd, rho_ref);
      const double e = worst_f32(N, w, wd, max_abs(N, wd), 0);
      NK_CHECK(e <= 1, "mode %d step %d: w %.3g (x bound)", mode, t, e);
      double after[R];
      NK_REQUIRE(nk_nap_norms(actx, (nk_nap_mode)mode, R, C, w, after) == NK_OK, "norms");
      for (size_t k = 0; k < groups; k++)
        NK_CHECK(fabs(after[k] - rho[k]) <= 1e-6 * rho[k], "mode %d step %d group %zu: %g vs %g",
                 mode, t, k, after[k], rho[k]);
    }
  }
}

NK_TEST(nap_zero_and_nan_groups) {
  enum { R = 3, C = 4, N = R * C };
  float w[N];
  for (size_t i = 0; i < N; i++) w[i] = (float)i + 1.0f;
  for (size_t j = 0; j < C; j++) w[C + j] = 0.0f; /* row 1: zero */
  w[2 * C + 1] = INFINITY;                        /* row 2: inf */
  const double rho[R] = {2.0, 3.0, 4.0};
  double norm[R];
  NK_REQUIRE(nk_nap_project(actx, NK_NAP_PER_CHANNEL, R, C, w, rho, norm) == NK_OK, "project");
  double n0 = 0;
  for (size_t j = 0; j < C; j++) n0 += (double)w[j] * w[j];
  NK_CHECK(fabs(sqrt(n0) - 2.0) < 1e-6, "row 0 norm %g", sqrt(n0));
  for (size_t j = 0; j < C; j++) {
    NK_CHECK(w[C + j] == 0.0f, "zero row must stay 0");
    NK_CHECK(isnan(w[2 * C + j]), "inf row must become NaN");
  }
  NK_CHECK(norm[1] == 0.0 && isinf(norm[2]), "norms before: %g %g", norm[1], norm[2]);
  /* per layer: the non-finite element makes the whole tensor NaN */
  float v[N];
  for (size_t i = 0; i < N; i++) v[i] = 1.0f;
  v[5] = NAN;
  NK_REQUIRE(nk_nap_project(actx, NK_NAP_PER_LAYER, R, C, v, rho, NULL) == NK_OK, "layer");
  for (size_t i = 0; i < N; i++) NK_CHECK(isnan(v[i]), "layer NaN at %zu", i);
  /* rho 0 projects to zero */
  for (size_t i = 0; i < N; i++) v[i] = 1.0f;
  const double zero = 0.0;
  NK_REQUIRE(nk_nap_project(actx, NK_NAP_PER_LAYER, R, C, v, &zero, NULL) == NK_OK, "rho 0");
  for (size_t i = 0; i < N; i++) NK_CHECK(v[i] == 0.0f, "rho 0 at %zu", i);
}

NK_TEST(nap_schedules) {
  const nk_nap_schedule_kind kinds[] = {NK_NAP_SCHEDULE_CONSTANT, NK_NAP_SCHEDULE_LINEAR,
                                        NK_NAP_SCHEDULE_COSINE};
  for (int k = 0; k < 3; k++) {
    const nk_nap_schedule s = {kinds[k], 0.3, 0.003, 10, 110};
    double prev = INFINITY;
    for (int64_t t = 0; t <= 130; t++) {
      double lr;
      NK_REQUIRE(nk_nap_schedule_lr(actx, &s, t, &lr) == NK_OK, "lr");
      const double ref = nk_ref_nap_schedule_lr(k, 0.3, 0.003, 10, 110, (double)t);
      NK_CHECK(fabs(lr - ref) <= 4 * DBL_EPSILON * 0.3, "kind %d t %lld: %.17g vs %.17g", k,
               (long long)t, lr, ref);
      if (t >= 10) {
        NK_CHECK(lr <= prev, "kind %d t %lld: not monotone after warmup", k, (long long)t);
        prev = lr;
      }
    }
    double lr;
    NK_REQUIRE(nk_nap_schedule_lr(actx, &s, 0, &lr) == NK_OK && lr == 0.0, "warmup starts at 0");
    NK_REQUIRE(nk_nap_schedule_lr(actx, &s, 10, &lr) == NK_OK && lr == 0.3, "end of warmup");
    NK_REQUIRE(nk_nap_schedule_lr(actx, &s, 500, &lr) == NK_OK, "late");
    NK_CHECK(lr == (k == 0 ? 0.3 : 0.003), "kind %d late lr %g", k, lr);
  }
  /* layer-wise factor */
  double l;
  NK_REQUIRE(nk_nap_layer_lr(actx, 0.1, 2.0, 4.0, 2.0, &l) == NK_OK, "layer lr");
  NK_CHECK(fabs(l - 0.025) < 1e-17, "SGD: %g", l);
  NK_REQUIRE(nk_nap_layer_lr(actx, 0.1, 2.0, 4.0, 1.0, &l) == NK_OK, "layer lr");
  NK_CHECK(fabs(l - 0.05) < 1e-17, "Adam: %g", l);
}

NK_TEST(nap_invalid) {
  enum { R = 3, C = 4, N = R * C };
  float w[N];
  double out[2 * R];
  for (size_t i = 0; i < N; i++) w[i] = 1.0f;
  float wp[N];
  memset(wp, POISON, sizeof wp);
  memset(out, POISON, sizeof out);
  const double rho[R] = {1, 1, 1};
  double rho_bad[R] = {1, -1, 1};
#define CLEAN (all_bytes(out, sizeof out, POISON) && all_bytes(wp, sizeof wp, POISON))
  EXPECT_INVALID(nk_nap_norms(actx, (nk_nap_mode)7, R, C, w, out), CLEAN);
  EXPECT_INVALID(nk_nap_norms(actx, NK_NAP_PER_CHANNEL, R, C, NULL, out), CLEAN);
  EXPECT_INVALID(nk_nap_norms(actx, NK_NAP_PER_CHANNEL, R, C, w, NULL), CLEAN);
  EXPECT_INVALID(nk_nap_norms(actx, NK_NAP_PER_CHANNEL, SIZE_MAX, 3, w, out), CLEAN);
  EXPECT_INVALID(nk_nap_norms(actx, NK_NAP_PER_CHANNEL, 2, 2, (const float *)(void *)out,
                              out + 1), CLEAN);
  EXPECT_INVALID(nk_nap_project(actx, NK_NAP_PER_CHANNEL, R, C, NULL, rho, out), CLEAN);
  EXPECT_INVALID(nk_nap_project(actx, NK_NAP_PER_CHANNEL, R, C, wp, NULL, out), CLEAN);
  EXPECT_INVALID(nk_nap_project(actx, NK_NAP_PER_CHANNEL, R, C, wp, rho_bad, out), CLEAN);
  rho_bad[1] = NAN;
  EXPECT_INVALID(nk_nap_project(actx, NK_NAP_PER_CHANNEL, R, C, wp, rho_bad, out), CLEAN);
  rho_bad[1] = INFINITY;
  EXPECT_INVALID(nk_nap_project(actx, NK_NAP_PER_CHANNEL, R, C, wp, rho_bad, out), CLEAN);
  EXPECT_INVALID(nk_nap_project(actx, NK_NAP_PER_CHANNEL, R, C, wp, rho, (double *)(void *)wp),
                 CLEAN);
  EXPECT_INVALID(nk_nap_project(actx, NK_NAP_PER_CHANNEL, R, C, wp, out, out + 2), CLEAN);
  NK_CHECK(strstr(nk_context_message(actx), "nap_project") != NULL, "op not named");
  double lr = 12345.0;
  const nk_nap_schedule ok = {NK_NAP_SCHEDULE_LINEAR, 0.1, 0.0, 5, 10};
  nk_nap_schedule s = ok;
#define LRCLEAN (lr == 12345.0)
  EXPECT_INVALID(nk_nap_schedule_lr(actx, NULL, 0, &lr), LRCLEAN);
  EXPECT_INVALID(nk_nap_schedule_lr(actx, &s, 0, NULL), LRCLEAN);
  EXPECT_INVALID(nk_nap_schedule_lr(actx, &s, -1, &lr), LRCLEAN);
  s.kind = (nk_nap_schedule_kind)9;
  EXPECT_INVALID(nk_nap_schedule_lr(actx, &s, 0, &lr), LRCLEAN);
  s = ok, s.lr_init = -0.1;
  EXPECT_INVALID(nk_nap_schedule_lr(actx, &s, 0, &lr), LRCLEAN);
  s = ok, s.lr_final = NAN;
  EXPECT_INVALID(nk_nap_schedule_lr(actx, &s, 0, &lr), LRCLEAN);
  s = ok, s.total_steps = 5;
  EXPECT_INVALID(nk_nap_schedule_lr(actx, &s, 0, &lr), LRCLEAN);
  s = ok, s.warmup_steps = -1;
  EXPECT_INVALID(nk_nap_schedule_lr(actx, &s, 0, &lr), LRCLEAN);
  EXPECT_INVALID(nk_nap_layer_lr(actx, 0.1, 0.0, 1.0, 1.0, &lr), LRCLEAN);
  EXPECT_INVALID(nk_nap_layer_lr(actx, 0.1, 1.0, INFINITY, 1.0, &lr), LRCLEAN);
  EXPECT_INVALID(nk_nap_layer_lr(actx, -0.1, 1.0, 1.0, 1.0, &lr), LRCLEAN);
  EXPECT_INVALID(nk_nap_layer_lr(actx, 0.1, 1.0, 1.0, -1.0, &lr), LRCLEAN);
  EXPECT_INVALID(nk_nap_layer_lr(actx, 0.1, 1.0, 1.0, 1.0, NULL), LRCLEAN);
  /* CONSTANT ignores lr_final and total_steps */
  s = ok, s.kind = NK_NAP_SCHEDULE_CONSTANT, s.total_steps = 0, s.lr_final = NAN;
  NK_CHECK(nk_nap_schedule_lr(actx, &s, 7, &lr) == NK_OK && lr == 0.1, "constant");
  /* empty shapes */
  NK_CHECK(nk_nap_norms(actx, NK_NAP_PER_LAYER, 0, 5, NULL, NULL) == NK_OK, "empty");
  NK_CHECK(nk_nap_project(actx, NK_NAP_PER_CHANNEL, 4, 0, NULL, NULL, NULL) == NK_OK, "empty");
#undef CLEAN
#undef LRCLEAN
}

/* ---- Conda ---------------------------------------------------------------------------------- */

/* A random k x k orthogonal matrix (modified Gram-Schmidt on normal rows), rounded to f32, and
 * its double copy (the same values). */
static void random_basis(nk_rng *rng, size_t k, float *P, double *Pd) {
  for (size_t i = 0; i < k * k; i++) Pd[i] = nk_rng_normal(rng);
  for (size_t i = 0; i < k; i++) {
    for (size_t j = 0; j < i; j++) {
      double d = 0;
      for (size_t q = 0; q < k; q++) d += Pd[i * k + q] * Pd[j * k + q];
      for (size_t q = 0; q < k; q++) Pd[i * k + q] -= d * Pd[j * k + q];
    }
    double nn = 0;
    for (size_t q = 0; q < k; q++) nn += Pd[i * k + q] * Pd[i * k + q];
    for (size_t q = 0; q < k; q++) Pd[i * k + q] /= sqrt(nn);
  }
  for (size_t i = 0; i < k * k; i++) {
    P[i] = (float)Pd[i];
    Pd[i] = (double)P[i];
  }
}

typedef struct conda_run {
  size_t a, b;
  nk_conda_side side;
} conda_run;

/* Eight steps with the basis refreshed (a new random orthogonal basis: the core is agnostic to
 * where it comes from) whenever nk_conda_refresh_due says so, gap 3: the reference runs the same
 * steps with the same basis in double. */
NK_TEST(conda_sequences) {
  enum { STEPS = 8 };
  const conda_run runs[] = {{12, 6, NK_CONDA_SIDE_RIGHT}, {5, 9, NK_CONDA_SIDE_LEFT},
                            {7, 3, NK_CONDA_SIDE_NONE}, {4, 4, NK_CONDA_SIDE_RIGHT}};
  for (size_t ri = 0; ri < sizeof runs / sizeof runs[0]; ri++) {
    const size_t a = runs[ri].a, b = runs[ri].b, n = a * b;
    const nk_conda_side side = runs[ri].side;
    NK_CHECK(side == NK_CONDA_SIDE_NONE || nk_conda_std_side(a, b) == side, "std side");
    const size_t k = side == NK_CONDA_SIDE_RIGHT ? b : a;
    nk_rng rng = {0xc0da0ull + ri};
    nk_conda_desc d = nk_conda_desc_default();
    d.lr = 0.01, d.beta2 = 0.99, d.scale = 0.25, d.weight_decay = 0.01, d.update_proj_gap = 3;
    const nk_ref_conda_hp hp = {d.lr, d.beta1, d.beta2, d.eps, d.weight_decay, d.scale,
                                d.correct_bias};
    float *W = nk_t_alloc(n * 4), *g = nk_t_alloc(n * 4), *m = nk_t_alloc(n * 4),
          *v = nk_t_alloc(n * 4), *P = nk_t_alloc(k * k * 4);
    double *Wd = nk_t_alloc(n * 8), *gd = nk_t_alloc(n * 8), *md = nk_t_alloc(n * 8),
           *vd = nk_t_alloc(n * 8), *Pd = nk_t_alloc(k * k * 8), td = 0;
    size_t wsb;
    NK_REQUIRE(nk_conda_workspace_size(a, b, &wsb) == NK_OK, "ws");
    void *ws = nk_t_alloc(wsb);
    fill(&rng, n, 0.5, W, Wd);
    int64_t t = 0, last = -1;
    int refreshes = 0;
    for (int it = 0; it < STEPS; it++) {
      fill(&rng, n, 1.0, g, gd);
      NK_REQUIRE(nk_conda_update_moment(actx, &d, a, b, g, m) == NK_OK, "moment");
      int due;
      NK_REQUIRE(nk_conda_refresh_due(actx, t, d.update_proj_gap, last, &due) == NK_OK, "due");
      if (due) random_basis(&rng, k, P, Pd), last = t, refreshes++;
      NK_REQUIRE(nk_conda_step(actx, &d, side, a, b, W, g, m, v, P, &t, ws, wsb) == NK_OK, "%s",
                 nk_context_message(actx));
      nk_ref_conda_step(a, b, (int)side, Pd, &hp, Wd, gd, md, vd, &td);
      NK_CHECK(t == it + 1 && td == it + 1, "counter");
      const double eW = worst_f32(n, W, Wd, max_abs(n, Wd), 1);
      const double em = worst_f32(n, m, md, max_abs(n, md), 1);
      const double ev = worst_f32(n, v, vd, max_abs(n, vd), 1);
      NK_CHECK(eW <= 1 && em <= 1 && ev <= 1, "%zux%zu side %d step %d: W %.3g m %.3g v %.3g", a,
               b, (int)side, it, eW, em, ev);
    }
    NK_CHECK(refreshes == 3, "refreshes at t = 0, 3, 6: got %d", refreshes);
    free(W), free(g), free(m), free(v), free(P), free(Wd), free(gd), free(md), free(vd),
        free(Pd), free(ws);
  }
}

/* The identity basis gives exactly the identity path; flipping the sign of basis vectors (the
 * SVD's sign ambiguity) gives exactly the same update. */
NK_TEST(conda_basis_invariances) {
  enum { A = 6, B = 4, N = A * B };
  nk_rng rng = {0x1d};
  float W0[N], g[N], m[N], P[B * B], I[B * B] = {0};
  double Pd[B * B];
  fill(&rng, N, 1.0, W0, NULL);
  fill(&rng, N, 1.0, g, NULL);
  for (size_t i = 0; i < B; i++) I[i * B + i] = 1.0f;
  random_basis(&rng, B, P, Pd);
  nk_conda_desc d = nk_conda_desc_default();
  d.weight_decay = 0.1;
  double ws[2 * A + NK_WORKSPACE_ALIGN / sizeof(double)];
  float W1[N], W2[N], v1[N], v2[N], m0[N] = {0};
  memcpy(m, m0, sizeof m);
  NK_REQUIRE(nk_conda_update_moment(actx, &d, A, B, g, m) == NK_OK, "moment");
  int64_t t1 = 0, t2 = 0;
  memcpy(W1, W0, sizeof W0), memcpy(W2, W0, sizeof W0);
  memset(v1, 0, sizeof v1), memset(v2, 0, sizeof v2);
  NK_REQUIRE(nk_conda_step(actx, &d, NK_CONDA_SIDE_RIGHT, A, B, W1, g, m, v1, I, &t1, ws,
                           sizeof ws) == NK_OK, "identity basis");
  NK_REQUIRE(nk_conda_step(actx, &d, NK_CONDA_SIDE_NONE, A, B, W2, g, m, v2, NULL, &t2, NULL, 0) ==
                 NK_OK, "none");
  NK_CHECK(memcmp(W1, W2, sizeof W1) == 0 && memcmp(v1, v2, sizeof v1) == 0,
           "identity basis != identity path");
  float Pf[B * B];
  memcpy(Pf, P, sizeof P);
  for (size_t j = 0; j < B; j++) Pf[1 * B + j] = -Pf[1 * B + j], Pf[3 * B + j] = -Pf[3 * B + j];
  t1 = t2 = 0;
  memcpy(W1, W0, sizeof W0), memcpy(W2, W0, sizeof W0);
  memset(v1, 0, sizeof v1), memset(v2, 0, sizeof v2);
  NK_REQUIRE(nk_conda_step(actx, &d, NK_CONDA_SIDE_RIGHT, A, B, W1, g, m, v1, P, &t1, ws,
                           sizeof ws) == NK_OK, "P");
  NK_REQUIRE(nk_conda_step(actx, &d, NK_CONDA_SIDE_RIGHT, A, B, W2, g, m, v2, Pf, &t2, ws,
                           sizeof ws) == NK_OK, "flipped P");
  NK_CHECK(memcmp(W1, W2, sizeof W1) == 0 && memcmp(v1, v2, sizeof v1) == 0,
           "sign flip changed the update");
}

/* Zero gradient from a fresh state: m = 0, N = 0, only the decay moves W. NaN in one gradient
 * element: its row (RIGHT) becomes NaN, the other rows are finite. */
NK_TEST(conda_degenerate_inputs) {
  enum { A = 5, B = 3, N = A * B };
  nk_rng rng = {0x2e};
  float W[N], W0[N], g[N] = {0}, m[N] = {0}, v[N] = {0}, P[B * B];
  double Pd[B * B], ws[2 * A + NK_WORKSPACE_ALIGN / sizeof(double)];
  fill(&rng, N, 1.0, W0, NULL);
  memcpy(W, W0, sizeof W);
  random_basis(&rng, B, P, Pd);
  nk_conda_desc d = nk_conda_desc_default();
  d.weight_decay = 0.5;
  int64_t t = 0;
  NK_REQUIRE(nk_conda_update_moment(actx, &d, A, B, g, m) == NK_OK, "moment");
  NK_REQUIRE(nk_conda_step(actx, &d, NK_CONDA_SIDE_RIGHT, A, B, W, g, m, v, P, &t, ws,
                           sizeof ws) == NK_OK, "zero grad");
  for (size_t i = 0; i < N; i++) {
    const double w = (double)W0[i];
    NK_CHECK(W[i] == (float)(w - d.lr * d.weight_decay * w), "zero grad: W[%zu] %g", i,
             (double)W[i]);
  }
  fill(&rng, N, 1.0, g, NULL);
  g[2 * B + 1] = NAN;
  NK_REQUIRE(nk_conda_update_moment(actx, &d, A, B, g, m) == NK_OK, "moment");
  NK_REQUIRE(nk_conda_step(actx, &d, NK_CONDA_SIDE_RIGHT, A, B, W, g, m, v, P, &t, ws,
                           sizeof ws) == NK_OK, "NaN grad");
  for (size_t i = 0; i < A; i++)
    for (size_t j = 0; j < B; j++)
      NK_CHECK(i == 2 ? isnan(W[i * B + j]) : isfinite(W[i * B + j]), "W[%zu][%zu] = %g", i, j,
               (double)W[i * B + j]);
}

NK_TEST(conda_invalid) {
  enum { A = 4, B = 3, N = A * B };
  float g[N], P[B * B] = {0};
  for (size_t i = 0; i < N; i++) g[i] = 1.0f;
  float buf[3 * N];
  float *W = buf, *m = buf + N, *v = buf + 2 * N;
  double ws[2 * A + NK_WORKSPACE_ALIGN / sizeof(double)];
  memset(buf, POISON, sizeof buf);
  int64_t t = 3;
  const nk_conda_desc d0 = nk_conda_desc_default();
  nk_conda_desc d = d0;
#define CLEAN (all_bytes(buf, sizeof buf, POISON) && t == 3)
#define STEP(dd, side, w, gg, mm, vv, pp, tt, wsp, wss)                                          \
  nk_conda_step(actx, dd, side, A, B, w, gg, mm, vv, pp, tt, wsp, wss)
  const nk_conda_side R = NK_CONDA_SIDE_RIGHT;
  EXPECT_INVALID(STEP(NULL, R, W, g, m, v, P, &t, ws, sizeof ws), CLEAN);
  EXPECT_INVALID(STEP(&d, (nk_conda_side)5, W, g, m, v, P, &t, ws, sizeof ws), CLEAN);
  EXPECT_INVALID(STEP(&d, R, NULL, g, m, v, P, &t, ws, sizeof ws), CLEAN);
  EXPECT_INVALID(STEP(&d, R, W, NULL, m, v, P, &t, ws, sizeof ws), CLEAN);
  EXPECT_INVALID(STEP(&d, R, W, g, NULL, v, P, &t, ws, sizeof ws), CLEAN);
  EXPECT_INVALID(STEP(&d, R, W, g, m, NULL, P, &t, ws, sizeof ws), CLEAN);
  EXPECT_INVALID(STEP(&d, R, W, g, m, v, NULL, &t, ws, sizeof ws), CLEAN);
  EXPECT_INVALID(STEP(&d, R, W, g, m, v, P, NULL, ws, sizeof ws), CLEAN);
  EXPECT_INVALID(STEP(&d, R, W, g, m, v, P, &t, NULL, sizeof ws), CLEAN);
  EXPECT_INVALID(STEP(&d, R, W, g, m, m + 1, P, &t, ws, sizeof ws), CLEAN);
  EXPECT_INVALID(STEP(&d, R, W, g, m, v, P, &t, (void *)(v + 2), sizeof ws), CLEAN);
  EXPECT_INVALID(STEP(&d, R, W, g, m, v, v, &t, ws, sizeof ws), CLEAN);
  {
    nk_status st = STEP(&d, R, W, g, m, v, P, &t, ws, sizeof ws - 8);
    NK_CHECK(st == NK_STATUS_MISUSE && CLEAN, "small workspace: %s", nk_status_string(st));
  }
  d.beta1 = 1.0;
  EXPECT_INVALID(STEP(&d, R, W, g, m, v, P, &t, ws, sizeof ws), CLEAN);
  d = d0, d.eps = 0.0;
  EXPECT_INVALID(STEP(&d, R, W, g, m, v, P, &t, ws, sizeof ws), CLEAN);
  d = d0, d.scale = NAN;
  EXPECT_INVALID(STEP(&d, R, W, g, m, v, P, &t, ws, sizeof ws), CLEAN);
  d = d0, d.update_proj_gap = 0;
  EXPECT_INVALID(STEP(&d, R, W, g, m, v, P, &t, ws, sizeof ws), CLEAN);
  d = d0, d.lr = -1.0;
  EXPECT_INVALID(nk_conda_update_moment(actx, &d, A, B, g, m), CLEAN);
  d = d0;
  EXPECT_INVALID(nk_conda_update_moment(actx, &d, A, B, NULL, m), CLEAN);
  EXPECT_INVALID(nk_conda_update_moment(actx, &d, A, B, g, NULL), CLEAN);
  EXPECT_INVALID(nk_conda_update_moment(actx, &d, A, B, m + 1, m), CLEAN);
  t = -1;
  EXPECT_INVALID(STEP(&d, R, W, g, m, v, P, &t, ws, sizeof ws), t == -1);
  t = 3;
  NK_CHECK(strstr(nk_context_message(actx), "conda_step") != NULL, "op not named");
  int due = 7;
  EXPECT_INVALID(nk_conda_refresh_due(actx, -1, 5, 0, &due), due == 7);
  EXPECT_INVALID(nk_conda_refresh_due(actx, 1, 0, 0, &due), due == 7);
  EXPECT_INVALID(nk_conda_refresh_due(actx, 1, 5, 0, NULL), due == 7);
  NK_CHECK(nk_conda_refresh_due(actx, 7, 5, 5, &due) == NK_OK && due == 0, "not due");
  NK_CHECK(nk_conda_refresh_due(actx, 10, 5, 5, &due) == NK_OK && due == 1, "due");
  NK_CHECK(nk_conda_refresh_due(actx, 10, 5, 10, &due) == NK_OK && due == 0, "already done");
  NK_CHECK(nk_conda_refresh_due(actx, 7, 5, -1, &due) == NK_OK && due == 1, "no basis yet");
  /* empty: only the counter advances */
  NK_CHECK(nk_conda_step(actx, &d, R, 0, B, NULL, NULL, NULL, NULL, NULL, &t, NULL, 0) == NK_OK,
           "empty");
  NK_CHECK(t == 4 && all_bytes(buf, sizeof buf, POISON), "empty: counter only");
#undef STEP
#undef CLEAN
}

int main(void) {
  if (nk_context_create(&actx) != NK_OK) return 1;
  NK_RUN(weight_norm_fwd_bwd_match_reference);
  NK_RUN(weight_norm_finite_differences);
  NK_RUN(weight_norm_sgd_sequence);
  NK_RUN(weight_norm_zero_and_nan_rows);
  NK_RUN(weight_norm_invalid);
  NK_RUN(adamp_sequences);
  NK_RUN(sgdp_sequences);
  NK_RUN(sgdp_projection_geometry);
  NK_RUN(adamp_degenerate_inputs);
  NK_RUN(optim_steps_invalid);
  NK_RUN(nap_sequence);
  NK_RUN(nap_zero_and_nan_groups);
  NK_RUN(nap_schedules);
  NK_RUN(nap_invalid);
  NK_RUN(conda_sequences);
  NK_RUN(conda_basis_invariances);
  NK_RUN(conda_degenerate_inputs);
  NK_RUN(conda_invalid);
  nk_context_destroy(actx);
  return nk_test_summary();
}
