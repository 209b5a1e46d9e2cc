/* chnorm-ops.h — what the channel-norm operators share with the moments operators (not
 * installed): the kernel contract and the selector. */
#ifndef NK_OPS_CHNORM_OPS_H
#define NK_OPS_CHNORM_OPS_H

#include "dispatch.h"

#endif /* NK_OPS_CHNORM_OPS_H */
