/* status.c — status strings, context objects, failure messages. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

const char *nk_version(void) { return "0.1.0"; }

const char *nk_status_string(nk_status status) {
  switch (status) {
    case NK_STATUS_OK: return "ok";
    case NK_STATUS_INVALID_ARGUMENT: return "invalid argument";
    case NK_STATUS_UNSUPPORTED: return "unsupported";
    case NK_STATUS_UNSUPPORTED_HARDWARE: return "unsupported hardware";
    case NK_STATUS_OUT_OF_MEMORY: return "out of memory";
    case NK_STATUS_MISUSE: return "misuse";
    case NK_STATUS_DEVICE_ERROR: return "device error";
  }
  return "unknown status";
}

const char *nk_dtype_name(nk_dtype dtype) {
  switch (dtype) {
    case NK_DTYPE_F32: return "f32";
    case NK_DTYPE_BF16: return "bf16";
    case NK_DTYPE_F16: return "f16";
  }
  return "?";
}

size_t nk_dtype_size(nk_dtype dtype) {
  switch (dtype) {
    case NK_DTYPE_F32: return 4;
    case NK_DTYPE_BF16: return 2;
    case NK_DTYPE_F16: return 2;
  }
  return 0;
}

nk_status nk_context_create(nk_context **ctx) {
  if (ctx == NULL) return NK_STATUS_INVALID_ARGUMENT;
  nk_context *c = calloc(1, sizeof *c);
  if (c == NULL) return NK_STATUS_OUT_OF_MEMORY;
  c->isa = NK_ISA_AUTO;
  *ctx = c;
  return NK_STATUS_OK;
}

void nk_context_destroy(nk_context *ctx) { free(ctx); }

nk_status nk_context_set_threadpool(nk_context *ctx, nk_threadpool *pool) {
  if (ctx == NULL) return NK_STATUS_INVALID_ARGUMENT;
  ctx->pool = pool;
  return nk__ok(ctx);
}

nk_status nk_context_set_isa(nk_context *ctx, nk_isa isa) {
  if (ctx == NULL) return NK_STATUS_INVALID_ARGUMENT;
  if (isa != NK_ISA_AUTO && isa != NK_ISA_SCALAR && isa != NK_ISA_AVX2 && isa != NK_ISA_AVX512)
    return nk__fail(ctx, NK_STATUS_INVALID_ARGUMENT, "context_set_isa: unknown isa %d", (int)isa);
  if (!nk_isa_supported(isa))
    return nk__fail(ctx, NK_STATUS_UNSUPPORTED_HARDWARE,
                    "context_set_isa: this CPU cannot run the %s path", nk_isa_name(isa));
  ctx->isa = isa;
  return nk__ok(ctx);
}

nk_isa nk__context_isa(const nk_context *ctx) {
  if (ctx == NULL || ctx->isa == NK_ISA_AUTO) return nk_isa_default();
  return ctx->isa;
}

nk_isa nk_context_isa(const nk_context *ctx) { return nk__context_isa(ctx); }

nk_threadpool *nk__context_pool(const nk_context *ctx) { return ctx ? ctx->pool : NULL; }

const char *nk_context_message(const nk_context *ctx) { return ctx ? ctx->message : ""; }

nk_status nk__fail(nk_context *ctx, nk_status status, const char *fmt, ...) {
  if (ctx != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
    va_end(ap);
  }
  return status;
}

nk_status nk__ok(nk_context *ctx) {
  if (ctx != NULL) ctx->message[0] = '\0';
  return NK_STATUS_OK;
}
