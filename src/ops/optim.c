/*
 * optim.c — weight and optimizer normalization (spec stats-optim-rl.md Part B): weight
 * normalization forward/backward, the AdamP and SGDP steps, Normalize-and-Project. Small exact
 * functions over dense f32 weights: every element is computed in double from its f32 inputs and
 * rounded once when stored. Weight norm and NaP: sequential double sums, serial. AdamP/SGDP:
 * the optimizer kernels (src/kernels/optim, blocked double sums, every ISA the same bits) over
 * the context's pool. docs/ops/weight-norm.md, docs/ops/optimizers.md, docs/ops/nap.md.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"
#include "dispatch.h"
#include "validate.h"

/* ---- shared checks -------------------------------------------------------------------------- */

static nk_status check_shape(nk_context *ctx, const char *op, size_t rows, size_t cols,
                             size_t *n) {
  if (!nk__mul_size(rows, cols, n) || *n > (size_t)PTRDIFF_MAX / sizeof(float))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: rows %zu * cols %zu is too large", op,
                    rows, cols);
  return NK_STATUS_OK;
}

/* 0 <= v < inf (NaN fails). */
static nk_status check_nonneg(nk_context *ctx, const char *op, const char *name, double v) {
  if (!(v >= 0.0) || !isfinite(v))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s %g must be finite and >= 0", op,
                    name, v);
  return NK_STATUS_OK;
}

/* sum of squares of x[0..n) in double, in index order. */
static double sumsq(const float *x, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
  return s;
}

/* Rows (or NaP groups) per task of the row-parallel passes: about 16384 elements. Each row is
 * computed whole by one task with the serial arithmetic below, so every thread count gives the
 * same bits. */
static size_t rows_per_task(size_t cols) { return cols >= 16384 ? 1 : 16384 / cols; }

/* ---- weight normalization ------------------------------------------------------------------- */

typedef struct wn_job {
  size_t cols;
  float eps;
  const float *v, *g, *dw;
  float *out;  /* w (forward) or dv (backward) */
  float *dg;   /* backward */
  float *norm; /* forward, optional */
} wn_job;

static void wn_fwd_task(void *arg, size_t start, size_t count) {
  const wn_job *j = arg;
  const size_t cols = j->cols;
  for (size_t r = start; r < start + count; r++) {
    const float *vr = j->v + r * cols;
    const double nrm = sqrt(sumsq(vr, cols));
    /* fmax would turn a NaN norm into eps: keep NaN. An inf in the row (norm inf) makes the
     * whole row NaN, as the header says (g / inf = 0 would leave 0 * v = 0 in its finite
     * elements: found by tests/fuzz/optim.c). */
    const double d = nrm < (double)j->eps ? (double)j->eps : nrm;
    const double scale = isinf(nrm) ? NAN : (double)j->g[r] / d;
    for (size_t c = 0; c < cols; c++) j->out[r * cols + c] = (float)(scale * (double)vr[c]);
    if (j->norm != NULL) j->norm[r] = (float)nrm;
  }
}

static void wn_bwd_task(void *arg, size_t start, size_t count) {
  const wn_job *j = arg;
  const size_t cols = j->cols;
  float *dv = j->out, *dg = j->dg;
  for (size_t r = start; r < start + count; r++) {
    const float *vr = j->v + r * cols, *dwr = j->dw + r * cols;
    const double nrm = sqrt(sumsq(vr, cols));
    double dot = 0.0;
    for (size_t c = 0; c < cols; c++) dot += (double)dwr[c] * (double)vr[c];
    const double gr = (double)j->g[r];
    if (nrm < (double)j->eps) { /* clamped: d = eps does not depend on v */
      const double e = (double)j->eps;
      dg[r] = (float)(dot / e);
      for (size_t c = 0; c < cols; c++) dv[r * cols + c] = (float)(gr / e * (double)dwr[c]);
      continue;
    }
    if (isinf(nrm)) { /* inf in the row: dv and dg NaN (header; see the forward) */
      dg[r] = NAN;
      for (size_t c = 0; c < cols; c++) dv[r * cols + c] = NAN;
      continue;
    }
    const double dgr = dot / nrm;
    const double a = gr / nrm, b = gr * dgr / (nrm * nrm);
    for (size_t c = 0; c < cols; c++)
      dv[r * cols + c] = (float)(a * (double)dwr[c] - b * (double)vr[c]);
    dg[r] = (float)dgr;
  }
}

nk_status nk_weight_norm_fwd(nk_context *ctx, size_t rows, size_t cols, float eps,
                             const float *v, const float *g, float *w, float *norm) {
  static const char op[] = "weight_norm_fwd";
  size_t n;
  TRY(check_nonneg(ctx, op, "eps", (double)eps));
  TRY(check_shape(ctx, op, rows, cols, &n));
  if (n == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(v);
  NK_REQUIRE_PTR(g);
  NK_REQUIRE_PTR(w);
  span s[4];
  TRY(nk__vector_span(ctx, op, &s[0], "v", v, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "g", g, rows, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "w", w, n, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "norm", norm, rows, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 4, nk__no_alias));

  const wn_job j = {cols, eps, v, g, NULL, w, NULL, norm};
  nk_parallelize_1d(nk__context_pool(ctx), wn_fwd_task, (void *)&j, rows, rows_per_task(cols));
  return nk__ok(ctx);
}

nk_status nk_weight_norm_bwd(nk_context *ctx, size_t rows, size_t cols, float eps,
                             const float *v, const float *g, const float *dw, float *dv,
                             float *dg) {
  static const char op[] = "weight_norm_bwd";
  size_t n;
  TRY(check_nonneg(ctx, op, "eps", (double)eps));
  TRY(check_shape(ctx, op, rows, cols, &n));
  if (n == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(v);
  NK_REQUIRE_PTR(g);
  NK_REQUIRE_PTR(dw);
  NK_REQUIRE_PTR(dv);
  NK_REQUIRE_PTR(dg);
  span s[5];
  TRY(nk__vector_span(ctx, op, &s[0], "v", v, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "g", g, rows, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "dw", dw, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[3], "dv", dv, n, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "dg", dg, rows, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 5, nk__no_alias));

  const wn_job j = {cols, eps, v, g, dw, dv, dg, NULL};
  nk_parallelize_1d(nk__context_pool(ctx), wn_bwd_task, (void *)&j, rows, rows_per_task(cols));
  return nk__ok(ctx);
}

/* ---- AdamP / SGDP --------------------------------------------------------------------------- */

/* The hot paths run on the optimizer kernels (src/kernels/optim/optim.h: the canonical
 * arithmetic, identical bits on every ISA) and split their work over the context's pool in
 * chunks that depend only on the sizes: rows of up to OPT_SPLIT elements are handled whole by
 * one task (OPT_SPLIT / cols rows per task), longer rows block by block (NK_OPT_BLOCK), the
 * block sums combined in block order. Row sums are the blocks' sums in order; the layer view's
 * sums are the sums of the task groups' sums (each the sum of its rows in order), in order. */
#define OPT_SPLIT 16384
#define OPT_ROUND 256 /* tasks per parallel round whose partial sums live on the stack */
#define OPT_TILE 16384 /* elements per task of the element-wise passes */

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

/* |<g_r, theta_r>| / (max(||g_r||, eps) max(||theta_r||, eps)); NaN stays NaN. */
static double cosine(double gt, double gg, double tt, double eps) {
  double a = sqrt(gg), b = sqrt(tt);
  if (a < eps) a = eps;
  if (b < eps) b = eps;
  return fabs(gt) / (a * b);
}

/* Sums (g^2, theta^2, g theta) of one row of L elements: its blocks in order. */
static void row_sums_gt(const nk_optim_kernels *k, const float *g, const float *t, size_t L,
                        double s[3]) {
  s[0] = s[1] = s[2] = 0.0;
  for (size_t b0 = 0; b0 < L; b0 += NK_OPT_BLOCK) {
    double o[3];
    k->sums_gt(min_sz(NK_OPT_BLOCK, L - b0), g + b0, t + b0, o);
    s[0] += o[0];
    s[1] += o[1];
    s[2] += o[2];
  }
}

/* Detection job: rows of `cols` elements. Short rows: task i handles rows [i * per, ...) of the
 * round and fills slot i (group sums, max cosine, NaN flag). Long rows: task i handles block
 * i of the current row (slot i = block sums). */
typedef struct det_job {
  const nk_optim_kernels *k;
  const float *g, *t;
  size_t rows, cols, per, first; /* first: the round's first task (short) or block (long) */
  double eps;
  double sum[OPT_ROUND][3];
  double cmax[OPT_ROUND];
  int nan[OPT_ROUND];
} det_job;

static void det_rows_task(void *arg, size_t start, size_t count) {
  det_job *j = arg;
  for (size_t i = start; i < start + count; i++) {
    const size_t r0 = (j->first + i) * j->per, r1 = min_sz(r0 + j->per, j->rows);
    double acc[3] = {0.0, 0.0, 0.0}, cmax = 0.0;
    int nan = 0;
    for (size_t r = r0; r < r1; r++) {
      double s[3];
      row_sums_gt(j->k, j->g + r * j->cols, j->t + r * j->cols, j->cols, s);
      const double c = cosine(s[2], s[0], s[1], j->eps);
      if (isnan(c)) nan = 1;
      else if (c > cmax) cmax = c;
      acc[0] += s[0];
      acc[1] += s[1];
      acc[2] += s[2];
    }
    memcpy(j->sum[i], acc, sizeof acc);
    j->cmax[i] = cmax;
    j->nan[i] = nan;
  }
}

static void det_blocks_task(void *arg, size_t start, size_t count) {
  det_job *j = arg;
  for (size_t i = start; i < start + count; i++) {
    const size_t b0 = (j->first + i) * NK_OPT_BLOCK;
    j->k->sums_gt(min_sz(NK_OPT_BLOCK, j->cols - b0), j->g + b0, j->t + b0, j->sum[i]);
  }
}

/* The code's _projection test: the channel view, then the layer view (rows == 0: none). */
static nk_optim_projection choose_view(nk_context *ctx, const nk_optim_kernels *k, size_t n,
                                       size_t rows, const float *theta, const float *g,
                                       double eps, double delta) {
  if (rows == 0) return NK_OPTIM_PROJECTION_NONE;
  nk_threadpool *pool = nk__context_pool(ctx);
  const size_t cols = n / rows;
  double lsum[3] = {0.0, 0.0, 0.0}, cmax = 0.0;
  int nan = 0;
  det_job j;
  j.k = k;
  j.rows = rows;
  j.cols = cols;
  j.eps = eps;
  if (cols <= OPT_SPLIT) {
    j.per = OPT_SPLIT / cols;
    j.g = g;
    j.t = theta;
    const size_t tasks = (rows + j.per - 1) / j.per;
    for (size_t t0 = 0; t0 < tasks; t0 += OPT_ROUND) {
      const size_t nt = min_sz(OPT_ROUND, tasks - t0);
      j.first = t0;
      nk_parallelize_1d(pool, det_rows_task, &j, nt, 1);
      for (size_t i = 0; i < nt; i++) {
        for (int c = 0; c < 3; c++) lsum[c] += j.sum[i][c];
        if (j.nan[i]) nan = 1;
        else if (j.cmax[i] > cmax) cmax = j.cmax[i];
      }
    }
  } else {
    const size_t nb = (cols + NK_OPT_BLOCK - 1) / NK_OPT_BLOCK;
    for (size_t r = 0; r < rows; r++) {
      double s[3] = {0.0, 0.0, 0.0};
      j.g = g + r * cols;
      j.t = theta + r * cols;
      for (size_t b0 = 0; b0 < nb; b0 += OPT_ROUND) {
        const size_t cnt = min_sz(OPT_ROUND, nb - b0);
        j.first = b0;
        nk_parallelize_1d(pool, det_blocks_task, &j, cnt, 1);
        for (size_t i = 0; i < cnt; i++)
          for (int c = 0; c < 3; c++) s[c] += j.sum[i][c];
      }
      const double c = cosine(s[2], s[0], s[1], eps);
      if (isnan(c)) nan = 1;
      else if (c > cmax) cmax = c;
      for (int c2 = 0; c2 < 3; c2++) lsum[c2] += s[c2];
    }
  }
  if (nan) return NK_OPTIM_PROJECTION_NONE; /* the layer sums hold the NaN too */
  if (cmax < delta / sqrt((double)cols)) return NK_OPTIM_PROJECTION_CHANNEL;
  if (cosine(lsum[2], lsum[0], lsum[1], eps) < delta / sqrt((double)n))
    return NK_OPTIM_PROJECTION_LAYER;
  return NK_OPTIM_PROJECTION_NONE;
}

/* Update job: the state and parameters of segments of `len` elements. */
typedef struct upd_job {
  const nk_optim_kernels *k;
  const nk_opt_params *p;
  float *t, *m, *v;
  const float *g;
  size_t n, len, per, first;
  double sum[OPT_ROUND][2];
  double nt, kk; /* long segments: the projection coefficients of the current segment */
} upd_job;

/* (||theta|| + eps, <theta, u> / that) from the sums of one segment. */
static void proj_coeffs(double tt, double tu, double eps, double *nt, double *k) {
  *nt = sqrt(tt) + eps;
  *k = tu / *nt;
}

static void upd_fused_task(void *arg, size_t start, size_t count) {
  upd_job *j = arg;
  j->k->fused(count, j->t + start, j->g + start, j->m + start, j->v ? j->v + start : NULL, j->p);
}

static void upd_segments_task(void *arg, size_t start, size_t count) {
  upd_job *j = arg;
  for (size_t s = start; s < start + count; s++) {
    const size_t o = s * j->len;
    double tt = 0.0, tu = 0.0;
    for (size_t b0 = 0; b0 < j->len; b0 += NK_OPT_BLOCK) {
      double r[2];
      const size_t c = min_sz(NK_OPT_BLOCK, j->len - b0), i = o + b0;
      j->k->state_sums(c, j->g + i, j->m + i, j->v ? j->v + i : NULL, j->t + i, j->p, r);
      tt += r[0];
      tu += r[1];
    }
    double nt, kk;
    proj_coeffs(tt, tu, j->p->eps, &nt, &kk);
    j->k->update(j->len, j->t + o, j->g + o, j->m + o, j->v ? j->v + o : NULL, j->p, 1, nt,
                 kk);
  }
}

static void upd_blocks_sums_task(void *arg, size_t start, size_t count) {
  upd_job *j = arg;
  for (size_t b = start; b < start + count; b++) {
    const size_t b0 = (j->first + b) * NK_OPT_BLOCK, i = j->n + b0; /* n: segment offset */
    j->k->state_sums(min_sz(NK_OPT_BLOCK, j->len - b0), j->g + i, j->m + i,
                     j->v ? j->v + i : NULL, j->t + i, j->p, j->sum[b]);
  }
}

static void upd_blocks_task(void *arg, size_t start, size_t count) {
  upd_job *j = arg;
  const size_t i = j->n + start;
  j->k->update(count, j->t + i, j->g + i, j->m + i, j->v ? j->v + i : NULL, j->p, 1, j->nt,
               j->kk);
}

/* State update, then theta = theta * decay - step_size * Pi(u), Pi the projection of `view`
 * (or the identity). m, v: AdamP's moments, or SGDP's buffer and NULL. */
static void run_update(nk_context *ctx, const nk_optim_kernels *k, const nk_opt_params *p,
                       size_t n, size_t rows, nk_optim_projection view, float *theta,
                       const float *g, float *m, float *v) {
  nk_threadpool *pool = nk__context_pool(ctx);
  upd_job j;
  j.k = k;
  j.p = p;
  j.t = theta;
  j.g = g;
  j.m = m;
  j.v = v;
  if (view == NK_OPTIM_PROJECTION_NONE) {
    nk_parallelize_1d(pool, upd_fused_task, &j, n, OPT_TILE);
    return;
  }
  j.len = view == NK_OPTIM_PROJECTION_CHANNEL ? n / rows : n;
  const size_t segs = n / j.len;
  if (j.len <= OPT_SPLIT) {
    nk_parallelize_1d(pool, upd_segments_task, &j, segs, OPT_SPLIT / j.len);
    return;
  }
  const size_t nb = (j.len + NK_OPT_BLOCK - 1) / NK_OPT_BLOCK;
  for (size_t s = 0; s < segs; s++) {
    j.n = s * j.len;
    double tt = 0.0, tu = 0.0;
    for (size_t b0 = 0; b0 < nb; b0 += OPT_ROUND) {
      const size_t cnt = min_sz(OPT_ROUND, nb - b0);
      j.first = b0;
      nk_parallelize_1d(pool, upd_blocks_sums_task, &j, cnt, 1);
      for (size_t i = 0; i < cnt; i++) {
        tt += j.sum[i][0];
        tu += j.sum[i][1];
      }
    }
    proj_coeffs(tt, tu, p->eps, &j.nt, &j.kk);
    nk_parallelize_1d(pool, upd_blocks_task, &j, j.len, OPT_TILE);
  }
}

static nk_status check_unit_open(nk_context *ctx, const char *op, const char *name, double v) {
  if (!(v >= 0.0 && v < 1.0))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s %g must be in [0, 1)", op, name, v);
  return NK_STATUS_OK;
}

static nk_status check_positive(nk_context *ctx, const char *op, const char *name, double v) {
  if (!(v > 0.0) || !isfinite(v))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s %g must be finite and > 0", op,
                    name, v);
  return NK_STATUS_OK;
}

static nk_status check_rows(nk_context *ctx, const char *op, size_t n, size_t rows) {
  if (rows != 0 && n % rows != 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: rows %zu does not divide n %zu", op,
                    rows, n);
  if (n > (size_t)PTRDIFF_MAX / sizeof(float))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: n %zu is too large", op, n);
  return NK_STATUS_OK;
}

nk_adamp_desc nk_adamp_desc_default(void) {
  nk_adamp_desc d;
  d.lr = 1e-3;
  d.beta1 = 0.9;
  d.beta2 = 0.999;
  d.eps = 1e-8;
  d.weight_decay = 0.0;
  d.delta = 0.1;
  d.wd_ratio = 0.1;
  d.nesterov = 0;
  return d;
}

nk_status nk_adamp_step(nk_context *ctx, const nk_adamp_desc *desc, size_t n, size_t rows,
                        float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                        int64_t *step, nk_optim_projection *projection) {
  static const char op[] = "adamp_step";
  NK_REQUIRE_PTR(desc);
  NK_REQUIRE_PTR(step);
  TRY(check_nonneg(ctx, op, "lr", desc->lr));
  TRY(check_unit_open(ctx, op, "beta1", desc->beta1));
  TRY(check_unit_open(ctx, op, "beta2", desc->beta2));
  TRY(check_positive(ctx, op, "eps", desc->eps));
  TRY(check_nonneg(ctx, op, "weight_decay", desc->weight_decay));
  TRY(check_nonneg(ctx, op, "delta", desc->delta));
  TRY(check_nonneg(ctx, op, "wd_ratio", desc->wd_ratio));
  TRY(check_rows(ctx, op, n, rows));
  if (*step < 0 || *step == INT64_MAX)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: step %lld out of range", op,
                    (long long)*step);
  if (n > 0) {
    NK_REQUIRE_PTR(param);
    NK_REQUIRE_PTR(grad);
    NK_REQUIRE_PTR(exp_avg);
    NK_REQUIRE_PTR(exp_avg_sq);
  }
  span s[6];
  TRY(nk__vector_span(ctx, op, &s[0], "param", n ? param : NULL, n, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[1], "grad", n ? grad : NULL, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "exp_avg", n ? exp_avg : NULL, n, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "exp_avg_sq", n ? exp_avg_sq : NULL, n, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "step", step, 1, sizeof(int64_t), 1));
  TRY(nk__vector_span(ctx, op, &s[5], "projection", projection, 1, sizeof(nk_optim_projection),
                      1));
  TRY(nk__check_overlaps(ctx, op, s, 6, nk__no_alias));

  const int64_t t = *step + 1;
  *step = t;
  if (projection) *projection = NK_OPTIM_PROJECTION_NONE;
  if (n == 0) return nk__ok(ctx);
  const double b1 = desc->beta1, b2 = desc->beta2;
  const double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
  const nk_optim_kernels *k = nk__optim_kernels(ctx);
  const nk_optim_projection view =
      choose_view(ctx, k, n, rows, param, grad, desc->eps, desc->delta);
  const double f = view != NK_OPTIM_PROJECTION_NONE ? desc->wd_ratio : 1.0;
  nk_opt_params p;
  memset(&p, 0, sizeof p);
  p.adam = 1;
  p.nesterov = desc->nesterov != 0;
  p.b1 = b1;
  p.omb1 = 1.0 - b1;
  p.b2 = b2;
  p.omb2 = 1.0 - b2;
  p.inv_sqrt_bc2 = 1.0 / sqrt(bc2);
  p.eps = desc->eps;
  p.decay = desc->weight_decay > 0.0 ? 1.0 - desc->lr * desc->weight_decay * f : 1.0;
  p.step_size = desc->lr / bc1;
  run_update(ctx, k, &p, n, rows, view, param, grad, exp_avg, exp_avg_sq);
  if (projection) *projection = view;
  return nk__ok(ctx);
}

nk_sgdp_desc nk_sgdp_desc_default(double lr) {
  nk_sgdp_desc d;
  d.lr = lr;
  d.momentum = 0.0;
  d.dampening = 0.0;
  d.eps = 1e-8;
  d.weight_decay = 0.0;
  d.delta = 0.1;
  d.wd_ratio = 0.1;
  d.nesterov = 0;
  return d;
}

nk_status nk_sgdp_step(nk_context *ctx, const nk_sgdp_desc *desc, size_t n, size_t rows,
                       float *param, const float *grad, float *momentum_buf,
                       nk_optim_projection *projection) {
  static const char op[] = "sgdp_step";
  NK_REQUIRE_PTR(desc);
  TRY(check_nonneg(ctx, op, "lr", desc->lr));
  TRY(check_unit_open(ctx, op, "momentum", desc->momentum));
  if (!(desc->dampening >= 0.0 && desc->dampening <= 1.0))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: dampening %g must be in [0, 1]", op,
                    desc->dampening);
  TRY(check_positive(ctx, op, "eps", desc->eps));
  TRY(check_nonneg(ctx, op, "weight_decay", desc->weight_decay));
  TRY(check_nonneg(ctx, op, "delta", desc->delta));
  TRY(check_nonneg(ctx, op, "wd_ratio", desc->wd_ratio));
  TRY(check_rows(ctx, op, n, rows));
  if (n == 0) {
    if (projection) *projection = NK_OPTIM_PROJECTION_NONE;
    return nk__ok(ctx);
  }
  NK_REQUIRE_PTR(param);
  NK_REQUIRE_PTR(grad);
  NK_REQUIRE_PTR(momentum_buf);
  span s[4];
  TRY(nk__vector_span(ctx, op, &s[0], "param", param, n, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[1], "grad", grad, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "momentum_buf", momentum_buf, n, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "projection", projection, 1, sizeof(nk_optim_projection),
                      1));
  TRY(nk__check_overlaps(ctx, op, s, 4, nk__no_alias));

  const double mu = desc->momentum, damp = desc->dampening;
  const nk_optim_kernels *k = nk__optim_kernels(ctx);
  const nk_optim_projection view =
      choose_view(ctx, k, n, rows, param, grad, desc->eps, desc->delta);
  const double f = view != NK_OPTIM_PROJECTION_NONE ? desc->wd_ratio : 1.0;
  nk_opt_params p;
  memset(&p, 0, sizeof p);
  p.adam = 0;
  p.nesterov = desc->nesterov != 0;
  p.mu = mu;
  p.omd = 1.0 - damp;
  p.eps = desc->eps;
  p.decay =
      desc->weight_decay > 0.0 ? 1.0 - desc->lr * desc->weight_decay * f / (1.0 - mu) : 1.0;
  p.step_size = desc->lr;
  run_update(ctx, k, &p, n, rows, view, param, grad, momentum_buf, NULL);
  if (projection) *projection = view;
  return nk__ok(ctx);
}

/* ---- Normalize-and-Project ------------------------------------------------------------------ */

typedef struct nap_job {
  size_t len; /* elements per group */
  const float *win; /* nap_norms */
  float *w;         /* nap_project */
  const double *rho; /* nap_project: the target norms */
  double *out;      /* nap_norms: rho; nap_project: the norms before (optional) */
  double f;         /* nap_project per layer: the one scale factor */
} nap_job;

/* rho / |w_k|; NaN when the norm is NaN or inf (the group becomes NaN). */
static double nap_factor(double rho, double nk) { return isfinite(nk) ? rho / nk : NAN; }

static void nap_norms_task(void *arg, size_t start, size_t count) {
  const nap_job *j = arg;
  for (size_t k = start; k < start + count; k++)
    j->out[k] = sqrt(sumsq(j->win + k * j->len, j->len));
}

static void nap_project_task(void *arg, size_t start, size_t count) {
  const nap_job *j = arg;
  for (size_t k = start; k < start + count; k++) {
    float *wk = j->w + k * j->len;
    const double nk = sqrt(sumsq(wk, j->len));
    if (j->out != NULL) j->out[k] = nk;
    if (nk == 0.0) continue; /* no direction: unchanged */
    const double f = nap_factor(j->rho[k], nk);
    for (size_t i = 0; i < j->len; i++) wk[i] = (float)((double)wk[i] * f);
  }
}

static void nap_scale_task(void *arg, size_t start, size_t count) {
  const nap_job *j = arg;
  for (size_t i = start; i < start + count; i++) j->w[i] = (float)((double)j->w[i] * j->f);
}

static nk_status nap_groups(nk_context *ctx, const char *op, nk_nap_mode mode, size_t rows,
                            size_t cols, size_t *n, size_t *groups) {
  if (mode != NK_NAP_PER_LAYER && mode != NK_NAP_PER_CHANNEL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown mode %d", op, (int)mode);
  TRY(check_shape(ctx, op, rows, cols, n));
  *groups = mode == NK_NAP_PER_LAYER ? 1 : rows;
  return NK_STATUS_OK;
}

nk_status nk_nap_norms(nk_context *ctx, nk_nap_mode mode, size_t rows, size_t cols,
                       const float *w, double *rho) {
  static const char op[] = "nap_norms";
  size_t n = 0, groups = 1;
  TRY(nap_groups(ctx, op, mode, rows, cols, &n, &groups));
  if (n == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(w);
  NK_REQUIRE_PTR(rho);
  span s[2];
  TRY(nk__vector_span(ctx, op, &s[0], "w", w, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "rho", rho, groups, sizeof(double), 1));
  TRY(nk__check_overlaps(ctx, op, s, 2, nk__no_alias));
  nap_job j = {n / groups, w, NULL, NULL, rho, 0.0};
  nk_parallelize_1d(nk__context_pool(ctx), nap_norms_task, &j, groups, rows_per_task(j.len));
  return nk__ok(ctx);
}

nk_status nk_nap_project(nk_context *ctx, nk_nap_mode mode, size_t rows, size_t cols, float *w,
                         const double *rho, double *norm) {
  static const char op[] = "nap_project";
  size_t n = 0, groups = 1;
  TRY(nap_groups(ctx, op, mode, rows, cols, &n, &groups));
  if (n == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(w);
  NK_REQUIRE_PTR(rho);
  span s[3];
  TRY(nk__vector_span(ctx, op, &s[0], "w", w, n, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[1], "rho", rho, groups, sizeof(double), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "norm", norm, groups, sizeof(double), 1));
  TRY(nk__check_overlaps(ctx, op, s, 3, nk__no_alias));
  for (size_t k = 0; k < groups; k++)
    if (!(rho[k] >= 0.0) || !isfinite(rho[k]))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: rho[%zu] %g must be finite and >= 0",
                      op, k, rho[k]);
  nap_job j = {n / groups, NULL, w, rho, norm, 0.0};
  nk_threadpool *pool = nk__context_pool(ctx);
  if (groups > 1) { /* per channel: each task a whole group, norm then scale */
    nk_parallelize_1d(pool, nap_project_task, &j, groups, rows_per_task(j.len));
    return nk__ok(ctx);
  }
  /* per layer: the one norm in index order (its definition), then the scaling in tiles */
  const double nk = sqrt(sumsq(w, n));
  if (norm != NULL) norm[0] = nk;
  if (nk == 0.0) return nk__ok(ctx); /* no direction: unchanged */
  j.f = nap_factor(rho[0], nk);
  nk_parallelize_1d(pool, nap_scale_task, &j, n, 16384);
  return nk__ok(ctx);
}

nk_status nk_nap_schedule_lr(nk_context *ctx, const nk_nap_schedule *schedule, int64_t t,
                             double *lr) {
  static const char op[] = "nap_schedule_lr";
  NK_REQUIRE_PTR(schedule);
  NK_REQUIRE_PTR(lr);
  const nk_nap_schedule *s = schedule;
  if (s->kind != NK_NAP_SCHEDULE_CONSTANT && s->kind != NK_NAP_SCHEDULE_LINEAR &&
      s->kind != NK_NAP_SCHEDULE_COSINE)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown kind %d", op, (int)s->kind);
  const int decays = s->kind != NK_NAP_SCHEDULE_CONSTANT;
  TRY(check_nonneg(ctx, op, "lr_init", s->lr_init));
  if (decays) TRY(check_nonneg(ctx, op, "lr_final", s->lr_final));
  if (t < 0 || s->warmup_steps < 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: t %lld and warmup_steps %lld must be >= 0", op, (long long)t,
                    (long long)s->warmup_steps);
  if (decays && s->total_steps <= s->warmup_steps)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: total_steps %lld <= warmup_steps %lld",
                    op, (long long)s->total_steps, (long long)s->warmup_steps);
  if (t < s->warmup_steps) {
    *lr = s->lr_init * (double)t / (double)s->warmup_steps;
    return nk__ok(ctx);
  }
  if (!decays) {
    *lr = s->lr_init;
    return nk__ok(ctx);
  }
  double p = (double)(t - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps);
  if (p > 1.0) p = 1.0;
  if (s->kind == NK_NAP_SCHEDULE_LINEAR)
    *lr = (1.0 - p) * s->lr_init + p * s->lr_final; /* exact at both ends */
  else
    *lr = s->lr_final + (s->lr_init - s->lr_final) * 0.5 * (1.0 + cos(3.14159265358979323846 * p));
  return nk__ok(ctx);
}

nk_status nk_nap_layer_lr(nk_context *ctx, double lr, double rho, double free_norm, double power,
                          double *lr_layer) {
  static const char op[] = "nap_layer_lr";
  TRY(check_nonneg(ctx, op, "lr", lr));
  TRY(check_nonneg(ctx, op, "power", power));
  TRY(check_positive(ctx, op, "rho", rho));
  TRY(check_positive(ctx, op, "free_norm", free_norm));
  NK_REQUIRE_PTR(lr_layer);
  *lr_layer = lr * pow(rho / free_norm, power);
  return nk__ok(ctx);
}

/* ---- Conda ---------------------------------------------------------------------------------- */

nk_conda_desc nk_conda_desc_default(void) {
  nk_conda_desc d;
  d.lr = 1e-3;
  d.beta1 = 0.9;
  d.beta2 = 0.999;
  d.eps = 1e-8;
  d.weight_decay = 0.0;
  d.scale = 1.0;
  d.correct_bias = 1;
  d.update_proj_gap = 2000;
  return d;
}

nk_conda_side nk_conda_std_side(size_t rows, size_t cols) {
  return rows >= cols ? NK_CONDA_SIDE_RIGHT : NK_CONDA_SIDE_LEFT;
}

nk_status nk_conda_refresh_due(nk_context *ctx, int64_t t, int64_t gap, int64_t last_refresh,
                               int *due) {
  static const char op[] = "conda_refresh_due";
  NK_REQUIRE_PTR(due);
  if (t < 0 || gap < 1)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: t %lld must be >= 0, gap %lld >= 1", op,
                    (long long)t, (long long)gap);
  *due = last_refresh < 0 || (t % gap == 0 && last_refresh != t);
  return nk__ok(ctx);
}

static nk_status check_conda_desc(nk_context *ctx, const char *op, const nk_conda_desc *d) {
  NK_REQUIRE_PTR(d);
  TRY(check_nonneg(ctx, op, "lr", d->lr));
  TRY(check_unit_open(ctx, op, "beta1", d->beta1));
  TRY(check_unit_open(ctx, op, "beta2", d->beta2));
  TRY(check_positive(ctx, op, "eps", d->eps));
  TRY(check_nonneg(ctx, op, "weight_decay", d->weight_decay));
  if (!isfinite(d->scale))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: scale %g must be finite", op, d->scale);
  if (d->update_proj_gap < 1)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: update_proj_gap %lld must be >= 1", op,
                    (long long)d->update_proj_gap);
  return NK_STATUS_OK;
}

nk_status nk_conda_update_moment(nk_context *ctx, const nk_conda_desc *desc, size_t rows,
                                 size_t cols, const float *grad, float *exp_avg) {
  static const char op[] = "conda_update_moment";
  size_t n;
  TRY(check_conda_desc(ctx, op, desc));
  TRY(check_shape(ctx, op, rows, cols, &n));
  if (n == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(grad);
  NK_REQUIRE_PTR(exp_avg);
  span s[2];
  TRY(nk__vector_span(ctx, op, &s[0], "grad", grad, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "exp_avg", exp_avg, n, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 2, nk__no_alias));
  const double b1 = desc->beta1;
  for (size_t i = 0; i < n; i++)
    exp_avg[i] = (float)(b1 * (double)exp_avg[i] + (1.0 - b1) * (double)grad[i]);
  return nk__ok(ctx);
}

nk_status nk_conda_workspace_size(size_t rows, size_t cols, size_t *bytes) {
  if (bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;
  const size_t k = rows > cols ? rows : cols;
  if (k > (size_t)PTRDIFF_MAX / (2 * sizeof(double))) return NK_STATUS_INVALID_ARGUMENT;
  nk__ws_bytes(2 * k * sizeof(double), bytes); /* plus the alignment slack: any address works */
  return NK_STATUS_OK;
}

/* One projected vector of length k (a row for RIGHT, a column for LEFT): ghat and mhat in the
 * workspace; v updated; N = mhat / (sqrt(v) + eps) left in gh. `vs` is v's element stride. */
static void conda_normalize(size_t k, double *gh, const double *mh, float *v, size_t vs,
                            double beta2, double eps) {
  for (size_t q = 0; q < k; q++) {
    const double vq = (double)(v[q * vs] = (float)(beta2 * (double)v[q * vs] +
                                                   (1.0 - beta2) * gh[q] * gh[q]));
    gh[q] = mh[q] / (sqrt(vq) + eps);
  }
}

/* W = W - ss D, then W = W - lr wd W (two updates, one rounding). */
static float conda_apply(float w, double delta, double ss, double lr_wd) {
  const double w1 = (double)w - ss * delta;
  return (float)(w1 - lr_wd * w1);
}

nk_status nk_conda_step(nk_context *ctx, const nk_conda_desc *desc, nk_conda_side side,
                        size_t rows, size_t cols, float *param, const float *grad,
                        const float *exp_avg, float *exp_avg_sq, const float *basis,
                        int64_t *step, void *workspace, size_t workspace_size) {
  static const char op[] = "conda_step";
  size_t n;
  TRY(check_conda_desc(ctx, op, desc));
  if (side != NK_CONDA_SIDE_NONE && side != NK_CONDA_SIDE_RIGHT && side != NK_CONDA_SIDE_LEFT)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown side %d", op, (int)side);
  TRY(check_shape(ctx, op, rows, cols, &n));
  NK_REQUIRE_PTR(step);
  if (*step < 0 || *step == INT64_MAX)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: step %lld out of range", op,
                    (long long)*step);
  const size_t kb = side == NK_CONDA_SIDE_RIGHT ? cols : rows; /* basis is kb x kb */
  size_t need = 0;
  span s[7];
  if (n > 0) {
    NK_REQUIRE_PTR(param);
    NK_REQUIRE_PTR(grad);
    NK_REQUIRE_PTR(exp_avg);
    NK_REQUIRE_PTR(exp_avg_sq);
    if (side != NK_CONDA_SIDE_NONE) {
      NK_REQUIRE_PTR(basis);
      TRY(nk_conda_workspace_size(rows, cols, &need));
      NK_REQUIRE_PTR(workspace);
      TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need));
    }
  }
  const int proj = n > 0 && side != NK_CONDA_SIDE_NONE;
  TRY(nk__vector_span(ctx, op, &s[0], "param", n ? param : NULL, n, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[1], "grad", n ? grad : NULL, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "exp_avg", n ? exp_avg : NULL, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[3], "exp_avg_sq", n ? exp_avg_sq : NULL, n, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "basis", proj ? basis : NULL, kb * kb, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[5], "step", step, 1, sizeof(int64_t), 1));
  TRY(nk__vector_span(ctx, op, &s[6], "workspace", proj ? workspace : NULL, need, 1, 1));
  TRY(nk__check_overlaps(ctx, op, s, 7, nk__no_alias));

  const int64_t t = *step + 1;
  *step = t;
  if (n == 0) return nk__ok(ctx);
  const double b1 = desc->beta1, b2 = desc->beta2, eps = desc->eps;
  const double ss = desc->correct_bias
                        ? desc->lr * sqrt(1.0 - pow(b2, (double)t)) / (1.0 - pow(b1, (double)t))
                        : desc->lr;
  const double lr_wd = desc->lr * desc->weight_decay, sc = desc->scale;

  if (side == NK_CONDA_SIDE_NONE) {
    for (size_t i = 0; i < n; i++) {
      const double g = (double)grad[i];
      const double v = (double)(exp_avg_sq[i] =
                                    (float)(b2 * (double)exp_avg_sq[i] + (1.0 - b2) * g * g));
      const double nrm = (double)exp_avg[i] / (sqrt(v) + eps);
      param[i] = conda_apply(param[i], sc * nrm, ss, lr_wd);
    }
    return nk__ok(ctx);
  }
  double *gh = nk__ws_align(workspace), *mh = gh + kb;
  const float *P = basis;
  if (side == NK_CONDA_SIDE_RIGHT) { /* row i: ghat_i[q] = sum_j g[i][j] P[q][j] */
    for (size_t i = 0; i < rows; i++) {
      const float *gi = grad + i * cols, *mi = exp_avg + i * cols;
      for (size_t q = 0; q < cols; q++) {
        double a = 0.0, b = 0.0;
        for (size_t j = 0; j < cols; j++) {
          a += (double)gi[j] * (double)P[q * cols + j];
          b += (double)mi[j] * (double)P[q * cols + j];
        }
        gh[q] = a, mh[q] = b;
      }
      conda_normalize(cols, gh, mh, exp_avg_sq + i * cols, 1, b2, eps);
      for (size_t j = 0; j < cols; j++) { /* back: D[i][j] = scale sum_q N[q] P[q][j] */
        double d = 0.0;
        for (size_t q = 0; q < cols; q++) d += gh[q] * (double)P[q * cols + j];
        param[i * cols + j] = conda_apply(param[i * cols + j], sc * d, ss, lr_wd);
      }
    }
  } else { /* column j: ghat[q][j] = sum_i U[i][q] g[i][j] */
    for (size_t j = 0; j < cols; j++) {
      for (size_t q = 0; q < rows; q++) {
        double a = 0.0, b = 0.0;
        for (size_t i = 0; i < rows; i++) {
          a += (double)P[i * rows + q] * (double)grad[i * cols + j];
          b += (double)P[i * rows + q] * (double)exp_avg[i * cols + j];
        }
        gh[q] = a, mh[q] = b;
      }
      conda_normalize(rows, gh, mh, exp_avg_sq + j, cols, b2, eps);
      for (size_t i = 0; i < rows; i++) { /* back: D[i][j] = scale sum_q U[i][q] N[q] */
        double d = 0.0;
        for (size_t q = 0; q < rows; q++) d += (double)P[i * rows + q] * gh[q];
        param[i * cols + j] = conda_apply(param[i * cols + j], sc * d, ss, lr_wd);
      }
    }
  }
  return nk__ok(ctx);
}
