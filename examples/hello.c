/* hello.c — the smallest normkit program: LayerNorm and RMSNorm of a 2 x 8 matrix.
 * Built against the installed package by tests/install/run.sh (pkg-config and CMake). */
#include <math.h>
#include <stdio.h>

#include <normkit.h>

int main(void) {
  float x[16], y[16], gamma[8], beta[8], mean[2], rstd[2];
  for (int i = 0; i < 16; i++) x[i] = (float)(i % 8) + (i < 8 ? 0.0f : 100.0f);
  for (int j = 0; j < 8; j++) gamma[j] = 1.0f, beta[j] = 0.5f;
  nk_layernorm_desc d = nk_norm_desc_dense(2, 8, NK_DTYPE_F32, 1e-5f);
  nk_status st = nk_layernorm_fwd(NULL, &d, x, NULL, gamma, beta, y, NULL, mean, rstd);
  if (st != NK_STATUS_OK) {
    fprintf(stderr, "layernorm_fwd: %s\n", nk_status_string(st));
    return 1;
  }
  printf("normkit %s, layernorm kernel %s\n", nk_version(),
         nk_kernel_name(NK_OP_LAYERNORM_FWD, NK_DTYPE_F32));
  printf("row means %.1f %.1f, y[0] = %.6f\n", mean[0], mean[1], y[0]);
  /* (0 - 3.5) / sqrt(5.25 + 1e-5) + 0.5 */
  const double want = -3.5 / sqrt(5.25 + 1e-5) + 0.5;
  if (fabs(y[0] - want) > 1e-5 || fabs(y[8] - want) > 1e-5) {
    fprintf(stderr, "unexpected result %.7f (want %.7f)\n", y[0], want);
    return 1;
  }
  st = nk_rmsnorm_fwd(NULL, &d, x, NULL, gamma, NULL, y, NULL, rstd);
  return st == NK_STATUS_OK ? 0 : 1;
}
