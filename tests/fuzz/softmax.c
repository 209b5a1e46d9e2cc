/*
 * tests/fuzz/softmax.c — libFuzzer harness: nk_softmax_fwd/bwd (and _rows) with every option:
 * log, scale, mask (any dtype, broadcast rows), ALiBi, causal with offset and q_len, sinks per
 * row or per head, masked-NaN, every algorithm, in place (fuzz.h: decoder, arena, canaries).
 * Bounds: those of tests/ops/softmax.c (docs/ops/softmax.md), on the API's own f32 logits:
 *   f32 softmax 2e-6 max|ref| of the row (the sink's share included) + 2^-148;
 *   f32 log_softmax 2e-6 max(1, |lse|) + 1 ulp; bf16/f16 1 ulp (+ 2e-6 max(1,|lse|) for the
 *   two-pass and online log_softmax); lse 2e-6 max(1, |lse|);
 *   dx (against the reference backward on the op's own y): softmax
 *   4e-6 |scale| |y_j| max|dy| (1 + sum|y|), log 4e-6 |scale| (e^{y_j} sum|dy| + |dy_j|),
 *   + 1 ulp for bf16/f16, + |scale| 2^-140.
 * One input in four runs nk_sigmoid_attn_fwd/bwd instead (the same descriptor and logits; sink,
 * log and masked-NaN are ignored there), with the bounds of tests/ops/softmax.c: y f32 4 ulp +
 * 2^-149, bf16/f16 1 ulp; dx f32 4 ulp + |scale| 2^-140, bf16/f16 1 ulp (on the op's own y).
 */
#include <float.h>

#include "fuzz.h"
#include "reference.h"

#define MAXR 8
#define MAXC 200

enum { BAD_NONE, BAD_STRIDE, BAD_NEG_STRIDE, BAD_SCALE, BAD_FLAGS, BAD_OVERLAP, BAD_OVERFLOW,
       BAD_NULL, BAD_ALGO, BAD_MASK_DTYPE, BAD_COUNT };

/* Sigmoid attention on the decoded call: forward, then the backward from its own y. */
static int sigmoid_case(fz_in *in, nk_context *ctx, const nk_softmax_desc *dp, nk_status want,
                        unsigned bad, const void *x, const void *mask, void *y, const fz_geom *gy,
                        const double *xr, const double *mr, size_t mrows, size_t qlen) {
  static double z[MAXR * MAXC], yr[MAXR * MAXC], got[MAXR * MAXC], yv[MAXR * MAXC];
  static double dyr[MAXR * MAXC], dxr[MAXR * MAXC];
  static float xf[MAXR * MAXC], mf[MAXR * MAXC];
  const nk_softmax_desc d = *dp;
  const size_t R = d.rows, C = d.cols;
  const nk_dtype dt = d.dtype;
  fz_snapshot();
  nk_status st = nk_sigmoid_attn_fwd(ctx, &d, x, mask, y);
  if (want != NK_OK) {
    FZ_CHECK(st == want, "sigmoid fwd: bad %u: status %d, want %d (%s)", bad, st, want,
             nk_context_message(ctx));
    FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "sigmoid fwd: no message for a failure");
    fz_check_arena(0, "sigmoid fwd");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "sigmoid fwd: status %d (%s)", st, nk_context_message(ctx));
  fz_check_arena(1, "sigmoid fwd");
  fz_valid++;
  if (R == 0 || C == 0) return 0;
  for (size_t k = 0; k < R * C; k++) xf[k] = (float)xr[k];
  for (size_t k = 0; k < mrows * C; k++) mf[k] = (float)mr[k];
  nk_ref_softmax_logits(R, C, xf, mask ? mf : NULL, mrows, d.scale, d.alibi,
                        (d.flags & NK_SOFTMAX_CAUSAL) != 0, qlen, d.causal_offset, z);
  nk_ref_sigmoid_fwd(R * C, z, yr);
  fz_read(y, gy, dt, got);
  for (size_t k = 0; k < R * C; k++) {
    const double b = dt == NK_DTYPE_F32 ? 4 * fz_ulp(yr[k], dt) + 0x1p-149 : fz_ulp(yr[k], dt);
    FZ_CHECK(fz_close(got[k], yr[k], b, dt), "sigmoid y[%zu] = %.9g, ref %.9g (z %.9g) dt %d", k,
             got[k], yr[k], z[k], dt);
  }
  /* backward from the op's own y; dx may be dy or y */
  fz_begin();
  nk_softmax_desc b = d;
  const unsigned bopt = fz_u8(in);
  const int dx_on_dy = bopt & 1, dx_on_y = !dx_on_dy && (bopt & 2);
  b.y_stride = (ptrdiff_t)C + fz_pick(in, 4);
  b.dy_stride = (ptrdiff_t)C + fz_pick(in, 4);
  b.dx_stride = dx_on_dy ? b.dy_stride : dx_on_y ? b.y_stride : (ptrdiff_t)C + fz_pick(in, 4);
  const fz_geom by = fz_rows(R, C, b.y_stride, dt), bdy = fz_rows(R, C, b.dy_stride, dt);
  const fz_geom bdx = fz_rows(R, C, b.dx_stride, dt);
  void *y2 = fz_place(in, &by, NULL);
  for (size_t i = 0; i < R; i++)
    for (size_t j = 0; j < C; j++) {
      fz_set(y2, i * (size_t)b.y_stride + j, got[i * C + j], dt);
      yv[i * C + j] = got[i * C + j];
    }
  void *dy = fz_place(in, &bdy, NULL);
  const fz_dist tame = {0.0, 1.0, 0};
  fz_fill(in, dy, &bdy, dt, &tame, dyr);
  void *dx = dx_on_dy ? dy : dx_on_y ? y2 : fz_place(in, &bdx, NULL);
  fz_writable(dx, &bdx);
  fz_snapshot();
  st = nk_sigmoid_attn_bwd(ctx, &b, y2, dy, dx);
  FZ_CHECK(st == NK_OK, "sigmoid bwd: status %d (%s)", st, nk_context_message(ctx));
  fz_check_arena(1, "sigmoid bwd");
  nk_ref_sigmoid_bwd(R * C, yv, dyr, b.scale, dxr);
  fz_read(dx, &bdx, dt, got);
  for (size_t k = 0; k < R * C; k++) {
    const double bd = dt == NK_DTYPE_F32 ? 4 * fz_ulp(dxr[k], dt) + fabs(b.scale) * 0x1p-140
                                         : fz_ulp(dxr[k], dt);
    FZ_CHECK(fz_close(got[k], dxr[k], bd, dt), "sigmoid dx[%zu] = %.9g, ref %.9g dt %d", k,
             got[k], dxr[k], dt);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in;
  fz_start(&in, "softmax", data, size);

  unsigned bad = fz_pick(&in, 8) == 0 ? 1 + fz_pick(&in, BAD_COUNT - 1) : BAD_NONE;
  nk_context *ctx = fz_context(&in);
  const size_t q = 1 + fz_pick(&in, 4), blocks = fz_pick(&in, 16) == 0 ? 0 : 1 + fz_pick(&in, 2);
  const size_t R = q * blocks;
  const unsigned csel = fz_pick(&in, 4);
  const size_t C = csel == 0 ? 1 + fz_pick(&in, 3) : csel < 3 ? 1 + fz_pick(&in, 70)
                                                               : 1 + fz_pick(&in, MAXC);
  const nk_dtype dt = fz_dtype(&in), mdt = fz_dtype(&in);
  const unsigned opt = fz_u8(&in), opt2 = fz_u8(&in);
  const int sig = (opt2 & 48) == 48; /* sigmoid attention instead of softmax */
  const int log_ = opt & 1, causal = opt & 2, masked_nan = opt & 4, has_mask = opt & 8,
            has_sink = opt & 16, per_head = has_sink && (opt & 32), inplace = opt & 64,
            has_lse = !sig && (opt & 128), use_rows = !sig && (opt2 & 3) == 3,
            alibi_on = (opt2 & 12) == 12;
  static const float scales[] = {1.0f, 1.0f, 0.125f, -1.0f, 2.0f, 1e-3f, 30.0f, 0.7f};
  nk_softmax_desc d = nk_softmax_desc_dense(R, C, dt);
  d.mask_dtype = mdt;
  d.scale = scales[fz_pick(&in, 8)];
  d.alibi = alibi_on ? (fz_u8(&in) & 1 ? 0.5f : 0.0625f) : 0.0f;
  d.flags = (log_ ? NK_SOFTMAX_LOG : 0) | (causal ? NK_SOFTMAX_CAUSAL : 0) |
            (masked_nan ? NK_SOFTMAX_MASKED_NAN : 0) | (per_head ? NK_SOFTMAX_SINK_PER_HEAD : 0);
  d.algo = (nk_softmax_algo)fz_pick(&in, 5);
  d.q_len = fz_u8(&in) & 1 ? q : (blocks == 1 ? 0 : q);
  const size_t qlen = d.q_len ? d.q_len : R;
  const size_t heads = 1 + fz_pick(&in, 3);
  d.heads = per_head ? heads : 0;
  d.causal_offset = (ptrdiff_t)fz_pick(&in, (unsigned)C + 3) - 3;
  const unsigned msel = fz_pick(&in, 3);
  d.mask_rows = msel == 0 ? 0 : msel == 1 ? 1 : qlen;
  const size_t mrows = d.mask_rows ? d.mask_rows : R;
  d.x_stride = (ptrdiff_t)(C + fz_pick(&in, 5));
  d.y_stride = inplace ? d.x_stride : (ptrdiff_t)(C + fz_pick(&in, 5));
  d.mask_stride = (ptrdiff_t)(C + fz_pick(&in, 5));

  const fz_dist xd = fz_dist_pick(&in, 16);
  fz_dist md = {0.0, 2.0, 200}; /* many -inf and other specials */
  const fz_geom gx = fz_rows(R, C, d.x_stride, dt), gy = fz_rows(R, C, d.y_stride, dt);
  const fz_geom gm = fz_rows(mrows, C, d.mask_rows == 1 ? (ptrdiff_t)C : d.mask_stride, mdt);
  const size_t nsink = per_head ? heads : R;
  const fz_geom gs = fz_vec(nsink, 4), gl = fz_vec(R, 4);

  static double xr[MAXR * MAXC], mr[MAXR * MAXC], z[MAXR * MAXC], yr[MAXR * MAXC];
  static double got[MAXR * MAXC], lr[MAXR], sr[MAXR], sk[8];
  static float xf[MAXR * MAXC], mf[MAXR * MAXC];
  void *x = fz_place(&in, &gx, NULL);
  fz_fill(&in, x, &gx, dt, &xd, xr);
  void *mask = NULL;
  if (has_mask) {
    mask = fz_place(&in, &gm, NULL);
    for (size_t i = 0; i < mrows; i++)
      for (size_t j = 0; j < C; j++) {
        double v = fz_value(&in, &md);
        if (isinf(v) || isnan(v)) v = fz_u8(&in) < 200 ? -INFINITY : v; /* mostly -inf */
        fz_set(mask, i * (size_t)gm.s1 + j, v, mdt);
        mr[i * C + j] = fz_get(mask, i * (size_t)gm.s1 + j, mdt);
      }
  }
  float *sink = NULL;
  if (has_sink) {
    sink = fz_place(&in, &gs, NULL);
    const fz_dist sd = {0.0, 3.0, 40};
    for (size_t k = 0; k < nsink; k++) sink[k] = (float)fz_value(&in, &sd), sk[k] = sink[k];
  }
  void *y = inplace ? x : fz_place(&in, &gy, NULL);
  float *lse = has_lse ? fz_place(&in, &gl, NULL) : NULL;

  nk_status want = NK_OK;
  /* zero sizes (and an empty row range, even of a broken descriptor) are a no-op, OK */
  if (R == 0 && (bad != BAD_OVERFLOW || use_rows)) bad = BAD_NONE;
  size_t r0 = 0, r1 = R;
  if (use_rows && R > 0) r0 = fz_pick(&in, (unsigned)R), r1 = r0 + 1 + fz_pick(&in, (unsigned)(R - r0));
  if (d.algo == NK_SOFTMAX_THREE_PASS_RELOAD && dt != NK_DTYPE_F32 && R && C && !sig)
    want = NK_STATUS_UNSUPPORTED;
  switch (bad) {
  case BAD_STRIDE: d.x_stride = (ptrdiff_t)C - 1 - fz_pick(&in, 3); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NEG_STRIDE: d.y_stride = -(ptrdiff_t)(1 + fz_pick(&in, 100)); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_SCALE: { const float s[] = {0.0f, NAN, INFINITY, -INFINITY}; d.scale = s[fz_pick(&in, 4)]; want = NK_STATUS_INVALID_ARGUMENT; break; }
  case BAD_FLAGS: d.flags |= 1u << (4 + fz_pick(&in, 28)); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_OVERLAP:
    if (R > 0 && C > 1 && !inplace) { y = (char *)x + nk_dtype_size(dt); want = NK_STATUS_INVALID_ARGUMENT; }
    else if (R > 0 && has_lse) { lse = (float *)y; want = NK_STATUS_INVALID_ARGUMENT; }
    break;
  case BAD_OVERFLOW: d.rows = SIZE_MAX / (1 + fz_pick(&in, 8)); d.q_len = 0; d.mask_rows = 1; d.x_stride = d.y_stride = PTRDIFF_MAX / (1 + fz_pick(&in, 4)); d.cols = 1; want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NULL: if (R > 0) { x = NULL; want = NK_STATUS_INVALID_ARGUMENT; } break;
  case BAD_ALGO: d.algo = (nk_softmax_algo)(5 + fz_pick(&in, 50)); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_MASK_DTYPE: if (has_mask && R > 0) { d.mask_dtype = (nk_dtype)(3 + fz_pick(&in, 9)); want = NK_STATUS_INVALID_ARGUMENT; } break;
  }
  if (want == NK_OK) {
    const fz_geom gyr = fz_rows(r1 - r0, C, d.y_stride, dt), glr = fz_vec(r1 - r0, 4);
    if (r1 > r0) fz_writable((char *)y + r0 * (size_t)d.y_stride * gy.es, &gyr);
    if (lse && r1 > r0) fz_writable(lse + r0, &glr);
  }
  if (sig) return sigmoid_case(&in, ctx, &d, want, bad, x, mask, y, &gy, xr, mr, mrows, qlen);
  fz_snapshot();
  nk_status st = use_rows ? nk_softmax_fwd_rows(ctx, &d, r0, r1, x, mask, sink, y, lse)
                          : nk_softmax_fwd(ctx, &d, x, mask, sink, y, lse);
  if (want != NK_OK) {
    FZ_CHECK(st == want || (want == NK_STATUS_INVALID_ARGUMENT && st == NK_STATUS_UNSUPPORTED &&
                            d.algo == NK_SOFTMAX_THREE_PASS_RELOAD),
             "fwd: bad %u: status %d, want %d (%s)", bad, st, want, nk_context_message(ctx));
    FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "fwd: no message for a failure");
    fz_check_arena(0, "fwd");
    if (want == NK_STATUS_UNSUPPORTED && bad == BAD_NONE) fz_valid++; /* a valid request */
    return 0;
  }
  FZ_CHECK(st == NK_OK, "fwd: status %d (%s)", st, nk_context_message(ctx));
  fz_check_arena(1, "fwd");
  fz_valid++;
  if (R == 0 || C == 0) return 0;

  /* reference on the API's logits */
  for (size_t k = 0; k < R * C; k++) xf[k] = (float)xr[k];
  for (size_t k = 0; k < mrows * C; k++) mf[k] = (float)mr[k];
  nk_ref_softmax_logits(R, C, xf, has_mask ? mf : NULL, mrows, d.scale, d.alibi, causal, qlen,
                        d.causal_offset, z);
  for (size_t i = 0; i < R; i++) sr[i] = has_sink ? sk[per_head ? (i / qlen) % heads : i] : 0.0;
  nk_ref_softmax_fwd(R, C, z, has_sink ? sr : NULL, log_, masked_nan, yr, lr);
  fz_read(y, &gy, dt, got);
  const int exact_max = d.algo == NK_SOFTMAX_AUTO || d.algo == NK_SOFTMAX_THREE_PASS_RELOAD ||
                        d.algo == NK_SOFTMAX_THREE_PASS_RECOMPUTE;
  for (size_t i = r0; i < r1; i++) {
    double m = 0.0;
    for (size_t j = 0; j < C; j++)
      if (!isnan(yr[i * C + j])) m = fmax(m, fabs(yr[i * C + j]));
    if (has_sink && isfinite(lr[i])) m = fmax(m, exp(sr[i] - lr[i]));
    const double lb = 2e-6 * fmax(1.0, isfinite(lr[i]) ? fabs(lr[i]) : 0.0);
    for (size_t j = 0; j < C; j++) {
      const double ref = yr[i * C + j];
      double bound;
      if (dt != NK_DTYPE_F32) bound = fz_ulp(ref, dt) + (log_ && !exact_max ? lb : 0.0);
      else if (log_) bound = lb + fz_ulp(ref, dt);
      else bound = 2e-6 * m + 0x1p-148;
      FZ_CHECK(fz_close(got[i * C + j], ref, bound, dt),
               "fwd y[%zu][%zu] = %.9g, ref %.9g (bound %.3g) dt %d cols %zu algo %d log %d",
               i, j, got[i * C + j], ref, bound, dt, C, d.algo, log_);
    }
    if (lse)
      FZ_CHECK(fz_close(lse[i], lr[i], lb, NK_DTYPE_F32), "lse[%zu] = %.9g, ref %.9g", i,
               (double)lse[i], lr[i]);
  }
  if (use_rows || masked_nan) return 0;

  /* ---- backward from the op's own y ---- */
  fz_begin();
  nk_softmax_desc b = d;
  const unsigned bopt = fz_u8(&in);
  const int dx_on_dy = bopt & 1, dx_on_y = !dx_on_dy && (bopt & 2);
  b.y_stride = (ptrdiff_t)C + fz_pick(&in, 4);
  b.dy_stride = (ptrdiff_t)C + fz_pick(&in, 4);
  b.dx_stride = dx_on_dy ? b.dy_stride : dx_on_y ? b.y_stride : (ptrdiff_t)C + fz_pick(&in, 4);
  const fz_geom by = fz_rows(R, C, b.y_stride, dt), bdy = fz_rows(R, C, b.dy_stride, dt);
  const fz_geom bdx = fz_rows(R, C, b.dx_stride, dt);
  static double yv[MAXR * MAXC], dyr[MAXR * MAXC], dxr[MAXR * MAXC];
  void *y2 = fz_place(&in, &by, NULL);
  for (size_t i = 0; i < R; i++)
    for (size_t j = 0; j < C; j++) {
      fz_set(y2, i * (size_t)b.y_stride + j, got[i * C + j], dt);
      yv[i * C + j] = got[i * C + j];
    }
  void *dy = fz_place(&in, &bdy, NULL);
  const fz_dist tame = {0.0, 1.0, 0};
  fz_fill(&in, dy, &bdy, dt, &tame, dyr);
  void *dx = dx_on_dy ? dy : dx_on_y ? y2 : fz_place(&in, &bdx, NULL);
  fz_writable(dx, &bdx);
  /* 1 in 2: the _rows form over [0, k) and [k, R) (two calls, as a caller splitting rows) */
  const int brows = (bopt & 4) != 0;
  const size_t kcut = brows ? fz_pick(&in, (unsigned)R + 1) : 0;
  fz_snapshot();
  if (brows) {
    st = nk_softmax_bwd_rows(ctx, &b, 0, kcut, y2, dy, NULL, NULL, dx, NULL);
    if (st == NK_OK) st = nk_softmax_bwd_rows(ctx, &b, kcut, R, y2, dy, NULL, NULL, dx, NULL);
  } else {
    st = nk_softmax_bwd(ctx, &b, y2, dy, NULL, NULL, dx, NULL);
  }
  FZ_CHECK(st == NK_OK, "bwd%s: status %d (%s)", brows ? " rows" : "", st,
           nk_context_message(ctx));
  fz_check_arena(1, "bwd");
  nk_ref_softmax_bwd(R, C, yv, dyr, log_, b.scale, dxr, NULL);
  fz_read(dx, &bdx, dt, got);
  const double as = fabs((double)b.scale);
  for (size_t i = 0; i < R; i++) {
    double mdy = 0.0, sdy = 0.0, sy = 0.0;
    for (size_t j = 0; j < C; j++) {
      mdy = fmax(mdy, fabs(dyr[i * C + j])), sdy += fabs(dyr[i * C + j]);
      if (!log_) sy += fabs(yv[i * C + j]);
    }
    for (size_t j = 0; j < C; j++) {
      const double ref = dxr[i * C + j], yj = yv[i * C + j];
      double bound = log_ ? 4e-6 * as * (exp(yj) * sdy + fabs(dyr[i * C + j]))
                          : 4e-6 * as * fabs(yj) * mdy * (1.0 + sy);
      bound += as * 0x1p-140 + (dt != NK_DTYPE_F32 ? fz_ulp(ref, dt) : 0.0);
      FZ_CHECK(fz_close(got[i * C + j], ref, bound, dt),
               "bwd dx[%zu][%zu] = %.9g, ref %.9g (bound %.3g) dt %d cols %zu log %d", i, j,
               got[i * C + j], ref, bound, dt, C, log_);
    }
  }
  return 0;
}
