/*
 * tests/kernels/softmax.c — the generated kernel test of the softmax family.
 *
 * softmax.inc expands into one table. Every kernel of a SIMD path that this CPU runs is compared
 * BIT FOR BIT with the scalar kernel of the same kind, algorithm and dtype (scalar.c is the
 * definition of the canonical arithmetic, softmax.h): every output (y, lse; dx, dot; loss, lse;
 * the exp values) and every input buffer (which must stay untouched) is compared with memcmp.
 * Kernels of paths this CPU lacks are reported as skipped.
 *
 * Over-reads and over-writes: each buffer lies in its own mapping between two PROT_NONE pages,
 * placed either so that it ends exactly at the back guard page or starts exactly after the
 * front one, so one element touched outside [0, n) faults.
 *
 * Coverage per kernel: cols 1..300 (every value), 1000, 1023, 1024, 1025, 4096, 70000 and one
 * row of 2^20, each with random configurations: logit kinds (N(0,1), x10, x100, +-1e30, values
 * at exp's edges, -inf mixed in, all -inf, all -inf plus one NaN, one NaN, one +inf, |z| near
 * 2^22 where the two-pass range test switches), mask (none, f32, bf16, f16; -inf entries),
 * ALiBi, sink (also larger than every logit, -inf, NaN), n_valid < n, scale, log, masked_nan,
 * nontemporal, in place (y == x; dx == dy, dx == y; cross-entropy dx == x), placement.
 * exp: a strided sweep of the 2^32 bit patterns (every 1021st) plus the edges.
 * Scalar semantics (checked whatever the CPU): rows sum to 1 within 1e-6, reload == recompute
 * bits, fully masked and NaN rows, sigmoid(0) = 0.5, exp(0) = 1, exp(-inf) = 0, exp(inf) = inf.
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

#include "kernels/softmax/softmax.h"
#include "test.h"
#include "util.h"

/* ---- the kernel table (softmax.inc) -------------------------------------------------------- */

typedef void (*anyfn)(void);

static const nk_softmax_entry kernels[] = {
#define NK_SOFTMAX_FWD(isa, algo, dtype, fn) {isa, NK_SMK_FWD, algo, dtype, (anyfn)fn, #fn},
#define NK_SOFTMAX_BWD(isa, dtype, fn) {isa, NK_SMK_BWD, NK_SOFTMAX_AUTO, dtype, (anyfn)fn, #fn},
#define NK_XENT(isa, dtype, fn) {isa, NK_SMK_XENT, NK_SOFTMAX_AUTO, dtype, (anyfn)fn, #fn},
#define NK_SIGMOID_FWD(isa, dtype, fn) {isa, NK_SMK_SIGMOID_FWD, NK_SOFTMAX_AUTO, dtype, (anyfn)fn, #fn},
#define NK_SIGMOID_BWD(isa, dtype, fn) {isa, NK_SMK_SIGMOID_BWD, NK_SOFTMAX_AUTO, dtype, (anyfn)fn, #fn},
#define NK_EXP(isa, fn) {isa, NK_SMK_EXP, NK_SOFTMAX_AUTO, NK_DTYPE_F32, (anyfn)fn, #fn},
#include "kernels/softmax/softmax.inc"
#undef NK_SOFTMAX_FWD
#undef NK_SOFTMAX_BWD
#undef NK_XENT
#undef NK_SIGMOID_FWD
#undef NK_SIGMOID_BWD
#undef NK_EXP
};
#define NKERNELS (sizeof kernels / sizeof kernels[0])

static const nk_softmax_entry *find_scalar(nk_softmax_kind kind, nk_softmax_algo algo, nk_dtype dt) {
  for (size_t i = 0; i < NKERNELS; i++)
    if (kernels[i].isa == NK_ISA_SCALAR && kernels[i].kind == kind && kernels[i].algo == algo &&
        kernels[i].dtype == dt)
      return &kernels[i];
  return NULL;
}

/* ---- guarded buffers ----------------------------------------------------------------------- */
/* 6 slots (3 per run: scalar run 0, kernel run 1), each a mapping between two PROT_NONE pages. */
#define NSLOT 6
#define SLOT_BYTES ((size_t)4 << 20) /* 2^20 f32 */
static unsigned char *slot_lo[NSLOT];

static int slots_init(void) {
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  for (int s = 0; s < NSLOT; s++) {
    unsigned char *p = mmap(NULL, SLOT_BYTES + 2 * page, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return 0;
    if (mprotect(p, page, PROT_NONE) != 0 || mprotect(p + page + SLOT_BYTES, page, PROT_NONE) != 0)
      return 0;
    slot_lo[s] = p + page;
  }
  return 1;
}

typedef struct tbuf {
  const char *name;
  size_t bytes;
  unsigned char *a, *b; /* run 0, run 1 */
} tbuf;

static void tbuf_place(tbuf *t, int slot, size_t bytes, int at_start, const char *name) {
  t->name = name;
  t->bytes = bytes;
  t->a = at_start ? slot_lo[slot] : slot_lo[slot] + SLOT_BYTES - bytes;
  t->b = at_start ? slot_lo[slot + 3] : slot_lo[slot + 3] + SLOT_BYTES - bytes;
}
static void tbuf_sync(const tbuf *t) { memcpy(t->b, t->a, t->bytes); }
static void *use(int run, const tbuf *t) { return t ? (run ? t->b : t->a) : NULL; }

/* ---- data ---------------------------------------------------------------------------------- */

static size_t rnd(nk_rng *r, size_t n) { return (size_t)(nk_rng_u64(r) % n); }

enum {
  K_NORMAL, K_X10, K_X100, K_HUGE, K_EDGE, K_NEGINF_MIX, K_ALL_NEGINF, K_NAN_NEGINF, K_NAN,
  K_PINF, K_RANGE, NKINDS
};
static const char *kind_name[NKINDS] = {"normal", "x10", "x100", "huge", "edge", "neginf_mix",
                                        "all_neginf", "nan_neginf", "nan", "pinf", "range"};

static void fill_random_bits(void *p, size_t bytes, nk_rng *r) {
  unsigned char *q = p;
  for (size_t i = 0; i < bytes; i += 8) {
    const uint64_t u = nk_rng_u64(r);
    memcpy(q + i, &u, bytes - i < 8 ? bytes - i : 8);
  }
}

/* N(0,1) values, drawn once; rows read them from a random offset (cheap fills of long rows). */
#define POOL ((size_t)1 << 16)
static float normal_pool[POOL];
static void pool_init(void) {
  nk_rng r = {0x9E3779B97F4A7C15ULL};
  for (size_t i = 0; i < POOL; i++) normal_pool[i] = (float)nk_rng_normal(&r);
}
static double pool_at(size_t o, size_t i) { return normal_pool[(o + i * 7) & (POOL - 1)]; }

static void fill_logits(void *x, size_t n, nk_dtype dt, int kind, nk_rng *r) {
  static const double edges[] = {88.72, 88.75, -103.97, -104.0, -87.3, 0.0, -88.72, -88.75,
                                 -103.972076, -87.33654};
  const double huge = dt == NK_DTYPE_F16 ? 3e4 : 1e30;
  const double sgn = (nk_rng_u64(r) & 1) ? 1.0 : -1.0;
  const size_t o = rnd(r, POOL);
  for (size_t i = 0; i < n; i++) {
    const double z = pool_at(o, i);
    double v = z;
    switch (kind) {
      case K_X10: v = 10 * z; break;
      case K_X100: v = 100 * z; break;
      case K_HUGE: v = ((nk_rng_u64(r) & 1) ? huge : -huge) * (0.5 + nk_rng_uniform(r)); break;
      case K_EDGE: v = rnd(r, 2) ? edges[rnd(r, sizeof edges / sizeof edges[0])] : z; break;
      case K_NEGINF_MIX: v = rnd(r, 3) ? z : -INFINITY; break;
      case K_ALL_NEGINF: case K_NAN_NEGINF: v = -INFINITY; break;
      case K_RANGE: v = sgn * (4194304.0 + 2.0 * z); break;
      default: break;
    }
    nk_t_set(x, i, v, dt);
  }
  if (kind == K_NAN || kind == K_NAN_NEGINF) nk_t_set(x, rnd(r, n), NAN, dt);
  if (kind == K_PINF) nk_t_set(x, rnd(r, n), INFINITY, dt);
}

static const nk_dtype mask_dts[4] = {NK_DTYPE_F32, NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};

/* mask kinds: 1..3 random with -inf entries; with all_masked every entry -inf */
static void fill_mask(void *m, size_t n, nk_dtype dt, int all_masked, nk_rng *r) {
  const size_t o = rnd(r, POOL);
  for (size_t i = 0; i < n; i++)
    nk_t_set(m, i, all_masked || rnd(r, 4) == 0 ? -INFINITY : 2.0 * pool_at(o, i), dt);
}

/* ---- comparison ---------------------------------------------------------------------------- */

static char case_desc[400];
static const char *cur_kernel;
static long cases_run;

static int same_bytes(const void *a, const void *b, size_t bytes, const char *what) {
  if (memcmp(a, b, bytes) == 0) return 1;
  size_t off = 0;
  while (((const unsigned char *)a)[off] == ((const unsigned char *)b)[off]) off++;
  NK_CHECK(0, "%s: %s differs at byte %zu of %zu (scalar %02x, kernel %02x); case %s", cur_kernel,
           what, off, bytes, ((const unsigned char *)a)[off], ((const unsigned char *)b)[off],
           case_desc);
  return 0;
}
static int same(const tbuf *t) { return !t || same_bytes(t->a, t->b, t->bytes, t->name); }

/* ---- one random configuration -------------------------------------------------------------- */

typedef struct cfg {
  size_t n, nv, target;
  int kind, mask, mask_all, log, masked_nan, nt, alias, at_start, has_sink, with_dx;
  float scale, alibi, pos, sink, smoothing, z_loss;
  double grad_w;
  uint64_t seed;
} cfg;

static cfg random_cfg(nk_rng *r, size_t n, const nk_softmax_entry *k) {
  cfg c;
  memset(&c, 0, sizeof c);
  c.n = n;
  c.nv = rnd(r, 3) ? n : rnd(r, n + 1);
  c.target = rnd(r, n);
  c.kind = rnd(r, 3) ? K_NORMAL : (int)rnd(r, NKINDS);
  if (c.kind == K_NORMAL && rnd(r, 2)) c.kind = (int)rnd(r, 3);
  c.mask = (int)rnd(r, 4);
  c.mask_all = rnd(r, 16) == 0;
  c.log = (int)rnd(r, 2);
  c.masked_nan = rnd(r, 4) == 0;
  c.nt = (int)rnd(r, 2);
  c.alias = (int)rnd(r, 3);
  if (k->algo == NK_SOFTMAX_THREE_PASS_RELOAD && c.alias) c.alias = 1;
  c.at_start = rnd(r, 3) == 0;
  static const float scales[] = {1.0f, 1.0f, 0.125f, 0.0883883f, 2.5f, -1.0f};
  c.scale = scales[rnd(r, sizeof scales / sizeof scales[0])];
  c.alibi = rnd(r, 3) ? 0.0f : -(float)ldexp(1.0, -(int)rnd(r, 8));
  c.pos = (float)rnd(r, n + 1);
  c.has_sink = rnd(r, 3) == 0;
  static const float sinks[] = {0.0f, 1.5f, -3.0f, 1000.0f, -INFINITY, NAN, 1e30f};
  c.sink = rnd(r, 2) ? 3.0f * (float)nk_rng_normal(r) : sinks[rnd(r, sizeof sinks / sizeof sinks[0])];
  c.smoothing = rnd(r, 2) ? 0.0f : 0.1f;
  c.z_loss = rnd(r, 2) ? 0.0f : 1e-4f;
  c.grad_w = rnd(r, 2) ? 1.0 : 1.0 / (double)(1 + rnd(r, 1000));
  c.with_dx = rnd(r, 4) != 0;
  c.seed = nk_rng_u64(r);
  return c;
}

static void describe(const cfg *c) {
  snprintf(case_desc, sizeof case_desc,
           "n %zu nv %zu kind %s mask %d%s log %d masked_nan %d nt %d alias %d at_start %d scale "
           "%g alibi %g pos %g sink %d:%g target %zu ls %g zl %g dx %d seed %llu",
           c->n, c->nv, kind_name[c->kind], c->mask, c->mask_all ? "(all)" : "", c->log,
           c->masked_nan, c->nt, c->alias, c->at_start, c->scale, c->alibi, c->pos, c->has_sink,
           c->sink, c->target, c->smoothing, c->z_loss, c->with_dx, (unsigned long long)c->seed);
  cases_run++;
}

static size_t esz(nk_dtype dt) { return nk_dtype_size(dt); }

/* ---- the cases, one per kind of kernel ----------------------------------------------------- */

static void case_fwd(const nk_softmax_entry *k, const nk_softmax_entry *ref, const cfg *c) {
  const nk_dtype dt = k->dtype, mdt = mask_dts[c->mask];
  nk_rng r = {c->seed | 1};
  tbuf bx, bm, by;
  tbuf_place(&bx, 0, c->n * esz(dt), c->at_start, "x");
  fill_logits(bx.a, c->n, dt, c->kind, &r);
  tbuf_place(&bm, 1, c->n * esz(mdt), c->at_start, "mask");
  fill_mask(bm.a, c->n, mdt, c->mask_all, &r);
  tbuf_place(&by, 2, c->n * esz(dt), !c->at_start, "y");
  fill_random_bits(by.a, by.bytes, &r);
  tbuf *ty = c->alias ? &bx : &by;
  tbuf_sync(&bx), tbuf_sync(&bm), tbuf_sync(&by);
  float lse[2];
  for (int run = 0; run < 2; run++) {
    nk_softmax_row row = {use(run, &bx), use(run, ty), c->mask ? use(run, &bm) : NULL, mdt,
                          c->n, c->nv, c->scale, c->alibi, c->pos, c->sink, c->has_sink, c->log,
                          c->masked_nan, c->nt, &lse[run]};
    ((nk_softmax_fwd_fn)(run ? k->fn : ref->fn))(&row);
  }
  if (same(&bx) && same(&bm) && same(&by)) same_bytes(&lse[0], &lse[1], 4, "lse");
}

static void case_sigmoid_fwd(const nk_softmax_entry *k, const nk_softmax_entry *ref, const cfg *c) {
  const nk_dtype dt = k->dtype, mdt = mask_dts[c->mask];
  nk_rng r = {c->seed | 1};
  tbuf bx, bm, by;
  tbuf_place(&bx, 0, c->n * esz(dt), c->at_start, "x");
  fill_logits(bx.a, c->n, dt, c->kind, &r);
  tbuf_place(&bm, 1, c->n * esz(mdt), c->at_start, "mask");
  fill_mask(bm.a, c->n, mdt, c->mask_all, &r);
  tbuf_place(&by, 2, c->n * esz(dt), !c->at_start, "y");
  fill_random_bits(by.a, by.bytes, &r);
  tbuf *ty = c->alias ? &bx : &by;
  tbuf_sync(&bx), tbuf_sync(&bm), tbuf_sync(&by);
  for (int run = 0; run < 2; run++) {
    nk_sigmoid_row row = {use(run, &bx), NULL, use(run, ty), c->mask ? use(run, &bm) : NULL, mdt,
                          c->n, c->nv, c->scale, c->alibi, c->pos, c->nt};
    ((nk_sigmoid_fn)(run ? k->fn : ref->fn))(&row);
  }
  if (same(&bx) && same(&bm)) same(&by);
}

/* y of a scalar forward (softmax of the case's logits, or sigmoid), into `y` (dtype dt). */
static void make_y(const cfg *c, nk_dtype dt, int sigmoid, void *y, nk_rng *r) {
  void *x = malloc(c->n * esz(dt)), *m = malloc(c->n * 4);
  if (!x || !m) abort();
  fill_logits(x, c->n, dt, c->kind, r);
  fill_mask(m, c->n, NK_DTYPE_F32, c->mask_all, r);
  if (sigmoid) {
    nk_sigmoid_row row = {x, NULL, y, c->mask ? m : NULL, NK_DTYPE_F32, c->n, c->nv, 1.0f,
                          c->alibi, c->pos, 0};
    ((nk_sigmoid_fn)find_scalar(NK_SMK_SIGMOID_FWD, NK_SOFTMAX_AUTO, dt)->fn)(&row);
  } else {
    nk_softmax_row row = {x, y, c->mask ? m : NULL, NK_DTYPE_F32, c->n, c->nv, 1.0f, c->alibi,
                          c->pos, c->sink, c->has_sink, c->log, c->masked_nan, 0, NULL};
    ((nk_softmax_fwd_fn)find_scalar(NK_SMK_FWD, NK_SOFTMAX_TWO_PASS, dt)->fn)(&row);
  }
  free(x);
  free(m);
}

/* dy: N(0,1); sometimes one NaN or inf. */
static void fill_dy(void *dy, size_t n, nk_dtype dt, nk_rng *r) {
  const size_t o = rnd(r, POOL);
  for (size_t i = 0; i < n; i++) nk_t_set(dy, i, pool_at(o, i), dt);
  const size_t w = rnd(r, 16);
  if (w == 0) nk_t_set(dy, rnd(r, n), NAN, dt);
  else if (w == 1) nk_t_set(dy, rnd(r, n), -INFINITY, dt);
}

static void case_bwd(const nk_softmax_entry *k, const nk_softmax_entry *ref, const cfg *c,
                     int sigmoid) {
  const nk_dtype dt = k->dtype;
  nk_rng r = {c->seed | 1};
  tbuf by, bdy, bdx;
  tbuf_place(&by, 0, c->n * esz(dt), c->at_start, "y");
  make_y(c, dt, sigmoid, by.a, &r);
  tbuf_place(&bdy, 1, c->n * esz(dt), c->at_start, "dy");
  fill_dy(bdy.a, c->n, dt, &r);
  tbuf_place(&bdx, 2, c->n * esz(dt), !c->at_start, "dx");
  fill_random_bits(bdx.a, bdx.bytes, &r);
  tbuf *tdx = c->alias == 1 ? &bdy : c->alias == 2 ? &by : &bdx;
  tbuf_sync(&by), tbuf_sync(&bdy), tbuf_sync(&bdx);
  double dot[2] = {0, 0};
  for (int run = 0; run < 2; run++) {
    if (sigmoid) {
      nk_sigmoid_row row = {use(run, &by), use(run, &bdy), use(run, tdx), NULL, NK_DTYPE_F32,
                            c->n, c->n, c->scale, 0.0f, 0.0f, c->nt};
      ((nk_sigmoid_fn)(run ? k->fn : ref->fn))(&row);
    } else {
      nk_softmax_bwd_row row = {use(run, &by), use(run, &bdy), use(run, tdx), c->n, c->scale,
                                c->log, c->nt, &dot[run]};
      ((nk_softmax_bwd_fn)(run ? k->fn : ref->fn))(&row);
    }
  }
  if (same(&by) && same(&bdy) && same(&bdx)) same_bytes(&dot[0], &dot[1], 8, "dot");
}

static void case_xent(const nk_softmax_entry *k, const nk_softmax_entry *ref, const cfg *c) {
  const nk_dtype dt = k->dtype;
  nk_rng r = {c->seed | 1};
  tbuf bx, bdx;
  tbuf_place(&bx, 0, c->n * esz(dt), c->at_start, "x");
  fill_logits(bx.a, c->n, dt, c->kind, &r);
  tbuf_place(&bdx, 2, c->n * esz(dt), !c->at_start, "dx");
  fill_random_bits(bdx.a, bdx.bytes, &r);
  tbuf *tdx = !c->with_dx ? NULL : c->alias ? &bx : &bdx;
  tbuf_sync(&bx), tbuf_sync(&bdx);
  double loss[2];
  float lse[2];
  for (int run = 0; run < 2; run++) {
    nk_xent_row row = {use(run, &bx), use(run, tdx), c->n, c->target, c->smoothing, c->z_loss,
                       c->grad_w, c->nt, &loss[run], &lse[run]};
    ((nk_xent_fn)(run ? k->fn : ref->fn))(&row);
  }
  if (same(&bx) && same(&bdx) && same_bytes(&loss[0], &loss[1], 8, "loss"))
    same_bytes(&lse[0], &lse[1], 4, "lse");
}

static void run_case(const nk_softmax_entry *k, const nk_softmax_entry *ref, const cfg *c) {
  describe(c);
  switch (k->kind) {
    case NK_SMK_FWD: case_fwd(k, ref, c); break;
    case NK_SMK_BWD: case_bwd(k, ref, c, 0); break;
    case NK_SMK_XENT: case_xent(k, ref, c); break;
    case NK_SMK_SIGMOID_FWD: case_sigmoid_fwd(k, ref, c); break;
    case NK_SMK_SIGMOID_BWD: case_bwd(k, ref, c, 1); break;
    default: break;
  }
}

/* ---- exp ----------------------------------------------------------------------------------- */

#define EXP_CHUNK 4096
static const float exp_edges[] = {0.0f, -0.0f, 88.72f, 88.75f, 88.7228f, 88.7229f, 88.74f,
                                  88.76f, 89.0f, -103.97f, -104.0f, -103.9721f, -104.01f,
                                  -87.3f, -87.33654f, -87.34f, -100.0f, -149.0f, 1e-10f, -1e-10f,
                                  1.0f, -1.0f, 0.5f, 1e30f, -1e30f, 3.4e38f, -3.4e38f};

static void test_exp_kernel(const nk_softmax_entry *k, const nk_softmax_entry *ref) {
  float *x = malloc(EXP_CHUNK * 4), *a = malloc(EXP_CHUNK * 4), *b = malloc(EXP_CHUNK * 4);
  NK_REQUIRE(x && a && b, "out of memory");
  const nk_exp_fn fr = (nk_exp_fn)ref->fn, fk = (nk_exp_fn)k->fn;
  uint64_t u = 0;
  int bad = 0;
  while (u < ((uint64_t)1 << 32) && !bad) {
    size_t cnt = 0;
    for (; cnt < EXP_CHUNK && u < ((uint64_t)1 << 32); cnt++, u += 1021) {
      const uint32_t bits = (uint32_t)u;
      memcpy(&x[cnt], &bits, 4);
    }
    fr(cnt, x, a);
    fk(cnt, x, b);
    bad = !same_bytes(a, b, cnt * 4, "exp");
  }
  const size_t ne = sizeof exp_edges / sizeof exp_edges[0];
  for (size_t i = 0; i < ne; i++) {
    x[i] = exp_edges[i];
    x[ne + i] = nextafterf(exp_edges[i], INFINITY);
    x[2 * ne + i] = nextafterf(exp_edges[i], -INFINITY);
  }
  x[3 * ne] = INFINITY, x[3 * ne + 1] = -INFINITY, x[3 * ne + 2] = NAN;
  const size_t m = 3 * ne + 3;
  fr(m, x, a);
  memcpy(b, x, m * 4);
  fk(m, b, b); /* in place */
  snprintf(case_desc, sizeof case_desc, "exp edges (in place)");
  same_bytes(a, b, m * 4, "exp");
  /* every length 1..70 (tails) */
  for (size_t len = 1; len <= 70; len++) {
    fr(len, x + 3, a);
    fk(len, x + 3, b);
    same_bytes(a, b, len * 4, "exp tail");
  }
  free(x), free(a), free(b);
}

/* ---- per-kernel driver --------------------------------------------------------------------- */

static const size_t large_cols[] = {1000, 1023, 1024, 1025, 4096, 70000};

static void test_kernel(const nk_softmax_entry *k) {
  const nk_softmax_entry *ref = find_scalar(k->kind, k->algo, k->dtype);
  NK_REQUIRE(ref != NULL, "no scalar kernel for %s", k->name);
  cur_kernel = k->name;
  if (k->kind == NK_SMK_EXP) {
    test_exp_kernel(k, ref);
    return;
  }
  nk_rng r = {0x50F7AA00ULL + (uint64_t)k->kind * 131 + (uint64_t)k->algo * 17 +
              (uint64_t)k->dtype * 7 + (uint64_t)k->isa};
  for (size_t n = 1; n <= 300; n++)
    for (int i = 0; i < 2; i++) {
      cfg c = random_cfg(&r, n, k);
      run_case(k, ref, &c);
      if (nk_t_cur_failed) return;
    }
  /* every kind with every option at a few lengths */
  static const size_t cross_n[] = {5, 77, 1025};
  for (size_t i = 0; i < sizeof cross_n / sizeof cross_n[0]; i++)
    for (int kind = 0; kind < NKINDS; kind++)
      for (int opt = 0; opt < 8; opt++) {
        cfg c = random_cfg(&r, cross_n[i], k);
        c.kind = kind;
        c.log = opt & 1;
        c.nt = (opt >> 1) & 1;
        c.has_sink = opt >> 2;
        c.mask = (int)((size_t)(kind + opt) % 4);
        run_case(k, ref, &c);
        if (nk_t_cur_failed) return;
      }
  for (size_t j = 0; j < sizeof large_cols / sizeof large_cols[0]; j++)
    for (int i = 0; i < (large_cols[j] > 10000 ? 2 : 4); i++) {
      cfg c = random_cfg(&r, large_cols[j], k);
      run_case(k, ref, &c);
      if (nk_t_cur_failed) return;
    }
  cfg c = random_cfg(&r, (size_t)1 << 20, k);
  c.kind = K_NORMAL;
  c.nv = c.n;
  run_case(k, ref, &c);
}

/* ---- scalar semantics ---------------------------------------------------------------------- */

static double nk_t_log(double v) { return log(v); }
static float f32_at(const void *p, size_t i) { return ((const float *)p)[i]; }
static uint32_t bits_at(const void *p, size_t i) { return nk__f32_bits(f32_at(p, i)); }

NK_TEST(scalar_semantics) {
  enum { N = 3000 };
  float *x = malloc(N * 4), *y = malloc(N * 4), *y2 = malloc(N * 4);
  NK_REQUIRE(x && y && y2, "out of memory");
  nk_rng r = {12345};
  static const nk_softmax_algo algos[] = {NK_SOFTMAX_THREE_PASS_RELOAD,
                                          NK_SOFTMAX_THREE_PASS_RECOMPUTE, NK_SOFTMAX_TWO_PASS,
                                          NK_SOFTMAX_ONLINE};
  static const size_t lens[] = {1, 2, 7, 64, 100, 1024, 1025, 3000};
  for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
    const size_t n = lens[li];
    for (size_t i = 0; i < n; i++) x[i] = (float)(3.0 * nk_rng_normal(&r));
    for (size_t a = 0; a < 4; a++) {
      const nk_softmax_entry *e = find_scalar(NK_SMK_FWD, algos[a], NK_DTYPE_F32);
      for (int log = 0; log < 2; log++) {
        float lse = 0.0f;
        nk_softmax_row row = {x, y, NULL, NK_DTYPE_F32, n, n, 1.0f, 0.0f, 0.0f, 0.0f, 0, log, 0, 0, &lse};
        ((nk_softmax_fwd_fn)e->fn)(&row);
        double s = 0.0;
        for (size_t i = 0; i < n; i++) s += log ? exp((double)y[i]) : (double)y[i];
        NK_CHECK(fabs(s - 1.0) <= (log ? 1e-5 : 1e-6), "%s log %d n %zu: sum %.9g", e->name, log, n, s);
        double ref = -INFINITY;
        for (size_t i = 0; i < n; i++) ref = fmax(ref, (double)x[i]);
        double t = 0.0;
        for (size_t i = 0; i < n; i++) t += exp((double)x[i] - ref);
        NK_CHECK(fabs((double)lse - (ref + nk_t_log(t))) <= 1e-5 * fmax(1.0, fabs(ref)), "%s lse %g", e->name, lse);
      }
    }
    /* reload and recompute: the same bits */
    for (int log = 0; log < 2; log++) {
      nk_softmax_row row = {x, y, NULL, NK_DTYPE_F32, n, n, 0.7f, 0.0f, 0.0f, 0.5f, 1, log, 0, 0, NULL};
      nk_f32_softmax_fwd__scalar_three_pass_reload(&row);
      row.y = y2;
      nk_f32_softmax_fwd__scalar_three_pass_recompute(&row);
      NK_CHECK(memcmp(y, y2, n * 4) == 0, "reload != recompute, n %zu log %d", n, log);
    }
  }
  /* fully masked rows, NaN rows, cols == 1, sink larger than every logit */
  for (size_t a = 0; a < 4; a++) {
    const nk_softmax_entry *e = find_scalar(NK_SMK_FWD, algos[a], NK_DTYPE_F32);
    const nk_softmax_fwd_fn fn = (nk_softmax_fwd_fn)e->fn;
    for (int log = 0; log < 2; log++)
      for (int mn = 0; mn < 2; mn++) {
        float lse = 0.0f;
        for (size_t i = 0; i < 10; i++) x[i] = -INFINITY;
        nk_softmax_row row = {x, y, NULL, NK_DTYPE_F32, 10, 10, 1.0f, 0.0f, 0.0f, 0.0f, 0, log, mn, 0, &lse};
        fn(&row);
        for (size_t i = 0; i < 10; i++)
          NK_CHECK(mn ? bits_at(y, i) == 0x7FC00000u : y[i] == (log ? -INFINITY : 0.0f),
                   "%s masked log %d mn %d: y %g", e->name, log, mn, y[i]);
        NK_CHECK(mn ? nk__f32_bits(lse) == 0x7FC00000u : lse == -INFINITY, "%s masked lse %g", e->name, lse);
        row.n_valid = 0; /* also fully masked, x not read */
        fn(&row);
        NK_CHECK(mn ? bits_at(y, 3) == 0x7FC00000u : y[3] == (log ? -INFINITY : 0.0f), "%s nv 0", e->name);
        /* a sink makes the row well defined: y = 0 (log -inf), lse = sink */
        row.has_sink = 1, row.sink = 2.0f, row.n_valid = 10;
        fn(&row);
        NK_CHECK(y[5] == (log ? -INFINITY : 0.0f) && fabsf(lse - 2.0f) < 1e-6f, "%s sink row lse %g", e->name, lse);
        /* NaN and +inf rows: canonical NaN everywhere */
        row.has_sink = 0;
        for (size_t i = 0; i < 10; i++) x[i] = (float)i;
        x[4] = nk__f32_from_bits(0xFFC12345u);
        fn(&row);
        for (size_t i = 0; i < 10; i++) NK_CHECK(bits_at(y, i) == 0x7FC00000u, "%s NaN row", e->name);
        NK_CHECK(nk__f32_bits(lse) == 0x7FC00000u, "%s NaN row lse", e->name);
        x[4] = INFINITY;
        fn(&row);
        for (size_t i = 0; i < 10; i++) NK_CHECK(bits_at(y, i) == 0x7FC00000u, "%s inf row", e->name);
        x[4] = -INFINITY;
        x[7] = NAN;
        for (size_t i = 0; i < 10; i++) x[i] = i == 7 ? x[i] : -INFINITY;
        fn(&row);
        NK_CHECK(bits_at(y, 0) == 0x7FC00000u, "%s -inf + NaN row", e->name);
        /* cols == 1 and a sink far above the logits */
        x[0] = 3.0f;
        row.n = row.n_valid = 1;
        fn(&row);
        /* (two-pass log: L = Nd ln2 + log(Md) is z only to double precision) */
        NK_CHECK(log && algos[a] == NK_SOFTMAX_TWO_PASS ? fabsf(y[0]) < 1e-6f : y[0] == (log ? 0.0f : 1.0f),
                 "%s cols 1: y %g", e->name, y[0]);
        row.has_sink = 1, row.sink = 1000.0f;
        fn(&row);
        NK_CHECK(log ? y[0] < -990.0f : y[0] == 0.0f, "%s big sink: y %g", e->name, y[0]);
      }
  }
  /* sigmoid(0) = 0.5, sigmoid(+-inf) = 1, 0 */
  x[0] = 0.0f, x[1] = INFINITY, x[2] = -INFINITY, x[3] = -0.0f;
  nk_sigmoid_row sr = {x, NULL, y, NULL, NK_DTYPE_F32, 4, 4, 1.0f, 0.0f, 0.0f, 0};
  nk_f32_sigmoid_attn_fwd__scalar_u64(&sr);
  NK_CHECK(y[0] == 0.5f && y[1] == 1.0f && y[2] == 0.0f && y[3] == 0.5f, "sigmoid %g %g %g", y[0], y[1], y[2]);
  /* exp */
  x[0] = 0.0f, x[1] = -INFINITY, x[2] = INFINITY, x[3] = NAN, x[4] = 1.0f, x[5] = -105.0f, x[6] = 89.0f;
  nk_f32_exp__scalar_u64(7, x, y);
  NK_CHECK(y[0] == 1.0f && y[1] == 0.0f && y[2] == INFINITY && bits_at(y, 3) == 0x7FC00000u &&
               fabs(y[4] - exp(1.0)) < 3e-7 && y[5] == 0.0f && y[6] == INFINITY,
           "exp %g %g %g %g %g", y[0], y[1], y[2], y[3], y[4]);
  free(x), free(y), free(y2);
}

/* ---- runner -------------------------------------------------------------------------------- */

static const nk_softmax_entry *cur;

NK_TEST(kernel_matches_scalar) {
  if (!nk_isa_supported(cur->isa)) NK_SKIP("%s: this CPU has no %s", cur->name, nk_isa_name(cur->isa));
  test_kernel(cur);
}

int main(void) {
  if (!slots_init()) {
    fprintf(stderr, "test_kernels_softmax: cannot map the test buffers\n");
    return 1;
  }
  pool_init();
  NK_RUN(scalar_semantics);
  for (size_t i = 0; i < NKERNELS; i++) {
    if (kernels[i].isa == NK_ISA_SCALAR) continue;
    cur = &kernels[i];
    const clock_t t0 = clock();
    const long n0 = cases_run;
    printf("%s\n", cur->name);
    NK_RUN(kernel_matches_scalar);
    printf("        %ld cases, %.2f s\n", cases_run - n0, (double)(clock() - t0) / CLOCKS_PER_SEC);
  }
  return nk_test_summary();
}
