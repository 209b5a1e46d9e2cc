/*
 * optim.c — float64 references for weight and optimizer normalization (spec
 * stats-optim-rl.md Part B): weight normalization, AdamP, SGDP, Normalize-and-Project. Written
 * from the spec's formulas (and, for AdamP/SGDP, in the order of the official clovaai/AdamP
 * code), as plain loops over double arrays with no rounding.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

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

/* ---- AdamP / SGDP (B5), in the order of clovaai/AdamP adamp.py / sgdp.py ---- */

/* F.cosine_similarity(x, y, dim=1, eps).abs_() for one row, per-norm clamps (spec B5). */
static double ref_cos(const double *x, const double *y, size_t n, double eps) {
  const double nx = ref_norm(x, n), ny = ref_norm(y, n);
  return fabs(ref_dot(x, y, n)) / (fmax(nx, eps) * fmax(ny, eps));
}

/* _projection(p, grad, perturb, delta, wd_ratio, eps): returns the view (0 none, 1 channel,
 * 2 layer) and projects perturb in place; *wd = wd_ratio when projected, else 1. */
static int ref_projection(size_t n, size_t rows, const double *p, const double *grad,
                          double *perturb, double delta, double wd_ratio, double eps,
                          double *wd) {
  *wd = 1.0;
  for (int view = 1; view <= 2; view++) {
    const size_t R = view == 1 ? rows : 1, D = n / R;
    double cmax = -1.0;
    int nan = 0;
    for (size_t r = 0; r < R; r++) {
      const double c = ref_cos(grad + r * D, p + r * D, D, eps);
      if (c != c) nan = 1;
      if (c > cmax) cmax = c;
    }
    if (!nan && cmax < delta / sqrt((double)D)) {
      for (size_t r = 0; r < R; r++) {
        const double *pr = p + r * D;
        double *ur = perturb + r * D;
        const double denom = ref_norm(pr, D) + eps; /* p_n = p / (||p|| + eps) */
        double s = 0.0;                             /* sum(p_n * perturb) */
        for (size_t j = 0; j < D; j++) s += pr[j] / denom * ur[j];
        for (size_t j = 0; j < D; j++) ur[j] -= pr[j] / denom * s;
      }
      *wd = wd_ratio;
      return view;
    }
  }
  return 0;
}

int nk_ref_adamp_step(size_t n, size_t rows, const nk_ref_adamp_hp *hp, double *p,
                      const double *grad, double *exp_avg, double *exp_avg_sq, double *step) {
  const double beta1 = hp->beta1, beta2 = hp->beta2;
  *step += 1.0;
  const double bias_correction1 = 1.0 - pow(beta1, *step);
  const double bias_correction2 = 1.0 - pow(beta2, *step);
  double *perturb = malloc((n ? n : 1) * sizeof(double));
  for (size_t i = 0; i < n; i++) {
    exp_avg[i] = exp_avg[i] * beta1 + (1.0 - beta1) * grad[i];
    exp_avg_sq[i] = exp_avg_sq[i] * beta2 + (1.0 - beta2) * grad[i] * grad[i];
  }
  const double step_size = hp->lr / bias_correction1;
  for (size_t i = 0; i < n; i++) {
    const double denom = sqrt(exp_avg_sq[i]) / sqrt(bias_correction2) + hp->eps;
    perturb[i] = hp->nesterov ? (beta1 * exp_avg[i] + (1.0 - beta1) * grad[i]) / denom
                              : exp_avg[i] / denom;
  }
  double wd_ratio = 1.0;
  int view = 0;
  if (rows > 0)
    view = ref_projection(n, rows, p, grad, perturb, hp->delta, hp->wd_ratio, hp->eps, &wd_ratio);
  if (hp->weight_decay > 0)
    for (size_t i = 0; i < n; i++) p[i] *= 1.0 - hp->lr * hp->weight_decay * wd_ratio;
  for (size_t i = 0; i < n; i++) p[i] += -step_size * perturb[i];
  free(perturb);
  return view;
}

int nk_ref_sgdp_step(size_t n, size_t rows, const nk_ref_sgdp_hp *hp, double *p,
                     const double *grad, double *buf) {
  const double momentum = hp->momentum;
  double *d_p = malloc((n ? n : 1) * sizeof(double));
  for (size_t i = 0; i < n; i++) {
    buf[i] = buf[i] * momentum + (1.0 - hp->dampening) * grad[i];
    d_p[i] = hp->nesterov ? grad[i] + momentum * buf[i] : buf[i];
  }
  double wd_ratio = 1.0;
  int view = 0;
  if (rows > 0)
    view = ref_projection(n, rows, p, grad, d_p, hp->delta, hp->wd_ratio, hp->eps, &wd_ratio);
  if (hp->weight_decay != 0)
    for (size_t i = 0; i < n; i++)
      p[i] *= 1.0 - hp->lr * hp->weight_decay * wd_ratio / (1.0 - momentum);
  for (size_t i = 0; i < n; i++) p[i] += -hp->lr * d_p[i];
  free(d_p);
  return view;
}

/* ---- Normalize-and-Project (B7) ---- */

void nk_ref_nap_norms(int per_channel, size_t rows, size_t cols, const double *w, double *rho) {
  if (per_channel)
    for (size_t r = 0; r < rows; r++) rho[r] = ref_norm(w + r * cols, cols);
  else
    rho[0] = ref_norm(w, rows * cols);
}

void nk_ref_nap_project(int per_channel, size_t rows, size_t cols, double *w, const double *rho) {
  const size_t groups = per_channel ? rows : 1, len = per_channel ? cols : rows * cols;
  for (size_t k = 0; k < groups; k++) {
    double *wk = w + k * len;
    const double nrm = ref_norm(wk, len);
    if (nrm == 0.0) continue; /* guard ||W|| = 0: skip */
    for (size_t i = 0; i < len; i++) wk[i] = wk[i] / nrm * rho[k];
  }
}

double nk_ref_nap_schedule_lr(int kind, double lr_init, double lr_final, double warmup,
                              double total, double t) {
  if (t < warmup) return lr_init * t / warmup;
  if (kind == 0) return lr_init;
  const double p = fmin(1.0, (t - warmup) / (total - warmup));
  if (kind == 1) return (1.0 - p) * lr_init + p * lr_final;
  return lr_final + 0.5 * (lr_init - lr_final) * (1.0 + cos(3.14159265358979323846 * p));
}

/* ---- Conda (B6), one Conda.step on one matrix with a given basis ---- */

/* C (r x c) = op(A) op(B), op(X) = X or X^T; dims of op(A): r x k. */
static void ref_matmul(size_t r, size_t c, size_t k, const double *A, int ta, const double *B,
                       int tb, double *C) {
  for (size_t i = 0; i < r; i++)
    for (size_t j = 0; j < c; j++) {
      double s = 0.0;
      for (size_t q = 0; q < k; q++) {
        const double a = ta ? A[q * r + i] : A[i * k + q];
        const double b = tb ? B[j * k + q] : B[q * c + j];
        s += a * b;
      }
      C[i * c + j] = s;
    }
}

void nk_ref_conda_step(size_t a, size_t b, int side, const double *basis,
                       const nk_ref_conda_hp *hp, double *W, const double *g, double *m,
                       double *v, double *t) {
  const size_t n = a * b;
  double *gh = malloc(n * sizeof(double)), *mh = malloc(n * sizeof(double));
  double *N = malloc(n * sizeof(double)), *D = malloc(n * sizeof(double));
  for (size_t i = 0; i < n; i++) m[i] = hp->beta1 * m[i] + (1.0 - hp->beta1) * g[i];
  if (side == 1) { /* right: X P^T, back Y P; P = basis (b x b) */
    ref_matmul(a, b, b, g, 0, basis, 1, gh);
    ref_matmul(a, b, b, m, 0, basis, 1, mh);
  } else if (side == 2) { /* left: U^T X, back U Y; U = basis (a x a) */
    ref_matmul(a, b, a, basis, 1, g, 0, gh);
    ref_matmul(a, b, a, basis, 1, m, 0, mh);
  } else {
    for (size_t i = 0; i < n; i++) gh[i] = g[i], mh[i] = m[i];
  }
  for (size_t i = 0; i < n; i++) v[i] = hp->beta2 * v[i] + (1.0 - hp->beta2) * gh[i] * gh[i];
  *t += 1.0;
  double step_size = hp->lr;
  if (hp->correct_bias)
    step_size = hp->lr * sqrt(1.0 - pow(hp->beta2, *t)) / (1.0 - pow(hp->beta1, *t));
  for (size_t i = 0; i < n; i++) N[i] = mh[i] / (sqrt(v[i]) + hp->eps);
  if (side == 1)
    ref_matmul(a, b, b, N, 0, basis, 0, D);
  else if (side == 2)
    ref_matmul(a, b, a, basis, 0, N, 0, D);
  else
    for (size_t i = 0; i < n; i++) D[i] = N[i];
  for (size_t i = 0; i < n; i++) {
    W[i] += -step_size * (hp->scale * D[i]);
    W[i] += -hp->lr * hp->weight_decay * W[i];
  }
  free(gh), free(mh), free(N), free(D);
}
