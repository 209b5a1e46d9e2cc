/* scalar.c — the channel-norm kernels compiled for the scalar path (chnorm-impl.h). */
#define NK_CH_SUFFIX scalar
#define NK_CH_NAME "scalar"
#include "chnorm-impl.h"
