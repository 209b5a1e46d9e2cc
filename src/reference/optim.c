/*
 * optim.c — float64 references for weight and optimizer normalization (spec
 * stats-optim-rl.md Part B): weight normalization, AdamP, SGDP, Normalize-and-Project. Written
 * from the spec's formulas (and, for AdamP/SGDP, in the order of the official clovaai/AdamP
 * code), as plain loops over double arrays with no rounding.
 */
#include <math.h>
#include <stddef.h>

#include "reference.h"

static double ref_norm(const double *x, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += x[i] * x[i];
  return sqrt(s);
}

static double ref_dot(const double *x, const double *y, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += x[i] * y[i];
  return s;
}

/* ---- weight normalization (B9) ---- */

void nk_ref_weight_norm_fwd(size_t rows, size_t cols, double eps, const double *v,
                            const double *g, double *w, double *norm) {
  for (size_t r = 0; r < rows; r++) {
    const double *vr = v + r * cols;
    const double nv = ref_norm(vr, cols);
    const double d = nv > eps ? nv : eps; /* max(||v||, eps); NaN handled by the caller */
    for (size_t j = 0; j < cols; j++) w[r * cols + j] = g[r] * (vr[j] / d);
    if (norm) norm[r] = nv;
  }
}

void nk_ref_weight_norm_bwd(size_t rows, size_t cols, double eps, const double *v,
                            const double *g, const double *dw, double *dv, double *dg) {
  for (size_t r = 0; r < rows; r++) {
    const double *vr = v + r * cols, *dwr = dw + r * cols;
    const double nv = ref_norm(vr, cols);
    if (nv >= eps) {
      /* grad_g = (dw . v) / ||v||;  grad_v = (g/||v||) dw - (g grad_g / ||v||^2) v */
      dg[r] = ref_dot(dwr, vr, cols) / nv;
      for (size_t j = 0; j < cols; j++)
        dv[r * cols + j] = g[r] / nv * dwr[j] - g[r] * dg[r] / (nv * nv) * vr[j];
    } else {
      dg[r] = ref_dot(dwr, vr, cols) / eps;
      for (size_t j = 0; j < cols; j++) dv[r * cols + j] = g[r] / eps * dwr[j];
    }
  }
}
