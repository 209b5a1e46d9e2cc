/*
 * tests/mpi/comm.c — the building blocks of normkit_mpi: the rank-ordered all-reduces of
 * nk_moments and of doubles, on MPI_COMM_WORLD and on split communicators, with empty ranks,
 * and the agreement on failures (a local failure on one rank, sizes that differ, bad
 * communicators). Run with 1, 2 and 3 ranks (tests/CMakeLists.txt).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpi_test.h"
#include "normkit_mpi.h"
#include "util.h"

#define N_ENTRIES 37

/* Rank r's data for entry i: len(r, i) values, deterministic, with a large common offset so
 * that the merge order matters in the last bits. Every rank is empty for a quarter of the
 * entries (rank 1 for entry 0), and holds data for the others. */
static size_t data_len(int r, size_t i) {
  if ((i + (size_t)r) % 4 == 1) return 0;
  return (size_t)((r * 7 + (int)i * 3) % 11) + 1;
}
static double data_value(int r, size_t i, size_t k) {
  nk_rng g = {0x9E3779B97F4A7C15ULL ^ ((uint64_t)r << 40) ^ ((uint64_t)i << 20) ^ k};
  nk_rng_u64(&g);
  return 1e4 + 1e-2 * nk_rng_normal(&g) + (double)r * 3e-3;
}
/* Two-pass moments of rank r's data for entry i (as a rank would compute them). */
static nk_moments rank_moments(int r, size_t i) {
  nk_moments m = {0, 0, 0};
  const size_t n = data_len(r, i);
  if (n == 0) return m;
  double s = 0;
  for (size_t k = 0; k < n; k++) s += data_value(r, i, k);
  const double mean = s / (double)n;
  double m2 = 0;
  for (size_t k = 0; k < n; k++) m2 += (data_value(r, i, k) - mean) * (data_value(r, i, k) - mean);
  m.count = (double)n;
  m.mean = mean;
  m.m2 = m2;
  return m;
}

/* The all-reduce equals the left fold in rank order, bit for bit, on every rank and on a
 * repeated call; and it is within rounding of the two-pass moments of all data. */
NK_TEST(moments_allreduce_is_rank_ordered_fold) {
  nk_moments mine[N_ENTRIES], again[N_ENTRIES], want[N_ENTRIES];
  for (size_t i = 0; i < N_ENTRIES; i++) {
    mine[i] = again[i] = rank_moments(nk_mpi_t_rank, i);
    want[i] = rank_moments(0, i);
    for (int r = 1; r < nk_mpi_t_size; r++) {
      const nk_moments b = rank_moments(r, i);
      nk_moments_merge(&want[i], &b);
    }
  }
  nk_context *ctx = NULL;
  nk_context_create(&ctx);
  nk_status st = nk_mpi_moments_allreduce(ctx, MPI_COMM_WORLD, N_ENTRIES, mine);
  NK_MPI_CHECK(st == NK_OK, "status %s (%s)", nk_status_string(st), nk_context_message(ctx));
  st = nk_mpi_moments_allreduce(NULL, MPI_COMM_WORLD, N_ENTRIES, again);
  NK_MPI_CHECK(st == NK_OK, "status %s", nk_status_string(st));
  NK_MPI_CHECK(memcmp(mine, want, sizeof want) == 0, "%s", "differs from the rank-order fold");
  NK_MPI_CHECK(memcmp(mine, again, sizeof want) == 0, "%s", "a repeated call differs");
  NK_MPI_CHECK(nk_mpi_t_same_everywhere(MPI_COMM_WORLD, mine, sizeof mine), "%s",
               "ranks disagree");
  for (size_t i = 0; i < N_ENTRIES; i++) {
    double n = 0, s = 0, m2 = 0;
    for (int r = 0; r < nk_mpi_t_size; r++)
      for (size_t k = 0; k < data_len(r, i); k++) n += 1, s += data_value(r, i, k);
    const double mean = n > 0 ? s / n : 0;
    for (int r = 0; r < nk_mpi_t_size; r++)
      for (size_t k = 0; k < data_len(r, i); k++)
        m2 += (data_value(r, i, k) - mean) * (data_value(r, i, k) - mean);
    NK_MPI_CHECK(mine[i].count == n, "entry %zu count %g want %g", i, mine[i].count, n);
    if (n > 0) {
      NK_MPI_CHECK(fabs(mine[i].mean - mean) <= 1e-15 * fabs(mean), "entry %zu mean %.17g want %.17g",
                   i, mine[i].mean, mean);
      NK_MPI_CHECK(fabs(mine[i].m2 - m2) <= 1e-9 * m2 + 1e-300, "entry %zu m2 %.17g want %.17g",
                   i, mine[i].m2, m2);
    }
  }
  nk_context_destroy(ctx);
}

/* Sums are added in rank order: with terms whose sum depends on the order, the result is the
 * left fold 0, 1, ..., P-1 exactly. */
NK_TEST(sum_allreduce_is_rank_ordered_fold) {
  enum { n = 5 };
  double v[n], want[n];
  static const double terms[] = {1e16, 1.0, -1e16, 3.0, 0.5};
  for (int i = 0; i < n; i++) {
    v[i] = terms[(nk_mpi_t_rank + i) % 5] * (i + 1);
    want[i] = terms[i % 5] * (i + 1);
    for (int r = 1; r < nk_mpi_t_size; r++) want[i] += terms[(r + i) % 5] * (i + 1);
  }
  nk_status st = nk_mpi_sum_allreduce(NULL, MPI_COMM_WORLD, n, v);
  NK_MPI_CHECK(st == NK_OK, "status %s", nk_status_string(st));
  NK_MPI_CHECK(memcmp(v, want, sizeof v) == 0, "v[0] %.17g want %.17g", v[0], want[0]);
}

/* Any communicator works: the ranks split by parity, each half reduces over its own ranks in
 * their order within the sub-communicator. */
NK_TEST(split_communicator) {
  MPI_Comm half;
  MPI_Comm_split(MPI_COMM_WORLD, nk_mpi_t_rank % 2, nk_mpi_t_rank, &half);
  nk_moments mine[N_ENTRIES], want[N_ENTRIES];
  for (size_t i = 0; i < N_ENTRIES; i++) {
    mine[i] = rank_moments(nk_mpi_t_rank, i);
    want[i] = rank_moments(nk_mpi_t_rank % 2, i);
    for (int r = nk_mpi_t_rank % 2 + 2; r < nk_mpi_t_size; r += 2) {
      const nk_moments b = rank_moments(r, i);
      nk_moments_merge(&want[i], &b);
    }
  }
  nk_status st = nk_mpi_moments_allreduce(NULL, half, N_ENTRIES, mine);
  NK_MPI_CHECK(st == NK_OK, "status %s", nk_status_string(st));
  NK_MPI_CHECK(memcmp(mine, want, sizeof want) == 0, "%s", "differs from the fold of the half");
  MPI_Comm_free(&half);
}

/* n == 0 is a no-op (NULL array allowed), on every rank. */
NK_TEST(zero_entries) {
  NK_MPI_CHECK(nk_mpi_moments_allreduce(NULL, MPI_COMM_WORLD, 0, NULL) == NK_OK, "%s", "moments");
  NK_MPI_CHECK(nk_mpi_sum_allreduce(NULL, MPI_COMM_WORLD, 0, NULL) == NK_OK, "%s", "sums");
}

/* The last rank passes NULL: every rank fails with the same status, and nothing is written. */
NK_TEST(local_failure_fails_everywhere) {
  nk_context *ctx = NULL;
  nk_context_create(&ctx);
  const int bad = nk_mpi_t_size - 1;
  double v[3] = {1, 2, 3};
  nk_status st = nk_mpi_sum_allreduce(ctx, MPI_COMM_WORLD, 3, nk_mpi_t_rank == bad ? NULL : v);
  NK_MPI_CHECK(st == NK_STATUS_INVALID_ARGUMENT, "status %s", nk_status_string(st));
  NK_MPI_CHECK(v[0] == 1 && v[1] == 2 && v[2] == 3, "%s", "written after a failure");
  if (nk_mpi_t_rank != bad) {
    char want[64];
    snprintf(want, sizeof want, "rank %d failed", bad);
    NK_MPI_CHECK(strstr(nk_context_message(ctx), want) != NULL, "message '%s'",
                 nk_context_message(ctx));
  } else {
    NK_MPI_CHECK(strstr(nk_context_message(ctx), "NULL") != NULL, "message '%s'",
                 nk_context_message(ctx));
  }
  /* The context's message is cleared by the next success. */
  st = nk_mpi_sum_allreduce(ctx, MPI_COMM_WORLD, 3, v);
  NK_MPI_CHECK(st == NK_OK && nk_context_message(ctx)[0] == '\0', "status %s message '%s'",
               nk_status_string(st), nk_context_message(ctx));
  nk_context_destroy(ctx);
}

/* Rank 0 passes a different n: INVALID_ARGUMENT on every rank (with one rank, nothing differs
 * and the call succeeds). */
NK_TEST(sizes_differ_across_ranks) {
  nk_context *ctx = NULL;
  nk_context_create(&ctx);
  nk_moments m[4] = {{1, 2, 0}, {1, 2, 0}, {1, 2, 0}, {1, 2, 0}};
  const size_t n = nk_mpi_t_rank == 0 ? 3 : 4;
  nk_status st = nk_mpi_moments_allreduce(ctx, MPI_COMM_WORLD, n, m);
  if (nk_mpi_t_size > 1) {
    NK_MPI_CHECK(st == NK_STATUS_INVALID_ARGUMENT, "status %s", nk_status_string(st));
    NK_MPI_CHECK(strstr(nk_context_message(ctx), "differs across ranks") != NULL, "message '%s'",
                 nk_context_message(ctx));
    NK_MPI_CHECK(m[0].count == 1, "%s", "written after a failure");
  } else {
    NK_MPI_CHECK(st == NK_OK, "status %s", nk_status_string(st));
  }
  nk_context_destroy(ctx);
}

/* Bad communicators are found locally: MPI_COMM_NULL, an inter-communicator. */
NK_TEST(bad_communicators) {
  double v = 1;
  NK_MPI_CHECK(nk_mpi_sum_allreduce(NULL, MPI_COMM_NULL, 1, &v) == NK_STATUS_INVALID_ARGUMENT,
               "%s", "MPI_COMM_NULL");
  if (nk_mpi_t_size >= 2) {
    MPI_Comm half, inter;
    const int color = nk_mpi_t_rank % 2;
    MPI_Comm_split(MPI_COMM_WORLD, color, nk_mpi_t_rank, &half);
    MPI_Intercomm_create(half, 0, MPI_COMM_WORLD, color == 0 ? 1 : 0, 99, &inter);
    NK_MPI_CHECK(nk_mpi_sum_allreduce(NULL, inter, 1, &v) == NK_STATUS_UNSUPPORTED, "%s",
                 "inter-communicator");
    MPI_Comm_free(&inter);
    MPI_Comm_free(&half);
  }
}

int main(int argc, char **argv) {
  nk_mpi_t_init(&argc, &argv);
  NK_MPI_RUN(moments_allreduce_is_rank_ordered_fold);
  NK_MPI_RUN(sum_allreduce_is_rank_ordered_fold);
  NK_MPI_RUN(split_communicator);
  NK_MPI_RUN(zero_entries);
  NK_MPI_RUN(local_failure_fails_everywhere);
  NK_MPI_RUN(sizes_differ_across_ranks);
  NK_MPI_RUN(bad_communicators);
  return nk_mpi_t_finish();
}
