/*
 * tests/cuda/rownorm.c — the CUDA LayerNorm and RMSNorm (normkit_cuda.h) against the float64
 * references (src/reference/rownorm.c), forward and backward, on fresh random data every run
 * (the seed is printed; NK_TEST_SEED repeats a run). Without a CUDA device it prints why and
 * exits 77 (skipped).
 *
 * Every case: inputs on the device, outputs poisoned (0xFF: cuda_util.h), the call, a stream
 * synchronisation and cudaGetLastError; the same call again on re-poisoned outputs must give the
 * same bytes (normkit_cuda.h: bit-reproducible); every element written, the padding between
 * rows not; then the comparison with the reference, on every row, or on 64 rows spread over
 * tensors of more than 2^22 elements (the parameter gradients, which sum over all rows, are then
 * only checked to be written and finite). The reference input is h = x (or x + r rounded to the
 * dtype, as the operator forms it) widened to double, with gamma and beta as stored.
 *
 * Bounds (normkit.h "LayerNorm and RMSNorm"; the CPU test tests/ops/rownorm.c uses the same):
 *   y, f32:       2e-6 * M + 2^-148, M = max over the row of |ref| (with beta: of
 *                 max(|ref|, |ref - s*beta|), the scale of the normalized part)
 *   y, bf16/f16:  1 ulp(ref) of the dtype + 2e-6 * M
 *   y exactly beta (times s) where xhat is exactly 0: LayerNorm of a constant row, cols == 1
 *   h:            exactly round(x + r)
 *   rstd:         2e-6 * rstd;  mean: 1 ulp_f32(mean) + 1e-6 * sqrt(var + eps)
 *   dx:           4e-6 * S_row (+ 1 ulp(ref) for bf16/f16 or with dh),
 *                 S_row = rstd * max|g * dy'| * max(1, max|xhat|) of the row, dy' = dy * s
 *   dgamma:       4e-6 * sum over rows of |dy'| * max|xhat of the row| + 1 ulp(ref) of param_dtype
 *   dbeta:        4e-6 * sum over rows of |dy'| + 1 ulp(ref)
 *   with NK_NORM_ACCUMULATE the reference is the start value plus the gradient.
 * s is lns_scale (1 when 0); the references are unscaled, so y_ref = s * y and the backward
 * reference is evaluated with dy' = dy * s (normkit.h "LayerNorm Scaling").
 * NK_NORM_BWD_FROM_Y recomputes xhat from the operator's own y, whose error is the forward
 * bound: per row |dxhat| <= d = (2e-6 * M + u + 2^-21 * M) / (s * min|g|), u = 1 ulp of the
 * dtype at max|y| (0 for f32), M as above (the 2^-21 M covers the f32 roundings of
 * (y / s - b) / g). A perturbation e of xhat changes dx = rstd (g dy - mean(g dy) - xhat *
 * mean(g dy xhat)) by at most rstd * d * (|mean(g dy xhat)| + max|xhat| * mean|g dy|) (+ d^2
 * terms), and dgamma by sum |dy'| d; the tests add twice those to the bounds above.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "cuda_util.h"

#define FULL_CHECK ((size_t)1 << 22) /* compare every row (and dgamma/dbeta) up to this size */
#define SAMPLE_ROWS 64

enum { IN_NORMAL, IN_ILLCOND, IN_CONST, IN_HUGE, IN_TINY };
static const char *const in_name[] = {"", "illcond(1e4,1e-2)", "const", "1e30", "1e-30"};

typedef struct rcfg {
  int rms;
  nk_dtype dt, pdt;
  size_t rows, cols, pad; /* pad: extra elements between rows, a different stride per tensor */
  float eps, lns;
  int gamma, beta, offset; /* parameters given; NK_NORM_GAMMA_OFFSET */
  int residual, write_h;   /* r given; h written by the forward (else the test uploads it) */
  int dh;                  /* extra gradient dh into the backward */
  int from_y, accumulate;  /* NK_NORM_BWD_FROM_Y, NK_NORM_ACCUMULATE */
  int dgamma, dbeta;       /* parameter gradients requested */
  int in;                  /* IN_* */
  int bad_rows;            /* NaN, +inf, -inf in rows 1, 3, 5 (needs rows >= 6) */
  int inplace;             /* then also y == x and dx == dy, bit-compared */
  size_t ws_off;           /* the workspace pointer this many bytes past a cudaMalloc */
} rcfg;

static rcfg base(int rms, nk_dtype dt, size_t rows, size_t cols) {
  rcfg c;
  memset(&c, 0, sizeof c);
  c.rms = rms;
  c.dt = dt;
  c.pdt = NK_DTYPE_F32;
  c.rows = rows;
  c.cols = cols;
  c.eps = rms ? 1e-6f : 1e-5f;
  c.gamma = 1;
  c.beta = !rms;
  c.dgamma = c.dbeta = 1;
  return c;
}

static double sample(nk_rng *rng, int in) {
  switch (in) {
    case IN_ILLCOND: return 1e4 + 1e-2 * cu_normal(rng);
    case IN_CONST: return 1234.5;
    case IN_HUGE: return 1e30 * cu_normal(rng);
    case IN_TINY: return 1e-30 * cu_normal(rng);
    default: return cu_normal(rng);
  }
}

typedef struct strides {
  size_t x, r, h, y, dy, dh, dx;
} strides;

static strides strides_of(const rcfg *c) {
  const size_t C = c->cols, p = c->pad;
  strides s = {C, C, C, C, C, C, C};
  if (p) {
    s.x = C + p, s.r = C + p + 1, s.h = C + 2 * p, s.y = C + p + 2;
    s.dy = C + p + 3, s.dh = C + 2 * p + 1, s.dx = C + p + 4;
  }
  if (c->inplace) s.y = s.x, s.dx = s.dy; /* in place needs the same stride */
  return s;
}

/* The case's buffers. */
typedef struct rbufs {
  strides s;
  cu_buf x, r, h, y, mean, rstd, gam, bet, dy, dh, dx, dg, db;
  void *dg_init, *db_init; /* ACCUMULATE start values (host, param_dtype) */
  void *ws;                /* workspace pointer passed (ws_off past a cudaMalloc) */
  size_t ws_bytes;
  nk_norm_desc fwd, bwd;
} rbufs;

static nk_status call_fwd(const rcfg *c, const rbufs *B, const void *x, void *y) {
  const void *r = c->residual ? B->r.d : NULL;
  const void *g = c->gamma ? B->gam.d : NULL, *b = c->beta ? B->bet.d : NULL;
  void *h = c->residual && c->write_h ? B->h.d : NULL;
  return c->rms ? nk_cuda_rmsnorm_fwd(NULL, &B->fwd, x, r, g, b, y, h, (float *)B->rstd.d)
                : nk_cuda_layernorm_fwd(NULL, &B->fwd, x, r, g, b, y, h, (float *)B->mean.d,
                                        (float *)B->rstd.d);
}

/* Poisons the forward's outputs, runs it and waits. */
static int run_fwd(const rcfg *c, const rbufs *B, const void *x, void *y) {
  if (!cu_poison(&B->y) || !cu_poison(&B->rstd) || (!c->rms && !cu_poison(&B->mean)) ||
      (c->residual && c->write_h && !cu_poison(&B->h)))
    return 0;
  const nk_status st = call_fwd(c, B, x, y);
  return CU_STATUS(st, NK_STATUS_OK, c->rms ? "nk_cuda_rmsnorm_fwd" : "nk_cuda_layernorm_fwd") &&
         CU_SYNC("forward");
}

/* The backward's `x`: y (from y), h (residual) or x. */
static const void *bwd_input(const rcfg *c, const rbufs *B) {
  return c->from_y ? B->y.d : c->residual ? B->h.d : B->x.d;
}

/* Resets dgamma/dbeta (start values or poison) and dx (poison), runs the backward, waits. */
static int run_bwd(const rcfg *c, const rbufs *B, const void *dy, void *dx) {
  if (c->accumulate) {
    if (!CU_OK(cudaMemcpy(B->dg.d, B->dg_init, B->dg.bytes, cudaMemcpyHostToDevice)) ||
        !CU_OK(cudaMemcpy(B->db.d, B->db_init, B->db.bytes, cudaMemcpyHostToDevice)))
      return 0;
  } else if (!cu_poison(&B->dg) || !cu_poison(&B->db)) {
    return 0;
  }
  if (dx == B->dx.d && dy != B->dx.d && !cu_poison(&B->dx)) return 0;
  const void *x = bwd_input(c, B);
  const void *g = c->gamma ? B->gam.d : NULL, *b = c->beta ? B->bet.d : NULL;
  const void *dh = c->dh ? B->dh.d : NULL;
  void *dg = c->dgamma ? B->dg.d : NULL, *db = c->dbeta ? B->db.d : NULL;
  const nk_status st =
      c->rms ? nk_cuda_rmsnorm_bwd(NULL, &B->bwd, x, g, b, (const float *)B->rstd.d, dy, dh, dx, dg,
                                   db, B->ws, B->ws_bytes)
             : nk_cuda_layernorm_bwd(
                   NULL, &B->bwd, x, g, b, c->from_y ? NULL : (const float *)B->mean.d,
                   (const float *)B->rstd.d, dy, dh, dx, dg, db, B->ws, B->ws_bytes);
  return CU_STATUS(st, NK_STATUS_OK, c->rms ? "nk_cuda_rmsnorm_bwd" : "nk_cuda_layernorm_bwd") &&
         CU_SYNC("backward");
}

/* h of row i as the operator forms it: x, or x + r in f32 rounded to the dtype. */
static void h_row(const rcfg *c, const rbufs *B, size_t i, double *hr) {
  for (size_t j = 0; j < c->cols; j++) {
    const double xv = nk_t_get(B->x.h, i * B->s.x + j, c->dt);
    if (c->residual) {
      const float sum = (float)xv + (float)nk_t_get(B->r.h, i * B->s.r + j, c->dt);
      hr[j] = nk_t_round(sum, c->dt);
    } else {
      hr[j] = xv;
    }
  }
}

static int is_bad_row(const rcfg *c, size_t i) {
  return c->bad_rows && c->rows >= 6 && (i == 1 || i == 3 || i == 5);
}

static void case_body(const rcfg *c) {
  const size_t R = c->rows, C = c->cols, es = nk_dtype_size(c->dt), ps = nk_dtype_size(c->pdt);
  const nk_dtype dt = c->dt, pdt = c->pdt;
  const double s = c->lns != 0.0f ? (double)c->lns : 1.0;
  nk_rng rng = cu_case_rng();
  rbufs B;
  memset(&B, 0, sizeof B);
  B.s = strides_of(c);
  const strides S = B.s;
  if (!cu_buf_alloc(&B.x, cu_extent(R, C, S.x) * es) ||
      !cu_buf_alloc(&B.y, cu_extent(R, C, S.y) * es) ||
      !cu_buf_alloc(&B.dy, cu_extent(R, C, S.dy) * es) ||
      !cu_buf_alloc(&B.dx, cu_extent(R, C, S.dx) * es) || !cu_buf_alloc(&B.rstd, R * 4) ||
      !cu_buf_alloc(&B.gam, C * ps) || !cu_buf_alloc(&B.bet, C * ps) ||
      !cu_buf_alloc(&B.dg, C * ps) || !cu_buf_alloc(&B.db, C * ps))
    return;
  if (!c->rms && !cu_buf_alloc(&B.mean, R * 4)) return;
  if (c->residual && (!cu_buf_alloc(&B.r, cu_extent(R, C, S.r) * es) ||
                      !cu_buf_alloc(&B.h, cu_extent(R, C, S.h) * es)))
    return;
  if (c->dh && !cu_buf_alloc(&B.dh, cu_extent(R, C, S.dh) * es)) return;
  B.dg_init = cu_host(C * ps);
  B.db_init = cu_host(C * ps);
  double *gd = cu_host(C * 8), *bd = cu_host(C * 8), *gain = cu_host(C * 8);
  if (!B.dg_init || !B.db_init || !gd || !bd || !gain) return;

  /* parameters: gains away from 0 for the backward from y (it divides by them) */
  double gmin = INFINITY;
  for (size_t j = 0; j < C; j++) {
    double gv;
    if (c->offset)
      gv = c->from_y ? 0.25 * cu_sym(&rng) : 0.1 * cu_normal(&rng);
    else
      gv = c->from_y ? 1.0 + 0.25 * cu_sym(&rng) : 1.0 + 0.5 * cu_normal(&rng);
    nk_t_set(B.gam.h, j, gv, pdt);
    nk_t_set(B.bet.h, j, 0.5 * cu_normal(&rng), pdt);
    nk_t_set(B.dg_init, j, 0.5 * cu_normal(&rng), pdt);
    nk_t_set(B.db_init, j, 0.5 * cu_normal(&rng), pdt);
    gd[j] = nk_t_get(B.gam.h, j, pdt);
    bd[j] = c->beta ? nk_t_get(B.bet.h, j, pdt) : 0.0;
    gain[j] = c->gamma ? (c->offset ? 1.0 + gd[j] : gd[j]) : 1.0;
    gmin = fmin(gmin, fabs(gain[j]));
  }
  /* activations */
  for (size_t i = 0; i < R; i++)
    for (size_t j = 0; j < C; j++) {
      const double v = sample(&rng, c->in);
      if (c->residual) {
        nk_t_set(B.x.h, i * S.x + j, 0.75 * v, dt);
        nk_t_set(B.r.h, i * S.r + j, 0.25 * v + (c->in == IN_NORMAL ? 0.1 * cu_normal(&rng) : 0.0),
                 dt);
      } else {
        nk_t_set(B.x.h, i * S.x + j, v, dt);
      }
      nk_t_set(B.dy.h, i * S.dy + j, cu_normal(&rng), dt);
      if (c->dh) nk_t_set(B.dh.h, i * S.dh + j, 0.5 * cu_normal(&rng), dt);
    }
  /* rows with NaN / +inf / -inf (the clean values are kept for the second run) */
  const size_t bad_at[3][2] = {{1, C / 3}, {3, C - 1}, {5, 0}};
  const double bad_val[3] = {NAN, INFINITY, -INFINITY};
  double bad_clean[3] = {0, 0, 0};
  if (c->bad_rows && R >= 6)
    for (int k = 0; k < 3; k++) {
      const size_t at = bad_at[k][0] * S.x + bad_at[k][1];
      bad_clean[k] = nk_t_get(B.x.h, at, dt);
      nk_t_set(B.x.h, at, bad_val[k], dt);
    }
  if (!cu_up(&B.x) || !cu_up(&B.dy) || !cu_up(&B.gam) || !cu_up(&B.bet)) return;
  if (c->residual && !cu_up(&B.r)) return;
  if (c->dh && !cu_up(&B.dh)) return;

  B.fwd = nk_norm_desc_dense(R, C, dt, c->eps);
  B.fwd.param_dtype = pdt;
  B.fwd.flags = c->offset ? NK_NORM_GAMMA_OFFSET : 0u;
  B.fwd.lns_scale = c->lns;
  B.fwd.x_stride = (ptrdiff_t)S.x, B.fwd.r_stride = (ptrdiff_t)S.r;
  B.fwd.h_stride = (ptrdiff_t)S.h, B.fwd.y_stride = (ptrdiff_t)S.y;
  B.fwd.dy_stride = (ptrdiff_t)S.dy, B.fwd.dh_stride = (ptrdiff_t)S.dh;
  B.fwd.dx_stride = (ptrdiff_t)S.dx;
  B.bwd = B.fwd;
  B.bwd.flags |= (c->from_y ? NK_NORM_BWD_FROM_Y : 0u) | (c->accumulate ? NK_NORM_ACCUMULATE : 0u);
  B.bwd.x_stride = (ptrdiff_t)(c->from_y ? S.y : c->residual ? S.h : S.x);

  /* ---- forward, twice ---- */
  if (!run_fwd(c, &B, B.x.d, B.y.d)) return;
  if (!cu_down(&B.y) || !cu_down(&B.rstd) || (!c->rms && !cu_down(&B.mean))) return;
  if (c->residual && c->write_h && !cu_down(&B.h)) return;
  if (!run_fwd(c, &B, B.x.d, B.y.d)) return;
  cu_same_as_mirror(&B.y, "y");
  cu_same_as_mirror(&B.rstd, "rstd");
  if (!c->rms) cu_same_as_mirror(&B.mean, "mean");
  if (c->residual && c->write_h) cu_same_as_mirror(&B.h, "h");
  CU_WRITTEN(B.y.h, R, C, S.y, dt, "y");
  CU_WRITTEN(B.rstd.h, 1, R, R, NK_DTYPE_F32, "rstd");
  if (!c->rms) CU_WRITTEN(B.mean.h, 1, R, R, NK_DTYPE_F32, "mean");
  if (c->residual && c->write_h) CU_WRITTEN(B.h.h, R, C, S.h, dt, "h");
  if (c->residual && !c->write_h) { /* the caller keeps h: upload the test's own */
    double *hr = cu_host(C * 8);
    if (hr == NULL) return;
    for (size_t i = 0; i < R; i++) {
      h_row(c, &B, i, hr);
      for (size_t j = 0; j < C; j++) nk_t_set(B.h.h, i * S.h + j, hr[j], dt);
    }
    if (!cu_up(&B.h)) return;
  }

  /* ---- backward, twice ---- */
  size_t need = 0;
  const int want = c->dgamma || c->dbeta;
  if (!CU_STATUS(nk_cuda_rownorm_bwd_workspace_size(&B.bwd, want, &need), NK_STATUS_OK,
                 "nk_cuda_rownorm_bwd_workspace_size"))
    return;
  CU_EXPECT(want || need == 0, "workspace size %zu without parameter gradients (want 0)", need);
  if (need > 0 || c->ws_off > 0) {
    char *w = cu_dev(need + c->ws_off);
    if (w == NULL) return;
    B.ws = w + c->ws_off;
  }
  B.ws_bytes = need;
  if (!run_bwd(c, &B, B.dy.d, B.dx.d)) return;
  if (!cu_down(&B.dx) || !cu_down(&B.dg) || !cu_down(&B.db)) return;
  if (!run_bwd(c, &B, B.dy.d, B.dx.d)) return;
  cu_same_as_mirror(&B.dx, "dx");
  if (c->dgamma) cu_same_as_mirror(&B.dg, "dgamma");
  if (c->dbeta) cu_same_as_mirror(&B.db, "dbeta");
  CU_WRITTEN(B.dx.h, R, C, S.dx, dt, "dx");
  if (c->dgamma) CU_WRITTEN(B.dg.h, 1, C, C, pdt, "dgamma");
  if (c->dbeta) CU_WRITTEN(B.db.h, 1, C, C, pdt, "dbeta");
  cu_same_as_mirror(&B.x, "x (an input)");
  cu_same_as_mirror(&B.dy, "dy (an input)");
  cu_same_as_mirror(&B.gam, "gamma (an input)");
  cu_same_as_mirror(&B.bet, "beta (an input)");
  if (c->residual) cu_same_as_mirror(&B.r, "r (an input)");
  if (c->residual && !c->write_h) cu_same_as_mirror(&B.h, "h (an input of the backward)");
  if (c->dh) cu_same_as_mirror(&B.dh, "dh (an input)");

  /* ---- against the reference ---- */
  size_t *idx = NULL;
  const size_t nidx = cu_pick_rows(R, C, FULL_CHECK, SAMPLE_ROWS, &rng, &idx);
  const int full = nidx == R;
  double *hr = cu_host(C * 8), *yr = cu_host(C * 8), *dyr = cu_host(C * 8), *dxr = cu_host(C * 8);
  double *dg_row = cu_host(C * 8), *db_row = cu_host(C * 8);
  double *dg_sum = cu_host(C * 8), *db_sum = cu_host(C * 8), *g_bnd = cu_host(C * 8);
  double *b_bnd = cu_host(C * 8), *fy_bnd = cu_host(C * 8);
  if (!idx || !hr || !yr || !dyr || !dxr || !dg_row || !db_row || !dg_sum || !db_sum || !g_bnd ||
      !b_bnd || !fy_bnd)
    return;
  for (size_t j = 0; j < C; j++) dg_sum[j] = db_sum[j] = g_bnd[j] = b_bnd[j] = fy_bnd[j] = 0.0;
  const int offset = c->offset;
  const double *G = c->gamma ? gd : NULL, *Bt = c->beta ? bd : NULL;
  for (size_t n = 0; n < nidx; n++) {
    const size_t i = idx[n];
    const int bad = is_bad_row(c, i);
    h_row(c, &B, i, hr);
    double mu = 0.0, rs = 0.0;
    if (c->rms)
      nk_ref_rmsnorm_fwd(1, C, hr, G, Bt, offset, (double)c->eps, yr, &rs);
    else
      nk_ref_layernorm_fwd(1, C, hr, G, Bt, offset, (double)c->eps, yr, &mu, &rs);
    /* forward */
    double M = 0.0, ymax = 0.0;
    int xhat_zero = !c->rms; /* LayerNorm of a constant row (or cols == 1): y = beta exactly */
    for (size_t j = 0; j < C; j++) {
      yr[j] *= s;
      M = fmax(M, fmax(fabs(yr[j]), c->beta ? fabs(yr[j] - s * bd[j]) : 0.0));
      ymax = fmax(ymax, fabs(yr[j]));
      if (hr[j] != hr[0]) xhat_zero = 0;
    }
    for (size_t j = 0; j < C; j++) {
      const size_t k = i * S.y + j;
      if (bad) {
        CU_EXACT(B.y.h, k, dt, NAN, "y (row with NaN/inf)", i, j);
      } else if (xhat_zero) {
        const float b = c->beta ? (float)bd[j] : 0.0f;
        CU_EXACT(B.y.h, k, dt, nk_t_round((float)(b * (float)s), dt), "y (xhat == 0)", i, j);
      } else {
        const double bound =
            dt == NK_DTYPE_F32 ? 2e-6 * M + 0x1p-148 : nk_t_ulp(yr[j], dt) + 2e-6 * M;
        CU_CLOSE(B.y.h, k, dt, yr[j], bound, "y", i, j);
      }
      if (c->residual && c->write_h) CU_EXACT(B.h.h, i * S.h + j, dt, hr[j], "h", i, j);
    }
    if (bad) {
      CU_EXACT(B.rstd.h, i, NK_DTYPE_F32, NAN, "rstd (row with NaN/inf)", i, 0);
      if (!c->rms) CU_EXACT(B.mean.h, i, NK_DTYPE_F32, NAN, "mean (row with NaN/inf)", i, 0);
    } else {
      CU_CLOSE(B.rstd.h, i, NK_DTYPE_F32, rs, 2e-6 * rs, "rstd", i, 0);
      if (!c->rms)
        CU_CLOSE(B.mean.h, i, NK_DTYPE_F32, mu, nk_t_ulp(mu, NK_DTYPE_F32) + 1e-6 / rs, "mean", i,
                 0);
    }
    /* backward: dy' = dy * s */
    for (size_t j = 0; j < C; j++) dyr[j] = nk_t_get(B.dy.h, i * S.dy + j, dt) * s;
    if (c->rms)
      nk_ref_rmsnorm_bwd(1, C, hr, G, offset, (double)c->eps, dyr, dxr, dg_row, db_row);
    else
      nk_ref_layernorm_bwd(1, C, hr, G, offset, (double)c->eps, dyr, dxr, dg_row, db_row);
    double mg = 0.0, xmax = 0.0, mgx = 0.0, mgd = 0.0;
    for (size_t j = 0; j < C; j++) {
      const double xh = (hr[j] - mu) * rs, gdy = gain[j] * dyr[j];
      mg = fmax(mg, fabs(gdy));
      xmax = fmax(xmax, fabs(xh));
      mgx += gdy * xh / (double)C;
      mgd += fabs(gdy) / (double)C;
    }
    const double Srow = rs * mg * fmax(1.0, xmax);
    double delta = 0.0, fy_extra = 0.0; /* the backward from y (top of the file) */
    if (c->from_y) {
      const double u = dt == NK_DTYPE_F32 ? 0.0 : nk_t_ulp(ymax, dt);
      delta = (2e-6 * M + u + 0x1p-21 * M) / (s * gmin);
      fy_extra = 2.0 * rs * delta * (fabs(mgx) + xmax * mgd);
    }
    for (size_t j = 0; j < C; j++) {
      const size_t k = i * S.dx + j;
      if (bad) {
        CU_EXACT(B.dx.h, k, dt, NAN, "dx (row with NaN/inf)", i, j);
        continue;
      }
      double ref = dxr[j];
      if (c->dh) ref += nk_t_get(B.dh.h, i * S.dh + j, dt);
      const double bound =
          4e-6 * Srow + fy_extra + (dt != NK_DTYPE_F32 || c->dh ? nk_t_ulp(ref, dt) : 0.0);
      CU_CLOSE(B.dx.h, k, dt, ref, bound, "dx", i, j);
    }
    if (full)
      for (size_t j = 0; j < C; j++) {
        dg_sum[j] += dg_row[j];
        db_sum[j] += db_row[j];
        g_bnd[j] += fabs(dyr[j]) * xmax;
        b_bnd[j] += fabs(dyr[j]);
        fy_bnd[j] += 2.0 * fabs(dyr[j]) * delta;
      }
  }
  for (size_t j = 0; j < C; j++) {
    if (full) {
      if (c->dgamma) {
        const double ref = (c->accumulate ? nk_t_get(B.dg_init, j, pdt) : 0.0) + dg_sum[j];
        CU_CLOSE(B.dg.h, j, pdt, ref, 4e-6 * g_bnd[j] + fy_bnd[j] + nk_t_ulp(ref, pdt), "dgamma",
                 (size_t)0, j);
      }
      if (c->dbeta) {
        const double ref = (c->accumulate ? nk_t_get(B.db_init, j, pdt) : 0.0) + db_sum[j];
        CU_CLOSE(B.db.h, j, pdt, ref, 4e-6 * b_bnd[j] + nk_t_ulp(ref, pdt), "dbeta", (size_t)0, j);
      }
    } else if (!c->bad_rows) { /* sampled: the sums over all rows are not recomputed */
      if (c->dgamma)
        CU_EXPECT(isfinite(nk_t_get(B.dg.h, j, pdt)), "dgamma[%zu] = %g", j,
                  nk_t_get(B.dg.h, j, pdt));
      if (c->dbeta)
        CU_EXPECT(isfinite(nk_t_get(B.db.h, j, pdt)), "dbeta[%zu] = %g", j,
                  nk_t_get(B.db.h, j, pdt));
    }
  }

  /* ---- rows with NaN/inf: the other rows are bit for bit those of the clean input ---- */
  if (c->bad_rows && R >= 6) {
    for (int k = 0; k < 3; k++)
      nk_t_set(B.x.h, bad_at[k][0] * S.x + bad_at[k][1], bad_clean[k], dt);
    if (!cu_up(&B.x)) return;
    if (c->residual && !c->write_h) {
      for (int k = 0; k < 3; k++) {
        const size_t i = bad_at[k][0];
        h_row(c, &B, i, hr);
        for (size_t j = 0; j < C; j++) nk_t_set(B.h.h, i * S.h + j, hr[j], dt);
      }
      if (!cu_up(&B.h)) return;
    }
    unsigned char *y2 = cu_host(B.y.bytes), *dx2 = cu_host(B.dx.bytes), *db2 = cu_host(B.db.bytes);
    float *rs2 = cu_host(R * 4), *mu2 = cu_host(R * 4);
    if (!y2 || !dx2 || !db2 || !rs2 || !mu2) return;
    if (!run_fwd(c, &B, B.x.d, B.y.d) || !run_bwd(c, &B, B.dy.d, B.dx.d)) return;
    if (!CU_OK(cudaMemcpy(y2, B.y.d, B.y.bytes, cudaMemcpyDeviceToHost)) ||
        !CU_OK(cudaMemcpy(dx2, B.dx.d, B.dx.bytes, cudaMemcpyDeviceToHost)) ||
        !CU_OK(cudaMemcpy(db2, B.db.d, B.db.bytes, cudaMemcpyDeviceToHost)) ||
        !CU_OK(cudaMemcpy(rs2, B.rstd.d, R * 4, cudaMemcpyDeviceToHost)) ||
        (!c->rms && !CU_OK(cudaMemcpy(mu2, B.mean.d, R * 4, cudaMemcpyDeviceToHost))))
      return;
    for (size_t i = 0; i < R; i++) {
      if (is_bad_row(c, i)) continue;
      CU_EXPECT(memcmp(y2 + i * S.y * es, (char *)B.y.h + i * S.y * es, C * es) == 0 &&
                    memcmp(dx2 + i * S.dx * es, (char *)B.dx.h + i * S.dx * es, C * es) == 0 &&
                    memcmp(&rs2[i], (float *)B.rstd.h + i, 4) == 0 &&
                    (c->rms || memcmp(&mu2[i], (float *)B.mean.h + i, 4) == 0),
                "row %zu differs between the inputs with and without NaN/inf in rows 1, 3, 5", i);
    }
    if (c->dbeta)
      CU_EXPECT(memcmp(db2, B.db.h, B.db.bytes) == 0,
                "dbeta (sum of dy) differs between the inputs with and without NaN/inf");
    return;
  }

  /* ---- in place: y == x, dx == dy give the same bits ---- */
  if (c->inplace) {
    /* the y buffer (same stride as x) receives x, then the forward runs on it */
    if (!CU_OK(cudaMemcpy(B.y.d, B.x.d, B.x.bytes, cudaMemcpyDeviceToDevice))) return;
    const nk_status st = call_fwd(c, &B, B.y.d, B.y.d);
    if (!CU_STATUS(st, NK_STATUS_OK, "forward with y == x") || !CU_SYNC("forward, y == x")) return;
    cu_same_as_mirror(&B.y, "y, in place (y == x)");
    if (!CU_OK(cudaMemcpy(B.dx.d, B.dy.d, B.dy.bytes, cudaMemcpyDeviceToDevice))) return;
    if (!run_bwd(c, &B, B.dx.d, B.dx.d)) return;
    cu_same_as_mirror(&B.dx, "dx, in place (dx == dy)");
    if (c->dgamma) cu_same_as_mirror(&B.dg, "dgamma of the in-place backward");
    if (c->dbeta) cu_same_as_mirror(&B.db, "dbeta of the in-place backward");
  }
}

/* Appends " tok" when on. */
static void tag(char *buf, size_t n, int on, const char *tok) {
  const size_t l = strlen(buf);
  if (on && l + 1 < n) snprintf(buf + l, n - l, " %s", tok);
}

static void run(const rcfg *c) {
  char what[200] = "", lns[32], eps[32];
  snprintf(lns, sizeof lns, "lns=%g", (double)c->lns);
  snprintf(eps, sizeof eps, "eps=%g", (double)c->eps);
  tag(what, sizeof what, c->gamma, "g");
  tag(what, sizeof what, c->beta, "b");
  tag(what, sizeof what, c->offset, "offset");
  tag(what, sizeof what, c->residual, c->write_h ? "r+h" : "r(h not written)");
  tag(what, sizeof what, c->dh, "dh");
  tag(what, sizeof what, c->from_y, "from_y");
  tag(what, sizeof what, c->accumulate, "acc");
  tag(what, sizeof what, !c->dgamma, "no-dgamma");
  tag(what, sizeof what, !c->dbeta, "no-dbeta");
  tag(what, sizeof what, c->lns != 0.0f, lns);
  tag(what, sizeof what, c->eps != (c->rms ? 1e-6f : 1e-5f), eps);
  tag(what, sizeof what, c->pad != 0, "strided");
  tag(what, sizeof what, c->ws_off != 0, "ws+3");
  tag(what, sizeof what, c->in != IN_NORMAL, in_name[c->in]);
  tag(what, sizeof what, c->bad_rows, "nan/inf-rows");
  tag(what, sizeof what, c->inplace, "in-place");
  if (!cu_case_begin("%-9s %4s/%-4s %7zu x %-6zu%s", c->rms ? "rmsnorm" : "layernorm", cu_dt(c->dt),
                     cu_dt(c->pdt), c->rows, c->cols, what))
    return;
  case_body(c);
  cu_case_end();
}

static const nk_dtype dts[3] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};

/* Every width, op and dtype: about 2^21 elements each (so 1048575 rows of 1 column), all rows
 * checked, residual/h and dh alternating, param_dtype == dtype on some. 1000003 columns are
 * wider than a cluster's shared memory holds (docs/cuda.md: the rows are then read again from
 * global memory). Quick mode: fewer widths and dtypes, about 2^14 elements. */
static void widths_matrix(void) {
  static const size_t widths[] = {1, 7, 64, 100, 1024, 4096, 5000, 16384, 65536, 262144, 1000003};
  static const int quick_width[] = {0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1};
  for (int rms = 0; rms < 2; rms++)
    for (int t = 0; t < 3; t++)
      for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
        if (cu_quick && (t == 2 || !quick_width[w])) continue;
        const size_t elements = (size_t)1 << (cu_quick ? 14 : 21);
        rcfg c = base(rms, dts[t], cu_rows_for(widths[w], elements), widths[w]);
        c.residual = c.write_h = (int)(w % 2);
        c.dh = w % 2 == 0;
        if (dts[t] != NK_DTYPE_F32 && w % 3 != 1) c.pdt = dts[t];
        run(&c);
      }
}

/* The options, one at a time or in small groups, on narrow, medium and wide rows. Quick mode:
 * the medium width, f32 and bf16. */
static void options(void) {
  static const size_t widths[] = {100, 4096, 65536}, rows[] = {1309, 33, 5};
  for (int v = 0; v < 12; v++)
    for (int rms = 0; rms < 2; rms++)
      for (int t = 0; t < 3; t++)
        for (int w = 0; w < 3; w++) {
          if (cu_quick && (w != 1 || t == 2 || (v + rms + t) % 2)) continue;
          rcfg c = base(rms, dts[t], cu_quick ? 5 : rows[w], widths[w]);
          switch (v) {
            case 0: c.gamma = c.beta = 0; break; /* dgamma = sum dy xhat still asked for */
            case 1: c.beta = 0; break;
            case 2: c.gamma = 0, c.beta = 1, c.dgamma = 0; break;
            case 3: c.offset = 1, c.beta = 1; break;
            case 4: c.residual = 1, c.write_h = 0, c.dh = 1; break;
            case 5: c.lns = 0.5f, c.beta = 1, c.residual = c.write_h = 1; break;
            case 6: c.lns = 0.7f, c.beta = 1, c.dh = 1; break;
            case 7: c.from_y = 1, c.beta = 1; break;
            case 8: c.from_y = 1, c.lns = 0.5f, c.offset = 1, c.dbeta = 0; break;
            case 9: c.accumulate = 1, c.dh = 1; break;
            case 10:
              c.pad = 3, c.residual = c.write_h = 1, c.dh = 1, c.accumulate = 1;
              c.pdt = dts[t];
              break;
            default: c.ws_off = 3, c.eps = 1e-3f, c.pdt = dts[t], c.beta = 1; break;
          }
          run(&c);
        }
}

/* normkit.h's edge cases. Quick mode: one width of each. */
static void edge_cases(void) {
  static const size_t cw[] = {1, 7, 1024, 5000, 65536}, cr[] = {5, 33, 33, 9, 3};
  for (int rms = 0; rms < 2; rms++)
    for (int t = 0; t < 3; t++)
      for (int w = 0; w < 5; w++) { /* constant rows: LayerNorm y = beta exactly */
        if (cu_quick && (w != 2 || t != 1)) continue;
        rcfg c = base(rms, dts[t], cr[w], cw[w]);
        c.in = IN_CONST;
        c.beta = 1;
        if (t == 0 && w % 2) c.lns = 0.5f;
        if (w == 2) c.residual = c.write_h = 1;
        run(&c);
      }
  static const size_t bw[] = {7, 1024, 65536}, br[] = {9, 9, 7};
  for (int rms = 0; rms < 2; rms++)
    for (int t = 0; t < 3; t++)
      for (int w = 0; w < 3; w++) { /* NaN / +inf / -inf rows */
        if (cu_quick && (w != 1 || t != 1)) continue;
        rcfg c = base(rms, dts[t], br[w], bw[w]);
        c.bad_rows = 1;
        c.beta = 1;
        if (t == 1) c.residual = c.write_h = 1;
        run(&c);
      }
  static const size_t iw[] = {7, 1024, 5000, 65536, 262144}, ir[] = {65, 65, 17, 5, 3};
  for (int rms = 0; rms < 2; rms++)
    for (int w = 0; w < 5; w++) { /* ill-conditioned: mean 1e4, std 1e-2 */
      if (cu_quick && w != 2) continue;
      rcfg c = base(rms, NK_DTYPE_F32, ir[w], iw[w]);
      c.in = IN_ILLCOND;
      c.beta = w % 2;
      run(&c);
    }
  static const size_t mw[] = {100, 4096, 65536}, mr[] = {33, 9, 3};
  for (int rms = 0; rms < 2; rms++)
    for (int in = IN_HUGE; in <= IN_TINY; in++)
      for (int w = 0; w < 3; w++) { /* magnitudes 1e30 and 1e-30 */
        if (cu_quick && w != 1) continue;
        rcfg c = base(rms, NK_DTYPE_F32, mr[w], mw[w]);
        c.in = in;
        c.beta = 1;
        run(&c);
      }
}

/* y == x and dx == dy (same pointer and stride) against the out-of-place bits. */
static void in_place(void) {
  static const size_t pw[] = {1024, 65536}, pr[] = {65, 5};
  for (int rms = 0; rms < 2; rms++)
    for (int t = 0; t < 3; t++)
      for (int w = 0; w < 2; w++) {
        if (cu_quick && (t != 1 || w != 0)) continue;
        rcfg c = base(rms, dts[t], pr[w], pw[w]);
        c.inplace = 1;
        c.pad = (size_t)(t == 2) * 2;
        c.dh = w;
        run(&c);
      }
}

/* Tensors of more than 2^22 elements: 64 rows compared with the reference (not in quick mode). */
static void large(void) {
  if (cu_quick) return;
  rcfg c = base(0, NK_DTYPE_F32, 257, 65536);
  c.residual = c.write_h = 1;
  run(&c);
  c = base(1, NK_DTYPE_BF16, 65, 262144);
  c.pdt = NK_DTYPE_BF16;
  c.dh = 1;
  run(&c);
}

/* rows == 0 or cols == 0: OK and nothing written (pointers may be NULL). */
static void empty(int rms) {
  if (!cu_case_begin("%-9s rows == 0 / cols == 0: OK, nothing written",
                     rms ? "rmsnorm" : "layernorm"))
    return;
  const size_t C = 64, R = 4;
  cu_buf x, y, mean, rstd, dx, dg, ws;
  if (!cu_buf_alloc(&x, R * C * 4) || !cu_buf_alloc(&y, R * C * 4) || !cu_buf_alloc(&mean, R * 4) ||
      !cu_buf_alloc(&rstd, R * 4) || !cu_buf_alloc(&dx, R * C * 4) || !cu_buf_alloc(&dg, C * 4) ||
      !cu_buf_alloc(&ws, 1 << 16))
    goto done;
  for (size_t k = 0; k < R * C; k++) ((float *)x.h)[k] = 1.0f + (float)k;
  if (!cu_up(&x)) goto done;
  for (int which = 0; which < 3; which++) {
    /* rows 0 with buffers, rows 0 with NULL everywhere, cols 0 with buffers */
    nk_norm_desc d =
        nk_norm_desc_dense(which == 2 ? R : 0, which == 2 ? 0 : C, NK_DTYPE_F32, 1e-5f);
    const int nul = which == 1;
    const void *X = nul ? NULL : x.d;
    void *Y = nul ? NULL : y.d, *DX = nul ? NULL : dx.d, *DG = nul ? NULL : dg.d;
    float *M = nul ? NULL : (float *)mean.d, *RS = nul ? NULL : (float *)rstd.d;
    nk_status st = rms ? nk_cuda_rmsnorm_fwd(NULL, &d, X, NULL, NULL, NULL, Y, NULL, RS)
                       : nk_cuda_layernorm_fwd(NULL, &d, X, NULL, NULL, NULL, Y, NULL, M, RS);
    CU_STATUS(st, NK_STATUS_OK, "forward of an empty tensor");
    CU_SYNC("forward of an empty tensor");
    size_t need = 0;
    CU_STATUS(nk_cuda_rownorm_bwd_workspace_size(&d, 1, &need), NK_STATUS_OK,
              "workspace size of an empty tensor");
    st = rms ? nk_cuda_rmsnorm_bwd(NULL, &d, X, NULL, NULL, RS, X, NULL, DX, DG, NULL,
                                   nul ? NULL : ws.d, nul ? 0 : ws.bytes)
             : nk_cuda_layernorm_bwd(NULL, &d, X, NULL, NULL, M, RS, X, NULL, DX, DG, NULL,
                                     nul ? NULL : ws.d, nul ? 0 : ws.bytes);
    CU_STATUS(st, NK_STATUS_OK, "backward of an empty tensor");
    CU_SYNC("backward of an empty tensor");
  }
  CU_UNTOUCHED(&y, "y");
  CU_UNTOUCHED(&mean, "mean");
  CU_UNTOUCHED(&rstd, "rstd");
  CU_UNTOUCHED(&dx, "dx");
  CU_UNTOUCHED(&dg, "dgamma");
done:
  cu_case_end();
}

/* Argument errors are found on the host before anything is launched or written. */
static void argument_errors(int rms) {
  if (!cu_case_begin("%-9s argument errors: INVALID_ARGUMENT, UNSUPPORTED, MISUSE",
                     rms ? "rmsnorm" : "layernorm"))
    return;
  const size_t R = 6, C = 256;
  const char *fname = rms ? "rmsnorm_fwd" : "layernorm_fwd";
  const char *bname = rms ? "rmsnorm_bwd" : "layernorm_bwd";
  cu_buf x, r, y, h, mean, rstd, g, dy, dx, dg, db;
  if (!cu_buf_alloc(&x, (R * C + 8) * 4) || !cu_buf_alloc(&r, R * C * 4) ||
      !cu_buf_alloc(&y, R * C * 4) || !cu_buf_alloc(&h, R * C * 4) || !cu_buf_alloc(&mean, R * 4) ||
      !cu_buf_alloc(&rstd, R * 4) || !cu_buf_alloc(&g, C * 4) ||
      !cu_buf_alloc(&dy, (R * C + 8) * 4) || !cu_buf_alloc(&dx, R * C * 4) ||
      !cu_buf_alloc(&dg, C * 4) || !cu_buf_alloc(&db, C * 4))
    goto done;
  nk_rng rng = cu_case_rng();
  for (size_t k = 0; k < R * C + 8; k++) ((float *)x.h)[k] = (float)cu_normal(&rng);
  for (size_t k = 0; k < R * C; k++) ((float *)dy.h)[k] = (float)cu_normal(&rng);
  for (size_t k = 0; k < C; k++) ((float *)g.h)[k] = 1.0f + 0.1f * (float)cu_normal(&rng);
  if (!cu_up(&x) || !cu_up(&dy) || !cu_up(&g)) goto done;
  /* the forward's statistics, for the backward's error cases */
  const nk_norm_desc d0 = nk_norm_desc_dense(R, C, NK_DTYPE_F32, 1e-5f);
  {
    cu_buf yy;
    if (!cu_buf_alloc(&yy, R * C * 4)) goto done;
    const nk_status st =
        rms ? nk_cuda_rmsnorm_fwd(NULL, &d0, x.d, NULL, g.d, NULL, yy.d, NULL, (float *)rstd.d)
            : nk_cuda_layernorm_fwd(NULL, &d0, x.d, NULL, g.d, NULL, yy.d, NULL, (float *)mean.d,
                                    (float *)rstd.d);
    if (!CU_STATUS(st, NK_STATUS_OK, fname) || !CU_SYNC(fname)) goto done;
  }
  /* the statistics of the good call: the failing calls below must not change them */
  if (!cu_down(&rstd) || (!rms && !cu_down(&mean))) goto done;
  struct {
    const char *what;
    nk_status want;
  } fwd_cases[] = {
      {"x NULL", NK_STATUS_INVALID_ARGUMENT},
      {"eps 0", NK_STATUS_INVALID_ARGUMENT},
      {"eps -1e-5", NK_STATUS_INVALID_ARGUMENT},
      {"eps NaN", NK_STATUS_INVALID_ARGUMENT},
      {"y overlaps x partially (y = x + 1 element)", NK_STATUS_INVALID_ARGUMENT},
      {"x_stride < cols", NK_STATUS_INVALID_ARGUMENT},
      {"h without r", NK_STATUS_INVALID_ARGUMENT},
      {"GAMMA_OFFSET without gamma", NK_STATUS_INVALID_ARGUMENT},
      {"lns_scale -1", NK_STATUS_INVALID_ARGUMENT},
      {"x misaligned (f32 at 2 bytes)", NK_STATUS_INVALID_ARGUMENT},
      {"param_dtype f16 with dtype bf16", NK_STATUS_UNSUPPORTED},
  };
  for (size_t k = 0; k < sizeof fwd_cases / sizeof fwd_cases[0]; k++) {
    nk_norm_desc d = d0;
    const void *X = x.d, *Gm = g.d;
    void *Y = y.d, *H = NULL;
    switch (k) {
      case 0: X = NULL; break;
      case 1: d.eps = 0.0f; break;
      case 2: d.eps = -1e-5f; break;
      case 3: d.eps = NAN; break;
      case 4: Y = (float *)x.d + 1; break;
      case 5: d.x_stride = (ptrdiff_t)C - 1; break;
      case 6: H = h.d; break;
      case 7: d.flags = NK_NORM_GAMMA_OFFSET, Gm = NULL; break;
      case 8: d.lns_scale = -1.0f; break;
      case 9: X = (const char *)x.d + 2; break;
      default: d.dtype = NK_DTYPE_BF16, d.param_dtype = NK_DTYPE_F16; break;
    }
    const nk_status st =
        rms ? nk_cuda_rmsnorm_fwd(NULL, &d, X, NULL, Gm, NULL, Y, H, (float *)rstd.d)
            : nk_cuda_layernorm_fwd(NULL, &d, X, NULL, Gm, NULL, Y, H, (float *)mean.d,
                                    (float *)rstd.d);
    char what[160];
    snprintf(what, sizeof what, "%s with %s", fname, fwd_cases[k].what);
    CU_STATUS(st, fwd_cases[k].want, what);
    CU_SYNC(what);
  }
  CU_UNTOUCHED(&y, "y after the failed forwards");
  CU_UNTOUCHED(&h, "h after the failed forwards");
  {
    unsigned char *t = cu_host(x.bytes);
    if (t && CU_OK(cudaMemcpy(t, x.d, x.bytes, cudaMemcpyDeviceToHost)))
      CU_EXPECT(memcmp(t, x.h, x.bytes) == 0, "x changed by a forward with y overlapping x");
  }
  cu_same_as_mirror(&rstd, "rstd after the failed forwards");
  if (!rms) cu_same_as_mirror(&mean, "mean after the failed forwards");

  /* backward: workspace too small (MISUSE), a NULL mean (LayerNorm), overlap */
  size_t need = 0, need0 = 0;
  if (!CU_STATUS(nk_cuda_rownorm_bwd_workspace_size(&d0, 1, &need), NK_STATUS_OK,
                 "nk_cuda_rownorm_bwd_workspace_size") ||
      !CU_STATUS(nk_cuda_rownorm_bwd_workspace_size(&d0, 0, &need0), NK_STATUS_OK,
                 "nk_cuda_rownorm_bwd_workspace_size, want_params 0"))
    goto done;
  CU_EXPECT(need > 0, "the backward with dgamma needs no workspace (%zu bytes)", need);
  CU_EXPECT(need0 == 0, "the backward without dgamma/dbeta needs %zu bytes (want 0)", need0);
  char *ws = cu_dev(need + 1);
  if (ws == NULL) goto done;
  struct {
    const char *what;
    nk_status want;
  } bwd_cases[] = {
      {"workspace 1 byte too small", NK_STATUS_MISUSE},
      {"workspace NULL", NK_STATUS_MISUSE},
      {"the want_params = 0 size but dgamma given", NK_STATUS_MISUSE},
      {"dy NULL", NK_STATUS_INVALID_ARGUMENT},
      {"dx overlapping dy partially", NK_STATUS_INVALID_ARGUMENT},
      {"eps 0", NK_STATUS_INVALID_ARGUMENT},
      {"mean NULL (LayerNorm from x)", NK_STATUS_INVALID_ARGUMENT},
  };
  const size_t nb = sizeof bwd_cases / sizeof bwd_cases[0] - (rms ? 1 : 0);
  for (size_t k = 0; k < nb; k++) {
    nk_norm_desc d = d0;
    void *W = ws;
    size_t wsb = need;
    const void *DY = dy.d;
    void *DX = dx.d, *DB = db.d;
    const float *M = (const float *)mean.d;
    switch (k) {
      case 0: wsb = need - 1; break;
      case 1: W = NULL; break;
      case 2: wsb = need0, DB = NULL; break;
      case 3: DY = NULL; break;
      case 4: DX = (float *)dy.d + 1, d.dx_stride = d.dy_stride; break;
      case 5: d.eps = 0.0f; break;
      default: M = NULL; break;
    }
    const nk_status st =
        rms ? nk_cuda_rmsnorm_bwd(NULL, &d, x.d, g.d, NULL, (const float *)rstd.d, DY, NULL, DX,
                                  dg.d, DB, W, wsb)
            : nk_cuda_layernorm_bwd(NULL, &d, x.d, g.d, NULL, M, (const float *)rstd.d, DY, NULL,
                                    DX, dg.d, DB, W, wsb);
    char what[160];
    snprintf(what, sizeof what, "%s with %s", bname, bwd_cases[k].what);
    CU_STATUS(st, bwd_cases[k].want, what);
    CU_SYNC(what);
  }
  CU_UNTOUCHED(&dx, "dx after the failed backwards");
  CU_UNTOUCHED(&dg, "dgamma after the failed backwards");
  CU_UNTOUCHED(&db, "dbeta after the failed backwards");
  cu_same_as_mirror(&dy, "dy after a backward with dx overlapping dy");
  cu_same_as_mirror(&rstd, "rstd after the failed backwards");
done:
  cu_case_end();
}

int main(void) {
  if (!cu_start("test_cuda_rownorm")) return 77;
  widths_matrix();
  options();
  edge_cases();
  in_place();
  large();
  for (int rms = 0; rms < 2; rms++) {
    empty(rms);
    argument_errors(rms);
  }
  return cu_finish("test_cuda_rownorm");
}
