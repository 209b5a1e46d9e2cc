/*
 * moments.c — the (count, mean, M2) statistics: Chan's merge, finalization, and the public
 * row/column moment operators (their block kernels live in src/kernels/chnorm/).
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "chnorm-ops.h"
#include "convert.h"

#include "internal.h"
#include "validate.h"

void nk_moments_merge(nk_moments *acc, const nk_moments *b) {
  if (acc == NULL || b == NULL) return;
  nk__ch_chan(&acc->count, &acc->mean, &acc->m2, b->count, b->mean, b->m2);
}

void nk_moments_merge_n(size_t n, nk_moments *dst, const nk_moments *src) {
  if (dst == NULL || src == NULL) return;
  for (size_t i = 0; i < n; i++) nk_moments_merge(&dst[i], &src[i]);
}

nk_status nk_moments_finalize(const nk_moments *m, float eps, float *mean, float *var,
                              float *var_unbiased, float *rstd) {
  if (m == NULL || !(eps >= 0.0f) || !isfinite(eps)) return NK_STATUS_INVALID_ARGUMENT;
  const double n = m->count;
  const double v = n > 0.0 ? m->m2 / n : NAN;
  if (mean) *mean = n > 0.0 ? (float)m->mean : NAN;
  if (var) *var = (float)v;
  if (var_unbiased) *var_unbiased = n > 1.0 ? (float)(m->m2 / (n - 1.0)) : NAN;
  if (rstd) *rstd = (float)(1.0 / sqrt(v + (double)eps));
  return NK_STATUS_OK;
}

/* ---- moments of rows and columns ------------------------------------------------------------ */

typedef struct mom_job {
  const nk_chnorm_kernels *k;
  size_t rows, cols;
  nk_dtype dt;
  const void *x;
  ptrdiff_t stride;
  nk_moments *out;
  uint32_t kflags;
} mom_job;

static void rows_task(void *arg, size_t start, size_t count) {
  const mom_job *j = arg;
  const size_t es = nk_dtype_size(j->dt);
  for (size_t r = start; r < start + count; r++) {
    double acc[3] = {0.0, 0.0, 0.0};
    j->k->moments_run(j->cols, (const char *)j->x + (ptrdiff_t)r * j->stride * (ptrdiff_t)es,
                      j->dt, j->kflags, acc);
    j->out[r] = (nk_moments){acc[0], acc[1], acc[2]};
  }
}

static void cols_task(void *arg, size_t start, size_t count) {
  const mom_job *j = arg;
  const size_t es = nk_dtype_size(j->dt);
  double mean[NK_CH_TILE_COLS], m2[NK_CH_TILE_COLS];
  for (size_t t = start; t < start + count; t++) {
    const size_t c0 = t * NK_CH_TILE_COLS;
    const size_t cols = j->cols - c0 < NK_CH_TILE_COLS ? j->cols - c0 : NK_CH_TILE_COLS;
    double n = 0.0;
    memset(mean, 0, cols * sizeof(double));
    memset(m2, 0, cols * sizeof(double));
    const nk_ch_rows rr = {j->rows, 0, j->stride};
    j->k->moments_cols(0, j->rows, cols, (const char *)j->x + c0 * es, rr, j->dt, j->kflags, &n,
                       mean, m2);
    for (size_t c = 0; c < cols; c++) j->out[c0 + c] = (nk_moments){n, mean[c], m2[c]};
  }
}

static nk_status moments_2d(nk_context *ctx, const char *op, int by_cols, size_t rows,
                            size_t cols, nk_dtype dtype, const void *x, ptrdiff_t x_stride,
                            nk_moments *out) {
  if (!dtype_known(dtype))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown dtype %d", op, (int)dtype);
  const size_t nout = by_cols ? cols : rows;
  if (nout == 0) return nk__ok(ctx);
  if (out == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: out is NULL", op);
  span s[2];
  TRY(nk__vector_span(ctx, op, &s[1], "out", out, nout, sizeof(nk_moments), 1));
  if (rows == 0 || cols == 0) {
    for (size_t i = 0; i < nout; i++) out[i] = (nk_moments){0.0, 0.0, 0.0};
    return nk__ok(ctx);
  }
  if (x == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: x is NULL", op);
  TRY(nk__tensor_span(ctx, op, &s[0], "x", x, x_stride, rows, cols, dtype, 0));
  TRY(nk__check_overlaps(ctx, op, s, 2, nk__no_alias));
  size_t bytes = 0;
  const int big = nk__mul_size(rows, cols, &bytes) && nk__mul_size(bytes, nk_dtype_size(dtype), &bytes) &&
                  bytes >= ((size_t)64 << 20);
  mom_job j = {nk__chnorm_kernels(ctx), rows, cols, dtype, x, x_stride, out, big ? NK_CHK_PF : 0};
  nk_threadpool *pool = nk__context_pool(ctx);
  if (by_cols)
    nk_parallelize_1d(pool, cols_task, &j, (cols + NK_CH_TILE_COLS - 1) / NK_CH_TILE_COLS, 1);
  else
    nk_parallelize_1d(pool, rows_task, &j, rows, 1 + 16384 / cols);
  return nk__ok(ctx);
}

nk_status nk_moments_rows(nk_context *ctx, size_t rows, size_t cols, nk_dtype dtype,
                          const void *x, ptrdiff_t x_stride, nk_moments *out) {
  return moments_2d(ctx, "moments_rows", 0, rows, cols, dtype, x, x_stride, out);
}

nk_status nk_moments_cols(nk_context *ctx, size_t rows, size_t cols, nk_dtype dtype,
                          const void *x, ptrdiff_t x_stride, nk_moments *out) {
  return moments_2d(ctx, "moments_cols", 1, rows, cols, dtype, x, x_stride, out);
}

/* ---- row norms with given moments (tensor parallelism) --------------------------------------- */

typedef struct rowmom_job {
  const nk_chnorm_kernels *k;
  const nk_norm_desc *d;
  int is_rms;
  const nk_moments *m;
  const void *x, *gamma, *beta;
  void *y;
  float *mean, *rstd;
} rowmom_job;

static float pget(const void *p, size_t i, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) return ((const float *)p)[i];
  const uint16_t h = ((const uint16_t *)p)[i];
  return dt == NK_DTYPE_BF16 ? nk__bf16_to_f32(h) : nk__f16_to_f32(h);
}

static void rowmom_task(void *arg, size_t start, size_t count) {
  const rowmom_job *j = arg;
  const nk_norm_desc *d = j->d;
  const size_t es = nk_dtype_size(d->dtype);
  float v[5][NK_CH_TILE_COLS];
  for (size_t r = start; r < start + count; r++) {
    const nk_moments *m = &j->m[r];
    float mh = 0.0f, mlr = 0.0f, rs;
    if (j->is_rms) {
      const double ms = (m->m2 + m->count * m->mean * m->mean) / m->count;
      rs = (float)(1.0 / sqrt(ms + (double)d->eps));
    } else {
      nk__ch_stats(m, d->eps, &mh, &mlr, &rs);
      if (j->mean) j->mean[r] = mh;
    }
    if (j->rstd) j->rstd[r] = rs;
    const char *xr = (const char *)j->x + (ptrdiff_t)r * d->x_stride * (ptrdiff_t)es;
    char *yr = (char *)j->y + (ptrdiff_t)r * d->y_stride * (ptrdiff_t)es;
    if (!j->is_rms && fabs(m->mean) >= 0x1p100) {
      /* Rows the f32 centring cannot hold, centred in double instead: xhat =
       * (float)((x - mean) * rstd), then the same y = fmaf(xhat, g, b), on every ISA: |mean| >=
       * 2^100 can push x - mean_hi past FLT_MAX (x near FLT_MAX, the mean of the other sign:
       * +3.4e38 in a row of mean -2.7e36 gave y = inf; moments fuzz harness); below 2^100 the
       * difference stays under FLT_MAX plus half its ulp (2^103) and rounds to a finite value.
       * (Subnormal data, |mean| < 2^-100, took this way too while the kernel subtracted an f32
       * mean_lo, rounded to the subnormal grid: {1.154e-38, 1.111e-38} with eps 2^-23 gave y
       * 3.3e-6 off. The kernel now subtracts (mean - mean_hi) * rstd inside an fma.) */
      for (size_t c = 0; c < d->cols; c++) {
        float g = j->gamma ? pget(j->gamma, c, d->param_dtype) : 1.0f;
        if (d->flags & NK_NORM_GAMMA_OFFSET) g = 1.0f + g;
        const float b = j->beta ? pget(j->beta, c, d->param_dtype) : 0.0f;
        const float xh = (float)(((double)nk__load_f32(xr, c, d->dtype) - m->mean) * (double)rs);
        nk__store_f32(yr, c, fmaf(xh, g, b), d->dtype);
      }
      continue;
    }
    for (size_t c0 = 0; c0 < d->cols; c0 += NK_CH_TILE_COLS) {
      const size_t cols = d->cols - c0 < NK_CH_TILE_COLS ? d->cols - c0 : NK_CH_TILE_COLS;
      for (size_t c = 0; c < cols; c++) {
        float g = j->gamma ? pget(j->gamma, c0 + c, d->param_dtype) : 1.0f;
        if (d->flags & NK_NORM_GAMMA_OFFSET) g = 1.0f + g;
        v[0][c] = mh, v[1][c] = mlr, v[2][c] = rs, v[3][c] = g;
        v[4][c] = j->beta ? pget(j->beta, c0 + c, d->param_dtype) : 0.0f;
      }
      /* s = 1 (NULL): the rows whose x - mean_hi could overflow went the double way above */
      const nk_ch_norm_vectors pv = {v[0], v[1], v[2], v[3], v[4], NULL};
      const nk_ch_rows one = {1, 0, 0};
      j->k->norm_cols(0, 1, cols, xr + c0 * es, one, NULL, one, yr + c0 * es, one, d->dtype, &pv,
                      0);
    }
  }
}

static int rowmom_alias_ok(const span *out, const span *other) {
  return nk__span_is(out, "y") && nk__span_is(other, "x");
}

static nk_status rownorm_moments(nk_context *ctx, int is_rms, const nk_norm_desc *d,
                                 const nk_moments *m, const void *x, const void *gamma,
                                 const void *beta, void *y, float *mean, float *rstd) {
  const char *op = is_rms ? "rmsnorm_fwd_moments" : "layernorm_fwd_moments";
  if (d == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  TRY(nk__check_dtypes(ctx, op, d->dtype, d->param_dtype));
  if (!(d->eps > 0.0f) || !isfinite(d->eps))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: eps %g must be finite and > 0", op,
                    (double)d->eps);
  if (d->flags & ~NK_NORM_GAMMA_OFFSET)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: flags 0x%x do not apply", op,
                    (unsigned)d->flags);
  if ((d->flags & NK_NORM_GAMMA_OFFSET) && gamma == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: NK_NORM_GAMMA_OFFSET needs gamma", op);
  if (d->lns_scale != 0.0f) /* LayerNorm Scaling is a kernel variant of the row norms only */
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: lns_scale %g is not supported (0 only)", op,
                    (double)d->lns_scale);
  if (d->rows == 0 || d->cols == 0) return nk__ok(ctx);
  if (x == NULL || y == NULL || m == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: x, y and moments are required", op);
  const size_t pe = nk_dtype_size(d->param_dtype);
  span s[7];
  TRY(nk__tensor_span(ctx, op, &s[0], "x", x, d->x_stride, d->rows, d->cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "y", y, d->y_stride, d->rows, d->cols, d->dtype, 1));
  TRY(nk__vector_span(ctx, op, &s[2], "gamma", gamma, d->cols, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[3], "beta", beta, d->cols, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[4], "moments", m, d->rows, sizeof(nk_moments), 0));
  TRY(nk__vector_span(ctx, op, &s[5], "mean", is_rms ? NULL : mean, d->rows, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[6], "rstd", rstd, d->rows, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 7, rowmom_alias_ok));
  for (size_t r = 0; r < d->rows; r++)
    if (!(m[r].count >= 1.0))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: moments[%zu].count %g < 1", op, r,
                      m[r].count);
  rowmom_job j = {nk__chnorm_kernels(ctx), d, is_rms, m, x, gamma, beta, y,
                  is_rms ? NULL : mean, rstd};
  nk_parallelize_1d(nk__context_pool(ctx), rowmom_task, &j, d->rows, 1 + 16384 / d->cols);
  return nk__ok(ctx);
}

nk_status nk_layernorm_fwd_moments(nk_context *ctx, const nk_layernorm_desc *desc,
                                   const nk_moments *moments, const void *x, const void *gamma,
                                   const void *beta, void *y, float *mean, float *rstd) {
  return rownorm_moments(ctx, 0, desc, moments, x, gamma, beta, y, mean, rstd);
}

nk_status nk_rmsnorm_fwd_moments(nk_context *ctx, const nk_rmsnorm_desc *desc,
                                 const nk_moments *moments, const void *x, const void *gamma,
                                 const void *beta, void *y, float *rstd) {
  return rownorm_moments(ctx, 1, desc, moments, x, gamma, beta, y, NULL, rstd);
}
