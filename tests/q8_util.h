/*
 * q8_util.h — the documented int8 row rule applied to an f32 row (normkit.h, the _q8 functions):
 * quantizing nk_*_fwd's own f32 output this way gives the fused op's bits. Shared by
 * tests/ops/norm_q8.c and tests/fuzz/quant.c.
 */
#ifndef NK_TESTS_Q8_UTIL_H
#define NK_TESTS_Q8_UTIL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline void quantize_f32_row(size_t n, const float *y, int8_t *q, float *scale) {
  uint32_t a = 0;
  for (size_t j = 0; j < n; j++) {
    uint32_t u;
    memcpy(&u, &y[j], 4);
    u &= 0x7FFFFFFFu;
    a = u > a ? u : a;
  }
  float A;
  memcpy(&A, &a, 4);
  if (a >= 0x7F800000u || a == 0) {
    *scale = a ? NAN : 0.0f;
    memset(q, 0, n);
    return;
  }
  const float pre = A < 0x1p-100f ? 0x1p64f : 1.0f;
  const float inv = (float)(127.0 / ((double)A * pre));
  *scale = (float)((double)A / 127.0);
  for (size_t j = 0; j < n; j++) {
    float t = rintf((y[j] * pre) * inv);
    t = t > 127.0f ? 127.0f : t < -127.0f ? -127.0f : t;
    q[j] = (int8_t)t;
  }
}

#endif /* NK_TESTS_Q8_UTIL_H */
