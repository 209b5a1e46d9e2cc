/*
 * rownorm.c — tensor-parallel LayerNorm and RMSNorm over MPI: each rank holds every row but only
 * a slice of its columns.
 *   nk_moments_rows (local slice) -> all-gather rows moments -> merge in rank order ->
 *   nk_layernorm_fwd_moments / nk_rmsnorm_fwd_moments (local slice, whole-row statistics)
 *
 * A rank with no columns contributes count 0; if it asked for mean/rstd it runs the core's
 * second step on a zero-filled stand-in slice of one column (no gamma/beta), whose mean/rstd
 * depend on the merged moments only, so they are the same bits as on the other ranks.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"

static nk_status nk__mpi_rownorm(nk_context *ctx, MPI_Comm comm, const char *op, int rms,
                                 const nk_norm_desc *desc, const void *x, const void *gamma,
                                 const void *beta, void *y, float *mean, float *rstd) {
  nk__mpi m;
  nk_status st = nk__mpi_begin(&m, ctx, op, comm);
  if (st != NK_STATUS_OK) return st;
  nk_moments *slots = NULL;
  unsigned char *standin = NULL;
  size_t rows = 0, standin_bytes = 0;
  nk_status local = NK_STATUS_OK;

  if (desc == NULL) {
    local = nk__mpi_fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  } else if (desc->rows > (size_t)INT_MAX / 3) {
    local = nk__mpi_fail(ctx, NK_STATUS_UNSUPPORTED,
                         "%s: rows %zu exceed what one MPI count holds", op, desc->rows);
  } else if (desc->rows > 0) {
    rows = desc->rows;
    const size_t bytes = nk__mpi_slots_bytes(m.size, rows, sizeof(nk_moments));
    slots = bytes ? malloc(bytes) : NULL;
    nk_moments *mine = slots ? slots + (size_t)m.rank * rows : NULL;
    if (slots == NULL) {
      local = nk__mpi_fail(ctx, NK_STATUS_OUT_OF_MEMORY, "%s: cannot allocate %d x %zu moments",
                           op, m.size, rows);
    } else if (desc->cols > 0) {
      local = nk_moments_rows(ctx, rows, desc->cols, desc->dtype, x, desc->x_stride, mine);
    } else {
      memset(mine, 0, rows * sizeof *mine); /* count 0: leaves the merge unchanged */
      const size_t elem = nk_dtype_size(desc->dtype) ? nk_dtype_size(desc->dtype) : 4;
      if ((mean != NULL || rstd != NULL) &&
          (__builtin_mul_overflow(rows, 2 * elem, &standin_bytes) ||
           (standin = calloc(1, standin_bytes)) == NULL))
        local = nk__mpi_fail(ctx, NK_STATUS_OUT_OF_MEMORY,
                             "%s: cannot allocate the stand-in slice", op);
    }
  }

  st = nk__mpi_agree(&m, local, rows, "rows");
  if (st != NK_STATUS_OK || rows == 0) goto done;
  st = nk__mpi_allgather(&m, slots, 3 * rows);
  if (st != NK_STATUS_OK) goto done;
  nk__mpi_fold_moments(m.size, rows, slots);

  if (desc->cols > 0) {
    st = rms ? nk_rmsnorm_fwd_moments(ctx, desc, slots, x, gamma, beta, y, rstd)
             : nk_layernorm_fwd_moments(ctx, desc, slots, x, gamma, beta, y, mean, rstd);
  } else if (standin != NULL && slots[0].count > 0.0) {
    nk_norm_desc e = *desc;
    e.cols = 1;
    e.x_stride = e.y_stride = 1;
    e.flags &= ~NK_NORM_GAMMA_OFFSET; /* no gamma on the stand-in */
    const size_t half = standin_bytes / 2;
    st = rms ? nk_rmsnorm_fwd_moments(ctx, &e, slots, standin, NULL, NULL, standin + half, rstd)
             : nk_layernorm_fwd_moments(ctx, &e, slots, standin, NULL, NULL, standin + half,
                                        mean, rstd);
  }
done:
  free(slots);
  free(standin);
  return st == NK_STATUS_OK ? nk__mpi_ok(ctx) : st;
}

nk_status nk_mpi_layernorm_fwd(nk_context *ctx, MPI_Comm comm, const nk_layernorm_desc *desc,
                               const void *x, const void *gamma, const void *beta, void *y,
                               float *mean, float *rstd) {
  return nk__mpi_rownorm(ctx, comm, "mpi_layernorm_fwd", 0, desc, x, gamma, beta, y, mean, rstd);
}

nk_status nk_mpi_rmsnorm_fwd(nk_context *ctx, MPI_Comm comm, const nk_rmsnorm_desc *desc,
                             const void *x, const void *gamma, const void *beta, void *y,
                             float *rstd) {
  return nk__mpi_rownorm(ctx, comm, "mpi_rmsnorm_fwd", 1, desc, x, gamma, beta, y, NULL, rstd);
}
