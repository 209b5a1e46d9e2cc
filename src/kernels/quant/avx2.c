/*
 * avx2.c — the AVX2 normq kernels (fused row statistic + affine + output: float row, int8
 * with a per-row absmax scale, or power-of-two groups; f32/bf16/f16 inputs). Compiled with
 * -mavx2 -mfma -mf16c (and -ffp-contract=off).
 *
 * Contract: quant.h (nk_normq_ukernel_fn). The output bits are those of scalar.c for every
 * input: the same statistics (blocksum with ymm accumulator k holding canonical lanes
 * 8k..8k+7, fold64's fixed tree, double totals in block order), the same f32 operations per
 * element, the same helpers of quant.h for every scalar step (row factors, group exponents,
 * hash), and rows the f32 sums cannot handle go to the shared nk__normq_row_f64.
 *
 * Tail handling: no over-reads, no over-writes: vmaskmov loads for f32 tails and a zeroed
 * 8-element buffer for 16-bit tails (kernels/x86/avx2-io.h), and the same for stores. In the
 * reductions lanes past the end keep their value (a blend, keep8); in the absmax passes they
 * are zeroed before the max. Power-of-two groups need a group size that is a multiple of 8;
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

#include "kernels/x86/avx2-io.h"
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

/* xhat kinds */
#define XH_NONE 0
#define XH_RMS 1
#define XH_CENTER 2

NK_INLINE const char *qrow_at(const void *base, size_t row, ptrdiff_t stride, size_t es) {
  return (const char *)base + (ptrdiff_t)row * stride * (ptrdiff_t)es;
}

/* h for 8 lanes (scalar's hval, with the first-pass store of h); k valid lanes when !full */
NK_INLINE __m256 h8(const void *x, const void *r, void *h, size_t i, size_t k, nk_dtype dt,
                    int res, int full) {
  __m256 v = load8(x, i, k, dt, full);
  if (res == RES_NONE) return v;
  v = _mm256_add_ps(v, load8(r, i, k, dt, full));
  if (res == RES_R) return round8(v, dt);
  if (dt == NK_DTYPE_F32) {
    store8(h, i, k, v, dt, full ? ST_FULL : ST_PART);
    return v;
  }
  const __m128i b = narrow8(v, dt);
  uint16_t *q = (uint16_t *)h + i;
  if (full) _mm_storeu_si128((__m128i *)q, b);
  else {
    uint16_t buf[8];
    _mm_storeu_si128((__m128i *)buf, b);
    memcpy(q, buf, k * sizeof(uint16_t));
  }
  return widen8(b, dt);
}

NK_INLINE void term(int kind, __m256 *acc, __m256 *sum, __m256 v, __m256 c0, __m256 c1,
                    size_t k, int full) {
  if (kind == SUM_SHIFT) {
    *acc = keep8(*acc, _mm256_add_ps(*acc, _mm256_sub_ps(v, c0)), k, full);
    return;
  }
  const __m256 d = kind == SUM_SQ ? v : _mm256_sub_ps(_mm256_sub_ps(v, c0), c1);
  if (kind != SUM_DEV) *acc = keep8(*acc, _mm256_fmadd_ps(d, d, *acc), k, full);
  if (kind == SUM_DEV2 || kind == SUM_DEV) *sum = keep8(*sum, _mm256_add_ps(*sum, d), k, full);
}

/* blocksum (quant.h / rownorm.h) of one row's `kind` terms, in double */
NK_INLINE void blocksum(int kind, nk_dtype dt, int res, size_t n, const void *x, const void *r,
                        void *h, float c0f, float c1f, double *total, double *dsum) {
  const __m256 c0 = _mm256_set1_ps(c0f), c1 = _mm256_set1_ps(c1f);
  *total = 0.0;
  *dsum = 0.0;
  for (size_t b = 0; b < n; b += BLOCK) {
    const size_t e = b + BLOCK < n ? b + BLOCK : n;
    __m256 a[8], s[8];
    for (int j = 0; j < 8; j++) a[j] = s[j] = _mm256_setzero_ps();
    size_t i = b;
    for (; i + LANES <= e; i += LANES)
      for (int j = 0; j < 8; j++)
        term(kind, &a[j], &s[j], h8(x, r, h, i + 8 * (size_t)j, 8, dt, res, 1), c0, c1, 8, 1);
    if (i < e) {
      const size_t k = e - i;
      for (size_t j = 0; j < 8; j++) {
        const size_t kk = count_at(k, j);
        if (kk) term(kind, &a[j], &s[j], h8(x, r, h, i + 8 * j, kk, dt, res, 0), c0, c1, kk, 0);
      }
    }
    if (kind != SUM_DEV) *total += (double)fold64(a);
    if (kind == SUM_DEV2 || kind == SUM_DEV) *dsum += (double)fold64(s);
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
  const float k0 = _mm256_cvtss_f32(h8(x, r, NULL, 0, 1, dt, res == RES_NONE ? RES_NONE : RES_R, 0));
  blocksum(SUM_SHIFT, dt, res, n, x, r, h, k0, 0.0f, &total, &dsum);
  if (!isfinite(total)) return 1;
  const double mu = (double)k0 + total / (double)n;
  *mu_hi = (float)mu;
  *mu_lo = (float)(mu - (double)*mu_hi);
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

NK_INLINE __m256 param8(const void *p, size_t i, size_t k, nk_dtype dt, nk_dtype pdt, int full) {
  return pdt == NK_DTYPE_F32 ? load8(p, i, k, NK_DTYPE_F32, full) : load8(p, i, k, dt, full);
}

/* y for 8 lanes (scalar's yval). xk: XH_*; hr: residual present; c: gamma | beta bits. */
NK_INLINE __m256 y8(nk_dtype dt, int xk, int hr, uint32_t c, const rowc *w, size_t i, size_t k,
                    int full) {
  if (w->pf) _mm_prefetch(w->pf + i * esize(dt), _MM_HINT_T1);
  __m256 v = load8(w->src, i, k, dt, full);
  if (hr) v = round8(_mm256_add_ps(v, load8(w->r, i, k, dt, full)), dt);
  __m256 xh;
  if (xk == XH_RMS) xh = _mm256_mul_ps(v, _mm256_set1_ps(w->rs));
  else if (xk == XH_CENTER)
    xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(v, _mm256_set1_ps(w->mu_hi)),
                                     _mm256_set1_ps(w->mu_lo)),
                       _mm256_set1_ps(w->rs));
  else xh = v;
  __m256 g = xh, b = xh;
  if (c & NK_NORMQ_HAS_GAMMA) {
    g = param8(w->gamma, i, k, dt, w->pdt, full);
    if (w->offset) g = _mm256_add_ps(_mm256_set1_ps(1.0f), g);
  }
  if (c & NK_NORMQ_HAS_BETA) b = param8(w->beta, i, k, dt, w->pdt, full);
  if ((c & NK_NORMQ_HAS_GAMMA) && (c & NK_NORMQ_HAS_BETA)) return _mm256_fmadd_ps(xh, g, b);
  if (c & NK_NORMQ_HAS_GAMMA) return _mm256_mul_ps(xh, g);
  if (c & NK_NORMQ_HAS_BETA) return _mm256_add_ps(xh, b);
  return xh;
}

/* |y| bits; lanes past the end (k of 8 valid when !full) give 0 */
NK_INLINE __m256i absbits(__m256 y, size_t k, int full) {
  __m256i a = _mm256_and_si256(_mm256_castps_si256(y), _mm256_set1_epi32(0x7FFFFFFF));
  return full ? a : _mm256_and_si256(a, mask8(k));
}

NK_INLINE uint32_t hmax_epu32(__m256i v) {
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
  return (uint32_t)_mm_cvtsi128_si32(m);
}

NK_INLINE __m256 clampq(__m256 t, float q) {
  return _mm256_max_ps(_mm256_min_ps(t, _mm256_set1_ps(q)), _mm256_set1_ps(-q));
}

/* 8 int8 from 8 integral floats in [-127, 127] (exact conversions, saturating packs that
 * never saturate) */
NK_INLINE void store_q8(int8_t *q, size_t i, size_t k, __m256 t, int full) {
  const __m256i w = _mm256_cvtps_epi32(t);
  const __m128i h16 = _mm_packs_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
  const __m128i b = _mm_packs_epi16(h16, h16);
  if (full) _mm_storel_epi64((__m128i *)(q + i), b);
  else {
    int8_t buf[16];
    _mm_storeu_si128((__m128i *)buf, b);
    memcpy(q + i, buf, k);
  }
}

/* 32 int8 from four vectors of values whose rint lies in [-127, 127] (row mode: |y * inv| <=
 * 127 (1 + 2^-22), so neither a clamp nor a saturation can act): cvtps2dq rounds in the
 * current mode (round-half-even by default, as the scalar rintf), two in-lane packs give
 * [t0 t1 t2 t3] of the low halves then of the high halves, one cross-lane permute restores the
 * order; one 32-byte store (instead of four 8-byte ones and three shuffles per 8 elements). */
NK_INLINE void store_q8x32(int8_t *q, __m256 t0, __m256 t1, __m256 t2, __m256 t3) {
  const __m256i a = _mm256_packs_epi32(_mm256_cvtps_epi32(t0), _mm256_cvtps_epi32(t1));
  const __m256i b = _mm256_packs_epi32(_mm256_cvtps_epi32(t2), _mm256_cvtps_epi32(t3));
  const __m256i v = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, b),
                                                _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256((__m256i *)q, v);
}

/* The stochastic-rounding u of quant.h's nk__sr_u for columns i .. i + 7. */
NK_INLINE __m256 sr_u8(uint32_t key, size_t i) {
  __m256i x = _mm256_xor_si256(
      _mm256_set1_epi32((int)key),
      _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)i), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x7FEB352Du));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x846CA68Bu));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(x, 8)), _mm256_set1_ps(0x1p-24f));
}

#define RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define FLOOR (_MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)

NK_INLINE void out_row(nk_dtype dt, int xk, int hr, uint32_t c, const rowc *w, size_t n,
                       void *out, float *scale, int8_t *exps, size_t row) {
  const nk_normq_params *p = w->p;
  const int out_kind = p->out;
  size_t i;
  if (out_kind == NK_NORMQ_OUT_Y) {
    i = 0;
    if (p->variant & NK_NORMQ_NONTEMPORAL) { /* partial steps up to the first 64-byte boundary */
      const size_t head = head_to_align64(out, n, dt);
      for (; i < head; i += 8) {
        const size_t k = head - i < 8 ? head - i : 8;
        store8(out, i, k, y8(dt, xk, hr, c, w, i, k, 0), dt, ST_PART);
      }
      for (i = head; i + 8 <= n; i += 8)
        store8(out, i, 8, y8(dt, xk, hr, c, w, i, 8, 1), dt, ST_STREAM);
    } else {
      for (; i + 8 <= n; i += 8) store8(out, i, 8, y8(dt, xk, hr, c, w, i, 8, 1), dt, ST_FULL);
    }
    if (i < n) store8(out, i, n - i, y8(dt, xk, hr, c, w, i, n - i, 0), dt, ST_PART);
    return;
  }
  int8_t *q = out;
  if (out_kind == NK_NORMQ_OUT_ROW) {
    __m256i am = _mm256_setzero_si256();
    for (i = 0; i + 8 <= n; i += 8) am = _mm256_max_epu32(am, absbits(y8(dt, xk, hr, c, w, i, 8, 1), 8, 1));
    if (i < n) am = _mm256_max_epu32(am, absbits(y8(dt, xk, hr, c, w, i, n - i, 0), n - i, 0));
    float pre, inv;
    if (nk__q8_row_factors(hmax_epu32(am), &pre, &inv, scale) < 2) {
      memset(q, 0, n);
      return;
    }
    const __m256 vpre = _mm256_set1_ps(pre), vinv = _mm256_set1_ps(inv);
    const int scaled = pre != 1.0f;
    for (i = 0; i + 32 <= n; i += 32) {
      __m256 t[4];
      for (int j = 0; j < 4; j++) {
        __m256 y = y8(dt, xk, hr, c, w, i + 8 * (size_t)j, 8, 1);
        if (scaled) y = _mm256_mul_ps(y, vpre);
        t[j] = _mm256_mul_ps(y, vinv);
      }
      store_q8x32(q + i, t[0], t[1], t[2], t[3]);
    }
    for (; i + 8 <= n; i += 8) {
      __m256 y = y8(dt, xk, hr, c, w, i, 8, 1);
      if (scaled) y = _mm256_mul_ps(y, vpre);
      store_q8(q, i, 8, clampq(_mm256_round_ps(_mm256_mul_ps(y, vinv), RNE), 127.0f), 1);
    }
    if (i < n) {
      __m256 y = y8(dt, xk, hr, c, w, i, n - i, 0);
      if (scaled) y = _mm256_mul_ps(y, vpre);
      store_q8(q, i, n - i, clampq(_mm256_round_ps(_mm256_mul_ps(y, vinv), RNE), 127.0f), 0);
    }
    return;
  }
  /* power-of-two groups, group % 8 == 0 */
  const size_t G = p->group;
  const int qmax = p->qmax;
  const float Q = (float)qmax;
  const int sr = (p->variant & NK_NORMQ_STOCHASTIC) != 0;
  const uint32_t key = sr ? nk__sr_rowkey(p->seed, (uint64_t)(p->row0 + row)) : 0;
  for (size_t g0 = 0, k = 0; g0 < n; g0 += G, k++) {
    const size_t g1 = g0 + G < n ? g0 + G : n;
    if (G <= 64 && g1 - g0 == G) { /* a full group of at most 8 vectors: y stays in registers */
      const size_t nv = G / 8;
      __m256 yv[8];
      __m256i am = _mm256_setzero_si256();
      for (size_t j = 0; j < nv; j++) {
        yv[j] = y8(dt, xk, hr, c, w, g0 + 8 * (size_t)j, 8, 1);
        am = _mm256_max_epu32(am, absbits(yv[j], 8, 1));
      }
      const uint32_t mb = hmax_epu32(am);
      const int e = nk__pow2_group_exp(mb, qmax);
      exps[k] = (int8_t)e;
      if (e == NK_NORMQ_EXP_NAN || mb == 0) {
        memset(q + g0, 0, G);
        continue;
      }
      const __m256 f = _mm256_set1_ps(nk__pow2_factor(e));
      for (size_t j = 0; j < nv; j++) {
        const __m256 v = _mm256_mul_ps(yv[j], f);
        const __m256 t = sr ? _mm256_round_ps(_mm256_add_ps(v, sr_u8(key, g0 + 8 * (size_t)j)), FLOOR)
                            : _mm256_round_ps(v, RNE);
        store_q8(q, g0 + 8 * (size_t)j, 8, clampq(t, Q), 1);
      }
      continue;
    }
    __m256i am = _mm256_setzero_si256();
    for (i = g0; i + 8 <= g1; i += 8) am = _mm256_max_epu32(am, absbits(y8(dt, xk, hr, c, w, i, 8, 1), 8, 1));
    if (i < g1) am = _mm256_max_epu32(am, absbits(y8(dt, xk, hr, c, w, i, g1 - i, 0), g1 - i, 0));
    const uint32_t mb = hmax_epu32(am);
    const int e = nk__pow2_group_exp(mb, qmax);
    exps[k] = (int8_t)e;
    if (e == NK_NORMQ_EXP_NAN || mb == 0) {
      memset(q + g0, 0, g1 - g0);
      continue;
    }
    const __m256 f = _mm256_set1_ps(nk__pow2_factor(e));
    for (i = g0; i < g1; i += 8) {
      const int full = i + 8 <= g1;
      const size_t kk = full ? 8 : g1 - i;
      const __m256 v = _mm256_mul_ps(full ? y8(dt, xk, hr, c, w, i, 8, 1) : y8(dt, xk, hr, c, w, i, kk, 0), f);
      const __m256 t = sr ? _mm256_round_ps(_mm256_add_ps(v, sr_u8(key, i)), FLOOR)
                          : _mm256_round_ps(v, RNE);
      store_q8(q, i, kk, clampq(t, Q), full);
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
    const void *xr = qrow_at(x, row, xs, esz);
    const void *rr = r ? qrow_at(r, row, rst, esz) : NULL;
    void *hrow = h ? (void *)qrow_at(h, row, hs, esz) : NULL;
    void *orow = (void *)qrow_at(out, row, os, osz);
    int8_t *erow = exps ? (int8_t *)qrow_at(exps, row, es, 1) : NULL;
    rowc w = {xr, rr, p, 0.0f, 0.0f, 1.0f, p->gamma, p->beta, p->param_dtype,
              (p->variant & NK_NORMQ_OFFSET) != 0,
              (p->variant & NK_NORMQ_PREFETCH) && row + 1 < rows ? qrow_at(x, row + 1, xs, esz) : NULL};
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
    if (params->out == NK_NORMQ_OUT_POW2 && params->group % 8 != 0) {                          \
      scalar_fn(rows, cols, x, x_stride, r, r_stride, h, h_stride, out, out_stride, scale,     \
                exps, exp_stride, mean, rstd, params);                                         \
      return;                                                                                   \
    }                                                                                           \
    normq_rows(dt, rows, cols, x, x_stride, r, r_stride, h, h_stride, out, out_stride, scale,  \
               exps, exp_stride, mean, rstd, params);                                          \
  }

NK_DEFINE_NORMQ(nk_f32_normq__avx2_u64, NK_DTYPE_F32, nk_f32_normq__scalar_u64)
NK_DEFINE_NORMQ(nk_bf16_normq__avx2_u64, NK_DTYPE_BF16, nk_bf16_normq__scalar_u64)
NK_DEFINE_NORMQ(nk_f16_normq__avx2_u64, NK_DTYPE_F16, nk_f16_normq__scalar_u64)
