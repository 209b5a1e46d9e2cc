/*
 * tests/lapack/conda_svd.c — the Conda basis refresh (normkit_lapack.h, nk_conda_svd_basis).
 *
 * What makes a basis the SVD basis, checked in double independently of LAPACK: it is
 * orthonormal (|B B^T - I| <= 2e-5), and it diagonalizes the moment: RIGHT, Y = m P^T has
 * orthogonal columns; LEFT, Y = U^T m has orthogonal rows (off-diagonal of the Gram matrix
 * <= 2e-5 * s_1^2), with the squared singular values non-increasing. Then: a Conda training
 * loop with the refresh (update_moment, refresh_due, svd_basis, step) against the float64
 * reference step given the same basis; a sign flip of a basis vector changes no bit of a Conda
 * step (the invariance normkit_lapack.h states); repeated calls and a misaligned workspace give
 * the same bits; bad arguments.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "normkit_lapack.h"
#include "reference/reference.h"
#include "test.h"
#include "util.h"

static float *rand_matrix(nk_rng *r, size_t rows, size_t cols, double scale) {
  float *m = nk_t_alloc(rows * cols * sizeof(float));
  for (size_t i = 0; i < rows * cols; i++) m[i] = (float)(scale * nk_rng_normal(r));
  return m;
}

static float *basis_of(nk_conda_side side, size_t rows, size_t cols, const float *m,
                       nk_status *st) {
  size_t ws = 0;
  NK_CHECK(nk_conda_svd_basis_workspace_size(side, rows, cols, &ws) == NK_STATUS_OK, "ws size");
  const size_t k = side == NK_CONDA_SIDE_RIGHT ? cols : rows;
  float *b = nk_t_alloc(k * k * sizeof(float));
  void *w = nk_t_alloc(ws);
  *st = nk_conda_svd_basis(NULL, side, rows, cols, m, b, w, ws);
  free(w);
  return b;
}

/* Orthonormality and diagonalization (see the file comment). */
static void check_svd_basis(nk_conda_side side, size_t rows, size_t cols, const float *m,
                            const float *b) {
  const size_t k = side == NK_CONDA_SIDE_RIGHT ? cols : rows;
  double worst = 0.0;
  for (size_t i = 0; i < k; i++)
    for (size_t j = 0; j < k; j++) {
      double d = 0.0;
      for (size_t t = 0; t < k; t++) d += (double)b[i * k + t] * b[j * k + t];
      worst = fmax(worst, fabs(d - (i == j)));
    }
  NK_CHECK(worst <= 2e-5, "%zux%zu side %d: |B B^T - I| = %g", rows, cols, (int)side, worst);
  /* Y = m P^T (RIGHT: rows x k) or U^T m (LEFT: k x cols); its Gram matrix over the k axis */
  double *y = calloc(rows * cols, sizeof(double));
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < cols; j++) {
      double d = 0.0;
      if (side == NK_CONDA_SIDE_RIGHT)
        for (size_t t = 0; t < cols; t++) d += (double)m[i * cols + t] * b[j * cols + t];
      else
        for (size_t t = 0; t < rows; t++) d += (double)b[t * rows + i] * m[t * cols + j];
      y[i * cols + j] = d;
    }
  double *gram = calloc(k * k, sizeof(double));
  for (size_t p = 0; p < k; p++)
    for (size_t q = 0; q < k; q++) {
      double d = 0.0;
      if (side == NK_CONDA_SIDE_RIGHT)
        for (size_t i = 0; i < rows; i++) d += y[i * cols + p] * y[i * cols + q];
      else
        for (size_t j = 0; j < cols; j++) d += y[p * cols + j] * y[q * cols + j];
      gram[p * k + q] = d;
    }
  const double s1 = gram[0];
  double off = 0.0, rise = 0.0;
  for (size_t p = 0; p < k; p++) {
    for (size_t q = 0; q < k; q++)
      if (p != q) off = fmax(off, fabs(gram[p * k + q]));
    if (p + 1 < k) rise = fmax(rise, gram[(p + 1) * k + p + 1] - gram[p * k + p]);
  }
  NK_CHECK(off <= 2e-5 * s1 + 1e-30, "%zux%zu side %d: off-diagonal %g of s1^2 %g", rows, cols,
           (int)side, off, s1);
  NK_CHECK(rise <= 2e-5 * s1 + 1e-30, "%zux%zu side %d: singular values rise by %g of %g", rows,
           cols, (int)side, rise, s1);
  free(y);
  free(gram);
}

NK_TEST(bases_diagonalize_the_moment) {
  static const size_t shapes[][2] = {{8, 3}, {3, 8}, {64, 64}, {1, 5}, {5, 1}, {1, 1},
                                     {100, 37}, {37, 100}, {256, 64}};
  nk_rng r = {0xC0DA5EEDull};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    const size_t rows = shapes[s][0], cols = shapes[s][1];
    float *m = rand_matrix(&r, rows, cols, 1e-3);
    for (int sd = 0; sd < 2; sd++) {
      const nk_conda_side side = sd ? NK_CONDA_SIDE_LEFT : NK_CONDA_SIDE_RIGHT;
      if ((side == NK_CONDA_SIDE_RIGHT && rows < cols) || (side == NK_CONDA_SIDE_LEFT && rows > cols))
        continue;
      nk_status st;
      float *b = basis_of(side, rows, cols, m, &st);
      NK_CHECK(st == NK_STATUS_OK, "%zux%zu side %d: status %d", rows, cols, sd, (int)st);
      check_svd_basis(side, rows, cols, m, b);
      free(b);
    }
    free(m);
  }
  /* a rank-deficient moment (rank 2 of 6 columns) and a zero one: still orthonormal */
  float *m = nk_t_alloc(20 * 6 * sizeof(float));
  for (size_t i = 0; i < 20; i++)
    for (size_t j = 0; j < 6; j++) m[i * 6 + j] = (float)((double)(i + 1) * (j % 2 ? 1.0 : -0.5));
  nk_status st;
  float *b = basis_of(NK_CONDA_SIDE_RIGHT, 20, 6, m, &st);
  NK_CHECK(st == NK_STATUS_OK, "rank-deficient: status %d", (int)st);
  check_svd_basis(NK_CONDA_SIDE_RIGHT, 20, 6, m, b);
  free(b);
  memset(m, 0, 20 * 6 * sizeof(float));
  b = basis_of(NK_CONDA_SIDE_RIGHT, 20, 6, m, &st);
  NK_CHECK(st == NK_STATUS_OK, "zero: status %d", (int)st);
  check_svd_basis(NK_CONDA_SIDE_RIGHT, 20, 6, m, b);
  free(b);
  free(m);
}

/* A Conda loop as a user writes it: per step update the moment, refresh the basis when due,
 * step; against the reference step (moment update included) given the same basis. */
static void conda_loop(size_t rows, size_t cols) {
  const nk_conda_side side = nk_conda_std_side(rows, cols);
  const size_t n = rows * cols, k = side == NK_CONDA_SIDE_RIGHT ? cols : rows;
  nk_conda_desc d = nk_conda_desc_default();
  d.lr = 0.01;
  d.scale = 0.25;
  d.weight_decay = 0.01;
  d.update_proj_gap = 2;
  nk_rng r = {rows * 1000 + cols};
  float *W = rand_matrix(&r, rows, cols, 0.1), *m = nk_t_alloc(n * 4), *v = nk_t_alloc(n * 4);
  float *basis = nk_t_alloc(k * k * 4);
  double *Wr = malloc(n * 8), *mr = calloc(n, 8), *vr = calloc(n, 8), *gr = malloc(n * 8);
  double *br = malloc(k * k * 8), tr = 0.0;
  for (size_t i = 0; i < n; i++) Wr[i] = W[i];
  size_t sws, cws;
  NK_REQUIRE(nk_conda_svd_basis_workspace_size(side, rows, cols, &sws) == NK_STATUS_OK, "ws");
  NK_REQUIRE(nk_conda_workspace_size(rows, cols, &cws) == NK_STATUS_OK, "ws");
  void *ws = nk_t_alloc(sws > cws ? sws : cws);
  const nk_ref_conda_hp hp = {d.lr, d.beta1, d.beta2, d.eps, d.weight_decay, d.scale,
                              d.correct_bias};
  int64_t t = 0, last = -1;
  int refreshes = 0;
  for (int step = 0; step < 6; step++) {
    float *g = rand_matrix(&r, rows, cols, 1e-2);
    for (size_t i = 0; i < n; i++) gr[i] = g[i];
    NK_CHECK(nk_conda_update_moment(NULL, &d, rows, cols, g, m) == NK_STATUS_OK, "moment");
    int due = 0;
    NK_CHECK(nk_conda_refresh_due(NULL, t, d.update_proj_gap, last, &due) == NK_STATUS_OK, "due");
    if (due) {
      NK_CHECK(nk_conda_svd_basis(NULL, side, rows, cols, m, basis, ws, sws) == NK_STATUS_OK,
               "svd");
      check_svd_basis(side, rows, cols, m, basis);
      last = t;
      refreshes++;
    }
    for (size_t i = 0; i < k * k; i++) br[i] = basis[i];
    NK_CHECK(nk_conda_step(NULL, &d, side, rows, cols, W, g, m, v, basis, &t, ws, cws) ==
                 NK_STATUS_OK,
             "step");
    nk_ref_conda_step(rows, cols, side == NK_CONDA_SIDE_RIGHT ? 1 : 2, br, &hp, Wr, gr, mr, vr,
                      &tr);
    /* the reference keeps m and v in double: the library rounds them to f32 each step */
    for (size_t i = 0; i < n; i++) mr[i] = m[i], vr[i] = v[i];
    double worst = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
      worst = fmax(worst, fabs(W[i] - Wr[i]));
      scale = fmax(scale, fabs(Wr[i]));
    }
    NK_CHECK(worst <= 4e-7 * scale, "%zux%zu step %d: |W - ref| %g of %g", rows, cols, step,
             worst, scale);
    for (size_t i = 0; i < n; i++) Wr[i] = W[i];
    free(g);
  }
  NK_CHECK(refreshes == 3, "%zux%zu: %d refreshes in 6 steps with gap 2", rows, cols, refreshes);
  free(W), free(m), free(v), free(basis), free(Wr), free(mr), free(vr), free(gr), free(br);
  free(ws);
}

NK_TEST(conda_training_loop_with_refresh) {
  conda_loop(24, 10); /* RIGHT */
  conda_loop(10, 24); /* LEFT */
}

/* Flipping the sign of one basis vector changes no bit of a Conda step. */
NK_TEST(sign_flip_changes_no_bit) {
  const size_t rows = 12, cols = 7, n = rows * cols;
  nk_rng r = {99};
  float *m = rand_matrix(&r, rows, cols, 1e-3), *g = rand_matrix(&r, rows, cols, 1e-2);
  nk_status st;
  float *b = basis_of(NK_CONDA_SIDE_RIGHT, rows, cols, m, &st);
  NK_REQUIRE(st == NK_STATUS_OK, "svd");
  float *W0 = rand_matrix(&r, rows, cols, 0.1), *W1 = malloc(n * 4);
  float *v0 = nk_t_alloc(n * 4), *v1 = nk_t_alloc(n * 4);
  memcpy(W1, W0, n * 4);
  nk_conda_desc d = nk_conda_desc_default();
  size_t cws;
  nk_conda_workspace_size(rows, cols, &cws);
  void *ws = nk_t_alloc(cws);
  int64_t t0 = 0, t1 = 0;
  NK_CHECK(nk_conda_step(NULL, &d, NK_CONDA_SIDE_RIGHT, rows, cols, W0, g, m, v0, b, &t0, ws,
                         cws) == NK_STATUS_OK,
           "step");
  for (size_t j = 0; j < cols; j++) b[3 * cols + j] = -b[3 * cols + j];
  NK_CHECK(nk_conda_step(NULL, &d, NK_CONDA_SIDE_RIGHT, rows, cols, W1, g, m, v1, b, &t1, ws,
                         cws) == NK_STATUS_OK,
           "step");
  NK_CHECK(memcmp(W0, W1, n * 4) == 0, "a sign flip changed W");
  NK_CHECK(memcmp(v0, v1, n * 4) == 0, "a sign flip changed v");
  free(m), free(g), free(b), free(W0), free(W1), free(v0), free(v1), free(ws);
}

/* Two calls, and a workspace at an odd address, give the same bits. */
NK_TEST(repeatable_any_workspace_address) {
  const size_t rows = 33, cols = 17;
  nk_rng r = {7};
  float *m = rand_matrix(&r, rows, cols, 1.0);
  size_t ws;
  NK_REQUIRE(nk_conda_svd_basis_workspace_size(NK_CONDA_SIDE_RIGHT, rows, cols, &ws) ==
                 NK_STATUS_OK,
             "ws");
  char *w = nk_t_alloc(ws + 8);
  float *b0 = nk_t_alloc(cols * cols * 4), *b1 = nk_t_alloc(cols * cols * 4);
  NK_CHECK(nk_conda_svd_basis(NULL, NK_CONDA_SIDE_RIGHT, rows, cols, m, b0, w, ws) ==
               NK_STATUS_OK,
           "svd");
  NK_CHECK(nk_conda_svd_basis(NULL, NK_CONDA_SIDE_RIGHT, rows, cols, m, b1, w + 3, ws) ==
               NK_STATUS_OK,
           "svd, odd workspace");
  NK_CHECK(memcmp(b0, b1, cols * cols * 4) == 0, "bits differ between calls");
  free(m), free(w), free(b0), free(b1);
}

NK_TEST(bad_arguments) {
  const size_t rows = 6, cols = 4;
  nk_rng r = {5};
  float *m = rand_matrix(&r, rows, cols, 1.0);
  size_t ws;
  const nk_status INV = NK_STATUS_INVALID_ARGUMENT;
  NK_CHECK(nk_conda_svd_basis_workspace_size(NK_CONDA_SIDE_RIGHT, rows, cols, NULL) == INV,
           "NULL bytes");
  NK_CHECK(nk_conda_svd_basis_workspace_size(NK_CONDA_SIDE_LEFT, rows, cols, &ws) == INV,
           "LEFT with rows > cols");
  NK_CHECK(nk_conda_svd_basis_workspace_size(NK_CONDA_SIDE_NONE, rows, cols, &ws) == INV,
           "NONE");
  NK_CHECK(nk_conda_svd_basis_workspace_size(NK_CONDA_SIDE_RIGHT, (size_t)1 << 40, 4, &ws) ==
               NK_STATUS_UNSUPPORTED,
           "beyond 32-bit LAPACK");
  NK_REQUIRE(nk_conda_svd_basis_workspace_size(NK_CONDA_SIDE_RIGHT, rows, cols, &ws) ==
                 NK_STATUS_OK,
             "ws");
  void *w = nk_t_alloc(ws);
  float b[16];
  for (int i = 0; i < 16; i++) b[i] = -9.0f;
  nk_context *ctx;
  nk_context_create(&ctx);
#define SVD(side, mm, bb, ww, nn) nk_conda_svd_basis(ctx, side, rows, cols, mm, bb, ww, nn)
  NK_CHECK(SVD(NK_CONDA_SIDE_LEFT, m, b, w, ws) == INV, "LEFT with rows > cols");
  NK_CHECK(SVD(NK_CONDA_SIDE_NONE, m, b, w, ws) == INV, "NONE");
  NK_CHECK(SVD(NK_CONDA_SIDE_RIGHT, NULL, b, w, ws) == INV, "NULL exp_avg");
  NK_CHECK(SVD(NK_CONDA_SIDE_RIGHT, m, NULL, w, ws) == INV, "NULL basis");
  NK_CHECK(SVD(NK_CONDA_SIDE_RIGHT, m, b, w, ws - 1) == NK_STATUS_MISUSE, "small workspace");
  NK_CHECK(SVD(NK_CONDA_SIDE_RIGHT, m, b, NULL, ws) == NK_STATUS_MISUSE, "NULL workspace");
  NK_CHECK(SVD(NK_CONDA_SIDE_RIGHT, m, m + 2, w, ws) == INV, "basis overlapping exp_avg");
  NK_CHECK(SVD(NK_CONDA_SIDE_RIGHT, m, (float *)w, w, ws) == INV, "basis in the workspace");
  m[5] = NAN;
  NK_CHECK(SVD(NK_CONDA_SIDE_RIGHT, m, b, w, ws) == INV, "NaN in exp_avg");
  m[5] = INFINITY;
  NK_CHECK(SVD(NK_CONDA_SIDE_RIGHT, m, b, w, ws) == INV, "inf in exp_avg");
  for (int i = 0; i < 16; i++) NK_CHECK(b[i] == -9.0f, "a failed call wrote basis[%d]", i);
  NK_CHECK(nk_conda_svd_basis(ctx, NK_CONDA_SIDE_RIGHT, 0, 4, NULL, NULL, NULL, 0) ==
               NK_STATUS_OK,
           "empty");
#undef SVD
  nk_context_destroy(ctx);
  free(m), free(w);
}

int main(void) {
  NK_RUN(bases_diagonalize_the_moment);
  NK_RUN(conda_training_loop_with_refresh);
  NK_RUN(sign_flip_changes_no_bit);
  NK_RUN(repeatable_any_workspace_address);
  NK_RUN(bad_arguments);
  return nk_test_summary();
}
