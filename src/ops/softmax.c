/*
 * softmax.c — the softmax-family operators: softmax / log-softmax forward and backward with
 * the attention options, sigmoid attention scores, fused cross-entropy. Validate, form the
 * per-row parameters (mask row, query position, causal length, sink), choose a kernel, split
 * rows over the thread pool. No intrinsics here.
 *
 * Determinism: every output of a row depends on that row only, so any split of rows over
 * threads gives the same bits. The cross-entropy's reduced loss is summed in double in row
 * order by the calling thread after the rows are done.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "convert.h"
#include "dispatch.h"
#include "internal.h"
#include "op-checks.h"
#include "validate.h"


/* AUTO (measured on this project's machine, docs/ops/softmax.md and bench/NOTES.md): f32
 * outputs of less than NK_NONTEMPORAL_BYTES use three-pass reload (one exp per element; its
 * extra pass over y stays in cache), larger ones — and 16-bit outputs, which reload cannot
 * hold — three-pass recompute (reload's second pass then costs a read-for-ownership of y from
 * memory; two-pass and online need as many exps as recompute and more work per element). */

static const uint32_t known_flags =
    NK_SOFTMAX_LOG | NK_SOFTMAX_CAUSAL | NK_SOFTMAX_MASKED_NAN | NK_SOFTMAX_SINK_PER_HEAD;

static const char *const algo_names[NK_SOFTMAX_ALGO_COUNT] = {
    "auto", "three_pass_reload", "three_pass_recompute", "two_pass", "online"};

const char *nk_softmax_algo_name(nk_softmax_algo algo) {
  return (unsigned)algo < NK_SOFTMAX_ALGO_COUNT ? algo_names[algo] : "?";
}

static int output_is_large(size_t rows, size_t cols, nk_dtype dt);

nk_softmax_algo nk__softmax_auto_algo(size_t rows, size_t cols, nk_dtype dtype, int log) {
  /* Both choices are three-pass, whose dominant term is exact (z - m = 0), so log_softmax of
   * one column is exactly 0 (the two-pass lse carries exp's rounding of that term). */
  (void)log;
  if (dtype == NK_DTYPE_F32 && !output_is_large(rows, cols, dtype))
    return NK_SOFTMAX_THREE_PASS_RELOAD;
  return NK_SOFTMAX_THREE_PASS_RECOMPUTE;
}

/* The forward algorithm a (validated) descriptor runs: its own, or AUTO's choice. */
static nk_softmax_algo fwd_algo(const nk_softmax_desc *d) {
  if (d->algo != NK_SOFTMAX_AUTO) return d->algo;
  return nk__softmax_auto_algo(d->rows, d->cols, d->dtype, (d->flags & NK_SOFTMAX_LOG) != 0);
}

nk_softmax_desc nk_softmax_desc_dense(size_t rows, size_t cols, nk_dtype dtype) {
  nk_softmax_desc d;
  memset(&d, 0, sizeof d);
  d.rows = rows;
  d.cols = cols;
  d.dtype = dtype;
  d.mask_dtype = NK_DTYPE_F32;
  d.scale = 1.0f;
  d.x_stride = d.y_stride = d.mask_stride = d.dy_stride = d.dx_stride = (ptrdiff_t)cols;
  return d;
}

nk_cross_entropy_desc nk_cross_entropy_desc_dense(size_t rows, size_t cols, nk_dtype dtype) {
  nk_cross_entropy_desc d;
  memset(&d, 0, sizeof d);
  d.rows = rows;
  d.cols = cols;
  d.dtype = dtype;
  d.reduction = NK_REDUCTION_MEAN;
  d.ignore_index = -100;
  d.grad = 1.0f;
  d.x_stride = d.dx_stride = (ptrdiff_t)cols;
  return d;
}

static int output_is_large(size_t rows, size_t cols, nk_dtype dt) {
  size_t bytes = 0;
  return nk__mul_size(rows, cols, &bytes) && nk__mul_size(bytes, nk_dtype_size(dt), &bytes) &&
         bytes >= NK_NONTEMPORAL_BYTES;
}

static void *row_at(void *p, size_t row, ptrdiff_t stride, nk_dtype dt) {
  return (void *)offset_rows(p, row, stride, dt);
}

/* ---- softmax: descriptor checks and per-row parameters ------------------------------------ */

static size_t mask_rows_of(const nk_softmax_desc *d) { return d->mask_rows ? d->mask_rows : d->rows; }
static size_t q_len_of(const nk_softmax_desc *d) { return d->q_len ? d->q_len : d->rows; }
static size_t heads_of(const nk_softmax_desc *d) { return d->heads ? d->heads : 1; }

/* Checks shared by the forward, backward and sigmoid calls. */
nk_status nk__check_softmax_desc(nk_context *ctx, const char *op, const nk_softmax_desc *d) {
  if (d == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  if (!dtype_known(d->dtype))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown dtype %d", op, (int)d->dtype);
  if (!dtype_known(d->mask_dtype))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown mask_dtype %d", op,
                    (int)d->mask_dtype);
  if (!isfinite(d->scale) || d->scale == 0.0f)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: scale %g must be finite and != 0", op,
                    (double)d->scale);
  if (!isfinite(d->alibi))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: alibi %g must be finite", op,
                    (double)d->alibi);
  if (d->flags & ~known_flags)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown flags 0x%x", op,
                    (unsigned)(d->flags & ~known_flags));
  if (d->causal_offset > ((ptrdiff_t)1 << 62) || d->causal_offset < -((ptrdiff_t)1 << 62))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: causal_offset %td outside +-2^62", op,
                    d->causal_offset);
  if ((unsigned)d->algo >= NK_SOFTMAX_ALGO_COUNT)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown algo %d", op, (int)d->algo);
  if (d->alibi != 0.0f && d->cols > (size_t)INT32_MAX)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED,
                    "%s: ALiBi needs cols <= 2^31 - 1 (positions are formed in 32-bit integers)",
                    op);
  return NK_STATUS_OK;
}

/* The row-dependent inputs of row i: mask row, query position, causal length, sink. */
typedef struct row_info {
  const void *mask;
  size_t n_valid;
  float pos;
  float sink;
  int has_sink;
} row_info;

static row_info softmax_row_info(const nk_softmax_desc *d, size_t i, const void *mask,
                                 const float *sink) {
  row_info r;
  const size_t q = i % q_len_of(d);
  /* p_i = causal_offset + q, in ptrdiff_t (validated not to overflow: q < rows). */
  const ptrdiff_t p = d->causal_offset + (ptrdiff_t)q;
  r.pos = (float)p;
  r.n_valid = d->cols;
  if (d->flags & NK_SOFTMAX_CAUSAL) {
    if (p < 0)
      r.n_valid = 0;
    else if ((size_t)p < d->cols)
      r.n_valid = (size_t)p + 1;
  }
  r.mask = NULL;
  if (mask != NULL) {
    const size_t mr = mask_rows_of(d);
    const ptrdiff_t ms = mr == 1 ? 0 : d->mask_stride;
    r.mask = offset_rows(mask, i % mr, ms, d->mask_dtype);
  }
  r.has_sink = sink != NULL;
  r.sink = 0.0f;
  if (sink != NULL)
    r.sink = (d->flags & NK_SOFTMAX_SINK_PER_HEAD) ? sink[(i / q_len_of(d)) % heads_of(d)]
                                                   : sink[i];
  return r;
}

/* ---- softmax forward ---------------------------------------------------------------------- */

typedef struct fwd_job {
  nk_softmax_fwd_fn fn;
  const nk_softmax_desc *d;
  const void *x, *mask;
  const float *sink;
  void *y;
  float *lse;
  int nontemporal;
} fwd_job;

static void fwd_task(void *arg, size_t start, size_t count) {
  const fwd_job *j = arg;
  const nk_softmax_desc *d = j->d;
  for (size_t i = start; i < start + count; i++) {
    const row_info ri = softmax_row_info(d, i, j->mask, j->sink);
    nk_softmax_row row = {
        .x = offset_rows(j->x, i, d->x_stride, d->dtype),
        .y = row_at(j->y, i, d->y_stride, d->dtype),
        .mask = ri.mask,
        .mask_dtype = d->mask_dtype,
        .n = d->cols,
        .n_valid = ri.n_valid,
        .scale = d->scale,
        .alibi = d->alibi,
        .pos = ri.pos,
        .sink = ri.sink,
        .has_sink = ri.has_sink,
        .log = (d->flags & NK_SOFTMAX_LOG) != 0,
        .masked_nan = (d->flags & NK_SOFTMAX_MASKED_NAN) != 0,
        .nontemporal = j->nontemporal,
        .lse = j->lse ? j->lse + i : NULL,
    };
    j->fn(&row);
  }
}

/* Validates the buffers shared by the softmax calls: the mask and the sink. */
nk_status nk__check_mask_sink(nk_context *ctx, const char *op, const nk_softmax_desc *d,
                              const void *mask, const float *sink, span *s_mask,
                              span *s_sink) {
  const size_t mr = mask_rows_of(d);
  TRY(nk__tensor_span(ctx, op, s_mask, "mask", mask, mr == 1 ? (ptrdiff_t)d->cols : d->mask_stride,
                      mr, d->cols, d->mask_dtype, 0));
  const size_t nsink = (d->flags & NK_SOFTMAX_SINK_PER_HEAD) ? heads_of(d) : d->rows;
  return nk__vector_span(ctx, op, s_sink, "sink", sink, nsink, sizeof(float), 0);
}

int nk__softmax_fwd_alias_ok(const span *out, const span *other) {
  return nk__span_is(out, "y") && nk__span_is(other, "x");
}

static nk_status softmax_fwd(nk_context *ctx, const nk_softmax_desc *d, size_t row_begin,
                             size_t row_end, int use_pool, const void *x, const void *mask,
                             const float *sink, void *y, float *lse) {
  const char *op = (d && (d->flags & NK_SOFTMAX_LOG)) ? "log_softmax_fwd" : "softmax_fwd";
  TRY(nk__check_softmax_desc(ctx, op, d));
  TRY(nk__check_row_range(ctx, op, row_begin, row_end, d->rows));
  if (d->rows == 0 || d->cols == 0 || row_begin == row_end) return nk__ok(ctx);
  if (x == NULL || y == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, x ? "y" : "x");
  const nk_softmax_algo algo = fwd_algo(d);
  if (algo == NK_SOFTMAX_THREE_PASS_RELOAD && d->dtype != NK_DTYPE_F32)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED,
                    "%s: three_pass_reload keeps exp values in y and needs y in f32, not %s", op,
                    nk_dtype_name(d->dtype));
  span s[5];
  TRY(nk__tensor_span(ctx, op, &s[0], "x", x, d->x_stride, d->rows, d->cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "y", y, d->y_stride, d->rows, d->cols, d->dtype, 1));
  TRY(nk__check_mask_sink(ctx, op, d, mask, sink, &s[2], &s[3]));
  TRY(nk__vector_span(ctx, op, &s[4], "lse", lse, d->rows, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 5, nk__softmax_fwd_alias_ok));

  const nk_softmax_entry *e = nk__select_softmax(nk__context_isa(ctx), NK_SMK_FWD, algo, d->dtype);
  if (e == NULL)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: no %s kernel for dtype %s", op,
                    nk_softmax_algo_name(algo), nk_dtype_name(d->dtype));
  /* Streaming stores for large outputs, except for reload rows longer than the kernels' exp
   * buffer: their last pass rewrites lines of y that the second pass left dirty in L1/L2, and
   * a streaming store to a cached dirty line costs a write-back plus the stream (measured at
   * 65536 x 4096 f32, 1 thread, before the buffer: 5.8 GB/s with, 7.3 without; the other
   * algorithms lose 15% without). */
  fwd_job job = {(nk_softmax_fwd_fn)e->fn, d, x, mask, sink, y, lse,
                 (algo != NK_SOFTMAX_THREE_PASS_RELOAD || d->cols <= NK_SOFTMAX_SCRATCH) &&
                     output_is_large(d->rows, d->cols, d->dtype)};
  nk_threadpool *pool = use_pool ? nk__context_pool(ctx) : NULL;
  const size_t n = row_end - row_begin, nthreads = nk_threadpool_size(pool);
  /* Rows are independent: the tiling only balances the work. (With a pool, the range is
   * all rows: the _rows entry runs on the calling thread.) */
  if (nthreads == 1)
    fwd_task(&job, row_begin, n);
  else
    nk_parallelize_1d(pool, fwd_task, &job, n, ceil_div(n, 4 * nthreads));
  return nk__ok(ctx);
}

nk_status nk_softmax_fwd(nk_context *ctx, const nk_softmax_desc *desc, const void *x,
                         const void *mask, const float *sink, void *y, float *lse) {
  return softmax_fwd(ctx, desc, 0, desc ? desc->rows : 0, 1, x, mask, sink, y, lse);
}

nk_status nk_softmax_fwd_rows(nk_context *ctx, const nk_softmax_desc *desc, size_t row_begin,
                              size_t row_end, const void *x, const void *mask, const float *sink,
                              void *y, float *lse) {
  return softmax_fwd(ctx, desc, row_begin, row_end, 0, x, mask, sink, y, lse);
}

const char *nk_softmax_kernel_name(const nk_context *ctx, const nk_softmax_desc *d) {
  if (d == NULL || !dtype_known(d->dtype) || (unsigned)d->algo >= NK_SOFTMAX_ALGO_COUNT)
    return NULL;
  const nk_softmax_algo algo = fwd_algo(d);
  const nk_softmax_entry *e = nk__select_softmax(nk__context_isa(ctx), NK_SMK_FWD, algo, d->dtype);
  return e ? e->name : NULL;
}

/* ---- softmax backward --------------------------------------------------------------------- */

typedef struct bwd_job {
  nk_softmax_bwd_fn fn;
  const nk_softmax_desc *d;
  const void *y, *dy;
  const float *sink, *lse;
  void *dx;
  float *dsink;
  int nontemporal;
} bwd_job;

static void bwd_task(void *arg, size_t start, size_t count) {
  const bwd_job *j = arg;
  const nk_softmax_desc *d = j->d;
  for (size_t i = start; i < start + count; i++) {
    double dot = 0.0;
    nk_softmax_bwd_row row = {
        .y = offset_rows(j->y, i, d->y_stride, d->dtype),
        .dy = offset_rows(j->dy, i, d->dy_stride, d->dtype),
        .dx = row_at(j->dx, i, d->dx_stride, d->dtype),
        .n = d->cols,
        .scale = d->scale,
        .log = (d->flags & NK_SOFTMAX_LOG) != 0,
        .nontemporal = j->nontemporal,
        .dot = &dot,
    };
    j->fn(&row);
    if (j->dsink != NULL) {
      /* dsink_i = -p0_i * dot, p0_i = e^{s_i - lse_i} (0 when lse is +-inf or NaN handled by
       * IEEE: a NaN lse or dot gives NaN). */
      const row_info ri = softmax_row_info(d, i, NULL, j->sink);
      const double p0 = exp((double)ri.sink - (double)j->lse[i]);
      j->dsink[i] = (float)(-p0 * dot);
    }
  }
}

int nk__softmax_bwd_alias_ok(const span *out, const span *other) {
  return nk__span_is(out, "dx") && (nk__span_is(other, "dy") || nk__span_is(other, "y"));
}

static nk_status softmax_bwd(nk_context *ctx, const nk_softmax_desc *d, size_t row_begin,
                             size_t row_end, int use_pool, const void *y, const void *dy,
                             const float *sink, const float *lse, void *dx, float *dsink) {
  const char *op = (d && (d->flags & NK_SOFTMAX_LOG)) ? "log_softmax_bwd" : "softmax_bwd";
  TRY(nk__check_softmax_desc(ctx, op, d));
  TRY(nk__check_row_range(ctx, op, row_begin, row_end, d->rows));
  if (d->rows == 0 || d->cols == 0 || row_begin == row_end) return nk__ok(ctx);
  if (y == NULL || dy == NULL || dx == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op,
                    y == NULL ? "y" : dy == NULL ? "dy" : "dx");
  if (dsink != NULL && (sink == NULL || lse == NULL))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: dsink needs sink and lse", op);
  span s[7];
  TRY(nk__tensor_span(ctx, op, &s[0], "y", y, d->y_stride, d->rows, d->cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "dy", dy, d->dy_stride, d->rows, d->cols, d->dtype, 0));
  TRY(nk__tensor_span(ctx, op, &s[2], "dx", dx, d->dx_stride, d->rows, d->cols, d->dtype, 1));
  span unused;
  TRY(nk__check_mask_sink(ctx, op, d, NULL, sink, &unused, &s[3]));
  TRY(nk__vector_span(ctx, op, &s[4], "lse", lse, d->rows, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[5], "dsink", dsink, d->rows, sizeof(float), 1));
  s[6] = (span){"none", NULL, 0, 0, 0, 0, 0};
  TRY(nk__check_overlaps(ctx, op, s, 7, nk__softmax_bwd_alias_ok));

  const nk_softmax_entry *e =
      nk__select_softmax(nk__context_isa(ctx), NK_SMK_BWD, NK_SOFTMAX_AUTO, d->dtype);
  if (e == NULL)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: no kernel for dtype %s", op,
                    nk_dtype_name(d->dtype));
  bwd_job job = {(nk_softmax_bwd_fn)e->fn, d, y, dy, sink, lse, dx, dsink,
                 output_is_large(d->rows, d->cols, d->dtype)};
  nk_threadpool *pool = use_pool ? nk__context_pool(ctx) : NULL;
  const size_t n = row_end - row_begin, nthreads = nk_threadpool_size(pool);
  if (nthreads == 1)
    bwd_task(&job, row_begin, n);
  else
    nk_parallelize_1d(pool, bwd_task, &job, n, ceil_div(n, 4 * nthreads));
  return nk__ok(ctx);
}

nk_status nk_softmax_bwd(nk_context *ctx, const nk_softmax_desc *desc, const void *y,
                         const void *dy, const float *sink, const float *lse, void *dx,
                         float *dsink) {
  return softmax_bwd(ctx, desc, 0, desc ? desc->rows : 0, 1, y, dy, sink, lse, dx, dsink);
}

nk_status nk_softmax_bwd_rows(nk_context *ctx, const nk_softmax_desc *desc, size_t row_begin,
                              size_t row_end, const void *y, const void *dy, const float *sink,
                              const float *lse, void *dx, float *dsink) {
  return softmax_bwd(ctx, desc, row_begin, row_end, 0, y, dy, sink, lse, dx, dsink);
}

/* ---- sigmoid attention scores ------------------------------------------------------------- */

typedef struct sig_job {
  nk_sigmoid_fn fn;
  const nk_softmax_desc *d;
  const void *x, *dy, *mask;
  void *y;
  int bwd, nontemporal;
} sig_job;

static void sig_task(void *arg, size_t start, size_t count) {
  const sig_job *j = arg;
  const nk_softmax_desc *d = j->d;
  for (size_t i = start; i < start + count; i++) {
    const row_info ri = softmax_row_info(d, i, j->mask, NULL);
    nk_sigmoid_row row = {
        .x = offset_rows(j->x, i, j->bwd ? d->y_stride : d->x_stride, d->dtype),
        .dy = j->bwd ? offset_rows(j->dy, i, d->dy_stride, d->dtype) : NULL,
        .y = row_at(j->y, i, j->bwd ? d->dx_stride : d->y_stride, d->dtype),
        .mask = ri.mask,
        .mask_dtype = d->mask_dtype,
        .n = d->cols,
        .n_valid = j->bwd ? d->cols : ri.n_valid,
        .scale = d->scale,
        .alibi = d->alibi,
        .pos = ri.pos,
        .nontemporal = j->nontemporal,
    };
    j->fn(&row);
  }
}

static nk_status sigmoid_run(nk_context *ctx, int bwd, const nk_softmax_desc *d, const void *x,
                             const void *mask, const void *dy, void *y) {
  const char *op = bwd ? "sigmoid_attn_bwd" : "sigmoid_attn_fwd";
  TRY(nk__check_softmax_desc(ctx, op, d));
  if (d->rows == 0 || d->cols == 0) return nk__ok(ctx);
  if (x == NULL || y == NULL || (bwd && dy == NULL))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op,
                    x == NULL ? (bwd ? "y" : "x") : y == NULL ? (bwd ? "dx" : "y") : "dy");
  span s[4];
  if (bwd) {
    TRY(nk__tensor_span(ctx, op, &s[0], "y", x, d->y_stride, d->rows, d->cols, d->dtype, 0));
    TRY(nk__tensor_span(ctx, op, &s[1], "dy", dy, d->dy_stride, d->rows, d->cols, d->dtype, 0));
    TRY(nk__tensor_span(ctx, op, &s[2], "dx", y, d->dx_stride, d->rows, d->cols, d->dtype, 1));
    s[3] = (span){"none", NULL, 0, 0, 0, 0, 0};
    TRY(nk__check_overlaps(ctx, op, s, 4, nk__softmax_bwd_alias_ok));
  } else {
    TRY(nk__tensor_span(ctx, op, &s[0], "x", x, d->x_stride, d->rows, d->cols, d->dtype, 0));
    TRY(nk__tensor_span(ctx, op, &s[1], "y", y, d->y_stride, d->rows, d->cols, d->dtype, 1));
    const size_t mr = mask_rows_of(d);
    TRY(nk__tensor_span(ctx, op, &s[2], "mask", mask,
                        mr == 1 ? (ptrdiff_t)d->cols : d->mask_stride, mr, d->cols,
                        d->mask_dtype, 0));
    s[3] = (span){"none", NULL, 0, 0, 0, 0, 0};
    TRY(nk__check_overlaps(ctx, op, s, 4, nk__softmax_fwd_alias_ok));
  }
  const nk_softmax_entry *e = nk__select_softmax(
      nk__context_isa(ctx), bwd ? NK_SMK_SIGMOID_BWD : NK_SMK_SIGMOID_FWD, NK_SOFTMAX_AUTO,
      d->dtype);
  if (e == NULL)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: no kernel for dtype %s", op,
                    nk_dtype_name(d->dtype));
  sig_job job = {(nk_sigmoid_fn)e->fn, d, x, dy, bwd ? NULL : mask, y, bwd,
                 output_is_large(d->rows, d->cols, d->dtype)};
  nk_threadpool *pool = nk__context_pool(ctx);
  const size_t nthreads = nk_threadpool_size(pool);
  if (nthreads == 1)
    sig_task(&job, 0, d->rows);
  else
    nk_parallelize_1d(pool, sig_task, &job, d->rows, ceil_div(d->rows, 4 * nthreads));
  return nk__ok(ctx);
}

nk_status nk_sigmoid_attn_fwd(nk_context *ctx, const nk_softmax_desc *desc, const void *x,
                              const void *mask, void *y) {
  return sigmoid_run(ctx, 0, desc, x, mask, NULL, y);
}

nk_status nk_sigmoid_attn_bwd(nk_context *ctx, const nk_softmax_desc *desc, const void *y,
                              const void *dy, void *dx) {
  return sigmoid_run(ctx, 1, desc, y, NULL, dy, dx);
}

/* ---- cross-entropy ------------------------------------------------------------------------ */

nk_status nk__check_xent_desc(nk_context *ctx, const char *op, const nk_cross_entropy_desc *d) {
  if (d == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  if (!dtype_known(d->dtype))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown dtype %d", op, (int)d->dtype);
  if (d->reduction != NK_REDUCTION_NONE && d->reduction != NK_REDUCTION_SUM &&
      d->reduction != NK_REDUCTION_MEAN)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown reduction %d", op,
                    (int)d->reduction);
  if (!(d->label_smoothing >= 0.0f && d->label_smoothing <= 1.0f))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: label_smoothing %g outside [0, 1]", op,
                    (double)d->label_smoothing);
  if (!(d->z_loss >= 0.0f) || !isfinite(d->z_loss))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: z_loss %g must be finite and >= 0", op,
                    (double)d->z_loss);
  if (!isfinite(d->grad))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: grad %g must be finite", op,
                    (double)d->grad);
  return NK_STATUS_OK;
}

/* The workspace of a checked descriptor: sum/mean over rows >= 1 and cols >= 1 keep rows
 * doubles, plus the alignment slack (a workspace at an odd address gave misaligned double
 * stores: cross_entropy fuzz harness). 0 on size_t overflow. */
static int xent_ws_bytes(const nk_cross_entropy_desc *d, size_t *bytes) {
  *bytes = 0;
  if (d->reduction == NK_REDUCTION_NONE || d->cols == 0 || d->rows == 0) return 1;
  size_t payload;
  return nk__mul_size(d->rows, sizeof(double), &payload) && nk__ws_bytes(payload, bytes);
}

nk_status nk_cross_entropy_workspace_size(const nk_cross_entropy_desc *desc, size_t *bytes) {
  TRY(nk__check_xent_desc(NULL, "cross_entropy_workspace_size", desc));
  if (bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;
  *bytes = 0;
  return xent_ws_bytes(desc, bytes) ? NK_STATUS_OK : NK_STATUS_INVALID_ARGUMENT;
}

typedef struct xent_job {
  nk_xent_fn fn;
  const nk_cross_entropy_desc *d;
  const void *x;
  const int64_t *target;
  void *dx;
  float *loss_rows; /* reduction none */
  double *loss_ws;  /* sum / mean */
  float *lse;
  double grad_w;
  int nontemporal;
} xent_job;

static void xent_task(void *arg, size_t start, size_t count) {
  const xent_job *j = arg;
  const nk_cross_entropy_desc *d = j->d;
  for (size_t i = start; i < start + count; i++) {
    const int ignored = j->target[i] == d->ignore_index;
    void *dx = j->dx ? row_at(j->dx, i, d->dx_stride, d->dtype) : NULL;
    double loss = 0.0;
    if (!ignored || j->lse != NULL) {
      nk_xent_row row = {
          .x = offset_rows(j->x, i, d->x_stride, d->dtype),
          .dx = ignored ? NULL : dx,
          .n = d->cols,
          .target = ignored ? 0 : (size_t)j->target[i],
          .smoothing = d->label_smoothing,
          .z_loss = d->z_loss,
          .grad_w = j->grad_w,
          .nontemporal = j->nontemporal,
          .loss = &loss,
          .lse = j->lse ? j->lse + i : NULL,
      };
      j->fn(&row);
    }
    if (ignored) {
      loss = 0.0;
      if (dx != NULL) memset(dx, 0, d->cols * nk_dtype_size(d->dtype));
    }
    if (j->loss_rows) j->loss_rows[i] = (float)loss;
    if (j->loss_ws) j->loss_ws[i] = loss;
  }
}

int nk__xent_alias_ok(const span *out, const span *other) {
  return nk__span_is(out, "dx") && nk__span_is(other, "x"); /* dlogits in place */
}

nk_status nk_cross_entropy(nk_context *ctx, const nk_cross_entropy_desc *d, const void *x,
                           const int64_t *target, float *loss, void *dlogits, float *lse,
                           void *workspace, size_t workspace_size) {
  const char *op = "cross_entropy";
  TRY(nk__check_xent_desc(ctx, op, d));
  if (d->rows == 0 && d->reduction == NK_REDUCTION_NONE) return nk__ok(ctx);
  if (loss == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: loss is NULL", op);
  if (d->rows != 0 && d->cols == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: cols is 0 (no class to target)", op);
  if (d->rows != 0 && (x == NULL || target == NULL))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op,
                    x == NULL ? "x" : "target");
  size_t need;
  if (!xent_ws_bytes(d, &need))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need));
  const size_t rows = d->rows;
  span s[7];
  if (rows != 0) {
    TRY(nk__tensor_span(ctx, op, &s[0], "x", x, d->x_stride, rows, d->cols, d->dtype, 0));
    TRY(nk__tensor_span(ctx, op, &s[1], "dx", dlogits, d->dx_stride, rows, d->cols,
                        d->dtype, 1));
  } else {
    s[0] = (span){"x", NULL, 0, 0, 0, 0, 0};
    s[1] = (span){"dx", NULL, 0, 0, 0, 1, 0};
  }
  TRY(nk__vector_span(ctx, op, &s[2], "target", target, rows, sizeof(int64_t), 0));
  TRY(nk__vector_span(ctx, op, &s[3], "loss", loss,
                      d->reduction == NK_REDUCTION_NONE ? rows : 1, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "lse", lse, rows, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[5], "workspace", need ? workspace : NULL, need, 1, 1));
  s[6] = (span){"none", NULL, 0, 0, 0, 0, 0};
  TRY(nk__check_overlaps(ctx, op, s, 7, nk__xent_alias_ok));
  size_t counted = 0;
  for (size_t i = 0; i < rows; i++) {
    const int64_t t = target[i];
    if (t == d->ignore_index) continue;
    if (t < 0 || (uint64_t)t >= (uint64_t)d->cols)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                      "%s: target[%zu] = %lld outside [0, %zu) and not ignore_index %lld", op, i,
                      (long long)t, d->cols, (long long)d->ignore_index);
    counted++;
  }
  const nk_softmax_entry *e =
      nk__select_softmax(nk__context_isa(ctx), NK_SMK_XENT, NK_SOFTMAX_AUTO, d->dtype);
  if (e == NULL)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: no kernel for dtype %s", op,
                    nk_dtype_name(d->dtype));
  double grad_w = (double)d->grad;
  if (d->reduction == NK_REDUCTION_MEAN) grad_w /= (double)counted; /* inf if none: unused */
  xent_job job = {(nk_xent_fn)e->fn, d, x, target, dlogits,
                  d->reduction == NK_REDUCTION_NONE ? loss : NULL,
                  d->reduction == NK_REDUCTION_NONE
                      ? NULL
                      : (double *)nk__ws_align(workspace),
                  lse, grad_w,
                  output_is_large(rows, d->cols, d->dtype)}; /* stream dlogits, prefetch next rows */
  if (rows != 0) {
    nk_threadpool *pool = nk__context_pool(ctx);
    const size_t nthreads = nk_threadpool_size(pool);
    if (nthreads == 1)
      xent_task(&job, 0, rows);
    else
      nk_parallelize_1d(pool, xent_task, &job, rows, ceil_div(rows, 4 * nthreads));
  }
  if (d->reduction != NK_REDUCTION_NONE) {
    double sum = 0.0;
    for (size_t i = 0; i < rows; i++) sum += job.loss_ws[i];
    loss[0] = (float)(d->reduction == NK_REDUCTION_MEAN ? sum / (double)counted : sum);
  }
  return nk__ok(ctx);
}
