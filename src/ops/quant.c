/*
 * quant.c — the fused norm + quantize operators (nk_layernorm_fwd_q8, nk_rmsnorm_fwd_q8 and
 * their row-range entries, nk_fakeln_fwd_q8 through the shared forward), normkit's
 * power-of-two group quantization (nk_pow2quant_*) and the per-row dequantize: validate,
 * choose a normq kernel, split rows over the pool. No intrinsics here.
 *
 * Determinism: every output row depends on its own input row only (the stochastic-rounding
 * hash takes the global row index), so any split of the rows gives the same bits.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "convert.h"
#include "quant-ops.h"

/* Inputs at least this large make the kernels prefetch the next row (a function of sizes). */
#define NK_NORMQ_PREFETCH_BYTES ((size_t)64 << 20)

/* ---- the engine ----------------------------------------------------------------------------- */

typedef struct normq_job {
  const nk__normq_call *c;
  nk_normq_ukernel_fn fn;
} normq_job;

static const void *at_rows(const void *p, size_t rows, ptrdiff_t stride, size_t es) {
  if (p == NULL) return NULL;
  return (const char *)p + (ptrdiff_t)rows * stride * (ptrdiff_t)es;
}

static void normq_task(void *arg, size_t start, size_t count) {
  const normq_job *j = arg;
  const nk__normq_call *c = j->c;
  const size_t es = nk_dtype_size(c->dtype);
  const size_t os = c->params.out == NK_NORMQ_OUT_Y ? es : 1;
  const size_t r0 = c->row_begin + start;
  nk_normq_params p = c->params;
  p.row0 = r0;
  j->fn(count, c->cols, at_rows(c->x, r0, c->x_stride, es), c->x_stride,
        at_rows(c->r, r0, c->r_stride, es), c->r_stride, (void *)at_rows(c->h, r0, c->h_stride, es),
        c->h_stride, (void *)at_rows(c->out, r0, c->out_stride, os), c->out_stride,
        c->scale ? c->scale + r0 : NULL, (int8_t *)at_rows(c->exps, r0, c->exp_stride, 1),
        c->exp_stride, c->mean ? c->mean + r0 : NULL, c->rstd ? c->rstd + r0 : NULL, &p);
}

nk_status nk__normq_run(nk_context *ctx, const nk__normq_call *c) {
  const nk_normq_entry *e = nk__select_normq(nk__context_isa(ctx), c->dtype);
  /* Out of cache (a function of the sizes only): the kernels prefetch the next row into L2
   * during a row's output pass, as the row-norm kernels do; it changes no result bit. */
  nk__normq_call cc = *c;
  size_t xbytes = 0;
  if (nk__mul_size(c->rows, c->cols, &xbytes) && nk__mul_size(xbytes, nk_dtype_size(c->dtype), &xbytes) &&
      xbytes >= NK_NORMQ_PREFETCH_BYTES)
    cc.params.variant |= NK_NORMQ_PREFETCH;
  /* Large float outputs are written with streaming stores, as the row norms' (NK_ROWNORM_
   * NONTEMPORAL); the int8 outputs are a quarter of the input and stay regular stores. */
  size_t ybytes = 0;
  if (c->params.out == NK_NORMQ_OUT_Y && nk__mul_size(c->rows, c->cols, &ybytes) &&
      nk__mul_size(ybytes, nk_dtype_size(c->dtype), &ybytes) && ybytes >= NK_NONTEMPORAL_BYTES)
    cc.params.variant |= NK_NORMQ_NONTEMPORAL;
  c = &cc;
  if (e == NULL)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: no kernel for dtype %s", c->op,
                    nk_dtype_name(c->dtype));
  normq_job job = {c, e->fn};
  nk_threadpool *pool = c->use_pool ? nk__context_pool(ctx) : NULL;
  const size_t n = c->row_end - c->row_begin, nthreads = nk_threadpool_size(pool);
  if (nthreads <= 1) normq_task(&job, 0, n);
  else nk_parallelize_1d(pool, normq_task, &job, n, ceil_div(n, 4 * nthreads));
  return nk__ok(ctx);
}

nk_status nk__int8_span(nk_context *ctx, const char *op, span *s, const char *name,
                        const void *ptr, ptrdiff_t stride, size_t rows, size_t cols) {
  *s = (span){name, ptr, stride, 1, 0, 1, 0};
  if (ptr == NULL) return NK_STATUS_OK;
  TRY(nk__check_stride(ctx, op, name, stride, cols));
  size_t elems;
  if (!nk__mul_size(rows - 1, (size_t)stride, &elems) || !nk__add_size(elems, cols, &elems) ||
      elems > (size_t)PTRDIFF_MAX)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: %s of %zu rows, stride %td overflows the address space", op, name, rows,
                    stride);
  s->bytes = elems;
  return NK_STATUS_OK;
}

/* h may be x or r (the same pointer and stride); nothing else may overlap an output. */
static int fwd_alias_ok(const span *out, const span *other) {
  return nk__span_is(out, "h") && (nk__span_is(other, "x") || nk__span_is(other, "r"));
}

static nk_status check_q8(nk_context *ctx, const char *op, const nk_q8_desc *q8, size_t cols,
                          const float *scale, const int8_t *exps, size_t *ngroups) {
  const nk_q8_mode mode = q8 ? q8->mode : NK_Q8_ROW_ABSMAX;
  *ngroups = 0;
  if (mode == NK_Q8_ROW_ABSMAX) {
    if (scale == NULL)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: scale is NULL (row absmax mode)", op);
    if (exps != NULL)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                      "%s: exps must be NULL in row absmax mode", op);
    return NK_STATUS_OK;
  }
  if (mode != NK_Q8_POW2_GROUPS)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown q8 mode %d", op, (int)mode);
  if (q8->group == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: group must be >= 1", op);
  if (exps == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: exps is NULL (group mode)", op);
  if (scale != NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: scale must be NULL in group mode", op);
  *ngroups = ceil_div(cols, q8->group);
  return NK_STATUS_OK;
}

static uint32_t norm_variant(const nk_norm_desc *d, const void *gamma, const void *beta) {
  uint32_t v = 0;
  if (gamma) v |= NK_NORMQ_HAS_GAMMA;
  if (beta) v |= NK_NORMQ_HAS_BETA;
  if (d->flags & NK_NORM_GAMMA_OFFSET) v |= NK_NORMQ_OFFSET;
  return v;
}

nk_status nk__normq_forward(nk_context *ctx, const char *op, int stat, const nk_norm_desc *d,
                            const nk_q8_desc *q8, int want_y, size_t row_begin, size_t row_end,
                            int use_pool, float sigma_bar, const void *x, const void *r,
                            const void *gamma, const void *beta, void *out, float *scale,
                            int8_t *exps, void *h, float *mean, float *rstd) {
  if (d == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  TRY(nk__check_dtypes(ctx, op, d->dtype, d->param_dtype));
  if (!(d->eps > 0.0f) || !isfinite(d->eps))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: eps %g must be finite and > 0", op,
                    (double)d->eps);
  if (d->flags & ~(uint32_t)NK_NORM_GAMMA_OFFSET)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unsupported flags 0x%x", op,
                    (unsigned)(d->flags & ~(uint32_t)NK_NORM_GAMMA_OFFSET));
  /* LayerNorm Scaling is not a variant of the normq kernels: reject it rather than ignore it
   * (the q8 outputs are documented as those of the float forward, which honours it). */
  if (!(d->lns_scale >= 0.0f) || !isfinite(d->lns_scale))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: lns_scale %g must be finite and >= 0",
                    op, (double)d->lns_scale);
  if (d->lns_scale != 0.0f && d->lns_scale != 1.0f)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: lns_scale %g is not supported (0 or 1 only)",
                    op, (double)d->lns_scale);
  if (stat == NK_NORMQ_STAT_FAKE && (!(sigma_bar > 0.0f) || !isfinite(sigma_bar)))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: sigma_bar %g must be finite and > 0",
                    op, (double)sigma_bar);
  TRY(nk__check_row_range(ctx, op, row_begin, row_end, d->rows));
  const size_t rows = d->rows, cols = d->cols;
  size_t ngroups = 0;
  if (!want_y) TRY(check_q8(ctx, op, q8, cols, scale, exps, &ngroups));
  if (rows == 0 || cols == 0 || row_begin == row_end) return nk__ok(ctx);
  if (x == NULL || out == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op,
                    x == NULL ? "x" : want_y ? "y" : "q");
  if (h != NULL && r == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: h is given without a residual r", op);
  if ((d->flags & NK_NORM_GAMMA_OFFSET) && gamma == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: NK_NORM_GAMMA_OFFSET needs gamma", op);
  const size_t psize = nk_dtype_size(d->param_dtype);
  span s[10];
  TRY(nk__tensor_span(ctx, op, &s[0], "x", x, d->x_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "r", r, d->r_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[2], "h", h, d->h_stride, rows, cols, d->dtype, 1));
  if (want_y) TRY(nk__tensor_span(ctx, op, &s[3], "y", out, d->y_stride, rows, cols, d->dtype, 1));
  else TRY(nk__int8_span(ctx, op, &s[3], "q", out, d->y_stride, rows, cols));
  TRY(nk__vector_span(ctx, op, &s[4], "gamma", gamma, cols, psize, 0));
  TRY(nk__vector_span(ctx, op, &s[5], "beta", beta, cols, psize, 0));
  TRY(nk__vector_span(ctx, op, &s[6], "mean", mean, rows, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[7], "rstd", rstd, rows, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[8], "scale", want_y ? NULL : scale, rows, sizeof(float), 1));
  TRY(nk__int8_span(ctx, op, &s[9], "exps", ngroups ? exps : NULL, ngroups ? q8->exp_stride : 1,
                    rows, ngroups ? ngroups : 1));
  TRY(nk__check_overlaps(ctx, op, s, 10, fwd_alias_ok));

  nk__normq_call c;
  memset(&c, 0, sizeof c);
  c.op = op;
  c.rows = rows;
  c.cols = cols;
  c.row_begin = row_begin;
  c.row_end = row_end;
  c.use_pool = use_pool;
  c.dtype = d->dtype;
  c.x = x;
  c.r = r;
  c.h = h;
  c.out = out;
  c.x_stride = d->x_stride;
  c.r_stride = d->r_stride;
  c.h_stride = d->h_stride;
  c.out_stride = d->y_stride;
  c.scale = want_y ? NULL : scale;
  c.exps = ngroups ? exps : NULL;
  c.exp_stride = ngroups ? q8->exp_stride : 0;
  c.mean = stat == NK_NORMQ_STAT_RMS ? NULL : mean;
  c.rstd = stat == NK_NORMQ_STAT_FAKE ? NULL : rstd;
  c.params.gamma = gamma;
  c.params.beta = beta;
  c.params.param_dtype = d->param_dtype;
  c.params.variant = norm_variant(d, gamma, beta);
  c.params.stat = stat;
  c.params.out = want_y ? NK_NORMQ_OUT_Y : ngroups ? NK_NORMQ_OUT_POW2 : NK_NORMQ_OUT_ROW;
  c.params.eps = d->eps;
  c.params.inv_sigma = stat == NK_NORMQ_STAT_FAKE ? (float)(1.0 / (double)sigma_bar) : 1.0f;
  c.params.qmax = 127;
  c.params.group = ngroups ? q8->group : 0;
  return nk__normq_run(ctx, &c);
}

/* ---- fused norm + quantize -------------------------------------------------------------- */

nk_status nk_layernorm_fwd_q8(nk_context *ctx, const nk_layernorm_desc *desc,
                              const nk_q8_desc *q8, const void *x, const void *r,
                              const void *gamma, const void *beta, int8_t *q, float *scale,
                              int8_t *exps, void *h, float *mean, float *rstd) {
  return nk__normq_forward(ctx, "layernorm_fwd_q8", NK_NORMQ_STAT_LN, desc, q8, 0, 0,
                           desc ? desc->rows : 0, 1, 0.0f, x, r, gamma, beta, q, scale, exps, h,
                           mean, rstd);
}

nk_status nk_layernorm_fwd_q8_rows(nk_context *ctx, const nk_layernorm_desc *desc,
                                   const nk_q8_desc *q8, size_t row_begin, size_t row_end,
                                   const void *x, const void *r, const void *gamma,
                                   const void *beta, int8_t *q, float *scale, int8_t *exps,
                                   void *h, float *mean, float *rstd) {
  return nk__normq_forward(ctx, "layernorm_fwd_q8_rows", NK_NORMQ_STAT_LN, desc, q8, 0,
                           row_begin, row_end, 0, 0.0f, x, r, gamma, beta, q, scale, exps, h,
                           mean, rstd);
}

nk_status nk_rmsnorm_fwd_q8(nk_context *ctx, const nk_rmsnorm_desc *desc, const nk_q8_desc *q8,
                            const void *x, const void *r, const void *gamma, const void *beta,
                            int8_t *q, float *scale, int8_t *exps, void *h, float *rstd) {
  return nk__normq_forward(ctx, "rmsnorm_fwd_q8", NK_NORMQ_STAT_RMS, desc, q8, 0, 0,
                           desc ? desc->rows : 0, 1, 0.0f, x, r, gamma, beta, q, scale, exps, h,
                           NULL, rstd);
}

nk_status nk_rmsnorm_fwd_q8_rows(nk_context *ctx, const nk_rmsnorm_desc *desc,
                                 const nk_q8_desc *q8, size_t row_begin, size_t row_end,
                                 const void *x, const void *r, const void *gamma,
                                 const void *beta, int8_t *q, float *scale, int8_t *exps,
                                 void *h, float *rstd) {
  return nk__normq_forward(ctx, "rmsnorm_fwd_q8_rows", NK_NORMQ_STAT_RMS, desc, q8, 0,
                           row_begin, row_end, 0, 0.0f, x, r, gamma, beta, q, scale, exps, h,
                           NULL, rstd);
}

/* ---- per-row dequantize ------------------------------------------------------------------ */

nk_status nk_dequantize_q8(nk_context *ctx, size_t rows, size_t cols, const int8_t *q,
                           ptrdiff_t q_stride, const float *scale, nk_dtype y_dtype, void *y,
                           ptrdiff_t y_stride) {
  const char *op = "dequantize_q8";
  if (!dtype_known(y_dtype))
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: y dtype %d", op, (int)y_dtype);
  if (rows == 0 || cols == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(q);
  NK_REQUIRE_PTR(scale);
  NK_REQUIRE_PTR(y);
  span s[3];
  TRY(nk__int8_span(ctx, op, &s[0], "q", q, q_stride, rows, cols));
  s[0].output = 0;
  TRY(nk__vector_span(ctx, op, &s[1], "scale", scale, rows, sizeof(float), 0));
  TRY(nk__tensor_span(ctx, op, &s[2], "y", y, y_stride, rows, cols, y_dtype, 1));
  TRY(nk__check_overlaps(ctx, op, s, 3, nk__no_alias));
  const size_t es = nk_dtype_size(y_dtype);
  for (size_t i = 0; i < rows; i++) {
    const int8_t *qr = q + (ptrdiff_t)i * q_stride;
    void *yr = (char *)y + (ptrdiff_t)i * y_stride * (ptrdiff_t)es;
    for (size_t j = 0; j < cols; j++) nk__store_f32(yr, j, (float)qr[j] * scale[i], y_dtype);
  }
  return nk__ok(ctx);
}

/* ---- power-of-two group quantization ------------------------------------------------------ */

nk_pow2quant_desc nk_pow2quant_desc_dense(size_t rows, size_t cols, nk_dtype dtype) {
  nk_pow2quant_desc d;
  memset(&d, 0, sizeof d);
  d.rows = rows;
  d.cols = cols;
  d.dtype = dtype;
  d.group = 32;
  d.bits = 8;
  d.x_stride = (ptrdiff_t)cols;
  d.q_stride = (ptrdiff_t)cols;
  d.exp_stride = (ptrdiff_t)ceil_div(cols, 32);
  return d;
}

static nk_status check_p2(nk_context *ctx, const char *op, const nk_pow2quant_desc *d) {
  if (d == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  if (!dtype_known(d->dtype))
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: dtype %d", op, (int)d->dtype);
  if (d->group == 0) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: group must be >= 1", op);
  if (d->bits < 2 || d->bits > 8)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: bits %u not in [2, 8]", op, d->bits);
  if (d->flags & ~(uint32_t)NK_POW2QUANT_STOCHASTIC)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown flags 0x%x", op,
                    (unsigned)(d->flags & ~(uint32_t)NK_POW2QUANT_STOCHASTIC));
  return NK_STATUS_OK;
}

static nk_status p2_quantize(nk_context *ctx, const char *op, const nk_pow2quant_desc *d,
                             size_t row_begin, size_t row_end, int use_pool, const void *x,
                             int8_t *q, int8_t *exps) {
  TRY(check_p2(ctx, op, d));
  TRY(nk__check_row_range(ctx, op, row_begin, row_end, d->rows));
  if (d->rows == 0 || d->cols == 0 || row_begin == row_end) return nk__ok(ctx);
  NK_REQUIRE_PTR(x);
  NK_REQUIRE_PTR(q);
  NK_REQUIRE_PTR(exps);
  const size_t ng = ceil_div(d->cols, d->group);
  span s[3];
  TRY(nk__tensor_span(ctx, op, &s[0], "x", x, d->x_stride, d->rows, d->cols, d->dtype, 0));
  TRY(nk__int8_span(ctx, op, &s[1], "q", q, d->q_stride, d->rows, d->cols));
  TRY(nk__int8_span(ctx, op, &s[2], "exps", exps, d->exp_stride, d->rows, ng));
  TRY(nk__check_overlaps(ctx, op, s, 3, nk__no_alias));
  nk__normq_call c;
  memset(&c, 0, sizeof c);
  c.op = op;
  c.rows = d->rows;
  c.cols = d->cols;
  c.row_begin = row_begin;
  c.row_end = row_end;
  c.use_pool = use_pool;
  c.dtype = d->dtype;
  c.x = x;
  c.x_stride = d->x_stride;
  c.out = q;
  c.out_stride = d->q_stride;
  c.exps = exps;
  c.exp_stride = d->exp_stride;
  c.params.param_dtype = NK_DTYPE_F32;
  c.params.variant = (d->flags & NK_POW2QUANT_STOCHASTIC) ? NK_NORMQ_STOCHASTIC : 0;
  c.params.stat = NK_NORMQ_STAT_NONE;
  c.params.out = NK_NORMQ_OUT_POW2;
  c.params.eps = 1.0f;
  c.params.inv_sigma = 1.0f;
  c.params.qmax = (1 << (d->bits - 1)) - 1;
  c.params.group = d->group;
  c.params.seed = d->seed;
  return nk__normq_run(ctx, &c);
}

nk_status nk_pow2quant_quantize(nk_context *ctx, const nk_pow2quant_desc *desc, const void *x,
                                int8_t *q, int8_t *exps) {
  return p2_quantize(ctx, "pow2quant_quantize", desc, 0, desc ? desc->rows : 0, 1, x, q, exps);
}

nk_status nk_pow2quant_quantize_rows(nk_context *ctx, const nk_pow2quant_desc *desc,
                                     size_t row_begin, size_t row_end, const void *x, int8_t *q,
                                     int8_t *exps) {
  return p2_quantize(ctx, "pow2quant_quantize_rows", desc, row_begin, row_end, 0, x, q, exps);
}

nk_status nk_pow2quant_dequantize(nk_context *ctx, const nk_pow2quant_desc *desc,
                                  const int8_t *q, const int8_t *exps, void *y) {
  const char *op = "pow2quant_dequantize";
  if (desc == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  if (!dtype_known(desc->dtype))
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: dtype %d", op, (int)desc->dtype);
  if (desc->group == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: group must be >= 1", op);
  if (desc->rows == 0 || desc->cols == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(q);
  NK_REQUIRE_PTR(exps);
  NK_REQUIRE_PTR(y);
  const size_t rows = desc->rows, cols = desc->cols, G = desc->group, ng = ceil_div(cols, G);
  span s[3];
  TRY(nk__int8_span(ctx, op, &s[0], "q", q, desc->q_stride, rows, cols));
  TRY(nk__int8_span(ctx, op, &s[1], "exps", exps, desc->exp_stride, rows, ng));
  s[0].output = s[1].output = 0;
  TRY(nk__tensor_span(ctx, op, &s[2], "y", y, desc->x_stride, rows, cols, desc->dtype, 1));
  TRY(nk__check_overlaps(ctx, op, s, 3, nk__no_alias));
  const size_t es = nk_dtype_size(desc->dtype);
  for (size_t i = 0; i < rows; i++) {
    const int8_t *qr = q + (ptrdiff_t)i * desc->q_stride;
    const int8_t *er = exps + (ptrdiff_t)i * desc->exp_stride;
    void *yr = (char *)y + (ptrdiff_t)i * desc->x_stride * (ptrdiff_t)es;
    for (size_t j = 0; j < cols; j++) {
      const int e = er[j / G];
      /* 2^e by two exact factors (e may be -128..127) */
      const float v = e == NK_POW2QUANT_EXP_NAN
                          ? nk__normq_f32(0x7FC00000u)
                          : (float)qr[j] * nk__pow2_factor(-(e / 2)) * nk__pow2_factor(-(e - e / 2));
      nk__store_f32(yr, j, v, desc->dtype);
    }
  }
  return nk__ok(ctx);
}
