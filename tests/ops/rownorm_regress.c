/*
 * rownorm_regress.c — regression tests of row-norm bugs found by the fuzz harnesses
 * (tests/fuzz/known/ holds the fuzz inputs).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "normkit.h"
#include "reference.h"
#include "test.h"

/* tests/fuzz/known/rownorm-layernorm-flt-max-row-nan: a LayerNorm row holding -FLT_MAX-ish and
 * +FLT_MAX-ish values overflowed the f32 sums of the second pass (centred values beyond
 * FLT_MAX); the refinement then produced mean -inf and y NaN on every ISA. Every placement of
 * one -0x1.ff933cp+127 and two +0x1.ff933cp+127 among 54 values must match the reference. */
NK_TEST(layernorm_near_flt_max_both_signs) {
  static const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  enum { C = 54 };
  float x[C], y[C], mean, rstd;
  double h[C], ref[C], rm, rr;
  nk_norm_desc d = nk_norm_desc_dense(1, C, NK_DTYPE_F32, 1e-5f);
  for (size_t k = 0; k < 3; k++) {
    if (!nk_isa_supported(isas[k])) continue;
    nk_context *ctx;
    NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "context");
    nk_context_set_isa(ctx, isas[k]);
    for (int a = 0; a < C; a += 5)
      for (int b = 0; b < C; b += 3)
        for (int c = b + 1; c < C; c += 7) {
          if (a == b || a == c) continue;
          for (int i = 0; i < C; i++) x[i] = 0.37f * (float)((i * 7) % 11) - 1.0f;
          x[a] = -0x1.ff933cp+127f;
          x[b] = 0x1.ff933cp+127f;
          x[c] = 0x1.ff933cp+127f;
          for (int i = 0; i < C; i++) h[i] = x[i];
          NK_REQUIRE(nk_layernorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, &mean, &rstd) == NK_OK,
                     "status");
          nk_ref_layernorm_fwd(1, C, h, NULL, NULL, 0, 1e-5, ref, &rm, &rr);
          double m = 0.0;
          for (int i = 0; i < C; i++) m = fmax(m, fabs(ref[i]));
          for (int i = 0; i < C; i++)
            NK_CHECK(fabs(y[i] - ref[i]) <= 2e-6 * m, "%s a=%d b=%d c=%d: y[%d] = %g, ref %g",
                     nk_isa_name(isas[k]), a, b, c, i, y[i], ref[i]);
          NK_CHECK(fabs(mean - rm) <= 1e-6 * fabs(rm), "mean %g, ref %g", mean, rm);
          NK_CHECK(fabs(rstd - rr) <= 1e-6 * rr, "rstd %g, ref %g", rstd, rr);
        }
    nk_context_destroy(ctx);
  }
}

/* tests/fuzz/known/{rownorm-bwd,cross_entropy}-misaligned-workspace-open: a workspace at an odd
 * address gave misaligned double accesses (UBSan); the operators now align it up inside (the
 * size queries include the slack). Every offset 0..7 must give the same bits. */
NK_TEST(workspace_at_any_address) {
  enum { R = 37, C = 45 };
  static float x[R * C], dy[R * C], dx[R * C], g[C], dg[C], db[C], dg0[C], db0[C], mean[R], rstd[R];
  for (int i = 0; i < R * C; i++) x[i] = (float)((i * 37) % 101) * 0.01f - 0.5f, dy[i] = (float)((i * 11) % 13) - 6.0f;
  for (int i = 0; i < C; i++) g[i] = 1.0f + 0.01f * (float)i;
  nk_norm_desc d = nk_norm_desc_dense(R, C, NK_DTYPE_F32, 1e-5f);
  NK_REQUIRE(nk_layernorm_fwd(NULL, &d, x, NULL, g, NULL, dx, NULL, mean, rstd) == NK_OK, "fwd");
  size_t wsb = 0;
  NK_REQUIRE(nk_layernorm_bwd_workspace_size(&d, &wsb) == NK_OK && wsb > 0, "ws size");
  char *buf = malloc(wsb + 8);
  NK_REQUIRE(buf != NULL, "alloc");
  for (int off = 0; off < 8; off++) {
    NK_CHECK(nk_layernorm_bwd(NULL, &d, x, g, NULL, mean, rstd, dy, NULL, dx, dg, db, buf + off,
                              wsb) == NK_OK, "bwd at offset %d", off);
    if (off == 0) memcpy(dg0, dg, sizeof dg), memcpy(db0, db, sizeof db);
    NK_CHECK(memcmp(dg, dg0, sizeof dg) == 0 && memcmp(db, db0, sizeof db) == 0,
             "dgamma/dbeta differ at workspace offset %d", off);
  }
  free(buf);
  int64_t t[R];
  for (int i = 0; i < R; i++) t[i] = (i * 7) % C;
  nk_cross_entropy_desc e = nk_cross_entropy_desc_dense(R, C, NK_DTYPE_F32);
  e.reduction = NK_REDUCTION_MEAN;
  NK_REQUIRE(nk_cross_entropy_workspace_size(&e, &wsb) == NK_OK && wsb > 0, "xent ws size");
  buf = malloc(wsb + 8);
  NK_REQUIRE(buf != NULL, "alloc");
  float loss0 = 0.0f, loss;
  for (int off = 0; off < 8; off++) {
    NK_CHECK(nk_cross_entropy(NULL, &e, x, t, &loss, NULL, NULL, buf + off, wsb) == NK_OK,
             "cross_entropy at offset %d", off);
    if (off == 0) loss0 = loss;
    NK_CHECK(memcmp(&loss, &loss0, sizeof loss) == 0, "loss differs at workspace offset %d", off);
    NK_CHECK(nk_cross_entropy(NULL, &e, x, t, &loss, NULL, NULL, buf + off, wsb - 1) ==
                 NK_STATUS_MISUSE, "one byte short at offset %d", off);
  }
  free(buf);
}

/* A LayerNorm row of subnormals (mean below 2^-100): the f32 mean's low part fell on the
 * subnormal grid, an error of 2^-150 in every centred value, times rstd (2896 for eps 2^-23):
 * y[1] = -6.15777988e-37 where the reference is -6.1578001e-37 (3.3e-6 of the row's scale). Such
 * rows now take the double routine. The row of tests/ops/moments_regress.c
 * (layernorm_moments_subnormal_row) through nk_layernorm_fwd, every ISA, signs and lengths
 * varied, in rows next to ordinary ones (the decision is per row). */
NK_TEST(layernorm_subnormal_row) {
  static const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  for (size_t k = 0; k < 3; k++) {
    if (!nk_isa_supported(isas[k])) continue;
    nk_context *ctx;
    NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "context");
    nk_context_set_isa(ctx, isas[k]);
    for (int t = 0; t < 200; t++) {
      enum { C = 37 };
      const size_t n = 2 + (size_t)t % 4 + (t % 5 == 0 ? 30 : 0);
      float x[2 * C], y[2 * C], mean[2], rstd[2];
      double h[2 * C], ref[2 * C], rm[2], rr[2];
      for (size_t i = 0; i < n; i++) {
        x[i] = (float)(0x1.f687b4p-127 *
                       (1.0 + 0.03 * (double)((((size_t)t + 3) * (i + 1) * 7919) % 23) / 11.0 - 0.03));
        if (t % 3 == 1 && i == 0) x[i] = -x[i];
        x[C + i] = (float)((double)((i * 37) % 11) - 5.0); /* an ordinary row */
      }
      nk_norm_desc d = nk_norm_desc_dense(2, n, NK_DTYPE_F32, 0x1p-23f);
      d.x_stride = d.y_stride = C;
      NK_REQUIRE(nk_layernorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, mean, rstd) == NK_OK,
                 "status");
      for (size_t r = 0; r < 2; r++) {
        for (size_t i = 0; i < n; i++) h[i] = x[r * C + i];
        nk_ref_layernorm_fwd(1, n, h, NULL, NULL, 0, 0x1p-23, ref, &rm[r], &rr[r]);
        double mx = 0.0;
        for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
        for (size_t i = 0; i < n; i++)
          NK_CHECK(fabs(y[r * C + i] - ref[i]) <= 2e-6 * mx + 0x1p-148,
                   "%s t=%d row %zu: y[%zu] = %.9g, ref %.9g", nk_isa_name(isas[k]), t, r, i,
                   (double)y[r * C + i], ref[i]);
      }
    }
    nk_context_destroy(ctx);
  }
}

/* tests/fuzz/known/quant-fakeln-bwd-dx-on-dy-nan-row-dbeta (found through nk_fakeln_bwd, the
 * same kernels): the double row routine of a row with NaN/inf stored dx = NaN before reading
 * dy for dbeta, so with dx == dy (allowed in place) dbeta became NaN; it is sum dy, the same
 * with and without the aliasing, for LayerNorm, RMSNorm, FakeLN and (its own double routine,
 * the same fault) L1 LayerNorm on every ISA. */
NK_TEST(nonfinite_row_dbeta_with_dx_on_dy) {
  static const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  enum { R = 3, C = 37 };
  float x[R * C], dy[R * C], dyc[R * C], dx[R * C], g[C], mean[R], rstd[R], y[R * C];
  float dg[C], db[C], dg2[C], db2[C];
  for (size_t k = 0; k < R * C; k++) x[k] = (float)(k % 11) - 4.5f, dy[k] = 0.25f * (float)(k % 7) - 0.5f;
  for (size_t j = 0; j < C; j++) g[j] = 1.0f + 0.01f * (float)j;
  nk_norm_desc d = nk_norm_desc_dense(R, C, NK_DTYPE_F32, 1e-5f);
  NK_REQUIRE(nk_layernorm_fwd(NULL, &d, x, NULL, g, NULL, y, NULL, mean, rstd) == NK_OK, "fwd");
  float l1mean[R], l1rs[R];
  NK_REQUIRE(nk_l1norm_fwd(NULL, &d, x, g, NULL, y, l1mean, l1rs) == NK_OK, "l1 fwd");
  x[C + 5] = INFINITY; /* row 1 non-finite in the backward's input */
  size_t wsb = 0, wsl = 0;
  nk_layernorm_bwd_workspace_size(&d, &wsb);
  nk_l1norm_bwd_workspace_size(&d, &wsl);
  wsb = wsl > wsb ? wsl : wsb;
  void *ws = malloc(wsb);
  for (size_t k = 0; k < 3; k++) {
    if (!nk_isa_supported(isas[k])) continue;
    nk_context *ctx;
    NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "context");
    nk_context_set_isa(ctx, isas[k]);
    for (int op = 0; op < 4; op++) {
#define BWD(out, gd, bd)                                                                         \
  (op == 0   ? nk_layernorm_bwd(ctx, &d, x, g, NULL, mean, rstd, dyc, NULL, out, gd, bd, ws, wsb)  \
   : op == 1 ? nk_rmsnorm_bwd(ctx, &d, x, g, NULL, rstd, dyc, NULL, out, gd, bd, ws, wsb)          \
   : op == 2 ? nk_fakeln_bwd(ctx, &d, 1.5f, x, g, NULL, mean, dyc, NULL, out, gd, bd, ws, wsb)     \
             : nk_l1norm_bwd(ctx, &d, x, g, l1mean, l1rs, dyc, NULL, out, gd, bd, ws, wsb))
      memcpy(dyc, dy, sizeof dy);
      NK_CHECK(BWD(dx, dg, db) == NK_OK, "op %d: separate dx", op);
      NK_CHECK(BWD(dyc, dg2, db2) == NK_OK, "op %d: dx on dy", op);
#undef BWD
      int same = 1, nanrow = 1;
      for (size_t j = 0; j < C; j++) {
        double s = 0.0;
        for (size_t i = 0; i < R; i++) s += dy[i * C + j];
        same &= db[j] == db2[j] && db[j] == (float)s;
        nanrow &= isnan(dx[C + j]) && isnan(dyc[C + j]) && isnan(dg[j]) && isnan(dg2[j]);
      }
      NK_CHECK(same, "op %d isa %s: dbeta differs with dx on dy (or from sum dy)", op, nk_isa_name(isas[k]));
      NK_CHECK(nanrow, "op %d isa %s: the non-finite row's dx and dgamma are NaN", op, nk_isa_name(isas[k]));
      NK_CHECK(memcmp(dx, dyc, sizeof dx) == 0, "op %d isa %s: dx differs in place", op, nk_isa_name(isas[k]));
    }
    nk_context_destroy(ctx);
  }
  free(ws);
}

int main(void) {
  NK_RUN(workspace_at_any_address);
  NK_RUN(layernorm_near_flt_max_both_signs);
  NK_RUN(layernorm_subnormal_row);
  NK_RUN(nonfinite_row_dbeta_with_dx_on_dy);
  return nk_test_summary();
}
