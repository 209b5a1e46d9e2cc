/*
 * conda_svd.c — the Conda basis refresh through the system's LAPACK (normkit_lapack.h).
 *
 * A row-major rows x cols matrix M is the column-major cols x rows matrix M^T = V S U^T, so
 * gesdd in column-major on the unchanged buffer (m' = cols, n' = rows, lda = cols) returns
 * U' = V (cols x k, column-major) and VT' = U^T (k x rows): read as row-major arrays, U' is V^T
 * (the RIGHT basis when k = cols) and VT' is U (the LEFT basis when k = rows). No transposes,
 * and LAPACKE's column-major _work interface allocates nothing. gesdd destroys its input: it
 * works on a copy in the workspace.
 */
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "internal.h"
#include "normkit_lapack.h"
#include "validate.h"

/* The workspace after its aligned start: floats copy[rows*cols] (at 0), s[k], other[k*max],
 * work[lwork], then iwork[8k] (lapack_int) at byte offset iwork. */
typedef struct svd_plan {
  lapack_int m, n, k, lwork;
  size_t s, other, work; /* float offsets */
  size_t iwork, bytes;   /* byte offset of iwork; workspace bytes */
} svd_plan;

static int side_ok(nk_conda_side side, size_t rows, size_t cols) {
  return (side == NK_CONDA_SIDE_RIGHT && rows >= cols) ||
         (side == NK_CONDA_SIDE_LEFT && rows <= cols);
}

/* 0 on success; 1 bad side/shape; 2 beyond lapack_int; 3 size overflow or failed query. */
static int plan(nk_conda_side side, size_t rows, size_t cols, svd_plan *p) {
  memset(p, 0, sizeof *p);
  if (side != NK_CONDA_SIDE_RIGHT && side != NK_CONDA_SIDE_LEFT) return 1;
  if (rows == 0 || cols == 0) return 0; /* nothing to do */
  if (!side_ok(side, rows, cols)) return 1;
  size_t mn;
  if (rows > (size_t)INT_MAX || cols > (size_t)INT_MAX || !nk__mul_size(rows, cols, &mn) ||
      mn > (size_t)INT_MAX)
    return 2;
  p->m = (lapack_int)cols;
  p->n = (lapack_int)rows;
  p->k = p->m < p->n ? p->m : p->n;
  /* LAPACK's own workspace answer (a query: nothing is read or written but the result). */
  float q = 0.0f, dummy = 0.0f;
  lapack_int iq = 0;
  const lapack_int info =
      LAPACKE_sgesdd_work(LAPACK_COL_MAJOR, 'S', p->m, p->n, &dummy, p->m, &dummy, &dummy,
                          p->m, &dummy, p->k, &q, -1, &iq);
  if (info != 0 || !(q >= 1.0f) || q > (float)INT_MAX) return 3;
  p->lwork = (lapack_int)q;
  const size_t big = rows > cols ? rows : cols, k = (size_t)p->k;
  size_t other, floats, iw, total;
  p->s = mn;
  p->other = p->s + k;
  if (!nk__mul_size(k, big, &other)) return 3;
  p->work = p->other + other;
  if (!nk__add_size(p->work, (size_t)p->lwork, &floats) ||
      !nk__mul_size(floats, sizeof(float), &total) ||
      !nk__mul_size(8 * k, sizeof(lapack_int), &iw))
    return 3;
  /* iwork after the floats, aligned for lapack_int */
  p->iwork = (total + sizeof(lapack_int) - 1) / sizeof(lapack_int) * sizeof(lapack_int);
  if (!nk__add_size(p->iwork, iw, &total) || !nk__ws_bytes(total, &p->bytes)) return 3;
  return 0;
}

nk_status nk_conda_svd_basis_workspace_size(nk_conda_side side, size_t rows, size_t cols,
                                            size_t *bytes) {
  if (bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;
  svd_plan p;
  const int r = plan(side, rows, cols, &p);
  if (r == 1 || r == 3) return NK_STATUS_INVALID_ARGUMENT;
  if (r == 2) return NK_STATUS_UNSUPPORTED;
  *bytes = p.bytes;
  return NK_STATUS_OK;
}

nk_status nk_conda_svd_basis(nk_context *ctx, nk_conda_side side, size_t rows, size_t cols,
                             const float *exp_avg, float *basis, void *workspace,
                             size_t workspace_size) {
  const char *op = "conda_svd_basis";
  svd_plan p;
  const int r = plan(side, rows, cols, &p);
  if (r == 1)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: side %d with %zu x %zu (RIGHT needs rows >= cols, LEFT rows <= cols)",
                    op, (int)side, rows, cols);
  if (r == 2)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: %zu x %zu exceeds LAPACK's 32-bit sizes", op,
                    rows, cols);
  if (r == 3)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  if (rows == 0 || cols == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(exp_avg);
  NK_REQUIRE_PTR(basis);
  const size_t nb = side == NK_CONDA_SIDE_RIGHT ? cols * cols : rows * rows;
  span s[3];
  TRY(nk__vector_span(ctx, op, &s[0], "exp_avg", exp_avg, rows * cols, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "basis", basis, nb, sizeof(float), 1));
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, p.bytes));
  s[2] = (span){"workspace", workspace, 0, 1, p.bytes, 1, 0};
  TRY(nk__check_overlaps(ctx, op, s, 3, nk__no_alias));
  for (size_t i = 0; i < rows * cols; i++)
    if (!isfinite(exp_avg[i]))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: exp_avg[%zu] = %g is not finite", op,
                      i, (double)exp_avg[i]);

  float *w = nk__ws_align(workspace);
  float *a = w, *sv = w + p.s, *other = w + p.other, *work = w + p.work;
  lapack_int *iwork = (lapack_int *)((char *)w + p.iwork);
  memcpy(a, exp_avg, rows * cols * sizeof(float));
  /* RIGHT (rows >= cols, k = cols): U' = V^T is the basis, VT' (k x rows) is scratch.
   * LEFT (rows <= cols, k = rows): U' (cols x k) is scratch, VT' = U is the basis. */
  float *u = side == NK_CONDA_SIDE_RIGHT ? basis : other;
  float *vt = side == NK_CONDA_SIDE_RIGHT ? other : basis;
  const lapack_int info = LAPACKE_sgesdd_work(LAPACK_COL_MAJOR, 'S', p.m, p.n, a, p.m, sv, u,
                                              p.m, vt, p.k, work, p.lwork, iwork);
  if (info > 0)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED, "%s: gesdd did not converge (info %d)", op,
                    (int)info);
  if (info < 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: gesdd rejected argument %d", op,
                    (int)-info);
  return nk__ok(ctx);
}
