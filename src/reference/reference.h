/*
 * reference.h — float64 reference implementations, written to be obviously correct.
 * Used by the tests and by the benchmark's validation. Dense row-major double arrays.
 * Straight from spec/layers.md §1–2: two-pass mean/variance, eps inside the sqrt; §12–13 for the
 * softmax family (softmax.c: long double sums after a max shift); §14 for the channel norms and
 * their moments (chnorm.c: two-pass long double statistics over tensors addressed through their
 * layout and strides).
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

/* ---- channel norms and moments (chnorm.c; spec §14, normkit.h "Moments", "Channel norms") ---- */

/* Where element (n, c, s) of an N x C x S tensor lives (normkit.h "Channel norms"):
 *   nsc == 0 (NCS, NCHW): n*n_stride + c*row_stride + s
 *   nsc == 1 (NSC, NHWC): n*n_stride + s*row_stride + c
 * A stride of 0 means dense (row_stride = S (NCS) or C (NSC); n_stride = rows * row_stride).
 * Every tensor argument of one reference call (x, z, y, dy, dx, dz) uses this geometry; the
 * per-channel arrays (gamma, beta, running statistics: C) and per-set arrays ([n][g]) are dense. */
typedef struct nk_ref_chshape {
  size_t n, c, s;
  int nsc;
  ptrdiff_t n_stride, row_stride;
} nk_ref_chshape;

/* The index of element (n, c, s). */
size_t nk_ref_chidx(const nk_ref_chshape *t, size_t n, size_t c, size_t s);
/* Elements a buffer of this geometry spans (largest index + 1; 0 when N, C or S is 0). */
size_t nk_ref_chspan(const nk_ref_chshape *t);

/* Moments of the n values x[0], x[stride], ..., x[(n-1)*stride] by plain two-pass (long
 * double): mean and m2 = sum (x - mean)^2. n == 0 gives 0 and 0; any NaN or +-inf gives NaN
 * for both (normkit.h "Moments"). */
void nk_ref_moments(size_t n, const double *x, ptrdiff_t stride, double *mean, double *m2);

/* Statistics by plain two-pass (long double), biased variance; NaN/inf in a set: both NaN.
 * nk_ref_channel_stats: per channel over its N*S elements (BatchNorm); mean, var: C each.
 * nk_ref_group_stats: per (sample, group), G groups of C/G consecutive channels, over (C/G)*S
 * elements (GroupNorm; G == C is InstanceNorm); mean, var: N*G each, [n][g]. */
void nk_ref_channel_stats(const nk_ref_chshape *t, const double *x, double *mean, double *var);
void nk_ref_group_stats(const nk_ref_chshape *t, size_t groups, const double *x, double *mean,
                        double *var);

/* Fused activations of BatchNorm: relu(v) = v < 0 ? 0 : v (NaN stays NaN). */
enum { NK_REF_ACT_NONE = 0, NK_REF_ACT_RELU = 1, NK_REF_ACT_ADD_RELU = 2 };

/* BatchNorm forward (spec 14.1, normkit.h nk_batchnorm_fwd), M = N*S.
 *   training != 0: batch statistics (mean, biased var) normalize. If running_mean and
 *     running_var are given (both), they are updated: first ++*num_batches_tracked (when given),
 *     then m = momentum, or m = 1 / *num_batches_tracked when cumulative (needs the counter);
 *     rm = (1-m) rm + m mean, rv = (1-m) rv + m var M/(M-1).
 *   training == 0: rm, rv normalize (required).
 *   y = act((x - mean) * rstd * g + b [+ z]) with rstd = 1/sqrt(var + eps), g = gamma (1 if NULL),
 *   b = beta (0 if NULL); act NK_REF_ACT_* (z only with ADD_RELU).
 *   save_mean, save_rstd (C, may be NULL): the mean and rstd that normalized. */
void nk_ref_batchnorm_fwd(const nk_ref_chshape *t, const double *x, const double *z,
                          const double *gamma, const double *beta, double eps, int training,
                          int act, double momentum, int cumulative, double *running_mean,
                          double *running_var, int64_t *num_batches_tracked, double *y,
                          double *save_mean, double *save_rstd);
/* BatchNorm backward. dy' = dy, or with mask_y (the forward output; RELU/ADD_RELU)
 * dy' = mask_y <= 0 ? 0 : dy (a NaN y passes the gradient).
 *   training != 0: mean, var from x (eps); xhat = (x - mean) r;
 *     dx = (g r / M) (M dy' - sum dy' - xhat sum dy' xhat)     (mean, rstd not read)
 *   training == 0: mean, rstd given (C each); xhat = (x - mean) rstd; dx = dy' g rstd.
 * dz (may be NULL) = dy'; dgamma = sum dy' xhat, dbeta = sum dy' (C each, overwritten; may be
 * NULL). */
void nk_ref_batchnorm_bwd(const nk_ref_chshape *t, const double *x, const double *mask_y,
                          const double *gamma, double eps, int training, const double *mean,
                          const double *rstd, const double *dy, double *dx, double *dz,
                          double *dgamma, double *dbeta);
/* The sums of nk_batchnorm_bwd_reduce, per channel c with the given mean (C):
 * sums[3c] = sum dy', sums[3c+1] = sum dy' (x - mean[c]), sums[3c+2] = sum (x - mean[c]). */
void nk_ref_batchnorm_bwd_sums(const nk_ref_chshape *t, const double *x, const double *mask_y,
                               const double *mean, const double *dy, double *sums);

/* GroupNorm forward (spec 14.2): G groups; y = (x - mu[n][g]) r[n][g] g_c + b_c. mean, rstd
 * (N*G, [n][g]) may be NULL. */
void nk_ref_groupnorm_fwd(const nk_ref_chshape *t, size_t groups, const double *x,
                          const double *gamma, const double *beta, double eps, double *y,
                          double *mean, double *rstd);
/* GroupNorm backward (exact): statistics from x; within (n, g) with gh = g_c dy:
 * dx = r (gh - mean(gh) - xhat mean(gh xhat)); dgamma_c = sum_{n,s} dy xhat, dbeta_c = sum dy
 * (overwritten; may be NULL). */
void nk_ref_groupnorm_bwd(const nk_ref_chshape *t, size_t groups, const double *x,
                          const double *gamma, double eps, const double *dy, double *dx,
                          double *dgamma, double *dbeta);
/* InstanceNorm forward (spec 14.3, normkit.h nk_instancenorm_fwd):
 *   running_mean/var NULL: instance statistics (per (n, c) over S) normalize;
 *   training != 0 with running buffers: instance statistics normalize, and
 *     rm = (1-m) rm + m mean_n(mu[n][c]), rv = (1-m) rv + m mean_n(var[n][c] S/(S-1));
 *   training == 0 with running buffers: rm, rv normalize (as BatchNorm inference).
 * mean, rstd (N*C, [n][c], may be NULL): the statistics used (running ones broadcast). */
void nk_ref_instancenorm_fwd(const nk_ref_chshape *t, const double *x, const double *gamma,
                             const double *beta, double eps, int training, double momentum,
                             double *running_mean, double *running_var, double *y, double *mean,
                             double *rstd);
/* InstanceNorm backward: use_running != 0: the statistics are constants, mean/rstd given
 * (N*C): dx = dy g rstd, dgamma = sum dy (x - mean) rstd; else the GroupNorm backward with
 * G = C (statistics from x; mean, rstd not read). dgamma, dbeta overwritten; may be NULL. */
void nk_ref_instancenorm_bwd(const nk_ref_chshape *t, int use_running, const double *x,
                             const double *gamma, double eps, const double *mean,
                             const double *rstd, const double *dy, double *dx, double *dgamma,
                             double *dbeta);

/* Inference BatchNorm folded (normkit.h nk_batchnorm_fold): r = 1/sqrt(rv + eps),
 * scale = g r, shift = b - rm g r (gamma/beta may be NULL). */
void nk_ref_batchnorm_fold(size_t channels, double eps, const double *running_mean,
                           const double *running_var, const double *gamma, const double *beta,
                           double *scale, double *shift);
/* ... into a preceding linear layer: weight (C x k, dense) *= scale_c in place,
 * bias_out_c = (bias_c - rm_c) g r + b (bias NULL: 0). */
void nk_ref_batchnorm_fold_linear(size_t channels, size_t k, double eps,
                                  const double *running_mean, const double *running_var,
                                  const double *gamma, const double *beta, double *weight,
                                  const double *bias, double *bias_out);
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

/* ---- weight and optimizer normalization (optim.c; spec stats-optim-rl.md Part B) ---- */
/* Weight normalization, rows x cols dense: w = g v / max(||v_r||, eps); norm optional (the
 * unclamped ||v_r||). Backward overwrites dv (rows x cols) and dg (rows). */
void nk_ref_weight_norm_fwd(size_t rows, size_t cols, double eps, const double *v,
                            const double *g, double *w, double *norm);
void nk_ref_weight_norm_bwd(size_t rows, size_t cols, double eps, const double *v,
                            const double *g, const double *dw, double *dv, double *dg);

/* AdamP / SGDP: one step of clovaai/AdamP's AdamP.step / SGDP.step on one tensor of n doubles
 * (rows = shape[0] for ndim > 1, 0 for ndim <= 1). Returns the view that was projected:
 * 0 none, 1 channel, 2 layer. step is the state's counter (incremented). */
typedef struct nk_ref_adamp_hp {
  double lr, beta1, beta2, eps, weight_decay, delta, wd_ratio;
  int nesterov;
} nk_ref_adamp_hp;
typedef struct nk_ref_sgdp_hp {
  double lr, momentum, dampening, eps, weight_decay, delta, wd_ratio;
  int nesterov;
} nk_ref_sgdp_hp;
int nk_ref_adamp_step(size_t n, size_t rows, const nk_ref_adamp_hp *hp, double *p,
                      const double *grad, double *exp_avg, double *exp_avg_sq, double *step);
int nk_ref_sgdp_step(size_t n, size_t rows, const nk_ref_sgdp_hp *hp, double *p,
                     const double *grad, double *buf);

/* NaP: group norms (per_channel: one per row, else one over all rows*cols), the projection
 * w_k <- w_k / ||w_k|| * rho_k (zero groups skipped), and the schedule (kind 0 constant,
 * 1 linear, 2 cosine; linear warmup from 0). */
void nk_ref_nap_norms(int per_channel, size_t rows, size_t cols, const double *w, double *rho);
void nk_ref_nap_project(int per_channel, size_t rows, size_t cols, double *w, const double *rho);
double nk_ref_nap_schedule_lr(int kind, double lr_init, double lr_final, double warmup,
                              double total, double t);

/* Conda: one step on an a x b matrix (steps 1-9 of the spec, the moment update included) with
 * a given basis: side 1 right (b x b P: X P^T / Y P), 2 left (a x a U: U^T X / U Y), 0 identity.
 * m is in original coordinates, v in projected ones; t is incremented. */
typedef struct nk_ref_conda_hp {
  double lr, beta1, beta2, eps, weight_decay, scale;
  int correct_bias;
} nk_ref_conda_hp;
void nk_ref_conda_step(size_t a, size_t b, int side, const double *basis,
                       const nk_ref_conda_hp *hp, double *W, const double *g, double *m,
                       double *v, double *t);

/* ---- RL and calibration (rlcal.c; spec stats-optim-rl.md Parts C and D) ---- */
/* SB3 RunningMeanStd: mean and var (biased) per feature, one shared count. The caller owns the
 * arrays (d doubles each). */
typedef struct nk_ref_rms {
  double *mean, *var;
  double count;
} nk_ref_rms;
void nk_ref_rms_init(size_t d, nk_ref_rms *s); /* mean 0, var 1, count 1e-4 */
void nk_ref_rms_update(size_t N, size_t d, const double *x, nk_ref_rms *s);
/* clip((x - mean) / sqrt(var + eps), -clip, clip) */
void nk_ref_rms_normalize(size_t N, size_t d, const nk_ref_rms *s, double eps, double clip,
                          const double *x, double *y);
/* VecNormalize.step_wait's reward path for E environments (ret, ret_rms updated). */
void nk_ref_vecnorm_reward(size_t E, double gamma, double eps, double clip, const double *r,
                           const unsigned char *done, double *ret, nk_ref_rms *ret_rms,
                           double *out);

/* GRPO advantages (verl): groups of sizes[q] consecutive rewards; size 1: mean 0, std 1. */
void nk_ref_grpo(size_t groups, const size_t *sizes, const double *r, double eps, int unbiased,
                 int norm_by_std, double *adv);
/* BNPO advantages and the fitted alpha, beta (spec C10, code's choices). */
void nk_ref_bnpo(size_t groups, const size_t *sizes, const double *r, double r_min, double r_max,
                 double clip, double *adv, double *alpha, double *beta);

/* HL-Gauss target of y for m bins (erf form of the paper listing; y clipped to the support),
 * two-hot target on the bin centres, expected-centre decoding, and -sum p log softmax(l). */
void nk_ref_hlgauss_target(size_t m, double v_min, double v_max, double sigma, double y,
                           double *probs);
void nk_ref_two_hot_target(size_t m, double v_min, double v_max, double y,
                           double *probs); /* m <= 4096 */
double nk_ref_hlgauss_decode(size_t m, double v_min, double v_max, const double *logits);
double nk_ref_categorical_xent(size_t m, const double *logits, const double *target);

/* LSC: log sigmoid(r - r_ref); numpy.quantile(x, q) with the default linear method (no NaN). */
double nk_ref_lsc(double r, double r_ref);
double nk_ref_quantile_linear(size_t k, const double *x, double q);

/* Temperature scaling: mean NLL of softmax(z / T) (z n x C, labels y); the minimizing T on
 * [t_min, t_max] by golden-section search on log T; top-label ECE/MCE with M equal-width bins
 * (m/M, (m+1)/M] and the per-bin count, mean confidence and accuracy (M entries each). */
double nk_ref_temperature_nll(size_t n, size_t C, const double *z, const int64_t *y, double T);
double nk_ref_temperature_fit(size_t n, size_t C, const double *z, const int64_t *y,
                              double t_min, double t_max);
void nk_ref_ece(size_t n, size_t C, const double *probs, const int64_t *y, size_t M, double *ece,
                double *mce, double *count, double *conf_mean, double *acc_mean);

/* Compositional data: closure (kappa x / sum x), clr (log x - mean log x), the clr partial
 * correlations and partial variances from Omega = (Gamma + J)^-1 - J (Gamma the clr covariance,
 * divisor n - 1; needs rank D - 1), and the alr-based partial correlation of parts i, j with
 * reference part ref (D <= 65). */
void nk_ref_closure(size_t D, double kappa, const double *x, double *out);
void nk_ref_clr(size_t D, const double *x, double *out);
void nk_ref_clr_partial_corr(size_t n, size_t D, const double *x, double *rho,
                             double *partial_var);
double nk_ref_alr_partial_corr(size_t n, size_t D, const double *x, size_t ref, size_t i,
                               size_t j);

/* CPN score of one candidate from its per-token log-probabilities with and without the query
 * (T positions each, optional validity masks): mean(cond) - alpha mean(prior). */
double nk_ref_cpn(size_t T, const double *logp_cond, const unsigned char *valid_cond,
                  const double *logp_prior, const unsigned char *valid_prior, double alpha);

/* ---- research normalization layers (resnorm.c; spec 4-6, normkit.h "Research normalization
 * layers"). Token layers: x is R x C dense (R tokens), mask R bytes (NULL: all valid). State in
 * double. Every formula straight from the spec, in double, nothing rounded to f32. ---- */

enum { NK_REF_PN_CODE = 0, NK_REF_PN_PAPER = 1, NK_REF_PN_PNV = 2 }; /* = nk_powernorm_mode */
typedef struct nk_ref_pn {
  size_t R, C, groups; /* groups 0: no group scaling */
  int mode, training;  /* NK_REF_PN_* */
  double eps, gs_eps, alpha_fwd, alpha_bwd;
  long long warmup;
} nk_ref_pn;
/* u = group-scaled x (R x C) and gs (R x groups) (u = x when groups == 0). */
void nk_ref_pn_group_scale(const nk_ref_pn *p, const double *x, double *u, double *gs);
/* Forward; phi (C) and *step updated in training. rf, rb: C each (forward and batch scales). */
void nk_ref_powernorm_fwd(const nk_ref_pn *p, const double *x, const unsigned char *mask,
                          const double *gamma, const double *beta, double *phi, long long *step,
                          double *y, double *rf, double *rb);
/* Backward: CODE/PAPER training the spec's approximate formula (nu updated); PN-V training the
 * exact gradient through the batch statistic over the valid tokens of mask (nu not touched);
 * inference exact. rf, rb from the forward. dgamma, dbeta: C (overwritten). */
void nk_ref_powernorm_bwd(const nk_ref_pn *p, const double *x, const unsigned char *mask,
                          const double *gamma, const double *rf, const double *rb, double *nu,
                          const double *dy, double *dx, double *dgamma, double *dbeta);

typedef struct nk_ref_un {
  size_t R, C, M, Mb;
  int training, filter, per_channel;
  double eps, alpha, rho_min, rho_max;
  long long warmup, rho_warmup;
} nk_ref_un;
typedef struct nk_ref_un_state {
  double *phi, *psi, *fwin, *bwin; /* C, C, M*C, Mb*C */
  long long step, skips;
  int skip;
} nk_ref_un_state;
/* Forward (spec 5.1); r, rho: C each. */
void nk_ref_unifiednorm_fwd(const nk_ref_un *p, nk_ref_un_state *st, const double *x,
                            const unsigned char *mask, const double *gamma, const double *beta,
                            double *y, double *r, double *rho);
/* Backward (spec 5.2, or the exact affine gradient in inference). */
void nk_ref_unifiednorm_bwd(const nk_ref_un *p, nk_ref_un_state *st, const double *x,
                            const double *gamma, const double *r, const double *rho,
                            const double *dy, double *dx, double *dgamma, double *dbeta);

/* EvoNorm (spec 6) on a channel tensor t (any geometry). kind: 0 B0, 1 S0. affine: y = g x + b.
 * B0: running_var (C) updated in training (m = momentum), read in inference. S0: groups as
 * given (must divide C). gamma, beta, v: C (NULL: 1, 0, 1). */
void nk_ref_evonorm_fwd(const nk_ref_chshape *t, int kind, size_t groups, int training,
                        int affine, double eps, double momentum, const double *x,
                        const double *gamma, const double *beta, const double *v,
                        double *running_var, double *y);
/* Exact backward; dgamma, dbeta, dv: C (overwritten). running_var: the forward's (inference). */
void nk_ref_evonorm_bwd(const nk_ref_chshape *t, int kind, size_t groups, int training,
                        int affine, double eps, const double *x, const double *gamma,
                        const double *v, const double *running_var, const double *dy, double *dx,
                        double *dgamma, double *dbeta, double *dv);
/* ---- Calibration and model merging: h-calibration, PCB-Merging ---- */

/* PCB-Merging, the official PCB_merge written literally (full sorts for the order statistics,
 * min-max by scanning, a constant row normalized to 0): n x d task vectors, keep ratio r, clip
 * ratio a, optional per-task lambdas; merged = scale * tau_m (+ theta0). Returns 0, or -1 when
 * an index is out of range. */
/* h-calibration: the code's hcalibration(...) loss of n x K probabilities (weighting 0:
 * unweighted, 1: clusters by the deterministic Lloyd's k-means of include/normkit.h), written
 * as the code computes it (separate windowed sums of p(1-o) and (1-p)o over the zero-padded
 * sorted events, divided by veclen + 1); and the ensemble calibrator's probabilities. */
double nk_ref_hcal_loss(size_t n, size_t K, const double *probs, const int64_t *labels,
                        size_t veclen, double epsilon, double lossweight, int leave_one_out,
                        int weighting, size_t clusters, size_t iters);
void nk_ref_hcal_ensemble_probs(size_t n, size_t K, const double *logits, size_t members,
                                const double *theta, const double *nu, double *probs);

int nk_ref_pcb_merge(size_t n, size_t d, const double *tv, double r, double a,
                     const double *lambdas, double scale, const double *theta0, double *merged);
/* ---- FakeLN and quantization (quant.c; spec §10, normkit.h "Research normalization layers:
 * FakeLN, power-of-two quantization, fused norm + quantize") ---- */
/* y = g (h - mean(h)) / sigma_bar + b per row (g = gamma, 1 + gamma with offset, or 1; b = beta
 * or 0); mean (rows) may be NULL. */
void nk_ref_fakeln_fwd(size_t rows, size_t cols, const double *h, double sigma_bar,
                       const double *gamma, const double *beta, int offset, double *y,
                       double *mean);
/* sqrt(var(h) + eps) of one row (biased variance, two-pass). */
double nk_ref_fakeln_row_std(size_t cols, const double *h, double eps);
/* FakeLN backward (spec 10): per row dx = (gh - mean(gh)) / sigma_bar (+ dh), gh = g dy;
 * dgamma += sum dy (h - mu) / sigma_bar, dbeta += sum dy (ADDED; either may be NULL). g as the
 * forward (offset: 1 + gamma). dh may be NULL. */
void nk_ref_fakeln_bwd(size_t rows, size_t cols, const double *h, double sigma_bar,
                       const double *gamma, int offset, const double *dy, const double *dh,
                       double *dx, double *dgamma, double *dbeta);
/* Per-row absmax int8: A = max|y|, q = clamp(rne(y 127 / A), -127, 127) (0 for A == 0); returns
 * the scale A / 127. */
double nk_ref_q8_row(size_t cols, const double *y, double *q);
/* The least integer e with m <= qmax 2^e (m >= 0 finite; -127 for m == 0), clamped to
 * [-127, 127]. */
int nk_ref_pow2_exp(double m, int qmax);
/* Power-of-two groups of one row: exps[k] for group k, q = clamp(rne(x 2^-e), -qmax, qmax). */
void nk_ref_pow2_quantize(size_t cols, const double *x, size_t group, int qmax, double *q,
                          int *exps);
/* ---- research row norms (rowvariants.c; spec §3.2 CRMSNorm, §11.1 L1 LayerNorm) ---- */

/* sqrt(pi/2), the L1 norm's constant */
#define NK_REF_L1_C1 1.2533141373155002512

/* CRMSNorm of each row c (cols = d): y = c / sqrt((sum c^2 + (sum c)^2)/(d+1) + eps) * scale
 * (scale 0 means 1); rstd (rows, may be NULL). */
void nk_ref_crmsnorm_fwd(size_t rows, size_t cols, const double *x, double eps, double scale,
                         double *y, double *rstd);
/* dx of CRMSNorm (with the scale applied to dy). */
void nk_ref_crmsnorm_bwd(size_t rows, size_t cols, const double *x, double eps, double scale,
                         const double *dy, double *dx);
/* L1 LayerNorm: y = ((h - mu)/(C1 mean|h - mu| + eps) * g + b) * scale; mean, rscale (rows,
 * may be NULL). gamma/beta NULL: 1/0; offset: g = 1 + gamma. */
void nk_ref_l1norm_fwd(size_t rows, size_t cols, const double *h, const double *gamma,
                       const double *beta, int offset, double eps, double scale, double *y,
                       double *mean, double *rscale);
/* dx, dgamma, dbeta (overwritten; may be NULL) of L1 LayerNorm, subgradient sign(0) = 0. */
void nk_ref_l1norm_bwd(size_t rows, size_t cols, const double *h, const double *gamma, int offset,
                       double eps, double scale, const double *dy, double *dx, double *dgamma,
                       double *dbeta);

/* The Pre-LN -> Pre-RMSNorm (crms 0) / Pre-CRMSNorm (crms 1) conversions (normkit.h
 * nk_preln_to_*; rowvariants.c), in long double, each result rounded once to double. Dense
 * row-major; gamma/beta/b NULL mean 1/0/0.
 * reader: W (out x D) -> W_out (out x Dn), Dn = D - crms, W_out[o][j] = W[o][j] g_j
 *   - crms W[o][D-1] g_{D-1}; b_out (out) = b + W beta.
 * writer: W (D x in) -> W_out (Dn x in), each column minus its mean over the D rows; b (D, may
 *   be NULL) -> b_out (Dn) likewise.
 * embedding: E (V x D) -> E_out (V x Dn), each row minus its mean. */
void nk_ref_preln_reader(int crms, size_t D, size_t out, const double *gamma, const double *beta,
                         const double *W, const double *b, double *W_out, double *b_out);
void nk_ref_preln_writer(int crms, size_t D, size_t in, const double *W, const double *b,
                         double *W_out, double *b_out);
void nk_ref_preln_embedding(int crms, size_t V, size_t D, const double *E, double *E_out);

#endif /* NK_REFERENCE_H */
