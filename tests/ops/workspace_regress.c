/*
 * workspace_regress.c — the workspace rule of normkit.h ("Workspaces": any address works; the
 * size queries include NK_WORKSPACE_ALIGN bytes of slack) for every operator that takes a
 * workspace outside the research layers (tests/ops/resnorm_regress.c) and the calibration ops:
 * at every offset 0..NK_WORKSPACE_ALIGN from an aligned base, the call returns OK and writes the
 * same output bits as at offset 0; one byte less than the query is MISUSE. Under UBSan (make
 * test's sanitizer stage, every ISA) a misaligned double access inside fails the run.
 * Found by the fuzz harnesses: LayerNorm/RMSNorm backward and cross-entropy
 * (tests/fuzz/known/rownorm-bwd-misaligned-workspace, cross_entropy-misaligned-workspace), L1
 * LayerNorm backward, the channel norms (nk_batchnorm_moments: moments harness).
 */
#include <stdlib.h>
#include <string.h>

#include "normkit.h"
#include "test.h"

enum { R = 23, C = 37, N = 3, CH = 5, S = 29 };

/* One operator: runs with (ws, wsb) and writes its outputs to out (out_bytes of them). */
typedef struct wcase {
  const char *name;
  size_t out_bytes;
  size_t (*query)(void);
  nk_status (*call)(void *ws, size_t wsb, unsigned char *out);
  int exact; /* the query is this call's need (moments/bwd_reduce use less than theirs) */
} wcase;

static float g_x[R * C], g_dy[R * C], g_g[C], g_b[C], g_mean[R], g_rstd[R], g_y[R * C], g_yr[R * C];
static float g_rrstd[R];
static float g_cx[N * CH * S], g_cdy[N * CH * S], g_cg[CH], g_cmean[N * CH], g_crstd[N * CH];
static float g_cy[N * CH * S], g_smean[CH], g_srstd[CH];

static void init(void) {
  for (int i = 0; i < R * C; i++)
    g_x[i] = (float)((i * 37) % 101) * 0.01f - 0.5f, g_dy[i] = (float)((i * 11) % 13) - 6.0f;
  for (int i = 0; i < C; i++) g_g[i] = 1.0f + 0.01f * (float)i, g_b[i] = 0.1f * (float)(i % 5);
  for (int i = 0; i < N * CH * S; i++)
    g_cx[i] = (float)((i * 29) % 97) * 0.02f - 1.0f, g_cdy[i] = (float)((i * 7) % 11) - 5.0f;
  for (int i = 0; i < CH; i++) g_cg[i] = 0.5f + 0.1f * (float)i;
}

static nk_norm_desc row_desc(uint32_t flags) {
  nk_norm_desc d = nk_norm_desc_dense(R, C, NK_DTYPE_F32, 1e-5f);
  d.flags = flags;
  return d;
}
static nk_chnorm_desc ch_desc(int training) {
  nk_chnorm_desc d = nk_chnorm_desc_dense(N, CH, S, NK_LAYOUT_NCS, NK_DTYPE_F32, 1e-5f);
  d.flags = training ? NK_CHNORM_TRAINING : 0;
  return d;
}

/* ---- LayerNorm / RMSNorm backward ---- */
static size_t q_ln_bwd(void) {
  const nk_norm_desc d = row_desc(0);
  size_t b = 0;
  return nk_layernorm_bwd_workspace_size(&d, &b) == NK_OK ? b : 0;
}
static nk_status c_ln_bwd(void *ws, size_t wsb, unsigned char *out) {
  const nk_norm_desc d = row_desc(0);
  float *dx = (float *)(void *)out, *dg = dx + R * C, *db = dg + C;
  return nk_layernorm_bwd(NULL, &d, g_x, g_g, NULL, g_mean, g_rstd, g_dy, NULL, dx, dg, db, ws,
                          wsb);
}
/* from y, the _rows form: cols floats + NK_WORKSPACE_ALIGN (the header's count) */
static size_t q_rms_rows_from_y(void) { return C * sizeof(float) + NK_WORKSPACE_ALIGN; }
static nk_status c_rms_rows_from_y(void *ws, size_t wsb, unsigned char *out) {
  const nk_norm_desc d = row_desc(NK_NORM_BWD_FROM_Y);
  double *dga = (double *)(void *)out, *dba = dga + C;
  float *dx = (float *)(dba + C);
  memset(dga, 0, 2 * C * sizeof(double));
  return nk_rmsnorm_bwd_rows(NULL, &d, 3, R - 2, g_yr, g_g, g_b, g_rrstd, g_dy, NULL, dx, dga,
                             dba, ws, wsb);
}
/* ---- L1 LayerNorm backward ---- */
static size_t q_l1_bwd(void) {
  const nk_norm_desc d = row_desc(0);
  size_t b = 0;
  return nk_l1norm_bwd_workspace_size(&d, &b) == NK_OK ? b : 0;
}
static nk_status c_l1_bwd(void *ws, size_t wsb, unsigned char *out) {
  const nk_norm_desc d = row_desc(0);
  float *dx = (float *)(void *)out, *dg = dx + R * C, *db = dg + C;
  float mean[R], rs[R], y[R * C];
  const nk_status st = nk_l1norm_fwd(NULL, &d, g_x, g_g, NULL, y, mean, rs);
  if (st != NK_OK) return st;
  return nk_l1norm_bwd(NULL, &d, g_x, g_g, mean, rs, g_dy, NULL, dx, dg, db, ws, wsb);
}
/* ---- cross-entropy (mean) ---- */
static nk_cross_entropy_desc xent_desc(void) {
  nk_cross_entropy_desc e = nk_cross_entropy_desc_dense(R, C, NK_DTYPE_F32);
  e.reduction = NK_REDUCTION_MEAN;
  return e;
}
static size_t q_xent(void) {
  const nk_cross_entropy_desc e = xent_desc();
  size_t b = 0;
  return nk_cross_entropy_workspace_size(&e, &b) == NK_OK ? b : 0;
}
static nk_status c_xent(void *ws, size_t wsb, unsigned char *out) {
  const nk_cross_entropy_desc e = xent_desc();
  int64_t t[R];
  for (int i = 0; i < R; i++) t[i] = (i * 7) % C;
  float *loss = (float *)(void *)out, *dx = loss + 1;
  return nk_cross_entropy(NULL, &e, g_x, t, loss, dx, NULL, ws, wsb);
}
/* ---- BatchNorm ---- */
static size_t q_bn_fwd(void) {
  const nk_chnorm_desc d = ch_desc(1);
  size_t b = 0;
  return nk_batchnorm_fwd_workspace_size(&d, &b) == NK_OK ? b : 0;
}
static nk_status c_bn_moments(void *ws, size_t wsb, unsigned char *out) {
  const nk_chnorm_desc d = ch_desc(1);
  return nk_batchnorm_moments(NULL, &d, g_cx, (nk_moments *)(void *)out, ws, wsb);
}
static nk_status c_bn_fwd(void *ws, size_t wsb, unsigned char *out) {
  const nk_chnorm_desc d = ch_desc(1);
  float *y = (float *)(void *)out, *sm = y + N * CH * S, *sr = sm + CH;
  return nk_batchnorm_fwd(NULL, &d, g_cx, NULL, g_cg, NULL, NULL, NULL, NULL, y, sm, sr, ws, wsb);
}
static size_t q_bn_bwd(void) {
  const nk_chnorm_desc d = ch_desc(1);
  size_t b = 0;
  return nk_batchnorm_bwd_workspace_size(&d, &b) == NK_OK ? b : 0;
}
static nk_status c_bn_bwd(void *ws, size_t wsb, unsigned char *out) {
  const nk_chnorm_desc d = ch_desc(1);
  float *dx = (float *)(void *)out, *dg = dx + N * CH * S, *db = dg + CH;
  return nk_batchnorm_bwd(NULL, &d, g_cx, NULL, g_cg, g_smean, g_srstd, g_cdy, dx, NULL, dg, db,
                          ws, wsb);
}
static nk_status c_bn_bwd_reduce(void *ws, size_t wsb, unsigned char *out) {
  const nk_chnorm_desc d = ch_desc(1);
  return nk_batchnorm_bwd_reduce(NULL, &d, g_cx, NULL, g_smean, g_cdy, (double *)(void *)out, ws,
                                 wsb);
}
/* ---- GroupNorm / InstanceNorm backward ---- */
static nk_chnorm_desc gn_desc(void) {
  nk_chnorm_desc d = ch_desc(1);
  d.groups = CH;
  return d;
}
static size_t q_gn_bwd(void) {
  const nk_chnorm_desc d = gn_desc();
  size_t b = 0;
  return nk_groupnorm_bwd_workspace_size(&d, &b) == NK_OK ? b : 0;
}
static nk_status c_gn_bwd(void *ws, size_t wsb, unsigned char *out) {
  const nk_chnorm_desc d = gn_desc();
  float *dx = (float *)(void *)out, *dg = dx + N * CH * S, *db = dg + CH;
  return nk_groupnorm_bwd(NULL, &d, g_cx, g_cg, g_cmean, g_crstd, g_cdy, dx, dg, db, ws, wsb);
}
static size_t q_in_bwd(void) {
  const nk_chnorm_desc d = ch_desc(1);
  size_t b = 0;
  return nk_instancenorm_bwd_workspace_size(&d, &b) == NK_OK ? b : 0;
}
static nk_status c_in_bwd(void *ws, size_t wsb, unsigned char *out) {
  const nk_chnorm_desc d = ch_desc(1);
  float *dx = (float *)(void *)out, *dg = dx + N * CH * S, *db = dg + CH;
  return nk_instancenorm_bwd(NULL, &d, 0, g_cx, g_cg, g_cmean, g_crstd, g_cdy, dx, dg, db, ws,
                             wsb);
}
/* ---- Conda (projected, right side) ---- */
enum { CA = 6, CB = 9 };
static size_t q_conda(void) {
  size_t b = 0;
  return nk_conda_workspace_size(CA, CB, &b) == NK_OK ? b : 0;
}
static nk_status c_conda(void *ws, size_t wsb, unsigned char *out) {
  const nk_conda_desc d = nk_conda_desc_default();
  float *W = (float *)(void *)out, *v = W + CA * CB;
  float g[CA * CB], m[CA * CB], P[CB * CB];
  for (int i = 0; i < CA * CB; i++)
    W[i] = 0.1f * (float)(i % 7), v[i] = 0.01f, g[i] = g_dy[i] * 0.1f, m[i] = g_x[i];
  for (int i = 0; i < CB * CB; i++) P[i] = i % (CB + 1) == 0 ? 1.0f : 0.0f;
  int64_t t = 0;
  return nk_conda_step(NULL, &d, NK_CONDA_SIDE_RIGHT, CA, CB, W, g, m, v, P, &t, ws, wsb);
}

static const wcase cases[] = {
    {"layernorm_bwd", (R * C + 2 * C) * 4, q_ln_bwd, c_ln_bwd, 1},
    {"rmsnorm_bwd_rows from y", 2 * C * 8 + R * C * 4, q_rms_rows_from_y, c_rms_rows_from_y, 1},
    {"l1norm_bwd", (R * C + 2 * C) * 4, q_l1_bwd, c_l1_bwd, 1},
    {"cross_entropy", (1 + R * C) * 4, q_xent, c_xent, 1},
    {"batchnorm_moments", CH * sizeof(nk_moments), q_bn_fwd, c_bn_moments, 0},
    {"batchnorm_fwd", (N * CH * S + 2 * CH) * 4, q_bn_fwd, c_bn_fwd, 1},
    {"batchnorm_bwd", (N * CH * S + 2 * CH) * 4, q_bn_bwd, c_bn_bwd, 1},
    {"batchnorm_bwd_reduce", 3 * CH * 8, q_bn_bwd, c_bn_bwd_reduce, 0},
    {"groupnorm_bwd", (N * CH * S + 2 * CH) * 4, q_gn_bwd, c_gn_bwd, 1},
    {"instancenorm_bwd", (N * CH * S + 2 * CH) * 4, q_in_bwd, c_in_bwd, 1},
    {"conda_step", 2 * CA * CB * 4, q_conda, c_conda, 1},
};

NK_TEST(every_workspace_at_any_address) {
  /* saved statistics (and y) for the backward calls */
  const nk_norm_desc d = row_desc(0);
  NK_REQUIRE(nk_layernorm_fwd(NULL, &d, g_x, NULL, g_g, NULL, g_y, NULL, g_mean, g_rstd) == NK_OK,
             "layernorm fwd");
  NK_REQUIRE(nk_rmsnorm_fwd(NULL, &d, g_x, NULL, g_g, g_b, g_yr, NULL, g_rrstd) == NK_OK,
             "rmsnorm fwd");
  const nk_chnorm_desc cd = ch_desc(1);
  size_t wsb = q_bn_fwd();
  void *w0 = malloc(wsb);
  NK_REQUIRE(w0 && nk_batchnorm_fwd(NULL, &cd, g_cx, NULL, g_cg, NULL, NULL, NULL, NULL, g_cy,
                                    g_smean, g_srstd, w0, wsb) == NK_OK, "batchnorm fwd");
  free(w0);
  const nk_chnorm_desc gd = gn_desc();
  NK_REQUIRE(nk_groupnorm_fwd(NULL, &gd, g_cx, g_cg, NULL, g_cy, g_cmean, g_crstd) == NK_OK,
             "groupnorm fwd");

  static unsigned char out0[1 << 16], out[1 << 16];
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    const wcase *c = &cases[k];
    NK_REQUIRE(c->out_bytes <= sizeof out, "%s: out", c->name);
    const size_t need = c->query();
    NK_CHECK(need > NK_WORKSPACE_ALIGN, "%s: query %zu has no slack", c->name, need);
    /* a base aligned to NK_WORKSPACE_ALIGN, then every offset up to it */
    unsigned char *raw = malloc(need + 2 * NK_WORKSPACE_ALIGN);
    NK_REQUIRE(raw != NULL, "alloc");
    unsigned char *base = raw + (NK_WORKSPACE_ALIGN - (uintptr_t)raw % NK_WORKSPACE_ALIGN);
    for (size_t off = 0; off <= NK_WORKSPACE_ALIGN; off++) {
      memset(out, 0, c->out_bytes);
      const nk_status st = c->call(base + off, need, out);
      NK_CHECK(st == NK_OK, "%s at offset %zu: status %d", c->name, off, st);
      if (off == 0) memcpy(out0, out, c->out_bytes);
      NK_CHECK(memcmp(out, out0, c->out_bytes) == 0, "%s: outputs differ at offset %zu",
               c->name, off);
      if (c->exact && off % 9 == 0)
        NK_CHECK(c->call(base + off, need - 1, out) == NK_STATUS_MISUSE,
                 "%s: one byte short at offset %zu", c->name, off);
    }
    free(raw);
  }
}

int main(void) {
  init();
  NK_RUN(every_workspace_at_any_address);
  return nk_test_summary();
}
