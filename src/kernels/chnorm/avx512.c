/* avx512.c — the channel-norm kernels compiled for the avx512 path (chnorm-impl.h). */
#define NK_CH_SUFFIX avx512
#define NK_CH_NAME "avx512"
#include "chnorm-impl.h"
