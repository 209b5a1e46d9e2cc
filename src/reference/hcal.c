/*
 * hcal.c — float64 reference of h-calibration (spec stats-optim-rl.md D14), following the
 * official code (WenjianHuang93/h-Calibration loss/hCalib.py, models/tsensemble_linear.py)
 * step by step: flatten, sort by log(p + 1e-20) (ties by index), zero-pad, windowed means of
 * p(1-o) and (1-p)o, |difference|, relu(T - eps), weighting, mean over the leave-one-class-out
 * sets, times lossweight. The k-means is the library's documented deterministic substitute.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"

typedef struct ref_ev {
  double key;
  size_t idx;
} ref_ev;

static int ref_cmp(const void *a, const void *b) {
  const ref_ev *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

/* Lloyd's 1-D k-means: quantile start, iters rounds, then the final assignment. */
static void ref_kmeans(const double *v, size_t E, size_t C, size_t iters, size_t *id,
                       double *count) {
  double *cen = malloc(C * sizeof(double)), *sum = malloc(C * sizeof(double));
  for (size_t c = 0; c < C; c++) {
    size_t k = (size_t)floor((double)(2 * c + 1) * (double)E / (double)(2 * C));
    cen[c] = v[k < E ? k : E - 1];
  }
  for (size_t it = 0;; it++) {
    memset(sum, 0, C * sizeof(double));
    memset(count, 0, C * sizeof(double));
    for (size_t i = 0; i < E; i++) {
      size_t b = 0;
      for (size_t c = 1; c < C; c++)
        if (fabs(v[i] - cen[c]) < fabs(v[i] - cen[b])) b = c;
      id[i] = b;
      sum[b] += v[i];
      count[b] += 1.0;
    }
    if (it == iters) break;
    for (size_t c = 0; c < C; c++)
      if (count[c] > 0) cen[c] = sum[c] / count[c];
  }
  free(cen);
  free(sum);
}

static double ref_subfunc(size_t E, const double *p, const double *o, size_t veclen, double eps,
                          int weighting, size_t C, size_t iters) {
  if (E == 0) return 0.0;
  ref_ev *ev = malloc(E * sizeof(ref_ev));
  for (size_t i = 0; i < E; i++) {
    ev[i].key = log(p[i] + 1e-20);
    ev[i].idx = i;
  }
  qsort(ev, E, sizeof(ref_ev), ref_cmp);
  const size_t r = veclen / 2, L = E + 2 * r;
  double *a = calloc(L, sizeof(double)), *b = calloc(L, sizeof(double));
  double *ps = malloc(E * sizeof(double)), *e = malloc(E * sizeof(double));
  for (size_t i = 0; i < E; i++) {
    const double pp = p[ev[i].idx], oo = o[ev[i].idx];
    ps[i] = pp;
    a[r + i] = pp * (1.0 - oo);
    b[r + i] = (1.0 - pp) * oo;
  }
  const double w = (double)(veclen + 1);
  for (size_t i = 0; i < E; i++) {
    double sa = 0.0, sb = 0.0;
    for (size_t t = 0; t <= veclen; t++) {
      sa += a[i + t] / w;
      sb += b[i + t] / w;
    }
    e[i] = fmax(fabs(sa - sb) - eps, 0.0);
  }
  double h = 0.0;
  if (weighting == 0) {
    for (size_t i = 0; i < E; i++) h += e[i];
    h /= (double)E;
  } else {
    size_t *id = malloc(E * sizeof(size_t));
    double *cnt = malloc(C * sizeof(double)), *bin = calloc(C, sizeof(double));
    ref_kmeans(ps, E, C, iters, id, cnt);
    for (size_t i = 0; i < E; i++) bin[id[i]] += e[i];
    for (size_t c = 0; c < C; c++) h += bin[c] / (cnt[c] + 1e-5);
    h /= (double)C;
    free(id);
    free(cnt);
    free(bin);
  }
  free(ev);
  free(a);
  free(b);
  free(ps);
  free(e);
  return h;
}

double nk_ref_hcal_loss(size_t n, size_t K, const double *probs, const int64_t *labels,
                        size_t veclen, double epsilon, double lossweight, int leave_one_out,
                        int weighting, size_t clusters, size_t iters) {
  double *p = malloc((n * K + 1) * sizeof(double)), *o = malloc((n * K + 1) * sizeof(double));
  double total = 0.0;
  const size_t sets = leave_one_out ? K : 1;
  for (size_t e = 0; e < sets; e++) {
    size_t E = 0;
    for (size_t r = 0; r < n; r++) {
      if (leave_one_out && labels[r] == (int64_t)e) continue;
      for (size_t c = 0; c < K; c++) {
        p[E] = probs[r * K + c];
        o[E] = labels[r] == (int64_t)c ? 1.0 : 0.0;
        E++;
      }
    }
    total += ref_subfunc(E, p, o, veclen, epsilon, weighting, clusters, iters);
  }
  free(p);
  free(o);
  return n == 0 ? 0.0 : total / (double)sets * lossweight;
}

void nk_ref_hcal_ensemble_probs(size_t n, size_t K, const double *logits, size_t members,
                                const double *theta, const double *nu, double *probs) {
  double wsum = 0.0;
  for (size_t k = 0; k < members; k++) wsum += fabs(nu[k]);
  double *x = malloc(K * sizeof(double));
  for (size_t r = 0; r < n; r++) {
    const double *z = logits + r * K;
    double m = z[0], s = 0.0;
    for (size_t c = 1; c < K; c++) m = fmax(m, z[c]);
    for (size_t c = 0; c < K; c++) s += exp(z[c] - m);
    for (size_t c = 0; c < K; c++) x[c] = z[c] - (m + log(s));
    for (size_t c = 0; c < K; c++) probs[r * K + c] = 0.0;
    for (size_t k = 0; k < members; k++) {
      const double a = fabs(theta[k]);
      double mx = a * x[0], den = 0.0;
      for (size_t c = 1; c < K; c++) mx = fmax(mx, a * x[c]);
      for (size_t c = 0; c < K; c++) den += exp(a * x[c] - mx);
      for (size_t c = 0; c < K; c++)
        probs[r * K + c] += exp(a * x[c] - mx) / den * (fabs(nu[k]) / wsum);
    }
  }
  free(x);
}
