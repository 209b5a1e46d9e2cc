/*
 * tests/consistency/optim.c — the reproducibility promise (DESIGN.md, CONVENTIONS C7) for the
 * optimizer and advantage hot paths: nk_adamp_step, nk_sgdp_step (every projection path: none,
 * channel view with short and with long rows, layer view long) and nk_grpo_advantages (small,
 * long and empty groups) give the same bits on every ISA path (scalar, avx2, avx512) and every
 * thread count (1, 2, 3), over several steps with the state carried. The runs are also checked
 * once against the float64 references (one step, the DRIFT bound of tests/ops/optim.c), so
 * the blocked sums of the long-row paths are covered for accuracy too. Paths this CPU cannot run
 * are reported as skipped. Weight norm and NaP (row-parallel, no kernels): the same bits for
 * every thread count.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

/* A tensor case: n elements, rows (0: never projected), how g relates to theta. */
typedef enum gkind { G_RANDOM, G_ORTHO_ROWS, G_ORTHO_LAYER } gkind;
typedef struct ocase {
  const char *name;
  size_t rows, cols;
  int shaped; /* rows > 0 passed to the step */
  gkind g;
  nk_optim_projection want;
} ocase;

static const ocase cases[] = {
    {"bias n 20003 (fused, no projection)", 1, 20003, 0, G_RANDOM, NK_OPTIM_PROJECTION_NONE},
    {"random 64 x 37 (not projected)", 64, 37, 1, G_RANDOM, NK_OPTIM_PROJECTION_NONE},
    {"channel 300 x 37 (short rows)", 300, 37, 1, G_ORTHO_ROWS, NK_OPTIM_PROJECTION_CHANNEL},
    {"channel 3 x 20011 (long rows)", 3, 20011, 1, G_ORTHO_ROWS, NK_OPTIM_PROJECTION_CHANNEL},
    {"channel 1 x 1050000 (long row, 2 rounds)", 1, 1050000, 1, G_ORTHO_ROWS,
     NK_OPTIM_PROJECTION_CHANNEL},
    {"layer 4 x 9001 (long)", 4, 9001, 1, G_ORTHO_LAYER, NK_OPTIM_PROJECTION_LAYER},
    {"layer 10 x 3001 (short rows, long layer)", 10, 3001, 1, G_ORTHO_LAYER,
     NK_OPTIM_PROJECTION_LAYER},
};

typedef struct tensors {
  float *theta, *g, *m, *v;
} tensors;

/* theta rows of norm ~1; g per kind (orthogonal per row: g_r minus its theta_r component;
 * orthogonal over the layer only: g_r = +-theta_r with an even number of rows). */
static void make_inputs(const ocase *c, int step, tensors *t) {
  const size_t n = c->rows * c->cols;
  nk_rng rng = {0x1234 + (uint64_t)step * 77 + c->cols};
  for (size_t r = 0; r < c->rows; r++) {
    float *th = t->theta + r * c->cols, *g = t->g + r * c->cols;
    if (step == 0) {
      double ss = 0.0;
      for (size_t j = 0; j < c->cols; j++) {
        const double x = nk_rng_normal(&rng);
        th[j] = (float)x;
        ss += x * x;
      }
      for (size_t j = 0; j < c->cols; j++) th[j] = (float)((double)th[j] / sqrt(ss));
    }
    double gt = 0.0, tt = 0.0;
    for (size_t j = 0; j < c->cols; j++) {
      g[j] = (float)(0.01 * nk_rng_normal(&rng));
      gt += (double)g[j] * th[j];
      tt += (double)th[j] * th[j];
    }
    for (size_t j = 0; j < c->cols; j++) {
      if (c->g == G_ORTHO_ROWS) g[j] = (float)((double)g[j] - gt / tt * th[j]);
      if (c->g == G_ORTHO_LAYER) g[j] = (r % 2 ? -0.01f : 0.01f) * th[j];
    }
  }
  (void)n;
}

/* Bitwise equal, except that any NaN equals any NaN (NaN payloads and signs are outside the
 * promise: CONVENTIONS C7). */
static int same_bits(const float *a, const float *b, size_t n, size_t *where) {
  for (size_t i = 0; i < n; i++)
    if (memcmp(&a[i], &b[i], sizeof(float)) != 0 && !(isnan(a[i]) && isnan(b[i]))) {
      *where = i;
      return 0;
    }
  return 1;
}

/* Runs STEPS steps of AdamP (adam) or SGDP on case c with ctx; returns the final tensors and
 * the projection of each step in proj[]. */
enum { STEPS = 2 };
static int run_case(nk_context *ctx, const ocase *c, int adam, int variant, tensors *out,
                    nk_optim_projection proj[STEPS]) {
  const size_t n = c->rows * c->cols;
  tensors in = {nk_t_alloc(n * 4), nk_t_alloc(n * 4), NULL, NULL};
  int64_t step = 0;
  for (int s = 0; s < STEPS; s++) {
    make_inputs(c, s, s == 0 ? out : &in);
    if (s > 0) memcpy(out->g, in.g, n * 4);
    if (s == 0 && variant == 2) out->g[n / 2] = NAN; /* a NaN element: no projection */
    nk_status st;
    if (adam) {
      nk_adamp_desc d = nk_adamp_desc_default();
      d.lr = 0.01;
      d.weight_decay = variant ? 0.1 : 0.0;
      d.nesterov = variant == 1;
      st = nk_adamp_step(ctx, &d, n, c->shaped ? c->rows : 0, out->theta, out->g, out->m,
                         out->v, &step, &proj[s]);
    } else {
      nk_sgdp_desc d = nk_sgdp_desc_default(0.1);
      d.momentum = 0.9;
      d.dampening = variant == 1 ? 0.0 : 0.1;
      d.weight_decay = variant ? 1e-3 : 0.0;
      d.nesterov = variant == 1;
      st = nk_sgdp_step(ctx, &d, n, c->shaped ? c->rows : 0, out->theta, out->g, out->m,
                        &proj[s]);
    }
    if (st != NK_OK) {
      free(in.theta);
      free(in.g);
      return 0;
    }
  }
  free(in.theta);
  free(in.g);
  return 1;
}

static void alloc_t(tensors *t, size_t n) {
  t->theta = nk_t_alloc(n * 4);
  t->g = nk_t_alloc(n * 4);
  t->m = nk_t_alloc(n * 4);
  t->v = nk_t_alloc(n * 4);
}
static void free_t(tensors *t) {
  free(t->theta);
  free(t->g);
  free(t->m);
  free(t->v);
}

static const nk_isa isas[3] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
static const char *isa_names[3] = {"scalar", "avx2", "avx512"};
static const size_t thread_counts[3] = {1, 2, 3};

static void check_optimizer(int adam) {
  int skipped = 0;
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    const ocase *c = &cases[ci];
    const size_t n = c->rows * c->cols;
    const int big = n > 1000000; /* the two-round case: AdamP only, 1 and 3 threads (time) */
    if (big && !adam) continue;
    for (int variant = 0; variant < (big ? 1 : 3); variant++) {
      tensors base;
      alloc_t(&base, n);
      nk_optim_projection bproj[STEPS];
      NK_REQUIRE(run_case(NULL, c, adam, variant, &base, bproj), "%s: base run", c->name);
      if (variant != 2)
        NK_CHECK(bproj[0] == c->want, "%s variant %d: projection %d, want %d (test inputs)",
                 c->name, variant, (int)bproj[0], (int)c->want);
      else
        NK_CHECK(bproj[0] == NK_OPTIM_PROJECTION_NONE, "%s: NaN step projected", c->name);
      for (int ii = 0; ii < 3; ii++) {
        if (!nk_isa_supported(isas[ii])) {
          skipped = 1;
          continue;
        }
        for (int ti = 0; ti < 3; ti++) {
          if (big && ti == 1) continue;
          nk_context *ctx = NULL;
          nk_threadpool *pool = NULL;
          NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "ctx");
          NK_REQUIRE(nk_context_set_isa(ctx, isas[ii]) == NK_OK, "isa");
          if (thread_counts[ti] > 1) {
            NK_REQUIRE(nk_threadpool_create(thread_counts[ti], &pool) == NK_OK, "pool");
            nk_context_set_threadpool(ctx, pool);
          }
          tensors t;
          alloc_t(&t, n);
          nk_optim_projection proj[STEPS];
          NK_CHECK(run_case(ctx, c, adam, variant, &t, proj), "run");
          size_t w = 0;
          NK_CHECK(same_bits(t.theta, base.theta, n, &w), "%s %s v%d %s x%zu: theta[%zu]",
                   adam ? "adamp" : "sgdp", c->name, variant, isa_names[ii], thread_counts[ti], w);
          NK_CHECK(same_bits(t.m, base.m, n, &w), "%s %s v%d %s x%zu: m[%zu]",
                   adam ? "adamp" : "sgdp", c->name, variant, isa_names[ii], thread_counts[ti], w);
          if (adam)
            NK_CHECK(same_bits(t.v, base.v, n, &w), "adamp %s v%d %s x%zu: v[%zu]", c->name,
                     variant, isa_names[ii], thread_counts[ti], w);
          NK_CHECK(memcmp(proj, bproj, sizeof proj) == 0, "%s: projections differ", c->name);
          free_t(&t);
          nk_context_destroy(ctx);
          nk_threadpool_destroy(pool);
        }
      }
      free_t(&base);
    }
  }
  if (skipped) NK_SKIP("some ISA paths cannot run on this CPU (the others agreed)");
}

NK_TEST(adamp_bits_across_isas_and_threads) { check_optimizer(1); }
NK_TEST(sgdp_bits_across_isas_and_threads) { check_optimizer(0); }

/* One step of each case against the float64 references (accuracy of the blocked sums). */
NK_TEST(optim_long_rows_vs_reference) {
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    const ocase *c = &cases[ci];
    const size_t n = c->rows * c->cols;
    for (int adam = n > 1000000; adam < 2; adam++) {
      tensors t;
      alloc_t(&t, n);
      make_inputs(c, 0, &t);
      double *p = malloc(n * 8), *g = malloc(n * 8), *m = calloc(n, 8), *v = calloc(n, 8);
      for (size_t i = 0; i < n; i++) {
        p[i] = t.theta[i];
        g[i] = t.g[i];
      }
      nk_optim_projection proj;
      int rproj;
      if (adam) {
        nk_adamp_desc d = nk_adamp_desc_default();
        d.weight_decay = 0.1;
        int64_t step = 0;
        double rstep = 0.0;
        NK_REQUIRE(nk_adamp_step(NULL, &d, n, c->shaped ? c->rows : 0, t.theta, t.g, t.m, t.v,
                                 &step, &proj) == NK_OK, "adamp");
        const nk_ref_adamp_hp hp = {d.lr, d.beta1, d.beta2, d.eps, d.weight_decay, d.delta,
                                    d.wd_ratio, 0};
        rproj = nk_ref_adamp_step(n, c->shaped ? c->rows : 0, &hp, p, g, m, v, &rstep);
      } else {
        nk_sgdp_desc d = nk_sgdp_desc_default(0.1);
        d.momentum = 0.9;
        d.weight_decay = 1e-3;
        NK_REQUIRE(nk_sgdp_step(NULL, &d, n, c->shaped ? c->rows : 0, t.theta, t.g, t.m,
                                &proj) == NK_OK, "sgdp");
        const nk_ref_sgdp_hp hp = {d.lr, d.momentum, d.dampening, d.eps, d.weight_decay,
                                   d.delta, d.wd_ratio, 0};
        rproj = nk_ref_sgdp_step(n, c->shaped ? c->rows : 0, &hp, p, g, m);
      }
      NK_CHECK((int)proj == rproj, "%s %s: projection %d, reference %d", c->name,
               adam ? "adamp" : "sgdp", (int)proj, rproj);
      double worst = 0.0, scale = 0.0;
      for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(p[i]));
      for (size_t i = 0; i < n; i++) {
        /* the DRIFT bound of tests/ops/optim.c: the library rounds the state to f32 before
         * computing the direction, the reference does not */
        const double b = 2e-5 * (fabs(p[i]) + scale);
        const double e = fabs((double)t.theta[i] - p[i]) / b;
        if (!(e <= worst)) worst = e;
      }
      NK_CHECK(worst <= 1.0, "%s %s: theta worst %.3g of the bound", c->name,
               adam ? "adamp" : "sgdp", worst);
      free(p);
      free(g);
      free(m);
      free(v);
      free_t(&t);
    }
  }
}

NK_TEST(grpo_bits_across_isas_and_threads) {
  /* 5000 groups: sizes 0..40 and a few long ones (chunks of 1024 groups, rounds). */
  enum { GROUPS = 5000 };
  size_t *sizes = malloc(GROUPS * sizeof(size_t)), n = 0;
  nk_rng rng = {99};
  for (size_t q = 0; q < GROUPS; q++) {
    sizes[q] = q % 997 == 5 ? 3000 + q : (size_t)(nk_rng_u64(&rng) % 41);
    n += sizes[q];
  }
  float *r = malloc(n * 4), *base = malloc(n * 4), *a = malloc(n * 4);
  for (size_t i = 0; i < n; i++) r[i] = (float)(i % 7 == 0 ? 1.0 : nk_rng_normal(&rng));
  int skipped = 0;
  for (int mode = 0; mode < 3; mode++) {
    const int unbiased = mode != 1, scale = mode != 2;
    NK_REQUIRE(nk_grpo_advantages(NULL, GROUPS, sizes, r, 1e-6f, unbiased, scale, base) ==
                   NK_OK, "base");
    for (int ii = 0; ii < 3; ii++) {
      if (!nk_isa_supported(isas[ii])) {
        skipped = 1;
        continue;
      }
      for (int ti = 0; ti < 3; ti++) {
        nk_context *ctx = NULL;
        nk_threadpool *pool = NULL;
        NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "ctx");
        NK_REQUIRE(nk_context_set_isa(ctx, isas[ii]) == NK_OK, "isa");
        if (thread_counts[ti] > 1) {
          NK_REQUIRE(nk_threadpool_create(thread_counts[ti], &pool) == NK_OK, "pool");
          nk_context_set_threadpool(ctx, pool);
        }
        memset(a, 0x5A, n * 4);
        NK_CHECK(nk_grpo_advantages(ctx, GROUPS, sizes, r, 1e-6f, unbiased, scale, a) == NK_OK,
                 "run");
        size_t w = 0;
        NK_CHECK(same_bits(a, base, n, &w), "grpo mode %d %s x%zu: adv[%zu]", mode,
                 isa_names[ii], thread_counts[ti], w);
        nk_context_destroy(ctx);
        nk_threadpool_destroy(pool);
      }
    }
    /* and against the float64 reference: 1 ulp of f32 + 1e-12 */
    double *rd = malloc(n * 8), *ref = malloc(n * 8);
    for (size_t i = 0; i < n; i++) rd[i] = r[i];
    nk_ref_grpo(GROUPS, sizes, rd, 1e-6, unbiased, scale, ref);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
      const double e = fabs((double)base[i] - ref[i]) /
                       (nk_t_ulp(ref[i], NK_DTYPE_F32) + 1e-12 * (1.0 + fabs(ref[i])));
      if (!(e <= worst)) worst = e;
    }
    NK_CHECK(worst <= 1.0, "grpo mode %d vs reference: worst %.3g", mode, worst);
    free(rd);
    free(ref);
  }
  free(sizes);
  free(r);
  free(base);
  free(a);
  if (skipped) NK_SKIP("some ISA paths cannot run on this CPU (the others agreed)");
}

/* Weight norm (forward, backward) and NaP (norms, projection, per channel and per layer) run
 * their rows on the pool: the same bits with 1, 2 and 3 threads as without a context. */
static void wn_nap_run(nk_context *ctx, size_t R, size_t C, float *out) {
  const size_t n = R * C;
  nk_rng rng = {0xABCDull + R * 31 + C};
  float *v = nk_t_alloc(n * 4), *g = nk_t_alloc(R * 4), *dw = nk_t_alloc(n * 4);
  for (size_t i = 0; i < n; i++) v[i] = (float)nk_rng_normal(&rng), dw[i] = (float)nk_rng_normal(&rng);
  for (size_t r = 0; r < R; r++) g[r] = (float)(1.0 + nk_rng_uniform(&rng));
  if (R > 2) v[2 * C + 1] = NAN; /* a NaN row */
  float *w = out, *nrm = out + n, *dv = out + n + R, *dg = out + 2 * n + R;
  float *wc = out + 2 * n + 2 * R, *wl = out + 3 * n + 2 * R;
  double rho[4096], rl, before[4096], bl;
  NK_CHECK(nk_weight_norm_fwd(ctx, R, C, 1e-6f, v, g, w, nrm) == NK_OK, "wn fwd");
  NK_CHECK(nk_weight_norm_bwd(ctx, R, C, 1e-6f, v, g, dw, dv, dg) == NK_OK, "wn bwd");
  NK_CHECK(nk_nap_norms(ctx, NK_NAP_PER_CHANNEL, R, C, v, rho) == NK_OK, "nap norms");
  NK_CHECK(nk_nap_norms(ctx, NK_NAP_PER_LAYER, R, C, v, &rl) == NK_OK, "nap norms layer");
  for (size_t r = 0; r < R; r++) rho[r] = isfinite(rho[r]) ? 0.5 * rho[r] : 1.0;
  memcpy(wc, dw, n * 4), memcpy(wl, dw, n * 4);
  NK_CHECK(nk_nap_project(ctx, NK_NAP_PER_CHANNEL, R, C, wc, rho, before) == NK_OK, "project");
  rl = 3.0;
  NK_CHECK(nk_nap_project(ctx, NK_NAP_PER_LAYER, R, C, wl, &rl, &bl) == NK_OK, "project layer");
  memcpy(out + 4 * n + 2 * R, before, R * sizeof(double));
  memcpy((char *)(out + 4 * n + 2 * R) + R * sizeof(double), &bl, sizeof bl);
  free(v), free(g), free(dw);
}

NK_TEST(weight_norm_nap_bits_across_threads) {
  static const size_t shapes[][2] = {{300, 37}, {3, 20011}, {1, 70001}, {2000, 5}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    const size_t R = shapes[s][0], C = shapes[s][1];
    const size_t words = 4 * R * C + 2 * R + 2 * R + 2; /* floats, doubles as two words */
    float *base = nk_t_alloc(words * 4), *got = nk_t_alloc(words * 4);
    wn_nap_run(NULL, R, C, base);
    for (size_t th = 1; th <= 3; th++) {
      nk_context *ctx = NULL;
      nk_threadpool *pool = NULL;
      NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "ctx");
      if (th > 1) {
        NK_REQUIRE(nk_threadpool_create(th, &pool) == NK_OK, "pool");
        nk_context_set_threadpool(ctx, pool);
      }
      memset(got, 0, words * 4);
      wn_nap_run(ctx, R, C, got);
      size_t where = 0;
      NK_CHECK(same_bits(got, base, words, &where), "%zux%zu, %zu threads: word %zu differs", R,
               C, th, where);
      nk_context_destroy(ctx);
      nk_threadpool_destroy(pool);
    }
    free(base), free(got);
  }
}

int main(void) {
  NK_RUN(adamp_bits_across_isas_and_threads);
  NK_RUN(sgdp_bits_across_isas_and_threads);
  NK_RUN(optim_long_rows_vs_reference);
  NK_RUN(grpo_bits_across_isas_and_threads);
  NK_RUN(weight_norm_nap_bits_across_threads);
  return nk_test_summary();
}
