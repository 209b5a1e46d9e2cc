/*
 * optim.c — weight and optimizer normalization (spec stats-optim-rl.md Part B): weight
 * normalization forward/backward, the AdamP and SGDP steps, Normalize-and-Project. Small exact
 * functions over dense f32 weights: every element is computed in double from its f32 inputs and
 * rounded once when stored; row reductions are sequential double sums in index order. No
 * kernels, no threads. docs/ops/weight-norm.md, docs/ops/optimizers.md, docs/ops/nap.md.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "validate.h"

/* ---- shared checks -------------------------------------------------------------------------- */

/* No exact aliasing is allowed: in-place updates are single IN/OUT buffers. */
static int no_alias(const span *out, const span *other) {
  (void)out;
  (void)other;
  return 0;
}

#define REQUIRE_PTR(p)                                                                           \
  do {                                                                                           \
    if ((p) == NULL)                                                                             \
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, #p);                \
  } while (0)

static nk_status check_shape(nk_context *ctx, const char *op, size_t rows, size_t cols,
                             size_t *n) {
  if (!nk__mul_size(rows, cols, n) || *n > (size_t)PTRDIFF_MAX / sizeof(float))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: rows %zu * cols %zu is too large", op,
                    rows, cols);
  return NK_STATUS_OK;
}

/* 0 <= v < inf (NaN fails). */
static nk_status check_nonneg(nk_context *ctx, const char *op, const char *name, double v) {
  if (!(v >= 0.0) || !isfinite(v))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s %g must be finite and >= 0", op,
                    name, v);
  return NK_STATUS_OK;
}

/* sum of squares of x[0..n) in double, in index order. */
static double sumsq(const float *x, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
  return s;
}

/* ---- weight normalization ------------------------------------------------------------------- */

nk_status nk_weight_norm_fwd(nk_context *ctx, size_t rows, size_t cols, float eps,
                             const float *v, const float *g, float *w, float *norm) {
  static const char op[] = "weight_norm_fwd";
  size_t n;
  TRY(check_nonneg(ctx, op, "eps", (double)eps));
  TRY(check_shape(ctx, op, rows, cols, &n));
  if (n == 0) return nk__ok(ctx);
  REQUIRE_PTR(v);
  REQUIRE_PTR(g);
  REQUIRE_PTR(w);
  span s[4];
  TRY(nk__vector_span(ctx, op, &s[0], "v", v, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "g", g, rows, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "w", w, n, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "norm", norm, rows, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 4, no_alias));

  for (size_t r = 0; r < rows; r++) {
    const float *vr = v + r * cols;
    const double nrm = sqrt(sumsq(vr, cols));
    /* fmax would turn a NaN norm into eps: keep NaN. */
    const double d = nrm < (double)eps ? (double)eps : nrm;
    const double scale = (double)g[r] / d;
    for (size_t j = 0; j < cols; j++) w[r * cols + j] = (float)(scale * (double)vr[j]);
    if (norm != NULL) norm[r] = (float)nrm;
  }
  return nk__ok(ctx);
}

nk_status nk_weight_norm_bwd(nk_context *ctx, size_t rows, size_t cols, float eps,
                             const float *v, const float *g, const float *dw, float *dv,
                             float *dg) {
  static const char op[] = "weight_norm_bwd";
  size_t n;
  TRY(check_nonneg(ctx, op, "eps", (double)eps));
  TRY(check_shape(ctx, op, rows, cols, &n));
  if (n == 0) return nk__ok(ctx);
  REQUIRE_PTR(v);
  REQUIRE_PTR(g);
  REQUIRE_PTR(dw);
  REQUIRE_PTR(dv);
  REQUIRE_PTR(dg);
  span s[5];
  TRY(nk__vector_span(ctx, op, &s[0], "v", v, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "g", g, rows, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "dw", dw, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[3], "dv", dv, n, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "dg", dg, rows, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 5, no_alias));

  for (size_t r = 0; r < rows; r++) {
    const float *vr = v + r * cols, *dwr = dw + r * cols;
    const double nrm = sqrt(sumsq(vr, cols));
    double dot = 0.0;
    for (size_t j = 0; j < cols; j++) dot += (double)dwr[j] * (double)vr[j];
    const double gr = (double)g[r];
    if (nrm < (double)eps) { /* clamped: d = eps does not depend on v */
      const double e = (double)eps;
      dg[r] = (float)(dot / e);
      for (size_t j = 0; j < cols; j++) dv[r * cols + j] = (float)(gr / e * (double)dwr[j]);
      continue;
    }
    const double dgr = dot / nrm;
    const double a = gr / nrm, b = gr * dgr / (nrm * nrm);
    for (size_t j = 0; j < cols; j++)
      dv[r * cols + j] = (float)(a * (double)dwr[j] - b * (double)vr[j]);
    dg[r] = (float)dgr;
  }
  return nk__ok(ctx);
}

