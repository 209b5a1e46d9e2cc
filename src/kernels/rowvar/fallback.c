/*
 * fallback.c — the double-precision row routines of CRMSNorm and L1 LayerNorm that every ISA's
 * kernel calls for the rows its f32 lane sums cannot handle (rowvar.h): NaN/inf inputs, sums
 * that overflow f32, CRMSNorm rows of tiny mean square next to a tiny eps, saved statistics that
 * are not normal floats. One shared piece of code, so every ISA writes the same bits for them.
 * Rows with a NaN or an infinity write the canonical quiet NaN (y, statistics; dx, dgamma).
 */
#include <math.h>

#include "convert.h"
#include "rowvar.h"

static float canonical_nan(void) { return nk__f32_from_bits(0x7FC00000u); }

static double gain(const nk_rownorm_params *p, size_t i) {
  if (!(p->variant & NK_ROWNORM_HAS_GAMMA)) return 1.0;
  const float g = nk__load_f32(p->gamma, i, p->param_dtype);
  return (p->variant & NK_ROWNORM_OFFSET) ? (double)(1.0f + g) : (double)g;
}

/* The forward's output step in f32, as the kernels do it: affine, then the LNS product. */
static float out_f32(const nk_rownorm_params *p, size_t i, float xh) {
  const uint32_t v = p->variant;
  float y = xh;
  if ((v & NK_ROWNORM_HAS_GAMMA) && (v & NK_ROWNORM_HAS_BETA))
    y = fmaf(xh, (float)gain(p, i), nk__load_f32(p->beta, i, p->param_dtype));
  else if (v & NK_ROWNORM_HAS_GAMMA) y = xh * (float)gain(p, i);
  else if (v & NK_ROWNORM_HAS_BETA) y = xh + nk__load_f32(p->beta, i, p->param_dtype);
  return (v & NK_ROWNORM_SCALE) ? y * p->scale : y;
}

static double dyval(const nk_rownorm_params *p, const void *dy, size_t i, nk_dtype dt) {
  const float g = nk__load_f32(dy, i, dt);
  return (double)((p->variant & NK_ROWNORM_SCALE) ? g * p->scale : g);
}

static double sgn(double v) { return v > 0.0 ? 1.0 : v < 0.0 ? -1.0 : 0.0; }

/* The statistics in double: CRMSNorm mu = 0, rs = 1/sqrt((sum c^2 + (sum c)^2)/(n+1) + eps);
 * L1 mu = mean, rs = 1/(C1 mean|h - mu| + eps). Returns 0 if the row is not finite. */
static int stats_f64(int is_l1, size_t n, nk_dtype dt, const void *x, double eps, double *mu,
                     double *rs) {
  int finite = 1;
  double s = 0.0, q = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double v = (double)nk__load_f32(x, i, dt);
    finite &= isfinite(v) != 0;
    s += v;
    q += v * v;
  }
  if (!finite) return 0;
  if (!is_l1) {
    *mu = 0.0;
    *rs = 1.0 / sqrt((q + s * s) / (double)(n + 1) + eps);
    return 1;
  }
  *mu = s / (double)n;
  double a = 0.0;
  for (size_t i = 0; i < n; i++) a += fabs((double)nk__load_f32(x, i, dt) - *mu);
  *rs = 1.0 / (NK_L1NORM_C1 * (a / (double)n) + eps);
  return 1;
}

void nk__rowvar_fwd_row_f64(int is_l1, size_t n, nk_dtype dt, const void *x, void *y,
                            float *stat1, float *stat2, const nk_rownorm_params *p) {
  double mu = 0.0, rs = 0.0;
  if (!stats_f64(is_l1, n, dt, x, (double)p->eps, &mu, &rs)) {
    for (size_t i = 0; i < n; i++) nk__store_f32(y, i, canonical_nan(), dt);
    if (stat1) *stat1 = canonical_nan();
    if (stat2) *stat2 = canonical_nan();
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const float xh = (float)(((double)nk__load_f32(x, i, dt) - mu) * rs);
    nk__store_f32(y, i, out_f32(p, i, xh), dt);
  }
  if (stat1) *stat1 = (float)mu;
  if (stat2) *stat2 = (float)rs;
}

void nk__rowvar_bwd_row_f64(int is_l1, size_t n, nk_dtype dt, const void *x, const void *dy,
                            const void *dh, float stat1, float stat2, void *dx,
                            double *dgamma_acc, double *dbeta_acc, const nk_rownorm_params *p) {
  (void)stat1; /* recomputed in double from x */
  (void)stat2;
  double mu = 0.0, rs = 0.0;
  int finite = stats_f64(is_l1, n, dt, x, (double)p->eps, &mu, &rs);
  for (size_t i = 0; i < n && finite; i++) finite &= isfinite(dyval(p, dy, i, dt)) != 0;
  if (!finite) {
    for (size_t i = 0; i < n; i++) {
      const double g = dyval(p, dy, i, dt); /* before dx, which may be dy (rownorm fallback.c) */
      nk__store_f32(dx, i, canonical_nan(), dt);
      if (dgamma_acc) dgamma_acc[i] += (double)canonical_nan();
      if (dbeta_acc) dbeta_acc[i] += g;
    }
    return;
  }
  double A = 0.0, B = 0.0, S = 0.0, P = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double xh = ((double)nk__load_f32(x, i, dt) - mu) * rs;
    const double gh = dyval(p, dy, i, dt) * gain(p, i);
    A += gh;
    B += gh * xh;
    S += xh;
    P += sgn(xh);
  }
  const double dn = (double)n;
  for (size_t i = 0; i < n; i++) {
    const double xh = ((double)nk__load_f32(x, i, dt) - mu) * rs;
    const double g = dyval(p, dy, i, dt), gh = g * gain(p, i);
    double d = is_l1 ? rs * (gh - A / dn - NK_L1NORM_C1 * (B / dn) * (sgn(xh) - P / dn))
                     : rs * (gh - (xh + S) * B / (dn + 1.0));
    if (dh) d += (double)nk__load_f32(dh, i, dt);
    nk__store_f32(dx, i, (float)d, dt);
    if (dgamma_acc) dgamma_acc[i] += g * (double)(float)xh;
    if (dbeta_acc) dbeta_acc[i] += g;
  }
}
