/*
 * tests/consistency/rownorm.c — the reproducibility promise (DESIGN.md, CONVENTIONS C7):
 * LayerNorm and RMSNorm, forward and backward, give the same bits on every ISA path
 * (scalar, avx2, avx512) and every thread count (1, 2, 3, 8). Paths this CPU cannot run are
 * reported as skipped.
 */
#include <string.h>

#include "test.h"
#include "util.h"

typedef struct outputs {
  void *y, *h, *dx, *dg, *db;
  float *mean, *rstd;
} outputs;

typedef struct shape {
  size_t rows, cols;
} shape;

static const shape shapes[] = {{37, 1000}, {300, 64}, {5, 5000}, {1, 70001}, {64, 1024}, {9, 3}};
static const nk_dtype dtypes[] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};

/* Runs fwd + bwd with the given isa/threads; fills o (allocated by the caller). */
static int run(int rms, nk_dtype dt, shape s, nk_isa isa, size_t threads, int variant,
               const void *x, const void *r, const void *dy, const float *gamma,
               const float *beta, outputs *o) {
  nk_context *ctx = NULL;
  nk_threadpool *pool = NULL;
  if (nk_context_create(&ctx) != NK_STATUS_OK) return 0;
  if (nk_context_set_isa(ctx, isa) != NK_STATUS_OK) {
    nk_context_destroy(ctx);
    return 0;
  }
  if (threads > 1) {
    nk_threadpool_create(threads, &pool);
    nk_context_set_threadpool(ctx, pool);
  }
  nk_norm_desc d = nk_norm_desc_dense(s.rows, s.cols, dt, 1e-5f);
  d.flags = (variant & 1) ? NK_NORM_GAMMA_OFFSET : 0;
  const void *rr = (variant & 2) ? r : NULL;
  void *h = (variant & 2) ? o->h : NULL;
  const float *B = (variant & 4) ? beta : NULL;
  size_t wsb = 0;
  nk_layernorm_bwd_workspace_size(&d, &wsb);
  void *ws = nk_t_alloc(wsb);
  nk_status st;
  if (rms) {
    st = nk_rmsnorm_fwd(ctx, &d, x, rr, gamma, B, o->y, h, o->rstd);
    if (st == 0)
      st = nk_rmsnorm_bwd(ctx, &d, h ? h : x, gamma, B, o->rstd, dy, NULL, o->dx, o->dg, o->db,
                          ws, wsb);
  } else {
    st = nk_layernorm_fwd(ctx, &d, x, rr, gamma, B, o->y, h, o->mean, o->rstd);
    if (st == 0)
      st = nk_layernorm_bwd(ctx, &d, h ? h : x, gamma, B, o->mean, o->rstd, dy, NULL, o->dx,
                            o->dg, o->db, ws, wsb);
  }
  free(ws);
  nk_context_destroy(ctx);
  nk_threadpool_destroy(pool);
  return st == NK_STATUS_OK;
}

static outputs alloc_outputs(size_t n, size_t cols, size_t rows) {
  outputs o = {nk_t_alloc(n * 4), nk_t_alloc(n * 4), nk_t_alloc(n * 4), nk_t_alloc(cols * 4),
               nk_t_alloc(cols * 4), nk_t_alloc(rows * 4), nk_t_alloc(rows * 4)};
  return o;
}

static void free_outputs(outputs *o) {
  free(o->y), free(o->h), free(o->dx), free(o->dg), free(o->db), free(o->mean), free(o->rstd);
}

static int same(const outputs *a, const outputs *b, size_t n, size_t es, size_t cols,
                size_t rows) {
  return memcmp(a->y, b->y, n * es) == 0 && memcmp(a->h, b->h, n * es) == 0 &&
         memcmp(a->dx, b->dx, n * es) == 0 && memcmp(a->dg, b->dg, cols * 4) == 0 &&
         memcmp(a->db, b->db, cols * 4) == 0 && memcmp(a->mean, b->mean, rows * 4) == 0 &&
         memcmp(a->rstd, b->rstd, rows * 4) == 0;
}

static void check_isa_threads(nk_isa isa) {
  for (int rms = 0; rms < 2; rms++)
    for (size_t t = 0; t < 3; t++)
      for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const shape s = shapes[k];
        const nk_dtype dt = dtypes[t];
        const size_t n = s.rows * s.cols, es = nk_dtype_size(dt);
        const int variant = (int)(k + t + (size_t)rms) % 8;
        void *x = nk_t_alloc(n * es), *r = nk_t_alloc(n * es), *dy = nk_t_alloc(n * es);
        float *gamma = nk_t_alloc(s.cols * 4), *beta = nk_t_alloc(s.cols * 4);
        nk_rng rng = {k * 31 + t + 1};
        for (size_t i = 0; i < n; i++) {
          /* a mix of classes: normal rows, an ill-conditioned row, a huge row */
          const size_t row = i / s.cols;
          double v = nk_rng_normal(&rng);
          if (row % 5 == 1) v = 300.0 + 0.01 * v;
          if (row % 7 == 3 && dt == NK_DTYPE_F32) v *= 1e25;
          nk_t_set(x, i, v, dt);
          nk_t_set(r, i, 0.1 * nk_rng_normal(&rng), dt);
          nk_t_set(dy, i, nk_rng_normal(&rng), dt);
        }
        for (size_t j = 0; j < s.cols; j++) {
          gamma[j] = (float)(1.0 + 0.2 * nk_rng_normal(&rng));
          beta[j] = (float)(0.2 * nk_rng_normal(&rng));
        }
        outputs ref = alloc_outputs(n, s.cols, s.rows);
        NK_REQUIRE(run(rms, dt, s, NK_ISA_SCALAR, 1, variant, x, r, dy, gamma, beta, &ref),
                   "scalar run");
        const size_t threads[] = {1, 2, 3, 8};
        for (size_t ti = 0; ti < 4; ti++) {
          outputs o = alloc_outputs(n, s.cols, s.rows);
          NK_CHECK(run(rms, dt, s, isa, threads[ti], variant, x, r, dy, gamma, beta, &o),
                   "run failed");
          NK_CHECK(same(&ref, &o, n, es, s.cols, s.rows),
                   "%s %s %zux%zu variant %d: %s with %zu threads differs from scalar",
                   rms ? "rmsnorm" : "layernorm", nk_dtype_name(dt), s.rows, s.cols, variant,
                   nk_isa_name(isa), threads[ti]);
          free_outputs(&o);
        }
        free_outputs(&ref);
        free(x), free(r), free(dy), free(gamma), free(beta);
      }
}

NK_TEST(scalar_all_thread_counts) { check_isa_threads(NK_ISA_SCALAR); }

NK_TEST(avx2_matches_scalar) {
  if (!nk_isa_supported(NK_ISA_AVX2)) NK_SKIP("this CPU cannot run the avx2 path");
  check_isa_threads(NK_ISA_AVX2);
}

NK_TEST(avx512_matches_scalar) {
  if (!nk_isa_supported(NK_ISA_AVX512)) NK_SKIP("this CPU cannot run the avx512 path");
  check_isa_threads(NK_ISA_AVX512);
}

int main(void) {
  NK_RUN(scalar_all_thread_counts);
  NK_RUN(avx2_matches_scalar);
  NK_RUN(avx512_matches_scalar);
  return nk_test_summary();
}
