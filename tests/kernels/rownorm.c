/*
 * tests/kernels/rownorm.c — the generated kernel test of the row-norm family.
 *
 * rownorm.inc expands into one table of forward and one of backward kernels. Every kernel of a
 * SIMD path that this CPU runs (nk_isa_supported) is compared BIT FOR BIT with the scalar kernel
 * of the same op and dtype — the executable definition of the canonical arithmetic — on the
 * same inputs: every output buffer (y, h, mean, rstd; dx and the dgamma/dbeta double
 * accumulators) is compared with memcmp over its whole extent, row padding included, plus 256
 * canary bytes in front. Kernels of paths this CPU lacks are reported as skipped.
 *
 * Over-reads and over-writes: every buffer ends exactly at a PROT_NONE guard page, so a kernel
 * that touches one element past the end of any buffer (input or output) faults; padding
 * between rows (strided cases) holds signaling-NaN canaries that must stay untouched and that
 * would poison any sum that read them.
 *
 * Coverage, per kernel:
 *   - cols 1..300, every value, with random configurations (variant bits, residual with and
 *     without h, parameter dtype, strides, aliasing, streaming stores, eps, statistics outputs);
 *   - the full cross product of the configuration options at a few small cols;
 *   - cols 1000, 1023, 1024, 1025, 2047, 4096, 4097, 65539 with random configurations;
 *   - one row of 2^22 columns.
 * Each row of a case draws a kind: N(0,1); ill-conditioned (mean 1e4, std 1e-2); constant;
 * zeros; magnitudes 1e30, 1e19 (f32 squares overflow), 1e-30; subnormals; variance below 2^-90
 * (with eps 1e-30 these take the fallback); mean 1e10; one NaN (quiet or signaling); one inf.
 * The backward takes its mean/rstd (and y, from-y) from the scalar forward, and some cases
 * corrupt some rows' statistics (0, NaN, inf, subnormal rstd; NaN/inf mean).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kernels/rownorm/rownorm.h"
#include "test.h"
#include "util.h"

/* ---- the kernel tables (rownorm.inc) ------------------------------------------------------- */

typedef nk_rownorm_fwd_entry fwd_entry;
typedef nk_rownorm_bwd_entry bwd_entry;

static const fwd_entry fwd_kernels[] = {
#define NK_UKERNEL_FWD(isa, op, dtype, fn) {isa, op, dtype, fn, #fn},
#define NK_UKERNEL_BWD(isa, op, dtype, fn)
#include "kernels/rownorm/rownorm.inc"
#undef NK_UKERNEL_FWD
#undef NK_UKERNEL_BWD
};

static const bwd_entry bwd_kernels[] = {
#define NK_UKERNEL_FWD(isa, op, dtype, fn)
#define NK_UKERNEL_BWD(isa, op, dtype, fn) {isa, op, dtype, fn, #fn},
#include "kernels/rownorm/rownorm.inc"
#undef NK_UKERNEL_FWD
#undef NK_UKERNEL_BWD
};

#define NFWD (sizeof fwd_kernels / sizeof fwd_kernels[0])
#define NBWD (sizeof bwd_kernels / sizeof bwd_kernels[0])

static const fwd_entry *scalar_fwd(nk_op op, nk_dtype dt) {
  for (size_t i = 0; i < NFWD; i++)
    if (fwd_kernels[i].isa == NK_ISA_SCALAR && fwd_kernels[i].op == op &&
        fwd_kernels[i].dtype == dt)
      return &fwd_kernels[i];
  return NULL;
}

static const bwd_entry *scalar_bwd(nk_op op, nk_dtype dt) {
  for (size_t i = 0; i < NBWD; i++)
    if (bwd_kernels[i].isa == NK_ISA_SCALAR && bwd_kernels[i].op == op &&
        bwd_kernels[i].dtype == dt)
      return &bwd_kernels[i];
  return NULL;
}

/* ---- guarded buffers ------------------------------------------------------------------------ */
/* NSLOTS regions, each followed by a PROT_NONE page. A buffer of `bytes` is placed so that it
 * ends exactly at the guard page; the 256 bytes before it are canaries. Slots [0, NSLOTS/2)
 * serve the scalar run, [NSLOTS/2, NSLOTS) the kernel under test. */
#define NSLOTS 24
#define HALF_SLOTS (NSLOTS / 2)
#define SLOT_BYTES ((size_t)80 << 20)
#define PRE 256

static unsigned char *slot_base[NSLOTS];

static int slots_init(void) {
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  for (int s = 0; s < NSLOTS; s++) {
    void *p = mmap(NULL, SLOT_BYTES + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return 0;
    if (mprotect((unsigned char *)p + SLOT_BYTES, page, PROT_NONE) != 0) return 0;
    slot_base[s] = p;
  }
  return 1;
}

/* One tensor as both runs see it: a (scalar run) and b (kernel under test). */
typedef struct tbuf {
  const char *name;
  size_t bytes;
  unsigned char *a, *b;
} tbuf;

/* Places buffer `slot` (0 .. HALF_SLOTS-1) of `bytes`; the caller fills .a, then tbuf_sync. */
static void tbuf_place(tbuf *t, int slot, size_t bytes, const char *name) {
  t->name = name;
  t->bytes = bytes;
  t->a = slot_base[slot] + SLOT_BYTES - bytes;
  t->b = slot_base[slot + HALF_SLOTS] + SLOT_BYTES - bytes;
  memset(t->a - PRE, 0xA5, PRE);
}

static void tbuf_sync(tbuf *t) { memcpy(t->b - PRE, t->a - PRE, t->bytes + PRE); }

/* ---- random data ---------------------------------------------------------------------------- */

#define POOL ((size_t)1 << 20)
static float *normal_pool;

static int pool_init(void) {
  normal_pool = malloc(POOL * sizeof(float));
  if (!normal_pool) return 0;
  nk_rng r = {0x9E3779B97F4A7C15ULL};
  for (size_t i = 0; i < POOL; i++) normal_pool[i] = (float)nk_rng_normal(&r);
  return 1;
}

static size_t rnd(nk_rng *r, size_t n) { return (size_t)(nk_rng_u64(r) % n); }

enum {
  K_NORMAL,
  K_ILL,     /* mean 1e4, std 1e-2 */
  K_CONST,   /* one value */
  K_ZERO,
  K_HUGE,    /* 1e30 */
  K_BIG,     /* 1e19: squares overflow f32 */
  K_TINY,    /* 1e-30 */
  K_SUBN,    /* subnormal values of the dtype */
  K_SMALLV,  /* variance ~1e-30 (< 2^-90) around 1e-14 */
  K_MEAN10,  /* 1e10 + N(0,1) */
  K_NAN,     /* one NaN */
  K_INF,     /* one +-inf */
  NKINDS
};

static void set_bits(void *p, size_t i, uint32_t bits, nk_dtype dt) {
  if (dt == NK_DTYPE_F32) memcpy((float *)p + i, &bits, 4);
  else ((uint16_t *)p)[i] = (uint16_t)bits;
}

/* Fills cols elements of one row of kind `kind`. */
static void fill_row(void *p, size_t cols, nk_dtype dt, int kind, nk_rng *r) {
  const size_t o = rnd(r, POOL);
  const double cst = 0.5 + (double)rnd(r, 1000) / 100.0;
  for (size_t i = 0; i < cols; i++) {
    const double z = normal_pool[(o + i) & (POOL - 1)];
    double v;
    switch (kind) {
      case K_ILL: v = 1e4 + 1e-2 * z; break;
      case K_CONST: v = cst; break;
      case K_ZERO: v = 0.0; break;
      case K_HUGE: v = 1e30 * z; break;
      case K_BIG: v = 1e19 * z; break;
      case K_TINY: v = 1e-30 * z; break;
      case K_SUBN: v = (dt == NK_DTYPE_F16 ? 1e-6 : 1e-39) * z; break;
      case K_SMALLV: v = 1e-14 + 1e-15 * z; break;
      case K_MEAN10: v = 1e10 + z; break;
      default: v = z; break;
    }
    nk_t_set(p, i, v, dt);
  }
  if (kind == K_NAN || kind == K_INF) {
    const size_t i = rnd(r, cols);
    const uint32_t sign = (nk_rng_u64(r) & 1) ? 0x80000000u : 0u;
    uint32_t bits;
    if (kind == K_INF) bits = sign | 0x7F800000u;
    else if (nk_rng_u64(r) & 1) bits = sign | 0x7FC00000u | (uint32_t)(nk_rng_u64(r) & 0x3FFFFF);
    else bits = sign | 0x7F800000u | 0x00200000u | (uint32_t)(nk_rng_u64(r) & 0x1FFFFF); /* sNaN */
    if (dt == NK_DTYPE_BF16) bits >>= 16;
    else if (dt == NK_DTYPE_F16) {
      const uint32_t s16 = sign >> 16;
      if (kind == K_INF) bits = s16 | 0x7C00u;
      else bits = s16 | 0x7C00u | 0x100u | (uint32_t)(nk_rng_u64(r) & 0x2FF); /* q or s NaN */
    }
    set_bits(p, i, bits, dt);
  }
}

/* A rows x cols tensor with row stride `stride`: rows by kind, padding = sNaN canaries. */
static void fill_tensor(void *p, size_t rows, size_t cols, ptrdiff_t stride, nk_dtype dt,
                        const int *kinds, int fixed_kind, nk_rng *r) {
  const size_t es = nk_dtype_size(dt);
  for (size_t row = 0; row < rows; row++) {
    unsigned char *rp = (unsigned char *)p + row * (size_t)stride * es;
    fill_row(rp, cols, dt, kinds ? kinds[row] : fixed_kind, r);
    if (row + 1 < rows)
      for (size_t i = cols; i < (size_t)stride; i++)
        set_bits(rp, i, dt == NK_DTYPE_F32 ? 0x7FA5A5A5u : dt == NK_DTYPE_BF16 ? 0x7FA5u : 0x7D5Au,
                 dt);
  }
}

static void fill_random_bits(void *p, size_t bytes, nk_rng *r) {
  unsigned char *q = p;
  for (size_t i = 0; i < bytes; i += 8) {
    const uint64_t u = nk_rng_u64(r);
    memcpy(q + i, &u, bytes - i < 8 ? bytes - i : 8);
  }
}

static void fill_doubles(double *p, size_t n, nk_rng *r) {
  const size_t o = rnd(r, POOL);
  for (size_t i = 0; i < n; i++) p[i] = normal_pool[(o + i) & (POOL - 1)];
}

static size_t tensor_bytes(size_t rows, size_t cols, ptrdiff_t stride, nk_dtype dt) {
  return ((rows - 1) * (size_t)stride + cols) * nk_dtype_size(dt);
}

/* The copy of t that run `run` uses (0 scalar, 1 kernel); NULL for no buffer. */
static void *use(int run, const tbuf *t) { return t ? (run ? (void *)t->b : (void *)t->a) : NULL; }

/* ---- comparison ----------------------------------------------------------------------------- */

static char case_desc[512];
static const char *cur_kernel;
static long cases_run;

/* 1 if both runs left the same bytes in t (and its canaries); reports the first difference. */
static int same(const tbuf *t) {
  if (memcmp(t->a - PRE, t->b - PRE, t->bytes + PRE) == 0) return 1;
  size_t off = 0;
  const unsigned char *a = t->a - PRE, *b = t->b - PRE;
  while (a[off] == b[off]) off++;
  const long pos = (long)off - PRE;
  NK_CHECK(0, "%s: %s differs at byte %ld of %zu (scalar %02x, kernel %02x); case %s", cur_kernel,
           t->name, pos, t->bytes, a[off], b[off], case_desc);
  return 0;
}

/* ---- forward cases -------------------------------------------------------------------------- */

typedef struct fwd_cfg {
  size_t rows, cols;
  int affine;   /* 0 none, 1 g, 2 g+offset, 3 b, 4 g+b, 5 g+offset+b */
  int res;      /* 0 none, 1 r, 2 r and h */
  int phalf;    /* params in the activation dtype */
  int nt;       /* NK_ROWNORM_NONTEMPORAL */
  int strided;
  int alias;    /* 0 none, 1 y=x, 2 y=r, 3 y=h, 4 h=x, 5 h=r */
  int stats;    /* mean/rstd wanted */
  int tiny_eps; /* eps 1e-30 */
  int kind;     /* -1: a random kind per row */
  uint64_t seed;
} fwd_cfg;

static int fwd_cfg_valid(const fwd_cfg *c, nk_dtype dt) {
  if (c->phalf && dt == NK_DTYPE_F32) return 0;
  if (c->alias == 2 && c->res == 0) return 0;
  if (c->alias >= 3 && c->res != 2) return 0;
  return 1;
}

static const int affine_bits[6] = {
    0,
    NK_ROWNORM_HAS_GAMMA,
    NK_ROWNORM_HAS_GAMMA | NK_ROWNORM_OFFSET,
    NK_ROWNORM_HAS_BETA,
    NK_ROWNORM_HAS_GAMMA | NK_ROWNORM_HAS_BETA,
    NK_ROWNORM_HAS_GAMMA | NK_ROWNORM_HAS_BETA | NK_ROWNORM_OFFSET,
};

static void pick_kinds(int *kinds, size_t rows, int fixed, nk_rng *r) {
  for (size_t i = 0; i < rows; i++)
    kinds[i] = fixed >= 0 ? fixed : (i == 0 || rnd(r, 3) == 0) ? K_NORMAL : (int)rnd(r, NKINDS);
}

static ptrdiff_t pick_stride(const fwd_cfg *c, size_t cols, nk_rng *r) {
  return c->strided ? (ptrdiff_t)(cols + 1 + rnd(r, 17)) : (ptrdiff_t)cols;
}

/* Gamma/beta-like vector: N(0,1), with a few exact +-0 and values near -1 (offset). */
static void fill_param(void *p, size_t cols, nk_dtype pdt, nk_rng *r) {
  fill_row(p, cols, pdt, K_NORMAL, r);
  if (cols > 3) {
    nk_t_set(p, rnd(r, cols), 0.0, pdt);
    nk_t_set(p, rnd(r, cols), -0.0, pdt);
    nk_t_set(p, rnd(r, cols), -1.0, pdt);
  }
}

/* LayerNorm Scaling in one case of three (by seed): s = 1/sqrt(2) or 1/sqrt(7). */
static void lns_variant(nk_rownorm_params *p, uint64_t seed) {
  if (seed % 3 != 1) return;
  p->variant |= NK_ROWNORM_SCALE;
  p->scale = (seed & 8) ? 0.70710678f : 0.37796447f;
  p->scale_inv = 1.0f / p->scale;
}

static void run_fwd_case(const fwd_entry *k, const fwd_entry *ref, const fwd_cfg *c) {
  const nk_dtype dt = k->dtype, pdt = c->phalf ? dt : NK_DTYPE_F32;
  const int is_rms = k->op == NK_OP_RMSNORM_FWD;
  const size_t rows = c->rows, cols = c->cols;
  nk_rng rng = {c->seed * 0x2545F4914F6CDD1DULL + 1};
  int kinds[16], rkinds[16];
  NK_REQUIRE(rows <= 16, "run_fwd_case holds at most 16 rows (%zu)", rows);
  pick_kinds(kinds, rows, c->kind, &rng);
  pick_kinds(rkinds, rows, c->kind >= 0 && rnd(&rng, 2) ? c->kind : -1, &rng);
  /* Never a NaN in x and in r at the same index: the payload scalar.c gives h = x + r then
   * depends on the compiler's operand order (gcc: r's NaN, clang: x's), see the report. */
  for (size_t i = 0; i < rows; i++)
    if (kinds[i] == K_NAN && rkinds[i] == K_NAN) rkinds[i] = K_INF;
  snprintf(case_desc, sizeof case_desc,
           "rows %zu cols %zu affine %d res %d phalf %d nt %d strided %d alias %d stats %d "
           "tiny_eps %d kind %d seed %llu",
           rows, cols, c->affine, c->res, c->phalf, c->nt, c->strided, c->alias, c->stats,
           c->tiny_eps, c->kind, (unsigned long long)c->seed);
  cases_run++;

  tbuf bx, br, by, bh, bg, bb, bm, bs;
  tbuf *tx = &bx, *tr = c->res ? &br : NULL, *ty = &by, *th = c->res == 2 ? &bh : NULL;
  ptrdiff_t xs = pick_stride(c, cols, &rng), rs = pick_stride(c, cols, &rng),
            ys = pick_stride(c, cols, &rng), hs = pick_stride(c, cols, &rng);
  tbuf_place(&bx, 0, tensor_bytes(rows, cols, xs, dt), "x");
  fill_tensor(bx.a, rows, cols, xs, dt, kinds, 0, &rng);
  if (tr) {
    tbuf_place(&br, 1, tensor_bytes(rows, cols, rs, dt), "r");
    fill_tensor(br.a, rows, cols, rs, dt, rkinds, 0, &rng);
  }
  if (th) {
    if (c->alias == 4) th = tx, hs = xs;
    else if (c->alias == 5) th = tr, hs = rs;
    else {
      tbuf_place(&bh, 3, tensor_bytes(rows, cols, hs, dt), "h");
      fill_random_bits(bh.a, bh.bytes, &rng);
    }
  }
  if (c->alias == 1) ty = tx, ys = xs;
  else if (c->alias == 2) ty = tr, ys = rs;
  else if (c->alias == 3) ty = th, ys = hs;
  else {
    tbuf_place(&by, 2, tensor_bytes(rows, cols, ys, dt), "y");
    fill_random_bits(by.a, by.bytes, &rng);
  }
  const uint32_t var = (uint32_t)affine_bits[c->affine] | (c->nt ? NK_ROWNORM_NONTEMPORAL : 0u);
  tbuf_place(&bg, 4, cols * nk_dtype_size(pdt), "gamma");
  fill_param(bg.a, cols, pdt, &rng);
  tbuf_place(&bb, 5, cols * nk_dtype_size(pdt), "beta");
  fill_param(bb.a, cols, pdt, &rng);
  tbuf_place(&bm, 6, rows * sizeof(float), "mean");
  fill_random_bits(bm.a, bm.bytes, &rng);
  tbuf_place(&bs, 7, rows * sizeof(float), "rstd");
  fill_random_bits(bs.a, bs.bytes, &rng);
  tbuf *all[8] = {&bx, tr, (ty == &by) ? &by : NULL, (th == &bh) ? &bh : NULL, &bg, &bb, &bm, &bs};
  for (int i = 0; i < 8; i++)
    if (all[i]) tbuf_sync(all[i]);

  const int want_mean = c->stats && !is_rms, want_rstd = c->stats;
  for (int run = 0; run < 2; run++) {
    nk_rownorm_params p = {(var & NK_ROWNORM_HAS_GAMMA) ? use(run, &bg) : NULL,
                           (var & NK_ROWNORM_HAS_BETA) ? use(run, &bb) : NULL,
                           NULL,
                           c->tiny_eps ? 1e-30f : 1e-5f,
                           pdt,
                           var, 0.0f, 0.0f, 0.0f};
    lns_variant(&p, c->seed);
    const nk_rownorm_fwd_ukernel_fn fn = run ? k->fn : ref->fn;
    fn(rows, cols, use(run, tx), xs, use(run, tr), rs, use(run, ty), ys, use(run, th), hs, want_mean ? use(run, &bm) : NULL,
       want_rstd ? use(run, &bs) : NULL, &p);
  }
  for (int i = 0; i < 8; i++)
    if (all[i] && !same(all[i])) return;
}

/* ---- backward cases ------------------------------------------------------------------------- */

typedef struct bwd_cfg {
  size_t rows, cols;
  int gamma;    /* 0 none, 1 g, 2 g+offset */
  int from_y;
  int beta;     /* HAS_BETA (used by from-y) */
  int ginv;     /* from y: ginv given */
  int dh, dg, db;
  int phalf, nt, strided;
  int alias;    /* 0 none, 1 dx=dy, 2 dx=x, 3 dx=dh */
  int stat_mode; /* 0 eps 1e-5, 1 eps 1e-30, 2 corrupted statistics in some rows */
  int fixed;     /* LayerNorm only: NK_ROWNORM_FIXED_RSTD (FakeLN) with row 0's rstd (stat_mode
                    2: a corrupted one) for every row; the rstd array is not passed */
  int kind;
  uint64_t seed;
} bwd_cfg;

static int bwd_cfg_valid(const bwd_cfg *c, nk_dtype dt) {
  if (c->phalf && dt == NK_DTYPE_F32) return 0;
  if (c->alias == 3 && !c->dh) return 0;
  if (c->ginv && !c->from_y) return 0;
  return 1; /* `fixed` on an RMSNorm kernel is ignored (run_bwd_case) */
}

static void run_bwd_case(const bwd_entry *k, const bwd_entry *ref, const bwd_cfg *c) {
  const nk_dtype dt = k->dtype, pdt = c->phalf ? dt : NK_DTYPE_F32;
  const int is_rms = k->op == NK_OP_RMSNORM_BWD;
  const fwd_entry *fwd = scalar_fwd(is_rms ? NK_OP_RMSNORM_FWD : NK_OP_LAYERNORM_FWD, dt);
  const size_t rows = c->rows, cols = c->cols;
  nk_rng rng = {c->seed * 0x2545F4914F6CDD1DULL + 7};
  int kinds[16], gkinds[16];
  NK_REQUIRE(rows <= 16, "run_bwd_case holds at most 16 rows (%zu)", rows);
  pick_kinds(kinds, rows, c->kind, &rng);
  pick_kinds(gkinds, rows, rnd(&rng, 4) ? K_NORMAL : -1, &rng);
  snprintf(case_desc, sizeof case_desc,
           "rows %zu cols %zu gamma %d from_y %d beta %d ginv %d dh %d dg %d db %d phalf %d nt %d "
           "strided %d alias %d stat_mode %d fixed %d kind %d seed %llu",
           rows, cols, c->gamma, c->from_y, c->beta, c->ginv, c->dh, c->dg, c->db, c->phalf,
           c->nt, c->strided, c->alias, c->stat_mode, c->fixed && !is_rms, c->kind,
           (unsigned long long)c->seed);
  cases_run++;

  uint32_t var = 0;
  if (c->gamma) var |= NK_ROWNORM_HAS_GAMMA | (c->gamma == 2 ? NK_ROWNORM_OFFSET : 0u);
  if (c->beta) var |= NK_ROWNORM_HAS_BETA;
  const float eps = c->stat_mode == 1 ? 1e-30f : 1e-5f;
  tbuf bx, bdy, bdh, bdx, bg, bb, bgi, bm, bs, bdg, bdb;
  const fwd_cfg strider = {.strided = c->strided};
  ptrdiff_t xs = pick_stride(&strider, cols, &rng), dys = pick_stride(&strider, cols, &rng),
            dhs = pick_stride(&strider, cols, &rng), dxs = pick_stride(&strider, cols, &rng);
  /* parameters */
  tbuf_place(&bg, 4, cols * nk_dtype_size(pdt), "gamma");
  fill_param(bg.a, cols, pdt, &rng);
  tbuf_place(&bb, 5, cols * nk_dtype_size(pdt), "beta");
  fill_param(bb.a, cols, pdt, &rng);
  tbuf_place(&bgi, 6, cols * sizeof(float), "ginv");
  for (size_t i = 0; i < cols; i++) {
    float g = (float)nk_t_get(bg.a, i, pdt);
    if (c->gamma == 2) g = 1.0f + g;
    if (g == 0.0f) g = 0.5f; /* the operator rejects g == 0 */
    ((float *)bgi.a)[i] = 1.0f / g;
  }
  /* x (h, or y from the scalar forward), mean and rstd from the scalar forward */
  tbuf_place(&bx, 0, tensor_bytes(rows, cols, xs, dt), "x");
  fill_tensor(bx.a, rows, cols, xs, dt, kinds, 0, &rng);
  tbuf_place(&bm, 7, rows * sizeof(float), "mean");
  tbuf_place(&bs, 8, rows * sizeof(float), "rstd");
  {
    /* the scalar forward on a copy of x gives mean, rstd and y; from y: x := y */
    nk_rownorm_params fp = {c->gamma ? bg.a : NULL, c->beta ? bb.a : NULL, NULL, eps, pdt,
                            var, 0.0f, 0.0f, 0.0f};
    lns_variant(&fp, c->seed);
    unsigned char *yt = malloc(bx.bytes);
    NK_REQUIRE(yt != NULL, "out of memory");
    memcpy(yt, bx.a, bx.bytes);
    fwd->fn(rows, cols, bx.a, xs, NULL, 0, yt, xs, NULL, 0, is_rms ? NULL : (float *)bm.a,
            (float *)bs.a, &fp);
    if (c->from_y) memcpy(bx.a, yt, bx.bytes);
    free(yt);
    if (is_rms) fill_random_bits(bm.a, bm.bytes, &rng);
  }
  if (c->stat_mode == 2) {
    static const uint32_t bad_rstd[] = {0x00000000u, 0x7FC00000u, 0x7F800000u, 0x00000123u,
                                        0xBF800000u};
    static const uint32_t bad_mean[] = {0x7FC00000u, 0xFF800000u};
    for (size_t row = 0; row < rows; row++) {
      const size_t w = rnd(&rng, 8);
      if (w < 5) memcpy((float *)bs.a + row, &bad_rstd[w], 4);
      else if (w == 5) memcpy((float *)bm.a + row, &bad_mean[rnd(&rng, 2)], 4);
    }
  }
  tbuf_place(&bdy, 1, tensor_bytes(rows, cols, dys, dt), "dy");
  fill_tensor(bdy.a, rows, cols, dys, dt, gkinds, 0, &rng);
  tbuf *tdh = NULL, *tdx = &bdx;
  if (c->dh) {
    tbuf_place(&bdh, 2, tensor_bytes(rows, cols, dhs, dt), "dh");
    fill_tensor(bdh.a, rows, cols, dhs, dt, NULL, K_NORMAL, &rng);
    tdh = &bdh;
  }
  if (c->alias == 1) tdx = &bdy, dxs = dys;
  else if (c->alias == 2) tdx = &bx, dxs = xs;
  else if (c->alias == 3) tdx = tdh, dxs = dhs;
  else {
    tbuf_place(&bdx, 3, tensor_bytes(rows, cols, dxs, dt), "dx");
    fill_random_bits(bdx.a, bdx.bytes, &rng);
  }
  tbuf_place(&bdg, 9, cols * sizeof(double), "dgamma_acc");
  fill_doubles((double *)bdg.a, cols, &rng);
  tbuf_place(&bdb, 10, cols * sizeof(double), "dbeta_acc");
  fill_doubles((double *)bdb.a, cols, &rng);
  tbuf *all[11] = {&bx, &bdy, tdh, tdx == &bdx ? &bdx : NULL, &bg, &bb, &bgi, &bm, &bs, &bdg, &bdb};
  for (int i = 0; i < 11; i++)
    if (all[i]) tbuf_sync(all[i]);

  if (c->from_y) var |= NK_ROWNORM_FROM_Y;
  if (c->nt) var |= NK_ROWNORM_NONTEMPORAL;
  const int fixed = c->fixed && !is_rms;
  if (fixed) var |= NK_ROWNORM_FIXED_RSTD;
  for (int run = 0; run < 2; run++) {
    nk_rownorm_params p = {c->gamma ? use(run, &bg) : NULL, c->beta ? use(run, &bb) : NULL,
                           c->ginv ? (const float *)use(run, &bgi) : NULL, eps, pdt, var,
                           0.0f, 0.0f, fixed ? ((const float *)bs.a)[0] : 0.0f};
    lns_variant(&p, c->seed);
    const nk_rownorm_bwd_ukernel_fn fn = run ? k->fn : ref->fn;
    fn(rows, cols, use(run, &bx), xs, use(run, &bdy), dys, use(run, tdh), dhs,
       (is_rms || c->from_y) ? NULL : (const float *)use(run, &bm),
       fixed ? NULL : (const float *)use(run, &bs), use(run, tdx), dxs,
       c->dg ? (double *)use(run, &bdg) : NULL, c->db ? (double *)use(run, &bdb) : NULL, &p);
  }
  for (int i = 0; i < 11; i++)
    if (all[i] && !same(all[i])) return;
}

/* ---- case generation ------------------------------------------------------------------------ */

static fwd_cfg random_fwd_cfg(nk_rng *r, size_t rows, size_t cols, nk_dtype dt) {
  fwd_cfg c;
  do {
    c.rows = rows;
    c.cols = cols;
    c.affine = (int)rnd(r, 6);
    c.res = (int)rnd(r, 3);
    c.phalf = (int)rnd(r, 2);
    c.nt = (int)rnd(r, 2);
    c.strided = (int)rnd(r, 2);
    c.alias = rnd(r, 2) ? 0 : (int)rnd(r, 6);
    c.stats = rnd(r, 4) != 0;
    c.tiny_eps = rnd(r, 4) == 0;
    c.kind = rnd(r, 3) ? -1 : (int)rnd(r, NKINDS);
    c.seed = nk_rng_u64(r);
  } while (!fwd_cfg_valid(&c, dt));
  return c;
}

static bwd_cfg random_bwd_cfg(nk_rng *r, size_t rows, size_t cols, nk_dtype dt) {
  bwd_cfg c;
  do {
    c.rows = rows;
    c.cols = cols;
    c.gamma = (int)rnd(r, 3);
    c.from_y = (int)rnd(r, 2);
    c.beta = (int)rnd(r, 2);
    c.ginv = c.from_y && (c.gamma ? rnd(r, 8) != 0 : rnd(r, 4) == 0);
    c.dh = (int)rnd(r, 2);
    c.dg = rnd(r, 4) != 0;
    c.db = rnd(r, 4) != 0;
    c.phalf = (int)rnd(r, 2);
    c.nt = (int)rnd(r, 2);
    c.strided = (int)rnd(r, 2);
    c.alias = rnd(r, 2) ? 0 : (int)rnd(r, 4);
    c.stat_mode = (int)rnd(r, 3);
    c.fixed = rnd(r, 4) == 0;
    c.kind = rnd(r, 3) ? -1 : (int)rnd(r, NKINDS);
    c.seed = nk_rng_u64(r);
  } while (!bwd_cfg_valid(&c, dt));
  return c;
}

/* Every combination of the forward options at one cols. */
static void fwd_cross(const fwd_entry *k, const fwd_entry *ref, size_t cols, nk_rng *r) {
  fwd_cfg c = {0};
  c.rows = 3;
  c.cols = cols;
  for (c.affine = 0; c.affine < 6; c.affine++)
    for (c.res = 0; c.res < 3; c.res++)
      for (c.phalf = 0; c.phalf < 2; c.phalf++)
        for (c.nt = 0; c.nt < 2; c.nt++)
          for (c.strided = 0; c.strided < 2; c.strided++)
            for (c.alias = 0; c.alias < 6; c.alias++)
              for (c.stats = 0; c.stats < 2; c.stats++)
                for (c.tiny_eps = 0; c.tiny_eps < 2; c.tiny_eps++) {
                  if (!fwd_cfg_valid(&c, k->dtype)) continue;
                  c.kind = -1;
                  c.seed = nk_rng_u64(r);
                  run_fwd_case(k, ref, &c);
                  if (nk_t_cur_failed) return;
                }
}

static void bwd_cross(const bwd_entry *k, const bwd_entry *ref, size_t cols, nk_rng *r) {
  bwd_cfg c = {0};
  c.rows = 3;
  c.cols = cols;
  for (c.gamma = 0; c.gamma < 3; c.gamma++)
    for (c.from_y = 0; c.from_y < 2; c.from_y++)
      for (c.beta = 0; c.beta < 2; c.beta++)
        for (c.ginv = 0; c.ginv < 2; c.ginv++)
          for (c.dh = 0; c.dh < 2; c.dh++)
            for (int dgb = 0; dgb < 4; dgb++)
              for (c.phalf = 0; c.phalf < 2; c.phalf++)
                for (c.nt = 0; c.nt < 2; c.nt++)
                  for (c.strided = 0; c.strided < 2; c.strided++)
                    for (c.alias = 0; c.alias < 4; c.alias++)
                      for (c.stat_mode = 0; c.stat_mode < 3; c.stat_mode++) {
                        c.fixed = (int)rnd(r, 2);
                        c.dg = dgb & 1;
                        c.db = dgb >> 1;
                        if (!bwd_cfg_valid(&c, k->dtype)) continue;
                        c.kind = -1;
                        c.seed = nk_rng_u64(r);
                        run_bwd_case(k, ref, &c);
                        if (nk_t_cur_failed) return;
                      }
}

static const size_t large_cols[] = {1000, 1023, 1024, 1025, 2047, 4096, 4097, 65536 + 3};
#define FWD_PER_SMALL_COLS 24
#define BWD_PER_SMALL_COLS 24
#define PER_LARGE_COLS 12

static void test_fwd_kernel(const fwd_entry *k) {
  const fwd_entry *ref = scalar_fwd(k->op, k->dtype);
  NK_REQUIRE(ref != NULL, "no scalar kernel for %s", k->name);
  cur_kernel = k->name;
  nk_rng r = {0x5EED0000ULL + (uint64_t)k->op * 131 + (uint64_t)k->dtype * 7 + (uint64_t)k->isa};
  for (size_t cols = 1; cols <= 300; cols++)
    for (int i = 0; i < FWD_PER_SMALL_COLS; i++) {
      fwd_cfg c = random_fwd_cfg(&r, 1 + rnd(&r, 4), cols, k->dtype);
      run_fwd_case(k, ref, &c);
      if (nk_t_cur_failed) return;
    }
  static const size_t cross_cols[] = {1, 17, 64, 100};
  for (size_t i = 0; i < sizeof cross_cols / sizeof cross_cols[0]; i++) {
    fwd_cross(k, ref, cross_cols[i], &r);
    if (nk_t_cur_failed) return;
  }
  for (size_t j = 0; j < sizeof large_cols / sizeof large_cols[0]; j++)
    for (int i = 0; i < PER_LARGE_COLS; i++) {
      fwd_cfg c = random_fwd_cfg(&r, large_cols[j] > 10000 ? 2 : 3, large_cols[j], k->dtype);
      run_fwd_case(k, ref, &c);
      if (nk_t_cur_failed) return;
    }
  /* one row of 2^22 columns: dense, gamma and beta, N(0,1), then with streaming stores */
  for (int nt = 0; nt < 2; nt++) {
    fwd_cfg c = {1, (size_t)1 << 22, 4, 0, 0, nt, 0, 0, 1, 0, K_NORMAL, nk_rng_u64(&r)};
    run_fwd_case(k, ref, &c);
  }
}

static void test_bwd_kernel(const bwd_entry *k) {
  const bwd_entry *ref = scalar_bwd(k->op, k->dtype);
  NK_REQUIRE(ref != NULL, "no scalar kernel for %s", k->name);
  cur_kernel = k->name;
  nk_rng r = {0xB5EED000ULL + (uint64_t)k->op * 131 + (uint64_t)k->dtype * 7 + (uint64_t)k->isa};
  for (size_t cols = 1; cols <= 300; cols++)
    for (int i = 0; i < BWD_PER_SMALL_COLS; i++) {
      bwd_cfg c = random_bwd_cfg(&r, 1 + rnd(&r, 4), cols, k->dtype);
      run_bwd_case(k, ref, &c);
      if (nk_t_cur_failed) return;
    }
  static const size_t cross_cols[] = {37, 100};
  for (size_t i = 0; i < sizeof cross_cols / sizeof cross_cols[0]; i++) {
    bwd_cross(k, ref, cross_cols[i], &r);
    if (nk_t_cur_failed) return;
  }
  for (size_t j = 0; j < sizeof large_cols / sizeof large_cols[0]; j++)
    for (int i = 0; i < PER_LARGE_COLS; i++) {
      bwd_cfg c = random_bwd_cfg(&r, large_cols[j] > 10000 ? 2 : 3, large_cols[j], k->dtype);
      run_bwd_case(k, ref, &c);
      if (nk_t_cur_failed) return;
    }
  /* more rows (9-16, the most run_bwd_case holds): dgamma/dbeta accumulated over many rows
   * with fallback rows between them (stat_mode 2 and the NaN/inf kinds) */
  for (int i = 0; i < 16; i++) {
    bwd_cfg c = random_bwd_cfg(&r, 9 + (size_t)(i % 8), i % 2 ? 37 : 1025, k->dtype);
    run_bwd_case(k, ref, &c);
    if (nk_t_cur_failed) return;
  }
  for (int nt = 0; nt < 2; nt++) {
    bwd_cfg c = {1, (size_t)1 << 22, 1, 0, 1, 0, 1, 1, 1, 0, nt, 0, 0, 0, nt, K_NORMAL,
                 nk_rng_u64(&r)};
    run_bwd_case(k, ref, &c);
  }
}

/* ---- runner --------------------------------------------------------------------------------- */

static const fwd_entry *cur_fwd;
static const bwd_entry *cur_bwd;

NK_TEST(fwd_kernel_matches_scalar) {
  if (!nk_isa_supported(cur_fwd->isa))
    NK_SKIP("%s: this CPU has no %s", cur_fwd->name, nk_isa_name(cur_fwd->isa));
  test_fwd_kernel(cur_fwd);
}

NK_TEST(bwd_kernel_matches_scalar) {
  if (!nk_isa_supported(cur_bwd->isa))
    NK_SKIP("%s: this CPU has no %s", cur_bwd->name, nk_isa_name(cur_bwd->isa));
  test_bwd_kernel(cur_bwd);
}

int main(void) {
  if (!slots_init() || !pool_init()) {
    fprintf(stderr, "test_kernels_rownorm: cannot allocate the test buffers\n");
    return 1;
  }
  for (size_t i = 0; i < NFWD; i++) {
    if (fwd_kernels[i].isa == NK_ISA_SCALAR) continue;
    cur_fwd = &fwd_kernels[i];
    const clock_t t0 = clock();
    const long n0 = cases_run;
    printf("%s\n", cur_fwd->name);
    NK_RUN(fwd_kernel_matches_scalar);
    printf("        %ld cases, %.1f s\n", cases_run - n0, (double)(clock() - t0) / CLOCKS_PER_SEC);
  }
  for (size_t i = 0; i < NBWD; i++) {
    if (bwd_kernels[i].isa == NK_ISA_SCALAR) continue;
    cur_bwd = &bwd_kernels[i];
    const clock_t t0 = clock();
    const long n0 = cases_run;
    printf("%s\n", cur_bwd->name);
    NK_RUN(bwd_kernel_matches_scalar);
    printf("        %ld cases, %.1f s\n", cases_run - n0, (double)(clock() - t0) / CLOCKS_PER_SEC);
  }
  return nk_test_summary();
}
