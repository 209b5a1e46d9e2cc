/*
 * tests/reference/chnorm.c — the float64 channel-norm and moments references
 * (src/reference/chnorm.c) checked against hand-computed tiny cases, against each other across
 * layouts and strides, and their backward passes against central finite differences of their
 * own forward passes (full: every input element, gamma, beta and z). The operator tests
 * (tests/ops/batchnorm.c, groupnorm.c, moments.c) trust these references.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

static int near(double a, double b, double tol) { return fabs(a - b) <= tol; }

NK_TEST(geometry) {
  nk_ref_chshape t = {2, 3, 5, 0, 0, 0};
  NK_CHECK(nk_ref_chidx(&t, 1, 2, 4) == 15 + 10 + 4, "NCS dense %zu", nk_ref_chidx(&t, 1, 2, 4));
  NK_CHECK(nk_ref_chspan(&t) == 30, "NCS span %zu", nk_ref_chspan(&t));
  t.nsc = 1;
  NK_CHECK(nk_ref_chidx(&t, 1, 2, 4) == 15 + 12 + 2, "NSC dense %zu", nk_ref_chidx(&t, 1, 2, 4));
  t.row_stride = 4;
  t.n_stride = 23;
  NK_CHECK(nk_ref_chidx(&t, 1, 2, 4) == 23 + 16 + 2, "NSC strided %zu", nk_ref_chidx(&t, 1, 2, 4));
  NK_CHECK(nk_ref_chspan(&t) == 23 + 16 + 3, "NSC strided span %zu", nk_ref_chspan(&t));
  t.nsc = 0;
  t.row_stride = 7;
  t.n_stride = 0; /* dense over rows: 3 rows of stride 7 */
  NK_CHECK(nk_ref_chidx(&t, 1, 1, 3) == 21 + 7 + 3, "NCS row stride %zu", nk_ref_chidx(&t, 1, 1, 3));
  t.s = 0;
  NK_CHECK(nk_ref_chspan(&t) == 0, "empty span");
}

NK_TEST(hand_computed_moments) {
  const double x[8] = {1, -7, 2, -7, 3, -7, 4, -7};
  double mean, m2;
  nk_ref_moments(4, x, 2, &mean, &m2);
  NK_CHECK(mean == 2.5 && m2 == 5.0, "moments of 1,2,3,4: %.17g %.17g", mean, m2);
  nk_ref_moments(1, x, 1, &mean, &m2);
  NK_CHECK(mean == 1.0 && m2 == 0.0, "one value");
  nk_ref_moments(0, x, 1, &mean, &m2);
  NK_CHECK(mean == 0.0 && m2 == 0.0, "no values");
  const double bad[3] = {1.0, INFINITY, 2.0}, nan3[3] = {1.0, 2.0, NAN};
  nk_ref_moments(3, bad, 1, &mean, &m2);
  NK_CHECK(isnan(mean) && isnan(m2), "inf gives NaN: %g %g", mean, m2);
  nk_ref_moments(3, nan3, 1, &mean, &m2);
  NK_CHECK(isnan(mean) && isnan(m2), "NaN gives NaN");
  /* ill-conditioned: two-pass keeps it */
  const double ill[4] = {1e8 + 1, 1e8 + 2, 1e8 + 3, 1e8 + 4};
  nk_ref_moments(4, ill, 1, &mean, &m2);
  NK_CHECK(mean == 1e8 + 2.5 && m2 == 5.0, "shifted: %.17g %.17g", mean, m2);
}

/* x = {1,2 | 3,4} as N=2, C=1, S=2: mean 2.5, var 1.25; eps 2.75 gives rstd 0.5. */
NK_TEST(hand_computed_batchnorm) {
  const nk_ref_chshape t = {2, 1, 2, 0, 0, 0};
  const double x[4] = {1, 2, 3, 4}, g = 2.0, b = 1.0, z[4] = {-1, 0, -2, 1};
  double y[4], sm, sr, rm = 0.0, rv = 1.0;
  int64_t nbt = 0;
  nk_ref_batchnorm_fwd(&t, x, NULL, &g, &b, 2.75, 1, NK_REF_ACT_NONE, 0.1, 0, &rm, &rv, &nbt, y,
                       &sm, &sr);
  NK_CHECK(y[0] == -0.5 && y[1] == 0.5 && y[2] == 1.5 && y[3] == 2.5, "y %g %g %g %g", y[0], y[1],
           y[2], y[3]);
  NK_CHECK(sm == 2.5 && sr == 0.5, "save %g %g", sm, sr);
  NK_CHECK(near(rm, 0.25, 1e-16) && near(rv, 0.9 + 0.1 * 1.25 * 4.0 / 3.0, 1e-15) && nbt == 1,
           "running %.17g %.17g %lld", rm, rv, (long long)nbt);
  nk_ref_batchnorm_fwd(&t, x, NULL, &g, &b, 2.75, 1, NK_REF_ACT_RELU, 0.1, 0, NULL, NULL, &nbt, y,
                       NULL, NULL);
  NK_CHECK(y[0] == 0.0 && y[1] == 0.5 && y[2] == 1.5 && y[3] == 2.5 && nbt == 1,
           "relu %g; no running buffers, no count", y[0]);
  nk_ref_batchnorm_fwd(&t, x, z, &g, &b, 2.75, 1, NK_REF_ACT_ADD_RELU, 0.1, 0, NULL, NULL, NULL,
                       y, NULL, NULL);
  NK_CHECK(y[0] == 0.0 && y[1] == 0.5 && y[2] == 0.0 && y[3] == 3.5, "add relu %g %g %g %g", y[0],
           y[1], y[2], y[3]);
  /* cumulative: the first step takes the batch statistics whole */
  rm = 5.0, rv = 5.0, nbt = 0;
  nk_ref_batchnorm_fwd(&t, x, NULL, NULL, NULL, 2.75, 1, 0, 0.1, 1, &rm, &rv, &nbt, y, NULL, NULL);
  NK_CHECK(rm == 2.5 && near(rv, 1.25 * 4.0 / 3.0, 1e-15), "cumulative %g %g", rm, rv);
  /* inference with rm 1, rv 3, eps 1: rstd 0.5 */
  rm = 1.0, rv = 3.0;
  nk_ref_batchnorm_fwd(&t, x, NULL, NULL, NULL, 1.0, 0, 0, 0.1, 0, &rm, &rv, &nbt, y, &sm, &sr);
  NK_CHECK(y[0] == 0.0 && y[1] == 0.5 && y[2] == 1.0 && y[3] == 1.5, "inference y");
  NK_CHECK(sm == 1.0 && sr == 0.5 && rm == 1.0 && rv == 3.0 && nbt == 1, "inference state");
  /* backward, training: dy = e_0, gamma 1, r 0.5, M 4, xhat = -0.75 -0.25 0.25 0.75:
   * dx = (r/M)(M dy - sum dy - xhat sum dy xhat) = 0.125 (4 dy - 1 + 0.75 xhat) */
  const double dy[4] = {1, 0, 0, 0};
  double dx[4], dz[4], dg, db, sums[3];
  nk_ref_batchnorm_bwd(&t, x, NULL, NULL, 2.75, 1, NULL, NULL, dy, dx, dz, &dg, &db);
  NK_CHECK(dx[0] == 0.3046875 && dx[1] == -0.1484375 && dx[2] == -0.1015625 && dx[3] == -0.0546875,
           "dx %.17g %.17g %.17g %.17g", dx[0], dx[1], dx[2], dx[3]);
  NK_CHECK(dg == -0.75 && db == 1.0 && dz[0] == 1.0, "dgamma %g dbeta %g", dg, db);
  /* the relu mask: y <= 0 blocks, NaN passes */
  const double my[4] = {0.0, 1.0, NAN, -0.0}, dy4[4] = {1, 2, 3, 4};
  const double m1 = 2.5, r1 = 0.5;
  nk_ref_batchnorm_bwd(&t, x, my, &g, 0.0, 0, &m1, &r1, dy4, dx, dz, &dg, &db);
  NK_CHECK(dz[0] == 0 && dz[1] == 2 && dz[2] == 3 && dz[3] == 0, "mask %g %g %g %g", dz[0], dz[1],
           dz[2], dz[3]);
  NK_CHECK(dx[1] == 2.0 && dx[2] == 3.0 && dx[0] == 0.0, "inference dx = dy' g r");
  NK_CHECK(db == 5.0 && dg == 2 * (-0.25) + 3 * 0.25, "inference dgamma %g dbeta %g", dg, db);
  nk_ref_batchnorm_bwd_sums(&t, x, my, &m1, dy4, sums);
  NK_CHECK(sums[0] == 5.0 && sums[1] == 2 * -0.5 + 3 * 0.5 && sums[2] == 0.0, "sums %g %g %g",
           sums[0], sums[1], sums[2]);
}

NK_TEST(hand_computed_group_and_instance) {
  /* N=1, C=2, S=2, x = {1,2 | 3,4}: one group is the BatchNorm case above */
  const nk_ref_chshape t = {1, 2, 2, 0, 0, 0};
  const double x[4] = {1, 2, 3, 4}, g[2] = {1, 2}, b[2] = {0, 1};
  double y[4], mean[2], rstd[2];
  nk_ref_groupnorm_fwd(&t, 1, x, g, b, 2.75, y, mean, rstd);
  NK_CHECK(y[0] == -0.75 && y[1] == -0.25 && y[2] == 1.5 && y[3] == 2.5, "GN y %g %g %g %g", y[0],
           y[1], y[2], y[3]);
  NK_CHECK(mean[0] == 2.5 && rstd[0] == 0.5, "GN stats");
  /* InstanceNorm: c0 {1,2} and c1 {3,4}: var 0.25, eps 0.75: rstd 1 */
  double rm[2] = {0, 0}, rv[2] = {1, 1};
  nk_ref_instancenorm_fwd(&t, x, NULL, NULL, 0.75, 1, 0.1, rm, rv, y, mean, rstd);
  NK_CHECK(y[0] == -0.5 && y[1] == 0.5 && y[2] == -0.5 && y[3] == 0.5, "IN y");
  NK_CHECK(mean[0] == 1.5 && mean[1] == 3.5 && rstd[0] == 1.0 && rstd[1] == 1.0, "IN stats");
  NK_CHECK(near(rm[0], 0.15, 1e-16) && near(rm[1], 0.35, 1e-16), "IN running mean %.17g %.17g",
           rm[0], rm[1]);
  NK_CHECK(near(rv[0], 0.95, 1e-16) && near(rv[1], 0.95, 1e-16), "IN running var %.17g", rv[0]);
  /* inference with running statistics rm = {1, 3}, rv = {0.25, 0.25}: rstd 1 (eps 0.75) */
  rm[0] = 1, rm[1] = 3, rv[0] = rv[1] = 0.25;
  nk_ref_instancenorm_fwd(&t, x, NULL, NULL, 0.75, 0, 0.1, rm, rv, y, mean, rstd);
  NK_CHECK(y[0] == 0 && y[1] == 1 && y[2] == 0 && y[3] == 1 && rm[0] == 1 && rv[0] == 0.25,
           "IN inference");
  /* fold: rm 1, rv 3, eps 1 (r 0.5), gamma 2, beta 0.5: scale 1, shift -0.5 */
  const double frm = 1, frv = 3, fg = 2, fb = 0.5, fbias = 3;
  double scale, shift, w[2] = {2, -4}, bo;
  nk_ref_batchnorm_fold(1, 1.0, &frm, &frv, &fg, &fb, &scale, &shift);
  NK_CHECK(scale == 1.0 && shift == -0.5, "fold %g %g", scale, shift);
  nk_ref_batchnorm_fold_linear(1, 2, 1.0, &frm, &frv, &fg, &fb, w, &fbias, &bo);
  NK_CHECK(w[0] == 2 && w[1] == -4 && bo == 2.5, "fold linear %g %g %g", w[0], w[1], bo);
  nk_ref_batchnorm_fold_linear(1, 2, 1.0, &frm, &frv, NULL, NULL, w, NULL, &bo);
  NK_CHECK(w[0] == 1 && w[1] == -2 && bo == -0.5, "fold linear, no affine %g %g %g", w[0], w[1],
           bo);
}

/* Cumulative running statistics are the plain averages of the batch statistics. */
NK_TEST(cumulative_is_the_average) {
  const nk_ref_chshape t = {3, 2, 5, 0, 0, 0};
  nk_rng rng = {3};
  double x[30], y[30], rm[2] = {7, 7}, rv[2] = {7, 7}, am[2] = {0, 0}, av[2] = {0, 0};
  int64_t nbt = 0;
  for (int step = 0; step < 4; step++) {
    for (int k = 0; k < 30; k++) x[k] = step + nk_rng_normal(&rng);
    double m[2], v[2];
    nk_ref_channel_stats(&t, x, m, v);
    for (int c = 0; c < 2; c++) am[c] += m[c] / 4, av[c] += v[c] * 15.0 / 14.0 / 4;
    nk_ref_batchnorm_fwd(&t, x, NULL, NULL, NULL, 1e-5, 1, 0, 0.1, 1, rm, rv, &nbt, y, NULL, NULL);
  }
  NK_CHECK(nbt == 4, "count %lld", (long long)nbt);
  for (int c = 0; c < 2; c++)
    NK_CHECK(near(rm[c], am[c], 1e-14) && near(rv[c], av[c], 1e-14), "c %d: %.17g %.17g / %.17g %.17g",
             c, rm[c], am[c], rv[c], av[c]);
}

/* The same tensor in NCS, NSC and padded geometries gives the same bits everywhere. */
NK_TEST(layouts_and_strides_agree) {
  enum { N = 3, C = 4, S = 7, G = 2 };
  const nk_ref_chshape geo[4] = {{N, C, S, 0, 0, 0},
                                 {N, C, S, 1, 0, 0},
                                 {N, C, S, 0, C * 9 + 5, 9},
                                 {N, C, S, 1, S * 6 + 3, 6}};
  static double xs[4][400], zs[4][400], dys[4][400], ys[4][400], dxs[4][400];
  double stats[4][8][C * N], gamma[C], beta[C];
  memset(stats, 0, sizeof stats);
  nk_rng rng = {5};
  for (int c = 0; c < C; c++) gamma[c] = 1 + 0.3 * nk_rng_normal(&rng), beta[c] = nk_rng_normal(&rng);
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      for (int s = 0; s < S; s++) {
        const double v = nk_rng_normal(&rng) + c, w = nk_rng_normal(&rng), d = nk_rng_normal(&rng);
        for (int k = 0; k < 4; k++) {
          const size_t i = nk_ref_chidx(&geo[k], n, c, s);
          xs[k][i] = v, zs[k][i] = w, dys[k][i] = d;
        }
      }
  for (int k = 0; k < 4; k++) {
    double rm[C] = {0}, rv[C] = {1, 1, 1, 1};
    int64_t nbt = 0;
    nk_ref_batchnorm_fwd(&geo[k], xs[k], zs[k], gamma, beta, 1e-5, 1, NK_REF_ACT_ADD_RELU, 0.1, 0,
                         rm, rv, &nbt, ys[k], stats[k][0], stats[k][1]);
    memcpy(stats[k][2], rm, sizeof rm);
    memcpy(stats[k][3], rv, sizeof rv);
    nk_ref_batchnorm_bwd(&geo[k], xs[k], ys[k], gamma, 1e-5, 1, NULL, NULL, dys[k], dxs[k], NULL,
                         stats[k][4], stats[k][5]);
  }
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      for (int s = 0; s < S; s++) {
        const size_t i0 = nk_ref_chidx(&geo[0], n, c, s);
        for (int k = 1; k < 4; k++) {
          const size_t i = nk_ref_chidx(&geo[k], n, c, s);
          NK_CHECK(ys[k][i] == ys[0][i0] && dxs[k][i] == dxs[0][i0],
                   "BN geometry %d (%d,%d,%d): y %.17g vs %.17g", k, n, c, s, ys[k][i], ys[0][i0]);
        }
      }
  for (int k = 1; k < 4; k++)
    NK_CHECK(memcmp(stats[k], stats[0], 6 * sizeof stats[0][0]) == 0, "BN statistics geometry %d", k);
  for (int k = 0; k < 4; k++) {
    nk_ref_groupnorm_fwd(&geo[k], G, xs[k], gamma, beta, 1e-5, ys[k], stats[k][0], stats[k][1]);
    nk_ref_groupnorm_bwd(&geo[k], G, xs[k], gamma, 1e-5, dys[k], dxs[k], stats[k][2], stats[k][3]);
    nk_ref_instancenorm_fwd(&geo[k], xs[k], gamma, beta, 1e-5, 0, 0.1, NULL, NULL, zs[k],
                            stats[k][4], stats[k][5]);
  }
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      for (int s = 0; s < S; s++) {
        const size_t i0 = nk_ref_chidx(&geo[0], n, c, s);
        for (int k = 1; k < 4; k++) {
          const size_t i = nk_ref_chidx(&geo[k], n, c, s);
          NK_CHECK(ys[k][i] == ys[0][i0] && dxs[k][i] == dxs[0][i0] && zs[k][i] == zs[0][i0],
                   "GN/IN geometry %d (%d,%d,%d)", k, n, c, s);
        }
      }
  for (int k = 1; k < 4; k++)
    NK_CHECK(memcmp(stats[k], stats[0], 6 * sizeof stats[0][0]) == 0, "GN/IN statistics %d", k);
  /* GroupNorm with G = C is InstanceNorm; G = 1 on one sample is LayerNorm of the sample */
  double gy[400], iy[400];
  nk_ref_groupnorm_fwd(&geo[0], C, xs[0], gamma, beta, 1e-5, gy, NULL, NULL);
  nk_ref_instancenorm_fwd(&geo[0], xs[0], gamma, beta, 1e-5, 1, 0.1, NULL, NULL, iy, NULL, NULL);
  NK_CHECK(memcmp(gy, iy, N * C * S * sizeof(double)) == 0, "GN with G = C is IN");
  nk_ref_groupnorm_fwd(&geo[0], 1, xs[0], NULL, NULL, 1e-5, gy, NULL, NULL);
  nk_ref_layernorm_fwd(N, C * S, xs[0], NULL, NULL, 0, 1e-5, iy, NULL, NULL);
  for (int k = 0; k < N * C * S; k++)
    NK_CHECK(near(gy[k], iy[k], 1e-14), "GN G=1 vs LayerNorm [%d] %.17g %.17g", k, gy[k], iy[k]);
}

/* ---- finite differences --------------------------------------------------------------------- */

enum { FN = 2, FC = 6, FS = 4, FT = 64 /* room for the padded geometry (56 elements) */ };

typedef struct fd_problem {
  int op; /* 0 BN training, 1 BN inference, 2 GN, 3 IN (instance), 4 IN (running stats) */
  int act;
  size_t groups;
  nk_ref_chshape t;
  double x[FT], z[FT], w[FT], gamma[FC], beta[FC], rm[FC], rv[FC];
} fd_problem;

/* L = sum w * y. */
static double fd_loss(fd_problem *p) {
  double y[FT], rm[FC], rv[FC];
  memset(y, 0, sizeof y);
  memcpy(rm, p->rm, sizeof rm);
  memcpy(rv, p->rv, sizeof rv);
  const double eps = 1e-3;
  switch (p->op) {
    case 0:
      nk_ref_batchnorm_fwd(&p->t, p->x, p->z, p->gamma, p->beta, eps, 1, p->act, 0.1, 0, rm, rv,
                           NULL, y, NULL, NULL);
      break;
    case 1:
      nk_ref_batchnorm_fwd(&p->t, p->x, p->z, p->gamma, p->beta, eps, 0, p->act, 0.1, 0, rm, rv,
                           NULL, y, NULL, NULL);
      break;
    case 2: nk_ref_groupnorm_fwd(&p->t, p->groups, p->x, p->gamma, p->beta, eps, y, NULL, NULL); break;
    case 3:
      nk_ref_instancenorm_fwd(&p->t, p->x, p->gamma, p->beta, eps, 1, 0.1, NULL, NULL, y, NULL,
                              NULL);
      break;
    default:
      nk_ref_instancenorm_fwd(&p->t, p->x, p->gamma, p->beta, eps, 0, 0.1, rm, rv, y, NULL, NULL);
  }
  long double L = 0; /* w is 0 in the padding */
  for (int k = 0; k < FT; k++) L += (long double)p->w[k] * y[k];
  return (double)L;
}

static void fd_check(fd_problem *p, const char *what) {
  const double eps = 1e-3;
  double y[FT], dx[FT], dz[FT], dg[FC], db[FC], sm[FC], sr[FC], mean[FT], rstd[FT];
  memset(dz, 0, sizeof dz);
  double rm[FC], rv[FC];
  memcpy(rm, p->rm, sizeof rm);
  memcpy(rv, p->rv, sizeof rv);
  switch (p->op) {
    case 0:
    case 1:
      nk_ref_batchnorm_fwd(&p->t, p->x, p->z, p->gamma, p->beta, eps, p->op == 0, p->act, 0.1, 0,
                           rm, rv, NULL, y, sm, sr);
      nk_ref_batchnorm_bwd(&p->t, p->x, p->act ? y : NULL, p->gamma, eps, p->op == 0, sm, sr,
                           p->w, dx, dz, dg, db);
      break;
    case 2: nk_ref_groupnorm_bwd(&p->t, p->groups, p->x, p->gamma, eps, p->w, dx, dg, db); break;
    case 3:
      nk_ref_instancenorm_bwd(&p->t, 0, p->x, p->gamma, eps, NULL, NULL, p->w, dx, dg, db);
      break;
    default:
      nk_ref_instancenorm_fwd(&p->t, p->x, p->gamma, p->beta, eps, 0, 0.1, rm, rv, y, mean, rstd);
      nk_ref_instancenorm_bwd(&p->t, 1, p->x, p->gamma, eps, mean, rstd, p->w, dx, dg, db);
  }
  const double h = 1e-6;
  double *vars[4] = {p->x, p->gamma, p->beta, p->z};
  const double *grads[4] = {dx, dg, db, dz};
  const int nvars = p->act == NK_REF_ACT_ADD_RELU ? 4 : 3;
  size_t idx[FN * FC * FS], nidx = 0; /* the elements of the tensor (not its padding) */
  for (size_t n = 0; n < FN; n++)
    for (size_t c = 0; c < FC; c++)
      for (size_t s = 0; s < FS; s++) idx[nidx++] = nk_ref_chidx(&p->t, n, c, s);
  for (int v = 0; v < nvars; v++)
    for (size_t e = 0; e < (v == 0 || v == 3 ? nidx : (size_t)FC); e++) {
      const size_t k = v == 0 || v == 3 ? idx[e] : e;
      const double keep = vars[v][k];
      vars[v][k] = keep + h;
      const double lp = fd_loss(p);
      vars[v][k] = keep - h;
      const double lm = fd_loss(p);
      vars[v][k] = keep;
      const double fd = (lp - lm) / (2 * h);
      NK_CHECK(fabs(fd - grads[v][k]) <= 2e-7 * (1 + fabs(fd)),
               "%s: d/d%s[%zu]: fd %.12g analytic %.12g", what, v == 0   ? "x"
                                                              : v == 1 ? "gamma"
                                                              : v == 2 ? "beta"
                                                                       : "z",
               k, fd, grads[v][k]);
    }
}

NK_TEST(finite_differences) {
  nk_rng rng = {17};
  static fd_problem p;
  for (int layout = 0; layout < 2; layout++)
    for (int op = 0; op < 5; op++)
      for (int variant = 0; variant < 4; variant++) {
        memset(&p, 0, sizeof p);
        p.op = op;
        p.t = (nk_ref_chshape){FN, FC, FS, layout, 0, 0};
        if (variant == 3 && layout == 1) p.t.row_stride = FC + 1, p.t.n_stride = FS * (FC + 1);
        p.act = op <= 1 ? variant % 3 : 0;
        const size_t gs[4] = {1, 2, 3, 6};
        p.groups = gs[variant];
        for (size_t n = 0; n < FN; n++)
          for (size_t c = 0; c < FC; c++)
            for (size_t s = 0; s < FS; s++) {
              const size_t k = nk_ref_chidx(&p.t, n, c, s);
              p.x[k] = 0.5 + nk_rng_normal(&rng);
              p.z[k] = 0.5 * nk_rng_normal(&rng);
              p.w[k] = nk_rng_normal(&rng);
            }
        for (int c = 0; c < FC; c++) {
          p.gamma[c] = 1 + 0.4 * nk_rng_normal(&rng);
          p.beta[c] = 0.3 * nk_rng_normal(&rng);
          p.rm[c] = 0.3 * nk_rng_normal(&rng);
          p.rv[c] = 0.5 + nk_rng_uniform(&rng);
        }
        char what[96];
        snprintf(what, sizeof what, "op %d act %d groups %zu layout %d variant %d", op, p.act,
                 p.groups, layout, variant);
        fd_check(&p, what);
      }
}

/* Constant channels give exactly 0 (then beta) and finite gradients; a NaN stays in its set. */
NK_TEST(constant_and_nan_sets) {
  enum { N = 2, C = 3, S = 5, T = N * C * S };
  const nk_ref_chshape t = {N, C, S, 1, 0, 0};
  double x[T], y[T], dy[T], dx[T], dg[C], db[C], beta[C] = {0.25, -1, 3};
  nk_rng rng = {9};
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      for (int s = 0; s < S; s++)
        x[nk_ref_chidx(&t, n, c, s)] = c == 1 ? 1e4 + 0.1 : nk_rng_normal(&rng);
  for (int k = 0; k < T; k++) dy[k] = nk_rng_normal(&rng);
  nk_ref_batchnorm_fwd(&t, x, NULL, NULL, beta, 1e-5, 1, 0, 0.1, 0, NULL, NULL, NULL, y, NULL,
                       NULL);
  nk_ref_batchnorm_bwd(&t, x, NULL, NULL, 1e-5, 1, NULL, NULL, dy, dx, NULL, dg, db);
  for (int n = 0; n < N; n++)
    for (int s = 0; s < S; s++) {
      const size_t k = nk_ref_chidx(&t, n, 1, s);
      NK_CHECK(y[k] == -1.0 && isfinite(dx[k]), "constant channel y %.17g dx %g", y[k], dx[k]);
    }
  NK_CHECK(dg[1] == 0.0 && isfinite(db[1]), "constant channel dgamma %g", dg[1]);
  x[nk_ref_chidx(&t, 1, 2, 3)] = NAN;
  double y2[T];
  nk_ref_batchnorm_fwd(&t, x, NULL, NULL, beta, 1e-5, 1, 0, 0.1, 0, NULL, NULL, NULL, y2, NULL,
                       NULL);
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      for (int s = 0; s < S; s++) {
        const size_t k = nk_ref_chidx(&t, n, c, s);
        NK_CHECK(c == 2 ? isnan(y2[k]) : y2[k] == y[k], "NaN channel: (%d,%d,%d) %g", n, c, s,
                 y2[k]);
      }
  nk_ref_groupnorm_fwd(&t, 3, x, NULL, beta, 1e-5, y2, NULL, NULL);
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      for (int s = 0; s < S; s++) {
        const size_t k = nk_ref_chidx(&t, n, c, s);
        const int bad = n == 1 && c == 2;
        NK_CHECK(bad ? isnan(y2[k]) : isfinite(y2[k]), "GN NaN set (%d,%d,%d) %g", n, c, s, y2[k]);
        if (c == 1) NK_CHECK(y2[k] == -1.0, "GN constant set gives beta: %.17g", y2[k]);
      }
}

/* The backward sums agree with dbeta, dgamma and 0 when taken around the exact mean. */
NK_TEST(bwd_sums_match_bwd) {
  enum { N = 3, C = 2, S = 9, T = N * C * S };
  const nk_ref_chshape t = {N, C, S, 0, 0, 0};
  double x[T], dy[T], dx[T], mean[C], var[C], dg[C], db[C], sums[3 * C];
  nk_rng rng = {21};
  for (int k = 0; k < T; k++) x[k] = 3 + nk_rng_normal(&rng), dy[k] = nk_rng_normal(&rng);
  nk_ref_channel_stats(&t, x, mean, var);
  nk_ref_batchnorm_bwd(&t, x, x, NULL, 1e-5, 1, NULL, NULL, dy, dx, NULL, dg, db);
  nk_ref_batchnorm_bwd_sums(&t, x, x, mean, dy, sums);
  for (int c = 0; c < C; c++) {
    const double r = 1.0 / sqrt(var[c] + 1e-5);
    NK_CHECK(near(sums[3 * c], db[c], 1e-13) && near(sums[3 * c + 1] * r, dg[c], 1e-12) &&
                 near(sums[3 * c + 2], 0.0, 1e-12),
             "c %d: %.17g %.17g %.17g", c, sums[3 * c], sums[3 * c + 1] * r, sums[3 * c + 2]);
  }
}

int main(void) {
  NK_RUN(geometry);
  NK_RUN(hand_computed_moments);
  NK_RUN(hand_computed_batchnorm);
  NK_RUN(hand_computed_group_and_instance);
  NK_RUN(cumulative_is_the_average);
  NK_RUN(layouts_and_strides_agree);
  NK_RUN(finite_differences);
  NK_RUN(constant_and_nan_sets);
  NK_RUN(bwd_sums_match_bwd);
  return nk_test_summary();
}
