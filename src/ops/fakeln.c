/*
 * fakeln.c — LayerNorm removal at inference (FakeLN, Baroni et al. 2025): the calibration of the
 * frozen scale sigma_bar, the forward as a fixed affine map (through the normq kernels, see
 * quant.c), and the conversion to an unmodified LayerNorm. No intrinsics here.
 *
 * Calibration determinism: the per-row std is computed in double (two plain passes), rows are
 * cut into at most NK_FAKELN_CHUNKS chunks whose size depends only on `rows`, each chunk sums
 * its rows in order, and the chunk partials are combined in chunk order.
 */
#include <math.h>
#include <string.h>

#include "convert.h"
#include "quant-ops.h"

#define NK_FAKELN_CHUNKS 64

typedef struct cal_part {
  double sum, sum2, smin, smax;
  size_t used, nonfinite;
} cal_part;

typedef struct cal_job {
  const nk_norm_desc *d;
  const void *x, *r;
  const uint8_t *mask;
  size_t chunk_rows;
  cal_part part[NK_FAKELN_CHUNKS];
} cal_job;

static double hval(const void *x, const void *r, size_t i, nk_dtype dt) {
  if (r == NULL) return (double)nk__load_f32(x, i, dt);
  return (double)nk__round_to(nk__load_f32(x, i, dt) + nk__load_f32(r, i, dt), dt);
}

static void cal_task(void *arg, size_t c0, size_t count) {
  cal_job *j = arg;
  const nk_norm_desc *d = j->d;
  const size_t es = nk_dtype_size(d->dtype), n = d->cols;
  for (size_t c = c0; c < c0 + count; c++) {
    cal_part p = {0.0, 0.0, INFINITY, 0.0, 0, 0};
    const size_t r0 = c * j->chunk_rows;
    const size_t r1 = r0 + j->chunk_rows < d->rows ? r0 + j->chunk_rows : d->rows;
    for (size_t row = r0; row < r1; row++) {
      if (j->mask && j->mask[row] == 0) continue;
      const char *xr = (const char *)j->x + (ptrdiff_t)row * d->x_stride * (ptrdiff_t)es;
      const char *rr =
          j->r ? (const char *)j->r + (ptrdiff_t)row * d->r_stride * (ptrdiff_t)es : NULL;
      double mu = 0.0;
      for (size_t i = 0; i < n; i++) mu += hval(xr, rr, i, d->dtype);
      mu /= (double)n;
      double var = 0.0;
      for (size_t i = 0; i < n; i++) {
        const double t = hval(xr, rr, i, d->dtype) - mu;
        var += t * t;
      }
      const double s = sqrt(var / (double)n + (double)d->eps);
      if (!isfinite(s)) {
        p.nonfinite++;
        continue;
      }
      p.sum += s;
      p.sum2 += s * s;
      p.smin = s < p.smin ? s : p.smin;
      p.smax = s > p.smax ? s : p.smax;
      p.used++;
    }
    j->part[c] = p;
  }
}

nk_status nk_fakeln_calibrate(nk_context *ctx, const nk_norm_desc *desc, const void *x,
                              const void *r, const uint8_t *row_mask, float momentum,
                              float *sigma_bar, nk_fakeln_stats *stats) {
  const char *op = "fakeln_calibrate";
  if (desc == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  if (!dtype_known(desc->dtype))
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: dtype %d", op, (int)desc->dtype);
  if (!(desc->eps > 0.0f) || !isfinite(desc->eps))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: eps %g must be finite and > 0", op,
                    (double)desc->eps);
  NK_REQUIRE_PTR(sigma_bar);
  if (!(momentum >= 0.0f && momentum < 1.0f))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: momentum %g not in [0, 1)", op,
                    (double)momentum);
  if (momentum > 0.0f && !(*sigma_bar > 0.0f && isfinite(*sigma_bar)))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: the previous sigma_bar %g must be finite and > 0 with momentum", op,
                    (double)*sigma_bar);
  if (desc->rows == 0 || desc->cols == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: no rows to calibrate on", op);
  NK_REQUIRE_PTR(x);
  span s[5];
  /* the outputs must be aligned (a misaligned stats was written through: undefined behaviour) */
  TRY(nk__vector_span(ctx, op, &s[3], "sigma_bar", sigma_bar, 1, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "stats", stats, 1, sizeof(nk_fakeln_stats), 1));
  TRY(nk__tensor_span(ctx, op, &s[0], "x", x, desc->x_stride, desc->rows, desc->cols,
                      desc->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "r", r, desc->r_stride, desc->rows, desc->cols,
                      desc->dtype, 0));
  TRY(nk__vector_span(ctx, op, &s[2], "row_mask", row_mask, desc->rows, 1, 0));
  cal_job job;
  memset(&job, 0, sizeof job);
  job.d = desc;
  job.x = x;
  job.r = r;
  job.mask = row_mask;
  job.chunk_rows = ceil_div(desc->rows, NK_FAKELN_CHUNKS);
  const size_t nchunks = ceil_div(desc->rows, job.chunk_rows);
  nk_parallelize_1d(nk__context_pool(ctx), cal_task, &job, nchunks, 1);
  cal_part t = {0.0, 0.0, INFINITY, 0.0, 0, 0};
  for (size_t c = 0; c < nchunks; c++) {
    const cal_part *p = &job.part[c];
    t.sum += p->sum;
    t.sum2 += p->sum2;
    t.smin = p->smin < t.smin ? p->smin : t.smin;
    t.smax = p->smax > t.smax ? p->smax : t.smax;
    t.used += p->used;
    t.nonfinite += p->nonfinite;
  }
  if (t.used == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: no usable row (%zu masked out or not finite)", op, desc->rows);
  const double batch = t.sum / (double)t.used;
  const double est = momentum > 0.0f
                         ? (double)momentum * (double)*sigma_bar + (1.0 - (double)momentum) * batch
                         : batch;
  if (!((float)est > 0.0f) || !isfinite((float)est))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: the estimate %g is not a positive f32",
                    op, est);
  *sigma_bar = (float)est;
  if (stats) {
    const double sb = (double)*sigma_bar, n = (double)t.used;
    stats->rows_used = t.used;
    stats->rows_nonfinite = t.nonfinite;
    stats->sigma_batch = batch;
    stats->sigma_min = t.smin;
    stats->sigma_max = t.smax;
    const double a = fabs(t.smax / sb - 1.0), b = fabs(t.smin / sb - 1.0);
    stats->rel_dev_max = a > b ? a : b;
    /* mean (s/sb - 1)^2 = (sum2/sb^2 - 2 sum/sb + n) / n */
    const double ms = (t.sum2 / (sb * sb) - 2.0 * t.sum / sb + n) / n;
    stats->rel_dev_rms = sqrt(ms > 0.0 ? ms : 0.0);
  }
  return nk__ok(ctx);
}

nk_status nk_fakeln_fwd(nk_context *ctx, const nk_norm_desc *desc, float sigma_bar,
                        const void *x, const void *r, const void *gamma, const void *beta,
                        void *y, void *h, float *mean) {
  return nk__normq_forward(ctx, "fakeln_fwd", NK_NORMQ_STAT_FAKE, desc, NULL, 1, 0,
                           desc ? desc->rows : 0, 1, sigma_bar, x, r, gamma, beta, y, NULL, NULL,
                           h, mean, NULL);
}

nk_status nk_fakeln_fwd_rows(nk_context *ctx, const nk_norm_desc *desc, size_t row_begin,
                             size_t row_end, float sigma_bar, const void *x, const void *r,
                             const void *gamma, const void *beta, void *y, void *h,
                             float *mean) {
  return nk__normq_forward(ctx, "fakeln_fwd_rows", NK_NORMQ_STAT_FAKE, desc, NULL, 1, row_begin,
                           row_end, 0, sigma_bar, x, r, gamma, beta, y, NULL, NULL, h, mean,
                           NULL);
}

nk_status nk_fakeln_fwd_q8(nk_context *ctx, const nk_norm_desc *desc, const nk_q8_desc *q8,
                           float sigma_bar, const void *x, const void *r, const void *gamma,
                           const void *beta, int8_t *q, float *scale, int8_t *exps, void *h,
                           float *mean) {
  return nk__normq_forward(ctx, "fakeln_fwd_q8", NK_NORMQ_STAT_FAKE, desc, q8, 0, 0,
                           desc ? desc->rows : 0, 1, sigma_bar, x, r, gamma, beta, q, scale,
                           exps, h, mean, NULL);
}

nk_status nk_fakeln_to_layernorm(nk_context *ctx, size_t cols, float sigma_bar,
                                 const float *gamma, float *gamma_out, float *eps_out) {
  const char *op = "fakeln_to_layernorm";
  if (!(sigma_bar > 0.0f) || !isfinite(sigma_bar))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: sigma_bar %g must be finite and > 0",
                    op, (double)sigma_bar);
  NK_REQUIRE_PTR(eps_out);
  if (cols > 0) NK_REQUIRE_PTR(gamma_out);
  if (gamma && cols > 0) {
    span s[2];
    TRY(nk__vector_span(ctx, op, &s[0], "gamma", gamma, cols, sizeof(float), 0));
    TRY(nk__vector_span(ctx, op, &s[1], "gamma_out", gamma_out, cols, sizeof(float), 1));
    if (gamma != gamma_out) TRY(nk__check_overlaps(ctx, op, s, 2, nk__no_alias));
  }
  const double k = 1e6 / (double)sigma_bar;
  for (size_t i = 0; i < cols; i++) gamma_out[i] = (float)((gamma ? (double)gamma[i] : 1.0) * k);
  *eps_out = 1e12f;
  return nk__ok(ctx);
}
