/*
 * resnorm.h — the micro-kernel contract of the research normalization layers: PowerNorm and
 * Unified Normalization (token rows of C channels), EvoNorm-B0 and EvoNorm-S0 (channel runs of
 * NCHW tensors and channel rows of NHWC tensors). Statistics of EvoNorm come from the chnorm
 * moments kernels; these kernels do the element-wise maps and the backward sums.
 *
 * One portable source (resnorm-impl.h) is compiled once per ISA (scalar.c, avx2.c, avx512.c).
 * It is plain C on blocks of 64 floats: element-wise IEEE f32 operations in a written order
 * (-ffp-contract=off, no fma anywhere, no reassociation), so the compiler's vectorization of the
 * lanes cannot change a bit; sums are in double over fixed lanes:
 *   along a run (a sum over consecutive elements): 16 double lanes, lane l adds the terms with
 *     index % 16 == l in increasing index, folded lane[k] += lane[k + h], h = 8, 4, 2, 1, then
 *     added to the caller's accumulator;
 *   across rows (per channel): one double per channel, rows added in order.
 * Only the dtype conversions differ between files, and they are exact or integer
 * round-to-nearest-even (runtime/convert.h), so every ISA gives the same bits.
 *
 * sigmoid(w) (EvoNorm-S0): t = max(-|w|, -104) (NaN passes); n = RN(t * LOG2E) (magic-number
 * rounding); r = (t - n * LN2_HI) - n * LN2_LO; p = Horner of C5..C1, 1 (softmax.h's
 * constants, mul then add); e = (p * 2^(n - n/2)) * 2^(n/2)... (two exact-power products, one
 * rounding); sigmoid = w >= 0 ? 1 / (1 + e) : e / (1 + e).
 *
 * Kernel rules: no allocation, validation or logging; pointers are not restrict where an
 * output may alias an input (y == x, dx == dy, dx == x): every element is read before it is
 * written, and a row's group sums read the whole group before any of it is written.
 */
#ifndef NK_KERNELS_RESNORM_H
#define NK_KERNELS_RESNORM_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/arch.h"
#include "normkit.h"

/* EvoNorm element-wise parameters. For a run (NCHW: one (n, c)), every pointer points at one
 * value; for a row (NHWC: one (n, s)), at C values indexed by channel. */
typedef struct nk_rn_evo_params {
  const float *sb, *si;    /* B0: batch std, instance std;  S0: si = group std (per channel) */
  const float *v, *g, *b;  /* v, gamma, beta */
  /* dx terms k * ((x - mu) / s) (the coefficient without the std: A / (s count) can underflow) */
  const float *kb, *mbh, *mbl;  /* B0 dx: A_b / (N S), batch mean hi, lo */
  const float *ki, *mih, *mil;  /* B0 dx: A_i / S, instance mean;  S0: A_g / ((C/G) S), mu_g */
} nk_rn_evo_params;

/* EvoNorm kinds. */
#define NK_RN_B0 0
#define NK_RN_S0 1
#define NK_RN_AFF 2 /* affine only: y = x * g + b */
/* Sums per (n, c) written by evo_sum_*: NK_RN_NSUM doubles, acc[k * stride]:
 *   B0:  0 sum b*delta, 1 sum (1-b)*delta, 2 sum (1-b)*delta*x, 3 sum dy*(x/d), 4 sum dy
 *   S0:  0 sum dy*a, 1 sum dy*((x*x)*sig'), 4 sum dy
 *   AFF: 3 sum dy*x, 4 sum dy */
#define NK_RN_NSUM 5

typedef struct nk_resnorm_kernels {
  const char *name; /* "nk_resnorm__avx512", ... */
  /* Token rows (PowerNorm, UN). cg = channels per group of the group scaling (0: none);
   * u = x * gs per group, gs = (float)(1 / sqrt(sum x^2 / cg + gs_eps)).
   * acc[c] += (double)u * u. */
  void (*tok_stats)(size_t C, size_t cg, float gs_eps, const void *x, nk_dtype dt, double *acc);
  /* y = (u * rf) * g + b. */
  void (*tok_norm)(size_t C, size_t cg, float gs_eps, const void *x, void *y, nk_dtype dt,
                   const float *rf, const float *g, const float *b);
  /* z = u * rf: acc[c] += dy z, acc[C + c] += z z, acc[2C + c] += dy. */
  void (*tok_gradsum)(size_t C, size_t cg, float gs_eps, const void *x, const void *dy,
                      nk_dtype dt, const float *rf, double *acc);
  /* du = ((gain * dy) - coef * z) * rb (f32, z from the f32 u);  cg: dx = (float)(gsd * (du -
   * ud * (sum_k du ud / cg))) in double with gsd = 1 / sqrt(sum x^2 / cg + gs_eps) and
   * ud = x * gsd unrounded (f32 u would cancel in du - u k); else dx = du. */
  void (*tok_dx)(size_t C, size_t cg, float gs_eps, const void *x, const void *dy, void *dx,
                 nk_dtype dt, const float *rf, const float *gain, const float *coef,
                 const float *rb);
  /* EvoNorm, kind NK_RN_*: a run of n elements with scalar parameters (_run) or a row of n
   * channels with per-channel parameters (_row). */
  void (*evo_norm_run)(int kind, size_t n, const void *x, void *y, nk_dtype dt,
                       const nk_rn_evo_params *p);
  void (*evo_norm_row)(int kind, size_t n, const void *x, void *y, nk_dtype dt,
                       const nk_rn_evo_params *p);
  /* Adds the kind's sums to acc[k * stride] (run: one (n, c); row: acc[k * stride + c]). */
  void (*evo_sum_run)(int kind, size_t n, const void *x, const void *dy, nk_dtype dt,
                      const nk_rn_evo_params *p, double *acc, size_t stride);
  void (*evo_sum_row)(int kind, size_t n, const void *x, const void *dy, nk_dtype dt,
                      const nk_rn_evo_params *p, double *acc, size_t stride);
  void (*evo_dx_run)(int kind, size_t n, const void *x, const void *dy, void *dx, nk_dtype dt,
                     const nk_rn_evo_params *p);
  void (*evo_dx_row)(int kind, size_t n, const void *x, const void *dy, void *dx, nk_dtype dt,
                     const nk_rn_evo_params *p);
} nk_resnorm_kernels;

extern const nk_resnorm_kernels nk_resnorm_kernels_scalar;
#if NK_ARCH_X86
extern const nk_resnorm_kernels nk_resnorm_kernels_avx2;
extern const nk_resnorm_kernels nk_resnorm_kernels_avx512;
#endif

#endif /* NK_KERNELS_RESNORM_H */
