/*
 * rownorm.h — the micro-kernel contract of the row-norm family (LayerNorm, RMSNorm; forward and
 * backward; f32/bf16/f16 activations). One list (rownorm.inc) declares every kernel; the
 * dispatcher, the kernel tests and the benchmark expand it.
 *
 * The canonical arithmetic (every ISA reproduces it bit for bit; scalar.c is its definition):
 *
 *   blocksum(t_0..t_{n-1}): the elements are cut into blocks of NK_ROWNORM_BLOCK (1024)
 *     consecutive elements. Inside a block, NK_ROWNORM_LANES (64) f32 lane accumulators start at
 *     +0 and lane l adds, in increasing i, the terms with i % 64 == l (so each lane adds at most
 *     16 terms). At the end of the block the lanes are folded with the fixed tree
 *     lane[k] += lane[k + s] for s = 32, 16, 8, 4, 2, 1 (f32 adds), and lane[0] is converted to
 *     double and added to a double total (block order). Sums of products accumulate with one
 *     fused multiply-add per term (fmaf on the scalar path).
 *
 *   LayerNorm forward, one row (h = x, or h = dtype(x + r)):
 *     K = h_0;  S1 = blocksum(h_i - K);  mu = K + S1 / n  (double)
 *     mu_hi = (float)mu;  mu_lo = (float)(mu - mu_hi)
 *     d_i = (h_i - mu_hi) - mu_lo   (f32);  S2 = blocksum(d_i * d_i);  D = blocksum(d_i)
 *     corrected two-pass (nk__rownorm_refine_mean): delta = D/n, S2 -= n*delta^2 (>= 0),
 *       mu = mu_hi + mu_lo + delta, re-split into mu_hi, mu_lo;   var = S2 / n
 *     rstd = (float)(1 / sqrt(var + eps))          (double, then rounded)
 *     d'_i = (h_i - mu_hi) - mu_lo with the refined mu_hi, mu_lo (pass 3)
 *     xhat_i = d'_i * rstd;  y_i = fmaf(xhat_i, g_i, b_i); gamma only: xhat_i * g_i;
 *     beta only: xhat_i + b_i; neither: xhat_i
 *     g_i = gamma_i, or 1 + gamma_i (f32 add) with NK_NORM_GAMMA_OFFSET.
 *     saved mean = mu_hi, saved rstd = rstd.
 *   RMSNorm forward:  S = blocksum(h_i * h_i);  rstd = (float)(1/sqrt(S/n + eps));
 *     xhat_i = h_i * rstd, y as above.
 *   The f32 sums above are exact enough unless a sum overflows or, with eps < 2^-60, the
 *   variance is below 2^-90 (subnormal squares): such rows (and rows with NaN/inf) take the
 *   double-precision row routine nk__rownorm_fwd_row_f64, shared by every ISA.
 *
 *   Backward, one row (gh_i = dy_i * g_i in f32; gh_i = dy_i without gamma):
 *     LayerNorm: e_i = h_i - mean (saved mean); A = blocksum(gh_i); B = blocksum(gh_i * e_i);
 *       C = blocksum(e_i); c = C/n; mu_lo = (float)c; xhat_i = ((e_i - mu_lo) * rstd)
 *       a = (float)(A/n); b = (float)(rstd * (B - c*A) / n)
 *     From y (NK_NORM_BWD_FROM_Y): xhat_i = (y_i - b_i) * ginv_i (ginv_i = 1/g_i in f32);
 *       A = blocksum(gh_i), B = blocksum(gh_i * xhat_i); a = (float)(A/n), b = (float)(B/n)
 *       (RMSNorm from y: a = 0).
 *     RMSNorm: xhat_i = h_i * rstd; B = blocksum(gh_i * xhat_i); a = 0; b = (float)(B/n)
 *     dx_i = (fmaf(-xhat_i, b, gh_i - a)) * rstd  [+ dh_i]
 *   FakeLN (NK_ROWNORM_FIXED_RSTD; LayerNorm kernels, from x or from y): rstd = fixed_rstd for
 *     every row and b = 0 (a frozen std has no gradient): dx_i = fmaf(-xhat_i, 0, gh_i - a) * rstd.
 *   LayerNorm Scaling (NK_ROWNORM_SCALE, scale s): the forward stores y_i * s (one f32 product
 *     after the affine step); the backward first replaces dy_i by dy_i * s (f32) — in gh, in
 *     the parameter gradients, everywhere — and, from y, y_i by y_i * (1/s) (f32 1.0f / s).
 *     dgamma_acc[i] += (double)dy_i * xhat_i;  dbeta_acc[i] += dy_i   (double, exact products)
 *   Rows whose sums are not finite, or whose rstd is not a normal float, take
 *   nk__rownorm_bwd_row_f64.
 *
 * Kernel rules: kernels process a range of rows; they never allocate, validate or log. The
 * pointers are not `restrict`: outputs may be the very same buffers as inputs (exact in-place,
 * checked by the operator), which every pass tolerates because each element is read before it
 * is written at the same index.
 */
#ifndef NK_KERNELS_ROWNORM_H
#define NK_KERNELS_ROWNORM_H

#include <stddef.h>
#include <stdint.h>

#include "normkit.h"

#include "../arch.h"

#define NK_ROWNORM_LANES 64
#define NK_ROWNORM_BLOCK 1024

/* Internal variant bits of nk_rownorm_params.variant. */
#define NK_ROWNORM_HAS_GAMMA 0x1u
#define NK_ROWNORM_HAS_BETA 0x2u
#define NK_ROWNORM_OFFSET 0x4u      /* g = 1 + gamma */
#define NK_ROWNORM_FROM_Y 0x8u      /* backward input is y; use ginv and beta */
#define NK_ROWNORM_NONTEMPORAL 0x10u /* outputs may use streaming stores (large working sets) */
#define NK_ROWNORM_SCALE 0x20u       /* LayerNorm Scaling: y = affine * scale (f32 product);
                                        backward: dy_i * scale (f32) replaces dy_i everywhere;
                                        from y: y_i * scale_inv replaces y_i */
#define NK_ROWNORM_FIXED_RSTD 0x40u  /* FakeLN backward: the std is a frozen constant: every row
                                        uses rstd = params.fixed_rstd (the rstd pointer is not
                                        read) and the backward has no variance term (b = 0) */

typedef struct nk_rownorm_params {
  const void *gamma;    /* cols elements of param_dtype, or NULL */
  const void *beta;     /* cols elements of param_dtype, or NULL */
  const float *ginv;    /* backward FROM_Y: cols floats 1/g_i, else NULL */
  float eps;
  nk_dtype param_dtype; /* NK_DTYPE_F32 or the activation dtype */
  uint32_t variant;     /* NK_ROWNORM_* */
  float scale;          /* NK_ROWNORM_SCALE: the LayerNorm Scaling factor s (else unused) */
  float scale_inv;      /* NK_ROWNORM_SCALE: 1.0f / s (f32), for the backward from y */
  float fixed_rstd;     /* NK_ROWNORM_FIXED_RSTD: (float)(1 / sigma_bar) (else unused) */
} nk_rownorm_params;

/* Forward over rows [0, rows): pointers point at the first row to process.
 * r (residual), h, mean, rstd may be NULL (h only when r is NULL... or when not wanted).
 * mean must be NULL for RMSNorm. */
typedef void (*nk_rownorm_fwd_ukernel_fn)(size_t rows, size_t cols, const void *x,
                                          ptrdiff_t x_stride, const void *r, ptrdiff_t r_stride,
                                          void *y, ptrdiff_t y_stride, void *h,
                                          ptrdiff_t h_stride, float *mean, float *rstd,
                                          const nk_rownorm_params *params);

/* Backward over rows [0, rows). x is h (or y with FROM_Y); mean is NULL for RMSNorm and FROM_Y;
 * rstd is not read with NK_ROWNORM_FIXED_RSTD (may be NULL);
 * dh, dgamma_acc, dbeta_acc may be NULL. Parameter gradients are added (double). */
typedef void (*nk_rownorm_bwd_ukernel_fn)(size_t rows, size_t cols, const void *x,
                                          ptrdiff_t x_stride, const void *dy,
                                          ptrdiff_t dy_stride, const void *dh,
                                          ptrdiff_t dh_stride, const float *mean,
                                          const float *rstd, void *dx, ptrdiff_t dx_stride,
                                          double *dgamma_acc, double *dbeta_acc,
                                          const nk_rownorm_params *params);

/* One row of a table built from rownorm.inc (the dispatcher's and the kernel test's). */
typedef struct nk_rownorm_fwd_entry {
  nk_isa isa;
  nk_op op;
  nk_dtype dtype;
  nk_rownorm_fwd_ukernel_fn fn;
  const char *name;
} nk_rownorm_fwd_entry;

typedef struct nk_rownorm_bwd_entry {
  nk_isa isa;
  nk_op op;
  nk_dtype dtype;
  nk_rownorm_bwd_ukernel_fn fn;
  const char *name;
} nk_rownorm_bwd_entry;

#define NK_UKERNEL_FWD(isa, op, dtype, fn)                                                       \
  void fn(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride, const void *r,           \
          ptrdiff_t r_stride, void *y, ptrdiff_t y_stride, void *h, ptrdiff_t h_stride,        \
          float *mean, float *rstd, const nk_rownorm_params *params);
#define NK_UKERNEL_BWD(isa, op, dtype, fn)                                                       \
  void fn(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride, const void *dy,          \
          ptrdiff_t dy_stride, const void *dh, ptrdiff_t dh_stride, const float *mean,          \
          const float *rstd, void *dx, ptrdiff_t dx_stride, double *dgamma_acc,                 \
          double *dbeta_acc, const nk_rownorm_params *params);
#include "rownorm.inc"
#undef NK_UKERNEL_FWD
#undef NK_UKERNEL_BWD

/* The double-precision row routines every ISA falls back to for rows the f32 sums cannot
 * handle (fallback.c), so every ISA writes the same bits for such rows. One row; `is_rms`
 * selects RMSNorm. Forward: h = x, or dtype(x + r) when r is not NULL (the caller has already
 * written h if it was wanted; it then passes h as x and NULL as r). mean/rstd may be NULL.
 * Backward: as the kernels, for one row; mean and rstd are the saved values of that row. */
void nk__rownorm_fwd_row_f64(int is_rms, size_t cols, nk_dtype dtype, const void *x,
                             const void *r, void *y, float *mean, float *rstd,
                             const nk_rownorm_params *params);
void nk__rownorm_bwd_row_f64(int is_rms, size_t cols, nk_dtype dtype, const void *x,
                             const void *dy, const void *dh, float mean, float rstd, void *dx,
                             double *dgamma_acc, double *dbeta_acc,
                             const nk_rownorm_params *params);

#endif /* NK_KERNELS_ROWNORM_H */
