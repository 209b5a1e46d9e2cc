/*
 * tests/ops/rownorm.c — LayerNorm and RMSNorm operators against the float64 references
 * (src/reference/), forward and backward, by scenario. Bounds (docs/ops/layernorm.md):
 *   forward f32:       |y - ref| <= 2e-6 * max|ref| of the row
 *   forward bf16/f16:  |y - ref| <= 1 ulp(ref)            (no beta)
 *                      |y - ref| <= 1 ulp(ref) + 2e-6 * max|ref|   (with beta: y can cancel)
 *   backward dx:       |dx - ref| <= 4e-6 * S (+ 1 ulp(ref) for bf16/f16),
 *                      S = rstd * max|g*dy| * max(1, max|xhat|) of the row
 *   dgamma:            |d - ref| <= 4e-6 * sum over rows of |dy| * max|xhat of the row| + 1 ulp
 *   dbeta:             |d - ref| <= 4e-6 * sum over rows of |dy| + 1 ulp(ref)
 * The tests run on the default ISA path; tests/consistency/ checks that every path gives the
 * same bits.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

enum input_class { IN_NORMAL, IN_ILLCOND, IN_CONST, IN_HUGE, IN_TINY, IN_SUBNORMAL, IN_ZERO };

typedef struct cfg {
  int is_rms;
  nk_dtype dt, pdt;
  size_t rows, cols;
  float eps;
  int gamma, beta, offset, residual, write_h, dh;
  enum input_class in;
  ptrdiff_t pad;      /* extra elements between rows */
  uint64_t seed;
  nk_context *ctx;
} cfg;

typedef struct result {
  double fwd_err, bwd_err; /* worst error / bound ratio seen (<= 1 passes) */
} result;

static double sample(nk_rng *rng, enum input_class in) {
  switch (in) {
    case IN_ILLCOND: return 1e4 + 1e-2 * nk_rng_normal(rng);
    case IN_CONST: return 1234.5;
    case IN_HUGE: return 1e30 * nk_rng_normal(rng);
    case IN_TINY: return 1e-30 * nk_rng_normal(rng);
    case IN_SUBNORMAL: return 1e-39 * nk_rng_normal(rng);
    case IN_ZERO: return 0.0;
    default: return nk_rng_normal(rng);
  }
}

/* Worst |got - ref| / bound over a vector; NaN in got where ref is finite counts as failure. */
static double ratio(double got, double ref, double bound) {
  if (isnan(got) || isnan(ref)) return (isnan(got) && isnan(ref)) ? 0.0 : INFINITY;
  if (got == ref) return 0.0;
  return fabs(got - ref) / bound;
}

static double row_absmax(const double *v, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
  return m;
}

/* The worst ratios of the last run_case. */
static result last;

/* Runs forward and backward for one configuration and checks everything. */
static void run_case(const cfg *c) {
  result res = {0, 0};
  last = res;
  const size_t R = c->rows, C = c->cols, S = C + (size_t)c->pad;
  const size_t es = nk_dtype_size(c->dt), ps = nk_dtype_size(c->pdt);
  nk_rng rng = {c->seed * 2654435761u + 1};
  void *x = nk_t_alloc(R * S * es), *r = nk_t_alloc(R * S * es), *y = nk_t_alloc(R * S * es);
  void *h = nk_t_alloc(R * S * es), *dy = nk_t_alloc(R * S * es), *dh = nk_t_alloc(R * S * es);
  void *dx = nk_t_alloc(R * S * es);
  void *gamma = nk_t_alloc(C * ps), *beta = nk_t_alloc(C * ps);
  void *dgamma = nk_t_alloc(C * ps), *dbeta = nk_t_alloc(C * ps);
  float *mean = nk_t_alloc(R * 4), *rstd = nk_t_alloc(R * 4);
  double *hr = nk_t_alloc(R * C * 8), *gr = nk_t_alloc(C * 8), *br = nk_t_alloc(C * 8);
  double *yr = nk_t_alloc(R * C * 8), *mr = nk_t_alloc(R * 8), *rr = nk_t_alloc(R * 8);
  double *dyr = nk_t_alloc(R * C * 8), *dxr = nk_t_alloc(R * C * 8);
  double *dgr = nk_t_alloc(C * 8), *dbr = nk_t_alloc(C * 8);
  NK_REQUIRE(x && r && y && h && dy && dh && dx && gamma && beta && dgamma && dbeta && mean &&
                 rstd && hr && gr && br && yr && mr && rr && dyr && dxr && dgr && dbr,
             "allocation");
  /* canaries in the padding: 0x5A bytes must survive */
  memset(y, 0x5A, R * S * es);
  memset(h, 0x5A, R * S * es);
  memset(dx, 0x5A, R * S * es);
  for (size_t j = 0; j < C; j++) {
    nk_t_set(gamma, j, c->offset ? 0.1 * nk_rng_normal(&rng) : 1.0 + 0.5 * nk_rng_normal(&rng),
             c->pdt);
    nk_t_set(beta, j, 0.5 * nk_rng_normal(&rng), c->pdt);
    gr[j] = nk_t_get(gamma, j, c->pdt);
    br[j] = nk_t_get(beta, j, c->pdt);
  }
  for (size_t i = 0; i < R; i++)
    for (size_t j = 0; j < C; j++) {
      const size_t k = i * S + j;
      double v = sample(&rng, c->in);
      if (c->residual) {
        nk_t_set(x, k, v * 0.75, c->dt);
        nk_t_set(r, k, v * 0.25 + (c->in == IN_NORMAL ? 0.1 * nk_rng_normal(&rng) : 0.0), c->dt);
        hr[i * C + j] = nk_t_round((float)nk_t_get(x, k, c->dt) + (float)nk_t_get(r, k, c->dt),
                                   c->dt);
      } else {
        nk_t_set(x, k, v, c->dt);
        hr[i * C + j] = nk_t_get(x, k, c->dt);
      }
      nk_t_set(dy, k, nk_rng_normal(&rng), c->dt);
      dyr[i * C + j] = nk_t_get(dy, k, c->dt);
      nk_t_set(dh, k, 0.5 * nk_rng_normal(&rng), c->dt);
    }

  nk_norm_desc d = nk_norm_desc_dense(R, C, c->dt, c->eps);
  d.param_dtype = c->pdt;
  d.x_stride = d.r_stride = d.h_stride = d.y_stride = (ptrdiff_t)S;
  d.dy_stride = d.dh_stride = d.dx_stride = (ptrdiff_t)S;
  d.flags = c->offset ? NK_NORM_GAMMA_OFFSET : 0;
  const void *G = c->gamma ? gamma : NULL, *B = c->beta ? beta : NULL;
  const double *Gr = c->gamma ? gr : NULL, *Br = c->beta ? br : NULL;
  void *H = c->residual && c->write_h ? h : NULL;
  nk_status st = c->is_rms
                     ? nk_rmsnorm_fwd(c->ctx, &d, x, c->residual ? r : NULL, G, B, y, H, rstd)
                     : nk_layernorm_fwd(c->ctx, &d, x, c->residual ? r : NULL, G, B, y, H, mean,
                                        rstd);
  NK_REQUIRE(st == NK_STATUS_OK, "fwd status %s: %s", nk_status_string(st),
             nk_context_message(c->ctx));
  if (c->is_rms)
    nk_ref_rmsnorm_fwd(R, C, hr, Gr, Br, c->offset, c->eps, yr, rr);
  else
    nk_ref_layernorm_fwd(R, C, hr, Gr, Br, c->offset, c->eps, yr, mr, rr);

  for (size_t i = 0; i < R; i++) {
    const double m = row_absmax(yr + i * C, C);
    for (size_t j = 0; j < C; j++) {
      const double ref = yr[i * C + j], got = nk_t_get(y, i * S + j, c->dt);
      double bound = c->dt == NK_DTYPE_F32 ? 2e-6 * m
                                           : nk_t_ulp(ref, c->dt) + (c->beta ? 2e-6 * m : 0.0);
      if (bound == 0.0) bound = DBL_MIN; /* exact expected (a constant row's 0 or beta) */
      const double q = ratio(got, ref, bound);
      if (q > res.fwd_err) res.fwd_err = q;
      NK_CHECK(q <= 1.0, "y[%zu][%zu] = %.9g ref %.9g (bound %.3g) cols %zu", i, j, got, ref,
               bound, C);
      if (H) {
        NK_CHECK(nk_t_get(h, i * S + j, c->dt) == hr[i * C + j], "h[%zu][%zu]", i, j);
      }
    }
    NK_CHECK(ratio(rstd[i], rr[i], 2e-6 * rr[i]) <= 1.0, "rstd[%zu] %.9g ref %.9g", i,
             (double)rstd[i], rr[i]);
    if (!c->is_rms) {
      const double sd = 1.0 / rr[i];
      const double bound = nk_t_ulp(mr[i], NK_DTYPE_F32) + 1e-6 * (isfinite(sd) ? sd : 0.0);
      NK_CHECK(ratio(mean[i], mr[i], bound) <= 1.0, "mean[%zu] %.9g ref %.9g", i,
               (double)mean[i], mr[i]);
    }
    if (c->pad) { /* the padding after each row is untouched */
      const unsigned char *py = (const unsigned char *)y + (i * S + C) * es;
      for (size_t k = 0; k < (size_t)c->pad * es; k++) NK_CHECK(py[k] == 0x5A, "y padding");
    }
  }

  /* ---- backward ---- */
  size_t ws_bytes = 0;
  st = c->is_rms ? nk_rmsnorm_bwd_workspace_size(&d, &ws_bytes)
                 : nk_layernorm_bwd_workspace_size(&d, &ws_bytes);
  NK_REQUIRE(st == NK_STATUS_OK, "workspace size");
  void *ws = nk_t_alloc(ws_bytes);
  const void *X = H ? h : c->residual ? NULL : x;
  if (X == NULL) { /* residual without h: the caller would keep h; use our own copy */
    for (size_t k = 0; k < R; k++)
      for (size_t j = 0; j < C; j++) nk_t_set(h, k * S + j, hr[k * C + j], c->dt);
    X = h;
  }
  const void *DH = c->dh ? dh : NULL;
  st = c->is_rms ? nk_rmsnorm_bwd(c->ctx, &d, X, G, B, rstd, dy, DH, dx, c->gamma ? dgamma : NULL,
                                  dbeta, ws, ws_bytes)
                 : nk_layernorm_bwd(c->ctx, &d, X, G, B, mean, rstd, dy, DH, dx,
                                    c->gamma ? dgamma : NULL, dbeta, ws, ws_bytes);
  free(ws);
  NK_REQUIRE(st == NK_STATUS_OK, "bwd status %s: %s", nk_status_string(st),
             nk_context_message(c->ctx));
  if (c->is_rms)
    nk_ref_rmsnorm_bwd(R, C, hr, Gr, c->offset, c->eps, dyr, dxr, dgr, dbr);
  else
    nk_ref_layernorm_bwd(R, C, hr, Gr, c->offset, c->eps, dyr, dxr, dgr, dbr);
  double *gsum = nk_t_alloc(C * 8), *bsum = nk_t_alloc(C * 8);
  for (size_t i = 0; i < R; i++) {
    double mg = 0.0, mx = 1.0, xmax = 0.0;
    const double mu = c->is_rms ? 0.0 : mr[i];
    for (size_t j = 0; j < C; j++) {
      const double g = Gr ? (c->offset ? 1.0 + Gr[j] : Gr[j]) : 1.0;
      const double xh = (hr[i * C + j] - mu) * rr[i];
      mg = fmax(mg, fabs(g * dyr[i * C + j]));
      mx = fmax(mx, fabs(xh));
      xmax = fmax(xmax, fabs(xh));
      bsum[j] += fabs(dyr[i * C + j]);
    }
    /* x-hat errors are relative to the row's largest |x-hat|, not to each element */
    for (size_t j = 0; j < C; j++) gsum[j] += fabs(dyr[i * C + j]) * xmax;
    const double Srow = rr[i] * mg * mx;
    for (size_t j = 0; j < C; j++) {
      double ref = dxr[i * C + j];
      if (DH) ref += nk_t_get(dh, i * S + j, c->dt);
      const double got = nk_t_get(dx, i * S + j, c->dt);
      double bound = 4e-6 * Srow + (c->dt != NK_DTYPE_F32 || DH ? nk_t_ulp(ref, c->dt) : 0.0);
      if (bound == 0.0) bound = DBL_MIN;
      const double q = ratio(got, ref, bound);
      if (q > res.bwd_err) res.bwd_err = q;
      NK_CHECK(q <= 1.0, "dx[%zu][%zu] = %.9g ref %.9g (bound %.3g) cols %zu", i, j, got, ref,
               bound, C);
    }
  }
  for (size_t j = 0; j < C; j++) {
    if (c->gamma) {
      const double q = ratio(nk_t_get(dgamma, j, c->pdt), dgr[j],
                             4e-6 * gsum[j] + nk_t_ulp(dgr[j], c->pdt));
      if (q > res.bwd_err) res.bwd_err = q;
      NK_CHECK(q <= 1.0, "dgamma[%zu] = %.9g ref %.9g", j, nk_t_get(dgamma, j, c->pdt), dgr[j]);
    }
    const double q = ratio(nk_t_get(dbeta, j, c->pdt), dbr[j],
                           4e-6 * bsum[j] + nk_t_ulp(dbr[j], c->pdt));
    NK_CHECK(q <= 1.0, "dbeta[%zu] = %.9g ref %.9g", j, nk_t_get(dbeta, j, c->pdt), dbr[j]);
  }
  free(gsum);
  free(bsum);
  free(x), free(r), free(y), free(h), free(dy), free(dh), free(dx), free(gamma), free(beta);
  free(dgamma), free(dbeta), free(mean), free(rstd), free(hr), free(gr), free(br), free(yr);
  free(mr), free(rr), free(dyr), free(dxr), free(dgr), free(dbr);
  last = res;
}

static cfg base(int is_rms, nk_dtype dt, size_t rows, size_t cols) {
  cfg c;
  memset(&c, 0, sizeof c);
  c.is_rms = is_rms;
  c.dt = dt;
  c.pdt = NK_DTYPE_F32;
  c.rows = rows;
  c.cols = cols;
  c.eps = 1e-5f;
  c.gamma = 1;
  c.beta = !is_rms;
  c.in = IN_NORMAL;
  c.seed = rows * 1000003u + cols;
  return c;
}

static const nk_dtype all_dtypes[3] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};

/* ---- scenarios ------------------------------------------------------------------------------ */

NK_TEST(every_cols_1_to_300) {
  for (int rms = 0; rms < 2; rms++)
    for (int t = 0; t < 3; t++)
      for (size_t n = 1; n <= 300; n++) {
        cfg c = base(rms, all_dtypes[t], 3, n);
        run_case(&c);
      }
}

NK_TEST(long_rows) {
  const size_t cols[] = {1000, 1023, 1024, 1025, 4096, 65537};
  for (int rms = 0; rms < 2; rms++)
    for (int t = 0; t < 3; t++)
      for (size_t k = 0; k < sizeof cols / sizeof cols[0]; k++) {
        cfg c = base(rms, all_dtypes[t], 4, cols[k]);
        run_case(&c);
      }
}

NK_TEST(cols_2_pow_22) {
  for (int rms = 0; rms < 2; rms++) {
    cfg c = base(rms, NK_DTYPE_F32, 2, (size_t)1 << 22);
    run_case(&c);
    c.in = IN_ILLCOND;
    run_case(&c);
  }
}

NK_TEST(ill_conditioned_rows) {
  const size_t cols[] = {7, 64, 333, 1024, 4096, 10000};
  double worst = 0;
  for (int rms = 0; rms < 2; rms++)
    for (size_t k = 0; k < sizeof cols / sizeof cols[0]; k++) {
      cfg c = base(rms, NK_DTYPE_F32, 8, cols[k]);
      c.in = IN_ILLCOND;
      run_case(&c);
      if (!rms && last.fwd_err > worst) worst = last.fwd_err;
      c.gamma = c.beta = 0;
      run_case(&c);
    }
  printf("  ill-conditioned LayerNorm: worst forward error %.3f of the bound\n", worst);
}

NK_TEST(constant_rows_give_beta) {
  for (int t = 0; t < 3; t++)
    for (size_t n = 1; n <= 70; n += 23) {
      cfg c = base(0, all_dtypes[t], 3, n);
      c.in = IN_CONST;
      run_case(&c); /* bounds are exact (0) where the reference is exactly beta */
      c.in = IN_ZERO;
      run_case(&c);
      c.is_rms = 1;
      run_case(&c); /* RMSNorm of a zero row: 0 (+ beta) and finite gradients */
    }
}

NK_TEST(magnitudes_1e30_and_1e_30) {
  const enum input_class ins[] = {IN_HUGE, IN_TINY, IN_SUBNORMAL};
  const float epss[] = {1e-5f, 1e-30f, 1e-45f};
  for (int rms = 0; rms < 2; rms++)
    for (size_t a = 0; a < 3; a++)
      for (size_t e = 0; e < 3; e++)
        for (size_t n = 5; n <= 2000; n *= 7) {
          cfg c = base(rms, NK_DTYPE_F32, 3, n);
          c.in = ins[a];
          c.eps = epss[e];
          run_case(&c);
        }
}

NK_TEST(residual_offset_and_affine_variants) {
  for (int rms = 0; rms < 2; rms++)
    for (int t = 0; t < 3; t++)
      for (int v = 0; v < 32; v++) {
        cfg c = base(rms, all_dtypes[t], 5, 37 + 61 * (size_t)v);
        c.gamma = v & 1;
        c.beta = (v >> 1) & 1;
        c.offset = c.gamma && ((v >> 2) & 1);
        c.residual = (v >> 3) & 1;
        c.write_h = (v >> 4) & 1;
        c.dh = v & 4;
        c.pdt = (v & 8) ? all_dtypes[t] : NK_DTYPE_F32;
        run_case(&c);
      }
}

NK_TEST(strided_rows_keep_padding) {
  for (int rms = 0; rms < 2; rms++)
    for (int t = 0; t < 3; t++) {
      cfg c = base(rms, all_dtypes[t], 7, 130);
      c.pad = 19;
      c.residual = c.write_h = 1;
      run_case(&c);
    }
}

NK_TEST(threaded_pool) {
  nk_threadpool *pool = NULL;
  nk_context *ctx = NULL;
  NK_REQUIRE(nk_threadpool_create(3, &pool) == NK_STATUS_OK, "pool");
  NK_REQUIRE(nk_context_create(&ctx) == NK_STATUS_OK, "ctx");
  nk_context_set_threadpool(ctx, pool);
  for (int rms = 0; rms < 2; rms++) {
    cfg c = base(rms, NK_DTYPE_F32, 200, 513);
    c.ctx = ctx;
    run_case(&c);
  }
  nk_context_destroy(ctx);
  nk_threadpool_destroy(pool);
}

/* A NaN or inf in one row: that row is all NaN, the others are bitwise as without it. */
NK_TEST(nan_and_inf_rows_stay_in_their_row) {
  const size_t R = 5, C = 300;
  for (int rms = 0; rms < 2; rms++)
    for (int t = 0; t < 3; t++) {
      const nk_dtype dt = all_dtypes[t];
      const size_t es = nk_dtype_size(dt);
      void *x = nk_t_alloc(R * C * es), *y = nk_t_alloc(R * C * es), *y0 = nk_t_alloc(R * C * es);
      void *dy = nk_t_alloc(R * C * es), *dx = nk_t_alloc(R * C * es);
      void *dx0 = nk_t_alloc(R * C * es);
      float gamma[300], beta[300], mean[5], rstd[5], mean0[5], rstd0[5];
      float dg[300], db[300], dg0[300], db0[300];
      nk_rng rng = {77 + (uint64_t)t};
      for (size_t j = 0; j < C; j++) gamma[j] = 1.0f + 0.1f * (float)nk_rng_normal(&rng);
      for (size_t j = 0; j < C; j++) beta[j] = 0.1f * (float)nk_rng_normal(&rng);
      for (size_t k = 0; k < R * C; k++) nk_t_set(x, k, nk_rng_normal(&rng), dt);
      for (size_t k = 0; k < R * C; k++) nk_t_set(dy, k, nk_rng_normal(&rng), dt);
      nk_norm_desc d = nk_norm_desc_dense(R, C, dt, 1e-5f);
      size_t wsb = 0;
      nk_layernorm_bwd_workspace_size(&d, &wsb);
      void *ws = nk_t_alloc(wsb);
      /* clean run */
      if (rms) {
        NK_CHECK(nk_rmsnorm_fwd(NULL, &d, x, NULL, gamma, beta, y0, NULL, rstd0) == 0, "fwd");
        NK_CHECK(nk_rmsnorm_bwd(NULL, &d, x, gamma, beta, rstd0, dy, NULL, dx0, dg0, db0, ws,
                                wsb) == 0, "bwd");
      } else {
        NK_CHECK(nk_layernorm_fwd(NULL, &d, x, NULL, gamma, beta, y0, NULL, mean0, rstd0) == 0,
                 "fwd");
        NK_CHECK(nk_layernorm_bwd(NULL, &d, x, gamma, beta, mean0, rstd0, dy, NULL, dx0, dg0,
                                  db0, ws, wsb) == 0, "bwd");
      }
      nk_t_set(x, 1 * C + 17, NAN, dt);
      nk_t_set(x, 3 * C + 299, INFINITY, dt);
      if (rms) {
        NK_CHECK(nk_rmsnorm_fwd(NULL, &d, x, NULL, gamma, beta, y, NULL, rstd) == 0, "fwd");
        NK_CHECK(nk_rmsnorm_bwd(NULL, &d, x, gamma, beta, rstd, dy, NULL, dx, dg, db, ws, wsb) ==
                     0, "bwd");
      } else {
        NK_CHECK(nk_layernorm_fwd(NULL, &d, x, NULL, gamma, beta, y, NULL, mean, rstd) == 0,
                 "fwd");
        NK_CHECK(nk_layernorm_bwd(NULL, &d, x, gamma, beta, mean, rstd, dy, NULL, dx, dg, db, ws,
                                  wsb) == 0, "bwd");
      }
      for (size_t i = 0; i < R; i++) {
        const int bad = i == 1 || i == 3;
        for (size_t j = 0; j < C; j++) {
          const size_t k = i * C + j;
          if (bad) {
            NK_CHECK(isnan(nk_t_get(y, k, dt)), "y[%zu][%zu] not NaN", i, j);
            NK_CHECK(isnan(nk_t_get(dx, k, dt)), "dx[%zu][%zu] not NaN", i, j);
          } else {
            NK_CHECK(memcmp((char *)y + k * es, (char *)y0 + k * es, es) == 0, "y[%zu][%zu]", i,
                     j);
            NK_CHECK(memcmp((char *)dx + k * es, (char *)dx0 + k * es, es) == 0, "dx[%zu][%zu]",
                     i, j);
          }
        }
        NK_CHECK(bad ? isnan(rstd[i]) : rstd[i] == rstd0[i], "rstd[%zu]", i);
        if (!rms) NK_CHECK(bad ? isnan(mean[i]) : mean[i] == mean0[i], "mean[%zu]", i);
      }
      for (size_t j = 0; j < C; j++) NK_CHECK(isnan(dg[j]), "dgamma[%zu] not NaN", j);
      free(x), free(y), free(y0), free(dy), free(dx), free(dx0), free(ws);
    }
}

/* y == x and dx == dy give the same bits as separate buffers. */
NK_TEST(inplace_matches_out_of_place) {
  const size_t R = 6, C = 777;
  for (int rms = 0; rms < 2; rms++)
    for (int t = 0; t < 3; t++) {
      const nk_dtype dt = all_dtypes[t];
      const size_t es = nk_dtype_size(dt), bytes = R * C * es;
      void *x = nk_t_alloc(bytes), *y = nk_t_alloc(bytes), *io = nk_t_alloc(bytes);
      void *dy = nk_t_alloc(bytes), *dx = nk_t_alloc(bytes), *dio = nk_t_alloc(bytes);
      float g[777], mean[6], rstd[6], dg[777], dg2[777];
      nk_rng rng = {99};
      for (size_t j = 0; j < C; j++) g[j] = 1.0f + 0.2f * (float)nk_rng_normal(&rng);
      for (size_t k = 0; k < R * C; k++) nk_t_set(x, k, 3.0 + nk_rng_normal(&rng), dt);
      for (size_t k = 0; k < R * C; k++) nk_t_set(dy, k, nk_rng_normal(&rng), dt);
      memcpy(io, x, bytes);
      memcpy(dio, dy, bytes);
      nk_norm_desc d = nk_norm_desc_dense(R, C, dt, 1e-6f);
      size_t wsb = 0;
      nk_layernorm_bwd_workspace_size(&d, &wsb);
      void *ws = nk_t_alloc(wsb);
      if (rms) {
        nk_rmsnorm_fwd(NULL, &d, x, NULL, g, NULL, y, NULL, rstd);
        NK_CHECK(nk_rmsnorm_fwd(NULL, &d, io, NULL, g, NULL, io, NULL, rstd) == 0, "inplace");
        nk_rmsnorm_bwd(NULL, &d, x, g, NULL, rstd, dy, NULL, dx, dg, NULL, ws, wsb);
        NK_CHECK(nk_rmsnorm_bwd(NULL, &d, x, g, NULL, rstd, dio, NULL, dio, dg2, NULL, ws, wsb) ==
                     0, "inplace bwd");
      } else {
        nk_layernorm_fwd(NULL, &d, x, NULL, g, NULL, y, NULL, mean, rstd);
        NK_CHECK(nk_layernorm_fwd(NULL, &d, io, NULL, g, NULL, io, NULL, mean, rstd) == 0,
                 "inplace");
        nk_layernorm_bwd(NULL, &d, x, g, NULL, mean, rstd, dy, NULL, dx, dg, NULL, ws, wsb);
        NK_CHECK(nk_layernorm_bwd(NULL, &d, x, g, NULL, mean, rstd, dio, NULL, dio, dg2, NULL, ws,
                                  wsb) == 0, "inplace bwd");
      }
      NK_CHECK(memcmp(io, y, bytes) == 0, "in-place forward differs");
      NK_CHECK(memcmp(dio, dx, bytes) == 0, "in-place backward differs");
      NK_CHECK(memcmp(dg, dg2, sizeof dg) == 0, "dgamma differs");
      free(x), free(y), free(io), free(dy), free(dx), free(dio), free(ws);
    }
}

/* Memory-saving backward from y agrees with the backward from x. */
NK_TEST(backward_from_y) {
  const size_t R = 9, C = 515;
  for (int rms = 0; rms < 2; rms++)
    for (int with_beta = 0; with_beta < 2; with_beta++) {
      float *x = nk_t_alloc(R * C * 4), *y = nk_t_alloc(R * C * 4), *dy = nk_t_alloc(R * C * 4);
      float *dx = nk_t_alloc(R * C * 4), *dx2 = nk_t_alloc(R * C * 4);
      float g[515], b[515], mean[9], rstd[9], dg[515], db[515], dg2[515], db2[515];
      nk_rng rng = {5 + (uint64_t)with_beta};
      for (size_t j = 0; j < C; j++) g[j] = 1.0f + 0.3f * (float)nk_rng_normal(&rng);
      for (size_t j = 0; j < C; j++) b[j] = 0.3f * (float)nk_rng_normal(&rng);
      for (size_t k = 0; k < R * C; k++) x[k] = (float)nk_rng_normal(&rng);
      for (size_t k = 0; k < R * C; k++) dy[k] = (float)nk_rng_normal(&rng);
      nk_norm_desc d = nk_norm_desc_dense(R, C, NK_DTYPE_F32, 1e-5f);
      const float *B = with_beta ? b : NULL;
      size_t wsb = 0;
      d.flags = NK_NORM_BWD_FROM_Y;
      nk_layernorm_bwd_workspace_size(&d, &wsb);
      void *ws = nk_t_alloc(wsb);
      nk_status s1, s2;
      if (rms) {
        nk_rmsnorm_fwd(NULL, &d, x, NULL, g, B, y, NULL, rstd);
        d.flags = 0;
        s1 = nk_rmsnorm_bwd(NULL, &d, x, g, B, rstd, dy, NULL, dx, dg, db, ws, wsb);
        d.flags = NK_NORM_BWD_FROM_Y;
        s2 = nk_rmsnorm_bwd(NULL, &d, y, g, B, rstd, dy, NULL, dx2, dg2, db2, ws, wsb);
      } else {
        nk_layernorm_fwd(NULL, &d, x, NULL, g, B, y, NULL, mean, rstd);
        d.flags = 0;
        s1 = nk_layernorm_bwd(NULL, &d, x, g, B, mean, rstd, dy, NULL, dx, dg, db, ws, wsb);
        d.flags = NK_NORM_BWD_FROM_Y;
        s2 = nk_layernorm_bwd(NULL, &d, y, g, B, NULL, rstd, dy, NULL, dx2, dg2, db2, ws, wsb);
      }
      NK_CHECK(s1 == 0 && s2 == 0, "status %d %d", s1, s2);
      double worst = 0;
      for (size_t i = 0; i < R; i++) {
        double m = 0;
        for (size_t j = 0; j < C; j++) m = fmax(m, fabs(dx[i * C + j]));
        for (size_t j = 0; j < C; j++) worst = fmax(worst, fabs(dx[i * C + j] - dx2[i * C + j]) / m);
      }
      NK_CHECK(worst < 2e-5, "from-y dx differs by %.3g of the row max", worst);
      for (size_t j = 0; j < C; j++)
        NK_CHECK(fabs(dg[j] - dg2[j]) <= 1e-4 * (1 + fabs(dg[j])), "dgamma[%zu]", j);
      for (size_t j = 0; j < C; j++) NK_CHECK(db[j] == db2[j], "dbeta[%zu]", j);
      /* a zero gain is rejected */
      g[3] = 0.0f;
      nk_context *ctx = NULL;
      nk_context_create(&ctx);
      memset(dx2, 0, R * C * 4);
      nk_status s3 = rms ? nk_rmsnorm_bwd(ctx, &d, y, g, B, rstd, dy, NULL, dx2, dg2, db2, ws, wsb)
                         : nk_layernorm_bwd(ctx, &d, y, g, B, NULL, rstd, dy, NULL, dx2, dg2, db2,
                                            ws, wsb);
      NK_CHECK(s3 == NK_STATUS_INVALID_ARGUMENT && strstr(nk_context_message(ctx), "gain"),
               "zero gain: %d %s", s3, nk_context_message(ctx));
      for (size_t k = 0; k < R * C; k++) NK_CHECK(dx2[k] == 0.0f, "dx written on failure");
      nk_context_destroy(ctx);
      free(x), free(y), free(dy), free(dx), free(dx2), free(ws);
    }
}

/* NK_NORM_ACCUMULATE adds to dgamma/dbeta; the row-range entry points agree with the full
 * calls. */
NK_TEST(accumulate_and_row_ranges) {
  const size_t R = 40, C = 300;
  for (int rms = 0; rms < 2; rms++) {
    float *x = nk_t_alloc(R * C * 4), *y = nk_t_alloc(R * C * 4), *y2 = nk_t_alloc(R * C * 4);
    float *dy = nk_t_alloc(R * C * 4), *dx = nk_t_alloc(R * C * 4), *dx2 = nk_t_alloc(R * C * 4);
    float g[300], b[300], mean[40], rstd[40], mean2[40], rstd2[40];
    float dg[300], db[300], dg1[300], db1[300];
    double dga[300] = {0}, dba[300] = {0};
    nk_rng rng = {11};
    for (size_t j = 0; j < C; j++) g[j] = 1.0f + 0.3f * (float)nk_rng_normal(&rng);
    for (size_t j = 0; j < C; j++) b[j] = 0.3f * (float)nk_rng_normal(&rng);
    for (size_t k = 0; k < R * C; k++) x[k] = (float)nk_rng_normal(&rng);
    for (size_t k = 0; k < R * C; k++) dy[k] = (float)nk_rng_normal(&rng);
    nk_norm_desc d = nk_norm_desc_dense(R, C, NK_DTYPE_F32, 1e-5f);
    size_t wsb = 0;
    nk_layernorm_bwd_workspace_size(&d, &wsb);
    void *ws = nk_t_alloc(wsb);
    if (rms) {
      nk_rmsnorm_fwd(NULL, &d, x, NULL, g, b, y, NULL, rstd);
      for (size_t a = 0; a < R; a += 13)
        NK_CHECK(nk_rmsnorm_fwd_rows(NULL, &d, a, a + 13 < R ? a + 13 : R, x, NULL, g, b, y2,
                                     NULL, rstd2) == 0, "rows");
      nk_rmsnorm_bwd(NULL, &d, x, g, b, rstd, dy, NULL, dx, dg1, db1, ws, wsb);
      memcpy(dg, dg1, sizeof dg);
      memcpy(db, db1, sizeof db);
      d.flags = NK_NORM_ACCUMULATE;
      nk_rmsnorm_bwd(NULL, &d, x, g, b, rstd, dy, NULL, dx, dg, db, ws, wsb);
      for (size_t a = 0; a < R; a += 7)
        NK_CHECK(nk_rmsnorm_bwd_rows(NULL, &d, a, a + 7 < R ? a + 7 : R, x, g, b, rstd, dy, NULL,
                                     dx2, dga, dba, NULL, 0) == 0, "bwd rows");
    } else {
      nk_layernorm_fwd(NULL, &d, x, NULL, g, b, y, NULL, mean, rstd);
      for (size_t a = 0; a < R; a += 13)
        NK_CHECK(nk_layernorm_fwd_rows(NULL, &d, a, a + 13 < R ? a + 13 : R, x, NULL, g, b, y2,
                                       NULL, mean2, rstd2) == 0, "rows");
      NK_CHECK(memcmp(mean, mean2, sizeof mean) == 0, "mean from row ranges");
      nk_layernorm_bwd(NULL, &d, x, g, b, mean, rstd, dy, NULL, dx, dg1, db1, ws, wsb);
      memcpy(dg, dg1, sizeof dg);
      memcpy(db, db1, sizeof db);
      d.flags = NK_NORM_ACCUMULATE;
      nk_layernorm_bwd(NULL, &d, x, g, b, mean, rstd, dy, NULL, dx, dg, db, ws, wsb);
      for (size_t a = 0; a < R; a += 7)
        NK_CHECK(nk_layernorm_bwd_rows(NULL, &d, a, a + 7 < R ? a + 7 : R, x, g, b, mean, rstd,
                                       dy, NULL, dx2, dga, dba, NULL, 0) == 0, "bwd rows");
    }
    NK_CHECK(memcmp(y, y2, R * C * 4) == 0, "forward row ranges differ");
    NK_CHECK(memcmp(rstd, rstd2, sizeof rstd) == 0, "rstd from row ranges");
    NK_CHECK(memcmp(dx, dx2, R * C * 4) == 0, "backward row ranges: dx differs");
    for (size_t j = 0; j < C; j++) {
      NK_CHECK(dg[j] == (float)((double)dg1[j] + (double)dg1[j]), "accumulated dgamma[%zu]", j);
      NK_CHECK(db[j] == (float)((double)db1[j] + (double)db1[j]), "accumulated dbeta[%zu]", j);
      NK_CHECK(fabs(dga[j] - dg1[j]) <= 1e-6 * (1 + fabs(dga[j])), "dgamma_acc[%zu]", j);
      NK_CHECK(fabs(dba[j] - db1[j]) <= 1e-6 * (1 + fabs(dba[j])), "dbeta_acc[%zu]", j);
    }
    free(x), free(y), free(y2), free(dy), free(dx), free(dx2), free(ws);
  }
}

/* The backward against central finite differences of the float64 forward:
 * L(x, gamma, beta) = sum dy * y. Full for cols <= 64, random directions for longer rows. */
static double loss(int rms, size_t C, const double *h, const double *g, const double *b,
                   const double *dy, double *tmp) {
  if (rms)
    nk_ref_rmsnorm_fwd(1, C, h, g, b, 0, 1e-5, tmp, NULL);
  else
    nk_ref_layernorm_fwd(1, C, h, g, b, 0, 1e-5, tmp, NULL, NULL);
  double L = 0;
  for (size_t j = 0; j < C; j++) L += dy[j] * tmp[j];
  return L;
}

NK_TEST(finite_differences) {
  const size_t cols[] = {1, 2, 3, 17, 64, 1000};
  for (int rms = 0; rms < 2; rms++)
    for (size_t k = 0; k < sizeof cols / sizeof cols[0]; k++) {
      const size_t C = cols[k];
      float *x = nk_t_alloc(C * 4), *y = nk_t_alloc(C * 4), *dy = nk_t_alloc(C * 4);
      float *dx = nk_t_alloc(C * 4), *g = nk_t_alloc(C * 4), *b = nk_t_alloc(C * 4);
      float *dg = nk_t_alloc(C * 4), *db = nk_t_alloc(C * 4), mean, rstd;
      double *hd = nk_t_alloc(C * 8), *gd = nk_t_alloc(C * 8), *bd = nk_t_alloc(C * 8);
      double *dyd = nk_t_alloc(C * 8), *tmp = nk_t_alloc(C * 8), *v = nk_t_alloc(C * 8);
      nk_rng rng = {1234 + C};
      for (size_t j = 0; j < C; j++) {
        x[j] = (float)(0.5 + nk_rng_normal(&rng)), hd[j] = x[j];
        g[j] = (float)(1 + 0.3 * nk_rng_normal(&rng)), gd[j] = g[j];
        b[j] = (float)(0.2 * nk_rng_normal(&rng)), bd[j] = b[j];
        dy[j] = (float)nk_rng_normal(&rng), dyd[j] = dy[j];
      }
      nk_norm_desc d = nk_norm_desc_dense(1, C, NK_DTYPE_F32, 1e-5f);
      size_t wsb = 0;
      nk_layernorm_bwd_workspace_size(&d, &wsb);
      void *ws = nk_t_alloc(wsb);
      if (rms) {
        nk_rmsnorm_fwd(NULL, &d, x, NULL, g, b, y, NULL, &rstd);
        nk_rmsnorm_bwd(NULL, &d, x, g, b, &rstd, dy, NULL, dx, dg, db, ws, wsb);
      } else {
        nk_layernorm_fwd(NULL, &d, x, NULL, g, b, y, NULL, &mean, &rstd);
        nk_layernorm_bwd(NULL, &d, x, g, b, &mean, &rstd, dy, NULL, dx, dg, db, ws, wsb);
      }
      double scale = 0;
      for (size_t j = 0; j < C; j++) scale = fmax(scale, fabs(dx[j]) + fabs(dg[j]) + fabs(db[j]));
      const int dirs = C <= 64 ? (int)C : 8;
      double *targets[3] = {hd, gd, bd};
      const float *grads[3] = {dx, dg, db};
      for (int which = 0; which < 3; which++)
        for (int t = 0; t < dirs; t++) {
          /* direction: unit vector e_t (full) or a random normal vector */
          for (size_t j = 0; j < C; j++)
            v[j] = C <= 64 ? (j == (size_t)t) : nk_rng_normal(&rng);
          const double step = 1e-6;
          double *p = targets[which];
          for (size_t j = 0; j < C; j++) p[j] += step * v[j];
          const double lp = loss(rms, C, hd, gd, bd, dyd, tmp);
          for (size_t j = 0; j < C; j++) p[j] -= 2 * step * v[j];
          const double lm = loss(rms, C, hd, gd, bd, dyd, tmp);
          for (size_t j = 0; j < C; j++) p[j] += step * v[j];
          const double fd = (lp - lm) / (2 * step);
          double an = 0, vn = 0;
          for (size_t j = 0; j < C; j++) an += grads[which][j] * v[j], vn += fabs(v[j]);
          NK_CHECK(fabs(fd - an) <= 1e-5 * scale * vn + 1e-7,
                   "%s cols %zu grad %d dir %d: fd %.9g analytic %.9g", rms ? "rms" : "ln", C,
                   which, t, fd, an);
        }
      free(x), free(y), free(dy), free(dx), free(g), free(b), free(dg), free(db), free(hd);
      free(gd), free(bd), free(dyd), free(tmp), free(v), free(ws);
    }
}

int main(void) {
  NK_RUN(every_cols_1_to_300);
  NK_RUN(long_rows);
  NK_RUN(cols_2_pow_22);
  NK_RUN(ill_conditioned_rows);
  NK_RUN(constant_rows_give_beta);
  NK_RUN(magnitudes_1e30_and_1e_30);
  NK_RUN(residual_offset_and_affine_variants);
  NK_RUN(strided_rows_keep_padding);
  NK_RUN(threaded_pool);
  NK_RUN(nan_and_inf_rows_stay_in_their_row);
  NK_RUN(inplace_matches_out_of_place);
  NK_RUN(backward_from_y);
  NK_RUN(accumulate_and_row_ranges);
  NK_RUN(finite_differences);
  return nk_test_summary();
}
