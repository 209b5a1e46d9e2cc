/*
 * scalar.c — the portable softmax-family kernels, and the definition of the canonical
 * arithmetic (softmax.h) that the AVX2 and AVX-512 kernels reproduce bit for bit.
 *
 * Contract: softmax.h. One row per call; y may be x, dx may be dy or y (each element is read
 * before it is written at the same index). No reads or writes outside [0, n): the 64 lanes are
 * plain arrays, a partial block adds fewer terms (a lane with no term keeps its start value,
 * which the fold tree then combines as the identity). nontemporal is a hint the scalar path
 * ignores.
 *
 * Accumulation order (softmax.h): blocks of 1024 consecutive elements, element j of a block
 * starting at b goes to lane (j - b) % 64, in increasing j; at the end of each block the lanes
 * fold with lane[k] (+)= lane[k + s], s = 32, 16, 8, 4, 2, 1, and lane 0 joins a double total
 * in block order (softmax-common.h gives the double rules).
 *
 * This file is compiled for the baseline ISA with -ffp-contract=off; the fused multiply-adds of
 * the canonical arithmetic are explicit fmaf() calls (correctly rounded on every machine),
 * RN(p * 2^n) is ldexpf, and rintf rounds to nearest even (default rounding mode).
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "convert.h"
#include "softmax-common.h"
#include "softmax.h"

#define LANES NK_SOFTMAX_LANES
#define BLOCK NK_SOFTMAX_BLOCK

/* ---- exp ----------------------------------------------------------------------------------- */

static inline float poly(float r) {
  float p = NK_SM_C5;
  p = fmaf(p, r, NK_SM_C4);
  p = fmaf(p, r, NK_SM_C3);
  p = fmaf(p, r, NK_SM_C2);
  p = fmaf(p, r, NK_SM_C1);
  return fmaf(p, r, 1.0f);
}

/* The canonical exp; a NaN input gives the canonical NaN. */
static inline float sm_exp(float t) {
  if (isnan(t)) return nk__sm_nan();
  t = t < NK_SM_EXP_LO ? NK_SM_EXP_LO : t;
  t = t > NK_SM_EXP_HI ? NK_SM_EXP_HI : t;
  const float n = rintf(t * NK_SM_LOG2E);
  float r = fmaf(n, -NK_SM_LN2_HI, t);
  r = fmaf(n, -NK_SM_LN2_LO, r);
  return ldexpf(poly(r), (int)n);
}

/* extexp(z) = p * 2^n (n may be +-inf or NaN; then p is finite or NaN, never used as such). */
static inline float extexp(float z, float *n_out) {
  if (z == -INFINITY) {
    *n_out = -INFINITY;
    return 0.0f;
  }
  const float n = rintf(z * NK_SM_LOG2E);
  float r = fmaf(n, -NK_SM_LN2_HI, z);
  r = fmaf(n, -NK_SM_LN2_LO, r);
  r = (-1.0f > r) ? -1.0f : r;
  r = (1.0f < r) ? 1.0f : r;
  *n_out = n;
  return poly(r);
}

/* f(d) = 2^d for d >= -126 (d is an integer <= 0), else 0 (NaN, -inf included). */
static inline float scale_f(float d) {
  return d >= -126.0f ? nk__f32_from_bits((uint32_t)(127 + (int)d) << 23) : 0.0f;
}

/* E(a, b) = (a == -inf) ? 0 : exp(a - b). */
static inline float exp_e(float a, float b) { return a == -INFINITY ? 0.0f : sm_exp(a - b); }

/* ---- helpers ------------------------------------------------------------------------------- */

static inline float fold_sum(float *lane) {
  for (size_t s = LANES / 2; s >= 1; s /= 2)
    for (size_t k = 0; k < s; k++) lane[k] += lane[k + s];
  return lane[0];
}

/* z_j of a forward row (softmax.h "Logits of a forward row"). */
static inline float logit_at(const void *x, nk_dtype dt, const void *mask, nk_dtype mdt,
                             float scale, float alibi, float pos, size_t j) {
  float z = nk__load_f32(x, j, dt) * scale;
  if (mask) z = z + nk__load_f32(mask, j, mdt);
  if (alibi != 0.0f) z = z + alibi * ((float)j - pos);
  return z;
}

static inline float zf(const nk_softmax_row *row, nk_dtype dt, size_t j) {
  return logit_at(row->x, dt, row->mask, row->mask_dtype, row->scale, row->alibi, row->pos, j);
}

static void fill_row(void *y, size_t from, size_t n, float v, nk_dtype dt) {
  for (size_t j = from; j < n; j++) nk__store_f32(y, j, v, dt);
}

static inline float canon(float v) { return isnan(v) ? nk__sm_nan() : v; }

/* m = max_j z_j over [0, nv) (NaN ignored), with the sink, then m + 0. */
static float row_max(const nk_softmax_row *row, nk_dtype dt, size_t nv) {
  float m = -INFINITY;
  for (size_t j = 0; j < nv; j++) {
    const float z = zf(row, dt, j);
    m = z > m ? z : m;
  }
  if (row->has_sink) m = row->sink > m ? row->sink : m;
  return m + 0.0f;
}

/* The three-pass sum (m != -inf) as S = *ones + R: the terms e_j = exp(z_j - m) equal to 1.0f
 * are counted, the others blocksummed (a 1.0f term adds +0 to its lane), and the sink term
 * exp(sink - m) joins the count or R after the blocks. With `store`, y_j = e_j (softmax) or
 * z_j - m (log) is written (reload, f32 y). Returns R. */
static double three_sum(const nk_softmax_row *row, nk_dtype dt, size_t nv, float m, int store,
                        double *ones) {
  double total = 0.0;
  size_t count = 0;
  for (size_t b = 0; b < nv; b += BLOCK) {
    float lane[LANES] = {0};
    const size_t e = b + BLOCK < nv ? b + BLOCK : nv;
    for (size_t j = b; j < e; j++) {
      const float d = zf(row, dt, j) - m;
      const float ex = sm_exp(d);
      if (store) ((float *)row->y)[j] = row->log ? d : ex;
      count += ex == 1.0f;
      lane[(j - b) % LANES] += ex == 1.0f ? 0.0f : ex;
    }
    total += (double)fold_sum(lane);
  }
  *ones = (double)count;
  if (row->has_sink) nk__sm_three_add_sink(sm_exp(row->sink - m), ones, &total);
  return total;
}

/* The three-pass S when m == -inf: NaN if a z_j or the sink is NaN, else 0. */
static double masked_sum(const nk_softmax_row *row, nk_dtype dt, size_t nv) {
  int nan = row->has_sink && isnan(row->sink);
  for (size_t j = 0; j < nv && !nan; j++) nan = isnan(zf(row, dt, j));
  return nan ? nk__sm_nan_d() : 0.0;
}

/* Writes the whole row of a NaN or fully masked outcome; 1 if it did. */
static int write_special(const nk_softmax_row *row, nk_dtype dt, const nk__sm_fin *f) {
  if (f->outcome == NK_SM_NORMAL) return 0;
  const float v = f->outcome == NK_SM_NANROW ? nk__sm_nan() : nk__sm_masked_y(row->log, row->masked_nan);
  fill_row(row->y, 0, row->n, v, dt);
  if (row->lse) *row->lse = f->lse;
  return 1;
}

/* Three-pass pass 3 (and online pass 2) with m, lambda / ls. */
static void three_output(const nk_softmax_row *row, nk_dtype dt, size_t nv, const nk__sm_fin *f) {
  for (size_t j = 0; j < nv; j++) {
    const float d = zf(row, dt, j) - f->m;
    nk__store_f32(row->y, j, row->log ? d - f->ls : sm_exp(d) * f->lambda, dt);
  }
  fill_row(row->y, nv, row->n, row->log ? -INFINITY : 0.0f, dt);
  if (row->lse) *row->lse = f->lse;
}

/* ---- forward algorithms -------------------------------------------------------------------- */

static void fwd_three_pass(const nk_softmax_row *row, nk_dtype dt, int reload) {
  assert(row != NULL && row->n > 0 && row->n_valid <= row->n);
  const size_t nv = row->n_valid;
  const float m = row_max(row, dt, nv);
  double ones = 0.0;
  const double R =
      m == -INFINITY ? masked_sum(row, dt, nv) : three_sum(row, dt, nv, m, reload, &ones);
  nk__sm_fin f;
  nk__sm_three_finish_split(m, ones, R, row->masked_nan, &f);
  if (write_special(row, dt, &f)) return;
  if (!reload) {
    three_output(row, dt, nv, &f);
    return;
  }
  float *y = (float *)row->y;
  for (size_t j = 0; j < nv; j++) y[j] = row->log ? y[j] - f.ls : y[j] * f.lambda;
  fill_row(row->y, nv, row->n, row->log ? -INFINITY : 0.0f, dt);
  if (row->lse) *row->lse = f.lse;
}

/* Two-pass pass 1 over z_j, j < n (logits from `row` when row != NULL, else x of dtype dt):
 * (Md, Nd), the max m, and blocksum(z_j) when want_t. */
static void two_sums(const nk_softmax_row *row, const void *x, nk_dtype dt, size_t n,
                     int want_t, double *Md, double *Nd, float *m_out, double *T) {
  double md = 0.0, nd = -INFINITY, t = 0.0;
  float m = -INFINITY;
  for (size_t b = 0; b < n; b += BLOCK) {
    float M[LANES], N[LANES], Ts[LANES] = {0};
    for (size_t l = 0; l < LANES; l++) M[l] = 0.0f, N[l] = -INFINITY;
    const size_t e = b + BLOCK < n ? b + BLOCK : n;
    for (size_t j = b; j < e; j++) {
      const size_t l = (j - b) % LANES;
      const float z = row ? zf(row, dt, j) : nk__load_f32(x, j, dt);
      float nn;
      const float p = extexp(z, &nn);
      const float Np = nn > N[l] ? nn : N[l];
      M[l] = fmaf(p, scale_f(nn - Np), M[l] * scale_f(N[l] - Np));
      N[l] = Np;
      m = z > m ? z : m;
      if (want_t) Ts[l] = fmaf(z, NK_SOFTMAX_TDOWN, Ts[l]);
    }
    for (size_t s = LANES / 2; s >= 1; s /= 2)
      for (size_t k = 0; k < s; k++) {
        const float Nn = N[k + s] > N[k] ? N[k + s] : N[k];
        M[k] = fmaf(M[k + s], scale_f(N[k + s] - Nn), M[k] * scale_f(N[k] - Nn));
        N[k] = Nn;
      }
    nk__sm_mn_join(&md, &nd, M[0], N[0]);
    if (want_t) t += NK_SOFTMAX_TUP * (double)fold_sum(Ts);
  }
  *Md = md;
  *Nd = nd;
  *m_out = m;
  *T = t;
}

/* y_j = RN((p * lambda) * 2^d), d = max(n - Nf, -160): the two-pass output value. */
static inline float two_value(float z, float lambda, float nf) {
  float nn;
  const float p = extexp(z, &nn);
  float d = nn - nf;
  d = d > NK_SM_SCALE_MIN ? d : NK_SM_SCALE_MIN;
  return ldexpf(p * lambda, (int)d);
}

static void fwd_two_pass(const nk_softmax_row *row, nk_dtype dt) {
  assert(row != NULL && row->n > 0 && row->n_valid <= row->n);
  const size_t nv = row->n_valid;
  double Md, Nd, T;
  float m;
  two_sums(row, NULL, dt, nv, 0, &Md, &Nd, &m, &T);
  if (row->has_sink) {
    float ns;
    const float ps = extexp(row->sink, &ns);
    nk__sm_mn_join(&Md, &Nd, ps, ns);
    m = row->sink > m ? row->sink : m;
  }
  if (nk__sm_out_of_range(m)) {
    fwd_three_pass(row, dt, 0);
    return;
  }
  nk__sm_fin f;
  nk__sm_two_finish(Md, Nd, row->masked_nan, &f);
  if (write_special(row, dt, &f)) return;
  for (size_t j = 0; j < nv; j++) {
    const float z = zf(row, dt, j);
    nk__store_f32(row->y, j, row->log ? (z - f.ls) - f.ll : two_value(z, f.lambda, f.nf), dt);
  }
  fill_row(row->y, nv, row->n, row->log ? -INFINITY : 0.0f, dt);
  if (row->lse) *row->lse = f.lse;
}

static void fwd_online(const nk_softmax_row *row, nk_dtype dt) {
  assert(row != NULL && row->n > 0 && row->n_valid <= row->n);
  const size_t nv = row->n_valid;
  double mD = -INFINITY, dD = 0.0;
  for (size_t b = 0; b < nv; b += BLOCK) {
    float m[LANES], d[LANES];
    for (size_t l = 0; l < LANES; l++) m[l] = -INFINITY, d[l] = 0.0f;
    const size_t e = b + BLOCK < nv ? b + BLOCK : nv;
    for (size_t j = b; j < e; j++) {
      const size_t l = (j - b) % LANES;
      const float z = zf(row, dt, j);
      const float mp = z > m[l] ? z : m[l];
      d[l] = fmaf(d[l], exp_e(m[l], mp), exp_e(z, mp));
      m[l] = mp;
    }
    for (size_t s = LANES / 2; s >= 1; s /= 2)
      for (size_t k = 0; k < s; k++) {
        const float mm = m[k + s] > m[k] ? m[k + s] : m[k];
        d[k] = fmaf(d[k + s], exp_e(m[k + s], mm), d[k] * exp_e(m[k], mm));
        m[k] = mm;
      }
    nk__sm_md_join(&mD, &dD, m[0], d[0]);
  }
  if (row->has_sink) nk__sm_md_join(&mD, &dD, row->sink, 1.0f);
  nk__sm_fin f;
  nk__sm_three_finish((float)mD + 0.0f, dD, row->masked_nan, &f);
  if (write_special(row, dt, &f)) return;
  three_output(row, dt, nv, &f);
}

/* ---- backward ------------------------------------------------------------------------------ */

static void bwd(const nk_softmax_bwd_row *row, nk_dtype dt) {
  assert(row != NULL && row->n > 0);
  const size_t n = row->n;
  double total = 0.0;
  int all_masked = 1;
  for (size_t b = 0; b < n; b += BLOCK) {
    float lane[LANES] = {0};
    const size_t e = b + BLOCK < n ? b + BLOCK : n;
    for (size_t j = b; j < e; j++) {
      const float g = nk__load_f32(row->dy, j, dt), y = nk__load_f32(row->y, j, dt);
      if (row->log) {
        lane[(j - b) % LANES] += g;
        all_masked &= y == -INFINITY;
      } else {
        lane[(j - b) % LANES] = fmaf(g, y, lane[(j - b) % LANES]);
      }
    }
    total += (double)fold_sum(lane);
  }
  if (row->log && all_masked) {
    fill_row(row->dx, 0, n, 0.0f, dt);
    if (row->dot) *row->dot = 0.0;
    return;
  }
  if (!isfinite(total)) {
    fill_row(row->dx, 0, n, nk__sm_nan(), dt);
    if (row->dot) *row->dot = nk__sm_nan_d();
    return;
  }
  if (row->dot) *row->dot = total;
  float Dh = 0.0f, Dl = 0.0f;
  nk__sm_bwd_split(total, &Dh, &Dl);
  const float Gf = (float)total, scale = row->scale;
  for (size_t j = 0; j < n; j++) {
    const float g = nk__load_f32(row->dy, j, dt), y = nk__load_f32(row->y, j, dt);
    const float v = row->log ? fmaf(-sm_exp(y), Gf, g) * scale : (y * ((g - Dh) - Dl)) * scale;
    nk__store_f32(row->dx, j, canon(v), dt);
  }
}

/* ---- cross-entropy ------------------------------------------------------------------------- */

static void xent(const nk_xent_row *row, nk_dtype dt) {
  assert(row != NULL && row->n > 0 && row->target < row->n && row->loss != NULL);
  const size_t n = row->n;
  double Md, Nd, T;
  float m;
  two_sums(NULL, row->x, dt, n, row->smoothing > 0.0f, &Md, &Nd, &m, &T);
  const int three = nk__sm_out_of_range(m);
  double L;
  float lambda, nf = 0.0f;
  m = m + 0.0f;
  if (three) { /* the three-pass sums of the plain logits (scale 1: z = x exactly) */
    const nk_softmax_row plain = {.x = row->x, .n = n, .n_valid = n, .scale = 1.0f};
    double ones;
    const double R = three_sum(&plain, dt, n, m, 0, &ones);
    L = (double)m + nk__sm_log_split(ones, R);
    lambda = (float)(1.0 / (ones + R));
  } else {
    L = nk__sm_two_L(Md, Nd);
    lambda = (float)(1.0 / Md);
    nf = (float)Nd;
  }
  nk__sm_xent o;
  nk__sm_xent_finish(L, T, nk__load_f32(row->x, row->target, dt), n, row->smoothing,
                     row->z_loss, row->grad_w, &o);
  *row->loss = o.loss;
  if (row->lse) *row->lse = o.lse;
  if (!row->dx) return;
  if (o.nanrow) {
    fill_row(row->dx, 0, n, nk__sm_nan(), dt);
    return;
  }
  for (size_t j = 0; j < n; j++) {
    const float z = nk__load_f32(row->x, j, dt);
    const float p = three ? sm_exp(z - m) * lambda : two_value(z, lambda, nf);
    const float b = j == row->target ? o.bt : o.b;
    nk__store_f32(row->dx, j, canon(isinf(o.a) && p == 0.0f ? b : fmaf(p, o.a, b)), dt);
  }
}

/* ---- sigmoid ------------------------------------------------------------------------------- */

static void sigmoid_fwd(const nk_sigmoid_row *row, nk_dtype dt) {
  assert(row != NULL && row->n > 0 && row->n_valid <= row->n);
  for (size_t j = 0; j < row->n_valid; j++) {
    const float z = logit_at(row->x, dt, row->mask, row->mask_dtype, row->scale, row->alibi,
                             row->pos, j);
    const float e = sm_exp(-fabsf(z));
    const float y = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
    nk__store_f32(row->y, j, canon(y), dt);
  }
  fill_row(row->y, row->n_valid, row->n, 0.0f, dt);
}

static void sigmoid_bwd(const nk_sigmoid_row *row, nk_dtype dt) {
  assert(row != NULL && row->n > 0);
  for (size_t j = 0; j < row->n; j++) {
    const float y = nk__load_f32(row->x, j, dt), g = nk__load_f32(row->dy, j, dt);
    nk__store_f32(row->y, j, canon(((g * y) * (1.0f - y)) * row->scale), dt);
  }
}

/* ---- the named kernels (softmax.inc) ------------------------------------------------------- */

void nk_f32_softmax_fwd__scalar_three_pass_reload(const nk_softmax_row *row) {
  fwd_three_pass(row, NK_DTYPE_F32, 1);
}
void nk_f32_softmax_fwd__scalar_three_pass_recompute(const nk_softmax_row *row) {
  fwd_three_pass(row, NK_DTYPE_F32, 0);
}
void nk_f32_softmax_fwd__scalar_two_pass(const nk_softmax_row *row) { fwd_two_pass(row, NK_DTYPE_F32); }
void nk_f32_softmax_fwd__scalar_online(const nk_softmax_row *row) { fwd_online(row, NK_DTYPE_F32); }
void nk_bf16_softmax_fwd__scalar_three_pass_recompute(const nk_softmax_row *row) {
  fwd_three_pass(row, NK_DTYPE_BF16, 0);
}
void nk_bf16_softmax_fwd__scalar_two_pass(const nk_softmax_row *row) { fwd_two_pass(row, NK_DTYPE_BF16); }
void nk_bf16_softmax_fwd__scalar_online(const nk_softmax_row *row) { fwd_online(row, NK_DTYPE_BF16); }
void nk_f16_softmax_fwd__scalar_three_pass_recompute(const nk_softmax_row *row) {
  fwd_three_pass(row, NK_DTYPE_F16, 0);
}
void nk_f16_softmax_fwd__scalar_two_pass(const nk_softmax_row *row) { fwd_two_pass(row, NK_DTYPE_F16); }
void nk_f16_softmax_fwd__scalar_online(const nk_softmax_row *row) { fwd_online(row, NK_DTYPE_F16); }

void nk_f32_softmax_bwd__scalar_u64(const nk_softmax_bwd_row *row) { bwd(row, NK_DTYPE_F32); }
void nk_bf16_softmax_bwd__scalar_u64(const nk_softmax_bwd_row *row) { bwd(row, NK_DTYPE_BF16); }
void nk_f16_softmax_bwd__scalar_u64(const nk_softmax_bwd_row *row) { bwd(row, NK_DTYPE_F16); }

void nk_f32_cross_entropy__scalar_two_pass(const nk_xent_row *row) { xent(row, NK_DTYPE_F32); }
void nk_bf16_cross_entropy__scalar_two_pass(const nk_xent_row *row) { xent(row, NK_DTYPE_BF16); }
void nk_f16_cross_entropy__scalar_two_pass(const nk_xent_row *row) { xent(row, NK_DTYPE_F16); }

void nk_f32_sigmoid_attn_fwd__scalar_u64(const nk_sigmoid_row *row) { sigmoid_fwd(row, NK_DTYPE_F32); }
void nk_bf16_sigmoid_attn_fwd__scalar_u64(const nk_sigmoid_row *row) { sigmoid_fwd(row, NK_DTYPE_BF16); }
void nk_f16_sigmoid_attn_fwd__scalar_u64(const nk_sigmoid_row *row) { sigmoid_fwd(row, NK_DTYPE_F16); }

void nk_f32_sigmoid_attn_bwd__scalar_u64(const nk_sigmoid_row *row) { sigmoid_bwd(row, NK_DTYPE_F32); }
void nk_bf16_sigmoid_attn_bwd__scalar_u64(const nk_sigmoid_row *row) { sigmoid_bwd(row, NK_DTYPE_BF16); }
void nk_f16_sigmoid_attn_bwd__scalar_u64(const nk_sigmoid_row *row) { sigmoid_bwd(row, NK_DTYPE_F16); }

void nk_f32_exp__scalar_u64(size_t n, const float *x, float *y) {
  for (size_t j = 0; j < n; j++) y[j] = sm_exp(x[j]);
}
