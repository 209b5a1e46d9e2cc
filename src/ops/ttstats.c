/*
 * ttstats.c — test-time statistics (spec stats-optim-rl.md Part A): alpha-BN, UnMix-TNS and
 * AdaB2N as update rules on moments. Every rule is evaluated in double from the given values and
 * rounded once where it lands in a float buffer. No kernels, no threads: the work is O(B*C*K) on
 * statistics, small next to computing the moments themselves. docs/ops/test-time.md.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "validate.h"

/* ---- shared checks -------------------------------------------------------------------------- */

/* No output may overlap any other buffer: exact aliasing is never allowed here. */

/* v in [0, 1] (NaN fails). */
static nk_status check_unit(nk_context *ctx, const char *op, const char *name, float v) {
  if (!(v >= 0.0f && v <= 1.0f))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s %g must be in [0, 1]", op, name,
                    (double)v);
  return NK_STATUS_OK;
}

/* Each of the n moments has a finite count >= min_count and m2 that is not negative (NaN data is
 * allowed and propagates). */
static nk_status check_moments(nk_context *ctx, const char *op, const char *name, size_t n,
                               const nk_moments *m, double min_count) {
  for (size_t i = 0; i < n; i++) {
    if (!(m[i].count >= min_count) || !isfinite(m[i].count))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s[%zu].count %g < %g", op, name, i,
                      m[i].count, min_count);
    if (m[i].m2 < 0.0)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s[%zu].m2 %g < 0", op, name, i,
                      m[i].m2);
  }
  return NK_STATUS_OK;
}

/* Each of the n variances is >= 0 or NaN. */
static nk_status check_variances(nk_context *ctx, const char *op, const char *name, size_t n,
                                 const float *v) {
  for (size_t i = 0; i < n; i++)
    if (v[i] < 0.0f)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s[%zu] = %g < 0", op, name, i,
                      (double)v[i]);
  return NK_STATUS_OK;
}

/* ---- alpha-BN ------------------------------------------------------------------------------- */

nk_status nk_tta_alpha_bn_stats(nk_context *ctx, size_t channels, float alpha_test,
                                int unbiased_test_var, const float *source_mean,
                                const float *source_var, const nk_moments *test, float *mean,
                                float *var) {
  static const char op[] = "tta_alpha_bn_stats";
  TRY(check_unit(ctx, op, "alpha_test", alpha_test));
  if (channels == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(source_mean);
  NK_REQUIRE_PTR(source_var);
  NK_REQUIRE_PTR(test);
  NK_REQUIRE_PTR(mean);
  NK_REQUIRE_PTR(var);
  span s[5];
  TRY(nk__vector_span(ctx, op, &s[0], "source_mean", source_mean, channels, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "source_var", source_var, channels, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "test", test, channels, sizeof(nk_moments), 0));
  TRY(nk__vector_span(ctx, op, &s[3], "mean", mean, channels, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "var", var, channels, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 5, nk__no_alias));
  TRY(check_variances(ctx, op, "source_var", channels, source_var));
  TRY(check_moments(ctx, op, "test", channels, test, unbiased_test_var ? 2.0 : 1.0));

  const double a = (double)alpha_test;
  for (size_t c = 0; c < channels; c++) {
    const nk_moments t = test[c];
    const double vt = t.m2 / (unbiased_test_var ? t.count - 1.0 : t.count);
    mean[c] = (float)((1.0 - a) * (double)source_mean[c] + a * t.mean);
    var[c] = (float)((1.0 - a) * (double)source_var[c] + a * vt);
  }
  return nk__ok(ctx);
}

/* ---- UnMix-TNS ------------------------------------------------------------------------------ */

nk_unmixtns_desc nk_unmixtns_desc_default(size_t components, size_t channels) {
  nk_unmixtns_desc d;
  d.components = components;
  d.channels = channels;
  d.tau = NK_UNMIXTNS_TAU_DEFAULT;
  d.lambda = 0.1f;
  d.alpha_init = NK_UNMIXTNS_ALPHA_INIT_DEFAULT;
  return d;
}

static nk_status check_unmixtns_desc(nk_context *ctx, const char *op, const nk_unmixtns_desc *d) {
  if (d == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  if (d->components == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: components (K) must be >= 1", op);
  if (!(d->tau > 0.0f) || !isfinite(d->tau))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: tau %g must be finite and > 0", op,
                    (double)d->tau);
  TRY(check_unit(ctx, op, "lambda", d->lambda));
  TRY(check_unit(ctx, op, "alpha_init", d->alpha_init));
  return NK_STATUS_OK;
}

nk_status nk_unmixtns_lambda(nk_context *ctx, float momentum, size_t batch, size_t batch_max,
                             float *lambda) {
  static const char op[] = "unmixtns_lambda";
  TRY(check_unit(ctx, op, "momentum", momentum));
  if (batch == 0 || batch_max == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: batch %zu and batch_max %zu must be >= 1",
                    op, batch, batch_max);
  NK_REQUIRE_PTR(lambda);
  *lambda = (float)(1.0 - pow(1.0 - (double)momentum, (double)batch / (double)batch_max));
  return nk__ok(ctx);
}

/* splitmix64 (Steele, Lea, Flood 2014; Vigna's reference code): one step of the generator. */
static uint64_t splitmix64_next(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* A uniform double in (0, 1): the top 53 bits, centred in their cell. */
static double uniform_open(uint64_t *state) {
  return ((double)(splitmix64_next(state) >> 11) + 0.5) * 0x1p-53;
}

nk_status nk_unmixtns_noise(nk_context *ctx, uint64_t seed, size_t n, float *xi) {
  static const char op[] = "unmixtns_noise";
  if (n == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(xi);
  uint64_t state = seed;
  const double two_pi = 6.283185307179586476925286766559;
  for (size_t i = 0; i < n; i += 2) {
    const double u1 = uniform_open(&state), u2 = uniform_open(&state);
    const double r = sqrt(-2.0 * log(u1));
    xi[i] = (float)(r * cos(two_pi * u2));
    if (i + 1 < n) xi[i + 1] = (float)(r * sin(two_pi * u2));
  }
  return nk__ok(ctx);
}

nk_status nk_unmixtns_init(nk_context *ctx, const nk_unmixtns_desc *desc,
                           const float *source_mean, const float *source_var, const float *xi,
                           float *comp_mean, float *comp_var) {
  static const char op[] = "unmixtns_init";
  TRY(check_unmixtns_desc(ctx, op, desc));
  const size_t K = desc->components, C = desc->channels;
  size_t KC;
  TRY(nk__check_product(ctx, op, "components * channels", K, C, &KC));
  if (C == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(source_mean);
  NK_REQUIRE_PTR(source_var);
  if (K > 1) NK_REQUIRE_PTR(xi);
  NK_REQUIRE_PTR(comp_mean);
  NK_REQUIRE_PTR(comp_var);
  span s[5];
  TRY(nk__vector_span(ctx, op, &s[0], "source_mean", source_mean, C, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "source_var", source_var, C, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "xi", K > 1 ? xi : NULL, KC, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[3], "comp_mean", comp_mean, KC, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "comp_var", comp_var, KC, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 5, nk__no_alias));
  TRY(check_variances(ctx, op, "source_var", C, source_var));

  /* K == 1: no noise and a = 0, so the single component is the source statistics exactly. */
  if (K == 1) {
    for (size_t c = 0; c < C; c++) {
      comp_mean[c] = source_mean[c];
      comp_var[c] = source_var[c];
    }
    return nk__ok(ctx);
  }
  const double a = desc->alpha_init;
  const double spread = sqrt(a * (double)K / (double)(K - 1));
  for (size_t k = 0; k < K; k++) {
    for (size_t c = 0; c < C; c++) {
      const double mu_s = source_mean[c], var_s = source_var[c];
      comp_mean[k * C + c] = (float)(mu_s + spread * sqrt(var_s) * (double)xi[k * C + c]);
      comp_var[k * C + c] = (float)((1.0 - a) * var_s);
    }
  }
  return nk__ok(ctx);
}

/* max(norm, NK_UNMIXTNS_SIM_EPS) as torch.clamp_min: NaN stays NaN. */
static double guarded_norm(double sum_squares) {
  const double n = sqrt(sum_squares);
  return n < NK_UNMIXTNS_SIM_EPS ? NK_UNMIXTNS_SIM_EPS : n;
}

nk_status nk_unmixtns_fwd(nk_context *ctx, const nk_unmixtns_desc *desc, size_t batch,
                          const nk_moments *inst, float *comp_mean, float *comp_var,
                          float *mean_bar, float *var_bar, double *prob) {
  static const char op[] = "unmixtns_fwd";
  TRY(check_unmixtns_desc(ctx, op, desc));
  const size_t K = desc->components, C = desc->channels, B = batch;
  size_t KC, BC, BK;
  TRY(nk__check_product(ctx, op, "components * channels", K, C, &KC));
  TRY(nk__check_product(ctx, op, "batch * channels", B, C, &BC));
  TRY(nk__check_product(ctx, op, "batch * components", B, K, &BK));
  if (B == 0 || C == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(inst);
  NK_REQUIRE_PTR(comp_mean);
  NK_REQUIRE_PTR(comp_var);
  NK_REQUIRE_PTR(mean_bar);
  NK_REQUIRE_PTR(var_bar);
  NK_REQUIRE_PTR(prob);
  span s[6];
  TRY(nk__vector_span(ctx, op, &s[0], "inst", inst, BC, sizeof(nk_moments), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "comp_mean", comp_mean, KC, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[2], "comp_var", comp_var, KC, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "mean_bar", mean_bar, BC, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "var_bar", var_bar, BC, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[5], "prob", prob, BK, sizeof(double), 1));
  TRY(nk__check_overlaps(ctx, op, s, 6, nk__no_alias));
  TRY(check_moments(ctx, op, "inst", BC, inst, 1.0));

  /* 1. p[b][k] = softmax_k(sim(xbar_b, mu_k) / tau), with the components before the update.
   *    prob first holds xbar_b . mu_k / max(|mu_k|, delta), then the logits, then p. */
  for (size_t k = 0; k < K; k++) {
    const float *mu = comp_mean + k * C;
    double ss = 0.0;
    for (size_t c = 0; c < C; c++) ss += (double)mu[c] * (double)mu[c];
    const double norm_k = guarded_norm(ss);
    for (size_t b = 0; b < B; b++) {
      const nk_moments *xb = inst + b * C;
      double dot = 0.0;
      for (size_t c = 0; c < C; c++) dot += xb[c].mean * (double)mu[c];
      prob[b * K + k] = dot / norm_k;
    }
  }
  const double tau = desc->tau;
  for (size_t b = 0; b < B; b++) {
    const nk_moments *xb = inst + b * C;
    double ss = 0.0;
    for (size_t c = 0; c < C; c++) ss += xb[c].mean * xb[c].mean;
    const double norm_b = guarded_norm(ss);
    double *p = prob + b * K;
    double mx = -INFINITY;
    for (size_t k = 0; k < K; k++) {
      p[k] = p[k] / norm_b / tau; /* sim in [-1, 1] over tau */
      if (p[k] > mx) mx = p[k];
    }
    double sum = 0.0;
    for (size_t k = 0; k < K; k++) {
      p[k] = exp(p[k] - mx);
      sum += p[k];
    }
    for (size_t k = 0; k < K; k++) p[k] /= sum;
  }

  /* 2. Per-instance mixed statistics over the equal-weight mixture of the K mixed components:
   *    mean_bar = (1/K) sum muhat,  var_bar = (1/K) sum vhat + (1/K) sum (muhat - mean_bar)^2. */
  for (size_t b = 0; b < B; b++) {
    const double *p = prob + b * K;
    for (size_t c = 0; c < C; c++) {
      const double xbar = inst[b * C + c].mean;
      const double s2 = inst[b * C + c].m2 / inst[b * C + c].count;
      double sum_mu = 0.0;
      for (size_t k = 0; k < K; k++)
        sum_mu += (1.0 - p[k]) * (double)comp_mean[k * C + c] + p[k] * xbar;
      const double mbar = sum_mu / (double)K;
      double sum_v = 0.0, sum_d2 = 0.0;
      for (size_t k = 0; k < K; k++) {
        const double muhat = (1.0 - p[k]) * (double)comp_mean[k * C + c] + p[k] * xbar;
        const double vhat = (1.0 - p[k]) * (double)comp_var[k * C + c] + p[k] * s2;
        sum_v += vhat;
        sum_d2 += (muhat - mbar) * (muhat - mbar);
      }
      double vbar = (sum_v + sum_d2) / (double)K;
      if (vbar < 0.0) vbar = 0.0; /* NaN stays NaN */
      mean_bar[b * C + c] = (float)mbar;
      var_bar[b * C + c] = (float)vbar;
    }
  }

  /* 3. Components move toward the batch, divisor B: mu_k += lambda (1/B) sum_b p (xbar - mu_k).
   *    lambda == 0 freezes them (not written). */
  if (desc->lambda == 0.0f) return nk__ok(ctx);
  const double lambda = desc->lambda;
  for (size_t k = 0; k < K; k++) {
    for (size_t c = 0; c < C; c++) {
      const double mu = comp_mean[k * C + c], v = comp_var[k * C + c];
      double dm = 0.0, dv = 0.0;
      for (size_t b = 0; b < B; b++) {
        const nk_moments *m = &inst[b * C + c];
        const double p = prob[b * K + k];
        dm += p * (m->mean - mu);
        dv += p * (m->m2 / m->count - v);
      }
      comp_mean[k * C + c] = (float)(mu + lambda * (dm / (double)B));
      comp_var[k * C + c] = (float)(v + lambda * (dv / (double)B));
    }
  }
  return nk__ok(ctx);
}

/* ---- AdaB2N --------------------------------------------------------------------------------- */

nk_adab2n_desc nk_adab2n_desc_default(size_t channels) {
  nk_adab2n_desc d;
  d.channels = channels;
  d.momentum = 0.1f;
  d.kappa = 1.0f;
  return d;
}

static nk_status check_adab2n(nk_context *ctx, const char *op, const nk_adab2n_desc *d,
                              const nk_adab2n_state *st) {
  if (d == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  TRY(check_unit(ctx, op, "momentum", d->momentum));
  TRY(check_unit(ctx, op, "kappa", d->kappa));
  if (st == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: state is NULL", op);
  if (st->num_batches_tracked < 0 || st->num_batches_tracked == INT64_MAX)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: state num_batches_tracked %lld outside [0, INT64_MAX)", op,
                    (long long)st->num_batches_tracked);
  if (!(st->last_eta >= 0.0 && st->last_eta <= 1.0))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: state last_eta %g outside [0, 1]", op,
                    st->last_eta);
  return NK_STATUS_OK;
}

/* The code's training_forward step 1: num_batches_tracked += 1; eta = get_eta(). */
static double advance_eta(const nk_adab2n_desc *d, nk_adab2n_state *st) {
  st->num_batches_tracked += 1;
  const double m = d->momentum, kappa = d->kappa;
  if (d->kappa == 0.0f) return 1.0 / (double)st->num_batches_tracked;
  if (d->kappa == 1.0f) return m;
  const double eta = st->last_eta == 0.0 ? pow(m, kappa)
                                         : st->last_eta / (st->last_eta + pow(1.0 - m, kappa));
  st->last_eta = eta;
  return eta;
}

nk_status nk_adab2n_next_eta(nk_context *ctx, const nk_adab2n_desc *desc,
                             nk_adab2n_state *state, double *eta) {
  static const char op[] = "adab2n_next_eta";
  TRY(check_adab2n(ctx, op, desc, state));
  span s[2];
  TRY(nk__vector_span(ctx, op, &s[0], "state", state, 1, sizeof *state, 1));
  TRY(nk__vector_span(ctx, op, &s[1], "eta", eta, 1, sizeof *eta, 1));
  TRY(nk__check_overlaps(ctx, op, s, 2, nk__no_alias));
  nk_adab2n_state next = *state;
  const double e = advance_eta(desc, &next);
  *state = next;
  if (eta) *eta = e;
  return nk__ok(ctx);
}

/* Validates the weights' arguments (tasks + 1 in *ntasks) without the overlap check. */
static nk_status check_weights(nk_context *ctx, const char *op, size_t tasks, size_t batch,
                               const int64_t *task_ids, const float *phi, double *task_weight,
                               double *omega, size_t *ntasks) {
  if (!nk__add_size(tasks, 1, ntasks))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: tasks + 1 overflows", op);
  NK_REQUIRE_PTR(task_ids);
  NK_REQUIRE_PTR(phi);
  NK_REQUIRE_PTR(task_weight);
  NK_REQUIRE_PTR(omega);
  for (size_t b = 0; b < batch; b++)
    if (task_ids[b] < 0 || (uint64_t)task_ids[b] > (uint64_t)tasks)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: task_ids[%zu] = %lld outside [0, %zu]",
                      op, b, (long long)task_ids[b], tasks);
  return NK_STATUS_OK;
}

/* w_k = (exp(phi_k) + n_k) / sum_j (exp(phi_j) + n_j); omega_b = w_{tau_b} / n_{tau_b}. The
 * outputs double as the counts' storage: w first holds n_k, omega first holds n_{tau_b}. */
static void compute_weights(size_t ntasks, size_t batch, const int64_t *task_ids,
                            const float *phi, double *w, double *omega) {
  for (size_t k = 0; k < ntasks; k++) w[k] = 0.0;
  for (size_t b = 0; b < batch; b++) w[task_ids[b]] += 1.0;
  for (size_t b = 0; b < batch; b++) omega[b] = w[task_ids[b]];
  double sum = 0.0;
  for (size_t k = 0; k < ntasks; k++) {
    w[k] = exp((double)phi[k]) + w[k];
    sum += w[k];
  }
  for (size_t k = 0; k < ntasks; k++) w[k] /= sum;
  for (size_t b = 0; b < batch; b++) omega[b] = w[task_ids[b]] / omega[b];
}

nk_status nk_adab2n_weights(nk_context *ctx, size_t tasks, size_t batch,
                            const int64_t *task_ids, const float *phi, double *task_weight,
                            double *omega) {
  static const char op[] = "adab2n_weights";
  if (batch == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: batch must be >= 1", op);
  size_t ntasks;
  TRY(check_weights(ctx, op, tasks, batch, task_ids, phi, task_weight, omega, &ntasks));
  span s[4];
  TRY(nk__vector_span(ctx, op, &s[0], "task_ids", task_ids, batch, sizeof(int64_t), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "phi", phi, ntasks, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "task_weight", task_weight, ntasks, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "omega", omega, batch, sizeof(double), 1));
  TRY(nk__check_overlaps(ctx, op, s, 4, nk__no_alias));
  compute_weights(ntasks, batch, task_ids, phi, task_weight, omega);
  return nk__ok(ctx);
}

nk_status nk_adab2n_fwd(nk_context *ctx, const nk_adab2n_desc *desc, nk_adab2n_state *state,
                        size_t batch, const nk_moments *inst, const int64_t *task_ids,
                        const float *phi, float *running_mean, float *running_var, float *mean,
                        float *var, double *task_weight, double *omega, double *reg) {
  static const char op[] = "adab2n_fwd";
  TRY(check_adab2n(ctx, op, desc, state));
  const size_t B = batch, C = desc->channels;
  if (B == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: batch must be >= 1 (a training step needs samples)", op);
  size_t BC, ntasks = 0;
  TRY(nk__check_product(ctx, op, "batch * channels", B, C, &BC));
  const int weighted = task_ids != NULL && state->tasks > 0;
  if (weighted)
    TRY(check_weights(ctx, op, state->tasks, B, task_ids, phi, task_weight, omega, &ntasks));
  if (C > 0) {
    NK_REQUIRE_PTR(inst);
    NK_REQUIRE_PTR(running_mean);
    NK_REQUIRE_PTR(running_var);
    NK_REQUIRE_PTR(mean);
    NK_REQUIRE_PTR(var);
  }
  span s[11];
  const size_t C1 = C > 0 ? C : 1; /* pointers are not used when C == 0 */
  TRY(nk__vector_span(ctx, op, &s[0], "inst", C > 0 ? inst : NULL, BC, sizeof(nk_moments), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "task_ids", weighted ? task_ids : NULL, B,
                      sizeof(int64_t), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "phi", weighted ? phi : NULL, ntasks, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[3], "running_mean", C > 0 ? running_mean : NULL, C1,
                      sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "running_var", C > 0 ? running_var : NULL, C1,
                      sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[5], "mean", C > 0 ? mean : NULL, C1, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[6], "var", C > 0 ? var : NULL, C1, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[7], "task_weight", weighted ? task_weight : NULL, ntasks,
                      sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[8], "omega", weighted ? omega : NULL, B, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[9], "reg", reg, 1, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[10], "state", state, 1, sizeof *state, 1));
  TRY(nk__check_overlaps(ctx, op, s, 11, nk__no_alias));
  if (C > 0) TRY(check_moments(ctx, op, "inst", BC, inst, 1.0));

  /* Everything is valid: from here on the step runs to completion. */
  nk_adab2n_state next = *state;
  const double eta = advance_eta(desc, &next);
  if (weighted) compute_weights(ntasks, B, task_ids, phi, task_weight, omega);
  double sum_dm = 0.0, sum_dv = 0.0;
  for (size_t c = 0; c < C; c++) {
    double mu, v;
    if (weighted) {
      /* mean = sum_b omega_b xbar_b; var = sum_b omega_b (1/L) sum_l (x - mean)^2, where
       * sum_l (x - mean)^2 = M2_b + L (xbar_b - mean)^2 exactly. */
      mu = 0.0;
      for (size_t b = 0; b < B; b++) mu += omega[b] * inst[b * C + c].mean;
      v = 0.0;
      for (size_t b = 0; b < B; b++) {
        const nk_moments *m = &inst[b * C + c];
        const double d = m->mean - mu;
        v += omega[b] * (m->m2 / m->count + d * d);
      }
    } else {
      nk_moments acc = {0.0, 0.0, 0.0};
      for (size_t b = 0; b < B; b++) nk_moments_merge(&acc, &inst[b * C + c]);
      mu = acc.mean;
      v = acc.m2 / acc.count;
    }
    const double rm = (double)running_mean[c] + eta * (mu - (double)running_mean[c]);
    const double rv = (1.0 - eta) * (double)running_var[c] + eta * v;
    mean[c] = (float)mu;
    var[c] = (float)v;
    running_mean[c] = (float)rm;
    running_var[c] = (float)rv;
    sum_dm += (mu - rm) * (mu - rm);
    sum_dv += (v - rv) * (v - rv);
  }
  if (reg) *reg = C > 0 ? sum_dm / (double)C + sum_dv / (double)C : 0.0;
  *state = next;
  return nk__ok(ctx);
}
