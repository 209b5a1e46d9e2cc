/*
 * hcal.c — h-calibration (spec stats-optim-rl.md D14; include/normkit.h "Calibration and model
 * merging"; docs/ops/hcal.md): the official code's loss H(P, O) (leave-one-class-out event
 * sets, sorted windowed gaps with zero padding, tolerance, unweighted or cluster weighting with
 * a deterministic 1-D k-means) and its gradient, the temperature-scaling ensemble calibrator
 * (LinearMap) with its parameter gradients, and a deterministic full-batch Adam fit. Double,
 * serial, caller workspace.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "validate.h"

nk_hcal_desc nk_hcal_desc_default(void) {
  nk_hcal_desc d;
  d.veclen = 200;
  d.epsilon = 1e-20;
  d.lossweight = 1e5;
  d.leave_one_out = 1;
  d.weighting = NK_HCAL_CLUSTER;
  d.clusters = 15;
  d.kmeans_iters = 25;
  return d;
}

nk_hcal_fit_desc nk_hcal_fit_desc_default(void) {
  nk_hcal_fit_desc f;
  f.epochs = 2000;
  f.lr = 5e-3;
  f.beta1 = 0.9;
  f.beta2 = 0.999;
  f.eps = 1e-8;
  return f;
}

/* One sorted event. */
typedef struct hc_event {
  double key;
  size_t idx;
} hc_event;

static int cmp_event(const void *a, const void *b) {
  const hc_event *x = a, *y = b;
  if (x->key < y->key) return -1;
  if (x->key > y->key) return 1;
  return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Workspace in doubles. Loss: the events (2 per event: key and index), then per event the
 * gaps p - o, the window sums S, the coefficients and the cluster ids, then 4 x 4096 for the
 * clusters: 6 n K + 16448. Ensemble: P and dH/dP (2 n K) and two rows (2 K) first, the loss
 * area after them, then the Adam state and the best parameters (8 members). */
#define HC_FIXED 16448
static int ws_doubles(size_t n, size_t K, size_t members, size_t *out) {
  size_t nk, a, b;
  if (!nk__mul_size(n, K, &nk) || !nk__mul_size(nk, 6, &a) || !nk__add_size(a, HC_FIXED, &a))
    return 0;
  if (members) {
    if (!nk__mul_size(nk, 2, &b) || !nk__add_size(a, b, &a) || !nk__mul_size(K, 2, &b) ||
        !nk__add_size(a, b, &a) || !nk__mul_size(members, 8, &b) || !nk__add_size(a, b, &a))
      return 0;
  }
  if (a > (SIZE_MAX - NK_WORKSPACE_ALIGN) / sizeof(double)) return 0; /* + the slack */
  *out = a;
  return 1;
}

nk_status nk_hcal_workspace_size(nk_context *ctx, size_t n, size_t K, size_t members,
                                 size_t *bytes) {
  static const char op[] = "hcal_workspace_size";
  NK_REQUIRE_PTR(bytes);
  size_t d;
  if (!ws_doubles(n, K, members, &d))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: n %zu x K %zu is too large", op, n,
                    K);
  nk__ws_bytes(d * sizeof(double), bytes); /* plus the alignment slack (cannot overflow) */
  return nk__ok(ctx);
}

static nk_status check_desc(nk_context *ctx, const char *op, const nk_hcal_desc *d) {
  if (d->veclen % 2 != 0 || d->veclen > ((size_t)1 << 40))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: veclen %zu must be even", op,
                    d->veclen);
  if (!(d->epsilon >= 0.0) || !isfinite(d->epsilon))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: epsilon %g", op, d->epsilon);
  if (!(d->lossweight > 0.0) || !isfinite(d->lossweight))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: lossweight %g", op, d->lossweight);
  if (d->weighting != NK_HCAL_UNWEIGHTED && d->weighting != NK_HCAL_CLUSTER)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown weighting %d", op,
                    (int)d->weighting);
  if (d->weighting == NK_HCAL_CLUSTER && (d->clusters < 1 || d->clusters > 4096))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: clusters %zu must be in [1, 4096]",
                    op, d->clusters);
  return NK_STATUS_OK;
}

/* Deterministic 1-D k-means of v[0..E) (see the header); writes the cluster of each value to
 * id[] and the counts to cnt[]. cen: C doubles, sum: C doubles scratch. */
static void kmeans_1d(const double *v, size_t E, size_t C, size_t iters, double *cen,
                      double *sum, double *cnt, double *id) {
  for (size_t c = 0; c < C; c++) {
    size_t k = (size_t)(((double)(2 * c + 1) * (double)E) / (double)(2 * C));
    if (k >= E) k = E - 1;
    cen[c] = v[k];
  }
  for (size_t it = 0; it <= iters; it++) {
    for (size_t c = 0; c < C; c++) sum[c] = cnt[c] = 0.0;
    for (size_t i = 0; i < E; i++) {
      size_t best = 0;
      double bd = fabs(v[i] - cen[0]);
      for (size_t c = 1; c < C; c++) {
        const double dd = fabs(v[i] - cen[c]);
        if (dd < bd) {
          bd = dd;
          best = c;
        }
      }
      id[i] = (double)best;
      sum[best] += v[i];
      cnt[best] += 1.0;
    }
    if (it == iters) break; /* the last round is the final assignment */
    for (size_t c = 0; c < C; c++)
      if (cnt[c] > 0.0) cen[c] = sum[c] / cnt[c];
  }
}

/* Adds the loss of one event set (rows with label != excl; excl == K: all rows) times `scale`
 * to *loss and its gradient to g (if not NULL). ws: the event buffers. */
static void set_loss(const nk_hcal_desc *d, size_t n, size_t K, const double *P,
                     const int64_t *y, size_t excl, double scale, double *loss, double *g,
                     double *ws) {
  hc_event *ev = (hc_event *)ws;
  size_t E = 0;
  for (size_t r = 0; r < n; r++) {
    if ((size_t)y[r] == excl) continue;
    for (size_t c = 0; c < K; c++) {
      ev[E].key = log(P[r * K + c] + 1e-20);
      ev[E].idx = r * K + c;
      E++;
    }
  }
  if (E == 0) return; /* empty set: H_set = 0 */
  qsort(ev, E, sizeof *ev, cmp_event);
  double *diff = ws + 2 * n * K, *S = diff + n * K, *coef = S + n * K, *aux = coef + n * K;
  for (size_t i = 0; i < E; i++) {
    const size_t j = ev[i].idx;
    diff[i] = P[j] - ((size_t)y[j / K] == j % K ? 1.0 : 0.0);
  }
  const size_t r = d->veclen / 2;
  const double w = (double)(d->veclen + 1);
  for (size_t i = 0; i < E; i++) {
    const size_t lo = i >= r ? i - r : 0, hi = i + r < E ? i + r : E - 1;
    double s = 0.0;
    for (size_t j = lo; j <= hi; j++) s += diff[j];
    S[i] = s;
  }
  double h = 0.0;
  if (d->weighting == NK_HCAL_UNWEIGHTED) {
    for (size_t i = 0; i < E; i++) {
      const double e = fmax(fabs(S[i]) / w - d->epsilon, 0.0);
      h += e;
      coef[i] = 1.0 / (double)E;
    }
    h /= (double)E;
  } else {
    const size_t C = d->clusters;
    double *id = aux, *cen = aux + E, *sum = cen + C, *cnt = sum + C, *bin = cnt + C;
    for (size_t i = 0; i < E; i++) coef[i] = P[ev[i].idx]; /* the sorted p */
    kmeans_1d(coef, E, C, d->kmeans_iters, cen, sum, cnt, id);
    for (size_t c = 0; c < C; c++) bin[c] = 0.0;
    for (size_t i = 0; i < E; i++) {
      const double e = fmax(fabs(S[i]) / w - d->epsilon, 0.0);
      bin[(size_t)id[i]] += e;
    }
    for (size_t c = 0; c < C; c++) h += bin[c] / (cnt[c] + 1e-5);
    h /= (double)C;
    for (size_t i = 0; i < E; i++) coef[i] = 1.0 / ((double)C * (cnt[(size_t)id[i]] + 1e-5));
  }
  *loss += scale * h;
  if (g == NULL) return;
  /* gS_i = scale c_i sgn(S_i) / w where T_i > eps; dH/dp_j = sum over the windows holding j */
  for (size_t i = 0; i < E; i++) {
    const double T = fabs(S[i]) / w;
    const double sg = S[i] > 0.0 ? 1.0 : (S[i] < 0.0 ? -1.0 : 0.0);
    S[i] = T > d->epsilon ? scale * coef[i] * sg / w : 0.0;
  }
  for (size_t j = 0; j < E; j++) {
    const size_t lo = j >= r ? j - r : 0, hi = j + r < E ? j + r : E - 1;
    double s = 0.0;
    for (size_t i = lo; i <= hi; i++) s += S[i];
    g[ev[j].idx] += s;
  }
}

/* The loss over every set (validated inputs). */
static double hcal_core(const nk_hcal_desc *d, size_t n, size_t K, const double *P,
                        const int64_t *y, double *g, double *ws) {
  double loss = 0.0;
  if (g) memset(g, 0, n * K * sizeof(double));
  if (n == 0) return 0.0;
  if (d->leave_one_out) {
    const double scale = d->lossweight / (double)K;
    for (size_t e = 0; e < K; e++) set_loss(d, n, K, P, y, e, scale, &loss, g, ws);
  } else {
    set_loss(d, n, K, P, y, K, d->lossweight, &loss, g, ws);
  }
  return loss;
}

static nk_status check_labels(nk_context *ctx, const char *op, size_t n, size_t K,
                              const int64_t *y) {
  for (size_t r = 0; r < n; r++)
    if (y[r] < 0 || (uint64_t)y[r] >= (uint64_t)K)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: labels[%zu] = %lld out of [0, %zu)",
                      op, r, (long long)y[r], K);
  return NK_STATUS_OK;
}

/* *need: the workspace bytes (the doubles plus the alignment slack; any address works). */
static nk_status check_ws(nk_context *ctx, const char *op, size_t n, size_t K, size_t members,
                          const void *ws, size_t bytes, size_t *need) {
  size_t d;
  if (!ws_doubles(n, K, members, &d))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: n %zu x K %zu is too large", op, n, K);
  *need = 0;
  nk__ws_bytes(d * sizeof(double), need); /* cannot overflow: ws_doubles bounds d */
  return nk__check_workspace(ctx, op, ws, bytes, *need);
}

nk_status nk_hcal_loss(nk_context *ctx, const nk_hcal_desc *desc, size_t n, size_t K,
                       const double *probs, const int64_t *labels, double *loss, double *dprobs,
                       void *workspace, size_t workspace_bytes) {
  static const char op[] = "hcal_loss";
  NK_REQUIRE_PTR(desc);
  NK_REQUIRE_PTR(loss);
  TRY(check_desc(ctx, op, desc));
  if (K == 0) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: K is 0", op);
  size_t need = 0;
  TRY(check_ws(ctx, op, n, K, 0, workspace, workspace_bytes, &need));
  if (n > 0) {
    NK_REQUIRE_PTR(probs);
    NK_REQUIRE_PTR(labels);
  }
  span s[5];
  TRY(nk__vector_span(ctx, op, &s[0], "probs", n ? probs : NULL, n * K, sizeof(double), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "labels", n ? labels : NULL, n, sizeof(int64_t), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "loss", loss, 1, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "dprobs", n ? dprobs : NULL, n * K, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "workspace", workspace, need, 1, 1));
  TRY(nk__check_overlaps(ctx, op, s, 5, nk__no_alias));
  TRY(check_labels(ctx, op, n, K, labels));
  for (size_t i = 0; i < n * K; i++)
    if (!(probs[i] >= 0.0 && probs[i] <= 1.0))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: probs[%zu] = %g is not in [0, 1]",
                      op, i, probs[i]);
  *loss = hcal_core(desc, n, K, probs, labels, dprobs, nk__ws_align(workspace));
  return nk__ok(ctx);
}

/* ---- the ensemble calibrator ---------------------------------------------------------------- */

static double sgn(double x) { return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : 0.0); }

/* zt = z - logsumexp(z) of one row. */
static void log_softmax_row(size_t K, const double *z, double *zt) {
  double m = z[0];
  for (size_t c = 1; c < K; c++) m = fmax(m, z[c]);
  double s = 0.0;
  for (size_t c = 0; c < K; c++) s += exp(z[c] - m);
  const double lse = m + log(s);
  for (size_t c = 0; c < K; c++) zt[c] = z[c] - lse;
}

/* s = softmax(a zt) (zt <= 0 with max 0 up to rounding: subtract the max anyway). */
static void softmax_scaled(size_t K, double a, const double *zt, double *s) {
  double m = a * zt[0];
  for (size_t c = 1; c < K; c++) m = fmax(m, a * zt[c]);
  double sum = 0.0;
  for (size_t c = 0; c < K; c++) sum += (s[c] = exp(a * zt[c] - m));
  for (size_t c = 0; c < K; c++) s[c] /= sum;
}

static void ensemble_probs(size_t n, size_t K, const double *z, size_t M, const double *theta,
                           const double *nu, double *P, double *zt, double *s) {
  double N = 0.0;
  for (size_t k = 0; k < M; k++) N += fabs(nu[k]);
  for (size_t r = 0; r < n; r++) {
    log_softmax_row(K, z + r * K, zt);
    double *p = P + r * K;
    for (size_t c = 0; c < K; c++) p[c] = 0.0;
    for (size_t k = 0; k < M; k++) {
      softmax_scaled(K, fabs(theta[k]), zt, s);
      const double wk = fabs(nu[k]) / N;
      for (size_t c = 0; c < K; c++) p[c] += wk * s[c];
    }
  }
}

static nk_status check_ensemble(nk_context *ctx, const char *op, size_t n, size_t K,
                                const double *logits, size_t M, const double *theta,
                                const double *nu) {
  if (K == 0 || M == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: K %zu and members %zu must be > 0",
                    op, K, M);
  NK_REQUIRE_PTR(theta);
  NK_REQUIRE_PTR(nu);
  double N = 0.0;
  for (size_t k = 0; k < M; k++) {
    if (!isfinite(theta[k]) || !isfinite(nu[k]))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: theta/nu[%zu] not finite", op, k);
    N += fabs(nu[k]);
  }
  if (!(N > 0.0) || !isfinite(N))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: sum |nu| = %g must be > 0", op, N);
  if (n > 0) NK_REQUIRE_PTR(logits);
  for (size_t i = 0; i < n * K; i++)
    if (!isfinite(logits[i]))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: logits[%zu] not finite", op, i);
  return NK_STATUS_OK;
}

nk_status nk_hcal_ensemble_probs(nk_context *ctx, size_t n, size_t K, const double *logits,
                                 size_t members, const double *theta, const double *nu,
                                 double *probs) {
  static const char op[] = "hcal_ensemble_probs";
  size_t nk;
  if (!nk__mul_size(n, K, &nk) || nk > SIZE_MAX / sizeof(double))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: n x K too large", op);
  TRY(check_ensemble(ctx, op, n, K, logits, members, theta, nu));
  if (n == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(probs);
  if (K > 4096)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: K %zu > 4096 (row scratch)", op, K);
  span s[4];
  TRY(nk__vector_span(ctx, op, &s[0], "logits", logits, nk, sizeof(double), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "theta", theta, members, sizeof(double), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "nu", nu, members, sizeof(double), 0));
  TRY(nk__vector_span(ctx, op, &s[3], "probs", probs, nk, sizeof(double), 1));
  TRY(nk__check_overlaps(ctx, op, s, 4, nk__no_alias));
  double zt[4096], sm[4096];
  ensemble_probs(n, K, logits, members, theta, nu, probs, zt, sm);
  return nk__ok(ctx);
}

nk_status nk_hcal_ensemble_init(nk_context *ctx, size_t members, double *theta, double *nu) {
  static const char op[] = "hcal_ensemble_init";
  if (members == 0) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: members is 0", op);
  NK_REQUIRE_PTR(theta);
  NK_REQUIRE_PTR(nu);
  const double M = (double)members;
  for (size_t k = 0; k < members; k++) theta[k] = nu[k] = ((double)k + 1.0) / (M * sqrt(M));
  return nk__ok(ctx);
}

/* Loss, gradients and probabilities of validated inputs; ws: nk_hcal_workspace_size doubles. */
static double ensemble_loss(const nk_hcal_desc *d, size_t n, size_t K, const double *z,
                            const int64_t *y, size_t M, const double *theta, const double *nu,
                            double *dtheta, double *dnu, double *ws) {
  double *P = ws, *G = P + n * K, *zt = G + n * K, *s = zt + K, *core = s + K;
  ensemble_probs(n, K, z, M, theta, nu, P, zt, s);
  const int grad = dtheta != NULL || dnu != NULL;
  const double loss = hcal_core(d, n, K, P, y, grad ? G : NULL, core);
  if (!grad) return loss;
  double N = 0.0;
  for (size_t k = 0; k < M; k++) N += fabs(nu[k]);
  for (size_t k = 0; k < M; k++) {
    double gt = 0.0, gn = 0.0;
    const double a = fabs(theta[k]);
    for (size_t r = 0; r < n; r++) {
      log_softmax_row(K, z + r * K, zt);
      softmax_scaled(K, a, zt, s);
      double mz = 0.0;
      for (size_t c = 0; c < K; c++) mz += s[c] * zt[c];
      const double *g = G + r * K, *p = P + r * K;
      for (size_t c = 0; c < K; c++) {
        gt += g[c] * s[c] * (zt[c] - mz);
        gn += g[c] * (s[c] - p[c]);
      }
    }
    if (dtheta) dtheta[k] = gt * (fabs(nu[k]) / N) * sgn(theta[k]);
    if (dnu) dnu[k] = gn * sgn(nu[k]) / N;
  }
  return loss;
}

nk_status nk_hcal_ensemble_loss(nk_context *ctx, const nk_hcal_desc *desc, size_t n, size_t K,
                                const double *logits, const int64_t *labels, size_t members,
                                const double *theta, const double *nu, double *loss,
                                double *dtheta, double *dnu, double *probs, void *workspace,
                                size_t workspace_bytes) {
  static const char op[] = "hcal_ensemble_loss";
  NK_REQUIRE_PTR(desc);
  NK_REQUIRE_PTR(loss);
  TRY(check_desc(ctx, op, desc));
  TRY(check_ensemble(ctx, op, n, K, logits, members, theta, nu));
  size_t need = 0;
  TRY(check_ws(ctx, op, n, K, members, workspace, workspace_bytes, &need));
  if (n > 0) NK_REQUIRE_PTR(labels);
  span s[9];
  TRY(nk__vector_span(ctx, op, &s[0], "logits", n ? logits : NULL, n * K, sizeof(double), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "labels", n ? labels : NULL, n, sizeof(int64_t), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "theta", theta, members, sizeof(double), 0));
  TRY(nk__vector_span(ctx, op, &s[3], "nu", nu, members, sizeof(double), 0));
  TRY(nk__vector_span(ctx, op, &s[4], "loss", loss, 1, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[5], "dtheta", dtheta, members, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[6], "dnu", dnu, members, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[7], "probs", n ? probs : NULL, n * K, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[8], "workspace", workspace, need, 1, 1));
  TRY(nk__check_overlaps(ctx, op, s, 9, nk__no_alias));
  TRY(check_labels(ctx, op, n, K, labels));
  double *ws = nk__ws_align(workspace);
  *loss = ensemble_loss(desc, n, K, logits, labels, members, theta, nu, dtheta, dnu, ws);
  if (probs && n) memcpy(probs, ws, n * K * sizeof(double));
  return nk__ok(ctx);
}

nk_status nk_hcal_ensemble_fit(nk_context *ctx, const nk_hcal_desc *desc,
                               const nk_hcal_fit_desc *fit, size_t n, size_t K,
                               const double *logits, const int64_t *labels, size_t members,
                               double *theta, double *nu, double *final_loss, void *workspace,
                               size_t workspace_bytes) {
  static const char op[] = "hcal_ensemble_fit";
  NK_REQUIRE_PTR(desc);
  NK_REQUIRE_PTR(fit);
  TRY(check_desc(ctx, op, desc));
  if (!(fit->lr >= 0.0) || !isfinite(fit->lr) || !(fit->beta1 >= 0.0 && fit->beta1 < 1.0) ||
      !(fit->beta2 >= 0.0 && fit->beta2 < 1.0) || !(fit->eps > 0.0) || !isfinite(fit->eps))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: bad Adam settings", op);
  TRY(check_ensemble(ctx, op, n, K, logits, members, theta, nu));
  size_t need = 0;
  TRY(check_ws(ctx, op, n, K, members, workspace, workspace_bytes, &need));
  if (n > 0) NK_REQUIRE_PTR(labels);
  span s[6];
  TRY(nk__vector_span(ctx, op, &s[0], "logits", n ? logits : NULL, n * K, sizeof(double), 0));
  TRY(nk__vector_span(ctx, op, &s[1], "labels", n ? labels : NULL, n, sizeof(int64_t), 0));
  TRY(nk__vector_span(ctx, op, &s[2], "theta", theta, members, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[3], "nu", nu, members, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[4], "final_loss", final_loss, 1, sizeof(double), 1));
  TRY(nk__vector_span(ctx, op, &s[5], "workspace", workspace, need, 1, 1));
  TRY(nk__check_overlaps(ctx, op, s, 6, nk__no_alias));
  TRY(check_labels(ctx, op, n, K, labels));
  const size_t M = members, nd = (need - NK_WORKSPACE_ALIGN) / sizeof(double); /* doubles */
  double *ws = nk__ws_align(workspace), *adam = ws + (nd - 8 * M);
  double *gth = adam, *gnu = adam + M, *mom = adam + 2 * M, *var = adam + 4 * M;
  double *bth = adam + 6 * M, *bnu = adam + 7 * M;
  double best_loss = INFINITY;
  memset(mom, 0, 4 * M * sizeof(double));
  for (size_t t = 1; t <= fit->epochs + 1; t++) {
    const double L = ensemble_loss(desc, n, K, logits, labels, M, theta, nu, gth, gnu, ws);
    if (L < best_loss || t == 1) {
      best_loss = L;
      memcpy(bth, theta, M * sizeof(double));
      memcpy(bnu, nu, M * sizeof(double));
    }
    if (t == fit->epochs + 1) break;
    const double bc1 = 1.0 - pow(fit->beta1, (double)t), bc2 = 1.0 - pow(fit->beta2, (double)t);
    for (size_t i = 0; i < 2 * M; i++) {
      double *p = i < M ? &theta[i] : &nu[i - M];
      const double g = i < M ? gth[i] : gnu[i - M];
      mom[i] = fit->beta1 * mom[i] + (1.0 - fit->beta1) * g;
      var[i] = fit->beta2 * var[i] + (1.0 - fit->beta2) * g * g;
      *p -= fit->lr / bc1 * mom[i] / (sqrt(var[i]) / sqrt(bc2) + fit->eps);
    }
    double N = 0.0;
    for (size_t k = 0; k < M; k++) N += fabs(nu[k]);
    if (!(N > 0.0)) break; /* every weight reached 0: keep the best so far */
  }
  memcpy(theta, bth, M * sizeof(double));
  memcpy(nu, bnu, M * sizeof(double));
  if (final_loss) *final_loss = best_loss;
  return nk__ok(ctx);
}
