/*
 * avx512-io.h — AVX-512 (F/BW/VL/DQ) element access shared by the kernel families: 16-lane
 * loads and stores of f32/bf16/f16 with masks, the exact widening and the round-to-nearest-even
 * narrowing of runtime/convert.h, streaming-store alignment, and the row-norm fold of 64 lanes.
 * Include only from files compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mf16c.
 *
 * Conversions (runtime/convert.h): bf16 -> f32 is the 16-bit shift; f16 -> f32 is vcvtph2ps
 * (identical to nk__f16_to_f32 for all 65536 inputs, NaNs included); f32 -> f16 is vcvtps2ph
 * with round-to-nearest-even (identical to nk__f32_to_f16 for all 2^32 inputs); f32 -> bf16 is
 * the integer round-to-nearest-even of nk__f32_to_bf16 (not vcvtneps2bf16, which flushes
 * subnormals), NaN -> (bits >> 16) | 0x40.
 */
#ifndef NK_KERNELS_X86_AVX512_IO_H
#define NK_KERNELS_X86_AVX512_IO_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "normkit.h"

#define NK_INLINE static inline __attribute__((always_inline))

/* Store kinds of the element-wise passes. */
#define ST_MASK 0   /* masked regular store (head, tail) */
#define ST_FULL 1   /* 16 lanes, regular store */
#define ST_STREAM 2 /* 16 lanes, streaming store (64-byte aligned rows from the head on) */

/* ---- element access (dt is a compile-time constant at every call) ------------------------- */

NK_INLINE size_t esize(nk_dtype dt) { return dt == NK_DTYPE_F32 ? 4 : 2; }

/* The first k of 16 lanes (k may be <= 0 or >= 16). */
NK_INLINE __mmask16 mask_first(ptrdiff_t k) {
  return k >= 16 ? (__mmask16)0xFFFF : k <= 0 ? (__mmask16)0 : (__mmask16)((1u << k) - 1u);
}

/* bf16 / f16 bits -> f32, exact. */
NK_INLINE __m512 widen16(__m256i h, nk_dtype dt) {
  if (dt == NK_DTYPE_BF16)
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

/* f32 -> bf16 in the low 16 bits of each 32-bit lane (nk__f32_to_bf16):
 *   NaN: (u >> 16) | 0x40;  else (u + 0x7FFF + ((u >> 16) & 1)) >> 16. */
NK_INLINE __m512i bf16_bits32(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i hi = _mm512_srli_epi32(u, 16);
  const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
  const __m512i rne = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)),
                                                _mm512_set1_epi32(0x7F800000));
  return _mm512_mask_or_epi32(rne, nan, hi, _mm512_set1_epi32(0x40));
}

/* f32 -> dt bits (dt bf16 or f16), round to nearest even. */
NK_INLINE __m256i narrow16(__m512 v, nk_dtype dt) {
  if (dt == NK_DTYPE_BF16) return _mm512_cvtepi32_epi16(bf16_bits32(v));
  return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* v rounded to dt and widened back (scalar's round_to). */
NK_INLINE __m512 round16(__m512 v, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) return v;
  if (dt == NK_DTYPE_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(bf16_bits32(v), 16));
  return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* 16 elements from p + i; `full` (compile-time) selects the unmasked load. */
NK_INLINE __m512 load16(const void *p, size_t i, __mmask16 m, nk_dtype dt, int full) {
  if (dt == NK_DTYPE_F32)
    return full ? _mm512_loadu_ps((const float *)p + i)
                : _mm512_maskz_loadu_ps(m, (const float *)p + i);
  const uint16_t *q = (const uint16_t *)p + i;
  return widen16(full ? _mm256_loadu_si256((const __m256i *)q) : _mm256_maskz_loadu_epi16(m, q),
                 dt);
}

NK_INLINE void store16(void *p, size_t i, __mmask16 m, __m512 v, nk_dtype dt, int kind) {
  if (dt == NK_DTYPE_F32) {
    float *q = (float *)p + i;
    if (kind == ST_STREAM) _mm512_stream_ps(q, v);
    else if (kind == ST_FULL) _mm512_storeu_ps(q, v);
    else _mm512_mask_storeu_ps(q, m, v);
    return;
  }
  uint16_t *q = (uint16_t *)p + i;
  const __m256i b = narrow16(v, dt);
  if (kind == ST_STREAM) _mm256_stream_si256((__m256i *)q, b);
  else if (kind == ST_FULL) _mm256_storeu_si256((__m256i *)q, b);
  else _mm256_mask_storeu_epi16(q, m, b);
}

/* Elements before the first 64-byte boundary of p (n if p is not element-aligned). */
NK_INLINE size_t head_to_align64(const void *p, size_t n, nk_dtype dt) {
  const uintptr_t a = (uintptr_t)p;
  if (a % esize(dt) != 0) return n;
  const size_t h = ((64u - (a & 63u)) & 63u) / esize(dt);
  return h < n ? h : n;
}

/* The fixed tree over the 64 lanes (scalar's lanes_fold): lane[k] += lane[k + s] for
 * s = 32 (acc0 += acc2, acc1 += acc3), 16 (acc0 += acc1), 8 (256-bit halves), 4 (128-bit
 * halves), 2 (lanes 0,1 += lanes 2,3), 1 (lane 0 += lane 1). */
NK_INLINE float fold64(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  a0 = _mm512_add_ps(a0, a2);
  a1 = _mm512_add_ps(a1, a3);
  a0 = _mm512_add_ps(a0, a1);
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(a0), _mm512_extractf32x8_ps(a0, 1));
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
  return _mm_cvtss_f32(s4);
}

#endif /* NK_KERNELS_X86_AVX512_IO_H */
