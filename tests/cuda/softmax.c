/*
 * tests/cuda/softmax.c — the CUDA softmax / log_softmax (forward, backward, attention options)
 * and the fused cross-entropy (normkit_cuda.h) against the float64 references
 * (src/reference/softmax.c), on fresh random data every run (the seed is printed; NK_TEST_SEED
 * repeats a run). Without a CUDA device it prints why and exits 77 (skipped).
 *
 * Every case: inputs on the device, outputs poisoned (0xFF: cuda_util.h), the call, a stream
 * synchronisation and cudaGetLastError; the same call again on re-poisoned outputs must give the
 * same bytes; every element written, the padding between rows not; then the comparison with the
 * reference on every row, or on rows spread over the tensor when it is larger than 2^19
 * elements (about 2^18 elements, at least 3 rows: the float64 reference's long double
 * exponentials are the slow part of the run).
 *
 * The reference is evaluated on the logits the API defines (nk_ref_softmax_logits: x as stored
 * in its dtype, then scale, mask, ALiBi each rounded to f32, causal -inf), one row at a time
 * (row i's mask row i % mask_rows and position causal_offset + i % q_len passed for that row).
 * Where causality masks a logit, x holds NaN: normkit.h says those x are not read.
 *
 * Forward bounds (normkit.h "Softmax, log-softmax, ..."; the CPU test tests/ops/softmax.c):
 *   f32 softmax        2e-6 * max|ref| of the row (with a sink, the max includes e^{s - lse})
 *                      + 2^-148 (outputs in the f32 subnormals)
 *   f32 log_softmax    2e-6 * max(1, |lse|) + 1 ulp_f32(ref)
 *   bf16/f16 softmax   1 ulp(ref) of the dtype
 *   bf16/f16 log       1 ulp(ref) + 2e-6 * max(1, |lse|): the bound normkit.h gives the online
 *                      algorithm, which normkit_cuda.h says the kernels use for rows that do not
 *                      fit in shared memory (AUTO's 1-ulp bound needs an exact maximum term)
 *   lse                2e-6 * max(1, |lse|)
 *   exact: a -inf logit gives y = 0 (log: -inf) in a row that is not NaN; cols == 1 without a
 *   sink gives y = 1 (log: 0); NaN/+inf logit or sink: the whole row NaN (and lse).
 * Backward bounds (against nk_ref_softmax_bwd on the operator's own y; derivation in
 * tests/ops/softmax.c):
 *   softmax  |dx - ref| <= 4e-6 |scale| |y_j| max|dy| (1 + sum|y|) + |scale| 2^-140
 *   log      |dx - ref| <= 4e-6 |scale| (e^{y_j} sum|dy| + |dy_j|) + |scale| 2^-140
 *   (+ 1 ulp(ref) for bf16/f16); a fully masked row (softmax: y all 0; log: y all -inf): dx = 0.
 *   dsink = -p0 * dot, p0 = e^{s - lse} with the operator's lse:
 *            4e-6 p0 max(1, |s - lse|) T + 2^-140, T = max|dy| (1 + sum|y|) or sum|dy| (log).
 * Cross-entropy (nk_ref_cross_entropy per row, with grad * w, w = 1 or 1 / counted rows):
 *   lse      2e-6 * max(1, |L|)
 *   loss_i   B_i + 1 ulp_f32, B_i = 4e-6 max(1, |L_i|) (1 + 2 zl |L_i|) + 2e-6 ls mean|z_i|: the
 *            loss is formed from L (whose bound is the lse bound, doubled for the f32 steps
 *            around it) and, with smoothing, the row's mean logit
 *   sum/mean w * sum of B_i + 1 ulp_f32 (the sums are in double, normkit_cuda.h)
 *   dlogits  |c| (r_j p_j (1 + 2 zl |L|) + 3e-6 (ls / n + (1 - ls) [j == t]))
 *            + |c| (1 + 2 zl |L|) 2^-147 (+ 1 ulp(ref) for bf16/f16), c = grad * w,
 *            p_j = e^{z_j - L}, r_j = 4e-6 + 2^-23 (|z_j - L| + |L| + log n): the f32 exponential's
 *            argument is rounded, relative 2^-24 of its size (tests/ops/cross_entropy.c has 3e-6
 *            for the CPU, whose argument reduction is exact)
 *   ignored rows: loss 0 and dlogits 0 exactly; a target outside [0, cols) that is not
 *   ignore_index: that row's loss and dlogits NaN, and so the sum or mean (normkit_cuda.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "cuda_util.h"

#define FULL_CHECK ((size_t)1 << 19)  /* compare every row up to this size */
#define CHECK_ELEMS ((size_t)1 << 18) /* else about this many elements, 3 to 4096 rows */

static const nk_dtype dts[3] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};

/* ============================ softmax / log_softmax ============================================
 */

enum { MASK_NONE, MASK_ROWS, MASK_BCAST, MASK_QLEN };
enum { SINK_NONE, SINK_ROW, SINK_HEAD, SINK_ZERO };
enum { X_NORMAL, X_WIDE, X_HUGE, X_MIXINF };
static const char *const mask_name[] = {"", "mask(rows)", "mask(bcast)", "mask(q_len)"};
static const char *const sink_name[] = {"", "sink(row)", "sink(head)", "sink(0)"};
static const char *const x_name[] = {"", "x*30", "huge(3e38)", "mixed -inf"};

typedef struct scfg {
  int log;
  nk_dtype dt, mdt;
  size_t rows, cols, pad;
  float scale, alibi;
  int causal;
  size_t q_len, heads; /* 0: rows, 1 */
  ptrdiff_t offset;
  int mask, mask_stride0;       /* MASK_*; broadcast mask passed with mask_stride 0 ("ignored") */
  int sink, masked_nan, no_lse; /* no_lse: lse not requested (never with a sink) */
  int xin;                      /* X_* */
  int masked_rows; /* x of rows 0 and rows-1 all -inf; with MASK_ROWS mask row 2 all -inf */
  int bad_rows;    /* NaN in row 1, +inf in row 3; with a per-row sink, sink[2] = +inf */
  int inplace;     /* then also y == x, dx == dy and dx == y, bit-compared */
} scfg;

static scfg sbase(int log, nk_dtype dt, size_t rows, size_t cols) {
  scfg c;
  memset(&c, 0, sizeof c);
  c.log = log;
  c.dt = dt;
  c.mdt = NK_DTYPE_F32;
  c.rows = rows;
  c.cols = cols;
  c.scale = 1.0f;
  return c;
}

static size_t q_len_of(const scfg *c) { return c->q_len ? c->q_len : c->rows; }
static size_t mask_rows_of(const scfg *c) {
  return c->mask == MASK_ROWS    ? c->rows
         : c->mask == MASK_BCAST ? 1
         : c->mask == MASK_QLEN  ? q_len_of(c)
                                 : 0;
}
/* The query position of row i. */
static ptrdiff_t pos_of(const scfg *c, size_t i) {
  return c->offset + (ptrdiff_t)(i % q_len_of(c));
}
static int causal_masked(const scfg *c, size_t i, size_t j) {
  return c->causal && (ptrdiff_t)j > pos_of(c, i);
}

typedef struct sstrides {
  size_t x, y, dy, dx, mask;
} sstrides;

static sstrides sstrides_of(const scfg *c) {
  const size_t C = c->cols, p = c->pad;
  sstrides s = {C, C, C, C, C};
  if (p) s.x = C + p, s.y = C + p + 1, s.dy = C + p + 2, s.dx = C + 2 * p, s.mask = C + p + 3;
  if (c->inplace) s.y = s.dy = s.dx = s.x; /* y == x, dx == dy, dx == y need equal strides */
  return s;
}

typedef struct sbufs {
  sstrides s;
  size_t mr, nsink;
  cu_buf x, y, dy, dx, mask, sink, lse, dsink;
  nk_softmax_desc d;
} sbufs;

static int run_sfwd(const scfg *c, const sbufs *B, const void *x, void *y) {
  /* y == x in place: y holds the input, not poisoned */
  if ((y == B->y.d && x != y && !cu_poison(&B->y)) || !cu_poison(&B->lse)) return 0;
  const nk_status st = nk_cuda_softmax_fwd(NULL, &B->d, x, c->mask ? B->mask.d : NULL,
                                           c->sink ? (const float *)B->sink.d : NULL, y,
                                           c->no_lse ? NULL : (float *)B->lse.d);
  return CU_STATUS(st, NK_STATUS_OK, "nk_cuda_softmax_fwd") && CU_SYNC("softmax forward");
}

static int run_sbwd(const scfg *c, const sbufs *B, const void *y, const void *dy, void *dx) {
  if ((dx == B->dx.d && dy != B->dx.d && !cu_poison(&B->dx)) || !cu_poison(&B->dsink)) return 0;
  const nk_status st = nk_cuda_softmax_bwd(
      NULL, &B->d, y, dy, c->sink ? (const float *)B->sink.d : NULL,
      c->sink ? (const float *)B->lse.d : NULL, dx, c->sink ? (float *)B->dsink.d : NULL);
  return CU_STATUS(st, NK_STATUS_OK, "nk_cuda_softmax_bwd") && CU_SYNC("softmax backward");
}

static double sfwd_bound(const scfg *c, double ref, double rowmax, double lse) {
  const double lb = 2e-6 * fmax(1.0, isfinite(lse) ? fabs(lse) : 0.0);
  if (c->dt != NK_DTYPE_F32) return nk_t_ulp(ref, c->dt) + (c->log ? lb : 0.0);
  if (c->log) return lb + nk_t_ulp(ref, NK_DTYPE_F32);
  return 2e-6 * rowmax + 0x1p-148;
}

static double sample_x(const scfg *c, nk_rng *rng) {
  switch (c->xin) {
    case X_WIDE: return 30.0 * cu_normal(rng);
    case X_HUGE: return (c->dt == NK_DTYPE_F16 ? 6e4 : 3e38) * cu_sym(rng);
    case X_MIXINF: return nk_rng_u64(rng) % 3 == 0 ? -INFINITY : 3.0 * cu_normal(rng);
    default: return 3.0 * cu_normal(rng);
  }
}

static void softmax_body(const scfg *c) {
  const size_t R = c->rows, C = c->cols, es = nk_dtype_size(c->dt), mes = nk_dtype_size(c->mdt);
  const nk_dtype dt = c->dt;
  const size_t qlen = q_len_of(c), heads = c->heads ? c->heads : 1;
  nk_rng rng = cu_case_rng();
  sbufs B;
  memset(&B, 0, sizeof B);
  B.s = sstrides_of(c);
  const sstrides S = B.s;
  B.mr = mask_rows_of(c);
  B.nsink = c->sink == SINK_HEAD ? heads : R;
  if (!cu_buf_alloc(&B.x, cu_extent(R, C, S.x) * es) ||
      !cu_buf_alloc(&B.y, cu_extent(R, C, S.y) * es) ||
      !cu_buf_alloc(&B.dy, cu_extent(R, C, S.dy) * es) ||
      !cu_buf_alloc(&B.dx, cu_extent(R, C, S.dx) * es) ||
      !cu_buf_alloc(&B.mask, (B.mr ? cu_extent(B.mr, C, B.mr == 1 ? C : S.mask) : 1) * mes) ||
      !cu_buf_alloc(&B.sink, B.nsink * 4) || !cu_buf_alloc(&B.lse, R * 4) ||
      !cu_buf_alloc(&B.dsink, R * 4))
    return;
  const size_t MS = B.mr == 1 ? C : S.mask; /* where mask row k starts: k * MS */

  /* inputs */
  for (size_t i = 0; i < R; i++)
    for (size_t j = 0; j < C; j++) {
      const int dead = (c->masked_rows && (i == 0 || i == R - 1)) || causal_masked(c, i, j);
      /* causally masked logits are NaN: they must not be read */
      nk_t_set(B.x.h, i * S.x + j,
               causal_masked(c, i, j) ? NAN
               : dead                 ? -INFINITY
                                      : sample_x(c, &rng),
               dt);
      nk_t_set(B.dy.h, i * S.dy + j, cu_normal(&rng), dt);
    }
  if (c->bad_rows && R >= 4) {
    nk_t_set(B.x.h, 1 * S.x + C / 2, NAN, dt);
    nk_t_set(B.x.h, 3 * S.x + 0, INFINITY, dt);
  }
  for (size_t k = 0; k < B.mr; k++)
    for (size_t j = 0; j < C; j++) {
      double v = 0.5 * cu_normal(&rng);
      if (nk_rng_u64(&rng) % 5 == 0 || (c->masked_rows && c->mask == MASK_ROWS && k == 2))
        v = -INFINITY;
      nk_t_set(B.mask.h, k * MS + j, v, c->mdt);
    }
  for (size_t k = 0; k < B.nsink; k++)
    ((float *)B.sink.h)[k] = c->sink == SINK_ZERO ? 0.0f : (float)(1.5 * cu_normal(&rng));
  if (c->bad_rows && c->sink == SINK_ROW && R > 2) ((float *)B.sink.h)[2] = INFINITY;
  if (!cu_up(&B.x) || !cu_up(&B.dy) || !cu_up(&B.mask) || !cu_up(&B.sink)) return;

  B.d = nk_softmax_desc_dense(R, C, dt);
  B.d.mask_dtype = c->mdt;
  B.d.scale = c->scale;
  B.d.alibi = c->alibi;
  B.d.flags = (c->log ? NK_SOFTMAX_LOG : 0u) | (c->causal ? NK_SOFTMAX_CAUSAL : 0u) |
              (c->masked_nan ? NK_SOFTMAX_MASKED_NAN : 0u) |
              (c->sink == SINK_HEAD ? NK_SOFTMAX_SINK_PER_HEAD : 0u);
  B.d.q_len = c->q_len;
  B.d.heads = c->heads;
  B.d.causal_offset = c->offset;
  B.d.mask_rows = c->mask == MASK_ROWS ? 0 : B.mr; /* 0 means rows */
  B.d.mask_stride = (ptrdiff_t)(B.mr == 1 ? (c->mask_stride0 ? 0 : C) : S.mask);
  B.d.x_stride = (ptrdiff_t)S.x, B.d.y_stride = (ptrdiff_t)S.y;
  B.d.dy_stride = (ptrdiff_t)S.dy, B.d.dx_stride = (ptrdiff_t)S.dx;

  /* ---- forward and backward, twice each ---- */
  if (!run_sfwd(c, &B, B.x.d, B.y.d) || !cu_down(&B.y) || !cu_down(&B.lse)) return;
  if (!run_sfwd(c, &B, B.x.d, B.y.d)) return;
  cu_same_as_mirror(&B.y, "y");
  if (!c->no_lse) cu_same_as_mirror(&B.lse, "lse");
  if (!run_sbwd(c, &B, B.y.d, B.dy.d, B.dx.d) || !cu_down(&B.dx) || !cu_down(&B.dsink)) return;
  if (!run_sbwd(c, &B, B.y.d, B.dy.d, B.dx.d)) return;
  cu_same_as_mirror(&B.dx, "dx");
  if (c->sink) cu_same_as_mirror(&B.dsink, "dsink");
  CU_WRITTEN(B.y.h, R, C, S.y, dt, "y");
  CU_WRITTEN(B.dx.h, R, C, S.dx, dt, "dx");
  if (!c->no_lse) CU_WRITTEN(B.lse.h, 1, R, R, NK_DTYPE_F32, "lse");
  if (c->no_lse) CU_UNTOUCHED(&B.lse, "lse (not requested)");
  if (c->sink) CU_WRITTEN(B.dsink.h, 1, R, R, NK_DTYPE_F32, "dsink");
  cu_same_as_mirror(&B.x, "x (an input)");
  cu_same_as_mirror(&B.dy, "dy (an input)");
  if (c->mask) cu_same_as_mirror(&B.mask, "mask (an input)");
  if (c->sink) cu_same_as_mirror(&B.sink, "sink (an input)");

  /* ---- against the reference ---- */
  size_t *idx = NULL, want = CHECK_ELEMS / C;
  if (want > 4096) want = 4096;
  const size_t nidx = cu_pick_rows(R, C, FULL_CHECK, want, &rng, &idx);
  float *xf = cu_host(C * 4), *mf = cu_host(C * 4);
  double *z = cu_host(C * 8), *yr = cu_host(C * 8), *yd = cu_host(C * 8), *dyd = cu_host(C * 8);
  double *dxr = cu_host(C * 8);
  if (!idx || !xf || !mf || !z || !yr || !yd || !dyd || !dxr) return;
  const double sc = fabs((double)c->scale);
  for (size_t n = 0; n < nidx; n++) {
    const size_t i = idx[n];
    for (size_t j = 0; j < C; j++) xf[j] = (float)nk_t_get(B.x.h, i * S.x + j, dt);
    if (c->mask)
      for (size_t j = 0; j < C; j++) mf[j] = (float)nk_t_get(B.mask.h, (i % B.mr) * MS + j, c->mdt);
    nk_ref_softmax_logits(1, C, xf, c->mask ? mf : NULL, 1, c->scale, c->alibi, c->causal, 1,
                          pos_of(c, i), z);
    const double sink =
        c->sink ? ((const float *)B.sink.h)[c->sink == SINK_HEAD ? (i / qlen) % heads : i] : 0.0;
    double lr = 0.0;
    nk_ref_softmax_fwd(1, C, z, c->sink ? &sink : NULL, c->log, c->masked_nan, yr, &lr);
    /* forward */
    double m = 0.0;
    for (size_t j = 0; j < C; j++)
      if (isfinite(yr[j])) m = fmax(m, fabs(yr[j]));
    if (c->sink && isfinite(lr)) m = fmax(m, exp(sink - lr)); /* the sink's share */
    const int row_ok = !isnan(lr); /* not a NaN row (NaN/+inf logit or sink, MASKED_NAN) */
    for (size_t j = 0; j < C; j++) {
      const size_t k = i * S.y + j;
      if (row_ok && z[j] == -INFINITY)
        CU_EXACT(B.y.h, k, dt, c->log ? -INFINITY : 0.0, "y (masked logit)", i, j);
      else if (row_ok && C == 1 && !c->sink)
        CU_EXACT(B.y.h, k, dt, c->log ? 0.0 : 1.0, "y (cols == 1)", i, j);
      else
        CU_CLOSE(B.y.h, k, dt, yr[j], sfwd_bound(c, yr[j], m, lr), "y", i, j);
    }
    if (!c->no_lse)
      CU_CLOSE(B.lse.h, i, NK_DTYPE_F32, lr, 2e-6 * fmax(1.0, isfinite(lr) ? fabs(lr) : 0.0), "lse",
               i, (size_t)0);
    /* backward, from the operator's own y */
    int all_masked = 1;
    for (size_t j = 0; j < C; j++) {
      yd[j] = nk_t_get(B.y.h, i * S.y + j, dt);
      dyd[j] = nk_t_get(B.dy.h, i * S.dy + j, dt);
      if (yd[j] != (c->log ? -INFINITY : 0.0)) all_masked = 0;
    }
    double dot = 0.0;
    nk_ref_softmax_bwd(1, C, yd, dyd, c->log, (double)c->scale, dxr, &dot);
    double gmax = 0.0, gsum = 0.0, ysum = 0.0;
    for (size_t j = 0; j < C; j++) {
      gmax = fmax(gmax, fabs(dyd[j]));
      gsum += fabs(dyd[j]);
      if (!c->log && isfinite(yd[j])) ysum += fabs(yd[j]);
    }
    for (size_t j = 0; j < C; j++) {
      const size_t k = i * S.dx + j;
      if (all_masked) {
        CU_EXACT(B.dx.h, k, dt, 0.0, "dx (fully masked row)", i, j);
        continue;
      }
      double b = c->log ? 4e-6 * sc * (exp(yd[j]) * gsum + fabs(dyd[j]))
                        : 4e-6 * sc * fabs(yd[j]) * gmax * (1.0 + ysum);
      b += sc * 0x1p-140;
      if (dt != NK_DTYPE_F32) b += nk_t_ulp(dxr[j], dt);
      CU_CLOSE(B.dx.h, k, dt, dxr[j], b, "dx", i, j);
    }
    if (c->sink) {
      const double l = ((const float *)B.lse.h)[i]; /* the lse the backward was given */
      const double p0 = isfinite(l) ? exp(sink - l) : NAN;
      const double T = c->log ? gsum : gmax * (1.0 + ysum);
      const double b = 4e-6 * p0 * fmax(1.0, fabs(sink - l)) * T + 0x1p-140;
      if (isfinite(lr) || isnan(lr))
        CU_CLOSE(B.dsink.h, i, NK_DTYPE_F32, -p0 * dot, b, "dsink", i, (size_t)0);
    }
  }

  /* ---- in place: y == x, dx == dy, dx == y give the same bits ---- */
  if (c->inplace) {
    if (!CU_OK(cudaMemcpy(B.y.d, B.x.d, B.x.bytes, cudaMemcpyDeviceToDevice))) return;
    if (!run_sfwd(c, &B, B.y.d, B.y.d)) return;
    cu_same_as_mirror(&B.y, "y, in place (y == x)");
    if (!c->no_lse) cu_same_as_mirror(&B.lse, "lse of the in-place forward");
    if (!CU_OK(cudaMemcpy(B.dx.d, B.dy.d, B.dy.bytes, cudaMemcpyDeviceToDevice))) return;
    if (!run_sbwd(c, &B, B.y.d, B.dx.d, B.dx.d)) return;
    cu_same_as_mirror(&B.dx, "dx, in place (dx == dy)");
    if (c->sink) cu_same_as_mirror(&B.dsink, "dsink of the backward with dx == dy");
    cu_buf t = B.dx; /* a copy of y receives dx */
    t.d = cu_dev(B.y.bytes);
    if (t.d == NULL || !CU_OK(cudaMemcpy(t.d, B.y.d, B.y.bytes, cudaMemcpyDeviceToDevice))) return;
    if (!run_sbwd(c, &B, t.d, B.dy.d, t.d)) return;
    cu_same_as_mirror(&t, "dx, in place (dx == y)");
  }
}

/* Appends " tok" when on. */
static void tag(char *buf, size_t n, int on, const char *tok) {
  const size_t l = strlen(buf);
  if (on && l + 1 < n) snprintf(buf + l, n - l, " %s", tok);
}

static void srun(const scfg *c) {
  char what[200] = "", t[64];
  if (c->scale != 1.0f) {
    snprintf(t, sizeof t, "scale=%g", (double)c->scale);
    tag(what, sizeof what, 1, t);
  }
  if (c->mask) {
    snprintf(t, sizeof t, "%s:%s%s", mask_name[c->mask], cu_dt(c->mdt),
             c->mask_stride0 ? ",stride0" : "");
    tag(what, sizeof what, 1, t);
  }
  if (c->causal) {
    snprintf(t, sizeof t, "causal(q_len %zu, offset %td)", q_len_of(c), c->offset);
    tag(what, sizeof what, 1, t);
  }
  tag(what, sizeof what, c->alibi != 0.0f, "alibi");
  tag(what, sizeof what, c->sink != SINK_NONE, sink_name[c->sink]);
  tag(what, sizeof what, c->masked_nan, "masked_nan");
  tag(what, sizeof what, c->no_lse, "no-lse");
  tag(what, sizeof what, c->xin != X_NORMAL, x_name[c->xin]);
  tag(what, sizeof what, c->masked_rows, "masked-rows");
  tag(what, sizeof what, c->bad_rows, "nan/inf-rows");
  tag(what, sizeof what, c->pad != 0, "strided");
  tag(what, sizeof what, c->inplace, "in-place");
  if (!cu_case_begin("%-11s %-4s %7zu x %-7zu%s", c->log ? "log_softmax" : "softmax", cu_dt(c->dt),
                     c->rows, c->cols, what))
    return;
  softmax_body(c);
  cu_case_end();
}

/* Every width, dtype and direction: about 2^20 elements each. Rows of 1048576 columns do not fit
 * in a cluster's shared memory (docs/cuda.md: they are read again from global memory). Quick
 * mode: fewer widths, f32 and bf16, about 2^14 elements. */
static void softmax_widths(void) {
  static const size_t widths[] = {1, 7, 64, 1000, 1024, 4096, 32768, 65536, 262144, 1048576};
  static const int quick_width[] = {0, 1, 0, 1, 0, 0, 0, 1, 0, 1};
  for (int log = 0; log < 2; log++)
    for (int t = 0; t < 3; t++)
      for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
        if (cu_quick && (t == 2 || !quick_width[w])) continue;
        const size_t elements = (size_t)1 << (cu_quick ? 14 : 20);
        scfg c = sbase(log, dts[t], cu_rows_for(widths[w], elements), widths[w]);
        c.scale = w % 2 ? 0.125f : 1.0f;
        c.pad = w == 3 ? 3 : 0;
        srun(&c);
      }
}

/* The attention options, alone and together, on three widths: rows that one block holds (1000
 * columns, every direction and dtype), rows spread over a cluster of blocks (20011), and rows
 * too wide for the cluster's shared memory (500009 x 4 bytes of f32 logits > 8 x 200 KiB:
 * docs/cuda.md), the last two with the direction and dtype rotating. Odd widths for the tails.
 * Rows are batch 2 x heads x q_len. Quick mode: the first width, the dtype rotating. */
static void attention(void) {
  static const size_t widths[] = {1000, 20011, 500009}, heads[] = {4, 2, 2}, qlens[] = {16, 4, 2};
  for (int v = 0; v < 12; v++)
    for (int log = 0; log < 2; log++)
      for (int t = 0; t < 3; t++)
        for (int w = 0; w < 3; w++) {
          if (w == 1 && t != (v + log) % 3) continue;
          if (w == 2 && (log != v % 2 || t != (v / 2) % 3)) continue;
          if (cu_quick && (w != 0 || t != (v + log) % 3)) continue;
          const size_t C = widths[w], H = heads[w], Q = cu_quick ? 2 : qlens[w];
          scfg c = sbase(log, dts[t], 2 * H * Q, C);
          c.q_len = Q;
          c.heads = H;
          switch (v) {
            case 0: c.mask = MASK_BCAST, c.mask_stride0 = 1, c.scale = 0.125f; break;
            case 1: c.mask = MASK_ROWS, c.mdt = NK_DTYPE_BF16, c.masked_rows = 1; break;
            case 2: c.mask = MASK_QLEN, c.mdt = NK_DTYPE_F16, c.pad = 5; break;
            case 3: c.causal = 1, c.offset = (ptrdiff_t)(C - Q); break; /* a KV cache */
            case 4: c.causal = 1, c.offset = -1; break; /* query 0 of each block sees nothing */
            case 5: c.causal = 1, c.offset = (ptrdiff_t)(C / 2), c.alibi = 0.0625f; break;
            case 6: c.sink = SINK_ROW, c.scale = 0.5f; break;
            case 7: c.sink = SINK_HEAD, c.mask = MASK_BCAST, c.mdt = NK_DTYPE_BF16; break;
            case 8: c.sink = SINK_ZERO, c.causal = 1, c.offset = 3; break; /* off by one */
            case 9: c.masked_nan = 1, c.masked_rows = 1, c.causal = 1, c.offset = -2; break;
            case 10: c.masked_rows = 1, c.sink = SINK_ROW, c.causal = 1, c.offset = -1; break;
            default: /* everything at once */
              c.scale = -0.5f, c.mask = MASK_ROWS, c.mdt = NK_DTYPE_F16, c.sink = SINK_HEAD;
              c.causal = 1, c.offset = (ptrdiff_t)(C - Q - 3), c.alibi = 0.03125f, c.pad = 2;
              break;
          }
          srun(&c);
        }
}

/* normkit.h's edge cases: NaN/+inf rows, huge and wide logits, -inf logits, cols == 1. Quick
 * mode: the middle width, the dtype rotating. */
static void softmax_edges(void) {
  static const size_t ew[] = {7, 1000, 65536}, er[] = {9, 33, 5};
  static const size_t hw[] = {29, 4001, 131073}, hr[] = {11, 35, 3};
  for (int log = 0; log < 2; log++)
    for (int t = 0; t < 3; t++)
      for (int w = 0; w < 3; w++) {
        if (cu_quick && (w != 1 || t != log)) continue;
        scfg c = sbase(log, dts[t], er[w], ew[w]);
        c.bad_rows = 1;
        c.sink = w == 1 ? SINK_ROW : SINK_NONE;
        srun(&c);
        c = sbase(log, dts[t], hr[w], hw[w]);
        c.xin = X_HUGE;
        srun(&c);
        c = sbase(log, dts[t], er[w], ew[w]);
        c.xin = X_WIDE;
        c.scale = 0.7f;
        srun(&c);
        c.xin = X_MIXINF;
        c.scale = 1.0f;
        c.no_lse = 1;
        srun(&c);
      }
  for (int log = 0; log < 2; log++)
    for (int t = 0; t < 3; t++) {
      if (cu_quick && t != 0) continue;
      scfg c = sbase(log, dts[t], cu_quick ? 33 : 1001, 1); /* y = 1 (log 0); with a sink
                                                               e^z / (e^s + e^z) */
      c.xin = X_WIDE;
      srun(&c);
      c.sink = SINK_ROW;
      srun(&c);
    }
}

static void softmax_in_place(void) {
  static const size_t pw[] = {1000, 65536}, pr[] = {65, 5};
  for (int log = 0; log < 2; log++)
    for (int t = 0; t < 3; t++)
      for (int w = 0; w < 2; w++) {
        if (cu_quick && (w != 0 || t != 1)) continue;
        scfg c = sbase(log, dts[t], pr[w], pw[w]);
        c.inplace = 1;
        c.pad = (size_t)t;
        c.sink = w ? SINK_ROW : SINK_NONE;
        c.scale = 0.25f;
        srun(&c);
      }
}

/* rows == 0 or cols == 0: OK and nothing written; argument errors found on the host. */
static void softmax_errors(void) {
  if (!cu_case_begin("softmax     empty tensors and argument errors")) return;
  const size_t R = 4, C = 100;
  cu_buf x, y, dy, dx, lse, sink, dsink;
  if (!cu_buf_alloc(&x, (R * C + 8) * 4) || !cu_buf_alloc(&y, R * C * 4) ||
      !cu_buf_alloc(&dy, (R * C + 8) * 4) || !cu_buf_alloc(&dx, R * C * 4) ||
      !cu_buf_alloc(&lse, R * 4) || !cu_buf_alloc(&sink, R * 4) || !cu_buf_alloc(&dsink, R * 4))
    goto done;
  nk_rng rng = cu_case_rng();
  for (size_t k = 0; k < R * C + 8; k++) ((float *)x.h)[k] = (float)cu_normal(&rng);
  for (size_t k = 0; k < R * C + 8; k++) ((float *)dy.h)[k] = (float)cu_normal(&rng);
  for (size_t k = 0; k < R; k++) ((float *)sink.h)[k] = 0.5f;
  if (!cu_up(&x) || !cu_up(&dy) || !cu_up(&sink)) goto done;
  for (int which = 0; which < 3; which++) { /* rows 0; rows 0 and NULLs; cols 0 */
    nk_softmax_desc d = nk_softmax_desc_dense(which == 2 ? R : 0, which == 2 ? 0 : C, NK_DTYPE_F32);
    const int nul = which == 1;
    CU_STATUS(nk_cuda_softmax_fwd(NULL, &d, nul ? NULL : x.d, NULL, NULL, nul ? NULL : y.d,
                                  nul ? NULL : (float *)lse.d),
              NK_STATUS_OK, "softmax_fwd of an empty tensor");
    CU_SYNC("softmax_fwd of an empty tensor");
    CU_STATUS(nk_cuda_softmax_bwd(NULL, &d, nul ? NULL : x.d, nul ? NULL : dy.d, NULL, NULL,
                                  nul ? NULL : dx.d, NULL),
              NK_STATUS_OK, "softmax_bwd of an empty tensor");
    CU_SYNC("softmax_bwd of an empty tensor");
  }
  static const char *const fwd_what[] = {
      "x NULL",
      "y NULL",
      "scale 0",
      "scale NaN",
      "alibi inf",
      "unknown flag 0x100",
      "y overlapping x partially",
      "x_stride < cols",
      "x misaligned",
      "mask_stride < cols",
  };
  for (int k = 0; k < 10; k++) {
    nk_softmax_desc d = nk_softmax_desc_dense(R, C, NK_DTYPE_F32);
    const void *X = x.d, *M = NULL;
    void *Y = y.d;
    switch (k) {
      case 0: X = NULL; break;
      case 1: Y = NULL; break;
      case 2: d.scale = 0.0f; break;
      case 3: d.scale = NAN; break;
      case 4: d.alibi = INFINITY; break;
      case 5: d.flags = 0x100u; break;
      case 6: Y = (float *)x.d + 1; break;
      case 7: d.x_stride = (ptrdiff_t)C - 1; break;
      case 8: X = (const char *)x.d + 2; break;
      default: M = dy.d, d.mask_rows = R, d.mask_stride = (ptrdiff_t)C - 1; break;
    }
    char what[128];
    snprintf(what, sizeof what, "softmax_fwd with %s", fwd_what[k]);
    CU_STATUS(nk_cuda_softmax_fwd(NULL, &d, X, M, NULL, Y, (float *)lse.d),
              NK_STATUS_INVALID_ARGUMENT, what);
    CU_SYNC(what);
  }
  static const char *const bwd_what[] = {"dy NULL", "dsink without lse",
                                         "dx overlapping dy partially", "scale 0"};
  for (int k = 0; k < 4; k++) {
    nk_softmax_desc d = nk_softmax_desc_dense(R, C, NK_DTYPE_F32);
    const void *DY = dy.d;
    void *DX = dx.d;
    const float *L = (const float *)lse.d;
    switch (k) {
      case 0: DY = NULL; break;
      case 1: L = NULL; break;
      case 2: DX = (float *)dy.d + 1; break;
      default: d.scale = 0.0f; break;
    }
    char what[128];
    snprintf(what, sizeof what, "softmax_bwd with %s", bwd_what[k]);
    CU_STATUS(
        nk_cuda_softmax_bwd(NULL, &d, x.d, DY, (const float *)sink.d, L, DX, (float *)dsink.d),
        NK_STATUS_INVALID_ARGUMENT, what);
    CU_SYNC(what);
  }
  CU_UNTOUCHED(&y, "y");
  CU_UNTOUCHED(&dx, "dx");
  CU_UNTOUCHED(&lse, "lse");
  CU_UNTOUCHED(&dsink, "dsink");
  cu_same_as_mirror(&x, "x after the failed calls");
  cu_same_as_mirror(&dy, "dy after the failed calls");
done:
  cu_case_end();
}

/* ================================== cross-entropy ===============================================
 */

enum { DL_NONE, DL_SEPARATE, DL_INPLACE };

typedef struct ccfg {
  nk_dtype dt;
  size_t rows, cols, pad;
  nk_reduction red;
  int64_t ignore;
  float ls, zl, grad;
  int dl; /* DL_* */
  int no_lse;
  int ignore_all;  /* every target ignore_index (else rows i % 5 == 3) */
  int bad_targets; /* rows 1, 2, 4: targets cols, -5, INT64_MAX (neither valid nor ignored) */
  double xscale;
} ccfg;

static ccfg cbase(nk_dtype dt, size_t rows, size_t cols, nk_reduction red) {
  ccfg c;
  memset(&c, 0, sizeof c);
  c.dt = dt;
  c.rows = rows;
  c.cols = cols;
  c.red = red;
  c.ignore = -100;
  c.grad = 1.0f;
  c.dl = DL_SEPARATE;
  c.xscale = 2.0;
  return c;
}

typedef struct cbufs {
  size_t xs, ds; /* row strides of x and dlogits */
  cu_buf x, t, loss, lse, dl;
  void *ws;
  size_t ws_bytes;
  nk_cross_entropy_desc d;
} cbufs;

/* (Re)loads x when dlogits overwrites it, poisons the outputs, runs, waits. */
static int run_ce(const ccfg *c, const cbufs *B) {
  if (c->dl == DL_INPLACE && !cu_up(&B->x)) return 0;
  if (!cu_poison(&B->loss) || !cu_poison(&B->lse) || (c->dl == DL_SEPARATE && !cu_poison(&B->dl)))
    return 0;
  void *dl = c->dl == DL_NONE ? NULL : c->dl == DL_INPLACE ? B->x.d : B->dl.d;
  const nk_status st =
      nk_cuda_cross_entropy(NULL, &B->d, B->x.d, (const int64_t *)B->t.d, (float *)B->loss.d, dl,
                            c->no_lse ? NULL : (float *)B->lse.d, B->ws, B->ws_bytes);
  return CU_STATUS(st, NK_STATUS_OK, "nk_cuda_cross_entropy") && CU_SYNC("cross-entropy");
}

static int bad_target_row(const ccfg *c, size_t i) {
  return c->bad_targets && (i == 1 || i == 2 || i == 4);
}

static void ce_body(const ccfg *c) {
  const size_t R = c->rows, C = c->cols, es = nk_dtype_size(c->dt);
  const nk_dtype dt = c->dt;
  nk_rng rng = cu_case_rng();
  cbufs B;
  memset(&B, 0, sizeof B);
  B.xs = C + c->pad;
  B.ds = c->dl == DL_INPLACE ? B.xs : C + 2 * c->pad;
  if (!cu_buf_alloc(&B.x, cu_extent(R, C, B.xs) * es) || !cu_buf_alloc(&B.t, R * 8) ||
      !cu_buf_alloc(&B.loss, R * 4) || !cu_buf_alloc(&B.lse, R * 4) ||
      !cu_buf_alloc(&B.dl, cu_extent(R, C, B.ds) * es))
    return;
  int64_t *tg = B.t.h;
  for (size_t i = 0; i < R; i++) {
    for (size_t j = 0; j < C; j++) nk_t_set(B.x.h, i * B.xs + j, c->xscale * cu_normal(&rng), dt);
    tg[i] = (int64_t)(nk_rng_u64(&rng) % C);
    if (c->ignore_all || i % 5 == 3) tg[i] = c->ignore;
  }
  if (c->bad_targets && R > 4) tg[1] = (int64_t)C, tg[2] = -5, tg[4] = INT64_MAX;
  if (!cu_up(&B.x) || !cu_up(&B.t)) return;
  B.d = nk_cross_entropy_desc_dense(R, C, dt);
  B.d.reduction = c->red;
  B.d.ignore_index = c->ignore;
  B.d.label_smoothing = c->ls;
  B.d.z_loss = c->zl;
  B.d.grad = c->grad;
  B.d.x_stride = (ptrdiff_t)B.xs;
  B.d.dx_stride = (ptrdiff_t)B.ds;
  if (!CU_STATUS(nk_cuda_cross_entropy_workspace_size(&B.d, &B.ws_bytes), NK_STATUS_OK,
                 "nk_cuda_cross_entropy_workspace_size"))
    return;
  if (B.ws_bytes && (B.ws = cu_dev(B.ws_bytes)) == NULL) return;

  /* ---- twice ---- */
  cu_buf dlb = B.dl; /* where dlogits lands */
  if (c->dl == DL_INPLACE) dlb.d = B.x.d, dlb.bytes = B.x.bytes;
  if (!run_ce(c, &B) || !cu_down(&B.loss) || !cu_down(&B.lse) ||
      (c->dl != DL_NONE && !cu_down(&dlb)))
    return;
  if (!run_ce(c, &B)) return;
  cu_same_as_mirror(&B.loss, "loss");
  if (!c->no_lse) cu_same_as_mirror(&B.lse, "lse");
  if (c->dl != DL_NONE) cu_same_as_mirror(&dlb, "dlogits");
  const size_t nloss = c->red == NK_REDUCTION_NONE ? R : 1;
  CU_WRITTEN(B.loss.h, 1, nloss, nloss, NK_DTYPE_F32, "loss");
  for (size_t k = 4 * nloss; k < B.loss.bytes; k++)
    if (!CU_EXPECT(((unsigned char *)B.loss.h)[k] == 0xFF, "loss[%zu] written (reduction %d)",
                   k / 4, (int)c->red))
      break;
  if (!c->no_lse) CU_WRITTEN(B.lse.h, 1, R, R, NK_DTYPE_F32, "lse");
  if (c->no_lse) CU_UNTOUCHED(&B.lse, "lse (not requested)");
  if (c->dl == DL_SEPARATE) CU_WRITTEN(B.dl.h, R, C, B.ds, dt, "dlogits");
  if (c->dl != DL_INPLACE) cu_same_as_mirror(&B.x, "x (an input)");
  cu_same_as_mirror(&B.t, "target (an input)");
  if (c->dl == DL_NONE) CU_UNTOUCHED(&B.dl, "dlogits (not requested)");

  /* ---- against the reference, row by row ---- */
  size_t counted = 0;
  for (size_t i = 0; i < R; i++) counted += tg[i] != c->ignore;
  const double w = c->red == NK_REDUCTION_MEAN ? (counted ? 1.0 / (double)counted : 0.0) : 1.0;
  const double cc = fabs((double)c->grad * w);
  double *z = cu_host(C * 8), *dz = cu_host(C * 8);
  if (!z || !dz) return;
  long double total = 0.0L;
  double bsum = 0.0;
  int any_bad = 0;
  for (size_t i = 0; i < R; i++) {
    /* the logits as stored (the host mirror: in place, only the device copy was overwritten) */
    for (size_t j = 0; j < C; j++) z[j] = nk_t_get(B.x.h, i * B.xs + j, dt);
    if (bad_target_row(c, i)) {
      any_bad = 1;
      if (c->red == NK_REDUCTION_NONE)
        CU_EXACT(B.loss.h, i, NK_DTYPE_F32, NAN, "loss (bad target)", i, (size_t)0);
      if (c->dl != DL_NONE)
        for (size_t j = 0; j < C; j++)
          CU_EXACT(dlb.h, i * B.ds + j, dt, NAN, "dlogits (bad target)", i, j);
      continue;
    }
    double li = 0.0, L = 0.0;
    nk_ref_cross_entropy(1, C, z, &tg[i], c->ignore, (double)c->ls, (double)c->zl,
                         NK_REDUCTION_NONE, (double)c->grad * w, &li, dz, &L);
    if (!c->no_lse)
      CU_CLOSE(B.lse.h, i, NK_DTYPE_F32, L, 2e-6 * fmax(1.0, isfinite(L) ? fabs(L) : 0.0), "lse", i,
               (size_t)0);
    const int ignored = tg[i] == c->ignore;
    const double aL = isfinite(L) ? fabs(L) : 0.0;
    double mz = 0.0;
    for (size_t j = 0; j < C; j++) mz += fabs(z[j]) / (double)C;
    const double Bi = 4e-6 * fmax(1.0, aL) * (1.0 + 2.0 * c->zl * aL) + 2e-6 * c->ls * mz;
    if (!ignored) {
      total += li;
      bsum += Bi;
    }
    if (c->red == NK_REDUCTION_NONE) {
      if (ignored)
        CU_EXACT(B.loss.h, i, NK_DTYPE_F32, 0.0, "loss (ignored row)", i, (size_t)0);
      else
        CU_CLOSE(B.loss.h, i, NK_DTYPE_F32, li, Bi + nk_t_ulp(li, NK_DTYPE_F32), "loss", i,
                 (size_t)0);
    }
    if (c->dl == DL_NONE) continue;
    const double f = 1.0 + 2.0 * c->zl * aL, logn = log((double)C);
    for (size_t j = 0; j < C; j++) {
      const size_t k = i * B.ds + j;
      if (ignored) {
        CU_EXACT(dlb.h, k, dt, 0.0, "dlogits (ignored row)", i, j);
        continue;
      }
      const double p = exp(z[j] - L);
      const double r = 4e-6 + 0x1p-23 * (fabs(z[j] - L) + aL + logn);
      double b = cc * (r * p * f +
                       3e-6 * (c->ls / (double)C + ((int64_t)j == tg[i] ? 1.0 - c->ls : 0.0))) +
                 cc * f * 0x1p-147;
      if (dt != NK_DTYPE_F32) b += nk_t_ulp(dz[j], dt);
      CU_CLOSE(dlb.h, k, dt, dz[j], b, "dlogits", i, j);
    }
  }
  if (c->red != NK_REDUCTION_NONE) {
    double ref = (double)total;
    if (c->red == NK_REDUCTION_MEAN) ref = counted ? (double)(total / (long double)counted) : NAN;
    if (any_bad)
      CU_EXACT(B.loss.h, 0, NK_DTYPE_F32, NAN, "loss (a bad target)", (size_t)0, (size_t)0);
    else
      CU_CLOSE(B.loss.h, 0, NK_DTYPE_F32, ref, w * bsum + nk_t_ulp(ref, NK_DTYPE_F32),
               c->red == NK_REDUCTION_SUM ? "loss (sum)" : "loss (mean)", (size_t)0, (size_t)0);
  }
}

static void crun(const ccfg *c) {
  static const char *const red[] = {"none", "sum", "mean"};
  static const char *const dl[] = {"no-dlogits", "", "dlogits==x"};
  char what[200] = "", t[64];
  tag(what, sizeof what, 1, red[c->red]);
  snprintf(t, sizeof t, "ignore=%lld", (long long)c->ignore);
  tag(what, sizeof what, c->ignore != -100, t);
  snprintf(t, sizeof t, "ls=%g", (double)c->ls);
  tag(what, sizeof what, c->ls != 0.0f, t);
  snprintf(t, sizeof t, "zl=%g", (double)c->zl);
  tag(what, sizeof what, c->zl != 0.0f, t);
  snprintf(t, sizeof t, "grad=%g", (double)c->grad);
  tag(what, sizeof what, c->grad != 1.0f, t);
  tag(what, sizeof what, c->dl != DL_SEPARATE, dl[c->dl]);
  tag(what, sizeof what, c->no_lse, "no-lse");
  tag(what, sizeof what, c->ignore_all, "all-ignored");
  tag(what, sizeof what, c->bad_targets, "bad-targets");
  tag(what, sizeof what, c->pad != 0, "strided");
  if (!cu_case_begin("%-11s %-4s %7zu x %-7zu%s", "x-entropy", cu_dt(c->dt), c->rows, c->cols,
                     what))
    return;
  ce_body(c);
  cu_case_end();
}

static void cross_entropy_cases(void) {
  static const size_t widths[] = {1000, 32000, 128256, 262144};
  static const nk_dtype cdts[2] = {NK_DTYPE_F32, NK_DTYPE_BF16};
  /* every width x dtype x reduction; the options rotate so that each reduction meets each
   * dlogits mode, smoothing, z-loss and grad on some width */
  for (int w = 0; w < 4; w++)
    for (int t = 0; t < 2; t++)
      for (int red = 0; red < 3; red++) {
        if (cu_quick && (w != 1 || t != red % 2)) continue;
        const size_t elements = (size_t)1 << (cu_quick ? 16 : 20);
        ccfg c = cbase(cdts[t], cu_rows_for(widths[w], elements), widths[w], (nk_reduction)red);
        const int k = w + t + red;
        c.dl = k % 3 == 0 ? DL_SEPARATE : k % 3 == 1 ? DL_INPLACE : DL_NONE;
        c.ls = (red + t) % 2 ? 0.1f : 0.0f;
        c.zl = (red + w) % 2 ? 1e-4f : 0.0f;
        c.grad = (w + red) % 3 == 1 ? 0.5f : (w + red) % 3 == 2 ? -2.0f : 1.0f;
        c.no_lse = (w + 2 * red + t) % 5 == 4;
        c.pad = (w + red) % 4 == 1 ? 3 : 0;
        if ((w + t + 2 * red) % 6 == 5) c.ignore = 7; /* an ignore_index that is also a class */
        crun(&c);
      }
  for (int w = 0; w < 2; w++) { /* f16, everything on */
    if (cu_quick && w) continue;
    ccfg c = cbase(NK_DTYPE_F16, cu_rows_for(widths[w], (size_t)1 << (cu_quick ? 14 : 19)),
                   widths[w], NK_REDUCTION_MEAN);
    c.ls = 0.1f, c.zl = 1e-4f, c.grad = 0.5f;
    crun(&c);
  }
  for (int red = 0; red < 3; red++) { /* every row ignored: mean NaN, sum 0, dlogits 0 */
    ccfg c = cbase(NK_DTYPE_F32, 9, 1000, (nk_reduction)red);
    c.ignore_all = 1;
    crun(&c);
  }
  for (int red = 0; red < 3; red++) /* targets outside [0, cols): NaN rows (normkit_cuda.h) */
    for (int w = 0; w < 2; w++) {
      if (cu_quick && w) continue;
      ccfg c = cbase(w ? NK_DTYPE_BF16 : NK_DTYPE_F32, 9, widths[w * 2], (nk_reduction)red);
      c.bad_targets = 1;
      c.dl = red == NK_REDUCTION_MEAN ? DL_NONE : DL_SEPARATE; /* mean: whether a bad row counts
                                                                  for w is not specified */
      c.ls = 0.1f;
      crun(&c);
    }
}

static void cross_entropy_errors(void) {
  if (!cu_case_begin("x-entropy   argument errors, workspace too small")) return;
  const size_t R = 6, C = 100;
  cu_buf x, t, loss, lse, dl;
  if (!cu_buf_alloc(&x, (R * C + 8) * 4) || !cu_buf_alloc(&t, R * 8) ||
      !cu_buf_alloc(&loss, R * 4) || !cu_buf_alloc(&lse, R * 4) || !cu_buf_alloc(&dl, R * C * 4))
    goto done;
  nk_rng rng = cu_case_rng();
  for (size_t k = 0; k < R * C + 8; k++) ((float *)x.h)[k] = (float)cu_normal(&rng);
  for (size_t i = 0; i < R; i++) ((int64_t *)t.h)[i] = (int64_t)(i * 7 % C);
  if (!cu_up(&x) || !cu_up(&t)) goto done;
  nk_cross_entropy_desc d0 = nk_cross_entropy_desc_dense(R, C, NK_DTYPE_F32);
  d0.reduction = NK_REDUCTION_SUM;
  size_t need = 0;
  if (!CU_STATUS(nk_cuda_cross_entropy_workspace_size(&d0, &need), NK_STATUS_OK,
                 "nk_cuda_cross_entropy_workspace_size"))
    goto done;
  CU_EXPECT(need > 0, "cross-entropy with reduction sum needs no workspace");
  char *ws = cu_dev(need + 1);
  if (ws == NULL) goto done;
  static const struct {
    const char *what;
    nk_status want;
  } cases[] = {
      {"workspace 1 byte too small", NK_STATUS_MISUSE},
      {"workspace NULL", NK_STATUS_MISUSE},
      {"x NULL", NK_STATUS_INVALID_ARGUMENT},
      {"loss NULL", NK_STATUS_INVALID_ARGUMENT},
      {"label_smoothing 1.5", NK_STATUS_INVALID_ARGUMENT},
      {"z_loss -1", NK_STATUS_INVALID_ARGUMENT},
      {"dlogits overlapping x partially", NK_STATUS_INVALID_ARGUMENT},
      {"unknown reduction 7", NK_STATUS_INVALID_ARGUMENT},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    nk_cross_entropy_desc d = d0;
    void *W = ws, *DL = dl.d;
    size_t wsb = need;
    const void *X = x.d;
    float *L = (float *)loss.d;
    switch (k) {
      case 0: wsb = need - 1; break;
      case 1: W = NULL; break;
      case 2: X = NULL; break;
      case 3: L = NULL; break;
      case 4: d.label_smoothing = 1.5f; break;
      case 5: d.z_loss = -1.0f; break;
      case 6: DL = (float *)x.d + 1; break;
      default: d.reduction = (nk_reduction)7; break;
    }
    char what[128];
    snprintf(what, sizeof what, "cross_entropy with %s", cases[k].what);
    CU_STATUS(
        nk_cuda_cross_entropy(NULL, &d, X, (const int64_t *)t.d, L, DL, (float *)lse.d, W, wsb),
        cases[k].want, what);
    CU_SYNC(what);
  }
  CU_UNTOUCHED(&loss, "loss");
  CU_UNTOUCHED(&lse, "lse");
  CU_UNTOUCHED(&dl, "dlogits");
  cu_same_as_mirror(&x, "x after the failed calls");
  /* rows == 0 with reduction none: OK, nothing written */
  nk_cross_entropy_desc d = nk_cross_entropy_desc_dense(0, C, NK_DTYPE_F32);
  d.reduction = NK_REDUCTION_NONE;
  CU_STATUS(nk_cuda_cross_entropy(NULL, &d, NULL, NULL, NULL, NULL, NULL, NULL, 0), NK_STATUS_OK,
            "cross_entropy of 0 rows");
  CU_SYNC("cross_entropy of 0 rows");
done:
  cu_case_end();
}

int main(void) {
  if (!cu_start("test_cuda_softmax")) return 77;
  softmax_widths();
  attention();
  softmax_edges();
  softmax_in_place();
  softmax_errors();
  cross_entropy_cases();
  cross_entropy_errors();
  return cu_finish("test_cuda_softmax");
}
