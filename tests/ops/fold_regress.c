/*
 * tests/ops/fold_regress.c — argument checks of nk_batchnorm_fold / nk_batchnorm_fold_linear
 * (normkit.h: "Aliasing" in their comment). Before these checks the folds accepted partially
 * overlapping outputs (scale one element into gamma: channel c's scale overwrote gamma[c + 1]
 * before it was read), misaligned pointers and channels x k whose byte size overflows (they then
 * read and wrote far outside the buffers). Each bad call must return INVALID_ARGUMENT and write
 * nothing; the documented exact aliasing (scale = gamma, shift = beta, bias_out = bias or beta)
 * must give the same bits as the out-of-place call.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "test.h"
#include "util.h"

#define C 6
#define K 5

/* one pool for everything, so that overlaps and misalignments stay inside it */
static float pool[8 * 64];
static float *rm = pool, *rv = pool + 64, *g = pool + 128, *b = pool + 192, *w = pool + 256,
             *bias = pool + 320, *o1 = pool + 384, *o2 = pool + 448;
static float snap[8 * 64];

static void reset(void) {
  for (int c = 0; c < 64; c++) {
    rm[c] = 0.25f * (float)(c % 5) - 0.5f, rv[c] = 0.5f + 0.125f * (float)(c % 3);
    g[c] = 1.0f + 0.0625f * (float)(c % 7), b[c] = 0.125f * (float)(c % 4) - 0.2f;
    bias[c] = 0.3f - 0.0625f * (float)(c % 6);
    o1[c] = o2[c] = NAN;
  }
  for (int i = 0; i < 64; i++) w[i] = 0.5f - 0.03125f * (float)(i % 11);
  memcpy(snap, pool, sizeof pool);
}
static int untouched(void) { return memcmp(snap, pool, sizeof pool) == 0; }

#define BAD(call, what)                                                                          \
  do {                                                                                           \
    reset();                                                                                     \
    NK_CHECK((call) == NK_STATUS_INVALID_ARGUMENT, "%s: not INVALID_ARGUMENT", what);            \
    NK_CHECK(untouched(), "%s: something was written", what);                                    \
  } while (0)

static const float *mis(const float *p) { return (const float *)((const char *)p + 2); }
static float *misw(float *p) { return (float *)((char *)p + 1); }

NK_TEST(fold_overlaps_misalignment_overflow) {
  BAD(nk_batchnorm_fold(C, 1e-3f, rm, rv, g, b, g + 1, o2), "scale one element into gamma");
  BAD(nk_batchnorm_fold(C, 1e-3f, rm, rv, g, b, o1, o1 + 3), "scale overlaps shift");
  BAD(nk_batchnorm_fold(C, 1e-3f, rm, rv, g, b, o1, o1), "scale == shift");
  BAD(nk_batchnorm_fold(C, 1e-3f, rm, rv, g, b, o1, rv - 2), "shift partially over running_var");
  BAD(nk_batchnorm_fold(C, 1e-3f, mis(rm), rv, g, b, o1, o2), "misaligned running_mean");
  BAD(nk_batchnorm_fold(C, 1e-3f, rm, rv, g, mis(b), o1, o2), "misaligned beta");
  BAD(nk_batchnorm_fold(C, 1e-3f, rm, rv, g, b, misw(o1), o2), "misaligned scale");
  BAD(nk_batchnorm_fold(SIZE_MAX / 2, 1e-3f, rm, rv, g, b, o1, o2), "channels bytes overflow");
  BAD(nk_batchnorm_fold((size_t)PTRDIFF_MAX / 2, 1e-3f, rm, rv, g, b, o1, o2),
      "channels beyond the address space");
}

NK_TEST(fold_linear_overlaps_misalignment_overflow) {
  BAD(nk_batchnorm_fold_linear(C, K, 1e-3f, rm, rv, g, b, w, bias, w + 3), "bias_out in weight");
  BAD(nk_batchnorm_fold_linear(C, K, 1e-3f, rm, rv, g, b, w, bias, bias + 1), "bias_out = bias + 1");
  BAD(nk_batchnorm_fold_linear(C, K, 1e-3f, w + 2, rv, g, b, w, bias, o1), "weight over running_mean");
  BAD(nk_batchnorm_fold_linear(C, K, 1e-3f, rm, rv, g, b, bias, bias, o1), "weight over bias");
  BAD(nk_batchnorm_fold_linear(C, 1, 1e-3f, rm, rv, g, b, o1, bias, o1), "weight == bias_out");
  BAD(nk_batchnorm_fold_linear(C, 1, 1e-3f, rm, rv, g, b, g, bias, o1), "weight == gamma (k 1)");
  BAD(nk_batchnorm_fold_linear(C, K, 1e-3f, rm, mis(rv), g, b, w, bias, o1), "misaligned running_var");
  BAD(nk_batchnorm_fold_linear(C, K, 1e-3f, rm, rv, g, b, misw(w), bias, o1), "misaligned weight");
  BAD(nk_batchnorm_fold_linear(C, K, 1e-3f, rm, rv, g, b, w, mis(bias), o1), "misaligned bias");
  BAD(nk_batchnorm_fold_linear(C, K, 1e-3f, rm, rv, g, b, w, bias, misw(o1)), "misaligned bias_out");
  /* channels x k fits size_t, its bytes do not: the old code started writing weight */
  BAD(nk_batchnorm_fold_linear((size_t)1 << 31, (size_t)1 << 31, 1e-3f, rm, rv, g, b, w, bias, o1),
      "weight bytes overflow");
  BAD(nk_batchnorm_fold_linear(3, SIZE_MAX / 2, 1e-3f, rm, rv, g, b, w, bias, o1),
      "channels x k overflows");
}

NK_TEST(fold_exact_aliasing_is_in_place) {
  float s0[C], h0[C], w0[64], bo0[C];
  reset();
  NK_REQUIRE(nk_batchnorm_fold(C, 1e-3f, rm, rv, g, b, s0, h0) == NK_OK, "fold");
  NK_CHECK(nk_batchnorm_fold(C, 1e-3f, rm, rv, g, b, g, b) == NK_OK &&
               memcmp(g, s0, sizeof s0) == 0 && memcmp(b, h0, sizeof h0) == 0,
           "scale = gamma, shift = beta");
  reset();
  NK_CHECK(nk_batchnorm_fold(C, 1e-3f, rm, rv, g, b, rv, rm) == NK_OK &&
               memcmp(rv, s0, sizeof s0) == 0 && memcmp(rm, h0, sizeof h0) == 0,
           "scale = running_var, shift = running_mean");
  reset();
  NK_REQUIRE(nk_batchnorm_fold_linear(C, K, 1e-3f, rm, rv, g, b, w, bias, bo0) == NK_OK, "fold_linear");
  memcpy(w0, w, sizeof w0);
  reset();
  NK_CHECK(nk_batchnorm_fold_linear(C, K, 1e-3f, rm, rv, g, b, w, bias, bias) == NK_OK &&
               memcmp(bias, bo0, sizeof bo0) == 0 && memcmp(w, w0, sizeof w0) == 0,
           "bias_out = bias");
  reset();
  NK_CHECK(nk_batchnorm_fold_linear(C, K, 1e-3f, rm, rv, g, b, w, bias, b) == NK_OK &&
               memcmp(b, bo0, sizeof bo0) == 0,
           "bias_out = beta");
  reset();
  NK_CHECK(nk_batchnorm_fold_linear(C, 0, 1e-3f, rm, rv, g, b, NULL, bias, o1) == NK_OK &&
               memcmp(o1, bo0, sizeof bo0) == 0,
           "k = 0 still writes bias_out");
  /* inputs may overlap each other (read only) */
  reset();
  NK_CHECK(nk_batchnorm_fold(C, 1e-3f, g, g + 1, g, g, o1, o2) == NK_OK, "inputs overlapping");
}

int main(void) {
  NK_RUN(fold_overlaps_misalignment_overflow);
  NK_RUN(fold_linear_overlaps_misalignment_overflow);
  NK_RUN(fold_exact_aliasing_is_in_place);
  return nk_test_summary();
}
