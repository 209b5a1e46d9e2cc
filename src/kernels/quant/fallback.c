/*
 * fallback.c — the double-precision row routine every ISA's normq kernel calls for the rare
 * rows its f32 sums cannot handle (the row-norm family's fallback test: NaN or inf in the row,
 * sums that overflow f32, a variance so small that subnormal squares matter next to eps).
 * One shared piece of code, so it gives the same bits whichever ISA called it.
 *
 * Statistics in double (two plain passes; squares of floats are exact in double and cannot
 * overflow). y_i = affine((float)((h_i - mu) * rstd)) with the f32 affine step of the kernels,
 * then the outputs with quant.h's helpers (the same ones the kernels use).
 * A row with NaN or inf in h is a NaN row: OUT_Y writes NaN everywhere; OUT_ROW writes q = 0
 * and scale NaN; OUT_POW2 writes q = 0 and every exponent NK_NORMQ_EXP_NAN; mean/rstd NaN.
 */
#include <math.h>
#include <string.h>

#include "convert.h"
#include "quant.h"

static float gain(const nk_normq_params *p, size_t i) {
  const float g = nk__load_f32(p->gamma, i, p->param_dtype);
  return (p->variant & NK_NORMQ_OFFSET) ? 1.0f + g : g;
}

static float affine(const nk_normq_params *p, size_t i, float xh) {
  const uint32_t v = p->variant;
  if ((v & NK_NORMQ_HAS_GAMMA) && (v & NK_NORMQ_HAS_BETA))
    return fmaf(xh, gain(p, i), nk__load_f32(p->beta, i, p->param_dtype));
  if (v & NK_NORMQ_HAS_GAMMA) return xh * gain(p, i);
  if (v & NK_NORMQ_HAS_BETA) return xh + nk__load_f32(p->beta, i, p->param_dtype);
  return xh;
}

static double hval(const void *x, const void *r, size_t i, nk_dtype dt) {
  if (r == NULL) return (double)nk__load_f32(x, i, dt);
  return nk__round_to(nk__load_f32(x, i, dt) + nk__load_f32(r, i, dt), dt);
}

static float yval(const void *x, const void *r, size_t i, nk_dtype dt, double mu, double rs,
                  const nk_normq_params *p) {
  return affine(p, i, (float)((hval(x, r, i, dt) - mu) * rs));
}

void nk__normq_row_f64(size_t n, nk_dtype dt, const void *x, const void *r, void *out,
                       float *scale, int8_t *exps, float *mean, float *rstd, size_t row,
                       const nk_normq_params *p) {
  const float qnan = nk__normq_f32(0x7FC00000u);
  int finite = 1;
  double mu = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double v = hval(x, r, i, dt);
    finite &= isfinite(v) != 0;
    mu += v;
  }
  const size_t ng = p->out == NK_NORMQ_OUT_POW2 ? (n + p->group - 1) / p->group : 0;
  if (!finite) {
    if (p->out == NK_NORMQ_OUT_Y) {
      for (size_t i = 0; i < n; i++) nk__store_f32(out, i, qnan, dt);
    } else {
      memset(out, 0, n);
      if (scale) *scale = qnan;
      for (size_t k = 0; k < ng; k++) exps[k] = (int8_t)NK_NORMQ_EXP_NAN;
    }
    if (mean) *mean = qnan;
    if (rstd) *rstd = qnan;
    return;
  }
  double rs;
  if (p->stat == NK_NORMQ_STAT_RMS) {
    double q = 0.0;
    for (size_t i = 0; i < n; i++) {
      const double v = hval(x, r, i, dt);
      q += v * v;
    }
    mu = 0.0;
    rs = 1.0 / sqrt(q / (double)n + (double)p->eps);
  } else {
    mu /= (double)n;
    double var = 0.0;
    for (size_t i = 0; i < n; i++) {
      const double d = hval(x, r, i, dt) - mu;
      var += d * d;
    }
    var /= (double)n;
    rs = p->stat == NK_NORMQ_STAT_FAKE ? (double)p->inv_sigma
                                       : 1.0 / sqrt(var + (double)p->eps);
  }
  if (mean) *mean = (float)mu;
  if (rstd) *rstd = (float)rs;
  if (p->out == NK_NORMQ_OUT_Y) {
    for (size_t i = 0; i < n; i++) nk__store_f32(out, i, yval(x, r, i, dt, mu, rs, p), dt);
    return;
  }
  int8_t *q = out;
  if (p->out == NK_NORMQ_OUT_ROW) {
    uint32_t amax = 0;
    for (size_t i = 0; i < n; i++) {
      const uint32_t a = nk__normq_bits(yval(x, r, i, dt, mu, rs, p)) & 0x7FFFFFFFu;
      amax = a > amax ? a : amax;
    }
    float pre, inv;
    if (nk__q8_row_factors(amax, &pre, &inv, scale) < 2) {
      memset(q, 0, n);
      return;
    }
    for (size_t i = 0; i < n; i++) {
      float y = yval(x, r, i, dt, mu, rs, p);
      if (pre != 1.0f) y *= pre;
      q[i] = nk__q_clamp(rintf(y * inv), 127);
    }
    return;
  }
  const size_t G = p->group;
  const int Q = p->qmax;
  const int sr = (p->variant & NK_NORMQ_STOCHASTIC) != 0;
  const uint32_t key = sr ? nk__sr_rowkey(p->seed, (uint64_t)(p->row0 + row)) : 0;
  for (size_t g0 = 0, k = 0; g0 < n; g0 += G, k++) {
    const size_t g1 = g0 + G < n ? g0 + G : n;
    uint32_t m = 0;
    for (size_t i = g0; i < g1; i++) {
      const uint32_t a = nk__normq_bits(yval(x, r, i, dt, mu, rs, p)) & 0x7FFFFFFFu;
      m = a > m ? a : m;
    }
    const int e = nk__pow2_group_exp(m, Q);
    exps[k] = (int8_t)e;
    if (e == NK_NORMQ_EXP_NAN || m == 0) {
      memset(q + g0, 0, g1 - g0);
      continue;
    }
    const float f = nk__pow2_factor(e);
    for (size_t i = g0; i < g1; i++) {
      const float v = yval(x, r, i, dt, mu, rs, p) * f;
      q[i] = nk__q_clamp(sr ? floorf(v + nk__sr_u(key, i)) : rintf(v), Q);
    }
  }
}
