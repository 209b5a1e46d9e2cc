/*
 * tests/fuzz/rowvar.c — libFuzzer harness: the research row norms CRMSNorm and L1 LayerNorm
 * (nk_crmsnorm_fwd/_rows/_bwd/_bwd_rows, nk_l1norm_fwd/_rows/_bwd/_bwd_rows and
 * nk_l1norm_bwd_workspace_size) with the LayerNorm Scaling factor nk_norm_desc.lns_scale (fuzz.h
 * explains the decoder, the guard-page arena and the canary check). One input = one forward
 * (sizes, strides, dtypes, eps, lns_scale, flags, optional outputs, in place, whole or a row
 * range) and, when it is valid, whole and every row finite, one backward from its statistics
 * (dh, in place dx, accumulated parameter gradients, workspace, or the _rows form with double
 * accumulators).
 * Debugging: FZ_DUMP=1 in the environment prints the data of a failing check.
 * Bounds: those of tests/ops/rowvar_common.h (docs/ops/crmsnorm.md, docs/ops/l1norm.md):
 *   y f32 2e-6 M, M = max|ref| of the row (L1 with beta: max(|ref|, |ref - beta s|));
 *     bf16/f16 1 ulp + 2e-6 M (the header's bound; tests/ops adds 2e-6 M only with beta, which
 *     fails for outputs far below M: see docs/security.md);
 *   dx 1e-5 S (+ 1 ulp for bf16/f16; with dh + 2 ulp f32 + 1 ulp), S = rs max|g_y gain|
 *     (1 + max|xhat|) of the row;
 *   dgamma, dbeta 1e-5 sum over rows |g_y| (1 + max|xhat|) + 1 ulp (param dtype).
 * rstd/rscale/mean against the reference with the LayerNorm harness's bounds (2e-6 relative;
 * mean 1 ulp + 1e-6 / rscale).
 * Parameters and dy are drawn tame (|v| ~ 1, no specials); x gets every special value.
 */
#include <float.h>

#include "fuzz.h"
#include "reference.h"

#define MAXR 6
#define MAXC 300

static const float eps_table[] = {1e-5f, 1e-6f, 1e-3f, 0x1p-23f, 1.0f, 1e-30f, 0x1p-7f, 1e-12f};
static const float lns_table[] = {0.0f, 0.0f, 0.57735027f, 1.0f, 2.0f, 0.125f};

enum { BAD_NONE, BAD_STRIDE, BAD_NEG_STRIDE, BAD_EPS, BAD_FLAGS, BAD_OVERLAP, BAD_OVERFLOW,
       BAD_NULL, BAD_DTYPE, BAD_RANGE, BAD_LNS, BAD_COUNT };

static double xr[MAXR * MAXC], g_r[MAXC], b_r[MAXC], yr[MAXR * MAXC], got[MAXR * MAXC];
static double dyr[MAXR * MAXC], dhr[MAXR * MAXC], dxr[MAXR * MAXC], dgr[MAXC], dbr[MAXC];
static double mr[MAXR], rsr[MAXR];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in;
  fz_start(&in, "rowvar", data, size);

  const int l1 = fz_u8(&in) & 1;
  unsigned bad = fz_pick(&in, 8) == 0 ? 1 + fz_pick(&in, BAD_COUNT - 1) : BAD_NONE;
  nk_context *ctx = fz_context(&in);
  const size_t R = fz_pick(&in, 16) == 0 ? 0 : 1 + fz_pick(&in, MAXR);
  const unsigned csel = fz_pick(&in, 8);
  const size_t C = csel == 0 ? 1 + fz_pick(&in, 3) : csel < 6 ? 1 + fz_pick(&in, 80)
                                                               : 1 + fz_pick(&in, 250) % MAXC;
  const nk_dtype dt = fz_dtype(&in);
  const nk_dtype pdt = fz_u8(&in) & 1 ? dt : NK_DTYPE_F32;
  const unsigned opt = fz_u8(&in);
  const int has_g = l1 && (opt & 1), has_b = l1 && (opt & 2), offset = has_g && (opt & 4),
            inplace = opt & 8, use_rows = (opt & 48) == 48, has_s1 = l1 && (opt & 64),
            has_s2 = !(opt & 128) || !(opt & 64);
  const float eps = eps_table[fz_pick(&in, 8)];
  const float lns = lns_table[fz_pick(&in, 6)];
  const double s = lns == 0.0f ? 1.0 : (double)lns;

  nk_norm_desc d = nk_norm_desc_dense(R, C, dt, eps);
  d.param_dtype = pdt;
  d.flags = offset ? NK_NORM_GAMMA_OFFSET : 0;
  d.lns_scale = lns;
  d.x_stride = (ptrdiff_t)(C + fz_pick(&in, 5));
  d.y_stride = inplace ? d.x_stride : (ptrdiff_t)(C + fz_pick(&in, 5));

  const fz_dist dx_dist = fz_dist_pick(&in, 24);
  const fz_dist tame = {0.0, 1.0, 0};
  const fz_geom gx = fz_rows(R, C, d.x_stride, dt), gy = fz_rows(R, C, d.y_stride, dt);
  const fz_geom gp = fz_vec(C, nk_dtype_size(pdt)), gs = fz_vec(R, 4);
  void *x = fz_place(&in, &gx, NULL);
  fz_fill(&in, x, &gx, dt, &dx_dist, xr);
  void *gamma = NULL, *beta = NULL;
  if (has_g) {
    gamma = fz_place(&in, &gp, NULL);
    fz_fill(&in, gamma, &gp, pdt, &tame, g_r);
  }
  if (has_b) {
    beta = fz_place(&in, &gp, NULL);
    fz_fill(&in, beta, &gp, pdt, &tame, b_r);
  }
  void *y = inplace ? x : fz_place(&in, &gy, NULL);
  float *mean = has_s1 ? fz_place(&in, &gs, NULL) : NULL;
  float *rs = has_s2 ? fz_place(&in, &gs, NULL) : NULL;

  nk_status want = NK_OK;
  /* zero sizes (and an empty row range) are a no-op, OK (docs/security.md) */
  if (R == 0 && (bad != BAD_OVERFLOW || use_rows)) bad = BAD_NONE;
  size_t r0 = 0, r1 = R;
  if (use_rows && R > 0) r0 = fz_pick(&in, (unsigned)R), r1 = r0 + 1 + fz_pick(&in, (unsigned)(R - r0));
  switch (bad) {
  case BAD_STRIDE: d.x_stride = (ptrdiff_t)C - 1 - fz_pick(&in, 3); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NEG_STRIDE: d.y_stride = -(ptrdiff_t)(1 + fz_pick(&in, 100)); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_EPS: { const float e[] = {0.0f, -1e-5f, NAN, INFINITY, -0.0f}; d.eps = e[fz_pick(&in, 5)]; want = NK_STATUS_INVALID_ARGUMENT; break; }
  case BAD_LNS: { const float e[] = {-1.0f, NAN, INFINITY, -1e-30f}; d.lns_scale = e[fz_pick(&in, 4)]; want = NK_STATUS_INVALID_ARGUMENT; break; }
  case BAD_FLAGS: {
    const unsigned k = fz_pick(&in, 3);
    if (k == 0) { d.flags |= NK_NORM_BWD_FROM_Y; want = NK_STATUS_UNSUPPORTED; }
    else if (k == 1 || l1) { d.flags |= 1u << (3 + fz_pick(&in, 29)); want = NK_STATUS_INVALID_ARGUMENT; }
    else { d.flags |= fz_u8(&in) & 1 ? NK_NORM_GAMMA_OFFSET : NK_NORM_ACCUMULATE; want = NK_STATUS_INVALID_ARGUMENT; }
    break; }
  case BAD_OVERLAP: /* y shifted over x, or a statistic written into y */
    if (C > 1 && !inplace) { y = (char *)x + nk_dtype_size(dt); want = NK_STATUS_INVALID_ARGUMENT; }
    else { rs = (float *)((uintptr_t)y & ~(uintptr_t)3); want = NK_STATUS_INVALID_ARGUMENT; }
    break;
  case BAD_OVERFLOW: d.rows = SIZE_MAX / (1 + fz_pick(&in, 8)); d.x_stride = d.y_stride = PTRDIFF_MAX / (1 + fz_pick(&in, 4)); d.cols = 1; want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NULL: if (fz_u8(&in) & 1) x = NULL; else y = NULL; want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_DTYPE: d.dtype = (nk_dtype)(3 + fz_pick(&in, 100)); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_RANGE: if (use_rows) { r0 = R + 1; r1 = R + 2 + fz_pick(&in, 3); want = NK_STATUS_INVALID_ARGUMENT; } break;
  }

  if (want == NK_OK) {
    fz_writable(y, &gy);
    const fz_geom gsr = {1, 1, r1 - r0, 0, 0, 4};
    fz_writable(mean ? mean + r0 : NULL, &gsr), fz_writable(rs ? rs + r0 : NULL, &gsr);
  }
  fz_snapshot();
  nk_status st;
  if (use_rows)
    st = l1 ? nk_l1norm_fwd_rows(ctx, &d, r0, r1, x, gamma, beta, y, mean, rs)
            : nk_crmsnorm_fwd_rows(ctx, &d, r0, r1, x, y, rs);
  else
    st = l1 ? nk_l1norm_fwd(ctx, &d, x, gamma, beta, y, mean, rs) : nk_crmsnorm_fwd(ctx, &d, x, y, rs);
  const char *name = l1 ? "l1norm" : "crmsnorm";
  if (want != NK_OK) {
    FZ_CHECK(st == want, "%s fwd: bad %u: status %d, want %d (%s)", name, bad, st, want,
             ctx ? nk_context_message(ctx) : "");
    FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "fwd: no message for a failure");
    fz_check_arena(0, "fwd");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "%s fwd: status %d (%s)", name, st, ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, "fwd");
  fz_valid++;
  if (R == 0) return 0;

  /* ---- forward against the reference ---- */
  if (l1)
    nk_ref_l1norm_fwd(R, C, xr, has_g ? g_r : NULL, has_b ? b_r : NULL, offset, eps, lns, yr, mr, rsr);
  else
    nk_ref_crmsnorm_fwd(R, C, xr, eps, lns, yr, rsr);
  fz_read(y, &gy, dt, got);
  int all_finite = 1;
  for (size_t i = r0; i < r1; i++) {
    if (!fz_finite_all(xr + i * C, C)) {
      /* header: a row with NaN/inf gives NaN in that row's outputs and statistics */
      all_finite = 0;
      for (size_t j = 0; j < C; j++)
        FZ_CHECK(isnan(got[i * C + j]), "%s non-finite row %zu: y[%zu] = %g", name, i, j, got[i * C + j]);
      FZ_CHECK((!rs || isnan(rs[i])) && (!mean || isnan(mean[i])), "non-finite row %zu: statistics", i);
      continue;
    }
    double m = 0.0, xmax = 0.0, gmax = 0.0;
    for (size_t j = 0; j < C; j++) {
      xmax = fmax(xmax, fabs(xr[i * C + j]));
      gmax = fmax(gmax, has_g ? fabs(offset ? 1.0 + g_r[j] : g_r[j]) : 1.0);
      m = fmax(m, fabs(yr[i * C + j]));
      if (has_b) m = fmax(m, fabs(yr[i * C + j] - b_r[j] * s));
    }
    if (getenv("FZ_DUMP"))
      for (size_t j = 0; j < C; j++)
        fprintf(stderr, "row %zu x[%zu] = %a (%.9g) y %.9g ref %.9g\n", i, j, xr[i * C + j], xr[i * C + j], got[i * C + j], yr[i * C + j]);
    if (getenv("FZ_DUMP")) fprintf(stderr, "eps %g lns %g g %d b %d rs %.9g ref %.9g mean %.9g ref %.9g\n", (double)eps, (double)lns, has_g, has_b, rs ? (double)rs[i] : -1.0, rsr[i], mean ? (double)mean[i] : -1.0, mr[i]);
    for (size_t j = 0; j < C; j++) {
      const double ref = yr[i * C + j];
      /* header: f32 2e-6 m (+ 2^-148 for outputs in the f32 subnormals); bf16/f16 1 ulp + 2e-6 m
       * (the f32 part for outputs far below m) */
      double bound = dt == NK_DTYPE_F32 ? 2e-6 * m + 0x1p-148 : fz_ulp(ref, dt) + 2e-6 * m;
      /* (L1 rows of subnormal data were centred up to 2^-150 off, the mean's low part on the
       * subnormal grid, times rscale: they take the double routine now, nk__l1_tiny_mean;
       * tests/fuzz/known/rowvar-l1norm-subnormal-row) */
      FZ_CHECK(fz_close(got[i * C + j], ref, bound, dt),
               "%s fwd y[%zu][%zu] = %.9g, ref %.9g (bound %.3g) dt %d cols %zu lns %g", name, i, j,
               got[i * C + j], ref, bound, dt, C, (double)lns);
    }
    if (rs)
      FZ_CHECK(fz_close(rs[i], rsr[i], 2e-6 * rsr[i], NK_DTYPE_F32), "%s rs[%zu] %.9g ref %.9g",
               name, i, (double)rs[i], rsr[i]);
    if (mean)
      FZ_CHECK(fz_close(mean[i], mr[i], fz_ulp(mr[i], NK_DTYPE_F32) + 1e-6 / rsr[i], NK_DTYPE_F32),
               "mean[%zu] %.9g ref %.9g", i, (double)mean[i], mr[i]);
  }
  if (use_rows || !all_finite || !rs || (l1 && !mean) || inplace) return 0;

  /* ---- backward from the forward's statistics ---- */
  const unsigned bopt = fz_u8(&in);
  const int has_dh = bopt & 1, has_dg = l1 && (bopt & 2), has_db = l1 && (bopt & 4),
            acc = l1 && (bopt & 8), brows = (bopt & 48) == 48;
  const unsigned dxa = fz_pick(&in, 4); /* 1: dx == dy, 2: dx == x, 3: dx == dh (when given) */
  nk_norm_desc b = d;
  b.flags |= acc ? NK_NORM_ACCUMULATE : 0;
  b.dy_stride = (ptrdiff_t)(C + fz_pick(&in, 5));
  b.dh_stride = (ptrdiff_t)(C + fz_pick(&in, 5));
  b.dx_stride = (ptrdiff_t)(C + fz_pick(&in, 5));
  if (dxa == 1) b.dx_stride = b.dy_stride;
  if (dxa == 2) b.dx_stride = b.x_stride;
  if (dxa == 3 && has_dh) b.dx_stride = b.dh_stride;
  const fz_geom gdy = fz_rows(R, C, b.dy_stride, dt), gdh = fz_rows(R, C, b.dh_stride, dt);
  const fz_geom gdx = fz_rows(R, C, b.dx_stride, dt);
  const fz_geom gacc = fz_vec(C, 8);
  /* the statistics and x stay where they are; y's and the other slots are reused */
  void *dy = fz_place(&in, &gdy, NULL);
  fz_fill(&in, dy, &gdy, dt, &tame, dyr);
  void *dh = NULL;
  if (has_dh) {
    dh = fz_place(&in, &gdh, NULL);
    fz_fill(&in, dh, &gdh, dt, &tame, dhr);
  }
  void *dx = dxa == 1 ? dy : dxa == 2 ? x : (dxa == 3 && has_dh) ? dh : fz_place(&in, &gdx, NULL);
  void *dg = NULL, *db = NULL;
  double *dga = NULL, *dba = NULL;
  static const double g0v = 0.25, b0v = -0.5;
  if (!brows) {
    if (has_dg) dg = fz_place(&in, &gp, NULL);
    if (has_db) db = fz_place(&in, &gp, NULL);
    for (size_t j = 0; j < C; j++) {
      if (dg) fz_set(dg, j, g0v, pdt);
      if (db) fz_set(db, j, b0v, pdt);
    }
  } else {
    if (has_dg) dga = fz_place(&in, &gacc, NULL);
    if (has_db) dba = fz_place(&in, &gacc, NULL);
    for (size_t j = 0; j < C; j++) {
      if (dga) dga[j] = g0v;
      if (dba) dba[j] = b0v;
    }
  }
  size_t wsb = 0;
  if (l1) FZ_CHECK(nk_l1norm_bwd_workspace_size(&b, &wsb) == NK_OK, "workspace size");
  const fz_geom gw = fz_vec(wsb, 1);
  void *ws = wsb && !brows ? fz_place(&in, &gw, NULL) : NULL;
  size_t wsz = ws ? wsb : 0;
  size_t q0 = 0, q1 = R;
  if (brows) q0 = fz_pick(&in, (unsigned)R), q1 = q0 + 1 + fz_pick(&in, (unsigned)(R - q0));
  want = NK_OK;
  const unsigned bbad = fz_pick(&in, 8) == 0 ? 1 + fz_pick(&in, 3) : 0;
  const float *rsp = rs;
  if (bbad == 1) { rsp = NULL; want = NK_STATUS_INVALID_ARGUMENT; }
  else if (bbad == 2 && l1 && !brows && (dg || db) && wsb) { wsz = wsb - 1; want = NK_STATUS_MISUSE; }
  else if (bbad == 3 && C > 1 && dxa == 0) { dx = (char *)dy + nk_dtype_size(dt); want = NK_STATUS_INVALID_ARGUMENT; }
  if (want == NK_OK) {
    const fz_geom gdxr = {1, q1 - q0, C, 0, b.dx_stride, nk_dtype_size(dt)};
    fz_writable((char *)dx + q0 * (size_t)b.dx_stride * nk_dtype_size(dt), &gdxr);
    fz_writable(dg, &gp), fz_writable(db, &gp), fz_writable(dga, &gacc), fz_writable(dba, &gacc);
    fz_writable(ws, &gw);
  }
  fz_snapshot();
  if (brows)
    st = l1 ? nk_l1norm_bwd_rows(ctx, &b, q0, q1, x, gamma, mean, rsp, dy, dh, dx, dga, dba)
            : nk_crmsnorm_bwd_rows(ctx, &b, q0, q1, x, rsp, dy, dh, dx);
  else
    st = l1 ? nk_l1norm_bwd(ctx, &b, x, gamma, mean, rsp, dy, dh, dx, dg, db, ws, wsz)
            : nk_crmsnorm_bwd(ctx, &b, x, rsp, dy, dh, dx);
  if (want != NK_OK) {
    FZ_CHECK(st == want, "%s bwd: bad %u: status %d, want %d (%s)", name, bbad, st, want,
             ctx ? nk_context_message(ctx) : "");
    FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "bwd: no message for a failure");
    fz_check_arena(0, "bwd");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "%s bwd: status %d (%s)", name, st, ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, "bwd");

  if (l1)
    nk_ref_l1norm_bwd(R, C, xr, has_g ? g_r : NULL, offset, eps, lns, dyr, dxr, dgr, dbr);
  else
    nk_ref_crmsnorm_bwd(R, C, xr, eps, lns, dyr, dxr);
  fz_read(dx, &gdx, dt, got);
  static double gsum[MAXC], bsum[MAXC];
  for (size_t j = 0; j < C; j++) gsum[j] = bsum[j] = 0.0;
  static double dgq[MAXC], dbq[MAXC]; /* the reference parameter gradients of rows q0..q1 */
  for (size_t j = 0; j < C; j++) dgq[j] = dbq[j] = 0.0;
  for (size_t i = q0; i < q1; i++) {
    double maxxh = 0.0, maxgh = 0.0;
    for (size_t j = 0; j < C; j++) {
      const double mu = l1 ? mr[i] : 0.0;
      maxxh = fmax(maxxh, fabs((xr[i * C + j] - mu) * rsr[i]));
      const double gn = has_g ? (offset ? 1.0 + g_r[j] : g_r[j]) : 1.0;
      maxgh = fmax(maxgh, fabs(dyr[i * C + j] * s * gn));
    }
    const double S = rsr[i] * maxgh * (1.0 + maxxh);
    /* header (L1): sign(h - mu) takes the library's mean, which carries the f32 sums' error (a
     * few ulps of max|h|); elements that close to the mean may take either sign, each flip
     * moving dx by up to rscale C1 |mean(gh xhat)| (2 [own] + 2 flips / n) (a row holding
     * +-1e30 and values ~1e3: mean 6e21 for 138.8, ten signs flipped, dx 14x off:
     * tests/fuzz/known/rowvar-l1norm-bwd-sign-near-mean) */
    double zone = 0.0, kf = 0.0;
    size_t nz = 0;
    if (l1) {
      double mh = 0.0, sgx = 0.0;
      for (size_t j = 0; j < C; j++) {
        const double gn = has_g ? (offset ? 1.0 + g_r[j] : g_r[j]) : 1.0;
        mh = fmax(mh, fabs(xr[i * C + j]));
        sgx += dyr[i * C + j] * s * gn * (xr[i * C + j] - mr[i]) * rsr[i];
      }
      zone = 0x1p-20 * mh;
      for (size_t j = 0; j < C; j++) nz += fabs(xr[i * C + j] - mr[i]) <= zone;
      kf = 1.01 * rsr[i] * NK_REF_L1_C1 * fabs(sgx) / (double)C;
    }
    for (size_t j = 0; j < C; j++) {
      double ref = dxr[i * C + j];
      if (has_dh) ref += dhr[i * C + j];
      double bound = 1e-5 * S + (dt != NK_DTYPE_F32 ? fz_ulp(ref, dt) : 0.0);
      if (nz) bound += kf * (2.0 * (fabs(xr[i * C + j] - mr[i]) <= zone) + 2.0 * (double)nz / (double)C);
      if (has_dh) bound += 2.0 * fz_ulp(ref, NK_DTYPE_F32) + (dt != NK_DTYPE_F32 ? fz_ulp(ref, dt) : 0.0);
      /* a bound beyond the dtype's largest finite value admits +-inf (f16: the terms of a
       * 0 dx were 1e24 each: tests/fuzz/known/rowvar-l1norm-f16-dx-bound-beyond-range) */
      const double dmax = dt == NK_DTYPE_F16 ? 65504.0 : dt == NK_DTYPE_BF16 ? 0x1.fep127 : FLT_MAX;
      FZ_CHECK(fz_close(got[i * C + j], ref, bound, dt) ||
                   (isinf(got[i * C + j]) && fabs(ref) + bound > dmax),
               "%s bwd dx[%zu][%zu] = %.9g, ref %.9g (bound %.3g) dt %d cols %zu lns %g", name, i, j,
               got[i * C + j], ref, bound, dt, C, (double)lns);
      gsum[j] += fabs(dyr[i * C + j] * s) * (1.0 + maxxh);
      bsum[j] += fabs(dyr[i * C + j] * s);
      if (l1) {
        const double xh = (xr[i * C + j] - mr[i]) * rsr[i];
        dgq[j] += dyr[i * C + j] * s * xh, dbq[j] += dyr[i * C + j] * s;
      }
    }
  }
  if (!l1) return 0;
  for (size_t j = 0; j < C; j++) {
    /* the reference's dgamma/dbeta over every row; the _rows form: rows q0..q1 only (xhat from
     * the reference statistics, the same formula as nk_ref_l1norm_bwd) */
    const double rg = (brows ? dgq[j] : dgr[j]) + (acc || brows ? g0v : 0.0);
    const double rb = (brows ? dbq[j] : dbr[j]) + (acc || brows ? b0v : 0.0);
    if (brows) {
      if (dga) FZ_CHECK(fabs(dga[j] - rg) <= 1e-5 * gsum[j] + 1e-300, "dgamma_acc[%zu] %.17g ref %.17g", j, dga[j], rg);
      if (dba) FZ_CHECK(fabs(dba[j] - rb) <= 1e-5 * bsum[j] + 1e-300, "dbeta_acc[%zu] %.17g ref %.17g", j, dba[j], rb);
      continue;
    }
    if (dg)
      FZ_CHECK(fz_close(fz_get(dg, j, pdt), rg, 1e-5 * gsum[j] + fz_ulp(rg, pdt), pdt),
               "dgamma[%zu] %.9g ref %.9g", j, fz_get(dg, j, pdt), rg);
    if (db)
      FZ_CHECK(fz_close(fz_get(db, j, pdt), rb, 1e-5 * bsum[j] + fz_ulp(rb, pdt), pdt),
               "dbeta[%zu] %.9g ref %.9g", j, fz_get(db, j, pdt), rb);
  }
  return 0;
}
