/*
 * tests/ops/groupnorm.c — GroupNorm and InstanceNorm against the float64 reference
 * (src/reference/chnorm.c), by scenario: layouts NCS and NSC, f32/bf16/f16 activations with f32
 * or same-dtype parameters, padded strides (output padding must survive, input padding is NaN),
 * group sizes from one element to whole samples, sizes crossing the moments' blocks,
 * ill-conditioned / huge / tiny / constant / NaN groups, InstanceNorm's three modes (instance
 * statistics; training with running statistics over three steps; inference with running
 * statistics), in-place calls, C % G != 0 and S == 1 with running training.
 *
 * Bounds (normkit.h "Channel norms"; the set is the (sample, group) the element belongs to;
 * P = max |reference y| over the set, D = max |reference dx| over the set):
 *   y  f32: 2e-6 P;  bf16/f16: 1 ulp(ref) (+ 2e-6 P with beta)
 *   dx f32: 2e-6 max(D, T) (+ 4 f32 subnormal ulps);  bf16/f16: 1 ulp(ref) + 2e-6 max(D, T),
 *   T = max |g dy| rstd max(1, max |xhat|) over the set: dx cancels (a set of two elements has
 *   dx ~ eps/var times its terms), so D alone is not attainable
 *   mean: 1 ulp + 1e-6 sd;  rstd: 2e-6 relative (running-statistics inference: the running
 *   mean's bits, 1 ulp of the reference rstd)
 *   dgamma_c: 4e-6 sum |dy| max|xhat| + 1 ulp; dbeta_c: 4e-6 sum |dy| + 1 ulp
 *   running mean: 1 ulp + m (1e-6 max sd + 1 ulp of the mean); running var: 1 ulp + 2e-6 m var
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "chnorm_util.h"
#include "reference.h"
#include "test.h"
#include "util.h"

enum { IN_NONE = 0, IN_TRAIN_RUNNING = 1, IN_INFER_RUNNING = 2 };

typedef struct gn_cfg {
  int instance;  /* 0: GroupNorm (groups); 1: InstanceNorm (mode) */
  int mode;      /* InstanceNorm: IN_NONE, IN_TRAIN_RUNNING, IN_INFER_RUNNING */
  int train_flag; /* InstanceNorm IN_NONE: also set NK_CHNORM_TRAINING */
  nk_layout layout;
  nk_dtype dt, pdt;
  size_t n, c, s, groups;
  int gamma, beta, strided, steps;
  enum ch_input in;
  int mixed; /* set (n, g) gets class (n + g) % 3: normal, ill-conditioned, constant */
  float eps, momentum;
  uint64_t seed;
  nk_context *ctx;
} gn_cfg;

static gn_cfg gn_base(nk_layout layout, nk_dtype dt, size_t n, size_t c, size_t s, size_t g) {
  gn_cfg b;
  memset(&b, 0, sizeof b);
  b.layout = layout;
  b.dt = dt;
  b.pdt = NK_DTYPE_F32;
  b.n = n, b.c = c, b.s = s, b.groups = g;
  b.gamma = b.beta = 1;
  b.steps = 1;
  b.in = CH_NORMAL;
  b.eps = 1e-5f;
  b.momentum = 0.1f;
  b.seed = n * 1000003u + c * 1009u + s * 7u + g;
  return b;
}

static double ulp32(double v) { return nk_t_ulp(v, NK_DTYPE_F32); }

static enum ch_input class_of(const gn_cfg *b, size_t n, size_t g) {
  if (!b->mixed) return b->in;
  const enum ch_input k[3] = {CH_NORMAL, CH_ILLCOND, CH_CONST};
  return k[(n + g) % 3];
}

static void run_gn(const gn_cfg *b) {
  const size_t N = b->n, C = b->c, S = b->s;
  const size_t G = b->instance ? C : b->groups, NG = N * G, cg = C / G;
  const nk_dtype dt = b->dt, pdt = b->pdt;
  const size_t es = nk_dtype_size(dt), ps = nk_dtype_size(pdt);
  const int running = b->instance && b->mode != IN_NONE;
  const int training =
      b->instance && (b->mode == IN_TRAIN_RUNNING || (b->mode == IN_NONE && b->train_flag));
  const int use_running = b->instance && b->mode == IN_INFER_RUNNING;
  char what[200];
  snprintf(what, sizeof what, "%s %s %s/%s N%zu C%zu S%zu G%zu%s%s %s",
           b->instance ? "in" : "gn", nk_layout_name(b->layout), nk_dtype_name(dt),
           nk_dtype_name(pdt), N, C, S, G,
           !b->instance ? "" : b->mode == IN_NONE ? " instance" : b->mode == IN_TRAIN_RUNNING ? " train+running" : " infer+running",
           b->strided ? " strided" : "", b->mixed ? "mixed" : ch_input_name(b->in));
  nk_rng rng = {b->seed * 2654435761u + 3};
  const nk_ref_chshape tr = ch_dense(N, C, S, b->layout);
  const nk_ref_chshape tx = ch_geom_rand(N, C, S, b->layout, b->strided, &rng);
  const nk_ref_chshape ty = ch_geom_rand(N, C, S, b->layout, b->strided, &rng);
  const nk_ref_chshape tdy = ch_geom_rand(N, C, S, b->layout, b->strided, &rng);
  const nk_ref_chshape tdx = ch_geom_rand(N, C, S, b->layout, b->strided, &rng);
  const size_t T = N * C * S;
  void *x = ch_alloc(&tx, dt, 1), *dy = ch_alloc(&tdy, dt, 1), *y = ch_alloc(&ty, dt, 0);
  void *dx = ch_alloc(&tdx, dt, 0);
  void *gamma = nk_t_alloc(C * ps), *beta = nk_t_alloc(C * ps), *dg = nk_t_alloc(C * ps),
       *db = nk_t_alloc(C * ps);
  float *mean = nk_t_alloc(NG * 4), *rstd = nk_t_alloc(NG * 4), *rm = nk_t_alloc(C * 4),
        *rv = nk_t_alloc(C * 4), *rm0 = nk_t_alloc(C * 4), *rv0 = nk_t_alloc(C * 4);
  double *xr = nk_t_alloc(T * 8), *yr = nk_t_alloc(T * 8), *dyr = nk_t_alloc(T * 8),
         *dxr = nk_t_alloc(T * 8), *gr = nk_t_alloc(C * 8), *br = nk_t_alloc(C * 8),
         *mr = nk_t_alloc(NG * 8), *rr = nk_t_alloc(NG * 8), *mu = nk_t_alloc(NG * 8),
         *var = nk_t_alloc(NG * 8), *scale = nk_t_alloc(NG * 8), *rmr = nk_t_alloc(C * 8),
         *rvr = nk_t_alloc(C * 8), *dgr = nk_t_alloc(C * 8), *dbr = nk_t_alloc(C * 8);
  void *snap_y = ch_snapshot(y, ch_span(&ty) * es), *snap_dx = ch_snapshot(dx, ch_span(&tdx) * es);
  void *ws = NULL;
  NK_REQUIRE(x && dy && y && dx && gamma && beta && dg && db && mean && rstd && rm && rv && rm0 &&
                 rv0 && xr && yr && dyr && dxr && gr && br && mr && rr && mu && var && scale &&
                 rmr && rvr && dgr && dbr && snap_y && snap_dx,
             "%s: allocation", what);
  for (size_t c = 0; c < C; c++) {
    nk_t_set(gamma, c, 1.0 + 0.5 * nk_rng_normal(&rng), pdt);
    nk_t_set(beta, c, 0.5 * nk_rng_normal(&rng), pdt);
    gr[c] = nk_t_get(gamma, c, pdt);
    br[c] = nk_t_get(beta, c, pdt);
    rm[c] = (float)(0.2 * nk_rng_normal(&rng) + 0.25 * (double)c);
    rv[c] = (float)(0.5 + nk_rng_uniform(&rng));
  }
  const void *Gm = b->gamma ? gamma : NULL, *Bt = b->beta ? beta : NULL;
  const double *Gr = b->gamma ? gr : NULL, *Br = b->beta ? br : NULL;
  nk_chnorm_desc d = nk_chnorm_desc_dense(N, C, S, b->layout, dt, b->eps);
  d.param_dtype = pdt;
  d.groups = b->instance ? 1 : G; /* InstanceNorm ignores groups */
  d.momentum = b->momentum;
  d.flags = training ? NK_CHNORM_TRAINING : 0u;
  ch_strides(&tx, &d.x_n_stride, &d.x_row_stride);
  ch_strides(&ty, &d.y_n_stride, &d.y_row_stride);
  ch_strides(&tdy, &d.dy_n_stride, &d.dy_row_stride);
  ch_strides(&tdx, &d.dx_n_stride, &d.dx_row_stride);
  float *RM = running ? rm : NULL, *RV = running ? rv : NULL;

  for (int step = 0; step < b->steps; step++) {
    for (size_t a = 0; a < N; a++)
      for (size_t c = 0; c < C; c++)
        for (size_t s = 0; s < S; s++)
          ch_put(x, &tx, dt, a, c, s, ch_sample(&rng, class_of(b, a, c / cg), c) + 0.1 * step);
    ch_to_ref(x, &tx, dt, &tr, xr);
    memcpy(rm0, rm, C * 4);
    memcpy(rv0, rv, C * 4);
    nk_status st = b->instance
                       ? nk_instancenorm_fwd(b->ctx, &d, x, Gm, Bt, RM, RV, y, mean, rstd)
                       : nk_groupnorm_fwd(b->ctx, &d, x, Gm, Bt, y, mean, rstd);
    NK_REQUIRE(st == NK_STATUS_OK, "%s: fwd status %s: %s", what, nk_status_string(st),
               nk_context_message(b->ctx));
    for (size_t c = 0; c < C; c++) rmr[c] = rm0[c], rvr[c] = rv0[c];
    if (b->instance)
      nk_ref_instancenorm_fwd(&tr, xr, Gr, Br, b->eps, training, b->momentum,
                              running ? rmr : NULL, running ? rvr : NULL, yr, mr, rr);
    else
      nk_ref_groupnorm_fwd(&tr, G, xr, Gr, Br, b->eps, yr, mr, rr);
    nk_ref_group_stats(&tr, G, xr, mu, var);
    ch_set_absmax(&tr, yr, NULL, G, scale);
    const int wide = dt == NK_DTYPE_F32;
    char wy[240];
    snprintf(wy, sizeof wy, "%s step %d: y", what, step);
    ch_compare(wy, &ty, dt, y, &tr, yr, G, scale, wide || b->beta ? 2e-6 : 0.0, !wide, 0.0);
    for (size_t a = 0; a < N; a++)
      for (size_t c = 0; c < C; c++) {
        const enum ch_input k = class_of(b, a, c / cg);
        if ((k != CH_CONST && k != CH_ZERO) || use_running) continue;
        const double want = Br ? nk_t_round(Br[c], dt) : 0.0;
        for (size_t s = 0; s < S; s++)
          NK_CHECK(ch_get(y, &ty, dt, a, c, s) == want,
                   "%s: constant set (n %zu, c %zu) gives %.9g, not beta %.9g", what, a, c,
                   ch_get(y, &ty, dt, a, c, s), want);
      }
    for (size_t i = 0; i < NG; i++) {
      if (use_running) {
        NK_CHECK(memcmp(&mean[i], &rm0[i % C], 4) == 0 && ch_ratio(rstd[i], rr[i], ulp32(rr[i])) <= 1,
                 "%s: running-statistics mean/rstd[%zu] %.9g %.9g, want %.9g %.9g", what, i,
                 (double)mean[i], (double)rstd[i], (double)rm0[i % C], rr[i]);
        continue;
      }
      const double sd = sqrt(var[i]);
      NK_CHECK(ch_ratio(mean[i], mr[i], ulp32(mr[i]) + 1e-6 * sd) <= 1, "%s: mean[%zu] %.9g ref %.9g",
               what, i, (double)mean[i], mr[i]);
      NK_CHECK(ch_ratio(rstd[i], rr[i], 2e-6 * rr[i]) <= 1, "%s: rstd[%zu] %.9g ref %.9g", what, i,
               (double)rstd[i], rr[i]);
    }
    for (size_t c = 0; c < C; c++) {
      if (running && training) {
        const double m = b->momentum;
        double sdmax = 0, mmax = 0, vu = 0;
        for (size_t a = 0; a < N; a++) {
          sdmax = fmax(sdmax, sqrt(var[a * C + c]));
          mmax = fmax(mmax, fabs(mu[a * C + c]));
          vu += var[a * C + c] * (double)S / (double)(S - 1) / (double)N;
        }
        NK_CHECK(ch_ratio(rm[c], rmr[c], ulp32(rmr[c]) + m * (1e-6 * sdmax + ulp32(mmax))) <= 1,
                 "%s: step %d running_mean[%zu] %.9g ref %.9g", what, step, c, (double)rm[c], rmr[c]);
        NK_CHECK(ch_ratio32(rv[c], rvr[c], ulp32(rvr[c]) + 2e-6 * m * vu) <= 1,
                 "%s: step %d running_var[%zu] %.9g ref %.9g", what, step, c, (double)rv[c], rvr[c]);
      } else {
        NK_CHECK(memcmp(&rm[c], &rm0[c], 4) == 0 && memcmp(&rv[c], &rv0[c], 4) == 0,
                 "%s: running statistics of channel %zu changed", what, c);
      }
    }
  }

  /* ---- backward ---- */
  for (size_t a = 0; a < N; a++)
    for (size_t c = 0; c < C; c++)
      for (size_t s = 0; s < S; s++) ch_put(dy, &tdy, dt, a, c, s, nk_rng_normal(&rng));
  ch_to_ref(dy, &tdy, dt, &tr, dyr);
  size_t wsb = 0;
  nk_status st = b->instance ? nk_instancenorm_bwd_workspace_size(&d, &wsb)
                             : nk_groupnorm_bwd_workspace_size(&d, &wsb);
  NK_REQUIRE(st == NK_STATUS_OK, "%s: bwd workspace size", what);
  ws = nk_t_alloc(wsb);
  void *DG = b->gamma ? dg : NULL;
  st = b->instance ? nk_instancenorm_bwd(b->ctx, &d, use_running, x, Gm, mean, rstd, dy, dx, DG,
                                         db, ws, wsb)
                   : nk_groupnorm_bwd(b->ctx, &d, x, Gm, mean, rstd, dy, dx, DG, db, ws, wsb);
  NK_REQUIRE(st == NK_STATUS_OK, "%s: bwd status %s: %s", what, nk_status_string(st),
             nk_context_message(b->ctx));
  if (b->instance)
    nk_ref_instancenorm_bwd(&tr, use_running, xr, Gr, b->eps, mr, rr, dyr, dxr, dgr, dbr);
  else
    nk_ref_groupnorm_bwd(&tr, G, xr, Gr, b->eps, dyr, dxr, dgr, dbr);
  ch_set_absmax(&tr, dxr, NULL, G, scale);
  /* dx cancels (sets of two elements give dx ~ eps/var times its terms): the bound is relative
   * to the larger of max|dx| and the size of the terms, max|g dy| rstd max(1, max|xhat|) */
  for (size_t a = 0; a < N; a++)
    for (size_t g = 0; g < G; g++) {
      const size_t i = a * G + g;
      double gdy = 0, xm = 1;
      for (size_t c = g * cg; c < (g + 1) * cg; c++)
        for (size_t s = 0; s < S; s++) {
          const size_t k = nk_ref_chidx(&tr, a, c, s);
          gdy = fmax(gdy, fabs((Gr ? Gr[c] : 1.0) * dyr[k]));
          xm = fmax(xm, fabs((xr[k] - mr[i]) * rr[i]));
        }
      const double terms = gdy * rr[i] * xm;
      if (terms > scale[i]) scale[i] = terms;
    }
  const int wide = dt == NK_DTYPE_F32;
  char wdx[240];
  snprintf(wdx, sizeof wdx, "%s: dx", what);
  ch_compare(wdx, &tdx, dt, dx, &tr, dxr, G, scale, 2e-6, !wide, wide ? 4 * 0x1p-149 : 0.0);
  for (size_t c = 0; c < C; c++) {
    double sdy = 0, sxdy = 0;
    for (size_t a = 0; a < N; a++) {
      const size_t i = a * G + c / cg;
      double xm = 0, sd = 0;
      for (size_t s = 0; s < S; s++) {
        const size_t k = nk_ref_chidx(&tr, a, c, s);
        sd += fabs(dyr[k]);
        xm = fmax(xm, fabs((xr[k] - mr[i]) * rr[i]));
      }
      sdy += sd;
      sxdy += sd * xm;
    }
    if (b->gamma)
      NK_CHECK(ch_ratio(nk_t_get(dg, c, pdt), dgr[c], 4e-6 * sxdy + nk_t_ulp(dgr[c], pdt)) <= 1,
               "%s: dgamma[%zu] %.9g ref %.9g", what, c, nk_t_get(dg, c, pdt), dgr[c]);
    NK_CHECK(ch_ratio(nk_t_get(db, c, pdt), dbr[c], 4e-6 * sdy + nk_t_ulp(dbr[c], pdt)) <= 1,
             "%s: dbeta[%zu] %.9g ref %.9g", what, c, nk_t_get(db, c, pdt), dbr[c]);
  }
  NK_CHECK(ch_padding_kept(&ty, dt, y, snap_y), "%s: y padding written", what);
  NK_CHECK(ch_padding_kept(&tdx, dt, dx, snap_dx), "%s: dx padding written", what);
  free(x), free(dy), free(y), free(dx), free(gamma), free(beta), free(dg), free(db), free(mean);
  free(rstd), free(rm), free(rv), free(rm0), free(rv0), free(xr), free(yr), free(dyr), free(dxr);
  free(gr), free(br), free(mr), free(rr), free(mu), free(var), free(scale), free(rmr), free(rvr);
  free(dgr), free(dbr), free(snap_y), free(snap_dx), free(ws);
}

/* ---- GroupNorm scenarios ------------------------------------------------------------------- */

NK_TEST(groupnorm_shapes_layouts_dtypes) {
  /* {N, C, S, G}: one element per group up to whole samples; S and (C/G)*S around 1024 for
   * NCS, S around 32 rows for NSC */
  const size_t shapes[][4] = {{2, 6, 49, 1},  {2, 6, 49, 2},    {2, 6, 49, 3},   {2, 6, 49, 6},
                              {1, 4, 1023, 2}, {2, 8, 1025, 4}, {1, 2, 1024, 1}, {3, 1, 7, 1},
                              {4, 6, 1, 2},   {1, 2, 1, 2},     {1, 12, 31, 3},  {2, 64, 33, 32},
                              {3, 96, 17, 8}, {1, 5, 100, 5},   {1, 3, 3000, 1}};
  int k = 0;
  for (int lay = 0; lay < 2; lay++)
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
      for (int t = 0; t < 3; t++)
        for (int p = 0; p < 2; p++) {
          if (p && t == 0) continue;
          const size_t *sz = shapes[i];
          gn_cfg b = gn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, ch_dtypes[t], sz[0], sz[1], sz[2], sz[3]);
          b.pdt = p ? ch_dtypes[t] : NK_DTYPE_F32;
          b.strided = k % 2;
          b.gamma = k % 5 != 3;
          b.beta = k % 4 != 1;
          k++;
          run_gn(&b);
        }
}

NK_TEST(groupnorm_ill_conditioned_huge_tiny) {
  const enum ch_input ins[] = {CH_ILLCOND, CH_HUGE, CH_MAXISH, CH_TINY, CH_ZERO, CH_NEARMAX};
  for (int lay = 0; lay < 2; lay++)
    for (size_t i = 0; i < 6; i++)
      for (int t = 0; t < 2; t++) {
        if (t == 1 && (ins[i] == CH_ILLCOND || ins[i] == CH_MAXISH ||
                       ins[i] == CH_NEARMAX)) continue;
        gn_cfg b = gn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, ch_dtypes[t], 2, 8, lay ? 40 : 300, 4);
        b.in = ins[i];
        run_gn(&b);
        b.eps = 1e-30f;
        b.strided = 1;
        run_gn(&b);
      }
  for (int lay = 0; lay < 2; lay++) {
    gn_cfg b = gn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, NK_DTYPE_F32, 3, 12, 130, 6);
    b.mixed = 1;
    run_gn(&b);
  }
}

NK_TEST(groupnorm_constant_groups_give_beta) {
  for (int lay = 0; lay < 2; lay++)
    for (int t = 0; t < 3; t++) {
      gn_cfg b = gn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, ch_dtypes[t], 2, 6, 37, 3);
      b.in = CH_CONST;
      run_gn(&b);
      b.beta = 0;
      run_gn(&b);
      b.in = CH_ZERO;
      b.instance = 1;
      run_gn(&b);
    }
}

NK_TEST(groupnorm_threaded_pool) {
  nk_threadpool *pool = NULL;
  nk_context *ctx = NULL;
  NK_REQUIRE(nk_threadpool_create(3, &pool) == NK_STATUS_OK, "pool");
  NK_REQUIRE(nk_context_create(&ctx) == NK_STATUS_OK, "ctx");
  nk_context_set_threadpool(ctx, pool);
  for (int lay = 0; lay < 2; lay++)
    for (int inst = 0; inst < 2; inst++) {
      gn_cfg b = gn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, NK_DTYPE_F32, 5, 16, lay ? 300 : 1100, 4);
      b.ctx = ctx;
      b.strided = 1;
      b.instance = inst;
      b.mode = inst ? IN_TRAIN_RUNNING : 0;
      run_gn(&b);
    }
  nk_context_destroy(ctx);
  nk_threadpool_destroy(pool);
}

/* ---- InstanceNorm scenarios ---------------------------------------------------------------- */

NK_TEST(instancenorm_modes_layouts_dtypes) {
  const size_t shapes[][3] = {{2, 3, 49}, {1, 4, 1025}, {3, 17, 2}, {2, 5, 33}, {1, 1, 1023}};
  int k = 0;
  for (int lay = 0; lay < 2; lay++)
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
      for (int t = 0; t < 3; t++)
        for (int mode = 0; mode < 3; mode++) {
          const size_t *sz = shapes[i];
          gn_cfg b = gn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, ch_dtypes[t], sz[0], sz[1], sz[2], 1);
          b.instance = 1;
          b.mode = mode;
          b.train_flag = k % 2;
          b.pdt = k % 3 == 2 ? ch_dtypes[t] : NK_DTYPE_F32;
          b.strided = k % 2;
          b.gamma = k % 5 != 3;
          b.beta = k % 4 != 1;
          k++;
          run_gn(&b);
        }
}

NK_TEST(instancenorm_running_statistics_three_steps) {
  for (int lay = 0; lay < 2; lay++)
    for (int t = 0; t < 3; t++) {
      gn_cfg b = gn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, ch_dtypes[t], 3, 5, 41, 1);
      b.instance = 1;
      b.mode = IN_TRAIN_RUNNING;
      b.steps = 3;
      b.strided = t == 1;
      run_gn(&b);
      b.momentum = 1.0f;
      b.mixed = t == 0;
      run_gn(&b);
      b.momentum = 0.0f;
      run_gn(&b);
    }
}

NK_TEST(instancenorm_ill_conditioned_huge_tiny) {
  const enum ch_input ins[] = {CH_ILLCOND, CH_HUGE, CH_MAXISH, CH_TINY, CH_CONST, CH_NEARMAX};
  for (int lay = 0; lay < 2; lay++)
    for (size_t i = 0; i < 6; i++)
      for (int mode = 0; mode < 3; mode += 1) {
        if (mode == IN_INFER_RUNNING && (ins[i] == CH_MAXISH || ins[i] == CH_NEARMAX))
          continue; /* y would overflow */
        gn_cfg b = gn_base(lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, NK_DTYPE_F32, 2, 6, lay ? 40 : 500, 1);
        b.instance = 1;
        b.mode = mode;
        b.in = ins[i];
        run_gn(&b);
      }
}

/* Dense buffers for the edge-case scenarios. */
typedef struct gn_bufs {
  nk_chnorm_desc d;
  size_t T, bytes;
  void *x, *y, *dy, *dx, *ws;
  size_t wsb;
  float gamma[64], beta[64], mean[512], rstd[512], dg[64], db[64], rm[64], rv[64];
} gn_bufs;

static int gbufs_make(gn_bufs *q, int inst, size_t N, size_t C, size_t S, size_t G, nk_layout lay,
                      nk_dtype dt, uint64_t seed) {
  memset(q, 0, sizeof *q);
  q->d = nk_chnorm_desc_dense(N, C, S, lay, dt, 1e-5f);
  q->d.groups = G;
  q->T = N * C * S;
  q->bytes = q->T * nk_dtype_size(dt);
  q->x = nk_t_alloc(q->bytes), q->y = nk_t_alloc(q->bytes), q->dy = nk_t_alloc(q->bytes);
  q->dx = nk_t_alloc(q->bytes);
  if (inst)
    nk_instancenorm_bwd_workspace_size(&q->d, &q->wsb);
  else
    nk_groupnorm_bwd_workspace_size(&q->d, &q->wsb);
  q->ws = nk_t_alloc(q->wsb);
  nk_rng rng = {seed};
  for (size_t k = 0; k < q->T; k++) {
    nk_t_set(q->x, k, 1.0 + nk_rng_normal(&rng), dt);
    nk_t_set(q->dy, k, nk_rng_normal(&rng), dt);
  }
  for (size_t c = 0; c < C; c++) {
    q->gamma[c] = (float)(1 + 0.3 * nk_rng_normal(&rng));
    q->beta[c] = (float)(0.3 * nk_rng_normal(&rng));
    q->rm[c] = (float)(0.1 * nk_rng_normal(&rng));
    q->rv[c] = (float)(0.5 + nk_rng_uniform(&rng));
  }
  return q->x && q->y && q->dy && q->dx && q->ws;
}

static void gbufs_free(gn_bufs *q) { free(q->x), free(q->y), free(q->dy), free(q->dx), free(q->ws); }

static nk_status gn_fwd(int inst, gn_bufs *q, const void *x, void *y) {
  return inst ? nk_instancenorm_fwd(NULL, &q->d, x, q->gamma, q->beta, NULL, NULL, y, q->mean, q->rstd)
              : nk_groupnorm_fwd(NULL, &q->d, x, q->gamma, q->beta, y, q->mean, q->rstd);
}
static nk_status gn_bwd(int inst, gn_bufs *q, const void *x, const void *dy, void *dx, float *dg,
                        float *db) {
  return inst ? nk_instancenorm_bwd(NULL, &q->d, 0, x, q->gamma, q->mean, q->rstd, dy, dx, dg, db,
                                    q->ws, q->wsb)
              : nk_groupnorm_bwd(NULL, &q->d, x, q->gamma, q->mean, q->rstd, dy, dx, dg, db, q->ws,
                                 q->wsb);
}

/* NaN or inf in one (sample, group): that set's outputs and statistics are NaN; the other sets
 * keep the bits of the run without it. */
NK_TEST(nan_group_stays_in_its_group) {
  for (int inst = 0; inst < 2; inst++)
    for (int lay = 0; lay < 2; lay++)
      for (int t = 0; t < 3; t++) {
        const nk_dtype dt = ch_dtypes[t];
        const size_t N = 3, C = 6, S = 40, G = inst ? C : 3, cg = C / G, es = nk_dtype_size(dt);
        const nk_layout L = lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS;
        gn_bufs *a = malloc(sizeof *a), *q = malloc(sizeof *q);
        NK_REQUIRE(a && q && gbufs_make(a, inst, N, C, S, G, L, dt, 4) &&
                       gbufs_make(q, inst, N, C, S, G, L, dt, 4),
                   "alloc");
        const nk_ref_chshape tr = ch_dense(N, C, S, L);
        const size_t bn = 1, bc = 2; /* the poisoned element's sample and channel */
        nk_t_set(q->x, nk_ref_chidx(&tr, bn, bc, 17), t == 1 ? INFINITY : NAN, dt);
        NK_CHECK(gn_fwd(inst, a, a->x, a->y) == 0 && gn_fwd(inst, q, q->x, q->y) == 0, "fwd");
        NK_CHECK(gn_bwd(inst, a, a->x, a->dy, a->dx, a->dg, a->db) == 0 &&
                     gn_bwd(inst, q, q->x, q->dy, q->dx, q->dg, q->db) == 0, "bwd");
        for (size_t n = 0; n < N; n++)
          for (size_t c = 0; c < C; c++) {
            const int bad = n == bn && c / cg == bc / cg;
            for (size_t s = 0; s < S; s++) {
              const size_t k = nk_ref_chidx(&tr, n, c, s);
              if (bad)
                NK_CHECK(isnan(nk_t_get(q->y, k, dt)) && isnan(nk_t_get(q->dx, k, dt)),
                         "%s %s %s: NaN set (%zu,%zu,%zu) y %g dx %g", inst ? "in" : "gn",
                         nk_layout_name(L), nk_dtype_name(dt), n, c, s, nk_t_get(q->y, k, dt),
                         nk_t_get(q->dx, k, dt));
              else
                NK_CHECK(memcmp((char *)q->y + k * es, (char *)a->y + k * es, es) == 0 &&
                             memcmp((char *)q->dx + k * es, (char *)a->dx + k * es, es) == 0,
                         "%s %s %s: (%zu,%zu,%zu) changed by a NaN elsewhere", inst ? "in" : "gn",
                         nk_layout_name(L), nk_dtype_name(dt), n, c, s);
            }
          }
        for (size_t i = 0; i < N * G; i++) {
          const int bad = i == bn * G + bc / cg;
          NK_CHECK(bad ? isnan(q->mean[i]) && isnan(q->rstd[i])
                       : q->mean[i] == a->mean[i] && q->rstd[i] == a->rstd[i],
                   "%s %s %s: statistics[%zu] %g %g (poisoned set %zu)", inst ? "in" : "gn",
                   nk_layout_name(L), nk_dtype_name(dt), i, q->mean[i], q->rstd[i], bn * G + bc / cg);
        }
        for (size_t c = 0; c < C; c++) /* dgamma sums over samples: the poisoned set's channels */
          NK_CHECK(c / cg == bc / cg ? isnan(q->dg[c]) : q->dg[c] == a->dg[c], "%s %s %s: dgamma[%zu] %g",
                   inst ? "in" : "gn", nk_layout_name(L), nk_dtype_name(dt), c, q->dg[c]);
        gbufs_free(a), gbufs_free(q), free(a), free(q);
      }
}

/* y == x, dx == dy and dx == x give the bits of separate buffers. */
NK_TEST(inplace_matches_out_of_place) {
  for (int inst = 0; inst < 2; inst++)
    for (int lay = 0; lay < 2; lay++)
      for (int t = 0; t < 3; t++) {
        const nk_dtype dt = ch_dtypes[t];
        gn_bufs *q = malloc(sizeof *q);
        NK_REQUIRE(q && gbufs_make(q, inst, 2, 12, 77, 4, lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS, dt, 8),
                   "alloc");
        void *io = nk_t_alloc(q->bytes);
        float dg[64], db[64];
        NK_CHECK(gn_fwd(inst, q, q->x, q->y) == 0, "fwd");
        memcpy(io, q->x, q->bytes);
        NK_CHECK(gn_fwd(inst, q, io, io) == 0, "in-place fwd");
        NK_CHECK(memcmp(io, q->y, q->bytes) == 0, "%s %s: y == x differs", inst ? "in" : "gn",
                 nk_dtype_name(dt));
        NK_CHECK(gn_bwd(inst, q, q->x, q->dy, q->dx, q->dg, q->db) == 0, "bwd");
        memcpy(io, q->dy, q->bytes);
        NK_CHECK(gn_bwd(inst, q, q->x, io, io, dg, db) == 0, "in-place bwd dx == dy");
        NK_CHECK(memcmp(io, q->dx, q->bytes) == 0, "%s %s: dx == dy differs", inst ? "in" : "gn",
                 nk_dtype_name(dt));
        NK_CHECK(memcmp(dg, q->dg, 12 * 4) == 0 && memcmp(db, q->db, 12 * 4) == 0, "dgamma/dbeta");
        memcpy(io, q->x, q->bytes);
        NK_CHECK(gn_bwd(inst, q, io, q->dy, io, dg, db) == 0, "in-place bwd dx == x");
        NK_CHECK(memcmp(io, q->dx, q->bytes) == 0, "%s %s: dx == x differs", inst ? "in" : "gn",
                 nk_dtype_name(dt));
        free(io);
        gbufs_free(q);
        free(q);
      }
}

/* NK_CHNORM_ACCUMULATE adds to dgamma/dbeta. */
NK_TEST(accumulate_parameter_gradients) {
  for (int inst = 0; inst < 2; inst++) {
    gn_bufs *q = malloc(sizeof *q);
    NK_REQUIRE(q && gbufs_make(q, inst, 3, 8, 21, 2, NK_LAYOUT_NCS, NK_DTYPE_F32, 9), "alloc");
    float dg[64], db[64];
    NK_CHECK(gn_fwd(inst, q, q->x, q->y) == 0, "fwd");
    NK_CHECK(gn_bwd(inst, q, q->x, q->dy, q->dx, dg, db) == 0, "bwd");
    memcpy(q->dg, dg, sizeof dg), memcpy(q->db, db, sizeof db);
    q->d.flags = NK_CHNORM_ACCUMULATE;
    NK_CHECK(gn_bwd(inst, q, q->x, q->dy, q->dx, q->dg, q->db) == 0, "bwd accumulate");
    for (int c = 0; c < 8; c++)
      NK_CHECK(q->dg[c] == 2 * dg[c] && q->db[c] == 2 * db[c], "%s: accumulated [%d] %g %g vs %g %g",
               inst ? "in" : "gn", c, q->dg[c], q->db[c], 2 * dg[c], 2 * db[c]);
    gbufs_free(q);
    free(q);
  }
}

/* C % G != 0, G == 0, and InstanceNorm training with running statistics and S == 1 are invalid
 * and write nothing. */
NK_TEST(invalid_groups_and_single_spatial) {
  nk_context *ctx = NULL;
  nk_context_create(&ctx);
  gn_bufs *q = malloc(sizeof *q);
  NK_REQUIRE(q && gbufs_make(q, 0, 2, 6, 5, 4, NK_LAYOUT_NCS, NK_DTYPE_F32, 2), "alloc");
  memset(q->y, 0x5A, q->bytes);
  memset(q->dx, 0x5A, q->bytes);
  memset(q->mean, 0x5A, sizeof q->mean);
  const size_t bad_groups[] = {4, 0, 5, 12};
  for (int i = 0; i < 4; i++) {
    q->d.groups = bad_groups[i];
    nk_status st = nk_groupnorm_fwd(ctx, &q->d, q->x, NULL, NULL, q->y, q->mean, q->rstd);
    NK_CHECK(st == NK_STATUS_INVALID_ARGUMENT, "groups %zu of 6: %s", bad_groups[i], nk_status_string(st));
    NK_CHECK(nk_context_message(ctx)[0] != '\0', "no message for groups %zu", bad_groups[i]);
    st = nk_groupnorm_bwd(ctx, &q->d, q->x, NULL, q->mean, q->rstd, q->dy, q->dx, NULL, NULL, q->ws,
                          q->wsb);
    NK_CHECK(st == NK_STATUS_INVALID_ARGUMENT, "bwd groups %zu of 6: %s", bad_groups[i], nk_status_string(st));
  }
  for (size_t k = 0; k < q->bytes; k++)
    NK_CHECK(((unsigned char *)q->y)[k] == 0x5A && ((unsigned char *)q->dx)[k] == 0x5A, "written");
  for (size_t k = 0; k < sizeof q->mean; k++) NK_CHECK(((unsigned char *)q->mean)[k] == 0x5A, "mean written");
  gbufs_free(q);
  /* InstanceNorm, S == 1 */
  NK_REQUIRE(gbufs_make(q, 1, 4, 3, 1, 1, NK_LAYOUT_NSC, NK_DTYPE_F32, 2), "alloc");
  memset(q->y, 0x5A, q->bytes);
  float rm[64], rv[64];
  memcpy(rm, q->rm, sizeof rm), memcpy(rv, q->rv, sizeof rv);
  q->d.flags = NK_CHNORM_TRAINING;
  nk_status st = nk_instancenorm_fwd(ctx, &q->d, q->x, NULL, NULL, q->rm, q->rv, q->y, NULL, NULL);
  NK_CHECK(st == NK_STATUS_INVALID_ARGUMENT, "IN training + running, S == 1: %s", nk_status_string(st));
  NK_CHECK(memcmp(rm, q->rm, sizeof rm) == 0 && memcmp(rv, q->rv, sizeof rv) == 0, "running written");
  for (size_t k = 0; k < q->bytes; k++) NK_CHECK(((unsigned char *)q->y)[k] == 0x5A, "y written");
  /* without running buffers, S == 1 is fine: every instance is constant, y = beta */
  st = nk_instancenorm_fwd(ctx, &q->d, q->x, NULL, q->beta, NULL, NULL, q->y, NULL, NULL);
  NK_CHECK(st == NK_STATUS_OK, "IN S == 1 without running: %s", nk_status_string(st));
  for (size_t k = 0; k < q->T; k++)
    NK_CHECK(((float *)q->y)[k] == q->beta[k % 3], "IN S == 1: y[%zu] = %g, beta %g", k,
             ((float *)q->y)[k], q->beta[k % 3]);
  gbufs_free(q);
  free(q);
  nk_context_destroy(ctx);
}

int main(void) {
  NK_RUN_TIMED(groupnorm_shapes_layouts_dtypes);
  NK_RUN(groupnorm_ill_conditioned_huge_tiny);
  NK_RUN(groupnorm_constant_groups_give_beta);
  NK_RUN(groupnorm_threaded_pool);
  NK_RUN_TIMED(instancenorm_modes_layouts_dtypes);
  NK_RUN(instancenorm_running_statistics_three_steps);
  NK_RUN(instancenorm_ill_conditioned_huge_tiny);
  NK_RUN(nan_group_stays_in_its_group);
  NK_RUN(inplace_matches_out_of_place);
  NK_RUN(accumulate_parameter_gradients);
  NK_RUN(invalid_groups_and_single_spatial);
  return nk_test_summary();
}
