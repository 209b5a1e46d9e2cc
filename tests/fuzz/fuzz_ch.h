/*
 * fuzz_ch.h — channel-norm tensors for the libFuzzer harnesses (tests/fuzz/chnorm.c,
 * resnorm.c): an (N, C, S) tensor of either layout with fuzzed row and sample strides, its
 * arena geometry, and fill/read between the arena and a dense float64 reference layout.
 */
#ifndef NK_FUZZ_CH_H
#define NK_FUZZ_CH_H

#include "fuzz.h"
#include "reference.h"

/* A library tensor: its chshape (strides explicit) and the arena geometry of the same bytes. */
typedef struct ten {
  nk_ref_chshape t;
  fz_geom g;
} ten;

static ten ten_make(fz_in *in, size_t N, size_t C, size_t S, int nsc, nk_dtype dt) {
  ten r;
  const size_t len = nsc ? C : S, rows = nsc ? S : C;
  r.t.n = N, r.t.c = C, r.t.s = S, r.t.nsc = nsc;
  r.t.row_stride = (ptrdiff_t)(len + fz_pick(in, 4));
  r.t.n_stride = (ptrdiff_t)(rows * (size_t)r.t.row_stride + fz_pick(in, 6));
  fz_geom g = {N, rows, len, r.t.n_stride, r.t.row_stride, nk_dtype_size(dt)};
  r.g = g;
  return r;
}

static void ten_fill(fz_in *in, void *p, const ten *a, const nk_ref_chshape *tr, nk_dtype dt,
                     const fz_dist *d, double *ref) {
  for (size_t n = 0; n < a->t.n; n++)
    for (size_t c = 0; c < a->t.c; c++)
      for (size_t s = 0; s < a->t.s; s++) {
        const size_t i = nk_ref_chidx(&a->t, n, c, s);
        fz_set(p, i, fz_value(in, d), dt);
        ref[nk_ref_chidx(tr, n, c, s)] = fz_get(p, i, dt);
      }
}

static void ten_read(const void *p, const ten *a, const nk_ref_chshape *tr, nk_dtype dt,
                     double *out) {
  for (size_t n = 0; n < a->t.n; n++)
    for (size_t c = 0; c < a->t.c; c++)
      for (size_t s = 0; s < a->t.s; s++)
        out[nk_ref_chidx(tr, n, c, s)] = fz_get(p, nk_ref_chidx(&a->t, n, c, s), dt);
}

#endif /* NK_FUZZ_CH_H */
