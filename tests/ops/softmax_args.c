/*
 * tests/ops/softmax_args.c — bad input to the softmax-family operators (softmax / log_softmax
 * fwd and bwd and their row-range forms, sigmoid scores, cross-entropy): each case returns its
 * documented status with a non-empty message on the context and writes nothing; zero sizes are
 * no-ops. Where normkit.h is silent the expectation chosen here is marked "(header silent)".
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "test.h"
#include "util.h"

#define R 4
#define C 32

static float x[R * C], y[R * C], dy[R * C], dx[R * C], mask[R * C], sink[R], lse[R], dsink[R];
static float loss[R], lse2[R];
static int64_t target[R];
static unsigned char ws[1 << 12];

static void reset(void) {
  for (size_t k = 0; k < R * C; k++) {
    x[k] = dy[k] = (float)(k % 7) - 3.0f;
    mask[k] = 0.0f;
  }
  for (size_t i = 0; i < R; i++) sink[i] = 0.5f, target[i] = (int64_t)i;
  memset(y, 0x5A, sizeof y);
  memset(dx, 0x5A, sizeof dx);
  memset(lse, 0x5A, sizeof lse);
  memset(dsink, 0x5A, sizeof dsink);
  memset(loss, 0x5A, sizeof loss);
  memset(lse2, 0x5A, sizeof lse2);
}

static int untouched(const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != 0x5A) return 0;
  return 1;
}

static int outputs_untouched(void) {
  return untouched(y, sizeof y) && untouched(dx, sizeof dx) && untouched(lse, sizeof lse) &&
         untouched(dsink, sizeof dsink) && untouched(loss, sizeof loss) &&
         untouched(lse2, sizeof lse2);
}

static nk_context *ctx;

/* Expects `call` to return `want` with a non-empty message containing `needle`, writing
 * nothing. For calls whose outputs are the inputs' buffers (overlap cases) the inputs are
 * re-made by reset() and the output check covers the sentinel buffers. */
#define EXPECT(call, want, needle)                                                                 \
  do {                                                                                             \
    reset();                                                                                       \
    nk_status got_ = (call);                                                                       \
    NK_CHECK(got_ == (want), "%s: got %s, want %s (%s)", #call, nk_status_string(got_),            \
             nk_status_string(want), nk_context_message(ctx));                                     \
    NK_CHECK(nk_context_message(ctx)[0] != '\0', "%s: empty message", #call);                      \
    NK_CHECK(strstr(nk_context_message(ctx), (needle)) != NULL, "%s: message \"%s\" lacks \"%s\"", \
             #call, nk_context_message(ctx), (needle));                                            \
    NK_CHECK(outputs_untouched(), "%s wrote to an output", #call);                                 \
  } while (0)

static nk_softmax_desc dense(void) { return nk_softmax_desc_dense(R, C, NK_DTYPE_F32); }

#define FWD(d) nk_softmax_fwd(ctx, &(d), x, NULL, NULL, y, lse)
#define BWD(d) nk_softmax_bwd(ctx, &(d), x, dy, NULL, NULL, dx, NULL)

NK_TEST(null_pointers) {
  nk_softmax_desc d = dense();
  EXPECT(nk_softmax_fwd(ctx, NULL, x, NULL, NULL, y, lse), NK_STATUS_INVALID_ARGUMENT, "");
  EXPECT(nk_softmax_fwd(ctx, &d, NULL, NULL, NULL, y, lse), NK_STATUS_INVALID_ARGUMENT, "x");
  EXPECT(nk_softmax_fwd(ctx, &d, x, NULL, NULL, NULL, lse), NK_STATUS_INVALID_ARGUMENT, "y");
  EXPECT(nk_softmax_fwd_rows(ctx, &d, 0, 2, NULL, NULL, NULL, y, lse), NK_STATUS_INVALID_ARGUMENT,
         "x");
  EXPECT(nk_softmax_bwd(ctx, NULL, x, dy, NULL, NULL, dx, NULL), NK_STATUS_INVALID_ARGUMENT, "");
  EXPECT(nk_softmax_bwd(ctx, &d, NULL, dy, NULL, NULL, dx, NULL), NK_STATUS_INVALID_ARGUMENT, "y");
  EXPECT(nk_softmax_bwd(ctx, &d, x, NULL, NULL, NULL, dx, NULL), NK_STATUS_INVALID_ARGUMENT, "dy");
  EXPECT(nk_softmax_bwd(ctx, &d, x, dy, NULL, NULL, NULL, NULL), NK_STATUS_INVALID_ARGUMENT, "dx");
  /* dsink needs sink and lse (header: "needs sink and lse") */
  EXPECT(nk_softmax_bwd(ctx, &d, x, dy, NULL, lse2, dx, dsink), NK_STATUS_INVALID_ARGUMENT, "sink");
  EXPECT(nk_softmax_bwd(ctx, &d, x, dy, sink, NULL, dx, dsink), NK_STATUS_INVALID_ARGUMENT, "lse");
  EXPECT(nk_softmax_bwd_rows(ctx, &d, 0, 1, x, dy, sink, NULL, dx, dsink),
         NK_STATUS_INVALID_ARGUMENT, "lse");
  EXPECT(nk_sigmoid_attn_fwd(ctx, &d, NULL, NULL, y), NK_STATUS_INVALID_ARGUMENT, "x");
  EXPECT(nk_sigmoid_attn_fwd(ctx, &d, x, NULL, NULL), NK_STATUS_INVALID_ARGUMENT, "y");
  EXPECT(nk_sigmoid_attn_bwd(ctx, &d, x, NULL, dx), NK_STATUS_INVALID_ARGUMENT, "dy");
  EXPECT(nk_sigmoid_attn_bwd(ctx, NULL, x, dy, dx), NK_STATUS_INVALID_ARGUMENT, "");
  nk_cross_entropy_desc e = nk_cross_entropy_desc_dense(R, C, NK_DTYPE_F32);
  EXPECT(nk_cross_entropy(ctx, NULL, x, target, loss, dx, lse2, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "");
  EXPECT(nk_cross_entropy(ctx, &e, NULL, target, loss, dx, lse2, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "x");
  EXPECT(nk_cross_entropy(ctx, &e, x, NULL, loss, dx, lse2, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "target");
  EXPECT(nk_cross_entropy(ctx, &e, x, target, NULL, dx, lse2, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "loss");
  size_t bytes;
  NK_CHECK(nk_cross_entropy_workspace_size(NULL, &bytes) == NK_STATUS_INVALID_ARGUMENT, "ws");
  NK_CHECK(nk_cross_entropy_workspace_size(&e, NULL) == NK_STATUS_INVALID_ARGUMENT, "ws");
}

NK_TEST(zero_sizes_are_noops) {
  for (int k = 0; k < 2; k++) {
    nk_softmax_desc d = dense();
    if (k)
      d.cols = 0;
    else
      d.rows = 0;
    reset();
    NK_CHECK(nk_softmax_fwd(ctx, &d, NULL, NULL, NULL, NULL, NULL) == 0, "fwd %s",
             nk_context_message(ctx));
    NK_CHECK(nk_softmax_fwd_rows(ctx, &d, 0, d.rows, NULL, NULL, NULL, NULL, NULL) == 0,
             "fwd_rows %s", nk_context_message(ctx));
    NK_CHECK(nk_softmax_bwd(ctx, &d, NULL, NULL, NULL, NULL, NULL, NULL) == 0, "bwd %s",
             nk_context_message(ctx));
    NK_CHECK(nk_softmax_bwd_rows(ctx, &d, 0, d.rows, NULL, NULL, NULL, NULL, NULL, NULL) == 0,
             "bwd_rows");
    NK_CHECK(nk_sigmoid_attn_fwd(ctx, &d, NULL, NULL, NULL) == 0, "sigmoid fwd");
    NK_CHECK(nk_sigmoid_attn_bwd(ctx, &d, NULL, NULL, NULL) == 0, "sigmoid bwd");
    /* rows 0 (cols 0 with rows > 0: header silent, not tested) */
    nk_cross_entropy_desc e = nk_cross_entropy_desc_dense(0, k ? 0 : C, NK_DTYPE_F32);
    e.reduction = NK_REDUCTION_NONE;
    NK_CHECK(nk_cross_entropy(ctx, &e, NULL, NULL, NULL, NULL, NULL, NULL, 0) == 0, "xent %s",
             nk_context_message(ctx));
    NK_CHECK(outputs_untouched(), "zero-size call wrote");
  }
  /* an empty row range of a valid descriptor */
  nk_softmax_desc d = dense();
  reset();
  NK_CHECK(nk_softmax_fwd_rows(ctx, &d, 2, 2, x, NULL, NULL, y, lse) == 0, "empty range");
  NK_CHECK(outputs_untouched(), "empty range wrote");
}

/* Pointers not aligned to their element size: INVALID_ARGUMENT, nothing written. */
NK_TEST(misaligned_pointers) {
  nk_softmax_desc d = dense();
  EXPECT(nk_softmax_fwd(ctx, &d, (char *)x + 1, NULL, NULL, y, lse), NK_STATUS_INVALID_ARGUMENT,
         "x (");
  EXPECT(nk_softmax_fwd(ctx, &d, x, NULL, NULL, (char *)y + 2, lse), NK_STATUS_INVALID_ARGUMENT,
         "not aligned");
  EXPECT(nk_softmax_fwd(ctx, &d, x, NULL, NULL, y, (float *)(void *)((char *)lse + 1)),
         NK_STATUS_INVALID_ARGUMENT, "lse (");
  EXPECT(nk_softmax_bwd(ctx, &d, x, dy, NULL, NULL, (char *)dx + 3, NULL),
         NK_STATUS_INVALID_ARGUMENT, "dx (");
}

NK_TEST(bad_strides) {
  nk_softmax_desc d = dense();
  d.x_stride = C - 1;
  EXPECT(FWD(d), NK_STATUS_INVALID_ARGUMENT, "x_stride");
  d = dense();
  d.y_stride = -C;
  EXPECT(FWD(d), NK_STATUS_INVALID_ARGUMENT, "y_stride");
  d = dense();
  d.y_stride = 0;
  EXPECT(nk_sigmoid_attn_fwd(ctx, &d, x, NULL, y), NK_STATUS_INVALID_ARGUMENT, "y_stride");
  d = dense();
  d.mask_stride = C - 2;
  d.mask_rows = R;
  EXPECT(nk_softmax_fwd(ctx, &d, x, mask, NULL, y, lse), NK_STATUS_INVALID_ARGUMENT, "mask_stride");
  d = dense();
  d.dy_stride = 3;
  EXPECT(BWD(d), NK_STATUS_INVALID_ARGUMENT, "dy_stride");
  d = dense();
  d.dx_stride = C - 1;
  EXPECT(BWD(d), NK_STATUS_INVALID_ARGUMENT, "dx_stride");
  nk_cross_entropy_desc e = nk_cross_entropy_desc_dense(R, C, NK_DTYPE_F32);
  e.x_stride = 1;
  EXPECT(nk_cross_entropy(ctx, &e, x, target, loss, dx, lse2, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "x_stride");
  e = nk_cross_entropy_desc_dense(R, C, NK_DTYPE_F32);
  e.dx_stride = -1;
  EXPECT(nk_cross_entropy(ctx, &e, x, target, loss, dx, lse2, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "stride");
}

NK_TEST(bad_scalars_and_enums) {
  const float bad_scale[] = {0.0f, -0.0f, NAN, INFINITY, -INFINITY};
  for (int k = 0; k < 5; k++) {
    nk_softmax_desc d = dense();
    d.scale = bad_scale[k];
    EXPECT(FWD(d), NK_STATUS_INVALID_ARGUMENT, "scale");
    EXPECT(BWD(d), NK_STATUS_INVALID_ARGUMENT, "scale");
    EXPECT(nk_sigmoid_attn_fwd(ctx, &d, x, NULL, y), NK_STATUS_INVALID_ARGUMENT, "scale");
  }
  const float bad_alibi[] = {NAN, INFINITY, -INFINITY};
  for (int k = 0; k < 3; k++) {
    nk_softmax_desc d = dense();
    d.alibi = bad_alibi[k];
    EXPECT(FWD(d), NK_STATUS_INVALID_ARGUMENT, "alibi");
    EXPECT(nk_sigmoid_attn_fwd(ctx, &d, x, NULL, y), NK_STATUS_INVALID_ARGUMENT, "alibi");
  }
  nk_softmax_desc d = dense();
  d.algo = NK_SOFTMAX_ALGO_COUNT;
  EXPECT(FWD(d), NK_STATUS_INVALID_ARGUMENT, "algo");
  d.algo = (nk_softmax_algo)-1;
  EXPECT(FWD(d), NK_STATUS_INVALID_ARGUMENT, "algo");
  NK_CHECK(nk_softmax_kernel_name(ctx, &d) == NULL, "kernel name of an unknown algo");
  d = dense();
  d.dtype = (nk_dtype)3;
  EXPECT(FWD(d), NK_STATUS_INVALID_ARGUMENT, "dtype");
  EXPECT(BWD(d), NK_STATUS_INVALID_ARGUMENT, "dtype");
  NK_CHECK(nk_softmax_kernel_name(ctx, &d) == NULL, "kernel name of an unknown dtype");
  d = dense();
  d.mask_dtype = (nk_dtype)9;
  EXPECT(nk_softmax_fwd(ctx, &d, x, mask, NULL, y, lse), NK_STATUS_INVALID_ARGUMENT, "mask");
  d = dense();
  d.flags = 0x100;
  EXPECT(FWD(d), NK_STATUS_INVALID_ARGUMENT, "flags");
  EXPECT(BWD(d), NK_STATUS_INVALID_ARGUMENT, "flags");
  d = dense();
  d.dtype = NK_DTYPE_BF16;
  d.algo = NK_SOFTMAX_THREE_PASS_RELOAD;
  EXPECT(FWD(d), NK_STATUS_UNSUPPORTED, "");
  d = dense();
  EXPECT(nk_softmax_fwd_rows(ctx, &d, 3, 5, x, NULL, NULL, y, lse), NK_STATUS_INVALID_ARGUMENT, "");
  EXPECT(nk_softmax_fwd_rows(ctx, &d, 2, 1, x, NULL, NULL, y, lse), NK_STATUS_INVALID_ARGUMENT, "");
  EXPECT(nk_softmax_bwd_rows(ctx, &d, 0, R + 1, x, dy, NULL, NULL, dx, NULL),
         NK_STATUS_INVALID_ARGUMENT, "");

  /* cross-entropy */
  const float bad_ls[] = {-0.1f, 1.5f, NAN, INFINITY};
  for (int k = 0; k < 4; k++) {
    nk_cross_entropy_desc e = nk_cross_entropy_desc_dense(R, C, NK_DTYPE_F32);
    e.label_smoothing = bad_ls[k];
    EXPECT(nk_cross_entropy(ctx, &e, x, target, loss, dx, lse2, ws, sizeof ws),
           NK_STATUS_INVALID_ARGUMENT, "label_smoothing");
  }
  const float bad_zl[] = {-1e-4f, NAN, INFINITY};
  for (int k = 0; k < 3; k++) {
    nk_cross_entropy_desc e = nk_cross_entropy_desc_dense(R, C, NK_DTYPE_F32);
    e.z_loss = bad_zl[k];
    EXPECT(nk_cross_entropy(ctx, &e, x, target, loss, dx, lse2, ws, sizeof ws),
           NK_STATUS_INVALID_ARGUMENT, "z_loss");
  }
  nk_cross_entropy_desc e = nk_cross_entropy_desc_dense(R, C, NK_DTYPE_F32);
  e.reduction = (nk_reduction)3;
  EXPECT(nk_cross_entropy(ctx, &e, x, target, loss, dx, lse2, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "reduction");
  size_t bytes;
  NK_CHECK(nk_cross_entropy_workspace_size(&e, &bytes) == NK_STATUS_INVALID_ARGUMENT,
           "workspace size of an unknown reduction");
  e = nk_cross_entropy_desc_dense(R, C, NK_DTYPE_F32);
  e.dtype = (nk_dtype)5;
  EXPECT(nk_cross_entropy(ctx, &e, x, target, loss, dx, lse2, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "dtype");
  /* (header silent) a non-finite upstream gradient: expected INVALID_ARGUMENT */
  e = nk_cross_entropy_desc_dense(R, C, NK_DTYPE_F32);
  e.grad = NAN;
  EXPECT(nk_cross_entropy(ctx, &e, x, target, loss, dx, lse2, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "grad");
}

NK_TEST(size_overflow) {
  nk_softmax_desc d = dense();
  d.rows = SIZE_MAX / 8;
  d.x_stride = d.y_stride = PTRDIFF_MAX / 4;
  EXPECT(FWD(d), NK_STATUS_INVALID_ARGUMENT, "overflow");
  d = dense();
  d.rows = SIZE_MAX / 2;
  EXPECT(FWD(d), NK_STATUS_INVALID_ARGUMENT, "");
  d = dense();
  d.rows = SIZE_MAX / 2;
  EXPECT(BWD(d), NK_STATUS_INVALID_ARGUMENT, "");
  d = dense();
  d.rows = 1;
  d.cols = SIZE_MAX / 2;
  d.x_stride = d.y_stride = PTRDIFF_MAX;
  EXPECT(FWD(d), NK_STATUS_INVALID_ARGUMENT, "");
  nk_cross_entropy_desc e = nk_cross_entropy_desc_dense(SIZE_MAX / 4, C, NK_DTYPE_F32);
  EXPECT(nk_cross_entropy(ctx, &e, x, target, loss, dx, lse2, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "");
  size_t bytes;
  e = nk_cross_entropy_desc_dense(SIZE_MAX / 2, C, NK_DTYPE_F32);
  NK_CHECK(nk_cross_entropy_workspace_size(&e, &bytes) == NK_STATUS_INVALID_ARGUMENT,
           "workspace size overflow");
}

NK_TEST(partial_overlap_rejected) {
  nk_softmax_desc d = dense();
  d.rows = R - 1;
  EXPECT(nk_softmax_fwd(ctx, &d, y, NULL, NULL, y + 1, lse), NK_STATUS_INVALID_ARGUMENT, "overlap");
  d = dense();
  EXPECT(nk_softmax_fwd(ctx, &d, x, NULL, NULL, y, y + 5), NK_STATUS_INVALID_ARGUMENT, "overlap");
  /* same pointer, different stride is not exact aliasing */
  d.rows = 2;
  d.y_stride = 2 * C;
  EXPECT(nk_softmax_fwd(ctx, &d, y, NULL, NULL, y, lse), NK_STATUS_INVALID_ARGUMENT, "overlap");
  d = dense();
  d.rows = R - 1;
  EXPECT(nk_softmax_bwd(ctx, &d, x, dx, NULL, NULL, dx + 3, NULL), NK_STATUS_INVALID_ARGUMENT,
         "overlap");
  EXPECT(nk_softmax_bwd(ctx, &d, dx, dy, NULL, NULL, dx + C, NULL), NK_STATUS_INVALID_ARGUMENT,
         "overlap");
  d = dense();
  EXPECT(nk_softmax_bwd(ctx, &d, x, dy, sink, lse2, dx, dx + 2), NK_STATUS_INVALID_ARGUMENT,
         "overlap");
  EXPECT(nk_sigmoid_attn_fwd(ctx, &d, y + 1, NULL, y), NK_STATUS_INVALID_ARGUMENT, "overlap");
  EXPECT(nk_sigmoid_attn_bwd(ctx, &d, x, dx + 1, dx), NK_STATUS_INVALID_ARGUMENT, "overlap");
  nk_cross_entropy_desc e = nk_cross_entropy_desc_dense(R - 1, C, NK_DTYPE_F32);
  EXPECT(nk_cross_entropy(ctx, &e, dx, target, loss, dx + 1, lse2, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "overlap");
  e.reduction = NK_REDUCTION_NONE;
  EXPECT(nk_cross_entropy(ctx, &e, x, target, loss, dx, loss + 1, ws, sizeof ws),
         NK_STATUS_INVALID_ARGUMENT, "overlap");
}

NK_TEST(allowed_cases) {
  /* exact in-place, broadcast masks, a mask_rows that does not divide rows (header: row i uses
   * mask row i % mask_rows), a per-head sink with heads 0 (header: 0 = 1 head) */
  nk_softmax_desc d = dense();
  reset();
  NK_CHECK(nk_softmax_fwd(ctx, &d, x, NULL, NULL, x, lse) == 0, "y == x: %s",
           nk_context_message(ctx));
  NK_CHECK(nk_context_message(ctx)[0] == '\0', "message cleared on success");
  NK_CHECK(nk_softmax_bwd(ctx, &d, x, dy, NULL, NULL, dy, NULL) == 0, "dx == dy");
  NK_CHECK(nk_softmax_bwd(ctx, &d, x, dy, NULL, NULL, x, NULL) == 0, "dx == y");
  reset();
  d.mask_rows = 1;
  d.mask_stride = 0; /* ignored when mask_rows == 1 */
  NK_CHECK(nk_softmax_fwd(ctx, &d, x, mask, NULL, y, lse) == 0, "broadcast mask: %s",
           nk_context_message(ctx));
  d = dense();
  d.mask_rows = 3; /* (header silent whether it must divide rows) */
  NK_CHECK(nk_softmax_fwd(ctx, &d, x, mask, NULL, y, lse) == 0, "mask_rows 3 of 4 rows: %s",
           nk_context_message(ctx));
  d = dense();
  d.flags = NK_SOFTMAX_SINK_PER_HEAD; /* heads 0 = 1 */
  NK_CHECK(nk_softmax_fwd(ctx, &d, x, NULL, sink, y, lse) == 0, "per-head sink, heads 0: %s",
           nk_context_message(ctx));
  d.heads = 2;
  d.q_len = 2;
  d.causal_offset = -100; /* every row fully masked: fine */
  d.flags |= NK_SOFTMAX_CAUSAL;
  NK_CHECK(nk_softmax_fwd(ctx, &d, x, NULL, sink, y, lse) == 0, "negative offset: %s",
           nk_context_message(ctx));
  NK_CHECK(nk_softmax_kernel_name(ctx, &d) != NULL, "kernel name");
  NK_CHECK(strcmp(nk_softmax_algo_name(NK_SOFTMAX_TWO_PASS), "two_pass") == 0 &&
               strcmp(nk_softmax_algo_name(NK_SOFTMAX_ALGO_COUNT), "?") == 0,
           "algo names");
}

NK_TEST(null_context_reports_status_only) {
  nk_softmax_desc d = dense();
  d.scale = 0.0f;
  reset();
  NK_CHECK(nk_softmax_fwd(NULL, &d, x, NULL, NULL, y, lse) == NK_STATUS_INVALID_ARGUMENT, "status");
  NK_CHECK(outputs_untouched(), "wrote");
}

int main(void) {
  if (nk_context_create(&ctx) != NK_STATUS_OK) return 1;
  NK_RUN(null_pointers);
  NK_RUN(misaligned_pointers);
  NK_RUN(zero_sizes_are_noops);
  NK_RUN(bad_strides);
  NK_RUN(bad_scalars_and_enums);
  NK_RUN(size_overflow);
  NK_RUN(partial_overlap_rejected);
  NK_RUN(allowed_cases);
  NK_RUN(null_context_reports_status_only);
  nk_context_destroy(ctx);
  return nk_test_summary();
}
