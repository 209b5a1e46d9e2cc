/*
 * fallback.c — the double-precision row routines that every ISA's row-norm kernel calls for the
 * rare rows its f32 lane sums cannot handle: rows holding NaN or +-inf, rows whose squares
 * overflow f32 (|x| beyond ~1e19), and rows whose variance is so small that subnormal squares
 * would matter next to a tiny eps. Being one shared piece of code, it gives the same bits
 * whichever ISA called it. Float inputs squared are exact in double and their range fits, so
 * two plain passes in double are accurate for every finite row.
 *
 * Rows with a NaN or an infinity in their input write the canonical quiet NaN everywhere
 * (y, mean, rstd; dx), as the header documents.
 */
#include <math.h>
#include <string.h>

#include "convert.h"
#include "rownorm.h"




static float canonical_nan(void) { return nk__f32_from_bits(0x7FC00000u); }

static double gain(const nk_rownorm_params *p, size_t i) {
  if (!(p->variant & NK_ROWNORM_HAS_GAMMA)) return 1.0;
  const float g = nk__load_f32(p->gamma, i, p->param_dtype);
  return (p->variant & NK_ROWNORM_OFFSET) ? (double)(1.0f + g) : (double)g;
}

/* The forward's affine step, in f32 exactly as the kernels do it. */
static float affine(const nk_rownorm_params *p, size_t i, float xh) {
  const uint32_t v = p->variant;
  if ((v & NK_ROWNORM_HAS_GAMMA) && (v & NK_ROWNORM_HAS_BETA))
    return fmaf(xh, (float)gain(p, i), nk__load_f32(p->beta, i, p->param_dtype));
  if (v & NK_ROWNORM_HAS_GAMMA) return xh * (float)gain(p, i);
  if (v & NK_ROWNORM_HAS_BETA) return xh + nk__load_f32(p->beta, i, p->param_dtype);
  return xh;
}

/* LayerNorm Scaling, in f32 exactly as the kernels do it: y * s (forward), dy * s (backward),
 * y * (1/s) (backward from y). */
static float lns_out(const nk_rownorm_params *p, float v) {
  return (p->variant & NK_ROWNORM_SCALE) ? v * p->scale : v;
}
static float lns_in(const nk_rownorm_params *p, float v) {
  return (p->variant & NK_ROWNORM_SCALE) ? v * p->scale_inv : v;
}
static double dyval(const nk_rownorm_params *p, const void *dy, size_t i, nk_dtype dt) {
  return (double)lns_out(p, nk__load_f32(dy, i, dt));
}

static double hval(const void *x, const void *r, size_t i, nk_dtype dt) {
  if (r == NULL) return (double)nk__load_f32(x, i, dt);
  return nk__round_to(nk__load_f32(x, i, dt) + nk__load_f32(r, i, dt), dt);
}

void nk__rownorm_fwd_row_f64(int is_rms, size_t n, nk_dtype dt, const void *x, const void *r,
                             void *y, float *mean, float *rstd, const nk_rownorm_params *p) {
  int finite = 1;
  double mu = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double v = hval(x, r, i, dt);
    finite &= isfinite(v) != 0;
    mu += v;
  }
  if (!finite) {
    for (size_t i = 0; i < n; i++) nk__store_f32(y, i, canonical_nan(), dt);
    if (mean) *mean = canonical_nan();
    if (rstd) *rstd = canonical_nan();
    return;
  }
  mu = is_rms ? 0.0 : mu / (double)n;
  double var = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double d = hval(x, r, i, dt) - mu;
    var += d * d;
  }
  var /= (double)n;
  const double rs = 1.0 / sqrt(var + (double)p->eps);
  for (size_t i = 0; i < n; i++) {
    const float xh = (float)((hval(x, r, i, dt) - mu) * rs);
    nk__store_f32(y, i, lns_out(p, affine(p, i, xh)), dt);
  }
  if (mean) *mean = (float)mu;
  if (rstd) *rstd = (float)rs;
}

void nk__rownorm_bwd_row_f64(int is_rms, size_t n, nk_dtype dt, const void *x, const void *dy,
                             const void *dh, float mean, float rstd, void *dx,
                             double *dgamma_acc, double *dbeta_acc,
                             const nk_rownorm_params *p) {
  (void)mean; /* recomputed in double from x: more precise than the saved f32 value */
  const int from_y = (p->variant & NK_ROWNORM_FROM_Y) != 0;
  const int fixed = (p->variant & NK_ROWNORM_FIXED_RSTD) != 0; /* FakeLN: rstd is given */
  int finite = isfinite(rstd) != 0;
  double mu = 0.0, rs = rstd;
  for (size_t i = 0; i < n; i++) {
    const double v = (double)nk__load_f32(x, i, dt);
    finite &= isfinite(v) && isfinite(dyval(p, dy, i, dt));
    mu += v;
  }
  if (finite && !from_y) mu = is_rms ? 0.0 : mu / (double)n;
  if (finite && !from_y && !fixed) {
    double var = 0.0;
    for (size_t i = 0; i < n; i++) {
      const double d = (double)nk__load_f32(x, i, dt) - mu;
      var += d * d;
    }
    rs = 1.0 / sqrt(var / (double)n + (double)p->eps);
  }
  if (!finite) {
    for (size_t i = 0; i < n; i++) {
      /* dy before dx: dx may be dy (in place; storing first made dbeta NaN, found through
       * nk_fakeln_bwd by the quant fuzz harness; tests/ops/rownorm_regress.c) */
      const double g = dyval(p, dy, i, dt);
      nk__store_f32(dx, i, canonical_nan(), dt);
      if (dgamma_acc) dgamma_acc[i] += (double)canonical_nan();
      if (dbeta_acc) dbeta_acc[i] += g;
    }
    return;
  }
  /* xhat in double: from x, or from y = xhat*g + b. */
#define XH(i)                                                                                    \
  (from_y ? ((double)lns_in(p, nk__load_f32(x, (i), dt)) - ((p->variant & NK_ROWNORM_HAS_BETA) ? (double)nk__load_f32(p->beta, (i), p->param_dtype) \
                                                                  : 0.0)) /                     \
                gain(p, (i))                                                                     \
          : ((double)nk__load_f32(x, (i), dt) - mu) * rs)
  double mg = 0.0, mgx = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double gh = dyval(p, dy, i, dt) * gain(p, i);
    mg += gh;
    mgx += gh * XH(i);
  }
  mg = is_rms ? 0.0 : mg / (double)n;
  mgx = fixed ? 0.0 : mgx / (double)n;
  for (size_t i = 0; i < n; i++) {
    const double g = dyval(p, dy, i, dt), xh = XH(i);
    double d = rs * (g * gain(p, i) - mg - xh * mgx);
    if (dh) d += (double)nk__load_f32(dh, i, dt);
    nk__store_f32(dx, i, (float)d, dt);
    if (dgamma_acc) dgamma_acc[i] += g * (double)(float)xh;
    if (dbeta_acc) dbeta_acc[i] += g;
  }
#undef XH
}
