/*
 * fuzz.h — shared machinery of the libFuzzer harnesses (tests/fuzz/<family>.c).
 *
 * Decoder. The input is read as a stream of bytes (fz_u8 and friends give 0 once it is used
 * up); data values that the stream does not supply come from an xorshift generator seeded with
 * a hash of the whole input, so every input, even an empty one, decodes to a complete call.
 * Each harness draws one "invalid" byte: 1 time in 8 it breaks one rule of the call (a stride,
 * a scalar, a flag, a NULL, an overlap, an overflowing size) and expects the documented status;
 * otherwise the call is valid and its outputs are checked against the float64 reference.
 *
 * Arena. FZ_SLOTS slots of FZ_CAP bytes, each between two PROT_NONE guard pages (mmap once).
 * A buffer is placed either against the trailing guard page (its last byte is the last byte
 * before the guard), against the leading guard page, or at a small offset (a multiple of the
 * element size, so vector loads are misaligned). Everything else in a slot, including the gaps
 * between strided rows, is canary (0xFF bytes: NaN in every dtype, so reading a gap shows as
 * NaN in the outputs). Before a call the arena is snapshotted; after it, every byte that is not
 * an element the call may write must equal the snapshot (fz_check_arena): inputs unchanged,
 * gaps and surroundings unchanged, and nothing at all written when the call failed.
 *
 * Statistics: every harness counts executions and valid calls that returned OK; at exit it
 * prints "fuzz <name>: N executions, V valid calls (P%)" and fails (exit 1) when P < 50 after
 * at least 1000 executions.
 */
#ifndef NK_FUZZ_H
#define NK_FUZZ_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "convert.h"
#include "normkit.h"

/* ---------------------------------------------------------------- input decoding ---------- */

typedef struct fz_in {
  const uint8_t *p;
  size_t n, i;
  uint64_t rng;
} fz_in;

static inline void fz_init(fz_in *in, const uint8_t *p, size_t n) {
  in->p = p, in->n = n, in->i = 0;
  uint64_t h = 0x9E3779B97F4A7C15ull ^ n; /* FNV-style hash of the input seeds the generator */
  for (size_t k = 0; k < n; k++) h = (h ^ p[k]) * 0x100000001B3ull;
  in->rng = h | 1;
}
static inline uint64_t fz_rand(fz_in *in) {
  in->rng ^= in->rng >> 12;
  in->rng ^= in->rng << 25;
  in->rng ^= in->rng >> 27;
  return in->rng * 0x2545F4914F6CDD1Dull;
}
static inline uint8_t fz_u8(fz_in *in) { return in->i < in->n ? in->p[in->i++] : 0; }
/* A value in [0, n) from the stream (n <= 256). */
static inline unsigned fz_pick(fz_in *in, unsigned n) { return n ? fz_u8(in) % n : 0; }
static inline uint32_t fz_u32(fz_in *in) {
  uint32_t v = 0;
  for (int k = 0; k < 4; k++) v = v << 8 | fz_u8(in);
  return v;
}

/* A data value: from the stream while it lasts, then from the generator. Mostly N(0,1)-like
 * values with a decoded scale and shift (ill-conditioned rows: shift 1e4, scale 1e-2), sometimes
 * a special value (NaN, +-inf, subnormals, +-1e30, FLT_MAX, +-0). `special` is the per-mille
 * rate of special values (the caller lowers it so that most rows stay finite). */
typedef struct fz_dist {
  double shift, scale;
  unsigned special; /* per 1024 */
} fz_dist;

static inline double fz_special(unsigned k) {
  static const double t[] = {NAN,    INFINITY, -INFINITY, 1e-40,  -1e-42, 1e30,
                             -1e30,  3.4e38,   0.0,       -0.0,   1e-45,  -3.4e38,
                             1.2e-38, 65504.0, 1e4,       -70000.0};
  return t[k % (sizeof t / sizeof t[0])];
}

static inline double fz_value(fz_in *in, const fz_dist *d) {
  uint32_t bits;
  if (in->i + 2 <= in->n) {
    bits = (uint32_t)fz_u8(in) << 8 | fz_u8(in);
    bits = bits * 2654435761u; /* spread the 16 input bits */
  } else {
    bits = (uint32_t)(fz_rand(in) >> 32);
  }
  if ((bits & 1023u) < d->special) return fz_special(bits >> 10);
  /* a sum of uniforms: roughly normal, symmetric, deterministic in the bits */
  const double u = ((double)((bits >> 10) & 0x3FFFFF) + 0.5) / 4194304.0; /* (0, 1) */
  const double v = (u - 0.5) * 3.4641016151377544;                          /* var 1 */
  return d->shift + d->scale * v;
}

/* A distribution for one tensor: the stream chooses scale and shift classes. */
static inline fz_dist fz_dist_pick(fz_in *in, unsigned special) {
  static const double scales[] = {1.0, 1.0, 1.0, 1e-2, 1e3, 1e-30, 1e30, 1e-38};
  static const double shifts[] = {0.0, 0.0, 0.0, 1e4, -3.0, 1e30};
  fz_dist d;
  d.scale = scales[fz_pick(in, 8)];
  d.shift = shifts[fz_pick(in, 6)];
  if (d.shift == 1e30 && d.scale < 1e20) d.scale = 1e24; /* a spread f32 can resolve */
  d.special = special;
  return d;
}

static inline nk_dtype fz_dtype(fz_in *in) { return (nk_dtype)fz_pick(in, 3); }

/* ------------------------------------------------------------------ the arena ---------- */

#define FZ_SLOTS 16
#define FZ_CAP (16 * 1024)
#define FZ_MAXW 4 /* writable tensors per slot */

/* A tensor: n0 blocks (stride s0) of n1 rows (stride s1) of n2 elements; es bytes each. */
typedef struct fz_geom {
  size_t n0, n1, n2;
  ptrdiff_t s0, s1;
  size_t es;
} fz_geom;

typedef struct fz_slot {
  uint8_t *base;  /* FZ_CAP bytes between two guard pages */
  uint8_t *snap;  /* snapshot before the call */
  int used;
  int nw;              /* writable tensors in this slot: their offsets and geometries */
  size_t woff[FZ_MAXW];
} fz_slot;

static fz_slot fz_slots[FZ_SLOTS];
static fz_geom fz_wgeom[FZ_SLOTS][FZ_MAXW];
static const char *fz_name = "?";
static unsigned long long fz_execs, fz_valid;

static void fz_report(void) {
  const double share = fz_execs ? 100.0 * (double)fz_valid / (double)fz_execs : 0.0;
  printf("fuzz %s: %llu executions, %llu valid calls (%.1f%%)\n", fz_name, fz_execs, fz_valid,
         share);
  fflush(stdout);
  if (fz_execs >= 1000 && share < 50.0) {
    fprintf(stderr, "fuzz %s: fewer than half of the inputs reached a valid call\n", fz_name);
    _exit(1);
  }
}

#define FZ_FAIL(...)                                                                             \
  do {                                                                                           \
    fprintf(stderr, "fuzz %s: FAILURE at %s:%d: ", fz_name, __FILE__, __LINE__);                 \
    fprintf(stderr, __VA_ARGS__);                                                                \
    fprintf(stderr, "\n");                                                                       \
    abort();                                                                                     \
  } while (0)
#define FZ_CHECK(cond, ...)                                                                      \
  do {                                                                                           \
    if (!(cond)) FZ_FAIL(__VA_ARGS__);                                                           \
  } while (0)

static nk_context *fz_ctx[4]; /* one per ISA (index nk_isa) */
static nk_threadpool *fz_pool;

static void fz_setup(const char *name) {
  if (fz_slots[0].base) return;
  fz_name = name;
  const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  for (int s = 0; s < FZ_SLOTS; s++) {
    uint8_t *m = mmap(NULL, FZ_CAP + 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    if (m == MAP_FAILED) abort();
    if (mprotect(m, pg, PROT_NONE) != 0 || mprotect(m + pg + FZ_CAP, pg, PROT_NONE) != 0) abort();
    fz_slots[s].base = m + pg;
    fz_slots[s].snap = malloc(FZ_CAP);
    if (!fz_slots[s].snap) abort();
  }
  for (int isa = 1; isa <= 3; isa++) {
    if (nk_context_create(&fz_ctx[isa]) != NK_OK) abort();
    if (nk_context_set_isa(fz_ctx[isa], (nk_isa)isa) != NK_OK) {
      nk_context_destroy(fz_ctx[isa]);
      fz_ctx[isa] = NULL;
    }
  }
  if (nk_threadpool_create(2, &fz_pool) != NK_OK) abort();
  atexit(fz_report);
}

/* A context for this call: an ISA the CPU has, sometimes with the 2-thread pool, sometimes
 * NULL (defaults). */
static inline nk_context *fz_context(fz_in *in) {
  const unsigned k = fz_pick(in, 8);
  if (k == 0) return NULL;
  nk_context *c = fz_ctx[1 + k % 3];
  if (c == NULL) c = fz_ctx[1];
  nk_context_set_threadpool(c, (k & 4) ? fz_pool : NULL);
  return c;
}

static inline void fz_begin(void) {
  for (int s = 0; s < FZ_SLOTS; s++) fz_slots[s].used = 0;
}

/* The start of every LLVMFuzzerTestOneInput: setup (once), an empty arena, the execution count,
 * the decoder on this input. */
static inline void fz_start(fz_in *in, const char *name, const uint8_t *data, size_t size) {
  fz_setup(name);
  fz_begin();
  fz_execs++;
  fz_init(in, data, size);
}


static inline fz_geom fz_rows(size_t rows, size_t cols, ptrdiff_t stride, nk_dtype dt) {
  fz_geom g = {1, rows, cols, 0, stride, nk_dtype_size(dt)};
  return g;
}
static inline fz_geom fz_vec(size_t n, size_t es) {
  fz_geom g = {1, 1, n, 0, 0, es};
  return g;
}
/* Elements spanned (largest index + 1), 0 when empty. Strides are non-negative here. */
static inline size_t fz_span(const fz_geom *g) {
  if (!g->n0 || !g->n1 || !g->n2) return 0;
  return (g->n0 - 1) * (size_t)g->s0 + (g->n1 - 1) * (size_t)g->s1 + g->n2;
}
static inline size_t fz_idx(const fz_geom *g, size_t a, size_t b, size_t c) {
  return a * (size_t)g->s0 + b * (size_t)g->s1 + c;
}

/* Places a buffer for geometry g in a fresh slot (placement decoded from the stream), fills the
 * slot with canary, and returns the element pointer. NULL when it does not fit (the caller then
 * shrinks its sizes; harnesses keep sizes so that this does not happen). */
static inline void *fz_place(fz_in *in, const fz_geom *g, int *slot_out) {
  int s = 0;
  while (s < FZ_SLOTS && fz_slots[s].used) s++;
  if (s == FZ_SLOTS) FZ_FAIL("out of slots");
  size_t bytes = fz_span(g) * g->es;
  if (bytes > FZ_CAP - 64) FZ_FAIL("buffer of %zu bytes does not fit", bytes);
  fz_slot *sl = &fz_slots[s];
  sl->used = 1;
  memset(sl->base, 0xFF, FZ_CAP);
  sl->nw = 0;
  size_t off;
  const unsigned k = fz_pick(in, 4);
  if (k <= 1) off = FZ_CAP - bytes; /* against the trailing guard page */
  else if (k == 2) off = 0;         /* against the leading guard page */
  else off = g->es * (1 + fz_pick(in, 15)); /* misaligned for vectors */
  if (slot_out) *slot_out = s;
  return sl->base + off;
}

/* Marks the elements of g at p as writable by the call. */
static inline void fz_writable(const void *p, const fz_geom *g) {
  if (p == NULL || fz_span(g) == 0) return;
  for (int s = 0; s < FZ_SLOTS; s++) {
    fz_slot *sl = &fz_slots[s];
    const uint8_t *b = p;
    if (!sl->used || b < sl->base || b >= sl->base + FZ_CAP) continue;
    if (sl->nw == FZ_MAXW) FZ_FAIL("too many writable tensors in one slot");
    sl->woff[sl->nw] = (size_t)(b - sl->base);
    fz_wgeom[s][sl->nw] = *g;
    sl->nw++;
    return;
  }
}

static inline void fz_snapshot(void) {
  for (int s = 0; s < FZ_SLOTS; s++)
    if (fz_slots[s].used) memcpy(fz_slots[s].snap, fz_slots[s].base, FZ_CAP);
}

/* Every byte not marked writable is unchanged (ok == 0: the call failed, nothing may change).
 * The writable elements are copied from the arena into the snapshot, then the whole slot must
 * equal its snapshot. */
static inline void fz_check_arena(int ok, const char *what) {
  for (int s = 0; s < FZ_SLOTS; s++) {
    fz_slot *sl = &fz_slots[s];
    if (!sl->used) continue;
    for (int w = 0; ok && w < sl->nw; w++) {
      const fz_geom g = fz_wgeom[s][w];
      for (size_t a = 0; a < g.n0; a++)
        for (size_t r = 0; r < g.n1; r++) {
          const size_t o = sl->woff[w] + fz_idx(&g, a, r, 0) * g.es;
          memcpy(sl->snap + o, sl->base + o, g.n2 * g.es);
        }
    }
    if (memcmp(sl->base, sl->snap, FZ_CAP) == 0) continue;
    for (size_t i = 0; i < FZ_CAP; i++)
      if (sl->base[i] != sl->snap[i])
        FZ_FAIL("%s: byte %zu of slot %d written (%s call): 0x%02x -> 0x%02x", what, i, s,
                ok ? "successful" : "failed", sl->snap[i], sl->base[i]);
  }
}

/* ------------------------------------------------------------------ data and checks ------- */

static inline double fz_get(const void *p, size_t i, nk_dtype dt) {
  return nk__load_f32(p, i, dt);
}
static inline void fz_set(void *p, size_t i, double v, nk_dtype dt) {
  nk__store_f32(p, i, (float)v, dt);
}
/* Fills the elements of g with values of d; ref (dense n0*n1*n2, may be NULL) gets them as
 * stored. */
static inline void fz_fill(fz_in *in, void *p, const fz_geom *g, nk_dtype dt, const fz_dist *d,
                           double *ref) {
  size_t k = 0;
  for (size_t a = 0; a < g->n0; a++)
    for (size_t r = 0; r < g->n1; r++)
      for (size_t c = 0; c < g->n2; c++, k++) {
        const size_t i = fz_idx(g, a, r, c);
        fz_set(p, i, fz_value(in, d), dt);
        if (ref) ref[k] = fz_get(p, i, dt);
      }
}
/* The elements of g at p, dense, as doubles. */
static inline void fz_read(const void *p, const fz_geom *g, nk_dtype dt, double *out) {
  size_t k = 0;
  for (size_t a = 0; a < g->n0; a++)
    for (size_t r = 0; r < g->n1; r++)
      for (size_t c = 0; c < g->n2; c++) out[k++] = fz_get(p, fz_idx(g, a, r, c), dt);
}

/* One unit in the last place of dt at |v| (tests/util.h nk_t_ulp). */
static inline double fz_ulp(double v, nk_dtype dt) {
  const int mant = dt == NK_DTYPE_F32 ? 24 : dt == NK_DTYPE_BF16 ? 8 : 11;
  const int emin = dt == NK_DTYPE_F16 ? -14 : -126;
  int e;
  frexp(fabs(v), &e);
  e -= 1;
  if (e < emin || v == 0.0) e = emin;
  return ldexp(1.0, e - (mant - 1));
}
static inline double fz_round(double v, nk_dtype dt) { return nk__round_to((float)v, dt); }

/* got agrees with ref within bound: NaN only for NaN, infinities exactly, or the correctly
 * rounded reference itself (which may be +-inf in f16). */
static inline int fz_close(double got, double ref, double bound, nk_dtype dt) {
  if (isnan(ref)) return isnan(got);
  if (isnan(got)) return 0;
  if (got == ref || got == fz_round(ref, dt)) return 1;
  if (isinf(ref) || isinf(got)) return 0;
  return fabs(got - ref) <= bound;
}

static inline int fz_finite_all(const double *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(v[i])) return 0;
  return 1;
}

#endif /* NK_FUZZ_H */
