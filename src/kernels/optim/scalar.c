/* scalar.c — the optimizer/advantage kernels compiled for the scalar path (optim-impl.h). */
#define NK_OPT_SUFFIX scalar
#define NK_OPT_NAME "scalar"
#include "optim-impl.h"
