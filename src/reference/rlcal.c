/*
 * rlcal.c — float64 references for the RL and calibration transforms (spec stats-optim-rl.md
 * Parts C and D), written line by line from the spec and the official code it cites:
 *   running mean/std   DLR-RM/stable-baselines3 common/running_mean_std.py (RunningMeanStd),
 *                      common/vec_env/vec_normalize.py (VecNormalize)
 */
#include <math.h>
#include <stdlib.h>

#include "reference.h"

static double clipd(double v, double lo, double hi) { return fmin(fmax(v, lo), hi); }

/* ---- C13 running mean/std ---- */

void nk_ref_rms_init(size_t d, nk_ref_rms *s) {
  for (size_t j = 0; j < d; j++) s->mean[j] = 0.0, s->var[j] = 1.0;
  s->count = 1e-4;
}

void nk_ref_rms_update(size_t N, size_t d, const double *x, nk_ref_rms *s) {
  const double batch_count = (double)N;
  for (size_t j = 0; j < d; j++) {
    double bm = 0.0;
    for (size_t r = 0; r < N; r++) bm += x[r * d + j];
    bm /= batch_count;
    double bv = 0.0;
    for (size_t r = 0; r < N; r++) bv += (x[r * d + j] - bm) * (x[r * d + j] - bm);
    bv /= batch_count; /* np.var: biased */
    /* update_from_moments */
    const double delta = bm - s->mean[j];
    const double tot = s->count + batch_count;
    const double new_mean = s->mean[j] + delta * batch_count / tot;
    const double m_a = s->var[j] * s->count;
    const double m_b = bv * batch_count;
    const double m2 = m_a + m_b + delta * delta * s->count * batch_count / tot;
    s->mean[j] = new_mean;
    s->var[j] = m2 / tot;
  }
  s->count += batch_count;
}

void nk_ref_rms_normalize(size_t N, size_t d, const nk_ref_rms *s, double eps, double clip,
                          const double *x, double *y) {
  for (size_t r = 0; r < N; r++)
    for (size_t j = 0; j < d; j++)
      y[r * d + j] = clipd((x[r * d + j] - s->mean[j]) / sqrt(s->var[j] + eps), -clip, clip);
}

void nk_ref_vecnorm_reward(size_t E, double gamma, double eps, double clip, const double *r,
                           const unsigned char *done, double *ret, nk_ref_rms *ret_rms,
                           double *out) {
  for (size_t e = 0; e < E; e++) ret[e] = ret[e] * gamma + r[e];
  nk_ref_rms_update(E, 1, ret, ret_rms);
  for (size_t e = 0; e < E; e++)
    out[e] = clipd(r[e] / sqrt(ret_rms->var[0] + eps), -clip, clip);
  for (size_t e = 0; e < E; e++)
    if (done && done[e]) ret[e] = 0.0;
}
