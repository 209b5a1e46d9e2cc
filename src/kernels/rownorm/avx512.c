/*
 * avx512.c — the AVX-512 row-norm kernels (LayerNorm, RMSNorm; forward and backward; f32, bf16
 * and f16 activations; f32 or activation-dtype parameters). Compiled with -mavx512f -mavx512bw
 * -mavx512vl -mavx512dq -mavx2 -mfma -mf16c (and -ffp-contract=off, like every file).
 *
 * Contract: rownorm.h (nk_rownorm_fwd_ukernel_fn / nk_rownorm_bwd_ukernel_fn): rows x cols, any
 * strides >= cols, outputs may be the very same buffers as inputs (each element is read before
 * it is written at the same index: every 16-lane step loads all its inputs before its store,
 * and every reduction pass ends before the pass that writes), gamma/beta/residual/h/dh optional.
 * The output bits are those of scalar.c for every input — same y, h, mean, rstd, dx, and the
 * same doubles added to dgamma_acc/dbeta_acc — and rows the f32 sums cannot handle go to the
 * shared nk__rownorm_fwd_row_f64 / nk__rownorm_bwd_row_f64 with the arguments scalar.c gives.
 *
 * Tail handling: no over-reads, no over-writes. Elements past the row end are handled with
 * __mmask16 masked loads (fault-suppressing; masked lanes read as +0) and masked stores. In the
 * reductions a masked lane is left unchanged (_mm512_mask_add_ps / _mm512_mask3_fmadd_ps), so
 * a partial block adds exactly the terms the scalar lanes add.
 *
 * Accumulation order (the canonical arithmetic of rownorm.h): zmm accumulator k holds lanes
 * 16k..16k+15 of the 64 canonical lanes, so one 64-element step adds element b+64j+l to lane l
 * exactly as scalar's lane[(i - b) % 64] does, in increasing i. Each block of 1024 elements is
 * folded with the tree lane[k] += lane[k + s], s = 32, 16, 8, 4, 2, 1 (fold64) and added to a
 * double total in block order. Products accumulate with one FMA per term, like scalar's fmaf.
 * Element-wise maths is the same f32 operations in the same order (a*b+c is two roundings
 * unless scalar writes fmaf; -xh*b+c as _mm512_fnmadd_ps(xh, b, c) == fmaf(-xh, b, c)).
 *
 * Conversions, masked loads/stores and fold64: kernels/x86/avx512-io.h (shared with the softmax
 * family).
 *
 * Structure: each named kernel is a one-line wrapper around an always-inline body whose
 * dtype and op are compile-time constants. Of the per-call variant bits, the ones that shape
 * the inner loops become compile-time constants by a switch once per row (forward: gamma,
 * beta; backward: gamma, from-y); the others (offset, parameter dtype, residual, dh,
 * streaming) are tested once per 64-element step, never per vector. LayerNorm forward rows of
 * up to FWD_PAIR_BYTES are processed in pairs: the two rows' reductions share their loops, so
 * their accumulation chains and their double-precision steps overlap (each row still has its
 * own 64 lanes and tree; the grouping changes no bit). The next row is prefetched during a
 * row's output pass: into L1 for rows of 1-8 KiB, into L2 out of cache. With
 * NK_ROWNORM_NONTEMPORAL the y (forward) or dx (backward) rows are written with streaming
 * stores from the first 64-byte boundary on (masked regular stores before it and at the
 * tail), and the kernel ends with _mm_sfence().
 *
 * Compiler note: the double-precision steps of a row pair are kept in non-inlined per-row
 * functions (fwd_split_mean_apart, fwd_finish_var_apart): GCC 12.2 -O3 (SLP vectorizer)
 * otherwise merges the two rows' (float)mu / (double)mu_hi round trip into two-lane code that
 * drops the rounding (mu_lo became 0). The kernel test catches it.
 */
#include <assert.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "kernels/x86/avx512-io.h"
#include "rownorm-common.h"
#include "rownorm.h"


#define LANES NK_ROWNORM_LANES /* 64: 4 zmm of 16 f32 lanes */
#define BLOCK NK_ROWNORM_BLOCK /* 1024 */

/* Compile-time variant bits of the forward output pass. */
#define FO_GAMMA 0x1u  /* y = xhat * g (+ b) */
#define FO_BETA 0x2u   /* y = ... + b */
#define FO_OFFSET 0x4u /* g = 1 + gamma */
#define FO_R 0x8u      /* h = dtype(x + r) recomputed from the residual (no h output) */
#define FO_NT 0x10u    /* streaming stores for y */
#define FO_PHALF 0x20u /* gamma/beta hold the activation dtype (else f32) */
#define FO_SCALE 0x40u /* LayerNorm Scaling: y = affine * scale */

/* Compile-time variant bits of the backward passes. */
#define BO_GAMMA 0x1u  /* gh = dy * g */
#define BO_BETA 0x2u   /* from y: xhat = (y - b) ... */
#define BO_OFFSET 0x4u /* g = 1 + gamma */
#define BO_FROMY 0x8u  /* xhat from y */
#define BO_NT 0x10u    /* streaming stores for dx */
#define BO_GINV 0x20u  /* from y: xhat = (...) * ginv */
#define BO_PHALF 0x40u /* gamma/beta hold the activation dtype */
#define BO_DH 0x80u    /* dx += dh */
#define BO_SCALE 0x100u /* LayerNorm Scaling: dy * scale; from y: y * scale_inv */

/* Forward row grouping and prefetch, by row size (they change no result bit). Measured on
 * Sapphire Rapids, f32, data in L2: LayerNorm rows of up to FWD_PAIR_BYTES gain 15-25% in
 * pairs (the two rows' reduction chains and double-precision steps overlap), longer rows
 * lose (a row no longer stays in L1 from its statistics to its output pass); RMSNorm, with
 * one reduction pass, gains nothing. Prefetching the next row into L1 during the output pass
 * gains 5-20% for rows of FWD_PF_MIN_BYTES .. FWD_PF_MAX_BYTES and loses above (it evicts
 * the row being written) and below (the hardware prefetchers suffice). */
#define FWD_PAIR_BYTES ((size_t)4 << 10)
#define FWD_PF_MIN_BYTES ((size_t)1 << 10)
#define FWD_PF_MAX_BYTES ((size_t)8 << 10)
/* Out of cache (NK_ROWNORM_NONTEMPORAL, which the operator sets from the sizes), prefetching
 * the next row into L2 during this row's output pass (forward: x; backward: x and dy) keeps
 * the memory busy while the core computes: measured +20-40% forward, +15-25% backward at
 * 65536 x 4096 f32 (in L2-resident data it costs 5-10%, hence only with the flag). */

/* How a residual enters the forward statistics. */
#define RES_NONE 0  /* h = x */
#define RES_R 1     /* h = dtype(x + r), recomputed at every use */
#define RES_WRITE 2 /* h = dtype(x + r), written to the h buffer by the first pass */

/* ---- element access (dt is a compile-time constant at every call) ------------------------- */

NK_INLINE const void *row_at(const void *base, size_t row, ptrdiff_t stride, nk_dtype dt) {
  return (const char *)base + (ptrdiff_t)row * stride * (ptrdiff_t)esize(dt);
}

/* ---- forward ------------------------------------------------------------------------------ */

/* h_i for 16 lanes (scalar's HV):  x;  round_to(x + r);  or round_to(x + r) also stored to h
 * (RES_WRITE: the first pass writes h, later passes read it as x). */
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

/* Reduction terms of the forward:
 *   SUM_SHIFT: lane += h_i - k0                                   (LayerNorm S1)
 *   SUM_DEV2:  d = (h_i - mu_hi) - mu_lo; lane = fmaf(d, d, lane); lsum += d   (S2 and D)
 *   SUM_SQ:    lane = fmaf(h_i, h_i, lane)                        (RMSNorm S) */
#define SUM_SHIFT 0
#define SUM_DEV2 1
#define SUM_SQ 2

NK_INLINE void fwd_term(int kind, __m512 *acc, __m512 *sum, __m512 v, __m512 c0, __m512 c1,
                        __mmask16 m, int full) {
  if (kind == SUM_SHIFT) {
    const __m512 t = _mm512_sub_ps(v, c0);
    *acc = full ? _mm512_add_ps(*acc, t) : _mm512_mask_add_ps(*acc, m, *acc, t);
    return;
  }
  const __m512 d = kind == SUM_SQ ? v : _mm512_sub_ps(_mm512_sub_ps(v, c0), c1);
  *acc = full ? _mm512_fmadd_ps(d, d, *acc) : _mm512_mask3_fmadd_ps(d, d, *acc, m);
  if (kind == SUM_DEV2) *sum = full ? _mm512_add_ps(*sum, d) : _mm512_mask_add_ps(*sum, m, *sum, d);
}

/* blocksum of the forward term `kind` (rownorm.h), in double, over each of nr (1 or 2) rows
 * at once: the rows share the loop, so their accumulation chains overlap. SUM_DEV2 also gives
 * blocksum(d_i) in dsum[q]. */
NK_INLINE void fwd_blocksum(int kind, nk_dtype dt, int res, int nr, size_t n,
                            const void *const *x, const void *const *r, void *const *h,
                            const float *c0f, const float *c1f, double *total, double *dsum) {
  __m512 c0[2], c1[2];
  for (int q = 0; q < nr; q++) {
    c0[q] = _mm512_set1_ps(c0f[q]);
    c1[q] = _mm512_set1_ps(c1f[q]);
    total[q] = 0.0;
    if (kind == SUM_DEV2) dsum[q] = 0.0;
  }
  for (size_t b = 0; b < n; b += BLOCK) {
    const size_t e = b + BLOCK < n ? b + BLOCK : n;
    __m512 a[2][4], s[2][4];
    for (int q = 0; q < nr; q++)
      for (int j = 0; j < 4; j++) a[q][j] = s[q][j] = _mm512_setzero_ps();
    size_t i = b;
    for (; i + LANES <= e; i += LANES)
      for (int q = 0; q < nr; q++)
        for (int j = 0; j < 4; j++)
          fwd_term(kind, &a[q][j], &s[q][j], h16(x[q], r[q], h[q], i + 16 * (size_t)j, 0, dt, res, 1),
                   c0[q], c1[q], 0, 1);
    if (i < e) { /* partial step: lanes past the row end keep their value. One masked
                  * 16-lane term per turn into a[q][0], then the accumulators rotate down
                  * (0 <- 1 <- 2 <- 3 <- 0): after 4 turns each got its own vector and all are
                  * back in place. */
      const ptrdiff_t k = (ptrdiff_t)(e - i);
      for (int q = 0; q < nr; q++) {
#pragma GCC unroll 1
        for (ptrdiff_t j = 0; j < 64; j += 16) {
          const __mmask16 m = mask_first(k - j);
          fwd_term(kind, &a[q][0], &s[q][0], h16(x[q], r[q], h[q], i + (size_t)j, m, dt, res, 0),
                   c0[q], c1[q], m, 0);
          const __m512 ta = a[q][0], ts = s[q][0];
          for (int t = 0; t < 3; t++) a[q][t] = a[q][t + 1], s[q][t] = s[q][t + 1];
          a[q][3] = ta, s[q][3] = ts;
        }
      }
    }
    for (int q = 0; q < nr; q++) {
      total[q] += (double)fold64(a[q][0], a[q][1], a[q][2], a[q][3]);
      if (kind == SUM_DEV2) dsum[q] += (double)fold64(s[q][0], s[q][1], s[q][2], s[q][3]);
    }
  }
}

/* The double-precision steps of one row between the passes (scalar's fwd_rows). */
NK_INLINE void fwd_split_mean(float k0, double s1, size_t n, float *mu_hi, float *mu_lo,
                              int *fallback) {
  const double mu = (double)k0 + s1 / (double)n;
  *fallback = !isfinite(s1);
  *mu_hi = (float)mu;
  *mu_lo = (float)(mu - (double)*mu_hi);
}

/* refine (LayerNorm), var = S2/n, the fallback test and rstd, for one row (see above). */
NK_INLINE void fwd_finish_var(int refine, double s2, double dsum, size_t n, float eps,
                              float *mu_hi, float *mu_lo, float *rs, int *fallback) {
  if (refine && !*fallback) nk__rownorm_refine_mean(n, dsum, &s2, mu_hi, mu_lo);
  const double var = *fallback ? 0.0 : s2 / (double)n;
  if (*fallback || nk__rownorm_needs_fallback(var, eps)) *fallback = 1;
  else *rs = nk__rownorm_rstd(var, eps);
}

/* The same, not inlined, for rows in pairs: with two rows' copies side by side, GCC 12's SLP
 * vectorizer (-O3) merges them and folds (double)(float)mu into mu, which makes mu_lo 0
 * (wrong bits; seen as `vsubpd %xmm1, %xmm1` in the two-lane code). */
__attribute__((noinline)) static void fwd_split_mean_apart(float k0, double s1, size_t n,
                                                            float *mu_hi, float *mu_lo,
                                                            int *fallback) {
  fwd_split_mean(k0, s1, n, mu_hi, mu_lo, fallback);
}

__attribute__((noinline)) static void fwd_finish_var_apart(int refine, double s2, double dsum,
                                                            size_t n, float eps, float *mu_hi,
                                                            float *mu_lo, float *rs,
                                                            int *fallback) {
  fwd_finish_var(refine, s2, dsum, n, eps, mu_hi, mu_lo, rs, fallback);
}

/* The statistics of nr (1 or 2) rows (scalar's fwd_rows up to the fallback test), per row:
 *   LayerNorm: K = h_0; S1 = blocksum(h_i - K); mu = K + S1/n; mu_hi = (float)mu;
 *              mu_lo = (float)(mu - mu_hi); d_i = (h_i - mu_hi) - mu_lo;
 *              S2 = blocksum(d_i^2), D = blocksum(d_i) (one pass);
 *              nk__rownorm_refine_mean(n, D, &S2, &mu_hi, &mu_lo) (corrected two-pass)
 *   RMSNorm:   S2 = blocksum(h_i^2)
 *   var = S2/n; fallback if S1 is not finite or nk__rownorm_needs_fallback(var, eps);
 *   rstd = nk__rownorm_rstd(var, eps). fallback[q] = 1 for a fallback row.
 * RES_WRITE writes h in the first pass; the later pass reads h (as scalar rereads it). */
NK_INLINE void fwd_rows_stats(int is_rms, nk_dtype dt, int res, int nr, size_t n,
                              const void *const *x, const void *const *r, void *const *h,
                              float eps, float *mu_hi, float *mu_lo, float *rs, int *fallback) {
  double total[2], dsum[2];
  const float zero[2] = {0.0f, 0.0f};
  for (int q = 0; q < nr; q++) mu_hi[q] = mu_lo[q] = rs[q] = 0.0f, fallback[q] = 0;
  if (!is_rms) {
    float k0[2];
    for (int q = 0; q < nr; q++)
      k0[q] = _mm_cvtss_f32(_mm512_castps512_ps128(
          h16(x[q], r[q], NULL, 0, 1, dt, res == RES_NONE ? RES_NONE : RES_R, 0)));
    fwd_blocksum(SUM_SHIFT, dt, res, nr, n, x, r, h, k0, zero, total, NULL);
    for (int q = 0; q < nr; q++) {
      if (nr == 1) fwd_split_mean(k0[q], total[q], n, &mu_hi[q], &mu_lo[q], &fallback[q]);
      else fwd_split_mean_apart(k0[q], total[q], n, &mu_hi[q], &mu_lo[q], &fallback[q]);
      total[q] = 0.0;
      dsum[q] = 0.0;
    }
    /* pass 2 reads h (RES_WRITE: now written) or x (+ r); rows that fell back skip it */
    const void *const *x2 = res == RES_WRITE ? (const void *const *)h : x;
    const int res2 = res == RES_WRITE ? RES_NONE : res;
    void *const none[2] = {NULL, NULL};
    if (nr == 2 && !fallback[0] && !fallback[1]) {
      fwd_blocksum(SUM_DEV2, dt, res2, 2, n, x2, r, none, mu_hi, mu_lo, total, dsum);
    } else {
      for (int q = 0; q < nr; q++)
        if (!fallback[q])
          fwd_blocksum(SUM_DEV2, dt, res2, 1, n, x2 + q, r + q, none, mu_hi + q, mu_lo + q,
                       total + q, dsum + q);
    }
  } else {
    fwd_blocksum(SUM_SQ, dt, res, nr, n, x, r, h, zero, zero, total, NULL);
    dsum[0] = dsum[1] = 0.0;
  }
  for (int q = 0; q < nr; q++) {
    if (nr == 1)
      fwd_finish_var(!is_rms, total[q], dsum[q], n, eps, &mu_hi[q], &mu_lo[q], &rs[q], &fallback[q]);
    else
      fwd_finish_var_apart(!is_rms, total[q], dsum[q], n, eps, &mu_hi[q], &mu_lo[q], &rs[q],
                           &fallback[q]);
  }
}

/* The residual mode is the same for every row of a call: one branch per group of rows. */
NK_INLINE void fwd_rows_stats_res(int is_rms, nk_dtype dt, int nr, size_t n,
                                  const void *const *x, const void *const *r, void *const *h,
                                  float eps, float *mu_hi, float *mu_lo, float *rs,
                                  int *fallback) {
  if (r[0] != NULL && h[0] != NULL)
    fwd_rows_stats(is_rms, dt, RES_WRITE, nr, n, x, r, h, eps, mu_hi, mu_lo, rs, fallback);
  else if (r[0] != NULL)
    fwd_rows_stats(is_rms, dt, RES_R, nr, n, x, r, h, eps, mu_hi, mu_lo, rs, fallback);
  else
    fwd_rows_stats(is_rms, dt, RES_NONE, nr, n, x, r, h, eps, mu_hi, mu_lo, rs, fallback);
}

typedef struct fwd_out {
  size_t n;
  const void *src, *r; /* h = src, or round_to(src + r) with FO_R */
  void *y;
  const void *gamma, *beta;
  float mu_hi, mu_lo, rs;
  const char *pf; /* the next row's x, prefetched during this row's output pass, or NULL */
  int pf_l2;      /* prefetch into L2 (out of cache), else into L1 */
  float scale;    /* FO_SCALE: the LayerNorm Scaling factor */
} fwd_out;

/* Parameters (gamma or beta) for nv 16-lane vectors: f32, or the activation dtype. */
NK_INLINE void load_params(__m512 *v, const void *p, size_t i, int nv, __mmask16 m,
                           nk_dtype dt, int phalf, int full) {
  if (dt != NK_DTYPE_F32 && phalf)
    for (int j = 0; j < nv; j++) v[j] = load16(p, i + 16 * (size_t)j, m, dt, full);
  else
    for (int j = 0; j < nv; j++) v[j] = load16(p, i + 16 * (size_t)j, m, NK_DTYPE_F32, full);
}

/* One step of the output pass: nv = 4 full vectors (64 elements), or nv = 1 masked vector.
 * The run-time variant bits are tested once per step.
 *   xhat = RMSNorm ? h * rstd : ((h - mu_hi) - mu_lo) * rstd
 *   y = fmaf(xhat, g, b) | xhat * g | xhat + b | xhat,   g = gamma or 1 + gamma */
NK_INLINE void fwd_out_step(int is_rms, nk_dtype dt, uint32_t c, const fwd_out *o, size_t i,
                            int nv, __mmask16 m, int kind) {
  const int full = kind != ST_MASK;
  __m512 v[4], y[4];
  for (int j = 0; j < nv; j++) v[j] = load16(o->src, i + 16 * (size_t)j, m, dt, full);
  if (c & FO_R)
    for (int j = 0; j < nv; j++)
      v[j] = round16(_mm512_add_ps(v[j], load16(o->r, i + 16 * (size_t)j, m, dt, full)), dt);
  const __m512 rs = _mm512_set1_ps(o->rs);
  for (int j = 0; j < nv; j++)
    y[j] = is_rms ? _mm512_mul_ps(v[j], rs)
                  : _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(v[j], _mm512_set1_ps(o->mu_hi)),
                                                _mm512_set1_ps(o->mu_lo)),
                                  rs);
  if (c & (FO_GAMMA | FO_BETA)) {
    __m512 g[4], b[4];
    if (c & FO_GAMMA) {
      load_params(g, o->gamma, i, nv, m, dt, (c & FO_PHALF) != 0, full);
      if (c & FO_OFFSET)
        for (int j = 0; j < nv; j++) g[j] = _mm512_add_ps(_mm512_set1_ps(1.0f), g[j]);
    }
    if (c & FO_BETA) load_params(b, o->beta, i, nv, m, dt, (c & FO_PHALF) != 0, full);
    for (int j = 0; j < nv; j++)
      y[j] = (c & FO_GAMMA) ? ((c & FO_BETA) ? _mm512_fmadd_ps(y[j], g[j], b[j])
                                             : _mm512_mul_ps(y[j], g[j]))
                            : _mm512_add_ps(y[j], b[j]);
  }
  if (c & FO_SCALE)
    for (int j = 0; j < nv; j++) y[j] = _mm512_mul_ps(y[j], _mm512_set1_ps(o->scale));
  for (int j = 0; j < nv; j++) store16(o->y, i + 16 * (size_t)j, m, y[j], dt, kind);
  if (full && o->pf) { /* the next row's x, one 64-byte line per 16 f32 (per 32 halves) */
    if (o->pf_l2)
      for (int j = 0; j < nv; j += (dt == NK_DTYPE_F32 ? 1 : 2))
        _mm_prefetch(o->pf + (i + 16 * (size_t)j) * esize(dt), _MM_HINT_T1);
    else
      for (int j = 0; j < nv; j += (dt == NK_DTYPE_F32 ? 1 : 2))
        _mm_prefetch(o->pf + (i + 16 * (size_t)j) * esize(dt), _MM_HINT_T0);
  }
}

/* Elements [i, i + k) with masked 16-lane steps (head, tail). */
NK_INLINE void fwd_out_masked(int is_rms, nk_dtype dt, uint32_t c, const fwd_out *o, size_t i,
                              size_t k) {
#pragma GCC unroll 1
  for (size_t j = 0; j < k; j += 16)
    fwd_out_step(is_rms, dt, c, o, i + j, 1, mask_first((ptrdiff_t)(k - j)), ST_MASK);
}

/* The output pass over one row (element-wise; no lane structure). */
NK_INLINE void fwd_out_row(int is_rms, nk_dtype dt, uint32_t c, const fwd_out *po) {
  /* A local copy: vector stores may alias anything, so fields read through po would be
   * reloaded after every store. */
  const fwd_out local = *po, *o = &local;
  const size_t n = o->n;
  size_t i = 0;
  if (c & FO_NT) {
    const size_t head = head_to_align64(o->y, n, dt);
    fwd_out_masked(is_rms, dt, c, o, 0, head);
    for (i = head; i + LANES <= n; i += LANES) fwd_out_step(is_rms, dt, c, o, i, 4, 0, ST_STREAM);
  } else {
    for (; i + LANES <= n; i += LANES) fwd_out_step(is_rms, dt, c, o, i, 4, 0, ST_FULL);
  }
  if (i < n) fwd_out_masked(is_rms, dt, c, o, i, n - i);
}

/* The variant bits c are run-time values; the switch makes gamma and beta compile-time
 * constants in each branch (they shape the inner loop). The other bits (offset, parameter
 * dtype, residual, streaming) stay run-time tests of loop invariants. */
NK_INLINE void fwd_out_pick_gb(int is_rms, nk_dtype dt, uint32_t c, uint32_t rest,
                                const fwd_out *o) {
  switch (c & (FO_GAMMA | FO_BETA)) {
    case FO_GAMMA: fwd_out_row(is_rms, dt, rest | FO_GAMMA, o); break;
    case FO_BETA: fwd_out_row(is_rms, dt, rest | FO_BETA, o); break;
    case FO_GAMMA | FO_BETA: fwd_out_row(is_rms, dt, rest | FO_GAMMA | FO_BETA, o); break;
    default: fwd_out_row(is_rms, dt, rest, o); break;
  }
}

/* LayerNorm Scaling as a compile-time bit too: `rest` has FO_SCALE cleared, so each branch
 * knows it, and the unscaled loops are the same code as without the feature. */
NK_INLINE void fwd_out_pick(int is_rms, nk_dtype dt, uint32_t c, const fwd_out *o) {
  const uint32_t rest = c & ~(FO_GAMMA | FO_BETA | FO_SCALE);
  if (c & FO_SCALE) fwd_out_pick_gb(is_rms, dt, c, rest | FO_SCALE, o);
  else fwd_out_pick_gb(is_rms, dt, c, rest, o);
}

NK_INLINE void fwd_kernel(int is_rms, nk_dtype dt, size_t rows, size_t n, const void *x,
                          ptrdiff_t xs, const void *r, ptrdiff_t rs_stride, void *y,
                          ptrdiff_t ys, void *h, ptrdiff_t hs, float *mean, float *rstd,
                          const nk_rownorm_params *p) {
  assert(n > 0);
  assert(x != NULL && y != NULL && p != NULL);
  assert(p->param_dtype == NK_DTYPE_F32 || p->param_dtype == dt);
  const uint32_t v = p->variant;
  uint32_t c = 0;
  if (v & NK_ROWNORM_HAS_GAMMA) c |= FO_GAMMA | ((v & NK_ROWNORM_OFFSET) ? FO_OFFSET : 0u);
  if (v & NK_ROWNORM_HAS_BETA) c |= FO_BETA;
  if (v & NK_ROWNORM_NONTEMPORAL) c |= FO_NT;
  if (p->param_dtype != NK_DTYPE_F32) c |= FO_PHALF;
  if (r != NULL && h == NULL) c |= FO_R;
  if (v & NK_ROWNORM_SCALE) c |= FO_SCALE;
  /* LayerNorm rows of up to FWD_PAIR_BYTES go in pairs: the statistics of both rows are
   * computed together, then each row is finished (see FWD_PAIR_BYTES). */
  const size_t row_bytes = n * esize(dt);
  const int pairs = !is_rms && row_bytes <= FWD_PAIR_BYTES;
  const int pf_l1 = row_bytes >= FWD_PF_MIN_BYTES && row_bytes <= FWD_PF_MAX_BYTES;
  const int pf_l2 = !pf_l1 && (c & FO_NT);
  for (size_t row = 0; row < rows;) {
    const int nr = pairs && rows - row >= 2 ? 2 : 1;
    const void *xq[2] = {NULL, NULL}, *rq[2] = {NULL, NULL};
    void *yq[2] = {NULL, NULL}, *hq[2] = {NULL, NULL};
    for (int q = 0; q < nr; q++) {
      xq[q] = row_at(x, row + (size_t)q, xs, dt);
      rq[q] = r ? row_at(r, row + (size_t)q, rs_stride, dt) : NULL;
      yq[q] = (void *)row_at(y, row + (size_t)q, ys, dt);
      hq[q] = h ? (void *)row_at(h, row + (size_t)q, hs, dt) : NULL;
    }
    float mu_hi[2], mu_lo[2], rs[2];
    int fallback[2];
    if (nr == 2) fwd_rows_stats_res(is_rms, dt, 2, n, xq, rq, hq, p->eps, mu_hi, mu_lo, rs, fallback);
    else fwd_rows_stats_res(is_rms, dt, 1, n, xq, rq, hq, p->eps, mu_hi, mu_lo, rs, fallback);
#pragma GCC unroll 1
    for (int q = 0; q < nr; q++, row++) {
      /* what the output pass reads: h if written (then no residual), else x (+ r) */
      const void *src = (rq[q] && hq[q]) ? hq[q] : xq[q];
      const void *rr = (rq[q] && hq[q]) ? NULL : rq[q];
      if (fallback[q]) {
        nk__rownorm_fwd_row_f64(is_rms, n, dt, src, rr, yq[q], mean ? &mean[row] : NULL,
                                rstd ? &rstd[row] : NULL, p);
        continue;
      }
      const size_t next = row + (size_t)nr; /* the next row in the same place of its group */
      const fwd_out o = {n, src, rr, yq[q], p->gamma, p->beta, mu_hi[q], mu_lo[q], rs[q],
                         (pf_l1 || pf_l2) && next < rows ? (const char *)row_at(x, next, xs, dt) : NULL,
                         pf_l2, p->scale};
      fwd_out_pick(is_rms, dt, c, &o);
      if (mean) mean[row] = mu_hi[q];
      if (rstd) rstd[row] = rs[q];
    }
  }
  if (c & FO_NT) _mm_sfence();
}

/* ---- backward ----------------------------------------------------------------------------- */

typedef struct bwd_row {
  size_t n;
  const void *x, *dy, *dh; /* x is h, or y with BO_FROMY */
  void *dx;
  const void *gamma, *beta;
  const float *ginv;
  float m, rs;        /* saved mean (LayerNorm from x; else 0) and rstd */
  float a, b, mu_lo;  /* coefficients (output pass) */
  float scale, scale_inv; /* BO_SCALE: LayerNorm Scaling s and 1/s */
  double *dg, *db;    /* dgamma_acc, dbeta_acc or NULL */
  const char *pfx, *pfdy; /* out of cache: the next row's x and dy, prefetched into L2 */
} bwd_row;

/* gh_i = dy_i * g_i (g = gamma or 1 + gamma), or dy_i without gamma, for nv vectors. */
NK_INLINE void bwd_gh(nk_dtype dt, uint32_t c, const bwd_row *o, const __m512 *g, __m512 *gh,
                      size_t i, int nv, __mmask16 m, int full) {
  if (!(c & BO_GAMMA)) {
    for (int j = 0; j < nv; j++) gh[j] = g[j];
    return;
  }
  __m512 gn[4];
  load_params(gn, o->gamma, i, nv, m, dt, (c & BO_PHALF) != 0, full);
  if (c & BO_OFFSET)
    for (int j = 0; j < nv; j++) gn[j] = _mm512_add_ps(_mm512_set1_ps(1.0f), gn[j]);
  for (int j = 0; j < nv; j++) gh[j] = _mm512_mul_ps(g[j], gn[j]);
}

/* xhat for nv vectors:  from y: (y - b) * ginv (without beta: y; without ginv: no product);
 * RMSNorm: x * rstd;  LayerNorm from x, sums pass (center == 0): e = x - mean;
 * LayerNorm from x, output pass (center == 1): ((x - mean) - mu_lo) * rstd. */
NK_INLINE void bwd_xh(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *o, __m512 *xh,
                      size_t i, int nv, __mmask16 m, int full, int center) {
  for (int j = 0; j < nv; j++) xh[j] = load16(o->x, i + 16 * (size_t)j, m, dt, full);
  const __m512 rs = _mm512_set1_ps(o->rs);
  if (c & BO_FROMY) {
    if (c & BO_SCALE)
      for (int j = 0; j < nv; j++) xh[j] = _mm512_mul_ps(xh[j], _mm512_set1_ps(o->scale_inv));
    if (c & BO_BETA) {
      __m512 b[4];
      load_params(b, o->beta, i, nv, m, dt, (c & BO_PHALF) != 0, full);
      for (int j = 0; j < nv; j++) xh[j] = _mm512_sub_ps(xh[j], b[j]);
    }
    if (c & BO_GINV)
      for (int j = 0; j < nv; j++)
        xh[j] = _mm512_mul_ps(xh[j], load16(o->ginv, i + 16 * (size_t)j, m, NK_DTYPE_F32, full));
  } else if (is_rms) {
    for (int j = 0; j < nv; j++) xh[j] = _mm512_mul_ps(xh[j], rs);
  } else {
    for (int j = 0; j < nv; j++) xh[j] = _mm512_sub_ps(xh[j], _mm512_set1_ps(o->m));
    if (center)
      for (int j = 0; j < nv; j++)
        xh[j] = _mm512_mul_ps(_mm512_sub_ps(xh[j], _mm512_set1_ps(o->mu_lo)), rs);
  }
}

/* One step of the backward sums (scalar's bwd_rows first loop), nv = 4 full vectors or
 * nv = 1 masked vector, accumulators la/lb/lc[0..nv):
 *   LayerNorm from x: e = x - mean; A += gh; B = fmaf(gh, e, B); C += e
 *   otherwise:        A += gh (LayerNorm only); B = fmaf(gh, xhat, B),
 *                     xhat = x * rstd (from x) or the from-y xhat. */
NK_INLINE void bwd_sum_step(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *o, size_t i,
                            int nv, __mmask16 m, int full, __m512 *la, __m512 *lb,
                            __m512 *lc) {
  __m512 g[4], gh[4], xh[4];
  for (int j = 0; j < nv; j++) g[j] = load16(o->dy, i + 16 * (size_t)j, m, dt, full);
  if (c & BO_SCALE)
    for (int j = 0; j < nv; j++) g[j] = _mm512_mul_ps(g[j], _mm512_set1_ps(o->scale));
  bwd_gh(dt, c, o, g, gh, i, nv, m, full);
  bwd_xh(is_rms, dt, c, o, xh, i, nv, m, full, 0);
  for (int j = 0; j < nv; j++) {
    if (!is_rms) la[j] = full ? _mm512_add_ps(la[j], gh[j]) : _mm512_mask_add_ps(la[j], m, la[j], gh[j]);
    lb[j] = full ? _mm512_fmadd_ps(gh[j], xh[j], lb[j]) : _mm512_mask3_fmadd_ps(gh[j], xh[j], lb[j], m);
    if (!is_rms && !(c & BO_FROMY))
      lc[j] = full ? _mm512_add_ps(lc[j], xh[j]) : _mm512_mask_add_ps(lc[j], m, lc[j], xh[j]);
  }
}

/* A, B, C = blocksums of the row (rownorm.h backward). */
NK_INLINE void bwd_sums(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *o, double *A,
                        double *B, double *C) {
  const size_t n = o->n;
  const int sum_c = !is_rms && !(c & BO_FROMY);
  double ta = 0.0, tb = 0.0, tc = 0.0;
  for (size_t b = 0; b < n; b += BLOCK) {
    const size_t e = b + BLOCK < n ? b + BLOCK : n;
    __m512 la[4], lb[4], lc[4];
    for (int j = 0; j < 4; j++) la[j] = lb[j] = lc[j] = _mm512_setzero_ps();
    size_t i = b;
    for (; i + LANES <= e; i += LANES) bwd_sum_step(is_rms, dt, c, o, i, 4, 0, 1, la, lb, lc);
    if (i < e) { /* partial step: one masked vector per turn into la[0] (lb, lc), then the
                  * accumulators rotate down (0 <- 1 <- 2 <- 3 <- 0), so after 4 turns each
                  * got its own vector and all are back in place */
      const ptrdiff_t k = (ptrdiff_t)(e - i);
#pragma GCC unroll 1
      for (ptrdiff_t j = 0; j < 64; j += 16) {
        bwd_sum_step(is_rms, dt, c, o, i + (size_t)j, 1, mask_first(k - j), 0, la, lb, lc);
        const __m512 ta0 = la[0], tb0 = lb[0], tc0 = lc[0];
        for (int t = 0; t < 3; t++) la[t] = la[t + 1], lb[t] = lb[t + 1], lc[t] = lc[t + 1];
        la[3] = ta0, lb[3] = tb0, lc[3] = tc0;
      }
    }
    if (!is_rms) ta += (double)fold64(la[0], la[1], la[2], la[3]);
    tb += (double)fold64(lb[0], lb[1], lb[2], lb[3]);
    if (sum_c) tc += (double)fold64(lc[0], lc[1], lc[2], lc[3]);
  }
  *A = ta;
  *B = tb;
  *C = tc;
}

/* dgamma_acc[i..i+16) += (double)dy * (double)xhat (exact product, so one FMA in double is
 * the same as scalar's product then sum); dbeta_acc[i..i+16) += (double)dy. */
NK_INLINE void bwd_param16(double *dg, double *db, size_t i, __mmask16 m, int full, __m512 g,
                           __m512 xh) {
  const __m512d g0 = _mm512_cvtps_pd(_mm512_castps512_ps256(g));
  const __m512d g1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(g, 1));
  const __mmask8 m0 = (__mmask8)m, m1 = (__mmask8)(m >> 8);
  if (dg) {
    double *q = dg + i;
    const __m512d x0 = _mm512_cvtps_pd(_mm512_castps512_ps256(xh));
    const __m512d x1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(xh, 1));
    if (full) {
      _mm512_storeu_pd(q, _mm512_fmadd_pd(g0, x0, _mm512_loadu_pd(q)));
      _mm512_storeu_pd(q + 8, _mm512_fmadd_pd(g1, x1, _mm512_loadu_pd(q + 8)));
    } else {
      _mm512_mask_storeu_pd(q, m0, _mm512_fmadd_pd(g0, x0, _mm512_maskz_loadu_pd(m0, q)));
      _mm512_mask_storeu_pd(q + 8, m1, _mm512_fmadd_pd(g1, x1, _mm512_maskz_loadu_pd(m1, q + 8)));
    }
  }
  if (db) {
    double *q = db + i;
    if (full) {
      _mm512_storeu_pd(q, _mm512_add_pd(_mm512_loadu_pd(q), g0));
      _mm512_storeu_pd(q + 8, _mm512_add_pd(_mm512_loadu_pd(q + 8), g1));
    } else {
      _mm512_mask_storeu_pd(q, m0, _mm512_add_pd(_mm512_maskz_loadu_pd(m0, q), g0));
      _mm512_mask_storeu_pd(q + 8, m1, _mm512_add_pd(_mm512_maskz_loadu_pd(m1, q + 8), g1));
    }
  }
}

/* One step of the backward output (scalar's bwd_rows second loop), nv = 4 or 1:
 *   xhat = LayerNorm from x: ((x - mean) - mu_lo) * rstd;  RMSNorm: x * rstd;  from y: above
 *   dx = fmaf(-xhat, b, gh - a) * rstd (+ dh)   (RMSNorm: a = 0, and gh - 0 == gh) */
NK_INLINE void bwd_out_step(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *o, size_t i,
                            int nv, __mmask16 m, int kind) {
  const int full = kind != ST_MASK;
  __m512 g[4], gh[4], xh[4], d[4];
  for (int j = 0; j < nv; j++) g[j] = load16(o->dy, i + 16 * (size_t)j, m, dt, full);
  if (c & BO_SCALE)
    for (int j = 0; j < nv; j++) g[j] = _mm512_mul_ps(g[j], _mm512_set1_ps(o->scale));
  bwd_gh(dt, c, o, g, gh, i, nv, m, full);
  bwd_xh(is_rms, dt, c, o, xh, i, nv, m, full, 1);
  const __m512 rs = _mm512_set1_ps(o->rs);
  for (int j = 0; j < nv; j++) {
    const __m512 t = is_rms ? gh[j] : _mm512_sub_ps(gh[j], _mm512_set1_ps(o->a));
    d[j] = _mm512_mul_ps(_mm512_fnmadd_ps(xh[j], _mm512_set1_ps(o->b), t), rs);
  }
  if (c & BO_DH)
    for (int j = 0; j < nv; j++) d[j] = _mm512_add_ps(d[j], load16(o->dh, i + 16 * (size_t)j, m, dt, full));
  for (int j = 0; j < nv; j++) store16(o->dx, i + 16 * (size_t)j, m, d[j], dt, kind);
  if (full && o->pfx)
    for (int j = 0; j < nv; j += (dt == NK_DTYPE_F32 ? 1 : 2)) {
      _mm_prefetch(o->pfx + (i + 16 * (size_t)j) * esize(dt), _MM_HINT_T1);
      _mm_prefetch(o->pfdy + (i + 16 * (size_t)j) * esize(dt), _MM_HINT_T1);
    }
  if (o->dg || o->db)
    for (int j = 0; j < nv; j++) bwd_param16(o->dg, o->db, i + 16 * (size_t)j, m, full, g[j], xh[j]);
}

/* Elements [i, i + k) with masked 16-lane steps (head, tail). */
NK_INLINE void bwd_out_masked(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *o, size_t i,
                              size_t k) {
#pragma GCC unroll 1
  for (size_t j = 0; j < k; j += 16)
    bwd_out_step(is_rms, dt, c, o, i + j, 1, mask_first((ptrdiff_t)(k - j)), ST_MASK);
}

NK_INLINE void bwd_out_row(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *po) {
  const bwd_row local = *po, *o = &local; /* see fwd_out_row */
  const size_t n = o->n;
  size_t i = 0;
  if (c & BO_NT) {
    const size_t head = head_to_align64(o->dx, n, dt);
    bwd_out_masked(is_rms, dt, c, o, 0, head);
    for (i = head; i + LANES <= n; i += LANES) bwd_out_step(is_rms, dt, c, o, i, 4, 0, ST_STREAM);
  } else {
    for (; i + LANES <= n; i += LANES) bwd_out_step(is_rms, dt, c, o, i, 4, 0, ST_FULL);
  }
  if (i < n) bwd_out_masked(is_rms, dt, c, o, i, n - i);
}

/* The variant bits c are run-time values; the switch makes gamma and from-y compile-time
 * constants in each branch (they shape the inner loops). The other bits (offset, beta, ginv,
 * parameter dtype, dh, streaming) stay run-time tests of loop invariants.
 * `then` selects the pass: 0 = sums, 1 = output. */
NK_INLINE void bwd_pass(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *o, int then,
                        double *A, double *B, double *C) {
  if (then == 0) bwd_sums(is_rms, dt, c, o, A, B, C);
  else bwd_out_row(is_rms, dt, c, o);
}

NK_INLINE void bwd_pick_gf(int is_rms, nk_dtype dt, uint32_t c, uint32_t rest,
                           const bwd_row *o, int then, double *A, double *B, double *C) {
  switch (c & (BO_GAMMA | BO_FROMY)) {
    case BO_GAMMA: bwd_pass(is_rms, dt, rest | BO_GAMMA, o, then, A, B, C); break;
    case BO_FROMY: bwd_pass(is_rms, dt, rest | BO_FROMY, o, then, A, B, C); break;
    case BO_GAMMA | BO_FROMY: bwd_pass(is_rms, dt, rest | BO_GAMMA | BO_FROMY, o, then, A, B, C); break;
    default: bwd_pass(is_rms, dt, rest, o, then, A, B, C); break;
  }
}

/* LayerNorm Scaling as a compile-time bit too (see fwd_out_pick). */
NK_INLINE void bwd_pick(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *o, int then,
                        double *A, double *B, double *C) {
  const uint32_t rest = c & ~(BO_GAMMA | BO_FROMY | BO_SCALE);
  if (c & BO_SCALE) bwd_pick_gf(is_rms, dt, c, rest | BO_SCALE, o, then, A, B, C);
  else bwd_pick_gf(is_rms, dt, c, rest, o, then, A, B, C);
}

NK_INLINE void bwd_kernel(int is_rms, nk_dtype dt, size_t rows, size_t n, const void *x,
                          ptrdiff_t xs, const void *dy, ptrdiff_t dys, const void *dh,
                          ptrdiff_t dhs, const float *mean, const float *rstd, void *dx,
                          ptrdiff_t dxs, double *dgamma_acc, double *dbeta_acc,
                          const nk_rownorm_params *p) {
  assert(n > 0);
  assert(x != NULL && dy != NULL && dx != NULL && p != NULL);
  assert(rstd != NULL || (p->variant & NK_ROWNORM_FIXED_RSTD)); /* FakeLN: not read */
  assert(p->param_dtype == NK_DTYPE_F32 || p->param_dtype == dt);
  const uint32_t v = p->variant;
  const int from_y = (v & NK_ROWNORM_FROM_Y) != 0;
  assert(is_rms || from_y || mean != NULL);
  uint32_t c = 0;
  if (v & NK_ROWNORM_HAS_GAMMA) c |= BO_GAMMA | ((v & NK_ROWNORM_OFFSET) ? BO_OFFSET : 0u);
  if (from_y) c |= BO_FROMY | ((v & NK_ROWNORM_HAS_BETA) ? BO_BETA : 0u) | (p->ginv ? BO_GINV : 0u);
  if (v & NK_ROWNORM_NONTEMPORAL) c |= BO_NT;
  if (p->param_dtype != NK_DTYPE_F32) c |= BO_PHALF;
  if (dh != NULL) c |= BO_DH;
  if (v & NK_ROWNORM_SCALE) c |= BO_SCALE;
  for (size_t row = 0; row < rows; row++) {
    bwd_row o;
    o.scale = p->scale;
    o.scale_inv = p->scale_inv;
    o.n = n;
    o.x = row_at(x, row, xs, dt);
    o.dy = row_at(dy, row, dys, dt);
    o.dh = dh ? row_at(dh, row, dhs, dt) : NULL;
    o.dx = (void *)row_at(dx, row, dxs, dt);
    o.gamma = p->gamma;
    o.beta = p->beta;
    o.ginv = p->ginv;
    o.m = (!is_rms && !from_y) ? mean[row] : 0.0f;
    o.rs = (p->variant & NK_ROWNORM_FIXED_RSTD) ? p->fixed_rstd : rstd[row];
    o.dg = dgamma_acc;
    o.db = dbeta_acc;
    o.pfx = (c & BO_NT) && row + 1 < rows ? (const char *)row_at(x, row + 1, xs, dt) : NULL;
    o.pfdy = o.pfx ? (const char *)row_at(dy, row + 1, dys, dt) : NULL;
    double A = 0.0, B = 0.0, C = 0.0;
    const int bad_stats = !isnormal(o.rs) || !isfinite(o.m); /* fallback whatever the sums */
    if (!bad_stats) bwd_pick(is_rms, dt, c, &o, 0, &A, &B, &C);
    if (bad_stats || !isfinite(A) || !isfinite(B) || !isfinite(C)) {
      nk__rownorm_bwd_row_f64(is_rms, n, dt, o.x, o.dy, o.dh, o.m, o.rs, o.dx, dgamma_acc,
                              dbeta_acc, p);
      continue;
    }
    nk__rownorm_bwd_coeffs(is_rms, from_y, (p->variant & NK_ROWNORM_FIXED_RSTD) != 0, n, A, B,
                           C, o.rs, &o.a, &o.b, &o.mu_lo);
    bwd_pick(is_rms, dt, c, &o, 1, NULL, NULL, NULL);
  }
  if (c & BO_NT) _mm_sfence();
}

/* ---- the named kernels (rownorm.inc) ------------------------------------------------------- */

void nk_f32_layernorm_fwd__avx512_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                      const void *r, ptrdiff_t r_stride, void *y,
                                      ptrdiff_t y_stride, void *h, ptrdiff_t h_stride,
                                      float *mean, float *rstd, const nk_rownorm_params *params) {
  fwd_kernel(0, NK_DTYPE_F32, rows, cols, x, x_stride, r, r_stride, y, y_stride, h, h_stride,
             mean, rstd, params);
}

void nk_bf16_layernorm_fwd__avx512_u64(size_t rows, size_t cols, const void *x,
                                       ptrdiff_t x_stride, const void *r, ptrdiff_t r_stride,
                                       void *y, ptrdiff_t y_stride, void *h, ptrdiff_t h_stride,
                                       float *mean, float *rstd,
                                       const nk_rownorm_params *params) {
  fwd_kernel(0, NK_DTYPE_BF16, rows, cols, x, x_stride, r, r_stride, y, y_stride, h, h_stride,
             mean, rstd, params);
}

void nk_f16_layernorm_fwd__avx512_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                      const void *r, ptrdiff_t r_stride, void *y,
                                      ptrdiff_t y_stride, void *h, ptrdiff_t h_stride,
                                      float *mean, float *rstd, const nk_rownorm_params *params) {
  fwd_kernel(0, NK_DTYPE_F16, rows, cols, x, x_stride, r, r_stride, y, y_stride, h, h_stride,
             mean, rstd, params);
}

void nk_f32_rmsnorm_fwd__avx512_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                    const void *r, ptrdiff_t r_stride, void *y,
                                    ptrdiff_t y_stride, void *h, ptrdiff_t h_stride, float *mean,
                                    float *rstd, const nk_rownorm_params *params) {
  fwd_kernel(1, NK_DTYPE_F32, rows, cols, x, x_stride, r, r_stride, y, y_stride, h, h_stride,
             mean, rstd, params);
}

void nk_bf16_rmsnorm_fwd__avx512_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                     const void *r, ptrdiff_t r_stride, void *y,
                                     ptrdiff_t y_stride, void *h, ptrdiff_t h_stride,
                                     float *mean, float *rstd, const nk_rownorm_params *params) {
  fwd_kernel(1, NK_DTYPE_BF16, rows, cols, x, x_stride, r, r_stride, y, y_stride, h, h_stride,
             mean, rstd, params);
}

void nk_f16_rmsnorm_fwd__avx512_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                    const void *r, ptrdiff_t r_stride, void *y,
                                    ptrdiff_t y_stride, void *h, ptrdiff_t h_stride, float *mean,
                                    float *rstd, const nk_rownorm_params *params) {
  fwd_kernel(1, NK_DTYPE_F16, rows, cols, x, x_stride, r, r_stride, y, y_stride, h, h_stride,
             mean, rstd, params);
}

void nk_f32_layernorm_bwd__avx512_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                      const void *dy, ptrdiff_t dy_stride, const void *dh,
                                      ptrdiff_t dh_stride, const float *mean, const float *rstd,
                                      void *dx, ptrdiff_t dx_stride, double *dgamma_acc,
                                      double *dbeta_acc, const nk_rownorm_params *params) {
  bwd_kernel(0, NK_DTYPE_F32, rows, cols, x, x_stride, dy, dy_stride, dh, dh_stride, mean, rstd,
             dx, dx_stride, dgamma_acc, dbeta_acc, params);
}

void nk_bf16_layernorm_bwd__avx512_u64(size_t rows, size_t cols, const void *x,
                                       ptrdiff_t x_stride, const void *dy, ptrdiff_t dy_stride,
                                       const void *dh, ptrdiff_t dh_stride, const float *mean,
                                       const float *rstd, void *dx, ptrdiff_t dx_stride,
                                       double *dgamma_acc, double *dbeta_acc,
                                       const nk_rownorm_params *params) {
  bwd_kernel(0, NK_DTYPE_BF16, rows, cols, x, x_stride, dy, dy_stride, dh, dh_stride, mean, rstd,
             dx, dx_stride, dgamma_acc, dbeta_acc, params);
}

void nk_f16_layernorm_bwd__avx512_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                      const void *dy, ptrdiff_t dy_stride, const void *dh,
                                      ptrdiff_t dh_stride, const float *mean, const float *rstd,
                                      void *dx, ptrdiff_t dx_stride, double *dgamma_acc,
                                      double *dbeta_acc, const nk_rownorm_params *params) {
  bwd_kernel(0, NK_DTYPE_F16, rows, cols, x, x_stride, dy, dy_stride, dh, dh_stride, mean, rstd,
             dx, dx_stride, dgamma_acc, dbeta_acc, params);
}

void nk_f32_rmsnorm_bwd__avx512_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                    const void *dy, ptrdiff_t dy_stride, const void *dh,
                                    ptrdiff_t dh_stride, const float *mean, const float *rstd,
                                    void *dx, ptrdiff_t dx_stride, double *dgamma_acc,
                                    double *dbeta_acc, const nk_rownorm_params *params) {
  bwd_kernel(1, NK_DTYPE_F32, rows, cols, x, x_stride, dy, dy_stride, dh, dh_stride, mean, rstd,
             dx, dx_stride, dgamma_acc, dbeta_acc, params);
}

void nk_bf16_rmsnorm_bwd__avx512_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                     const void *dy, ptrdiff_t dy_stride, const void *dh,
                                     ptrdiff_t dh_stride, const float *mean, const float *rstd,
                                     void *dx, ptrdiff_t dx_stride, double *dgamma_acc,
                                     double *dbeta_acc, const nk_rownorm_params *params) {
  bwd_kernel(1, NK_DTYPE_BF16, rows, cols, x, x_stride, dy, dy_stride, dh, dh_stride, mean, rstd,
             dx, dx_stride, dgamma_acc, dbeta_acc, params);
}

void nk_f16_rmsnorm_bwd__avx512_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                    const void *dy, ptrdiff_t dy_stride, const void *dh,
                                    ptrdiff_t dh_stride, const float *mean, const float *rstd,
                                    void *dx, ptrdiff_t dx_stride, double *dgamma_acc,
                                    double *dbeta_acc, const nk_rownorm_params *params) {
  bwd_kernel(1, NK_DTYPE_F16, rows, cols, x, x_stride, dy, dy_stride, dh, dh_stride, mean, rstd,
             dx, dx_stride, dgamma_acc, dbeta_acc, params);
}
