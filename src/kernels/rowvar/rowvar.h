/*
 * rowvar.h — the micro-kernel contract of the research row norms: CRMSNorm (Jiang et al. 2023,
 * spec §3.2) and L1 LayerNorm (spec §11.1), forward and backward, f32/bf16/f16 activations.
 * One kernel set per ISA (nk_rowvar_kernels, like the channel norms' nk_chnorm_kernels), chosen
 * by nk__rowvar_kernels(isa); the kernel test and the benchmark read the same tables.
 *
 * The canonical arithmetic (scalar.c is its definition; avx2.c and avx512.c reproduce it bit
 * for bit). blocksum(t_i) is the row-norm family's (kernels/rownorm/rownorm.h): blocks of 1024
 * elements, 64 f32 lanes (lane l adds the terms i % 64 == l in increasing i, products with one
 * fmaf), the fixed fold tree lane[k] += lane[k + s], s = 32 .. 1, and a double total in block
 * order. n = cols. s_lns = the LayerNorm Scaling factor (NK_ROWNORM_SCALE; else no product).
 *
 *   CRMSNorm forward (c = the row):
 *     Q = blocksum(c_i * c_i), S = blocksum(c_i)   (one pass, two lane sets)
 *     q = (Q + S*S) / (n + 1)   (double);  rstd = (float)(1 / sqrt(q + eps))
 *     y_i = c_i * rstd  [* s_lns]
 *   CRMSNorm backward (g_i = dy_i [* s_lns], f32):
 *     B = blocksum(g_i * c_i), S = blocksum(c_i)
 *     k = (float)(rstd * B / (n + 1));  a = (float)(rstd * S * rstd * B / (n + 1))  (double)
 *     xhat_i = c_i * rstd;  dx_i = fmaf(-xhat_i, k, g_i - a) * rstd  [+ dh_i]
 *   L1 forward (h = the row):
 *     K = h_0;  S1 = blocksum(h_i - K);  mu = K + S1/n;  mu_hi = (float)mu, mu_lo = (float)(mu - mu_hi)
 *     D = blocksum((h_i - mu_hi) - mu_lo);  mu = mu_hi + mu_lo + D/n, re-split (refinement)
 *     A = blocksum(|(h_i - mu_hi) - mu_lo|);  den = C1 * A/n + eps (double, C1 = sqrt(pi/2))
 *     rscale = (float)(1 / den);  xhat_i = ((h_i - mu_hi) - mu_lo) * rscale
 *     y_i = affine(xhat_i) [* s_lns]   (affine as the row norms: fmaf(xhat, g, b), xhat*g, ...)
 *     saved: mean = mu_hi, rscale.
 *   L1 backward (m = saved mean, rs = saved rscale, g_i = dy_i [* s_lns], gh_i = g_i * gain_i):
 *     e_i = h_i - m;  A = blocksum(gh_i), B = blocksum(gh_i * e_i), C = blocksum(e_i)
 *     c0 = C/n;  mu_lo = (float)c0;  xhat_i = (e_i - mu_lo) * rs;  eta_i = sign(xhat_i)
 *     P = blocksum(eta_i) (exact);  Bx = rs * (B - c0*A)   (= sum gh_i xhat_i, double)
 *     kd = C1 * Bx / n;  kappa = (float)kd;  a = (float)(A/n - kd * P/n)
 *     dx_i = ((gh_i - a) - kappa * eta_i) * rs  [+ dh_i]
 *     dgamma_acc[i] += (double)g_i * xhat_i;  dbeta_acc[i] += g_i
 *   Rows whose sums are not finite (NaN/inf inputs, f32 overflow), CRMSNorm rows whose mean
 *   square is so small that subnormal squares could matter (nk__rownorm_needs_fallback), rows
 *   whose saved statistics are not normal floats, L1 rows with a nonzero mean below 2^-100
 *   (nk__l1_tiny_mean), go to the double row routines of fallback.c,
 *   shared by every ISA. Rows with NaN or inf inputs write the canonical NaN (0x7FC00000).
 *
 * Kernel rules as rownorm.h: ranges of rows, no allocation/validation/logging, outputs may be
 * the very same buffers as inputs (every element is read before it is written at its index).
 */
#ifndef NK_KERNELS_ROWVAR_H
#define NK_KERNELS_ROWVAR_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "normkit.h"

#include "../arch.h"
#include "../rownorm/rownorm.h"

/* sqrt(pi/2): sigma = C1 * E|u - mu| for Gaussian u (spec §11.1). */
#define NK_L1NORM_C1 1.2533141373155002512

/* L1 rows whose (double) mean is nonzero and below 2^-100 in magnitude (subnormal data) take
 * the double routine: their f32 low part mu_lo sits on the subnormal grid, which put every
 * centred value up to 2^-150 off, times rscale, and in the backward flipped sign(xhat) of
 * elements that close to the mean (dx 14x off; rowvar fuzz harness). A zero mean (an all-zero
 * row, or symmetric data) has an exact low part and stays on the f32 path. Forward: the
 * refined mean; backward: mean + C/n. */
static inline int nk__l1_tiny_mean(double mu) { return mu != 0.0 && fabs(mu) < 0x1p-100; }

/* Parameters: nk_rownorm_params (gamma, beta, eps, param_dtype, variant with the
 * NK_ROWNORM_HAS_GAMMA/HAS_BETA/OFFSET/NONTEMPORAL/SCALE bits, scale). CRMSNorm reads only eps,
 * variant (NONTEMPORAL, SCALE) and scale. */

/* Forward over rows [0, rows). stat1 = mean (L1; NULL for CRMSNorm), stat2 = rstd (CRMSNorm) or
 * rscale (L1); each may be NULL. */
typedef void (*nk_rowvar_fwd_fn)(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                 void *y, ptrdiff_t y_stride, float *stat1, float *stat2,
                                 const nk_rownorm_params *params);
/* Backward over rows [0, rows). stat1/stat2 as saved by the forward (stat1 NULL for CRMSNorm);
 * dh, dgamma_acc, dbeta_acc may be NULL (CRMSNorm: always NULL). Parameter gradients are
 * added (double). */
typedef void (*nk_rowvar_bwd_fn)(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                 const void *dy, ptrdiff_t dy_stride, const void *dh,
                                 ptrdiff_t dh_stride, const float *stat1, const float *stat2,
                                 void *dx, ptrdiff_t dx_stride, double *dgamma_acc,
                                 double *dbeta_acc, const nk_rownorm_params *params);

/* One ISA's kernels, indexed by activation dtype (f32, bf16, f16). */
typedef struct nk_rowvar_kernels {
  nk_isa isa;
  nk_rowvar_fwd_fn crms_fwd[3];
  nk_rowvar_bwd_fn crms_bwd[3];
  nk_rowvar_fwd_fn l1_fwd[3];
  nk_rowvar_bwd_fn l1_bwd[3];
  const char *crms_fwd_name[3], *crms_bwd_name[3], *l1_fwd_name[3], *l1_bwd_name[3];
} nk_rowvar_kernels;

extern const nk_rowvar_kernels nk_rowvar_kernels_scalar;
#if NK_ARCH_X86
extern const nk_rowvar_kernels nk_rowvar_kernels_avx2;
extern const nk_rowvar_kernels nk_rowvar_kernels_avx512;
#endif

/* The kernels of `isa` (NK_ISA_SCALAR, AVX2, AVX512; every path has all of them). */
const nk_rowvar_kernels *nk__rowvar_kernels(nk_isa isa);

/* The double row routines (fallback.c), one row each. is_l1 selects the method. */
void nk__rowvar_fwd_row_f64(int is_l1, size_t n, nk_dtype dt, const void *x, void *y,
                            float *stat1, float *stat2, const nk_rownorm_params *p);
void nk__rowvar_bwd_row_f64(int is_l1, size_t n, nk_dtype dt, const void *x, const void *dy,
                            const void *dh, float stat1, float stat2, void *dx,
                            double *dgamma_acc, double *dbeta_acc, const nk_rownorm_params *p);

#endif /* NK_KERNELS_ROWVAR_H */
