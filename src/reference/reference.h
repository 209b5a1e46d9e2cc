/*
 * reference.h — float64 reference implementations, written to be obviously correct.
 * Used by the tests and by the benchmark's validation. Dense row-major double arrays.
 * Straight from spec/layers.md §1–2: two-pass mean/variance, eps inside the sqrt; §12–13 for the
 * softmax family (softmax.c: long double sums after a max shift).
 */
#ifndef NK_REFERENCE_H
#define NK_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

/* y = (h - mu) * rstd * g + b, per row. gamma/beta may be NULL (g = 1, b = 0); offset != 0
 * means g = 1 + gamma. mean/rstd (rows each) may be NULL. */
void nk_ref_layernorm_fwd(size_t rows, size_t cols, const double *h, const double *gamma,
                          const double *beta, int offset, double eps, double *y, double *mean,
                          double *rstd);
/* dx (rows x cols), dgamma and dbeta (cols, overwritten; may be NULL) from h and dy. */
void nk_ref_layernorm_bwd(size_t rows, size_t cols, const double *h, const double *gamma,
                          int offset, double eps, const double *dy, double *dx, double *dgamma,
                          double *dbeta);
void nk_ref_rmsnorm_fwd(size_t rows, size_t cols, const double *h, const double *gamma,
                        const double *beta, int offset, double eps, double *y, double *rstd);
void nk_ref_rmsnorm_bwd(size_t rows, size_t cols, const double *h, const double *gamma,
                        int offset, double eps, const double *dy, double *dx, double *dgamma,
                        double *dbeta);

/* ---- softmax family (softmax.c; spec §12–13, normkit.h "Softmax, log-softmax, ...") ---- */

/* Logits as the API forms them, in f32 arithmetic (each step rounded to f32), returned as doubles
 * (-INFINITY where masked). Row i, column j (x and mask dense, cols per row):
 *   z = x*scale;  z = z + mask[(i % mask_rows)][j] (mask may be NULL; mask_rows 0 = rows);
 *   z = z + alibi*((float)j - (float)p_i) when alibi != 0;  z = -inf for j > p_i when causal,
 *   p_i = causal_offset + i % q_len (q_len 0 = rows). */
void nk_ref_softmax_logits(size_t rows, size_t cols, const float *x, const float *mask,
                           size_t mask_rows, float scale, float alibi, int causal, size_t q_len,
                           ptrdiff_t causal_offset, double *z);
/* softmax (log == 0) or log_softmax of each row of z, with an optional per-row sink logit
 * (sink NULL = none); lse (rows, may be NULL) = log(e^sink + sum e^z). Fully masked rows (no
 * finite term, no finite sink): y = 0 (log: -inf), lse = -inf, or NaN everywhere when
 * masked_nan. A NaN or +inf anywhere in the row (or the sink): the row (y and lse) NaN. */
void nk_ref_softmax_fwd(size_t rows, size_t cols, const double *z, const double *sink, int log,
                        int masked_nan, double *y, double *lse);
/* dx from y and dy (softmax: scale*y*(dy - sum dy*y); log: scale*(dy - e^y * sum dy));
 * dot (rows, may be NULL) = sum dy*y or sum dy; fully masked rows (log: every y == -inf) give
 * dx = 0 and dot = 0. */
void nk_ref_softmax_bwd(size_t rows, size_t cols, const double *y, const double *dy, int log,
                        double scale, double *dx, double *dot);
/* PyTorch cross_entropy with class indices: per row L = lse(z),
 *   loss_i = (1-ls)(L - z_t) + ls (L - mean_j z_j) + zl L^2   (a term whose coefficient is 0
 *   is left out, so -inf logits never give 0*inf; docs/ops/cross_entropy.md), ignore_index rows
 *   give 0 and are not counted;
 * reduction 0 none / 1 sum / 2 mean (nk_reduction; mean over counted rows, NaN if none);
 * loss has rows (none) or 1 entries; dz (rows x cols, may be NULL) = grad * d(reduced loss)/dz;
 * lse (rows, may be NULL; ignored rows included). A row with a NaN/+inf logit or no finite
 * logit (L NaN or -inf) that is counted: loss_i NaN, dz row NaN. */
void nk_ref_cross_entropy(size_t rows, size_t cols, const double *z, const int64_t *target,
                          int64_t ignore_index, double ls, double zl, int reduction, double grad,
                          double *loss, double *dz, double *lse);
/* y = 1/(1 + e^-z); masked (-inf) z -> 0, +inf -> 1, NaN -> NaN. */
void nk_ref_sigmoid_fwd(size_t n, const double *z, double *y);
/* dx = scale * dy * y * (1 - y). */
void nk_ref_sigmoid_bwd(size_t n, const double *y, const double *dy, double scale, double *dx);

/* ---- test-time statistics (ttstats.c; spec stats-optim-rl.md Part A) ---- */
/* These work on the activations themselves, as the official code does: x is a dense
 * B x C x L tensor, x[(b*C + c)*L + l], and every statistic is formed from it by the spec's
 * definitions (§0): instance mean over l, biased instance variance, batch mean/variance over
 * (b, l). Outputs are double, nothing is rounded. */

/* alpha-BN: test statistics of x over (B, L) per channel (var divided by B*L - 1 when
 * unbiased, else B*L), mixed: mean = (1 - alpha) source_mean + alpha mu_t, likewise var. */
void nk_ref_alpha_bn_stats(size_t B, size_t C, size_t L, const double *x, double alpha,
                           int unbiased, const double *source_mean, const double *source_var,
                           double *mean, double *var);

/* 1 - (1 - momentum)^(batch / batch_max). */
double nk_ref_unmixtns_lambda(double momentum, double batch, double batch_max);
/* Components (K x C each) from the source statistics and the noise xi (K x C, unused for
 * K == 1), as BaseNormLayer.__init__ with coeff = alpha_init. */
void nk_ref_unmixtns_init(size_t K, size_t C, double alpha_init, const double *source_mean,
                          const double *source_var, const double *xi, double *comp_mean,
                          double *comp_var);
/* One UnMixTNS2d.forward on x: mean_bar, var_bar (B x C; var clamped at 0), prob (B x K), and
 * the components (K x C) updated in place with rate lambda. */
void nk_ref_unmixtns_fwd(size_t K, size_t C, size_t B, size_t L, const double *x, double tau,
                         double lambda, double *comp_mean, double *comp_var, double *mean_bar,
                         double *var_bar, double *prob);

/* AdaB2N's scalar state, as the Python module holds it (last_eta None = has_last_eta 0). */
typedef struct nk_ref_adab2n_state {
  double num_batches_tracked;
  int has_last_eta;
  double last_eta;
  size_t tasks; /* cur_tasks */
} nk_ref_adab2n_state;
/* num_batches_tracked += 1, then get_eta(). */
double nk_ref_adab2n_eta(double momentum, double kappa, nk_ref_adab2n_state *st);
/* One training_forward on x: statistics (weighted when task_ids != NULL and tasks > 0, else
 * plain biased batch statistics), running update, regularizer. w (tasks + 1) and omega (B) are
 * written on the weighted path when not NULL. Returns eta. */
double nk_ref_adab2n_fwd(size_t B, size_t C, size_t L, const double *x, const int64_t *task_ids,
                         const double *phi, double momentum, double kappa,
                         nk_ref_adab2n_state *st, double *running_mean, double *running_var,
                         double *mean, double *var, double *w, double *omega, double *reg);

#endif /* NK_REFERENCE_H */
