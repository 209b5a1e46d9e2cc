/*
 * batchnorm.c — synchronized BatchNorm (training) over MPI, on the core's split entry points:
 *   forward:  nk_batchnorm_moments (local) -> all-gather C moments -> merge in rank order ->
 *             nk_batchnorm_fwd_moments (local normalize, running update with the global count)
 *   backward: nk_batchnorm_bwd_reduce (local 3*C sums) + local count -> all-gather -> add in
 *             rank order -> nk_batchnorm_bwd_apply (local dx; dgamma/dbeta from global sums)
 *
 * A rank with no samples (N*S == 0) contributes count 0 and zero sums (merging or adding them
 * changes nothing) and still calls the core's second step with its empty batch: the core then
 * writes the statistics, running estimates (nk_batchnorm_fwd_moments) and dgamma/dbeta
 * (nk_batchnorm_bwd_apply) from the global values, the same bits as every other rank, and
 * reads or writes no tensor.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"

/* Common local checks; OK or a failure with its message. */
static nk_status nk__mpi_bn_check(const nk__mpi *m, const nk_batchnorm_desc *desc,
                                  size_t per_channel_doubles, size_t *elems) {
  if (desc == NULL) return nk__mpi_fail(m->ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", m->op);
  if (!(desc->flags & NK_CHNORM_TRAINING))
    return nk__mpi_fail(m->ctx, NK_STATUS_UNSUPPORTED,
                        "%s: needs NK_CHNORM_TRAINING (inference uses the running statistics "
                        "and needs no communication: call the core function)",
                        m->op);
  if (__builtin_mul_overflow(desc->batch, desc->spatial, elems))
    return nk__mpi_fail(m->ctx, NK_STATUS_INVALID_ARGUMENT, "%s: batch %zu x spatial %zu overflows",
                        m->op, desc->batch, desc->spatial);
  if (desc->channels > ((size_t)INT_MAX - 1) / per_channel_doubles)
    return nk__mpi_fail(m->ctx, NK_STATUS_UNSUPPORTED,
                        "%s: channels %zu exceed what one MPI count holds", m->op,
                        desc->channels);
  return NK_STATUS_OK;
}

/* The rank-ordered sum of the backward's slots (3*C sums, then the count), skipping ranks with
 * count 0: they add nothing, not even the sign of a zero, so that one rank holding all the data
 * gives exactly the sums of nk_batchnorm_bwd. The result is slot 0 (all zero if every rank is
 * empty). */
static void nk__mpi_bn_fold_sums(int size, size_t per_rank, double *slots) {
  int first = 0;
  while (first < size && slots[(size_t)first * per_rank + per_rank - 1] == 0.0) first++;
  if (first == size) return; /* every slot is zero already */
  if (first > 0) memcpy(slots, slots + (size_t)first * per_rank, per_rank * sizeof *slots);
  for (int r = first + 1; r < size; r++) {
    const double *s = slots + (size_t)r * per_rank;
    if (s[per_rank - 1] == 0.0) continue;
    for (size_t i = 0; i < per_rank; i++) slots[i] += s[i];
  }
}

nk_status nk_mpi_batchnorm_fwd(nk_context *ctx, MPI_Comm comm, const nk_batchnorm_desc *desc,
                               const void *x, const void *z, const void *gamma,
                               const void *beta, float *running_mean, float *running_var,
                               int64_t *num_batches_tracked, void *y, float *save_mean,
                               float *save_rstd) {
  nk__mpi m;
  nk_status st = nk__mpi_begin(&m, ctx, "mpi_batchnorm_fwd", comm);
  if (st != NK_STATUS_OK) return st;
  nk_moments *slots = NULL;
  void *ws = NULL;
  size_t elems = 0, channels = 0;

  nk_status local = nk__mpi_bn_check(&m, desc, 3, &elems);
  if (local == NK_STATUS_OK && desc->channels > 0) {
    channels = desc->channels;
    const size_t bytes = nk__mpi_slots_bytes(m.size, channels, sizeof(nk_moments));
    slots = bytes ? malloc(bytes) : NULL;
    nk_moments *mine = slots ? slots + (size_t)m.rank * channels : NULL;
    size_t ws_bytes = 0;
    if (slots == NULL) {
      local = nk__mpi_fail(ctx, NK_STATUS_OUT_OF_MEMORY,
                           "%s: cannot allocate %d x %zu moments", m.op, m.size, channels);
    } else if (elems > 0) {
      local = nk_batchnorm_fwd_workspace_size(desc, &ws_bytes);
      if (local != NK_STATUS_OK) {
        nk__mpi_fail(ctx, local, "%s: nk_batchnorm_fwd_workspace_size failed (%s)", m.op,
                     nk_status_string(local));
      } else if ((ws = malloc(ws_bytes ? ws_bytes : 1)) == NULL) {
        local = nk__mpi_fail(ctx, NK_STATUS_OUT_OF_MEMORY,
                             "%s: cannot allocate %zu bytes of workspace", m.op, ws_bytes);
      } else {
        local = nk_batchnorm_moments(ctx, desc, x, mine, ws, ws_bytes);
      }
    } else {
      memset(mine, 0, channels * sizeof *mine); /* count 0: leaves the merge unchanged */
    }
  }

  st = nk__mpi_agree(&m, local, channels, "channels");
  if (st != NK_STATUS_OK || channels == 0) goto done;
  st = nk__mpi_allgather(&m, slots, 3 * channels);
  if (st != NK_STATUS_OK) goto done;
  nk__mpi_fold_moments(m.size, channels, slots);
  if (slots[0].count == 0.0) goto done; /* every rank empty: nothing to do, as N == 0 */

  /* An empty local batch reads and writes no tensor but still gets the statistics and the
   * running update (normkit.h, nk_batchnorm_fwd_moments). */
  st = nk_batchnorm_fwd_moments(ctx, desc, slots, x, z, gamma, beta, running_mean, running_var,
                                num_batches_tracked, y, save_mean, save_rstd);
done:
  free(slots);
  free(ws);
  return st == NK_STATUS_OK ? nk__mpi_ok(ctx) : st;
}

nk_status nk_mpi_batchnorm_bwd(nk_context *ctx, MPI_Comm comm, const nk_batchnorm_desc *desc,
                               const void *x, const void *y, const void *gamma,
                               const float *save_mean, const float *save_rstd, const void *dy,
                               void *dx, void *dz, void *dgamma, void *dbeta) {
  nk__mpi m;
  nk_status st = nk__mpi_begin(&m, ctx, "mpi_batchnorm_bwd", comm);
  if (st != NK_STATUS_OK) return st;
  double *slots = NULL;
  void *ws = NULL;
  size_t elems = 0, channels = 0, per_rank = 0;

  nk_status local = nk__mpi_bn_check(&m, desc, 3, &elems);
  if (local == NK_STATUS_OK && desc->channels > 0) {
    channels = desc->channels;
    per_rank = 3 * channels + 1; /* the 3*C sums, then this rank's element count */
    const size_t bytes = nk__mpi_slots_bytes(m.size, per_rank, sizeof(double));
    slots = bytes ? malloc(bytes) : NULL;
    double *mine = slots ? slots + (size_t)m.rank * per_rank : NULL;
    size_t ws_bytes = 0;
    if (slots == NULL) {
      local = nk__mpi_fail(ctx, NK_STATUS_OUT_OF_MEMORY,
                           "%s: cannot allocate %d x %zu sums", m.op, m.size, per_rank);
    } else if (elems > 0) {
      mine[3 * channels] = (double)elems;
      local = nk_batchnorm_bwd_workspace_size(desc, &ws_bytes);
      if (local != NK_STATUS_OK) {
        nk__mpi_fail(ctx, local, "%s: nk_batchnorm_bwd_workspace_size failed (%s)", m.op,
                     nk_status_string(local));
      } else if ((ws = malloc(ws_bytes ? ws_bytes : 1)) == NULL) {
        local = nk__mpi_fail(ctx, NK_STATUS_OUT_OF_MEMORY,
                             "%s: cannot allocate %zu bytes of workspace", m.op, ws_bytes);
      } else {
        local = nk_batchnorm_bwd_reduce(ctx, desc, x, y, save_mean, dy, mine, ws, ws_bytes);
      }
    } else {
      memset(mine, 0, per_rank * sizeof *mine); /* zero sums and count: skipped by the fold */
    }
  }

  st = nk__mpi_agree(&m, local, channels, "channels");
  if (st != NK_STATUS_OK || channels == 0) goto done;
  st = nk__mpi_allgather(&m, slots, per_rank);
  if (st != NK_STATUS_OK) goto done;
  nk__mpi_bn_fold_sums(m.size, per_rank, slots);
  const double count = slots[3 * channels];
  if (count == 0.0) goto done; /* every rank empty */
  /* With an empty local batch the core writes no dx but still computes dgamma/dbeta from the
   * global sums (src/ops/chnorm.c, nk_batchnorm_bwd_apply), the same bits as every rank. */
  st = nk_batchnorm_bwd_apply(ctx, desc, count, slots, x, y, gamma, save_mean, save_rstd, dy, dx,
                              dz, dgamma, dbeta);
done:
  free(slots);
  free(ws);
  return st == NK_STATUS_OK ? nk__mpi_ok(ctx) : st;
}
