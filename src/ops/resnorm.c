/*
 * resnorm.c — the research normalization layers: PowerNorm, Unified Normalization (token
 * rows, channel-last) and EvoNorm-B0/S0 (channel tensors, NCHW/NHWC). Validate, cut the work
 * into chunks that depend on the sizes only, run the resnorm kernels (src/kernels/resnorm/) and
 * the chnorm moments kernels over the pool, combine partial sums in chunk order, and keep the
 * per-channel statistics and the state in double. No intrinsics here.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "chnorm-ops.h"
#include "convert.h"
#include "internal.h"
#include "validate.h"

/* Chunks of a token reduction: at most this many, each of at least NK_RN_MIN_ROWS rows. */
#define NK_RN_CHUNKS 64
#define NK_RN_MIN_ROWS 16
/* Elements per task of the element-wise passes (load balance only). */
#define NK_RN_TASK_ELEMS 16384

static float pget(const void *p, size_t i, nk_dtype dt, float dflt) {
  if (p == NULL) return dflt;
  if (dt == NK_DTYPE_F32) return ((const float *)p)[i];
  const uint16_t h = ((const uint16_t *)p)[i];
  return dt == NK_DTYPE_BF16 ? nk__bf16_to_f32(h) : nk__f16_to_f32(h);
}

static void pput(void *p, size_t i, nk_dtype dt, double v, int accumulate) {
  if (p == NULL) return;
  if (accumulate) v += (double)pget(p, i, dt, 0.0f);
  if (dt == NK_DTYPE_F32) ((float *)p)[i] = (float)v;
  else if (dt == NK_DTYPE_BF16) ((uint16_t *)p)[i] = nk__f32_to_bf16((float)v);
  else ((uint16_t *)p)[i] = nk__f32_to_f16((float)v);
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/* Byte size of (a doubles + b floats) plus the alignment slack, overflow-checked; 0 on overflow.
 * The workspace may be at any address: its arrays of doubles and nk_moments start at
 * nk__ws_align(ws) (found by tests/fuzz/resnorm.c: a misaligned workspace gave misaligned
 * double accesses, undefined behaviour). */
static int ws_bytes(size_t a, size_t b, size_t *out) {
  size_t x, y;
  return nk__mul_size(a, sizeof(double), &x) && nk__mul_size(b, sizeof(float), &y) &&
         nk__add_size(x, y, out) && nk__ws_bytes(*out, out);
}

static int fwd_alias_ok(const span *out, const span *other) {
  return nk__span_is(out, "y") && nk__span_is(other, "x");
}
static int bwd_alias_ok(const span *out, const span *other) {
  return nk__span_is(out, "dx") && (nk__span_is(other, "dy") || nk__span_is(other, "x"));
}

/* ============================ token tensors (PowerNorm, UN) ============================== */

typedef struct tokd {
  size_t N, S, C, R, cg;
  nk_dtype dt, pdt;
  float gs_eps;
  ptrdiff_t xs[2], ys[2], dys[2], dxs[2], ms[2];
} tokd;

static size_t tok_chunk_rows(size_t R) {
  size_t r = ceil_div(R, NK_RN_CHUNKS);
  return r < NK_RN_MIN_ROWS ? NK_RN_MIN_ROWS : r;
}
static size_t tok_nchunks(size_t R) { return R ? ceil_div(R, tok_chunk_rows(R)) : 0; }

static const void *tok_row(const tokd *t, const void *p, const ptrdiff_t *st, size_t i) {
  const size_t n = i / t->S, s = i % t->S;
  return (const char *)p +
         ((ptrdiff_t)n * st[0] + (ptrdiff_t)s * st[1]) * (ptrdiff_t)nk_dtype_size(t->dt);
}
static int tok_valid(const tokd *t, const uint8_t *mask, size_t i) {
  if (mask == NULL) return 1;
  const size_t n = i / t->S, s = i % t->S;
  return mask[(ptrdiff_t)n * t->ms[0] + (ptrdiff_t)s * t->ms[1]] != 0;
}

static nk_status tok_tspan(nk_context *ctx, const char *op, span *s, const char *name,
                           const void *p, const ptrdiff_t *st, const tokd *t, int output) {
  return nk__tensor3_span(ctx, op, s, name, p, st[0], st[1], t->N, t->S, t->C, t->dt, output);
}

static nk_status tok_mask_span(nk_context *ctx, const char *op, span *s, const uint8_t *mask,
                               const tokd *t) {
  *s = (span){"mask", mask, 0, 1, 0, 0, 0};
  if (mask == NULL) return NK_STATUS_OK;
  if (t->ms[0] < 0 || t->ms[1] < 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: mask strides must be >= 0", op);
  size_t a, b, n;
  if (!nk__mul_size(t->N - 1, (size_t)t->ms[0], &a) ||
      !nk__mul_size(t->S - 1, (size_t)t->ms[1], &b) || !nk__add_size(a, b, &n) ||
      !nk__add_size(n, 1, &n) || n > (size_t)PTRDIFF_MAX)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: mask extent overflows", op);
  s->bytes = n;
  return NK_STATUS_OK;
}

/* Geometry checks shared by the token ops (sizes nonzero here). */
static nk_status tok_sizes(nk_context *ctx, const char *op, tokd *t) {
  if (!nk__mul_size(t->N, t->S, &t->R) || !nk__mul_size(t->R, t->C, &(size_t){0}))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: N*S*C overflows", op);
  return NK_STATUS_OK;
}

typedef struct tok_job {
  const nk_resnorm_kernels *k;
  const tokd *t;
  const void *x, *dy;
  void *y, *dx;
  const uint8_t *mask;
  double *part;   /* [chunk][C * nsum] */
  double *counts; /* [chunk] */
  size_t nsum, chunk_rows;
  const float *rf, *g, *b, *gain, *coef, *rb;
  const float *zero_coef; /* dx pass: coef of the tokens the mask marks as padding */
} tok_job;

static void tok_red_task(void *arg, size_t start, size_t count) {
  const tok_job *j = arg;
  const tokd *t = j->t;
  for (size_t ch = start; ch < start + count; ch++) {
    double *acc = j->part + ch * t->C * j->nsum;
    memset(acc, 0, t->C * j->nsum * sizeof(double));
    const size_t r0 = ch * j->chunk_rows;
    const size_t r1 = r0 + j->chunk_rows < t->R ? r0 + j->chunk_rows : t->R;
    double cnt = 0.0;
    for (size_t i = r0; i < r1; i++) {
      if (j->nsum == 1) {
        if (!tok_valid(t, j->mask, i)) continue;
        cnt += 1.0;
        j->k->tok_stats(t->C, t->cg, t->gs_eps, tok_row(t, j->x, t->xs, i), t->dt, acc);
      } else {
        j->k->tok_gradsum(t->C, t->cg, t->gs_eps, tok_row(t, j->x, t->xs, i),
                          tok_row(t, j->dy, t->dys, i), t->dt, j->rf, acc);
      }
    }
    if (j->counts) j->counts[ch] = cnt;
  }
}

/* Chunked reduction; out[C * nsum] = sums over chunks in chunk order; returns the count. */
static double tok_reduce(nk_context *ctx, tok_job *j, double *out) {
  const tokd *t = j->t;
  const size_t nch = tok_nchunks(t->R);
  j->chunk_rows = tok_chunk_rows(t->R);
  nk_parallelize_1d(nk__context_pool(ctx), tok_red_task, j, nch, 1);
  const size_t w = t->C * j->nsum;
  for (size_t i = 0; i < w; i++) {
    double a = 0.0;
    for (size_t ch = 0; ch < nch; ch++) a += j->part[ch * w + i];
    out[i] = a;
  }
  double cnt = 0.0;
  if (j->counts)
    for (size_t ch = 0; ch < nch; ch++) cnt += j->counts[ch];
  return cnt;
}

static void tok_norm_task(void *arg, size_t start, size_t count) {
  const tok_job *j = arg;
  const tokd *t = j->t;
  for (size_t i = start; i < start + count; i++)
    j->k->tok_norm(t->C, t->cg, t->gs_eps, tok_row(t, j->x, t->xs, i),
                   (void *)tok_row(t, j->y, t->ys, i), t->dt, j->rf, j->g, j->b);
}

static void tok_dx_task(void *arg, size_t start, size_t count) {
  const tok_job *j = arg;
  const tokd *t = j->t;
  for (size_t i = start; i < start + count; i++)
    j->k->tok_dx(t->C, t->cg, t->gs_eps, tok_row(t, j->x, t->xs, i),
                 tok_row(t, j->dy, t->dys, i), (void *)tok_row(t, j->dx, t->dxs, i), t->dt,
                 j->rf, j->gain, tok_valid(t, j->mask, i) ? j->coef : j->zero_coef, j->rb);
}

static size_t tok_tile(const tokd *t) { return max_sz(1, NK_RN_TASK_ELEMS / t->C); }

/* Workspace of the token ops: forward partials (C + 1 per chunk) or backward (3C per chunk),
 * C * 3 totals, 7 f32 parameter arrays. */
static int tok_ws(size_t N, size_t S, size_t C, size_t *bytes) {
  size_t R, nd, a, f;
  if (!nk__mul_size(N, S, &R)) return 0;
  const size_t nch = tok_nchunks(R);
  if (!nk__mul_size(nch, 3 * C + 1, &nd) || !nk__mul_size(C, 3, &a) || !nk__add_size(nd, a, &nd) ||
      !nk__mul_size(C, 7, &f))
    return 0;
  return ws_bytes(nd, f, bytes);
}

typedef struct tok_ws_layout {
  double *part, *counts, *tot;
  float *rf, *g, *b, *gain, *coef, *rb, *zero;
} tok_ws_layout;

static tok_ws_layout tok_ws_split(const tokd *t, void *ws) {
  tok_ws_layout l;
  const size_t nch = tok_nchunks(t->R), C = t->C;
  l.part = nk__ws_align(ws);
  l.counts = l.part + nch * 3 * C;
  l.tot = l.counts + nch;
  l.rf = (float *)(l.tot + 3 * C);
  l.g = l.rf + C;
  l.b = l.g + C;
  l.gain = l.b + C;
  l.coef = l.gain + C;
  l.rb = l.coef + C;
  l.zero = l.rb + C;
  return l;
}

static nk_status tok_common(nk_context *ctx, const char *op, const tokd *t, uint32_t flags,
                            uint32_t known, float eps) {
  TRY(nk__check_dtypes(ctx, op, t->dt, t->pdt));
  if (!(eps > 0.0f) || !isfinite(eps))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: eps %g must be finite and > 0", op,
                    (double)eps);
  if (flags & ~known)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown flags 0x%x", op,
                    (unsigned)(flags & ~known));
  return NK_STATUS_OK;
}

static int alpha_ok(float a) { return a >= 0.0f && a <= 1.0f; }

/* Spans of a token forward: x, y, mask, gamma, beta, save + extra state vectors. */
static nk_status tok_fwd_spans(nk_context *ctx, const char *op, const tokd *t, const void *x,
                               const uint8_t *mask, const void *gamma, const void *beta,
                               void *y, float *save, span *s) {
  const size_t pe = nk_dtype_size(t->pdt);
  TRY(tok_tspan(ctx, op, &s[0], "x", x, t->xs, t, 0));
  TRY(tok_tspan(ctx, op, &s[1], "y", y, t->ys, t, 1));
  TRY(tok_mask_span(ctx, op, &s[2], mask, t));
  TRY(nk__vector_span(ctx, op, &s[3], "gamma", gamma, t->C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[4], "beta", beta, t->C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[5], "save", save, 2 * t->C, sizeof(float), 1));
  return NK_STATUS_OK;
}

static nk_status tok_bwd_spans(nk_context *ctx, const char *op, const tokd *t, const void *x,
                               const void *gamma, const float *save, const void *dy, void *dx,
                               void *dgamma, void *dbeta, span *s) {
  const size_t pe = nk_dtype_size(t->pdt);
  TRY(tok_tspan(ctx, op, &s[0], "x", x, t->xs, t, 0));
  TRY(tok_tspan(ctx, op, &s[1], "dy", dy, t->dys, t, 0));
  TRY(tok_tspan(ctx, op, &s[2], "dx", dx, t->dxs, t, 1));
  TRY(nk__vector_span(ctx, op, &s[3], "gamma", gamma, t->C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[4], "save", save, 2 * t->C, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[5], "dgamma", dgamma, t->C, pe, 1));
  TRY(nk__vector_span(ctx, op, &s[6], "dbeta", dbeta, t->C, pe, 1));
  return NK_STATUS_OK;
}

/* Number of valid tokens (mask), for the "no valid token" check. */
static size_t tok_count_valid(const tokd *t, const uint8_t *mask) {
  if (mask == NULL) return t->R;
  size_t n = 0;
  for (size_t i = 0; i < t->R; i++) n += tok_valid(t, mask, i);
  return n;
}

static void tok_params(const tokd *t, const void *gamma, const void *beta, tok_ws_layout *l) {
  for (size_t c = 0; c < t->C; c++) {
    l->g[c] = pget(gamma, c, t->pdt, 1.0f);
    l->b[c] = pget(beta, c, t->pdt, 0.0f);
  }
}

/* ---- PowerNorm ------------------------------------------------------------------------------ */

static const uint32_t pn_known = NK_RESNORM_TRAINING | NK_RESNORM_ACCUMULATE;

nk_powernorm_desc nk_powernorm_desc_dense(size_t batch, size_t spatial, size_t channels,
                                          nk_dtype dtype) {
  nk_powernorm_desc d;
  memset(&d, 0, sizeof d);
  d.batch = batch;
  d.spatial = spatial;
  d.channels = channels;
  d.mode = NK_POWERNORM_CODE;
  d.dtype = dtype;
  d.param_dtype = NK_DTYPE_F32;
  d.eps = 1e-5f;
  d.gs_eps = 1e-5f;
  d.alpha_fwd = d.alpha_bwd = 0.9f;
  const ptrdiff_t ns = (ptrdiff_t)(spatial * channels), rs = (ptrdiff_t)channels;
  d.x_n_stride = d.y_n_stride = d.dy_n_stride = d.dx_n_stride = ns;
  d.x_row_stride = d.y_row_stride = d.dy_row_stride = d.dx_row_stride = rs;
  d.mask_n_stride = (ptrdiff_t)spatial;
  d.mask_s_stride = 1;
  return d;
}

nk_status nk_powernorm_state_init(size_t channels, nk_powernorm_state *st) {
  if (st == NULL || (channels && (st->phi == NULL || st->nu == NULL)))
    return NK_STATUS_INVALID_ARGUMENT;
  for (size_t c = 0; c < channels; c++) {
    st->phi[c] = 1.0f;
    st->nu[c] = 0.0f;
  }
  st->step = 0;
  return NK_STATUS_OK;
}

static tokd pn_tokd(const nk_powernorm_desc *d) {
  tokd t;
  memset(&t, 0, sizeof t);
  t.N = d->batch, t.S = d->spatial, t.C = d->channels;
  t.cg = d->groups ? d->channels / d->groups : 0;
  t.dt = d->dtype, t.pdt = d->param_dtype;
  t.gs_eps = d->gs_eps;
  t.xs[0] = d->x_n_stride, t.xs[1] = d->x_row_stride;
  t.ys[0] = d->y_n_stride, t.ys[1] = d->y_row_stride;
  t.dys[0] = d->dy_n_stride, t.dys[1] = d->dy_row_stride;
  t.dxs[0] = d->dx_n_stride, t.dxs[1] = d->dx_row_stride;
  t.ms[0] = d->mask_n_stride, t.ms[1] = d->mask_s_stride;
  return t;
}

static nk_status pn_check(nk_context *ctx, const char *op, const nk_powernorm_desc *d, tokd *t) {
  if (d == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  *t = pn_tokd(d);
  TRY(tok_common(ctx, op, t, d->flags, pn_known, d->eps));
  if (d->mode != NK_POWERNORM_CODE && d->mode != NK_POWERNORM_PAPER &&
      d->mode != NK_POWERNORM_PNV)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown mode %d", op, (int)d->mode);
  if (!alpha_ok(d->alpha_fwd) || !alpha_ok(d->alpha_bwd))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: alpha_fwd %g, alpha_bwd %g not in [0, 1]",
                    op, (double)d->alpha_fwd, (double)d->alpha_bwd);
  if (d->warmup < 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: warmup %lld < 0", op,
                    (long long)d->warmup);
  if (d->groups) {
    if (d->channels % d->groups)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: groups %zu does not divide C %zu", op,
                      d->groups, d->channels);
    if (!(d->gs_eps > 0.0f) || !isfinite(d->gs_eps))
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: gs_eps %g must be finite and > 0", op,
                      (double)d->gs_eps);
  }
  if (d->batch && d->spatial && d->channels) TRY(tok_sizes(ctx, op, t));
  return NK_STATUS_OK;
}

nk_status nk_powernorm_fwd_workspace_size(const nk_powernorm_desc *d, size_t *bytes) {
  if (d == NULL || bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;
  return tok_ws(d->batch, d->spatial, d->channels, bytes) ? NK_STATUS_OK
                                                          : NK_STATUS_INVALID_ARGUMENT;
}
nk_status nk_powernorm_bwd_workspace_size(const nk_powernorm_desc *d, size_t *bytes) {
  return nk_powernorm_fwd_workspace_size(d, bytes);
}

nk_status nk_powernorm_fwd(nk_context *ctx, const nk_powernorm_desc *d, const void *x,
                           const uint8_t *mask, const void *gamma, const void *beta,
                           nk_powernorm_state *state, void *y, float *save, void *workspace,
                           size_t workspace_size) {
  const char *op = "powernorm_fwd";
  tokd t;
  TRY(pn_check(ctx, op, d, &t));
  if (t.N == 0 || t.S == 0 || t.C == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(x);
  NK_REQUIRE_PTR(y);
  NK_REQUIRE_PTR(state);
  NK_REQUIRE_PTR(state->phi);
  const int training = (d->flags & NK_RESNORM_TRAINING) != 0;
  span s[7];
  TRY(tok_fwd_spans(ctx, op, &t, x, mask, gamma, beta, y, save, s));
  TRY(nk__vector_span(ctx, op, &s[6], "state->phi", state->phi, t.C, sizeof(float), training));
  TRY(nk__check_overlaps(ctx, op, s, 7, fwd_alias_ok));
  size_t need;
  if (!tok_ws(t.N, t.S, t.C, &need))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need));
  if (training && state->step == INT64_MAX)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: step counter overflows", op);
  if (training && tok_count_valid(&t, mask) == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: the mask leaves no valid token", op);

  tok_ws_layout l = tok_ws_split(&t, workspace);
  tok_job j;
  memset(&j, 0, sizeof j);
  j.k = nk__resnorm_kernels(ctx);
  j.t = &t;
  j.x = x;
  j.y = y;
  j.mask = mask;
  j.part = l.part;
  j.counts = l.counts;
  j.nsum = 1;
  tok_params(&t, gamma, beta, &l);
  const size_t C = t.C;
  if (training) {
    const double cnt = tok_reduce(ctx, &j, l.tot);
    const int64_t step = state->step + 1;
    /* CODE: warm-up averaging and the batch statistic while t <= warmup; PAPER: phi; PN-V:
     * the batch statistic always, phi kept for inference only. */
    const int code = d->mode == NK_POWERNORM_CODE;
    const int batch_stat = d->mode == NK_POWERNORM_PNV || (code && step <= d->warmup);
    const double af = d->alpha_fwd, eps = d->eps;
    for (size_t c = 0; c < C; c++) {
      const double psi2 = l.tot[c] / cnt;
      const double phi = state->phi[c];
      l.rf[c] = (float)(1.0 / sqrt((batch_stat ? psi2 : phi) + eps));
      l.rb[c] = (float)(1.0 / sqrt(psi2 + eps));
      double p = phi;
      if (code && step < d->warmup)
        p = p * ((double)(step - 1) / (double)step) + psi2 / (double)step;
      l.tot[c] = af * p + (1.0 - af) * psi2; /* the new phi, stored after the pass */
    }
    j.rf = l.rf, j.g = l.g, j.b = l.b;
    nk_parallelize_1d(nk__context_pool(ctx), tok_norm_task, &j, t.R, tok_tile(&t));
    for (size_t c = 0; c < C; c++) state->phi[c] = (float)l.tot[c];
    state->step = step;
  } else {
    for (size_t c = 0; c < C; c++)
      l.rf[c] = l.rb[c] = (float)(1.0 / sqrt((double)state->phi[c] + (double)d->eps));
    j.rf = l.rf, j.g = l.g, j.b = l.b;
    nk_parallelize_1d(nk__context_pool(ctx), tok_norm_task, &j, t.R, tok_tile(&t));
  }
  if (save) {
    memcpy(save, l.rf, C * sizeof(float));
    memcpy(save + C, l.rb, C * sizeof(float));
  }
  return nk__ok(ctx);
}

nk_status nk_powernorm_bwd(nk_context *ctx, const nk_powernorm_desc *d, const void *x,
                           const uint8_t *mask, const void *gamma, const float *save,
                           nk_powernorm_state *state,
                           const void *dy, void *dx, void *dgamma, void *dbeta, void *workspace,
                           size_t workspace_size) {
  const char *op = "powernorm_bwd";
  tokd t;
  TRY(pn_check(ctx, op, d, &t));
  if (t.N == 0 || t.S == 0 || t.C == 0) return nk__ok(ctx);
  const int training = (d->flags & NK_RESNORM_TRAINING) != 0;
  const int acc = (d->flags & NK_RESNORM_ACCUMULATE) != 0;
  const int exact = training && d->mode == NK_POWERNORM_PNV; /* PN-V: exact, mask, no nu */
  const int uses_nu = training && !exact;
  NK_REQUIRE_PTR(x);
  NK_REQUIRE_PTR(save);
  NK_REQUIRE_PTR(dy);
  NK_REQUIRE_PTR(dx);
  if (uses_nu) {
    NK_REQUIRE_PTR(state);
    NK_REQUIRE_PTR(state->nu);
  }
  if (!exact) mask = NULL; /* not read: the approximate backward averages over all tokens */
  span s[9];
  TRY(tok_bwd_spans(ctx, op, &t, x, gamma, save, dy, dx, dgamma, dbeta, s));
  TRY(nk__vector_span(ctx, op, &s[7], "state->nu", uses_nu ? state->nu : NULL, t.C,
                      sizeof(float), 1));
  TRY(tok_mask_span(ctx, op, &s[8], mask, &t));
  TRY(nk__check_overlaps(ctx, op, s, 9, bwd_alias_ok));
  size_t need;
  if (!tok_ws(t.N, t.S, t.C, &need))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need));
  const size_t nvalid = exact ? tok_count_valid(&t, mask) : t.R;
  if (nvalid == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: the mask leaves no valid token", op);

  tok_ws_layout l = tok_ws_split(&t, workspace);
  tok_job j;
  memset(&j, 0, sizeof j);
  j.k = nk__resnorm_kernels(ctx);
  j.t = &t;
  j.x = x;
  j.dy = dy;
  j.dx = dx;
  j.mask = mask; /* tok_dx_task: padding tokens take zero_coef (PN-V) */
  j.part = l.part;
  j.nsum = 3;
  const size_t C = t.C;
  memcpy(l.rf, save, C * sizeof(float));
  tok_params(&t, gamma, NULL, &l);
  j.rf = l.rf;
  tok_reduce(ctx, &j, l.tot);
  const double R = (double)t.R, ab = d->alpha_bwd;
  for (size_t c = 0; c < C; c++) {
    l.gain[c] = l.g[c];
    l.zero[c] = 0.0f;
    if (exact) { /* k = gamma sum_A(dy z) / |V|, the batch scale */
      l.coef[c] = (float)((double)l.g[c] * l.tot[c] / (double)nvalid);
      l.rb[c] = save[C + c];
    } else if (training) {
      const double nu = state->nu[c];
      l.coef[c] = state->nu[c];
      l.rb[c] = d->mode == NK_POWERNORM_PAPER ? save[c] : save[C + c];
      const double mean = ((double)l.g[c] * l.tot[c] - nu * l.tot[C + c]) / R;
      l.b[c] = (float)(nu + (1.0 - ab) * mean); /* the new nu, stored after the pass */
    } else {
      l.coef[c] = 0.0f;
      l.rb[c] = save[c];
    }
  }
  j.gain = l.gain, j.coef = l.coef, j.zero_coef = l.zero, j.rb = l.rb;
  nk_parallelize_1d(nk__context_pool(ctx), tok_dx_task, &j, t.R, tok_tile(&t));
  if (uses_nu) memcpy(state->nu, l.b, C * sizeof(float));
  for (size_t c = 0; c < C; c++) {
    pput(dgamma, c, t.pdt, l.tot[c], acc);
    pput(dbeta, c, t.pdt, l.tot[2 * C + c], acc);
  }
  return nk__ok(ctx);
}

/* ---- Unified Normalization ----------------------------------------------------------------- */

static const uint32_t un_known = NK_RESNORM_TRAINING | NK_RESNORM_ACCUMULATE |
                                 NK_UNIFIEDNORM_FILTER | NK_UNIFIEDNORM_FILTER_PER_CHANNEL;

nk_unifiednorm_desc nk_unifiednorm_desc_dense(size_t batch, size_t spatial, size_t channels,
                                              nk_dtype dtype) {
  nk_unifiednorm_desc d;
  memset(&d, 0, sizeof d);
  d.batch = batch;
  d.spatial = spatial;
  d.channels = channels;
  d.window_fwd = d.window_bwd = 4;
  d.dtype = dtype;
  d.param_dtype = NK_DTYPE_F32;
  d.eps = 1e-5f;
  d.alpha = 0.9f;
  d.rho_min = 0.2f;
  d.rho_max = 5.0f;
  d.warmup = 4000;
  d.rho_warmup = 1000;
  const ptrdiff_t ns = (ptrdiff_t)(spatial * channels), rs = (ptrdiff_t)channels;
  d.x_n_stride = d.y_n_stride = d.dy_n_stride = d.dx_n_stride = ns;
  d.x_row_stride = d.y_row_stride = d.dy_row_stride = d.dx_row_stride = rs;
  d.mask_n_stride = (ptrdiff_t)spatial;
  d.mask_s_stride = 1;
  return d;
}

static tokd un_tokd(const nk_unifiednorm_desc *d) {
  tokd t;
  memset(&t, 0, sizeof t);
  t.N = d->batch, t.S = d->spatial, t.C = d->channels;
  t.dt = d->dtype, t.pdt = d->param_dtype;
  t.xs[0] = d->x_n_stride, t.xs[1] = d->x_row_stride;
  t.ys[0] = d->y_n_stride, t.ys[1] = d->y_row_stride;
  t.dys[0] = d->dy_n_stride, t.dys[1] = d->dy_row_stride;
  t.dxs[0] = d->dx_n_stride, t.dxs[1] = d->dx_row_stride;
  t.ms[0] = d->mask_n_stride, t.ms[1] = d->mask_s_stride;
  return t;
}

static nk_status un_check(nk_context *ctx, const char *op, const nk_unifiednorm_desc *d,
                          tokd *t) {
  if (d == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  *t = un_tokd(d);
  TRY(tok_common(ctx, op, t, d->flags, un_known, d->eps));
  if (!alpha_ok(d->alpha))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: alpha %g not in [0, 1]", op,
                    (double)d->alpha);
  if (d->window_fwd == 0 || d->window_bwd == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: windows must be >= 1", op);
  if (!(d->rho_min > 0.0f && d->rho_min <= 1.0f && d->rho_max >= 1.0f && isfinite(d->rho_max)))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: need 0 < rho_min <= 1 <= rho_max (finite), got %g, %g", op,
                    (double)d->rho_min, (double)d->rho_max);
  if (d->warmup < 0 || d->rho_warmup < 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: negative warmup", op);
  size_t a;
  if (!nk__mul_size(d->window_fwd, d->channels, &a) ||
      !nk__mul_size(d->window_bwd, d->channels, &a))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: window size overflows", op);
  if (d->batch && d->spatial && d->channels) TRY(tok_sizes(ctx, op, t));
  return NK_STATUS_OK;
}

nk_status nk_unifiednorm_state_init(const nk_unifiednorm_desc *d, nk_unifiednorm_state *st) {
  if (d == NULL || st == NULL) return NK_STATUS_INVALID_ARGUMENT;
  const size_t C = d->channels;
  size_t mf, mb;
  if (!nk__mul_size(d->window_fwd, C, &mf) || !nk__mul_size(d->window_bwd, C, &mb))
    return NK_STATUS_INVALID_ARGUMENT;
  if (C && (st->phi == NULL || st->psi == NULL || (mf && st->fwin == NULL) ||
            (mb && st->bwin == NULL)))
    return NK_STATUS_INVALID_ARGUMENT;
  for (size_t c = 0; c < C; c++) {
    st->phi[c] = 1.0f;
    st->psi[c] = 0.0f;
  }
  for (size_t i = 0; i < mf; i++) st->fwin[i] = 0.0f;
  for (size_t i = 0; i < mb; i++) st->bwin[i] = 0.0f;
  st->step = st->skips = 0;
  st->skip = 0;
  return NK_STATUS_OK;
}

nk_status nk_unifiednorm_fwd_workspace_size(const nk_unifiednorm_desc *d, size_t *bytes) {
  if (d == NULL || bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;
  return tok_ws(d->batch, d->spatial, d->channels, bytes) ? NK_STATUS_OK
                                                          : NK_STATUS_INVALID_ARGUMENT;
}
nk_status nk_unifiednorm_bwd_workspace_size(const nk_unifiednorm_desc *d, size_t *bytes) {
  return nk_unifiednorm_fwd_workspace_size(d, bytes);
}

/* The window logic of a training forward (spec 5.1 steps 2-6, 8), in double on C-sized arrays.
 * s2: the batch quadratic means (in: tot[0..C)); writes rf (r) and rho (in rb) and updates the
 * state. */
static void un_window(const nk_unifiednorm_desc *d, nk_unifiednorm_state *st, const double *s2,
                      float *r, float *rho) {
  const size_t C = d->channels, M = d->window_fwd;
  const int64_t t = st->step + 1;
  const size_t slot = (size_t)(t % (int64_t)M);
  const int filter = (d->flags & NK_UNIFIEDNORM_FILTER) != 0;
  const int per_ch = (d->flags & NK_UNIFIEDNORM_FILTER_PER_CHANNEL) != 0;
  /* Vrec (scalar, code): unbiased variance of sqrt(F) over M*C entries, before the update. */
  double vrec = 0.0;
  if (filter && !per_ch && M * C > 1) {
    double mean = 0.0, m2 = 0.0;
    for (size_t i = 0; i < M * C; i++) mean += sqrt((double)st->fwin[i]);
    mean /= (double)(M * C);
    for (size_t i = 0; i < M * C; i++) {
      const double e = sqrt((double)st->fwin[i]) - mean;
      m2 += e * e;
    }
    vrec = m2 / (double)(M * C - 1);
  }
  /* Per-channel V (paper), before the update, kept in rho[] temporarily. */
  if (filter && per_ch)
    for (size_t c = 0; c < C; c++) {
      double v = 0.0;
      if (M > 1) {
        double mean = 0.0, m2 = 0.0;
        for (size_t k = 0; k < M; k++) mean += sqrt((double)st->fwin[k * C + c]);
        mean /= (double)M;
        for (size_t k = 0; k < M; k++) {
          const double e = sqrt((double)st->fwin[k * C + c]) - mean;
          m2 += e * e;
        }
        v = m2 / (double)(M - 1);
      }
      rho[c] = (float)v;
    }
  for (size_t c = 0; c < C; c++) st->fwin[slot * C + c] = (float)s2[c];
  int skip = 0;
  if (filter && t >= d->warmup) {
    if (M == 1) {
      skip = 1;
    } else {
      for (size_t c = 0; c < C && !skip; c++) {
        double am = 0.0, lg = 0.0;
        int zero = 0;
        for (size_t k = 0; k < M; k++) {
          const double f = st->fwin[k * C + c];
          am += f;
          if (f == 0.0) zero = 1;
          else lg += log(f);
        }
        am /= (double)M;
        const double gm = zero ? 0.0 : exp(lg / (double)M);
        const double thr = (double)M * (per_ch ? (double)rho[c] : vrec);
        if (am - gm > thr) skip = 1;
      }
    }
    if (skip) {
      for (size_t c = 0; c < C; c++) st->fwin[slot * C + c] = st->phi[c];
      st->skips += 1;
    }
  }
  const int batch_stat = t <= (int64_t)M || t < d->warmup || skip;
  const int64_t rw = d->rho_warmup > d->warmup ? d->rho_warmup : d->warmup;
  for (size_t c = 0; c < C; c++) {
    double sh2 = s2[c];
    if (!batch_stat) {
      int zero = 0;
      double lg = 0.0;
      for (size_t k = 0; k < M; k++) {
        const double f = st->fwin[k * C + c];
        if (f == 0.0) zero = 1;
        else lg += log(f);
      }
      sh2 = zero ? 0.0 : exp(lg / (double)M);
    }
    const double phi = st->phi[c], eps = d->eps;
    double rh = 1.0;
    if (!(t <= rw || skip)) {
      rh = sqrt(sh2 + eps) / sqrt(phi + eps);
      rh = rh < d->rho_min ? d->rho_min : rh > d->rho_max ? d->rho_max : rh;
    }
    r[c] = (float)(1.0 / sqrt(sh2 + eps));
    rho[c] = (float)rh;
    st->phi[c] = (float)(d->alpha * phi + (1.0 - (double)d->alpha) * sh2);
  }
  st->step = t;
  st->skip = skip;
}

nk_status nk_unifiednorm_fwd(nk_context *ctx, const nk_unifiednorm_desc *d, const void *x,
                             const uint8_t *mask, const void *gamma, const void *beta,
                             nk_unifiednorm_state *state, void *y, float *save, void *workspace,
                             size_t workspace_size) {
  const char *op = "unifiednorm_fwd";
  tokd t;
  TRY(un_check(ctx, op, d, &t));
  if (t.N == 0 || t.S == 0 || t.C == 0) return nk__ok(ctx);
  NK_REQUIRE_PTR(x);
  NK_REQUIRE_PTR(y);
  NK_REQUIRE_PTR(state);
  NK_REQUIRE_PTR(state->phi);
  const int training = (d->flags & NK_RESNORM_TRAINING) != 0;
  if (training) NK_REQUIRE_PTR(state->fwin);
  span s[8];
  TRY(tok_fwd_spans(ctx, op, &t, x, mask, gamma, beta, y, save, s));
  TRY(nk__vector_span(ctx, op, &s[6], "state->phi", state->phi, t.C, sizeof(float), training));
  TRY(nk__vector_span(ctx, op, &s[7], "state->fwin", training ? state->fwin : NULL,
                      d->window_fwd * t.C, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 8, fwd_alias_ok));
  size_t need;
  if (!tok_ws(t.N, t.S, t.C, &need))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need));
  if (training && state->step == INT64_MAX)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: step counter overflows", op);
  if (training && tok_count_valid(&t, mask) == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: the mask leaves no valid token", op);

  tok_ws_layout l = tok_ws_split(&t, workspace);
  tok_job j;
  memset(&j, 0, sizeof j);
  j.k = nk__resnorm_kernels(ctx);
  j.t = &t;
  j.x = x;
  j.y = y;
  j.mask = mask;
  j.part = l.part;
  j.counts = l.counts;
  j.nsum = 1;
  tok_params(&t, gamma, beta, &l);
  const size_t C = t.C;
  if (training) {
    const double cnt = tok_reduce(ctx, &j, l.tot);
    for (size_t c = 0; c < C; c++) l.tot[c] /= cnt;
    un_window(d, state, l.tot, l.rf, l.rb);
  } else {
    for (size_t c = 0; c < C; c++) {
      l.rf[c] = (float)(1.0 / sqrt((double)state->phi[c] + (double)d->eps));
      l.rb[c] = 1.0f;
    }
  }
  j.rf = l.rf, j.g = l.g, j.b = l.b;
  nk_parallelize_1d(nk__context_pool(ctx), tok_norm_task, &j, t.R, tok_tile(&t));
  if (save) {
    memcpy(save, l.rf, C * sizeof(float));
    memcpy(save + C, l.rb, C * sizeof(float));
  }
  return nk__ok(ctx);
}

nk_status nk_unifiednorm_bwd(nk_context *ctx, const nk_unifiednorm_desc *d, const void *x,
                             const void *gamma, const float *save, nk_unifiednorm_state *state,
                             const void *dy, void *dx, void *dgamma, void *dbeta, void *workspace,
                             size_t workspace_size) {
  const char *op = "unifiednorm_bwd";
  tokd t;
  TRY(un_check(ctx, op, d, &t));
  if (t.N == 0 || t.S == 0 || t.C == 0) return nk__ok(ctx);
  const int training = (d->flags & NK_RESNORM_TRAINING) != 0;
  const int acc = (d->flags & NK_RESNORM_ACCUMULATE) != 0;
  NK_REQUIRE_PTR(x);
  NK_REQUIRE_PTR(save);
  NK_REQUIRE_PTR(dy);
  NK_REQUIRE_PTR(dx);
  if (training) {
    NK_REQUIRE_PTR(state);
    NK_REQUIRE_PTR(state->psi);
    NK_REQUIRE_PTR(state->bwin);
    if (state->step < 1)
      return nk__fail(ctx, NK_STATUS_MISUSE, "%s: no training forward before this backward", op);
  }
  span s[9];
  TRY(tok_bwd_spans(ctx, op, &t, x, gamma, save, dy, dx, dgamma, dbeta, s));
  TRY(nk__vector_span(ctx, op, &s[7], "state->psi", training ? state->psi : NULL, t.C,
                      sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[8], "state->bwin", training ? state->bwin : NULL,
                      d->window_bwd * t.C, sizeof(float), 1));
  TRY(nk__check_overlaps(ctx, op, s, 9, bwd_alias_ok));
  size_t need;
  if (!tok_ws(t.N, t.S, t.C, &need))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need));

  tok_ws_layout l = tok_ws_split(&t, workspace);
  tok_job j;
  memset(&j, 0, sizeof j);
  j.k = nk__resnorm_kernels(ctx);
  j.t = &t;
  j.x = x;
  j.dy = dy;
  j.dx = dx;
  j.part = l.part;
  j.nsum = 3;
  const size_t C = t.C;
  memcpy(l.rf, save, C * sizeof(float));
  tok_params(&t, gamma, NULL, &l);
  j.rf = l.rf;
  tok_reduce(ctx, &j, l.tot);
  const double R = (double)t.R, al = d->alpha;
  if (training) {
    const size_t Mb = d->window_bwd;
    const int64_t step = state->step;
    const size_t slot = (size_t)(step % (int64_t)Mb);
    const int skip = state->skip != 0;
    const int cur = step <= (int64_t)Mb || step < d->warmup || skip;
    for (size_t c = 0; c < C; c++) {
      const double rho = save[C + c];
      const double gz = rho * (double)l.g[c] * l.tot[c] / R;
      state->bwin[slot * C + c] = skip ? state->psi[c] : (float)gz;
      double m = gz;
      if (!cur) {
        m = 0.0;
        for (size_t k = 0; k < Mb; k++) m += state->bwin[k * C + c];
        m /= (double)Mb;
      }
      const float psi = (float)(al * state->psi[c] + (1.0 - al) * m);
      state->psi[c] = psi;
      l.coef[c] = skip ? (float)m : psi;
      l.gain[c] = save[C + c] * l.g[c];
      l.rb[c] = save[c];
      l.tot[c] *= rho; /* dgamma = rho * sum dy z */
    }
  } else {
    for (size_t c = 0; c < C; c++) {
      l.coef[c] = 0.0f;
      l.gain[c] = l.g[c];
      l.rb[c] = save[c];
    }
  }
  j.gain = l.gain, j.coef = l.coef, j.rb = l.rb;
  nk_parallelize_1d(nk__context_pool(ctx), tok_dx_task, &j, t.R, tok_tile(&t));
  for (size_t c = 0; c < C; c++) {
    pput(dgamma, c, t.pdt, l.tot[c], acc);
    pput(dbeta, c, t.pdt, l.tot[2 * C + c], acc);
  }
  return nk__ok(ctx);
}

nk_status nk_unifiednorm_fold(size_t channels, float eps, const float *phi, const float *gamma,
                              const float *beta, float *scale, float *shift) {
  if (!(eps > 0.0f) || !isfinite(eps)) return NK_STATUS_INVALID_ARGUMENT;
  if (channels && (phi == NULL || scale == NULL || shift == NULL))
    return NK_STATUS_INVALID_ARGUMENT;
  for (size_t c = 0; c < channels; c++) {
    const double g = gamma ? gamma[c] : 1.0, b = beta ? beta[c] : 0.0;
    scale[c] = (float)(g / sqrt((double)phi[c] + (double)eps));
    shift[c] = (float)b;
  }
  return NK_STATUS_OK;
}

/* ================================ EvoNorm-B0 and EvoNorm-S0 ================================ */

static const uint32_t evo_known =
    NK_RESNORM_TRAINING | NK_RESNORM_ACCUMULATE | NK_EVONORM_AFFINE_ONLY;

size_t nk_evonorm_s0_groups(size_t channels, size_t groups) {
  if (channels == 0 || groups == 0) return 0;
  if (groups > channels) groups = channels;
  while (channels % groups) groups--;
  return groups;
}

typedef struct evo_geo {
  size_t N, C, S, G, cg;
  int nsc;
  nk_dtype dt, pdt;
  size_t es;
} evo_geo;

static nk_status evo_check(nk_context *ctx, const char *op, const nk_evonorm_desc *d, int s0,
                           evo_geo *g) {
  if (d == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  TRY(nk__check_dtypes(ctx, op, d->dtype, d->param_dtype));
  if (d->layout != NK_LAYOUT_NCS && d->layout != NK_LAYOUT_NSC)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown layout %d", op, (int)d->layout);
  if (!(d->eps > 0.0f) || !isfinite(d->eps))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: eps %g must be finite and > 0", op,
                    (double)d->eps);
  if (!(d->momentum >= 0.0f && d->momentum <= 1.0f))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: momentum %g must be in [0, 1]", op,
                    (double)d->momentum);
  if (d->flags & ~evo_known)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown flags 0x%x", op,
                    (unsigned)(d->flags & ~evo_known));
  if (s0 && d->groups == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: groups must be >= 1", op);
  size_t n;
  if (!nk__mul_size(d->batch, d->channels, &n) || !nk__mul_size(n, d->spatial, &n) ||
      !nk__mul_size(d->batch * d->channels, 6 * sizeof(double), &n))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: N*C*S overflows", op);
  g->N = d->batch, g->C = d->channels, g->S = d->spatial;
  g->G = s0 ? nk_evonorm_s0_groups(d->channels, d->groups) : 0;
  g->cg = g->G ? g->C / g->G : 0;
  g->nsc = d->layout == NK_LAYOUT_NSC;
  g->dt = d->dtype, g->pdt = d->param_dtype;
  g->es = nk_dtype_size(d->dtype);
  return NK_STATUS_OK;
}

static int evo_empty(const evo_geo *g) { return g->N == 0 || g->C == 0 || g->S == 0; }

static nk_status evo_tspan(nk_context *ctx, const char *op, span *s, const char *name,
                           const void *p, ptrdiff_t ns, ptrdiff_t rs, const evo_geo *g,
                           int output) {
  return nk__tensor3_span(ctx, op, s, name, p, ns, rs, g->N, g->nsc ? g->S : g->C,
                          g->nsc ? g->C : g->S, g->dt, output);
}

/* Workspace: N*C*5 doubles (moments use 3 of them) + f32 arrays (7 N*C + 8 C). */
static int evo_ws(const nk_evonorm_desc *d, size_t *bytes) {
  size_t nc, a, f, f2;
  if (!nk__mul_size(d->batch, d->channels, &nc) || !nk__mul_size(nc, NK_RN_NSUM, &a) ||
      !nk__mul_size(nc, 7, &f) || !nk__mul_size(d->channels, 8, &f2) || !nk__add_size(f, f2, &f))
    return 0;
  return ws_bytes(a, f, bytes);
}

#define EVO_WS_FN(name)                                                                          \
  nk_status name(const nk_evonorm_desc *d, size_t *bytes) {                                      \
    if (d == NULL || bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;                           \
    return evo_ws(d, bytes) ? NK_STATUS_OK : NK_STATUS_INVALID_ARGUMENT;                         \
  }
EVO_WS_FN(nk_evonorm_b0_fwd_workspace_size)
EVO_WS_FN(nk_evonorm_b0_bwd_workspace_size)
EVO_WS_FN(nk_evonorm_s0_fwd_workspace_size)
EVO_WS_FN(nk_evonorm_s0_bwd_workspace_size)
#undef EVO_WS_FN

/* f32 arrays of the workspace: per channel (C each) and per (n, c) ([n][c], N*C each). */
typedef struct evo_arrays {
  double *d;                              /* N*C*5 doubles: moments or sums */
  float *sb, *mbh, *mbl, *kb, *v, *g, *b; /* per channel */
  float *si, *mih, *mil, *ki;             /* per (n, c) */
} evo_arrays;

static evo_arrays evo_split(const evo_geo *g, void *ws) {
  evo_arrays a;
  const size_t C = g->C, NC = g->N * g->C;
  a.d = nk__ws_align(ws);
  float *f = (float *)(a.d + NC * NK_RN_NSUM);
  a.sb = f, f += C;
  a.mbh = f, f += C;
  a.mbl = f, f += C;
  a.kb = f, f += C;
  a.v = f, f += C;
  a.g = f, f += C;
  a.b = f, f += C;
  a.si = f, f += NC;
  a.mih = f, f += NC;
  a.mil = f, f += NC;
  a.ki = f;
  return a;
}

typedef struct evo_job {
  const nk_resnorm_kernels *rk;
  const nk_chnorm_kernels *ck;
  const evo_geo *g;
  int kind;
  const void *x, *dy;
  void *y, *dx;
  ptrdiff_t xs[2], ys[2], dys[2], dxs[2];
  const evo_arrays *a;
  nk_moments *mom; /* [n][c] */
  double *sums;    /* [n][5][c] */
  size_t ntiles, tile_rows;
} evo_job;

static const void *evo_at(const evo_geo *g, const void *p, const ptrdiff_t *st, size_t n,
                          size_t r) {
  return (const char *)p + ((ptrdiff_t)n * st[0] + (ptrdiff_t)r * st[1]) * (ptrdiff_t)g->es;
}

/* Parameters of run (n, c) (NCS) or of row pointer base for sample n (NSC). */
static nk_rn_evo_params evo_params(const evo_job *j, size_t n, size_t c) {
  const evo_arrays *a = j->a;
  const size_t C = j->g->C;
  nk_rn_evo_params p;
  p.sb = a->sb + c, p.v = a->v + c, p.g = a->g + c, p.b = a->b + c;
  p.kb = a->kb + c, p.mbh = a->mbh + c, p.mbl = a->mbl + c;
  p.si = a->si + n * C + c, p.ki = a->ki + n * C + c;
  p.mih = a->mih + n * C + c, p.mil = a->mil + n * C + c;
  return p;
}

/* Instance moments: NCS task = one (n, c); NSC task = (n, tile of NK_CH_TILE_COLS channels). */
static void evo_mom_task(void *arg, size_t start, size_t count) {
  const evo_job *j = arg;
  const evo_geo *g = j->g;
  for (size_t t = start; t < start + count; t++) {
    if (!g->nsc) {
      const size_t n = t / g->C, c = t % g->C;
      double acc[3] = {0.0, 0.0, 0.0};
      j->ck->moments_run(g->S, evo_at(g, j->x, j->xs, n, c), g->dt, 0, acc);
      j->mom[t] = (nk_moments){acc[0], acc[1], acc[2]};
    } else {
      const size_t n = t / j->ntiles, c0 = (t % j->ntiles) * NK_CH_TILE_COLS;
      const size_t cols = g->C - c0 < NK_CH_TILE_COLS ? g->C - c0 : NK_CH_TILE_COLS;
      double count = 0.0, mean[NK_CH_TILE_COLS], m2[NK_CH_TILE_COLS];
      memset(mean, 0, cols * sizeof(double));
      memset(m2, 0, cols * sizeof(double));
      const nk_ch_rows rows = {g->S, j->xs[0], j->xs[1]};
      j->ck->moments_cols(n * g->S, g->S, cols, (const char *)j->x + c0 * g->es, rows, g->dt, 0,
                          &count, mean, m2);
      for (size_t c = 0; c < cols; c++)
        j->mom[n * g->C + c0 + c] = (nk_moments){count, mean[c], m2[c]};
    }
  }
}

static void evo_instance_moments(nk_context *ctx, evo_job *j) {
  const evo_geo *g = j->g;
  j->ntiles = ceil_div(g->C, NK_CH_TILE_COLS);
  const size_t tasks = g->nsc ? g->N * j->ntiles : g->N * g->C;
  nk_parallelize_1d(nk__context_pool(ctx), evo_mom_task, j, tasks,
                    g->nsc ? 1 : max_sz(1, NK_RN_TASK_ELEMS / g->S));
}

/* Element-wise passes: NCS task = one (n, c) run; NSC task = one (n, s) row. */
static void evo_ew_task(void *arg, size_t start, size_t count) {
  const evo_job *j = arg;
  const evo_geo *g = j->g;
  for (size_t t = start; t < start + count; t++) {
    size_t n, r, c;
    if (!g->nsc) n = t / g->C, c = r = t % g->C;
    else n = t / g->S, r = t % g->S, c = 0;
    const nk_rn_evo_params p = evo_params(j, n, c);
    const size_t len = g->nsc ? g->C : g->S;
    if (j->dx == NULL) {
      void *y = (void *)evo_at(g, j->y, j->ys, n, r);
      if (g->nsc) j->rk->evo_norm_row(j->kind, len, evo_at(g, j->x, j->xs, n, r), y, g->dt, &p);
      else j->rk->evo_norm_run(j->kind, len, evo_at(g, j->x, j->xs, n, r), y, g->dt, &p);
    } else {
      void *dx = (void *)evo_at(g, j->dx, j->dxs, n, r);
      const void *xr = evo_at(g, j->x, j->xs, n, r), *dyr = evo_at(g, j->dy, j->dys, n, r);
      if (g->nsc) j->rk->evo_dx_row(j->kind, len, xr, dyr, dx, g->dt, &p);
      else j->rk->evo_dx_run(j->kind, len, xr, dyr, dx, g->dt, &p);
    }
  }
}

static void evo_ew(nk_context *ctx, evo_job *j) {
  const evo_geo *g = j->g;
  const size_t items = g->nsc ? g->N * g->S : g->N * g->C;
  const size_t len = g->nsc ? g->C : g->S;
  nk_parallelize_1d(nk__context_pool(ctx), evo_ew_task, j, items,
                    max_sz(1, NK_RN_TASK_ELEMS / len));
}

/* Backward sums per (n, c) into sums[n][k][c]: NCS task = one (n, c); NSC task = (n, tile of
 * NK_CH_TILE_COLS channels) over the sample's rows in order. */
static void evo_sum_task(void *arg, size_t start, size_t count) {
  const evo_job *j = arg;
  const evo_geo *g = j->g;
  const size_t C = g->C;
  for (size_t t = start; t < start + count; t++) {
    if (!g->nsc) {
      const size_t n = t / C, c = t % C;
      double *acc = j->sums + n * NK_RN_NSUM * C + c;
      for (int k = 0; k < NK_RN_NSUM; k++) acc[k * C] = 0.0;
      const nk_rn_evo_params p = evo_params(j, n, c);
      j->rk->evo_sum_run(j->kind, g->S, evo_at(g, j->x, j->xs, n, c),
                         evo_at(g, j->dy, j->dys, n, c), g->dt, &p, acc, C);
    } else {
      const size_t n = t / j->ntiles, c0 = (t % j->ntiles) * NK_CH_TILE_COLS;
      const size_t cols = C - c0 < NK_CH_TILE_COLS ? C - c0 : NK_CH_TILE_COLS;
      double *acc = j->sums + n * NK_RN_NSUM * C + c0;
      for (int k = 0; k < NK_RN_NSUM; k++) memset(acc + k * C, 0, cols * sizeof(double));
      const nk_rn_evo_params p = evo_params(j, n, c0);
      for (size_t s = 0; s < g->S; s++)
        j->rk->evo_sum_row(j->kind, cols, (const char *)evo_at(g, j->x, j->xs, n, s) + c0 * g->es,
                           (const char *)evo_at(g, j->dy, j->dys, n, s) + c0 * g->es, g->dt, &p,
                           acc, C);
    }
  }
}

static void evo_sums(nk_context *ctx, evo_job *j) {
  const evo_geo *g = j->g;
  j->ntiles = ceil_div(g->C, NK_CH_TILE_COLS);
  const size_t tasks = g->nsc ? g->N * j->ntiles : g->N * g->C;
  nk_parallelize_1d(nk__context_pool(ctx), evo_sum_task, j, tasks,
                    g->nsc ? 1 : max_sz(1, NK_RN_TASK_ELEMS / g->S));
}

static void evo_params_in(const evo_geo *g, const void *gamma, const void *beta, const void *v,
                          evo_arrays *a) {
  for (size_t c = 0; c < g->C; c++) {
    a->g[c] = pget(gamma, c, g->pdt, 1.0f);
    a->b[c] = pget(beta, c, g->pdt, 0.0f);
    a->v[c] = pget(v, c, g->pdt, 1.0f);
  }
}

static void split_mean(double m, float *hi, float *lo) {
  *hi = (float)m;
  *lo = (float)(m - (double)*hi);
}

static nk_status evo_fwd_common(nk_context *ctx, const char *op, const nk_evonorm_desc *d,
                                int s0, evo_geo *g, const void *x, const void *gamma,
                                const void *beta, const void *v, float *running_var, void *y,
                                float *save_a, float *save_b, void *workspace,
                                size_t workspace_size) {
  TRY(evo_check(ctx, op, d, s0, g));
  if (evo_empty(g)) return nk__ok(ctx);
  const int training = !s0 && (d->flags & NK_RESNORM_TRAINING) != 0;
  const int affine = (d->flags & NK_EVONORM_AFFINE_ONLY) != 0;
  NK_REQUIRE_PTR(x);
  NK_REQUIRE_PTR(y);
  if (!s0 && !training && !affine && running_var == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: inference needs running_var", op);
  const size_t C = g->C, NC = g->N * g->C, pe = nk_dtype_size(g->pdt);
  span s[8];
  TRY(evo_tspan(ctx, op, &s[0], "x", x, d->x_n_stride, d->x_row_stride, g, 0));
  TRY(evo_tspan(ctx, op, &s[1], "y", y, d->y_n_stride, d->y_row_stride, g, 1));
  TRY(nk__vector_span(ctx, op, &s[2], "gamma", gamma, C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[3], "beta", beta, C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[4], "v", v, C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[5], "running_var", s0 ? NULL : running_var, C, sizeof(float),
                      training));
  if (s0) {
    TRY(nk__vector_span(ctx, op, &s[6], "save_g", save_a, 3 * g->N * g->G, sizeof(float), 1));
    TRY(nk__vector_span(ctx, op, &s[7], "unused", NULL, 0, 1, 1));
  } else {
    TRY(nk__vector_span(ctx, op, &s[6], "save_b", save_a, 3 * C, sizeof(float), 1));
    TRY(nk__vector_span(ctx, op, &s[7], "save_i", save_b, 3 * NC, sizeof(float), 1));
  }
  TRY(nk__check_overlaps(ctx, op, s, 8, fwd_alias_ok));
  size_t need;
  if (!evo_ws(d, &need))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need));

  evo_arrays a = evo_split(g, workspace);
  evo_job j;
  memset(&j, 0, sizeof j);
  j.rk = nk__resnorm_kernels(ctx);
  j.ck = nk__chnorm_kernels(ctx);
  j.g = g;
  j.kind = affine ? NK_RN_AFF : s0 ? NK_RN_S0 : NK_RN_B0;
  j.x = x, j.y = y;
  j.xs[0] = d->x_n_stride, j.xs[1] = d->x_row_stride;
  j.ys[0] = d->y_n_stride, j.ys[1] = d->y_row_stride;
  j.a = &a;
  j.mom = (nk_moments *)a.d;
  evo_params_in(g, gamma, beta, v, &a);
  const double eps = d->eps;
  if (!affine) {
    evo_instance_moments(ctx, &j);
    if (!s0) {
      for (size_t c = 0; c < C; c++) {
        double na = 0.0, ma = 0.0, m2a = 0.0;
        for (size_t n = 0; n < g->N; n++) {
          const nk_moments *m = &j.mom[n * C + c];
          nk__ch_chan(&na, &ma, &m2a, m->count, m->mean, m->m2);
        }
        if (training) {
          const double var = m2a / na;
          a.sb[c] = (float)sqrt(var + eps);
          split_mean(ma, &a.mbh[c], &a.mbl[c]);
          if (running_var)
            running_var[c] = (float)((1.0 - (double)d->momentum) * (double)running_var[c] +
                                     (double)d->momentum * var);
        } else {
          a.sb[c] = (float)sqrt((double)running_var[c] + eps);
          a.mbh[c] = a.mbl[c] = 0.0f;
        }
      }
      for (size_t i = 0; i < NC; i++) {
        const nk_moments *m = &j.mom[i];
        a.si[i] = (float)sqrt(m->m2 / m->count + eps);
        split_mean(m->mean, &a.mih[i], &a.mil[i]);
      }
      if (save_a)
        for (size_t c = 0; c < C; c++)
          save_a[3 * c] = a.mbh[c], save_a[3 * c + 1] = a.mbl[c], save_a[3 * c + 2] = a.sb[c];
      if (save_b)
        for (size_t i = 0; i < NC; i++)
          save_b[3 * i] = a.mih[i], save_b[3 * i + 1] = a.mil[i], save_b[3 * i + 2] = a.si[i];
    } else {
      for (size_t n = 0; n < g->N; n++)
        for (size_t k = 0; k < g->G; k++) {
          double na = 0.0, ma = 0.0, m2a = 0.0;
          for (size_t c = k * g->cg; c < (k + 1) * g->cg; c++) {
            const nk_moments *m = &j.mom[n * C + c];
            nk__ch_chan(&na, &ma, &m2a, m->count, m->mean, m->m2);
          }
          float hi, lo;
          split_mean(ma, &hi, &lo);
          const float sg = (float)sqrt(m2a / na + eps);
          for (size_t c = k * g->cg; c < (k + 1) * g->cg; c++)
            a.si[n * C + c] = sg, a.mih[n * C + c] = hi, a.mil[n * C + c] = lo;
          if (save_a) {
            float *o = save_a + 3 * (n * g->G + k);
            o[0] = hi, o[1] = lo, o[2] = sg;
          }
        }
    }
  }
  evo_ew(ctx, &j);
  return nk__ok(ctx);
}

nk_status nk_evonorm_b0_fwd(nk_context *ctx, const nk_evonorm_desc *d, const void *x,
                            const void *gamma, const void *beta, const void *v,
                            float *running_var, void *y, float *save_b, float *save_i,
                            void *workspace, size_t workspace_size) {
  evo_geo g;
  return evo_fwd_common(ctx, "evonorm_b0_fwd", d, 0, &g, x, gamma, beta, v, running_var, y,
                        save_b, save_i, workspace, workspace_size);
}

nk_status nk_evonorm_s0_fwd(nk_context *ctx, const nk_evonorm_desc *d, const void *x,
                            const void *gamma, const void *beta, const void *v, void *y,
                            float *save_g, void *workspace, size_t workspace_size) {
  evo_geo g;
  return evo_fwd_common(ctx, "evonorm_s0_fwd", d, 1, &g, x, gamma, beta, v, NULL, y, save_g,
                        NULL, workspace, workspace_size);
}

static nk_status evo_bwd_common(nk_context *ctx, const char *op, const nk_evonorm_desc *d,
                                int s0, const void *x, const void *gamma, const void *v,
                                const float *save_a, const float *save_b, const void *dy,
                                void *dx, void *dgamma, void *dbeta, void *dv, void *workspace,
                                size_t workspace_size) {
  evo_geo gg, *g = &gg;
  TRY(evo_check(ctx, op, d, s0, g));
  if (evo_empty(g)) return nk__ok(ctx);
  const int training = !s0 && (d->flags & NK_RESNORM_TRAINING) != 0;
  const int affine = (d->flags & NK_EVONORM_AFFINE_ONLY) != 0;
  const int accum = (d->flags & NK_RESNORM_ACCUMULATE) != 0;
  NK_REQUIRE_PTR(x);
  NK_REQUIRE_PTR(dy);
  NK_REQUIRE_PTR(dx);
  if (!affine) {
    NK_REQUIRE_PTR(save_a);
    if (!s0) NK_REQUIRE_PTR(save_b);
  }
  const size_t C = g->C, N = g->N, NC = g->N * g->C, pe = nk_dtype_size(g->pdt);
  span s[10];
  TRY(evo_tspan(ctx, op, &s[0], "x", x, d->x_n_stride, d->x_row_stride, g, 0));
  TRY(evo_tspan(ctx, op, &s[1], "dy", dy, d->dy_n_stride, d->dy_row_stride, g, 0));
  TRY(evo_tspan(ctx, op, &s[2], "dx", dx, d->dx_n_stride, d->dx_row_stride, g, 1));
  TRY(nk__vector_span(ctx, op, &s[3], "gamma", gamma, C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[4], "v", v, C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[5], "dgamma", dgamma, C, pe, 1));
  TRY(nk__vector_span(ctx, op, &s[6], "dbeta", dbeta, C, pe, 1));
  TRY(nk__vector_span(ctx, op, &s[7], "dv", dv, C, pe, 1));
  TRY(nk__vector_span(ctx, op, &s[8], s0 ? "save_g" : "save_b", affine ? NULL : save_a,
                      s0 ? 3 * N * g->G : 3 * C, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[9], "save_i", affine || s0 ? NULL : save_b, 3 * NC,
                      sizeof(float), 0));
  TRY(nk__check_overlaps(ctx, op, s, 10, bwd_alias_ok));
  size_t need;
  if (!evo_ws(d, &need))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need));

  evo_arrays a = evo_split(g, workspace);
  evo_job j;
  memset(&j, 0, sizeof j);
  j.rk = nk__resnorm_kernels(ctx);
  j.g = g;
  j.kind = affine ? NK_RN_AFF : s0 ? NK_RN_S0 : NK_RN_B0;
  j.x = x, j.dy = dy, j.dx = dx;
  j.xs[0] = d->x_n_stride, j.xs[1] = d->x_row_stride;
  j.dys[0] = d->dy_n_stride, j.dys[1] = d->dy_row_stride;
  j.dxs[0] = d->dx_n_stride, j.dxs[1] = d->dx_row_stride;
  j.a = &a;
  j.sums = a.d;
  evo_params_in(g, gamma, NULL, v, &a);
  if (!affine && !s0) {
    for (size_t c = 0; c < C; c++)
      a.mbh[c] = save_a[3 * c], a.mbl[c] = save_a[3 * c + 1], a.sb[c] = save_a[3 * c + 2];
    for (size_t i = 0; i < NC; i++)
      a.mih[i] = save_b[3 * i], a.mil[i] = save_b[3 * i + 1], a.si[i] = save_b[3 * i + 2];
  } else if (!affine) {
    for (size_t n = 0; n < N; n++)
      for (size_t c = 0; c < C; c++) {
        const float *o = save_a + 3 * (n * g->G + c / g->cg);
        a.mih[n * C + c] = o[0], a.mil[n * C + c] = o[1], a.si[n * C + c] = o[2];
      }
  }
  evo_sums(ctx, &j);
  /* Combine per channel in n order; the dx coefficients. */
  const double *S = a.d;
#define SUM(n, k, c) S[((n) * NK_RN_NSUM + (k)) * C + (c)]
  for (size_t c = 0; c < C; c++) a.kb[c] = 0.0f;
  for (size_t i = 0; i < NC; i++) a.ki[i] = 0.0f;
  if (!affine && !s0) {
    const double M = (double)N * (double)g->S;
    for (size_t c = 0; c < C; c++) {
      double ab = 0.0;
      for (size_t n = 0; n < N; n++) ab += SUM(n, 0, c);
      /* the kernels apply these as k * ((x - mu) / s): a coefficient A / (s count) can
       * underflow f32 where (x - mu) / s is O(1) (found by tests/fuzz/resnorm.c) */
      if (training) a.kb[c] = (float)(ab / M);
      for (size_t n = 0; n < N; n++) a.ki[n * C + c] = (float)(SUM(n, 1, c) / (double)g->S);
    }
  } else if (!affine) {
    const double cnt = (double)g->cg * (double)g->S;
    for (size_t n = 0; n < N; n++)
      for (size_t k = 0; k < g->G; k++) {
        const size_t c0 = k * g->cg;
        const double sg = a.si[n * C + c0];
        double ag = 0.0;
        for (size_t c = c0; c < c0 + g->cg; c++) ag += (double)a.g[c] * SUM(n, 0, c);
        ag = -ag / (sg * sg);
        const float kg = (float)(ag / cnt); /* applied as kg * ((x - mu_g) / s_g) */
        for (size_t c = c0; c < c0 + g->cg; c++) a.ki[n * C + c] = kg;
      }
  }
  evo_ew(ctx, &j);
  for (size_t c = 0; c < C; c++) {
    double dvs = 0.0, dgs = 0.0, dbs = 0.0;
    for (size_t n = 0; n < N; n++) {
      dbs += SUM(n, 4, c);
      if (affine) {
        dgs += SUM(n, 3, c);
      } else if (!s0) {
        dvs += SUM(n, 2, c);
        dgs += SUM(n, 3, c);
      } else {
        const double sg = a.si[n * C + c];
        dvs += (double)a.g[c] * SUM(n, 1, c) / sg;
        dgs += SUM(n, 0, c) / sg;
      }
    }
    pput(dv, c, g->pdt, dvs, accum);
    pput(dgamma, c, g->pdt, dgs, accum);
    pput(dbeta, c, g->pdt, dbs, accum);
  }
#undef SUM
  return nk__ok(ctx);
}

nk_status nk_evonorm_b0_bwd(nk_context *ctx, const nk_evonorm_desc *d, const void *x,
                            const void *gamma, const void *v, const float *save_b,
                            const float *save_i, const void *dy, void *dx, void *dgamma,
                            void *dbeta, void *dv, void *workspace, size_t workspace_size) {
  return evo_bwd_common(ctx, "evonorm_b0_bwd", d, 0, x, gamma, v, save_b, save_i, dy, dx, dgamma,
                        dbeta, dv, workspace, workspace_size);
}

nk_status nk_evonorm_s0_bwd(nk_context *ctx, const nk_evonorm_desc *d, const void *x,
                            const void *gamma, const void *v, const float *save_g,
                            const void *dy, void *dx, void *dgamma, void *dbeta, void *dv,
                            void *workspace, size_t workspace_size) {
  return evo_bwd_common(ctx, "evonorm_s0_bwd", d, 1, x, gamma, v, save_g, NULL, dy, dx, dgamma,
                        dbeta, dv, workspace, workspace_size);
}
