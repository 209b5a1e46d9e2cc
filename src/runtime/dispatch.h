/* dispatch.h — kernel selectors used by the operators (not installed). */
#ifndef NK_RUNTIME_DISPATCH_H
#define NK_RUNTIME_DISPATCH_H

#include "internal.h"
#include "kernels/rownorm/rownorm.h"
#include "kernels/softmax/softmax.h"
#include "kernels/arch.h"
#include "kernels/chnorm/chnorm.h"
#include "kernels/resnorm/resnorm.h"
#include "kernels/optim/optim.h"
#include "kernels/rowvar/rowvar.h"

/* The kernel for (isa, op, dtype), stepping down avx512 -> avx2 -> scalar; NULL if none. */
nk_rownorm_fwd_ukernel_fn nk__select_rownorm_fwd(nk_isa isa, nk_op op, nk_dtype dtype);
nk_rownorm_bwd_ukernel_fn nk__select_rownorm_bwd(nk_isa isa, nk_op op, nk_dtype dtype);

/* The softmax-family kernel of (kind, algo, dtype) for isa, stepping down; NULL if none. algo is
 * NK_SOFTMAX_AUTO for every kind but NK_SMK_FWD, where it must be a concrete algorithm. */
const nk_softmax_entry *nk__select_softmax(nk_isa isa, nk_softmax_kind kind,
                                           nk_softmax_algo algo, nk_dtype dtype);
/* The algorithm NK_SOFTMAX_AUTO runs for rows x cols of `dtype`, softmax or (log != 0)
 * log_softmax (src/ops/softmax.c): a function of the sizes only. */
nk_softmax_algo nk__softmax_auto_algo(size_t rows, size_t cols, nk_dtype dtype, int log);

/* The channel-norm kernels of ctx's ISA (every path has all of them). */
const nk_chnorm_kernels *nk__chnorm_kernels(const nk_context *ctx);

/* The research-norm kernels (PowerNorm, UN, EvoNorm) of ctx's ISA (every path has all). */
const nk_resnorm_kernels *nk__resnorm_kernels(const nk_context *ctx);
/* The optimizer/advantage kernels of ctx's ISA (every path has all of them). */
const nk_optim_kernels *nk__optim_kernels(const nk_context *ctx);

#endif /* NK_RUNTIME_DISPATCH_H */
