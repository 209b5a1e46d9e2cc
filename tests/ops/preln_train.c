/*
 * tests/ops/preln_train.c — training Pre-RMSNorm and Pre-CRMSNorm models that stay equivalent
 * to their Pre-LN form (spec §3.4; normkit.h after nk_preln_to_precrms_embedding). The free
 * parameters are the Pre-LN writer's W, b; each step forms the effective weights with the
 * conversion functions and carries the gradients back with their adjoints (the Pre-RMSNorm
 * functions themselves; nk_preln_to_precrms_writer_bwd / _embedding_bwd).
 *
 *   adjoints_are_exact          <f(W), G> == <W, f*(G)> for the writer and the embedding, both
 *                               conversions, and the adjoints' formulas against double
 *   gradients_match_pre_ln      a writer feeding a norm: the loss and dW, db, dE of the
 *                               Pre-LN layer (nk_layernorm_fwd/bwd) equal those of the
 *                               Pre-RMSNorm and Pre-CRMSNorm layers (nk_rmsnorm_*,
 *                               nk_crmsnorm_*) pulled back through the adjoints; without the
 *                               adjoint the Pre-CRMSNorm gradient is wrong (the test can fail)
 *   bad_inputs                  statuses of the two adjoints
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "util.h"

#define D 12   /* model width */
#define IN 7   /* writer input width */
#define T 9    /* tokens */
#define VOC 5  /* embedding rows */
#define EPS 1e-5f

static void fill(nk_rng *rng, float *p, size_t n, double scale, double shift) {
  for (size_t i = 0; i < n; i++) p[i] = (float)(shift + scale * nk_rng_normal(rng));
}

static double dot(const float *a, const float *b, size_t n, double *mag) {
  double s = 0.0, m = 0.0;
  for (size_t i = 0; i < n; i++) {
    s += (double)a[i] * (double)b[i];
    m += fabs((double)a[i] * (double)b[i]);
  }
  if (mag) *mag = m;
  return s;
}

NK_TEST(adjoints_are_exact) {
  nk_rng rng = {41};
  float W[D * IN], b[D], G[D * IN], gb[D], Wf[D * IN], bf[D], Gb[D * IN], gbb[D];
  float E[VOC * D], GE[VOC * D], Ef[VOC * D], GEb[VOC * D];
  fill(&rng, W, D * IN, 1.0, 0.3);
  fill(&rng, b, D, 1.0, -0.2);
  fill(&rng, G, D * IN, 1.0, 0.1);
  fill(&rng, gb, D, 1.0, 0.5);
  fill(&rng, E, VOC * D, 1.0, 0.7);
  fill(&rng, GE, VOC * D, 1.0, -0.4);
  double m1, m2;
  /* Pre-RMSNorm: P is symmetric, the writer is its own adjoint. */
  NK_REQUIRE(nk_preln_to_prerms_writer(NULL, D, IN, W, b, Wf, bf) == NK_STATUS_OK, "writer");
  NK_REQUIRE(nk_preln_to_prerms_writer(NULL, D, IN, G, gb, Gb, gbb) == NK_STATUS_OK, "writer");
  double l = dot(Wf, G, D * IN, &m1) + dot(bf, gb, D, &m2), r = dot(W, Gb, D * IN, NULL) + dot(b, gbb, D, NULL);
  NK_CHECK(fabs(l - r) <= 1e-6 * (m1 + m2), "prerms writer: <PW,G> %.17g vs <W,PG> %.17g", l, r);
  NK_REQUIRE(nk_preln_to_prerms_embedding(NULL, VOC, D, E, Ef) == NK_STATUS_OK, "embedding");
  NK_REQUIRE(nk_preln_to_prerms_embedding(NULL, VOC, D, GE, GEb) == NK_STATUS_OK, "embedding");
  l = dot(Ef, GE, VOC * D, &m1), r = dot(E, GEb, VOC * D, NULL);
  NK_CHECK(fabs(l - r) <= 1e-6 * m1, "prerms embedding: %.17g vs %.17g", l, r);

  /* Pre-CRMSNorm: forward drops the last coordinate; G'' has D - 1 rows. */
  const int Dn = D - 1;
  NK_REQUIRE(nk_preln_to_precrms_writer(NULL, D, IN, W, b, Wf, bf) == NK_STATUS_OK, "crms writer");
  NK_REQUIRE(nk_preln_to_precrms_writer_bwd(NULL, D, IN, G, gb, Gb, gbb) == NK_STATUS_OK,
             "crms writer bwd");
  l = dot(Wf, G, (size_t)Dn * IN, &m1) + dot(bf, gb, Dn, &m2);
  r = dot(W, Gb, D * IN, NULL) + dot(b, gbb, D, NULL);
  NK_CHECK(fabs(l - r) <= 1e-6 * (m1 + m2), "precrms writer: <EPW,G> %.17g vs <W,P[G;0]> %.17g", l, r);
  /* the formula, against double: dW[i][j] = G[i][j] - m_j (i < D-1), -m_j (i = D-1),
   * m_j = sum_{i<D-1} G[i][j] / D; each within 1 ulp + 1e-12 of the terms */
  for (int j = 0; j < IN; j++) {
    double m = 0.0, a = 0.0;
    for (int i = 0; i < Dn; i++) m += (double)G[i * IN + j], a += fabs((double)G[i * IN + j]);
    m /= D;
    for (int i = 0; i < D; i++) {
      const double want = (i < Dn ? (double)G[i * IN + j] : 0.0) - m;
      const double tol = fabs(want) * 0x1p-23 + 1e-12 * (a + fabs(want));
      NK_CHECK(fabs((double)Gb[i * IN + j] - want) <= tol, "dW[%d][%d] %.9g vs %.17g", i, j,
               (double)Gb[i * IN + j], want);
    }
  }
  NK_REQUIRE(nk_preln_to_precrms_embedding(NULL, VOC, D, E, Ef) == NK_STATUS_OK, "crms emb");
  NK_REQUIRE(nk_preln_to_precrms_embedding_bwd(NULL, VOC, D, GE, GEb) == NK_STATUS_OK,
             "crms emb bwd");
  l = dot(Ef, GE, (size_t)VOC * Dn, &m1), r = dot(E, GEb, VOC * D, NULL);
  NK_CHECK(fabs(l - r) <= 1e-6 * m1, "precrms embedding: %.17g vs %.17g", l, r);
  for (int v = 0; v < VOC; v++) { /* every adjoint row sums to 0 (it is centred) */
    double s = 0.0, a = 0.0;
    for (int i = 0; i < D; i++) s += GEb[v * D + i], a += fabs(GEb[v * D + i]);
    NK_CHECK(fabs(s) <= 1e-6 * a, "row %d of dE sums to %g", v, s);
  }
}

/* One token layer: h_t = x_t + W a_t + b (stream width dm), y = norm(h), loss = sum R y. */
typedef struct layer_out {
  double loss;
  float dh[T * D];
} layer_out;

static void stream(int dm, const float *x, const float *W, const float *b, const float *a,
                   float *h) {
  for (int t = 0; t < T; t++)
    for (int i = 0; i < dm; i++) {
      double s = (double)x[t * dm + i] + (double)b[i];
      for (int j = 0; j < IN; j++) s += (double)W[i * IN + j] * (double)a[t * IN + j];
      h[t * dm + i] = (float)s;
    }
}

/* kind 0 LayerNorm, 1 RMSNorm, 2 CRMSNorm (no affine), dm = D or D - 1 */
static nk_status run_norm(int kind, int dm, const float *h, const float *R, layer_out *o) {
  nk_norm_desc d = nk_norm_desc_dense(T, (size_t)dm, NK_DTYPE_F32, EPS);
  float y[T * D], mean[T], rstd[T];
  nk_status st;
  if (kind == 0) st = nk_layernorm_fwd(NULL, &d, h, NULL, NULL, NULL, y, NULL, mean, rstd);
  else if (kind == 1) st = nk_rmsnorm_fwd(NULL, &d, h, NULL, NULL, NULL, y, NULL, rstd);
  else st = nk_crmsnorm_fwd(NULL, &d, h, y, rstd);
  if (st != NK_STATUS_OK) return st;
  o->loss = dot(y, R, (size_t)T * dm, NULL);
  size_t ws_size = 0;
  if (kind == 0) st = nk_layernorm_bwd_workspace_size(&d, &ws_size);
  else if (kind == 1) st = nk_rmsnorm_bwd_workspace_size(&d, &ws_size);
  if (st != NK_STATUS_OK) return st;
  void *ws = ws_size ? malloc(ws_size) : NULL;
  if (kind == 0)
    st = nk_layernorm_bwd(NULL, &d, h, NULL, NULL, mean, rstd, R, NULL, o->dh, NULL, NULL, ws,
                          ws_size);
  else if (kind == 1)
    st = nk_rmsnorm_bwd(NULL, &d, h, NULL, NULL, rstd, R, NULL, o->dh, NULL, NULL, ws, ws_size);
  else st = nk_crmsnorm_bwd(NULL, &d, h, rstd, R, NULL, o->dh);
  free(ws);
  return st;
}

/* dW_eff = sum_t dh_t a_t^T (dm x IN), db_eff = sum_t dh_t (double, rounded once) */
static void weight_grads(int dm, const float *dh, const float *a, float *dW, float *db) {
  for (int i = 0; i < dm; i++) {
    double s = 0.0;
    for (int t = 0; t < T; t++) s += dh[t * dm + i];
    db[i] = (float)s;
    for (int j = 0; j < IN; j++) {
      double w = 0.0;
      for (int t = 0; t < T; t++) w += (double)dh[t * dm + i] * (double)a[t * IN + j];
      dW[i * IN + j] = (float)w;
    }
  }
}

static double max_abs_diff(const float *p, const float *q, size_t n, double *scale) {
  double m = 0.0, s = 0.0;
  for (size_t i = 0; i < n; i++) {
    m = fmax(m, fabs((double)p[i] - (double)q[i]));
    s = fmax(s, fabs((double)q[i]));
  }
  *scale = s;
  return m;
}

NK_TEST(gradients_match_pre_ln) {
  nk_rng rng = {7};
  /* The Pre-LN layer: the stream x comes from an embedding table row per token (tok), with a
   * large common offset, the writer W, b adds to it. */
  float E[VOC * D], W[D * IN], b[D], a[T * IN], R[T * D], x[T * D], h[T * D];
  int tok[T];
  fill(&rng, E, VOC * D, 1.0, 2.5);
  fill(&rng, W, D * IN, 0.5, 0.4);
  fill(&rng, b, D, 1.0, -1.0);
  fill(&rng, a, T * IN, 1.0, 0.0);
  fill(&rng, R, T * D, 1.0, 0.0);
  for (int t = 0; t < T; t++) tok[t] = (int)(nk_rng_u64(&rng) % VOC);
  for (int t = 0; t < T; t++) memcpy(x + t * D, E + tok[t] * D, D * sizeof(float));
  stream(D, x, W, b, a, h);
  layer_out ln;
  NK_REQUIRE(run_norm(0, D, h, R, &ln) == NK_STATUS_OK, "layernorm");
  float dW_ln[D * IN], db_ln[D], dE_ln[VOC * D];
  weight_grads(D, ln.dh, a, dW_ln, db_ln);
  memset(dE_ln, 0, sizeof dE_ln);
  for (int t = 0; t < T; t++)
    for (int i = 0; i < D; i++) dE_ln[tok[t] * D + i] += ln.dh[t * D + i];

  for (int crms = 0; crms <= 2; crms++) { /* 2: Pre-CRMSNorm without the adjoint (must fail) */
    const int dm = crms ? D - 1 : D;
    float Ee[VOC * D], We[D * IN], be[D], xe[T * D], he[T * D], Re[T * D];
    /* the effective weights of this step, from the free parameters */
    if (crms) {
      NK_REQUIRE(nk_preln_to_precrms_writer(NULL, D, IN, W, b, We, be) == NK_STATUS_OK, "w");
      NK_REQUIRE(nk_preln_to_precrms_embedding(NULL, VOC, D, E, Ee) == NK_STATUS_OK, "e");
    } else {
      NK_REQUIRE(nk_preln_to_prerms_writer(NULL, D, IN, W, b, We, be) == NK_STATUS_OK, "w");
      NK_REQUIRE(nk_preln_to_prerms_embedding(NULL, VOC, D, E, Ee) == NK_STATUS_OK, "e");
    }
    for (int t = 0; t < T; t++) memcpy(xe + t * dm, Ee + tok[t] * dm, (size_t)dm * sizeof(float));
    stream(dm, xe, We, be, a, he);
    /* The loss reads the full normalized vector: with the last coordinate implied (-sum of the
     * others), sum_i R_i y_i = sum_{i<D-1} (R_i - R_{D-1}) y_i. */
    for (int t = 0; t < T; t++)
      for (int i = 0; i < dm; i++)
        Re[t * dm + i] = crms ? (float)((double)R[t * D + i] - (double)R[t * D + D - 1]) : R[t * D + i];
    layer_out o;
    NK_REQUIRE(run_norm(crms ? 2 : 1, dm, he, Re, &o) == NK_STATUS_OK, "norm");
    NK_CHECK(fabs(o.loss - ln.loss) <= 2e-6 * (fabs(ln.loss) + 1.0), "crms %d: loss %.9g vs %.9g",
             crms, o.loss, ln.loss);
    float dWe[D * IN], dbe[D], dW[D * IN], db[D], dEe[VOC * D], dE[VOC * D];
    weight_grads(dm, o.dh, a, dWe, dbe);
    memset(dEe, 0, sizeof dEe);
    for (int t = 0; t < T; t++)
      for (int i = 0; i < dm; i++) dEe[tok[t] * dm + i] += o.dh[t * dm + i];
    /* back to the free parameters */
    if (crms == 1) {
      NK_REQUIRE(nk_preln_to_precrms_writer_bwd(NULL, D, IN, dWe, dbe, dW, db) == NK_STATUS_OK, "wb");
      NK_REQUIRE(nk_preln_to_precrms_embedding_bwd(NULL, VOC, D, dEe, dE) == NK_STATUS_OK, "eb");
    } else if (crms == 0) {
      NK_REQUIRE(nk_preln_to_prerms_writer(NULL, D, IN, dWe, dbe, dW, db) == NK_STATUS_OK, "wb");
      NK_REQUIRE(nk_preln_to_prerms_embedding(NULL, VOC, D, dEe, dE) == NK_STATUS_OK, "eb");
    } else { /* wrong: pad with zeros, no centring */
      memset(dW, 0, sizeof dW);
      memset(db, 0, sizeof db);
      memcpy(dW, dWe, (size_t)(D - 1) * IN * sizeof(float));
      memcpy(db, dbe, (D - 1) * sizeof(float));
      memset(dE, 0, sizeof dE);
      for (int v = 0; v < VOC; v++) memcpy(dE + v * D, dEe + v * (D - 1), (D - 1) * sizeof(float));
    }
    double sW, sb, sE;
    const double eW = max_abs_diff(dW, dW_ln, D * IN, &sW), eb = max_abs_diff(db, db_ln, D, &sb),
                 eE = max_abs_diff(dE, dE_ln, VOC * D, &sE);
    printf("  %s: loss %.9g (Pre-LN %.9g), max |dW - dW_ln| %.3g of %.3g, db %.3g of %.3g, dE %.3g of %.3g\n",
           crms == 0 ? "Pre-RMSNorm" : crms == 1 ? "Pre-CRMSNorm" : "Pre-CRMSNorm, no adjoint", o.loss,
           ln.loss, eW, sW, eb, sb, eE, sE);
    const int ok = eW <= 1e-5 * sW && eb <= 1e-5 * sb && eE <= 1e-5 * sE;
    if (crms < 2)
      NK_CHECK(ok, "crms %d: gradients differ from Pre-LN's (%g, %g, %g)", crms, eW / sW, eb / sb, eE / sE);
    else
      NK_CHECK(!ok && eW > 1e-2 * sW, "the gradient without the adjoint agrees (%g): the test cannot fail",
               eW / sW);
  }
}

NK_TEST(bad_inputs) {
  float g[2 * 3] = {1, 2, 3, 4, 5, 6}, out[3 * 3], ob[3], gb[2] = {1, 2};
  NK_CHECK(nk_preln_to_precrms_writer_bwd(NULL, 1, 3, g, gb, out, ob) == NK_STATUS_INVALID_ARGUMENT, "D 1");
  NK_CHECK(nk_preln_to_precrms_writer_bwd(NULL, 3, 3, NULL, gb, out, ob) == NK_STATUS_INVALID_ARGUMENT, "NULL");
  NK_CHECK(nk_preln_to_precrms_writer_bwd(NULL, 3, 3, g, gb, out, NULL) == NK_STATUS_INVALID_ARGUMENT,
           "db_out without db");
  NK_CHECK(nk_preln_to_precrms_writer_bwd(NULL, 3, 3, g, gb, g, ob) == NK_STATUS_INVALID_ARGUMENT,
           "in place (sizes differ)");
  NK_CHECK(nk_preln_to_precrms_writer_bwd(NULL, 3, 0, NULL, gb, NULL, ob) == NK_STATUS_OK, "in 0");
  NK_CHECK(ob[2] == (float)(-(1.0 + 2.0) / 3.0) && ob[0] == (float)(1.0 - 1.0), "in 0: db %g %g", ob[0], ob[2]);
  NK_CHECK(nk_preln_to_precrms_writer_bwd(NULL, (size_t)1 << 62, (size_t)1 << 62, g, NULL, out, NULL) ==
               NK_STATUS_INVALID_ARGUMENT, "size overflow");
  NK_CHECK(nk_preln_to_precrms_embedding_bwd(NULL, 2, 1, g, out) == NK_STATUS_INVALID_ARGUMENT, "emb D 1");
  NK_CHECK(nk_preln_to_precrms_embedding_bwd(NULL, 0, 3, NULL, NULL) == NK_STATUS_OK, "emb V 0");
  NK_CHECK(nk_preln_to_precrms_embedding_bwd(NULL, 2, 3, g, g) == NK_STATUS_INVALID_ARGUMENT, "emb overlap");
  NK_CHECK(nk_preln_to_precrms_embedding_bwd(NULL, 2, 3, (const float *)((const char *)g + 1), out) ==
               NK_STATUS_INVALID_ARGUMENT, "misaligned");
}

int main(void) {
  NK_RUN(adjoints_are_exact);
  NK_RUN(gradients_match_pre_ln);
  NK_RUN(bad_inputs);
  return nk_test_summary();
}
