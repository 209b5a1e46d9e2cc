/*
 * avx2-io.h — the AVX2 element access shared by the AVX2 kernel files (rownorm/avx2.c,
 * softmax/avx2.c): masks from a table, bf16/f16 <-> f32 conversion with the bits of
 * runtime/convert.h, 8-lane loads and stores with no access outside [0, n) (vmaskmov for f32
 * tails, a zeroed 8-element stack buffer for 16-bit tails), streaming stores, and the 64-lane
 * fold tree of the blocked sums. Static inline; include it only from files compiled with
 * -mavx2 -mfma -mf16c. Conversions:
 *   bf16 -> f32 is the 16-bit shift; f16 -> f32 is vcvtph2ps (identical to nk__f16_to_f32 for
 *   all 65536 inputs, NaNs included); f32 -> f16 is vcvtps2ph with round-to-nearest-even
 *   (identical to nk__f32_to_f16 for all 2^32 inputs); f32 -> bf16 is the integer
 *   round-to-nearest-even of nk__f32_to_bf16, NaN -> (bits >> 16) | 0x40.
 */
#ifndef NK_KERNELS_X86_AVX2_IO_H
#define NK_KERNELS_X86_AVX2_IO_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "normkit.h"

#define NK_INLINE static inline __attribute__((always_inline))

/* Store kinds of the element-wise passes. */
#define ST_PART 0   /* the first k < 8 lanes only (head, tail) */
#define ST_FULL 1   /* 8 lanes, regular store */
#define ST_STREAM 2 /* 8 lanes, streaming store (64-byte aligned rows from the head on) */

/* ---- element access (dt is a compile-time constant at every call) ------------------------- */

NK_INLINE size_t esize(nk_dtype dt) { return dt == NK_DTYPE_F32 ? 4 : 2; }

NK_INLINE const void *row_at(const void *base, size_t row, ptrdiff_t stride, nk_dtype dt) {
  return (const char *)base + (ptrdiff_t)row * stride * (ptrdiff_t)esize(dt);
}

/* mask_table + 8 - k: the first k (0..8) of 8 lanes set. */
static const int32_t mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
static const int64_t mask_table64[8] = {-1, -1, -1, -1, 0, 0, 0, 0};

NK_INLINE __m256i mask8(size_t k) {
  return _mm256_loadu_si256((const __m256i *)(mask_table + 8 - (k < 8 ? k : 8)));
}

NK_INLINE __m256i mask4x64(size_t k) {
  return _mm256_loadu_si256((const __m256i *)(mask_table64 + 4 - (k < 4 ? k : 4)));
}

/* Lanes of vector j of a step with k elements left: clamp(k - 8j, 0, 8). */
NK_INLINE size_t count_at(size_t k, size_t j) {
  return k > 8 * j ? (k - 8 * j < 8 ? k - 8 * j : 8) : 0;
}

/* bf16 / f16 bits -> f32, exact. */
NK_INLINE __m256 widen8(__m128i h, nk_dtype dt) {
  if (dt == NK_DTYPE_BF16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

/* f32 -> bf16 in the low 16 bits of each 32-bit lane (nk__f32_to_bf16):
 *   NaN: (u >> 16) | 0x40;  else (u + 0x7FFF + ((u >> 16) & 1)) >> 16. */
NK_INLINE __m256i bf16_bits32(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i hi = _mm256_srli_epi32(u, 16);
  const __m256i lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
  const __m256i rne = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)),
                                         _mm256_set1_epi32(0x7F800000));
  return _mm256_blendv_epi8(rne, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)), nan);
}

/* f32 -> dt bits (dt bf16 or f16), round to nearest even. */
NK_INLINE __m128i narrow8(__m256 v, nk_dtype dt) {
  if (dt == NK_DTYPE_BF16) {
    const __m256i b = bf16_bits32(v); /* each lane <= 0xFFFF: the unsigned pack is exact */
    return _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
  }
  return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
}

/* v rounded to dt and widened back (scalar's round_to). */
NK_INLINE __m256 round8(__m256 v, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) return v;
  if (dt == NK_DTYPE_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(bf16_bits32(v), 16));
  return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

/* 8 elements from p + i, or (full == 0) the first k of them and zeros. */
NK_INLINE __m256 load8(const void *p, size_t i, size_t k, nk_dtype dt, int full) {
  if (dt == NK_DTYPE_F32)
    return full ? _mm256_loadu_ps((const float *)p + i)
                : _mm256_maskload_ps((const float *)p + i, mask8(k));
  const uint16_t *q = (const uint16_t *)p + i;
  if (full) return widen8(_mm_loadu_si128((const __m128i *)q), dt);
  uint16_t buf[8] = {0};
  memcpy(buf, q, k * sizeof(uint16_t));
  return widen8(_mm_loadu_si128((const __m128i *)buf), dt);
}

NK_INLINE void store8(void *p, size_t i, size_t k, __m256 v, nk_dtype dt, int kind) {
  if (dt == NK_DTYPE_F32) {
    float *q = (float *)p + i;
    if (kind == ST_STREAM) _mm256_stream_ps(q, v);
    else if (kind == ST_FULL) _mm256_storeu_ps(q, v);
    else _mm256_maskstore_ps(q, mask8(k), v);
    return;
  }
  uint16_t *q = (uint16_t *)p + i;
  const __m128i b = narrow8(v, dt);
  if (kind == ST_STREAM) _mm_stream_si128((__m128i *)q, b);
  else if (kind == ST_FULL) _mm_storeu_si128((__m128i *)q, b);
  else {
    uint16_t buf[8];
    _mm_storeu_si128((__m128i *)buf, b);
    memcpy(q, buf, k * sizeof(uint16_t));
  }
}

/* acc for the lanes past the row end (k < 8 valid lanes), nacc for the others. */
NK_INLINE __m256 keep8(__m256 acc, __m256 nacc, size_t k, int full) {
  return full ? nacc : _mm256_blendv_ps(acc, nacc, _mm256_castsi256_ps(mask8(k)));
}

/* Elements before the first 64-byte boundary of p (n if p is not element-aligned). */
NK_INLINE size_t head_to_align64(const void *p, size_t n, nk_dtype dt) {
  const uintptr_t a = (uintptr_t)p;
  if (a % esize(dt) != 0) return n;
  const size_t h = ((64u - (a & 63u)) & 63u) / esize(dt);
  return h < n ? h : n;
}

/* The fixed tree over the 64 lanes (scalar's lanes_fold), a[k] = lanes 8k..8k+7:
 * lane[k] += lane[k + s] for s = 32 (a0..a3 += a4..a7), 16 (a0 += a2, a1 += a3), 8 (a0 += a1),
 * 4 (128-bit halves), 2 (lanes 0,1 += lanes 2,3), 1 (lane 0 += lane 1). */
NK_INLINE float fold64(const __m256 *a) {
  const __m256 s0 = _mm256_add_ps(a[0], a[4]), s1 = _mm256_add_ps(a[1], a[5]);
  const __m256 s2 = _mm256_add_ps(a[2], a[6]), s3 = _mm256_add_ps(a[3], a[7]);
  const __m256 t0 = _mm256_add_ps(s0, s2), t1 = _mm256_add_ps(s1, s3);
  const __m256 u = _mm256_add_ps(t0, t1);
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
  return _mm_cvtss_f32(s4);
}

#endif /* NK_KERNELS_X86_AVX2_IO_H */
