/*
 * tests/fuzz/calib.c — libFuzzer harness: calibration (normkit.h "RL and calibration", second
 * half, and "Calibration and model merging"), one call per input:
 *   nk_temperature_nll (nll and dnll_dT optional), nk_temperature_fit, nk_temperature_apply (in
 *     place), nk_ece_top_label (ece/mce/reliability optional);
 *   nk_clr_closure, nk_clr_transform (in place), nk_clr_partial_corr (+ workspace size; the
 *     workspace placed in the arena, sometimes at an odd address);
 *   nk_cpn_mean_loglik (valid mask optional), nk_cpn_score (in place);
 *   nk_hcal_desc_default, nk_hcal_workspace_size, nk_hcal_loss (dprobs optional),
 *     nk_hcal_ensemble_init / _probs / _loss / _fit (nk_hcal_fit_desc_default, a few epochs);
 *   nk_pcb_merge_desc_default, nk_pcb_merge_workspace_size, nk_pcb_merge (task scales and
 *     theta0 optional).
 * Every buffer and workspace is placed in the guard-page arena (fuzz.h). 1 input in 8 breaks one
 * rule and must get the documented status with nothing written.
 *
 * Bounds (tests/ops/rlcal.c, hcal.c, pcb_merge.c):
 *   temperature nll 1e-13 relative + 1e-15; dnll_dT against -(1/T^2) NLL'(beta) in double
 *     1e-6 relative + 1e-8 (the test's finite-difference bound); apply 1 ulp of the double
 *     softmax (the header: double, rounded once);
 *   temperature_fit: the header documents no bound on T, so the check is its property: T in
 *     [t_min, t_max], nll (when asked) equal to nk_temperature_nll at T, and not above the
 *     reference's golden-section minimum by more than 1e-13 (1 + |NLL|);
 *   ece/mce 1e-13 relative + 1e-16, counts exact, confidence/accuracy 1e-13 relative;
 *   closure 1 ulp; clr 1 ulp + 1e-15; partial correlations (full-rank data, n > D) rho 1e-9
 *     absolute, partial_var 1e-9 relative; rank-deficient data |rho| <= 1 + 1e-9 or NaN;
 *   cpn 1e-14 relative + 1e-15;
 *   hcal loss 1e-10 relative + 1e-12; gradients (dprobs, dtheta, dnu) against central
 *     differences of the reference loss, 1e-5 of the largest |gradient| + 1e-9, where the
 *     difference is well defined (h and h/2 agree to 1e-9: the loss is piecewise linear between
 *     sort-order/cluster changes, and an entry whose step crosses one is skipped); ensemble
 *     probabilities 1e-14; init exactly (k + 1) / (M sqrt(M)) to 1e-15;
 *   hcal_ensemble_fit: the header documents no bound, so the check is its property: finite
 *     parameters, final_loss equal to nk_hcal_ensemble_loss at the result and not above the loss
 *     at the start;
 *   pcb merged 1 ulp + 1e-12 max|ref|.
 */
#include <float.h>

#include "fuzz.h"
#include "reference.h"

#define MAXN 12 /* rows */
#define MAXC 8  /* classes / parts */
#define MAXM 4  /* ensemble members */
#define MAXT 6  /* pcb tasks */
#define MAXP 40 /* pcb params */

enum {
  OP_TNLL, OP_TFIT, OP_TAPPLY, OP_ECE, OP_CLOSURE, OP_CLR, OP_PCORR, OP_CPN_LL, OP_CPN_SCORE,
  OP_HCAL_LOSS, OP_HCAL_PROBS, OP_HCAL_ELOSS, OP_HCAL_INIT, OP_HCAL_FIT, OP_PCB, OP_COUNT
};
static const char *const op_names[OP_COUNT] = {
    "temperature_nll", "temperature_fit", "temperature_apply", "ece_top_label", "clr_closure",
    "clr_transform", "clr_partial_corr", "cpn_mean_loglik", "cpn_score", "hcal_loss",
    "hcal_ensemble_probs", "hcal_ensemble_loss", "hcal_ensemble_init", "hcal_ensemble_fit",
    "pcb_merge"};

#define INV NK_STATUS_INVALID_ARGUMENT

static int close_d(double got, double ref, double rel, double abs_term) {
  if (isnan(ref)) return isnan(got);
  if (isnan(got)) return 0;
  if (got == ref) return 1;
  if (isinf(ref) || isinf(got)) return 0;
  return fabs(got - ref) <= rel * fabs(ref) + abs_term;
}
static double absf(double v) { return isfinite(v) ? fabs(v) : 0.0; }

static int finish(nk_context *ctx, unsigned op, unsigned bad, nk_status st, nk_status want) {
  if (want != NK_OK) {
    FZ_CHECK(st == want, "%s bad %u: status %d, want %d (%s)", op_names[op], bad, st, want,
             ctx ? nk_context_message(ctx) : "");
    FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "%s: no message for a failure",
             op_names[op]);
    fz_check_arena(0, op_names[op]);
    return 0;
  }
  FZ_CHECK(st == NK_OK, "%s: status %d (%s)", op_names[op], st,
           ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, op_names[op]);
  fz_valid++;
  return 1;
}

static void *place(fz_in *in, size_t n, size_t es, fz_geom *g) {
  *g = fz_vec(n, es);
  return fz_place(in, g, NULL);
}
/* Labels in [0, C). */
static int64_t *place_labels(fz_in *in, size_t n, size_t C, fz_geom *g) {
  int64_t *y = place(in, n, sizeof(int64_t), g);
  for (size_t r = 0; r < n; r++) y[r] = (int64_t)fz_pick(in, (unsigned)C);
  return y;
}
/* A bad label. */
static int64_t bad_label(fz_in *in, size_t C) {
  const int64_t t[] = {(int64_t)C, -1, INT64_MIN, INT64_MAX, (int64_t)C + 3};
  return t[fz_pick(in, 5)];
}
/* Logits: from d, one row in 8 constant. */
static void fill_logits(fz_in *in, float *z, size_t n, size_t C, const fz_dist *d, double *ref) {
  for (size_t r = 0; r < n; r++) {
    const int cst = fz_pick(in, 8) == 0;
    const double c = fz_value(in, d);
    for (size_t k = 0; k < C; k++) {
      z[r * C + k] = (float)(cst ? c : fz_value(in, d));
      ref[r * C + k] = z[r * C + k];
    }
  }
}

/* The NLL's rounding where its row terms z / T cancel: 4 DBL_EPSILON max|z| / T (the header). */
static double nll_cond(size_t n, size_t C, const double *z, double T) {
  double zmax = 0.0;
  for (size_t i = 0; i < n * C; i++) zmax = fmax(zmax, absf(z[i]));
  return 4.0 * DBL_EPSILON * zmax / T;
}
/* -(1/T^2) NLL'(beta) in double (NaN rows: NaN). */
static double ref_dnll_dT(size_t n, size_t C, const double *z, const int64_t *y, double T) {
  const double b = 1.0 / T;
  double G = 0.0;
  for (size_t r = 0; r < n; r++) {
    double mx = -INFINITY, s = 0.0, s1 = 0.0;
    for (size_t k = 0; k < C; k++) mx = fmax(mx, b * z[r * C + k]);
    for (size_t k = 0; k < C; k++) {
      const double e = exp(b * z[r * C + k] - mx);
      s += e, s1 += e * z[r * C + k];
      if (isnan(z[r * C + k])) s = NAN;
    }
    G += s1 / s - z[r * C + (size_t)y[r]];
  }
  return -(G / (double)n) / (T * T);
}

/* ----------------------------------------------------------- temperature and ECE ------------ */

static int run_temperature(fz_in *in, nk_context *ctx, unsigned op, int bad) {
  static double zr[MAXN * MAXC];
  size_t n = bad ? 1 + fz_pick(in, MAXN) : (op == OP_TAPPLY && fz_pick(in, 10) == 0 ? 0 : 1 + fz_pick(in, MAXN));
  size_t C = fz_pick(in, 5) == 0 ? 1 + fz_pick(in, 2) : 1 + fz_pick(in, MAXC);
  if (bad && C < 2) C = 2;
  const unsigned k = bad ? fz_pick(in, 6) : 0;
  nk_status want = bad ? INV : NK_OK, st;
  fz_geom gz, gy, go, go2;
  const fz_dist zd = fz_dist_pick(in, op == OP_TFIT ? 0 : 16);
  gz = fz_vec(n * C, sizeof(float));
  float *z = fz_place(in, &gz, NULL);
  fill_logits(in, z, n, C, &zd, zr);
  static const double T_t[] = {1.0, 1.0, 0.5, 2.0, 0.05, 20.0, 1e-3, 1e3};
  double T = T_t[fz_pick(in, 8)];
  size_t ncall = n, ccall = C;

  if (op == OP_TAPPLY) {
    float *p = fz_u8(in) & 1 ? z : place(in, n * C, sizeof(float), &go);
    go = fz_vec(n * C, sizeof(float));
    if (bad) {
      switch (k) {
      case 0: { static const double bt[] = {0.0, -1.0, INFINITY, NAN}; T = bt[fz_pick(in, 4)]; break; }
      case 1: ccall = 0; break;
      case 2: z = NULL; break;
      case 3: p = NULL; break;
      case 4: p = z + 1 + fz_pick(in, (unsigned)(n * C - 1)); break;
      default: p = (float *)(void *)((char *)p + 2); break;
      }
    } else {
      fz_writable(p, &go);
    }
    fz_snapshot();
    st = nk_temperature_apply(ctx, ncall, ccall, T, z, p);
    if (!finish(ctx, op, k, st, want)) return 0;
    for (size_t r = 0; r < n; r++) {
      const double *zz = zr + r * C;
      double mx = -INFINITY, s = 0.0;
      int has_nan = 0;
      for (size_t c = 0; c < C; c++) mx = fmax(mx, zz[c] / T), has_nan |= isnan(zz[c]);
      for (size_t c = 0; c < C; c++) s += exp(zz[c] / T - mx);
      for (size_t c = 0; c < C; c++) {
        const double e = has_nan ? NAN : exp(zz[c] / T - mx) / s;
        FZ_CHECK(fz_close(p[r * C + c], e, fz_ulp(e, NK_DTYPE_F32), NK_DTYPE_F32),
                 "probs[%zu][%zu] = %.9g, ref %.17g (T %g, z %g, mx %g)", r, c,
                 (double)p[r * C + c], e, T, zz[c], mx);
      }
    }
    return 0;
  }

  int64_t *y = place_labels(in, n, C, &gy);
  if (op == OP_ECE) {
    /* probabilities in [0, 1]: softmax of the logits (ties and exact 0/1 happen), or raw */
    for (size_t i = 0; i < n * C; i++) {
      if (isnan(zr[i]) || fz_pick(in, 4) == 0) zr[i] = (double)fz_pick(in, 9) / 8.0;
      else zr[i] = 1.0 / (1.0 + exp(-zr[i]));
      z[i] = (float)zr[i];
      zr[i] = z[i];
    }
    size_t M = fz_pick(in, 4) == 0 ? 1 + fz_pick(in, 3) : 1 + fz_pick(in, 20);
    const unsigned opt = fz_u8(in);
    fz_geom gb = fz_vec(M, sizeof(nk_ece_bin));
    double *ece = opt & 1 ? place(in, 1, sizeof(double), &go) : NULL;
    double *mce = opt & 2 ? place(in, 1, sizeof(double), &go2) : NULL;
    go = go2 = fz_vec(1, sizeof(double));
    nk_ece_bin *rel = opt & 4 ? fz_place(in, &gb, NULL) : NULL;
    if (bad) {
      switch (k) {
      case 0: M = 0; break;
      case 1: z[fz_pick(in, (unsigned)(n * C))] = fz_u8(in) & 1 ? NAN : (fz_u8(in) & 1 ? -0.5f : 1.5f); break;
      case 2: y[fz_pick(in, (unsigned)n)] = bad_label(in, C); break;
      case 3: if (fz_u8(in) & 1) ncall = 0; else ccall = 0; break;
      case 4: if (!ece) ece = place(in, 1, sizeof(double), &go); mce = ece; break;
      default: if (fz_u8(in) & 1) y = NULL; else z = NULL; break;
      }
    } else {
      fz_writable(ece, &go), fz_writable(mce, &go2), fz_writable(rel, &gb);
    }
    fz_snapshot();
    st = nk_ece_top_label(ctx, ncall, ccall, z, y, M, ece, mce, rel);
    if (!finish(ctx, op, k, st, want)) return 0;
    static double cnt[64], cf[64], ac[64];
    double rece, rmce;
    nk_ref_ece(n, C, zr, y, M, &rece, &rmce, cnt, cf, ac);
    if (ece) FZ_CHECK(close_d(*ece, rece, 1e-13, 1e-16), "ece %.17g, ref %.17g", *ece, rece);
    if (mce) FZ_CHECK(close_d(*mce, rmce, 1e-13, 1e-16), "mce %.17g, ref %.17g", *mce, rmce);
    for (size_t m = 0; rel && m < M; m++)
      FZ_CHECK((double)rel[m].count == cnt[m] && close_d(rel[m].confidence, cf[m], 1e-13, 0.0) &&
                   close_d(rel[m].accuracy, ac[m], 1e-13, 0.0),
               "bin %zu: %llu %.17g %.17g, ref %g %.17g %.17g", m,
               (unsigned long long)rel[m].count, rel[m].confidence, rel[m].accuracy, cnt[m],
               cf[m], ac[m]);
    return 0;
  }

  if (op == OP_TNLL) {
    const unsigned opt = fz_u8(in);
    double *nll = opt & 1 ? place(in, 1, sizeof(double), &go) : NULL;
    double *dT = opt & 2 ? place(in, 1, sizeof(double), &go2) : NULL;
    go = go2 = fz_vec(1, sizeof(double));
    if (bad) {
      switch (k) {
      case 0: { static const double bt[] = {0.0, -1.0, INFINITY, NAN}; T = bt[fz_pick(in, 4)]; break; }
      case 1: y[fz_pick(in, (unsigned)n)] = bad_label(in, C); break;
      case 2: if (fz_u8(in) & 1) ncall = 0; else ccall = 0; break;
      case 3: ncall = SIZE_MAX / 2 + 1; break;
      case 4: nll = (double *)(void *)y; break; /* an output over the labels */
      default: if (fz_u8(in) & 1) y = NULL; else z = NULL; break;
      }
    } else {
      fz_writable(nll, &go), fz_writable(dT, &go2);
    }
    fz_snapshot();
    st = nk_temperature_nll(ctx, ncall, ccall, z, y, T, nll, dT);
    if (!finish(ctx, op, k, st, want)) return 0;
    const double f = nk_ref_temperature_nll(n, C, zr, y, T);
    if (nll) FZ_CHECK(close_d(*nll, f, 1e-13, 1e-15 + nll_cond(n, C, zr, T)), "nll %.17g, ref %.17g (T %g)", *nll, f, T);
    if (dT) {
      const double g = ref_dnll_dT(n, C, zr, y, T);
      FZ_CHECK(close_d(*dT, g, 1e-6, 1e-8), "dnll_dT %.17g, ref %.17g (T %g)", *dT, g, T);
    }
    return 0;
  }

  /* OP_TFIT: finite logits */
  for (size_t i = 0; i < n * C; i++)
    if (!isfinite(zr[i])) z[i] = 0.0f, zr[i] = 0.0;
  static const double lo_t[] = {NK_TEMPERATURE_MIN_DEFAULT, 0.5, 1e-3, 0.05};
  static const double hi_t[] = {NK_TEMPERATURE_MAX_DEFAULT, 2.0, 1e3, 0.06};
  const unsigned b = fz_pick(in, 4);
  double tmin = lo_t[b], tmax = hi_t[b];
  double *Tout = place(in, 1, sizeof(double), &go);
  double *nll = fz_u8(in) & 1 ? place(in, 1, sizeof(double), &go2) : NULL;
  go2 = fz_vec(1, sizeof(double));
  if (bad) {
    switch (k) {
    case 0: if (fz_u8(in) & 1) tmin = tmax; else tmin = -1.0; break;
    case 1: z[fz_pick(in, (unsigned)(n * C))] = fz_u8(in) & 1 ? NAN : INFINITY; break;
    case 2: y[fz_pick(in, (unsigned)n)] = bad_label(in, C); break;
    case 3: Tout = NULL; break;
    case 4: nll = Tout; break;
    default: tmax = INFINITY; break;
    }
  } else {
    fz_writable(Tout, &go), fz_writable(nll, &go2);
  }
  fz_snapshot();
  st = nk_temperature_fit(ctx, ncall, ccall, z, y, tmin, tmax, Tout, nll);
  if (!finish(ctx, op, k, st, want)) return 0;
  const double Tf = *Tout;
  FZ_CHECK(Tf >= tmin && Tf <= tmax, "T %.17g outside [%g, %g]", Tf, tmin, tmax);
  const double f = nk_ref_temperature_nll(n, C, zr, y, Tf);
  if (nll) FZ_CHECK(close_d(*nll, f, 1e-13, 1e-15 + nll_cond(n, C, zr, Tf)), "fit nll %.17g, ref at T %.17g", *nll, f);
  const double rT = nk_ref_temperature_fit(n, C, zr, y, tmin, tmax);
  const double rf = nk_ref_temperature_nll(n, C, zr, y, rT);
  /* NLL is evaluated with an absolute rounding error ~ eps max|z| / T (the row terms z / T
   * cancel down to the NLL): two evaluations near the minimum differ by that much */
  const double tol = 1e-13 * (1.0 + fabs(rf)) + nll_cond(n, C, zr, fmin(Tf, rT));
  FZ_CHECK(f <= rf + tol, "fit: nll %.17g at T %.17g above the reference's %.17g at T %.17g",
           f, Tf, rf, rT);
  return 0;
}

/* ---------------------------------------------------------- compositional and CPN ----------- */

static int run_comp(fz_in *in, nk_context *ctx, unsigned op, int bad) {
  static double xr[MAXN * MAXC], outr[MAXN * MAXC], rho_r[MAXC * MAXC], pv_r[MAXC];
  const unsigned k = bad ? fz_pick(in, 6) : 0;
  nk_status want = bad ? INV : NK_OK, st;
  fz_geom gx, go, gw, gv;
  size_t D = 1 + fz_pick(in, MAXC), n;
  if (op == OP_PCORR) {
    D = 2 + fz_pick(in, MAXC - 1);
    n = fz_pick(in, 4) == 0 ? 2 + fz_pick(in, (unsigned)D) : D + 1 + fz_pick(in, MAXN - MAXC);
  } else {
    n = bad ? 1 + fz_pick(in, MAXN) : fz_pick(in, 10) == 0 ? 0 : 1 + fz_pick(in, MAXN);
    if (bad && D < 2) D = 2;
  }
  /* positive parts: log-normal of a decoded spread, or |values| of a decoded distribution */
  const fz_dist xd = fz_dist_pick(in, 0);
  static const double spread_t[] = {1.0, 0.1, 3.0, 10.0};
  const double spread = spread_t[fz_pick(in, 4)];
  const int lognormal = op == OP_PCORR || fz_pick(in, 3) != 0;
  const fz_dist nd = {0.0, 1.0, 0};
  gx = fz_vec(n * D, sizeof(float));
  float *x = fz_place(in, &gx, NULL);
  for (size_t i = 0; i < n * D; i++) {
    /* partial correlations with n > D: generic data from the generator (the reference needs
     * rank D - 1; stream bytes repeat and made rows with equal parts) */
    const double u = op == OP_PCORR && n > D ? ((double)(fz_rand(in) >> 11) * 0x1p-53 - 0.5) * 3.4641016151377544
                                             : fz_value(in, &nd);
    double v = lognormal ? exp(spread * u) : fabs(fz_value(in, &xd));
    if (!(v > 0.0) || !((float)v > 0.0f) || !isfinite((float)v)) v = 1.0;
    x[i] = (float)v;
    xr[i] = x[i];
  }
  if (op == OP_CLOSURE || op == OP_CLR) {
    static const float kappa_t[] = {1.0f, 1.0f, 100.0f, 1e-3f, 1e30f};
    float kappa = kappa_t[fz_pick(in, 5)];
    float *out = fz_u8(in) & 1 ? x : place(in, n * D, sizeof(float), &go);
    go = fz_vec(n * D, sizeof(float));
    size_t dcall = D;
    if (bad) {
      switch (k) {
      case 0: if (op == OP_CLOSURE) { static const float bk[] = {0.0f, -1.0f, INFINITY, NAN}; kappa = bk[fz_pick(in, 4)]; } else dcall = 0; break;
      case 1: { static const float bv[] = {0.0f, -1.0f, INFINITY, NAN, -0.0f}; x[fz_pick(in, (unsigned)(n * D))] = bv[fz_pick(in, 5)]; break; }
      case 2: dcall = 0; break;
      case 3: out = NULL; break;
      case 4: out = x + 1 + fz_pick(in, (unsigned)(n * D - 1)); break;
      default: x = NULL; break;
      }
    } else {
      fz_writable(out, &go);
    }
    fz_snapshot();
    st = op == OP_CLOSURE ? nk_clr_closure(ctx, n, dcall, kappa, x, out)
                          : nk_clr_transform(ctx, n, dcall, x, out);
    if (!finish(ctx, op, k, st, want)) return 0;
    for (size_t r = 0; r < n; r++) {
      if (op == OP_CLOSURE) nk_ref_closure(D, kappa, xr + r * D, outr);
      else nk_ref_clr(D, xr + r * D, outr);
      for (size_t i = 0; i < D; i++) {
        const double b = fz_ulp(outr[i], NK_DTYPE_F32) + (op == OP_CLR ? 1e-15 : 0.0);
        FZ_CHECK(fz_close(out[r * D + i], outr[i], b, NK_DTYPE_F32),
                 "%s[%zu][%zu] = %.9g, ref %.17g (D %zu)", op_names[op], r, i,
                 (double)out[r * D + i], outr[i], D);
      }
    }
    return 0;
  }
  /* OP_PCORR */
  static const double rc_t[] = {NK_CLR_RCOND_DEFAULT, 1e-6, 1e-14};
  double rcond = rc_t[fz_pick(in, 3)];
  const size_t wsb = nk_clr_partial_corr_workspace_size(D);
  FZ_CHECK(wsb >= 8 * D * D, "workspace size %zu for D %zu", wsb, D);
  gw = fz_vec(wsb, 1); /* any address (normkit.h, "Workspaces") */
  uint8_t *ws = fz_place(in, &gw, NULL);
  size_t wcall = wsb;
  double *rho = place(in, D * D, sizeof(double), &go);
  double *pv = fz_u8(in) & 1 ? place(in, D, sizeof(double), &gv) : NULL;
  gv = fz_vec(D, sizeof(double));
  nk_status wantb = INV;
  size_t ncall = n, dcall = D;
  if (bad) {
    switch (k) {
    case 0: { static const double br[] = {0.0, 1.0, -1.0, NAN}; rcond = br[fz_pick(in, 4)]; break; }
    case 1: if (fz_u8(in) & 1) ncall = 1; else dcall = 1; break;
    case 2: wcall = wsb - 1 - fz_pick(in, 8); wantb = NK_STATUS_MISUSE; break;
    case 3: if (fz_u8(in) & 1) rho = NULL; else ws = NULL, wantb = NK_STATUS_MISUSE; break;
    case 4: if (pv) pv = rho + 1; else x[fz_pick(in, (unsigned)(n * D))] = 0.0f; break;
    default: ws = (uint8_t *)rho; break; /* the workspace overlapping rho */
    }
    want = wantb;
  } else {
    fz_writable(rho, &go), fz_writable(pv, &gv), fz_writable(ws, &gw);
  }
  fz_snapshot();
  st = nk_clr_partial_corr(ctx, ncall, dcall, x, rcond, rho, pv, ws, wcall);
  if (!finish(ctx, op, k, st, want)) return 0;
  if (n > D) {
    nk_ref_clr_partial_corr(n, D, xr, rho_r, pv_r);
    for (size_t i = 0; i < D * D; i++)
      FZ_CHECK(close_d(rho[i], rho_r[i], 0.0, 1e-9), "rho[%zu] %.17g, ref %.17g (n %zu D %zu)", i,
               rho[i], rho_r[i], n, D);
    for (size_t i = 0; pv && i < D; i++)
      FZ_CHECK(close_d(pv[i], pv_r[i], 1e-9, 0.0), "partial_var[%zu] %.17g, ref %.17g (n %zu D %zu x0 %g %g rcond %g)", i, pv[i],
               pv_r[i], n, D, xr[0], xr[1], rcond);
  } else {
    for (size_t i = 0; i < D * D; i++)
      FZ_CHECK(isnan(rho[i]) || fabs(rho[i]) <= 1.0 + 1e-9, "rank deficient rho[%zu] %g", i, rho[i]);
  }
  return 0;
}

static int run_cpn(fz_in *in, nk_context *ctx, unsigned op, int bad) {
  static double lr[MAXN * MAXP], cr[MAXN], prr[MAXN];
  static const double zeros[MAXP];
  const unsigned k = bad ? fz_pick(in, 5) : 0;
  nk_status want = bad ? INV : NK_OK, st;
  fz_geom gl, gv, go, gc, gp;
  const size_t n = bad ? 2 + fz_pick(in, MAXN - 1) : fz_pick(in, 10) == 0 ? 0 : 1 + fz_pick(in, MAXN);
  const fz_dist d = fz_dist_pick(in, 16);
  if (op == OP_CPN_LL) {
    const size_t T = 1 + fz_pick(in, MAXP);
    gl = fz_vec(n * T, sizeof(float));
    float *lp = fz_place(in, &gl, NULL);
    fz_fill(in, lp, &gl, NK_DTYPE_F32, &d, lr);
    unsigned char *valid = NULL;
    if (fz_u8(in) & 1) {
      gv = fz_vec(n * T, 1);
      valid = fz_place(in, &gv, NULL);
      const unsigned rate = fz_pick(in, 4);
      for (size_t i = 0; i < n * T; i++) valid[i] = fz_pick(in, 4) < rate ? 0 : (unsigned char)(1 + fz_pick(in, 255));
    }
    double *out = place(in, n, sizeof(double), &go);
    size_t tcall = T;
    if (bad) {
      switch (k) {
      case 0: tcall = 0; break;
      case 1: lp = NULL; break;
      case 2: out = NULL; break;
      case 3: out = (double *)(void *)lp; break;
      default: tcall = SIZE_MAX / 2 + 1; break;
      }
    } else {
      fz_writable(out, &go);
    }
    fz_snapshot();
    st = nk_cpn_mean_loglik(ctx, n, tcall, lp, valid, out);
    if (!finish(ctx, op, k, st, want)) return 0;
    for (size_t r = 0; r < n; r++) {
      const double e = nk_ref_cpn(T, lr + r * T, valid ? valid + r * T : NULL, zeros, NULL, 0.0);
      FZ_CHECK(close_d(out[r], e, 1e-14, 1e-15), "mean_loglik[%zu] %.17g, ref %.17g", r, out[r], e);
    }
    return 0;
  }
  double *cond = place(in, n, sizeof(double), &gc), *prior = place(in, n, sizeof(double), &gp);
  for (size_t i = 0; i < n; i++) cond[i] = cr[i] = fz_value(in, &d), prior[i] = prr[i] = fz_value(in, &d);
  static const double a_t[] = {0.0, 1.0, 0.9, 0.5, -2.0, 1e10};
  double alpha = a_t[fz_pick(in, 6)];
  const unsigned where = fz_pick(in, 4);
  go = fz_vec(n, sizeof(double));
  double *score = where == 1 ? cond : where == 2 ? prior : fz_place(in, &go, NULL);
  if (bad) {
    switch (k) {
    case 0: { static const double ba[] = {NAN, INFINITY, -INFINITY}; alpha = ba[fz_pick(in, 3)]; break; }
    case 1: cond = NULL; break;
    case 2: score = NULL; break;
    case 3: score = prior + 1; break;
    default: score = (double *)(void *)((char *)score + 4); break;
    }
  } else {
    fz_writable(score, &go);
  }
  fz_snapshot();
  st = nk_cpn_score(ctx, n, cond, prior, alpha, score);
  if (!finish(ctx, op, k, st, want)) return 0;
  for (size_t i = 0; i < n; i++) {
    const double e = cr[i] - alpha * prr[i];
    FZ_CHECK(close_d(score[i], e, 1e-14, 1e-15), "score[%zu] %.17g, ref %.17g", i, score[i], e);
  }
  return 0;
}

/* ------------------------------------------------------------------ h-calibration ----------- */

/* The h-calibration workspace (6 n K + 16448 doubles: over 128 KiB) does not fit an arena slot:
 * it gets its own region with a PROT_NONE guard page on each side, canary-filled, placed
 * against the trailing guard page, the leading one or at an odd offset; the call may
 * write its first `bytes` bytes (the contents are scratch), nothing else, and nothing at all
 * when it fails. */
#define WS_CAP (192 * 1024)
static uint8_t *ws_base, *ws_snap;
static size_t ws_off, ws_len;
static uint8_t *ws_place(fz_in *in, size_t bytes) {
  if (!ws_base) {
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    uint8_t *m = mmap(NULL, WS_CAP + 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    if (m == MAP_FAILED || mprotect(m, pg, PROT_NONE) || mprotect(m + pg + WS_CAP, pg, PROT_NONE))
      abort();
    ws_base = m + pg;
    ws_snap = malloc(WS_CAP);
    if (!ws_snap) abort();
  }
  FZ_CHECK(bytes <= WS_CAP - 64, "workspace of %zu bytes does not fit", bytes);
  memset(ws_base, 0xFF, WS_CAP);
  const unsigned k = fz_pick(in, 4);
  ws_off = k <= 1 ? WS_CAP - bytes : k == 2 ? 0 : 1 + fz_pick(in, 63); /* any address */
  ws_len = bytes;
  return ws_base + ws_off;
}
static void ws_snapshot(void) { memcpy(ws_snap, ws_base, WS_CAP); }
static void ws_check(int ok) {
  if (ok) memcpy(ws_snap + ws_off, ws_base + ws_off, ws_len);
  for (size_t i = 0; i < WS_CAP; i++)
    if (ws_base[i] != ws_snap[i])
      FZ_FAIL("workspace region byte %zu written (%s call; workspace at %zu, %zu bytes)", i,
              ok ? "successful" : "failed", ws_off, ws_len);
}

static double ref_hloss(const nk_hcal_desc *d, size_t n, size_t K, const double *P,
                        const int64_t *y) {
  return nk_ref_hcal_loss(n, K, P, y, d->veclen, d->epsilon, d->lossweight, d->leave_one_out,
                          d->weighting == NK_HCAL_CLUSTER, d->clusters, d->kmeans_iters);
}
/* The absolute term of the loss bound: the test's 1e-12, plus the rounding of the window sums
 * when they cancel (a calibrated window sums p - o to ~0): each |S_i| / w carries up to
 * w DBL_EPSILON (w terms of magnitude <= 1), times lossweight (the header). */
static double hloss_abs(const nk_hcal_desc *d) {
  return 1e-12 + d->lossweight * (double)(d->veclen + 1) * DBL_EPSILON;
}
/* Ensemble loss of the reference (probs from the reference calibrator). */
static double ref_eloss(const nk_hcal_desc *d, size_t n, size_t K, const double *z,
                        const int64_t *y, size_t M, const double *th, const double *nu) {
  double P[MAXN * MAXC];
  nk_ref_hcal_ensemble_probs(n, K, z, M, th, nu, P);
  return ref_hloss(d, n, K, P, y);
}
/* The gradient entry g of f at v[i] against central differences (h relative to |v[i]| or
 * absolute), where h and h/2 agree (no kink crossed); gmax scales the bound. */
typedef double (*loss_fn)(const void *ctx, double *v);
static void check_grad(const char *what, size_t i, double g, double gmax, double *v, double h,
                       double loss_abs, loss_fn f, const void *fc) {
  const double v0 = v[i], f0 = f(fc, v);
  double fw[2], bw[2]; /* forward and backward one-sided slopes at h and h / 2 */
  for (int s = 0; s < 2; s++) {
    const double hh = s ? h / 2 : h;
    v[i] = v0 + hh;
    fw[s] = (f(fc, v) - f0) / hh;
    v[i] = v0 - hh;
    bw[s] = (f0 - f(fc, v)) / hh;
  }
  v[i] = v0;
  /* the difference quotients' own rounding: the loss carries that of its terms (p, o and
   * 1 - p of magnitude up to 1, times lossweight: loss_abs; a probability near 1 moves by less
   * than its ulp), and a few ulp of itself, over the step h / 2 */
  const double noise = 8.0 * fmax(DBL_EPSILON * fabs(f0), loss_abs) / (h / 2);
  const double tol = 1e-9 * (fabs(fw[1]) + gmax) + 1e-12 + noise;
  /* a kink (sort-order, cluster or tolerance change, or a tie exactly at v0: the slopes on the
   * two sides differ and autograd's choice is one of them): not comparable, skipped */
  if (!(fabs(fw[0] - fw[1]) <= tol && fabs(bw[0] - bw[1]) <= tol && fabs(fw[1] - bw[1]) <= tol))
    return;
  const double fd = 0.5 * (fw[1] + bw[1]);
  FZ_CHECK(fabs(g - fd) <= 1e-5 * gmax + 1e-9 + noise, "%s[%zu] = %.17g, central difference "
           "%.17g (largest %.3g, noise %.3g)", what, i, g, fd, gmax, noise);
}
typedef struct hctx {
  const nk_hcal_desc *d;
  size_t n, K, M;
  const double *z, *P, *th, *nu;
  const int64_t *y;
} hctx;
static double f_probs(const void *c, double *v) {
  const hctx *h = c;
  return ref_hloss(h->d, h->n, h->K, v, h->y);
}
static double f_theta(const void *c, double *v) {
  const hctx *h = c;
  return ref_eloss(h->d, h->n, h->K, h->z, h->y, h->M, v, h->nu);
}
static double f_nu(const void *c, double *v) {
  const hctx *h = c;
  return ref_eloss(h->d, h->n, h->K, h->z, h->y, h->M, h->th, v);
}

static int run_hcal(fz_in *in, nk_context *ctx, unsigned op, int bad) {
  static double zr[MAXN * MAXC], pr[MAXN * MAXC];
  const unsigned k = bad ? fz_pick(in, 6) : 0;
  nk_status want = bad ? INV : NK_OK, st;
  fz_geom gz, gy, go, gd, gt, gn, g1, g2;
  nk_hcal_desc d = nk_hcal_desc_default();
  FZ_CHECK(d.veclen == 200 && d.epsilon == 1e-20 && d.lossweight == 1e5 && d.leave_one_out == 1 &&
               d.weighting == NK_HCAL_CLUSTER && d.clusters == 15 && d.kmeans_iters == 25,
           "hcal desc defaults");
  static const size_t vl_t[] = {200, 2, 4, 10, 0};
  d.veclen = vl_t[fz_pick(in, 5)];
  static const double ep_t[] = {1e-20, 1e-20, 1e-3, 0.0};
  d.epsilon = ep_t[fz_pick(in, 4)];
  d.lossweight = fz_u8(in) & 1 ? 1e5 : 1.0;
  d.leave_one_out = fz_pick(in, 3) != 0;
  d.weighting = fz_pick(in, 3) ? NK_HCAL_CLUSTER : NK_HCAL_UNWEIGHTED;
  static const size_t cl_t[] = {15, 1, 3, 40};
  d.clusters = cl_t[fz_pick(in, 4)];
  static const size_t it_t[] = {25, 0, 3};
  d.kmeans_iters = it_t[fz_pick(in, 3)];
  const size_t n = bad ? 1 + fz_pick(in, MAXN) : fz_pick(in, 10) == 0 ? 0 : 1 + fz_pick(in, MAXN);
  const size_t K = 1 + fz_pick(in, MAXC);
  const size_t M = op == OP_HCAL_LOSS ? 0 : 1 + fz_pick(in, MAXM);
  size_t wsb = 0;
  FZ_CHECK(nk_hcal_workspace_size(ctx, n, K, M, &wsb) == NK_OK, "hcal workspace size");
  gy = fz_vec(n, sizeof(int64_t));
  int64_t *y = fz_place(in, &gy, NULL);
  for (size_t r = 0; r < n; r++) y[r] = (int64_t)fz_pick(in, (unsigned)K);
  const fz_dist zd = fz_dist_pick(in, 0);
  const fz_dist ud = {0.5, 0.29, 0};

  if (op == OP_HCAL_INIT) {
    size_t m = 1 + fz_pick(in, MAXM);
    double *th = place(in, m, sizeof(double), &gt), *nu = place(in, m, sizeof(double), &gn);
    if (bad) { /* members 0 or a NULL (the header names no overlap rule for init) */
      const unsigned w = fz_pick(in, 3);
      if (w == 0) m = 0; else if (w == 1) th = NULL; else nu = NULL;
    } else {
      fz_writable(th, &gt), fz_writable(nu, &gn);
    }
    fz_snapshot();
    st = nk_hcal_ensemble_init(ctx, m, th, nu);
    if (!finish(ctx, op, k, st, want)) return 0;
    for (size_t i = 0; i < m; i++) {
      const double e = (double)(i + 1) / ((double)m * sqrt((double)m));
      FZ_CHECK(fabs(fabs(th[i]) - e) <= 1e-15 && fabs(fabs(nu[i]) - e) <= 1e-15,
               "init[%zu] %.17g %.17g, magnitude %.17g", i, th[i], nu[i], e);
    }
    return 0;
  }

  uint8_t *ws = ws_place(in, wsb);
  size_t wcall = wsb;

  if (op == OP_HCAL_LOSS) {
    gz = fz_vec(n * K, sizeof(double));
    double *P = fz_place(in, &gz, NULL);
    for (size_t i = 0; i < n * K; i++) {
      double v = fz_value(in, &ud);
      if (fz_pick(in, 8) == 0) v = (double)fz_pick(in, 2);
      P[i] = pr[i] = fmin(fmax(v, 0.0), 1.0);
    }
    double *loss = place(in, 1, sizeof(double), &go);
    double *dP = fz_u8(in) & 1 ? place(in, n * K, sizeof(double), &gd) : NULL;
    gd = fz_vec(n * K, sizeof(double));
    size_t kcall = K;
    if (bad) {
      switch (k) {
      case 0: { const unsigned w = fz_pick(in, 4);
        if (w == 0) d.veclen = 3; else if (w == 1) d.epsilon = -1.0; else if (w == 2) d.lossweight = 0.0; else d.lossweight = NAN;
        break; }
      case 1: P[fz_pick(in, (unsigned)(n * K))] = fz_u8(in) & 1 ? NAN : (fz_u8(in) & 1 ? -1e-300 : 1.0000001); break;
      case 2: y[fz_pick(in, (unsigned)n)] = fz_u8(in) & 1 ? -1 : (int64_t)K; break;
      case 3: if (wsb) wcall = wsb - 1 - fz_pick(in, 8), want = NK_STATUS_MISUSE; else kcall = 0; break;
      case 4: ws = NULL, want = NK_STATUS_MISUSE; break;
      default: if (dP) dP = P; else loss = NULL; break;
      }
    } else {
      fz_writable(loss, &go), fz_writable(dP, &gd);
    }
    fz_snapshot();
    ws_snapshot();
    st = nk_hcal_loss(ctx, &d, n, kcall, P, y, loss, dP, ws, wcall);
    ws_check(want == NK_OK);
    if (!finish(ctx, op, k, st, want)) return 0;
    const double L = n ? ref_hloss(&d, n, K, pr, y) : 0.0;
    FZ_CHECK(close_d(*loss, L, 1e-10, hloss_abs(&d)), "hcal loss %.17g, ref %.17g", *loss, L);
    if (!dP || n == 0) return 0;
    double gmax = 0.0;
    for (size_t i = 0; i < n * K; i++) {
      FZ_CHECK(isfinite(dP[i]), "dprobs[%zu] = %g", i, dP[i]);
      gmax = fmax(gmax, fabs(dP[i]));
    }
    hctx hc = {&d, n, K, 0, NULL, NULL, NULL, NULL, y};
    /* an entry tied with another is ordered by its index at P but by its value on either side
     * of it (a kink at P itself): only untied entries away from 0 and 1 are compared */
    for (size_t i = 0; i < n * K; i++) {
      int tied = 0;
      for (size_t j = 0; j < n * K; j++) tied |= j != i && fabs(pr[j] - pr[i]) <= 1e-5;
      if (!tied && pr[i] > 1e-5 && pr[i] < 1.0 - 1e-5)
        check_grad("dprobs", i, dP[i], gmax, pr, 1e-6, hloss_abs(&d), f_probs, &hc);
    }
    return 0;
  }

  /* ensemble: logits (finite), theta, nu */
  gz = fz_vec(n * K, sizeof(double));
  double *z = fz_place(in, &gz, NULL);
  for (size_t i = 0; i < n * K; i++) {
    double v = fz_value(in, &zd);
    if (!isfinite(v) || fabs(v) > 1e6) v = fmod(isfinite(v) ? v : 1.0, 50.0);
    z[i] = zr[i] = v;
  }
  double th0[MAXM], nu0[MAXM];
  double *th = place(in, M, sizeof(double), &gt), *nu = place(in, M, sizeof(double), &gn);
  const int from_init = fz_u8(in) & 1;
  for (size_t i = 0; i < M; i++) {
    th[i] = th0[i] = from_init ? (double)(i + 1) / ((double)M * sqrt((double)M)) : 4.0 * (fz_value(in, &ud) - 0.5);
    nu[i] = nu0[i] = from_init ? th[i] : 4.0 * (fz_value(in, &ud) - 0.5);
  }
  if (fabs(nu[0]) < 1e-3) nu[0] = nu0[0] = 0.5;
  size_t kcall = K;
  if (bad && k == 5 && n == 0) bad = 0, want = NK_OK; /* nothing to make invalid below */

  if (op == OP_HCAL_PROBS) {
    double *P = place(in, n * K, sizeof(double), &go);
    go = fz_vec(n * K, sizeof(double));
    if (bad) {
      switch (k) {
      case 0: kcall = 0; break;
      case 1: th[fz_pick(in, (unsigned)M)] = fz_u8(in) & 1 ? NAN : INFINITY; break;
      case 2: for (size_t i = 0; i < M; i++) nu[i] = 0.0; break;
      case 3: z[fz_pick(in, (unsigned)(n * K))] = fz_u8(in) & 1 ? NAN : -INFINITY; break;
      case 4: P = fz_u8(in) & 1 ? NULL : z; break;
      default: th = NULL; break;
      }
      if (k == 3 && n == 0) bad = 0, want = NK_OK;
    } else {
      fz_writable(P, &go);
    }
    fz_snapshot();
    st = nk_hcal_ensemble_probs(ctx, n, kcall, z, M, th, nu, P);
    if (!finish(ctx, op, k, st, want)) return 0;
    nk_ref_hcal_ensemble_probs(n, K, zr, M, th, nu, pr);
    for (size_t i = 0; i < n * K; i++)
      FZ_CHECK(fabs(P[i] - pr[i]) <= 1e-14, "ensemble probs[%zu] %.17g, ref %.17g", i, P[i], pr[i]);
    return 0;
  }

  if (op == OP_HCAL_ELOSS) {
    const unsigned opt = fz_u8(in);
    double *loss = place(in, 1, sizeof(double), &go);
    double *dth = opt & 1 ? place(in, M, sizeof(double), &g1) : NULL;
    double *dnu = opt & 2 ? place(in, M, sizeof(double), &g2) : NULL;
    g1 = g2 = fz_vec(M, sizeof(double));
    double *P = opt & 4 ? place(in, n * K, sizeof(double), &gd) : NULL;
    gd = fz_vec(n * K, sizeof(double));
    if (bad) {
      switch (k) {
      case 0: d.veclen = 1 + 2 * fz_pick(in, 10); break;
      case 1: nu[fz_pick(in, (unsigned)M)] = NAN; break;
      case 2: if (n) y[fz_pick(in, (unsigned)n)] = (int64_t)K + fz_pick(in, 3); else kcall = 0; break;
      case 3: wcall = wsb - 1 - fz_pick(in, 8), want = NK_STATUS_MISUSE; break;
      case 4: ws = NULL, want = NK_STATUS_MISUSE; break;
      default: if (dth) dth = th; else loss = (double *)(void *)y; break;
      }
      if (k == 5 && n == 0 && !dth) bad = 0, want = NK_OK, loss = place(in, 1, sizeof(double), &go);
    }
    if (!bad) fz_writable(loss, &go), fz_writable(dth, &g1), fz_writable(dnu, &g2), fz_writable(P, &gd);
    fz_snapshot();
    ws_snapshot();
    st = nk_hcal_ensemble_loss(ctx, &d, n, kcall, z, y, M, th, nu, loss, dth, dnu, P, ws, wcall);
    ws_check(!bad);
    if (!finish(ctx, op, k, st, want)) return 0;
    if (n == 0) return 0;
    nk_ref_hcal_ensemble_probs(n, K, zr, M, th, nu, pr);
    if (P)
      for (size_t i = 0; i < n * K; i++)
        FZ_CHECK(fabs(P[i] - pr[i]) <= 1e-14, "ensemble loss probs[%zu] %.17g, ref %.17g", i, P[i], pr[i]);
    const double L = ref_hloss(&d, n, K, pr, y);
    FZ_CHECK(close_d(*loss, L, 1e-10, hloss_abs(&d)), "ensemble loss %.17g, ref %.17g", *loss, L);
    hctx hc = {&d, n, K, M, zr, NULL, th0, nu0, y};
    double gmax = 0.0;
    for (size_t i = 0; i < M; i++) gmax = fmax(gmax, fmax(dth ? absf(dth[i]) : 0.0, dnu ? absf(dnu[i]) : 0.0));
    for (size_t i = 0; i < M; i++) {
      if (dth && th0[i] != 0.0) check_grad("dtheta", i, dth[i], gmax, th0, 1e-6 * fabs(th0[i]), hloss_abs(&d), f_theta, &hc);
      if (dnu && nu0[i] != 0.0) check_grad("dnu", i, dnu[i], gmax, nu0, 1e-6 * fabs(nu0[i]), hloss_abs(&d), f_nu, &hc);
    }
    return 0;
  }

  /* OP_HCAL_FIT: a few epochs; start loss from the library's own ensemble loss */
  nk_hcal_fit_desc f = nk_hcal_fit_desc_default();
  FZ_CHECK(f.epochs == 2000 && f.lr == 5e-3 && f.beta1 == 0.9 && f.beta2 == 0.999 && f.eps == 1e-8,
           "fit desc defaults");
  f.epochs = fz_pick(in, 12);
  static const double lr_t[] = {5e-3, 5e-2, 0.0};
  f.lr = lr_t[fz_pick(in, 3)];
  double *fl = fz_u8(in) & 1 ? place(in, 1, sizeof(double), &go) : NULL;
  go = fz_vec(1, sizeof(double));
  if (bad) {
    switch (k) {
    case 0: if (fz_u8(in) & 1) f.beta1 = 1.0; else f.lr = -1.0; break;
    case 1: f.eps = 0.0; break;
    case 2: if (n) y[0] = -1; else kcall = 0; break;
    case 3: wcall = wsb - 1 - fz_pick(in, 8), want = NK_STATUS_MISUSE; break;
    case 4: ws = NULL, want = NK_STATUS_MISUSE; break;
    default: nu = th; break;
    }
  } else {
    fz_writable(th, &gt), fz_writable(nu, &gn), fz_writable(fl, &go);
  }
  double L0 = 0.0;
  if (!bad && n > 0) {
    static double ws2[WS_CAP / 8];
    double l0;
    FZ_CHECK(wsb <= sizeof ws2 && nk_hcal_ensemble_loss(NULL, &d, n, K, z, y, M, th, nu, &l0, NULL, NULL, NULL, ws2, wsb) == NK_OK, "start loss");
    L0 = l0;
  }
  fz_snapshot();
  ws_snapshot();
  st = nk_hcal_ensemble_fit(ctx, &d, &f, n, kcall, z, y, M, th, nu, fl, ws, wcall);
  ws_check(!bad);
  if (!finish(ctx, op, k, st, want)) return 0;
  for (size_t i = 0; i < M; i++) FZ_CHECK(isfinite(th[i]) && isfinite(nu[i]), "fit theta/nu[%zu] %g %g", i, th[i], nu[i]);
  if (n == 0) return 0;
  static double ws3[WS_CAP / 8];
  double L1;
  FZ_CHECK(nk_hcal_ensemble_loss(NULL, &d, n, K, z, y, M, th, nu, &L1, NULL, NULL, NULL, ws3, wsb) == NK_OK, "end loss");
  FZ_CHECK(L1 <= L0, "fit: loss %.17g above the start's %.17g", L1, L0);
  if (fl) FZ_CHECK(*fl == L1, "final_loss %.17g, recomputed %.17g", *fl, L1);
  return 0;
}

/* ------------------------------------------------------------------ PCB-Merging ------------- */

static int run_pcb(fz_in *in, nk_context *ctx, unsigned op, int bad) {
  static double tr[MAXT * MAXP], thr[MAXP], mr[MAXP];
  const unsigned k = bad ? fz_pick(in, 6) : 0;
  nk_status want = bad ? INV : NK_OK, st;
  fz_geom gt, gl, gh, go, gw;
  const size_t n = 1 + fz_pick(in, MAXT), dp = fz_pick(in, 12) == 0 ? 0 : 1 + fz_pick(in, MAXP);
  nk_pcb_merge_desc d = nk_pcb_merge_desc_default(n, dp);
  FZ_CHECK(d.tasks == n && d.params == dp && d.keep_ratio == 0.1 && d.clip_ratio == 1e-4 &&
               d.scale == 1.0, "pcb desc defaults");
  static const double r_t[] = {0.1, 0.5, 1.0, 0.3, 0.9};
  static const double a_t[] = {1e-4, 0.0, 0.01, 0.2, 0.45};
  static const double s_t[] = {1.0, 1.2, -0.5, 0.0};
  d.keep_ratio = r_t[fz_pick(in, 5)];
  d.clip_ratio = a_t[fz_pick(in, 5)];
  d.scale = s_t[fz_pick(in, 4)];
  const fz_dist td = fz_dist_pick(in, 0);
  gt = fz_vec(n * dp, sizeof(float));
  float *tv = fz_place(in, &gt, NULL);
  fz_fill(in, tv, &gt, NK_DTYPE_F32, &td, tr);
  for (size_t i = 0; i < n * dp; i++) {
    if (!isfinite(tr[i]) || fz_pick(in, 16) == 0) tv[i] = 0.0f, tr[i] = 0.0;
  }
  const unsigned opt = fz_u8(in);
  double *lam = NULL;
  if (opt & 1) {
    lam = place(in, n, sizeof(double), &gl);
    for (size_t i = 0; i < n; i++) lam[i] = 0.5 + (double)fz_pick(in, 16) / 16.0;
  }
  float *th = NULL;
  if (opt & 2) {
    const fz_dist hd = fz_dist_pick(in, 0);
    gh = fz_vec(dp, sizeof(float));
    th = fz_place(in, &gh, NULL);
    fz_fill(in, th, &gh, NK_DTYPE_F32, &hd, thr);
    for (size_t j = 0; j < dp; j++)
      if (!isfinite(thr[j])) th[j] = 0.0f, thr[j] = 0.0;
  }
  float *out = place(in, dp, sizeof(float), &go);
  /* the reference decides whether the indices are in range (nonzero: INVALID_ARGUMENT) */
  const int ref_bad = dp > 0 && nk_ref_pcb_merge(n, dp, tr, d.keep_ratio, d.clip_ratio, lam, d.scale, th ? thr : NULL, mr) != 0;
  size_t wsb = 0;
  const nk_status sws = nk_pcb_merge_workspace_size(ctx, &d, &wsb);
  if (ref_bad) {
    FZ_CHECK(sws == INV, "workspace size of a desc the reference rejects: %d", sws);
    want = INV;
  } else {
    FZ_CHECK(sws == NK_OK, "pcb workspace size: %d (%s)", sws, ctx ? nk_context_message(ctx) : "");
  }
  gw = fz_vec(wsb, 1); /* any address (normkit.h, "Workspaces") */
  uint8_t *ws = fz_place(in, &gw, NULL);
  size_t wcall = wsb;
  if (bad) {
    if (dp == 0 && k >= 2) k == 2 ? (void)(d.tasks = 0) : (void)(d.keep_ratio = 0.0);
    switch (k) {
    case 0: d.tasks = fz_u8(in) & 1 ? 0 : NK_PCB_MAX_TASKS + 1; break;
    case 1: { static const double br[] = {0.0, -0.1, 1.5, NAN}; d.keep_ratio = br[fz_pick(in, 4)]; break; }
    case 2: if (dp) tv[fz_pick(in, (unsigned)(n * dp))] = fz_u8(in) & 1 ? NAN : INFINITY; break;
    case 3: if (dp) { if (wsb) wcall = wsb - 1 - fz_pick(in, 8), want = ref_bad ? INV : NK_STATUS_MISUSE; else tv = NULL; } break;
    case 4: if (dp) ws = NULL, want = ref_bad ? INV : NK_STATUS_MISUSE; break;
    default: if (dp) { if (fz_u8(in) & 1) out = tv; else out = NULL; } break;
    }
    if (dp == 0 && k >= 2) d.scale = NAN;
  } else if (want == NK_OK) {
    go = fz_vec(dp, sizeof(float));
    fz_writable(out, &go), fz_writable(ws, &gw);
  }
  fz_snapshot();
  st = nk_pcb_merge(ctx, &d, tv, lam, th, out, ws, wcall);
  if (!finish(ctx, op, k, st, want)) return 0;
  double sc = 0.0;
  for (size_t j = 0; j < dp; j++) sc = fmax(sc, absf(mr[j]));
  for (size_t j = 0; j < dp; j++) {
    const double b = fz_ulp(mr[j], NK_DTYPE_F32) + 1e-12 * sc;
    FZ_CHECK(fz_close(out[j], mr[j], b, NK_DTYPE_F32), "merged[%zu] = %.9g, ref %.17g (n %zu d %zu r %g a %g)",
             j, (double)out[j], mr[j], n, dp, d.keep_ratio, d.clip_ratio);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in;
  fz_start(&in, "calib", data, size);
  const int bad = fz_pick(&in, 8) == 0;
  nk_context *ctx = fz_context(&in);
  const unsigned op = fz_pick(&in, OP_COUNT);
  if (op <= OP_ECE) return run_temperature(&in, ctx, op, bad);
  if (op <= OP_PCORR) return run_comp(&in, ctx, op, bad);
  if (op <= OP_CPN_SCORE) return run_cpn(&in, ctx, op, bad);
  if (op <= OP_HCAL_FIT) return run_hcal(&in, ctx, op, bad);
  return run_pcb(&in, ctx, op, bad);
}
