/*
 * rlcal.c — float64 references for the RL and calibration transforms (spec stats-optim-rl.md
 * Parts C and D), written line by line from the spec and the official code it cites:
 *   running mean/std   DLR-RM/stable-baselines3 common/running_mean_std.py (RunningMeanStd),
 *                      common/vec_env/vec_normalize.py (VecNormalize)
 *   GRPO               verl trainer/ppo/core_algos.py compute_grpo_outcome_advantage
 *   BNPO               changyi7231/BNPO recipe/bnpo/src/bnpo_ray_trainer.py
 *                      (compute_bnpo_outcome_advantage), density via pow and tgamma
 *   HL-Gauss/two-hot   arXiv 2403.03950 Appendix A listing (erf form, linspace edges)
 *   LSC                arXiv 2402.00742 (u = log sigmoid(r - r_ref)); numpy.quantile 'linear'
 *   calibration        gpleiss/temperature_scaling (NLL, _ECELoss); T by golden section
 *   compositional      Erb 2020 / spec D17: Omega = (Gamma + J)^-1 - J (Gauss-Jordan)
 *   CPN                mlvlab/BLiM training_utils.py (mean log-likelihood, cond - alpha prior)
 */
#include <math.h>
#include <stdlib.h>

#include "reference.h"

/* np.clip: NaN stays NaN (fmin/fmax alone would return a bound) */
static double clipd(double v, double lo, double hi) {
  return isnan(v) ? v : fmin(fmax(v, lo), hi);
}

/* ---- C13 running mean/std ---- */

void nk_ref_rms_init(size_t d, nk_ref_rms *s) {
  for (size_t j = 0; j < d; j++) s->mean[j] = 0.0, s->var[j] = 1.0;
  s->count = 1e-4;
}

void nk_ref_rms_update(size_t N, size_t d, const double *x, nk_ref_rms *s) {
  const double batch_count = (double)N;
  for (size_t j = 0; j < d; j++) {
    double bm = 0.0;
    for (size_t r = 0; r < N; r++) bm += x[r * d + j];
    bm /= batch_count;
    double bv = 0.0;
    for (size_t r = 0; r < N; r++) bv += (x[r * d + j] - bm) * (x[r * d + j] - bm);
    bv /= batch_count; /* np.var: biased */
    /* update_from_moments */
    const double delta = bm - s->mean[j];
    const double tot = s->count + batch_count;
    const double new_mean = s->mean[j] + delta * batch_count / tot;
    const double m_a = s->var[j] * s->count;
    const double m_b = bv * batch_count;
    const double m2 = m_a + m_b + delta * delta * s->count * batch_count / tot;
    s->mean[j] = new_mean;
    s->var[j] = m2 / tot;
  }
  s->count += batch_count;
}

void nk_ref_rms_normalize(size_t N, size_t d, const nk_ref_rms *s, double eps, double clip,
                          const double *x, double *y) {
  for (size_t r = 0; r < N; r++)
    for (size_t j = 0; j < d; j++)
      y[r * d + j] = clipd((x[r * d + j] - s->mean[j]) / sqrt(s->var[j] + eps), -clip, clip);
}

void nk_ref_vecnorm_reward(size_t E, double gamma, double eps, double clip, const double *r,
                           const unsigned char *done, double *ret, nk_ref_rms *ret_rms,
                           double *out) {
  for (size_t e = 0; e < E; e++) ret[e] = ret[e] * gamma + r[e];
  nk_ref_rms_update(E, 1, ret, ret_rms);
  for (size_t e = 0; e < E; e++)
    out[e] = clipd(r[e] / sqrt(ret_rms->var[0] + eps), -clip, clip);
  for (size_t e = 0; e < E; e++)
    if (done && done[e]) ret[e] = 0.0;
}

/* ---- GRPO (verl core_algos.compute_grpo_outcome_advantage) ---- */

void nk_ref_grpo(size_t groups, const size_t *sizes, const double *r, double eps, int unbiased,
                 int norm_by_std, double *adv) {
  size_t off = 0;
  for (size_t q = 0; q < groups; q++) {
    const size_t G = sizes[q];
    double mean = 0.0, std = 1.0;
    if (G > 1) {
      mean = 0.0;
      for (size_t i = 0; i < G; i++) mean += r[off + i];
      mean /= (double)G;
      double v = 0.0;
      for (size_t i = 0; i < G; i++) v += (r[off + i] - mean) * (r[off + i] - mean);
      std = sqrt(v / (double)(unbiased ? G - 1 : G));
    }
    for (size_t i = 0; i < G; i++)
      adv[off + i] = norm_by_std ? (r[off + i] - mean) / (std + eps) : r[off + i] - mean;
    off += G;
  }
}

/* ---- BNPO (changyi7231/BNPO compute_bnpo_outcome_advantage) ---- */

static double beta_pdf(double p, double a, double b) {
  /* p^(a-1) (1-p)^(b-1) / B(a, b); pow(0, 0) = 1. In logs: tgamma overflows for a + b > 171
   * and pow underflows, which made 0 * inf = NaN for the concentrated fits (alpha ~ 1e3) BNPO
   * reaches when the success rates barely vary. */
  if (isnan(p) || isnan(a) || isnan(b)) return NAN;
  const double lp = a == 1.0 ? 0.0 : (a - 1.0) * log(p);
  const double lq = b == 1.0 ? 0.0 : (b - 1.0) * log1p(-p);
  return exp(lp + lq - (lgamma(a) + lgamma(b) - lgamma(a + b)));
}

void nk_ref_bnpo(size_t groups, const size_t *sizes, const double *r, double r_min, double r_max,
                 double clip, double *adv, double *alpha, double *beta) {
  size_t n = 0, Q = 0;
  for (size_t q = 0; q < groups; q++) n += sizes[q], Q += sizes[q] > 0;
  double *R = malloc((n ? n : 1) * sizeof(double));
  double *p = malloc((groups ? groups : 1) * sizeof(double));
  for (size_t i = 0; i < n; i++) R[i] = (r[i] - r_min) / (r_max - r_min);
  size_t off = 0;
  for (size_t q = 0; q < groups; q++) {
    p[q] = 0.0;
    if (sizes[q] > 1) {
      for (size_t i = 0; i < sizes[q]; i++) p[q] += R[off + i];
      p[q] /= (double)sizes[q];
    }
    off += sizes[q];
  }
  double mean = 0.0, var = 1.0;
  if (Q > 1) {
    for (size_t q = 0; q < groups; q++)
      if (sizes[q]) mean += p[q];
    mean /= (double)Q;
    var = 0.0;
    for (size_t q = 0; q < groups; q++)
      if (sizes[q]) var += (p[q] - mean) * (p[q] - mean);
    var /= (double)(Q - 1);
  }
  double a = 1.0, b = 1.0;
  if (var != 0.0) {
    const double k = mean * (1.0 - mean) / var - 1.0;
    a = 1.0 + k * mean / 3.0;
    b = 1.0 + k * (1.0 - mean) / 3.0;
    if (a < 1.0) a = 1.0;
    if (b < 1.0) b = 1.0;
  }
  off = 0;
  for (size_t q = 0; q < groups; q++) {
    const double f = beta_pdf(p[q], a, b);
    double w = 1.0 / f;
    if (w > clip) w = clip;
    for (size_t i = 0; i < sizes[q]; i++) adv[off + i] = w * (R[off + i] - p[q]);
    off += sizes[q];
  }
  *alpha = a;
  *beta = b;
  free(R);
  free(p);
}

/* ---- HL-Gauss and two-hot (arXiv 2403.03950, Appendix A listing: transform_to_probs,
 * transform_from_probs), with the target clipped to the support ---- */

void nk_ref_hlgauss_target(size_t m, double v_min, double v_max, double sigma, double y,
                           double *probs) {
  y = clipd(y, v_min, v_max);
  double *cdf = malloc((m + 1) * sizeof(double));
  for (size_t i = 0; i <= m; i++) {
    const double z = v_min + (v_max - v_min) * (double)i / (double)m; /* linspace */
    cdf[i] = erf((z - y) / (sqrt(2.0) * sigma));
  }
  const double z = cdf[m] - cdf[0];
  for (size_t i = 0; i < m; i++) probs[i] = (cdf[i + 1] - cdf[i]) / z;
  free(cdf);
}

void nk_ref_two_hot_target(size_t m, double v_min, double v_max, double y, double *probs) {
  const double w = (v_max - v_min) / (double)m;
  for (size_t i = 0; i < m; i++) probs[i] = 0.0;
  if (m == 1) {
    probs[0] = 1.0;
    return;
  }
  if (isnan(y)) {
    for (size_t i = 0; i < m; i++) probs[i] = y;
    return;
  }
  double c[4096];
  for (size_t i = 0; i < m; i++) c[i] = v_min + w / 2 + w * (double)i;
  y = clipd(y, c[0], c[m - 1]);
  if (y == c[m - 1]) {
    probs[m - 1] = 1.0;
    return;
  }
  size_t j = 0;
  while (!(c[j] <= y && y < c[j + 1])) j++;
  probs[j] = (c[j + 1] - y) / (c[j + 1] - c[j]);
  probs[j + 1] = 1.0 - probs[j];
}

double nk_ref_hlgauss_decode(size_t m, double v_min, double v_max, const double *logits) {
  double mx = logits[0], den = 0.0, num = 0.0;
  for (size_t i = 1; i < m; i++)
    if (logits[i] > mx) mx = logits[i];
  for (size_t i = 0; i < m; i++) {
    const double q = exp(logits[i] - mx);
    const double centre = v_min + (v_max - v_min) * ((double)i + 0.5) / (double)m;
    den += q;
    num += q * centre;
  }
  return num / den;
}

double nk_ref_categorical_xent(size_t m, const double *logits, const double *target) {
  double mx = logits[0], s = 0.0;
  for (size_t i = 1; i < m; i++)
    if (logits[i] > mx) mx = logits[i];
  for (size_t i = 0; i < m; i++) s += exp(logits[i] - mx);
  double loss = 0.0;
  for (size_t i = 0; i < m; i++) {
    const double log_q = logits[i] - mx - log(s);
    if (target[i] != 0.0) loss -= target[i] * log_q;
  }
  return loss;
}

/* ---- LSC (arXiv 2402.00742) ---- */

double nk_ref_lsc(double r, double r_ref) {
  const double d = r - r_ref;
  /* log(1 / (1 + e^-d)), rearranged where e^-d or e^d would overflow */
  return d >= 0 ? -log1p(exp(-d)) : d - log1p(exp(d));
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double nk_ref_quantile_linear(size_t k, const double *x, double q) {
  double *s = malloc(k * sizeof(double));
  for (size_t i = 0; i < k; i++) s[i] = x[i];
  qsort(s, k, sizeof(double), cmp_double);
  const double h = (double)(k - 1) * q;
  const size_t lo = (size_t)floor(h), hi = lo + 1 < k ? lo + 1 : k - 1;
  /* an integral h is the order statistic itself (numpy's lerp would give inf * 0 = NaN next
   * to an infinite sample; normkit.h documents x_(h)) */
  const double v = h == floor(h) ? s[lo] : s[lo] + (h - floor(h)) * (s[hi] - s[lo]);
  free(s);
  return v;
}

/* ---- temperature scaling and ECE (Guo et al. 2017; gpleiss/temperature_scaling) ---- */

double nk_ref_temperature_nll(size_t n, size_t C, const double *z, const int64_t *y, double T) {
  double total = 0.0;
  for (size_t r = 0; r < n; r++) {
    /* -log_softmax(z / T)[y] */
    double mx = z[r * C] / T;
    for (size_t k = 1; k < C; k++) mx = fmax(mx, z[r * C + k] / T);
    double s = 0.0;
    for (size_t k = 0; k < C; k++) s += exp(z[r * C + k] / T - mx);
    total += -(z[r * C + (size_t)y[r]] / T - mx - log(s));
  }
  return total / (double)n;
}

double nk_ref_temperature_fit(size_t n, size_t C, const double *z, const int64_t *y,
                              double t_min, double t_max) {
  /* golden-section search on log T (NLL is unimodal in T) */
  const double phi = (sqrt(5.0) - 1.0) / 2.0;
  double a = log(t_min), b = log(t_max);
  double c = b - phi * (b - a), d = a + phi * (b - a);
  double fc = nk_ref_temperature_nll(n, C, z, y, exp(c));
  double fd = nk_ref_temperature_nll(n, C, z, y, exp(d));
  for (int it = 0; it < 200 && b - a > 1e-13; it++) {
    if (fc < fd) {
      b = d, d = c, fd = fc;
      c = b - phi * (b - a);
      fc = nk_ref_temperature_nll(n, C, z, y, exp(c));
    } else {
      a = c, c = d, fc = fd;
      d = a + phi * (b - a);
      fd = nk_ref_temperature_nll(n, C, z, y, exp(d));
    }
  }
  return exp(0.5 * (a + b));
}

void nk_ref_ece(size_t n, size_t C, const double *probs, const int64_t *y, size_t M, double *ece,
                double *mce, double *count, double *conf_mean, double *acc_mean) {
  double e = 0.0, worst = 0.0;
  for (size_t m = 0; m < M; m++) {
    const double lower = (double)m / (double)M, upper = (double)(m + 1) / (double)M;
    double cnt = 0.0, sc = 0.0, sa = 0.0;
    for (size_t r = 0; r < n; r++) {
      double conf = probs[r * C];
      size_t pred = 0;
      for (size_t k = 1; k < C; k++)
        if (probs[r * C + k] > conf) conf = probs[r * C + k], pred = k;
      if (conf > lower && conf <= upper) {
        cnt += 1;
        sc += conf;
        sa += pred == (size_t)y[r];
      }
    }
    const double prop = cnt / (double)n;
    count[m] = cnt;
    conf_mean[m] = acc_mean[m] = 0.0;
    if (prop > 0) {
      conf_mean[m] = sc / cnt;
      acc_mean[m] = sa / cnt;
      e += fabs(conf_mean[m] - acc_mean[m]) * prop;
      worst = fmax(worst, fabs(conf_mean[m] - acc_mean[m]));
    }
  }
  *ece = e;
  *mce = worst;
}

/* ---- compositional data (spec D17) ---- */

void nk_ref_closure(size_t D, double kappa, const double *x, double *out) {
  double s = 0.0;
  for (size_t i = 0; i < D; i++) s += x[i];
  for (size_t i = 0; i < D; i++) out[i] = kappa * x[i] / s;
}

void nk_ref_clr(size_t D, const double *x, double *out) {
  double lg = 0.0; /* log of the geometric mean */
  for (size_t i = 0; i < D; i++) lg += log(x[i]);
  lg /= (double)D;
  for (size_t i = 0; i < D; i++) out[i] = log(x[i]) - lg;
}

/* Inverts the D x D matrix a in place by Gauss-Jordan with partial pivoting. */
static void invert(size_t D, double *a) {
  double *aug = malloc(D * 2 * D * sizeof(double));
  for (size_t i = 0; i < D; i++)
    for (size_t j = 0; j < 2 * D; j++) aug[i * 2 * D + j] = j < D ? a[i * D + j] : (j - D == i);
  for (size_t c = 0; c < D; c++) {
    size_t piv = c;
    for (size_t r = c + 1; r < D; r++)
      if (fabs(aug[r * 2 * D + c]) > fabs(aug[piv * 2 * D + c])) piv = r;
    for (size_t j = 0; j < 2 * D; j++) {
      const double t = aug[c * 2 * D + j];
      aug[c * 2 * D + j] = aug[piv * 2 * D + j];
      aug[piv * 2 * D + j] = t;
    }
    const double d = aug[c * 2 * D + c];
    for (size_t j = 0; j < 2 * D; j++) aug[c * 2 * D + j] /= d;
    for (size_t r = 0; r < D; r++) {
      if (r == c) continue;
      const double f = aug[r * 2 * D + c];
      for (size_t j = 0; j < 2 * D; j++) aug[r * 2 * D + j] -= f * aug[c * 2 * D + j];
    }
  }
  for (size_t i = 0; i < D; i++)
    for (size_t j = 0; j < D; j++) a[i * D + j] = aug[i * 2 * D + D + j];
  free(aug);
}

void nk_ref_clr_partial_corr(size_t n, size_t D, const double *x, double *rho,
                             double *partial_var) {
  double *c = malloc(n * D * sizeof(double)), *mu = calloc(D, sizeof(double));
  double *g = malloc(D * D * sizeof(double));
  for (size_t r = 0; r < n; r++) nk_ref_clr(D, x + r * D, c + r * D);
  for (size_t r = 0; r < n; r++)
    for (size_t i = 0; i < D; i++) mu[i] += c[r * D + i] / (double)n;
  for (size_t i = 0; i < D; i++)
    for (size_t j = 0; j < D; j++) {
      double s = 0.0;
      for (size_t r = 0; r < n; r++) s += (c[r * D + i] - mu[i]) * (c[r * D + j] - mu[j]);
      g[i * D + j] = s / (double)(n - 1);
    }
  /* Omega = (Gamma + k J)^-1 - J / k for any k > 0 (Gamma 1 = 0); k = trace(Gamma) / D keeps
   * the shifted matrix as well conditioned as Gamma itself (k = 1 against log-ratio variances
   * of 1e-8 lost 8 digits: partial_var 2e-9 relative off, calib fuzz harness) */
  double k = 0.0;
  for (size_t i = 0; i < D; i++) k += g[i * D + i] / (double)D;
  if (!(k > 0.0) || !isfinite(k)) k = 1.0;
  for (size_t i = 0; i < D * D; i++) g[i] += k / (double)D; /* Gamma + k J */
  invert(D, g);
  for (size_t i = 0; i < D * D; i++) g[i] -= 1.0 / (k * (double)D); /* Omega */
  for (size_t i = 0; i < D; i++) {
    partial_var[i] = 1.0 / g[i * D + i];
    for (size_t j = 0; j < D; j++)
      rho[i * D + j] = i == j ? 1.0 : -g[i * D + j] / sqrt(g[i * D + i] * g[j * D + j]);
  }
  free(c);
  free(mu);
  free(g);
}

/* Partial correlation of alr_r coordinates i, j (i, j != r) given the others: from the inverse
 * of the alr covariance (Aitchison), for the reference-independence check. */
double nk_ref_alr_partial_corr(size_t n, size_t D, const double *x, size_t ref, size_t i,
                               size_t j) {
  const size_t K = D - 1;
  double *a = malloc(n * K * sizeof(double)), *mu = calloc(K, sizeof(double));
  double *g = malloc(K * K * sizeof(double));
  size_t idx[64], ii = 0, jj = 0;
  for (size_t k = 0, m = 0; k < D; k++)
    if (k != ref) {
      if (k == i) ii = m;
      if (k == j) jj = m;
      idx[m++] = k;
    }
  for (size_t r = 0; r < n; r++)
    for (size_t m = 0; m < K; m++) a[r * K + m] = log(x[r * D + idx[m]] / x[r * D + ref]);
  for (size_t r = 0; r < n; r++)
    for (size_t m = 0; m < K; m++) mu[m] += a[r * K + m] / (double)n;
  for (size_t p = 0; p < K; p++)
    for (size_t q = 0; q < K; q++) {
      double s = 0.0;
      for (size_t r = 0; r < n; r++) s += (a[r * K + p] - mu[p]) * (a[r * K + q] - mu[q]);
      g[p * K + q] = s / (double)(n - 1);
    }
  invert(K, g);
  const double v = -g[ii * K + jj] / sqrt(g[ii * K + ii] * g[jj * K + jj]);
  free(a);
  free(mu);
  free(g);
  return v;
}

/* ---- CPN (BLiM) ---- */

double nk_ref_cpn(size_t T, const double *logp_cond, const unsigned char *valid_cond,
                  const double *logp_prior, const unsigned char *valid_prior, double alpha) {
  /* loss = -logp per token; mean over counted positions; score = -(loss_c) + alpha loss_p */
  double lc = 0.0, nc = 0.0, lp = 0.0, np_ = 0.0;
  for (size_t t = 0; t < T; t++) {
    if (!valid_cond || valid_cond[t]) lc += -logp_cond[t], nc += 1;
    if (!valid_prior || valid_prior[t]) lp += -logp_prior[t], np_ += 1;
  }
  const double candidate_likelihood = -lc / nc, candidate_prior = -lp / np_;
  return candidate_likelihood - alpha * candidate_prior;
}
