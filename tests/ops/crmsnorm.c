/*
 * tests/ops/crmsnorm.c — CRMSNorm (nk_crmsnorm_*) by scenario: against the float64 reference
 * for f32/bf16/f16, bitwise equality over ISAs and 1-3 threads (rowvar_common.h), the identity
 * CRMSNorm(c) = Cmp(RMSNorm(Dec(c))), finite differences of the reference backward, edge cases
 * and bad-input statuses.
 */
#include "rowvar_common.h"

static rv_cfg base(nk_dtype dt, size_t rows, size_t cols, uint64_t seed) {
  rv_cfg c;
  memset(&c, 0, sizeof c);
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

NK_TEST(sizes_dtypes_against_reference_and_across_isas_threads) {
  static const size_t cols[] = {1, 2, 7, 16, 63, 64, 65, 130, 1000, 1024, 1025, 2100};
  const nk_dtype dts[3] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};
  uint64_t seed = 1;
  for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++)
    for (int di = 0; di < 3; di++) {
      rv_cfg c = base(dts[di], cols[ci] > 1000 ? 5 : 11, cols[ci], seed++);
      c.lns = (seed % 2) ? 0.0f : 0.57735027f;
      c.dh = (seed % 3) == 0;
      c.pad = (seed % 4) == 1 ? 3 : 0;
      if (!rv_check(&c)) return;
    }
}

NK_TEST(input_classes) {
  const enum in_class ins[] = {IN_ILLCOND, IN_CONST, IN_HUGE, IN_TINY, IN_ZERO};
  for (size_t ii = 0; ii < sizeof ins / sizeof ins[0]; ii++)
    for (int tiny_eps = 0; tiny_eps < 2; tiny_eps++) {
      rv_cfg c = base(NK_DTYPE_F32, 6, 300, 100 + ii);
      c.in = ins[ii];
      c.eps = tiny_eps ? 1e-30f : 1e-5f;
      c.lns = 0.70710678f;
      if (!rv_check(&c)) return;
      /* with eps 1e-30 the gradients of a zero row (1/sqrt(eps) = 1e15) overflow f16: f32 only */
      if (tiny_eps) continue;
      c.dt = NK_DTYPE_BF16;
      if (!rv_check(&c)) return;
      if (ins[ii] == IN_HUGE || ins[ii] == IN_TINY) continue; /* out of f16 range */
      c.dt = NK_DTYPE_F16;
      if (!rv_check(&c)) return;
    }
}

/* NaN/inf rows, rows whose squares overflow f32, constant rows: the same bits on every path
 * (the double row routine), NaN confined to its row. */
NK_TEST(special_rows) {
  rv_cfg c = base(NK_DTYPE_F32, 10, 200, 7);
  c.in = IN_SPECIAL;
  c.check_ref = 0;
  c.dh = 1;
  NK_REQUIRE(rv_check(&c), "consistency");
  c.dt = NK_DTYPE_BF16;
  NK_REQUIRE(rv_check(&c), "consistency bf16");
  /* the rows' contents: row 1 has a NaN, row 2 an inf -> NaN; row 3 (1e19s) finite and right */
  const size_t R = 5, C = 64;
  float x[5 * 64], y[5 * 64], rs[5], dy[5 * 64], dx[5 * 64];
  nk_rng rng = {99};
  for (size_t i = 0; i < R * C; i++) x[i] = (float)nk_rng_normal(&rng), dy[i] = 1.0f;
  x[1 * C + 5] = NAN;
  x[2 * C + 9] = INFINITY;
  for (size_t i = 0; i < C; i++) x[3 * C + i] = 3e19f * (float)nk_rng_normal(&rng);
  for (size_t i = 0; i < C; i++) x[4 * C + i] = -7.25f;
  nk_norm_desc d = nk_norm_desc_dense(R, C, NK_DTYPE_F32, 1e-5f);
  NK_REQUIRE(nk_crmsnorm_fwd(NULL, &d, x, y, rs) == NK_OK, "fwd");
  NK_REQUIRE(nk_crmsnorm_bwd(NULL, &d, x, rs, dy, NULL, dx) == NK_OK, "bwd");
  for (size_t i = 0; i < C; i++) {
    NK_CHECK(isnan(y[C + i]) && isnan(y[2 * C + i]) && isnan(dx[C + i]) && isnan(dx[2 * C + i]),
             "NaN rows at %zu", i);
    NK_CHECK(isfinite(y[i]) && isfinite(y[3 * C + i]) && isfinite(dx[3 * C + i]) &&
                 isfinite(dx[4 * C + i]), "finite rows at %zu", i);
    /* a constant row v: y = v / sqrt(d v^2 + eps) */
    NK_CHECK(fabs(y[4 * C + i] - (-7.25 / sqrt(64 * 7.25 * 7.25 + 1e-5))) < 1e-7, "constant row %g", y[4 * C + i]);
  }
  NK_CHECK(isnan(rs[1]) && isnan(rs[2]) && isfinite(rs[3]), "rstd");
  double q = 0.0, s = 0.0;
  for (size_t i = 0; i < C; i++) q += (double)x[3 * C + i] * x[3 * C + i], s += x[3 * C + i];
  const double r3 = 1.0 / sqrt((q + s * s) / (C + 1) + 1e-5);
  for (size_t i = 0; i < C; i++)
    NK_CHECK(fabs(y[3 * C + i] - x[3 * C + i] * r3) <= 2e-6 * 4.0, "huge row %zu: %g vs %g", i, y[3 * C + i], x[3 * C + i] * r3);
}

/* CRMSNorm(c) = Cmp(RMSNorm(Dec(c))) (spec §3.1), with normkit's own RMSNorm. */
NK_TEST(identity_with_rmsnorm_of_the_decompressed_row) {
  const size_t R = 4, d = 95, D = 96;
  float c[4 * 95], full[4 * 96], y[4 * 95], yf[4 * 96];
  nk_rng rng = {5};
  for (size_t r = 0; r < R; r++) {
    double s = 0.0;
    for (size_t i = 0; i < d; i++) c[r * d + i] = (float)(nk_rng_normal(&rng) + 0.3), s += c[r * d + i];
    for (size_t i = 0; i < d; i++) full[r * D + i] = c[r * d + i];
    full[r * D + d] = (float)-s;
  }
  nk_norm_desc dc = nk_norm_desc_dense(R, d, NK_DTYPE_F32, 1e-5f);
  nk_norm_desc df = nk_norm_desc_dense(R, D, NK_DTYPE_F32, 1e-5f);
  NK_REQUIRE(nk_crmsnorm_fwd(NULL, &dc, c, y, NULL) == NK_OK, "crms");
  NK_REQUIRE(nk_rmsnorm_fwd(NULL, &df, full, NULL, NULL, NULL, yf, NULL, NULL) == NK_OK, "rms");
  for (size_t r = 0; r < R; r++)
    for (size_t i = 0; i < d; i++)
      NK_CHECK(fabsf(y[r * d + i] - yf[r * D + i]) <= 1e-6f * 4.0f, "row %zu col %zu: %g vs %g", r, i,
               y[r * d + i], yf[r * D + i]);
}

/* The reference backward against central finite differences of the reference forward. */
NK_TEST(finite_differences_of_the_reference) {
  const size_t R = 3, C = 9;
  double x[27], dy[27], dx[27], y0[27], y1[27], xp[27];
  nk_rng rng = {11};
  for (size_t i = 0; i < R * C; i++) x[i] = nk_rng_normal(&rng) + 0.2, dy[i] = nk_rng_normal(&rng);
  const double s = 0.4472136;
  nk_ref_crmsnorm_bwd(R, C, x, 1e-5, s, dy, dx);
  double worst = 0.0;
  for (size_t j = 0; j < R * C; j++) {
    const double h = 1e-6;
    memcpy(xp, x, sizeof x);
    xp[j] = x[j] + h;
    nk_ref_crmsnorm_fwd(R, C, xp, 1e-5, s, y1, NULL);
    xp[j] = x[j] - h;
    nk_ref_crmsnorm_fwd(R, C, xp, 1e-5, s, y0, NULL);
    double fd = 0.0;
    for (size_t i = 0; i < R * C; i++) fd += dy[i] * (y1[i] - y0[i]) / (2 * h);
    worst = fmax(worst, fabs(fd - dx[j]));
  }
  NK_CHECK(worst < 1e-7, "finite differences off by %g", worst);
}

NK_TEST(bad_inputs_and_empty_shapes) {
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8], rs[2], dx[8];
  nk_context *ctx = NULL;
  NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "ctx");
  nk_norm_desc d = nk_norm_desc_dense(2, 4, NK_DTYPE_F32, 1e-5f);
  NK_CHECK(nk_crmsnorm_fwd(ctx, NULL, x, y, rs) == NK_STATUS_INVALID_ARGUMENT, "NULL desc");
  NK_CHECK(nk_crmsnorm_fwd(ctx, &d, NULL, y, rs) == NK_STATUS_INVALID_ARGUMENT, "NULL x");
  NK_CHECK(nk_crmsnorm_fwd(ctx, &d, x, NULL, rs) == NK_STATUS_INVALID_ARGUMENT, "NULL y");
  NK_CHECK(nk_crmsnorm_bwd(ctx, &d, x, NULL, x, NULL, dx) == NK_STATUS_INVALID_ARGUMENT, "NULL rstd");
  nk_norm_desc e = d;
  e.eps = 0.0f;
  NK_CHECK(nk_crmsnorm_fwd(ctx, &e, x, y, rs) == NK_STATUS_INVALID_ARGUMENT, "eps 0");
  e = d, e.eps = NAN;
  NK_CHECK(nk_crmsnorm_fwd(ctx, &e, x, y, rs) == NK_STATUS_INVALID_ARGUMENT, "eps NaN");
  e = d, e.lns_scale = -0.5f;
  NK_CHECK(nk_crmsnorm_fwd(ctx, &e, x, y, rs) == NK_STATUS_INVALID_ARGUMENT, "lns < 0");
  e = d, e.lns_scale = INFINITY;
  NK_CHECK(nk_crmsnorm_bwd(ctx, &e, x, rs, x, NULL, dx) == NK_STATUS_INVALID_ARGUMENT, "lns inf");
  e = d, e.x_stride = 3;
  NK_CHECK(nk_crmsnorm_fwd(ctx, &e, x, y, rs) == NK_STATUS_INVALID_ARGUMENT, "stride < cols");
  e = d, e.flags = NK_NORM_GAMMA_OFFSET;
  NK_CHECK(nk_crmsnorm_fwd(ctx, &e, x, y, rs) == NK_STATUS_INVALID_ARGUMENT, "flags");
  e = d, e.flags = NK_NORM_BWD_FROM_Y;
  NK_CHECK(nk_crmsnorm_bwd(ctx, &e, x, rs, x, NULL, dx) == NK_STATUS_UNSUPPORTED, "from y");
  e = d, e.dtype = (nk_dtype)7;
  NK_CHECK(nk_crmsnorm_fwd(ctx, &e, x, y, rs) != NK_OK, "dtype");
  NK_CHECK(nk_crmsnorm_fwd(ctx, &d, x, x + 1, rs) == NK_STATUS_INVALID_ARGUMENT, "partial overlap");
  NK_CHECK(nk_crmsnorm_fwd(ctx, &d, x, y, (float *)(void *)y) == NK_STATUS_INVALID_ARGUMENT, "rstd overlaps y");
  NK_CHECK(nk_crmsnorm_fwd_rows(ctx, &d, 1, 3, x, y, rs) == NK_STATUS_INVALID_ARGUMENT, "row range");
  NK_CHECK(strlen(nk_context_message(ctx)) > 0, "message");
  /* in place y == x is allowed and equals the out-of-place result */
  float xi[8];
  memcpy(xi, x, sizeof x);
  NK_CHECK(nk_crmsnorm_fwd(ctx, &d, x, y, rs) == NK_OK && nk_crmsnorm_fwd(ctx, &d, xi, xi, NULL) == NK_OK &&
               memcmp(xi, y, sizeof y) == 0, "in place");
  /* dx == dy in place */
  float g[8] = {1, -1, 2, 0.5f, 3, 1, -2, 0}, g2[8];
  memcpy(g2, g, sizeof g);
  NK_CHECK(nk_crmsnorm_bwd(ctx, &d, x, rs, g, NULL, dx) == NK_OK &&
               nk_crmsnorm_bwd(ctx, &d, x, rs, g2, NULL, g2) == NK_OK && memcmp(g2, dx, sizeof dx) == 0,
           "dx == dy in place");
  /* empty shapes: nothing read or written, NULL pointers fine */
  e = d, e.rows = 0;
  NK_CHECK(nk_crmsnorm_fwd(ctx, &e, NULL, NULL, NULL) == NK_OK, "rows 0");
  e = d, e.cols = 0;
  NK_CHECK(nk_crmsnorm_bwd(ctx, &e, NULL, NULL, NULL, NULL, NULL) == NK_OK, "cols 0");
  nk_context_destroy(ctx);
  /* kernel names */
  NK_CHECK(nk_kernel_name(NK_OP_CRMSNORM_FWD, NK_DTYPE_F32) != NULL &&
               strstr(nk_kernel_name(NK_OP_CRMSNORM_BWD, NK_DTYPE_BF16), "crmsnorm_bwd") != NULL,
           "kernel names");
  NK_CHECK(strcmp(nk_op_name(NK_OP_CRMSNORM_FWD), "crmsnorm_fwd") == 0, "op name");
}

int main(void) {
  NK_RUN(sizes_dtypes_against_reference_and_across_isas_threads);
  NK_RUN(input_classes);
  NK_RUN(special_rows);
  NK_RUN(identity_with_rmsnorm_of_the_decompressed_row);
  NK_RUN(finite_differences_of_the_reference);
  NK_RUN(bad_inputs_and_empty_shapes);
  return nk_test_summary();
}
