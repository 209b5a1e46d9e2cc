/*
 * tests/fuzz/cross_entropy.c — libFuzzer harness: nk_cross_entropy (reductions, ignore_index,
 * label smoothing, z-loss, grad, dlogits optional or in place, lse) with fuzzed logits and
 * targets (fuzz.h: decoder, arena, canaries). Bounds: those of tests/ops/cross_entropy.c:
 *   lse: 2e-6 max(1, |L|);
 *   loss_i: B_i + 1 ulp, B_i = 2e-6 (1 + 2 zl |L|) + 2e-6 ls mean|z| + 1e-15 |L| (1 + zl |L|);
 *   sum: sum B_i + 1 ulp; mean: that / counted;
 *   dlogits: 3e-6 |c| (p_j (1 + 2 zl |L|) + ls/n + (1 - ls)[j == t]) + |c| (1 + 2 zl |L|)
 *   2^-147 (+ 1 ulp for bf16/f16), c = grad w.
 */
#include <float.h>

#include "fuzz.h"
#include "reference.h"

#define MAXR 8
#define MAXC 200

enum { BAD_NONE, BAD_STRIDE, BAD_NEG_STRIDE, BAD_TARGET, BAD_SCALARS, BAD_OVERLAP,
       BAD_OVERFLOW, BAD_NULL, BAD_WORKSPACE, BAD_REDUCTION, BAD_COUNT };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in;
  fz_start(&in, "cross_entropy", data, size);

  unsigned bad = fz_pick(&in, 8) == 0 ? 1 + fz_pick(&in, BAD_COUNT - 1) : BAD_NONE;
  nk_context *ctx = fz_context(&in);
  const size_t R = fz_pick(&in, 16) == 0 ? 0 : 1 + fz_pick(&in, MAXR);
  const size_t C = fz_pick(&in, 4) == 0 ? 1 + fz_pick(&in, 3) : 1 + fz_pick(&in, MAXC);
  const nk_dtype dt = fz_dtype(&in);
  const unsigned opt = fz_u8(&in);
  nk_cross_entropy_desc d = nk_cross_entropy_desc_dense(R, C, dt);
  d.reduction = (nk_reduction)fz_pick(&in, 3);
  static const float ls_t[] = {0.0f, 0.0f, 0.1f, 1.0f, 0.5f};
  static const float zl_t[] = {0.0f, 0.0f, 1e-4f, 0.5f};
  static const float gr_t[] = {1.0f, 1.0f, 0.5f, -2.0f, 0.0f};
  d.label_smoothing = ls_t[fz_pick(&in, 5)];
  d.z_loss = zl_t[fz_pick(&in, 4)];
  d.grad = gr_t[fz_pick(&in, 5)];
  d.ignore_index = fz_u8(&in) & 1 ? -100 : (int64_t)fz_pick(&in, (unsigned)C);
  const int has_dl = opt & 1, inplace = has_dl && (opt & 2), has_lse = opt & 4;
  d.x_stride = (ptrdiff_t)(C + fz_pick(&in, 5));
  d.dx_stride = inplace ? d.x_stride : (ptrdiff_t)(C + fz_pick(&in, 5));

  const fz_dist xd = fz_dist_pick(&in, 16);
  const fz_geom gx = fz_rows(R, C, d.x_stride, dt), gdx = fz_rows(R, C, d.dx_stride, dt);
  const size_t nloss = d.reduction == NK_REDUCTION_NONE ? R : 1;
  const fz_geom gl = fz_vec(nloss, 4), gse = fz_vec(R, 4), gt = fz_vec(R, 8);
  static double xr[MAXR * MAXC], dzr[MAXR * MAXC], got[MAXR * MAXC], lossr[MAXR], lser[MAXR];
  void *x = fz_place(&in, &gx, NULL);
  fz_fill(&in, x, &gx, dt, &xd, xr);
  int64_t *target = fz_place(&in, &gt, NULL);
  for (size_t i = 0; i < R; i++)
    target[i] = fz_pick(&in, 8) == 0 ? d.ignore_index : (int64_t)fz_pick(&in, (unsigned)C);
  float *loss = fz_place(&in, &gl, NULL);
  void *dl = has_dl ? (inplace ? x : fz_place(&in, &gdx, NULL)) : NULL;
  float *lse = has_lse ? fz_place(&in, &gse, NULL) : NULL;
  size_t wsb = 0;
  FZ_CHECK(nk_cross_entropy_workspace_size(&d, &wsb) == NK_OK, "workspace size");
  const fz_geom gw = fz_vec(wsb, 1);
  void *ws = wsb ? fz_place(&in, &gw, NULL) : NULL;

  nk_status want = NK_OK;
  if (R == 0 && bad != BAD_OVERFLOW) bad = BAD_NONE; /* zero sizes: a no-op, nothing validated */
  switch (bad) {
  case BAD_STRIDE: d.x_stride = (ptrdiff_t)C - 1 - fz_pick(&in, 3); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NEG_STRIDE: if (has_dl) { d.dx_stride = -(ptrdiff_t)(1 + fz_pick(&in, 100)); want = NK_STATUS_INVALID_ARGUMENT; } break;
  case BAD_TARGET: if (R > 0) { const int64_t t[] = {(int64_t)C, -1, INT64_MIN, INT64_MAX, (int64_t)C + 7}; int64_t v = t[fz_pick(&in, 5)]; if (v != d.ignore_index) { target[fz_pick(&in, (unsigned)R)] = v; want = NK_STATUS_INVALID_ARGUMENT; } } break;
  case BAD_SCALARS: { const unsigned k = fz_pick(&in, 5);
    if (k == 0) d.label_smoothing = -0.1f; else if (k == 1) d.label_smoothing = 1.5f; else if (k == 2) d.z_loss = -1.0f;
    else if (k == 3) d.z_loss = INFINITY; else d.label_smoothing = NAN;
    want = NK_STATUS_INVALID_ARGUMENT; break; }
  case BAD_OVERLAP: if (R > 0 && has_lse) { lse = loss; want = d.reduction == NK_REDUCTION_NONE || R > 1 ? NK_STATUS_INVALID_ARGUMENT : want; if (want == NK_OK) lse = has_lse ? fz_place(&in, &gse, NULL) : NULL; } break;
  case BAD_OVERFLOW: d.rows = SIZE_MAX / (1 + fz_pick(&in, 8)); d.x_stride = d.dx_stride = PTRDIFF_MAX / (1 + fz_pick(&in, 4)); d.cols = 1; d.reduction = NK_REDUCTION_NONE; want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NULL: if (R > 0) { target = NULL; want = NK_STATUS_INVALID_ARGUMENT; } break;
  case BAD_WORKSPACE: if (wsb) { wsb--; want = NK_STATUS_MISUSE; } break;
  case BAD_REDUCTION: d.reduction = (nk_reduction)(3 + fz_pick(&in, 20)); want = NK_STATUS_INVALID_ARGUMENT; break;
  }
  if (want == NK_OK) {
    if (R > 0 || d.reduction != NK_REDUCTION_NONE) fz_writable(loss, &gl);
    fz_writable(dl, &gdx), fz_writable(lse, &gse), fz_writable(ws, &gw);
  }
  fz_snapshot();
  nk_status st = nk_cross_entropy(ctx, &d, x, target, loss, dl, lse, ws, wsb);
  if (want != NK_OK) {
    FZ_CHECK(st == want, "bad %u: status %d, want %d (%s)", bad, st, want,
             nk_context_message(ctx));
    FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "no message for a failure");
    fz_check_arena(0, "cross_entropy");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "status %d (%s)", st, nk_context_message(ctx));
  fz_check_arena(1, "cross_entropy");
  fz_valid++;
  if (R == 0 || C == 0) return 0;

  const double ls = d.label_smoothing, zl = d.z_loss;
  nk_ref_cross_entropy(R, C, xr, target, d.ignore_index, ls, zl, (int)d.reduction, d.grad,
                       lossr, has_dl ? dzr : NULL, lser);
  size_t counted = 0;
  double bsum = 0.0;
  for (size_t i = 0; i < R; i++) {
    const double L = lser[i];
    if (lse)
      FZ_CHECK(fz_close(lse[i], L, 2e-6 * fmax(1.0, isfinite(L) ? fabs(L) : 0.0), NK_DTYPE_F32),
               "lse[%zu] = %.9g, ref %.9g", i, (double)lse[i], L);
    if (target[i] == d.ignore_index) continue;
    counted++;
    double mz = 0.0;
    for (size_t j = 0; j < C; j++) mz += fabs(xr[i * C + j]);
    /* (with smoothing the loss takes the mean logit from f32 partial sums, which overflowed
     * at two logits of -FLT_MAX: tests/fuzz/known/cross_entropy-smoothing-logit-sum-overflow;
     * the partials now sum z * 2^-11, NK_SOFTMAX_TDOWN) */
    mz /= (double)C;
    const double aL = isfinite(L) ? fabs(L) : 0.0;
    /* (the smoothing term only with smoothing: ls 0 times mean|z| = inf, a row with a -inf
     * logit, was NaN: tests/fuzz/known/cross_entropy-bound-nan-without-smoothing) */
    const double B = 2e-6 * (1 + 2 * zl * aL) + (ls != 0.0 ? 2e-6 * ls * mz : 0.0) +
                     1e-15 * aL * (1 + zl * aL);
    bsum += B;
    if (d.reduction == NK_REDUCTION_NONE)
      FZ_CHECK(fz_close(loss[i], lossr[i], B + fz_ulp(lossr[i], NK_DTYPE_F32), NK_DTYPE_F32),
               "loss[%zu] = %.9g, ref %.9g", i, (double)loss[i], lossr[i]);
  }
  if (d.reduction != NK_REDUCTION_NONE) {
    const double b = (d.reduction == NK_REDUCTION_MEAN && counted ? bsum / (double)counted : bsum);
    FZ_CHECK(fz_close(loss[0], lossr[0], b + fz_ulp(lossr[0], NK_DTYPE_F32), NK_DTYPE_F32),
             "loss = %.9g, ref %.9g (reduction %d)", (double)loss[0], lossr[0], d.reduction);
  }
  if (!has_dl) return 0;
  fz_read(dl, &gdx, dt, got);
  const double w = d.reduction == NK_REDUCTION_MEAN ? (counted ? 1.0 / (double)counted : 0.0) : 1.0;
  const double c = fabs((double)d.grad) * w;
  for (size_t i = 0; i < R; i++) {
    const double L = lser[i], aL = isfinite(L) ? fabs(L) : 0.0;
    /* p_j = e^{x_j - m} / sum e^{x_k - m} (e^{x_j - L} loses log s where |L| ~ 1e30) */
    double m = -INFINITY, sp = 0.0;
    for (size_t j = 0; j < C; j++) m = fmax(m, xr[i * C + j]);
    for (size_t j = 0; j < C && isfinite(L); j++) sp += exp(xr[i * C + j] - m);
    /* header: a = grad w (1 + 2 zl L) is an f32 intermediate; where it overflows, elements
     * with p_j > 0 give +-inf (p_j == 0 gives b: it was 0 * inf = NaN, input
     * cross_entropy-zloss-a-overflow-nan) */
    const double A = (double)d.grad * w * (1.0 + 2.0 * zl * L);
    const int a_over = isfinite(L) && fabs(A) >= 0x1.fffffep127 * (1.0 - 1e-6);
    for (size_t j = 0; j < C; j++) {
      const double ref = dzr[i * C + j];
      const double p = isfinite(L) ? exp(xr[i * C + j] - m) / sp : 0.0;
      if (a_over && p > 0.0 && isinf(got[i * C + j]) && (got[i * C + j] > 0) == (A > 0)) continue;
      double bound = 3e-6 * c * (p * (1 + 2 * zl * aL) + ls / (double)C +
                                 (1 - ls) * ((int64_t)j == target[i])) +
                     c * (1 + 2 * zl * aL) * 0x1p-147;
      if (dt != NK_DTYPE_F32) bound += fz_ulp(ref, dt);
      FZ_CHECK(fz_close(got[i * C + j], ref, bound, dt),
               "dlogits[%zu][%zu] = %.9g, ref %.9g (bound %.3g) dt %d", i, j, got[i * C + j], ref,
               bound, dt);
    }
  }
  return 0;
}
