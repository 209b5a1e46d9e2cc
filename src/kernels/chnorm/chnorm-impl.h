/*
 * chnorm-impl.h — the channel-norm kernels, one portable source compiled once per ISA.
 * Include it from scalar.c, avx2.c or avx512.c after defining NK_CH_SUFFIX (the name suffix).
 * The arithmetic is on native-width vectors of GCC/Clang vector extensions (element-wise IEEE
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

/* The vector helpers below are static and always inlined: no call ever passes a vector,
 * so GCC's note that such returns would change the ABI without AVX-512 does not apply. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define NK_CH_CAT2(a, b) a##b
#define NK_CH_CAT(a, b) NK_CH_CAT2(a, b)
#define FN(name) NK_CH_CAT(nk_chnorm_##name##__, NK_CH_SUFFIX)
#define INL static inline __attribute__((always_inline))

/* The native vector of the build: 16 lanes (AVX-512), 8 (AVX2) or 4 (SSE2, the scalar path's
 * baseline). The arithmetic never depends on it: the canonical lanes (64 per block sum) are
 * arrays of NA = 64 / VL vectors, and every operation is element-wise. */
#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX2__)
#define VL 8
#else
#define VL 4
#endif
#define NA (64 / VL)
/* Column vectors processed together by the column kernels (independent add chains). */
#define CG 4
#define CGG (VL == 16 ? 4 : 2) /* the gradient sums keep 3 accumulators per vector */

typedef float vf __attribute__((vector_size(VL * 4)));
typedef int32_t vi __attribute__((vector_size(VL * 4)));
typedef uint32_t vu __attribute__((vector_size(VL * 4)));
typedef uint16_t vh __attribute__((vector_size(VL * 2)));

INL vf vsplat(float a) { return (vf){0} + a; }
INL vi vlane(void) {
  vi l;
  for (int i = 0; i < VL; i++) l[i] = i;
  return l;
}
/* Elements before the first 64-byte boundary of the output p when streaming (nt), so the
 * streaming stores of the vectors after them are aligned; 0 when not streaming or when p is not
 * element-aligned (the stores then fall back to regular ones). At most n. */
INL size_t head_elems(const void *p, size_t n, size_t es, int nt) {
  const uintptr_t a = (uintptr_t)p;
  if (!nt || a % es != 0) return 0;
  const size_t h = ((64u - (a & 63u)) & 63u) / es;
  return h < n ? h : n;
}

/* Prefetch (to L1) the line NK_CH_PF_DIST bytes past byte `off` of p. A hint: never faults. */
#define PF(p, off) __builtin_prefetch((const char *)(p) + (off) + NK_CH_PF_DIST, 0, 3)

/* Whether any lane is nonzero (as an int32: 0 or not). */
INL int32_t vany(vi v) {
  int32_t r = 0;
  for (int i = 0; i < VL; i++) r |= v[i];
  return r;
}

/* Lanes [0, k) keep v, the others are 0 (k <= VL). */
INL vf vkeep(vf v, size_t k) {
  const vi live = vlane() < ((vi){0} + (int)k);
  return (vf)((vi)v & live);
}

/* fmaf on every lane. */
INL vf vfma(vf a, vf b, vf c) {
#if defined(__AVX512F__)
  return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__AVX2__) && defined(__FMA__)
  return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  vf r;
  for (int l = 0; l < VL; l++) r[l] = fmaf(a[l], b[l], c[l]);
  return r;
#endif
}

/* relu(v) = v < 0 ? 0 : v (NaN stays NaN, -0 stays -0). */
INL vf vrelu(vf v) { return (vf)((vi)v & ~(vi)(v < vsplat(0.0f))); }

/* g' = y <= 0 ? 0 : dy (a NaN y passes the gradient, as PyTorch's threshold_backward). */
INL vf vmask(vf dy, vf y) { return (vf)((vi)dy & ~(vi)(y <= vsplat(0.0f))); }

/* ---- loads and stores with dtype conversion ------------------------------------------------ */

INL vf widen(vh h, nk_dtype dt) {
  if (dt == NK_DTYPE_BF16) return (vf)(__builtin_convertvector(h, vu) << 16);
#if defined(__AVX512F__)
  return (vf)_mm512_cvtph_ps((__m256i)h);
#elif defined(__F16C__)
  return (vf)_mm256_cvtph_ps((__m128i)h);
#else
  vf r;
  for (int l = 0; l < VL; l++) r[l] = nk__f16_to_f32(h[l]);
  return r;
#endif
}

/* f32 -> bf16 / f16 bits, round to nearest even (nk__f32_to_bf16, nk__f32_to_f16). */
INL vh narrow(vf v, nk_dtype dt) {
  if (dt == NK_DTYPE_BF16) {
    const vu u = (vu)v;
    const vu hi = u >> 16;
    const vu rne = (u + 0x7FFFu + (hi & 1u)) >> 16;
    const vu nanm = (vu)((vi)(u & 0x7FFFFFFFu) > 0x7F800000);
    return __builtin_convertvector((rne & ~nanm) | ((hi | 0x40u) & nanm), vh);
  }
#if defined(__AVX512F__)
  return (vh)_mm512_cvtps_ph((__m512)v, _MM_FROUND_TO_NEAREST_INT);
#elif defined(__F16C__)
  return (vh)_mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT);
#else
  vh r;
  for (int l = 0; l < VL; l++) r[l] = nk__f32_to_f16(v[l]);
  return r;
#endif
}

/* VL elements at element index i of p. */
INL vf ld(const void *p, size_t i, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) {
    vf v;
    memcpy(&v, (const float *)p + i, sizeof v);
    return v;
  }
  vh h;
  memcpy(&h, (const uint16_t *)p + i, sizeof h);
  return widen(h, dt);
}

/* The first k (< VL) elements at i, zeros in the other lanes. */
INL vf ld_part(const void *p, size_t i, size_t k, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) {
    vf v = vsplat(0.0f);
    memcpy(&v, (const float *)p + i, k * sizeof(float));
    return v;
  }
  vh h = {0};
  memcpy(&h, (const uint16_t *)p + i, k * sizeof(uint16_t));
  return widen(h, dt);
}

INL void st(void *p, size_t i, vf v, nk_dtype dt, int nt) {
  if (dt == NK_DTYPE_F32) {
    float *q = (float *)p + i;
#if defined(__AVX512F__)
    if (nt && ((uintptr_t)q & 63u) == 0) {
      _mm512_stream_ps(q, (__m512)v);
      return;
    }
#elif defined(__AVX2__)
    if (nt && ((uintptr_t)q & 31u) == 0) {
      _mm256_stream_ps(q, (__m256)v);
      return;
    }
#endif
    (void)nt;
    memcpy(q, &v, sizeof v);
    return;
  }
  uint16_t *q = (uint16_t *)p + i;
  const vh h = narrow(v, dt);
#if defined(__AVX512F__)
  if (nt && ((uintptr_t)q & 31u) == 0) {
    _mm256_stream_si256((__m256i *)q, (__m256i)h);
    return;
  }
#elif defined(__AVX2__)
  if (nt && ((uintptr_t)q & 15u) == 0) {
    _mm_stream_si128((__m128i *)q, (__m128i)h);
    return;
  }
#endif
  memcpy(q, &h, sizeof h);
}

INL void st_part(void *p, size_t i, size_t k, vf v, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) {
    memcpy((float *)p + i, &v, k * sizeof(float));
    return;
  }
  const vh h = narrow(v, dt);
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

/* Addresses of flattened rows [i0, i0 + L) (one division for the whole run of rows). */
INL void rows_fill(const void **out, const void *base, nk_ch_rows r, size_t i0, size_t L,
                   nk_dtype dt) {
  size_t n = i0 / r.s, sp = i0 % r.s;
  const ptrdiff_t es = (ptrdiff_t)esz(dt);
  for (size_t i = 0; i < L; i++) {
    out[i] = (const char *)base + ((ptrdiff_t)n * r.n_stride + (ptrdiff_t)sp * r.row_stride) * es;
    if (++sp == r.s) sp = 0, n++;
  }
}

/* The fixed fold of the 64 lanes a[0..NA): lane[k] += lane[k + s], s = 32, 16, ..., 1. Steps
 * with s >= VL add whole vectors (a[k] += a[k + s/VL]); the rest run on the lanes of a[0]. */
INL float fold64(vf *a) {
  for (int sv = NA / 2; sv >= 1; sv /= 2)
    for (int k = 0; k < sv; k++) a[k] += a[k + sv];
  float t[VL];
  memcpy(t, &a[0], sizeof t);
  for (int sl = VL / 2; sl >= 1; sl /= 2)
    for (int k = 0; k < sl; k++) t[k] += t[k + sl];
  return t[0];
}

/* ---- block moments ------------------------------------------------------------------------- */

/* The double-precision moments of a block of n values (rare blocks: overflow, underflow of the
 * squares, NaN/inf). Any NaN or inf among the values gives NaN for both. */
static void block_moments_f64(size_t n, const double *t, double *mean, double *m2) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += t[i];
  if (!isfinite(s)) { /* finite floats never overflow a double sum of <= 1024 terms */
    *mean = *m2 = NAN;
    return;
  }
  const double m = s / (double)n;
  double q = 0.0;
  for (size_t i = 0; i < n; i++) q += (t[i] - m) * (t[i] - m);
  *mean = m;
  *m2 = q;
}

/* Branch-free (vectorizable): a sum is not finite when its exponent bits are all ones. */
INL int nonfinite(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return (u & 0x7F800000u) == 0x7F800000u;
}

/* The f32 block needs the double path when a sum is not finite, or when the squares may have
 * underflowed: Q < 2^-90 while some deviation is nonzero (nz; a constant block is exact). */
INL int block_needs_f64(float s, float d, float q, int32_t nz) {
  return nonfinite(s) | nonfinite(d) | nonfinite(q) | ((q < 0x1p-90f) & (nz != 0));
}

INL void block_finish(size_t n, float m, float d, float q, double *mean, double *m2) {
  const double inv = 1.0 / (double)n, dd = (double)d;
  double v = (double)q - dd * dd * inv;
  *mean = (double)m + dd * inv;
  *m2 = v > 0.0 ? v : 0.0;
}

/* Blocks of up to 1024 elements: 64 lanes (NA vectors), full 64-element groups, then a partial
 * group whose missing lanes add nothing (zeros: +0 added to a lane sum, e = 0 in pass 2). */
INL void moments_run_impl(size_t n, const void *x, nk_dtype dt, int pf, double acc[3]) {
  for (size_t b0 = 0; b0 < n; b0 += NK_CH_BLOCK) {
    const size_t L = n - b0 < NK_CH_BLOCK ? n - b0 : NK_CH_BLOCK;
    const size_t full = L / 64 * 64, k = L - full;
    const void *xb = (const char *)x + b0 * esz(dt);
    vf s[NA], t[NA];
    for (int a = 0; a < NA; a++) s[a] = t[a] = vsplat(0);
    for (size_t i = 0; i < full; i += 64)
      for (int a = 0; a < NA; a++) s[a] += ld(xb, i + (size_t)a * VL, dt);
    for (int a = 0; a < NA; a++) {
      const size_t ka = k > (size_t)a * VL ? (k - (size_t)a * VL < VL ? k - (size_t)a * VL : VL) : 0;
      if (ka) t[a] = ld_part(xb, full + (size_t)a * VL, ka, dt);
      s[a] += t[a];
    }
    const float sum = fold64(s);
    const float m = (float)((double)sum * (1.0 / (double)L));
    const vf vm = vsplat(m);
    vf d[NA], q[NA];
    vi nz = (vi){0};
    for (int a = 0; a < NA; a++) d[a] = q[a] = vsplat(0);
    /* Pass 2 runs on L1: out of cache, it requests the next block meanwhile (same offset,
     * one block later), so memory is busy in both passes. */
    for (size_t i = 0; i < full; i += 64)
      for (int a = 0; a < NA; a++) {
        if (pf)
          __builtin_prefetch((const char *)xb + (NK_CH_BLOCK + i + (size_t)a * VL) * esz(dt), 0, 3);
        const vf e = ld(xb, i + (size_t)a * VL, dt) - vm;
        d[a] += e;
        q[a] = vfma(e, e, q[a]);
        nz |= (vi)e;
      }
    if (k) {
      for (int a = 0; a < NA; a++) {
        const size_t ka = k > (size_t)a * VL ? (k - (size_t)a * VL < VL ? k - (size_t)a * VL : VL) : 0;
        const vf e = vkeep(t[a] - vm, ka);
        d[a] += e;
        q[a] = vfma(e, e, q[a]);
        nz |= (vi)e;
      }
    }
    const float dsum = fold64(d), qsum = fold64(q);
    double mean, m2;
    if (block_needs_f64(sum, dsum, qsum, vany(nz & 0x7FFFFFFF))) {
      double tv[NK_CH_BLOCK];
      for (size_t i = 0; i < L; i++) tv[i] = (double)get1(xb, i, dt);
      block_moments_f64(L, tv, &mean, &m2);
    } else
      block_finish(L, m, dsum, qsum, &mean, &m2);
    nk__ch_chan(&acc[0], &acc[1], &acc[2], (double)L, mean, m2);
  }
}

/* Column moments. The per-column accumulators live in stack arrays of NK_CH_TILE_COLS. */
INL void moments_cols_impl(size_t r0, size_t nrows, size_t cols, const void *x,
                             nk_ch_rows xr, nk_dtype dt, int pf, double *count, double *mean,
                             double *m2) {
  float s[NK_CH_TILE_COLS] __attribute__((aligned(64)));
  float m[NK_CH_TILE_COLS] __attribute__((aligned(64)));
  float d[NK_CH_TILE_COLS] __attribute__((aligned(64)));
  float q[NK_CH_TILE_COLS] __attribute__((aligned(64)));
  int32_t nzc[NK_CH_TILE_COLS] __attribute__((aligned(64)));
  for (size_t b0 = 0; b0 < nrows; b0 += NK_CH_BLOCK_ROWS) {
    const size_t L = nrows - b0 < NK_CH_BLOCK_ROWS ? nrows - b0 : NK_CH_BLOCK_ROWS;
    /* Column vectors outside, rows inside: the accumulators stay in registers; CG vectors at
     * a time so that CG independent chains hide the add latency. */
    const void *rp[NK_CH_BLOCK_ROWS], *np[NK_CH_BLOCK_ROWS];
    rows_fill(rp, x, xr, r0 + b0, L, dt);
    /* out of cache: pass 2 (on L1) requests the next block's lines, row by row */
    const size_t Ln = !pf || b0 + L >= nrows ? 0
                      : (nrows - b0 - L < NK_CH_BLOCK_ROWS ? nrows - b0 - L : NK_CH_BLOCK_ROWS);
    if (Ln) rows_fill(np, x, xr, r0 + b0 + L, Ln, dt);
    const size_t lines = (cols * esz(dt) + 63) / 64, nlines = Ln * lines;
    size_t pq = 0;
    size_t j = 0;
    for (; j + CG * VL <= cols; j += CG * VL) {
      vf a[CG];
      for (int g = 0; g < CG; g++) a[g] = vsplat(0);
      for (size_t i = 0; i < L; i++)
        for (int g = 0; g < CG; g++) a[g] += ld(rp[i], j + (size_t)g * VL, dt);
      for (int g = 0; g < CG; g++) memcpy(s + j + (size_t)g * VL, &a[g], sizeof a[g]);
    }
    for (; j < cols; j += VL) {
      const size_t kj = cols - j < VL ? cols - j : VL;
      vf a = vsplat(0);
      for (size_t i = 0; i < L; i++) a += kj == VL ? ld(rp[i], j, dt) : ld_part(rp[i], j, kj, dt);
      memcpy(s + j, &a, sizeof a);
    }
    const double dl = (double)L;
    const double inv = 1.0 / dl; /* one division per block; the rest multiply */
    for (size_t jj = 0; jj < cols; jj++) m[jj] = (float)((double)s[jj] * inv);
    for (j = 0; j + CG * VL <= cols; j += CG * VL) {
      vf vm[CG], vd[CG], vq[CG];
      vi vz[CG];
      for (int g = 0; g < CG; g++) {
        memcpy(&vm[g], m + j + (size_t)g * VL, sizeof vm[g]);
        vd[g] = vq[g] = vsplat(0);
        vz[g] = (vi){0};
      }
      for (size_t i = 0; i < L; i++)
        for (int g = 0; g < CG; g++) {
          if (pq < nlines)
            __builtin_prefetch((const char *)np[pq / lines] + (pq % lines) * 64, 0, 3), pq++;
          const vf e = ld(rp[i], j + (size_t)g * VL, dt) - vm[g];
          vd[g] += e;
          vq[g] = vfma(e, e, vq[g]);
          vz[g] |= (vi)e;
        }
      for (int g = 0; g < CG; g++) {
        vz[g] &= 0x7FFFFFFF;
        memcpy(d + j + (size_t)g * VL, &vd[g], sizeof vd[g]);
        memcpy(q + j + (size_t)g * VL, &vq[g], sizeof vq[g]);
        memcpy(nzc + j + (size_t)g * VL, &vz[g], sizeof vz[g]);
      }
    }
    for (; j < cols; j += VL) {
      const size_t kj = cols - j < VL ? cols - j : VL;
      vf vm, vd = vsplat(0), vq = vsplat(0);
      vi vz = (vi){0};
      memcpy(&vm, m + j, sizeof vm);
      for (size_t i = 0; i < L; i++) {
        const vf e = (kj == VL ? ld(rp[i], j, dt) : ld_part(rp[i], j, kj, dt)) - vm;
        vd += e;
        vq = vfma(e, e, vq);
        vz |= (vi)e;
      }
      vz &= 0x7FFFFFFF;
      memcpy(d + j, &vd, sizeof vd);
      memcpy(q + j, &vq, sizeof vq);
      memcpy(nzc + j, &vz, sizeof vz);
    }
    /* Block moments and Chan merge, per column (the count is shared by the columns). The
     * common case (no column needs the double block) runs as plain loops the compiler
     * vectorizes; the formulas are exactly those of block_finish and nk__ch_chan. */
    const double na = *count, nb = dl;
    uint32_t bad = 0;
    for (size_t j = 0; j < cols; j++) bad |= (uint32_t)block_needs_f64(s[j], d[j], q[j], nzc[j]);
    if (!bad) {
      if (na == 0.0) {
        for (size_t j = 0; j < cols; j++) {
          const double dd = (double)d[j], v = (double)q[j] - dd * dd * inv;
          mean[j] = (double)m[j] + dd * inv;
          m2[j] = v > 0.0 ? v : 0.0;
        }
      } else {
        const double n = na + nb, w1 = nb / n, w2 = na * nb / n;
        for (size_t j = 0; j < cols; j++) {
          const double dd = (double)d[j], v = (double)q[j] - dd * dd * inv;
          const double bm = (double)m[j] + dd * inv, bm2 = v > 0.0 ? v : 0.0;
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
      if (block_needs_f64(s[j], d[j], q[j], nzc[j])) {
        double tv[NK_CH_BLOCK_ROWS];
        for (size_t i = 0; i < L; i++) tv[i] = (double)get1(rp[i], j, dt);
        block_moments_f64(L, tv, &bm, &bm2);
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

INL vf norm_v(vf xv, vf s, vf mh, vf mlr, vf r, vf g, vf b) {
  return vfma(vfma(xv * s - mh, r, -mlr), g, b);
}

/* k elements (VL when full) at element i; the parameters are vectors (p* == NULL: splats). */
INL void norm_at(const void *x, const void *z, void *y, nk_dtype dt, size_t i, size_t k,
                 int full, vf s, vf mh, vf mlr, vf r, vf g, vf b, int add, int relu, int nt) {
  vf v = norm_v(full ? ld(x, i, dt) : ld_part(x, i, k, dt), s, mh, mlr, r, g, b);
  if (add) v += full ? ld(z, i, dt) : ld_part(z, i, k, dt);
  if (relu) v = vrelu(v);
  if (full) {
    if (nt) PF(x, i * esz(dt)); /* streaming outputs come with out-of-cache inputs */
    st(y, i, v, dt, nt);
  } else {
    st_part(y, i, k, v, dt);
  }
}

/* The element loop of a run of n: an unaligned head (streaming only), whole vectors, a tail.
 * BODY(i, k, full) handles k elements at i. */
#define NK_CH_ELEMENTS(n, h, BODY)                                                               \
  do {                                                                                           \
    size_t i_ = 0;                                                                               \
    while (i_ < (h)) {                                                                           \
      const size_t k_ = (h) - i_ < VL ? (h) - i_ : VL;                                           \
      BODY(i_, k_, 0);                                                                           \
      i_ += k_;                                                                                  \
    }                                                                                            \
    for (; i_ + VL <= (n); i_ += VL) BODY(i_, VL, 1);                                            \
    if (i_ < (n)) BODY(i_, (n) - i_, 0);                                                         \
  } while (0)

INL void norm_run_impl(size_t n, const void *x, const void *z, void *y, nk_dtype dt,
                       const nk_ch_norm_scalars *p, uint32_t flags, int nt) {
  const vf mh = vsplat(p->mh), mlr = vsplat(p->mlr), r = vsplat(p->r), g = vsplat(p->g),
           b = vsplat(p->b), s = vsplat(p->half ? 0.5f : 1.0f);
  const int add = (flags & NK_CHK_ADD) != 0, relu = (flags & NK_CHK_RELU) != 0;
  const size_t h = head_elems(y, n, esz(dt), nt);
#define BODY(i, k, full) norm_at(x, z, y, dt, i, k, full, s, mh, mlr, r, g, b, add, relu, nt)
  NK_CH_ELEMENTS(n, h, BODY);
#undef BODY
  if (nt) nt_fence();
}

INL void norm_cols_impl(size_t r0, size_t nrows, size_t cols, const void *x, nk_ch_rows xr,
                        const void *z, nk_ch_rows zr, void *y, nk_ch_rows yr, nk_dtype dt,
                        const nk_ch_norm_vectors *p, uint32_t flags, int nt) {
  const int add = (flags & NK_CHK_ADD) != 0, relu = (flags & NK_CHK_RELU) != 0;
  const float *pmh = p->mh, *pmlr = p->mlr, *pr = p->r, *pg = p->g, *pb = p->b;
  const float *ps = p->s; /* NULL: no column halved, s = 1 (the loop without the s loads) */
  const vf one = vsplat(1.0f);
  const nk_dtype F = NK_DTYPE_F32;
  const void *xa[NK_CH_BLOCK_ROWS], *za[NK_CH_BLOCK_ROWS], *ya[NK_CH_BLOCK_ROWS];
  for (size_t i = 0; i < nrows; i++) {
    const size_t bi = i % NK_CH_BLOCK_ROWS;
    if (bi == 0) {
      const size_t L = nrows - i < NK_CH_BLOCK_ROWS ? nrows - i : NK_CH_BLOCK_ROWS;
      rows_fill(xa, x, xr, r0 + i, L, dt);
      rows_fill(ya, y, yr, r0 + i, L, dt);
      if (add) rows_fill(za, z, zr, r0 + i, L, dt);
    }
    const void *xp = xa[bi], *zp = add ? za[bi] : NULL;
    void *yp = (void *)ya[bi];
    const size_t h = head_elems(yp, cols, esz(dt), nt);
#define PV(ptr, j, k, full) ((full) ? ld(ptr, j, F) : ld_part(ptr, j, k, F))
#define BODY_S(j, k, full, S)                                                                    \
  norm_at(xp, zp, yp, dt, j, k, full, S, PV(pmh, j, k, full), PV(pmlr, j, k, full),              \
          PV(pr, j, k, full), PV(pg, j, k, full), PV(pb, j, k, full), add, relu, nt)
#define BODY_HALF(j, k, full) BODY_S(j, k, full, PV(ps, j, k, full))
#define BODY_ONE(j, k, full) BODY_S(j, k, full, one)
    if (ps)
      NK_CH_ELEMENTS(cols, h, BODY_HALF);
    else
      NK_CH_ELEMENTS(cols, h, BODY_ONE);
#undef BODY_ONE
#undef BODY_HALF
#undef BODY_S
  }
  if (nt) nt_fence();
}

/* ---- gradient sums --------------------------------------------------------------------------- */

/* A gradient block needs the double path when a sum is not finite, or when the products g' e
 * may have underflowed: |B| < 2^-90 while B or C is nonzero (deviations near FLT_MIN times
 * moderate gradients land on the subnormal grid, and rstd ~ 1e6 turned that into a dgamma of
 * -3.2e-40 where it is 0: chnorm fuzz harness). B == C == 0 (a constant block, or zero
 * gradients) is exact. */
INL int grad_needs_f64(float a, float b, float c) {
  return nonfinite(a) | nonfinite(b) | nonfinite(c) |
         ((fabsf(b) < 0x1p-90f) & ((b != 0.0f) | (c != 0.0f)));
}

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
  const int mask = (flags & NK_CHK_MASK) != 0, pf = (flags & NK_CHK_PF) != 0;
  const vf vm = vsplat(mh);
  for (size_t b0 = 0; b0 < n; b0 += NK_CH_BLOCK) {
    const size_t L = n - b0 < NK_CH_BLOCK ? n - b0 : NK_CH_BLOCK;
    const size_t full = L / 64 * 64, k = L - full;
    const size_t off = b0 * esz(dt);
    const void *xb = (const char *)x + off, *dyb = (const char *)dy + off;
    const void *yb = mask ? (const char *)y + off : NULL;
    vf A[NA], B[NA], C[NA];
    for (int a = 0; a < NA; a++) A[a] = B[a] = C[a] = vsplat(0);
    for (size_t i = 0; i < full; i += 64)
      for (int a = 0; a < NA; a++) {
        const size_t at = i + (size_t)a * VL;
        if (pf) PF(xb, at * esz(dt)), PF(dyb, at * esz(dt));
        vf g = ld(dyb, at, dt);
        if (mask) g = vmask(g, ld(yb, at, dt));
        const vf e = ld(xb, at, dt) - vm;
        A[a] += g;
        B[a] = vfma(g, e, B[a]);
        C[a] += e;
      }
    for (int a = 0; a < NA && k; a++) {
      /* lanes past the end add nothing: g = 0 and e = 0 there */
      const size_t ka = k > (size_t)a * VL ? (k - (size_t)a * VL < VL ? k - (size_t)a * VL : VL) : 0;
      if (ka == 0) break;
      const size_t at = full + (size_t)a * VL;
      vf g = ld_part(dyb, at, ka, dt);
      if (mask) g = vmask(g, ld_part(yb, at, ka, dt));
      const vf e = vkeep(ld_part(xb, at, ka, dt) - vm, ka);
      A[a] += g;
      B[a] = vfma(g, e, B[a]);
      C[a] += e;
    }
    const float fa = fold64(A), fb = fold64(B), fc = fold64(C);
    if (grad_needs_f64(fa, fb, fc)) {
      gradsum_f64(L, xb, 1, yb, 1, dyb, 1, dt, mh, mask, acc);
    } else {
      acc[0] += (double)fa;
      acc[1] += (double)fb;
      acc[2] += (double)fc;
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
  /* the call's double totals per column (added to acc at the end; callers pass acc zeroed) */
  double ta[NK_CH_TILE_COLS], tb[NK_CH_TILE_COLS], tc[NK_CH_TILE_COLS];
  memset(ta, 0, cols * sizeof(double));
  memset(tb, 0, cols * sizeof(double));
  memset(tc, 0, cols * sizeof(double));
  const int mask = (flags & NK_CHK_MASK) != 0;
  for (size_t b0 = 0; b0 < nrows; b0 += NK_CH_BLOCK_ROWS) {
    const size_t L = nrows - b0 < NK_CH_BLOCK_ROWS ? nrows - b0 : NK_CH_BLOCK_ROWS;
    const void *xp[NK_CH_BLOCK_ROWS], *dyp[NK_CH_BLOCK_ROWS], *yp[NK_CH_BLOCK_ROWS];
    rows_fill(xp, x, xr, r0 + b0, L, dt);
    rows_fill(dyp, dy, dyr, r0 + b0, L, dt);
    if (mask) rows_fill(yp, y, yr, r0 + b0, L, dt);
    size_t j = 0;
    for (; j + CGG * VL <= cols; j += CGG * VL) { /* CGG column vectors: independent chains */
      vf a[CGG], b[CGG], c[CGG], vm[CGG];
      for (int g = 0; g < CGG; g++) {
        a[g] = b[g] = c[g] = vsplat(0);
        vm[g] = ld(mh, j + (size_t)g * VL, NK_DTYPE_F32);
      }
      for (size_t i = 0; i < L; i++)
        for (int g = 0; g < CGG; g++) {
          const size_t at = j + (size_t)g * VL;
          vf gv = ld(dyp[i], at, dt);
          if (mask) gv = vmask(gv, ld(yp[i], at, dt));
          const vf e = ld(xp[i], at, dt) - vm[g];
          a[g] += gv;
          b[g] = vfma(gv, e, b[g]);
          c[g] += e;
        }
      for (int g = 0; g < CGG; g++) {
        memcpy(A + j + (size_t)g * VL, &a[g], sizeof a[g]);
        memcpy(B + j + (size_t)g * VL, &b[g], sizeof b[g]);
        memcpy(C + j + (size_t)g * VL, &c[g], sizeof c[g]);
      }
    }
    for (; j < cols; j += VL) {
      const size_t kj = cols - j < VL ? cols - j : VL;
      vf a = vsplat(0), b = vsplat(0), c = vsplat(0);
      const vf vm = kj == VL ? ld(mh, j, NK_DTYPE_F32) : ld_part(mh, j, kj, NK_DTYPE_F32);
      for (size_t i = 0; i < L; i++) {
        vf g, xv;
        if (kj == VL) {
          g = ld(dyp[i], j, dt);
          if (mask) g = vmask(g, ld(yp[i], j, dt));
          xv = ld(xp[i], j, dt);
        } else {
          g = ld_part(dyp[i], j, kj, dt);
          if (mask) g = vmask(g, ld_part(yp[i], j, kj, dt));
          xv = ld_part(xp[i], j, kj, dt);
        }
        const vf e = xv - vm;
        a += g;
        b = vfma(g, e, b);
        c += e;
      }
      memcpy(A + j, &a, sizeof a);
      memcpy(B + j, &b, sizeof b);
      memcpy(C + j, &c, sizeof c);
    }
    /* the block sums go to double totals (SoA, vectorizable) unless a column overflowed */
    uint32_t bad = 0;
    for (size_t jj = 0; jj < cols; jj++)
      bad |= (uint32_t)grad_needs_f64(A[jj], B[jj], C[jj]);
    if (!bad) {
      for (size_t jj = 0; jj < cols; jj++) {
        ta[jj] += (double)A[jj];
        tb[jj] += (double)B[jj];
        tc[jj] += (double)C[jj];
      }
      continue;
    }
    for (size_t jj = 0; jj < cols; jj++) {
      if (grad_needs_f64(A[jj], B[jj], C[jj])) {
        double t[3] = {0.0, 0.0, 0.0};
        for (size_t i = 0; i < L; i++) {
          const size_t row = r0 + b0 + i;
          gradsum_f64(1, (const char *)row_ptr(x, xr, row, dt) + jj * esz(dt), 1,
                      mask ? (const char *)row_ptr(y, yr, row, dt) + jj * esz(dt) : NULL, 1,
                      (const char *)row_ptr(dy, dyr, row, dt) + jj * esz(dt), 1, dt, mh[jj],
                      mask, t);
        }
        ta[jj] += t[0];
        tb[jj] += t[1];
        tc[jj] += t[2];
      } else {
        ta[jj] += (double)A[jj];
        tb[jj] += (double)B[jj];
        tc[jj] += (double)C[jj];
      }
    }
  }
  for (size_t jj = 0; jj < cols; jj++) {
    acc[3 * jj] += ta[jj];
    acc[3 * jj + 1] += tb[jj];
    acc[3 * jj + 2] += tc[jj];
  }
}

/* ---- dx ------------------------------------------------------------------------------------- */

INL vf dx_v(vf xv, vf g, vf s, vf mh, vf mcr, vf r, vf u, vf a, vf b, vf v) {
  const vf xh = vfma(xv * s - mh, r, -mcr);
  return vfma(-xh, b, g * u - a) * v;
}

INL void dx_at(const void *x, const void *y, const void *dy, void *dx, void *dz, nk_dtype dt,
               size_t i, size_t k, int full, vf s, vf mh, vf mcr, vf r, vf u, vf a, vf b, vf v,
               int mask, int wdz, int nt) {
  vf g = full ? ld(dy, i, dt) : ld_part(dy, i, k, dt);
  if (mask) g = vmask(g, full ? ld(y, i, dt) : ld_part(y, i, k, dt));
  const vf o = dx_v(full ? ld(x, i, dt) : ld_part(x, i, k, dt), g, s, mh, mcr, r, u, a, b, v);
  if (full) {
    if (nt) PF(x, i * esz(dt)), PF(dy, i * esz(dt));
    st(dx, i, o, dt, nt);
    if (wdz) st(dz, i, g, dt, nt);
  } else {
    st_part(dx, i, k, o, dt);
    if (wdz) st_part(dz, i, k, g, dt);
  }
}

INL void dx_run_impl(size_t n, const void *x, const void *y, const void *dy, void *dx,
                     void *dz, nk_dtype dt, const nk_ch_dx_scalars *p, uint32_t flags, int nt) {
  const vf mh = vsplat(p->mh), mcr = vsplat(p->mcr), r = vsplat(p->r), u = vsplat(p->u),
           a = vsplat(p->a), b = vsplat(p->b), v = vsplat(p->v), s = vsplat(p->half ? 0.5f : 1.0f);
  const int mask = (flags & NK_CHK_MASK) != 0, wdz = (flags & NK_CHK_DZ) != 0;
  const size_t h = head_elems(dx, n, esz(dt), nt);
#define BODY(i, k, full)                                                                         \
  dx_at(x, y, dy, dx, dz, dt, i, k, full, s, mh, mcr, r, u, a, b, v, mask, wdz, nt)
  NK_CH_ELEMENTS(n, h, BODY);
#undef BODY
  if (nt) nt_fence();
}

INL void dx_cols_impl(size_t r0, size_t nrows, size_t cols, const void *x, nk_ch_rows xr,
                      const void *y, nk_ch_rows yr, const void *dy, nk_ch_rows dyr, void *dx,
                      nk_ch_rows dxr, void *dz, nk_ch_rows dzr, nk_dtype dt,
                      const nk_ch_dx_vectors *p, uint32_t flags, int nt) {
  const int mask = (flags & NK_CHK_MASK) != 0, wdz = (flags & NK_CHK_DZ) != 0;
  const nk_dtype F = NK_DTYPE_F32;
  const float *pmh = p->mh, *pmcr = p->mcr, *pr = p->r, *pu = p->u, *pa = p->a, *pb = p->b,
              *pv = p->v;
  const float *ps = p->s; /* NULL: no column halved, s = 1 (the loop without the s loads) */
  const vf one = vsplat(1.0f);
  const void *xa[NK_CH_BLOCK_ROWS], *dya[NK_CH_BLOCK_ROWS], *ya[NK_CH_BLOCK_ROWS];
  const void *dxa[NK_CH_BLOCK_ROWS], *dza[NK_CH_BLOCK_ROWS];
  for (size_t i = 0; i < nrows; i++) {
    const size_t bi = i % NK_CH_BLOCK_ROWS;
    if (bi == 0) {
      const size_t L = nrows - i < NK_CH_BLOCK_ROWS ? nrows - i : NK_CH_BLOCK_ROWS;
      rows_fill(xa, x, xr, r0 + i, L, dt);
      rows_fill(dya, dy, dyr, r0 + i, L, dt);
      rows_fill(dxa, dx, dxr, r0 + i, L, dt);
      if (mask) rows_fill(ya, y, yr, r0 + i, L, dt);
      if (wdz) rows_fill(dza, dz, dzr, r0 + i, L, dt);
    }
    const void *xp = xa[bi], *dyp = dya[bi], *yp = mask ? ya[bi] : NULL;
    void *dxp = (void *)dxa[bi], *dzp = wdz ? (void *)dza[bi] : NULL;
    const size_t h = head_elems(dxp, cols, esz(dt), nt);
#define BODY_S(j, k, full, S)                                                                    \
  dx_at(xp, yp, dyp, dxp, dzp, dt, j, k, full, S, PV(pmh, j, k, full), PV(pmcr, j, k, full),     \
        PV(pr, j, k, full), PV(pu, j, k, full), PV(pa, j, k, full), PV(pb, j, k, full),          \
        PV(pv, j, k, full), mask, wdz, nt)
#define BODY_HALF(j, k, full) BODY_S(j, k, full, PV(ps, j, k, full))
#define BODY_ONE(j, k, full) BODY_S(j, k, full, one)
    if (ps)
      NK_CH_ELEMENTS(cols, h, BODY_HALF);
    else
      NK_CH_ELEMENTS(cols, h, BODY_ONE);
#undef BODY_ONE
#undef BODY_HALF
#undef BODY_S
  }
  if (nt) nt_fence();
}
#undef PV

/* ---- specializations: the dtype and the flags that shape the loops are compile-time ------- */

#define NK_CH_DT_SWITCH(CALL)                                                                    \
  do {                                                                                           \
    switch (dt) {                                                                                \
      case NK_DTYPE_BF16: CALL(NK_DTYPE_BF16); break;                                            \
      case NK_DTYPE_F16: CALL(NK_DTYPE_F16); break;                                              \
      default: CALL(NK_DTYPE_F32); break;                                                        \
    }                                                                                            \
  } while (0)

static void FN(moments_run)(size_t n, const void *x, nk_dtype dt, uint32_t flags,
                            double acc[3]) {
  const int pf = (flags & NK_CHK_PF) != 0;
#define CALL(D) moments_run_impl(n, x, D, pf, acc)
  NK_CH_DT_SWITCH(CALL);
#undef CALL
}

static void FN(moments_cols)(size_t r0, size_t nrows, size_t cols, const void *x, nk_ch_rows xr,
                             nk_dtype dt, uint32_t flags, double *count, double *mean,
                             double *m2) {
  const int pf = (flags & NK_CHK_PF) != 0;
#define CALL(D) moments_cols_impl(r0, nrows, cols, x, xr, D, pf, count, mean, m2)
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
#define G0(D) gradsum_run_impl(n, x, y, dy, D, mh, flags & NK_CHK_PF, acc)
#define GM(D) gradsum_run_impl(n, x, y, dy, D, mh, NK_CHK_MASK | (flags & NK_CHK_PF), acc)
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
