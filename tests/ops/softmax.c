/*
 * tests/ops/softmax.c — softmax / log_softmax (forward and backward, every algorithm, every
 * dtype, every attention option) and sigmoid attention scores, against the float64 references
 * (src/reference/softmax.c), by scenario. The tests run on the default ISA path;
 * tests/consistency/softmax.c checks that every path and thread count gives the same bits.
 *
 * The reference is always evaluated on the logits the API defines (nk_ref_softmax_logits: x as
 * stored in its dtype, then scale / mask / ALiBi each rounded to f32), so the bounds measure the
 * operator's own error only.
 *
 * Forward bounds (DESIGN.md, normkit.h):
 *   f32 softmax       |y - ref| <= 2e-6 * max|ref| of the row
 *   f32 log_softmax   |y - ref| <= 2e-6 * max(1, |lse_ref|) + 1 ulp_f32(ref)
 *   bf16/f16 softmax  |y - ref| <= 1 ulp of the dtype at ref (or y == ref rounded, e.g. -inf
 *                     when ref is below -65520 in f16)
 *   bf16/f16 log      three-pass and AUTO: 1 ulp of the dtype at ref; two-pass and online:
 *                     1 ulp + 2e-6 * max(1, |lse_ref|) (normkit.h): their lse carries exp's
 *                     rounding of the dominant term, an absolute f32 error larger than a
 *                     16-bit ulp wherever y = z - lse is near 0.
 *   cols == 1 (header edge case): softmax y == 1 and log_softmax y == 0 exactly with the
 *                     three-pass algorithms and AUTO (two-pass and online: the bounds).
 * With a sink, "the row" includes the sink's share p0 = e^{s - lse}: when the sink dominates, every
 * y is tiny and e^{z - m} carries the f32 rounding of z - m (relative error up to |z - m| 2^-24,
 * beyond 2e-6 once z - m < -33), so only an error relative to the whole distribution is bounded.
 * Two floors the header's bounds lack, because f32 cannot meet them: softmax values in the f32
 * subnormals (a sink or a masked majority can make the whole row tiny) get 2^-148 absolute;
 * log_softmax values far below the row's lse (|y| >> max(1,|lse|), e.g. z = (0, -1000)) get
 * 1 ulp of y, the spacing of f32 at y (2e-6 * max(1,|lse|) is below half an ulp there).
 *   lse (f32)         |lse - ref| <= 2e-6 * max(1, |lse_ref|)
 *   exact values: ref 0 (masked) -> y == 0; ref -inf -> -inf; ref NaN -> the canonical NaN.
 *
 * Backward bounds (dx against nk_ref_softmax_bwd evaluated on the op's own stored y, so the
 * forward error does not enter). Derivation, from the canonical arithmetic (softmax.h): the row
 * sum D = sum dy*y (or G = sum dy) is a blocksum — per block of 1024, 64 f32 lanes of at most 16
 * fma terms, a 6-level fold, blocks added in double — so |D - D_exact| <= (16 + 6 + 1) u sum|dy y|
 * with u = 2^-24, about 1.4e-6 * sum|dy*y|, whatever cols is (the lane length is capped by the
 * block). dx_j = (y_j * ((dy_j - Dh) - Dl)) * scale adds 4 roundings of at most u each, relative
 * to |y_j| (|dy_j| + |D|). With |D| <= max|dy| * sum|y| this gives
 *   softmax:  |dx_j - ref| <= 4e-6 * |scale| * |y_j| * max|dy| * (1 + sum|y|)  [+ 1 ulp(ref)
 * bf16/f16] (4e-6 rather than the 1.7e-6 derived: a factor 2 of margin for the exp-free but
 * order-dependent rounding of D). The log backward dx_j = fma(-exp(y_j), (float)G, dy_j) * scale
 * has G's error times e^{y_j}, exp's few-ulp error and two roundings:
 *   log:      |dx_j - ref| <= 4e-6 * |scale| * (e^{y_j} * sum|dy| + |dy_j|)  [+ 1 ulp(ref)]
 * Both are cols-independent in effect: e^{y_j} (or y_j) falls as 1/cols while sum|dy| grows.
 * An absolute floor of |scale| * 2^-140 covers products that land in the f32 subnormals.
 *   dsink = -p0 * dot, p0 = e^{s - lse} with the lse passed in: the dot's error above, plus
 *   the f32 exponential of s - lse (its argument rounded: relative error u |s - lse|):
 *             |dsink - ref| <= 4e-6 * p0 * max(1, |s - lse|) * T + 2^-140,
 *             T = max|dy| (1 + sum|y|) (softmax) or sum|dy| (log).
 * Finite differences (f32 only; x on a grid where x +- h is exact, h = 2^-6, L = sum dy*y in
 * double): the central difference has truncation error h^2/6 |L'''| (about 4e-5 |scale|^3 max|dy|)
 * and noise (the forward's f32 error, at most 2e-6 relative, over 2h); we accept
 *   |dx_fd - dx| <= 2e-3 * |dx| + 1e-3 * |scale| * max|dy| * max(1, |lse|) * (cols > 64 ?
 * sqrt(cols) : 1) which is far below what any formula error (a missing term, a wrong sign or scale)
 * gives.
 *
 * Sigmoid (element-wise; e = exp(-|z|) with normkit's exp (a few ulp), then one add and one
 * division; backward three products and 1 - y):
 *   f32: |y - ref| <= 4 ulp(ref) + 2^-149;  |dx - ref| <= 4 ulp(ref) + |scale| 2^-140
 *   bf16/f16: 1 ulp of the dtype at ref (the f32 error is 2^-16 of a bf16 ulp).
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "util.h"

enum cls {
  C_NORMAL, /* N(0,1) */
  C_X10,
  C_X100,
  C_X1E6,     /* around the two-pass range test (2^22) */
  C_HUGE,     /* +-1e30 (f16: +-3e4) */
  C_EDGE_SUB, /* max-subtracted values at exp's normal/subnormal/zero edges */
  C_EDGE_RAW, /* raw values at exp's overflow / underflow edges */
  C_MIXINF,   /* -inf mixed with finite */
  C_ALLINF,   /* every x -inf */
  C_GRID,     /* N(0,1) rounded to 2^-10: x +- 2^-6 exact (finite differences) */
  C_COUNT
};
static const char *cls_name[] = {"normal",   "x10",      "x100",   "x1e6",   "huge",
                                 "edge_sub", "edge_raw", "mixinf", "allinf", "grid"};

enum { MASK_NONE, MASK_ROWS, MASK_BCAST, MASK_QLEN };
enum { SINK_NONE, SINK_ROW, SINK_HEAD, SINK_ZERO };
enum { IP_NONE, IP_YX, IP_DXDY, IP_DXY };

typedef struct cfg {
  nk_dtype dt, mdt;
  size_t rows, cols;
  nk_softmax_algo algo;
  int log, masked_nan, causal;
  float scale, alibi;
  size_t q_len, heads;
  ptrdiff_t offset;
  int mask, sink, inplace;
  size_t pad;
  enum cls cls;
  uint64_t seed;
  int fd;     /* finite-difference check (f32) */
  int no_bwd; /* forward only */
  nk_context *ctx;
} cfg;

static nk_context *g_ctx;

static cfg base(nk_dtype dt, size_t rows, size_t cols, nk_softmax_algo algo, int log) {
  cfg c;
  memset(&c, 0, sizeof c);
  c.dt = dt;
  c.mdt = NK_DTYPE_F32;
  c.rows = rows;
  c.cols = cols;
  c.algo = algo;
  c.log = log;
  c.scale = 1.0f;
  c.cls = C_NORMAL;
  c.seed = rows * 7919u + cols * 31u + (uint64_t)algo * 3u + (uint64_t)log;
  c.ctx = g_ctx;
  return c;
}

/* About N(0,1) (Irwin-Hall of 4 uniforms), cheap enough for rows of 2^20. */
static double normal(nk_rng *rng) {
  const uint64_t u = nk_rng_u64(rng);
  const double s = (double)(u & 0xFFFF) + (double)((u >> 16) & 0xFFFF) +
                   (double)((u >> 32) & 0xFFFF) + (double)(u >> 48);
  return (s / 65536.0 - 2.0) * 1.7320508075688772;
}

static double sample(nk_rng *rng, const cfg *c, size_t i, size_t j) {
  static const float sub_off[] = {0.0f,       -87.33654f,  -87.33655f,  -87.336548f, -88.72283f,
                                  -88.72284f, -103.27893f, -103.97207f, -103.97208f, -103.97209f,
                                  -104.0f,    -104.5f,     -149.0f,     -150.0f,     -0.5f};
  const double n = normal(rng);
  switch (c->cls) {
    case C_X10:
      return 10.0 * n;
    case C_X100:
      return 100.0 * n;
    case C_X1E6:
      return (i % 2 ? 5e6 : 1e6) * n;
    case C_HUGE:
      return (c->dt == NK_DTYPE_F16 ? 3e4 : 1e30) * n;
    case C_EDGE_SUB: {
      const double b = (i % 3 == 0) ? 0.0 : (i % 3 == 1) ? 1000.0 : -50.0;
      if (j == i % c->cols) return b; /* the row maximum */
      return b + sub_off[nk_rng_u64(rng) % (sizeof sub_off / sizeof sub_off[0])];
    }
    case C_EDGE_RAW: {
      const int k = (int)(nk_rng_u64(rng) % 7) - 3;
      float v;
      if (i % 3 == 0) {
        v = 88.72283f;
      } else if (i % 3 == 1) {
        v = -103.97208f;
      } else {
        v = (nk_rng_u64(rng) & 1) ? 88.72284f : -87.33655f;
      }
      for (int s = 0; s < (k < 0 ? -k : k); s++) v = nextafterf(v, k < 0 ? -INFINITY : INFINITY);
      if (nk_rng_u64(rng) % 16 == 0) v = (i % 3 == 1) ? -104.0f : 89.0f;
      return v;
    }
    case C_MIXINF:
      return (nk_rng_u64(rng) % 3 == 0) ? -INFINITY : 3.0 * n;
    case C_ALLINF:
      return -INFINITY;
    case C_GRID:
      return nearbyint(n * 1024.0) / 1024.0;
    default:
      return n;
  }
}

/* Worst |got - ref| / bound; exact-value rules for NaN, infinities and zero bounds. */
static double ratio(double got, double ref, double bound) {
  if (isnan(ref)) return isnan(got) ? 0.0 : INFINITY;
  if (isnan(got)) return INFINITY;
  if (got == ref) return 0.0;
  if (isinf(ref) || isinf(got)) return INFINITY;
  return fabs(got - ref) / bound;
}

/* The canonical NaN of dt as stored (0x7FC00000 rounded). */
static int canonical_nan(const void *p, size_t k, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) {
    uint32_t u;
    memcpy(&u, (const float *)p + k, 4);
    return u == 0x7FC00000u;
  }
  const uint16_t h = ((const uint16_t *)p)[k];
  return h == (dt == NK_DTYPE_BF16 ? 0x7FC0u : 0x7E00u);
}

/* The forward bound of one element (see the top of the file for the two f32 floors). */
static double fwd_bound(const cfg *c, double ref, double rowmax, double lse) {
  const double lb = 2e-6 * fmax(1.0, isfinite(lse) ? fabs(lse) : 0.0);
  /* two-pass / online log_softmax in bf16/f16: lse carries exp's rounding of the dominant term,
   * an absolute f32 error that a 1-ulp bound at y ~ 0 cannot hold (normkit.h); the three-pass
   * algorithms (and AUTO, which uses them where it matters) keep the 1-ulp bound */
  const int exact_max = c->algo == NK_SOFTMAX_AUTO || c->algo == NK_SOFTMAX_THREE_PASS_RELOAD ||
                        c->algo == NK_SOFTMAX_THREE_PASS_RECOMPUTE;
  if (c->dt != NK_DTYPE_F32) return nk_t_ulp(ref, c->dt) + (c->log && !exact_max ? lb : 0.0);
  if (c->log) return lb + nk_t_ulp(ref, c->dt);
  return 2e-6 * rowmax + 0x1p-148;
}

/* ratio() that also accepts the correctly rounded value itself (it may be +-inf in f16). */
static double ratio_dt(double got, double ref, double bound, nk_dtype dt) {
  if (!isnan(ref) && got == nk_t_round(ref, dt)) return 0.0;
  return ratio(got, ref, bound);
}

/* Everything one case produces, kept for the callers that compare runs bit for bit. */
typedef struct run {
  void *y, *dx;
  float *lse, *dsink;
  size_t S; /* row stride used */
} run;

static void free_run(run *r) {
  free(r->y), free(r->dx), free(r->lse), free(r->dsink);
  memset(r, 0, sizeof *r);
}

static double worst_fwd, worst_bwd; /* worst ratios seen, for the report at the end */

static nk_softmax_desc make_desc(const cfg *c, size_t S, size_t MS) {
  nk_softmax_desc d = nk_softmax_desc_dense(c->rows, c->cols, c->dt);
  d.mask_dtype = c->mdt;
  d.scale = c->scale;
  d.alibi = c->alibi;
  d.flags = (c->log ? NK_SOFTMAX_LOG : 0u) | (c->causal ? NK_SOFTMAX_CAUSAL : 0u) |
            (c->masked_nan ? NK_SOFTMAX_MASKED_NAN : 0u) |
            (c->sink == SINK_HEAD ? NK_SOFTMAX_SINK_PER_HEAD : 0u);
  d.algo = c->algo;
  d.q_len = c->q_len;
  d.heads = c->heads;
  d.causal_offset = c->offset;
  d.mask_rows = c->mask == MASK_ROWS    ? c->rows
                : c->mask == MASK_BCAST ? 1
                : c->mask == MASK_QLEN  ? (c->q_len ? c->q_len : c->rows)
                                        : 0;
  d.x_stride = d.y_stride = d.dy_stride = d.dx_stride = (ptrdiff_t)S;
  d.mask_stride = (ptrdiff_t)MS;
  return d;
}

/* Test inputs of one case, shared by the checks. */
typedef struct inputs {
  size_t S, MS, MR, nsink;
  void *x, *mask, *dy;
  float *sink;
  float *xf, *maskf; /* dense values as stored */
  double *sinkd;     /* per row */
  double *dyd;       /* dense */
} inputs;

static void free_inputs(inputs *in) {
  free(in->x), free(in->mask), free(in->dy), free(in->sink), free(in->xf), free(in->maskf);
  free(in->sinkd), free(in->dyd);
}

static int make_inputs(const cfg *c, inputs *in) {
  memset(in, 0, sizeof *in);
  const size_t R = c->rows, C = c->cols, es = nk_dtype_size(c->dt), mes = nk_dtype_size(c->mdt);
  in->S = C + c->pad;
  in->MS = C + (c->pad ? c->pad + 1 : 0);
  in->MR = c->mask == MASK_ROWS    ? R
           : c->mask == MASK_BCAST ? 1
           : c->mask == MASK_QLEN  ? (c->q_len ? c->q_len : R)
                                   : 0;
  const size_t qlen = c->q_len ? c->q_len : R, heads = c->heads ? c->heads : 1;
  in->nsink = c->sink == SINK_HEAD ? heads : R;
  nk_rng rng = {c->seed * 2654435761u + 17};
  in->x = nk_t_alloc(R * in->S * es);
  in->dy = nk_t_alloc(R * in->S * es);
  in->mask = nk_t_alloc((in->MR ? in->MR : 1) * in->MS * mes);
  in->sink = nk_t_alloc(in->nsink * 4);
  in->xf = nk_t_alloc(R * C * 4);
  in->maskf = nk_t_alloc((in->MR ? in->MR : 1) * C * 4);
  in->sinkd = nk_t_alloc(R * 8);
  in->dyd = nk_t_alloc(R * C * 8);
  if (!in->x || !in->dy || !in->mask || !in->sink || !in->xf || !in->maskf || !in->sinkd ||
      !in->dyd)
    return 0;
  memset(in->x, 0x33, R * in->S * es);
  memset(in->dy, 0x33, R * in->S * es);
  for (size_t i = 0; i < R; i++)
    for (size_t j = 0; j < C; j++) {
      nk_t_set(in->x, i * in->S + j, sample(&rng, c, i, j), c->dt);
      in->xf[i * C + j] = (float)nk_t_get(in->x, i * in->S + j, c->dt);
      double g = normal(&rng);
      if (c->cls == C_GRID) g = nearbyint(g * 256.0) / 256.0;
      nk_t_set(in->dy, i * in->S + j, g, c->dt);
      in->dyd[i * C + j] = nk_t_get(in->dy, i * in->S + j, c->dt);
    }
  for (size_t i = 0; i < in->MR; i++)
    for (size_t j = 0; j < C; j++) {
      /* finite bias, with some -inf (masked keys) unless the FD check runs */
      double v = 0.5 * nk_rng_normal(&rng);
      if (!c->fd && nk_rng_u64(&rng) % 5 == 0) v = -INFINITY;
      nk_t_set(in->mask, i * in->MS + j, v, c->mdt);
      in->maskf[i * C + j] = (float)nk_t_get(in->mask, i * in->MS + j, c->mdt);
    }
  for (size_t k = 0; k < in->nsink; k++)
    in->sink[k] = c->sink == SINK_ZERO ? 0.0f : (float)(1.5 * nk_rng_normal(&rng));
  for (size_t i = 0; i < R; i++)
    in->sinkd[i] = in->sink[c->sink == SINK_HEAD ? (i / qlen) % heads : i];
  return 1;
}

/* Runs the forward on x (dtype buffer with stride in->S) into y / lse. */
static nk_status op_fwd(const cfg *c, const inputs *in, const void *x, void *y, float *lse) {
  nk_softmax_desc d = make_desc(c, in->S, in->MS);
  return nk_softmax_fwd(c->ctx, &d, x, c->mask ? in->mask : NULL, c->sink ? in->sink : NULL, y,
                        lse);
}

/* sum over rows and columns of dy * y (finite terms only), in long double. */
static double objective(const cfg *c, const inputs *in, const void *y) {
  long double L = 0.0L;
  for (size_t i = 0; i < c->rows; i++)
    for (size_t j = 0; j < c->cols; j++) {
      const double v = nk_t_get(y, i * in->S + j, c->dt);
      if (isfinite(v)) L += (long double)in->dyd[i * c->cols + j] * v;
    }
  return (double)L;
}

/* Central differences of the op's forward against the op's backward dx (and dsink). */
static void fd_check(const cfg *c, const inputs *in, const void *dx, const float *dsink,
                     const float *lse) {
  const size_t R = c->rows, C = c->cols, S = in->S, es = nk_dtype_size(c->dt);
  const double h = 0x1p-6;
  void *xp = nk_t_alloc(R * S * es), *yp = nk_t_alloc(R * S * es);
  float *lp = nk_t_alloc(R * 4);
  double gmax = 0.0, lmax = 1.0;
  for (size_t k = 0; k < R * C; k++) gmax = fmax(gmax, fabs(in->dyd[k]));
  for (size_t i = 0; i < R; i++)
    if (isfinite(lse[i])) lmax = fmax(lmax, fabs(lse[i]));
  const double noise = 1e-3 * fabs(c->scale) * gmax * lmax * (C > 64 ? sqrt((double)C) : 1.0);
  memcpy(xp, in->x, R * S * es);
  if (C <= 64) { /* the full Jacobian-vector product, one element at a time */
    for (size_t i = 0; i < R; i++)
      for (size_t j = 0; j < C; j++) {
        const size_t k = i * S + j;
        const double x0 = nk_t_get(in->x, k, c->dt);
        if (!isfinite(x0) ||
            (c->causal && (ptrdiff_t)j > c->offset + (ptrdiff_t)(i % (c->q_len ? c->q_len : R))))
          continue;
        nk_t_set(xp, k, x0 + h, c->dt);
        op_fwd(c, in, xp, yp, lp);
        const double Lp = objective(c, in, yp);
        nk_t_set(xp, k, x0 - h, c->dt);
        op_fwd(c, in, xp, yp, lp);
        const double Lm = objective(c, in, yp);
        nk_t_set(xp, k, x0, c->dt);
        const double fd = (Lp - Lm) / (2 * h), got = nk_t_get(dx, k, c->dt);
        NK_CHECK(fabs(fd - got) <= 2e-3 * fabs(got) + noise,
                 "fd: %s %s cols %zu dx[%zu][%zu] %.9g, central difference %.9g",
                 nk_softmax_algo_name(c->algo), c->log ? "log" : "softmax", C, i, j, got, fd);
      }
  } else { /* random directions v in {-1, 0, 1}^n (0 on masked logits) */
    nk_rng rng = {c->seed + 99};
    signed char *v = nk_t_alloc(R * C);
    for (int rep = 0; rep < 3; rep++) {
      double dir = 0.0, dnorm = 0.0, L[2];
      for (size_t i = 0; i < R; i++)
        for (size_t j = 0; j < C; j++) {
          const size_t k = i * S + j;
          const int masked =
              !isfinite(in->xf[i * C + j]) ||
              (c->causal && (ptrdiff_t)j > c->offset + (ptrdiff_t)(i % (c->q_len ? c->q_len : R)));
          v[i * C + j] = masked ? 0 : (signed char)((int)(nk_rng_u64(&rng) % 3) - 1);
          const double g = nk_t_get(dx, k, c->dt);
          dir += v[i * C + j] * g;
          dnorm += g * g;
        }
      for (int s = 0; s < 2; s++) {
        const double sg = s ? -1.0 : 1.0;
        for (size_t i = 0; i < R; i++)
          for (size_t j = 0; j < C; j++)
            nk_t_set(xp, i * S + j, in->xf[i * C + j] + sg * h * v[i * C + j], c->dt);
        op_fwd(c, in, xp, yp, lp);
        L[s] = objective(c, in, yp);
      }
      const double fd = (L[0] - L[1]) / (2 * h);
      NK_CHECK(fabs(fd - dir) <= 2e-3 * sqrt(dnorm) + noise,
               "fd: %s %s cols %zu direction %d: dx.v %.9g, central difference %.9g",
               nk_softmax_algo_name(c->algo), c->log ? "log" : "softmax", C, rep, dir, fd);
    }
    free(v);
  }
  /* dsink: d L / d s_i */
  if (dsink && c->sink == SINK_ROW) {
    float *sp = nk_t_alloc(R * 4);
    memcpy(sp, in->sink, R * 4);
    nk_softmax_desc d = make_desc(c, S, in->MS);
    for (size_t i = 0; i < R; i++) {
      sp[i] = in->sink[i] + (float)h;
      nk_softmax_fwd(c->ctx, &d, in->x, c->mask ? in->mask : NULL, sp, yp, lp);
      const double Lp = objective(c, in, yp);
      sp[i] = in->sink[i] - (float)h;
      nk_softmax_fwd(c->ctx, &d, in->x, c->mask ? in->mask : NULL, sp, yp, lp);
      const double Lm = objective(c, in, yp);
      sp[i] = in->sink[i];
      const double fd = (Lp - Lm) / (2 * h);
      NK_CHECK(fabs(fd - dsink[i]) <= 2e-3 * fabs(dsink[i]) + noise / fabs(c->scale),
               "fd: dsink[%zu] %.9g, central difference %.9g", i, (double)dsink[i], fd);
    }
    free(sp);
  }
  free(xp), free(yp), free(lp);
}

/* Runs forward and backward of one configuration and checks everything; the outputs are
 * returned in *out when out != NULL (the caller frees them). */
static void run_case(const cfg *c, run *out) {
  const size_t R = c->rows, C = c->cols, es = nk_dtype_size(c->dt);
  inputs in;
  run o;
  memset(&o, 0, sizeof o);
  if (out) memset(out, 0, sizeof *out);
  double *z = nk_t_alloc(R * C * 8), *yr = nk_t_alloc(R * C * 8), *lr = nk_t_alloc(R * 8);
  double *yd = nk_t_alloc(R * C * 8), *dxr = nk_t_alloc(R * C * 8), *dot = nk_t_alloc(R * 8);
  const int ok = make_inputs(c, &in);
  const size_t S = in.S;
  o.S = S;
  o.y = nk_t_alloc(R * S * es);
  o.dx = nk_t_alloc(R * S * es);
  o.lse = nk_t_alloc(R * 4);
  o.dsink = nk_t_alloc(R * 4);
  if (!ok || !z || !yr || !lr || !yd || !dxr || !dot || !o.y || !o.dx || !o.lse || !o.dsink) {
    NK_CHECK(0, "allocation");
    goto done;
  }
  memset(o.y, 0x5A, R * S * es);
  memset(o.dx, 0x5A, R * S * es);

  /* ---- forward ---- */
  void *y = o.y;
  if (c->inplace == IP_YX) { /* y == x: the input buffer becomes the output */
    memcpy(o.y, in.x, R * S * es);
    y = o.y;
  }
  nk_softmax_desc d = make_desc(c, S, in.MS);
  const void *xin = c->inplace == IP_YX ? o.y : in.x;
  nk_status st =
      nk_softmax_fwd(c->ctx, &d, xin, c->mask ? in.mask : NULL, c->sink ? in.sink : NULL, y, o.lse);
  if (c->algo == NK_SOFTMAX_THREE_PASS_RELOAD && c->dt != NK_DTYPE_F32) {
    NK_CHECK(st == NK_STATUS_UNSUPPORTED, "reload with %s y: %s", nk_dtype_name(c->dt),
             nk_status_string(st));
    goto done;
  }
  NK_CHECK(st == NK_STATUS_OK, "fwd status %s: %s", nk_status_string(st),
           nk_context_message(c->ctx));
  if (st != NK_STATUS_OK) goto done;
  {
    /* long rows: the reference of the same inputs is shared by every algorithm */
    static cfg key;
    static double *kz, *kyr, *klr;
    cfg k = *c;
    k.algo = NK_SOFTMAX_AUTO;
    k.ctx = NULL;
    k.seed = 0;
    if (R * C >= ((size_t)1 << 20) && kz && memcmp(&k, &key, sizeof k) == 0) {
      memcpy(z, kz, R * C * 8), memcpy(yr, kyr, R * C * 8), memcpy(lr, klr, R * 8);
    } else {
      nk_ref_softmax_logits(R, C, in.xf, c->mask ? in.maskf : NULL, in.MR, c->scale, c->alibi,
                            c->causal, c->q_len, c->offset, z);
      nk_ref_softmax_fwd(R, C, z, c->sink ? in.sinkd : NULL, c->log, c->masked_nan, yr, lr);
      if (R * C >= ((size_t)1 << 20)) {
        free(kz), free(kyr), free(klr);
        kz = nk_t_alloc(R * C * 8), kyr = nk_t_alloc(R * C * 8), klr = nk_t_alloc(R * 8);
        if (kz && kyr && klr) {
          memcpy(kz, z, R * C * 8), memcpy(kyr, yr, R * C * 8), memcpy(klr, lr, R * 8);
          key = k;
        }
      }
    }
  }
  for (size_t i = 0; i < R; i++) {
    double m = 0.0;
    for (size_t j = 0; j < C; j++)
      if (isfinite(yr[i * C + j])) m = fmax(m, fabs(yr[i * C + j]));
    if (c->sink && isfinite(lr[i])) m = fmax(m, exp(in.sinkd[i] - lr[i])); /* the sink's share */
    for (size_t j = 0; j < C; j++) {
      const double ref = yr[i * C + j], got = nk_t_get(y, i * S + j, c->dt);
      const double q = ratio_dt(got, ref, fwd_bound(c, ref, m, lr[i]), c->dt);
      if (q > worst_fwd && isfinite(q)) worst_fwd = q;
      NK_CHECK(q <= 1.0, "%s %s %s %s cols %zu: y[%zu][%zu] = %.9g ref %.9g (bound %.3g, z %.9g)",
               nk_softmax_algo_name(c->algo), nk_dtype_name(c->dt), c->log ? "log" : "softmax",
               cls_name[c->cls], C, i, j, got, ref, fwd_bound(c, ref, m, lr[i]), z[i * C + j]);
      if (isnan(ref))
        NK_CHECK(canonical_nan(y, i * S + j, c->dt), "y[%zu][%zu] not the canonical NaN", i, j);
      yd[i * C + j] = got;
    }
    const double ql = ratio(o.lse[i], lr[i], 2e-6 * fmax(1.0, isfinite(lr[i]) ? fabs(lr[i]) : 0));
    NK_CHECK(ql <= 1.0, "%s %s cols %zu: lse[%zu] = %.9g ref %.9g", nk_softmax_algo_name(c->algo),
             cls_name[c->cls], C, i, (double)o.lse[i], lr[i]);
    if (isnan(lr[i])) NK_CHECK(canonical_nan(o.lse, i, NK_DTYPE_F32), "lse[%zu] NaN bits", i);
    if (c->pad) {
      const unsigned char *p = (const unsigned char *)y + (i * S + C) * es;
      for (size_t k = 0; k < c->pad * es; k++)
        if (p[k] != (c->inplace == IP_YX ? 0x33 : 0x5A)) {
          NK_CHECK(0, "y padding of row %zu written", i);
          break;
        }
    }
    if (c->sink == SINK_ZERO && isfinite(lr[i])) { /* off by one: sum y = 1 - 1/(1 + sum e^z) */
      if (!c->log) {
        long double s = 0.0L, b = 0.0L;
        for (size_t j = 0; j < C; j++) {
          s += yd[i * C + j];
          b += fwd_bound(c, yr[i * C + j], m, lr[i]);
        }
        NK_CHECK(fabsl(s - (1.0L - expl(-(long double)lr[i]))) <= b + 1e-12,
                 "off by one: row %zu sums to %.9Lg, want %.9Lg", i, s,
                 1.0L - expl(-(long double)lr[i]));
      }
    }
  }
  if (c->no_bwd) goto done;

  /* ---- backward, from the op's own y ---- */
  void *dyb = in.dy, *dx = o.dx;
  void *ysave = NULL;
  if (c->inplace == IP_DXDY) { /* dx == dy */
    memcpy(o.dx, in.dy, R * S * es);
    dyb = dx = o.dx;
  } else if (c->inplace == IP_DXY) { /* dx == y */
    ysave = nk_t_alloc(R * S * es);
    memcpy(ysave, y, R * S * es);
    dx = y;
  }
  st = nk_softmax_bwd(c->ctx, &d, y, dyb, c->sink ? in.sink : NULL, c->sink ? o.lse : NULL, dx,
                      c->sink ? o.dsink : NULL);
  NK_CHECK(st == NK_STATUS_OK, "bwd status %s: %s", nk_status_string(st),
           nk_context_message(c->ctx));
  if (st != NK_STATUS_OK) {
    free(ysave);
    goto done;
  }
  if (dx != o.dx) { /* keep the results in o.dx, and y back in o.y */
    memcpy(o.dx, dx, R * S * es);
    memcpy(o.y, ysave, R * S * es);
    free(ysave);
  }
  nk_ref_softmax_bwd(R, C, yd, in.dyd, c->log, c->scale, dxr, dot);
  for (size_t i = 0; i < R; i++) {
    double gmax = 0.0, gsum = 0.0, ysum = 0.0;
    for (size_t j = 0; j < C; j++) {
      gmax = fmax(gmax, fabs(in.dyd[i * C + j]));
      gsum += fabs(in.dyd[i * C + j]);
      if (!c->log && isfinite(yd[i * C + j])) ysum += fabs(yd[i * C + j]);
    }
    const double sc = fabs(c->scale);
    for (size_t j = 0; j < C; j++) {
      const double ref = dxr[i * C + j], got = nk_t_get(o.dx, i * S + j, c->dt);
      const double yj = yd[i * C + j];
      double b = c->log ? 4e-6 * sc * (exp(yj) * gsum + fabs(in.dyd[i * C + j]))
                        : 4e-6 * sc * fabs(yj) * gmax * (1.0 + ysum);
      b += sc * 0x1p-140;
      if (c->dt != NK_DTYPE_F32) b += nk_t_ulp(ref, c->dt);
      const double q = ratio_dt(got, ref, b, c->dt);
      if (q > worst_bwd && isfinite(q)) worst_bwd = q;
      NK_CHECK(q <= 1.0, "%s %s %s %s cols %zu: dx[%zu][%zu] = %.9g ref %.9g (bound %.3g)",
               nk_softmax_algo_name(c->algo), nk_dtype_name(c->dt), c->log ? "log" : "softmax",
               cls_name[c->cls], C, i, j, got, ref, b);
      if (isnan(ref))
        NK_CHECK(canonical_nan(o.dx, i * S + j, c->dt), "dx[%zu][%zu] not the canonical NaN", i, j);
    }
    if (c->pad && c->inplace == IP_NONE) {
      const unsigned char *p = (const unsigned char *)o.dx + (i * S + C) * es;
      for (size_t k = 0; k < c->pad * es; k++)
        if (p[k] != 0x5A) {
          NK_CHECK(0, "dx padding of row %zu written", i);
          break;
        }
    }
    if (c->sink) {
      const double s = in.sinkd[i], l = o.lse[i];
      double p0 = exp(s - l);
      if (!isfinite(l)) p0 = NAN;
      const double want = -p0 * dot[i];
      const double T = c->log ? gsum : gmax * (1.0 + ysum);
      const double b = 4e-6 * p0 * fmax(1.0, fabs(s - l)) * T + 0x1p-140;
      if (isfinite(lr[i]) || isnan(lr[i])) {
        const double q = ratio(o.dsink[i], want, b);
        NK_CHECK(q <= 1.0, "%s %s cols %zu: dsink[%zu] = %.9g ref %.9g (bound %.3g)",
                 nk_softmax_algo_name(c->algo), c->log ? "log" : "softmax", C, i,
                 (double)o.dsink[i], want, b);
      }
    }
  }
  if (c->fd && c->dt == NK_DTYPE_F32 && c->inplace == IP_NONE)
    fd_check(c, &in, o.dx, c->sink ? o.dsink : NULL, o.lse);

done:
  free_inputs(&in);
  free(z), free(yr), free(lr), free(yd), free(dxr), free(dot);
  if (out)
    *out = o;
  else
    free_run(&o);
}

static const nk_softmax_algo algos[] = {NK_SOFTMAX_AUTO, NK_SOFTMAX_THREE_PASS_RELOAD,
                                        NK_SOFTMAX_THREE_PASS_RECOMPUTE, NK_SOFTMAX_TWO_PASS,
                                        NK_SOFTMAX_ONLINE};
#define NALGO 5
static const nk_dtype dts[] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};

NK_TEST(input_classes_every_algo_and_dtype) {
  for (int a = 0; a < NALGO; a++)
    for (int t = 0; t < 3; t++)
      for (int log = 0; log < 2; log++)
        for (int k = 0; k < C_COUNT; k++) {
          cfg c = base(dts[t], 6, 129, algos[a], log);
          c.cls = (enum cls)k;
          run_case(&c, NULL);
          if (k == C_MIXINF || k == C_ALLINF) { /* the PyTorch flag */
            c.masked_nan = 1;
            run_case(&c, NULL);
          }
        }
}

/* Every row length 1..300 (the SIMD tails and lane counts), two rows each. */
NK_TEST(cols_1_to_300) {
  for (size_t n = 1; n <= 300; n++)
    for (int a = 0; a < NALGO; a++)
      for (int t = 0; t < 3; t++)
        for (int log = 0; log < 2; log++) {
          cfg c = base(dts[t], 2, n, algos[a], log);
          c.cls = n % 3 == 0 ? C_NORMAL : n % 3 == 1 ? C_X10 : C_MIXINF;
          run_case(&c, NULL);
        }
}

NK_TEST(long_rows) {
  const size_t lens[] = {1000, 4096};
  for (int k = 0; k < 2; k++)
    for (int a = 0; a < NALGO; a++)
      for (int t = 0; t < 3; t++)
        for (int log = 0; log < 2; log++) {
          cfg c = base(dts[t], 3, lens[k], algos[a], log);
          c.cls = a % 2 ? C_X10 : C_NORMAL;
          run_case(&c, NULL);
        }
  /* one row of 2^20: every algorithm in f32, AUTO in bf16/f16 */
  for (int a = 0; a < NALGO; a++)
    for (int t = 0; t < 3; t++)
      for (int log = 0; log < 2; log++) {
        if (t > 0 && algos[a] != NK_SOFTMAX_AUTO) continue;
        cfg c = base(dts[t], 1, (size_t)1 << 20, algos[a], log);
        c.cls = C_X10;
        c.seed = 1 + (uint64_t)t; /* the same input for every algorithm (one reference) */
        run_case(&c, NULL);
      }
}

NK_TEST(finite_differences) {
  const size_t small[] = {1, 2, 5, 17, 64};
  for (int a = 0; a < NALGO; a++)
    for (int log = 0; log < 2; log++) {
      for (int k = 0; k < 5; k++) {
        cfg c = base(NK_DTYPE_F32, 2, small[k], algos[a], log);
        c.cls = C_GRID;
        c.fd = 1;
        c.scale = 0.75f;
        c.sink = k % 2 ? SINK_ROW : SINK_NONE;
        c.mask = k == 3 ? MASK_ROWS : MASK_NONE;
        c.alibi = k == 4 ? 0.125f : 0.0f;
        run_case(&c, NULL);
      }
      const size_t big[] = {1000, 4096};
      for (int k = 0; k < 2; k++) {
        cfg c = base(NK_DTYPE_F32, 2, big[k], algos[a], log);
        c.cls = C_GRID;
        c.fd = 1;
        c.sink = SINK_ROW;
        c.causal = k;
        c.offset = (ptrdiff_t)big[k] - 2;
        run_case(&c, NULL);
      }
    }
}

NK_TEST(single_column) {
  for (int a = 0; a < NALGO; a++)
    for (int t = 0; t < 3; t++)
      for (int log = 0; log < 2; log++) {
        cfg c = base(dts[t], 5, 1, algos[a], log);
        c.cls = C_X100;
        run c0;
        run_case(&c, &c0);
        /* exactly 1 / 0: the three-pass algorithms (and AUTO); two-pass and online carry
         * exp's rounding of the only term and are held to the bounds by run_case */
        const int exact = algos[a] == NK_SOFTMAX_AUTO ||
                          algos[a] == NK_SOFTMAX_THREE_PASS_RECOMPUTE ||
                          (algos[a] == NK_SOFTMAX_THREE_PASS_RELOAD && t == 0);
        if (c0.y && exact)
          for (size_t i = 0; i < 5; i++)
            NK_CHECK(nk_t_get(c0.y, i, c.dt) == (log ? 0.0 : 1.0), "%s %s %s cols 1: y[%zu] = %.9g",
                     nk_softmax_algo_name(algos[a]), nk_dtype_name(dts[t]),
                     log ? "log_softmax" : "softmax", i, nk_t_get(c0.y, i, c.dt));
        free_run(&c0);
        c.sink = SINK_ROW;
        run_case(&c, NULL);
      }
}

/* Fully masked rows: all -inf from x, from a mask, from causality with a negative offset. */
NK_TEST(fully_masked_rows) {
  for (int a = 0; a < NALGO; a++)
    for (int t = 0; t < 3; t++)
      for (int log = 0; log < 2; log++)
        for (int nan = 0; nan < 2; nan++) {
          if (algos[a] == NK_SOFTMAX_THREE_PASS_RELOAD && t > 0) continue;
          cfg c = base(dts[t], 4, 33, algos[a], log);
          c.cls = C_ALLINF;
          c.masked_nan = nan;
          run r0;
          run_case(&c, &r0); /* checks y = 0 / -inf / NaN, lse, and dx = 0 (or NaN) */
          if (r0.y)
            for (size_t k = 0; k < 4 * 33; k++) {
              const double y = nk_t_get(r0.y, k, c.dt), dx = nk_t_get(r0.dx, k, c.dt);
              NK_CHECK(nan ? isnan(y) : y == (log ? -INFINITY : 0.0), "masked y %.9g", y);
              NK_CHECK(nan ? isnan(dx) : dx == 0.0, "masked dx %.9g", dx);
            }
          free_run(&r0);
          /* causal with a negative offset: query 0 sees no key */
          c.cls = C_NORMAL;
          c.causal = 1;
          c.offset = -1;
          c.q_len = 2;
          run_case(&c, NULL);
          /* a sink keeps a masked row defined: y = 0, lse = s */
          c.sink = SINK_ROW;
          run_case(&c, NULL);
        }
  /* log backward from a row of -inf with MASKED_NAN: NaN (header: "NaN with MASKED_NAN") */
  float y[8], dy[8], dx[8];
  for (int k = 0; k < 8; k++) y[k] = -INFINITY, dy[k] = 1.0f, dx[k] = 7.0f;
  nk_softmax_desc d = nk_softmax_desc_dense(1, 8, NK_DTYPE_F32);
  d.flags = NK_SOFTMAX_LOG;
  NK_CHECK(nk_softmax_bwd(g_ctx, &d, y, dy, NULL, NULL, dx, NULL) == NK_STATUS_OK, "bwd");
  for (int k = 0; k < 8; k++) NK_CHECK(dx[k] == 0.0f, "log bwd of a masked row: %g", dx[k]);
  /* with MASKED_NAN the forward wrote NaN into such a row (normkit.h), and its backward is NaN */
  d.flags = NK_SOFTMAX_LOG | NK_SOFTMAX_MASKED_NAN;
  for (int k = 0; k < 8; k++) y[k] = NAN;
  NK_CHECK(nk_softmax_bwd(g_ctx, &d, y, dy, NULL, NULL, dx, NULL) == NK_STATUS_OK, "bwd");
  for (int k = 0; k < 8; k++) NK_CHECK(isnan(dx[k]), "log bwd, masked row, MASKED_NAN: %g", dx[k]);
}

/* A NaN or +inf in one row makes that row NaN and leaves every other row bit-identical. */
NK_TEST(nan_and_inf_rows_are_isolated) {
  const double bad[] = {NAN, INFINITY};
  for (int a = 0; a < NALGO; a++)
    for (int t = 0; t < 3; t++)
      for (int log = 0; log < 2; log++)
        for (int b = 0; b < 2; b++) {
          if (algos[a] == NK_SOFTMAX_THREE_PASS_RELOAD && t > 0) continue;
          const size_t R = 5, C = 70, es = nk_dtype_size(dts[t]);
          nk_softmax_desc d = nk_softmax_desc_dense(R, C, dts[t]);
          d.algo = algos[a];
          d.flags = log ? NK_SOFTMAX_LOG : 0;
          void *x = nk_t_alloc(R * C * es), *y0 = nk_t_alloc(R * C * es);
          void *y1 = nk_t_alloc(R * C * es), *dy = nk_t_alloc(R * C * es);
          void *dx0 = nk_t_alloc(R * C * es), *dx1 = nk_t_alloc(R * C * es);
          float l0[5], l1[5];
          nk_rng rng = {(uint64_t)(a * 100 + t * 10 + log * 2 + b + 1)};
          for (size_t k = 0; k < R * C; k++) {
            nk_t_set(x, k, 4.0 * nk_rng_normal(&rng), dts[t]);
            nk_t_set(dy, k, nk_rng_normal(&rng), dts[t]);
          }
          NK_CHECK(nk_softmax_fwd(g_ctx, &d, x, NULL, NULL, y0, l0) == 0, "clean fwd");
          NK_CHECK(nk_softmax_bwd(g_ctx, &d, y0, dy, NULL, NULL, dx0, NULL) == 0, "clean bwd");
          nk_t_set(x, 2 * C + 17, bad[b], dts[t]);
          NK_CHECK(nk_softmax_fwd(g_ctx, &d, x, NULL, NULL, y1, l1) == 0, "fwd");
          NK_CHECK(nk_softmax_bwd(g_ctx, &d, y1, dy, NULL, NULL, dx1, NULL) == 0, "bwd");
          for (size_t i = 0; i < R; i++) {
            if (i == 2) {
              for (size_t j = 0; j < C; j++) {
                NK_CHECK(canonical_nan(y1, i * C + j, dts[t]), "%s %s: bad row y[%zu] not NaN",
                         nk_softmax_algo_name(algos[a]), nk_dtype_name(dts[t]), j);
                NK_CHECK(isnan(nk_t_get(dx1, i * C + j, dts[t])), "bad row dx[%zu] not NaN", j);
              }
              NK_CHECK(canonical_nan(l1, i, NK_DTYPE_F32), "bad row lse not NaN");
            } else {
              NK_CHECK(memcmp((char *)y0 + i * C * es, (char *)y1 + i * C * es, C * es) == 0 &&
                           memcmp(&l0[i], &l1[i], 4) == 0,
                       "%s %s: row %zu changed by a bad value in row 2",
                       nk_softmax_algo_name(algos[a]), nk_dtype_name(dts[t]), i);
              NK_CHECK(memcmp((char *)dx0 + i * C * es, (char *)dx1 + i * C * es, C * es) == 0,
                       "row %zu dx changed", i);
            }
          }
          /* a NaN or +inf sink poisons its row only */
          float sink[5] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
          sink[3] = (float)bad[b];
          nk_t_set(x, 2 * C + 17, 1.0, dts[t]);
          NK_CHECK(nk_softmax_fwd(g_ctx, &d, x, NULL, sink, y1, l1) == 0, "fwd");
          for (size_t j = 0; j < C; j++)
            NK_CHECK(canonical_nan(y1, 3 * C + j, dts[t]), "bad sink: y[3][%zu] not NaN", j);
          NK_CHECK(isnan(l1[3]) && !isnan(l1[2]) && !isnan(nk_t_get(y1, 0, dts[t])), "bad sink");
          free(x), free(y0), free(y1), free(dy), free(dx0), free(dx1);
        }
}

NK_TEST(attention_options) {
  const nk_dtype mdts[] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};
  const ptrdiff_t offsets[] = {0, 5, -2};
  int n = 0;
  for (int a = 0; a < NALGO; a++)
    for (int t = 0; t < 3; t++)
      for (int log = 0; log < 2; log++) {
        if (algos[a] == NK_SOFTMAX_THREE_PASS_RELOAD && t > 0) continue;
        for (int mask = MASK_NONE; mask <= MASK_QLEN; mask++)
          for (int sink = SINK_NONE; sink <= SINK_ZERO; sink++) {
            n++;
            cfg c = base(dts[t], 12, 40 + (size_t)(n % 7), algos[a], log);
            c.mask = mask;
            c.mdt = mdts[n % 3];
            c.sink = sink;
            c.q_len = 4;
            c.heads = 3; /* rows = 1 batch x 3 heads x 4 queries */
            c.scale = n % 2 ? 0.125f : -0.5f;
            c.alibi = n % 3 ? 0.0f : 0.0625f;
            c.causal = n % 4 != 0;
            c.offset = offsets[n % 3];
            c.cls = n % 5 == 0 ? C_X10 : C_NORMAL;
            run_case(&c, NULL);
          }
      }
  /* q_len 0 (= rows) with a per-row sink, mask rows = rows, causal positions up to rows */
  for (int log = 0; log < 2; log++) {
    cfg c = base(NK_DTYPE_F32, 9, 9, NK_SOFTMAX_AUTO, log);
    c.causal = 1;
    c.mask = MASK_ROWS;
    c.sink = SINK_ZERO;
    run_case(&c, NULL);
  }
}

NK_TEST(strides_and_inplace) {
  for (int a = 0; a < NALGO; a++)
    for (int t = 0; t < 3; t++)
      for (int log = 0; log < 2; log++)
        for (int ip = IP_NONE; ip <= IP_DXY; ip++) {
          cfg c = base(dts[t], 7, 45, algos[a], log);
          c.pad = 5;
          c.inplace = ip;
          c.mask = MASK_BCAST;
          c.sink = ip == IP_DXY ? SINK_ROW : SINK_NONE;
          run_case(&c, NULL);
          /* the same results, bit for bit, as the out-of-place run */
          if (ip != IP_NONE && !(algos[a] == NK_SOFTMAX_THREE_PASS_RELOAD && t > 0)) {
            run r0, r1;
            c.inplace = IP_NONE;
            run_case(&c, &r0);
            c.inplace = ip;
            run_case(&c, &r1);
            const size_t es = nk_dtype_size(c.dt);
            if (r0.y && r1.y)
              for (size_t i = 0; i < c.rows; i++) {
                NK_CHECK(memcmp((char *)r0.y + i * r0.S * es, (char *)r1.y + i * r1.S * es,
                                c.cols * es) == 0,
                         "in-place mode %d y row %zu differs", ip, i);
                NK_CHECK(memcmp((char *)r0.dx + i * r0.S * es, (char *)r1.dx + i * r1.S * es,
                                c.cols * es) == 0,
                         "in-place mode %d dx row %zu differs", ip, i);
              }
            free_run(&r0), free_run(&r1);
          }
        }
}

/* nk_softmax_fwd_rows / bwd_rows over a split of the rows give the full call's bits. */
NK_TEST(row_range_entry_points) {
  for (int a = 0; a < NALGO; a++)
    for (int t = 0; t < 3; t++)
      for (int log = 0; log < 2; log++) {
        if (algos[a] == NK_SOFTMAX_THREE_PASS_RELOAD && t > 0) continue;
        const size_t R = 11, C = 300, S = 303, es = nk_dtype_size(dts[t]);
        nk_softmax_desc d = nk_softmax_desc_dense(R, C, dts[t]);
        d.algo = algos[a];
        d.flags = (log ? NK_SOFTMAX_LOG : 0) | NK_SOFTMAX_CAUSAL;
        d.causal_offset = 250;
        d.x_stride = d.y_stride = d.dy_stride = d.dx_stride = (ptrdiff_t)S;
        d.scale = 0.3f;
        void *x = nk_t_alloc(R * S * es), *dy = nk_t_alloc(R * S * es);
        void *y0 = nk_t_alloc(R * S * es), *y1 = nk_t_alloc(R * S * es);
        void *dx0 = nk_t_alloc(R * S * es), *dx1 = nk_t_alloc(R * S * es);
        float sink[11], l0[11], l1[11], ds0[11], ds1[11];
        nk_rng rng = {(uint64_t)(a * 7 + t * 3 + log + 5)};
        for (size_t k = 0; k < R * S; k++) {
          nk_t_set(x, k, 5.0 * nk_rng_normal(&rng), dts[t]);
          nk_t_set(dy, k, nk_rng_normal(&rng), dts[t]);
        }
        for (size_t i = 0; i < R; i++) sink[i] = (float)nk_rng_normal(&rng);
        NK_CHECK(nk_softmax_fwd(g_ctx, &d, x, NULL, sink, y0, l0) == 0, "fwd");
        NK_CHECK(nk_softmax_bwd(g_ctx, &d, y0, dy, sink, l0, dx0, ds0) == 0, "bwd");
        const size_t cuts[] = {0, 1, 4, 4, 10, 11};
        for (int k = 0; k + 1 < 6; k++) {
          NK_CHECK(nk_softmax_fwd_rows(g_ctx, &d, cuts[k], cuts[k + 1], x, NULL, sink, y1, l1) == 0,
                   "fwd_rows %s", nk_context_message(g_ctx));
        }
        for (int k = 5; k > 0; k--) /* in reverse order, for good measure */
          NK_CHECK(
              nk_softmax_bwd_rows(g_ctx, &d, cuts[k - 1], cuts[k], y1, dy, sink, l1, dx1, ds1) == 0,
              "bwd_rows %s", nk_context_message(g_ctx));
        for (size_t i = 0; i < R; i++) {
          NK_CHECK(memcmp((char *)y0 + i * S * es, (char *)y1 + i * S * es, C * es) == 0,
                   "%s %s: fwd_rows row %zu differs", nk_softmax_algo_name(algos[a]),
                   nk_dtype_name(dts[t]), i);
          NK_CHECK(memcmp((char *)dx0 + i * S * es, (char *)dx1 + i * S * es, C * es) == 0,
                   "bwd_rows row %zu differs", i);
          NK_CHECK(memcmp(&l0[i], &l1[i], 4) == 0 && memcmp(&ds0[i], &ds1[i], 4) == 0,
                   "lse/dsink row %zu differ", i);
        }
        free(x), free(dy), free(y0), free(y1), free(dx0), free(dx1);
      }
}

/* Sigmoid attention scores: element-wise bounds (see the top of the file). */
NK_TEST(sigmoid_attention) {
  for (int t = 0; t < 3; t++)
    for (int k = 0; k < 6; k++) {
      const nk_dtype dt = dts[t];
      const size_t R = 8, C = 37 + (size_t)k * 50, S = C + 3, es = nk_dtype_size(dt);
      nk_softmax_desc d = nk_softmax_desc_dense(R, C, dt);
      d.scale = k % 2 ? 0.25f : 1.0f;
      d.flags = k % 3 ? NK_SOFTMAX_CAUSAL : 0;
      d.causal_offset = k == 4 ? -1 : (ptrdiff_t)C - 4;
      d.q_len = 4;
      d.alibi = k == 5 ? 0.5f : 0.0f;
      d.mask_rows = k >= 3 ? 1 : R;
      d.mask_dtype = dts[(t + k) % 3];
      d.mask_stride = (ptrdiff_t)C;
      d.x_stride = d.y_stride = d.dy_stride = d.dx_stride = (ptrdiff_t)S;
      const size_t MR = d.mask_rows, mes = nk_dtype_size(d.mask_dtype);
      void *x = nk_t_alloc(R * S * es), *y = nk_t_alloc(R * S * es), *dy = nk_t_alloc(R * S * es);
      void *dx = nk_t_alloc(R * S * es), *mask = nk_t_alloc(MR * C * mes);
      float *xf = nk_t_alloc(R * C * 4), *mf = nk_t_alloc(MR * C * 4);
      double *z = nk_t_alloc(R * C * 8), *yr = nk_t_alloc(R * C * 8), *yd = nk_t_alloc(R * C * 8);
      double *dyd = nk_t_alloc(R * C * 8), *dxr = nk_t_alloc(R * C * 8);
      memset(y, 0x5A, R * S * es);
      memset(dx, 0x5A, R * S * es);
      nk_rng rng = {(uint64_t)(t * 10 + k + 1)};
      for (size_t i = 0; i < R; i++)
        for (size_t j = 0; j < C; j++) {
          double v = (k == 2 ? 40.0 : 4.0) * nk_rng_normal(&rng);
          if (nk_rng_u64(&rng) % 29 == 0) v = -INFINITY;
          if (nk_rng_u64(&rng) % 31 == 0) v = (nk_rng_u64(&rng) & 1) ? 88.72284 : -104.0;
          nk_t_set(x, i * S + j, v, dt);
          xf[i * C + j] = (float)nk_t_get(x, i * S + j, dt);
          nk_t_set(dy, i * S + j, nk_rng_normal(&rng), dt);
          dyd[i * C + j] = nk_t_get(dy, i * S + j, dt);
        }
      for (size_t k2 = 0; k2 < MR * C; k2++) {
        nk_t_set(mask, k2, nk_rng_u64(&rng) % 7 == 0 ? -INFINITY : nk_rng_normal(&rng),
                 d.mask_dtype);
        mf[k2] = (float)nk_t_get(mask, k2, d.mask_dtype);
      }
      NK_CHECK(nk_sigmoid_attn_fwd(g_ctx, &d, x, mask, y) == 0, "sigmoid fwd: %s",
               nk_context_message(g_ctx));
      NK_CHECK(nk_sigmoid_attn_bwd(g_ctx, &d, y, dy, dx) == 0, "sigmoid bwd: %s",
               nk_context_message(g_ctx));
      nk_ref_softmax_logits(R, C, xf, mask ? mf : NULL, MR, d.scale, d.alibi,
                            (d.flags & NK_SOFTMAX_CAUSAL) != 0, d.q_len, d.causal_offset, z);
      nk_ref_sigmoid_fwd(R * C, z, yr);
      for (size_t i = 0; i < R; i++)
        for (size_t j = 0; j < C; j++) yd[i * C + j] = nk_t_get(y, i * S + j, dt);
      nk_ref_sigmoid_bwd(R * C, yd, dyd, d.scale, dxr);
      for (size_t i = 0; i < R; i++) {
        for (size_t j = 0; j < C; j++) {
          const double ref = yr[i * C + j], got = yd[i * C + j];
          const double b =
              dt == NK_DTYPE_F32 ? 4 * nk_t_ulp(ref, dt) + 0x1p-149 : nk_t_ulp(ref, dt);
          NK_CHECK(ratio(got, ref, b) <= 1.0, "sigmoid %s y[%zu][%zu] = %.9g ref %.9g (z %.9g)",
                   nk_dtype_name(dt), i, j, got, ref, z[i * C + j]);
          const double dref = dxr[i * C + j], dgot = nk_t_get(dx, i * S + j, dt);
          const double db = dt == NK_DTYPE_F32 ? 4 * nk_t_ulp(dref, dt) + fabs(d.scale) * 0x1p-140
                                               : nk_t_ulp(dref, dt);
          NK_CHECK(ratio(dgot, dref, db) <= 1.0, "sigmoid %s dx[%zu][%zu] = %.9g ref %.9g",
                   nk_dtype_name(dt), i, j, dgot, dref);
        }
        const unsigned char *p = (const unsigned char *)y + (i * S + C) * es;
        const unsigned char *q = (const unsigned char *)dx + (i * S + C) * es;
        for (size_t b = 0; b < 3 * es; b++)
          NK_CHECK(p[b] == 0x5A && q[b] == 0x5A, "sigmoid padding of row %zu written", i);
      }
      /* in place: y == x, dx == dy, dx == y give the same bits */
      void *x2 = nk_t_alloc(R * S * es), *dy2 = nk_t_alloc(R * S * es);
      memcpy(x2, x, R * S * es);
      memcpy(dy2, dy, R * S * es);
      NK_CHECK(nk_sigmoid_attn_fwd(g_ctx, &d, x2, mask, x2) == 0, "in place fwd");
      NK_CHECK(nk_sigmoid_attn_bwd(g_ctx, &d, x2, dy2, dy2) == 0, "dx == dy");
      NK_CHECK(nk_sigmoid_attn_bwd(g_ctx, &d, x2, dy, x2) == 0, "dx == y");
      for (size_t i = 0; i < R; i++) {
        NK_CHECK(memcmp((char *)dy2 + i * S * es, (char *)dx + i * S * es, C * es) == 0,
                 "sigmoid dx == dy row %zu", i);
        NK_CHECK(memcmp((char *)x2 + i * S * es, (char *)dx + i * S * es, C * es) == 0,
                 "sigmoid dx == y row %zu", i);
      }
      free(x2), free(dy2);
      free(x), free(y), free(dy), free(dx), free(mask), free(xf), free(mf), free(z), free(yr);
      free(yd), free(dyd), free(dxr);
    }
}

#include <time.h>
int main(void) {
  if (nk_context_create(&g_ctx) != NK_STATUS_OK) return 1;
  NK_RUN_TIMED(input_classes_every_algo_and_dtype);
  NK_RUN_TIMED(cols_1_to_300);
  NK_RUN_TIMED(long_rows);
  NK_RUN_TIMED(finite_differences);
  NK_RUN_TIMED(single_column);
  NK_RUN_TIMED(fully_masked_rows);
  NK_RUN_TIMED(nan_and_inf_rows_are_isolated);
  NK_RUN_TIMED(attention_options);
  NK_RUN_TIMED(strides_and_inplace);
  NK_RUN_TIMED(row_range_entry_points);
  NK_RUN_TIMED(sigmoid_attention);
  printf("worst error / bound: forward %.3f, backward %.3f\n", worst_fwd, worst_bwd);
  nk_context_destroy(g_ctx);
  return nk_test_summary();
}
