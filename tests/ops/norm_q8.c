/*
 * tests/ops/norm_q8.c — fused LayerNorm/RMSNorm (+ residual) writing int8: per-row absmax and
 * power-of-two groups. Checked against quantizing the float64 reference output (at most one
 * quantization step), against quantizing the library's own float output (bitwise), across
 * ISAs and thread counts (bitwise), at the edges, and for bad arguments.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "q8_util.h"
#include "reference.h"
#include "test.h"
#include "util.h"

static const nk_dtype dtypes[] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};
static const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};

static nk_context *make_ctx(nk_isa isa, size_t threads, nk_threadpool **pool) {
  nk_context *ctx = NULL;
  *pool = NULL;
  if (nk_context_create(&ctx) != NK_STATUS_OK) return NULL;
  if (nk_context_set_isa(ctx, isa) != NK_STATUS_OK) {
    nk_context_destroy(ctx);
    return NULL;
  }
  if (threads > 1 && nk_threadpool_create(threads, pool) == NK_STATUS_OK)
    nk_context_set_threadpool(ctx, *pool);
  return ctx;
}

static void free_ctx(nk_context *ctx, nk_threadpool *pool) {
  nk_context_destroy(ctx);
  nk_threadpool_destroy(pool);
}

typedef struct io {
  size_t rows, cols;
  nk_dtype dt;
  void *x, *r;
  float *gamma, *beta;
} io;

static void fill(io *t, nk_rng *g, double mean, double sd, int with_r) {
  const size_t n = t->rows * t->cols;
  const size_t es = nk_dtype_size(t->dt);
  t->x = nk_t_alloc(n * es);
  t->r = with_r ? nk_t_alloc(n * es) : NULL;
  t->gamma = nk_t_alloc(t->cols * sizeof(float));
  t->beta = nk_t_alloc(t->cols * sizeof(float));
  for (size_t i = 0; i < n; i++) {
    nk_t_set(t->x, i, mean + sd * nk_rng_normal(g), t->dt);
    if (t->r) nk_t_set(t->r, i, 0.5 * sd * nk_rng_normal(g), t->dt);
  }
  for (size_t j = 0; j < t->cols; j++) {
    t->gamma[j] = (float)(0.5 + nk_rng_uniform(g));
    t->beta[j] = (float)(0.3 * nk_rng_normal(g));
  }
}

static void free_io(io *t) {
  free(t->x);
  free(t->r);
  free(t->gamma);
  free(t->beta);
}

/* The reference y (double), from the exact h the library normalizes. */
static double *ref_y(const io *t, int rms, const float *gamma, const float *beta) {
  const size_t n = t->rows * t->cols;
  double *h = malloc(n * sizeof(double)), *y = malloc(n * sizeof(double));
  double *G = malloc(t->cols * sizeof(double)), *B = malloc(t->cols * sizeof(double));
  for (size_t i = 0; i < n; i++) {
    const double v = nk_t_get(t->x, i, t->dt);
    h[i] = t->r ? nk_t_round(v + nk_t_get(t->r, i, t->dt), t->dt) : v;
  }
  for (size_t j = 0; j < t->cols; j++) {
    G[j] = gamma ? gamma[j] : 1.0;
    B[j] = beta ? beta[j] : 0.0;
  }
  if (rms)
    nk_ref_rmsnorm_fwd(t->rows, t->cols, h, gamma ? G : NULL, beta ? B : NULL, 0, 1e-5, y, NULL);
  else
    nk_ref_layernorm_fwd(t->rows, t->cols, h, gamma ? G : NULL, beta ? B : NULL, 0, 1e-5, y, NULL,
                         NULL);
  free(h);
  free(G);
  free(B);
  return y;
}

static nk_status run_q8(nk_context *ctx, int rms, const nk_norm_desc *d, const nk_q8_desc *q8,
                        const io *t, const float *gamma, const float *beta, int8_t *q,
                        float *scale, int8_t *exps, void *h, float *mean, float *rstd) {
  if (rms)
    return nk_rmsnorm_fwd_q8(ctx, d, q8, t->x, t->r, gamma, beta, q, scale, exps, h, rstd);
  return nk_layernorm_fwd_q8(ctx, d, q8, t->x, t->r, gamma, beta, q, scale, exps, h, mean, rstd);
}

static const size_t colset[] = {1, 7, 64, 100, 1000, 1500, 3000};

/* One quantization step: |q - q_ref| <= 1 and the scale within 4e-6 of the reference. */
NK_TEST(row_absmax_within_one_step) {
  nk_rng g = {0x51ED5EEDu};
  for (size_t di = 0; di < 3; di++)
    for (size_t ci = 0; ci < sizeof colset / sizeof colset[0]; ci++)
      for (int v = 0; v < 8; v++) {
        const int rms = v & 1, with_r = (v >> 1) & 1, affine = (v >> 2) & 1;
        io t = {5, colset[ci], dtypes[di], NULL, NULL, NULL, NULL};
        fill(&t, &g, rms ? 0.3 : 3.0, 1.5, with_r);
        const float *G = affine ? t.gamma : NULL, *B = affine ? t.beta : NULL;
        double *y = ref_y(&t, rms, G, B);
        nk_norm_desc d = nk_norm_desc_dense(t.rows, t.cols, t.dt, 1e-5f);
        int8_t *q = nk_t_alloc(t.rows * t.cols);
        float scale[5];
        NK_REQUIRE(run_q8(NULL, rms, &d, NULL, &t, G, B, q, scale, NULL, NULL, NULL, NULL) == 0,
                   "status");
        double *qr = malloc(t.cols * sizeof(double));
        int worst = 0;
        for (size_t i = 0; i < t.rows; i++) {
          const double sref = nk_ref_q8_row(t.cols, y + i * t.cols, qr);
          NK_CHECK(fabs(scale[i] - sref) <= 4e-6 * sref, "dt %d cols %zu v %d row %zu scale %.9g ref %.9g",
                   (int)t.dt, t.cols, v, i, scale[i], sref);
          for (size_t j = 0; j < t.cols; j++) {
            const int dq = abs((int)q[i * t.cols + j] - (int)qr[j]);
            worst = dq > worst ? dq : worst;
          }
        }
        NK_CHECK(worst <= 1, "dt %d cols %zu variant %d: q off by %d steps", (int)t.dt, t.cols, v,
                 worst);
        free(qr);
        free(q);
        free(y);
        free_io(&t);
      }
}

/* Group mode: same exponent gives |q - q_ref| <= 1; a group whose max sits on a power-of-two
 * boundary may pick the neighbouring exponent: then the dequantized values differ by at most
 * one step of the larger exponent. */
NK_TEST(pow2_groups_within_one_step) {
  nk_rng g = {0xB0A710ADu};
  const size_t groups[] = {1, 8, 16, 32, 33, 64, 128};
  for (size_t di = 0; di < 3; di++)
    for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++)
      for (int v = 0; v < 4; v++) {
        const int rms = v & 1, with_r = (v >> 1) & 1;
        io t = {4, gi % 2 ? 1000 : 1536, dtypes[di], NULL, NULL, NULL, NULL};
        fill(&t, &g, 1.0, 2.0, with_r);
        double *y = ref_y(&t, rms, t.gamma, t.beta);
        nk_norm_desc d = nk_norm_desc_dense(t.rows, t.cols, t.dt, 1e-5f);
        const size_t G = groups[gi], ng = (t.cols + G - 1) / G;
        nk_q8_desc q8 = {NK_Q8_POW2_GROUPS, G, (ptrdiff_t)ng};
        int8_t *q = nk_t_alloc(t.rows * t.cols), *e = nk_t_alloc(t.rows * ng);
        NK_REQUIRE(run_q8(NULL, rms, &d, &q8, &t, t.gamma, t.beta, q, NULL, e, NULL, NULL, NULL) == 0,
                   "status");
        double *qr = malloc(t.cols * sizeof(double));
        int *er = malloc(ng * sizeof(int));
        for (size_t i = 0; i < t.rows; i++) {
          nk_ref_pow2_quantize(t.cols, y + i * t.cols, G, 127, qr, er);
          for (size_t j = 0; j < t.cols; j++) {
            const int ek = e[i * ng + j / G], rk = er[j / G];
            const int qq = q[i * t.cols + j];
            if (ek == rk) {
              NK_CHECK(abs(qq - (int)qr[j]) <= 1, "dt %d G %zu row %zu col %zu q %d ref %g",
                       (int)t.dt, G, i, j, qq, qr[j]);
            } else {
              NK_CHECK(abs(ek - rk) == 1, "exponent %d vs ref %d", ek, rk);
              const double a = ldexp(qq, ek), b = ldexp(qr[j], rk);
              NK_CHECK(fabs(a - b) <= ldexp(1.0, ek > rk ? ek : rk), "dequantized %g vs %g", a, b);
            }
          }
        }
        free(qr);
        free(er);
        free(q);
        free(e);
        free(y);
        free_io(&t);
      }
}

/* Quantizing nk_*_fwd's own f32 output with the documented rule (q8_util.h) gives the fused
 * op's bits. */
NK_TEST(same_bits_as_quantized_float_forward) {
  nk_rng g = {0xF00DF00Du};
  const double scales[] = {1.0, 1e-35, 1e30, 1e-3};
  for (int rms = 0; rms < 2; rms++)
    for (size_t si = 0; si < 4; si++) {
      io t = {6, 1100, NK_DTYPE_F32, NULL, NULL, NULL, NULL};
      fill(&t, &g, 2.0 * scales[si], scales[si], 1);
      nk_norm_desc d = nk_norm_desc_dense(t.rows, t.cols, t.dt, 1e-5f);
      float *y = nk_t_alloc(t.rows * t.cols * 4), scale[6], s2[6];
      int8_t *q = nk_t_alloc(t.rows * t.cols), *q2 = nk_t_alloc(t.rows * t.cols);
      nk_status st = rms ? nk_rmsnorm_fwd(NULL, &d, t.x, t.r, t.gamma, NULL, y, NULL, NULL)
                         : nk_layernorm_fwd(NULL, &d, t.x, t.r, t.gamma, t.beta, y, NULL, NULL, NULL);
      NK_REQUIRE(st == 0, "float forward");
      NK_REQUIRE(run_q8(NULL, rms, &d, NULL, &t, t.gamma, rms ? NULL : t.beta, q, scale, NULL, NULL,
                        NULL, NULL) == 0,
                 "q8");
      for (size_t i = 0; i < t.rows; i++) quantize_f32_row(t.cols, y + i * t.cols, q2 + i * t.cols, &s2[i]);
      NK_CHECK(memcmp(q, q2, t.rows * t.cols) == 0, "rms %d scale %g: q differs", rms, scales[si]);
      NK_CHECK(memcmp(scale, s2, sizeof scale) == 0, "rms %d scale %g: scales differ", rms, scales[si]);
      free(y);
      free(q);
      free(q2);
      free_io(&t);
    }
}

/* Every ISA and 1, 2, 3 threads: the same q, scale, exps, h, mean, rstd bits. */
NK_TEST(bitwise_across_isas_and_threads) {
  nk_rng g = {0xC0FFEEu};
  const size_t shapes[][2] = {{37, 1000}, {9, 3}, {5, 2100}, {64, 64}, {3, 4097}};
  int ran_other = 0;
  for (size_t di = 0; di < 3; di++)
    for (size_t si = 0; si < 5; si++)
      for (int v = 0; v < 6; v++) {
        const int rms = v & 1, mode = v >> 1; /* 0 row, 1 groups of 32, 2 groups of 24 */
        io t = {shapes[si][0], shapes[si][1], dtypes[di], NULL, NULL, NULL, NULL};
        fill(&t, &g, 1.0, 1.0, 1);
        if (si == 0) nk_t_set(t.x, 3 * t.cols + 5, NAN, t.dt); /* a NaN row */
        const size_t G = mode == 2 ? 24 : 32, ng = (t.cols + G - 1) / G;
        nk_q8_desc q8 = {mode ? NK_Q8_POW2_GROUPS : NK_Q8_ROW_ABSMAX, G, (ptrdiff_t)ng};
        nk_norm_desc d = nk_norm_desc_dense(t.rows, t.cols, t.dt, 1e-5f);
        const size_t n = t.rows * t.cols, es = nk_dtype_size(t.dt);
        int8_t *q0 = nk_t_alloc(n), *e0 = nk_t_alloc(t.rows * ng), *q1 = nk_t_alloc(n),
               *e1 = nk_t_alloc(t.rows * ng);
        void *h0 = nk_t_alloc(n * es), *h1 = nk_t_alloc(n * es);
        float *s0 = nk_t_alloc(t.rows * 12), *s1 = nk_t_alloc(t.rows * 12);
        memset(s0, 0x55, t.rows * 12);
        memset(e0, 0x55, t.rows * ng);
        NK_REQUIRE(run_q8(NULL, rms, &d, &q8, &t, t.gamma, t.beta, q0, mode ? NULL : s0,
                          mode ? e0 : NULL, h0, s0 + t.rows, s0 + 2 * t.rows) == 0,
                   "reference run");
        for (size_t ii = 0; ii < 3; ii++)
          for (size_t th = 1; th <= 3; th++) {
            if (!nk_isa_supported(isas[ii])) continue;
            ran_other += isas[ii] != NK_ISA_SCALAR;
            nk_threadpool *pool;
            nk_context *ctx = make_ctx(isas[ii], th, &pool);
            memset(q1, 0x55, n);
            memset(e1, 0x55, t.rows * ng);
            memset(s1, 0x55, t.rows * 12);
            NK_CHECK(run_q8(ctx, rms, &d, &q8, &t, t.gamma, t.beta, q1, mode ? NULL : s1,
                            mode ? e1 : NULL, h1, s1 + t.rows, s1 + 2 * t.rows) == 0,
                     "status");
            free_ctx(ctx, pool);
            const int same = memcmp(q0, q1, n) == 0 && memcmp(h0, h1, n * es) == 0 &&
                             memcmp(s0, s1, t.rows * 12) == 0 &&
                             memcmp(e0, e1, t.rows * ng) == 0;
            NK_CHECK(same, "dt %d shape %zux%zu v %d isa %s threads %zu differs (q %d h %d s %d e %d)",
                     (int)t.dt, t.rows, t.cols, v, nk_isa_name(isas[ii]), th,
                     memcmp(q0, q1, n) != 0, memcmp(h0, h1, n * es) != 0,
                     memcmp(s0, s1, t.rows * 12) != 0, memcmp(e0, e1, t.rows * ng) != 0);
          }
        free(q0), free(q1), free(e0), free(e1), free(h0), free(h1), free(s0), free(s1);
        free_io(&t);
      }
  if (!ran_other) NK_SKIP("only the scalar path runs on this CPU");
}

/* Row-range entries give the bits of the full call. */
NK_TEST(rows_entry_matches_full_call) {
  nk_rng g = {0xAB12u};
  io t = {10, 300, NK_DTYPE_BF16, NULL, NULL, NULL, NULL};
  fill(&t, &g, 0.0, 1.0, 1);
  nk_norm_desc d = nk_norm_desc_dense(t.rows, t.cols, t.dt, 1e-5f);
  int8_t q0[3000], q1[3000];
  float s0[10], s1[10], m0[10], m1[10], r0[10], r1[10];
  NK_REQUIRE(nk_layernorm_fwd_q8(NULL, &d, NULL, t.x, t.r, t.gamma, t.beta, q0, s0, NULL, NULL, m0, r0) == 0, "full");
  NK_REQUIRE(nk_layernorm_fwd_q8_rows(NULL, &d, NULL, 0, 4, t.x, t.r, t.gamma, t.beta, q1, s1, NULL, NULL, m1, r1) == 0, "a");
  NK_REQUIRE(nk_layernorm_fwd_q8_rows(NULL, &d, NULL, 4, 10, t.x, t.r, t.gamma, t.beta, q1, s1, NULL, NULL, m1, r1) == 0, "b");
  NK_CHECK(memcmp(q0, q1, 3000) == 0 && memcmp(s0, s1, 40) == 0 && memcmp(m0, m1, 40) == 0 &&
               memcmp(r0, r1, 40) == 0, "layernorm rows differ");
  NK_REQUIRE(nk_rmsnorm_fwd_q8(NULL, &d, NULL, t.x, t.r, t.gamma, NULL, q0, s0, NULL, NULL, r0) == 0, "full");
  NK_REQUIRE(nk_rmsnorm_fwd_q8_rows(NULL, &d, NULL, 0, 7, t.x, t.r, t.gamma, NULL, q1, s1, NULL, NULL, r1) == 0, "a");
  NK_REQUIRE(nk_rmsnorm_fwd_q8_rows(NULL, &d, NULL, 7, 10, t.x, t.r, t.gamma, NULL, q1, s1, NULL, NULL, r1) == 0, "b");
  NK_CHECK(memcmp(q0, q1, 3000) == 0 && memcmp(s0, s1, 40) == 0 && memcmp(r0, r1, 40) == 0,
           "rmsnorm rows differ");
  free_io(&t);
}

/* Residual: h = dtype(x + r) is written, and may be x itself (in place). */
NK_TEST(residual_h_written_and_inplace) {
  nk_rng g = {0x77u};
  for (size_t di = 0; di < 3; di++) {
    io t = {4, 200, dtypes[di], NULL, NULL, NULL, NULL};
    fill(&t, &g, 0.0, 1.0, 1);
    const size_t n = 800, es = nk_dtype_size(t.dt);
    nk_norm_desc d = nk_norm_desc_dense(4, 200, t.dt, 1e-5f);
    void *h = nk_t_alloc(n * es);
    int8_t q0[800], q1[800];
    float s0[4], s1[4];
    NK_REQUIRE(nk_rmsnorm_fwd_q8(NULL, &d, NULL, t.x, t.r, NULL, NULL, q0, s0, NULL, h, NULL) == 0, "h");
    int ok = 1;
    for (size_t i = 0; i < n; i++)
      ok &= nk_t_get(h, i, t.dt) == nk_t_round(nk_t_get(t.x, i, t.dt) + nk_t_get(t.r, i, t.dt), t.dt);
    NK_CHECK(ok, "h != x + r");
    NK_REQUIRE(nk_rmsnorm_fwd_q8(NULL, &d, NULL, t.x, t.r, NULL, NULL, q1, s1, NULL, t.x, NULL) == 0, "in place");
    NK_CHECK(memcmp(q0, q1, n) == 0 && memcmp(s0, s1, 16) == 0, "in-place h changes q");
    NK_CHECK(memcmp(h, t.x, n * es) == 0, "in-place h wrong");
    free(h);
    free_io(&t);
  }
}

NK_TEST(edge_rows) {
  const size_t cols = 40;
  float x[6 * 40];
  for (size_t j = 0; j < cols; j++) {
    x[0 * cols + j] = 0.0f;                          /* zero row */
    x[1 * cols + j] = 3.5f;                          /* constant row */
    x[2 * cols + j] = j == 7 ? NAN : (float)j;       /* NaN row */
    x[3 * cols + j] = j == 9 ? INFINITY : (float)j;  /* inf row */
    x[4 * cols + j] = (j % 2 ? 1.0f : -1.0f) * (3e38f / 40.0f) * (float)(j + 1); /* huge */
    x[5 * cols + j] = 1e-42f * (float)(j % 5) - 2e-42f; /* subnormal */
  }
  nk_norm_desc d = nk_norm_desc_dense(6, cols, NK_DTYPE_F32, 1e-5f);
  int8_t q[240];
  float s[6], rs[6], m[6];
  for (int rms = 0; rms < 2; rms++) {
    memset(q, 0x11, sizeof q);
    NK_REQUIRE((rms ? nk_rmsnorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, rs)
                    : nk_layernorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, m, rs)) == 0,
               "status");
    int z0 = 1, z1 = 1, z2 = 1, z3 = 1;
    for (size_t j = 0; j < cols; j++) {
      z0 &= q[j] == 0;
      z2 &= q[2 * cols + j] == 0;
      z3 &= q[3 * cols + j] == 0;
      if (!rms) z1 &= q[cols + j] == 0;
    }
    NK_CHECK(z0 && s[0] == 0.0f, "zero row: scale %g", s[0]);
    if (!rms) NK_CHECK(z1 && s[1] == 0.0f, "constant row (LayerNorm): scale %g", s[1]);
    else NK_CHECK(fabsf(s[1] - 1.0f / 127.0f) < 1e-6f && q[cols] == 127, "constant row (RMSNorm)");
    NK_CHECK(z2 && isnan(s[2]) && isnan(rs[2]), "NaN row");
    NK_CHECK(z3 && isnan(s[3]), "inf row");
    /* huge and subnormal rows against the reference */
    for (size_t i = 4; i < 6; i++) {
      double h[40], y[40], qr[40];
      for (size_t j = 0; j < cols; j++) h[j] = x[i * cols + j];
      if (rms) nk_ref_rmsnorm_fwd(1, cols, h, NULL, NULL, 0, 1e-5, y, NULL);
      else nk_ref_layernorm_fwd(1, cols, h, NULL, NULL, 0, 1e-5, y, NULL, NULL);
      const double sr = nk_ref_q8_row(cols, y, qr);
      int worst = 0;
      for (size_t j = 0; j < cols; j++) {
        const int dq = abs(q[i * cols + j] - (int)qr[j]);
        worst = dq > worst ? dq : worst;
      }
      NK_CHECK(worst <= 1 && fabs(s[i] - sr) <= 4e-6 * sr + 1e-45, "rms %d row %zu: %d steps, scale %g ref %g",
               rms, i, worst, s[i], sr);
    }
    for (size_t i = 0; i < 240; i++) NK_CHECK(q[i] >= -127, "-128 written");
  }
  /* tiny output magnitudes: beta only, |y| ~ 1e-38 (the 2^64 prescale path) */
  float b[40], xs[40];
  for (size_t j = 0; j < cols; j++) b[j] = 1e-38f * (float)((int)j - 20), xs[j] = 1.0f;
  nk_norm_desc d1 = nk_norm_desc_dense(1, cols, NK_DTYPE_F32, 1e-5f);
  NK_REQUIRE(nk_layernorm_fwd_q8(NULL, &d1, NULL, xs, NULL, NULL, b, q, s, NULL, NULL, NULL, NULL) == 0, "tiny");
  double yb[40], qr[40];
  for (size_t j = 0; j < cols; j++) yb[j] = b[j];
  const double sr = nk_ref_q8_row(cols, yb, qr);
  int worst = 0;
  for (size_t j = 0; j < cols; j++) worst = abs(q[j] - (int)qr[j]) > worst ? abs(q[j] - (int)qr[j]) : worst;
  NK_CHECK(worst == 0 && q[0] == -127, "tiny row off by %d (q0 %d)", worst, q[0]);
  NK_CHECK(fabs(s[0] - sr) <= 1e-6 * sr, "tiny scale %g ref %g", s[0], sr);
  /* groups: NaN group gets the NaN exponent, zero group -127, the others are untouched */
  float xg[64];
  for (size_t j = 0; j < 64; j++) xg[j] = j < 16 ? 0.0f : (float)j;
  xg[40] = NAN;
  nk_q8_desc q8 = {NK_Q8_POW2_GROUPS, 16, 4};
  int8_t e[4];
  nk_norm_desc d2 = nk_norm_desc_dense(1, 64, NK_DTYPE_F32, 1e-5f);
  float beta64[64];
  for (size_t j = 0; j < 64; j++) beta64[j] = j < 16 ? 0.0f : 1.0f;
  float gam[64];
  for (size_t j = 0; j < 64; j++) gam[j] = j < 16 ? 0.0f : 1.0f;
  NK_REQUIRE(nk_rmsnorm_fwd_q8(NULL, &d2, &q8, xg, NULL, gam, NULL, q, NULL, e, NULL, NULL) == 0, "groups");
  NK_CHECK(e[0] == NK_POW2QUANT_EXP_NAN && e[1] == NK_POW2QUANT_EXP_NAN, "NaN row: every group NaN (%d %d)", e[0], e[1]);
  xg[40] = 40.0f;
  NK_REQUIRE(nk_rmsnorm_fwd_q8(NULL, &d2, &q8, xg, NULL, gam, NULL, q, NULL, e, NULL, NULL) == 0, "groups");
  NK_CHECK(e[0] == -127 && q[3] == 0, "zero group: e %d", e[0]);
  NK_CHECK(e[1] > -127 && e[2] >= e[1] && e[3] >= e[2], "exponents %d %d %d", e[1], e[2], e[3]);
  gam[20] = NAN;
  NK_REQUIRE(nk_rmsnorm_fwd_q8(NULL, &d2, &q8, xg, NULL, gam, beta64, q, NULL, e, NULL, NULL) == 0, "groups");
  NK_CHECK(e[1] == NK_POW2QUANT_EXP_NAN && e[2] != NK_POW2QUANT_EXP_NAN && q[20] == 0,
           "a NaN gain makes only its group NaN: %d %d", e[1], e[2]);
}

NK_TEST(dequantize_helpers) {
  int8_t q[6] = {-127, -1, 0, 1, 64, 127};
  float s[2] = {0.5f, NAN}, y[6];
  NK_REQUIRE(nk_dequantize_q8(NULL, 2, 3, q, 3, s, NK_DTYPE_F32, y, 3) == 0, "status");
  NK_CHECK(y[0] == -63.5f && y[1] == -0.5f && y[2] == 0.0f, "row 0");
  NK_CHECK(isnan(y[3]) && isnan(y[5]), "NaN scale");
  uint16_t yb[6];
  NK_REQUIRE(nk_dequantize_q8(NULL, 1, 3, q, 3, s, NK_DTYPE_BF16, yb, 3) == 0, "bf16");
  NK_CHECK(nk_bf16_to_f32(yb[0]) == -63.5f, "bf16 value");
  NK_CHECK(nk_dequantize_q8(NULL, 2, 3, q, 2, s, NK_DTYPE_F32, y, 3) == NK_STATUS_INVALID_ARGUMENT, "stride");
  NK_CHECK(nk_dequantize_q8(NULL, 2, 3, q, 3, s, (nk_dtype)9, y, 3) == NK_STATUS_UNSUPPORTED, "dtype");
  NK_CHECK(nk_dequantize_q8(NULL, 2, 3, q, 3, NULL, NK_DTYPE_F32, y, 3) == NK_STATUS_INVALID_ARGUMENT, "NULL");
  NK_CHECK(nk_dequantize_q8(NULL, 1, 3, q, 3, s, NK_DTYPE_F32, (float *)q, 3) == NK_STATUS_INVALID_ARGUMENT,
           "overlap");
  NK_CHECK(nk_dequantize_q8(NULL, 0, 3, NULL, 3, NULL, NK_DTYPE_F32, NULL, 3) == 0, "empty");
}

NK_TEST(bad_arguments) {
  float x[64] = {0}, r[64] = {0}, s[4], m[4];
  int8_t q[64], e[8];
  nk_norm_desc d = nk_norm_desc_dense(4, 16, NK_DTYPE_F32, 1e-5f);
  const nk_status IA = NK_STATUS_INVALID_ARGUMENT;
  NK_CHECK(nk_layernorm_fwd_q8(NULL, NULL, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, NULL, NULL) == IA, "NULL desc");
  NK_CHECK(nk_layernorm_fwd_q8(NULL, &d, NULL, NULL, NULL, NULL, NULL, q, s, NULL, NULL, NULL, NULL) == IA, "NULL x");
  NK_CHECK(nk_layernorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, NULL, s, NULL, NULL, NULL, NULL) == IA, "NULL q");
  NK_CHECK(nk_layernorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, q, NULL, NULL, NULL, NULL, NULL) == IA, "NULL scale");
  NK_CHECK(nk_layernorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, q, s, e, NULL, NULL, NULL) == IA, "exps in row mode");
  nk_q8_desc g = {NK_Q8_POW2_GROUPS, 0, 2};
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &d, &g, x, NULL, NULL, NULL, q, NULL, e, NULL, NULL) == IA, "group 0");
  g.group = 8;
  g.exp_stride = 1;
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &d, &g, x, NULL, NULL, NULL, q, NULL, e, NULL, NULL) == IA, "exp_stride");
  g.exp_stride = 2;
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &d, &g, x, NULL, NULL, NULL, q, NULL, e, NULL, NULL) == 0, "valid groups");
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &d, &g, x, NULL, NULL, NULL, q, s, e, NULL, NULL) == IA, "scale in group mode");
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &d, &g, x, NULL, NULL, NULL, q, NULL, NULL, NULL, NULL) == IA, "NULL exps");
  g.mode = (nk_q8_mode)7;
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &d, &g, x, NULL, NULL, NULL, q, NULL, e, NULL, NULL) == IA, "mode");
  nk_norm_desc b = d;
  b.eps = 0.0f;
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &b, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, NULL) == IA, "eps");
  b = d;
  b.flags = NK_NORM_ACCUMULATE;
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &b, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, NULL) == IA, "flags");
  b.flags = NK_NORM_GAMMA_OFFSET;
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &b, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, NULL) == IA, "offset without gamma");
  b = d;
  b.y_stride = 15;
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &b, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, NULL) == IA, "q stride");
  b = d;
  b.dtype = (nk_dtype)5;
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &b, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, NULL) != 0, "dtype");
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, q, s, NULL, r, NULL) == IA, "h without r");
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, (int8_t *)x, s, NULL, NULL, NULL) == IA, "q overlaps x");
  NK_CHECK(nk_layernorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, s, NULL) == IA, "mean overlaps scale");
  NK_CHECK(nk_layernorm_fwd_q8_rows(NULL, &d, NULL, 3, 5, x, NULL, NULL, NULL, q, s, NULL, NULL, m, NULL) == IA, "row range");
  b = d;
  b.rows = 0;
  NK_CHECK(nk_layernorm_fwd_q8(NULL, &b, NULL, NULL, NULL, NULL, NULL, NULL, s, NULL, NULL, NULL, NULL) == 0, "empty");
}

/* Regression (fuzz finding tests/fuzz/known/quant-q8-lns-scale-ignored): lns_scale was
 * silently ignored by the _q8 functions and nk_fakeln_fwd (their outputs are documented as those
 * of the float forward, which scales by it). Now: 0 and 1 OK, other values UNSUPPORTED, bad
 * values INVALID_ARGUMENT, nothing written. */
NK_TEST(lns_scale_rejected_not_ignored) {
  float x[32], y[32], s[2];
  int8_t q[32];
  for (int i = 0; i < 32; i++) x[i] = (float)(i % 7) - 3.0f;
  nk_norm_desc d = nk_norm_desc_dense(2, 16, NK_DTYPE_F32, 1e-5f);
  memset(q, 0x55, sizeof q);
  d.lns_scale = 2.0f;
  NK_CHECK(nk_layernorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, NULL, NULL) ==
               NK_STATUS_UNSUPPORTED, "layernorm q8 lns 2");
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, NULL) ==
               NK_STATUS_UNSUPPORTED, "rmsnorm q8 lns 2");
  NK_CHECK(nk_fakeln_fwd_q8(NULL, &d, NULL, 1.5f, x, NULL, NULL, NULL, q, s, NULL, NULL, NULL) ==
               NK_STATUS_UNSUPPORTED, "fakeln q8 lns 2");
  NK_CHECK(nk_fakeln_fwd(NULL, &d, 1.5f, x, NULL, NULL, NULL, y, NULL, NULL) == NK_STATUS_UNSUPPORTED,
           "fakeln lns 2");
  int untouched = 1;
  for (int i = 0; i < 32; i++) untouched &= q[i] == 0x55;
  NK_CHECK(untouched, "q written by a rejected call");
  d.lns_scale = -1.0f;
  NK_CHECK(nk_layernorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, NULL, NULL) ==
               NK_STATUS_INVALID_ARGUMENT, "negative lns");
  d.lns_scale = NAN;
  NK_CHECK(nk_rmsnorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, NULL) ==
               NK_STATUS_INVALID_ARGUMENT, "NaN lns");
  d.lns_scale = 1.0f;
  int8_t q1[32];
  float s1[2];
  NK_REQUIRE(nk_layernorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, q1, s1, NULL, NULL, NULL, NULL) == 0,
             "lns 1");
  d.lns_scale = 0.0f;
  NK_REQUIRE(nk_layernorm_fwd_q8(NULL, &d, NULL, x, NULL, NULL, NULL, q, s, NULL, NULL, NULL, NULL) == 0,
             "lns 0");
  NK_CHECK(memcmp(q, q1, 32) == 0 && memcmp(s, s1, 8) == 0, "lns 1 is no scaling");
}

int main(void) {
  NK_RUN(row_absmax_within_one_step);
  NK_RUN(pow2_groups_within_one_step);
  NK_RUN(same_bits_as_quantized_float_forward);
  NK_RUN(bitwise_across_isas_and_threads);
  NK_RUN(rows_entry_matches_full_call);
  NK_RUN(residual_h_written_and_inplace);
  NK_RUN(edge_rows);
  NK_RUN(dequantize_helpers);
  NK_RUN(bad_arguments);
  NK_RUN(lns_scale_rejected_not_ignored);
  return nk_test_summary();
}
