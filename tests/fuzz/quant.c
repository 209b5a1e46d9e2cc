/*
 * tests/fuzz/quant.c — libFuzzer harness: quantized and fake LayerNorm outputs (fuzz.h: decoder,
 * arena, canaries). One input = one call of one family:
 *   nk_layernorm_fwd_q8 / _q8_rows, nk_rmsnorm_fwd_q8 / _q8_rows, nk_fakeln_fwd_q8 (row absmax
 *   or power-of-two groups), nk_fakeln_fwd / _fwd_rows (then, from its output, nk_fakeln_bwd / _bwd_rows), nk_pow2quant_quantize / _quantize_rows
 *   (from nk_pow2quant_desc_dense, half-even or stochastic) followed by nk_pow2quant_dequantize
 *   of its output (or a dequantize of arbitrary bytes), nk_dequantize_q8, nk_fakeln_calibrate
 *   (mask, residual, momentum, stats), nk_fakeln_to_layernorm.
 * Bounds: those of normkit.h ("Research normalization layers") and tests/ops/norm_q8.c,
 * pow2quant.c, fakeln.c:
 *   _q8 outputs against quantizing the float64 reference y: |q - q_ref| <= 1, scale within
 *   4e-6 A_ref/127 (+ 2^-149, tests/ops/norm_q8.c edge_rows), group exponents equal except where
 *   the reference group max is within 4e-6 of the boundary 127 2^e (then the dequantized values
 *   differ by at most one step of the larger exponent, tests/ops/norm_q8.c); f32 data: the bits
 *   of quantizing the library's own f32 float forward (tests/ops/norm_q8.c
 *   same_bits_as_quantized_float_forward, fakeln.c q8_is_quantized_forward);
 *   FakeLN y: f32 2e-6 m + 1e-30, bf16/f16 1 ulp + 2e-6 m, m = max(|y_ref|, |y_ref - beta|)
 *   (tests/ops/fakeln.c); mean (LayerNorm's) 1 ulp + 1e-6 sd; rstd 2e-6 relative;
 *   nk_pow2quant: exact (q and e of the formula, stochastic q in {floor, floor + 1});
 *   dequantize: exact (q 2^e, q * scale in f32, rounded to the dtype);
 *   calibrate: sigma_bar 1e-7 relative (EMA 1e-6), batch statistics 1e-12 relative, rel_dev_max
 *   1e-9, rel_dev_rms 1e-5 (1 + rms) (tests/ops/fakeln.c); to_layernorm: 1 f32 ulp.
 * Parameters (gamma, beta) are drawn tame (|v| ~ 1, no specials): the bounds are stated for any
 * finite x, and x gets every special value.
 */
#include <float.h>

#include "fuzz.h"
#include "q8_util.h"
#include "reference.h"

#define MAXR 6
#define MAXC 200

static const float eps_table[] = {1e-5f, 1e-6f, 1e-3f, 0x1p-23f, 1.0f, 1e-30f, 0x1p-7f, 1e-12f};
static const float sigma_table[] = {1.0f, 1.7f, 0.25f, 3e3f, 1e-3f, 0.5f, 1e6f, 7.0f};

enum { OP_LN_Q8, OP_RMS_Q8, OP_FAKE_Q8, OP_FAKE_FWD, OP_P2, OP_DEQ, OP_CAL, OP_TO_LN, OP_COUNT };
enum { BAD_NONE, BAD_STRIDE, BAD_NEG_STRIDE, BAD_SCALAR, BAD_FLAGS, BAD_OVERLAP, BAD_OVERFLOW,
       BAD_NULL, BAD_DTYPE, BAD_RANGE, BAD_MODE, BAD_COUNT };

static double xr[MAXR * MAXC], rr_[MAXR * MAXC], hr[MAXR * MAXC], g_r[MAXC], b_r[MAXC];
static double yr[MAXR * MAXC], mr[MAXR], rsr[MAXR], qref[MAXC];
static float yown[MAXR * MAXC];

static const char *op_name(unsigned op) {
  static const char *n[] = {"layernorm_fwd_q8", "rmsnorm_fwd_q8", "fakeln_fwd_q8", "fakeln_fwd",
                            "pow2quant", "dequantize_q8", "fakeln_calibrate",
                            "fakeln_to_layernorm"};
  return n[op];
}

static void expect_failure(nk_status st, nk_status want, nk_context *ctx, unsigned op, unsigned bad) {
  FZ_CHECK(st == want, "%s: bad %u: status %d, want %d (%s)", op_name(op), bad, st, want,
           ctx ? nk_context_message(ctx) : "");
  FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "%s: no message for a failure", op_name(op));
  fz_check_arena(0, op_name(op));
}

/* Power-of-two groups of one row of n values v (doubles; NaN/inf allowed): the exact rule of
 * normkit.h; a group holding NaN or inf gets NK_POW2QUANT_EXP_NAN and q = 0. */
static void pow2_row(size_t n, const double *v, size_t G, int qmax, double *q, int *e) {
  for (size_t g0 = 0, k = 0; g0 < n; g0 += G, k++) {
    const size_t len = g0 + G < n ? G : n - g0;
    int fin = 1;
    for (size_t j = 0; j < len; j++) fin &= isfinite(v[g0 + j]);
    if (!fin) {
      e[k] = NK_POW2QUANT_EXP_NAN;
      for (size_t j = 0; j < len; j++) q[g0 + j] = 0.0;
      continue;
    }
    nk_ref_pow2_quantize(len, v + g0, len, qmax, q + g0, &e[k]);
  }
}

/* ---- LayerNorm / RMSNorm / FakeLN writing int8, and the FakeLN float forward ------------- */
/* ---- nk_fakeln_bwd / _bwd_rows, after a valid nk_fakeln_fwd of finite rows ------------------
 * From the forward's h (or its y as stored, NK_NORM_BWD_FROM_Y) and mean, with fuzzed strides,
 * dh, dx on dy, NK_NORM_ACCUMULATE, row ranges with double accumulators, a short workspace and
 * broken arguments. Bounds (normkit.h nk_fakeln_bwd): dx 4e-6 max(D, T) per row, T = max
 * (|gh| + |mean gh|)/sigma_bar + |dh| (+ 1 ulp for bf16/f16 or with dh); dgamma, dbeta 4e-6 of the
 * sums of their terms' magnitudes (+ 1 ulp of param_dtype, 2 when accumulated). */
static void fake_bwd(fz_in *in, nk_context *ctx, size_t R, size_t C, nk_dtype dt, nk_dtype pdt,
                     int has_g, int has_b, int offset, float sigma, float eps) {
  const size_t es = nk_dtype_size(dt);
  /* the forward's outputs, from a dense call on h (the values the fuzzed call was checked for) */
  static unsigned char hb[MAXR * MAXC * 4], yb[MAXR * MAXC * 4];
  static float gbuf[MAXC], bbuf[MAXC], mean_v[MAXR];
  static double yv[MAXR * MAXC];
  for (size_t k = 0; k < R * C; k++) fz_set(hb, k, hr[k], dt);
  for (size_t j = 0; j < C; j++) gbuf[j] = (float)g_r[j], bbuf[j] = (float)b_r[j];
  nk_norm_desc d0 = nk_norm_desc_dense(R, C, dt, eps);
  d0.flags = offset ? NK_NORM_GAMMA_OFFSET : 0;
  FZ_CHECK(nk_fakeln_fwd(NULL, &d0, sigma, hb, NULL, has_g ? gbuf : NULL, has_b ? bbuf : NULL, yb,
                         NULL, mean_v) == NK_OK, "fakeln_bwd: dense forward");
  for (size_t k = 0; k < R * C; k++) yv[k] = fz_get(yb, k, dt);
  fz_begin();
  const unsigned bopt = fz_u8(in);
  const int has_dh = bopt & 1, acc = (bopt & 2) != 0, want_dg = bopt & 4, want_db = bopt & 8,
            dx_on_dy = bopt & 16, from_y = (bopt & 32) != 0, brows = (bopt & 64) != 0;
  /* (an exhausted input reads zeros: 0 must mean a valid call) */
  const unsigned bad = fz_pick(in, 10) == 9 ? 1 + fz_pick(in, 6) : 0;
  nk_norm_desc b = nk_norm_desc_dense(R, C, dt, eps);
  b.param_dtype = pdt;
  b.flags = (offset ? NK_NORM_GAMMA_OFFSET : 0) | (acc ? NK_NORM_ACCUMULATE : 0) |
            (from_y ? NK_NORM_BWD_FROM_Y : 0);
  b.x_stride = (ptrdiff_t)C + fz_pick(in, 4);
  b.dy_stride = (ptrdiff_t)C + fz_pick(in, 4);
  b.dh_stride = (ptrdiff_t)C + fz_pick(in, 4);
  b.dx_stride = dx_on_dy ? b.dy_stride : (ptrdiff_t)C + fz_pick(in, 4);
  const fz_geom bx = fz_rows(R, C, b.x_stride, dt), bdy = fz_rows(R, C, b.dy_stride, dt);
  const fz_geom bdh = fz_rows(R, C, b.dh_stride, dt), bdx = fz_rows(R, C, b.dx_stride, dt);
  const fz_geom gp = fz_vec(C, nk_dtype_size(pdt)), gs = fz_vec(R, 4);
  const fz_dist tame = {0.0, 1.0, 0};
  static double dyr[MAXR * MAXC], dhr[MAXR * MAXC], dxr[MAXR * MAXC], got[MAXR * MAXC];
  static double dgr[MAXC], dbr[MAXC], dg0[MAXC], db0[MAXC], geff[MAXC], tg[MAXC], tb[MAXC];
  size_t q0 = 0, q1 = R;
  if (brows) q0 = fz_pick(in, (unsigned)R), q1 = q0 + fz_pick(in, (unsigned)(R - q0 + 1));
  void *xp = fz_place(in, &bx, NULL);
  for (size_t i = 0; i < R; i++)
    for (size_t j = 0; j < C; j++)
      fz_set(xp, i * (size_t)b.x_stride + j, from_y ? yv[i * C + j] : hr[i * C + j], dt);
  void *g2 = NULL, *b2 = NULL;
  int zero_gain = 0;
  for (size_t j = 0; j < C; j++) {
    geff[j] = has_g ? (offset ? (double)(1.0f + (float)g_r[j]) : g_r[j]) : 1.0;
    zero_gain |= geff[j] == 0.0;
  }
  if (has_g) {
    g2 = fz_place(in, &gp, NULL);
    for (size_t j = 0; j < C; j++) fz_set(g2, j, g_r[j], pdt);
  }
  if (has_b && from_y) {
    b2 = fz_place(in, &gp, NULL);
    for (size_t j = 0; j < C; j++) fz_set(b2, j, b_r[j], pdt);
  }
  float *m2 = NULL;
  if (!from_y) {
    m2 = fz_place(in, &gs, NULL);
    memcpy(m2, mean_v, R * 4);
  }
  void *dy = fz_place(in, &bdy, NULL);
  fz_fill(in, dy, &bdy, dt, &tame, dyr);
  void *dh = NULL;
  if (has_dh) {
    dh = fz_place(in, &bdh, NULL);
    fz_fill(in, dh, &bdh, dt, &tame, dhr);
  }
  void *dxp = dx_on_dy ? dy : fz_place(in, &bdx, NULL);
  void *dg = NULL, *db = NULL;
  const nk_dtype adt = brows ? NK_DTYPE_F32 : pdt; /* (the _rows accumulators are doubles) */
  const fz_geom ga = brows ? fz_vec(C, 8) : gp;
  if (want_dg) {
    dg = fz_place(in, &ga, NULL);
    if (brows) for (size_t j = 0; j < C; j++) ((double *)dg)[j] = dg0[j] = fz_value(in, &tame);
    else fz_fill(in, dg, &gp, pdt, &tame, dg0);
  }
  if (want_db) {
    db = fz_place(in, &ga, NULL);
    if (brows) for (size_t j = 0; j < C; j++) ((double *)db)[j] = db0[j] = fz_value(in, &tame);
    else fz_fill(in, db, &gp, pdt, &tame, db0);
  }
  size_t wsb = 0;
  FZ_CHECK(nk_fakeln_bwd_workspace_size(&b, &wsb) == NK_OK, "fakeln_bwd_workspace_size");
  if (brows) wsb = from_y ? C * 4 + NK_WORKSPACE_ALIGN : 0; /* header: as nk_layernorm_bwd_rows */
  void *ws = NULL;
  const fz_geom gw = fz_vec(wsb, 1);
  if (wsb) ws = fz_place(in, &gw, NULL);
  float sig = sigma;
  const nk_status IA = NK_STATUS_INVALID_ARGUMENT;
  nk_status want = NK_OK;
  size_t wsz = wsb;
  switch (bad) {
  case 1: { const float e[] = {0.0f, -1.0f, NAN, INFINITY, -0.0f}; sig = e[fz_pick(in, 5)]; want = IA; break; }
  case 2: if (!from_y) { m2 = NULL; want = IA; } break;
  case 3: if (wsb) { wsz = wsb - 1; want = NK_STATUS_MISUSE; } break;
  case 4: b.lns_scale = (fz_u8(in) & 1) ? 0.5f : 2.0f; want = NK_STATUS_UNSUPPORTED; break;
  case 5: if (C > 1 && !dx_on_dy) { dxp = (char *)dy + es; want = IA; } break; /* partial overlap */
  case 6: dxp = NULL; want = IA; break;
  }
  if (want == NK_OK && from_y && zero_gain && q1 > q0) want = IA; /* from y needs gains != 0 */
  if (want == NK_OK) {
    const fz_geom bdxr = fz_rows(q1 - q0, C, b.dx_stride, dt);
    fz_writable(q1 > q0 ? (char *)dxp + q0 * (size_t)b.dx_stride * es : NULL, &bdxr);
    fz_writable(dg, &ga), fz_writable(db, &ga), fz_writable(ws, &gw);
  }
  fz_snapshot();
  nk_status st;
  if (brows)
    st = nk_fakeln_bwd_rows(ctx, &b, q0, q1, sig, xp, g2, b2, m2, dy, dh, dxp, dg, db, ws, wsz);
  else
    st = nk_fakeln_bwd(ctx, &b, sig, xp, g2, b2, m2, dy, dh, dxp, dg, db, ws, wsz);
  if (want != NK_OK) {
    FZ_CHECK(st == want || (st != NK_OK && want != NK_OK && bad != 0 && from_y && zero_gain),
             "fakeln_bwd: bad %u: status %d, want %d (%s)", bad, st, want,
             ctx ? nk_context_message(ctx) : "");
    FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "fakeln_bwd: no message for a failure");
    fz_check_arena(0, "fakeln_bwd");
    return;
  }
  FZ_CHECK(st == NK_OK, "fakeln_bwd: status %d (%s)", st, ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, "fakeln_bwd"); /* (the input was counted valid by its forward) */
  if (q1 == q0) return;
  memset(dgr, 0, C * 8), memset(dbr, 0, C * 8);
  nk_ref_fakeln_bwd(q1 - q0, C, hr + q0 * C, sigma, has_g ? g_r : NULL, offset, dyr + q0 * C,
                    dh ? dhr + q0 * C : NULL, dxr + q0 * C, dgr, dbr);
  fz_read(dxp, &bdx, dt, got);
  /* OPEN (docs/security.md "FakeLN f32 intermediates overflow"): the kernels form
   * xhat = (h - mu) / sigma_bar in f32; where it exceeds FLT_MAX (the forward's y is +-inf
   * there) dx = fmaf(-xhat, 0, gh - a) is NaN and dgamma non-finite: not compared */
  static unsigned char over[MAXC];
  memset(over, 0, C);
  memset(tg, 0, C * 8), memset(tb, 0, C * 8);
  for (size_t i = q0; i < q1; i++) {
    double mu = 0.0, mg = 0.0;
    for (size_t j = 0; j < C; j++) mu += hr[i * C + j], mg += geff[j] * dyr[i * C + j];
    mu /= (double)C, mg /= (double)C;
    double D = 0.0, T = 0.0, X = 0.0;
    for (size_t j = 0; j < C; j++) {
      const double xh = (hr[i * C + j] - mu) / (double)sigma;
      if (fabs(hr[i * C + j] - mr[i]) > FLT_MAX || fabs(xh) > FLT_MAX * (1.0 - 1e-6)) over[j] = 1;
      D = fmax(D, fabs(dxr[i * C + j]));
      T = fmax(T, (fabs(geff[j] * dyr[i * C + j]) + fabs(mg)) / (double)sigma +
                      (dh ? fabs(dhr[i * C + j]) : 0.0));
      X = fmax(X, fabs(xh));
    }
    /* dgamma's T: sum |dy| max|xhat| of the row (as LayerNorm's): xhat carries the rounding
     * of h - mean at the row's scale (an element with h - mu = -3.6 in a row reaching 1045:
     * 4.9e-6 of its own term, tests/fuzz/known/quant-fakeln-bwd-dgamma-small-xhat) */
    for (size_t j = 0; j < C; j++) tg[j] += fabs(dyr[i * C + j]) * X, tb[j] += fabs(dyr[i * C + j]);
    /* from y, a row whose stored y is +-inf (an f16 overflow of the forward) is a row with inf
     * in the input: NaN dx (normkit.h) */
    if (from_y && !fz_finite_all(yv + i * C, C)) {
      for (size_t j = 0; j < C; j++)
        FZ_CHECK(isnan(got[i * C + j]), "fakeln bwd from y: row %zu with inf y: dx[%zu] = %g", i,
                 j, got[i * C + j]);
      continue;
    }
    for (size_t j = 0; j < C; j++) {
      if (over[j] && isnan(got[i * C + j])) continue;
      const double ref = dxr[i * C + j];
      const double bound = 4e-6 * fmax(D, T) + (dt != NK_DTYPE_F32 || dh ? fz_ulp(ref, dt) : 0.0) +
                           (fabs(ref) < FLT_MIN ? 0x1p-148 : 0.0);
      FZ_CHECK(fz_close(got[i * C + j], ref, bound, dt),
               "fakeln bwd%s%s dx[%zu][%zu] = %.9g, ref %.9g (bound %.3g) dt %d cols %zu sigma %g",
               from_y ? " from y" : "", brows ? " rows" : "", i, j, got[i * C + j], ref, bound, dt,
               C, (double)sigma);
    }
  }
  const int acc0 = brows || acc;
  for (size_t j = 0; j < C; j++) {
    /* from y, dgamma has the accuracy of y (normkit.h): not compared */
    if (dg && !from_y && !over[j]) {
      const double ref = (acc0 ? dg0[j] : 0.0) + dgr[j];
      const double v = brows ? ((double *)dg)[j] : fz_get(dg, j, pdt);
      /* + 2^-148 sum|dy| (1 + 1/sigma_bar): h - mu or xhat in the f32 subnormals (normkit.h;
       * dgamma 2.8636e-38 was 1.1e-5 relative off: tests/fuzz/known/quant-fakeln-bwd-dgamma-
       * subnormal-differences; xhat ~ 5e-42 gave dgamma -1.3943e-42 for -1.3925e-42:
       * quant-fakeln-bwd-dgamma-subnormal-xhat) */
      FZ_CHECK(fz_close(v, ref, 4e-6 * (tg[j] + (acc0 ? fabs(dg0[j]) : 0.0)) + 0x1p-148 * tb[j] * (1.0 + 1.0 / (double)sigma) +
                                    fz_ulp(ref, adt) * (acc0 ? 2 : 1), adt),
               "fakeln dgamma[%zu] = %.9g ref %.9g", j, v, ref);
    }
    if (db) {
      const double ref = (acc0 ? db0[j] : 0.0) + dbr[j];
      const double v = brows ? ((double *)db)[j] : fz_get(db, j, pdt);
      FZ_CHECK(fz_close(v, ref, 4e-6 * (tb[j] + (acc0 ? fabs(db0[j]) : 0.0)) + fz_ulp(ref, adt) * (acc0 ? 2 : 1), adt),
               "fakeln dbeta[%zu] = %.9g ref %.9g", j, v, ref);
    }
  }
}

static void norm_case(fz_in *in, nk_context *ctx, unsigned op, unsigned bad, size_t R, size_t C,
                      nk_dtype dt) {
  const int fake = op == OP_FAKE_Q8 || op == OP_FAKE_FWD, want_y = op == OP_FAKE_FWD;
  const nk_dtype pdt = fz_u8(in) & 1 ? dt : NK_DTYPE_F32;
  const unsigned opt = fz_u8(in);
  const int has_r = opt & 1, has_h = has_r && (opt & 2), has_g = opt & 4, has_b = opt & 8,
            offset = has_g && (opt & 16), h_on_x = has_h && (opt & 32),
            use_rows = (op != OP_FAKE_Q8) && (opt & 192) == 192;
  const unsigned opt2 = fz_u8(in);
  const int groups = !want_y && (opt2 & 1), has_mean = op != OP_RMS_Q8 && (opt2 & 2),
            has_rstd = !fake && (opt2 & 4), q8_null = !groups && (opt2 & 8);
  static const float lns_t[] = {1.0f, 2.0f, 0.5f, 0.125f};
  const float lns = (opt2 & 0x60) == 0x60 ? lns_t[fz_pick(in, 4)] : 0.0f;
  const int y_on_x = want_y && !h_on_x && lns == 0.0f && (opt2 & 0x80) && (opt2 & 0x10);
  const float eps = eps_table[fz_pick(in, 8)];
  const float sigma = sigma_table[fz_pick(in, 8)];
  static const size_t gtab[] = {1, 2, 7, 8, 16, 32, 33, 64};
  const size_t G = gtab[fz_pick(in, 8)], ng = (C + G - 1) / G;

  nk_norm_desc d = nk_norm_desc_dense(R, C, dt, eps);
  d.param_dtype = pdt;
  d.flags = offset ? NK_NORM_GAMMA_OFFSET : 0;
  d.x_stride = (ptrdiff_t)(C + fz_pick(in, 5));
  d.r_stride = (ptrdiff_t)(C + fz_pick(in, 5));
  d.h_stride = h_on_x ? d.x_stride : (ptrdiff_t)(C + fz_pick(in, 5));
  d.y_stride = y_on_x ? d.x_stride : (ptrdiff_t)(C + fz_pick(in, 5));
  d.lns_scale = lns;
  nk_q8_desc q8 = {groups ? NK_Q8_POW2_GROUPS : NK_Q8_ROW_ABSMAX, G,
                   (ptrdiff_t)(ng + fz_pick(in, 3))};

  const fz_dist xd = fz_dist_pick(in, 24);
  const fz_dist tame = {0.0, 1.0, 0};
  const size_t oes = want_y ? nk_dtype_size(dt) : 1;
  const fz_geom gx = fz_rows(R, C, d.x_stride, dt), gr = fz_rows(R, C, d.r_stride, dt);
  const fz_geom gh = fz_rows(R, C, d.h_stride, dt);
  const fz_geom gq = {1, R, C, 0, d.y_stride, oes};
  const fz_geom ge = {1, R, ng, 0, q8.exp_stride, 1};
  const fz_geom gp = fz_vec(C, nk_dtype_size(pdt)), gs = fz_vec(R, 4);

  void *x = fz_place(in, &gx, NULL);
  fz_fill(in, x, &gx, dt, &xd, xr);
  void *r = NULL, *h = NULL, *gamma = NULL, *beta = NULL;
  if (has_r) {
    r = fz_place(in, &gr, NULL);
    fz_fill(in, r, &gr, dt, &xd, rr_);
  }
  if (has_h) h = h_on_x ? x : fz_place(in, &gh, NULL);
  if (has_g) {
    gamma = fz_place(in, &gp, NULL);
    fz_fill(in, gamma, &gp, pdt, &tame, g_r);
  }
  if (has_b) {
    beta = fz_place(in, &gp, NULL);
    fz_fill(in, beta, &gp, pdt, &tame, b_r);
  }
  void *out = y_on_x ? x : fz_place(in, &gq, NULL);
  float *scale = (!want_y && !groups) ? fz_place(in, &gs, NULL) : NULL;
  int8_t *exps = groups ? fz_place(in, &ge, NULL) : NULL;
  float *mean = has_mean ? fz_place(in, &gs, NULL) : NULL;
  float *rstd = has_rstd ? fz_place(in, &gs, NULL) : NULL;
  for (size_t k = 0; k < R * C; k++)
    hr[k] = has_r ? fz_round((float)xr[k] + (float)rr_[k], dt) : xr[k];
  float sig = sigma;

  nk_status want = NK_OK;
  /* header (nk_fakeln_fwd): y may not be x (no in-place y, unlike nk_layernorm_fwd) */
  if (y_on_x) bad = BAD_NONE, want = NK_STATUS_INVALID_ARGUMENT;
  /* header: LayerNorm Scaling other than 0 or 1 is UNSUPPORTED here */
  else if (lns != 0.0f && lns != 1.0f) bad = BAD_NONE, want = NK_STATUS_UNSUPPORTED;
  size_t r0 = 0, r1 = R;
  if (use_rows) r0 = fz_pick(in, (unsigned)R), r1 = r0 + 1 + fz_pick(in, (unsigned)(R - r0));
  const nk_q8_desc *q8p = q8_null ? NULL : &q8;
  const nk_status IA = NK_STATUS_INVALID_ARGUMENT;
  switch (bad) {
  case BAD_STRIDE: if (fz_u8(in) & 1) d.y_stride = (ptrdiff_t)C - 1 - fz_pick(in, 3);
                   else if (groups) q8.exp_stride = (ptrdiff_t)ng - 1 - fz_pick(in, 2);
                   else d.x_stride = (ptrdiff_t)C - 1; want = IA; break;
  case BAD_NEG_STRIDE: if (fz_u8(in) & 1 && groups) q8.exp_stride = -(ptrdiff_t)(1 + fz_pick(in, 9));
                       else d.y_stride = -(ptrdiff_t)(1 + fz_pick(in, 100)); want = IA; break;
  case BAD_SCALAR: { const float e[] = {0.0f, -1e-5f, NAN, INFINITY, -0.0f}; const unsigned k = fz_pick(in, 5);
    const unsigned w = fz_pick(in, 3);
    if (fake && w == 1) sig = e[k]; else if (w == 2 && k >= 1 && k <= 3) d.lns_scale = e[k]; else d.eps = e[k];
    want = IA; break; }
  case BAD_FLAGS: d.flags |= 1u << (1 + fz_pick(in, 31)); want = IA; break;
  case BAD_OVERLAP: { const unsigned k = fz_pick(in, 3);
    if (k == 0 && !want_y) { out = (int8_t *)x + 1; want = IA; }                /* q inside x */
    else if (k == 1 && mean && scale) { mean = scale; want = IA; }             /* mean on scale */
    else if (k == 1 && exps) { exps = (int8_t *)out + (C > 1); want = IA; }    /* exps inside q */
    else if (has_h && !h_on_x && C > 1) { h = (char *)x + nk_dtype_size(dt); want = IA; }
    else if (C > 1 || !want_y) { out = (char *)x + (C > 1 ? nk_dtype_size(dt) : 0); want = IA; }
    break; }
  case BAD_OVERFLOW: d.rows = SIZE_MAX / (1 + fz_pick(in, 8)); d.x_stride = d.y_stride = PTRDIFF_MAX / (1 + fz_pick(in, 4)); d.cols = 1; want = IA; use_rows ? (void)(r0 = 0, r1 = 1) : (void)0; break;
  case BAD_NULL: { const unsigned k = fz_pick(in, 4);
    if (k == 0) x = NULL; else if (k == 1) out = NULL;
    else if (k == 2 && !want_y) { if (groups) exps = NULL; else scale = NULL; }
    else if (gamma && offset) gamma = NULL; else x = NULL;
    want = IA; break; }
  case BAD_DTYPE: d.dtype = (nk_dtype)(3 + fz_pick(in, 100)); want = IA; break;
  case BAD_RANGE: if (use_rows) { r0 = R + 1; r1 = R + 2 + fz_pick(in, 3); want = IA; } break;
  case BAD_MODE: if (!want_y) { const unsigned k = fz_pick(in, 4); want = IA;
      if (k == 0) { q8.mode = (nk_q8_mode)(2 + fz_pick(in, 50)); q8p = &q8; }
      else if (k == 1 && groups) q8.group = 0;
      else if (groups) scale = fz_place(in, &gs, NULL);
      else exps = fz_place(in, &ge, NULL); }
    break;
  }
  if (want == NK_OK) {
    const fz_geom gqr = {1, r1 - r0, C, 0, d.y_stride, oes};
    const fz_geom ger = {1, r1 - r0, ng, 0, q8.exp_stride, 1};
    const fz_geom ghr = fz_rows(r1 - r0, C, d.h_stride, dt);
    const fz_geom gsr = {1, 1, r1 - r0, 0, 0, 4};
    const size_t es = nk_dtype_size(dt);
    fz_writable((char *)out + r0 * (size_t)d.y_stride * oes, &gqr);
    if (exps) fz_writable(exps + r0 * (size_t)q8.exp_stride, &ger);
    if (h) fz_writable((char *)h + r0 * (size_t)d.h_stride * es, &ghr);
    if (scale) fz_writable(scale + r0, &gsr);
    if (mean) fz_writable(mean + r0, &gsr);
    if (rstd) fz_writable(rstd + r0, &gsr);
  }
  fz_snapshot();
  nk_status st;
  switch (op) {
  case OP_LN_Q8:
    st = use_rows ? nk_layernorm_fwd_q8_rows(ctx, &d, q8p, r0, r1, x, r, gamma, beta, out, scale, exps, h, mean, rstd)
                  : nk_layernorm_fwd_q8(ctx, &d, q8p, x, r, gamma, beta, out, scale, exps, h, mean, rstd);
    break;
  case OP_RMS_Q8:
    st = use_rows ? nk_rmsnorm_fwd_q8_rows(ctx, &d, q8p, r0, r1, x, r, gamma, beta, out, scale, exps, h, rstd)
                  : nk_rmsnorm_fwd_q8(ctx, &d, q8p, x, r, gamma, beta, out, scale, exps, h, rstd);
    break;
  case OP_FAKE_Q8:
    st = nk_fakeln_fwd_q8(ctx, &d, q8p, sig, x, r, gamma, beta, out, scale, exps, h, mean);
    break;
  default:
    st = use_rows ? nk_fakeln_fwd_rows(ctx, &d, r0, r1, sig, x, r, gamma, beta, out, h, mean)
                  : nk_fakeln_fwd(ctx, &d, sig, x, r, gamma, beta, out, h, mean);
    break;
  }
  if (want != NK_OK) {
    expect_failure(st, want, ctx, op, bad);
    return;
  }
  FZ_CHECK(st == NK_OK, "%s: status %d (%s)", op_name(op), st, ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, op_name(op));
  fz_valid++;

  /* ---- against the float64 reference ---- */
  const double *G_ = has_g ? g_r : NULL, *B_ = has_b ? b_r : NULL;
  if (op == OP_LN_Q8) nk_ref_layernorm_fwd(R, C, hr, G_, B_, offset, eps, yr, mr, rsr);
  else if (op == OP_RMS_Q8) nk_ref_rmsnorm_fwd(R, C, hr, G_, B_, offset, eps, yr, rsr);
  else nk_ref_fakeln_fwd(R, C, hr, sigma, G_, B_, offset, yr, mr);
  /* LayerNorm Scaling (normkit.h nk_norm_desc.lns_scale): y * s; mean/rstd unscaled */
  if (lns != 0.0f)
    for (size_t k = 0; k < R * C; k++) yr[k] *= (double)lns;
  /* the library's own f32 forward (f32 data only: for bf16/f16 the float forward rounds y to
   * the dtype, the fused op quantizes the f32 y) */
  int own = dt == NK_DTYPE_F32;
  if (own) {
    nk_norm_desc d2 = d;
    d2.y_stride = (ptrdiff_t)C;
    d2.h_stride = (ptrdiff_t)C;
    /* h written in place on x changed x: the forward reads h = x + r, recompute from hr */
    static float xcopy[MAXR * MAXC];
    for (size_t k = 0; k < R * C; k++) xcopy[k] = (float)hr[k];
    d2.x_stride = (ptrdiff_t)C;
    nk_status s2;
    if (op == OP_LN_Q8) s2 = nk_layernorm_fwd(NULL, &d2, xcopy, NULL, gamma, beta, yown, NULL, NULL, NULL);
    else if (op == OP_RMS_Q8) s2 = nk_rmsnorm_fwd(NULL, &d2, xcopy, NULL, gamma, beta, yown, NULL, NULL);
    else s2 = nk_fakeln_fwd(NULL, &d2, sigma, xcopy, NULL, gamma, beta, yown, NULL, NULL);
    FZ_CHECK(s2 == NK_OK, "own float forward: status %d", s2);
  }
  static int8_t qo[MAXC];
  static int eo[MAXC], er[MAXC];
  static double yo[MAXC];
  int all_fin = 1, all_hmu_ok = 1;
  for (size_t i = r0; i < r1; i++) {
    const double *yi = yr + i * C, *hi = hr + i * C;
    const int fin = fz_finite_all(hi, C);
    all_fin &= fin;
    const int8_t *qi = want_y ? NULL : (const int8_t *)out + i * (size_t)d.y_stride;
    const int8_t *ei = exps ? exps + i * (size_t)q8.exp_stride : NULL;
    if (h)
      for (size_t j = 0; j < C; j++) {
        const double hv = fz_get(h, i * (size_t)d.h_stride + j, dt);
        FZ_CHECK(hv == hi[j] || (isnan(hv) && isnan(hi[j])), "h[%zu][%zu] %g ref %g", i, j, hv, hi[j]);
      }
    if (!fin) { /* header: y NaN (the whole row); scale NaN and q = 0; every exponent NaN */
      if (mean) FZ_CHECK(isnan(mean[i]), "non-finite row %zu: mean %g", i, (double)mean[i]);
      if (rstd) FZ_CHECK(isnan(rstd[i]), "non-finite row %zu: rstd %g", i, (double)rstd[i]);
      if (scale) FZ_CHECK(isnan(scale[i]), "non-finite row %zu: scale %g", i, (double)scale[i]);
      for (size_t j = 0; j < C; j++) {
        if (want_y) FZ_CHECK(isnan(fz_get(out, i * (size_t)d.y_stride + j, dt)), "non-finite row %zu: y[%zu]", i, j);
        else FZ_CHECK(qi[j] == 0, "non-finite row %zu: q[%zu] = %d", i, j, qi[j]);
      }
      for (size_t k = 0; ei && k < ng; k++)
        FZ_CHECK(ei[k] == NK_POW2QUANT_EXP_NAN, "non-finite row %zu: exps[%zu] = %d", i, k, ei[k]);
      continue;
    }
    if (mean) {
      const double sd = nk_ref_fakeln_row_std(C, hi, 0.0);
      FZ_CHECK(fz_close(mean[i], mr[i], fz_ulp(mr[i], NK_DTYPE_F32) + 1e-6 * sd, NK_DTYPE_F32),
               "%s mean[%zu] %.9g ref %.9g", op_name(op), i, (double)mean[i], mr[i]);
    }
    if (rstd)
      FZ_CHECK(fz_close(rstd[i], rsr[i], 2e-6 * rsr[i], NK_DTYPE_F32), "rstd[%zu] %.9g ref %.9g", i,
               (double)rstd[i], rsr[i]);
    /* OPEN (docs/security.md, tests/fuzz/known/quant-fakeln-h-minus-mean-overflow): the normq
     * kernels form h - mu and then (h - mu) * (1/sigma_bar) in f32, before gamma: either
     * overflows to +-inf when it exceeds FLT_MAX although y = g (h - mu) / sigma_bar + b is
     * finite; FakeLN rows where that happens are not checked against the reference (the
     * own-forward bit check above still runs) */
    int hmu_over = 0;
    for (size_t j = 0; fake && j < C; j++)
      hmu_over |= fabs(hi[j] - mr[i]) > FLT_MAX || fabs(hi[j] - mr[i]) / (double)sigma > FLT_MAX * (1.0 - 1e-6);
    double m = 0.0, A = 0.0;
    for (size_t j = 0; j < C; j++) {
      m = fmax(m, fmax(fabs(yi[j]), fabs(yi[j] - (has_b ? b_r[j] : 0.0))));
      A = fmax(A, fabs(yi[j]));
    }
    if (want_y) {
      all_hmu_ok &= !hmu_over;
      for (size_t j = 0; j < C && !hmu_over; j++) {
        const double g = fz_get(out, i * (size_t)d.y_stride + j, dt), ref = yi[j];
        const double bound = dt == NK_DTYPE_F32 ? 2e-6 * m + 1e-30 : fz_ulp(ref, dt) + 2e-6 * m;
        FZ_CHECK(fz_close(g, ref, bound, dt), "fakeln y[%zu][%zu] = %.9g ref %.9g (bound %.3g) dt %d cols %zu",
                 i, j, g, ref, bound, dt, C);
      }
      continue;
    }
    /* bitwise: the quantized own f32 forward */
    if (own) {
      const float *yw = yown + i * C;
      if (!groups) {
        float so;
        quantize_f32_row(C, yw, qo, &so);
        FZ_CHECK(memcmp(&so, &scale[i], 4) == 0 || (isnan(so) && isnan(scale[i])),
                 "%s row %zu: scale %.9g, quantized float forward %.9g (lns_scale %g)", op_name(op), i, (double)lns,
                 (double)scale[i], (double)so);
        for (size_t j = 0; j < C; j++)
          FZ_CHECK(qi[j] == qo[j], "%s row %zu col %zu: q %d, quantized float forward %d", op_name(op), i, j, qi[j], qo[j]);
      } else {
        for (size_t j = 0; j < C; j++) yo[j] = yw[j];
        pow2_row(C, yo, G, 127, qref, eo);
        for (size_t k = 0; k < ng; k++)
          FZ_CHECK(ei[k] == eo[k], "%s row %zu group %zu: e %d, quantized float forward %d (lns_scale %g dt %d G %zu)", op_name(op), i, k, ei[k], eo[k], (double)lns, dt, G);
        for (size_t j = 0; j < C; j++)
          FZ_CHECK(qi[j] == (int)qref[j], "%s row %zu col %zu: q %d, quantized float forward %g", op_name(op), i, j, qi[j], qref[j]);
      }
    }
    /* the header's bound against the float64 reference, where y is a finite f32 row of normal
     * magnitude (FakeLN: y may overflow f32 or lie in the subnormals, where the f32 y carries an
     * absolute error the relative bound does not cover; the own-forward check above covers it) */
    /* (rows whose every |h - mu| is an f32 subnormal were excluded here until the LayerNorm
     * forward sent rows with 0 < |mean| < 2^-100 to its double routine: tests/fuzz/known/
     * quant-layernorm-q8-subnormal-differences, tests/ops/rownorm_regress.c) */
    if (!(A >= 0x1p-126) || A * (1.0 + 4e-6) >= FLT_MAX || hmu_over) continue;
    /* FakeLN: differences h - mu in the f32 subnormals carry 2^-149 each, times g / sigma_bar
     * (normkit.h; a row of h ~ 6.7e-39: scale 1.2e-5 relative off,
     * tests/fuzz/known/quant-fakeln-q8-subnormal-differences) */
    double sub_d = 0.0;
    for (size_t j = 0; fake && j < C; j++)
      sub_d = fmax(sub_d, 0x1p-147 * fabs(has_g ? (offset ? 1.0 + g_r[j] : g_r[j]) : 1.0) / (double)sigma);
    if (!groups) {
      const double sref = nk_ref_q8_row(C, yi, qref);
      /* normkit.h "Accuracy": the f32 y carries up to dl = 2e-6 m (m >= A: with beta, y may be
       * small where beta cancels xhat g), so the scale is within 4e-6 A/127 + dl/127 and q within
       * 1 + 127 dl / A of the reference's */
      const double dl = 2e-6 * m + sub_d;
      FZ_CHECK(fabs(scale[i] - sref) <= 4e-6 * sref + dl / 127.0 + 0x1p-149, "%s row %zu: scale %.9g ref %.9g (dt %d eps %g C %zu h0 %g mean %g rstd %g)",
               op_name(op), i, (double)scale[i], sref, dt, (double)eps, C, hi[0], mr[i], rsr[i]);
      for (size_t j = 0; j < C; j++)
        FZ_CHECK(abs((int)qi[j] - (int)qref[j]) <= 1 + 127.0 * dl / A, "%s row %zu col %zu: q %d ref %g", op_name(op), i, j, qi[j], qref[j]);
    } else {
      /* groups: the exponent and q follow the f32 y, whose error from y_ref is up to
       * dl = 2e-6 m (the float forward's bound), which may exceed the step of a group of small
       * values in a row with large ones (normkit.h "Accuracy") */
      const double dl = 2e-6 * m + sub_d + 1e-30;
      pow2_row(C, yi, G, 127, qref, er);
      for (size_t k = 0; k < ng; k++) {
        const int ek = ei[k], rk = er[k];
        double gm = 0.0;
        for (size_t t = k * G; t < C && t < (k + 1) * G; t++) gm = fmax(gm, fabs(yi[t]));
        const double lo = ek > -127 ? ldexp(127.0, ek - 1) : 0.0, hi = ek < 127 ? ldexp(127.0, ek) : INFINITY;
        const double dist = gm < lo ? lo - gm : gm > hi ? gm - hi : 0.0;
        FZ_CHECK(ek == rk || dist <= 4e-6 * gm + dl, "%s row %zu group %zu: e %d ref %d (group max %.9g, row error %.3g)",
                 op_name(op), i, k, ek, rk, gm, dl);
        for (size_t j = k * G; j < C && j < (k + 1) * G; j++) {
          const int qq = qi[j];
          if (ek == rk)
            FZ_CHECK(abs(qq - (int)qref[j]) <= 1 + dl / ldexp(1.0, ek), "%s groups row %zu col %zu: q %d ref %g",
                     op_name(op), i, j, qq, qref[j]);
          FZ_CHECK(fabs(ldexp(qq, ek) - yi[j]) <= ldexp(1.0, ek - 1) + dl, "%s groups row %zu col %zu: q %d e %d, y_ref %.9g",
                   op_name(op), i, j, qq, ek, yi[j]);
        }
      }
    }
  }
  /* when the forward was valid on finite rows in range: its backward (fake_bwd) */
  if (op == OP_FAKE_FWD && !use_rows && all_fin && all_hmu_ok)
    fake_bwd(in, ctx, R, C, dt, pdt, has_g, has_b, offset, sigma, eps);
}

/* ---- nk_pow2quant_quantize / _rows, then nk_pow2quant_dequantize ------------------------- */
static void p2_case(fz_in *in, nk_context *ctx, unsigned bad, size_t R, size_t C, nk_dtype dt) {
  const unsigned opt = fz_u8(in);
  const int deq_only = (opt & 3) == 0, use_rows = (opt & 12) == 12, stoch = opt & 16;
  static const size_t gtab[] = {1, 2, 7, 8, 16, 32, 33, 200};
  nk_pow2quant_desc d = nk_pow2quant_desc_dense(R, C, dt);
  if (fz_u8(in) & 1) d.group = gtab[fz_pick(in, 8)];
  if (fz_u8(in) & 1) d.bits = 2 + fz_pick(in, 7);
  d.flags = stoch ? NK_POW2QUANT_STOCHASTIC : 0;
  d.seed = fz_u32(in);
  const size_t ng = (C + d.group - 1) / d.group;
  d.x_stride = (ptrdiff_t)(C + fz_pick(in, 5));
  d.q_stride = (ptrdiff_t)(C + fz_pick(in, 5));
  d.exp_stride = (ptrdiff_t)(ng + fz_pick(in, 3));
  const fz_dist xd = fz_dist_pick(in, 40);
  const fz_geom gx = fz_rows(R, C, d.x_stride, dt);
  const fz_geom gq = {1, R, C, 0, d.q_stride, 1}, ge = {1, R, ng, 0, d.exp_stride, 1};
  void *x = fz_place(in, &gx, NULL);
  int8_t *q = fz_place(in, &gq, NULL), *e = fz_place(in, &ge, NULL);
  void *y = fz_place(in, &gx, NULL);
  const int qmax = (1 << (d.bits - 1)) - 1;
  const nk_status IA = NK_STATUS_INVALID_ARGUMENT;
  if (deq_only) { /* arbitrary bytes */
    for (size_t i = 0; i < R; i++) {
      for (size_t j = 0; j < C; j++) q[i * (size_t)d.q_stride + j] = (int8_t)fz_u8(in);
      for (size_t k = 0; k < ng; k++) e[i * (size_t)d.exp_stride + k] = (int8_t)(fz_rand(in) >> 56);
    }
  } else {
    fz_fill(in, x, &gx, dt, &xd, xr);
    size_t r0 = 0, r1 = R;
    if (use_rows) r0 = fz_pick(in, (unsigned)R), r1 = r0 + 1 + fz_pick(in, (unsigned)(R - r0));
    nk_pow2quant_desc b = d;
    const void *xp = x;
    int8_t *qp = q, *ep = e;
    nk_status want = NK_OK;
    switch (bad) {
    case BAD_STRIDE: { const unsigned k = fz_pick(in, 3);
      if (k == 0) b.x_stride = (ptrdiff_t)C - 1; else if (k == 1) b.q_stride = (ptrdiff_t)C - 1 - fz_pick(in, 2);
      else b.exp_stride = (ptrdiff_t)ng - 1; want = IA; break; }
    case BAD_NEG_STRIDE: b.q_stride = -(ptrdiff_t)(1 + fz_pick(in, 50)); want = IA; break;
    case BAD_SCALAR: { const unsigned k = fz_pick(in, 3);
      if (k == 0) b.bits = fz_u8(in) & 1 ? 1 : 9 + fz_pick(in, 100); else if (k == 1) b.group = 0; else b.bits = 0; want = IA; break; }
    case BAD_FLAGS: b.flags |= 1u << (1 + fz_pick(in, 31)); want = IA; break;
    case BAD_OVERLAP: if (fz_u8(in) & 1) qp = (int8_t *)x + fz_pick(in, 2); else ep = q + fz_pick(in, (unsigned)C); want = IA; break;
    case BAD_OVERFLOW: b.rows = SIZE_MAX / (1 + fz_pick(in, 8)); b.x_stride = b.q_stride = PTRDIFF_MAX / (1 + fz_pick(in, 4)); b.cols = 1; b.exp_stride = 1; if (use_rows) r0 = 0, r1 = 1; want = IA; break;
    case BAD_NULL: { const unsigned k = fz_pick(in, 3); if (k == 0) xp = NULL; else if (k == 1) qp = NULL; else ep = NULL; want = IA; break; }
    case BAD_DTYPE: b.dtype = (nk_dtype)(3 + fz_pick(in, 100)); want = NK_STATUS_UNSUPPORTED; break;
    case BAD_RANGE: if (use_rows) { r0 = fz_u8(in) & 1 ? R + 1 : R; r1 = r0 == R ? R - 1 : R + 2; want = IA; } break;
    }
    if (want == NK_OK) {
      const fz_geom gqr = {1, r1 - r0, C, 0, d.q_stride, 1}, ger = {1, r1 - r0, ng, 0, d.exp_stride, 1};
      fz_writable(q + r0 * (size_t)d.q_stride, &gqr);
      fz_writable(e + r0 * (size_t)d.exp_stride, &ger);
    }
    fz_snapshot();
    nk_status st = use_rows ? nk_pow2quant_quantize_rows(ctx, &b, r0, r1, xp, qp, ep)
                            : nk_pow2quant_quantize(ctx, &b, xp, qp, ep);
    if (want != NK_OK) {
      expect_failure(st, want, ctx, OP_P2, bad);
      return;
    }
    FZ_CHECK(st == NK_OK, "pow2quant_quantize: status %d (%s)", st, ctx ? nk_context_message(ctx) : "");
    fz_check_arena(1, "pow2quant_quantize");
    fz_valid++;
    static double qr[MAXC];
    static int er[MAXC];
    for (size_t i = r0; i < r1; i++) {
      const double *xi = xr + i * C;
      const int8_t *qi = q + i * (size_t)d.q_stride, *ei = e + i * (size_t)d.exp_stride;
      pow2_row(C, xi, d.group, qmax, qr, er);
      for (size_t k = 0; k < ng; k++)
        FZ_CHECK(ei[k] == er[k], "pow2quant row %zu group %zu: e %d ref %d (bits %u G %zu)", i, k, ei[k], er[k], d.bits, d.group);
      for (size_t j = 0; j < C; j++) {
        if (!stoch || er[j / d.group] == NK_POW2QUANT_EXP_NAN) {
          FZ_CHECK(qi[j] == (int)qr[j], "pow2quant row %zu col %zu: q %d ref %g (x %.9g e %d bits %u)", i, j, qi[j], qr[j], xi[j], er[j / d.group], d.bits);
          continue;
        }
        /* stochastic: floor(v + u), u in [0, 1): floor(v) or floor(v) + 1, clamped */
        const double v = ldexp(xi[j], -er[j / d.group]);
        double lo = floor(v), hi = lo + 1.0;
        lo = lo < -qmax ? -qmax : lo > qmax ? qmax : lo;
        hi = hi < -qmax ? -qmax : hi > qmax ? qmax : hi;
        FZ_CHECK(qi[j] == (int)lo || qi[j] == (int)hi, "pow2quant stochastic row %zu col %zu: q %d, v %.9g", i, j, qi[j], v);
      }
    }
    if (use_rows) return;
  }
  /* the dequantize of q and e where they are (inputs now: nothing marked writable but y) */
  for (int s = 0; s < FZ_SLOTS; s++) fz_slots[s].nw = 0;
  nk_pow2quant_desc b = d;
  const int8_t *qp = q, *ep = e;
  nk_status want = NK_OK;
  const unsigned dbad = deq_only ? bad : BAD_NONE;
  switch (dbad) {
  case BAD_STRIDE: if (fz_u8(in) & 1) b.exp_stride = (ptrdiff_t)ng - 1; else b.x_stride = (ptrdiff_t)C - 1; want = IA; break;
  case BAD_NEG_STRIDE: b.q_stride = -(ptrdiff_t)(1 + fz_pick(in, 50)); want = IA; break;
  case BAD_SCALAR: b.group = 0; want = IA; break;
  case BAD_OVERLAP: y = (void *)(q + fz_pick(in, 2)); want = IA; break;
  case BAD_OVERFLOW: b.rows = SIZE_MAX / (1 + fz_pick(in, 8)); b.x_stride = b.q_stride = PTRDIFF_MAX / (1 + fz_pick(in, 4)); b.cols = 1; b.exp_stride = 1; want = IA; break;
  case BAD_NULL: { const unsigned k = fz_pick(in, 3); if (k == 0) qp = NULL; else if (k == 1) ep = NULL; else y = NULL; want = IA; break; }
  case BAD_DTYPE: b.dtype = (nk_dtype)(3 + fz_pick(in, 100)); want = NK_STATUS_UNSUPPORTED; break;
  }
  if (want == NK_OK) fz_writable(y, &gx);
  fz_snapshot();
  nk_status st = nk_pow2quant_dequantize(ctx, &b, qp, ep, y);
  if (want != NK_OK) {
    expect_failure(st, want, ctx, OP_P2, dbad);
    return;
  }
  FZ_CHECK(st == NK_OK, "pow2quant_dequantize: status %d (%s)", st, ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, "pow2quant_dequantize");
  if (deq_only) fz_valid++;
  for (size_t i = 0; i < R; i++)
    for (size_t j = 0; j < C; j++) {
      const int ev = e[i * (size_t)d.exp_stride + j / d.group], qv = q[i * (size_t)d.q_stride + j];
      const double want_v = ev == NK_POW2QUANT_EXP_NAN ? NAN : fz_round(ldexp((double)qv, ev), dt);
      const double g = fz_get(y, i * (size_t)d.x_stride + j, dt);
      FZ_CHECK(g == want_v || (isnan(g) && isnan(want_v)), "pow2quant_dequantize [%zu][%zu]: %.9g, want %.9g (q %d e %d dt %d)",
               i, j, g, want_v, qv, ev, dt);
    }
}

/* ---- nk_dequantize_q8 -------------------------------------------------------------------- */
static void deq_case(fz_in *in, nk_context *ctx, unsigned bad, size_t R, size_t C, nk_dtype dt) {
  ptrdiff_t qs = (ptrdiff_t)(C + fz_pick(in, 5)), ys = (ptrdiff_t)(C + fz_pick(in, 5));
  const fz_geom gq = {1, R, C, 0, qs, 1}, gy = fz_rows(R, C, ys, dt), gs = fz_vec(R, 4);
  int8_t *q = fz_place(in, &gq, NULL);
  for (size_t i = 0; i < R; i++)
    for (size_t j = 0; j < C; j++) q[i * (size_t)qs + j] = (int8_t)fz_u8(in);
  float *scale = fz_place(in, &gs, NULL);
  const fz_dist sd = fz_dist_pick(in, 80);
  fz_fill(in, scale, &gs, NK_DTYPE_F32, &sd, NULL);
  void *y = fz_place(in, &gy, NULL);
  const int8_t *qp = q;
  const float *sp = scale;
  nk_dtype ydt = dt;
  nk_status want = NK_OK;
  const nk_status IA = NK_STATUS_INVALID_ARGUMENT;
  switch (bad) {
  case BAD_STRIDE: if (fz_u8(in) & 1) qs = (ptrdiff_t)C - 1; else ys = (ptrdiff_t)C - 1 - fz_pick(in, 2); want = IA; break;
  case BAD_NEG_STRIDE: ys = -(ptrdiff_t)(1 + fz_pick(in, 50)); want = IA; break;
  /* y on q: at an offset inside q's C bytes (q + 1 of a one-byte q lay beside it, on the guard
   * page, no overlap: a harness bug, tests/fuzz/known/quant-dequantize-overlap-beside-q) */
  case BAD_OVERLAP: if (fz_u8(in) & 1) y = (void *)(q + fz_pick(in, C < 2 ? 1 : 2)); else y = (void *)scale; want = IA; break;
  case BAD_OVERFLOW: R = SIZE_MAX / (1 + fz_pick(in, 8)); qs = ys = PTRDIFF_MAX / (1 + fz_pick(in, 4)); C = 1; want = IA; break;
  case BAD_NULL: { const unsigned k = fz_pick(in, 3); if (k == 0) qp = NULL; else if (k == 1) sp = NULL; else y = NULL; want = IA; break; }
  case BAD_DTYPE: ydt = (nk_dtype)(3 + fz_pick(in, 100)); want = NK_STATUS_UNSUPPORTED; break;
  }
  if (want == NK_OK) fz_writable(y, &gy);
  fz_snapshot();
  nk_status st = nk_dequantize_q8(ctx, R, C, qp, qs, sp, ydt, y, ys);
  if (want != NK_OK) {
    expect_failure(st, want, ctx, OP_DEQ, bad);
    return;
  }
  FZ_CHECK(st == NK_OK, "dequantize_q8: status %d (%s)", st, ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, "dequantize_q8");
  fz_valid++;
  for (size_t i = 0; i < R; i++)
    for (size_t j = 0; j < C; j++) {
      const float p = (float)q[i * (size_t)qs + j] * scale[i];
      const double w = fz_round(p, dt), g = fz_get(y, i * (size_t)ys + j, dt);
      FZ_CHECK(g == w || (isnan(g) && isnan(w)), "dequantize_q8 [%zu][%zu]: %.9g want %.9g", i, j, g, w);
    }
}

/* ---- nk_fakeln_calibrate ----------------------------------------------------------------- */
static void cal_case(fz_in *in, nk_context *ctx, unsigned bad, size_t R, size_t C, nk_dtype dt) {
  const unsigned opt = fz_u8(in);
  const int has_r = opt & 1, has_mask = opt & 2, has_stats = opt & 4;
  static const float mom_t[] = {0.0f, 0.0f, 0.9f, 0.5f, 0.99f, 0.0f};
  float mom = mom_t[fz_pick(in, 6)];
  nk_norm_desc d = nk_norm_desc_dense(R, C, dt, eps_table[fz_pick(in, 8)]);
  d.x_stride = (ptrdiff_t)(C + fz_pick(in, 5));
  d.r_stride = (ptrdiff_t)(C + fz_pick(in, 5));
  const fz_dist xd = fz_dist_pick(in, 24);
  const fz_geom gx = fz_rows(R, C, d.x_stride, dt), gr = fz_rows(R, C, d.r_stride, dt);
  const fz_geom gm = fz_vec(R, 1), g1 = fz_vec(1, 4), gst = fz_vec(sizeof(nk_fakeln_stats) / 8, 8);
  void *x = fz_place(in, &gx, NULL);
  fz_fill(in, x, &gx, dt, &xd, xr);
  void *r = NULL;
  if (has_r) {
    r = fz_place(in, &gr, NULL);
    fz_fill(in, r, &gr, dt, &xd, rr_);
  }
  uint8_t *mask = NULL;
  if (has_mask) {
    mask = fz_place(in, &gm, NULL);
    for (size_t i = 0; i < R; i++) mask[i] = fz_pick(in, 4) ? (uint8_t)(1 + fz_pick(in, 255)) : 0;
  }
  float *sb = fz_place(in, &g1, NULL);
  const float prev = sigma_table[fz_pick(in, 8)];
  *sb = prev;
  nk_fakeln_stats *stats = has_stats ? fz_place(in, &gst, NULL) : NULL;
  for (size_t k = 0; k < R * C; k++)
    hr[k] = has_r ? fz_round((float)xr[k] + (float)rr_[k], dt) : xr[k];

  const nk_status IA = NK_STATUS_INVALID_ARGUMENT;
  nk_status want = NK_OK;
  const void *xp = x;
  float *sbp = sb;
  switch (bad) {
  case BAD_STRIDE: d.x_stride = (ptrdiff_t)C - 1 - fz_pick(in, 2); want = IA; break;
  case BAD_NEG_STRIDE: if (has_r) { d.r_stride = -(ptrdiff_t)(1 + fz_pick(in, 50)); want = IA; } break;
  case BAD_SCALAR: { const unsigned k = fz_pick(in, 4);
    if (k == 0) { const float e[] = {0.0f, -1e-5f, NAN, INFINITY}; d.eps = e[fz_pick(in, 4)]; }
    else if (k == 1) { const float m[] = {1.0f, -0.1f, NAN, 1.5f, INFINITY}; mom = m[fz_pick(in, 5)]; }
    else { const float p[] = {0.0f, -1.0f, NAN, INFINITY}; mom = 0.9f; *sb = p[fz_pick(in, 4)]; }
    want = IA; break; }
  case BAD_OVERFLOW: d.rows = SIZE_MAX / (1 + fz_pick(in, 8)); d.x_stride = PTRDIFF_MAX / (1 + fz_pick(in, 4)); d.cols = 1; want = IA; break;
  case BAD_NULL: if (fz_u8(in) & 1) xp = NULL; else sbp = NULL; want = IA; break;
  case BAD_DTYPE: d.dtype = (nk_dtype)(3 + fz_pick(in, 100)); want = NK_STATUS_UNSUPPORTED; break;
  case BAD_FLAGS: if (stats) { stats = (nk_fakeln_stats *)((char *)stats + 1 + fz_pick(in, 7)); want = IA; } break; /* misaligned */
  case BAD_RANGE: d.rows = 0; want = IA; break; /* header: no usable row */
  }
  /* the expected result (double, as the header defines it) */
  double sum = 0.0, sum2 = 0.0, smin = INFINITY, smax = 0.0;
  size_t used = 0, nonfin = 0;
  for (size_t i = 0; i < R; i++) {
    if (mask && mask[i] == 0) continue;
    const double s = nk_ref_fakeln_row_std(C, hr + i * C, (double)d.eps);
    if (!isfinite(s)) { nonfin++; continue; }
    sum += s, sum2 += s * s, smin = fmin(smin, s), smax = fmax(smax, s), used++;
  }
  const double batch = used ? sum / (double)used : 0.0;
  const double est = mom > 0.0f ? (double)mom * (double)prev + (1.0 - (double)mom) * batch : batch;
  int ambiguous = 0;
  if (want == NK_OK) {
    if (used == 0) want = IA; /* header: no usable row */
    else if (!isfinite((float)est)) want = IA; /* the estimate does not fit an f32 */
    ambiguous = fabs(est - FLT_MAX) <= 1e-6 * FLT_MAX;
  }
  if (want == NK_OK) fz_writable(sb, &g1), fz_writable(stats, &gst);
  fz_snapshot();
  nk_status st = nk_fakeln_calibrate(ctx, &d, xp, r, mask, mom, sbp, stats);
  if (ambiguous) return;
  if (want != NK_OK) {
    expect_failure(st, want, ctx, OP_CAL, bad);
    return;
  }
  FZ_CHECK(st == NK_OK, "fakeln_calibrate: status %d (%s)", st, ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, "fakeln_calibrate");
  fz_valid++;
  FZ_CHECK(fabs(*sb - est) <= (mom > 0.0f ? 1e-6 : 1e-7) * est, "sigma_bar %.9g want %.9g (momentum %g)",
           (double)*sb, est, (double)mom);
  if (!stats) return;
  FZ_CHECK(stats->rows_used == used && stats->rows_nonfinite == nonfin, "rows used %zu/%zu nonfinite %zu/%zu",
           stats->rows_used, used, stats->rows_nonfinite, nonfin);
  FZ_CHECK(fabs(stats->sigma_batch - batch) <= 1e-12 * batch && fabs(stats->sigma_min - smin) <= 1e-12 * smin &&
               fabs(stats->sigma_max - smax) <= 1e-12 * smax,
           "batch statistics %.17g %.17g %.17g want %.17g %.17g %.17g", stats->sigma_batch,
           stats->sigma_min, stats->sigma_max, batch, smin, smax);
  const double s_b = *sb, dev = fmax(fabs(smax / s_b - 1.0), fabs(smin / s_b - 1.0));
  FZ_CHECK(fabs(stats->rel_dev_max - dev) <= 1e-9, "rel_dev_max %g want %g", stats->rel_dev_max, dev);
  double ms = 0.0;
  for (size_t i = 0; i < R; i++) {
    if (mask && mask[i] == 0) continue;
    const double s = nk_ref_fakeln_row_std(C, hr + i * C, (double)d.eps);
    if (isfinite(s)) ms += (s / s_b - 1.0) * (s / s_b - 1.0);
  }
  ms = sqrt(ms / (double)used);
  FZ_CHECK(fabs(stats->rel_dev_rms - ms) <= 1e-5 * (1.0 + ms), "rel_dev_rms %g want %g", stats->rel_dev_rms, ms);
}

/* ---- nk_fakeln_to_layernorm -------------------------------------------------------------- */
static void to_ln_case(fz_in *in, nk_context *ctx, unsigned bad, size_t C) {
  const unsigned opt = fz_u8(in);
  const int has_g = opt & 1, inplace = has_g && (opt & 2);
  float sigma = sigma_table[fz_pick(in, 8)];
  const fz_geom gp = fz_vec(C + 1, 4), gc = fz_vec(C, 4), g1 = fz_vec(1, 4);
  const fz_dist gd = fz_dist_pick(in, 24);
  float *gamma = NULL;
  if (has_g) {
    gamma = fz_place(in, &gp, NULL);
    fz_fill(in, gamma, &gc, NK_DTYPE_F32, &gd, g_r);
  }
  float *gout = inplace ? gamma : fz_place(in, &gc, NULL);
  float *eps_out = fz_place(in, &g1, NULL);
  const nk_status IA = NK_STATUS_INVALID_ARGUMENT;
  nk_status want = NK_OK;
  switch (bad) {
  case BAD_SCALAR: { const float s[] = {0.0f, -1.0f, NAN, INFINITY, -0.0f}; sigma = s[fz_pick(in, 5)]; want = IA; break; }
  case BAD_OVERLAP: if (has_g && C > 1) { gout = gamma + 1; want = IA; } break;
  case BAD_NULL: if (fz_u8(in) & 1) eps_out = NULL; else if (C > 0) gout = NULL; else eps_out = NULL; want = IA; break;
  }
  if (want == NK_OK) fz_writable(gout, &gc), fz_writable(eps_out, &g1);
  fz_snapshot();
  nk_status st = nk_fakeln_to_layernorm(ctx, C, sigma, gamma, gout, eps_out);
  if (want != NK_OK) {
    expect_failure(st, want, ctx, OP_TO_LN, bad);
    return;
  }
  FZ_CHECK(st == NK_OK, "fakeln_to_layernorm: status %d (%s)", st, ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, "fakeln_to_layernorm");
  fz_valid++;
  FZ_CHECK(*eps_out == 1e12f, "eps_out %g", (double)*eps_out);
  const double k = 1e6 / (double)sigma;
  for (size_t j = 0; j < C; j++) {
    const double ref = (has_g ? g_r[j] : 1.0) * k;
    FZ_CHECK(fz_close(gout[j], ref, fz_ulp(ref, NK_DTYPE_F32), NK_DTYPE_F32), "gamma_out[%zu] %.9g ref %.9g", j,
             (double)gout[j], ref);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in;
  fz_start(&in, "quant", data, size);

  const unsigned op = fz_pick(&in, OP_COUNT);
  unsigned bad = fz_pick(&in, 8) == 0 ? 1 + fz_pick(&in, BAD_COUNT - 1) : BAD_NONE;
  nk_context *ctx = fz_context(&in);
  const int zero = fz_pick(&in, 24) == 0;
  const size_t R = 1 + fz_pick(&in, MAXR);
  const unsigned csel = fz_pick(&in, 8);
  const size_t C = csel == 0 ? 1 + fz_pick(&in, 3) : csel < 6 ? 1 + fz_pick(&in, 80) : 1 + fz_pick(&in, 250) % MAXC;
  const nk_dtype dt = fz_dtype(&in);

  if (zero) { /* zero sizes: nothing read or written, OK (calibrate: no usable row) */
    nk_norm_desc d = nk_norm_desc_dense(fz_u8(&in) & 1 ? 0 : R, 0, dt, 1e-5f);
    if (fz_u8(&in) & 1) d.rows = 0, d.cols = C;
    nk_pow2quant_desc p = nk_pow2quant_desc_dense(d.rows, d.cols, dt);
    float s = 1.0f;
    fz_snapshot();
    nk_status st;
    switch (op) {
    case OP_LN_Q8: st = nk_layernorm_fwd_q8(ctx, &d, NULL, NULL, NULL, NULL, NULL, NULL, &s, NULL, NULL, NULL, NULL); break;
    case OP_RMS_Q8: st = nk_rmsnorm_fwd_q8(ctx, &d, NULL, NULL, NULL, NULL, NULL, NULL, &s, NULL, NULL, NULL); break;
    case OP_FAKE_Q8: st = nk_fakeln_fwd_q8(ctx, &d, NULL, 1.0f, NULL, NULL, NULL, NULL, NULL, &s, NULL, NULL, NULL); break;
    case OP_FAKE_FWD: st = nk_fakeln_fwd(ctx, &d, 1.0f, NULL, NULL, NULL, NULL, NULL, NULL, NULL); break;
    case OP_P2: st = nk_pow2quant_quantize(ctx, &p, NULL, NULL, NULL); break;
    case OP_DEQ: st = nk_dequantize_q8(ctx, d.rows, d.cols, NULL, 1, NULL, dt, NULL, 1); break;
    case OP_CAL: {
      static float xs[4];
      st = nk_fakeln_calibrate(ctx, &d, xs, NULL, NULL, 0.0f, &s, NULL);
      FZ_CHECK(st == NK_STATUS_INVALID_ARGUMENT && s == 1.0f, "calibrate of no rows: status %d", st);
      fz_valid++;
      return 0;
    }
    default: st = nk_fakeln_to_layernorm(ctx, 0, 2.0f, NULL, NULL, &s); FZ_CHECK(s == 1e12f, "eps_out"); break;
    }
    FZ_CHECK(st == NK_OK, "%s: zero sizes: status %d", op_name(op), st);
    FZ_CHECK(op == OP_TO_LN || s == 1.0f, "%s: zero sizes wrote", op_name(op));
    fz_check_arena(0, "zero sizes");
    fz_valid++;
    return 0;
  }
  switch (op) {
  case OP_P2: p2_case(&in, ctx, bad, R, C, dt); break;
  case OP_DEQ: deq_case(&in, ctx, bad, R, C, dt); break;
  case OP_CAL: cal_case(&in, ctx, bad, R, C, dt); break;
  case OP_TO_LN: to_ln_case(&in, ctx, bad, C); break;
  default: norm_case(&in, ctx, op, bad, R, C, dt); break;
  }
  return 0;
}
