/*
 * bench_cuda.c — `normkit bench --cuda`: the CUDA backend (include/normkit_cuda.h) timed on the
 * GPU and reported against the device's copy bandwidth measured in the same run (the benchmark
 * contract of DESIGN.md: with --json, stdout carries only JSON lines, one per case, with the CPU
 * bench's keys; threads is 0, isa "cuda", device the GPU's name).
 *
 * How it measures
 *   - Copy bandwidth first: cudaMemcpyAsync device-to-device of a 2 GiB buffer into another
 *     2 GiB buffer, bytes = read + write, median of max(COPY_MIN_REPS, --reps) copies, each
 *     timed with cudaEvents, after COPY_WARMUP untimed copies. A C file cannot launch its own
 *     copy kernel, so the runtime's copy is the anchor. It is reported as copy_gbps and as
 *     copy_nt_gbps (the same value: there is no second kind of copy here), so that
 *     fraction = gbps / max(copy_gbps, copy_nt_gbps) = gbps / copy_gbps.
 *   - Each shape and dtype gets its device buffers (x, y, dy, dx as its cases need; f32 gamma,
 *     beta, dgamma, dbeta, mean, rstd; int64 targets), freed before the next shape. The inputs
 *     hold normal random numbers (never zeros): POOL_ELEMS of them are generated on the host
 *     once per run (splitmix64 + Box-Muller, rounded to each dtype), copied to the start of
 *     each tensor from a tensor-specific offset, and the tensor is completed by doubling
 *     device-to-device copies (its rows repeat with a period of POOL_ELEMS elements: the data
 *     does not change the work, only the values). Targets are uniform in [0, cols). Inputs are
 *     never written by the cases.
 *   - Each case runs once (a backward first runs its own forward for the statistics or y), then
 *     WARMUP_CALLS calls, then --reps (20) timed reps. Before each rep a SCRATCH_BYTES buffer is
 *     written with cudaMemsetAsync (outside the events) so that the 50 MB L2 of an H100 holds
 *     none of the case's data; then cudaEventRecord, ONE call, cudaEventRecord. All reps of a
 *     case are enqueued before one synchronisation, so the memset ahead of each rep hides the
 *     host's launch latency and the events time the GPU work only. Median and minimum reported.
 *   - bytes are the minimal bytes, as in tools/normkit.c (parameters and statistics f32):
 *       row norms fwd: x read, y written, gamma (+ beta) read, rstd (+ mean) written;
 *       row norms bwd: x, dy, gamma, rstd (+ mean) read, dx, dgamma (+ dbeta) written;
 *       softmax, log_softmax fwd: x -> y; bwd: y, dy -> dx;
 *       cross_entropy (reduction mean): logits and targets (8 B/row) read, the loss written,
 *       and for fwdbwd dlogits written.
 *     The row norms' forward runs with gamma (and beta for LayerNorm) and saves the
 *     statistics; the backward starts from x (not NK_NORM_BWD_FROM_Y) with dgamma (and dbeta)
 *     and a preallocated workspace.
 *   - No correctness check here (tests/cuda does that); every nk_status and CUDA error is
 *     checked. A case that returns an nk_status error is reported and skipped; a CUDA error
 *     ends the run.
 * Exit status: 0 success, 1 an error (no device, a CUDA error, an nk_status error), 2 a usage
 * error.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime.h>

#include "normkit.h"
#include "normkit_cuda.h"
#include "bench_cuda.h"

#define MIB ((size_t)1 << 20)
#define GIB ((size_t)1 << 30)
#define COPY_BYTES (2 * GIB)         /* per copy buffer: 2 GiB source, 2 GiB destination */
#define COPY_MIN_REPS 20
#define COPY_WARMUP 3
#define SCRATCH_BYTES (256 * MIB)    /* written before each rep: flushes L2 (50 MB on H100) */
#define WARMUP_CALLS 3
#define DEFAULT_REPS 20
#define MAX_REPS 100000
#define POOL_ELEMS ((size_t)1 << 24) /* host random numbers, per dtype */
#define MEM_HEADROOM GIB             /* a shape must leave this much device memory free */
#define LN_EPS 1e-5f
#define RMS_EPS 1e-6f

/* ------------------------------------------------------------------------------------------ */
/* Ops, directions, shapes, options                                                           */
/* ------------------------------------------------------------------------------------------ */

enum { OP_LAYERNORM, OP_RMSNORM, OP_SOFTMAX, OP_LOG_SOFTMAX, OP_CROSS_ENTROPY, NOPS };
enum { DIR_FWD, DIR_BWD, DIR_FWDBWD, NDIRS };

static const char *const op_names[NOPS] = {"layernorm", "rmsnorm", "softmax", "log_softmax",
                                           "cross_entropy"};
static const char *const dir_names[NDIRS] = {"fwd", "bwd", "fwdbwd"};
static const char *const dtype_names[3] = {"f32", "bf16", "f16"}; /* indexed by nk_dtype */

#define BIT(i) (1u << (i))
#define ROWNORM_OPS (BIT(OP_LAYERNORM) | BIT(OP_RMSNORM))
#define SOFTMAX_OPS (BIT(OP_SOFTMAX) | BIT(OP_LOG_SOFTMAX))
#define ROW_OPS (ROWNORM_OPS | SOFTMAX_OPS)
#define CE_OPS BIT(OP_CROSS_ENTROPY)
#define ALL_OPS (ROW_OPS | CE_OPS)
#define F32 BIT(NK_DTYPE_F32)
#define BF16 BIT(NK_DTYPE_BF16)

static int is_rownorm(int op) { return op == OP_LAYERNORM || op == OP_RMSNORM; }
static int is_softmax(int op) { return op == OP_SOFTMAX || op == OP_LOG_SOFTMAX; }

/* Cross-entropy runs forward (loss) and fused forward+backward; the others fwd and bwd. */
static int op_has_dir(int op, int dir) {
  return op == OP_CROSS_ENTROPY ? dir != DIR_BWD : dir != DIR_FWDBWD;
}

typedef struct cu_shape {
  size_t rows, cols;
  unsigned dtype_mask; /* bit i: nk_dtype i */
  unsigned op_mask;    /* the ops this shape runs */
} cu_shape;

/* The default run: bf16 rows of about 256 MiB (rows = 2^27 / cols) from 1024 to 262144
 * columns, 32768x4096 in f32 too, an f32 softmax case of 4 GiB, and cross-entropy at three
 * vocabularies. */
static const cu_shape default_shapes[] = {
    {131072, 1024, BF16, ROW_OPS},
    {32768, 4096, F32 | BF16, ROW_OPS},
    {8192, 16384, BF16, ROW_OPS},
    {2048, 65536, BF16, ROW_OPS},
    {512, 262144, BF16, ROW_OPS},
    {8192, 131072, F32, SOFTMAX_OPS},
    {8192, 32000, BF16, CE_OPS},
    {8192, 128256, BF16, CE_OPS},
    {8192, 262144, BF16, CE_OPS},
};
static const cu_shape quick_shapes[] = {
    {32768, 4096, BF16, ALL_OPS},
    {4096, 262144, BF16, ALL_OPS},
};

typedef struct cu_options {
  int json, quick, dtype_given;
  unsigned op_mask, dir_mask, dtype_mask;
  size_t rows, cols; /* --shape, or 0 */
  long reps;
} cu_options;

static void usage(FILE *f) {
  fprintf(f,
          "usage: normkit bench --cuda [--json] [--quick] [--op NAME[,NAME]]\n"
          "                     [--direction fwd|bwd|fwdbwd] [--dtype f32|bf16|f16]\n"
          "                     [--shape RxC] [--reps N]\n"
          "times the CUDA backend (normkit_cuda.h) on GPU 0 against the device-to-device copy\n"
          "bandwidth measured in the same run (cudaMemcpyAsync, 2 GiB).\n"
          "  --json        stdout: one JSON line per case (device and progress go to stderr)\n"
          "  --quick       only 32768x4096 and 4096x262144 bf16, every op\n"
          "  --op, --direction, --dtype   select (comma lists allowed); ops: layernorm rmsnorm\n"
          "                softmax log_softmax (fwd, bwd) cross_entropy (fwd, fwdbwd)\n"
          "  --shape RxC   one shape (rows x cols) for every selected op (dtype default bf16)\n"
          "  --reps N      timed reps per case (default %d; each after a 256 MiB L2 flush)\n"
          "Default: bf16 at 131072x1024, 32768x4096, 8192x16384, 2048x65536, 512x262144 (row\n"
          "norms, softmax, log_softmax), 32768x4096 f32 too, 8192x131072 f32 (softmax,\n"
          "log_softmax), cross_entropy at 8192x32000, 8192x128256, 8192x262144 bf16. --dtype\n"
          "replaces the defaults' dtypes.\n",
          DEFAULT_REPS);
}

/* Parses a comma list of names into a bit mask. Returns 0 on an unknown or empty name. */
static int parse_mask(const char *s, const char *const *names, int n, unsigned *mask) {
  *mask = 0;
  while (*s) {
    size_t len = strcspn(s, ",");
    int found = 0;
    for (int i = 0; i < n; i++)
      if (strlen(names[i]) == len && strncmp(s, names[i], len) == 0) *mask |= BIT(i), found = 1;
    if (!found || len == 0) return 0;
    s += len + (s[len] == ',');
  }
  return *mask != 0;
}

static int parse_size(const char *s, size_t *out) {
  char *end;
  if (s[0] < '0' || s[0] > '9') return 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s || *end != '\0' || v == 0 || v != (size_t)v) return 0;
  *out = (size_t)v;
  return 1;
}

static int parse_shape(const char *s, size_t *rows, size_t *cols) {
  char buf[64];
  if (snprintf(buf, sizeof buf, "%s", s) >= (int)sizeof buf) return 0;
  char *x = strchr(buf, 'x');
  if (x == NULL) return 0;
  *x = '\0';
  if (!parse_size(buf, rows) || !parse_size(x + 1, cols)) return 0;
  return *rows <= SIZE_MAX / *cols / 8; /* keep every byte count representable */
}

static int parse_args(int argc, char **argv, cu_options *o) {
  *o = (cu_options){.op_mask = ALL_OPS, .dir_mask = BIT(NDIRS) - 1, .dtype_mask = BF16,
                    .reps = DEFAULT_REPS};
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *eq = strchr(a, '=');
    char name[32];
    if (strcmp(a, "--cuda") == 0) continue;
    if (strcmp(a, "--json") == 0) { o->json = 1; continue; }
    if (strcmp(a, "--quick") == 0) { o->quick = 1; continue; }
    size_t len = eq ? (size_t)(eq - a) : strlen(a);
    if (len >= sizeof name) len = sizeof name - 1;
    memcpy(name, a, len);
    name[len] = '\0';
    static const char *const value_options[] = {"--op", "--direction", "--dtype", "--shape",
                                                "--reps"};
    int known = 0;
    for (size_t k = 0; k < sizeof value_options / sizeof value_options[0]; k++)
      known |= strcmp(name, value_options[k]) == 0;
    if (!known) return fprintf(stderr, "normkit: unknown option %s\n", a), 0;
    const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    size_t n = 0;
    int ok = v != NULL;
    if (ok && strcmp(name, "--op") == 0) ok = parse_mask(v, op_names, NOPS, &o->op_mask);
    else if (ok && strcmp(name, "--direction") == 0)
      ok = parse_mask(v, dir_names, NDIRS, &o->dir_mask);
    else if (ok && strcmp(name, "--dtype") == 0)
      ok = (o->dtype_given = 1, parse_mask(v, dtype_names, 3, &o->dtype_mask));
    else if (ok && strcmp(name, "--shape") == 0) ok = parse_shape(v, &o->rows, &o->cols);
    else if (ok && strcmp(name, "--reps") == 0)
      ok = parse_size(v, &n) && n <= MAX_REPS ? (o->reps = (long)n, 1) : 0;
    if (!ok) return fprintf(stderr, "normkit: bad value for %s\n", name), 0;
  }
  return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Functions below return 1 (done), 0 (this case failed: report and go on) or -1 (a CUDA error:
 * the run ends). */
static int cuda_check(cudaError_t e, const char *what, int line) {
  if (e == cudaSuccess) return 1;
  fprintf(stderr, "normkit: CUDA error (bench_cuda.c:%d) %s: %s: %s\n", line, what,
          cudaGetErrorName(e), cudaGetErrorString(e));
  return 0;
}
#define CK(call)                                                                                 \
  do {                                                                                           \
    if (!cuda_check((call), #call, __LINE__)) return -1;                                         \
  } while (0)

/* An nk_status: OK -> 1; DEVICE_ERROR -> -1 (with the CUDA error); other errors -> 0. */
static int nk_check(nk_status st, const char *what, const char *label) {
  if (st == NK_STATUS_OK) return 1;
  fprintf(stderr, "normkit: %s: %s failed: %s%s%s\n", label, what, nk_status_string(st),
          st == NK_STATUS_DEVICE_ERROR ? ": " : "",
          st == NK_STATUS_DEVICE_ERROR ? nk_cuda_last_error() : "");
  return st == NK_STATUS_DEVICE_ERROR ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The run: device, stream, events, scratch, random pool                                       */
/* ------------------------------------------------------------------------------------------ */

typedef struct cu_run {
  cudaStream_t stream;
  cudaEvent_t *start, *stop; /* nev each */
  long nev;
  double *times;             /* nev */
  void *scratch;             /* SCRATCH_BYTES, the L2 flush */
  unsigned flush_count;
  void *pool[3];             /* host: POOL_ELEMS normal numbers per dtype (NULL until used) */
  uint64_t rng;
  struct cudaDeviceProp prop;
  double copy_gbps;
  char date[32];
} cu_run;

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform in (0, 1): never 0, so the logarithm below is finite. */
static double uniform01(uint64_t *s) { return ((double)(splitmix64(s) >> 11) + 0.5) * 0x1p-53; }

/* The host pool of normal numbers in dtype dt (f32 generated first, the others rounded from
 * it). Returns NULL when out of memory. */
static const void *pool_get(cu_run *g, nk_dtype dt) {
  if (g->pool[dt]) return g->pool[dt];
  if (g->pool[NK_DTYPE_F32] == NULL) {
    float *p = malloc(POOL_ELEMS * sizeof *p);
    if (p == NULL) return NULL;
    uint64_t s = 0x6E6F726D6B6974ull; /* "normkit" */
    for (size_t i = 0; i < POOL_ELEMS; i += 2) {
      const double r = sqrt(-2.0 * log(uniform01(&s))), t = 6.283185307179586 * uniform01(&s);
      float a = (float)(r * cos(t)), b = (float)(r * sin(t));
      p[i] = a != 0.0f ? a : 0.5f; /* never zeros */
      p[i + 1] = b != 0.0f ? b : -0.5f;
    }
    g->pool[NK_DTYPE_F32] = p;
  }
  if (dt != NK_DTYPE_F32) {
    const float *f = g->pool[NK_DTYPE_F32];
    uint16_t *p = malloc(POOL_ELEMS * sizeof *p);
    if (p == NULL) return NULL;
    for (size_t i = 0; i < POOL_ELEMS; i++) {
      const float v = fabsf(f[i]) < 0x1p-14f ? copysignf(0x1p-14f, f[i]) : f[i]; /* f16: no 0 */
      p[i] = dt == NK_DTYPE_BF16 ? nk_f32_to_bf16(v) : nk_f32_to_f16(v);
    }
    g->pool[dt] = p;
  }
  return g->pool[dt];
}

/* Fills n elements of dtype dt at device address dst with pool numbers from a random offset:
 * the first min(n, POOL_ELEMS) from the host, the rest by doubling on the device. */
static int fill_normal(cu_run *g, void *dst, size_t n, nk_dtype dt) {
  const size_t esz = nk_dtype_size(dt);
  const unsigned char *src = pool_get(g, dt);
  unsigned char *d = dst;
  if (src == NULL) return fprintf(stderr, "normkit: out of host memory\n"), -1;
  const size_t first = n < POOL_ELEMS ? n : POOL_ELEMS;
  const size_t off = (size_t)(splitmix64(&g->rng) % POOL_ELEMS);
  const size_t a = POOL_ELEMS - off < first ? POOL_ELEMS - off : first;
  CK(cudaMemcpyAsync(d, src + off * esz, a * esz, cudaMemcpyHostToDevice, g->stream));
  if (first > a)
    CK(cudaMemcpyAsync(d + a * esz, src, (first - a) * esz, cudaMemcpyHostToDevice, g->stream));
  for (size_t done = first; done < n;) {
    const size_t k = done < n - done ? done : n - done;
    CK(cudaMemcpyAsync(d + done * esz, d, k * esz, cudaMemcpyDeviceToDevice, g->stream));
    done += k;
  }
  return 1;
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median and minimum of g->times[0..n). */
static void median_min(cu_run *g, long n, double *median, double *min) {
  qsort(g->times, (size_t)n, sizeof *g->times, cmp_double);
  *min = g->times[0];
  *median = n % 2 ? g->times[n / 2] : 0.5 * (g->times[n / 2 - 1] + g->times[n / 2]);
}

/* Reads the elapsed times of reps [0, n) into g->times (seconds), after a synchronisation. */
static int read_times(cu_run *g, long n) {
  CK(cudaStreamSynchronize(g->stream));
  for (long i = 0; i < n; i++) {
    float ms = 0.0f;
    CK(cudaEventElapsedTime(&ms, g->start[i], g->stop[i]));
    g->times[i] = 1e-3 * (double)ms;
  }
  return 1;
}

/* Device-to-device copy bandwidth (GB/s, read + write) of COPY_BYTES: median of nreps. */
static int measure_copy(cu_run *g, long nreps) {
  void *src = NULL, *dst = NULL;
  int rc = -1;
  double median, min;
  if (!cuda_check(cudaMalloc(&src, COPY_BYTES), "cudaMalloc(copy source)", __LINE__) ||
      !cuda_check(cudaMalloc(&dst, COPY_BYTES), "cudaMalloc(copy destination)", __LINE__))
    goto done;
#define CKG(call)                                                                                \
  if (!cuda_check((call), #call, __LINE__)) goto done
  CKG(cudaMemsetAsync(src, 0x3c, COPY_BYTES, g->stream)); /* bf16 1.0 pairs; never zeros */
  for (int i = 0; i < COPY_WARMUP; i++)
    CKG(cudaMemcpyAsync(dst, src, COPY_BYTES, cudaMemcpyDeviceToDevice, g->stream));
  for (long i = 0; i < nreps; i++) {
    CKG(cudaEventRecord(g->start[i], g->stream));
    CKG(cudaMemcpyAsync(dst, src, COPY_BYTES, cudaMemcpyDeviceToDevice, g->stream));
    CKG(cudaEventRecord(g->stop[i], g->stream));
  }
#undef CKG
  if (read_times(g, nreps) < 0) goto done;
  median_min(g, nreps, &median, &min);
  g->copy_gbps = 2.0 * (double)COPY_BYTES / median / 1e9;
  rc = 1;
done:
  if (!cuda_check(cudaFree(src), "cudaFree", __LINE__)) rc = -1;
  if (!cuda_check(cudaFree(dst), "cudaFree", __LINE__)) rc = -1;
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Worksets (the buffers of one shape and dtype) and cases                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct cu_work {
  size_t rows, cols;
  nk_dtype dtype;
  void *x, *y, *dy, *dx;                /* rows x cols of dtype (those the cases need) */
  float *gamma, *beta, *dgamma, *dbeta; /* cols f32 (row norms) */
  float *mean, *rstd;                   /* rows f32 (row norms) */
  int64_t *target;                      /* rows (cross-entropy) */
  float *loss;                          /* 1 float (reduction mean) */
} cu_work;

static void work_destroy(cu_work *w) {
  void *bufs[] = {w->x,    w->y,    w->dy,   w->dx,     w->gamma, w->beta,
                  w->dgamma, w->dbeta, w->mean, w->rstd, w->target, w->loss};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    (void)cuda_check(cudaFree(bufs[i]), "cudaFree", __LINE__);
  memset(w, 0, sizeof *w);
}

/* What the selected cases of ops need: bit 0 x, 1 y, 2 dy, 3 dx. */
static unsigned matrices_needed(unsigned ops, unsigned dirs) {
  unsigned m = 0;
  if (ops & ROW_OPS) m |= 1u | 2u | ((dirs & BIT(DIR_BWD)) ? 4u | 8u : 0u);
  if (ops & CE_OPS) m |= 1u | ((dirs & BIT(DIR_FWDBWD)) ? 8u : 0u);
  return m;
}

#define DMALLOC(ptr, bytes) CK(cudaMalloc((void **)&(ptr), (bytes)))

/* Allocates and fills the buffers of one shape and dtype. Returns 1, 0 (does not fit: skipped)
 * or -1. */
static int work_create(cu_run *g, cu_work *w, const cu_shape *s, nk_dtype dt, unsigned ops,
                       unsigned dirs) {
  const size_t esz = nk_dtype_size(dt), n = s->rows * s->cols, mat = n * esz;
  const unsigned m = matrices_needed(ops, dirs);
  const size_t nmat = (size_t)((m & 1) + (m >> 1 & 1) + (m >> 2 & 1) + (m >> 3 & 1));
  size_t free_b = 0, total_b = 0;
  memset(w, 0, sizeof *w);
  w->rows = s->rows, w->cols = s->cols, w->dtype = dt;
  CK(cudaMemGetInfo(&free_b, &total_b));
  const double need = (double)nmat * (double)mat + 8.0 * (double)(s->rows + s->cols) * 4.0;
  if (need + (double)MEM_HEADROOM > (double)free_b) {
    fprintf(stderr,
            "normkit: %zux%zu %s needs %.2f GiB of device memory, %.2f GiB of %.2f GiB free: "
            "skipped\n",
            s->rows, s->cols, dtype_names[dt], need / (double)GIB, (double)free_b / (double)GIB,
            (double)total_b / (double)GIB);
    return 0;
  }
  if (m & 1) DMALLOC(w->x, mat);
  if (m & 2) DMALLOC(w->y, mat);
  if (m & 4) DMALLOC(w->dy, mat);
  if (m & 8) DMALLOC(w->dx, mat);
  if (m & 1 && fill_normal(g, w->x, n, dt) < 0) return -1;
  if (m & 4 && fill_normal(g, w->dy, n, dt) < 0) return -1;
  if (m & 2) CK(cudaMemsetAsync(w->y, 0, mat, g->stream)); /* outputs: written by the cases */
  if (m & 8) CK(cudaMemsetAsync(w->dx, 0, mat, g->stream));
  if (ops & ROWNORM_OPS) {
    const size_t cb = s->cols * sizeof(float), rb = s->rows * sizeof(float);
    DMALLOC(w->gamma, cb);
    DMALLOC(w->beta, cb);
    DMALLOC(w->dgamma, cb);
    DMALLOC(w->dbeta, cb);
    DMALLOC(w->mean, rb);
    DMALLOC(w->rstd, rb);
    if (fill_normal(g, w->gamma, s->cols, NK_DTYPE_F32) < 0) return -1;
    if (fill_normal(g, w->beta, s->cols, NK_DTYPE_F32) < 0) return -1;
    CK(cudaMemsetAsync(w->dgamma, 0, cb, g->stream));
    CK(cudaMemsetAsync(w->dbeta, 0, cb, g->stream));
    CK(cudaMemsetAsync(w->mean, 0, rb, g->stream));
    CK(cudaMemsetAsync(w->rstd, 0, rb, g->stream));
  }
  if (ops & CE_OPS) {
    int64_t *t = malloc(s->rows * sizeof *t);
    if (t == NULL) return fprintf(stderr, "normkit: out of host memory\n"), -1;
    for (size_t i = 0; i < s->rows; i++) t[i] = (int64_t)(splitmix64(&g->rng) % s->cols);
    int rc = 1;
    if (!cuda_check(cudaMalloc((void **)&w->target, s->rows * sizeof *t), "cudaMalloc",
                    __LINE__) ||
        !cuda_check(cudaMalloc((void **)&w->loss, sizeof(float)), "cudaMalloc", __LINE__) ||
        !cuda_check(cudaMemcpy(w->target, t, s->rows * sizeof *t, cudaMemcpyHostToDevice),
                    "cudaMemcpy(targets)", __LINE__))
      rc = -1;
    free(t);
    if (rc < 0) return -1;
  }
  CK(cudaStreamSynchronize(g->stream));
  return 1;
}

typedef struct cu_case {
  int op, dir;
  const cu_work *w;
  nk_norm_desc ndesc;
  nk_softmax_desc sdesc;
  nk_cross_entropy_desc xdesc;
  void *ws;
  size_t ws_size;
  char label[96];
} cu_case;

static const char *kernel_of(const cu_case *c) {
  switch (c->op) {
    case OP_LAYERNORM: return c->dir == DIR_FWD ? "nk_cuda_layernorm_fwd" : "nk_cuda_layernorm_bwd";
    case OP_RMSNORM: return c->dir == DIR_FWD ? "nk_cuda_rmsnorm_fwd" : "nk_cuda_rmsnorm_bwd";
    case OP_SOFTMAX:
    case OP_LOG_SOFTMAX: return c->dir == DIR_FWD ? "nk_cuda_softmax_fwd" : "nk_cuda_softmax_bwd";
    default: return "nk_cuda_cross_entropy";
  }
}

/* Minimal bytes: each input read once, each output written once (see the top comment). */
static double case_bytes(const cu_case *c) {
  const cu_work *w = c->w;
  const double mat = (double)w->rows * (double)w->cols * (double)nk_dtype_size(w->dtype);
  const double per_col = 4.0 * (double)w->cols, per_row = 4.0 * (double)w->rows;
  const double ln = c->op == OP_LAYERNORM;
  if (c->op == OP_CROSS_ENTROPY) return mat * (1 + (c->dir == DIR_FWDBWD)) + 2 * per_row + 4;
  if (is_softmax(c->op)) return c->dir == DIR_FWD ? 2 * mat : 3 * mat;
  if (c->dir == DIR_FWD) return 2 * mat + per_col * (1 + ln) + per_row * (1 + ln);
  return 3 * mat + per_col + per_row * (1 + ln) + per_col * (1 + ln);
}

/* The forward of the case's op (a backward's preparation, or the fwd case itself). */
static nk_status call_fwd(const cu_case *c, cudaStream_t s) {
  const cu_work *w = c->w;
  switch (c->op) {
    case OP_LAYERNORM:
      return nk_cuda_layernorm_fwd(s, &c->ndesc, w->x, NULL, w->gamma, w->beta, w->y, NULL,
                                   w->mean, w->rstd);
    case OP_RMSNORM:
      return nk_cuda_rmsnorm_fwd(s, &c->ndesc, w->x, NULL, w->gamma, NULL, w->y, NULL, w->rstd);
    case OP_SOFTMAX:
    case OP_LOG_SOFTMAX: return nk_cuda_softmax_fwd(s, &c->sdesc, w->x, NULL, NULL, w->y, NULL);
    default:
      return nk_cuda_cross_entropy(s, &c->xdesc, w->x, w->target, w->loss, NULL, NULL, c->ws,
                                   c->ws_size);
  }
}

/* ONE call of the case: what the events time. */
static nk_status call_case(const cu_case *c, cudaStream_t s) {
  const cu_work *w = c->w;
  if (c->dir == DIR_FWD) return call_fwd(c, s);
  switch (c->op) {
    case OP_LAYERNORM:
      return nk_cuda_layernorm_bwd(s, &c->ndesc, w->x, w->gamma, NULL, w->mean, w->rstd, w->dy,
                                   NULL, w->dx, w->dgamma, w->dbeta, c->ws, c->ws_size);
    case OP_RMSNORM:
      return nk_cuda_rmsnorm_bwd(s, &c->ndesc, w->x, w->gamma, NULL, w->rstd, w->dy, NULL,
                                 w->dx, w->dgamma, NULL, c->ws, c->ws_size);
    case OP_SOFTMAX:
    case OP_LOG_SOFTMAX:
      return nk_cuda_softmax_bwd(s, &c->sdesc, w->y, w->dy, NULL, NULL, w->dx, NULL);
    default: /* cross-entropy fwdbwd: the loss and dlogits */
      return nk_cuda_cross_entropy(s, &c->xdesc, w->x, w->target, w->loss, w->dx, NULL, c->ws,
                                   c->ws_size);
  }
}

/* Descriptors, workspace, and for a backward the forward that produces its inputs. */
static int case_prepare(cu_run *g, cu_case *c) {
  const cu_work *w = c->w;
  int rc;
  if (is_rownorm(c->op)) {
    c->ndesc = nk_norm_desc_dense(w->rows, w->cols, w->dtype,
                                  c->op == OP_RMSNORM ? RMS_EPS : LN_EPS);
    if (c->dir != DIR_FWD) {
      rc = nk_check(nk_cuda_rownorm_bwd_workspace_size(&c->ndesc, 1, &c->ws_size),
                    "nk_cuda_rownorm_bwd_workspace_size", c->label);
      if (rc <= 0) return rc;
    }
  } else if (is_softmax(c->op)) {
    c->sdesc = nk_softmax_desc_dense(w->rows, w->cols, w->dtype);
    if (c->op == OP_LOG_SOFTMAX) c->sdesc.flags |= NK_SOFTMAX_LOG;
  } else {
    c->xdesc = nk_cross_entropy_desc_dense(w->rows, w->cols, w->dtype);
    c->xdesc.reduction = NK_REDUCTION_MEAN;
    rc = nk_check(nk_cuda_cross_entropy_workspace_size(&c->xdesc, &c->ws_size),
                  "nk_cuda_cross_entropy_workspace_size", c->label);
    if (rc <= 0) return rc;
  }
  if (c->ws_size) {
    CK(cudaMalloc(&c->ws, c->ws_size));
    CK(cudaMemsetAsync(c->ws, 0, c->ws_size, g->stream));
  }
  if (c->dir == DIR_BWD) { /* the statistics (row norms) or y (softmax family) */
    rc = nk_check(call_fwd(c, g->stream), "the forward (preparing the backward)", c->label);
    if (rc <= 0) return rc;
  }
  CK(cudaStreamSynchronize(g->stream));
  return 1;
}

/* Runs the case once, warms up, times g->nev... reps. */
static int case_time(cu_run *g, const cu_case *c, long reps, double *median, double *min) {
  int rc = nk_check(call_case(c, g->stream), kernel_of(c), c->label);
  if (rc <= 0) return rc;
  CK(cudaStreamSynchronize(g->stream));
  CK(cudaGetLastError());
  for (int i = 0; i < WARMUP_CALLS; i++)
    if ((rc = nk_check(call_case(c, g->stream), kernel_of(c), c->label)) <= 0) return rc;
  for (long i = 0; i < reps; i++) {
    /* the L2 flush, outside the events; a different byte each time */
    CK(cudaMemsetAsync(g->scratch, (int)(++g->flush_count & 0xff), SCRATCH_BYTES, g->stream));
    CK(cudaEventRecord(g->start[i], g->stream));
    rc = nk_check(call_case(c, g->stream), kernel_of(c), c->label);
    CK(cudaEventRecord(g->stop[i], g->stream));
    if (rc <= 0) {
      CK(cudaStreamSynchronize(g->stream));
      return rc;
    }
  }
  if ((rc = read_times(g, reps)) < 0) return rc;
  CK(cudaGetLastError());
  median_min(g, reps, median, min);
  return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Output                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static void json_string(const char *s) {
  putchar('"');
  for (; s && *s; s++) {
    if (*s == '"' || *s == '\\') printf("\\%c", *s);
    else if ((unsigned char)*s < 0x20) printf("\\u%04x", (unsigned)(unsigned char)*s);
    else putchar(*s);
  }
  putchar('"');
}

static void print_table_header(void) {
  printf("%-13s %-6s %-5s %-12s %-24s %11s %11s %9s %6s\n", "op", "dir", "dtype", "shape",
         "kernel", "median_us", "min_us", "GB/s", "frac");
}

static void report(const cu_run *g, const cu_case *c, long reps, double median, double min,
                   int json) {
  const cu_work *w = c->w;
  const double bytes = case_bytes(c), gbps = bytes / median / 1e9;
  const double fraction = gbps / g->copy_gbps;
  if (!json) {
    char shape_s[48];
    snprintf(shape_s, sizeof shape_s, "%zux%zu", w->rows, w->cols);
    printf("%-13s %-6s %-5s %-12s %-24s %11.2f %11.2f %9.1f %6.3f\n", op_names[c->op],
           dir_names[c->dir], dtype_names[w->dtype], shape_s, kernel_of(c), median * 1e6,
           min * 1e6, gbps, fraction);
    fflush(stdout);
    return;
  }
  printf("{\"op\":\"%s\",\"direction\":\"%s\",\"dtype\":\"%s\",\"param_dtype\":\"f32\","
         "\"layout\":\"rows\",\"rows\":%zu,\"cols\":%zu,\"elements\":%zu,\"threads\":0,"
         "\"isa\":\"cuda\",\"algo\":\"-\",\"kernel\":",
         op_names[c->op], dir_names[c->dir], dtype_names[w->dtype], w->rows, w->cols,
         w->rows * w->cols);
  json_string(kernel_of(c));
  printf(",\"median_s\":%.9g,\"min_s\":%.9g,\"reps\":%ld,\"bytes\":%.0f,\"gbps\":%.6g,"
         "\"copy_gbps\":%.6g,\"copy_nt_gbps\":%.6g,\"fraction\":%.6g,\"date\":\"%s\","
         "\"device\":",
         median, min, reps, bytes, gbps, g->copy_gbps, g->copy_gbps, fraction, g->date);
  json_string(g->prop.name);
  printf(",\"sm_count\":%d,\"l2_bytes\":%d,\"version\":\"%s\"}\n", g->prop.multiProcessorCount,
         g->prop.l2CacheSize, nk_version());
  fflush(stdout);
  fprintf(stderr, "%-44s %12.2f us %9.1f GB/s  fraction %.3f\n", c->label, median * 1e6, gbps,
          fraction);
}

/* ------------------------------------------------------------------------------------------ */
/* Driver                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Prepares, times and reports one case; frees its workspace. Returns 1, 0 or -1. */
static int bench_one(cu_run *g, const cu_work *w, int op, int dir, const cu_options *o) {
  cu_case c = {.op = op, .dir = dir, .w = w};
  double median = 0.0, min = 0.0;
  snprintf(c.label, sizeof c.label, "%s %s %s %zux%zu", op_names[op], dir_names[dir],
           dtype_names[w->dtype], w->rows, w->cols);
  int rc = case_prepare(g, &c);
  if (rc > 0) rc = case_time(g, &c, o->reps, &median, &min);
  if (rc > 0) report(g, &c, o->reps, median, min, o->json);
  if (c.ws && !cuda_check(cudaFree(c.ws), "cudaFree(workspace)", __LINE__)) rc = -1;
  return rc;
}

/* Runs every selected case of every shape. Returns the number of failed cases, or -1 after a
 * CUDA error. */
static int run_shapes(cu_run *g, const cu_shape *shapes, size_t nshapes, const cu_options *o) {
  int failures = 0;
  for (size_t s = 0; s < nshapes; s++) {
    const unsigned ops = shapes[s].op_mask & o->op_mask;
    unsigned dirs = 0;
    for (int op = 0; op < NOPS; op++)
      for (int dir = 0; dir < NDIRS; dir++)
        if ((ops >> op & 1) && (o->dir_mask >> dir & 1) && op_has_dir(op, dir)) dirs |= BIT(dir);
    if (dirs == 0) continue;
    const unsigned dtypes = o->dtype_given ? o->dtype_mask : shapes[s].dtype_mask;
    for (int dt = 0; dt < 3; dt++) {
      if (!(dtypes >> dt & 1)) continue;
      cu_work w;
      const double t0 = now_s();
      int rc = work_create(g, &w, &shapes[s], (nk_dtype)dt, ops, dirs);
      if (rc > 0)
        fprintf(stderr, "[%s %zux%zu: buffers filled in %.2f s]\n", dtype_names[dt],
                shapes[s].rows, shapes[s].cols, now_s() - t0);
      for (int op = 0; op < NOPS && rc > 0; op++)
        for (int dir = 0; dir < NDIRS && rc >= 0; dir++) {
          if (!(ops >> op & 1) || !(o->dir_mask >> dir & 1) || !op_has_dir(op, dir)) continue;
          const int r = bench_one(g, &w, op, dir, o);
          failures += r <= 0;
          if (r < 0) rc = -1;
        }
      failures += rc == 0; /* the shape did not fit */
      work_destroy(&w);
      if (rc < 0) return -1;
    }
  }
  return failures;
}

/* Number of cases the selection gives on these shapes. */
static long count_cases(const cu_shape *shapes, size_t nshapes, const cu_options *o) {
  long n = 0;
  for (size_t s = 0; s < nshapes; s++) {
    const unsigned dtypes = o->dtype_given ? o->dtype_mask : shapes[s].dtype_mask;
    for (int op = 0; op < NOPS; op++)
      for (int dir = 0; dir < NDIRS; dir++)
        if ((shapes[s].op_mask & o->op_mask) >> op & 1 && o->dir_mask >> dir & 1 &&
            op_has_dir(op, dir))
          n += __builtin_popcount(dtypes);
  }
  return n;
}

int nk_bench_cuda_main(int argc, char **argv) {
  cu_options o;
  cu_run g;
  int failures = 0, fatal = 0, ndev = 0;
  const double t0 = now_s();
  for (int i = 0; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return usage(stdout), 0;
  if (!parse_args(argc, argv, &o)) return usage(stderr), 2;
  FILE *out = o.json ? stderr : stdout;
  cu_shape one = {o.rows, o.cols, o.dtype_mask, ALL_OPS};
  const cu_shape *shapes = o.rows ? &one : o.quick ? quick_shapes : default_shapes;
  const size_t nshapes = o.rows    ? 1
                         : o.quick ? sizeof quick_shapes / sizeof quick_shapes[0]
                                   : sizeof default_shapes / sizeof default_shapes[0];
  if (count_cases(shapes, nshapes, &o) == 0) {
    fprintf(stderr, "normkit: no case matches the selection (--op, --direction, --dtype)\n");
    return 2;
  }

  cudaError_t e = cudaGetDeviceCount(&ndev);
  if (e != cudaSuccess || ndev < 1) {
    fprintf(stderr, "no CUDA device%s%s%s\n", e != cudaSuccess ? " (" : "",
            e != cudaSuccess ? cudaGetErrorString(e) : "", e != cudaSuccess ? ")" : "");
    return 1;
  }
  memset(&g, 0, sizeof g);
  g.rng = 0x62656E6368ull; /* "bench" */
  g.nev = o.reps > COPY_MIN_REPS ? o.reps : COPY_MIN_REPS;
  {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(g.date, sizeof g.date, "%Y-%m-%dT%H:%M:%SZ", &tm);
  }
  g.start = calloc((size_t)g.nev, sizeof *g.start);
  g.stop = calloc((size_t)g.nev, sizeof *g.stop);
  g.times = calloc((size_t)g.nev, sizeof *g.times);
  if (!g.start || !g.stop || !g.times) {
    fprintf(stderr, "normkit: out of host memory\n");
    fatal = 1;
    goto cleanup;
  }
#define CKF(call)                                                                                \
  if (!cuda_check((call), #call, __LINE__)) {                                                    \
    fatal = 1;                                                                                   \
    goto cleanup;                                                                                \
  }
  CKF(cudaSetDevice(0));
  CKF(cudaGetDeviceProperties(&g.prop, 0));
  {
    int rt = 0, drv = 0;
    size_t free_b = 0, total_b = 0;
    CKF(cudaRuntimeGetVersion(&rt));
    CKF(cudaDriverGetVersion(&drv));
    CKF(cudaMemGetInfo(&free_b, &total_b));
    fprintf(out,
            "normkit %s bench --cuda, %s\n"
            "device 0 of %d: %s, compute capability %d.%d, %d SMs, L2 %.1f MiB, "
            "memory %.1f GiB (%.1f GiB free); runtime %d.%d, driver %d.%d\n",
            nk_version(), g.date, ndev, g.prop.name, g.prop.major, g.prop.minor,
            g.prop.multiProcessorCount, (double)g.prop.l2CacheSize / (double)MIB,
            (double)total_b / (double)GIB, (double)free_b / (double)GIB, rt / 1000,
            rt % 1000 / 10, drv / 1000, drv % 1000 / 10);
  }
  CKF(cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking));
  for (long i = 0; i < g.nev; i++) {
    CKF(cudaEventCreate(&g.start[i]));
    CKF(cudaEventCreate(&g.stop[i]));
  }
  CKF(cudaMalloc(&g.scratch, SCRATCH_BYTES));
#undef CKF

  if (measure_copy(&g, g.nev) < 0) {
    fatal = 1;
    goto cleanup;
  }
  fprintf(out, "copy (cudaMemcpyAsync device to device, 2 x %zu GiB, median of %ld): %.1f GB/s\n\n",
          COPY_BYTES / GIB, g.nev, g.copy_gbps);
  if (!o.json) print_table_header();

  failures = run_shapes(&g, shapes, nshapes, &o);
  if (failures < 0) fatal = 1, failures = 1;

cleanup:
  if (g.scratch) (void)cuda_check(cudaFree(g.scratch), "cudaFree(scratch)", __LINE__);
  for (long i = 0; i < g.nev; i++) {
    if (g.start && g.start[i]) (void)cuda_check(cudaEventDestroy(g.start[i]), "cudaEventDestroy", __LINE__);
    if (g.stop && g.stop[i]) (void)cuda_check(cudaEventDestroy(g.stop[i]), "cudaEventDestroy", __LINE__);
  }
  if (g.stream) (void)cuda_check(cudaStreamDestroy(g.stream), "cudaStreamDestroy", __LINE__);
  free(g.start);
  free(g.stop);
  free(g.times);
  for (int i = 0; i < 3; i++) free(g.pool[i]);
  if (fatal) {
    fprintf(stderr, "normkit: bench --cuda stopped by an error\n");
    return 1;
  }
  fprintf(out, "\n%d failure%s, total %.1f s\n", failures, failures == 1 ? "" : "s",
          now_s() - t0);
  return failures ? 1 : 0;
}
