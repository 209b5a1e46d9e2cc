/*
 * normkit_lapack.h — what needs a LAPACK: the Conda basis refresh (the thin SVD of the first
 * moment). The optional library normkit_lapack (CMake option NK_LAPACK, LAPACKE and LAPACK
 * from the system: Debian liblapacke-dev); link it together with normkit. The core library
 * (normkit.h) knows nothing of LAPACK: nk_conda_step takes the basis as an input, and these
 * functions compute it the way the official Conda code does (torch.linalg.svd, float32,
 * full_matrices=False, which calls LAPACK's gesdd). Design notes: docs/ops/conda.md.
 *
 * Conventions (in addition to those of normkit.h): validation is complete before anything is
 * written; the workspace is the caller's (no allocation by normkit; the LAPACK routine is
 * called through its column-major interface, which allocates nothing either); the result is
 * that of the system's LAPACK: the same library and input give the same bits, another LAPACK
 * (reference, OpenBLAS, MKL) may give other bits and other signs of the singular vectors.
 * A sign flip of a basis vector does not change a Conda step (the coordinate's m and g flip
 * together, v squares them, the back-projection flips the update back); a rotation within a
 * repeated singular value does, as in the official code.
 */
#ifndef NORMKIT_LAPACK_H
#define NORMKIT_LAPACK_H

#include "normkit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of the workspace of nk_conda_svd_basis for a rows x cols exp_avg: a copy of it, the
 * singular values, the factor that is not returned, LAPACK's work and iwork arrays (the work
 * size is LAPACK's own answer to a workspace query), plus NK_WORKSPACE_ALIGN. Returns OK,
 * INVALID_ARGUMENT (NULL bytes, a side/shape pair nk_conda_svd_basis rejects, size overflow)
 * or UNSUPPORTED (a dimension beyond LAPACK's 32-bit integers). */
NK_API nk_status nk_conda_svd_basis_workspace_size(nk_conda_side side, size_t rows, size_t cols,
                                                   size_t *bytes);

/* The Conda basis of the thin SVD exp_avg = U S V^T (float32 gesdd, jobz 'S'), singular values
 * in decreasing order:
 *   NK_CONDA_SIDE_RIGHT (rows >= cols): basis = V^T, cols x cols row-major;
 *   NK_CONDA_SIDE_LEFT  (rows <= cols): basis = U,   rows x rows row-major;
 * exactly the basis nk_conda_step reads for that side. The other pairs (RIGHT with rows < cols,
 * LEFT with rows > cols: the thin factor is not square; NONE) are INVALID_ARGUMENT: use
 * nk_conda_std_side, or the side the thin factor allows.
 *   exp_avg   IN  rows x cols floats, the moment after nk_conda_update_moment; every value
 *             finite (NaN or inf: INVALID_ARGUMENT, nothing written: LAPACK's behaviour on
 *             them is not defined).
 *   basis     OUT the basis (it may not overlap exp_avg or the workspace).
 *   workspace nk_conda_svd_basis_workspace_size bytes, at any address.
 * A zero matrix gives LAPACK's orthonormal basis of its zero singular values (the identity
 * with the reference LAPACK). rows or cols 0 (side RIGHT or LEFT): nothing to do, OK.
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED (sizes beyond 32-bit LAPACK integers), MISUSE
 * (workspace too small or NULL) or NK_STATUS_UNSUPPORTED with the message "gesdd did not
 * converge" when LAPACK reports info > 0 (basis then undefined). */
NK_API nk_status nk_conda_svd_basis(nk_context *ctx, nk_conda_side side, size_t rows,
                                    size_t cols, const float *exp_avg, float *basis,
                                    void *workspace, size_t workspace_size);

#ifdef __cplusplus
}
#endif

#endif /* NORMKIT_LAPACK_H */
