/*
 * tests/ops/pow2quant.c — normkit's power-of-two group quantization (nk_pow2quant_*): exact
 * against the float64 formula, the no-clipping and half-resolution properties, stochastic
 * rounding (deterministic, within one step, unbiased), the dequantize round trip, bitwise
 * equality across ISAs and thread counts, edge values and bad arguments.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

static const nk_dtype dtypes[] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};
static const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};

/* rows x cols with a different magnitude per group (2^k, k in [-20, 20]; f16 in [-6, 6]) */
static void *make_x(nk_rng *g, size_t rows, size_t cols, size_t G, nk_dtype dt) {
  void *x = nk_t_alloc(rows * cols * nk_dtype_size(dt));
  const int span = dt == NK_DTYPE_F16 ? 6 : 20;
  for (size_t i = 0; i < rows; i++)
    for (size_t g0 = 0; g0 < cols; g0 += G) {
      const double s = ldexp(1.0, (int)(nk_rng_u64(g) % (2 * span + 1)) - span);
      for (size_t j = g0; j < cols && j < g0 + G; j++) nk_t_set(x, i * cols + j, s * nk_rng_normal(g), dt);
    }
  return x;
}

NK_TEST(exact_against_formula) {
  nk_rng g = {0x2222u};
  const size_t groups[] = {1, 3, 8, 16, 32, 33, 64, 128};
  for (size_t di = 0; di < 3; di++)
    for (size_t gi = 0; gi < 8; gi++)
      for (unsigned bits = 2; bits <= 8; bits++) {
        const size_t rows = 3, cols = 200, G = groups[gi], ng = (cols + G - 1) / G;
        void *x = make_x(&g, rows, cols, G, dtypes[di]);
        nk_pow2quant_desc d = nk_pow2quant_desc_dense(rows, cols, dtypes[di]);
        d.group = G;
        d.bits = bits;
        d.exp_stride = (ptrdiff_t)ng;
        int8_t q[600], e[600];
        NK_REQUIRE(nk_pow2quant_quantize(NULL, &d, x, q, e) == 0, "status");
        const int Q = (1 << (bits - 1)) - 1;
        double xr[200], qr[200];
        int er[200], bad = 0;
        for (size_t i = 0; i < rows; i++) {
          for (size_t j = 0; j < cols; j++) xr[j] = nk_t_get(x, i * cols + j, dtypes[di]);
          nk_ref_pow2_quantize(cols, xr, G, Q, qr, er);
          for (size_t k = 0; k < ng; k++) bad += e[i * ng + k] != er[k];
          for (size_t j = 0; j < cols; j++) {
            bad += q[i * cols + j] != (int)qr[j];
            /* no clipping, at most half a step away */
            const double step = ldexp(1.0, e[i * ng + j / G]);
            bad += fabs(xr[j] - q[i * cols + j] * step) > 0.5 * step;
          }
          for (size_t k = 0; k < ng; k++) { /* the group max uses more than half the range */
            int mx = 0;
            for (size_t j = k * G; j < cols && j < (k + 1) * G; j++)
              mx = abs(q[i * cols + j]) > mx ? abs(q[i * cols + j]) : mx;
            bad += Q > 1 && 2 * mx <= Q && e[i * ng + k] > -127;
          }
        }
        NK_CHECK(bad == 0, "dt %d G %zu bits %u: %d mismatches", (int)dtypes[di], G, bits, bad);
        free(x);
      }
}

NK_TEST(dequantize_round_trip) {
  nk_rng g = {0x3333u};
  for (size_t di = 0; di < 3; di++) {
    const size_t rows = 4, cols = 100;
    void *x = make_x(&g, rows, cols, 32, dtypes[di]);
    nk_pow2quant_desc d = nk_pow2quant_desc_dense(rows, cols, dtypes[di]);
    int8_t q[400], e[16];
    NK_REQUIRE(nk_pow2quant_quantize(NULL, &d, x, q, e) == 0, "quantize");
    void *y = nk_t_alloc(rows * cols * 4);
    NK_REQUIRE(nk_pow2quant_dequantize(NULL, &d, q, e, y) == 0, "dequantize");
    int bad = 0;
    for (size_t i = 0; i < rows; i++)
      for (size_t j = 0; j < cols; j++) {
        const double want = nk_t_round(ldexp(q[i * cols + j], e[i * 4 + j / 32]), dtypes[di]);
        bad += nk_t_get(y, i * cols + j, dtypes[di]) != want;
      }
    NK_CHECK(bad == 0, "dt %d: %d values differ from q * 2^e", (int)dtypes[di], bad);
    free(x);
    free(y);
  }
}

NK_TEST(stochastic_rounding) {
  const size_t cols = 1 << 14;
  float *x = malloc(cols * sizeof(float));
  for (size_t j = 0; j < cols; j++) x[j] = j % 64 == 0 ? 100.0f : 0.3f; /* e = 0 with Q = 127 */
  nk_pow2quant_desc d = nk_pow2quant_desc_dense(1, cols, NK_DTYPE_F32);
  d.group = 64;
  d.exp_stride = (ptrdiff_t)(cols / 64);
  d.flags = NK_POW2QUANT_STOCHASTIC;
  d.seed = 12345;
  int8_t *q = malloc(cols), *q2 = malloc(cols), e[256];
  NK_REQUIRE(nk_pow2quant_quantize(NULL, &d, x, q, e) == 0, "status");
  NK_CHECK(e[0] == 0, "exponent %d", e[0]);
  long ones = 0, n = 0;
  int bad = 0;
  for (size_t j = 0; j < cols; j++) {
    if (j % 64 == 0) {
      bad += q[j] != 100;
      continue;
    }
    bad += q[j] != 0 && q[j] != 1;
    ones += q[j];
    n++;
  }
  NK_CHECK(bad == 0, "%d values outside {floor, floor + 1}", bad);
  const double mean = (double)ones / (double)n; /* E = 0.3, sd of the mean ~ 0.0036 */
  NK_CHECK(fabs(mean - 0.3) < 0.02, "mean %g, want 0.3 (unbiased)", mean);
  NK_REQUIRE(nk_pow2quant_quantize(NULL, &d, x, q2, e) == 0, "again");
  NK_CHECK(memcmp(q, q2, cols) == 0, "same seed, different bits");
  d.seed = 999;
  NK_REQUIRE(nk_pow2quant_quantize(NULL, &d, x, q2, e) == 0, "seed");
  NK_CHECK(memcmp(q, q2, cols) != 0, "another seed gives the same bits");
  free(x);
  free(q);
  free(q2);
}

NK_TEST(bitwise_across_isas_and_threads) {
  nk_rng g = {0x4444u};
  const size_t groups[] = {16, 32, 8, 24, 5};
  int ran_other = 0;
  for (size_t di = 0; di < 3; di++)
    for (size_t gi = 0; gi < 5; gi++)
      for (int sr = 0; sr < 2; sr++) {
        const size_t rows = 23, cols = 333, G = groups[gi], ng = (cols + G - 1) / G;
        void *x = make_x(&g, rows, cols, G, dtypes[di]);
        nk_t_set(x, 5 * cols + 17, NAN, dtypes[di]);
        nk_t_set(x, 6 * cols + 40, INFINITY, dtypes[di]);
        nk_pow2quant_desc d = nk_pow2quant_desc_dense(rows, cols, dtypes[di]);
        d.group = G;
        d.bits = 4 + (unsigned)gi;
        d.exp_stride = (ptrdiff_t)ng;
        d.flags = sr ? NK_POW2QUANT_STOCHASTIC : 0;
        d.seed = 77;
        int8_t *q0 = malloc(rows * cols), *q1 = malloc(rows * cols), *e0 = malloc(rows * ng),
               *e1 = malloc(rows * ng);
        NK_REQUIRE(nk_pow2quant_quantize(NULL, &d, x, q0, e0) == 0, "reference");
        NK_CHECK(e0[5 * ng + 17 / G] == NK_POW2QUANT_EXP_NAN && e0[6 * ng + 40 / G] == NK_POW2QUANT_EXP_NAN,
                 "NaN/inf groups");
        for (size_t ii = 0; ii < 3; ii++) {
          if (!nk_isa_supported(isas[ii])) continue;
          for (size_t th = 1; th <= 3; th++) {
            ran_other += isas[ii] != NK_ISA_SCALAR;
            nk_context *ctx = NULL;
            nk_threadpool *pool = NULL;
            nk_context_create(&ctx);
            nk_context_set_isa(ctx, isas[ii]);
            if (th > 1) {
              nk_threadpool_create(th, &pool);
              nk_context_set_threadpool(ctx, pool);
            }
            memset(q1, 0x5A, rows * cols);
            memset(e1, 0x5A, rows * ng);
            NK_CHECK(nk_pow2quant_quantize(ctx, &d, x, q1, e1) == 0, "status");
            NK_CHECK(memcmp(q0, q1, rows * cols) == 0 && memcmp(e0, e1, rows * ng) == 0,
                     "dt %d G %zu sr %d isa %s threads %zu differs", (int)dtypes[di], G, sr,
                     nk_isa_name(isas[ii]), th);
            nk_context_destroy(ctx);
            nk_threadpool_destroy(pool);
          }
        }
        /* the row-range entry, in two pieces */
        memset(q1, 0x5A, rows * cols);
        NK_CHECK(nk_pow2quant_quantize_rows(NULL, &d, 0, 10, x, q1, e1) == 0 &&
                     nk_pow2quant_quantize_rows(NULL, &d, 10, rows, x, q1, e1) == 0,
                 "rows status");
        NK_CHECK(memcmp(q0, q1, rows * cols) == 0 && memcmp(e0, e1, rows * ng) == 0, "rows entry differs");
        free(q0), free(q1), free(e0), free(e1), free(x);
      }
  if (!ran_other) NK_SKIP("only the scalar path runs on this CPU");
}

NK_TEST(edge_values) {
  float x[8 * 4] = {0};
  /* group 0: zeros; 1: subnormals; 2: near FLT_MAX; 3: one NaN; 4: -0 and tiny normals;
   * 5: +inf; 6: exact powers of two (boundary); 7: mixed */
  x[4] = 1e-45f, x[5] = -3e-45f, x[6] = 7e-44f;
  x[8] = FLT_MAX, x[9] = -FLT_MAX / 3, x[10] = 1.0f;
  x[12] = 1.0f, x[13] = NAN;
  x[16] = -0.0f, x[17] = 1e-37f;
  x[20] = INFINITY;
  x[24] = 127.0f, x[25] = -64.0f;
  x[28] = 127.5f, x[29] = 0.5f, x[30] = -1.5f;
  nk_pow2quant_desc d = nk_pow2quant_desc_dense(1, 32, NK_DTYPE_F32);
  d.group = 4;
  d.exp_stride = 8;
  int8_t q[32], e[8];
  float y[32];
  NK_REQUIRE(nk_pow2quant_quantize(NULL, &d, x, q, e) == 0, "status");
  NK_CHECK(e[0] == -127 && q[0] == 0, "zero group e %d", e[0]);
  double xr[32], qr[32];
  int er[8];
  for (size_t j = 0; j < 32; j++) xr[j] = x[j];
  nk_ref_pow2_quantize(12, xr, 4, 127, qr, er);
  NK_CHECK(e[1] == er[1] && e[2] == er[2] && q[4] == (int)qr[4] && q[6] == (int)qr[6] &&
               q[8] == (int)qr[8] && q[9] == (int)qr[9],
           "subnormal / FLT_MAX groups: e %d %d ref %d %d", e[1], e[2], er[1], er[2]);
  NK_CHECK(q[8] == 127 || q[8] == 64, "FLT_MAX quantized to %d", q[8]);
  NK_CHECK(e[3] == NK_POW2QUANT_EXP_NAN && q[12] == 0 && q[13] == 0, "NaN group");
  NK_CHECK(e[5] == NK_POW2QUANT_EXP_NAN && q[20] == 0, "inf group");
  NK_CHECK(e[6] == 0 && q[24] == 127 && q[25] == -64, "boundary: 127 fits with e = 0 (e %d)", e[6]);
  NK_CHECK(e[7] == 1 && q[28] == 64 && q[29] == 0 && q[30] == -1, "half-even: e %d q %d %d %d",
           e[7], q[28], q[29], q[30]);
  NK_REQUIRE(nk_pow2quant_dequantize(NULL, &d, q, e, y) == 0, "dequantize");
  NK_CHECK(isnan(y[12]) && isnan(y[13]) && isnan(y[20]), "NaN groups dequantize to NaN");
  /* FLT_MAX rounds to 64 * 2^122 = 2^128, which f32 cannot hold: it dequantizes to inf (the
   * documented edge); -FLT_MAX / 3 stays finite */
  NK_CHECK(q[8] == 64 && e[2] == 122 && isinf(y[8]) && y[9] == ldexpf((float)q[9], e[2]),
           "FLT_MAX group round trip %g %g", y[8], y[9]);
  /* bits = 2 saturates above 2^127 */
  d.bits = 2;
  NK_REQUIRE(nk_pow2quant_quantize(NULL, &d, x, q, e) == 0, "bits 2");
  NK_CHECK(e[2] == 127 && q[8] == 1 && q[9] == -1, "bits 2 near FLT_MAX: e %d q %d %d", e[2], q[8], q[9]);
}

NK_TEST(bad_arguments) {
  float x[64] = {0};
  int8_t q[64], e[8];
  const nk_status IA = NK_STATUS_INVALID_ARGUMENT;
  nk_pow2quant_desc d = nk_pow2quant_desc_dense(2, 32, NK_DTYPE_F32);
  NK_CHECK(nk_pow2quant_quantize(NULL, NULL, x, q, e) == IA, "NULL desc");
  NK_CHECK(nk_pow2quant_quantize(NULL, &d, NULL, q, e) == IA, "NULL x");
  NK_CHECK(nk_pow2quant_quantize(NULL, &d, x, NULL, e) == IA, "NULL q");
  NK_CHECK(nk_pow2quant_quantize(NULL, &d, x, q, NULL) == IA, "NULL exps");
  nk_pow2quant_desc b = d;
  b.bits = 1;
  NK_CHECK(nk_pow2quant_quantize(NULL, &b, x, q, e) == IA, "bits 1");
  b.bits = 9;
  NK_CHECK(nk_pow2quant_quantize(NULL, &b, x, q, e) == IA, "bits 9");
  b = d;
  b.group = 0;
  NK_CHECK(nk_pow2quant_quantize(NULL, &b, x, q, e) == IA, "group 0");
  NK_CHECK(nk_pow2quant_dequantize(NULL, &b, q, e, x) == IA, "dequantize group 0");
  b = d;
  b.exp_stride = 0;
  NK_CHECK(nk_pow2quant_quantize(NULL, &b, x, q, e) == IA, "exp_stride");
  b = d;
  b.q_stride = 31;
  NK_CHECK(nk_pow2quant_quantize(NULL, &b, x, q, e) == IA, "q_stride");
  b = d;
  b.flags = 0x80;
  NK_CHECK(nk_pow2quant_quantize(NULL, &b, x, q, e) == IA, "flags");
  b = d;
  b.dtype = (nk_dtype)4;
  NK_CHECK(nk_pow2quant_quantize(NULL, &b, x, q, e) == NK_STATUS_UNSUPPORTED, "dtype");
  NK_CHECK(nk_pow2quant_quantize(NULL, &d, x, (int8_t *)x, e) == IA, "q overlaps x");
  NK_CHECK(nk_pow2quant_quantize(NULL, &d, x, q, q + 8) == IA, "exps overlaps q");
  NK_CHECK(nk_pow2quant_quantize_rows(NULL, &d, 1, 3, x, q, e) == IA, "row range");
  NK_CHECK(nk_pow2quant_dequantize(NULL, &d, q, e, (float *)(void *)q) == IA, "y overlaps q");
  b = d;
  b.rows = 0;
  NK_CHECK(nk_pow2quant_quantize(NULL, &b, NULL, NULL, NULL) == 0, "empty");
}

int main(void) {
  NK_RUN(exact_against_formula);
  NK_RUN(dequantize_round_trip);
  NK_RUN(stochastic_rounding);
  NK_RUN(bitwise_across_isas_and_threads);
  NK_RUN(edge_values);
  NK_RUN(bad_arguments);
  return nk_test_summary();
}
