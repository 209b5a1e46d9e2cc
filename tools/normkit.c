/*
 * normkit.c — the `normkit` command line tool.
 *
 *   normkit info    version, CPU features, usable ISA paths, and the kernel symbol that each op
 *                   and dtype runs (by default and with each ISA forced).
 *   normkit bench   LayerNorm, RMSNorm, softmax, log_softmax, sigmoid attention scores
 *                   (forward and backward) and cross-entropy (forward, fused forward+backward),
 *                   timed and reported as a fraction of this machine's copy bandwidth (the
 *                   benchmark contract of DESIGN.md: with --json, stdout carries only JSON lines,
 *                   one per case). --algo selects the softmax algorithms (kernel names say which
 *                   ran).
 *   normkit bench --cuda
 *                   the CUDA backend (normkit_cuda.h) on GPU 0 against the device-to-device
 *                   copy bandwidth, same contract (tools/bench_cuda.c; needs -DNK_CUDA=ON).
 *
 * How `bench` measures
 *   - Copy bandwidth first, at every thread count the run uses: a regular copy (memcpy per
 *     tile) and a non-temporal copy (streaming stores, AVX-512, AVX2 or SSE2 chosen at run
 *     time), 1 GiB source + 1 GiB destination, median of COPY_REPS; bytes = read + write.
 *     Cases that move >= OUT_OF_CACHE_BYTES measure both copies again (median of ANCHOR_REPS)
 *     right before they are timed and report against that anchor: the memory bandwidth of
 *     this shared host drifts too much for one anchor per run. In-cache cases use the anchor
 *     of the run's start.
 *   - Each shape and dtype gets 64-byte aligned buffers (x, y, dy, dx; at most 4 GiB for the
 *     1 GiB case), filled with normal random numbers (outputs with zeros) before anything is
 *     timed, shared by its cases and freed before the next shape. Inputs are never written.
 *   - Each case runs the op once (the backward first runs its forward for the statistics) and
 *     validates it against the float64 reference (src/reference) on up to SAMPLE_ROWS rows,
 *     dgamma/dbeta over all rows when the shape is small; a case that fails is not timed and
 *     the exit status becomes 1. Then warm-up, then at least --reps (5) timed calls, more for
 *     small cases so that each case takes about TARGET_SECONDS; median and minimum reported.
 *   - bytes are the minimal bytes: each input read once, each output written once (see
 *     case_bytes). The row norms' forward runs with gamma (and beta for LayerNorm) and saves
 *     the statistics; the backward reads them and writes dgamma (and dbeta for LayerNorm).
 *     Softmax-family backwards read the forward's y and dy and write dx; cross-entropy reads
 *     the logits and the targets and writes the mean loss (and dlogits for fwdbwd).
 * Exit status: 0 success, 1 a validation failure or an nk_status error, 2 a usage error.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define NK_TOOL_X86 1
#endif

#include "normkit.h"
#include "reference/reference.h"
#include "kernels/quant/quant.h"
#ifdef NK_HAVE_CUDA
#include "bench_cuda.h"
#endif

#define GIB ((size_t)1 << 30)
#define COPY_BYTES GIB                  /* per copy buffer: 1 GiB source, 1 GiB destination */
#define COPY_TILE ((size_t)4 << 20)     /* bytes per copy task */
#define COPY_REPS 7
#define ANCHOR_REPS 3                       /* per out-of-cache case */
#define OUT_OF_CACHE_BYTES ((size_t)512 << 20) /* cases moving this much get their own anchor */
#define FILL_TILE ((size_t)1 << 16)     /* elements per fill task */
#define TARGET_SECONDS 0.2              /* timed seconds per case, roughly */
#define WARMUP_SECONDS 0.02
#define MAX_REPS 200000
#define SAMPLE_ROWS 64                  /* rows validated per case */
#define FULL_CHECK_ELEMENTS ((size_t)1 << 24) /* dgamma/dbeta checked over all rows up to this */
#define LN_EPS 1e-5f
#define RMS_EPS 1e-6f
#define MAX_THREAD_COUNTS 16
#define MAX_SHAPES 64

/* ------------------------------------------------------------------------------------------ */
/* Small utilities                                                                             */
/* ------------------------------------------------------------------------------------------ */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 64-byte aligned allocation; the tool (not the library) may exit on out-of-memory. */
static void *xalloc(size_t bytes) {
  size_t n = (bytes + 63) & ~(size_t)63;
  void *p = aligned_alloc(64, n ? n : 64);
  if (p == NULL) {
    fprintf(stderr, "normkit: out of memory (%zu bytes)\n", bytes);
    exit(1);
  }
  return p;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sorts t in place and returns its median. */
static double median(double *t, size_t n) {
  qsort(t, n, sizeof *t, cmp_double);
  return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Two independent N(0,1) numbers (Marsaglia's polar method). */
static void normal_pair(uint64_t *s, double *a, double *b) {
  double u, v, q;
  do {
    u = (double)(splitmix64(s) >> 11) * 0x1p-52 - 1.0;
    v = (double)(splitmix64(s) >> 11) * 0x1p-52 - 1.0;
    q = u * u + v * v;
  } while (q >= 1.0 || q == 0.0);
  double f = sqrt(-2.0 * log(q) / q);
  *a = u * f;
  *b = v * f;
}

/* 2^16 N(0,1) samples: the fills draw from this table with random 16-bit indices, which is
 * normal data at a fraction of the cost of a transform per element (1 GiB fills in < 1 s). */
#define NORMAL_TABLE_BITS 16
static double normal_table[1u << NORMAL_TABLE_BITS];

static void normal_table_init(void) {
  uint64_t s = 12345;
  for (size_t i = 0; i < (1u << NORMAL_TABLE_BITS); i += 2)
    normal_pair(&s, &normal_table[i], &normal_table[i + 1]);
}

static void store_elem(void *base, nk_dtype dt, size_t i, float v) {
  switch (dt) {
    case NK_DTYPE_F32: ((float *)base)[i] = v; break;
    case NK_DTYPE_BF16: ((nk_bf16 *)base)[i] = nk_f32_to_bf16(v); break;
    case NK_DTYPE_F16: ((nk_f16 *)base)[i] = nk_f32_to_f16(v); break;
  }
}

static double load_elem(const void *base, nk_dtype dt, size_t i) {
  switch (dt) {
    case NK_DTYPE_F32: return ((const float *)base)[i];
    case NK_DTYPE_BF16: return nk_bf16_to_f32(((const nk_bf16 *)base)[i]);
    case NK_DTYPE_F16: return nk_f16_to_f32(((const nk_f16 *)base)[i]);
  }
  return NAN;
}

static void load_row(const void *base, nk_dtype dt, size_t offset, size_t n, double *out) {
  for (size_t j = 0; j < n; j++) out[j] = load_elem(base, dt, offset + j);
}

/* The CPU's model name from /proc/cpuinfo, or "unknown". */
static void cpu_model(char *out, size_t size) {
  snprintf(out, size, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (f == NULL) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    char *colon = strchr(line, ':');
    if (strncmp(line, "model name", 10) != 0 || colon == NULL) continue;
    colon += 1 + (colon[1] == ' ');
    colon[strcspn(colon, "\n")] = '\0';
    snprintf(out, size, "%s", colon);
    break;
  }
  fclose(f);
}

static long online_cpus(void) { return sysconf(_SC_NPROCESSORS_ONLN); }

/* ------------------------------------------------------------------------------------------ */
/* Parallel fill and copy (through the library's pool)                                         */
/* ------------------------------------------------------------------------------------------ */

/* A fill draws 16-bit indices into a table of 2^16 values mean + scale * N(0,1), stored in
 * the destination dtype: a lookup and a store per element. */
typedef struct fill_job {
  void *dst;
  const void *table; /* 2^16 elements of the destination dtype */
  size_t elem_size;  /* 4 or 2 */
  uint64_t seed;
} fill_job;

#define TABLE_MASK ((1u << NORMAL_TABLE_BITS) - 1)

/* Each tile draws from its own stream (seeded by its start), so the data does not depend on
 * the thread count. One 64-bit draw gives four table indices. */
static void fill_tile(void *arg, size_t start, size_t count) {
  const fill_job *job = arg;
  uint64_t s = job->seed ^ (start * 0xD1B54A32D192ED03ull), bits = 0;
  if (job->elem_size == 4) {
    const uint32_t *t = job->table;
    uint32_t *d = (uint32_t *)job->dst + start;
    for (size_t i = 0; i < count; i++, bits >>= NORMAL_TABLE_BITS)
      d[i] = t[(i % 4 ? bits : (bits = splitmix64(&s))) & TABLE_MASK];
  } else {
    const uint16_t *t = job->table;
    uint16_t *d = (uint16_t *)job->dst + start;
    for (size_t i = 0; i < count; i++, bits >>= NORMAL_TABLE_BITS)
      d[i] = t[(i % 4 ? bits : (bits = splitmix64(&s))) & TABLE_MASK];
  }
}

static void fill_normal(nk_threadpool *pool, void *dst, nk_dtype dt, size_t n, uint64_t seed,
                        double mean, double scale) {
  void *table = xalloc(((size_t)1 << NORMAL_TABLE_BITS) * nk_dtype_size(dt));
  for (size_t i = 0; i <= TABLE_MASK; i++)
    store_elem(table, dt, i, (float)(mean + scale * normal_table[i]));
  fill_job job = {dst, table, nk_dtype_size(dt), seed};
  nk_parallelize_1d(pool, fill_tile, &job, n, FILL_TILE);
  free(table);
}

typedef struct set_job {
  char *dst;
  int byte;
} set_job;

static void set_tile(void *arg, size_t start, size_t count) {
  const set_job *job = arg;
  memset(job->dst + start, job->byte, count);
}

/* memset over the pool: touches (faults in) every page before anything is timed. */
static void set_bytes(nk_threadpool *pool, void *dst, int byte, size_t bytes) {
  set_job job = {dst, byte};
  nk_parallelize_1d(pool, set_tile, &job, bytes, COPY_TILE);
}

typedef void (*copy_fn)(char *dst, const char *src, size_t n);

static void copy_regular(char *dst, const char *src, size_t n) { memcpy(dst, src, n); }

/* The read-only anchor: sums the 64-bit words of src (eight independent sums, which the
 * compiler vectorizes) and stores the total in dst (8 bytes), so the reads cannot be removed.
 * Integer sums: no floating-point assists whatever the bytes are. */
static void read_only(char *dst, const char *src, size_t n) {
  uint64_t acc[8] = {0};
  size_t i = 0, words = n / 8;
  const uint64_t *w = (const uint64_t *)(const void *)src;
  for (; i + 8 <= words; i += 8)
    for (int k = 0; k < 8; k++) acc[k] += w[i + (size_t)k];
  for (; i < words; i++) acc[0] += w[i];
  uint64_t t = 0;
  for (int k = 0; k < 8; k++) t += acc[k];
  memcpy(dst, &t, sizeof t);
}

#ifdef NK_TOOL_X86
/* Bytes to copy before dst is aligned to `align` (at most n). */
static size_t head_bytes(const char *dst, size_t n, size_t align) {
  size_t mis = (size_t)((uintptr_t)dst & (align - 1));
  size_t head = mis ? align - mis : 0;
  return head < n ? head : n;
}

__attribute__((target("avx512f"))) static void copy_nt_avx512(char *dst, const char *src,
                                                               size_t n) {
  size_t i = head_bytes(dst, n, 64);
  memcpy(dst, src, i);
  for (; i + 256 <= n; i += 256) {
    __m512 a = _mm512_loadu_ps((const float *)(src + i));
    __m512 b = _mm512_loadu_ps((const float *)(src + i + 64));
    __m512 c = _mm512_loadu_ps((const float *)(src + i + 128));
    __m512 d = _mm512_loadu_ps((const float *)(src + i + 192));
    _mm512_stream_ps((float *)(dst + i), a);
    _mm512_stream_ps((float *)(dst + i + 64), b);
    _mm512_stream_ps((float *)(dst + i + 128), c);
    _mm512_stream_ps((float *)(dst + i + 192), d);
  }
  for (; i + 64 <= n; i += 64)
    _mm512_stream_ps((float *)(dst + i), _mm512_loadu_ps((const float *)(src + i)));
  memcpy(dst + i, src + i, n - i);
  _mm_sfence();
}

/* The read-only anchor on AVX-512: four integer sums (no floating-point assists whatever the
 * bytes are), stored to dst so that the loads stay. */
__attribute__((target("avx512f"))) static void read_avx512(char *dst, const char *src, size_t n) {
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  size_t i = 0;
  for (; i + 256 <= n; i += 256) {
    a = _mm512_add_epi64(a, _mm512_loadu_si512((const void *)(src + i)));
    b = _mm512_add_epi64(b, _mm512_loadu_si512((const void *)(src + i + 64)));
    c = _mm512_add_epi64(c, _mm512_loadu_si512((const void *)(src + i + 128)));
    d = _mm512_add_epi64(d, _mm512_loadu_si512((const void *)(src + i + 192)));
  }
  a = _mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d));
  uint64_t t = (uint64_t)_mm512_reduce_add_epi64(a);
  for (; i < n; i++) t += (unsigned char)src[i];
  memcpy(dst, &t, sizeof t);
}

__attribute__((target("avx2"))) static void copy_nt_avx2(char *dst, const char *src, size_t n) {
  size_t i = head_bytes(dst, n, 32);
  memcpy(dst, src, i);
  for (; i + 128 <= n; i += 128) {
    __m256 a = _mm256_loadu_ps((const float *)(src + i));
    __m256 b = _mm256_loadu_ps((const float *)(src + i + 32));
    __m256 c = _mm256_loadu_ps((const float *)(src + i + 64));
    __m256 d = _mm256_loadu_ps((const float *)(src + i + 96));
    _mm256_stream_ps((float *)(dst + i), a);
    _mm256_stream_ps((float *)(dst + i + 32), b);
    _mm256_stream_ps((float *)(dst + i + 64), c);
    _mm256_stream_ps((float *)(dst + i + 96), d);
  }
  memcpy(dst + i, src + i, n - i);
  _mm_sfence();
}

static void copy_nt_sse2(char *dst, const char *src, size_t n) {
  size_t i = head_bytes(dst, n, 16);
  memcpy(dst, src, i);
  for (; i + 64 <= n; i += 64) {
    __m128 a = _mm_loadu_ps((const float *)(src + i));
    __m128 b = _mm_loadu_ps((const float *)(src + i + 16));
    __m128 c = _mm_loadu_ps((const float *)(src + i + 32));
    __m128 d = _mm_loadu_ps((const float *)(src + i + 48));
    _mm_stream_ps((float *)(dst + i), a);
    _mm_stream_ps((float *)(dst + i + 16), b);
    _mm_stream_ps((float *)(dst + i + 32), c);
    _mm_stream_ps((float *)(dst + i + 48), d);
  }
  memcpy(dst + i, src + i, n - i);
  _mm_sfence();
}
#endif

/* The widest read-only stream this CPU runs. */
static copy_fn select_read(void) {
#ifdef NK_TOOL_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return read_avx512;
#endif
  return read_only;
}

/* The widest streaming-store copy this CPU runs; *name says which. */
static copy_fn select_nt_copy(const char **name) {
#ifdef NK_TOOL_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return *name = "avx512", copy_nt_avx512;
  if (__builtin_cpu_supports("avx2")) return *name = "avx2", copy_nt_avx2;
  return *name = "sse2", copy_nt_sse2;
#else
  return *name = "memcpy", copy_regular;
#endif
}

typedef struct copy_job {
  char *dst;
  const char *src;
  copy_fn fn;
} copy_job;

static void copy_tile(void *arg, size_t start, size_t count) {
  const copy_job *job = arg;
  job->fn(job->dst + start, job->src + start, count);
}

/* GB/s (read + write bytes) of the median of `reps` copies after one warm-up (half of it is
 * the read rate of a read-only function). */
static double measure_copy(nk_threadpool *pool, copy_fn fn, char *dst, const char *src,
                           size_t bytes, int reps) {
  copy_job job = {dst, src, fn};
  double t[COPY_REPS];
  if (reps > COPY_REPS) reps = COPY_REPS;
  nk_parallelize_1d(pool, copy_tile, &job, bytes, COPY_TILE);
  for (int r = 0; r < reps; r++) {
    double t0 = now_s();
    nk_parallelize_1d(pool, copy_tile, &job, bytes, COPY_TILE);
    t[r] = now_s() - t0;
  }
  return 2.0 * (double)bytes / median(t, (size_t)reps) / 1e9;
}

/* The copy buffers stay allocated for the whole run: out-of-cache cases re-measure the copy
 * bandwidth right before they are timed (this host's memory bandwidth drifts by up to 2x over
 * minutes as other tenants load it, so an anchor measured once at the start is not comparable). */
static struct {
  char *src, *dst;
  copy_fn nt, read;
} anchor;

/* ------------------------------------------------------------------------------------------ */
/* Options, shapes, runners                                                                    */
/* ------------------------------------------------------------------------------------------ */

enum {
  OP_LAYERNORM,
  OP_RMSNORM,
  OP_SOFTMAX,
  OP_LOG_SOFTMAX,
  OP_CROSS_ENTROPY,
  OP_SIGMOID,
  OP_BATCHNORM,
  OP_GROUPNORM,
  OP_INSTANCENORM,
  OP_POWERNORM, /* research layers (only with --op): token tensors NxCxS, nhwc */
  OP_UNIFIEDNORM,
  OP_EVONORM_B0, /* channel tensors, nchw and nhwc */
  OP_EVONORM_S0,
  OP_LAYERNORM_Q8, /* fused norm + int8 quantize (per-row absmax scale) */
  OP_RMSNORM_Q8,
  OP_POW2QUANT,    /* power-of-two group quantization, groups of 32, 8 bits */
  OP_CRMSNORM, /* research row norms: not in the default run (--op or --full) */
  OP_L1NORM,
  OP_FAKELN, /* FakeLN with sigma_bar FAKELN_SIGMA: forward (normq kernels), backward (the
                LayerNorm backward kernels with a frozen std) */
  NOPS, /* the tensor ops above (the research layers only by --op); the optimizer/advantage
          ops below run only by --op, on their own shapes */
  OP_ADAMP = NOPS,
  OP_ADAMP_PROJ,
  OP_SGDP,
  OP_SGDP_PROJ,
  OP_GRPO,
  NOPS_ALL
};
/* The quantizing ops run only when --op names them (they are not in the default run, which
 * must stay under 3 minutes). */
#define QUANT_OPS (1u << OP_LAYERNORM_Q8 | 1u << OP_RMSNORM_Q8 | 1u << OP_POW2QUANT)
#define P2_GROUP 32
#define RESEARCH_OPS (1u << OP_CRMSNORM | 1u << OP_L1NORM | 1u << OP_FAKELN)
#define FAKELN_SIGMA 1.25f
enum { DIR_FWD = 0, DIR_BWD = 1, DIR_FWDBWD = 2, NDIRS };
static const char *const op_names[] = {"layernorm",    "rmsnorm",   "softmax",
                                       "log_softmax",  "cross_entropy", "sigmoid_attn",
                                       "batchnorm",    "groupnorm", "instancenorm",
                                       "powernorm",    "unifiednorm", "evonorm_b0",
                                       "evonorm_s0",   "layernorm_q8", "rmsnorm_q8",
                                       "pow2quant",    "crmsnorm",  "l1norm",
                                       "fakeln",
                                       "adamp",     "adamp_proj",
                                       "sgdp",         "sgdp_proj", "grpo"};
static const char *const layout_names[] = {"nchw", "nhwc"}; /* indexed by nk_layout */
static const char *const dir_names[] = {"fwd", "bwd", "fwdbwd"};
static const char *const algo_names[] = {"auto", "three_pass_reload", "three_pass_recompute",
                                         "two_pass", "online"};
#define NALGOS 5

static int is_rownorm(int op) {
  return op == OP_LAYERNORM || op == OP_RMSNORM || op == OP_CRMSNORM || op == OP_L1NORM ||
         op == OP_FAKELN;
}
/* the ops that take nk_norm_desc.lns_scale (--lns); FakeLN does not */
static int has_lns(int op) { return is_rownorm(op) && op != OP_FAKELN; }
static int is_softmax(int op) { return op == OP_SOFTMAX || op == OP_LOG_SOFTMAX; }
static int is_quant(int op) { return (QUANT_OPS >> op & 1) != 0; }
static int is_chnorm(int op) {
  return op == OP_BATCHNORM || op == OP_GROUPNORM || op == OP_INSTANCENORM;
}
#define CH_GROUPS 32 /* GroupNorm's groups in the bench (fewer when C is not a multiple) */
/* The research layers (PowerNorm, UN, EvoNorm): NxCxS shapes, not in the default run. */
static int is_resnorm(int op) { return op >= OP_POWERNORM && op <= OP_EVONORM_S0; }
static int is_tokennorm(int op) { return op == OP_POWERNORM || op == OP_UNIFIEDNORM; }
#define RESNORM_OPS                                                                              \
  (1u << OP_POWERNORM | 1u << OP_UNIFIEDNORM | 1u << OP_EVONORM_B0 | 1u << OP_EVONORM_S0)
#define PN_HEAD_DIM 64 /* PowerNorm's group scaling in the bench: groups of 64 channels */

/* Which directions an op has: cross-entropy runs forward (loss) and fused forward+backward. */
static int op_has_dir(int op, int dir) {
  if (op == OP_CROSS_ENTROPY) return dir != DIR_BWD;
  if (is_quant(op)) return dir == DIR_FWD;
  return dir != DIR_FWDBWD;
}
static const char *const dtype_names[] = {"f32", "bf16", "f16"}; /* indexed by nk_dtype */

typedef struct options {
  int json, full;
  unsigned op_mask, dir_mask, dtype_mask; /* bit i: op_names[i] / dir_names[i] / nk_dtype i */
  unsigned algo_mask;                     /* bit i: algo_names[i] (softmax forward) */
  int dtype_given, algo_given, op_given;
  float lns;                              /* --lns S: each row-norm case also with lns_scale S */
  size_t rows, cols, spatial;             /* --shape, or 0 */
  unsigned layout_mask;                   /* --layout: bit i = layout_names[i] */
  const char *shapes_file;
  size_t threads;                         /* --threads, or 0 */
  nk_isa isa;                             /* NK_ISA_AUTO unless --isa */
  long min_reps;
} options;

typedef struct shape {
  size_t rows, cols;   /* NxCxS shapes: rows = N, cols = C */
  size_t spatial;      /* S of an NxCxS shape (channel norms); 0 for RxC shapes */
  unsigned dtype_mask;
  unsigned op_mask;     /* the ops this shape runs (a shape line may name them) */
  unsigned layout_mask; /* NxCxS: bit i = layout_names[i] */
} shape;

typedef struct shape_list {
  shape s[MAX_SHAPES];
  size_t n;
} shape_list;

/* One thread count: its pool (NULL = serial), a context, and its copy bandwidths. */
typedef struct runner {
  size_t threads;
  nk_threadpool *pool;
  int own_pool;
  nk_context *ctx;
  double copy_gbps, copy_nt_gbps, read_gbps;
} runner;

static const char *default_shapes =
    "64x1024\n"        /* in cache */
    "4096x1024\n"      /* in cache (16 MiB f32; the LLC here is large) */
    "65536x4096 f32\n" /* out of cache: 1 GiB f32 input */
    "2048x128256 f32 cross_entropy\n" /* Llama-3 vocabulary, 1 GiB of f32 logits */
    "32x64x3136\n"     /* channel norms in cache: ResNet-50 stage 1 (56x56), 25 MiB f32 */
    "64x256x16384 f32\n" /* channel norms out of cache: 1 GiB f32 (128x128 maps) */;

static void usage(FILE *f) {
  fprintf(f,
          "usage: normkit info\n"
          "       normkit bench [--json] [--full] [--op NAME[,NAME]] [--direction fwd|bwd|fwdbwd]\n"
          "                     [--dtype f32|bf16|f16] [--algo NAME[,NAME]|all] [--shape RxC]\n"
          "                     [--shapes FILE]\n"
          "                     [--threads N] [--isa scalar|avx2|avx512] [--reps N]\n"
          "                     [--layout nchw|nhwc] [--lns S]\n"
          "       normkit bench --cuda [--json] [--quick] [--op ...] [--direction ...]\n"
          "                     [--dtype ...] [--shape RxC] [--reps N]\n"
          "       normkit help\n"
          "\n"
          "info   CPU features, ISA paths and the kernel each op and dtype runs.\n"
          "bench  times the ops against this machine's copy bandwidth (measured in the same run).\n"
          "  --json        stdout: one JSON line per case (progress goes to stderr)\n"
          "  --full        sweeps: cols 64..262144 (powers of 4) in and out of cache, f16 too,\n"
          "                thread counts 1, 2, 4, ... all\n"
          "  --op, --direction, --dtype   select (comma lists allowed: --dtype f32,bf16); ops:\n"
          "                layernorm rmsnorm softmax log_softmax cross_entropy sigmoid_attn\n"
          "                batchnorm groupnorm instancenorm (these on NxCxS shapes)\n"
          "                powernorm unifiednorm (NxCxS = batch x channels x sequence, nhwc)\n"
          "                evonorm_b0 evonorm_s0 (NxCxS): research layers, only run when named\n"
          "                adamp adamp_proj sgdp sgdp_proj grpo (only when named; RxC = shape[0]\n"
          "                x the rest, or groups x group size; with the scalar path alongside)\n"
          "                layernorm_q8 rmsnorm_q8 pow2quant (int8 outputs; only when named)\n"
          "                crmsnorm l1norm fakeln (research row norms: only with --op or --full)\n"
          "  --lns S       each row-norm case runs twice, plain and with LayerNorm Scaling\n"
          "                lns_scale = S (interleaved A/B; JSON key lns_scale)\n"
          "  --algo        softmax forward algorithms: auto three_pass_reload\n"
          "                three_pass_recompute two_pass online, or all (default auto;\n"
          "                --full: all)\n"
          "  --shape RxC   one shape (rows x cols; NxCxS for the channel norms) instead of the\n"
          "                defaults\n"
          "  --layout L    channel norms: nchw, nhwc or both (default both)\n"
          "  --shapes FILE shapes from a file: lines 'RxC [dtype ...] [op ...]' or\n"
          "                'NxCxS [dtype ...] [op ...] [nchw] [nhwc]', '#' comments\n"
          "                (bench/shapes/default.txt holds the defaults)\n"
          "  --threads N   one pool of N threads (default: 1 and all)\n"
          "  --isa NAME    force the kernel path (nk_context_set_isa)\n"
          "  --reps N      at least N timed calls per case (default 5)\n"
          "  --cuda        the CUDA backend on the GPU instead (builds with -DNK_CUDA=ON;\n"
          "                `normkit bench --cuda --help` lists its options and shapes)\n"
          "Default: every op and direction x f32, bf16 at 64x1024 and 4096x1024, plus\n"
          "65536x4096 f32 (1 GiB, out of cache) and cross_entropy at 2048x128256 f32;\n"
          "channel norms at 32x64x3136 (f32, bf16) and 64x256x16384 f32, nchw and nhwc;\n"
          "threads 1 and all.\n");
}

/* Parses a comma list of names into a bit mask. Returns 0 on an unknown name. */
static int parse_mask(const char *s, const char *const *names, int n, unsigned *mask) {
  *mask = 0;
  while (*s) {
    size_t len = strcspn(s, ",");
    int found = 0;
    for (int i = 0; i < n; i++)
      if (strlen(names[i]) == len && strncmp(s, names[i], len) == 0) *mask |= 1u << i, found = 1;
    if (!found || len == 0) return 0;
    s += len + (s[len] == ',');
  }
  return *mask != 0;
}

static int parse_size(const char *s, size_t *out) {
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s || *end != '\0' || v == 0 || s[0] == '-') return 0;
  *out = (size_t)v;
  return 1;
}

/* RxC, or NxCxS (spatial != NULL gets S, or 0 for RxC). */
static int parse_shape3(const char *s, size_t *rows, size_t *cols, size_t *spatial) {
  char buf[64];
  size_t r, c, sp = 0;
  if (snprintf(buf, sizeof buf, "%s", s) >= (int)sizeof buf) return 0;
  char *x = strchr(buf, 'x');
  if (x == NULL) return 0;
  *x = '\0';
  char *x2 = strchr(x + 1, 'x');
  if (x2) {
    if (spatial == NULL) return 0;
    *x2 = '\0';
    if (!parse_size(x2 + 1, &sp)) return 0;
  }
  if (!parse_size(buf, &r) || !parse_size(x + 1, &c)) return 0;
  if (r > SIZE_MAX / c / 8) return 0; /* keep every byte count representable */
  if (sp && r * c > SIZE_MAX / sp / 8) return 0;
  *rows = r;
  *cols = c;
  if (spatial) *spatial = sp;
  return 1;
}


static int parse_isa(const char *s, nk_isa *isa) {
  static const nk_isa isas[] = {NK_ISA_AUTO, NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++)
    if (strcmp(s, nk_isa_name(isas[i])) == 0) return *isa = isas[i], 1;
  return 0;
}

/* Handles one option that takes a value. Returns 0 if the value is bad. */
static int parse_value(options *o, const char *name, const char *v) {
  size_t n;
  if (strcmp(name, "--op") == 0) return o->op_given = 1, parse_mask(v, op_names, NOPS_ALL, &o->op_mask);
  if (strcmp(name, "--lns") == 0) {
    char *end;
    const double s = strtod(v, &end);
    return *end == '\0' && s > 0.0 && s < 1e30 ? (o->lns = (float)s, 1) : 0;
  }
  if (strcmp(name, "--direction") == 0) return parse_mask(v, dir_names, NDIRS, &o->dir_mask);
  if (strcmp(name, "--algo") == 0) {
    o->algo_given = 1;
    if (strcmp(v, "all") == 0) return o->algo_mask = (1u << NALGOS) - 1, 1;
    return parse_mask(v, algo_names, NALGOS, &o->algo_mask);
  }
  if (strcmp(name, "--dtype") == 0)
    return o->dtype_given = 1, parse_mask(v, dtype_names, 3, &o->dtype_mask);
  if (strcmp(name, "--shape") == 0) return parse_shape3(v, &o->rows, &o->cols, &o->spatial);
  if (strcmp(name, "--layout") == 0) return parse_mask(v, layout_names, 2, &o->layout_mask);
  if (strcmp(name, "--shapes") == 0) return o->shapes_file = v, 1;
  if (strcmp(name, "--threads") == 0) return parse_size(v, &o->threads) && o->threads <= 1024;
  if (strcmp(name, "--isa") == 0) return parse_isa(v, &o->isa);
  if (strcmp(name, "--reps") == 0)
    return parse_size(v, &n) && n <= MAX_REPS ? (o->min_reps = (long)n, 1) : 0;
  return 0;
}

static int is_value_option(const char *name) {
  static const char *const names[] = {"--op",     "--direction", "--dtype", "--shape", "--shapes",
                                      "--threads", "--isa",       "--reps",  "--algo",
                                      "--layout", "--lns"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(name, names[i]) == 0) return 1;
  return 0;
}

static int parse_bench_args(int argc, char **argv, options *o) {
  *o = (options){.op_mask = ((1u << NOPS) - 1) & ~RESNORM_OPS & ~QUANT_OPS, .dir_mask = (1u << NDIRS) - 1, .dtype_mask = 3,
                 .algo_mask = 1, .isa = NK_ISA_AUTO, .min_reps = 5, .layout_mask = 3};
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *eq = strchr(a, '=');
    char name[32];
    if (strcmp(a, "--json") == 0) { o->json = 1; continue; }
    if (strcmp(a, "--full") == 0) { o->full = 1; continue; }
    size_t len = eq ? (size_t)(eq - a) : strlen(a);
    if (len >= sizeof name) len = sizeof name - 1;
    memcpy(name, a, len);
    name[len] = '\0';
    if (!is_value_option(name)) return fprintf(stderr, "normkit: unknown option %s\n", a), 0;
    const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (v == NULL || !parse_value(o, name, v)) {
      fprintf(stderr, "normkit: bad or missing value for %s\n", name);
      return 0;
    }
  }
  if (o->full && !o->dtype_given) o->dtype_mask = 7;
  if (o->full && !o->algo_given) o->algo_mask = (1u << NALGOS) - 1;
  if (!o->full && !o->op_given) o->op_mask &= ~RESEARCH_OPS;
  return 1;
}

static void add_shape3(shape_list *l, size_t rows, size_t cols, size_t spatial, unsigned mask,
                       unsigned ops, unsigned layouts) {
  if (mask == 0 || ops == 0 || l->n == MAX_SHAPES) return;
  l->s[l->n++] = (shape){rows, cols, spatial, mask, ops, layouts ? layouts : 3u};
}

static void add_shape(shape_list *l, size_t rows, size_t cols, unsigned mask, unsigned ops) {
  add_shape3(l, rows, cols, 0, mask, ops, 0);
}

/* Reads 'RxC [dtype ...] [op ...]' lines; a line's dtypes are intersected with `sel`; a line
 * that names ops runs only those. */
static int parse_shape_text(const char *text, unsigned sel, shape_list *l) {
  char line[256];
  while (*text) {
    size_t len = strcspn(text, "\n");
    snprintf(line, sizeof line, "%.*s", (int)(len < 255 ? len : 255), text);
    text += len + (text[len] == '\n');
    line[strcspn(line, "#")] = '\0';
    char *tok = strtok(line, " \t\r"), *dt;
    size_t rows, cols, spatial;
    unsigned mask = 0, ops = 0, layouts = 0, m;
    if (tok == NULL) continue;
    if (!parse_shape3(tok, &rows, &cols, &spatial))
      return fprintf(stderr, "normkit: bad shape %s\n", tok), 0;
    while ((dt = strtok(NULL, " \t\r")) != NULL) {
      if (parse_mask(dt, op_names, NOPS, &m)) {
        ops |= m;
        continue;
      }
      if (parse_mask(dt, layout_names, 2, &m)) {
        layouts |= m;
        continue;
      }
      if (!parse_mask(dt, dtype_names, 3, &m))
        return fprintf(stderr, "normkit: bad dtype or op %s\n", dt), 0;
      mask |= m;
    }
    add_shape3(l, rows, cols, spatial, mask ? mask & sel : sel, ops ? ops : (1u << NOPS) - 1,
               layouts);
  }
  return 1;
}

static int read_shapes_file(const char *path, unsigned sel, shape_list *l) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return fprintf(stderr, "normkit: cannot open %s\n", path), 0;
  static char text[1 << 16];
  size_t n = fread(text, 1, sizeof text - 1, f);
  text[n] = '\0';
  fclose(f);
  return parse_shape_text(text, sel, l);
}

/* --full: cols 64..262144 (powers of 4) at 2^20 elements (in cache) and at 1 GiB of input. */
static void add_sweeps(shape_list *l, unsigned sel) {
  const unsigned all = (1u << NOPS) - 1;
  for (size_t c = 64; c <= 262144; c *= 4) add_shape(l, ((size_t)1 << 20) / c, c, sel, all);
  for (size_t c = 64; c <= 262144; c *= 4) {
    add_shape(l, (GIB / 4) / c, c, sel & 1u, all); /* f32 */
    add_shape(l, (GIB / 2) / c, c, sel & (1u << NK_DTYPE_BF16 | 1u << NK_DTYPE_F16), all);
  }
  /* Softmax and cross-entropy rows up to 2^20 (the two-pass study): 1 GiB of f32. */
  const unsigned sm = 1u << OP_SOFTMAX | 1u << OP_LOG_SOFTMAX | 1u << OP_CROSS_ENTROPY;
  for (size_t c = (size_t)1 << 20; c >= 1024; c /= 4) add_shape(l, (GIB / 4) / c, c, sel & 1u, sm);
  add_shape(l, 2048, 50257, sel, 1u << OP_CROSS_ENTROPY);  /* GPT-2 vocabulary */
  add_shape(l, 2048, 128256, sel, 1u << OP_CROSS_ENTROPY); /* Llama-3 vocabulary */
}

static int build_shapes(const options *o, shape_list *l) {
  l->n = 0;
  if (o->rows)
    return add_shape3(l, o->rows, o->cols, o->spatial, o->dtype_mask, (1u << NOPS) - 1, 0), 1;
  if (o->shapes_file) return read_shapes_file(o->shapes_file, o->dtype_mask, l);
  if (!parse_shape_text(default_shapes, o->dtype_mask, l)) return 0;
  if (o->full) add_sweeps(l, o->dtype_mask);
  return 1;
}

static int report_status(nk_status st, nk_context *ctx, const char *what) {
  if (st == NK_STATUS_OK) return 1;
  fprintf(stderr, "normkit: %s: %s: %s\n", what, nk_status_string(st), nk_context_message(ctx));
  return 0;
}

/* Thread counts: --threads N, or 1 and all (--full: 1, 2, 4, ... and all). */
static size_t thread_counts(const options *o, size_t all, size_t *out) {
  size_t n = 0;
  if (o->threads) {
    out[n++] = o->threads;
    return n;
  }
  for (size_t t = 1; t < all && n < MAX_THREAD_COUNTS - 1; t *= 2) {
    out[n++] = t;
    if (!o->full) break;
  }
  out[n++] = all;
  return n;
}

static int runner_create(runner *r, size_t threads, nk_threadpool *pool_all, nk_isa isa) {
  *r = (runner){.threads = threads};
  if (threads > 1 && threads == nk_threadpool_size(pool_all)) {
    r->pool = pool_all;
  } else if (threads > 1) {
    if (!report_status(nk_threadpool_create(threads, &r->pool), NULL, "threadpool_create")) return 0;
    r->own_pool = 1;
  }
  if (!report_status(nk_context_create(&r->ctx), NULL, "context_create")) return 0;
  nk_context_set_threadpool(r->ctx, r->pool);
  if (isa != NK_ISA_AUTO && !report_status(nk_context_set_isa(r->ctx, isa), r->ctx, nk_isa_name(isa)))
    return 0;
  return 1;
}

static void runner_destroy(runner *r) {
  nk_context_destroy(r->ctx);
  if (r->own_pool) nk_threadpool_destroy(r->pool);
}

/* Measures both copies for every runner on one pair of 1 GiB buffers. */
static void measure_copies(runner *runs, size_t n, nk_threadpool *pool_all, FILE *out) {
  const char *nt_name;
  copy_fn nt = select_nt_copy(&nt_name);
  char *src = xalloc(COPY_BYTES), *dst = xalloc(COPY_BYTES);
  set_bytes(pool_all, src, 0x5a, COPY_BYTES);
  set_bytes(pool_all, dst, 0, COPY_BYTES);
  anchor.src = src;
  anchor.dst = dst;
  anchor.nt = nt;
  anchor.read = select_read();
  fprintf(out, "copy bandwidth: %zu MiB source + %zu MiB destination, median of %d, "
               "bytes = read + write; non-temporal stores: %s\n",
          COPY_BYTES >> 20, COPY_BYTES >> 20, COPY_REPS, nt_name);
  fprintf(out, "  threads   copy GB/s   nt-copy GB/s   read GB/s (read-only stream, for reference)\n");
  for (size_t i = 0; i < n; i++) {
    runs[i].copy_gbps = measure_copy(runs[i].pool, copy_regular, dst, src, COPY_BYTES, COPY_REPS);
    runs[i].copy_nt_gbps = measure_copy(runs[i].pool, nt, dst, src, COPY_BYTES, COPY_REPS);
    runs[i].read_gbps =
        measure_copy(runs[i].pool, anchor.read, dst, src, COPY_BYTES, COPY_REPS) / 2.0;
    fprintf(out, "  %7zu   %9.2f   %12.2f   %9.2f\n", runs[i].threads, runs[i].copy_gbps,
            runs[i].copy_nt_gbps, runs[i].read_gbps);
    fflush(out);
  }
}

static void free_anchor(void) {
  free(anchor.src);
  free(anchor.dst);
}

/* ------------------------------------------------------------------------------------------ */
/* Work sets and cases                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* The buffers of one shape and dtype, shared by its cases (x and dy are never overwritten). */
typedef struct workset {
  size_t rows, cols, spatial; /* NxCxS: rows = N, cols = C, spatial = S; else spatial = 0 */
  float *run_mean, *run_var;  /* channel norms: C floats each */
  nk_dtype dtype;
  void *x, *y, *dy, *dx;                         /* rows x cols of dtype; dy, dx may be NULL */
  float *gamma, *beta, *mean, *rstd, *dgamma, *dbeta; /* param_dtype f32 */
  double *gamma_d, *beta_d;                      /* the same parameters for the reference */
  int64_t *target;                               /* cross-entropy: rows classes */
  float *row_loss;                               /* cross-entropy validation: rows losses */
  int8_t *q, *qexp;                              /* quantizing ops: rows x cols, rows x groups */
  float *qscale;                                 /* rows per-row scales */
} workset;

static float *param_alloc(size_t n) { return xalloc(n * sizeof(float)); }

static void workset_create(workset *w, const shape *s, nk_dtype dt, int with_bwd, int with_q,
                           nk_threadpool *pool) {
  const size_t sp = s->spatial ? s->spatial : 1;
  size_t n = s->rows * s->cols * sp, bytes = n * nk_dtype_size(dt);
  *w = (workset){.rows = s->rows, .cols = s->cols, .spatial = s->spatial, .dtype = dt};
  w->x = xalloc(bytes);
  w->y = xalloc(bytes);
  fill_normal(pool, w->x, dt, n, 1, 0.25, 1.0);
  set_bytes(pool, w->y, 0, bytes);
  if (with_bwd) {
    w->dy = xalloc(bytes);
    w->dx = xalloc(bytes);
    fill_normal(pool, w->dy, dt, n, 2, 0.0, 1.0);
    set_bytes(pool, w->dx, 0, bytes);
  }
  w->gamma = param_alloc(s->cols), w->beta = param_alloc(s->cols);
  w->dgamma = param_alloc(s->cols), w->dbeta = param_alloc(s->cols);
  const size_t nstats = s->spatial ? s->rows * s->cols : s->rows; /* N*C for channel norms */
  w->mean = param_alloc(nstats), w->rstd = param_alloc(nstats);
  w->run_mean = param_alloc(s->cols), w->run_var = param_alloc(s->cols);
  for (size_t c = 0; c < s->cols; c++) w->run_mean[c] = 0.0f, w->run_var[c] = 1.0f;
  fill_normal(NULL, w->gamma, NK_DTYPE_F32, s->cols, 3, 1.0, 0.5);
  fill_normal(NULL, w->beta, NK_DTYPE_F32, s->cols, 4, 0.0, 0.5);
  memset(w->dgamma, 0, s->cols * sizeof(float));
  memset(w->dbeta, 0, s->cols * sizeof(float));
  memset(w->mean, 0, nstats * sizeof(float));
  memset(w->rstd, 0, nstats * sizeof(float));
  w->gamma_d = xalloc(s->cols * sizeof(double));
  w->beta_d = xalloc(s->cols * sizeof(double));
  w->target = xalloc(s->rows * sizeof(int64_t));
  w->row_loss = param_alloc(s->rows);
  uint64_t seed = 5;
  for (size_t i = 0; i < s->rows; i++) w->target[i] = (int64_t)(splitmix64(&seed) % s->cols);
  load_row(w->gamma, NK_DTYPE_F32, 0, s->cols, w->gamma_d);
  load_row(w->beta, NK_DTYPE_F32, 0, s->cols, w->beta_d);
  if (with_q) {
    const size_t ng = (s->cols + P2_GROUP - 1) / P2_GROUP;
    w->q = xalloc(s->rows * s->cols);
    w->qexp = xalloc(s->rows * ng);
    w->qscale = param_alloc(s->rows);
    set_bytes(pool, w->q, 0, s->rows * s->cols);
    memset(w->qexp, 0, s->rows * ng);
    memset(w->qscale, 0, s->rows * sizeof(float));
  }
}

static void workset_destroy(workset *w) {
  void *bufs[] = {w->x,      w->y,      w->dy,     w->dx,      w->gamma,
                  w->beta,   w->mean,   w->rstd,   w->dgamma,  w->dbeta,
                  w->gamma_d, w->beta_d, w->target, w->row_loss, w->run_mean, w->run_var,
                  w->q,      w->qexp,   w->qscale};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

typedef struct bench_case {
  int op, dir;
  float lns; /* nk_norm_desc.lns_scale of a row-norm case (0 = off) */
  nk_softmax_algo algo; /* softmax forward */
  const workset *w;
  const runner *run;
  nk_norm_desc desc;
  nk_softmax_desc sdesc;
  nk_cross_entropy_desc xdesc;
  nk_chnorm_desc cdesc; /* channel norms */
  nk_pow2quant_desc qdesc; /* pow2quant */
  nk_layout layout;
  float loss;       /* cross-entropy: the mean loss */
  void *ws;         /* backward workspace (allocated outside the timed region) */
  size_t ws_size;
  /* research layers: descriptors, state and saved statistics (one allocation, rn_buf) */
  nk_powernorm_desc pdesc;
  nk_unifiednorm_desc udesc;
  nk_powernorm_state pn;
  nk_unifiednorm_state un;
  float *rn_buf, *rn_save, *rn_save2, *rn_v;
} bench_case;

typedef struct case_result {
  double copy_gbps, copy_nt_gbps; /* the anchor this case is compared with */
  double read_gbps;               /* read-only stream (reported, not part of the fraction) */
  double median_s, min_s, max_err;
  long reps;
  size_t checked_rows;
} case_result;

static nk_op case_nk_op(const bench_case *c) {
  switch (c->op) {
    case OP_LAYERNORM: return c->dir == DIR_FWD ? NK_OP_LAYERNORM_FWD : NK_OP_LAYERNORM_BWD;
    case OP_RMSNORM: return c->dir == DIR_FWD ? NK_OP_RMSNORM_FWD : NK_OP_RMSNORM_BWD;
    case OP_CRMSNORM: return c->dir == DIR_FWD ? NK_OP_CRMSNORM_FWD : NK_OP_CRMSNORM_BWD;
    case OP_L1NORM: return c->dir == DIR_FWD ? NK_OP_L1NORM_FWD : NK_OP_L1NORM_BWD;
    case OP_FAKELN: return c->dir == DIR_FWD ? NK_OP_LAYERNORM_FWD : NK_OP_LAYERNORM_BWD;
    case OP_CROSS_ENTROPY: return NK_OP_CROSS_ENTROPY;
    case OP_SIGMOID: return c->dir == DIR_FWD ? NK_OP_SIGMOID_ATTN_FWD : NK_OP_SIGMOID_ATTN_BWD;
    case OP_BATCHNORM: return c->dir == DIR_FWD ? NK_OP_BATCHNORM_FWD : NK_OP_BATCHNORM_BWD;
    case OP_GROUPNORM: return c->dir == DIR_FWD ? NK_OP_GROUPNORM_FWD : NK_OP_GROUPNORM_BWD;
    case OP_INSTANCENORM:
      return c->dir == DIR_FWD ? NK_OP_INSTANCENORM_FWD : NK_OP_INSTANCENORM_BWD;
    default: return c->dir == DIR_FWD ? NK_OP_SOFTMAX_FWD : NK_OP_SOFTMAX_BWD;
  }
}

/* The softmax family: forward (y from x), backward (dx from y, dy), cross-entropy. */
static nk_status run_softmax_family(const bench_case *c, int dir) {
  const workset *w = c->w;
  nk_context *ctx = c->run->ctx;
  switch (c->op) {
    case OP_CROSS_ENTROPY:
      return nk_cross_entropy(ctx, &c->xdesc, w->x, w->target, (float *)&c->loss,
                              dir == DIR_FWDBWD ? w->dx : NULL, NULL, c->ws, c->ws_size);
    case OP_SIGMOID:
      return dir == DIR_FWD ? nk_sigmoid_attn_fwd(ctx, &c->sdesc, w->x, NULL, w->y)
                            : nk_sigmoid_attn_bwd(ctx, &c->sdesc, w->y, w->dy, w->dx);
    default:
      return dir == DIR_FWD ? nk_softmax_fwd(ctx, &c->sdesc, w->x, NULL, NULL, w->y, NULL)
                            : nk_softmax_bwd(ctx, &c->sdesc, w->y, w->dy, NULL, NULL, w->dx, NULL);
  }
}

/* Channel norms: BatchNorm training forward/backward (running statistics updated), GroupNorm
 * with CH_GROUPS groups, InstanceNorm with instance statistics (PyTorch's defaults). */
static nk_status run_chnorm(const bench_case *c, int dir) {
  const workset *w = c->w;
  nk_context *ctx = c->run->ctx;
  const nk_chnorm_desc *d = &c->cdesc;
  switch (c->op) {
    case OP_BATCHNORM:
      return dir == DIR_FWD
                 ? nk_batchnorm_fwd(ctx, d, w->x, NULL, w->gamma, w->beta, w->run_mean,
                                    w->run_var, NULL, w->y, w->mean, w->rstd, c->ws, c->ws_size)
                 : nk_batchnorm_bwd(ctx, d, w->x, NULL, w->gamma, w->mean, w->rstd, w->dy,
                                    w->dx, NULL, w->dgamma, w->dbeta, c->ws, c->ws_size);
    case OP_GROUPNORM:
      return dir == DIR_FWD ? nk_groupnorm_fwd(ctx, d, w->x, w->gamma, w->beta, w->y, w->mean,
                                               w->rstd)
                            : nk_groupnorm_bwd(ctx, d, w->x, w->gamma, w->mean, w->rstd, w->dy,
                                               w->dx, w->dgamma, w->dbeta, c->ws, c->ws_size);
    default:
      return dir == DIR_FWD ? nk_instancenorm_fwd(ctx, d, w->x, w->gamma, w->beta, NULL, NULL,
                                                  w->y, w->mean, w->rstd)
                            : nk_instancenorm_bwd(ctx, d, 0, w->x, w->gamma, w->mean, w->rstd,
                                                  w->dy, w->dx, w->dgamma, w->dbeta, c->ws,
                                                  c->ws_size);
  }
}

static nk_status run_resnorm(const bench_case *c, int dir);
static nk_status run_quant(const bench_case *c) {
  const workset *w = c->w;
  nk_context *ctx = c->run->ctx;
  switch (c->op) {
    case OP_LAYERNORM_Q8:
      return nk_layernorm_fwd_q8(ctx, &c->desc, NULL, w->x, NULL, w->gamma, w->beta, w->q,
                                 w->qscale, NULL, NULL, w->mean, w->rstd);
    case OP_RMSNORM_Q8:
      return nk_rmsnorm_fwd_q8(ctx, &c->desc, NULL, w->x, NULL, w->gamma, NULL, w->q, w->qscale,
                               NULL, NULL, w->rstd);
    default: return nk_pow2quant_quantize(ctx, &c->qdesc, w->x, w->q, w->qexp);
  }
}


static nk_status run_fwd(const bench_case *c) {
  const workset *w = c->w;
  if (is_resnorm(c->op)) return run_resnorm(c, DIR_FWD);
  if (is_quant(c->op)) return run_quant(c);
  if (is_chnorm(c->op)) return run_chnorm(c, DIR_FWD);
  if (!is_rownorm(c->op)) return run_softmax_family(c, DIR_FWD);
  if (c->op == OP_RMSNORM)
    return nk_rmsnorm_fwd(c->run->ctx, &c->desc, w->x, NULL, w->gamma, NULL, w->y, NULL, w->rstd);
  if (c->op == OP_CRMSNORM) return nk_crmsnorm_fwd(c->run->ctx, &c->desc, w->x, w->y, w->rstd);
  if (c->op == OP_L1NORM)
    return nk_l1norm_fwd(c->run->ctx, &c->desc, w->x, w->gamma, w->beta, w->y, w->mean, w->rstd);
  if (c->op == OP_FAKELN)
    return nk_fakeln_fwd(c->run->ctx, &c->desc, FAKELN_SIGMA, w->x, NULL, w->gamma, w->beta, w->y,
                         NULL, w->mean);
  return nk_layernorm_fwd(c->run->ctx, &c->desc, w->x, NULL, w->gamma, w->beta, w->y, NULL,
                          w->mean, w->rstd);
}

static nk_status run_bwd(const bench_case *c) {
  const workset *w = c->w;
  if (is_resnorm(c->op)) return run_resnorm(c, DIR_BWD);
  if (is_chnorm(c->op)) return run_chnorm(c, DIR_BWD);
  if (!is_rownorm(c->op)) return run_softmax_family(c, c->dir);
  if (c->op == OP_RMSNORM)
    return nk_rmsnorm_bwd(c->run->ctx, &c->desc, w->x, w->gamma, NULL, w->rstd, w->dy, NULL,
                          w->dx, w->dgamma, NULL, c->ws, c->ws_size);
  if (c->op == OP_CRMSNORM)
    return nk_crmsnorm_bwd(c->run->ctx, &c->desc, w->x, w->rstd, w->dy, NULL, w->dx);
  if (c->op == OP_L1NORM)
    return nk_l1norm_bwd(c->run->ctx, &c->desc, w->x, w->gamma, w->mean, w->rstd, w->dy, NULL,
                         w->dx, w->dgamma, w->dbeta, c->ws, c->ws_size);
  if (c->op == OP_FAKELN)
    return nk_fakeln_bwd(c->run->ctx, &c->desc, FAKELN_SIGMA, w->x, w->gamma, NULL, w->mean,
                         w->dy, NULL, w->dx, w->dgamma, w->dbeta, c->ws, c->ws_size);
  return nk_layernorm_bwd(c->run->ctx, &c->desc, w->x, w->gamma, NULL, w->mean, w->rstd, w->dy,
                          NULL, w->dx, w->dgamma, w->dbeta, c->ws, c->ws_size);
}

static nk_status run_case(const bench_case *c) {
  return c->dir == DIR_FWD ? run_fwd(c) : run_bwd(c);
}

/* Minimal bytes: each input read once, each output written once. Parameters are f32.
 *   fwd: x, gamma (+ beta) read; y, rstd (+ mean) written.
 *   bwd: x, dy, gamma, rstd (+ mean) read; dx, dgamma (+ dbeta) written. */
static double case_bytes(const bench_case *c) {
  double mat = (double)c->w->rows * (double)c->w->cols * (double)nk_dtype_size(c->w->dtype);
  if (is_resnorm(c->op)) {
    /* x -> y (fwd); x, dy -> dx (bwd); C-sized parameters and state counted once each */
    mat *= (double)c->w->spatial;
    const double C4 = 4.0 * (double)c->w->cols;
    return c->dir == DIR_FWD ? 2 * mat + 4 * C4 : 3 * mat + 6 * C4;
  }
  if (is_chnorm(c->op)) {
    /* channel norms: x -> y (fwd); x, dy -> dx (bwd); parameters and statistics (C or N*C
     * floats) counted once each */
    const double stats = 4.0 * (c->op == OP_BATCHNORM ? (double)c->w->cols
                                                      : (double)c->w->rows * (double)c->w->cols);
    mat *= (double)c->w->spatial;
    return c->dir == DIR_FWD ? 2 * mat + 2 * 4.0 * (double)c->w->cols + 2 * stats
                             : 3 * mat + 3 * 4.0 * (double)c->w->cols + 2 * stats;
  }
  double per_col = 4.0 * (double)c->w->cols, per_row = 4.0 * (double)c->w->rows;
  double ln = c->op == OP_LAYERNORM || c->op == OP_L1NORM; /* L1: gamma, beta, mean too */
  /* quantizing ops: x (+ gamma, beta) read; int8 q and the scales (+ mean, rstd) written */
  const double qmat = (double)c->w->rows * (double)c->w->cols;
  if (c->op == OP_LAYERNORM_Q8) return mat + 2 * per_col + qmat + 3 * per_row;
  if (c->op == OP_RMSNORM_Q8) return mat + per_col + qmat + 2 * per_row;
  if (c->op == OP_POW2QUANT)
    return mat + qmat + (double)c->w->rows * (double)((c->w->cols + P2_GROUP - 1) / P2_GROUP);
  if (c->op == OP_CRMSNORM) /* no parameters: x -> y, rstd; x, dy, rstd -> dx */
    return (c->dir == DIR_FWD ? 2 * mat : 3 * mat) + per_row;
  if (c->op == OP_FAKELN) /* fwd: x, gamma, beta -> y, mean; bwd: x, dy, gamma, mean -> dx,
                             dgamma, dbeta (no rstd) */
    return c->dir == DIR_FWD ? 2 * mat + 2 * per_col + per_row : 3 * mat + 3 * per_col + per_row;
  /* softmax family: fwd x -> y; bwd y, dy -> dx; cross-entropy x, targets -> loss (+ dx) */
  if (c->op == OP_CROSS_ENTROPY) return mat * (1 + (c->dir == DIR_FWDBWD)) + 2 * per_row + 4;
  if (!is_rownorm(c->op)) return c->dir == DIR_FWD ? 2 * mat : 3 * mat;
  if (c->dir == DIR_FWD) return 2 * mat + per_col * (1 + ln) + per_row * (1 + ln);
  return 3 * mat + per_col + per_row * (1 + ln) + per_col * (1 + ln);
}

/* ------------------------------------------------------------------------------------------ */
/* Validation against the float64 reference                                                   */
/* ------------------------------------------------------------------------------------------ */

typedef struct validation {
  int ok;
  double max_err; /* max |error| / max |reference| of the row, over the checked outputs */
  const char *label;
} validation;

static double ulp_at(double m, int mantissa_bits) {
  return m > 0 ? ldexp(1.0, ilogb(m) - mantissa_bits) : 0.0;
}

/* Bound on |output - reference| for a row whose largest |reference| is rowmax: f32 2e-6
 * (forward) or 1e-4 (backward) of rowmax; bf16/f16 2 (forward) or 3 (backward) ulps of it. */
static double output_bound(nk_dtype dt, int bwd, double rowmax) {
  switch (dt) {
    case NK_DTYPE_F32: return (bwd ? 1e-4 : 2e-6) * rowmax;
    case NK_DTYPE_BF16: return (bwd ? 3 : 2) * ulp_at(rowmax, 7);
    case NK_DTYPE_F16: return (bwd ? 3 : 2) * ulp_at(rowmax, 10);
  }
  return 0.0;
}

static void fail(validation *v, const char *what, size_t index, double got, double ref,
                 double bound) {
  if (v->ok)
    fprintf(stderr,
            "normkit: VALIDATION FAILED %s: %s[%zu] = %.9g, reference %.9g, |error| %.3g > "
            "bound %.3g\n",
            v->label, what, index, got, ref, fabs(got - ref), bound);
  v->ok = 0;
}

static void check_row(validation *v, const char *what, size_t row, const double *ref,
                      const void *got, nk_dtype dt, size_t cols, int bwd) {
  double m = 0.0;
  for (size_t j = 0; j < cols; j++) m = fmax(m, fabs(ref[j]));
  double bound = output_bound(dt, bwd, m);
  for (size_t j = 0; j < cols; j++) {
    double g = load_elem(got, dt, row * cols + j), e = fabs(g - ref[j]);
    if (m > 0 && e / m > v->max_err) v->max_err = e / m;
    if (!(e <= bound)) fail(v, what, row * cols + j, g, ref[j], bound);
  }
}

static void check_value(validation *v, const char *what, size_t i, double got, double ref,
                        double bound) {
  if (!(fabs(got - ref) <= bound)) fail(v, what, i, got, ref, bound);
}

static size_t sample_count(size_t rows) { return rows < SAMPLE_ROWS ? rows : SAMPLE_ROWS; }

/* The k-th of n validated rows, evenly spread and including the first and the last. */
static size_t sample_row(size_t k, size_t n, size_t rows) {
  return n > 1 ? (size_t)((double)k * (double)(rows - 1) / (double)(n - 1)) : 0;
}

static void validate_fwd(const bench_case *c, validation *v, size_t *checked) {
  const workset *w = c->w;
  size_t cols = w->cols, n = sample_count(w->rows);
  double *h = xalloc(cols * sizeof(double)), *ref = xalloc(cols * sizeof(double));
  double eps = c->desc.eps;
  for (size_t k = 0; k < n; k++) {
    size_t i = sample_row(k, n, w->rows);
    double mu = 0.0, rs = 0.0;
    load_row(w->x, w->dtype, i * cols, cols, h);
    const double lns = c->desc.lns_scale;
    if (c->op == OP_RMSNORM)
      nk_ref_rmsnorm_fwd(1, cols, h, w->gamma_d, NULL, 0, eps, ref, &rs);
    else if (c->op == OP_CRMSNORM)
      nk_ref_crmsnorm_fwd(1, cols, h, eps, lns, ref, &rs);
    else if (c->op == OP_L1NORM)
      nk_ref_l1norm_fwd(1, cols, h, w->gamma_d, w->beta_d, 0, eps, lns, ref, &mu, &rs);
    else if (c->op == OP_FAKELN)
      nk_ref_fakeln_fwd(1, cols, h, FAKELN_SIGMA, w->gamma_d, w->beta_d, 0, ref, &mu);
    else
      nk_ref_layernorm_fwd(1, cols, h, w->gamma_d, w->beta_d, 0, eps, ref, &mu, &rs);
    if (lns != 0.0 && (c->op == OP_RMSNORM || c->op == OP_LAYERNORM))
      for (size_t j = 0; j < cols; j++) ref[j] *= lns; /* LayerNorm Scaling: y = s * Norm(h) */
    check_row(v, "y", i, ref, w->y, w->dtype, cols, 0);
    if (c->op == OP_FAKELN) { /* no rstd; the mean within 1e-6 of the row's std */
      check_value(v, "mean", i, w->mean[i], mu, 1e-6 * (fabs(mu) + nk_ref_fakeln_row_std(cols, h, 0.0)));
      continue;
    }
    check_value(v, "rstd", i, w->rstd[i], rs, 1e-6 * rs);
    if (c->op == OP_LAYERNORM || c->op == OP_L1NORM)
      check_value(v, "mean", i, w->mean[i], mu, 1e-6 * (fabs(mu) + 1 / rs));
  }
  *checked = n;
  free(h);
  free(ref);
}

/* Quantizing ops: q within one step of quantizing the float64 reference output (the per-row
 * scale within 4e-6); pow2quant exactly the formula. max_err: the largest |q - q_ref|. */
static void validate_quant(const bench_case *c, validation *v, size_t *checked) {
  const workset *w = c->w;
  size_t cols = w->cols, n = sample_count(w->rows), ng = (cols + P2_GROUP - 1) / P2_GROUP;
  double *h = xalloc(cols * sizeof(double)), *ref = xalloc(cols * sizeof(double));
  double *qr = xalloc(cols * sizeof(double));
  int *er = xalloc(ng * sizeof(int));
  for (size_t k = 0; k < n; k++) {
    size_t i = sample_row(k, n, w->rows);
    load_row(w->x, w->dtype, i * cols, cols, h);
    if (c->op == OP_POW2QUANT) {
      nk_ref_pow2_quantize(cols, h, P2_GROUP, 127, qr, er);
      for (size_t g = 0; g < ng; g++)
        check_value(v, "exps", i * ng + g, w->qexp[i * ng + g], er[g], 0.0);
      for (size_t j = 0; j < cols; j++) check_value(v, "q", i * cols + j, w->q[i * cols + j], qr[j], 0.0);
      continue;
    }
    double mu, rs;
    if (c->op == OP_RMSNORM_Q8) nk_ref_rmsnorm_fwd(1, cols, h, w->gamma_d, NULL, 0, c->desc.eps, ref, &rs);
    else nk_ref_layernorm_fwd(1, cols, h, w->gamma_d, w->beta_d, 0, c->desc.eps, ref, &mu, &rs);
    const double sref = nk_ref_q8_row(cols, ref, qr);
    check_value(v, "scale", i, w->qscale[i], sref, 4e-6 * sref);
    for (size_t j = 0; j < cols; j++) {
      const double e = fabs((double)w->q[i * cols + j] - qr[j]);
      if (e > v->max_err) v->max_err = e;
      check_value(v, "q", i * cols + j, w->q[i * cols + j], qr[j], 1.0);
    }
  }
  *checked = n;
  free(h), free(ref), free(qr), free(er);
}

/* Reference backward of row i: dx into dx, this row's dgamma/dbeta terms into dg/db. */
static void ref_bwd_row(const bench_case *c, size_t i, double *h, double *dy, double *dx,
                        double *dg, double *db) {
  const workset *w = c->w;
  load_row(w->x, w->dtype, i * w->cols, w->cols, h);
  load_row(w->dy, w->dtype, i * w->cols, w->cols, dy);
  const double lns = c->desc.lns_scale;
  if (c->op == OP_CRMSNORM) {
    nk_ref_crmsnorm_bwd(1, w->cols, h, c->desc.eps, lns, dy, dx);
    memset(dg, 0, w->cols * sizeof(double));
    memset(db, 0, w->cols * sizeof(double));
    return;
  }
  if (c->op == OP_L1NORM) {
    nk_ref_l1norm_bwd(1, w->cols, h, w->gamma_d, 0, c->desc.eps, lns, dy, dx, dg, db);
    return;
  }
  if (c->op == OP_FAKELN) { /* (the reference adds to dg, db) */
    memset(dg, 0, w->cols * sizeof(double));
    memset(db, 0, w->cols * sizeof(double));
    nk_ref_fakeln_bwd(1, w->cols, h, FAKELN_SIGMA, w->gamma_d, 0, dy, NULL, dx, dg, db);
    return;
  }
  if (lns != 0.0) /* LayerNorm Scaling: the backward of s * Norm(h) sees s * dy */
    for (size_t j = 0; j < w->cols; j++) dy[j] *= lns;
  if (c->op == OP_RMSNORM)
    nk_ref_rmsnorm_bwd(1, w->cols, h, w->gamma_d, 0, c->desc.eps, dy, dx, dg, db);
  else
    nk_ref_layernorm_bwd(1, w->cols, h, w->gamma_d, 0, c->desc.eps, dy, dx, dg, db);
}

/* dgamma (and LayerNorm's dbeta) over all rows; bound 1e-5 of the column's sum of |terms|. */
static void check_param_grads(const bench_case *c, validation *v) {
  const workset *w = c->w;
  size_t cols = w->cols;
  double *t = xalloc(9 * cols * sizeof(double));
  double *h = t, *dy = t + cols, *dx = t + 2 * cols, *dg = t + 3 * cols, *db = t + 4 * cols;
  double *sum_g = t + 5 * cols, *abs_g = t + 6 * cols, *sum_b = t + 7 * cols, *abs_b = t + 8 * cols;
  memset(sum_g, 0, 4 * cols * sizeof(double));
  for (size_t i = 0; i < w->rows; i++) {
    ref_bwd_row(c, i, h, dy, dx, dg, db);
    for (size_t j = 0; j < cols; j++) {
      sum_g[j] += dg[j], abs_g[j] += fabs(dg[j]);
      sum_b[j] += db[j], abs_b[j] += fabs(db[j]);
    }
  }
  for (size_t j = 0; j < cols && c->op != OP_CRMSNORM; j++) {
    check_value(v, "dgamma", j, w->dgamma[j], sum_g[j], 1e-5 * abs_g[j]);
    if (c->op == OP_LAYERNORM || c->op == OP_L1NORM || c->op == OP_FAKELN)
      check_value(v, "dbeta", j, w->dbeta[j], sum_b[j], 1e-5 * abs_b[j]);
  }
  free(t);
}

static void validate_bwd(const bench_case *c, validation *v, size_t *checked) {
  const workset *w = c->w;
  size_t cols = w->cols, n = sample_count(w->rows);
  double *t = xalloc(5 * cols * sizeof(double));
  for (size_t k = 0; k < n; k++) {
    size_t i = sample_row(k, n, w->rows);
    ref_bwd_row(c, i, t, t + cols, t + 2 * cols, t + 3 * cols, t + 4 * cols);
    check_row(v, "dx", i, t + 2 * cols, w->dx, w->dtype, cols, 1);
  }
  free(t);
  *checked = n;
  if (w->rows * cols <= FULL_CHECK_ELEMENTS) check_param_grads(c, v);
}

/* The softmax family: forward rows against nk_ref_softmax_fwd / nk_ref_sigmoid_fwd (the logits
 * are x itself: scale 1, no mask), backward rows against nk_ref_softmax_bwd / _sigmoid_bwd on
 * the forward's own y, cross-entropy rows (loss, dlogits) against nk_ref_cross_entropy with
 * reduction none (one extra untimed call), and the mean loss against the mean of the rows. */
static void validate_softmax_family(bench_case *c, validation *v, size_t *checked) {
  const workset *w = c->w;
  const size_t cols = w->cols, n = sample_count(w->rows);
  const int log = c->op == OP_LOG_SOFTMAX, bwd = c->dir != DIR_FWD;
  double *t = xalloc(4 * cols * sizeof(double));
  double *in = t, *dy = t + cols, *ref = t + 2 * cols, *ref2 = t + 3 * cols;
  float *row_lse = NULL;
  if (c->op == OP_CROSS_ENTROPY) {
    nk_cross_entropy_desc d = c->xdesc;
    d.reduction = NK_REDUCTION_NONE;
    row_lse = param_alloc(w->rows);
    nk_status st = nk_cross_entropy(c->run->ctx, &d, w->x, w->target, w->row_loss,
                                    bwd ? w->dx : NULL, row_lse, NULL, 0);
    if (!report_status(st, c->run->ctx, "cross_entropy (validation)")) v->ok = 0;
    double sum = 0.0;
    for (size_t i = 0; i < w->rows; i++) sum += w->row_loss[i];
    check_value(v, "mean loss", 0, c->loss, sum / (double)w->rows, 1e-5 * fabs(sum / (double)w->rows) + 1e-6);
  }
  for (size_t k = 0; k < n && v->ok; k++) {
    const size_t i = sample_row(k, n, w->rows);
    double lse = 0.0, loss = 0.0;
    switch (c->op) {
      case OP_CROSS_ENTROPY:
        load_row(w->x, w->dtype, i * cols, cols, in);
        nk_ref_cross_entropy(1, cols, in, &w->target[i], -100, 0.0, 0.0, 0, 1.0, &loss,
                             bwd ? ref : NULL, &lse);
        check_value(v, "loss", i, w->row_loss[i], loss, 2e-6 * fmax(1.0, fabs(lse)) + 1e-6 * loss);
        check_value(v, "lse", i, row_lse[i], lse, 2e-6 * fmax(1.0, fabs(lse)));
        if (bwd) check_row(v, "dlogits", i, ref, w->dx, w->dtype, cols, 0);
        break;
      case OP_SIGMOID:
        if (!bwd) {
          load_row(w->x, w->dtype, i * cols, cols, in);
          nk_ref_sigmoid_fwd(cols, in, ref);
          check_row(v, "y", i, ref, w->y, w->dtype, cols, 0);
        } else {
          load_row(w->y, w->dtype, i * cols, cols, in);
          load_row(w->dy, w->dtype, i * cols, cols, dy);
          nk_ref_sigmoid_bwd(cols, in, dy, 1.0, ref);
          check_row(v, "dx", i, ref, w->dx, w->dtype, cols, 1);
        }
        break;
      default:
        if (!bwd) {
          load_row(w->x, w->dtype, i * cols, cols, in);
          nk_ref_softmax_fwd(1, cols, in, NULL, log, 0, ref, &lse);
          check_row(v, "y", i, ref, w->y, w->dtype, cols, 0);
        } else {
          load_row(w->y, w->dtype, i * cols, cols, in);
          load_row(w->dy, w->dtype, i * cols, cols, dy);
          nk_ref_softmax_bwd(1, cols, in, dy, log, 1.0, ref, ref2);
          check_row(v, "dx", i, ref, w->dx, w->dtype, cols, 1);
        }
    }
  }
  free(row_lse);
  free(t);
  *checked = n;
}

/* Channel norms: a few channels (BatchNorm) or (sample, group) pairs (GroupNorm, InstanceNorm)
 * recomputed in double from x (and dy): y or dx of every element of them, the saved statistics
 * and (BatchNorm) dgamma/dbeta of the checked channels. */
static size_t ch_index(const workset *w, nk_layout l, size_t n, size_t c, size_t s) {
  return l == NK_LAYOUT_NSC ? (n * w->spatial + s) * w->cols + c
                            : (n * w->cols + c) * w->spatial + s;
}

static size_t ch_groups(const bench_case *c) {
  if (c->op == OP_EVONORM_S0) return nk_evonorm_s0_groups(c->w->cols, c->cdesc.groups);
  if (c->op == OP_POWERNORM) return c->pdesc.groups;
  if (c->op == OP_INSTANCENORM) return c->w->cols;
  if (c->op == OP_GROUPNORM) return c->cdesc.groups;
  return 1;
}

static void validate_chnorm(const bench_case *c, validation *v, size_t *checked) {
  const workset *w = c->w;
  const nk_layout l = c->layout;
  const int bwd = c->dir != DIR_FWD, bn = c->op == OP_BATCHNORM;
  const size_t N = w->rows, C = w->cols, S = w->spatial, G = ch_groups(c), Cg = C / G;
  const double eps = c->cdesc.eps;
  /* a unit is a channel (BatchNorm: over n and s) or a (sample, group) */
  const size_t units = bn ? C : N * G, nchk = units < 4 ? units : 4;
  const size_t per = bn ? N * S : Cg * S;
  double *ref = xalloc(per * sizeof(double));
  for (size_t k = 0; k < nchk && v->ok; k++) {
    const size_t u = nchk > 1 ? k * (units - 1) / (nchk - 1) : 0;
    const size_t n0 = bn ? 0 : u / G, n1 = bn ? N : n0 + 1;
    const size_t c0 = bn ? u : (u % G) * Cg, c1 = bn ? u + 1 : c0 + Cg;
    double sum = 0.0, q = 0.0, cnt = (double)per;
    for (size_t n = n0; n < n1; n++)
      for (size_t ch = c0; ch < c1; ch++)
        for (size_t sp = 0; sp < S; sp++) sum += load_elem(w->x, w->dtype, ch_index(w, l, n, ch, sp));
    const double mean = sum / cnt;
    for (size_t n = n0; n < n1; n++)
      for (size_t ch = c0; ch < c1; ch++)
        for (size_t sp = 0; sp < S; sp++) {
          const double d = load_elem(w->x, w->dtype, ch_index(w, l, n, ch, sp)) - mean;
          q += d * d;
        }
    const double r = 1.0 / sqrt(q / cnt + eps);
    const size_t su = bn ? u : u; /* index of the saved statistics */
    check_value(v, "mean", su, w->mean[su], mean, 1e-6 * (fabs(mean) + 1.0 / r));
    check_value(v, "rstd", su, w->rstd[su], r, 1e-6 * r);
    double A = 0.0, B = 0.0, absB = 0.0, absA = 0.0;
    if (bwd) { /* sums of g = gamma * dy (GroupNorm) or dy (BatchNorm; gamma applied after) */
      for (size_t n = n0; n < n1; n++)
        for (size_t ch = c0; ch < c1; ch++)
          for (size_t sp = 0; sp < S; sp++) {
            const size_t i = ch_index(w, l, n, ch, sp);
            const double g = load_elem(w->dy, w->dtype, i) * (bn ? 1.0 : w->gamma_d[ch]);
            const double xh = (load_elem(w->x, w->dtype, i) - mean) * r;
            A += g, B += g * xh, absA += fabs(g), absB += fabs(g * xh);
          }
    }
    double m = 0.0;
    size_t j = 0;
    for (size_t n = n0; n < n1; n++)
      for (size_t ch = c0; ch < c1; ch++)
        for (size_t sp = 0; sp < S; sp++, j++) {
          const size_t i = ch_index(w, l, n, ch, sp);
          const double xh = (load_elem(w->x, w->dtype, i) - mean) * r;
          if (!bwd) {
            ref[j] = xh * w->gamma_d[ch] + w->beta_d[ch];
          } else {
            const double dy = load_elem(w->dy, w->dtype, i);
            ref[j] = bn ? w->gamma_d[ch] * r * (dy - A / cnt - xh * B / cnt)
                        : r * (w->gamma_d[ch] * dy - A / cnt - xh * B / cnt);
          }
          m = fmax(m, fabs(ref[j]));
        }
    const double bound = output_bound(w->dtype, 0, m);
    j = 0;
    for (size_t n = n0; n < n1; n++)
      for (size_t ch = c0; ch < c1; ch++)
        for (size_t sp = 0; sp < S; sp++, j++) {
          const size_t i = ch_index(w, l, n, ch, sp);
          const double got = load_elem(bwd ? w->dx : w->y, w->dtype, i), e = fabs(got - ref[j]);
          if (m > 0 && e / m > v->max_err) v->max_err = e / m;
          if (!(e <= bound)) fail(v, bwd ? "dx" : "y", i, got, ref[j], bound);
        }
    if (bwd && bn) {
      check_value(v, "dgamma", u, w->dgamma[u], B, 1e-5 * absB + 1e-6);
      check_value(v, "dbeta", u, w->dbeta[u], A, 1e-5 * absA + 1e-6);
    }
  }
  free(ref);
  *checked = nchk;
}

/* ---- research layers: PowerNorm, UN (training, code mode, no mask), EvoNorm-B0 (training),
 * EvoNorm-S0 (32 groups) ---------------------------------------------------------------------- */

static nk_status run_resnorm(const bench_case *c, int dir) {
  const workset *w = c->w;
  nk_context *ctx = c->run->ctx;
  bench_case *m = (bench_case *)c; /* the state advances with every call */
  switch (c->op) {
    case OP_POWERNORM:
      return dir == DIR_FWD ? nk_powernorm_fwd(ctx, &c->pdesc, w->x, NULL, w->gamma, w->beta,
                                               &m->pn, w->y, c->rn_save, c->ws, c->ws_size)
                            : nk_powernorm_bwd(ctx, &c->pdesc, w->x, NULL, w->gamma, c->rn_save, &m->pn,
                                               w->dy, w->dx, w->dgamma, w->dbeta, c->ws,
                                               c->ws_size);
    case OP_UNIFIEDNORM:
      return dir == DIR_FWD ? nk_unifiednorm_fwd(ctx, &c->udesc, w->x, NULL, w->gamma, w->beta,
                                                 &m->un, w->y, c->rn_save, c->ws, c->ws_size)
                            : nk_unifiednorm_bwd(ctx, &c->udesc, w->x, w->gamma, c->rn_save,
                                                 &m->un, w->dy, w->dx, w->dgamma, w->dbeta, c->ws,
                                                 c->ws_size);
    case OP_EVONORM_B0:
      return dir == DIR_FWD
                 ? nk_evonorm_b0_fwd(ctx, &c->cdesc, w->x, w->gamma, w->beta, c->rn_v,
                                     c->rn_v + w->cols, w->y, c->rn_save, c->rn_save2, c->ws,
                                     c->ws_size)
                 : nk_evonorm_b0_bwd(ctx, &c->cdesc, w->x, w->gamma, c->rn_v, c->rn_save,
                                     c->rn_save2, w->dy, w->dx, w->dgamma, w->dbeta,
                                     c->rn_v + 2 * w->cols, c->ws, c->ws_size);
    default:
      return dir == DIR_FWD
                 ? nk_evonorm_s0_fwd(ctx, &c->cdesc, w->x, w->gamma, w->beta, c->rn_v, w->y,
                                     c->rn_save, c->ws, c->ws_size)
                 : nk_evonorm_s0_bwd(ctx, &c->cdesc, w->x, w->gamma, c->rn_v, c->rn_save, w->dy,
                                     w->dx, w->dgamma, w->dbeta, c->rn_v + 2 * w->cols, c->ws,
                                     c->ws_size);
  }
}

/* Descriptors, fresh state (so the validated call starts from the initial state), workspace,
 * and for the backward one forward call. */
static nk_status resnorm_prepare(bench_case *c) {
  const workset *w = c->w;
  const size_t N = w->rows, C = w->cols, S = w->spatial;
  nk_status st;
  if (c->op == OP_POWERNORM) {
    c->pdesc = nk_powernorm_desc_dense(N, S, C, w->dtype);
    c->pdesc.groups = C % PN_HEAD_DIM == 0 ? C / PN_HEAD_DIM : 0;
    c->pdesc.flags = NK_RESNORM_TRAINING;
    c->rn_buf = xalloc(4 * C * sizeof(float));
    c->pn = (nk_powernorm_state){c->rn_buf, c->rn_buf + C, 0};
    c->rn_save = c->rn_buf + 2 * C;
    nk_powernorm_state_init(C, &c->pn);
    st = nk_powernorm_fwd_workspace_size(&c->pdesc, &c->ws_size);
  } else if (c->op == OP_UNIFIEDNORM) {
    c->udesc = nk_unifiednorm_desc_dense(N, S, C, w->dtype);
    c->udesc.flags = NK_RESNORM_TRAINING;
    const size_t M = c->udesc.window_fwd, Mb = c->udesc.window_bwd;
    c->rn_buf = xalloc((4 + M + Mb) * C * sizeof(float));
    c->un = (nk_unifiednorm_state){c->rn_buf, c->rn_buf + C, c->rn_buf + 2 * C,
                                   c->rn_buf + (2 + M) * C, 0, 0, 0};
    c->rn_save = c->rn_buf + (2 + M + Mb) * C;
    nk_unifiednorm_state_init(&c->udesc, &c->un);
    st = nk_unifiednorm_fwd_workspace_size(&c->udesc, &c->ws_size);
  } else {
    c->cdesc = nk_chnorm_desc_dense(N, C, S, c->layout, w->dtype, LN_EPS);
    c->cdesc.groups = CH_GROUPS;
    if (c->op == OP_EVONORM_B0) c->cdesc.flags = NK_RESNORM_TRAINING;
    const size_t G = nk_evonorm_s0_groups(C, CH_GROUPS);
    c->rn_buf = xalloc((3 * C + 3 * C + 3 * N * C + 3 * N * G) * sizeof(float));
    c->rn_v = c->rn_buf; /* v, running variance, dv */
    c->rn_save = c->rn_buf + 3 * C;
    c->rn_save2 = c->rn_save + 3 * C;
    for (size_t i = 0; i < C; i++) c->rn_v[i] = 1.0f, c->rn_v[C + i] = 1.0f;
    st = nk_evonorm_b0_fwd_workspace_size(&c->cdesc, &c->ws_size);
  }
  if (st != NK_STATUS_OK) return st;
  if (c->ws_size) c->ws = memset(xalloc(c->ws_size), 0, c->ws_size);
  return c->dir == DIR_FWD ? NK_STATUS_OK : run_fwd(c);
}

/* Validation of the first call against the float64 reference on slices that are independent of
 * the rest of the tensor: PowerNorm one group of channels over all tokens (the per-token group
 * scaling needs the group), UN one channel, B0 one channel over N*S, S0 one (sample, group).
 * The forward is checked from the initial state; the backward after the one forward. */
static void validate_resnorm(const bench_case *c, validation *v, size_t *checked) {
  const workset *w = c->w;
  const int bwd = c->dir != DIR_FWD;
  const size_t N = w->rows, C = w->cols, S = w->spatial, R = N * S;
  const nk_layout l = c->op == OP_POWERNORM || c->op == OP_UNIFIEDNORM ? NK_LAYOUT_NSC : c->layout;
  size_t width = 1, nunits = 2, per;
  if (c->op == OP_POWERNORM && c->pdesc.groups) width = C / c->pdesc.groups;
  const size_t G = c->op == OP_EVONORM_S0 ? nk_evonorm_s0_groups(C, CH_GROUPS) : 1;
  if (c->op == OP_EVONORM_S0) width = C / G;
  per = c->op == OP_EVONORM_S0 ? width * S : (c->op == OP_EVONORM_B0 ? N * S : R * width);
  double *x = xalloc(per * sizeof(double)), *dy = xalloc(per * sizeof(double));
  double *ref = xalloc(per * sizeof(double)), *dref = xalloc(per * sizeof(double));
  const size_t wp = width + 4; /* per-channel arrays of the slice (UN's windows: 4 entries) */
  double *pb = xalloc(12 * wp * sizeof(double));
  double *g = pb, *b = pb + wp, *vv = pb + 2 * wp, *st1 = pb + 3 * wp, *st2 = pb + 4 * wp;
  double *st3 = pb + 5 * wp, *st4 = pb + 6 * wp, *rf = pb + 7 * wp, *rb = pb + 8 * wp;
  double *dg = pb + 9 * wp, *db = pb + 10 * wp, *dv = pb + 11 * wp;
  for (size_t k = 0; k < nunits && v->ok; k++) {
    /* unit k: first or last channel (group; S0: (n, k) = (0, 0) and (N-1, G-1)) */
    const size_t c0 = k == 0 ? 0 : (c->op == OP_EVONORM_S0 ? C - width : C - width);
    const size_t n0 = c->op == OP_EVONORM_S0 ? (k == 0 ? 0 : N - 1) : 0;
    const size_t n1 = c->op == OP_EVONORM_S0 ? n0 + 1 : N;
    size_t j = 0;
    /* dense slice: token ops [row][c - c0]; EvoNorm NCS [n][c - c0][s] */
    if (is_tokennorm(c->op)) {
      for (size_t i = 0; i < R; i++)
        for (size_t cc = 0; cc < width; cc++, j++) {
          const size_t e = ch_index(w, l, i / S, c0 + cc, i % S);
          x[j] = load_elem(w->x, w->dtype, e), dy[j] = load_elem(w->dy, w->dtype, e);
        }
    } else {
      for (size_t n = n0; n < n1; n++)
        for (size_t cc = 0; cc < width; cc++)
          for (size_t s = 0; s < S; s++, j++) {
            const size_t e = ch_index(w, l, n, c0 + cc, s);
            x[j] = load_elem(w->x, w->dtype, e), dy[j] = load_elem(w->dy, w->dtype, e);
          }
    }
    for (size_t cc = 0; cc < width; cc++)
      g[cc] = w->gamma_d[c0 + cc], b[cc] = w->beta_d[c0 + cc], vv[cc] = 1.0;
    if (c->op == OP_POWERNORM) {
      nk_ref_pn p = {R, width, c->pdesc.groups ? 1 : 0, 0, 1, 1e-5, 1e-5, 0.9, 0.9, 0};
      long long step = 0;
      for (size_t cc = 0; cc < width; cc++) st1[cc] = 1.0, st2[cc] = 0.0;
      nk_ref_powernorm_fwd(&p, x, NULL, g, b, st1, &step, ref, rf, rb);
      if (bwd) nk_ref_powernorm_bwd(&p, x, NULL, g, rf, rb, st2, dy, dref, dg, db);
    } else if (c->op == OP_UNIFIEDNORM) {
      nk_ref_un p = {R, 1, 4, 4, 1, 0, 0, 1e-5, (double)0.9f, (double)0.2f, 5.0, 4000, 1000};
      st1[0] = 1.0, st2[0] = 0.0;
      memset(st3, 0, wp * sizeof(double)), memset(st4, 0, wp * sizeof(double));
      nk_ref_un_state s = {st1, st2, st3, st4, 0, 0, 0};
      nk_ref_unifiednorm_fwd(&p, &s, x, NULL, g, b, ref, rf, rb);
      if (bwd) nk_ref_unifiednorm_bwd(&p, &s, x, g, rf, rb, dy, dref, dg, db);
    } else {
      const nk_ref_chshape t = {n1 - n0, width, S, 0, 0, 0};
      const int kind = c->op == OP_EVONORM_S0;
      st1[0] = 1.0;
      nk_ref_evonorm_fwd(&t, kind, 1, !kind, 0, 1e-5, (double)0.1f, x, g, b, vv, st1, ref);
      st1[0] = 1.0;
      if (bwd) nk_ref_evonorm_bwd(&t, kind, 1, !kind, 0, 1e-5, x, g, vv, st1, dy, dref, dg, db, dv);
    }
    const double *r = bwd ? dref : ref;
    double m = 0.0;
    for (size_t i = 0; i < per; i++) m = fmax(m, fabs(r[i]));
    const double bound = output_bound(w->dtype, bwd, m);
    j = 0;
    for (size_t i = 0; i < per; i++) {
      size_t e;
      if (is_tokennorm(c->op)) e = ch_index(w, l, (i / width) / S, c0 + i % width, (i / width) % S);
      else e = ch_index(w, l, n0 + i / (width * S), c0 + (i / S) % width, i % S);
      const double got = load_elem(bwd ? w->dx : w->y, w->dtype, e), err = fabs(got - r[i]);
      if (m > 0 && err / m > v->max_err) v->max_err = err / m;
      if (!(err <= bound)) fail(v, bwd ? "dx" : "y", e, got, r[i], bound);
    }
  }
  free(x), free(dy), free(ref), free(dref), free(pb);
  *checked = nunits;
}

/* ------------------------------------------------------------------------------------------ */
/* Timing and output                                                                           */
/* ------------------------------------------------------------------------------------------ */

/* Warm-up: the validated call (first_s seconds) and more calls until WARMUP_SECONDS are
 * spent; then max(min_reps, TARGET_SECONDS / call) timed calls. */
static nk_status time_case(const bench_case *c, long min_reps, double first_s,
                           case_result *res) {
  nk_status st = NK_STATUS_OK;
  double one = first_s, spent = first_s;
  while (spent < WARMUP_SECONDS) {
    double t0 = now_s();
    if ((st = run_case(c)) != NK_STATUS_OK) return st;
    one = now_s() - t0;
    spent += one;
  }
  double want = ceil(TARGET_SECONDS / fmax(one, 1e-9));
  long reps = want > MAX_REPS ? MAX_REPS : (long)want;
  if (reps < min_reps) reps = min_reps;
  double *t = xalloc((size_t)reps * sizeof(double));
  for (long r = 0; r < reps && st == NK_STATUS_OK; r++) {
    double t0 = now_s();
    st = run_case(c);
    t[r] = now_s() - t0;
  }
  if (st == NK_STATUS_OK) {
    res->median_s = fmax(median(t, (size_t)reps), 1e-12);
    res->min_s = t[0];
    res->reps = reps;
  }
  free(t);
  return st;
}

typedef struct run_info {
  char cpu[256], date[32];
  long ncpu;
  int json;
} run_info;

static void json_string(const char *s) {
  putchar('"');
  for (; s && *s; s++) {
    if (*s == '"' || *s == '\\') printf("\\%c", *s);
    else if ((unsigned char)*s < 0x20) printf("\\u%04x", (unsigned)(unsigned char)*s);
    else putchar(*s);
  }
  putchar('"');
}

static const char *kernel_of(const bench_case *c) {
  if (is_resnorm(c->op)) {
    static char name[64];
    snprintf(name, sizeof name, "nk_resnorm__%s", nk_isa_name(nk_context_isa(c->run->ctx)));
    return name;
  }
  if (is_quant(c->op) || (c->op == OP_FAKELN && c->dir == DIR_FWD)) { /* (FakeLN: normq) */
    const nk_normq_entry *e = nk__select_normq(nk_context_isa(c->run->ctx), c->w->dtype);
    return e ? e->name : "(none)";
  }
  if (is_chnorm(c->op)) {
    const char *k = nk_kernel_name_ex(c->run->ctx, case_nk_op(c), c->w->dtype);
    return k ? k : "(none)";
  }
  const char *k = is_softmax(c->op) && c->dir == DIR_FWD
                      ? nk_softmax_kernel_name(c->run->ctx, &c->sdesc)
                      : nk_kernel_name_ex(c->run->ctx, case_nk_op(c), c->w->dtype);
  return k ? k : "(none)";
}

static void emit_json(const bench_case *c, const case_result *r, const run_info *info) {
  const workset *w = c->w;
  double bytes = case_bytes(c), gbps = bytes / r->median_s / 1e9;
  double best_copy = fmax(r->copy_gbps, r->copy_nt_gbps);
  size_t rows = w->rows, cols = w->cols, elems = w->rows * w->cols;
  const char *layout = "rows";
  if ((is_chnorm(c->op) || is_resnorm(c->op))) { /* rows x cols: the layout's rows (NCHW: N*C rows of S) */
    layout = nk_layout_name(c->layout);
    elems *= w->spatial;
    rows = c->layout == NK_LAYOUT_NSC ? w->rows * w->spatial : w->rows * w->cols;
    cols = c->layout == NK_LAYOUT_NSC ? w->cols : w->spatial;
  }
  printf("{\"op\":\"%s\",\"direction\":\"%s\",\"dtype\":\"%s\",\"param_dtype\":\"f32\","
         "\"layout\":\"%s\",\"rows\":%zu,\"cols\":%zu,\"elements\":%zu,\"threads\":%zu,"
         "\"isa\":\"%s\",\"algo\":\"%s\",",
         op_names[c->op], dir_names[c->dir], nk_dtype_name(w->dtype), layout, rows, cols, elems,
         c->run->threads, nk_isa_name(nk_context_isa(c->run->ctx)),
         (is_chnorm(c->op) || is_resnorm(c->op)) ? "-" : nk_softmax_algo_name(c->algo));
  if ((is_chnorm(c->op) || is_resnorm(c->op)))
    printf("\"batch\":%zu,\"channels\":%zu,\"spatial\":%zu,\"groups\":%zu,", w->rows, w->cols,
           w->spatial, ch_groups(c));
  if (is_rownorm(c->op)) printf("\"lns_scale\":%.9g,", (double)c->lns);
  printf("\"kernel\":");
  json_string(kernel_of(c));
  printf(",\"median_s\":%.9g,\"min_s\":%.9g,\"reps\":%ld,\"bytes\":%.0f,\"gbps\":%.6g,"
         "\"copy_gbps\":%.6g,\"copy_nt_gbps\":%.6g,\"read_gbps\":%.6g,\"fraction\":%.6g,\"max_err\":%.3g,"
         "\"validated_rows\":%zu,\"date\":\"%s\",\"cpu\":",
         r->median_s, r->min_s, r->reps, bytes, gbps, r->copy_gbps, r->copy_nt_gbps,
         r->read_gbps, gbps / best_copy, r->max_err, r->checked_rows, info->date);
  json_string(info->cpu);
  printf(",\"ncpu\":%ld,\"version\":\"%s\"}\n", info->ncpu, nk_version());
  fflush(stdout);
}

static void print_table_header(FILE *f) {
  fprintf(f, "%-13s %-6s %-5s %-11s %3s %-6s %-46s %11s %11s %8s %6s\n", "op", "dir", "dtype",
          "shape", "thr", "isa", "kernel", "median_us", "min_us", "GB/s", "frac");
}

static void emit_row(FILE *f, const bench_case *c, const case_result *r) {
  const workset *w = c->w;
  char shape_s[48];
  double gbps = case_bytes(c) / r->median_s / 1e9;
  double best_copy = fmax(r->copy_gbps, r->copy_nt_gbps);
  if ((is_chnorm(c->op) || is_resnorm(c->op)))
    snprintf(shape_s, sizeof shape_s, "%zux%zux%zu %s", w->rows, w->cols, w->spatial,
             nk_layout_name(c->layout));
  else
    snprintf(shape_s, sizeof shape_s, "%zux%zu", w->rows, w->cols);
  char op_s[32];
  snprintf(op_s, sizeof op_s, "%s%s", op_names[c->op], c->lns != 0.0f ? "+lns" : "");
  fprintf(f, "%-13s %-6s %-5s %-11s %3zu %-6s %-46s %11.2f %11.2f %8.2f %6.3f\n", op_s,
          dir_names[c->dir], nk_dtype_name(w->dtype), shape_s, c->run->threads,
          nk_isa_name(nk_context_isa(c->run->ctx)), kernel_of(c), r->median_s * 1e6,
          r->min_s * 1e6, gbps, gbps / best_copy);
  fflush(f);
}

/* ------------------------------------------------------------------------------------------ */
/* bench                                                                                       */
/* ------------------------------------------------------------------------------------------ */

static void case_label(const bench_case *c, char *out, size_t size) {
  if ((is_chnorm(c->op) || is_resnorm(c->op))) {
    snprintf(out, size, "%s_%s %s %zux%zux%zu %s, %zu thread%s", op_names[c->op],
             dir_names[c->dir], nk_dtype_name(c->w->dtype), c->w->rows, c->w->cols, c->w->spatial,
             nk_layout_name(c->layout), c->run->threads, c->run->threads == 1 ? "" : "s");
    return;
  }
  snprintf(out, size, "%s_%s%s%s %s %zux%zu, %zu thread%s", op_names[c->op], dir_names[c->dir],
           is_softmax(c->op) && c->dir == DIR_FWD ? " " : (c->lns != 0.0f ? " lns" : ""),
           is_softmax(c->op) && c->dir == DIR_FWD ? nk_softmax_algo_name(c->algo) : "",
           nk_dtype_name(c->w->dtype), c->w->rows, c->w->cols, c->run->threads,
           c->run->threads == 1 ? "" : "s");
}

/* Descriptor, backward workspace (allocated and touched outside the timed region) and, for the
 * backward, the statistics it reads (one forward call). */
static nk_status resnorm_prepare(bench_case *c);

static nk_status case_prepare(bench_case *c) {
  nk_status st;
  if (is_resnorm(c->op)) return resnorm_prepare(c);
  if (is_chnorm(c->op)) {
    const workset *w = c->w;
    nk_chnorm_desc *d = &c->cdesc;
    *d = nk_chnorm_desc_dense(w->rows, w->cols, w->spatial, c->layout, w->dtype, LN_EPS);
    d->groups = w->cols % CH_GROUPS == 0 ? CH_GROUPS : 1;
    if (c->op == OP_BATCHNORM) d->flags = NK_CHNORM_TRAINING;
    if (c->dir == DIR_FWD)
      st = c->op == OP_BATCHNORM ? nk_batchnorm_fwd_workspace_size(d, &c->ws_size) : NK_STATUS_OK;
    else if (c->op == OP_BATCHNORM)
      st = nk_batchnorm_bwd_workspace_size(d, &c->ws_size);
    else if (c->op == OP_GROUPNORM)
      st = nk_groupnorm_bwd_workspace_size(d, &c->ws_size);
    else
      st = nk_instancenorm_bwd_workspace_size(d, &c->ws_size);
    if (st != NK_STATUS_OK) return st;
    if (c->ws_size) c->ws = memset(xalloc(c->ws_size), 0, c->ws_size);
    if (c->dir == DIR_FWD) return NK_STATUS_OK;
    /* the backward's statistics: one forward (BatchNorm's needs its own workspace) */
    if (c->op != OP_BATCHNORM) return run_fwd(c);
    size_t fws = 0;
    if ((st = nk_batchnorm_fwd_workspace_size(d, &fws)) != NK_STATUS_OK) return st;
    void *f = xalloc(fws ? fws : 1);
    st = nk_batchnorm_fwd(c->run->ctx, d, w->x, NULL, w->gamma, w->beta, NULL, NULL, NULL, w->y,
                          w->mean, w->rstd, f, fws);
    free(f);
    return st;
  }
  if (is_quant(c->op)) {
    c->desc = nk_norm_desc_dense(c->w->rows, c->w->cols, c->w->dtype,
                                 c->op == OP_LAYERNORM_Q8 ? LN_EPS : RMS_EPS);
    c->qdesc = nk_pow2quant_desc_dense(c->w->rows, c->w->cols, c->w->dtype);
    c->qdesc.group = P2_GROUP;
    c->qdesc.exp_stride = (ptrdiff_t)((c->w->cols + P2_GROUP - 1) / P2_GROUP);
    return NK_STATUS_OK;
  }
  if (c->op == OP_CROSS_ENTROPY) {
    c->xdesc = nk_cross_entropy_desc_dense(c->w->rows, c->w->cols, c->w->dtype);
    st = nk_cross_entropy_workspace_size(&c->xdesc, &c->ws_size);
    if (st == NK_STATUS_OK && c->ws_size) c->ws = memset(xalloc(c->ws_size), 0, c->ws_size);
    return st;
  }
  if (!is_rownorm(c->op)) {
    c->sdesc = nk_softmax_desc_dense(c->w->rows, c->w->cols, c->w->dtype);
    if (c->op == OP_LOG_SOFTMAX) c->sdesc.flags |= NK_SOFTMAX_LOG;
    c->sdesc.algo = c->algo;
    return c->dir == DIR_FWD ? NK_STATUS_OK : run_fwd(c);
  }
  c->desc = nk_norm_desc_dense(c->w->rows, c->w->cols, c->w->dtype,
                               c->op == OP_RMSNORM ? RMS_EPS : LN_EPS);
  c->desc.lns_scale = c->lns;
  if (c->dir == DIR_FWD) return NK_STATUS_OK;
  st = c->op == OP_LAYERNORM ? nk_layernorm_bwd_workspace_size(&c->desc, &c->ws_size)
       : c->op == OP_RMSNORM ? nk_rmsnorm_bwd_workspace_size(&c->desc, &c->ws_size)
       : c->op == OP_L1NORM  ? nk_l1norm_bwd_workspace_size(&c->desc, &c->ws_size)
       : c->op == OP_FAKELN  ? nk_fakeln_bwd_workspace_size(&c->desc, &c->ws_size)
                             : (c->ws_size = 0, NK_STATUS_OK);
  if (st != NK_STATUS_OK) return st;
  if (c->ws_size) c->ws = memset(xalloc(c->ws_size), 0, c->ws_size);
  return run_fwd(c);
}

static void report_case(const bench_case *c, const case_result *r, const options *o,
                        const run_info *info, const char *label) {
  double gbps = case_bytes(c) / r->median_s / 1e9;
  if (!o->json) {
    emit_row(stdout, c, r);
    return;
  }
  emit_json(c, r, info);
  fprintf(stderr, "%-40s %12.2f us %8.2f GB/s  fraction %.3f\n", label, r->median_s * 1e6, gbps,
          gbps / fmax(r->copy_gbps, r->copy_nt_gbps));
}

/* Prepares, runs once, validates, times and reports one case. Returns 1 on success. */
static int bench_one(bench_case *c, const options *o, const run_info *info) {
  char label[128];
  case_result res = {0};
  validation v = {.ok = 1, .label = label};
  double first_s = 0.0;
  case_label(c, label, sizeof label);
  nk_status st = case_prepare(c);
  if (st == NK_STATUS_OK) {
    double t0 = now_s();
    st = run_case(c);
    first_s = now_s() - t0;
  }
  if (st == NK_STATUS_OK) {
    if (is_resnorm(c->op)) validate_resnorm(c, &v, &res.checked_rows);
    else if (is_chnorm(c->op)) validate_chnorm(c, &v, &res.checked_rows);
    else if (is_quant(c->op)) validate_quant(c, &v, &res.checked_rows);
    else if (!is_rownorm(c->op)) validate_softmax_family(c, &v, &res.checked_rows);
    else if (c->dir == DIR_FWD) validate_fwd(c, &v, &res.checked_rows);
    else validate_bwd(c, &v, &res.checked_rows);
    res.max_err = v.max_err;
    res.copy_gbps = c->run->copy_gbps;
    res.copy_nt_gbps = c->run->copy_nt_gbps;
    res.read_gbps = c->run->read_gbps;
    if (v.ok && case_bytes(c) >= (double)OUT_OF_CACHE_BYTES) {
      /* Out of cache: the anchor of this minute, measured just before the case. */
      res.copy_gbps = measure_copy(c->run->pool, copy_regular, anchor.dst, anchor.src,
                                   COPY_BYTES, ANCHOR_REPS);
      res.copy_nt_gbps = measure_copy(c->run->pool, anchor.nt, anchor.dst, anchor.src,
                                      COPY_BYTES, ANCHOR_REPS);
      res.read_gbps = measure_copy(c->run->pool, anchor.read, anchor.dst, anchor.src,
                                   COPY_BYTES, ANCHOR_REPS) / 2.0;
    }
    if (v.ok) st = time_case(c, o->min_reps, first_s, &res);
  }
  free(c->ws);
  free(c->rn_buf);
  if (!report_status(st, c->run->ctx, label) || !v.ok) return 0;
  report_case(c, &res, o, info, label);
  return 1;
}

/* Every selected op, direction and runner on one work set. Returns the number of failures. */
static int bench_workset(const workset *w, unsigned ops, unsigned layouts, const options *o,
                         const runner *runs, size_t nruns, const run_info *info) {
  int failures = 0;
  for (int op = 0; op < NOPS; op++) {
    for (int dir = 0; dir < NDIRS; dir++) {
      if (!(ops >> op & 1) || !(o->dir_mask >> dir & 1) || !op_has_dir(op, dir)) continue;
      const int chop = is_chnorm(op) || is_resnorm(op);
      if (chop != (w->spatial != 0)) continue; /* NxCxS shapes: channel norms only */
      for (int lay = 0; lay < 2 && chop; lay++) {
        if (!(layouts >> lay & 1)) continue;
        if (is_tokennorm(op) && lay == NK_LAYOUT_NCS) continue; /* tokens are channel-last */
        for (size_t r = 0; r < nruns; r++) {
          bench_case c = {.op = op, .dir = dir, .w = w, .run = &runs[r], .layout = (nk_layout)lay};
          failures += !bench_one(&c, o, info);
        }
      }
      for (int a = 0; a < NALGOS && !chop; a++) {
        const int algo_case = is_softmax(op) && dir == DIR_FWD;
        if (algo_case ? !(o->algo_mask >> a & 1) : a != 0) continue;
        if (a == NK_SOFTMAX_THREE_PASS_RELOAD && w->dtype != NK_DTYPE_F32) continue;
        for (size_t r = 0; r < nruns; r++) {
          bench_case c = {.op = op, .dir = dir, .algo = (nk_softmax_algo)a, .w = w,
                          .run = &runs[r]};
          failures += !bench_one(&c, o, info);
          if (o->lns != 0.0f && has_lns(op)) { /* A/B: the same case with LayerNorm Scaling */
            bench_case cl = {.op = op, .dir = dir, .algo = (nk_softmax_algo)a, .w = w,
                             .run = &runs[r], .lns = o->lns};
            failures += !bench_one(&cl, o, info);
          }
        }
      }
    }
  }
  return failures;
}

/* ------------------------------------------------------------------------------------------ */
/* Optimizer and advantage hot paths: adamp, adamp_proj, sgdp, sgdp_proj, grpo (--op only)     */
/* ------------------------------------------------------------------------------------------ */
/* One step over a rows x cols parameter tensor (rows = shape[0]): adamp / sgdp with a random
 * gradient (the cosine test fails: the two-pass path, detection then the fused update),
 * adamp_proj / sgdp_proj with each gradient row orthogonal to its weight row (channel view
 * projected: detection, state + row sums, update). grpo: rows groups of cols rewards. Minimal
 * bytes: AdamP reads theta, g, m, v and writes theta, m, v (28 n); SGDP reads theta, g, buf and
 * writes theta, buf (20 n); GRPO reads the rewards and the group sizes and writes adv
 * (8 n + 8 groups). Each case runs on the selected ISA path (auto: the default) and, in the same
 * run, on the scalar path, at each thread count. Validated first: the first SAMPLE_ROWS rows
 * (groups) of one step from the initial state against the float64 reference (the projection
 * the library chose on the whole tensor, applied per row). */

typedef struct optim_ws {
  size_t rows, cols, n;
  float *theta, *g, *m, *v, *theta0, *adv;
  size_t *sizes;
} optim_ws;


static void optim_ws_fill(optim_ws *w, int op, nk_threadpool *pool) {
  const size_t n = w->n;
  if (op == OP_GRPO) {
    fill_normal(pool, w->theta, NK_DTYPE_F32, n, 0x6770, 0.0, 1.0);
    for (size_t q = 0; q < w->rows; q++) w->sizes[q] = w->cols;
    return;
  }
  fill_normal(pool, w->theta, NK_DTYPE_F32, n, 0x7e7a, 0.0, 1.0);
  fill_normal(pool, w->g, NK_DTYPE_F32, n, 0x6a11, 0.0, 0.01);
  if (op == OP_ADAMP_PROJ || op == OP_SGDP_PROJ) {
    for (size_t r = 0; r < w->rows; r++) { /* g_r minus its theta_r component */
      float *t = w->theta + r * w->cols, *g = w->g + r * w->cols;
      double gt = 0.0, tt = 0.0;
      for (size_t j = 0; j < w->cols; j++) {
        gt += (double)g[j] * t[j];
        tt += (double)t[j] * t[j];
      }
      for (size_t j = 0; j < w->cols; j++) g[j] = (float)((double)g[j] - gt / tt * t[j]);
    }
  }
  memcpy(w->theta0, w->theta, n * sizeof(float));
  set_bytes(pool, w->m, 0, n * sizeof(float));
  set_bytes(pool, w->v, 0, n * sizeof(float));
}

static nk_status optim_step(nk_context *ctx, int op, optim_ws *w, nk_optim_projection *proj) {
  if (op == OP_GRPO)
    return nk_grpo_advantages(ctx, w->rows, w->sizes, w->theta, NK_GRPO_EPS_DEFAULT, 1, 1, w->adv);
  if (op == OP_ADAMP || op == OP_ADAMP_PROJ) {
    nk_adamp_desc d = nk_adamp_desc_default();
    d.lr = 1e-6; /* small: the timed repetitions keep the projection decision */
    d.weight_decay = 0.01;
    int64_t step = 0; /* every call is a first step: same work */
    return nk_adamp_step(ctx, &d, w->n, w->rows, w->theta, w->g, w->m, w->v, &step, proj);
  }
  nk_sgdp_desc d = nk_sgdp_desc_default(1e-6);
  d.momentum = 0.9;
  d.weight_decay = 0.01;
  return nk_sgdp_step(ctx, &d, w->n, w->rows, w->theta, w->g, w->m, proj);
}

static double optim_bytes(int op, const optim_ws *w) {
  const double n = (double)w->n;
  if (op == OP_GRPO) return 8.0 * n + 8.0 * (double)w->rows;
  return (op == OP_ADAMP || op == OP_ADAMP_PROJ) ? 28.0 * n : 20.0 * n;
}

/* One step from the initial state, the first rows checked against the reference. */
static int optim_validate(nk_context *ctx, int op, optim_ws *w, double *max_err,
                          nk_optim_projection *proj) {
  const size_t rows = w->rows < SAMPLE_ROWS ? w->rows : SAMPLE_ROWS, k = rows * w->cols;
  double *p = xalloc(k * 8), *g = xalloc(k * 8), *m = xalloc(k * 8), *v = xalloc(k * 8);
  int ok = 1;
  *max_err = 0.0;
  *proj = NK_OPTIM_PROJECTION_NONE;
  if (op == OP_GRPO) {
    for (size_t i = 0; i < k; i++) p[i] = w->theta[i];
    nk_ref_grpo(rows, w->sizes, p, NK_GRPO_EPS_DEFAULT, 1, 1, m);
    ok = optim_step(ctx, op, w, proj) == NK_STATUS_OK;
    for (size_t i = 0; i < k && ok; i++) {
      const double e = fabs((double)w->adv[i] - m[i]);
      *max_err = fmax(*max_err, e / fmax(fabs(m[i]), 1.0));
      if (!(e <= 1e-6 * fmax(fabs(m[i]), 1.0))) ok = 0;
    }
  } else {
    const int adam = op == OP_ADAMP || op == OP_ADAMP_PROJ;
    for (size_t i = 0; i < k; i++) {
      p[i] = w->theta[i];
      g[i] = w->g[i];
      m[i] = v[i] = 0.0;
    }
    ok = optim_step(ctx, op, w, proj) == NK_STATUS_OK;
    /* the reference on the sample: per row (channel view) or unprojected */
    const size_t rrows = *proj == NK_OPTIM_PROJECTION_CHANNEL ? rows : 0;
    if (*proj == NK_OPTIM_PROJECTION_LAYER) ok = 0; /* not a bench input: cannot sample */
    if (adam) {
      const nk_ref_adamp_hp hp = {1e-6, 0.9, 0.999, 1e-8, 0.01, 0.1, 0.1, 0};
      double step = 0.0;
      nk_ref_adamp_step(k, rrows, &hp, p, g, m, v, &step);
    } else {
      const nk_ref_sgdp_hp hp = {1e-6, 0.9, 0.0, 1e-8, 0.01, 0.1, 0.1, 0};
      nk_ref_sgdp_step(k, rrows, &hp, p, g, m);
    }
    double scale = 0.0;
    for (size_t i = 0; i < k; i++) scale = fmax(scale, fabs(p[i]));
    for (size_t i = 0; i < k && ok; i++) {
      const double e = fabs((double)w->theta[i] - p[i]), em = fabs((double)w->m[i] - m[i]);
      *max_err = fmax(*max_err, e / scale);
      if (!(e <= 2e-5 * (fabs(p[i]) + scale)) || !(em <= 1e-6 * fabs(m[i]) + 1e-30)) ok = 0;
    }
  }
  free(p);
  free(g);
  free(m);
  free(v);
  return ok;
}

static int bench_optim_case(int op, optim_ws *w, const runner *run, nk_isa isa, const options *o,
                            const run_info *info) {
  nk_context *ctx = NULL;
  if (!report_status(nk_context_create(&ctx), NULL, "context_create")) return 0;
  nk_context_set_threadpool(ctx, run->pool);
  if (isa != NK_ISA_AUTO && !report_status(nk_context_set_isa(ctx, isa), ctx, nk_isa_name(isa))) {
    nk_context_destroy(ctx);
    return 0;
  }
  char label[128];
  snprintf(label, sizeof label, "%s %zux%zu %s, %zu thread%s", op_names[op], w->rows, w->cols,
           nk_isa_name(nk_context_isa(ctx)), run->threads, run->threads == 1 ? "" : "s");
  optim_ws_fill(w, op, run->pool);
  double max_err = 0.0;
  nk_optim_projection proj;
  if (!optim_validate(ctx, op, w, &max_err, &proj)) {
    fprintf(stderr, "normkit: VALIDATION FAILED %s (projection %d, max_err %.3g)\n", label,
            (int)proj, max_err);
    nk_context_destroy(ctx);
    return 0;
  }
  const double bytes = optim_bytes(op, w);
  double copy = run->copy_gbps, copy_nt = run->copy_nt_gbps, rd = run->read_gbps;
  if (bytes >= (double)OUT_OF_CACHE_BYTES) {
    copy = measure_copy(run->pool, copy_regular, anchor.dst, anchor.src, COPY_BYTES, ANCHOR_REPS);
    copy_nt = measure_copy(run->pool, anchor.nt, anchor.dst, anchor.src, COPY_BYTES, ANCHOR_REPS);
    rd = measure_copy(run->pool, anchor.read, anchor.dst, anchor.src, COPY_BYTES, ANCHOR_REPS) / 2;
  }
  nk_status st = NK_STATUS_OK;
  double one = 0.0, spent = 0.0;
  nk_optim_projection p2 = proj;
  while (spent < WARMUP_SECONDS && st == NK_STATUS_OK) {
    const double t0 = now_s();
    st = optim_step(ctx, op, w, &p2);
    one = now_s() - t0;
    spent += one;
  }
  double want = ceil(TARGET_SECONDS / fmax(one, 1e-9));
  long reps = want > MAX_REPS ? MAX_REPS : (long)want;
  if (reps < o->min_reps) reps = o->min_reps;
  double *t = xalloc((size_t)reps * sizeof(double)), tmin = 1e30;
  for (long r = 0; r < reps && st == NK_STATUS_OK; r++) {
    const double t0 = now_s();
    st = optim_step(ctx, op, w, &p2);
    t[r] = now_s() - t0;
    tmin = fmin(tmin, t[r]);
  }
  if (!report_status(st, ctx, label) || p2 != proj) {
    if (st == NK_STATUS_OK)
      fprintf(stderr, "normkit: %s: the projection changed while timed\n", label);
    free(t);
    nk_context_destroy(ctx);
    return 0;
  }
  const double med = fmax(median(t, (size_t)reps), 1e-12), gbps = bytes / med / 1e9;
  const double frac = gbps / fmax(copy, copy_nt);
  static const char *const proj_names[] = {"none", "channel", "layer"};
  const char *kname = nk_optim_kernel_name(ctx);
  if (info->json) {
    printf("{\"op\":\"%s\",\"direction\":\"fwd\",\"dtype\":\"f32\",\"param_dtype\":\"f32\","
           "\"layout\":\"rows\",\"rows\":%zu,\"cols\":%zu,\"elements\":%zu,\"threads\":%zu,"
           "\"isa\":\"%s\",\"projection\":\"%s\",\"kernel\":\"%s\",\"median_s\":%.9g,"
           "\"min_s\":%.9g,\"reps\":%ld,\"bytes\":%.0f,\"gbps\":%.6g,\"copy_gbps\":%.6g,"
           "\"copy_nt_gbps\":%.6g,\"read_gbps\":%.6g,\"fraction\":%.6g,\"max_err\":%.3g,"
           "\"validated_rows\":%zu,\"date\":\"%s\",\"cpu\":",
           op_names[op], w->rows, w->cols, w->n, run->threads, nk_isa_name(nk_context_isa(ctx)),
           op == OP_GRPO ? "-" : proj_names[proj], kname, med, tmin, reps, bytes, gbps, copy,
           copy_nt, rd, frac, max_err, w->rows < SAMPLE_ROWS ? w->rows : (size_t)SAMPLE_ROWS,
           info->date);
    json_string(info->cpu);
    printf(",\"ncpu\":%ld,\"version\":\"%s\"}\n", info->ncpu, nk_version());
    fflush(stdout);
  } else {
    char shape_s[48];
    snprintf(shape_s, sizeof shape_s, "%zux%zu", w->rows, w->cols);
    printf("%-13s %-6s %-5s %-11s %3zu %-6s %-46s %11.2f %11.2f %8.2f %6.3f\n", op_names[op],
           "fwd", "f32", shape_s, run->threads, nk_isa_name(nk_context_isa(ctx)), kname,
           med * 1e6, tmin * 1e6, gbps, frac);
    fflush(stdout);
  }
  free(t);
  nk_context_destroy(ctx);
  return 1;
}

/* Default shapes: in cache and out of cache (>= 1 GiB moved per call). */
static int bench_optim_ops(const options *o, const runner *runs, size_t nruns,
                           const run_info *info) {
  int failures = 0;
  for (int op = OP_ADAMP; op < NOPS_ALL; op++) {
    if (!(o->op_mask >> op & 1)) continue;
    size_t shp[2][2];
    size_t nshapes = 0;
    if (o->rows && o->cols) {
      shp[nshapes][0] = o->rows;
      shp[nshapes++][1] = o->cols;
    } else if (op == OP_GRPO) {
      shp[nshapes][0] = 16384, shp[nshapes++][1] = 16;            /* 1 MiB */
      shp[nshapes][0] = (size_t)8 << 20, shp[nshapes++][1] = 16;  /* 1 GiB + sizes */
    } else {
      shp[nshapes][0] = 256, shp[nshapes++][1] = 1024;            /* 4-5 MiB of arrays */
      shp[nshapes][0] = 8192, shp[nshapes++][1] = op <= OP_ADAMP_PROJ ? 8192 : 11008; /* 1 GiB */
    }
    for (size_t s = 0; s < nshapes; s++) {
      optim_ws w = {.rows = shp[s][0], .cols = shp[s][1]};
      w.n = w.rows * w.cols;
      w.theta = xalloc(w.n * sizeof(float));
      if (op == OP_GRPO) {
        w.adv = xalloc(w.n * sizeof(float));
        w.sizes = xalloc(w.rows * sizeof(size_t));
      } else {
        w.g = xalloc(w.n * sizeof(float));
        w.m = xalloc(w.n * sizeof(float));
        w.v = xalloc(w.n * sizeof(float));
        w.theta0 = xalloc(w.n * sizeof(float));
      }
      for (size_t r = 0; r < nruns; r++) {
        failures += !bench_optim_case(op, &w, &runs[r], o->isa, o, info);
        if (o->isa == NK_ISA_AUTO) /* the scalar path in the same run, for the speedup */
          failures += !bench_optim_case(op, &w, &runs[r], NK_ISA_SCALAR, o, info);
      }
      free(w.theta);
      free(w.g);
      free(w.m);
      free(w.v);
      free(w.theta0);
      free(w.adv);
      free(w.sizes);
    }
  }
  return failures;
}

static void fill_run_info(run_info *info, int json) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(info->date, sizeof info->date, "%Y-%m-%dT%H:%M:%SZ", &tm);
  cpu_model(info->cpu, sizeof info->cpu);
  info->ncpu = online_cpus();
  info->json = json;
}

static int run_benchmarks(const options *o, const shape_list *shapes, runner *runs, size_t nruns,
                          nk_threadpool *pool_all) {
  run_info info;
  FILE *out = o->json ? stderr : stdout;
  int failures = 0;
  fill_run_info(&info, o->json);
  fprintf(out, "normkit %s bench, %s, %ld CPUs, %s\n", nk_version(), info.cpu, info.ncpu,
          info.date);
  measure_copies(runs, nruns, pool_all, out);
  fprintf(out, "\n");
  if (!o->json) print_table_header(stdout);
  for (size_t s = 0; s < shapes->n; s++) {
    for (int dt = 0; dt < 3; dt++) {
      if (!(shapes->s[s].dtype_mask >> dt & 1)) continue;
      workset w;
      double t0 = now_s();
      const unsigned chn =
          1u << OP_BATCHNORM | 1u << OP_GROUPNORM | 1u << OP_INSTANCENORM | RESNORM_OPS;
      const unsigned ops = shapes->s[s].op_mask & o->op_mask &
                           (shapes->s[s].spatial ? chn : ~chn) & ((1u << NOPS) - 1);
      if (ops == 0) continue;
      workset_create(&w, &shapes->s[s], (nk_dtype)dt, (o->dir_mask & ~1u) != 0,
                     (ops & QUANT_OPS) != 0, pool_all);
      fprintf(stderr, "[%s %zux%zu%s: buffers filled in %.2f s]\n", dtype_names[dt],
              shapes->s[s].rows, shapes->s[s].cols, shapes->s[s].spatial ? "xS" : "",
              now_s() - t0);
      failures += bench_workset(&w, ops, shapes->s[s].layout_mask & o->layout_mask, o, runs,
                                nruns, &info);
      workset_destroy(&w);
    }
  }
  failures += bench_optim_ops(o, runs, nruns, &info);
  return failures;
}

static int cmd_bench(int argc, char **argv) {
  options o;
  shape_list shapes;
  runner runs[MAX_THREAD_COUNTS];
  size_t counts[MAX_THREAD_COUNTS], nruns = 0;
  nk_threadpool *pool_all = NULL;
  int failures = 0, ok = 1;
  double t0 = now_s();
  if (!parse_bench_args(argc, argv, &o)) return usage(stderr), 2;
  normal_table_init();
  if (!build_shapes(&o, &shapes)) return 2;
  if (!report_status(nk_threadpool_create(0, &pool_all), NULL, "threadpool_create")) return 1;
  size_t n = thread_counts(&o, nk_threadpool_size(pool_all), counts);
  for (; nruns < n && ok; nruns++) ok = runner_create(&runs[nruns], counts[nruns], pool_all, o.isa);
  if (ok) failures = run_benchmarks(&o, &shapes, runs, nruns, pool_all);
  for (size_t i = 0; i < nruns; i++) runner_destroy(&runs[i]);
  free_anchor();
  nk_threadpool_destroy(pool_all);
  if (!ok) return 1;
  fprintf(o.json ? stderr : stdout, "\n%d failure%s, total %.1f s\n", failures,
          failures == 1 ? "" : "s", now_s() - t0);
  return failures ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* info                                                                                        */
/* ------------------------------------------------------------------------------------------ */

static void print_kernels(const nk_context *ctx, const char *title) {
  printf("\nkernels, %s:\n", title);
  for (int op = 0; op < NK_OP_COUNT; op++) {
    for (int dt = 0; dt < 3; dt++) {
      const char *k = ctx ? nk_kernel_name_ex(ctx, (nk_op)op, (nk_dtype)dt)
                          : nk_kernel_name((nk_op)op, (nk_dtype)dt);
      printf("  %-16s %-5s %s\n", nk_op_name((nk_op)op), nk_dtype_name((nk_dtype)dt),
             k ? k : "(none)");
    }
  }
}

static void print_features(void) {
  const nk_cpu_features *f = nk_cpu_features_get();
  const struct { const char *name; int on; } feats[] = {
      {"avx2", f->avx2},         {"fma", f->fma},           {"f16c", f->f16c},
      {"avx512f", f->avx512f},   {"avx512bw", f->avx512bw}, {"avx512vl", f->avx512vl},
      {"avx512dq", f->avx512dq}, {"avx512bf16", f->avx512bf16}, {"avx512fp16", f->avx512fp16}};
  printf("cpu features:");
  for (size_t i = 0; i < sizeof feats / sizeof feats[0]; i++)
    printf(" %s%s", feats[i].on ? "+" : "-", feats[i].name);
  printf("\n");
}

static int cmd_info(void) {
  static const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512};
  char cpu[256], title[64];
  const char *env_error = nk_isa_env_error();
  cpu_model(cpu, sizeof cpu);
  printf("normkit %s\ncpu: %s, %ld online CPUs\n", nk_version(), cpu, online_cpus());
  print_features();
  printf("isa paths:");
  for (size_t i = 0; i < 3; i++)
    printf(" %s (%s)", nk_isa_name(isas[i]), nk_isa_supported(isas[i]) ? "usable" : "not usable");
  printf("\ndefault isa: %s%s%s\n", nk_isa_name(nk_isa_default()), env_error ? "; NK_ISA: " : "",
         env_error ? env_error : "");
  snprintf(title, sizeof title, "default path (%s)", nk_isa_name(nk_isa_default()));
  print_kernels(NULL, title);
  for (size_t i = 0; i < 3; i++) {
    nk_context *ctx;
    if (!nk_isa_supported(isas[i])) continue;
    if (!report_status(nk_context_create(&ctx), NULL, "context_create")) return 1;
    if (report_status(nk_context_set_isa(ctx, isas[i]), ctx, "context_set_isa")) {
      snprintf(title, sizeof title, "forced %s", nk_isa_name(isas[i]));
      print_kernels(ctx, title);
    }
    nk_context_destroy(ctx);
  }
  return 0;
}

/* normkit bench --cuda: tools/bench_cuda.c when built with the CUDA backend. */
static int cmd_bench_cuda(int argc, char **argv) {
#ifdef NK_HAVE_CUDA
  return nk_bench_cuda_main(argc, argv);
#else
  (void)argc, (void)argv;
  fprintf(stderr, "normkit was built without CUDA (configure with -DNK_CUDA=ON)\n");
  return 2;
#endif
}

static int has_option(int argc, char **argv, const char *name) {
  for (int i = 0; i < argc; i++)
    if (strcmp(argv[i], name) == 0) return 1;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return usage(stderr), 2;
  if (strcmp(argv[1], "info") == 0) return cmd_info();
  if (strcmp(argv[1], "bench") == 0 && has_option(argc - 2, argv + 2, "--cuda"))
    return cmd_bench_cuda(argc - 2, argv + 2);
  if (strcmp(argv[1], "bench") == 0) return cmd_bench(argc - 2, argv + 2);
  if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
    return usage(stdout), 0;
  fprintf(stderr, "normkit: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
