/*
 * optim-impl.h — the optimizer/advantage kernels, one portable source compiled once per ISA.
 * Include it from scalar.c, avx2.c or avx512.c after defining NK_OPT_SUFFIX and NK_OPT_NAME.
 * Arithmetic is double on 16-lane vectors of GCC/Clang vector extensions, which the compiler
 * splits into the native width (2 zmm, 4 ymm or 8 xmm); only the square root is written with
 * ISA intrinsics (correctly rounded everywhere). Tails are loaded into zero-padded 16-lane
 * vectors and go through the same vector code (padded lanes add +0 to the sums or are masked),
 * so the bits never depend on the ISA. The contract is in optim.h.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "optim.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

/* The vector helpers are static and always inlined: no call ever passes a vector across an ABI
 * boundary, so the compilers' notes that such calls would change the ABI do not apply. */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define NK_OPT_CAT2(a, b) a##b
#define NK_OPT_CAT(a, b) NK_OPT_CAT2(a, b)
#define FN(name) NK_OPT_CAT(nk_optim_##name##__, NK_OPT_SUFFIX)
#define INL static inline __attribute__((always_inline))

#define NL 16 /* canonical lanes */
typedef float vf __attribute__((vector_size(NL * 4)));
typedef double vd __attribute__((vector_size(NL * 8)));
typedef int64_t vl __attribute__((vector_size(NL * 8)));

INL vf ldf(const float *p) {
  vf v;
  memcpy(&v, p, sizeof v);
  return v;
}
INL void stf(float *p, vf v) { memcpy(p, &v, sizeof v); }
/* The first k (< NL) floats of p, the other lanes +0. */
INL vf ldf_part(const float *p, size_t k) {
  float b[NL] = {0};
  memcpy(b, p, k * sizeof(float));
  return ldf(b);
}
INL void stf_part(float *p, vf v, size_t k) {
  float b[NL];
  stf(b, v);
  memcpy(p, b, k * sizeof(float));
}
INL vd cvt(vf v) { return __builtin_convertvector(v, vd); }
INL vf cvtf(vd v) { return __builtin_convertvector(v, vf); }
INL vd vsplat(double a) { return (vd){0} + a; }

/* Lane-wise correctly rounded square root. */
INL vd vsqrt(vd x) {
#if defined(__AVX512F__)
  union { vd v; __m512d h[2]; } u;
  u.v = x;
  u.h[0] = _mm512_sqrt_pd(u.h[0]);
  u.h[1] = _mm512_sqrt_pd(u.h[1]);
  return u.v;
#elif defined(__AVX__)
  union { vd v; __m256d h[4]; } u;
  u.v = x;
  for (int i = 0; i < 4; i++) u.h[i] = _mm256_sqrt_pd(u.h[i]);
  return u.v;
#elif defined(__SSE2__)
  union { vd v; __m128d h[8]; } u;
  u.v = x;
  for (int i = 0; i < 8; i++) u.h[i] = _mm_sqrt_pd(u.h[i]);
  return u.v;
#else
  for (int i = 0; i < NL; i++) x[i] = sqrt(x[i]);
  return x;
#endif
}

/* Lanes [0, k) keep x, the others are +0 (bitwise). */
INL vd vkeep(vd x, size_t k) {
  vl lane;
  for (int i = 0; i < NL; i++) lane[i] = i;
  const vl live = lane < ((vl){0} + (int64_t)k);
  return (vd)((vl)x & live);
}

/* The canonical fold: lane[k] += lane[k + s], s = 8, 4, 2, 1. */
INL double fold(vd a) {
  double l[NL];
  memcpy(l, &a, sizeof l);
  for (int s = NL / 2; s >= 1; s /= 2)
    for (int k = 0; k < s; k++) l[k] += l[k + s];
  return l[0];
}

/* ---- AdamP / SGDP --------------------------------------------------------------------------- */

/* New state (stored to m, v) and the update direction u for 16 elements. */
INL vd state_dir(vd g, vf *mf, vf *vf_, const nk_opt_params *p) {
  if (p->adam) {
    const vf m2 = cvtf(vsplat(p->b1) * cvt(*mf) + vsplat(p->omb1) * g);
    const vf v2 = cvtf(vsplat(p->b2) * cvt(*vf_) + vsplat(p->omb2) * g * g);
    *mf = m2;
    *vf_ = v2;
    const vd md = cvt(m2);
    const vd den = vsqrt(cvt(v2)) * vsplat(p->inv_sqrt_bc2) + vsplat(p->eps);
    return (p->nesterov ? vsplat(p->b1) * md + vsplat(p->omb1) * g : md) / den;
  }
  const vf b2 = cvtf(vsplat(p->mu) * cvt(*mf) + vsplat(p->omd) * g);
  *mf = b2;
  const vd bd = cvt(b2);
  return p->nesterov ? g + vsplat(p->mu) * bd : bd;
}

/* The direction from the stored state (no update). */
INL vd dir_of(vd g, vf mf, vf vf_, const nk_opt_params *p) {
  if (p->adam) {
    const vd md = cvt(mf);
    const vd den = vsqrt(cvt(vf_)) * vsplat(p->inv_sqrt_bc2) + vsplat(p->eps);
    return (p->nesterov ? vsplat(p->b1) * md + vsplat(p->omb1) * g : md) / den;
  }
  const vd bd = cvt(mf);
  return p->nesterov ? g + vsplat(p->mu) * bd : bd;
}

INL vf new_theta(vd t, vd u, const nk_opt_params *p, int proj, double nt, double k) {
  if (proj) u = u - t / vsplat(nt) * vsplat(k);
  return cvtf(t * vsplat(p->decay) - vsplat(p->step_size) * u);
}

static void FN(sums_gt)(size_t n, const float *g, const float *t, double out[3]) {
  vd agg = {0}, att = {0}, agt = {0};
  size_t i = 0;
  for (; i + NL <= n; i += NL) {
    const vd gv = cvt(ldf(g + i)), tv = cvt(ldf(t + i));
    agg += gv * gv;
    att += tv * tv;
    agt += gv * tv;
  }
  if (i < n) {
    const vd gv = cvt(ldf_part(g + i, n - i)), tv = cvt(ldf_part(t + i, n - i));
    agg += gv * gv;
    att += tv * tv;
    agt += gv * tv;
  }
  out[0] = fold(agg);
  out[1] = fold(att);
  out[2] = fold(agt);
}

static void FN(state_sums)(size_t n, const float *g, float *m, float *v, const float *t,
                           const nk_opt_params *p, double out[2]) {
  vd att = {0}, atu = {0};
  size_t i = 0;
  for (; i + NL <= n; i += NL) {
    vf mf = ldf(m + i), vv = p->adam ? ldf(v + i) : (vf){0};
    const vd u = state_dir(cvt(ldf(g + i)), &mf, &vv, p);
    stf(m + i, mf);
    if (p->adam) stf(v + i, vv);
    const vd tv = cvt(ldf(t + i));
    att += tv * tv;
    atu += tv * u;
  }
  if (i < n) {
    const size_t k = n - i;
    vf mf = ldf_part(m + i, k), vv = p->adam ? ldf_part(v + i, k) : (vf){0};
    const vd u = state_dir(cvt(ldf_part(g + i, k)), &mf, &vv, p);
    stf_part(m + i, mf, k);
    if (p->adam) stf_part(v + i, vv, k);
    const vd tv = cvt(ldf_part(t + i, k));
    att += tv * tv;
    atu += vkeep(tv * u, k);
  }
  out[0] = fold(att);
  out[1] = fold(atu);
}

static void FN(update)(size_t n, float *t, const float *g, const float *m, const float *v,
                       const nk_opt_params *p, int proj, double nt, double k) {
  const int need_g = p->nesterov;
  size_t i = 0;
  for (; i + NL <= n; i += NL) {
    const vd gv = need_g ? cvt(ldf(g + i)) : (vd){0};
    const vd u = dir_of(gv, ldf(m + i), p->adam ? ldf(v + i) : (vf){0}, p);
    stf(t + i, new_theta(cvt(ldf(t + i)), u, p, proj, nt, k));
  }
  if (i < n) {
    const size_t c = n - i;
    const vd gv = need_g ? cvt(ldf_part(g + i, c)) : (vd){0};
    const vd u = dir_of(gv, ldf_part(m + i, c), p->adam ? ldf_part(v + i, c) : (vf){0}, p);
    stf_part(t + i, new_theta(cvt(ldf_part(t + i, c)), u, p, proj, nt, k), c);
  }
}

static void FN(fused)(size_t n, float *t, const float *g, float *m, float *v,
                      const nk_opt_params *p) {
  size_t i = 0;
  for (; i + NL <= n; i += NL) {
    vf mf = ldf(m + i), vv = p->adam ? ldf(v + i) : (vf){0};
    const vd u = state_dir(cvt(ldf(g + i)), &mf, &vv, p);
    stf(m + i, mf);
    if (p->adam) stf(v + i, vv);
    stf(t + i, new_theta(cvt(ldf(t + i)), u, p, 0, 1.0, 0.0));
  }
  if (i < n) {
    const size_t c = n - i;
    vf mf = ldf_part(m + i, c), vv = p->adam ? ldf_part(v + i, c) : (vf){0};
    const vd u = state_dir(cvt(ldf_part(g + i, c)), &mf, &vv, p);
    stf_part(m + i, mf, c);
    if (p->adam) stf_part(v + i, vv, c);
    stf_part(t + i, new_theta(cvt(ldf_part(t + i, c)), u, p, 0, 1.0, 0.0), c);
  }
}

/* ---- GRPO ----------------------------------------------------------------------------------- */

/* Groups are short (16 responses is typical), where lane sums and their folds cost more than
 * they save: the sums are sequential in double (the same operations on every ISA, which never
 * reassociates them), and the element-wise pass is left to the compiler's vectorizer (IEEE
 * subtraction and division per lane: the same bits). Measured on 16384 groups of 16, one thread
 * (loaded host, bench/NOTES.md): the 16-lane form took 5.7 ns per reward, this one 1.7-2.1. */
static void FN(grpo_group)(size_t G, const float *r, float *adv, const nk_grpo_params *p) {
  double mean = 0.0, std = 1.0;
  if (G >= 2) {
    double sum = 0.0;
    for (size_t i = 0; i < G; i++) sum += (double)r[i];
    mean = sum / (double)G;
    double ss = 0.0;
    for (size_t i = 0; i < G; i++) ss += ((double)r[i] - mean) * ((double)r[i] - mean);
    std = sqrt(ss / (p->unbiased ? (double)(G - 1) : (double)G));
  }
  const double den = std + p->eps;
  if (p->scale_by_std)
    for (size_t i = 0; i < G; i++) adv[i] = (float)(((double)r[i] - mean) / den);
  else
    for (size_t i = 0; i < G; i++) adv[i] = (float)((double)r[i] - mean);
}

const nk_optim_kernels NK_OPT_CAT(nk_optim_kernels_, NK_OPT_SUFFIX) = {
    "nk_optim__" NK_OPT_NAME, FN(sums_gt), FN(state_sums), FN(update), FN(fused),
    FN(grpo_group),
};
