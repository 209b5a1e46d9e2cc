/*
 * resnorm.c — float64 references of the research normalization layers (spec layers.md 4-6):
 * PowerNorm (both modes), Unified Normalization (the official code's order) and EvoNorm-B0/S0.
 * Plain loops in double, written to be read against the spec.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"

/* ---- PowerNorm ------------------------------------------------------------------------------ */

void nk_ref_pn_group_scale(const nk_ref_pn *p, const double *x, double *u, double *gs) {
  const size_t C = p->C, G = p->groups;
  for (size_t i = 0; i < p->R; i++) {
    if (G == 0) {
      for (size_t c = 0; c < C; c++) u[i * C + c] = x[i * C + c];
      continue;
    }
    const size_t cg = C / G;
    for (size_t k = 0; k < G; k++) {
      double q = 0.0;
      for (size_t c = k * cg; c < (k + 1) * cg; c++) q += x[i * C + c] * x[i * C + c];
      const double s = 1.0 / sqrt(q / (double)cg + p->gs_eps);
      if (gs) gs[i * G + k] = s;
      for (size_t c = k * cg; c < (k + 1) * cg; c++) u[i * C + c] = x[i * C + c] * s;
    }
  }
}

void nk_ref_powernorm_fwd(const nk_ref_pn *p, const double *x, const unsigned char *mask,
                          const double *gamma, const double *beta, double *phi, long long *step,
                          double *y, double *rf, double *rb) {
  const size_t R = p->R, C = p->C;
  double *u = malloc(R * C * sizeof(double));
  nk_ref_pn_group_scale(p, x, u, NULL);
  for (size_t c = 0; c < C; c++) {
    double stat;
    if (p->training) {
      double q = 0.0, n = 0.0;
      for (size_t i = 0; i < R; i++)
        if (mask == NULL || mask[i]) q += u[i * C + c] * u[i * C + c], n += 1.0;
      const double psi2 = q / n; /* psi^2_B over the valid tokens */
      const long long t = *step + 1;
      const int code = p->mode == NK_REF_PN_CODE;
      const int batch = p->mode == NK_REF_PN_PNV || (code && t <= p->warmup);
      stat = batch ? psi2 : phi[c];
      rb[c] = 1.0 / sqrt(psi2 + p->eps);
      double f = phi[c];
      if (code && t < p->warmup) f = f * (double)(t - 1) / (double)t + psi2 / (double)t;
      phi[c] = p->alpha_fwd * f + (1.0 - p->alpha_fwd) * psi2;
    } else {
      stat = phi[c];
      rb[c] = 1.0 / sqrt(stat + p->eps);
    }
    rf[c] = 1.0 / sqrt(stat + p->eps);
    const double g = gamma ? gamma[c] : 1.0, b = beta ? beta[c] : 0.0;
    for (size_t i = 0; i < R; i++) y[i * C + c] = g * u[i * C + c] * rf[c] + b;
  }
  if (p->training) *step += 1;
  free(u);
}

void nk_ref_powernorm_bwd(const nk_ref_pn *p, const double *x, const unsigned char *mask,
                          const double *gamma, const double *rf, const double *rb, double *nu,
                          const double *dy, double *dx, double *dgamma, double *dbeta) {
  const size_t R = p->R, C = p->C, G = p->groups;
  double *u = malloc(R * C * sizeof(double)), *du = malloc(R * C * sizeof(double));
  double *gs = malloc((R * (G ? G : 1)) * sizeof(double));
  nk_ref_pn_group_scale(p, x, u, gs);
  const int exact = p->training && p->mode == NK_REF_PN_PNV;
  double nvalid = 0.0;
  for (size_t i = 0; i < R; i++) nvalid += mask == NULL || mask[i];
  for (size_t c = 0; c < C; c++) {
    const double g = gamma ? gamma[c] : 1.0;
    double sgz = 0.0, sg = 0.0;
    for (size_t i = 0; i < R; i++) {
      sgz += dy[i * C + c] * u[i * C + c] * rf[c];
      sg += dy[i * C + c];
    }
    if (exact) {
      /* d/du_p of sum_A ghat z with z = u r, r = (mean_V u^2 + eps)^-1/2:
       * r ghat_p - [p in V] u_p r^3 sum_A(ghat u) / |V|. */
      const double r = rb[c];
      double sgu = 0.0;
      for (size_t i = 0; i < R; i++) sgu += g * dy[i * C + c] * u[i * C + c];
      for (size_t i = 0; i < R; i++) {
        const double valid = mask == NULL || mask[i] ? 1.0 : 0.0;
        du[i * C + c] = r * g * dy[i * C + c] - valid * u[i * C + c] * r * r * r * sgu / nvalid;
      }
    } else {
      const double v = p->training ? nu[c] : 0.0; /* nu_{t-1} */
      const double scale = p->training ? (p->mode == NK_REF_PN_PAPER ? rf[c] : rb[c]) : rf[c];
      double mxz = 0.0;
      for (size_t i = 0; i < R; i++) {
        const double z = u[i * C + c] * rf[c];
        const double xt = g * dy[i * C + c] - v * z; /* x~ = g^ - nu z */
        mxz += xt * z;
        du[i * C + c] = xt * scale;
      }
      if (p->training) nu[c] = v + (1.0 - p->alpha_bwd) * (mxz / (double)R);
    }
    if (dgamma) dgamma[c] = sgz;
    if (dbeta) dbeta[c] = sg;
  }
  for (size_t i = 0; i < R; i++) {
    if (G == 0) {
      for (size_t c = 0; c < C; c++) dx[i * C + c] = du[i * C + c];
      continue;
    }
    const size_t cg = C / G;
    for (size_t k = 0; k < G; k++) {
      double m = 0.0;
      for (size_t c = k * cg; c < (k + 1) * cg; c++) m += du[i * C + c] * u[i * C + c];
      m /= (double)cg;
      for (size_t c = k * cg; c < (k + 1) * cg; c++)
        dx[i * C + c] = gs[i * G + k] * (du[i * C + c] - u[i * C + c] * m);
    }
  }
  free(u);
  free(du);
  free(gs);
}

/* ---- Unified Normalization ------------------------------------------------------------------ */

static double un_gm(const double *f, size_t M, size_t C, size_t c) {
  double lg = 0.0;
  for (size_t k = 0; k < M; k++) {
    if (f[k * C + c] == 0.0) return 0.0;
    lg += log(f[k * C + c]);
  }
  return exp(lg / (double)M);
}

/* Unbiased variance of sqrt(f[i]) over the n values f[0], f[s], ... */
static double var_sqrt(const double *f, size_t n, size_t s) {
  if (n < 2) return 0.0;
  double m = 0.0, q = 0.0;
  for (size_t i = 0; i < n; i++) m += sqrt(f[i * s]);
  m /= (double)n;
  for (size_t i = 0; i < n; i++) q += (sqrt(f[i * s]) - m) * (sqrt(f[i * s]) - m);
  return q / (double)(n - 1);
}

void nk_ref_unifiednorm_fwd(const nk_ref_un *p, nk_ref_un_state *st, const double *x,
                            const unsigned char *mask, const double *gamma, const double *beta,
                            double *y, double *r, double *rho) {
  const size_t R = p->R, C = p->C, M = p->M;
  double *sh2 = malloc(C * sizeof(double));
  if (p->training) {
    const long long t = st->step + 1;
    const size_t slot = (size_t)(t % (long long)M);
    double *s2 = malloc(C * sizeof(double)), *V = malloc(C * sizeof(double));
    for (size_t c = 0; c < C; c++) {
      double q = 0.0, n = 0.0;
      for (size_t i = 0; i < R; i++)
        if (mask == NULL || mask[i]) q += x[i * C + c] * x[i * C + c], n += 1.0;
      s2[c] = q / n;
      V[c] = p->per_channel ? var_sqrt(st->fwin + c, M, C) : 0.0;
    }
    const double vrec = p->per_channel ? 0.0 : var_sqrt(st->fwin, M * C, 1);
    /* The window holds f32 values, as the caller's state does (normkit.h: state stored f32);
     * the skip test and GM read them (a double s2 that underflows f32, 1e-60, would make
     * AM - GM > 0 where the stored window gives 0: found by tests/fuzz/resnorm.c). */
    for (size_t c = 0; c < C; c++) st->fwin[slot * C + c] = (double)(float)s2[c];
    int skip = 0;
    if (p->filter && t >= p->warmup) {
      if (M == 1) skip = 1;
      for (size_t c = 0; c < C; c++) {
        double am = 0.0;
        for (size_t k = 0; k < M; k++) am += st->fwin[k * C + c];
        am /= (double)M;
        if (am - un_gm(st->fwin, M, C, c) > (double)M * (p->per_channel ? V[c] : vrec)) skip = 1;
      }
      if (skip) {
        for (size_t c = 0; c < C; c++) st->fwin[slot * C + c] = st->phi[c];
        st->skips++;
      }
    }
    const int bs = t <= (long long)M || t < p->warmup || skip;
    const long long rw = p->rho_warmup > p->warmup ? p->rho_warmup : p->warmup;
    for (size_t c = 0; c < C; c++) {
      sh2[c] = bs ? s2[c] : un_gm(st->fwin, M, C, c);
      double rh = sqrt(sh2[c] + p->eps) / sqrt(st->phi[c] + p->eps);
      if (t <= rw || skip) rh = 1.0;
      else if (!isnan(rh)) /* a NaN ratio stays NaN (torch.clamp; fmax would drop it) */
        rh = fmin(fmax(rh, p->rho_min), p->rho_max);
      rho[c] = rh;
      st->phi[c] = p->alpha * st->phi[c] + (1.0 - p->alpha) * sh2[c];
    }
    st->step = t;
    st->skip = skip;
    free(s2);
    free(V);
  } else {
    for (size_t c = 0; c < C; c++) sh2[c] = st->phi[c], rho[c] = 1.0;
  }
  for (size_t c = 0; c < C; c++) {
    r[c] = 1.0 / sqrt(sh2[c] + p->eps);
    const double g = gamma ? gamma[c] : 1.0, b = beta ? beta[c] : 0.0;
    for (size_t i = 0; i < R; i++) y[i * C + c] = g * x[i * C + c] * r[c] + b;
  }
  free(sh2);
}

void nk_ref_unifiednorm_bwd(const nk_ref_un *p, nk_ref_un_state *st, const double *x,
                            const double *gamma, const double *r, const double *rho,
                            const double *dy, double *dx, double *dgamma, double *dbeta) {
  const size_t R = p->R, C = p->C, Mb = p->Mb;
  const long long t = st->step;
  const size_t slot = (size_t)(t % (long long)Mb);
  for (size_t c = 0; c < C; c++) {
    const double g = gamma ? gamma[c] : 1.0;
    const double rh = p->training ? rho[c] : 1.0;
    double sgz = 0.0, sg = 0.0;
    for (size_t i = 0; i < R; i++) {
      sgz += dy[i * C + c] * x[i * C + c] * r[c];
      sg += dy[i * C + c];
    }
    double k = 0.0;
    if (p->training) {
      const double gz = rh * g * sgz / (double)R; /* mean_A(g^ z) */
      st->bwin[slot * C + c] = st->skip ? st->psi[c] : gz;
      double m = gz;
      if (!(t <= (long long)Mb || t < p->warmup || st->skip)) {
        m = 0.0;
        for (size_t j = 0; j < Mb; j++) m += st->bwin[j * C + c];
        m /= (double)Mb;
      }
      st->psi[c] = p->alpha * st->psi[c] + (1.0 - p->alpha) * m;
      k = st->skip ? m : st->psi[c];
    }
    for (size_t i = 0; i < R; i++) {
      const double z = x[i * C + c] * r[c];
      dx[i * C + c] = (rh * g * dy[i * C + c] - k * z) * r[c];
    }
    if (dgamma) dgamma[c] = rh * sgz;
    if (dbeta) dbeta[c] = sg;
  }
}

/* ---- EvoNorm -------------------------------------------------------------------------------- */

static double sigm(double w) { return 1.0 / (1.0 + exp(-w)); }

/* Statistics: mu_b/var_b (C), mu_i/var_i (N*C), mu_g/var_g (N*G). */
typedef struct evo_stats {
  double *mb, *vb, *mi, *vi, *mg, *vg;
} evo_stats;

static evo_stats evo_stats_of(const nk_ref_chshape *t, size_t G, const double *x) {
  evo_stats s;
  const size_t C = t->c, N = t->n, Gs = G ? G : 1;
  s.mb = malloc(C * sizeof(double)), s.vb = malloc(C * sizeof(double));
  s.mi = malloc(N * C * sizeof(double)), s.vi = malloc(N * C * sizeof(double));
  s.mg = malloc(N * Gs * sizeof(double)), s.vg = malloc(N * Gs * sizeof(double));
  nk_ref_channel_stats(t, x, s.mb, s.vb);
  nk_ref_group_stats(t, C, x, s.mi, s.vi);
  if (G) nk_ref_group_stats(t, G, x, s.mg, s.vg);
  return s;
}
static void evo_stats_free(evo_stats *s) {
  free(s->mb), free(s->vb), free(s->mi), free(s->vi), free(s->mg), free(s->vg);
}

void nk_ref_evonorm_fwd(const nk_ref_chshape *t, int kind, size_t groups, int training,
                        int affine, double eps, double momentum, const double *x,
                        const double *gamma, const double *beta, const double *v,
                        double *running_var, double *y) {
  const size_t N = t->n, C = t->c, S = t->s;
  const size_t G = kind == 1 ? groups : 0, cg = G ? C / G : 1;
  evo_stats st = evo_stats_of(t, G, x);
  for (size_t c = 0; c < C; c++) {
    const double g = gamma ? gamma[c] : 1.0, b = beta ? beta[c] : 0.0, vv = v ? v[c] : 1.0;
    /* affine-only B0 reads no statistic (running_var may then be NULL) */
    const double sb =
        kind == 0 && !affine ? sqrt((training ? st.vb[c] : running_var[c]) + eps) : 0.0;
    for (size_t n = 0; n < N; n++) {
      const double si = sqrt(st.vi[n * C + c] + eps);
      const double sg = G ? sqrt(st.vg[n * G + c / cg] + eps) : 0.0;
      for (size_t s = 0; s < S; s++) {
        const size_t i = nk_ref_chidx(t, n, c, s);
        const double xv = x[i];
        if (affine) y[i] = g * xv + b;
        else if (kind == 0) y[i] = g * xv / ((sb >= vv * xv + si || isnan(sb)) ? sb : vv * xv + si) + b;
        else y[i] = g * xv * sigm(vv * xv) / sg + b;
      }
    }
    if (kind == 0 && training && !affine && running_var)
      running_var[c] = (1.0 - momentum) * running_var[c] + momentum * st.vb[c];
  }
  evo_stats_free(&st);
}

void nk_ref_evonorm_bwd(const nk_ref_chshape *t, int kind, size_t groups, int training,
                        int affine, double eps, const double *x, const double *gamma,
                        const double *v, const double *running_var, const double *dy, double *dx,
                        double *dgamma, double *dbeta, double *dv) {
  const size_t N = t->n, C = t->c, S = t->s;
  const size_t G = kind == 1 ? groups : 0, cg = G ? C / G : 1;
  evo_stats st = evo_stats_of(t, G, x);
  double *Ab = calloc(C, sizeof(double)), *Ai = calloc(N * C, sizeof(double));
  double *Ag = calloc(N * (G ? G : 1), sizeof(double));
  /* Pass 1: accumulators and parameter gradients. */
  for (size_t c = 0; c < C; c++) {
    const double g = gamma ? gamma[c] : 1.0, vv = v ? v[c] : 1.0;
    /* affine-only B0 reads no statistic (running_var may then be NULL) */
    const double sb =
        kind == 0 && !affine ? sqrt((training ? st.vb[c] : running_var[c]) + eps) : 0.0;
    double sdg = 0.0, sdb = 0.0, sdv = 0.0;
    for (size_t n = 0; n < N; n++) {
      const double si = sqrt(st.vi[n * C + c] + eps);
      const double sg = G ? sqrt(st.vg[n * G + c / cg] + eps) : 0.0;
      for (size_t s = 0; s < S; s++) {
        const size_t i = nk_ref_chidx(t, n, c, s);
        const double xv = x[i], gy = dy[i], gh = g * gy;
        sdb += gy;
        if (affine) {
          sdg += gy * xv;
        } else if (kind == 0) {
          const int m = sb >= vv * xv + si || isnan(sb);
          const double d = m ? sb : vv * xv + si;
          const double delta = -gh * xv / (d * d);
          if (m) Ab[c] += delta;
          else Ai[n * C + c] += delta, sdv += delta * xv;
          sdg += gy * xv / d;
        } else {
          const double sgm = sigm(vv * xv), sp = sgm * (1.0 - sgm), a = xv * sgm;
          Ag[n * G + c / cg] -= gh * a / (sg * sg);
          sdv += gh / sg * xv * xv * sp;
          sdg += gy * a / sg;
        }
      }
    }
    if (dgamma) dgamma[c] = sdg;
    if (dbeta) dbeta[c] = sdb;
    if (dv) dv[c] = sdv;
  }
  /* Pass 2: dx. */
  for (size_t c = 0; c < C; c++) {
    const double g = gamma ? gamma[c] : 1.0, vv = v ? v[c] : 1.0;
    /* affine-only B0 reads no statistic (running_var may then be NULL) */
    const double sb =
        kind == 0 && !affine ? sqrt((training ? st.vb[c] : running_var[c]) + eps) : 0.0;
    for (size_t n = 0; n < N; n++) {
      const double si = sqrt(st.vi[n * C + c] + eps);
      const double sg = G ? sqrt(st.vg[n * G + c / cg] + eps) : 0.0;
      for (size_t s = 0; s < S; s++) {
        const size_t i = nk_ref_chidx(t, n, c, s);
        const double xv = x[i], gh = g * dy[i];
        if (affine) {
          dx[i] = gh;
        } else if (kind == 0) {
          const int m = sb >= vv * xv + si || isnan(sb);
          const double d = m ? sb : vv * xv + si;
          /* gh/d + v delta = gh (d - v x) / d^2 = gh s_i / d^2 where d = v x + s_i: written so,
           * as the sum cancels even in double when s_i << |v x| (tests/fuzz/resnorm.c) */
          double r = m ? gh / d : gh * si / (d * d);
          if (training) r += Ab[c] * (xv - st.mb[c]) / (sb * (double)(N * S));
          r += Ai[n * C + c] * (xv - st.mi[n * C + c]) / (si * (double)S);
          dx[i] = r;
        } else {
          const double sgm = sigm(vv * xv), sp = sgm * (1.0 - sgm);
          dx[i] = gh / sg * (sgm + vv * xv * sp) +
                  Ag[n * G + c / cg] * (xv - st.mg[n * G + c / cg]) / (sg * (double)(cg * S));
        }
      }
    }
  }
  free(Ab), free(Ai), free(Ag);
  evo_stats_free(&st);
}
