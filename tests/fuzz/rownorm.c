/*
 * tests/fuzz/rownorm.c — libFuzzer harness: nk_layernorm_fwd/bwd, nk_rmsnorm_fwd/bwd and their
 * _rows forms (fuzz.h explains the decoder, the guard-page arena and the canary check).
 * One input = one forward (sizes, strides, dtypes, eps, flags, residual, optional outputs,
 * in place) and, when it is valid, one backward from the forward's statistics: from h, or from
 * the stored y (NK_NORM_BWD_FROM_Y), whole or as a _rows range with double accumulators.
 * Bounds: those of tests/ops/rownorm.c (docs/ops/layernorm.md):
 *   y f32 2e-6 max|ref| of the row; bf16/f16 1 ulp (+ 2e-6 max|ref| with beta);
 *   dx 4e-6 S (+ 1 ulp for bf16/f16 or with dh), S = rstd max|g dy| max(1, max|xhat|);
 *   dgamma 4e-6 sum|dy| max|xhat| + 1 ulp; dbeta 4e-6 sum|dy| + 1 ulp.
 * Parameters and dy are drawn tame (|v| ~ 1, no specials): the header's bounds are stated for
 * any finite x, and x gets every special value.
 */
#include <float.h>

#include "fuzz.h"
#include "reference.h"

#define MAXR 6
#define MAXC 300

static const float eps_table[] = {1e-5f, 1e-6f, 1e-3f, 0x1p-23f, 1.0f, 1e-30f, 0x1p-7f, 1e-12f};

enum { BAD_NONE, BAD_STRIDE, BAD_NEG_STRIDE, BAD_EPS, BAD_FLAGS, BAD_OVERLAP, BAD_OVERFLOW,
       BAD_NULL, BAD_DTYPE, BAD_RANGE, BAD_COUNT };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in;
  fz_start(&in, "rownorm", data, size);

  const int rms = fz_u8(&in) & 1;
  unsigned bad = fz_pick(&in, 8) == 0 ? 1 + fz_pick(&in, BAD_COUNT - 1) : BAD_NONE;
  nk_context *ctx = fz_context(&in);
  const size_t R = fz_pick(&in, 16) == 0 ? 0 : 1 + fz_pick(&in, MAXR);
  const unsigned csel = fz_pick(&in, 8);
  const size_t C = csel == 0 ? 1 + fz_pick(&in, 3) : csel < 6 ? 1 + fz_pick(&in, 80)
                                                               : 1 + fz_pick(&in, 250) % MAXC;
  const nk_dtype dt = fz_dtype(&in);
  const nk_dtype pdt = fz_u8(&in) & 1 ? dt : NK_DTYPE_F32;
  const unsigned opt = fz_u8(&in);
  const int has_r = opt & 1, has_h = has_r && (opt & 2), has_g = opt & 4, has_b = opt & 8,
            offset = has_g && (opt & 16), inplace = opt & 32, use_rows = (opt & 192) == 192;
  const float eps = eps_table[fz_pick(&in, 8)];

  nk_norm_desc d = nk_norm_desc_dense(R, C, dt, eps);
  d.param_dtype = pdt;
  d.flags = offset ? NK_NORM_GAMMA_OFFSET : 0;
  d.x_stride = (ptrdiff_t)(C + fz_pick(&in, 5));
  d.r_stride = (ptrdiff_t)(C + fz_pick(&in, 5));
  d.h_stride = (ptrdiff_t)(C + fz_pick(&in, 5));
  d.y_stride = inplace ? d.x_stride : (ptrdiff_t)(C + fz_pick(&in, 5));

  const fz_dist dx_dist = fz_dist_pick(&in, 24);
  const fz_dist tame = {0.0, 1.0, 0};
  const fz_geom gx = fz_rows(R, C, d.x_stride, dt), gr = fz_rows(R, C, d.r_stride, dt);
  const fz_geom gh = fz_rows(R, C, d.h_stride, dt), gy = fz_rows(R, C, d.y_stride, dt);
  const fz_geom gp = fz_vec(C, nk_dtype_size(pdt)), gs = fz_vec(R, 4);

  static double xr[MAXR * MAXC], rr_[MAXR * MAXC], hr[MAXR * MAXC], g_r[MAXC], b_r[MAXC];
  static double yr[MAXR * MAXC], mr[MAXR], rsr[MAXR], got[MAXR * MAXC];
  void *x = fz_place(&in, &gx, NULL);
  fz_fill(&in, x, &gx, dt, &dx_dist, xr);
  void *r = NULL, *h = NULL, *gamma = NULL, *beta = NULL;
  if (has_r) {
    r = fz_place(&in, &gr, NULL);
    fz_fill(&in, r, &gr, dt, &dx_dist, rr_);
  }
  if (has_h) h = fz_place(&in, &gh, NULL);
  if (has_g) {
    gamma = fz_place(&in, &gp, NULL);
    fz_fill(&in, gamma, &gp, pdt, &tame, g_r);
  }
  if (has_b) {
    beta = fz_place(&in, &gp, NULL);
    fz_fill(&in, beta, &gp, pdt, &tame, b_r);
  }
  void *y = inplace ? x : fz_place(&in, &gy, NULL);
  float *mean = rms ? NULL : fz_place(&in, &gs, NULL);
  float *rstd = fz_place(&in, &gs, NULL);
  for (size_t k = 0; k < R * C; k++)
    hr[k] = has_r ? fz_round((float)xr[k] + (float)rr_[k], dt) : xr[k];

  /* one broken rule, and the status it must give */
  nk_status want = NK_OK;
  /* zero sizes (and an empty row range, even of a broken descriptor) are a no-op, OK */
  if (R == 0 && (bad != BAD_OVERFLOW || use_rows)) bad = BAD_NONE;
  size_t r0 = 0, r1 = R;
  if (use_rows && R > 0) r0 = fz_pick(&in, (unsigned)R), r1 = r0 + 1 + fz_pick(&in, (unsigned)(R - r0));
  switch (bad) {
  case BAD_STRIDE: d.x_stride = (ptrdiff_t)C - 1 - fz_pick(&in, 3); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NEG_STRIDE: d.y_stride = -(ptrdiff_t)(1 + fz_pick(&in, 100)); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_EPS: { const float e[] = {0.0f, -1e-5f, NAN, INFINITY, -0.0f}; d.eps = e[fz_pick(&in, 5)]; want = NK_STATUS_INVALID_ARGUMENT; break; }
  case BAD_FLAGS: d.flags |= 1u << (3 + fz_pick(&in, 29)); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_OVERLAP: /* rstd written into y (partial overlap), or a shifted in-place y */
    if (R > 0 && C > 1 && !inplace) { y = (char *)x + nk_dtype_size(dt); want = NK_STATUS_INVALID_ARGUMENT; }
    else if (R > 0) { rstd = (float *)y; want = NK_STATUS_INVALID_ARGUMENT; }
    break;
  case BAD_OVERFLOW: d.rows = SIZE_MAX / (1 + fz_pick(&in, 8)); d.x_stride = d.y_stride = PTRDIFF_MAX / (1 + fz_pick(&in, 4)); d.cols = 1; want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NULL: if (R > 0) { x = NULL; want = NK_STATUS_INVALID_ARGUMENT; } break;
  case BAD_DTYPE: d.dtype = (nk_dtype)(3 + fz_pick(&in, 100)); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_RANGE: if (use_rows) { r0 = R + 1; r1 = R + 2 + fz_pick(&in, 3); want = NK_STATUS_INVALID_ARGUMENT; } break;
  }
  if (has_h && !has_r && want == NK_OK) want = NK_STATUS_INVALID_ARGUMENT; /* cannot happen */
  if (bad == BAD_DTYPE && pdt != NK_DTYPE_F32) want = NK_STATUS_INVALID_ARGUMENT;

  if (want == NK_OK) {
    fz_writable(y, &gy), fz_writable(h, &gh);
    const fz_geom gsr = {1, 1, r1 - r0, 0, 0, 4};
    fz_writable(mean ? mean + r0 : NULL, &gsr), fz_writable(rstd + r0, &gsr);
    if (!use_rows) fz_writable(mean, &gs), fz_writable(rstd, &gs);
  }
  fz_snapshot();
  nk_status st;
  if (use_rows)
    st = rms ? nk_rmsnorm_fwd_rows(ctx, &d, r0, r1, x, r, gamma, beta, y, h, rstd)
             : nk_layernorm_fwd_rows(ctx, &d, r0, r1, x, r, gamma, beta, y, h, mean, rstd);
  else
    st = rms ? nk_rmsnorm_fwd(ctx, &d, x, r, gamma, beta, y, h, rstd)
             : nk_layernorm_fwd(ctx, &d, x, r, gamma, beta, y, h, mean, rstd);
  if (want != NK_OK) {
    FZ_CHECK(st == want || (st != NK_OK && bad == BAD_DTYPE), "fwd: bad %u: status %d, want %d (%s)", bad, st, want,
             nk_context_message(ctx));
    FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "fwd: no message for a failure");
    fz_check_arena(0, "fwd");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "fwd: status %d (%s)", st, nk_context_message(ctx));
  fz_check_arena(1, "fwd");
  fz_valid++;

  /* ---- forward against the reference ---- */
  if (rms)
    nk_ref_rmsnorm_fwd(R, C, hr, has_g ? g_r : NULL, has_b ? b_r : NULL, offset, eps, yr, rsr);
  else
    nk_ref_layernorm_fwd(R, C, hr, has_g ? g_r : NULL, has_b ? b_r : NULL, offset, eps, yr, mr,
                         rsr);
  fz_read(y, &gy, dt, got);
  int all_finite = 1;
  for (size_t i = r0; i < r1; i++) {
    if (!fz_finite_all(hr + i * C, C)) {
      /* header: a row with NaN or +-inf gives NaN in every output of the row (the reference
       * differs for a one-element row of -inf: rstd 0) */
      all_finite = 0;
      for (size_t j = 0; j < C; j++)
        FZ_CHECK(isnan(got[i * C + j]), "non-finite row %zu: y[%zu] = %g", i, j, got[i * C + j]);
      FZ_CHECK(isnan(rstd[i]) && (rms || isnan(mean[i])), "non-finite row %zu: statistics", i);
      continue;
    }
    /* m: max|ref| of the row and, with beta, max|ref - beta| (the header's 2e-6 max|ref| cannot
     * hold when beta cancels xhat*g: y = fmaf(xhat, g, b) carries xhat's f32 rounding, e.g.
     * RMSNorm cols 1, h 2.053, b -0.978: y 0.02156 with an error of 5e-8 = 2.5e-6 |y|) */
    double m = 0.0;
    for (size_t j = 0; j < C; j++) {
      m = fmax(m, fabs(yr[i * C + j]));
      if (has_b) m = fmax(m, fabs(yr[i * C + j] - b_r[j]));
    }
    for (size_t j = 0; j < C; j++) {
      const double ref = yr[i * C + j];
      /* header: f32 2e-6 m (+ 2^-148 for outputs in the f32 subnormals); bf16/f16 1 ulp + that */
      double bound = dt == NK_DTYPE_F32 ? 2e-6 * m + 0x1p-148 : fz_ulp(ref, dt) + 2e-6 * m;
      FZ_CHECK(fz_close(got[i * C + j], ref, bound, dt),
               "%s fwd y[%zu][%zu] = %.9g, ref %.9g (bound %.3g) dt %d cols %zu",
               rms ? "rmsnorm" : "layernorm", i, j, got[i * C + j], ref, bound, dt, C);
      if (h) FZ_CHECK(fz_get(h, i * (size_t)d.h_stride + j, dt) == hr[i * C + j] ||
                          (isnan(hr[i * C + j]) && isnan(fz_get(h, i * (size_t)d.h_stride + j, dt))),
                      "h[%zu][%zu]", i, j);
    }
    FZ_CHECK(fz_close(rstd[i], rsr[i], 2e-6 * rsr[i], NK_DTYPE_F32), "rstd[%zu] %.9g ref %.9g",
             i, (double)rstd[i], rsr[i]);
    if (!rms) {
      const double sd = 1.0 / rsr[i];
      FZ_CHECK(fz_close(mean[i], mr[i], fz_ulp(mr[i], NK_DTYPE_F32) + 1e-6 * (isfinite(sd) ? sd : 0.0),
                        NK_DTYPE_F32),
               "mean[%zu] %.9g ref %.9g", i, (double)mean[i], mr[i]);
    }
  }
  if (use_rows || R == 0 || C == 0 || !all_finite) return 0;

  /* ---- backward, from this forward's h (or y), mean and rstd ---- */
  /* y as stored (the input of the from-y backward), mean and rstd: copied out of the arena
   * before fz_begin, whose new placements reuse (and canary-fill) the forward's slots */
  static double yv[MAXR * MAXC];
  static float mean_v[MAXR], rstd_v[MAXR];
  memcpy(yv, got, R * C * sizeof(double));
  memcpy(rstd_v, rstd, R * 4);
  if (!rms) memcpy(mean_v, mean, R * 4);
  fz_begin();
  nk_norm_desc b = d;
  const unsigned bopt = fz_u8(&in);
  const int has_dh = bopt & 1, acc = bopt & 2, want_dg = bopt & 4, want_db = bopt & 8,
            dx_on_dy = bopt & 16, from_y = (bopt & 32) != 0, brows = (bopt & 64) != 0;
  b.flags = (offset ? NK_NORM_GAMMA_OFFSET : 0) | (acc ? NK_NORM_ACCUMULATE : 0) |
            (from_y ? NK_NORM_BWD_FROM_Y : 0);
  b.x_stride = (ptrdiff_t)C + fz_pick(&in, 4);
  b.dy_stride = (ptrdiff_t)C + fz_pick(&in, 4);
  b.dh_stride = (ptrdiff_t)C + fz_pick(&in, 4);
  b.dx_stride = dx_on_dy ? b.dy_stride : (ptrdiff_t)C + fz_pick(&in, 4);
  const fz_geom bx = fz_rows(R, C, b.x_stride, dt), bdy = fz_rows(R, C, b.dy_stride, dt);
  const fz_geom bdh = fz_rows(R, C, b.dh_stride, dt), bdx = fz_rows(R, C, b.dx_stride, dt);
  static double dyr[MAXR * MAXC], dhr[MAXR * MAXC], dxr[MAXR * MAXC], dgr[MAXC], dbr[MAXC];
  static double dg0[MAXC], db0[MAXC], geff[MAXC];
  /* the row range of the _rows form (the whole tensor otherwise) */
  size_t q0 = 0, q1 = R;
  if (brows) q0 = fz_pick(&in, (unsigned)R), q1 = q0 + fz_pick(&in, (unsigned)(R - q0 + 1));
  void *bxp = fz_place(&in, &bx, NULL);
  for (size_t i = 0; i < R; i++)
    for (size_t j = 0; j < C; j++)
      fz_set(bxp, i * (size_t)b.x_stride + j, from_y ? yv[i * C + j] : hr[i * C + j], dt);
  void *g2 = NULL, *b2 = NULL;
  int zero_gain = 0;
  for (size_t j = 0; j < C; j++) {
    geff[j] = has_g ? (offset ? (double)(1.0f + (float)g_r[j]) : g_r[j]) : 1.0;
    zero_gain |= geff[j] == 0.0;
  }
  if (has_g) {
    g2 = fz_place(&in, &gp, NULL);
    for (size_t j = 0; j < C; j++) fz_set(g2, j, g_r[j], pdt);
  }
  if (has_b && from_y) { /* beta is read only by the from-y backward */
    b2 = fz_place(&in, &gp, NULL);
    for (size_t j = 0; j < C; j++) fz_set(b2, j, b_r[j], pdt);
  }
  float *m2 = NULL, *rs2 = fz_place(&in, &gs, NULL);
  memcpy(rs2, rstd_v, R * 4);
  if (!rms && !from_y) {
    m2 = fz_place(&in, &gs, NULL);
    memcpy(m2, mean_v, R * 4);
  }
  void *dy = fz_place(&in, &bdy, NULL);
  fz_fill(&in, dy, &bdy, dt, &tame, dyr);
  void *dh = NULL;
  if (has_dh) {
    dh = fz_place(&in, &bdh, NULL);
    fz_fill(&in, dh, &bdh, dt, &tame, dhr);
  }
  void *dxp = dx_on_dy ? dy : fz_place(&in, &bdx, NULL);
  void *dg = NULL, *db = NULL;
  const nk_dtype adt = brows ? NK_DTYPE_F32 : pdt; /* (the _rows accumulators are doubles) */
  const fz_geom ga = brows ? fz_vec(C, 8) : gp;
  if (want_dg && has_g) {
    dg = fz_place(&in, &ga, NULL);
    if (brows) for (size_t j = 0; j < C; j++) ((double *)dg)[j] = dg0[j] = fz_value(&in, &tame);
    else fz_fill(&in, dg, &gp, pdt, &tame, dg0);
  }
  if (want_db) {
    db = fz_place(&in, &ga, NULL);
    if (brows) for (size_t j = 0; j < C; j++) ((double *)db)[j] = db0[j] = fz_value(&in, &tame);
    else fz_fill(&in, db, &gp, pdt, &tame, db0);
  }
  size_t wsb = 0;
  FZ_CHECK((rms ? nk_rmsnorm_bwd_workspace_size(&b, &wsb) : nk_layernorm_bwd_workspace_size(&b, &wsb)) == NK_OK,
           "workspace size");
  if (brows) wsb = from_y ? C * 4 + NK_WORKSPACE_ALIGN : 0; /* header: cols floats + the slack */
  void *ws = NULL;
  fz_geom gw = fz_vec(wsb, 1);
  if (wsb) ws = fz_place(&in, &gw, NULL);
  const int short_ws = wsb && (fz_pick(&in, 16) == 0);
  /* from y needs every gain != 0 (INVALID_ARGUMENT, checked before anything is written) */
  const int bad_gain = from_y && zero_gain && q1 > q0;
  if (!short_ws && !bad_gain) {
    const fz_geom bdxr = fz_rows(q1 - q0, C, b.dx_stride, dt);
    fz_writable(q1 > q0 ? (char *)dxp + q0 * (size_t)b.dx_stride * nk_dtype_size(dt) : NULL, &bdxr);
    fz_writable(dg, &ga), fz_writable(db, &ga), fz_writable(ws, &gw);
  }
  fz_snapshot();
  const size_t wsz = wsb - (size_t)short_ws;
  if (brows)
    st = rms ? nk_rmsnorm_bwd_rows(ctx, &b, q0, q1, bxp, g2, b2, rs2, dy, dh, dxp, dg, db, ws, wsz)
             : nk_layernorm_bwd_rows(ctx, &b, q0, q1, bxp, g2, b2, m2, rs2, dy, dh, dxp, dg, db,
                                     ws, wsz);
  else
    st = rms ? nk_rmsnorm_bwd(ctx, &b, bxp, g2, b2, rs2, dy, dh, dxp, dg, db, ws, wsz)
             : nk_layernorm_bwd(ctx, &b, bxp, g2, b2, m2, rs2, dy, dh, dxp, dg, db, ws, wsz);
  if (short_ws || bad_gain) {
    const nk_status w = short_ws ? NK_STATUS_MISUSE : NK_STATUS_INVALID_ARGUMENT;
    FZ_CHECK(st == w || (short_ws && bad_gain && st == NK_STATUS_INVALID_ARGUMENT),
             "bwd (short workspace %d, zero gain %d): status %d", short_ws, bad_gain, st);
    fz_check_arena(0, "bwd");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "bwd: status %d (%s)", st, nk_context_message(ctx));
  fz_check_arena(1, "bwd");
  /* The reference: from h (float64 statistics), or from y as stored (xhat = (y - b) / g with the
   * saved rstd: the header's accuracy of the from-y backward is that of y). dgamma/dbeta over
   * the rows [q0, q1). */
  static double xh[MAXR * MAXC];
  memset(dgr, 0, C * 8), memset(dbr, 0, C * 8);
  if (from_y) {
    for (size_t i = 0; i < R; i++) {
      double mgd = 0.0, mgx = 0.0;
      for (size_t j = 0; j < C; j++) {
        const double gd = geff[j] * dyr[i * C + j];
        xh[i * C + j] = (yv[i * C + j] - (has_b ? b_r[j] : 0.0)) / geff[j];
        mgd += gd, mgx += gd * xh[i * C + j];
      }
      mgd = rms ? 0.0 : mgd / (double)C, mgx /= (double)C;
      for (size_t j = 0; j < C; j++) {
        dxr[i * C + j] = (double)rstd_v[i] * (geff[j] * dyr[i * C + j] - mgd - xh[i * C + j] * mgx);
        if (i >= q0 && i < q1) dgr[j] += dyr[i * C + j] * xh[i * C + j], dbr[j] += dyr[i * C + j];
      }
    }
  } else {
    if (rms)
      nk_ref_rmsnorm_bwd(R, C, hr, has_g ? g_r : NULL, offset, eps, dyr, dxr, dgr, dbr);
    else
      nk_ref_layernorm_bwd(R, C, hr, has_g ? g_r : NULL, offset, eps, dyr, dxr, dgr, dbr);
    if (brows) {
      static double sub[MAXR * MAXC];
      memset(dgr, 0, C * 8), memset(dbr, 0, C * 8);
      if (q1 > q0) {
        if (rms)
          nk_ref_rmsnorm_bwd(q1 - q0, C, hr + q0 * C, has_g ? g_r : NULL, offset, eps,
                             dyr + q0 * C, sub, dgr, dbr);
        else
          nk_ref_layernorm_bwd(q1 - q0, C, hr + q0 * C, has_g ? g_r : NULL, offset, eps,
                               dyr + q0 * C, sub, dgr, dbr);
      }
    }
  }
  fz_read(dxp, &bdx, dt, got);
  static double gsum[MAXC], bsum[MAXC];
  memset(gsum, 0, C * 8), memset(bsum, 0, C * 8);
  for (size_t i = q0; i < q1; i++) {
    /* S = rstd max|g dy| X with X = max(1, max|xhat|); from y, the operands xhat comes from:
     * X = max(1, max (|y| + |b|) / |g|) */
    double mg = 0.0, mx = 1.0;
    const double mu = rms ? 0.0 : mr[i];
    for (size_t j = 0; j < C; j++) {
      mg = fmax(mg, fabs(geff[j] * dyr[i * C + j]));
      mx = fmax(mx, from_y ? (fabs(yv[i * C + j]) + (has_b ? fabs(b_r[j]) : 0.0)) / fabs(geff[j])
                           : fabs((hr[i * C + j] - mu) * rsr[i]));
      bsum[j] += fabs(dyr[i * C + j]);
    }
    for (size_t j = 0; j < C; j++) gsum[j] += fabs(dyr[i * C + j]) * mx;
    const double S = (from_y ? (double)rstd_v[i] : rsr[i]) * mg * mx;
    for (size_t j = 0; j < C; j++) {
      double ref = dxr[i * C + j];
      if (dh) ref += dhr[i * C + j];
      const double bound = 4e-6 * S + (dt != NK_DTYPE_F32 || dh ? fz_ulp(ref, dt) : 0.0);
      FZ_CHECK(fz_close(got[i * C + j], ref, bound, dt),
               "%s bwd%s%s dx[%zu][%zu] = %.9g, ref %.9g (bound %.3g) dt %d cols %zu",
               rms ? "rmsnorm" : "layernorm", from_y ? " from y" : "", brows ? " rows" : "", i,
               j, got[i * C + j], ref, bound, dt, C);
    }
  }
  /* dgamma/dbeta: rounded to param_dtype (+1 ulp, +1 more when accumulated); the _rows form adds
   * to double accumulators (1 f32 ulp for the float partials) */
  const double acc0 = brows || acc;
  for (size_t j = 0; j < C; j++) {
    if (dg) {
      const double ref = (acc0 ? dg0[j] : 0.0) + dgr[j];
      const double v = brows ? ((double *)dg)[j] : fz_get(dg, j, pdt);
      FZ_CHECK(fz_close(v, ref, 4e-6 * gsum[j] + fz_ulp(ref, adt) * (acc0 ? 2 : 1), adt),
               "dgamma[%zu] = %.9g ref %.9g", j, v, ref);
    }
    if (db) {
      const double ref = (acc0 ? db0[j] : 0.0) + dbr[j];
      const double v = brows ? ((double *)db)[j] : fz_get(db, j, pdt);
      FZ_CHECK(fz_close(v, ref, 4e-6 * bsum[j] + fz_ulp(ref, adt) * (acc0 ? 2 : 1), adt),
               "dbeta[%zu] = %.9g ref %.9g", j, v, ref);
    }
  }
  return 0;
}
