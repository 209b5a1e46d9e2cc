/*
 * avx2.c — the AVX2 softmax-family kernels: softmax / log-softmax forward (three-pass reload
 * and recompute, two-pass, online), backward, fused cross-entropy, sigmoid scores forward and
 * backward, and normkit's exp; f32, bf16 and f16 rows, mask of any of those dtypes (chosen at
 * run time). Compiled with -mavx2 -mfma -mf16c (and -ffp-contract=off, like every file).
 *
 * Contract: softmax.h. The output bits are those of scalar.c for every input: every f32 step
 * of the canonical arithmetic is the same IEEE operation here, fma exactly where the contract
 * has fma (_mm256_fmadd_ps; fma(-a, b, c) as _mm256_fnmadd_ps(a, b, c)) and nowhere else, and
 * every double step is the shared code of softmax-common.h.
 *
 * Lanes: ymm k holds the canonical lanes 8k..8k+7, so a 64-element step adds element b+64j+l
 * to lane l in increasing j, as scalar's lane[(j - b) % 64]. Reductions with one accumulator
 * per lane (three-pass sum, backward sums) keep all 8 vectors live; the pair-valued ones (two-
 * pass (M, N), online (m, d)) sweep each block twice, lanes 0..31 then 32..63 (cross-entropy
 * with label smoothing, which adds T, four times: 16 lanes per sweep), each lane still adding
 * its terms in increasing j. Blocks fold with the contract's tree (fold64, and tp_fold /
 * ol_fold with the pair operators; the s = 4, 2, 1 steps combine the vector with itself
 * shifted by s lanes, the lanes that are not used computing ignored values).
 *
 * exp (exp8): t clamped, n = rint(t * LOG2E) by vroundps (nearest even), the two-step
 * reduction and the degree-5 polynomial with vfmadd, and RN(p * 2^n) as (p * 2^(n >> 1)) *
 * 2^(n - (n >> 1)) with both factors built from integer exponent bits: the first product is
 * exact (2^(n>>1) >= 2^-75 keeps it normal), the second rounds once, so the result is the
 * correctly rounded product of ldexpf, subnormals and overflow included.
 *
 * Tail handling: no access outside [0, n): f32 tails use vmaskmov, 16-bit tails a zeroed
 * 8-element stack buffer (../x86/avx2-io.h). In the reductions a lane past the end keeps its
 * value (blendv), so a partial block adds exactly the terms scalar adds. Elements
 * [n_valid, n) are never read: they are written with the row's constant (0 or -inf).
 * In place (y == x; dx == dy or y; cross-entropy dx == x): every pass that writes reads each
 * element before writing it, in the same 8-lane step; the reductions end before the pass
 * that writes (reload: pass 2 writes y only after reading x at the same index).
 *
 * Speed: the output pass of a row with nontemporal set streams its stores (from the first
 * 64-byte boundary of y) and the kernel ends with _mm_sfence(); it also prefetches, into L2,
 * the bytes just past the row (the next row of a dense batch; a prefetch is a hint that never
 * faults and reads nothing architecturally), since the next row's first pass would otherwise
 * start cold. Structure: always-inline element helpers with compile-time dtype and operation;
 * the row-level steps are plain static functions (compile-time dtype through the named
 * wrappers), which keeps the number of specializations small.
 */
#include <assert.h>
#include <immintrin.h>
#include <math.h>
#include <stdalign.h>
#include <stdint.h>
#include <string.h>

#include "../x86/avx2-io.h"
#include "convert.h"
#include "softmax-common.h"
#include "softmax.h"

#define LANES NK_SOFTMAX_LANES /* 64: 8 ymm of 8 f32 lanes */
#define BLOCK NK_SOFTMAX_BLOCK /* 1024 */
/* Three-pass rows up to this many elements keep their exponentials in a 32 KiB stack buffer. */
#define SCRATCH NK_SOFTMAX_SCRATCH

/* exp constants (softmax.h, softmax-common.h) */
#define LOG2E NK_SM_LOG2E
#define LN2_HI NK_SM_LN2_HI
#define LN2_LO NK_SM_LN2_LO
#define C1 NK_SM_C1
#define C2 NK_SM_C2
#define C3 NK_SM_C3
#define C4 NK_SM_C4
#define C5 NK_SM_C5
#define T_MIN NK_SM_EXP_LO
#define T_MAX NK_SM_EXP_HI

/* ---- f32 building blocks ------------------------------------------------------------------- */

NK_INLINE __m256 vneg_inf(void) { return _mm256_set1_ps(-INFINITY); }

NK_INLINE __m256 vcanon_nan(void) { return _mm256_castsi256_ps(_mm256_set1_epi32((int32_t)NK_SM_NAN_BITS)); }

/* NaN lanes -> the canonical NaN 0x7FC00000. */
NK_INLINE __m256 canon_nan8(__m256 v) {
  return _mm256_blendv_ps(v, vcanon_nan(), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

/* rint, ties to even (n = rint(t * LOG2E)). */
NK_INLINE __m256 rint8(__m256 v) {
  return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* p = C5; p = fma(p, r, C4); ... ; p = fma(p, r, 1) */
NK_INLINE __m256 poly8(__m256 r) {
  __m256 p = _mm256_set1_ps(C5);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C1));
  return _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
}

/* 2^e as f32 bits, e in [-126, 127]. */
NK_INLINE __m256 pow2i8(__m256i e) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23));
}

/* RN(p * 2^n), n in [-160, 128]: (p * 2^(n >> 1)) * 2^(n - (n >> 1)). */
NK_INLINE __m256 scale2n8(__m256 p, __m256i n) {
  const __m256i n1 = _mm256_srai_epi32(n, 1);
  const __m256i n2 = _mm256_sub_epi32(n, n1);
  return _mm256_mul_ps(_mm256_mul_ps(p, pow2i8(n1)), pow2i8(n2));
}

/* The canonical exp (softmax.h):
 *   t = min(max(t, -104), 88.75);  n = rint(t * LOG2E)
 *   r = fma(n, -LN2_HI, t); r = fma(n, -LN2_LO, r);  exp = RN(poly(r) * 2^n)
 * max_ps(a, b) is (a > b) ? a : b and min_ps(a, b) is (a < b) ? a : b: with the constant as
 * a, a NaN t passes through. */
NK_INLINE __m256 exp8(__m256 t) {
  t = _mm256_min_ps(_mm256_set1_ps(T_MAX), _mm256_max_ps(_mm256_set1_ps(T_MIN), t));
  const __m256 n = rint8(_mm256_mul_ps(t, _mm256_set1_ps(LOG2E)));
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), t);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
  return scale2n8(poly8(r), _mm256_cvtps_epi32(n));
}

NK_INLINE float exp1(float t) { return _mm256_cvtss_f32(exp8(_mm256_set1_ps(t))); }

/* extexp(z) = (p, n) (softmax.h):  n = rint(z * LOG2E); r = fma(n, -LN2_HI, z);
 * r = fma(n, -LN2_LO, r); r = (1 < max(-1, r)) ? 1 : ...; p = poly(r); z == -inf: p = 0
 * (n is -inf already). */
NK_INLINE __m256 extexp8(__m256 z, __m256 *n) {
  *n = rint8(_mm256_mul_ps(z, _mm256_set1_ps(LOG2E)));
  __m256 r = _mm256_fmadd_ps(*n, _mm256_set1_ps(-LN2_HI), z);
  r = _mm256_fmadd_ps(*n, _mm256_set1_ps(-LN2_LO), r);
  r = _mm256_min_ps(_mm256_set1_ps(1.0f), _mm256_max_ps(_mm256_set1_ps(-1.0f), r));
  return _mm256_andnot_ps(_mm256_cmp_ps(z, vneg_inf(), _CMP_EQ_OQ), poly8(r));
}

/* f(d) = 2^d for d >= -126 (d integral, <= 0 at every use), else 0 (NaN, -inf). */
NK_INLINE __m256 f8(__m256 d) {
  const __m256 ok = _mm256_cmp_ps(d, _mm256_set1_ps(-126.0f), _CMP_GE_OQ);
  return _mm256_and_ps(ok, pow2i8(_mm256_cvttps_epi32(d)));
}

/* Lanes k+s of v moved to lanes k (s = 4, 2, 1), for the last steps of the fold trees. */
NK_INLINE __m256 shift4(__m256 v) { return _mm256_permute2f128_ps(v, v, 0x01); }
NK_INLINE __m256 shift2(__m256 v) { return _mm256_permute_ps(v, 0x4E); }
NK_INLINE __m256 shift1(__m256 v) { return _mm256_permute_ps(v, 0xB1); }

/* ---- logits -------------------------------------------------------------------------------- */

/* Where the logits of a row come from: z = x * scale (+ mask) (+ alibi * ((float)j - pos)). */
typedef struct zsrc {
  const void *x, *mask;
  nk_dtype mdt;
  float scale, alibi, pos;
} zsrc;

NK_INLINE __m256 iota8(size_t i) {
  return _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_set1_epi32((int32_t)i),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}

/* z_j for j = i .. i+7 (the first k with full == 0; the other lanes hold junk). */
NK_INLINE __m256 z8(nk_dtype dt, const zsrc *s, size_t i, size_t k, int full) {
  __m256 z = _mm256_mul_ps(load8(s->x, i, k, dt, full), _mm256_set1_ps(s->scale));
  if (s->mask) {
    __m256 mv;
    if (s->mdt == NK_DTYPE_BF16) mv = load8(s->mask, i, k, NK_DTYPE_BF16, full);
    else if (s->mdt == NK_DTYPE_F16) mv = load8(s->mask, i, k, NK_DTYPE_F16, full);
    else mv = load8(s->mask, i, k, NK_DTYPE_F32, full);
    z = _mm256_add_ps(z, mv);
  }
  if (s->alibi != 0.0f)
    z = _mm256_add_ps(z, _mm256_mul_ps(_mm256_set1_ps(s->alibi),
                                       _mm256_sub_ps(iota8(i), _mm256_set1_ps(s->pos))));
  return z;
}

/* max_j z_j over [0, nv) (any order; a NaN z is never taken: max_ps(z, m) = (z > m) ? z : m),
 * -inf for nv == 0. */
static float max_z(nk_dtype dt, const zsrc *s, size_t nv) {
  __m256 m0 = vneg_inf(), m1 = m0, m2 = m0, m3 = m0;
  size_t i = 0;
  for (; i + 32 <= nv; i += 32) {
    m0 = _mm256_max_ps(z8(dt, s, i, 8, 1), m0);
    m1 = _mm256_max_ps(z8(dt, s, i + 8, 8, 1), m1);
    m2 = _mm256_max_ps(z8(dt, s, i + 16, 8, 1), m2);
    m3 = _mm256_max_ps(z8(dt, s, i + 24, 8, 1), m3);
  }
  for (; i + 8 <= nv; i += 8) m0 = _mm256_max_ps(z8(dt, s, i, 8, 1), m0);
  if (i < nv) m1 = keep8(m1, _mm256_max_ps(z8(dt, s, i, nv - i, 0), m1), nv - i, 0);
  __m256 m = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
  m = _mm256_max_ps(m, shift4(m));
  m = _mm256_max_ps(m, shift2(m));
  m = _mm256_max_ps(m, shift1(m));
  return _mm256_cvtss_f32(m);
}

/* ---- three-pass sum ------------------------------------------------------------------------ */

/* The three-pass sum S = *ones + R over [0, nv), e_j = exp(z_j - m): terms equal to 1.0f are
 * counted, R = blocksum of the others (a 1.0f term adds +0 to its lane). Reload (yst != NULL,
 * f32 y) also stores e_j (softmax) or z_j - m (log) to y. Returns R. */
static double sum_exp(nk_dtype dt, const zsrc *s, size_t nv, float m, float *yst, int log,
                      double *ones, const char *pf) {
  const __m256 vm = _mm256_set1_ps(m), one = _mm256_set1_ps(1.0f);
  double total = 0.0;
  size_t count = 0;
  for (size_t b = 0; b < nv; b += BLOCK) {
    const size_t e = b + BLOCK < nv ? b + BLOCK : nv;
    __m256 acc[8];
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
    size_t i = b;
    for (; i + LANES <= e; i += LANES) {
      if (pf) /* large working sets: the next dense row, into L2, while this pass computes */
        for (size_t off = 0; off < LANES * esize(dt); off += 64)
          _mm_prefetch(pf + i * esize(dt) + off, _MM_HINT_T1);
      for (int j = 0; j < 8; j++) {
        const size_t ij = i + 8 * (size_t)j;
        const __m256 d = _mm256_sub_ps(z8(dt, s, ij, 8, 1), vm);
        const __m256 ex = exp8(d);
        if (yst) _mm256_storeu_ps(yst + ij, log ? d : ex);
        const __m256 is1 = _mm256_cmp_ps(ex, one, _CMP_EQ_OQ);
        count += (size_t)__builtin_popcount((unsigned)_mm256_movemask_ps(is1));
        acc[j] = _mm256_add_ps(acc[j], _mm256_andnot_ps(is1, ex));
      }
    }
    if (i < e) {
      const size_t k = e - i;
      for (int j = 0; j < 8; j++) {
        const size_t ij = i + 8 * (size_t)j, kj = count_at(k, (size_t)j);
        if (kj == 0) break;
        const __m256 d = _mm256_sub_ps(z8(dt, s, ij, kj, 0), vm);
        const __m256 ex = exp8(d);
        if (yst) _mm256_maskstore_ps(yst + ij, mask8(kj), log ? d : ex);
        const __m256 is1 = _mm256_and_ps(_mm256_cmp_ps(ex, one, _CMP_EQ_OQ),
                                         _mm256_castsi256_ps(mask8(kj)));
        count += (size_t)__builtin_popcount((unsigned)_mm256_movemask_ps(is1));
        acc[j] = keep8(acc[j], _mm256_add_ps(acc[j], _mm256_andnot_ps(is1, ex)), kj, 0);
      }
    }
    total += (double)fold64(acc);
  }
  *ones = (double)count;
  return total;
}

/* ---- two-pass sums ------------------------------------------------------------------------- */

/* (Ma, Na) (+) (Mb, Nb) = (fma(Mb, f(Nb - N), Ma * f(Na - N)), N), N = (Nb > Na) ? Nb : Na */
NK_INLINE void tp_comb(__m256 *Ma, __m256 *Na, __m256 Mb, __m256 Nb) {
  const __m256 N = _mm256_max_ps(Nb, *Na);
  *Ma = _mm256_fmadd_ps(Mb, f8(_mm256_sub_ps(Nb, N)), _mm256_mul_ps(*Ma, f8(_mm256_sub_ps(*Na, N))));
  *Na = N;
}

/* The fold tree of the 64 (M, N) lanes; lane 0 out. */
NK_INLINE void tp_fold(__m256 *M, __m256 *N, float *Mo, float *No) {
  for (int j = 0; j < 4; j++) tp_comb(&M[j], &N[j], M[j + 4], N[j + 4]);
  for (int j = 0; j < 2; j++) tp_comb(&M[j], &N[j], M[j + 2], N[j + 2]);
  tp_comb(&M[0], &N[0], M[1], N[1]);
  tp_comb(&M[0], &N[0], shift4(M[0]), shift4(N[0]));
  tp_comb(&M[0], &N[0], shift2(M[0]), shift2(N[0]));
  tp_comb(&M[0], &N[0], shift1(M[0]), shift1(N[0]));
  *Mo = _mm256_cvtss_f32(M[0]);
  *No = _mm256_cvtss_f32(N[0]);
}

/* One element step of a two-pass lane:  (p, n) = extexp(z);  N' = (n > N) ? n : N;
 * M = fma(p, f(n - N'), M * f(N - N'));  N = N'. */
NK_INLINE void tp_step(__m256 z, __m256 *M, __m256 *N) {
  __m256 n;
  const __m256 p = extexp8(z, &n);
  const __m256 Nn = _mm256_max_ps(n, *N);
  *M = _mm256_fmadd_ps(p, f8(_mm256_sub_ps(n, Nn)), _mm256_mul_ps(*M, f8(_mm256_sub_ps(*N, Nn))));
  *N = Nn;
}

/* Vector j0 + j of one sweep: 8 lanes (full) or the first k; lanes past the end keep their
 * state. Also the max of z (mx) and, with T, T += z. */
NK_INLINE void tp_vec(nk_dtype dt, const zsrc *s, size_t i, size_t k, int full, int with_t,
                      __m256 *M, __m256 *N, __m256 *T, __m256 *mx) {
  const __m256 z = z8(dt, s, i, k, full);
  __m256 Mn = *M, Nn = *N;
  tp_step(z, &Mn, &Nn);
  *M = keep8(*M, Mn, k, full);
  *N = keep8(*N, Nn, k, full);
  *mx = keep8(*mx, _mm256_max_ps(z, *mx), k, full);
  if (with_t)
    *T = keep8(*T, _mm256_fmadd_ps(z, _mm256_set1_ps(NK_SOFTMAX_TDOWN), *T), k, full);
}

/* One sweep over block [b, e) for vectors j0 .. j0+nvec-1 (lanes 8*j0 ..). */
NK_INLINE void tp_sweep(nk_dtype dt, const zsrc *s, size_t b, size_t e, int j0, int nvec,
                        int with_t, __m256 *M, __m256 *N, __m256 *T, __m256 *mx) {
  size_t i = b;
  for (; i + LANES <= e; i += LANES)
    for (int j = j0; j < j0 + nvec; j++)
      tp_vec(dt, s, i + 8 * (size_t)j, 8, 1, with_t, &M[j], &N[j], &T[j], mx);
  if (i < e)
    for (int j = j0; j < j0 + nvec; j++) {
      const size_t kj = count_at(e - i, (size_t)j);
      if (kj == 0) break;
      tp_vec(dt, s, i + 8 * (size_t)j, kj, 0, with_t, &M[j], &N[j], &T[j], mx);
    }
}

/* Two-pass pass 1 over [0, nv): the double total (Md, Nd) of the blocks (tp_join of
 * softmax-common.h), the max of z (*mx) and, with t != NULL, T = blocksum(z). */
static void tp_sums(nk_dtype dt, const zsrc *s, size_t nv, double *Md, double *Nd, float *mx,
                    double *t) {
  double md = 0.0, nd = -INFINITY, tt = 0.0;
  __m256 vmx = vneg_inf();
  for (size_t b = 0; b < nv; b += BLOCK) {
    const size_t e = b + BLOCK < nv ? b + BLOCK : nv;
    __m256 M[8], N[8], T[8];
    for (int j = 0; j < 8; j++) M[j] = T[j] = _mm256_setzero_ps(), N[j] = vneg_inf();
    if (t) {
      for (int j0 = 0; j0 < 8; j0 += 2) tp_sweep(dt, s, b, e, j0, 2, 1, M, N, T, &vmx);
      tt += NK_SOFTMAX_TUP * (double)fold64(T);
    } else {
      tp_sweep(dt, s, b, e, 0, 4, 0, M, N, T, &vmx);
      tp_sweep(dt, s, b, e, 4, 4, 0, M, N, T, &vmx);
    }
    float mb, nb;
    tp_fold(M, N, &mb, &nb);
    nk__sm_mn_join(&md, &nd, mb, nb);
  }
  vmx = _mm256_max_ps(vmx, shift4(vmx));
  vmx = _mm256_max_ps(vmx, shift2(vmx));
  vmx = _mm256_max_ps(vmx, shift1(vmx));
  *mx = _mm256_cvtss_f32(vmx);
  *Md = md;
  *Nd = nd;
  if (t) *t = tt;
}

/* ---- online sums --------------------------------------------------------------------------- */

/* E(a, b) = (a == -inf) ? 0 : exp(a - b) */
NK_INLINE __m256 E8(__m256 a, __m256 b) {
  return _mm256_andnot_ps(_mm256_cmp_ps(a, vneg_inf(), _CMP_EQ_OQ), exp8(_mm256_sub_ps(a, b)));
}

/* (ma, da) (+) (mb, db) = (m, fma(db, E(mb, m), da * E(ma, m))), m = (mb > ma) ? mb : ma */
NK_INLINE void ol_comb(__m256 *ma, __m256 *da, __m256 mb, __m256 db) {
  const __m256 m = _mm256_max_ps(mb, *ma);
  *da = _mm256_fmadd_ps(db, E8(mb, m), _mm256_mul_ps(*da, E8(*ma, m)));
  *ma = m;
}

NK_INLINE void ol_fold(__m256 *m, __m256 *d, float *mo, float *dout) {
  for (int j = 0; j < 4; j++) ol_comb(&m[j], &d[j], m[j + 4], d[j + 4]);
  for (int j = 0; j < 2; j++) ol_comb(&m[j], &d[j], m[j + 2], d[j + 2]);
  ol_comb(&m[0], &d[0], m[1], d[1]);
  ol_comb(&m[0], &d[0], shift4(m[0]), shift4(d[0]));
  ol_comb(&m[0], &d[0], shift2(m[0]), shift2(d[0]));
  ol_comb(&m[0], &d[0], shift1(m[0]), shift1(d[0]));
  *mo = _mm256_cvtss_f32(m[0]);
  *dout = _mm256_cvtss_f32(d[0]);
}

/* One element step of an online lane, with one exp instead of two:
 *   m' = (z > m) ? z : m;  d = fma(d, E(m, m'), E(z, m'));  m = m'.
 * If z > m: E(m, m') = E(m, z), and E(z, m') = exp(z - z) = 1 (NaN for z = +inf).
 * Else:     E(m, m') = (m == -inf) ? 0 : exp(m - m) (1, or NaN for m = +inf), E(z, m') = E(z, m).
 * exp(0) is exactly 1 and exp(NaN) is NaN, so one = 1 + (m' - m') has the same value. */
NK_INLINE void ol_step(__m256 z, __m256 *m, __m256 *d) {
  const __m256 gt = _mm256_cmp_ps(z, *m, _CMP_GT_OQ);
  const __m256 mn = _mm256_blendv_ps(*m, z, gt);
  const __m256 one = _mm256_add_ps(_mm256_set1_ps(1.0f), _mm256_sub_ps(mn, mn));
  const __m256 ex = E8(_mm256_blendv_ps(z, *m, gt), mn);
  const __m256 mul = _mm256_blendv_ps(_mm256_andnot_ps(_mm256_cmp_ps(*m, vneg_inf(), _CMP_EQ_OQ), one), ex, gt);
  const __m256 add = _mm256_blendv_ps(ex, one, gt);
  *d = _mm256_fmadd_ps(*d, mul, add);
  *m = mn;
}

NK_INLINE void ol_vec(nk_dtype dt, const zsrc *s, size_t i, size_t k, int full, __m256 *m,
                      __m256 *d) {
  __m256 mn = *m, dn = *d;
  ol_step(z8(dt, s, i, k, full), &mn, &dn);
  *m = keep8(*m, mn, k, full);
  *d = keep8(*d, dn, k, full);
}

NK_INLINE void ol_sweep(nk_dtype dt, const zsrc *s, size_t b, size_t e, int j0, __m256 *m,
                        __m256 *d) {
  size_t i = b;
  for (; i + LANES <= e; i += LANES)
    for (int j = j0; j < j0 + 4; j++) ol_vec(dt, s, i + 8 * (size_t)j, 8, 1, &m[j], &d[j]);
  if (i < e)
    for (int j = j0; j < j0 + 4; j++) {
      const size_t kj = count_at(e - i, (size_t)j);
      if (kj == 0) break;
      ol_vec(dt, s, i + 8 * (size_t)j, kj, 0, &m[j], &d[j]);
    }
}

/* Online pass 1 over [0, nv): the double total (mD, dD) (ol_join of softmax-common.h). */
static void ol_sums(nk_dtype dt, const zsrc *s, size_t nv, double *mD, double *dD) {
  double md = -INFINITY, dd = 0.0;
  for (size_t b = 0; b < nv; b += BLOCK) {
    const size_t e = b + BLOCK < nv ? b + BLOCK : nv;
    __m256 m[8], d[8];
    for (int j = 0; j < 8; j++) m[j] = vneg_inf(), d[j] = _mm256_setzero_ps();
    ol_sweep(dt, s, b, e, 0, m, d);
    ol_sweep(dt, s, b, e, 4, m, d);
    float mb, db;
    ol_fold(m, d, &mb, &db);
    nk__sm_md_join(&md, &dd, mb, db);
  }
  *mD = md;
  *dD = dd;
}

/* ---- element-wise output passes ----------------------------------------------------------- */

/* What an output pass writes at j (compile-time op):
 *   OP_FILL      c0 (constant rows, [n_valid, n))
 *   OP_SM3       exp(z - m) * lambda                 (c0 = m, c1 = lambda)
 *   OP_LOG3      (z - m) - ls                        (c0 = m, c1 = ls)
 *   OP_SM3_Y     y * lambda   (reload pass 3)        (c1 = lambda)
 *   OP_LOG3_Y    y - ls       (reload pass 3)        (c1 = ls)
 *   OP_SM2       RN((p * lambda) * 2^max(n - Nf, -160)), (p, n) = extexp(z)  (c0 = Nf, c1 = lambda)
 *   OP_LOG2      (z - Lh) - Ll                       (c0 = Lh, c1 = Ll)
 *   OP_XENT2/3   fma(p_j, a, b) (bt at the target), p_j as OP_SM2 / OP_SM3  (c2 = a, c3 = b,
 *                c4 = bt); NaN canonical
 *   OP_SIG       e = exp(-|z|); z >= 0 ? 1 / (1 + e) : e / (1 + e); NaN canonical
 *   OP_BWD_SM    (y * ((g - Dh) - Dl)) * scale; NaN canonical  (c0 = Dh, c1 = Dl, c2 = scale)
 *   OP_BWD_LOG   fma(-exp(y), Gf, g) * scale; NaN canonical    (c0 = Gf, c2 = scale)
 *   OP_SIG_BWD   ((g * y) * (1 - y)) * scale; NaN canonical  (c2 = scale)
 *   OP_EXP       exp(x); NaN canonical (scalar's exp of a NaN) */
#define OP_FILL 0
#define OP_SM3 1
#define OP_LOG3 2
#define OP_SM3_Y 3
#define OP_LOG3_Y 4
#define OP_SM2 5
#define OP_LOG2 6
#define OP_XENT2 7
#define OP_XENT3 8
#define OP_SIG 9
#define OP_BWD_SM 10
#define OP_BWD_LOG 11
#define OP_SIG_BWD 12
#define OP_EXP 13

typedef struct orow {
  zsrc z;              /* forward logits (x * 1 for cross-entropy) */
  const void *a, *b;   /* reload: a = y (f32); backward: a = y, b = dy; exp: a = x */
  void *y;             /* output */
  float c0, c1, c2, c3, c4;
  size_t target;       /* cross-entropy */
  const char *pf0, *pf1; /* prefetched into L2 during the pass (or NULL) */
} orow;

/* p_j of the two-pass softmax: RN((p * lambda) * 2^d), d = max(n - Nf, -160). */
NK_INLINE __m256 sm2_p8(__m256 z, __m256 nf, __m256 lambda) {
  __m256 n;
  const __m256 p = extexp8(z, &n);
  const __m256 d = _mm256_max_ps(_mm256_sub_ps(n, nf), _mm256_set1_ps(-160.0f));
  return scale2n8(_mm256_mul_ps(p, lambda), _mm256_cvtps_epi32(d));
}

NK_INLINE __m256 op8(int op, nk_dtype dt, const orow *o, size_t i, size_t k, int full) {
  const __m256 c0 = _mm256_set1_ps(o->c0), c1 = _mm256_set1_ps(o->c1);
  const __m256 c2 = _mm256_set1_ps(o->c2);
  switch (op) {
    case OP_FILL: return c0;
    case OP_SM3: return _mm256_mul_ps(exp8(_mm256_sub_ps(z8(dt, &o->z, i, k, full), c0)), c1);
    case OP_LOG3: return _mm256_sub_ps(_mm256_sub_ps(z8(dt, &o->z, i, k, full), c0), c1);
    case OP_SM3_Y: return _mm256_mul_ps(load8(o->a, i, k, NK_DTYPE_F32, full), c1);
    case OP_LOG3_Y: return _mm256_sub_ps(load8(o->a, i, k, NK_DTYPE_F32, full), c1);
    case OP_SM2: return sm2_p8(z8(dt, &o->z, i, k, full), c0, c1);
    case OP_LOG2: return _mm256_sub_ps(_mm256_sub_ps(z8(dt, &o->z, i, k, full), c0), c1);
    case OP_XENT2:
    case OP_XENT3: {
      const __m256 z = z8(dt, &o->z, i, k, full);
      const __m256 p = op == OP_XENT2 ? sm2_p8(z, c0, c1)
                                      : _mm256_mul_ps(exp8(_mm256_sub_ps(z, c0)), c1);
      __m256 b = _mm256_set1_ps(o->c3);
      if (o->target - i < 8) /* the target is in this step (unsigned: target >= i) */
        b = _mm256_blendv_ps(b, _mm256_set1_ps(o->c4),
                             _mm256_castsi256_ps(_mm256_cmpeq_epi32(
                                 _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                 _mm256_set1_epi32((int32_t)(o->target - i)))));
      __m256 v = _mm256_fmadd_ps(p, c2 /* a */, b);
      if (isinf(o->c2)) /* a overflowed: p_j == 0 gives b (softmax.h) */
        v = _mm256_blendv_ps(v, b, _mm256_cmp_ps(p, _mm256_setzero_ps(), _CMP_EQ_OQ));
      return canon_nan8(v);
    }
    case OP_SIG: {
      const __m256 z = z8(dt, &o->z, i, k, full);
      const __m256 sign = _mm256_set1_ps(-0.0f);
      const __m256 e = exp8(_mm256_or_ps(z, sign)); /* -|z| */
      const __m256 den = _mm256_add_ps(_mm256_set1_ps(1.0f), e);
      const __m256 pos = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_GE_OQ);
      const __m256 num = _mm256_blendv_ps(e, _mm256_set1_ps(1.0f), pos);
      return canon_nan8(_mm256_div_ps(num, den));
    }
    case OP_BWD_SM: {
      const __m256 y = load8(o->a, i, k, dt, full), g = load8(o->b, i, k, dt, full);
      return canon_nan8(_mm256_mul_ps(_mm256_mul_ps(y, _mm256_sub_ps(_mm256_sub_ps(g, c0), c1)), c2));
    }
    case OP_BWD_LOG: {
      const __m256 y = load8(o->a, i, k, dt, full), g = load8(o->b, i, k, dt, full);
      return canon_nan8(_mm256_mul_ps(_mm256_fnmadd_ps(exp8(y), c0, g), c2));
    }
    case OP_SIG_BWD: {
      const __m256 y = load8(o->a, i, k, dt, full), g = load8(o->b, i, k, dt, full);
      const __m256 t = _mm256_mul_ps(_mm256_mul_ps(g, y), _mm256_sub_ps(_mm256_set1_ps(1.0f), y));
      return canon_nan8(_mm256_mul_ps(t, c2));
    }
    default: return canon_nan8(exp8(load8(o->a, i, k, NK_DTYPE_F32, full)));
  }
}

/* Elements [i, i + k) of the output, 8 at a time (kind ST_FULL or ST_STREAM for the full
 * steps), then the last k % 8. */
NK_INLINE void out_part(int op, nk_dtype dt, const orow *o, size_t i, size_t k, int kind) {
  for (; k >= 8; i += 8, k -= 8) {
    store8(o->y, i, 8, op8(op, dt, o, i, 8, 1), dt, kind);
    if (o->pf0) {
      _mm_prefetch(o->pf0 + i * esize(dt), _MM_HINT_T1);
      if (o->pf1) _mm_prefetch(o->pf1 + i * esize(dt), _MM_HINT_T1);
    }
  }
  if (k > 0) store8(o->y, i, k, op8(op, dt, o, i, k, 0), dt, ST_PART);
}

/* The output pass over [i0, i1): with nt, regular stores up to the first 64-byte boundary of
 * y, then streaming stores. */
NK_INLINE void out_range(int op, nk_dtype dt, const orow *po, size_t i0, size_t i1, int nt) {
  const orow local = *po, *o = &local; /* vector stores may alias the struct's fields */
  if (i0 >= i1) return;
  if (!nt) {
    out_part(op, dt, o, i0, i1 - i0, ST_FULL);
    return;
  }
  const size_t head = head_to_align64((const char *)o->y + i0 * esize(dt), i1 - i0, dt);
  out_part(op, dt, o, i0, head, ST_FULL);
  const size_t s = i0 + head, body = (i1 - s) & ~(size_t)7;
  out_part(op, dt, o, s, body, ST_STREAM);
  out_part(op, dt, o, s + body, i1 - s - body, ST_FULL);
}

/* y = v over [i0, i1). */
static void fill_range(nk_dtype dt, void *y, size_t i0, size_t i1, float v, int nt) {
  orow o;
  memset(&o, 0, sizeof o);
  o.y = y;
  o.c0 = v;
  out_range(OP_FILL, dt, &o, i0, i1, nt);
}

/* ---- forward rows -------------------------------------------------------------------------- */

static zsrc make_zsrc(const nk_softmax_row *row) {
  const zsrc s = {row->x, row->mask, row->mask_dtype, row->scale, row->alibi, row->pos};
  return s;
}

/* The L2 prefetch address of a row's last pass: just past the row (the next row when the
 * batch is dense), only out of cache. */
static const char *next_row(const void *p, size_t n, nk_dtype dt, int nt) {
  return nt ? (const char *)p + n * esize(dt) : NULL;
}

/* 1 if a z_j of [0, nv) is NaN (the three-pass sum of a row whose max is -inf). */
static int any_nan_z(nk_dtype dt, const zsrc *s, size_t nv) {
  __m256 acc = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= nv; i += 8) {
    const __m256 z = z8(dt, s, i, 8, 1);
    acc = _mm256_or_ps(acc, _mm256_cmp_ps(z, z, _CMP_UNORD_Q));
  }
  if (i < nv) {
    const __m256 z = z8(dt, s, i, nv - i, 0);
    acc = _mm256_or_ps(acc, _mm256_and_ps(_mm256_castsi256_ps(mask8(nv - i)),
                                          _mm256_cmp_ps(z, z, _CMP_UNORD_Q)));
  }
  return _mm256_movemask_ps(acc) != 0;
}

/* Writes the whole row of a NaN or fully masked outcome; 1 if it did (scalar's
 * write_special). */
static int fwd_special(nk_dtype dt, const nk_softmax_row *row, const nk__sm_fin *f) {
  if (f->outcome == NK_SM_NORMAL) return 0;
  const float v = f->outcome == NK_SM_NANROW ? nk__sm_nan() : nk__sm_masked_y(row->log, row->masked_nan);
  fill_range(dt, row->y, 0, row->n, v, row->nontemporal);
  if (row->lse) *row->lse = f->lse;
  return 1;
}

/* Three-pass pass 3 (online pass 2): y_j = exp(z_j - m) * lambda or (z_j - m) - ls, reload
 * from the y values of pass 2; [n_valid, n) = 0 or -inf. */
static void three_output(nk_dtype dt, const nk_softmax_row *row, const nk__sm_fin *f,
                         int reload, const float *scratch) {
  orow o;
  memset(&o, 0, sizeof o);
  o.z = make_zsrc(row);
  o.a = scratch ? scratch : row->y;
  o.y = row->y;
  o.c0 = f->m;
  o.c1 = row->log ? f->ls : f->lambda;
  o.pf0 = next_row(row->x, row->n, dt, row->nontemporal);
  const int nt = row->nontemporal;
  if (scratch) /* the buffered exps (or z - m) are f32; the output has the row's dtype */
    out_range(row->log ? OP_LOG3_Y : OP_SM3_Y, dt, &o, 0, row->n_valid, nt);
  else if (row->log) {
    if (reload) out_range(OP_LOG3_Y, NK_DTYPE_F32, &o, 0, row->n_valid, nt);
    else out_range(OP_LOG3, dt, &o, 0, row->n_valid, nt);
  } else {
    if (reload) out_range(OP_SM3_Y, NK_DTYPE_F32, &o, 0, row->n_valid, nt);
    else out_range(OP_SM3, dt, &o, 0, row->n_valid, nt);
  }
  fill_range(dt, row->y, row->n_valid, row->n, row->log ? -INFINITY : 0.0f, nt);
  if (row->lse) *row->lse = f->lse;
}

/* m = max_j z_j (NaN ignored), with the sink ((sink > m) ? sink : m). */
static float with_sink(const nk_softmax_row *row, float m) {
  return row->has_sink && row->sink > m ? row->sink : m;
}

static void fwd_three_pass(nk_dtype dt, const nk_softmax_row *row, int reload) {
  assert(row != NULL && row->x != NULL && row->y != NULL && row->n > 0);
  assert(row->n_valid <= row->n);
  const zsrc s = make_zsrc(row);
  const size_t nv = row->n_valid;
  const float m = with_sink(row, max_z(dt, &s, nv)) + 0.0f;
  double S, ones = 0.0;
  /* Rows of up to SCRATCH elements keep exp(z - m) (or z - m) in a stack buffer that stays in
   * L1/L2: one exp per element and no read-for-ownership of y (same bits as recompute). */
  alignas(32) float scratch[SCRATCH];
  const int use_scratch = nv <= SCRATCH;
  if (m == -INFINITY) {
    S = (row->has_sink && isnan(row->sink)) || any_nan_z(dt, &s, nv) ? nk__sm_nan_d() : 0.0;
  } else {
    S = sum_exp(dt, &s, nv, m, use_scratch ? scratch : reload ? (float *)row->y : NULL,
                row->log, &ones, next_row(row->x, row->n, dt, row->nontemporal));
    if (row->has_sink) nk__sm_three_add_sink(exp1(row->sink - m), &ones, &S);
  }
  nk__sm_fin f;
  nk__sm_three_finish_split(m, ones, S, row->masked_nan, &f);
  if (fwd_special(dt, row, &f)) return;
  three_output(dt, row, &f, reload, use_scratch ? scratch : NULL);
}

static void fwd_two_pass(nk_dtype dt, const nk_softmax_row *row) {
  assert(row != NULL && row->x != NULL && row->y != NULL && row->n > 0);
  assert(row->n_valid <= row->n);
  const zsrc s = make_zsrc(row);
  double Md, Nd;
  float m;
  tp_sums(dt, &s, row->n_valid, &Md, &Nd, &m, NULL);
  if (row->has_sink) {
    __m256 ns;
    const float ps = _mm256_cvtss_f32(extexp8(_mm256_set1_ps(row->sink), &ns));
    nk__sm_mn_join(&Md, &Nd, ps, _mm256_cvtss_f32(ns));
    m = with_sink(row, m);
  }
  if (nk__sm_out_of_range(m)) { /* the three-pass recompute definition */
    fwd_three_pass(dt, row, 0);
    return;
  }
  nk__sm_fin f;
  nk__sm_two_finish(Md, Nd, row->masked_nan, &f);
  if (fwd_special(dt, row, &f)) return;
  orow o;
  memset(&o, 0, sizeof o);
  o.z = s;
  o.y = row->y;
  o.pf0 = next_row(row->x, row->n, dt, row->nontemporal);
  if (row->log) {
    o.c0 = f.ls;
    o.c1 = f.ll;
    out_range(OP_LOG2, dt, &o, 0, row->n_valid, row->nontemporal);
  } else {
    o.c0 = f.nf;
    o.c1 = f.lambda;
    out_range(OP_SM2, dt, &o, 0, row->n_valid, row->nontemporal);
  }
  fill_range(dt, row->y, row->n_valid, row->n, row->log ? -INFINITY : 0.0f, row->nontemporal);
  if (row->lse) *row->lse = f.lse;
}

static void fwd_online(nk_dtype dt, const nk_softmax_row *row) {
  assert(row != NULL && row->x != NULL && row->y != NULL && row->n > 0);
  assert(row->n_valid <= row->n);
  const zsrc s = make_zsrc(row);
  double mD, dD;
  ol_sums(dt, &s, row->n_valid, &mD, &dD);
  if (row->has_sink) nk__sm_md_join(&mD, &dD, row->sink, 1.0f);
  nk__sm_fin f;
  nk__sm_three_finish((float)mD + 0.0f, dD, row->masked_nan, &f);
  if (fwd_special(dt, row, &f)) return;
  three_output(dt, row, &f, 0, NULL);
}

/* ---- backward ------------------------------------------------------------------------------ */

/* softmax: D = blocksum(g_j * y_j) (fma per term); log: G = blocksum(g_j), and *all_masked =
 * every y_j is -inf (a NaN y is not). */
static double bwd_sum(nk_dtype dt, const void *y, const void *g, size_t n, int log,
                      int *all_masked) {
  double total = 0.0;
  __m256 live = _mm256_setzero_ps(); /* lanes that saw a y != -inf */
  for (size_t b = 0; b < n; b += BLOCK) {
    const size_t e = b + BLOCK < n ? b + BLOCK : n;
    __m256 acc[8];
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
    size_t i = b;
    for (; i + LANES <= e; i += LANES)
      for (int j = 0; j < 8; j++) {
        const size_t ij = i + 8 * (size_t)j;
        const __m256 gv = load8(g, ij, 8, dt, 1);
        if (log) {
          acc[j] = _mm256_add_ps(acc[j], gv);
          live = _mm256_or_ps(live, _mm256_cmp_ps(load8(y, ij, 8, dt, 1), vneg_inf(), _CMP_NEQ_UQ));
        } else {
          acc[j] = _mm256_fmadd_ps(gv, load8(y, ij, 8, dt, 1), acc[j]);
        }
      }
    if (i < e)
      for (int j = 0; j < 8; j++) {
        const size_t ij = i + 8 * (size_t)j, kj = count_at(e - i, (size_t)j);
        if (kj == 0) break;
        const __m256 yv = load8(y, ij, kj, dt, 0), gv = load8(g, ij, kj, dt, 0);
        if (log) {
          acc[j] = keep8(acc[j], _mm256_add_ps(acc[j], gv), kj, 0);
          live = keep8(live, _mm256_or_ps(live, _mm256_cmp_ps(yv, vneg_inf(), _CMP_NEQ_UQ)), kj, 0);
        } else {
          acc[j] = keep8(acc[j], _mm256_fmadd_ps(gv, yv, acc[j]), kj, 0);
        }
      }
    total += (double)fold64(acc);
  }
  *all_masked = _mm256_movemask_ps(live) == 0;
  return total;
}

static void bwd_row(nk_dtype dt, const nk_softmax_bwd_row *row) {
  assert(row != NULL && row->y != NULL && row->dy != NULL && row->dx != NULL && row->n > 0);
  const size_t n = row->n;
  int all_masked;
  const double D = bwd_sum(dt, row->y, row->dy, n, row->log, &all_masked);
  if (row->log && all_masked) {
    fill_range(dt, row->dx, 0, n, 0.0f, row->nontemporal);
    if (row->dot) *row->dot = 0.0;
    return;
  }
  if (!isfinite(D)) {
    fill_range(dt, row->dx, 0, n, nk__sm_nan(), row->nontemporal);
    if (row->dot) *row->dot = nk__sm_nan_d();
    return;
  }
  if (row->dot) *row->dot = D;
  orow o;
  memset(&o, 0, sizeof o);
  o.a = row->y;
  o.b = row->dy;
  o.y = row->dx;
  o.c2 = row->scale;
  o.pf0 = next_row(row->y, n, dt, row->nontemporal);
  o.pf1 = next_row(row->dy, n, dt, row->nontemporal);
  if (row->log) {
    o.c0 = (float)D;
    out_range(OP_BWD_LOG, dt, &o, 0, n, row->nontemporal);
  } else {
    nk__sm_bwd_split(D, &o.c0, &o.c1);
    out_range(OP_BWD_SM, dt, &o, 0, n, row->nontemporal);
  }
}

/* ---- cross-entropy ------------------------------------------------------------------------- */

static void xent_row(nk_dtype dt, const nk_xent_row *row) {
  assert(row != NULL && row->x != NULL && row->loss != NULL && row->n > 0);
  assert(row->target < row->n);
  const size_t n = row->n;
  const zsrc s = {row->x, NULL, NK_DTYPE_F32, 1.0f, 0.0f, 0.0f}; /* z = x * 1 == x */
  double Md, Nd, T = 0.0, S = 0.0, ones = 0.0, L;
  float m;
  tp_sums(dt, &s, n, &Md, &Nd, &m, row->smoothing > 0.0f ? &T : NULL);
  const int three = nk__sm_out_of_range(m);
  m = m + 0.0f;
  if (three) {
    S = sum_exp(dt, &s, n, m, NULL, 0, &ones, NULL);
    L = (double)m + nk__sm_log_split(ones, S);
  } else {
    L = nk__sm_two_L(Md, Nd);
  }
  const float zt = _mm256_cvtss_f32(load8(row->x, row->target, 1, dt, 0));
  nk__sm_xent xo;
  nk__sm_xent_finish(L, T, zt, n, row->smoothing, row->z_loss, row->grad_w, &xo);
  *row->loss = xo.loss;
  if (row->lse) *row->lse = xo.lse;
  if (!row->dx) return;
  if (xo.nanrow) {
    fill_range(dt, row->dx, 0, n, nk__sm_nan(), row->nontemporal);
    return;
  }
  orow o;
  memset(&o, 0, sizeof o);
  o.z = s;
  o.y = row->dx;
  o.target = row->target;
  o.pf0 = next_row(row->x, n, dt, row->nontemporal);
  o.c2 = xo.a;
  o.c3 = xo.b;
  o.c4 = xo.bt;
  if (three) {
    o.c0 = m;
    o.c1 = (float)(1.0 / (ones + S));
    out_range(OP_XENT3, dt, &o, 0, n, row->nontemporal);
  } else {
    o.c0 = (float)Nd;
    o.c1 = (float)(1.0 / Md);
    out_range(OP_XENT2, dt, &o, 0, n, row->nontemporal);
  }
}

/* ---- sigmoid ------------------------------------------------------------------------------- */

static void sigmoid_fwd_row(nk_dtype dt, const nk_sigmoid_row *row) {
  assert(row != NULL && row->x != NULL && row->y != NULL && row->n > 0);
  assert(row->n_valid <= row->n);
  orow o;
  memset(&o, 0, sizeof o);
  const zsrc s = {row->x, row->mask, row->mask_dtype, row->scale, row->alibi, row->pos};
  o.z = s;
  o.y = row->y;
  out_range(OP_SIG, dt, &o, 0, row->n_valid, row->nontemporal);
  fill_range(dt, row->y, row->n_valid, row->n, 0.0f, row->nontemporal);
}

static void sigmoid_bwd_row(nk_dtype dt, const nk_sigmoid_row *row) {
  assert(row != NULL && row->x != NULL && row->dy != NULL && row->y != NULL && row->n > 0);
  orow o;
  memset(&o, 0, sizeof o);
  o.a = row->x;
  o.b = row->dy;
  o.y = row->y;
  o.c2 = row->scale;
  out_range(OP_SIG_BWD, dt, &o, 0, row->n, row->nontemporal);
}

/* ---- the named kernels (softmax.inc) ------------------------------------------------------- */

void nk_f32_softmax_fwd__avx2_three_pass_reload(const nk_softmax_row *row) {
  fwd_three_pass(NK_DTYPE_F32, row, 1);
  if (row->nontemporal) _mm_sfence();
}
void nk_f32_softmax_fwd__avx2_three_pass_recompute(const nk_softmax_row *row) {
  fwd_three_pass(NK_DTYPE_F32, row, 0);
  if (row->nontemporal) _mm_sfence();
}
void nk_f32_softmax_fwd__avx2_two_pass(const nk_softmax_row *row) {
  fwd_two_pass(NK_DTYPE_F32, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_f32_softmax_fwd__avx2_online(const nk_softmax_row *row) {
  fwd_online(NK_DTYPE_F32, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_bf16_softmax_fwd__avx2_three_pass_recompute(const nk_softmax_row *row) {
  fwd_three_pass(NK_DTYPE_BF16, row, 0);
  if (row->nontemporal) _mm_sfence();
}
void nk_bf16_softmax_fwd__avx2_two_pass(const nk_softmax_row *row) {
  fwd_two_pass(NK_DTYPE_BF16, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_bf16_softmax_fwd__avx2_online(const nk_softmax_row *row) {
  fwd_online(NK_DTYPE_BF16, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_f16_softmax_fwd__avx2_three_pass_recompute(const nk_softmax_row *row) {
  fwd_three_pass(NK_DTYPE_F16, row, 0);
  if (row->nontemporal) _mm_sfence();
}
void nk_f16_softmax_fwd__avx2_two_pass(const nk_softmax_row *row) {
  fwd_two_pass(NK_DTYPE_F16, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_f16_softmax_fwd__avx2_online(const nk_softmax_row *row) {
  fwd_online(NK_DTYPE_F16, row);
  if (row->nontemporal) _mm_sfence();
}

void nk_f32_softmax_bwd__avx2_u64(const nk_softmax_bwd_row *row) {
  bwd_row(NK_DTYPE_F32, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_bf16_softmax_bwd__avx2_u64(const nk_softmax_bwd_row *row) {
  bwd_row(NK_DTYPE_BF16, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_f16_softmax_bwd__avx2_u64(const nk_softmax_bwd_row *row) {
  bwd_row(NK_DTYPE_F16, row);
  if (row->nontemporal) _mm_sfence();
}

void nk_f32_cross_entropy__avx2_two_pass(const nk_xent_row *row) {
  xent_row(NK_DTYPE_F32, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_bf16_cross_entropy__avx2_two_pass(const nk_xent_row *row) {
  xent_row(NK_DTYPE_BF16, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_f16_cross_entropy__avx2_two_pass(const nk_xent_row *row) {
  xent_row(NK_DTYPE_F16, row);
  if (row->nontemporal) _mm_sfence();
}

void nk_f32_sigmoid_attn_fwd__avx2_u64(const nk_sigmoid_row *row) {
  sigmoid_fwd_row(NK_DTYPE_F32, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_bf16_sigmoid_attn_fwd__avx2_u64(const nk_sigmoid_row *row) {
  sigmoid_fwd_row(NK_DTYPE_BF16, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_f16_sigmoid_attn_fwd__avx2_u64(const nk_sigmoid_row *row) {
  sigmoid_fwd_row(NK_DTYPE_F16, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_f32_sigmoid_attn_bwd__avx2_u64(const nk_sigmoid_row *row) {
  sigmoid_bwd_row(NK_DTYPE_F32, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_bf16_sigmoid_attn_bwd__avx2_u64(const nk_sigmoid_row *row) {
  sigmoid_bwd_row(NK_DTYPE_BF16, row);
  if (row->nontemporal) _mm_sfence();
}
void nk_f16_sigmoid_attn_bwd__avx2_u64(const nk_sigmoid_row *row) {
  sigmoid_bwd_row(NK_DTYPE_F16, row);
  if (row->nontemporal) _mm_sfence();
}

/* exp over n floats (y may be x). */
void nk_f32_exp__avx2_u64(size_t n, const float *x, float *y) {
  assert(x != NULL && y != NULL);
  orow o;
  memset(&o, 0, sizeof o);
  o.a = x;
  o.y = y;
  out_range(OP_EXP, NK_DTYPE_F32, &o, 0, n, 0);
}
