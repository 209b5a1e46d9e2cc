/*
 * merge.c — float64 reference of PCB-Merging (spec stats-optim-rl.md D18), written as the
 * official code's PCB_merge reads (duguodong7/pcb-merging pcb-merging.py: normalize, clamp,
 * act, PCB_merge), with torch.sort replaced by qsort and the spec's guard for constant rows.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"

static int cmp_d(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* sorted_x[k] of a row. */
static double order_stat(const double *x, size_t d, size_t k) {
  double *s = malloc(d * sizeof(double));
  memcpy(s, x, d * sizeof(double));
  qsort(s, d, sizeof(double), cmp_d);
  const double v = s[k];
  free(s);
  return v;
}

/* normalize(x, dim=1) with the constant-row guard: (x - min) / (max - min), or 0. */
static void normalize_row(double *x, size_t d) {
  double mn = x[0], mx = x[0];
  for (size_t j = 1; j < d; j++) {
    if (x[j] < mn) mn = x[j];
    if (x[j] > mx) mx = x[j];
  }
  for (size_t j = 0; j < d; j++) x[j] = mx > mn ? (x[j] - mn) / (mx - mn) : 0.0;
}

int nk_ref_pcb_merge(size_t n, size_t d, const double *tv, double r, double a,
                     const double *lambdas, double scale, const double *theta0, double *merged) {
  const long long lo = (long long)((double)d * a);
  const long long hi = (long long)((double)d * (1.0 - a) - 1.0);
  const long long kt = (long long)((double)d * (1.0 - r));
  if (lo < 0 || hi < lo || hi >= (long long)d || kt < 0 || kt >= (long long)d) return -1;
  double *absc = malloc(n * d * sizeof(double)), *clipped = malloc(n * d * sizeof(double));
  double *selfp = malloc(n * d * sizeof(double)), *task = malloc(n * d * sizeof(double));
  double *colsum = malloc(d * sizeof(double));
  /* all_checks_abs = clamp(|T|, a, a); clamped_all_checks = sign(T) * all_checks_abs */
  for (size_t i = 0; i < n; i++) {
    double *row = absc + i * d;
    for (size_t j = 0; j < d; j++) row[j] = fabs(tv[i * d + j]);
    const double mn = order_stat(row, d, (size_t)lo), mx = order_stat(row, d, (size_t)hi);
    for (size_t j = 0; j < d; j++) {
      row[j] = fmin(fmax(row[j], mn), mx);
      const double t = tv[i * d + j];
      clipped[i * d + j] = (t > 0 ? 1.0 : t < 0 ? -1.0 : 0.0) * row[j];
    }
  }
  /* self_pcb = normalize(all_checks_abs)^2, exp(n self_pcb); cross = tanh(T * sum_0 T) */
  for (size_t j = 0; j < d; j++) {
    colsum[j] = 0.0;
    for (size_t i = 0; i < n; i++) colsum[j] += tv[i * d + j];
  }
  for (size_t i = 0; i < n; i++) {
    memcpy(selfp + i * d, absc + i * d, d * sizeof(double));
    normalize_row(selfp + i * d, d);
    for (size_t j = 0; j < d; j++) {
      const double s = selfp[i * d + j];
      task[i * d + j] = exp((double)n * (s * s)) * tanh(tv[i * d + j] * colsum[j]);
    }
  }
  /* scale = normalize(clamp(task_pcb, 1 - r)) */
  for (size_t i = 0; i < n; i++) {
    double *row = task + i * d;
    const double t = order_stat(row, d, (size_t)kt);
    for (size_t j = 0; j < d; j++) row[j] = fmax(row[j], t);
    normalize_row(row, d);
  }
  for (size_t j = 0; j < d; j++) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
      num += clipped[i * d + j] * (lambdas ? lambdas[i] : 1.0) * task[i * d + j];
      den += task[i * d + j];
    }
    merged[j] = scale * (num / fmax(den, 1e-12)) + (theta0 ? theta0[j] : 0.0);
  }
  free(absc);
  free(clipped);
  free(selfp);
  free(task);
  free(colsum);
  return 0;
}
