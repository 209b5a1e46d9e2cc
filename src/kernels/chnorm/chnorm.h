/*
 * chnorm.h — the micro-kernel contract of the channel-norm family (BatchNorm, GroupNorm,
 * InstanceNorm) and of the moments operators: statistics of contiguous runs and of columns,
 * the normalize pass, the gradient sums and the dx pass, f32/bf16/f16 data, f32 arithmetic.
 *
 * One portable source (chnorm-impl.h) is compiled once per ISA (scalar.c, avx2.c, avx512.c):
 * its arithmetic is written on 16-lane vectors (GCC/Clang vector extensions, element-wise
 * IEEE operations, no reassociation, -ffp-contract=off, fused multiply-adds only where written
 * as vfma), so every ISA computes the same bits by construction; only loads, stores (dtype
 * conversion, streaming stores) and the fused multiply-add are ISA-specific.
 *
 * The canonical arithmetic:
 *
 *   block moments of t_0..t_{L-1} (L <= 1024 consecutive elements of a run; or, for columns,
 *   up to NK_CH_BLOCK_ROWS consecutive rows of one column):
 *     run:    64 f32 lanes, lane l adds the t_i with i % 64 == l in increasing i, folded with
 *             the tree lane[k] += lane[k + s], s = 32, 16, 8, 4, 2, 1;
 *     column: one f32 accumulator per column adding the rows in order.
 *     s = sum t;  m = (float)((double)s / L);  d_i = t_i - m;  D = sum d;  Q = sum fmaf(d,d,.)
 *     mean = m + (double)D / L;  M2 = max(0, (double)Q - (double)D * D / L)
 *     If s, D or Q is not finite, or Q < 2^-90 unless Q == D == 0, the block is recomputed in
 *     double (nk__ch_block_moments_f64: sequential sum, mean, sum of squared deviations).
 *   Blocks merge into the running moments with Chan's formula (nk__ch_chan), in order.
 *
 *   normalize:  xhat = fmaf(x * s - mh, r, -mlr);  v = fmaf(xhat, g, b);  [v = v + z];  [relu]
 *     mh = (float)mean and mlr = (float)((mean - mh) * r) (double): the mean's low part enters
 *     already multiplied by r, so it is never rounded on the f32 subnormal grid (a set of
 *     subnormal data has a low part below 2^-149: as an f32 it was up to 2^-150 off, times r;
 *     found by the chnorm fuzz harness); x - mh is exact wherever it matters (near the mean).
 *     s is 1 (x as it is) or, for sets whose mean is at least 2^102 in magnitude, 1/2 (the
 *     caller then passes mh halved and r doubled, mlr unchanged: x - mean could overflow f32
 *     there, x/2 - mean/2 cannot, and the result is the same; nk__ch_half).
 *   gradient sums (per block of 1024 / NK_CH_BLOCK_ROWS, f32 lanes folded as above, added to
 *     double totals in block order):  g' = (MASK and y <= 0) ? 0 : dy;  e = x - mh;
 *     A = sum g';  B = sum fmaf(g', e, .);  C = sum e.   Blocks whose sums are not finite, or
 *     whose |B| < 2^-90 while B or C is nonzero (products that may have underflowed), are
 *     recomputed in double.
 *   dx:  xhat = fmaf(x * s - mh, r, -mcr);  dx = fmaf(-xhat, b, g' * u - a) * v;  [dz = g']
 *     (mcr = (float)(mc * r) in double, mc the mean of e: the centring correction, as mlr)
 *
 * Kernel rules: kernels never allocate, validate or log; pointers are not restrict (y may be
 * x or z, dx may be dy or x, dz may be dy: every element is read before it is written).
 */
#ifndef NK_KERNELS_CHNORM_H
#define NK_KERNELS_CHNORM_H

#include <stddef.h>
#include <stdint.h>

#include "normkit.h"

#define NK_CH_BLOCK 4096       /* elements per block of a contiguous run (== NK_MOMENTS_BLOCK) */
#define NK_CH_BLOCK_ROWS 32    /* rows per block of a column (== NK_MOMENTS_BLOCK_ROWS) */
#define NK_CH_TILE_COLS 512    /* most columns a column kernel call handles (caller tiles) */

/* Kernel flags. */
#define NK_CHK_ADD 0x1u  /* normalize: add z */
#define NK_CHK_RELU 0x2u /* normalize: relu */
#define NK_CHK_MASK 0x4u /* backward: g' = y <= 0 ? 0 : dy */
#define NK_CHK_DZ 0x8u   /* dx: also write dz = g' */
#define NK_CHK_NT 0x10u  /* outputs may use streaming stores */
#define NK_CHK_PF 0x20u  /* inputs are out of cache: prefetch NK_CH_PF_DIST bytes ahead */

/* Software prefetch distance of the out-of-cache passes. Measured here (2 cores, 1 GiB): a
 * read stream goes from 25 to 29.5 GB/s with prefetcht0 4 KiB ahead (bench/NOTES.md). */
#define NK_CH_PF_DIST 4096

/* Rows of a column kernel: the flattened row sequence of an NSC tensor. Row i (counted from
 * the tensor's row 0) of sample i / s lives at base + (i / s) * n_stride + (i % s) * row_stride. */
typedef struct nk_ch_rows {
  size_t s;            /* rows per sample */
  ptrdiff_t n_stride;  /* elements */
  ptrdiff_t row_stride;
} nk_ch_rows;

/* Normalize parameters of one run (scalars) or of a column tile (arrays of `cols`). */
typedef struct nk_ch_norm_scalars {
  float mh, mlr, r, g, b; /* mlr = (mean - mh) * r */
  int half;      /* s = 1/2 (0: s = 1) */
} nk_ch_norm_scalars;
typedef struct nk_ch_norm_vectors {
  const float *mh, *mlr, *r, *g, *b;
  const float *s; /* per column s (1 or 1/2); NULL: all 1 (the kernel skips the s loads) */
} nk_ch_norm_vectors;

/* dx parameters: xhat = fmaf(x * s - mh, r, -mcr);  dx = fmaf(-xhat, b, g' * u - a) * v. */
typedef struct nk_ch_dx_scalars {
  float mh, mcr, r, u, a, b, v;
  int half;
} nk_ch_dx_scalars;
typedef struct nk_ch_dx_vectors {
  const float *mh, *mcr, *r, *u, *a, *b, *v;
  const float *s;
} nk_ch_dx_vectors;

/* Half scale for sets with |mean| >= 2^102. With |x| <= FLT_MAX, x - mh rounds to inf only
 * when |mh| >= 2^103 (FLT_MAX + 2^103 is the first sum that rounds up to inf); there,
 * fmaf(x/2 - mh/2, 2r, -mlr) is the same value as fmaf(x - mh, r, -mlr) would be without the
 * overflow (halving is exact for every operand that can matter at that scale: mh is a
 * multiple of 2^78, subnormal x vanish against mh either way; mlr = (mean - mh) r does not
 * change). Returns 1 when it halved. */
#define NK_CH_HALF_MEAN 0x1p102f
static inline int nk__ch_half(float *mh, float *r) {
  if (!(*mh >= NK_CH_HALF_MEAN || *mh <= -NK_CH_HALF_MEAN)) return 0;
  *mh *= 0.5f, *r *= 2.0f;
  return 1;
}

typedef struct nk_chnorm_kernels {
  const char *name; /* "nk_chnorm__avx512", ... */
  /* Moments of the n elements at x (a contiguous run), merged block by block into acc. */
  void (*moments_run)(size_t n, const void *x, nk_dtype dt, uint32_t flags, double acc[3]);
  /* Column moments of rows [r0, r0 + nrows) (flattened; blocks of NK_CH_BLOCK_ROWS from r0),
   * columns [0, cols) (cols <= NK_CH_TILE_COLS) of the tensor at x: merged into
   * count (shared, one double), mean[cols], m2[cols]. */
  void (*moments_cols)(size_t r0, size_t nrows, size_t cols, const void *x, nk_ch_rows rows,
                       nk_dtype dt, uint32_t flags, double *count, double *mean, double *m2);
  void (*norm_run)(size_t n, const void *x, const void *z, void *y, nk_dtype dt,
                   const nk_ch_norm_scalars *p, uint32_t flags);
  void (*norm_cols)(size_t r0, size_t nrows, size_t cols, const void *x, nk_ch_rows xr,
                    const void *z, nk_ch_rows zr, void *y, nk_ch_rows yr, nk_dtype dt,
                    const nk_ch_norm_vectors *p, uint32_t flags);
  /* Adds A, B, C (see above) of the run to acc[0..2]. */
  void (*gradsum_run)(size_t n, const void *x, const void *y, const void *dy, nk_dtype dt,
                      float mh, uint32_t flags, double acc[3]);
  /* Adds per column A, B, C to acc[3*j + k] (the blocks' sums are totalled first, then added:
   * callers pass acc zeroed). */
  void (*gradsum_cols)(size_t r0, size_t nrows, size_t cols, const void *x, nk_ch_rows xr,
                       const void *y, nk_ch_rows yr, const void *dy, nk_ch_rows dyr,
                       nk_dtype dt, const float *mh, uint32_t flags, double *acc);
  void (*dx_run)(size_t n, const void *x, const void *y, const void *dy, void *dx, void *dz,
                 nk_dtype dt, const nk_ch_dx_scalars *p, uint32_t flags);
  void (*dx_cols)(size_t r0, size_t nrows, size_t cols, const void *x, nk_ch_rows xr,
                  const void *y, nk_ch_rows yr, const void *dy, nk_ch_rows dyr, void *dx,
                  nk_ch_rows dxr, void *dz, nk_ch_rows dzr, nk_dtype dt,
                  const nk_ch_dx_vectors *p, uint32_t flags);
} nk_chnorm_kernels;

extern const nk_chnorm_kernels nk_chnorm_kernels_scalar;
#if NK_ARCH_X86
extern const nk_chnorm_kernels nk_chnorm_kernels_avx2;
extern const nk_chnorm_kernels nk_chnorm_kernels_avx512;
#endif

/* Chan's merge of (nb, mb, m2b) into (*na, *ma, *m2a); the one formula every path uses
 * (nk_moments_merge included). */
static inline void nk__ch_chan(double *na, double *ma, double *m2a, double nb, double mb,
                               double m2b) {
  if (nb == 0.0) return;
  if (*na == 0.0) {
    *na = nb;
    *ma = mb;
    *m2a = m2b;
    return;
  }
  const double n = *na + nb;
  const double delta = mb - *ma;
  *ma = *ma + delta * (nb / n);
  *m2a = *m2a + m2b + delta * delta * (*na * nb / n);
  *na = n;
}

#endif /* NK_KERNELS_CHNORM_H */
