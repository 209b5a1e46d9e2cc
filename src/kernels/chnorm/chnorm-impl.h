/*
 * chnorm-impl.h — the channel-norm kernels, one portable source compiled once per ISA.
 * Include it from scalar.c, avx2.c or avx512.c after defining NK_CH_SUFFIX (the name suffix).
 * The arithmetic is on 16-lane vectors of GCC/Clang vector extensions (element-wise IEEE
 * operations; the compiler never reassociates them and -ffp-contract=off forbids contraction),
 * so every ISA computes the same bits; the ISA-specific parts are the fused multiply-add, the
 * dtype conversions and the streaming stores, each of which is exact or bit-identical to the
 * scalar conversion of runtime/convert.h (see x86/avx2-io.h). The contract is in chnorm.h.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "chnorm.h"
#include "convert.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* The 64-byte vector helpers below are static and always inlined: no call ever passes a vector,
 * so GCC's note that such returns would change the ABI without AVX-512 does not apply. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define NK_CH_CAT2(a, b) a##b
#define NK_CH_CAT(a, b) NK_CH_CAT2(a, b)
#define FN(name) NK_CH_CAT(nk_chnorm_##name##__, NK_CH_SUFFIX)
#define INL static inline __attribute__((always_inline))

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

#define VL 16

INL v16f vsplat(float a) { return (v16f){a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}; }

/* fmaf on every lane. */
INL v16f vfma(v16f a, v16f b, v16f c) {
#if defined(__AVX512F__)
  return (v16f)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__AVX2__) && defined(__FMA__)
  v16f r;
  __m256 lo = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)&a), _mm256_loadu_ps((const float *)&b),
                              _mm256_loadu_ps((const float *)&c));
  __m256 hi = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)&a + 8),
                              _mm256_loadu_ps((const float *)&b + 8),
                              _mm256_loadu_ps((const float *)&c + 8));
  _mm256_storeu_ps((float *)&r, lo);
  _mm256_storeu_ps((float *)&r + 8, hi);
  return r;
#else
  v16f r;
  for (int l = 0; l < VL; l++) r[l] = fmaf(a[l], b[l], c[l]);
  return r;
#endif
}

/* relu(v) = v < 0 ? 0 : v (NaN stays NaN, -0 stays -0). */
INL v16f vrelu(v16f v) { return (v16f)((v16i)v & ~(v16i)(v < vsplat(0.0f))); }

/* g' = y <= 0 ? 0 : dy (a NaN y passes the gradient, as PyTorch's threshold_backward). */
INL v16f vmask(v16f dy, v16f y) { return (v16f)((v16i)dy & ~(v16i)(y <= vsplat(0.0f))); }

/* ---- loads and stores with dtype conversion ------------------------------------------------ */

INL v16f widen16(v16h h, nk_dtype dt) {
  if (dt == NK_DTYPE_BF16) return (v16f)(__builtin_convertvector(h, v16u) << 16);
#if defined(__AVX512F__)
  __m256i hh;
  memcpy(&hh, &h, sizeof hh);
  return (v16f)_mm512_cvtph_ps(hh);
#elif defined(__F16C__)
  __m128i h0, h1;
  memcpy(&h0, &h, 16);
  memcpy(&h1, (const char *)&h + 16, 16);
  v16f r;
  _mm256_storeu_ps((float *)&r, _mm256_cvtph_ps(h0));
  _mm256_storeu_ps((float *)&r + 8, _mm256_cvtph_ps(h1));
  return r;
#else
  v16f r;
  for (int l = 0; l < VL; l++) r[l] = nk__f16_to_f32(h[l]);
  return r;
#endif
}

INL v16h narrow16(v16f v, nk_dtype dt) {
  if (dt == NK_DTYPE_BF16) {
    const v16u u = (v16u)v;
    const v16u hi = u >> 16;
    const v16u rne = (u + 0x7FFFu + (hi & 1u)) >> 16;
    const v16u nanm = (v16u)((u & 0x7FFFFFFFu) > 0x7F800000u);
    return __builtin_convertvector((rne & ~nanm) | ((hi | 0x40u) & nanm), v16h);
  }
#if defined(__AVX512F__)
  __m256i h = _mm512_cvtps_ph((__m512)v, _MM_FROUND_TO_NEAREST_INT);
  v16h r;
  memcpy(&r, &h, sizeof r);
  return r;
#elif defined(__F16C__)
  __m128i h0 = _mm256_cvtps_ph(_mm256_loadu_ps((const float *)&v), _MM_FROUND_TO_NEAREST_INT);
  __m128i h1 = _mm256_cvtps_ph(_mm256_loadu_ps((const float *)&v + 8), _MM_FROUND_TO_NEAREST_INT);
  v16h r;
  memcpy(&r, &h0, 16);
  memcpy((char *)&r + 16, &h1, 16);
  return r;
#else
  v16h r;
  for (int l = 0; l < VL; l++) r[l] = nk__f32_to_f16(v[l]);
  return r;
#endif
}

/* 16 elements at element index i of p. */
INL v16f ld(const void *p, size_t i, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) {
    v16f v;
    memcpy(&v, (const float *)p + i, sizeof v);
    return v;
  }
  v16h h;
  memcpy(&h, (const uint16_t *)p + i, sizeof h);
  return widen16(h, dt);
}

/* The first k (< 16) elements at i, zeros in the other lanes. */
INL v16f ld_part(const void *p, size_t i, size_t k, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) {
    v16f v = vsplat(0.0f);
    memcpy(&v, (const float *)p + i, k * sizeof(float));
    return v;
  }
  v16h h = {0};
  memcpy(&h, (const uint16_t *)p + i, k * sizeof(uint16_t));
  return widen16(h, dt);
}

INL void st(void *p, size_t i, v16f v, nk_dtype dt, int nt) {
  if (dt == NK_DTYPE_F32) {
    float *q = (float *)p + i;
#if defined(__AVX512F__)
    if (nt && ((uintptr_t)q & 63u) == 0) {
      _mm512_stream_ps(q, (__m512)v);
      return;
    }
#elif defined(__AVX2__)
    if (nt && ((uintptr_t)q & 31u) == 0) {
      _mm256_stream_ps(q, _mm256_loadu_ps((const float *)&v));
      _mm256_stream_ps(q + 8, _mm256_loadu_ps((const float *)&v + 8));
      return;
    }
#endif
    (void)nt;
    memcpy(q, &v, sizeof v);
    return;
  }
  uint16_t *q = (uint16_t *)p + i;
  const v16h h = narrow16(v, dt);
#if defined(__AVX2__) || defined(__AVX512F__)
  if (nt && ((uintptr_t)q & 31u) == 0) {
    __m256i hh;
    memcpy(&hh, &h, sizeof hh);
    _mm256_stream_si256((__m256i *)q, hh);
    return;
  }
#endif
  memcpy(q, &h, sizeof h);
}

INL void st_part(void *p, size_t i, size_t k, v16f v, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) {
    memcpy((float *)p + i, &v, k * sizeof(float));
    return;
  }
  const v16h h = narrow16(v, dt);
  memcpy((uint16_t *)p + i, &h, k * sizeof(uint16_t));
}

INL float get1(const void *p, size_t i, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) return ((const float *)p)[i];
  const uint16_t h = ((const uint16_t *)p)[i];
  return dt == NK_DTYPE_BF16 ? nk__bf16_to_f32(h) : nk__f16_to_f32(h);
}

/* Orders streaming stores before the call returns (nothing on the scalar path). */
INL void nt_fence(void) {
#if defined(__AVX2__) || defined(__AVX512F__)
  _mm_sfence();
#endif
}

/* Columns rounded up to whole vectors (the column kernels' stack arrays are used in vectors). */
INL size_t cols_up(size_t cols) { return (cols + VL - 1) / VL * VL; }

INL size_t esz(nk_dtype dt) { return dt == NK_DTYPE_F32 ? 4 : 2; }

/* Address of flattened row i of an NSC tensor. */
INL const void *row_ptr(const void *base, nk_ch_rows r, size_t i, nk_dtype dt) {
  const ptrdiff_t off = (ptrdiff_t)(i / r.s) * r.n_stride + (ptrdiff_t)(i % r.s) * r.row_stride;
  return (const char *)base + off * (ptrdiff_t)esz(dt);
}

/* The fixed fold of 64 lanes (4 vectors): lane[k] += lane[k + s], s = 32, 16, 8, 4, 2, 1. */
INL float fold64(v16f a0, v16f a1, v16f a2, v16f a3) {
  const v16f b0 = a0 + a2, b1 = a1 + a3; /* s = 32 */
  const v16f c = b0 + b1;                /* s = 16 */
  float t[16];
  memcpy(t, &c, sizeof t);
  for (int s = 8; s >= 1; s >>= 1)
    for (int k = 0; k < s; k++) t[k] += t[k + s];
  return t[0];
}

/* ---- block moments ------------------------------------------------------------------------- */

/* The double-precision block moments (rare blocks: overflow, underflow, NaN/inf). */
static void block_moments_f64(size_t n, const void *x, size_t step, nk_dtype dt, double *mean,
                              double *m2) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)get1(x, i * step, dt);
  const double m = s / (double)n;
  double q = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double d = (double)get1(x, i * step, dt) - m;
    q += d * d;
  }
  *mean = m;
  *m2 = q;
}

/* Branch-free (vectorizable): a sum is not finite when its exponent bits are all ones. */
INL int nonfinite(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return (u & 0x7F800000u) == 0x7F800000u;
}

INL int block_needs_f64(float s, float d, float q) {
  return nonfinite(s) | nonfinite(d) | nonfinite(q) | ((q < 0x1p-90f) & !((q == 0.0f) & (d == 0.0f)));
}

INL void block_finish(size_t n, float m, float d, float q, double *mean, double *m2) {
  const double dn = (double)n, dd = (double)d;
  double v = (double)q - dd * dd / dn;
  *mean = (double)m + dd / dn;
  *m2 = v > 0.0 ? v : 0.0;
}

/* Sum of 64-lane blocks: full 64-element groups, then a partial group. */
INL void moments_run_impl(size_t n, const void *x, nk_dtype dt, double acc[3]) {
  for (size_t b0 = 0; b0 < n; b0 += NK_CH_BLOCK) {
    const size_t L = n - b0 < NK_CH_BLOCK ? n - b0 : NK_CH_BLOCK;
    const size_t full = L / 64 * 64;
    v16f s0 = vsplat(0), s1 = vsplat(0), s2 = vsplat(0), s3 = vsplat(0);
    size_t i = 0;
    for (; i < full; i += 64) {
      s0 += ld(x, b0 + i, dt);
      s1 += ld(x, b0 + i + 16, dt);
      s2 += ld(x, b0 + i + 32, dt);
      s3 += ld(x, b0 + i + 48, dt);
    }
    v16f t[4] = {vsplat(0), vsplat(0), vsplat(0), vsplat(0)};
    if (i < L) {
      const size_t k = L - i;
      for (size_t j = 0; j < 4; j++) {
        const size_t kj = k > 16 * j ? (k - 16 * j < 16 ? k - 16 * j : 16) : 0;
        if (kj) t[j] = ld_part(x, b0 + i + 16 * j, kj, dt);
      }
      s0 += t[0];
      s1 += t[1];
      s2 += t[2];
      s3 += t[3];
    }
    const float s = fold64(s0, s1, s2, s3);
    const float m = (float)((double)s / (double)L);
    const v16f vm = vsplat(m);
    v16f d0 = vsplat(0), d1 = vsplat(0), d2 = vsplat(0), d3 = vsplat(0);
    v16f q0 = vsplat(0), q1 = vsplat(0), q2 = vsplat(0), q3 = vsplat(0);
    for (i = 0; i < full; i += 64) {
      const v16f e0 = ld(x, b0 + i, dt) - vm, e1 = ld(x, b0 + i + 16, dt) - vm;
      const v16f e2 = ld(x, b0 + i + 32, dt) - vm, e3 = ld(x, b0 + i + 48, dt) - vm;
      d0 += e0;
      d1 += e1;
      d2 += e2;
      d3 += e3;
      q0 = vfma(e0, e0, q0);
      q1 = vfma(e1, e1, q1);
      q2 = vfma(e2, e2, q2);
      q3 = vfma(e3, e3, q3);
    }
    if (i < L) {
      /* lanes past the end must add nothing: e = 0 there */
      const size_t k = L - i;
      v16f e[4];
      for (size_t j = 0; j < 4; j++) {
        const size_t kj = k > 16 * j ? (k - 16 * j < 16 ? k - 16 * j : 16) : 0;
        const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
        const v16i live = lane < (v16i){(int)kj, (int)kj, (int)kj, (int)kj, (int)kj, (int)kj,
                                        (int)kj, (int)kj, (int)kj, (int)kj, (int)kj, (int)kj,
                                        (int)kj, (int)kj, (int)kj, (int)kj};
        e[j] = (v16f)((v16i)(t[j] - vm) & live);
      }
      d0 += e[0];
      d1 += e[1];
      d2 += e[2];
      d3 += e[3];
      q0 = vfma(e[0], e[0], q0);
      q1 = vfma(e[1], e[1], q1);
      q2 = vfma(e[2], e[2], q2);
      q3 = vfma(e[3], e[3], q3);
    }
    const float d = fold64(d0, d1, d2, d3), q = fold64(q0, q1, q2, q3);
    double mean, m2;
    if (block_needs_f64(s, d, q))
      block_moments_f64(L, (const char *)x + b0 * esz(dt), 1, dt, &mean, &m2);
    else
      block_finish(L, m, d, q, &mean, &m2);
    nk__ch_chan(&acc[0], &acc[1], &acc[2], (double)L, mean, m2);
  }
}

/* Column moments. The per-column accumulators live in stack arrays of NK_CH_TILE_COLS. */
INL void moments_cols_impl(size_t r0, size_t nrows, size_t cols, const void *x,
                             nk_ch_rows xr, nk_dtype dt, double *count, double *mean,
                             double *m2) {
  float s[NK_CH_TILE_COLS] __attribute__((aligned(64)));
  float m[NK_CH_TILE_COLS] __attribute__((aligned(64)));
  float d[NK_CH_TILE_COLS] __attribute__((aligned(64)));
  float q[NK_CH_TILE_COLS] __attribute__((aligned(64)));
  const size_t full = cols / VL * VL, k = cols - full;
  for (size_t b0 = 0; b0 < nrows; b0 += NK_CH_BLOCK_ROWS) {
    const size_t L = nrows - b0 < NK_CH_BLOCK_ROWS ? nrows - b0 : NK_CH_BLOCK_ROWS;
    memset(s, 0, cols_up(cols) * sizeof(float));
    memset(d, 0, cols_up(cols) * sizeof(float));
    memset(q, 0, cols_up(cols) * sizeof(float));
    for (size_t i = 0; i < L; i++) {
      const void *p = row_ptr(x, xr, r0 + b0 + i, dt);
      size_t j = 0;
      for (; j < full; j += VL) {
        v16f a;
        memcpy(&a, s + j, sizeof a);
        a += ld(p, j, dt);
        memcpy(s + j, &a, sizeof a);
      }
      if (k) {
        v16f a;
        memcpy(&a, s + j, sizeof a);
        a += ld_part(p, j, k, dt);
        memcpy(s + j, &a, sizeof a);
      }
    }
    const double dl = (double)L;
    for (size_t j = 0; j < cols; j++) m[j] = (float)((double)s[j] / dl);
    for (size_t i = 0; i < L; i++) {
      const void *p = row_ptr(x, xr, r0 + b0 + i, dt);
      size_t j = 0;
      for (; j < full; j += VL) {
        v16f vm, vd, vq;
        memcpy(&vm, m + j, sizeof vm);
        memcpy(&vd, d + j, sizeof vd);
        memcpy(&vq, q + j, sizeof vq);
        const v16f e = ld(p, j, dt) - vm;
        vd += e;
        vq = vfma(e, e, vq);
        memcpy(d + j, &vd, sizeof vd);
        memcpy(q + j, &vq, sizeof vq);
      }
      for (; j < cols; j++) { /* tail columns: the same per-lane operations */
        const float e = get1(p, j, dt) - m[j];
        d[j] += e;
        q[j] = fmaf(e, e, q[j]);
      }
    }
    /* Block moments and Chan merge, per column (the count is shared by the columns). The
     * common case (no column needs the double block) runs as plain loops the compiler
     * vectorizes; the formulas are exactly those of block_finish and nk__ch_chan. */
    const double na = *count, nb = dl;
    uint32_t bad = 0;
    for (size_t j = 0; j < cols; j++) bad |= (uint32_t)block_needs_f64(s[j], d[j], q[j]);
    if (!bad) {
      if (na == 0.0) {
        for (size_t j = 0; j < cols; j++) {
          const double dd = (double)d[j], v = (double)q[j] - dd * dd / dl;
          mean[j] = (double)m[j] + dd / dl;
          m2[j] = v > 0.0 ? v : 0.0;
        }
      } else {
        const double n = na + nb, w1 = nb / n, w2 = na * nb / n;
        for (size_t j = 0; j < cols; j++) {
          const double dd = (double)d[j], v = (double)q[j] - dd * dd / dl;
          const double bm = (double)m[j] + dd / dl, bm2 = v > 0.0 ? v : 0.0;
          const double delta = bm - mean[j];
          mean[j] = mean[j] + delta * w1;
          m2[j] = m2[j] + bm2 + delta * delta * w2;
        }
      }
      *count = na + nb;
      continue;
    }
    for (size_t j = 0; j < cols; j++) {
      double bm, bm2;
      if (block_needs_f64(s[j], d[j], q[j])) {
        /* column j of this block, in double */
        double sum = 0.0, qq = 0.0;
        for (size_t i = 0; i < L; i++) sum += (double)get1(row_ptr(x, xr, r0 + b0 + i, dt), j, dt);
        const double mu = sum / dl;
        for (size_t i = 0; i < L; i++) {
          const double e = (double)get1(row_ptr(x, xr, r0 + b0 + i, dt), j, dt) - mu;
          qq += e * e;
        }
        bm = mu;
        bm2 = qq;
      } else {
        block_finish(L, m[j], d[j], q[j], &bm, &bm2);
      }
      double cn = na, cm = mean[j], cm2 = m2[j];
      nk__ch_chan(&cn, &cm, &cm2, nb, bm, bm2);
      mean[j] = cm;
      m2[j] = cm2;
    }
    *count = na + nb;
  }
}

/* ---- normalize ----------------------------------------------------------------------------- */

INL v16f norm_v(v16f xv, v16f mh, v16f ml, v16f r, v16f g, v16f b) {
  return vfma(((xv - mh) - ml) * r, g, b);
}

INL void norm_run_impl(size_t n, const void *x, const void *z, void *y, nk_dtype dt,
                         const nk_ch_norm_scalars *p, uint32_t flags, int nt) {
  const v16f mh = vsplat(p->mh), ml = vsplat(p->ml), r = vsplat(p->r), g = vsplat(p->g),
             b = vsplat(p->b);
  const int add = (flags & NK_CHK_ADD) != 0, relu = (flags & NK_CHK_RELU) != 0;
  size_t i = 0;
  for (; i + VL <= n; i += VL) {
    v16f v = norm_v(ld(x, i, dt), mh, ml, r, g, b);
    if (add) v += ld(z, i, dt);
    if (relu) v = vrelu(v);
    st(y, i, v, dt, nt);
  }
  if (i < n) {
    const size_t k = n - i;
    v16f v = norm_v(ld_part(x, i, k, dt), mh, ml, r, g, b);
    if (add) v += ld_part(z, i, k, dt);
    if (relu) v = vrelu(v);
    st_part(y, i, k, v, dt);
  }
  if (nt) nt_fence();
}

INL void norm_cols_impl(size_t r0, size_t nrows, size_t cols, const void *x, nk_ch_rows xr,
                          const void *z, nk_ch_rows zr, void *y, nk_ch_rows yr, nk_dtype dt,
                          const nk_ch_norm_vectors *p, uint32_t flags, int nt) {
  const int add = (flags & NK_CHK_ADD) != 0, relu = (flags & NK_CHK_RELU) != 0;
  const float *pmh = p->mh, *pml = p->ml, *pr = p->r, *pg = p->g, *pb = p->b;
  for (size_t i = r0; i < r0 + nrows; i++) {
    const void *xp = row_ptr(x, xr, i, dt);
    const void *zp = add ? row_ptr(z, zr, i, dt) : NULL;
    void *yp = (void *)row_ptr(y, yr, i, dt);
    size_t j = 0;
    for (; j + VL <= cols; j += VL) {
      v16f v = norm_v(ld(xp, j, dt), ld(pmh, j, NK_DTYPE_F32), ld(pml, j, NK_DTYPE_F32),
                      ld(pr, j, NK_DTYPE_F32), ld(pg, j, NK_DTYPE_F32),
                      ld(pb, j, NK_DTYPE_F32));
      if (add) v += ld(zp, j, dt);
      if (relu) v = vrelu(v);
      st(yp, j, v, dt, nt);
    }
    if (j < cols) {
      const size_t k = cols - j;
      v16f v = norm_v(ld_part(xp, j, k, dt), ld_part(pmh, j, k, NK_DTYPE_F32),
                      ld_part(pml, j, k, NK_DTYPE_F32), ld_part(pr, j, k, NK_DTYPE_F32),
                      ld_part(pg, j, k, NK_DTYPE_F32), ld_part(pb, j, k, NK_DTYPE_F32));
      if (add) v += ld_part(zp, j, k, dt);
      if (relu) v = vrelu(v);
      st_part(yp, j, k, v, dt);
    }
  }
  if (nt) nt_fence();
}

/* ---- gradient sums --------------------------------------------------------------------------- */

static void gradsum_f64(size_t n, const void *x, size_t xstep, const void *y, size_t ystep,
                        const void *dy, size_t dystep, nk_dtype dt, float mh, int mask,
                        double out[3]) {
  double a = 0.0, b = 0.0, c = 0.0;
  for (size_t i = 0; i < n; i++) {
    double g = (double)get1(dy, i * dystep, dt);
    if (mask && get1(y, i * ystep, dt) <= 0.0f) g = 0.0;
    const double e = (double)get1(x, i * xstep, dt) - (double)mh;
    a += g;
    b += g * e;
    c += e;
  }
  out[0] += a;
  out[1] += b;
  out[2] += c;
}

INL void gradsum_run_impl(size_t n, const void *x, const void *y, const void *dy,
                            nk_dtype dt, float mh, uint32_t flags, double acc[3]) {
  const int mask = (flags & NK_CHK_MASK) != 0;
  const v16f vm = vsplat(mh);
  for (size_t b0 = 0; b0 < n; b0 += NK_CH_BLOCK) {
    const size_t L = n - b0 < NK_CH_BLOCK ? n - b0 : NK_CH_BLOCK;
    v16f A[4], B[4], C[4];
    for (int j = 0; j < 4; j++) A[j] = B[j] = C[j] = vsplat(0);
    size_t i = 0;
    for (; i + 64 <= L; i += 64) {
      for (int j = 0; j < 4; j++) {
        const size_t at = b0 + i + 16 * (size_t)j;
        v16f g = ld(dy, at, dt);
        if (mask) g = vmask(g, ld(y, at, dt));
        const v16f e = ld(x, at, dt) - vm;
        A[j] += g;
        B[j] = vfma(g, e, B[j]);
        C[j] += e;
      }
    }
    if (i < L) {
      /* lanes past the end add nothing: g = 0 and e = 0 there */
      const size_t k = L - i;
      const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
      for (size_t j = 0; j < 4; j++) {
        const size_t kj = k > 16 * j ? (k - 16 * j < 16 ? k - 16 * j : 16) : 0;
        if (kj == 0) break;
        const size_t at = b0 + i + 16 * j;
        const int kk = (int)kj;
        const v16i live = lane < (v16i){kk, kk, kk, kk, kk, kk, kk, kk,
                                        kk, kk, kk, kk, kk, kk, kk, kk};
        v16f g = ld_part(dy, at, kj, dt);
        if (mask) g = vmask(g, ld_part(y, at, kj, dt));
        const v16f e = (v16f)((v16i)(ld_part(x, at, kj, dt) - vm) & live);
        A[j] += g;
        B[j] = vfma(g, e, B[j]);
        C[j] += e;
      }
    }
    const float a = fold64(A[0], A[1], A[2], A[3]);
    const float b = fold64(B[0], B[1], B[2], B[3]);
    const float c = fold64(C[0], C[1], C[2], C[3]);
    if (!isfinite(a) || !isfinite(b) || !isfinite(c)) {
      const size_t off = b0 * esz(dt);
      gradsum_f64(L, (const char *)x + off, 1, y ? (const char *)y + off : NULL, 1,
                  (const char *)dy + off, 1, dt, mh, mask, acc);
    } else {
      acc[0] += (double)a;
      acc[1] += (double)b;
      acc[2] += (double)c;
    }
  }
}

INL void gradsum_cols_impl(size_t r0, size_t nrows, size_t cols, const void *x,
                             nk_ch_rows xr, const void *y, nk_ch_rows yr, const void *dy,
                             nk_ch_rows dyr, nk_dtype dt, const float *mh, uint32_t flags,
                             double *acc) {
  float A[NK_CH_TILE_COLS] __attribute__((aligned(64)));
  float B[NK_CH_TILE_COLS] __attribute__((aligned(64)));
  float C[NK_CH_TILE_COLS] __attribute__((aligned(64)));
  const int mask = (flags & NK_CHK_MASK) != 0;
  const size_t full = cols / VL * VL;
  for (size_t b0 = 0; b0 < nrows; b0 += NK_CH_BLOCK_ROWS) {
    const size_t L = nrows - b0 < NK_CH_BLOCK_ROWS ? nrows - b0 : NK_CH_BLOCK_ROWS;
    memset(A, 0, cols_up(cols) * sizeof(float));
    memset(B, 0, cols_up(cols) * sizeof(float));
    memset(C, 0, cols_up(cols) * sizeof(float));
    for (size_t i = 0; i < L; i++) {
      const size_t row = r0 + b0 + i;
      const void *xp = row_ptr(x, xr, row, dt), *dyp = row_ptr(dy, dyr, row, dt);
      const void *yp = mask ? row_ptr(y, yr, row, dt) : NULL;
      size_t j = 0;
      for (; j < full; j += VL) {
        v16f a, b, c, g = ld(dyp, j, dt);
        if (mask) g = vmask(g, ld(yp, j, dt));
        const v16f e = ld(xp, j, dt) - ld(mh, j, NK_DTYPE_F32);
        memcpy(&a, A + j, sizeof a);
        memcpy(&b, B + j, sizeof b);
        memcpy(&c, C + j, sizeof c);
        a += g;
        b = vfma(g, e, b);
        c += e;
        memcpy(A + j, &a, sizeof a);
        memcpy(B + j, &b, sizeof b);
        memcpy(C + j, &c, sizeof c);
      }
      for (; j < cols; j++) {
        float g = get1(dyp, j, dt);
        if (mask && get1(yp, j, dt) <= 0.0f) g = 0.0f;
        const float e = get1(xp, j, dt) - mh[j];
        A[j] += g;
        B[j] = fmaf(g, e, B[j]);
        C[j] += e;
      }
    }
    for (size_t j = 0; j < cols; j++) {
      if (!isfinite(A[j]) || !isfinite(B[j]) || !isfinite(C[j])) {
        double t[3] = {0.0, 0.0, 0.0};
        for (size_t i = 0; i < L; i++) {
          const size_t row = r0 + b0 + i;
          gradsum_f64(1, (const char *)row_ptr(x, xr, row, dt) + j * esz(dt), 1,
                      mask ? (const char *)row_ptr(y, yr, row, dt) + j * esz(dt) : NULL, 1,
                      (const char *)row_ptr(dy, dyr, row, dt) + j * esz(dt), 1, dt, mh[j],
                      mask, t);
        }
        acc[3 * j] += t[0];
        acc[3 * j + 1] += t[1];
        acc[3 * j + 2] += t[2];
      } else {
        acc[3 * j] += (double)A[j];
        acc[3 * j + 1] += (double)B[j];
        acc[3 * j + 2] += (double)C[j];
      }
    }
  }
}

/* ---- dx ------------------------------------------------------------------------------------- */

INL v16f dx_v(v16f xv, v16f g, v16f mh, v16f mc, v16f r, v16f u, v16f a, v16f b, v16f v) {
  const v16f xh = ((xv - mh) - mc) * r;
  return vfma(-xh, b, g * u - a) * v;
}

INL void dx_run_impl(size_t n, const void *x, const void *y, const void *dy, void *dx,
                       void *dz, nk_dtype dt, const nk_ch_dx_scalars *p, uint32_t flags, int nt) {
  const v16f mh = vsplat(p->mh), mc = vsplat(p->mc), r = vsplat(p->r), u = vsplat(p->u),
             a = vsplat(p->a), b = vsplat(p->b), v = vsplat(p->v);
  const int mask = (flags & NK_CHK_MASK) != 0, wdz = (flags & NK_CHK_DZ) != 0;
  size_t i = 0;
  for (; i + VL <= n; i += VL) {
    v16f g = ld(dy, i, dt);
    if (mask) g = vmask(g, ld(y, i, dt));
    const v16f o = dx_v(ld(x, i, dt), g, mh, mc, r, u, a, b, v);
    st(dx, i, o, dt, nt);
    if (wdz) st(dz, i, g, dt, nt);
  }
  if (i < n) {
    const size_t k = n - i;
    v16f g = ld_part(dy, i, k, dt);
    if (mask) g = vmask(g, ld_part(y, i, k, dt));
    const v16f o = dx_v(ld_part(x, i, k, dt), g, mh, mc, r, u, a, b, v);
    st_part(dx, i, k, o, dt);
    if (wdz) st_part(dz, i, k, g, dt);
  }
  if (nt) nt_fence();
}

INL void dx_cols_impl(size_t r0, size_t nrows, size_t cols, const void *x, nk_ch_rows xr,
                        const void *y, nk_ch_rows yr, const void *dy, nk_ch_rows dyr, void *dx,
                        nk_ch_rows dxr, void *dz, nk_ch_rows dzr, nk_dtype dt,
                        const nk_ch_dx_vectors *p, uint32_t flags, int nt) {
  const int mask = (flags & NK_CHK_MASK) != 0, wdz = (flags & NK_CHK_DZ) != 0;
  const nk_dtype F = NK_DTYPE_F32;
  const float *pmh = p->mh, *pmc = p->mc, *pr = p->r, *pu = p->u, *pa = p->a, *pb = p->b,
              *pv = p->v;
  for (size_t i = r0; i < r0 + nrows; i++) {
    const void *xp = row_ptr(x, xr, i, dt), *dyp = row_ptr(dy, dyr, i, dt);
    const void *yp = mask ? row_ptr(y, yr, i, dt) : NULL;
    void *dxp = (void *)row_ptr(dx, dxr, i, dt);
    void *dzp = wdz ? (void *)row_ptr(dz, dzr, i, dt) : NULL;
    size_t j = 0;
    for (; j + VL <= cols; j += VL) {
      v16f g = ld(dyp, j, dt);
      if (mask) g = vmask(g, ld(yp, j, dt));
      const v16f o = dx_v(ld(xp, j, dt), g, ld(pmh, j, F), ld(pmc, j, F), ld(pr, j, F),
                          ld(pu, j, F), ld(pa, j, F), ld(pb, j, F), ld(pv, j, F));
      st(dxp, j, o, dt, nt);
      if (wdz) st(dzp, j, g, dt, nt);
    }
    if (j < cols) {
      const size_t k = cols - j;
      v16f g = ld_part(dyp, j, k, dt);
      if (mask) g = vmask(g, ld_part(yp, j, k, dt));
      const v16f o = dx_v(ld_part(xp, j, k, dt), g, ld_part(pmh, j, k, F),
                          ld_part(pmc, j, k, F), ld_part(pr, j, k, F),
                          ld_part(pu, j, k, F), ld_part(pa, j, k, F),
                          ld_part(pb, j, k, F), ld_part(pv, j, k, F));
      st_part(dxp, j, k, o, dt);
      if (wdz) st_part(dzp, j, k, g, dt);
    }
  }
  if (nt) nt_fence();
}

/* ---- specializations: the dtype and the flags that shape the loops are compile-time ------- */

#define NK_CH_DT_SWITCH(CALL)                                                                    \
  do {                                                                                           \
    switch (dt) {                                                                                \
      case NK_DTYPE_BF16: CALL(NK_DTYPE_BF16); break;                                            \
      case NK_DTYPE_F16: CALL(NK_DTYPE_F16); break;                                              \
      default: CALL(NK_DTYPE_F32); break;                                                        \
    }                                                                                            \
  } while (0)

static void FN(moments_run)(size_t n, const void *x, nk_dtype dt, double acc[3]) {
#define CALL(D) moments_run_impl(n, x, D, acc)
  NK_CH_DT_SWITCH(CALL);
#undef CALL
}

static void FN(moments_cols)(size_t r0, size_t nrows, size_t cols, const void *x, nk_ch_rows xr,
                             nk_dtype dt, double *count, double *mean, double *m2) {
#define CALL(D) moments_cols_impl(r0, nrows, cols, x, xr, D, count, mean, m2)
  NK_CH_DT_SWITCH(CALL);
#undef CALL
}

/* flags: the loop-shaping bits as constants (NK_CHK_NT stays a run-time argument). */
#define NK_CH_NORM_FLAGS(CALL)                                                                   \
  do {                                                                                           \
    const int nt = (flags & NK_CHK_NT) != 0;                                                     \
    switch (flags & (NK_CHK_ADD | NK_CHK_RELU)) {                                                \
      case 0: NK_CH_DT_SWITCH(CALL##_0); break;                                                  \
      case NK_CHK_RELU: NK_CH_DT_SWITCH(CALL##_R); break;                                        \
      case NK_CHK_ADD: NK_CH_DT_SWITCH(CALL##_A); break;                                         \
      default: NK_CH_DT_SWITCH(CALL##_AR); break;                                                \
    }                                                                                            \
  } while (0)

static void FN(norm_run)(size_t n, const void *x, const void *z, void *y, nk_dtype dt,
                         const nk_ch_norm_scalars *p, uint32_t flags) {
#define NR(D, F) norm_run_impl(n, x, z, y, D, p, F, nt)
#define NR_0(D) NR(D, 0)
#define NR_R(D) NR(D, NK_CHK_RELU)
#define NR_A(D) NR(D, NK_CHK_ADD)
#define NR_AR(D) NR(D, NK_CHK_ADD | NK_CHK_RELU)
  NK_CH_NORM_FLAGS(NR);
#undef NR
#undef NR_0
#undef NR_R
#undef NR_A
#undef NR_AR
}

static void FN(norm_cols)(size_t r0, size_t nrows, size_t cols, const void *x, nk_ch_rows xr,
                          const void *z, nk_ch_rows zr, void *y, nk_ch_rows yr, nk_dtype dt,
                          const nk_ch_norm_vectors *p, uint32_t flags) {
#define NC(D, F) norm_cols_impl(r0, nrows, cols, x, xr, z, zr, y, yr, D, p, F, nt)
#define NC_0(D) NC(D, 0)
#define NC_R(D) NC(D, NK_CHK_RELU)
#define NC_A(D) NC(D, NK_CHK_ADD)
#define NC_AR(D) NC(D, NK_CHK_ADD | NK_CHK_RELU)
  NK_CH_NORM_FLAGS(NC);
#undef NC
#undef NC_0
#undef NC_R
#undef NC_A
#undef NC_AR
}

static void FN(gradsum_run)(size_t n, const void *x, const void *y, const void *dy, nk_dtype dt,
                            float mh, uint32_t flags, double acc[3]) {
#define G0(D) gradsum_run_impl(n, x, y, dy, D, mh, 0, acc)
#define GM(D) gradsum_run_impl(n, x, y, dy, D, mh, NK_CHK_MASK, acc)
  if (flags & NK_CHK_MASK) NK_CH_DT_SWITCH(GM);
  else NK_CH_DT_SWITCH(G0);
#undef G0
#undef GM
}

static void FN(gradsum_cols)(size_t r0, size_t nrows, size_t cols, const void *x,
                             nk_ch_rows xr, const void *y, nk_ch_rows yr, const void *dy,
                             nk_ch_rows dyr, nk_dtype dt, const float *mh, uint32_t flags,
                             double *acc) {
#define G0(D) gradsum_cols_impl(r0, nrows, cols, x, xr, y, yr, dy, dyr, D, mh, 0, acc)
#define GM(D) gradsum_cols_impl(r0, nrows, cols, x, xr, y, yr, dy, dyr, D, mh, NK_CHK_MASK, acc)
  if (flags & NK_CHK_MASK) NK_CH_DT_SWITCH(GM);
  else NK_CH_DT_SWITCH(G0);
#undef G0
#undef GM
}

#define NK_CH_DX_FLAGS(CALL)                                                                     \
  do {                                                                                           \
    const int nt = (flags & NK_CHK_NT) != 0;                                                     \
    switch (flags & (NK_CHK_MASK | NK_CHK_DZ)) {                                                 \
      case 0: NK_CH_DT_SWITCH(CALL##_0); break;                                                  \
      case NK_CHK_MASK: NK_CH_DT_SWITCH(CALL##_M); break;                                        \
      case NK_CHK_DZ: NK_CH_DT_SWITCH(CALL##_Z); break;                                          \
      default: NK_CH_DT_SWITCH(CALL##_MZ); break;                                                \
    }                                                                                            \
  } while (0)

static void FN(dx_run)(size_t n, const void *x, const void *y, const void *dy, void *dx,
                       void *dz, nk_dtype dt, const nk_ch_dx_scalars *p, uint32_t flags) {
#define DR(D, F) dx_run_impl(n, x, y, dy, dx, dz, D, p, F, nt)
#define DR_0(D) DR(D, 0)
#define DR_M(D) DR(D, NK_CHK_MASK)
#define DR_Z(D) DR(D, NK_CHK_DZ)
#define DR_MZ(D) DR(D, NK_CHK_MASK | NK_CHK_DZ)
  NK_CH_DX_FLAGS(DR);
#undef DR
#undef DR_0
#undef DR_M
#undef DR_Z
#undef DR_MZ
}

static void FN(dx_cols)(size_t r0, size_t nrows, size_t cols, const void *x, nk_ch_rows xr,
                        const void *y, nk_ch_rows yr, const void *dy, nk_ch_rows dyr, void *dx,
                        nk_ch_rows dxr, void *dz, nk_ch_rows dzr, nk_dtype dt,
                        const nk_ch_dx_vectors *p, uint32_t flags) {
#define DC(D, F) dx_cols_impl(r0, nrows, cols, x, xr, y, yr, dy, dyr, dx, dxr, dz, dzr, D, p, F, nt)
#define DC_0(D) DC(D, 0)
#define DC_M(D) DC(D, NK_CHK_MASK)
#define DC_Z(D) DC(D, NK_CHK_DZ)
#define DC_MZ(D) DC(D, NK_CHK_MASK | NK_CHK_DZ)
  NK_CH_DX_FLAGS(DC);
#undef DC
#undef DC_0
#undef DC_M
#undef DC_Z
#undef DC_MZ
}

const nk_chnorm_kernels NK_CH_CAT(nk_chnorm_kernels_, NK_CH_SUFFIX) = {
    .name = "nk_chnorm__" NK_CH_NAME,
    .moments_run = FN(moments_run),
    .moments_cols = FN(moments_cols),
    .norm_run = FN(norm_run),
    .norm_cols = FN(norm_cols),
    .gradsum_run = FN(gradsum_run),
    .gradsum_cols = FN(gradsum_cols),
    .dx_run = FN(dx_run),
    .dx_cols = FN(dx_cols),
};
