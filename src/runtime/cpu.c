/*
 * cpu.c — CPU feature detection and the default kernel path (DESIGN.md "Layers", CONVENTIONS C6).
 *
 * Detection runs once (pthread_once) and fills an immutable nk_cpu_features. On x86 a feature
 * counts only when both the CPU (CPUID) and the OS (XGETBV: the OS saves the register state
 * on context switches) support it:
 *   CPUID.1:ECX   bit 12 FMA, bit 27 OSXSAVE, bit 28 AVX, bit 29 F16C
 *   CPUID.7.0:EBX bit 5 AVX2, bit 16 AVX512F, bit 17 AVX512DQ, bit 30 AVX512BW, bit 31 AVX512VL
 *   CPUID.7.0:EDX bit 23 AVX512_FP16
 *   CPUID.7.1:EAX bit 5 AVX512_BF16
 *   XCR0 (XGETBV ecx=0), readable only when OSXSAVE is set:
 *     bits 1,2 (0x06)   XMM and YMM state      -> needed by every VEX feature (AVX2, FMA, F16C)
 *     bits 5,6,7 (0xE0) opmask, ZMM_Hi256, Hi16_ZMM state -> needed by every AVX-512 feature
 * Other architectures report no feature: only the scalar path runs there (NEON later).
 *
 * The default path is read from the NK_ISA environment variable once ("scalar", "avx2",
 * "avx512" or "auto", case-insensitive; unset or empty means auto). A value that is unknown, or
 * names a path this CPU cannot run, is ignored and recorded for nk_isa_env_error().
 * Nothing here allocates, prints or aborts.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "internal.h"

#if defined(__x86_64__) || defined(__i386__)
#define NK_CPU_X86 1
#include <cpuid.h>
#else
#define NK_CPU_X86 0
#endif

static pthread_once_t nk__cpu_once = PTHREAD_ONCE_INIT;
static nk_cpu_features nk__cpu_features;
static int nk__avx2_path;
static int nk__avx512_path;

static pthread_once_t nk__isa_once = PTHREAD_ONCE_INIT;
static nk_isa nk__isa_default_value = NK_ISA_SCALAR;
static const char *nk__isa_env_error_message; /* NULL or nk__isa_env_error_buffer */
static char nk__isa_env_error_buffer[128];

#if NK_CPU_X86
/* XCR0 via XGETBV; the caller has checked CPUID.1:ECX.OSXSAVE. Written as inline asm so this
 * file needs no -mxsave. */
static uint64_t nk__xgetbv0(void) {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0u));
  return ((uint64_t)edx << 32) | eax;
}

static void nk__cpu_detect_x86(nk_cpu_features *f) {
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  unsigned int max_leaf = __get_cpuid_max(0, NULL);
  if (max_leaf < 1) return;

  __get_cpuid_count(1, 0, &eax, &ebx, &ecx, &edx);
  const int fma = (ecx >> 12) & 1;
  const int osxsave = (ecx >> 27) & 1;
  const int avx = (ecx >> 28) & 1;
  const int f16c = (ecx >> 29) & 1;

  int ymm_state = 0, zmm_state = 0;
  if (osxsave) {
    const uint64_t xcr0 = nk__xgetbv0();
    ymm_state = (xcr0 & 0x06u) == 0x06u;
    zmm_state = ymm_state && (xcr0 & 0xE0u) == 0xE0u;
  }
  /* FMA, F16C and AVX2 are VEX-encoded: all need AVX and the YMM state. */
  const int vex = avx && ymm_state;
  f->fma = vex && fma;
  f->f16c = vex && f16c;

  if (max_leaf < 7) return;
  unsigned int max_subleaf = 0;
  __get_cpuid_count(7, 0, &max_subleaf, &ebx, &ecx, &edx);
  f->avx2 = vex && ((ebx >> 5) & 1);
  /* Every AVX-512 subset is an extension of AVX512F and needs the opmask/ZMM state. */
  const int evex = vex && zmm_state && ((ebx >> 16) & 1);
  f->avx512f = evex;
  f->avx512dq = evex && ((ebx >> 17) & 1);
  f->avx512bw = evex && ((ebx >> 30) & 1);
  f->avx512vl = evex && ((ebx >> 31) & 1);
  f->avx512fp16 = evex && ((edx >> 23) & 1);

  if (max_subleaf >= 1) {
    __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx);
    f->avx512bf16 = evex && ((eax >> 5) & 1);
  }
}
#endif

static void nk__cpu_init(void) {
  nk_cpu_features f = {0};
#if NK_CPU_X86
  nk__cpu_detect_x86(&f);
#endif
  nk__avx2_path = f.avx2 && f.fma && f.f16c;
  nk__avx512_path = nk__avx2_path && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  nk__cpu_features = f;
}

const nk_cpu_features *nk_cpu_features_get(void) {
  pthread_once(&nk__cpu_once, nk__cpu_init);
  return &nk__cpu_features;
}

int nk__cpu_has_avx2_path(void) {
  pthread_once(&nk__cpu_once, nk__cpu_init);
  return nk__avx2_path;
}

int nk__cpu_has_avx512_path(void) {
  pthread_once(&nk__cpu_once, nk__cpu_init);
  return nk__avx512_path;
}

const char *nk_isa_name(nk_isa isa) {
  switch (isa) {
    case NK_ISA_AUTO: return "auto";
    case NK_ISA_SCALAR: return "scalar";
    case NK_ISA_AVX2: return "avx2";
    case NK_ISA_AVX512: return "avx512";
  }
  return "?";
}

int nk_isa_supported(nk_isa isa) {
  switch (isa) {
    case NK_ISA_AUTO: return 1;
    case NK_ISA_SCALAR: return 1;
    case NK_ISA_AVX2: return nk__cpu_has_avx2_path();
    case NK_ISA_AVX512: return nk__cpu_has_avx512_path();
  }
  return 0;
}

/* The best path this CPU runs: the priority chain avx512 -> avx2 -> scalar. */
static nk_isa nk__isa_best(void) {
  if (nk__cpu_has_avx512_path()) return NK_ISA_AVX512;
  if (nk__cpu_has_avx2_path()) return NK_ISA_AVX2;
  return NK_ISA_SCALAR;
}

static void nk__isa_init(void) {
  const nk_isa best = nk__isa_best();
  nk__isa_default_value = best;

  const char *env = getenv("NK_ISA");
  if (env == NULL || env[0] == '\0' || strcasecmp(env, "auto") == 0) return;

  static const nk_isa named[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
    if (strcasecmp(env, nk_isa_name(named[i])) != 0) continue;
    if (nk_isa_supported(named[i])) {
      nk__isa_default_value = named[i];
    } else {
      snprintf(nk__isa_env_error_buffer, sizeof nk__isa_env_error_buffer,
               "NK_ISA=%s ignored: this CPU cannot run it (using %s)", nk_isa_name(named[i]),
               nk_isa_name(best));
      nk__isa_env_error_message = nk__isa_env_error_buffer;
    }
    return;
  }
  /* %.40s: an arbitrary environment string must not fill the message. */
  snprintf(nk__isa_env_error_buffer, sizeof nk__isa_env_error_buffer,
           "NK_ISA=%.40s ignored: not one of scalar, avx2, avx512, auto (using %s)", env,
           nk_isa_name(best));
  nk__isa_env_error_message = nk__isa_env_error_buffer;
}

nk_isa nk_isa_default(void) {
  pthread_once(&nk__isa_once, nk__isa_init);
  return nk__isa_default_value;
}

const char *nk_isa_env_error(void) {
  pthread_once(&nk__isa_once, nk__isa_init);
  return nk__isa_env_error_message;
}
