/* avx512.c — the optimizer/advantage kernels compiled for the avx512 path (optim-impl.h). */
#define NK_OPT_SUFFIX avx512
#define NK_OPT_NAME "avx512"
#include "optim-impl.h"
