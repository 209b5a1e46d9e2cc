/*
 * tests/ops/rownorm_args.c — bad input to the LayerNorm/RMSNorm operators: each case returns its
 * documented status with a message on the context, and writes nothing.
 */
#include <stdint.h>
#include <string.h>

#include "test.h"
#include "util.h"

#define R 4
#define C 32

static float x[R * C], r[R * C], y[R * C], h[R * C], dy[R * C], dx[R * C];
static float gamma_[C], beta_[C], dg[C], db[C], mean[R], rstd[R];
static unsigned char ws[1 << 16];

static void reset(void) {
  for (size_t k = 0; k < R * C; k++) x[k] = r[k] = dy[k] = (float)(k % 7) - 3.0f;
  memset(y, 0x5A, sizeof y);
  memset(h, 0x5A, sizeof h);
  memset(dx, 0x5A, sizeof dx);
  memset(dg, 0x5A, sizeof dg);
  memset(db, 0x5A, sizeof db);
  memset(mean, 0x5A, sizeof mean);
  memset(rstd, 0x5A, sizeof rstd);
  for (size_t j = 0; j < C; j++) gamma_[j] = 1.0f, beta_[j] = 0.0f;
}

static int untouched(const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != 0x5A) return 0;
  return 1;
}

static int outputs_untouched(void) {
  return untouched(y, sizeof y) && untouched(h, sizeof h) && untouched(dx, sizeof dx) &&
         untouched(dg, sizeof dg) && untouched(db, sizeof db) && untouched(mean, sizeof mean) &&
         untouched(rstd, sizeof rstd);
}

static nk_context *ctx;

/* Expects `call` to return `want` with a message containing `needle`, writing nothing. */
#define EXPECT(call, want, needle)                                                               \
  do {                                                                                           \
    reset();                                                                                     \
    nk_status got_ = (call);                                                                     \
    NK_CHECK(got_ == (want), "%s: got %s, want %s", #call, nk_status_string(got_),               \
             nk_status_string(want));                                                            \
    NK_CHECK(strstr(nk_context_message(ctx), (needle)) != NULL, "%s: message \"%s\" lacks \"%s\"", \
             #call, nk_context_message(ctx), (needle));                                         \
    NK_CHECK(outputs_untouched(), "%s wrote to an output", #call);                               \
  } while (0)

static nk_norm_desc dense(void) { return nk_norm_desc_dense(R, C, NK_DTYPE_F32, 1e-5f); }

NK_TEST(null_pointers) {
  nk_norm_desc d = dense();
  EXPECT(nk_layernorm_fwd(ctx, NULL, x, NULL, NULL, NULL, y, NULL, mean, rstd),
         NK_STATUS_INVALID_ARGUMENT, "desc");
  EXPECT(nk_layernorm_fwd(ctx, &d, NULL, NULL, NULL, NULL, y, NULL, mean, rstd),
         NK_STATUS_INVALID_ARGUMENT, "x is NULL");
  EXPECT(nk_rmsnorm_fwd(ctx, &d, x, NULL, NULL, NULL, NULL, NULL, rstd),
         NK_STATUS_INVALID_ARGUMENT, "y is NULL");
  EXPECT(nk_layernorm_bwd(ctx, &d, x, NULL, NULL, NULL, rstd, dy, NULL, dx, NULL, NULL, ws,
                          sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "mean is NULL");
  EXPECT(nk_rmsnorm_bwd(ctx, &d, x, NULL, NULL, NULL, dy, NULL, dx, NULL, NULL, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "rstd is NULL");
  EXPECT(nk_rmsnorm_bwd(ctx, &d, x, NULL, NULL, rstd, NULL, NULL, dx, NULL, NULL, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "dy is NULL");
  EXPECT(nk_layernorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, h, mean, rstd),
         NK_STATUS_INVALID_ARGUMENT, "without a residual");
  d.flags = NK_NORM_GAMMA_OFFSET;
  EXPECT(nk_layernorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, mean, rstd),
         NK_STATUS_INVALID_ARGUMENT, "needs gamma");
  size_t bytes;
  NK_CHECK(nk_layernorm_bwd_workspace_size(NULL, &bytes) == NK_STATUS_INVALID_ARGUMENT, "ws");
  NK_CHECK(nk_layernorm_bwd_workspace_size(&d, NULL) == NK_STATUS_INVALID_ARGUMENT, "ws");
}

/* A pointer that is not aligned to its element size is rejected (normkit.h: the caller's
 * geometry is trusted only as far as it can be checked). */
NK_TEST(misaligned_pointers) {
  nk_norm_desc d = dense();
  const void *xm = (const char *)x + 1;
  void *ym = (char *)y + 2, *gm = (char *)gamma_ + 1;
  float *mm = (float *)(void *)((char *)mean + 3);
  EXPECT(nk_layernorm_fwd(ctx, &d, xm, NULL, NULL, NULL, y, NULL, mean, rstd),
         NK_STATUS_INVALID_ARGUMENT, "x (");
  EXPECT(nk_layernorm_fwd(ctx, &d, x, NULL, NULL, NULL, ym, NULL, mean, rstd),
         NK_STATUS_INVALID_ARGUMENT, "not aligned");
  EXPECT(nk_rmsnorm_fwd(ctx, &d, x, NULL, gm, NULL, y, NULL, rstd), NK_STATUS_INVALID_ARGUMENT,
         "gamma (");
  EXPECT(nk_layernorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, mm, rstd),
         NK_STATUS_INVALID_ARGUMENT, "mean (");
  EXPECT(nk_layernorm_bwd(ctx, &d, x, NULL, NULL, mean, rstd, dy, NULL, (char *)dx + 1, NULL,
                          NULL, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "dx (");
  d.dtype = d.param_dtype = NK_DTYPE_BF16; /* 2-byte elements: an odd address is misaligned */
  EXPECT(nk_rmsnorm_fwd(ctx, &d, (const char *)x + 1, NULL, NULL, NULL, y, NULL, rstd),
         NK_STATUS_INVALID_ARGUMENT, "not aligned");
  reset();
  NK_CHECK(nk_rmsnorm_fwd(ctx, &d, (const char *)x + 2, NULL, NULL, NULL, y, NULL, rstd) ==
               NK_STATUS_OK, "a 2-byte aligned bf16 pointer is fine: %s", nk_context_message(ctx));
}

NK_TEST(zero_sizes_are_noops) {
  nk_norm_desc d = dense();
  d.rows = 0;
  reset();
  NK_CHECK(nk_layernorm_fwd(ctx, &d, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL) == 0, "rows 0");
  NK_CHECK(nk_layernorm_bwd(ctx, &d, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                            NULL, 0) == 0, "bwd rows 0");
  d = dense();
  d.cols = 0;
  NK_CHECK(nk_rmsnorm_fwd(ctx, &d, NULL, NULL, NULL, NULL, NULL, NULL, NULL) == 0, "cols 0");
  NK_CHECK(nk_rmsnorm_bwd(ctx, &d, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                          0) == 0, "bwd cols 0");
  size_t bytes = 1;
  NK_CHECK(nk_rmsnorm_bwd_workspace_size(&d, &bytes) == 0 && bytes == 0, "ws of empty");
  NK_CHECK(outputs_untouched(), "zero-size call wrote");
}

NK_TEST(bad_strides) {
  nk_norm_desc d = dense();
  d.x_stride = C - 1;
  EXPECT(nk_layernorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, mean, rstd),
         NK_STATUS_INVALID_ARGUMENT, "x_stride 31 < cols 32");
  d = dense();
  d.y_stride = -C;
  EXPECT(nk_rmsnorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, rstd), NK_STATUS_INVALID_ARGUMENT,
         "y_stride");
  d = dense();
  d.r_stride = 0;
  EXPECT(nk_rmsnorm_fwd(ctx, &d, x, r, NULL, NULL, y, NULL, rstd), NK_STATUS_INVALID_ARGUMENT,
         "r_stride");
  d = dense();
  d.dx_stride = 3;
  EXPECT(nk_layernorm_bwd(ctx, &d, x, NULL, NULL, mean, rstd, dy, NULL, dx, NULL, NULL, ws,
                          sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "dx_stride");
}

NK_TEST(bad_scalars) {
  nk_norm_desc d = dense();
  const float bad_eps[] = {0.0f, -1e-5f, NAN, INFINITY};
  for (int i = 0; i < 4; i++) {
    d.eps = bad_eps[i];
    EXPECT(nk_layernorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, mean, rstd),
           NK_STATUS_INVALID_ARGUMENT, "eps");
  }
  d = dense();
  d.dtype = (nk_dtype)7;
  EXPECT(nk_rmsnorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, rstd), NK_STATUS_INVALID_ARGUMENT,
         "unknown dtype");
  d = dense();
  d.dtype = NK_DTYPE_F16;
  d.param_dtype = NK_DTYPE_BF16;
  EXPECT(nk_rmsnorm_fwd(ctx, &d, x, NULL, gamma_, NULL, y, NULL, rstd), NK_STATUS_UNSUPPORTED,
         "param_dtype bf16");
  d = dense();
  d.flags = 0x100;
  EXPECT(nk_rmsnorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, rstd), NK_STATUS_INVALID_ARGUMENT,
         "unknown flags");
  d = dense();
  EXPECT(nk_layernorm_fwd_rows(ctx, &d, 3, 5, x, NULL, NULL, NULL, y, NULL, mean, rstd),
         NK_STATUS_INVALID_ARGUMENT, "row range");
  EXPECT(nk_layernorm_bwd_rows(ctx, &d, 2, 1, x, NULL, NULL, mean, rstd, dy, NULL, dx, NULL, NULL,
                               NULL, 0),
         NK_STATUS_INVALID_ARGUMENT, "row range");
}

NK_TEST(size_overflow) {
  nk_norm_desc d = dense();
  d.rows = SIZE_MAX / 8;
  d.x_stride = d.y_stride = PTRDIFF_MAX / 4;
  EXPECT(nk_layernorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, NULL, NULL),
         NK_STATUS_INVALID_ARGUMENT, "overflows");
  d = dense();
  d.rows = SIZE_MAX / 2;
  EXPECT(nk_rmsnorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, NULL), NK_STATUS_INVALID_ARGUMENT,
         "overflows");
  d = dense();
  d.cols = SIZE_MAX / 2;
  d.x_stride = d.y_stride = PTRDIFF_MAX;
  d.rows = 1;
  EXPECT(nk_rmsnorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, NULL), NK_STATUS_INVALID_ARGUMENT,
         "");
  size_t bytes;
  d = dense();
  d.rows = SIZE_MAX;
  d.cols = SIZE_MAX / 4;
  NK_CHECK(nk_layernorm_bwd_workspace_size(&d, &bytes) == NK_STATUS_INVALID_ARGUMENT,
           "workspace size overflow");
}

NK_TEST(partial_overlap_rejected) {
  nk_norm_desc d = dense();
  d.rows = R - 1;
  EXPECT(nk_layernorm_fwd(ctx, &d, x, NULL, NULL, NULL, x + 1, NULL, NULL, NULL),
         NK_STATUS_INVALID_ARGUMENT, "y overlaps x");
  d = dense();
  EXPECT(nk_layernorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, y + 5, rstd),
         NK_STATUS_INVALID_ARGUMENT, "overlaps");
  EXPECT(nk_layernorm_fwd(ctx, &d, x, NULL, NULL, NULL, y, NULL, mean, mean),
         NK_STATUS_INVALID_ARGUMENT, "overlaps");
  /* same pointer, different stride is not exact aliasing */
  d.rows = 2;
  d.y_stride = 2 * C;
  EXPECT(nk_rmsnorm_fwd(ctx, &d, x, NULL, NULL, NULL, x, NULL, NULL), NK_STATUS_INVALID_ARGUMENT,
         "overlaps");
  d = dense();
  d.rows = R - 1;
  EXPECT(nk_layernorm_bwd(ctx, &d, x, NULL, NULL, mean, rstd, dy, NULL, dy + 3, NULL, NULL, ws,
                          sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "dx overlaps dy");
  d = dense();
  EXPECT(nk_layernorm_bwd(ctx, &d, x, gamma_, NULL, mean, rstd, dy, NULL, dx, dg, NULL,
                          gamma_, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "overlaps");
  /* the gradient of gamma written onto gamma is not allowed */
  EXPECT(nk_layernorm_bwd(ctx, &d, x, gamma_, NULL, mean, rstd, dy, NULL, dx, gamma_, NULL, ws,
                          sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "overlaps");
}

NK_TEST(workspace_too_small) {
  nk_norm_desc d = dense();
  size_t need = 0;
  NK_CHECK(nk_layernorm_bwd_workspace_size(&d, &need) == 0 && need > 0, "need %zu", need);
  EXPECT(nk_layernorm_bwd(ctx, &d, x, gamma_, NULL, mean, rstd, dy, NULL, dx, dg, NULL, ws,
                          need - 1),
         NK_STATUS_MISUSE, "workspace");
  EXPECT(nk_layernorm_bwd(ctx, &d, x, gamma_, NULL, mean, rstd, dy, NULL, dx, dg, NULL, NULL,
                          need),
         NK_STATUS_MISUSE, "workspace");
}

NK_TEST(exact_inplace_is_allowed) {
  nk_norm_desc d = dense();
  reset();
  NK_CHECK(nk_layernorm_fwd(ctx, &d, x, r, gamma_, beta_, x, r, mean, rstd) == 0, "y=x, h=r: %s",
           nk_context_message(ctx));
  NK_CHECK(nk_context_message(ctx)[0] == '\0', "message cleared on success");
  NK_CHECK(nk_layernorm_bwd(ctx, &d, x, gamma_, beta_, mean, rstd, dy, dy, dy, dg, db, ws,
                            sizeof ws) == 0, "dx=dy=dh: %s", nk_context_message(ctx));
}

NK_TEST(null_context_reports_status_only) {
  nk_norm_desc d = dense();
  d.eps = -1;
  reset();
  NK_CHECK(nk_layernorm_fwd(NULL, &d, x, NULL, NULL, NULL, y, NULL, mean, rstd) ==
               NK_STATUS_INVALID_ARGUMENT, "status");
  NK_CHECK(outputs_untouched(), "wrote");
  NK_CHECK(strcmp(nk_context_message(NULL), "") == 0, "NULL context message");
}

NK_TEST(status_strings) {
  NK_CHECK(strcmp(nk_status_string(NK_STATUS_OK), "ok") == 0, "ok");
  for (int s = 1; s <= 5; s++)
    NK_CHECK(strcmp(nk_status_string((nk_status)s), "unknown status") != 0, "status %d", s);
  NK_CHECK(strcmp(nk_status_string((nk_status)99), "unknown status") == 0, "unknown");
  NK_CHECK(strcmp(nk_dtype_name(NK_DTYPE_BF16), "bf16") == 0 && nk_dtype_size(NK_DTYPE_F16) == 2,
           "dtype");
  NK_CHECK(nk_kernel_name(NK_OP_LAYERNORM_FWD, NK_DTYPE_F32) != NULL, "kernel name");
  NK_CHECK(nk_kernel_name(NK_OP_COUNT, NK_DTYPE_F32) == NULL, "bad op");
  NK_CHECK(strcmp(nk_op_name(NK_OP_RMSNORM_BWD), "rmsnorm_bwd") == 0, "op name");
}

int main(void) {
  if (nk_context_create(&ctx) != NK_STATUS_OK) return 1;
  NK_RUN(null_pointers);
  NK_RUN(misaligned_pointers);
  NK_RUN(zero_sizes_are_noops);
  NK_RUN(bad_strides);
  NK_RUN(bad_scalars);
  NK_RUN(size_overflow);
  NK_RUN(partial_overlap_rejected);
  NK_RUN(workspace_too_small);
  NK_RUN(exact_inplace_is_allowed);
  NK_RUN(null_context_reports_status_only);
  NK_RUN(status_strings);
  nk_context_destroy(ctx);
  return nk_test_summary();
}
