/*
 * avx512.c — the AVX-512 softmax-family kernels (softmax / log-softmax forward in four
 * algorithms, backward, cross-entropy, sigmoid forward/backward, exp; f32, bf16, f16). Compiled
 * with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c -ffp-contract=off; no
 * AVX512-BF16/FP16 instructions.
 *
 * Contract: softmax.h; the output bits are scalar.c's for every input. One row per call; y may
 * be x, dx may be dy or y: every 16-lane step loads all its inputs before its store, and every
 * reduction pass ends before the pass that writes.
 *
 * Canonical arithmetic in vectors: zmm accumulator k of a reduction holds lanes 16k..16k+15 of
 * the 64 canonical lanes, so a 64-element step adds element b + 64s + l to lane l as scalar.c's
 * lane[(j - b) % 64] does. At the end of each block of 1024 the lanes fold with the fixed tree
 * (s = 32: acc0 (+)= acc2, acc1 (+)= acc3; s = 16: acc0 (+)= acc1; s = 8, 4, 2, 1: lane k (+)=
 * lane k + s through in-register shuffles) and lane 0 joins the shared double total
 * (softmax-common.h). exp: min/max clamps that let NaN through (second operand), vrndscaleps
 * (round to nearest even), the FMAs of the contract, and vscalefps for RN(p * 2^n). "max (any
 * order)" is vmaxps(z, m), which ignores a NaN z like scalar's (z > m) ? z : m.
 *
 * Tail handling: no over-reads, no over-writes: elements past the row end (or past n_valid)
 * are handled with __mmask16 masked loads (fault-suppressing) and masked stores; reduction
 * lanes outside the mask keep their value (masked moves), so a partial block adds exactly the
 * terms the scalar lanes add.
 *
 * Stores: with row->nontemporal the output is written with streaming stores from the first
 * 16-element step whose address is aligned to its size on (masked regular stores before it and
 * at the tail), and the kernel ends with _mm_sfence(). With it (a large working set) the
 * output pass also prefetches, into L2, the input bytes just past the row — the next row of a
 * dense batch — so that the memory stays busy while the core computes (a prefetch never
 * faults; for strided rows it is merely useless).
 *
 * Structure: the reductions (reduce) and the element-wise output pass (out_range) are
 * always-inline bodies with the element dtype and the reduction kind as compile-time
 * constants; the row-level control flow (passes, outcomes, the double steps) is plain code
 * shared by all dtypes.
 */
#include <assert.h>
#include <immintrin.h>
#include <stdalign.h>
#include <math.h>
#include <stdint.h>

#include "kernels/x86/avx512-io.h"
#include "softmax-common.h"
#include "softmax.h"

#define BLOCK NK_SOFTMAX_BLOCK
/* Three-pass rows up to this many elements keep their exponentials in a 32 KiB stack buffer. */
#define SCRATCH NK_SOFTMAX_SCRATCH

/* ---- the canonical exp in 16 lanes --------------------------------------------------------- */

#define RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

NK_INLINE __m512 v_poly(__m512 r) {
  __m512 p = _mm512_set1_ps(NK_SM_C5);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(NK_SM_C4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(NK_SM_C3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(NK_SM_C2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(NK_SM_C1));
  return _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
}

/* exp(t): t = min(max(t, -104), 88.75) (NaN passes: vmaxps/vminps return the second operand),
 * n = rint(t log2e), r = t - n ln2 (two FMAs), RN(p(r) * 2^n). A NaN t gives a NaN. */
NK_INLINE __m512 v_exp(__m512 t) {
  t = _mm512_min_ps(_mm512_set1_ps(NK_SM_EXP_HI), _mm512_max_ps(_mm512_set1_ps(NK_SM_EXP_LO), t));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(NK_SM_LOG2E)), RNE);
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-NK_SM_LN2_HI), t);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-NK_SM_LN2_LO), r);
  return _mm512_scalef_ps(v_poly(r), n);
}

/* extexp(z) = p * 2^n, r clamped to [-1, 1] (NaN passes); z == -inf gives (0, -inf). */
NK_INLINE __m512 v_extexp(__m512 z, __m512 *n_out) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(z, _mm512_set1_ps(NK_SM_LOG2E)), RNE);
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-NK_SM_LN2_HI), z);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-NK_SM_LN2_LO), r);
  r = _mm512_min_ps(_mm512_set1_ps(1.0f), _mm512_max_ps(_mm512_set1_ps(-1.0f), r));
  *n_out = n; /* rint(-inf) = -inf */
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(z, _mm512_set1_ps(-INFINITY), _CMP_NEQ_UQ), v_poly(r));
}

/* f(d) = 2^d for d >= -126 (d an integer <= 0), else 0 (NaN, -inf included). */
NK_INLINE __m512 v_f(__m512 d) {
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(d), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(d, _mm512_set1_ps(-126.0f), _CMP_GE_OQ), _mm512_castsi512_ps(e));
}

/* E(a, b) = (a == -inf) ? 0 : exp(a - b). */
NK_INLINE __m512 v_E(__m512 a, __m512 b) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(-INFINITY), _CMP_NEQ_UQ),
                             v_exp(_mm512_sub_ps(a, b)));
}

/* (c > a) ? c : a, lane-wise (a NaN c is ignored). */
NK_INLINE __m512 v_pick_gt(__m512 c, __m512 a) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(c, a, _CMP_GT_OQ), a, c);
}

NK_INLINE __m512 v_canon(__m512 v) {
  return _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q),
                            _mm512_castsi512_ps(_mm512_set1_epi32((int)NK_SM_NAN_BITS)));
}

static float exp1(float t) { return _mm512_cvtss_f32(v_exp(_mm512_set1_ps(t))); }
static float extexp1(float z, float *n) {
  __m512 nv;
  const float p = _mm512_cvtss_f32(v_extexp(_mm512_set1_ps(z), &nv));
  *n = _mm512_cvtss_f32(nv);
  return p;
}

/* ---- logits -------------------------------------------------------------------------------- */

/* Where the logits of a pass come from: z_j = x_j * scale (+ mask_j) (+ alibi ((float)j - pos)). */
typedef struct zsrc {
  const void *x, *mask;
  nk_dtype mdt;
  float scale, alibi, pos;
} zsrc;

/* 16 elements of any dtype (run-time dt: the mask). */
static inline __m512 load_any(const void *p, size_t i, __mmask16 m, nk_dtype dt) {
  if (dt == NK_DTYPE_BF16) return load16(p, i, m, NK_DTYPE_BF16, 0);
  if (dt == NK_DTYPE_F16) return load16(p, i, m, NK_DTYPE_F16, 0);
  return load16(p, i, m, NK_DTYPE_F32, 0);
}

/* plain (compile-time): no mask and no ALiBi term. */
NK_INLINE __m512 logits16(const zsrc *s, nk_dtype dt, int plain, size_t i, __mmask16 m) {
  __m512 z = _mm512_mul_ps(load16(s->x, i, m, dt, 0), _mm512_set1_ps(s->scale));
  if (plain) return z;
  if (s->mask) z = _mm512_add_ps(z, load_any(s->mask, i, m, s->mdt));
  if (s->alibi != 0.0f) {
    const __m512i j = _mm512_add_epi32(_mm512_set1_epi32((int)i),
                                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m512 d = _mm512_sub_ps(_mm512_cvtepi32_ps(j), _mm512_set1_ps(s->pos));
    z = _mm512_add_ps(z, _mm512_mul_ps(_mm512_set1_ps(s->alibi), d));
  }
  return z;
}

/* ---- reductions ---------------------------------------------------------------------------- */

enum {
  R_MAX,     /* mx = max z (NaN ignored) */
  R_NAN,     /* flag: some z is NaN */
  R_THREE,   /* S = blocksum(exp(z - m)); optionally stores e or z - m to f32 y (reload) */
  R_TWO,     /* (M, N) lanes, mx, optionally T = blocksum(z) */
  R_ONLINE,  /* (m, d) lanes */
  R_BWD_SM,  /* blocksum(g * y) (fma) */
  R_BWD_LOG, /* blocksum(g); flag: some y != -inf */
};

typedef struct rctx {
  zsrc s;
  const void *g, *y; /* backward */
  float *store;      /* R_THREE reload: y (f32) */
  int store_log;
  float m;           /* R_THREE */
  int want_t;        /* R_TWO */
  const char *pf;    /* large working sets: the next dense row's x, prefetched into L2 while
                        this row's compute-bound passes run (R_THREE, R_TWO) */
} rctx;

typedef struct rres {
  double t1, t2, T; /* THREE/BWD: t1 = sum; TWO: (Md, Nd); ONLINE: (mD, dD) */
  float mx;
  int flag;
} rres;

/* a (+)= b of the fold tree (a = lane k, b = lane k + s), on (A, B) state pairs. */
NK_INLINE void comb(int kind, __m512 *a1, __m512 *a2, __m512 b1, __m512 b2) {
  if (kind == R_TWO) { /* (M, N): N = max, M = fma(Mb, f(Nb - N), Ma f(Na - N)) */
    const __m512 N = v_pick_gt(b2, *a2);
    *a1 = _mm512_fmadd_ps(b1, v_f(_mm512_sub_ps(b2, N)), _mm512_mul_ps(*a1, v_f(_mm512_sub_ps(*a2, N))));
    *a2 = N;
  } else if (kind == R_ONLINE) { /* (d, m): m = max, d = fma(db, E(mb, m), da E(ma, m)) */
    const __m512 m = v_pick_gt(b2, *a2);
    *a1 = _mm512_fmadd_ps(b1, v_E(b2, m), _mm512_mul_ps(*a1, v_E(*a2, m)));
    *a2 = m;
  } else {
    *a1 = _mm512_add_ps(*a1, b1);
  }
}

/* The fixed tree over 64 lanes held in A[0..3] (and B[0..3]); returns lane 0 in *r1 (*r2). */
NK_INLINE void fold(int kind, __m512 *A, __m512 *B, float *r1, float *r2) {
  comb(kind, &A[0], &B[0], A[2], B[2]);
  comb(kind, &A[1], &B[1], A[3], B[3]);
  comb(kind, &A[0], &B[0], A[1], B[1]);
  __m512 a = A[0], b = B[0];
  comb(kind, &a, &b, _mm512_shuffle_f32x4(a, a, 0xEE), _mm512_shuffle_f32x4(b, b, 0xEE)); /* s = 8 */
  comb(kind, &a, &b, _mm512_shuffle_f32x4(a, a, 0x55), _mm512_shuffle_f32x4(b, b, 0x55)); /* s = 4 */
  comb(kind, &a, &b, _mm512_permute_ps(a, 0xEE), _mm512_permute_ps(b, 0xEE));             /* s = 2 */
  comb(kind, &a, &b, _mm512_permute_ps(a, 0x55), _mm512_permute_ps(b, 0x55));             /* s = 1 */
  *r1 = _mm512_cvtss_f32(a);
  *r2 = _mm512_cvtss_f32(b);
}

/* One 16-lane term into state vectors (a, b, c) under mask k. */
NK_INLINE void term(int kind, nk_dtype dt, int plain, const rctx *c, size_t i, __mmask16 k, __m512 *a,
                    __m512 *b, __m512 *t, __m512 *mx, __mmask16 *flag) {
  if (kind == R_BWD_SM || kind == R_BWD_LOG) {
    const __m512 g = load16(c->g, i, k, dt, 0), y = load16(c->y, i, k, dt, 0);
    if (kind == R_BWD_SM) {
      *a = _mm512_mask3_fmadd_ps(g, y, *a, k);
    } else {
      *a = _mm512_mask_add_ps(*a, k, *a, g);
      *flag |= _mm512_mask_cmp_ps_mask(k, y, _mm512_set1_ps(-INFINITY), _CMP_NEQ_UQ);
    }
    return;
  }
  const __m512 z = logits16(&c->s, dt, plain, i, k);
  switch (kind) {
    case R_MAX: *mx = _mm512_mask_max_ps(*mx, k, z, *mx); break;
    case R_NAN: *flag |= _mm512_mask_cmp_ps_mask(k, z, z, _CMP_UNORD_Q); break;
    case R_THREE: {
      const __m512 d = _mm512_sub_ps(z, _mm512_set1_ps(c->m));
      const __m512 e = v_exp(d);
      if (c->store) _mm512_mask_storeu_ps(c->store + i, k, c->store_log ? d : e);
      /* S = ones + R: terms equal to 1.0f are counted in t, the others summed in a */
      const __mmask16 one = _mm512_mask_cmp_ps_mask(k, e, _mm512_set1_ps(1.0f), _CMP_EQ_OQ);
      *a = _mm512_mask_add_ps(*a, k & (__mmask16)~one, *a, e);
      *t = _mm512_mask_add_ps(*t, one, *t, _mm512_set1_ps(1.0f));
      break;
    }
    case R_TWO: {
      __m512 n;
      const __m512 p = v_extexp(z, &n);
      const __m512 Np = v_pick_gt(n, *b);
      const __m512 M = _mm512_fmadd_ps(p, v_f(_mm512_sub_ps(n, Np)), _mm512_mul_ps(*a, v_f(_mm512_sub_ps(*b, Np))));
      *a = _mm512_mask_mov_ps(*a, k, M);
      *b = _mm512_mask_mov_ps(*b, k, Np);
      *mx = _mm512_mask_max_ps(*mx, k, z, *mx);
      if (c->want_t) *t = _mm512_mask3_fmadd_ps(z, _mm512_set1_ps(NK_SOFTMAX_TDOWN), *t, k);
      break;
    }
    case R_ONLINE: {
      const __m512 mp = v_pick_gt(z, *b);
      const __m512 d = _mm512_fmadd_ps(*a, v_E(*b, mp), v_E(z, mp));
      *a = _mm512_mask_mov_ps(*a, k, d);
      *b = _mm512_mask_mov_ps(*b, k, mp);
      break;
    }
    default: break;
  }
}

/* The blocked reduction `kind` over [0, n). */
NK_INLINE void reduce_body(int kind, nk_dtype dt, int plain, const rctx *pc, size_t n, rres *o) {
  const rctx local = *pc, *c = &local; /* a local copy: the reload stores cannot alias it */
  const __m512 a0 = _mm512_setzero_ps();
  const __m512 b0 = _mm512_set1_ps(kind == R_ONLINE || kind == R_TWO ? -INFINITY : 0.0f);
  __m512 mx = _mm512_set1_ps(-INFINITY);
  __mmask16 flag = 0;
  double t1 = 0.0, t2 = kind == R_TWO ? -INFINITY : 0.0, T = 0.0;
  if (kind == R_ONLINE) t1 = -INFINITY; /* (mD, dD) = (-inf, 0) */
  for (size_t blk = 0; blk < n; blk += BLOCK) {
    const size_t e = blk + BLOCK < n ? blk + BLOCK : n;
    __m512 A[4] = {a0, a0, a0, a0}, B[4] = {b0, b0, b0, b0}, Tv[4] = {a0, a0, a0, a0};
    size_t i = blk;
    for (; i + 64 <= e; i += 64) {
      if (c->pf)
        for (size_t off = 0; off < 64 * esize(dt); off += 64)
          _mm_prefetch(c->pf + i * esize(dt) + off, _MM_HINT_T1);
      for (size_t j = 0; j < 4; j++)
        term(kind, dt, plain, c, i + 16 * j, 0xFFFF, &A[j], &B[j], &Tv[j], &mx, &flag);
    }
    for (size_t j = 0; i + 16 * j < e; j++) /* the partial step: j < 4 */
      term(kind, dt, plain, c, i + 16 * j, mask_first((ptrdiff_t)(e - i - 16 * j)), &A[j], &B[j],
           &Tv[j], &mx, &flag);
    if (kind == R_MAX || kind == R_NAN) continue;
    float r1, r2;
    fold(kind, A, B, &r1, &r2);
    if (kind == R_TWO) {
      nk__sm_mn_join(&t1, &t2, r1, r2);
      if (c->want_t) {
        fold(R_THREE, Tv, B, &r1, &r2);
        T += NK_SOFTMAX_TUP * (double)r1;
      }
    } else if (kind == R_ONLINE) {
      nk__sm_md_join(&t1, &t2, r2, r1);
    } else {
      t1 += (double)r1;
      if (kind == R_THREE) { /* the count of 1.0f terms (exact: at most 1024 per block) */
        fold(R_THREE, Tv, B, &r1, &r2);
        T += (double)r1;
      }
    }
  }
  o->t1 = t1;
  o->t2 = t2;
  o->T = T;
  o->mx = _mm512_reduce_max_ps(mx);
  o->flag = flag != 0;
}

/* The logit kinds specialized on "plain" (no mask, no ALiBi); the backward kinds read no logits. */
NK_INLINE void reduce(int kind, nk_dtype dt, const rctx *c, size_t n, rres *o) {
  if (kind != R_BWD_SM && kind != R_BWD_LOG && !c->s.mask && c->s.alibi == 0.0f)
    reduce_body(kind, dt, 1, c, n, o);
  else
    reduce_body(kind, dt, 0, c, n, o);
}

/* ---- element-wise output passes ------------------------------------------------------------ */

enum {
  O_CONST,     /* v */
  O_THREE_SM,  /* exp(z - m) * lambda */
  O_THREE_LOG, /* (z - m) - ls */
  O_TWO_SM,    /* RN((p * lambda) * 2^max(n - nf, -160)) */
  O_TWO_LOG,   /* (z - Lh) - Ll */
  O_RELOAD_SM, /* y * lambda */
  O_RELOAD_LOG,/* y - ls */
  O_XENT_TWO,  /* fma(p_two, a, b | bt) */
  O_XENT_THREE,/* fma(exp(z - m) * lambda, a, b | bt) */
  O_BWD_SM,    /* (y * ((g - Dh) - Dl)) * scale */
  O_BWD_LOG,   /* fma(-exp(y), Gf, g) * scale */
  O_SIG_FWD,
  O_SIG_BWD,   /* ((g * y) * (1 - y)) * scale */
};

typedef struct octx {
  int mode;
  zsrc s;
  const void *in2;  /* bwd: dy; sigmoid bwd: dy */
  const void *in1;  /* bwd: y; reload: y */
  void *out;
  float v, m, lambda, ls, ll, nf, a, b, bt, scale;
  size_t target;
  int nt;
  const char *pf1, *pf2; /* nt: the input bytes just past this row (the next row of a dense
                            batch), prefetched into L2 while this row's output streams out */
} octx;

NK_INLINE __m512 two_value(__m512 z, const octx *o) {
  __m512 n;
  const __m512 p = v_extexp(z, &n);
  const __m512 d = _mm512_max_ps(_mm512_sub_ps(n, _mm512_set1_ps(o->nf)), _mm512_set1_ps(NK_SM_SCALE_MIN));
  return _mm512_scalef_ps(_mm512_mul_ps(p, _mm512_set1_ps(o->lambda)), d);
}

NK_INLINE __m512 xent_fma(const octx *o, __m512 p, size_t i) {
  const __m512i j = _mm512_add_epi32(_mm512_set1_epi32((int)i),
                                     _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  const __mmask16 t = _mm512_cmpeq_epi32_mask(j, _mm512_set1_epi32((int)o->target));
  const __m512 b = _mm512_mask_blend_ps(t, _mm512_set1_ps(o->b), _mm512_set1_ps(o->bt));
  __m512 v = _mm512_fmadd_ps(p, _mm512_set1_ps(o->a), b);
  if (isinf(o->a)) /* a overflowed: p_j == 0 gives b (softmax.h) */
    v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(p, _mm512_setzero_ps(), _CMP_EQ_OQ), v, b);
  return v_canon(v);
}

NK_INLINE __m512 out_vec(int mode, nk_dtype dt, int plain, const octx *o, size_t i, __mmask16 k) {
  switch (mode) {
    case O_THREE_SM: case O_THREE_LOG: case O_TWO_SM: case O_TWO_LOG: case O_SIG_FWD: {
      const __m512 z = logits16(&o->s, dt, plain, i, k);
      if (mode == O_THREE_SM) return _mm512_mul_ps(v_exp(_mm512_sub_ps(z, _mm512_set1_ps(o->m))), _mm512_set1_ps(o->lambda));
      if (mode == O_THREE_LOG) return _mm512_sub_ps(_mm512_sub_ps(z, _mm512_set1_ps(o->m)), _mm512_set1_ps(o->ls));
      if (mode == O_TWO_SM) return two_value(z, o);
      if (mode == O_TWO_LOG) return _mm512_sub_ps(_mm512_sub_ps(z, _mm512_set1_ps(o->ls)), _mm512_set1_ps(o->ll));
      const __m512 a = _mm512_abs_ps(z);
      const __m512 e = v_exp(_mm512_xor_ps(a, _mm512_set1_ps(-0.0f))); /* -|z| */
      const __m512 one = _mm512_set1_ps(1.0f);
      const __m512 num = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GE_OQ), e, one);
      return v_canon(_mm512_div_ps(num, _mm512_add_ps(one, e)));
    }
    case O_RELOAD_SM: return _mm512_mul_ps(load16(o->in1, i, k, NK_DTYPE_F32, 0), _mm512_set1_ps(o->lambda));
    case O_RELOAD_LOG: return _mm512_sub_ps(load16(o->in1, i, k, NK_DTYPE_F32, 0), _mm512_set1_ps(o->ls));
    case O_XENT_TWO: return xent_fma(o, two_value(load16(o->s.x, i, k, dt, 0), o), i);
    case O_XENT_THREE: {
      const __m512 z = load16(o->s.x, i, k, dt, 0);
      const __m512 p = _mm512_mul_ps(v_exp(_mm512_sub_ps(z, _mm512_set1_ps(o->m))), _mm512_set1_ps(o->lambda));
      return xent_fma(o, p, i);
    }
    case O_BWD_SM: case O_BWD_LOG: case O_SIG_BWD: {
      const __m512 y = load16(o->in1, i, k, dt, 0), g = load16(o->in2, i, k, dt, 0);
      const __m512 sc = _mm512_set1_ps(o->scale);
      __m512 v;
      if (mode == O_BWD_SM)
        v = _mm512_sub_ps(_mm512_sub_ps(g, _mm512_set1_ps(o->a)), _mm512_set1_ps(o->b)), v = _mm512_mul_ps(_mm512_mul_ps(y, v), sc);
      else if (mode == O_BWD_LOG)
        v = _mm512_mul_ps(_mm512_fnmadd_ps(v_exp(y), _mm512_set1_ps(o->a), g), sc);
      else
        v = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(g, y), _mm512_sub_ps(_mm512_set1_ps(1.0f), y)), sc);
      return v_canon(v);
    }
    default: return _mm512_set1_ps(o->v);
  }
}

/* Elements [from, to) of the output: streaming stores (nt) from the first step whose address is
 * aligned to its size, masked stores before it and at the tail. */
NK_INLINE void out_body(int mode, nk_dtype dt, int plain, const octx *po, size_t from, size_t to) {
  const octx local = *po, *o = &local; /* a local copy: the stores cannot alias it */
  size_t i = from;
  if (i >= to) return;
  const size_t es = esize(dt), vb = 16 * es;
  const uintptr_t base = (uintptr_t)o->out;
  if (o->nt && base % es == 0) {
    size_t head = ((vb - ((base + i * es) & (vb - 1))) & (vb - 1)) / es;
    if (head > to - i) head = to - i;
    if (head) {
      store16(o->out, i, mask_first((ptrdiff_t)head), out_vec(mode, dt, plain, o, i, mask_first((ptrdiff_t)head)), dt, ST_MASK);
      i += head;
    }
    for (; i + 16 <= to; i += 16) {
      if (o->pf1) _mm_prefetch(o->pf1 + i * es, _MM_HINT_T1);
      if (o->pf2) _mm_prefetch(o->pf2 + i * es, _MM_HINT_T1);
      store16(o->out, i, 0xFFFF, out_vec(mode, dt, plain, o, i, 0xFFFF), dt, ST_STREAM);
    }
  } else {
    for (; i + 16 <= to; i += 16) store16(o->out, i, 0xFFFF, out_vec(mode, dt, plain, o, i, 0xFFFF), dt, ST_FULL);
  }
  if (i < to) {
    const __mmask16 k = mask_first((ptrdiff_t)(to - i));
    store16(o->out, i, k, out_vec(mode, dt, plain, o, i, k), dt, ST_MASK);
  }
}

/* The mode (and, for the logit modes, "plain") made compile-time constants. */
NK_INLINE void out_range(nk_dtype dt, const octx *o, size_t from, size_t to) {
  const int plain = !o->s.mask && o->s.alibi == 0.0f;
  switch (o->mode) {
#define NK_OUT_LOGITS(m) \
  case m: if (plain) out_body(m, dt, 1, o, from, to); else out_body(m, dt, 0, o, from, to); break;
    NK_OUT_LOGITS(O_THREE_SM)
    NK_OUT_LOGITS(O_THREE_LOG)
    NK_OUT_LOGITS(O_TWO_SM)
    NK_OUT_LOGITS(O_TWO_LOG)
    NK_OUT_LOGITS(O_SIG_FWD)
#undef NK_OUT_LOGITS
    case O_RELOAD_SM: out_body(O_RELOAD_SM, dt, 0, o, from, to); break;
    case O_RELOAD_LOG: out_body(O_RELOAD_LOG, dt, 0, o, from, to); break;
    case O_XENT_TWO: out_body(O_XENT_TWO, dt, 0, o, from, to); break;
    case O_XENT_THREE: out_body(O_XENT_THREE, dt, 0, o, from, to); break;
    case O_BWD_SM: out_body(O_BWD_SM, dt, 0, o, from, to); break;
    case O_BWD_LOG: out_body(O_BWD_LOG, dt, 0, o, from, to); break;
    case O_SIG_BWD: out_body(O_SIG_BWD, dt, 0, o, from, to); break;
    default: out_body(O_CONST, dt, 0, o, from, to); break;
  }
}

/* ---- row-level control (dt compile-time through the inlined passes) ------------------------ */

static zsrc fwd_src(const nk_softmax_row *row) {
  const zsrc s = {row->x, row->mask, row->mask_dtype, row->scale, row->alibi, row->pos};
  return s;
}

/* The row outcome NaN / fully masked: the whole row (and lse) is written. 1 if it was. */
NK_INLINE int fwd_special(nk_dtype dt, const nk_softmax_row *row, const nk__sm_fin *f) {
  if (f->outcome == NK_SM_NORMAL) return 0;
  octx o = {0};
  o.mode = O_CONST;
  o.out = row->y;
  o.nt = row->nontemporal;
  o.v = f->outcome == NK_SM_NANROW ? nk__sm_nan() : nk__sm_masked_y(row->log, row->masked_nan);
  out_range(dt, &o, 0, row->n);
  if (row->lse) *row->lse = f->lse;
  return 1;
}

/* Writes [0, nv) with mode and [nv, n) with the masked value; lse. */
NK_INLINE void fwd_write(nk_dtype dt, const nk_softmax_row *row, octx *o, const nk__sm_fin *f) {
  o->s = fwd_src(row);
  o->out = row->y;
  o->nt = row->nontemporal;
  if (o->nt) o->pf1 = (const char *)row->x + row->n * esize(dt);
  out_range(dt, o, 0, row->n_valid);
  o->mode = O_CONST;
  o->v = row->log ? -INFINITY : 0.0f;
  out_range(dt, o, row->n_valid, row->n);
  if (row->lse) *row->lse = f->lse;
}

NK_INLINE void fwd_three_pass(nk_dtype dt, const nk_softmax_row *row, int reload) {
  assert(row != NULL && row->n > 0 && row->n_valid <= row->n);
  const size_t nv = row->n_valid;
  rctx c = {0};
  c.s = fwd_src(row);
  rres r;
  reduce(R_MAX, dt, &c, nv, &r);
  float m = r.mx;
  if (row->has_sink) m = row->sink > m ? row->sink : m;
  m = m + 0.0f;
  double S, ones = 0.0;
  /* Rows of up to SCRATCH elements keep their exponentials (or z - m) in a stack buffer that
   * stays in L1/L2, so the last pass neither recomputes exp (recompute) nor rereads y through
   * a read-for-ownership (reload): the same bits, one exp per element, one memory read of x
   * and one (streaming) write of y. */
  alignas(64) float scratch[SCRATCH];
  const int use_scratch = nv <= SCRATCH;
  if (m == -INFINITY) {
    reduce(R_NAN, dt, &c, nv, &r);
    S = r.flag || (row->has_sink && isnan(row->sink)) ? nk__sm_nan_d() : 0.0;
  } else {
    c.m = m;
    if (row->nontemporal) c.pf = (const char *)row->x + row->n * esize(dt);
    c.store = use_scratch ? scratch : reload ? (float *)row->y : NULL;
    c.store_log = row->log;
    reduce(R_THREE, dt, &c, nv, &r);
    S = r.t1;
    ones = r.T;
    if (row->has_sink) nk__sm_three_add_sink(exp1(row->sink - m), &ones, &S);
  }
  nk__sm_fin f;
  nk__sm_three_finish_split(m, ones, S, row->masked_nan, &f);
  if (fwd_special(dt, row, &f)) return;
  octx o = {0};
  const int from_buf = use_scratch || reload;
  o.mode = from_buf ? (row->log ? O_RELOAD_LOG : O_RELOAD_SM) : (row->log ? O_THREE_LOG : O_THREE_SM);
  o.in1 = use_scratch ? scratch : row->y;
  o.m = f.m;
  o.lambda = f.lambda;
  o.ls = f.ls;
  fwd_write(dt, row, &o, &f);
}

NK_INLINE void fwd_two_pass(nk_dtype dt, const nk_softmax_row *row) {
  assert(row != NULL && row->n > 0 && row->n_valid <= row->n);
  rctx c = {0};
  c.s = fwd_src(row);
  if (row->nontemporal) c.pf = (const char *)row->x + row->n * esize(dt);
  rres r;
  reduce(R_TWO, dt, &c, row->n_valid, &r);
  double Md = r.t1, Nd = r.t2;
  float m = r.mx;
  if (row->has_sink) {
    float ns;
    const float ps = extexp1(row->sink, &ns);
    nk__sm_mn_join(&Md, &Nd, ps, ns);
    m = row->sink > m ? row->sink : m;
  }
  if (nk__sm_out_of_range(m)) {
    fwd_three_pass(dt, row, 0);
    return;
  }
  nk__sm_fin f;
  nk__sm_two_finish(Md, Nd, row->masked_nan, &f);
  if (fwd_special(dt, row, &f)) return;
  octx o = {0};
  o.mode = row->log ? O_TWO_LOG : O_TWO_SM;
  o.lambda = f.lambda;
  o.nf = f.nf;
  o.ls = f.ls;
  o.ll = f.ll;
  fwd_write(dt, row, &o, &f);
}

NK_INLINE void fwd_online(nk_dtype dt, const nk_softmax_row *row) {
  assert(row != NULL && row->n > 0 && row->n_valid <= row->n);
  rctx c = {0};
  c.s = fwd_src(row);
  rres r;
  reduce(R_ONLINE, dt, &c, row->n_valid, &r);
  double mD = r.t1, dD = r.t2;
  if (row->has_sink) nk__sm_md_join(&mD, &dD, row->sink, 1.0f);
  nk__sm_fin f;
  nk__sm_three_finish((float)mD + 0.0f, dD, row->masked_nan, &f);
  if (fwd_special(dt, row, &f)) return;
  octx o = {0};
  o.mode = row->log ? O_THREE_LOG : O_THREE_SM;
  o.m = f.m;
  o.lambda = f.lambda;
  o.ls = f.ls;
  fwd_write(dt, row, &o, &f);
}

NK_INLINE void bwd(nk_dtype dt, const nk_softmax_bwd_row *row) {
  assert(row != NULL && row->n > 0);
  rctx c = {0};
  c.g = row->dy;
  c.y = row->y;
  rres r;
  octx o = {0};
  o.out = row->dx;
  o.nt = row->nontemporal;
  if (row->log) reduce(R_BWD_LOG, dt, &c, row->n, &r);
  else reduce(R_BWD_SM, dt, &c, row->n, &r);
  const double D = r.t1;
  if (row->log && !r.flag) {
    o.mode = O_CONST, o.v = 0.0f;
    if (row->dot) *row->dot = 0.0;
  } else if (!isfinite(D)) {
    o.mode = O_CONST, o.v = nk__sm_nan();
    if (row->dot) *row->dot = nk__sm_nan_d();
  } else {
    if (row->dot) *row->dot = D;
    o.in1 = row->y;
    o.in2 = row->dy;
    o.scale = row->scale;
    if (row->nontemporal) {
      o.pf1 = (const char *)row->y + row->n * esize(dt);
      o.pf2 = (const char *)row->dy + row->n * esize(dt);
    }
    if (row->log) {
      o.mode = O_BWD_LOG, o.a = (float)D;
    } else {
      o.mode = O_BWD_SM;
      nk__sm_bwd_split(D, &o.a, &o.b);
    }
  }
  out_range(dt, &o, 0, row->n);
  if (row->nontemporal) _mm_sfence();
}

NK_INLINE void xent(nk_dtype dt, const nk_xent_row *row) {
  assert(row != NULL && row->n > 0 && row->target < row->n && row->loss != NULL);
  const size_t n = row->n;
  rctx c = {0};
  c.s.x = row->x;
  c.s.scale = 1.0f;
  c.want_t = row->smoothing > 0.0f;
  /* The next row is prefetched while this one is summed (nontemporal: the operator sets it for
   * large logits, with or without dlogits; without dlogits nothing is stored). Measured at
   * 2048 x 128256 f32, 2 threads, forward only: 10.9 -> 18.5 GB/s. */
  if (row->nontemporal) c.pf = (const char *)row->x + n * esize(dt);
  rres r;
  reduce(R_TWO, dt, &c, n, &r);
  const double T = r.T;
  const float m = r.mx + 0.0f;
  const int three = nk__sm_out_of_range(r.mx);
  octx o = {0};
  double L;
  if (three) {
    c.m = m;
    reduce(R_THREE, dt, &c, n, &r);
    L = (double)m + nk__sm_log_split(r.T, r.t1);
    o.lambda = (float)(1.0 / (r.T + r.t1));
    o.m = m;
  } else {
    L = nk__sm_two_L(r.t1, r.t2);
    o.lambda = (float)(1.0 / r.t1);
    o.nf = (float)r.t2;
  }
  nk__sm_xent x;
  nk__sm_xent_finish(L, T, _mm512_cvtss_f32(load16(row->x, row->target, 1, dt, 0)), n,
                     row->smoothing, row->z_loss, row->grad_w, &x);
  *row->loss = x.loss;
  if (row->lse) *row->lse = x.lse;
  if (!row->dx) return;
  o.s.x = row->x;
  o.out = row->dx;
  o.nt = row->nontemporal;
  if (o.nt) o.pf1 = (const char *)row->x + n * esize(dt);
  if (x.nanrow) {
    o.mode = O_CONST, o.v = nk__sm_nan();
  } else {
    o.mode = three ? O_XENT_THREE : O_XENT_TWO;
    o.a = x.a, o.b = x.b, o.bt = x.bt, o.target = row->target;
  }
  out_range(dt, &o, 0, n);
  if (row->nontemporal) _mm_sfence();
}

NK_INLINE void sigmoid_fwd(nk_dtype dt, const nk_sigmoid_row *row) {
  assert(row != NULL && row->n > 0 && row->n_valid <= row->n);
  octx o = {0};
  const zsrc s = {row->x, row->mask, row->mask_dtype, row->scale, row->alibi, row->pos};
  o.s = s;
  o.out = row->y;
  o.nt = row->nontemporal;
  o.mode = O_SIG_FWD;
  out_range(dt, &o, 0, row->n_valid);
  o.mode = O_CONST;
  o.v = 0.0f;
  out_range(dt, &o, row->n_valid, row->n);
  if (row->nontemporal) _mm_sfence();
}

NK_INLINE void sigmoid_bwd(nk_dtype dt, const nk_sigmoid_row *row) {
  assert(row != NULL && row->n > 0);
  octx o = {0};
  o.mode = O_SIG_BWD;
  o.in1 = row->x;
  o.in2 = row->dy;
  o.out = row->y;
  o.scale = row->scale;
  o.nt = row->nontemporal;
  out_range(dt, &o, 0, row->n);
  if (row->nontemporal) _mm_sfence();
}

/* Forward entry: the outcome writes end with an sfence when streaming. */
NK_INLINE void fwd(nk_dtype dt, const nk_softmax_row *row, nk_softmax_algo algo) {
  if (algo == NK_SOFTMAX_TWO_PASS) fwd_two_pass(dt, row);
  else if (algo == NK_SOFTMAX_ONLINE) fwd_online(dt, row);
  else fwd_three_pass(dt, row, algo == NK_SOFTMAX_THREE_PASS_RELOAD);
  if (row->nontemporal) _mm_sfence();
}

/* ---- the named kernels (softmax.inc) ------------------------------------------------------- */

void nk_f32_softmax_fwd__avx512_three_pass_reload(const nk_softmax_row *row) {
  fwd(NK_DTYPE_F32, row, NK_SOFTMAX_THREE_PASS_RELOAD);
}
void nk_f32_softmax_fwd__avx512_three_pass_recompute(const nk_softmax_row *row) {
  fwd(NK_DTYPE_F32, row, NK_SOFTMAX_THREE_PASS_RECOMPUTE);
}
void nk_f32_softmax_fwd__avx512_two_pass(const nk_softmax_row *row) { fwd(NK_DTYPE_F32, row, NK_SOFTMAX_TWO_PASS); }
void nk_f32_softmax_fwd__avx512_online(const nk_softmax_row *row) { fwd(NK_DTYPE_F32, row, NK_SOFTMAX_ONLINE); }
void nk_bf16_softmax_fwd__avx512_three_pass_recompute(const nk_softmax_row *row) {
  fwd(NK_DTYPE_BF16, row, NK_SOFTMAX_THREE_PASS_RECOMPUTE);
}
void nk_bf16_softmax_fwd__avx512_two_pass(const nk_softmax_row *row) { fwd(NK_DTYPE_BF16, row, NK_SOFTMAX_TWO_PASS); }
void nk_bf16_softmax_fwd__avx512_online(const nk_softmax_row *row) { fwd(NK_DTYPE_BF16, row, NK_SOFTMAX_ONLINE); }
void nk_f16_softmax_fwd__avx512_three_pass_recompute(const nk_softmax_row *row) {
  fwd(NK_DTYPE_F16, row, NK_SOFTMAX_THREE_PASS_RECOMPUTE);
}
void nk_f16_softmax_fwd__avx512_two_pass(const nk_softmax_row *row) { fwd(NK_DTYPE_F16, row, NK_SOFTMAX_TWO_PASS); }
void nk_f16_softmax_fwd__avx512_online(const nk_softmax_row *row) { fwd(NK_DTYPE_F16, row, NK_SOFTMAX_ONLINE); }

void nk_f32_softmax_bwd__avx512_u64(const nk_softmax_bwd_row *row) { bwd(NK_DTYPE_F32, row); }
void nk_bf16_softmax_bwd__avx512_u64(const nk_softmax_bwd_row *row) { bwd(NK_DTYPE_BF16, row); }
void nk_f16_softmax_bwd__avx512_u64(const nk_softmax_bwd_row *row) { bwd(NK_DTYPE_F16, row); }

void nk_f32_cross_entropy__avx512_two_pass(const nk_xent_row *row) { xent(NK_DTYPE_F32, row); }
void nk_bf16_cross_entropy__avx512_two_pass(const nk_xent_row *row) { xent(NK_DTYPE_BF16, row); }
void nk_f16_cross_entropy__avx512_two_pass(const nk_xent_row *row) { xent(NK_DTYPE_F16, row); }

void nk_f32_sigmoid_attn_fwd__avx512_u64(const nk_sigmoid_row *row) { sigmoid_fwd(NK_DTYPE_F32, row); }
void nk_bf16_sigmoid_attn_fwd__avx512_u64(const nk_sigmoid_row *row) { sigmoid_fwd(NK_DTYPE_BF16, row); }
void nk_f16_sigmoid_attn_fwd__avx512_u64(const nk_sigmoid_row *row) { sigmoid_fwd(NK_DTYPE_F16, row); }

void nk_f32_sigmoid_attn_bwd__avx512_u64(const nk_sigmoid_row *row) { sigmoid_bwd(NK_DTYPE_F32, row); }
void nk_bf16_sigmoid_attn_bwd__avx512_u64(const nk_sigmoid_row *row) { sigmoid_bwd(NK_DTYPE_BF16, row); }
void nk_f16_sigmoid_attn_bwd__avx512_u64(const nk_sigmoid_row *row) { sigmoid_bwd(NK_DTYPE_F16, row); }

/* exp over n floats (y may be x); a NaN input gives the canonical NaN. */
void nk_f32_exp__avx512_u64(size_t n, const float *x, float *y) {
  size_t i = 0;
  for (; i < n; i += 16) {
    const __mmask16 k = mask_first((ptrdiff_t)(n - i));
    const __m512 t = _mm512_maskz_loadu_ps(k, x + i);
    const __m512 e = _mm512_mask_mov_ps(v_exp(t), _mm512_cmp_ps_mask(t, t, _CMP_UNORD_Q),
                                        _mm512_castsi512_ps(_mm512_set1_epi32((int)NK_SM_NAN_BITS)));
    _mm512_mask_storeu_ps(y + i, k, e);
  }
}
