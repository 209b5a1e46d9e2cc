/*
 * convert.c — the public f32 <-> bf16/f16 conversions: thin wrappers of the inline functions
 * in convert.h, which the kernels use directly. The contract (round to nearest even in integer
 * arithmetic, subnormals kept, overflow to inf, NaNs quieted like F16C) is written there and
 * in normkit.h; tests/runtime/convert.c checks it exhaustively.
 */
#include "convert.h"

#include "normkit.h"

nk_bf16 nk_f32_to_bf16(float x) { return nk__f32_to_bf16(x); }

float nk_bf16_to_f32(nk_bf16 x) { return nk__bf16_to_f32(x); }

nk_f16 nk_f32_to_f16(float x) { return nk__f32_to_f16(x); }

float nk_f16_to_f32(nk_f16 x) { return nk__f16_to_f32(x); }
