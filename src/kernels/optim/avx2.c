/* avx2.c — the optimizer/advantage kernels compiled for the avx2 path (optim-impl.h). */
#define NK_OPT_SUFFIX avx2
#define NK_OPT_NAME "avx2"
#include "optim-impl.h"
