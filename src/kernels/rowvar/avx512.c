/*
 * avx512.c — the AVX-512 CRMSNorm and L1 LayerNorm kernels (f32, bf16, f16 activations; f32 or
 * activation-dtype parameters). Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2
 * -mfma -mf16c and -ffp-contract=off.
 *
 * Contract: rowvar.h. The output bits are those of scalar.c for every input (same y, dx,
 * statistics, and the same doubles added to dgamma_acc/dbeta_acc); rows the f32 sums cannot
 * handle go to the shared nk__rowvar_*_row_f64 with the arguments scalar.c gives.
 *
 * Tail handling: no over-reads, no over-writes: __mmask16 masked loads (fault-suppressing,
 * masked lanes read as +0) and masked stores. In the reductions a masked lane keeps its value
 * (_mm512_mask_add_ps / _mm512_mask3_fmadd_ps), so a partial block adds exactly the terms the
 * scalar lanes add.
 *
 * Accumulation order: zmm accumulator j of a lane set holds canonical lanes 16j..16j+15, so a
 * 64-element step adds element b + 64t + l to lane l as scalar's lane[(i - b) % 64] does, in
 * increasing i; each block of 1024 is folded by fold64 (the fixed tree) into a double total.
 * Products accumulate with one FMA per term, like scalar's fmaf; element-wise maths is the same
 * f32 operations in the same order.
 *
 * Streaming: with NK_ROWNORM_NONTEMPORAL (set by the operator for outputs of 64 MiB and more)
 * y / dx rows are written with streaming stores from their first 64-byte boundary on, the next
 * row's input is prefetched into L2 during the output pass, and the kernel ends with an sfence.
 */
#include <assert.h>
#include <immintrin.h>
#include <math.h>

#include "../rownorm/rownorm-common.h"
#include "kernels/x86/avx512-io.h"
#include "rowvar.h"

#define LANES NK_ROWNORM_LANES
#define BLOCK NK_ROWNORM_BLOCK

NK_INLINE const void *row_at(const void *base, size_t row, ptrdiff_t stride, nk_dtype dt) {
  return (const char *)base + (ptrdiff_t)row * stride * (ptrdiff_t)esize(dt);
}

NK_INLINE __m512 acc_add(__m512 a, __m512 t, __mmask16 m, int full) {
  return full ? _mm512_add_ps(a, t) : _mm512_mask_add_ps(a, m, a, t);
}
NK_INLINE __m512 acc_fma(__m512 a, __m512 u, __m512 v, __mmask16 m, int full) {
  return full ? _mm512_fmadd_ps(u, v, a) : _mm512_mask3_fmadd_ps(u, v, a, m);
}

/* sign(v) in {-1, 0, +1} (scalar's sign_f32; NaN never reaches it) */
NK_INLINE __m512 sign16(__m512 v) {
  const __m512 z = _mm512_setzero_ps();
  const __mmask16 gt = _mm512_cmp_ps_mask(v, z, _CMP_GT_OQ), lt = _mm512_cmp_ps_mask(v, z, _CMP_LT_OQ);
  return _mm512_mask_mov_ps(_mm512_mask_mov_ps(z, gt, _mm512_set1_ps(1.0f)), lt, _mm512_set1_ps(-1.0f));
}

/* ---- per-row state of the element-wise passes ---------------------------------------------- */

#define K_CRMS_FWD 0
#define K_CRMS_BWD 1
#define K_L1_FWD 2
#define K_L1_BWD 3
#define K_L1_SIGN 4 /* the sign-count pass of the L1 backward (a reduction) */

/* run-time variant bits, tested once per 64-element step */
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

NK_INLINE void load_params(__m512 *v, const void *p, size_t i, int nv, __mmask16 m, nk_dtype dt,
                           uint32_t c, int full) {
  const nk_dtype pdt = (c & V_PHALF) ? dt : NK_DTYPE_F32;
  for (int j = 0; j < nv; j++) v[j] = load16(p, i + 16 * (size_t)j, m, pdt, full);
}

NK_INLINE void gains(__m512 *g, const rowst *o, size_t i, int nv, __mmask16 m, nk_dtype dt,
                     uint32_t c, int full) {
  load_params(g, o->gamma, i, nv, m, dt, c, full);
  if (c & V_OFFSET)
    for (int j = 0; j < nv; j++) g[j] = _mm512_add_ps(_mm512_set1_ps(1.0f), g[j]);
}

/* dgamma_acc[i..i+16) += (double)g * (double)xhat (exact product); dbeta_acc += (double)g */
NK_INLINE void param16(double *dg, double *db, size_t i, __mmask16 m, int full, __m512 g,
                       __m512 xh) {
  const __m512d g0 = _mm512_cvtps_pd(_mm512_castps512_ps256(g));
  const __m512d g1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(g, 1));
  const __mmask8 m0 = full ? (__mmask8)0xFF : (__mmask8)m, m1 = full ? (__mmask8)0xFF : (__mmask8)(m >> 8);
  if (dg) {
    const __m512d x0 = _mm512_cvtps_pd(_mm512_castps512_ps256(xh));
    const __m512d x1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(xh, 1));
    _mm512_mask_storeu_pd(dg + i, m0, _mm512_fmadd_pd(g0, x0, _mm512_maskz_loadu_pd(m0, dg + i)));
    _mm512_mask_storeu_pd(dg + i + 8, m1, _mm512_fmadd_pd(g1, x1, _mm512_maskz_loadu_pd(m1, dg + i + 8)));
  }
  if (db) {
    _mm512_mask_storeu_pd(db + i, m0, _mm512_add_pd(_mm512_maskz_loadu_pd(m0, db + i), g0));
    _mm512_mask_storeu_pd(db + i + 8, m1, _mm512_add_pd(_mm512_maskz_loadu_pd(m1, db + i + 8), g1));
  }
}

/* dy (times the LNS scale) for nv vectors */
NK_INLINE void load_dy(__m512 *g, const rowst *o, size_t i, int nv, __mmask16 m, nk_dtype dt,
                       uint32_t c, int full) {
  for (int j = 0; j < nv; j++) g[j] = load16(o->dy, i + 16 * (size_t)j, m, dt, full);
  if (c & V_SCALE)
    for (int j = 0; j < nv; j++) g[j] = _mm512_mul_ps(g[j], _mm512_set1_ps(o->scale));
}

/* One step of an element-wise pass: nv = 4 full vectors (64 elements) or 1 masked vector. */
NK_INLINE void out_step(int kind, nk_dtype dt, uint32_t c, const rowst *o, size_t i, int nv,
                        __mmask16 m, int st) {
  const int full = st != ST_MASK;
  const __m512 rs = _mm512_set1_ps(o->rs);
  __m512 v[4], r[4];
  for (int j = 0; j < nv; j++) v[j] = load16(o->x, i + 16 * (size_t)j, m, dt, full);
  if (kind == K_CRMS_FWD) {
    /* y = c * rstd [* s] */
    for (int j = 0; j < nv; j++) r[j] = _mm512_mul_ps(v[j], rs);
    if (c & V_SCALE)
      for (int j = 0; j < nv; j++) r[j] = _mm512_mul_ps(r[j], _mm512_set1_ps(o->scale));
  } else if (kind == K_L1_FWD) {
    /* xhat = ((h - mu_hi) - mu_lo) * rscale; y = affine(xhat) [* s] */
    for (int j = 0; j < nv; j++)
      r[j] = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(v[j], _mm512_set1_ps(o->mu_hi)),
                                         _mm512_set1_ps(o->mu_lo)), rs);
    if (c & (V_GAMMA | V_BETA)) {
      __m512 g[4], b[4];
      if (c & V_GAMMA) gains(g, o, i, nv, m, dt, c, full);
      if (c & V_BETA) load_params(b, o->beta, i, nv, m, dt, c, full);
      for (int j = 0; j < nv; j++)
        r[j] = (c & V_GAMMA) ? ((c & V_BETA) ? _mm512_fmadd_ps(r[j], g[j], b[j]) : _mm512_mul_ps(r[j], g[j]))
                             : _mm512_add_ps(r[j], b[j]);
    }
    if (c & V_SCALE)
      for (int j = 0; j < nv; j++) r[j] = _mm512_mul_ps(r[j], _mm512_set1_ps(o->scale));
  } else if (kind == K_CRMS_BWD) {
    /* xhat = c * rstd; dx = fmaf(-xhat, k, g - a) * rstd [+ dh] */
    __m512 g[4];
    load_dy(g, o, i, nv, m, dt, c, full);
    for (int j = 0; j < nv; j++) {
      const __m512 xh = _mm512_mul_ps(v[j], rs);
      r[j] = _mm512_mul_ps(_mm512_fnmadd_ps(xh, _mm512_set1_ps(o->k), _mm512_sub_ps(g[j], _mm512_set1_ps(o->a))), rs);
    }
  } else { /* K_L1_BWD: dx = ((gh - a) - kappa * sign(xhat)) * rscale [+ dh] */
    __m512 g[4], gh[4], xh[4];
    load_dy(g, o, i, nv, m, dt, c, full);
    if (c & V_GAMMA) {
      gains(gh, o, i, nv, m, dt, c, full);
      for (int j = 0; j < nv; j++) gh[j] = _mm512_mul_ps(g[j], gh[j]);
    } else {
      for (int j = 0; j < nv; j++) gh[j] = g[j];
    }
    for (int j = 0; j < nv; j++) {
      xh[j] = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(v[j], _mm512_set1_ps(o->m)), _mm512_set1_ps(o->mu_lo)), rs);
      const __m512 t = _mm512_sub_ps(gh[j], _mm512_set1_ps(o->a));
      r[j] = _mm512_mul_ps(_mm512_sub_ps(t, _mm512_mul_ps(_mm512_set1_ps(o->k), sign16(xh[j]))), rs);
    }
    if (o->dg || o->db)
      for (int j = 0; j < nv; j++) param16(o->dg, o->db, i + 16 * (size_t)j, m, full, g[j], xh[j]);
  }
  if ((kind == K_CRMS_BWD || kind == K_L1_BWD) && (c & V_DH))
    for (int j = 0; j < nv; j++) r[j] = _mm512_add_ps(r[j], load16(o->dh, i + 16 * (size_t)j, m, dt, full));
  for (int j = 0; j < nv; j++) store16(o->out, i + 16 * (size_t)j, m, r[j], dt, st);
  if (full && o->pf)
    for (int j = 0; j < nv; j += (dt == NK_DTYPE_F32 ? 1 : 2)) {
      _mm_prefetch(o->pf + (i + 16 * (size_t)j) * esize(dt), _MM_HINT_T1);
      if (o->pf2) _mm_prefetch(o->pf2 + (i + 16 * (size_t)j) * esize(dt), _MM_HINT_T1);
    }
}

NK_INLINE void out_masked(int kind, nk_dtype dt, uint32_t c, const rowst *o, size_t i, size_t k) {
#pragma GCC unroll 1
  for (size_t j = 0; j < k; j += 16)
    out_step(kind, dt, c, o, i + j, 1, mask_first((ptrdiff_t)(k - j)), ST_MASK);
}

NK_INLINE void out_row(int kind, nk_dtype dt, uint32_t c, const rowst *po) {
  const rowst local = *po, *o = &local; /* stores may alias anything: keep the fields local */
  const size_t n = o->n;
  size_t i = 0;
  if (c & V_NT) {
    const size_t head = head_to_align64(o->out, n, dt);
    out_masked(kind, dt, c, o, 0, head);
    for (i = head; i + LANES <= n; i += LANES) out_step(kind, dt, c, o, i, 4, 0, ST_STREAM);
  } else {
    for (; i + LANES <= n; i += LANES) out_step(kind, dt, c, o, i, 4, 0, ST_FULL);
  }
  if (i < n) out_masked(kind, dt, c, o, i, n - i);
}

/* The gamma/beta bits become compile-time constants in each branch (L1 only). */
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

/* Sum kinds: */
#define R_CRMS_FWD 0 /* s0 = fmaf(c, c, .), s1 += c */
#define R_CRMS_BWD 1 /* s0 = fmaf(g, c, .), s1 += c */
#define R_L1_SHIFT 2 /* s0 += h - c0 */
#define R_L1_DEV 3   /* s0 += (h - c0) - c1 */
#define R_L1_ABS 4   /* s0 += |(h - c0) - c1| */
#define R_L1_BWD 5   /* e = h - m: s0 += gh, s1 = fmaf(gh, e, .), s2 += e */
#define R_L1_SIGN 6  /* s0 += sign(((h - m) - mu_lo) * rs) */

NK_INLINE void red_step(int rk, nk_dtype dt, uint32_t c, const rowst *o, size_t i, float c0,
                        float c1, __m512 *s0, __m512 *s1, __m512 *s2, __mmask16 m, int full) {
  const __m512 v = load16(o->x, i, m, dt, full);
  switch (rk) {
    case R_CRMS_FWD:
      *s0 = acc_fma(*s0, v, v, m, full);
      *s1 = acc_add(*s1, v, m, full);
      break;
    case R_CRMS_BWD: {
      __m512 g;
      load_dy(&g, o, i, 1, m, dt, c, full);
      *s0 = acc_fma(*s0, g, v, m, full);
      *s1 = acc_add(*s1, v, m, full);
      break;
    }
    case R_L1_SHIFT: *s0 = acc_add(*s0, _mm512_sub_ps(v, _mm512_set1_ps(c0)), m, full); break;
    case R_L1_DEV:
      *s0 = acc_add(*s0, _mm512_sub_ps(_mm512_sub_ps(v, _mm512_set1_ps(c0)), _mm512_set1_ps(c1)), m, full);
      break;
    case R_L1_ABS:
      *s0 = acc_add(*s0, _mm512_abs_ps(_mm512_sub_ps(_mm512_sub_ps(v, _mm512_set1_ps(c0)), _mm512_set1_ps(c1))), m, full);
      break;
    case R_L1_BWD: {
      __m512 g, gh;
      load_dy(&g, o, i, 1, m, dt, c, full);
      if (c & V_GAMMA) {
        gains(&gh, o, i, 1, m, dt, c, full);
        gh = _mm512_mul_ps(g, gh);
      } else {
        gh = g;
      }
      const __m512 e = _mm512_sub_ps(v, _mm512_set1_ps(o->m));
      *s0 = acc_add(*s0, gh, m, full);
      *s1 = acc_fma(*s1, gh, e, m, full);
      *s2 = acc_add(*s2, e, m, full);
      break;
    }
    default: /* R_L1_SIGN */
      *s0 = acc_add(*s0, sign16(_mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(v, _mm512_set1_ps(o->m)),
                                                             _mm512_set1_ps(o->mu_lo)),
                                               _mm512_set1_ps(o->rs))),
                    m, full);
      break;
  }
}

/* blocksums of up to three lane sets over the row (t[0..2]) */
NK_INLINE void reduce(int rk, nk_dtype dt, uint32_t c, const rowst *o, float c0, float c1,
                      double *t) {
  const size_t n = o->n;
  t[0] = t[1] = t[2] = 0.0;
  for (size_t b = 0; b < n; b += BLOCK) {
    const size_t e = b + BLOCK < n ? b + BLOCK : n;
    __m512 s0[4], s1[4], s2[4];
    for (int j = 0; j < 4; j++) s0[j] = s1[j] = s2[j] = _mm512_setzero_ps();
    size_t i = b;
    for (; i + LANES <= e; i += LANES)
      for (int j = 0; j < 4; j++)
        red_step(rk, dt, c, o, i + 16 * (size_t)j, c0, c1, &s0[j], &s1[j], &s2[j], 0, 1);
    if (i < e) {
      const ptrdiff_t k = (ptrdiff_t)(e - i);
      for (int j = 0; j < 4; j++)
        if (k > 16 * j)
          red_step(rk, dt, c, o, i + 16 * (size_t)j, c0, c1, &s0[j], &s1[j], &s2[j],
                   mask_first(k - 16 * j), 0);
    }
    t[0] += (double)fold64(s0[0], s0[1], s0[2], s0[3]);
    if (rk == R_CRMS_FWD || rk == R_CRMS_BWD || rk == R_L1_BWD)
      t[1] += (double)fold64(s1[0], s1[1], s1[2], s1[3]);
    if (rk == R_L1_BWD) t[2] += (double)fold64(s2[0], s2[1], s2[2], s2[3]);
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
    const float k0 = _mm_cvtss_f32(_mm512_castps512_ps128(load16(o.x, 0, 1, dt, 0)));
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

FWD_SIG(nk_f32_crmsnorm_fwd__avx512_u64) { (void)s1; crms_fwd(NK_DTYPE_F32, rows, cols, x, xs, y, ys, s2, p); }
FWD_SIG(nk_bf16_crmsnorm_fwd__avx512_u64) { (void)s1; crms_fwd(NK_DTYPE_BF16, rows, cols, x, xs, y, ys, s2, p); }
FWD_SIG(nk_f16_crmsnorm_fwd__avx512_u64) { (void)s1; crms_fwd(NK_DTYPE_F16, rows, cols, x, xs, y, ys, s2, p); }
BWD_SIG(nk_f32_crmsnorm_bwd__avx512_u64) { (void)s1, (void)dg, (void)db; crms_bwd(NK_DTYPE_F32, rows, cols, x, xs, dy, dys, dh, dhs, s2, dx, dxs, p); }
BWD_SIG(nk_bf16_crmsnorm_bwd__avx512_u64) { (void)s1, (void)dg, (void)db; crms_bwd(NK_DTYPE_BF16, rows, cols, x, xs, dy, dys, dh, dhs, s2, dx, dxs, p); }
BWD_SIG(nk_f16_crmsnorm_bwd__avx512_u64) { (void)s1, (void)dg, (void)db; crms_bwd(NK_DTYPE_F16, rows, cols, x, xs, dy, dys, dh, dhs, s2, dx, dxs, p); }
FWD_SIG(nk_f32_l1norm_fwd__avx512_u64) { l1_fwd(NK_DTYPE_F32, rows, cols, x, xs, y, ys, s1, s2, p); }
FWD_SIG(nk_bf16_l1norm_fwd__avx512_u64) { l1_fwd(NK_DTYPE_BF16, rows, cols, x, xs, y, ys, s1, s2, p); }
FWD_SIG(nk_f16_l1norm_fwd__avx512_u64) { l1_fwd(NK_DTYPE_F16, rows, cols, x, xs, y, ys, s1, s2, p); }
BWD_SIG(nk_f32_l1norm_bwd__avx512_u64) { l1_bwd(NK_DTYPE_F32, rows, cols, x, xs, dy, dys, dh, dhs, s1, s2, dx, dxs, dg, db, p); }
BWD_SIG(nk_bf16_l1norm_bwd__avx512_u64) { l1_bwd(NK_DTYPE_BF16, rows, cols, x, xs, dy, dys, dh, dhs, s1, s2, dx, dxs, dg, db, p); }
BWD_SIG(nk_f16_l1norm_bwd__avx512_u64) { l1_bwd(NK_DTYPE_F16, rows, cols, x, xs, dy, dys, dh, dhs, s1, s2, dx, dxs, dg, db, p); }

#define NAMES(kind, dir)                                                                         \
  { "nk_f32_" kind "_" dir "__avx512_u64", "nk_bf16_" kind "_" dir "__avx512_u64",              \
    "nk_f16_" kind "_" dir "__avx512_u64" }

const nk_rowvar_kernels nk_rowvar_kernels_avx512 = {
    NK_ISA_AVX512,
    {nk_f32_crmsnorm_fwd__avx512_u64, nk_bf16_crmsnorm_fwd__avx512_u64, nk_f16_crmsnorm_fwd__avx512_u64},
    {nk_f32_crmsnorm_bwd__avx512_u64, nk_bf16_crmsnorm_bwd__avx512_u64, nk_f16_crmsnorm_bwd__avx512_u64},
    {nk_f32_l1norm_fwd__avx512_u64, nk_bf16_l1norm_fwd__avx512_u64, nk_f16_l1norm_fwd__avx512_u64},
    {nk_f32_l1norm_bwd__avx512_u64, nk_bf16_l1norm_bwd__avx512_u64, nk_f16_l1norm_bwd__avx512_u64},
    NAMES("crmsnorm", "fwd"), NAMES("crmsnorm", "bwd"), NAMES("l1norm", "fwd"),
    NAMES("l1norm", "bwd")};
