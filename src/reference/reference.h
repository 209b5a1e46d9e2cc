/*
 * reference.h — float64 reference implementations, written to be obviously correct.
 * Used by the tests and by the benchmark's validation. Dense row-major double arrays.
 * Straight from spec/layers.md §1–2: two-pass mean/variance, eps inside the sqrt.
 */
#ifndef NK_REFERENCE_H
#define NK_REFERENCE_H

#include <stddef.h>

/* y = (h - mu) * rstd * g + b, per row. gamma/beta may be NULL (g = 1, b = 0); offset != 0
 * means g = 1 + gamma. mean/rstd (rows each) may be NULL. */
void nk_ref_layernorm_fwd(size_t rows, size_t cols, const double *h, const double *gamma,
                          const double *beta, int offset, double eps, double *y, double *mean,
                          double *rstd);
/* dx (rows x cols), dgamma and dbeta (cols, overwritten; may be NULL) from h and dy. */
void nk_ref_layernorm_bwd(size_t rows, size_t cols, const double *h, const double *gamma,
                          int offset, double eps, const double *dy, double *dx, double *dgamma,
                          double *dbeta);
void nk_ref_rmsnorm_fwd(size_t rows, size_t cols, const double *h, const double *gamma,
                        const double *beta, int offset, double eps, double *y, double *rstd);
void nk_ref_rmsnorm_bwd(size_t rows, size_t cols, const double *h, const double *gamma,
                        int offset, double eps, const double *dy, double *dx, double *dgamma,
                        double *dbeta);

#endif /* NK_REFERENCE_H */
