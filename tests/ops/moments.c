/*
 * tests/ops/moments.c — the moments engine (normkit.h "Moments"): nk_moments_rows and
 * nk_moments_cols against the float64 two-pass reference for every dtype, padded strides, sizes
 * around the blocks (1024 elements of a run, 32 rows of a column) and every input class;
 * NaN/inf; empty sizes; Chan's merge (exact parts merged agree with the whole within 1e-12;
 * the library's own parts merged agree with its whole within the accuracy bound; empty sides
 * and NULL); finalize; and the row norms with given moments (nk_layernorm_fwd_moments,
 * nk_rmsnorm_fwd_moments) against the LayerNorm/RMSNorm references, for whole rows and for
 * rows split into two column slices whose moments are merged (tensor parallelism).
 *
 * Bounds: count exact; mean within 5e-7 sd + 4 eps |mean|; M2 within 1e-6 M2 ("a few units of
 * 1e-7 relative to the spread": f32 blocks reach about 5.6e-7). Row norms: the LayerNorm bounds
 * (f32 2e-6 max|ref| of the row; bf16/f16 1 ulp, + 2e-6 max|ref| with beta).
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "chnorm_util.h"
#include "reference.h"
#include "test.h"
#include "util.h"

static double worst_mean, worst_m2; /* worst ratios seen (reported) */

/* Checks one library moments result against the reference moments of the same values. */
static void check_moments(const char *what, size_t i, const nk_moments *got, size_t n,
                          double mean, double m2) {
  NK_CHECK(got->count == (double)n, "%s[%zu]: count %.17g, want %zu", what, i, got->count, n);
  if (n == 0) return;
  const double sd = sqrt(m2 / (double)n);
  const double qm = ch_ratio(got->mean, mean, 5e-7 * sd + 4 * DBL_EPSILON * fabs(mean));
  const double q2 = ch_ratio(got->m2, m2, 1e-6 * m2);
  if (qm > worst_mean && isfinite(qm)) worst_mean = qm;
  if (q2 > worst_m2 && isfinite(q2)) worst_m2 = q2;
  NK_CHECK(qm <= 1, "%s[%zu]: mean %.17g, reference %.17g (sd %.3g, n %zu)", what, i, got->mean,
           mean, sd, n);
  NK_CHECK(q2 <= 1, "%s[%zu]: m2 %.17g, reference %.17g (n %zu)", what, i, got->m2, m2, n);
}

/* rows x cols, row stride cols + pad; values of class `in` (+ offset per row). */
static void fill(void *x, size_t rows, size_t cols, size_t stride, nk_dtype dt, enum ch_input in,
                 nk_rng *rng, double *xd) {
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < cols; j++) {
      nk_t_set(x, i * stride + j, ch_sample(rng, in, i % 5), dt);
      xd[i * cols + j] = nk_t_get(x, i * stride + j, dt);
    }
}

static void run_rows_cols(size_t rows, size_t cols, nk_dtype dt, enum ch_input in, size_t pad,
                          nk_context *ctx) {
  const size_t stride = cols + pad, es = nk_dtype_size(dt);
  char what[160];
  nk_rng rng = {rows * 7919u + cols * 31u + pad + (uint64_t)in * 1000003u + (uint64_t)dt};
  void *x = nk_t_alloc((rows * stride + 1) * es);
  double *xd = nk_t_alloc(rows * cols * 8);
  nk_moments *out = nk_t_alloc((rows > cols ? rows : cols) * sizeof(nk_moments));
  NK_REQUIRE(x && xd && out, "alloc");
  for (size_t k = 0; k < rows * stride; k++) nk_t_set(x, k, NAN, dt); /* padding: NaN */
  fill(x, rows, cols, stride, dt, in, &rng, xd);
  snprintf(what, sizeof what, "rows %s %zux%zu+%zu %s", nk_dtype_name(dt), rows, cols, pad,
           ch_input_name(in));
  nk_status st = nk_moments_rows(ctx, rows, cols, dt, x, (ptrdiff_t)stride, out);
  NK_REQUIRE(st == NK_STATUS_OK, "%s: %s", what, nk_status_string(st));
  for (size_t i = 0; i < rows; i++) {
    double m, q;
    nk_ref_moments(cols, xd + i * cols, 1, &m, &q);
    check_moments(what, i, &out[i], cols, m, q);
  }
  snprintf(what, sizeof what, "cols %s %zux%zu+%zu %s", nk_dtype_name(dt), rows, cols, pad,
           ch_input_name(in));
  st = nk_moments_cols(ctx, rows, cols, dt, x, (ptrdiff_t)stride, out);
  NK_REQUIRE(st == NK_STATUS_OK, "%s: %s", what, nk_status_string(st));
  for (size_t j = 0; j < cols; j++) {
    double m, q;
    nk_ref_moments(rows, xd + j, (ptrdiff_t)cols, &m, &q);
    check_moments(what, j, &out[j], rows, m, q);
  }
  free(x), free(xd), free(out);
}

NK_TEST(rows_and_cols_sizes_dtypes) {
  const size_t rowsz[] = {1, 3, 31, 32, 33, 100};
  const size_t colsz[] = {1, 2, 7, 48, 1023, 1024, 1025, 3000};
  for (int t = 0; t < 3; t++)
    for (size_t a = 0; a < sizeof rowsz / sizeof rowsz[0]; a++)
      for (size_t b = 0; b < sizeof colsz / sizeof colsz[0]; b++) {
        if (rowsz[a] * colsz[b] > 40000) continue;
        run_rows_cols(rowsz[a], colsz[b], ch_dtypes[t], CH_NORMAL, (a + b) % 3 == 0 ? 0 : 5, NULL);
      }
  run_rows_cols(2, 4097, NK_DTYPE_F32, CH_NORMAL, 3, NULL);
  run_rows_cols(1000, 3, NK_DTYPE_F32, CH_NORMAL, 1, NULL);
  run_rows_cols(2500, 17, NK_DTYPE_BF16, CH_NORMAL, 0, NULL);
  printf("  worst ratio to the bound: mean %.3f, m2 %.3f\n", worst_mean, worst_m2);
}

NK_TEST(input_classes) {
  const enum ch_input ins[] = {CH_ILLCOND, CH_CONST, CH_HUGE, CH_MAXISH, CH_ZERO, CH_NEARMAX};
  for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++)
    for (int t = 0; t < 2; t++) {
      if (t == 1 && (ins[i] == CH_ILLCOND || ins[i] == CH_MAXISH || ins[i] == CH_NEARMAX))
        continue;
      run_rows_cols(3, 1500, ch_dtypes[t], ins[i], 2, NULL);
      run_rows_cols(70, 9, ch_dtypes[t], ins[i], 0, NULL);
    }
  printf("  worst ratio to the bound: mean %.3f, m2 %.3f\n", worst_mean, worst_m2);
}

/* Values whose squared deviations underflow f32 (1e-30: d^2 ~ 1e-60) need the double blocks. */
NK_TEST(tiny_values_keep_their_spread) {
  for (int t = 0; t < 2; t++) {
    run_rows_cols(3, 1500, ch_dtypes[t], CH_TINY, 2, NULL);
    run_rows_cols(70, 9, ch_dtypes[t], CH_TINY, 0, NULL);
  }
}

NK_TEST(threads_give_the_same_bits) {
  nk_threadpool *pool = NULL;
  nk_context *ctx = NULL;
  NK_REQUIRE(nk_threadpool_create(3, &pool) == 0 && nk_context_create(&ctx) == 0, "pool");
  nk_context_set_threadpool(ctx, pool);
  const size_t R = 700, C = 2100;
  float *x = nk_t_alloc(R * C * 4);
  nk_moments *a = nk_t_alloc(C * sizeof *a), *b = nk_t_alloc(C * sizeof *b);
  nk_rng rng = {5};
  for (size_t k = 0; k < R * C; k++) x[k] = (float)(3 + nk_rng_normal(&rng));
  NK_CHECK(nk_moments_rows(NULL, R, C, NK_DTYPE_F32, x, C, a) == 0 &&
               nk_moments_rows(ctx, R, C, NK_DTYPE_F32, x, C, b) == 0, "rows");
  NK_CHECK(memcmp(a, b, R * sizeof *a) == 0, "rows: 3 threads differ from 1");
  NK_CHECK(nk_moments_cols(NULL, R, C, NK_DTYPE_F32, x, C, a) == 0 &&
               nk_moments_cols(ctx, R, C, NK_DTYPE_F32, x, C, b) == 0, "cols");
  NK_CHECK(memcmp(a, b, C * sizeof *a) == 0, "cols: 3 threads differ from 1");
  free(x), free(a), free(b);
  nk_context_destroy(ctx);
  nk_threadpool_destroy(pool);
}

/* NaN or +-inf: that row's (column's) mean and M2 are NaN, the others unchanged. */
NK_TEST(nan_and_inf) {
  const size_t R = 40, C = 1500; /* one row: two blocks; 40 rows: two column blocks */
  const float bad[3] = {NAN, INFINITY, -INFINITY};
  float *x = nk_t_alloc(R * C * 4);
  nk_moments *a = nk_t_alloc(C * sizeof *a), *b = nk_t_alloc(C * sizeof *b);
  nk_rng rng = {8};
  for (size_t k = 0; k < R * C; k++) x[k] = (float)nk_rng_normal(&rng);
  for (int v = 0; v < 3; v++)
    for (int where = 0; where < 2; where++) { /* in the first block, or in the last */
      const size_t bi = where ? R - 1 : 1, bj = where ? C - 1 : 3;
      NK_CHECK(nk_moments_rows(NULL, R, C, NK_DTYPE_F32, x, C, a) == 0, "rows");
      const float keep = x[bi * C + bj];
      x[bi * C + bj] = bad[v];
      NK_CHECK(nk_moments_rows(NULL, R, C, NK_DTYPE_F32, x, C, b) == 0, "rows");
      for (size_t i = 0; i < R; i++)
        NK_CHECK(i == bi ? isnan(b[i].mean) && isnan(b[i].m2) && b[i].count == C
                         : memcmp(&a[i], &b[i], sizeof *a) == 0,
                 "rows, %g at (%zu,%zu): row %zu mean %g m2 %g", bad[v], bi, bj, i, b[i].mean,
                 b[i].m2);
      /* a row of one block (500 elements) */
      NK_CHECK(nk_moments_rows(NULL, 1, 500, NK_DTYPE_F32, x + bi * C + (where ? C - 500 : 0), C, b) == 0, "row");
      NK_CHECK(isnan(b[0].mean) && isnan(b[0].m2), "one-block row with %g: mean %g m2 %g", bad[v],
               b[0].mean, b[0].m2);
      x[bi * C + bj] = keep;
      NK_CHECK(nk_moments_cols(NULL, R, C, NK_DTYPE_F32, x, C, a) == 0, "cols");
      x[bi * C + bj] = bad[v];
      NK_CHECK(nk_moments_cols(NULL, R, C, NK_DTYPE_F32, x, C, b) == 0, "cols");
      for (size_t j = 0; j < C; j++)
        NK_CHECK(j == bj ? isnan(b[j].mean) && isnan(b[j].m2)
                         : memcmp(&a[j], &b[j], sizeof *a) == 0,
                 "cols, %g at (%zu,%zu): column %zu mean %g m2 %g", bad[v], bi, bj, j, b[j].mean,
                 b[j].m2);
      /* columns of one block (20 rows) */
      NK_CHECK(nk_moments_cols(NULL, 20, C, NK_DTYPE_F32, x + (where ? (R - 20) * C : 0), C, b) == 0, "cols");
      NK_CHECK(isnan(b[bj].mean) && isnan(b[bj].m2), "one-block column with %g: mean %g m2 %g",
               bad[v], b[bj].mean, b[bj].m2);
      x[bi * C + bj] = keep;
    }
  free(x), free(a), free(b);
}

NK_TEST(empty_and_invalid) {
  nk_context *ctx = NULL;
  nk_context_create(&ctx);
  float x[16] = {0};
  nk_moments out[4];
  memset(out, 0x5A, sizeof out);
  NK_CHECK(nk_moments_rows(ctx, 0, 5, NK_DTYPE_F32, NULL, 5, NULL) == 0, "rows == 0");
  NK_CHECK(nk_moments_cols(ctx, 5, 0, NK_DTYPE_F32, NULL, 5, NULL) == 0, "cols == 0");
  NK_CHECK(nk_moments_rows(ctx, 3, 0, NK_DTYPE_F32, x, 0, out) == 0, "cols == 0, rows 3");
  for (int i = 0; i < 3; i++) NK_CHECK(out[i].count == 0.0, "count of an empty row %g", out[i].count);
  memset(out, 0x5A, sizeof out);
  NK_CHECK(nk_moments_cols(ctx, 0, 3, NK_DTYPE_F32, x, 3, out) == 0, "rows == 0, cols 3");
  for (int i = 0; i < 3; i++) NK_CHECK(out[i].count == 0.0, "count of an empty column %g", out[i].count);
  memset(out, 0x5A, sizeof out);
  const nk_status inval = NK_STATUS_INVALID_ARGUMENT;
  NK_CHECK(nk_moments_rows(ctx, 2, 4, NK_DTYPE_F32, NULL, 4, out) == inval, "x NULL");
  NK_CHECK(nk_moments_rows(ctx, 2, 4, NK_DTYPE_F32, x, 4, NULL) == inval, "out NULL");
  NK_CHECK(nk_moments_rows(ctx, 2, 4, NK_DTYPE_F32, x, 3, out) == inval, "stride < cols");
  NK_CHECK(nk_context_message(ctx)[0] != '\0', "no message for a bad stride");
  NK_CHECK(nk_moments_cols(ctx, 2, 4, NK_DTYPE_F32, x, -4, out) == inval, "negative stride");
  NK_CHECK(nk_moments_cols(ctx, 2, 4, (nk_dtype)9, x, 4, out) == inval, "unknown dtype");
  NK_CHECK(nk_moments_rows(ctx, SIZE_MAX / 2, 4, NK_DTYPE_F32, x, PTRDIFF_MAX / 2, out) == inval,
           "size overflow");
  unsigned char *p = (unsigned char *)out;
  for (size_t k = 0; k < sizeof out; k++) NK_CHECK(p[k] == 0x5A, "out written on failure");
  nk_context_destroy(ctx);
}

/* Chan's merge: exact parts merged agree with the exact whole within 1e-12 (relative; plus the
 * rounding of the means for data far from 0); the library's parts merged agree with its whole
 * within the accuracy bound. */
NK_TEST(merge_random_splits) {
  nk_rng rng = {77};
  enum { n = 5000 };
  static double xd[n];
  static float xf[n];
  for (int trial = 0; trial < 40; trial++) {
    const double off = trial % 4 == 3 ? 1e4 : trial % 4 == 2 ? -3.0 : 0.0;
    const double sc = trial % 4 == 3 ? 1e-2 : trial % 5 == 1 ? 1e20 : 1.0;
    for (int k = 0; k < n; k++) {
      xf[k] = (float)(off + sc * nk_rng_normal(&rng));
      xd[k] = xf[k];
    }
    double mw, m2w;
    nk_ref_moments(n, xd, 1, &mw, &m2w);
    nk_moments whole;
    NK_REQUIRE(nk_moments_rows(NULL, 1, n, NK_DTYPE_F32, xf, n, &whole) == 0, "whole");
    /* cut points */
    const int parts = 2 + trial % 5;
    size_t cut[8];
    cut[0] = 0;
    cut[parts] = n;
    for (int p = 1; p < parts; p++) cut[p] = (size_t)(nk_rng_u64(&rng) % n);
    for (int p = 1; p < parts; p++) /* sort; empty parts allowed */
      for (int q = p + 1; q < parts; q++)
        if (cut[q] < cut[p]) { size_t t = cut[p]; cut[p] = cut[q]; cut[q] = t; }
    nk_moments exact = {0, 0, 0}, lib = {0, 0, 0};
    for (int p = 0; p < parts; p++) {
      const size_t len = cut[p + 1] - cut[p];
      nk_moments e = {(double)len, 0, 0}, l;
      if (len) nk_ref_moments(len, xd + cut[p], 1, &e.mean, &e.m2);
      nk_moments_merge(&exact, &e);
      NK_REQUIRE(nk_moments_rows(NULL, 1, len, NK_DTYPE_F32, xf + cut[p], (ptrdiff_t)len, &l) == 0 ||
                     len == 0,
                 "part");
      if (len) nk_moments_merge(&lib, &l);
    }
    const double sd = sqrt(m2w / n);
    /* 1e-12 relative, plus what Chan's formula itself loses in double: delta = mb - ma carries
     * the rounding of means of size |mean|, about eps |mean|, and enters M2 as
     * 2 |delta| na nb / n <= 2 sqrt(M2 n) per merge (matters only for mean >> sd) */
    const double m2tol = 1e-12 * m2w + 4.0 * parts * DBL_EPSILON * fabs(mw) * sqrt(m2w * n);
    NK_CHECK(exact.count == n && fabs(exact.mean - mw) <= 1e-12 * (fabs(mw) + sd) &&
                 fabs(exact.m2 - m2w) <= m2tol,
             "trial %d (%d parts): merged exact moments %.17g %.17g vs %.17g %.17g", trial, parts,
             exact.mean, exact.m2, mw, m2w);
    check_moments("merged library parts", (size_t)trial, &lib, n, mw, m2w);
    NK_CHECK(fabs(lib.mean - whole.mean) <= 1e-6 * sd + 8 * DBL_EPSILON * fabs(mw) &&
                 fabs(lib.m2 - whole.m2) <= 2e-6 * m2w,
             "trial %d: library parts merged %.17g %.17g vs library whole %.17g %.17g", trial,
             lib.mean, lib.m2, whole.mean, whole.m2);
  }
}

NK_TEST(merge_edges) {
  const nk_moments a = {3, 1.5, 2.25}, z = {0, 123, 456};
  nk_moments acc = a;
  nk_moments_merge(&acc, &z);
  NK_CHECK(memcmp(&acc, &a, sizeof a) == 0, "merging an empty side changed acc");
  acc = z;
  nk_moments_merge(&acc, &a);
  NK_CHECK(memcmp(&acc, &a, sizeof a) == 0, "an empty acc did not take b bit for bit");
  acc = a;
  nk_moments_merge(&acc, NULL);
  nk_moments_merge(NULL, &a);
  NK_CHECK(memcmp(&acc, &a, sizeof a) == 0, "NULL is a no-op");
  /* {1,2,3} + {4,5}: mean 3, M2 10 */
  nk_moments p = {3, 2, 2}, q = {2, 4.5, 0.5};
  nk_moments_merge(&p, &q);
  NK_CHECK(p.count == 5 && p.mean == 3 && p.m2 == 10, "hand case %g %g %g", p.count, p.mean, p.m2);
  /* merge_n is the elementwise merge */
  nk_moments d1[3] = {{3, 2, 2}, {0, 0, 0}, {1, -1, 0}}, s1[3] = {{2, 4.5, 0.5}, {2, 1, 1}, {0, 9, 9}};
  nk_moments d2[3];
  memcpy(d2, d1, sizeof d1);
  nk_moments_merge_n(3, d1, s1);
  for (int i = 0; i < 3; i++) nk_moments_merge(&d2[i], &s1[i]);
  NK_CHECK(memcmp(d1, d2, sizeof d1) == 0, "merge_n differs from merge");
  nk_moments_merge_n(3, NULL, s1);
  nk_moments_merge_n(3, d1, NULL);
}

NK_TEST(finalize) {
  const nk_moments m = {4, 2.5, 5};
  float mean, var, varu, rstd;
  NK_CHECK(nk_moments_finalize(&m, 2.75f, &mean, &var, &varu, &rstd) == 0, "status");
  NK_CHECK(mean == 2.5f && var == 1.25f && varu == (float)(5.0 / 3.0) && rstd == 0.5f,
           "values %g %g %g %g", mean, var, varu, rstd);
  NK_CHECK(nk_moments_finalize(&m, 0.0f, NULL, NULL, NULL, &rstd) == 0 &&
               rstd == (float)(1 / sqrt(1.25)), "eps 0: rstd %g", rstd);
  const nk_moments one = {1, 7, 0}, none = {0, 0, 0};
  NK_CHECK(nk_moments_finalize(&one, 1e-5f, &mean, &var, &varu, &rstd) == 0 && mean == 7 &&
               var == 0 && isnan(varu) && rstd == (float)(1 / sqrt((double)1e-5f)),
           "count 1: %g %g %g %g", mean, var, varu, rstd);
  NK_CHECK(nk_moments_finalize(&none, 1e-5f, &mean, &var, &varu, &rstd) == 0 && isnan(mean) &&
               isnan(var) && isnan(varu) && isnan(rstd), "count 0");
  const float bad_eps[] = {-1e-5f, NAN, INFINITY};
  for (int i = 0; i < 3; i++)
    NK_CHECK(nk_moments_finalize(&m, bad_eps[i], &mean, NULL, NULL, NULL) ==
                 NK_STATUS_INVALID_ARGUMENT, "eps %g", bad_eps[i]);
  NK_CHECK(nk_moments_finalize(NULL, 1e-5f, &mean, NULL, NULL, NULL) == NK_STATUS_INVALID_ARGUMENT,
           "NULL moments");
}

/* ---- row norms with given moments ----------------------------------------------------------- */

/* Runs LayerNorm (rms 0) or RMSNorm with moments of the whole rows (split == 0) or of two column
 * slices merged (split = the first slice's width), and checks y, mean, rstd. */
static void run_rownorm_moments(int rms, nk_dtype dt, nk_dtype pdt, size_t R, size_t C,
                                size_t split, int beta, int offset, enum ch_input in, int inplace) {
  const size_t pad = 3, S = C + pad, es = nk_dtype_size(dt), ps = nk_dtype_size(pdt);
  char what[160];
  snprintf(what, sizeof what, "%s %s/%s %zux%zu split %zu%s%s %s%s", rms ? "rmsnorm" : "layernorm",
           nk_dtype_name(dt), nk_dtype_name(pdt), R, C, split, beta ? " beta" : "",
           offset ? " offset" : "", ch_input_name(in), inplace ? " in-place" : "");
  nk_rng rng = {R * 131u + C * 7u + split + (uint64_t)rms};
  void *x = nk_t_alloc(R * S * es), *y = nk_t_alloc(R * S * es);
  void *gamma = nk_t_alloc(C * ps), *beta_ = nk_t_alloc(C * ps);
  float *mean = nk_t_alloc(R * 4), *rstd = nk_t_alloc(R * 4);
  nk_moments *mom = nk_t_alloc(R * sizeof *mom), *m2 = nk_t_alloc(R * sizeof *m2);
  double *xd = nk_t_alloc(R * C * 8), *yd = nk_t_alloc(R * C * 8), *gd = nk_t_alloc(C * 8),
         *bd = nk_t_alloc(C * 8), *md = nk_t_alloc(R * 8), *rd = nk_t_alloc(R * 8);
  NK_REQUIRE(x && y && gamma && beta_ && mean && rstd && mom && m2 && xd && yd && gd && bd && md && rd,
             "alloc");
  for (size_t k = 0; k < R * S; k++) nk_t_set(x, k, NAN, dt);
  memset(y, 0x5A, R * S * es);
  for (size_t i = 0; i < R; i++)
    for (size_t j = 0; j < C; j++) {
      nk_t_set(x, i * S + j, ch_sample(&rng, in, i % 3), dt);
      xd[i * C + j] = nk_t_get(x, i * S + j, dt);
    }
  for (size_t j = 0; j < C; j++) {
    nk_t_set(gamma, j, offset ? 0.2 * nk_rng_normal(&rng) : 1 + 0.3 * nk_rng_normal(&rng), pdt);
    nk_t_set(beta_, j, 0.4 * nk_rng_normal(&rng), pdt);
    gd[j] = nk_t_get(gamma, j, pdt);
    bd[j] = nk_t_get(beta_, j, pdt);
  }
  void *Y = inplace ? x : y;
  void *snap = ch_snapshot(Y, R * S * es);
  nk_norm_desc d = nk_norm_desc_dense(R, C, dt, 1e-5f);
  d.param_dtype = pdt;
  d.flags = offset ? NK_NORM_GAMMA_OFFSET : 0u;
  d.x_stride = d.y_stride = (ptrdiff_t)S;
  const size_t w0 = split ? split : C;
  NK_REQUIRE(nk_moments_rows(NULL, R, w0, dt, x, (ptrdiff_t)S, mom) == 0, "moments");
  if (split) {
    NK_REQUIRE(nk_moments_rows(NULL, R, C - split, dt, (char *)x + split * es, (ptrdiff_t)S, m2) == 0,
               "moments of the second slice");
    nk_moments_merge_n(R, mom, m2);
  }
  const void *B = beta ? beta_ : NULL;
  for (int part = 0; part < (split ? 2 : 1); part++) {
    const size_t c0 = part ? split : 0, w = split ? (part ? C - split : split) : C;
    d.cols = w;
    nk_status st =
        rms ? nk_rmsnorm_fwd_moments(NULL, &d, mom, (char *)x + c0 * es, (char *)gamma + c0 * ps,
                                     B ? (char *)beta_ + c0 * ps : NULL, (char *)Y + c0 * es, rstd)
            : nk_layernorm_fwd_moments(NULL, &d, mom, (char *)x + c0 * es, (char *)gamma + c0 * ps,
                                       B ? (char *)beta_ + c0 * ps : NULL, (char *)Y + c0 * es,
                                       mean, rstd);
    NK_REQUIRE(st == NK_STATUS_OK, "%s: part %d status %s", what, part, nk_status_string(st));
  }
  const double *Gd = gd, *Bd = beta ? bd : NULL;
  if (rms)
    nk_ref_rmsnorm_fwd(R, C, xd, Gd, Bd, offset, 1e-5f, yd, rd);
  else
    nk_ref_layernorm_fwd(R, C, xd, Gd, Bd, offset, 1e-5f, yd, md, rd);
  for (size_t i = 0; i < R; i++) {
    double mx = 0;
    for (size_t j = 0; j < C; j++) mx = fmax(mx, fabs(yd[i * C + j]));
    for (size_t j = 0; j < C; j++) {
      const double ref = yd[i * C + j], got = nk_t_get(Y, i * S + j, dt);
      const double bound = dt == NK_DTYPE_F32 ? 2e-6 * mx : nk_t_ulp(ref, dt) + (beta ? 2e-6 * mx : 0);
      NK_CHECK(ch_ratio(got, ref, bound) <= 1, "%s: y[%zu][%zu] %.9g ref %.9g (bound %.3g)", what,
               i, j, got, ref, bound);
    }
    NK_CHECK(ch_ratio(rstd[i], rd[i], 2e-6 * rd[i]) <= 1, "%s: rstd[%zu] %.9g ref %.9g", what, i,
             (double)rstd[i], rd[i]);
    if (!rms)
      NK_CHECK(ch_ratio(mean[i], md[i], nk_t_ulp(md[i], NK_DTYPE_F32) + 1e-6 / rd[i]) <= 1,
               "%s: mean[%zu] %.9g ref %.9g", what, i, (double)mean[i], md[i]);
  }
  const nk_ref_chshape t = {R, 1, C, 0, (ptrdiff_t)S, (ptrdiff_t)S}; /* R rows of C, stride S */
  NK_CHECK(ch_padding_kept(&t, dt, Y, snap), "%s: padding written", what);
  free(x), free(y), free(gamma), free(beta_), free(mean), free(rstd), free(mom), free(m2);
  free(xd), free(yd), free(gd), free(bd), free(md), free(rd), free(snap);
}

NK_TEST(rownorm_with_moments) {
  const size_t cols[][2] = {{1, 0}, {2, 1}, {7, 3}, {300, 128}, {1025, 1024}, {3000, 1},
                            {4096, 2048}, {777, 500}};
  int k = 0;
  for (int rms = 0; rms < 2; rms++)
    for (int t = 0; t < 3; t++)
      for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        for (int split = 0; split < 2; split++) {
          if (split && cols[i][1] == 0) continue;
          const nk_dtype pdt = k % 3 == 2 ? ch_dtypes[t] : NK_DTYPE_F32;
          run_rownorm_moments(rms, ch_dtypes[t], pdt, 3, cols[i][0], split ? cols[i][1] : 0,
                              k % 2 || !rms, k % 5 == 1, CH_NORMAL, k % 7 == 3);
          k++;
        }
  /* ill-conditioned, huge, tiny rows (f32) */
  const enum ch_input ins[] = {CH_ILLCOND, CH_HUGE, CH_TINY, CH_CONST};
  for (int rms = 0; rms < 2; rms++)
    for (size_t i = 0; i < 4; i++) {
      run_rownorm_moments(rms, NK_DTYPE_F32, NK_DTYPE_F32, 4, 2000, 0, 1, 0, ins[i], 0);
      run_rownorm_moments(rms, NK_DTYPE_F32, NK_DTYPE_F32, 4, 2000, 700, 1, 0, ins[i], 1);
    }
}

NK_TEST(rownorm_with_moments_invalid) {
  nk_context *ctx = NULL;
  nk_context_create(&ctx);
  float x[64], y[64], g[16], rstd[4];
  nk_moments m[4] = {{16, 0, 16}, {16, 0, 16}, {16, 0, 16}, {16, 0, 16}};
  for (int k = 0; k < 64; k++) x[k] = (float)k;
  memset(y, 0x5A, sizeof y);
  nk_norm_desc d = nk_norm_desc_dense(4, 16, NK_DTYPE_F32, 1e-5f);
  const nk_status inval = NK_STATUS_INVALID_ARGUMENT;
  NK_CHECK(nk_layernorm_fwd_moments(ctx, &d, NULL, x, NULL, NULL, y, NULL, rstd) == inval, "moments NULL");
  NK_CHECK(nk_rmsnorm_fwd_moments(ctx, &d, m, NULL, NULL, NULL, y, rstd) == inval, "x NULL");
  NK_CHECK(nk_layernorm_fwd_moments(ctx, &d, m, x, NULL, NULL, NULL, NULL, rstd) == inval, "y NULL");
  d.flags = NK_NORM_BWD_FROM_Y;
  NK_CHECK(nk_layernorm_fwd_moments(ctx, &d, m, x, NULL, NULL, y, NULL, rstd) == inval, "flags");
  d.flags = NK_NORM_GAMMA_OFFSET;
  NK_CHECK(nk_layernorm_fwd_moments(ctx, &d, m, x, NULL, NULL, y, NULL, rstd) == inval,
           "GAMMA_OFFSET without gamma");
  d.flags = 0;
  d.eps = 0.0f;
  NK_CHECK(nk_rmsnorm_fwd_moments(ctx, &d, m, x, g, NULL, y, rstd) == inval, "eps 0");
  d.eps = 1e-5f;
  d.y_stride = 8;
  NK_CHECK(nk_rmsnorm_fwd_moments(ctx, &d, m, x, NULL, NULL, y, rstd) == inval, "y_stride < cols");
  d.y_stride = 16;
  d.rows = 3;
  NK_CHECK(nk_layernorm_fwd_moments(ctx, &d, m, x, NULL, NULL, x + 1, NULL, NULL) == inval,
           "y overlaps x");
  for (int k = 0; k < 64; k++) NK_CHECK(((unsigned char *)y)[k] == 0x5A, "y written on failure");
  d.rows = 0;
  NK_CHECK(nk_layernorm_fwd_moments(ctx, &d, NULL, NULL, NULL, NULL, NULL, NULL, NULL) == 0, "rows 0");
  nk_context_destroy(ctx);
}

int main(void) {
  NK_RUN_TIMED(rows_and_cols_sizes_dtypes);
  NK_RUN(input_classes);
  NK_RUN(tiny_values_keep_their_spread);
  NK_RUN(threads_give_the_same_bits);
  NK_RUN(nan_and_inf);
  NK_RUN(empty_and_invalid);
  NK_RUN(merge_random_splits);
  NK_RUN(merge_edges);
  NK_RUN(finalize);
  NK_RUN_TIMED(rownorm_with_moments);
  NK_RUN(rownorm_with_moments_invalid);
  return nk_test_summary();
}
