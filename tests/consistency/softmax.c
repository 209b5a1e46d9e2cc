/*
 * tests/consistency/softmax.c — the reproducibility promise (DESIGN.md,
 * CONVENTIONS C7) for the softmax family: softmax and log_softmax forward (y,
 * lse) and backward (dx, dsink) for every algorithm, sigmoid scores forward and
 * backward, and cross-entropy (loss, dlogits, lse) give the same bits on every
 * ISA path (scalar, avx2, avx512) and every thread count (1, 2, 3, 8). Paths
 * this CPU cannot run are reported as skipped.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "test.h"
#include "util.h"

typedef struct shape {
  size_t rows, cols;
} shape;

/* many short rows, many medium rows, long rows, one very long row, tiny rows */
static const shape shapes[] = {{37, 300}, {200, 64}, {3, 5000}, {1, 40001}, {12, 1024}, {9, 3}};
#define NSHAPES (sizeof shapes / sizeof shapes[0])
static const nk_dtype dtypes[] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};
static const nk_softmax_algo algos[] = {NK_SOFTMAX_AUTO, NK_SOFTMAX_THREE_PASS_RELOAD,
                                        NK_SOFTMAX_THREE_PASS_RECOMPUTE, NK_SOFTMAX_TWO_PASS,
                                        NK_SOFTMAX_ONLINE};

typedef struct inputs {
  void *x, *dy, *mask;
  float *sink;
  int64_t *target;
} inputs;

/* Every output of one configuration, concatenated. */
typedef struct blob {
  unsigned char *p;
  size_t n;
} blob;

static void put(blob *b, const void *src, size_t n) {
  memcpy(b->p + b->n, src, n);
  b->n += n;
}

/* Runs every op for (dt, shape, algo) with isa / threads; appends all outputs
 * to out. Returns 0 when a call failed. */
static int run(nk_dtype dt, shape s, nk_softmax_algo algo, nk_isa isa, size_t threads,
               const inputs *in, blob *out) {
  nk_context *ctx = NULL;
  nk_threadpool *pool = NULL;
  int ok = 1;
  if (nk_context_create(&ctx) != NK_STATUS_OK) return 0;
  if (nk_context_set_isa(ctx, isa) != NK_STATUS_OK) {
    nk_context_destroy(ctx);
    return 0;
  }
  if (threads > 1 && nk_threadpool_create(threads, &pool) == NK_STATUS_OK)
    nk_context_set_threadpool(ctx, pool);
  const size_t R = s.rows, C = s.cols, n = R * C, es = nk_dtype_size(dt);
  void *y = nk_t_alloc(n * es), *dx = nk_t_alloc(n * es);
  float *lse = nk_t_alloc(R * 4), *dsink = nk_t_alloc(R * 4), *loss = nk_t_alloc(R * 4);
  for (int log = 0; log < 2; log++)
    for (int variant = 0; variant < 2; variant++) {
      nk_softmax_desc d = nk_softmax_desc_dense(R, C, dt);
      d.algo = algo;
      d.flags = log ? NK_SOFTMAX_LOG : 0;
      const void *mask = NULL;
      const float *sink = NULL;
      if (variant) { /* attention: scale, broadcast bf16 mask, causal, ALiBi,
                        per-head sink */
        d.scale = 0.125f;
        d.mask_dtype = NK_DTYPE_BF16;
        d.mask_rows = 1;
        mask = in->mask;
        d.flags |= NK_SOFTMAX_CAUSAL | NK_SOFTMAX_SINK_PER_HEAD;
        d.q_len = R > 3 ? 3 : 1;
        d.heads = 2;
        d.causal_offset = (ptrdiff_t)C - 3;
        d.alibi = 0.03125f;
        sink = in->sink;
      }
      nk_status st = nk_softmax_fwd(ctx, &d, in->x, mask, sink, y, lse);
      if (st == NK_STATUS_UNSUPPORTED && algo == NK_SOFTMAX_THREE_PASS_RELOAD && dt != NK_DTYPE_F32)
        continue;
      ok &= st == NK_STATUS_OK;
      memset(dsink, 0, R * 4);
      ok &= nk_softmax_bwd(ctx, &d, y, in->dy, sink, sink ? lse : NULL, dx, sink ? dsink : NULL) ==
            NK_STATUS_OK;
      put(out, y, n * es), put(out, lse, R * 4), put(out, dx, n * es), put(out, dsink, R * 4);
    }
  if (algo == NK_SOFTMAX_AUTO) { /* the ops without an algorithm, once */
    nk_softmax_desc d = nk_softmax_desc_dense(R, C, dt);
    d.flags = NK_SOFTMAX_CAUSAL;
    d.causal_offset = (ptrdiff_t)C / 2;
    d.scale = 0.5f;
    ok &= nk_sigmoid_attn_fwd(ctx, &d, in->x, NULL, y) == NK_STATUS_OK;
    ok &= nk_sigmoid_attn_bwd(ctx, &d, y, in->dy, dx) == NK_STATUS_OK;
    put(out, y, n * es), put(out, dx, n * es);
    for (int red = 0; red < 3; red++) {
      nk_cross_entropy_desc e = nk_cross_entropy_desc_dense(R, C, dt);
      e.reduction = (nk_reduction)red;
      e.label_smoothing = red == 1 ? 0.1f : 0.0f;
      e.z_loss = red == 2 ? 1e-4f : 0.0f;
      size_t wsb = 0;
      nk_cross_entropy_workspace_size(&e, &wsb);
      void *ws = nk_t_alloc(wsb);
      memset(loss, 0, R * 4);
      ok &= nk_cross_entropy(ctx, &e, in->x, in->target, loss, dx, lse, ws, wsb) == NK_STATUS_OK;
      free(ws);
      put(out, loss, R * 4), put(out, dx, n * es), put(out, lse, R * 4);
    }
  }
  free(y), free(dx), free(lse), free(dsink), free(loss);
  nk_context_destroy(ctx);
  nk_threadpool_destroy(pool);
  return ok;
}

/* Each configuration's scalar single-thread run is the reference; every (isa,
 * threads) pair the CPU supports must reproduce it. */
static void check_all(void) {
  const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  for (size_t t = 0; t < 3; t++)
    for (size_t k = 0; k < NSHAPES; k++) {
      const shape s = shapes[k];
      const nk_dtype dt = dtypes[t];
      const size_t n = s.rows * s.cols, es = nk_dtype_size(dt);
      inputs in;
      in.x = nk_t_alloc(n * es), in.dy = nk_t_alloc(n * es), in.mask = nk_t_alloc(s.cols * 2);
      in.sink = nk_t_alloc(2 * 4), in.target = nk_t_alloc(s.rows * 8);
      nk_rng rng = {k * 31 + t + 1};
      for (size_t i = 0; i < n; i++) {
        const size_t row = i / s.cols;
        double v = 3.0 * nk_rng_normal(&rng);
        if (row % 5 == 1) v *= 30.0;                                  /* wide rows */
        if (row % 7 == 3 && dt != NK_DTYPE_F16) v *= 1e25;            /* huge rows */
        if (row % 4 == 2 && nk_rng_u64(&rng) % 3 == 0) v = -INFINITY; /* masked entries */
        if (row % 11 == 6) v = (i % 2) ? 88.72284 : -103.97208;       /* exp's edges */
        nk_t_set(in.x, i, v, dt);
        nk_t_set(in.dy, i, nk_rng_normal(&rng), dt);
      }
      for (size_t j = 0; j < s.cols; j++)
        ((uint16_t *)in.mask)[j] =
            nk_f32_to_bf16(j % 9 == 4 ? -INFINITY : (float)nk_rng_normal(&rng));
      in.sink[0] = 0.0f, in.sink[1] = 1.5f;
      for (size_t i = 0; i < s.rows; i++)
        in.target[i] = i % 6 == 5 ? -100 : (int64_t)(nk_rng_u64(&rng) % s.cols);
      for (size_t a = 0; a < 5; a++) {
        const size_t cap =
            2 * (4 * (n * es + s.rows * 4) * 2 + 2 * n * es + 3 * (2 * s.rows * 4 + n * es));
        blob ref = {nk_t_alloc(cap), 0};
        NK_REQUIRE(ref.p && run(dt, s, algos[a], NK_ISA_SCALAR, 1, &in, &ref), "scalar run %s %s",
                   nk_dtype_name(dt), nk_softmax_algo_name(algos[a]));
        const size_t threads[] = {1, 2, 3, 8};
        for (size_t ii = 0; ii < 3; ii++)
          for (size_t ti = 0; ti < 4; ti++) {
            const nk_isa isa = isas[ii];
            if (!nk_isa_supported(isa) || (isa == NK_ISA_SCALAR && threads[ti] == 1)) continue;
            blob o = {nk_t_alloc(cap), 0};
            NK_CHECK(o.p && run(dt, s, algos[a], isa, threads[ti], &in, &o), "run failed");
            if (o.n != ref.n || memcmp(o.p, ref.p, ref.n) != 0) {
              size_t at = 0;
              while (at < ref.n && at < o.n && o.p[at] == ref.p[at]) at++;
              NK_CHECK(0,
                       "%s %s %zux%zu: %s with %zu threads differs from scalar "
                       "(byte %zu of %zu)",
                       nk_dtype_name(dt), nk_softmax_algo_name(algos[a]), s.rows, s.cols,
                       nk_isa_name(isa), threads[ti], at, ref.n);
            }
            free(o.p);
          }
        free(ref.p);
      }
      free(in.x), free(in.dy), free(in.mask), free(in.sink), free(in.target);
    }
}

NK_TEST(every_isa_and_thread_count) { check_all(); }

/* Report the paths this CPU cannot run as skipped (never as passed). */
NK_TEST(avx2_path_covered) {
  if (!nk_isa_supported(NK_ISA_AVX2)) NK_SKIP("this CPU cannot run the avx2 path");
}

NK_TEST(avx512_path_covered) {
  if (!nk_isa_supported(NK_ISA_AVX512)) NK_SKIP("this CPU cannot run the avx512 path");
}

int main(void) {
  NK_RUN(every_isa_and_thread_count);
  NK_RUN(avx2_path_covered);
  NK_RUN(avx512_path_covered);
  return nk_test_summary();
}
