/*
 * validate.c — argument checks shared by the operators (validate.h).
 */
#include "validate.h"

#include <string.h>

/* Byte length of a rows x cols tensor with row stride `stride`; 0 on overflow. */
static size_t tensor_bytes(size_t rows, size_t cols, ptrdiff_t stride, size_t esize) {
  size_t elems, bytes;
  if (!nk__mul_size(rows - 1, (size_t)stride, &elems) || !nk__add_size(elems, cols, &elems) ||
      !nk__mul_size(elems, esize, &bytes) || bytes > (size_t)PTRDIFF_MAX)
    return 0;
  return bytes;
}

static int ranges_intersect(const span *a, const span *b) {
  const uintptr_t a0 = (uintptr_t)a->ptr, b0 = (uintptr_t)b->ptr;
  return a0 < b0 + b->bytes && b0 < a0 + a->bytes;
}

nk_status nk__check_overlaps(nk_context *ctx, const char *op, const span *s, size_t n,
                             alias_rule exact_ok) {
  for (size_t i = 0; i < n; i++) {
    if (!s[i].output || s[i].ptr == NULL) continue;
    for (size_t j = 0; j < n; j++) {
      if (j == i || s[j].ptr == NULL || !ranges_intersect(&s[i], &s[j])) continue;
      if (s[j].output && j < i) continue; /* reported from the other side */
      const int exact = s[i].ptr == s[j].ptr && s[i].stride == s[j].stride && s[i].stride != 0 &&
                        s[i].stride2 == s[j].stride2 && s[i].esize == s[j].esize;
      if (exact && exact_ok(&s[i], &s[j])) continue;
      return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                      "%s: %s overlaps %s (only exact in-place aliasing is allowed, and only "
                      "where documented)",
                      op, s[i].name, s[j].name);
    }
  }
  return NK_STATUS_OK;
}

nk_status nk__check_stride(nk_context *ctx, const char *op, const char *name, ptrdiff_t stride,
                           size_t cols) {
  if (stride < 0 || (size_t)stride < cols)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s_stride %td < cols %zu", op, name,
                    stride, cols);
  return NK_STATUS_OK;
}

/* A pointer must be aligned to its element's natural alignment: the element size's lowest set
 * bit, at most 8 (2 for bf16/f16, 4 for f32, 8 for doubles and for structs of doubles). */
static nk_status check_aligned(nk_context *ctx, const char *op, const char *name,
                               const void *ptr, size_t esize) {
  size_t align = esize & (~esize + 1);
  if (align > 8) align = 8;
  if (align > 1 && (uintptr_t)ptr % align != 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: %s (%p) is not aligned to its element size (%zu bytes)", op, name, ptr,
                    align);
  return NK_STATUS_OK;
}

/* Fills span s for a rows x cols tensor, failing on stride or size overflow. */
nk_status nk__tensor_span(nk_context *ctx, const char *op, span *s, const char *name,
                          const void *ptr, ptrdiff_t stride, size_t rows, size_t cols, nk_dtype dt,
                          int output) {
  *s = (span){name, ptr, stride, nk_dtype_size(dt), 0, output, 0};
  if (ptr == NULL) return NK_STATUS_OK;
  nk_status st = check_aligned(ctx, op, name, ptr, s->esize);
  if (st == NK_STATUS_OK) st = nk__check_stride(ctx, op, name, stride, cols);
  if (st != NK_STATUS_OK) return st;
  s->bytes = tensor_bytes(rows, cols, stride, s->esize);
  if (s->bytes == 0)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: %s of %zu rows, stride %td overflows the address space", op, name, rows,
                    stride);
  return NK_STATUS_OK;
}

nk_status nk__tensor3_span(nk_context *ctx, const char *op, span *s, const char *name,
                           const void *ptr, ptrdiff_t n_stride, ptrdiff_t row_stride, size_t n,
                           size_t rows, size_t cols, nk_dtype dt, int output) {
  nk_status st = nk__tensor_span(ctx, op, s, name, ptr, row_stride, rows, cols, dt, output);
  if (st != NK_STATUS_OK || ptr == NULL) return st;
  const size_t inner = s->bytes / s->esize; /* (rows - 1) * row_stride + cols */
  if (n_stride < 0 || (size_t)n_stride < inner)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: %s_n_stride %td < %zu (one sample's extent)", op, name, n_stride, inner);
  s->stride2 = n_stride;
  size_t elems, bytes;
  if (!nk__mul_size(n - 1, (size_t)n_stride, &elems) || !nk__add_size(elems, inner, &elems) ||
      !nk__mul_size(elems, s->esize, &bytes) || bytes > (size_t)PTRDIFF_MAX)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT,
                    "%s: %s of %zu samples, n_stride %td overflows the address space", op, name,
                    n, n_stride);
  s->bytes = bytes;
  return NK_STATUS_OK;
}

nk_status nk__vector_span(nk_context *ctx, const char *op, span *s, const char *name,
                          const void *ptr, size_t n, size_t esize, int output) {
  *s = (span){name, ptr, 0, esize, 0, output, 0};
  if (ptr == NULL) return NK_STATUS_OK;
  TRY(check_aligned(ctx, op, name, ptr, esize));
  if (!nk__mul_size(n, esize, &s->bytes) || s->bytes > (size_t)PTRDIFF_MAX)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s of %zu elements is too large", op,
                    name, n);
  return NK_STATUS_OK;
}

int nk__span_is(const span *s, const char *name) { return strcmp(s->name, name) == 0; }

int nk__no_alias(const span *out, const span *other) {
  (void)out;
  (void)other;
  return 0;
}

nk_status nk__check_product(nk_context *ctx, const char *op, const char *what, size_t a, size_t b,
                            size_t *out) {
  if (!nk__mul_size(a, b, out))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: %s = %zu * %zu overflows", op, what, a,
                    b);
  return NK_STATUS_OK;
}

nk_status nk__check_dtypes(nk_context *ctx, const char *op, nk_dtype dtype, nk_dtype param_dtype) {
  if (!dtype_known(dtype))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown dtype %d", op, (int)dtype);
  if (!dtype_known(param_dtype))
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: unknown param_dtype %d", op,
                    (int)param_dtype);
  if (param_dtype != NK_DTYPE_F32 && param_dtype != dtype)
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED,
                    "%s: param_dtype %s with dtype %s (param_dtype must be f32 or the dtype)", op,
                    nk_dtype_name(param_dtype), nk_dtype_name(dtype));
  return NK_STATUS_OK;
}

nk_status nk__check_row_range(nk_context *ctx, const char *op, size_t row_begin, size_t row_end,
                              size_t rows) {
  if (row_begin > row_end || row_end > rows)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "%s: row range [%zu, %zu) outside %zu rows",
                    op, row_begin, row_end, rows);
  return NK_STATUS_OK;
}

nk_status nk__check_workspace(nk_context *ctx, const char *op, const void *ws, size_t size,
                              size_t need) {
  if (need > size || (need > 0 && ws == NULL))
    return nk__fail(ctx, NK_STATUS_MISUSE, "%s: workspace of %zu bytes, %zu needed", op,
                    ws == NULL ? (size_t)0 : size, need);
  return NK_STATUS_OK;
}
