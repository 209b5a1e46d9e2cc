/*
 * chnorm.c — BatchNorm, GroupNorm and InstanceNorm operators and the moments operators:
 * validate, split the work into fixed chunks, run the chnorm kernels (src/kernels/chnorm/)
 * over the thread pool, and combine partial statistics in a fixed order. No intrinsics here.
 *
 * Determinism: every reduction is cut into chunks that depend on the sizes only (never on the
 * thread count); chunk results land in the workspace and are combined in chunk order. Element-wise
 * passes are independent per element. The kernels compute the same bits on every ISA.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "chnorm-ops.h"
#include "convert.h"
#include "internal.h"
#include "validate.h"

/* Elements per reduction chunk (a contiguous run is cut into pieces of this size). */
#define NK_CH_CHUNK_ELEMS ((size_t)1 << 16)
/* NHWC chunks are larger: their partials are per channel (C of them per chunk), and the
 * per-channel merges of many small chunks cost more than the parallelism they buy. */
#define NK_CH_CHUNK_ROWS_ELEMS ((size_t)1 << 18)
/* Outputs at least this large use streaming stores (as the row norms). */
#define NK_CH_NONTEMPORAL_BYTES ((size_t)64 << 20)
/* Elements per task of the element-wise passes (load balance only). */
#define NK_CH_TASK_ELEMS ((size_t)1 << 15)

static const uint32_t known_flags = NK_CHNORM_TRAINING | NK_CHNORM_CUMULATIVE | NK_CHNORM_RELU |
                                    NK_CHNORM_ADD_RELU | NK_CHNORM_ACCUMULATE;

const char *nk_layout_name(nk_layout layout) {
  switch (layout) {
    case NK_LAYOUT_NCS: return "nchw";
    case NK_LAYOUT_NSC: return "nhwc";
  }
  return "?";
}

nk_chnorm_desc nk_chnorm_desc_dense(size_t batch, size_t channels, size_t spatial,
                                    nk_layout layout, nk_dtype dtype, float eps) {
  nk_chnorm_desc d;
  memset(&d, 0, sizeof d);
  d.batch = batch;
  d.channels = channels;
  d.spatial = spatial;
  d.groups = 1;
  d.layout = layout;
  d.dtype = dtype;
  d.param_dtype = NK_DTYPE_F32;
  d.eps = eps;
  d.momentum = 0.1f;
  const ptrdiff_t rs = (ptrdiff_t)(layout == NK_LAYOUT_NSC ? channels : spatial);
  const ptrdiff_t ns = (ptrdiff_t)(channels * spatial);
  d.x_n_stride = d.z_n_stride = d.y_n_stride = d.dy_n_stride = d.dx_n_stride = d.dz_n_stride = ns;
  d.x_row_stride = d.z_row_stride = d.y_row_stride = d.dy_row_stride = d.dx_row_stride =
      d.dz_row_stride = rs;
  return d;
}

/* ---- geometry ------------------------------------------------------------------------------ */

typedef struct tens {
  const void *p;
  ptrdiff_t ns, rs;
} tens;

typedef struct geo {
  size_t N, C, S;
  int nsc;
  nk_dtype dt;
  size_t es;
} geo;

static geo geo_of(const nk_chnorm_desc *d) {
  return (geo){d->batch, d->channels, d->spatial, d->layout == NK_LAYOUT_NSC, d->dtype,
               nk_dtype_size(d->dtype)};
}

/* NCS: the run of channel c of sample n (S elements). */
static const void *run_at(const geo *g, tens t, size_t n, size_t c) {
  if (t.p == NULL) return NULL;
  return (const char *)t.p + ((ptrdiff_t)n * t.ns + (ptrdiff_t)c * t.rs) * (ptrdiff_t)g->es;
}

/* NSC: the tensor as flattened rows, column c0 on. */
static nk_ch_rows rows_of(const geo *g, tens t) { return (nk_ch_rows){g->S, t.ns, t.rs}; }
static const void *col_at(const geo *g, tens t, size_t c0) {
  if (t.p == NULL) return NULL;
  return (const char *)t.p + c0 * g->es;
}

static float param_at(const void *p, size_t i, nk_dtype dt, float dflt) {
  if (p == NULL) return dflt;
  if (dt == NK_DTYPE_F32) return ((const float *)p)[i];
  const uint16_t h = ((const uint16_t *)p)[i];
  return dt == NK_DTYPE_BF16 ? nk__bf16_to_f32(h) : nk__f16_to_f32(h);
}

static void param_store(void *p, size_t i, nk_dtype dt, double v, int accumulate) {
  if (accumulate) v += (double)param_at(p, i, dt, 0.0f);
  if (dt == NK_DTYPE_F32) ((float *)p)[i] = (float)v;
  else if (dt == NK_DTYPE_BF16) ((uint16_t *)p)[i] = nk__f32_to_bf16((float)v);
  else ((uint16_t *)p)[i] = nk__f32_to_f16((float)v);
}

static float rstd_of_var(float var, float eps) {
  return (float)(1.0 / sqrt((double)var + (double)eps));
}

/* ---- reduction chunking (BatchNorm; a function of the sizes only) --------------------------- */

typedef struct chunking {
  size_t per_channel; /* NCS: chunks per channel; NSC: row chunks */
  size_t spc;         /* NCS, short rows: samples per chunk (0: rows are cut into pieces) */
  size_t pieces;      /* NCS, long rows: pieces per row */
  size_t rows;        /* NSC: rows per chunk (a multiple of NK_CH_BLOCK_ROWS) */
  size_t ntiles;      /* NSC: column tiles */
} chunking;

static chunking chunking_of(const geo *g) {
  chunking k = {0, 0, 0, 0, 0};
  if (!g->nsc) {
    if (g->S <= NK_CH_CHUNK_ELEMS) {
      k.spc = NK_CH_CHUNK_ELEMS / g->S;
      if (k.spc == 0) k.spc = 1;
      k.per_channel = ceil_div(g->N, k.spc);
    } else {
      k.pieces = ceil_div(g->S, NK_CH_CHUNK_ELEMS);
      k.per_channel = g->N * k.pieces;
    }
  } else {
    size_t r = NK_CH_CHUNK_ROWS_ELEMS / g->C / NK_CH_BLOCK_ROWS * NK_CH_BLOCK_ROWS;
    if (r < NK_CH_BLOCK_ROWS) r = NK_CH_BLOCK_ROWS;
    k.rows = r;
    k.per_channel = ceil_div(g->N * g->S, r);
    k.ntiles = ceil_div(g->C, NK_CH_TILE_COLS);
  }
  return k;
}

/* Bytes of the reduction partials: chunks x C x 3 doubles (moments or gradient sums). */
static int partials_bytes(const geo *g, size_t *bytes) {
  const chunking k = chunking_of(g);
  size_t n;
  return nk__mul_size(k.per_channel, g->C, &n) && nk__mul_size(n, 3 * sizeof(double), bytes);
}

/* NCS chunk j of a channel: the runs (sample, offset, length) it covers, in order. */
typedef struct ncs_piece {
  size_t n0, n1, s0, len;
} ncs_piece;
static ncs_piece ncs_chunk(const geo *g, const chunking *k, size_t j) {
  ncs_piece p;
  if (k->spc) {
    p.n0 = j * k->spc;
    p.n1 = p.n0 + k->spc < g->N ? p.n0 + k->spc : g->N;
    p.s0 = 0;
    p.len = g->S;
  } else {
    p.n0 = j / k->pieces;
    p.n1 = p.n0 + 1;
    p.s0 = (j % k->pieces) * NK_CH_CHUNK_ELEMS;
    p.len = g->S - p.s0 < NK_CH_CHUNK_ELEMS ? g->S - p.s0 : NK_CH_CHUNK_ELEMS;
  }
  return p;
}

/* ---- BatchNorm moments -------------------------------------------------------------------- */

typedef struct red_job {
  const nk_chnorm_kernels *k;
  geo g;
  chunking ch;
  tens x, y, dy;
  const float *mean; /* gradient sums: save_mean */
  uint32_t kflags;
  double *part; /* [chunk][C][3] */
  int grad;     /* 0: moments; 1: gradient sums */
} red_job;

static void red_task(void *arg, size_t start, size_t count) {
  const red_job *j = arg;
  const geo *g = &j->g;
  for (size_t t = start; t < start + count; t++) {
    if (!g->nsc) {
      /* chunk-major: the tasks walk memory in order */
      const size_t chunk = t / g->C, c = t % g->C;
      const ncs_piece p = ncs_chunk(g, &j->ch, chunk);
      double *acc = j->part + (chunk * g->C + c) * 3;
      acc[0] = acc[1] = acc[2] = 0.0;
      for (size_t n = p.n0; n < p.n1; n++) {
        const size_t off = p.s0 * g->es;
        const char *xr = (const char *)run_at(g, j->x, n, c) + off;
        if (!j->grad) {
          j->k->moments_run(p.len, xr, g->dt, j->kflags, acc);
        } else {
          const char *yr = j->y.p ? (const char *)run_at(g, j->y, n, c) + off : NULL;
          const char *dyr = (const char *)run_at(g, j->dy, n, c) + off;
          j->k->gradsum_run(p.len, xr, yr, dyr, g->dt, j->mean[c], j->kflags, acc);
        }
      }
    } else {
      const size_t chunk = t / j->ch.ntiles, tile = t % j->ch.ntiles;
      const size_t c0 = tile * NK_CH_TILE_COLS;
      const size_t cols = g->C - c0 < NK_CH_TILE_COLS ? g->C - c0 : NK_CH_TILE_COLS;
      const size_t r0 = chunk * j->ch.rows, T = g->N * g->S;
      const size_t nr = T - r0 < j->ch.rows ? T - r0 : j->ch.rows;
      double *out = j->part + (chunk * g->C + c0) * 3;
      if (!j->grad) {
        double count = 0.0, mean[NK_CH_TILE_COLS], m2[NK_CH_TILE_COLS];
        memset(mean, 0, cols * sizeof(double));
        memset(m2, 0, cols * sizeof(double));
        j->k->moments_cols(r0, nr, cols, col_at(g, j->x, c0), rows_of(g, j->x), g->dt, j->kflags, &count,
                           mean, m2);
        for (size_t c = 0; c < cols; c++) {
          out[3 * c] = count;
          out[3 * c + 1] = mean[c];
          out[3 * c + 2] = m2[c];
        }
      } else {
        memset(out, 0, cols * 3 * sizeof(double));
        j->k->gradsum_cols(r0, nr, cols, col_at(g, j->x, c0), rows_of(g, j->x),
                           col_at(g, j->y, c0), rows_of(g, j->y), col_at(g, j->dy, c0),
                           rows_of(g, j->dy), g->dt, j->mean + c0, j->kflags, out);
      }
    }
  }
}

typedef struct combine_job {
  const red_job *r;
  double *out; /* [C][3] */
} combine_job;

static void combine_task(void *arg, size_t start, size_t count) {
  const combine_job *cj = arg;
  const red_job *r = cj->r;
  const size_t C = r->g.C;
  for (size_t c = start; c < start + count; c++) {
    double a0 = 0.0, a1 = 0.0, a2 = 0.0;
    for (size_t k = 0; k < r->ch.per_channel; k++) {
      const double *p = r->part + (k * C + c) * 3;
      if (!r->grad) {
        nk__ch_chan(&a0, &a1, &a2, p[0], p[1], p[2]);
      } else {
        a0 += p[0];
        a1 += p[1];
        a2 += p[2];
      }
    }
    cj->out[3 * c] = a0;
    cj->out[3 * c + 1] = a1;
    cj->out[3 * c + 2] = a2;
  }
}

/* Runs the chunked reduction into out[C][3] (moments as count, mean, m2; or the sums). */
static void reduce(nk_context *ctx, red_job *j, double *out) {
  nk_threadpool *pool = nk__context_pool(ctx);
  const size_t tasks = j->ch.per_channel * (j->g.nsc ? j->ch.ntiles : j->g.C);
  nk_parallelize_1d(pool, red_task, j, tasks, 1);
  combine_job cj = {j, out};
  nk_parallelize_1d(pool, combine_task, &cj, j->g.C, 64);
}

/* ---- element-wise passes ------------------------------------------------------------------- */

/* Per-channel (or per-(sample, channel)) parameters of the element-wise passes. */
typedef struct ew_job ew_job;
typedef void (*norm_param_fn)(const ew_job *j, size_t n, size_t c, nk_ch_norm_scalars *p);
typedef void (*dx_param_fn)(const ew_job *j, size_t n, size_t c, nk_ch_dx_scalars *p);

struct ew_job {
  const nk_chnorm_kernels *k;
  geo g;
  tens x, z, y, dy, dx, dz;
  uint32_t kflags;
  int per_sample; /* parameters depend on n (GroupNorm) */
  norm_param_fn norm_param;
  dx_param_fn dx_param;
  /* parameter sources */
  const nk_chnorm_desc *d;
  const void *gamma, *beta;
  const nk_moments *mom;      /* per channel (BatchNorm training) */
  const float *run_mean, *run_var;
  const float *mean, *rstd;   /* saved statistics */
  const double *sums;         /* BatchNorm backward: [C][3] */
  double count;
  const float *gmh, *gml, *gr; /* GroupNorm: per (n, group) */
  size_t G;
  const double *gsum;          /* GroupNorm backward: per (n, group) a, b, mc */
  int training;
  int reverse; /* walk the items from the last: the first ones then come from the LLC, which
                  still holds the end of the preceding reduction pass */
  size_t items;
};

static size_t rows_per_task(size_t row_len) {
  size_t r = NK_CH_TASK_ELEMS / (row_len ? row_len : 1);
  return r ? r : 1;
}

static void ew_task(void *arg, size_t start, size_t count) {
  const ew_job *j = arg;
  const geo *g = &j->g;
  const int bwd = j->dx_param != NULL;
  if (!g->nsc) {
    for (size_t i = start; i < start + count; i++) {
      const size_t t = j->reverse ? j->items - 1 - i : i;
      const size_t n = t / g->C, c = t % g->C;
      if (!bwd) {
        nk_ch_norm_scalars p;
        j->norm_param(j, n, c, &p);
        j->k->norm_run(g->S, run_at(g, j->x, n, c), run_at(g, j->z, n, c),
                       (void *)run_at(g, j->y, n, c), g->dt, &p, j->kflags);
      } else {
        nk_ch_dx_scalars p;
        j->dx_param(j, n, c, &p);
        j->k->dx_run(g->S, run_at(g, j->x, n, c), run_at(g, j->y, n, c),
                     run_at(g, j->dy, n, c), (void *)run_at(g, j->dx, n, c),
                     (void *)run_at(g, j->dz, n, c), g->dt, &p, j->kflags);
      }
    }
    return;
  }
  /* NSC: items are (row tile, column tile); rows of one task may span samples. */
  const size_t ntiles = ceil_div(g->C, NK_CH_TILE_COLS), rpt = rows_per_task(g->C);
  const size_t T = g->N * g->S;
  float v[8][NK_CH_TILE_COLS];
  int halved = 0; /* some column of the tile at half scale: else the kernels get s == NULL */
  for (size_t i = start; i < start + count; i++) {
    const size_t t = j->reverse ? j->items - 1 - i : i;
    const size_t rt = t / ntiles, tile = t % ntiles;
    const size_t c0 = tile * NK_CH_TILE_COLS;
    const size_t cols = g->C - c0 < NK_CH_TILE_COLS ? g->C - c0 : NK_CH_TILE_COLS;
    size_t r = rt * rpt;
    const size_t rend = r + rpt < T ? r + rpt : T;
    size_t built_for = (size_t)-1;
    while (r < rend) {
      const size_t n = r / g->S;
      size_t seg_end = j->per_sample ? (n + 1) * g->S : rend;
      if (seg_end > rend) seg_end = rend;
      const size_t key = j->per_sample ? n : 0;
      if (built_for != key) {
        halved = 0;
        for (size_t c = 0; c < cols; c++) {
          if (!bwd) {
            nk_ch_norm_scalars p;
            j->norm_param(j, n, c0 + c, &p);
            v[0][c] = p.mh, v[1][c] = p.mlr, v[2][c] = p.r, v[3][c] = p.g, v[4][c] = p.b;
            v[5][c] = p.half ? 0.5f : 1.0f;
            halved |= p.half;
          } else {
            nk_ch_dx_scalars p;
            j->dx_param(j, n, c0 + c, &p);
            v[0][c] = p.mh, v[1][c] = p.mcr, v[2][c] = p.r, v[3][c] = p.u, v[4][c] = p.a;
            v[5][c] = p.b, v[6][c] = p.v, v[7][c] = p.half ? 0.5f : 1.0f;
            halved |= p.half;
          }
        }
        built_for = key;
      }
      if (!bwd) {
        const nk_ch_norm_vectors pv = {v[0], v[1], v[2], v[3], v[4], halved ? v[5] : NULL};
        j->k->norm_cols(r, seg_end - r, cols, col_at(g, j->x, c0), rows_of(g, j->x),
                        col_at(g, j->z, c0), rows_of(g, j->z), (void *)col_at(g, j->y, c0),
                        rows_of(g, j->y), g->dt, &pv, j->kflags);
      } else {
        const nk_ch_dx_vectors pv = {v[0], v[1], v[2], v[3], v[4], v[5], v[6],
                                     halved ? v[7] : NULL};
        j->k->dx_cols(r, seg_end - r, cols, col_at(g, j->x, c0), rows_of(g, j->x),
                      col_at(g, j->y, c0), rows_of(g, j->y), col_at(g, j->dy, c0),
                      rows_of(g, j->dy), (void *)col_at(g, j->dx, c0), rows_of(g, j->dx),
                      (void *)col_at(g, j->dz, c0), rows_of(g, j->dz), g->dt, &pv, j->kflags);
      }
      r = seg_end;
    }
  }
}

static void run_ew(nk_context *ctx, ew_job *j) {
  const geo *g = &j->g;
  size_t items, tile = 1;
  if (!g->nsc) {
    items = g->N * g->C;
    tile = rows_per_task(g->S);
  } else {
    items = ceil_div(g->N * g->S, rows_per_task(g->C)) * ceil_div(g->C, NK_CH_TILE_COLS);
  }
  j->items = items;
  nk_parallelize_1d(nk__context_pool(ctx), ew_task, j, items, tile);
}

static int big_output(const geo *g) {
  size_t n;
  return nk__mul_size(g->N, g->C, &n) && nk__mul_size(n, g->S, &n) &&
         nk__mul_size(n, g->es, &n) && n >= NK_CH_NONTEMPORAL_BYTES;
}

/* ---- validation ---------------------------------------------------------------------------- */

static nk_status check_desc(nk_context *ctx, const char *op, const nk_chnorm_desc *d) {
  if (d == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: desc is NULL", op);
  TRY(nk__check_dtypes(ctx, op, d->dtype, d->param_dtype));
  if (d->layout != NK_LAYOUT_NCS && d->layout != NK_LAYOUT_NSC)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown layout %d", op, (int)d->layout);
  if (!(d->eps > 0.0f) || !isfinite(d->eps))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: eps %g must be finite and > 0", op,
                    (double)d->eps);
  if (!(d->momentum >= 0.0f && d->momentum <= 1.0f))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: momentum %g must be in [0, 1]", op,
                    (double)d->momentum);
  if (d->flags & ~known_flags)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown flags 0x%x", op,
                    (unsigned)(d->flags & ~known_flags));
  if ((d->flags & NK_CHNORM_RELU) && (d->flags & NK_CHNORM_ADD_RELU))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: RELU and ADD_RELU are exclusive", op);
  size_t n;
  if (!nk__mul_size(d->batch, d->channels, &n) || !nk__mul_size(n, d->spatial, &n))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: N*C*S overflows", op);
  return NK_STATUS_OK;
}

static int is_empty(const nk_chnorm_desc *d) {
  return d->batch == 0 || d->channels == 0 || d->spatial == 0;
}

/* A tensor argument's span. */
static nk_status tspan(nk_context *ctx, const char *op, span *s, const char *name, const void *p,
                       ptrdiff_t ns, ptrdiff_t rs, const nk_chnorm_desc *d, int output) {
  const int nsc = d->layout == NK_LAYOUT_NSC;
  return nk__tensor3_span(ctx, op, s, name, p, ns, rs, d->batch, nsc ? d->spatial : d->channels,
                          nsc ? d->channels : d->spatial, d->dtype, output);
}

static int fwd_alias_ok(const span *out, const span *other) {
  return nk__span_is(out, "y") && (nk__span_is(other, "x") || nk__span_is(other, "z"));
}

static int bwd_alias_ok(const span *out, const span *other) {
  if (nk__span_is(out, "dx")) return nk__span_is(other, "dy") || nk__span_is(other, "x");
  if (nk__span_is(out, "dz")) return nk__span_is(other, "dy");
  return 0;
}

static nk_status need(nk_context *ctx, const char *op, const void *p, const char *name) {
  if (p == NULL) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, name);
  return NK_STATUS_OK;
}

/* Workspace bytes: the chunk partials, then `extra` bytes (moments or sums), plus the alignment
 * slack; the layout starts at nk__ws_align(workspace), so any address works (a misaligned one
 * gave misaligned double accesses: moments fuzz harness). 0 on overflow. */
static int ws_bytes(const geo *g, size_t extra, size_t *bytes) {
  size_t part;
  return partials_bytes(g, &part) && nk__add_size(part, extra, &part) &&
         nk__ws_bytes(part, bytes);
}

/* ---- BatchNorm forward -------------------------------------------------------------------- */

static void bn_norm_param(const ew_job *j, size_t n, size_t c, nk_ch_norm_scalars *p) {
  (void)n;
  if (j->training) {
    nk__ch_stats(&j->mom[c], j->d->eps, &p->mh, &p->mlr, &p->r);
  } else {
    p->mh = j->run_mean[c];
    p->mlr = 0.0f;
    p->r = rstd_of_var(j->run_var[c], j->d->eps);
  }
  p->g = param_at(j->gamma, c, j->d->param_dtype, 1.0f);
  p->b = param_at(j->beta, c, j->d->param_dtype, 0.0f);
  p->half = nk__ch_half(&p->mh, &p->r);
}

nk_status nk_batchnorm_fwd_workspace_size(const nk_batchnorm_desc *d, size_t *bytes) {
  if (d == NULL || bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;
  *bytes = 0;
  if (!(d->flags & NK_CHNORM_TRAINING) || is_empty(d)) return NK_STATUS_OK;
  geo g = geo_of(d);
  size_t mom;
  if (!nk__mul_size(d->channels, sizeof(nk_moments), &mom) || !ws_bytes(&g, mom, bytes))
    return NK_STATUS_INVALID_ARGUMENT;
  return NK_STATUS_OK;
}

/* Computes per-channel moments into out[C] (workspace holds the chunk partials). */
static void bn_moments_run(nk_context *ctx, const nk_chnorm_desc *d, const void *x,
                           nk_moments *out, void *workspace) {
  red_job j;
  memset(&j, 0, sizeof j);
  j.k = nk__chnorm_kernels(ctx);
  j.g = geo_of(d);
  j.ch = chunking_of(&j.g);
  j.x = (tens){x, d->x_n_stride, d->x_row_stride};
  j.part = workspace;
  j.kflags = big_output(&j.g) ? NK_CHK_PF : 0;
  reduce(ctx, &j, (double *)out);
}

nk_status nk_batchnorm_moments(nk_context *ctx, const nk_batchnorm_desc *d, const void *x,
                               nk_moments *out, void *workspace, size_t workspace_size) {
  const char *op = "batchnorm_moments";
  TRY(check_desc(ctx, op, d));
  if (is_empty(d)) {
    if (out && d->channels)
      for (size_t c = 0; c < d->channels; c++) out[c] = (nk_moments){0.0, 0.0, 0.0};
    return nk__ok(ctx);
  }
  TRY(need(ctx, op, x, "x"));
  TRY(need(ctx, op, out, "out"));
  span s[2];
  TRY(tspan(ctx, op, &s[0], "x", x, d->x_n_stride, d->x_row_stride, d, 0));
  TRY(nk__vector_span(ctx, op, &s[1], "out", out, d->channels, sizeof(nk_moments), 1));
  TRY(nk__check_overlaps(ctx, op, s, 2, fwd_alias_ok));
  geo g = geo_of(d);
  size_t need_ws;
  if (!ws_bytes(&g, 0, &need_ws))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need_ws));
  bn_moments_run(ctx, d, x, out, nk__ws_align(workspace));
  return nk__ok(ctx);
}

/* The shared forward: moments == NULL means compute them (training) into the workspace. */
static nk_status bn_fwd(nk_context *ctx, const char *op, const nk_chnorm_desc *d,
                        const nk_moments *given, const void *x, const void *z, const void *gamma,
                        const void *beta, float *rm, float *rv, int64_t *nbt, void *y,
                        float *save_mean, float *save_rstd, void *workspace,
                        size_t workspace_size, int need_ws) {
  TRY(check_desc(ctx, op, d));
  const int training = (d->flags & NK_CHNORM_TRAINING) != 0;
  const int add = (d->flags & NK_CHNORM_ADD_RELU) != 0;
  /* An empty local batch with given moments (a rank without samples in synchronized
   * BatchNorm) still writes the statistics and updates the running estimates. */
  const int empty = is_empty(d);
  if (d->channels == 0 || (empty && given == NULL)) return nk__ok(ctx);
  if (!empty) {
    TRY(need(ctx, op, x, "x"));
    TRY(need(ctx, op, y, "y"));
    if (add) TRY(need(ctx, op, z, "z (NK_CHNORM_ADD_RELU)"));
  }
  if (!add && z)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: z is given without NK_CHNORM_ADD_RELU",
                    op);
  if ((rm == NULL) != (rv == NULL))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: running_mean and running_var go together", op);
  if (!training && rm == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: inference needs running_mean and running_var", op);
  if (training && (d->flags & NK_CHNORM_CUMULATIVE) && rm && nbt == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: NK_CHNORM_CUMULATIVE needs num_batches_tracked", op);
  const size_t C = d->channels;
  if (training && given == NULL && d->batch * d->spatial < 2)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: expected more than 1 value per channel when training (N*S = %zu)", op,
                    d->batch * d->spatial);
  if (given) {
    for (size_t c = 0; c < C; c++)
      if (!(given[c].count >= 2.0))
        return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                        "%s: moments[%zu].count %g: expected more than 1 value per channel", op,
                        c, given[c].count);
  }
  span s[10];
  const size_t pe = nk_dtype_size(d->param_dtype);
  TRY(tspan(ctx, op, &s[0], "x", empty ? NULL : x, d->x_n_stride, d->x_row_stride, d, 0));
  TRY(tspan(ctx, op, &s[1], "z", empty ? NULL : z, d->z_n_stride, d->z_row_stride, d, 0));
  TRY(tspan(ctx, op, &s[2], "y", empty ? NULL : y, d->y_n_stride, d->y_row_stride, d, 1));
  TRY(nk__vector_span(ctx, op, &s[3], "gamma", gamma, C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[4], "beta", beta, C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[5], "running_mean", rm, C, sizeof(float), training));
  TRY(nk__vector_span(ctx, op, &s[6], "running_var", rv, C, sizeof(float), training));
  TRY(nk__vector_span(ctx, op, &s[7], "save_mean", save_mean, C, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[8], "save_rstd", save_rstd, C, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[9], "moments", given, C, sizeof(nk_moments), 0));
  TRY(nk__check_overlaps(ctx, op, s, 10, fwd_alias_ok));
  geo g = geo_of(d);
  const nk_moments *mom = given;
  if (training && given == NULL && need_ws) {
    size_t need_bytes;
    TRY(nk_batchnorm_fwd_workspace_size(d, &need_bytes) == NK_STATUS_OK
            ? nk__check_workspace(ctx, op, workspace, workspace_size, need_bytes)
            : nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op));
    size_t part;
    partials_bytes(&g, &part);
    workspace = nk__ws_align(workspace);
    nk_moments *m = (nk_moments *)(void *)((char *)workspace + part);
    bn_moments_run(ctx, d, x, m, workspace);
    mom = m;
  }
  /* Statistics out and the running update (training), from the moments. */
  if (training) {
    double mom_factor = d->momentum;
    if (rm && nbt) {
      *nbt += 1;
      if (d->flags & NK_CHNORM_CUMULATIVE) mom_factor = 1.0 / (double)*nbt;
    }
    for (size_t c = 0; c < C; c++) {
      float mh, mlr, r;
      nk__ch_stats(&mom[c], d->eps, &mh, &mlr, &r);
      if (save_mean) save_mean[c] = mh;
      if (save_rstd) save_rstd[c] = r;
      if (rm) {
        const double mean = mom[c].mean, var_u = mom[c].m2 / (mom[c].count - 1.0);
        rm[c] = (float)((1.0 - mom_factor) * (double)rm[c] + mom_factor * mean);
        rv[c] = (float)((1.0 - mom_factor) * (double)rv[c] + mom_factor * var_u);
      }
    }
  } else {
    for (size_t c = 0; c < C; c++) {
      if (save_mean) save_mean[c] = rm[c];
      if (save_rstd) save_rstd[c] = rstd_of_var(rv[c], d->eps);
    }
  }
  if (empty) return nk__ok(ctx);
  ew_job j;
  memset(&j, 0, sizeof j);
  j.k = nk__chnorm_kernels(ctx);
  j.g = g;
  j.x = (tens){x, d->x_n_stride, d->x_row_stride};
  j.z = (tens){z, d->z_n_stride, d->z_row_stride};
  j.y = (tens){y, d->y_n_stride, d->y_row_stride};
  j.kflags = (add ? NK_CHK_ADD | NK_CHK_RELU : 0) | ((d->flags & NK_CHNORM_RELU) ? NK_CHK_RELU : 0) |
             (big_output(&g) ? NK_CHK_NT : 0);
  j.norm_param = bn_norm_param;
  j.d = d;
  j.gamma = gamma;
  j.beta = beta;
  j.mom = mom;
  j.training = training;
  j.reverse = training && given == NULL; /* x was just read by the moments pass */
  /* inference reads the running statistics as they were before this call (unchanged) */
  j.run_mean = rm;
  j.run_var = rv;
  run_ew(ctx, &j);
  return nk__ok(ctx);
}

nk_status nk_batchnorm_fwd(nk_context *ctx, const nk_batchnorm_desc *desc, const void *x,
                           const void *z, const void *gamma, const void *beta,
                           float *running_mean, float *running_var, int64_t *num_batches_tracked,
                           void *y, float *save_mean, float *save_rstd, void *workspace,
                           size_t workspace_size) {
  return bn_fwd(ctx, "batchnorm_fwd", desc, NULL, x, z, gamma, beta, running_mean, running_var,
                num_batches_tracked, y, save_mean, save_rstd, workspace, workspace_size, 1);
}

nk_status nk_batchnorm_fwd_moments(nk_context *ctx, const nk_batchnorm_desc *desc,
                                   const nk_moments *moments, const void *x, const void *z,
                                   const void *gamma, const void *beta, float *running_mean,
                                   float *running_var, int64_t *num_batches_tracked, void *y,
                                   float *save_mean, float *save_rstd) {
  const char *op = "batchnorm_fwd_moments";
  if (desc && !(desc->flags & NK_CHNORM_TRAINING))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: needs NK_CHNORM_TRAINING", op);
  if (desc && !is_empty(desc) && moments == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: moments is NULL", op);
  return bn_fwd(ctx, op, desc, moments, x, z, gamma, beta, running_mean, running_var,
                num_batches_tracked, y, save_mean, save_rstd, NULL, 0, 0);
}

/* ---- BatchNorm backward ------------------------------------------------------------------- */

nk_status nk_batchnorm_bwd_workspace_size(const nk_batchnorm_desc *d, size_t *bytes) {
  if (d == NULL || bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;
  *bytes = 0;
  if (is_empty(d)) return NK_STATUS_OK;
  geo g = geo_of(d);
  size_t sums;
  if (!nk__mul_size(d->channels, 3 * sizeof(double), &sums) || !ws_bytes(&g, sums, bytes))
    return NK_STATUS_INVALID_ARGUMENT;
  return NK_STATUS_OK;
}

static uint32_t bwd_kflags(const nk_chnorm_desc *d, const void *dz, const geo *g) {
  uint32_t f = 0;
  if (d->flags & (NK_CHNORM_RELU | NK_CHNORM_ADD_RELU)) f |= NK_CHK_MASK;
  if ((d->flags & NK_CHNORM_ADD_RELU) && dz) f |= NK_CHK_DZ;
  if (big_output(g)) f |= NK_CHK_NT;
  return f;
}

/* Validates the backward's tensors. part: 0 full, 1 reduce, 2 apply. */
static nk_status bn_bwd_check(nk_context *ctx, const char *op, const nk_chnorm_desc *d,
                              const void *x, const void *y, const void *gamma,
                              const float *save_mean, const float *save_rstd, const void *dy,
                              const void *dx, const void *dz, const void *dgamma,
                              const void *dbeta, const double *sums, int part) {
  const size_t C = d->channels;
  TRY(need(ctx, op, x, "x"));
  TRY(need(ctx, op, dy, "dy"));
  TRY(need(ctx, op, save_mean, "save_mean"));
  if (part != 1) TRY(need(ctx, op, save_rstd, "save_rstd"));
  if (part != 1) TRY(need(ctx, op, dx, "dx"));
  if (part != 0) TRY(need(ctx, op, sums, "sums"));
  if ((d->flags & (NK_CHNORM_RELU | NK_CHNORM_ADD_RELU)) && y == NULL)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: RELU/ADD_RELU need y for the mask", op);
  if (dz && !(d->flags & NK_CHNORM_ADD_RELU))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: dz is given without ADD_RELU", op);
  const size_t pe = nk_dtype_size(d->param_dtype);
  const void *ymask = (d->flags & (NK_CHNORM_RELU | NK_CHNORM_ADD_RELU)) ? y : NULL;
  span s[12];
  TRY(tspan(ctx, op, &s[0], "x", x, d->x_n_stride, d->x_row_stride, d, 0));
  TRY(tspan(ctx, op, &s[1], "y", ymask, d->y_n_stride, d->y_row_stride, d, 0));
  TRY(tspan(ctx, op, &s[2], "dy", dy, d->dy_n_stride, d->dy_row_stride, d, 0));
  TRY(tspan(ctx, op, &s[3], "dx", dx, d->dx_n_stride, d->dx_row_stride, d, 1));
  TRY(tspan(ctx, op, &s[4], "dz", dz, d->dz_n_stride, d->dz_row_stride, d, 1));
  TRY(nk__vector_span(ctx, op, &s[5], "gamma", gamma, C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[6], "save_mean", save_mean, C, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[7], "save_rstd", save_rstd, C, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[8], "dgamma", dgamma, C, pe, 1));
  TRY(nk__vector_span(ctx, op, &s[9], "dbeta", dbeta, C, pe, 1));
  TRY(nk__vector_span(ctx, op, &s[10], "sums", sums, 3 * C, sizeof(double), part == 1));
  s[11] = (span){"none", NULL, 0, 1, 0, 0, 0};
  return nk__check_overlaps(ctx, op, s, 12, bwd_alias_ok);
}

static void bn_reduce_run(nk_context *ctx, const nk_chnorm_desc *d, const void *x,
                          const void *y, const float *save_mean, const void *dy, double *sums,
                          void *workspace) {
  red_job j;
  memset(&j, 0, sizeof j);
  j.k = nk__chnorm_kernels(ctx);
  j.g = geo_of(d);
  j.ch = chunking_of(&j.g);
  j.x = (tens){x, d->x_n_stride, d->x_row_stride};
  j.y = (tens){(d->flags & (NK_CHNORM_RELU | NK_CHNORM_ADD_RELU)) ? y : NULL, d->y_n_stride,
               d->y_row_stride};
  j.dy = (tens){dy, d->dy_n_stride, d->dy_row_stride};
  j.mean = save_mean;
  j.kflags = ((d->flags & (NK_CHNORM_RELU | NK_CHNORM_ADD_RELU)) ? NK_CHK_MASK : 0) |
             (big_output(&j.g) ? NK_CHK_PF : 0);
  j.part = workspace;
  j.grad = 1;
  reduce(ctx, &j, sums);
}

/* dx parameters of channel c from the summed A, B, C (training) or the constants (inference). */
static void bn_dx_param(const ew_job *j, size_t n, size_t c, nk_ch_dx_scalars *p) {
  (void)n;
  const double r = (double)j->rstd[c];
  const double gc = (double)param_at(j->gamma, c, j->d->param_dtype, 1.0f);
  p->mh = j->mean[c];
  p->r = j->rstd[c];
  p->u = 1.0f;
  p->v = (float)(gc * r);
  if (j->training) {
    const double M = j->count, A = j->sums[3 * c], B = j->sums[3 * c + 1];
    const double cm = j->sums[3 * c + 2] / M;
    p->mcr = (float)(cm * r);
    p->a = (float)(A / M);
    p->b = (float)(r * (B - cm * A) / M);
  } else {
    /* dx = g' gamma r does not depend on x: xhat is made 0 (r = 0, no centring), so an xhat
     * beyond FLT_MAX (x near FLT_MAX, rstd > 1) cannot give inf * 0 = NaN; a NaN or inf x
     * still gives NaN (found by the chnorm fuzz harness) */
    p->mh = 0.0f;
    p->r = 0.0f;
    p->mcr = 0.0f;
    p->a = 0.0f;
    p->b = 0.0f;
  }
  p->half = nk__ch_half(&p->mh, &p->r);
}

static void bn_param_grads(const nk_chnorm_desc *d, const double *sums, double count,
                           const float *save_rstd, void *dgamma, void *dbeta) {
  const int training = (d->flags & NK_CHNORM_TRAINING) != 0;
  const int acc = (d->flags & NK_CHNORM_ACCUMULATE) != 0;
  for (size_t c = 0; c < d->channels; c++) {
    const double A = sums[3 * c], B = sums[3 * c + 1];
    const double cm = training ? sums[3 * c + 2] / count : 0.0;
    if (dgamma) param_store(dgamma, c, d->param_dtype, (double)save_rstd[c] * (B - cm * A), acc);
    if (dbeta) param_store(dbeta, c, d->param_dtype, A, acc);
  }
}

static void bn_apply_run(nk_context *ctx, const nk_chnorm_desc *d, double count,
                         const double *sums, const void *x, const void *y, const void *gamma,
                         const float *save_mean, const float *save_rstd, const void *dy,
                         void *dx, void *dz) {
  ew_job j;
  memset(&j, 0, sizeof j);
  j.k = nk__chnorm_kernels(ctx);
  j.g = geo_of(d);
  j.x = (tens){x, d->x_n_stride, d->x_row_stride};
  j.y = (tens){y, d->y_n_stride, d->y_row_stride};
  j.dy = (tens){dy, d->dy_n_stride, d->dy_row_stride};
  j.dx = (tens){dx, d->dx_n_stride, d->dx_row_stride};
  j.dz = (tens){dz, d->dz_n_stride, d->dz_row_stride};
  j.kflags = bwd_kflags(d, dz, &j.g);
  j.dx_param = bn_dx_param;
  j.d = d;
  j.gamma = gamma;
  j.mean = save_mean;
  j.rstd = save_rstd;
  j.sums = sums;
  j.count = count;
  j.training = (d->flags & NK_CHNORM_TRAINING) != 0;
  j.reverse = 1; /* the reduction pass (nk_batchnorm_bwd_reduce) read x and dy last */
  run_ew(ctx, &j);
}

nk_status nk_batchnorm_bwd(nk_context *ctx, const nk_batchnorm_desc *d, const void *x,
                           const void *y, const void *gamma, const float *save_mean,
                           const float *save_rstd, const void *dy, void *dx, void *dz,
                           void *dgamma, void *dbeta, void *workspace, size_t workspace_size) {
  const char *op = "batchnorm_bwd";
  TRY(check_desc(ctx, op, d));
  if (is_empty(d)) return nk__ok(ctx);
  TRY(bn_bwd_check(ctx, op, d, x, y, gamma, save_mean, save_rstd, dy, dx, dz, dgamma, dbeta,
                   NULL, 0));
  const int training = (d->flags & NK_CHNORM_TRAINING) != 0;
  size_t need_bytes;
  if (nk_batchnorm_bwd_workspace_size(d, &need_bytes) != NK_STATUS_OK)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  const int need_sums = training || dgamma || dbeta;
  if (need_sums) TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need_bytes));
  geo g = geo_of(d);
  const double count = (double)d->batch * (double)d->spatial;
  double *sums = NULL;
  if (need_sums) {
    size_t part;
    partials_bytes(&g, &part);
    workspace = nk__ws_align(workspace);
    sums = (double *)(void *)((char *)workspace + part);
    bn_reduce_run(ctx, d, x, y, save_mean, dy, sums, workspace);
  }
  bn_apply_run(ctx, d, count, sums, x, y, gamma, save_mean, save_rstd, dy, dx, dz);
  if (need_sums) bn_param_grads(d, sums, count, save_rstd, dgamma, dbeta);
  return nk__ok(ctx);
}

nk_status nk_batchnorm_bwd_reduce(nk_context *ctx, const nk_batchnorm_desc *d, const void *x,
                                  const void *y, const float *save_mean, const void *dy,
                                  double *sums, void *workspace, size_t workspace_size) {
  const char *op = "batchnorm_bwd_reduce";
  TRY(check_desc(ctx, op, d));
  if (is_empty(d)) {
    if (sums)
      for (size_t i = 0; i < 3 * d->channels; i++) sums[i] = 0.0;
    return nk__ok(ctx);
  }
  TRY(bn_bwd_check(ctx, op, d, x, y, NULL, save_mean, NULL, dy, NULL, NULL, NULL, NULL, sums,
                   1));
  geo g = geo_of(d);
  size_t need_ws;
  if (!ws_bytes(&g, 0, &need_ws))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need_ws));
  bn_reduce_run(ctx, d, x, y, save_mean, dy, sums, nk__ws_align(workspace));
  return nk__ok(ctx);
}

nk_status nk_batchnorm_bwd_apply(nk_context *ctx, const nk_batchnorm_desc *d, double count,
                                 const double *sums, const void *x, const void *y,
                                 const void *gamma, const float *save_mean,
                                 const float *save_rstd, const void *dy, void *dx, void *dz,
                                 void *dgamma, void *dbeta) {
  const char *op = "batchnorm_bwd_apply";
  TRY(check_desc(ctx, op, d));
  if (is_empty(d)) {
    /* an empty local batch still owns its share of the parameter gradients */
    if (d->channels && sums && save_rstd && (dgamma || dbeta))
      bn_param_grads(d, sums, count, save_rstd, dgamma, dbeta);
    return nk__ok(ctx);
  }
  if (!(count >= 1.0) || !isfinite(count))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: count %g must be >= 1", op, count);
  TRY(bn_bwd_check(ctx, op, d, x, y, gamma, save_mean, save_rstd, dy, dx, dz, dgamma, dbeta,
                   sums, 2));
  bn_apply_run(ctx, d, count, sums, x, y, gamma, save_mean, save_rstd, dy, dx, dz);
  bn_param_grads(d, sums, count, save_rstd, dgamma, dbeta);
  return nk__ok(ctx);
}

/* ---- folding ------------------------------------------------------------------------------- */
/*
 * The folds take no context, so a failure has only its status. Every buffer is checked as the
 * other operators check theirs (validate.h): f32 pointers aligned to 4 bytes, byte sizes that do
 * not overflow the address space, and no output overlapping another buffer, except that an
 * output (scale, shift, bias_out) may be exactly one per-channel input array: channel c reads all
 * of its inputs before it writes its outputs, so that is an elementwise in-place update. weight
 * (in and out) may overlap nothing. Per-channel arrays are spans of one row of `channels`
 * elements (a non-zero stride, so that exact aliasing is recognised).
 */

static int fold_alias_ok(const span *out, const span *other) {
  return !other->output && !nk__span_is(other, "weight") && !nk__span_is(out, "weight");
}

static nk_status fold_vec(const char *op, span *s, const char *name, const float *p, size_t C,
                          int output) {
  return nk__tensor_span(NULL, op, s, name, p, (ptrdiff_t)C, 1, C, NK_DTYPE_F32, output);
}

/* What both folds check (channels > 0): the running statistics present, channels in range,
 * the spans s[0..4) of running_mean, running_var, gamma and beta. */
static nk_status fold_common(const char *op, size_t channels, const float *running_mean,
                             const float *running_var, const float *gamma, const float *beta,
                             span *s) {
  if (!running_mean || !running_var || channels > (size_t)PTRDIFF_MAX)
    return NK_STATUS_INVALID_ARGUMENT;
  TRY(fold_vec(op, &s[0], "running_mean", running_mean, channels, 0));
  TRY(fold_vec(op, &s[1], "running_var", running_var, channels, 0));
  TRY(fold_vec(op, &s[2], "gamma", gamma, channels, 0));
  return fold_vec(op, &s[3], "beta", beta, channels, 0);
}

/* Channel c's gamma / sqrt(var + eps) (in double) and beta. */
static double fold_gr(size_t c, float eps, const float *running_var, const float *gamma) {
  const double r = 1.0 / sqrt((double)running_var[c] + (double)eps);
  return (gamma ? (double)gamma[c] : 1.0) * r;
}
static double fold_beta(size_t c, const float *beta) { return beta ? (double)beta[c] : 0.0; }

nk_status nk_batchnorm_fold(size_t channels, float eps, const float *running_mean,
                            const float *running_var, const float *gamma, const float *beta,
                            float *scale, float *shift) {
  static const char op[] = "batchnorm_fold";
  if (!(eps > 0.0f) || !isfinite(eps)) return NK_STATUS_INVALID_ARGUMENT;
  if (channels == 0) return NK_STATUS_OK;
  if (!scale || !shift) return NK_STATUS_INVALID_ARGUMENT;
  span s[6];
  TRY(fold_common(op, channels, running_mean, running_var, gamma, beta, s));
  TRY(fold_vec(op, &s[4], "scale", scale, channels, 1));
  TRY(fold_vec(op, &s[5], "shift", shift, channels, 1));
  TRY(nk__check_overlaps(NULL, op, s, 6, fold_alias_ok));
  for (size_t c = 0; c < channels; c++) {
    const double gr = fold_gr(c, eps, running_var, gamma);
    scale[c] = (float)gr;
    shift[c] = (float)(fold_beta(c, beta) - (double)running_mean[c] * gr);
  }
  return NK_STATUS_OK;
}

nk_status nk_batchnorm_fold_linear(size_t channels, size_t k, float eps,
                                   const float *running_mean, const float *running_var,
                                   const float *gamma, const float *beta, float *weight,
                                   const float *bias, float *bias_out) {
  static const char op[] = "batchnorm_fold_linear";
  if (!(eps > 0.0f) || !isfinite(eps)) return NK_STATUS_INVALID_ARGUMENT;
  if (channels == 0) return NK_STATUS_OK;
  if (!bias_out || (k && !weight)) return NK_STATUS_INVALID_ARGUMENT;
  size_t total;
  if (!nk__mul_size(channels, k, &total) || k > (size_t)PTRDIFF_MAX)
    return NK_STATUS_INVALID_ARGUMENT;
  span s[7];
  TRY(fold_common(op, channels, running_mean, running_var, gamma, beta, s));
  TRY(fold_vec(op, &s[4], "bias", bias, channels, 0));
  TRY(fold_vec(op, &s[5], "bias_out", bias_out, channels, 1));
  if ((uintptr_t)weight % sizeof(float) != 0) return NK_STATUS_INVALID_ARGUMENT; /* even if k 0 */
  TRY(nk__tensor_span(NULL, op, &s[6], "weight", k ? weight : NULL, (ptrdiff_t)k, channels, k,
                      NK_DTYPE_F32, 1));
  TRY(nk__check_overlaps(NULL, op, s, 7, fold_alias_ok));
  for (size_t c = 0; c < channels; c++) {
    const double gr = fold_gr(c, eps, running_var, gamma);
    const double b0 = bias ? (double)bias[c] : 0.0;
    for (size_t i = 0; i < k; i++) weight[c * k + i] = (float)((double)weight[c * k + i] * gr);
    bias_out[c] = (float)((b0 - (double)running_mean[c]) * gr + fold_beta(c, beta));
  }
  return NK_STATUS_OK;
}

/* ---- GroupNorm and InstanceNorm ------------------------------------------------------------- */
/*
 * One task per (sample, span of whole groups): NCS spans are single groups (Cg runs of S);
 * NSC spans are up to NK_CH_TILE_COLS columns of whole groups (or one group of more columns,
 * processed in tiles). A task computes its groups' statistics and then normalizes them, so a
 * group is read twice while it is still in cache when it fits there.
 */

typedef struct gn_job {
  const nk_chnorm_kernels *k;
  const nk_chnorm_desc *d;
  geo g;
  size_t G, Cg, gps, nspans;
  tens x, y, dy, dx;
  const void *gamma, *beta;
  float *mean_out, *rstd_out; /* fwd: optional outputs; bwd: inputs */
  const float *mean_in, *rstd_in;
  double *ws; /* bwd: [n][c][3] */
  uint32_t kflags;
} gn_job;

static void gn_setup(gn_job *j, nk_context *ctx, const nk_chnorm_desc *d, size_t G) {
  memset(j, 0, sizeof *j);
  j->k = nk__chnorm_kernels(ctx);
  j->d = d;
  j->g = geo_of(d);
  j->G = G;
  j->Cg = d->channels / G;
  j->gps = j->g.nsc ? (j->Cg <= NK_CH_TILE_COLS ? NK_CH_TILE_COLS / j->Cg : 1) : 1;
  j->nspans = ceil_div(G, j->gps);
}

/* Group moments of sample n, groups [g0, g1) (NSC: one span), into gm[3 * (g - g0)]. */
static void gn_group_moments(const gn_job *j, size_t n, size_t g0, size_t g1, double *gm) {
  const geo *g = &j->g;
  for (size_t k = g0; k < g1; k++) gm[3 * (k - g0)] = gm[3 * (k - g0) + 1] = gm[3 * (k - g0) + 2] = 0.0;
  if (!g->nsc) {
    for (size_t k = g0; k < g1; k++)
      for (size_t c = k * j->Cg; c < (k + 1) * j->Cg; c++)
        j->k->moments_run(g->S, run_at(g, j->x, n, c), g->dt, 0, &gm[3 * (k - g0)]);
    return;
  }
  const size_t cbeg = g0 * j->Cg, cend = g1 * j->Cg;
  double mean[NK_CH_TILE_COLS], m2[NK_CH_TILE_COLS];
  for (size_t c0 = cbeg; c0 < cend; c0 += NK_CH_TILE_COLS) {
    const size_t cols = cend - c0 < NK_CH_TILE_COLS ? cend - c0 : NK_CH_TILE_COLS;
    double count = 0.0;
    memset(mean, 0, cols * sizeof(double));
    memset(m2, 0, cols * sizeof(double));
    j->k->moments_cols(n * g->S, g->S, cols, col_at(g, j->x, c0), rows_of(g, j->x), g->dt, 0,
                       &count, mean, m2);
    for (size_t c = 0; c < cols; c++) {
      double *a = &gm[3 * ((c0 + c) / j->Cg - g0)];
      nk__ch_chan(&a[0], &a[1], &a[2], count, mean[c], m2[c]);
    }
  }
}

static void gn_fwd_task(void *arg, size_t start, size_t count) {
  const gn_job *j = arg;
  const geo *g = &j->g;
  const nk_dtype pd = j->d->param_dtype;
  double gm[3 * NK_CH_TILE_COLS];
  float mh[NK_CH_TILE_COLS], mlr[NK_CH_TILE_COLS], r[NK_CH_TILE_COLS], hs[NK_CH_TILE_COLS];
  for (size_t t = start; t < start + count; t++) {
    const size_t n = t / j->nspans, sp = t % j->nspans;
    const size_t g0 = sp * j->gps, g1 = g0 + j->gps < j->G ? g0 + j->gps : j->G;
    gn_group_moments(j, n, g0, g1, gm);
    for (size_t k = g0; k < g1; k++) {
      const nk_moments m = {gm[3 * (k - g0)], gm[3 * (k - g0) + 1], gm[3 * (k - g0) + 2]};
      nk__ch_stats(&m, j->d->eps, &mh[k - g0], &mlr[k - g0], &r[k - g0]);
      if (j->mean_out) j->mean_out[n * j->G + k] = mh[k - g0];
      if (j->rstd_out) j->rstd_out[n * j->G + k] = r[k - g0];
      hs[k - g0] = nk__ch_half(&mh[k - g0], &r[k - g0]) ? 0.5f : 1.0f;
    }
    if (!g->nsc) {
      for (size_t k = g0; k < g1; k++)
        for (size_t c = k * j->Cg; c < (k + 1) * j->Cg; c++) {
          const nk_ch_norm_scalars p = {mh[k - g0], mlr[k - g0], r[k - g0],
                                        param_at(j->gamma, c, pd, 1.0f),
                                        param_at(j->beta, c, pd, 0.0f), hs[k - g0] != 1.0f};
          j->k->norm_run(g->S, run_at(g, j->x, n, c), NULL, (void *)run_at(g, j->y, n, c),
                         g->dt, &p, j->kflags);
        }
      continue;
    }
    const size_t cbeg = g0 * j->Cg, cend = g1 * j->Cg;
    float v[6][NK_CH_TILE_COLS];
    for (size_t c0 = cbeg; c0 < cend; c0 += NK_CH_TILE_COLS) {
      const size_t cols = cend - c0 < NK_CH_TILE_COLS ? cend - c0 : NK_CH_TILE_COLS;
      int halved = 0; /* else the kernel gets s == NULL */
      for (size_t c = 0; c < cols; c++) {
        const size_t k = (c0 + c) / j->Cg - g0;
        v[0][c] = mh[k], v[1][c] = mlr[k], v[2][c] = r[k];
        v[3][c] = param_at(j->gamma, c0 + c, pd, 1.0f);
        v[4][c] = param_at(j->beta, c0 + c, pd, 0.0f);
        v[5][c] = hs[k];
        halved |= hs[k] != 1.0f;
      }
      const nk_ch_norm_vectors pv = {v[0], v[1], v[2], v[3], v[4], halved ? v[5] : NULL};
      j->k->norm_cols(n * g->S, g->S, cols, col_at(g, j->x, c0), rows_of(g, j->x), NULL,
                      rows_of(g, j->x), (void *)col_at(g, j->y, c0), rows_of(g, j->y), g->dt, &pv,
                      j->kflags);
    }
  }
}

static nk_status gn_check_fwd(nk_context *ctx, const char *op, const nk_chnorm_desc *d,
                              size_t G, const void *x, const void *gamma, const void *beta,
                              const float *rm, const float *rv, const void *y, const float *mean,
                              const float *rstd, size_t stats) {
  TRY(need(ctx, op, x, "x"));
  TRY(need(ctx, op, y, "y"));
  (void)G;
  const size_t C = d->channels, pe = nk_dtype_size(d->param_dtype);
  span s[8];
  TRY(tspan(ctx, op, &s[0], "x", x, d->x_n_stride, d->x_row_stride, d, 0));
  TRY(tspan(ctx, op, &s[1], "y", y, d->y_n_stride, d->y_row_stride, d, 1));
  TRY(nk__vector_span(ctx, op, &s[2], "gamma", gamma, C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[3], "beta", beta, C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[4], "mean", mean, stats, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[5], "rstd", rstd, stats, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[6], "running_mean", rm, C, sizeof(float), 1));
  TRY(nk__vector_span(ctx, op, &s[7], "running_var", rv, C, sizeof(float), 1));
  return nk__check_overlaps(ctx, op, s, 8, fwd_alias_ok);
}

static void gn_fwd_run(nk_context *ctx, const nk_chnorm_desc *d, size_t G, const void *x,
                       const void *gamma, const void *beta, void *y, float *mean, float *rstd) {
  gn_job j;
  gn_setup(&j, ctx, d, G);
  j.x = (tens){x, d->x_n_stride, d->x_row_stride};
  j.y = (tens){y, d->y_n_stride, d->y_row_stride};
  j.gamma = gamma;
  j.beta = beta;
  j.mean_out = mean;
  j.rstd_out = rstd;
  j.kflags = big_output(&j.g) ? NK_CHK_NT : 0;
  nk_parallelize_1d(nk__context_pool(ctx), gn_fwd_task, &j, d->batch * j.nspans, 1);
}

static nk_status gn_groups_ok(nk_context *ctx, const char *op, const nk_chnorm_desc *d) {
  if (d->groups == 0 || d->channels % d->groups != 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: groups %zu must divide channels %zu",
                    op, d->groups, d->channels);
  return NK_STATUS_OK;
}

static nk_status no_flags(nk_context *ctx, const char *op, const nk_chnorm_desc *d,
                          uint32_t allowed) {
  if (d->flags & ~allowed)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: flags 0x%x do not apply", op,
                    (unsigned)(d->flags & ~allowed));
  return NK_STATUS_OK;
}

nk_status nk_groupnorm_fwd(nk_context *ctx, const nk_groupnorm_desc *d, const void *x,
                           const void *gamma, const void *beta, void *y, float *mean,
                           float *rstd) {
  const char *op = "groupnorm_fwd";
  TRY(check_desc(ctx, op, d));
  TRY(no_flags(ctx, op, d, NK_CHNORM_TRAINING));
  if (d->channels) TRY(gn_groups_ok(ctx, op, d));
  if (is_empty(d)) return nk__ok(ctx);
  TRY(gn_check_fwd(ctx, op, d, d->groups, x, gamma, beta, NULL, NULL, y, mean, rstd,
                   d->batch * d->groups));
  gn_fwd_run(ctx, d, d->groups, x, gamma, beta, y, mean, rstd);
  return nk__ok(ctx);
}

/* Backward: per (sample, span) the per-channel sums, the group terms, dx; then per channel the
 * parameter gradients summed over samples in order. */
static void gn_bwd_task(void *arg, size_t start, size_t count) {
  const gn_job *j = arg;
  const geo *g = &j->g;
  const nk_dtype pd = j->d->param_dtype;
  const size_t C = g->C;
  float gmcr[NK_CH_TILE_COLS], ga[NK_CH_TILE_COLS], gb[NK_CH_TILE_COLS];
  for (size_t t = start; t < start + count; t++) {
    const size_t n = t / j->nspans, sp = t % j->nspans;
    const size_t g0 = sp * j->gps, g1 = g0 + j->gps < j->G ? g0 + j->gps : j->G;
    const size_t cbeg = g0 * j->Cg, cend = g1 * j->Cg;
    double *ws = j->ws + n * C * 3;
    for (size_t c = cbeg; c < cend; c++) ws[3 * c] = ws[3 * c + 1] = ws[3 * c + 2] = 0.0;
    if (!g->nsc) {
      for (size_t c = cbeg; c < cend; c++)
        j->k->gradsum_run(g->S, run_at(g, j->x, n, c), NULL, run_at(g, j->dy, n, c), g->dt,
                          j->mean_in[n * j->G + c / j->Cg], 0, &ws[3 * c]);
    } else {
      float mhv[NK_CH_TILE_COLS];
      for (size_t c0 = cbeg; c0 < cend; c0 += NK_CH_TILE_COLS) {
        const size_t cols = cend - c0 < NK_CH_TILE_COLS ? cend - c0 : NK_CH_TILE_COLS;
        for (size_t c = 0; c < cols; c++) mhv[c] = j->mean_in[n * j->G + (c0 + c) / j->Cg];
        j->k->gradsum_cols(n * g->S, g->S, cols, col_at(g, j->x, c0), rows_of(g, j->x), NULL,
                           rows_of(g, j->x), col_at(g, j->dy, c0), rows_of(g, j->dy), g->dt, mhv,
                           0, &ws[3 * c0]);
      }
    }
    /* group terms */
    const double cnt = (double)j->Cg * (double)g->S;
    for (size_t k = g0; k < g1; k++) {
      double sc = 0.0, A = 0.0, Bp = 0.0;
      for (size_t c = k * j->Cg; c < (k + 1) * j->Cg; c++) sc += ws[3 * c + 2];
      const double cm = sc / cnt;
      for (size_t c = k * j->Cg; c < (k + 1) * j->Cg; c++) {
        const double gc = (double)param_at(j->gamma, c, pd, 1.0f);
        A += gc * ws[3 * c];
        Bp += gc * (ws[3 * c + 1] - cm * ws[3 * c]);
      }
      const double r = (double)j->rstd_in[n * j->G + k];
      gmcr[k - g0] = (float)(cm * r);
      ga[k - g0] = (float)(A / cnt);
      gb[k - g0] = (float)(r * Bp / cnt);
      /* parameter-gradient partials of this sample: [0] dgamma, [1] dbeta */
      for (size_t c = k * j->Cg; c < (k + 1) * j->Cg; c++) {
        const double a0 = ws[3 * c], b0 = ws[3 * c + 1];
        ws[3 * c] = r * (b0 - cm * a0);
        ws[3 * c + 1] = a0;
      }
    }
    if (!g->nsc) {
      for (size_t c = cbeg; c < cend; c++) {
        const size_t k = c / j->Cg;
        nk_ch_dx_scalars p = {j->mean_in[n * j->G + k], gmcr[k - g0],
                              j->rstd_in[n * j->G + k], param_at(j->gamma, c, pd, 1.0f),
                              ga[k - g0], gb[k - g0], j->rstd_in[n * j->G + k], 0};
        p.half = nk__ch_half(&p.mh, &p.r);
        j->k->dx_run(g->S, run_at(g, j->x, n, c), NULL, run_at(g, j->dy, n, c),
                     (void *)run_at(g, j->dx, n, c), NULL, g->dt, &p, j->kflags);
      }
      continue;
    }
    float v[8][NK_CH_TILE_COLS];
    for (size_t c0 = cbeg; c0 < cend; c0 += NK_CH_TILE_COLS) {
      const size_t cols = cend - c0 < NK_CH_TILE_COLS ? cend - c0 : NK_CH_TILE_COLS;
      int halved = 0; /* else the kernel gets s == NULL */
      for (size_t c = 0; c < cols; c++) {
        const size_t k = (c0 + c) / j->Cg;
        nk_ch_dx_scalars p = {j->mean_in[n * j->G + k], gmcr[k - g0],
                              j->rstd_in[n * j->G + k], param_at(j->gamma, c0 + c, pd, 1.0f),
                              ga[k - g0], gb[k - g0], j->rstd_in[n * j->G + k], 0};
        p.half = nk__ch_half(&p.mh, &p.r);
        halved |= p.half;
        v[0][c] = p.mh, v[1][c] = p.mcr, v[2][c] = p.r, v[3][c] = p.u, v[4][c] = p.a;
        v[5][c] = p.b, v[6][c] = p.v, v[7][c] = p.half ? 0.5f : 1.0f;
      }
      const nk_ch_dx_vectors pv = {v[0], v[1], v[2], v[3], v[4], v[5], v[6],
                                   halved ? v[7] : NULL};
      j->k->dx_cols(n * g->S, g->S, cols, col_at(g, j->x, c0), rows_of(g, j->x), NULL,
                    rows_of(g, j->x), col_at(g, j->dy, c0), rows_of(g, j->dy),
                    (void *)col_at(g, j->dx, c0), rows_of(g, j->dx), NULL, rows_of(g, j->dx),
                    g->dt, &pv, j->kflags);
    }
  }
}

typedef struct gn_pgrad_job {
  const gn_job *j;
  void *dgamma, *dbeta;
} gn_pgrad_job;

static void gn_pgrad_task(void *arg, size_t start, size_t count) {
  const gn_pgrad_job *p = arg;
  const gn_job *j = p->j;
  const size_t C = j->g.C;
  const int acc = (j->d->flags & NK_CHNORM_ACCUMULATE) != 0;
  for (size_t c = start; c < start + count; c++) {
    double dg = 0.0, db = 0.0;
    for (size_t n = 0; n < j->g.N; n++) {
      dg += j->ws[(n * C + c) * 3];
      db += j->ws[(n * C + c) * 3 + 1];
    }
    if (p->dgamma) param_store(p->dgamma, c, j->d->param_dtype, dg, acc);
    if (p->dbeta) param_store(p->dbeta, c, j->d->param_dtype, db, acc);
  }
}

/* N*C*3 doubles plus the alignment slack (the array starts at nk__ws_align(workspace)). */
static size_t gn_bwd_ws_bytes(const nk_chnorm_desc *d, int *ok) {
  size_t n;
  *ok = nk__mul_size(d->batch, d->channels, &n) && nk__mul_size(n, 3 * sizeof(double), &n) &&
        nk__ws_bytes(n, &n);
  return *ok ? n : 0;
}

nk_status nk_groupnorm_bwd_workspace_size(const nk_groupnorm_desc *d, size_t *bytes) {
  if (d == NULL || bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;
  int ok = 1;
  *bytes = is_empty(d) ? 0 : gn_bwd_ws_bytes(d, &ok);
  return is_empty(d) || ok ? NK_STATUS_OK : NK_STATUS_INVALID_ARGUMENT;
}

static nk_status gn_bwd_impl(nk_context *ctx, const char *op, const nk_chnorm_desc *d, size_t G,
                             const void *x, const void *gamma, const float *mean,
                             const float *rstd, const void *dy, void *dx, void *dgamma,
                             void *dbeta, void *workspace, size_t workspace_size) {
  TRY(need(ctx, op, x, "x"));
  TRY(need(ctx, op, dy, "dy"));
  TRY(need(ctx, op, dx, "dx"));
  TRY(need(ctx, op, mean, "mean"));
  TRY(need(ctx, op, rstd, "rstd"));
  const size_t C = d->channels, pe = nk_dtype_size(d->param_dtype), NG = d->batch * G;
  span s[9];
  TRY(tspan(ctx, op, &s[0], "x", x, d->x_n_stride, d->x_row_stride, d, 0));
  TRY(tspan(ctx, op, &s[1], "dy", dy, d->dy_n_stride, d->dy_row_stride, d, 0));
  TRY(tspan(ctx, op, &s[2], "dx", dx, d->dx_n_stride, d->dx_row_stride, d, 1));
  TRY(nk__vector_span(ctx, op, &s[3], "gamma", gamma, C, pe, 0));
  TRY(nk__vector_span(ctx, op, &s[4], "mean", mean, NG, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[5], "rstd", rstd, NG, sizeof(float), 0));
  TRY(nk__vector_span(ctx, op, &s[6], "dgamma", dgamma, C, pe, 1));
  TRY(nk__vector_span(ctx, op, &s[7], "dbeta", dbeta, C, pe, 1));
  s[8] = (span){"none", NULL, 0, 1, 0, 0, 0};
  TRY(nk__check_overlaps(ctx, op, s, 9, bwd_alias_ok));
  int ok = 1;
  const size_t need_bytes = gn_bwd_ws_bytes(d, &ok);
  if (!ok) return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: workspace size overflows", op);
  TRY(nk__check_workspace(ctx, op, workspace, workspace_size, need_bytes));
  gn_job j;
  gn_setup(&j, ctx, d, G);
  j.x = (tens){x, d->x_n_stride, d->x_row_stride};
  j.dy = (tens){dy, d->dy_n_stride, d->dy_row_stride};
  j.dx = (tens){dx, d->dx_n_stride, d->dx_row_stride};
  j.gamma = gamma;
  j.mean_in = mean;
  j.rstd_in = rstd;
  j.ws = nk__ws_align(workspace);
  j.kflags = big_output(&j.g) ? NK_CHK_NT : 0;
  nk_threadpool *pool = nk__context_pool(ctx);
  nk_parallelize_1d(pool, gn_bwd_task, &j, d->batch * j.nspans, 1);
  if (dgamma || dbeta) {
    gn_pgrad_job p = {&j, dgamma, dbeta};
    nk_parallelize_1d(pool, gn_pgrad_task, &p, C, 64);
  }
  return nk__ok(ctx);
}

nk_status nk_groupnorm_bwd(nk_context *ctx, const nk_groupnorm_desc *d, const void *x,
                           const void *gamma, const float *mean, const float *rstd,
                           const void *dy, void *dx, void *dgamma, void *dbeta, void *workspace,
                           size_t workspace_size) {
  const char *op = "groupnorm_bwd";
  TRY(check_desc(ctx, op, d));
  TRY(no_flags(ctx, op, d, NK_CHNORM_TRAINING | NK_CHNORM_ACCUMULATE));
  if (d->channels) TRY(gn_groups_ok(ctx, op, d));
  if (is_empty(d)) return nk__ok(ctx);
  return gn_bwd_impl(ctx, op, d, d->groups, x, gamma, mean, rstd, dy, dx, dgamma, dbeta,
                     workspace, workspace_size);
}

/* InstanceNorm running update: per channel (NCS) or column tile (NSC), samples in order. */
typedef struct in_run_job {
  const gn_job *j;
  float *rm, *rv;
  double m;
} in_run_job;

static void in_running_task(void *arg, size_t start, size_t count) {
  const in_run_job *p = arg;
  const gn_job *j = p->j;
  const geo *g = &j->g;
  const double S = (double)g->S, N = (double)g->N;
  for (size_t t = start; t < start + count; t++) {
    const size_t c0 = g->nsc ? t * NK_CH_TILE_COLS : t;
    const size_t cols = g->nsc ? (g->C - c0 < NK_CH_TILE_COLS ? g->C - c0 : NK_CH_TILE_COLS) : 1;
    double sm[NK_CH_TILE_COLS], sv[NK_CH_TILE_COLS];
    memset(sm, 0, cols * sizeof(double));
    memset(sv, 0, cols * sizeof(double));
    for (size_t n = 0; n < g->N; n++) {
      if (!g->nsc) {
        double acc[3] = {0.0, 0.0, 0.0};
        j->k->moments_run(g->S, run_at(g, j->x, n, c0), g->dt, 0, acc);
        sm[0] += acc[1];
        sv[0] += acc[2] / (S - 1.0);
      } else {
        double cnt = 0.0, mean[NK_CH_TILE_COLS], m2[NK_CH_TILE_COLS];
        memset(mean, 0, cols * sizeof(double));
        memset(m2, 0, cols * sizeof(double));
        j->k->moments_cols(n * g->S, g->S, cols, col_at(g, j->x, c0), rows_of(g, j->x), g->dt,
                           0, &cnt, mean, m2);
        for (size_t c = 0; c < cols; c++) {
          sm[c] += mean[c];
          sv[c] += m2[c] / (S - 1.0);
        }
      }
    }
    for (size_t c = 0; c < cols; c++) {
      p->rm[c0 + c] = (float)((1.0 - p->m) * (double)p->rm[c0 + c] + p->m * (sm[c] / N));
      p->rv[c0 + c] = (float)((1.0 - p->m) * (double)p->rv[c0 + c] + p->m * (sv[c] / N));
    }
  }
}

nk_status nk_instancenorm_fwd(nk_context *ctx, const nk_instancenorm_desc *d, const void *x,
                              const void *gamma, const void *beta, float *running_mean,
                              float *running_var, void *y, float *mean, float *rstd) {
  const char *op = "instancenorm_fwd";
  TRY(check_desc(ctx, op, d));
  TRY(no_flags(ctx, op, d, NK_CHNORM_TRAINING));
  if (is_empty(d)) return nk__ok(ctx);
  if ((running_mean == NULL) != (running_var == NULL))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: running_mean and running_var go together", op);
  const int training = (d->flags & NK_CHNORM_TRAINING) != 0;
  if (training && running_mean && d->spatial < 2)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: expected more than 1 spatial element when training (S = %zu)", op,
                    d->spatial);
  const size_t C = d->channels;
  TRY(gn_check_fwd(ctx, op, d, C, x, gamma, beta, running_mean, running_var, y, mean, rstd,
                   d->batch * C));
  if (running_mean && !training) {
    /* inference with running statistics: BatchNorm inference per channel */
    ew_job j;
    memset(&j, 0, sizeof j);
    j.k = nk__chnorm_kernels(ctx);
    j.g = geo_of(d);
    j.x = (tens){x, d->x_n_stride, d->x_row_stride};
    j.y = (tens){y, d->y_n_stride, d->y_row_stride};
    j.kflags = big_output(&j.g) ? NK_CHK_NT : 0;
    j.norm_param = bn_norm_param;
    j.d = d;
    j.gamma = gamma;
    j.beta = beta;
    j.run_mean = running_mean;
    j.run_var = running_var;
    for (size_t n = 0; n < d->batch; n++)
      for (size_t c = 0; c < C; c++) {
        if (mean) mean[n * C + c] = running_mean[c];
        if (rstd) rstd[n * C + c] = rstd_of_var(running_var[c], d->eps);
      }
    run_ew(ctx, &j);
    return nk__ok(ctx);
  }
  if (training && running_mean) {
    /* the update reads x before y is written (y may be x) */
    gn_job j;
    gn_setup(&j, ctx, d, C);
    j.x = (tens){x, d->x_n_stride, d->x_row_stride};
    const double m = d->momentum;
    in_run_job p = {&j, running_mean, running_var, m};
    const size_t tasks = j.g.nsc ? ceil_div(C, NK_CH_TILE_COLS) : C;
    nk_parallelize_1d(nk__context_pool(ctx), in_running_task, &p, tasks, 1);
  }
  gn_fwd_run(ctx, d, C, x, gamma, beta, y, mean, rstd);
  return nk__ok(ctx);
}

nk_status nk_instancenorm_bwd_workspace_size(const nk_instancenorm_desc *d, size_t *bytes) {
  if (d == NULL || bytes == NULL) return NK_STATUS_INVALID_ARGUMENT;
  size_t a, b;
  nk_chnorm_desc e = *d;
  e.flags &= ~NK_CHNORM_TRAINING;
  if (nk_batchnorm_bwd_workspace_size(&e, &a) != NK_STATUS_OK) return NK_STATUS_INVALID_ARGUMENT;
  int ok = 1;
  b = is_empty(d) ? 0 : gn_bwd_ws_bytes(d, &ok);
  if (!is_empty(d) && !ok) return NK_STATUS_INVALID_ARGUMENT;
  *bytes = a > b ? a : b;
  return NK_STATUS_OK;
}

nk_status nk_instancenorm_bwd(nk_context *ctx, const nk_instancenorm_desc *d, int use_running,
                              const void *x, const void *gamma, const float *mean,
                              const float *rstd, const void *dy, void *dx, void *dgamma,
                              void *dbeta, void *workspace, size_t workspace_size) {
  const char *op = "instancenorm_bwd";
  TRY(check_desc(ctx, op, d));
  TRY(no_flags(ctx, op, d, NK_CHNORM_TRAINING | NK_CHNORM_ACCUMULATE));
  if (is_empty(d)) return nk__ok(ctx);
  if (use_running) {
    /* constant statistics: BatchNorm's inference backward with sample 0's (broadcast) values */
    nk_chnorm_desc e = *d;
    e.flags &= ~NK_CHNORM_TRAINING;
    if (mean == NULL || rstd == NULL)
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: mean/rstd are NULL", op);
    size_t bytes;
    TRY(nk__mul_size(d->batch, d->channels, &bytes) ? NK_STATUS_OK
                                                     : nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                                                                "%s: N*C overflows", op));
    return nk_batchnorm_bwd(ctx, &e, x, NULL, gamma, mean, rstd, dy, dx, NULL, dgamma, dbeta,
                            workspace, workspace_size);
  }
  return gn_bwd_impl(ctx, op, d, d->channels, x, gamma, mean, rstd, dy, dx, dgamma, dbeta,
                     workspace, workspace_size);
}
