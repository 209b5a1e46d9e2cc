/*
 * tests/ops/pcb_merge.c — PCB-Merging (include/normkit.h "Calibration and model merging")
 * against the float64 reference of src/reference/merge.c (the official PCB_merge written
 * literally with full sorts), hand-derived cases (one task, a zero task vector, ties at the drop
 * threshold, constant rows), and invalid arguments (status, message, merged untouched).
 *
 * Tolerance: the library computes in double and rounds merged to f32 once; the reference is
 * double with the same formula (selection and sorting give the same order statistics), so the
 * bound is 1 ulp of f32 at |ref| plus 1e-12 of the data's scale.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

static nk_context *actx;

#define POISON 0x5A

static int all_bytes(const void *p, size_t n, unsigned char v) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != v) return 0;
  return 1;
}

/* Runs the library merge with its own workspace. */
static nk_status run_merge(const nk_pcb_merge_desc *d, const float *tv, const double *lam,
                           const float *theta0, float *out) {
  size_t bytes = 0;
  nk_status st = nk_pcb_merge_workspace_size(actx, d, &bytes);
  if (st != NK_OK) return st;
  void *ws = nk_t_alloc(bytes);
  if (!ws) return NK_STATUS_OUT_OF_MEMORY;
  st = nk_pcb_merge(actx, d, tv, lam, theta0, out, ws, bytes);
  free(ws);
  return st;
}

/* Largest |got - ref| / (ulp_f32(ref) + 1e-12 scale); <= 1 passes, NaN fails. */
static double worst(size_t n, const float *got, const double *ref, double scale) {
  double w = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double b = nk_t_ulp(ref[i], NK_DTYPE_F32) + 1e-12 * scale;
    const double e = fabs((double)got[i] - ref[i]) / b;
    if (!(e <= w)) w = e;
  }
  return w;
}

static void compare_random(size_t n, size_t d, double r, double a, int with_extras,
                           uint64_t seed) {
  nk_rng rng = {seed};
  float *tv = malloc(n * d * sizeof(float)), *th = malloc(d * sizeof(float));
  float *out = malloc(d * sizeof(float));
  double *tvd = malloc(n * d * sizeof(double)), *thd = malloc(d * sizeof(double));
  double *ref = malloc(d * sizeof(double)), lam[64];
  for (size_t i = 0; i < n * d; i++) {
    /* heavy-ish tails so the clipping bites; some exact zeros and shared signs */
    double v = 0.01 * nk_rng_normal(&rng);
    if (i % 97 == 0) v *= 50.0;
    if (i % 31 == 0) v = 0.0;
    tv[i] = (float)v;
    tvd[i] = (double)tv[i];
  }
  for (size_t j = 0; j < d; j++) {
    th[j] = (float)nk_rng_normal(&rng);
    thd[j] = th[j];
  }
  for (size_t i = 0; i < n && i < 64; i++) lam[i] = 0.8 + 0.5 * nk_rng_uniform(&rng);
  nk_pcb_merge_desc desc = nk_pcb_merge_desc_default(n, d);
  desc.keep_ratio = r;
  desc.clip_ratio = a;
  if (with_extras) desc.scale = 1.2;
  NK_REQUIRE(run_merge(&desc, tv, with_extras ? lam : NULL, with_extras ? th : NULL, out) ==
                 NK_OK,
             "merge n %zu d %zu: %s", n, d, nk_context_message(actx));
  NK_REQUIRE(nk_ref_pcb_merge(n, d, tvd, r, a, with_extras ? lam : NULL, desc.scale,
                              with_extras ? thd : NULL, ref) == 0,
             "reference indices");
  double scale = 0.0;
  size_t nonzero = 0;
  for (size_t j = 0; j < d; j++) {
    scale = fmax(scale, fabs(ref[j]));
    nonzero += ref[j] != (with_extras ? thd[j] : 0.0);
  }
  const double w = worst(d, out, ref, scale);
  NK_CHECK(w <= 1.0, "n %zu d %zu r %g a %g extras %d: worst %.3g", n, d, r, a, with_extras, w);
  NK_CHECK(nonzero > 0, "n %zu d %zu: the merge kept nothing (test too weak)", n, d);
  free(tv);
  free(th);
  free(out);
  free(tvd);
  free(thd);
  free(ref);
}

NK_TEST(random_vs_reference) {
  compare_random(3, 1000, 0.1, 1e-4, 0, 1);
  compare_random(3, 1000, 0.1, 0.01, 1, 2);
  compare_random(2, 257, 0.05, 0.01, 0, 3);
  compare_random(5, 4096, 0.2, 1e-4, 1, 4);
  compare_random(1, 100, 0.3, 0.0, 0, 5);
  compare_random(50, 300, 0.1, 0.01, 1, 6); /* exp(n) = e^50 in the scores */
  compare_random(4, 7, 1.0, 0.0, 0, 7);     /* keep everything: threshold = minimum */
}

/* One task, no clipping: X = tanh(tau^2) and S grow with |tau|, so the kept entries are the
 * ones with |tau| above the kt-th smallest |tau|, each merged to itself (W tau / W). */
NK_TEST(one_task_keeps_top_magnitudes) {
  enum { D = 10 };
  const float tv[D] = {0.5f, -3.0f, 0.25f, 2.0f, -0.125f, 1.5f, -0.75f, 4.0f, 0.0f, -1.0f};
  nk_pcb_merge_desc desc = nk_pcb_merge_desc_default(1, D);
  desc.clip_ratio = 0.0;
  desc.keep_ratio = 0.3; /* kt = int(10 * 0.7) = 7: threshold |tau| = 2 (8th smallest) */
  float out[D];
  NK_REQUIRE(run_merge(&desc, tv, NULL, NULL, out) == NK_OK, "%s", nk_context_message(actx));
  for (int j = 0; j < D; j++) {
    const float want = fabsf(tv[j]) > 2.0f ? tv[j] : 0.0f;
    NK_CHECK(out[j] == want, "j %d: %g, want %g", j, (double)out[j], (double)want);
  }
  /* With scale and theta0: theta0 + scale * that. */
  const float th[D] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  desc.scale = 0.5;
  NK_REQUIRE(run_merge(&desc, tv, NULL, th, out) == NK_OK, "%s", nk_context_message(actx));
  for (int j = 0; j < D; j++) {
    const float want = th[j] + (fabsf(tv[j]) > 2.0f ? 0.5f * tv[j] : 0.0f);
    NK_CHECK(out[j] == want, "j %d: %g, want %g", j, (double)out[j], (double)want);
  }
}

/* Hand-derived two-task case: sum = (2, 0, 0, 0), so X_i = (tanh 2, 0, 0, 0) for both tasks;
 * r = 0.5 -> kt = 2, the threshold is P_(2) = 0 and only entry 0 is kept, with W = 1 for both:
 * merged = (1 + 1) / 2 = 1 there, 0 elsewhere. */
NK_TEST(two_tasks_by_hand) {
  const float tv[8] = {1.0f, 2.0f, 0.0f, -1.0f, 1.0f, -2.0f, 0.0f, 1.0f};
  nk_pcb_merge_desc desc = nk_pcb_merge_desc_default(2, 4);
  desc.clip_ratio = 0.0;
  desc.keep_ratio = 0.5;
  float out[4];
  NK_REQUIRE(run_merge(&desc, tv, NULL, NULL, out) == NK_OK, "%s", nk_context_message(actx));
  NK_CHECK(out[0] == 1.0f && out[1] == 0.0f && out[2] == 0.0f && out[3] == 0.0f,
           "got %g %g %g %g", (double)out[0], (double)out[1], (double)out[2], (double)out[3]);
  /* Per-task lambdas (the vision script): (0.5 * 1 + 1.5 * 1) / 2 = 1 too; (0.5, 0.5) gives
   * 0.5. */
  const double lam[2] = {0.5, 0.5};
  NK_REQUIRE(run_merge(&desc, tv, lam, NULL, out) == NK_OK, "%s", nk_context_message(actx));
  NK_CHECK(out[0] == 0.5f && out[1] == 0.0f, "lambdas: got %g %g", (double)out[0],
           (double)out[1]);
}

/* A zero task vector has a constant magnitude row (Norm guard: 0), X = tanh(0) = 0 and a
 * constant P, so W = 0: the merge equals the other task's one-task merge. All tasks zero: 0. */
NK_TEST(zero_task_vectors) {
  enum { D = 64 };
  nk_rng rng = {11};
  float tv[2 * D], one[D], two[D];
  for (int j = 0; j < D; j++) tv[j] = (float)nk_rng_normal(&rng);
  memset(tv + D, 0, sizeof(float) * D);
  nk_pcb_merge_desc d1 = nk_pcb_merge_desc_default(1, D), d2 = nk_pcb_merge_desc_default(2, D);
  d1.keep_ratio = d2.keep_ratio = 0.25;
  d1.clip_ratio = d2.clip_ratio = 0.05;
  NK_REQUIRE(run_merge(&d1, tv, NULL, NULL, one) == NK_OK, "one");
  NK_REQUIRE(run_merge(&d2, tv, NULL, NULL, two) == NK_OK, "two");
  size_t kept = 0;
  for (int j = 0; j < D; j++) {
    NK_CHECK(one[j] == two[j], "j %d: %g vs %g", j, (double)one[j], (double)two[j]);
    kept += one[j] != 0.0f;
  }
  /* kt = int(64 * 0.75) = 48: at most 15 kept, and with distinct magnitudes exactly 15. */
  NK_CHECK(kept == 15, "kept %zu", kept);
  float zeros[2 * D] = {0}, th[D], out[D];
  for (int j = 0; j < D; j++) th[j] = (float)j;
  NK_REQUIRE(run_merge(&d2, zeros, NULL, th, out) == NK_OK, "zeros");
  for (int j = 0; j < D; j++) NK_CHECK(out[j] == th[j], "j %d: %g", j, (double)out[j]);
}

/* Ties at the threshold: every entry equal to the threshold value gets W = 0, whatever its
 * position, so fewer than d - kt - 1 entries may be kept; a permutation of the task vector
 * permutes the result. */
NK_TEST(ties_at_threshold) {
  enum { D = 6 };
  const float tv[D] = {1.0f, -1.0f, 1.0f, 3.0f, -1.0f, 2.0f};
  const int perm[D] = {3, 0, 5, 1, 4, 2};
  nk_pcb_merge_desc desc = nk_pcb_merge_desc_default(1, D);
  desc.clip_ratio = 0.0;
  desc.keep_ratio = 0.5; /* kt = 3: P_(3) is the score of |tau| = 1 (four ties) */
  float out[D], tp[D], outp[D];
  NK_REQUIRE(run_merge(&desc, tv, NULL, NULL, out) == NK_OK, "%s", nk_context_message(actx));
  const float want[D] = {0, 0, 0, 3.0f, 0, 2.0f};
  for (int j = 0; j < D; j++)
    NK_CHECK(out[j] == want[j], "j %d: %g, want %g", j, (double)out[j], (double)want[j]);
  for (int j = 0; j < D; j++) tp[j] = tv[perm[j]];
  NK_REQUIRE(run_merge(&desc, tp, NULL, NULL, outp) == NK_OK, "perm");
  for (int j = 0; j < D; j++) NK_CHECK(outp[j] == out[perm[j]], "perm j %d", j);
  /* kt = 1 (r = 0.75: int(6 * 0.25) = 1): the threshold is again |tau| = 1: same result. */
  desc.keep_ratio = 0.75;
  NK_REQUIRE(run_merge(&desc, tv, NULL, NULL, out) == NK_OK, "r 0.75");
  for (int j = 0; j < D; j++) NK_CHECK(out[j] == want[j], "r 0.75 j %d", j);
  /* A constant score row (equal magnitudes; signs do not matter for tanh(tau^2)): W = 0. */
  const float flat[4] = {2.0f, -2.0f, 2.0f, -2.0f};
  desc = nk_pcb_merge_desc_default(1, 4);
  desc.keep_ratio = 1.0;
  NK_REQUIRE(run_merge(&desc, flat, NULL, NULL, out) == NK_OK, "flat");
  for (int j = 0; j < 4; j++) NK_CHECK(out[j] == 0.0f, "flat j %d: %g", j, (double)out[j]);
}

/* Magnitude clipping: a = 0.1 on d = 10 gives lo = 1, hi = int(10 * 0.9 - 1) = 8: the largest
 * |tau| is clipped to the second largest and the smallest raised to the second smallest. */
NK_TEST(clipping_bounds) {
  enum { D = 10 };
  const float tv[D] = {10.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f, 0.5f};
  nk_pcb_merge_desc desc = nk_pcb_merge_desc_default(1, D);
  desc.clip_ratio = 0.1;
  desc.keep_ratio = 0.3; /* kt = 7: threshold = P of |tau| 7 -> kept: 8 and 10 (clipped to 8) */
  float out[D];
  NK_REQUIRE(run_merge(&desc, tv, NULL, NULL, out) == NK_OK, "%s", nk_context_message(actx));
  for (int j = 0; j < D; j++) {
    const float want = j == 0 ? 8.0f : j == 8 ? 8.0f : 0.0f;
    NK_CHECK(out[j] == want, "j %d: %g, want %g", j, (double)out[j], (double)want);
  }
}

NK_TEST(invalid_arguments) {
  enum { D = 8 };
  float tv[2 * D], out[D];
  double ws[3 * D + 4 + NK_WORKSPACE_ALIGN / sizeof(double)];
  for (int i = 0; i < 2 * D; i++) tv[i] = (float)(i - 5);
  nk_pcb_merge_desc good = nk_pcb_merge_desc_default(2, D), d;
  size_t bytes = 0;
  NK_REQUIRE(nk_pcb_merge_workspace_size(actx, &good, &bytes) == NK_OK, "size");
  NK_CHECK(bytes == sizeof ws, "workspace %zu, want %zu", bytes, sizeof ws);
#define BAD(desc_expr, call)                                                                     \
  do {                                                                                           \
    memset(out, POISON, sizeof out);                                                             \
    d = good;                                                                                    \
    desc_expr;                                                                                   \
    const nk_status st_ = (call);                                                                \
    NK_CHECK(st_ == NK_STATUS_INVALID_ARGUMENT, "%s / %s: got %s", #desc_expr, #call,           \
             nk_status_string(st_));                                                             \
    NK_CHECK(nk_context_message(actx)[0] != '\0', "%s: no message", #desc_expr);                \
    NK_CHECK(all_bytes(out, sizeof out, POISON), "%s: wrote merged", #desc_expr);               \
  } while (0)
#define CALL nk_pcb_merge(actx, &d, tv, NULL, NULL, out, ws, sizeof ws)
  BAD(d.tasks = 0, CALL);
  BAD(d.tasks = NK_PCB_MAX_TASKS + 1, CALL);
  BAD(d.keep_ratio = 0.0, CALL);
  BAD(d.keep_ratio = 1.5, CALL);
  BAD(d.keep_ratio = NAN, CALL);
  BAD(d.keep_ratio = 1e-20, CALL); /* 1 - r == 1: threshold index d */
  BAD(d.clip_ratio = 0.5, CALL);
  BAD(d.clip_ratio = -0.1, CALL);
  BAD((d.params = 3, d.clip_ratio = 0.49), CALL); /* lo = int(1.47) = 1 > hi = int(0.53) = 0 */
  BAD(d.scale = INFINITY, CALL);
  BAD((void)0, nk_pcb_merge(actx, NULL, tv, NULL, NULL, out, ws, sizeof ws));
  BAD((void)0, nk_pcb_merge(actx, &d, NULL, NULL, NULL, out, ws, sizeof ws));
  /* workspace NULL or short: MISUSE (as every workspace); any address works */
  NK_CHECK(nk_pcb_merge(actx, &d, tv, NULL, NULL, out, NULL, sizeof ws) == NK_STATUS_MISUSE &&
               nk_pcb_merge(actx, &d, tv, NULL, NULL, out, ws, sizeof ws - 1) == NK_STATUS_MISUSE,
           "short workspace");
  {
    float out0[D];
    static unsigned char raw[sizeof ws + NK_WORKSPACE_ALIGN];
    NK_CHECK(nk_pcb_merge(actx, &d, tv, NULL, NULL, out0, ws, sizeof ws) == NK_OK, "aligned");
    for (size_t off = 1; off < NK_WORKSPACE_ALIGN; off += 3) {
      NK_CHECK(nk_pcb_merge(actx, &d, tv, NULL, NULL, out, raw + off, sizeof ws) == NK_OK &&
                   memcmp(out, out0, sizeof out) == 0,
               "workspace at offset %zu", off);
    }
  }
  BAD((void)0, nk_pcb_merge(actx, &d, tv, NULL, NULL, (float *)ws, ws, sizeof ws));
  BAD((void)0, nk_pcb_merge(actx, &d, tv, NULL, tv, (float *)tv + 4, ws, sizeof ws));
  const double badlam[2] = {1.0, NAN};
  BAD((void)0, nk_pcb_merge(actx, &d, tv, badlam, NULL, out, ws, sizeof ws));
  tv[5] = NAN;
  BAD((void)0, CALL);
  tv[5] = INFINITY;
  BAD((void)0, CALL);
  tv[5] = 0.0f;
#undef CALL
#undef BAD
  NK_CHECK(nk_pcb_merge_workspace_size(actx, NULL, &bytes) == NK_STATUS_INVALID_ARGUMENT, "null");
  d = good;
  d.params = SIZE_MAX / 2;
  NK_CHECK(nk_pcb_merge_workspace_size(actx, &d, &bytes) == NK_STATUS_INVALID_ARGUMENT,
           "overflow");
  /* params == 0: OK, nothing touched (NULL pointers allowed). */
  d = good;
  d.params = 0;
  NK_CHECK(nk_pcb_merge(actx, &d, NULL, NULL, NULL, NULL, NULL, 0) == NK_OK, "d = 0");
  /* The good call works with the same buffers. */
  NK_CHECK(nk_pcb_merge(actx, &good, tv, NULL, NULL, out, ws, sizeof ws) == NK_OK, "good: %s",
           nk_context_message(actx));
}

int main(void) {
  if (nk_context_create(&actx) != NK_OK) return 1;
  NK_RUN(random_vs_reference);
  NK_RUN(one_task_keeps_top_magnitudes);
  NK_RUN(two_tasks_by_hand);
  NK_RUN(zero_task_vectors);
  NK_RUN(ties_at_threshold);
  NK_RUN(clipping_bounds);
  NK_RUN(invalid_arguments);
  nk_context_destroy(actx);
  return nk_test_summary();
}
