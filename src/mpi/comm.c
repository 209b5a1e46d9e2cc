/*
 * comm.c — the communication layer of normkit_mpi: MPI state checks, the agreement step, the
 * in-place all-gather, the rank-ordered folds, and the two public all-reduces built on them.
 *
 * Why all-gather and fold instead of MPI_Allreduce: MPI_Allreduce with MPI_SUM (or a user
 * operation) combines partials in an order the implementation chooses (trees that depend on
 * the rank count, message sizes and sometimes timing), and the standard does not promise that
 * every rank gets the same bits. Gathering every rank's partials and folding them in rank
 * order 0..P-1 on every rank costs P * n values of memory and bandwidth per rank, which is
 * small for per-channel and per-row statistics, and makes the result a function of the
 * partials alone: identical on every rank and run after run.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "internal.h"

_Static_assert(sizeof(nk_moments) == 3 * sizeof(double),
               "nk_moments travels as 3 MPI_DOUBLEs: count, mean, m2");

nk_status nk__mpi_fail(nk_context *ctx, nk_status status, const char *fmt, ...) {
  if (ctx != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
    va_end(ap);
  }
  return status;
}

nk_status nk__mpi_ok(nk_context *ctx) {
  if (ctx != NULL) ctx->message[0] = '\0';
  return NK_STATUS_OK;
}

nk_status nk__mpi_error(const nk__mpi *m, const char *call, int err) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0, cls = MPI_ERR_OTHER;
  if (MPI_Error_string(err, text, &len) != MPI_SUCCESS) len = 0;
  text[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = '\0';
  if (MPI_Error_class(err, &cls) != MPI_SUCCESS) cls = MPI_ERR_OTHER;
  nk_status st = NK_STATUS_MISUSE;
  if (cls == MPI_ERR_COMM || cls == MPI_ERR_ARG || cls == MPI_ERR_COUNT || cls == MPI_ERR_BUFFER)
    st = NK_STATUS_INVALID_ARGUMENT;
  else if (cls == MPI_ERR_NO_MEM)
    st = NK_STATUS_OUT_OF_MEMORY;
  return nk__mpi_fail(m->ctx, st, "%s: %s failed: %s", m->op, call, text);
}

nk_status nk__mpi_begin(nk__mpi *m, nk_context *ctx, const char *op, MPI_Comm comm) {
  m->ctx = ctx;
  m->op = op;
  m->comm = comm;
  m->rank = 0;
  m->size = 1;
  int flag = 0;
  MPI_Initialized(&flag);
  if (!flag) return nk__mpi_fail(ctx, NK_STATUS_MISUSE, "%s: MPI is not initialized", op);
  flag = 0;
  MPI_Finalized(&flag);
  if (flag) return nk__mpi_fail(ctx, NK_STATUS_MISUSE, "%s: MPI is already finalized", op);
  if (comm == MPI_COMM_NULL)
    return nk__mpi_fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: comm is MPI_COMM_NULL", op);
  int err = MPI_Comm_test_inter(comm, &flag);
  if (err != MPI_SUCCESS) return nk__mpi_error(m, "MPI_Comm_test_inter", err);
  if (flag)
    return nk__mpi_fail(ctx, NK_STATUS_UNSUPPORTED, "%s: comm is an inter-communicator", op);
  err = MPI_Comm_rank(comm, &m->rank);
  if (err != MPI_SUCCESS) return nk__mpi_error(m, "MPI_Comm_rank", err);
  err = MPI_Comm_size(comm, &m->size);
  if (err != MPI_SUCCESS) return nk__mpi_error(m, "MPI_Comm_size", err);
  return NK_STATUS_OK;
}

/* The verdict travels as four integers reduced with MPI_MAX (exact, order-free):
 *   [0] 1 if this rank failed
 *   [1] n        [2] -n          (max and -min of the global size)
 *   [3] failed ? (size - rank) * 16 + status : 0   (the lowest failing rank and its status) */
nk_status nk__mpi_agree(const nk__mpi *m, nk_status local, size_t n, const char *what) {
  const int failed = local != NK_STATUS_OK;
  const long long nn = n > (size_t)LLONG_MAX ? LLONG_MAX : (long long)n;
  long long v[4] = {failed, failed ? 0 : nn, failed ? 0 : -nn,
                    failed ? (long long)(m->size - m->rank) * 16 + (long long)local : 0};
  const int err = MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_LONG_LONG, MPI_MAX, m->comm);
  if (failed) return local;
  if (err != MPI_SUCCESS) return nk__mpi_error(m, "MPI_Allreduce", err);
  if (v[0]) {
    const int rank = m->size - (int)(v[3] / 16);
    const nk_status st = (nk_status)(v[3] % 16);
    return nk__mpi_fail(m->ctx, st, "%s: rank %d failed its local step (%s)", m->op, rank,
                        nk_status_string(st));
  }
  if (v[1] != -v[2])
    return nk__mpi_fail(m->ctx, NK_STATUS_INVALID_ARGUMENT,
                        "%s: %s differs across ranks (from %lld to %lld)", m->op, what, -v[2],
                        v[1]);
  return NK_STATUS_OK;
}

nk_status nk__mpi_allgather(const nk__mpi *m, void *buf, size_t per_rank) {
  if (per_rank == 0) return NK_STATUS_OK;
  const int err =
      MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, (int)per_rank, MPI_DOUBLE, m->comm);
  if (err != MPI_SUCCESS) return nk__mpi_error(m, "MPI_Allgather", err);
  return NK_STATUS_OK;
}

void nk__mpi_fold_moments(int size, size_t n, nk_moments *slots) {
  for (int r = 1; r < size; r++) nk_moments_merge_n(n, slots, slots + (size_t)r * n);
}

void nk__mpi_fold_sums(int size, size_t n, double *slots) {
  for (int r = 1; r < size; r++) {
    const double *s = slots + (size_t)r * n;
    for (size_t i = 0; i < n; i++) slots[i] += s[i];
  }
}

size_t nk__mpi_slots_bytes(int size, size_t n, size_t elem) {
  size_t bytes;
  if (__builtin_mul_overflow((size_t)size, n, &bytes)) return 0;
  if (__builtin_mul_overflow(bytes, elem, &bytes)) return 0;
  return bytes;
}

/* The shared body of the two public all-reduces: elem_doubles doubles per entry. */
static nk_status nk__mpi_allreduce(nk_context *ctx, MPI_Comm comm, const char *op, size_t n,
                                   void *values, size_t elem_doubles) {
  nk__mpi m;
  nk_status st = nk__mpi_begin(&m, ctx, op, comm);
  if (st != NK_STATUS_OK) return st;
  void *slots = NULL;
  const size_t elem = elem_doubles * sizeof(double);
  size_t bytes = 0;
  nk_status local = NK_STATUS_OK;
  if (values == NULL && n > 0) {
    local = nk__mpi_fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: the array is NULL with n = %zu > 0",
                         op, n);
  } else if (n > (size_t)INT_MAX / elem_doubles) {
    local = nk__mpi_fail(ctx, NK_STATUS_UNSUPPORTED,
                         "%s: n = %zu exceeds what one MPI count holds (%zu)", op, n,
                         (size_t)INT_MAX / elem_doubles);
  } else if (n > 0) {
    bytes = nk__mpi_slots_bytes(m.size, n, elem);
    slots = bytes ? malloc(bytes) : NULL;
    if (slots == NULL)
      local = nk__mpi_fail(ctx, NK_STATUS_OUT_OF_MEMORY,
                           "%s: cannot allocate %d x %zu entries for the all-gather", op, m.size,
                           n);
  }
  st = nk__mpi_agree(&m, local, n, "n");
  if (st != NK_STATUS_OK || n == 0) goto done;
  memcpy((char *)slots + (size_t)m.rank * n * elem, values, n * elem);
  st = nk__mpi_allgather(&m, slots, n * elem_doubles);
  if (st != NK_STATUS_OK) goto done;
  if (elem_doubles == 3)
    nk__mpi_fold_moments(m.size, n, slots);
  else
    nk__mpi_fold_sums(m.size, n, slots);
  memcpy(values, slots, n * elem);
done:
  free(slots);
  return st == NK_STATUS_OK ? nk__mpi_ok(ctx) : st;
}

nk_status nk_mpi_moments_allreduce(nk_context *ctx, MPI_Comm comm, size_t n,
                                   nk_moments *moments) {
  return nk__mpi_allreduce(ctx, comm, "mpi_moments_allreduce", n, moments, 3);
}

nk_status nk_mpi_sum_allreduce(nk_context *ctx, MPI_Comm comm, size_t n, double *values) {
  return nk__mpi_allreduce(ctx, comm, "mpi_sum_allreduce", n, values, 1);
}
