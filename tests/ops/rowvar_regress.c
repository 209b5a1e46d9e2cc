/*
 * rowvar_regress.c — regression tests of CRMSNorm / L1 LayerNorm findings of the fuzz harness
 * tests/fuzz/rowvar.c (tests/fuzz/known/ holds the fuzz inputs).
 */
#include <math.h>
#include <string.h>

#include "normkit.h"
#include "test.h"

/* tests/fuzz/known/rowvar-l1norm-bwd-misaligned-workspace: nk_l1norm_bwd stored its double
 * partials at the workspace pointer, which the header lets have any alignment (UBSan: misaligned
 * load/store). The partials now start at the first 8-byte boundary within the size the query
 * reports. Every offset 0..7 must give the bits of the aligned call, on every ISA. */
NK_TEST(l1norm_bwd_workspace_any_alignment) {
  static const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  enum { R = 37, C = 19 };
  static float x[R * C], dy[R * C], g[C], mean[R], rs[R], y[R * C];
  static float dx0[R * C], dx[R * C], dg0[C], db0[C], dg[C], db[C];
  static double wsbuf[4096];
  for (int i = 0; i < R * C; i++) {
    x[i] = (float)sin(0.7 * i) * 3.0f + 0.25f;
    dy[i] = (float)cos(1.3 * i);
  }
  for (int j = 0; j < C; j++) g[j] = 1.0f + 0.1f * (float)j;
  nk_norm_desc d = nk_norm_desc_dense(R, C, NK_DTYPE_F32, 1e-5f);
  size_t ws = 0;
  NK_REQUIRE(nk_l1norm_bwd_workspace_size(&d, &ws) == NK_OK && ws > 0 && ws + 8 <= sizeof wsbuf,
             "workspace size %zu", ws);
  NK_REQUIRE(nk_l1norm_fwd(NULL, &d, x, g, NULL, y, mean, rs) == NK_OK, "fwd");
  NK_REQUIRE(nk_l1norm_bwd(NULL, &d, x, g, mean, rs, dy, NULL, dx0, dg0, db0, wsbuf, ws) == NK_OK,
             "aligned bwd");
  for (size_t k = 0; k < 3; k++) {
    if (!nk_isa_supported(isas[k])) continue;
    nk_context *ctx;
    NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "context");
    nk_context_set_isa(ctx, isas[k]);
    for (size_t off = 0; off < 8; off++) {
      char *w = (char *)wsbuf + off;
      NK_REQUIRE(nk_l1norm_bwd(ctx, &d, x, g, mean, rs, dy, NULL, dx, dg, db, w, ws) == NK_OK,
                 "bwd offset %zu", off);
      NK_CHECK(memcmp(dx, dx0, sizeof dx) == 0 && memcmp(dg, dg0, sizeof dg) == 0 &&
                   memcmp(db, db0, sizeof db) == 0,
               "%s: offset %zu changed the bits", nk_isa_name(isas[k]), off);
      NK_CHECK(nk_l1norm_bwd(ctx, &d, x, g, mean, rs, dy, NULL, dx, dg, db, w, ws - 1) ==
                   NK_STATUS_MISUSE,
               "a workspace one byte short is MISUSE");
    }
    nk_context_destroy(ctx);
  }
}

int main(void) {
  NK_RUN(l1norm_bwd_workspace_any_alignment);
  return nk_test_summary();
}
