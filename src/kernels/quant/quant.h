/*
 * quant.h — the micro-kernel contract of the "normq" family: a row statistic (none, LayerNorm,
 * RMSNorm or FakeLN), the affine map, and one of three outputs (a float row in the activation
 * dtype, int8 with one absmax scale per row, or int b-bit with one power-of-two scale per group
 * of consecutive elements). It serves nk_layernorm_fwd_q8, nk_rmsnorm_fwd_q8, nk_fakeln_fwd(_q8)
 * and nk_pow2quant_quantize. One list (quant.inc) declares every kernel.
 *
 * The canonical arithmetic (scalar.c is its definition; every ISA reproduces it bit for bit):
 *
 *   h_i = x_i, or dtype(x_i + r_i) (written to h in the first pass when h is wanted; later
 *   passes read h, or recompute x + r when h is not written).
 *   Statistics: exactly the row-norm family's (kernels/rownorm/rownorm.h): the same blocksum
 *   (blocks of 1024, 64 f32 lanes, fixed fold tree, double total), the same shift K = h_0,
 *   mean split mu_hi/mu_lo, corrected two-pass refinement (nk__rownorm_refine_mean), rstd and
 *   fallback test. FakeLN: the LayerNorm mean (passes 1 and 2, where pass 2 needs only
 *   D = blocksum(d_i)), and rstd = inv_sigma, the caller's f32 1/sigma_bar.
 *     xhat_i = h_i * rstd (RMS), ((h_i - mu_hi) - mu_lo) * rstd (LN, FakeLN), h_i (none)
 *     y_i    = fmaf(xhat_i, g_i, b_i) | xhat_i * g_i | xhat_i + b_i | xhat_i (as rownorm)
 *   Rows whose statistics the f32 sums cannot handle (rownorm's fallback test: NaN/inf, sums
 *   that overflow, tiny variance with tiny eps) go to nk__normq_row_f64 (fallback.c), shared by
 *   every ISA: statistics in double, y_i = affine((float)((h_i - mu) * rstd)) in double, the
 *   outputs with the scalar helpers below. A row with NaN or inf in h is a NaN row.
 *
 *   Outputs (per row; all helpers below are the one definition every ISA calls):
 *   OUT_Y:    y_i stored to dtype (round to nearest even).
 *   OUT_ROW:  A = max_i |y_i| taken on the bit patterns (exact, order-free; NaN above inf).
 *             A not finite: q_i = 0, scale = NaN. A == 0: q_i = 0, scale = 0. Otherwise
 *             (nk__q8_row_factors) pre = 2^64 if A < 2^-100 else 1, inv = (float)(127 /
 *             ((double)A * pre)), scale = (float)(A / 127.0), and
 *             q_i = clamp(rint((y_i * pre) * inv), -127, 127)   (the "* pre" only if pre != 1).
 *   OUT_POW2: groups [kG, kG + G) of the row (the last one may be shorter); per group
 *             M = max |y_i| on the bits; M not finite: e = NK_POW2QUANT_EXP_NAN (-128), q = 0;
 *             M == 0: e = -127, q = 0; else e = nk__pow2_exp(M, Q) (the least integer with
 *             M <= Q * 2^e, clamped to [-127, 127]), f = 2^-e (exact f32: 2^-127 is the
 *             subnormal 0x00400000... only for e = 127), v_i = y_i * f,
 *             q_i = clamp(rint(v_i), -Q, Q), or with stochastic rounding
 *             q_i = clamp(floor(v_i + u_i), -Q, Q), u_i = (hash >> 8) * 2^-24 (nk__sr_u).
 *   rint is round-half-even in the default floating-point environment (all ISAs use it).
 *
 * Kernel rules: kernels process a range of rows; they never allocate, validate or log. Outputs
 * may be the very same buffers as inputs where the operator allows it (h may be x or r); every
 * pass reads an element before writing it at the same index.
 */
#ifndef NK_KERNELS_QUANT_H
#define NK_KERNELS_QUANT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "normkit.h"

#include "../arch.h"

#define NK_NORMQ_LANES 64
#define NK_NORMQ_BLOCK 1024

/* nk_normq_params.variant bits */
#define NK_NORMQ_HAS_GAMMA 0x1u
#define NK_NORMQ_HAS_BETA 0x2u
#define NK_NORMQ_OFFSET 0x4u /* g = 1 + gamma */
#define NK_NORMQ_STOCHASTIC 0x8u /* OUT_POW2: stochastic rounding */
#define NK_NORMQ_PREFETCH 0x10u  /* large working set: prefetch the next row into L2 (no bit changes) */
#define NK_NORMQ_NONTEMPORAL 0x20u /* OUT_Y: streaming stores from the row's first 64-byte
                                      boundary on (large outputs; no bit changes) */

/* statistics */
#define NK_NORMQ_STAT_NONE 0
#define NK_NORMQ_STAT_LN 1
#define NK_NORMQ_STAT_RMS 2
#define NK_NORMQ_STAT_FAKE 3
/* outputs */
#define NK_NORMQ_OUT_Y 0
#define NK_NORMQ_OUT_ROW 1
#define NK_NORMQ_OUT_POW2 2

typedef struct nk_normq_params {
  const void *gamma;    /* cols elements of param_dtype, or NULL */
  const void *beta;
  nk_dtype param_dtype; /* NK_DTYPE_F32 or the activation dtype */
  uint32_t variant;     /* NK_NORMQ_* bits */
  int stat, out;        /* NK_NORMQ_STAT_*, NK_NORMQ_OUT_* */
  float eps;            /* LN, RMS */
  float inv_sigma;      /* FakeLN: rstd = 1 / sigma_bar (f32) */
  int qmax;             /* OUT_POW2: Q = 2^(bits-1) - 1; OUT_ROW uses 127 */
  size_t group;         /* OUT_POW2: elements per group, >= 1 */
  uint64_t seed;        /* stochastic rounding */
  size_t row0;          /* global index of the kernel's row 0 (for the rounding hash) */
} nk_normq_params;

/* Rows [0, rows): every pointer points at the first row to process. out holds y (dtype,
 * OUT_Y) or int8 (otherwise), out_stride elements; scale: rows floats (OUT_ROW); exps: int8,
 * exp_stride per row (OUT_POW2); r, h, mean, rstd may be NULL. */
typedef void (*nk_normq_ukernel_fn)(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride,
                                    const void *r, ptrdiff_t r_stride, void *h,
                                    ptrdiff_t h_stride, void *out, ptrdiff_t out_stride,
                                    float *scale, int8_t *exps, ptrdiff_t exp_stride,
                                    float *mean, float *rstd, const nk_normq_params *params);

typedef struct nk_normq_entry {
  nk_isa isa;
  nk_dtype dtype;
  nk_normq_ukernel_fn fn;
  const char *name;
} nk_normq_entry;

#define NK_UKERNEL_NORMQ(isa, dtype, fn)                                                         \
  void fn(size_t rows, size_t cols, const void *x, ptrdiff_t x_stride, const void *r,           \
          ptrdiff_t r_stride, void *h, ptrdiff_t h_stride, void *out, ptrdiff_t out_stride,    \
          float *scale, int8_t *exps, ptrdiff_t exp_stride, float *mean, float *rstd,          \
          const nk_normq_params *params);
#include "quant.inc"
#undef NK_UKERNEL_NORMQ

/* The kernel for (isa, dtype), stepping down avx512 -> avx2 -> scalar (dispatch-quant.c). */
const nk_normq_entry *nk__select_normq(nk_isa isa, nk_dtype dtype);

/* One row that the f32 statistics cannot handle (see above), shared by every ISA. h is the
 * row's normalized input (x, or x + r when r != NULL: not yet rounded, the routine rounds).
 * Writes the outputs of that row (out row, *scale, exps row, *mean, *rstd as given). */
void nk__normq_row_f64(size_t n, nk_dtype dt, const void *x, const void *r, void *out,
                       float *scale, int8_t *exps, float *mean, float *rstd, size_t row,
                       const nk_normq_params *p);

/* ---- scalar helpers shared by every ISA (one definition of each rounding step) ------------ */

#define NK_NORMQ_EXP_NAN (-128)
#define NK_NORMQ_EXP_MIN (-127)

static inline float nk__normq_f32(uint32_t u) {
  union {
    uint32_t u;
    float f;
  } c;
  c.u = u;
  return c.f;
}

static inline uint32_t nk__normq_bits(float f) {
  union {
    uint32_t u;
    float f;
  } c;
  c.f = f;
  return c.u;
}

/* OUT_ROW factors from the absmax bits A (sign cleared). Returns 0 for a NaN/inf row (scale NaN,
 * q 0), 1 for a zero row (scale 0, q 0), 2 otherwise (q = rint((y * pre) * inv)). */
static inline int nk__q8_row_factors(uint32_t abits, float *pre, float *inv, float *scale) {
  *pre = 1.0f;
  *inv = 0.0f;
  if (abits >= 0x7F800000u) {
    *scale = nk__normq_f32(0x7FC00000u);
    return 0;
  }
  if (abits == 0) {
    *scale = 0.0f;
    return 1;
  }
  const float a = nk__normq_f32(abits);
  if (a < 0x1p-100f) *pre = 0x1p64f;
  *inv = (float)(127.0 / ((double)a * (double)*pre));
  *scale = (float)((double)a / 127.0);
  return 2;
}

/* The least integer e with m <= q * 2^e, for finite m > 0 and q >= 1, clamped to [-127, 127].
 * With q in [2^(k-1), 2^k) (k = bits of q), e is E - k + 1 or E - k + 2, E = floor(log2 m).
 * Normal m = M 2^(E-23) (M the 24-bit significand): m > q 2^(E-k+1) iff M > q 2^(24-k), an
 * integer comparison; subnormal m take the same steps in double. */
static inline int nk__pow2_exp(float m, int q) {
  const uint32_t u = nk__normq_bits(m);
  const int k = 32 - __builtin_clz((unsigned)q);
  int e;
  if (u >= 0x00800000u) {
    const int E = (int)(u >> 23) - 127;
    const uint32_t M = (u & 0x007FFFFFu) | 0x00800000u;
    e = E - k + 1 + (M > ((uint32_t)q << (24 - k)));
  } else {
    int E;
    (void)frexp((double)m, &E); /* m = f 2^E, f in [0.5, 1): floor(log2 m) = E - 1 */
    E -= 1;
    e = E - k + 1;
    if ((double)m > ldexp((double)q, e)) e++;
  }
  if (e < NK_NORMQ_EXP_MIN) e = NK_NORMQ_EXP_MIN;
  if (e > 127) e = 127;
  return e;
}

/* 2^-e as an exact f32, e in [-127, 127] (2^-127 is the subnormal 0x00400000). */
static inline float nk__pow2_factor(int e) {
  const int k = -e;
  return k >= -126 ? nk__normq_f32((uint32_t)(127 + k) << 23) : nk__normq_f32(0x00400000u);
}

/* The group exponent from the group's absmax bits, NK_NORMQ_EXP_NAN when not finite. */
static inline int nk__pow2_group_exp(uint32_t mbits, int q) {
  if (mbits >= 0x7F800000u) return NK_NORMQ_EXP_NAN;
  if (mbits == 0) return NK_NORMQ_EXP_MIN;
  return nk__pow2_exp(nk__normq_f32(mbits), q);
}

/* The stochastic-rounding hash (lowbias32 by C. Wellons): per row a key from the seed and the
 * global row index, per element hash(key ^ column). u = (hash >> 8) * 2^-24, in [0, 1). */
static inline uint32_t nk__sr_mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

static inline uint32_t nk__sr_rowkey(uint64_t seed, uint64_t row) {
  uint32_t k = nk__sr_mix((uint32_t)seed ^ 0x9E3779B9u);
  k = nk__sr_mix(k ^ (uint32_t)(seed >> 32));
  k = nk__sr_mix(k ^ (uint32_t)row);
  return nk__sr_mix(k ^ (uint32_t)(row >> 32));
}

static inline float nk__sr_u(uint32_t rowkey, size_t col) {
  return (float)(nk__sr_mix(rowkey ^ (uint32_t)col) >> 8) * 0x1p-24f;
}

/* q from v: round half even (or floor(v + u)), clamped to [-Q, Q]. */
static inline int8_t nk__q_clamp(float t, int q) {
  const float fq = (float)q;
  t = t > fq ? fq : t;
  t = t < -fq ? -fq : t;
  return (int8_t)(int)t;
}

#endif /* NK_KERNELS_QUANT_H */
