/*
 * chnorm_util.h — helpers shared by the channel-norm tests (tests/ops/batchnorm.c, groupnorm.c,
 * moments.c, chnorm_args.c, tests/consistency/chnorm.c): tensor geometries with padding,
 * buffers whose padding holds a sentinel that must survive, conversion to the float64
 * references' arrays, and per-set (channel or group) comparisons with the header's bounds.
 *
 * Geometry: an nk_ref_chshape (src/reference/reference.h) with explicit strides describes every
 * library tensor; the references work on dense double arrays of the same layout.
 */
#ifndef NK_TEST_CHNORM_UTIL_H
#define NK_TEST_CHNORM_UTIL_H

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

static const nk_dtype ch_dtypes[3] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};

/* The geometry of an N x C x S tensor in `layout` with pad_row elements after each row and
 * pad_n after each sample (both 0: dense). Strides are explicit in the result. */
static inline nk_ref_chshape ch_geom(size_t n, size_t c, size_t s, nk_layout layout,
                                     size_t pad_row, size_t pad_n) {
  nk_ref_chshape t;
  t.n = n, t.c = c, t.s = s;
  t.nsc = layout == NK_LAYOUT_NSC;
  const size_t len = t.nsc ? c : s, rows = t.nsc ? s : c;
  t.row_stride = (ptrdiff_t)(len + pad_row);
  t.n_stride = (ptrdiff_t)(rows * (len + pad_row) + pad_n);
  return t;
}

/* A geometry with random padding (0..5 per row, 0..13 per sample) when `strided`, else dense. */
static inline nk_ref_chshape ch_geom_rand(size_t n, size_t c, size_t s, nk_layout layout,
                                          int strided, nk_rng *rng) {
  if (!strided) return ch_geom(n, c, s, layout, 0, 0);
  const size_t pr = (size_t)(nk_rng_u64(rng) % 6), pn = (size_t)(nk_rng_u64(rng) % 14);
  return ch_geom(n, c, s, layout, pr, pn);
}

/* The dense geometry the references use. */
static inline nk_ref_chshape ch_dense(size_t n, size_t c, size_t s, nk_layout layout) {
  return ch_geom(n, c, s, layout, 0, 0);
}

static inline size_t ch_span(const nk_ref_chshape *t) { return nk_ref_chspan(t); }

/* A buffer for a tensor of geometry t: every element (padding included) set to the sentinel
 * (input: NaN, so that reading padding shows; output: 0x5A bytes). At least 64 bytes. */
static inline void *ch_alloc(const nk_ref_chshape *t, nk_dtype dt, int input) {
  const size_t n = ch_span(t), es = nk_dtype_size(dt);
  void *p = nk_t_alloc(n * es + 64);
  if (p == NULL) return NULL;
  if (input)
    for (size_t i = 0; i < n; i++) nk_t_set(p, i, NAN, dt);
  else
    memset(p, 0x5A, n * es);
  return p;
}

static inline void *ch_snapshot(const void *p, size_t bytes) {
  void *q = malloc(bytes ? bytes : 1);
  if (q) memcpy(q, p, bytes);
  return q;
}

/* 1 if every byte of p outside the elements of t equals the snapshot. */
static inline int ch_padding_kept(const nk_ref_chshape *t, nk_dtype dt, const void *p,
                                  const void *snap) {
  const size_t n = ch_span(t), es = nk_dtype_size(dt);
  unsigned char *mask = calloc(n ? n : 1, 1);
  if (mask == NULL) return 0;
  for (size_t a = 0; a < t->n; a++)
    for (size_t c = 0; c < t->c; c++)
      for (size_t s = 0; s < t->s; s++) mask[nk_ref_chidx(t, a, c, s)] = 1;
  int ok = 1;
  for (size_t i = 0; i < n && ok; i++)
    if (!mask[i] && memcmp((const char *)p + i * es, (const char *)snap + i * es, es) != 0) {
      ok = 0;
      fprintf(stderr, "  padding element %zu of %zu was written\n", i, n);
    }
  free(mask);
  return ok;
}

static inline double ch_get(const void *p, const nk_ref_chshape *t, nk_dtype dt, size_t n,
                            size_t c, size_t s) {
  return nk_t_get(p, nk_ref_chidx(t, n, c, s), dt);
}
static inline void ch_put(void *p, const nk_ref_chshape *t, nk_dtype dt, size_t n, size_t c,
                          size_t s, double v) {
  nk_t_set(p, nk_ref_chidx(t, n, c, s), v, dt);
}

/* The elements of a library buffer (geometry tl) as doubles in geometry tr. */
static inline void ch_to_ref(const void *p, const nk_ref_chshape *tl, nk_dtype dt,
                             const nk_ref_chshape *tr, double *out) {
  for (size_t a = 0; a < tl->n; a++)
    for (size_t c = 0; c < tl->c; c++)
      for (size_t s = 0; s < tl->s; s++)
        out[nk_ref_chidx(tr, a, c, s)] = ch_get(p, tl, dt, a, c, s);
}

/* The set an element belongs to: groups == 0: its channel (BatchNorm); else (n, group) as
 * n * groups + c / (C / groups) (GroupNorm; groups == C: InstanceNorm). */
static inline size_t ch_set_of(const nk_ref_chshape *t, size_t groups, size_t n, size_t c) {
  return groups == 0 ? c : n * groups + c / (t->c / groups);
}
static inline size_t ch_nsets(const nk_ref_chshape *t, size_t groups) {
  return groups == 0 ? t->c : t->n * groups;
}

/* scale[set] = max |ref| (+ |extra| element-wise when extra != NULL) over the set, NaN ignored. */
static inline void ch_set_absmax(const nk_ref_chshape *tr, const double *ref, const double *extra,
                                 size_t groups, double *scale) {
  for (size_t i = 0; i < ch_nsets(tr, groups); i++) scale[i] = 0.0;
  for (size_t a = 0; a < tr->n; a++)
    for (size_t c = 0; c < tr->c; c++)
      for (size_t s = 0; s < tr->s; s++) {
        const size_t k = nk_ref_chidx(tr, a, c, s), g = ch_set_of(tr, groups, a, c);
        double v = fabs(ref[k]) + (extra ? fabs(extra[k]) : 0.0);
        if (v > scale[g]) scale[g] = v; /* NaN compares false */
      }
}

/* |got - ref| / bound; NaN must meet NaN. bound 0 means exactly equal. */
static inline double ch_ratio(double got, double ref, double bound) {
  if (isnan(got) || isnan(ref)) return (isnan(got) && isnan(ref)) ? 0.0 : INFINITY;
  if (got == ref) return 0.0;
  if (bound == 0.0) return INFINITY;
  return fabs(got - ref) / bound;
}

/* ch_ratio for an f32 result of a float64 reference: a reference beyond the f32 range must give
 * the infinity that rounding it to f32 gives. */
static inline double ch_ratio32(double got, double ref, double bound) {
  const float r32 = (float)ref;
  if (isinf(r32) && !isinf(ref)) return got == (double)r32 ? 0.0 : INFINITY;
  return ch_ratio(got, ref, bound);
}

/* Compares every element of the library tensor (geometry tl, dtype dt) with the reference
 * (geometry tr): bound = rel * scale[set] + (ulps ? 1 ulp of dt at ref : 0) + floor.
 * Returns the worst ratio (<= 1 passes); each failing element is reported (up to the check
 * limit) with its (n, c, s), value, reference and bound. */
static inline double ch_compare(const char *what, const nk_ref_chshape *tl, nk_dtype dt,
                                const void *lib, const nk_ref_chshape *tr, const double *ref,
                                size_t groups, const double *scale, double rel, int ulps,
                                double floor_) {
  double worst = 0.0;
  for (size_t a = 0; a < tl->n; a++)
    for (size_t c = 0; c < tl->c; c++)
      for (size_t s = 0; s < tl->s; s++) {
        const double r = ref[nk_ref_chidx(tr, a, c, s)], got = ch_get(lib, tl, dt, a, c, s);
        const double bound = rel * scale[ch_set_of(tr, groups, a, c)] +
                             (ulps ? nk_t_ulp(r, dt) : 0.0) + floor_;
        const double q = ch_ratio(got, r, bound);
        if (q > worst) worst = q;
        NK_CHECK(q <= 1.0, "%s[n=%zu c=%zu s=%zu] = %.9g, reference %.9g (bound %.3g)", what, a,
                 c, s, got, r, bound);
      }
  return worst;
}

/* Input classes of the data of a channel (set). */
enum ch_input {
  CH_NORMAL,  /* N(c/4, 1): channels with different means */
  CH_ILLCOND, /* 1e4 + 1e-2 N(0,1) */
  CH_CONST,   /* the same value everywhere (1234.5) */
  CH_HUGE,    /* 1e30 N(0,1) */
  CH_MAXISH,  /* FLT_MAX/4 * U(-1, 1) */
  CH_TINY,    /* 1e-30 N(0,1) */
  CH_ZERO,    /* 0 */
  CH_NEARMAX, /* 1 in 4 +FLT_MAX (0.9 + 0.1 U), else -FLT_MAX (0.6 + 0.4 U): |mean| ~ 0.35
               * FLT_MAX and x - mean beyond FLT_MAX (found by the chnorm fuzz harness) */
};

static inline double ch_sample(nk_rng *rng, enum ch_input in, size_t c) {
  switch (in) {
    case CH_ILLCOND: return 1e4 + 1e-2 * nk_rng_normal(rng);
    case CH_CONST: return 1234.5;
    case CH_HUGE: return 1e30 * nk_rng_normal(rng);
    case CH_MAXISH: return (double)(FLT_MAX / 4) * (2.0 * nk_rng_uniform(rng) - 1.0);
    case CH_TINY: return 1e-30 * nk_rng_normal(rng);
    case CH_ZERO: return 0.0;
    case CH_NEARMAX:
      return nk_rng_uniform(rng) < 0.25 ? (double)FLT_MAX * (0.9 + 0.1 * nk_rng_uniform(rng))
                                         : -(double)FLT_MAX * (0.6 + 0.4 * nk_rng_uniform(rng));
    default: return 0.25 * (double)c + nk_rng_normal(rng);
  }
}

static inline const char *ch_input_name(enum ch_input in) {
  static const char *names[] = {"normal", "illcond", "const", "1e30", "FLT_MAX/4", "1e-30",
                                "zero", "near FLT_MAX"};
  return names[in];
}

/* A context with `threads` threads (1: no pool) on `isa`; NULL when the ISA is unavailable.
 * Free with ch_ctx_free. */
typedef struct ch_ctx {
  nk_context *ctx;
  nk_threadpool *pool;
} ch_ctx;

static inline ch_ctx ch_ctx_make(nk_isa isa, size_t threads) {
  ch_ctx c = {NULL, NULL};
  if (nk_context_create(&c.ctx) != NK_STATUS_OK) return c;
  if (nk_context_set_isa(c.ctx, isa) != NK_STATUS_OK) {
    nk_context_destroy(c.ctx);
    c.ctx = NULL;
    return c;
  }
  if (threads > 1 && nk_threadpool_create(threads, &c.pool) == NK_STATUS_OK)
    nk_context_set_threadpool(c.ctx, c.pool);
  return c;
}

static inline void ch_ctx_free(ch_ctx *c) {
  nk_context_destroy(c->ctx);
  nk_threadpool_destroy(c->pool);
  c->ctx = NULL;
  c->pool = NULL;
}

/* Sets the strides of one tensor of a descriptor from a geometry. */
static inline void ch_strides(const nk_ref_chshape *t, ptrdiff_t *n_stride, ptrdiff_t *row_stride) {
  *n_stride = t->n_stride;
  *row_stride = t->row_stride;
}

#endif /* NK_TEST_CHNORM_UTIL_H */
