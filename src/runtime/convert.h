/*
 * convert.h — scalar f32 <-> bf16/f16 conversions, inline, for the runtime and the kernels.
 *
 * Contract (identical on every path; the SIMD kernels reproduce these bits):
 * - Narrowing rounds to nearest, ties to even, in integer arithmetic (no MXCSR dependence).
 * - Subnormal results are produced exactly (no flush); overflow gives +-inf.
 * - NaN in: quiet NaN out with the sign kept and the top payload bits kept
 *   (bf16: bits 22..16 with bit 22 set; f16: bits 22..13 with bit 22 -> f16 bit 9 set), which
 *   is what F16C vcvtps2ph (and AVX512-BF16 vcvtneps2bf16 for NaNs) produces.
 * - Widening (bf16/f16 -> f32) is exact; f16 subnormals become normal f32 values.
 *   NaNs: f16 -> f32 keeps sign and payload and sets the quiet bit (bit 22), exactly as F16C
 *   vcvtph2ps does, so scalar and SIMD widening agree even for signaling NaNs;
 *   bf16 -> f32 is the plain 16-bit shift every SIMD path uses (all bits kept as they are,
 *   a signaling bf16 NaN stays signaling).
 * - Everything is integer arithmetic: no dependence on MXCSR (FTZ/DAZ) or the rounding mode.
 */
#ifndef NK_RUNTIME_CONVERT_H
#define NK_RUNTIME_CONVERT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "normkit.h"

static inline uint32_t nk__f32_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static inline float nk__f32_from_bits(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* f32 -> bf16: add 0x7FFF + lsb and truncate (round to nearest even); NaN -> quiet. */
static inline uint16_t nk__f32_to_bf16(float x) {
  uint32_t u = nk__f32_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x0040u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline float nk__bf16_to_f32(uint16_t h) { return nk__f32_from_bits((uint32_t)h << 16); }

/* f32 -> f16, round to nearest even, subnormals exact, overflow to inf, NaN quieted. */
static inline uint16_t nk__f32_to_f16(float x) {
  uint32_t u = nk__f32_bits(x);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x03FFu));
  if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* >= 65520 rounds to inf (or is inf) */
  if (a >= 0x38800000u) {                                 /* normal f16 result (>= 2^-14) */
    uint32_t r = a + 0x0FFFu + ((a >> 13) & 1u);
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
  }
  if (a < 0x33000000u) return (uint16_t)sign; /* < 2^-25: rounds to zero (2^-25 ties to 0) */
  /* subnormal f16: value = m * 2^-24 with m = round(a_value * 2^24) */
  {
    uint32_t e = a >> 23;                  /* biased f32 exponent, 102..112 */
    uint32_t mant = (a & 0x007FFFFFu) | 0x00800000u;
    uint32_t shift = 126u - e;             /* 14..24: mant >> shift is the f16 mantissa */
    uint32_t m = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (m & 1u))) m += 1u;
    return (uint16_t)(sign | m);
  }
}

static inline float nk__f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1Fu;
  uint32_t m = h & 0x03FFu;
  if (e == 0x1Fu) { /* inf, or NaN: quieted like vcvtph2ps (m != 0 sets bit 22) */
    uint32_t quiet = m ? 0x00400000u : 0u;
    return nk__f32_from_bits(sign | 0x7F800000u | quiet | (m << 13));
  }
  if (e == 0) {
    if (m == 0) return nk__f32_from_bits(sign);
    /* subnormal m * 2^-24, m in 1..1023 with its top bit at position p (0..9):
     * value = 1.f * 2^(p - 24), f32 biased exponent p - 24 + 127 = p + 103. */
    uint32_t p = 31u - (uint32_t)__builtin_clz(m);
    return nk__f32_from_bits(sign | ((p + 103u) << 23) | ((m << (23u - p)) & 0x007FFFFFu));
  }
  return nk__f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

/* Element i of a tensor of dtype dt, widened to f32 (exact). */
static inline float nk__load_f32(const void *p, size_t i, nk_dtype dt) {
  switch (dt) {
    case NK_DTYPE_BF16: return nk__bf16_to_f32(((const uint16_t *)p)[i]);
    case NK_DTYPE_F16: return nk__f16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
  }
}

/* Stores v into element i of a tensor of dtype dt (rounded as above). */
static inline void nk__store_f32(void *p, size_t i, float v, nk_dtype dt) {
  switch (dt) {
    case NK_DTYPE_BF16: ((uint16_t *)p)[i] = nk__f32_to_bf16(v); break;
    case NK_DTYPE_F16: ((uint16_t *)p)[i] = nk__f32_to_f16(v); break;
    default: ((float *)p)[i] = v; break;
  }
}

/* v rounded to dt and widened back: the value a stored-and-reloaded dt tensor holds. */
static inline float nk__round_to(float v, nk_dtype dt) {
  switch (dt) {
    case NK_DTYPE_BF16: return nk__bf16_to_f32(nk__f32_to_bf16(v));
    case NK_DTYPE_F16: return nk__f16_to_f32(nk__f32_to_f16(v));
    default: return v;
  }
}

#endif /* NK_RUNTIME_CONVERT_H */
