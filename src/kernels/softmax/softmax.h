/*
 * softmax.h — the micro-kernel contract of the softmax family: softmax and log-softmax forward
 * (four algorithms) and backward, fused cross-entropy, sigmoid attention scores, and normkit's
 * exp. One list (softmax.inc) declares every kernel; the dispatcher, the kernel test and the
 * benchmark expand it. Kernels work on ONE row (the operator loops over rows and threads).
 *
 * The canonical arithmetic (every ISA reproduces it bit for bit; scalar.c is its definition).
 * All f32 operations are IEEE single operations rounded to nearest even (default MXCSR); fma is
 * a fused multiply-add (fmaf on the scalar path); "double" steps are plain C double code shared
 * by every ISA (softmax-common.h).
 *
 * exp(t) (nk_exp, every exponential below):
 *   t = min(max(t, -104), 88.75)   (NaN passes through: NaN in, NaN out)
 *   n = rint(t * LOG2E)            (f32 multiply, round to nearest even; n in [-150, 128])
 *   r = fma(n, -LN2_HI, t); r = fma(n, -LN2_LO, r)
 *   p = C5; p = fma(p, r, C4); p = fma(p, r, C3); p = fma(p, r, C2); p = fma(p, r, C1);
 *   p = fma(p, r, 1)
 *   exp(t) = RN(p * 2^n)  — correctly rounded product, subnormal results included, inf above
 *   (scalar: ldexpf; AVX-512: vscalefps; AVX2: (p * 2^(n>>1)) * 2^(n - (n>>1)), exact first
 *   product, one rounding).
 *   LOG2E = 0x1.715476p+0, LN2_HI = 0x1.62E400p-1, LN2_LO = 0x1.7F7D1Cp-20,
 *   C1..C5 = 0x1.FFFFF6p-1, 0x1.FFFDC6p-2, 0x1.555A80p-3, 0x1.573A1Ap-5, 0x1.0F9F9Cp-7.
 *
 * extexp(z) (two-pass and cross-entropy): z = m * 2^n, m in about [0.7, 1.42]:
 *   n = rint(z * LOG2E); r = fma(n, -LN2_HI, z); r = fma(n, -LN2_LO, r);
 *   r = min(1, max(-1, r)) with NaN passing (max(-1, r) = (-1 > r) ? -1 : r, then
 *   (1 < r) ? 1 : r): keeps p finite for |z| >= 2^22, where the reduction is inexact (such rows
 *   are recomputed, see below);  p = the polynomial above;  z == -inf gives (p, n) = (0, -inf).
 *   Scale factor f(d) = 2^d for d >= -126 (exact), 0 otherwise (NaN and -inf included).
 *
 * Logits of a forward row (nk_softmax_row):  for j < n_valid
 *   z_j = x_j * scale;  z_j = z_j + mask_j (with a mask);  z_j = z_j + alibi * ((float)j - pos)
 *   (when alibi != 0: the subtraction, the product and the sum each rounded to f32).
 *   Elements j >= n_valid are not read: they are -inf (y = 0; log: -inf).
 *
 * blocksum(t_0..t_{k-1}): as the row norms (rownorm.h): blocks of 1024 consecutive elements,
 *   64 f32 lanes (lane l adds the terms with j % 64 == l, in increasing j, from +0), folded at
 *   the end of each block by lane[k] += lane[k + s], s = 32, 16, 8, 4, 2, 1, lane[0] added to a
 *   double total in block order. Sums of products use one fma per term.
 *
 * Three-pass (reload and recompute give the same bits):
 *   m = max_j z_j (any order), m = max(m, sink) with a sink, then m = m + 0 (-0 -> +0).
 *   m == -inf: fully masked row (below).  e_j = exp(z_j - m) (f32 subtraction).
 *   S = ones + R: the terms e_j equal to 1.0f (z_j == m, or within 2^-25 of it) are counted
 *   (ones) and add +0 to their lane; R = blocksum of the other e_j, + (double)exp(sink - m)
 *   after the blocks (or ones + 1 when that is 1.0f). log S = log1p((ones - 1) + R) when
 *   ones >= 1, else log(R): rows dominated by their max keep log S ~ R (a plain f32 sum
 *   would absorb R into the 1). lambda and lse below use this S and log S.
 *   softmax:  lambda = (float)(1 / S);  y_j = e_j * lambda.
 *   log:      ls = (float)log(S);  y_j = (z_j - m) - ls;  lse = (float)((double)m + log(S)).
 *   softmax lse = the same (float)((double)m + log(S)).
 *   reload: pass 2 stores e_j (softmax) or z_j - m (log) into y (f32 y only), pass 3 finishes
 *   in place; recompute: pass 3 forms z_j again.
 * Two-pass:
 *   pass 1: 64 lanes of (M, N), start (0, -inf); per element (p, n) = extexp(z_j):
 *     N' = (n > N) ? n : N;  M = fma(p, f(n - N'), M * f(N - N'));  N = N'.
 *   Also m = max_j z_j (any order) for the range test. At the end of each block of 1024 the
 *   lanes fold with the tree above using (Ma, Na) (+) (Mb, Nb) = (fma(Mb, f(Nb - N), Ma * f(Na - N)), N),
 *   N = (Nb > Na) ? Nb : Na; lane 0 joins the double total (Md, Nd), start (0, -inf), by
 *   N = max(Nd, Nb), Md = Md * g(Nd - N) + (double)Mb * g(Nb - N), g(d) = ldexp(1, d) for
 *   d >= -1000, else 0. A sink joins last: (Md, Nd) (+) extexp(sink), the same double rule.
 *   Range test: with m (including the sink) >= 2^22 or m <= -2^22 (and m != -inf), the row
 *   is computed by the three-pass recompute definition instead (same bits as that algorithm).
 *   Nd == -inf: fully masked row.
 *   softmax: lambda = (float)(1 / Md), Nf = (float)Nd; pass 2: (p, n) = extexp(z_j),
 *     y_j = RN((p * lambda) * 2^d), d = max(n - Nf, -160) (f32; d <= 0, RN as in exp).
 *   log: L = Nd * ln2 + log(Md) (double, ln2 = 0x1.62E42FEFA39EFp-1); Lh = (float)L,
 *     Ll = (float)(L - Lh); y_j = (z_j - Lh) - Ll.  lse = Lh (both modes).
 * Online:
 *   pass 1: 64 lanes of (m, d), start (-inf, 0), E(a, b) = (a == -inf) ? 0 : exp(a - b):
 *     m' = (z > m) ? z : m;  d = fma(d, E(m, m'), E(z, m'));  m = m'.
 *   Blocks fold by (ma, da) (+) (mb, db) = (m, fma(db, E(mb, m), da * E(ma, m))), m = (mb > ma)
 *   ? mb : ma; lane 0 joins a double total (mD, dD), start (-inf, 0): m = max, dD = dD *
 *   Ed(mD, m) + (double)db * Ed(mb, m), Ed(a, b) = (a == -inf) ? 0 : exp(a - b) in double
 *   (libm). A sink joins last as (sink, 1). Then m = (float)mD + 0, S = dD, and pass 2 is the
 *   three-pass pass 3 with this m and S (so online differs from three-pass only through S).
 * Row outcomes, every algorithm:
 *   - the sum (S or Md) is NaN (a NaN or +inf logit or sink): every y of the row, and lse,
 *     are the canonical NaN 0x7FC00000.
 *   - fully masked (no finite contribution, no sink): y = 0 (log: -inf), lse = -inf; with
 *     masked_nan: y = NaN, lse = NaN (canonical).
 *   - y rounded to the kernel dtype with nk__store_f32 semantics (RNE); lse is f32.
 *
 * Backward (nk_softmax_bwd_row), g = dy:
 *   softmax: D = blocksum(g_j * y_j) (fma per term); Dh = (float)D, Dl = (float)(D - Dh);
 *     dx_j = (y_j * ((g_j - Dh) - Dl)) * scale;  *dot = D.
 *   log:     G = blocksum(g_j); ymax = max_j y_j (any order); ymax == -inf (fully masked):
 *     dx = 0, *dot = 0.  Else Gf = (float)G; dx_j = fma(-exp(y_j), Gf, g_j) * scale; *dot = G.
 *   D or G NaN or inf: dx row canonical NaN, *dot NaN.
 *
 * Cross-entropy (nk_xent_row), z = x (no scale or mask):
 *   pass 1 as the two-pass softmax pass 1 (with its range test and its fallback to the
 *   three-pass sums), plus T = 2^11 * blocksum(z_j * 2^-11) when smoothing > 0 (the
 *   down-scaling keeps f32 partials finite for any finite logits; |z| < 2^-115 loses bits).
 *   L = Nd * ln2 + log(Md) (two-pass) or (double)m + log(S) (three-pass fallback).
 *   loss = (1 - ls) * (L - z_t) + ls * (L - T / n) + zl * L * L   (double; z_t = (double)z_t;
 *   a term whose weight (1 - ls or ls) is 0 is left out, so 0 * inf never makes a NaN).
 *   dx (when wanted): c = grad_w (double), a = (float)(c * (1 + 2 * zl * L)),
 *     b = (float)(-c * ls / n), bt = (float)(-c * (ls / n + (1 - ls)));  p_j = the softmax
 *     output value of the row (before dtype rounding);  dx_j = fma(p_j, a, b), dx_t =
 *     fma(p_t, a, bt); where a overflows f32 (|c (1 + 2 zl L)| > FLT_MAX) an element with
 *     p_j == 0 gets b (bt), not fma(0, inf, b) = NaN, and p_j > 0 gets +-inf (a is an f32
 *     intermediate).  L NaN or -inf (a NaN/+inf logit; every logit -inf): dx row canonical
 *     NaN, loss NaN, lse L (NaN or -inf).
 *   *lse = (float)L, *loss = loss.
 *
 * Sigmoid (element-wise, nk_sigmoid_row): z_j as the forward logits; e = exp(-|z_j|) (f32
 *   negation of |z|), y_j = 1 / (1 + e) for z_j >= 0, e / (1 + e) otherwise; j >= n_valid: 0.
 *   Backward: dx_j = ((g_j * y_j) * (1 - y_j)) * scale. A NaN result is written as the
 *   canonical NaN.
 *
 * Clarifications (k-scalar; scalar.c and softmax-common.h implement exactly this):
 *   - NaN outputs: every NaN a kernel writes (y, dx, lse, the exp kernel's output) is the
 *     canonical 0x7FC00000 (bf16 0x7FC0, f16 0x7E00); a NaN *dot or *loss is the canonical
 *     double 0x7FF8000000000000. So exp(NaN) = canonical NaN, and dx_j of the backward and of
 *     cross-entropy are canonicalized like the sigmoid's (no payload ever depends on the ISA).
 *   - "max (any order)" ignores NaN: m = (z > m) ? z : m from -inf (the sink too); the double
 *     joins take N = (Nb > Nd) ? Nb : Nd and m = (mb > mD) ? mb : mD.
 *   - Three-pass with m == -inf forms no sum: the row is NaN if a z_j (j < n_valid) or the sink
 *     is NaN, else fully masked. (Online and two-pass test "sum NaN" before "fully masked".)
 *   - Sums run over [0, n_valid) only (the -inf elements past n_valid add nothing anyway);
 *     cross-entropy and backward run over [0, n).
 *   - Log backward: "fully masked" means every y_j == -inf (a NaN is not), tested before the
 *     G check; the softmax backward has no such test (y = 0 gives dx = 0 through D).
 *   - Cross-entropy with L NaN: *lse is the canonical NaN (L = -inf: -inf).
 *   - The scalar path ignores nontemporal.
 *
 * Kernel rules: as rownorm.h — no allocation, validation or logging; pointers are not
 * restrict: y may be x, dx may be dy or y (exact in-place), each element is read before it is
 * written at the same index. No reads or writes outside [0, n) of a row. nontemporal asks for
 * streaming stores (large working sets; the kernel then ends with an sfence).
 */
#ifndef NK_KERNELS_SOFTMAX_H
#define NK_KERNELS_SOFTMAX_H

#include <stddef.h>
#include <stdint.h>

#include "normkit.h"

#include "../arch.h"

#define NK_SOFTMAX_LANES 64
#define NK_SOFTMAX_BLOCK 1024
/* Cross-entropy's T sums fma(z_j, 2^-11, t) (z_j * 2^-11 exact for |z| >= 2^-115) and scales the block total by
 * 2^11 in double: a block's 1024 f32 partials cannot overflow even at z = -FLT_MAX. */
#define NK_SOFTMAX_TDOWN 0x1p-11f
#define NK_SOFTMAX_TUP 0x1p11
/* The SIMD three-pass kernels keep the exps of rows of up to this many valid elements in a
 * stack buffer (32 KiB) instead of recomputing them or storing them into y (same bits). */
#define NK_SOFTMAX_SCRATCH 8192

typedef struct nk_softmax_row {
  const void *x;        /* n logits of the kernel's dtype */
  void *y;              /* n outputs of the kernel's dtype */
  const void *mask;     /* n additive mask values of mask_dtype, or NULL */
  nk_dtype mask_dtype;
  size_t n;             /* row length */
  size_t n_valid;       /* [0, n_valid) take part; [n_valid, n) are masked and not read */
  float scale;
  float alibi;          /* 0: no ALiBi term */
  float pos;            /* query position, for the ALiBi term */
  float sink;           /* used when has_sink */
  int has_sink;
  int log;              /* log-softmax */
  int masked_nan;       /* fully masked rows give NaN */
  int nontemporal;      /* streaming stores for y */
  float *lse;           /* OUT, optional */
} nk_softmax_row;

typedef struct nk_softmax_bwd_row {
  const void *y;        /* n saved outputs */
  const void *dy;       /* n upstream gradients */
  void *dx;             /* n input gradients (may be y or dy) */
  size_t n;
  float scale;
  int log;
  int nontemporal;
  double *dot;          /* OUT, optional: D (softmax) or G (log) */
} nk_softmax_bwd_row;

typedef struct nk_xent_row {
  const void *x;        /* n logits */
  void *dx;             /* n dlogits, or NULL (forward only); may be x */
  size_t n;
  size_t target;        /* in [0, n) */
  float smoothing;      /* label smoothing ls */
  float z_loss;         /* zl */
  double grad_w;        /* gradient weight of this row (grad, or grad / counted rows) */
  int nontemporal;
  double *loss;         /* OUT */
  float *lse;           /* OUT, optional */
} nk_xent_row;

typedef struct nk_sigmoid_row {
  const void *x;        /* fwd: n logits; bwd: n saved outputs y */
  const void *dy;       /* bwd only */
  void *y;              /* fwd: y; bwd: dx */
  const void *mask;     /* fwd: as nk_softmax_row */
  nk_dtype mask_dtype;
  size_t n, n_valid;    /* n_valid: fwd only */
  float scale, alibi, pos;
  int nontemporal;
} nk_sigmoid_row;

typedef void (*nk_softmax_fwd_fn)(const nk_softmax_row *row);
typedef void (*nk_softmax_bwd_fn)(const nk_softmax_bwd_row *row);
typedef void (*nk_xent_fn)(const nk_xent_row *row);
typedef void (*nk_sigmoid_fn)(const nk_sigmoid_row *row);
/* exp over n floats (y may be x): the canonical exp, for the ulp tool and the tests. */
typedef void (*nk_exp_fn)(size_t n, const float *x, float *y);

/* One row of the tables built from softmax.inc. algo is NK_SOFTMAX_AUTO for non-forward
 * kernels; dtype is F32 for exp. */
typedef enum nk_softmax_kind {
  NK_SMK_FWD = 0,
  NK_SMK_BWD = 1,
  NK_SMK_XENT = 2,
  NK_SMK_SIGMOID_FWD = 3,
  NK_SMK_SIGMOID_BWD = 4,
  NK_SMK_EXP = 5,
} nk_softmax_kind;

typedef struct nk_softmax_entry {
  nk_isa isa;
  nk_softmax_kind kind;
  nk_softmax_algo algo;
  nk_dtype dtype;
  void (*fn)(void); /* cast to the kind's type */
  const char *name;
} nk_softmax_entry;

#define NK_SOFTMAX_FWD(isa, algo, dtype, fn) void fn(const nk_softmax_row *row);
#define NK_SOFTMAX_BWD(isa, dtype, fn) void fn(const nk_softmax_bwd_row *row);
#define NK_XENT(isa, dtype, fn) void fn(const nk_xent_row *row);
#define NK_SIGMOID_FWD(isa, dtype, fn) void fn(const nk_sigmoid_row *row);
#define NK_SIGMOID_BWD(isa, dtype, fn) void fn(const nk_sigmoid_row *row);
#define NK_EXP(isa, fn) void fn(size_t n, const float *x, float *y);
#include "softmax.inc"
#undef NK_SOFTMAX_FWD
#undef NK_SOFTMAX_BWD
#undef NK_XENT
#undef NK_SIGMOID_FWD
#undef NK_SIGMOID_BWD
#undef NK_EXP

#endif /* NK_KERNELS_SOFTMAX_H */
