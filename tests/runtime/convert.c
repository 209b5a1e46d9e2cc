/*
 * tests/runtime/convert.c — f32 <-> bf16/f16 conversions (normkit.h "Conversions").
 *
 * The references here are independent of src/runtime/convert.h: widening decodes the fields
 * with ldexp in double; narrowing rounds the exact value (a double) to nearest even by
 * scaling it to an integer number of quanta. On top of that:
 *   - every bf16 and every f16 bit pattern is widened and checked, and round-trips;
 *   - every pair of neighbouring bf16/f16 values is probed at its midpoint (a tie, which must
 *     go to the even one) and one f32 ulp either side of it: this covers every rounding
 *     boundary of the format, overflow to inf and the subnormal range included;
 *   - named cases for each class (ties of both parities, overflow thresholds, 2^-25, ...);
 *   - a sweep of f32 bit patterns with a fixed stride through all 2^32 (NK_CONVERT_STRIDE
 *     overrides the stride: NK_CONVERT_STRIDE=1 checks every f32, a by-hand run of minutes);
 *   - where the CPU has F16C, the hardware (vcvtps2ph, vcvtph2ps) gives the same bits.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normkit.h"
#include "test.h"

#if defined(__x86_64__) || defined(__i386__)
#define NK_TEST_X86 1
#include <immintrin.h>
#else
#define NK_TEST_X86 0
#endif

/* ---- bit helpers ----------------------------------------------------------------------------- */

static uint32_t bits_of(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static float float_of(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

static int is_nan_bits(uint32_t u) { return (u & 0x7FFFFFFFu) > 0x7F800000u; }

/* ---- independent references ------------------------------------------------------------------ */

/* Decodes a binary16-like format (ebits exponent bits, mbits stored mantissa bits) in double.
 * Returns NAN for NaN patterns (the caller checks NaN bits separately). */
static double decode_small(uint32_t h, int ebits, int mbits) {
  const uint32_t sign = (h >> (ebits + mbits)) & 1u;
  const uint32_t e = (h >> mbits) & ((1u << ebits) - 1u);
  const uint32_t m = h & ((1u << mbits) - 1u);
  const int bias = (1 << (ebits - 1)) - 1;
  double v;
  if (e == (1u << ebits) - 1u) {
    if (m != 0) return NAN;
    v = INFINITY;
  } else if (e == 0) {
    v = ldexp((double)m, 1 - bias - mbits); /* subnormal */
  } else {
    v = ldexp((double)(m + (1u << mbits)), (int)e - bias - mbits);
  }
  return sign ? -v : v;
}

/* Rounds the finite double |v| (any f32 value is exact in double) to the format with ebits
 * exponent bits and mbits stored mantissa bits, nearest even, and encodes it with sign.
 * Infinite v, and values that round past the largest finite one, give inf. */
static uint32_t encode_small(double v, int ebits, int mbits) {
  const uint32_t sign_bit = 1u << (ebits + mbits);
  const uint32_t sign = signbit(v) ? sign_bit : 0u;
  const uint32_t inf = ((1u << ebits) - 1u) << mbits;
  const int bias = (1 << (ebits - 1)) - 1;
  const int emin = 1 - bias; /* exponent of the smallest normal */
  v = fabs(v);
  if (isinf(v)) return sign | inf;
  if (v == 0) return sign;
  int e2;
  frexp(v, &e2); /* v = f * 2^e2, f in [0.5, 1): floor(log2 v) = e2 - 1 */
  int qexp = e2 - 1 - mbits;                       /* quantum of v's binade */
  if (e2 - 1 < emin) qexp = emin - mbits;          /* subnormal: the fixed smallest quantum */
  const double n = ldexp(v, -qexp);                /* exact: a power-of-two scaling */
  double k = floor(n);
  const double frac = n - k;                       /* exact */
  if (frac > 0.5 || (frac == 0.5 && fmod(k, 2.0) != 0)) k += 1;
  const double r = ldexp(k, qexp);                 /* the rounded value */
  if (r == 0) return sign;
  int re;
  frexp(r, &re);
  const int ue = re - 1; /* unbiased exponent of r */
  if (ue > bias) return sign | inf;
  if (ue < emin) return sign | (uint32_t)k;        /* subnormal: k quanta of 2^(emin-mbits) */
  const uint32_t biased = (uint32_t)(ue + bias);
  const uint32_t mant = (uint32_t)(ldexp(r, mbits - ue) - ldexp(1.0, mbits));
  return sign | (biased << mbits) | mant;
}

/* What a NaN input must give: sign kept, quiet bit set, top payload bits kept. */
static uint16_t nan_to_bf16_expected(uint32_t u) { return (uint16_t)((u >> 16) | 0x0040u); }
static uint16_t nan_to_f16_expected(uint32_t u) {
  return (uint16_t)(((u >> 16) & 0x8000u) | 0x7E00u | ((u >> 13) & 0x03FFu));
}

static uint16_t ref_f32_to_bf16(float x) {
  const uint32_t u = bits_of(x);
  if (is_nan_bits(u)) return nan_to_bf16_expected(u);
  return (uint16_t)encode_small((double)x, 8, 7);
}

static uint16_t ref_f32_to_f16(float x) {
  const uint32_t u = bits_of(x);
  if (is_nan_bits(u)) return nan_to_f16_expected(u);
  return (uint16_t)encode_small((double)x, 5, 10);
}

/* ---- widening: every pattern ----------------------------------------------------------------- */

NK_TEST(bf16_to_f32_all_patterns) {
  for (uint32_t h = 0; h <= 0xFFFFu; h++) {
    const float f = nk_bf16_to_f32((nk_bf16)h);
    const double ref = decode_small(h, 8, 7);
    if (isnan(ref)) {
      /* bf16 widening is the 16-bit shift: every NaN bit kept (signaling stays signaling). */
      NK_CHECK(bits_of(f) == h << 16, "bf16 %04x -> %08x, want %08x", h, bits_of(f), h << 16);
    } else {
      NK_CHECK((double)f == ref && !!signbit(f) == !!signbit(ref), "bf16 %04x -> %a, want %a", h,
               (double)f, ref);
    }
  }
}

NK_TEST(f16_to_f32_all_patterns) {
  for (uint32_t h = 0; h <= 0xFFFFu; h++) {
    const float f = nk_f16_to_f32((nk_f16)h);
    const double ref = decode_small(h, 5, 10);
    if (isnan(ref)) {
      /* Like vcvtph2ps: sign and payload kept, quiet bit set. */
      const uint32_t want = ((h & 0x8000u) << 16) | 0x7FC00000u | ((h & 0x03FFu) << 13);
      NK_CHECK(bits_of(f) == want, "f16 %04x -> %08x, want %08x", h, bits_of(f), want);
    } else {
      NK_CHECK((double)f == ref && !!signbit(f) == !!signbit(ref), "f16 %04x -> %a, want %a", h,
               (double)f, ref);
    }
  }
}

/* ---- round trips ----------------------------------------------------------------------------- */

NK_TEST(bf16_round_trip_all_patterns) {
  for (uint32_t h = 0; h <= 0xFFFFu; h++) {
    const nk_bf16 back = nk_f32_to_bf16(nk_bf16_to_f32((nk_bf16)h));
    const int nan = (h & 0x7FFFu) > 0x7F80u;
    const uint32_t want = nan ? (h | 0x0040u) : h; /* NaN: quiet, same sign and payload */
    NK_CHECK(back == want, "bf16 %04x -> f32 -> %04x, want %04x", h, back, want);
  }
}

NK_TEST(f16_round_trip_all_patterns) {
  for (uint32_t h = 0; h <= 0xFFFFu; h++) {
    const nk_f16 back = nk_f32_to_f16(nk_f16_to_f32((nk_f16)h));
    const int nan = (h & 0x7FFFu) > 0x7C00u;
    const uint32_t want = nan ? (h | 0x0200u) : h;
    NK_CHECK(back == want, "f16 %04x -> f32 -> %04x, want %04x", h, back, want);
  }
}

/* ---- every rounding boundary ----------------------------------------------------------------- */

/* For each pair of neighbouring non-negative finite values a < b of the format (b may be the
 * first value past the largest finite one, i.e. the overflow boundary), probe the midpoint,
 * which is exact in f32 (it needs one bit more than the format has), and one f32 ulp below and
 * above it. Both signs. `narrow` is the conversion under test; `widen` gives the value of a
 * pattern. */
static void check_boundaries(const char *name, uint32_t max_finite, uint32_t inf,
                             uint16_t (*narrow)(float), float (*widen)(uint16_t)) {
  for (uint32_t a = 0; a <= max_finite; a++) {
    const uint32_t b = a + 1; /* == inf after max_finite */
    const double va = (double)widen((uint16_t)a);
    /* The value one quantum above the largest finite value: the f32 value of "b" as if the
     * exponent range went on. For finite b it is just its value. */
    const double vb =
        b == inf ? va + (va - (double)widen((uint16_t)(a - 1))) : (double)widen((uint16_t)b);
    const float mid = (float)((va + vb) / 2);
    NK_CHECK((double)mid == (va + vb) / 2, "%s: midpoint of %04x not exact", name, a);
    const uint32_t even = (a & 1u) ? b : a;
    const float below = nextafterf(mid, 0.0f), above = nextafterf(mid, INFINITY);
    for (int s = 0; s < 2; s++) {
      const float sg = s ? -1.0f : 1.0f;
      const uint32_t sbit = s ? 0x8000u : 0u;
      const float probes[4] = {sg * (float)va, sg * mid, sg * below, sg * above};
      const uint32_t want[4] = {sbit | a, sbit | even, sbit | a, sbit | b};
      static const char *const what[4] = {"exact", "tie", "below tie", "above tie"};
      for (int p = 0; p < 4; p++) {
        const uint32_t got = narrow(probes[p]);
        NK_CHECK(got == want[p], "%s: %s %a -> %04x, want %04x", name, what[p],
                 (double)probes[p], got, want[p]);
      }
    }
  }
}

static float widen_bf16(uint16_t h) { return nk_bf16_to_f32(h); }
static float widen_f16(uint16_t h) { return nk_f16_to_f32(h); }

static uint16_t narrow_bf16(float x) { return nk_f32_to_bf16(x); }
static uint16_t narrow_f16(float x) { return nk_f32_to_f16(x); }

NK_TEST(bf16_every_rounding_boundary) {
  check_boundaries("bf16", 0x7F7Fu, 0x7F80u, narrow_bf16, widen_bf16);
}

NK_TEST(f16_every_rounding_boundary) {
  check_boundaries("f16", 0x7BFFu, 0x7C00u, narrow_f16, widen_f16);
}

/* ---- named cases ----------------------------------------------------------------------------- */

typedef struct {
  uint32_t in; /* f32 bits */
  uint16_t out;
  const char *what;
} conv_case;

static void check_cases(const char *name, const conv_case *cases, size_t n,
                        uint16_t (*narrow)(float), uint16_t (*ref)(float)) {
  for (size_t i = 0; i < n; i++) {
    const float x = float_of(cases[i].in);
    const uint16_t got = narrow(x);
    NK_CHECK(got == cases[i].out, "%s %s: %08x (%a) -> %04x, want %04x", name, cases[i].what,
             cases[i].in, (double)x, got, cases[i].out);
    /* The table and the double reference agree, so the reference is trusted by the sweep. */
    NK_CHECK(ref(x) == cases[i].out, "%s %s: reference gives %04x, table %04x", name,
             cases[i].what, ref(x), cases[i].out);
  }
}

NK_TEST(f16_named_cases) {
  static const conv_case cases[] = {
      {0x3F800000u, 0x3C00u, "1.0 exact"},
      {0xC0000000u, 0xC000u, "-2.0 exact"},
      {0x3EAAAAABu, 0x3555u, "1/3 rounds down"},
      {0x3F801000u, 0x3C00u, "1+2^-11 tie to even (down)"},
      {0x3F803000u, 0x3C02u, "1+3*2^-11 tie to even (up)"},
      {0x3F801001u, 0x3C01u, "just above tie"},
      {0x3F800FFFu, 0x3C00u, "just below tie"},
      {0x3F802FFFu, 0x3C01u, "just below odd tie"},
      {0x477FE000u, 0x7BFFu, "65504 max finite"},
      {0x477FEFFFu, 0x7BFFu, "65519.996 below overflow tie"},
      {0x477FF000u, 0x7C00u, "65520 ties to inf"},
      {0xC77FF000u, 0xFC00u, "-65520 ties to -inf"},
      {0x47800000u, 0x7C00u, "65536 overflows"},
      {0x501502F9u, 0x7C00u, "1e10 overflows"},
      {0x7F7FFFFFu, 0x7C00u, "FLT_MAX overflows"},
      {0x38800000u, 0x0400u, "2^-14 smallest normal"},
      {0x387FC000u, 0x03FFu, "largest subnormal"},
      {0x387FE000u, 0x0400u, "largest subnormal + half quantum ties up to smallest normal"},
      {0x387FDFFFu, 0x03FFu, "just below that tie"},
      {0x33800000u, 0x0001u, "2^-24 smallest subnormal"},
      {0x33000000u, 0x0000u, "2^-25 ties to 0"},
      {0xB3000000u, 0x8000u, "-2^-25 ties to -0"},
      {0x33000001u, 0x0001u, "just above 2^-25"},
      {0x32FFFFFFu, 0x0000u, "just below 2^-25"},
      {0x33C00000u, 0x0002u, "3*2^-25 ties up to 2*2^-24 (even)"},
      {0x34200000u, 0x0002u, "5*2^-25 ties down to 2*2^-24 (even)"},
      {0x34000000u, 0x0002u, "2^-23 exact subnormal"},
      {0x00000001u, 0x0000u, "f32 smallest subnormal"},
      {0x80400000u, 0x8000u, "negative f32 subnormal"},
      {0x007FFFFFu, 0x0000u, "f32 largest subnormal"},
      {0x00000000u, 0x0000u, "+0"},
      {0x80000000u, 0x8000u, "-0"},
      {0x7F800000u, 0x7C00u, "+inf"},
      {0xFF800000u, 0xFC00u, "-inf"},
      {0x7FC00000u, 0x7E00u, "quiet NaN"},
      {0xFFC00000u, 0xFE00u, "negative quiet NaN"},
      {0x7F800001u, 0x7E00u, "signaling NaN, low payload lost, quieted"},
      {0x7FA00000u, 0x7F00u, "signaling NaN, top payload kept, quieted"},
      {0xFF802000u, 0xFE01u, "negative signaling NaN, payload 1 kept"},
      {0x7FC02000u, 0x7E01u, "quiet NaN with payload"},
      {0x7FFFFFFFu, 0x7FFFu, "NaN all ones"},
  };
  check_cases("f16", cases, sizeof cases / sizeof cases[0], narrow_f16, ref_f32_to_f16);
}

NK_TEST(bf16_named_cases) {
  static const conv_case cases[] = {
      {0x3F800000u, 0x3F80u, "1.0 exact"},
      {0xC0000000u, 0xC000u, "-2.0 exact"},
      {0x3EAAAAABu, 0x3EABu, "1/3 rounds up"},
      {0x3F808000u, 0x3F80u, "1+2^-8 tie to even (down)"},
      {0x3F818000u, 0x3F82u, "1+3*2^-8 tie to even (up)"},
      {0x3F808001u, 0x3F81u, "just above tie"},
      {0x3F807FFFu, 0x3F80u, "just below tie"},
      {0x3F817FFFu, 0x3F81u, "just below odd tie"},
      {0x7F7F0000u, 0x7F7Fu, "bf16 max finite"},
      {0x7F7F7FFFu, 0x7F7Fu, "just below the overflow tie"},
      {0x7F7F8000u, 0x7F80u, "(2-2^-8)*2^127 ties to inf"},
      {0x7F7FFFFFu, 0x7F80u, "FLT_MAX rounds to inf"},
      {0xFF7F8000u, 0xFF80u, "negative overflow tie to -inf"},
      {0x7F7E8000u, 0x7F7Eu, "tie below max to even"},
      {0x00800000u, 0x0080u, "smallest normal"},
      {0x00010000u, 0x0001u, "smallest bf16 subnormal"},
      {0x00008000u, 0x0000u, "half the smallest subnormal ties to 0"},
      {0x00008001u, 0x0001u, "just above that tie"},
      {0x00018000u, 0x0002u, "1.5 quanta ties to 2 (even)"},
      {0x007F8000u, 0x0080u, "largest subnormal + half ties up to smallest normal"},
      {0x00000001u, 0x0000u, "f32 smallest subnormal"},
      {0x80000001u, 0x8000u, "negative f32 smallest subnormal"},
      {0x00000000u, 0x0000u, "+0"},
      {0x80000000u, 0x8000u, "-0"},
      {0x7F800000u, 0x7F80u, "+inf"},
      {0xFF800000u, 0xFF80u, "-inf"},
      {0x7FC00000u, 0x7FC0u, "quiet NaN"},
      {0x7F800001u, 0x7FC0u, "signaling NaN, low payload lost, quieted"},
      {0x7FA00000u, 0x7FE0u, "signaling NaN, top payload kept, quieted"},
      {0xFF810000u, 0xFFC1u, "negative signaling NaN, payload kept"},
      {0x7FFFFFFFu, 0x7FFFu, "NaN all ones"},
      {0x7F80FFFFu, 0x7FC0u, "signaling NaN whose rounding would carry"},
  };
  check_cases("bf16", cases, sizeof cases / sizeof cases[0], narrow_bf16, ref_f32_to_bf16);
}

/* ---- the f32 sweep --------------------------------------------------------------------------- */

static uint64_t sweep_stride(void) {
  const char *s = getenv("NK_CONVERT_STRIDE");
  if (s != NULL && s[0] != '\0') {
    const unsigned long long v = strtoull(s, NULL, 10);
    if (v >= 1) return v;
  }
  return 997; /* prime: the low bits cycle through every residue */
}

NK_TEST(f32_sweep_against_double_reference) {
  const uint64_t stride = sweep_stride();
  uint64_t n = 0;
  for (uint64_t i = 0; i <= 0xFFFFFFFFu; i += stride, n++) {
    const float x = float_of((uint32_t)i);
    const uint16_t b = nk_f32_to_bf16(x), rb = ref_f32_to_bf16(x);
    const uint16_t h = nk_f32_to_f16(x), rh = ref_f32_to_f16(x);
    NK_CHECK(b == rb, "bf16(%08x) = %04x, reference %04x", (uint32_t)i, b, rb);
    NK_CHECK(h == rh, "f16(%08x) = %04x, reference %04x", (uint32_t)i, h, rh);
  }
  printf("        (%llu f32 patterns, stride %llu)\n", (unsigned long long)n,
         (unsigned long long)stride);
}

/* ---- hardware F16C gives the same bits ------------------------------------------------------- */

#if NK_TEST_X86
#include <cpuid.h>

/* F16C usable: CPUID.1:ECX bit 29, and AVX usable (the runtime checks AVX's OS state too).
 * Independent of src/runtime/cpu.c. (clang 14's __builtin_cpu_supports knows no "f16c".) */
static int cpu_has_f16c(void) {
  unsigned int eax, ebx, ecx, edx;
  __builtin_cpu_init();
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
  return ((ecx >> 29) & 1u) && __builtin_cpu_supports("avx");
}

__attribute__((target("f16c"))) static uint16_t f16c_narrow(float x) {
  return (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT), 0);
}

__attribute__((target("f16c"))) static float f16c_widen(uint16_t h) {
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}
#endif

NK_TEST(f16c_hardware_agrees) {
#if NK_TEST_X86
  if (!cpu_has_f16c()) NK_SKIP("this CPU has no F16C");
  /* Narrowing: the f32 sweep (NaNs with every kind of payload included) ... */
  const uint64_t stride = sweep_stride();
  for (uint64_t i = 0; i <= 0xFFFFFFFFu; i += stride) {
    const float x = float_of((uint32_t)i);
    const uint16_t hw = f16c_narrow(x), sw = nk_f32_to_f16(x);
    NK_CHECK(hw == sw, "vcvtps2ph(%08x) = %04x, nk_f32_to_f16 %04x", (uint32_t)i, hw, sw);
  }
  /* ... and every rounding boundary: each f16 value, the midpoint to its successor (the
   * overflow boundary 65520 included) and one f32 ulp either side, both signs. */
  for (uint32_t a = 0; a <= 0x7BFFu; a++) {
    const double va = nk_f16_to_f32((nk_f16)a);
    const double vb = a == 0x7BFFu ? 65536.0 : nk_f16_to_f32((nk_f16)(a + 1));
    const float mid = (float)((va + vb) / 2);
    const float probes[4] = {(float)va, mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY)};
    for (int p = 0; p < 8; p++) {
      const float x = p < 4 ? probes[p] : -probes[p - 4];
      const uint16_t hw = f16c_narrow(x), sw = nk_f32_to_f16(x);
      NK_CHECK(hw == sw, "vcvtps2ph(%a) = %04x, nk_f32_to_f16 %04x", (double)x, hw, sw);
    }
  }
  /* Widening: every f16 pattern, NaNs included (vcvtph2ps quiets signaling NaNs). */
  for (uint32_t h = 0; h <= 0xFFFFu; h++) {
    const float hw = f16c_widen((uint16_t)h), sw = nk_f16_to_f32((nk_f16)h);
    NK_CHECK(bits_of(hw) == bits_of(sw), "vcvtph2ps(%04x) = %08x, nk_f16_to_f32 %08x", h,
             bits_of(hw), bits_of(sw));
  }
#else
  NK_SKIP("not an x86 CPU: no F16C");
#endif
}

int main(void) {
  NK_RUN(bf16_to_f32_all_patterns);
  NK_RUN(f16_to_f32_all_patterns);
  NK_RUN(bf16_round_trip_all_patterns);
  NK_RUN(f16_round_trip_all_patterns);
  NK_RUN(bf16_every_rounding_boundary);
  NK_RUN(f16_every_rounding_boundary);
  NK_RUN(f16_named_cases);
  NK_RUN(bf16_named_cases);
  NK_RUN(f32_sweep_against_double_reference);
  NK_RUN(f16c_hardware_agrees);
  return nk_test_summary();
}
