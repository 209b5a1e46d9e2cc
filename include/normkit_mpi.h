/*
 * normkit_mpi.h — distributed statistics over MPI: synchronized BatchNorm and tensor-parallel
 * (sharded-row) LayerNorm/RMSNorm, built on a rank-ordered all-reduce of nk_moments.
 * The optional library normkit_mpi (CMake option NK_MPI); link it together with normkit and
 * MPI. The core library (normkit.h) knows nothing of MPI. Design notes: docs/ops/distributed.md.
 *
 * Conventions that hold for every function below (in addition to those of normkit.h)
 * ----------------------------------------------------------------------------------
 * - Collective: every rank of `comm` must make the same call, in the same order relative to
 *   its other collective calls on `comm`, with the same global sizes (BatchNorm: channels;
 *   row norms: rows; the all-reduces: n). Local sizes may differ (each rank its own batch, or
 *   its own slice of the columns; zero is allowed).
 * - Deterministic: partial statistics are all-gathered (every rank receives every rank's
 *   partials), then every rank combines them itself in rank order 0, 1, ..., P-1 with the
 *   same arithmetic. The result therefore never depends on timing or on MPI's internal
 *   reduction trees, and every rank ends with identical bits. The same data split the same way
 *   over the same number of ranks gives the same bits run after run. (A different split or
 *   rank count gives results that differ in the last bits, within the accuracy bounds.)
 * - Agreement on failure: before any output is written, the ranks exchange their local
 *   verdicts (argument checks of the local step, allocation, size agreement) in one small
 *   MPI_Allreduce. If any rank failed, every rank returns a failure and writes nothing: the
 *   failing rank its own status and message, the others the status of the lowest failing rank
 *   with the message "...: rank R failed its local step". A different global size on two ranks
 *   is INVALID_ARGUMENT on every rank. Errors found after the exchange, by the local normalize
 *   step (for example an output that overlaps an input on one rank), are reported by that rank
 *   alone; the other ranks complete.
 * - MPI must be initialized and not finalized (else MISUSE, found locally without
 *   communicating); comm must be an intra-communicator (MPI_COMM_NULL: INVALID_ARGUMENT; an
 *   inter-communicator: UNSUPPORTED). If the caller uses MPI from several threads, the usual
 *   MPI threading rules apply (MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE as needed).
 * - MPI errors: with MPI's default error handler (MPI_ERRORS_ARE_FATAL) an MPI failure aborts
 *   the job inside MPI. With MPI_ERRORS_RETURN set on comm, a failed MPI call is returned as a
 *   status with MPI's error string in the context message: MPI_ERR_COMM, MPI_ERR_ARG,
 *   MPI_ERR_COUNT, MPI_ERR_BUFFER as INVALID_ARGUMENT; MPI_ERR_NO_MEM as OUT_OF_MEMORY; every
 *   other error class as MISUSE. No new status values exist for MPI.
 * - Memory: unlike the core operators, these functions allocate (and free before returning)
 *   their communication buffers and the core's workspace: about P * n * 24 bytes for the
 *   moments (P ranks, n channels or rows), plus the core workspace of the local step.
 *   Failure to allocate is OUT_OF_MEMORY (agreed over the ranks like any local failure).
 * - Counts (elements per channel or per row, summed over the ranks) are exact up to 2^53.
 *   Global sizes n must satisfy 3 * n <= INT_MAX (MPI counts are int), else UNSUPPORTED.
 */
#ifndef NORMKIT_MPI_H
#define NORMKIT_MPI_H

#include <mpi.h>

#include "normkit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Building blocks                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* Rank-ordered all-reduce of n moments, in place:
 *   moments[i] <- m_0[i] (+) m_1[i] (+) ... (+) m_{P-1}[i]
 * where m_r is rank r's array on entry and (+) is nk_moments_merge applied as a left fold in
 * rank order (acc = m_0[i]; acc = merge(acc, m_r[i]) for r = 1 .. P-1). A rank whose entry has
 * count 0 changes nothing (the merge leaves the other side unchanged bit for bit), so empty
 * ranks may take part. Every rank leaves with identical bits.
 *   comm     any intra-communicator.
 *   n        entries per rank; must be the same on every rank.
 *   moments  IN/OUT n entries (may be NULL when n == 0).
 * Returns OK, INVALID_ARGUMENT (moments NULL with n > 0, n differs across ranks, MPI_COMM_NULL),
 * UNSUPPORTED (3 * n > INT_MAX, inter-communicator), OUT_OF_MEMORY, MISUSE (MPI not
 * initialized or already finalized, or an MPI error). */
NK_API nk_status nk_mpi_moments_allreduce(nk_context *ctx, MPI_Comm comm, size_t n,
                                          nk_moments *moments);

/* Rank-ordered sum of n doubles, in place: values[i] <- ((v_0[i] + v_1[i]) + v_2[i]) + ...,
 * each addition rounded in double, on every rank (not MPI_Allreduce with MPI_SUM, whose order
 * is unspecified). Every rank leaves with identical bits.
 * Returns as nk_mpi_moments_allreduce (3 * n there is n here). */
NK_API nk_status nk_mpi_sum_allreduce(nk_context *ctx, MPI_Comm comm, size_t n, double *values);

/* ------------------------------------------------------------------------------------------ */
/* Synchronized BatchNorm (training): statistics over the batches of all ranks                 */
/* ------------------------------------------------------------------------------------------ */
/*
 * Each rank holds its own part of the batch (desc->batch samples, which may differ between
 * ranks and may be 0); channels, spatial size and every other descriptor field are the same on
 * every rank. The result on each rank is the BatchNorm of the concatenated batch, restricted to
 * that rank's samples: mean and variance per channel over all ranks' N_r * S elements; the
 * running statistics are updated with the global statistics and count (identical on every
 * rank, a rank with no samples included); dgamma/dbeta are the sums over all ranks (identical
 * on every rank).
 *
 * Accuracy: the same bound as nk_batchnorm_fwd/bwd on the concatenated batch (f32 outputs
 * within 2e-6 * max|float64 reference| of the channel; docs/ops/distributed.md), hence within
 * 4e-6 * max|reference| of the single-process normkit result. With all the data on one rank
 * (the others empty) the results are bit-identical to nk_batchnorm_fwd/bwd on that rank.
 */

/* Forward (desc->flags must contain NK_CHNORM_TRAINING; inference needs no communication: use
 * nk_batchnorm_fwd). Arguments as nk_batchnorm_fwd, without the workspace (allocated here).
 * Steps: nk_batchnorm_moments on the local batch; nk_mpi_moments_allreduce of the C moments;
 * nk_batchnorm_fwd_moments with the merged moments. If every rank's batch is empty, nothing
 * is written (as nk_batchnorm_fwd with N == 0). A rank with no samples writes no y but
 * updates running_mean/running_var/num_batches_tracked and writes save_mean/save_rstd like
 * the others.
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED (no TRAINING flag; dtype combination; sizes),
 * OUT_OF_MEMORY, MISUSE. */
NK_API nk_status nk_mpi_batchnorm_fwd(nk_context *ctx, MPI_Comm comm,
                                      const nk_batchnorm_desc *desc, const void *x,
                                      const void *z, const void *gamma, const void *beta,
                                      float *running_mean, float *running_var,
                                      int64_t *num_batches_tracked, void *y, float *save_mean,
                                      float *save_rstd);

/* Backward of nk_mpi_batchnorm_fwd (desc->flags must contain NK_CHNORM_TRAINING; the
 * inference backward has no batch statistics: use nk_batchnorm_bwd and reduce dgamma/dbeta
 * as other parameter gradients). Arguments as nk_batchnorm_bwd, without the workspace.
 * save_mean/save_rstd are those nk_mpi_batchnorm_fwd wrote (the same on every rank).
 * Steps: nk_batchnorm_bwd_reduce on the local batch (3 sums per channel) plus the local
 * element count; all-gather of those 3*C + 1 doubles and their sum in rank order, as
 * nk_mpi_sum_allreduce but skipping ranks with no samples (the count sum is exact);
 * nk_batchnorm_bwd_apply with the summed sums and the total count.
 * dgamma/dbeta (optional) are overwritten, or accumulated with NK_CHNORM_ACCUMULATE, with the
 * global sums: identical on every rank, a rank with no samples included (it writes no dx).
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED, OUT_OF_MEMORY, MISUSE. */
NK_API nk_status nk_mpi_batchnorm_bwd(nk_context *ctx, MPI_Comm comm,
                                      const nk_batchnorm_desc *desc, const void *x,
                                      const void *y, const void *gamma, const float *save_mean,
                                      const float *save_rstd, const void *dy, void *dx,
                                      void *dz, void *dgamma, void *dbeta);

/* ------------------------------------------------------------------------------------------ */
/* Tensor-parallel row norms: the normalized (hidden) dimension split across ranks             */
/* ------------------------------------------------------------------------------------------ */
/*
 * Each rank holds the same rows but only its slice of the columns (desc->cols local columns,
 * which may differ between ranks and may be 0; gamma/beta hold the local slice). The
 * statistics of each row are over the whole row: nk_moments_rows on the local slice,
 * nk_mpi_moments_allreduce of the rows moments, then nk_layernorm_fwd_moments /
 * nk_rmsnorm_fwd_moments on the local slice. desc: rows (the same on every rank), cols (local),
 * dtype, param_dtype, eps, flags (NK_NORM_GAMMA_OFFSET only), x_stride, y_stride. No residual.
 * mean/rstd (OUT, optional, rows floats) are the statistics of the whole row, identical on
 * every rank (a rank with no columns writes them too). y may be x.
 *
 * Accuracy: f32 outputs within 2e-6 * max|float64 reference| of the whole row, as
 * nk_layernorm_fwd/nk_rmsnorm_fwd on the full rows (so within 4e-6 * max|reference| of the
 * single-process normkit result). Bit-identical on every rank and run after run.
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED, OUT_OF_MEMORY, MISUSE. */
NK_API nk_status nk_mpi_layernorm_fwd(nk_context *ctx, MPI_Comm comm,
                                      const nk_layernorm_desc *desc, const void *x,
                                      const void *gamma, const void *beta, void *y,
                                      float *mean, float *rstd);
NK_API nk_status nk_mpi_rmsnorm_fwd(nk_context *ctx, MPI_Comm comm, const nk_rmsnorm_desc *desc,
                                    const void *x, const void *gamma, const void *beta, void *y,
                                    float *rstd);

#ifdef __cplusplus
}
#endif
#endif /* NORMKIT_MPI_H */
