/*
 * chnorm_regress.c — regression tests of channel-norm bugs found by the fuzz harnesses
 * (tests/fuzz/known/ holds the fuzz inputs; the input classes of tests/ops/batchnorm.c,
 * groupnorm.c and moments.c cover the statistics side: CH_NEARMAX).
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "chnorm_util.h"
#include "normkit.h"
#include "reference.h"
#include "test.h"

/* BatchNorm inference with a running mean far from zero: x - running_mean overflowed f32
 * (3e38 + 2e38), so the forward gave inf where y is 5e23, and the backward, whose dx does not
 * depend on x at all (dy g rstd), gave NaN from inf * 0 (seen by the chnorm fuzz harness,
 * seed 5). Every ISA, both layouts, 1 and 2 threads, must match the reference and give the
 * same bits. */
NK_TEST(batchnorm_inference_far_running_mean) {
  static const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  enum { N = 2, C = 3, S = 37, T = N * C * S };
  static float x[T], y[T], dy[T], dx[T], y0[T], dx0[T];
  static double xr[T], yr[T], dyr[T], dxr[T];
  const float rm[C] = {-2e38f, 1e37f, 2.5e38f}, rv[C] = {1e30f, 4.0f, 3e38f};
  const float gamma[C] = {0.75f, -1.25f, 2.0f}, beta[C] = {0.5f, 0.0f, -3.0f};
  const double rmr[C] = {rm[0], rm[1], rm[2]}, rvr[C] = {rv[0], rv[1], rv[2]};
  const double gr[C] = {gamma[0], gamma[1], gamma[2]}, br[C] = {beta[0], beta[1], beta[2]};
  for (int lay = 0; lay < 2; lay++) {
    const nk_layout L = lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS;
    nk_batchnorm_desc d = nk_chnorm_desc_dense(N, C, S, L, NK_DTYPE_F32, 1e-5f);
    const nk_ref_chshape t = {N, C, S, lay, 0, 0};
    for (size_t n = 0; n < N; n++)
      for (size_t c = 0; c < C; c++)
        for (size_t s = 0; s < S; s++) {
          const size_t k = nk_ref_chidx(&t, n, c, s);
          const float far = c == 0 ? 3e38f : c == 1 ? -3.3e38f : -1e38f;
          x[k] = s % 3 == 0 ? far * (1.0f - 0.01f * (float)s) : (float)(s % 7) - 3.0f;
          dy[k] = 0.25f * (float)((k * 5) % 9) - 1.0f;
          xr[k] = x[k], dyr[k] = dy[k];
        }
    double rmc[C], rvc[C], sm[C], sr[C];
    for (size_t c = 0; c < C; c++) rmc[c] = rmr[c], rvc[c] = rvr[c];
    nk_ref_batchnorm_fwd(&t, xr, NULL, gr, br, 1e-5, 0, NK_REF_ACT_NONE, 0.1, 0, rmc, rvc, NULL,
                         yr, sm, sr);
    float mean[C], rstd[C];
    for (size_t c = 0; c < C; c++) mean[c] = rm[c], rstd[c] = (float)(1.0 / sqrt(rvr[c] + 1e-5));
    const double mr[C] = {mean[0], mean[1], mean[2]}, rr[C] = {rstd[0], rstd[1], rstd[2]};
    nk_ref_batchnorm_bwd(&t, xr, NULL, gr, 1e-5, 0, mr, rr, dyr, dxr, NULL, NULL, NULL);
    int first = 1;
    for (size_t k = 0; k < 3; k++)
      for (int th = 0; th < 2; th++) {
        if (!nk_isa_supported(isas[k])) continue;
        ch_ctx cc = ch_ctx_make(isas[k], th ? 2 : 1);
        NK_REQUIRE(cc.ctx != NULL && (!th || cc.pool != NULL), "context");
        nk_context *ctx = cc.ctx;
        float rmw[C] = {rm[0], rm[1], rm[2]}, rvw[C] = {rv[0], rv[1], rv[2]};
        NK_REQUIRE(nk_batchnorm_fwd(ctx, &d, x, NULL, gamma, beta, rmw, rvw, NULL, y, NULL, NULL,
                                    NULL, 0) == NK_OK,
                   "fwd: %s", nk_context_message(ctx));
        NK_REQUIRE(nk_batchnorm_bwd(ctx, &d, x, NULL, gamma, mean, rstd, dy, dx, NULL, NULL, NULL,
                                    NULL, 0) == NK_OK,
                   "bwd: %s", nk_context_message(ctx));
        for (size_t c = 0; c < C; c++) {
          /* the header's bounds: 2e-6 max(|y|, |y - beta|) and 2e-6 max|dx| of the channel */
          double P = 0.0, D = 0.0;
          for (size_t n = 0; n < N; n++)
            for (size_t s = 0; s < S; s++) {
              const size_t i = nk_ref_chidx(&t, n, c, s);
              P = fmax(P, fmax(fabs(yr[i]), fabs(yr[i] - br[c])));
              D = fmax(D, fabs(dxr[i]));
            }
          for (size_t n = 0; n < N; n++)
            for (size_t s = 0; s < S; s++) {
              const size_t i = nk_ref_chidx(&t, n, c, s);
              NK_CHECK(fabs(y[i] - yr[i]) <= 2e-6 * P, "%s %s th%d: y[%zu] = %g, reference %g",
                       nk_layout_name(L), nk_isa_name(isas[k]), th, i, y[i], yr[i]);
              NK_CHECK(fabs(dx[i] - dxr[i]) <= 2e-6 * D,
                       "%s %s th%d: dx[%zu] = %g, reference %g", nk_layout_name(L),
                       nk_isa_name(isas[k]), th, i, dx[i], dxr[i]);
            }
        }
        if (first) {
          for (size_t i = 0; i < T; i++) y0[i] = y[i], dx0[i] = dx[i];
          first = 0;
        } else {
          NK_CHECK(memcmp(y, y0, sizeof y) == 0 && memcmp(dx, dx0, sizeof dx) == 0,
                   "%s %s th%d: bits differ from the first path", nk_layout_name(L),
                   nk_isa_name(isas[k]), th);
        }
        ch_ctx_free(&cc);
      }
  }
}

/* BatchNorm inference backward where xhat = (x - mean) rstd is beyond FLT_MAX (x = -3.4e38,
 * rstd 1.23): dx = dy gamma rstd does not depend on x, but the dx pass formed xhat = -inf and
 * then -inf * 0 = NaN (tests/fuzz/known/chnorm-bn-inference-bwd-xhat-overflow-nan). */
NK_TEST(batchnorm_inference_backward_xhat_beyond_flt_max) {
  static const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  enum { N = 3, C = 2, S = 21, T = N * C * S };
  static float x[T], dy[T], dx[T];
  const float mean[C] = {0.623113573f, -0.487067014f}, rstd[C] = {1.22672863f, 1.49602126f};
  const float gamma[C] = {1.0f, -1.21057653f};
  for (int lay = 0; lay < 2; lay++) {
    const nk_layout L = lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS;
    nk_batchnorm_desc d = nk_chnorm_desc_dense(N, C, S, L, NK_DTYPE_F32, 1e-5f);
    const nk_ref_chshape t = {N, C, S, lay, 0, 0};
    for (size_t k = 0; k < 3; k++) {
      if (!nk_isa_supported(isas[k])) continue;
      ch_ctx cc = ch_ctx_make(isas[k], 1);
      NK_REQUIRE(cc.ctx != NULL, "context");
      nk_context *ctx = cc.ctx;
      for (size_t n = 0; n < N; n++)
        for (size_t c = 0; c < C; c++)
          for (size_t s = 0; s < S; s++) {
            const size_t i = nk_ref_chidx(&t, n, c, s);
            x[i] = s % 2 ? -3.4e38f : (s % 5 ? 3.39e38f : 0.5f);
            dy[i] = 0.125f * (float)((i * 3) % 11) - 0.5f;
          }
      NK_REQUIRE(nk_batchnorm_bwd(ctx, &d, x, NULL, gamma, mean, rstd, dy, dx, NULL, NULL, NULL,
                                  NULL, 0) == NK_OK,
                 "bwd: %s", nk_context_message(ctx));
      for (size_t n = 0; n < N; n++)
        for (size_t c = 0; c < C; c++)
          for (size_t s = 0; s < S; s++) {
            const size_t i = nk_ref_chidx(&t, n, c, s);
            const double ref = (double)dy[i] * gamma[c] * rstd[c];
            NK_CHECK(fabs(dx[i] - ref) <= 2e-6 * fabs(ref), "%s %s: dx[%zu] = %g, reference %g",
                     nk_layout_name(L), nk_isa_name(isas[k]), i, dx[i], ref);
          }
      ch_ctx_free(&cc);
    }
  }
}

/* Sets of subnormal data (|mean| and every deviation far below 2^-100) with a tiny eps (rstd
 * ~ 1e6): the kernels subtracted the mean's low part as an f32, which sits on the subnormal
 * grid (up to 2^-150 off), so y and dx were ~3e-6 of the set's scale off (InstanceNorm, chnorm
 * fuzz harness, tests/fuzz/known/chnorm-subnormal-set; LayerNorm's moments path the same,
 * moments-layernorm-moments-subnormal-row). The low part now enters multiplied by rstd.
 * BatchNorm training forward and backward and GroupNorm forward and backward, both layouts,
 * every ISA, 1 and 2 threads: within the header's bounds and the same bits. */
NK_TEST(subnormal_sets) {
  static const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  enum { N = 3, C = 4, S = 29, T = N * C * S, G = 2 };
  static float x[T], y[T], dy[T], dx[T], y0[T], dx0[T];
  static double xr[T], yr[T], dyr[T], dxr[T];
  float dg[C], db[C], dg0[C], db0[C];
  double dgr[C], dbr[C];
  static unsigned char ws[1 << 16] __attribute__((aligned(64)));
  const float eps = 1e-12f;
  for (int op = 0; op < 2; op++) /* 0 BatchNorm (training), 1 GroupNorm */
    for (int lay = 0; lay < 2; lay++) {
      const nk_layout L = lay ? NK_LAYOUT_NSC : NK_LAYOUT_NCS;
      nk_batchnorm_desc d = nk_chnorm_desc_dense(N, C, S, L, NK_DTYPE_F32, eps);
      if (op == 0) d.flags |= NK_CHNORM_TRAINING;
      else d.groups = G;
      const nk_ref_chshape t = {N, C, S, lay, 0, 0};
      for (size_t n = 0; n < N; n++)
        for (size_t c = 0; c < C; c++)
          for (size_t s = 0; s < S; s++) {
            const size_t k = nk_ref_chidx(&t, n, c, s);
            /* channel 0: subnormal multiples of 2^-149; 1: just below FLT_MIN; 2: around
             * 1e-36 with deviations of a few subnormal units; 3: mixed signs */
            const int v = (int)((k * 7 + s * s) % 13) - 6;
            x[k] = c == 0   ? (float)(40 + v) * 0x1p-149f
                   : c == 1 ? 1.154e-38f + (float)v * 0x1p-149f
                   : c == 2 ? 1e-36f + (float)v * 0x1p-146f
                            : (float)v * 0x1p-140f + 0x1p-149f;
            dy[k] = 0.25f * (float)((k * 5) % 9) - 1.0f;
            xr[k] = x[k], dyr[k] = dy[k];
          }
      const double gr[C] = {1.5, -0.75, 2.0, 1.0}, br[C] = {0.25, 0.0, -1.0, 0.5};
      const float gamma[C] = {1.5f, -0.75f, 2.0f, 1.0f}, beta[C] = {0.25f, 0.0f, -1.0f, 0.5f};
      const size_t nsets = op ? N * G : C;
      float mean[N * G], rstd[N * G];
      int first = 1;
      for (size_t k = 0; k < 3; k++)
        for (int th = 0; th < 2; th++) {
          if (!nk_isa_supported(isas[k])) continue;
          ch_ctx cc = ch_ctx_make(isas[k], th ? 2 : 1);
          NK_REQUIRE(cc.ctx != NULL && (!th || cc.pool != NULL), "context");
          nk_context *ctx = cc.ctx;
          size_t wf = 0, wb = 0;
          if (op == 0) {
            NK_REQUIRE(nk_batchnorm_fwd_workspace_size(&d, &wf) == NK_OK &&
                           nk_batchnorm_bwd_workspace_size(&d, &wb) == NK_OK,
                       "workspace sizes");
            NK_REQUIRE(wf <= sizeof ws && wb <= sizeof ws, "workspace %zu %zu", wf, wb);
            NK_REQUIRE(nk_batchnorm_fwd(ctx, &d, x, NULL, gamma, beta, NULL, NULL, NULL, y, mean,
                                        rstd, ws, sizeof ws) == NK_OK,
                       "bn fwd: %s", nk_context_message(ctx));
            NK_REQUIRE(nk_batchnorm_bwd(ctx, &d, x, NULL, gamma, mean, rstd, dy, dx, NULL, dg, db,
                                        ws, sizeof ws) == NK_OK,
                       "bn bwd: %s", nk_context_message(ctx));
          } else {
            NK_REQUIRE(nk_groupnorm_bwd_workspace_size(&d, &wb) == NK_OK && wb <= sizeof ws,
                       "workspace %zu", wb);
            NK_REQUIRE(nk_groupnorm_fwd(ctx, &d, x, gamma, beta, y, mean, rstd) == NK_OK,
                       "gn fwd: %s", nk_context_message(ctx));
            NK_REQUIRE(nk_groupnorm_bwd(ctx, &d, x, gamma, mean, rstd, dy, dx, dg, db, ws,
                                        sizeof ws) == NK_OK,
                       "gn bwd: %s", nk_context_message(ctx));
          }
          if (first) {
            double mr[N * G], rr[N * G];
            for (size_t i = 0; i < nsets; i++) mr[i] = mean[i], rr[i] = rstd[i];
            if (op == 0) {
              nk_ref_batchnorm_fwd(&t, xr, NULL, gr, br, eps, 1, NK_REF_ACT_NONE, 0.1, 0, NULL,
                                   NULL, NULL, yr, NULL, NULL);
              nk_ref_batchnorm_bwd(&t, xr, NULL, gr, eps, 1, mr, rr, dyr, dxr, NULL, dgr, dbr);
            } else {
              nk_ref_groupnorm_fwd(&t, G, xr, gr, br, eps, yr, NULL, NULL);
              nk_ref_groupnorm_bwd(&t, G, xr, gr, eps, dyr, dxr, dgr, dbr);
            }
            /* the header's bounds per set: 2e-6 max(|y|, |y - beta|) (+2^-148), dx 2e-6 max|dx| */
            double P[N * G] = {0}, D[N * G] = {0};
            for (int pass = 0; pass < 2; pass++)
              for (size_t n = 0; n < N; n++)
                for (size_t c = 0; c < C; c++)
                  for (size_t s = 0; s < S; s++) {
                    const size_t i = nk_ref_chidx(&t, n, c, s);
                    const size_t set = op ? n * G + c / (C / G) : c;
                    if (pass == 0) {
                      P[set] = fmax(P[set], fmax(fabs(yr[i]), fabs(yr[i] - br[c])));
                      D[set] = fmax(D[set], fabs(dxr[i]));
                      continue;
                    }
                    NK_CHECK(fabs(y[i] - yr[i]) <= 2e-6 * P[set] + 0x1p-148,
                             "op %d %s: y[%zu] (c %zu) = %.9g, reference %.9g", op,
                             nk_layout_name(L), i, c, y[i], yr[i]);
                    NK_CHECK(fabs(dx[i] - dxr[i]) <= 2e-6 * D[set] + 4 * 0x1p-149,
                             "op %d %s: dx[%zu] (c %zu) = %.9g, reference %.9g", op,
                             nk_layout_name(L), i, c, dx[i], dxr[i]);
                  }
            /* dgamma within 4e-6 sum|dy| max|xhat| of the channel (+1 ulp): the products
             * dy (x - mean) of such sets underflowed in the f32 gradient sums (a BatchNorm
             * dgamma of -3.2e-40 where it is 0; input chnorm-bn-dgamma-subnormal-products) */
            for (size_t c = 0; c < C; c++) {
              double sd = 0.0, xm = 0.0;
              for (size_t n = 0; n < N; n++)
                for (size_t s = 0; s < S; s++) {
                  const size_t i = nk_ref_chidx(&t, n, c, s);
                  const size_t set = op ? n * G + c / (C / G) : c;
                  sd += fabs(dyr[i]);
                  xm = fmax(xm, fabs((xr[i] - mr[set]) * rr[set]));
                }
              NK_CHECK(fabs(dg[c] - dgr[c]) <= 4e-6 * sd * xm + 0x1p-149 &&
                           fabs(db[c] - dbr[c]) <= 4e-6 * sd,
                       "op %d %s: dgamma[%zu] = %.9g (ref %.9g), dbeta %.9g (ref %.9g)", op,
                       nk_layout_name(L), c, dg[c], dgr[c], db[c], dbr[c]);
            }
            memcpy(y0, y, sizeof y), memcpy(dx0, dx, sizeof dx);
            memcpy(dg0, dg, sizeof dg), memcpy(db0, db, sizeof db);
            first = 0;
          } else {
            NK_CHECK(memcmp(y, y0, sizeof y) == 0 && memcmp(dx, dx0, sizeof dx) == 0 &&
                         memcmp(dg, dg0, sizeof dg) == 0 && memcmp(db, db0, sizeof db) == 0,
                     "op %d %s %s th%d: bits differ from the first path", op, nk_layout_name(L),
                     nk_isa_name(isas[k]), th);
          }
          ch_ctx_free(&cc);
        }
    }
}

int main(void) {
  NK_RUN(batchnorm_inference_far_running_mean);
  NK_RUN(batchnorm_inference_backward_xhat_beyond_flt_max);
  NK_RUN(subnormal_sets);
  return nk_test_summary();
}
