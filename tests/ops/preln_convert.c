/*
 * tests/ops/preln_convert.c — the exact conversions Pre-LN -> Pre-RMSNorm -> Pre-CRMSNorm
 * (nk_preln_to_prerms_* / nk_preln_to_precrms_*, spec §3.3). A random small Pre-LN model
 * (embedding + positions, one block of causal 2-head attention and a GELU MLP, a final norm
 * and an output head) is run by a simple double reference with LayerNorm; its weights are
 * converted, and the converted models run with normkit's nk_rmsnorm_fwd / nk_crmsnorm_fwd (f32)
 * on the residual stream. The logits must agree within float32 rounding, and the streams must
 * be related as the construction says (centred; compressed). A deliberately wrong conversion
 * (an uncentred writer) must break the agreement, so the comparison can fail.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "util.h"

#define D 12  /* model width */
#define T 6   /* tokens */
#define V 20  /* vocabulary */
#define H 2   /* heads (head width D / H) */
#define F 32  /* MLP hidden width */
#define VO 10 /* output classes */
#define EPS 1e-5f

typedef struct model {
  int dm;      /* stream width: D, or D - 1 for Pre-CRMSNorm */
  int norm;    /* 0 LayerNorm (double, with gamma/beta), 1 nk_rmsnorm_fwd, 2 nk_crmsnorm_fwd */
  float *E, *P;                   /* V x dm, T x dm */
  float *g1, *b1, *g2, *b2, *gf, *bf; /* LayerNorm affine (norm 0 only) */
  float *Wqkv, *bqkv;             /* 3D x dm, 3D */
  float *Wo, *bo;                 /* dm x D, dm */
  float *Wup, *bup;               /* F x dm, F */
  float *Wdn, *bdn;               /* dm x F, dm */
  float *Wh, *bh;                 /* VO x dm, VO */
} model;

static float *rnd(nk_rng *rng, size_t n, double scale, double shift) {
  float *p = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) p[i] = (float)(shift + scale * nk_rng_normal(rng));
  return p;
}

/* out[o] = b[o] + sum_j W[o][j] in[j] (double) */
static void linear(size_t out, size_t in, const float *W, const float *b, const double *x,
                   double *y) {
  for (size_t o = 0; o < out; o++) {
    double acc = b ? (double)b[o] : 0.0;
    for (size_t j = 0; j < in; j++) acc += (double)W[o * in + j] * x[j];
    y[o] = acc;
  }
}

/* the norm of one token's stream vector h (width dm) */
static void norm(const model *m, int which, const double *h, double *u) {
  const int dm = m->dm;
  if (m->norm == 0) {
    const float *g = which == 0 ? m->g1 : which == 1 ? m->g2 : m->gf;
    const float *b = which == 0 ? m->b1 : which == 1 ? m->b2 : m->bf;
    double mu = 0.0, var = 0.0;
    for (int i = 0; i < dm; i++) mu += h[i];
    mu /= dm;
    for (int i = 0; i < dm; i++) var += (h[i] - mu) * (h[i] - mu);
    var /= dm;
    const double r = 1.0 / sqrt(var + (double)EPS);
    for (int i = 0; i < dm; i++) u[i] = (h[i] - mu) * r * g[i] + b[i];
    return;
  }
  float hf[D], uf[D];
  for (int i = 0; i < dm; i++) hf[i] = (float)h[i];
  const nk_norm_desc d = nk_norm_desc_dense(1, (size_t)dm, NK_DTYPE_F32, EPS);
  nk_status st = m->norm == 1 ? nk_rmsnorm_fwd(NULL, &d, hf, NULL, NULL, NULL, uf, NULL, NULL)
                              : nk_crmsnorm_fwd(NULL, &d, hf, uf, NULL);
  NK_CHECK(st == NK_OK, "norm status %d", (int)st);
  for (int i = 0; i < dm; i++) u[i] = uf[i];
}

static double gelu(double v) { return 0.5 * v * (1.0 + erf(v / sqrt(2.0))); }

/* logits (T x VO) and the final residual stream (T x dm) */
static void forward(const model *m, const int *tok, double *logits, double *stream) {
  const int dm = m->dm, hd = D / H;
  double h[T][D], u[T][D], qkv[T][3 * D], att[D], o[D], f[F], z[D];
  for (int t = 0; t < T; t++)
    for (int i = 0; i < dm; i++) h[t][i] = (double)m->E[tok[t] * dm + i] + (double)m->P[t * dm + i];
  for (int t = 0; t < T; t++) {
    norm(m, 0, h[t], u[t]);
    linear(3 * D, (size_t)dm, m->Wqkv, m->bqkv, u[t], qkv[t]);
  }
  double hn[T][D];
  for (int t = 0; t < T; t++) {
    for (int hh = 0; hh < H; hh++) { /* causal softmax attention of head hh */
      double s[T], mx = -INFINITY, sum = 0.0;
      for (int k = 0; k <= t; k++) {
        s[k] = 0.0;
        for (int i = 0; i < hd; i++) s[k] += qkv[t][hh * hd + i] * qkv[k][D + hh * hd + i];
        s[k] /= sqrt((double)hd);
        mx = fmax(mx, s[k]);
      }
      for (int k = 0; k <= t; k++) sum += (s[k] = exp(s[k] - mx));
      for (int i = 0; i < hd; i++) {
        double a = 0.0;
        for (int k = 0; k <= t; k++) a += s[k] / sum * qkv[k][2 * D + hh * hd + i];
        att[hh * hd + i] = a;
      }
    }
    linear((size_t)dm, D, m->Wo, m->bo, att, o);
    for (int i = 0; i < dm; i++) hn[t][i] = h[t][i] + o[i];
  }
  for (int t = 0; t < T; t++) {
    norm(m, 1, hn[t], u[t]);
    linear(F, (size_t)dm, m->Wup, m->bup, u[t], f);
    for (int i = 0; i < F; i++) f[i] = gelu(f[i]);
    linear((size_t)dm, F, m->Wdn, m->bdn, f, o);
    for (int i = 0; i < dm; i++) hn[t][i] += o[i];
    for (int i = 0; i < dm; i++) stream[t * dm + i] = hn[t][i];
    norm(m, 2, hn[t], z);
    linear(VO, (size_t)dm, m->Wh, m->bh, z, logits + t * VO);
  }
}

static model random_preln(nk_rng *rng) {
  model m;
  memset(&m, 0, sizeof m);
  m.dm = D;
  m.norm = 0;
  m.E = rnd(rng, V * D, 1.0, 0.7); /* a mean per token: the centring has work to do */
  m.P = rnd(rng, T * D, 0.3, -0.2);
  m.g1 = rnd(rng, D, 0.3, 1.0), m.b1 = rnd(rng, D, 0.3, 0.0);
  m.g2 = rnd(rng, D, 0.3, 1.0), m.b2 = rnd(rng, D, 0.3, 0.1);
  m.gf = rnd(rng, D, 0.3, 1.0), m.bf = rnd(rng, D, 0.3, -0.1);
  m.Wqkv = rnd(rng, 3 * D * D, 0.4, 0.0), m.bqkv = rnd(rng, 3 * D, 0.1, 0.0);
  m.Wo = rnd(rng, D * D, 0.3, 0.1), m.bo = rnd(rng, D, 0.1, 0.2);
  m.Wup = rnd(rng, F * D, 0.3, 0.0), m.bup = rnd(rng, F, 0.1, 0.0);
  m.Wdn = rnd(rng, D * F, 0.2, -0.05), m.bdn = rnd(rng, D, 0.1, 0.3);
  m.Wh = rnd(rng, VO * D, 0.4, 0.0), m.bh = rnd(rng, VO, 0.1, 0.0);
  return m;
}

static void free_model(model *m) {
  float *p[] = {m->E, m->P, m->g1, m->b1, m->g2, m->b2, m->gf, m->bf, m->Wqkv, m->bqkv,
                m->Wo, m->bo, m->Wup, m->bup, m->Wdn, m->bdn, m->Wh, m->bh};
  for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
}

/* The converted model (crms = 0: Pre-RMSNorm, 1: Pre-CRMSNorm). bad_writer skips the centring
 * of the attention out-projection (a wrong conversion). */
static model convert(const model *s, int crms, int bad_writer) {
  model m;
  memset(&m, 0, sizeof m);
  const int dm = crms ? D - 1 : D;
  m.dm = dm;
  m.norm = crms ? 2 : 1;
  m.E = malloc(V * dm * sizeof(float)), m.P = malloc(T * dm * sizeof(float));
  m.Wqkv = malloc(3 * D * dm * sizeof(float)), m.bqkv = malloc(3 * D * sizeof(float));
  m.Wo = malloc(dm * D * sizeof(float)), m.bo = malloc(dm * sizeof(float));
  m.Wup = malloc(F * dm * sizeof(float)), m.bup = malloc(F * sizeof(float));
  m.Wdn = malloc(dm * F * sizeof(float)), m.bdn = malloc(dm * sizeof(float));
  m.Wh = malloc(VO * dm * sizeof(float)), m.bh = malloc(VO * sizeof(float));
  int ok = 1;
  if (!crms) {
    ok &= nk_preln_to_prerms_embedding(NULL, V, D, s->E, m.E) == NK_OK;
    ok &= nk_preln_to_prerms_embedding(NULL, T, D, s->P, m.P) == NK_OK;
    ok &= nk_preln_to_prerms_reader(NULL, D, 3 * D, s->g1, s->b1, s->Wqkv, s->bqkv, m.Wqkv, m.bqkv) == NK_OK;
    ok &= nk_preln_to_prerms_writer(NULL, D, D, s->Wo, s->bo, m.Wo, m.bo) == NK_OK;
    ok &= nk_preln_to_prerms_reader(NULL, D, F, s->g2, s->b2, s->Wup, s->bup, m.Wup, m.bup) == NK_OK;
    ok &= nk_preln_to_prerms_writer(NULL, D, F, s->Wdn, s->bdn, m.Wdn, m.bdn) == NK_OK;
    ok &= nk_preln_to_prerms_reader(NULL, D, VO, s->gf, s->bf, s->Wh, s->bh, m.Wh, m.bh) == NK_OK;
    if (bad_writer) memcpy(m.Wo, s->Wo, D * D * sizeof(float)), memcpy(m.bo, s->bo, D * sizeof(float));
  } else {
    ok &= nk_preln_to_precrms_embedding(NULL, V, D, s->E, m.E) == NK_OK;
    ok &= nk_preln_to_precrms_embedding(NULL, T, D, s->P, m.P) == NK_OK;
    ok &= nk_preln_to_precrms_reader(NULL, D, 3 * D, s->g1, s->b1, s->Wqkv, s->bqkv, m.Wqkv, m.bqkv) == NK_OK;
    ok &= nk_preln_to_precrms_writer(NULL, D, D, s->Wo, s->bo, m.Wo, m.bo) == NK_OK;
    ok &= nk_preln_to_precrms_reader(NULL, D, F, s->g2, s->b2, s->Wup, s->bup, m.Wup, m.bup) == NK_OK;
    ok &= nk_preln_to_precrms_writer(NULL, D, F, s->Wdn, s->bdn, m.Wdn, m.bdn) == NK_OK;
    ok &= nk_preln_to_precrms_reader(NULL, D, VO, s->gf, s->bf, s->Wh, s->bh, m.Wh, m.bh) == NK_OK;
  }
  NK_CHECK(ok, "a conversion failed");
  return m;
}

static double max_abs(const double *v, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
  return m;
}

/* float32 rounding of weights (once) and of the normalized vectors: 1e-5 of the logits' scale */
#define TOL 1e-5

NK_TEST(block_output_is_unchanged_by_both_conversions) {
  for (uint64_t seed = 1; seed <= 4; seed++) {
    nk_rng rng = {seed * 977};
    int tok[T];
    for (int t = 0; t < T; t++) tok[t] = (int)(nk_rng_u64(&rng) % V);
    model ln = random_preln(&rng);
    model rms = convert(&ln, 0, 0), crms = convert(&ln, 1, 0), bad = convert(&ln, 0, 1);
    double l0[T * VO], l1[T * VO], l2[T * VO], lb[T * VO], s0[T * D], s1[T * D], s2[T * D], sb[T * D];
    forward(&ln, tok, l0, s0);
    forward(&rms, tok, l1, s1);
    forward(&crms, tok, l2, s2);
    forward(&bad, tok, lb, sb);
    const double scale = max_abs(l0, T * VO);
    double e1 = 0.0, e2 = 0.0, eb = 0.0, es1 = 0.0, es2 = 0.0;
    for (int i = 0; i < T * VO; i++) {
      e1 = fmax(e1, fabs(l1[i] - l0[i]));
      e2 = fmax(e2, fabs(l2[i] - l0[i]));
      eb = fmax(eb, fabs(lb[i] - l0[i]));
    }
    /* streams: Pre-RMSNorm's is the centred Pre-LN stream; Pre-CRMSNorm's its first D-1 */
    const double sscale = max_abs(s0, T * D);
    for (int t = 0; t < T; t++) {
      double mu = 0.0, sum1 = 0.0;
      for (int i = 0; i < D; i++) mu += s0[t * D + i] / D, sum1 += s1[t * D + i];
      es1 = fmax(es1, fabs(sum1) / D);
      for (int i = 0; i < D; i++) es1 = fmax(es1, fabs(s1[t * D + i] - (s0[t * D + i] - mu)));
      for (int i = 0; i < D - 1; i++) es2 = fmax(es2, fabs(s2[t * (D - 1) + i] - s1[t * D + i]));
    }
    NK_CHECK(e1 <= TOL * scale, "seed %llu: Pre-RMSNorm logits off by %g (scale %g)", (unsigned long long)seed, e1, scale);
    NK_CHECK(e2 <= TOL * scale, "seed %llu: Pre-CRMSNorm logits off by %g (scale %g)", (unsigned long long)seed, e2, scale);
    NK_CHECK(es1 <= TOL * sscale && es2 <= TOL * sscale, "streams off by %g, %g (scale %g)", es1, es2, sscale);
    NK_CHECK(eb > 100 * TOL * scale, "an uncentred writer should break the equivalence (%g)", eb);
    if (seed == 1)
      printf("        max logit error: Pre-RMSNorm %.2e, Pre-CRMSNorm %.2e, wrong conversion %.2e "
             "(scale %.2f)\n", e1 / scale, e2 / scale, eb / scale, scale);
    free_model(&ln), free_model(&rms), free_model(&crms), free_model(&bad);
  }
}

NK_TEST(conversion_formulas_and_in_place) {
  nk_rng rng = {3};
  const size_t out = 5, Dd = 4;
  float *W = rnd(&rng, out * Dd, 1.0, 0.0), *b = rnd(&rng, out, 1.0, 0.0);
  float *g = rnd(&rng, Dd, 0.5, 1.0), *be = rnd(&rng, Dd, 0.5, 0.0);
  float Wo[20], bo[5], Wc[15], bc[5];
  NK_REQUIRE(nk_preln_to_prerms_reader(NULL, Dd, out, g, be, W, b, Wo, bo) == NK_OK, "reader");
  NK_REQUIRE(nk_preln_to_precrms_reader(NULL, Dd, out, g, be, W, b, Wc, bc) == NK_OK, "crms reader");
  for (size_t o = 0; o < out; o++) {
    double acc = b[o];
    for (size_t j = 0; j < Dd; j++) {
      acc += (double)W[o * Dd + j] * be[j];
      NK_CHECK(Wo[o * Dd + j] == (float)((double)W[o * Dd + j] * g[j]), "W diag(gamma)");
      if (j + 1 < Dd)
        NK_CHECK(Wc[o * (Dd - 1) + j] == (float)((double)W[o * Dd + j] * g[j] - (double)W[o * Dd + 3] * g[3]),
                 "last column subtracted");
    }
    NK_CHECK(bo[o] == (float)acc && bc[o] == (float)acc, "b + W beta");
  }
  /* in place (Pre-RMSNorm) equals out of place */
  float Wi[20], bi[5];
  memcpy(Wi, W, sizeof Wi), memcpy(bi, b, sizeof bi);
  NK_CHECK(nk_preln_to_prerms_reader(NULL, Dd, out, g, be, Wi, bi, Wi, bi) == NK_OK &&
               memcmp(Wi, Wo, sizeof Wi) == 0 && memcmp(bi, bo, sizeof bi) == 0, "reader in place");
  /* writer: columns centred over the D outputs; Pre-CRMSNorm drops the last row */
  float *Ww = rnd(&rng, Dd * 3, 1.0, 0.5), *bw = rnd(&rng, Dd, 1.0, 0.5), Wwo[12], bwo[4], Wwc[9], bwc[3];
  NK_REQUIRE(nk_preln_to_prerms_writer(NULL, Dd, 3, Ww, bw, Wwo, bwo) == NK_OK, "writer");
  NK_REQUIRE(nk_preln_to_precrms_writer(NULL, Dd, 3, Ww, bw, Wwc, bwc) == NK_OK, "crms writer");
  for (size_t j = 0; j < 3; j++) {
    double s = 0.0;
    for (size_t i = 0; i < Dd; i++) s += Wwo[i * 3 + j];
    NK_CHECK(fabs(s) < 1e-6, "column %zu not centred: %g", j, s);
    for (size_t i = 0; i + 1 < Dd; i++) NK_CHECK(Wwc[i * 3 + j] == Wwo[i * 3 + j], "rows kept");
  }
  NK_CHECK(fabs((double)bwo[0] + bwo[1] + bwo[2] + bwo[3]) < 1e-6 && bwc[2] == bwo[2], "bias centred");
  float Wwi[12], bwi[4];
  memcpy(Wwi, Ww, sizeof Wwi), memcpy(bwi, bw, sizeof bwi);
  NK_CHECK(nk_preln_to_prerms_writer(NULL, Dd, 3, Wwi, bwi, Wwi, bwi) == NK_OK &&
               memcmp(Wwi, Wwo, sizeof Wwi) == 0 && memcmp(bwi, bwo, sizeof bwi) == 0, "writer in place");
  float Ee[8] = {1, 2, 3, 6, -1, -1, -1, 3}, Eo[8], Ec[6];
  NK_REQUIRE(nk_preln_to_prerms_embedding(NULL, 2, 4, Ee, Eo) == NK_OK, "emb");
  NK_REQUIRE(nk_preln_to_precrms_embedding(NULL, 2, 4, Ee, Ec) == NK_OK, "crms emb");
  const float want[8] = {-2, -1, 0, 3, -1, -1, -1, 3};
  NK_CHECK(memcmp(Eo, want, sizeof want) == 0, "rows centred");
  NK_CHECK(Ec[0] == -2 && Ec[2] == 0 && Ec[3] == -1 && Ec[5] == -1, "last column dropped");
  free(W), free(b), free(g), free(be), free(Ww), free(bw);
}

NK_TEST(bad_inputs) {
  float W[12] = {0}, b[4] = {0}, o[12], ob[4];
  nk_context *ctx = NULL;
  NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "ctx");
  NK_CHECK(nk_preln_to_prerms_reader(ctx, 0, 3, NULL, NULL, W, b, o, ob) == NK_STATUS_INVALID_ARGUMENT, "D 0");
  NK_CHECK(nk_preln_to_precrms_reader(ctx, 1, 3, NULL, NULL, W, b, o, ob) == NK_STATUS_INVALID_ARGUMENT, "D 1 crms");
  NK_CHECK(nk_preln_to_prerms_reader(ctx, 4, 3, NULL, NULL, NULL, b, o, ob) == NK_STATUS_INVALID_ARGUMENT, "W NULL");
  NK_CHECK(nk_preln_to_prerms_reader(ctx, 4, 3, NULL, b, W, b, o, NULL) == NK_STATUS_INVALID_ARGUMENT, "b_out NULL with beta");
  NK_CHECK(nk_preln_to_prerms_reader(ctx, 4, 3, NULL, NULL, W, b, W + 1, ob) == NK_STATUS_INVALID_ARGUMENT, "partial overlap");
  NK_CHECK(nk_preln_to_precrms_reader(ctx, 4, 3, NULL, NULL, W, b, W, ob) == NK_STATUS_INVALID_ARGUMENT, "crms in place");
  NK_CHECK(nk_preln_to_prerms_writer(ctx, 4, 3, W, b, o, NULL) == NK_STATUS_INVALID_ARGUMENT, "b without b_out");
  NK_CHECK(nk_preln_to_precrms_writer(ctx, 4, 3, W, b, W, ob) == NK_STATUS_INVALID_ARGUMENT, "crms writer in place");
  NK_CHECK(nk_preln_to_prerms_writer(ctx, 4, 3, W, NULL, o, (float *)o + 2) == NK_STATUS_INVALID_ARGUMENT, "b_out NULL pairing");
  NK_CHECK(nk_preln_to_prerms_embedding(ctx, 3, 4, W, W + 4) == NK_STATUS_INVALID_ARGUMENT, "emb overlap");
  NK_CHECK(nk_preln_to_precrms_embedding(ctx, 2, 1, W, o) == NK_STATUS_INVALID_ARGUMENT, "emb D 1");
  NK_CHECK(nk_preln_to_prerms_embedding(ctx, SIZE_MAX, 4, W, o) == NK_STATUS_INVALID_ARGUMENT, "overflow");
  NK_CHECK(nk_preln_to_prerms_embedding(ctx, 0, 4, NULL, NULL) == NK_OK, "V 0");
  NK_CHECK(nk_preln_to_prerms_reader(ctx, 4, 0, NULL, NULL, NULL, NULL, NULL, NULL) == NK_OK, "out 0");
  nk_context_destroy(ctx);
}

/* Misaligned pointers are INVALID_ARGUMENT with a message and nothing written (they were
 * accepted and used before: fuzz harness tests/fuzz/preln.c, rule "misaligned"). */
NK_TEST(misaligned_pointers) {
  static float pool[64];
  float snap[64];
  for (int i = 0; i < 64; i++) pool[i] = (float)i;
  memcpy(snap, pool, sizeof pool);
  float *in = pool, *o = pool + 32;
  float *min = (float *)((char *)in + 2), *mo = (float *)((char *)o + 1);
  nk_context *ctx = NULL;
  NK_REQUIRE(nk_context_create(&ctx) == NK_OK, "ctx");
#define MIS(call, what)                                                                          \
  do {                                                                                           \
    NK_CHECK((call) == NK_STATUS_INVALID_ARGUMENT && nk_context_message(ctx)[0],                 \
             "%s: not INVALID_ARGUMENT with a message", what);                                   \
    NK_CHECK(memcmp(snap, pool, sizeof pool) == 0, "%s: something was written", what);          \
  } while (0)
  MIS(nk_preln_to_prerms_reader(ctx, 4, 2, min, NULL, in + 8, NULL, o, o + 8), "reader gamma");
  MIS(nk_preln_to_precrms_reader(ctx, 4, 2, NULL, NULL, in, in + 8, o, mo + 8), "reader b_out");
  MIS(nk_preln_to_prerms_reader(ctx, 4, 2, NULL, NULL, in, NULL, mo, NULL), "reader W_out");
  MIS(nk_preln_to_prerms_writer(ctx, 4, 2, min, NULL, o, NULL), "writer W");
  MIS(nk_preln_to_precrms_writer(ctx, 4, 2, in, in + 8, o, mo + 8), "writer b_out");
  MIS(nk_preln_to_prerms_writer(ctx, 4, 0, NULL, min + 8, NULL, o), "writer b, in 0");
  MIS(nk_preln_to_prerms_embedding(ctx, 2, 4, min, o), "embedding E");
  MIS(nk_preln_to_precrms_embedding(ctx, 2, 4, in, mo), "embedding E_out");
#undef MIS
  nk_context_destroy(ctx);
}

int main(void) {
  NK_RUN(block_output_is_unchanged_by_both_conversions);
  NK_RUN(conversion_formulas_and_in_place);
  NK_RUN(bad_inputs);
  NK_RUN(misaligned_pointers);
  return nk_test_summary();
}
