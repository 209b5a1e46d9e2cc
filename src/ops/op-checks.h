/*
 * op-checks.h — argument checks that the CPU operators and the CUDA backend (src/cuda/api.c)
 * share, so that both accept and refuse exactly the same descriptors and aliasing. Defined in
 * the operator files (rownorm.c, softmax.c); ctx may be NULL (no message).
 */
#ifndef NK_OPS_OP_CHECKS_H
#define NK_OPS_OP_CHECKS_H

#include "normkit.h"
#include "validate.h"

/* Row norms: the descriptor fields shared by every call (dtypes, eps, flags, lns_scale). */
nk_status nk__check_norm_desc(nk_context *ctx, const char *op, const nk_norm_desc *d);
/* Forward: y may be x, r or h; h may be x, r or y. Backward: dx may be dy, x or dh. */
int nk__norm_fwd_alias_ok(const span *out, const span *other);
int nk__norm_bwd_alias_ok(const span *out, const span *other);

/* Softmax family: the descriptor; the mask (broadcast rows) and sink buffers. */
nk_status nk__check_softmax_desc(nk_context *ctx, const char *op, const nk_softmax_desc *d);
nk_status nk__check_mask_sink(nk_context *ctx, const char *op, const nk_softmax_desc *d,
                              const void *mask, const float *sink, span *s_mask, span *s_sink);
/* Forward: y may be x. Backward: dx may be dy or y. */
int nk__softmax_fwd_alias_ok(const span *out, const span *other);
int nk__softmax_bwd_alias_ok(const span *out, const span *other);

/* Cross-entropy: the descriptor; dlogits may be x. */
nk_status nk__check_xent_desc(nk_context *ctx, const char *op, const nk_cross_entropy_desc *d);
int nk__xent_alias_ok(const span *out, const span *other);

#endif /* NK_OPS_OP_CHECKS_H */
