/* quant-ops.h — the engine shared by the normq operators (src/ops/quant.c, src/ops/fakeln.c):
 * runs the selected normq kernel over a row range, split over the pool. Not installed. */
#ifndef NK_OPS_QUANT_OPS_H
#define NK_OPS_QUANT_OPS_H

#include "kernels/quant/quant.h"
#include "validate.h"

typedef struct nk__normq_call {
  const char *op;
  size_t rows, cols, row_begin, row_end;
  int use_pool;
  nk_dtype dtype;
  const void *x, *r;
  void *h, *out;
  ptrdiff_t x_stride, r_stride, h_stride, out_stride, exp_stride;
  float *scale;
  int8_t *exps;
  float *mean, *rstd;
  nk_normq_params params;
} nk__normq_call;

/* Runs a validated call: selects the kernel for the context's ISA, splits [row_begin, row_end)
 * over the pool (use_pool) or runs it on the caller's thread. Rows are independent, so the
 * split changes no bit. Returns OK or UNSUPPORTED (no kernel for the dtype). */
nk_status nk__normq_run(nk_context *ctx, const nk__normq_call *c);

/* An int8 tensor span (rows x cols, stride in elements) for the overlap checks. */
nk_status nk__int8_span(nk_context *ctx, const char *op, span *s, const char *name,
                        const void *ptr, ptrdiff_t stride, size_t rows, size_t cols);

/* Validates and runs a normalizing forward (LayerNorm, RMSNorm or FakeLN statistics) writing
 * y (q8 == NULL and want_y) or the q8 formats. */
nk_status nk__normq_forward(nk_context *ctx, const char *op, int stat, const nk_norm_desc *d,
                            const nk_q8_desc *q8, int want_y, size_t row_begin, size_t row_end,
                            int use_pool, float sigma_bar, const void *x, const void *r,
                            const void *gamma, const void *beta, void *out, float *scale,
                            int8_t *exps, void *h, float *mean, float *rstd);

#endif /* NK_OPS_QUANT_OPS_H */
