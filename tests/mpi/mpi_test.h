/*
 * mpi_test.h — test.h for programs run under mpirun (tests/mpi/).
 *
 *   int main(int argc, char **argv) {
 *     nk_mpi_t_init(&argc, &argv);
 *     NK_MPI_RUN(name); ...
 *     return nk_mpi_t_finish();
 *   }
 *
 * NK_MPI_RUN runs a test on every rank, then the ranks agree on its verdict (a failure on any
 * rank fails it everywhere), so every rank prints the same summary; only rank 0 writes the
 * ok/FAILED lines to stdout (check failures go to stderr from the rank that saw them, with
 * its rank number). Tests must not return early between collective calls on some ranks only
 * (NK_REQUIRE): use NK_CHECK, and keep every rank on the same sequence of collectives.
 */
#ifndef NK_MPI_TEST_H
#define NK_MPI_TEST_H

#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "test.h"

static int nk_mpi_t_rank, nk_mpi_t_size;

static inline void nk_mpi_t_init(int *argc, char ***argv) {
  MPI_Init(argc, argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &nk_mpi_t_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nk_mpi_t_size);
  if (nk_mpi_t_rank == 0) printf("%d rank(s)\n", nk_mpi_t_size);
}

/* The verdict of the current test over all ranks. */
static inline void nk_mpi_t_agree(void) {
  int v[2] = {nk_t_cur_failed, nk_t_cur_skipped};
  MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  nk_t_cur_failed = v[0];
  nk_t_cur_skipped = v[1];
}

#define NK_MPI_RUN(name)                                                                         \
  do {                                                                                           \
    nk_t_cur_failed = 0;                                                                         \
    nk_t_cur_skipped = 0;                                                                        \
    nk_t_cur_checks_failed = 0;                                                                  \
    name();                                                                                      \
    nk_mpi_t_agree();                                                                            \
    if (nk_t_cur_failed) {                                                                       \
      nk_t_failed++;                                                                             \
      if (nk_mpi_t_rank == 0) fprintf(stderr, "FAILED  %s\n", #name);                            \
    } else if (nk_t_cur_skipped) {                                                               \
      nk_t_skipped++;                                                                            \
      if (nk_mpi_t_rank == 0) printf("SKIPPED %s\n", #name);                                     \
    } else {                                                                                     \
      nk_t_passed++;                                                                             \
      if (nk_mpi_t_rank == 0) printf("ok      %s\n", #name);                                     \
    }                                                                                            \
    fflush(stdout);                                                                              \
  } while (0)

/* NK_CHECK with the rank in the message. */
#define NK_MPI_CHECK(cond, fmt, ...)                                                             \
  NK_CHECK(cond, "[rank %d/%d] " fmt, nk_mpi_t_rank, nk_mpi_t_size, __VA_ARGS__)

static inline int nk_mpi_t_finish(void) {
  if (nk_mpi_t_rank == 0)
    printf("%d ranks: %d passed, %d failed, %d skipped\n", nk_mpi_t_size, nk_t_passed,
           nk_t_failed, nk_t_skipped);
  MPI_Finalize();
  return nk_t_failed ? 1 : 0;
}

/* 1 if buf (bytes) holds the same bits on every rank of comm. */
static inline int nk_mpi_t_same_everywhere(MPI_Comm comm, const void *buf, size_t bytes) {
  int size, rank;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  unsigned char *all = malloc(bytes * (size_t)size + 1);
  int same = 1;
  MPI_Allgather(buf, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, comm);
  for (int r = 1; r < size; r++)
    if (memcmp(all, all + (size_t)r * bytes, bytes) != 0) same = 0;
  free(all);
  return same;
}

#endif /* NK_MPI_TEST_H */
