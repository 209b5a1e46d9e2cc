/*
 * validate.h — argument checks shared by the operators (not installed): buffer spans with
 * overflow-checked sizes, the overlap rule (exact in-place aliasing only where an operator
 * allows it), strides, and row offsets.
 */
#ifndef NK_OPS_VALIDATE_H
#define NK_OPS_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* A buffer as the operator sees it, for size and overlap checks. */
typedef struct span {
  const char *name;
  const void *ptr;
  ptrdiff_t stride; /* elements; 0 for 1-D buffers */
  size_t esize;
  size_t bytes; /* address range length */
  int output;
  ptrdiff_t stride2; /* outer stride of a 3-D tensor (channel norms); 0 otherwise */
} span;

/* Whether output `out` may be the very same tensor as `other` (same pointer, stride, esize). */
typedef int (*alias_rule)(const span *out, const span *other);

static inline size_t ceil_div(size_t a, size_t b) { return a / b + (a % b != 0); }

static inline int dtype_known(nk_dtype d) {
  return d == NK_DTYPE_F32 || d == NK_DTYPE_BF16 || d == NK_DTYPE_F16;
}

static inline const void *offset_rows(const void *p, size_t rows, ptrdiff_t stride,
                                      nk_dtype dt) {
  if (p == NULL) return NULL;
  return (const char *)p + (ptrdiff_t)rows * stride * (ptrdiff_t)nk_dtype_size(dt);
}

/* Every output must not intersect another buffer, unless both are 2-D tensors with the same
 * pointer, stride and element size (exact in-place) and `exact_ok(out, other)` allows it. */
nk_status nk__check_overlaps(nk_context *ctx, const char *op, const span *s, size_t n,
                             alias_rule exact_ok);
nk_status nk__check_stride(nk_context *ctx, const char *op, const char *name, ptrdiff_t stride,
                           size_t cols);
/* Fills s for a rows x cols tensor (rows >= 1), failing on a bad stride or size overflow. A NULL
 * ptr gives an empty span. */
nk_status nk__tensor_span(nk_context *ctx, const char *op, span *s, const char *name,
                          const void *ptr, ptrdiff_t stride, size_t rows, size_t cols,
                          nk_dtype dt, int output);
/* Fills s for a tensor of n blocks (n_stride apart) of rows x cols (row_stride apart), n >= 1
 * and rows >= 1: row_stride >= cols and n_stride >= (rows - 1) * row_stride + cols. */
nk_status nk__tensor3_span(nk_context *ctx, const char *op, span *s, const char *name,
                           const void *ptr, ptrdiff_t n_stride, ptrdiff_t row_stride, size_t n,
                           size_t rows, size_t cols, nk_dtype dt, int output);
nk_status nk__vector_span(nk_context *ctx, const char *op, span *s, const char *name,
                          const void *ptr, size_t n, size_t esize, int output);
int nk__span_is(const span *s, const char *name);
/* Activation dtype and parameter dtype: both known, and the parameters f32 or the activation
 * dtype (UNSUPPORTED otherwise). */
nk_status nk__check_dtypes(nk_context *ctx, const char *op, nk_dtype dtype, nk_dtype param_dtype);
/* The rows [row_begin, row_end) of a _rows entry point lie inside [0, rows). */
nk_status nk__check_row_range(nk_context *ctx, const char *op, size_t row_begin, size_t row_end,
                              size_t rows);

/* The alias rule of operators that allow no exact in-place aliasing. */
int nk__no_alias(const span *out, const span *other);
/* *out = a * b, or INVALID_ARGUMENT ("<what> = a * b overflows"). */
nk_status nk__check_product(nk_context *ctx, const char *op, const char *what, size_t a, size_t b,
                            size_t *out);

/* Workspaces (the rule is stated once, at NK_WORKSPACE_ALIGN in normkit.h): any address works.
 * An operator uses `payload` bytes starting at the workspace aligned up to NK_WORKSPACE_ALIGN,
 * so it needs payload + NK_WORKSPACE_ALIGN bytes (0 when the payload is 0). nk__ws_bytes gives
 * that size (0 on size_t overflow, with *bytes unchanged); nk__ws_align the aligned start. */
static inline int nk__ws_bytes(size_t payload, size_t *bytes) {
  if (payload == 0) {
    *bytes = 0;
    return 1;
  }
  if (payload > SIZE_MAX - NK_WORKSPACE_ALIGN) return 0;
  *bytes = payload + NK_WORKSPACE_ALIGN;
  return 1;
}
static inline void *nk__ws_align(void *ws) {
  if (ws == NULL) return NULL;
  const uintptr_t a = (uintptr_t)NK_WORKSPACE_ALIGN - 1;
  return (char *)ws + ((a + 1 - ((uintptr_t)ws & a)) & a);
}
/* MISUSE ("<op>: workspace of <size> bytes, <need> needed") when need > size or when need > 0
 * and ws is NULL. */
nk_status nk__check_workspace(nk_context *ctx, const char *op, const void *ws, size_t size,
                              size_t need);

/* Returns INVALID_ARGUMENT ("<op>: <p> is NULL") from the calling operator (which has `ctx` and
 * `op` in scope) when p is NULL. */
#define NK_REQUIRE_PTR(p)                                                                        \
  do {                                                                                           \
    if ((p) == NULL)                                                                             \
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", op, #p);                \
  } while (0)

#define TRY(expr)                                                                                \
  do {                                                                                           \
    nk_status nk_try_status_ = (expr);                                                           \
    if (nk_try_status_ != NK_STATUS_OK) return nk_try_status_;                                   \
  } while (0)

#endif /* NK_OPS_VALIDATE_H */
