/*
 * tests/fuzz/optim.c — libFuzzer harness: weight and optimizer normalization (normkit.h
 * "Weight normalization", "AdamP and SGDP", "Normalize-and-Project", "Conda"):
 *   nk_weight_norm_fwd (norm output optional) and nk_weight_norm_bwd, eps 0 or a clamp;
 *   nk_adamp_step and nk_sgdp_step (ndim <= 1 or a rows x n/rows channel view, nesterov,
 *     weight decay, delta, wd_ratio, caller-owned state from any earlier step, projection
 *     output optional);
 *   nk_nap_norms, nk_nap_project (norm output optional), nk_nap_schedule_lr, nk_nap_layer_lr;
 *   nk_conda_std_side, nk_conda_refresh_due, nk_conda_update_moment, nk_conda_workspace_size,
 *     nk_conda_step (RIGHT / LEFT / NONE, orthogonal bases, correct_bias, weight decay).
 * Every buffer (state, step counters and projection outputs included) is placed in the guard-
 * page arena (fuzz.h); every state output is checked against the float64 reference
 * (src/reference/optim.c) run from the same state. 1 input in 8 breaks one rule.
 *
 * Bounds: those of tests/ops/optim.c:
 *   ONE CALL (weight norm w, norm, dv, dg; NaP projected weights): 2 f32 ulp at |ref| +
 *     1e-12 max|ref| over the output;
 *   DRIFT (AdamP/SGDP/Conda parameters and state, whose update reads the f32-rounded state
 *     where the reference keeps double): 2e-5 (|ref| + max|ref| over the array);
 *   NaP norms (rho and the norm output) 1e-14 relative; the schedule 4 DBL_EPSILON lr_init;
 *   the projected view, step counters and refresh decisions exactly.
 */
#include <float.h>

#include "fuzz.h"
#include "reference.h"

#define MAXR 8
#define MAXC 48
#define MAXE (MAXR * MAXC)

enum {
  BAD_NONE,
  BAD_NULL,
  BAD_SCALAR,
  BAD_SHAPE,
  BAD_OVERLAP,
  BAD_OVERFLOW,
  BAD_STEP,
  BAD_ENUM,
  BAD_WORKSPACE,
  BAD_COUNT
};

static double max_finite(const double *r, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; i++)
    if (isfinite(r[i]) && fabs(r[i]) > m) m = fabs(r[i]);
  return m;
}
static void cmp_one(const char *what, size_t n, const float *got, const double *ref) {
  const double sc = max_finite(ref, n);
  for (size_t i = 0; i < n; i++) {
    const double bound = 2.0 * fz_ulp(ref[i], NK_DTYPE_F32) + 1e-12 * sc;
    FZ_CHECK(fz_close(got[i], ref[i], bound, NK_DTYPE_F32), "%s[%zu] = %.9g, ref %.9g (bound %.3g)",
             what, i, (double)got[i], ref[i], bound);
  }
}
static void cmp_drift(const char *what, size_t n, const float *got, const double *ref) {
  const double sc = max_finite(ref, n);
  for (size_t i = 0; i < n; i++) {
    const double bound = 2e-5 * ((isfinite(ref[i]) ? fabs(ref[i]) : 0.0) + sc);
    FZ_CHECK(fz_close(got[i], ref[i], bound, NK_DTYPE_F32), "%s[%zu] = %.9g, ref %.9g (bound %.3g)",
             what, i, (double)got[i], ref[i], bound);
  }
}
/* The parameter after a step: the drift bound, plus the step's own rounding. The library keeps
 * its state (m, v) in f32 and steps from the rounded state; the reference keeps it in double. A
 * step that cancels the parameter (p ~ 1e4, lr m ~ 1e4, p_new ~ 0.04) then differs by the f32
 * rounding of m times lr: 2^-21 of the step size |p_old - p_new| plus 2 ulps of p_old (the
 * harness's earlier drift-only bound failed on such a step: tests/fuzz/known/
 * optim-param-step-cancellation). */
static void cmp_param(size_t n, const float *got, const double *ref, const double *old) {
  const double sc = max_finite(ref, n);
  for (size_t i = 0; i < n; i++) {
    const double st = isfinite(ref[i]) && isfinite(old[i]) ? fabs(old[i] - ref[i]) : 0.0;
    const double bound = 2e-5 * ((isfinite(ref[i]) ? fabs(ref[i]) : 0.0) + sc) + 0x1p-21 * st +
                         (isfinite(old[i]) ? 2.0 * fz_ulp(old[i], NK_DTYPE_F32) : 0.0);
    FZ_CHECK(fz_close(got[i], ref[i], bound, NK_DTYPE_F32),
             "param[%zu] = %.9g, ref %.9g (old %.9g, bound %.3g)", i, (double)got[i], ref[i],
             old[i], bound);
  }
}
static void cmp_d(const char *what, size_t n, const double *got, const double *ref, double rel) {
  for (size_t i = 0; i < n; i++) {
    const int ok = isnan(ref[i])
                       ? isnan(got[i])
                       : (got[i] == ref[i] || fabs(got[i] - ref[i]) <= rel * fabs(ref[i]));
    FZ_CHECK(ok, "%s[%zu] = %.17g, ref %.17g", what, i, got[i], ref[i]);
  }
}

static void fill_f(fz_in *in, float *p, size_t n, const fz_dist *d, double *ref) {
  for (size_t i = 0; i < n; i++) {
    p[i] = (float)fz_value(in, d);
    ref[i] = p[i];
  }
}
static void expect_fail(nk_status st, nk_context *ctx, unsigned bad, const char *what) {
  FZ_CHECK(st == NK_STATUS_INVALID_ARGUMENT, "%s bad %u: status %d, want INVALID_ARGUMENT (%s)",
           what, bad, st, ctx ? nk_context_message(ctx) : "");
  FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "%s: no message for a failure", what);
  fz_check_arena(0, what);
}
static void clear_writable(void) {
  for (int s = 0; s < FZ_SLOTS; s++)
    fz_slots[s].nw = 0;
}

/* ------------------------------------------------------------------ weight norm ---------- */
static int weight_norm(fz_in *in, unsigned bad, nk_context *ctx) {
  const size_t R = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, MAXR);
  const size_t C = fz_pick(in, 4) == 0 ? 1 + fz_pick(in, 3) : 1 + fz_pick(in, MAXC);
  const size_t n = R * C, Rp = R ? R : 1, np = Rp * C;
  static const float epss[] = {0.0f, 0.0f, 1e-3f, 1e-12f, 10.0f};
  float eps = epss[fz_pick(in, 5)];
  const unsigned opt = fz_u8(in);
  const int do_bwd = opt & 1, has_norm = (opt & 2) != 0;
  if (R == 0 && bad != BAD_OVERFLOW && bad != BAD_SCALAR) bad = BAD_NONE;
  static double vr[MAXE], gr[MAXR], dwr[MAXE], wr[MAXE], nr[MAXR], dvr[MAXE], dgr[MAXR];
  const fz_geom ge = fz_vec(np, 4), gr_ = fz_vec(Rp, 4);
  const fz_dist vd = fz_dist_pick(in, 8), gd = fz_dist_pick(in, 8), dd = fz_dist_pick(in, 8);
  float *v = fz_place(in, &ge, NULL), *g = fz_place(in, &gr_, NULL);
  fill_f(in, v, np, &vd, vr);
  fill_f(in, g, Rp, &gd, gr);
  /* sometimes a zero row (the eps clamp) */
  if (fz_pick(in, 4) == 0) {
    const size_t r = fz_pick(in, (unsigned)Rp);
    for (size_t j = 0; j < C; j++)
      v[r * C + j] = 0.0f, vr[r * C + j] = 0.0;
  }
  float *w = fz_place(in, &ge, NULL), *norm = has_norm ? fz_place(in, &gr_, NULL) : NULL;
  size_t rows = R, cols = C;
  const float *vf = v, *gf = g;
  float *wf = w, *nf = norm;
  int fail = 0;
  if (bad && !do_bwd) {
    fail = 1;
    switch (bad) {
    case BAD_NULL:
      if (fz_u8(in) & 1)
        vf = NULL;
      else if (fz_u8(in) & 1)
        gf = NULL;
      else
        wf = NULL;
      break;
    case BAD_SCALAR: {
      const float e[] = {-1e-3f, NAN, INFINITY};
      eps = e[fz_pick(in, 3)];
      break;
    }
    case BAD_OVERLAP:
      if (norm)
        nf = w + fz_pick(in, (unsigned)n);
      else
        wf = v;
      break;
    case BAD_OVERFLOW: rows = SIZE_MAX / 2 + fz_pick(in, 9), cols = 2 + fz_pick(in, 5); break;
    default: fail = 0;
    }
  }
  if (!fail && n) fz_writable(w, &ge), fz_writable(norm, &gr_);
  fz_snapshot();
  nk_status st = nk_weight_norm_fwd(ctx, rows, cols, eps, vf, gf, wf, nf);
  if (fail) {
    expect_fail(st, ctx, bad, "weight_norm_fwd");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "weight_norm_fwd status %d (%s)", st, ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, "weight_norm_fwd");
  if (n == 0) return 1;
  nk_ref_weight_norm_fwd(R, C, eps, vr, gr, wr, nr);
  /* the header's rule (the reference leaves NaN rows to its caller): NaN or inf in a row of v
   * makes that row's w NaN */
  for (size_t r = 0; r < R; r++)
    if (!isfinite(nr[r]))
      for (size_t j = 0; j < C; j++)
        wr[r * C + j] = NAN;
  cmp_one("w", n, w, wr);
  if (norm) cmp_one("norm", R, norm, nr);
  if (!do_bwd) return 1;

  clear_writable();
  float *dw = fz_place(in, &ge, NULL);
  fill_f(in, dw, np, &dd, dwr);
  float *dv = fz_place(in, &ge, NULL), *dg = fz_place(in, &gr_, NULL);
  const float *dwf = dw;
  float *dvf = dv, *dgf = dg;
  fail = 0;
  if (bad) {
    fail = 1;
    switch (bad) {
    case BAD_NULL: {
      const unsigned k = fz_pick(in, 4);
      if (k == 0)
        vf = NULL;
      else if (k == 1)
        dwf = NULL;
      else if (k == 2)
        dvf = NULL;
      else
        dgf = NULL;
      break;
    }
    case BAD_SCALAR: eps = -eps - 1.0f; break;
    case BAD_OVERLAP:
      if (fz_u8(in) & 1)
        dvf = dw;
      else
        dgf = dv + fz_pick(in, (unsigned)n);
      break;
    case BAD_OVERFLOW: rows = SIZE_MAX / 4, cols = 5; break;
    default: fail = 0;
    }
  }
  if (!fail) fz_writable(dv, &ge), fz_writable(dg, &gr_);
  fz_snapshot();
  st = nk_weight_norm_bwd(ctx, rows, cols, eps, vf, gf, dwf, dvf, dgf);
  if (fail) {
    expect_fail(st, ctx, bad, "weight_norm_bwd");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "weight_norm_bwd status %d (%s)", st, ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, "weight_norm_bwd");
  nk_ref_weight_norm_bwd(R, C, eps, vr, gr, dwr, dvr, dgr);
  for (size_t r = 0; r < R; r++) /* the header's NaN rule, as in the forward */
    if (!isfinite(nr[r])) {
      dgr[r] = NAN;
      for (size_t j = 0; j < C; j++)
        dvr[r * C + j] = NAN;
    }
  cmp_one("dv", n, dv, dvr);
  cmp_one("dg", R, dg, dgr);
  return 1;
}

/* ------------------------------------------------------------------ AdamP / SGDP -------- */
/* Gradients are kept to |g| <= 1e18: the second moment v ~ g^2 is f32 state (normkit.h), and
 * beyond sqrt(FLT_MAX) it is stored as inf (the step of that element is then 0) where the
 * float64 reference keeps 1e57: a documented property of f32 state, not compared. */
/* The optimizer state of an earlier step (m, v, momentum buffers) is drawn from a tame N(0,1)
 * scale: with the gradient's extreme classes (a 1e29 buffer on 1e20 weights) the projection of
 * the f32 buffer cancels beyond what the drift bound of the tests covers. */
static const fz_dist tame = {0.0, 1.0, 0};
/* Likewise |g| < 1e-15 is drawn as 0: g^2 (1 - beta2) underflows the f32 v to 0 where the
 * reference keeps 1e-63, and with eps 1e-30 that changes the step by O(1). */
static double gclamp(double g) {
  if (isfinite(g) && fabs(g) > 1e18) return copysign(1e18, g);
  return fabs(g) < 1e-15 ? 0.0 * g : g;
}

/* A gradient: random, or a tangent one (its radial part removed row by row: the channel view
 * passes), or zero. */
static void make_grad(fz_in *in, unsigned kind, size_t rows, size_t cols, const double *th,
                      float *g, double *gd, const fz_dist *d) {
  const size_t R = rows ? rows : 1, n = R * cols;
  for (size_t i = 0; i < n; i++)
    gd[i] = kind == 2 ? 0.0 : fz_value(in, d);
  if (kind == 1)
    for (size_t r = 0; r < R; r++) {
      double tt = 0, gt = 0;
      for (size_t j = 0; j < cols; j++)
        tt += th[r * cols + j] * th[r * cols + j], gt += gd[r * cols + j] * th[r * cols + j];
      if (tt > 0 && isfinite(tt) && isfinite(gt))
        for (size_t j = 0; j < cols; j++)
          gd[r * cols + j] -= gt / tt * th[r * cols + j];
    }
  for (size_t i = 0; i < n; i++)
    g[i] = (float)gclamp(gd[i]), gd[i] = g[i];
}

static int adamp_sgdp(fz_in *in, int sgdp, unsigned bad, nk_context *ctx) {
  const size_t rsel = fz_pick(in, 4);
  size_t rows = rsel == 0 ? 0 : 1 + fz_pick(in, MAXR);
  const size_t cols = 1 + fz_pick(in, MAXC);
  size_t n = (rows ? rows : 1) * cols;
  if (fz_pick(in, 16) == 0) n = 0, rows = 0;
  const size_t np = n ? n : 1;
  static double pr[MAXE], gr[MAXE], mr[MAXE], vr[MAXE], p_old[MAXE];
  const fz_geom ge = fz_vec(np, 4), g8 = fz_vec(1, 8), gpj = fz_vec(1, sizeof(nk_optim_projection));
  const fz_dist pd = fz_dist_pick(in, 4), gd = fz_dist_pick(in, 4);
  float *p = fz_place(in, &ge, NULL);
  fill_f(in, p, np, &pd, pr);
  memcpy(p_old, pr, np * sizeof(double));
  float *g = fz_place(in, &ge, NULL);
  make_grad(in, fz_pick(in, 4) == 0 ? 2 : fz_pick(in, 2), n ? rows : 0, n ? cols : np, pr, g, gr,
            &gd);
  float *m = fz_place(in, &ge, NULL), *v = sgdp ? NULL : fz_place(in, &ge, NULL);
  const int fresh = fz_u8(in) & 1;
  for (size_t i = 0; i < np; i++) {
    m[i] = fresh ? 0.0f : (float)(0.1 * fz_value(in, &tame));
    mr[i] = m[i];
    if (v) v[i] = fresh ? 0.0f : (float)fabs(0.01 * fz_value(in, &tame)), vr[i] = v[i];
  }
  int64_t *step = fz_place(in, &g8, NULL);
  static const int64_t steps[] = {0, 0, 1, 2, 9, 1000, INT64_MAX - 1};
  *step = fresh ? 0 : steps[fz_pick(in, 7)];
  /* the projection output is always requested (its NULL form is covered by n == 0 and the
   * tests): the view is needed to recognise a near-tie of the cosine test, below */
  (void)fz_u8(in);
  nk_optim_projection *proj = fz_place(in, &gpj, NULL);
  if (proj) *proj = (nk_optim_projection)77;
  static const double lrs[] = {1e-3, 0.1, 0.0, 1.0};
  static const double b1s[] = {0.9, 0.0, 0.5, 0.999};
  static const double b2s[] = {0.999, 0.0, 0.9};
  static const double epss[] = {1e-8, 1e-8, 1e-3, 1e-30};
  static const double wds[] = {0.0, 0.0, 0.05, 1e-4};
  static const double deltas[] = {0.1, 0.1, 0.0, 1.0, 10.0};
  static const double wdrs[] = {0.1, 0.1, 0.0, 1.0};
  nk_adamp_desc ad = nk_adamp_desc_default();
  nk_sgdp_desc sd = nk_sgdp_desc_default(lrs[fz_pick(in, 4)]);
  ad.lr = sd.lr;
  ad.beta1 = b1s[fz_pick(in, 4)];
  ad.beta2 = b2s[fz_pick(in, 3)];
  ad.eps = sd.eps = epss[fz_pick(in, 4)];
  ad.weight_decay = sd.weight_decay = wds[fz_pick(in, 4)];
  ad.delta = sd.delta = deltas[fz_pick(in, 5)];
  ad.wd_ratio = sd.wd_ratio = wdrs[fz_pick(in, 4)];
  ad.nesterov = sd.nesterov = fz_u8(in) & 1;
  sd.momentum = b1s[fz_pick(in, 4)];
  sd.dampening = fz_u8(in) & 1 ? 0.0 : 0.5;
  size_t n_pass = n, rows_pass = rows;
  float *pf = p, *mf = m, *vf = v;
  const float *gf = g;
  int64_t *sf = step;
  int fail = 0;
  if (bad) {
    fail = 1;
    switch (bad) {
    case BAD_NULL: {
      const unsigned k = fz_pick(in, 4);
      if (n == 0) {
        if (!sgdp)
          sf = NULL; /* the step counter is required even for n == 0 */
        else
          fail = 0;
      } else if (k == 0)
        pf = NULL;
      else if (k == 1)
        gf = NULL;
      else if (k == 2 || sgdp)
        mf = NULL;
      else
        vf = NULL;
      break;
    }
    case BAD_SCALAR: {
      const unsigned k = fz_pick(in, 6);
      if (k == 0)
        ad.lr = sd.lr = -0.1;
      else if (k == 1)
        ad.beta1 = 1.0, sd.momentum = 1.0;
      else if (k == 2)
        ad.eps = sd.eps = 0.0;
      else if (k == 3)
        ad.weight_decay = sd.weight_decay = NAN;
      else if (k == 4)
        ad.delta = sd.delta = -1.0;
      else
        ad.wd_ratio = sd.wd_ratio = INFINITY, ad.beta2 = -0.5, sd.dampening = 1.5;
      break;
    }
    case BAD_SHAPE:
      if (n > 1)
        rows_pass = n + 1 + fz_pick(in, 4); /* does not divide n */
      else
        fail = 0;
      break;
    case BAD_OVERLAP:
      if (n > 1) {
        if (fz_u8(in) & 1)
          mf = p + 1;
        else
          pf = (float *)g;
      } else
        fail = 0;
      break;
    case BAD_OVERFLOW: n_pass = SIZE_MAX / 2 - fz_pick(in, 9) * 2, rows_pass = 0; break;
    case BAD_STEP:
      if (!sgdp)
        *step = fz_u8(in) & 1 ? -1 - (int64_t)fz_pick(in, 9) : INT64_MAX;
      else
        fail = 0;
      break;
    default: fail = 0;
    }
  }
  const int64_t step0 = *step;
  if (!fail) {
    if (n) fz_writable(p, &ge), fz_writable(m, &ge), fz_writable(v, &ge);
    if (!sgdp) fz_writable(step, &g8);
    fz_writable(proj, &gpj);
  }
  fz_snapshot();
  nk_optim_projection view0 = (nk_optim_projection)77;
  nk_status st = sgdp ? nk_sgdp_step(ctx, &sd, n_pass, rows_pass, pf, gf, mf, proj)
                      : nk_adamp_step(ctx, &ad, n_pass, rows_pass, pf, gf, mf, vf, sf, proj);
  if (fail) {
    expect_fail(st, ctx, bad, sgdp ? "sgdp_step" : "adamp_step");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "%s status %d (%s)", sgdp ? "sgdp" : "adamp", st,
           ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, sgdp ? "sgdp_step" : "adamp_step");
  if (proj) view0 = *proj;
  if (n == 0) {
    FZ_CHECK(sgdp || *step == step0 + 1, "n == 0: step must advance");
    FZ_CHECK(!proj || view0 == NK_OPTIM_PROJECTION_NONE, "n == 0: projection NONE");
    return 1;
  }
  int rv;
  if (sgdp) {
    const nk_ref_sgdp_hp hp = {sd.lr,           sd.momentum, sd.dampening, sd.eps,
                               sd.weight_decay, sd.delta,    sd.wd_ratio,  sd.nesterov};
    rv = nk_ref_sgdp_step(n, rows, &hp, pr, gr, mr);
  } else {
    const nk_ref_adamp_hp hp = {ad.lr,           ad.beta1, ad.beta2,    ad.eps,
                                ad.weight_decay, ad.delta, ad.wd_ratio, ad.nesterov};
    double sd_ = (double)step0;
    rv = nk_ref_adamp_step(n, rows, &hp, pr, gr, mr, vr, &sd_);
    FZ_CHECK(*step == step0 + 1, "step %lld after %lld", (long long)*step, (long long)step0);
  }
  /* OPEN (docs/security.md, not analysed): the library's view and the reference's can differ
   * (a max cosine at the threshold delta / sqrt(D), blocked vs sequential double sums); then
   * the step differs by the projection and is not compared */
  if ((int)view0 != rv) return 1;
  /* OPEN (docs/security.md): an AdamP step with |m| / den > 1e6 (eps 1e-30 and v = 0 while m is
   * not: beta2 0 and a zero gradient) is ill-conditioned; its projection cancels a 1e29 update
   * to rounding noise that differs between the blocked and the sequential sums: not compared */
  if (!sgdp) {
    const double bc2 = 1.0 - pow(ad.beta2, (double)(step0 + 1));
    for (size_t i = 0; i < n; i++)
      if (fabs(mr[i]) / (sqrt(vr[i]) / sqrt(bc2) + ad.eps) > 1e6) return 1;
  }
  /* OPEN (docs/security.md): a projected SGDP step whose update dwarfs the weights (lr |d| >
   * 1e6 |p|: gradient 1e18 parallel to weights of 1e4) cancels in the projection to rounding
   * noise of the update, which differs between the blocked and the sequential sums (param 8488
   * against 9000: tests/fuzz/known/optim-sgdp-projection-cancellation-open): not compared */
  if (sgdp && view0 != NK_OPTIM_PROJECTION_NONE) {
    double pm = 0.0, dm = 0.0;
    for (size_t i = 0; i < n; i++)
      pm = fmax(pm, fabs(p_old[i])), dm = fmax(dm, fabs(mr[i]) + fabs(gr[i]));
    if (sd.lr * dm > 1e6 * pm) return 1;
  }
  cmp_param(n, p, pr, p_old);
  cmp_drift(sgdp ? "momentum_buf" : "exp_avg", n, m, mr);
  if (!sgdp) cmp_drift("exp_avg_sq", n, v, vr);
  return 1;
}

/* ------------------------------------------------------------------ NaP ----------------- */
static int nap(fz_in *in, unsigned bad, nk_context *ctx) {
  const unsigned which = fz_pick(in, 4);
  if (which == 3) { /* schedule and layer lr */
    static const double lrs[] = {0.1, 0.3, 0.0, 1e-3};
    nk_nap_schedule s = {(nk_nap_schedule_kind)fz_pick(in, 3), lrs[fz_pick(in, 4)],
                         lrs[fz_pick(in, 4)], (int64_t)fz_pick(in, 12), 0};
    s.total_steps = s.warmup_steps + 1 + (int64_t)fz_pick(in, 200);
    const int64_t t = (int64_t)fz_pick(in, 250);
    const fz_geom g8 = fz_vec(1, 8), gs = fz_vec(1, sizeof s);
    double *lr = fz_place(in, &g8, NULL);
    nk_nap_schedule *sp = fz_place(in, &gs, NULL);
    *sp = s;
    const double rho = 0.5 + fz_u8(in), fnorm = 0.25 + fz_u8(in), power = fz_pick(in, 3);
    int fail = 0;
    int64_t tp = t;
    double rho_p = rho;
    if (bad) {
      fail = 1;
      const unsigned k = fz_pick(in, 6);
      if (k == 0)
        sp->kind = (nk_nap_schedule_kind)(3 + fz_pick(in, 9));
      else if (k == 1)
        tp = -1 - (int64_t)fz_pick(in, 9);
      else if (k == 2)
        sp->lr_init = -1.0;
      else if (k == 3 && sp->kind != NK_NAP_SCHEDULE_CONSTANT)
        sp->total_steps = sp->warmup_steps;
      else if (k == 4)
        sp->warmup_steps = -3;
      else
        rho_p = fz_u8(in) & 1 ? 0.0 : NAN, fail = 2;
    }
    if (!fail || fail == 2) fz_writable(lr, &g8);
    fz_snapshot();
    nk_status st = nk_nap_schedule_lr(ctx, sp, tp, lr);
    if (fail == 1) {
      expect_fail(st, ctx, bad, "nap_schedule_lr");
      return 0;
    }
    FZ_CHECK(st == NK_OK, "schedule_lr status %d", st);
    fz_check_arena(1, "nap_schedule_lr");
    const double ref =
        nk_ref_nap_schedule_lr((int)s.kind, s.lr_init, s.lr_final, (double)s.warmup_steps,
                               (double)s.total_steps, (double)t);
    FZ_CHECK(fabs(*lr - ref) <=
                 4 * DBL_EPSILON * s.lr_init + (s.kind ? 4 * DBL_EPSILON * s.lr_final : 0),
             "schedule kind %d t %lld: %.17g, ref %.17g", (int)s.kind, (long long)t, *lr, ref);
    clear_writable();
    if (fail != 2) fz_writable(lr, &g8);
    fz_snapshot();
    st = nk_nap_layer_lr(ctx, s.lr_init, rho_p, fnorm, power, lr);
    if (fail == 2) {
      expect_fail(st, ctx, bad, "nap_layer_lr");
      return 0;
    }
    FZ_CHECK(st == NK_OK, "layer_lr status %d", st);
    fz_check_arena(1, "nap_layer_lr");
    const double lref = s.lr_init * pow(rho / fnorm, power);
    FZ_CHECK(fabs(*lr - lref) <= 4 * DBL_EPSILON * lref, "layer_lr %.17g, ref %.17g", *lr, lref);
    return 1;
  }
  const nk_nap_mode mode = (nk_nap_mode)(fz_u8(in) & 1);
  const size_t R = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, MAXR);
  const size_t C = 1 + fz_pick(in, MAXC), Rp = R ? R : 1, np = Rp * C;
  const size_t groups = mode == NK_NAP_PER_CHANNEL ? Rp : 1;
  if (R == 0 && bad != BAD_OVERFLOW && bad != BAD_ENUM) bad = BAD_NONE;
  static double wr[MAXE], rhor[MAXR], rr[MAXR], nref[MAXR];
  const fz_geom ge = fz_vec(np, 4), gg = fz_vec(groups, 8);
  const fz_dist wd = fz_dist_pick(in, 6);
  float *w = fz_place(in, &ge, NULL);
  fill_f(in, w, np, &wd, wr);
  if (fz_pick(in, 4) == 0) { /* a zero group */
    const size_t r = mode == NK_NAP_PER_CHANNEL ? fz_pick(in, (unsigned)Rp) : 0;
    const size_t len = mode == NK_NAP_PER_CHANNEL ? C : np;
    for (size_t j = 0; j < len; j++)
      w[r * C + j] = 0.0f, wr[r * C + j] = 0.0;
  }
  double *rho = fz_place(in, &gg, NULL), *norm = (fz_u8(in) & 1) ? fz_place(in, &gg, NULL) : NULL;
  nk_nap_mode mp = mode;
  size_t rows = R, cols = C;
  int fail = 0;
  if (which == 0) { /* norms */
    float *wf = w;
    double *rf = rho;
    if (bad) {
      fail = 1;
      switch (bad) {
      case BAD_NULL:
        if (fz_u8(in) & 1)
          wf = NULL;
        else
          rf = NULL;
        break;
      case BAD_ENUM: mp = (nk_nap_mode)(2 + fz_pick(in, 9)); break;
      case BAD_OVERFLOW: rows = SIZE_MAX / 2, cols = 3; break;
      case BAD_OVERLAP: rf = (double *)(void *)w; break;
      default: fail = 0;
      }
    }
    if (!fail && R) fz_writable(rho, &gg);
    fz_snapshot();
    const nk_status st = nk_nap_norms(ctx, mp, rows, cols, wf, rf);
    if (fail) {
      expect_fail(st, ctx, bad, "nap_norms");
      return 0;
    }
    FZ_CHECK(st == NK_OK, "nap_norms status %d (%s)", st, ctx ? nk_context_message(ctx) : "");
    fz_check_arena(1, "nap_norms");
    if (R == 0) return 1;
    nk_ref_nap_norms(mode, R, C, wr, rr);
    cmp_d("rho", groups, rho, rr, 1e-14);
    return 1;
  }
  /* project: rho finite >= 0 (sometimes 0), the norms of w before */
  for (size_t k = 0; k < groups; k++) {
    const unsigned s = fz_pick(in, 8);
    rho[k] = rhor[k] = s == 0 ? 0.0 : s == 1 ? 1e30 : 0.1 + 0.05 * fz_u8(in);
  }
  float *wf = w;
  const double *rf = rho;
  double *nf = norm;
  if (bad) {
    fail = 1;
    switch (bad) {
    case BAD_NULL:
      if (fz_u8(in) & 1)
        wf = NULL;
      else
        rf = NULL;
      break;
    case BAD_ENUM: mp = (nk_nap_mode)(-1 - (int)fz_pick(in, 9)); break;
    case BAD_OVERFLOW: rows = SIZE_MAX / 3, cols = 7; break;
    case BAD_SCALAR: {
      const double b[] = {-1.0, NAN, INFINITY};
      rho[fz_pick(in, (unsigned)groups)] = b[fz_pick(in, 3)];
      break;
    }
    case BAD_OVERLAP:
      if (norm)
        nf = rho;
      else
        fail = 0;
      break;
    default: fail = 0;
    }
  }
  if (!fail && R) fz_writable(w, &ge), fz_writable(norm, &gg);
  fz_snapshot();
  const nk_status st = nk_nap_project(ctx, mp, rows, cols, wf, rf, nf);
  if (fail) {
    expect_fail(st, ctx, bad, "nap_project");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "nap_project status %d (%s)", st, ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, "nap_project");
  if (R == 0) return 1;
  nk_ref_nap_norms(mode, R, C, wr, nref);
  nk_ref_nap_project(mode, R, C, wr, rhor);
  /* the header's rule: a group with a NaN or inf element becomes all NaN (whatever rho) */
  for (size_t k = 0; k < groups; k++)
    if (!isfinite(nref[k])) {
      const size_t len = mode == NK_NAP_PER_CHANNEL ? C : np;
      for (size_t j = 0; j < len; j++)
        wr[k * C + j] = NAN;
    }
  cmp_one("w", np, w, wr);
  if (norm) cmp_d("norm", groups, norm, nref, 1e-14);
  return 1;
}

/* ------------------------------------------------------------------ Conda --------------- */
/* A k x k orthogonal basis: Gram-Schmidt on decoded rows, or a signed permutation. */
static void make_basis(fz_in *in, size_t k, float *P, double *Pd) {
  const fz_dist d = {0.0, 1.0, 0};
  if (fz_pick(in, 3) == 0) {
    const size_t shift = fz_pick(in, (unsigned)k);
    for (size_t i = 0; i < k * k; i++)
      Pd[i] = 0.0;
    for (size_t i = 0; i < k; i++)
      Pd[i * k + (i + shift) % k] = fz_u8(in) & 1 ? 1.0 : -1.0;
  } else {
    for (size_t i = 0; i < k * k; i++)
      Pd[i] = fz_value(in, &d);
    for (size_t i = 0; i < k; i++) {
      for (size_t j = 0; j < i; j++) {
        double dd = 0;
        for (size_t q = 0; q < k; q++)
          dd += Pd[i * k + q] * Pd[j * k + q];
        for (size_t q = 0; q < k; q++)
          Pd[i * k + q] -= dd * Pd[j * k + q];
      }
      double nn = 0;
      for (size_t q = 0; q < k; q++)
        nn += Pd[i * k + q] * Pd[i * k + q];
      for (size_t q = 0; q < k; q++)
        Pd[i * k + q] = nn > 1e-20 ? Pd[i * k + q] / sqrt(nn) : (q == i);
    }
  }
  for (size_t i = 0; i < k * k; i++)
    P[i] = (float)Pd[i], Pd[i] = P[i];
}

#define CMAXA 12
#define CMAXB 12
static int conda(fz_in *in, unsigned bad, nk_context *ctx) {
  const size_t a = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, CMAXA), b = 1 + fz_pick(in, CMAXB);
  const size_t n = a * b, ap = a ? a : 1, np = ap * b;
  const unsigned sdsel = fz_pick(in, 4);
  const nk_conda_side side = sdsel == 0 ? NK_CONDA_SIDE_NONE : nk_conda_std_side(ap, b);
  FZ_CHECK(nk_conda_std_side(ap, b) == (ap >= b ? NK_CONDA_SIDE_RIGHT : NK_CONDA_SIDE_LEFT),
           "std side");
  const size_t k = side == NK_CONDA_SIDE_RIGHT ? b : ap;
  nk_conda_desc d = nk_conda_desc_default();
  static const double lrs[] = {1e-3, 0.01, 0.0, 0.5};
  static const double b1s[] = {0.9, 0.0, 0.5};
  static const double b2s[] = {0.999, 0.99, 0.0};
  static const double scs[] = {1.0, 0.25, -2.0, 0.0};
  d.lr = lrs[fz_pick(in, 4)];
  d.beta1 = b1s[fz_pick(in, 3)];
  d.beta2 = b2s[fz_pick(in, 3)];
  d.eps = fz_u8(in) & 1 ? 1e-8 : 1e-3;
  d.weight_decay = fz_u8(in) & 1 ? 0.0 : 0.01;
  d.scale = scs[fz_pick(in, 4)];
  d.correct_bias = fz_u8(in) & 1;
  d.update_proj_gap = 1 + fz_pick(in, 5);
  if (a == 0) bad = BAD_NONE; /* an empty call: only the descriptor is checked */
  static double Wr[MAXE], gr[MAXE], mr[MAXE], vr[MAXE], Pr[CMAXA * CMAXA];
  const fz_geom ge = fz_vec(np, 4), gP = fz_vec(k * k, 4), g8 = fz_vec(1, 8),
                gi = fz_vec(1, sizeof(int));
  const fz_dist wd = fz_dist_pick(in, 4), gd = fz_dist_pick(in, 4);
  float *W = fz_place(in, &ge, NULL), *g = fz_place(in, &ge, NULL), *m = fz_place(in, &ge, NULL),
        *v = fz_place(in, &ge, NULL);
  fill_f(in, W, np, &wd, Wr);
  fill_f(in, g, np, &gd, gr);
  for (size_t i = 0; i < np; i++)
    g[i] = (float)gclamp(g[i]), gr[i] = g[i];
  const int fresh = fz_u8(in) & 1;
  for (size_t i = 0; i < np; i++) {
    m[i] = fresh ? 0.0f : (float)(0.1 * fz_value(in, &tame)), mr[i] = m[i];
    v[i] = fresh ? 0.0f : (float)fabs(0.01 * fz_value(in, &tame)), vr[i] = v[i];
  }
  float *P = fz_place(in, &gP, NULL);
  make_basis(in, k, P, Pr);
  int64_t *step = fz_place(in, &g8, NULL);
  static const int64_t steps[] = {0, 1, 2, 5, 6, 1000};
  *step = fresh ? 0 : steps[fz_pick(in, 6)];
  const int64_t step0 = *step;
  size_t wsb = 0;
  FZ_CHECK(nk_conda_workspace_size(ap, b, &wsb) == NK_OK, "conda ws");
  FZ_CHECK(wsb >= 2 * (ap > b ? ap : b) * sizeof(double), "conda ws %zu", wsb);
  const fz_geom gw = fz_vec(wsb / 8, 8);
  void *ws = fz_place(in, &gw, NULL);
  int *due = fz_place(in, &gi, NULL);
  /* refresh_due */
  const int64_t last = fz_pick(in, 3) == 0 ? -1 : step0 - (int64_t)fz_pick(in, 3);
  const unsigned bad_call = bad ? fz_pick(in, 3) : 3; /* 0 refresh_due, 1 update_moment, 2 step */
  int fail = bad_call == 0;
  int64_t tq = step0, gapq = d.update_proj_gap;
  int *dq = due;
  if (fail) {
    const unsigned q = fz_pick(in, 3);
    if (q == 0)
      tq = -1;
    else if (q == 1)
      gapq = 0 - (int64_t)fz_pick(in, 3);
    else
      dq = NULL;
  } else
    fz_writable(due, &gi);
  fz_snapshot();
  nk_status st = nk_conda_refresh_due(ctx, tq, gapq, last, dq);
  if (fail) {
    expect_fail(st, ctx, bad, "conda_refresh_due");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "refresh_due status %d", st);
  fz_check_arena(1, "conda_refresh_due");
  const int want_due = last < 0 || (step0 % d.update_proj_gap == 0 && last != step0);
  FZ_CHECK(*due == want_due, "refresh_due(%lld, %lld, %lld) = %d", (long long)step0,
           (long long)d.update_proj_gap, (long long)last, *due);
  /* update_moment */
  clear_writable();
  nk_conda_desc dm = d;
  const float *gq = g;
  float *mq = m;
  size_t rows = a, cols = b;
  fail = bad_call == 1;
  if (fail) {
    const unsigned q = fz_pick(in, 4);
    if (q == 0)
      dm.beta1 = 1.0;
    else if (q == 1)
      mq = (float *)g;
    else if (q == 2)
      gq = NULL;
    else
      rows = SIZE_MAX / 2, cols = 4;
  } else if (n)
    fz_writable(m, &ge);
  fz_snapshot();
  st = nk_conda_update_moment(ctx, &dm, rows, cols, gq, mq);
  if (fail) {
    expect_fail(st, ctx, bad, "conda_update_moment");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "update_moment status %d (%s)", st, ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, "conda_update_moment");
  /* step */
  clear_writable();
  nk_conda_desc ds = d;
  nk_conda_side sq = side;
  float *Wq = W, *vq = v;
  const float *Pq = P;
  size_t wsq = wsb;
  nk_status want = NK_OK;
  fail = bad_call == 2;
  if (fail) {
    want = NK_STATUS_INVALID_ARGUMENT;
    const unsigned q = fz_pick(in, 7);
    if (q == 0)
      ds.scale = INFINITY;
    else if (q == 1)
      ds.update_proj_gap = 0;
    else if (q == 2)
      sq = (nk_conda_side)(3 + fz_pick(in, 9));
    else if (q == 3)
      *step = -1;
    else if (q == 4 && n && side != NK_CONDA_SIDE_NONE)
      Pq = NULL;
    else if (q == 5 && n && side != NK_CONDA_SIDE_NONE)
      wsq = wsb - 8, want = NK_STATUS_MISUSE;
    else if (n)
      vq = W;
    else
      ds.eps = 0.0;
  } else {
    if (n) fz_writable(W, &ge), fz_writable(v, &ge);
    if (n && side != NK_CONDA_SIDE_NONE) fz_writable(ws, &gw);
    fz_writable(step, &g8);
  }
  fz_snapshot();
  st = nk_conda_step(ctx, &ds, sq, rows, cols, Wq, g, m, vq, Pq, step, ws, wsq);
  if (fail) {
    FZ_CHECK(st == want, "conda_step bad: status %d, want %d (%s)", st, want,
             ctx ? nk_context_message(ctx) : "");
    FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "conda_step: no message");
    fz_check_arena(0, "conda_step");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "conda_step status %d (%s)", st, ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, "conda_step");
  FZ_CHECK(*step == step0 + 1, "conda step counter");
  if (n == 0) return 1;
  const nk_ref_conda_hp hp = {d.lr,           d.beta1, d.beta2,       d.eps,
                              d.weight_decay, d.scale, d.correct_bias};
  double td = (double)step0;
  nk_ref_conda_step(a, b, (int)side, Pr, &hp, Wr, gr, mr, vr, &td);
  cmp_drift("exp_avg", n, m, mr);
  cmp_drift("exp_avg_sq", n, v, vr);
  /* OPEN (docs/security.md, as AdamP's rule above): a normalized moment m / (sqrt(v) + eps)
   * beyond 1e6 (v = 0, eps 1e-8: 5e11) projected back through P cancels, terms of 1e7 in the
   * W update leave its f32 rounding (W 10236.6 against 10240.1:
   * tests/fuzz/known/optim-conda-projection-cancellation-open): W not compared */
  for (size_t i = 0; i < n; i++)
    if (fabs(mr[i]) / (sqrt(fabs(vr[i])) + d.eps) > 1e6) return 1;
  cmp_drift("W", n, W, Wr);
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in;
  fz_start(&in, "optim", data, size);
  const unsigned bad = fz_pick(&in, 8) == 0 ? 1 + fz_pick(&in, BAD_COUNT - 1) : BAD_NONE;
  nk_context *ctx = fz_context(&in);
  const unsigned op = fz_pick(&in, 8);
  int ok;
  if (op < 2)
    ok = weight_norm(&in, bad, ctx);
  else if (op < 4)
    ok = adamp_sgdp(&in, 0, bad, ctx);
  else if (op < 5)
    ok = adamp_sgdp(&in, 1, bad, ctx);
  else if (op < 6)
    ok = nap(&in, bad, ctx);
  else
    ok = conda(&in, bad, ctx);
  if (ok) fz_valid++;
  return 0;
}
