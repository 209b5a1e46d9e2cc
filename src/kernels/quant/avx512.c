/*
 * avx512.c — the AVX-512 normq kernels (fused row statistic + affine + output: float row, int8
 * with a per-row absmax scale, or power-of-two groups; f32/bf16/f16 inputs). Compiled with
 * -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c (and -ffp-contract=off).
 *
 * Contract: quant.h (nk_normq_ukernel_fn). The output bits are those of scalar.c for every
 * input: the same statistics (blocksum with zmm accumulator k holding canonical lanes
 * 16k..16k+15, fold64's fixed tree, double totals in block order), the same f32 operations per
 * element, the same helpers of quant.h for every scalar step (row factors, group exponents,
 * hash), and rows the f32 sums cannot handle go to the shared nk__normq_row_f64.
 *
 * Tail handling: no over-reads, no over-writes: masked loads (masked lanes read +0) and masked
 * stores. In the reductions masked lanes are left unchanged (_mm512_mask_add_ps /
 * _mm512_mask3_fmadd_ps); in the absmax passes they do not enter the max
 * (_mm512_mask_max_epu32). Power-of-two groups need a group size that is a multiple of 16;
 * other group sizes run the scalar kernel of the same dtype (identical bits by definition).
 *
 * Structure: each named kernel is a one-line wrapper around an always-inline body whose dtype
 * is a compile-time constant; per row, the statistic, the residual mode and the gamma/beta
 * presence become compile-time constants through switches, so the inner loops carry no
 * run-time branches besides the parameter dtype and the gain offset.
 */
#include <assert.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/x86/avx512-io.h"
#include "quant.h"
#include "../rownorm/rownorm-common.h"

#define LANES NK_NORMQ_LANES
#define BLOCK NK_NORMQ_BLOCK

/* residual modes of the first pass */
#define RES_NONE 0
#define RES_R 1     /* h = dtype(x + r) recomputed */
#define RES_WRITE 2 /* h = dtype(x + r), also stored to h */

/* reduction kinds */
#define SUM_SHIFT 0 /* acc += h - c0 */
#define SUM_DEV2 1  /* d = (h - c0) - c1; acc = fma(d, d, acc); sum += d */
#define SUM_DEV 2   /* d = (h - c0) - c1; sum += d */
#define SUM_SQ 3    /* acc = fma(h, h, acc) */

#define RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define FLOOR (_MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)

/* xhat kinds */
#define XH_NONE 0
#define XH_RMS 1
#define XH_CENTER 2

NK_INLINE const char *row_at(const void *base, size_t row, ptrdiff_t stride, size_t es) {
  return (const char *)base + (ptrdiff_t)row * stride * (ptrdiff_t)es;
}

/* h for 16 lanes (scalar's hval, with the first-pass store of h) */
NK_INLINE __m512 h16(const void *x, const void *r, void *h, size_t i, __mmask16 m, nk_dtype dt,
                     int res, int full) {
  __m512 v = load16(x, i, m, dt, full);
  if (res == RES_NONE) return v;
  v = _mm512_add_ps(v, load16(r, i, m, dt, full));
  if (res == RES_R) return round16(v, dt);
  if (dt == NK_DTYPE_F32) {
    store16(h, i, m, v, dt, full ? ST_FULL : ST_MASK);
    return v;
  }
  const __m256i b = narrow16(v, dt);
  uint16_t *q = (uint16_t *)h + i;
  if (full) _mm256_storeu_si256((__m256i *)q, b);
  else _mm256_mask_storeu_epi16(q, m, b);
  return widen16(b, dt);
}

NK_INLINE void term(int kind, __m512 *acc, __m512 *sum, __m512 v, __m512 c0, __m512 c1,
                    __mmask16 m, int full) {
  if (kind == SUM_SHIFT) {
    const __m512 t = _mm512_sub_ps(v, c0);
    *acc = full ? _mm512_add_ps(*acc, t) : _mm512_mask_add_ps(*acc, m, *acc, t);
    return;
  }
  const __m512 d = kind == SUM_SQ ? v : _mm512_sub_ps(_mm512_sub_ps(v, c0), c1);
  if (kind != SUM_DEV)
    *acc = full ? _mm512_fmadd_ps(d, d, *acc) : _mm512_mask3_fmadd_ps(d, d, *acc, m);
  if (kind == SUM_DEV2 || kind == SUM_DEV)
    *sum = full ? _mm512_add_ps(*sum, d) : _mm512_mask_add_ps(*sum, m, *sum, d);
}

/* blocksum (quant.h / rownorm.h) of one row's `kind` terms, in double */
NK_INLINE void blocksum(int kind, nk_dtype dt, int res, size_t n, const void *x, const void *r,
                        void *h, float c0f, float c1f, double *total, double *dsum) {
  const __m512 c0 = _mm512_set1_ps(c0f), c1 = _mm512_set1_ps(c1f);
  *total = 0.0;
  *dsum = 0.0;
  for (size_t b = 0; b < n; b += BLOCK) {
    const size_t e = b + BLOCK < n ? b + BLOCK : n;
    __m512 a[4], s[4];
    for (int j = 0; j < 4; j++) a[j] = s[j] = _mm512_setzero_ps();
    size_t i = b;
    for (; i + LANES <= e; i += LANES)
      for (int j = 0; j < 4; j++)
        term(kind, &a[j], &s[j], h16(x, r, h, i + 16 * (size_t)j, 0, dt, res, 1), c0, c1, 0, 1);
    if (i < e) {
      const ptrdiff_t k = (ptrdiff_t)(e - i);
      for (int j = 0; j < 4; j++) {
        const __mmask16 m = mask_first(k - 16 * j);
        if (m) term(kind, &a[j], &s[j], h16(x, r, h, i + 16 * (size_t)j, m, dt, res, 0), c0, c1, m, 0);
      }
    }
    if (kind != SUM_DEV) *total += (double)fold64(a[0], a[1], a[2], a[3]);
    if (kind == SUM_DEV2 || kind == SUM_DEV) *dsum += (double)fold64(s[0], s[1], s[2], s[3]);
  }
}

/* One row's constants. Held in a local (never through `params`): the int8 stores of the
 * output passes may alias any memory, so values read through a pointer the compiler cannot
 * see would be reloaded after every store. */
typedef struct rowc {
  const void *src, *r; /* h = src, or dtype(src + r) */
  const nk_normq_params *p;
  float mu_hi, mu_lo, rs;
  const void *gamma, *beta;
  nk_dtype pdt;
  int offset;
  const char *pf; /* the next row's x, prefetched into L2 during the output pass, or NULL */
} rowc;

/* Statistics of one row (scalar.c's row_stats); res: how pass 1 forms h. Returns 1 for a
 * fallback row. */
NK_INLINE int row_stats(nk_dtype dt, int stat, int res, size_t n, const void *x, const void *r,
                        void *h, const nk_normq_params *p, float *mu_hi, float *mu_lo,
                        float *rs) {
  *mu_hi = *mu_lo = 0.0f;
  *rs = p->inv_sigma;
  double total, dsum;
  if (stat == NK_NORMQ_STAT_RMS) {
    blocksum(SUM_SQ, dt, res, n, x, r, h, 0.0f, 0.0f, &total, &dsum);
    const double var = total / (double)n;
    if (nk__rownorm_needs_fallback(var, p->eps)) return 1;
    *rs = nk__rownorm_rstd(var, p->eps);
    return 0;
  }
  const float k0 = _mm_cvtss_f32(_mm512_castps512_ps128(
      h16(x, r, NULL, 0, 1, dt, res == RES_NONE ? RES_NONE : RES_R, 0)));
  blocksum(SUM_SHIFT, dt, res, n, x, r, h, k0, 0.0f, &total, &dsum);
  if (!isfinite(total)) return 1;
  const double mu = (double)k0 + total / (double)n;
  *mu_hi = (float)mu;
  *mu_lo = (float)(mu - (double)*mu_hi);
  /* pass 2 reads h once written */
  const void *x2 = res == RES_WRITE ? h : x;
  const int res2 = res == RES_WRITE ? RES_NONE : res;
  if (stat == NK_NORMQ_STAT_FAKE) {
    blocksum(SUM_DEV, dt, res2, n, x2, r, NULL, *mu_hi, *mu_lo, &total, &dsum);
    if (!isfinite(dsum)) return 1;
    double s2 = 0.0;
    nk__rownorm_refine_mean(n, dsum, &s2, mu_hi, mu_lo);
    return 0;
  }
  blocksum(SUM_DEV2, dt, res2, n, x2, r, NULL, *mu_hi, *mu_lo, &total, &dsum);
  nk__rownorm_refine_mean(n, dsum, &total, mu_hi, mu_lo);
  const double var = total / (double)n;
  if (nk__rownorm_needs_fallback(var, p->eps)) return 1;
  *rs = nk__rownorm_rstd(var, p->eps);
  return 0;
}

NK_INLINE __m512 param16(const void *p, size_t i, __mmask16 m, nk_dtype dt, nk_dtype pdt,
                         int full) {
  return pdt == NK_DTYPE_F32 ? load16(p, i, m, NK_DTYPE_F32, full) : load16(p, i, m, dt, full);
}

/* y for 16 lanes (scalar's yval). xk: XH_*; hr: residual present; c: gamma | beta bits. */
NK_INLINE __m512 y16(nk_dtype dt, int xk, int hr, uint32_t c, const rowc *w, size_t i,
                     __mmask16 m, int full) {
  if (w->pf) _mm_prefetch(w->pf + i * esize(dt), _MM_HINT_T1);
  __m512 v = load16(w->src, i, m, dt, full);
  if (hr) v = round16(_mm512_add_ps(v, load16(w->r, i, m, dt, full)), dt);
  __m512 xh;
  if (xk == XH_RMS) xh = _mm512_mul_ps(v, _mm512_set1_ps(w->rs));
  else if (xk == XH_CENTER)
    xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(v, _mm512_set1_ps(w->mu_hi)),
                                     _mm512_set1_ps(w->mu_lo)),
                       _mm512_set1_ps(w->rs));
  else xh = v;
  __m512 g = xh, b = xh;
  if (c & NK_NORMQ_HAS_GAMMA) {
    g = param16(w->gamma, i, m, dt, w->pdt, full);
    if (w->offset) g = _mm512_add_ps(_mm512_set1_ps(1.0f), g);
  }
  if (c & NK_NORMQ_HAS_BETA) b = param16(w->beta, i, m, dt, w->pdt, full);
  if ((c & NK_NORMQ_HAS_GAMMA) && (c & NK_NORMQ_HAS_BETA)) return _mm512_fmadd_ps(xh, g, b);
  if (c & NK_NORMQ_HAS_GAMMA) return _mm512_mul_ps(xh, g);
  if (c & NK_NORMQ_HAS_BETA) return _mm512_add_ps(xh, b);
  return xh;
}

NK_INLINE __m512i absbits(__m512 y) {
  return _mm512_and_si512(_mm512_castps_si512(y), _mm512_set1_epi32(0x7FFFFFFF));
}

NK_INLINE __m512 clampq(__m512 t, float q) {
  return _mm512_max_ps(_mm512_min_ps(t, _mm512_set1_ps(q)), _mm512_set1_ps(-q));
}

/* 16 int8 from 16 integral floats in [-127, 127] */
NK_INLINE void store_q16(int8_t *q, size_t i, __mmask16 m, __m512 t, int full) {
  const __m128i b = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t));
  if (full) _mm_storeu_si128((__m128i *)(q + i), b);
  else _mm_mask_storeu_epi8(q + i, m, b);
}

/* OUT_ROW: |v| <= 127 (1 + 2^-24)^2 < 127.5 (inv = RN(127 / A), |y| <= A), so rint(v) is in
 * [-127, 127] and the clamp of scalar.c never acts: round to int32 directly (vcvtps2dq with
 * embedded round-to-nearest-even) and narrow with saturation (which then never saturates). */
NK_INLINE void store_row_q16(int8_t *q, size_t i, __mmask16 m, __m512 v, int full) {
  const __m128i b = _mm512_cvtsepi32_epi8(_mm512_cvt_roundps_epi32(v, RNE));
  if (full) _mm_storeu_si128((__m128i *)(q + i), b);
  else _mm_mask_storeu_epi8(q + i, m, b);
}

/* The stochastic-rounding u of quant.h's nk__sr_u for columns i .. i + 15. */
NK_INLINE __m512 sr_u16(uint32_t key, size_t i) {
  __m512i x = _mm512_xor_si512(
      _mm512_set1_epi32((int)key),
      _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)i),
                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x7FEB352Du));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846CA68Bu));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(x, 8)), _mm512_set1_ps(0x1p-24f));
}


NK_INLINE void out_row(nk_dtype dt, int xk, int hr, uint32_t c, const rowc *w, size_t n,
                       void *out, float *scale, int8_t *exps, size_t row) {
  const nk_normq_params *p = w->p;
  const int out_kind = p->out;
  size_t i;
  if (out_kind == NK_NORMQ_OUT_Y) {
    i = 0;
    if (p->variant & NK_NORMQ_NONTEMPORAL) { /* masked up to the first 64-byte boundary */
      const size_t head = head_to_align64(out, n, dt);
      for (; i < head; i += 16) {
        const __mmask16 m = mask_first((ptrdiff_t)(head - i));
        store16(out, i, m, y16(dt, xk, hr, c, w, i, m, 0), dt, ST_MASK);
      }
      for (i = head; i + 16 <= n; i += 16)
        store16(out, i, 0, y16(dt, xk, hr, c, w, i, 0, 1), dt, ST_STREAM);
    } else {
      for (; i + 16 <= n; i += 16) store16(out, i, 0, y16(dt, xk, hr, c, w, i, 0, 1), dt, ST_FULL);
    }
    if (i < n) {
      const __mmask16 m = mask_first((ptrdiff_t)(n - i));
      store16(out, i, m, y16(dt, xk, hr, c, w, i, m, 0), dt, ST_MASK);
    }
    return;
  }
  int8_t *q = out;
  if (out_kind == NK_NORMQ_OUT_ROW) {
    __m512i am = _mm512_setzero_si512();
    for (i = 0; i + 16 <= n; i += 16) am = _mm512_max_epu32(am, absbits(y16(dt, xk, hr, c, w, i, 0, 1)));
    if (i < n) {
      const __mmask16 m = mask_first((ptrdiff_t)(n - i));
      am = _mm512_mask_max_epu32(am, m, am, absbits(y16(dt, xk, hr, c, w, i, m, 0)));
    }
    float pre, inv;
    if (nk__q8_row_factors((uint32_t)_mm512_reduce_max_epu32(am), &pre, &inv, scale) < 2) {
      memset(q, 0, n);
      return;
    }
    const __m512 vpre = _mm512_set1_ps(pre), vinv = _mm512_set1_ps(inv);
    const int scaled = pre != 1.0f;
    for (i = 0; i + 16 <= n; i += 16) {
      __m512 y = y16(dt, xk, hr, c, w, i, 0, 1);
      if (scaled) y = _mm512_mul_ps(y, vpre);
      store_row_q16(q, i, 0, _mm512_mul_ps(y, vinv), 1);
    }
    if (i < n) {
      const __mmask16 m = mask_first((ptrdiff_t)(n - i));
      __m512 y = y16(dt, xk, hr, c, w, i, m, 0);
      if (scaled) y = _mm512_mul_ps(y, vpre);
      store_row_q16(q, i, m, _mm512_mul_ps(y, vinv), 0);
    }
    return;
  }
  /* power-of-two groups, group % 16 == 0 */
  const size_t G = p->group;
  const int qmax = p->qmax;
  const float Q = (float)qmax;
  const int sr = (p->variant & NK_NORMQ_STOCHASTIC) != 0;
  const uint32_t key = sr ? nk__sr_rowkey(p->seed, (uint64_t)(p->row0 + row)) : 0;
  for (size_t g0 = 0, k = 0; g0 < n; g0 += G, k++) {
    const size_t g1 = g0 + G < n ? g0 + G : n;
    if (G <= 64 && g1 - g0 == G) { /* a full group of at most 4 vectors: y stays in registers */
      const size_t nv = G / 16;
      __m512 yv[4];
      __m512i am = _mm512_setzero_si512();
      for (size_t j = 0; j < nv; j++) {
        yv[j] = y16(dt, xk, hr, c, w, g0 + 16 * (size_t)j, 0, 1);
        am = _mm512_max_epu32(am, absbits(yv[j]));
      }
      const uint32_t mb = (uint32_t)_mm512_reduce_max_epu32(am);
      const int e = nk__pow2_group_exp(mb, qmax);
      exps[k] = (int8_t)e;
      if (e == NK_NORMQ_EXP_NAN || mb == 0) {
        memset(q + g0, 0, G);
        continue;
      }
      const __m512 f = _mm512_set1_ps(nk__pow2_factor(e));
      for (size_t j = 0; j < nv; j++) {
        const __m512 v = _mm512_mul_ps(yv[j], f);
        const __m512 t = sr ? _mm512_roundscale_ps(_mm512_add_ps(v, sr_u16(key, g0 + 16 * (size_t)j)), FLOOR)
                            : _mm512_roundscale_ps(v, RNE);
        store_q16(q, g0 + 16 * (size_t)j, 0, clampq(t, Q), 1);
      }
      continue;
    }
    __m512i am = _mm512_setzero_si512();
    for (i = g0; i + 16 <= g1; i += 16) am = _mm512_max_epu32(am, absbits(y16(dt, xk, hr, c, w, i, 0, 1)));
    if (i < g1) {
      const __mmask16 m = mask_first((ptrdiff_t)(g1 - i));
      am = _mm512_mask_max_epu32(am, m, am, absbits(y16(dt, xk, hr, c, w, i, m, 0)));
    }
    const uint32_t mb = (uint32_t)_mm512_reduce_max_epu32(am);
    const int e = nk__pow2_group_exp(mb, qmax);
    exps[k] = (int8_t)e;
    if (e == NK_NORMQ_EXP_NAN || mb == 0) {
      memset(q + g0, 0, g1 - g0);
      continue;
    }
    const __m512 f = _mm512_set1_ps(nk__pow2_factor(e));
    for (i = g0; i < g1; i += 16) {
      const int full = i + 16 <= g1;
      const __mmask16 m = full ? (__mmask16)0xFFFF : mask_first((ptrdiff_t)(g1 - i));
      const __m512 v = _mm512_mul_ps(full ? y16(dt, xk, hr, c, w, i, 0, 1) : y16(dt, xk, hr, c, w, i, m, 0), f);
      const __m512 t = sr ? _mm512_roundscale_ps(_mm512_add_ps(v, sr_u16(key, i)), FLOOR)
                          : _mm512_roundscale_ps(v, RNE);
      store_q16(q, i, m, clampq(t, Q), full);
    }
  }
}

/* gamma/beta presence as compile-time constants */
NK_INLINE void out_row_c(nk_dtype dt, int xk, int hr, const rowc *w, size_t n, void *out,
                         float *scale, int8_t *exps, size_t row) {
  switch (w->p->variant & (NK_NORMQ_HAS_GAMMA | NK_NORMQ_HAS_BETA)) {
    case 0: out_row(dt, xk, hr, 0, w, n, out, scale, exps, row); break;
    case NK_NORMQ_HAS_GAMMA: out_row(dt, xk, hr, NK_NORMQ_HAS_GAMMA, w, n, out, scale, exps, row); break;
    case NK_NORMQ_HAS_BETA: out_row(dt, xk, hr, NK_NORMQ_HAS_BETA, w, n, out, scale, exps, row); break;
    default:
      out_row(dt, xk, hr, NK_NORMQ_HAS_GAMMA | NK_NORMQ_HAS_BETA, w, n, out, scale, exps, row);
      break;
  }
}

NK_INLINE void normq_rows(nk_dtype dt, size_t rows, size_t n, const void *x, ptrdiff_t xs,
                          const void *r, ptrdiff_t rst, void *h, ptrdiff_t hs, void *out,
                          ptrdiff_t os, float *scale, int8_t *exps, ptrdiff_t es, float *mean,
                          float *rstd, const nk_normq_params *p) {
  assert(n > 0);
  const size_t esz = esize(dt), osz = p->out == NK_NORMQ_OUT_Y ? esz : 1;
  const int stat = p->stat;
  const int xk = stat == NK_NORMQ_STAT_NONE ? XH_NONE : stat == NK_NORMQ_STAT_RMS ? XH_RMS : XH_CENTER;
  const int res = r == NULL ? RES_NONE : h != NULL ? RES_WRITE : RES_R;
  for (size_t row = 0; row < rows; row++) {
    const void *xr = row_at(x, row, xs, esz);
    const void *rr = r ? row_at(r, row, rst, esz) : NULL;
    void *hrow = h ? (void *)row_at(h, row, hs, esz) : NULL;
    void *orow = (void *)row_at(out, row, os, osz);
    int8_t *erow = exps ? (int8_t *)row_at(exps, row, es, 1) : NULL;
    rowc w = {xr, rr, p, 0.0f, 0.0f, 1.0f, p->gamma, p->beta, p->param_dtype,
              (p->variant & NK_NORMQ_OFFSET) != 0,
              (p->variant & NK_NORMQ_PREFETCH) && row + 1 < rows ? row_at(x, row + 1, xs, esz) : NULL};
    int fb = 0;
    switch (stat) {
      case NK_NORMQ_STAT_NONE: break;
      case NK_NORMQ_STAT_RMS:
        fb = res == RES_NONE ? row_stats(dt, NK_NORMQ_STAT_RMS, RES_NONE, n, xr, rr, hrow, p, &w.mu_hi, &w.mu_lo, &w.rs)
           : res == RES_R ? row_stats(dt, NK_NORMQ_STAT_RMS, RES_R, n, xr, rr, hrow, p, &w.mu_hi, &w.mu_lo, &w.rs)
                          : row_stats(dt, NK_NORMQ_STAT_RMS, RES_WRITE, n, xr, rr, hrow, p, &w.mu_hi, &w.mu_lo, &w.rs);
        break;
      case NK_NORMQ_STAT_LN:
        fb = res == RES_NONE ? row_stats(dt, NK_NORMQ_STAT_LN, RES_NONE, n, xr, rr, hrow, p, &w.mu_hi, &w.mu_lo, &w.rs)
           : res == RES_R ? row_stats(dt, NK_NORMQ_STAT_LN, RES_R, n, xr, rr, hrow, p, &w.mu_hi, &w.mu_lo, &w.rs)
                          : row_stats(dt, NK_NORMQ_STAT_LN, RES_WRITE, n, xr, rr, hrow, p, &w.mu_hi, &w.mu_lo, &w.rs);
        break;
      default:
        fb = res == RES_NONE ? row_stats(dt, NK_NORMQ_STAT_FAKE, RES_NONE, n, xr, rr, hrow, p, &w.mu_hi, &w.mu_lo, &w.rs)
           : res == RES_R ? row_stats(dt, NK_NORMQ_STAT_FAKE, RES_R, n, xr, rr, hrow, p, &w.mu_hi, &w.mu_lo, &w.rs)
                          : row_stats(dt, NK_NORMQ_STAT_FAKE, RES_WRITE, n, xr, rr, hrow, p, &w.mu_hi, &w.mu_lo, &w.rs);
        break;
    }
    if (res == RES_WRITE) { /* later passes read h */
      w.src = hrow;
      w.r = NULL;
    }
    if (fb) {
      nk__normq_row_f64(n, dt, w.src, w.r, orow, scale ? &scale[row] : NULL, erow,
                        mean ? &mean[row] : NULL, rstd ? &rstd[row] : NULL, row, p);
      continue;
    }
    const int hr = w.r != NULL;
    float *sc = scale ? &scale[row] : NULL;
    if (xk == XH_NONE) {
      if (hr) out_row_c(dt, XH_NONE, 1, &w, n, orow, sc, erow, row);
      else out_row_c(dt, XH_NONE, 0, &w, n, orow, sc, erow, row);
    } else if (xk == XH_RMS) {
      if (hr) out_row_c(dt, XH_RMS, 1, &w, n, orow, sc, erow, row);
      else out_row_c(dt, XH_RMS, 0, &w, n, orow, sc, erow, row);
    } else {
      if (hr) out_row_c(dt, XH_CENTER, 1, &w, n, orow, sc, erow, row);
      else out_row_c(dt, XH_CENTER, 0, &w, n, orow, sc, erow, row);
    }
    if (mean) mean[row] = w.mu_hi;
    if (rstd) rstd[row] = w.rs;
  }
}

#define NK_DEFINE_NORMQ(name, dt, scalar_fn)                                                     \
  void name(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride, const void *r,         \
            ptrdiff_t r_stride, void *h, ptrdiff_t h_stride, void *out, ptrdiff_t out_stride,  \
            float *scale, int8_t *exps, ptrdiff_t exp_stride, float *mean, float *rstd,        \
            const nk_normq_params *params) {                                                    \
    if (params->out == NK_NORMQ_OUT_POW2 && params->group % 16 != 0) {                          \
      scalar_fn(rows, cols, x, x_stride, r, r_stride, h, h_stride, out, out_stride, scale,     \
                exps, exp_stride, mean, rstd, params);                                         \
      return;                                                                                   \
    }                                                                                           \
    normq_rows(dt, rows, cols, x, x_stride, r, r_stride, h, h_stride, out, out_stride, scale,  \
               exps, exp_stride, mean, rstd, params);                                          \
  }

NK_DEFINE_NORMQ(nk_f32_normq__avx512_u64, NK_DTYPE_F32, nk_f32_normq__scalar_u64)
NK_DEFINE_NORMQ(nk_bf16_normq__avx512_u64, NK_DTYPE_BF16, nk_bf16_normq__scalar_u64)
NK_DEFINE_NORMQ(nk_f16_normq__avx512_u64, NK_DTYPE_F16, nk_f16_normq__scalar_u64)
