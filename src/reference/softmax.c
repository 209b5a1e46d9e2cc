/*
 * softmax.c — float64 references of the softmax family (spec/layers.md §12–13; normkit.h):
 * attention logits (formed in f32 exactly as the API defines them), softmax / log-softmax with an
 * optional sink, their backward, PyTorch's cross-entropy with label smoothing and z-loss, and
 * sigmoid attention scores.
 *
 * Written to be obviously correct, not fast: every sum is a long double sum (64-bit mantissa on
 * x86-64) of terms taken after subtracting the row maximum, so each term is <= 1 and a row of
 * 2^20 elements keeps a relative error below 2^-43, far under the 2e-6 bounds tested; exp and
 * log are expl and logl. Results are rounded to double once at the end.
 */
#include <math.h>

#include "reference.h"

void nk_ref_softmax_logits(size_t rows, size_t cols, const float *x, const float *mask,
                           size_t mask_rows, float scale, float alibi, int causal, size_t q_len,
                           ptrdiff_t causal_offset, double *z) {
  if (mask_rows == 0) mask_rows = rows;
  if (q_len == 0) q_len = rows;
  for (size_t i = 0; i < rows; i++) {
    const ptrdiff_t p = causal_offset + (ptrdiff_t)(i % q_len);
    for (size_t j = 0; j < cols; j++) {
      if (causal && (ptrdiff_t)j > p) {
        z[i * cols + j] = -INFINITY;
        continue;
      }
      float v = x[i * cols + j] * scale;
      if (mask) v = v + mask[(i % mask_rows) * cols + j];
      if (alibi != 0.0f) {
        const float d = (float)j - (float)p;
        const float a = alibi * d;
        v = v + a;
      }
      z[i * cols + j] = (double)v;
    }
  }
}

/* 1 if v is NaN or +inf (poisons a row). */
static int poison(double v) { return isnan(v) || v == INFINITY; }

void nk_ref_softmax_fwd(size_t rows, size_t cols, const double *z, const double *sink, int log,
                        int masked_nan, double *y, double *lse) {
  for (size_t i = 0; i < rows; i++) {
    const double *zr = z + i * cols;
    double *yr = y + i * cols;
    int bad = sink ? poison(sink[i]) : 0;
    double m = sink ? sink[i] : -INFINITY;
    for (size_t j = 0; j < cols; j++) {
      if (poison(zr[j])) bad = 1;
      if (zr[j] > m) m = zr[j];
    }
    if (bad) {
      for (size_t j = 0; j < cols; j++) yr[j] = NAN;
      if (lse) lse[i] = NAN;
      continue;
    }
    if (m == -INFINITY) { /* fully masked: no finite logit, no finite sink */
      for (size_t j = 0; j < cols; j++) yr[j] = masked_nan ? NAN : log ? -INFINITY : 0.0;
      if (lse) lse[i] = masked_nan ? NAN : -INFINITY;
      continue;
    }
    /* s = ones + rest: the terms at the maximum (e^0 = 1) are counted apart so that
     * log s = log1p(ones - 1 + rest) keeps rest even when it is below the long double ulp of 1
     * (log_softmax of the dominant entry is -rest, which bf16/f16 can represent). */
    long double rest = 0.0L, ones = 0.0L;
    for (size_t j = 0; j < cols; j++) {
      if (zr[j] == m) ones += 1.0L;
      else rest += expl((long double)zr[j] - (long double)m);
    }
    if (sink) {
      if (sink[i] == m) ones += 1.0L;
      else rest += expl((long double)sink[i] - (long double)m);
    }
    const long double s = ones + rest;
    const long double ls = log1pl((ones - 1.0L) + rest); /* ones >= 1: m is a term */
    for (size_t j = 0; j < cols; j++) {
      const long double t = (long double)zr[j] - (long double)m;
      yr[j] = log ? (double)(t - ls) : (double)(expl(t) / s);
    }
    if (lse) lse[i] = (double)((long double)m + ls);
  }
}

void nk_ref_softmax_bwd(size_t rows, size_t cols, const double *y, const double *dy, int log,
                        double scale, double *dx, double *dot) {
  for (size_t i = 0; i < rows; i++) {
    const double *yr = y + i * cols, *g = dy + i * cols;
    double *d = dx + i * cols;
    if (log) {
      int masked = 1;
      for (size_t j = 0; j < cols; j++)
        if (yr[j] != -INFINITY) masked = 0;
      if (masked) {
        for (size_t j = 0; j < cols; j++) d[j] = 0.0;
        if (dot) dot[i] = 0.0;
        continue;
      }
      long double G = 0.0L;
      for (size_t j = 0; j < cols; j++) G += g[j];
      for (size_t j = 0; j < cols; j++)
        d[j] = (double)((long double)scale * ((long double)g[j] - expl((long double)yr[j]) * G));
      if (dot) dot[i] = (double)G;
    } else {
      long double D = 0.0L;
      for (size_t j = 0; j < cols; j++) D += (long double)g[j] * yr[j];
      for (size_t j = 0; j < cols; j++)
        d[j] = (double)((long double)scale * yr[j] * ((long double)g[j] - D));
      if (dot) dot[i] = (double)D;
    }
  }
}

/* log(sum_j e^{z_j}) of one row as m + lg (m the row maximum, lg = log sum e^{z_j - m}, s the
 * sum), in long double: *lg NaN if a NaN or +inf logit, m -inf if no finite logit. The two parts
 * stay apart: at |m| ~ 1e30 the long double m + lg is m itself (its ulp is 1e11), and
 * L - z_t = (m - z_t) + lg, p_j = e^{z_j - m} / s keep lg where e^{z_j - L} would not (a
 * cross-entropy row of two equal logits 1e30 had p = 1 instead of 1/2: cross_entropy fuzz
 * harness, tests/fuzz/known/cross_entropy-bf16-dlogits-half). */
static void row_lse(size_t cols, const double *zr, long double *m_out, long double *lg,
                    long double *s_out) {
  double m = -INFINITY;
  *lg = 0.0L, *s_out = 1.0L;
  for (size_t j = 0; j < cols; j++) {
    if (poison(zr[j])) {
      *m_out = *lg = NAN;
      return;
    }
    if (zr[j] > m) m = zr[j];
  }
  *m_out = m;
  if (m == -INFINITY) return;
  long double s = 0.0L;
  for (size_t j = 0; j < cols; j++) s += expl((long double)zr[j] - (long double)m);
  *lg = logl(s), *s_out = s;
}

void nk_ref_cross_entropy(size_t rows, size_t cols, const double *z, const int64_t *target,
                          int64_t ignore_index, double ls, double zl, int reduction, double grad,
                          double *loss, double *dz, double *lse) {
  size_t counted = 0;
  for (size_t i = 0; i < rows; i++)
    if (target[i] != ignore_index) counted++;
  const long double w = reduction == 2 ? (counted ? 1.0L / (long double)counted : 0.0L) : 1.0L;
  long double total = 0.0L;
  for (size_t i = 0; i < rows; i++) {
    const double *zr = z + i * cols;
    long double m, lg, s;
    row_lse(cols, zr, &m, &lg, &s);
    const long double L = m + lg;
    if (lse) lse[i] = (double)L;
    long double li = 0.0L;
    if (target[i] == ignore_index) {
      if (dz)
        for (size_t j = 0; j < cols; j++) dz[i * cols + j] = 0.0;
    } else if (isnan(L) || L == -INFINITY) {
      li = NAN;
      if (dz)
        for (size_t j = 0; j < cols; j++) dz[i * cols + j] = NAN;
    } else {
      const size_t t = (size_t)target[i];
      if (ls != 1.0) li += (1.0L - ls) * ((m - (long double)zr[t]) + lg);
      if (ls != 0.0) {
        long double mean = 0.0L; /* of z - m */
        for (size_t j = 0; j < cols; j++) mean += (long double)zr[j] - m;
        mean /= (long double)cols;
        li += (long double)ls * (lg - mean);
      }
      if (zl != 0.0) li += (long double)zl * L * L;
      if (dz) {
        const long double c = (long double)grad * w;
        for (size_t j = 0; j < cols; j++) {
          const long double p = expl((long double)zr[j] - m) / s;
          long double d = p * (1.0L + 2.0L * zl * L) - (long double)ls / (long double)cols;
          if (j == t) d -= 1.0L - ls;
          dz[i * cols + j] = (double)(d * c);
        }
      }
    }
    if (reduction == 0)
      loss[i] = (double)li;
    else
      total += li;
  }
  if (reduction == 1) loss[0] = (double)total;
  if (reduction == 2) loss[0] = counted ? (double)(total / (long double)counted) : NAN;
}

void nk_ref_sigmoid_fwd(size_t n, const double *z, double *y) {
  for (size_t k = 0; k < n; k++) {
    const long double v = z[k];
    if (isnan(z[k])) {
      y[k] = NAN;
    } else if (v >= 0.0L) {
      y[k] = (double)(1.0L / (1.0L + expl(-v)));
    } else {
      const long double e = expl(v); /* 0 for -inf: a masked score */
      y[k] = (double)(e / (1.0L + e));
    }
  }
}

void nk_ref_sigmoid_bwd(size_t n, const double *y, const double *dy, double scale, double *dx) {
  for (size_t k = 0; k < n; k++)
    dx[k] = (double)((long double)scale * dy[k] * y[k] * (1.0L - (long double)y[k]));
}
