/* quant.c — float64 references of FakeLN (spec §10), the per-row absmax int8 quantization and
 * normkit's power-of-two group quantization (normkit.h "Research normalization layers"). Plain
 * double arithmetic; rounding to integers is half-to-even (nearbyint in the default mode). */
#include <math.h>

#include "reference.h"

void nk_ref_fakeln_fwd(size_t rows, size_t cols, const double *h, double sigma_bar,
                       const double *gamma, const double *beta, int offset, double *y,
                       double *mean) {
  for (size_t i = 0; i < rows; i++) {
    const double *hr = h + i * cols;
    double mu = 0.0;
    for (size_t j = 0; j < cols; j++) mu += hr[j];
    mu /= (double)cols;
    for (size_t j = 0; j < cols; j++) {
      const double g = gamma ? (offset ? 1.0 + gamma[j] : gamma[j]) : 1.0;
      y[i * cols + j] = g * (hr[j] - mu) / sigma_bar + (beta ? beta[j] : 0.0);
    }
    if (mean) mean[i] = mu;
  }
}

void nk_ref_fakeln_bwd(size_t rows, size_t cols, const double *h, double sigma_bar,
                       const double *gamma, int offset, const double *dy, const double *dh,
                       double *dx, double *dgamma, double *dbeta) {
  for (size_t i = 0; i < rows; i++) {
    const double *hr = h + i * cols, *gr = dy + i * cols;
    double mu = 0.0, mg = 0.0;
    for (size_t j = 0; j < cols; j++) {
      const double g = gamma ? (offset ? 1.0 + gamma[j] : gamma[j]) : 1.0;
      mu += hr[j];
      mg += g * gr[j];
    }
    mu /= (double)cols;
    mg /= (double)cols;
    for (size_t j = 0; j < cols; j++) {
      const double g = gamma ? (offset ? 1.0 + gamma[j] : gamma[j]) : 1.0;
      dx[i * cols + j] = (g * gr[j] - mg) / sigma_bar + (dh ? dh[i * cols + j] : 0.0);
      if (dgamma) dgamma[j] += gr[j] * (hr[j] - mu) / sigma_bar;
      if (dbeta) dbeta[j] += gr[j];
    }
  }
}

double nk_ref_fakeln_row_std(size_t cols, const double *h, double eps) {
  double mu = 0.0, var = 0.0;
  for (size_t j = 0; j < cols; j++) mu += h[j];
  mu /= (double)cols;
  for (size_t j = 0; j < cols; j++) var += (h[j] - mu) * (h[j] - mu);
  return sqrt(var / (double)cols + eps);
}

double nk_ref_q8_row(size_t cols, const double *y, double *q) {
  double a = 0.0;
  for (size_t j = 0; j < cols; j++) a = fabs(y[j]) > a ? fabs(y[j]) : a;
  for (size_t j = 0; j < cols; j++) {
    double v = a > 0.0 ? nearbyint(y[j] * 127.0 / a) : 0.0;
    q[j] = v > 127.0 ? 127.0 : v < -127.0 ? -127.0 : v;
  }
  return a / 127.0;
}

int nk_ref_pow2_exp(double m, int qmax) {
  if (m == 0.0) return -127;
  int e = -200;
  while (m > ldexp((double)qmax, e)) e++; /* the least e with m <= qmax 2^e */
  return e < -127 ? -127 : e > 127 ? 127 : e;
}

void nk_ref_pow2_quantize(size_t cols, const double *x, size_t group, int qmax, double *q,
                          int *exps) {
  for (size_t g0 = 0, k = 0; g0 < cols; g0 += group, k++) {
    const size_t g1 = g0 + group < cols ? g0 + group : cols;
    double m = 0.0;
    for (size_t j = g0; j < g1; j++) m = fabs(x[j]) > m ? fabs(x[j]) : m;
    const int e = nk_ref_pow2_exp(m, qmax);
    exps[k] = e;
    for (size_t j = g0; j < g1; j++) {
      const double v = nearbyint(ldexp(x[j], -e));
      q[j] = v > qmax ? qmax : v < -qmax ? -qmax : v;
    }
  }
}
