/*
 * rowvar.c — the CRMSNorm and L1 LayerNorm operators (the research row norms of normkit.h):
 * validate, choose the kernel set of the context's ISA, split rows over the thread pool. No
 * intrinsics here.
 *
 * Determinism: forward rows are independent, so any split gives the same bits. The L1
 * backward's parameter gradients are summed per fixed chunk of rows (chunk size a function of
 * rows and cols only) into double partials in the workspace, then added in chunk order — the
 * scheme of src/ops/rownorm.c.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "convert.h"
#include "dispatch.h"
#include "internal.h"
#include "validate.h"

#define NK_BWD_MAX_CHUNKS 64
#define NK_BWD_MIN_CHUNK_ROWS 8
#define NK_BWD_PARTIAL_ELEMS ((size_t)1 << 22)
#define NK_BWD_COMBINE_TILE 1024

static int fwd_alias_ok(const span *out, const span *other) {
  return nk__span_is(out, "y") && nk__span_is(other, "x");
}

static int bwd_alias_ok(const span *out, const span *other) {
  return nk__span_is(out, "dx") &&
         (nk__span_is(other, "dy") || nk__span_is(other, "x") || nk__span_is(other, "dh"));
}

static nk_status check_desc(nk_context *ctx, const char *op, int is_l1, const nk_norm_desc *d) {
  if (d == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  TRY(nk__check_dtypes(ctx, op, d->dtype, d->param_dtype));
  if (!(d->eps > 0.0f) || !isfinite(d->eps))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: eps %g must be finite and > 0", op,
                    (double)d->eps);
  if (!(d->lns_scale >= 0.0f) || !isfinite(d->lns_scale))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: lns_scale %g must be finite and >= 0",
                    op, (double)d->lns_scale);
  const uint32_t known = is_l1 ? (NK_NORM_GAMMA_OFFSET | NK_NORM_ACCUMULATE) : 0u;
  if (d->flags & NK_NORM_BWD_FROM_Y)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: NK_NORM_BWD_FROM_Y is not supported", op);
  if (d->flags & ~known)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: flags 0x%x do not apply", op,
                    (unsigned)(d->flags & ~known));
  return NK_STATUS_OK;
}

static nk_rownorm_params params_of(const nk_norm_desc *d, const void *gamma, const void *beta) {
  nk_rownorm_params p;
  memset(&p, 0, sizeof p);
  p.gamma = gamma;
  p.beta = beta;
  p.eps = d->eps;
  p.param_dtype = d->param_dtype;
  if (gamma) p.variant |= NK_ROWNORM_HAS_GAMMA;
  if (beta) p.variant |= NK_ROWNORM_HAS_BETA;
  if (d->flags & NK_NORM_GAMMA_OFFSET) p.variant |= NK_ROWNORM_OFFSET;
  if (d->lns_scale != 0.0f && d->lns_scale != 1.0f) {
    p.variant |= NK_ROWNORM_SCALE;
    p.scale = d->lns_scale;
    p.scale_inv = 1.0f / d->lns_scale;
  }
  size_t bytes = 0;
  if (nk__mul_size(d->rows, d->cols, &bytes) && nk__mul_size(bytes, nk_dtype_size(d->dtype), &bytes) &&
      bytes >= NK_NONTEMPORAL_BYTES)
    p.variant |= NK_ROWNORM_NONTEMPORAL;
  return p;
}

/* ---- forward ------------------------------------------------------------------------------ */

typedef struct fwd_job {
  nk_rowvar_fwd_fn fn;
  const nk_norm_desc *d;
  const void *x;
  void *y;
  float *s1, *s2;
  nk_rownorm_params params;
} fwd_job;

static void fwd_task(void *arg, size_t start, size_t count) {
  const fwd_job *j = arg;
  const nk_norm_desc *d = j->d;
  j->fn(count, d->cols, offset_rows(j->x, start, d->x_stride, d->dtype), d->x_stride,
        (void *)offset_rows(j->y, start, d->y_stride, d->dtype), d->y_stride,
        j->s1 ? j->s1 + start : NULL, j->s2 ? j->s2 + start : NULL, &j->params);
}

static nk_status var_fwd(nk_context *ctx, int is_l1, const nk_norm_desc *d, size_t row_begin,
                         size_t row_end, int use_pool, const void *x, const void *gamma,
                         const void *beta, void *y, float *s1, float *s2) {
  const char *op = is_l1 ? "l1norm_fwd" : "crmsnorm_fwd";
  TRY(check_desc(ctx, op, is_l1, d));
  TRY(nk__check_row_range(ctx, op, row_begin, row_end, d->rows));
  if (d->rows == 0 || d->cols == 0 || row_begin == row_end) return nk__ok(ctx);
  if (x == NULL || y == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, x ? "y" : "x");
  if ((d->flags & NK_NORM_GAMMA_OFFSET) && gamma == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: NK_NORM_GAMMA_OFFSET needs gamma", op);
  const size_t rows = d->rows, cols = d->cols;
  span s[6];
  TRY(nk__tensor_span(ctx, op, &s[0], "x", x, d->x_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "y", y, d->y_stride, rows, cols, d->dtype, 1));
  TRY(nk__vector_span(ctx, op, &s[2], "gamma", gamma, cols, nk_dtype_size(d->param_dtype), 0));
  TRY(nk__vector_span(ctx, op, &s[3], "beta", beta, cols, nk_dtype_size(d->param_dtype), 0));
  TRY(nk__vector_span(ctx, op, &s[4], "mean", s1, rows, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[5], is_l1 ? "rscale" : "rstd", s2, rows, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 6, fwd_alias_ok));

  const nk_rowvar_kernels *k = nk__rowvar_kernels(nk__context_isa(ctx));
  fwd_job job = {is_l1 ? k->l1_fwd[d->dtype] : k->crms_fwd[d->dtype], d, x, y, s1, s2,
                 params_of(d, gamma, beta)};
  nk_threadpool *pool = use_pool ? nk__context_pool(ctx) : NULL;
  const size_t n = row_end - row_begin, nthreads = nk_threadpool_size(pool);
  job.x = offset_rows(x, row_begin, d->x_stride, d->dtype);
  job.y = (void *)offset_rows(y, row_begin, d->y_stride, d->dtype);
  if (job.s1) job.s1 += row_begin;
  if (job.s2) job.s2 += row_begin;
  if (nthreads == 1) fwd_task(&job, 0, n);
  else nk_parallelize_1d(pool, fwd_task, &job, n, ceil_div(n, 4 * nthreads));
  return nk__ok(ctx);
}

nk_status nk_crmsnorm_fwd(nk_context *ctx, const nk_norm_desc *desc, const void *x, void *y,
                          float *rstd) {
  return var_fwd(ctx, 0, desc, 0, desc ? desc->rows : 0, 1, x, NULL, NULL, y, NULL, rstd);
}

nk_status nk_crmsnorm_fwd_rows(nk_context *ctx, const nk_norm_desc *desc, size_t row_begin,
                               size_t row_end, const void *x, void *y, float *rstd) {
  return var_fwd(ctx, 0, desc, row_begin, row_end, 0, x, NULL, NULL, y, NULL, rstd);
}

nk_status nk_l1norm_fwd(nk_context *ctx, const nk_norm_desc *desc, const void *x,
                        const void *gamma, const void *beta, void *y, float *mean,
                        float *rscale) {
  return var_fwd(ctx, 1, desc, 0, desc ? desc->rows : 0, 1, x, gamma, beta, y, mean, rscale);
}

nk_status nk_l1norm_fwd_rows(nk_context *ctx, const nk_norm_desc *desc, size_t row_begin,
                             size_t row_end, const void *x, const void *gamma, const void *beta,
                             void *y, float *mean, float *rscale) {
  return var_fwd(ctx, 1, desc, row_begin, row_end, 0, x, gamma, beta, y, mean, rscale);
}

/* ---- backward ----------------------------------------------------------------------------- */

static size_t bwd_chunk_rows(size_t rows, size_t cols) {
  size_t nchunks = ceil_div(rows, NK_BWD_MIN_CHUNK_ROWS);
  if (nchunks > NK_BWD_MAX_CHUNKS) nchunks = NK_BWD_MAX_CHUNKS;
  const size_t by_memory = cols ? NK_BWD_PARTIAL_ELEMS / cols : 1;
  if (nchunks > by_memory) nchunks = by_memory;
  if (nchunks == 0) nchunks = 1;
  return ceil_div(rows, nchunks);
}

/* [nchunks][2][cols] doubles plus the alignment slack (a misaligned workspace was a misaligned
 * double store/load: rowvar fuzz harness). Returns 0 and sets *bytes, nonzero on overflow. */
static int bwd_workspace_layout(const nk_norm_desc *d, size_t *nchunks, size_t *bytes) {
  *nchunks = 0;
  *bytes = 0;
  if (d->rows == 0 || d->cols == 0) return 0;
  *nchunks = ceil_div(d->rows, bwd_chunk_rows(d->rows, d->cols));
  size_t b;
  if (!nk__mul_size(*nchunks, d->cols, &b) || !nk__mul_size(b, 2 * sizeof(double), &b) ||
      !nk__ws_bytes(b, bytes))
    return 1;
  return 0;
}

nk_status nk_l1norm_bwd_workspace_size(const nk_norm_desc *desc, size_t *bytes) {
  TRY(check_desc(NULL, "l1norm_bwd_workspace_size", 1, desc));
  if (bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;
  size_t nchunks;
  if (bwd_workspace_layout(desc, &nchunks, bytes)) return NK_STATUS_INVALID_ARGUMENT;
  return NK_STATUS_OK;
}

typedef struct bwd_job {
  nk_rowvar_bwd_fn fn;
  const nk_norm_desc *d;
  size_t rows, chunk_rows, nchunks;
  const void *x, *dy, *dh;
  const float *s1, *s2;
  void *dx;
  double *partials;
  void *dgamma, *dbeta;
  nk_rownorm_params params;
} bwd_job;

static void bwd_rows_run(const bwd_job *j, size_t start, size_t count, double *dg, double *db) {
  const nk_norm_desc *d = j->d;
  j->fn(count, d->cols, offset_rows(j->x, start, d->x_stride, d->dtype), d->x_stride,
        offset_rows(j->dy, start, d->dy_stride, d->dtype), d->dy_stride,
        offset_rows(j->dh, start, d->dh_stride, d->dtype), d->dh_stride,
        j->s1 ? j->s1 + start : NULL, j->s2 + start,
        (void *)offset_rows(j->dx, start, d->dx_stride, d->dtype), d->dx_stride, dg, db,
        &j->params);
}

static void bwd_chunk_task(void *arg, size_t chunk, size_t count) {
  const bwd_job *j = arg;
  const size_t cols = j->d->cols;
  for (size_t c = chunk; c < chunk + count; c++) {
    const size_t start = c * j->chunk_rows;
    const size_t n = start + j->chunk_rows <= j->rows ? j->chunk_rows : j->rows - start;
    double *dg = NULL, *db = NULL;
    if (j->partials) {
      dg = j->partials + c * 2 * cols;
      db = dg + cols;
      memset(dg, 0, 2 * cols * sizeof(double));
    }
    bwd_rows_run(j, start, n, j->dgamma ? dg : NULL, j->dbeta ? db : NULL);
  }
}

static void put_param(void *p, size_t i, double v, nk_dtype dt, int accumulate) {
  if (accumulate) v += (double)nk__load_f32(p, i, dt);
  nk__store_f32(p, i, (float)v, dt);
}

static void bwd_combine_task(void *arg, size_t start, size_t count) {
  const bwd_job *j = arg;
  const size_t cols = j->d->cols;
  const int acc = (j->d->flags & NK_NORM_ACCUMULATE) != 0;
  for (size_t i = start; i < start + count; i++) {
    double g = 0.0, b = 0.0;
    for (size_t c = 0; c < j->nchunks; c++) {
      g += j->partials[c * 2 * cols + i];
      b += j->partials[c * 2 * cols + cols + i];
    }
    if (j->dgamma) put_param(j->dgamma, i, g, j->d->param_dtype, acc);
    if (j->dbeta) put_param(j->dbeta, i, b, j->d->param_dtype, acc);
  }
}

static nk_status var_bwd(nk_context *ctx, int is_l1, const nk_norm_desc *d, size_t row_begin,
                         size_t row_end, int full, const void *x, const void *gamma,
                         const float *mean, const float *rs, const void *dy, const void *dh,
                         void *dx, void *dgamma, void *dbeta, double *dgamma_acc,
                         double *dbeta_acc, void *workspace, size_t workspace_size) {
  const char *op = is_l1 ? "l1norm_bwd" : "crmsnorm_bwd";
  TRY(check_desc(ctx, op, is_l1, d));
  TRY(nk__check_row_range(ctx, op, row_begin, row_end, d->rows));
  if (d->rows == 0 || d->cols == 0 || row_begin == row_end) return nk__ok(ctx);
  if (x == NULL || dy == NULL || dx == NULL || rs == NULL || (is_l1 && mean == NULL))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op,
                    x == NULL ? "x" : dy == NULL ? "dy" : dx == NULL ? "dx" : rs == NULL ? (is_l1 ? "rscale" : "rstd") : "mean");
  if ((d->flags & NK_NORM_GAMMA_OFFSET) && gamma == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: NK_NORM_GAMMA_OFFSET needs gamma", op);
  const size_t rows = d->rows, cols = d->cols, psize = nk_dtype_size(d->param_dtype);
  size_t nchunks = 0, need = 0;
  if (bwd_workspace_layout(d, &nchunks, &need))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  if (!full || (dgamma == NULL && dbeta == NULL)) need = 0;
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need));
  span s[12];
  TRY(nk__tensor_span(ctx, op, &s[0], "x", x, d->x_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "dy", dy, d->dy_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[2], "dh", dh, d->dh_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[3], "dx", dx, d->dx_stride, rows, cols, d->dtype, 1));
  TRY(nk__vector_span(ctx, op, &s[4], "gamma", gamma, cols, psize, 0));
  TRY(nk__vector_span(ctx, op, &s[5], "mean", mean, rows, 4, 0));
  TRY(nk__vector_span(ctx, op, &s[6], "rscale", rs, rows, 4, 0));
  TRY(nk__vector_span(ctx, op, &s[7], "dgamma", full ? dgamma : NULL, cols, psize, 1));
  TRY(nk__vector_span(ctx, op, &s[8], "dbeta", full ? dbeta : NULL, cols, psize, 1));
  TRY(nk__vector_span(ctx, op, &s[9], "dgamma_acc", full ? NULL : dgamma_acc, cols, 8, 1));
  TRY(nk__vector_span(ctx, op, &s[10], "dbeta_acc", full ? NULL : dbeta_acc, cols, 8, 1));
  TRY(nk__vector_span(ctx, op, &s[11], "workspace", need ? workspace : NULL, need, 1, 1));
  TRY(nk__check_overlaps(ctx, op, s, 12, bwd_alias_ok));

  const nk_rowvar_kernels *k = nk__rowvar_kernels(nk__context_isa(ctx));
  bwd_job job;
  memset(&job, 0, sizeof job);
  job.fn = is_l1 ? k->l1_bwd[d->dtype] : k->crms_bwd[d->dtype];
  job.params = params_of(d, gamma, NULL);
  job.d = d;
  job.x = x;
  job.dy = dy;
  job.dh = dh;
  job.s1 = is_l1 ? mean : NULL;
  job.s2 = rs;
  job.dx = dx;
  if (!full) {
    job.rows = row_end;
    bwd_rows_run(&job, row_begin, row_end - row_begin, dgamma_acc, dbeta_acc);
    return nk__ok(ctx);
  }
  nk_threadpool *pool = nk__context_pool(ctx);
  job.rows = rows;
  job.chunk_rows = bwd_chunk_rows(rows, cols);
  job.nchunks = nchunks;
  job.dgamma = dgamma;
  job.dbeta = dbeta;
  if (need) job.partials = nk__ws_align(workspace);
  nk_parallelize_1d(pool, bwd_chunk_task, &job, nchunks, 1);
  if (job.partials) nk_parallelize_1d(pool, bwd_combine_task, &job, cols, NK_BWD_COMBINE_TILE);
  return nk__ok(ctx);
}

nk_status nk_crmsnorm_bwd(nk_context *ctx, const nk_norm_desc *desc, const void *x,
                          const float *rstd, const void *dy, const void *dh, void *dx) {
  return var_bwd(ctx, 0, desc, 0, desc ? desc->rows : 0, 1, x, NULL, NULL, rstd, dy, dh, dx,
                 NULL, NULL, NULL, NULL, NULL, 0);
}

nk_status nk_crmsnorm_bwd_rows(nk_context *ctx, const nk_norm_desc *desc, size_t row_begin,
                               size_t row_end, const void *x, const float *rstd, const void *dy,
                               const void *dh, void *dx) {
  return var_bwd(ctx, 0, desc, row_begin, row_end, 0, x, NULL, NULL, rstd, dy, dh, dx, NULL,
                 NULL, NULL, NULL, NULL, 0);
}

nk_status nk_l1norm_bwd(nk_context *ctx, const nk_norm_desc *desc, const void *x,
                        const void *gamma, const float *mean, const float *rscale,
                        const void *dy, const void *dh, void *dx, void *dgamma, void *dbeta,
                        void *workspace, size_t workspace_size) {
  return var_bwd(ctx, 1, desc, 0, desc ? desc->rows : 0, 1, x, gamma, mean, rscale, dy, dh, dx,
                 dgamma, dbeta, NULL, NULL, workspace, workspace_size);
}

nk_status nk_l1norm_bwd_rows(nk_context *ctx, const nk_norm_desc *desc, size_t row_begin,
                             size_t row_end, const void *x, const void *gamma, const float *mean,
                             const float *rscale, const void *dy, const void *dh, void *dx,
                             double *dgamma_acc, double *dbeta_acc) {
  return var_bwd(ctx, 1, desc, row_begin, row_end, 0, x, gamma, mean, rscale, dy, dh, dx, NULL,
                 NULL, dgamma_acc, dbeta_acc, NULL, 0);
}
