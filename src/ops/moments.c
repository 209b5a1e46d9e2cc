/*
 * moments.c — the (count, mean, M2) statistics: Chan's merge, finalization, and the public
 * row/column moment operators (their block kernels live in src/kernels/chnorm/).
 */
#include <math.h>
#include <stddef.h>

#include "internal.h"
#include "validate.h"

void nk_moments_merge(nk_moments *acc, const nk_moments *b) {
  if (acc == NULL || b == NULL || b->count == 0.0) return;
  if (acc->count == 0.0) {
    *acc = *b;
    return;
  }
  const double na = acc->count, nb = b->count, n = na + nb;
  const double delta = b->mean - acc->mean;
  acc->mean = acc->mean + delta * (nb / n);
  acc->m2 = acc->m2 + b->m2 + delta * delta * (na * nb / n);
  acc->count = n;
}

void nk_moments_merge_n(size_t n, nk_moments *dst, const nk_moments *src) {
  if (dst == NULL || src == NULL) return;
  for (size_t i = 0; i < n; i++) nk_moments_merge(&dst[i], &src[i]);
}

nk_status nk_moments_finalize(const nk_moments *m, float eps, float *mean, float *var,
                              float *var_unbiased, float *rstd) {
  if (m == NULL || !(eps >= 0.0f) || !isfinite(eps)) return NK_STATUS_INVALID_ARGUMENT;
  const double n = m->count;
  const double v = n > 0.0 ? m->m2 / n : NAN;
  if (mean) *mean = n > 0.0 ? (float)m->mean : NAN;
  if (var) *var = (float)v;
  if (var_unbiased) *var_unbiased = n > 1.0 ? (float)(m->m2 / (n - 1.0)) : NAN;
  if (rstd) *rstd = (float)(1.0 / sqrt(v + (double)eps));
  return NK_STATUS_OK;
}
