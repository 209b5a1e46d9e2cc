/*
 * tests/ops/cross_entropy.c — the fused softmax cross-entropy (nk_cross_entropy) against
 * nk_ref_cross_entropy and against log_softmax + NLL composed in float64 from the same logits
 * (x as stored in its dtype): reductions, ignore_index, label smoothing, z-loss, grad, dlogits
 * (optional, in place), vocabularies up to 2^20, extreme logits, and the argument rules that
 * are specific to cross-entropy (invalid target, workspace).
 *
 * Bounds, from the canonical arithmetic (softmax.h: two-pass (mantissa, exponent) sums of f32
 * lanes, blocks in double; loss in double):
 *   L = lse: the sum's relative error is at most (16 + 6 + 1) 2^-24 ~ 1.4e-6, so
 *     |lse - ref| <= 2e-6 * max(1, |L|)
 *   loss_i: |dL| (1 + 2 zl |L|) + ls |dT| / n with |dT| <= 1.4e-6 sum|z| (the blocksum of z),
 *     B_i = 2e-6 * (1 + 2 zl |L|) + 2e-6 * ls * mean|z| + 1e-15 |L| (1 + zl |L|), and
 *     none: |loss_i - ref| <= B_i + 1 ulp_f32(ref); sum: sum B_i + 1 ulp; mean: that / counted.
 *   dlogits_j = fma(p_j, a, b): p_j (the f32 softmax value) has relative error <= 1.4e-6 (sum)
 *     + 5 roundings, under 3e-6; a, b and the fma add 3 roundings:
 *     |d - ref| <= 3e-6 * |c| * (p_j (1 + 2 zl |L|) + ls / n + (1 - ls) [j == t])
 *                  + |c| (1 + 2 zl |L|) 2^-147    (+ 1 ulp(ref) for bf16/f16),
 *     c = grad * w (w = 1, or 1/counted for mean).
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "reference.h"
#include "test.h"
#include "util.h"

static nk_context *g_ctx;
static const nk_dtype dts[] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};

enum { X_NORMAL, X_HUGE, X_NEGINF, X_WIDE };

typedef struct cfg {
  nk_dtype dt;
  size_t rows, cols, pad;
  nk_reduction red;
  int64_t ignore;
  float ls, zl, grad;
  int xin;          /* X_* */
  int with_dx;      /* dlogits wanted */
  int inplace;      /* dlogits == x */
  int ignore_every; /* 0: a few ignored rows; 1: all */
  uint64_t seed;
} cfg;

static cfg base(nk_dtype dt, size_t rows, size_t cols) {
  cfg c;
  memset(&c, 0, sizeof c);
  c.dt = dt;
  c.rows = rows;
  c.cols = cols;
  c.red = NK_REDUCTION_MEAN;
  c.ignore = -100;
  c.grad = 1.0f;
  c.with_dx = 1;
  c.seed = rows * 131u + cols;
  return c;
}

/* |got - ref| / bound; the f32 rounding of ref itself (+-inf when ref overflows f32, e.g. a
 * z-loss of (1e30)^2) always passes. */
static double ratio(double got, double ref, double bound) {
  if (!isnan(ref) && got == (double)(float)ref) return 0.0;
  if (isnan(ref)) return isnan(got) ? 0.0 : INFINITY;
  if (isnan(got)) return INFINITY;
  if (got == ref) return 0.0;
  if (isinf(ref) || isinf(got)) return INFINITY;
  return fabs(got - ref) / bound;
}

static double worst;

static void run_case(const cfg *c) {
  const size_t R = c->rows, C = c->cols, S = C + c->pad, es = nk_dtype_size(c->dt);
  nk_rng rng = {c->seed * 0x9E3779B97F4A7C15ull + 3};
  void *x = nk_t_alloc(R * S * es), *dx = nk_t_alloc(R * S * es);
  float *loss = nk_t_alloc(R * 4), *lse = nk_t_alloc(R * 4);
  int64_t *t = nk_t_alloc(R * 8);
  double *z = nk_t_alloc(R * C * 8), *dz = nk_t_alloc(R * C * 8), *lr = nk_t_alloc(R * 8);
  double *ly = nk_t_alloc(R * C * 8), *lossr = nk_t_alloc(R * 8), *lossi = nk_t_alloc(R * 8);
  NK_REQUIRE(x && dx && loss && lse && t && z && dz && lr && ly && lossr && lossi, "allocation");
  for (size_t i = 0; i < R; i++) {
    for (size_t j = 0; j < C; j++) {
      double v = nk_rng_normal(&rng);
      if (c->xin == X_HUGE) v *= (c->dt == NK_DTYPE_F16 ? 3e4 : 1e30);
      if (c->xin == X_WIDE) v *= 30.0;
      if (c->xin == X_NEGINF && nk_rng_u64(&rng) % 4 == 0) v = -INFINITY;
      nk_t_set(x, i * S + j, v, c->dt);
      z[i * C + j] = nk_t_get(x, i * S + j, c->dt);
    }
    t[i] = (int64_t)(nk_rng_u64(&rng) % C);
    if (c->ignore_every || i % 5 == 3) t[i] = c->ignore;
  }
  memset(loss, 0x5A, R * 4);
  memset(lse, 0x5A, R * 4);
  memset(dx, 0x5A, R * S * es);
  nk_cross_entropy_desc d = nk_cross_entropy_desc_dense(R, C, c->dt);
  d.reduction = c->red;
  d.ignore_index = c->ignore;
  d.label_smoothing = c->ls;
  d.z_loss = c->zl;
  d.grad = c->grad;
  d.x_stride = d.dx_stride = (ptrdiff_t)S;
  size_t wsb = 0;
  NK_REQUIRE(nk_cross_entropy_workspace_size(&d, &wsb) == NK_STATUS_OK, "workspace size");
  void *ws = nk_t_alloc(wsb);
  void *D = c->with_dx ? (c->inplace ? x : dx) : NULL;
  const nk_status st = nk_cross_entropy(g_ctx, &d, x, t, loss, D, lse, ws, wsb);
  free(ws);
  NK_CHECK(st == NK_STATUS_OK, "status %s: %s", nk_status_string(st), nk_context_message(g_ctx));
  if (st == NK_STATUS_OK) {
    nk_ref_cross_entropy(R, C, z, t, c->ignore, c->ls, c->zl, (int)c->red, c->grad, lossr, dz, lr);
    nk_ref_cross_entropy(R, C, z, t, c->ignore, c->ls, c->zl, 0, 1.0, lossi, NULL, NULL);
    nk_ref_softmax_fwd(R, C, z, NULL, 1, 0, ly, NULL);
    size_t counted = 0;
    double bsum = 0.0, comp = 0.0;
    for (size_t i = 0; i < R; i++) {
      const double L = lr[i];
      NK_CHECK(ratio(lse[i], L, 2e-6 * fmax(1.0, isfinite(L) ? fabs(L) : 0.0)) <= 1.0,
               "lse[%zu] = %.9g ref %.9g", i, (double)lse[i], L);
      if (t[i] == c->ignore) continue;
      counted++;
      double mz = 0.0;
      for (size_t j = 0; j < C; j++) mz += fabs(z[i * C + j]) / (double)C;
      const double aL = isfinite(L) ? fabs(L) : 0.0;
      const double B = 2e-6 * (1 + 2 * c->zl * aL) + 2e-6 * c->ls * (isfinite(mz) ? mz : 0.0) +
                       1e-15 * aL * (1 + c->zl * aL);
      bsum += B;
      /* log_softmax + NLL, composed in float64 */
      double li = 0.0, smooth = 0.0;
      for (size_t j = 0; j < C; j++) smooth -= ly[i * C + j] / (double)C;
      if (c->ls != 1.0f) li += -(1.0 - c->ls) * ly[i * C + (size_t)t[i]];
      if (c->ls != 0.0f) li += c->ls * smooth;
      li += c->zl * L * L;
      if (!isfinite(L)) li = NAN;
      comp += li;
      if (c->red == NK_REDUCTION_NONE) {
        const double q = ratio(loss[i], lossr[i], B + nk_t_ulp(lossr[i], NK_DTYPE_F32));
        if (q > worst && isfinite(q)) worst = q;
        NK_CHECK(q <= 1.0, "%s V=%zu ls %g zl %g: loss[%zu] = %.9g ref %.9g (bound %.3g)",
                 nk_dtype_name(c->dt), C, (double)c->ls, (double)c->zl, i, (double)loss[i],
                 lossr[i], B);
        NK_CHECK(ratio(loss[i], li, B + nk_t_ulp(li, NK_DTYPE_F32) + 1e-12 * fabs(li)) <= 1.0,
                 "loss[%zu] = %.9g, log_softmax + NLL gives %.9g", i, (double)loss[i], li);
      }
    }
    if (c->red == NK_REDUCTION_NONE) {
      for (size_t i = 0; i < R; i++)
        if (t[i] == c->ignore) NK_CHECK(loss[i] == 0.0f, "ignored row %zu loss %g", i, loss[i]);
    } else {
      const double w = c->red == NK_REDUCTION_MEAN ? 1.0 / (double)counted : 1.0;
      if (c->red == NK_REDUCTION_MEAN) comp /= (double)counted;
      if (counted == 0 && c->red == NK_REDUCTION_MEAN) comp = NAN;
      const double B = bsum * w + nk_t_ulp(lossr[0], NK_DTYPE_F32);
      NK_CHECK(ratio(loss[0], lossr[0], B) <= 1.0, "%s V=%zu red %d: loss %.9g ref %.9g",
               nk_dtype_name(c->dt), C, (int)c->red, (double)loss[0], lossr[0]);
      NK_CHECK(ratio(loss[0], comp, B + 1e-12 * fabs(comp)) <= 1.0,
               "reduced loss %.9g, log_softmax + NLL gives %.9g", (double)loss[0], comp);
      const unsigned char *p = (const unsigned char *)loss + 4;
      for (size_t k = 0; k < (R - 1) * 4; k++)
        if (p[k] != 0x5A) {
          NK_CHECK(0, "loss[1..] written for a reduced loss");
          break;
        }
    }
    if (c->with_dx) {
      const void *G = c->inplace ? x : dx;
      const double w = c->red == NK_REDUCTION_MEAN ? (counted ? 1.0 / (double)counted : 0.0) : 1.0;
      const double cc = fabs((double)c->grad * w);
      for (size_t i = 0; i < R; i++) {
        const double L = lr[i], aL = isfinite(L) ? fabs(L) : 0.0;
        for (size_t j = 0; j < C; j++) {
          const double ref = dz[i * C + j], got = nk_t_get(G, i * S + j, c->dt);
          const double p = isfinite(L) ? exp(z[i * C + j] - L) : 0.0;
          double b = 3e-6 * cc *
                         (p * (1 + 2 * c->zl * aL) + c->ls / (double)C +
                          ((int64_t)j == t[i] ? 1.0 - c->ls : 0.0)) +
                     cc * (1 + 2 * c->zl * aL) * 0x1p-147;
          if (c->dt != NK_DTYPE_F32) b += nk_t_ulp(ref, c->dt);
          if (b == 0.0) b = DBL_MIN;
          double q = (!isnan(ref) && got == nk_t_round(ref, c->dt)) ? 0.0 : ratio(got, ref, b);
          if (q > worst && isfinite(q)) worst = q;
          NK_CHECK(
              q <= 1.0,
              "%s V=%zu red %d ls %g zl %g grad %g: dlogits[%zu][%zu] = %.9g ref %.9g (bound %.3g)",
              nk_dtype_name(c->dt), C, (int)c->red, (double)c->ls, (double)c->zl, (double)c->grad,
              i, j, got, ref, b);
        }
        if (c->pad && !c->inplace) {
          const unsigned char *p = (const unsigned char *)dx + (i * S + C) * es;
          for (size_t k = 0; k < c->pad * es; k++)
            if (p[k] != 0x5A) {
              NK_CHECK(0, "dlogits padding of row %zu written", i);
              break;
            }
        }
      }
    } else {
      const unsigned char *p = dx;
      for (size_t k = 0; k < R * S * es; k++)
        if (p[k] != 0x5A) {
          NK_CHECK(0, "dlogits written although NULL was passed (?)");
          break;
        }
    }
  }
  free(x), free(dx), free(loss), free(lse), free(t), free(z), free(dz), free(lr), free(ly);
  free(lossr), free(lossi);
}

NK_TEST(reductions_smoothing_zloss_grad) {
  const float lss[] = {0.0f, 0.1f, 1.0f}, zls[] = {0.0f, 1e-4f, 0.01f},
              grads[] = {1.0f, 0.37f, -2.0f};
  int n = 0;
  for (int t = 0; t < 3; t++)
    for (int red = 0; red < 3; red++)
      for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
          n++;
          cfg c = base(dts[t], 9, 100 + (size_t)n);
          c.red = (nk_reduction)red;
          c.ls = lss[a];
          c.zl = zls[b];
          c.grad = grads[n % 3];
          c.xin = n % 4 == 0 ? X_WIDE : X_NORMAL;
          c.pad = n % 2 ? 3 : 0;
          run_case(&c);
        }
}

NK_TEST(ignore_index) {
  for (int t = 0; t < 3; t++)
    for (int red = 0; red < 3; red++) {
      cfg c = base(dts[t], 11, 64);
      c.red = (nk_reduction)red;
      c.ignore = 7; /* a custom index that is also a valid class */
      c.ls = 0.1f;
      run_case(&c);
      c.ignore = -100;
      c.ignore_every = 1; /* every row ignored: mean NaN (PyTorch), sum 0, gradient 0 */
      run_case(&c);
    }
  /* mean over no counted rows is NaN and dlogits 0 */
  float x[6] = {1, 2, 3, 4, 5, 6}, dx[6], loss = 0.0f;
  int64_t t[2] = {-100, -100};
  nk_cross_entropy_desc d = nk_cross_entropy_desc_dense(2, 3, NK_DTYPE_F32);
  unsigned char ws[2 * sizeof(double) + NK_WORKSPACE_ALIGN];
  NK_CHECK(nk_cross_entropy(g_ctx, &d, x, t, &loss, dx, NULL, ws, sizeof ws) == 0, "all ignored");
  NK_CHECK(isnan(loss), "mean of nothing: %g", loss);
  for (int k = 0; k < 6; k++) NK_CHECK(dx[k] == 0.0f, "dx %g", dx[k]);
}

NK_TEST(vocabulary_sizes) {
  const size_t V[] = {1, 2, 3, 50257, 262144};
  const size_t rows[] = {6, 6, 6, 4, 2};
  for (int k = 0; k < 5; k++)
    for (int t = 0; t < 3; t++) {
      cfg c = base(dts[t], rows[k], V[k]);
      c.ls = k % 2 ? 0.1f : 0.0f;
      c.zl = k == 3 ? 1e-4f : 0.0f;
      c.red = (nk_reduction)(k % 3);
      run_case(&c);
    }
  for (int t = 0; t < 3; t++) { /* one row of 2^20 */
    cfg c = base(dts[t], 1, (size_t)1 << 20);
    c.ls = 0.1f;
    c.red = NK_REDUCTION_SUM;
    c.xin = X_WIDE;
    run_case(&c);
  }
}

NK_TEST(extreme_logits) {
  for (int t = 0; t < 3; t++)
    for (int xin = X_HUGE; xin <= X_NEGINF; xin++)
      for (int a = 0; a < 3; a++) {
        cfg c = base(dts[t], 7, 300);
        c.xin = xin;
        c.ls = a == 0 ? 0.0f : a == 1 ? 0.1f : 1.0f;
        c.zl = a == 1 ? 1e-4f : 0.0f;
        c.red = NK_REDUCTION_NONE;
        run_case(&c);
      }
  /* a row of only -inf: loss NaN, dlogits NaN, lse -inf (header) */
  float x[8], dx[8], loss[2], lse[2];
  for (int k = 0; k < 8; k++) x[k] = k < 4 ? -INFINITY : (float)k;
  int64_t t[2] = {1, 2};
  nk_cross_entropy_desc d = nk_cross_entropy_desc_dense(2, 4, NK_DTYPE_F32);
  d.reduction = NK_REDUCTION_NONE;
  NK_CHECK(nk_cross_entropy(g_ctx, &d, x, t, loss, dx, lse, NULL, 0) == 0, "status");
  NK_CHECK(isnan(loss[0]) && lse[0] == -INFINITY && !isnan(loss[1]), "masked row %g %g", loss[0],
           lse[0]);
  for (int k = 0; k < 4; k++) NK_CHECK(isnan(dx[k]) && !isnan(dx[4 + k]), "masked row dx");
}

/* Logits so large that L = m + log s rounds to m even in long double (|m| ~ 1e30): two equal
 * logits give p = 1/2 each. The library got this right; the reference computed p = e^{z - L}
 * = 1 (cross_entropy fuzz harness, tests/fuzz/known/cross_entropy-bf16-dlogits-half). Both are
 * checked against the exact values: loss ls (L - mean) + (1 - ls)(L - z_t) + zl L^2 with
 * L - z = log 2, dlogits p (1 + 2 zl L) - ls/2 - (1 - ls)[j == t]. */
NK_TEST(huge_equal_logits) {
  const double X = 0x1.94p+99; /* ~1.0e30, exact in f32 and bf16 */
  for (int t = 0; t < 2; t++) {
    const nk_dtype dt = dts[t]; /* f32, bf16 (f16 cannot hold 1e30) */
    nk_bf16 xb[2];
    float xf[2] = {(float)X, (float)X}, dxf[2], loss[1], lse[1];
    nk_bf16 dxb[2];
    for (int k = 0; k < 2; k++) xb[k] = nk_f32_to_bf16((float)X);
    const void *x = dt == NK_DTYPE_F32 ? (const void *)xf : (const void *)xb;
    void *dx = dt == NK_DTYPE_F32 ? (void *)dxf : (void *)dxb;
    int64_t tg[1] = {1};
    nk_cross_entropy_desc d = nk_cross_entropy_desc_dense(1, 2, dt);
    d.reduction = NK_REDUCTION_NONE, d.label_smoothing = 0.5f, d.z_loss = 0.5f;
    NK_CHECK(nk_cross_entropy(g_ctx, &d, x, tg, loss, dx, lse, NULL, 0) == 0, "status");
    const double z[2] = {X, X};
    double rl[1], rdz[2], rlse[1];
    nk_ref_cross_entropy(1, 2, z, tg, -100, 0.5, 0.5, 0, 1.0, rl, rdz, rlse);
    const double L = X + log(2.0);
    for (int j = 0; j < 2; j++) {
      const double want = 0.5 * (1.0 + 2.0 * 0.5 * L) - 0.25 - (j == 1 ? 0.5 : 0.0);
      const double got = dt == NK_DTYPE_F32 ? (double)dxf[j] : (double)nk_bf16_to_f32(dxb[j]);
      NK_CHECK(fabs(rdz[j] - want) <= 1e-12 * want, "reference dz[%d] %.9g, exact %.9g", j,
               rdz[j], want);
      NK_CHECK(fabs(got - want) <= 3e-6 * want + (t ? 0x1p-8 * want : 0.0),
               "%s dlogits[%d] %.9g, exact %.9g", nk_dtype_name(dt), j, got, want);
    }
    const double lw = 0.5 * log(2.0) + 0.5 * log(2.0) + 0.5 * L * L; /* 5e59: f32 loss +inf */
    NK_CHECK(fabs(rl[0] - lw) <= 1e-12 * lw && loss[0] == INFINITY,
             "loss %.9g reference %.9g exact %.9g", (double)loss[0], rl[0], lw);
    NK_CHECK(fabs(lse[0] - L) <= 2e-6 * L && fabs(rlse[0] - L) <= 1e-12 * L, "lse %.9g %.9g",
             (double)lse[0], rlse[0]);
  }
}

/* Label smoothing takes the row's mean logit from f32 partial sums; those overflowed for rows
 * of -FLT_MAX logits (loss +inf where the exact loss is log n; cross_entropy fuzz harness,
 * tests/fuzz/known/cross_entropy-smoothing-logit-sum-overflow). Widths within one block, one
 * block and several blocks; every logit -FLT_MAX, and half -FLT_MAX, half 0. */
NK_TEST(smoothing_sum_of_max_logits) {
  static const size_t ns[] = {2, 64, 1024, 3000};
  static float x[3000];
  for (size_t w = 0; w < sizeof ns / sizeof ns[0]; w++)
    for (int half = 0; half < 2; half++) {
      const size_t n = ns[w];
      double z[3000], rl[1], rlse[1];
      for (size_t j = 0; j < n; j++) {
        x[j] = half && j % 2 ? 0.0f : -FLT_MAX;
        z[j] = x[j];
      }
      int64_t tg[1] = {0};
      float loss[1], lse[1];
      nk_cross_entropy_desc d = nk_cross_entropy_desc_dense(1, n, NK_DTYPE_F32);
      d.reduction = NK_REDUCTION_SUM, d.label_smoothing = 0.1f;
      static double ws[64] __attribute__((aligned(64)));
      size_t need = 0;
      NK_CHECK(nk_cross_entropy_workspace_size(&d, &need) == 0 && need <= sizeof ws, "ws %zu", need);
      NK_CHECK(nk_cross_entropy(g_ctx, &d, x, tg, loss, NULL, lse, ws, sizeof ws) == 0, "status: %s",
               nk_context_message(g_ctx));
      nk_ref_cross_entropy(1, n, z, tg, -100, (double)0.1f, 0.0, 2, 1.0, rl, NULL, rlse);
      /* all -FLT_MAX: log n exactly; half: 0.1 (L + FLT_MAX/2) + 0.9 (L + FLT_MAX), L = log(n/2) */
      const double want = half ? (double)0.1f * (log(n / 2.0) + FLT_MAX / 2.0) +
                                     (1.0 - (double)0.1f) * (log(n / 2.0) + FLT_MAX)
                               : log((double)n);
      NK_CHECK(fabs(rl[0] - want) <= 1e-12 * want, "reference %.9g, exact %.9g", rl[0], want);
      /* the documented bound (docs/ops/cross_entropy.md): the smoothing term carries
       * 2e-6 ls mean|z| (f32 partial sums), the double L 1e-15 |L| */
      const double mz = half ? FLT_MAX / 2.0 : FLT_MAX;
      const double B = 2e-6 + 2e-6 * (double)0.1f * mz + 1e-15 * FLT_MAX;
      NK_CHECK(isfinite(loss[0]) && fabs(loss[0] - want) <= B,
               "n %zu half %d: loss %.9g, exact %.9g", n, half, (double)loss[0], want);
    }
}

/* The z-loss factor a = grad (1 + 2 zl L) is an f32 intermediate: here 1 + 2 * 3.4e38 overflows.
 * The target (p = 1) gets +inf; the others (p = 0) their exact -ls/n, where fma(0, inf, b)
 * gave NaN (cross_entropy fuzz harness, tests/fuzz/known/cross_entropy-zloss-a-overflow-nan). */
NK_TEST(zloss_factor_overflow) {
  for (int t = 0; t < 2; t++) {
    const nk_dtype dt = dts[t];
    const float xf[4] = {3.0e38f, 1.0e30f, 0.0f, -1.0f};
    nk_bf16 xb[4], dxb[4];
    float dxf[4], loss[1];
    for (int k = 0; k < 4; k++) xb[k] = nk_f32_to_bf16(xf[k]);
    int64_t tg[1] = {0};
    nk_cross_entropy_desc d = nk_cross_entropy_desc_dense(1, 4, dt);
    d.reduction = NK_REDUCTION_NONE, d.label_smoothing = 0.5f, d.z_loss = 1.0f;
    NK_CHECK(nk_cross_entropy(g_ctx, &d, t ? (const void *)xb : (const void *)xf, tg, loss,
                              t ? (void *)dxb : (void *)dxf, NULL, NULL, 0) == 0, "status: %s",
             nk_context_message(g_ctx));
    for (int j = 0; j < 4; j++) {
      const double got = t ? (double)nk_bf16_to_f32(dxb[j]) : (double)dxf[j];
      if (j == 0) NK_CHECK(got == INFINITY, "%s dlogits[0] %g, want +inf", nk_dtype_name(dt), got);
      else NK_CHECK(got == -0.125, "%s dlogits[%d] %g, want -0.125", nk_dtype_name(dt), j, got);
    }
  }
}

NK_TEST(forward_only_and_inplace) {
  for (int t = 0; t < 3; t++)
    for (int red = 0; red < 3; red++) {
      cfg c = base(dts[t], 8, 513);
      c.red = (nk_reduction)red;
      c.ls = 0.1f;
      c.zl = 1e-4f;
      c.with_dx = 0;
      run_case(&c);
      c.with_dx = 1;
      c.inplace = 1;
      c.pad = 2;
      run_case(&c);
    }
}

NK_TEST(invalid_target_and_workspace) {
  float x[12], dx[12], loss[3], lse[3];
  unsigned char ws[256];
  for (int k = 0; k < 12; k++) x[k] = (float)k * 0.1f;
  const int64_t bad[][3] = {
      {0, 4, 1}, {0, -1, 1}, {0, -101, 1}, {INT64_MAX, 0, 0}, {INT64_MIN, 0, 0}};
  nk_cross_entropy_desc d = nk_cross_entropy_desc_dense(3, 4, NK_DTYPE_F32);
  for (int red = 0; red < 3; red++)
    for (int k = 0; k < 5; k++) {
      d.reduction = (nk_reduction)red;
      memset(dx, 0x5A, sizeof dx), memset(loss, 0x5A, sizeof loss), memset(lse, 0x5A, sizeof lse);
      NK_CHECK(nk_cross_entropy(g_ctx, &d, x, bad[k], loss, dx, lse, ws, sizeof ws) ==
                   NK_STATUS_INVALID_ARGUMENT,
               "target %lld", (long long)bad[k][1]);
      NK_CHECK(nk_context_message(g_ctx)[0] != '\0', "no message");
      const unsigned char *p[3] = {(void *)dx, (void *)loss, (void *)lse};
      const size_t n[3] = {sizeof dx, sizeof loss, sizeof lse};
      for (int b = 0; b < 3; b++)
        for (size_t q = 0; q < n[b]; q++)
          if (p[b][q] != 0x5A) {
            NK_CHECK(0, "invalid target %d (reduction %d): output %d written", k, red, b);
            break;
          }
    }
  int64_t t[3] = {0, 1, 2};
  d.reduction = NK_REDUCTION_MEAN;
  size_t need = 0;
  NK_CHECK(nk_cross_entropy_workspace_size(&d, &need) == 0 && need >= 3 * sizeof(double),
           "workspace %zu", need);
  memset(loss, 0x5A, sizeof loss);
  NK_CHECK(nk_cross_entropy(g_ctx, &d, x, t, loss, dx, lse, ws, need - 1) == NK_STATUS_MISUSE,
           "workspace too small");
  NK_CHECK(strstr(nk_context_message(g_ctx), "workspace") != NULL, "message %s",
           nk_context_message(g_ctx));
  NK_CHECK(nk_cross_entropy(g_ctx, &d, x, t, loss, dx, lse, NULL, need) == NK_STATUS_MISUSE,
           "NULL workspace");
  NK_CHECK(((unsigned char *)loss)[0] == 0x5A, "loss written on MISUSE");
  d.reduction = NK_REDUCTION_NONE;
  NK_CHECK(nk_cross_entropy_workspace_size(&d, &need) == 0 && need == 0, "none needs %zu", need);
  NK_CHECK(nk_cross_entropy(g_ctx, &d, x, t, loss, dx, lse, NULL, 0) == NK_STATUS_OK, "none: %s",
           nk_context_message(g_ctx));
}

int main(void) {
  if (nk_context_create(&g_ctx) != NK_STATUS_OK) return 1;
  NK_RUN_TIMED(reductions_smoothing_zloss_grad);
  NK_RUN_TIMED(ignore_index);
  NK_RUN_TIMED(vocabulary_sizes);
  NK_RUN_TIMED(extreme_logits);
  NK_RUN_TIMED(huge_equal_logits);
  NK_RUN_TIMED(smoothing_sum_of_max_logits);
  NK_RUN_TIMED(zloss_factor_overflow);
  NK_RUN_TIMED(forward_only_and_inplace);
  NK_RUN_TIMED(invalid_target_and_workspace);
  printf("worst error / bound: %.3f\n", worst);
  nk_context_destroy(g_ctx);
  return nk_test_summary();
}
