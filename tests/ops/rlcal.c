/*
 * tests/ops/rlcal.c — RL and calibration transforms (include/normkit.h "RL and calibration")
 * against the float64 references of src/reference/rlcal.c, over sequences where there is state,
 * plus degenerate inputs and invalid arguments (poisoned outputs must stay untouched).
 *
 * Tolerances: f32 outputs computed in double and rounded once: 1 ulp of f32 at |ref| plus a
 * small absolute term for cancellation; double state and outputs: 1e-12 relative (+ an absolute
 * term at the data's scale).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

static nk_context *actx;

static int all_bytes(const void *p, size_t n, unsigned char v) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != v) return 0;
  return 1;
}

#define POISON 0x5A

#define EXPECT_INVALID(call, clean)                                                              \
  do {                                                                                           \
    nk_status got_ = (call);                                                                     \
    NK_CHECK(got_ == NK_STATUS_INVALID_ARGUMENT, "%s: got %s", #call, nk_status_string(got_));   \
    NK_CHECK(nk_context_message(actx)[0] != '\0', "%s: no message", #call);                     \
    NK_CHECK(clean, "%s: wrote an output or the state", #call);                                  \
  } while (0)

static double f32_bound(double ref, double abs_term) {
  return nk_t_ulp(ref, NK_DTYPE_F32) + abs_term;
}
static int close_d(double got, double ref, double rel, double abs_term) {
  return fabs(got - ref) <= rel * fabs(ref) + abs_term;
}

/* ---- running mean/std normalizers ---------------------------------------------------------- */

NK_TEST(running_norm_sequence) {
  enum { D = 5, NMAX = 9 };
  nk_rng rng = {0x77};
  nk_moments st[D];
  double rmean[D], rvar[D];
  nk_ref_rms ref = {rmean, rvar, 0};
  NK_REQUIRE(nk_running_norm_init(actx, D, st) == NK_OK, "init");
  nk_ref_rms_init(D, &ref);
  float x[NMAX * D], y[NMAX * D];
  double xd[NMAX * D], yd[NMAX * D];
  for (int step = 0; step < 8; step++) {
    const size_t N = 1 + (size_t)step % NMAX;
    for (size_t i = 0; i < N * D; i++) {
      x[i] = (float)(5.0 + 3.0 * (double)(i % D) + 2.0 * nk_rng_normal(&rng));
      xd[i] = x[i];
    }
    NK_REQUIRE(nk_running_norm_update(actx, N, D, x, st) == NK_OK, "update");
    nk_ref_rms_update(N, D, xd, &ref);
    for (size_t j = 0; j < D; j++) {
      NK_CHECK(close_d(st[j].count, ref.count, 1e-15, 0), "step %d count %g vs %g", step,
               st[j].count, ref.count);
      NK_CHECK(close_d(st[j].mean, rmean[j], 1e-12, 1e-14), "step %d mean[%zu] %.17g vs %.17g",
               step, j, st[j].mean, rmean[j]);
      NK_CHECK(close_d(st[j].m2 / st[j].count, rvar[j], 1e-12, 1e-14),
               "step %d var[%zu] %.17g vs %.17g", step, j, st[j].m2 / st[j].count, rvar[j]);
    }
    const float clip = step % 2 ? 1.5f : NK_RUNNING_NORM_CLIP_DEFAULT;
    NK_REQUIRE(nk_running_norm_apply(actx, N, D, st, NK_RUNNING_NORM_EPS_DEFAULT, clip, x, y) ==
                   NK_OK,
               "apply");
    nk_ref_rms_normalize(N, D, &ref, 1e-8, clip, xd, yd);
    for (size_t i = 0; i < N * D; i++)
      NK_CHECK(fabs(y[i] - yd[i]) <= f32_bound(yd[i], 1e-12), "step %d y[%zu] %.9g vs %.9g",
               step, i, (double)y[i], yd[i]);
    /* in place gives the same bits */
    float z[NMAX * D];
    memcpy(z, x, sizeof z);
    NK_REQUIRE(nk_running_norm_apply(actx, N, D, st, 1e-8f, clip, z, z) == NK_OK, "in place");
    NK_CHECK(memcmp(z, y, N * D * sizeof(float)) == 0, "in place differs");
  }
}

NK_TEST(running_norm_merge_workers) {
  enum { D = 3, N = 40 };
  nk_rng rng = {0x99};
  float x[N * D];
  for (size_t i = 0; i < N * D; i++) x[i] = (float)(1e3 + nk_rng_normal(&rng));
  nk_moments one[D], global[D], w[3][D];
  nk_running_norm_init(actx, D, one);
  nk_running_norm_init(actx, D, global);
  NK_REQUIRE(nk_running_norm_update(actx, N, D, x, one) == NK_OK, "update all");
  const size_t cut[4] = {0, 7, 23, N};
  for (int k = 0; k < 3; k++) {
    memset(w[k], 0, sizeof w[k]); /* workers start empty */
    NK_REQUIRE(nk_running_norm_update(actx, cut[k + 1] - cut[k], D, x + cut[k] * D, w[k]) ==
                   NK_OK,
               "worker update");
    nk_moments_merge_n(D, global, w[k]);
  }
  for (size_t j = 0; j < D; j++) {
    NK_CHECK(close_d(global[j].count, one[j].count, 1e-15, 0), "count");
    NK_CHECK(close_d(global[j].mean, one[j].mean, 1e-13, 0), "mean %.17g vs %.17g",
             global[j].mean, one[j].mean);
    NK_CHECK(close_d(global[j].m2, one[j].m2, 1e-9, 0), "m2 %.17g vs %.17g", global[j].m2,
             one[j].m2);
  }
}

NK_TEST(running_norm_reward_sequence) {
  enum { E = 4 };
  nk_rng rng = {0x5};
  nk_moments st;
  double rm, rv, ret[E] = {0}, rret[E] = {0};
  nk_ref_rms ref = {&rm, &rv, 0};
  nk_running_norm_init(actx, 1, &st);
  nk_ref_rms_init(1, &ref);
  for (int step = 0; step < 12; step++) {
    float r[E], out[E];
    double rd[E], outd[E];
    unsigned char done[E];
    for (size_t e = 0; e < E; e++) {
      r[e] = (float)(nk_rng_normal(&rng) + (step == 5 ? 50.0 : 0.0));
      rd[e] = r[e];
      done[e] = (unsigned char)(nk_rng_uniform(&rng) < 0.2);
    }
    NK_REQUIRE(nk_running_norm_reward(actx, E, 0.99f, 1e-8f, 3.0f, r, done, ret, &st, out) ==
                   NK_OK,
               "reward");
    nk_ref_vecnorm_reward(E, (double)0.99f, 1e-8, 3.0, rd, done, rret, &ref, outd);
    for (size_t e = 0; e < E; e++) {
      NK_CHECK(close_d(ret[e], rret[e], 1e-13, 1e-13), "ret");
      NK_CHECK(fabs(out[e] - outd[e]) <= f32_bound(outd[e], 1e-12), "step %d out %g vs %g",
               step, (double)out[e], outd[e]);
    }
    NK_CHECK(close_d(st.mean, rm, 1e-12, 1e-13) && close_d(st.m2 / st.count, rv, 1e-12, 1e-13),
             "ret stats step %d", step);
  }
  /* eval-mode scaling and in place */
  float r[3] = {1.0f, -1e9f, NAN}, o[3];
  NK_REQUIRE(nk_running_norm_scale(actx, 3, &st, 1e-8f, 10.0f, r, o) == NK_OK, "scale");
  NK_CHECK(fabs(o[0] - 1.0 / sqrt(rv + 1e-8)) <= f32_bound(o[0], 0), "scale value");
  NK_CHECK(o[1] == -10.0f && isnan(o[2]), "scale clip/NaN");
  NK_REQUIRE(nk_running_norm_scale(actx, 3, &st, 1e-8f, 10.0f, r, r) == NK_OK, "scale in place");
  NK_CHECK(memcmp(r, o, sizeof o) == 0, "scale in place differs");
}

NK_TEST(running_norm_degenerate) {
  /* constant feature: var -> tiny, eps keeps it finite; no clipping with +inf */
  nk_moments st[2];
  nk_running_norm_init(actx, 2, st);
  float x[6] = {2, NAN, 2, 1, 2, 1};
  NK_REQUIRE(nk_running_norm_update(actx, 3, 2, x, st) == NK_OK, "update");
  NK_CHECK(isnan(st[1].mean) && isnan(st[1].m2), "NaN feature");
  NK_CHECK(fabs(st[0].mean - 2.0 * 3 / (3 + 1e-4)) < 1e-12, "mean of constant");
  float y[6];
  NK_REQUIRE(nk_running_norm_apply(actx, 3, 2, st, 0.0f, INFINITY, x, y) == NK_OK, "apply");
  NK_CHECK(isfinite(y[0]) && isnan(y[1]), "values");
  /* zero rows: no change */
  nk_moments before = st[0];
  NK_CHECK(nk_running_norm_update(actx, 0, 2, NULL, st) == NK_OK, "rows 0");
  NK_CHECK(memcmp(&before, &st[0], sizeof before) == 0, "rows 0 changed the state");
}

NK_TEST(running_norm_invalid) {
  nk_moments st[2], save[2];
  nk_running_norm_init(actx, 2, st);
  memcpy(save, st, sizeof st);
  float x[4] = {1, 2, 3, 4}, y[4];
  memset(y, POISON, sizeof y);
#define CLEAN (all_bytes(y, sizeof y, POISON) && memcmp(st, save, sizeof st) == 0)
  EXPECT_INVALID(nk_running_norm_init(actx, 2, NULL), 1);
  EXPECT_INVALID(nk_running_norm_update(actx, 2, 2, NULL, st), CLEAN);
  EXPECT_INVALID(nk_running_norm_update(actx, 2, 2, x, NULL), CLEAN);
  EXPECT_INVALID(nk_running_norm_update(actx, SIZE_MAX, 2, x, st), CLEAN);
  st[1].count = -1;
  EXPECT_INVALID(nk_running_norm_update(actx, 2, 2, x, st), all_bytes(y, sizeof y, POISON));
  st[1].count = NAN;
  EXPECT_INVALID(nk_running_norm_update(actx, 2, 2, x, st), all_bytes(y, sizeof y, POISON));
  memcpy(st, save, sizeof st);
  st[0].m2 = -1;
  EXPECT_INVALID(nk_running_norm_apply(actx, 2, 2, st, 1e-8f, 10, x, y),
                 all_bytes(y, sizeof y, POISON));
  memcpy(st, save, sizeof st);
  st[0].count = 0; /* apply needs count > 0 */
  EXPECT_INVALID(nk_running_norm_apply(actx, 2, 2, st, 1e-8f, 10, x, y),
                 all_bytes(y, sizeof y, POISON));
  memcpy(st, save, sizeof st);
  EXPECT_INVALID(nk_running_norm_apply(actx, 2, 2, st, -1.0f, 10, x, y), CLEAN);
  EXPECT_INVALID(nk_running_norm_apply(actx, 2, 2, st, NAN, 10, x, y), CLEAN);
  EXPECT_INVALID(nk_running_norm_apply(actx, 2, 2, st, 1e-8f, 0.0f, x, y), CLEAN);
  EXPECT_INVALID(nk_running_norm_apply(actx, 2, 2, st, 1e-8f, NAN, x, y), CLEAN);
  EXPECT_INVALID(nk_running_norm_apply(actx, 2, 2, st, 1e-8f, 10, x, NULL), CLEAN);
  EXPECT_INVALID(nk_running_norm_apply(actx, 2, 2, st, 1e-8f, 10, x, x + 1), CLEAN);
  EXPECT_INVALID(nk_running_norm_apply(actx, 2, 2, st, 1e-8f, 10, x, (float *)(void *)st),
                 memcmp(st, save, sizeof st) == 0);
  EXPECT_INVALID(nk_running_norm_update(actx, 1, 2, (float *)(void *)st, st), CLEAN);
  double ret[2] = {1, 2};
  unsigned char done[2] = {0, 1};
  EXPECT_INVALID(nk_running_norm_reward(actx, 2, 1.5f, 1e-8f, 10, x, done, ret, st, y),
                 CLEAN && ret[0] == 1 && ret[1] == 2);
  EXPECT_INVALID(nk_running_norm_reward(actx, 2, NAN, 1e-8f, 10, x, done, ret, st, y),
                 CLEAN && ret[0] == 1);
  EXPECT_INVALID(nk_running_norm_reward(actx, 2, 0.9f, 1e-8f, 10, x, done, NULL, st, y), CLEAN);
  EXPECT_INVALID(nk_running_norm_reward(actx, 2, 0.9f, 1e-8f, 10, x, done, ret, st,
                                        (float *)(void *)ret),
                 CLEAN && ret[0] == 1 && ret[1] == 2);
  EXPECT_INVALID(nk_running_norm_scale(actx, 2, st, 1e-8f, 10, x, x + 1), CLEAN);
#undef CLEAN
}

/* ---- GRPO and BNPO ------------------------------------------------------------------------ */

NK_TEST(grpo_random_groups) {
  enum { GROUPS = 7, NMAX = 64 };
  nk_rng rng = {0x31};
  const size_t sizes[GROUPS] = {4, 1, 0, 16, 2, 5, 8};
  float r[NMAX], adv[NMAX];
  double rd[NMAX], ref[NMAX];
  size_t n = 0;
  for (int g = 0; g < GROUPS; g++) n += sizes[g];
  for (size_t i = 0; i < n; i++) r[i] = (float)nk_rng_normal(&rng), rd[i] = r[i];
  for (int mode = 0; mode < 4; mode++) {
    const int unbiased = mode & 1, by_std = !(mode & 2);
    NK_REQUIRE(nk_grpo_advantages(actx, GROUPS, sizes, r, NK_GRPO_EPS_DEFAULT, unbiased, by_std,
                                  adv) == NK_OK,
               "grpo");
    nk_ref_grpo(GROUPS, sizes, rd, (double)NK_GRPO_EPS_DEFAULT, unbiased, by_std, ref);
    for (size_t i = 0; i < n; i++)
      NK_CHECK(fabs(adv[i] - ref[i]) <= f32_bound(ref[i], 1e-12), "mode %d adv[%zu] %g vs %g",
               mode, i, (double)adv[i], ref[i]);
  }
  /* size-1 group passes the reward through: r / (1 + eps) */
  NK_CHECK(fabs(adv[4] - r[4]) <= 2e-6 * fabs(r[4]), "lone reward");
}

NK_TEST(grpo_degenerate) {
  const size_t sizes[3] = {4, 3, 2};
  float r[9] = {1, 1, 1, 1, 0.5f, NAN, 0, 0, 0};
  float adv[9];
  NK_REQUIRE(nk_grpo_advantages(actx, 3, sizes, r, 1e-6f, 1, 1, adv) == NK_OK, "grpo");
  for (int i = 0; i < 4; i++) NK_CHECK(adv[i] == 0.0f, "all-equal group gives 0");
  for (int i = 4; i < 7; i++) NK_CHECK(isnan(adv[i]), "NaN group");
  NK_CHECK(adv[7] == 0.0f && adv[8] == 0.0f, "NaN stays in its group");
  /* eps 0 on an all-equal group: 0/0 */
  NK_REQUIRE(nk_grpo_advantages(actx, 1, sizes, r, 0.0f, 1, 1, adv) == NK_OK, "eps 0");
  NK_CHECK(isnan(adv[0]), "eps 0, std 0 gives NaN");
  NK_CHECK(nk_grpo_advantages(actx, 0, NULL, NULL, 1e-6f, 1, 1, NULL) == NK_OK, "no groups");
  const size_t zero[2] = {0, 0};
  NK_CHECK(nk_grpo_advantages(actx, 2, zero, NULL, 1e-6f, 1, 1, NULL) == NK_OK, "empty groups");
}

NK_TEST(bnpo_random_batches) {
  enum { GROUPS = 8, G = 16 };
  nk_rng rng = {0x41};
  size_t sizes[GROUPS];
  float r[GROUPS * G], adv[GROUPS * G];
  double rd[GROUPS * G], ref[GROUPS * G];
  for (int batch = 0; batch < 6; batch++) {
    size_t n = 0;
    for (int q = 0; q < GROUPS; q++) {
      sizes[q] = batch == 5 && q == 2 ? 1 : batch == 4 && q == 3 ? 0 : G;
      const double rate = nk_rng_uniform(&rng);
      for (size_t i = 0; i < sizes[q]; i++, n++) {
        /* binary rewards in {r_min, r_max}; batch 3 uses a wider reward range */
        const int hit = nk_rng_uniform(&rng) < rate;
        r[n] = batch == 3 ? (hit ? 2.0f : -1.0f) : (float)hit;
        rd[n] = r[n];
      }
    }
    const float lo = batch == 3 ? -1.0f : 0.0f, hi = batch == 3 ? 2.0f : 1.0f;
    double a, b, ra, rb;
    NK_REQUIRE(nk_bnpo_advantages(actx, GROUPS, sizes, r, lo, hi, NK_BNPO_CLIP_DEFAULT, adv, &a,
                                  &b) == NK_OK,
               "bnpo");
    nk_ref_bnpo(GROUPS, sizes, rd, lo, hi, NK_BNPO_CLIP_DEFAULT, ref, &ra, &rb);
    NK_CHECK(close_d(a, ra, 1e-12, 0) && close_d(b, rb, 1e-12, 0),
             "batch %d alpha/beta %g %g vs %g %g", batch, a, b, ra, rb);
    for (size_t i = 0; i < n; i++)
      NK_CHECK(fabs(adv[i] - ref[i]) <= f32_bound(ref[i], 0) + 1e-12 * fabs(ref[i]),
               "batch %d adv[%zu] %.9g vs %.9g", batch, i, (double)adv[i], ref[i]);
  }
}

NK_TEST(bnpo_special_cases) {
  double a, b;
  float adv[8];
  /* alpha = beta = 1 (Q == 1): adv = R - p */
  const size_t one[1] = {4};
  const float r1[4] = {1, 0, 0, 1};
  NK_REQUIRE(nk_bnpo_advantages(actx, 1, one, r1, 0, 1, 1e6, adv, &a, &b) == NK_OK, "Q 1");
  NK_CHECK(a == 1.0 && b == 1.0, "Q 1: alpha %g beta %g", a, b);
  NK_CHECK(adv[0] == 0.5f && adv[1] == -0.5f, "Q 1 adv");
  /* s2 == 0: two groups with the same success rate */
  const size_t two[2] = {2, 2};
  const float r2[4] = {1, 0, 0, 1};
  NK_REQUIRE(nk_bnpo_advantages(actx, 2, two, r2, 0, 1, 1e6, adv, &a, &b) == NK_OK, "s2 0");
  NK_CHECK(a == 1.0 && b == 1.0 && adv[0] == 0.5f && adv[1] == -0.5f, "s2 0 gives REINFORCE");
  /* all rewards equal within groups, all groups equal: zero advantages */
  const float r3[4] = {1, 1, 1, 1};
  NK_REQUIRE(nk_bnpo_advantages(actx, 2, two, r3, 0, 1, 1e6, adv, &a, &b) == NK_OK, "all 1");
  NK_CHECK(adv[0] == 0 && adv[1] == 0 && adv[2] == 0 && adv[3] == 0, "all equal gives 0");
  /* p at 0 with alpha > 1: f == 0, w == clip, adv 0 (never NaN) */
  const size_t four[4] = {2, 2, 2, 2};
  const float r4[8] = {0, 0, 1, 0, 1, 0, 0, 1};
  NK_REQUIRE(nk_bnpo_advantages(actx, 4, four, r4, 0, 1, 1e6, adv, &a, &b) == NK_OK, "p 0");
  NK_CHECK(a > 1.0 && b > 1.0, "alpha %g beta %g", a, b);
  NK_CHECK(adv[0] == 0.0f && adv[1] == 0.0f, "p == 0 gives exactly 0");
  /* NaN propagates everywhere */
  const float r5[4] = {1, NAN, 0, 1};
  NK_REQUIRE(nk_bnpo_advantages(actx, 2, two, r5, 0, 1, 1e6, adv, &a, &b) == NK_OK, "NaN");
  NK_CHECK(isnan(a) && isnan(b) && isnan(adv[2]), "NaN batch");
}

NK_TEST(advantages_invalid) {
  const size_t sizes[2] = {2, 2};
  float r[4] = {0, 1, 1, 1}, adv[4];
  double a = 7, b = 7;
  memset(adv, POISON, sizeof adv);
#define CLEAN (all_bytes(adv, sizeof adv, POISON) && a == 7 && b == 7)
  EXPECT_INVALID(nk_grpo_advantages(actx, 2, NULL, r, 1e-6f, 1, 1, adv), CLEAN);
  EXPECT_INVALID(nk_grpo_advantages(actx, 2, sizes, NULL, 1e-6f, 1, 1, adv), CLEAN);
  EXPECT_INVALID(nk_grpo_advantages(actx, 2, sizes, r, 1e-6f, 1, 1, NULL), CLEAN);
  EXPECT_INVALID(nk_grpo_advantages(actx, 2, sizes, r, -1e-6f, 1, 1, adv), CLEAN);
  EXPECT_INVALID(nk_grpo_advantages(actx, 2, sizes, r, NAN, 1, 1, adv), CLEAN);
  EXPECT_INVALID(nk_grpo_advantages(actx, 2, sizes, r, 1e-6f, 1, 1, r + 1), CLEAN);
  const size_t huge[2] = {SIZE_MAX, 2};
  EXPECT_INVALID(nk_grpo_advantages(actx, 2, huge, r, 1e-6f, 1, 1, adv), CLEAN);
  EXPECT_INVALID(nk_bnpo_advantages(actx, 2, sizes, r, 1, 1, 1e6, adv, &a, &b), CLEAN);
  EXPECT_INVALID(nk_bnpo_advantages(actx, 2, sizes, r, 0, INFINITY, 1e6, adv, &a, &b), CLEAN);
  EXPECT_INVALID(nk_bnpo_advantages(actx, 2, sizes, r, 0, 1, 0, adv, &a, &b), CLEAN);
  EXPECT_INVALID(nk_bnpo_advantages(actx, 2, sizes, r, 0, 1, NAN, adv, &a, &b), CLEAN);
  EXPECT_INVALID(nk_bnpo_advantages(actx, 2, sizes, r, 0, 0.5f, 1e6, adv, &a, &b), CLEAN);
  EXPECT_INVALID(nk_bnpo_advantages(actx, 2, sizes, r, 0, 1, 1e6, adv, &a, &a), CLEAN);
  EXPECT_INVALID(nk_bnpo_advantages(actx, 2, sizes, r, 0, 1, 1e6, adv, (double *)(void *)adv,
                                    &b),
                 CLEAN);
  EXPECT_INVALID(nk_bnpo_advantages(actx, 2, huge, r, 0, 1, 1e6, adv, &a, &b), CLEAN);
#undef CLEAN
}

/* ---- HL-Gauss and two-hot ------------------------------------------------------------------ */

NK_TEST(hlgauss_targets_vs_reference) {
  enum { N = 40, M = 51 };
  nk_rng rng = {0x51};
  const float lo = -10.0f, hi = 10.0f;
  static float y[N], p[N * M];
  double ref[M];
  for (size_t r = 0; r < N; r++) y[r] = (float)(14.0 * (2.0 * nk_rng_uniform(&rng) - 1.0));
  y[0] = lo, y[1] = hi, y[2] = 0.0f, y[3] = 1e30f, y[4] = -1e30f;
  for (int pass = 0; pass < 2; pass++) {
    const float ratio = pass ? 2.0f : NK_HLGAUSS_SIGMA_RATIO_DEFAULT;
    NK_REQUIRE(nk_hlgauss_target(actx, N, M, lo, hi, ratio, y, p) == NK_OK, "target");
    const double sigma = (double)ratio * ((double)hi - lo) / M;
    for (size_t r = 0; r < N; r++) {
      nk_ref_hlgauss_target(M, lo, hi, sigma, y[r], ref);
      double sum = 0.0;
      for (size_t i = 0; i < M; i++) {
        const float g = p[r * M + i];
        sum += g;
        NK_CHECK(g >= 0.0f, "negative mass");
        NK_CHECK(fabs(g - ref[i]) <= f32_bound(ref[i], 1e-15), "y %g bin %zu: %.9g vs %.9g",
                 (double)y[r], i, (double)g, ref[i]);
      }
      NK_CHECK(fabs(sum - 1.0) < 1e-6, "row sum %.17g", sum);
    }
  }
  /* tails: far bins keep relative accuracy (the erf form would give 0 or noise there) */
  const float yt = -10.0f;
  NK_REQUIRE(nk_hlgauss_target(actx, 1, M, lo, hi, 0.75f, &yt, p) == NK_OK, "tail");
  const double sigma = 0.75 * 20.0 / M, z = 20.0 / M;
  const double num = 0.5 * (erfc(5 * z / (sigma * sqrt(2.0))) - erfc(6 * z / (sigma * sqrt(2.0))));
  const double den = 0.5 * erfc(0.0) - 0.5 * erfc(20.0 / (sigma * sqrt(2.0)));
  NK_CHECK(fabs(p[5] - num / den) <= 2 * nk_t_ulp(num / den, NK_DTYPE_F32) && p[5] > 0,
           "tail bin %.9g vs %.9g", (double)p[5], num / den);
  const float ynan = NAN;
  NK_REQUIRE(nk_hlgauss_target(actx, 1, M, lo, hi, 0.75f, &ynan, p) == NK_OK, "NaN");
  NK_CHECK(isnan(p[0]) && isnan(p[M - 1]), "NaN target gives a NaN row");
}

NK_TEST(two_hot_vs_reference) {
  enum { N = 64, M = 11 };
  nk_rng rng = {0x61};
  const float lo = 0.0f, hi = 11.0f;
  float y[N], p[N * M];
  double ref[M];
  for (size_t r = 0; r < N; r++) y[r] = (float)(-1.0 + 13.0 * nk_rng_uniform(&rng));
  y[0] = 0.5f, y[1] = 10.5f, y[2] = 3.5f, y[3] = 3.75f, y[4] = -5.0f, y[5] = 50.0f;
  NK_REQUIRE(nk_two_hot_target(actx, N, M, lo, hi, y, p) == NK_OK, "two-hot");
  for (size_t r = 0; r < N; r++) {
    nk_ref_two_hot_target(M, lo, hi, y[r], ref);
    double mean = 0.0, rmean = 0.0;
    for (size_t i = 0; i < M; i++) {
      NK_CHECK(fabs(p[r * M + i] - ref[i]) <= f32_bound(ref[i], 1e-15), "y %g bin %zu %g vs %g",
               (double)y[r], i, (double)p[r * M + i], ref[i]);
      mean += p[r * M + i] * (i + 0.5), rmean += ref[i] * (i + 0.5);
    }
    /* the expectation of the target over the centres is the clipped y */
    NK_CHECK(fabs(mean - fmin(fmax(y[r], 0.5), 10.5)) < 1e-6, "mean %g for y %g", mean,
             (double)y[r]);
  }
  NK_CHECK(p[0] == 1.0f && p[M + 10] == 1.0f && p[4 * M] == 1.0f && p[5 * M + 10] == 1.0f,
           "end centres");
  float one;
  NK_REQUIRE(nk_two_hot_target(actx, 1, 1, lo, hi, &y[7], &one) == NK_OK && one == 1.0f,
             "one bin");
}

NK_TEST(hlgauss_decode_and_xent) {
  enum { N = 6, M = 21 };
  nk_rng rng = {0x71};
  const float lo = -3.0f, hi = 4.0f;
  float l[N * M], t[N * M], y[N], v[N], loss[N], dl[N * M];
  double ld[M], td[M];
  for (size_t i = 0; i < N * M; i++) l[i] = (float)(2.0 * nk_rng_normal(&rng));
  for (size_t r = 0; r < N; r++) y[r] = (float)(-3.0 + 7.0 * nk_rng_uniform(&rng));
  NK_REQUIRE(nk_hlgauss_target(actx, N / 2, M, lo, hi, 0.75f, y, t) == NK_OK, "hl");
  NK_REQUIRE(nk_two_hot_target(actx, N - N / 2, M, lo, hi, y + N / 2, t + (N / 2) * M) == NK_OK,
             "two-hot");
  l[3] = 80.0f; /* a large logit: stability */
  NK_REQUIRE(nk_hlgauss_decode(actx, N, M, lo, hi, l, v) == NK_OK, "decode");
  NK_REQUIRE(nk_hlgauss_xent(actx, N, M, l, t, loss, dl) == NK_OK, "xent");
  double worst_fd = 0.0;
  for (size_t r = 0; r < N; r++) {
    for (size_t i = 0; i < M; i++) ld[i] = l[r * M + i], td[i] = t[r * M + i];
    const double rv = nk_ref_hlgauss_decode(M, lo, hi, ld);
    NK_CHECK(fabs(v[r] - rv) <= f32_bound(rv, 1e-12), "decode %g vs %g", (double)v[r], rv);
    const double rl = nk_ref_categorical_xent(M, ld, td);
    NK_CHECK(fabs(loss[r] - rl) <= f32_bound(rl, 1e-12), "loss %g vs %g", (double)loss[r], rl);
    for (size_t i = 0; i < M; i++) { /* central differences of the float64 reference loss */
      const double h = 1e-5, x0 = ld[i];
      ld[i] = x0 + h;
      const double lp = nk_ref_categorical_xent(M, ld, td);
      ld[i] = x0 - h;
      const double lm = nk_ref_categorical_xent(M, ld, td);
      ld[i] = x0;
      const double fd = (lp - lm) / (2 * h);
      const double e = fabs(dl[r * M + i] - fd);
      if (e > worst_fd) worst_fd = e;
      NK_CHECK(e <= 1e-7 + 1e-6 * fabs(fd), "row %zu grad %zu %.9g vs fd %.9g", r, i,
               (double)dl[r * M + i], fd);
    }
  }
  printf("        hlgauss_xent: worst |grad - fd| %.2e\n", worst_fd);
  /* zero target entries with -inf logits contribute nothing */
  float l2[3] = {-INFINITY, 0.0f, 1.0f}, t2[3] = {0.0f, 0.5f, 0.5f}, lo2, d2[3];
  NK_REQUIRE(nk_hlgauss_xent(actx, 1, 3, l2, t2, &lo2, d2) == NK_OK, "inf logit");
  NK_CHECK(isfinite(lo2) && d2[0] == 0.0f, "0 * log 0 term: loss %g", (double)lo2);
  /* NaN logits */
  l2[0] = NAN;
  NK_REQUIRE(nk_hlgauss_xent(actx, 1, 3, l2, t2, &lo2, d2) == NK_OK, "NaN logit");
  NK_CHECK(isnan(lo2) && isnan(d2[1]), "NaN propagates");
  NK_REQUIRE(nk_hlgauss_decode(actx, 1, 3, lo, hi, l2, v) == NK_OK && isnan(v[0]), "decode NaN");
}

NK_TEST(value_encodings_invalid) {
  float y[2] = {0, 1}, p[12], l[8] = {0};
  memset(p, POISON, sizeof p);
#define CLEAN all_bytes(p, sizeof p, POISON)
  EXPECT_INVALID(nk_hlgauss_target(actx, 2, 0, 0, 1, 0.75f, y, p), CLEAN);
  EXPECT_INVALID(nk_hlgauss_target(actx, 2, 4, 1, 1, 0.75f, y, p), CLEAN);
  EXPECT_INVALID(nk_hlgauss_target(actx, 2, 4, 0, NAN, 0.75f, y, p), CLEAN);
  EXPECT_INVALID(nk_hlgauss_target(actx, 2, 4, 0, 1, 0.0f, y, p), CLEAN);
  EXPECT_INVALID(nk_hlgauss_target(actx, 2, 4, 0, 1, INFINITY, y, p), CLEAN);
  EXPECT_INVALID(nk_hlgauss_target(actx, 2, 4, 0, 1, 0.75f, NULL, p), CLEAN);
  EXPECT_INVALID(nk_hlgauss_target(actx, 2, 4, 0, 1, 0.75f, y, NULL), CLEAN);
  EXPECT_INVALID(nk_hlgauss_target(actx, SIZE_MAX, 4, 0, 1, 0.75f, y, p), CLEAN);
  EXPECT_INVALID(nk_hlgauss_target(actx, 2, 4, 0, 1, 0.75f, p + 7, p), CLEAN);
  EXPECT_INVALID(nk_two_hot_target(actx, 2, 4, 2, 1, y, p), CLEAN);
  EXPECT_INVALID(nk_two_hot_target(actx, 2, 4, 0, 1, y, NULL), CLEAN);
  EXPECT_INVALID(nk_two_hot_target(actx, 2, 4, 0, 1, p + 1, p), CLEAN);
  EXPECT_INVALID(nk_hlgauss_decode(actx, 2, 4, 0, 1, NULL, p), CLEAN);
  EXPECT_INVALID(nk_hlgauss_decode(actx, 2, 4, 0, 1, p + 1, p), CLEAN);
  EXPECT_INVALID(nk_hlgauss_decode(actx, 2, 0, 0, 1, l, p), CLEAN);
  EXPECT_INVALID(nk_hlgauss_xent(actx, 2, 0, l, l, p, p), CLEAN);
  EXPECT_INVALID(nk_hlgauss_xent(actx, 2, 4, NULL, l, p, NULL), CLEAN);
  EXPECT_INVALID(nk_hlgauss_xent(actx, 2, 4, l, l, NULL, NULL), CLEAN);
  EXPECT_INVALID(nk_hlgauss_xent(actx, 2, 4, l, l, p, p + 1), CLEAN);
  EXPECT_INVALID(nk_hlgauss_xent(actx, 2, 4, p, l, p, NULL), CLEAN);
  EXPECT_INVALID(nk_hlgauss_xent(actx, SIZE_MAX / 2, 4, l, l, p, NULL), CLEAN);
#undef CLEAN
}

/* ---- LSC reward transform ---------------------------------------------------------------- */

NK_TEST(lsc_transform_and_combine) {
  enum { N = 50, J = 3 };
  nk_rng rng = {0x81};
  float r[N * J], ref[N * J], u[N * J], uc[N];
  for (size_t i = 0; i < N * J; i++) {
    r[i] = (float)(4.0 * nk_rng_normal(&rng));
    ref[i] = (float)nk_rng_normal(&rng);
  }
  r[0] = 1e6f, r[1] = -1e6f, r[2] = 800.0f, ref[2] = 0.0f; /* saturation and the linear tail */
  NK_REQUIRE(nk_lsc_reward_transform(actx, N * J, r, ref, u) == NK_OK, "transform");
  for (size_t i = 0; i < N * J; i++) {
    const double e = nk_ref_lsc(r[i], ref[i]);
    NK_CHECK(fabs(u[i] - e) <= f32_bound(e, 0), "u[%zu] %.9g vs %.9g", i, (double)u[i], e);
    NK_CHECK(u[i] <= 0.0f, "log-probability > 0");
  }
  NK_CHECK(u[0] == 0.0f || u[0] > -1e-30f, "saturates at 0");
  NK_CHECK(u[1] == (float)(-1e6 - (double)ref[1]), "linear tail %g", (double)u[1]);
  NK_REQUIRE(nk_lsc_reward_combine(actx, N, J, r, ref, uc) == NK_OK, "combine");
  for (size_t i = 0; i < N; i++) {
    double e = 0.0;
    for (size_t j = 0; j < J; j++) e += nk_ref_lsc(r[i * J + j], ref[i * J + j]);
    NK_CHECK(fabs(uc[i] - e) <= f32_bound(e, 1e-15), "combined %zu %.9g vs %.9g", i,
             (double)uc[i], e);
  }
  /* in place and the empty sum */
  float w[4] = {1, 2, NAN, INFINITY}, wr[4] = {0, 2, 0, 0};
  NK_REQUIRE(nk_lsc_reward_transform(actx, 4, w, wr, w) == NK_OK, "in place");
  NK_CHECK(fabs(w[0] - nk_ref_lsc(1, 0)) <= f32_bound(w[0], 0) && w[1] == (float)-log(2.0),
           "in place values");
  NK_CHECK(isnan(w[2]) && w[3] == 0.0f, "NaN and +inf");
  float z[2] = {5, 5};
  NK_REQUIRE(nk_lsc_reward_combine(actx, 2, 0, NULL, NULL, z) == NK_OK, "J 0");
  NK_CHECK(z[0] == 0.0f && z[1] == 0.0f, "empty sum");
}

NK_TEST(lsc_reference_quantile) {
  nk_rng rng = {0x91};
  float x[37];
  double xd[37];
  for (int trial = 0; trial < 8; trial++) {
    const size_t k = 1 + (size_t)trial * 5;
    for (size_t i = 0; i < k; i++) {
      x[i] = (float)(trial == 3 ? (double)(i % 3) : nk_rng_normal(&rng)); /* ties */
      xd[i] = x[i];
    }
    const float levels[5] = {0.0f, 0.25f, 0.5f, 0.85f, 1.0f};
    for (int l = 0; l < 5; l++) {
      float got = 0;
      NK_REQUIRE(nk_lsc_reward_reference(actx, k, x, levels[l], &got) == NK_OK, "quantile");
      const double e = nk_ref_quantile_linear(k, xd, levels[l]);
      NK_CHECK(fabs(got - e) <= f32_bound(e, 1e-15), "k %zu level %g: %.9g vs %.9g", k,
               (double)levels[l], (double)got, e);
    }
  }
  float y[3] = {1, NAN, 2}, got;
  NK_REQUIRE(nk_lsc_reward_reference(actx, 3, y, 0.5f, &got) == NK_OK && isnan(got), "NaN");
}

NK_TEST(lsc_invalid) {
  float r[4] = {1, 2, 3, 4}, q[4] = {0}, u[4];
  memset(u, POISON, sizeof u);
#define CLEAN all_bytes(u, sizeof u, POISON)
  EXPECT_INVALID(nk_lsc_reward_transform(actx, 4, NULL, q, u), CLEAN);
  EXPECT_INVALID(nk_lsc_reward_transform(actx, 4, r, NULL, u), CLEAN);
  EXPECT_INVALID(nk_lsc_reward_transform(actx, 4, r, q, NULL), CLEAN);
  EXPECT_INVALID(nk_lsc_reward_transform(actx, 3, u + 1, q, u), CLEAN);
  EXPECT_INVALID(nk_lsc_reward_combine(actx, 2, 2, r, q, NULL), CLEAN);
  EXPECT_INVALID(nk_lsc_reward_combine(actx, 2, 2, NULL, q, u), CLEAN);
  EXPECT_INVALID(nk_lsc_reward_combine(actx, 2, 2, u, q, u), CLEAN);
  EXPECT_INVALID(nk_lsc_reward_combine(actx, SIZE_MAX, 2, r, q, u), CLEAN);
  EXPECT_INVALID(nk_lsc_reward_reference(actx, 0, r, 0.5f, u), CLEAN);
  EXPECT_INVALID(nk_lsc_reward_reference(actx, 4, r, 1.5f, u), CLEAN);
  EXPECT_INVALID(nk_lsc_reward_reference(actx, 4, r, NAN, u), CLEAN);
  EXPECT_INVALID(nk_lsc_reward_reference(actx, 4, NULL, 0.5f, u), CLEAN);
  EXPECT_INVALID(nk_lsc_reward_reference(actx, 4, r, 0.5f, NULL), CLEAN);
  EXPECT_INVALID(nk_lsc_reward_reference(actx, 4, u, 0.5f, u + 1), CLEAN);
#undef CLEAN
}

/* ---- temperature scaling and ECE ------------------------------------------------------------ */

/* Overconfident synthetic classifier: logits = s * (noisy one-hot of a label that is right with
 * probability acc). */
static void make_logits(nk_rng *rng, size_t n, size_t C, double s, double acc, float *z,
                        double *zd, int64_t *y) {
  for (size_t r = 0; r < n; r++) {
    y[r] = (int64_t)(nk_rng_u64(rng) % C);
    const size_t hot = nk_rng_uniform(rng) < acc ? (size_t)y[r] : (size_t)(nk_rng_u64(rng) % C);
    for (size_t k = 0; k < C; k++) {
      z[r * C + k] = (float)(s * ((k == hot ? 2.0 : 0.0) + 0.7 * nk_rng_normal(rng)));
      zd[r * C + k] = z[r * C + k];
    }
  }
}

NK_TEST(temperature_nll_gradient) {
  enum { N = 60, C = 7 };
  nk_rng rng = {0xA1};
  float z[N * C];
  double zd[N * C];
  int64_t y[N];
  make_logits(&rng, N, C, 3.0, 0.6, z, zd, y);
  const double Ts[6] = {0.1, 0.5, 1.0, 1.5, 3.0, 10.0};
  for (int i = 0; i < 6; i++) {
    double f, df;
    NK_REQUIRE(nk_temperature_nll(actx, N, C, z, y, Ts[i], &f, &df) == NK_OK, "nll");
    const double rf = nk_ref_temperature_nll(N, C, zd, y, Ts[i]);
    NK_CHECK(close_d(f, rf, 1e-13, 1e-15), "T %g nll %.17g vs %.17g", Ts[i], f, rf);
    const double h = 1e-6 * Ts[i];
    const double fd = (nk_ref_temperature_nll(N, C, zd, y, Ts[i] + h) -
                       nk_ref_temperature_nll(N, C, zd, y, Ts[i] - h)) /
                      (2 * h);
    NK_CHECK(close_d(df, fd, 1e-6, 1e-8), "T %g dnll/dT %.12g vs fd %.12g", Ts[i], df, fd);
  }
}

NK_TEST(temperature_fit_vs_reference) {
  enum { N = 200, C = 10 };
  nk_rng rng = {0xB1};
  static float z[N * C], p[N * C];
  static double zd[N * C];
  int64_t y[N];
  const double scales[5] = {4.0, 1.0, 0.3, 8.0, 2.0};
  for (int trial = 0; trial < 5; trial++) {
    make_logits(&rng, N, C, scales[trial], 0.7, z, zd, y);
    double T, f;
    NK_REQUIRE(nk_temperature_fit(actx, N, C, z, y, NK_TEMPERATURE_MIN_DEFAULT,
                                  NK_TEMPERATURE_MAX_DEFAULT, &T, &f) == NK_OK,
               "fit");
    const double rT = nk_ref_temperature_fit(N, C, zd, y, NK_TEMPERATURE_MIN_DEFAULT,
                                             NK_TEMPERATURE_MAX_DEFAULT);
    const double rf = nk_ref_temperature_nll(N, C, zd, y, rT);
    NK_CHECK(f <= rf + 1e-13, "trial %d: nll %.17g above the reference's %.17g", trial, f, rf);
    NK_CHECK(close_d(T, rT, 1e-6, 0), "trial %d: T %.12g vs %.12g", trial, T, rT);
    double g;
    nk_temperature_nll(actx, N, C, z, y, T, NULL, &g);
    NK_CHECK(fabs(g) < 1e-9, "trial %d: derivative %g at the optimum", trial, g);
    /* scaling preserves the argmax; ECE after scaling is not worse here (overconfident data) */
    NK_REQUIRE(nk_temperature_apply(actx, N, C, T, z, p) == NK_OK, "apply");
    for (size_t r = 0; r < N; r++) {
      double s = 0.0;
      size_t az = 0, ap = 0;
      for (size_t k = 0; k < C; k++) {
        s += p[r * C + k];
        if (z[r * C + k] > z[r * C + az]) az = k;
        if (p[r * C + k] > p[r * C + ap]) ap = k;
      }
      NK_CHECK(fabs(s - 1.0) < 1e-5 && az == ap, "row %zu", r);
    }
  }
  /* separable data: NLL keeps falling as T -> 0, the fit stops at t_min */
  float zs[4] = {5, 0, 0, 5};
  int64_t ys[2] = {0, 1};
  double T;
  NK_REQUIRE(nk_temperature_fit(actx, 2, 2, zs, ys, 0.05, 20.0, &T, NULL) == NK_OK, "separable");
  NK_CHECK(T == 1.0 / (1.0 / 0.05), "separable T %g", T);
  /* labels worse than chance: T at t_max */
  int64_t yw[2] = {1, 0};
  NK_REQUIRE(nk_temperature_fit(actx, 2, 2, zs, yw, 0.05, 20.0, &T, NULL) == NK_OK, "wrong");
  NK_CHECK(T == 20.0, "anti-separable T %g", T);
  /* one class: NLL is 0 for every T */
  float z1[3] = {1, 2, 3};
  int64_t y1[3] = {0, 0, 0};
  double f1;
  NK_REQUIRE(nk_temperature_fit(actx, 3, 1, z1, y1, 0.05, 20.0, &T, &f1) == NK_OK && f1 == 0.0,
             "one class");
}

NK_TEST(ece_vs_reference) {
  enum { N = 300, C = 5, M = NK_ECE_BINS_DEFAULT };
  nk_rng rng = {0xC1};
  static float z[N * C], p[N * C];
  static double zd[N * C], pd[N * C];
  int64_t y[N];
  make_logits(&rng, N, C, 2.0, 0.6, z, zd, y);
  NK_REQUIRE(nk_temperature_apply(actx, N, C, 1.0, z, p) == NK_OK, "softmax");
  /* edges exactly: confidence 1.0 (last bin), 0.2 (= 3/15: bin 2), ties (first index) */
  for (size_t k = 0; k < C; k++) p[k] = k == 2 ? 1.0f : 0.0f, p[C + k] = 0.2f;
  for (size_t i = 0; i < N * C; i++) pd[i] = p[i];
  for (int bins = 1; bins <= 40; bins += 13) {
    double ece, mce, rece, rmce, cnt[40], cf[40], acc[40];
    nk_ece_bin rel[40];
    NK_REQUIRE(nk_ece_top_label(actx, N, C, p, y, (size_t)bins, &ece, &mce, rel) == NK_OK, "ece");
    nk_ref_ece(N, C, pd, y, (size_t)bins, &rece, &rmce, cnt, cf, acc);
    NK_CHECK(close_d(ece, rece, 1e-13, 1e-16) && close_d(mce, rmce, 1e-13, 1e-16),
             "bins %d: ece %.17g vs %.17g, mce %.17g vs %.17g", bins, ece, rece, mce, rmce);
    for (int m = 0; m < bins; m++)
      NK_CHECK((double)rel[m].count == cnt[m] && close_d(rel[m].confidence, cf[m], 1e-13, 0) &&
                   close_d(rel[m].accuracy, acc[m], 1e-13, 0),
               "bins %d bin %d", bins, m);
  }
  /* a perfectly calibrated toy: confidence 1 and right -> 0; confidence 0.5, half right -> 0 */
  float q[8] = {1, 0, 0, 1, 0.5f, 0.5f, 0.5f, 0.5f};
  int64_t lq[4] = {0, 1, 0, 1};
  double ece, mce;
  NK_REQUIRE(nk_ece_top_label(actx, 4, 2, q, lq, 15, &ece, &mce, NULL) == NK_OK, "toy");
  NK_CHECK(ece == 0.0 && mce == 0.0, "toy ece %g mce %g", ece, mce);
  /* confidence 0 falls in no bin but counts in n */
  float q0[4] = {0, 0, 1, 0};
  int64_t l0[2] = {0, 1};
  nk_ece_bin rel[2];
  NK_REQUIRE(nk_ece_top_label(actx, 2, 2, q0, l0, 2, &ece, &mce, rel) == NK_OK, "zero conf");
  NK_CHECK(rel[0].count == 0 && rel[1].count == 1 && ece == 0.5 && mce == 1.0,
           "zero confidence: ece %g", ece);
}

NK_TEST(calibration_invalid) {
  float z[6] = {1, 2, 3, 4, 5, 6}, out[6];
  int64_t y[3] = {0, 1, 1};
  double T = 7, f = 7, ece = 7, mce = 7;
  nk_ece_bin rel[4];
  memset(out, POISON, sizeof out);
  memset(rel, POISON, sizeof rel);
#define CLEAN (all_bytes(out, sizeof out, POISON) && all_bytes(rel, sizeof rel, POISON) && \
               T == 7 && f == 7 && ece == 7 && mce == 7)
  EXPECT_INVALID(nk_temperature_nll(actx, 3, 2, z, y, 0.0, &f, NULL), CLEAN);
  EXPECT_INVALID(nk_temperature_nll(actx, 3, 2, z, y, INFINITY, &f, NULL), CLEAN);
  EXPECT_INVALID(nk_temperature_nll(actx, 0, 2, z, y, 1.0, &f, NULL), CLEAN);
  EXPECT_INVALID(nk_temperature_nll(actx, 3, 0, z, y, 1.0, &f, NULL), CLEAN);
  EXPECT_INVALID(nk_temperature_nll(actx, 3, 2, NULL, y, 1.0, &f, NULL), CLEAN);
  EXPECT_INVALID(nk_temperature_nll(actx, 3, 2, z, NULL, 1.0, &f, NULL), CLEAN);
  y[2] = 2;
  EXPECT_INVALID(nk_temperature_nll(actx, 3, 2, z, y, 1.0, &f, NULL), CLEAN);
  y[2] = -1;
  EXPECT_INVALID(nk_temperature_fit(actx, 3, 2, z, y, 0.05, 20, &T, &f), CLEAN);
  y[2] = 1;
  EXPECT_INVALID(nk_temperature_fit(actx, 3, 2, z, y, 0.0, 20, &T, &f), CLEAN);
  EXPECT_INVALID(nk_temperature_fit(actx, 3, 2, z, y, 2.0, 1.0, &T, &f), CLEAN);
  EXPECT_INVALID(nk_temperature_fit(actx, 3, 2, z, y, 0.05, INFINITY, &T, &f), CLEAN);
  EXPECT_INVALID(nk_temperature_fit(actx, 3, 2, z, y, 0.05, 20, NULL, &f), CLEAN);
  EXPECT_INVALID(nk_temperature_fit(actx, 3, 2, z, y, 0.05, 20, &T, &T), CLEAN);
  z[1] = NAN;
  EXPECT_INVALID(nk_temperature_fit(actx, 3, 2, z, y, 0.05, 20, &T, &f), CLEAN);
  z[1] = 2;
  EXPECT_INVALID(nk_temperature_apply(actx, 3, 2, -1.0, z, out), CLEAN);
  EXPECT_INVALID(nk_temperature_apply(actx, 3, 0, 1.0, z, out), CLEAN);
  EXPECT_INVALID(nk_temperature_apply(actx, 3, 2, 1.0, z, NULL), CLEAN);
  EXPECT_INVALID(nk_temperature_apply(actx, 2, 2, 1.0, out + 1, out), CLEAN);
  float pr[6] = {0.5f, 0.5f, 0.1f, 0.9f, 1, 0};
  EXPECT_INVALID(nk_ece_top_label(actx, 3, 2, pr, y, 0, &ece, &mce, rel), CLEAN);
  EXPECT_INVALID(nk_ece_top_label(actx, 3, 2, NULL, y, 4, &ece, &mce, rel), CLEAN);
  EXPECT_INVALID(nk_ece_top_label(actx, 3, 2, pr, y, 4, &ece, &ece, rel), CLEAN);
  EXPECT_INVALID(nk_ece_top_label(actx, 3, 2, pr, y, 4, &ece, &mce, (nk_ece_bin *)(void *)pr),
                 CLEAN);
  pr[3] = 1.5f;
  EXPECT_INVALID(nk_ece_top_label(actx, 3, 2, pr, y, 4, &ece, &mce, rel), CLEAN);
  pr[3] = NAN;
  EXPECT_INVALID(nk_ece_top_label(actx, 3, 2, pr, y, 4, &ece, &mce, rel), CLEAN);
  pr[3] = 0.9f;
  y[0] = 5;
  EXPECT_INVALID(nk_ece_top_label(actx, 3, 2, pr, y, 4, &ece, &mce, rel), CLEAN);
#undef CLEAN
}

/* ---- compositional data ---------------------------------------------------------------------- */

/* Positive compositions with correlated log-parts. */
static void make_compositions(nk_rng *rng, size_t n, size_t D, float *x, double *xd) {
  for (size_t r = 0; r < n; r++) {
    const double common = nk_rng_normal(rng);
    for (size_t i = 0; i < D; i++) {
      const double l = 0.3 * (double)i + 0.5 * nk_rng_normal(rng) + (i % 2 ? 0.4 : -0.3) * common;
      x[r * D + i] = (float)exp(l);
      xd[r * D + i] = x[r * D + i];
    }
  }
}

NK_TEST(clr_closure_and_transform) {
  enum { N = 20, D = 6 };
  nk_rng rng = {0xD1};
  float x[N * D], c[N * D], l[N * D], lc[N * D];
  double xd[N * D], e[D];
  make_compositions(&rng, N, D, x, xd);
  NK_REQUIRE(nk_clr_closure(actx, N, D, 100.0f, x, c) == NK_OK, "closure");
  NK_REQUIRE(nk_clr_transform(actx, N, D, x, l) == NK_OK, "clr");
  NK_REQUIRE(nk_clr_transform(actx, N, D, c, lc) == NK_OK, "clr of closure");
  for (size_t r = 0; r < N; r++) {
    nk_ref_closure(D, 100.0, xd + r * D, e);
    double sum = 0.0;
    for (size_t i = 0; i < D; i++) {
      NK_CHECK(fabs(c[r * D + i] - e[i]) <= f32_bound(e[i], 0), "closure %g vs %g",
               (double)c[r * D + i], e[i]);
      sum += c[r * D + i];
    }
    NK_CHECK(fabs(sum - 100.0) < 1e-4, "closure sum %g", sum);
    nk_ref_clr(D, xd + r * D, e);
    double s2 = 0.0;
    for (size_t i = 0; i < D; i++) {
      NK_CHECK(fabs(l[r * D + i] - e[i]) <= f32_bound(e[i], 1e-15), "clr %g vs %g",
               (double)l[r * D + i], e[i]);
      NK_CHECK(fabs(lc[r * D + i] - l[r * D + i]) <= 2e-6 * (1 + fabs(e[i])),
               "scale invariance");
      s2 += l[r * D + i];
    }
    NK_CHECK(fabs(s2) < 1e-5, "clr sum %g", s2);
  }
  /* in place */
  float y[N * D];
  memcpy(y, x, sizeof y);
  NK_REQUIRE(nk_clr_transform(actx, N, D, y, y) == NK_OK, "in place");
  NK_CHECK(memcmp(y, l, sizeof y) == 0, "in place differs");
  memcpy(y, x, sizeof y);
  NK_REQUIRE(nk_clr_closure(actx, N, D, 100.0f, y, y) == NK_OK, "closure in place");
  NK_CHECK(memcmp(y, c, sizeof y) == 0, "closure in place differs");
}

NK_TEST(clr_partial_corr_vs_reference) {
  enum { N = 80, D = 7 };
  nk_rng rng = {0xE1};
  static float x[N * D];
  static double xd[N * D];
  double rho[D * D], pv[D], rr[D * D], rpv[D];
  const size_t ws = nk_clr_partial_corr_workspace_size(D);
  void *work = nk_t_alloc(ws);
  NK_REQUIRE(work != NULL, "alloc");
  for (int trial = 0; trial < 3; trial++) {
    make_compositions(&rng, N, D, x, xd);
    NK_REQUIRE(nk_clr_partial_corr(actx, N, D, x, NK_CLR_RCOND_DEFAULT, rho, pv, work, ws) ==
                   NK_OK,
               "partial corr");
    nk_ref_clr_partial_corr(N, D, xd, rr, rpv);
    for (size_t i = 0; i < D; i++) {
      NK_CHECK(close_d(pv[i], rpv[i], 1e-9, 0), "partial var %zu %.15g vs %.15g", i, pv[i],
               rpv[i]);
      for (size_t j = 0; j < D; j++) {
        NK_CHECK(close_d(rho[i * D + j], rr[i * D + j], 0, 1e-9), "rho %zu %zu %.15g vs %.15g",
                 i, j, rho[i * D + j], rr[i * D + j]);
        NK_CHECK(fabs(rho[i * D + j]) <= 1.0 + 1e-12 && rho[i * D + j] == rho[j * D + i],
                 "range/symmetry");
      }
    }
    /* reference independence: the alr partial correlation for every admissible reference */
    for (size_t ref = 0; ref < D; ref++)
      if (ref != 1 && ref != 4) {
        const double a = nk_ref_alr_partial_corr(N, D, xd, ref, 1, 4);
        NK_CHECK(close_d(rho[1 * D + 4], a, 0, 1e-9), "alr ref %zu: %.15g vs %.15g", ref,
                 rho[1 * D + 4], a);
      }
  }
  /* closure does not change the result */
  float c[N * D];
  double rc[D * D];
  NK_REQUIRE(nk_clr_closure(actx, N, D, 1.0f, x, c) == NK_OK, "closure");
  NK_REQUIRE(nk_clr_partial_corr(actx, N, D, c, NK_CLR_RCOND_DEFAULT, rc, NULL, work, ws) ==
                 NK_OK,
             "closed");
  for (size_t i = 0; i < D * D; i++) NK_CHECK(fabs(rc[i] - rho[i]) < 1e-5, "closure changes rho");
  /* rank deficient (n <= D): still finite, within [-1, 1] */
  NK_REQUIRE(nk_clr_partial_corr(actx, 4, D, x, NK_CLR_RCOND_DEFAULT, rho, pv, work, ws) == NK_OK,
             "n <= D");
  for (size_t i = 0; i < D * D; i++)
    NK_CHECK(isnan(rho[i]) || fabs(rho[i]) <= 1.0 + 1e-9, "rank deficient rho %g", rho[i]);
  free(work);
}

NK_TEST(compositional_invalid) {
  float x[6] = {1, 2, 3, 4, 5, 6}, out[6];
  double rho[9], pv[3];
  unsigned char work[512];
  memset(out, POISON, sizeof out);
  memset(rho, POISON, sizeof rho);
  memset(pv, POISON, sizeof pv);
#define CLEAN (all_bytes(out, sizeof out, POISON) && all_bytes(rho, sizeof rho, POISON) && \
               all_bytes(pv, sizeof pv, POISON))
  EXPECT_INVALID(nk_clr_closure(actx, 2, 3, 0.0f, x, out), CLEAN);
  EXPECT_INVALID(nk_clr_closure(actx, 2, 3, NAN, x, out), CLEAN);
  EXPECT_INVALID(nk_clr_closure(actx, 2, 0, 1.0f, x, out), CLEAN);
  EXPECT_INVALID(nk_clr_closure(actx, 2, 3, 1.0f, NULL, out), CLEAN);
  EXPECT_INVALID(nk_clr_closure(actx, 2, 3, 1.0f, x, NULL), CLEAN);
  EXPECT_INVALID(nk_clr_closure(actx, 1, 3, 1.0f, out + 1, out), CLEAN);
  x[4] = 0.0f;
  EXPECT_INVALID(nk_clr_closure(actx, 2, 3, 1.0f, x, out), CLEAN);
  EXPECT_INVALID(nk_clr_transform(actx, 2, 3, x, out), CLEAN);
  x[4] = NAN;
  EXPECT_INVALID(nk_clr_transform(actx, 2, 3, x, out), CLEAN);
  x[4] = -1.0f;
  EXPECT_INVALID(nk_clr_partial_corr(actx, 2, 3, x, 1e-10, rho, pv, work, sizeof work), CLEAN);
  x[4] = 5.0f;
  EXPECT_INVALID(nk_clr_transform(actx, 2, 3, x, NULL), CLEAN);
  nk_status st;
  EXPECT_INVALID(nk_clr_partial_corr(actx, 1, 3, x, 1e-10, rho, pv, work, sizeof work), CLEAN);
  EXPECT_INVALID(nk_clr_partial_corr(actx, 2, 1, x, 1e-10, rho, pv, work, sizeof work), CLEAN);
  EXPECT_INVALID(nk_clr_partial_corr(actx, 2, 3, x, 0.0, rho, pv, work, sizeof work), CLEAN);
  EXPECT_INVALID(nk_clr_partial_corr(actx, 2, 3, x, NAN, rho, pv, work, sizeof work), CLEAN);
  EXPECT_INVALID(nk_clr_partial_corr(actx, 2, 3, x, 1e-10, NULL, pv, work, sizeof work), CLEAN);
  st = nk_clr_partial_corr(actx, 2, 3, x, 1e-10, rho, pv, NULL, sizeof work);
  NK_CHECK(st == NK_STATUS_MISUSE && CLEAN, "NULL workspace: %s", nk_status_string(st));
  EXPECT_INVALID(nk_clr_partial_corr(actx, 2, 3, x, 1e-10, rho, rho + 1, work, sizeof work),
                 all_bytes(out, sizeof out, POISON));
  st = nk_clr_partial_corr(actx, 2, 3, x, 1e-10, rho, pv, work, 8);
  NK_CHECK(st == NK_STATUS_MISUSE && CLEAN, "small workspace: %s", nk_status_string(st));
#undef CLEAN
}

/* ---- candidate prior normalization --------------------------------------------------------- */

NK_TEST(cpn_vs_reference) {
  enum { N = 16, T = 9 };
  nk_rng rng = {0xF1};
  float lc[N * T], lp[N * T];
  double lcd[N * T], lpd[N * T], mc[N], mp[N], sc[N];
  unsigned char vc[N * T], vp[N * T];
  for (size_t i = 0; i < N * T; i++) {
    lc[i] = (float)log(nk_rng_uniform(&rng)), lp[i] = (float)(2.0 * log(nk_rng_uniform(&rng)));
    lcd[i] = lc[i], lpd[i] = lp[i];
    vc[i] = (unsigned char)(i % T < 7), vp[i] = (unsigned char)(nk_rng_uniform(&rng) < 0.8);
  }
  vp[0] = 1;
  const double alphas[5] = {0.0, 0.2, 0.8, 0.9, 1.0};
  NK_REQUIRE(nk_cpn_mean_loglik(actx, N, T, lc, vc, mc) == NK_OK, "cond");
  NK_REQUIRE(nk_cpn_mean_loglik(actx, N, T, lp, vp, mp) == NK_OK, "prior");
  for (int a = 0; a < 5; a++) {
    NK_REQUIRE(nk_cpn_score(actx, N, mc, mp, alphas[a], sc) == NK_OK, "score");
    for (size_t r = 0; r < N; r++) {
      const double e = nk_ref_cpn(T, lcd + r * T, vc + r * T, lpd + r * T, vp + r * T, alphas[a]);
      NK_CHECK(close_d(sc[r], e, 1e-14, 1e-15), "alpha %g row %zu %.17g vs %.17g", alphas[a], r,
               sc[r], e);
    }
  }
  /* no mask: plain mean; no valid token: NaN; in place */
  double m;
  NK_REQUIRE(nk_cpn_mean_loglik(actx, 1, T, lc, NULL, &m) == NK_OK, "no mask");
  double e = 0.0;
  for (size_t t = 0; t < T; t++) e += lcd[t];
  NK_CHECK(close_d(m, e / T, 1e-15, 0), "plain mean");
  unsigned char none[T] = {0};
  NK_REQUIRE(nk_cpn_mean_loglik(actx, 1, T, lc, none, &m) == NK_OK && isnan(m), "empty row");
  double c2[2] = {-1.0, -2.0}, p2[2] = {-3.0, -0.5};
  NK_REQUIRE(nk_cpn_score(actx, 2, c2, p2, 1.0, c2) == NK_OK, "in place");
  NK_CHECK(c2[0] == 2.0 && c2[1] == -1.5, "in place values");
}

NK_TEST(cpn_invalid) {
  float lp[6] = {-1, -2, -3, -4, -5, -6};
  double c[3] = {1, 2, 3}, p[3] = {1, 1, 1}, out[3];
  memset(out, POISON, sizeof out);
#define CLEAN all_bytes(out, sizeof out, POISON)
  EXPECT_INVALID(nk_cpn_mean_loglik(actx, 2, 0, lp, NULL, out), CLEAN);
  EXPECT_INVALID(nk_cpn_mean_loglik(actx, 2, 3, NULL, NULL, out), CLEAN);
  EXPECT_INVALID(nk_cpn_mean_loglik(actx, 2, 3, lp, NULL, NULL), CLEAN);
  EXPECT_INVALID(nk_cpn_mean_loglik(actx, SIZE_MAX, 3, lp, NULL, out), CLEAN);
  EXPECT_INVALID(nk_cpn_mean_loglik(actx, 1, 3, (float *)(void *)out, NULL, out), CLEAN);
  EXPECT_INVALID(nk_cpn_score(actx, 3, c, p, NAN, out), CLEAN);
  EXPECT_INVALID(nk_cpn_score(actx, 3, c, p, INFINITY, out), CLEAN);
  EXPECT_INVALID(nk_cpn_score(actx, 3, NULL, p, 0.5, out), CLEAN);
  EXPECT_INVALID(nk_cpn_score(actx, 3, c, NULL, 0.5, out), CLEAN);
  EXPECT_INVALID(nk_cpn_score(actx, 3, c, p, 0.5, NULL), CLEAN);
  EXPECT_INVALID(nk_cpn_score(actx, 2, out + 1, p, 0.5, out), CLEAN);
  EXPECT_INVALID(nk_cpn_score(actx, SIZE_MAX, c, p, 0.5, out), CLEAN);
#undef CLEAN
}

int main(void) {
  if (nk_context_create(&actx) != NK_OK) return 1;
  NK_RUN(running_norm_sequence);
  NK_RUN(running_norm_merge_workers);
  NK_RUN(running_norm_reward_sequence);
  NK_RUN(running_norm_degenerate);
  NK_RUN(running_norm_invalid);
  NK_RUN(grpo_random_groups);
  NK_RUN(grpo_degenerate);
  NK_RUN(bnpo_random_batches);
  NK_RUN(bnpo_special_cases);
  NK_RUN(advantages_invalid);
  NK_RUN(hlgauss_targets_vs_reference);
  NK_RUN(two_hot_vs_reference);
  NK_RUN(hlgauss_decode_and_xent);
  NK_RUN(value_encodings_invalid);
  NK_RUN(lsc_transform_and_combine);
  NK_RUN(lsc_reference_quantile);
  NK_RUN(lsc_invalid);
  NK_RUN(temperature_nll_gradient);
  NK_RUN(temperature_fit_vs_reference);
  NK_RUN(ece_vs_reference);
  NK_RUN(calibration_invalid);
  NK_RUN(clr_closure_and_transform);
  NK_RUN(clr_partial_corr_vs_reference);
  NK_RUN(compositional_invalid);
  NK_RUN(cpn_vs_reference);
  NK_RUN(cpn_invalid);
  nk_context_destroy(actx);
  return nk_test_summary();
}
