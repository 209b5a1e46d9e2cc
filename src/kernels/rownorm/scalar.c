/*
 * scalar.c — the portable row-norm kernels, and the definition of the canonical arithmetic
 * (rownorm.h) that the AVX2 and AVX-512 kernels reproduce bit for bit.
 *
 * Contract: rows x cols, any strides >= cols, outputs may alias inputs exactly (each element is
 * read before it is written at the same index). No tail over-reads: the 64 lanes are plain
 * arrays and a partial block simply adds fewer terms (a lane that gets no term stays +0, which
 * the tree then adds: x + 0 == x for every x the lanes can hold, since lanes never hold -0).
 * Accumulation order: see rownorm.h (blocks of 1024, 64 f32 lanes, fixed tree, double total).
 *
 * This file is compiled for the baseline ISA with -ffp-contract=off; the fused multiply-adds of
 * the canonical arithmetic are explicit fmaf() calls (correctly rounded on every machine).
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "convert.h"
#include "rownorm-common.h"
#include "rownorm.h"

#define LANES NK_ROWNORM_LANES
#define BLOCK NK_ROWNORM_BLOCK




static inline const void *row_ptr(const void *base, size_t row, ptrdiff_t stride, nk_dtype dt) {
  return (const char *)base + (ptrdiff_t)row * stride * (ptrdiff_t)nk_dtype_size(dt);
}

/* The fixed tree over 64 lanes: lane[k] += lane[k + s] for s = 32, 16, 8, 4, 2, 1. */
static inline float lanes_fold(float *lane) {
  for (size_t s = LANES / 2; s >= 1; s /= 2)
    for (size_t k = 0; k < s; k++) lane[k] += lane[k + s];
  return lane[0];
}

/* Gain g_i: gamma_i, 1 + gamma_i (offset), or 1. */
static inline float gain(const nk_rownorm_params *p, size_t i) {
  float g = nk__load_f32(p->gamma, i, p->param_dtype);
  return (p->variant & NK_ROWNORM_OFFSET) ? 1.0f + g : g;
}

static inline float affine(const nk_rownorm_params *p, size_t i, float xh) {
  const uint32_t v = p->variant;
  if ((v & NK_ROWNORM_HAS_GAMMA) && (v & NK_ROWNORM_HAS_BETA))
    return fmaf(xh, gain(p, i), nk__load_f32(p->beta, i, p->param_dtype));
  if (v & NK_ROWNORM_HAS_GAMMA) return xh * gain(p, i);
  if (v & NK_ROWNORM_HAS_BETA) return xh + nk__load_f32(p->beta, i, p->param_dtype);
  return xh;
}

/* LayerNorm Scaling: the forward's output times s, the backward's dy times s, y times 1/s. */
static inline float lns_out(const nk_rownorm_params *p, float v) {
  return (p->variant & NK_ROWNORM_SCALE) ? v * p->scale : v;
}
static inline float lns_in(const nk_rownorm_params *p, float v) {
  return (p->variant & NK_ROWNORM_SCALE) ? v * p->scale_inv : v;
}

/* ---- forward ------------------------------------------------------------------------------ */

static inline void fwd_rows(int is_rms, nk_dtype dt, size_t rows, size_t n, const void *x,
                            ptrdiff_t xs, const void *r, ptrdiff_t rs, void *y, ptrdiff_t ys,
                            void *h, ptrdiff_t hs, float *mean, float *rstd,
                            const nk_rownorm_params *p) {
  assert(n > 0);
  for (size_t row = 0; row < rows; row++) {
    const void *xr = row_ptr(x, row, xs, dt);
    const void *rr = r ? row_ptr(r, row, rs, dt) : NULL;
    void *yr = (void *)row_ptr(y, row, ys, dt);
    void *hr = h ? (void *)row_ptr(h, row, hs, dt) : NULL;
    /* The normalized input: h written in pass 1 and reread, or x + r recomputed, or x. */
    const void *src = xr;
    if (rr != NULL && hr != NULL) {
      for (size_t i = 0; i < n; i++) nk__store_f32(hr, i, nk__load_f32(xr, i, dt) + nk__load_f32(rr, i, dt), dt);
      src = hr;
      rr = NULL;
    }
#define HV(i) (rr ? nk__round_to(nk__load_f32(xr, (i), dt) + nk__load_f32(rr, (i), dt), dt) : nk__load_f32(src, (i), dt))
    const float eps = p->eps;
    double total = 0.0;
    float mu_hi = 0.0f, mu_lo = 0.0f, rs_f;
    int fallback = 0;
    if (!is_rms) {
      const float k0 = HV(0);
      for (size_t b = 0; b < n; b += BLOCK) {
        float lane[LANES] = {0};
        const size_t e = b + BLOCK < n ? b + BLOCK : n;
        for (size_t i = b; i < e; i++) lane[(i - b) % LANES] += HV(i) - k0;
        total += (double)lanes_fold(lane);
      }
      const double mu = (double)k0 + total / (double)n;
      fallback = !isfinite(total);
      mu_hi = (float)mu;
      mu_lo = (float)(mu - (double)mu_hi);
      /* pass 2: squares and the residual sum of the centred values (the corrected two-pass
       * algorithm: the residual mean delta refines the mean and the variance) */
      total = 0.0;
      double dsum = 0.0;
      for (size_t b = 0; !fallback && b < n; b += BLOCK) {
        float lane[LANES] = {0}, lsum[LANES] = {0};
        const size_t e = b + BLOCK < n ? b + BLOCK : n;
        for (size_t i = b; i < e; i++) {
          const float d = (HV(i) - mu_hi) - mu_lo;
          lane[(i - b) % LANES] = fmaf(d, d, lane[(i - b) % LANES]);
          lsum[(i - b) % LANES] += d;
        }
        total += (double)lanes_fold(lane);
        dsum += (double)lanes_fold(lsum);
      }
      if (!fallback) nk__rownorm_refine_mean(n, dsum, &total, &mu_hi, &mu_lo);
    } else {
      for (size_t b = 0; b < n; b += BLOCK) {
        float lane[LANES] = {0};
        const size_t e = b + BLOCK < n ? b + BLOCK : n;
        for (size_t i = b; i < e; i++) {
          const float v = HV(i);
          lane[(i - b) % LANES] = fmaf(v, v, lane[(i - b) % LANES]);
        }
        total += (double)lanes_fold(lane);
      }
    }
    const double var = total / (double)n;
    if (fallback || nk__rownorm_needs_fallback(var, eps)) {
      nk__rownorm_fwd_row_f64(is_rms, n, dt, src, rr, yr, mean ? &mean[row] : NULL,
                              rstd ? &rstd[row] : NULL, p);
      continue;
    }
    rs_f = nk__rownorm_rstd(var, eps);
    for (size_t i = 0; i < n; i++) {
      const float v = HV(i);
      const float xh = is_rms ? v * rs_f : ((v - mu_hi) - mu_lo) * rs_f;
      nk__store_f32(yr, i, lns_out(p, affine(p, i, xh)), dt);
    }
#undef HV
    if (mean) mean[row] = mu_hi;
    if (rstd) rstd[row] = rs_f;
  }
}

/* ---- backward ----------------------------------------------------------------------------- */

static inline void bwd_rows(int is_rms, nk_dtype dt, size_t rows, size_t n, const void *x,
                            ptrdiff_t xs, const void *dy, ptrdiff_t dys, const void *dh,
                            ptrdiff_t dhs, const float *mean, const float *rstd, void *dx,
                            ptrdiff_t dxs, double *dgamma_acc, double *dbeta_acc,
                            const nk_rownorm_params *p) {
  assert(n > 0);
  const int from_y = (p->variant & NK_ROWNORM_FROM_Y) != 0;
  const int has_gamma = (p->variant & NK_ROWNORM_HAS_GAMMA) != 0;
  const int has_beta = (p->variant & NK_ROWNORM_HAS_BETA) != 0;
  for (size_t row = 0; row < rows; row++) {
    const void *xr = row_ptr(x, row, xs, dt);
    const void *gr = row_ptr(dy, row, dys, dt);
    const void *dhr = dh ? row_ptr(dh, row, dhs, dt) : NULL;
    void *dxr = (void *)row_ptr(dx, row, dxs, dt);
    const float m = (!is_rms && !from_y) ? mean[row] : 0.0f;
    const float rs = (p->variant & NK_ROWNORM_FIXED_RSTD) ? p->fixed_rstd : rstd[row];
#define DY(i) lns_out(p, nk__load_f32(gr, (i), dt))
#define GH(i) (has_gamma ? DY(i) * gain(p, (i)) : DY(i))
#define XH(i)                                                                                    \
  (from_y ? (has_beta ? lns_in(p, nk__load_f32(xr, (i), dt)) - nk__load_f32(p->beta, (i), p->param_dtype) : lns_in(p, nk__load_f32(xr, (i), dt))) *  \
                (p->ginv ? p->ginv[(i)] : 1.0f)                                                  \
          : nk__load_f32(xr, (i), dt) * rs)
    double A = 0.0, B = 0.0, C = 0.0;
    for (size_t b = 0; b < n; b += BLOCK) {
      float la[LANES] = {0}, lb[LANES] = {0}, lc[LANES] = {0};
      const size_t e = b + BLOCK < n ? b + BLOCK : n;
      for (size_t i = b; i < e; i++) {
        const size_t l = (i - b) % LANES;
        const float gh = GH(i);
        if (!is_rms && !from_y) {
          const float ei = nk__load_f32(xr, i, dt) - m;
          la[l] += gh;
          lb[l] = fmaf(gh, ei, lb[l]);
          lc[l] += ei;
        } else {
          if (!is_rms) la[l] += gh;
          lb[l] = fmaf(gh, XH(i), lb[l]);
        }
      }
      A += (double)lanes_fold(la);
      B += (double)lanes_fold(lb);
      C += (double)lanes_fold(lc);
    }
    if (!isfinite(A) || !isfinite(B) || !isfinite(C) || !isnormal(rs) || !isfinite(m)) {
      nk__rownorm_bwd_row_f64(is_rms, n, dt, xr, gr, dhr, m, rs, dxr, dgamma_acc, dbeta_acc, p);
      continue;
    }
    float a, bb, mu_lo = 0.0f;
    nk__rownorm_bwd_coeffs(is_rms, from_y, (p->variant & NK_ROWNORM_FIXED_RSTD) != 0, n, A, B, C,
                           rs, &a, &bb, &mu_lo);
    for (size_t i = 0; i < n; i++) {
      const float g = DY(i);
      const float gh = GH(i);
      const float xh = (!is_rms && !from_y) ? ((nk__load_f32(xr, i, dt) - m) - mu_lo) * rs : XH(i);
      float d = fmaf(-xh, bb, gh - a) * rs;
      if (dhr) d += nk__load_f32(dhr, i, dt);
      nk__store_f32(dxr, i, d, dt);
      if (dgamma_acc) dgamma_acc[i] += (double)g * (double)xh;
      if (dbeta_acc) dbeta_acc[i] += (double)g;
    }
#undef DY
#undef GH
#undef XH
  }
}

/* ---- the named kernels (rownorm.inc) ------------------------------------------------------- */

#define NK_DEFINE_FWD(name, is_rms, dt)                                                          \
  void name(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride, const void *r,         \
            ptrdiff_t r_stride, void *y, ptrdiff_t y_stride, void *h, ptrdiff_t h_stride,      \
            float *mean, float *rstd, const nk_rownorm_params *params) {                        \
    fwd_rows(is_rms, dt, rows, cols, x, x_stride, r, r_stride, y, y_stride, h, h_stride, mean, \
             rstd, params);                                                                     \
  }
#define NK_DEFINE_BWD(name, is_rms, dt)                                                          \
  void name(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride, const void *dy,        \
            ptrdiff_t dy_stride, const void *dh, ptrdiff_t dh_stride, const float *mean,        \
            const float *rstd, void *dx, ptrdiff_t dx_stride, double *dgamma_acc,               \
            double *dbeta_acc, const nk_rownorm_params *params) {                               \
    bwd_rows(is_rms, dt, rows, cols, x, x_stride, dy, dy_stride, dh, dh_stride, mean, rstd, dx, \
             dx_stride, dgamma_acc, dbeta_acc, params);                                         \
  }

NK_DEFINE_FWD(nk_f32_layernorm_fwd__scalar_u64, 0, NK_DTYPE_F32)
NK_DEFINE_FWD(nk_bf16_layernorm_fwd__scalar_u64, 0, NK_DTYPE_BF16)
NK_DEFINE_FWD(nk_f16_layernorm_fwd__scalar_u64, 0, NK_DTYPE_F16)
NK_DEFINE_FWD(nk_f32_rmsnorm_fwd__scalar_u64, 1, NK_DTYPE_F32)
NK_DEFINE_FWD(nk_bf16_rmsnorm_fwd__scalar_u64, 1, NK_DTYPE_BF16)
NK_DEFINE_FWD(nk_f16_rmsnorm_fwd__scalar_u64, 1, NK_DTYPE_F16)
NK_DEFINE_BWD(nk_f32_layernorm_bwd__scalar_u64, 0, NK_DTYPE_F32)
NK_DEFINE_BWD(nk_bf16_layernorm_bwd__scalar_u64, 0, NK_DTYPE_BF16)
NK_DEFINE_BWD(nk_f16_layernorm_bwd__scalar_u64, 0, NK_DTYPE_F16)
NK_DEFINE_BWD(nk_f32_rmsnorm_bwd__scalar_u64, 1, NK_DTYPE_F32)
NK_DEFINE_BWD(nk_bf16_rmsnorm_bwd__scalar_u64, 1, NK_DTYPE_BF16)
NK_DEFINE_BWD(nk_f16_rmsnorm_bwd__scalar_u64, 1, NK_DTYPE_F16)
