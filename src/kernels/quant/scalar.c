/*
 * scalar.c — the portable normq kernels (fused row statistic + affine + output: float row,
 * int8 with a per-row absmax scale, or power-of-two groups), and the definition of the
 * canonical arithmetic of quant.h that the AVX2 and AVX-512 kernels reproduce bit for bit.
 *
 * Contract: quant.h (nk_normq_ukernel_fn). No over-reads: the 64 lanes are plain arrays and a
 * partial block adds fewer terms. Accumulation order: the row-norm family's blocksum (blocks of
 * 1024 elements, 64 f32 lanes, fixed tree, double total). Compiled for the baseline ISA with
 * -ffp-contract=off; the fused multiply-adds are explicit fmaf() calls.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "convert.h"
#include "quant.h"
#include "../rownorm/rownorm-common.h"

#define LANES NK_NORMQ_LANES
#define BLOCK NK_NORMQ_BLOCK

static inline const char *row_ptr(const void *base, size_t row, ptrdiff_t stride, size_t es) {
  return (const char *)base + (ptrdiff_t)row * stride * (ptrdiff_t)es;
}

static inline float lanes_fold(float *lane) {
  for (size_t s = LANES / 2; s >= 1; s /= 2)
    for (size_t k = 0; k < s; k++) lane[k] += lane[k + s];
  return lane[0];
}

static inline float gain(const nk_normq_params *p, size_t i) {
  const float g = nk__load_f32(p->gamma, i, p->param_dtype);
  return (p->variant & NK_NORMQ_OFFSET) ? 1.0f + g : g;
}

static inline float affine(const nk_normq_params *p, size_t i, float xh) {
  const uint32_t v = p->variant;
  if ((v & NK_NORMQ_HAS_GAMMA) && (v & NK_NORMQ_HAS_BETA))
    return fmaf(xh, gain(p, i), nk__load_f32(p->beta, i, p->param_dtype));
  if (v & NK_NORMQ_HAS_GAMMA) return xh * gain(p, i);
  if (v & NK_NORMQ_HAS_BETA) return xh + nk__load_f32(p->beta, i, p->param_dtype);
  return xh;
}

typedef struct row_in {
  nk_dtype dt;
  const void *src; /* x, or h once written */
  const void *r;   /* residual to add (NULL once h is written) */
} row_in;

static inline float hval(const row_in *in, size_t i) {
  const float v = nk__load_f32(in->src, i, in->dt);
  return in->r ? nk__round_to(v + nk__load_f32(in->r, i, in->dt), in->dt) : v;
}

/* y_i of the canonical arithmetic */
static inline float yval(const row_in *in, const nk_normq_params *p, float mu_hi, float mu_lo,
                         float rs, size_t i) {
  const float v = hval(in, i);
  float xh;
  switch (p->stat) {
    case NK_NORMQ_STAT_RMS: xh = v * rs; break;
    case NK_NORMQ_STAT_NONE: xh = v; break;
    default: xh = ((v - mu_hi) - mu_lo) * rs; break;
  }
  return affine(p, i, xh);
}

/* Statistics of one row; returns 1 if the row must take the double routine. */
static int row_stats(const row_in *in, size_t n, const nk_normq_params *p, float *mu_hi,
                     float *mu_lo, float *rs) {
  *mu_hi = *mu_lo = 0.0f;
  *rs = p->inv_sigma;
  if (p->stat == NK_NORMQ_STAT_NONE) return 0;
  double total = 0.0;
  if (p->stat == NK_NORMQ_STAT_RMS) {
    for (size_t b = 0; b < n; b += BLOCK) {
      float lane[LANES] = {0};
      const size_t e = b + BLOCK < n ? b + BLOCK : n;
      for (size_t i = b; i < e; i++) {
        const float v = hval(in, i);
        lane[(i - b) % LANES] = fmaf(v, v, lane[(i - b) % LANES]);
      }
      total += (double)lanes_fold(lane);
    }
    const double var = total / (double)n;
    if (nk__rownorm_needs_fallback(var, p->eps)) return 1;
    *rs = nk__rownorm_rstd(var, p->eps);
    return 0;
  }
  /* LayerNorm and FakeLN: the mean (pass 1, shifted by K = h_0; pass 2, residual sum) */
  const float k0 = hval(in, 0);
  for (size_t b = 0; b < n; b += BLOCK) {
    float lane[LANES] = {0};
    const size_t e = b + BLOCK < n ? b + BLOCK : n;
    for (size_t i = b; i < e; i++) lane[(i - b) % LANES] += hval(in, i) - k0;
    total += (double)lanes_fold(lane);
  }
  if (!isfinite(total)) return 1;
  const double mu = (double)k0 + total / (double)n;
  *mu_hi = (float)mu;
  *mu_lo = (float)(mu - (double)*mu_hi);
  const int is_ln = p->stat == NK_NORMQ_STAT_LN;
  double s2 = 0.0, dsum = 0.0;
  for (size_t b = 0; b < n; b += BLOCK) {
    float lane[LANES] = {0}, lsum[LANES] = {0};
    const size_t e = b + BLOCK < n ? b + BLOCK : n;
    for (size_t i = b; i < e; i++) {
      const float d = (hval(in, i) - *mu_hi) - *mu_lo;
      if (is_ln) lane[(i - b) % LANES] = fmaf(d, d, lane[(i - b) % LANES]);
      lsum[(i - b) % LANES] += d;
    }
    if (is_ln) s2 += (double)lanes_fold(lane);
    dsum += (double)lanes_fold(lsum);
  }
  if (!is_ln) { /* FakeLN: the refined mean only */
    if (!isfinite(dsum)) return 1;
    s2 = 0.0;
    nk__rownorm_refine_mean(n, dsum, &s2, mu_hi, mu_lo);
    return 0;
  }
  nk__rownorm_refine_mean(n, dsum, &s2, mu_hi, mu_lo);
  const double var = s2 / (double)n;
  if (nk__rownorm_needs_fallback(var, p->eps)) return 1;
  *rs = nk__rownorm_rstd(var, p->eps);
  return 0;
}

static void out_row(const row_in *in, size_t n, const nk_normq_params *p, float mu_hi,
                    float mu_lo, float rs, void *out, float *scale, int8_t *exps, size_t row) {
  if (p->out == NK_NORMQ_OUT_Y) {
    for (size_t i = 0; i < n; i++) nk__store_f32(out, i, yval(in, p, mu_hi, mu_lo, rs, i), in->dt);
    return;
  }
  int8_t *q = out;
  if (p->out == NK_NORMQ_OUT_ROW) {
    uint32_t amax = 0;
    for (size_t i = 0; i < n; i++) {
      const uint32_t a = nk__normq_bits(yval(in, p, mu_hi, mu_lo, rs, i)) & 0x7FFFFFFFu;
      amax = a > amax ? a : amax;
    }
    float pre, inv;
    if (nk__q8_row_factors(amax, &pre, &inv, scale) < 2) {
      memset(q, 0, n);
      return;
    }
    for (size_t i = 0; i < n; i++) {
      float y = yval(in, p, mu_hi, mu_lo, rs, i);
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
      const uint32_t a = nk__normq_bits(yval(in, p, mu_hi, mu_lo, rs, i)) & 0x7FFFFFFFu;
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
      const float v = yval(in, p, mu_hi, mu_lo, rs, i) * f;
      q[i] = nk__q_clamp(sr ? floorf(v + nk__sr_u(key, i)) : rintf(v), Q);
    }
  }
}

static inline void normq_rows(nk_dtype dt, size_t rows, size_t n, const void *x, ptrdiff_t xs,
                              const void *r, ptrdiff_t rs_, void *h, ptrdiff_t hs, void *out,
                              ptrdiff_t os, float *scale, int8_t *exps, ptrdiff_t es,
                              float *mean, float *rstd, const nk_normq_params *p) {
  assert(n > 0);
  const size_t esz = nk_dtype_size(dt);
  const size_t osz = p->out == NK_NORMQ_OUT_Y ? esz : 1;
  for (size_t row = 0; row < rows; row++) {
    const void *xr = row_ptr(x, row, xs, esz);
    const void *rr = r ? row_ptr(r, row, rs_, esz) : NULL;
    void *hr = h ? (void *)row_ptr(h, row, hs, esz) : NULL;
    void *orow = (void *)row_ptr(out, row, os, osz);
    int8_t *erow = exps ? (int8_t *)row_ptr(exps, row, es, 1) : NULL;
    row_in in = {dt, xr, rr};
    if (rr != NULL && hr != NULL) { /* h written by the first pass, read by the others */
      for (size_t i = 0; i < n; i++)
        nk__store_f32(hr, i, nk__load_f32(xr, i, dt) + nk__load_f32(rr, i, dt), dt);
      in.src = hr;
      in.r = NULL;
    }
    float mu_hi, mu_lo, rs;
    if (row_stats(&in, n, p, &mu_hi, &mu_lo, &rs)) {
      nk__normq_row_f64(n, dt, in.src, in.r, orow, scale ? &scale[row] : NULL, erow,
                        mean ? &mean[row] : NULL, rstd ? &rstd[row] : NULL, row, p);
      continue;
    }
    out_row(&in, n, p, mu_hi, mu_lo, rs, orow, scale ? &scale[row] : NULL, erow, row);
    if (mean) mean[row] = mu_hi;
    if (rstd) rstd[row] = rs;
  }
}

#define NK_DEFINE_NORMQ(name, dt)                                                                \
  void name(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride, const void *r,         \
            ptrdiff_t r_stride, void *h, ptrdiff_t h_stride, void *out, ptrdiff_t out_stride,  \
            float *scale, int8_t *exps, ptrdiff_t exp_stride, float *mean, float *rstd,        \
            const nk_normq_params *params) {                                                    \
    normq_rows(dt, rows, cols, x, x_stride, r, r_stride, h, h_stride, out, out_stride, scale,  \
               exps, exp_stride, mean, rstd, params);                                          \
  }

NK_DEFINE_NORMQ(nk_f32_normq__scalar_u64, NK_DTYPE_F32)
NK_DEFINE_NORMQ(nk_bf16_normq__scalar_u64, NK_DTYPE_BF16)
NK_DEFINE_NORMQ(nk_f16_normq__scalar_u64, NK_DTYPE_F16)
