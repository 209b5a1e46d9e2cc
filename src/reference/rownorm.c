/* rownorm.c — float64 reference LayerNorm and RMSNorm, forward and backward (spec §1, §2.1). */
#include <math.h>

#include "reference.h"

static double gain(const double *gamma, int offset, size_t j) {
  if (gamma == NULL) return 1.0;
  return offset ? 1.0 + gamma[j] : gamma[j];
}

void nk_ref_layernorm_fwd(size_t rows, size_t cols, const double *h, const double *gamma,
                          const double *beta, int offset, double eps, double *y, double *mean,
                          double *rstd) {
  for (size_t i = 0; i < rows; i++) {
    const double *hr = h + i * cols;
    double mu = 0.0, var = 0.0;
    for (size_t j = 0; j < cols; j++) mu += hr[j];
    mu /= (double)cols;
    for (size_t j = 0; j < cols; j++) var += (hr[j] - mu) * (hr[j] - mu);
    var /= (double)cols;
    double r = 1.0 / sqrt(var + eps);
    for (size_t j = 0; j < cols; j++)
      y[i * cols + j] = (hr[j] - mu) * r * gain(gamma, offset, j) + (beta ? beta[j] : 0.0);
    if (mean) mean[i] = mu;
    if (rstd) rstd[i] = r;
  }
}

void nk_ref_layernorm_bwd(size_t rows, size_t cols, const double *h, const double *gamma,
                          int offset, double eps, const double *dy, double *dx, double *dgamma,
                          double *dbeta) {
  for (size_t j = 0; j < cols; j++) {
    if (dgamma) dgamma[j] = 0.0;
    if (dbeta) dbeta[j] = 0.0;
  }
  for (size_t i = 0; i < rows; i++) {
    const double *hr = h + i * cols, *g = dy + i * cols;
    double mu = 0.0, var = 0.0;
    for (size_t j = 0; j < cols; j++) mu += hr[j];
    mu /= (double)cols;
    for (size_t j = 0; j < cols; j++) var += (hr[j] - mu) * (hr[j] - mu);
    var /= (double)cols;
    double r = 1.0 / sqrt(var + eps);
    double mg = 0.0, mgx = 0.0;
    for (size_t j = 0; j < cols; j++) {
      double gh = g[j] * gain(gamma, offset, j), xh = (hr[j] - mu) * r;
      mg += gh;
      mgx += gh * xh;
    }
    mg /= (double)cols;
    mgx /= (double)cols;
    for (size_t j = 0; j < cols; j++) {
      double gh = g[j] * gain(gamma, offset, j), xh = (hr[j] - mu) * r;
      dx[i * cols + j] = r * (gh - mg - xh * mgx);
      if (dgamma) dgamma[j] += g[j] * xh;
      if (dbeta) dbeta[j] += g[j];
    }
  }
}

void nk_ref_rmsnorm_fwd(size_t rows, size_t cols, const double *h, const double *gamma,
                        const double *beta, int offset, double eps, double *y, double *rstd) {
  for (size_t i = 0; i < rows; i++) {
    const double *hr = h + i * cols;
    double q = 0.0;
    for (size_t j = 0; j < cols; j++) q += hr[j] * hr[j];
    q /= (double)cols;
    double r = 1.0 / sqrt(q + eps);
    for (size_t j = 0; j < cols; j++)
      y[i * cols + j] = hr[j] * r * gain(gamma, offset, j) + (beta ? beta[j] : 0.0);
    if (rstd) rstd[i] = r;
  }
}

void nk_ref_rmsnorm_bwd(size_t rows, size_t cols, const double *h, const double *gamma,
                        int offset, double eps, const double *dy, double *dx, double *dgamma,
                        double *dbeta) {
  for (size_t j = 0; j < cols; j++) {
    if (dgamma) dgamma[j] = 0.0;
    if (dbeta) dbeta[j] = 0.0;
  }
  for (size_t i = 0; i < rows; i++) {
    const double *hr = h + i * cols, *g = dy + i * cols;
    double q = 0.0;
    for (size_t j = 0; j < cols; j++) q += hr[j] * hr[j];
    q /= (double)cols;
    double r = 1.0 / sqrt(q + eps);
    double mgx = 0.0;
    for (size_t j = 0; j < cols; j++) mgx += g[j] * gain(gamma, offset, j) * hr[j] * r;
    mgx /= (double)cols;
    for (size_t j = 0; j < cols; j++) {
      double gh = g[j] * gain(gamma, offset, j), xh = hr[j] * r;
      dx[i * cols + j] = r * (gh - xh * mgx);
      if (dgamma) dgamma[j] += g[j] * xh;
      if (dbeta) dbeta[j] += g[j];
    }
  }
}
