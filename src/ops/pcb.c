/*
 * pcb.c — PCB-Merging of task vectors (spec stats-optim-rl.md D18; include/normkit.h
 * "Calibration and model merging"; docs/ops/pcb-merge.md). The official code's PCB_merge in
 * double: magnitude clipping at order statistics, intra-balancing exp(n Norm(|tau|)^2),
 * inter-balancing tanh(tau * sum tau), drop at the threshold order statistic with a min-max
 * rescale, and the weighted mean of the clipped task vectors. Serial; caller workspace.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "validate.h"

nk_pcb_merge_desc nk_pcb_merge_desc_default(size_t tasks, size_t params) {
  nk_pcb_merge_desc d;
  d.tasks = tasks;
  d.params = params;
  d.keep_ratio = 0.1;
  d.clip_ratio = 1e-4;
  d.scale = 1.0;
  return d;
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The k-th smallest (0-based) of x[0..n) (finite values; x is permuted). Quickselect with a
 * median-of-three pivot and a three-way partition; after `budget` partitions the remaining
 * range is sorted (bounded worst case). */
static double select_kth(double *x, size_t n, size_t k) {
  size_t lo = 0, hi = n; /* the answer's index lies in [lo, hi) */
  int budget = 8;
  for (size_t m = n; m > 1; m >>= 1) budget += 2;
  while (hi - lo > 16 && budget-- > 0) {
    const double a = x[lo], b = x[lo + (hi - lo) / 2], c = x[hi - 1];
    const double piv = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
    /* Dutch flag: [lo, lt) < piv, [lt, i) == piv, (gt, hi) > piv. */
    size_t lt = lo, i = lo, gt = hi;
    while (i < gt) {
      const double v = x[i];
      if (v < piv) {
        x[i] = x[lt];
        x[lt] = v;
        lt++;
        i++;
      } else if (v > piv) {
        gt--;
        x[i] = x[gt];
        x[gt] = v;
      } else {
        i++;
      }
    }
    if (k < lt) hi = lt;
    else if (k >= gt) lo = gt;
    else return piv;
  }
  qsort(x + lo, hi - lo, sizeof(double), cmp_double);
  return x[k];
}

/* Python int() of a double: truncation toward zero; the caller checks the range. */
static int64_t py_int(double v) { return (int64_t)v; }

/* Validated indices of the desc (see the header). */
typedef struct pcb_idx {
  size_t lo, hi, kt;
} pcb_idx;

static nk_status check_desc(nk_context *ctx, const char *op, const nk_pcb_merge_desc *d,
                            pcb_idx *ix, size_t *ws_doubles) {
  if (d->tasks < 1 || d->tasks > NK_PCB_MAX_TASKS)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: tasks %zu must be in [1, %d]", op,
                    d->tasks, NK_PCB_MAX_TASKS);
  if (!(d->keep_ratio > 0.0 && d->keep_ratio <= 1.0))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: keep_ratio %g must be in (0, 1]", op,
                    d->keep_ratio);
  if (!(d->clip_ratio >= 0.0 && d->clip_ratio < 0.5))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: clip_ratio %g must be in [0, 0.5)",
                    op, d->clip_ratio);
  if (!isfinite(d->scale))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: scale %g must be finite", op,
                    d->scale);
  size_t nd, a, b;
  if (!nk__mul_size(d->tasks, d->params, &nd) || !nk__add_size(nd, d->params, &a) ||
      !nk__add_size(a, 2 * d->tasks, &b) || b > (SIZE_MAX - NK_WORKSPACE_ALIGN) / sizeof(double) ||
      d->params > ((size_t)1 << 52))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: tasks %zu x params %zu is too large",
                    op, d->tasks, d->params);
  *ws_doubles = b;
  if (d->params == 0) return NK_STATUS_OK;
  const double dd = (double)d->params;
  const int64_t lo = py_int(dd * d->clip_ratio), hi = py_int(dd * (1.0 - d->clip_ratio) - 1.0);
  const int64_t kt = py_int(dd * (1.0 - d->keep_ratio));
  if (lo < 0 || hi < lo || (uint64_t)hi >= (uint64_t)d->params)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: clip_ratio %g gives clip indices %lld > %lld for %zu params", op,
                    d->clip_ratio, (long long)lo, (long long)hi, d->params);
  if (kt < 0 || (uint64_t)kt >= (uint64_t)d->params)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: keep_ratio %g gives threshold index %lld outside [0, %zu)", op,
                    d->keep_ratio, (long long)kt, d->params);
  ix->lo = (size_t)lo;
  ix->hi = (size_t)hi;
  ix->kt = (size_t)kt;
  return NK_STATUS_OK;
}

nk_status nk_pcb_merge_workspace_size(nk_context *ctx, const nk_pcb_merge_desc *desc,
                                      size_t *bytes) {
  static const char op[] = "pcb_merge_workspace_size";
  NK_REQUIRE_PTR(desc);
  NK_REQUIRE_PTR(bytes);
  pcb_idx ix;
  size_t w = 0;
  TRY(check_desc(ctx, op, desc, &ix, &w));
  nk__ws_bytes(w * sizeof(double), bytes); /* plus the alignment slack: any address works */
  return nk__ok(ctx);
}

static double sgn(double v) { return (double)((v > 0.0) - (v < 0.0)); }

nk_status nk_pcb_merge(nk_context *ctx, const nk_pcb_merge_desc *desc, const float *tv,
                       const double *task_scales, const float *theta0, float *merged,
                       void *workspace, size_t workspace_bytes) {
  static const char op[] = "pcb_merge";
  NK_REQUIRE_PTR(desc);
  pcb_idx ix = {0, 0, 0};
  size_t wsd = 0;
  TRY(check_desc(ctx, op, desc, &ix, &wsd));
  const size_t n = desc->tasks, d = desc->params;
  if (d == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(tv);
  NK_REQUIRE_PTR(merged);
  size_t need = 0;
  nk__ws_bytes(wsd * sizeof(double), &need); /* cannot overflow: check_desc bounds wsd */
  TRY(nk__check_workspace(ctx, op, workspace, workspace_bytes, need));
  span s[5];
  TRY(nk__vector_span(ctx, op, &s[0], "task_vectors", tv, n * d, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "task_scales", task_scales, n, sizeof(double), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "theta0", theta0, d, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[3], "merged", merged, d, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "workspace", workspace, need, 1, 1));
  TRY(nk__check_overlaps(ctx, op, s, 5, nk__no_alias));
  for (size_t i = 0; i < n * d; i++)
    if (!isfinite(tv[i]))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                      "%s: task_vectors[%zu] = %g is not finite", op, i, (double)tv[i]);
  if (task_scales)
    for (size_t i = 0; i < n; i++)
      if (!isfinite(task_scales[i]))
        return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: task_scales[%zu] = %g", op, i,
                        task_scales[i]);

  double *P = nk__ws_align(workspace); /* n x d scores, then weights W */
  double *scratch = P + n * d; /* d */
  double *clip = scratch + d;  /* 2n: clip bounds [lo_i, hi_i] of |tau_i| */

  /* Magnitude clipping bounds per task. */
  for (size_t i = 0; i < n; i++) {
    const float *t = tv + i * d;
    for (size_t j = 0; j < d; j++) scratch[j] = fabs((double)t[j]);
    const double a = select_kth(scratch, d, ix.lo);
    const double b = select_kth(scratch, d, ix.hi);
    clip[2 * i] = a;
    clip[2 * i + 1] = b;
  }
  /* P = exp(n Norm(A)^2) tanh(tau * sum_j tau_j). Norm(A) = (A - lo) / (hi - lo): the clamped
   * row's minimum and maximum are the order statistics themselves. */
  const double nn = (double)n;
  for (size_t j = 0; j < d; j++) {
    double sum = 0.0;
    for (size_t k = 0; k < n; k++) sum += (double)tv[k * d + j];
    scratch[j] = sum;
  }
  for (size_t i = 0; i < n; i++) {
    const double a = clip[2 * i], b = clip[2 * i + 1], w = b - a;
    for (size_t j = 0; j < d; j++) {
      double A = fabs((double)tv[i * d + j]);
      A = A < a ? a : (A > b ? b : A);
      const double nrm = w > 0.0 ? (A - a) / w : 0.0;
      P[i * d + j] = exp(nn * nrm * nrm) * tanh((double)tv[i * d + j] * scratch[j]);
    }
  }
  /* Drop: W = Norm(max(P, t)), t the kt-th order statistic of the row. */
  for (size_t i = 0; i < n; i++) {
    double *p = P + i * d;
    memcpy(scratch, p, d * sizeof(double));
    const double t = select_kth(scratch, d, ix.kt);
    double mx = t;
    for (size_t j = 0; j < d; j++)
      if (p[j] > mx) mx = p[j];
    const double w = mx - t;
    for (size_t j = 0; j < d; j++) p[j] = w > 0.0 && p[j] > t ? (p[j] - t) / w : 0.0;
  }
  /* Weighted mean of the clipped task vectors. */
  for (size_t j = 0; j < d; j++) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
      const double x = (double)tv[i * d + j];
      double A = fabs(x);
      A = A < clip[2 * i] ? clip[2 * i] : (A > clip[2 * i + 1] ? clip[2 * i + 1] : A);
      const double lam = task_scales ? task_scales[i] : 1.0;
      const double W = P[i * d + j];
      num += W * (lam * (sgn(x) * A));
      den += W;
    }
    double m = desc->scale * (num / (den > 1e-12 ? den : 1e-12));
    if (theta0) m += (double)theta0[j];
    merged[j] = (float)m;
  }
  return nk__ok(ctx);
}
