/*
 * tests/ops/layernorm_scaling.c — LayerNorm Scaling (nk_norm_desc.lns_scale, Sun et al. 2025)
 * on LayerNorm and RMSNorm, forward and backward: against the float64 references with the
 * scale applied (y = s * Norm(h), dx from s * dy), for f32/bf16/f16, with gamma/beta,
 * NK_NORM_GAMMA_OFFSET, a fused residual, dh, NK_NORM_BWD_FROM_Y; bitwise equality over ISAs
 * and 1-3 threads; s = 0 and s = 1 equal to no scaling bit for bit; the folding identity
 * (gamma*s, beta*s); bad values. Bounds as tests/ops/rownorm.c (docs/ops/layernorm.md), taken
 * relative to the scaled reference.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

typedef struct lcfg {
  int is_rms;
  nk_dtype dt, pdt;
  size_t rows, cols;
  float s;
  int gamma, beta, offset, residual, dh, from_y;
  uint64_t seed;
} lcfg;

typedef struct lbufs {
  void *x, *r, *gamma, *beta, *dy, *dh; /* inputs */
  void *y, *h, *dx, *dgamma, *dbeta;    /* outputs */
  float *mean, *rstd;
  void *ws;
  size_t ws_size;
} lbufs;

static nk_norm_desc ldesc(const lcfg *c, float s) {
  nk_norm_desc d = nk_norm_desc_dense(c->rows, c->cols, c->dt, 1e-5f);
  d.param_dtype = c->pdt;
  d.lns_scale = s;
  if (c->offset) d.flags |= NK_NORM_GAMMA_OFFSET;
  if (c->from_y) d.flags |= NK_NORM_BWD_FROM_Y;
  return d;
}

/* forward, then backward (from h, or from y with from_y) with ctx and scale s */
static nk_status lrun(nk_context *ctx, const lcfg *c, float s, lbufs *b) {
  const nk_norm_desc d = ldesc(c, s);
  const void *g = c->gamma ? b->gamma : NULL, *be = c->beta ? b->beta : NULL;
  const void *r = c->residual ? b->r : NULL;
  void *h = c->residual ? b->h : NULL;
  nk_status st = c->is_rms ? nk_rmsnorm_fwd(ctx, &d, b->x, r, g, be, b->y, h, b->rstd)
                           : nk_layernorm_fwd(ctx, &d, b->x, r, g, be, b->y, h, b->mean, b->rstd);
  if (st != NK_OK) return st;
  const void *in = c->from_y ? b->y : (c->residual ? b->h : b->x);
  const void *dh = c->dh ? b->dh : NULL;
  return c->is_rms ? nk_rmsnorm_bwd(ctx, &d, in, g, be, b->rstd, b->dy, dh, b->dx, b->dgamma,
                                    b->dbeta, b->ws, b->ws_size)
                   : nk_layernorm_bwd(ctx, &d, in, g, be, b->mean, b->rstd, b->dy, dh, b->dx,
                                      b->dgamma, b->dbeta, b->ws, b->ws_size);
}

static void lalloc_out(const lcfg *c, lbufs *b) {
  const size_t n = c->rows * c->cols, es = nk_dtype_size(c->dt), ps = nk_dtype_size(c->pdt);
  b->y = nk_t_alloc(n * es), b->h = nk_t_alloc(n * es), b->dx = nk_t_alloc(n * es);
  b->dgamma = nk_t_alloc(c->cols * ps), b->dbeta = nk_t_alloc(c->cols * ps);
  b->mean = nk_t_alloc(c->rows * 4), b->rstd = nk_t_alloc(c->rows * 4);
}

static void lfree_out(lbufs *b) {
  free(b->y), free(b->h), free(b->dx), free(b->dgamma), free(b->dbeta), free(b->mean), free(b->rstd);
}

static int outs_equal(const lcfg *c, const lbufs *a, const lbufs *b) {
  const size_t n = c->rows * c->cols, es = nk_dtype_size(c->dt), ps = nk_dtype_size(c->pdt);
  return !memcmp(a->y, b->y, n * es) && !memcmp(a->dx, b->dx, n * es) &&
         !memcmp(a->rstd, b->rstd, c->rows * 4) && (c->is_rms || !memcmp(a->mean, b->mean, c->rows * 4)) &&
         !memcmp(a->dgamma, b->dgamma, c->cols * ps) && !memcmp(a->dbeta, b->dbeta, c->cols * ps);
}

static double ratio(double got, double ref, double bound) {
  if (isnan(got) || isnan(ref)) return (isnan(got) && isnan(ref)) ? 0.0 : INFINITY;
  if (got == ref) return 0.0;
  return fabs(got - ref) / (bound > 0.0 ? bound : DBL_MIN);
}

static int lcheck(const lcfg *c) {
  const size_t R = c->rows, C = c->cols, n = R * C, es = nk_dtype_size(c->dt), ps = nk_dtype_size(c->pdt);
  nk_rng rng = {c->seed * 7919 + 5};
  lbufs in;
  memset(&in, 0, sizeof in);
  in.x = nk_t_alloc(n * es), in.r = nk_t_alloc(n * es), in.dy = nk_t_alloc(n * es), in.dh = nk_t_alloc(n * es);
  in.gamma = nk_t_alloc(C * ps), in.beta = nk_t_alloc(C * ps);
  for (size_t i = 0; i < n; i++) {
    nk_t_set(in.x, i, 0.3 + nk_rng_normal(&rng), c->dt);
    nk_t_set(in.r, i, nk_rng_normal(&rng), c->dt);
    nk_t_set(in.dy, i, nk_rng_normal(&rng), c->dt);
    nk_t_set(in.dh, i, nk_rng_normal(&rng), c->dt);
  }
  for (size_t i = 0; i < C; i++) {
    nk_t_set(in.gamma, i, c->offset ? 0.4 * nk_rng_normal(&rng) : 1.0 + 0.4 * nk_rng_normal(&rng), c->pdt);
    nk_t_set(in.beta, i, 0.5 * nk_rng_normal(&rng), c->pdt);
  }
  const nk_norm_desc d = ldesc(c, c->s);
  NK_CHECK((c->is_rms ? nk_rmsnorm_bwd_workspace_size(&d, &in.ws_size)
                      : nk_layernorm_bwd_workspace_size(&d, &in.ws_size)) == NK_OK, "ws");
  in.ws = nk_t_alloc(in.ws_size);
  int ok = 1;
  nk_context *ctx = NULL;
  NK_CHECK(nk_context_create(&ctx) == NK_OK, "ctx");
  lbufs first = in;
  lalloc_out(c, &first);
  nk_status st = lrun(ctx, c, c->s, &first);
  NK_CHECK(st == NK_OK, "status %d: %s", (int)st, nk_context_message(ctx));
  ok &= st == NK_OK;
  /* every ISA, 1-3 threads: the same bits */
  const nk_isa isas[3] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  for (int ii = 0; ii < 3 && ok; ii++) {
    if (!nk_isa_supported(isas[ii])) continue;
    for (size_t nt = 1; nt <= 3 && ok; nt++) {
      nk_threadpool *pool = NULL;
      if (nt > 1) nk_threadpool_create(nt, &pool);
      nk_context_set_threadpool(ctx, pool);
      nk_context_set_isa(ctx, isas[ii]);
      lbufs o = in;
      lalloc_out(c, &o);
      st = lrun(ctx, c, c->s, &o);
      const int same = st == NK_OK && outs_equal(c, &first, &o);
      NK_CHECK(same, "isa %s threads %zu differs", nk_isa_name(isas[ii]), nt);
      ok &= same;
      lfree_out(&o);
      nk_context_set_threadpool(ctx, NULL);
      nk_threadpool_destroy(pool);
    }
  }
  nk_context_set_isa(ctx, NK_ISA_AUTO);
  /* against the reference: h as stored; y_ref = s * Norm(h); dx_ref = Norm'(h)^T (s dy) */
  if (ok) {
    const double s = c->s == 0.0f ? 1.0 : (double)c->s;
    double *hd = malloc(n * 8), *dyd = malloc(n * 8), *yr = malloc(n * 8), *dxr = malloc(n * 8);
    double *gd = malloc(C * 8), *bd = malloc(C * 8), *dgr = malloc(C * 8), *dbr = malloc(C * 8);
    double *rr = malloc(R * 8);
    for (size_t i = 0; i < n; i++) {
      hd[i] = c->residual ? nk_t_get(first.h, i, c->dt) : nk_t_get(in.x, i, c->dt);
      dyd[i] = nk_t_get(in.dy, i, c->dt) * s;
    }
    for (size_t i = 0; i < C; i++) gd[i] = nk_t_get(in.gamma, i, c->pdt), bd[i] = nk_t_get(in.beta, i, c->pdt);
    const double *gp = c->gamma ? gd : NULL, *bp = c->beta ? bd : NULL;
    if (c->is_rms) {
      nk_ref_rmsnorm_fwd(R, C, hd, gp, bp, c->offset, 1e-5, yr, rr);
      nk_ref_rmsnorm_bwd(R, C, hd, gp, c->offset, 1e-5, dyd, dxr, dgr, dbr);
    } else {
      nk_ref_layernorm_fwd(R, C, hd, gp, bp, c->offset, 1e-5, yr, NULL, rr);
      nk_ref_layernorm_bwd(R, C, hd, gp, c->offset, 1e-5, dyd, dxr, dgr, dbr);
    }
    const int half = c->dt != NK_DTYPE_F32;
    double wf = 0, wb = 0, wg = 0, wbb = 0;
    double *gs = calloc(C, 8), *bs = calloc(C, 8);
    for (size_t r = 0; r < R; r++) {
      double M = 0, mx = 0, mg = 0, mex = 0;
      double ex[2048];
      for (size_t i = 0; i < C; i++) {
        const size_t k = r * C + i;
        yr[k] *= s;
        M = fmax(M, fabs(yr[k]));
        if (bp) M = fmax(M, fabs(yr[k] - bd[i] * s));
        const double gn = gp ? (c->offset ? 1.0 + gd[i] : gd[i]) : 1.0;
        const double xh = bp ? (yr[k] / s - bd[i]) / gn : yr[k] / s / gn;
        mx = fmax(mx, fabs(xh));
        mg = fmax(mg, fabs(dyd[k] * gn));
        /* from y: xhat = (y/s - b)/g inherits y's storage rounding (1 ulp of the dtype) */
        ex[i] = c->from_y ? 2.0 * (nk_t_ulp(yr[k], c->dt) / s + 4 * nk_t_ulp(yr[k] / s, NK_DTYPE_F32)) / fabs(gn) : 0.0;
        mex = fmax(mex, ex[i]);
      }
      for (size_t i = 0; i < C; i++) {
        const size_t k = r * C + i;
        double bf = half ? nk_t_ulp(yr[k], c->dt) + (bp ? 2e-6 * M : 0.0) : 2e-6 * M;
        wf = fmax(wf, ratio(nk_t_get(first.y, k, c->dt), yr[k], bf));
        double refdx = dxr[k] + (c->dh ? nk_t_get(in.dh, k, c->dt) : 0.0);
        double bb = 4e-6 * rr[r] * mg * fmax(1.0, mx) + 4.0 * rr[r] * mg * mex * (1.0 + mx) +
                    (half ? nk_t_ulp(refdx, c->dt) : 0.0) + (c->dh ? 2 * nk_t_ulp(refdx, NK_DTYPE_F32) : 0.0);
        wb = fmax(wb, ratio(nk_t_get(first.dx, k, c->dt), refdx, bb));
        gs[i] += fabs(dyd[k]) * fmax(1.0, mx) + 2.0 * fabs(dyd[k]) * ex[i] / 4e-6;
        bs[i] += fabs(dyd[k]);
      }
    }
    for (size_t i = 0; i < C; i++) {
      wg = fmax(wg, ratio(nk_t_get(first.dgamma, i, c->pdt), dgr[i], 4e-6 * gs[i] + nk_t_ulp(dgr[i], c->pdt)));
      wbb = fmax(wbb, ratio(nk_t_get(first.dbeta, i, c->pdt), dbr[i], 4e-6 * bs[i] + nk_t_ulp(dbr[i], c->pdt)));
    }
    NK_CHECK(wf <= 1.0, "forward %.3g x bound", wf);
    NK_CHECK(wb <= 1.0, "dx %.3g x bound", wb);
    NK_CHECK(wg <= 1.0 && wbb <= 1.0, "dgamma %.3g dbeta %.3g x bound", wg, wbb);
    ok &= wf <= 1.0 && wb <= 1.0 && wg <= 1.0 && wbb <= 1.0;
    free(hd), free(dyd), free(yr), free(dxr), free(gd), free(bd), free(dgr), free(dbr), free(rr), free(gs), free(bs);
  }
  if (!ok)
    fprintf(stderr, "    case: rms %d dt %s pdt %s %zux%zu s %g gamma %d beta %d offset %d res %d dh %d from_y %d seed %llu\n",
            c->is_rms, nk_dtype_name(c->dt), nk_dtype_name(c->pdt), R, C, (double)c->s, c->gamma, c->beta,
            c->offset, c->residual, c->dh, c->from_y, (unsigned long long)c->seed);
  lfree_out(&first);
  nk_context_destroy(ctx);
  free(in.x), free(in.r), free(in.dy), free(in.dh), free(in.gamma), free(in.beta), free(in.ws);
  return ok;
}

NK_TEST(layernorm_and_rmsnorm_forward_backward_with_lns) {
  static const size_t cols[] = {1, 7, 64, 100, 1025};
  const nk_dtype dts[3] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};
  uint64_t seed = 1;
  for (int rms = 0; rms < 2; rms++)
    for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++)
      for (int di = 0; di < 3; di++, seed++) {
        lcfg c;
        memset(&c, 0, sizeof c);
        c.is_rms = rms;
        c.dt = dts[di];
        c.pdt = (seed % 2) ? NK_DTYPE_F32 : c.dt;
        c.rows = cols[ci] > 1000 ? 4 : 9;
        c.cols = cols[ci];
        c.s = (seed % 3) ? 1.0f / sqrtf((float)(seed % 7 + 2)) : 0.25f; /* 1/sqrt(l) */
        c.gamma = (seed % 4) != 0;
        c.beta = (seed % 3) != 1;
        c.offset = c.gamma && (seed % 5) == 2;
        c.residual = (seed % 2) == 0;
        c.dh = (seed % 3) == 2;
        c.seed = seed;
        if (!lcheck(&c)) return;
        /* from y: needs gamma != 0 everywhere (random gains are) */
        c.from_y = 1;
        c.seed = seed + 1000;
        if (c.cols > 1 && !lcheck(&c)) return;
      }
}

/* s = 0 and s = 1 are no scaling, bit for bit; folding gamma*s, beta*s matches s applied. */
NK_TEST(off_values_and_folding) {
  const size_t R = 5, C = 96;
  float x[5 * 96], y0[5 * 96], y1[5 * 96], yf[5 * 96], g[96], b[96], gs[96], bs[96], rs[5];
  nk_rng rng = {31};
  for (size_t i = 0; i < R * C; i++) x[i] = (float)nk_rng_normal(&rng);
  const float s = 0.40824829f; /* 1/sqrt(6) */
  for (size_t i = 0; i < C; i++) {
    g[i] = (float)(1.0 + 0.3 * nk_rng_normal(&rng)), b[i] = (float)(0.2 * nk_rng_normal(&rng));
    gs[i] = g[i] * s, bs[i] = b[i] * s;
  }
  for (int rms = 0; rms < 2; rms++) {
    nk_norm_desc d = nk_norm_desc_dense(R, C, NK_DTYPE_F32, 1e-5f);
    NK_CHECK(d.lns_scale == 0.0f, "dense descriptor: lns off");
#define FWD(dd, gg, bb, yy)                                                                      \
  (rms ? nk_rmsnorm_fwd(NULL, &(dd), x, NULL, gg, bb, yy, NULL, rs)                            \
       : nk_layernorm_fwd(NULL, &(dd), x, NULL, gg, bb, yy, NULL, NULL, rs))
    NK_REQUIRE(FWD(d, g, b, y0) == NK_OK, "plain");
    d.lns_scale = 1.0f;
    NK_REQUIRE(FWD(d, g, b, y1) == NK_OK, "s = 1");
    NK_CHECK(memcmp(y0, y1, sizeof y0) == 0, "s = 1 changes bits");
    d.lns_scale = s;
    NK_REQUIRE(FWD(d, g, b, y1) == NK_OK, "scaled");
    d.lns_scale = 0.0f;
    NK_REQUIRE(FWD(d, gs, bs, yf) == NK_OK, "folded");
    double worst = 0.0, differs = 0.0;
    for (size_t i = 0; i < R * C; i++) {
      worst = fmax(worst, fabs((double)y1[i] - (double)yf[i]));
      differs = fmax(differs, fabs((double)y1[i] - (double)y0[i]));
    }
    NK_CHECK(worst <= 2e-6 * 4.0, "folded vs scaled: %g", worst);
    NK_CHECK(differs > 0.1, "the scale does nothing");
#undef FWD
  }
}

NK_TEST(bad_scale_values) {
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8], rs[2], m[2];
  nk_norm_desc d = nk_norm_desc_dense(2, 4, NK_DTYPE_F32, 1e-5f);
  const float bad[3] = {-0.5f, NAN, INFINITY};
  for (int i = 0; i < 3; i++) {
    d.lns_scale = bad[i];
    NK_CHECK(nk_layernorm_fwd(NULL, &d, x, NULL, NULL, NULL, y, NULL, m, rs) == NK_STATUS_INVALID_ARGUMENT, "LN %g", (double)bad[i]);
    NK_CHECK(nk_rmsnorm_fwd(NULL, &d, x, NULL, NULL, NULL, y, NULL, rs) == NK_STATUS_INVALID_ARGUMENT, "RMS %g", (double)bad[i]);
    size_t ws;
    NK_CHECK(nk_rmsnorm_bwd_workspace_size(&d, &ws) == NK_STATUS_INVALID_ARGUMENT, "ws %g", (double)bad[i]);
    NK_CHECK(nk_layernorm_bwd(NULL, &d, x, NULL, NULL, m, rs, x, NULL, y, NULL, NULL, NULL, 0) == NK_STATUS_INVALID_ARGUMENT, "LN bwd");
  }
  /* the moments-based forward (tensor parallel) does not take a scale */
  nk_moments mom[2];
  memset(mom, 0, sizeof mom);
  d.lns_scale = 0.5f;
  NK_CHECK(nk_layernorm_fwd_moments(NULL, &d, mom, x, NULL, NULL, y, m, rs) == NK_STATUS_UNSUPPORTED, "moments LN");
  NK_CHECK(nk_rmsnorm_fwd_moments(NULL, &d, mom, x, NULL, NULL, y, rs) == NK_STATUS_UNSUPPORTED, "moments RMS");
}

/* The definition's backward: FD of s * LN_ref against the reference backward fed s * dy. */
NK_TEST(finite_differences_of_the_scaled_reference) {
  const size_t R = 2, C = 6;
  double x[12], dy[12], sdy[12], dx[12], y0[12], y1[12], xp[12], g[6];
  nk_rng rng = {41};
  for (size_t i = 0; i < R * C; i++) x[i] = nk_rng_normal(&rng), dy[i] = nk_rng_normal(&rng);
  for (size_t i = 0; i < C; i++) g[i] = 1.0 + 0.3 * nk_rng_normal(&rng);
  const double s = 1.0 / sqrt(5.0), h = 1e-6;
  for (int rms = 0; rms < 2; rms++) {
    for (size_t i = 0; i < R * C; i++) sdy[i] = s * dy[i];
    if (rms) nk_ref_rmsnorm_bwd(R, C, x, g, 0, 1e-5, sdy, dx, NULL, NULL);
    else nk_ref_layernorm_bwd(R, C, x, g, 0, 1e-5, sdy, dx, NULL, NULL);
    double worst = 0.0;
    for (size_t j = 0; j < R * C; j++) {
      memcpy(xp, x, sizeof x);
      xp[j] += h;
      if (rms) nk_ref_rmsnorm_fwd(R, C, xp, g, NULL, 0, 1e-5, y1, NULL);
      else nk_ref_layernorm_fwd(R, C, xp, g, NULL, 0, 1e-5, y1, NULL, NULL);
      xp[j] -= 2 * h;
      if (rms) nk_ref_rmsnorm_fwd(R, C, xp, g, NULL, 0, 1e-5, y0, NULL);
      else nk_ref_layernorm_fwd(R, C, xp, g, NULL, 0, 1e-5, y0, NULL, NULL);
      double fd = 0.0;
      for (size_t i = 0; i < R * C; i++) fd += dy[i] * s * (y1[i] - y0[i]) / (2 * h);
      worst = fmax(worst, fabs(fd - dx[j]));
    }
    NK_CHECK(worst < 1e-7, "FD %s off by %g", rms ? "rms" : "ln", worst);
  }
}

int main(void) {
  NK_RUN(layernorm_and_rmsnorm_forward_backward_with_lns);
  NK_RUN(off_values_and_folding);
  NK_RUN(bad_scale_values);
  NK_RUN(finite_differences_of_the_scaled_reference);
  return nk_test_summary();
}
