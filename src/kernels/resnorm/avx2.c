/* avx2.c — the research-norm kernels compiled for the avx2 path (resnorm-impl.h). */
#define NK_RN_SUFFIX avx2
#define NK_RN_NAME "avx2"
#include "resnorm-impl.h"
