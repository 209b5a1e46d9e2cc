/*
 * tests/mpi/rownorm.c — tensor-parallel LayerNorm and RMSNorm (nk_mpi_layernorm_fwd,
 * nk_mpi_rmsnorm_fwd) on 1, 2 or 3 ranks: every rank holds all rows and a slice of the columns.
 *
 * Every rank builds the same full rows (seeded), normalizes its slice through the MPI call,
 * and compares with (a) the float64 reference of the full rows (nk_ref_layernorm_fwd /
 * nk_ref_rmsnorm_fwd) and (b) the single-process nk_layernorm_fwd / nk_rmsnorm_fwd of the full
 * rows. Bounds (docs/ops/distributed.md):
 *   f32 y:       |y - ref| <= 2e-6 * max|ref| of the row;  vs single-process 4e-6 * max|ref|
 *   bf16 y:      1 ulp(ref) (+ 2e-6 * max|ref| with beta) vs the reference
 *   rstd:        relative 2e-6;   mean: 1 ulp(mean) + 1e-6 * std
 * Splits of the columns: "uneven" (with 3 ranks rank 1 has no columns) and "last" (every
 * column on the last rank: bit-identical to nk_moments_rows + nk_*norm_fwd_moments of the full
 * rows on one process). Each call runs twice, the second time on 2 threads (same bits), and mean/rstd must be the same bits
 * on every rank.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpi_test.h"
#include "normkit_mpi.h"
#include "reference.h"
#include "util.h"

enum split { SPLIT_UNEVEN, SPLIT_LAST };

static void rank_cols(enum split sp, int r, int P, size_t D, size_t *first, size_t *count) {
  size_t w[64], W = 0;
  for (int q = 0; q < P; q++) {
    w[q] = sp == SPLIT_LAST ? (size_t)(q == P - 1) : (P >= 3 && q == 1) ? 0 : (size_t)(2 * q + 1);
    W += w[q];
  }
  size_t start = 0;
  for (int q = 0; q < P; q++) {
    size_t c = D * w[q] / W;
    if (q == P - 1) c = D - start;
    if (q == r) {
      *first = start;
      *count = c;
      return;
    }
    start += c;
  }
}

typedef struct rn_case {
  const char *name;
  int rms;
  nk_dtype dt;
  size_t rows, cols;
  int illcond, beta, offset;
} rn_case;

static double ratio(double got, double ref, double bound) {
  if (isnan(ref)) return isnan(got) ? 0.0 : INFINITY;
  const double e = fabs(got - ref);
  return e == 0.0 ? 0.0 : (bound > 0.0 ? e / bound : INFINITY);
}

static void run_case(const rn_case *k) {
  const size_t R = k->rows, D = k->cols, es = nk_dtype_size(k->dt);
  const float eps = 1e-5f;
  nk_rng rng = {0xC0FFEEULL + R * 7 + D};
  void *x = nk_t_alloc(R * D * es), *yone = nk_t_alloc(R * D * es);
  float *gamma = nk_t_alloc(D * 4), *beta = nk_t_alloc(D * 4);
  double *xr = calloc(R * D, 8), *yr = calloc(R * D, 8), *gr = calloc(D, 8), *br = calloc(D, 8);
  double *mr = calloc(R, 8), *rr = calloc(R, 8);
  for (size_t j = 0; j < D; j++) {
    gamma[j] = (float)(k->offset ? 0.3 * nk_rng_normal(&rng) : 0.5 + nk_rng_uniform(&rng));
    beta[j] = (float)(0.2 * nk_rng_normal(&rng));
    gr[j] = gamma[j], br[j] = beta[j];
  }
  for (size_t i = 0; i < R * D; i++) {
    const double v = k->illcond ? 1e4 + 1e-2 * nk_rng_normal(&rng) : nk_rng_normal(&rng) + 0.3;
    nk_t_set(x, i, v, k->dt);
    xr[i] = nk_t_get(x, i, k->dt);
  }
  const float *B = k->beta ? beta : NULL;
  const double *Br = k->beta ? br : NULL;
  const uint32_t flags = k->offset ? NK_NORM_GAMMA_OFFSET : 0;

  /* single process, full rows: the operator, and the moments path */
  nk_norm_desc d = nk_norm_desc_dense(R, D, k->dt, eps);
  d.flags = flags;
  float *mone = nk_t_alloc(R * 4), *rone = nk_t_alloc(R * 4);
  nk_status st = k->rms ? nk_rmsnorm_fwd(NULL, &d, x, NULL, gamma, B, yone, NULL, rone)
                        : nk_layernorm_fwd(NULL, &d, x, NULL, gamma, B, yone, NULL, mone, rone);
  NK_MPI_CHECK(st == NK_OK, "%s single-process: %s", k->name, nk_status_string(st));
  nk_moments *mom = nk_t_alloc(R * sizeof *mom);
  void *ymom = nk_t_alloc(R * D * es);
  float *mmom = nk_t_alloc(R * 4), *rmom = nk_t_alloc(R * 4);
  st = nk_moments_rows(NULL, R, D, k->dt, x, (ptrdiff_t)D, mom);
  NK_MPI_CHECK(st == NK_OK, "%s moments_rows: %s", k->name, nk_status_string(st));
  st = k->rms ? nk_rmsnorm_fwd_moments(NULL, &d, mom, x, gamma, B, ymom, rmom)
              : nk_layernorm_fwd_moments(NULL, &d, mom, x, gamma, B, ymom, mmom, rmom);
  NK_MPI_CHECK(st == NK_OK, "%s fwd_moments: %s", k->name, nk_status_string(st));
  if (k->rms)
    nk_ref_rmsnorm_fwd(R, D, xr, gr, Br, k->offset, eps, yr, rr);
  else
    nk_ref_layernorm_fwd(R, D, xr, gr, Br, k->offset, eps, yr, mr, rr);

  for (int sp = SPLIT_UNEVEN; sp <= SPLIT_LAST; sp++) {
    size_t c0 = 0, w = 0;
    rank_cols((enum split)sp, nk_mpi_t_rank, nk_mpi_t_size, D, &c0, &w);
    const char *spn = sp == SPLIT_UNEVEN ? "uneven" : "last";
    nk_norm_desc dl = nk_norm_desc_dense(R, w, k->dt, eps);
    dl.flags = flags;
    dl.x_stride = (ptrdiff_t)D; /* the slice is a strided view into the full rows */
    dl.y_stride = (ptrdiff_t)(w ? w : 1);
    const size_t yl_elems = R * (w ? w : 1);
    void *ya = nk_t_alloc(yl_elems * es), *yb = nk_t_alloc(yl_elems * es);
    float *ma = nk_t_alloc(R * 4), *ra = nk_t_alloc(R * 4), *mb = nk_t_alloc(R * 4),
          *rb = nk_t_alloc(R * 4);
    const void *xs = (const char *)x + c0 * es;
    const float *gs = gamma + c0, *bs = B ? beta + c0 : NULL;
    nk_context *ctx = NULL, *ctx2 = NULL; /* the repeat runs on 2 threads */
    nk_threadpool *pool = NULL;
    nk_context_create(&ctx);
    nk_context_create(&ctx2);
    nk_threadpool_create(2, &pool);
    nk_context_set_threadpool(ctx2, pool);
    for (int rep = 0; rep < 2; rep++) {
      void *y = rep ? yb : ya;
      float *m = rep ? mb : ma, *r = rep ? rb : ra;
      nk_context *c = rep ? ctx2 : ctx;
      st = k->rms ? nk_mpi_rmsnorm_fwd(c, MPI_COMM_WORLD, &dl, xs, gs, bs, y, r)
                  : nk_mpi_layernorm_fwd(c, MPI_COMM_WORLD, &dl, xs, gs, bs, y, m, r);
      NK_MPI_CHECK(st == NK_OK, "%s/%s: %s (%s)", k->name, spn, nk_status_string(st),
                   nk_context_message(c));
    }
    nk_context_destroy(ctx);
    nk_context_destroy(ctx2);
    nk_threadpool_destroy(pool);
    NK_MPI_CHECK(memcmp(ya, yb, yl_elems * es) == 0 && memcmp(ma, mb, R * 4) == 0 &&
                     memcmp(ra, rb, R * 4) == 0,
                 "%s/%s: a repeated run differs", k->name, spn);
    NK_MPI_CHECK(nk_mpi_t_same_everywhere(MPI_COMM_WORLD, ra, R * 4) &&
                     (k->rms || nk_mpi_t_same_everywhere(MPI_COMM_WORLD, ma, R * 4)),
                 "%s/%s: ranks disagree on mean/rstd", k->name, spn);

    double worst_ref = 0, worst_one = 0;
    for (size_t i = 0; i < R; i++) {
      double mx = 0;
      for (size_t j = 0; j < D; j++) mx = fmax(mx, fabs(yr[i * D + j]));
      for (size_t j = 0; j < w; j++) {
        const double got = nk_t_get(ya, i * (size_t)dl.y_stride + j, k->dt);
        const double ref = yr[i * D + c0 + j], one = nk_t_get(yone, i * D + c0 + j, k->dt);
        const double bref = k->dt == NK_DTYPE_F32
                                ? 2e-6 * mx
                                : nk_t_ulp(ref, k->dt) + (k->beta ? 2e-6 * mx : 0.0);
        const double bone = k->dt == NK_DTYPE_F32 ? 4e-6 * mx : 2 * bref;
        const double q = ratio(got, ref, bref), q1 = ratio(got, one, bone);
        worst_ref = fmax(worst_ref, q), worst_one = fmax(worst_one, q1);
        NK_MPI_CHECK(q <= 1 && q1 <= 1, "%s/%s y[%zu][%zu] %.9g ref %.9g single %.9g", k->name,
                     spn, i, c0 + j, got, ref, one);
        if (sp == SPLIT_LAST) {
          const double mm = nk_t_get(ymom, i * D + c0 + j, k->dt);
          NK_MPI_CHECK(got == mm || (isnan(got) && isnan(mm)),
                       "%s/%s y[%zu][%zu] %.9g, moments path on one process %.9g", k->name, spn,
                       i, c0 + j, got, mm);
        }
      }
      NK_MPI_CHECK(ratio(ra[i], rr[i], 2e-6 * rr[i]) <= 1, "%s/%s rstd[%zu] %.9g ref %.9g",
                   k->name, spn, i, ra[i], rr[i]);
      if (!k->rms) {
        const double bound = nk_t_ulp(mr[i], NK_DTYPE_F32) + 1e-6 / rr[i];
        NK_MPI_CHECK(ratio(ma[i], mr[i], bound) <= 1, "%s/%s mean[%zu] %.9g ref %.9g", k->name,
                     spn, i, ma[i], mr[i]);
      }
    }
    if (sp == SPLIT_LAST)
      NK_MPI_CHECK(memcmp(ra, rmom, R * 4) == 0 && (k->rms || memcmp(ma, mmom, R * 4) == 0),
                   "%s/%s: mean/rstd differ from the moments path on one process", k->name, spn);
    double wr[2] = {worst_ref, worst_one};
    MPI_Allreduce(MPI_IN_PLACE, wr, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (nk_mpi_t_rank == 0)
      printf("        %s/%s: worst error/bound %.3f vs reference, %.3f vs single process\n",
             k->name, spn, wr[0], wr[1]);
    free(ya), free(yb), free(ma), free(ra), free(mb), free(rb);
  }
  free(x), free(yone), free(gamma), free(beta), free(xr), free(yr), free(gr), free(br), free(mr);
  free(rr), free(mone), free(rone), free(mom), free(ymom), free(mmom), free(rmom);
}

NK_TEST(layernorm_sharded) {
  const rn_case k = {"layernorm", 0, NK_DTYPE_F32, 6, 300, 0, 1, 0};
  run_case(&k);
}
/* Rows longer than NK_MOMENTS_BLOCK, so the slices cut blocks differently than one process. */
NK_TEST(layernorm_sharded_long_rows) {
  const rn_case k = {"layernorm-long", 0, NK_DTYPE_F32, 3, 2600, 0, 1, 0};
  run_case(&k);
}
NK_TEST(layernorm_ill_conditioned) {
  const rn_case k = {"layernorm-illcond", 0, NK_DTYPE_F32, 5, 1500, 1, 0, 0};
  run_case(&k);
}
NK_TEST(layernorm_bf16) {
  const rn_case k = {"layernorm-bf16", 0, NK_DTYPE_BF16, 4, 257, 0, 1, 0};
  run_case(&k);
}
NK_TEST(rmsnorm_sharded) {
  const rn_case k = {"rmsnorm", 1, NK_DTYPE_F32, 6, 300, 0, 0, 0};
  run_case(&k);
}
NK_TEST(rmsnorm_gamma_offset_long_rows) {
  const rn_case k = {"rmsnorm-offset-long", 1, NK_DTYPE_F32, 3, 2600, 0, 0, 1};
  run_case(&k);
}

/* rows differ across ranks: INVALID_ARGUMENT everywhere, nothing written. */
NK_TEST(rows_differ_across_ranks) {
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8] = {0}, rstd[4] = {-1, -1, -1, -1};
  nk_norm_desc d = nk_norm_desc_dense(nk_mpi_t_rank == 0 ? 2 : 4, 2, NK_DTYPE_F32, 1e-5f);
  nk_status st = nk_mpi_rmsnorm_fwd(NULL, MPI_COMM_WORLD, &d, x, NULL, NULL, y, rstd);
  if (nk_mpi_t_size > 1)
    NK_MPI_CHECK(st == NK_STATUS_INVALID_ARGUMENT && rstd[0] == -1 && y[0] == 0, "status %s",
                 nk_status_string(st));
  else
    NK_MPI_CHECK(st == NK_OK, "status %s", nk_status_string(st));
}

/* Every rank with no columns: OK, nothing written (as nk_layernorm_fwd with cols == 0). */
NK_TEST(no_columns_anywhere) {
  float mean[3] = {-1, -1, -1}, rstd[3] = {-1, -1, -1};
  nk_norm_desc d = nk_norm_desc_dense(3, 0, NK_DTYPE_F32, 1e-5f);
  nk_status st = nk_mpi_layernorm_fwd(NULL, MPI_COMM_WORLD, &d, NULL, NULL, NULL, NULL, mean, rstd);
  NK_MPI_CHECK(st == NK_OK && mean[0] == -1 && rstd[2] == -1, "status %s", nk_status_string(st));
}

int main(int argc, char **argv) {
  nk_mpi_t_init(&argc, &argv);
  NK_MPI_RUN(layernorm_sharded);
  NK_MPI_RUN(layernorm_sharded_long_rows);
  NK_MPI_RUN(layernorm_ill_conditioned);
  NK_MPI_RUN(layernorm_bf16);
  NK_MPI_RUN(rmsnorm_sharded);
  NK_MPI_RUN(rmsnorm_gamma_offset_long_rows);
  NK_MPI_RUN(rows_differ_across_ranks);
  NK_MPI_RUN(no_columns_anywhere);
  return nk_mpi_t_finish();
}
