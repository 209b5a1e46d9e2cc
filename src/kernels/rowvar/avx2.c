/*
 * avx2.c — the AVX2 CRMSNorm and L1 LayerNorm kernels (f32, bf16, f16 activations; f32 or
 * activation-dtype parameters). Compiled with -mavx2 -mfma -mf16c and -ffp-contract=off.
 *
 * Contract: rowvar.h. The output bits are those of scalar.c for every input; rows the f32 sums
 * cannot handle go to the shared nk__rowvar_*_row_f64 with the arguments scalar.c gives.
 *
 * Tail handling: no over-reads, no over-writes (avx2-io.h: vmaskmov for f32 tails, a zeroed
 * 8-element buffer for 16-bit tails). In the reductions the lanes past the row end keep their
 * value (keep8), so a partial block adds exactly the terms the scalar lanes add.
 *
 * Accumulation order: ymm accumulator j of a lane set holds canonical lanes 8j..8j+7 of the 64;
 * the 64 lanes are swept in two halves (vectors 0-3, then 4-7, each over the whole block, which
 * is in L1) so that three lane sets fit the 16 ymm registers; each lane still adds its terms in
 * increasing i. Blocks of 1024 are folded by fold64 (the fixed tree) into double totals.
 *
 * Streaming: as avx512.c (NK_ROWNORM_NONTEMPORAL: streaming stores from the first 64-byte
 * boundary, L2 prefetch of the next row, sfence at the end).
 */
#include <assert.h>
#include <immintrin.h>
#include <math.h>

#include "../rownorm/rownorm-common.h"
#include "kernels/x86/avx2-io.h"
#include "rowvar.h"

#define LANES NK_ROWNORM_LANES
#define BLOCK NK_ROWNORM_BLOCK

/* lanes past the row end (k < 8 valid, full == 0) keep acc */
NK_INLINE __m256 acc_add(__m256 a, __m256 t, size_t k, int full) {
  return keep8(a, _mm256_add_ps(a, t), k, full);
}
NK_INLINE __m256 acc_fma(__m256 a, __m256 u, __m256 v, size_t k, int full) {
  return keep8(a, _mm256_fmadd_ps(u, v, a), k, full);
}

/* sign(v) in {-1, 0, +1} (scalar's sign_f32; NaN never reaches it) */
NK_INLINE __m256 sign8(__m256 v) {
  const __m256 z = _mm256_setzero_ps();
  const __m256 pos = _mm256_and_ps(_mm256_cmp_ps(v, z, _CMP_GT_OQ), _mm256_set1_ps(1.0f));
  const __m256 neg = _mm256_and_ps(_mm256_cmp_ps(v, z, _CMP_LT_OQ), _mm256_set1_ps(-1.0f));
  return _mm256_or_ps(pos, neg);
}

/* ---- per-row state of the element-wise passes ---------------------------------------------- */

#define K_CRMS_FWD 0
#define K_CRMS_BWD 1
#define K_L1_FWD 2
#define K_L1_BWD 3

/* run-time variant bits, tested once per step */
#define V_GAMMA 0x1u
#define V_BETA 0x2u
#define V_OFFSET 0x4u
#define V_PHALF 0x8u
#define V_SCALE 0x10u
#define V_DH 0x20u
#define V_NT 0x40u

typedef struct rowst {
  size_t n;
  const void *x, *dy, *dh;
  void *out;
  const void *gamma, *beta;
  float rs, mu_hi, mu_lo, m, a, k, scale;
  double *dg, *db;
  const char *pf, *pf2; /* next row's inputs, prefetched into L2 (streaming mode), or NULL */
} rowst;

NK_INLINE __m256 load_param(const void *p, size_t i, size_t k, nk_dtype dt, uint32_t c, int full) {
  return load8(p, i, k, (c & V_PHALF) ? dt : NK_DTYPE_F32, full);
}

NK_INLINE __m256 gain8(const rowst *o, size_t i, size_t k, nk_dtype dt, uint32_t c, int full) {
  const __m256 g = load_param(o->gamma, i, k, dt, c, full);
  return (c & V_OFFSET) ? _mm256_add_ps(_mm256_set1_ps(1.0f), g) : g;
}

/* dgamma_acc[i..i+8) += (double)g * (double)xhat (exact product); dbeta_acc += (double)g */
NK_INLINE void param8(double *dg, double *db, size_t i, size_t k, int full, __m256 g, __m256 xh) {
  const __m256d g0 = _mm256_cvtps_pd(_mm256_castps256_ps128(g));
  const __m256d g1 = _mm256_cvtps_pd(_mm256_extractf128_ps(g, 1));
  const __m256i m0 = mask4x64(full ? 4 : k), m1 = mask4x64(full ? 4 : (k > 4 ? k - 4 : 0));
  if (dg) {
    const __m256d x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(xh));
    const __m256d x1 = _mm256_cvtps_pd(_mm256_extractf128_ps(xh, 1));
    if (full) {
      _mm256_storeu_pd(dg + i, _mm256_fmadd_pd(g0, x0, _mm256_loadu_pd(dg + i)));
      _mm256_storeu_pd(dg + i + 4, _mm256_fmadd_pd(g1, x1, _mm256_loadu_pd(dg + i + 4)));
    } else {
      _mm256_maskstore_pd(dg + i, m0, _mm256_fmadd_pd(g0, x0, _mm256_maskload_pd(dg + i, m0)));
      _mm256_maskstore_pd(dg + i + 4, m1, _mm256_fmadd_pd(g1, x1, _mm256_maskload_pd(dg + i + 4, m1)));
    }
  }
  if (db) {
    if (full) {
      _mm256_storeu_pd(db + i, _mm256_add_pd(_mm256_loadu_pd(db + i), g0));
      _mm256_storeu_pd(db + i + 4, _mm256_add_pd(_mm256_loadu_pd(db + i + 4), g1));
    } else {
      _mm256_maskstore_pd(db + i, m0, _mm256_add_pd(_mm256_maskload_pd(db + i, m0), g0));
      _mm256_maskstore_pd(db + i + 4, m1, _mm256_add_pd(_mm256_maskload_pd(db + i + 4, m1), g1));
    }
  }
}

/* dy (times the LNS scale) */
NK_INLINE __m256 load_dy(const rowst *o, size_t i, size_t k, nk_dtype dt, uint32_t c, int full) {
  const __m256 g = load8(o->dy, i, k, dt, full);
  return (c & V_SCALE) ? _mm256_mul_ps(g, _mm256_set1_ps(o->scale)) : g;
}

/* One vector of an element-wise pass (elements i..i+7; the first k with st == ST_PART). */
NK_INLINE void out_vec(int kind, nk_dtype dt, uint32_t c, const rowst *o, size_t i, size_t k,
                       int st) {
  const int full = st != ST_PART;
  const __m256 rs = _mm256_set1_ps(o->rs);
  const __m256 v = load8(o->x, i, k, dt, full);
  __m256 r;
  if (kind == K_CRMS_FWD) {
    r = _mm256_mul_ps(v, rs);
    if (c & V_SCALE) r = _mm256_mul_ps(r, _mm256_set1_ps(o->scale));
  } else if (kind == K_L1_FWD) {
    r = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(v, _mm256_set1_ps(o->mu_hi)), _mm256_set1_ps(o->mu_lo)), rs);
    if (c & V_GAMMA) {
      const __m256 g = gain8(o, i, k, dt, c, full);
      r = (c & V_BETA) ? _mm256_fmadd_ps(r, g, load_param(o->beta, i, k, dt, c, full)) : _mm256_mul_ps(r, g);
    } else if (c & V_BETA) {
      r = _mm256_add_ps(r, load_param(o->beta, i, k, dt, c, full));
    }
    if (c & V_SCALE) r = _mm256_mul_ps(r, _mm256_set1_ps(o->scale));
  } else if (kind == K_CRMS_BWD) {
    const __m256 g = load_dy(o, i, k, dt, c, full);
    const __m256 xh = _mm256_mul_ps(v, rs);
    r = _mm256_mul_ps(_mm256_fnmadd_ps(xh, _mm256_set1_ps(o->k), _mm256_sub_ps(g, _mm256_set1_ps(o->a))), rs);
  } else { /* K_L1_BWD */
    const __m256 g = load_dy(o, i, k, dt, c, full);
    const __m256 gh = (c & V_GAMMA) ? _mm256_mul_ps(g, gain8(o, i, k, dt, c, full)) : g;
    const __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(v, _mm256_set1_ps(o->m)), _mm256_set1_ps(o->mu_lo)), rs);
    const __m256 t = _mm256_sub_ps(gh, _mm256_set1_ps(o->a));
    r = _mm256_mul_ps(_mm256_sub_ps(t, _mm256_mul_ps(_mm256_set1_ps(o->k), sign8(xh))), rs);
    if (o->dg || o->db) param8(o->dg, o->db, i, k, full, g, xh);
  }
  if ((kind == K_CRMS_BWD || kind == K_L1_BWD) && (c & V_DH))
    r = _mm256_add_ps(r, load8(o->dh, i, k, dt, full));
  store8(o->out, i, k, r, dt, st);
}

/* 32 elements (4 vectors) with prefetch of the next row's inputs in streaming mode */
NK_INLINE void out_step32(int kind, nk_dtype dt, uint32_t c, const rowst *o, size_t i, int st) {
  for (size_t j = 0; j < 4; j++) out_vec(kind, dt, c, o, i + 8 * j, 8, st);
  if (o->pf)
    for (size_t j = 0; j < 4; j += (dt == NK_DTYPE_F32 ? 2 : 4)) {
      _mm_prefetch(o->pf + (i + 8 * j) * esize(dt), _MM_HINT_T1);
      if (o->pf2) _mm_prefetch(o->pf2 + (i + 8 * j) * esize(dt), _MM_HINT_T1);
    }
}

/* elements [i, i + k): 8-lane steps, then the last k % 8 */
NK_INLINE void out_part(int kind, nk_dtype dt, uint32_t c, const rowst *o, size_t i, size_t k) {
#pragma GCC unroll 1
  for (; k >= 8; i += 8, k -= 8) out_vec(kind, dt, c, o, i, 8, ST_FULL);
  if (k > 0) out_vec(kind, dt, c, o, i, k, ST_PART);
}

NK_INLINE void out_row(int kind, nk_dtype dt, uint32_t c, const rowst *po) {
  const rowst local = *po, *o = &local; /* stores may alias anything: keep the fields local */
  const size_t n = o->n;
  size_t i = 0;
  if (c & V_NT) {
    const size_t head = head_to_align64(o->out, n, dt);
    out_part(kind, dt, c, o, 0, head);
    for (i = head; i + 32 <= n; i += 32) out_step32(kind, dt, c, o, i, ST_STREAM);
  } else {
    for (; i + 32 <= n; i += 32) out_step32(kind, dt, c, o, i, ST_FULL);
  }
  if (i < n) out_part(kind, dt, c, o, i, n - i);
}

NK_INLINE void out_pick(int kind, nk_dtype dt, uint32_t c, const rowst *o) {
  if (kind == K_CRMS_FWD || kind == K_CRMS_BWD) {
    out_row(kind, dt, c & ~(V_GAMMA | V_BETA), o);
    return;
  }
  const uint32_t rest = c & ~(V_GAMMA | V_BETA);
  switch (c & (V_GAMMA | V_BETA)) {
    case V_GAMMA: out_row(kind, dt, rest | V_GAMMA, o); break;
    case V_BETA: out_row(kind, dt, rest | V_BETA, o); break;
    case V_GAMMA | V_BETA: out_row(kind, dt, rest | V_GAMMA | V_BETA, o); break;
    default: out_row(kind, dt, rest, o); break;
  }
}

/* ---- reductions --------------------------------------------------------------------------- */

#define R_CRMS_FWD 0 /* s0 = fmaf(c, c, .), s1 += c */
#define R_CRMS_BWD 1 /* s0 = fmaf(g, c, .), s1 += c */
#define R_L1_SHIFT 2 /* s0 += h - c0 */
#define R_L1_DEV 3   /* s0 += (h - c0) - c1 */
#define R_L1_ABS 4   /* s0 += |(h - c0) - c1| */
#define R_L1_BWD 5   /* e = h - m: s0 += gh, s1 = fmaf(gh, e, .), s2 += e */
#define R_L1_SIGN 6  /* s0 += sign(((h - m) - mu_lo) * rs) */

NK_INLINE void red_vec(int rk, nk_dtype dt, uint32_t c, const rowst *o, size_t i, float c0,
                       float c1, __m256 *s0, __m256 *s1, __m256 *s2, size_t k, int full) {
  const __m256 v = load8(o->x, i, k, dt, full);
  switch (rk) {
    case R_CRMS_FWD:
      *s0 = acc_fma(*s0, v, v, k, full);
      *s1 = acc_add(*s1, v, k, full);
      break;
    case R_CRMS_BWD:
      *s0 = acc_fma(*s0, load_dy(o, i, k, dt, c, full), v, k, full);
      *s1 = acc_add(*s1, v, k, full);
      break;
    case R_L1_SHIFT: *s0 = acc_add(*s0, _mm256_sub_ps(v, _mm256_set1_ps(c0)), k, full); break;
    case R_L1_DEV:
      *s0 = acc_add(*s0, _mm256_sub_ps(_mm256_sub_ps(v, _mm256_set1_ps(c0)), _mm256_set1_ps(c1)), k, full);
      break;
    case R_L1_ABS: {
      const __m256 d = _mm256_sub_ps(_mm256_sub_ps(v, _mm256_set1_ps(c0)), _mm256_set1_ps(c1));
      *s0 = acc_add(*s0, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), d), k, full);
      break;
    }
    case R_L1_BWD: {
      const __m256 g = load_dy(o, i, k, dt, c, full);
      const __m256 gh = (c & V_GAMMA) ? _mm256_mul_ps(g, gain8(o, i, k, dt, c, full)) : g;
      const __m256 e = _mm256_sub_ps(v, _mm256_set1_ps(o->m));
      *s0 = acc_add(*s0, gh, k, full);
      *s1 = acc_fma(*s1, gh, e, k, full);
      *s2 = acc_add(*s2, e, k, full);
      break;
    }
    default: /* R_L1_SIGN */
      *s0 = acc_add(*s0, sign8(_mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(v, _mm256_set1_ps(o->m)),
                                                           _mm256_set1_ps(o->mu_lo)),
                                             _mm256_set1_ps(o->rs))),
                    k, full);
      break;
  }
}

/* One sweep of a block [b, e) for lane vectors j0 .. j0+3 (lanes 8*j0 .. 8*j0+31). */
NK_INLINE void red_sweep(int rk, nk_dtype dt, uint32_t c, const rowst *o, size_t b, size_t e,
                         size_t j0, float c0, float c1, __m256 *s0, __m256 *s1, __m256 *s2) {
  size_t i = b;
  for (; i + LANES <= e; i += LANES)
    for (size_t j = j0; j < j0 + 4; j++)
      red_vec(rk, dt, c, o, i + 8 * j, c0, c1, &s0[j], &s1[j], &s2[j], 8, 1);
  if (i < e) {
    const size_t k = e - i;
    for (size_t j = j0; j < j0 + 4; j++) {
      const size_t kj = count_at(k, j);
      if (kj == 8) red_vec(rk, dt, c, o, i + 8 * j, c0, c1, &s0[j], &s1[j], &s2[j], 8, 1);
      else if (kj > 0) red_vec(rk, dt, c, o, i + 8 * j, c0, c1, &s0[j], &s1[j], &s2[j], kj, 0);
    }
  }
}

/* blocksums of up to three lane sets over the row (t[0..2]) */
NK_INLINE void reduce(int rk, nk_dtype dt, uint32_t c, const rowst *o, float c0, float c1,
                      double *t) {
  const size_t n = o->n;
  t[0] = t[1] = t[2] = 0.0;
  for (size_t b = 0; b < n; b += BLOCK) {
    const size_t e = b + BLOCK < n ? b + BLOCK : n;
    __m256 s0[8], s1[8], s2[8];
    for (int j = 0; j < 8; j++) s0[j] = s1[j] = s2[j] = _mm256_setzero_ps();
    red_sweep(rk, dt, c, o, b, e, 0, c0, c1, s0, s1, s2);
    red_sweep(rk, dt, c, o, b, e, 4, c0, c1, s0, s1, s2);
    t[0] += (double)fold64(s0);
    if (rk == R_CRMS_FWD || rk == R_CRMS_BWD || rk == R_L1_BWD) t[1] += (double)fold64(s1);
    if (rk == R_L1_BWD) t[2] += (double)fold64(s2);
  }
}

/* ---- kernels ------------------------------------------------------------------------------ */

NK_INLINE uint32_t bits_of(const nk_rownorm_params *p, const void *dh) {
  const uint32_t v = p->variant;
  uint32_t c = 0;
  if (v & NK_ROWNORM_HAS_GAMMA) c |= V_GAMMA | ((v & NK_ROWNORM_OFFSET) ? V_OFFSET : 0u);
  if (v & NK_ROWNORM_HAS_BETA) c |= V_BETA;
  if (p->param_dtype != NK_DTYPE_F32) c |= V_PHALF;
  if (v & NK_ROWNORM_SCALE) c |= V_SCALE;
  if (v & NK_ROWNORM_NONTEMPORAL) c |= V_NT;
  if (dh) c |= V_DH;
  return c;
}

NK_INLINE void crms_fwd(nk_dtype dt, size_t rows, size_t n, const void *x, ptrdiff_t xs, void *y,
                        ptrdiff_t ys, float *rstd, const nk_rownorm_params *p) {
  assert(n > 0 && x != NULL && y != NULL && p != NULL);
  const uint32_t c = bits_of(p, NULL);
  for (size_t row = 0; row < rows; row++) {
    rowst o = {0};
    o.n = n;
    o.x = row_at(x, row, xs, dt);
    o.out = (void *)row_at(y, row, ys, dt);
    o.scale = p->scale;
    o.pf = (c & V_NT) && row + 1 < rows ? (const char *)row_at(x, row + 1, xs, dt) : NULL;
    double t[3];
    reduce(R_CRMS_FWD, dt, c, &o, 0.0f, 0.0f, t);
    const double q = (t[0] + t[1] * t[1]) / (double)(n + 1);
    if (!isfinite(t[0]) || !isfinite(t[1]) || nk__rownorm_needs_fallback(q, p->eps)) {
      nk__rowvar_fwd_row_f64(0, n, dt, o.x, o.out, NULL, rstd ? &rstd[row] : NULL, p);
      continue;
    }
    o.rs = nk__rownorm_rstd(q, p->eps);
    out_pick(K_CRMS_FWD, dt, c, &o);
    if (rstd) rstd[row] = o.rs;
  }
  if (c & V_NT) _mm_sfence();
}

NK_INLINE void crms_bwd(nk_dtype dt, size_t rows, size_t n, const void *x, ptrdiff_t xs,
                        const void *dy, ptrdiff_t dys, const void *dh, ptrdiff_t dhs,
                        const float *rstd, void *dx, ptrdiff_t dxs, const nk_rownorm_params *p) {
  assert(n > 0 && x != NULL && dy != NULL && dx != NULL && rstd != NULL && p != NULL);
  const uint32_t c = bits_of(p, dh) & ~(V_GAMMA | V_BETA | V_OFFSET);
  for (size_t row = 0; row < rows; row++) {
    rowst o = {0};
    o.n = n;
    o.x = row_at(x, row, xs, dt);
    o.dy = row_at(dy, row, dys, dt);
    o.dh = dh ? row_at(dh, row, dhs, dt) : NULL;
    o.out = (void *)row_at(dx, row, dxs, dt);
    o.scale = p->scale;
    o.rs = rstd[row];
    o.pf = (c & V_NT) && row + 1 < rows ? (const char *)row_at(x, row + 1, xs, dt) : NULL;
    o.pf2 = o.pf ? (const char *)row_at(dy, row + 1, dys, dt) : NULL;
    double t[3];
    reduce(R_CRMS_BWD, dt, c, &o, 0.0f, 0.0f, t);
    if (!isfinite(t[0]) || !isfinite(t[1]) || !isnormal(o.rs)) {
      nk__rowvar_bwd_row_f64(0, n, dt, o.x, o.dy, o.dh, 0.0f, o.rs, o.out, NULL, NULL, p);
      continue;
    }
    const double kd = (double)o.rs * t[0] / (double)(n + 1);
    o.k = (float)kd;
    o.a = (float)((double)o.rs * t[1] * kd);
    out_pick(K_CRMS_BWD, dt, c, &o);
  }
  if (c & V_NT) _mm_sfence();
}

NK_INLINE void l1_fwd(nk_dtype dt, size_t rows, size_t n, const void *x, ptrdiff_t xs, void *y,
                      ptrdiff_t ys, float *mean, float *rscale, const nk_rownorm_params *p) {
  assert(n > 0 && x != NULL && y != NULL && p != NULL);
  const uint32_t c = bits_of(p, NULL);
  for (size_t row = 0; row < rows; row++) {
    rowst o = {0};
    o.n = n;
    o.x = row_at(x, row, xs, dt);
    o.out = (void *)row_at(y, row, ys, dt);
    o.gamma = p->gamma;
    o.beta = p->beta;
    o.scale = p->scale;
    o.pf = (c & V_NT) && row + 1 < rows ? (const char *)row_at(x, row + 1, xs, dt) : NULL;
    const float k0 = _mm_cvtss_f32(_mm256_castps256_ps128(load8(o.x, 0, 1, dt, 0)));
    double t[3], S1, D = 0.0, A = 0.0;
    reduce(R_L1_SHIFT, dt, c, &o, k0, 0.0f, t);
    S1 = t[0];
    const double mu0 = (double)k0 + S1 / (double)n;
    float mu_hi = (float)mu0, mu_lo = (float)(mu0 - (double)mu_hi);
    if (isfinite(S1)) {
      reduce(R_L1_DEV, dt, c, &o, mu_hi, mu_lo, t);
      D = t[0];
    }
    const double mu = ((double)mu_hi + (double)mu_lo) + D / (double)n;
    mu_hi = (float)mu;
    mu_lo = (float)(mu - (double)mu_hi);
    if (isfinite(S1) && isfinite(D)) {
      reduce(R_L1_ABS, dt, c, &o, mu_hi, mu_lo, t);
      A = t[0];
    }
    const double den = NK_L1NORM_C1 * (A / (double)n) + (double)p->eps;
    const float rs = (float)(1.0 / den);
    if (!isfinite(S1) || !isfinite(D) || !isfinite(A) || !isnormal(rs) || nk__l1_tiny_mean(mu)) {
      nk__rowvar_fwd_row_f64(1, n, dt, o.x, o.out, mean ? &mean[row] : NULL,
                             rscale ? &rscale[row] : NULL, p);
      continue;
    }
    o.rs = rs;
    o.mu_hi = mu_hi;
    o.mu_lo = mu_lo;
    out_pick(K_L1_FWD, dt, c, &o);
    if (mean) mean[row] = mu_hi;
    if (rscale) rscale[row] = rs;
  }
  if (c & V_NT) _mm_sfence();
}

NK_INLINE void l1_bwd(nk_dtype dt, size_t rows, size_t n, const void *x, ptrdiff_t xs,
                      const void *dy, ptrdiff_t dys, const void *dh, ptrdiff_t dhs,
                      const float *mean, const float *rscale, void *dx, ptrdiff_t dxs,
                      double *dgamma_acc, double *dbeta_acc, const nk_rownorm_params *p) {
  assert(n > 0 && x != NULL && dy != NULL && dx != NULL && mean != NULL && rscale != NULL);
  const uint32_t c = bits_of(p, dh) & ~V_BETA;
  for (size_t row = 0; row < rows; row++) {
    rowst o = {0};
    o.n = n;
    o.x = row_at(x, row, xs, dt);
    o.dy = row_at(dy, row, dys, dt);
    o.dh = dh ? row_at(dh, row, dhs, dt) : NULL;
    o.out = (void *)row_at(dx, row, dxs, dt);
    o.gamma = p->gamma;
    o.scale = p->scale;
    o.m = mean[row];
    o.rs = rscale[row];
    o.dg = dgamma_acc;
    o.db = dbeta_acc;
    o.pf = (c & V_NT) && row + 1 < rows ? (const char *)row_at(x, row + 1, xs, dt) : NULL;
    o.pf2 = o.pf ? (const char *)row_at(dy, row + 1, dys, dt) : NULL;
    double t[3];
    if (!isnormal(o.rs) || !isfinite(o.m)) t[0] = NAN;
    else if (c & V_GAMMA) reduce(R_L1_BWD, dt, (c & ~V_GAMMA) | V_GAMMA, &o, 0.0f, 0.0f, t);
    else reduce(R_L1_BWD, dt, c & ~V_GAMMA, &o, 0.0f, 0.0f, t);
    if (!isfinite(t[0]) || !isfinite(t[1]) || !isfinite(t[2]) ||
        nk__l1_tiny_mean((double)o.m + t[2] / (double)n)) {
      nk__rowvar_bwd_row_f64(1, n, dt, o.x, o.dy, o.dh, o.m, o.rs, o.out, dgamma_acc, dbeta_acc, p);
      continue;
    }
    const double dn = (double)n, A = t[0], B = t[1], c0 = t[2] / dn;
    o.mu_lo = (float)c0;
    reduce(R_L1_SIGN, dt, c, &o, 0.0f, 0.0f, t);
    const double P = t[0];
    const double kd = NK_L1NORM_C1 * ((double)o.rs * (B - c0 * A)) / dn;
    o.k = (float)kd;
    o.a = (float)(A / dn - kd * P / dn);
    out_pick(K_L1_BWD, dt, c, &o);
  }
  if (c & V_NT) _mm_sfence();
}

/* ---- the named kernels -------------------------------------------------------------------- */

#define FWD_SIG(name)                                                                            \
  static void name(size_t rows, size_t cols, const void *x, ptrdiff_t xs, void *y, ptrdiff_t ys, \
                   float *s1, float *s2, const nk_rownorm_params *p)
#define BWD_SIG(name)                                                                            \
  static void name(size_t rows, size_t cols, const void *x, ptrdiff_t xs, const void *dy,        \
                   ptrdiff_t dys, const void *dh, ptrdiff_t dhs, const float *s1,                \
                   const float *s2, void *dx, ptrdiff_t dxs, double *dg, double *db,             \
                   const nk_rownorm_params *p)

FWD_SIG(nk_f32_crmsnorm_fwd__avx2_u64) { (void)s1; crms_fwd(NK_DTYPE_F32, rows, cols, x, xs, y, ys, s2, p); }
FWD_SIG(nk_bf16_crmsnorm_fwd__avx2_u64) { (void)s1; crms_fwd(NK_DTYPE_BF16, rows, cols, x, xs, y, ys, s2, p); }
FWD_SIG(nk_f16_crmsnorm_fwd__avx2_u64) { (void)s1; crms_fwd(NK_DTYPE_F16, rows, cols, x, xs, y, ys, s2, p); }
BWD_SIG(nk_f32_crmsnorm_bwd__avx2_u64) { (void)s1, (void)dg, (void)db; crms_bwd(NK_DTYPE_F32, rows, cols, x, xs, dy, dys, dh, dhs, s2, dx, dxs, p); }
BWD_SIG(nk_bf16_crmsnorm_bwd__avx2_u64) { (void)s1, (void)dg, (void)db; crms_bwd(NK_DTYPE_BF16, rows, cols, x, xs, dy, dys, dh, dhs, s2, dx, dxs, p); }
BWD_SIG(nk_f16_crmsnorm_bwd__avx2_u64) { (void)s1, (void)dg, (void)db; crms_bwd(NK_DTYPE_F16, rows, cols, x, xs, dy, dys, dh, dhs, s2, dx, dxs, p); }
FWD_SIG(nk_f32_l1norm_fwd__avx2_u64) { l1_fwd(NK_DTYPE_F32, rows, cols, x, xs, y, ys, s1, s2, p); }
FWD_SIG(nk_bf16_l1norm_fwd__avx2_u64) { l1_fwd(NK_DTYPE_BF16, rows, cols, x, xs, y, ys, s1, s2, p); }
FWD_SIG(nk_f16_l1norm_fwd__avx2_u64) { l1_fwd(NK_DTYPE_F16, rows, cols, x, xs, y, ys, s1, s2, p); }
BWD_SIG(nk_f32_l1norm_bwd__avx2_u64) { l1_bwd(NK_DTYPE_F32, rows, cols, x, xs, dy, dys, dh, dhs, s1, s2, dx, dxs, dg, db, p); }
BWD_SIG(nk_bf16_l1norm_bwd__avx2_u64) { l1_bwd(NK_DTYPE_BF16, rows, cols, x, xs, dy, dys, dh, dhs, s1, s2, dx, dxs, dg, db, p); }
BWD_SIG(nk_f16_l1norm_bwd__avx2_u64) { l1_bwd(NK_DTYPE_F16, rows, cols, x, xs, dy, dys, dh, dhs, s1, s2, dx, dxs, dg, db, p); }

#define NAMES(kind, dir)                                                                         \
  { "nk_f32_" kind "_" dir "__avx2_u64", "nk_bf16_" kind "_" dir "__avx2_u64",              \
    "nk_f16_" kind "_" dir "__avx2_u64" }

const nk_rowvar_kernels nk_rowvar_kernels_avx2 = {
    NK_ISA_AVX2,
    {nk_f32_crmsnorm_fwd__avx2_u64, nk_bf16_crmsnorm_fwd__avx2_u64, nk_f16_crmsnorm_fwd__avx2_u64},
    {nk_f32_crmsnorm_bwd__avx2_u64, nk_bf16_crmsnorm_bwd__avx2_u64, nk_f16_crmsnorm_bwd__avx2_u64},
    {nk_f32_l1norm_fwd__avx2_u64, nk_bf16_l1norm_fwd__avx2_u64, nk_f16_l1norm_fwd__avx2_u64},
    {nk_f32_l1norm_bwd__avx2_u64, nk_bf16_l1norm_bwd__avx2_u64, nk_f16_l1norm_bwd__avx2_u64},
    NAMES("crmsnorm", "fwd"), NAMES("crmsnorm", "bwd"), NAMES("l1norm", "fwd"),
    NAMES("l1norm", "bwd")};
