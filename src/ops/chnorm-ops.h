/* chnorm-ops.h — what the channel-norm operators share with the moments operators (not
 * installed). */
#ifndef NK_OPS_CHNORM_OPS_H
#define NK_OPS_CHNORM_OPS_H

#include "internal.h"
#include "kernels/arch.h"
#include "kernels/chnorm/chnorm.h"

/* The channel-norm kernels of ctx's ISA. */
const nk_chnorm_kernels *nk__chnorm_kernels(const nk_context *ctx);

#endif /* NK_OPS_CHNORM_OPS_H */
