/* scalar.c — the channel-norm kernels compiled for the scalar path (chnorm-impl.h). */
#define NK_CH_SUFFIX scalar
#define NK_CH_NAME "scalar"
#include "chnorm-impl.h"

#define NK_CH_ONE8 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f
#define NK_CH_ONE64 NK_CH_ONE8, NK_CH_ONE8, NK_CH_ONE8, NK_CH_ONE8, NK_CH_ONE8, NK_CH_ONE8, \
  NK_CH_ONE8, NK_CH_ONE8
const float nk__ch_ones[NK_CH_TILE_COLS] = {NK_CH_ONE64, NK_CH_ONE64, NK_CH_ONE64, NK_CH_ONE64,
                                            NK_CH_ONE64, NK_CH_ONE64, NK_CH_ONE64, NK_CH_ONE64};
_Static_assert(NK_CH_TILE_COLS == 512, "nk__ch_ones holds 512 ones");
