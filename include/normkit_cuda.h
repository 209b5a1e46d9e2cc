/*
 * normkit_cuda.h — the CUDA backend (optional build: -DNK_CUDA=ON; library normkit_cuda).
 *
 * The row norms and the softmax family on NVIDIA GPUs, on device pointers, with the CPU API's
 * descriptors (nk_norm_desc, nk_softmax_desc, nk_cross_entropy_desc in normkit.h) and the same
 * math, dtypes, flags, edge cases and accuracy bounds, except where a function below says
 * otherwise. Every function validates its arguments on the host (sizes, strides, flags, NULLs,
 * overlap of the address ranges) and returns a status before anything is launched; it then
 * enqueues its kernels on `stream` and returns without waiting. Device-side faults surface as
 * NK_STATUS_DEVICE_ERROR at the launch that sees them (cudaGetLastError after each launch) or at
 * the caller's next synchronisation.
 *
 * Build: sm_90a machine code (H100, H200) plus compute_90 PTX that newer GPUs compile at load.
 * docs/cuda.md describes the kernels, their strategies by width and the measured bandwidth.
 *
 * Arithmetic: f32 with the row sums combined in double (each thread sums at most one vector of
 * f32 values before adding to a double; the block combines threads in a fixed tree), so the
 * bounds of normkit.h hold. Results are bit-reproducible run to run and for every launch
 * configuration the library picks (it depends on the sizes only). They are NOT bit-identical to
 * the CPU's (a different reduction tree; docs/cuda.md "Differences from the CPU").
 * Parameter gradients are reduced over fixed chunks of rows into a workspace and combined in
 * chunk order in double by a second kernel: no atomics anywhere.
 */
#ifndef NORMKIT_CUDA_H
#define NORMKIT_CUDA_H

#include "normkit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cudaStream_t without the CUDA headers; NULL is the legacy default stream. */
typedef struct CUstream_st *nk_cuda_stream;

/* NK_STATUS_DEVICE_ERROR (normkit.h) is returned when a CUDA call fails (launch error, no
 * device); nk_cuda_last_error gives the CUDA error string of the last such failure of the
 * calling thread ("" when none). */
NK_API const char *nk_cuda_last_error(void);

/* Number of CUDA devices usable by this process (0 when there is none or no driver); never
 * fails. Tests use it to report themselves skipped. */
NK_API int nk_cuda_device_count(void);

/* ---- LayerNorm and RMSNorm ---------------------------------------------------------------- */
/* As nk_layernorm_fwd / nk_rmsnorm_fwd (normkit.h), on device pointers: residual (h = x + r,
 * rounded to dtype), GAMMA_OFFSET, beta, lns_scale, saved mean (f32, rounded; the backward
 * recomputes its low part) and rstd. Every cols >= 1 works: rows whose (dtype) copy fits in
 * the shared memory of a cluster of up to 8 blocks (about 800,000 bf16 columns) are read from
 * global memory once; wider rows are read again by each pass (3 for RMSNorm, 4 for LayerNorm;
 * docs/cuda.md). */
NK_API nk_status nk_cuda_layernorm_fwd(nk_cuda_stream stream, const nk_layernorm_desc *desc,
                                       const void *x, const void *r, const void *gamma,
                                       const void *beta, void *y, void *h, float *mean,
                                       float *rstd);
NK_API nk_status nk_cuda_rmsnorm_fwd(nk_cuda_stream stream, const nk_rmsnorm_desc *desc,
                                     const void *x, const void *r, const void *gamma,
                                     const void *beta, void *y, void *h, float *rstd);

/* Device workspace bytes the backward needs (a function of rows, cols and whether dgamma or
 * dbeta is wanted: the per-chunk partial sums). Pass want_params = 0 when neither dgamma nor
 * dbeta is requested (then 0 bytes). */
NK_API nk_status nk_cuda_rownorm_bwd_workspace_size(const nk_norm_desc *desc, int want_params,
                                                    size_t *bytes);

/* As nk_layernorm_bwd / nk_rmsnorm_bwd: dh, NK_NORM_BWD_FROM_Y (x is then y; 1/g is computed
 * on the device and not checked: a zero g gives inf/NaN in dx instead of INVALID_ARGUMENT),
 * NK_NORM_ACCUMULATE, lns_scale. dgamma/dbeta are deterministic (fixed chunks, fixed order,
 * double). workspace: device memory of at least the size above (any alignment). */
NK_API nk_status nk_cuda_layernorm_bwd(nk_cuda_stream stream, const nk_layernorm_desc *desc,
                                       const void *x, const void *gamma, const void *beta,
                                       const float *mean, const float *rstd, const void *dy,
                                       const void *dh, void *dx, void *dgamma, void *dbeta,
                                       void *workspace, size_t workspace_size);
NK_API nk_status nk_cuda_rmsnorm_bwd(nk_cuda_stream stream, const nk_rmsnorm_desc *desc,
                                     const void *x, const void *gamma, const void *beta,
                                     const float *rstd, const void *dy, const void *dh, void *dx,
                                     void *dgamma, void *dbeta, void *workspace,
                                     size_t workspace_size);

/* ---- softmax, log_softmax ------------------------------------------------------------------ */
/* As nk_softmax_fwd / nk_softmax_bwd: scale, mask (f32/bf16/f16, broadcast rows), ALiBi,
 * causal with q_len and causal_offset, sink per row or per head, NK_SOFTMAX_LOG,
 * NK_SOFTMAX_MASKED_NAN, fully masked rows as on the CPU. desc->algo is ignored (one
 * algorithm, the three-pass one: max, sum of exp, normalise, from a shared-memory copy of the
 * logits when it fits, else each pass reads the row again). y may be x; dx may be dy or y. */
NK_API nk_status nk_cuda_softmax_fwd(nk_cuda_stream stream, const nk_softmax_desc *desc,
                                     const void *x, const void *mask, const float *sink, void *y,
                                     float *lse);
NK_API nk_status nk_cuda_softmax_bwd(nk_cuda_stream stream, const nk_softmax_desc *desc,
                                     const void *y, const void *dy, const float *sink,
                                     const float *lse, void *dx, float *dsink);

/* ---- fused cross-entropy --------------------------------------------------------------------- */
/* As nk_cross_entropy: targets (device int64), ignore_index, label smoothing, z-loss, the
 * three reductions (sum and mean in double, in row order, by one finishing block), dlogits
 * optional and may be x. Differences from the CPU: a target outside [0, cols) that is not
 * ignore_index cannot be reported as a status without a synchronisation; that row's loss and
 * dlogits are NaN instead (and so the sum or mean). */
NK_API nk_status nk_cuda_cross_entropy_workspace_size(const nk_cross_entropy_desc *desc,
                                                      size_t *bytes);
NK_API nk_status nk_cuda_cross_entropy(nk_cuda_stream stream, const nk_cross_entropy_desc *desc,
                                       const void *x, const int64_t *target, float *loss,
                                       void *dlogits, float *lse, void *workspace,
                                       size_t workspace_size);

#ifdef __cplusplus
}
#endif

#endif /* NORMKIT_CUDA_H */
