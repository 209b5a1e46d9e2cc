/*
 * tests/fuzz/rlcal.c — libFuzzer harness: rewards, advantages and values (normkit.h "RL and
 * calibration", first half), one call per input:
 *   nk_running_norm_init / _update / _apply / _scale / _reward (caller-owned nk_moments state
 *     from init or from any earlier step, empty states, in place y == x and out == r/reward,
 *     done flags optional; every state field and the double returns are checked);
 *   nk_grpo_advantages (empty and lone groups, unbiased or not, scale_by_std or not, eps 0);
 *   nk_bnpo_advantages (binary or uniform rewards in [r_min, r_max], NaN, empty groups, clip up
 *     to +inf, alpha/beta optional);
 *   nk_hlgauss_target, nk_two_hot_target, nk_hlgauss_decode, nk_hlgauss_xent (normalized or
 *     unnormalized targets with zeros, dlogits optional, constant rows);
 *   nk_lsc_reward_transform (in place u == r or u == r_ref), nk_lsc_reward_combine (J == 0),
 *     nk_lsc_reward_reference (ties, NaN).
 * Every buffer (state, returns, group sizes, done flags, alpha/beta included) is placed in the
 * guard-page arena (fuzz.h) and compared with the float64 references of src/reference/rlcal.c
 * run from the same inputs. 1 input in 8 breaks one rule (all of this section's failures are
 * INVALID_ARGUMENT) and must leave every byte unchanged.
 *
 * Bounds: those of tests/ops/rlcal.c ("f32 outputs computed in double and rounded once: 1 ulp of
 * f32 at |ref| plus a small absolute term for cancellation; double state and outputs: 1e-12
 * relative (+ an absolute term at the data's scale)"):
 *   running-norm state: count 1e-15 relative; mean 1e-12 |ref| + 1e-14 S; var = m2 / count
 *     1e-12 |ref| + 1e-14 S^2, S the data's scale (max |x| of the column, |mean|, sqrt(var) of the
 *     state before); returns 1e-13 |ref| + 1e-13 S; y/out 1 ulp + 1e-12;
 *   grpo 1 ulp + 1e-12; bnpo alpha, beta 1e-12 relative, adv 1 ulp + 1e-12 |ref|;
 *   hlgauss/two-hot targets 1 ulp + 1e-15; decode and xent loss 1 ulp + 1e-12;
 *   dlogits against S q - p in double: 1e-7 S + 1e-6 |ref| (the test's bound against finite
 *     differences, S the row's target sum: the test's targets sum to 1);
 *   lsc transform 1 ulp; combine and reference quantile 1 ulp + 1e-15.
 */
#include <float.h>

#include "fuzz.h"
#include "reference.h"

#define MAXR 8            /* rows / environments / groups */
#define MAXD 6            /* features */
#define MAXG 8            /* rewards per group */
#define MAXB 64           /* bins */
#define MAXK 40           /* quantile samples */
#define MAXJ 6            /* LSC properties */
#define MAXE (MAXR * MAXB) /* largest array */

enum {
  OP_INIT, OP_UPDATE, OP_APPLY, OP_SCALE, OP_REWARD, OP_GRPO, OP_BNPO, OP_HLGAUSS, OP_TWOHOT,
  OP_DECODE, OP_XENT, OP_LSC, OP_COMBINE, OP_QUANTILE, OP_COUNT
};
static const char *const op_names[OP_COUNT] = {
    "running_norm_init", "running_norm_update", "running_norm_apply", "running_norm_scale",
    "running_norm_reward", "grpo", "bnpo", "hlgauss_target", "two_hot_target", "hlgauss_decode",
    "hlgauss_xent", "lsc_transform", "lsc_combine", "lsc_reference"};

#define INV NK_STATUS_INVALID_ARGUMENT

/* ------------------------------------------------------------------ helpers ---------------- */

static int close_d(double got, double ref, double rel, double abs_term) {
  if (isnan(ref)) return isnan(got);
  if (isnan(got)) return 0;
  if (got == ref) return 1;
  if (isinf(ref) || isinf(got)) return 0;
  return fabs(got - ref) <= rel * fabs(ref) + abs_term;
}
static void cmp_f32(const char *what, size_t n, const float *got, const double *ref,
                    double abs_term) {
  for (size_t i = 0; i < n; i++) {
    const double b = fz_ulp(ref[i], NK_DTYPE_F32) + abs_term;
    FZ_CHECK(fz_close(got[i], ref[i], b, NK_DTYPE_F32), "%s[%zu] = %.9g, ref %.17g (bound %.3g)",
             what, i, (double)got[i], ref[i], b);
  }
}
static double absf(double v) { return isfinite(v) ? fabs(v) : 0.0; }

/* A float buffer of n elements in a fresh slot, filled from d (ref gets the stored values). */
static float *place_fill(fz_in *in, size_t n, const fz_dist *d, double *ref, fz_geom *g) {
  *g = fz_vec(n, sizeof(float));
  float *p = fz_place(in, g, NULL);
  fz_fill(in, p, g, NK_DTYPE_F32, d, ref);
  return p;
}
static void *place_out(fz_in *in, size_t n, size_t es, fz_geom *g) {
  *g = fz_vec(n, es);
  return fz_place(in, g, NULL);
}

/* Status, message and arena after the call; returns 1 for a valid call that returned OK. */
static int finish(nk_context *ctx, unsigned op, unsigned bad, nk_status st, nk_status want) {
  if (want != NK_OK) {
    FZ_CHECK(st == want, "%s bad %u: status %d, want %d (%s)", op_names[op], bad, st, want,
             ctx ? nk_context_message(ctx) : "");
    FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "%s: no message for a failure",
             op_names[op]);
    fz_check_arena(0, op_names[op]);
    return 0;
  }
  FZ_CHECK(st == NK_OK, "%s: status %d (%s)", op_names[op], st,
           ctx ? nk_context_message(ctx) : "");
  fz_check_arena(1, op_names[op]);
  fz_valid++;
  return 1;
}

/* Bad eps / clip for the running normalizers. */
static void bad_eps_clip(fz_in *in, float *eps, float *clip) {
  static const float be[] = {-1e-8f, NAN, INFINITY, -INFINITY};
  static const float bc[] = {0.0f, -1.0f, NAN, -INFINITY};
  if (fz_u8(in) & 1) *eps = be[fz_pick(in, 4)];
  else *clip = bc[fz_pick(in, 4)];
}

/* A running-norm state: nk_running_norm_init's, or any earlier step's (count, mean, m2 = count
 * var), sometimes EMPTY (count 0, all zero) where empty_ok. */
static void gen_state(fz_in *in, nk_moments *st, size_t d, int empty_ok, const fz_dist *xd) {
  static const double counts[] = {1e-4, 1.0, 2.0, 7.0, 1000.0, 1e6, 0.5, 3.0};
  const unsigned kind = fz_pick(in, 4);
  for (size_t j = 0; j < d; j++) {
    if (kind == 0) {
      st[j] = (nk_moments){NK_RUNNING_NORM_COUNT0, 0.0, NK_RUNNING_NORM_COUNT0};
      continue;
    }
    const double c = empty_ok && fz_pick(in, 6) == 0 ? 0.0 : counts[fz_pick(in, 8)];
    const double mu = fz_value(in, xd), sd = fz_value(in, xd);
    st[j] = c == 0.0 ? (nk_moments){0.0, 0.0, 0.0} : (nk_moments){c, mu, sd * sd * c};
  }
}
/* The reference's view of one state (an empty state: mean 0, var 0, as the header's copy). */
static void ref_state(const nk_moments *m, double *mean, double *var) {
  *mean = m->count > 0.0 ? m->mean : 0.0;
  *var = m->count > 0.0 ? m->m2 / m->count : 0.0;
}
/* One state after an update against the reference (S the data's scale). */
static void cmp_state(const char *what, size_t j, const nk_moments *got, double count,
                      double mean, double var, double S) {
  FZ_CHECK(close_d(got->count, count, 1e-15, 0.0), "%s[%zu].count %.17g, ref %.17g", what, j,
           got->count, count);
  FZ_CHECK(close_d(got->mean, mean, 1e-12, 1e-14 * S), "%s[%zu].mean %.17g, ref %.17g", what, j,
           got->mean, mean);
  const double gv = got->m2 / got->count;
  FZ_CHECK(close_d(gv, var, 1e-12, 1e-14 * S * S), "%s[%zu] var %.17g, ref %.17g", what, j, gv,
           var);
}

/* -------------------------------------------------------------- running normalizers ------- */

static int run_running(fz_in *in, nk_context *ctx, unsigned op, int bad) {
  static double xr[MAXR * MAXD], yr[MAXR * MAXD], rr[MAXR], retr[MAXR], outr[MAXR];
  static double mean[MAXD], var[MAXD];
  const size_t R = bad ? 1 + fz_pick(in, MAXR) : fz_pick(in, 10) == 0 ? 0 : 1 + fz_pick(in, MAXR);
  const size_t D = bad ? 1 + fz_pick(in, MAXD) : fz_pick(in, 10) == 0 ? 0 : 1 + fz_pick(in, MAXD);
  const fz_dist xd = fz_dist_pick(in, 24);
  static const float eps_t[] = {1e-8f, 1e-8f, 0.0f, 1e-3f, 1.0f};
  static const float clip_t[] = {10.0f, 10.0f, INFINITY, 0.5f, 1e30f};
  float eps = eps_t[fz_pick(in, 5)], clip = clip_t[fz_pick(in, 5)];
  const unsigned k = bad ? fz_pick(in, 8) : 0;
  nk_status want = bad ? INV : NK_OK, st;
  fz_geom gs, gx, gy;

  if (op == OP_INIT) {
    const size_t d = bad ? 1 + fz_pick(in, MAXD) : fz_pick(in, MAXD + 1);
    nk_moments *s = place_out(in, d, sizeof(nk_moments), &gs);
    if (bad) s = NULL;
    else fz_writable(s, &gs);
    fz_snapshot();
    st = nk_running_norm_init(ctx, d, s);
    if (!finish(ctx, op, k, st, want)) return 0;
    for (size_t j = 0; j < d; j++)
      FZ_CHECK(s[j].count == NK_RUNNING_NORM_COUNT0 && s[j].mean == 0.0 &&
                   s[j].m2 == NK_RUNNING_NORM_COUNT0,
               "init state[%zu] = {%g, %g, %g}", j, s[j].count, s[j].mean, s[j].m2);
    return 0;
  }

  if (op == OP_UPDATE || op == OP_APPLY) {
    const int apply = op == OP_APPLY;
    nk_moments *s = place_out(in, D, sizeof(nk_moments), &gs);
    gen_state(in, s, D, !apply, &xd);
    float *x = place_fill(in, R * D, &xd, xr, &gx);
    const int inplace = apply && (fz_u8(in) & 1);
    float *y = apply ? (inplace ? x : place_out(in, R * D, sizeof(float), &gy)) : NULL;
    gy = fz_vec(R * D, sizeof(float));
    nk_moments s0[MAXD];
    memcpy(s0, s, D * sizeof *s);
    size_t rows = R;
    if (bad) {
      switch (k) {
      case 0: x = NULL; break;
      case 1: if (apply) y = NULL; else s = NULL; break;
      case 2: if (apply) bad_eps_clip(in, &eps, &clip); else x = (float *)(void *)s; break;
      case 3: s[fz_pick(in, (unsigned)D)].count = apply ? (fz_u8(in) & 1 ? 0.0 : -1.0) : -1.0; break;
      case 4: s[fz_pick(in, (unsigned)D)].count = fz_u8(in) & 1 ? NAN : INFINITY; break;
      case 5: s[fz_pick(in, (unsigned)D)].m2 = -1e-300; break;
      case 6:
        if (apply) {
          if (R * D >= 2) y = x + 1 + fz_pick(in, (unsigned)(R * D - 1));
          else y = (float *)(void *)s;
        } else {
          s = (nk_moments *)(void *)((char *)s + 4); /* misaligned */
        }
        break;
      default:
        if (apply) s = NULL;
        else rows = SIZE_MAX / 2 + 1 + fz_pick(in, 16); /* rows * dim overflows */
        break;
      }
    }
    if (!bad) {
      if (apply) fz_writable(y, &gy);
      else fz_writable(s, &gs);
    }
    fz_snapshot();
    st = apply ? nk_running_norm_apply(ctx, R, D, s, eps, clip, x, y)
               : nk_running_norm_update(ctx, rows, D, x, s);
    if (!finish(ctx, op, k, st, want)) return 0;
    if (R == 0 || D == 0) return 0;
    if (apply) {
      for (size_t j = 0; j < D; j++) ref_state(&s0[j], &mean[j], &var[j]);
      nk_ref_rms rs = {mean, var, 0.0};
      nk_ref_rms_normalize(R, D, &rs, (double)eps, (double)clip, xr, yr);
      cmp_f32("y", R * D, y, yr, 1e-12);
      return 0;
    }
    for (size_t j = 0; j < D; j++) {
      double col[MAXR], m, v, S = 0.0;
      int finite = 1;
      for (size_t r = 0; r < R; r++) {
        col[r] = xr[r * D + j];
        finite &= isfinite(col[r]) != 0;
        S = fmax(S, absf(col[r]));
      }
      ref_state(&s0[j], &m, &v);
      S = fmax(S, fmax(absf(m), absf(sqrt(v))));
      nk_ref_rms rs = {&m, &v, s0[j].count};
      nk_ref_rms_update(R, 1, col, &rs);
      /* header: a non-finite column makes m2 NaN (the mean NaN or +-inf, as the reference) */
      if (!finite)
        FZ_CHECK(isnan(s[j].m2), "state[%zu] = {%g, %g, %g} for a non-finite column", j,
                 s[j].count, s[j].mean, s[j].m2);
      cmp_state("state", j, &s[j], rs.count, m, v, S);
    }
    return 0;
  }

  if (op == OP_SCALE) {
    nk_moments *s = place_out(in, 1, sizeof(nk_moments), &gs);
    gen_state(in, s, 1, 0, &xd);
    float *r = place_fill(in, R, &xd, rr, &gx);
    float *out = fz_u8(in) & 1 ? r : place_out(in, R, sizeof(float), &gy);
    gy = fz_vec(R, sizeof(float));
    const nk_moments s0 = *s;
    if (bad) {
      switch (k) {
      case 0: r = NULL; break;
      case 1: out = NULL; break;
      case 2: case 3: bad_eps_clip(in, &eps, &clip); break;
      case 4: s->count = fz_u8(in) & 1 ? 0.0 : NAN; break;
      case 5: s->m2 = -1.0; break;
      case 6: if (R >= 2) out = r + 1; else s = NULL; break;
      default: s = NULL; break;
      }
    } else {
      fz_writable(out, &gy);
    }
    fz_snapshot();
    st = nk_running_norm_scale(ctx, R, s, eps, clip, r, out);
    if (!finish(ctx, op, k, st, want)) return 0;
    if (R == 0) return 0;
    double m, v;
    ref_state(&s0, &m, &v);
    nk_ref_rms rs = {&m, &v, s0.count};
    m = 0.0; /* no mean subtracted */
    nk_ref_rms_normalize(R, 1, &rs, (double)eps, (double)clip, rr, outr);
    cmp_f32("out", R, out, outr, 1e-12);
    return 0;
  }

  /* OP_REWARD */
  static const float gamma_t[] = {0.99f, 0.99f, 0.0f, 1.0f, 0.5f};
  float gamma = gamma_t[fz_pick(in, 5)];
  const size_t E = R;
  nk_moments *s = place_out(in, 1, sizeof(nk_moments), &gs);
  gen_state(in, s, 1, 1, &xd);
  float *r = place_fill(in, E, &xd, rr, &gx);
  fz_geom gret = fz_vec(E, sizeof(double)), gdone = fz_vec(E, 1);
  double *ret = fz_place(in, &gret, NULL);
  const fz_dist rd = fz_dist_pick(in, 8);
  for (size_t e = 0; e < E; e++) ret[e] = fz_pick(in, 4) == 0 ? 0.0 : fz_value(in, &rd);
  unsigned char *done = NULL;
  if (fz_u8(in) & 1) {
    done = fz_place(in, &gdone, NULL);
    for (size_t e = 0; e < E; e++) done[e] = fz_pick(in, 3) == 0 ? (unsigned char)(1 + fz_pick(in, 255)) : 0;
  }
  float *out = fz_u8(in) & 1 ? r : place_out(in, E, sizeof(float), &gy);
  gy = fz_vec(E, sizeof(float));
  const nk_moments s0 = *s;
  memcpy(retr, ret, E * sizeof *ret);
  if (bad) {
    static const float bg[] = {-0.1f, 1.5f, NAN, INFINITY};
    switch (k) {
    case 0: gamma = bg[fz_pick(in, 4)]; break;
    case 1: bad_eps_clip(in, &eps, &clip); break;
    case 2: { const unsigned w = fz_pick(in, 4);
      if (w == 0) r = NULL; else if (w == 1) ret = NULL; else if (w == 2) s = NULL; else out = NULL;
      break; }
    case 3: out = (float *)(void *)ret; break;
    case 4: s->count = fz_u8(in) & 1 ? -1.0 : NAN; break;
    case 5: s->m2 = -1.0; s->count = 1.0; break;
    case 6: if (done) done = (unsigned char *)out; else ret = (double *)(void *)((char *)ret + 4); break;
    default: ret = (double *)(void *)s; break;
    }
  } else {
    fz_writable(out, &gy), fz_writable(ret, &gret), fz_writable(s, &gs);
  }
  fz_snapshot();
  st = nk_running_norm_reward(ctx, E, gamma, eps, clip, r, done, ret, s, out);
  if (!finish(ctx, op, k, st, want)) return 0;
  if (E == 0) return 0;
  double m, v;
  ref_state(&s0, &m, &v);
  double S = fmax(absf(m), absf(sqrt(v)));
  for (size_t e = 0; e < E; e++) S = fmax(S, fmax(absf(rr[e]), absf(retr[e])));
  nk_ref_rms rs = {&m, &v, s0.count};
  nk_ref_vecnorm_reward(E, (double)gamma, (double)eps, (double)clip, rr, done, retr, &rs, outr);
  for (size_t e = 0; e < E; e++)
    FZ_CHECK(close_d(ret[e], retr[e], 1e-13, 1e-13 * S), "ret[%zu] %.17g, ref %.17g", e, ret[e],
             retr[e]);
  cmp_f32("out", E, out, outr, 1e-12);
  cmp_state("ret_state", 0, s, rs.count, m, v, S);
  return 0;
}

/* ------------------------------------------------------------------ GRPO and BNPO ---------- */

static int run_groups(fz_in *in, nk_context *ctx, unsigned op, int bad) {
  static double rr[MAXR * MAXG], ar[MAXR * MAXG];
  const size_t Q = bad ? 2 + fz_pick(in, MAXR - 1) : fz_pick(in, 12) == 0 ? 0 : 1 + fz_pick(in, MAXR);
  fz_geom gsz = fz_vec(Q, sizeof(size_t)), gr, ga, gab = fz_vec(1, sizeof(double));
  size_t *sizes = fz_place(in, &gsz, NULL);
  size_t n = 0;
  for (size_t q = 0; q < Q; q++) {
    const unsigned c = fz_pick(in, 8);
    sizes[q] = c == 0 ? 0 : c == 1 ? 1 : 1 + fz_pick(in, MAXG);
    if (bad && q == 0 && sizes[q] < 2) sizes[q] = 2; /* something to overlap */
    n += sizes[q];
  }
  const unsigned k = bad ? fz_pick(in, 8) : 0;
  nk_status want = bad ? INV : NK_OK, st;
  float *r, *adv;
  if (op == OP_GRPO) {
    const fz_dist rd = fz_dist_pick(in, 24);
    r = place_fill(in, n, &rd, rr, &gr);
    adv = place_out(in, n, sizeof(float), &ga);
    static const float eps_t[] = {1e-6f, 1e-6f, 0.0f, 1e-3f, 1e-8f};
    float eps = eps_t[fz_pick(in, 5)];
    const int unbiased = fz_u8(in) & 1, by_std = fz_pick(in, 4) != 0;
    if (bad) {
      switch (k) {
      case 0: { static const float be[] = {-1e-6f, NAN, INFINITY}; eps = be[fz_pick(in, 3)]; break; }
      case 1: sizes = NULL; break;
      case 2: r = NULL; break;
      case 3: adv = NULL; break;
      case 4: adv = r + fz_pick(in, 2); break; /* partial or exact: both INVALID */
      case 5: adv = (float *)(void *)sizes; break;
      case 6: sizes[1] = SIZE_MAX - fz_pick(in, 2); break; /* sum overflows (sizes[0] >= 2) */
      default: r = (float *)(void *)((char *)r + 2); break; /* misaligned */
      }
    } else {
      fz_writable(adv, &ga);
    }
    fz_snapshot();
    st = nk_grpo_advantages(ctx, Q, sizes, r, eps, unbiased, by_std, adv);
    if (!finish(ctx, op, k, st, want)) return 0;
    nk_ref_grpo(Q, sizes, rr, (double)eps, unbiased, by_std, ar);
    cmp_f32("adv", n, adv, ar, 1e-12);
    return 0;
  }
  /* BNPO: rewards in [r_min, r_max] (binary or uniform), sometimes NaN */
  static const float lo_t[] = {0.0f, 0.0f, -1.0f, -3.0f, 1e4f, -1e30f, 0.0f};
  static const float hi_t[] = {1.0f, 1.0f, 2.0f, 5.0f, 1.001e4f, 1e30f, 1e-30f};
  const unsigned sup = fz_pick(in, 7);
  float lo = lo_t[sup], hi = hi_t[sup];
  const int binary = fz_pick(in, 3) != 0;
  const unsigned nan_rate = fz_pick(in, 6) == 0 ? 40 : 0;
  gr = fz_vec(n, sizeof(float));
  r = fz_place(in, &gr, NULL);
  for (size_t i = 0; i < n; i++) {
    const uint32_t b = (uint32_t)(fz_u8(in) << 8 | fz_u8(in)) * 2654435761u ^ (uint32_t)fz_rand(in);
    float v;
    if ((b & 1023u) < nan_rate) v = NAN;
    else if (binary) v = (b >> 10) & 1 ? hi : lo;
    else {
      const double u = (double)(b >> 10) / 4194304.0;
      v = (float)((double)lo + u * ((double)hi - (double)lo));
      if (v < lo) v = lo;
      if (v > hi) v = hi;
    }
    r[i] = v, rr[i] = v;
  }
  adv = place_out(in, n, sizeof(float), &ga);
  static const double clip_t[] = {1e6, 1e6, INFINITY, 10.0, 1e-3, 1.5};
  double clip = clip_t[fz_pick(in, 6)];
  const unsigned opt = fz_u8(in);
  double *alpha = opt & 1 ? fz_place(in, &gab, NULL) : NULL;
  double *beta = opt & 2 ? fz_place(in, &gab, NULL) : NULL;
  if (bad) {
    switch (k) {
    case 0: { const unsigned w = fz_pick(in, 4);
      if (w == 0) hi = lo; else if (w == 1) lo = NAN; else if (w == 2) hi = INFINITY; else { const float t = lo; lo = hi; hi = t; }
      break; }
    case 1: { static const double bc[] = {0.0, -1.0, NAN, -INFINITY}; clip = bc[fz_pick(in, 4)]; break; }
    case 2: r[fz_pick(in, (unsigned)n)] = fz_u8(in) & 1 ? hi + fabsf(hi) + 1.0f : lo - fabsf(lo) - 1.0f; break;
    case 3: if (!alpha) alpha = fz_place(in, &gab, NULL); beta = alpha; break;
    case 4: alpha = (double *)(void *)adv; break;
    case 5: adv = NULL; break;
    case 6: sizes[1] = SIZE_MAX - fz_pick(in, 2); break;
    default: if (fz_u8(in) & 1) sizes = NULL; else r = NULL; break;
    }
  } else {
    fz_writable(adv, &ga), fz_writable(alpha, &gab), fz_writable(beta, &gab);
  }
  fz_snapshot();
  st = nk_bnpo_advantages(ctx, Q, sizes, r, lo, hi, clip, adv, alpha, beta);
  if (!finish(ctx, op, k, st, want)) return 0;
  double ra, rb;
  nk_ref_bnpo(Q, sizes, rr, lo, hi, clip, ar, &ra, &rb);
  if (alpha) FZ_CHECK(close_d(*alpha, ra, 1e-12, 0.0), "alpha %.17g, ref %.17g", *alpha, ra);
  if (beta) FZ_CHECK(close_d(*beta, rb, 1e-12, 0.0), "beta %.17g, ref %.17g", *beta, rb);
  /* the log-density's terms (lnB, (alpha - 1) log p) are of the size of lgamma(alpha + beta):
   * their double rounding, 8 DBL_EPSILON of that, is the density's relative error (alpha 5e8:
   * 7e-8 relative between library and reference; rlcal-bnpo-concentrated-fit-bound) */
  const double lg = isfinite(ra) && isfinite(rb)
                        ? fabs(lgamma(ra)) + fabs(lgamma(rb)) + fabs(lgamma(ra + rb)) : 0.0;
  const double rel = 1e-12 + 8.0 * DBL_EPSILON * lg;
  for (size_t i = 0; i < n; i++) {
    const double b = fz_ulp(ar[i], NK_DTYPE_F32) + rel * absf(ar[i]);
    FZ_CHECK(fz_close(adv[i], ar[i], b, NK_DTYPE_F32), "adv[%zu] = %.9g, ref %.17g (alpha %g beta %g)",
             i, (double)adv[i], ar[i], ra, rb);
  }
  return 0;
}

/* ------------------------------------------------------------ value encodings --------------- */

/* Logits: from d, one row in 8 constant (a value of d repeated), a few -inf sometimes. */
static void fill_logits(fz_in *in, float *l, size_t n, size_t m, const fz_dist *d, double *ref) {
  for (size_t r = 0; r < n; r++) {
    const unsigned kind = fz_pick(in, 8);
    const double c = fz_value(in, d);
    for (size_t i = 0; i < m; i++) {
      double v = kind == 0 ? c : fz_value(in, d);
      if (kind == 1 && fz_pick(in, 4) == 0) v = -INFINITY;
      l[r * m + i] = (float)v;
      ref[r * m + i] = l[r * m + i];
    }
  }
}

static int run_values(fz_in *in, nk_context *ctx, unsigned op, int bad) {
  static double yr[MAXR], pr[MAXE], lr[MAXE], tr[MAXE], outr[MAXE];
  size_t n = bad ? 1 + fz_pick(in, MAXR) : fz_pick(in, 12) == 0 ? 0 : 1 + fz_pick(in, MAXR);
  size_t m = fz_pick(in, 6) == 0 ? 1 + fz_pick(in, 3) : 1 + fz_pick(in, MAXB);
  if (bad && m < 2) m = 2;
  /* support: well-conditioned tables, or two values of a decoded distribution */
  static const float lo_t[] = {-10.0f, 0.0f, -3.0f, 0.0f, -1e30f, 1e4f, -FLT_MAX / 2, 1e-30f};
  static const float hi_t[] = {10.0f, 11.0f, 4.0f, 1.0f, 1e30f, 1.01e4f, FLT_MAX / 2, 2e-30f};
  const unsigned sup = fz_pick(in, 8);
  float lo = lo_t[sup], hi = hi_t[sup];
  static const float ratio_t[] = {0.75f, 0.75f, 2.0f, 0.1f, 0.5f, 5.0f};
  float ratio = ratio_t[fz_pick(in, 6)];
  const unsigned k = bad ? fz_pick(in, 8) : 0;
  nk_status want = bad ? INV : NK_OK, st;
  fz_geom gi, go, gt, gd;

  if (op == OP_HLGAUSS || op == OP_TWOHOT) {
    /* targets: mostly inside the support, sometimes outside or special */
    gi = fz_vec(n, sizeof(float));
    float *y = fz_place(in, &gi, NULL);
    const fz_dist ud = {0.5, 0.5, 40};
    for (size_t r = 0; r < n; r++) {
      const double u = fz_value(in, &ud); /* about U(-0.37, 1.37), specials */
      y[r] = (float)(isfinite(u) && fabs(u) < 10.0 ? (double)lo + u * ((double)hi - (double)lo) : u);
      yr[r] = y[r];
    }
    float *p = place_out(in, n * m, sizeof(float), &go);
    size_t ncall = n, mcall = m;
    if (bad) {
      switch (k) {
      case 0: mcall = 0; break;
      case 1: if (fz_u8(in) & 1) hi = lo; else lo = hi * 2.0f + 1.0f; break;
      case 2: if (fz_u8(in) & 1) hi = INFINITY; else lo = NAN; break;
      case 3: if (op == OP_HLGAUSS) { static const float br[] = {0.0f, -1.0f, INFINITY, NAN}; ratio = br[fz_pick(in, 4)]; } else y = NULL; break;
      case 4: y = NULL; break;
      case 5: p = NULL; break;
      case 6: ncall = SIZE_MAX / 2 + 1 + fz_pick(in, 8); break;
      default: y = p + fz_pick(in, (unsigned)(n * m)); break;
      }
    } else {
      fz_writable(p, &go);
    }
    fz_snapshot();
    st = op == OP_HLGAUSS ? nk_hlgauss_target(ctx, ncall, mcall, lo, hi, ratio, y, p)
                          : nk_two_hot_target(ctx, ncall, mcall, lo, hi, y, p);
    if (!finish(ctx, op, k, st, want)) return 0;
    const double sigma = (double)ratio * ((double)hi - (double)lo) / (double)m;
    for (size_t r = 0; r < n; r++) {
      if (isnan(yr[r])) {
        for (size_t i = 0; i < m; i++) FZ_CHECK(isnan(p[r * m + i]), "NaN target: probs[%zu][%zu] = %g", r, i, (double)p[r * m + i]);
        continue;
      }
      if (op == OP_HLGAUSS) nk_ref_hlgauss_target(m, lo, hi, sigma, yr[r], pr);
      else nk_ref_two_hot_target(m, lo, hi, yr[r], pr);
      double sum = 0.0;
      for (size_t i = 0; i < m; i++) {
        const float g = p[r * m + i];
        FZ_CHECK(g >= 0.0f, "probs[%zu][%zu] = %g < 0 (y %.9g)", r, i, (double)g, yr[r]);
        sum += g;
        /* two-hot: t = (y - c_0) / zeta carries eps (|y| + |c_0|) / zeta (normkit.h; y 65504 on
         * [-1.7e38, 1.7e38] with 43 bins: 1.2e-15 off, tests/fuzz/known/rlcal-two-hot-wide-support) */
        const double zt = ((double)hi - (double)lo) / (double)m, c0 = (double)lo + 0.5 * zt;
        const double yc = fmin(fmax((double)yr[r], c0), c0 + (double)(m - 1) * zt);
        const double b = fz_ulp(pr[i], NK_DTYPE_F32) + 1e-15 +
                         (op == OP_HLGAUSS ? 0.0 : 2.0 * DBL_EPSILON * (fabs(yc) + fabs(c0)) / zt);
        FZ_CHECK(fz_close(g, pr[i], b, NK_DTYPE_F32),
                 "%s y %.9g [%g, %g] m %zu ratio %g: probs[%zu][%zu] = %.9g, ref %.17g",
                 op_names[op], yr[r], (double)lo, (double)hi, m, (double)ratio, r, i, (double)g, pr[i]);
      }
      FZ_CHECK(fabs(sum - 1.0) < 1e-6, "row %zu sums to %.17g", r, sum);
    }
    return 0;
  }

  const fz_dist ld = fz_dist_pick(in, 24);
  fz_geom gl = fz_vec(n * m, sizeof(float));
  float *l = fz_place(in, &gl, NULL);
  fill_logits(in, l, n, m, &ld, lr);
  if (op == OP_DECODE) {
    float *v = place_out(in, n, sizeof(float), &go);
    size_t ncall = n, mcall = m;
    if (bad) {
      switch (k) {
      case 0: mcall = 0; break;
      case 1: hi = lo; break;
      case 2: lo = -INFINITY; break;
      case 3: l = NULL; break;
      case 4: v = NULL; break;
      case 5: v = l + fz_pick(in, (unsigned)(n * m)); break;
      case 6: ncall = SIZE_MAX / 4 + 1; mcall = 4 + fz_pick(in, 4); break;
      default: v = (float *)(void *)((char *)v + 1); break;
      }
    } else {
      fz_writable(v, &go);
    }
    fz_snapshot();
    st = nk_hlgauss_decode(ctx, ncall, mcall, lo, hi, l, v);
    if (!finish(ctx, op, k, st, want)) return 0;
    for (size_t r = 0; r < n; r++) outr[r] = nk_ref_hlgauss_decode(m, lo, hi, lr + r * m);
    /* the test's 1e-12 at its support [-3, 4], scaled with the largest centre (the header) */
    cmp_f32("value", n, v, outr, 2.5e-13 * fmax(fabs((double)lo), fabs((double)hi)));
    return 0;
  }

  /* OP_XENT: target rows of non-negative weights with zeros, normalized or not */
  gt = fz_vec(n * m, sizeof(float));
  float *t = fz_place(in, &gt, NULL);
  static const double tsum_t[] = {1.0, 1.0, 1.0, 0.5, 3.0, 0.0};
  for (size_t r = 0; r < n; r++) {
    const double want_sum = tsum_t[fz_pick(in, 6)];
    const unsigned zeros = fz_pick(in, 4);
    double w[MAXB], s = 0.0;
    for (size_t i = 0; i < m; i++) {
      w[i] = fz_pick(in, 4) < zeros ? 0.0 : (double)(1 + fz_pick(in, 255));
      s += w[i];
    }
    for (size_t i = 0; i < m; i++) {
      t[r * m + i] = s > 0.0 ? (float)(w[i] * want_sum / s) : 0.0f;
      tr[r * m + i] = t[r * m + i];
    }
  }
  float *loss = place_out(in, n, sizeof(float), &go);
  float *dl = fz_u8(in) & 1 ? place_out(in, n * m, sizeof(float), &gd) : NULL;
  gd = fz_vec(n * m, sizeof(float));
  size_t ncall = n, mcall = m;
  if (bad) {
    switch (k) {
    case 0: mcall = 0; break;
    case 1: l = NULL; break;
    case 2: t = NULL; break;
    case 3: loss = NULL; break;
    case 4: dl = l + fz_pick(in, 2); break;
    case 5: loss = t + fz_pick(in, (unsigned)(n * m)); break;
    case 6: ncall = SIZE_MAX / 2 + 1; break;
    default: if (dl) dl = loss; else loss = l + fz_pick(in, (unsigned)(n * m)); break;
    }
  } else {
    fz_writable(loss, &go), fz_writable(dl, &gd);
  }
  fz_snapshot();
  st = nk_hlgauss_xent(ctx, ncall, mcall, l, t, loss, dl);
  if (!finish(ctx, op, k, st, want)) return 0;
  for (size_t r = 0; r < n; r++) {
    const double *lrow = lr + r * m, *trow = tr + r * m;
    outr[r] = nk_ref_categorical_xent(m, lrow, trow);
    FZ_CHECK(fz_close(loss[r], outr[r], fz_ulp(outr[r], NK_DTYPE_F32) + 1e-12, NK_DTYPE_F32),
             "loss[%zu] = %.9g, ref %.17g (m %zu, l0 %g)", r, (double)loss[r], outr[r], m, lrow[0]);
    if (!dl) continue;
    /* dlogits = S q - p, q = softmax(l) in double (NaN anywhere in the row: NaN) */
    double mx = -INFINITY, den = 0.0, S = 0.0;
    int has_nan = 0;
    for (size_t i = 0; i < m; i++) mx = fmax(mx, lrow[i]), has_nan |= isnan(lrow[i]), S += trow[i];
    for (size_t i = 0; i < m; i++) den += exp(lrow[i] - mx);
    for (size_t i = 0; i < m; i++) {
      const double q = has_nan ? NAN : exp(lrow[i] - mx) / den;
      const double g = S * q - trow[i];
      const double b = 1e-7 * S + 1e-6 * absf(g);
      FZ_CHECK(fz_close(dl[r * m + i], g, b, NK_DTYPE_F32),
               "dlogits[%zu][%zu] = %.9g, ref %.17g (bound %.3g, l %g, mx %g)", r, i,
               (double)dl[r * m + i], g, b, lrow[i], mx);
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ LSC --------------------- */

static int run_lsc(fz_in *in, nk_context *ctx, unsigned op, int bad) {
  static double rr[MAXE], qr[MAXE], ur[MAXE];
  const unsigned k = bad ? fz_pick(in, 6) : 0;
  nk_status want = bad ? INV : NK_OK, st;
  const fz_dist rd = fz_dist_pick(in, 24), qd = fz_u8(in) & 1 ? rd : fz_dist_pick(in, 24);
  fz_geom gr, gq, gu;
  if (op == OP_QUANTILE) {
    size_t kk = 1 + fz_pick(in, MAXK);
    const int ties = fz_pick(in, 4) == 0;
    gr = fz_vec(kk, sizeof(float));
    float *x = fz_place(in, &gr, NULL);
    const fz_dist xd = {rd.shift, rd.scale, fz_pick(in, 4) == 0 ? 16u : 0u};
    for (size_t i = 0; i < kk; i++) {
      x[i] = ties ? (float)(rd.shift + rd.scale * (double)fz_pick(in, 3)) : (float)fz_value(in, &xd);
      rr[i] = x[i];
    }
    static const float lv_t[] = {0.0f, 0.25f, 0.5f, 0.85f, 1.0f, 0.1f, 0.999f};
    float level = fz_pick(in, 3) == 0 ? (float)fz_pick(in, 256) / 255.0f : lv_t[fz_pick(in, 7)];
    float *out = place_out(in, 1, sizeof(float), &gu);
    if (bad) {
      switch (k) {
      case 0: kk = 0; break;
      case 1: { static const float bl[] = {-0.01f, 1.01f, NAN, INFINITY}; level = bl[fz_pick(in, 4)]; break; }
      case 2: x = NULL; break;
      case 3: out = NULL; break;
      case 4: out = x + fz_pick(in, (unsigned)kk); break;
      default: out = (float *)(void *)((char *)out + 2); break;
      }
    } else {
      fz_writable(out, &gu);
    }
    fz_snapshot();
    st = nk_lsc_reward_reference(ctx, kk, x, level, out);
    if (!finish(ctx, op, k, st, want)) return 0;
    int any_nan = 0;
    for (size_t i = 0; i < kk; i++) any_nan |= isnan(rr[i]);
    const double e = any_nan ? NAN : nk_ref_quantile_linear(kk, rr, (double)level);
    cmp_f32("r_ref", 1, out, &e, 1e-15);
    return 0;
  }
  const size_t n = bad ? 2 + fz_pick(in, 15) : fz_pick(in, 10) == 0 ? 0 : 1 + fz_pick(in, 16);
  const size_t J = op == OP_COMBINE ? (bad ? 1 + fz_pick(in, MAXJ) : fz_pick(in, MAXJ + 1)) : 1;
  float *r = place_fill(in, n * J, &rd, rr, &gr);
  float *q = place_fill(in, n * J, &qd, qr, &gq);
  gu = fz_vec(n, sizeof(float));
  float *u;
  const unsigned where = op == OP_LSC ? fz_pick(in, 4) : 0;
  u = where == 1 ? r : where == 2 ? q : fz_place(in, &gu, NULL);
  size_t ncall = n, jcall = J;
  if (bad) {
    switch (k) {
    case 0: r = NULL; break;
    case 1: q = NULL; break;
    case 2: u = NULL; break;
    case 3: u = (op == OP_LSC ? r : q) + 1; break; /* partial overlap (exact only for LSC) */
    case 4: if (op == OP_COMBINE) { ncall = SIZE_MAX / 2 + 1; jcall = 2 + fz_pick(in, 3); } else u = q + 1; break;
    default: u = (float *)(void *)((char *)u + 2); break;
    }
  } else {
    fz_writable(u, &gu);
  }
  fz_snapshot();
  st = op == OP_LSC ? nk_lsc_reward_transform(ctx, ncall, r, q, u)
                    : nk_lsc_reward_combine(ctx, ncall, jcall, r, q, u);
  if (!finish(ctx, op, k, st, want)) return 0;
  for (size_t i = 0; i < n; i++) {
    double s = 0.0;
    for (size_t j = 0; j < J; j++) s += nk_ref_lsc(rr[i * J + j], qr[i * J + j]);
    ur[i] = s;
  }
  cmp_f32("u", n, u, ur, op == OP_LSC ? 0.0 : 1e-15);
  return 0;
}

/* ------------------------------------------------------------------ entry ------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in;
  fz_start(&in, "rlcal", data, size);
  const int bad = fz_pick(&in, 8) == 0;
  nk_context *ctx = fz_context(&in);
  const unsigned op = fz_pick(&in, OP_COUNT);
  if (op <= OP_REWARD) return run_running(&in, ctx, op, bad);
  if (op <= OP_BNPO) return run_groups(&in, ctx, op, bad);
  if (op <= OP_XENT) return run_values(&in, ctx, op, bad);
  return run_lsc(&in, ctx, op, bad);
}
