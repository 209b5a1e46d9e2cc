/*
 * preln.c — the exact weight conversions Pre-LN -> Pre-RMSNorm -> Pre-CRMSNorm (Jiang et al.
 * 2023; spec/layers.md §3.3; normkit.h "Research normalization layers"). Offline arithmetic on
 * dense row-major f32 matrices in nn.Linear layout W[out][in]: every output is computed in
 * double from the f32 inputs and rounded once. Never allocates: a writer's column means are
 * taken column by column (in place works, since a column is read fully before it is written).
 */
#include <math.h>
#include <string.h>

#include "internal.h"
#include "validate.h"

/* [p, p + n floats) and [q, q + m floats) intersect */
static int overlaps(const float *p, size_t n, const float *q, size_t m) {
  if (p == NULL || q == NULL || n == 0 || m == 0) return 0;
  const uintptr_t a0 = (uintptr_t)p, a1 = a0 + n * sizeof(float);
  const uintptr_t b0 = (uintptr_t)q, b1 = b0 + m * sizeof(float);
  return a0 < b1 && b0 < a1;
}

/* outputs may equal an input exactly only when `same_ok` and the sizes match */
static int bad_alias(const float *out, size_t n_out, const float *in, size_t n_in, int same_ok) {
  if (!overlaps(out, n_out, in, n_in)) return 0;
  return !(same_ok && out == in && n_out == n_in);
}

/* Every given pointer aligned to 4 bytes (normkit's rule: a pointer is aligned to its element;
 * a misaligned one is INVALID_ARGUMENT). names: one per pointer. */
static nk_status check_aligned(nk_context *ctx, const char *op, const float *const *p,
                               const char *const *names, int n) {
  for (int i = 0; i < n; i++)
    if (p[i] != NULL && (uintptr_t)p[i] % sizeof(float) != 0)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                      "%s: %s (%p) is not aligned to its element size (4 bytes)", op, names[i],
                      (const void *)p[i]);
  return NK_STATUS_OK;
}

static nk_status check_sizes(nk_context *ctx, const char *op, size_t a, size_t b, size_t *ab) {
  if (!nk__mul_size(a, b, ab))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %zu x %zu overflows", op, a, b);
  if (*ab > (SIZE_MAX / 2) / sizeof(double))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %zu x %zu is too large", op, a, b);
  return NK_STATUS_OK;
}

/* ---- readers: fold gamma/beta (and, for CRMSNorm, subtract the last column) --------------- */

static nk_status reader(nk_context *ctx, int crms, size_t D, size_t out, const float *gamma,
                        const float *beta, const float *W, const float *b, float *W_out,
                        float *b_out) {
  const char *op = crms ? "preln_to_precrms_reader" : "preln_to_prerms_reader";
  if (D == 0 || (crms && D < 2))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: D %zu must be >= %d", op, D, crms ? 2 : 1);
  size_t nw;
  TRY(check_sizes(ctx, op, out, D, &nw));
  if (out == 0) return nk__ok(ctx);
  const size_t Dn = crms ? D - 1 : D, nwo = out * Dn;
  if (W == NULL || W_out == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, W ? "W_out" : "W");
  if (b_out == NULL && (beta != NULL || b != NULL))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: b_out is NULL but the bias is not 0", op);
  {
    const float *const p[6] = {gamma, beta, W, b, W_out, b_out};
    static const char *const names[6] = {"gamma", "beta", "W", "b", "W_out", "b_out"};
    TRY(check_aligned(ctx, op, p, names, 6));
  }
  const float *ins[4] = {gamma, beta, W, b};
  const size_t ins_n[4] = {D, D, nw, out};
  for (int i = 0; i < 4; i++) {
    const int same_ok = !crms && (i == 2 || i == 3);
    if (bad_alias(W_out, nwo, ins[i], ins_n[i], !crms && i == 2) ||
        bad_alias(b_out, out, ins[i], ins_n[i], same_ok && i == 3))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: an output overlaps an input", op);
  }
  if (overlaps(W_out, nwo, b_out, out))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: W_out overlaps b_out", op);
  for (size_t o = 0; o < out; o++) {
    const float *w = W + o * D;
    /* the bias first: in place, the row is still the input */
    if (b_out != NULL) {
      double acc = b ? (double)b[o] : 0.0;
      if (beta)
        for (size_t j = 0; j < D; j++) acc += (double)w[j] * (double)beta[j];
      b_out[o] = (float)acc;
    }
    const double last = crms ? (double)w[D - 1] * (gamma ? (double)gamma[D - 1] : 1.0) : 0.0;
    float *wo = W_out + o * Dn;
    for (size_t j = 0; j < Dn; j++) {
      const double v = (double)w[j] * (gamma ? (double)gamma[j] : 1.0);
      wo[j] = (float)(v - last);
    }
  }
  return nk__ok(ctx);
}

nk_status nk_preln_to_prerms_reader(nk_context *ctx, size_t D, size_t out, const float *gamma,
                                    const float *beta, const float *W, const float *b,
                                    float *W_out, float *b_out) {
  return reader(ctx, 0, D, out, gamma, beta, W, b, W_out, b_out);
}

nk_status nk_preln_to_precrms_reader(nk_context *ctx, size_t D, size_t out, const float *gamma,
                                     const float *beta, const float *W, const float *b,
                                     float *W_out, float *b_out) {
  return reader(ctx, 1, D, out, gamma, beta, W, b, W_out, b_out);
}

/* ---- writers: centre over the D outputs (and, for CRMSNorm, drop the last) ----------------- */

static nk_status writer(nk_context *ctx, int crms, size_t D, size_t in, const float *W,
                        const float *b, float *W_out, float *b_out) {
  const char *op = crms ? "preln_to_precrms_writer" : "preln_to_prerms_writer";
  if (D == 0 || (crms && D < 2))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: D %zu must be >= %d", op, D, crms ? 2 : 1);
  size_t nw;
  TRY(check_sizes(ctx, op, D, in, &nw));
  const size_t Dn = crms ? D - 1 : D, nwo = Dn * in;
  if (in > 0 && (W == NULL || W_out == NULL))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, W ? "W_out" : "W");
  if ((b == NULL) != (b_out == NULL))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: b and b_out must both be given or both NULL", op);
  {
    const float *const p[4] = {W, b, W_out, b_out};
    static const char *const names[4] = {"W", "b", "W_out", "b_out"};
    TRY(check_aligned(ctx, op, p, names, 4));
  }
  if (bad_alias(W_out, nwo, W, nw, !crms) || bad_alias(W_out, nwo, b, D, 0) ||
      bad_alias(b_out, Dn, b, D, !crms) || bad_alias(b_out, Dn, W, nw, 0) ||
      overlaps(W_out, nwo, b_out, Dn))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: an output overlaps an input", op);
  for (size_t j = 0; j < in; j++) {
    double m = 0.0;
    for (size_t i = 0; i < D; i++) m += (double)W[i * in + j];
    m /= (double)D;
    for (size_t i = 0; i < Dn; i++) W_out[i * in + j] = (float)((double)W[i * in + j] - m);
  }
  if (b != NULL) {
    double m = 0.0;
    for (size_t i = 0; i < D; i++) m += (double)b[i];
    m /= (double)D;
    for (size_t i = 0; i < Dn; i++) b_out[i] = (float)((double)b[i] - m);
  }
  return nk__ok(ctx);
}

nk_status nk_preln_to_prerms_writer(nk_context *ctx, size_t D, size_t in, const float *W,
                                    const float *b, float *W_out, float *b_out) {
  return writer(ctx, 0, D, in, W, b, W_out, b_out);
}

nk_status nk_preln_to_precrms_writer(nk_context *ctx, size_t D, size_t in, const float *W,
                                     const float *b, float *W_out, float *b_out) {
  return writer(ctx, 1, D, in, W, b, W_out, b_out);
}

/* ---- embedding tables: centre each row (and, for CRMSNorm, drop its last element) --------- */

static nk_status embedding(nk_context *ctx, int crms, size_t V, size_t D, const float *E,
                           float *E_out) {
  const char *op = crms ? "preln_to_precrms_embedding" : "preln_to_prerms_embedding";
  if (D == 0 || (crms && D < 2))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: D %zu must be >= %d", op, D, crms ? 2 : 1);
  size_t ne;
  TRY(check_sizes(ctx, op, V, D, &ne));
  if (V == 0) return nk__ok(ctx);
  const size_t Dn = crms ? D - 1 : D;
  if (E == NULL || E_out == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, E ? "E_out" : "E");
  {
    const float *const p[2] = {E, E_out};
    static const char *const names[2] = {"E", "E_out"};
    TRY(check_aligned(ctx, op, p, names, 2));
  }
  if (bad_alias(E_out, V * Dn, E, ne, !crms))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: E_out overlaps E", op);
  for (size_t v = 0; v < V; v++) {
    const float *e = E + v * D;
    double m = 0.0;
    for (size_t i = 0; i < D; i++) m += (double)e[i];
    m /= (double)D;
    for (size_t i = 0; i < Dn; i++) E_out[v * Dn + i] = (float)((double)e[i] - m);
  }
  return nk__ok(ctx);
}

nk_status nk_preln_to_prerms_embedding(nk_context *ctx, size_t V, size_t D, const float *E,
                                       float *E_out) {
  return embedding(ctx, 0, V, D, E, E_out);
}

nk_status nk_preln_to_precrms_embedding(nk_context *ctx, size_t V, size_t D, const float *E,
                                        float *E_out) {
  return embedding(ctx, 1, V, D, E, E_out);
}

/* ---- Pre-CRMSNorm training: the adjoints of the writer and the embedding ------------------- */

/* G (rows x Dn cells per item, Dn = D - 1) -> out (D x ...): each item padded with a zero last
 * element, then centred over its D elements: out = P [G; 0]. `items` columns of a D x items
 * matrix (writer, stride items) or rows of a V x D table (embedding, stride 1). */
static void pad_centre(size_t D, size_t items, size_t item_step, size_t elem_step,
                       size_t in_item_step, size_t in_elem_step, const float *G, float *out) {
  for (size_t j = 0; j < items; j++) {
    double m = 0.0;
    for (size_t i = 0; i + 1 < D; i++) m += (double)G[j * in_item_step + i * in_elem_step];
    m /= (double)D;
    for (size_t i = 0; i + 1 < D; i++)
      out[j * item_step + i * elem_step] = (float)((double)G[j * in_item_step + i * in_elem_step] - m);
    out[j * item_step + (D - 1) * elem_step] = (float)-m;
  }
}

nk_status nk_preln_to_precrms_writer_bwd(nk_context *ctx, size_t D, size_t in,
                                         const float *dW_out, const float *db_out, float *dW,
                                         float *db) {
  const char *op = "preln_to_precrms_writer_bwd";
  if (D < 2) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: D %zu must be >= 2", op, D);
  size_t nw;
  TRY(check_sizes(ctx, op, D, in, &nw));
  const size_t nwo = (D - 1) * in;
  if (in > 0 && (dW_out == NULL || dW == NULL))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, dW_out ? "dW" : "dW_out");
  if ((db_out == NULL) != (db == NULL))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: db_out and db must both be given or both NULL", op);
  {
    const float *const p[4] = {dW_out, db_out, dW, db};
    static const char *const names[4] = {"dW_out", "db_out", "dW", "db"};
    TRY(check_aligned(ctx, op, p, names, 4));
  }
  if (bad_alias(dW, nw, dW_out, nwo, 0) || bad_alias(dW, nw, db_out, D - 1, 0) ||
      bad_alias(db, D, db_out, D - 1, 0) || bad_alias(db, D, dW_out, nwo, 0) ||
      overlaps(dW, nw, db, D))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: an output overlaps an input", op);
  if (in > 0) pad_centre(D, in, 1, in, 1, in, dW_out, dW);
  if (db_out != NULL) pad_centre(D, 1, 0, 1, 0, 1, db_out, db);
  return nk__ok(ctx);
}

nk_status nk_preln_to_precrms_embedding_bwd(nk_context *ctx, size_t V, size_t D,
                                            const float *dE_out, float *dE) {
  const char *op = "preln_to_precrms_embedding_bwd";
  if (D < 2) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: D %zu must be >= 2", op, D);
  size_t ne;
  TRY(check_sizes(ctx, op, V, D, &ne));
  if (V == 0) return nk__ok(ctx);
  if (dE_out == NULL || dE == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, dE_out ? "dE" : "dE_out");
  {
    const float *const p[2] = {dE_out, dE};
    static const char *const names[2] = {"dE_out", "dE"};
    TRY(check_aligned(ctx, op, p, names, 2));
  }
  if (bad_alias(dE, ne, dE_out, V * (D - 1), 0))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: dE overlaps dE_out", op);
  pad_centre(D, V, D, 1, D - 1, 1, dE_out, dE);
  return nk__ok(ctx);
}
