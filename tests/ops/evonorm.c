/*
 * evonorm.c — EvoNorm-B0 and EvoNorm-S0 (spec layers.md 6): forward and exact backward against
 * the float64 reference (NCHW/NHWC, strided, f32/bf16/f16, training and inference, B0's running
 * variance over a sequence of calls, S0's group adjustment, affine-only mode), the reference's
 * gradients against central finite differences, bitwise equality across ISAs and threads, bad
 * inputs and edge cases.
 */
#include "resnorm_util.h"

typedef struct evo_case {
  int kind; /* 0 B0, 1 S0 */
  nk_dtype dt;
  nk_layout layout;
  size_t N, C, S, G;
  int training, affine, strided, steps;
  enum ch_input input;
} evo_case;

static void evo_run(const evo_case *k, nk_context *ctx) {
  nk_rng rng = {0x5DEECE66Dull + k->C * 17 + k->S * 3 + (uint64_t)k->dt * 5 + (uint64_t)k->kind};
  const nk_ref_chshape tl = ch_geom_rand(k->N, k->C, k->S, k->layout, k->strided, &rng);
  const nk_ref_chshape tr = ch_dense(k->N, k->C, k->S, k->layout);
  const size_t C = k->C, n = ch_span(&tr), G = nk_evonorm_s0_groups(k->C, k->G);
  nk_evonorm_desc d = nk_chnorm_desc_dense(k->N, k->C, k->S, k->layout, k->dt, 1e-5f);
  d.groups = k->G;
  d.flags = (k->training ? NK_RESNORM_TRAINING : 0) | (k->affine ? NK_EVONORM_AFFINE_ONLY : 0);
  ch_strides(&tl, &d.x_n_stride, &d.x_row_stride);
  ch_strides(&tl, &d.y_n_stride, &d.y_row_stride);
  ch_strides(&tl, &d.dy_n_stride, &d.dy_row_stride);
  ch_strides(&tl, &d.dx_n_stride, &d.dx_row_stride);
  size_t wsz;
  NK_REQUIRE((k->kind ? nk_evonorm_s0_fwd_workspace_size : nk_evonorm_b0_fwd_workspace_size)(
                 &d, &wsz) == NK_STATUS_OK,
             "ws");
  void *ws = nk_t_alloc(wsz);
  void *x = ch_alloc(&tl, k->dt, 1), *y = ch_alloc(&tl, k->dt, 0), *dy = ch_alloc(&tl, k->dt, 1);
  void *dx = ch_alloc(&tl, k->dt, 0);
  float *gamma = malloc(C * 4), *beta = malloc(C * 4), *v = malloc(C * 4), *rv = malloc(C * 4);
  float *dg = malloc(C * 4), *db = malloc(C * 4), *dvv = malloc(C * 4);
  float *sb = malloc(3 * C * 4), *si = malloc(3 * k->N * C * 4), *sg = malloc(3 * k->N * G * 4 + 4);
  double *rx = malloc(n * 8), *rdy = malloc(n * 8), *ry = malloc(n * 8), *rdx = malloc(n * 8);
  double *rg = malloc(C * 8), *rb = malloc(C * 8), *rvv = malloc(C * 8), *rrv = malloc(C * 8);
  double *rdg = malloc(C * 8), *rdb = malloc(C * 8), *rdv = malloc(C * 8), *scale = malloc(C * 8);
  for (size_t c = 0; c < C; c++) {
    gamma[c] = (float)(1.0 + 0.3 * nk_rng_normal(&rng));
    beta[c] = (float)(0.2 * nk_rng_normal(&rng));
    v[c] = (float)(k->input == CH_ILLCOND ? 1.0 : 2.0 * nk_rng_uniform(&rng) - 1.0);
    rv[c] = (float)(0.5 + nk_rng_uniform(&rng));
    rg[c] = gamma[c], rb[c] = beta[c], rvv[c] = v[c], rrv[c] = rv[c];
  }
  for (int step = 0; step < k->steps; step++) {
    for (size_t a = 0; a < k->N; a++)
      for (size_t c = 0; c < C; c++)
        for (size_t s = 0; s < k->S; s++) {
          ch_put(x, &tl, k->dt, a, c, s, ch_sample(&rng, k->input, c) * (1.0 + 0.3 * step));
          ch_put(dy, &tl, k->dt, a, c, s, nk_rng_normal(&rng));
        }
    ch_to_ref(x, &tl, k->dt, &tr, rx);
    ch_to_ref(dy, &tl, k->dt, &tr, rdy);
    /* the backward of inference B0 uses the running variance the forward used */
    double *rv_used = malloc(C * 8);
    memcpy(rv_used, rrv, C * 8);
    nk_status st;
    if (k->kind == 0)
      st = nk_evonorm_b0_fwd(ctx, &d, x, gamma, beta, v, rv, y, sb, si, ws, wsz);
    else
      st = nk_evonorm_s0_fwd(ctx, &d, x, gamma, beta, v, y, sg, ws, wsz);
    NK_CHECK(st == NK_STATUS_OK, "fwd status %d", (int)st);
    nk_ref_evonorm_fwd(&tr, k->kind, G, k->training, k->affine, 1e-5, (double)0.1f, rx, rg, rb,
                       rvv, rrv, ry);
    ch_set_absmax(&tr, ry, NULL, 0, scale);
    ch_compare("y", &tl, k->dt, y, &tr, ry, 0, scale, 2e-6, k->dt != NK_DTYPE_F32, 0.0);
    if (k->kind == 0) vec_compare("running_var", C, rv, rrv, 1e-6, 0.0);
    if (k->kind == 0)
      st = nk_evonorm_b0_bwd(ctx, &d, x, gamma, v, sb, si, dy, dx, dg, db, dvv, ws, wsz);
    else
      st = nk_evonorm_s0_bwd(ctx, &d, x, gamma, v, sg, dy, dx, dg, db, dvv, ws, wsz);
    NK_CHECK(st == NK_STATUS_OK, "bwd status %d", (int)st);
    nk_ref_evonorm_bwd(&tr, k->kind, G, k->training, k->affine, 1e-5, rx, rg, rvv, rv_used, rdy,
                       rdx, rdg, rdb, rdv);
    ch_set_absmax(&tr, rdx, NULL, 0, scale);
    ch_compare("dx", &tl, k->dt, dx, &tr, rdx, 0, scale, 4e-6, k->dt != NK_DTYPE_F32, 0.0);
    vec_compare("dgamma", C, dg, rdg, 4e-6, 1e-6);
    vec_compare("dbeta", C, db, rdb, 2e-6, 1e-6);
    vec_compare("dv", C, dvv, rdv, 4e-6, 1e-6);
    free(rv_used);
  }
  free(ws), free(x), free(y), free(dy), free(dx), free(gamma), free(beta), free(v), free(rv);
  free(dg), free(db), free(dvv), free(sb), free(si), free(sg), free(rx), free(rdy), free(ry);
  free(rdx), free(rg), free(rb), free(rvv), free(rrv), free(rdg), free(rdb), free(rdv);
  free(scale);
}

NK_TEST(b0_training_matches_reference) {
  for (int di = 0; di < 3; di++)
    for (int l = 0; l < 2; l++) {
      evo_case k = {0, ch_dtypes[di], (nk_layout)l, 3, 6, 37, 0, 1, 0, 1, 3, CH_NORMAL};
      evo_run(&k, NULL);
    }
}

NK_TEST(b0_inference_matches_reference) {
  for (int l = 0; l < 2; l++) {
    evo_case k = {0, NK_DTYPE_F32, (nk_layout)l, 2, 5, 20, 0, 0, 0, 1, 1, CH_NORMAL};
    evo_run(&k, NULL);
  }
}

NK_TEST(s0_matches_reference) {
  for (int di = 0; di < 3; di++)
    for (int l = 0; l < 2; l++) {
      evo_case k = {1, ch_dtypes[di], (nk_layout)l, 2, 12, 30, 4, 0, 0, 1, 1, CH_NORMAL};
      evo_run(&k, NULL);
    }
}

NK_TEST(s0_group_adjustment_and_illconditioned) {
  /* C = 10, G = 4 -> 2 groups of 5 (official: decrease G until it divides C). */
  NK_CHECK(nk_evonorm_s0_groups(10, 4) == 2, "groups(10, 4)");
  NK_CHECK(nk_evonorm_s0_groups(64, 32) == 32 && nk_evonorm_s0_groups(3, 32) == 3, "groups");
  evo_case k = {1, NK_DTYPE_F32, NK_LAYOUT_NCS, 2, 10, 25, 4, 0, 0, 1, 1, CH_NORMAL};
  evo_run(&k, NULL);
  evo_case k2 = {1, NK_DTYPE_F32, NK_LAYOUT_NSC, 2, 8, 40, 2, 0, 0, 0, 1, CH_ILLCOND};
  evo_run(&k2, NULL);
}

NK_TEST(affine_only_mode) {
  for (int kind = 0; kind < 2; kind++) {
    evo_case k = {kind, NK_DTYPE_BF16, NK_LAYOUT_NSC, 2, 7, 9, 1, 1, 1, 1, 1, CH_NORMAL};
    evo_run(&k, NULL);
  }
}

NK_TEST(large_shapes_three_threads) {
  ch_ctx cc = ch_ctx_make(NK_ISA_AUTO, 3);
  evo_case k = {0, NK_DTYPE_F32, NK_LAYOUT_NCS, 2, 3, 5000, 0, 1, 0, 0, 1, CH_NORMAL};
  evo_run(&k, cc.ctx);
  evo_case k2 = {1, NK_DTYPE_F16, NK_LAYOUT_NSC, 2, 600, 9, 8, 0, 0, 1, 1, CH_NORMAL};
  evo_run(&k2, cc.ctx);
  ch_ctx_free(&cc);
}

/* The reference gradients (what the library is compared with) against central differences of
 * the reference forward, L = sum w * y: B0 training, B0 inference, S0. */
NK_TEST(reference_gradients_finite_differences) {
  for (int mode = 0; mode < 3; mode++) {
    const int kind = mode == 2, training = mode == 0;
    const nk_ref_chshape t = ch_dense(2, 4, 5, NK_LAYOUT_NCS);
    const size_t n = 40, C = 4, G = 2;
    nk_rng rng = {1234 + (uint64_t)mode};
    double x[40], w[40], yp[40], ym[40], dx[40], g[4], b[4], v[4], rv[4], dg[4], db[4],
        dv[4];
    for (size_t i = 0; i < n; i++) x[i] = nk_rng_normal(&rng) + 0.3, w[i] = nk_rng_normal(&rng);
    for (size_t c = 0; c < C; c++)
      g[c] = 1 + 0.2 * c, b[c] = 0.1, v[c] = 0.8 * nk_rng_normal(&rng), rv[c] = 0.7 + 0.1 * c;
    double rv0[4];
    memcpy(rv0, rv, sizeof rv);
    nk_ref_evonorm_bwd(&t, kind, G, training, 0, 1e-5, x, g, v, rv, w, dx, dg, db, dv);
    const double h = 1e-6;
    for (size_t i = 0; i < n; i++) {
      const double x0 = x[i];
      x[i] = x0 + h;
      memcpy(rv, rv0, sizeof rv);
      nk_ref_evonorm_fwd(&t, kind, G, training, 0, 1e-5, 0.0, x, g, b, v, rv, yp);
      x[i] = x0 - h;
      nk_ref_evonorm_fwd(&t, kind, G, training, 0, 1e-5, 0.0, x, g, b, v, rv, ym);
      x[i] = x0;
      double fd = 0.0;
      for (size_t j = 0; j < n; j++) fd += w[j] * (yp[j] - ym[j]) / (2 * h);
      NK_CHECK(fabs(fd - dx[i]) <= 1e-6 * (1 + fabs(fd)), "mode %d dx[%zu] %.10g vs fd %.10g",
               mode, i, dx[i], fd);
    }
    for (size_t c = 0; c < C; c++) {
      const double v0 = v[c], g0 = g[c];
      double fdv = 0.0, fdg = 0.0;
      v[c] = v0 + h;
      nk_ref_evonorm_fwd(&t, kind, G, training, 0, 1e-5, 0.0, x, g, b, v, rv, yp);
      v[c] = v0 - h;
      nk_ref_evonorm_fwd(&t, kind, G, training, 0, 1e-5, 0.0, x, g, b, v, rv, ym);
      v[c] = v0;
      for (size_t j = 0; j < n; j++) fdv += w[j] * (yp[j] - ym[j]) / (2 * h);
      g[c] = g0 + h;
      nk_ref_evonorm_fwd(&t, kind, G, training, 0, 1e-5, 0.0, x, g, b, v, rv, yp);
      g[c] = g0 - h;
      nk_ref_evonorm_fwd(&t, kind, G, training, 0, 1e-5, 0.0, x, g, b, v, rv, ym);
      g[c] = g0;
      for (size_t j = 0; j < n; j++) fdg += w[j] * (yp[j] - ym[j]) / (2 * h);
      NK_CHECK(fabs(fdv - dv[c]) <= 1e-6 * (1 + fabs(fdv)), "mode %d dv[%zu]", mode, c);
      NK_CHECK(fabs(fdg - dg[c]) <= 1e-6 * (1 + fabs(fdg)), "mode %d dgamma[%zu]", mode, c);
    }
  }
}

NK_TEST(bitwise_across_isas_and_threads) {
  for (int kind = 0; kind < 2; kind++)
    for (int l = 0; l < 2; l++) {
      const size_t N = 3, C = 40, S = 150, total = N * C * S;
      nk_evonorm_desc d = nk_chnorm_desc_dense(N, C, S, (nk_layout)l, NK_DTYPE_F32, 1e-5f);
      d.groups = 8;
      d.flags = NK_RESNORM_TRAINING;
      size_t wsz;
      nk_evonorm_b0_fwd_workspace_size(&d, &wsz);
      void *ws = nk_t_alloc(wsz);
      float *x = malloc(total * 4), *dy = malloc(total * 4), *out[2], *gx[2];
      out[0] = malloc(total * 4), out[1] = malloc(total * 4), gx[0] = malloc(total * 4),
      gx[1] = malloc(total * 4);
      nk_rng rng = {55 + (uint64_t)(kind * 2 + l)};
      for (size_t i = 0; i < total; i++)
        x[i] = (float)(nk_rng_normal(&rng) + 0.5), dy[i] = (float)nk_rng_normal(&rng);
      float v[40], pg[2][3 * 40], rv[2][40];
      for (size_t c = 0; c < C; c++) v[c] = (float)(0.5 - 0.02 * c);
      int first = 1, ran = 0;
      for (int ii = 0; ii < 3; ii++)
        for (size_t th = 1; th <= 3; th++) {
          ch_ctx cc = ch_ctx_make(rn_isas[ii], th);
          if (cc.ctx == NULL) continue;
          ran++;
          const int o = first ? 0 : 1;
          float sb[120], si[3 * 120], sg[3 * 24];
          for (size_t c = 0; c < C; c++) rv[o][c] = 1.0f;
          if (kind == 0) {
            nk_evonorm_b0_fwd(cc.ctx, &d, x, NULL, NULL, v, rv[o], out[o], sb, si, ws, wsz);
            nk_evonorm_b0_bwd(cc.ctx, &d, x, NULL, v, sb, si, dy, gx[o], pg[o], pg[o] + 40,
                              pg[o] + 80, ws, wsz);
          } else {
            nk_evonorm_s0_fwd(cc.ctx, &d, x, NULL, NULL, v, out[o], sg, ws, wsz);
            nk_evonorm_s0_bwd(cc.ctx, &d, x, NULL, v, sg, dy, gx[o], pg[o], pg[o] + 40,
                              pg[o] + 80, ws, wsz);
          }
          if (!first) {
            NK_CHECK(memcmp(out[0], out[1], total * 4) == 0, "kind %d layout %d: y isa %d th %zu",
                     kind, l, ii, th);
            NK_CHECK(memcmp(gx[0], gx[1], total * 4) == 0, "dx differs isa %d th %zu", ii, th);
            NK_CHECK(memcmp(pg[0], pg[1], sizeof pg[0]) == 0, "param grads differ");
            NK_CHECK(memcmp(rv[0], rv[1], sizeof rv[0]) == 0, "running var differs");
          }
          first = 0;
          ch_ctx_free(&cc);
        }
      NK_CHECK(ran >= 3, "ran %d", ran);
      free(ws), free(x), free(dy), free(out[0]), free(out[1]), free(gx[0]), free(gx[1]);
    }
}

NK_TEST(bad_inputs) {
  nk_evonorm_desc d = nk_chnorm_desc_dense(2, 4, 3, NK_LAYOUT_NCS, NK_DTYPE_F32, 1e-5f);
  d.groups = 2;
  d.flags = NK_RESNORM_TRAINING;
  size_t wsz;
  nk_evonorm_b0_fwd_workspace_size(&d, &wsz);
  void *ws = nk_t_alloc(wsz);
  float x[24] = {0}, y[24], dx[24], rv[4] = {1, 1, 1, 1}, sb[12], si[24], sg[12], v[4] = {1, 1, 1, 1};
  const nk_status INV = NK_STATUS_INVALID_ARGUMENT;
  NK_CHECK(nk_evonorm_b0_fwd(NULL, NULL, x, NULL, NULL, NULL, rv, y, sb, si, ws, wsz) == INV,
           "NULL desc");
  NK_CHECK(nk_evonorm_b0_fwd(NULL, &d, NULL, NULL, NULL, NULL, rv, y, sb, si, ws, wsz) == INV,
           "NULL x");
  NK_CHECK(nk_evonorm_b0_fwd(NULL, &d, x, NULL, NULL, NULL, rv, x + 1, sb, si, ws, wsz) == INV,
           "partial overlap");
  NK_CHECK(nk_evonorm_b0_fwd(NULL, &d, x, NULL, NULL, NULL, rv, y, sb, si, ws, 16) ==
               NK_STATUS_MISUSE,
           "workspace");
  NK_CHECK(nk_evonorm_b0_fwd(NULL, &d, x, NULL, NULL, v, rv, y, sb, v, ws, wsz) == INV,
           "save_i overlapping v");
  nk_evonorm_desc b = d;
  b.flags = 0;
  NK_CHECK(nk_evonorm_b0_fwd(NULL, &b, x, NULL, NULL, NULL, NULL, y, sb, si, ws, wsz) == INV,
           "inference without running_var");
  b = d, b.layout = (nk_layout)5;
  NK_CHECK(nk_evonorm_b0_fwd(NULL, &b, x, NULL, NULL, NULL, rv, y, sb, si, ws, wsz) == INV,
           "bad layout");
  b = d, b.eps = 0.0f;
  NK_CHECK(nk_evonorm_b0_fwd(NULL, &b, x, NULL, NULL, NULL, rv, y, sb, si, ws, wsz) == INV,
           "eps 0");
  b = d, b.momentum = 2.0f;
  NK_CHECK(nk_evonorm_b0_fwd(NULL, &b, x, NULL, NULL, NULL, rv, y, sb, si, ws, wsz) == INV,
           "momentum");
  b = d, b.flags = NK_CHNORM_RELU;
  NK_CHECK(nk_evonorm_b0_fwd(NULL, &b, x, NULL, NULL, NULL, rv, y, sb, si, ws, wsz) == INV,
           "BatchNorm-only flag");
  b = d, b.dtype = NK_DTYPE_BF16, b.param_dtype = NK_DTYPE_F16;
  NK_CHECK(nk_evonorm_b0_fwd(NULL, &b, x, NULL, NULL, NULL, rv, y, sb, si, ws, wsz) ==
               NK_STATUS_UNSUPPORTED,
           "dtypes");
  b = d, b.groups = 0;
  NK_CHECK(nk_evonorm_s0_fwd(NULL, &b, x, NULL, NULL, NULL, y, sg, ws, wsz) == INV, "groups 0");
  b = d, b.x_row_stride = 2;
  NK_CHECK(nk_evonorm_s0_fwd(NULL, &b, x, NULL, NULL, NULL, y, sg, ws, wsz) == INV, "stride");
  NK_CHECK(nk_evonorm_b0_bwd(NULL, &d, x, NULL, NULL, NULL, si, x, dx, NULL, NULL, NULL, ws,
                             wsz) == INV,
           "NULL save_b");
  NK_CHECK(nk_evonorm_s0_bwd(NULL, &d, x, NULL, NULL, NULL, x, dx, NULL, NULL, NULL, ws, wsz) ==
               INV,
           "NULL save_g");
  NK_CHECK(nk_evonorm_s0_fwd(NULL, &d, x, NULL, NULL, NULL, y, sg, ws, wsz) == NK_STATUS_OK,
           "valid S0");
  NK_CHECK(nk_evonorm_s0_bwd(NULL, &d, x, NULL, NULL, sg, x, dx, sg, NULL, NULL, ws, wsz) == INV,
           "dgamma overlapping save_g");
  free(ws);
}

NK_TEST(edge_cases) {
  const size_t N = 2, C = 4, S = 6, total = N * C * S;
  nk_evonorm_desc d = nk_chnorm_desc_dense(N, C, S, NK_LAYOUT_NCS, NK_DTYPE_F32, 1e-5f);
  d.groups = 2;
  d.flags = NK_RESNORM_TRAINING;
  size_t wsz;
  nk_evonorm_b0_fwd_workspace_size(&d, &wsz);
  void *ws = nk_t_alloc(wsz);
  float x[48], y[48], y2[48], dy[48], dx[48], rv[4] = {1, 1, 1, 1}, sb[12], si[24], sg[12];
  nk_evonorm_desc e = d;
  e.spatial = 0;
  NK_CHECK(nk_evonorm_b0_fwd(NULL, &e, NULL, NULL, NULL, NULL, rv, NULL, NULL, NULL, NULL, 0) ==
               NK_STATUS_OK,
           "empty");
  NK_CHECK(rv[0] == 1.0f, "empty touched the running variance");
  /* S0: constant group (n 0, channels 0-1) -> s_g = sqrt(eps), finite outputs and gradients;
   * NaN in (n 1, c 3) stays in its group. */
  nk_rng rng = {3};
  for (size_t i = 0; i < total; i++) x[i] = (float)nk_rng_normal(&rng), dy[i] = 1.0f;
  for (size_t i = 0; i < 2 * S; i++) x[i] = 2.5f;
  x[(1 * C + 3) * S + 2] = NAN;
  NK_CHECK(nk_evonorm_s0_fwd(NULL, &d, x, NULL, NULL, NULL, y, sg, ws, wsz) == NK_STATUS_OK, "s0");
  NK_CHECK(nk_evonorm_s0_bwd(NULL, &d, x, NULL, NULL, sg, dy, dx, NULL, NULL, NULL, ws, wsz) ==
               NK_STATUS_OK,
           "s0 bwd");
  for (size_t nn = 0; nn < N; nn++)
    for (size_t c = 0; c < C; c++)
      for (size_t s = 0; s < S; s++) {
        const size_t i = (nn * C + c) * S + s;
        const int nan_group = nn == 1 && c >= 2;
        NK_CHECK(isnan(y[i]) == nan_group && isnan(dx[i]) == nan_group,
                 "S0 n %zu c %zu: NaN must stay in its group", nn, c);
      }
  NK_CHECK(fabsf(sg[2] - sqrtf(1e-5f)) < 1e-8f, "constant group std = sqrt(eps)");
  /* B0: NaN in (n 1, c 3) -> channel 3 (batch statistics) is NaN, the others are finite. */
  NK_CHECK(nk_evonorm_b0_fwd(NULL, &d, x, NULL, NULL, NULL, rv, y, sb, si, ws, wsz) ==
               NK_STATUS_OK,
           "b0");
  for (size_t nn = 0; nn < N; nn++)
    for (size_t c = 0; c < C; c++)
      for (size_t s = 0; s < S; s++) {
        const size_t i = (nn * C + c) * S + s;
        NK_CHECK(isnan(y[i]) == (c == 3), "B0 NaN confined to channel 3 (n %zu c %zu)", nn, c);
      }
  NK_CHECK(isnan(rv[3]) && isfinite(rv[0]) && isfinite(rv[2]), "running var NaN only in c 3");
  /* In place (y == x, dx == dy) equals out of place. */
  for (size_t i = 0; i < total; i++) x[i] = (float)nk_rng_normal(&rng), dy[i] = (float)nk_rng_normal(&rng);
  NK_CHECK(nk_evonorm_s0_fwd(NULL, &d, x, NULL, NULL, NULL, y, sg, ws, wsz) == NK_STATUS_OK, "s0");
  NK_CHECK(nk_evonorm_s0_bwd(NULL, &d, x, NULL, NULL, sg, dy, dx, NULL, NULL, NULL, ws, wsz) ==
               NK_STATUS_OK,
           "s0 bwd");
  memcpy(y2, dy, sizeof dy);
  NK_CHECK(nk_evonorm_s0_bwd(NULL, &d, x, NULL, NULL, sg, y2, y2, NULL, NULL, NULL, ws, wsz) ==
               NK_STATUS_OK,
           "s0 bwd in place");
  NK_CHECK(memcmp(dx, y2, sizeof dx) == 0, "in-place backward differs");
  memcpy(y2, x, sizeof x);
  NK_CHECK(nk_evonorm_s0_fwd(NULL, &d, y2, NULL, NULL, NULL, y2, sg, ws, wsz) == NK_STATUS_OK,
           "s0 in place");
  NK_CHECK(memcmp(y, y2, sizeof y) == 0, "in-place forward differs");
  free(ws);
}

NK_TEST(accumulate) {
  nk_evonorm_desc d = nk_chnorm_desc_dense(2, 3, 4, NK_LAYOUT_NSC, NK_DTYPE_F32, 1e-5f);
  d.flags = NK_RESNORM_TRAINING;
  size_t wsz;
  nk_evonorm_b0_fwd_workspace_size(&d, &wsz);
  void *ws = nk_t_alloc(wsz);
  float x[24], y[24], dy[24], dx[24], rv[3] = {1, 1, 1}, sb[9], si[18], g1[9], g2[9];
  for (int i = 0; i < 24; i++) x[i] = (float)((i * 7) % 11) - 5.0f, dy[i] = (float)(i % 4) - 1.5f;
  nk_evonorm_b0_fwd(NULL, &d, x, NULL, NULL, NULL, rv, y, sb, si, ws, wsz);
  nk_evonorm_b0_bwd(NULL, &d, x, NULL, NULL, sb, si, dy, dx, g1, g1 + 3, g1 + 6, ws, wsz);
  for (int i = 0; i < 9; i++) g2[i] = 1.0f;
  d.flags |= NK_RESNORM_ACCUMULATE;
  nk_evonorm_b0_bwd(NULL, &d, x, NULL, NULL, sb, si, dy, dx, g2, g2 + 3, g2 + 6, ws, wsz);
  for (int i = 0; i < 9; i++) NK_CHECK(g2[i] == g1[i] + 1.0f, "accumulate %d", i);
  free(ws);
}

int main(void) {
  NK_RUN(b0_training_matches_reference);
  NK_RUN(b0_inference_matches_reference);
  NK_RUN(s0_matches_reference);
  NK_RUN(s0_group_adjustment_and_illconditioned);
  NK_RUN(affine_only_mode);
  NK_RUN(large_shapes_three_threads);
  NK_RUN(reference_gradients_finite_differences);
  NK_RUN(bitwise_across_isas_and_threads);
  NK_RUN(bad_inputs);
  NK_RUN(edge_cases);
  NK_RUN(accumulate);
  return nk_test_summary();
}
