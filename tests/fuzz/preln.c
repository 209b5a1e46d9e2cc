/*
 * tests/fuzz/preln.c — libFuzzer harness: the weight conversions Pre-LN -> Pre-RMSNorm ->
 * Pre-CRMSNorm (nk_preln_to_{prerms,precrms}_{reader,writer,embedding}), the Pre-CRMSNorm
 * adjoints for training (nk_preln_to_precrms_{writer,embedding}_bwd) and the BatchNorm folds
 * (nk_batchnorm_fold, nk_batchnorm_fold_linear), one call per input (fuzz.h: decoder, arena,
 * canaries). Sizes, optional gamma/beta/biases, in-place and the documented exact aliasing, eps
 * and values of any kind (NaN, inf, subnormals, 1e30, FLT_MAX) are decoded from the input; valid
 * calls are compared with the float64 references of src/reference (rowvariants.c nk_ref_preln_*,
 * chnorm.c nk_ref_batchnorm_fold*) within the header's bounds:
 *   conversions: 1 ulp (f32) plus, for the outputs that are sums (a reader's b_out, a writer's
 *     and an embedding's centred values), 1e-12 x the sum of the magnitudes of the terms;
 *   folds (tests/ops/batchnorm.c): scale, weight 1 ulp; shift 1 ulp + 1e-12 (|b| + |mean| |g r|),
 *     bias_out 1 ulp + 1e-12 (|b| + |bias - mean| |g r|).
 * 1 input in 8 breaks one rule (a NULL, a bad D, a b/b_out pairing, a partial or forbidden
 * overlap, a misaligned pointer, an overflowing size, a bad eps) and must get INVALID_ARGUMENT,
 * a message (conversions with a context; the folds take none) and no write at all.
 */
#include <float.h>

#include "fuzz.h"
#include "reference.h"

#define MAXD 40  /* conversions: model width D */
#define MAXO 24  /* reader rows, writer columns, embedding rows */
#define MAXC 64  /* folds: channels */
#define MAXK 40  /* fold_linear: weight row length */
#define MAXN (MAXC * MAXK)

enum { OP_READER, OP_WRITER, OP_EMBEDDING, OP_FOLD, OP_FOLD_LINEAR };
enum { BAD_NONE, BAD_NULL, BAD_SIZE, BAD_PAIRING, BAD_OVERLAP, BAD_MISALIGN, BAD_OVERFLOW,
       BAD_EPS, BAD_COUNT };

static double r_a[MAXN], r_b[MAXN], r_c[MAXD > MAXC ? MAXD : MAXC], r_d[MAXC], r_e[MAXC],
    r_f[MAXC], want1[MAXN], want2[MAXC], got[MAXN];

static float *place(fz_in *in, size_t n, fz_geom *g) {
  *g = fz_vec(n, sizeof(float));
  return fz_place(in, g, NULL);
}
/* a buffer of n decoded values (ref: their doubles) */
static float *input(fz_in *in, size_t n, double *ref) {
  fz_geom g;
  float *p = place(in, n, &g);
  const fz_dist d = fz_dist_pick(in, 24);
  fz_fill(in, p, &g, NK_DTYPE_F32, &d, ref);
  return p;
}
static float *shifted(const void *p, size_t bytes) { return (float *)((uintptr_t)p + bytes); }

static const size_t big_sizes[] = {SIZE_MAX, SIZE_MAX / 3, (size_t)PTRDIFF_MAX / 4 + 1,
                                   (size_t)1 << 62, SIZE_MAX / 16 + 1};

/* Misaligns one of the n non-NULL pointers *p[i] (1-3 bytes). 0 if there is none. */
static int misalign(fz_in *in, float **p[], int n) {
  int k = 0;
  float **live[8];
  for (int i = 0; i < n; i++)
    if (*p[i]) live[k++] = p[i];
  if (k == 0) return 0;
  float **q = live[fz_pick(in, (unsigned)k)];
  *q = shifted(*q, 1 + fz_pick(in, 3));
  return 1;
}

static void check(const float *p, const double *ref, size_t n, const double *mag, const char *what) {
  for (size_t i = 0; i < n; i++) {
    const double bound = fz_ulp(ref[i], NK_DTYPE_F32) + (mag ? 1e-12 * mag[i] : 0.0);
    FZ_CHECK(fz_close(p[i], ref[i], bound, NK_DTYPE_F32), "%s[%zu] = %.9g, ref %.17g (bound %.3g)",
             what, i, (double)p[i], ref[i], bound);
  }
}

/* ---- the conversions --------------------------------------------------------------------- */

/* The Pre-CRMSNorm adjoints (training): nk_preln_to_precrms_writer_bwd / _embedding_bwd take
 * Dn = D - 1 rows (columns for tables) and give D: P [G; 0]. Reference: the Pre-RMSNorm writer
 * (embedding) of the zero-padded gradient; bound as the conversions'. */
static int adjoint(fz_in *in, nk_context *ctx, unsigned kind, unsigned bad, size_t D, size_t n,
                   unsigned opt) {
  const size_t Dn = D - 1;
  const int writer = kind == OP_WRITER, has_b = writer && (opt & 16);
  const size_t nin = n * Dn, nout = n * D;
  const int no_w = writer && n == 0 && (opt & 64);
  fz_geom g1, g2;
  float *G = no_w ? NULL : input(in, nin, r_b), *gb = has_b ? input(in, Dn, r_f) : NULL;
  float *out = no_w ? NULL : place(in, nout, &g1), *ob = has_b ? place(in, D, &g2) : NULL;
  const fz_geom go = fz_vec(nout, 4), gob = fz_vec(has_b ? D : 0, 4);
  nk_status want = NK_OK;
  const int empty = writer ? (n == 0 && !has_b) : n == 0;
  if (empty && bad != BAD_SIZE && bad != BAD_OVERFLOW) bad = BAD_NONE;
  switch (bad) {
  case BAD_NULL:
    if (writer && n == 0) break;
    if (fz_u8(in) & 1) G = NULL; else out = NULL;
    want = NK_STATUS_INVALID_ARGUMENT;
    break;
  case BAD_SIZE: D = 1; want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_PAIRING:
    if (writer) {
      if (has_b) ob = NULL; else ob = place(in, D, &g2);
      want = NK_STATUS_INVALID_ARGUMENT;
    }
    break;
  case BAD_OVERLAP: /* no in place (the sizes differ): the output on an input */
    if (nin > 0 && out) out = G + fz_pick(in, (unsigned)nin), want = NK_STATUS_INVALID_ARGUMENT;
    else if (gb && ob) ob = gb, want = NK_STATUS_INVALID_ARGUMENT;
    break;
  case BAD_MISALIGN: {
    float **p[4] = {&G, &gb, &out, &ob};
    if (misalign(in, p, 4)) want = NK_STATUS_INVALID_ARGUMENT;
    break;
  }
  case BAD_OVERFLOW:
    n = big_sizes[fz_pick(in, 5)];
    want = NK_STATUS_INVALID_ARGUMENT;
    break;
  }
  if (want == NK_OK) fz_writable(out, &go), fz_writable(ob, &gob);
  fz_snapshot();
  const nk_status st = writer ? nk_preln_to_precrms_writer_bwd(ctx, D, n, G, gb, out, ob)
                              : nk_preln_to_precrms_embedding_bwd(ctx, n, D, G, out);
  if (want != NK_OK) {
    FZ_CHECK(st == want, "adjoint %u bad %u: status %d, want %d (%s)", kind, bad, st, want,
             nk_context_message(ctx));
    FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "no message for a failure");
    fz_check_arena(0, "preln adjoint");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "adjoint %u: status %d (%s)", kind, st, nk_context_message(ctx));
  fz_check_arena(1, "preln adjoint");
  /* zero-pad the gradient to D rows (writer) or D columns (table) */
  for (size_t k = 0; k < n; k++)
    for (size_t i = 0; i < D; i++) {
      const size_t at = writer ? i * n + k : k * D + i;
      r_a[at] = i < Dn ? r_b[writer ? i * n + k : k * Dn + i] : 0.0;
    }
  if (writer) {
    double bpad[MAXD];
    for (size_t i = 0; i < D; i++) bpad[i] = i < Dn && has_b ? r_f[i] : 0.0;
    nk_ref_preln_writer(0, D, n, r_a, has_b ? bpad : NULL, want1, want2);
    for (size_t j = 0; j < n; j++) {
      double m = 0.0;
      for (size_t i = 0; i < D; i++) m += fabs(r_a[i * n + j]);
      for (size_t i = 0; i < D; i++) got[i * n + j] = fabs(r_a[i * n + j]) + m / (double)D;
    }
    if (n) check(out, want1, nout, got, "writer_bwd dW");
    if (has_b) {
      double m = 0.0, mag[MAXD];
      for (size_t i = 0; i < D; i++) m += fabs(bpad[i]);
      for (size_t i = 0; i < D; i++) mag[i] = fabs(bpad[i]) + m / (double)D;
      check(ob, want2, D, mag, "writer_bwd db");
    }
  } else {
    if (n == 0) return 1;
    nk_ref_preln_embedding(0, n, D, r_a, want1);
    for (size_t v = 0; v < n; v++) {
      double m = 0.0;
      for (size_t i = 0; i < D; i++) m += fabs(r_a[v * D + i]);
      for (size_t i = 0; i < D; i++) got[v * D + i] = fabs(r_a[v * D + i]) + m / (double)D;
    }
    check(out, want1, nout, got, "embedding_bwd dE");
  }
  return 1;
}

static int conversion(fz_in *in, nk_context *ctx, unsigned kind, unsigned bad) {
  const int crms = fz_u8(in) & 1;
  size_t D = crms ? 2 + fz_pick(in, MAXD - 1) : 1 + fz_pick(in, MAXD);
  size_t n = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, MAXO); /* out, in or V */
  const size_t Dn = D - (size_t)crms;
  const unsigned opt = fz_u8(in);
  if (crms && kind != OP_READER && (opt & 128)) return adjoint(in, ctx, kind, bad, D, n, opt);
  const int inplace_w = !crms && (opt & 1), inplace_b = !crms && (opt & 2);
  const int has_g = kind == OP_READER && (opt & 4), has_beta = kind == OP_READER && (opt & 8);
  const int has_b = kind != OP_EMBEDDING && (opt & 16);
  /* reader: b_out may be NULL only when beta and b are; writer: b_out iff b */
  const int has_bout = kind == OP_WRITER    ? has_b
                       : kind == OP_READER ? (has_b || has_beta || (opt & 32))
                                           : 0;
  fz_geom g1, g2;
  float *gamma = NULL, *beta = NULL, *W = NULL, *b = NULL, *W_out = NULL, *b_out = NULL;
  size_t nw = 0, nwo = 0, nb = 0, nbo = 0;
  switch (kind) {
  case OP_READER: nw = n * D, nwo = n * Dn, nb = n, nbo = n; break;
  case OP_WRITER: nw = D * n, nwo = Dn * n, nb = D, nbo = Dn; break;
  default: nw = n * D, nwo = n * Dn; break;
  }
  const int no_w = kind == OP_WRITER && n == 0 && (opt & 64); /* in == 0: W may be NULL */
  if (has_g) gamma = input(in, D, r_c);
  if (has_beta) beta = input(in, D, r_d);
  if (!no_w) W = input(in, nw, r_a);
  if (has_b) b = input(in, nb, r_e);
  const fz_geom gwo = fz_vec(nwo, 4), gbo = fz_vec(nbo, 4);
  if (!no_w) W_out = inplace_w ? W : place(in, nwo, &g1);
  if (has_bout) b_out = inplace_b && b ? b : place(in, nbo, &g2);

  nk_status want = NK_OK;
  const int empty = kind == OP_WRITER ? (n == 0 && !has_b) : n == 0;
  if (empty && bad != BAD_SIZE && bad != BAD_OVERFLOW) bad = BAD_NONE; /* no-op: nothing checked */
  switch (bad) {
  case BAD_NULL:
    if (kind == OP_WRITER && n == 0) break;
    if (fz_u8(in) & 1) W = NULL; else W_out = NULL;
    want = NK_STATUS_INVALID_ARGUMENT;
    break;
  case BAD_SIZE: D = crms ? 1 : 0; want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_PAIRING:
    if (kind == OP_READER && (has_b || has_beta)) b_out = NULL, want = NK_STATUS_INVALID_ARGUMENT;
    if (kind == OP_WRITER) {
      if (has_b) b_out = NULL; else b_out = place(in, nbo, &g2);
      want = NK_STATUS_INVALID_ARGUMENT;
    }
    break;
  case BAD_OVERLAP: /* the first applicable of five overlaps, from a decoded start */
    for (unsigned t = 0, k = fz_pick(in, 5); t < 5 && want == NK_OK; t++, k = (k + 1) % 5) {
      if (k == 0 && nw > 1 && nwo > 0) W_out = W + 1 + fz_pick(in, (unsigned)(nw - 1)); /* partial */
      else if (k == 1 && crms && nwo > 0) W_out = W; /* CRMS: no in place */
      else if (k == 2 && nwo > 0 && b_out) b_out = W_out + fz_pick(in, (unsigned)nwo);
      else if (k == 3 && nwo > 0 && (gamma || beta || b)) W_out = gamma ? gamma : beta ? beta : b;
      else if (k == 4 && b && b_out && (crms || nbo > 1)) b_out = crms ? b : b + 1;
      else continue;
      want = NK_STATUS_INVALID_ARGUMENT;
    }
    break;
  case BAD_MISALIGN: {
    float **p[6] = {&gamma, &beta, &W, &b, &W_out, &b_out};
    if (misalign(in, p, 6)) want = NK_STATUS_INVALID_ARGUMENT;
    break;
  }
  case BAD_OVERFLOW:
    n = big_sizes[fz_pick(in, 5)];
    want = NK_STATUS_INVALID_ARGUMENT;
    break;
  }
  if (want == NK_OK) fz_writable(W_out, &gwo), fz_writable(b_out, &gbo);
  fz_snapshot();
  nk_status st;
  switch (kind) {
  case OP_READER:
    st = crms ? nk_preln_to_precrms_reader(ctx, D, n, gamma, beta, W, b, W_out, b_out)
              : nk_preln_to_prerms_reader(ctx, D, n, gamma, beta, W, b, W_out, b_out);
    break;
  case OP_WRITER:
    st = crms ? nk_preln_to_precrms_writer(ctx, D, n, W, b, W_out, b_out)
              : nk_preln_to_prerms_writer(ctx, D, n, W, b, W_out, b_out);
    break;
  default:
    st = crms ? nk_preln_to_precrms_embedding(ctx, n, D, W, W_out)
              : nk_preln_to_prerms_embedding(ctx, n, D, W, W_out);
    break;
  }
  if (want != NK_OK) {
    FZ_CHECK(st == want, "conversion %u crms %d bad %u: status %d, want %d (%s)", kind, crms, bad,
             st, want, nk_context_message(ctx));
    FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "no message for a failure");
    fz_check_arena(0, "preln");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "conversion %u crms %d: status %d (%s)", kind, crms, st,
           nk_context_message(ctx));
  fz_check_arena(1, "preln");
  if (kind == OP_READER) {
    if (n == 0) return 1;
    nk_ref_preln_reader(crms, D, n, has_g ? r_c : NULL, has_beta ? r_d : NULL, r_a,
                        has_b ? r_e : NULL, want1, want2);
    check(W_out, want1, nwo, NULL, "reader W_out");
    if (b_out) {
      for (size_t o = 0; o < n; o++) { /* magnitudes of b + sum W beta */
        double m = has_b ? fabs(r_e[o]) : 0.0;
        for (size_t j = 0; has_beta && j < D; j++) m += fabs(r_a[o * D + j] * r_d[j]);
        got[o] = m;
      }
      check(b_out, want2, n, got, "reader b_out");
    }
  } else if (kind == OP_WRITER) {
    nk_ref_preln_writer(crms, D, n, no_w ? NULL : r_a, has_b ? r_e : NULL, want1, want2);
    for (size_t j = 0; j < n; j++) {
      double m = 0.0;
      for (size_t i = 0; i < D; i++) m += fabs(r_a[i * n + j]);
      for (size_t i = 0; i < Dn; i++) got[i * n + j] = fabs(r_a[i * n + j]) + m / (double)D;
    }
    if (n) check(W_out, want1, nwo, got, "writer W_out");
    if (has_b) {
      double m = 0.0;
      for (size_t i = 0; i < D; i++) m += fabs(r_e[i]);
      for (size_t i = 0; i < Dn; i++) got[i] = fabs(r_e[i]) + m / (double)D;
      check(b_out, want2, Dn, got, "writer b_out");
    }
  } else {
    if (n == 0) return 1;
    nk_ref_preln_embedding(crms, n, D, r_a, want1);
    for (size_t v = 0; v < n; v++) {
      double m = 0.0;
      for (size_t i = 0; i < D; i++) m += fabs(r_a[v * D + i]);
      for (size_t i = 0; i < Dn; i++) got[v * Dn + i] = fabs(r_a[v * D + i]) + m / (double)D;
    }
    check(W_out, want1, nwo, got, "embedding E_out");
  }
  return 1;
}

/* ---- the BatchNorm folds ------------------------------------------------------------------- */

static int fold(fz_in *in, unsigned kind, unsigned bad) {
  const int linear = kind == OP_FOLD_LINEAR;
  size_t C = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, MAXC);
  size_t K = linear ? (fz_pick(in, 8) == 0 ? 0 : 1 + fz_pick(in, MAXK)) : 0;
  static const float eps_t[] = {1e-5f, 1e-5f, 1e-3f, 1e-45f, 1.0f, 0.1f, 1e-12f};
  float eps = eps_t[fz_pick(in, 7)];
  const unsigned opt = fz_u8(in);
  const int has_g = opt & 1, has_beta = opt & 2, has_bias = linear && (opt & 4);
  const unsigned alias = fz_pick(in, 6);
  float *rm = input(in, C, r_c), *rv = input(in, C, r_d);
  if (!(opt & 8)) /* mostly a variance >= 0; sometimes negative ones too (NaN channels) */
    for (size_t c = 0; c < C; c++) rv[c] = fabsf(rv[c]), r_d[c] = fabs(r_d[c]);
  float *g = has_g ? input(in, C, r_e) : NULL, *be = has_beta ? input(in, C, r_f) : NULL;
  float *bias = has_bias ? input(in, C, want2) : NULL;
  float *w = linear && (K || (opt & 16)) ? input(in, C * K, r_a) : NULL;
  fz_geom gs, gh;
  const fz_geom gc = fz_vec(C, 4), gw = fz_vec(C * K, 4);
  float *scale = NULL, *shift = NULL, *bias_out = NULL;
  if (!linear) {
    /* the documented exact aliasing: scale = gamma / running_var, shift = beta / running_mean */
    scale = alias == 1 && g ? g : alias == 3 ? rv : place(in, C, &gs);
    shift = alias == 2 && be ? be : alias == 3 ? rm : place(in, C, &gh);
  } else {
    bias_out = alias == 1 && bias ? bias : alias == 2 && be ? be : alias == 3 ? rm
                                                                    : place(in, C, &gs);
  }
  double mag[MAXC];
  for (size_t c = 0; c < C; c++) r_b[c] = has_bias ? want2[c] : 0.0; /* keep bias's values */

  nk_status want = NK_OK;
  if (C == 0 && bad != BAD_EPS && bad != BAD_OVERFLOW) bad = BAD_NONE;
  switch (bad) {
  case BAD_NULL: {
    const unsigned k = fz_pick(in, 4);
    if (k == 0) rm = NULL; else if (k == 1) rv = NULL;
    else if (!linear) { if (k == 2) scale = NULL; else shift = NULL; }
    else if (k == 2 || !K) bias_out = NULL; else w = NULL;
    want = NK_STATUS_INVALID_ARGUMENT;
    break;
  }
  case BAD_EPS: case BAD_SIZE: case BAD_PAIRING: {
    static const float t[] = {0.0f, -1e-5f, NAN, INFINITY, -0.0f, -INFINITY};
    eps = t[fz_pick(in, 6)];
    want = NK_STATUS_INVALID_ARGUMENT;
    break;
  }
  case BAD_OVERLAP: { /* d: a partial offset (C >= 2) */
    const size_t d = C > 1 ? 1 + fz_pick(in, (unsigned)(C - 1)) : 0;
    const unsigned k = C > 1 ? fz_pick(in, 5) : 0;
    if (!linear) {
      if (k == 0) shift = scale;                  /* outputs on each other */
      else if (k == 1) scale = rm + d;            /* partial over an input */
      else if (k == 2) shift = scale + d;         /* partial outputs */
      else if (k == 3) shift = rv - d;            /* partial, from below */
      else scale = shift = g ? g : rv;            /* both on one input */
    } else {
      if (k == 0 && w && K) bias_out = w + fz_pick(in, (unsigned)(C * K)); /* into weight */
      else if (k == 1 && w && K) w = rv + d - (C > 1); /* weight over an input */
      else if (k == 2 && K == 1) w = bias_out;        /* weight == bias_out */
      else if (k == 3 && d) bias_out = rm + d;        /* partial over an input */
      else if (w && K) w = bias_out;                   /* weight over bias_out */
      else if (d) bias_out = rv + d;
      else break; /* C 1, K 0: only exact aliasing is possible, and it is allowed */
    }
    want = NK_STATUS_INVALID_ARGUMENT;
    break;
  }
  case BAD_MISALIGN: {
    float **pl[7] = {&rm, &rv, &g, &be, &bias, &w, &bias_out};
    float **pf[6] = {&rm, &rv, &g, &be, &scale, &shift};
    if (linear ? misalign(in, pl, 7) : misalign(in, pf, 6)) want = NK_STATUS_INVALID_ARGUMENT;
    break;
  }
  case BAD_OVERFLOW:
    if (!linear) C = big_sizes[fz_pick(in, 4)]; /* bytes beyond PTRDIFF_MAX */
    else {
      static const size_t ck[][2] = {{(size_t)1 << 31, (size_t)1 << 31}, {3, SIZE_MAX / 2},
                                     {1, (size_t)1 << 61}, {(size_t)1 << 40, (size_t)1 << 22},
                                     {SIZE_MAX / 2, 1}, {(size_t)1 << 62, 0}};
      const unsigned k = fz_pick(in, 6);
      C = ck[k][0], K = ck[k][1];
      if (K && !w) w = bias_out; /* NULL would be reported first; any pointer will do */
    }
    want = NK_STATUS_INVALID_ARGUMENT;
    break;
  }
  if (want == NK_OK) {
    if (linear) fz_writable(w, &gw), fz_writable(bias_out, &gc);
    else fz_writable(scale, &gc), fz_writable(shift, &gc);
  }
  fz_snapshot();
  const nk_status st = linear ? nk_batchnorm_fold_linear(C, K, eps, rm, rv, g, be, w, bias, bias_out)
                              : nk_batchnorm_fold(C, eps, rm, rv, g, be, scale, shift);
  if (want != NK_OK) {
    FZ_CHECK(st == want, "fold linear %d bad %u: status %d, want %d", linear, bad, st, want);
    fz_check_arena(0, "batchnorm_fold");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "fold linear %d: status %d", linear, st);
  fz_check_arena(1, "batchnorm_fold");
  if (C == 0) return 1;
  const double *G = has_g ? r_e : NULL, *B = has_beta ? r_f : NULL;
  if (!linear) {
    nk_ref_batchnorm_fold(C, eps, r_c, r_d, G, B, want1, want2);
    check(scale, want1, C, NULL, "scale");
    for (size_t c = 0; c < C; c++) mag[c] = fabs(B ? B[c] : 0.0) + fabs(r_c[c] * want1[c]);
    check(shift, want2, C, mag, "shift");
  } else {
    double sc[MAXC];
    nk_ref_batchnorm_fold(C, eps, r_c, r_d, G, B, sc, want1); /* g r, for the bound */
    memcpy(want1, r_a, C * K * sizeof(double));
    nk_ref_batchnorm_fold_linear(C, K, eps, r_c, r_d, G, B, want1, has_bias ? r_b : NULL, want2);
    if (K) check(w, want1, C * K, NULL, "weight");
    for (size_t c = 0; c < C; c++)
      mag[c] = fabs(B ? B[c] : 0.0) + fabs(r_b[c] - r_c[c]) * fabs(sc[c]);
    check(bias_out, want2, C, mag, "bias_out");
  }
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in;
  fz_start(&in, "preln", data, size);
  const unsigned bad = fz_pick(&in, 8) == 0 ? 1 + fz_pick(&in, BAD_COUNT - 1) : BAD_NONE;
  nk_context *ctx = fz_context(&in);
  const unsigned kind = fz_pick(&in, 5);
  const int ok = kind <= OP_EMBEDDING ? conversion(&in, ctx, kind, bad) : fold(&in, kind, bad);
  if (ok) fz_valid++;
  return 0;
}
