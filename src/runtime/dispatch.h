/* dispatch.h — kernel selectors used by the operators (not installed). */
#ifndef NK_RUNTIME_DISPATCH_H
#define NK_RUNTIME_DISPATCH_H

#include "internal.h"
#include "kernels/rownorm/rownorm.h"

/* The kernel for (isa, op, dtype), stepping down avx512 -> avx2 -> scalar; NULL if none. */
nk_rownorm_fwd_ukernel_fn nk__select_rownorm_fwd(nk_isa isa, nk_op op, nk_dtype dtype);
nk_rownorm_bwd_ukernel_fn nk__select_rownorm_bwd(nk_isa isa, nk_op op, nk_dtype dtype);

#endif /* NK_RUNTIME_DISPATCH_H */
