/*
 * optim.h — the micro-kernel contract of the optimizer and advantage hot paths: the AdamP and
 * SGDP single-step updates over flat f32 arrays (with the block sums their projection needs)
 * and the GRPO group normalization.
 *
 * One portable source (optim-impl.h) is compiled once per ISA (scalar.c, avx2.c, avx512.c).
 * All arithmetic is double on 16-lane vectors of GCC/Clang vector extensions (element-wise IEEE
 * operations, -ffp-contract=off, no fused multiply-add anywhere), sqrt and division correctly
 * rounded on every ISA, and the tail elements go through the same operations one lane at a
 * time: every ISA computes the same bits by construction.
 *
 * The canonical arithmetic (the operators' docs in include/normkit.h state the formulas):
 *   element-wise (AdamP):  m' = (float)(b1 m + (1 - b1) g);  v' = (float)(b2 v + ((1 - b2) g) g)
 *                          den = sqrt(v') * inv_sqrt_bc2 + eps
 *                          u = (nesterov ? b1 m' + (1 - b1) g : m') / den
 *   element-wise (SGDP):   b' = (float)(mu b + (1 - damp) g);  u = nesterov ? g + mu b' : b'
 *   projection:            u = u - (t / nt) * k           (only when projected)
 *   update:                t' = (float)(t * decay - step_size * u)
 *   block sums (NK_OPT_BLOCK elements at most, from a row's start or a multiple of the block):
 *     16 double lanes, lane l adds the terms of the elements i with i % 16 == l in increasing i
 *     (starting from +0), folded lane[k] += lane[k + s] for s = 8, 4, 2, 1; a row's sum is the
 *     sum of its blocks' sums in block order, starting from +0.
 *   GRPO group of G rewards: s = sequential double sum of r;  mean = s / G;
 *     q = sequential sum of (r - mean)^2;  std = sqrt(q / div);
 *     adv = (float)(scale ? (r - mean) / (std + eps) : r - mean)     (G == 1: mean 0, std 1)
 *
 * Kernel rules: kernels never allocate, validate, log or touch threads.
 */
#ifndef NK_KERNELS_OPTIM_H
#define NK_KERNELS_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "../arch.h"

#define NK_OPT_BLOCK 4096 /* elements per block of a row sum */

/* Element-wise parameters of one step (the operator precomputes them in double). */
typedef struct nk_opt_params {
  int adam;           /* 1: AdamP, 0: SGDP */
  int nesterov;
  double b1, omb1;    /* beta1, 1 - beta1 (AdamP) */
  double b2, omb2;    /* beta2, 1 - beta2 (AdamP) */
  double inv_sqrt_bc2, eps;
  double mu, omd;     /* momentum, 1 - dampening (SGDP) */
  double decay, step_size;
} nk_opt_params;

typedef struct nk_grpo_params {
  double eps;
  int unbiased, scale_by_std;
} nk_grpo_params;

typedef struct nk_optim_kernels {
  const char *name; /* "nk_optim__avx512", ... */
  /* Block sums of n <= NK_OPT_BLOCK elements: out = (sum g^2, sum t^2, sum g t). */
  void (*sums_gt)(size_t n, const float *g, const float *t, double out[3]);
  /* Updates the state (m, v for AdamP; m is the momentum buffer for SGDP, v unused) of n <=
   * NK_OPT_BLOCK elements; out = (sum t^2, sum t u) with u the update direction from the new
   * state. */
  void (*state_sums)(size_t n, const float *g, float *m, float *v, const float *t,
                     const nk_opt_params *p, double out[2]);
  /* t' from the stored (already updated) state; proj: u -= (t / nt) * k. Any n. */
  void (*update)(size_t n, float *t, const float *g, const float *m, const float *v,
                 const nk_opt_params *p, int proj, double nt, double k);
  /* State update and t' in one pass (not projected). Any n. */
  void (*fused)(size_t n, float *t, const float *g, float *m, float *v, const nk_opt_params *p);
  /* One GRPO group of G >= 1 rewards. */
  void (*grpo_group)(size_t G, const float *r, float *adv, const nk_grpo_params *p);
} nk_optim_kernels;

extern const nk_optim_kernels nk_optim_kernels_scalar;
#if NK_ARCH_X86
extern const nk_optim_kernels nk_optim_kernels_avx2;
extern const nk_optim_kernels nk_optim_kernels_avx512;
#endif

#endif /* NK_KERNELS_OPTIM_H */
