/*
 * internal.h — what the runtime shares with the operators (not installed).
 */
#ifndef NK_RUNTIME_INTERNAL_H
#define NK_RUNTIME_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>

#include "normkit.h"

#define NK_MESSAGE_SIZE 256

struct nk_context {
  nk_threadpool *pool; /* borrowed, may be NULL */
  nk_isa isa;          /* NK_ISA_AUTO or a supported path */
  char message[NK_MESSAGE_SIZE];
};

/* Records a printf-style message on ctx (if not NULL) and returns status. For validation
 * failures in src/ops/: `return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "...", ...);` */
nk_status nk__fail(nk_context *ctx, nk_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Clears ctx's message (if ctx not NULL) and returns NK_STATUS_OK. */
nk_status nk__ok(nk_context *ctx);

/* The ISA operators use with ctx (resolves AUTO). */
nk_isa nk__context_isa(const nk_context *ctx);
/* The pool of ctx, NULL if none or ctx NULL. */
nk_threadpool *nk__context_pool(const nk_context *ctx);

/* CPU detection (cpu.c). */
int nk__cpu_has_avx2_path(void);   /* AVX2 + FMA + F16C usable (XGETBV: YMM state) */
int nk__cpu_has_avx512_path(void); /* AVX-512 F/BW/VL/DQ usable (XGETBV: ZMM+opmask state) */

/* Outputs at least this large are written with streaming stores by the operators that have
 * them (row norms, softmax, the row variants, the fused norm + quantize float output): a
 * function of the sizes only, so it changes no result bit. */
#define NK_NONTEMPORAL_BYTES ((size_t)64 << 20)

/* Overflow-checked size arithmetic: return 0 on overflow, 1 on success. */
static inline int nk__mul_size(size_t a, size_t b, size_t *out) {
  return !__builtin_mul_overflow(a, b, out);
}
static inline int nk__add_size(size_t a, size_t b, size_t *out) {
  return !__builtin_add_overflow(a, b, out);
}

#endif /* NK_RUNTIME_INTERNAL_H */
