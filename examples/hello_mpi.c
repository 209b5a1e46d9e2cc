/* hello_mpi.c — synchronized BatchNorm over MPI with normkit_mpi: every rank holds its own
 * samples of a batch (rank r has r + 1 samples of C = 3 channels), the statistics are those
 * of the whole batch, and every rank ends with the same running statistics.
 * Built against the installed package by tests/install/run.sh when normkit has MPI.
 * Run: mpiexec -n 2 ./hello_mpi */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <normkit_mpi.h>

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  enum { C = 3 };
  const size_t n = (size_t)rank + 1;
  float x[64 * C], y[64 * C], rm[C] = {0, 0, 0}, rv[C] = {1, 1, 1}, mean[C], rstd[C];
  for (size_t i = 0; i < n; i++) /* sample i of rank r holds value (global index) per channel */
    for (int c = 0; c < C; c++) x[i * C + c] = (float)((size_t)rank * (size_t)(rank + 1) / 2 + i) + (float)c;
  nk_batchnorm_desc d = nk_chnorm_desc_dense(n, C, 1, NK_LAYOUT_NSC, NK_DTYPE_F32, 1e-5f);
  d.flags = NK_CHNORM_TRAINING;
  nk_status st = nk_mpi_batchnorm_fwd(NULL, MPI_COMM_WORLD, &d, x, NULL, NULL, NULL, rm, rv, NULL,
                                      y, mean, rstd);
  int bad = st != NK_STATUS_OK;
  /* the whole batch holds 0 .. M-1 (+ c), M = size (size + 1) / 2: its mean is (M - 1) / 2 + c */
  const double M = (double)size * (size + 1) / 2;
  for (int c = 0; c < C; c++) bad |= fabs(mean[c] - ((M - 1) / 2 + c)) > 1e-5;
  MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0)
    printf("normkit %s: synchronized BatchNorm on %d rank(s): mean %.2f (%s)\n", nk_version(),
           size, mean[0], bad ? "WRONG" : "ok");
  MPI_Finalize();
  return bad;
}
