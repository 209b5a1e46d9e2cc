/*
 * rowvar_common.h — the shared engine of tests/ops/crmsnorm.c and tests/ops/l1norm.c: one
 * configuration = forward and backward through the public API, checked against the float64
 * references of src/reference/rowvariants.c, and the same call repeated on every ISA path and
 * with 1, 2 and 3 threads, which must give the same bits. Bounds (docs/ops/crmsnorm.md,
 * docs/ops/l1norm.md):
 *   forward f32:       |y - ref| <= 2e-6 * M,  M = max over the row of |ref| (L1 with beta:
 *                      max(|ref|, |ref - beta*s|))
 *   forward bf16/f16:  |y - ref| <= 1 ulp(ref) (+ 2e-6 * M with beta)
 *   backward dx:       |dx - ref| <= 1e-5 * S (+ 1 ulp(ref) for bf16/f16),
 *                      S = rs * max|g_y * gain| * (1 + max|xhat|) of the row
 *   dgamma, dbeta:     |d - ref| <= 1e-5 * sum over rows of |g_y| * (1 + max|xhat|) + 1 ulp(ref)
 * The reference sees the inputs as stored (rounded to the dtype).
 */
#ifndef TESTS_OPS_ROWVAR_COMMON_H
#define TESTS_OPS_ROWVAR_COMMON_H

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

enum in_class { IN_NORMAL, IN_ILLCOND, IN_CONST, IN_HUGE, IN_TINY, IN_ZERO, IN_SPECIAL, IN_SUBNORMAL };

typedef struct rv_cfg {
  int is_l1;
  nk_dtype dt, pdt;
  size_t rows, cols;
  float eps, lns;
  int gamma, beta, offset, dh, accumulate;
  enum in_class in;
  ptrdiff_t pad;
  uint64_t seed;
  int check_ref; /* compare with the float64 reference (off for NaN/inf rows) */
} rv_cfg;

static double rv_sample(nk_rng *rng, enum in_class in, size_t row) {
  switch (in) {
    case IN_ILLCOND: return 1e4 + 1e-2 * nk_rng_normal(rng);
    case IN_CONST: return 1234.5;
    case IN_HUGE: return 1e30 * nk_rng_normal(rng);
    case IN_TINY: return 1e-30 * nk_rng_normal(rng);
    case IN_ZERO: return 0.0;
    /* f32 subnormal data around 1.1e-38 with deviations of a few subnormal units (the L1 mean's
     * low part below 2^-149: rowvar fuzz harness, input rowvar-l1norm-subnormal-row) */
    case IN_SUBNORMAL: return 1.1e-38 + 0x1p-149 * (double)(int)(8.0 * nk_rng_normal(rng));
    case IN_SPECIAL:
      switch (row % 5) {
        case 1: return nk_rng_uniform(rng) < 0.1 ? NAN : nk_rng_normal(rng);
        case 2: return nk_rng_uniform(rng) < 0.1 ? INFINITY : nk_rng_normal(rng);
        case 3: return 3e19 * nk_rng_normal(rng); /* squares overflow f32 */
        case 4: return -7.25;
        default: return nk_rng_normal(rng);
      }
    default: return 0.5 + nk_rng_normal(rng);
  }
}

static double rv_ratio(double got, double ref, double bound) {
  if (isnan(got) || isnan(ref)) return (isnan(got) && isnan(ref)) ? 0.0 : INFINITY;
  if (got == ref) return 0.0;
  return fabs(got - ref) / bound;
}

/* Everything one run writes. */
typedef struct rv_out {
  void *y, *dx, *dgamma, *dbeta;
  float *mean, *rs;
} rv_out;

typedef struct rv_case {
  rv_cfg c;
  size_t S;
  void *x, *dy, *dh, *gamma, *beta, *ws;
  size_t ws_size;
  rv_out out;
} rv_case;

static void rv_alloc_out(const rv_case *k, rv_out *o) {
  const size_t es = nk_dtype_size(k->c.dt), ps = nk_dtype_size(k->c.pdt);
  o->y = nk_t_alloc(k->c.rows * k->S * es);
  o->dx = nk_t_alloc(k->c.rows * k->S * es);
  o->dgamma = nk_t_alloc(k->c.cols * ps);
  o->dbeta = nk_t_alloc(k->c.cols * ps);
  o->mean = nk_t_alloc(k->c.rows * sizeof(float));
  o->rs = nk_t_alloc(k->c.rows * sizeof(float));
  for (size_t i = 0; i < k->c.cols; i++) {
    nk_t_set(o->dgamma, i, 0.25, k->c.pdt); /* ACCUMULATE adds to these */
    nk_t_set(o->dbeta, i, -0.5, k->c.pdt);
  }
}

static void rv_free_out(rv_out *o) {
  free(o->y), free(o->dx), free(o->dgamma), free(o->dbeta), free(o->mean), free(o->rs);
}

static nk_norm_desc rv_desc(const rv_cfg *c, size_t S) {
  nk_norm_desc d = nk_norm_desc_dense(c->rows, c->cols, c->dt, c->eps);
  d.param_dtype = c->pdt;
  d.x_stride = d.y_stride = d.dy_stride = d.dh_stride = d.dx_stride = (ptrdiff_t)S;
  d.lns_scale = c->lns;
  if (c->offset) d.flags |= NK_NORM_GAMMA_OFFSET;
  if (c->accumulate) d.flags |= NK_NORM_ACCUMULATE;
  return d;
}

/* Forward then backward with ctx; returns the first failing status or OK. */
static nk_status rv_run(nk_context *ctx, const rv_case *k, rv_out *o) {
  const rv_cfg *c = &k->c;
  const nk_norm_desc d = rv_desc(c, k->S);
  const void *g = c->gamma ? k->gamma : NULL, *b = c->beta ? k->beta : NULL;
  const void *dh = c->dh ? k->dh : NULL;
  nk_status st;
  if (c->is_l1) {
    st = nk_l1norm_fwd(ctx, &d, k->x, g, b, o->y, o->mean, o->rs);
    if (st != NK_OK) return st;
    return nk_l1norm_bwd(ctx, &d, k->x, g, o->mean, o->rs, k->dy, dh, o->dx, o->dgamma, o->dbeta,
                         k->ws, k->ws_size);
  }
  st = nk_crmsnorm_fwd(ctx, &d, k->x, o->y, o->rs);
  if (st != NK_OK) return st;
  return nk_crmsnorm_bwd(ctx, &d, k->x, o->rs, k->dy, dh, o->dx);
}

static int rv_same_bits(const void *a, const void *b, size_t bytes) { return memcmp(a, b, bytes) == 0; }

/* Runs the case on every ISA and with 1, 2, 3 threads; all must equal the first run bitwise.
 * Then checks the first run against the reference. Returns 0 on any failure. */
static int rv_check(const rv_cfg *cfg) {
  rv_case k;
  memset(&k, 0, sizeof k);
  k.c = *cfg;
  const rv_cfg *c = &k.c;
  const size_t R = c->rows, C = c->cols, S = C + (size_t)c->pad;
  k.S = S;
  const size_t es = nk_dtype_size(c->dt), ps = nk_dtype_size(c->pdt);
  nk_rng rng = {c->seed * 2654435761u + 3};
  k.x = nk_t_alloc(R * S * es), k.dy = nk_t_alloc(R * S * es), k.dh = nk_t_alloc(R * S * es);
  k.gamma = nk_t_alloc(C * ps), k.beta = nk_t_alloc(C * ps);
  for (size_t r = 0; r < R; r++)
    for (size_t i = 0; i < C; i++) {
      nk_t_set(k.x, r * S + i, rv_sample(&rng, c->in, r), c->dt);
      nk_t_set(k.dy, r * S + i, nk_rng_normal(&rng), c->dt);
      nk_t_set(k.dh, r * S + i, nk_rng_normal(&rng), c->dt);
    }
  for (size_t i = 0; i < C; i++) {
    nk_t_set(k.gamma, i, c->offset ? 0.3 * nk_rng_normal(&rng) : 1.0 + 0.5 * nk_rng_normal(&rng), c->pdt);
    nk_t_set(k.beta, i, 0.5 * nk_rng_normal(&rng), c->pdt);
  }
  const nk_norm_desc d = rv_desc(c, S);
  if (c->is_l1) {
    NK_CHECK(nk_l1norm_bwd_workspace_size(&d, &k.ws_size) == NK_OK, "workspace size");
    k.ws = nk_t_alloc(k.ws_size);
  }
  int ok = 1;
  /* the runs: default context first (the one compared with the reference) */
  rv_out first;
  rv_alloc_out(&k, &first);
  nk_context *ctx = NULL;
  NK_CHECK(nk_context_create(&ctx) == NK_OK, "context");
  nk_status st = rv_run(ctx, &k, &first);
  NK_CHECK(st == NK_OK, "status %d: %s", (int)st, nk_context_message(ctx));
  ok &= st == NK_OK;
  const nk_isa isas[3] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  for (int ii = 0; ii < 3 && ok; ii++) {
    if (!nk_isa_supported(isas[ii])) continue;
    for (size_t nt = 1; nt <= 3 && ok; nt++) {
      nk_threadpool *pool = NULL;
      if (nt > 1) NK_CHECK(nk_threadpool_create(nt, &pool) == NK_OK, "pool");
      nk_context_set_threadpool(ctx, pool);
      nk_context_set_isa(ctx, isas[ii]);
      rv_out o;
      rv_alloc_out(&k, &o);
      st = rv_run(ctx, &k, &o);
      int same = st == NK_OK && rv_same_bits(o.y, first.y, R * S * es) &&
                 rv_same_bits(o.dx, first.dx, R * S * es) &&
                 rv_same_bits(o.rs, first.rs, R * 4) &&
                 (!c->is_l1 || (rv_same_bits(o.mean, first.mean, R * 4) &&
                                rv_same_bits(o.dgamma, first.dgamma, C * ps) &&
                                rv_same_bits(o.dbeta, first.dbeta, C * ps)));
      NK_CHECK(same, "isa %s threads %zu differs from the first run (status %d)",
               nk_isa_name(isas[ii]), nt, (int)st);
      ok &= same;
      rv_free_out(&o);
      nk_context_set_threadpool(ctx, NULL);
      nk_threadpool_destroy(pool);
    }
  }
  /* the row-range entry points give the same bits too */
  if (ok) {
    nk_context_set_isa(ctx, NK_ISA_AUTO);
    rv_out o;
    rv_alloc_out(&k, &o);
    const void *g = c->gamma ? k.gamma : NULL, *b = c->beta ? k.beta : NULL;
    double *dga = calloc(C, sizeof(double)), *dba = calloc(C, sizeof(double));
    const size_t mid = R / 2;
    if (c->is_l1) {
      st = nk_l1norm_fwd_rows(ctx, &d, mid, R, k.x, g, b, o.y, o.mean, o.rs);
      if (st == NK_OK) st = nk_l1norm_fwd_rows(ctx, &d, 0, mid, k.x, g, b, o.y, o.mean, o.rs);
      if (st == NK_OK)
        st = nk_l1norm_bwd_rows(ctx, &d, 0, R, k.x, g, o.mean, o.rs, k.dy, c->dh ? k.dh : NULL,
                                o.dx, dga, dba);
    } else {
      st = nk_crmsnorm_fwd_rows(ctx, &d, mid, R, k.x, o.y, o.rs);
      if (st == NK_OK) st = nk_crmsnorm_fwd_rows(ctx, &d, 0, mid, k.x, o.y, o.rs);
      if (st == NK_OK)
        st = nk_crmsnorm_bwd_rows(ctx, &d, 0, R, k.x, o.rs, k.dy, c->dh ? k.dh : NULL, o.dx);
    }
    int same = st == NK_OK && rv_same_bits(o.y, first.y, R * S * es) &&
               rv_same_bits(o.dx, first.dx, R * S * es) && rv_same_bits(o.rs, first.rs, R * 4);
    NK_CHECK(same, "row-range entry points differ (status %d)", (int)st);
    ok &= same;
    free(dga), free(dba);
    rv_free_out(&o);
  }
  nk_context_destroy(ctx);

  if (ok && c->check_ref) {
    /* reference on the stored inputs */
    double *xd = malloc(R * C * sizeof(double)), *dyd = malloc(R * C * sizeof(double));
    double *yr = malloc(R * C * sizeof(double)), *dxr = malloc(R * C * sizeof(double));
    double *gd = malloc(C * sizeof(double)), *bd = malloc(C * sizeof(double));
    double *dgr = malloc(C * sizeof(double)), *dbr = malloc(C * sizeof(double));
    double *mr = malloc(R * sizeof(double)), *rr = malloc(R * sizeof(double));
    for (size_t r = 0; r < R; r++)
      for (size_t i = 0; i < C; i++) {
        xd[r * C + i] = nk_t_get(k.x, r * S + i, c->dt);
        dyd[r * C + i] = nk_t_get(k.dy, r * S + i, c->dt);
      }
    for (size_t i = 0; i < C; i++) gd[i] = nk_t_get(k.gamma, i, c->pdt), bd[i] = nk_t_get(k.beta, i, c->pdt);
    const double s = c->lns == 0.0f ? 1.0 : (double)c->lns;
    if (c->is_l1) {
      nk_ref_l1norm_fwd(R, C, xd, c->gamma ? gd : NULL, c->beta ? bd : NULL, c->offset, c->eps, c->lns, yr, mr, rr);
      nk_ref_l1norm_bwd(R, C, xd, c->gamma ? gd : NULL, c->offset, c->eps, c->lns, dyd, dxr, dgr, dbr);
    } else {
      nk_ref_crmsnorm_fwd(R, C, xd, c->eps, c->lns, yr, rr);
      nk_ref_crmsnorm_bwd(R, C, xd, c->eps, c->lns, dyd, dxr);
    }
    const int half = c->dt != NK_DTYPE_F32;
    double wf = 0.0, wb = 0.0, wg = 0.0, wbb = 0.0;
    double *gsum = calloc(C, sizeof(double)), *bsum = calloc(C, sizeof(double));
    for (size_t r = 0; r < R; r++) {
      const double *yrow = yr + r * C;
      double M = 0.0, maxxh = 0.0, maxgh = 0.0;
      for (size_t i = 0; i < C; i++) {
        M = fmax(M, fabs(yrow[i]));
        if (c->beta) M = fmax(M, fabs(yrow[i] - bd[i] * s));
        const double mu = c->is_l1 ? mr[r] : 0.0;
        maxxh = fmax(maxxh, fabs((xd[r * C + i] - mu) * rr[r]));
        const double gn = c->gamma ? (c->offset ? 1.0 + gd[i] : gd[i]) : 1.0;
        maxgh = fmax(maxgh, fabs(dyd[r * C + i] * s * gn));
      }
      for (size_t i = 0; i < C; i++) {
        const double got = nk_t_get(first.y, r * S + i, c->dt), ref = yrow[i];
        double bound = 2e-6 * M;
        if (half) bound = nk_t_ulp(ref, c->dt) + (c->beta ? 2e-6 * M : 0.0);
        if (bound == 0.0) bound = DBL_MIN;
        wf = fmax(wf, rv_ratio(got, ref, bound));
        double refdx = dxr[r * C + i];
        if (c->dh) refdx += nk_t_get(k.dh, r * S + i, c->dt);
        const double Sx = rr[r] * maxgh * (1.0 + maxxh);
        double bb = 1e-5 * Sx + (half ? nk_t_ulp(refdx, c->dt) : 0.0);
        if (c->dh) bb += 2.0 * nk_t_ulp(refdx, NK_DTYPE_F32) + (half ? nk_t_ulp(refdx, c->dt) : 0.0);
        if (bb == 0.0) bb = DBL_MIN;
        wb = fmax(wb, rv_ratio(nk_t_get(first.dx, r * S + i, c->dt), refdx, bb));
        gsum[i] += fabs(dyd[r * C + i] * s) * (1.0 + maxxh);
        bsum[i] += fabs(dyd[r * C + i] * s);
      }
    }
    if (c->is_l1) {
      for (size_t i = 0; i < C; i++) {
        const double g0 = c->accumulate ? (double)nk_t_round(0.25, c->pdt) : 0.0;
        const double b0 = c->accumulate ? (double)nk_t_round(-0.5, c->pdt) : 0.0;
        const double refg = dgr[i] + g0, refb = dbr[i] + b0;
        double bg = 1e-5 * gsum[i] + nk_t_ulp(refg, c->pdt), bb = 1e-5 * bsum[i] + nk_t_ulp(refb, c->pdt);
        wg = fmax(wg, rv_ratio(nk_t_get(first.dgamma, i, c->pdt), refg, bg));
        wbb = fmax(wbb, rv_ratio(nk_t_get(first.dbeta, i, c->pdt), refb, bb));
      }
    }
    NK_CHECK(wf <= 1.0, "forward error %.3g x bound", wf);
    NK_CHECK(wb <= 1.0, "backward dx error %.3g x bound", wb);
    NK_CHECK(wg <= 1.0 && wbb <= 1.0, "dgamma %.3g / dbeta %.3g x bound", wg, wbb);
    ok &= wf <= 1.0 && wb <= 1.0 && wg <= 1.0 && wbb <= 1.0;
    free(xd), free(dyd), free(yr), free(dxr), free(gd), free(bd), free(dgr), free(dbr), free(mr);
    free(rr), free(gsum), free(bsum);
  }
  if (!ok)
    fprintf(stderr, "    case: l1 %d dt %s pdt %s rows %zu cols %zu eps %g lns %g gamma %d beta %d "
            "offset %d dh %d acc %d in %d pad %td seed %llu\n", c->is_l1, nk_dtype_name(c->dt),
            nk_dtype_name(c->pdt), c->rows, c->cols, (double)c->eps, (double)c->lns, c->gamma,
            c->beta, c->offset, c->dh, c->accumulate, (int)c->in, c->pad,
            (unsigned long long)c->seed);
  rv_free_out(&first);
  free(k.x), free(k.dy), free(k.dh), free(k.gamma), free(k.beta), free(k.ws);
  return ok;
}

#endif /* TESTS_OPS_ROWVAR_COMMON_H */
