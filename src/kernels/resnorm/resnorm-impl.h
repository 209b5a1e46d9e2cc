/*
 * resnorm-impl.h — the research-norm kernels, one portable source compiled once per ISA.
 * Include it from scalar.c, avx2.c or avx512.c after defining NK_RN_SUFFIX and NK_RN_NAME.
 * The contract and the canonical arithmetic are in resnorm.h. Data are processed in blocks of
 * B = 64 elements: converted to f32 into a local array, computed with element-wise f32
 * operations (the compiler vectorizes the lanes; the order of operations on each element is
 * the written one), converted back. Sums: 16 double lanes (runs) or one double per channel.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "convert.h"
#include "resnorm.h"
#include "kernels/softmax/softmax-common.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define NK_RN_CAT2(a, b) a##b
#define NK_RN_CAT(a, b) NK_RN_CAT2(a, b)
#define FN(name) NK_RN_CAT(nk_resnorm_##name##__, NK_RN_SUFFIX)
#define INL static inline __attribute__((always_inline))
#define B 64
#define NL 16

/* ---- conversions (exact widening, integer RNE narrowing: the same bits on every path) ---- */

INL void ld(float *restrict o, const void *p, size_t n, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) {
    memcpy(o, p, n * sizeof(float));
  } else if (dt == NK_DTYPE_BF16) {
    const uint16_t *h = p;
    for (size_t i = 0; i < n; i++) o[i] = nk__bf16_to_f32(h[i]);
  } else {
    const uint16_t *h = p;
#if defined(__AVX512F__)
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(o + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i))));
    for (; i < n; i++) o[i] = nk__f16_to_f32(h[i]);
#else
    for (size_t i = 0; i < n; i++) o[i] = nk__f16_to_f32(h[i]);
#endif
  }
}

INL void st(void *p, const float *restrict v, size_t n, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) {
    memcpy(p, v, n * sizeof(float));
  } else if (dt == NK_DTYPE_BF16) {
    uint16_t *h = p;
    for (size_t i = 0; i < n; i++) h[i] = nk__f32_to_bf16(v[i]);
  } else {
    uint16_t *h = p;
    for (size_t i = 0; i < n; i++) h[i] = nk__f32_to_f16(v[i]);
  }
}

INL const void *at(const void *p, size_t i, nk_dtype dt) {
  return (const char *)p + i * (dt == NK_DTYPE_F32 ? 4 : 2);
}
INL void *atw(void *p, size_t i, nk_dtype dt) {
  return (char *)p + i * (dt == NK_DTYPE_F32 ? 4 : 2);
}

/* ---- 16-lane double sums ---------------------------------------------------------------- */

/* lane[(base + i) % 16] += t[i] for i < n, with base % 16 == 0 (the caller's blocks of 64). */
INL void lanes_add(double *restrict lane, const double *restrict t, size_t n) {
  size_t i = 0;
  for (; i + NL <= n; i += NL)
    for (int l = 0; l < NL; l++) lane[l] += t[i + l];
  for (size_t l = 0; i + l < n; l++) lane[l] += t[i + l];
}
INL double lanes_fold(double *lane) {
  for (int h = NL / 2; h >= 1; h /= 2)
    for (int l = 0; l < h; l++) lane[l] += lane[l + h];
  return lane[0];
}

/* ---- token rows (PowerNorm, UN) ------------------------------------------------------------ */

/* gs of one group of n elements at x: 1 / sqrt(sum x^2 / n + eps) in double (the forward
 * rounds it to f32: group_scale). */
INL double group_scale_d(size_t n, const void *x, nk_dtype dt, float eps) {
  double lane[NL] = {0};
  float xb[B];
  double t[B];
  for (size_t i0 = 0; i0 < n; i0 += B) {
    const size_t m = n - i0 < B ? n - i0 : B;
    ld(xb, at(x, i0, dt), m, dt);
    for (size_t i = 0; i < m; i++) t[i] = (double)xb[i] * (double)xb[i];
    lanes_add(lane, t, m);
  }
  return 1.0 / sqrt(lanes_fold(lane) / (double)n + (double)eps);
}
/* gs of one group of n elements at x: (float)(1 / sqrt(sum x^2 / n + eps)). */
INL float group_scale(size_t n, const void *x, nk_dtype dt, float eps) {
  return (float)group_scale_d(n, x, dt, eps);
}

static void FN(tok_stats)(size_t C, size_t cg, float gs_eps, const void *x, nk_dtype dt,
                          double *acc) {
  const size_t gsz = cg ? cg : C;
  float xb[B];
  for (size_t c0 = 0; c0 < C; c0 += gsz) {
    const float gs = cg ? group_scale(gsz, at(x, c0, dt), dt, gs_eps) : 1.0f;
    for (size_t i0 = 0; i0 < gsz; i0 += B) {
      const size_t m = gsz - i0 < B ? gsz - i0 : B;
      ld(xb, at(x, c0 + i0, dt), m, dt);
      double *a = acc + c0 + i0;
      if (cg)
        for (size_t i = 0; i < m; i++) xb[i] = xb[i] * gs;
      for (size_t i = 0; i < m; i++) a[i] += (double)xb[i] * (double)xb[i];
    }
  }
}

static void FN(tok_norm)(size_t C, size_t cg, float gs_eps, const void *x, void *y, nk_dtype dt,
                         const float *rf, const float *g, const float *b) {
  const size_t gsz = cg ? cg : C;
  float xb[B];
  for (size_t c0 = 0; c0 < C; c0 += gsz) {
    const float gs = cg ? group_scale(gsz, at(x, c0, dt), dt, gs_eps) : 1.0f;
    for (size_t i0 = 0; i0 < gsz; i0 += B) {
      const size_t m = gsz - i0 < B ? gsz - i0 : B, c = c0 + i0;
      ld(xb, at(x, c, dt), m, dt);
      if (cg)
        for (size_t i = 0; i < m; i++) xb[i] = xb[i] * gs;
      for (size_t i = 0; i < m; i++) xb[i] = (xb[i] * rf[c + i]) * g[c + i] + b[c + i];
      st(atw(y, c, dt), xb, m, dt);
    }
  }
}

static void FN(tok_gradsum)(size_t C, size_t cg, float gs_eps, const void *x, const void *dy,
                            nk_dtype dt, const float *rf, double *acc) {
  const size_t gsz = cg ? cg : C;
  float xb[B], gb[B];
  for (size_t c0 = 0; c0 < C; c0 += gsz) {
    const float gs = cg ? group_scale(gsz, at(x, c0, dt), dt, gs_eps) : 1.0f;
    for (size_t i0 = 0; i0 < gsz; i0 += B) {
      const size_t m = gsz - i0 < B ? gsz - i0 : B, c = c0 + i0;
      ld(xb, at(x, c, dt), m, dt);
      ld(gb, at(dy, c, dt), m, dt);
      if (cg)
        for (size_t i = 0; i < m; i++) xb[i] = xb[i] * gs;
      for (size_t i = 0; i < m; i++) xb[i] = xb[i] * rf[c + i];
      double *a0 = acc + c, *a1 = acc + C + c, *a2 = acc + 2 * C + c;
      for (size_t i = 0; i < m; i++) {
        a0[i] += (double)gb[i] * (double)xb[i];
        a1[i] += (double)xb[i] * (double)xb[i];
        a2[i] += (double)gb[i];
      }
    }
  }
}

/* du of a block: ((gain * dy) - coef * z) * rb, z = u * rf. */
INL void tok_du(size_t m, const float *u, const float *gy, const float *rf, const float *gain,
                const float *coef, const float *rb, float *du) {
  for (size_t i = 0; i < m; i++) {
    const float z = u[i] * rf[i];
    du[i] = ((gain[i] * gy[i]) - coef[i] * z) * rb[i];
  }
}

/* dx of the token rows. With group scaling, the chain rule through u = x gs,
 * dx = gs (du - u mean_k(du u)), is evaluated in double from the double gs and u = x gs: with the
 * f32 u of the forward it cancels (a group of one channel gives du (1 - u^2), and 1 - u^2 ~ gs_eps
 * / x^2 loses every digit to u's rounding: found by tests/fuzz/resnorm.c). du itself is the f32
 * map of resnorm.h (from the forward's f32 u). */
static void FN(tok_dx)(size_t C, size_t cg, float gs_eps, const void *x, const void *dy,
                       void *dx, nk_dtype dt, const float *rf, const float *gain,
                       const float *coef, const float *rb) {
  const size_t gsz = cg ? cg : C;
  float ub[B], gb[B], du[B], xb[B];
  double t[B];
  for (size_t c0 = 0; c0 < C; c0 += gsz) {
    float gs = 1.0f;
    double gsd = 1.0, k = 0.0;
    if (cg) {
      gsd = group_scale_d(gsz, at(x, c0, dt), dt, gs_eps);
      gs = (float)gsd;
      double lane[NL] = {0};
      for (size_t i0 = 0; i0 < gsz; i0 += B) {
        const size_t m = gsz - i0 < B ? gsz - i0 : B, c = c0 + i0;
        ld(xb, at(x, c, dt), m, dt);
        ld(gb, at(dy, c, dt), m, dt);
        for (size_t i = 0; i < m; i++) ub[i] = xb[i] * gs;
        tok_du(m, ub, gb, rf + c, gain + c, coef + c, rb + c, du);
        for (size_t i = 0; i < m; i++) t[i] = (double)du[i] * ((double)xb[i] * gsd);
        lanes_add(lane, t, m);
      }
      k = lanes_fold(lane) / (double)gsz;
    }
    for (size_t i0 = 0; i0 < gsz; i0 += B) {
      const size_t m = gsz - i0 < B ? gsz - i0 : B, c = c0 + i0;
      ld(xb, at(x, c, dt), m, dt);
      ld(gb, at(dy, c, dt), m, dt);
      for (size_t i = 0; i < m; i++) ub[i] = cg ? xb[i] * gs : xb[i];
      tok_du(m, ub, gb, rf + c, gain + c, coef + c, rb + c, du);
      if (cg)
        for (size_t i = 0; i < m; i++)
          du[i] = (float)(gsd * ((double)du[i] - ((double)xb[i] * gsd) * k));
      st(atw(dx, c, dt), du, m, dt);
    }
  }
}

/* ---- EvoNorm -------------------------------------------------------------------------------- */

INL float f_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* sigmoid(w), resnorm.h. */
INL float rn_sigmoid(float w) {
  float t = -fabsf(w);
  t = t < -104.0f ? -104.0f : t; /* NaN: false, stays NaN */
  const int nan = t != t;
  const float tt = nan ? 0.0f : t;
  const float fn = (tt * NK_SM_LOG2E + 0x1.8p23f) - 0x1.8p23f;
  float r = tt - fn * NK_SM_LN2_HI;
  r = r - fn * NK_SM_LN2_LO;
  float p = NK_SM_C5;
  p = p * r + NK_SM_C4;
  p = p * r + NK_SM_C3;
  p = p * r + NK_SM_C2;
  p = p * r + NK_SM_C1;
  p = p * r + 1.0f;
  const int32_t n = (int32_t)fn; /* in [-150, 0] */
  const int32_t n1 = n / 2, n2 = n - n1;
  float e = (p * f_from_bits((uint32_t)(n1 + 127) << 23)) * f_from_bits((uint32_t)(n2 + 127) << 23);
  e = nan ? t : e;
  const float one_e = 1.0f + e;
  const float num = w >= 0.0f ? 1.0f : e; /* selects only: no conditional arithmetic */
  return num / one_e;
}

/* v with its bits and-ed with m (m all ones: v; m zero: +0.0). */
INL double dmask(double v, uint64_t m) {
  uint64_t u;
  memcpy(&u, &v, sizeof u);
  u &= m;
  memcpy(&v, &u, sizeof v);
  return v;
}

/* Parameter i of a block starting at c0 (ps: 0 = one value, 1 = per element). */
#define P(arr, i) ((arr)[ps ? c0 + (i) : 0])

/* B0's v x + s_i, rounded once (the f32 product and sum cancel when v x ~ -s_i, and d = that
 * divides x: found by tests/fuzz/resnorm.c). The double product of two floats is exact. */
INL float b0_t(float v, float x, float si) { return (float)((double)v * (double)x + (double)si); }

INL void evo_norm_body(int kind, size_t n, const void *x, void *y, nk_dtype dt,
                       const nk_rn_evo_params *p, const int ps) {
  float xb[B];
  for (size_t c0 = 0; c0 < n; c0 += B) {
    const size_t m = n - c0 < B ? n - c0 : B;
    ld(xb, at(x, c0, dt), m, dt);
    if (kind == NK_RN_B0) {
      for (size_t i = 0; i < m; i++) {
        const float xv = xb[i], sb = P(p->sb, i);
        const float t = b0_t(P(p->v, i), xv, P(p->si, i));
        const int pick_b = (sb >= t) | (sb != sb); /* ties and a NaN s_b pick s_b */
        const float d = pick_b ? sb : t;
        xb[i] = (xv / d) * P(p->g, i) + P(p->b, i);
      }
    } else if (kind == NK_RN_S0) {
      for (size_t i = 0; i < m; i++) {
        const float xv = xb[i];
        const float a = xv * rn_sigmoid(P(p->v, i) * xv);
        xb[i] = (a / P(p->si, i)) * P(p->g, i) + P(p->b, i);
      }
    } else {
      for (size_t i = 0; i < m; i++) xb[i] = xb[i] * P(p->g, i) + P(p->b, i);
    }
    st(atw(y, c0, dt), xb, m, dt);
  }
}

/* The per-element terms of the sums, in double, into t[k][i]. */
INL void evo_terms(int kind, size_t m, const float *xb, const float *gb,
                   const nk_rn_evo_params *p, size_t c0, const int ps, double t[NK_RN_NSUM][B]) {
  if (kind == NK_RN_B0) {
    float q[B], delta[B];
    int32_t bm[B];
    for (size_t i = 0; i < m; i++) {
      const float xv = xb[i], sb = P(p->sb, i);
      const float tt = b0_t(P(p->v, i), xv, P(p->si, i));
      bm[i] = (sb >= tt) | (sb != sb);
      const float d = bm[i] ? sb : tt;
      q[i] = xv / d;
      const float gh = P(p->g, i) * gb[i];
      delta[i] = -(gh * q[i]) / d;
    }
    for (size_t i = 0; i < m; i++) {
      /* selects as bit masks (the same values as bm ? dd : +0.0), so the loop has no branch */
      const double dd = (double)delta[i], ddx = dd * (double)xb[i];
      const uint64_t mb = (uint64_t)0 - (uint64_t)(uint32_t)bm[i];
      t[0][i] = dmask(dd, mb);
      t[1][i] = dmask(dd, ~mb);
      t[2][i] = dmask(ddx, ~mb);
      t[3][i] = (double)gb[i] * (double)q[i];
      t[4][i] = (double)gb[i];
    }
  } else if (kind == NK_RN_S0) {
    for (size_t i = 0; i < m; i++) {
      const float xv = xb[i];
      const float sg = rn_sigmoid(P(p->v, i) * xv);
      const float a = xv * sg;
      const float sp = sg * (1.0f - sg);
      t[0][i] = (double)gb[i] * (double)a;
      t[1][i] = (double)gb[i] * (double)((xv * xv) * sp);
      t[2][i] = t[3][i] = 0.0;
      t[4][i] = (double)gb[i];
    }
  } else {
    for (size_t i = 0; i < m; i++) {
      t[0][i] = t[1][i] = t[2][i] = 0.0;
      t[3][i] = (double)gb[i] * (double)xb[i];
      t[4][i] = (double)gb[i];
    }
  }
}

static void FN(evo_sum_run)(int kind, size_t n, const void *x, const void *dy, nk_dtype dt,
                            const nk_rn_evo_params *p, double *acc, size_t stride) {
  double lane[NK_RN_NSUM][NL];
  memset(lane, 0, sizeof lane);
  float xb[B], gb[B];
  double t[NK_RN_NSUM][B];
  for (size_t c0 = 0; c0 < n; c0 += B) {
    const size_t m = n - c0 < B ? n - c0 : B;
    ld(xb, at(x, c0, dt), m, dt);
    ld(gb, at(dy, c0, dt), m, dt);
    evo_terms(kind, m, xb, gb, p, c0, 0, t);
    for (int k = 0; k < NK_RN_NSUM; k++) lanes_add(lane[k], t[k], m);
  }
  for (int k = 0; k < NK_RN_NSUM; k++) acc[k * stride] += lanes_fold(lane[k]);
}

static void FN(evo_sum_row)(int kind, size_t n, const void *x, const void *dy, nk_dtype dt,
                            const nk_rn_evo_params *p, double *acc, size_t stride) {
  float xb[B], gb[B];
  double t[NK_RN_NSUM][B];
  for (size_t c0 = 0; c0 < n; c0 += B) {
    const size_t m = n - c0 < B ? n - c0 : B;
    ld(xb, at(x, c0, dt), m, dt);
    ld(gb, at(dy, c0, dt), m, dt);
    evo_terms(kind, m, xb, gb, p, c0, 1, t);
    for (int k = 0; k < NK_RN_NSUM; k++) {
      double *a = acc + k * stride + c0;
      for (size_t i = 0; i < m; i++) a[i] += t[k][i];
    }
  }
}

INL void evo_dx_body(int kind, size_t n, const void *x, const void *dy, void *dx, nk_dtype dt,
                     const nk_rn_evo_params *p, const int ps) {
  float xb[B], gb[B];
  for (size_t c0 = 0; c0 < n; c0 += B) {
    const size_t m = n - c0 < B ? n - c0 : B;
    ld(xb, at(x, c0, dt), m, dt);
    ld(gb, at(dy, c0, dt), m, dt);
    if (kind == NK_RN_B0) {
      for (size_t i = 0; i < m; i++) {
        const float xv = xb[i], sb = P(p->sb, i), v = P(p->v, i), si = P(p->si, i);
        const float tt = b0_t(v, xv, si);
        const int bm = (sb >= tt) | (sb != sb);
        const float d = bm ? sb : tt;
        const float gh = P(p->g, i) * gb[i];
        /* d = v x + s_i: gh/d + v delta = gh (1 - v x/d)/d = (gh/d)(s_i/d), evaluated in that
         * form (the sum cancels when s_i << |v x|: found by tests/fuzz/resnorm.c) */
        const float ghd = gh / d;
        float r = bm ? ghd : ghd * (si / d);
        r = r + P(p->kb, i) * (((xv - P(p->mbh, i)) - P(p->mbl, i)) / sb);
        r = r + P(p->ki, i) * (((xv - P(p->mih, i)) - P(p->mil, i)) / si);
        gb[i] = r;
      }
    } else if (kind == NK_RN_S0) {
      for (size_t i = 0; i < m; i++) {
        const float xv = xb[i];
        const float w = P(p->v, i) * xv;
        const float sg = rn_sigmoid(w);
        const float sp = sg * (1.0f - sg);
        const float gh = P(p->g, i) * gb[i];
        float r = (gh / P(p->si, i)) * (sg + w * sp);
        r = r + P(p->ki, i) * (((xv - P(p->mih, i)) - P(p->mil, i)) / P(p->si, i));
        gb[i] = r;
      }
    } else {
      for (size_t i = 0; i < m; i++) gb[i] = P(p->g, i) * gb[i];
    }
    st(atw(dx, c0, dt), gb, m, dt);
  }
}
#undef P

static void FN(evo_norm_run)(int kind, size_t n, const void *x, void *y, nk_dtype dt,
                             const nk_rn_evo_params *p) {
  evo_norm_body(kind, n, x, y, dt, p, 0);
}
static void FN(evo_norm_row)(int kind, size_t n, const void *x, void *y, nk_dtype dt,
                             const nk_rn_evo_params *p) {
  evo_norm_body(kind, n, x, y, dt, p, 1);
}
static void FN(evo_dx_run)(int kind, size_t n, const void *x, const void *dy, void *dx,
                           nk_dtype dt, const nk_rn_evo_params *p) {
  evo_dx_body(kind, n, x, dy, dx, dt, p, 0);
}
static void FN(evo_dx_row)(int kind, size_t n, const void *x, const void *dy, void *dx,
                           nk_dtype dt, const nk_rn_evo_params *p) {
  evo_dx_body(kind, n, x, dy, dx, dt, p, 1);
}

const nk_resnorm_kernels NK_RN_CAT(nk_resnorm_kernels_, NK_RN_SUFFIX) = {
    "nk_resnorm__" NK_RN_NAME, FN(tok_stats),    FN(tok_norm),     FN(tok_gradsum),
    FN(tok_dx),                FN(evo_norm_run), FN(evo_norm_row), FN(evo_sum_run),
    FN(evo_sum_row),           FN(evo_dx_run),   FN(evo_dx_row),
};
