/*
 * unifiednorm.c — Unified Normalization (spec layers.md 5): training sequences against the
 * float64 reference (geometric-mean smoothing, warm-up, rho compensation, outlier filtration in
 * the code's scalar form and the paper's per-channel form, windows of the backward statistic),
 * the approximate backward against its own formula, inference and folding, the exact inference
 * backward by finite differences, bitwise equality across ISAs and threads, bad inputs, edges.
 */
#include "resnorm_util.h"

typedef struct un_case {
  nk_dtype dt;
  size_t N, S, C, M, Mb;
  uint32_t flags; /* filter flags */
  int masked, steps;
  int64_t warmup, rho_warmup;
  int outlier_step; /* a step whose batch is scaled by 30 (-1: none) */
} un_case;

static void un_sequence(const un_case *k, nk_context *ctx, int *skips_seen) {
  nk_rng rng = {0xABCDEF12345ull ^ (uint64_t)(k->C * 31 + k->M * 7 + k->dt + k->flags)};
  const tk_geom g = tk_make(k->N, k->S, k->C, 2, 3);
  const size_t R = k->N * k->S, C = k->C;
  nk_unifiednorm_desc d = nk_unifiednorm_desc_dense(k->N, k->S, k->C, k->dt);
  d.window_fwd = k->M, d.window_bwd = k->Mb;
  d.warmup = k->warmup, d.rho_warmup = k->rho_warmup;
  d.flags = NK_RESNORM_TRAINING | k->flags;
  d.x_n_stride = d.y_n_stride = d.dy_n_stride = d.dx_n_stride = g.ns;
  d.x_row_stride = d.y_row_stride = d.dy_row_stride = d.dx_row_stride = g.rs;
  size_t wsz;
  NK_REQUIRE(nk_unifiednorm_fwd_workspace_size(&d, &wsz) == NK_STATUS_OK, "ws");
  void *ws = nk_t_alloc(wsz);
  void *x = tk_alloc(&g, k->dt, 1), *y = tk_alloc(&g, k->dt, 0), *dy = tk_alloc(&g, k->dt, 1);
  void *dx = tk_alloc(&g, k->dt, 0);
  float *gamma = malloc(C * 4), *beta = malloc(C * 4), *save = malloc(2 * C * 4);
  float *phi = malloc(C * 4), *psi = malloc(C * 4), *fw = malloc(k->M * C * 4),
        *bw = malloc(k->Mb * C * 4), *dgam = malloc(C * 4), *dbet = malloc(C * 4);
  double *rx = malloc(R * C * 8), *rdy = malloc(R * C * 8), *ry = malloc(R * C * 8);
  double *rdx = malloc(R * C * 8), *rg = malloc(C * 8), *rb_ = malloc(C * 8), *rr = malloc(C * 8);
  double *rrho = malloc(C * 8), *rphi = malloc(C * 8), *rpsi = malloc(C * 8);
  double *rfw = calloc(k->M * C, 8), *rbw = calloc(k->Mb * C, 8), *rdg = malloc(C * 8),
         *rdb = malloc(C * 8);
  for (size_t c = 0; c < C; c++) {
    gamma[c] = (float)(1.0 + 0.25 * nk_rng_normal(&rng));
    beta[c] = (float)(0.1 * nk_rng_normal(&rng));
    rg[c] = gamma[c], rb_[c] = beta[c], rphi[c] = 1.0, rpsi[c] = 0.0;
  }
  nk_unifiednorm_state st = {phi, psi, fw, bw, 0, 0, 0};
  NK_REQUIRE(nk_unifiednorm_state_init(&d, &st) == NK_STATUS_OK, "init");
  nk_ref_un_state rs = {rphi, rpsi, rfw, rbw, 0, 0, 0};
  nk_ref_un p = {R,
                 C,
                 k->M,
                 k->Mb,
                 1,
                 (k->flags & NK_UNIFIEDNORM_FILTER) != 0,
                 (k->flags & NK_UNIFIEDNORM_FILTER_PER_CHANNEL) != 0,
                 1e-5,
                 (double)0.9f,
                 (double)0.2f,
                 5.0,
                 k->warmup,
                 k->rho_warmup};
  for (int step = 0; step < k->steps; step++) {
    const double sc = step == k->outlier_step ? 30.0 : 1.0 + 0.1 * step;
    tk_fill(&g, x, k->dt, &rng, sc);
    tk_fill(&g, dy, k->dt, &rng, 1.0);
    uint8_t *mask = NULL;
    if (k->masked) {
      mask = malloc(R + 1);
      for (size_t i = 0; i < R; i++) mask[i] = nk_rng_uniform(&rng) < 0.8;
      mask[0] = 1;
    }
    tk_to_ref(&g, x, k->dt, rx);
    tk_to_ref(&g, dy, k->dt, rdy);
    NK_CHECK(nk_unifiednorm_fwd(ctx, &d, x, mask, gamma, beta, &st, y, save, ws, wsz) ==
                 NK_STATUS_OK,
             "fwd");
    nk_ref_unifiednorm_fwd(&p, &rs, rx, mask, rg, rb_, ry, rr, rrho);
    NK_CHECK(st.skip == rs.skip, "step %d: skip %d vs reference %d", step, st.skip, rs.skip);
    NK_CHECK(st.skips == rs.skips && st.step == rs.step, "counters");
    if (st.skip) ++*skips_seen;
    tk_compare("y", &g, k->dt, y, ry, 2e-6, 0.0);
    vec_compare("phi", C, phi, rphi, 1e-6, 0.0);
    vec_compare("rho", C, save + C, rrho, 1e-6, 0.0);
    for (size_t c = 0; c < C; c++) rr[c] = save[c], rrho[c] = save[C + c];
    NK_CHECK(nk_unifiednorm_bwd(ctx, &d, x, gamma, save, &st, dy, dx, dgam, dbet, ws, wsz) ==
                 NK_STATUS_OK,
             "bwd");
    nk_ref_unifiednorm_bwd(&p, &rs, rx, rg, rr, rrho, rdy, rdx, rdg, rdb);
    tk_compare("dx", &g, k->dt, dx, rdx, 4e-6, 0.0);
    vec_compare("psi", C, psi, rpsi, 2e-6, 1e-7);
    vec_compare("dgamma", C, dgam, rdg, 2e-6, 1e-6);
    vec_compare("dbeta", C, dbet, rdb, 2e-6, 1e-6);
    free(mask);
  }
  free(ws), free(x), free(y), free(dy), free(dx), free(gamma), free(beta), free(save);
  free(phi), free(psi), free(fw), free(bw), free(dgam), free(dbet), free(rx), free(rdy);
  free(ry), free(rdx), free(rg), free(rb_), free(rr), free(rrho), free(rphi), free(rpsi);
  free(rfw), free(rbw), free(rdg), free(rdb);
}

NK_TEST(nlp_defaults_sequence) {
  /* No filtration (the NMT scripts); short warm-ups so the window and rho phases are reached. */
  int skips = 0;
  for (int di = 0; di < 3; di++) {
    un_case k = {ch_dtypes[di], 3, 5, 24, 3, 2, 0, di == 0, 9, 3, 5, -1};
    un_sequence(&k, NULL, &skips);
  }
  NK_CHECK(skips == 0, "no filtration, no skip");
}

NK_TEST(outlier_filtration_code_scalar_variance) {
  int skips = 0;
  un_case k = {NK_DTYPE_F32, 2, 6, 20, 4, 3, NK_UNIFIEDNORM_FILTER, 1, 10, 2, 3, 7};
  un_sequence(&k, NULL, &skips);
  NK_CHECK(skips >= 1, "the outlier batch was not filtered");
}

NK_TEST(outlier_filtration_paper_per_channel) {
  int skips = 0;
  un_case k = {NK_DTYPE_BF16, 2, 6, 20, 3, 4,
               NK_UNIFIEDNORM_FILTER | NK_UNIFIEDNORM_FILTER_PER_CHANNEL, 0, 10, 2, 3, 6};
  un_sequence(&k, NULL, &skips);
  NK_CHECK(skips >= 1, "the outlier batch was not filtered");
}

NK_TEST(window_one_always_skips) {
  int skips = 0;
  un_case k = {NK_DTYPE_F32, 2, 4, 8, 1, 1, NK_UNIFIEDNORM_FILTER, 0, 4, 2, 0, -1};
  un_sequence(&k, NULL, &skips);
  NK_CHECK(skips == 3, "M == 1 skips every step from warm-up on (%d)", skips);
}

NK_TEST(threads_long_sequence) {
  int skips = 0;
  ch_ctx cc = ch_ctx_make(NK_ISA_AUTO, 3);
  un_case k = {NK_DTYPE_F16, 4, 90, 130, 4, 4, NK_UNIFIEDNORM_FILTER, 1, 8, 2, 3, 6};
  un_sequence(&k, cc.ctx, &skips);
  ch_ctx_free(&cc);
}

/* Inference UN is y = x * scale + shift (nk_unifiednorm_fold) and its backward is exact. */
NK_TEST(inference_fold_and_finite_differences) {
  const size_t N = 2, S = 3, C = 5, R = N * S;
  nk_rng rng = {99};
  float x[30], y[30], dy[30], dx[30], phi[5], g[5], b[5], save[10], scale[5], shift[5], dg[5],
      db[5];
  for (size_t i = 0; i < R * C; i++) x[i] = (float)nk_rng_normal(&rng), dy[i] = (float)nk_rng_normal(&rng);
  for (size_t c = 0; c < C; c++)
    phi[c] = (float)(0.3 + nk_rng_uniform(&rng)), g[c] = (float)(1 + 0.2 * nk_rng_normal(&rng)),
    b[c] = (float)(0.1 * c);
  nk_unifiednorm_desc d = nk_unifiednorm_desc_dense(N, S, C, NK_DTYPE_F32);
  nk_unifiednorm_state st = {phi, NULL, NULL, NULL, 0, 0, 0};
  size_t wsz;
  nk_unifiednorm_fwd_workspace_size(&d, &wsz);
  void *ws = nk_t_alloc(wsz);
  NK_CHECK(nk_unifiednorm_fwd(NULL, &d, x, NULL, g, b, &st, y, save, ws, wsz) == NK_STATUS_OK,
           "fwd");
  NK_CHECK(nk_unifiednorm_fold(C, d.eps, phi, g, b, scale, shift) == NK_STATUS_OK, "fold");
  for (size_t i = 0; i < R; i++)
    for (size_t c = 0; c < C; c++) {
      const double ref = (double)x[i * C + c] * g[c] / sqrt((double)phi[c] + 1e-5) + b[c];
      const double folded = (double)x[i * C + c] * scale[c] + shift[c];
      NK_CHECK(fabs(y[i * C + c] - ref) <= 2e-6 * (1 + fabs(ref)), "y");
      NK_CHECK(fabs(folded - ref) <= 2e-6 * (1 + fabs(ref)), "folded");
    }
  NK_CHECK(nk_unifiednorm_bwd(NULL, &d, x, g, save, NULL, dy, dx, dg, db, ws, wsz) ==
               NK_STATUS_OK,
           "bwd");
  /* finite differences of the double reference forward, against the library's gradient */
  nk_ref_un p = {R, C, 4, 4, 0, 0, 0, 1e-5, 0.9, 0.2, 5.0, 0, 0};
  double rphi[5], rx[30], yp[30], ym[30], rg[5], rb[5], r[5], rho[5];
  nk_ref_un_state rs = {rphi, NULL, NULL, NULL, 0, 0, 0};
  for (size_t c = 0; c < C; c++) rphi[c] = phi[c], rg[c] = g[c], rb[c] = b[c];
  for (size_t i = 0; i < R * C; i++) rx[i] = x[i];
  const double h = 1e-6;
  for (size_t i = 0; i < R * C; i++) {
    rx[i] = x[i] + h;
    nk_ref_unifiednorm_fwd(&p, &rs, rx, NULL, rg, rb, yp, r, rho);
    rx[i] = x[i] - h;
    nk_ref_unifiednorm_fwd(&p, &rs, rx, NULL, rg, rb, ym, r, rho);
    rx[i] = x[i];
    double fd = 0.0;
    for (size_t j = 0; j < R * C; j++) fd += dy[j] * (yp[j] - ym[j]) / (2 * h);
    NK_CHECK(fabs(fd - dx[i]) <= 1e-5 * (1 + fabs(fd)), "dx[%zu] %.9g vs fd %.9g", i,
             (double)dx[i], fd);
  }
  NK_CHECK(nk_unifiednorm_fold(C, 0.0f, phi, g, b, scale, shift) == NK_STATUS_INVALID_ARGUMENT,
           "fold eps 0");
  free(ws);
}

NK_TEST(bitwise_across_isas_and_threads) {
  const size_t N = 2, S = 100, C = 72, R = N * S;
  nk_unifiednorm_desc d = nk_unifiednorm_desc_dense(N, S, C, NK_DTYPE_F32);
  d.window_fwd = 3, d.window_bwd = 2, d.warmup = 2, d.rho_warmup = 2;
  d.flags = NK_RESNORM_TRAINING | NK_UNIFIEDNORM_FILTER;
  size_t wsz;
  nk_unifiednorm_fwd_workspace_size(&d, &wsz);
  void *ws = nk_t_alloc(wsz);
  nk_rng rng = {31337};
  const tk_geom g = tk_make(N, S, C, 0, 0);
  void *x = tk_alloc(&g, d.dtype, 1), *dy = tk_alloc(&g, d.dtype, 1);
  tk_fill(&g, dy, d.dtype, &rng, 1.0);
  const size_t bytes = R * C * 4;
  float *y0 = nk_t_alloc(bytes), *dx0 = nk_t_alloc(bytes), *y1 = nk_t_alloc(bytes),
        *dx1 = nk_t_alloc(bytes);
  float s0[2 * 72 + 5 * 72], s1[2 * 72 + 5 * 72];
  int first = 1, ran = 0;
  for (int ii = 0; ii < 3; ii++)
    for (size_t th = 1; th <= 3; th++) {
      ch_ctx cc = ch_ctx_make(rn_isas[ii], th);
      if (cc.ctx == NULL) continue;
      ran++;
      float phi[72], psi[72], fw[3 * 72], bw[2 * 72], save[144];
      nk_unifiednorm_state st = {phi, psi, fw, bw, 0, 0, 0};
      nk_unifiednorm_state_init(&d, &st);
      nk_rng r2 = {777};
      for (int step = 0; step < 6; step++) {
        tk_fill(&g, x, d.dtype, &r2, 1.0 + step);
        NK_CHECK(nk_unifiednorm_fwd(cc.ctx, &d, x, NULL, NULL, NULL, &st, first ? y0 : y1, save,
                                    ws, wsz) == NK_STATUS_OK,
                 "fwd");
        NK_CHECK(nk_unifiednorm_bwd(cc.ctx, &d, x, NULL, save, &st, dy, first ? dx0 : dx1, NULL,
                                    NULL, ws, wsz) == NK_STATUS_OK,
                 "bwd");
      }
      float *s = first ? s0 : s1;
      memcpy(s, phi, sizeof phi), memcpy(s + 72, psi, sizeof psi), memcpy(s + 144, fw, sizeof fw);
      memcpy(s + 360, bw, sizeof bw);
      if (!first) {
        NK_CHECK(memcmp(y0, y1, bytes) == 0, "y differs (isa %d, %zu threads)", ii, th);
        NK_CHECK(memcmp(dx0, dx1, bytes) == 0, "dx differs (isa %d, %zu threads)", ii, th);
        NK_CHECK(memcmp(s0, s1, sizeof s0) == 0, "state differs (isa %d, %zu threads)", ii, th);
      }
      first = 0;
      ch_ctx_free(&cc);
    }
  NK_CHECK(ran >= 3, "ran %d", ran);
  free(ws), free(x), free(dy), free(y0), free(dx0), free(y1), free(dx1);
}

NK_TEST(bad_inputs) {
  const size_t N = 2, S = 3, C = 4;
  nk_unifiednorm_desc d = nk_unifiednorm_desc_dense(N, S, C, NK_DTYPE_F32);
  d.flags = NK_RESNORM_TRAINING;
  size_t wsz;
  nk_unifiednorm_fwd_workspace_size(&d, &wsz);
  void *ws = nk_t_alloc(wsz);
  float x[24] = {0}, y[24], dx[24], phi[4], psi[4], fw[16], bw[16], save[8];
  nk_unifiednorm_state st = {phi, psi, fw, bw, 0, 0, 0};
  nk_unifiednorm_state_init(&d, &st);
  const nk_status INV = NK_STATUS_INVALID_ARGUMENT;
  NK_CHECK(nk_unifiednorm_bwd(NULL, &d, x, NULL, save, &st, x, dx, NULL, NULL, ws, wsz) ==
               NK_STATUS_MISUSE,
           "backward before any forward");
#define FWD(dd, xx, yy) nk_unifiednorm_fwd(NULL, dd, xx, NULL, NULL, NULL, &st, yy, save, ws, wsz)
  NK_CHECK(FWD(NULL, x, y) == INV, "NULL desc");
  NK_CHECK(FWD(&d, NULL, y) == INV, "NULL x");
  NK_CHECK(FWD(&d, x, x + 2) == INV, "partial overlap");
  nk_unifiednorm_desc b = d;
  b.window_fwd = 0;
  NK_CHECK(FWD(&b, x, y) == INV, "window 0");
  b = d, b.eps = -1.0f;
  NK_CHECK(FWD(&b, x, y) == INV, "eps < 0");
  b = d, b.rho_min = 2.0f;
  NK_CHECK(FWD(&b, x, y) == INV, "rho_min > 1");
  b = d, b.alpha = -0.5f;
  NK_CHECK(FWD(&b, x, y) == INV, "alpha < 0");
  b = d, b.warmup = -3;
  NK_CHECK(FWD(&b, x, y) == INV, "warmup < 0");
  b = d, b.dtype = NK_DTYPE_F16, b.param_dtype = NK_DTYPE_BF16;
  NK_CHECK(FWD(&b, x, y) == NK_STATUS_UNSUPPORTED, "mixed half dtypes");
  b = d, b.flags |= 0x8000;
  NK_CHECK(FWD(&b, x, y) == INV, "unknown flag");
  NK_CHECK(nk_unifiednorm_fwd(NULL, &d, x, NULL, NULL, NULL, &st, y, save, ws, 8) ==
               NK_STATUS_MISUSE,
           "workspace");
  NK_CHECK(nk_unifiednorm_fwd(NULL, &d, x, NULL, NULL, NULL, &st, fw, save, ws, wsz) == INV,
           "y overlapping the window");
  NK_CHECK(FWD(&d, x, y) == NK_STATUS_OK, "valid");
  NK_CHECK(nk_unifiednorm_bwd(NULL, &d, x, NULL, save, &st, x, psi, NULL, NULL, ws, wsz) == INV,
           "dx overlapping psi");
  NK_CHECK(nk_unifiednorm_bwd(NULL, &d, x, NULL, NULL, &st, x, dx, NULL, NULL, ws, wsz) == INV,
           "NULL save");
  NK_CHECK(nk_unifiednorm_state_init(NULL, &st) == INV, "init NULL");
#undef FWD
  free(ws);
}

NK_TEST(edge_cases) {
  const size_t N = 1, S = 6, C = 3, R = N * S;
  nk_unifiednorm_desc d = nk_unifiednorm_desc_dense(N, S, C, NK_DTYPE_F32);
  d.flags = NK_RESNORM_TRAINING | NK_UNIFIEDNORM_FILTER;
  d.warmup = 0;
  size_t wsz;
  nk_unifiednorm_fwd_workspace_size(&d, &wsz);
  void *ws = nk_t_alloc(wsz);
  float x[18], y[18], dy[18], dx[18], phi[3], psi[3], fw[12], bw[12], save[6];
  nk_unifiednorm_state st = {phi, psi, fw, bw, 0, 0, 0};
  nk_unifiednorm_state_init(&d, &st);
  nk_unifiednorm_desc e = d;
  e.spatial = 0;
  NK_CHECK(nk_unifiednorm_fwd(NULL, &e, NULL, NULL, NULL, NULL, &st, NULL, NULL, NULL, 0) ==
               NK_STATUS_OK,
           "empty");
  NK_CHECK(st.step == 0, "empty call counted");
  /* channel 0 all zero (log 0 in the geometric mean), channel 1 NaN in one token, 2 normal */
  for (int step = 0; step < 6; step++) {
    for (size_t i = 0; i < R; i++) {
      x[i * C] = 0.0f;
      x[i * C + 1] = (float)i - 2.0f;
      x[i * C + 2] = (float)(i % 3) + 0.5f;
      dy[i * C] = dy[i * C + 1] = dy[i * C + 2] = 1.0f;
    }
    if (step == 2) x[4] = NAN;
    NK_CHECK(nk_unifiednorm_fwd(NULL, &d, x, NULL, NULL, NULL, &st, y, save, ws, wsz) ==
                 NK_STATUS_OK,
             "fwd");
    NK_CHECK(nk_unifiednorm_bwd(NULL, &d, x, NULL, save, &st, dy, dx, NULL, NULL, ws, wsz) ==
                 NK_STATUS_OK,
             "bwd");
    for (size_t i = 0; i < R; i++) {
      NK_CHECK(y[i * C] == 0.0f && isfinite(dx[i * C]), "zero channel: 0 and finite gradient");
      NK_CHECK(isfinite(y[i * C + 2]), "channel 2 finite at step %d", step);
    }
  }
  NK_CHECK(isfinite(phi[0]) && isfinite(phi[2]), "state of the other channels finite");
  free(ws);
}

int main(void) {
  NK_RUN(nlp_defaults_sequence);
  NK_RUN(outlier_filtration_code_scalar_variance);
  NK_RUN(outlier_filtration_paper_per_channel);
  NK_RUN(window_one_always_skips);
  NK_RUN(threads_long_sequence);
  NK_RUN(inference_fold_and_finite_differences);
  NK_RUN(bitwise_across_isas_and_threads);
  NK_RUN(bad_inputs);
  NK_RUN(edge_cases);
  return nk_test_summary();
}
