/*
 * tests/fuzz/chnorm.c — libFuzzer harness: the channel norms (nk_batchnorm_fwd/bwd in training
 * and inference with ReLU and add+ReLU, running statistics with momentum or cumulative,
 * nk_groupnorm_fwd/bwd, nk_instancenorm_fwd/bwd in its three modes) on NCHW / NHWC tensors with
 * padded strides, f32/bf16/f16 data, f32 or same-dtype parameters, in place or not, from every
 * ISA and with or without threads (fuzz.h: decoder, guard-page arena, canaries). One BatchNorm
 * training forward in 4 runs as nk_batchnorm_moments + nk_batchnorm_fwd_moments, one training
 * backward in 4 as nk_batchnorm_bwd_reduce + nk_batchnorm_bwd_apply (the synchronized-BatchNorm
 * halves, exactly the fused calls on one process).
 *
 * Bounds: those of tests/ops/batchnorm.c and groupnorm.c (normkit.h "Channel norms"), per set
 * (a channel for BatchNorm, a (sample, group) for GroupNorm/InstanceNorm):
 *   y   f32 2e-6 P;  bf16/f16 1 ulp (+ 2e-6 P with beta or z), P = max |pre-activation ref|
 *       (+ |z|) over the set;
 *   dx  2e-6 max(D, T) (+ 4 f32 subnormal ulps for f32, + 1 ulp for bf16/f16), D = max|dx ref|,
 *       T = max|g dy'| rstd max(1, max|xhat|);
 *   dgamma 4e-6 sum|dy'| max|xhat| + 1 ulp, dbeta 4e-6 sum|dy'| + 1 ulp (x2 when accumulated);
 *   saved mean 1 ulp + 1e-6 sd, rstd 2e-6 relative; running mean 1 ulp + m(1e-6 sd + 1 ulp of
 *   the mean), running var 1 ulp + 2e-6 m var_unbiased.
 * The backward runs when the forward succeeded on finite data, from the forward's statistics.
 */
#include <float.h>

#include "fuzz_ch.h"

#define MAXN 3
#define MAXC 12
#define MAXS 40
#define MAXE (MAXN * MAXC * MAXS)

enum { OP_BN, OP_GN, OP_IN };
enum { BAD_NONE, BAD_STRIDE, BAD_NEG_STRIDE, BAD_EPS, BAD_MOMENTUM, BAD_FLAGS, BAD_LAYOUT,
       BAD_DTYPE, BAD_NULL, BAD_OVERLAP, BAD_OVERFLOW, BAD_GROUPS, BAD_COUNT };

/* The set of element (n, c): a channel (groups 0) or a (sample, group). */
static size_t set_of(size_t C, size_t groups, size_t n, size_t c) {
  return groups == 0 ? c : n * groups + c / (C / groups);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in;
  fz_start(&in, "chnorm", data, size);

  unsigned bad = fz_pick(&in, 8) == 0 ? 1 + fz_pick(&in, BAD_COUNT - 1) : BAD_NONE;
  nk_context *ctx = fz_context(&in);
  const int op = (int)fz_pick(&in, 3);
  const int nsc = fz_u8(&in) & 1;
  const nk_layout lay = nsc ? NK_LAYOUT_NSC : NK_LAYOUT_NCS;
  const size_t N = fz_pick(&in, 16) == 0 ? 0 : 1 + fz_pick(&in, MAXN);
  const size_t C = 1 + fz_pick(&in, MAXC);
  const unsigned ssel = fz_pick(&in, 4);
  const size_t S = ssel == 0 ? 1 : ssel == 1 ? 1 + fz_pick(&in, 4) : 1 + fz_pick(&in, MAXS);
  const nk_dtype dt = fz_dtype(&in);
  const nk_dtype pdt = fz_u8(&in) & 1 ? dt : NK_DTYPE_F32;
  const unsigned opt = fz_u8(&in), opt2 = fz_u8(&in);
  int training = opt & 1;
  const int has_g = opt & 2, has_b = opt & 4, inplace = opt & 8, has_stats = opt & 16,
            has_run = (opt & 32) || (op == OP_BN && !training);
  int act = op == OP_BN ? (int)(opt2 % 3) : NK_REF_ACT_NONE; /* none, relu, add+relu */
  const int cumulative = op == OP_BN && training && has_run && (opt2 & 4);
  size_t groups = 0;
  if (op == OP_GN) { /* a divisor of C */
    size_t div[MAXC], nd = 0;
    for (size_t g = 1; g <= C; g++)
      if (C % g == 0) div[nd++] = g;
    groups = div[fz_pick(&in, (unsigned)nd)];
  } else if (op == OP_IN) {
    groups = C;
  }
  static const float epss[] = {1e-5f, 1e-5f, 1e-3f, 1e-12f, 0.5f, 1e-30f};
  static const float moms[] = {0.1f, 0.1f, 0.0f, 1.0f, 0.37f, 0.01f};
  nk_chnorm_desc d = nk_chnorm_desc_dense(N, C, S, lay, dt, epss[fz_pick(&in, 6)]);
  d.param_dtype = pdt;
  d.groups = op == OP_GN ? groups : 1;
  d.momentum = moms[fz_pick(&in, 6)];
  if (op == OP_GN) training = 0; /* GroupNorm ignores the flag: leave it off */
  d.flags = (training ? NK_CHNORM_TRAINING : 0) | (cumulative ? NK_CHNORM_CUMULATIVE : 0) |
            (act == NK_REF_ACT_RELU ? NK_CHNORM_RELU : 0) |
            (act == NK_REF_ACT_ADD_RELU ? NK_CHNORM_ADD_RELU : 0);
  const nk_ref_chshape tr = {N, C, S, nsc, 0, 0};
  const ten tx = ten_make(&in, N, C, S, nsc, dt);
  const ten ty = inplace ? tx : ten_make(&in, N, C, S, nsc, dt);
  const ten tz = ten_make(&in, N, C, S, nsc, dt);
  d.x_n_stride = tx.t.n_stride, d.x_row_stride = tx.t.row_stride;
  d.y_n_stride = ty.t.n_stride, d.y_row_stride = ty.t.row_stride;
  d.z_n_stride = tz.t.n_stride, d.z_row_stride = tz.t.row_stride;
  const size_t nsets = op == OP_BN ? C : N * groups;
  const fz_geom gp = fz_vec(C, nk_dtype_size(pdt)), gc = fz_vec(C, 4), gset = fz_vec(nsets, 4);

  static double xr[MAXE], zr[MAXE], yr[MAXE], got[MAXE], pre[MAXE];
  static double g_r[MAXC], b_r[MAXC], rm_r[MAXC], rv_r[MAXC];
  const fz_dist xd = fz_dist_pick(&in, 6), tame = {0.0, 1.0, 0};
  void *x = fz_place(&in, &tx.g, NULL);
  ten_fill(&in, x, &tx, &tr, dt, &xd, xr);
  void *z = NULL;
  if (act == NK_REF_ACT_ADD_RELU) {
    z = fz_place(&in, &tz.g, NULL);
    ten_fill(&in, z, &tz, &tr, dt, &tame, zr);
  }
  void *gamma = NULL, *beta = NULL;
  if (has_g) {
    gamma = fz_place(&in, &gp, NULL);
    for (size_t c = 0; c < C; c++) fz_set(gamma, c, fz_value(&in, &tame), pdt), g_r[c] = fz_get(gamma, c, pdt);
  }
  if (has_b) {
    beta = fz_place(&in, &gp, NULL);
    for (size_t c = 0; c < C; c++) fz_set(beta, c, fz_value(&in, &tame), pdt), b_r[c] = fz_get(beta, c, pdt);
  }
  float *rm = NULL, *rv = NULL;
  int64_t nbt_store = (int64_t)fz_pick(&in, 5), *nbt = NULL;
  const int64_t nbt_orig = nbt_store;
  if (has_run && op != OP_GN) {
    rm = fz_place(&in, &gc, NULL);
    rv = fz_place(&in, &gc, NULL);
    const fz_dist vd = {1.0, 0.5, 0};
    for (size_t c = 0; c < C; c++) {
      rm[c] = (float)fz_value(&in, &tame), rv[c] = (float)fabs(fz_value(&in, &vd));
      rm_r[c] = rm[c], rv_r[c] = rv[c];
    }
    if (op == OP_BN && (cumulative || (opt2 & 8))) nbt = &nbt_store;
  }
  void *y = inplace ? x : fz_place(&in, &ty.g, NULL);
  float *smean = NULL, *srstd = NULL;
  if (has_stats) {
    smean = fz_place(&in, op == OP_BN ? &gc : &gset, NULL);
    srstd = fz_place(&in, op == OP_BN ? &gc : &gset, NULL);
  }
  size_t wsb = 0;
  void *ws = NULL;
  fz_geom gw = fz_vec(0, 1);
  if (op == OP_BN) {
    FZ_CHECK(nk_batchnorm_fwd_workspace_size(&d, &wsb) == NK_OK, "fwd workspace size");
    gw = fz_vec(wsb, 1);
    if (wsb) ws = fz_place(&in, &gw, NULL);
  }
  const int short_ws = wsb && fz_pick(&in, 16) == 0;

  /* ---- the broken variants and their statuses ---- */
  const int empty = N == 0;
  nk_status want = NK_OK;
  if (op == OP_BN && training && !empty && N * S < 2) want = NK_STATUS_INVALID_ARGUMENT;
  if (op == OP_IN && training && rm && !empty && S < 2) want = NK_STATUS_INVALID_ARGUMENT;
  switch (bad) {
    case BAD_STRIDE:
      if (!empty) { d.y_row_stride = (ptrdiff_t)(nsc ? C : S) - 1; want = NK_STATUS_INVALID_ARGUMENT; }
      break;
    case BAD_NEG_STRIDE:
      if (!empty) { d.x_n_stride = -(ptrdiff_t)(1 + fz_pick(&in, 50)); want = NK_STATUS_INVALID_ARGUMENT; }
      break;
    case BAD_EPS: { const float e[] = {0.0f, -1e-5f, NAN, INFINITY}; d.eps = e[fz_pick(&in, 4)]; want = NK_STATUS_INVALID_ARGUMENT; break; }
    case BAD_MOMENTUM: { const float m[] = {-0.1f, 1.5f, NAN}; d.momentum = m[fz_pick(&in, 3)]; want = NK_STATUS_INVALID_ARGUMENT; break; }
    case BAD_FLAGS: d.flags |= 1u << (5 + fz_pick(&in, 27)); want = NK_STATUS_INVALID_ARGUMENT; break;
    case BAD_LAYOUT: d.layout = (nk_layout)(2 + fz_pick(&in, 9)); want = NK_STATUS_INVALID_ARGUMENT; break;
    case BAD_DTYPE: d.param_dtype = dt == NK_DTYPE_F32 ? NK_DTYPE_BF16 : (dt == NK_DTYPE_BF16 ? NK_DTYPE_F16 : NK_DTYPE_BF16);
      want = NK_STATUS_UNSUPPORTED; /* neither F32 nor the activation dtype */
      break;
    case BAD_NULL: if (!empty) { x = NULL; want = NK_STATUS_INVALID_ARGUMENT; } break;
    case BAD_OVERLAP:
      if (!empty && !inplace && N * C * S > 1) { y = (char *)x + nk_dtype_size(dt); want = NK_STATUS_INVALID_ARGUMENT; }
      else if (!empty && smean && nsets > 0) { srstd = smean; want = NK_STATUS_INVALID_ARGUMENT; }
      break;
    case BAD_OVERFLOW:
      d.batch = SIZE_MAX / 2 + fz_pick(&in, 3), d.spatial = 3;
      want = NK_STATUS_INVALID_ARGUMENT; break;
    case BAD_GROUPS:
      if (op == OP_GN && C > 1) { d.groups = fz_u8(&in) & 1 ? 0 : C + 1; want = NK_STATUS_INVALID_ARGUMENT; }
      break;
  }
  if (want == NK_OK && short_ws && !empty && training) want = NK_STATUS_MISUSE;
  if (want == NK_OK && !empty) {
    fz_writable(y, &ty.g);
    fz_writable(ws, &gw);
    fz_writable(smean, op == OP_BN ? &gc : &gset), fz_writable(srstd, op == OP_BN ? &gc : &gset);
  }
  if (want == NK_OK && (!empty || op == OP_BN)) {
    if (!empty && (training || op == OP_BN)) fz_writable(rm, &gc), fz_writable(rv, &gc);
  }
  /* 1 valid BatchNorm training forward in 4 runs as its two halves (synchronized BatchNorm):
   * nk_batchnorm_moments then nk_batchnorm_fwd_moments, bit-identical to nk_batchnorm_fwd
   * (normkit.h), so the same checks follow */
  const int split_fwd = op == OP_BN && training && !empty && !short_ws && want == NK_OK &&
                        (fz_u8(&in) & 3) == 0;
  const fz_geom gmom = fz_vec(C, sizeof(nk_moments));
  nk_moments *mom = split_fwd ? fz_place(&in, &gmom, NULL) : NULL;
  fz_writable(mom, &gmom);
  fz_snapshot();
  nk_status st;
  if (split_fwd) {
    st = nk_batchnorm_moments(ctx, &d, x, mom, ws, wsb);
    if (st == NK_OK)
      st = nk_batchnorm_fwd_moments(ctx, &d, mom, x, z, gamma, beta, rm, rv, nbt, y, smean,
                                    srstd);
  } else if (op == OP_BN)
    st = nk_batchnorm_fwd(ctx, &d, x, z, gamma, beta, rm, rv, nbt, y, smean, srstd, ws,
                          wsb - (size_t)short_ws);
  else if (op == OP_GN)
    st = nk_groupnorm_fwd(ctx, &d, x, gamma, beta, y, smean, srstd);
  else
    st = nk_instancenorm_fwd(ctx, &d, x, gamma, beta, rm, rv, y, smean, srstd);
  if (want != NK_OK) {
    /* several rules may be broken at once (e.g. a bad stride and one value per channel): the
     * status must be a failure of the expected kind and nothing may be written */
    FZ_CHECK(st == want || (want == NK_STATUS_INVALID_ARGUMENT && st == NK_STATUS_UNSUPPORTED) ||
                 (want == NK_STATUS_MISUSE && st == NK_STATUS_INVALID_ARGUMENT),
             "fwd op %d bad %u: status %d, want %d (%s)", op, bad, st, want,
             nk_context_message(ctx));
    FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "fwd: no message for a failure");
    fz_check_arena(0, "fwd");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "fwd op %d: status %d (%s)", op, st, nk_context_message(ctx));
  fz_check_arena(1, "fwd");
  fz_valid++;
  if (empty) return 0;

  /* ---- the forward against the reference ---- */
  const size_t ne = N * C * S;
  static double mr[MAXN * MAXC], rr[MAXN * MAXC], rm0[MAXC], rv0[MAXC];
  memcpy(rm0, rm_r, sizeof rm0), memcpy(rv0, rv_r, sizeof rv0);
  int64_t nbt_ref = nbt_orig;
  const double *G = has_g ? g_r : NULL, *B = has_b ? b_r : NULL;
  if (op == OP_BN) {
    nk_ref_batchnorm_fwd(&tr, xr, z ? zr : NULL, G, B, d.eps, training, act, d.momentum,
                         cumulative, rm ? rm_r : NULL, rm ? rv_r : NULL, nbt ? &nbt_ref : NULL,
                         yr, mr, rr);
    /* the pre-activation reference: the same without the activation (inference: below) */
    if (training)
      nk_ref_batchnorm_fwd(&tr, xr, NULL, G, B, d.eps, 1, NK_REF_ACT_NONE, 0.0, 0, NULL, NULL,
                           NULL, pre, NULL, NULL);
  } else if (op == OP_GN) {
    nk_ref_groupnorm_fwd(&tr, groups, xr, G, B, d.eps, yr, mr, rr);
    memcpy(pre, yr, ne * sizeof(double));
  } else {
    nk_ref_instancenorm_fwd(&tr, xr, G, B, d.eps, training, d.momentum, rm ? rm_r : NULL,
                            rm ? rv_r : NULL, yr, mr, rr);
    memcpy(pre, yr, ne * sizeof(double));
  }
  if (op == OP_BN && !training) {
    /* inference: rerun the pre-activation reference with the running statistics */
    nk_ref_batchnorm_fwd(&tr, xr, NULL, G, B, d.eps, 0, NK_REF_ACT_NONE, 0.0, 0, rm0, rv0, NULL,
                         pre, NULL, NULL);
  }
  static double P[MAXN * MAXC];
  const int running_fwd = (op == OP_BN && !training) || (op == OP_IN && rm && !training);
  const size_t gsel = op == OP_BN ? 0 : groups;
  for (size_t i = 0; i < nsets; i++) P[i] = 0.0;
  for (size_t n = 0; n < N; n++)
    for (size_t c = 0; c < C; c++)
      for (size_t s = 0; s < S; s++) {
        const size_t k = nk_ref_chidx(&tr, n, c, s), i = set_of(C, gsel, n, c);
        /* with beta, the scale of the normalized part: max(|y|, |y - beta|) (as the row norms) */
        const double v = fmax(fabs(pre[k]), fabs(pre[k] - (B ? B[c] : 0.0))) + (z ? fabs(zr[k]) : 0.0);
        if (v > P[i]) P[i] = v;
      }
  /* (sets of subnormal data put the mean's low part on the f32 subnormal grid, y and dx 3e-6
   * relative off with rstd ~ 1e6: tests/fuzz/known/chnorm-subnormal-set; the kernels now take
   * the low part times rstd, chnorm.h) */
  ten_read(y, &ty, &tr, dt, got);
  for (size_t n = 0; n < N; n++)
    for (size_t c = 0; c < C; c++)
      for (size_t s = 0; s < S; s++) {
        const size_t k = nk_ref_chidx(&tr, n, c, s), i = set_of(C, gsel, n, c);
        const double ref = yr[k];
        const double bound = dt == NK_DTYPE_F32 ? 2e-6 * P[i] + 0x1p-148
                                                : fz_ulp(ref, dt) + 2e-6 * P[i];
        /* with running statistics (inference), xhat = (x - running_mean) rstd is f32 before
         * the affine map: beyond FLT_MAX it is +-inf even where gamma would bring y back into
         * range (normkit.h documents it; open) */
        if (running_fwd && isfinite(xr[k]) && fabs((xr[k] - mr[i]) * rr[i]) > FLT_MAX) continue;
        FZ_CHECK(fz_close(got[k], ref, bound, dt),
                 "op %d fwd y[n=%zu c=%zu s=%zu] = %.9g, ref %.9g (bound %.3g) dt %d", op, n, c, s,
                 got[k], ref, bound, dt);
      }
  /* saved statistics: the set's mean and rstd (BatchNorm inference: the running ones) */
  const int running_used = (op == OP_BN && !training) || (op == OP_IN && rm && !training);
  for (size_t i = 0; smean && i < nsets; i++) {
    const double sd = 1.0 / rr[i];
    if (running_used) {
      FZ_CHECK(smean[i] == (float)mr[i] && fz_close(srstd[i], rr[i], fz_ulp(rr[i], NK_DTYPE_F32),
                                                    NK_DTYPE_F32),
               "op %d running stats[%zu]: mean %.9g ref %.9g, rstd %.9g ref %.9g", op, i,
               (double)smean[i], mr[i], (double)srstd[i], rr[i]);
    } else {
      FZ_CHECK(fz_close(smean[i], mr[i], fz_ulp(mr[i], NK_DTYPE_F32) + 1e-6 * (isfinite(sd) ? sd : 0.0),
                        NK_DTYPE_F32) &&
                   fz_close(srstd[i], rr[i], 2e-6 * rr[i], NK_DTYPE_F32),
               "op %d stats[%zu]: mean %.9g ref %.9g, rstd %.9g ref %.9g", op, i, (double)smean[i],
               mr[i], (double)srstd[i], rr[i]);
    }
  }
  /* running statistics: updated in training (BatchNorm, InstanceNorm), untouched otherwise */
  if (rm) {
    const double m = cumulative ? 1.0 / (double)nbt_store : d.momentum;
    for (size_t c = 0; c < C; c++) {
      double sd = 0.0, mm = 0.0;
      double vu = 0.0; /* the unbiased batch (instance) variance */
      const double M = op == OP_BN ? (double)(N * S) : (double)S;
      for (size_t n = 0; n < (op == OP_BN ? 1 : N); n++) {
        const size_t i = op == OP_BN ? c : n * C + c;
        sd = fmax(sd, 1.0 / rr[i]), mm = fmax(mm, fabs(mr[i]));
        vu = fmax(vu, fmax(0.0, 1.0 / (rr[i] * rr[i]) - d.eps) * M / (M - 1.0));
      }
      if (!isfinite(sd)) sd = 0.0;
      if (training) {
        FZ_CHECK(fz_close(rm[c], rm_r[c], fz_ulp(rm_r[c], NK_DTYPE_F32) + m * (1e-6 * sd + fz_ulp(mm, NK_DTYPE_F32)), NK_DTYPE_F32),
                 "op %d running_mean[%zu] %.9g ref %.9g", op, c, (double)rm[c], rm_r[c]);
        FZ_CHECK(fz_close(rv[c], rv_r[c], fz_ulp(rv_r[c], NK_DTYPE_F32) + 2e-6 * m * vu, NK_DTYPE_F32),
                 "op %d running_var[%zu] %.9g ref %.9g", op, c, (double)rv[c], rv_r[c]);
      } else {
        FZ_CHECK(rm[c] == (float)rm0[c] && rv[c] == (float)rv0[c], "running stats changed in inference");
      }
    }
    if (nbt) FZ_CHECK(nbt_store == nbt_ref, "num_batches_tracked %lld ref %lld", (long long)nbt_store, (long long)nbt_ref);
  }
  if (!fz_finite_all(xr, ne) || (op == OP_BN && !training && !smean) || !smean) return 0;

  /* ---- backward, from this forward's statistics ---- */
  /* the forward's statistics, kept before fz_begin() lets the backward reuse their slots */
  static float sm_keep[MAXN * MAXC], sr_keep[MAXN * MAXC];
  memcpy(sm_keep, smean, nsets * 4), memcpy(sr_keep, srstd, nsets * 4);
  fz_begin();
  const unsigned bopt = fz_u8(&in);
  const int acc = bopt & 1, want_dg = (bopt & 2) && has_g, want_db = bopt & 4,
            dx_on_dy = bopt & 8, dx_on_x = !dx_on_dy && (bopt & 16), want_dz = bopt & 32;
  nk_chnorm_desc b = d;
  b.flags = (training ? NK_CHNORM_TRAINING : 0) | (acc ? NK_CHNORM_ACCUMULATE : 0) |
            (act == NK_REF_ACT_RELU ? NK_CHNORM_RELU : 0) |
            (act == NK_REF_ACT_ADD_RELU ? NK_CHNORM_ADD_RELU : 0);
  const ten bx = ten_make(&in, N, C, S, nsc, dt), bdy = ten_make(&in, N, C, S, nsc, dt);
  const ten bdx = dx_on_dy ? bdy : dx_on_x ? bx : ten_make(&in, N, C, S, nsc, dt);
  const ten bdz = ten_make(&in, N, C, S, nsc, dt), by = ten_make(&in, N, C, S, nsc, dt);
  b.x_n_stride = bx.t.n_stride, b.x_row_stride = bx.t.row_stride;
  b.y_n_stride = by.t.n_stride, b.y_row_stride = by.t.row_stride;
  b.dy_n_stride = bdy.t.n_stride, b.dy_row_stride = bdy.t.row_stride;
  b.dx_n_stride = bdx.t.n_stride, b.dx_row_stride = bdx.t.row_stride;
  b.dz_n_stride = bdz.t.n_stride, b.dz_row_stride = bdz.t.row_stride;
  static double dyr[MAXE], dxr[MAXE], dzr[MAXE], ymr[MAXE], dgr[MAXC], dbr[MAXC], dg0[MAXC], db0[MAXC];
  void *bxp = fz_place(&in, &bx.g, NULL);
  for (size_t n = 0; n < N; n++)
    for (size_t c = 0; c < C; c++)
      for (size_t s = 0; s < S; s++)
        fz_set(bxp, nk_ref_chidx(&bx.t, n, c, s), xr[nk_ref_chidx(&tr, n, c, s)], dt);
  void *byp = NULL;
  if (act) { /* the forward's y, for the mask */
    byp = fz_place(&in, &by.g, NULL);
    for (size_t n = 0; n < N; n++)
      for (size_t c = 0; c < C; c++)
        for (size_t s = 0; s < S; s++) {
          const size_t k = nk_ref_chidx(&tr, n, c, s);
          fz_set(byp, nk_ref_chidx(&by.t, n, c, s), got[k], dt);
          ymr[k] = got[k];
        }
  }
  void *g2 = NULL;
  if (has_g) {
    g2 = fz_place(&in, &gp, NULL);
    for (size_t c = 0; c < C; c++) fz_set(g2, c, g_r[c], pdt);
  }
  const fz_geom gsv = op == OP_BN ? gc : gset;
  float *m2 = fz_place(&in, &gsv, NULL), *r2 = fz_place(&in, &gsv, NULL);
  memcpy(m2, sm_keep, nsets * 4), memcpy(r2, sr_keep, nsets * 4);
  void *dy = fz_place(&in, &bdy.g, NULL);
  ten_fill(&in, dy, &bdy, &tr, dt, &tame, dyr);
  void *dxp = dx_on_dy ? dy : dx_on_x ? bxp : fz_place(&in, &bdx.g, NULL);
  void *dz = act == NK_REF_ACT_ADD_RELU && want_dz ? fz_place(&in, &bdz.g, NULL) : NULL;
  void *dg = NULL, *db = NULL;
  if (want_dg) {
    dg = fz_place(&in, &gp, NULL);
    for (size_t c = 0; c < C; c++) fz_set(dg, c, fz_value(&in, &tame), pdt), dg0[c] = fz_get(dg, c, pdt);
  }
  if (want_db) {
    db = fz_place(&in, &gp, NULL);
    for (size_t c = 0; c < C; c++) fz_set(db, c, fz_value(&in, &tame), pdt), db0[c] = fz_get(db, c, pdt);
  }
  size_t wb = 0;
  st = op == OP_BN ? nk_batchnorm_bwd_workspace_size(&b, &wb)
       : op == OP_GN ? nk_groupnorm_bwd_workspace_size(&b, &wb)
                     : nk_instancenorm_bwd_workspace_size(&b, &wb);
  FZ_CHECK(st == NK_OK, "bwd workspace size");
  fz_geom gwb = fz_vec(wb, 1);
  void *wsp = wb ? fz_place(&in, &gwb, NULL) : NULL;
  const int short_wb = wb && fz_pick(&in, 16) == 0;
  fz_writable(dxp, &bdx.g), fz_writable(dz, &bdz.g), fz_writable(dg, &gp), fz_writable(db, &gp);
  fz_writable(wsp, &gwb);
  /* 1 BatchNorm training backward in 4 as its two halves: nk_batchnorm_bwd_reduce (sums in the
   * arena), then nk_batchnorm_bwd_apply with count N*S: exactly nk_batchnorm_bwd (normkit.h) */
  const int split_bwd = op == OP_BN && training && !short_wb && (fz_u8(&in) & 3) == 0;
  const fz_geom gsums = fz_vec(3 * C, sizeof(double));
  double *sums = split_bwd ? fz_place(&in, &gsums, NULL) : NULL;
  fz_writable(sums, &gsums);
  fz_snapshot();
  if (split_bwd) {
    st = nk_batchnorm_bwd_reduce(ctx, &b, bxp, byp, m2, dy, sums, wsp, wb);
    if (st == NK_OK)
      st = nk_batchnorm_bwd_apply(ctx, &b, (double)(N * S), sums, bxp, byp, g2, m2, r2, dy, dxp,
                                  dz, dg, db);
  } else if (op == OP_BN)
    st = nk_batchnorm_bwd(ctx, &b, bxp, byp, g2, m2, r2, dy, dxp, dz, dg, db, wsp, wb - (size_t)short_wb);
  else if (op == OP_GN)
    st = nk_groupnorm_bwd(ctx, &b, bxp, g2, m2, r2, dy, dxp, dg, db, wsp, wb - (size_t)short_wb);
  else
    st = nk_instancenorm_bwd(ctx, &b, running_used, bxp, g2, m2, r2, dy, dxp, dg, db, wsp,
                             wb - (size_t)short_wb);
  /* a short workspace is MISUSE where the call needs its workspace: always for GroupNorm (and
   * InstanceNorm with instance statistics); BatchNorm only for the batch sums (training, or
   * dgamma/dbeta), InstanceNorm with running statistics as BatchNorm inference, whose size may
   * be below the one the query reports (the larger of the two modes') */
  int needs_ws = 1;
  if (op == OP_BN) needs_ws = training || dg || db;
  if (op == OP_IN) { /* the query reports the larger of the two modes' sizes */
    nk_chnorm_desc e = b;
    e.flags &= ~NK_CHNORM_TRAINING;
    e.groups = C;
    size_t need = 0;
    FZ_CHECK((running_used ? nk_batchnorm_bwd_workspace_size(&e, &need)
                           : nk_groupnorm_bwd_workspace_size(&e, &need)) == NK_OK,
             "workspace size of the mode");
    needs_ws = (!running_used || dg || db) && wb - 1 < need;
  }
  if (short_wb && needs_ws) {
    FZ_CHECK(st == NK_STATUS_MISUSE, "bwd with a short workspace: status %d", st);
    fz_check_arena(0, "bwd");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "bwd op %d: status %d (%s)", op, st, nk_context_message(ctx));
  fz_check_arena(1, "bwd");

  /* the reference backward, at the forward's own statistics where they were constants */
  static double mean_c[MAXN * MAXC], rstd_c[MAXN * MAXC];
  for (size_t i = 0; i < nsets; i++) mean_c[i] = sm_keep[i], rstd_c[i] = sr_keep[i];
  if (op == OP_BN) {
    /* training: statistics from x; inference: the running mean and its rstd as the forward
     * reported them; dz = dy' */
    nk_ref_batchnorm_bwd(&tr, xr, act ? ymr : NULL, G, d.eps, training, mean_c, rstd_c, dyr,
                         dxr, dzr, dgr, dbr);
  } else if (op == OP_GN) {
    nk_ref_groupnorm_bwd(&tr, groups, xr, G, d.eps, dyr, dxr, dgr, dbr);
    memcpy(dzr, dyr, ne * sizeof(double));
  } else {
    nk_ref_instancenorm_bwd(&tr, running_used, xr, G, d.eps, mean_c, rstd_c, dyr, dxr, dgr, dbr);
    memcpy(dzr, dyr, ne * sizeof(double));
  }
  /* per set: the terms' size T and the reference dx's max D; per channel: sums for dgamma */
  static double T[MAXN * MAXC], GDY[MAXN * MAXC], XM[MAXN * MAXC], sdy[MAXC], sxdy[MAXC];
  for (size_t i = 0; i < nsets; i++) T[i] = GDY[i] = 0.0, XM[i] = 1.0;
  for (size_t c = 0; c < C; c++) sdy[c] = sxdy[c] = 0.0;
  for (size_t n = 0; n < N; n++)
    for (size_t c = 0; c < C; c++) {
      const size_t i = set_of(C, gsel, n, c);
      const double mu = op == OP_BN && !training ? rm0[c] : mr[i], r = rr[i];
      const double gc_ = fabs(G ? G[c] : 1.0);
      double sd = 0.0, xs = 0.0;
      for (size_t s = 0; s < S; s++) {
        const size_t k = nk_ref_chidx(&tr, n, c, s);
        const double xh = fabs((xr[k] - mu) * r);
        xs = fmax(xs, xh);
        XM[i] = fmax(XM[i], xh);
        GDY[i] = fmax(GDY[i], gc_ * fabs(dzr[k]));
        T[i] = fmax(T[i], fabs(dxr[k]));
        sd += fabs(dzr[k]);
      }
      sdy[c] += sd;
      sxdy[c] += sd * xs;
    }
  for (size_t i = 0; i < nsets; i++) T[i] = fmax(T[i], GDY[i] * rr[i] * XM[i]);
  /* BatchNorm's dgamma bound uses the channel's max|xhat| over the whole batch */
  if (op == OP_BN)
    for (size_t c = 0; c < C; c++) {
      double xm = 0.0;
      const double mu = training ? mr[c] : rm0[c];
      for (size_t n = 0; n < N; n++)
        for (size_t s = 0; s < S; s++)
          xm = fmax(xm, fabs((xr[nk_ref_chidx(&tr, n, c, s)] - mu) * rr[c]));
      sxdy[c] = sdy[c] * xm;
    }
  ten_read(dxp, &bdx, &tr, dt, got);
  for (size_t n = 0; n < N; n++)
    for (size_t c = 0; c < C; c++)
      for (size_t s = 0; s < S; s++) {
        const size_t k = nk_ref_chidx(&tr, n, c, s), i = set_of(C, gsel, n, c);
        const double ref = dxr[k];
        const double bound = 2e-6 * T[i] + (dt == NK_DTYPE_F32 ? 4 * 0x1p-149 : fz_ulp(ref, dt));
        FZ_CHECK(fz_close(got[k], ref, bound, dt),
                 "op %d bwd dx[n=%zu c=%zu s=%zu] = %.9g, ref %.9g (bound %.3g) dt %d train %d "
                 "(x %.9g dy %.9g mean %.9g rstd %.9g gamma %.9g)",
                 op, n, c, s, got[k], ref, bound, dt, training, xr[k], dyr[k],
                 op == OP_BN && !training ? rm0[c] : mr[i], rr[i], G ? G[c] : 1.0);
        if (dz) {
          const double v = fz_get(dz, nk_ref_chidx(&bdz.t, n, c, s), dt);
          FZ_CHECK(v == dzr[k] || (isnan(v) && isnan(dzr[k])), "dz[%zu] %.9g ref %.9g", k, v, dzr[k]);
        }
      }
  for (size_t c = 0; c < C; c++) {
    if (dg) {
      const double ref = (acc ? dg0[c] : 0.0) + dgr[c];
      FZ_CHECK(fz_close(fz_get(dg, c, pdt), ref, 4e-6 * sxdy[c] + fz_ulp(ref, pdt) * (acc ? 2 : 1), pdt),
               "op %d dgamma[%zu] = %.9g ref %.9g", op, c, fz_get(dg, c, pdt), ref);
    }
    if (db) {
      const double ref = (acc ? db0[c] : 0.0) + dbr[c];
      FZ_CHECK(fz_close(fz_get(db, c, pdt), ref, 4e-6 * sdy[c] + fz_ulp(ref, pdt) * (acc ? 2 : 1), pdt),
               "op %d dbeta[%zu] = %.9g ref %.9g", op, c, fz_get(db, c, pdt), ref);
    }
  }
  return 0;
}
