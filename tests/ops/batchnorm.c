/*
 * tests/ops/batchnorm.c — the BatchNorm operators against the float64 reference
 * (src/reference/chnorm.c), by scenario: layouts NCS and NSC, f32/bf16/f16 activations with f32
 * or same-dtype parameters, padded strides (padding holds a sentinel that must survive; input
 * padding is NaN so that reading it shows), sizes around the moments' block lengths, training
 * and inference, fused ReLU and add+ReLU, running statistics over several steps (momentum and
 * cumulative), edge cases (constant and NaN channels, M = 1), in-place calls, and the split
 * entry points (moments + fwd_moments, bwd_reduce + bwd_apply) against the fused ones bit for
 * bit.
 *
 * Bounds (normkit.h "Channel norms"; P_c = max over channel c of |reference before the
 * activation| (+ |z| with add+ReLU), D_c = max over channel c of |reference dx|):
 *   y  f32:       |y - ref| <= 2e-6 P_c
 *   y  bf16/f16:  |y - ref| <= 1 ulp(ref)   (+ 2e-6 P_c with beta or z: the sum can cancel)
 *   dx f32:       |dx - ref| <= 2e-6 max(D_c, T_c) (+ 4 f32 subnormal ulps: dx may be that
 *                 small), T_c = |g_c| rstd_c max|dy'| max(1, max|xhat|): dx cancels (with M = 2
 *                 the exact dx is ~eps/var times its terms), so D_c alone is not attainable
 *   dx bf16/f16:  |dx - ref| <= 1 ulp(ref) + 2e-6 max(D_c, T_c)
 *   dz:           exactly dy' (dy masked by the forward's y)
 *   save_mean:    1 ulp + 1e-6 sd_c;  save_rstd: 2e-6 relative (inference: the running mean's
 *                 bits and 1 ulp of the reference rstd)
 *   running mean: 1 ulp + m (1e-6 sd_c + 1 ulp of the mean); running var: 1 ulp + 2e-6 m var_u
 *                 (per step, from the previous state; after the steps 4 ulp + steps x that
 *                 from the pure float64 iteration)
 *   dgamma:       4e-6 sum |dy'| max|xhat| + 1 ulp;  dbeta: 4e-6 sum |dy'| + 1 ulp
 *   moments:      count exact, mean 5e-7 sd + 4 eps |mean|, M2 1e-6 relative ("a few units
 *                 of 1e-7": f32 blocks of 32 rows reach 5.6e-7)
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "chnorm_util.h"
#include "reference.h"
#include "test.h"
#include "util.h"

typedef struct bn_cfg {
  nk_layout layout;
  nk_dtype dt, pdt;
  size_t n, c, s;
  int training, act, gamma, beta, running, cumulative, strided, steps;
  enum ch_input in; /* every channel */
  int mixed;        /* channel c gets class (c % 3): normal, ill-conditioned, constant */
  float eps, momentum;
  uint64_t seed;
  nk_context *ctx;
} bn_cfg;

static bn_cfg bn_base(nk_layout layout, nk_dtype dt, size_t n, size_t c, size_t s) {
  bn_cfg b;
  memset(&b, 0, sizeof b);
  b.layout = layout;
  b.dt = dt;
  b.pdt = NK_DTYPE_F32;
  b.n = n, b.c = c, b.s = s;
  b.training = 1;
  b.gamma = b.beta = b.running = 1;
  b.steps = 1;
  b.in = CH_NORMAL;
  b.eps = 1e-5f;
  b.momentum = 0.1f;
  b.seed = n * 1000003u + c * 1009u + s;
  return b;
}

static const char *act_name(int act) {
  return act == NK_REF_ACT_RELU ? "relu" : act == NK_REF_ACT_ADD_RELU ? "add_relu" : "none";
}

static uint32_t act_flags(int act) {
  return act == NK_REF_ACT_RELU ? NK_CHNORM_RELU : act == NK_REF_ACT_ADD_RELU ? NK_CHNORM_ADD_RELU : 0u;
}

/* f32 ulp of v */
static double ulp32(double v) { return nk_t_ulp(v, NK_DTYPE_F32); }

static enum ch_input class_of(const bn_cfg *b, size_t c) {
  if (!b->mixed) return b->in;
  const enum ch_input k[3] = {CH_NORMAL, CH_ILLCOND, CH_CONST};
  return k[c % 3];
}

/* One configuration: `steps` forward calls (running statistics carried over), then one
 * backward; every output checked against the reference, the split entry points against the
 * fused ones bit for bit, and the padding of every output. */
static void run_bn(const bn_cfg *b) {
  const size_t N = b->n, C = b->c, S = b->s, M = N * S;
  const nk_dtype dt = b->dt, pdt = b->pdt;
  const size_t es = nk_dtype_size(dt), ps = nk_dtype_size(pdt);
  const int add = b->act == NK_REF_ACT_ADD_RELU;
  char what[200];
  snprintf(what, sizeof what, "bn %s %s/%s N%zu C%zu S%zu %s %s%s%s", nk_layout_name(b->layout),
           nk_dtype_name(dt), nk_dtype_name(pdt), N, C, S, b->training ? "train" : "infer",
           act_name(b->act), b->mixed ? " mixed" : " ", b->mixed ? "" : ch_input_name(b->in));
  nk_rng rng = {b->seed * 2654435761u + 7};
  const nk_ref_chshape tr = ch_dense(N, C, S, b->layout);
  const nk_ref_chshape tx = ch_geom_rand(N, C, S, b->layout, b->strided, &rng);
  const nk_ref_chshape tz = ch_geom_rand(N, C, S, b->layout, b->strided, &rng);
  const nk_ref_chshape ty = ch_geom_rand(N, C, S, b->layout, b->strided, &rng);
  const nk_ref_chshape tdy = ch_geom_rand(N, C, S, b->layout, b->strided, &rng);
  const nk_ref_chshape tdx = ch_geom_rand(N, C, S, b->layout, b->strided, &rng);
  const nk_ref_chshape tdz = ch_geom_rand(N, C, S, b->layout, b->strided, &rng);
  const size_t T = N * C * S;
  void *x = ch_alloc(&tx, dt, 1), *z = ch_alloc(&tz, dt, 1), *dy = ch_alloc(&tdy, dt, 1);
  void *y = ch_alloc(&ty, dt, 0), *y2 = ch_alloc(&ty, dt, 0);
  void *dx = ch_alloc(&tdx, dt, 0), *dx2 = ch_alloc(&tdx, dt, 0);
  void *dz = ch_alloc(&tdz, dt, 0), *dz2 = ch_alloc(&tdz, dt, 0);
  void *gamma = nk_t_alloc(C * ps), *beta = nk_t_alloc(C * ps);
  void *dg = nk_t_alloc(C * ps), *db = nk_t_alloc(C * ps), *dg2 = nk_t_alloc(C * ps),
       *db2 = nk_t_alloc(C * ps);
  float *rm = nk_t_alloc(C * 4), *rv = nk_t_alloc(C * 4), *rm0 = nk_t_alloc(C * 4),
        *rv0 = nk_t_alloc(C * 4), *rm2 = nk_t_alloc(C * 4), *rv2 = nk_t_alloc(C * 4);
  float *sm = nk_t_alloc(C * 4), *sr = nk_t_alloc(C * 4), *sm2 = nk_t_alloc(C * 4),
        *sr2 = nk_t_alloc(C * 4);
  nk_moments *mom = nk_t_alloc(C * sizeof(nk_moments));
  double *sums = nk_t_alloc(3 * C * 8), *sumsr = nk_t_alloc(3 * C * 8), *sabs = nk_t_alloc(3 * C * 8);
  double *xr = nk_t_alloc(T * 8), *zr = nk_t_alloc(T * 8), *yr = nk_t_alloc(T * 8);
  double *ypre = nk_t_alloc(T * 8), *ymr = nk_t_alloc(T * 8), *dyr = nk_t_alloc(T * 8);
  double *dxr = nk_t_alloc(T * 8), *dzr = nk_t_alloc(T * 8);
  double *gr = nk_t_alloc(C * 8), *br = nk_t_alloc(C * 8), *rmr = nk_t_alloc(C * 8),
         *rvr = nk_t_alloc(C * 8), *rmd = nk_t_alloc(C * 8), *rvd = nk_t_alloc(C * 8);
  double *smr = nk_t_alloc(C * 8), *srr = nk_t_alloc(C * 8), *mr = nk_t_alloc(C * 8),
         *vr = nk_t_alloc(C * 8), *scale = nk_t_alloc(C * 8), *dgr = nk_t_alloc(C * 8),
         *dbr = nk_t_alloc(C * 8), *rtmp = nk_t_alloc(C * 8), *vtmp = nk_t_alloc(C * 8);
  void *snap_y = ch_snapshot(y, ch_span(&ty) * es), *snap_dx = ch_snapshot(dx, ch_span(&tdx) * es);
  void *snap_dz = ch_snapshot(dz, ch_span(&tdz) * es);
  void *ws = NULL;
  NK_REQUIRE(x && z && dy && y && y2 && dx && dx2 && dz && dz2 && gamma && beta && dg && db &&
                 dg2 && db2 && rm && rv && rm0 && rv0 && rm2 && rv2 && sm && sr && sm2 && sr2 &&
                 mom && sums && sumsr && sabs && xr && zr && yr && ypre && ymr && dyr && dxr &&
                 dzr && gr && br && rmr && rvr && rmd && rvd && smr && srr && mr && vr && scale &&
                 dgr && dbr && rtmp && vtmp && snap_y && snap_dx && snap_dz,
             "%s: allocation", what);

  for (size_t c = 0; c < C; c++) {
    nk_t_set(gamma, c, 1.0 + 0.5 * nk_rng_normal(&rng), pdt);
    nk_t_set(beta, c, 0.5 * nk_rng_normal(&rng), pdt);
    gr[c] = nk_t_get(gamma, c, pdt);
    br[c] = nk_t_get(beta, c, pdt);
    rm[c] = (float)(0.2 * nk_rng_normal(&rng) + 0.25 * (double)c);
    rv[c] = (float)(0.5 + nk_rng_uniform(&rng));
    if (!b->training && b->mixed && class_of(b, c) == CH_ILLCOND) rm[c] = 1e4f, rv[c] = 1e-4f;
    rmd[c] = rm[c], rvd[c] = rv[c];
  }
  const void *G = b->gamma ? gamma : NULL, *B = b->beta ? beta : NULL;
  const double *Gr = b->gamma ? gr : NULL, *Br = b->beta ? br : NULL;
  int64_t nbt = b->cumulative ? 0 : 5, nbtd = nbt;
  nk_batchnorm_desc d = nk_chnorm_desc_dense(N, C, S, b->layout, dt, b->eps);
  d.param_dtype = pdt;
  d.momentum = b->momentum;
  d.flags = (b->training ? NK_CHNORM_TRAINING : 0u) | (b->cumulative ? NK_CHNORM_CUMULATIVE : 0u) |
            act_flags(b->act);
  ch_strides(&tx, &d.x_n_stride, &d.x_row_stride);
  ch_strides(&tz, &d.z_n_stride, &d.z_row_stride);
  ch_strides(&ty, &d.y_n_stride, &d.y_row_stride);
  ch_strides(&tdy, &d.dy_n_stride, &d.dy_row_stride);
  ch_strides(&tdx, &d.dx_n_stride, &d.dx_row_stride);
  ch_strides(&tdz, &d.dz_n_stride, &d.dz_row_stride);
  const int use_running = b->running || !b->training;
  float *RM = use_running ? rm : NULL, *RV = use_running ? rv : NULL;
  size_t wsb = 0, wsb2 = 0;
  NK_REQUIRE(nk_batchnorm_fwd_workspace_size(&d, &wsb) == NK_STATUS_OK, "%s: fwd workspace", what);
  NK_REQUIRE(nk_batchnorm_bwd_workspace_size(&d, &wsb2) == NK_STATUS_OK, "%s: bwd workspace", what);
  ws = nk_t_alloc(wsb > wsb2 ? wsb : wsb2);
  NK_REQUIRE(ws != NULL, "workspace allocation");

  for (int step = 0; step < b->steps; step++) {
    for (size_t a = 0; a < N; a++)
      for (size_t c = 0; c < C; c++)
        for (size_t s = 0; s < S; s++) {
          ch_put(x, &tx, dt, a, c, s, ch_sample(&rng, class_of(b, c), c) + 0.1 * step);
          ch_put(z, &tz, dt, a, c, s, 0.7 * nk_rng_normal(&rng));
        }
    ch_to_ref(x, &tx, dt, &tr, xr);
    ch_to_ref(z, &tz, dt, &tr, zr);
    memcpy(rm0, rm, C * 4);
    memcpy(rv0, rv, C * 4);
    const int64_t nbt0 = nbt;
    nk_status st = nk_batchnorm_fwd(b->ctx, &d, x, add ? z : NULL, G, B, RM, RV, &nbt, y, sm, sr,
                                    ws, wsb);
    NK_REQUIRE(st == NK_STATUS_OK, "%s: fwd status %s: %s", what, nk_status_string(st),
               nk_context_message(b->ctx));
    /* the reference from the library's previous running state, and the pure float64 chain */
    for (size_t c = 0; c < C; c++) rmr[c] = rm0[c], rvr[c] = rv0[c];
    int64_t nbtr = nbt0;
    nk_ref_batchnorm_fwd(&tr, xr, zr, Gr, Br, b->eps, b->training, b->act, b->momentum,
                         b->cumulative, use_running ? rmr : NULL, use_running ? rvr : NULL, &nbtr,
                         yr, smr, srr);
    if (b->training && b->running)
      nk_ref_batchnorm_fwd(&tr, xr, zr, Gr, Br, b->eps, 1, b->act, b->momentum, b->cumulative, rmd,
                           rvd, &nbtd, ypre, NULL, NULL);
    for (size_t c = 0; c < C; c++) rtmp[c] = rm0[c], vtmp[c] = rv0[c];
    nk_ref_batchnorm_fwd(&tr, xr, NULL, Gr, Br, b->eps, b->training, NK_REF_ACT_NONE, 0.1, 0,
                         b->training ? NULL : rtmp, b->training ? NULL : vtmp, NULL, ypre, NULL,
                         NULL);
    nk_ref_channel_stats(&tr, xr, mr, vr);
    ch_set_absmax(&tr, ypre, add ? zr : NULL, 0, scale);
    const int wide = dt == NK_DTYPE_F32;
    char wy[240];
    snprintf(wy, sizeof wy, "%s step %d: y", what, step);
    ch_compare(wy, &ty, dt, y, &tr, yr, 0, scale,
               wide || b->beta || add ? 2e-6 : 0.0, !wide, 0.0);
    if (b->act == NK_REF_ACT_NONE)
      for (size_t a = 0; a < N; a++)
        for (size_t c = 0; c < C; c++) {
          if ((class_of(b, c) != CH_CONST && class_of(b, c) != CH_ZERO) || !b->training) continue;
          const double want = Br ? nk_t_round(Br[c], dt) : 0.0;
          for (size_t s = 0; s < S; s++)
            NK_CHECK(ch_get(y, &ty, dt, a, c, s) == want,
                     "%s: constant channel %zu gives %.9g, not beta %.9g", what, c,
                     ch_get(y, &ty, dt, a, c, s), want);
        }
    for (size_t c = 0; c < C; c++) {
      const double sd = sqrt(vr[c]);
      if (b->training) {
        NK_CHECK(ch_ratio(sm[c], smr[c], ulp32(smr[c]) + 1e-6 * sd) <= 1, "%s: save_mean[%zu] %.9g ref %.9g",
                 what, c, (double)sm[c], smr[c]);
        NK_CHECK(ch_ratio(sr[c], srr[c], 2e-6 * srr[c]) <= 1, "%s: save_rstd[%zu] %.9g ref %.9g", what,
                 c, (double)sr[c], srr[c]);
      } else {
        NK_CHECK(memcmp(&sm[c], &rm0[c], 4) == 0, "%s: inference save_mean[%zu] %.9g is not the running mean %.9g",
                 what, c, (double)sm[c], (double)rm0[c]);
        NK_CHECK(ch_ratio(sr[c], srr[c], ulp32(srr[c])) <= 1, "%s: inference save_rstd[%zu] %.9g ref %.9g",
                 what, c, (double)sr[c], srr[c]);
      }
      if (b->training && b->running) {
        const double m = b->cumulative ? 1.0 / (double)nbtr : (double)b->momentum;
        const double vu = vr[c] * (double)M / (double)(M - 1);
        NK_CHECK(ch_ratio(rm[c], rmr[c], ulp32(rmr[c]) + m * (1e-6 * sd + ulp32(mr[c]))) <= 1,
                 "%s: step %d running_mean[%zu] %.9g ref %.9g", what, step, c, (double)rm[c], rmr[c]);
        NK_CHECK(ch_ratio32(rv[c], rvr[c], ulp32(rvr[c]) + 2e-6 * m * vu) <= 1,
                 "%s: step %d running_var[%zu] %.9g ref %.9g", what, step, c, (double)rv[c], rvr[c]);
      } else {
        NK_CHECK(memcmp(&rm[c], &rm0[c], 4) == 0 && memcmp(&rv[c], &rv0[c], 4) == 0,
                 "%s: running statistics of channel %zu changed without an update", what, c);
      }
    }
    NK_CHECK(nbt == nbtr, "%s: num_batches_tracked %lld, want %lld", what, (long long)nbt,
             (long long)nbtr);

    if (b->training) { /* moments + fwd_moments == fwd, bit for bit */
      memcpy(rm2, rm0, C * 4);
      memcpy(rv2, rv0, C * 4);
      int64_t nbt2 = nbt0;
      st = nk_batchnorm_moments(b->ctx, &d, x, mom, ws, wsb);
      NK_CHECK(st == NK_STATUS_OK, "%s: moments status %s", what, nk_status_string(st));
      for (size_t c = 0; c < C && st == NK_STATUS_OK; c++) {
        const double sd = sqrt(vr[c]);
        NK_CHECK(mom[c].count == (double)M, "%s: moments[%zu].count %.17g", what, c, mom[c].count);
        NK_CHECK(ch_ratio(mom[c].mean, mr[c], 5e-7 * sd + 4 * DBL_EPSILON * fabs(mr[c])) <= 1,
                 "%s: moments[%zu].mean %.17g ref %.17g", what, c, mom[c].mean, mr[c]);
        NK_CHECK(ch_ratio(mom[c].m2, vr[c] * (double)M, 1e-6 * vr[c] * (double)M) <= 1,
                 "%s: moments[%zu].m2 %.17g ref %.17g", what, c, mom[c].m2, vr[c] * (double)M);
      }
      st = nk_batchnorm_fwd_moments(b->ctx, &d, mom, x, add ? z : NULL, G, B, RM ? rm2 : NULL,
                                    RV ? rv2 : NULL, &nbt2, y2, sm2, sr2);
      NK_CHECK(st == NK_STATUS_OK, "%s: fwd_moments status %s: %s", what, nk_status_string(st),
               nk_context_message(b->ctx));
      NK_CHECK(memcmp(y, y2, ch_span(&ty) * es) == 0, "%s: fwd_moments y differs from fwd", what);
      NK_CHECK(memcmp(sm, sm2, C * 4) == 0 && memcmp(sr, sr2, C * 4) == 0,
               "%s: fwd_moments save_mean/save_rstd differ from fwd", what);
      NK_CHECK(memcmp(rm, rm2, C * 4) == 0 && memcmp(rv, rv2, C * 4) == 0 && nbt2 == nbt,
               "%s: fwd_moments running statistics differ from fwd", what);
    }
  }
  if (b->training && b->running && b->steps > 1)
    for (size_t c = 0; c < C; c++) {
      const double sd = sqrt(vr[c]), k = (double)b->steps;
      NK_CHECK(ch_ratio(rm[c], rmd[c], 4 * ulp32(rmd[c]) + k * (1e-6 * sd + ulp32(mr[c]))) <= 1,
               "%s: after %d steps running_mean[%zu] %.9g, float64 chain %.9g", what, b->steps, c,
               (double)rm[c], rmd[c]);
      NK_CHECK(ch_ratio32(rv[c], rvd[c], 4 * ulp32(rvd[c]) + k * 2e-6 * fabs(rvd[c])) <= 1,
               "%s: after %d steps running_var[%zu] %.9g, float64 chain %.9g", what, b->steps, c,
               (double)rv[c], rvd[c]);
    }

  /* ---- backward ---- */
  for (size_t a = 0; a < N; a++)
    for (size_t c = 0; c < C; c++)
      for (size_t s = 0; s < S; s++) ch_put(dy, &tdy, dt, a, c, s, nk_rng_normal(&rng));
  ch_to_ref(dy, &tdy, dt, &tr, dyr);
  ch_to_ref(y, &ty, dt, &tr, ymr);
  const void *Y = b->act ? y : NULL;
  const double *Ymr = b->act ? ymr : NULL;
  void *DG = b->gamma ? dg : NULL;
  nk_status st = nk_batchnorm_bwd(b->ctx, &d, x, Y, G, sm, sr, dy, dx, add ? dz : NULL, DG, db,
                                  ws, wsb2);
  NK_REQUIRE(st == NK_STATUS_OK, "%s: bwd status %s: %s", what, nk_status_string(st),
             nk_context_message(b->ctx));
  for (size_t c = 0; c < C; c++) rtmp[c] = rm0[c];
  nk_ref_batchnorm_bwd(&tr, xr, Ymr, Gr, b->eps, b->training, rtmp, srr, dyr, dxr, dzr, dgr, dbr);
  ch_set_absmax(&tr, dxr, NULL, 0, scale);
  for (size_t c = 0; c < C; c++) {
    double sdy = 0, xm = 0, dym = 0;
    const double mu = b->training ? mr[c] : rm0[c];
    for (size_t a = 0; a < N; a++)
      for (size_t s = 0; s < S; s++) {
        const size_t k = nk_ref_chidx(&tr, a, c, s);
        sdy += fabs(dzr[k]);
        dym = fmax(dym, fabs(dzr[k]));
        xm = fmax(xm, fabs((xr[k] - mu) * srr[c]));
      }
    if (b->gamma)
      NK_CHECK(ch_ratio(nk_t_get(dg, c, pdt), dgr[c], 4e-6 * sdy * xm + nk_t_ulp(dgr[c], pdt)) <= 1,
               "%s: dgamma[%zu] %.9g ref %.9g", what, c, nk_t_get(dg, c, pdt), dgr[c]);
    NK_CHECK(ch_ratio(nk_t_get(db, c, pdt), dbr[c], 4e-6 * sdy + nk_t_ulp(dbr[c], pdt)) <= 1,
             "%s: dbeta[%zu] %.9g ref %.9g", what, c, nk_t_get(db, c, pdt), dbr[c]);
    /* dx cancels (M = 2 gives dx ~ eps/var): the bound is relative to the larger of the
     * channel's |dx| and the size of its terms, |g| r max|dy'| max(1, max|xhat|) */
    const double terms = fabs(Gr ? Gr[c] : 1.0) * srr[c] * dym * fmax(1.0, xm);
    if (terms > scale[c]) scale[c] = terms;
  }
  const int wide = dt == NK_DTYPE_F32;
  char wdx[240];
  snprintf(wdx, sizeof wdx, "%s: dx", what);
  ch_compare(wdx, &tdx, dt, dx, &tr, dxr, 0, scale, 2e-6, !wide, wide ? 4 * 0x1p-149 : 0.0);
  snprintf(wdx, sizeof wdx, "%s: dz", what);
  if (add) ch_compare(wdx, &tdz, dt, dz, &tr, dzr, 0, scale, 0.0, 0, 0.0);
  if (b->training) { /* bwd_reduce + bwd_apply == bwd, bit for bit */
    st = nk_batchnorm_bwd_reduce(b->ctx, &d, x, Y, sm, dy, sums, ws, wsb2);
    NK_CHECK(st == NK_STATUS_OK, "%s: bwd_reduce status %s", what, nk_status_string(st));
    for (size_t c = 0; c < C; c++) rtmp[c] = sm[c];
    nk_ref_batchnorm_bwd_sums(&tr, xr, Ymr, rtmp, dyr, sumsr);
    for (size_t c = 0; c < 3 * C; c++) sabs[c] = 0.0;
    for (size_t a = 0; a < N; a++)
      for (size_t c = 0; c < C; c++)
        for (size_t s = 0; s < S; s++) {
          const size_t k = nk_ref_chidx(&tr, a, c, s);
          sabs[3 * c] += fabs(dzr[k]);
          sabs[3 * c + 1] += fabs(dzr[k] * (xr[k] - rtmp[c]));
          sabs[3 * c + 2] += fabs(xr[k] - rtmp[c]);
        }
    for (size_t k = 0; k < 3 * C && st == NK_STATUS_OK; k++)
      NK_CHECK(ch_ratio(sums[k], sumsr[k], 1e-6 * sabs[k]) <= 1,
               "%s: bwd_reduce sums[%zu] %.17g ref %.17g", what, k, sums[k], sumsr[k]);
    st = nk_batchnorm_bwd_apply(b->ctx, &d, (double)M, sums, x, Y, G, sm, sr, dy, dx2,
                                add ? dz2 : NULL, b->gamma ? dg2 : NULL, db2);
    NK_CHECK(st == NK_STATUS_OK, "%s: bwd_apply status %s", what, nk_status_string(st));
    NK_CHECK(memcmp(dx, dx2, ch_span(&tdx) * es) == 0, "%s: bwd_apply dx differs from bwd", what);
    if (add) NK_CHECK(memcmp(dz, dz2, ch_span(&tdz) * es) == 0, "%s: bwd_apply dz differs", what);
    NK_CHECK((!b->gamma || memcmp(dg, dg2, C * ps) == 0) && memcmp(db, db2, C * ps) == 0,
             "%s: bwd_apply dgamma/dbeta differ from bwd", what);
  }
  NK_CHECK(ch_padding_kept(&ty, dt, y, snap_y), "%s: y padding written", what);
  NK_CHECK(ch_padding_kept(&tdx, dt, dx, snap_dx), "%s: dx padding written", what);
  NK_CHECK(ch_padding_kept(&tdz, dt, dz, snap_dz), "%s: dz padding written", what);
  NK_CHECK(ch_padding_kept(&ty, dt, y2, snap_y), "%s: fwd_moments y padding written", what);
  NK_CHECK(ch_padding_kept(&tdx, dt, dx2, snap_dx), "%s: bwd_apply dx padding written", what);
  if (!add) NK_CHECK(ch_padding_kept(&tdz, dt, dz, snap_dz) && memcmp(dz, snap_dz, ch_span(&tdz) * es) == 0,
                     "%s: dz written without add+relu", what);

  free(x), free(z), free(dy), free(y), free(y2), free(dx), free(dx2), free(dz), free(dz2);
  free(gamma), free(beta), free(dg), free(db), free(dg2), free(db2), free(rm), free(rv);
  free(rm0), free(rv0), free(rm2), free(rv2), free(sm), free(sr), free(sm2), free(sr2), free(mom);
  free(sums), free(sumsr), free(sabs), free(xr), free(zr), free(yr), free(ypre), free(ymr);
  free(dyr), free(dxr), free(dzr), free(gr), free(br), free(rmr), free(rvr), free(rmd), free(rvd);
  free(smr), free(srr), free(mr), free(vr), free(scale), free(dgr), free(dbr), free(rtmp);
  free(vtmp), free(snap_y), free(snap_dx), free(snap_dz), free(ws);
}

/* ---- scenarios ------------------------------------------------------------------------------ */

/* NCS: S around the 1024-element block of a contiguous run; NSC: N*S around the 32-row block. */
NK_TEST(shapes_layouts_dtypes) {
  const size_t ncs[][3] = {{1, 1, 2}, {2, 3, 1}, {1, 5, 49}, {3, 7, 49}, {2, 3, 1023},
                           {1, 2, 1024}, {2, 2, 1025}, {1, 3, 3000}, {5, 4, 17}};
  const size_t nsc[][3] = {{1, 3, 31}, {2, 1, 16}, {1, 17, 33}, {4, 64, 25}, {1, 5, 49},
                           {3, 7, 11}, {31, 2, 1}, {32, 9, 1}, {33, 130, 1}};
  int k = 0;
  for (int lay = 0; lay < 2; lay++)
    for (size_t i = 0; i < 9; i++)
      for (int t = 0; t < 3; t++)
        for (int p = 0; p < 2; p++) {
          const size_t *sz = lay ? nsc[i] : ncs[i];
          bn_cfg b = bn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, ch_dtypes[t], sz[0], sz[1], sz[2]);
          if (p && t == 0) continue; /* f32 params with f32 data: covered by p == 0 */
          b.pdt = p ? ch_dtypes[t] : NK_DTYPE_F32;
          b.act = k % 3;
          b.strided = k % 2;
          b.gamma = k % 5 != 3;
          b.beta = k % 4 != 1;
          b.running = k % 6 != 2;
          k++;
          b.training = 1;
          run_bn(&b);
          b.training = 0;
          b.act = (b.act + 1) % 3;
          run_bn(&b);
        }
}

/* The smallest tensors: one element per channel works in inference. */
NK_TEST(single_elements_inference) {
  for (int lay = 0; lay < 2; lay++)
    for (int t = 0; t < 3; t++) {
      bn_cfg b = bn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, ch_dtypes[t], 1, 1, 1);
      b.training = 0;
      run_bn(&b);
      b.c = 7;
      b.strided = 1;
      run_bn(&b);
    }
}

NK_TEST(ill_conditioned_huge_tiny) {
  const enum ch_input ins[] = {CH_ILLCOND, CH_HUGE, CH_MAXISH, CH_TINY, CH_ZERO, CH_NEARMAX};
  const size_t shapes[][3] = {{2, 3, 700}, {4, 5, 49}};
  for (int lay = 0; lay < 2; lay++)
    for (size_t i = 0; i < 6; i++)
      for (int t = 0; t < 2; t++) {
        if (t == 1 && (ins[i] == CH_ILLCOND || ins[i] == CH_MAXISH ||
                       ins[i] == CH_NEARMAX)) continue; /* f32 classes */
        const size_t *sz = shapes[lay];
        bn_cfg b = bn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, ch_dtypes[t], sz[0], sz[1], sz[2]);
        b.in = ins[i];
        b.act = (int)i % 3;
        run_bn(&b);
        b.eps = 1e-30f; /* eps negligible next to tiny variances */
        b.act = 0;
        run_bn(&b);
      }
  /* mixed channels in one tensor: normal, ill-conditioned, constant */
  for (int lay = 0; lay < 2; lay++) {
    bn_cfg b = bn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, NK_DTYPE_F32, 3, 6, 333);
    b.mixed = 1;
    b.strided = 1;
    run_bn(&b);
    b.training = 0;
    run_bn(&b);
  }
}

NK_TEST(constant_channels_give_beta) {
  for (int lay = 0; lay < 2; lay++)
    for (int t = 0; t < 3; t++) {
      bn_cfg b = bn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, ch_dtypes[t], 2, 3, 37);
      b.in = CH_CONST;
      run_bn(&b); /* y == beta exactly, finite gradients (checked against the reference) */
      b.beta = 0;
      run_bn(&b); /* y == 0 exactly */
      b.in = CH_ZERO;
      run_bn(&b);
    }
}

NK_TEST(running_statistics_three_steps) {
  for (int lay = 0; lay < 2; lay++)
    for (int cum = 0; cum < 2; cum++)
      for (int t = 0; t < 3; t++) {
        bn_cfg b = bn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, ch_dtypes[t], 3, 5, 41);
        b.steps = 3;
        b.cumulative = cum;
        b.strided = t == 1;
        run_bn(&b);
        b.momentum = cum ? 0.1f : 0.0f; /* momentum 0 keeps the state (up to rounding) */
        b.mixed = t == 0;
        run_bn(&b);
        b.momentum = 1.0f;
        run_bn(&b);
      }
}

NK_TEST(threaded_pool) {
  nk_threadpool *pool = NULL;
  nk_context *ctx = NULL;
  NK_REQUIRE(nk_threadpool_create(3, &pool) == NK_STATUS_OK, "pool");
  NK_REQUIRE(nk_context_create(&ctx) == NK_STATUS_OK, "ctx");
  nk_context_set_threadpool(ctx, pool);
  for (int lay = 0; lay < 2; lay++) {
    bn_cfg b = bn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, NK_DTYPE_F32, 4, lay ? 40 : 6,
                       lay ? 500 : 2100);
    b.ctx = ctx;
    b.strided = 1;
    b.act = NK_REF_ACT_ADD_RELU;
    run_bn(&b);
    b.training = 0;
    run_bn(&b);
  }
  nk_context_destroy(ctx);
  nk_threadpool_destroy(pool);
}

/* Dense f32/bf16/f16 tensor helpers for the scenario tests below. */
typedef struct bn_bufs {
  nk_batchnorm_desc d;
  size_t T, bytes, C;
  void *x, *y, *dy, *dx, *z, *dz;
  float *gamma, *beta, *rm, *rv, *sm, *sr, *dg, *db;
  void *ws;
  size_t wsb;
} bn_bufs;

static int bufs_make(bn_bufs *q, size_t N, size_t C, size_t S, nk_layout lay, nk_dtype dt,
                     uint32_t flags, uint64_t seed) {
  memset(q, 0, sizeof *q);
  q->d = nk_chnorm_desc_dense(N, C, S, lay, dt, 1e-5f);
  q->d.flags = flags;
  q->T = N * C * S;
  q->C = C;
  q->bytes = q->T * nk_dtype_size(dt);
  q->x = nk_t_alloc(q->bytes), q->y = nk_t_alloc(q->bytes), q->dy = nk_t_alloc(q->bytes);
  q->dx = nk_t_alloc(q->bytes), q->z = nk_t_alloc(q->bytes), q->dz = nk_t_alloc(q->bytes);
  q->gamma = nk_t_alloc(C * 4), q->beta = nk_t_alloc(C * 4), q->rm = nk_t_alloc(C * 4);
  q->rv = nk_t_alloc(C * 4), q->sm = nk_t_alloc(C * 4), q->sr = nk_t_alloc(C * 4);
  q->dg = nk_t_alloc(C * 4), q->db = nk_t_alloc(C * 4);
  size_t a = 0, b = 0;
  nk_batchnorm_fwd_workspace_size(&q->d, &a);
  nk_batchnorm_bwd_workspace_size(&q->d, &b);
  q->wsb = a > b ? a : b;
  q->ws = nk_t_alloc(q->wsb);
  nk_rng rng = {seed};
  for (size_t k = 0; k < q->T; k++) {
    nk_t_set(q->x, k, 1.0 + nk_rng_normal(&rng), dt);
    nk_t_set(q->dy, k, nk_rng_normal(&rng), dt);
    nk_t_set(q->z, k, 0.5 * nk_rng_normal(&rng), dt);
  }
  for (size_t c = 0; c < C; c++) {
    q->gamma[c] = (float)(1 + 0.3 * nk_rng_normal(&rng));
    q->beta[c] = (float)(0.3 * nk_rng_normal(&rng));
    q->rm[c] = (float)(0.1 * nk_rng_normal(&rng));
    q->rv[c] = (float)(0.5 + nk_rng_uniform(&rng));
  }
  return q->x && q->y && q->dy && q->dx && q->z && q->dz && q->gamma && q->beta && q->rm &&
         q->rv && q->sm && q->sr && q->dg && q->db && q->ws;
}

static void bufs_free(bn_bufs *q) {
  free(q->x), free(q->y), free(q->dy), free(q->dx), free(q->z), free(q->dz), free(q->gamma);
  free(q->beta), free(q->rm), free(q->rv), free(q->sm), free(q->sr), free(q->dg), free(q->db);
  free(q->ws);
}

/* Element (n, c, s) of a dense tensor. */
static size_t dense_idx(const nk_batchnorm_desc *d, size_t n, size_t c, size_t s) {
  const nk_ref_chshape t = ch_dense(d->batch, d->channels, d->spatial, d->layout);
  return nk_ref_chidx(&t, n, c, s);
}

/* NaN (or inf) in one channel: that channel's outputs and statistics are NaN, every other
 * channel's bits are those of the run without it. */
NK_TEST(nan_channel_stays_in_its_channel) {
  for (int lay = 0; lay < 2; lay++)
    for (int t = 0; t < 3; t++)
      for (int inf = 0; inf < 2; inf++)
        for (int one = 0; one < 2; one++) { /* one == 1: one block per channel (N = 1, NCS) */
        const nk_dtype dt = ch_dtypes[t];
        const size_t N = one ? 1 : 3, C = 5, S = 40, es = nk_dtype_size(dt);
        bn_bufs a, q;
        NK_REQUIRE(bufs_make(&a, N, C, S, lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, dt,
                             NK_CHNORM_TRAINING, 3) &&
                       bufs_make(&q, N, C, S, lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, dt,
                                 NK_CHNORM_TRAINING, 3),
                   "alloc");
        nk_t_set(q.x, dense_idx(&q.d, N - 1, 2, 17), inf ? -INFINITY : NAN, dt);
        nk_status s1 = nk_batchnorm_fwd(NULL, &a.d, a.x, NULL, a.gamma, a.beta, a.rm, a.rv, NULL,
                                        a.y, a.sm, a.sr, a.ws, a.wsb);
        nk_status s2 = nk_batchnorm_fwd(NULL, &q.d, q.x, NULL, q.gamma, q.beta, q.rm, q.rv, NULL,
                                        q.y, q.sm, q.sr, q.ws, q.wsb);
        NK_REQUIRE(s1 == 0 && s2 == 0, "fwd status %d %d", s1, s2);
        s1 = nk_batchnorm_bwd(NULL, &a.d, a.x, NULL, a.gamma, a.sm, a.sr, a.dy, a.dx, NULL, a.dg,
                              a.db, a.ws, a.wsb);
        s2 = nk_batchnorm_bwd(NULL, &q.d, q.x, NULL, q.gamma, q.sm, q.sr, q.dy, q.dx, NULL, q.dg,
                              q.db, q.ws, q.wsb);
        NK_REQUIRE(s1 == 0 && s2 == 0, "bwd status %d %d", s1, s2);
        for (size_t n = 0; n < N; n++)
          for (size_t c = 0; c < C; c++)
            for (size_t s = 0; s < S; s++) {
              const size_t k = dense_idx(&q.d, n, c, s);
              if (c == 2) {
                NK_CHECK(isnan(nk_t_get(q.y, k, dt)) && isnan(nk_t_get(q.dx, k, dt)),
                         "%s %s: NaN channel y/dx (%zu,%zu) not NaN: %g %g",
                         nk_layout_name(q.d.layout), nk_dtype_name(dt), n, s,
                         nk_t_get(q.y, k, dt), nk_t_get(q.dx, k, dt));
              } else {
                NK_CHECK(memcmp((char *)q.y + k * es, (char *)a.y + k * es, es) == 0 &&
                             memcmp((char *)q.dx + k * es, (char *)a.dx + k * es, es) == 0,
                         "%s %s: channel %zu (%zu,%zu) changed by a NaN in channel 2",
                         nk_layout_name(q.d.layout), nk_dtype_name(dt), c, n, s);
              }
            }
        for (size_t c = 0; c < C; c++) {
          if (c == 2) {
            /* dbeta = sum dy does not involve x: either value is accepted */
            NK_CHECK(isnan(q.sm[c]) && isnan(q.sr[c]) && isnan(q.rm[c]) && isnan(q.rv[c]) &&
                         isnan(q.dg[c]),
                     "%s %s N%zu, %s in channel 2: mean %g rstd %g running %g %g dgamma %g",
                     nk_layout_name(q.d.layout), nk_dtype_name(dt), N, inf ? "-inf" : "NaN",
                     q.sm[c], q.sr[c], q.rm[c], q.rv[c], q.dg[c]);
          } else {
            NK_CHECK(q.sm[c] == a.sm[c] && q.sr[c] == a.sr[c] && q.rm[c] == a.rm[c] &&
                         q.rv[c] == a.rv[c] && q.dg[c] == a.dg[c] && q.db[c] == a.db[c],
                     "channel %zu statistics changed by a NaN in channel 2", c);
          }
        }
        bufs_free(&a);
        bufs_free(&q);
      }
}

/* y == x (and y == z with add+ReLU) and dx == dy (dx == x, dz == dy) give the same bits as
 * separate buffers. */
NK_TEST(inplace_matches_out_of_place) {
  for (int lay = 0; lay < 2; lay++)
    for (int t = 0; t < 3; t++)
      for (int mode = 0; mode < 3; mode++) {
        const nk_dtype dt = ch_dtypes[t];
        const size_t N = 2, C = 6, S = 77;
        const uint32_t flags = NK_CHNORM_TRAINING | (mode == 2 ? NK_CHNORM_ADD_RELU : 0u) |
                               (mode == 1 ? NK_CHNORM_RELU : 0u);
        bn_bufs q;
        NK_REQUIRE(bufs_make(&q, N, C, S, lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, dt, flags, 11),
                   "alloc");
        const void *Z = mode == 2 ? q.z : NULL;
        void *io = nk_t_alloc(q.bytes), *dio = nk_t_alloc(q.bytes), *dzo = nk_t_alloc(q.bytes);
        float sm2[6], sr2[6], dg2[6], db2[6], rm2[6], rv2[6];
        memcpy(rm2, q.rm, sizeof rm2);
        memcpy(rv2, q.rv, sizeof rv2);
        nk_status st = nk_batchnorm_fwd(NULL, &q.d, q.x, Z, q.gamma, q.beta, q.rm, q.rv, NULL,
                                        q.y, q.sm, q.sr, q.ws, q.wsb);
        NK_CHECK(st == 0, "fwd %d", st);
        /* y == x (mode 0, 1) or y == z (mode 2) */
        memcpy(io, mode == 2 ? q.z : q.x, q.bytes);
        st = nk_batchnorm_fwd(NULL, &q.d, mode == 2 ? q.x : io, mode == 2 ? io : NULL, q.gamma,
                              q.beta, rm2, rv2, NULL, io, sm2, sr2, q.ws, q.wsb);
        NK_CHECK(st == 0, "in-place fwd (%s %s mode %d): %s", nk_layout_name(q.d.layout),
                 nk_dtype_name(dt), mode, nk_status_string(st));
        NK_CHECK(memcmp(io, q.y, q.bytes) == 0, "%s %s mode %d: in-place forward differs",
                 nk_layout_name(q.d.layout), nk_dtype_name(dt), mode);
        NK_CHECK(memcmp(sm2, q.sm, sizeof sm2) == 0 && memcmp(rm2, q.rm, sizeof rm2) == 0,
                 "in-place statistics differ");
        const void *Y = mode ? q.y : NULL;
        st = nk_batchnorm_bwd(NULL, &q.d, q.x, Y, q.gamma, q.sm, q.sr, q.dy, q.dx,
                              mode == 2 ? q.dz : NULL, q.dg, q.db, q.ws, q.wsb);
        NK_CHECK(st == 0, "bwd %d", st);
        /* dx == dy, dz separate */
        memcpy(dio, q.dy, q.bytes);
        st = nk_batchnorm_bwd(NULL, &q.d, q.x, Y, q.gamma, q.sm, q.sr, dio, dio,
                              mode == 2 ? dzo : NULL, dg2, db2, q.ws, q.wsb);
        NK_CHECK(st == 0, "in-place bwd dx == dy: %s", nk_status_string(st));
        NK_CHECK(memcmp(dio, q.dx, q.bytes) == 0, "%s %s mode %d: dx == dy differs",
                 nk_layout_name(q.d.layout), nk_dtype_name(dt), mode);
        if (mode == 2) NK_CHECK(memcmp(dzo, q.dz, q.bytes) == 0, "dz differs with dx == dy");
        NK_CHECK(memcmp(dg2, q.dg, sizeof dg2) == 0 && memcmp(db2, q.db, sizeof db2) == 0,
                 "in-place dgamma/dbeta differ");
        /* dx == x */
        memcpy(dio, q.x, q.bytes);
        st = nk_batchnorm_bwd(NULL, &q.d, dio, Y, q.gamma, q.sm, q.sr, q.dy, dio,
                              mode == 2 ? dzo : NULL, dg2, db2, q.ws, q.wsb);
        NK_CHECK(st == 0, "in-place bwd dx == x: %s", nk_status_string(st));
        NK_CHECK(memcmp(dio, q.dx, q.bytes) == 0, "%s %s mode %d: dx == x differs",
                 nk_layout_name(q.d.layout), nk_dtype_name(dt), mode);
        if (mode == 2) { /* dz == dy */
          memcpy(dzo, q.dy, q.bytes);
          st = nk_batchnorm_bwd(NULL, &q.d, q.x, Y, q.gamma, q.sm, q.sr, dzo, dio, dzo, dg2, db2,
                                q.ws, q.wsb);
          NK_CHECK(st == 0, "in-place bwd dz == dy: %s", nk_status_string(st));
          NK_CHECK(memcmp(dzo, q.dz, q.bytes) == 0 && memcmp(dio, q.dx, q.bytes) == 0,
                   "dz == dy differs");
        }
        free(io), free(dio), free(dzo);
        bufs_free(&q);
      }
}

/* Synchronized BatchNorm on one process: the batch split in two "ranks" along N, moments
 * merged, fwd_moments per rank; bwd_reduce per rank, sums added, bwd_apply per rank with the
 * total count. Agrees with the single call within the bounds (the split changes the order). */
NK_TEST(synchronized_split_batch) {
  for (int lay = 0; lay < 2; lay++) {
    const size_t N = 5, C = 4, S = 300, n1 = 2;
    const nk_layout L = lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS;
    bn_bufs q;
    NK_REQUIRE(bufs_make(&q, N, C, S, L, NK_DTYPE_F32, NK_CHNORM_TRAINING, 5), "alloc");
    float *y2 = nk_t_alloc(q.bytes), *dx2 = nk_t_alloc(q.bytes), rm2[4], rv2[4], sm2[4], sr2[4];
    float dg2[4], db2[4], dgp[4], dbp[4];
    memcpy(rm2, q.rm, sizeof rm2);
    memcpy(rv2, q.rv, sizeof rv2);
    NK_CHECK(nk_batchnorm_fwd(NULL, &q.d, q.x, NULL, q.gamma, q.beta, q.rm, q.rv, NULL, q.y, q.sm,
                              q.sr, q.ws, q.wsb) == 0, "fwd");
    NK_CHECK(nk_batchnorm_bwd(NULL, &q.d, q.x, NULL, q.gamma, q.sm, q.sr, q.dy, q.dx, NULL, q.dg,
                              q.db, q.ws, q.wsb) == 0, "bwd");
    nk_batchnorm_desc r[2] = {q.d, q.d};
    r[0].batch = n1, r[1].batch = N - n1;
    const size_t off = n1 * C * S; /* dense: samples are contiguous in both layouts */
    nk_moments m0[4], m1[4];
    NK_CHECK(nk_batchnorm_moments(NULL, &r[0], q.x, m0, q.ws, q.wsb) == 0, "moments 0");
    NK_CHECK(nk_batchnorm_moments(NULL, &r[1], (float *)q.x + off, m1, q.ws, q.wsb) == 0, "moments 1");
    nk_moments_merge_n(C, m0, m1);
    float rmx[4], rvx[4];
    for (int part = 0; part < 2; part++) {
      memcpy(rmx, rm2, sizeof rmx), memcpy(rvx, rv2, sizeof rvx);
      NK_CHECK(nk_batchnorm_fwd_moments(NULL, &r[part], m0, (float *)q.x + part * off, NULL,
                                        q.gamma, q.beta, rmx, rvx, NULL, y2 + part * off, sm2,
                                        sr2) == 0,
               "fwd_moments part %d", part);
    }
    for (size_t k = 0; k < q.T; k++)
      NK_CHECK(fabs(y2[k] - ((float *)q.y)[k]) <= 4e-6 * (1 + fabs(((float *)q.y)[k])),
               "%s: synchronized y[%zu] %.9g vs %.9g", nk_layout_name(L), k, y2[k],
               ((float *)q.y)[k]);
    for (size_t c = 0; c < C; c++) {
      NK_CHECK(fabs(sm2[c] - q.sm[c]) <= 1e-6 * (1 + fabs(q.sm[c])) &&
                   fabs(sr2[c] - q.sr[c]) <= 2e-6 * q.sr[c],
               "synchronized statistics[%zu]", c);
      NK_CHECK(fabs(rmx[c] - q.rm[c]) <= 1e-6 * (1 + fabs(q.rm[c])) &&
                   fabs(rvx[c] - q.rv[c]) <= 2e-6 * q.rv[c],
               "synchronized running statistics[%zu] (count = the merged count)", c);
    }
    double s0[12], s1[12];
    NK_CHECK(nk_batchnorm_bwd_reduce(NULL, &r[0], q.x, NULL, q.sm, q.dy, s0, q.ws, q.wsb) == 0, "reduce 0");
    NK_CHECK(nk_batchnorm_bwd_reduce(NULL, &r[1], (float *)q.x + off, NULL, q.sm,
                                     (float *)q.dy + off, s1, q.ws, q.wsb) == 0, "reduce 1");
    for (int k = 0; k < 12; k++) s0[k] += s1[k];
    nk_context *ctx = NULL;
    nk_context_create(&ctx);
    for (int part = 0; part < 2; part++) {
      const nk_status st = nk_batchnorm_bwd_apply(
          ctx, &r[part], (double)(N * S), s0, (float *)q.x + part * off, NULL, q.gamma, q.sm, q.sr,
          (float *)q.dy + part * off, dx2 + part * off, NULL, part ? dgp : dg2, part ? dbp : db2);
      NK_CHECK(st == 0, "apply part %d: %s: %s", part, nk_status_string(st), nk_context_message(ctx));
    }
    nk_context_destroy(ctx);
    double dmax = 0;
    for (size_t k = 0; k < q.T; k++) dmax = fmax(dmax, fabs(((float *)q.dx)[k]));
    for (size_t k = 0; k < q.T; k++)
      NK_CHECK(fabs(dx2[k] - ((float *)q.dx)[k]) <= 4e-6 * dmax, "%s: synchronized dx[%zu] %.9g vs %.9g",
               nk_layout_name(L), k, dx2[k], ((float *)q.dx)[k]);
    for (size_t c = 0; c < C; c++)
      NK_CHECK(dg2[c] == dgp[c] && db2[c] == dbp[c] &&
                   fabs(dg2[c] - q.dg[c]) <= 1e-5 * (1 + fabs(q.dg[c])) &&
                   fabs(db2[c] - q.db[c]) <= 1e-5 * (1 + fabs(q.db[c])),
               "synchronized dgamma/dbeta[%zu] %g %g vs %g %g", c, dg2[c], db2[c], q.dg[c], q.db[c]);
    free(y2), free(dx2);
    bufs_free(&q);
  }
}

/* NK_CHNORM_ACCUMULATE adds to dgamma/dbeta; nothing else changes. */
NK_TEST(accumulate_parameter_gradients) {
  for (int lay = 0; lay < 2; lay++)
    for (int train = 0; train < 2; train++) {
      bn_bufs q;
      NK_REQUIRE(bufs_make(&q, 3, 5, 31, lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, NK_DTYPE_F32,
                           train ? NK_CHNORM_TRAINING : 0u, 13),
                 "alloc");
      NK_CHECK(nk_batchnorm_fwd(NULL, &q.d, q.x, NULL, q.gamma, q.beta, q.rm, q.rv, NULL, q.y,
                                q.sm, q.sr, q.ws, q.wsb) == 0, "fwd");
      NK_CHECK(nk_batchnorm_bwd(NULL, &q.d, q.x, NULL, q.gamma, q.sm, q.sr, q.dy, q.dx, NULL,
                                q.dg, q.db, q.ws, q.wsb) == 0, "bwd");
      float dg[5], db[5];
      memcpy(dg, q.dg, sizeof dg), memcpy(db, q.db, sizeof db);
      void *dx2 = nk_t_alloc(q.bytes);
      q.d.flags |= NK_CHNORM_ACCUMULATE;
      NK_CHECK(nk_batchnorm_bwd(NULL, &q.d, q.x, NULL, q.gamma, q.sm, q.sr, q.dy, dx2, NULL, q.dg,
                                q.db, q.ws, q.wsb) == 0, "bwd accumulate");
      NK_CHECK(memcmp(dx2, q.dx, q.bytes) == 0, "accumulate changed dx");
      for (int c = 0; c < 5; c++)
        NK_CHECK(q.dg[c] == 2 * dg[c] && q.db[c] == 2 * db[c], "%s train %d: accumulated [%d] %g %g, want %g %g",
                 nk_layout_name(q.d.layout), train, c, q.dg[c], q.db[c], 2 * dg[c], 2 * db[c]);
      if (train) {
        double sums[15];
        memcpy(q.dg, dg, sizeof dg), memcpy(q.db, db, sizeof db);
        NK_CHECK(nk_batchnorm_bwd_reduce(NULL, &q.d, q.x, NULL, q.sm, q.dy, sums, q.ws, q.wsb) == 0, "reduce");
        NK_CHECK(nk_batchnorm_bwd_apply(NULL, &q.d, 93.0, sums, q.x, NULL, q.gamma, q.sm, q.sr, q.dy,
                                        dx2, NULL, q.dg, q.db) == 0, "apply");
        for (int c = 0; c < 5; c++)
          NK_CHECK(q.dg[c] == 2 * dg[c] && q.db[c] == 2 * db[c], "bwd_apply accumulated [%d]", c);
      }
      free(dx2);
      bufs_free(&q);
    }
}

/* Training needs more than one value per channel. */
NK_TEST(one_value_per_channel_in_training_is_invalid) {
  nk_context *ctx = NULL;
  nk_context_create(&ctx);
  for (int lay = 0; lay < 2; lay++) {
    bn_bufs q;
    NK_REQUIRE(bufs_make(&q, 1, 3, 1, lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, NK_DTYPE_F32,
                         NK_CHNORM_TRAINING, 1), "alloc");
    memset(q.y, 0x5A, q.bytes);
    float rm[3], rv[3];
    memcpy(rm, q.rm, sizeof rm), memcpy(rv, q.rv, sizeof rv);
    nk_status st = nk_batchnorm_fwd(ctx, &q.d, q.x, NULL, NULL, NULL, q.rm, q.rv, NULL, q.y, NULL,
                                    NULL, q.ws, q.wsb);
    NK_CHECK(st == NK_STATUS_INVALID_ARGUMENT, "M == 1 training: %s", nk_status_string(st));
    NK_CHECK(nk_context_message(ctx)[0] != '\0', "no message");
    NK_CHECK(memcmp(rm, q.rm, sizeof rm) == 0 && memcmp(rv, q.rv, sizeof rv) == 0,
             "running statistics written");
    for (size_t k = 0; k < q.bytes; k++) NK_CHECK(((unsigned char *)q.y)[k] == 0x5A, "y written");
    st = nk_batchnorm_fwd(ctx, &q.d, q.x, NULL, NULL, NULL, NULL, NULL, NULL, q.y, NULL, NULL, q.ws,
                          q.wsb);
    NK_CHECK(st == NK_STATUS_INVALID_ARGUMENT, "M == 1 training without running: %s",
             nk_status_string(st));
    q.d.flags = 0;
    st = nk_batchnorm_fwd(ctx, &q.d, q.x, NULL, NULL, NULL, q.rm, q.rv, NULL, q.y, NULL, NULL,
                          q.ws, q.wsb);
    NK_CHECK(st == NK_STATUS_OK, "M == 1 inference: %s", nk_status_string(st));
    bufs_free(&q);
  }
  nk_context_destroy(ctx);
}

/* Folding vs the reference: f32 results within 1 ulp (+ the cancellation of shift). */
NK_TEST(fold_and_fold_linear) {
  enum { C = 37, K = 19 };
  float rm[C], rv[C], g[C], b[C], scale[C], shift[C], w[C * K], w0[C * K], bias[C], bo[C];
  double rmd[C], rvd[C], gd[C], bd[C], sd[C], hd[C], wd[C * K], biasd[C], bod[C];
  nk_rng rng = {31};
  for (int c = 0; c < C; c++) {
    rm[c] = (float)(3 * nk_rng_normal(&rng)), rv[c] = (float)(0.01 + 4 * nk_rng_uniform(&rng));
    if (c == 5) rm[c] = 1e4f, rv[c] = 1e-4f;
    g[c] = (float)(1 + 0.5 * nk_rng_normal(&rng)), b[c] = (float)nk_rng_normal(&rng);
    bias[c] = (float)nk_rng_normal(&rng);
    rmd[c] = rm[c], rvd[c] = rv[c], gd[c] = g[c], bd[c] = b[c], biasd[c] = bias[c];
  }
  for (int k = 0; k < C * K; k++) w0[k] = (float)nk_rng_normal(&rng);
  for (int affine = 0; affine < 2; affine++) {
    const float *G = affine ? g : NULL, *B = affine ? b : NULL;
    const double *Gd = affine ? gd : NULL, *Bd = affine ? bd : NULL;
    NK_CHECK(nk_batchnorm_fold(C, 1e-3f, rm, rv, G, B, scale, shift) == 0, "fold");
    nk_ref_batchnorm_fold(C, 1e-3f, rmd, rvd, Gd, Bd, sd, hd);
    for (int c = 0; c < C; c++) {
      NK_CHECK(ch_ratio(scale[c], sd[c], ulp32(sd[c])) <= 1, "scale[%d] %.9g ref %.9g", c, scale[c], sd[c]);
      const double big = fabs(Bd ? Bd[c] : 0.0) + fabs(rmd[c] * sd[c]);
      NK_CHECK(ch_ratio(shift[c], hd[c], ulp32(hd[c]) + 1e-12 * big) <= 1, "shift[%d] %.9g ref %.9g", c,
               shift[c], hd[c]);
    }
    for (int with_bias = 0; with_bias < 2; with_bias++) {
      memcpy(w, w0, sizeof w);
      for (int k = 0; k < C * K; k++) wd[k] = w0[k];
      NK_CHECK(nk_batchnorm_fold_linear(C, K, 1e-3f, rm, rv, G, B, w, with_bias ? bias : NULL, bo) == 0,
               "fold_linear");
      nk_ref_batchnorm_fold_linear(C, K, 1e-3f, rmd, rvd, Gd, Bd, wd, with_bias ? biasd : NULL, bod);
      for (int k = 0; k < C * K; k++)
        NK_CHECK(ch_ratio(w[k], wd[k], ulp32(wd[k])) <= 1, "weight[%d] %.9g ref %.9g", k, w[k], wd[k]);
      for (int c = 0; c < C; c++) {
        const double big = fabs(Bd ? Bd[c] : 0.0) + fabs((with_bias ? biasd[c] : 0.0) - rmd[c]) * fabs(sd[c]);
        NK_CHECK(ch_ratio(bo[c], bod[c], ulp32(bod[c]) + 1e-12 * big) <= 1, "bias_out[%d] %.9g ref %.9g",
                 c, bo[c], bod[c]);
      }
    }
  }
  NK_CHECK(nk_batchnorm_fold(C, 1e-3f, NULL, rv, NULL, NULL, scale, shift) ==
               NK_STATUS_INVALID_ARGUMENT, "NULL running mean");
  NK_CHECK(nk_batchnorm_fold(C, -1.0f, rm, rv, NULL, NULL, scale, shift) ==
               NK_STATUS_INVALID_ARGUMENT, "bad eps");
  NK_CHECK(nk_batchnorm_fold_linear(C, K, 1e-3f, rm, rv, NULL, NULL, w, NULL, NULL) ==
               NK_STATUS_INVALID_ARGUMENT, "no bias and no bias_out");
  NK_CHECK(nk_batchnorm_fold(0, 1e-3f, NULL, NULL, NULL, NULL, NULL, NULL) == NK_STATUS_OK,
           "zero channels");
}

int main(void) {
  NK_RUN_TIMED(shapes_layouts_dtypes);
  NK_RUN(single_elements_inference);
  NK_RUN_TIMED(ill_conditioned_huge_tiny);
  NK_RUN(constant_channels_give_beta);
  NK_RUN_TIMED(running_statistics_three_steps);
  NK_RUN(threaded_pool);
  NK_RUN(nan_channel_stays_in_its_channel);
  NK_RUN(inplace_matches_out_of_place);
  NK_RUN(synchronized_split_batch);
  NK_RUN(accumulate_parameter_gradients);
  NK_RUN(one_value_per_channel_in_training_is_invalid);
  NK_RUN(fold_and_fold_linear);
  return nk_test_summary();
}
