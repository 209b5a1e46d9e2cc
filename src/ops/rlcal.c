/*
 * rlcal.c — RL and calibration transforms (spec stats-optim-rl.md Parts C and D). Every rule is
 * evaluated in double from the given values and rounded once where it lands in a float buffer.
 * No kernels, no threads. Pages: docs/ops/running-norm.md (SB3 VecNormalize),
 * docs/ops/advantages.md (GRPO, BNPO), docs/ops/value-encodings.md (HL-Gauss, two-hot),
 * docs/ops/lsc.md (LSC reward transform), docs/ops/calibration.md (temperature scaling, ECE),
 * docs/ops/compositional.md (closure, clr, partial correlations), docs/ops/cpn.md (CPN).
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "dispatch.h"
#include "internal.h"
#include "validate.h"

/* ---- shared checks -------------------------------------------------------------------------- */

/* Exact in place: output "y" may be input "x", "out" may be "r"/"reward". */
static int inplace_alias(const span *out, const span *other) {
  return (nk__span_is(out, "y") && nk__span_is(other, "x")) ||
         (nk__span_is(out, "out") &&
          (nk__span_is(other, "r") || nk__span_is(other, "reward"))) ||
         (nk__span_is(out, "u") && (nk__span_is(other, "r") || nk__span_is(other, "r_ref")));
}

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---- running mean/std normalizers ------------------------------------------------------------ */

/* Counts finite and >= min (0 allowed when min_positive is 0), m2 >= 0 or NaN. */
static nk_status check_state(nk_context *ctx, const char *op, size_t n, const nk_moments *m,
                             int count_positive) {
  for (size_t i = 0; i < n; i++) {
    const double c = m[i].count;
    if (!isfinite(c) || !(count_positive ? c > 0.0 : c >= 0.0))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: state[%zu].count %g must be %s", op,
                      i, c, count_positive ? "finite and > 0" : "finite and >= 0");
    if (m[i].m2 < 0.0)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: state[%zu].m2 %g < 0", op, i,
                      m[i].m2);
  }
  return NK_STATUS_OK;
}

static nk_status check_eps_clip(nk_context *ctx, const char *op, float eps, float clip) {
  if (!(eps >= 0.0f) || !isfinite(eps))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: eps %g must be finite and >= 0", op,
                    (double)eps);
  if (!(clip > 0.0f))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: clip %g must be > 0", op,
                    (double)clip);
  return NK_STATUS_OK;
}

nk_status nk_running_norm_init(nk_context *ctx, size_t dim, nk_moments *state) {
  static const char op[] = "running_norm_init";
  if (dim == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(state);
  span s;
  TRY(nk__vector_span(ctx, op, &s, "state", state, dim, sizeof(nk_moments), 1));
  for (size_t i = 0; i < dim; i++)
    state[i] = (nk_moments){NK_RUNNING_NORM_COUNT0, 0.0, NK_RUNNING_NORM_COUNT0};
  return nk__ok(ctx);
}

nk_status nk_running_norm_update(nk_context *ctx, size_t rows, size_t dim, const float *x,
                                 nk_moments *state) {
  static const char op[] = "running_norm_update";
  if (rows == 0 || dim == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(x);
  NK_REQUIRE_PTR(state);
  size_t n;
  TRY(nk__check_product(ctx, op, "rows * dim", rows, dim, &n));
  span s[2];
  TRY(nk__vector_span(ctx, op, &s[0], "x", x, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "state", state, dim, sizeof(nk_moments), 1));
  TRY(nk__check_overlaps(ctx, op, s, 2, nk__no_alias));
  TRY(check_state(ctx, op, dim, state, 0));
  const double N = (double)rows;
  for (size_t j = 0; j < dim; j++) {
    double sum = 0.0;
    for (size_t r = 0; r < rows; r++) sum += (double)x[r * dim + j];
    const double mu = sum / N;
    double m2 = 0.0;
    for (size_t r = 0; r < rows; r++) {
      const double d = (double)x[r * dim + j] - mu;
      m2 += d * d;
    }
    const nk_moments b = {N, mu, m2};
    nk_moments_merge(&state[j], &b);
  }
  return nk__ok(ctx);
}

static float scale_clip(double v, double inv, double clip) {
  return (float)clampd(v * inv, -clip, clip); /* NaN stays NaN: both comparisons fail */
}

nk_status nk_running_norm_apply(nk_context *ctx, size_t rows, size_t dim,
                                const nk_moments *state, float eps, float clip, const float *x,
                                float *y) {
  static const char op[] = "running_norm_apply";
  TRY(check_eps_clip(ctx, op, eps, clip));
  if (rows == 0 || dim == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(state);
  NK_REQUIRE_PTR(x);
  NK_REQUIRE_PTR(y);
  span s[3];
  TRY(nk__vector_span(ctx, op, &s[0], "state", state, dim, sizeof(nk_moments), 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "x", x, (ptrdiff_t)dim, rows, dim, NK_DTYPE_F32, 0));
  TRY(nk__tensor_span(ctx, op, &s[2], "y", y, (ptrdiff_t)dim, rows, dim, NK_DTYPE_F32, 1));
  TRY(nk__check_overlaps(ctx, op, s, 3, inplace_alias));
  TRY(check_state(ctx, op, dim, state, 1));
  for (size_t j = 0; j < dim; j++) {
    const double mean = state[j].mean, var = state[j].m2 / state[j].count;
    const double inv = 1.0 / sqrt(var + (double)eps);
    for (size_t r = 0; r < rows; r++)
      y[r * dim + j] = scale_clip((double)x[r * dim + j] - mean, inv, (double)clip);
  }
  return nk__ok(ctx);
}

nk_status nk_running_norm_scale(nk_context *ctx, size_t n, const nk_moments *state, float eps,
                                float clip, const float *r, float *out) {
  static const char op[] = "running_norm_scale";
  TRY(check_eps_clip(ctx, op, eps, clip));
  if (n == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(state);
  NK_REQUIRE_PTR(r);
  NK_REQUIRE_PTR(out);
  span s[3];
  TRY(nk__vector_span(ctx, op, &s[0], "state", state, 1, sizeof(nk_moments), 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "r", r, (ptrdiff_t)n, 1, n, NK_DTYPE_F32, 0));
  TRY(nk__tensor_span(ctx, op, &s[2], "out", out, (ptrdiff_t)n, 1, n, NK_DTYPE_F32, 1));
  TRY(nk__check_overlaps(ctx, op, s, 3, inplace_alias));
  TRY(check_state(ctx, op, 1, state, 1));
  const double inv = 1.0 / sqrt(state->m2 / state->count + (double)eps);
  for (size_t i = 0; i < n; i++) out[i] = scale_clip((double)r[i], inv, (double)clip);
  return nk__ok(ctx);
}

nk_status nk_running_norm_reward(nk_context *ctx, size_t envs, float gamma, float eps,
                                 float clip, const float *reward, const unsigned char *done,
                                 double *ret, nk_moments *ret_state, float *out) {
  static const char op[] = "running_norm_reward";
  if (!(gamma >= 0.0f && gamma <= 1.0f))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: gamma %g must be in [0, 1]", op,
                    (double)gamma);
  TRY(check_eps_clip(ctx, op, eps, clip));
  if (envs == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(reward);
  NK_REQUIRE_PTR(ret);
  NK_REQUIRE_PTR(ret_state);
  NK_REQUIRE_PTR(out);
  span s[5];
  TRY(nk__tensor_span(ctx, op, &s[0], "reward", reward, (ptrdiff_t)envs, 1, envs, NK_DTYPE_F32,
                      0));
  TRY(nk__vector_span(ctx, op, &s[1], "done", done, envs, 1, 0));
  TRY(nk__vector_span(ctx, op, &s[2], "ret", ret, envs, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "ret_state", ret_state, 1, sizeof(nk_moments), 1));
  TRY(nk__tensor_span(ctx, op, &s[4], "out", out, (ptrdiff_t)envs, 1, envs, NK_DTYPE_F32, 1));
  TRY(nk__check_overlaps(ctx, op, s, 5, inplace_alias));
  TRY(check_state(ctx, op, 1, ret_state, 0));
  if (!(ret_state->count + (double)envs > 0.0))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: empty return statistics", op);

  const double g = (double)gamma;
  for (size_t e = 0; e < envs; e++) ret[e] = g * ret[e] + (double)reward[e];
  double sum = 0.0;
  for (size_t e = 0; e < envs; e++) sum += ret[e];
  const double mu = sum / (double)envs;
  double m2 = 0.0;
  for (size_t e = 0; e < envs; e++) m2 += (ret[e] - mu) * (ret[e] - mu);
  const nk_moments b = {(double)envs, mu, m2};
  nk_moments_merge(ret_state, &b);
  const double inv = 1.0 / sqrt(ret_state->m2 / ret_state->count + (double)eps);
  for (size_t e = 0; e < envs; e++) {
    out[e] = scale_clip((double)reward[e], inv, (double)clip);
    if (done != NULL && done[e]) ret[e] = 0.0;
  }
  return nk__ok(ctx);
}

/* ---- group advantages: GRPO and BNPO ------------------------------------------------------ */

/* n = sum of the group sizes, checked; spans of rewards and adv; adv must not overlap. */
static nk_status check_groups(nk_context *ctx, const char *op, size_t groups,
                              const size_t *group_sizes, const float *rewards, const float *adv,
                              size_t *total) {
  if (groups == 0) {
    *total = 0;
    return NK_STATUS_OK;
  }
  NK_REQUIRE_PTR(group_sizes);
  size_t n = 0;
  for (size_t q = 0; q < groups; q++)
    if (!nk__add_size(n, group_sizes[q], &n))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: the group sizes overflow", op);
  *total = n;
  if (n == 0) return NK_STATUS_OK;
  NK_REQUIRE_PTR(rewards);
  NK_REQUIRE_PTR(adv);
  span s[3];
  TRY(nk__vector_span(ctx, op, &s[0], "group_sizes", group_sizes, groups, sizeof(size_t), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "rewards", rewards, n, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "adv", adv, n, sizeof(float), 1));
  return nk__check_overlaps(ctx, op, s, 3, nk__no_alias);
}

#define GRPO_CHUNK 1024 /* groups per task */
#define GRPO_ROUND 256  /* tasks per parallel round */

typedef struct grpo_job {
  const nk_optim_kernels *k;
  nk_grpo_params p;
  const size_t *sizes;
  size_t groups, first;
  const float *rewards;
  float *adv;
  size_t off[GRPO_ROUND]; /* first reward of each chunk of the round */
} grpo_job;

static void grpo_task(void *arg, size_t start, size_t count) {
  grpo_job *j = arg;
  for (size_t c = start; c < start + count; c++) {
    size_t off = j->off[c];
    const size_t q0 = (j->first + c) * GRPO_CHUNK;
    const size_t q1 = q0 + GRPO_CHUNK < j->groups ? q0 + GRPO_CHUNK : j->groups;
    for (size_t q = q0; q < q1; q++) {
      const size_t G = j->sizes[q];
      if (G > 0) j->k->grpo_group(G, j->rewards + off, j->adv + off, &j->p);
      off += G;
    }
  }
}

nk_status nk_grpo_advantages(nk_context *ctx, size_t groups, const size_t *group_sizes,
                             const float *rewards, float eps, int unbiased, int scale_by_std,
                             float *adv) {
  static const char op[] = "grpo_advantages";
  if (!(eps >= 0.0f) || !isfinite(eps))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: eps %g must be finite and >= 0", op,
                    (double)eps);
  size_t n;
  TRY(check_groups(ctx, op, groups, group_sizes, rewards, adv, &n));
  if (n == 0) return nk__ok(ctx);
  /* Groups in chunks of GRPO_CHUNK (fixed), OPT_ROUND chunks per parallel round; each group is
   * computed whole by the kernel (optim.h: lane sums), so the bits depend on nothing else. */
  grpo_job j;
  j.k = nk__optim_kernels(ctx);
  j.p.eps = (double)eps;
  j.p.unbiased = unbiased != 0;
  j.p.scale_by_std = scale_by_std != 0;
  j.sizes = group_sizes;
  j.groups = groups;
  j.rewards = rewards;
  j.adv = adv;
  nk_threadpool *pool = nk__context_pool(ctx);
  const size_t chunks = (groups + GRPO_CHUNK - 1) / GRPO_CHUNK;
  size_t off = 0;
  for (size_t c0 = 0; c0 < chunks; c0 += GRPO_ROUND) {
    const size_t cnt = chunks - c0 < GRPO_ROUND ? chunks - c0 : GRPO_ROUND;
    j.first = c0;
    for (size_t c = 0; c < cnt; c++) {
      j.off[c] = off;
      const size_t q0 = (c0 + c) * GRPO_CHUNK;
      const size_t q1 = q0 + GRPO_CHUNK < groups ? q0 + GRPO_CHUNK : groups;
      for (size_t q = q0; q < q1; q++) off += group_sizes[q];
    }
    nk_parallelize_1d(pool, grpo_task, &j, cnt, 1);
  }
  return nk__ok(ctx);
}

/* x log y with 0 log 0 = 0 (xlogy semantics: x == 0 gives 0 whatever y is, unless y is NaN). */
static double xlogy(double x, double y) {
  if (isnan(y)) return y;
  return x == 0.0 ? 0.0 : x * log(y);
}

nk_status nk_bnpo_advantages(nk_context *ctx, size_t groups, const size_t *group_sizes,
                             const float *rewards, float r_min, float r_max, double clip,
                             float *adv, double *alpha, double *beta) {
  static const char op[] = "bnpo_advantages";
  if (!isfinite(r_min) || !isfinite(r_max) || !(r_min < r_max))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: need finite r_min < r_max (got %g, %g)", op, (double)r_min,
                    (double)r_max);
  if (!(clip > 0.0))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: clip %g must be > 0", op, clip);
  size_t n;
  TRY(check_groups(ctx, op, groups, group_sizes, rewards, adv, &n));
  span so[3];
  TRY(nk__vector_span(ctx, op, &so[0], "alpha", alpha, 1, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &so[1], "beta", beta, 1, sizeof(double), 1));
  if (alpha != NULL && alpha == beta)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: alpha and beta are the same", op);
  if (n > 0) {
    span s[5];
    nk__vector_span(ctx, op, &s[0], "group_sizes", group_sizes, groups, sizeof(size_t), 0);
    nk__vector_span(ctx, op, &s[1], "rewards", rewards, n, sizeof(float), 0);
    nk__vector_span(ctx, op, &s[2], "adv", adv, n, sizeof(float), 1);
    s[3] = so[0];
    s[4] = so[1];
    TRY(nk__check_overlaps(ctx, op, s, 5, nk__no_alias));
  }
  for (size_t i = 0; i < n; i++)
    if (rewards[i] < r_min || rewards[i] > r_max)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                      "%s: rewards[%zu] = %g outside [r_min, r_max] = [%g, %g]", op, i,
                      (double)rewards[i], (double)r_min, (double)r_max);

  const double lo = (double)r_min, range = (double)r_max - (double)r_min;
  /* 1. success rates; 2. their moments over the non-empty groups */
  size_t Q = 0, off = 0;
  double sum = 0.0;
  for (size_t q = 0; q < groups; q++) {
    const size_t G = group_sizes[q];
    double p = 0.0;
    if (G >= 2) {
      for (size_t i = 0; i < G; i++) p += ((double)rewards[off + i] - lo) / range;
      p /= (double)G;
    }
    if (G >= 1) Q++, sum += p;
    off += G;
  }
  double m = 0.0, s2 = 1.0;
  if (Q >= 2) {
    m = sum / (double)Q;
    double ss = 0.0;
    off = 0;
    for (size_t q = 0; q < groups; q++) {
      const size_t G = group_sizes[q];
      double p = 0.0;
      if (G >= 2) {
        for (size_t i = 0; i < G; i++) p += ((double)rewards[off + i] - lo) / range;
        p /= (double)G;
      }
      if (G >= 1) ss += (p - m) * (p - m);
      off += G;
    }
    s2 = ss / (double)(Q - 1);
  }
  /* 3.-4. method of moments, variance-minimizing parameters */
  double al = 1.0, be = 1.0;
  if (isnan(m) || isnan(s2)) {
    al = be = NAN;
  } else if (s2 > 0.0) {
    const double kappa = m * (1.0 - m) / s2 - 1.0;
    al = fmax(1.0 + kappa * m / 3.0, 1.0);
    be = fmax(1.0 + kappa * (1.0 - m) / 3.0, 1.0);
  }
  /* 5. advantages */
  const double lnB = lgamma(al) + lgamma(be) - lgamma(al + be);
  const double log_clip = log(clip);
  off = 0;
  for (size_t q = 0; q < groups; q++) {
    const size_t G = group_sizes[q];
    double p = 0.0;
    if (G >= 2) {
      for (size_t i = 0; i < G; i++) p += ((double)rewards[off + i] - lo) / range;
      p /= (double)G;
    }
    const double log_inv_f = lnB - xlogy(al - 1.0, p) - xlogy(be - 1.0, 1.0 - p);
    const double w = isnan(log_inv_f) ? log_inv_f : log_inv_f >= log_clip ? clip : exp(log_inv_f);
    for (size_t i = 0; i < G; i++)
      adv[off + i] = (float)(w * (((double)rewards[off + i] - lo) / range - p));
    off += G;
  }
  if (alpha) *alpha = al;
  if (beta) *beta = be;
  return nk__ok(ctx);
}

/* ---- value encodings: HL-Gauss and two-hot ------------------------------------------------- */

static nk_status check_support(nk_context *ctx, const char *op, size_t bins, float v_min,
                               float v_max) {
  if (bins == 0) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: bins must be >= 1", op);
  if (!isfinite(v_min) || !isfinite(v_max) || !(v_min < v_max))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: need finite v_min < v_max (got %g, %g)", op, (double)v_min,
                    (double)v_max);
  return NK_STATUS_OK;
}

/* Spans of an n-vector input and an n x bins output (or the reverse), no overlap. */
static nk_status check_rows_io(nk_context *ctx, const char *op, size_t n, size_t bins,
                               const char *in_name, const void *in, size_t in_len,
                               const char *out_name, void *out, size_t out_len) {
  size_t nb;
  TRY(nk__check_product(ctx, op, "n * bins", n, bins, &nb));
  if (in == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, in_name);
  if (out == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, out_name);
  span s[2];
  TRY(nk__vector_span(ctx, op, &s[0], in_name, in, in_len == 1 ? n : nb, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], out_name, out, out_len == 1 ? n : nb, sizeof(float), 1));
  return nk__check_overlaps(ctx, op, s, 2, nk__no_alias);
}

/* Phi(b) - Phi(a) for a <= b, without cancellation in either tail. */
static double normal_mass(double a, double b) {
  static const double r2 = 0.70710678118654752440; /* 1/sqrt(2) */
  if (b <= 0.0) return 0.5 * (erfc(-b * r2) - erfc(-a * r2));
  if (a >= 0.0) return 0.5 * (erfc(a * r2) - erfc(b * r2));
  return 0.5 * (erf(b * r2) - erf(a * r2));
}

nk_status nk_hlgauss_target(nk_context *ctx, size_t n, size_t bins, float v_min, float v_max,
                            float sigma_ratio, const float *y, float *probs) {
  static const char op[] = "hlgauss_target";
  TRY(check_support(ctx, op, bins, v_min, v_max));
  if (!(sigma_ratio > 0.0f) || !isfinite(sigma_ratio))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: sigma_ratio %g must be finite and > 0",
                    op, (double)sigma_ratio);
  if (n == 0) return nk__ok(ctx);
  TRY(check_rows_io(ctx, op, n, bins, "y", y, 1, "probs", probs, 0));
  const double lo = (double)v_min, hi = (double)v_max, m = (double)bins;
  const double zeta = (hi - lo) / m, sigma = (double)sigma_ratio * zeta;
  for (size_t r = 0; r < n; r++) {
    float *p = probs + r * bins;
    const double t = clampd((double)y[r], lo, hi);
    if (isnan((double)y[r])) {
      for (size_t i = 0; i < bins; i++) p[i] = NAN;
      continue;
    }
    const double norm = normal_mass((lo - t) / sigma, (hi - t) / sigma);
    double a = (lo - t) / sigma;
    for (size_t i = 0; i < bins; i++) {
      const double b = i + 1 == bins ? (hi - t) / sigma : (lo + (double)(i + 1) * zeta - t) / sigma;
      p[i] = (float)(normal_mass(a, b) / norm);
      a = b;
    }
  }
  return nk__ok(ctx);
}

nk_status nk_two_hot_target(nk_context *ctx, size_t n, size_t bins, float v_min, float v_max,
                            const float *y, float *probs) {
  static const char op[] = "two_hot_target";
  TRY(check_support(ctx, op, bins, v_min, v_max));
  if (n == 0) return nk__ok(ctx);
  TRY(check_rows_io(ctx, op, n, bins, "y", y, 1, "probs", probs, 0));
  const double lo = (double)v_min, zeta = ((double)v_max - lo) / (double)bins;
  const double c0 = lo + 0.5 * zeta, clast = lo + ((double)bins - 0.5) * zeta;
  for (size_t r = 0; r < n; r++) {
    float *p = probs + r * bins;
    if (isnan(y[r])) {
      for (size_t i = 0; i < bins; i++) p[i] = NAN;
      continue;
    }
    for (size_t i = 0; i < bins; i++) p[i] = 0.0f;
    if (bins == 1) {
      p[0] = 1.0f;
      continue;
    }
    const double yc = clampd((double)y[r], c0, clast);
    if (yc >= clast) { /* the last centre exactly (t = bins - 1 would round to just below) */
      p[bins - 1] = 1.0f;
      continue;
    }
    const double t = (yc - c0) / zeta;
    double jf = floor(t);
    if (jf > (double)(bins - 2)) jf = (double)(bins - 2);
    const size_t j = (size_t)jf;
    const double f = clampd(t - jf, 0.0, 1.0);
    p[j] = (float)(1.0 - f);
    p[j + 1] = (float)f;
  }
  return nk__ok(ctx);
}

nk_status nk_hlgauss_decode(nk_context *ctx, size_t n, size_t bins, float v_min, float v_max,
                            const float *logits, float *value) {
  static const char op[] = "hlgauss_decode";
  TRY(check_support(ctx, op, bins, v_min, v_max));
  if (n == 0) return nk__ok(ctx);
  TRY(check_rows_io(ctx, op, n, bins, "logits", logits, 0, "value", value, 1));
  const double lo = (double)v_min, zeta = ((double)v_max - lo) / (double)bins;
  for (size_t r = 0; r < n; r++) {
    const float *l = logits + r * bins;
    double mx = -INFINITY;
    for (size_t i = 0; i < bins; i++) mx = fmax(mx, (double)l[i]);
    double den = 0.0, num = 0.0;
    for (size_t i = 0; i < bins; i++) {
      const double e = exp((double)l[i] - mx);
      den += e;
      num += e * (lo + ((double)i + 0.5) * zeta);
    }
    int has_nan = 0;
    for (size_t i = 0; i < bins; i++) has_nan |= isnan(l[i]);
    value[r] = has_nan ? NAN : (float)(num / den);
  }
  return nk__ok(ctx);
}

nk_status nk_hlgauss_xent(nk_context *ctx, size_t n, size_t bins, const float *logits,
                          const float *target, float *loss, float *dlogits) {
  static const char op[] = "hlgauss_xent";
  if (bins == 0) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: bins must be >= 1", op);
  if (n == 0) return nk__ok(ctx);
  size_t nb;
  TRY(nk__check_product(ctx, op, "n * bins", n, bins, &nb));
  NK_REQUIRE_PTR(logits);
  NK_REQUIRE_PTR(target);
  NK_REQUIRE_PTR(loss);
  span s[4];
  TRY(nk__vector_span(ctx, op, &s[0], "logits", logits, nb, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "target", target, nb, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "loss", loss, n, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "dlogits", dlogits, nb, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 4, nk__no_alias));
  for (size_t r = 0; r < n; r++) {
    const float *l = logits + r * bins, *p = target + r * bins;
    double mx = -INFINITY;
    int has_nan = 0;
    for (size_t i = 0; i < bins; i++) mx = fmax(mx, (double)l[i]), has_nan |= isnan(l[i]);
    double sum = 0.0;
    for (size_t i = 0; i < bins; i++) sum += exp((double)l[i] - mx);
    /* lse - l_i = (mx - l_i) + log(sum): never mx + log(sum) first, which loses log(sum) when
     * |mx| is large (a constant row of 1e30 gave loss 0 instead of S log(bins)) */
    const double log_sum = has_nan ? NAN : log(sum);
    double L = 0.0, S = 0.0;
    for (size_t i = 0; i < bins; i++) {
      const double pi = (double)p[i];
      S += pi;
      if (pi != 0.0) L += pi * (((double)mx - (double)l[i]) + log_sum);
    }
    loss[r] = (float)L;
    if (dlogits != NULL)
      for (size_t i = 0; i < bins; i++) {
        const double q = has_nan ? NAN : exp((double)l[i] - mx) / sum;
        dlogits[r * bins + i] = (float)(S * q - (double)p[i]);
      }
  }
  return nk__ok(ctx);
}

/* ---- LSC reward transform ---------------------------------------------------------------- */

/* log sigmoid(d) = -softplus(-d) = min(d, 0) - log1p(exp(-|d|)). */
static double log_sigmoid(double d) {
  if (isnan(d)) return d;
  return fmin(d, 0.0) - log1p(exp(-fabs(d)));
}

nk_status nk_lsc_reward_transform(nk_context *ctx, size_t n, const float *r, const float *r_ref,
                                  float *u) {
  static const char op[] = "lsc_reward_transform";
  if (n == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(r);
  NK_REQUIRE_PTR(r_ref);
  NK_REQUIRE_PTR(u);
  span s[3];
  TRY(nk__tensor_span(ctx, op, &s[0], "r", r, (ptrdiff_t)n, 1, n, NK_DTYPE_F32, 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "r_ref", r_ref, (ptrdiff_t)n, 1, n, NK_DTYPE_F32, 0));
  TRY(nk__tensor_span(ctx, op, &s[2], "u", u, (ptrdiff_t)n, 1, n, NK_DTYPE_F32, 1));
  TRY(nk__check_overlaps(ctx, op, s, 3, inplace_alias));
  for (size_t i = 0; i < n; i++) u[i] = (float)log_sigmoid((double)r[i] - (double)r_ref[i]);
  return nk__ok(ctx);
}

nk_status nk_lsc_reward_combine(nk_context *ctx, size_t n, size_t properties, const float *r,
                                const float *r_ref, float *u) {
  static const char op[] = "lsc_reward_combine";
  if (n == 0) return nk__ok(ctx);
  size_t nj;
  TRY(nk__check_product(ctx, op, "n * properties", n, properties, &nj));
  NK_REQUIRE_PTR(u);
  if (nj > 0) {
    NK_REQUIRE_PTR(r);
    NK_REQUIRE_PTR(r_ref);
  }
  span s[3];
  TRY(nk__vector_span(ctx, op, &s[0], "r", nj ? r : NULL, nj, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "r_ref", nj ? r_ref : NULL, nj, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "u", u, n, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 3, nk__no_alias));
  for (size_t i = 0; i < n; i++) {
    double sum = 0.0;
    for (size_t j = 0; j < properties; j++)
      sum += log_sigmoid((double)r[i * properties + j] - (double)r_ref[i * properties + j]);
    u[i] = (float)sum;
  }
  return nk__ok(ctx);
}

/* The t-th smallest of x[0..k) (0-based), x free of NaN: O(k^2), no scratch. */
static double order_stat(size_t k, const float *x, size_t t) {
  for (size_t i = 0; i < k; i++) {
    size_t less = 0, equal = 0;
    for (size_t j = 0; j < k; j++) less += x[j] < x[i], equal += x[j] == x[i];
    if (less <= t && t < less + equal) return (double)x[i];
  }
  return NAN; /* not reached */
}

nk_status nk_lsc_reward_reference(nk_context *ctx, size_t k, const float *samples, float level,
                                  float *r_ref) {
  static const char op[] = "lsc_reward_reference";
  if (k == 0) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: k must be >= 1", op);
  if (!(level >= 0.0f && level <= 1.0f))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: level %g must be in [0, 1]", op,
                    (double)level);
  NK_REQUIRE_PTR(samples);
  NK_REQUIRE_PTR(r_ref);
  span s[2];
  TRY(nk__vector_span(ctx, op, &s[0], "samples", samples, k, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "r_ref", r_ref, 1, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 2, nk__no_alias));
  for (size_t i = 0; i < k; i++)
    if (isnan(samples[i])) {
      *r_ref = NAN;
      return nk__ok(ctx);
    }
  const double h = (double)(k - 1) * (double)level, fl = floor(h);
  const size_t t0 = (size_t)fl, t1 = t0 + 1 < k ? t0 + 1 : k - 1;
  const double a = order_stat(k, samples, t0), b = order_stat(k, samples, t1), g = h - fl;
  *r_ref = (float)(g == 0.0 ? a : a + g * (b - a));
  return nk__ok(ctx);
}

/* ---- temperature scaling and ECE ------------------------------------------------------------ */

static nk_status check_classify(nk_context *ctx, const char *op, size_t n, size_t classes,
                                const float *x, const char *x_name, const int64_t *labels,
                                size_t *nc, span *s) {
  if (n == 0 || classes == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: n %zu and classes %zu must be >= 1", op,
                    n, classes);
  TRY(nk__check_product(ctx, op, "n * classes", n, classes, nc));
  if (x == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, x_name);
  NK_REQUIRE_PTR(labels);
  TRY(nk__vector_span(ctx, op, &s[0], x_name, x, *nc, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "labels", labels, n, sizeof(int64_t), 0));
  for (size_t r = 0; r < n; r++)
    if (labels[r] < 0 || (uint64_t)labels[r] >= (uint64_t)classes)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                      "%s: labels[%zu] = %lld outside [0, %zu)", op, r, (long long)labels[r],
                      classes);
  return NK_STATUS_OK;
}

/* NLL(beta) and its first two derivatives in beta, over all rows. */
static void nll_beta(size_t n, size_t classes, const float *z, const int64_t *y, double beta,
                     double *f, double *g, double *h) {
  double F = 0.0, G = 0.0, H = 0.0;
  for (size_t r = 0; r < n; r++) {
    const float *zr = z + r * classes;
    double mx = -INFINITY;
    int has_nan = 0;
    for (size_t k = 0; k < classes; k++) {
      mx = fmax(mx, beta * (double)zr[k]);
      has_nan |= isnan(zr[k]);
    }
    if (has_nan) mx = NAN;
    double s = 0.0, s1 = 0.0;
    for (size_t k = 0; k < classes; k++) {
      const double e = exp(beta * (double)zr[k] - mx);
      s += e;
      s1 += e * (double)zr[k];
    }
    const double mean = s1 / s;
    double s2 = 0.0;
    for (size_t k = 0; k < classes; k++) {
      const double d = (double)zr[k] - mean;
      s2 += exp(beta * (double)zr[k] - mx) * d * d;
    }
    const double zy = (double)zr[y[r]];
    /* (mx - beta zy) first: mx + log(s) rounds log(s) away when |beta z| is large (logits
     * of 1e4 lost 2e-13 relative, a constant row of 1e30 all of log(classes)) */
    F += (mx - beta * zy) + log(s);
    G += mean - zy;
    H += s2 / s;
  }
  if (f) *f = F / (double)n;
  if (g) *g = G / (double)n;
  if (h) *h = H / (double)n;
}

static nk_status check_temperature(nk_context *ctx, const char *op, double T) {
  if (!(T > 0.0) || !isfinite(T))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: T %g must be finite and > 0", op, T);
  return NK_STATUS_OK;
}

nk_status nk_temperature_nll(nk_context *ctx, size_t n, size_t classes, const float *logits,
                             const int64_t *labels, double T, double *nll, double *dnll_dT) {
  static const char op[] = "temperature_nll";
  TRY(check_temperature(ctx, op, T));
  size_t nc;
  span s[4];
  TRY(check_classify(ctx, op, n, classes, logits, "logits", labels, &nc, s));
  TRY(nk__vector_span(ctx, op, &s[2], "nll", nll, 1, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "dnll_dT", dnll_dT, 1, sizeof(double), 1));
  TRY(nk__check_overlaps(ctx, op, s, 4, nk__no_alias));
  double f, g;
  nll_beta(n, classes, logits, labels, 1.0 / T, &f, &g, NULL);
  if (nll) *nll = f;
  if (dnll_dT) *dnll_dT = -g / (T * T);
  return nk__ok(ctx);
}

nk_status nk_temperature_fit(nk_context *ctx, size_t n, size_t classes, const float *logits,
                             const int64_t *labels, double t_min, double t_max, double *T,
                             double *nll) {
  static const char op[] = "temperature_fit";
  if (!(t_min > 0.0) || !isfinite(t_max) || !(t_min < t_max))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: need finite 0 < t_min < t_max (got %g, %g)", op, t_min, t_max);
  NK_REQUIRE_PTR(T);
  size_t nc;
  span s[4];
  TRY(check_classify(ctx, op, n, classes, logits, "logits", labels, &nc, s));
  TRY(nk__vector_span(ctx, op, &s[2], "T", T, 1, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "nll", nll, 1, sizeof(double), 1));
  TRY(nk__check_overlaps(ctx, op, s, 4, nk__no_alias));
  for (size_t i = 0; i < nc; i++)
    if (!isfinite(logits[i]))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: logits[%zu] = %g is not finite", op,
                      i, (double)logits[i]);

  double a = 1.0 / t_max, b = 1.0 / t_min, beta, g, h;
  nll_beta(n, classes, logits, labels, a, NULL, &g, NULL);
  if (g >= 0.0) {
    beta = a;
  } else {
    nll_beta(n, classes, logits, labels, b, NULL, &g, NULL);
    if (g <= 0.0) {
      beta = b;
    } else { /* g(a) < 0 < g(b) */
      beta = 0.5 * (a + b);
      for (int it = 0; it < 200; it++) {
        nll_beta(n, classes, logits, labels, beta, NULL, &g, &h);
        if (g == 0.0) break;
        if (g < 0.0) a = beta;
        else b = beta;
        if (b - a <= 4.0 * DBL_EPSILON * b) break;
        double next = h > 0.0 ? beta - g / h : NAN;
        if (!(next > a && next < b)) next = 0.5 * (a + b); /* safeguard: bisection */
        beta = next;
      }
    }
  }
  *T = 1.0 / beta;
  if (nll) nll_beta(n, classes, logits, labels, beta, nll, NULL, NULL);
  return nk__ok(ctx);
}

nk_status nk_temperature_apply(nk_context *ctx, size_t n, size_t classes, double T,
                               const float *logits, float *probs) {
  static const char op[] = "temperature_apply";
  TRY(check_temperature(ctx, op, T));
  if (classes == 0) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: classes is 0", op);
  if (n == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(logits);
  NK_REQUIRE_PTR(probs);
  span s[2];
  TRY(nk__tensor_span(ctx, op, &s[0], "x", logits, (ptrdiff_t)classes, n, classes, NK_DTYPE_F32,
                      0));
  TRY(nk__tensor_span(ctx, op, &s[1], "y", probs, (ptrdiff_t)classes, n, classes, NK_DTYPE_F32,
                      1));
  TRY(nk__check_overlaps(ctx, op, s, 2, inplace_alias));
  const double beta = 1.0 / T;
  for (size_t r = 0; r < n; r++) {
    const float *z = logits + r * classes;
    float *p = probs + r * classes;
    double mx = -INFINITY, sum = 0.0;
    int has_nan = 0;
    for (size_t k = 0; k < classes; k++) mx = fmax(mx, beta * (double)z[k]), has_nan |= isnan(z[k]);
    for (size_t k = 0; k < classes; k++) sum += exp(beta * (double)z[k] - mx);
    for (size_t k = 0; k < classes; k++)
      p[k] = has_nan ? NAN : (float)(exp(beta * (double)z[k] - mx) / sum);
  }
  return nk__ok(ctx);
}

nk_status nk_ece_top_label(nk_context *ctx, size_t n, size_t classes, const float *probs,
                           const int64_t *labels, size_t bins, double *ece, double *mce,
                           nk_ece_bin *reliability) {
  static const char op[] = "ece_top_label";
  if (bins == 0) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: bins must be >= 1", op);
  size_t nc;
  span s[5];
  TRY(check_classify(ctx, op, n, classes, probs, "probs", labels, &nc, s));
  TRY(nk__vector_span(ctx, op, &s[2], "ece", ece, 1, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "mce", mce, 1, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "reliability", reliability, bins, sizeof(nk_ece_bin), 1));
  TRY(nk__check_overlaps(ctx, op, s, 5, nk__no_alias));
  if (ece != NULL && (const void *)ece == (const void *)mce)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: ece and mce are the same", op);
  for (size_t i = 0; i < nc; i++)
    if (!(probs[i] >= 0.0f && probs[i] <= 1.0f))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: probs[%zu] = %g outside [0, 1]", op,
                      i, (double)probs[i]);
  /* Bins are processed in chunks of 64 on the stack (no scratch from the caller), one pass over
   * the rows per chunk: O(n * classes * ceil(M / 64)). */
  enum { CHUNK = 64 };
  const double M = (double)bins;
  double E = 0.0, worst = 0.0;
  for (size_t m0 = 0; m0 < bins; m0 += CHUNK) {
    const size_t m1 = bins - m0 < CHUNK ? bins : m0 + CHUNK;
    double cnt[CHUNK] = {0}, sc[CHUNK] = {0}, sa[CHUNK] = {0};
    for (size_t r = 0; r < n; r++) {
      const float *p = probs + r * classes;
      size_t arg = 0;
      for (size_t k = 1; k < classes; k++)
        if (p[k] > p[arg]) arg = k; /* first maximal index */
      const double conf = (double)p[arg];
      if (!(conf > 0.0)) continue; /* in no bin */
      /* m with m/M < conf <= (m+1)/M, boundaries computed as below */
      size_t m = (size_t)ceil(conf * M);
      m = m == 0 ? 0 : m - 1;
      if (m >= bins) m = bins - 1;
      while (m > 0 && !(conf > (double)m / M)) m--;
      while (m + 1 < bins && conf > (double)(m + 1) / M) m++;
      if (m < m0 || m >= m1) continue;
      cnt[m - m0] += 1.0;
      sc[m - m0] += conf;
      sa[m - m0] += (uint64_t)labels[r] == (uint64_t)arg ? 1.0 : 0.0;
    }
    for (size_t m = m0; m < m1; m++) {
      const double c = cnt[m - m0];
      double acc = 0.0, cf = 0.0;
      if (c > 0.0) {
        acc = sa[m - m0] / c;
        cf = sc[m - m0] / c;
        const double gap = fabs(acc - cf);
        E += c / (double)n * gap;
        if (gap > worst) worst = gap;
      }
      if (reliability) reliability[m] = (nk_ece_bin){(uint64_t)c, cf, acc};
    }
  }
  if (ece) *ece = E;
  if (mce) *mce = worst;
  return nk__ok(ctx);
}

/* ---- compositional data --------------------------------------------------------------------- */

static nk_status check_composition(nk_context *ctx, const char *op, size_t n, size_t parts,
                                   const float *x, size_t *nd) {
  if (parts == 0) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: parts must be >= 1", op);
  TRY(nk__check_product(ctx, op, "n * parts", n, parts, nd));
  NK_REQUIRE_PTR(x);
  for (size_t i = 0; i < *nd; i++)
    if (!(x[i] > 0.0f) || !isfinite(x[i]))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                      "%s: x[%zu] = %g (parts must be finite and > 0)", op, i, (double)x[i]);
  return NK_STATUS_OK;
}

nk_status nk_clr_closure(nk_context *ctx, size_t n, size_t parts, float kappa, const float *x,
                         float *out) {
  static const char op[] = "clr_closure";
  if (!(kappa > 0.0f) || !isfinite(kappa))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: kappa %g must be finite and > 0", op,
                    (double)kappa);
  if (parts == 0) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: parts must be >= 1", op);
  if (n == 0) return nk__ok(ctx);
  size_t nd;
  TRY(check_composition(ctx, op, n, parts, x, &nd));
  NK_REQUIRE_PTR(out);
  span s[2];
  TRY(nk__tensor_span(ctx, op, &s[0], "x", x, (ptrdiff_t)parts, n, parts, NK_DTYPE_F32, 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "y", out, (ptrdiff_t)parts, n, parts, NK_DTYPE_F32, 1));
  TRY(nk__check_overlaps(ctx, op, s, 2, inplace_alias));
  for (size_t r = 0; r < n; r++) {
    double sum = 0.0;
    for (size_t i = 0; i < parts; i++) sum += (double)x[r * parts + i];
    const double k = (double)kappa / sum;
    for (size_t i = 0; i < parts; i++) out[r * parts + i] = (float)(k * (double)x[r * parts + i]);
  }
  return nk__ok(ctx);
}

/* clr of one row into double out[parts]. */
static void clr_row(size_t parts, const float *x, double *out) {
  double mean = 0.0;
  for (size_t i = 0; i < parts; i++) out[i] = log((double)x[i]), mean += out[i];
  mean /= (double)parts;
  for (size_t i = 0; i < parts; i++) out[i] -= mean;
}

nk_status nk_clr_transform(nk_context *ctx, size_t n, size_t parts, const float *x, float *out) {
  static const char op[] = "clr_transform";
  if (parts == 0) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: parts must be >= 1", op);
  if (n == 0) return nk__ok(ctx);
  size_t nd;
  TRY(check_composition(ctx, op, n, parts, x, &nd));
  NK_REQUIRE_PTR(out);
  span s[2];
  TRY(nk__tensor_span(ctx, op, &s[0], "x", x, (ptrdiff_t)parts, n, parts, NK_DTYPE_F32, 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "y", out, (ptrdiff_t)parts, n, parts, NK_DTYPE_F32, 1));
  TRY(nk__check_overlaps(ctx, op, s, 2, inplace_alias));
  for (size_t r = 0; r < n; r++) {
    const float *xr = x + r * parts;
    double mean = 0.0;
    for (size_t i = 0; i < parts; i++) mean += log((double)xr[i]);
    mean /= (double)parts;
    for (size_t i = 0; i < parts; i++) out[r * parts + i] = (float)(log((double)xr[i]) - mean);
  }
  return nk__ok(ctx);
}

size_t nk_clr_partial_corr_workspace_size(size_t parts) {
  size_t dd, total;
  if (!nk__mul_size(parts, parts, &dd) || !nk__mul_size(dd, 2, &total) ||
      !nk__add_size(total, 2 * parts, &total) || !nk__mul_size(total, sizeof(double), &total) ||
      !nk__ws_bytes(total, &total)) /* plus the alignment slack: any address works */
    return SIZE_MAX;
  return total;
}

/* Cyclic Jacobi eigendecomposition of the symmetric D x D matrix A (destroyed: its diagonal
 * becomes the eigenvalues); V receives the eigenvectors as columns. */
static void jacobi_eigen(size_t D, double *A, double *V) {
  for (size_t i = 0; i < D * D; i++) V[i] = 0.0;
  for (size_t i = 0; i < D; i++) V[i * D + i] = 1.0;
  for (int sweep = 0; sweep < 100; sweep++) {
    double off = 0.0, diag = 0.0;
    for (size_t p = 0; p < D; p++) {
      diag += A[p * D + p] * A[p * D + p];
      for (size_t q = p + 1; q < D; q++) off += A[p * D + q] * A[p * D + q];
    }
    if (!(off > 1e-34 * diag)) break; /* off-diagonal below ~1e-17 of the diagonal (or NaN) */
    for (size_t p = 0; p < D; p++)
      for (size_t q = p + 1; q < D; q++) {
        const double apq = A[p * D + q];
        if (apq == 0.0) continue;
        const double theta = (A[q * D + q] - A[p * D + p]) / (2.0 * apq);
        const double t = (theta >= 0.0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
        const double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
        for (size_t k = 0; k < D; k++) { /* A <- A P (columns p, q) */
          const double akp = A[k * D + p], akq = A[k * D + q];
          A[k * D + p] = c * akp - s * akq;
          A[k * D + q] = s * akp + c * akq;
        }
        for (size_t k = 0; k < D; k++) { /* A <- P^T A (rows p, q) */
          const double apk = A[p * D + k], aqk = A[q * D + k];
          A[p * D + k] = c * apk - s * aqk;
          A[q * D + k] = s * apk + c * aqk;
        }
        for (size_t k = 0; k < D; k++) { /* V <- V P */
          const double vkp = V[k * D + p], vkq = V[k * D + q];
          V[k * D + p] = c * vkp - s * vkq;
          V[k * D + q] = s * vkp + c * vkq;
        }
      }
  }
}

nk_status nk_clr_partial_corr(nk_context *ctx, size_t n, size_t parts, const float *x,
                              double rcond, double *rho, double *partial_var, void *workspace,
                              size_t workspace_size) {
  static const char op[] = "clr_partial_corr";
  if (n < 2 || parts < 2)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: need n >= 2 and parts >= 2 (got %zu, %zu)", op, n, parts);
  if (!(rcond > 0.0 && rcond < 1.0))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: rcond %g must be in (0, 1)", op, rcond);
  size_t nd, dd;
  TRY(nk__check_product(ctx, op, "parts * parts", parts, parts, &dd));
  const size_t need = nk_clr_partial_corr_workspace_size(parts);
  if (need == SIZE_MAX)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: parts %zu too large", op, parts);
  TRY(check_composition(ctx, op, n, parts, x, &nd));
  NK_REQUIRE_PTR(rho);
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need)); /* NULL: MISUSE */
  span s[4];
  TRY(nk__vector_span(ctx, op, &s[0], "x", x, nd, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "rho", rho, dd, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[2], "partial_var", partial_var, parts, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "workspace", workspace, need, 1, 1));
  TRY(nk__check_overlaps(ctx, op, s, 4, nk__no_alias));

  const size_t D = parts;
  double *G = nk__ws_align(workspace), *V = G + dd, *row = V + dd, *mean = row + D;
  /* clr means, then the covariance (two passes over x, clr recomputed per row) */
  for (size_t i = 0; i < D; i++) mean[i] = 0.0;
  for (size_t r = 0; r < n; r++) {
    clr_row(D, x + r * D, row);
    for (size_t i = 0; i < D; i++) mean[i] += row[i];
  }
  for (size_t i = 0; i < D; i++) mean[i] /= (double)n;
  for (size_t i = 0; i < dd; i++) G[i] = 0.0;
  for (size_t r = 0; r < n; r++) {
    clr_row(D, x + r * D, row);
    for (size_t i = 0; i < D; i++) row[i] -= mean[i];
    for (size_t i = 0; i < D; i++)
      for (size_t j = 0; j <= i; j++) G[i * D + j] += row[i] * row[j];
  }
  for (size_t i = 0; i < D; i++)
    for (size_t j = 0; j <= i; j++) G[j * D + i] = G[i * D + j] /= (double)(n - 1);
  /* Omega = Gamma^+ = sum over retained eigenpairs of v v^T / lambda, into rho */
  jacobi_eigen(D, G, V);
  double lmax = 0.0;
  for (size_t k = 0; k < D; k++) lmax = fmax(lmax, G[k * D + k]);
  for (size_t k = 0; k < D; k++) row[k] = G[k * D + k] > rcond * lmax ? 1.0 / G[k * D + k] : 0.0;
  for (size_t i = 0; i < D; i++)
    for (size_t j = 0; j <= i; j++) {
      double o = 0.0;
      for (size_t k = 0; k < D; k++) o += V[i * D + k] * row[k] * V[j * D + k];
      rho[i * D + j] = rho[j * D + i] = o;
    }
  for (size_t i = 0; i < D; i++) mean[i] = rho[i * D + i]; /* Omega_ii */
  for (size_t i = 0; i < D; i++)
    for (size_t j = 0; j < D; j++)
      rho[i * D + j] = i == j ? 1.0 : -rho[i * D + j] / sqrt(mean[i] * mean[j]);
  if (partial_var)
    for (size_t i = 0; i < D; i++) partial_var[i] = 1.0 / mean[i];
  return nk__ok(ctx);
}

/* ---- candidate prior normalization ---------------------------------------------------------- */

nk_status nk_cpn_mean_loglik(nk_context *ctx, size_t n, size_t tokens, const float *logp,
                             const unsigned char *valid, double *out) {
  static const char op[] = "cpn_mean_loglik";
  if (tokens == 0) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: tokens is 0", op);
  if (n == 0) return nk__ok(ctx);
  size_t nt;
  TRY(nk__check_product(ctx, op, "n * tokens", n, tokens, &nt));
  NK_REQUIRE_PTR(logp);
  NK_REQUIRE_PTR(out);
  span s[3];
  TRY(nk__vector_span(ctx, op, &s[0], "logp", logp, nt, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "valid", valid, nt, 1, 0));
  TRY(nk__vector_span(ctx, op, &s[2], "out", out, n, sizeof(double), 1));
  TRY(nk__check_overlaps(ctx, op, s, 3, nk__no_alias));
  for (size_t r = 0; r < n; r++) {
    double sum = 0.0, cnt = 0.0;
    for (size_t t = 0; t < tokens; t++)
      if (valid == NULL || valid[r * tokens + t]) sum += (double)logp[r * tokens + t], cnt += 1.0;
    out[r] = sum / cnt;
  }
  return nk__ok(ctx);
}

/* Exact in place: score may be cond or prior. */
static int cpn_alias(const span *out, const span *other) {
  return nk__span_is(out, "score") &&
         (nk__span_is(other, "cond") || nk__span_is(other, "prior"));
}

nk_status nk_cpn_score(nk_context *ctx, size_t n, const double *cond, const double *prior,
                       double alpha, double *score) {
  static const char op[] = "cpn_score";
  if (!isfinite(alpha))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: alpha %g must be finite", op, alpha);
  if (n == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(cond);
  NK_REQUIRE_PTR(prior);
  NK_REQUIRE_PTR(score);
  /* alignment of doubles first (the f32 description below only checks 4 bytes: a double at an
   * address of 4 mod 8 passed and was stored misaligned) */
  span a;
  TRY(nk__vector_span(ctx, op, &a, "cond", cond, n, sizeof(double), 0));
  TRY(nk__vector_span(ctx, op, &a, "prior", prior, n, sizeof(double), 0));
  TRY(nk__vector_span(ctx, op, &a, "score", score, n, sizeof(double), 1));
  /* n doubles described as 1 x 2n f32 rows (same bytes), so exact in-place aliasing is seen */
  size_t n2;
  TRY(nk__check_product(ctx, op, "2 * n", n, 2, &n2));
  span s[3];
  TRY(nk__tensor_span(ctx, op, &s[0], "cond", cond, (ptrdiff_t)n2, 1, n2, NK_DTYPE_F32, 0));
  TRY(nk__tensor_span(ctx, op, &s[1], "prior", prior, (ptrdiff_t)n2, 1, n2, NK_DTYPE_F32, 0));
  TRY(nk__tensor_span(ctx, op, &s[2], "score", score, (ptrdiff_t)n2, 1, n2, NK_DTYPE_F32, 1));
  TRY(nk__check_overlaps(ctx, op, s, 3, cpn_alias));
  for (size_t i = 0; i < n; i++) score[i] = cond[i] - alpha * prior[i];
  return nk__ok(ctx);
}
