/*
 * ttstats.c — float64 reference test-time statistics (spec stats-optim-rl.md A1–A3), computed
 * from the activations x (B x C x L) line by line as the official Python code does:
 *   alpha-BN   test-time-adaptation methods/bn.py AlphaBatchNorm
 *   UnMix-TNS  devavratTomar/unmixtns tta_experiments/unmixtns.py (BaseNormLayer, UnMixTNS2d)
 *   AdaB2N     lvyilin/AdaB2N models/utils/adab2n.py (get_eta, training_forward),
 *              models/derpp_ada.py (set_counts)
 * Temporaries are allocated (this is test code).
 */
#include <math.h>
#include <stdlib.h>

#include "reference.h"

static double xat(const double *x, size_t C, size_t L, size_t b, size_t c, size_t l) {
  return x[(b * C + c) * L + l];
}

static double sq(double v) { return v * v; }

/* torch.mean(x, dim=[2, 3]) */
static double instance_mean(const double *x, size_t C, size_t L, size_t b, size_t c) {
  double s = 0.0;
  for (size_t l = 0; l < L; l++) s += xat(x, C, L, b, c, l);
  return s / (double)L;
}

/* torch.var(x, dim=[2, 3], unbiased=False) */
static double instance_var(const double *x, size_t C, size_t L, size_t b, size_t c) {
  const double mu = instance_mean(x, C, L, b, c);
  double s = 0.0;
  for (size_t l = 0; l < L; l++) s += sq(xat(x, C, L, b, c, l) - mu);
  return s / (double)L;
}

/* ---- A1 alpha-BN ---- */

void nk_ref_alpha_bn_stats(size_t B, size_t C, size_t L, const double *x, double alpha,
                           int unbiased, const double *source_mean, const double *source_var,
                           double *mean, double *var) {
  const double n = (double)(B * L);
  for (size_t c = 0; c < C; c++) {
    /* the helper nn.BatchNorm2d(momentum=1.0) in training mode: running stats = batch stats,
     * running_var unbiased */
    double mu_t = 0.0;
    for (size_t b = 0; b < B; b++)
      for (size_t l = 0; l < L; l++) mu_t += xat(x, C, L, b, c, l);
    mu_t /= n;
    double ss = 0.0;
    for (size_t b = 0; b < B; b++)
      for (size_t l = 0; l < L; l++) ss += sq(xat(x, C, L, b, c, l) - mu_t);
    const double v_t = ss / (unbiased ? n - 1.0 : n);
    mean[c] = (1.0 - alpha) * source_mean[c] + alpha * mu_t;
    var[c] = (1.0 - alpha) * source_var[c] + alpha * v_t;
  }
}

/* ---- A2 UnMix-TNS ---- */

double nk_ref_unmixtns_lambda(double momentum, double batch, double batch_max) {
  double M = 1.0 - momentum; /* replace_bn_layers */
  M = pow(M, batch / batch_max);
  return 1.0 - M;
}

void nk_ref_unmixtns_init(size_t K, size_t C, double alpha_init, const double *source_mean,
                          const double *source_var, const double *xi, double *comp_mean,
                          double *comp_var) {
  double coeff = alpha_init;
  if (K == 1) coeff = 0.0;
  for (size_t k = 0; k < K; k++) {
    for (size_t c = 0; c < C; c++) {
      double noise = 0.0;
      if (K > 1)
        noise = sqrt(coeff * (double)K / (double)(K - 1)) * sqrt(source_var[c]) * xi[k * C + c];
      comp_mean[k * C + c] = source_mean[c] + noise;
      comp_var[k * C + c] = (1.0 - coeff) * source_var[c];
    }
  }
}

/* F.normalize(v, dim=-1): v / max(|v|, 1e-12) */
static void normalize(size_t n, const double *v, double *out) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += v[i] * v[i];
  double norm = sqrt(s);
  if (norm < 1e-12) norm = 1e-12;
  for (size_t i = 0; i < n; i++) out[i] = v[i] / norm;
}

void nk_ref_unmixtns_fwd(size_t K, size_t C, size_t B, size_t L, const double *x, double tau,
                         double lambda, double *comp_mean, double *comp_var, double *mean_bar,
                         double *var_bar, double *prob) {
  double *inst_mean = malloc(B * C * sizeof(double));
  double *inst_var = malloc(B * C * sizeof(double));
  double *inst_norm = malloc(B * C * sizeof(double));
  double *comp_norm = malloc(K * C * sizeof(double));
  double *mean_mat = malloc(B * K * C * sizeof(double));
  double *var_mat = malloc(B * K * C * sizeof(double));
  for (size_t b = 0; b < B; b++)
    for (size_t c = 0; c < C; c++) {
      inst_mean[b * C + c] = instance_mean(x, C, L, b, c);
      inst_var[b * C + c] = instance_var(x, C, L, b, c);
    }

  /* probs = softmax(einsum("bc,kc->bk", normalize(inst_mean), normalize(means)) / tau) */
  for (size_t k = 0; k < K; k++) normalize(C, comp_mean + k * C, comp_norm + k * C);
  for (size_t b = 0; b < B; b++) normalize(C, inst_mean + b * C, inst_norm + b * C);
  for (size_t b = 0; b < B; b++) {
    double *p = prob + b * K;
    for (size_t k = 0; k < K; k++) {
      double sim = 0.0;
      for (size_t c = 0; c < C; c++) sim += inst_norm[b * C + c] * comp_norm[k * C + c];
      p[k] = sim / tau;
    }
    double mx = p[0];
    for (size_t k = 1; k < K; k++)
      if (p[k] > mx) mx = p[k];
    double s = 0.0;
    for (size_t k = 0; k < K; k++) s += exp(p[k] - mx);
    for (size_t k = 0; k < K; k++) p[k] = exp(p[k] - mx) / s;
  }

  /* mean_mat, var_mat (B, K, C) with the components before the update */
  for (size_t b = 0; b < B; b++)
    for (size_t k = 0; k < K; k++)
      for (size_t c = 0; c < C; c++) {
        const double p = prob[b * K + k];
        mean_mat[(b * K + k) * C + c] = (1.0 - p) * comp_mean[k * C + c] + p * inst_mean[b * C + c];
        var_mat[(b * K + k) * C + c] = (1.0 - p) * comp_var[k * C + c] + p * inst_var[b * C + c];
      }

  /* mean = mean_k(mean_mat); var = mean_k(var_mat) + mean_k(mean_mat^2) - mean^2, clamped */
  for (size_t b = 0; b < B; b++)
    for (size_t c = 0; c < C; c++) {
      double m = 0.0, v = 0.0, m2 = 0.0;
      for (size_t k = 0; k < K; k++) {
        m += mean_mat[(b * K + k) * C + c];
        v += var_mat[(b * K + k) * C + c];
        m2 += mean_mat[(b * K + k) * C + c] * mean_mat[(b * K + k) * C + c];
      }
      m /= (double)K;
      v /= (double)K;
      m2 /= (double)K;
      double vb = v + m2 - m * m;
      if (vb < 0.0) vb = 0.0;
      mean_bar[b * C + c] = m;
      var_bar[b * C + c] = vb;
    }

  /* running_means_mat += lambda * mean_b(probs * (inst_mean - running_means_mat)), same for
   * the variances (both diffs taken from the matrices before this update) */
  for (size_t k = 0; k < K; k++)
    for (size_t c = 0; c < C; c++) {
      double dm = 0.0, dv = 0.0;
      for (size_t b = 0; b < B; b++) {
        dm += prob[b * K + k] * (inst_mean[b * C + c] - comp_mean[k * C + c]);
        dv += prob[b * K + k] * (inst_var[b * C + c] - comp_var[k * C + c]);
      }
      comp_mean[k * C + c] = comp_mean[k * C + c] + lambda * (dm / (double)B);
      comp_var[k * C + c] = comp_var[k * C + c] + lambda * (dv / (double)B);
    }
  free(inst_mean);
  free(inst_var);
  free(inst_norm);
  free(comp_norm);
  free(mean_mat);
  free(var_mat);
}

/* ---- A3 AdaB2N ---- */

double nk_ref_adab2n_eta(double momentum, double kappa, nk_ref_adab2n_state *st) {
  st->num_batches_tracked += 1.0;
  if (kappa == 0.0) return 1.0 / st->num_batches_tracked;
  if (kappa == 1.0) return momentum;
  if (!st->has_last_eta) {
    st->has_last_eta = 1;
    st->last_eta = pow(momentum, kappa);
    return st->last_eta;
  }
  const double eta = st->last_eta / (st->last_eta + pow(1.0 - momentum, kappa));
  st->last_eta = eta;
  return eta;
}

double nk_ref_adab2n_fwd(size_t B, size_t C, size_t L, const double *x, const int64_t *task_ids,
                         const double *phi, double momentum, double kappa,
                         nk_ref_adab2n_state *st, double *running_mean, double *running_var,
                         double *mean, double *var, double *w, double *omega, double *reg) {
  const double eta = nk_ref_adab2n_eta(momentum, kappa, st);
  const size_t T = st->tasks;
  if (task_ids != NULL && T > 0) {
    /* set_counts: task_counts_extended[k] = n_k; sample_task_counts[b] = n_{tau_b} */
    double *counts = calloc(T + 1, sizeof(double));
    double *conc = malloc((T + 1) * sizeof(double));
    double *sw = malloc(B * sizeof(double));
    for (size_t b = 0; b < B; b++) counts[task_ids[b]] += 1.0;
    double total = 0.0;
    for (size_t k = 0; k <= T; k++) {
      conc[k] = exp(phi[k]) + counts[k];
      total += conc[k];
    }
    for (size_t b = 0; b < B; b++) sw[b] = (conc[task_ids[b]] / total) / counts[task_ids[b]];
    for (size_t c = 0; c < C; c++) {
      /* batch_mean = input.mean([2,3]).t() @ sample_weights */
      double mu = 0.0;
      for (size_t b = 0; b < B; b++) mu += instance_mean(x, C, L, b, c) * sw[b];
      /* batch_var = (input - batch_mean).square().mean([2,3]).t() @ sample_weights */
      double v = 0.0;
      for (size_t b = 0; b < B; b++) {
        double s = 0.0;
        for (size_t l = 0; l < L; l++) s += sq(xat(x, C, L, b, c, l) - mu);
        v += (s / (double)L) * sw[b];
      }
      mean[c] = mu;
      var[c] = v;
    }
    if (w)
      for (size_t k = 0; k <= T; k++) w[k] = conc[k] / total;
    if (omega)
      for (size_t b = 0; b < B; b++) omega[b] = sw[b];
    free(counts);
    free(conc);
    free(sw);
  } else {
    /* torch.var_mean(input, [0, 2, 3], correction=0) */
    const double n = (double)(B * L);
    for (size_t c = 0; c < C; c++) {
      double mu = 0.0;
      for (size_t b = 0; b < B; b++)
        for (size_t l = 0; l < L; l++) mu += xat(x, C, L, b, c, l);
      mu /= n;
      double v = 0.0;
      for (size_t b = 0; b < B; b++)
        for (size_t l = 0; l < L; l++) v += sq(xat(x, C, L, b, c, l) - mu);
      mean[c] = mu;
      var[c] = v / n;
    }
  }
  /* running_mean.add_(batch_mean - running_mean, alpha=eta);
   * running_var.mul_(1 - eta).add_(batch_var, alpha=eta);
   * loss = mse(batch_mean, running_mean) + mse(batch_var, running_var) */
  double lm = 0.0, lv = 0.0;
  for (size_t c = 0; c < C; c++) {
    running_mean[c] = running_mean[c] + eta * (mean[c] - running_mean[c]);
    running_var[c] = running_var[c] * (1.0 - eta) + eta * var[c];
    lm += (mean[c] - running_mean[c]) * (mean[c] - running_mean[c]);
    lv += (var[c] - running_var[c]) * (var[c] - running_var[c]);
  }
  *reg = C > 0 ? lm / (double)C + lv / (double)C : 0.0;
  return eta;
}
