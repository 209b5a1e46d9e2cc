/*
 * launch.h — the interface between the host API (api.c: validation) and the kernels (*.cu:
 * launch choices and kernels). Plain C; not installed. Every launcher returns 0 or a CUDA
 * error code (cudaError_t as int); nk__cuda_error_string names it.
 */
#ifndef NK_CUDA_LAUNCH_H
#define NK_CUDA_LAUNCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nk__cuda_norm_args {
  int rms;               /* RMSNorm instead of LayerNorm */
  int dtype;             /* nk_dtype of the activations */
  int param_dtype;       /* nk_dtype of gamma, beta, dgamma, dbeta */
  size_t rows, cols;
  float eps;
  float lns;             /* LayerNorm Scaling factor; 1 = none */
  int offset;            /* g = 1 + gamma */
  int from_y;            /* backward from y */
  int accumulate;        /* dgamma/dbeta += */
  const void *x, *r, *gamma, *beta, *dy, *dh;
  void *y, *h, *dx, *dgamma, *dbeta;
  float *mean, *rstd;              /* forward outputs */
  const float *mean_in, *rstd_in;  /* backward inputs */
  ptrdiff_t x_stride, r_stride, y_stride, h_stride, dy_stride, dh_stride, dx_stride;
  void *workspace;                 /* aligned to 256 bytes by the caller */
} nk__cuda_norm_args;

typedef struct nk__cuda_softmax_args {
  int dtype, mask_dtype;
  size_t rows, cols;
  float scale, alibi;
  int log, causal, masked_nan, sink_per_head;
  size_t q_len, heads, mask_rows; /* resolved: q_len, heads, mask_rows >= 1 */
  ptrdiff_t causal_offset;
  const void *x, *mask, *y_in, *dy;
  const float *sink, *lse_in;
  void *y, *dx;
  float *lse, *dsink;
  ptrdiff_t x_stride, y_stride, mask_stride, dy_stride, dx_stride;
} nk__cuda_softmax_args;

typedef struct nk__cuda_xent_args {
  int dtype;
  size_t rows, cols;
  int reduction;
  int64_t ignore_index;
  float smoothing, z_loss, grad;
  const void *x;
  const int64_t *target;
  float *loss, *lse;
  void *dx;
  ptrdiff_t x_stride, dx_stride;
  void *workspace; /* aligned to 256 bytes; rows doubles + 64 bytes (sum/mean) */
} nk__cuda_xent_args;

/* Device workspace payload (bytes, before alignment slack) of the row-norm backward. */
size_t nk__cuda_norm_bwd_payload(size_t rows, size_t cols, int dtype, int want_params);

int nk__cuda_norm_fwd(const nk__cuda_norm_args *a, void *stream);
int nk__cuda_norm_bwd(const nk__cuda_norm_args *a, void *stream);
int nk__cuda_softmax_fwd(const nk__cuda_softmax_args *a, void *stream);
int nk__cuda_softmax_bwd(const nk__cuda_softmax_args *a, void *stream);
int nk__cuda_xent(const nk__cuda_xent_args *a, void *stream);

const char *nk__cuda_error_string(int err);
int nk__cuda_device_count(void);

#ifdef __cplusplus
}
#endif

#endif /* NK_CUDA_LAUNCH_H */
