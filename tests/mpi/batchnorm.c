/*
 * tests/mpi/batchnorm.c — synchronized BatchNorm (nk_mpi_batchnorm_fwd/bwd) on 1, 2 or 3 ranks.
 *
 * Every rank builds the same global batch (seeded), takes its own samples, and compares what
 * the distributed call gives with (a) the float64 reference of the whole batch and (b) the
 * single-process nk_batchnorm_fwd/bwd of the whole batch, computed on every rank. Bounds
 * (docs/ops/distributed.md; the core's bounds, docs/ops/batchnorm.md):
 *   y:        |y - ref| <= 2e-6 * max|ref| of the channel;   vs single-process: 4e-6 * max|ref|
 *   dx:       |dx - ref| <= 4e-6 * S_c, S_c = rstd * max|g dy'| * max(1, max|xhat|) of the
 *             channel;                                       vs single-process: 8e-6 * S_c
 *   dgamma:   4e-6 * sum|dy'| * max|xhat| + 1 ulp;  dbeta: 4e-6 * sum|dy'| + 1 ulp  (x2 vs
 *             single-process)
 *   mean:     1 ulp(mean) + 1e-6 * std;  rstd, running_var: relative 2e-6;  running_mean as mean
 * Splits of the batch over the ranks: "uneven" (different sizes, and with 3 ranks rank 1 has
 * no samples) and "last" (every sample on the last rank, the others empty: the results must
 * be bit-identical to the single-process ones). Every run is repeated, on 2 threads: the two
 * runs must give the same bits, and the statistics, running estimates and dgamma/dbeta must be the same bits
 * on every rank.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpi_test.h"
#include "normkit_mpi.h"
#include "util.h"

enum split { SPLIT_UNEVEN, SPLIT_LAST };

/* Samples of rank r out of N for the split: [*first, *first + *count). */
static void rank_samples(enum split sp, int r, int P, size_t N, size_t *first, size_t *count) {
  size_t w[64], W = 0;
  for (int q = 0; q < P; q++) {
    if (sp == SPLIT_LAST)
      w[q] = q == P - 1;
    else
      w[q] = (P >= 3 && q == 1) ? 0 : (size_t)(q + 1); /* rank 1 empty with 3+ ranks */
    W += w[q];
  }
  size_t start = 0;
  for (int q = 0; q < P; q++) {
    size_t c = N * w[q] / W;
    if (q == P - 1) c = N - start;
    if (q == r) {
      *first = start;
      *count = c;
      return;
    }
    start += c;
  }
}

typedef struct bn_case {
  const char *name;
  nk_layout layout;
  size_t N, C, S;
  int illcond;    /* mean 1e4, std 1e-2 per channel */
  uint32_t flags; /* added to NK_CHNORM_TRAINING */
} bn_case;

typedef struct bn_run { /* the outputs of one forward + backward */
  float *y, *save_mean, *save_rstd, *rm, *rv, *dx, *dgamma, *dbeta;
  int64_t nbt;
} bn_run;

static void run_alloc(bn_run *o, size_t elems, size_t C) {
  o->y = nk_t_alloc(elems * 4);
  o->dx = nk_t_alloc(elems * 4);
  o->save_mean = nk_t_alloc(C * 4);
  o->save_rstd = nk_t_alloc(C * 4);
  o->rm = nk_t_alloc(C * 4);
  o->rv = nk_t_alloc(C * 4);
  o->dgamma = nk_t_alloc(C * 4);
  o->dbeta = nk_t_alloc(C * 4);
}
static void run_free(bn_run *o) {
  free(o->y), free(o->dx), free(o->save_mean), free(o->save_rstd), free(o->rm), free(o->rv);
  free(o->dgamma), free(o->dbeta);
}
static void run_init_running(bn_run *o, size_t C) {
  for (size_t c = 0; c < C; c++) o->rm[c] = 0.1f * (float)c, o->rv[c] = 1.0f + 0.25f * (float)c;
  o->nbt = 5;
}
/* 1 if the per-channel outputs (everything but y and dx) have the same bits. */
static int same_channel_outputs(const bn_run *a, const bn_run *b, size_t C) {
  return memcmp(a->save_mean, b->save_mean, C * 4) == 0 &&
         memcmp(a->save_rstd, b->save_rstd, C * 4) == 0 && memcmp(a->rm, b->rm, C * 4) == 0 &&
         memcmp(a->rv, b->rv, C * 4) == 0 && memcmp(a->dgamma, b->dgamma, C * 4) == 0 &&
         memcmp(a->dbeta, b->dbeta, C * 4) == 0 && a->nbt == b->nbt;
}
static int same_everywhere(const bn_run *a, size_t C) {
  int ok = 1;
  ok &= nk_mpi_t_same_everywhere(MPI_COMM_WORLD, a->save_mean, C * 4);
  ok &= nk_mpi_t_same_everywhere(MPI_COMM_WORLD, a->save_rstd, C * 4);
  ok &= nk_mpi_t_same_everywhere(MPI_COMM_WORLD, a->rm, C * 4);
  ok &= nk_mpi_t_same_everywhere(MPI_COMM_WORLD, a->rv, C * 4);
  ok &= nk_mpi_t_same_everywhere(MPI_COMM_WORLD, a->dgamma, C * 4);
  ok &= nk_mpi_t_same_everywhere(MPI_COMM_WORLD, a->dbeta, C * 4);
  ok &= nk_mpi_t_same_everywhere(MPI_COMM_WORLD, &a->nbt, sizeof a->nbt);
  return ok;
}

/* Index of (n, c, s) in a dense tensor of the layout. */
static size_t at(nk_layout L, size_t C, size_t S, size_t n, size_t c, size_t s) {
  return L == NK_LAYOUT_NCS ? (n * C + c) * S + s : (n * S + s) * C + c;
}

/* The distributed forward + backward on this rank's samples. */
static nk_status run_mpi(const bn_case *k, const nk_chnorm_desc *dl, const float *x,
                         const float *gamma, const float *beta, const float *dy, bn_run *o,
                         nk_context *ctx) {
  run_init_running(o, k->C);
  nk_status st = nk_mpi_batchnorm_fwd(ctx, MPI_COMM_WORLD, dl, x, NULL, gamma, beta, o->rm,
                                      o->rv, &o->nbt, o->y, o->save_mean, o->save_rstd);
  NK_MPI_CHECK(st == NK_OK, "%s fwd: %s (%s)", k->name, nk_status_string(st),
               nk_context_message(ctx));
  nk_status st2 = nk_mpi_batchnorm_bwd(ctx, MPI_COMM_WORLD, dl, x, o->y, gamma, o->save_mean,
                                       o->save_rstd, dy, o->dx, NULL, o->dgamma, o->dbeta);
  NK_MPI_CHECK(st2 == NK_OK, "%s bwd: %s (%s)", k->name, nk_status_string(st2),
               nk_context_message(ctx));
  return st != NK_OK ? st : st2;
}

static double ratio(double got, double ref, double bound) {
  if (isnan(ref)) return isnan(got) ? 0.0 : INFINITY;
  const double e = fabs(got - ref);
  return e == 0.0 ? 0.0 : (bound > 0.0 ? e / bound : INFINITY);
}

static void run_case(const bn_case *k) {
  const size_t N = k->N, C = k->C, S = k->S, M = N * S, E = N * C * S;
  const float eps = 1e-5f, momentum = 0.1f;
  const int relu = (k->flags & NK_CHNORM_RELU) != 0;
  nk_rng rng = {0x5EEDULL + N * 131 + C * 17 + S};
  float *x = nk_t_alloc(E * 4), *dy = nk_t_alloc(E * 4);
  float *gamma = nk_t_alloc(C * 4), *beta = nk_t_alloc(C * 4);
  for (size_t c = 0; c < C; c++) {
    gamma[c] = (float)(0.5 + nk_rng_uniform(&rng));
    beta[c] = (float)(0.2 * nk_rng_normal(&rng));
  }
  for (size_t i = 0; i < E; i++) {
    const double base = k->illcond ? 1e4 : 0.0, scale = k->illcond ? 1e-2 : 1.0;
    x[i] = (float)(base + scale * (nk_rng_normal(&rng) + 0.1 * (double)(i % 7)));
    dy[i] = (float)nk_rng_normal(&rng);
  }

  /* ---- single process on the whole batch ---- */
  nk_chnorm_desc d = nk_chnorm_desc_dense(N, C, S, k->layout, NK_DTYPE_F32, eps);
  d.flags = NK_CHNORM_TRAINING | k->flags;
  d.momentum = momentum;
  bn_run one;
  run_alloc(&one, E, C);
  run_init_running(&one, C);
  size_t fws = 0, bws = 0;
  nk_batchnorm_fwd_workspace_size(&d, &fws);
  nk_batchnorm_bwd_workspace_size(&d, &bws);
  void *ws = nk_t_alloc(fws > bws ? fws : bws);
  nk_status st = nk_batchnorm_fwd(NULL, &d, x, NULL, gamma, beta, one.rm, one.rv, &one.nbt,
                                  one.y, one.save_mean, one.save_rstd, ws, fws);
  NK_MPI_CHECK(st == NK_OK, "%s single-process fwd: %s", k->name, nk_status_string(st));
  st = nk_batchnorm_bwd(NULL, &d, x, one.y, gamma, one.save_mean, one.save_rstd, dy, one.dx, NULL,
                        one.dgamma, one.dbeta, ws, bws);
  NK_MPI_CHECK(st == NK_OK, "%s single-process bwd: %s", k->name, nk_status_string(st));
  free(ws);

  /* ---- float64 reference ---- */
  double *mean = calloc(C, 8), *var = calloc(C, 8), *rstd = calloc(C, 8);
  double *yr = calloc(E, 8), *dxr = calloc(E, 8), *dgr = calloc(C, 8), *dbr = calloc(C, 8);
  double *ymax = calloc(C, 8), *Sc = calloc(C, 8), *gsum = calloc(C, 8), *bsum = calloc(C, 8);
  for (size_t c = 0; c < C; c++) {
    double s = 0, q = 0;
    for (size_t n = 0; n < N; n++)
      for (size_t t = 0; t < S; t++) s += x[at(k->layout, C, S, n, c, t)];
    mean[c] = s / (double)M;
    for (size_t n = 0; n < N; n++)
      for (size_t t = 0; t < S; t++) {
        const double v = x[at(k->layout, C, S, n, c, t)] - mean[c];
        q += v * v;
      }
    var[c] = q / (double)M;
    rstd[c] = 1.0 / sqrt(var[c] + (double)eps);
    double sdy = 0, sdyx = 0, mgdy = 0, mxh = 1, xhmax = 0;
    for (size_t n = 0; n < N; n++)
      for (size_t t = 0; t < S; t++) {
        const size_t i = at(k->layout, C, S, n, c, t);
        const double xh = (x[i] - mean[c]) * rstd[c];
        double v = xh * gamma[c] + beta[c];
        if (relu && v < 0) v = 0;
        yr[i] = v;
        ymax[c] = fmax(ymax[c], fabs(v));
        const double g = (relu && !(one.y[i] > 0)) ? 0.0 : dy[i]; /* the mask of the f32 y */
        sdy += g, sdyx += g * xh;
        mgdy = fmax(mgdy, fabs(gamma[c] * g));
        mxh = fmax(mxh, fabs(xh)), xhmax = fmax(xhmax, fabs(xh));
        bsum[c] += fabs(g);
      }
    dgr[c] = sdyx, dbr[c] = sdy;
    Sc[c] = rstd[c] * mgdy * mxh;
    for (size_t n = 0; n < N; n++)
      for (size_t t = 0; t < S; t++) {
        const size_t i = at(k->layout, C, S, n, c, t);
        const double xh = (x[i] - mean[c]) * rstd[c];
        const double g = (relu && !(one.y[i] > 0)) ? 0.0 : dy[i];
        dxr[i] = gamma[c] * rstd[c] / (double)M * ((double)M * g - sdy - xh * sdyx);
        gsum[c] += fabs(g) * xhmax;
      }
  }

  for (int sp = SPLIT_UNEVEN; sp <= SPLIT_LAST; sp++) {
    size_t n0 = 0, nr = 0;
    rank_samples((enum split)sp, nk_mpi_t_rank, nk_mpi_t_size, N, &n0, &nr);
    nk_chnorm_desc dl = nk_chnorm_desc_dense(nr, C, S, k->layout, NK_DTYPE_F32, eps);
    dl.flags = d.flags;
    dl.momentum = momentum;
    const size_t off = n0 * C * S, El = nr * C * S;
    bn_run a, b;
    run_alloc(&a, El, C);
    run_alloc(&b, El, C);
    /* the repeat runs on 2 threads: the same bits whatever the thread count */
    nk_context *ctx = NULL, *ctx2 = NULL;
    nk_threadpool *pool = NULL;
    nk_context_create(&ctx);
    nk_context_create(&ctx2);
    nk_threadpool_create(2, &pool);
    nk_context_set_threadpool(ctx2, pool);
    run_mpi(k, &dl, x + off, gamma, beta, dy + off, &a, ctx);
    run_mpi(k, &dl, x + off, gamma, beta, dy + off, &b, ctx2);
    nk_context_destroy(ctx);
    nk_context_destroy(ctx2);
    nk_threadpool_destroy(pool);
    const char *spn = sp == SPLIT_UNEVEN ? "uneven" : "last";

    /* Determinism: the repeated run, and the other ranks. */
    NK_MPI_CHECK(memcmp(a.y, b.y, El * 4) == 0 && memcmp(a.dx, b.dx, El * 4) == 0 &&
                     same_channel_outputs(&a, &b, C),
                 "%s/%s: a repeated run differs", k->name, spn);
    NK_MPI_CHECK(same_everywhere(&a, C), "%s/%s: ranks disagree", k->name, spn);

    if (sp == SPLIT_LAST) { /* one rank holds everything: the single-process bits */
      NK_MPI_CHECK(same_channel_outputs(&a, &one, C), "%s/%s: differs from single process",
                   k->name, spn);
      NK_MPI_CHECK(memcmp(a.y, one.y + off, El * 4) == 0 && memcmp(a.dx, one.dx + off, El * 4) == 0,
                   "%s/%s: y/dx differ from single process", k->name, spn);
    }

    /* Accuracy against the reference and the single-process results. */
    double worst_ref = 0, worst_one = 0;
    for (size_t n = 0; n < nr; n++)
      for (size_t c = 0; c < C; c++)
        for (size_t t = 0; t < S; t++) {
          const size_t il = at(k->layout, C, S, n, c, t), ig = il + off;
          double q = ratio(a.y[il], yr[ig], 2e-6 * ymax[c]);
          double q1 = ratio(a.y[il], one.y[ig], 4e-6 * ymax[c]);
          NK_MPI_CHECK(q <= 1 && q1 <= 1, "%s/%s y[%zu][%zu][%zu] %.9g ref %.9g single %.9g",
                       k->name, spn, n + n0, c, t, a.y[il], yr[ig], one.y[ig]);
          worst_ref = fmax(worst_ref, q), worst_one = fmax(worst_one, q1);
          q = ratio(a.dx[il], dxr[ig], 4e-6 * Sc[c]);
          q1 = ratio(a.dx[il], one.dx[ig], 8e-6 * Sc[c]);
          NK_MPI_CHECK(q <= 1 && q1 <= 1, "%s/%s dx[%zu][%zu][%zu] %.9g ref %.9g single %.9g",
                       k->name, spn, n + n0, c, t, a.dx[il], dxr[ig], one.dx[ig]);
          worst_ref = fmax(worst_ref, q), worst_one = fmax(worst_one, q1);
        }
    for (size_t c = 0; c < C; c++) {
      const double sd = sqrt(var[c]), ulpm = nk_t_ulp(mean[c], NK_DTYPE_F32);
      const double rm0 = 0.1f * (float)c, rv0 = 1.0f + 0.25f * (float)c, m = momentum;
      const double rv_ref = (1 - m) * rv0 + m * var[c] * (double)M / (double)(M - 1);
      const double rm_ref = (1 - m) * rm0 + m * mean[c];
      NK_MPI_CHECK(ratio(a.save_mean[c], mean[c], ulpm + 1e-6 * sd) <= 1, "%s/%s mean[%zu] %.9g ref %.9g",
                   k->name, spn, c, a.save_mean[c], mean[c]);
      NK_MPI_CHECK(ratio(a.save_rstd[c], rstd[c], 2e-6 * rstd[c]) <= 1, "%s/%s rstd[%zu] %.9g ref %.9g",
                   k->name, spn, c, a.save_rstd[c], rstd[c]);
      NK_MPI_CHECK(ratio(a.rm[c], rm_ref, nk_t_ulp(rm_ref, NK_DTYPE_F32) + 1e-6 * sd) <= 1,
                   "%s/%s running_mean[%zu] %.9g ref %.9g", k->name, spn, c, a.rm[c], rm_ref);
      NK_MPI_CHECK(ratio(a.rv[c], rv_ref, 2e-6 * rv_ref) <= 1, "%s/%s running_var[%zu] %.9g ref %.9g",
                   k->name, spn, c, a.rv[c], rv_ref);
      NK_MPI_CHECK(a.nbt == 6, "%s/%s num_batches_tracked %lld", k->name, spn, (long long)a.nbt);
      const double bg = 4e-6 * gsum[c] + nk_t_ulp(dgr[c], NK_DTYPE_F32);
      const double bb = 4e-6 * bsum[c] + nk_t_ulp(dbr[c], NK_DTYPE_F32);
      NK_MPI_CHECK(ratio(a.dgamma[c], dgr[c], bg) <= 1 && ratio(a.dgamma[c], one.dgamma[c], 2 * bg) <= 1,
                   "%s/%s dgamma[%zu] %.9g ref %.9g single %.9g", k->name, spn, c, a.dgamma[c],
                   dgr[c], one.dgamma[c]);
      NK_MPI_CHECK(ratio(a.dbeta[c], dbr[c], bb) <= 1 && ratio(a.dbeta[c], one.dbeta[c], 2 * bb) <= 1,
                   "%s/%s dbeta[%zu] %.9g ref %.9g single %.9g", k->name, spn, c, a.dbeta[c],
                   dbr[c], one.dbeta[c]);
    }
    /* The worst element error / bound over all ranks, for the record. */
    double w[2] = {worst_ref, worst_one};
    MPI_Allreduce(MPI_IN_PLACE, w, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (nk_mpi_t_rank == 0)
      printf("        %s/%s: worst error/bound %.3f vs reference, %.3f vs single process\n",
             k->name, spn, w[0], w[1]);
    run_free(&a);
    run_free(&b);
  }
  run_free(&one);
  free(x), free(dy), free(gamma), free(beta);
  free(mean), free(var), free(rstd), free(yr), free(dxr), free(dgr), free(dbr);
  free(ymax), free(Sc), free(gsum), free(bsum);
}

NK_TEST(nchw_uneven_batches) {
  const bn_case k = {"nchw", NK_LAYOUT_NCS, 7, 5, 9, 0, 0};
  run_case(&k);
}
NK_TEST(nhwc_uneven_batches) {
  const bn_case k = {"nhwc", NK_LAYOUT_NSC, 7, 13, 6, 0, 0};
  run_case(&k);
}
/* Enough elements per channel for several blocks and chunks of the core's reduction. */
NK_TEST(nchw_large_spatial) {
  const bn_case k = {"nchw-large", NK_LAYOUT_NCS, 12, 3, 700, 0, 0};
  run_case(&k);
}
NK_TEST(nhwc_many_samples) {
  const bn_case k = {"nhwc-large", NK_LAYOUT_NSC, 40, 24, 50, 0, 0};
  run_case(&k);
}
/* mean 1e4, std 1e-2: the merged moments keep f32 accuracy. */
NK_TEST(ill_conditioned) {
  const bn_case k = {"illcond", NK_LAYOUT_NCS, 9, 4, 33, 1, 0};
  run_case(&k);
}
/* Fused ReLU: the backward masks dy with y > 0, the stand-in of an empty rank too. */
NK_TEST(fused_relu) {
  const bn_case k = {"relu", NK_LAYOUT_NSC, 8, 6, 10, 0, NK_CHNORM_RELU};
  run_case(&k);
}

/* Every rank empty: OK and nothing written, as nk_batchnorm_fwd with N == 0. */
NK_TEST(every_rank_empty) {
  nk_chnorm_desc d = nk_chnorm_desc_dense(0, 4, 3, NK_LAYOUT_NCS, NK_DTYPE_F32, 1e-5f);
  d.flags = NK_CHNORM_TRAINING;
  float rm[4] = {1, 2, 3, 4}, rv[4] = {5, 6, 7, 8}, sm[4] = {9, 9, 9, 9}, dg[4] = {7, 7, 7, 7};
  int64_t nbt = 3;
  nk_status st = nk_mpi_batchnorm_fwd(NULL, MPI_COMM_WORLD, &d, NULL, NULL, NULL, NULL, rm, rv,
                                      &nbt, NULL, sm, NULL);
  NK_MPI_CHECK(st == NK_OK, "fwd %s", nk_status_string(st));
  NK_MPI_CHECK(rm[0] == 1 && rv[3] == 8 && sm[0] == 9 && nbt == 3, "%s", "written");
  st = nk_mpi_batchnorm_bwd(NULL, MPI_COMM_WORLD, &d, NULL, NULL, NULL, sm, sm, NULL, NULL, NULL,
                            dg, NULL);
  NK_MPI_CHECK(st == NK_OK && dg[0] == 7, "bwd %s", nk_status_string(st));
}

/* One element in total (one rank has 1 sample of 1 position, the others none): BatchNorm
 * training refuses it (unbiased variance undefined), the same way on every rank. */
NK_TEST(one_element_in_total) {
  const int last = nk_mpi_t_rank == nk_mpi_t_size - 1;
  nk_chnorm_desc d = nk_chnorm_desc_dense(last ? 1 : 0, 2, 1, NK_LAYOUT_NSC, NK_DTYPE_F32, 1e-5f);
  d.flags = NK_CHNORM_TRAINING;
  float x[2] = {1, 2}, y[2] = {0, 0}, rm[2] = {0, 0}, rv[2] = {1, 1};
  nk_status st = nk_mpi_batchnorm_fwd(NULL, MPI_COMM_WORLD, &d, x, NULL, NULL, NULL, rm, rv, NULL,
                                      y, NULL, NULL);
  NK_MPI_CHECK(st == NK_STATUS_INVALID_ARGUMENT, "status %s", nk_status_string(st));
  NK_MPI_CHECK(rm[0] == 0 && rv[0] == 1, "%s", "running statistics written");
}

/* Failures are agreed on: every rank fails, nothing is written anywhere. */
NK_TEST(failures_agree) {
  const size_t C = 3;
  nk_chnorm_desc d = nk_chnorm_desc_dense(2, C, 4, NK_LAYOUT_NCS, NK_DTYPE_F32, 1e-5f);
  d.flags = NK_CHNORM_TRAINING;
  float x[24], y[24], rm[3] = {0, 0, 0}, rv[3] = {1, 1, 1};
  for (int i = 0; i < 24; i++) x[i] = (float)(i * i % 7), y[i] = -1;
  nk_context *ctx = NULL;
  nk_context_create(&ctx);
  /* the last rank passes x == NULL */
  const int bad = nk_mpi_t_size - 1;
  nk_status st = nk_mpi_batchnorm_fwd(ctx, MPI_COMM_WORLD, &d, nk_mpi_t_rank == bad ? NULL : x,
                                      NULL, NULL, NULL, rm, rv, NULL, y, NULL, NULL);
  NK_MPI_CHECK(st == NK_STATUS_INVALID_ARGUMENT, "NULL x: %s (%s)", nk_status_string(st),
               nk_context_message(ctx));
  NK_MPI_CHECK(y[0] == -1 && rm[0] == 0 && rv[0] == 1, "%s", "written after a failure");
  /* channels differ across ranks (possible with 2 ranks or more) */
  nk_chnorm_desc e = d;
  if (nk_mpi_t_size > 1) {
    if (nk_mpi_t_rank == 0)
      e = nk_chnorm_desc_dense(2, C - 1, 4, NK_LAYOUT_NCS, NK_DTYPE_F32, 1e-5f);
    e.flags = NK_CHNORM_TRAINING;
    st = nk_mpi_batchnorm_fwd(ctx, MPI_COMM_WORLD, &e, x, NULL, NULL, NULL, rm, rv, NULL, y, NULL,
                              NULL);
    NK_MPI_CHECK(st == NK_STATUS_INVALID_ARGUMENT && strstr(nk_context_message(ctx), "channels"),
                 "channels differ: %s (%s)", nk_status_string(st), nk_context_message(ctx));
    NK_MPI_CHECK(y[0] == -1 && rm[0] == 0 && rv[0] == 1, "%s", "written after a failure");
  }
  /* inference needs no communication: UNSUPPORTED */
  e = d;
  e.flags = 0;
  st = nk_mpi_batchnorm_fwd(ctx, MPI_COMM_WORLD, &e, x, NULL, NULL, NULL, rm, rv, NULL, y, NULL,
                            NULL);
  NK_MPI_CHECK(st == NK_STATUS_UNSUPPORTED, "inference fwd: %s", nk_status_string(st));
  st = nk_mpi_batchnorm_bwd(ctx, MPI_COMM_WORLD, &e, x, NULL, NULL, rm, rv, x, y, NULL, NULL,
                            NULL);
  NK_MPI_CHECK(st == NK_STATUS_UNSUPPORTED, "inference bwd: %s", nk_status_string(st));
  NK_MPI_CHECK(y[0] == -1, "%s", "written after a failure");
  /* a NULL descriptor on every rank */
  st = nk_mpi_batchnorm_bwd(ctx, MPI_COMM_WORLD, NULL, x, NULL, NULL, rm, rv, x, y, NULL, NULL,
                            NULL);
  NK_MPI_CHECK(st == NK_STATUS_INVALID_ARGUMENT, "NULL desc: %s", nk_status_string(st));
  nk_context_destroy(ctx);
}

int main(int argc, char **argv) {
  nk_mpi_t_init(&argc, &argv);
  NK_MPI_RUN(nchw_uneven_batches);
  NK_MPI_RUN(nhwc_uneven_batches);
  NK_MPI_RUN(nchw_large_spatial);
  NK_MPI_RUN(nhwc_many_samples);
  NK_MPI_RUN(ill_conditioned);
  NK_MPI_RUN(fused_relu);
  NK_MPI_RUN(every_rank_empty);
  NK_MPI_RUN(one_element_in_total);
  NK_MPI_RUN(failures_agree);
  return nk_mpi_t_finish();
}
