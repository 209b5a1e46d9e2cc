/*
 * dispatch-quant.c — kernel selection for the normq family (fused norm + quantize, FakeLN,
 * power-of-two quantization): the list kernels/quant/quant.inc expands into one table; the
 * selector picks the entry of the requested ISA or steps down avx512 -> avx2 -> scalar.
 * The choice depends on the ISA only (never on the thread count).
 */
#include <stddef.h>

#include "internal.h"
#include "kernels/quant/quant.h"

static const nk_normq_entry normq_table[] = {
#define NK_UKERNEL_NORMQ(isa, dtype, fn) {isa, dtype, fn, #fn},
#include "kernels/quant/quant.inc"
#undef NK_UKERNEL_NORMQ
};

static nk_isa step_down(nk_isa isa) {
  switch (isa) {
    case NK_ISA_AVX512: return NK_ISA_AVX2;
    case NK_ISA_AVX2: return NK_ISA_SCALAR;
    default: return NK_ISA_AUTO;
  }
}

const nk_normq_entry *nk__select_normq(nk_isa isa, nk_dtype dtype) {
  for (; isa != NK_ISA_AUTO; isa = step_down(isa))
    for (size_t i = 0; i < sizeof normq_table / sizeof normq_table[0]; i++)
      if (normq_table[i].isa == isa && normq_table[i].dtype == dtype) return &normq_table[i];
  return NULL;
}
