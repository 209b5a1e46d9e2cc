/* avx2.c — the channel-norm kernels compiled for the avx2 path (chnorm-impl.h). */
#define NK_CH_SUFFIX avx2
#define NK_CH_NAME "avx2"
#include "chnorm-impl.h"
