/* rowvariants.c — float64 references of the research row norms (spec §3.2 CRMSNorm, §11.1 L1
 * LayerNorm), straight from the formulas. `scale` is the LayerNorm Scaling factor (0 = 1). */
#include <math.h>

#include "reference.h"

static double gain(const double *gamma, int offset, size_t j) {
  if (gamma == NULL) return 1.0;
  return offset ? 1.0 + gamma[j] : gamma[j];
}

static double sgn(double v) { return v > 0.0 ? 1.0 : v < 0.0 ? -1.0 : 0.0; }

static double crms_rstd(size_t d, const double *c, double eps) {
  double s = 0.0, q = 0.0;
  for (size_t i = 0; i < d; i++) s += c[i], q += c[i] * c[i];
  return 1.0 / sqrt((q + s * s) / (double)(d + 1) + eps);
}

void nk_ref_crmsnorm_fwd(size_t rows, size_t cols, const double *x, double eps, double scale,
                         double *y, double *rstd) {
  const double s = scale == 0.0 ? 1.0 : scale;
  for (size_t r = 0; r < rows; r++) {
    const double *c = x + r * cols;
    const double rs = crms_rstd(cols, c, eps);
    for (size_t i = 0; i < cols; i++) y[r * cols + i] = c[i] * rs * s;
    if (rstd) rstd[r] = rs;
  }
}

void nk_ref_crmsnorm_bwd(size_t rows, size_t cols, const double *x, double eps, double scale,
                         const double *dy, double *dx) {
  const double s = scale == 0.0 ? 1.0 : scale;
  for (size_t r = 0; r < rows; r++) {
    const double *c = x + r * cols, *g = dy + r * cols;
    const double rs = crms_rstd(cols, c, eps);
    double sh = 0.0, gx = 0.0;
    for (size_t i = 0; i < cols; i++) sh += c[i] * rs, gx += g[i] * s * c[i] * rs;
    for (size_t i = 0; i < cols; i++)
      dx[r * cols + i] = rs * (g[i] * s - (c[i] * rs + sh) * gx / (double)(cols + 1));
  }
}

static void l1_stats(size_t n, const double *h, double eps, double *mu, double *rs) {
  double m = 0.0, a = 0.0;
  for (size_t i = 0; i < n; i++) m += h[i];
  m /= (double)n;
  for (size_t i = 0; i < n; i++) a += fabs(h[i] - m);
  *mu = m;
  *rs = 1.0 / (NK_REF_L1_C1 * (a / (double)n) + eps);
}

void nk_ref_l1norm_fwd(size_t rows, size_t cols, const double *h, const double *gamma,
                       const double *beta, int offset, double eps, double scale, double *y,
                       double *mean, double *rscale) {
  const double s = scale == 0.0 ? 1.0 : scale;
  for (size_t r = 0; r < rows; r++) {
    const double *hr = h + r * cols;
    double mu, rs;
    l1_stats(cols, hr, eps, &mu, &rs);
    for (size_t i = 0; i < cols; i++)
      y[r * cols + i] = ((hr[i] - mu) * rs * gain(gamma, offset, i) + (beta ? beta[i] : 0.0)) * s;
    if (mean) mean[r] = mu;
    if (rscale) rscale[r] = rs;
  }
}

void nk_ref_l1norm_bwd(size_t rows, size_t cols, const double *h, const double *gamma, int offset,
                       double eps, double scale, const double *dy, double *dx, double *dgamma,
                       double *dbeta) {
  const double s = scale == 0.0 ? 1.0 : scale, n = (double)cols;
  for (size_t j = 0; j < cols; j++) {
    if (dgamma) dgamma[j] = 0.0;
    if (dbeta) dbeta[j] = 0.0;
  }
  for (size_t r = 0; r < rows; r++) {
    const double *hr = h + r * cols, *g = dy + r * cols;
    double mu, rs;
    l1_stats(cols, hr, eps, &mu, &rs);
    double mg = 0.0, mgx = 0.0, me = 0.0;
    for (size_t i = 0; i < cols; i++) {
      const double gh = g[i] * s * gain(gamma, offset, i), xh = (hr[i] - mu) * rs;
      mg += gh;
      mgx += gh * xh;
      me += sgn(xh);
    }
    mg /= n, mgx /= n, me /= n;
    for (size_t i = 0; i < cols; i++) {
      const double gh = g[i] * s * gain(gamma, offset, i), xh = (hr[i] - mu) * rs;
      dx[r * cols + i] = rs * (gh - mg - NK_REF_L1_C1 * mgx * (sgn(xh) - me));
      if (dgamma) dgamma[i] += g[i] * s * xh;
      if (dbeta) dbeta[i] += g[i] * s;
    }
  }
}

/* ---- Pre-LN -> Pre-RMSNorm / Pre-CRMSNorm conversions (spec §3.3) ---------------------------- */

void nk_ref_preln_reader(int crms, size_t D, size_t out, const double *gamma, const double *beta,
                         const double *W, const double *b, double *W_out, double *b_out) {
  const size_t Dn = crms ? D - 1 : D;
  for (size_t o = 0; o < out; o++) {
    const double *w = W + o * D;
    long double acc = b ? b[o] : 0.0L;
    for (size_t j = 0; beta && j < D; j++) acc += (long double)w[j] * beta[j]; /* NULL: no term */
    b_out[o] = (double)acc;
    const long double last = crms ? (long double)w[D - 1] * (gamma ? gamma[D - 1] : 1.0L) : 0.0L;
    for (size_t j = 0; j < Dn; j++)
      W_out[o * Dn + j] = (double)((long double)w[j] * (gamma ? gamma[j] : 1.0L) - last);
  }
}

void nk_ref_preln_writer(int crms, size_t D, size_t in, const double *W, const double *b,
                         double *W_out, double *b_out) {
  const size_t Dn = crms ? D - 1 : D;
  for (size_t j = 0; j < in; j++) {
    long double m = 0.0L;
    for (size_t i = 0; i < D; i++) m += W[i * in + j];
    m /= (long double)D;
    for (size_t i = 0; i < Dn; i++) W_out[i * in + j] = (double)(W[i * in + j] - m);
  }
  if (b != NULL) {
    long double m = 0.0L;
    for (size_t i = 0; i < D; i++) m += b[i];
    m /= (long double)D;
    for (size_t i = 0; i < Dn; i++) b_out[i] = (double)(b[i] - m);
  }
}

void nk_ref_preln_embedding(int crms, size_t V, size_t D, const double *E, double *E_out) {
  const size_t Dn = crms ? D - 1 : D;
  for (size_t v = 0; v < V; v++) {
    long double m = 0.0L;
    for (size_t i = 0; i < D; i++) m += E[v * D + i];
    m /= (long double)D;
    for (size_t i = 0; i < Dn; i++) E_out[v * Dn + i] = (double)(E[v * D + i] - m);
  }
}
