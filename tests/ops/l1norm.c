/*
 * tests/ops/l1norm.c — L1 LayerNorm (nk_l1norm_*) by scenario: against the float64 reference
 * for f32/bf16/f16 (forward, dx, dgamma, dbeta), bitwise equality over ISAs and 1-3 threads
 * (rowvar_common.h), finite differences of the reference backward, the Gaussian calibration of
 * the constant sqrt(pi/2), edge cases and bad-input statuses.
 */
#include "rowvar_common.h"

static rv_cfg base(nk_dtype dt, size_t rows, size_t cols, uint64_t seed) {
  rv_cfg c;
  memset(&c, 0, sizeof c);
  c.is_l1 = 1;
  c.dt = dt;
  c.pdt = NK_DTYPE_F32;
  c.rows = rows;
  c.cols = cols;
  c.eps = 1e-5f;
  c.in = IN_NORMAL;
  c.seed = seed;
  c.check_ref = 1;
  return c;
}

NK_TEST(sizes_dtypes_affine_against_reference_and_across_isas_threads) {
  static const size_t cols[] = {1, 2, 7, 16, 63, 64, 65, 130, 1000, 1024, 1025, 2100};
  const nk_dtype dts[3] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};
  uint64_t seed = 1;
  for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++)
    for (int di = 0; di < 3; di++) {
      rv_cfg c = base(dts[di], cols[ci] > 1000 ? 5 : 11, cols[ci], seed++);
      c.gamma = (seed % 4) != 0;
      c.beta = (seed % 3) != 0;
      c.offset = c.gamma && (seed % 5) == 0;
      c.pdt = (seed % 2) ? NK_DTYPE_F32 : c.dt;
      c.lns = (seed % 2) ? 0.0f : 0.57735027f;
      c.dh = (seed % 3) == 0;
      c.accumulate = (seed % 4) == 1;
      c.pad = (seed % 4) == 2 ? 5 : 0;
      if (!rv_check(&c)) return;
    }
}

NK_TEST(input_classes) {
  const enum in_class ins[] = {IN_ILLCOND, IN_CONST, IN_HUGE, IN_TINY, IN_ZERO};
  for (size_t ii = 0; ii < sizeof ins / sizeof ins[0]; ii++) {
    rv_cfg c = base(NK_DTYPE_F32, 6, 300, 200 + ii);
    c.in = ins[ii];
    c.gamma = c.beta = 1;
    c.lns = 0.5f;
    if (!rv_check(&c)) return;
    c.dt = c.pdt = NK_DTYPE_BF16;
    if (ins[ii] == IN_ILLCOND || ins[ii] == IN_HUGE || ins[ii] == IN_TINY) continue; /* bf16 cannot hold them usefully */
    if (!rv_check(&c)) return;
    /* constant rows: dx = (gh - mean gh) / eps overflows f16 (eps = 1e-5) */
    if (ins[ii] == IN_CONST || ins[ii] == IN_ZERO) continue;
    c.dt = c.pdt = NK_DTYPE_F16;
    if (!rv_check(&c)) return;
  }
}

/* Rows of f32 subnormal data: the f32 path's mean low part sat on the subnormal grid (y up to
 * 2^-150 rscale off, signs flipped in the backward); such rows take the double routine
 * (nk__l1_tiny_mean). eps 2^-23 and 1e-12 make rscale large enough to show the old error. */
NK_TEST(subnormal_rows) {
  for (int e = 0; e < 2; e++) {
    rv_cfg c = base(NK_DTYPE_F32, 6, e ? 2 : 300, 400 + (uint64_t)e);
    c.in = IN_SUBNORMAL;
    c.eps = e ? 1e-12f : 0x1p-23f;
    c.gamma = 1; /* no beta: the bound is then relative to xhat's own scale */
    c.lns = e ? 1.0f : 0.0f;
    if (!rv_check(&c)) return;
  }
}

NK_TEST(special_rows) {
  rv_cfg c = base(NK_DTYPE_F32, 10, 200, 7);
  c.in = IN_SPECIAL;
  c.check_ref = 0;
  c.gamma = c.beta = c.dh = 1;
  NK_REQUIRE(rv_check(&c), "consistency");
  c.dt = NK_DTYPE_F16;
  NK_REQUIRE(rv_check(&c), "consistency f16");
  const size_t R = 4, C = 33;
  float x[4 * 33], y[4 * 33], m[4], rs[4], dy[4 * 33], dx[4 * 33], beta[33], dg[33], db[33];
  nk_rng rng = {9};
  for (size_t i = 0; i < R * C; i++) x[i] = (float)nk_rng_normal(&rng), dy[i] = (float)nk_rng_normal(&rng);
  for (size_t i = 0; i < C; i++) beta[i] = 0.1f * (float)i, x[2 * C + i] = 3.5f;
  x[1 * C + 4] = NAN;
  nk_norm_desc d = nk_norm_desc_dense(R, C, NK_DTYPE_F32, 1e-5f);
  size_t ws = 0;
  NK_REQUIRE(nk_l1norm_bwd_workspace_size(&d, &ws) == NK_OK, "ws");
  void *w = nk_t_alloc(ws);
  NK_REQUIRE(nk_l1norm_fwd(NULL, &d, x, NULL, beta, y, m, rs) == NK_OK, "fwd");
  NK_REQUIRE(nk_l1norm_bwd(NULL, &d, x, NULL, m, rs, dy, NULL, dx, dg, db, w, ws) == NK_OK, "bwd");
  for (size_t i = 0; i < C; i++) {
    NK_CHECK(isnan(y[C + i]) && isnan(dx[C + i]), "NaN row");
    NK_CHECK(y[2 * C + i] == beta[i], "constant row gives beta: %g", y[2 * C + i]);
    NK_CHECK(isfinite(dx[2 * C + i]) && isfinite(dx[i]) && isfinite(dx[3 * C + i]), "finite dx");
    NK_CHECK(isnan(dg[i]) && !isnan(db[i]), "dgamma NaN (a NaN row), dbeta finite");
  }
  NK_CHECK(m[2] == 3.5f && rs[2] == 1e5f, "constant row statistics %g %g", m[2], rs[2]);
  free(w);
}

/* For Gaussian rows, C1 * mean|x - mu| estimates sigma: an L1-normalized Gaussian row has
 * (nearly) unit RMS, like LayerNorm's. */
NK_TEST(gaussian_calibration_of_the_constant) {
  const size_t C = 1 << 16;
  float *x = malloc(C * sizeof(float)), *y = malloc(C * sizeof(float));
  nk_rng rng = {17};
  for (size_t i = 0; i < C; i++) x[i] = (float)(3.0 + 2.5 * nk_rng_normal(&rng));
  nk_norm_desc d = nk_norm_desc_dense(1, C, NK_DTYPE_F32, 1e-5f);
  float rs;
  NK_REQUIRE(nk_l1norm_fwd(NULL, &d, x, NULL, NULL, y, NULL, &rs) == NK_OK, "fwd");
  double q = 0.0;
  for (size_t i = 0; i < C; i++) q += (double)y[i] * y[i];
  NK_CHECK(fabs(sqrt(q / C) - 1.0) < 0.01, "rms of the normalized row %g", sqrt(q / C));
  NK_CHECK(fabs(1.0 / rs - 2.5) < 0.03, "scale %g vs sigma 2.5", 1.0 / rs);
  free(x), free(y);
}

NK_TEST(finite_differences_of_the_reference) {
  const size_t R = 3, C = 8;
  double x[24], dy[24], dx[24], y0[24], y1[24], xp[24], g[8], b[8], dg[8], db[8];
  nk_rng rng = {23};
  for (size_t i = 0; i < R * C; i++) x[i] = nk_rng_normal(&rng), dy[i] = nk_rng_normal(&rng);
  for (size_t i = 0; i < C; i++) g[i] = 1.0 + 0.3 * nk_rng_normal(&rng), b[i] = nk_rng_normal(&rng);
  const double s = 0.57735, h = 1e-6;
  nk_ref_l1norm_bwd(R, C, x, g, 0, 1e-5, s, dy, dx, dg, db);
  double worst = 0.0;
  for (size_t j = 0; j < R * C; j++) {
    memcpy(xp, x, sizeof x);
    xp[j] = x[j] + h;
    nk_ref_l1norm_fwd(R, C, xp, g, b, 0, 1e-5, s, y1, NULL, NULL);
    xp[j] = x[j] - h;
    nk_ref_l1norm_fwd(R, C, xp, g, b, 0, 1e-5, s, y0, NULL, NULL);
    double fd = 0.0;
    for (size_t i = 0; i < R * C; i++) fd += dy[i] * (y1[i] - y0[i]) / (2 * h);
    worst = fmax(worst, fabs(fd - dx[j]));
  }
  /* dgamma / dbeta */
  for (size_t j = 0; j < C; j++) {
    double gp[8];
    memcpy(gp, g, sizeof g);
    gp[j] = g[j] + h;
    nk_ref_l1norm_fwd(R, C, x, gp, b, 0, 1e-5, s, y1, NULL, NULL);
    gp[j] = g[j] - h;
    nk_ref_l1norm_fwd(R, C, x, gp, b, 0, 1e-5, s, y0, NULL, NULL);
    double fd = 0.0;
    for (size_t i = 0; i < R * C; i++) fd += dy[i] * (y1[i] - y0[i]) / (2 * h);
    worst = fmax(worst, fabs(fd - dg[j]));
  }
  NK_CHECK(worst < 1e-7, "finite differences off by %g", worst);
}

NK_TEST(bad_inputs_and_empty_shapes) {
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 9}, y[8], m[2], rs[2], dx[8], dg[4], db[4];
  nk_context *ctx = NULL;
  NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "ctx");
  nk_norm_desc d = nk_norm_desc_dense(2, 4, NK_DTYPE_F32, 1e-5f);
  size_t ws = 0;
  NK_REQUIRE(nk_l1norm_bwd_workspace_size(&d, &ws) == NK_OK && ws > 0, "ws");
  double *w = malloc(ws);
  NK_CHECK(nk_l1norm_fwd(ctx, NULL, x, NULL, NULL, y, m, rs) == NK_STATUS_INVALID_ARGUMENT, "NULL desc");
  NK_CHECK(nk_l1norm_fwd(ctx, &d, NULL, NULL, NULL, y, m, rs) == NK_STATUS_INVALID_ARGUMENT, "NULL x");
  NK_REQUIRE(nk_l1norm_fwd(ctx, &d, x, NULL, NULL, y, m, rs) == NK_OK, "fwd");
  NK_CHECK(nk_l1norm_bwd(ctx, &d, x, NULL, NULL, rs, x, NULL, dx, NULL, NULL, NULL, 0) == NK_STATUS_INVALID_ARGUMENT, "NULL mean");
  NK_CHECK(nk_l1norm_bwd(ctx, &d, x, NULL, m, NULL, x, NULL, dx, NULL, NULL, NULL, 0) == NK_STATUS_INVALID_ARGUMENT, "NULL rscale");
  NK_CHECK(nk_l1norm_bwd(ctx, &d, x, NULL, m, rs, x, NULL, dx, dg, db, w, ws - 1) == NK_STATUS_MISUSE, "small workspace");
  NK_CHECK(nk_l1norm_bwd(ctx, &d, x, NULL, m, rs, x, NULL, dx, dg, db, NULL, ws) == NK_STATUS_MISUSE, "NULL workspace");
  NK_CHECK(nk_l1norm_bwd(ctx, &d, x, NULL, m, rs, x, NULL, dx, NULL, NULL, NULL, 0) == NK_OK, "no param grads: no workspace");
  nk_norm_desc e = d;
  e.flags = NK_NORM_GAMMA_OFFSET;
  NK_CHECK(nk_l1norm_fwd(ctx, &e, x, NULL, NULL, y, m, rs) == NK_STATUS_INVALID_ARGUMENT, "offset needs gamma");
  e = d, e.flags = NK_NORM_BWD_FROM_Y;
  NK_CHECK(nk_l1norm_bwd(ctx, &e, x, NULL, m, rs, x, NULL, dx, NULL, NULL, NULL, 0) == NK_STATUS_UNSUPPORTED, "from y");
  e = d, e.flags = 0x100;
  NK_CHECK(nk_l1norm_fwd(ctx, &e, x, NULL, NULL, y, m, rs) == NK_STATUS_INVALID_ARGUMENT, "unknown flag");
  e = d, e.eps = -1.0f;
  NK_CHECK(nk_l1norm_fwd(ctx, &e, x, NULL, NULL, y, m, rs) == NK_STATUS_INVALID_ARGUMENT, "eps < 0");
  e = d, e.lns_scale = NAN;
  NK_CHECK(nk_l1norm_fwd(ctx, &e, x, NULL, NULL, y, m, rs) == NK_STATUS_INVALID_ARGUMENT, "lns NaN");
  e = d, e.param_dtype = NK_DTYPE_BF16;
  NK_CHECK(nk_l1norm_fwd(ctx, &e, x, x, NULL, y, m, rs) == NK_STATUS_UNSUPPORTED, "f32 x with bf16 params");
  NK_CHECK(nk_l1norm_fwd(ctx, &d, x, NULL, NULL, y, (float *)(void *)(y + 1), rs) == NK_STATUS_INVALID_ARGUMENT, "mean overlaps y");
  NK_CHECK(nk_l1norm_bwd(ctx, &d, x, NULL, m, rs, x, NULL, dx, dg, (float *)(void *)dg, w, ws) == NK_STATUS_INVALID_ARGUMENT, "dbeta == dgamma");
  NK_CHECK(nk_l1norm_bwd_rows(ctx, &d, 2, 1, x, NULL, m, rs, x, NULL, dx, NULL, NULL) == NK_STATUS_INVALID_ARGUMENT, "row range");
  e = d, e.rows = 0;
  NK_CHECK(nk_l1norm_fwd(ctx, &e, NULL, NULL, NULL, NULL, NULL, NULL) == NK_OK, "rows 0");
  NK_CHECK(nk_l1norm_bwd(ctx, &e, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0) == NK_OK, "rows 0 bwd");
  NK_CHECK(nk_l1norm_bwd_workspace_size(&e, &ws) == NK_OK && ws == 0, "ws 0");
  nk_context_destroy(ctx);
  NK_CHECK(strstr(nk_kernel_name(NK_OP_L1NORM_FWD, NK_DTYPE_F16), "l1norm_fwd") != NULL &&
               nk_kernel_name(NK_OP_L1NORM_BWD, (nk_dtype)9) == NULL, "kernel names");
  free(w);
}

int main(void) {
  NK_RUN(sizes_dtypes_affine_against_reference_and_across_isas_threads);
  NK_RUN(input_classes);
  NK_RUN(subnormal_rows);
  NK_RUN(special_rows);
  NK_RUN(gaussian_calibration_of_the_constant);
  NK_RUN(finite_differences_of_the_reference);
  NK_RUN(bad_inputs_and_empty_shapes);
  return nk_test_summary();
}
