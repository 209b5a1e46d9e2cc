/*
 * rownorm-common.h — the scalar (double) steps of the canonical row-norm arithmetic that every
 * ISA shares: the fallback test, rstd, and the backward coefficients. Static inline, compiled
 * into each ISA file; plain IEEE double operations with no contraction (-ffp-contract=off), so
 * they give the same bits in every file.
 */
#ifndef NK_KERNELS_ROWNORM_COMMON_H
#define NK_KERNELS_ROWNORM_COMMON_H

#include <math.h>
#include <stddef.h>

/* The f32 lane sums are trusted unless the (mean) square is so small that subnormal squares
 * could matter next to eps. (Non-finite sums are tested by the caller.) */
static inline int nk__rownorm_needs_fallback(double var, float eps) {
  return !isfinite(var) || (var < 0x1p-90 && (double)eps < 0x1p-60);
}

/* The corrected two-pass step (Chan, Golub & LeVeque): with D = sum of the centred values d_i
 * (about 0) and S2 = sum d_i^2, the mean moves by delta = D/n and the sum of squares about it
 * is S2 - n*delta^2 (clamped at 0). *s2 becomes that sum; mu_hi/mu_lo are re-split from
 * mu_hi + mu_lo + delta. This removes the error of the first-pass mean (whose lanes drift
 * when the shift K is far from the mean). */
static inline void nk__rownorm_refine_mean(size_t n, double dsum, double *s2, float *mu_hi,
                                           float *mu_lo) {
  /* A second pass whose f32 sums overflowed (centred values beyond FLT_MAX: a row holding both
   * -FLT_MAX-ish and +FLT_MAX-ish values) leaves S2 infinite, so the caller takes the double
   * row routine (nk__rownorm_needs_fallback). Found by the rownorm fuzz harness. */
  if (!isfinite(*s2) || !isfinite(dsum)) {
    *s2 = INFINITY;
    return;
  }
  const double delta = dsum / (double)n;
  const double s = *s2 - (double)n * delta * delta;
  *s2 = s > 0.0 ? s : 0.0;
  const double mu = ((double)*mu_hi + (double)*mu_lo) + delta;
  *mu_hi = (float)mu;
  *mu_lo = (float)(mu - (double)*mu_hi);
  /* A mean below 2^-100 (a row of subnormals, or one near 0) puts mu_lo on the f32 subnormal
   * grid: every centred value then errs by up to 2^-150, times rstd (2896 for eps 2^-23: y
   * 3.3e-6 off for the row {0x1.f687b4p-127, 0x1.e4026p-127}, moments fuzz harness; the
   * same fix as nk_layernorm_fwd_moments). Such rows take the double row routine, signalled as
   * for the overflow above. Same decision on every ISA: mu is the canonical one. */
  if (mu != 0.0 && fabs(mu) < 0x1p-100) *s2 = INFINITY;
}

static inline float nk__rownorm_rstd(double var, float eps) {
  return (float)(1.0 / sqrt(var + (double)eps));
}

/* Backward coefficients from the row sums (rownorm.h):
 *   LayerNorm from x: c = C/n, mu_lo = (float)c, a = (float)(A/n), b = (float)(rs*(B - c*A)/n)
 *   from y:           a = (float)(A/n) (LayerNorm) or 0 (RMSNorm), b = (float)(B/n)
 *   RMSNorm from x:   a = 0, b = (float)(B/n)
 *   FakeLN (`fixed`, a frozen std): as LayerNorm with b = 0 */
static inline void nk__rownorm_bwd_coeffs(int is_rms, int from_y, int fixed, size_t n, double A,
                                          double B, double C, float rs, float *a, float *b,
                                          float *mu_lo) {
  const double dn = (double)n;
  if (!is_rms && !from_y) {
    const double c = C / dn;
    *mu_lo = (float)c;
    *a = (float)(A / dn);
    *b = (float)((double)rs * (B - c * A) / dn);
  } else {
    *mu_lo = 0.0f;
    *a = is_rms ? 0.0f : (float)(A / dn);
    *b = (float)(B / dn);
  }
  if (fixed) *b = 0.0f;
}

#endif /* NK_KERNELS_ROWNORM_COMMON_H */
