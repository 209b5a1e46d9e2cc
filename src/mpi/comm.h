/*
 * comm.h — what the MPI layer's files share (not installed): the call record, failure
 * messages, the agreement step and the rank-ordered combination of all-gathered partials.
 *
 * Every collective entry point runs the same three steps:
 *   1. nk__mpi_begin: local checks of MPI's state and the communicator (no communication);
 *   2. the local step (argument checks, allocation, local statistics), then nk__mpi_agree:
 *      one MPI_Allreduce(MAX) of the local verdict and the global size, so that every rank
 *      fails together, before any output is written, when any rank failed;
 *   3. nk__mpi_allgather of the partials (in place), then a fold in rank order
 *      (nk__mpi_fold_moments, nk__mpi_fold_sums) that every rank performs identically.
 */
#ifndef NK_MPI_COMM_H
#define NK_MPI_COMM_H

#include <stddef.h>

#include "normkit_mpi.h"

typedef struct nk__mpi {
  nk_context *ctx;
  const char *op; /* "mpi_batchnorm_fwd", ... for messages */
  MPI_Comm comm;
  int rank, size;
} nk__mpi;

/* Records a printf-style message on ctx (if not NULL) and returns status. The MPI layer's own
 * copy of the core's nk__fail (which the shared core library does not export). */
nk_status nk__mpi_fail(nk_context *ctx, nk_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Clears ctx's message and returns NK_STATUS_OK. */
nk_status nk__mpi_ok(nk_context *ctx);

/* Step 1: MPI initialized and not finalized (else MISUSE), comm not MPI_COMM_NULL
 * (INVALID_ARGUMENT), an intra-communicator (UNSUPPORTED); fills m. Local only. */
nk_status nk__mpi_begin(nk__mpi *m, nk_context *ctx, const char *op, MPI_Comm comm);

/* Step 2: every rank passes its local status and its global size n (what: its name for
 * messages, "channels"). Returns local if it failed (its message stays), else the status of
 * the lowest failing rank, else INVALID_ARGUMENT if n differs across ranks, else OK. */
nk_status nk__mpi_agree(const nk__mpi *m, nk_status local, size_t n, const char *what);

/* Step 3: buf holds size slots of per_rank doubles; this rank's slot (index rank) is filled on
 * entry, every slot on return. per_rank <= INT_MAX (checked by the caller's local step). */
nk_status nk__mpi_allgather(const nk__mpi *m, void *buf, size_t per_rank);

/* slots[r * n + i] for r < size: folds slot r into slot 0 for r = 1 .. size-1 in order,
 * with nk_moments_merge (moments) or a double addition (sums). The result is slot 0. */
void nk__mpi_fold_moments(int size, size_t n, nk_moments *slots);
void nk__mpi_fold_sums(int size, size_t n, double *slots);

/* Bytes of size slots of n elements of elem bytes; 0 on overflow (the caller reports it). */
size_t nk__mpi_slots_bytes(int size, size_t n, size_t elem);

/* Maps an MPI error code to a status with MPI's error string as the message. */
nk_status nk__mpi_error(const nk__mpi *m, const char *call, int err);

#endif /* NK_MPI_COMM_H */
