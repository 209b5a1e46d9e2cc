/*
 * tests/fuzz/moments.c — libFuzzer harness: the moments API and what produces or consumes
 * moments (fuzz.h explains the decoder, the guard-page arena and the canary check). One input is
 * one of these calls:
 *   OP_ROWS / OP_COLS   nk_moments_rows / nk_moments_cols, sometimes split in two parts (columns
 *                       of the rows, rows of the columns) merged with nk_moments_merge_n, then
 *                       nk_moments_merge and nk_moments_finalize of the first result;
 *   OP_ROWNORM          nk_layernorm_fwd_moments / nk_rmsnorm_fwd_moments on a column slice of
 *                       the rows with moments of the whole rows (tensor parallelism);
 *   OP_BN               nk_batchnorm_moments (NCHW/NHWC, padded strides, workspace);
 *   OP_ALPHA            nk_tta_alpha_bn_stats;
 *   OP_UNMIX            nk_unmixtns_lambda, nk_unmixtns_noise, nk_unmixtns_init, nk_unmixtns_fwd;
 *   OP_ADAB2N           nk_adab2n_next_eta, nk_adab2n_weights, nk_adab2n_fwd.
 * Debugging: FZ_DUMP=1 in the environment prints the data of a failing check.
 * Bounds:
 *   moments (the header; tests/ops/moments.c uses 1e-6 M2, which its data meet): count exact;
 *     mean within 5e-7 sd + 4 eps |mean| of the float64 two-pass moments, M2 within 2e-6 M2
 *     (the worst case of a block's f32 sums; also for parts merged with Chan's formula);
 *     non-finite data: mean and M2 NaN; an empty part merges bit for bit; finalize: the header's
 *     formulas in double, rounded once.
 *   row norms with moments: the LayerNorm bounds of tests/ops/moments.c and the rownorm harness
 *     (f32 2e-6 max(|y|, |y - beta|) of the slice + 2^-148; bf16/f16 1 ulp + that; rstd 2e-6;
 *     mean 1 ulp + 1e-6 sd).
 *   test-time statistics (tests/ops/ttstats.c, one step from the same state): f32 outputs
 *     1 ulp + 1e-12 * scale (scale: the magnitude of the inputs, squared for variances), double
 *     outputs (p, w, omega, eta) 1e-12 relative + 1e-15; AdaB2N's reg 1e-12 relative + 1e-13 of
 *     its scale (as the test's 1e-13 absolute at scale 1). The library gets moments of the data
 *     computed here in double (two-pass), the reference the data themselves, as in the test.
 */
#include <float.h>

#include "fuzz.h"
#include "reference.h"

#define MAXE 4200 /* elements of one data tensor */
#define MAXR 72
#define MAXB 6
#define MAXCH 8
#define MAXL 5
#define MAXK 5
#define MAXT 4

enum { OP_ROWS, OP_COLS, OP_ROWNORM, OP_BN, OP_ALPHA, OP_UNMIX, OP_ADAB2N, OP_COUNT };
enum { BAD_NONE, BAD_STRIDE, BAD_NEG_STRIDE, BAD_SCALAR, BAD_COUNT_MOM, BAD_OVERLAP,
       BAD_OVERFLOW, BAD_NULL, BAD_ENUM, BAD_OTHER, BAD_COUNT };

static const float eps_table[] = {1e-5f, 1e-6f, 1e-3f, 0x1p-23f, 1.0f, 1e-30f, 0x1p-7f, 0.0f};

static double xr[MAXE], gr_[MAXE], br_[MAXE], yr[MAXE], got[MAXE], mr[MAXR], rsr[MAXR];

/* ---------------------------------------------------------------- helpers ---------------- */

static void fail_checks(nk_status st, nk_status want, unsigned bad, nk_context *ctx,
                        const char *what) {
  FZ_CHECK(st == want, "%s: bad %u: status %d, want %d (%s)", what, bad, st, want,
           ctx ? nk_context_message(ctx) : "");
  FZ_CHECK(ctx == NULL || nk_context_message(ctx)[0], "%s: no message for a failure", what);
  fz_check_arena(0, what);
}

/* Library moments against the float64 two-pass moments of the same n values (tests/ops/moments.c
 * check_moments). */
static void check_mom(const char *what, size_t i, const nk_moments *m, size_t n, const double *v,
                      ptrdiff_t stride) {
  FZ_CHECK(m->count == (double)n, "%s[%zu]: count %.17g, want %zu", what, i, m->count, n);
  if (n == 0) return;
  double mean, m2;
  nk_ref_moments(n, v, stride, &mean, &m2);
  if (isnan(mean)) {
    FZ_CHECK(isnan(m->mean) && isnan(m->m2), "%s[%zu]: non-finite data, mean %g m2 %g", what, i,
             m->mean, m->m2);
    return;
  }
  const double sd = sqrt(m2 / (double)n);
  if (getenv("FZ_DUMP") && (fabs(m->m2 - m2) > 2e-6 * m2 || fabs(m->mean - mean) > 5e-7 * sd + 4 * DBL_EPSILON * fabs(mean)))
    for (size_t k = 0; k < n; k++) fprintf(stderr, "v[%zu] = %a (%.9g)\n", k, v[k * stride], v[k * stride]);
  FZ_CHECK(fabs(m->mean - mean) <= 5e-7 * sd + 4 * DBL_EPSILON * fabs(mean),
           "%s[%zu]: mean %.17g, reference %.17g (sd %.3g, n %zu)", what, i, m->mean, mean, sd, n);
  FZ_CHECK(fabs(m->m2 - m2) <= 2e-6 * m2, "%s[%zu]: m2 %.17g, reference %.17g (n %zu)", what, i,
           m->m2, m2, n);
}

/* Moments (two-pass, double) of n values v[0], v[s], ... (what the test-time tests give). */
static nk_moments dmom(size_t n, const double *v, size_t s) {
  double a = 0.0, q = 0.0;
  for (size_t k = 0; k < n; k++) a += v[k * s];
  const double mu = a / (double)n;
  for (size_t k = 0; k < n; k++) q += (v[k * s] - mu) * (v[k * s] - mu);
  return (nk_moments){(double)n, mu, q};
}

/* f32 output of one step (tests/ops/ttstats.c F32_STEP). */
static void chk_f32(const char *what, size_t n, const float *g, const double *ref, double scale) {
  for (size_t i = 0; i < n; i++) {
    const double b = fz_ulp(ref[i], NK_DTYPE_F32) + 1e-12 * scale;
    /* +-inf is the correct f32 rounding of anything beyond FLT_MAX: accepted where the bound
     * reaches there (the reference's own cancellation: UnMix-TNS var_bar of instances ~1e30, true
     * value 3e43, reference 0 from (1/K) sum muhat^2 - mean_bar^2) */
    if (isinf(g[i]) && !isnan(ref[i]) && (g[i] > 0 ? ref[i] + b >= FLT_MAX : ref[i] - b <= -FLT_MAX))
      continue;
    FZ_CHECK(fz_close(g[i], ref[i], b, NK_DTYPE_F32),
             "%s[%zu] = %.9g, ref %.17g (scale %.3g)", what, i, (double)g[i], ref[i], scale);
  }
}
/* double output (DOUBLE). */
static void chk_dbl(const char *what, size_t n, const double *g, const double *ref) {
  for (size_t i = 0; i < n; i++)
    FZ_CHECK((isnan(ref[i]) && isnan(g[i])) || g[i] == ref[i] ||
                 fabs(g[i] - ref[i]) <= 1e-12 * fabs(ref[i]) + 1e-15,
             "%s[%zu] = %.17g, ref %.17g", what, i, g[i], ref[i]);
}

static void *place_f32(fz_in *in, size_t n, const double *v) {
  const fz_geom g = fz_vec(n, 4);
  float *p = fz_place(in, &g, NULL);
  for (size_t i = 0; v && i < n; i++) p[i] = (float)v[i];
  return p;
}
static void *place_n(fz_in *in, size_t n, size_t es) {
  const fz_geom g = fz_vec(n, es);
  return fz_place(in, &g, NULL);
}
static void writable_n(const void *p, size_t n, size_t es) {
  const fz_geom g = fz_vec(n, es);
  fz_writable(p, &g);
}
static double amax(size_t n, const double *v) {
  double m = 0.0;
  for (size_t i = 0; i < n; i++)
    if (isfinite(v[i])) m = fmax(m, fabs(v[i]));
  return m;
}

/* ---------------------------------------------------- moments of rows and columns -------- */

static int op_rowscols(fz_in *in, unsigned bad, int by_cols) {
  nk_context *ctx = fz_context(in);
  const nk_dtype dt = fz_dtype(in);
  size_t R, C;
  const unsigned sel = fz_pick(in, 8);
  if (by_cols) {
    R = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, MAXR);
    C = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, 20);
  } else {
    R = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, 8);
    C = sel == 0 ? 1 + fz_pick(in, 3) : sel < 5 ? 1 + fz_pick(in, 80) : sel < 7 ? 1 + fz_pick(in, 300)
                                                                               : 1000 + fz_pick(in, 100);
    if (C >= 1000 && R > 3) R = 3;
    if (fz_pick(in, 16) == 0) C = 0;
  }
  const ptrdiff_t stride = (ptrdiff_t)(C + fz_pick(in, 5));
  const int split = fz_u8(in) & 1;
  const size_t along = by_cols ? R : C; /* the dimension a split cuts */
  const size_t cut = split ? fz_pick(in, (unsigned)(along + 1 > 256 ? 256 : along + 1)) % (along + 1) : along;
  const size_t nout = by_cols ? C : R;
  const fz_dist xd = fz_dist_pick(in, 24);
  const fz_geom gx = fz_rows(R, C, stride, dt);
  void *x = fz_place(in, &gx, NULL);
  fz_fill(in, x, &gx, dt, &xd, xr);
  nk_moments *out = place_n(in, nout, sizeof(nk_moments));
  nk_moments *out2 = split ? place_n(in, nout, sizeof(nk_moments)) : NULL;
  const size_t es = nk_dtype_size(dt);
  /* the parts: rows [0, R) x cols [0, cut) and [cut, C) (or rows [0, cut), [cut, R) by column) */
  size_t r1 = R, c1 = C;
  const void *x2 = NULL;
  if (by_cols) r1 = cut, x2 = (const char *)x + cut * (size_t)stride * es;
  else c1 = cut, x2 = (const char *)x + cut * es;
  ptrdiff_t s = stride;
  const void *xp = x;
  nk_dtype dtc = dt;
  nk_status want = NK_OK;
  size_t rr = R, cc = C;
  if (nout == 0 && bad != BAD_ENUM) bad = BAD_NONE;
  if ((R == 0 || C == 0) && bad != BAD_ENUM && bad != BAD_NULL && bad != BAD_SCALAR) bad = BAD_NONE;
  float fin[4] = {-7.0f, -7.0f, -7.0f, -7.0f};
  switch (bad) {
  case BAD_STRIDE: s = (ptrdiff_t)C - 1 - fz_pick(in, 3); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NEG_STRIDE: s = -(ptrdiff_t)(1 + fz_pick(in, 100)); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_OVERFLOW: rr = SIZE_MAX / (1 + fz_pick(in, 8)); cc = 1; s = PTRDIFF_MAX / (1 + fz_pick(in, 4));
    want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NULL: if (nout) { if (R && C && (fz_u8(in) & 1)) xp = NULL; else out = NULL; want = NK_STATUS_INVALID_ARGUMENT; } break;
  case BAD_ENUM: dtc = (nk_dtype)(3 + fz_pick(in, 100)); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_OVERLAP: /* out written over x */
    if (nout * sizeof(nk_moments) <= fz_span(&gx) * es) { out = (nk_moments *)((uintptr_t)x & ~(uintptr_t)7); want = NK_STATUS_INVALID_ARGUMENT; } break;
  case BAD_OTHER: out = (nk_moments *)((char *)out + 4); want = NK_STATUS_INVALID_ARGUMENT; break; /* misaligned */
  case BAD_SCALAR: { /* finalize with a bad eps or NULL moments */
    const float e[] = {-1e-5f, NAN, INFINITY, -INFINITY};
    const nk_moments m = {3, 1, 2};
    const unsigned k = fz_pick(in, 5);
    const nk_status st = nk_moments_finalize(k == 4 ? NULL : &m, k == 4 ? 1e-5f : e[k], &fin[0], &fin[1], &fin[2], &fin[3]);
    FZ_CHECK(st == NK_STATUS_INVALID_ARGUMENT, "finalize: bad eps/NULL: status %d", st);
    for (int q = 0; q < 4; q++) FZ_CHECK(fin[q] == -7.0f, "finalize wrote on failure");
    bad = BAD_NONE; break; }
  default: bad = BAD_NONE; break;
  }
  if (want == NK_OK) {
    writable_n(out, nout, sizeof(nk_moments));
    writable_n(out2, nout, sizeof(nk_moments));
  }
  fz_snapshot();
  nk_status st;
  if (want != NK_OK || !split) {
    st = by_cols ? nk_moments_cols(ctx, rr, cc, dtc, xp, s, out) : nk_moments_rows(ctx, rr, cc, dtc, xp, s, out);
    if (want != NK_OK) {
      fail_checks(st, want, bad, ctx, by_cols ? "moments_cols" : "moments_rows");
      return 0;
    }
    FZ_CHECK(st == NK_OK, "status %d (%s)", st, nk_context_message(ctx));
  } else {
    const size_t r2 = by_cols ? R - r1 : R, c2 = by_cols ? C : C - c1;
    st = by_cols ? nk_moments_cols(ctx, r1, c1, dt, x, s, out) : nk_moments_rows(ctx, r1, c1, dt, x, s, out);
    FZ_CHECK(st == NK_OK, "part 1: status %d (%s)", st, nk_context_message(ctx));
    st = by_cols ? nk_moments_cols(ctx, r2, c2, dt, x2, s, out2) : nk_moments_rows(ctx, r2, c2, dt, x2, s, out2);
    FZ_CHECK(st == NK_OK, "part 2: status %d (%s)", st, nk_context_message(ctx));
  }
  fz_check_arena(1, by_cols ? "moments_cols" : "moments_rows");
  fz_valid++;
  if (split) { /* an empty part leaves the other bit for bit */
    static nk_moments keep[MAXR + 32];
    memcpy(keep, (r1 == 0 || c1 == 0) ? out2 : out, nout * sizeof(nk_moments));
    if (fz_u8(in) & 1) nk_moments_merge_n(nout, out, out2);
    else for (size_t i = 0; i < nout; i++) nk_moments_merge(&out[i], &out2[i]);
    const int empty = by_cols ? (cut == 0 || cut == R) : (cut == 0 || cut == C);
    if (empty) FZ_CHECK(memcmp(keep, out, nout * sizeof(nk_moments)) == 0, "merge with an empty side changed it");
  }
  for (size_t i = 0; i < nout; i++)
    check_mom(by_cols ? "cols" : "rows", i, &out[i], by_cols ? R : C, by_cols ? xr + i : xr + i * C,
              by_cols ? (ptrdiff_t)C : 1);
  if (nout) { /* finalize: the header's formulas, in double, rounded once */
    const float eps = eps_table[fz_pick(in, 8)];
    const nk_moments m = out[0];
    float mean = -7.0f, var = -7.0f, vu = -7.0f, rs = -7.0f;
    const unsigned which = fz_u8(in);
    st = nk_moments_finalize(&m, eps, which & 1 ? &mean : NULL, which & 2 ? &var : NULL,
                             which & 4 ? &vu : NULL, which & 8 ? &rs : NULL);
    FZ_CHECK(st == NK_OK, "finalize: status %d", st);
    const double n = m.count, v = n > 0 ? m.m2 / n : NAN;
    const float em = n > 0 ? (float)m.mean : NAN, ev = (float)v,
                eu = n > 1 ? (float)(m.m2 / (n - 1)) : NAN, er = (float)(1.0 / sqrt(v + (double)eps));
#define SAMEF(a, b) ((isnan(a) && isnan(b)) || (a) == (b))
    FZ_CHECK(!(which & 1) || SAMEF(mean, em), "finalize mean %.9g want %.9g", (double)mean, (double)em);
    FZ_CHECK(!(which & 2) || SAMEF(var, ev), "finalize var %.9g want %.9g", (double)var, (double)ev);
    FZ_CHECK(!(which & 4) || SAMEF(vu, eu), "finalize var_unbiased %.9g want %.9g", (double)vu, (double)eu);
    FZ_CHECK(!(which & 8) || SAMEF(rs, er), "finalize rstd %.9g want %.9g", (double)rs, (double)er);
    FZ_CHECK((which & 1) || mean == -7.0f, "finalize wrote a NULL output");
  }
  return 0;
}

/* ---------------------------------------------------------- row norms with moments -------- */

static int op_rownorm(fz_in *in, unsigned bad) {
  nk_context *ctx = fz_context(in);
  const int rms = fz_u8(in) & 1;
  const nk_dtype dt = fz_dtype(in);
  const nk_dtype pdt = fz_u8(in) & 1 ? dt : NK_DTYPE_F32;
  const size_t R = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, 6);
  const size_t C = 1 + fz_pick(in, fz_u8(in) & 1 ? 200 : 20);
  const size_t c0 = fz_pick(in, (unsigned)C), w = 1 + fz_pick(in, (unsigned)(C - c0));
  const size_t cut = fz_pick(in, (unsigned)(C + 1)); /* moments of [0, cut) merged with [cut, C) */
  const unsigned opt = fz_u8(in);
  const int has_g = opt & 1, has_b = opt & 2, offset = has_g && (opt & 4), inplace = opt & 8,
            has_mean = opt & 16, has_rstd = opt & 32;
  const float eps = eps_table[fz_pick(in, 7)];
  nk_norm_desc d = nk_norm_desc_dense(R, w, dt, eps);
  d.param_dtype = pdt;
  d.flags = offset ? NK_NORM_GAMMA_OFFSET : 0;
  d.x_stride = (ptrdiff_t)(C + fz_pick(in, 5));
  d.y_stride = inplace ? d.x_stride : (ptrdiff_t)(w + fz_pick(in, 5));
  const size_t es = nk_dtype_size(dt);
  const fz_dist xd = fz_dist_pick(in, 16), tame = {0.0, 1.0, 0};
  const fz_geom gx = fz_rows(R, C, d.x_stride, dt), gy = fz_rows(R, w, d.y_stride, dt);
  const fz_geom gp = fz_vec(w, nk_dtype_size(pdt)), gs = fz_vec(R, 4);
  void *x = fz_place(in, &gx, NULL);
  fz_fill(in, x, &gx, dt, &xd, xr);
  nk_moments *mom = place_n(in, R, sizeof(nk_moments));
  nk_moments *mom2 = place_n(in, R, sizeof(nk_moments));
  FZ_CHECK(nk_moments_rows(ctx, R, cut, dt, x, d.x_stride, mom) == NK_OK, "moments part 1");
  FZ_CHECK(nk_moments_rows(ctx, R, C - cut, dt, (char *)x + cut * es, d.x_stride, mom2) == NK_OK,
           "moments part 2");
  nk_moments_merge_n(R, mom, mom2);
  void *gamma = NULL, *beta = NULL;
  for (size_t j = 0; j < C; j++) gr_[j] = 1.0, br_[j] = 0.0;
  if (has_g) {
    gamma = fz_place(in, &gp, NULL);
    fz_fill(in, gamma, &gp, pdt, &tame, gr_ + c0);
    if (offset) for (size_t j = 0; j < C; j++) if (j < c0 || j >= c0 + w) gr_[j] = 0.0;
  }
  if (has_b) {
    beta = fz_place(in, &gp, NULL);
    fz_fill(in, beta, &gp, pdt, &tame, br_ + c0);
  }
  const void *xs = (char *)x + c0 * es;
  void *y = inplace ? (void *)xs : fz_place(in, &gy, NULL);
  float *mean = has_mean ? fz_place(in, &gs, NULL) : NULL, *rstd = has_rstd ? fz_place(in, &gs, NULL) : NULL;

  nk_status want = NK_OK;
  if (R == 0 && bad != BAD_SCALAR && bad != BAD_ENUM) bad = BAD_NONE;
  switch (bad) {
  case BAD_STRIDE: d.x_stride = (ptrdiff_t)w - 1 - fz_pick(in, 3); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NEG_STRIDE: d.y_stride = -(ptrdiff_t)(1 + fz_pick(in, 100)); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_SCALAR: { const unsigned k = fz_pick(in, 6);
    if (k < 4) { const float e[] = {0.0f, -1e-5f, NAN, INFINITY}; d.eps = e[k]; want = NK_STATUS_INVALID_ARGUMENT; }
    else { const float l[] = {0.5f, 2.0f}; d.lns_scale = l[k - 4]; want = NK_STATUS_UNSUPPORTED; }
    break; }
  case BAD_COUNT_MOM: { const double cnt[] = {0.0, 0.5, -1.0, NAN}; mom[fz_pick(in, (unsigned)R)].count = cnt[fz_pick(in, 4)]; want = NK_STATUS_INVALID_ARGUMENT; break; }
  case BAD_OVERLAP:
    if (w > 1 && !inplace) { y = (char *)xs + es; want = NK_STATUS_INVALID_ARGUMENT; }
    else { rstd = (float *)((char *)mom + 8); want = NK_STATUS_INVALID_ARGUMENT; } /* over an input */
    break;
  case BAD_OVERFLOW: d.rows = SIZE_MAX / (1 + fz_pick(in, 8)); d.x_stride = d.y_stride = PTRDIFF_MAX / (1 + fz_pick(in, 4)); d.cols = 1; want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NULL: { const unsigned k = fz_pick(in, 3); if (k == 0) xs = NULL; else if (k == 1) y = NULL; else mom = NULL; want = NK_STATUS_INVALID_ARGUMENT; break; }
  case BAD_ENUM: { const unsigned k = fz_pick(in, 3);
    if (k == 0) d.dtype = (nk_dtype)(3 + fz_pick(in, 100));
    else if (k == 1) d.flags |= 1u << (1 + fz_pick(in, 31));
    else if (has_g) d.flags = NK_NORM_GAMMA_OFFSET, gamma = NULL;
    else d.param_dtype = (nk_dtype)(3 + fz_pick(in, 100));
    want = NK_STATUS_INVALID_ARGUMENT; break; }
  default: bad = BAD_NONE; break;
  }
  if (want == NK_OK) {
    fz_writable(y, &gy);
    fz_writable(rms ? NULL : mean, &gs), fz_writable(rstd, &gs);
  }
  fz_snapshot();
  const nk_status st = rms ? nk_rmsnorm_fwd_moments(ctx, &d, mom, xs, gamma, beta, y, rstd)
                           : nk_layernorm_fwd_moments(ctx, &d, mom, xs, gamma, beta, y, mean, rstd);
  if (want != NK_OK) {
    fail_checks(st, want, bad, ctx, rms ? "rmsnorm_fwd_moments" : "layernorm_fwd_moments");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "status %d (%s)", st, nk_context_message(ctx));
  fz_check_arena(1, rms ? "rmsnorm_fwd_moments" : "layernorm_fwd_moments");
  fz_valid++;
  if (R == 0) return 0;
  if (rms) nk_ref_rmsnorm_fwd(R, C, xr, gr_, has_b ? br_ : NULL, offset, eps, yr, rsr);
  else nk_ref_layernorm_fwd(R, C, xr, gr_, has_b ? br_ : NULL, offset, eps, yr, mr, rsr);
  fz_read(y, &gy, dt, got);
  for (size_t i = 0; i < R; i++) {
    if (!fz_finite_all(xr + i * C, C)) { /* moments NaN: every output of the row NaN */
      for (size_t j = 0; j < w; j++)
        FZ_CHECK(isnan(got[i * w + j]), "non-finite row %zu: y[%zu] = %g", i, j, got[i * w + j]);
      FZ_CHECK((!rstd || isnan(rstd[i])) && (rms || !mean || isnan(mean[i])), "non-finite row %zu: statistics", i);
      continue;
    }
    /* m: the bound's max|ref| of the row. The slice is a view of a row whose statistics are of
     * all C columns; the row's other columns have no gamma here, so the scale is the slice's
     * max(|y|, |y - beta|) and max|g of the slice| times max|xhat| over the whole row (what
     * max|ref| of the row is with that gamma; tests/ops/moments.c takes max|ref| over the whole
     * row too) */
    double m = 0.0, xh = 0.0, gm = 0.0;
    for (size_t j = 0; j < C; j++) xh = fmax(xh, fabs((xr[i * C + j] - (rms ? 0.0 : mr[i])) * rsr[i]));
    for (size_t j = c0; j < c0 + w; j++) {
      m = fmax(m, fabs(yr[i * C + j]));
      if (has_b) m = fmax(m, fabs(yr[i * C + j] - br_[j]));
      gm = fmax(gm, fabs(offset ? 1.0 + gr_[j] : gr_[j]));
    }
    m = fmax(m, gm * xh);
    if (getenv("FZ_DUMP"))
      for (size_t j = 0; j < C; j++)
        fprintf(stderr, "row %zu x[%zu] = %a (%.9g) ref %.9g\n", i, j, xr[i * C + j], xr[i * C + j], yr[i * C + j]);
    if (getenv("FZ_DUMP")) fprintf(stderr, "mom %.17g %.17g %.17g ref mean %.17g rstd %.17g\n", mom[i].count, mom[i].mean, mom[i].m2, mr[i], rsr[i]);
    for (size_t j = 0; j < w; j++) {
      const double ref = yr[i * C + c0 + j];
      const double bound = dt == NK_DTYPE_F32 ? 2e-6 * m + 0x1p-148 : fz_ulp(ref, dt) + 2e-6 * m;
      FZ_CHECK(fz_close(got[i * w + j], ref, bound, dt),
               "%s y[%zu][%zu] = %.9g, ref %.9g (bound %.3g) dt %d cols %zu slice %zu+%zu",
               rms ? "rmsnorm" : "layernorm", i, j, got[i * w + j], ref, bound, dt, C, c0, w);
    }
    if (rstd)
      FZ_CHECK(fz_close(rstd[i], rsr[i], 2e-6 * rsr[i], NK_DTYPE_F32), "rstd[%zu] %.9g ref %.9g",
               i, (double)rstd[i], rsr[i]);
    if (!rms && mean) {
      const double sd = 1.0 / rsr[i];
      FZ_CHECK(fz_close(mean[i], mr[i], fz_ulp(mr[i], NK_DTYPE_F32) + 1e-6 * (isfinite(sd) ? sd : 0.0),
                        NK_DTYPE_F32),
               "mean[%zu] %.9g ref %.9g", i, (double)mean[i], mr[i]);
    }
  }
  return 0;
}

/* ------------------------------------------------------------ BatchNorm moments ---------- */

static int op_bn(fz_in *in, unsigned bad) {
  nk_context *ctx = fz_context(in);
  const nk_dtype dt = fz_dtype(in);
  const size_t N = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, 4);
  const size_t C = 1 + fz_pick(in, 12), S = 1 + fz_pick(in, fz_u8(in) & 1 ? 40 : 4);
  const nk_layout lay = fz_u8(in) & 1 ? NK_LAYOUT_NSC : NK_LAYOUT_NCS;
  nk_batchnorm_desc d = nk_chnorm_desc_dense(N, C, S, lay, dt, 1e-5f);
  d.flags = NK_CHNORM_TRAINING;
  const size_t rows = lay == NK_LAYOUT_NCS ? C : S, len = lay == NK_LAYOUT_NCS ? S : C;
  d.x_row_stride = (ptrdiff_t)(len + fz_pick(in, 4));
  d.x_n_stride = (ptrdiff_t)((rows - 1) * (size_t)d.x_row_stride + len + fz_pick(in, 4));
  const fz_geom gx = {N, rows, len, d.x_n_stride, d.x_row_stride, nk_dtype_size(dt)};
  const fz_dist xd = fz_dist_pick(in, 16);
  void *x = fz_place(in, &gx, NULL);
  fz_fill(in, x, &gx, dt, &xd, xr); /* xr dense [n][row][k] */
  nk_moments *out = place_n(in, C, sizeof(nk_moments));
  size_t wsb = 0;
  FZ_CHECK(nk_batchnorm_fwd_workspace_size(&d, &wsb) == NK_OK, "workspace size");
  /* any address (bytes): the operator aligns the workspace inside (a misaligned workspace gave
   * misaligned double stores in chnorm.c red_task before; UBSan) */
  void *ws = wsb ? place_n(in, wsb, 1) : NULL;
  nk_status want = NK_OK;
  const void *xp = x;
  size_t wsz = wsb;
  if (N == 0 && bad != BAD_SCALAR) bad = BAD_NONE;
  switch (bad) {
  case BAD_STRIDE: d.x_row_stride = (ptrdiff_t)len - 1 - fz_pick(in, 3); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NEG_STRIDE: d.x_n_stride = -(ptrdiff_t)(1 + fz_pick(in, 100)); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NULL: if (fz_u8(in) & 1) xp = NULL; else out = NULL; want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_OVERLAP: out = (nk_moments *)((uintptr_t)x & ~(uintptr_t)7); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_OVERFLOW: d.batch = SIZE_MAX / (1 + fz_pick(in, 8)); d.x_n_stride = PTRDIFF_MAX / (1 + fz_pick(in, 4)); want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_ENUM: if (fz_u8(in) & 1) d.dtype = (nk_dtype)(3 + fz_pick(in, 100)); else d.layout = (nk_layout)(2 + fz_pick(in, 100)); want = NK_STATUS_INVALID_ARGUMENT; break;
  /* short workspace: the size query covers nk_batchnorm_fwd (chunk partials + C moments); this
   * call needs only the partials, so only a workspace shorter than those is MISUSE */
  case BAD_OTHER: if (wsb > C * sizeof(nk_moments)) { wsz = fz_u32(in) % (wsb - C * sizeof(nk_moments)); want = NK_STATUS_MISUSE; } break;
  default: bad = BAD_NONE; break;
  }
  if (want == NK_OK) writable_n(out, C, sizeof(nk_moments)), writable_n(ws, wsb, 1);
  fz_snapshot();
  const nk_status st = nk_batchnorm_moments(ctx, &d, xp, out, ws, wsz);
  if (want != NK_OK) {
    fail_checks(st, want, bad, ctx, "batchnorm_moments");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "status %d (%s)", st, nk_context_message(ctx));
  fz_check_arena(1, "batchnorm_moments");
  fz_valid++;
  static double v[MAXE];
  for (size_t c = 0; c < C; c++) {
    size_t k = 0;
    for (size_t n = 0; n < N; n++)
      for (size_t s = 0; s < S; s++)
        v[k++] = lay == NK_LAYOUT_NCS ? xr[(n * C + c) * S + s] : xr[(n * S + s) * C + c];
    check_mom("batchnorm_moments", c, &out[c], N * S, v, 1);
  }
  return 0;
}

/* --------------------------------------------------------- test-time statistics ---------- */

/* B x C x L data [b][c][l], f32-representable, no special values (the moments are checked to be
 * finite; NaN is injected into moments directly where a rule is tested). */
static void tt_data(fz_in *in, size_t B, size_t C, size_t L, double *x, double *scale) {
  fz_dist d = fz_dist_pick(in, 0);
  if (d.scale < 1e-30) d.scale = 1e-30;
  for (size_t i = 0; i < B * C * L; i++) x[i] = (float)fz_value(in, &d);
  *scale = amax(B * C * L, x);
}

static int op_alpha(fz_in *in, unsigned bad) {
  nk_context *ctx = fz_context(in);
  const size_t B = 1 + fz_pick(in, MAXB), C = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, MAXCH),
               L = 1 + fz_pick(in, MAXL);
  static const float al[] = {NK_TTA_ALPHA_DEFAULT, 0.0f, 1.0f, 0.5f, 0.9f, 0.01f};
  const float alpha = al[fz_pick(in, 6)];
  const int unbiased = B * L >= 2 && (fz_u8(in) & 1);
  static double x[MAXB * MAXCH * MAXL], smd[MAXCH], svd[MAXCH], rm[MAXCH], rv[MAXCH];
  double S;
  tt_data(in, B, C, L, x, &S);
  const fz_dist sd = fz_dist_pick(in, 0);
  for (size_t c = 0; c < C; c++) {
    smd[c] = (float)fz_value(in, &sd);
    svd[c] = (float)fabs(fz_value(in, &sd));
  }
  S = fmax(S, fmax(amax(C, smd), sqrt(amax(C, svd))));
  float *sm = place_f32(in, C, smd), *sv = place_f32(in, C, svd);
  nk_moments *test = place_n(in, C, sizeof(nk_moments));
  for (size_t c = 0; c < C; c++) {
    static double v[MAXB * MAXL];
    for (size_t b = 0; b < B; b++)
      for (size_t l = 0; l < L; l++) v[b * L + l] = x[(b * C + c) * L + l];
    test[c] = dmom(B * L, v, 1);
  }
  float *mean = place_n(in, C, 4), *var = place_n(in, C, 4);
  const size_t nanc = C && fz_pick(in, 8) == 0 ? 1 + fz_pick(in, (unsigned)C) : 0; /* test[nanc-1].mean NaN */
  if (nanc) test[nanc - 1].mean = NAN;
  nk_status want = NK_OK;
  float a = alpha;
  int unb = unbiased;
  if (C == 0) bad = BAD_NONE;
  switch (bad) {
  case BAD_SCALAR: { const float e[] = {-0.1f, 1.5f, NAN, INFINITY}; a = e[fz_pick(in, 4)]; want = NK_STATUS_INVALID_ARGUMENT; break; }
  case BAD_COUNT_MOM: { const unsigned k = fz_pick(in, 4), c = fz_pick(in, (unsigned)C);
    if (k == 0) test[c].count = 0.0; else if (k == 1) { test[c].count = 1.0; test[c].m2 = 0.0; unb = 1; }
    else if (k == 2) test[c].m2 = -1e-300; else test[c].count = INFINITY;
    want = NK_STATUS_INVALID_ARGUMENT; break; }
  case BAD_OTHER: sv[fz_pick(in, (unsigned)C)] = -1e-3f; want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_NULL: { const unsigned k = fz_pick(in, 5); if (k == 0) sm = NULL; else if (k == 1) sv = NULL; else if (k == 2) test = NULL; else if (k == 3) mean = NULL; else var = NULL; want = NK_STATUS_INVALID_ARGUMENT; break; }
  case BAD_OVERLAP: if (fz_u8(in) & 1) var = mean; else mean = sm; want = NK_STATUS_INVALID_ARGUMENT; break;
  default: bad = BAD_NONE; break;
  }
  if (want == NK_OK) writable_n(mean, C, 4), writable_n(var, C, 4);
  fz_snapshot();
  const nk_status st = nk_tta_alpha_bn_stats(ctx, C, a, unb, sm, sv, test, mean, var);
  if (want != NK_OK) {
    fail_checks(st, want, bad, ctx, "tta_alpha_bn_stats");
    return 0;
  }
  FZ_CHECK(st == NK_OK, "status %d (%s)", st, nk_context_message(ctx));
  fz_check_arena(1, "tta_alpha_bn_stats");
  fz_valid++;
  if (C == 0) return 0;
  nk_ref_alpha_bn_stats(B, C, L, x, alpha, unbiased, smd, svd, rm, rv);
  if (nanc) rm[nanc - 1] = NAN; /* header: NaN in a test mean gives NaN in that mean only */
  chk_f32("alpha mean", C, mean, rm, S);
  chk_f32("alpha var", C, var, rv, S * S);
  return 0;
}

static int op_unmix(fz_in *in, unsigned bad) {
  nk_context *ctx = fz_context(in);
  const unsigned sub = fz_pick(in, 4); /* 0 lambda, 1 noise, 2 init, 3 fwd (after an init) */
  const size_t K = 1 + fz_pick(in, MAXK), C = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, MAXCH);
  const size_t B = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, MAXB), L = 1 + fz_pick(in, MAXL);
  nk_unmixtns_desc d = nk_unmixtns_desc_default(K, C);
  static const float taus[] = {NK_UNMIXTNS_TAU_DEFAULT, 1.0f, 0.5f, 1e-3f};
  static const float lams[] = {0.1f, 0.0f, 1.0f, 0.37f};
  static const float ais[] = {NK_UNMIXTNS_ALPHA_INIT_DEFAULT, 0.0f, 1.0f, 0.2f};
  d.tau = taus[fz_pick(in, 4)], d.lambda = lams[fz_pick(in, 4)], d.alpha_init = ais[fz_pick(in, 4)];
  nk_status want = NK_OK;
  if (sub == 0) {
    static const float moms[] = {0.1f, 0.0f, 1.0f, 0.01f, 0.5f};
    const float m = moms[fz_pick(in, 5)];
    size_t b = 1 + fz_pick(in, 100), bm = 1 + fz_pick(in, 100);
    float mm = m;
    if (bad == BAD_SCALAR) { const float e[] = {-0.1f, 1.5f, NAN}; mm = e[fz_pick(in, 3)]; want = NK_STATUS_INVALID_ARGUMENT; }
    else if (bad == BAD_COUNT_MOM) { if (fz_u8(in) & 1) b = 0; else bm = 0; want = NK_STATUS_INVALID_ARGUMENT; }
    float *lam = place_n(in, 1, 4);
    if (bad == BAD_NULL) lam = NULL, want = NK_STATUS_INVALID_ARGUMENT;
    if (want == NK_OK) writable_n(lam, 1, 4);
    fz_snapshot();
    const nk_status st = nk_unmixtns_lambda(ctx, mm, b, bm, lam);
    if (want != NK_OK) { fail_checks(st, want, bad, ctx, "unmixtns_lambda"); return 0; }
    FZ_CHECK(st == NK_OK, "lambda: status %d (%s)", st, nk_context_message(ctx));
    fz_check_arena(1, "unmixtns_lambda");
    fz_valid++;
    const double ref = nk_ref_unmixtns_lambda(m, (double)b, (double)bm);
    chk_f32("unmixtns_lambda", 1, lam, &ref, 1.0);
    return 0;
  }
  if (sub == 1) {
    const uint64_t seed = (uint64_t)fz_u32(in) << 32 | fz_u32(in);
    const size_t n = fz_pick(in, 40);
    float *xi = place_n(in, n + 1, 4), *xi2 = place_n(in, n + 1, 4);
    float *p = xi;
    if (bad == BAD_NULL && n) p = NULL, want = NK_STATUS_INVALID_ARGUMENT;
    if (want == NK_OK) writable_n(xi, n, 4), writable_n(xi2, n + 1, 4);
    fz_snapshot();
    nk_status st = nk_unmixtns_noise(ctx, seed, n, p);
    if (want != NK_OK) { fail_checks(st, want, bad, ctx, "unmixtns_noise"); return 0; }
    FZ_CHECK(st == NK_OK, "noise: status %d", st);
    st = nk_unmixtns_noise(ctx, seed, n + 1, xi2);
    FZ_CHECK(st == NK_OK, "noise: status %d", st);
    fz_check_arena(1, "unmixtns_noise");
    fz_valid++;
    /* the first n values do not depend on n; standard normal draws are finite */
    for (size_t i = 0; i < n; i++)
      FZ_CHECK(isfinite(xi[i]) && fabsf(xi[i]) < 40.0f && xi[i] == xi2[i], "noise[%zu] %g %g", i,
               (double)xi[i], (double)xi2[i]);
    return 0;
  }
  /* init (and, for sub 3, one forward step from its components) */
  static double x[MAXB * MAXCH * MAXL], smd[MAXCH], svd[MAXCH], xid[MAXK * MAXCH];
  static double lm[MAXK * MAXCH], lv[MAXK * MAXCH], lmb[MAXB * MAXCH], lvb[MAXB * MAXCH], lp[MAXB * MAXK];
  const fz_dist sd = fz_dist_pick(in, 0);
  for (size_t c = 0; c < C; c++) {
    smd[c] = (float)fz_value(in, &sd);
    svd[c] = (float)fabs(fz_value(in, &sd));
  }
  for (size_t i = 0; i < K * C; i++) xid[i] = (float)fz_value(in, &(fz_dist){0.0, 1.0, 0});
  double S = fmax(amax(C, smd), sqrt(amax(C, svd)));
  float *sm = place_f32(in, C, smd), *sv = place_f32(in, C, svd);
  float *xi = K > 1 || (fz_u8(in) & 1) ? place_f32(in, K * C, xid) : NULL;
  float *cm = place_n(in, K * C, 4), *cv = place_n(in, K * C, 4);
  if (sub == 2) {
    nk_unmixtns_desc dd = d;
    switch (C ? bad : BAD_NONE) { /* C == 0: nothing read or written */
    case BAD_SCALAR: { const unsigned k = fz_pick(in, 4);
      if (k == 0) dd.tau = 0.0f; else if (k == 1) dd.lambda = 1.5f; else if (k == 2) dd.alpha_init = NAN; else dd.alpha_init = -0.5f;
      want = NK_STATUS_INVALID_ARGUMENT; break; }
    case BAD_ENUM: dd.components = 0; want = NK_STATUS_INVALID_ARGUMENT; break;
    case BAD_OTHER: if (C) { sv[fz_pick(in, (unsigned)C)] = -1.0f; want = NK_STATUS_INVALID_ARGUMENT; } break;
    case BAD_NULL: if (C) { const unsigned k = fz_pick(in, 4); if (k == 0) sm = NULL; else if (k == 1) cv = NULL; else if (k == 2 && K > 1) xi = NULL; else cm = NULL; want = NK_STATUS_INVALID_ARGUMENT; } break;
    case BAD_OVERLAP: if (C) { cv = cm; want = NK_STATUS_INVALID_ARGUMENT; } break;
    case BAD_OVERFLOW: dd.components = SIZE_MAX / 2 + fz_pick(in, 8); if (C > 1) want = NK_STATUS_INVALID_ARGUMENT; else dd.components = K; break;
    default: bad = BAD_NONE; break;
    }
    if (want == NK_OK) writable_n(cm, K * C, 4), writable_n(cv, K * C, 4);
    fz_snapshot();
    const nk_status st = nk_unmixtns_init(ctx, &dd, sm, sv, xi, cm, cv);
    if (want != NK_OK) { fail_checks(st, want, bad, ctx, "unmixtns_init"); return 0; }
    FZ_CHECK(st == NK_OK, "init: status %d (%s)", st, nk_context_message(ctx));
    fz_check_arena(1, "unmixtns_init");
    fz_valid++;
    nk_ref_unmixtns_init(K, C, d.alpha_init, smd, svd, xid, lm, lv);
    chk_f32("unmixtns_init mean", K * C, cm, lm, S * 8.0); /* |xi| < 8 */
    chk_f32("unmixtns_init var", K * C, cv, lv, S * S);
    return 0;
  }
  FZ_CHECK(nk_unmixtns_init(ctx, &d, sm, sv, xi, cm, cv) == NK_OK, "init before fwd");
  double Sx;
  tt_data(in, B, C, L, x, &Sx);
  nk_moments *inst = place_n(in, B * C, sizeof(nk_moments));
  for (size_t i = 0; i < B * C; i++) inst[i] = dmom(L, x + i * L, 1);
  float *mb = place_n(in, B * C, 4), *vb = place_n(in, B * C, 4);
  double *prob = place_n(in, B * K, 8);
  for (size_t i = 0; i < K * C; i++) lm[i] = cm[i], lv[i] = cv[i];
  S = fmax(fmax(S, Sx), fmax(amax(K * C, lm), sqrt(amax(K * C, lv))));
  size_t bb = B;
  nk_unmixtns_desc dd = d;
  if (B == 0 || C == 0) bad = BAD_NONE;
  switch (bad) {
  case BAD_SCALAR: { const unsigned k = fz_pick(in, 4);
    if (k == 0) dd.tau = -1.0f; else if (k == 1) dd.tau = INFINITY; else if (k == 2) dd.lambda = NAN; else dd.alpha_init = 2.0f;
    want = NK_STATUS_INVALID_ARGUMENT; break; }
  case BAD_ENUM: dd.components = 0; want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_COUNT_MOM: { const unsigned k = fz_pick(in, 3), i = fz_pick(in, (unsigned)(B * C));
    if (k == 0) inst[i].count = 0.5; else if (k == 1) inst[i].m2 = -1.0; else inst[i].count = NAN;
    want = NK_STATUS_INVALID_ARGUMENT; break; }
  case BAD_NULL: { const unsigned k = fz_pick(in, 6);
    if (k == 0) inst = NULL; else if (k == 1) cm = NULL; else if (k == 2) cv = NULL; else if (k == 3) mb = NULL; else if (k == 4) vb = NULL; else prob = NULL;
    want = NK_STATUS_INVALID_ARGUMENT; break; }
  case BAD_OVERLAP: if (fz_u8(in) & 1) vb = mb; else mb = cm; want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_OVERFLOW: bb = SIZE_MAX / 2 + fz_pick(in, 8); want = NK_STATUS_INVALID_ARGUMENT; break;
  default: bad = BAD_NONE; break;
  }
  if (want == NK_OK) {
    if (d.lambda != 0.0f) writable_n(cm, K * C, 4), writable_n(cv, K * C, 4);
    writable_n(mb, B * C, 4), writable_n(vb, B * C, 4), writable_n(prob, B * K, 8);
  }
  fz_snapshot();
  const nk_status st = nk_unmixtns_fwd(ctx, &dd, bb, inst, cm, cv, mb, vb, prob);
  if (want != NK_OK) { fail_checks(st, want, bad, ctx, "unmixtns_fwd"); return 0; }
  FZ_CHECK(st == NK_OK, "fwd: status %d (%s)", st, nk_context_message(ctx));
  fz_check_arena(1, "unmixtns_fwd");
  fz_valid++;
  if (B == 0 || C == 0) return 0;
  if (getenv("FZ_DUMP")) {
    fprintf(stderr, "K %zu C %zu B %zu L %zu tau %g lambda %g\n", K, C, B, L, (double)d.tau, (double)d.lambda);
    for (size_t i = 0; i < K * C; i++) fprintf(stderr, "comp %zu: %a %a\n", i, lm[i], lv[i]);
    for (size_t i = 0; i < B * C; i++) fprintf(stderr, "inst %zu: %g %a %a\n", i, inst[i].count, inst[i].mean, inst[i].m2);
  }
  nk_ref_unmixtns_fwd(K, C, B, L, x, d.tau, d.lambda, lm, lv, lmb, lvb, lp);
  if (getenv("FZ_DUMP")) for (size_t i = 0; i < B * C; i++) fprintf(stderr, "out %zu: %g %g ref %g %g\n", i, (double)mb[i], (double)vb[i], lmb[i], lvb[i]);
  chk_dbl("unmixtns prob", B * K, prob, lp);
  chk_f32("unmixtns mean_bar", B * C, mb, lmb, S);
  chk_f32("unmixtns var_bar", B * C, vb, lvb, S * S);
  chk_f32("unmixtns comp_mean", K * C, cm, lm, S);
  chk_f32("unmixtns comp_var", K * C, cv, lv, S * S);
  return 0;
}

static int op_adab2n(fz_in *in, unsigned bad) {
  nk_context *ctx = fz_context(in);
  const unsigned sub = fz_pick(in, 4); /* 0 next_eta, 1 weights, 2-3 fwd */
  const size_t B = 1 + fz_pick(in, MAXB), C = fz_pick(in, 16) == 0 ? 0 : 1 + fz_pick(in, MAXCH),
               L = 1 + fz_pick(in, MAXL), T = fz_pick(in, MAXT);
  nk_adab2n_desc d = nk_adab2n_desc_default(C);
  static const float moms[] = {0.1f, 0.0f, 1.0f, 0.5f}, kaps[] = {1.0f, 0.0f, 0.1f, 0.4f, 0.7f};
  d.momentum = moms[fz_pick(in, 4)], d.kappa = kaps[fz_pick(in, 5)];
  static const double letas[] = {0.0, 0.3, 1.0, 0.05};
  const fz_geom gst = fz_vec(1, sizeof(nk_adab2n_state));
  nk_adab2n_state *state = fz_place(in, &gst, NULL);
  state->num_batches_tracked = fz_pick(in, 4) == 0 ? 0 : (int64_t)fz_u32(in) % 100000;
  state->last_eta = letas[fz_pick(in, 4)];
  state->tasks = T;
  const nk_adab2n_state st0 = *state;
  nk_ref_adab2n_state rs = {(double)st0.num_batches_tracked, st0.last_eta != 0.0, st0.last_eta, T};
  nk_status want = NK_OK;
  nk_adab2n_desc dd = d;
  switch (bad) { /* rules shared by next_eta and fwd */
  case BAD_SCALAR: if (sub != 1) { const unsigned k = fz_pick(in, 4);
      if (k == 0) dd.momentum = 1.5f; else if (k == 1) dd.momentum = NAN; else if (k == 2) dd.kappa = -0.1f; else dd.kappa = NAN;
      want = NK_STATUS_INVALID_ARGUMENT; } break;
  case BAD_OTHER: if (sub != 1) { const unsigned k = fz_pick(in, 3);
      if (k == 0) state->num_batches_tracked = -1 - (int64_t)fz_pick(in, 9); else if (k == 1) state->num_batches_tracked = INT64_MAX; else state->last_eta = 1.5;
      want = NK_STATUS_INVALID_ARGUMENT; } break;
  default: break;
  }
  if (sub == 0) {
    double *eta = fz_u8(in) & 1 ? place_n(in, 1, 8) : NULL;
    nk_adab2n_state *sp = state;
    if (bad == BAD_NULL) sp = NULL, want = NK_STATUS_INVALID_ARGUMENT;
    if (want == NK_OK) writable_n(state, 1, sizeof *state), writable_n(eta, 1, 8);
    fz_snapshot();
    const nk_status st = nk_adab2n_next_eta(ctx, &dd, sp, eta);
    if (want != NK_OK) { fail_checks(st, want, bad, ctx, "adab2n_next_eta"); return 0; }
    FZ_CHECK(st == NK_OK, "next_eta: status %d (%s)", st, nk_context_message(ctx));
    fz_check_arena(1, "adab2n_next_eta");
    fz_valid++;
    const double ref = nk_ref_adab2n_eta(d.momentum, d.kappa, &rs);
    if (eta) chk_dbl("eta", 1, eta, &ref);
    FZ_CHECK(state->num_batches_tracked == st0.num_batches_tracked + 1, "num_batches_tracked");
    const double le = d.kappa > 0.0f && d.kappa < 1.0f ? rs.last_eta : st0.last_eta;
    chk_dbl("last_eta", 1, &state->last_eta, &le);
    return 0;
  }
  static double x[MAXB * MAXCH * MAXL], phid[MAXT + 1], rmd[MAXCH], rvd[MAXCH], mref[MAXCH], vref[MAXCH];
  static double wref[MAXT + 1], oref[MAXB];
  static int64_t idsl[MAXB];
  const int use_ids = sub == 1 || (fz_u8(in) & 3) != 0;
  for (size_t b = 0; b < B; b++) idsl[b] = (int64_t)fz_pick(in, (unsigned)(T + 1));
  for (size_t k = 0; k <= T; k++) phid[k] = (float)fz_value(in, &(fz_dist){0.0, 1.0, 0});
  double S;
  tt_data(in, B, C, L, x, &S);
  const fz_dist sd = fz_dist_pick(in, 0);
  for (size_t c = 0; c < C; c++) {
    rmd[c] = (float)fz_value(in, &sd);
    rvd[c] = (float)fabs(fz_value(in, &sd));
  }
  S = fmax(S, fmax(amax(C, rmd), sqrt(amax(C, rvd))));
  const fz_geom gid = fz_vec(B, 8);
  int64_t *ids = use_ids ? fz_place(in, &gid, NULL) : NULL;
  if (ids) memcpy(ids, idsl, B * 8);
  float *phi = use_ids ? place_f32(in, T + 1, phid) : NULL;
  double *w = use_ids ? place_n(in, T + 1, 8) : NULL, *om = use_ids ? place_n(in, B, 8) : NULL;
  const int weighted = use_ids && T > 0;
  size_t bb = B;
  if (sub == 1) {
    size_t tt = T;
    if (bad == BAD_COUNT_MOM) bb = 0, want = NK_STATUS_INVALID_ARGUMENT;
    else if (bad == BAD_ENUM) { ids[fz_pick(in, (unsigned)B)] = fz_u8(in) & 1 ? -1 : (int64_t)T + 1 + fz_pick(in, 5); want = NK_STATUS_INVALID_ARGUMENT; }
    else if (bad == BAD_NULL) { const unsigned k = fz_pick(in, 4); if (k == 0) ids = NULL; else if (k == 1) phi = NULL; else if (k == 2) w = NULL; else om = NULL; want = NK_STATUS_INVALID_ARGUMENT; }
    else if (bad == BAD_OVERLAP) { om = w; want = NK_STATUS_INVALID_ARGUMENT; }
    else if (bad == BAD_OVERFLOW) { tt = SIZE_MAX; want = NK_STATUS_INVALID_ARGUMENT; }
    if (want == NK_OK) writable_n(w, T + 1, 8), writable_n(om, B, 8);
    fz_snapshot();
    const nk_status st = nk_adab2n_weights(ctx, tt, bb, ids, phi, w, om);
    if (want != NK_OK) { fail_checks(st, want, bad, ctx, "adab2n_weights"); return 0; }
    FZ_CHECK(st == NK_OK, "weights: status %d (%s)", st, nk_context_message(ctx));
    fz_check_arena(1, "adab2n_weights");
    fz_valid++;
    /* the reference's weights come with a forward step (T > 0; T == 0 gives w_0 = 1) */
    if (T == 0) {
      const double one = 1.0, ob = 1.0 / (double)B;
      chk_dbl("weights w", 1, w, &one);
      for (size_t b = 0; b < B; b++) chk_dbl("weights omega", 1, &om[b], &ob);
      return 0;
    }
    static double m_[MAXCH], v_[MAXCH], r1[MAXCH], r2[MAXCH];
    double reg;
    nk_ref_adab2n_state r = rs;
    for (size_t c = 0; c < C; c++) r1[c] = rmd[c], r2[c] = rvd[c];
    nk_ref_adab2n_fwd(B, C, L, x, idsl, phid, d.momentum, d.kappa, &r, r1, r2, m_, v_, wref, oref, &reg);
    chk_dbl("weights w", T + 1, w, wref);
    chk_dbl("weights omega", B, om, oref);
    return 0;
  }
  nk_moments *inst = place_n(in, B * C, sizeof(nk_moments));
  for (size_t i = 0; i < B * C; i++) inst[i] = dmom(L, x + i * L, 1);
  float *rm = place_f32(in, C, rmd), *rv = place_f32(in, C, rvd);
  float *mean = place_n(in, C, 4), *var = place_n(in, C, 4);
  double *reg = fz_u8(in) & 1 ? place_n(in, 1, 8) : NULL;
  if (want == NK_OK) switch (bad) {
  case BAD_COUNT_MOM: if (fz_u8(in) & 1 || C == 0) bb = 0; else { const unsigned k = fz_pick(in, 3), i = fz_pick(in, (unsigned)(B * C));
      if (k == 0) inst[i].count = 0.0; else if (k == 1) inst[i].m2 = -2.0; else inst[i].count = -INFINITY; }
    want = NK_STATUS_INVALID_ARGUMENT; break;
  case BAD_ENUM: if (weighted) { ids[fz_pick(in, (unsigned)B)] = fz_u8(in) & 1 ? -1 : (int64_t)T + 1; want = NK_STATUS_INVALID_ARGUMENT; } break;
  case BAD_NULL: if (C) { const unsigned k = fz_pick(in, 5);
      if (k == 0) inst = NULL; else if (k == 1) rm = NULL; else if (k == 2) rv = NULL; else if (k == 3) mean = NULL; else var = NULL;
      want = NK_STATUS_INVALID_ARGUMENT; } else if (weighted) { phi = NULL; want = NK_STATUS_INVALID_ARGUMENT; } break;
  case BAD_OVERLAP: if (C) { if (fz_u8(in) & 1) var = mean; else mean = rm; want = NK_STATUS_INVALID_ARGUMENT; } break;
  default: break;
  }
  if (want == NK_OK) {
    writable_n(state, 1, sizeof *state);
    writable_n(rm, C, 4), writable_n(rv, C, 4), writable_n(mean, C, 4), writable_n(var, C, 4);
    writable_n(reg, 1, 8);
    if (weighted) writable_n(w, T + 1, 8), writable_n(om, B, 8);
  }
  fz_snapshot();
  const nk_status st = nk_adab2n_fwd(ctx, &dd, state, bb, inst, ids, phi, rm, rv, mean, var, w, om, reg);
  if (want != NK_OK) { fail_checks(st, want, bad, ctx, "adab2n_fwd"); return 0; }
  FZ_CHECK(st == NK_OK, "fwd: status %d (%s)", st, nk_context_message(ctx));
  fz_check_arena(1, "adab2n_fwd");
  fz_valid++;
  double rreg;
  nk_ref_adab2n_fwd(B, C, L, x, use_ids ? idsl : NULL, phid, d.momentum, d.kappa, &rs, rmd, rvd,
                    mref, vref, wref, oref, &rreg);
  FZ_CHECK(state->num_batches_tracked == st0.num_batches_tracked + 1, "num_batches_tracked");
  chk_f32("adab2n mean", C, mean, mref, S);
  chk_f32("adab2n var", C, var, vref, S * S);
  chk_f32("adab2n running_mean", C, rm, rmd, S);
  chk_f32("adab2n running_var", C, rv, rvd, S * S);
  if (weighted) chk_dbl("adab2n w", T + 1, w, wref), chk_dbl("adab2n omega", B, om, oref);
  if (reg) {
    const double sc = S * S + S * S * S * S;
    FZ_CHECK(C == 0 ? *reg == 0.0 : fabs(*reg - rreg) <= 1e-12 * fabs(rreg) + 1e-13 * sc,
             "reg %.17g, ref %.17g", *reg, rreg);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in;
  fz_start(&in, "moments", data, size);
  const unsigned op = fz_pick(&in, OP_COUNT);
  const unsigned bad = fz_pick(&in, 8) == 0 ? 1 + fz_pick(&in, BAD_COUNT - 1) : BAD_NONE;
  switch (op) {
  case OP_ROWS: return op_rowscols(&in, bad, 0);
  case OP_COLS: return op_rowscols(&in, bad, 1);
  case OP_ROWNORM: return op_rownorm(&in, bad);
  case OP_BN: return op_bn(&in, bad);
  case OP_ALPHA: return op_alpha(&in, bad);
  case OP_UNMIX: return op_unmix(&in, bad);
  default: return op_adab2n(&in, bad);
  }
}
