/*
 * avx2.c — the AVX2 row-norm kernels (LayerNorm, RMSNorm; forward and backward; f32, bf16 and
 * f16 activations; f32 or activation-dtype parameters). Compiled with -mavx2 -mfma -mf16c (and
 * -ffp-contract=off, like every file).
 *
 * Contract: rownorm.h (nk_rownorm_fwd_ukernel_fn / nk_rownorm_bwd_ukernel_fn): rows x cols, any
 * strides >= cols, outputs may be the very same buffers as inputs (each element is read before
 * it is written at the same index: every 8-lane step loads all its inputs before its store, and
 * every reduction pass ends before the pass that writes), gamma/beta/residual/h/dh optional.
 * The output bits are those of scalar.c for every input — same y, h, mean, rstd, dx, and the
 * same doubles added to dgamma_acc/dbeta_acc — and rows the f32 sums cannot handle go to the
 * shared nk__rownorm_fwd_row_f64 / nk__rownorm_bwd_row_f64 with the arguments scalar.c gives.
 *
 * Tail handling: no over-reads, no over-writes. f32 (and double) tails use vmaskmov loads and
 * stores with a mask from a table (fault-suppressing; masked lanes read as +0). 16-bit tails
 * have no 16-bit masked move in AVX2: the k < 8 remaining elements are copied into a zeroed
 * 8-element buffer (and results copied back out), a scalar-sized tail. In the reductions a
 * lane past the row end keeps its value (blendv of the old and new accumulator), so a partial
 * block adds exactly the terms the scalar lanes add.
 *
 * Accumulation order (the canonical arithmetic of rownorm.h): ymm accumulator k holds lanes
 * 8k..8k+7 of the 64 canonical lanes, so one 64-element step adds element b+64j+l to lane l
 * exactly as scalar's lane[(i - b) % 64] does, in increasing i. Reductions with one sum keep all
 * 8 accumulators live; those with two or three sums (LayerNorm S2 and D; the backward's A, B,
 * C) would need 16-24 ymm, more than AVX2 has, so they sweep each block twice, lanes 0..31 then
 * lanes 32..63: lanes are independent and each still adds its terms in increasing i, so the
 * bits are the same. Each block of 1024 elements is folded with the tree lane[k] += lane[k + s],
 * s = 32, 16, 8, 4, 2, 1 (fold64) and added to a double total in block order. Products
 * accumulate with one FMA per term, like scalar's fmaf. Element-wise maths is the same f32
 * operations in the same order (a*b+c is two roundings unless scalar writes fmaf; -xh*b+c as
 * _mm256_fnmadd_ps(xh, b, c) == fmaf(-xh, b, c)).
 *
 * Conversions (runtime/convert.h): bf16 -> f32 is the 16-bit shift; f16 -> f32 is vcvtph2ps
 * (identical to nk__f16_to_f32 for all 65536 inputs, NaNs included); f32 -> f16 is vcvtps2ph
 * with round-to-nearest-even (identical to nk__f32_to_f16 for all 2^32 inputs); f32 -> bf16 is
 * the integer round-to-nearest-even of nk__f32_to_bf16, NaN -> (bits >> 16) | 0x40.
 *
 * Structure: as avx512.c — one-line named wrappers around always-inline bodies with
 * compile-time dtype and op; gamma and beta (forward) or gamma and from-y (backward) become
 * compile-time constants once per row, the other variant bits are tested once per step. Rows
 * go one at a time (16 ymm registers leave no room for two rows' accumulators). The next row
 * is prefetched during a row's output pass (into L1 for rows of 1-8 KiB, into L2 out of
 * cache). With NK_ROWNORM_NONTEMPORAL the y (forward) or dx (backward) rows are written with
 * streaming stores from the first 64-byte boundary on, and the kernel ends with _mm_sfence().
 */
#include <assert.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../x86/avx2-io.h"
#include "rownorm-common.h"
#include "rownorm.h"

#define LANES NK_ROWNORM_LANES /* 64: 8 ymm of 8 f32 lanes */
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

/* Prefetching the next row into L1 during a forward output pass, for rows of
 * FWD_PF_MIN_BYTES .. FWD_PF_MAX_BYTES, and out of cache (NK_ROWNORM_NONTEMPORAL) into L2
 * (forward: x; backward: x and dy), as in avx512.c, where it was measured. */
#define FWD_PF_MIN_BYTES ((size_t)1 << 10)
#define FWD_PF_MAX_BYTES ((size_t)8 << 10)

/* How a residual enters the forward statistics. */
#define RES_NONE 0  /* h = x */
#define RES_R 1     /* h = dtype(x + r), recomputed at every use */
#define RES_WRITE 2 /* h = dtype(x + r), written to the h buffer by the first pass */

/* Element access, masks, conversions, ST_* store kinds and fold64: ../x86/avx2-io.h. */

/* ---- forward ------------------------------------------------------------------------------ */

/* h_i for 8 lanes (scalar's HV):  x;  round_to(x + r);  or round_to(x + r) also stored to h
 * (RES_WRITE: the first pass writes h, later passes read it as x). */
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
  if (full) {
    _mm_storeu_si128((__m128i *)q, b);
  } else {
    uint16_t buf[8];
    _mm_storeu_si128((__m128i *)buf, b);
    memcpy(q, buf, k * sizeof(uint16_t));
  }
  return widen8(b, dt);
}

/* Reduction terms of the forward:
 *   SUM_SHIFT: lane += h_i - k0                                   (LayerNorm S1)
 *   SUM_DEV2:  d = (h_i - mu_hi) - mu_lo; lane = fmaf(d, d, lane); lsum += d   (S2 and D)
 *   SUM_SQ:    lane = fmaf(h_i, h_i, lane)                        (RMSNorm S) */
#define SUM_SHIFT 0
#define SUM_DEV2 1
#define SUM_SQ 2

NK_INLINE void fwd_term(int kind, __m256 *acc, __m256 *sum, __m256 v, __m256 c0, __m256 c1,
                        size_t k, int full) {
  if (kind == SUM_SHIFT) {
    *acc = keep8(*acc, _mm256_add_ps(*acc, _mm256_sub_ps(v, c0)), k, full);
    return;
  }
  const __m256 d = kind == SUM_SQ ? v : _mm256_sub_ps(_mm256_sub_ps(v, c0), c1);
  *acc = keep8(*acc, _mm256_fmadd_ps(d, d, *acc), k, full);
  if (kind == SUM_DEV2) *sum = keep8(*sum, _mm256_add_ps(*sum, d), k, full);
}

/* One sweep over a block [b, e) for the lanes of vectors j0 .. j0+nv-1 (accumulators acc[j],
 * sum[j] for j in that range). */
NK_INLINE void fwd_sweep(int kind, nk_dtype dt, int res, size_t b, size_t e, const void *x,
                         const void *r, void *h, __m256 c0, __m256 c1, size_t j0, size_t nv,
                         __m256 *acc, __m256 *sum) {
  size_t i = b;
  for (; i + LANES <= e; i += LANES)
    for (size_t j = j0; j < j0 + nv; j++)
      fwd_term(kind, &acc[j], &sum[j], h8(x, r, h, i + 8 * j, 8, dt, res, 1), c0, c1, 8, 1);
  if (i < e) { /* partial step: lanes past the row end keep their value. One 8-lane term
                * per turn into acc[j0], then acc[j0..j0+nv) rotate down by one, so after nv
                * turns each accumulator got its own vector and all are back in place. */
    const size_t k = e - i;
#pragma GCC unroll 1
    for (size_t j = 0; j < nv; j++) {
      const size_t kj = count_at(k, j0 + j);
      fwd_term(kind, &acc[j0], &sum[j0], h8(x, r, h, i + 8 * (j0 + j), kj, dt, res, 0), c0, c1,
               kj, 0);
      const __m256 ta = acc[j0], ts = sum[j0];
      for (size_t t = j0; t + 1 < j0 + nv; t++) acc[t] = acc[t + 1], sum[t] = sum[t + 1];
      acc[j0 + nv - 1] = ta, sum[j0 + nv - 1] = ts;
    }
  }
}

/* blocksum over the row of the forward term `kind` (rownorm.h), in double; SUM_DEV2 also
 * returns blocksum(d_i) in *dsum (two sweeps per block: lanes 0..31, then 32..63). */
NK_INLINE double fwd_blocksum(int kind, nk_dtype dt, int res, size_t n, const void *x,
                              const void *r, void *h, float c0f, float c1f, double *dsum) {
  const __m256 c0 = _mm256_set1_ps(c0f), c1 = _mm256_set1_ps(c1f);
  double total = 0.0, tsum = 0.0;
  for (size_t b = 0; b < n; b += BLOCK) {
    const size_t e = b + BLOCK < n ? b + BLOCK : n;
    __m256 acc[8], sum[8];
    for (int j = 0; j < 8; j++) acc[j] = sum[j] = _mm256_setzero_ps();
    if (kind == SUM_DEV2) {
      fwd_sweep(kind, dt, res, b, e, x, r, h, c0, c1, 0, 4, acc, sum);
      fwd_sweep(kind, dt, res, b, e, x, r, h, c0, c1, 4, 4, acc, sum);
      tsum += (double)fold64(sum);
    } else {
      fwd_sweep(kind, dt, res, b, e, x, r, h, c0, c1, 0, 8, acc, sum);
    }
    total += (double)fold64(acc);
  }
  if (kind == SUM_DEV2) *dsum = tsum;
  return total;
}

/* The statistics of one row (scalar's fwd_rows up to the fallback test):
 *   LayerNorm: K = h_0; S1 = blocksum(h_i - K); mu = K + S1/n; mu_hi = (float)mu;
 *              mu_lo = (float)(mu - mu_hi); d_i = (h_i - mu_hi) - mu_lo;
 *              S2 = blocksum(d_i^2), D = blocksum(d_i) (one pass);
 *              nk__rownorm_refine_mean(n, D, &S2, &mu_hi, &mu_lo) (corrected two-pass)
 *   RMSNorm:   S2 = blocksum(h_i^2)
 *   var = S2/n; fallback if S1 is not finite or nk__rownorm_needs_fallback(var, eps);
 *   rstd = nk__rownorm_rstd(var, eps). Returns 1 for a fallback row.
 * RES_WRITE writes h in the first pass; the later pass reads h (as scalar rereads it). */
NK_INLINE int fwd_row_stats(int is_rms, nk_dtype dt, int res, size_t n, const void *x,
                            const void *r, void *h, float eps, float *mu_hi, float *mu_lo,
                            float *rs) {
  double total;
  int fallback = 0;
  *mu_hi = 0.0f;
  *mu_lo = 0.0f;
  if (!is_rms) {
    const float k0 = _mm256_cvtss_f32(h8(x, r, NULL, 0, 1, dt, res == RES_NONE ? RES_NONE : RES_R, 0));
    total = fwd_blocksum(SUM_SHIFT, dt, res, n, x, r, h, k0, 0.0f, NULL);
    const double mu = (double)k0 + total / (double)n;
    fallback = !isfinite(total);
    *mu_hi = (float)mu;
    *mu_lo = (float)(mu - (double)*mu_hi);
    total = 0.0;
    if (!fallback) {
      double dsum = 0.0;
      if (res == RES_WRITE)
        total = fwd_blocksum(SUM_DEV2, dt, RES_NONE, n, h, NULL, NULL, *mu_hi, *mu_lo, &dsum);
      else
        total = fwd_blocksum(SUM_DEV2, dt, res, n, x, r, NULL, *mu_hi, *mu_lo, &dsum);
      nk__rownorm_refine_mean(n, dsum, &total, mu_hi, mu_lo);
    }
  } else {
    total = fwd_blocksum(SUM_SQ, dt, res, n, x, r, h, 0.0f, 0.0f, NULL);
  }
  const double var = total / (double)n;
  if (fallback || nk__rownorm_needs_fallback(var, eps)) return 1;
  *rs = nk__rownorm_rstd(var, eps);
  return 0;
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

/* Parameters (gamma or beta) for nv 8-lane vectors: f32, or the activation dtype. */
NK_INLINE void load_params(__m256 *v, const void *p, size_t i, int nv, size_t k, nk_dtype dt,
                           int phalf, int full) {
  if (dt != NK_DTYPE_F32 && phalf)
    for (int j = 0; j < nv; j++) v[j] = load8(p, i + 8 * (size_t)j, k, dt, full);
  else
    for (int j = 0; j < nv; j++) v[j] = load8(p, i + 8 * (size_t)j, k, NK_DTYPE_F32, full);
}

/* One step of the output pass: nv = 4 full vectors (32 elements), or nv = 1 vector of which
 * the first k lanes are used (ST_PART). The run-time variant bits are tested once per step.
 *   xhat = RMSNorm ? h * rstd : ((h - mu_hi) - mu_lo) * rstd
 *   y = fmaf(xhat, g, b) | xhat * g | xhat + b | xhat,   g = gamma or 1 + gamma */
NK_INLINE void fwd_out_step(int is_rms, nk_dtype dt, uint32_t c, const fwd_out *o, size_t i,
                            int nv, size_t k, int kind) {
  const int full = kind != ST_PART;
  __m256 v[4], y[4];
  for (int j = 0; j < nv; j++) v[j] = load8(o->src, i + 8 * (size_t)j, k, dt, full);
  if (c & FO_R)
    for (int j = 0; j < nv; j++)
      v[j] = round8(_mm256_add_ps(v[j], load8(o->r, i + 8 * (size_t)j, k, dt, full)), dt);
  const __m256 rs = _mm256_set1_ps(o->rs);
  for (int j = 0; j < nv; j++)
    y[j] = is_rms ? _mm256_mul_ps(v[j], rs)
                  : _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(v[j], _mm256_set1_ps(o->mu_hi)),
                                                _mm256_set1_ps(o->mu_lo)),
                                  rs);
  if (c & (FO_GAMMA | FO_BETA)) {
    __m256 g[4], b[4];
    if (c & FO_GAMMA) {
      load_params(g, o->gamma, i, nv, k, dt, (c & FO_PHALF) != 0, full);
      if (c & FO_OFFSET)
        for (int j = 0; j < nv; j++) g[j] = _mm256_add_ps(_mm256_set1_ps(1.0f), g[j]);
    }
    if (c & FO_BETA) load_params(b, o->beta, i, nv, k, dt, (c & FO_PHALF) != 0, full);
    for (int j = 0; j < nv; j++)
      y[j] = (c & FO_GAMMA) ? ((c & FO_BETA) ? _mm256_fmadd_ps(y[j], g[j], b[j])
                                             : _mm256_mul_ps(y[j], g[j]))
                            : _mm256_add_ps(y[j], b[j]);
  }
  if (c & FO_SCALE)
    for (int j = 0; j < nv; j++) y[j] = _mm256_mul_ps(y[j], _mm256_set1_ps(o->scale));
  for (int j = 0; j < nv; j++) store8(o->y, i + 8 * (size_t)j, k, y[j], dt, kind);
  if (full && o->pf) { /* the next row's x: one 64-byte line per 16 f32 (per 32 halves) */
    if (o->pf_l2)
      for (int j = 0; j < nv; j += (dt == NK_DTYPE_F32 ? 2 : 4))
        _mm_prefetch(o->pf + (i + 8 * (size_t)j) * esize(dt), _MM_HINT_T1);
    else
      for (int j = 0; j < nv; j += (dt == NK_DTYPE_F32 ? 2 : 4))
        _mm_prefetch(o->pf + (i + 8 * (size_t)j) * esize(dt), _MM_HINT_T0);
  }
}

/* Elements [i, i + k): 8-lane steps, then the last k % 8 (regular stores). */
NK_INLINE void fwd_out_part(int is_rms, nk_dtype dt, uint32_t c, const fwd_out *o, size_t i,
                            size_t k) {
#pragma GCC unroll 1
  for (; k >= 8; i += 8, k -= 8) fwd_out_step(is_rms, dt, c, o, i, 1, 8, ST_FULL);
  if (k > 0) fwd_out_step(is_rms, dt, c, o, i, 1, k, ST_PART);
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
    fwd_out_part(is_rms, dt, c, o, 0, head);
    for (i = head; i + 32 <= n; i += 32) fwd_out_step(is_rms, dt, c, o, i, 4, 8, ST_STREAM);
  } else {
    for (; i + 32 <= n; i += 32) fwd_out_step(is_rms, dt, c, o, i, 4, 8, ST_FULL);
  }
  if (i < n) fwd_out_part(is_rms, dt, c, o, i, n - i);
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
  const size_t row_bytes = n * esize(dt);
  const int pf_l1 = row_bytes >= FWD_PF_MIN_BYTES && row_bytes <= FWD_PF_MAX_BYTES;
  const int pf_l2 = !pf_l1 && (c & FO_NT);
  for (size_t row = 0; row < rows; row++) {
    const void *xr = row_at(x, row, xs, dt);
    const void *rr = r ? row_at(r, row, rs_stride, dt) : NULL;
    void *yr = (void *)row_at(y, row, ys, dt);
    void *hr = h ? (void *)row_at(h, row, hs, dt) : NULL;
    float mu_hi, mu_lo, rs = 0.0f;
    int fallback;
    const void *src = xr; /* what the later passes read: h if written, else x (+ r) */
    if (rr != NULL && hr != NULL) {
      fallback = fwd_row_stats(is_rms, dt, RES_WRITE, n, xr, rr, hr, p->eps, &mu_hi, &mu_lo, &rs);
      src = hr;
      rr = NULL;
    } else if (rr != NULL) {
      fallback = fwd_row_stats(is_rms, dt, RES_R, n, xr, rr, NULL, p->eps, &mu_hi, &mu_lo, &rs);
    } else {
      fallback = fwd_row_stats(is_rms, dt, RES_NONE, n, xr, NULL, NULL, p->eps, &mu_hi, &mu_lo, &rs);
    }
    if (fallback) {
      nk__rownorm_fwd_row_f64(is_rms, n, dt, src, rr, yr, mean ? &mean[row] : NULL,
                              rstd ? &rstd[row] : NULL, p);
      continue;
    }
    const fwd_out o = {n, src, rr, yr, p->gamma, p->beta, mu_hi, mu_lo, rs,
                       (pf_l1 || pf_l2) && row + 1 < rows ? (const char *)row_at(x, row + 1, xs, dt) : NULL,
                       pf_l2, p->scale};
    fwd_out_pick(is_rms, dt, c, &o);
    if (mean) mean[row] = mu_hi;
    if (rstd) rstd[row] = rs;
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

/* The per-column vectors of a step of nv vectors, loaded once, with the run-time variant
 * tests once per step: the gain gn (gamma, or 1 + gamma), and from y the beta bt and the
 * ginv gi. Absent ones are bt = +0 and gi = 1: y - 0 == y and y * 1 == y for every y a row
 * that does not fall back can hold (no NaN), so the from-y xhat needs no test per vector. */
NK_INLINE void bwd_cols(nk_dtype dt, uint32_t c, const bwd_row *o, size_t i, int nv, size_t k,
                        int full, __m256 *gn, __m256 *bt, __m256 *gi) {
  const int phalf = (c & BO_PHALF) != 0;
  for (int j = 0; j < nv; j++) gn[j] = bt[j] = _mm256_setzero_ps(), gi[j] = _mm256_set1_ps(1.0f);
  if (c & BO_GAMMA) {
    load_params(gn, o->gamma, i, nv, k, dt, phalf, full);
    if (c & BO_OFFSET)
      for (int j = 0; j < nv; j++) gn[j] = _mm256_add_ps(_mm256_set1_ps(1.0f), gn[j]);
  }
  if (c & BO_FROMY) {
    if (c & BO_BETA) load_params(bt, o->beta, i, nv, k, dt, phalf, full);
    if (c & BO_GINV)
      for (int j = 0; j < nv; j++) gi[j] = load8(o->ginv, i + 8 * (size_t)j, k, NK_DTYPE_F32, full);
  }
}

/* For one vector (elements i .. i+7, the first k with full == 0): dy (g), gh = dy * gain (or
 * dy), and xhat:  from y: (y - b) * ginv;  RMSNorm: x * rstd;  LayerNorm from x: e = x - mean
 * (center == 0, the sums) or ((x - mean) - mu_lo) * rstd (center == 1, the output pass). */
NK_INLINE void bwd_term(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *o, size_t i,
                        size_t k, int full, __m256 gn, __m256 bt, __m256 gi, int center,
                        __m256 *g, __m256 *gh, __m256 *xh) {
  *g = load8(o->dy, i, k, dt, full);
  if (c & BO_SCALE) *g = _mm256_mul_ps(*g, _mm256_set1_ps(o->scale));
  *gh = (c & BO_GAMMA) ? _mm256_mul_ps(*g, gn) : *g;
  const __m256 v = load8(o->x, i, k, dt, full);
  if (c & BO_FROMY)
    *xh = _mm256_mul_ps(
        _mm256_sub_ps((c & BO_SCALE) ? _mm256_mul_ps(v, _mm256_set1_ps(o->scale_inv)) : v, bt), gi);
  else if (is_rms) *xh = _mm256_mul_ps(v, _mm256_set1_ps(o->rs));
  else if (!center) *xh = _mm256_sub_ps(v, _mm256_set1_ps(o->m));
  else
    *xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(v, _mm256_set1_ps(o->m)), _mm256_set1_ps(o->mu_lo)),
                        _mm256_set1_ps(o->rs));
}

/* The sums of one vector (scalar's bwd_rows first loop); lanes past the row end (full == 0:
 * only the first k are in the row) keep their value:
 *   LayerNorm from x: e = x - mean; A += gh; B = fmaf(gh, e, B); C += e
 *   otherwise:        A += gh (LayerNorm only); B = fmaf(gh, xhat, B) */
NK_INLINE void bwd_sum8(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *o, size_t i,
                        size_t k, int full, __m256 gn, __m256 bt, __m256 gi, __m256 *la,
                        __m256 *lb, __m256 *lc) {
  __m256 g, gh, xh;
  bwd_term(is_rms, dt, c, o, i, k, full, gn, bt, gi, 0, &g, &gh, &xh);
  if (!is_rms) *la = keep8(*la, _mm256_add_ps(*la, gh), k, full);
  *lb = keep8(*lb, _mm256_fmadd_ps(gh, xh, *lb), k, full);
  if (!is_rms && !(c & BO_FROMY)) *lc = keep8(*lc, _mm256_add_ps(*lc, xh), k, full);
}

/* One sweep over a block [b, e) for the lanes of vectors j0 .. j0+nv-1. */
NK_INLINE void bwd_sweep(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *o, size_t b,
                         size_t e, int j0, int nv, __m256 *la, __m256 *lb, __m256 *lc) {
  __m256 gn[4], bt[4], gi[4];
  size_t i = b;
  for (; i + LANES <= e; i += LANES) {
    const size_t i0 = i + 8 * (size_t)j0;
    bwd_cols(dt, c, o, i0, nv, 8, 1, gn, bt, gi);
    for (int j = 0; j < nv; j++)
      bwd_sum8(is_rms, dt, c, o, i0 + 8 * (size_t)j, 8, 1, gn[j], bt[j], gi[j], &la[j0 + j],
               &lb[j0 + j], &lc[j0 + j]);
  }
  if (i < e) { /* partial step, rotating the accumulators as in fwd_sweep */
    const size_t k = e - i;
#pragma GCC unroll 1
    for (int j = 0; j < nv; j++) {
      const size_t ij = i + 8 * (size_t)(j0 + j), kj = count_at(k, (size_t)(j0 + j));
      bwd_cols(dt, c, o, ij, 1, kj, 0, gn, bt, gi);
      bwd_sum8(is_rms, dt, c, o, ij, kj, 0, gn[0], bt[0], gi[0], &la[j0], &lb[j0], &lc[j0]);
      const __m256 ta = la[j0], tb = lb[j0], tc = lc[j0];
      for (int t = j0; t + 1 < j0 + nv; t++) la[t] = la[t + 1], lb[t] = lb[t + 1], lc[t] = lc[t + 1];
      la[j0 + nv - 1] = ta, lb[j0 + nv - 1] = tb, lc[j0 + nv - 1] = tc;
    }
  }
}

/* A, B, C = blocksums of the row (rownorm.h backward). The lanes are swept in groups small
 * enough for 16 ymm registers: RMSNorm (one sum) 2 x 4 vectors, LayerNorm (two or three sums)
 * 4 x 2 vectors. Each lane still adds its terms in increasing i. */
NK_INLINE void bwd_sums(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *o, double *A,
                        double *B, double *C) {
  const size_t n = o->n;
  const int sum_c = !is_rms && !(c & BO_FROMY);
  double ta = 0.0, tb = 0.0, tc = 0.0;
  for (size_t b = 0; b < n; b += BLOCK) {
    const size_t e = b + BLOCK < n ? b + BLOCK : n;
    __m256 la[8], lb[8], lc[8];
    for (int j = 0; j < 8; j++) la[j] = lb[j] = lc[j] = _mm256_setzero_ps();
    if (is_rms) {
      bwd_sweep(is_rms, dt, c, o, b, e, 0, 4, la, lb, lc);
      bwd_sweep(is_rms, dt, c, o, b, e, 4, 4, la, lb, lc);
    } else {
      bwd_sweep(is_rms, dt, c, o, b, e, 0, 2, la, lb, lc);
      bwd_sweep(is_rms, dt, c, o, b, e, 2, 2, la, lb, lc);
      bwd_sweep(is_rms, dt, c, o, b, e, 4, 2, la, lb, lc);
      bwd_sweep(is_rms, dt, c, o, b, e, 6, 2, la, lb, lc);
      ta += (double)fold64(la);
    }
    tb += (double)fold64(lb);
    if (sum_c) tc += (double)fold64(lc);
  }
  *A = ta;
  *B = tb;
  *C = tc;
}

/* dgamma_acc[i..i+8) += (double)dy * (double)xhat (exact product, so one FMA in double is the
 * same as scalar's product then sum); dbeta_acc[i..i+8) += (double)dy. */
NK_INLINE void bwd_param8(double *dg, double *db, size_t i, size_t k, int full, __m256 g,
                          __m256 xh) {
  const __m256d g0 = _mm256_cvtps_pd(_mm256_castps256_ps128(g));
  const __m256d g1 = _mm256_cvtps_pd(_mm256_extractf128_ps(g, 1));
  const __m256i m0 = mask4x64(k), m1 = mask4x64(k > 4 ? k - 4 : 0);
  if (dg) {
    double *q = dg + i;
    const __m256d x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(xh));
    const __m256d x1 = _mm256_cvtps_pd(_mm256_extractf128_ps(xh, 1));
    if (full) {
      _mm256_storeu_pd(q, _mm256_fmadd_pd(g0, x0, _mm256_loadu_pd(q)));
      _mm256_storeu_pd(q + 4, _mm256_fmadd_pd(g1, x1, _mm256_loadu_pd(q + 4)));
    } else {
      _mm256_maskstore_pd(q, m0, _mm256_fmadd_pd(g0, x0, _mm256_maskload_pd(q, m0)));
      _mm256_maskstore_pd(q + 4, m1, _mm256_fmadd_pd(g1, x1, _mm256_maskload_pd(q + 4, m1)));
    }
  }
  if (db) {
    double *q = db + i;
    if (full) {
      _mm256_storeu_pd(q, _mm256_add_pd(_mm256_loadu_pd(q), g0));
      _mm256_storeu_pd(q + 4, _mm256_add_pd(_mm256_loadu_pd(q + 4), g1));
    } else {
      _mm256_maskstore_pd(q, m0, _mm256_add_pd(_mm256_maskload_pd(q, m0), g0));
      _mm256_maskstore_pd(q + 4, m1, _mm256_add_pd(_mm256_maskload_pd(q + 4, m1), g1));
    }
  }
}

/* One step of the backward output (scalar's bwd_rows second loop): nv = 2 full vectors, or
 * nv = 1 vector of which the first k lanes are used (ST_PART); run-time tests once per step.
 *   dx = fmaf(-xhat, b, gh - a) * rstd (+ dh)   (RMSNorm: a = 0, and gh - 0 == gh) */
NK_INLINE void bwd_out_step(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *o, size_t i,
                            int nv, size_t k, int kind) {
  const int full = kind != ST_PART;
  __m256 gn[2], bt[2], gi[2], g[2], xh[2], d[2];
  bwd_cols(dt, c, o, i, nv, k, full, gn, bt, gi);
  for (int j = 0; j < nv; j++) {
    __m256 gh;
    bwd_term(is_rms, dt, c, o, i + 8 * (size_t)j, k, full, gn[j], bt[j], gi[j], 1, &g[j], &gh,
             &xh[j]);
    const __m256 t = is_rms ? gh : _mm256_sub_ps(gh, _mm256_set1_ps(o->a));
    d[j] = _mm256_mul_ps(_mm256_fnmadd_ps(xh[j], _mm256_set1_ps(o->b), t), _mm256_set1_ps(o->rs));
  }
  if (c & BO_DH)
    for (int j = 0; j < nv; j++) d[j] = _mm256_add_ps(d[j], load8(o->dh, i + 8 * (size_t)j, k, dt, full));
  for (int j = 0; j < nv; j++) store8(o->dx, i + 8 * (size_t)j, k, d[j], dt, kind);
  if (full && o->pfx && nv == 2 && (dt != NK_DTYPE_F32 ? (i & 31) == 0 : 1)) {
    /* one 64-byte line of each per 16 elements of f32 (per 32 of halves) */
    _mm_prefetch(o->pfx + i * esize(dt), _MM_HINT_T1);
    _mm_prefetch(o->pfdy + i * esize(dt), _MM_HINT_T1);
  }
  if (o->dg || o->db)
    for (int j = 0; j < nv; j++) bwd_param8(o->dg, o->db, i + 8 * (size_t)j, k, full, g[j], xh[j]);
}

/* Elements [i, i + k): 8-lane steps, then the last k % 8 (regular stores). */
NK_INLINE void bwd_out_part(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *o, size_t i,
                            size_t k) {
#pragma GCC unroll 1
  for (; k >= 8; i += 8, k -= 8) bwd_out_step(is_rms, dt, c, o, i, 1, 8, ST_FULL);
  if (k > 0) bwd_out_step(is_rms, dt, c, o, i, 1, k, ST_PART);
}

NK_INLINE void bwd_out_row(int is_rms, nk_dtype dt, uint32_t c, const bwd_row *po) {
  const bwd_row local = *po, *o = &local; /* see fwd_out_row */
  const size_t n = o->n;
  size_t i = 0;
  if (c & BO_NT) {
    const size_t head = head_to_align64(o->dx, n, dt);
    bwd_out_part(is_rms, dt, c, o, 0, head);
    for (i = head; i + 16 <= n; i += 16) bwd_out_step(is_rms, dt, c, o, i, 2, 8, ST_STREAM);
  } else {
    for (; i + 16 <= n; i += 16) bwd_out_step(is_rms, dt, c, o, i, 2, 8, ST_FULL);
  }
  if (i < n) bwd_out_part(is_rms, dt, c, o, i, n - i);
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

void nk_f32_layernorm_fwd__avx2_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                    const void *r, ptrdiff_t r_stride, void *y,
                                    ptrdiff_t y_stride, void *h, ptrdiff_t h_stride,
                                    float *mean, float *rstd, const nk_rownorm_params *params) {
  fwd_kernel(0, NK_DTYPE_F32, rows, cols, x, x_stride, r, r_stride, y, y_stride, h, h_stride,
             mean, rstd, params);
}

void nk_bf16_layernorm_fwd__avx2_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                     const void *r, ptrdiff_t r_stride, void *y,
                                     ptrdiff_t y_stride, void *h, ptrdiff_t h_stride,
                                     float *mean, float *rstd, const nk_rownorm_params *params) {
  fwd_kernel(0, NK_DTYPE_BF16, rows, cols, x, x_stride, r, r_stride, y, y_stride, h, h_stride,
             mean, rstd, params);
}

void nk_f16_layernorm_fwd__avx2_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                    const void *r, ptrdiff_t r_stride, void *y,
                                    ptrdiff_t y_stride, void *h, ptrdiff_t h_stride,
                                    float *mean, float *rstd, const nk_rownorm_params *params) {
  fwd_kernel(0, NK_DTYPE_F16, rows, cols, x, x_stride, r, r_stride, y, y_stride, h, h_stride,
             mean, rstd, params);
}

void nk_f32_rmsnorm_fwd__avx2_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                  const void *r, ptrdiff_t r_stride, void *y, ptrdiff_t y_stride,
                                  void *h, ptrdiff_t h_stride, float *mean, float *rstd,
                                  const nk_rownorm_params *params) {
  fwd_kernel(1, NK_DTYPE_F32, rows, cols, x, x_stride, r, r_stride, y, y_stride, h, h_stride,
             mean, rstd, params);
}

void nk_bf16_rmsnorm_fwd__avx2_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                   const void *r, ptrdiff_t r_stride, void *y,
                                   ptrdiff_t y_stride, void *h, ptrdiff_t h_stride, float *mean,
                                   float *rstd, const nk_rownorm_params *params) {
  fwd_kernel(1, NK_DTYPE_BF16, rows, cols, x, x_stride, r, r_stride, y, y_stride, h, h_stride,
             mean, rstd, params);
}

void nk_f16_rmsnorm_fwd__avx2_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                  const void *r, ptrdiff_t r_stride, void *y, ptrdiff_t y_stride,
                                  void *h, ptrdiff_t h_stride, float *mean, float *rstd,
                                  const nk_rownorm_params *params) {
  fwd_kernel(1, NK_DTYPE_F16, rows, cols, x, x_stride, r, r_stride, y, y_stride, h, h_stride,
             mean, rstd, params);
}

void nk_f32_layernorm_bwd__avx2_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                    const void *dy, ptrdiff_t dy_stride, const void *dh,
                                    ptrdiff_t dh_stride, const float *mean, const float *rstd,
                                    void *dx, ptrdiff_t dx_stride, double *dgamma_acc,
                                    double *dbeta_acc, const nk_rownorm_params *params) {
  bwd_kernel(0, NK_DTYPE_F32, rows, cols, x, x_stride, dy, dy_stride, dh, dh_stride, mean, rstd,
             dx, dx_stride, dgamma_acc, dbeta_acc, params);
}

void nk_bf16_layernorm_bwd__avx2_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                     const void *dy, ptrdiff_t dy_stride, const void *dh,
                                     ptrdiff_t dh_stride, const float *mean, const float *rstd,
                                     void *dx, ptrdiff_t dx_stride, double *dgamma_acc,
                                     double *dbeta_acc, const nk_rownorm_params *params) {
  bwd_kernel(0, NK_DTYPE_BF16, rows, cols, x, x_stride, dy, dy_stride, dh, dh_stride, mean, rstd,
             dx, dx_stride, dgamma_acc, dbeta_acc, params);
}

void nk_f16_layernorm_bwd__avx2_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                    const void *dy, ptrdiff_t dy_stride, const void *dh,
                                    ptrdiff_t dh_stride, const float *mean, const float *rstd,
                                    void *dx, ptrdiff_t dx_stride, double *dgamma_acc,
                                    double *dbeta_acc, const nk_rownorm_params *params) {
  bwd_kernel(0, NK_DTYPE_F16, rows, cols, x, x_stride, dy, dy_stride, dh, dh_stride, mean, rstd,
             dx, dx_stride, dgamma_acc, dbeta_acc, params);
}

void nk_f32_rmsnorm_bwd__avx2_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                  const void *dy, ptrdiff_t dy_stride, const void *dh,
                                  ptrdiff_t dh_stride, const float *mean, const float *rstd,
                                  void *dx, ptrdiff_t dx_stride, double *dgamma_acc,
                                  double *dbeta_acc, const nk_rownorm_params *params) {
  bwd_kernel(1, NK_DTYPE_F32, rows, cols, x, x_stride, dy, dy_stride, dh, dh_stride, mean, rstd,
             dx, dx_stride, dgamma_acc, dbeta_acc, params);
}

void nk_bf16_rmsnorm_bwd__avx2_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                   const void *dy, ptrdiff_t dy_stride, const void *dh,
                                   ptrdiff_t dh_stride, const float *mean, const float *rstd,
                                   void *dx, ptrdiff_t dx_stride, double *dgamma_acc,
                                   double *dbeta_acc, const nk_rownorm_params *params) {
  bwd_kernel(1, NK_DTYPE_BF16, rows, cols, x, x_stride, dy, dy_stride, dh, dh_stride, mean, rstd,
             dx, dx_stride, dgamma_acc, dbeta_acc, params);
}

void nk_f16_rmsnorm_bwd__avx2_u64(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                  const void *dy, ptrdiff_t dy_stride, const void *dh,
                                  ptrdiff_t dh_stride, const float *mean, const float *rstd,
                                  void *dx, ptrdiff_t dx_stride, double *dgamma_acc,
                                  double *dbeta_acc, const nk_rownorm_params *params) {
  bwd_kernel(1, NK_DTYPE_F16, rows, cols, x, x_stride, dy, dy_stride, dh, dh_stride, mean, rstd,
             dx, dx_stride, dgamma_acc, dbeta_acc, params);
}
