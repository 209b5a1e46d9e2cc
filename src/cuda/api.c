/*
 * api.c — the public CUDA entry points (normkit_cuda.h): argument validation on the host with
 * the core's rules (src/ops/validate.h: spans, strides, overlaps), then the launchers of
 * rownorm.cu and softmax.cu. Nothing here touches device memory.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cuda/launch.h"
#include "normkit_cuda.h"
#include "op-checks.h"
#include "validate.h"

static _Thread_local char last_error[256];

const char *nk_cuda_last_error(void) { return last_error; }

int nk_cuda_device_count(void) { return nk__cuda_device_count(); }

static nk_status device_status(const char *op, int err) {
  if (err == 0) return NK_STATUS_OK;
  snprintf(last_error, sizeof last_error, "%s: %s", op, nk__cuda_error_string(err));
  return NK_STATUS_DEVICE_ERROR;
}

/* ---- row norms ------------------------------------------------------------------------------ */

static nk__cuda_norm_args norm_args(int rms, const nk_norm_desc *d) {
  nk__cuda_norm_args a;
  memset(&a, 0, sizeof a);
  a.rms = rms;
  a.dtype = (int)d->dtype;
  a.param_dtype = (int)d->param_dtype;
  a.rows = d->rows;
  a.cols = d->cols;
  a.eps = d->eps;
  a.lns = d->lns_scale == 0.0f ? 1.0f : d->lns_scale;
  a.offset = (d->flags & NK_NORM_GAMMA_OFFSET) != 0;
  a.from_y = (d->flags & NK_NORM_BWD_FROM_Y) != 0;
  a.accumulate = (d->flags & NK_NORM_ACCUMULATE) != 0;
  a.x_stride = d->x_stride;
  a.r_stride = d->r_stride;
  a.y_stride = d->y_stride;
  a.h_stride = d->h_stride;
  a.dy_stride = d->dy_stride;
  a.dh_stride = d->dh_stride;
  a.dx_stride = d->dx_stride;
  return a;
}

static nk_status norm_fwd(nk_cuda_stream stream, int rms, const nk_norm_desc *d, const void *x,
                          const void *r, const void *gamma, const void *beta, void *y, void *h,
                          float *mean, float *rstd) {
  const char *op = rms ? "cuda_rmsnorm_fwd" : "cuda_layernorm_fwd";
  TRY(nk__check_norm_desc(NULL, op, d));
  if (d->rows == 0 || d->cols == 0) return NK_STATUS_OK;
  if (x == NULL || y == NULL) return NK_STATUS_INVALID_ARGUMENT;
  if (h != NULL && r == NULL) return NK_STATUS_INVALID_ARGUMENT;
  if ((d->flags & NK_NORM_GAMMA_OFFSET) && gamma == NULL) return NK_STATUS_INVALID_ARGUMENT;
  const size_t rows = d->rows, cols = d->cols;
  span s[8];
  TRY(nk__tensor_span(NULL, op, &s[0], "x", x, d->x_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(NULL, op, &s[1], "r", r, d->r_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(NULL, op, &s[2], "y", y, d->y_stride, rows, cols, d->dtype, 1));
  TRY(nk__tensor_span(NULL, op, &s[3], "h", h, d->h_stride, rows, cols, d->dtype, 1));
  TRY(nk__vector_span(NULL, op, &s[4], "gamma", gamma, cols, nk_dtype_size(d->param_dtype), 0));
  TRY(nk__vector_span(NULL, op, &s[5], "beta", beta, cols, nk_dtype_size(d->param_dtype), 0));
  TRY(nk__vector_span(NULL, op, &s[6], "mean", rms ? NULL : mean, rows, sizeof(float), 1));
  TRY(nk__vector_span(NULL, op, &s[7], "rstd", rstd, rows, sizeof(float), 1));
  TRY(nk__check_overlaps(NULL, op, s, 8, nk__norm_fwd_alias_ok));
  nk__cuda_norm_args a = norm_args(rms, d);
  a.x = x;
  a.r = r;
  a.gamma = gamma;
  a.beta = beta;
  a.y = y;
  a.h = h;
  a.mean = rms ? NULL : mean;
  a.rstd = rstd;
  return device_status(op, nk__cuda_norm_fwd(&a, stream));
}

nk_status nk_cuda_layernorm_fwd(nk_cuda_stream stream, const nk_layernorm_desc *desc,
                                const void *x, const void *r, const void *gamma, const void *beta,
                                void *y, void *h, float *mean, float *rstd) {
  return norm_fwd(stream, 0, desc, x, r, gamma, beta, y, h, mean, rstd);
}

nk_status nk_cuda_rmsnorm_fwd(nk_cuda_stream stream, const nk_rmsnorm_desc *desc, const void *x,
                              const void *r, const void *gamma, const void *beta, void *y,
                              void *h, float *rstd) {
  return norm_fwd(stream, 1, desc, x, r, gamma, beta, y, h, NULL, rstd);
}

static int norm_ws_bytes(const nk_norm_desc *d, int want, size_t *bytes) {
  if (!want || d->rows == 0 || d->cols == 0) return nk__ws_bytes(0, bytes);
  size_t bound; /* the payload is at most 1025 chunks x 2 x cols floats */
  if (!nk__mul_size(d->cols, 1025 * 2 * sizeof(float), &bound)) return 0;
  return nk__ws_bytes(nk__cuda_norm_bwd_payload(d->rows, d->cols, (int)d->dtype, 1), bytes);
}

nk_status nk_cuda_rownorm_bwd_workspace_size(const nk_norm_desc *desc, int want_params,
                                             size_t *bytes) {
  TRY(nk__check_norm_desc(NULL, "cuda_rownorm_bwd_workspace_size", desc));
  if (bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;
  return norm_ws_bytes(desc, want_params, bytes) ? NK_STATUS_OK : NK_STATUS_INVALID_ARGUMENT;
}

static nk_status norm_bwd(nk_cuda_stream stream, int rms, const nk_norm_desc *d, const void *x,
                          const void *gamma, const void *beta, const float *mean,
                          const float *rstd, const void *dy, const void *dh, void *dx,
                          void *dgamma, void *dbeta, void *workspace, size_t workspace_size) {
  const char *op = rms ? "cuda_rmsnorm_bwd" : "cuda_layernorm_bwd";
  TRY(nk__check_norm_desc(NULL, op, d));
  if (d->rows == 0 || d->cols == 0) return NK_STATUS_OK;
  const int from_y = (d->flags & NK_NORM_BWD_FROM_Y) != 0;
  if (x == NULL || dy == NULL || dx == NULL || rstd == NULL) return NK_STATUS_INVALID_ARGUMENT;
  if (!rms && !from_y && mean == NULL) return NK_STATUS_INVALID_ARGUMENT;
  if ((d->flags & NK_NORM_GAMMA_OFFSET) && gamma == NULL) return NK_STATUS_INVALID_ARGUMENT;
  const size_t rows = d->rows, cols = d->cols, psize = nk_dtype_size(d->param_dtype);
  const int want = dgamma != NULL || dbeta != NULL;
  size_t need = 0;
  if (!norm_ws_bytes(d, want, &need)) return NK_STATUS_INVALID_ARGUMENT;
  TRY(nk__check_workspace(NULL, op, workspace, workspace_size, need));
  span s[11];
  TRY(nk__tensor_span(NULL, op, &s[0], "x", x, d->x_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(NULL, op, &s[1], "dy", dy, d->dy_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(NULL, op, &s[2], "dh", dh, d->dh_stride, rows, cols, d->dtype, 0));
  TRY(nk__tensor_span(NULL, op, &s[3], "dx", dx, d->dx_stride, rows, cols, d->dtype, 1));
  TRY(nk__vector_span(NULL, op, &s[4], "gamma", gamma, cols, psize, 0));
  TRY(nk__vector_span(NULL, op, &s[5], "beta", beta, cols, psize, 0));
  TRY(nk__vector_span(NULL, op, &s[6], "mean", (rms || from_y) ? NULL : mean, rows, 4, 0));
  TRY(nk__vector_span(NULL, op, &s[7], "rstd", rstd, rows, 4, 0));
  TRY(nk__vector_span(NULL, op, &s[8], "dgamma", dgamma, cols, psize, 1));
  TRY(nk__vector_span(NULL, op, &s[9], "dbeta", dbeta, cols, psize, 1));
  TRY(nk__vector_span(NULL, op, &s[10], "workspace", need ? workspace : NULL, need, 1, 1));
  TRY(nk__check_overlaps(NULL, op, s, 11, nk__norm_bwd_alias_ok));
  nk__cuda_norm_args a = norm_args(rms, d);
  a.x = x;
  a.gamma = gamma;
  a.beta = beta;
  a.mean_in = (rms || from_y) ? NULL : mean;
  a.rstd_in = rstd;
  a.dy = dy;
  a.dh = dh;
  a.dx = dx;
  a.dgamma = dgamma;
  a.dbeta = dbeta;
  a.workspace = need ? nk__ws_align(workspace) : NULL;
  return device_status(op, nk__cuda_norm_bwd(&a, stream));
}

nk_status nk_cuda_layernorm_bwd(nk_cuda_stream stream, const nk_layernorm_desc *desc,
                                const void *x, const void *gamma, const void *beta,
                                const float *mean, const float *rstd, const void *dy,
                                const void *dh, void *dx, void *dgamma, void *dbeta,
                                void *workspace, size_t workspace_size) {
  return norm_bwd(stream, 0, desc, x, gamma, beta, mean, rstd, dy, dh, dx, dgamma, dbeta,
                  workspace, workspace_size);
}

nk_status nk_cuda_rmsnorm_bwd(nk_cuda_stream stream, const nk_rmsnorm_desc *desc, const void *x,
                              const void *gamma, const void *beta, const float *rstd,
                              const void *dy, const void *dh, void *dx, void *dgamma, void *dbeta,
                              void *workspace, size_t workspace_size) {
  return norm_bwd(stream, 1, desc, x, gamma, beta, NULL, rstd, dy, dh, dx, dgamma, dbeta,
                  workspace, workspace_size);
}

/* ---- softmax -------------------------------------------------------------------------------- */

static nk__cuda_softmax_args softmax_args(const nk_softmax_desc *d) {
  nk__cuda_softmax_args a;
  memset(&a, 0, sizeof a);
  a.dtype = (int)d->dtype;
  a.mask_dtype = (int)d->mask_dtype;
  a.rows = d->rows;
  a.cols = d->cols;
  a.scale = d->scale;
  a.alibi = d->alibi;
  a.log = (d->flags & NK_SOFTMAX_LOG) != 0;
  a.causal = (d->flags & NK_SOFTMAX_CAUSAL) != 0;
  a.masked_nan = (d->flags & NK_SOFTMAX_MASKED_NAN) != 0;
  a.sink_per_head = (d->flags & NK_SOFTMAX_SINK_PER_HEAD) != 0;
  a.q_len = d->q_len ? d->q_len : d->rows;
  a.heads = d->heads ? d->heads : 1;
  a.mask_rows = d->mask_rows ? d->mask_rows : d->rows;
  a.causal_offset = d->causal_offset;
  a.x_stride = d->x_stride;
  a.y_stride = d->y_stride;
  a.mask_stride = a.mask_rows == 1 ? (ptrdiff_t)d->cols : d->mask_stride;
  a.dy_stride = d->dy_stride;
  a.dx_stride = d->dx_stride;
  return a;
}

nk_status nk_cuda_softmax_fwd(nk_cuda_stream stream, const nk_softmax_desc *d, const void *x,
                              const void *mask, const float *sink, void *y, float *lse) {
  const char *op = "cuda_softmax_fwd";
  TRY(nk__check_softmax_desc(NULL, op, d));
  if (d->rows == 0 || d->cols == 0) return NK_STATUS_OK;
  if (x == NULL || y == NULL) return NK_STATUS_INVALID_ARGUMENT;
  span s[5];
  TRY(nk__tensor_span(NULL, op, &s[0], "x", x, d->x_stride, d->rows, d->cols, d->dtype, 0));
  TRY(nk__tensor_span(NULL, op, &s[1], "y", y, d->y_stride, d->rows, d->cols, d->dtype, 1));
  TRY(nk__check_mask_sink(NULL, op, d, mask, sink, &s[2], &s[3]));
  TRY(nk__vector_span(NULL, op, &s[4], "lse", lse, d->rows, sizeof(float), 1));
  TRY(nk__check_overlaps(NULL, op, s, 5, nk__softmax_fwd_alias_ok));
  nk__cuda_softmax_args a = softmax_args(d);
  a.x = x;
  a.mask = mask;
  a.sink = sink;
  a.y = y;
  a.lse = lse;
  return device_status(op, nk__cuda_softmax_fwd(&a, stream));
}

nk_status nk_cuda_softmax_bwd(nk_cuda_stream stream, const nk_softmax_desc *d, const void *y,
                              const void *dy, const float *sink, const float *lse, void *dx,
                              float *dsink) {
  const char *op = "cuda_softmax_bwd";
  TRY(nk__check_softmax_desc(NULL, op, d));
  if (d->rows == 0 || d->cols == 0) return NK_STATUS_OK;
  if (y == NULL || dy == NULL || dx == NULL) return NK_STATUS_INVALID_ARGUMENT;
  if (dsink != NULL && (sink == NULL || lse == NULL)) return NK_STATUS_INVALID_ARGUMENT;
  span s[6];
  TRY(nk__tensor_span(NULL, op, &s[0], "y", y, d->y_stride, d->rows, d->cols, d->dtype, 0));
  TRY(nk__tensor_span(NULL, op, &s[1], "dy", dy, d->dy_stride, d->rows, d->cols, d->dtype, 0));
  TRY(nk__tensor_span(NULL, op, &s[2], "dx", dx, d->dx_stride, d->rows, d->cols, d->dtype, 1));
  const size_t nsink = (d->flags & NK_SOFTMAX_SINK_PER_HEAD) ? (d->heads ? d->heads : 1) : d->rows;
  TRY(nk__vector_span(NULL, op, &s[3], "sink", dsink ? sink : NULL, nsink, sizeof(float), 0));
  TRY(nk__vector_span(NULL, op, &s[4], "lse", dsink ? lse : NULL, d->rows, sizeof(float), 0));
  TRY(nk__vector_span(NULL, op, &s[5], "dsink", dsink, d->rows, sizeof(float), 1));
  TRY(nk__check_overlaps(NULL, op, s, 6, nk__softmax_bwd_alias_ok));
  nk__cuda_softmax_args a = softmax_args(d);
  a.y_in = y;
  a.dy = dy;
  a.sink = dsink ? sink : NULL;
  a.lse_in = dsink ? lse : NULL;
  a.dx = dx;
  a.dsink = dsink;
  return device_status(op, nk__cuda_softmax_bwd(&a, stream));
}

/* ---- cross-entropy ------------------------------------------------------------------------ */

/* sum/mean: 8 doubles (the counted rows) + rows doubles (the rows' losses). */
static int xent_ws_bytes(const nk_cross_entropy_desc *d, size_t *bytes) {
  *bytes = 0;
  if (d->reduction == NK_REDUCTION_NONE) return 1;
  size_t payload;
  return nk__add_size(d->rows, 8, &payload) && nk__mul_size(payload, sizeof(double), &payload) &&
         nk__ws_bytes(payload, bytes);
}

nk_status nk_cuda_cross_entropy_workspace_size(const nk_cross_entropy_desc *desc, size_t *bytes) {
  TRY(nk__check_xent_desc(NULL, "cuda_cross_entropy_workspace_size", desc));
  if (bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;
  return xent_ws_bytes(desc, bytes) ? NK_STATUS_OK : NK_STATUS_INVALID_ARGUMENT;
}

nk_status nk_cuda_cross_entropy(nk_cuda_stream stream, const nk_cross_entropy_desc *d,
                                const void *x, const int64_t *target, float *loss, void *dlogits,
                                float *lse, void *workspace, size_t workspace_size) {
  const char *op = "cuda_cross_entropy";
  TRY(nk__check_xent_desc(NULL, op, d));
  if (d->rows == 0 && d->reduction == NK_REDUCTION_NONE) return NK_STATUS_OK;
  if (loss == NULL) return NK_STATUS_INVALID_ARGUMENT;
  if (d->rows != 0 && d->cols == 0) return NK_STATUS_INVALID_ARGUMENT;
  if (d->rows != 0 && (x == NULL || target == NULL)) return NK_STATUS_INVALID_ARGUMENT;
  size_t need;
  if (!xent_ws_bytes(d, &need)) return NK_STATUS_INVALID_ARGUMENT;
  TRY(nk__check_workspace(NULL, op, workspace, workspace_size, need));
  const size_t rows = d->rows;
  span s[7];
  if (rows != 0) {
    TRY(nk__tensor_span(NULL, op, &s[0], "x", x, d->x_stride, rows, d->cols, d->dtype, 0));
    TRY(nk__tensor_span(NULL, op, &s[1], "dx", dlogits, d->dx_stride, rows, d->cols, d->dtype,
                        1));
  } else {
    s[0] = (span){"x", NULL, 0, 0, 0, 0, 0};
    s[1] = (span){"dx", NULL, 0, 0, 0, 1, 0};
  }
  TRY(nk__vector_span(NULL, op, &s[2], "target", target, rows, sizeof(int64_t), 0));
  TRY(nk__vector_span(NULL, op, &s[3], "loss", loss,
                      d->reduction == NK_REDUCTION_NONE ? rows : 1, sizeof(float), 1));
  TRY(nk__vector_span(NULL, op, &s[4], "lse", lse, rows, sizeof(float), 1));
  TRY(nk__vector_span(NULL, op, &s[5], "workspace", need ? workspace : NULL, need, 1, 1));
  s[6] = (span){"none", NULL, 0, 0, 0, 0, 0};
  TRY(nk__check_overlaps(NULL, op, s, 7, nk__xent_alias_ok));
  nk__cuda_xent_args a;
  memset(&a, 0, sizeof a);
  a.dtype = (int)d->dtype;
  a.rows = rows;
  a.cols = d->cols;
  a.reduction = (int)d->reduction;
  a.ignore_index = d->ignore_index;
  a.smoothing = d->label_smoothing;
  a.z_loss = d->z_loss;
  a.grad = d->grad;
  a.x = x;
  a.target = target;
  a.loss = loss;
  a.lse = lse;
  a.dx = dlogits;
  a.x_stride = d->x_stride;
  a.dx_stride = d->dx_stride;
  a.workspace = need ? nk__ws_align(workspace) : NULL;
  return device_status(op, nk__cuda_xent(&a, stream));
}
