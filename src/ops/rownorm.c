/*
 * rownorm.c — the LayerNorm and RMSNorm operators: validate, choose a kernel, split rows over
 * the thread pool. No intrinsics here.
 *
 * Determinism: forward rows are independent, so any split gives the same bits. The backward's
 * parameter gradients are summed per fixed chunk of rows (chunk size a function of rows and cols
 * only) into double partials in the workspace, then the partials are added in chunk order.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "convert.h"
#include "dispatch.h"
#include "internal.h"
#include "op-checks.h"
#include "validate.h"

/* Backward chunking: at most this many chunks, at least this many rows per chunk, and at
 * most NK_BWD_PARTIAL_ELEMS partial elements (per gradient) in all. */
#define NK_BWD_MAX_CHUNKS 64
#define NK_BWD_MIN_CHUNK_ROWS 8
#define NK_BWD_PARTIAL_ELEMS ((size_t)1 << 22)
/* Columns per task of the final gradient reduction. */
#define NK_BWD_COMBINE_TILE 1024

static const uint32_t known_flags = NK_NORM_GAMMA_OFFSET | NK_NORM_ACCUMULATE | NK_NORM_BWD_FROM_Y;



/* Forward: y may be x, r or h; h may be x or r. */
int nk__norm_fwd_alias_ok(const span *out, const span *other) {
  if (nk__span_is(out, "y"))
    return nk__span_is(other, "x") || nk__span_is(other, "r") || nk__span_is(other, "h");
  if (nk__span_is(out, "h")) return nk__span_is(other, "x") || nk__span_is(other, "r") || nk__span_is(other, "y");
  return 0;
}

/* Backward: dx may be dy, x or dh. */
int nk__norm_bwd_alias_ok(const span *out, const span *other) {
  return nk__span_is(out, "dx") &&
         (nk__span_is(other, "dy") || nk__span_is(other, "x") || nk__span_is(other, "dh"));
}

/* Checks the descriptor fields shared by every call. */
nk_status nk__check_norm_desc(nk_context *ctx, const char *op, const nk_norm_desc *d) {
  if (d == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  TRY(nk__check_dtypes(ctx, op, d->dtype, d->param_dtype));
  if (!(d->eps > 0.0f) || !isfinite(d->eps))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: eps %g must be finite and > 0", op,
                    (double)d->eps);
  if (d->flags & ~known_flags)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown flags 0x%x", op,
                    (unsigned)(d->flags & ~known_flags));
  if (!(d->lns_scale >= 0.0f) || !isfinite(d->lns_scale))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: lns_scale %g must be finite and >= 0",
                    op, (double)d->lns_scale);
  return NK_STATUS_OK;
}

/* LayerNorm Scaling into the kernel parameters: s = 0 (off) and s = 1 need no product. */
static void set_lns(const nk_norm_desc *d, nk_rownorm_params *p) {
  if (d->lns_scale != 0.0f && d->lns_scale != 1.0f) {
    p->variant |= NK_ROWNORM_SCALE;
    p->scale = d->lns_scale;
    p->scale_inv = 1.0f / d->lns_scale;
  }
}

static uint32_t variant_of(const nk_norm_desc *d, const void *gamma, const void *beta) {
  uint32_t v = 0;
  if (gamma) v |= NK_ROWNORM_HAS_GAMMA;
  if (beta) v |= NK_ROWNORM_HAS_BETA;
  if (d->flags & NK_NORM_GAMMA_OFFSET) v |= NK_ROWNORM_OFFSET;
  return v;
}

/* ---- forward ------------------------------------------------------------------------------ */

typedef struct fwd_job {
  nk_rownorm_fwd_ukernel_fn fn;
  const nk_norm_desc *d;
  const void *x, *r;
  void *y, *h;
  float *mean, *rstd;
  nk_rownorm_params params;
} fwd_job;

static void fwd_task(void *arg, size_t start, size_t count) {
  const fwd_job *j = arg;
  const nk_norm_desc *d = j->d;
  j->fn(count, d->cols, offset_rows(j->x, start, d->x_stride, d->dtype), d->x_stride,
        offset_rows(j->r, start, d->r_stride, d->dtype), d->r_stride,
        (void *)offset_rows(j->y, start, d->y_stride, d->dtype), d->y_stride,
        (void *)offset_rows(j->h, start, d->h_stride, d->dtype), d->h_stride,
        j->mean ? j->mean + start : NULL, j->rstd ? j->rstd + start : NULL, &j->params);
}

static nk_status norm_fwd(nk_context *ctx, int is_rms, const nk_norm_desc *d, size_t row_begin,
                          size_t row_end, int use_pool, const void *x, const void *r,
                          const void *gamma, const void *beta, void *y, void *h, float *mean,
                          float *rstd) {
  const char *op = is_rms ? "rmsnorm_fwd" : "layernorm_fwd";
  TRY(nk__check_norm_desc(ctx, op, d));
  TRY(nk__check_row_range(ctx, op, row_begin, row_end, d->rows));
  if (d->rows == 0 || d->cols == 0 || row_begin == row_end) return nk__ok(ctx);
  if (x == NULL || y == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, x ? "y" : "x");
  if (h != NULL && r == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: h is given without a residual r", op);
  if ((d->flags & NK_NORM_GAMMA_OFFSET) && gamma == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: NK_NORM_GAMMA_OFFSET needs gamma", op);
  const size_t rows = d->rows, cols = d->cols;
  span s[8];
  TRY(nk__tensor_span(ctx, op, &s[0], "x", x, d->x_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "r", r, d->r_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[2], "y", y, d->y_stride, rows, cols, d->dtype, 1));
  TRY(nk__tensor_span(ctx, op, &s[3], "h", h, d->h_stride, rows, cols, d->dtype, 1));
  TRY(nk__vector_span(ctx, op, &s[4], "gamma", gamma, cols, nk_dtype_size(d->param_dtype), 0));
  TRY(nk__vector_span(ctx, op, &s[5], "beta", beta, cols, nk_dtype_size(d->param_dtype), 0));
  TRY(nk__vector_span(ctx, op, &s[6], "mean", is_rms ? NULL : mean, rows, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[7], "rstd", rstd, rows, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 8, nk__norm_fwd_alias_ok));

  const nk_op kop = is_rms ? NK_OP_RMSNORM_FWD : NK_OP_LAYERNORM_FWD;
  fwd_job job = {nk__select_rownorm_fwd(nk__context_isa(ctx), kop, d->dtype), d, x, r, y, h,
                 is_rms ? NULL : mean, rstd,
                 (nk_rownorm_params){gamma, beta, NULL, d->eps, d->param_dtype,
                                     variant_of(d, gamma, beta), 0.0f, 0.0f, 0.0f}};
  if (job.fn == NULL)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: no kernel for dtype %s", op,
                    nk_dtype_name(d->dtype));
  set_lns(d, &job.params);
  size_t out_bytes = 0;
  if (nk__mul_size(rows, cols, &out_bytes) &&
      nk__mul_size(out_bytes, nk_dtype_size(d->dtype), &out_bytes) &&
      out_bytes >= NK_NONTEMPORAL_BYTES)
    job.params.variant |= NK_ROWNORM_NONTEMPORAL;

  nk_threadpool *pool = use_pool ? nk__context_pool(ctx) : NULL;
  const size_t n = row_end - row_begin, nthreads = nk_threadpool_size(pool);
  /* Rows are independent: the tiling changes nothing in the results, only the balance. */
  const size_t tile = ceil_div(n, 4 * nthreads);
  job.x = offset_rows(x, row_begin, d->x_stride, d->dtype);
  job.r = offset_rows(r, row_begin, d->r_stride, d->dtype);
  job.y = (void *)offset_rows(y, row_begin, d->y_stride, d->dtype);
  job.h = (void *)offset_rows(h, row_begin, d->h_stride, d->dtype);
  if (job.mean) job.mean += row_begin;
  if (job.rstd) job.rstd += row_begin;
  if (nthreads == 1)
    fwd_task(&job, 0, n);
  else
    nk_parallelize_1d(pool, fwd_task, &job, n, tile);
  return nk__ok(ctx);
}

nk_status nk_layernorm_fwd(nk_context *ctx, const nk_layernorm_desc *desc, const void *x,
                           const void *r, const void *gamma, const void *beta, void *y, void *h,
                           float *mean, float *rstd) {
  return norm_fwd(ctx, 0, desc, 0, desc ? desc->rows : 0, 1, x, r, gamma, beta, y, h, mean,
                  rstd);
}

nk_status nk_layernorm_fwd_rows(nk_context *ctx, const nk_layernorm_desc *desc,
                                size_t row_begin, size_t row_end, const void *x, const void *r,
                                const void *gamma, const void *beta, void *y, void *h,
                                float *mean, float *rstd) {
  return norm_fwd(ctx, 0, desc, row_begin, row_end, 0, x, r, gamma, beta, y, h, mean, rstd);
}

nk_status nk_rmsnorm_fwd(nk_context *ctx, const nk_rmsnorm_desc *desc, const void *x,
                         const void *r, const void *gamma, const void *beta, void *y, void *h,
                         float *rstd) {
  return norm_fwd(ctx, 1, desc, 0, desc ? desc->rows : 0, 1, x, r, gamma, beta, y, h, NULL,
                  rstd);
}

nk_status nk_rmsnorm_fwd_rows(nk_context *ctx, const nk_rmsnorm_desc *desc, size_t row_begin,
                              size_t row_end, const void *x, const void *r, const void *gamma,
                              const void *beta, void *y, void *h, float *rstd) {
  return norm_fwd(ctx, 1, desc, row_begin, row_end, 0, x, r, gamma, beta, y, h, NULL, rstd);
}

nk_norm_desc nk_norm_desc_dense(size_t rows, size_t cols, nk_dtype dtype, float eps) {
  const ptrdiff_t s = (ptrdiff_t)cols;
  nk_norm_desc d = {rows, cols, dtype, NK_DTYPE_F32, eps, 0, s, s, s, s, s, s, s, 0.0f};
  return d;
}

/* ---- backward ----------------------------------------------------------------------------- */

/* Rows per chunk of the parameter-gradient reduction: a function of rows and cols only. */
static size_t bwd_chunk_rows(size_t rows, size_t cols) {
  size_t nchunks = ceil_div(rows, NK_BWD_MIN_CHUNK_ROWS);
  if (nchunks > NK_BWD_MAX_CHUNKS) nchunks = NK_BWD_MAX_CHUNKS;
  const size_t by_memory = cols ? NK_BWD_PARTIAL_ELEMS / cols : 1;
  if (nchunks > by_memory) nchunks = by_memory;
  if (nchunks == 0) nchunks = 1;
  return ceil_div(rows, nchunks);
}

static size_t round_up64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Workspace layout: [nchunks][2][cols] doubles (dgamma, dbeta partials), then cols floats of
 * 1/g for NK_NORM_BWD_FROM_Y. Returns 0 and sets *bytes, or nonzero on overflow. */
static int bwd_workspace_layout(const nk_norm_desc *d, size_t *nchunks, size_t *ginv_offset,
                                size_t *bytes) {
  const size_t rows = d->rows, cols = d->cols;
  if (rows == 0 || cols == 0) {
    *nchunks = 0;
    *ginv_offset = 0;
    *bytes = 0;
    return 0;
  }
  const size_t cr = bwd_chunk_rows(rows, cols);
  *nchunks = ceil_div(rows, cr);
  size_t partial;
  if (!nk__mul_size(*nchunks, cols, &partial) || !nk__mul_size(partial, 2 * sizeof(double), &partial))
    return 1;
  partial = round_up64(partial);
  *ginv_offset = partial;
  size_t ginv = 0;
  if ((d->flags & NK_NORM_BWD_FROM_Y) && !nk__mul_size(cols, sizeof(float), &ginv)) return 1;
  /* plus the alignment slack (a workspace at an odd address gave misaligned double partials:
   * rownorm fuzz harness) */
  return !nk__add_size(partial, ginv, bytes) || !nk__ws_bytes(*bytes, bytes);
}

static nk_status bwd_workspace_size(int is_rms, const nk_norm_desc *d, size_t *bytes) {
  const char *op = is_rms ? "rmsnorm_bwd_workspace_size" : "layernorm_bwd_workspace_size";
  TRY(nk__check_norm_desc(NULL, op, d));
  if (bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;
  size_t nchunks, off;
  if (bwd_workspace_layout(d, &nchunks, &off, bytes)) return NK_STATUS_INVALID_ARGUMENT;
  return NK_STATUS_OK;
}

nk_status nk_layernorm_bwd_workspace_size(const nk_layernorm_desc *desc, size_t *bytes) {
  return bwd_workspace_size(0, desc, bytes);
}

nk_status nk_rmsnorm_bwd_workspace_size(const nk_rmsnorm_desc *desc, size_t *bytes) {
  return bwd_workspace_size(1, desc, bytes);
}

typedef struct bwd_job {
  nk_rownorm_bwd_ukernel_fn fn;
  const nk_norm_desc *d;
  size_t rows, chunk_rows;
  const void *x, *dy, *dh;
  const float *mean, *rstd;
  void *dx;
  double *partials; /* [nchunks][2][cols], or NULL */
  int want_dgamma, want_dbeta;
  /* row-range entry: accumulate straight into the caller's arrays */
  double *dgamma_acc, *dbeta_acc;
  /* final reduction */
  size_t nchunks;
  void *dgamma, *dbeta;
  nk_rownorm_params params;
} bwd_job;

static void bwd_rows_run(const bwd_job *j, size_t start, size_t count, double *dg, double *db) {
  const nk_norm_desc *d = j->d;
  j->fn(count, d->cols, offset_rows(j->x, start, d->x_stride, d->dtype), d->x_stride,
        offset_rows(j->dy, start, d->dy_stride, d->dtype), d->dy_stride,
        offset_rows(j->dh, start, d->dh_stride, d->dtype), d->dh_stride,
        j->mean ? j->mean + start : NULL, j->rstd ? j->rstd + start : NULL,
        (void *)offset_rows(j->dx, start, d->dx_stride, d->dtype), d->dx_stride, dg, db,
        &j->params);
}

/* One task = one chunk of rows; its partial gradients are zeroed and then summed by the
 * kernel over the chunk's rows in order. */
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
    bwd_rows_run(j, start, n, j->want_dgamma ? dg : NULL, j->want_dbeta ? db : NULL);
  }
}

static void put_param(void *p, size_t i, double v, nk_dtype dt, int accumulate) {
  if (accumulate) v += (double)nk__load_f32(p, i, dt);
  nk__store_f32(p, i, (float)v, dt);
}

/* Adds the chunk partials of columns [start, start+count) in chunk order and writes them. */
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


/* FROM_Y: ginv_i = 1 / g_i into `ginv`; fails if some g_i is 0. */
static nk_status fill_ginv(nk_context *ctx, const char *op, const nk_norm_desc *d,
                           const void *gamma, float *ginv) {
  for (size_t i = 0; i < d->cols; i++) {
    float g = nk__load_f32(gamma, i, d->param_dtype);
    if (d->flags & NK_NORM_GAMMA_OFFSET) g = 1.0f + g;
    if (g == 0.0f)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                      "%s: NK_NORM_BWD_FROM_Y needs every gain != 0, gain[%zu] == 0", op, i);
    ginv[i] = 1.0f / g;
  }
  return NK_STATUS_OK;
}

/* sigma_bar: NULL, or FakeLN's frozen std (the LayerNorm backward with rstd = 1/sigma_bar for
 * every row and no variance term; is_rms 0, rstd NULL). */
static nk_status norm_bwd(nk_context *ctx, int is_rms, const float *sigma_bar,
                          const nk_norm_desc *d, size_t row_begin, size_t row_end, int full,
                          const void *x, const void *gamma, const void *beta, const float *mean,
                          const float *rstd, const void *dy, const void *dh, void *dx,
                          void *dgamma, void *dbeta, double *dgamma_acc, double *dbeta_acc,
                          void *workspace, size_t workspace_size) {
  const char *op = sigma_bar ? (full ? "fakeln_bwd" : "fakeln_bwd_rows")
                   : is_rms  ? "rmsnorm_bwd"
                             : "layernorm_bwd";
  TRY(nk__check_norm_desc(ctx, op, d));
  if (sigma_bar) { /* the forward's rules (nk__normq_forward) */
    if (!(*sigma_bar > 0.0f) || !isfinite(*sigma_bar))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: sigma_bar %g must be finite and > 0",
                      op, (double)*sigma_bar);
    if (d->lns_scale != 0.0f && d->lns_scale != 1.0f)
      return nk__fail(ctx, NK_STATUS_UNSUPPORTED,
                      "%s: lns_scale %g is not supported (0 or 1 only)", op,
                      (double)d->lns_scale);
  }
  TRY(nk__check_row_range(ctx, op, row_begin, row_end, d->rows));
  if (d->rows == 0 || d->cols == 0) return nk__ok(ctx);
  const int from_y = (d->flags & NK_NORM_BWD_FROM_Y) != 0;
  if (x == NULL || dy == NULL || dx == NULL || (rstd == NULL && sigma_bar == NULL))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op,
                    x == NULL ? "x" : dy == NULL ? "dy" : dx == NULL ? "dx" : "rstd");
  if (!is_rms && !from_y && mean == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: mean is NULL", op);
  if ((d->flags & NK_NORM_GAMMA_OFFSET) && gamma == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: NK_NORM_GAMMA_OFFSET needs gamma", op);
  const size_t rows = d->rows, cols = d->cols;
  const size_t psize = nk_dtype_size(d->param_dtype);
  size_t nchunks = 0, ginv_off = 0, need = 0;
  if (bwd_workspace_layout(d, &nchunks, &ginv_off, &need))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  if (!full) { /* row-range entry: only the 1/g table (cols floats; cols * 4 cannot overflow) */
    nk__ws_bytes(from_y ? cols * sizeof(float) : 0, &need);
    ginv_off = 0;
  }
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need));
  span s[14];
  TRY(nk__tensor_span(ctx, op, &s[0], "x", x, d->x_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "dy", dy, d->dy_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[2], "dh", dh, d->dh_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[3], "dx", dx, d->dx_stride, rows, cols, d->dtype, 1));
  TRY(nk__vector_span(ctx, op, &s[4], "gamma", gamma, cols, psize, 0));
  TRY(nk__vector_span(ctx, op, &s[5], "beta", beta, cols, psize, 0));
  TRY(nk__vector_span(ctx, op, &s[6], "mean", (is_rms || from_y) ? NULL : mean, rows, 4, 0));
  TRY(nk__vector_span(ctx, op, &s[7], "rstd", sigma_bar ? NULL : rstd, rows, 4, 0));
  TRY(nk__vector_span(ctx, op, &s[8], "dgamma", full ? dgamma : NULL, cols, psize, 1));
  TRY(nk__vector_span(ctx, op, &s[9], "dbeta", full ? dbeta : NULL, cols, psize, 1));
  TRY(nk__vector_span(ctx, op, &s[10], "dgamma_acc", full ? NULL : dgamma_acc, cols, 8, 1));
  TRY(nk__vector_span(ctx, op, &s[11], "dbeta_acc", full ? NULL : dbeta_acc, cols, 8, 1));
  TRY(nk__vector_span(ctx, op, &s[12], "workspace", need ? workspace : NULL, need, 1, 1));
  s[13] = (span){"none", NULL, 0, 0, 0, 0, 0};
  TRY(nk__check_overlaps(ctx, op, s, 14, nk__norm_bwd_alias_ok));

  if (need) workspace = nk__ws_align(workspace); /* the size has the slack */
  const nk_op kop = is_rms ? NK_OP_RMSNORM_BWD : NK_OP_LAYERNORM_BWD;
  bwd_job job;
  memset(&job, 0, sizeof job);
  job.fn = nk__select_rownorm_bwd(nk__context_isa(ctx), kop, d->dtype);
  if (job.fn == NULL)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: no kernel for dtype %s", op,
                    nk_dtype_name(d->dtype));
  job.params = (nk_rownorm_params){gamma, beta, NULL, d->eps, d->param_dtype,
                                   variant_of(d, gamma, beta), 0.0f, 0.0f, 0.0f};
  set_lns(d, &job.params);
  if (sigma_bar) { /* the forward's 1/sigma_bar (quant.c), rounded once */
    job.params.variant |= NK_ROWNORM_FIXED_RSTD;
    job.params.fixed_rstd = (float)(1.0 / (double)*sigma_bar);
  }
  size_t out_bytes = 0;
  if (nk__mul_size(rows, cols, &out_bytes) &&
      nk__mul_size(out_bytes, nk_dtype_size(d->dtype), &out_bytes) &&
      out_bytes >= NK_NONTEMPORAL_BYTES)
    job.params.variant |= NK_ROWNORM_NONTEMPORAL; /* streaming dx stores, L2 prefetch */
  if (from_y) {
    job.params.variant |= NK_ROWNORM_FROM_Y;
    if (gamma != NULL) {
      float *ginv = (float *)((char *)workspace + ginv_off);
      TRY(fill_ginv(ctx, op, d, gamma, ginv));
      job.params.ginv = ginv;
    }
  }
  job.d = d;
  job.x = x;
  job.dy = dy;
  job.dh = dh;
  job.mean = (is_rms || from_y) ? NULL : mean;
  job.rstd = sigma_bar ? NULL : rstd;
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
  job.want_dgamma = dgamma != NULL;
  job.want_dbeta = dbeta != NULL;
  if (dgamma != NULL || dbeta != NULL) job.partials = workspace;
  job.dgamma = dgamma;
  job.dbeta = dbeta;
  nk_parallelize_1d(pool, bwd_chunk_task, &job, nchunks, 1);
  if (job.partials) nk_parallelize_1d(pool, bwd_combine_task, &job, cols, NK_BWD_COMBINE_TILE);
  return nk__ok(ctx);
}

nk_status nk_layernorm_bwd(nk_context *ctx, const nk_layernorm_desc *desc, const void *x,
                           const void *gamma, const void *beta, const float *mean,
                           const float *rstd, const void *dy, const void *dh, void *dx,
                           void *dgamma, void *dbeta, void *workspace, size_t workspace_size) {
  return norm_bwd(ctx, 0, NULL, desc, 0, desc ? desc->rows : 0, 1, x, gamma, beta, mean, rstd, dy, dh,
                  dx, dgamma, dbeta, NULL, NULL, workspace, workspace_size);
}

nk_status nk_layernorm_bwd_rows(nk_context *ctx, const nk_layernorm_desc *desc,
                                size_t row_begin, size_t row_end, const void *x,
                                const void *gamma, const void *beta, const float *mean,
                                const float *rstd, const void *dy, const void *dh, void *dx,
                                double *dgamma_acc, double *dbeta_acc, void *workspace,
                                size_t workspace_size) {
  return norm_bwd(ctx, 0, NULL, desc, row_begin, row_end, 0, x, gamma, beta, mean, rstd, dy, dh, dx,
                  NULL, NULL, dgamma_acc, dbeta_acc, workspace, workspace_size);
}

nk_status nk_rmsnorm_bwd(nk_context *ctx, const nk_rmsnorm_desc *desc, const void *x,
                         const void *gamma, const void *beta, const float *rstd, const void *dy,
                         const void *dh, void *dx, void *dgamma, void *dbeta, void *workspace,
                         size_t workspace_size) {
  return norm_bwd(ctx, 1, NULL, desc, 0, desc ? desc->rows : 0, 1, x, gamma, beta, NULL, rstd, dy, dh,
                  dx, dgamma, dbeta, NULL, NULL, workspace, workspace_size);
}

nk_status nk_rmsnorm_bwd_rows(nk_context *ctx, const nk_rmsnorm_desc *desc, size_t row_begin,
                              size_t row_end, const void *x, const void *gamma,
                              const void *beta, const float *rstd, const void *dy,
                              const void *dh, void *dx, double *dgamma_acc, double *dbeta_acc,
                              void *workspace, size_t workspace_size) {
  return norm_bwd(ctx, 1, NULL, desc, row_begin, row_end, 0, x, gamma, beta, NULL, rstd, dy, dh, dx,
                  NULL, NULL, dgamma_acc, dbeta_acc, workspace, workspace_size);
}

/* ---- FakeLN backward (docs/ops/fakeln.md): the LayerNorm backward with a frozen std -------- */

nk_status nk_fakeln_bwd_workspace_size(const nk_norm_desc *desc, size_t *bytes) {
  return bwd_workspace_size(0, desc, bytes);
}

nk_status nk_fakeln_bwd(nk_context *ctx, const nk_norm_desc *desc, float sigma_bar,
                        const void *x, const void *gamma, const void *beta, const float *mean,
                        const void *dy, const void *dh, void *dx, void *dgamma, void *dbeta,
                        void *workspace, size_t workspace_size) {
  return norm_bwd(ctx, 0, &sigma_bar, desc, 0, desc ? desc->rows : 0, 1, x, gamma, beta, mean,
                  NULL, dy, dh, dx, dgamma, dbeta, NULL, NULL, workspace, workspace_size);
}

nk_status nk_fakeln_bwd_rows(nk_context *ctx, const nk_norm_desc *desc, size_t row_begin,
                             size_t row_end, float sigma_bar, const void *x, const void *gamma,
                             const void *beta, const float *mean, const void *dy,
                             const void *dh, void *dx, double *dgamma_acc, double *dbeta_acc,
                             void *workspace, size_t workspace_size) {
  return norm_bwd(ctx, 0, &sigma_bar, desc, row_begin, row_end, 0, x, gamma, beta, mean, NULL,
                  dy, dh, dx, NULL, NULL, dgamma_acc, dbeta_acc, workspace, workspace_size);
}
