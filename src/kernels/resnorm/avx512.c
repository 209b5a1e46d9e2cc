/* avx512.c — the research-norm kernels compiled for the avx512 path (resnorm-impl.h). */
#define NK_RN_SUFFIX avx512
#define NK_RN_NAME "avx512"
#include "resnorm-impl.h"
