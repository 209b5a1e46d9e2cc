/*
 * powernorm.c — PowerNorm (spec layers.md 4): forward against the float64 reference over
 * sequences of training steps (running statistic, warm-up, CODE/PAPER/PN-V, group scaling,
 * padding mask), the approximate backward against its own formula (nu recurrence included), the
 * exact inference and PN-V training backwards by finite differences, bitwise equality across ISAs and threads, bad
 * inputs and edge cases.
 */
#include "resnorm_util.h"

typedef struct pn_case {
  nk_dtype dt;
  nk_powernorm_mode mode;
  size_t N, S, C, G;
  int masked;
  int64_t warmup;
  int steps;
  uint32_t extra_flags;
} pn_case;

static uint8_t *make_mask(nk_rng *rng, size_t R) {
  uint8_t *m = malloc(R);
  for (size_t i = 0; i < R; i++) m[i] = nk_rng_uniform(rng) < 0.75;
  m[0] = 1;
  return m;
}

/* Runs `steps` training steps (forward + backward) through the library (ctx) and the
 * reference, comparing everything after each step. */
static void pn_sequence(const pn_case *k, nk_context *ctx) {
  nk_rng rng = {0x9E3779B97F4A7C15ull ^ (uint64_t)(k->C * 131 + k->G * 7 + k->dt)};
  const tk_geom g = tk_make(k->N, k->S, k->C, 3, 5);
  const size_t R = k->N * k->S, C = k->C;
  nk_powernorm_desc d = nk_powernorm_desc_dense(k->N, k->S, k->C, k->dt);
  d.mode = k->mode;
  d.groups = k->G;
  d.warmup = k->warmup;
  d.flags = NK_RESNORM_TRAINING | k->extra_flags;
  d.x_n_stride = d.y_n_stride = d.dy_n_stride = d.dx_n_stride = g.ns;
  d.x_row_stride = d.y_row_stride = d.dy_row_stride = d.dx_row_stride = g.rs;
  size_t wsz, wsb;
  NK_REQUIRE(nk_powernorm_fwd_workspace_size(&d, &wsz) == NK_STATUS_OK, "ws");
  NK_REQUIRE(nk_powernorm_bwd_workspace_size(&d, &wsb) == NK_STATUS_OK, "ws");
  void *ws = nk_t_alloc(wsz > wsb ? wsz : wsb);
  void *x = tk_alloc(&g, k->dt, 1), *y = tk_alloc(&g, k->dt, 0), *dy = tk_alloc(&g, k->dt, 1);
  void *dx = tk_alloc(&g, k->dt, 0);
  float *gamma = malloc(C * 4), *beta = malloc(C * 4), *phi = malloc(C * 4), *nu = malloc(C * 4);
  float *save = malloc(2 * C * 4), *dgam = malloc(C * 4), *dbet = malloc(C * 4);
  double *rx = malloc(R * C * 8), *rdy = malloc(R * C * 8), *ry = malloc(R * C * 8);
  double *rdx = malloc(R * C * 8), *rg = malloc(C * 8), *rb_ = malloc(C * 8);
  double *rphi = malloc(C * 8), *rnu = malloc(C * 8), *rrf = malloc(C * 8), *rrb = malloc(C * 8);
  double *rdg = malloc(C * 8), *rdb = malloc(C * 8);
  for (size_t c = 0; c < C; c++) {
    gamma[c] = (float)(1.0 + 0.25 * nk_rng_normal(&rng));
    beta[c] = (float)(0.1 * nk_rng_normal(&rng));
    rg[c] = gamma[c], rb_[c] = beta[c];
    rphi[c] = 1.0, rnu[c] = 0.0;
  }
  nk_powernorm_state st = {phi, nu, 0};
  NK_CHECK(nk_powernorm_state_init(C, &st) == NK_STATUS_OK, "init");
  long long rstep = 0;
  nk_ref_pn p = {R, C, k->G, (int)k->mode, 1, 1e-5, 1e-5, 0.9, 0.9, (long long)k->warmup};
  for (int step = 0; step < k->steps; step++) {
    tk_fill(&g, x, k->dt, &rng, 1.0 + 0.5 * step);
    tk_fill(&g, dy, k->dt, &rng, 1.0);
    uint8_t *mask = k->masked ? make_mask(&rng, R) : NULL;
    tk_to_ref(&g, x, k->dt, rx);
    tk_to_ref(&g, dy, k->dt, rdy);
    NK_CHECK(nk_powernorm_fwd(ctx, &d, x, mask, gamma, beta, &st, y, save, ws, wsz) ==
                 NK_STATUS_OK,
             "fwd");
    nk_ref_powernorm_fwd(&p, rx, mask, rg, rb_, rphi, &rstep, ry, rrf, rrb);
    tk_compare("y", &g, k->dt, y, ry, 2e-6, 0.0);
    vec_compare("phi", C, phi, rphi, 1e-6, 0.0);
    NK_CHECK(st.step == rstep, "step %lld vs %lld", (long long)st.step, rstep);
    /* The reference backward uses the library's saved scales (as f32) so that the test checks
     * the formula, not the scales twice. */
    for (size_t c = 0; c < C; c++) rrf[c] = save[c], rrb[c] = save[C + c];
    NK_CHECK(nk_powernorm_bwd(ctx, &d, x, mask, gamma, save, &st, dy, dx, dgam, dbet, ws, wsb) ==
                 NK_STATUS_OK,
             "bwd");
    nk_ref_powernorm_bwd(&p, rx, mask, rg, rrf, rrb, rnu, rdy, rdx, rdg, rdb);
    tk_compare("dx", &g, k->dt, dx, rdx, 4e-6, 0.0);
    vec_compare("nu", C, nu, rnu, 2e-6, 1e-7);
    vec_compare("dgamma", C, dgam, rdg, 2e-6, 1e-6);
    vec_compare("dbeta", C, dbet, rdb, 2e-6, 1e-6);
    free(mask);
  }
  free(ws), free(x), free(y), free(dy), free(dx), free(gamma), free(beta), free(phi), free(nu);
  free(save), free(dgam), free(dbet), free(rx), free(rdy), free(ry), free(rdx), free(rg);
  free(rb_), free(rphi), free(rnu), free(rrf), free(rrb), free(rdg), free(rdb);
}

NK_TEST(code_mode_sequence_matches_reference) {
  for (int di = 0; di < 3; di++)
    for (int masked = 0; masked < 2; masked++) {
      pn_case k = {ch_dtypes[di], NK_POWERNORM_CODE, 3, 7, 40, 4, masked, 3, 5, 0};
      pn_sequence(&k, NULL);
    }
}

NK_TEST(code_mode_no_group_scaling) {
  pn_case k = {NK_DTYPE_F32, NK_POWERNORM_CODE, 2, 9, 37, 0, 1, 2, 4, 0};
  pn_sequence(&k, NULL);
}

NK_TEST(paper_mode_sequence_matches_reference) {
  for (int di = 0; di < 3; di++) {
    pn_case k = {ch_dtypes[di], NK_POWERNORM_PAPER, 4, 5, 33, 0, 0, 100, 4, 0};
    pn_sequence(&k, NULL);
  }
  pn_case k = {NK_DTYPE_F32, NK_POWERNORM_PAPER, 2, 6, 64, 8, 1, 0, 3, 0};
  pn_sequence(&k, NULL);
}

/* The reference gradient dx (R x C) against central differences (h = 1e-6) of <w, y> through
 * the reference forward, within 1e-7 (1 + |fd|). For the exact modes checked here (inference,
 * PN-V training) y does not depend on phi or step; the forward's updates of them go to copies. */
static void check_ref_fd(const nk_ref_pn *p, const double *x, const unsigned char *mask,
                         const double *g, const double *b, const double *phi, const double *w,
                         const double *dx) {
  const size_t R = p->R, C = p->C, n = R * C;
  double *xp = malloc(n * 8), *yp = malloc(n * 8), *ym = malloc(n * 8), *ph = malloc(C * 8);
  double *rf = malloc(C * 8), *rb = malloc(C * 8);
  const double h = 1e-6;
  for (size_t i = 0; i < n; i++) {
    long long step = 0;
    memcpy(xp, x, n * 8);
    memcpy(ph, phi, C * 8);
    xp[i] = x[i] + h;
    nk_ref_powernorm_fwd(p, xp, mask, g, b, ph, &step, yp, rf, rb);
    memcpy(ph, phi, C * 8);
    xp[i] = x[i] - h;
    nk_ref_powernorm_fwd(p, xp, mask, g, b, ph, &step, ym, rf, rb);
    double fd = 0.0;
    for (size_t j = 0; j < n; j++) fd += w[j] * (yp[j] - ym[j]) / (2 * h);
    NK_CHECK(fabs(fd - dx[i]) <= 1e-7 * (1.0 + fabs(fd)), "dx[%zu] %.12g vs fd %.12g", i, dx[i],
             fd);
  }
  free(xp), free(yp), free(ym), free(ph), free(rf), free(rb);
}

/* PN-V: the batch statistic in every step (warmup ignored), phi kept for inference, the exact
 * backward over the valid tokens; nu untouched (it stays 0 in the reference and the library). */
NK_TEST(pnv_mode_sequence_matches_reference) {
  for (int di = 0; di < 3; di++)
    for (int masked = 0; masked < 2; masked++) {
      pn_case k = {ch_dtypes[di], NK_POWERNORM_PNV, 3, 7, 40, 4, masked, 3, 3, 0};
      pn_sequence(&k, NULL);
    }
  pn_case k = {NK_DTYPE_F32, NK_POWERNORM_PNV, 2, 9, 37, 0, 1, 0, 2, 0};
  pn_sequence(&k, NULL);
  ch_ctx cc = ch_ctx_make(NK_ISA_AUTO, 3);
  pn_case big = {NK_DTYPE_F32, NK_POWERNORM_PNV, 4, 150, 200, 4, 1, 0, 2, 0};
  pn_sequence(&big, cc.ctx);
  ch_ctx_free(&cc);
}

/* The PN-V training forward is a function of x alone (the batch statistic of the valid tokens;
 * padding tokens are normalized by it but do not enter it): the reference's exact backward
 * against central differences of the reference forward, with a mask and group scaling; then
 * the library against the reference gradient. A padding token's gradient has no statistic
 * term (checked: it is gamma dy rb gs-chained only). */
NK_TEST(pnv_training_backward_finite_differences) {
  nk_rng rng = {91};
  enum { N = 2, S = 4, C = 8, G = 2, R = N * S };
  const unsigned char mask[R] = {1, 1, 0, 1, 1, 0, 1, 1};
  nk_ref_pn p = {R, C, G, NK_POWERNORM_PNV, 1, 1e-5, 1e-5, 0.9, 0.9, 0};
  double x[R * C], w[R * C], y[R * C], dx[R * C], phi[C], g[C], b[C], rf[C], rb[C], nu[C];
  double dg[C], db[C];
  for (size_t i = 0; i < R * C; i++)
    x[i] = (float)nk_rng_normal(&rng), w[i] = (float)nk_rng_normal(&rng);
  for (size_t c = 0; c < C; c++) {
    g[c] = (float)(1.0 + 0.3 * nk_rng_normal(&rng));
    b[c] = (float)(0.1 * nk_rng_normal(&rng));
    phi[c] = 1.0, nu[c] = 0.0;
  }
  long long step = 0;
  nk_ref_powernorm_fwd(&p, x, mask, g, b, phi, &step, y, rf, rb);
  for (size_t c = 0; c < C; c++) NK_CHECK(rf[c] == rb[c], "PN-V normalizes by the batch scale");
  nk_ref_powernorm_bwd(&p, x, mask, g, rf, rb, nu, w, dx, dg, db);
  check_ref_fd(&p, x, mask, g, b, phi, w, dx);
  double maxdiff_approx = 0.0;
  for (size_t c = 0; c < C; c++) NK_CHECK(nu[c] == 0.0, "PN-V must not update nu");
  /* The CODE-mode backward on the same batch (warm-up: the same forward) is the approximate one:
   * its gradient differs from the exact one by more than rounding (the test can tell them). */
  {
    nk_ref_pn pc = p;
    pc.mode = NK_POWERNORM_CODE;
    double dxc[R * C], nuc[C] = {0};
    nk_ref_powernorm_bwd(&pc, x, mask, g, rf, rb, nuc, w, dxc, dg, db);
    for (size_t i = 0; i < R * C; i++)
      if (fabs(dxc[i] - dx[i]) > maxdiff_approx) maxdiff_approx = fabs(dxc[i] - dx[i]);
    NK_CHECK(maxdiff_approx > 1e-2, "approximate and exact backward too close (%g)",
             maxdiff_approx);
  }
  /* The library (f32, every ISA through the default context) against the exact gradient. */
  nk_powernorm_desc d = nk_powernorm_desc_dense(N, S, C, NK_DTYPE_F32);
  d.groups = G;
  d.mode = NK_POWERNORM_PNV;
  d.warmup = 1000; /* ignored by PN-V */
  d.flags = NK_RESNORM_TRAINING;
  float xf[R * C], wf[R * C], yf[R * C], dxf[R * C], phif[C], gf[C], bf[C], save[2 * C];
  float dgf[C], dbf[C];
  for (size_t i = 0; i < R * C; i++) xf[i] = (float)x[i], wf[i] = (float)w[i];
  for (size_t c = 0; c < C; c++) gf[c] = (float)g[c], bf[c] = (float)b[c], phif[c] = 1.0f;
  nk_powernorm_state st = {phif, NULL, 0}; /* PN-V needs no nu */
  size_t wsz;
  nk_powernorm_fwd_workspace_size(&d, &wsz);
  void *ws = nk_t_alloc(wsz);
  NK_CHECK(nk_powernorm_fwd(NULL, &d, xf, mask, gf, bf, &st, yf, save, ws, wsz) == NK_STATUS_OK,
           "fwd");
  NK_CHECK(nk_powernorm_bwd(NULL, &d, xf, mask, gf, save, &st, wf, dxf, dgf, dbf, ws, wsz) ==
               NK_STATUS_OK,
           "bwd");
  for (size_t c = 0; c < C; c++) rf[c] = rb[c] = save[c];
  nk_ref_powernorm_bwd(&p, x, mask, g, rf, rb, nu, w, dx, dg, db);
  const tk_geom tg = tk_make(N, S, C, 0, 0);
  tk_compare("dx", &tg, NK_DTYPE_F32, dxf, dx, 4e-6, 0.0);
  vec_compare("dgamma", C, dgf, dg, 2e-6, 1e-7);
  vec_compare("dbeta", C, dbf, db, 2e-6, 1e-7);
  /* Without the mask the backward computes another (wrong for this batch) gradient. */
  NK_CHECK(nk_powernorm_bwd(NULL, &d, xf, NULL, gf, save, &st, wf, dxf, dgf, dbf, ws, wsz) ==
               NK_STATUS_OK,
           "bwd without mask");
  double off = 0.0;
  for (size_t i = 0; i < R * C; i++)
    if (fabs(dxf[i] - dx[i]) > off) off = fabs(dxf[i] - dx[i]);
  NK_CHECK(off > 1e-3, "the mask did not change the PN-V gradient (%g)", off);
  /* All padding: INVALID_ARGUMENT, nothing written. */
  const uint8_t none[R] = {0};
  for (size_t i = 0; i < R * C; i++) dxf[i] = -7.0f;
  NK_CHECK(nk_powernorm_bwd(NULL, &d, xf, none, gf, save, &st, wf, dxf, dgf, dbf, ws, wsz) ==
               NK_STATUS_INVALID_ARGUMENT,
           "no valid token");
  for (size_t i = 0; i < R * C; i++) NK_CHECK(dxf[i] == -7.0f, "failed call wrote dx");
  /* Inference PN-V: stat = phi (the running statistic the training steps built), exact map. */
  NK_CHECK(st.step == 1, "one training step");
  free(ws);
}

NK_TEST(large_channels_threads) {
  /* Several chunks, long group rows, 3 threads. */
  ch_ctx cc = ch_ctx_make(NK_ISA_AUTO, 3);
  pn_case k = {NK_DTYPE_F32, NK_POWERNORM_CODE, 4, 150, 200, 4, 1, 2, 3, 0};
  pn_sequence(&k, cc.ctx);
  ch_ctx_free(&cc);
}

/* Inference PowerNorm is an exact map (group scaling, then a per-channel affine map): the
 * reference gradient against central differences of the reference forward, then the library
 * against the reference gradient. */
NK_TEST(inference_backward_finite_differences) {
  nk_rng rng = {77};
  const size_t N = 2, S = 3, C = 8, G = 2, R = N * S;
  nk_ref_pn p = {R, C, G, NK_REF_PN_CODE, 0, 1e-5, 1e-5, 0.9, 0.9, 0};
  double x[48], w[48], y[48], dx[48], phi[8], g[8], b[8], rf[8], rb[8], nu[8], dg[8], db[8];
  for (size_t i = 0; i < R * C; i++) x[i] = nk_rng_normal(&rng), w[i] = nk_rng_normal(&rng);
  for (size_t c = 0; c < C; c++) {
    phi[c] = 0.5 + nk_rng_uniform(&rng);
    g[c] = 1.0 + 0.3 * nk_rng_normal(&rng);
    b[c] = 0.1 * nk_rng_normal(&rng);
    nu[c] = 0.0;
  }
  long long step = 0;
  nk_ref_powernorm_fwd(&p, x, NULL, g, b, phi, &step, y, rf, rb);
  nk_ref_powernorm_bwd(&p, x, NULL, g, rf, rb, nu, w, dx, dg, db);
  check_ref_fd(&p, x, NULL, g, b, phi, w, dx);
  /* The library, f32, inference. */
  nk_powernorm_desc d = nk_powernorm_desc_dense(N, S, C, NK_DTYPE_F32);
  d.groups = G;
  float xf[48], wf[48], yf[48], dxf[48], phif[8], gf[8], bf[8], save[16], dgf[8], dbf[8];
  for (size_t i = 0; i < R * C; i++) xf[i] = (float)x[i], wf[i] = (float)w[i];
  for (size_t c = 0; c < C; c++) phif[c] = (float)phi[c], gf[c] = (float)g[c], bf[c] = (float)b[c];
  for (size_t i = 0; i < R * C; i++) x[i] = xf[i], w[i] = wf[i];
  for (size_t c = 0; c < C; c++) phi[c] = phif[c], g[c] = gf[c], b[c] = bf[c];
  nk_ref_powernorm_fwd(&p, x, NULL, g, b, phi, &step, y, rf, rb);
  nk_ref_powernorm_bwd(&p, x, NULL, g, rf, rb, nu, w, dx, dg, db);
  nk_powernorm_state st = {phif, NULL, 0};
  size_t wsz;
  nk_powernorm_fwd_workspace_size(&d, &wsz);
  void *ws = nk_t_alloc(wsz);
  NK_CHECK(nk_powernorm_fwd(NULL, &d, xf, NULL, gf, bf, &st, yf, save, ws, wsz) == NK_STATUS_OK,
           "fwd");
  NK_CHECK(nk_powernorm_bwd(NULL, &d, xf, NULL, gf, save, NULL, wf, dxf, dgf, dbf, ws, wsz) ==
               NK_STATUS_OK,
           "bwd");
  const tk_geom tg = tk_make(N, S, C, 0, 0);
  tk_compare("y", &tg, NK_DTYPE_F32, yf, y, 2e-6, 0.0);
  tk_compare("dx", &tg, NK_DTYPE_F32, dxf, dx, 2e-6, 0.0);
  vec_compare("dgamma", C, dgf, dg, 2e-6, 1e-7);
  NK_CHECK(st.step == 0, "inference must not count steps");
  free(ws);
}

/* Same bits for every ISA and 1, 2, 3 threads (state, outputs, gradients). */
static void pn_bitwise(nk_powernorm_mode mode) {
  const size_t N = 3, S = 70, C = 96, R = N * S;
  nk_powernorm_desc d = nk_powernorm_desc_dense(N, S, C, NK_DTYPE_BF16);
  d.mode = mode;
  d.groups = 3;
  d.warmup = 2;
  d.flags = NK_RESNORM_TRAINING;
  size_t wsz;
  nk_powernorm_fwd_workspace_size(&d, &wsz);
  void *ws = nk_t_alloc(wsz);
  nk_rng rng = {4242};
  const tk_geom g = tk_make(N, S, C, 0, 0);
  void *x = tk_alloc(&g, d.dtype, 1), *dy = tk_alloc(&g, d.dtype, 1);
  tk_fill(&g, x, d.dtype, &rng, 3.0);
  tk_fill(&g, dy, d.dtype, &rng, 1.0);
  uint8_t *mask = make_mask(&rng, R);
  const size_t bytes = R * C * 2;
  void *y0 = nk_t_alloc(bytes), *dx0 = nk_t_alloc(bytes), *y1 = nk_t_alloc(bytes),
       *dx1 = nk_t_alloc(bytes);
  float st0[4 * 96], st1[4 * 96];
  int first = 1, ran = 0;
  for (int ii = 0; ii < 3; ii++)
    for (size_t th = 1; th <= 3; th++) {
      ch_ctx cc = ch_ctx_make(rn_isas[ii], th);
      if (cc.ctx == NULL) continue;
      ran++;
      float phi[96], nu[96], save[192], dg[96], db[96];
      nk_powernorm_state st = {phi, nu, 0};
      nk_powernorm_state_init(C, &st);
      for (int step = 0; step < 3; step++) {
        NK_CHECK(nk_powernorm_fwd(cc.ctx, &d, x, mask, NULL, NULL, &st, first ? y0 : y1, save,
                                  ws, wsz) == NK_STATUS_OK,
                 "fwd");
        NK_CHECK(nk_powernorm_bwd(cc.ctx, &d, x, mask, NULL, save, &st, dy, first ? dx0 : dx1,
                                  dg, db, ws, wsz) == NK_STATUS_OK,
                 "bwd");
      }
      float *s = first ? st0 : st1;
      memcpy(s, phi, sizeof phi), memcpy(s + 96, nu, sizeof nu), memcpy(s + 192, dg, sizeof dg);
      memcpy(s + 288, db, sizeof db);
      if (!first) {
        NK_CHECK(memcmp(y0, y1, bytes) == 0, "y differs (isa %d, %zu threads)", ii, th);
        NK_CHECK(memcmp(dx0, dx1, bytes) == 0, "dx differs (isa %d, %zu threads)", ii, th);
        NK_CHECK(memcmp(st0, st1, sizeof st0) == 0, "state/grads differ (isa %d, %zu threads)",
                 ii, th);
      }
      first = 0;
      ch_ctx_free(&cc);
    }
  NK_CHECK(ran >= 3, "ran %d combinations", ran);
  free(ws), free(x), free(dy), free(mask), free(y0), free(dx0), free(y1), free(dx1);
}

NK_TEST(bitwise_across_isas_and_threads) {
  pn_bitwise(NK_POWERNORM_CODE);
  pn_bitwise(NK_POWERNORM_PNV);
}

NK_TEST(bad_inputs) {
  const size_t N = 2, S = 3, C = 8;
  nk_powernorm_desc d = nk_powernorm_desc_dense(N, S, C, NK_DTYPE_F32);
  d.flags = NK_RESNORM_TRAINING;
  size_t wsz;
  nk_powernorm_fwd_workspace_size(&d, &wsz);
  void *ws = nk_t_alloc(wsz);
  float x[48] = {0}, y[48], phi[8], nu[8], save[16], dx[48];
  nk_powernorm_state st = {phi, nu, 0};
  nk_powernorm_state_init(C, &st);
  nk_context *ctx;
  nk_context_create(&ctx);
  const nk_status INV = NK_STATUS_INVALID_ARGUMENT;
#define FWD(dd, xx, m, yy, w, n) nk_powernorm_fwd(ctx, dd, xx, m, NULL, NULL, &st, yy, save, w, n)
  NK_CHECK(FWD(NULL, x, NULL, y, ws, wsz) == INV, "NULL desc");
  NK_CHECK(FWD(&d, NULL, NULL, y, ws, wsz) == INV, "NULL x");
  NK_CHECK(FWD(&d, x, NULL, NULL, ws, wsz) == INV, "NULL y");
  NK_CHECK(nk_powernorm_fwd(ctx, &d, x, NULL, NULL, NULL, NULL, y, save, ws, wsz) == INV,
           "NULL state");
  NK_CHECK(FWD(&d, x, NULL, y, ws, wsz - 80) == NK_STATUS_MISUSE, "small workspace");
  NK_CHECK(FWD(&d, x, NULL, y, NULL, wsz) == NK_STATUS_MISUSE, "NULL workspace");
  NK_CHECK(FWD(&d, x, NULL, x + 1, ws, wsz) == INV, "partial overlap");
  NK_CHECK(FWD(&d, x, NULL, y, ws, wsz) == NK_STATUS_OK, "valid call");
  NK_CHECK(FWD(&d, x, NULL, x, ws, wsz) == NK_STATUS_OK, "in place");
  uint8_t none[6] = {0};
  const int64_t before = st.step;
  NK_CHECK(FWD(&d, x, none, y, ws, wsz) == INV, "no valid token");
  NK_CHECK(st.step == before, "failed call changed the state");
  nk_powernorm_desc b = d;
  b.eps = 0.0f;
  NK_CHECK(FWD(&b, x, NULL, y, ws, wsz) == INV, "eps 0");
  b = d, b.eps = NAN;
  NK_CHECK(FWD(&b, x, NULL, y, ws, wsz) == INV, "eps NaN");
  b = d, b.dtype = (nk_dtype)9;
  NK_CHECK(FWD(&b, x, NULL, y, ws, wsz) != NK_STATUS_OK, "bad dtype");
  b = d, b.param_dtype = NK_DTYPE_BF16;
  NK_CHECK(FWD(&b, x, NULL, y, ws, wsz) == NK_STATUS_UNSUPPORTED, "f32 data, bf16 params");
  b = d, b.groups = 3;
  NK_CHECK(FWD(&b, x, NULL, y, ws, wsz) == INV, "groups not dividing C");
  b = d, b.groups = 2, b.gs_eps = -1.0f;
  NK_CHECK(FWD(&b, x, NULL, y, ws, wsz) == INV, "gs_eps < 0");
  b = d, b.alpha_fwd = 1.5f;
  NK_CHECK(FWD(&b, x, NULL, y, ws, wsz) == INV, "alpha > 1");
  b = d, b.warmup = -1;
  NK_CHECK(FWD(&b, x, NULL, y, ws, wsz) == INV, "warmup < 0");
  b = d, b.mode = (nk_powernorm_mode)7;
  NK_CHECK(FWD(&b, x, NULL, y, ws, wsz) == INV, "bad mode");
  b = d, b.flags |= 0x4000;
  NK_CHECK(FWD(&b, x, NULL, y, ws, wsz) == INV, "unknown flag");
  b = d, b.x_row_stride = 4;
  NK_CHECK(FWD(&b, x, NULL, y, ws, wsz) == INV, "row stride < C");
  b = d, b.mask_s_stride = -1;
  uint8_t ones[6] = {1, 1, 1, 1, 1, 1};
  NK_CHECK(FWD(&b, x, ones + 5, y, ws, wsz) == INV, "negative mask stride");
  NK_CHECK(nk_powernorm_bwd(ctx, &d, x, NULL, NULL, NULL, &st, x, dx, NULL, NULL, ws, wsz) == INV,
           "NULL save");
  NK_CHECK(nk_powernorm_bwd(ctx, &d, x, NULL, NULL, save, NULL, x, dx, NULL, NULL, ws, wsz) == INV,
           "training backward without state");
  NK_CHECK(nk_powernorm_bwd(ctx, &d, x, NULL, NULL, save, &st, x, save, NULL, NULL, ws, wsz) == INV,
           "dx overlapping save");
  NK_CHECK(nk_powernorm_bwd(ctx, &d, x, NULL, NULL, save, &st, x, dx, nu, NULL, ws, wsz) == INV,
           "dgamma overlapping nu");
  NK_CHECK(nk_powernorm_state_init(C, NULL) == INV, "init NULL");
#undef FWD
  nk_context_destroy(ctx);
  free(ws);
}

NK_TEST(edge_cases) {
  const size_t N = 2, S = 4, C = 8, R = N * S;
  nk_powernorm_desc d = nk_powernorm_desc_dense(N, S, C, NK_DTYPE_F32);
  d.flags = NK_RESNORM_TRAINING;
  size_t wsz;
  nk_powernorm_fwd_workspace_size(&d, &wsz);
  void *ws = nk_t_alloc(wsz);
  float x[64], y[64], y2[64], phi[8], nu[8], save[16], dx[64], dy[64], beta[8];
  nk_powernorm_state st = {phi, nu, 0};
  nk_powernorm_state_init(C, &st);
  /* Empty: no-op, state untouched. */
  nk_powernorm_desc e = d;
  e.batch = 0;
  NK_CHECK(nk_powernorm_fwd(NULL, &e, NULL, NULL, NULL, NULL, &st, NULL, NULL, NULL, 0) ==
               NK_STATUS_OK,
           "empty");
  NK_CHECK(st.step == 0, "empty call counted a step");
  /* Zero channel 0, NaN in channel 1 of a valid token, NaN in channel 2 of a padding token. */
  nk_rng rng = {5};
  for (size_t i = 0; i < R * C; i++) x[i] = (float)nk_rng_normal(&rng), dy[i] = 1.0f;
  for (size_t c = 0; c < C; c++) beta[c] = 0.5f;
  for (size_t i = 0; i < R; i++) x[i * C] = 0.0f;
  x[3 * C + 1] = NAN;
  uint8_t mask[8] = {1, 1, 1, 1, 1, 1, 1, 0};
  x[7 * C + 2] = NAN;
  d.warmup = 10; /* the batch statistic normalizes (after warm-up, phi of the previous step) */
  NK_CHECK(nk_powernorm_fwd(NULL, &d, x, mask, NULL, beta, &st, y, save, ws, wsz) == NK_STATUS_OK,
           "fwd");
  for (size_t i = 0; i < R; i++) {
    NK_CHECK(y[i * C] == 0.5f, "zero channel gives beta (row %zu: %g)", i, (double)y[i * C]);
    NK_CHECK(isnan(y[i * C + 1]), "NaN channel stays NaN");
    NK_CHECK(isnan(y[i * C + 2]) == (i == 7), "padding NaN stays in its token (row %zu)", i);
    for (size_t c = 3; c < C; c++) NK_CHECK(isfinite(y[i * C + c]), "other channels finite");
  }
  NK_CHECK(isfinite(phi[0]) && isnan(phi[1]) && isfinite(phi[2]), "state NaN only in channel 1");
  NK_CHECK(nk_powernorm_bwd(NULL, &d, x, NULL, NULL, save, &st, dy, dx, NULL, NULL, ws, wsz) ==
               NK_STATUS_OK,
           "bwd");
  for (size_t i = 0; i < R; i++) NK_CHECK(isfinite(dx[i * C]), "zero channel: finite gradient");
  /* In place equals out of place (inference). */
  d.flags = 0;
  for (size_t i = 0; i < R * C; i++) x[i] = (float)nk_rng_normal(&rng);
  nk_powernorm_state_init(C, &st);
  NK_CHECK(nk_powernorm_fwd(NULL, &d, x, NULL, NULL, NULL, &st, y, save, ws, wsz) == NK_STATUS_OK,
           "fwd");
  memcpy(y2, x, sizeof x);
  NK_CHECK(nk_powernorm_fwd(NULL, &d, y2, NULL, NULL, NULL, &st, y2, save, ws, wsz) ==
               NK_STATUS_OK,
           "fwd in place");
  NK_CHECK(memcmp(y, y2, sizeof y) == 0, "in place differs");
  NK_CHECK(nk_powernorm_bwd(NULL, &d, x, NULL, NULL, save, NULL, dy, dx, NULL, NULL, ws, wsz) ==
               NK_STATUS_OK,
           "bwd");
  NK_CHECK(nk_powernorm_bwd(NULL, &d, x, NULL, NULL, save, NULL, dy, dy, NULL, NULL, ws, wsz) ==
               NK_STATUS_OK,
           "bwd in place");
  NK_CHECK(memcmp(dx, dy, sizeof dx) == 0, "bwd in place differs");
  free(ws);
}

/* ACCUMULATE adds to dgamma/dbeta. */
NK_TEST(accumulate_parameter_gradients) {
  const size_t N = 1, S = 5, C = 4;
  nk_powernorm_desc d = nk_powernorm_desc_dense(N, S, C, NK_DTYPE_F32);
  size_t wsz;
  nk_powernorm_fwd_workspace_size(&d, &wsz);
  void *ws = nk_t_alloc(wsz);
  float x[20], dy[20], dx[20], phi[4] = {1, 2, 3, 4}, save[8], dg[4], db[4], dg2[4], db2[4];
  for (int i = 0; i < 20; i++) x[i] = (float)(i % 7) - 3.0f, dy[i] = (float)(i % 5) * 0.5f;
  nk_powernorm_state st = {phi, NULL, 0};
  float y[20];
  nk_powernorm_fwd(NULL, &d, x, NULL, NULL, NULL, &st, y, save, ws, wsz);
  nk_powernorm_bwd(NULL, &d, x, NULL, NULL, save, NULL, dy, dx, dg, db, ws, wsz);
  for (int c = 0; c < 4; c++) dg2[c] = 1.0f, db2[c] = 2.0f;
  d.flags = NK_RESNORM_ACCUMULATE;
  nk_powernorm_bwd(NULL, &d, x, NULL, NULL, save, NULL, dy, dx, dg2, db2, ws, wsz);
  for (int c = 0; c < 4; c++) {
    NK_CHECK(dg2[c] == dg[c] + 1.0f, "dgamma accumulate");
    NK_CHECK(db2[c] == db[c] + 2.0f, "dbeta accumulate");
  }
  free(ws);
}

int main(void) {
  NK_RUN(code_mode_sequence_matches_reference);
  NK_RUN(code_mode_no_group_scaling);
  NK_RUN(paper_mode_sequence_matches_reference);
  NK_RUN(pnv_mode_sequence_matches_reference);
  NK_RUN(pnv_training_backward_finite_differences);
  NK_RUN(large_channels_threads);
  NK_RUN(inference_backward_finite_differences);
  NK_RUN(bitwise_across_isas_and_threads);
  NK_RUN(bad_inputs);
  NK_RUN(edge_cases);
  NK_RUN(accumulate_parameter_gradients);
  return nk_test_summary();
}
