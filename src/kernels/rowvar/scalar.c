/*
 * scalar.c — the portable CRMSNorm and L1 LayerNorm kernels, and the definition of their
 * canonical arithmetic (rowvar.h) that avx2.c and avx512.c reproduce bit for bit.
 *
 * Contract: rowvar.h. No over-reads; a partial block adds fewer terms (lanes that get none stay
 * +0). Accumulation: 64 f32 lanes per block of 1024, fixed fold tree, double totals. Compiled
 * for the baseline ISA with -ffp-contract=off; the canonical FMAs are explicit fmaf() calls.
 */
#include <assert.h>
#include <math.h>

#include "../rownorm/rownorm-common.h"
#include "convert.h"
#include "rowvar.h"

#define LANES NK_ROWNORM_LANES
#define BLOCK NK_ROWNORM_BLOCK

static inline const void *row_ptr(const void *base, size_t row, ptrdiff_t stride, nk_dtype dt) {
  return (const char *)base + (ptrdiff_t)row * stride * (ptrdiff_t)nk_dtype_size(dt);
}

static inline float lanes_fold(float *lane) {
  for (size_t s = LANES / 2; s >= 1; s /= 2)
    for (size_t k = 0; k < s; k++) lane[k] += lane[k + s];
  return lane[0];
}

static inline float gain(const nk_rownorm_params *p, size_t i) {
  const float g = nk__load_f32(p->gamma, i, p->param_dtype);
  return (p->variant & NK_ROWNORM_OFFSET) ? 1.0f + g : g;
}

/* affine step then the LayerNorm Scaling product (rowvar.h) */
static inline float out_f32(const nk_rownorm_params *p, size_t i, float xh) {
  const uint32_t v = p->variant;
  float y = xh;
  if ((v & NK_ROWNORM_HAS_GAMMA) && (v & NK_ROWNORM_HAS_BETA))
    y = fmaf(xh, gain(p, i), nk__load_f32(p->beta, i, p->param_dtype));
  else if (v & NK_ROWNORM_HAS_GAMMA) y = xh * gain(p, i);
  else if (v & NK_ROWNORM_HAS_BETA) y = xh + nk__load_f32(p->beta, i, p->param_dtype);
  return (v & NK_ROWNORM_SCALE) ? y * p->scale : y;
}

static inline float dy_f32(const nk_rownorm_params *p, const void *dy, size_t i, nk_dtype dt) {
  const float g = nk__load_f32(dy, i, dt);
  return (p->variant & NK_ROWNORM_SCALE) ? g * p->scale : g;
}

static inline float sign_f32(float v) { return v > 0.0f ? 1.0f : v < 0.0f ? -1.0f : 0.0f; }

/* ---- CRMSNorm ----------------------------------------------------------------------------- */

static inline void crms_fwd(nk_dtype dt, size_t rows, size_t n, const void *x, ptrdiff_t xs,
                            void *y, ptrdiff_t ys, float *rstd, const nk_rownorm_params *p) {
  assert(n > 0);
  for (size_t row = 0; row < rows; row++) {
    const void *xr = row_ptr(x, row, xs, dt);
    void *yr = (void *)row_ptr(y, row, ys, dt);
    double Q = 0.0, S = 0.0;
    for (size_t b = 0; b < n; b += BLOCK) {
      float lq[LANES] = {0}, ls[LANES] = {0};
      const size_t e = b + BLOCK < n ? b + BLOCK : n;
      for (size_t i = b; i < e; i++) {
        const float v = nk__load_f32(xr, i, dt);
        lq[(i - b) % LANES] = fmaf(v, v, lq[(i - b) % LANES]);
        ls[(i - b) % LANES] += v;
      }
      Q += (double)lanes_fold(lq);
      S += (double)lanes_fold(ls);
    }
    const double q = (Q + S * S) / (double)(n + 1);
    if (!isfinite(Q) || !isfinite(S) || nk__rownorm_needs_fallback(q, p->eps)) {
      nk__rowvar_fwd_row_f64(0, n, dt, xr, yr, NULL, rstd ? &rstd[row] : NULL, p);
      continue;
    }
    const float rs = nk__rownorm_rstd(q, p->eps);
    for (size_t i = 0; i < n; i++) {
      const float v = nk__load_f32(xr, i, dt) * rs;
      nk__store_f32(yr, i, (p->variant & NK_ROWNORM_SCALE) ? v * p->scale : v, dt);
    }
    if (rstd) rstd[row] = rs;
  }
}

static inline void crms_bwd(nk_dtype dt, size_t rows, size_t n, const void *x, ptrdiff_t xs,
                            const void *dy, ptrdiff_t dys, const void *dh, ptrdiff_t dhs,
                            const float *rstd, void *dx, ptrdiff_t dxs,
                            const nk_rownorm_params *p) {
  assert(n > 0);
  for (size_t row = 0; row < rows; row++) {
    const void *xr = row_ptr(x, row, xs, dt), *gr = row_ptr(dy, row, dys, dt);
    const void *dhr = dh ? row_ptr(dh, row, dhs, dt) : NULL;
    void *dxr = (void *)row_ptr(dx, row, dxs, dt);
    const float rs = rstd[row];
    double B = 0.0, S = 0.0;
    for (size_t b = 0; b < n; b += BLOCK) {
      float lb[LANES] = {0}, ls[LANES] = {0};
      const size_t e = b + BLOCK < n ? b + BLOCK : n;
      for (size_t i = b; i < e; i++) {
        const float v = nk__load_f32(xr, i, dt);
        lb[(i - b) % LANES] = fmaf(dy_f32(p, gr, i, dt), v, lb[(i - b) % LANES]);
        ls[(i - b) % LANES] += v;
      }
      B += (double)lanes_fold(lb);
      S += (double)lanes_fold(ls);
    }
    if (!isfinite(B) || !isfinite(S) || !isnormal(rs)) {
      nk__rowvar_bwd_row_f64(0, n, dt, xr, gr, dhr, 0.0f, rs, dxr, NULL, NULL, p);
      continue;
    }
    const double kd = (double)rs * B / (double)(n + 1);
    const float k = (float)kd, a = (float)((double)rs * S * kd);
    for (size_t i = 0; i < n; i++) {
      const float xh = nk__load_f32(xr, i, dt) * rs;
      float d = fmaf(-xh, k, dy_f32(p, gr, i, dt) - a) * rs;
      if (dhr) d += nk__load_f32(dhr, i, dt);
      nk__store_f32(dxr, i, d, dt);
    }
  }
}

/* ---- L1 LayerNorm ------------------------------------------------------------------------- */

static inline void l1_fwd(nk_dtype dt, size_t rows, size_t n, const void *x, ptrdiff_t xs,
                          void *y, ptrdiff_t ys, float *mean, float *rscale,
                          const nk_rownorm_params *p) {
  assert(n > 0);
  for (size_t row = 0; row < rows; row++) {
    const void *xr = row_ptr(x, row, xs, dt);
    void *yr = (void *)row_ptr(y, row, ys, dt);
    const float k0 = nk__load_f32(xr, 0, dt);
    double S1 = 0.0, D = 0.0, A = 0.0;
    for (size_t b = 0; b < n; b += BLOCK) {
      float l[LANES] = {0};
      const size_t e = b + BLOCK < n ? b + BLOCK : n;
      for (size_t i = b; i < e; i++) l[(i - b) % LANES] += nk__load_f32(xr, i, dt) - k0;
      S1 += (double)lanes_fold(l);
    }
    const double mu0 = (double)k0 + S1 / (double)n;
    float mu_hi = (float)mu0, mu_lo = (float)(mu0 - (double)mu_hi);
    for (size_t b = 0; isfinite(S1) && b < n; b += BLOCK) {
      float l[LANES] = {0};
      const size_t e = b + BLOCK < n ? b + BLOCK : n;
      for (size_t i = b; i < e; i++) l[(i - b) % LANES] += (nk__load_f32(xr, i, dt) - mu_hi) - mu_lo;
      D += (double)lanes_fold(l);
    }
    const double mu = ((double)mu_hi + (double)mu_lo) + D / (double)n;
    mu_hi = (float)mu;
    mu_lo = (float)(mu - (double)mu_hi);
    for (size_t b = 0; isfinite(S1) && isfinite(D) && b < n; b += BLOCK) {
      float l[LANES] = {0};
      const size_t e = b + BLOCK < n ? b + BLOCK : n;
      for (size_t i = b; i < e; i++) l[(i - b) % LANES] += fabsf((nk__load_f32(xr, i, dt) - mu_hi) - mu_lo);
      A += (double)lanes_fold(l);
    }
    const double den = NK_L1NORM_C1 * (A / (double)n) + (double)p->eps;
    const float rs = (float)(1.0 / den);
    if (!isfinite(S1) || !isfinite(D) || !isfinite(A) || !isnormal(rs) || nk__l1_tiny_mean(mu)) {
      nk__rowvar_fwd_row_f64(1, n, dt, xr, yr, mean ? &mean[row] : NULL,
                             rscale ? &rscale[row] : NULL, p);
      continue;
    }
    for (size_t i = 0; i < n; i++) {
      const float xh = ((nk__load_f32(xr, i, dt) - mu_hi) - mu_lo) * rs;
      nk__store_f32(yr, i, out_f32(p, i, xh), dt);
    }
    if (mean) mean[row] = mu_hi;
    if (rscale) rscale[row] = rs;
  }
}

static inline void l1_bwd(nk_dtype dt, size_t rows, size_t n, const void *x, ptrdiff_t xs,
                          const void *dy, ptrdiff_t dys, const void *dh, ptrdiff_t dhs,
                          const float *mean, const float *rscale, void *dx, ptrdiff_t dxs,
                          double *dgamma_acc, double *dbeta_acc, const nk_rownorm_params *p) {
  assert(n > 0);
  const int has_gamma = (p->variant & NK_ROWNORM_HAS_GAMMA) != 0;
  for (size_t row = 0; row < rows; row++) {
    const void *xr = row_ptr(x, row, xs, dt), *gr = row_ptr(dy, row, dys, dt);
    const void *dhr = dh ? row_ptr(dh, row, dhs, dt) : NULL;
    void *dxr = (void *)row_ptr(dx, row, dxs, dt);
    const float m = mean[row], rs = rscale[row];
#define GH(i) (has_gamma ? dy_f32(p, gr, (i), dt) * gain(p, (i)) : dy_f32(p, gr, (i), dt))
    double A = 0.0, B = 0.0, C = 0.0, P = 0.0;
    for (size_t b = 0; b < n; b += BLOCK) {
      float la[LANES] = {0}, lb[LANES] = {0}, lc[LANES] = {0};
      const size_t e = b + BLOCK < n ? b + BLOCK : n;
      for (size_t i = b; i < e; i++) {
        const size_t l = (i - b) % LANES;
        const float gh = GH(i), ei = nk__load_f32(xr, i, dt) - m;
        la[l] += gh;
        lb[l] = fmaf(gh, ei, lb[l]);
        lc[l] += ei;
      }
      A += (double)lanes_fold(la);
      B += (double)lanes_fold(lb);
      C += (double)lanes_fold(lc);
    }
    if (!isfinite(A) || !isfinite(B) || !isfinite(C) || !isnormal(rs) || !isfinite(m) ||
        nk__l1_tiny_mean((double)m + C / (double)n)) {
      nk__rowvar_bwd_row_f64(1, n, dt, xr, gr, dhr, m, rs, dxr, dgamma_acc, dbeta_acc, p);
      continue;
    }
    const double dn = (double)n, c0 = C / dn;
    const float mu_lo = (float)c0;
    for (size_t b = 0; b < n; b += BLOCK) {
      float l[LANES] = {0};
      const size_t e = b + BLOCK < n ? b + BLOCK : n;
      for (size_t i = b; i < e; i++)
        l[(i - b) % LANES] += sign_f32(((nk__load_f32(xr, i, dt) - m) - mu_lo) * rs);
      P += (double)lanes_fold(l);
    }
    const double kd = NK_L1NORM_C1 * ((double)rs * (B - c0 * A)) / dn;
    const float kappa = (float)kd, a = (float)(A / dn - kd * P / dn);
    for (size_t i = 0; i < n; i++) {
      const float g = dy_f32(p, gr, i, dt);
      const float xh = ((nk__load_f32(xr, i, dt) - m) - mu_lo) * rs;
      float d = ((GH(i) - a) - kappa * sign_f32(xh)) * rs;
      if (dhr) d += nk__load_f32(dhr, i, dt);
      nk__store_f32(dxr, i, d, dt);
      if (dgamma_acc) dgamma_acc[i] += (double)g * (double)xh;
      if (dbeta_acc) dbeta_acc[i] += (double)g;
    }
#undef GH
  }
}

/* ---- the named kernels -------------------------------------------------------------------- */

#define NK_DEFINE_FWD(name, body, dt)                                                            \
  static void name(size_t rows, size_t cols, const void *x, ptrdiff_t xs, void *y, ptrdiff_t ys, \
                   float *s1, float *s2, const nk_rownorm_params *p) {                          \
    body;                                                                                        \
  }
#define NK_DEFINE_BWD(name, body, dt)                                                            \
  static void name(size_t rows, size_t cols, const void *x, ptrdiff_t xs, const void *dy,        \
                   ptrdiff_t dys, const void *dh, ptrdiff_t dhs, const float *s1,                \
                   const float *s2, void *dx, ptrdiff_t dxs, double *dg, double *db,             \
                   const nk_rownorm_params *p) {                                                 \
    body;                                                                                        \
  }

NK_DEFINE_FWD(nk_f32_crmsnorm_fwd__scalar_u64, ((void)s1, crms_fwd(NK_DTYPE_F32, rows, cols, x, xs, y, ys, s2, p)), 0)
NK_DEFINE_FWD(nk_bf16_crmsnorm_fwd__scalar_u64, ((void)s1, crms_fwd(NK_DTYPE_BF16, rows, cols, x, xs, y, ys, s2, p)), 0)
NK_DEFINE_FWD(nk_f16_crmsnorm_fwd__scalar_u64, ((void)s1, crms_fwd(NK_DTYPE_F16, rows, cols, x, xs, y, ys, s2, p)), 0)
NK_DEFINE_BWD(nk_f32_crmsnorm_bwd__scalar_u64, ((void)s1, (void)dg, (void)db, crms_bwd(NK_DTYPE_F32, rows, cols, x, xs, dy, dys, dh, dhs, s2, dx, dxs, p)), 0)
NK_DEFINE_BWD(nk_bf16_crmsnorm_bwd__scalar_u64, ((void)s1, (void)dg, (void)db, crms_bwd(NK_DTYPE_BF16, rows, cols, x, xs, dy, dys, dh, dhs, s2, dx, dxs, p)), 0)
NK_DEFINE_BWD(nk_f16_crmsnorm_bwd__scalar_u64, ((void)s1, (void)dg, (void)db, crms_bwd(NK_DTYPE_F16, rows, cols, x, xs, dy, dys, dh, dhs, s2, dx, dxs, p)), 0)
NK_DEFINE_FWD(nk_f32_l1norm_fwd__scalar_u64, l1_fwd(NK_DTYPE_F32, rows, cols, x, xs, y, ys, s1, s2, p), 0)
NK_DEFINE_FWD(nk_bf16_l1norm_fwd__scalar_u64, l1_fwd(NK_DTYPE_BF16, rows, cols, x, xs, y, ys, s1, s2, p), 0)
NK_DEFINE_FWD(nk_f16_l1norm_fwd__scalar_u64, l1_fwd(NK_DTYPE_F16, rows, cols, x, xs, y, ys, s1, s2, p), 0)
NK_DEFINE_BWD(nk_f32_l1norm_bwd__scalar_u64, l1_bwd(NK_DTYPE_F32, rows, cols, x, xs, dy, dys, dh, dhs, s1, s2, dx, dxs, dg, db, p), 0)
NK_DEFINE_BWD(nk_bf16_l1norm_bwd__scalar_u64, l1_bwd(NK_DTYPE_BF16, rows, cols, x, xs, dy, dys, dh, dhs, s1, s2, dx, dxs, dg, db, p), 0)
NK_DEFINE_BWD(nk_f16_l1norm_bwd__scalar_u64, l1_bwd(NK_DTYPE_F16, rows, cols, x, xs, dy, dys, dh, dhs, s1, s2, dx, dxs, dg, db, p), 0)

#define NAMES4(kind, dir)                                                                        \
  { "nk_f32_" kind "_" dir "__scalar_u64", "nk_bf16_" kind "_" dir "__scalar_u64",              \
    "nk_f16_" kind "_" dir "__scalar_u64" }

const nk_rowvar_kernels nk_rowvar_kernels_scalar = {
    NK_ISA_SCALAR,
    {nk_f32_crmsnorm_fwd__scalar_u64, nk_bf16_crmsnorm_fwd__scalar_u64, nk_f16_crmsnorm_fwd__scalar_u64},
    {nk_f32_crmsnorm_bwd__scalar_u64, nk_bf16_crmsnorm_bwd__scalar_u64, nk_f16_crmsnorm_bwd__scalar_u64},
    {nk_f32_l1norm_fwd__scalar_u64, nk_bf16_l1norm_fwd__scalar_u64, nk_f16_l1norm_fwd__scalar_u64},
    {nk_f32_l1norm_bwd__scalar_u64, nk_bf16_l1norm_bwd__scalar_u64, nk_f16_l1norm_bwd__scalar_u64},
    NAMES4("crmsnorm", "fwd"), NAMES4("crmsnorm", "bwd"), NAMES4("l1norm", "fwd"),
    NAMES4("l1norm", "bwd")};

const nk_rowvar_kernels *nk__rowvar_kernels(nk_isa isa) {
  switch (isa) {
#if NK_ARCH_X86
    case NK_ISA_AVX512: return &nk_rowvar_kernels_avx512;
    case NK_ISA_AVX2: return &nk_rowvar_kernels_avx2;
#endif
    default: return &nk_rowvar_kernels_scalar;
  }
}
