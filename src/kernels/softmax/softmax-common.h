/*
 * softmax-common.h — the ISA-independent steps of the canonical softmax arithmetic (softmax.h):
 * the constants of exp, the double-precision combine rules of the block totals (two-pass
 * (Md, Nd), online (mD, dD)), the two-pass range test, the row outcome and the per-row
 * coefficients (lambda, log terms, lse), the cross-entropy loss and dx coefficients, and the
 * canonical NaNs. Static inline, compiled into every ISA file; plain IEEE double code with no
 * contraction (-ffp-contract=off), so it gives the same bits in every file. exp/log of double
 * are libm's (the same function in every file of one binary).
 */
#ifndef NK_KERNELS_SOFTMAX_COMMON_H
#define NK_KERNELS_SOFTMAX_COMMON_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- constants (softmax.h "exp(t)") -------------------------------------------------------- */

#define NK_SM_EXP_LO (-0x1.Ap+6f)       /* -104 */
#define NK_SM_EXP_HI 0x1.63p+6f         /* 88.75 */
#define NK_SM_LOG2E 0x1.715476p+0f
#define NK_SM_LN2_HI 0x1.62E400p-1f
#define NK_SM_LN2_LO 0x1.7F7D1Cp-20f
#define NK_SM_C1 0x1.FFFFF6p-1f
#define NK_SM_C2 0x1.FFFDC6p-2f
#define NK_SM_C3 0x1.555A80p-3f
#define NK_SM_C4 0x1.573A1Ap-5f
#define NK_SM_C5 0x1.0F9F9Cp-7f
#define NK_SM_LN2_D 0x1.62E42FEFA39EFp-1 /* ln 2 in double */
#define NK_SM_RANGE 0x1p22f                /* two-pass range limit of m */
#define NK_SM_SCALE_MIN (-160.0f)          /* two-pass pass-2 exponent floor */

#define NK_SM_NAN_BITS 0x7FC00000u
#define NK_SM_NAN_BITS_D 0x7FF8000000000000ull

static inline float nk__sm_nan(void) {
  const uint32_t u = NK_SM_NAN_BITS;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static inline double nk__sm_nan_d(void) {
  const uint64_t u = NK_SM_NAN_BITS_D;
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

/* ---- two-pass: (M, N) totals --------------------------------------------------------------- */

/* g(d) = 2^d for d >= -1000, else 0 (NaN and -inf included). d <= 0 here (N is the max). */
static inline double nk__sm_g(double d) { return d >= -1000.0 ? ldexp(1.0, (int)d) : 0.0; }

/* (Md, Nd) (+) (Mb, Nb): N = max(Nd, Nb) (a NaN Nb is ignored), Md = Md g(Nd - N) + Mb g(Nb - N). */
static inline void nk__sm_mn_join(double *Md, double *Nd, float Mb, float Nb) {
  const double nb = (double)Nb;
  const double N = nb > *Nd ? nb : *Nd;
  *Md = *Md * nk__sm_g(*Nd - N) + (double)Mb * nk__sm_g(nb - N);
  *Nd = N;
}

/* The range test of the two-pass algorithm (and of cross-entropy): m = max_j z_j (with the
 * sink), NaN ignored. 1: the row takes the three-pass recompute definition. */
static inline int nk__sm_out_of_range(float m) {
  return m != -INFINITY && (m >= NK_SM_RANGE || m <= -NK_SM_RANGE);
}

/* ---- online: (m, d) totals ----------------------------------------------------------------- */

/* Ed(a, b) = (a == -inf) ? 0 : exp(a - b), double (libm). */
static inline double nk__sm_Ed(double a, double b) { return a == -INFINITY ? 0.0 : exp(a - b); }

/* (mD, dD) (+) (mb, db): m = max (a NaN mb is ignored), dD = dD Ed(mD, m) + db Ed(mb, m). */
static inline void nk__sm_md_join(double *mD, double *dD, float mb, float db) {
  const double b = (double)mb;
  const double m = b > *mD ? b : *mD;
  *dD = *dD * nk__sm_Ed(*mD, m) + (double)db * nk__sm_Ed(b, m);
  *mD = m;
}

/* ---- row outcome and coefficients ---------------------------------------------------------- */

enum { NK_SM_NORMAL = 0, NK_SM_NANROW = 1, NK_SM_MASKED = 2 };

typedef struct nk__sm_fin {
  int outcome;  /* NK_SM_NORMAL, NK_SM_NANROW (canonical NaN row), NK_SM_MASKED */
  float m;      /* three-pass / online: the max subtracted */
  float lambda; /* softmax: the scale of the exponentials */
  float ls;     /* three-pass log: (float)log(S);  two-pass: Lh */
  float ll;     /* two-pass log: Ll */
  float nf;     /* two-pass: (float)Nd */
  float lse;    /* the value written to *lse */
} nk__sm_fin;

/* The value of every y of a fully masked (NK_SM_MASKED) row and its lse. */
static inline float nk__sm_masked_y(int log, int masked_nan) {
  return masked_nan ? nk__sm_nan() : log ? -INFINITY : 0.0f;
}
static inline float nk__sm_masked_lse(int masked_nan) {
  return masked_nan ? nk__sm_nan() : -INFINITY;
}

/* Three-pass and online, after the sums: m (already m + 0) and S. The three-pass caller with
 * m == -inf forms no sum: it passes S = NaN when a z_j or the sink is NaN, else 0. */
static inline void nk__sm_three_finish(float m, double S, int masked_nan, nk__sm_fin *f) {
  memset(f, 0, sizeof *f);
  f->m = m;
  if (isnan(S)) {
    f->outcome = NK_SM_NANROW;
    f->lse = nk__sm_nan();
  } else if (m == -INFINITY) {
    f->outcome = NK_SM_MASKED;
    f->lse = nk__sm_masked_lse(masked_nan);
  } else {
    const double lg = log(S);
    f->outcome = NK_SM_NORMAL;
    f->lambda = (float)(1.0 / S);
    f->ls = (float)lg;
    f->lse = (float)((double)m + lg);
  }
}

/* log S of the split three-pass sum S = ones + R (see nk__sm_three_finish_split). */
static inline double nk__sm_log_split(double ones, double R) {
  return ones >= 1.0 ? log1p((ones - 1.0) + R) : log(R);
}

/* The sink's term es = exp(sink - m) of the split three-pass sum: counted when it is exactly
 * 1.0f (the sink is the maximum), else added to R. */
static inline void nk__sm_three_add_sink(float es, double *ones, double *R) {
  if (es == 1.0f)
    *ones += 1.0;
  else
    *R += (double)es;
}

/* Three-pass, after the sums: S = ones + R, where `ones` counts the terms e_j (and the sink
 * term) equal to exactly 1.0f and R sums the others (softmax.h). log S = log1p((ones - 1) + R)
 * when ones >= 1: exact for rows dominated by their max, where a plain f32 sum would absorb
 * the small terms into the 1 and lose log S ~ R altogether. m == -inf as nk__sm_three_finish. */
static inline void nk__sm_three_finish_split(float m, double ones, double R, int masked_nan,
                                             nk__sm_fin *f) {
  nk__sm_three_finish(m, ones + R, masked_nan, f);
  if (f->outcome != NK_SM_NORMAL || ones < 1.0) return;
  const double lg = nk__sm_log_split(ones, R);
  f->ls = (float)lg;
  f->lse = (float)((double)m + lg);
}

/* L = Nd ln2 + log(Md), the log of the two-pass sum. */
static inline double nk__sm_two_L(double Md, double Nd) { return Nd * NK_SM_LN2_D + log(Md); }

/* Two-pass, after the sums (the sink joined). */
static inline void nk__sm_two_finish(double Md, double Nd, int masked_nan, nk__sm_fin *f) {
  memset(f, 0, sizeof *f);
  if (isnan(Md)) {
    f->outcome = NK_SM_NANROW;
    f->lse = nk__sm_nan();
  } else if (Nd == -INFINITY) {
    f->outcome = NK_SM_MASKED;
    f->lse = nk__sm_masked_lse(masked_nan);
  } else {
    const double L = nk__sm_two_L(Md, Nd);
    const float Lh = (float)L;
    f->outcome = NK_SM_NORMAL;
    f->lambda = (float)(1.0 / Md);
    f->nf = (float)Nd;
    f->ls = Lh;
    f->ll = (float)(L - (double)Lh);
    f->lse = Lh;
  }
}

/* ---- backward ------------------------------------------------------------------------------ */

/* D = blocksum(g y) (softmax) split into Dh + Dl; 0 if D is not finite (NaN row). */
static inline int nk__sm_bwd_split(double D, float *Dh, float *Dl) {
  if (!isfinite(D)) return 0;
  *Dh = (float)D;
  *Dl = (float)(D - (double)*Dh);
  return 1;
}

/* ---- cross-entropy ------------------------------------------------------------------------- */

typedef struct nk__sm_xent {
  int nanrow;       /* L NaN or -inf: dx row canonical NaN, loss canonical NaN */
  float a, b, bt;   /* dx_j = fma(p_j, a, b); dx_t = fma(p_t, a, bt); a = +-inf (overflow):
                       p_j == 0 gives b (bt), not 0 * inf = NaN (softmax.h) */
  double loss;
  float lse;
} nk__sm_xent;

/* From L (two-pass or three-pass fallback), T = blocksum(z_j) (0 when smoothing == 0), z_t. */
static inline void nk__sm_xent_finish(double L, double T, float zt, size_t n, float smoothing,
                                      float z_loss, double grad_w, nk__sm_xent *o) {
  memset(o, 0, sizeof *o);
  if (isnan(L) || L == -INFINITY) {
    o->nanrow = 1;
    o->loss = nk__sm_nan_d();
    o->lse = isnan(L) ? nk__sm_nan() : -INFINITY;
    return;
  }
  const double ls = (double)smoothing, zl = (double)z_loss, dn = (double)n, c = grad_w;
  /* A term whose weight is 0 is left out, not multiplied by 0: with full smoothing a -inf
   * target logit (L - z_t = inf) must not turn the (infinite) loss into NaN, nor a -inf
   * logit elsewhere (T = -inf) the unsmoothed loss. */
  const double hard = ls != 1.0 ? (1.0 - ls) * (L - (double)zt) : 0.0;
  const double soft = ls != 0.0 ? ls * (L - T / dn) : 0.0;
  o->loss = hard + soft + zl * L * L;
  o->lse = (float)L;
  o->a = (float)(c * (1.0 + 2.0 * zl * L));
  o->b = (float)(-c * ls / dn);
  o->bt = (float)(-c * (ls / dn + (1.0 - ls)));
}

#endif /* NK_KERNELS_SOFTMAX_COMMON_H */
