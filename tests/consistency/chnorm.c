/*
 * tests/consistency/chnorm.c — the reproducibility promise (DESIGN.md, CONVENTIONS C7) for the
 * channel norms and the moments: BatchNorm training (add+ReLU, running statistics) and
 * inference forward and backward, the split entry points (batchnorm_moments, bwd_reduce),
 * GroupNorm, InstanceNorm (training with running statistics), moments of rows and columns and
 * LayerNorm with given moments give the same bits on every ISA path (scalar, avx2, avx512) and
 * every thread count (1, 2, 3, 5), on shapes that make several chunks:
 * NCS 8 x 16 x 3000 and NSC 4 x 4000 x 48 in f32, smaller ones in bf16/f16.
 * Paths this CPU cannot run are reported as skipped.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "chnorm_util.h"
#include "test.h"
#include "util.h"

typedef struct shape {
  size_t n, c, s, groups;
  nk_layout layout;
  nk_dtype dt;
} shape;

static const shape shapes[] = {
    {8, 16, 3000, 4, NK_LAYOUT_NCS, NK_DTYPE_F32},
    {4, 48, 4000, 8, NK_LAYOUT_NSC, NK_DTYPE_F32},
    {3, 6, 2100, 3, NK_LAYOUT_NCS, NK_DTYPE_BF16},
    {2, 40, 1100, 5, NK_LAYOUT_NSC, NK_DTYPE_F16},
};

/* Every output of one run, one buffer each. */
enum {
  O_BN_Y, O_BN_SM, O_BN_SR, O_BN_RM, O_BN_RV, O_BN_DX, O_BN_DZ, O_BN_DG, O_BN_DB, /* training */
  O_BI_Y, O_BI_DX, O_BI_DG, O_BI_DB,                                             /* inference */
  O_BN_MOM, O_BN_SUMS,
  O_GN_Y, O_GN_MEAN, O_GN_RSTD, O_GN_DX, O_GN_DG, O_GN_DB,
  O_IN_Y, O_IN_MEAN, O_IN_RSTD, O_IN_RM, O_IN_RV, O_IN_DX, O_IN_DG, O_IN_DB,
  O_MOM_ROWS, O_MOM_COLS, O_LN_Y, O_LN_MEAN, O_LN_RSTD,
  O_COUNT
};
static const char *out_names[O_COUNT] = {
    "bn y", "bn save_mean", "bn save_rstd", "bn running_mean", "bn running_var", "bn dx", "bn dz",
    "bn dgamma", "bn dbeta", "bn inference y", "bn inference dx", "bn inference dgamma",
    "bn inference dbeta", "batchnorm_moments", "bwd_reduce sums", "gn y", "gn mean", "gn rstd",
    "gn dx", "gn dgamma", "gn dbeta", "in y", "in mean", "in rstd", "in running_mean",
    "in running_var", "in dx", "in dgamma", "in dbeta", "moments_rows", "moments_cols",
    "layernorm_fwd_moments y", "layernorm mean", "layernorm rstd"};

typedef struct outputs {
  void *p[O_COUNT];
  size_t bytes[O_COUNT];
} outputs;

typedef struct inputs {
  void *x, *z, *dy;
  float *gamma, *beta, *rm, *rv;
} inputs;

static int alloc_outputs(const shape *s, outputs *o) {
  const size_t T = s->n * s->c * s->s, es = nk_dtype_size(s->dt), C = s->c;
  const size_t NG = s->n * s->groups, NC = s->n * s->c;
  const size_t rows = s->layout == NK_LAYOUT_NCS ? s->n * s->c : s->n * s->s;
  const size_t cols = s->layout == NK_LAYOUT_NCS ? s->s : s->c;
  for (int k = 0; k < O_COUNT; k++) o->bytes[k] = C * 4;
  o->bytes[O_BN_Y] = o->bytes[O_BN_DX] = o->bytes[O_BN_DZ] = T * es;
  o->bytes[O_BI_Y] = o->bytes[O_BI_DX] = o->bytes[O_GN_Y] = o->bytes[O_GN_DX] = T * es;
  o->bytes[O_IN_Y] = o->bytes[O_IN_DX] = o->bytes[O_LN_Y] = T * es;
  o->bytes[O_BN_MOM] = C * sizeof(nk_moments);
  o->bytes[O_BN_SUMS] = 3 * C * sizeof(double);
  o->bytes[O_GN_MEAN] = o->bytes[O_GN_RSTD] = NG * 4;
  o->bytes[O_IN_MEAN] = o->bytes[O_IN_RSTD] = NC * 4;
  o->bytes[O_MOM_ROWS] = rows * sizeof(nk_moments);
  o->bytes[O_MOM_COLS] = cols * sizeof(nk_moments);
  o->bytes[O_LN_MEAN] = o->bytes[O_LN_RSTD] = rows * 4;
  int ok = 1;
  for (int k = 0; k < O_COUNT; k++) {
    o->p[k] = nk_t_alloc(o->bytes[k]);
    if (o->p[k] == NULL) ok = 0;
  }
  return ok;
}

static void free_outputs(outputs *o) {
  for (int k = 0; k < O_COUNT; k++) free(o->p[k]);
}

/* Runs every operator with ctx; returns 0 and names the call on failure. */
static int run_all(nk_context *ctx, const shape *s, const inputs *in, outputs *o, void *ws,
                   size_t wsb, const char **failed) {
  const size_t C = s->c;
  const size_t rows = s->layout == NK_LAYOUT_NCS ? s->n * s->c : s->n * s->s;
  const size_t cols = s->layout == NK_LAYOUT_NCS ? s->s : s->c;
  nk_chnorm_desc d = nk_chnorm_desc_dense(s->n, s->c, s->s, s->layout, s->dt, 1e-5f);
  d.groups = s->groups;
  memcpy(o->p[O_BN_RM], in->rm, C * 4);
  memcpy(o->p[O_BN_RV], in->rv, C * 4);
  memcpy(o->p[O_IN_RM], in->rm, C * 4);
  memcpy(o->p[O_IN_RV], in->rv, C * 4);
  void **p = o->p;
#define STEP(call)                                                                               \
  do {                                                                                           \
    if ((call) != NK_STATUS_OK) {                                                                \
      *failed = #call;                                                                           \
      return 0;                                                                                  \
    }                                                                                            \
  } while (0)
  /* BatchNorm training with add+ReLU */
  d.flags = NK_CHNORM_TRAINING | NK_CHNORM_ADD_RELU;
  STEP(nk_batchnorm_fwd(ctx, &d, in->x, in->z, in->gamma, in->beta, p[O_BN_RM], p[O_BN_RV], NULL,
                        p[O_BN_Y], p[O_BN_SM], p[O_BN_SR], ws, wsb));
  STEP(nk_batchnorm_bwd(ctx, &d, in->x, p[O_BN_Y], in->gamma, p[O_BN_SM], p[O_BN_SR], in->dy,
                        p[O_BN_DX], p[O_BN_DZ], p[O_BN_DG], p[O_BN_DB], ws, wsb));
  STEP(nk_batchnorm_moments(ctx, &d, in->x, p[O_BN_MOM], ws, wsb));
  STEP(nk_batchnorm_bwd_reduce(ctx, &d, in->x, p[O_BN_Y], p[O_BN_SM], in->dy, p[O_BN_SUMS], ws,
                               wsb));
  /* BatchNorm inference */
  d.flags = 0;
  float *isr = p[O_BI_DG]; /* scratch for the inference save_rstd: overwritten below */
  STEP(nk_batchnorm_fwd(ctx, &d, in->x, NULL, in->gamma, in->beta, in->rm, in->rv, NULL,
                        p[O_BI_Y], NULL, isr, ws, wsb));
  float *isr2 = nk_t_alloc(C * 4);
  if (isr2 == NULL) return 0;
  memcpy(isr2, isr, C * 4);
  const nk_status st = nk_batchnorm_bwd(ctx, &d, in->x, NULL, in->gamma, in->rm, isr2, in->dy,
                                        p[O_BI_DX], NULL, p[O_BI_DG], p[O_BI_DB], ws, wsb);
  free(isr2);
  STEP(st);
  /* GroupNorm */
  STEP(nk_groupnorm_fwd(ctx, &d, in->x, in->gamma, in->beta, p[O_GN_Y], p[O_GN_MEAN],
                        p[O_GN_RSTD]));
  STEP(nk_groupnorm_bwd(ctx, &d, in->x, in->gamma, p[O_GN_MEAN], p[O_GN_RSTD], in->dy, p[O_GN_DX],
                        p[O_GN_DG], p[O_GN_DB], ws, wsb));
  /* InstanceNorm, training with running statistics */
  d.flags = NK_CHNORM_TRAINING;
  STEP(nk_instancenorm_fwd(ctx, &d, in->x, in->gamma, in->beta, p[O_IN_RM], p[O_IN_RV], p[O_IN_Y],
                           p[O_IN_MEAN], p[O_IN_RSTD]));
  STEP(nk_instancenorm_bwd(ctx, &d, 0, in->x, in->gamma, p[O_IN_MEAN], p[O_IN_RSTD], in->dy,
                           p[O_IN_DX], p[O_IN_DG], p[O_IN_DB], ws, wsb));
  /* moments of the 2-D view, and LayerNorm of its rows with them */
  STEP(nk_moments_rows(ctx, rows, cols, s->dt, in->x, (ptrdiff_t)cols, p[O_MOM_ROWS]));
  STEP(nk_moments_cols(ctx, rows, cols, s->dt, in->x, (ptrdiff_t)cols, p[O_MOM_COLS]));
  nk_norm_desc ln = nk_norm_desc_dense(rows, cols, s->dt, 1e-5f);
  STEP(nk_layernorm_fwd_moments(ctx, &ln, p[O_MOM_ROWS], in->x, NULL, NULL, p[O_LN_Y],
                                p[O_LN_MEAN], p[O_LN_RSTD]));
#undef STEP
  return 1;
}

static size_t workspace_bytes(const shape *s) {
  nk_chnorm_desc d = nk_chnorm_desc_dense(s->n, s->c, s->s, s->layout, s->dt, 1e-5f);
  d.groups = s->groups;
  d.flags = NK_CHNORM_TRAINING | NK_CHNORM_ADD_RELU;
  size_t a = 0, b = 0, g = 0, i = 0;
  nk_batchnorm_fwd_workspace_size(&d, &a);
  nk_batchnorm_bwd_workspace_size(&d, &b);
  nk_groupnorm_bwd_workspace_size(&d, &g);
  nk_instancenorm_bwd_workspace_size(&d, &i);
  size_t m = a > b ? a : b;
  m = m > g ? m : g;
  return m > i ? m : i;
}

static void check_isa(nk_isa isa) {
  for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
    const shape *s = &shapes[k];
    const size_t T = s->n * s->c * s->s, es = nk_dtype_size(s->dt), C = s->c;
    const nk_ref_chshape t = ch_dense(s->n, s->c, s->s, s->layout);
    inputs in = {nk_t_alloc(T * es), nk_t_alloc(T * es), nk_t_alloc(T * es), nk_t_alloc(C * 4),
                 nk_t_alloc(C * 4), nk_t_alloc(C * 4), nk_t_alloc(C * 4)};
    const size_t wsb = workspace_bytes(s);
    void *ws = nk_t_alloc(wsb);
    NK_REQUIRE(in.x && in.z && in.dy && in.gamma && in.beta && in.rm && in.rv && ws, "alloc");
    nk_rng rng = {k * 977 + 5};
    /* channel classes: normal, ill-conditioned, offset, huge (f32) */
    for (size_t n = 0; n < s->n; n++)
      for (size_t c = 0; c < C; c++)
        for (size_t i = 0; i < s->s; i++) {
          double v = nk_rng_normal(&rng);
          if (c % 4 == 1) v = s->dt == NK_DTYPE_F32 ? 1e4 + 1e-2 * v : 300.0 + v;
          if (c % 4 == 2) v = 3.0 + 0.5 * v;
          if (c % 4 == 3 && s->dt == NK_DTYPE_F32) v *= 1e25;
          const size_t idx = nk_ref_chidx(&t, n, c, i);
          nk_t_set(in.x, idx, v, s->dt);
          nk_t_set(in.z, idx, 0.5 * nk_rng_normal(&rng), s->dt);
          nk_t_set(in.dy, idx, nk_rng_normal(&rng), s->dt);
        }
    for (size_t c = 0; c < C; c++) {
      in.gamma[c] = (float)(1 + 0.3 * nk_rng_normal(&rng));
      in.beta[c] = (float)(0.3 * nk_rng_normal(&rng));
      in.rm[c] = (float)(0.2 * nk_rng_normal(&rng));
      in.rv[c] = (float)(0.5 + nk_rng_uniform(&rng));
    }
    outputs ref;
    NK_REQUIRE(alloc_outputs(s, &ref), "alloc");
    const char *failed = "";
    ch_ctx base = ch_ctx_make(NK_ISA_SCALAR, 1);
    NK_REQUIRE(base.ctx && run_all(base.ctx, s, &in, &ref, ws, wsb, &failed), "scalar run: %s: %s",
               failed, nk_context_message(base.ctx));
    ch_ctx_free(&base);
    const size_t threads[] = {1, 2, 3, 5};
    for (size_t ti = 0; ti < 4; ti++) {
      if (isa == NK_ISA_SCALAR && threads[ti] == 1) continue;
      outputs o;
      NK_REQUIRE(alloc_outputs(s, &o), "alloc");
      ch_ctx cx = ch_ctx_make(isa, threads[ti]);
      NK_REQUIRE(cx.ctx, "context for %s", nk_isa_name(isa));
      NK_CHECK(run_all(cx.ctx, s, &in, &o, ws, wsb, &failed), "%s, %zu threads: %s failed: %s",
               nk_isa_name(isa), threads[ti], failed, nk_context_message(cx.ctx));
      for (int q = 0; q < O_COUNT; q++) {
        if (memcmp(ref.p[q], o.p[q], ref.bytes[q]) == 0) continue;
        size_t b = 0;
        while (((unsigned char *)ref.p[q])[b] == ((unsigned char *)o.p[q])[b]) b++;
        NK_CHECK(0, "%s %s n%zu c%zu s%zu: %s with %zu threads differs from scalar in %s (first "
                    "differing byte %zu of %zu)",
                 nk_layout_name(s->layout), nk_dtype_name(s->dt), s->n, s->c, s->s,
                 nk_isa_name(isa), threads[ti], out_names[q], b, ref.bytes[q]);
      }
      ch_ctx_free(&cx);
      free_outputs(&o);
    }
    free_outputs(&ref);
    free(in.x), free(in.z), free(in.dy), free(in.gamma), free(in.beta), free(in.rm), free(in.rv);
    free(ws);
  }
}

NK_TEST(scalar_all_thread_counts) { check_isa(NK_ISA_SCALAR); }

NK_TEST(avx2_matches_scalar) {
  if (!nk_isa_supported(NK_ISA_AVX2)) NK_SKIP("this CPU cannot run the avx2 path");
  check_isa(NK_ISA_AVX2);
}

NK_TEST(avx512_matches_scalar) {
  if (!nk_isa_supported(NK_ISA_AVX512)) NK_SKIP("this CPU cannot run the avx512 path");
  check_isa(NK_ISA_AVX512);
}

int main(void) {
  NK_RUN_TIMED(scalar_all_thread_counts);
  NK_RUN_TIMED(avx2_matches_scalar);
  NK_RUN_TIMED(avx512_matches_scalar);
  return nk_test_summary();
}
