/* scalar.c — the research-norm kernels compiled for the scalar path (resnorm-impl.h). */
#define NK_RN_SUFFIX scalar
#define NK_RN_NAME "scalar"
#include "resnorm-impl.h"
