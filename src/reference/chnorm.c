/*
 * chnorm.c — float64 references of the channel norms and their statistics (spec/layers.md §14;
 * normkit.h "Moments" and "Channel norms"): moments, BatchNorm (training and inference, running
 * statistics, fused ReLU / add+ReLU, backward, folding), GroupNorm, InstanceNorm.
 *
 * Written to be obviously correct, not fast: every statistic is a plain two-pass over the
 * elements of its set (mean first, then the sum of squared deviations), addressed element by
 * element through the tensor geometry, with long double sums (64-bit mantissa on x86-64).
 * Results are rounded to double once at the end. A set with a NaN or +-inf gets NaN statistics.
 */
#include <math.h>

#include "reference.h"

/* ---- geometry ------------------------------------------------------------------------------ */

static size_t row_len(const nk_ref_chshape *t) { return t->nsc ? t->c : t->s; }
static size_t row_count(const nk_ref_chshape *t) { return t->nsc ? t->s : t->c; }
static size_t row_stride(const nk_ref_chshape *t) {
  return t->row_stride ? (size_t)t->row_stride : row_len(t);
}
static size_t n_stride(const nk_ref_chshape *t) {
  return t->n_stride ? (size_t)t->n_stride : row_count(t) * row_stride(t);
}

size_t nk_ref_chidx(const nk_ref_chshape *t, size_t n, size_t c, size_t s) {
  const size_t rs = row_stride(t);
  return n * n_stride(t) + (t->nsc ? s * rs + c : c * rs + s);
}

size_t nk_ref_chspan(const nk_ref_chshape *t) {
  if (t->n == 0 || t->c == 0 || t->s == 0) return 0;
  return nk_ref_chidx(t, t->n - 1, t->c - 1, t->s - 1) + 1;
}

/* ---- statistics ---------------------------------------------------------------------------- */

void nk_ref_moments(size_t n, const double *x, ptrdiff_t stride, double *mean, double *m2) {
  long double s = 0.0L, q = 0.0L;
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    const double v = x[(ptrdiff_t)i * stride];
    if (!isfinite(v)) bad = 1;
    s += v;
  }
  const long double mu = n ? s / (long double)n : 0.0L;
  for (size_t i = 0; i < n; i++) {
    const long double d = (long double)x[(ptrdiff_t)i * stride] - mu;
    q += d * d;
  }
  *mean = bad ? NAN : (double)mu;
  *m2 = bad ? NAN : (double)q;
}

/* Mean and biased variance of the elements (n, c, s) with n in [n0, n1), c in [c0, c1), all s:
 * two passes; NaN for both if any element is NaN or +-inf. */
static void set_stats(const nk_ref_chshape *t, const double *x, size_t n0, size_t n1, size_t c0,
                      size_t c1, long double *mean, long double *var) {
  long double s = 0.0L, q = 0.0L;
  int bad = 0;
  const long double count = (long double)((n1 - n0) * (c1 - c0) * t->s);
  for (size_t n = n0; n < n1; n++)
    for (size_t c = c0; c < c1; c++)
      for (size_t i = 0; i < t->s; i++) {
        const double v = x[nk_ref_chidx(t, n, c, i)];
        if (!isfinite(v)) bad = 1;
        s += v;
      }
  const long double mu = s / count;
  for (size_t n = n0; n < n1; n++)
    for (size_t c = c0; c < c1; c++)
      for (size_t i = 0; i < t->s; i++) {
        const long double d = (long double)x[nk_ref_chidx(t, n, c, i)] - mu;
        q += d * d;
      }
  *mean = bad ? NAN : mu;
  *var = bad ? NAN : q / count;
}

void nk_ref_channel_stats(const nk_ref_chshape *t, const double *x, double *mean, double *var) {
  for (size_t c = 0; c < t->c; c++) {
    long double m, v;
    set_stats(t, x, 0, t->n, c, c + 1, &m, &v);
    mean[c] = (double)m;
    var[c] = (double)v;
  }
}

void nk_ref_group_stats(const nk_ref_chshape *t, size_t groups, const double *x, double *mean,
                        double *var) {
  const size_t cg = t->c / groups;
  for (size_t n = 0; n < t->n; n++)
    for (size_t g = 0; g < groups; g++) {
      long double m, v;
      set_stats(t, x, n, n + 1, g * cg, (g + 1) * cg, &m, &v);
      mean[n * groups + g] = (double)m;
      var[n * groups + g] = (double)v;
    }
}

static long double rsqrt_eps(long double var, double eps) {
  return 1.0L / sqrtl(var + (long double)eps);
}

static double relu(long double v) { return v < 0.0L ? 0.0 : (double)v; }

/* ---- BatchNorm ----------------------------------------------------------------------------- */

void nk_ref_batchnorm_fwd(const nk_ref_chshape *t, const double *x, const double *z,
                          const double *gamma, const double *beta, double eps, int training,
                          int act, double momentum, int cumulative, double *running_mean,
                          double *running_var, int64_t *num_batches_tracked, double *y,
                          double *save_mean, double *save_rstd) {
  const size_t M = t->n * t->s;
  double m = momentum;
  const int update = training && running_mean != NULL && running_var != NULL;
  if (update && num_batches_tracked) ++*num_batches_tracked;
  if (update && cumulative) m = 1.0 / (double)*num_batches_tracked;
  for (size_t c = 0; c < t->c; c++) {
    long double mu, var;
    if (training) {
      set_stats(t, x, 0, t->n, c, c + 1, &mu, &var);
      if (update) {
        running_mean[c] = (double)((1.0L - m) * running_mean[c] + (long double)m * mu);
        running_var[c] = (double)((1.0L - m) * running_var[c] +
                                  (long double)m * var * (long double)M / (long double)(M - 1));
      }
    } else {
      mu = running_mean[c];
      var = running_var[c];
    }
    const long double r = rsqrt_eps(var, eps);
    const long double g = gamma ? gamma[c] : 1.0L, b = beta ? beta[c] : 0.0L;
    for (size_t n = 0; n < t->n; n++)
      for (size_t i = 0; i < t->s; i++) {
        const size_t k = nk_ref_chidx(t, n, c, i);
        long double v = ((long double)x[k] - mu) * r * g + b;
        if (act == NK_REF_ACT_ADD_RELU) v += z[k];
        y[k] = act == NK_REF_ACT_NONE ? (double)v : relu(v);
      }
    if (save_mean) save_mean[c] = (double)mu;
    if (save_rstd) save_rstd[c] = (double)r;
  }
}

static double masked(const double *mask_y, const double *dy, size_t k) {
  if (mask_y == NULL) return dy[k];
  return mask_y[k] <= 0.0 ? 0.0 : dy[k];
}

void nk_ref_batchnorm_bwd(const nk_ref_chshape *t, const double *x, const double *mask_y,
                          const double *gamma, double eps, int training, const double *mean,
                          const double *rstd, const double *dy, double *dx, double *dz,
                          double *dgamma, double *dbeta) {
  const long double M = (long double)(t->n * t->s);
  for (size_t c = 0; c < t->c; c++) {
    long double mu, r;
    if (training) {
      long double var;
      set_stats(t, x, 0, t->n, c, c + 1, &mu, &var);
      r = rsqrt_eps(var, eps);
    } else {
      mu = mean[c];
      r = rstd[c];
    }
    const long double g = gamma ? gamma[c] : 1.0L;
    long double sdy = 0.0L, sdyx = 0.0L;
    for (size_t n = 0; n < t->n; n++)
      for (size_t i = 0; i < t->s; i++) {
        const size_t k = nk_ref_chidx(t, n, c, i);
        const long double d = masked(mask_y, dy, k);
        sdy += d;
        sdyx += d * ((long double)x[k] - mu) * r;
      }
    for (size_t n = 0; n < t->n; n++)
      for (size_t i = 0; i < t->s; i++) {
        const size_t k = nk_ref_chidx(t, n, c, i);
        const long double d = masked(mask_y, dy, k);
        const long double xh = ((long double)x[k] - mu) * r;
        if (training)
          dx[k] = (double)(g * r / M * (M * d - sdy - xh * sdyx));
        else
          dx[k] = (double)(d * g * r);
        if (dz) dz[k] = (double)d;
      }
    if (dgamma) dgamma[c] = (double)sdyx;
    if (dbeta) dbeta[c] = (double)sdy;
  }
}

void nk_ref_batchnorm_bwd_sums(const nk_ref_chshape *t, const double *x, const double *mask_y,
                               const double *mean, const double *dy, double *sums) {
  for (size_t c = 0; c < t->c; c++) {
    long double s0 = 0.0L, s1 = 0.0L, s2 = 0.0L;
    for (size_t n = 0; n < t->n; n++)
      for (size_t i = 0; i < t->s; i++) {
        const size_t k = nk_ref_chidx(t, n, c, i);
        const long double d = masked(mask_y, dy, k), xc = (long double)x[k] - mean[c];
        s0 += d;
        s1 += d * xc;
        s2 += xc;
      }
    sums[3 * c] = (double)s0;
    sums[3 * c + 1] = (double)s1;
    sums[3 * c + 2] = (double)s2;
  }
}

void nk_ref_batchnorm_fold(size_t channels, double eps, const double *running_mean,
                           const double *running_var, const double *gamma, const double *beta,
                           double *scale, double *shift) {
  for (size_t c = 0; c < channels; c++) {
    const long double r = rsqrt_eps(running_var[c], eps);
    const long double gr = (gamma ? gamma[c] : 1.0L) * r;
    scale[c] = (double)gr;
    shift[c] = (double)((beta ? beta[c] : 0.0L) - running_mean[c] * gr);
  }
}

void nk_ref_batchnorm_fold_linear(size_t channels, size_t k, double eps,
                                  const double *running_mean, const double *running_var,
                                  const double *gamma, const double *beta, double *weight,
                                  const double *bias, double *bias_out) {
  for (size_t c = 0; c < channels; c++) {
    const long double r = rsqrt_eps(running_var[c], eps);
    const long double gr = (gamma ? gamma[c] : 1.0L) * r;
    for (size_t j = 0; j < k; j++) weight[c * k + j] = (double)(weight[c * k + j] * gr);
    bias_out[c] = (double)(((bias ? bias[c] : 0.0L) - running_mean[c]) * gr +
                           (beta ? beta[c] : 0.0L));
  }
}

/* ---- GroupNorm and InstanceNorm ------------------------------------------------------------ */

void nk_ref_groupnorm_fwd(const nk_ref_chshape *t, size_t groups, const double *x,
                          const double *gamma, const double *beta, double eps, double *y,
                          double *mean, double *rstd) {
  const size_t cg = t->c / groups;
  for (size_t n = 0; n < t->n; n++)
    for (size_t g = 0; g < groups; g++) {
      long double mu, var;
      set_stats(t, x, n, n + 1, g * cg, (g + 1) * cg, &mu, &var);
      const long double r = rsqrt_eps(var, eps);
      for (size_t c = g * cg; c < (g + 1) * cg; c++)
        for (size_t i = 0; i < t->s; i++) {
          const size_t k = nk_ref_chidx(t, n, c, i);
          y[k] = (double)(((long double)x[k] - mu) * r * (gamma ? gamma[c] : 1.0L) +
                          (beta ? beta[c] : 0.0L));
        }
      if (mean) mean[n * groups + g] = (double)mu;
      if (rstd) rstd[n * groups + g] = (double)r;
    }
}

void nk_ref_groupnorm_bwd(const nk_ref_chshape *t, size_t groups, const double *x,
                          const double *gamma, double eps, const double *dy, double *dx,
                          double *dgamma, double *dbeta) {
  const size_t cg = t->c / groups;
  const long double cnt = (long double)(cg * t->s);
  for (size_t c = 0; c < t->c; c++) {
    if (dgamma) dgamma[c] = 0.0;
    if (dbeta) dbeta[c] = 0.0;
  }
  for (size_t n = 0; n < t->n; n++)
    for (size_t g = 0; g < groups; g++) {
      long double mu, var, mg = 0.0L, mgx = 0.0L;
      set_stats(t, x, n, n + 1, g * cg, (g + 1) * cg, &mu, &var);
      const long double r = rsqrt_eps(var, eps);
      for (size_t c = g * cg; c < (g + 1) * cg; c++)
        for (size_t i = 0; i < t->s; i++) {
          const size_t k = nk_ref_chidx(t, n, c, i);
          const long double gh = (gamma ? gamma[c] : 1.0L) * dy[k];
          mg += gh;
          mgx += gh * ((long double)x[k] - mu) * r;
        }
      mg /= cnt;
      mgx /= cnt;
      for (size_t c = g * cg; c < (g + 1) * cg; c++) {
        long double sg = 0.0L, sb = 0.0L;
        for (size_t i = 0; i < t->s; i++) {
          const size_t k = nk_ref_chidx(t, n, c, i);
          const long double gh = (gamma ? gamma[c] : 1.0L) * dy[k];
          const long double xh = ((long double)x[k] - mu) * r;
          dx[k] = (double)(r * (gh - mg - xh * mgx));
          sg += dy[k] * xh;
          sb += dy[k];
        }
        if (dgamma) dgamma[c] = (double)(dgamma[c] + sg);
        if (dbeta) dbeta[c] = (double)(dbeta[c] + sb);
      }
    }
}

void nk_ref_instancenorm_fwd(const nk_ref_chshape *t, const double *x, const double *gamma,
                             const double *beta, double eps, int training, double momentum,
                             double *running_mean, double *running_var, double *y, double *mean,
                             double *rstd) {
  const int running = running_mean != NULL && running_var != NULL;
  const size_t N = t->n, C = t->c, S = t->s;
  for (size_t c = 0; c < C; c++) {
    long double sum_mu = 0.0L, sum_var = 0.0L;
    for (size_t n = 0; n < N; n++) {
      long double mu, var;
      if (running && !training) {
        mu = running_mean[c];
        var = running_var[c];
      } else {
        set_stats(t, x, n, n + 1, c, c + 1, &mu, &var);
        sum_mu += mu;
        sum_var += var * (long double)S / (long double)(S - 1);
      }
      const long double r = rsqrt_eps(var, eps);
      for (size_t i = 0; i < S; i++) {
        const size_t k = nk_ref_chidx(t, n, c, i);
        y[k] = (double)(((long double)x[k] - mu) * r * (gamma ? gamma[c] : 1.0L) +
                        (beta ? beta[c] : 0.0L));
      }
      if (mean) mean[n * C + c] = (double)mu;
      if (rstd) rstd[n * C + c] = (double)r;
    }
    if (running && training) {
      const long double m = momentum;
      running_mean[c] = (double)((1.0L - m) * running_mean[c] + m * sum_mu / (long double)N);
      running_var[c] = (double)((1.0L - m) * running_var[c] + m * sum_var / (long double)N);
    }
  }
}

void nk_ref_instancenorm_bwd(const nk_ref_chshape *t, int use_running, const double *x,
                             const double *gamma, double eps, const double *mean,
                             const double *rstd, const double *dy, double *dx, double *dgamma,
                             double *dbeta) {
  if (!use_running) {
    nk_ref_groupnorm_bwd(t, t->c, x, gamma, eps, dy, dx, dgamma, dbeta);
    return;
  }
  const size_t C = t->c;
  for (size_t c = 0; c < C; c++) {
    long double sg = 0.0L, sb = 0.0L;
    const long double g = gamma ? gamma[c] : 1.0L;
    for (size_t n = 0; n < t->n; n++) {
      const long double mu = mean[n * C + c], r = rstd[n * C + c];
      for (size_t i = 0; i < t->s; i++) {
        const size_t k = nk_ref_chidx(t, n, c, i);
        dx[k] = (double)(dy[k] * g * r);
        sg += dy[k] * ((long double)x[k] - mu) * r;
        sb += dy[k];
      }
    }
    if (dgamma) dgamma[c] = (double)sg;
    if (dbeta) dbeta[c] = (double)sb;
  }
}
