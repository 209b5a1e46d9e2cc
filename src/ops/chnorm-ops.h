/* chnorm-ops.h — what the channel-norm operators share with the moments operators (not
 * installed): the kernel contract and the selector. */
#ifndef NK_OPS_CHNORM_OPS_H
#define NK_OPS_CHNORM_OPS_H

#include <math.h>

#include "dispatch.h"

/* Normalize statistics from moments, as the normalize kernels take them (chnorm.h):
 * mean_hi = (float)mean, rstd = (float)(1 / sqrt(M2 / count + eps)) and the low part times
 * rstd, mlr = (float)((mean - mean_hi) * rstd) formed in double (never rounded on the f32
 * subnormal grid). The channel norms and nk_layernorm_fwd_moments both use it. */
static inline void nk__ch_stats(const nk_moments *m, float eps, float *mh, float *mlr, float *r) {
  *mh = (float)m->mean;
  *r = (float)(1.0 / sqrt(m->m2 / m->count + (double)eps));
  *mlr = (float)((m->mean - (double)*mh) * (double)*r);
}

#endif /* NK_OPS_CHNORM_OPS_H */
