/*
 * normkit.h — the public C API of normkit, and its reference documentation.
 *
 * normkit computes the normalizations of machine learning (LayerNorm, RMSNorm, the softmax
 * family and cross-entropy, BatchNorm/GroupNorm/InstanceNorm and their statistics) forward and
 * backward, on
 * CPU (scalar, AVX2+FMA, AVX-512) with one fixed arithmetic on every path.
 *
 * Conventions that hold for every function below
 * ----------------------------------------------
 * - Every function that can fail returns nk_status. NK_STATUS_OK (== 0) is success.
 *   On failure nothing is written to any output buffer, and when a context was given its
 *   message (nk_context_message) says what was wrong ("layernorm_fwd: x_stride 100 < cols 128").
 * - Sizes and strides are counted in elements, not bytes. Every row stride must be >= cols.
 * - Every array pointer must be aligned to its element's natural alignment (2 bytes for
 *   bf16/f16, 4 for f32, 8 for doubles, int64 and the structs of doubles such as nk_moments);
 *   a misaligned one is INVALID_ARGUMENT. No stronger alignment is ever needed.
 * - Tensors are caller-owned; normkit never keeps a pointer after a call returns and never
 *   allocates memory inside an operator (backward workspaces are sized by a query function).
 * - Workspaces (scratch the caller passes as void *workspace, size_t workspace_size) may be at
 *   any address: an operator aligns the pointer up to NK_WORKSPACE_ALIGN bytes inside, and every
 *   *_workspace_size query includes that slack. Where a workspace is documented as a count
 *   ("cols floats"), pass that many bytes plus NK_WORKSPACE_ALIGN. A workspace of 0 bytes may be
 *   NULL.
 * - A NULL nk_context means defaults: serial execution on the calling thread, ISA chosen from
 *   the NK_ISA environment variable or else the best the CPU has, consistent arithmetic.
 * - Consistent arithmetic (always on): the same inputs give the same output bits whatever the
 *   thread count and whichever ISA path (scalar, avx2, avx512) runs. What can break it: NaN
 *   payloads when a NaN comes from a parameter or dh, or when x and r are both NaN at one
 *   element of a fused residual (h keeps one of the two payloads); rows whose input holds NaN
 *   or inf otherwise give the canonical quiet NaN, 0x7FC00000; a caller that runs with MXCSR
 *   flush-to-zero/denormals-are-zero set (results then differ from the default mode).
 * - Thread safety: functions are thread-safe as long as no two calls share a context or an
 *   output buffer at the same time. A thread pool may be shared by contexts but runs one
 *   parallel region at a time (calls from two threads on one pool are serialized).
 */
#ifndef NORMKIT_H
#define NORMKIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define NK_API
#else
#define NK_API __attribute__((visibility("default")))
#endif

#define NK_VERSION_MAJOR 0
#define NK_VERSION_MINOR 1
#define NK_VERSION_PATCH 0
/* Returns the version string of the linked library, e.g. "0.1.0". Never NULL. */
NK_API const char *nk_version(void);

/* The alignment every operator gives its workspace inside (see "Workspaces" above): a
 * workspace may be at any address, and the size queries include NK_WORKSPACE_ALIGN bytes of
 * slack. */
#define NK_WORKSPACE_ALIGN 64

/* ------------------------------------------------------------------------------------------ */
/* Status                                                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef enum nk_status {
  NK_STATUS_OK = 0,                   /* success */
  NK_STATUS_INVALID_ARGUMENT = 1,     /* a NULL, size, stride, eps, flag or aliasing rule broken */
  NK_STATUS_UNSUPPORTED = 2,          /* valid request that this build does not implement */
  NK_STATUS_UNSUPPORTED_HARDWARE = 3, /* the requested ISA is not available on this CPU */
  NK_STATUS_OUT_OF_MEMORY = 4,        /* an allocation failed (only in create functions) */
  NK_STATUS_MISUSE = 5,               /* calls in a wrong order or workspace too small */
  NK_STATUS_DEVICE_ERROR = 6,         /* a CUDA call failed (normkit_cuda.h only) */
} nk_status;
#define NK_OK NK_STATUS_OK

/* Returns a static one-line description of a status ("invalid argument"). Never NULL;
 * unknown values give "unknown status". */
NK_API const char *nk_status_string(nk_status status);

/* ------------------------------------------------------------------------------------------ */
/* Storage types and dtypes                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* bfloat16 and IEEE binary16 values are stored as their bit patterns. */
typedef uint16_t nk_bf16;
typedef uint16_t nk_f16;

/* What a tensor pointer holds. The zero value is f32, so a zeroed descriptor means f32. */
typedef enum nk_dtype {
  NK_DTYPE_F32 = 0,
  NK_DTYPE_BF16 = 1,
  NK_DTYPE_F16 = 2,
} nk_dtype;

/* "f32", "bf16", "f16"; "?" for unknown values. */
NK_API const char *nk_dtype_name(nk_dtype dtype);
/* Bytes per element: 4, 2, 2; 0 for unknown values. */
NK_API size_t nk_dtype_size(nk_dtype dtype);

/* Conversions, all paths identical: round to nearest, ties to even, computed in integer
 * arithmetic (no dependence on MXCSR); subnormals are kept, not flushed; overflow gives inf;
 * every NaN becomes a quiet NaN with the sign kept and the top payload bits kept (the same
 * bits F16C's vcvtps2ph produces). Widening conversions (to f32) are exact; f16 -> f32 quiets
 * a signaling NaN (as vcvtph2ps does), bf16 -> f32 keeps every bit. */
NK_API nk_bf16 nk_f32_to_bf16(float x);
NK_API float nk_bf16_to_f32(nk_bf16 x);
NK_API nk_f16 nk_f32_to_f16(float x);
NK_API float nk_f16_to_f32(nk_f16 x);

/* ------------------------------------------------------------------------------------------ */
/* CPU features and ISA selection                                                              */
/* ------------------------------------------------------------------------------------------ */

/* Kernel paths. A path is usable when the CPU and the OS (XGETBV) support all it needs:
 *   NK_ISA_SCALAR  always;
 *   NK_ISA_AVX2    AVX2 + FMA + F16C;
 *   NK_ISA_AVX512  AVX-512 F, BW, VL and DQ (plus everything AVX2 needs). */
typedef enum nk_isa {
  NK_ISA_AUTO = 0, /* the NK_ISA environment variable if set, else the best usable path */
  NK_ISA_SCALAR = 1,
  NK_ISA_AVX2 = 2,
  NK_ISA_AVX512 = 3,
} nk_isa;

/* What the CPU (and the OS, for register state) supports. Detected once, on first use. */
typedef struct nk_cpu_features {
  int avx2, fma, f16c;
  int avx512f, avx512bw, avx512vl, avx512dq;
  int avx512bf16, avx512fp16;
} nk_cpu_features;

/* The detected features. Never NULL; the struct is static and immutable. Thread-safe. */
NK_API const nk_cpu_features *nk_cpu_features_get(void);
/* "auto", "scalar", "avx2", "avx512"; "?" otherwise. */
NK_API const char *nk_isa_name(nk_isa isa);
/* 1 if the path can run on this machine, else 0 (NK_ISA_AUTO gives 1). */
NK_API int nk_isa_supported(nk_isa isa);
/* The path that NK_ISA_AUTO resolves to: NK_ISA from the environment when it names a supported
 * path (it is read once), else the best supported path. An unknown or unsupported NK_ISA value
 * is ignored (nk_isa_env_error() then returns a message saying so). */
NK_API nk_isa nk_isa_default(void);
/* NULL, or a static message about an NK_ISA value that was ignored. */
NK_API const char *nk_isa_env_error(void);

/* ------------------------------------------------------------------------------------------ */
/* Thread pool                                                                                 */
/* ------------------------------------------------------------------------------------------ */

typedef struct nk_threadpool nk_threadpool;

/* Creates a pool of nthreads threads (the caller's thread counts as one; nthreads - 1 workers
 * are started). nthreads == 0 means one per CPU this process may run on (its affinity mask).
 * Idle workers spin for about 100 us before they sleep, so back-to-back calls pay no wake-up. OUT *pool. Returns OK,
 * INVALID_ARGUMENT (pool NULL), OUT_OF_MEMORY (allocation or pthread_create failed). */
NK_API nk_status nk_threadpool_create(size_t nthreads, nk_threadpool **pool);
/* Joins the workers and frees the pool. NULL is a no-op. Must not run while a parallel region
 * of this pool is in flight. */
NK_API void nk_threadpool_destroy(nk_threadpool *pool);
/* Number of threads (>= 1); 1 for NULL. */
NK_API size_t nk_threadpool_size(const nk_threadpool *pool);

/* A task processes the range [start, start + count). */
typedef void (*nk_task_1d)(void *arg, size_t start, size_t count);

/* Runs fn over [0, range) in tiles of `tile` elements (the last may be shorter), spread over
 * the pool's threads; returns when all tiles are done. It replaces the serial loop
 *     for (size_t i = 0; i < range; i += tile) fn(arg, i, min(tile, range - i));
 * Tiles are disjoint; the order in which they run is unspecified, so results must not depend
 * on it. pool == NULL runs that loop on the calling thread. tile == 0 is treated as 1.
 * Regions on one pool are serialized (a second caller waits); a call made from inside a task
 * of the same pool runs serially on that thread; fn == NULL is a no-op. A pool must not be
 * used in a child after fork(). */
NK_API void nk_parallelize_1d(nk_threadpool *pool, nk_task_1d fn, void *arg, size_t range,
                              size_t tile);

/* ------------------------------------------------------------------------------------------ */
/* Context                                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct nk_context nk_context;

/* Creates a context with defaults (no pool, NK_ISA_AUTO). OUT *ctx.
 * Returns OK, INVALID_ARGUMENT (ctx NULL), OUT_OF_MEMORY. */
NK_API nk_status nk_context_create(nk_context **ctx);
/* Frees the context (not its pool). NULL is a no-op. */
NK_API void nk_context_destroy(nk_context *ctx);
/* Borrows a thread pool for the operators called with this context (NULL = serial). The pool
 * must outlive its use by the context. Returns OK or INVALID_ARGUMENT (ctx NULL). */
NK_API nk_status nk_context_set_threadpool(nk_context *ctx, nk_threadpool *pool);
/* Forces a kernel path for the operators called with this context. NK_ISA_AUTO restores the
 * default. Returns OK, INVALID_ARGUMENT (ctx NULL or unknown isa), UNSUPPORTED_HARDWARE
 * (the CPU cannot run it; the setting is then unchanged). */
NK_API nk_status nk_context_set_isa(nk_context *ctx, nk_isa isa);
/* The path operators will use with this context (never NK_ISA_AUTO). ctx NULL gives
 * nk_isa_default(). */
NK_API nk_isa nk_context_isa(const nk_context *ctx);
/* The message of the last failure of a call made with this context, "" if none yet.
 * The string lives until the next call with the context. ctx NULL gives "". */
NK_API const char *nk_context_message(const nk_context *ctx);

/* ------------------------------------------------------------------------------------------ */
/* Kernel names                                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef enum nk_op {
  NK_OP_LAYERNORM_FWD = 0,
  NK_OP_LAYERNORM_BWD = 1,
  NK_OP_RMSNORM_FWD = 2,
  NK_OP_RMSNORM_BWD = 3,
  NK_OP_SOFTMAX_FWD = 4,      /* softmax and log_softmax forward (one kernel serves both) */
  NK_OP_SOFTMAX_BWD = 5,      /* softmax and log_softmax backward */
  NK_OP_CROSS_ENTROPY = 6,    /* fused softmax cross-entropy (loss and dlogits) */
  NK_OP_SIGMOID_ATTN_FWD = 7, /* element-wise sigmoid attention scores */
  NK_OP_SIGMOID_ATTN_BWD = 8,
  NK_OP_BATCHNORM_FWD = 9,    /* the channel norms share one kernel set (nk_chnorm__<isa>) */
  NK_OP_BATCHNORM_BWD = 10,
  NK_OP_GROUPNORM_FWD = 11,
  NK_OP_GROUPNORM_BWD = 12,
  NK_OP_INSTANCENORM_FWD = 13,
  NK_OP_INSTANCENORM_BWD = 14,
  NK_OP_CRMSNORM_FWD = 15,    /* CRMSNorm and L1 LayerNorm (research row norms) */
  NK_OP_CRMSNORM_BWD = 16,
  NK_OP_L1NORM_FWD = 17,
  NK_OP_L1NORM_BWD = 18,
  NK_OP_COUNT
} nk_op;

/* "layernorm_fwd", ...; "?" for unknown values. */
NK_API const char *nk_op_name(nk_op op);
/* The symbol name of the micro-kernel that an operator call with NULL context and this
 * activation dtype runs, e.g. "nk_f32_layernorm_fwd__avx512_u64". NULL for unknown op/dtype.
 * For NK_OP_SOFTMAX_FWD it names the kernel of the algorithm NK_SOFTMAX_AUTO picks for a large
 * (out-of-cache) call (nk_softmax_kernel_name gives it for a given descriptor). */
NK_API const char *nk_kernel_name(nk_op op, nk_dtype dtype);
/* The same for a given context (its ISA setting). */
NK_API const char *nk_kernel_name_ex(const nk_context *ctx, nk_op op, nk_dtype dtype);

/* ------------------------------------------------------------------------------------------ */
/* LayerNorm and RMSNorm                                                                       */
/* ------------------------------------------------------------------------------------------ */
/*
 * Per row of `cols` elements (h = x, or h = x + r with a residual r):
 *   LayerNorm:  mu = mean(h), var = mean((h - mu)^2), rstd = 1/sqrt(var + eps),
 *               y = (h - mu) * rstd * g + b
 *   RMSNorm:    q = mean(h^2), rstd = 1/sqrt(q + eps), y = h * rstd * g + b
 * where g = gamma (or 1 + gamma with NK_NORM_GAMMA_OFFSET, or 1 without gamma) and b = beta
 * (or 0 without beta). eps is inside the square root and must be finite and > 0: there is no
 * default (PyTorch's LayerNorm uses 1e-5; Llama-style RMSNorm 1e-6; PyTorch's RMSNorm with
 * eps=None the machine epsilon of the dtype, 2^-23 for f32, 2^-7 for bf16, 2^-10 for f16).
 *
 * dtypes: every activation tensor (x, r, h, y, dy, dh, dx) holds `dtype`; gamma, beta, dgamma
 * and dbeta hold `param_dtype`, which is NK_DTYPE_F32 or equal to `dtype`. Statistics (mean,
 * rstd) are always f32. Arithmetic is f32 with the row sums accumulated exactly enough to meet
 * the accuracy bounds (blocks of f32 partial sums combined in double; see docs/ops/layernorm.md).
 *
 * Accuracy (tested): f32 outputs within 2e-6 * max|reference| of the row (the reference is
 * float64); bf16/f16 outputs within 1 ulp of the correctly rounded reference plus the f32
 * bound 2e-6 * max|reference| of the row (the f32 part matters only for outputs far below the
 * row's largest, such as f16 subnormals: an f16 output of -4.0e-5 in a row of scale 1.9 was
 * 1.08 ulp off; found by the rownorm fuzz harness); f32 outputs in the subnormals within
 * 2^-148 more (an RMSNorm output of -7.05e-43 was 0.7 ulp off). With beta, the
 * reference's scale is that of the normalized part: 2e-6 * max(|y|, |y - beta|) over the row
 * (y = fmaf(xhat, g, b) keeps xhat's f32 rounding, which beta may cancel against; found by the
 * rownorm fuzz harness, which checks this bound). This holds for
 * ill-conditioned rows (mean 1e4, std 1e-2), for magnitudes up to FLT_MAX and down to the
 * subnormals, for every finite input.
 *
 * Edge cases (tested):
 * - rows == 0 or cols == 0: nothing is read or written; OK (pointers may then be NULL).
 * - A constant row normalizes to exactly 0 (LayerNorm: y = beta), and its gradients are finite.
 * - A row that contains NaN or +-inf: every output of that row (y, mean, rstd; in the backward
 *   dx) is NaN; h is still written as x + r; other rows are untouched. In the backward, NaN
 *   rows also make dgamma NaN (it sums over rows); dbeta is the sum of dy, which reads no x
 *   (the same with dx on dy: tests/ops/rownorm_regress.c).
 * - cols == 1: LayerNorm gives y = beta; RMSNorm gives h * rstd * g + b.
 *
 * Aliasing: an output may be the very same buffer (same pointer and stride) as an input:
 * y may equal x, r or h; h may equal x or r; dx may equal dy, x (or y in from-y mode) or dh.
 * Any other overlap between an output and another buffer (input or output) whose address
 * ranges intersect is rejected with INVALID_ARGUMENT. Inputs may overlap each other freely.
 */

/*
 * LayerNorm Scaling (LNS; Sun et al. 2025, "The Curse of Depth in Large Language Models",
 * arXiv:2502.05795 Sec. 4; docs/ops/layernorm-scaling.md). With lns_scale = s != 0 the output
 * of the norm is multiplied by s after the affine map, in the same pass:
 *     y = (xhat * g + b) * s          (f32: y = affine(xhat) * s, one more rounding)
 * and the backward multiplies the upstream gradient by s first: every formula of the backward
 * uses dy' = dy * s (f32), so dx, dgamma = sum dy' * xhat and dbeta = sum dy' are the gradients
 * of the scaled output. The paper's value is s = 1/sqrt(l) for the pre-norms of block l
 * (1-based; the same s for the attention and the FFN pre-norm of a block; the final norm is
 * unscaled). With NK_NORM_BWD_FROM_Y the `x` argument is the scaled y: xhat = (y * (1/s) - b)/g.
 * s = 0 (a zero-initialised descriptor, nk_norm_desc_dense) and s = 1 change nothing; s must be
 * finite and >= 0, else INVALID_ARGUMENT. The saved mean/rstd are those of the unscaled norm.
 * Accuracy: the bounds below hold relative to the scaled reference.
 * Folding for inference (exact in real arithmetic; not for training, where Adam would see a
 * different parametrisation): gamma' = gamma * s, beta' = beta * s, lns_scale = 0.
 * Also honoured by nk_crmsnorm_* and nk_l1norm_* (section "Research normalization layers");
 * not by nk_layernorm_fwd_moments / nk_rmsnorm_fwd_moments, the _fwd_q8 functions and
 * nk_fakeln_fwd (UNSUPPORTED when set).
 */

/* Flags for nk_norm_desc.flags. */
#define NK_NORM_GAMMA_OFFSET 0x1u /* scale by (1 + gamma) (Gemma style); needs gamma */
#define NK_NORM_ACCUMULATE 0x2u   /* backward: dgamma/dbeta += gradient (default: overwrite) */
#define NK_NORM_BWD_FROM_Y 0x4u   /* backward: recompute xhat from the saved output y (the
                                     `x` argument is y): xhat = (y - b) / g. Memory-saving
                                     (Apex memory_efficient). Needs every g != 0 (checked);
                                     LayerNorm then needs no mean. Accuracy is that of y. */

typedef struct nk_norm_desc {
  size_t rows;            /* number of rows */
  size_t cols;            /* elements per row (the normalized dimension) */
  nk_dtype dtype;         /* activations: x, r, h, y, dy, dh, dx */
  nk_dtype param_dtype;   /* gamma, beta, dgamma, dbeta: F32 or == dtype */
  float eps;              /* added to the variance (mean square) inside the sqrt; > 0 */
  uint32_t flags;         /* NK_NORM_* */
  ptrdiff_t x_stride;     /* row strides in elements, each >= cols */
  ptrdiff_t r_stride;     /* residual (fwd) */
  ptrdiff_t h_stride;     /* h = x + r output (fwd) */
  ptrdiff_t y_stride;     /* output (fwd) */
  ptrdiff_t dy_stride;    /* upstream gradient (bwd) */
  ptrdiff_t dh_stride;    /* extra gradient into h (bwd) */
  ptrdiff_t dx_stride;    /* input gradient (bwd) */
  float lns_scale;        /* LayerNorm Scaling factor s (see below); 0 = off. Finite, >= 0 */
} nk_norm_desc;
typedef nk_norm_desc nk_layernorm_desc;
typedef nk_norm_desc nk_rmsnorm_desc;

/* A dense descriptor: every stride = cols, param_dtype = NK_DTYPE_F32, flags 0, lns_scale 0
 * (off). A convenience;
 * any field may be changed afterwards. */
NK_API nk_norm_desc nk_norm_desc_dense(size_t rows, size_t cols, nk_dtype dtype, float eps);

/* LayerNorm forward.
 *   x      IN  rows x cols, x_stride.
 *   r      IN  optional residual (NULL: h = x), r_stride. With r, the normalized input is
 *              h = x + r, rounded to dtype (as if stored and reloaded).
 *   gamma  IN  optional, cols elements of param_dtype (NULL: g = 1; GAMMA_OFFSET needs it).
 *   beta   IN  optional, cols elements (NULL: b = 0).
 *   y      OUT rows x cols, y_stride.
 *   h      OUT optional (needs r): the sum x + r, h_stride, for the backward and the next layer.
 *   mean   OUT optional, rows floats: the row mean rounded to f32 (its low part is recomputed
 *              by the backward, so the backward loses nothing by the rounding).
 *   rstd   OUT optional, rows floats: 1/sqrt(var + eps).
 * Returns OK, INVALID_ARGUMENT (see the rules above), UNSUPPORTED (dtype combination). */
NK_API nk_status nk_layernorm_fwd(nk_context *ctx, const nk_layernorm_desc *desc, const void *x,
                                  const void *r, const void *gamma, const void *beta, void *y,
                                  void *h, float *mean, float *rstd);

/* The same for rows [row_begin, row_end) only, on the calling thread (the context's pool is not
 * used): for callers that bring their own threads. Pointers still point at row 0; mean and
 * rstd are indexed by row. Results are bit-identical to nk_layernorm_fwd. */
NK_API nk_status nk_layernorm_fwd_rows(nk_context *ctx, const nk_layernorm_desc *desc,
                                       size_t row_begin, size_t row_end, const void *x,
                                       const void *r, const void *gamma, const void *beta,
                                       void *y, void *h, float *mean, float *rstd);

/* Bytes of workspace nk_layernorm_bwd needs for this descriptor (a function of rows, cols and
 * flags only). OUT *bytes. Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_layernorm_bwd_workspace_size(const nk_layernorm_desc *desc, size_t *bytes);

/* LayerNorm backward.
 *   x      IN  the normalized input h of the forward (x, or x + r as written to h), x_stride;
 *              with NK_NORM_BWD_FROM_Y it is the forward output y (stride x_stride).
 *   gamma, beta  IN  as in the forward (beta is needed only by NK_NORM_BWD_FROM_Y).
 *   mean   IN  rows floats saved by the forward (not read with NK_NORM_BWD_FROM_Y: may be NULL).
 *   rstd   IN  rows floats saved by the forward.
 *   dy     IN  upstream gradient, dy_stride.
 *   dh     IN  optional extra gradient reaching h from its other uses (the residual stream);
 *              added to dx. NULL: none.
 *   dx     OUT gradient w.r.t. h, i.e. w.r.t. both x and r of a fused residual, dx_stride.
 *   dgamma OUT optional, cols elements: sum over rows of dy * xhat (times 1 for GAMMA_OFFSET, as
 *              d(1+gamma)/dgamma = 1). Overwritten, or added to with NK_NORM_ACCUMULATE.
 *   dbeta  OUT optional, cols elements: sum over rows of dy. Overwritten or accumulated.
 *   workspace  scratch of at least nk_layernorm_bwd_workspace_size bytes, at any address
 *              preferred (any alignment works); may be NULL when that size is 0.
 * Parameter gradients are reduced over fixed chunks of rows (a function of the sizes only) in
 * double and combined in chunk order: bit-identical for every thread count and ISA.
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED, MISUSE (workspace too small). */
NK_API nk_status nk_layernorm_bwd(nk_context *ctx, const nk_layernorm_desc *desc, const void *x,
                                  const void *gamma, const void *beta, const float *mean,
                                  const float *rstd, const void *dy, const void *dh, void *dx,
                                  void *dgamma, void *dbeta, void *workspace,
                                  size_t workspace_size);

/* Backward for rows [row_begin, row_end) on the calling thread, for callers with their own
 * threads. dx as above. The parameter gradients of these rows are ADDED, in double, to
 * dgamma_acc and dbeta_acc (cols doubles each, optional): the caller sums them over its row
 * ranges in an order of its choice and rounds them to param_dtype. Needs no workspace unless
 * NK_NORM_BWD_FROM_Y is set, which needs cols * 4 + NK_WORKSPACE_ALIGN bytes (pass
 * workspace/workspace_size). */
NK_API nk_status nk_layernorm_bwd_rows(nk_context *ctx, const nk_layernorm_desc *desc,
                                       size_t row_begin, size_t row_end, const void *x,
                                       const void *gamma, const void *beta, const float *mean,
                                       const float *rstd, const void *dy, const void *dh,
                                       void *dx, double *dgamma_acc, double *dbeta_acc,
                                       void *workspace, size_t workspace_size);

/* RMSNorm forward: as nk_layernorm_fwd without the mean. beta is optional (off in most models).
 * rstd OUT optional, rows floats: 1/sqrt(mean(h^2) + eps). */
NK_API nk_status nk_rmsnorm_fwd(nk_context *ctx, const nk_rmsnorm_desc *desc, const void *x,
                                const void *r, const void *gamma, const void *beta, void *y,
                                void *h, float *rstd);
NK_API nk_status nk_rmsnorm_fwd_rows(nk_context *ctx, const nk_rmsnorm_desc *desc,
                                     size_t row_begin, size_t row_end, const void *x,
                                     const void *r, const void *gamma, const void *beta, void *y,
                                     void *h, float *rstd);
NK_API nk_status nk_rmsnorm_bwd_workspace_size(const nk_rmsnorm_desc *desc, size_t *bytes);
/* RMSNorm backward: as nk_layernorm_bwd without the mean. */
NK_API nk_status nk_rmsnorm_bwd(nk_context *ctx, const nk_rmsnorm_desc *desc, const void *x,
                                const void *gamma, const void *beta, const float *rstd,
                                const void *dy, const void *dh, void *dx, void *dgamma,
                                void *dbeta, void *workspace, size_t workspace_size);
NK_API nk_status nk_rmsnorm_bwd_rows(nk_context *ctx, const nk_rmsnorm_desc *desc,
                                     size_t row_begin, size_t row_end, const void *x,
                                     const void *gamma, const void *beta, const float *rstd,
                                     const void *dy, const void *dh, void *dx,
                                     double *dgamma_acc, double *dbeta_acc, void *workspace,
                                     size_t workspace_size);


/* ------------------------------------------------------------------------------------------ */
/* Softmax, log-softmax, attention scores, cross-entropy                                      */
/* ------------------------------------------------------------------------------------------ */
/*
 * Per row i of `cols` elements, the logits are formed in f32, each step rounded to f32:
 *   z_j = x_j * scale                        (always; scale == 1 changes nothing)
 *   z_j = z_j + mask[mrow][j]                (with a mask; mrow = i % mask_rows)
 *   z_j = z_j + alibi * ((float)j - (float)p_i)   (with alibi != 0; p_i the query position)
 *   z_j = -inf for j > p_i                   (with NK_SOFTMAX_CAUSAL; those x are not read)
 * with the query position p_i = causal_offset + (i % q_len) (q_len 0 means rows), which is
 * the usual attention layout: rows = batch * heads * q_len, row i holding the scores of query
 * i % q_len against cols keys; causal_offset = kv_len - q_len for a KV cache.
 * An optional sink logit s_i (per row, or per head: s[(i / q_len) % heads]) joins the
 * denominator with no value (Gu et al. 2024; s = 0 everywhere is "softmax off by one"):
 *   softmax:      y_j = e^{z_j} / (e^{s_i} + sum_k e^{z_k})     (the e^{s_i} term only with a sink)
 *   log_softmax:  y_j = z_j - lse_i,  lse_i = log(e^{s_i} + sum_k e^{z_k})
 * All arithmetic after the logits is exact enough for the bounds below: the sums are blocked
 * f32 lanes combined in double, exp is normkit's own (max error stated in docs/ops/softmax.md,
 * identical bits on every ISA).
 *
 * Accuracy (tested): f32 softmax within 2e-6 * max|reference| of the row (with a sink, the
 * max includes the sink's share e^{s_i - lse_i}; outputs in the f32 subnormals within 2^-148),
 * log_softmax within 2e-6 * max(1, |lse|) + 1 ulp of y (values far below lse are as exact as
 * f32 holds them), bf16/f16 within 1 ulp of the correctly rounded float64 reference of
 * the same f32 logits z (the rounding of z itself is the caller's: see above). bf16/f16
 * log_softmax with the two-pass or online algorithm: 1 ulp + 2e-6 * max(1, |lse|) (values near
 * 0 come from z - lse, whose f32 error is absolute; the three-pass algorithms and AUTO keep the
 * 1-ulp bound).
 *
 * Edge cases (tested):
 * - rows == 0 or cols == 0: nothing is read or written; OK.
 * - -inf logits (from x, the mask or causality) contribute exactly 0 and get y = 0
 *   (log_softmax: -inf). Finite logits of any size, up to +-FLT_MAX, never overflow.
 * - A fully masked row (every z = -inf, no sink): softmax y = 0, log_softmax y = -inf, lse =
 *   -inf, and zero gradient in the backward. With NK_SOFTMAX_MASKED_NAN: NaN, as PyTorch
 *   (0/0). With a sink the row is well defined: y = 0 (log: -inf), lse = s_i.
 * - A row with a NaN or +inf logit (or a NaN/+inf sink): every output of the row is NaN
 *   (the canonical quiet NaN 0x7FC00000; lse NaN); other rows are untouched.
 * - cols == 1: softmax y = 1 (with a sink e^z/(e^s+e^z)); log_softmax y = 0 (exactly with
 *   the three-pass algorithms, which AUTO uses for such rows; the two-pass and online
 *   algorithms meet the bounds but carry exp's rounding into the dominant term).
 */

/* Algorithms (docs/ops/softmax.md): every one computes the same function; results differ
 * only in the last bits, and the two three-pass variants give identical bits. NK_SOFTMAX_AUTO
 * picks a three-pass variant by the sizes only (reload for f32 outputs under 64 MiB, recompute
 * otherwise), never by the ISA or the thread count, so AUTO results are the same bits as
 * either three-pass algorithm's. */
typedef enum nk_softmax_algo {
  NK_SOFTMAX_AUTO = 0,
  NK_SOFTMAX_THREE_PASS_RELOAD = 1,    /* max; exp stored to y and summed; y scaled in place.
                                          Needs y in f32 (UNSUPPORTED otherwise). */
  NK_SOFTMAX_THREE_PASS_RECOMPUTE = 2, /* max; sum of exp; exp again, scaled, stored */
  NK_SOFTMAX_TWO_PASS = 3,             /* Dukhan & Ablavatski: (mantissa, exponent) sums, no
                                          max pass; then exp again, scaled, stored */
  NK_SOFTMAX_ONLINE = 4,               /* Milakov & Gimelshein: running max with rescaling */
  NK_SOFTMAX_ALGO_COUNT
} nk_softmax_algo;

/* "auto", "three_pass_reload", "three_pass_recompute", "two_pass", "online"; "?". */
NK_API const char *nk_softmax_algo_name(nk_softmax_algo algo);

/* Flags for nk_softmax_desc.flags. */
#define NK_SOFTMAX_LOG 0x1u        /* log_softmax instead of softmax (fwd and bwd) */
#define NK_SOFTMAX_CAUSAL 0x2u     /* z_j = -inf for j > p_i (see above) */
#define NK_SOFTMAX_MASKED_NAN 0x4u /* fully masked rows give NaN (PyTorch) instead of 0/-inf */
#define NK_SOFTMAX_SINK_PER_HEAD 0x8u /* sink holds `heads` values, else one per row */

typedef struct nk_softmax_desc {
  size_t rows;            /* number of rows */
  size_t cols;            /* elements per row (the normalized dimension) */
  nk_dtype dtype;         /* x, y, dy, dx */
  nk_dtype mask_dtype;    /* the additive mask: f32, bf16 or f16 */
  float scale;            /* logits multiplier (1/temperature, 1/sqrt(d_head)); finite, != 0 */
  float alibi;            /* ALiBi slope; 0 = none. Finite. For per-head slopes, call per head
                             (or per block of rows sharing a slope). Positions are exact to
                             2^24; with ALiBi, cols must be < 2^31 (else UNSUPPORTED). */
  uint32_t flags;         /* NK_SOFTMAX_* */
  nk_softmax_algo algo;   /* forward algorithm; NK_SOFTMAX_AUTO recommended */
  size_t q_len;           /* rows per (batch, head) block for positions and heads; 0 = rows */
  size_t heads;           /* heads, for a per-head sink; 0 = 1 */
  ptrdiff_t causal_offset;/* position of query 0 (kv_len - q_len for a KV cache); the
                             query position is causal_offset + i % q_len, may be negative */
  size_t mask_rows;       /* rows of the mask; row i uses mask row i % mask_rows (1 =
                             one row broadcast to all rows); 0 = rows */
  ptrdiff_t x_stride;     /* row strides in elements, each >= cols */
  ptrdiff_t y_stride;
  ptrdiff_t mask_stride;  /* >= cols (ignored when mask_rows == 1) */
  ptrdiff_t dy_stride;    /* bwd */
  ptrdiff_t dx_stride;    /* bwd */
} nk_softmax_desc;

/* A dense descriptor: strides = cols, scale 1, mask f32, everything else 0 (no mask options,
 * AUTO). Any field may be changed afterwards. */
NK_API nk_softmax_desc nk_softmax_desc_dense(size_t rows, size_t cols, nk_dtype dtype);

/* Softmax / log-softmax forward (NK_SOFTMAX_LOG).
 *   x     IN  rows x cols logits, x_stride.
 *   mask  IN  optional additive mask, mask_rows x cols of mask_dtype, mask_stride. -inf masks.
 *   sink  IN  optional sink logits (f32): rows values, or heads with NK_SOFTMAX_SINK_PER_HEAD.
 *   y     OUT rows x cols, y_stride. May be x itself (same pointer and stride).
 *   lse   OUT optional, rows floats: log of the denominator (in units of z), for the
 *             backward's sink gradient and for callers that combine partial softmaxes.
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED (reload with a 16-bit y). */
NK_API nk_status nk_softmax_fwd(nk_context *ctx, const nk_softmax_desc *desc, const void *x,
                                const void *mask, const float *sink, void *y, float *lse);
/* The same for rows [row_begin, row_end) on the calling thread (results bit-identical). */
NK_API nk_status nk_softmax_fwd_rows(nk_context *ctx, const nk_softmax_desc *desc,
                                     size_t row_begin, size_t row_end, const void *x,
                                     const void *mask, const float *sink, void *y, float *lse);

/* Softmax / log-softmax backward from the saved output y and the upstream gradient dy:
 *   softmax:      dx_j = scale * y_j * (dy_j - sum_k dy_k y_k)
 *   log_softmax:  dx_j = scale * (dy_j - e^{y_j} * sum_k dy_k)
 * (the mask and ALiBi terms are constants; they need not be passed again).
 *   dx    OUT rows x cols, dx_stride; may be dy itself or y itself.
 *   dsink OUT optional, rows floats: the gradient of each row's sink logit,
 *             -p0_i * sum_k dy_k y_k (softmax) or -p0_i * sum_k dy_k (log), p0_i = e^{s_i - lse_i};
 *             needs sink and lse. For a per-head sink, sum the rows of each head.
 * Fully masked rows (softmax: y = 0; log_softmax: every y = -inf) get dx = 0. (With
 * NK_SOFTMAX_MASKED_NAN the forward wrote NaN into such rows, and a NaN y gives a NaN dx.)
 * Flags read: NK_SOFTMAX_LOG, NK_SOFTMAX_MASKED_NAN, NK_SOFTMAX_SINK_PER_HEAD; scale.
 * Returns OK, INVALID_ARGUMENT. */
NK_API nk_status nk_softmax_bwd(nk_context *ctx, const nk_softmax_desc *desc, const void *y,
                                const void *dy, const float *sink, const float *lse, void *dx,
                                float *dsink);
NK_API nk_status nk_softmax_bwd_rows(nk_context *ctx, const nk_softmax_desc *desc,
                                     size_t row_begin, size_t row_end, const void *y,
                                     const void *dy, const float *sink, const float *lse,
                                     void *dx, float *dsink);

/* The kernel the forward runs for this descriptor (its algorithm, dtype and the context's
 * ISA), e.g. "nk_f32_softmax_fwd__avx512_two_pass"; NULL for an invalid request. */
NK_API const char *nk_softmax_kernel_name(const nk_context *ctx, const nk_softmax_desc *desc);

/* Sigmoid attention scores without normalization (Gu et al. 2024, the sink-free alternative):
 * y_j = sigmoid(z_j) with z_j formed as above (masked and causal entries give 0); backward
 * dx_j = scale * dy_j * y_j * (1 - y_j). Flags read: NK_SOFTMAX_CAUSAL; the algo, sink and
 * log fields are ignored. y may be x; dx may be dy or y. */
NK_API nk_status nk_sigmoid_attn_fwd(nk_context *ctx, const nk_softmax_desc *desc,
                                     const void *x, const void *mask, void *y);
NK_API nk_status nk_sigmoid_attn_bwd(nk_context *ctx, const nk_softmax_desc *desc,
                                     const void *y, const void *dy, void *dx);

/* Fused softmax cross-entropy (PyTorch's cross_entropy with class indices):
 *   per row i with target t_i:  L_i = lse(z_i) (z = x, no scale or mask),
 *   loss_i = (1 - ls) * (L_i - z_{i,t}) + ls * (L_i - mean_j z_{i,j}) + zloss * L_i^2,
 * ls the label smoothing, zloss the z-loss coefficient (PaLM). Rows whose target is
 * ignore_index give loss 0 and dlogits 0 and are not counted.
 *   reduction none: loss[i] = loss_i (rows floats); sum: loss[0] = sum; mean: loss[0] =
 *   sum / (number of counted rows) (NaN when none is counted, as PyTorch).
 *   dlogits (optional; NULL = forward only) = grad * d(reduced loss)/dx:
 *     (softmax_j * (1 + 2 zloss L_i) - (1 - ls) [j == t_i] - ls / cols) * grad * w,
 *     w = 1 (none, sum) or 1 / counted rows (mean).
 * Two passes over the logits (two-pass softmax sums; no probabilities stored), one write.
 * dlogits may be x itself (in place). Sums over rows are in double, in row order: the
 * result is bit-identical for every thread count and ISA. Range: the factor
 * grad * w * (1 + 2 zloss L_i) is an f32 intermediate; where it overflows (z-loss with
 * |L_i| near 1e38 / zloss, or a huge grad) elements with softmax_j > 0 get +-inf and elements
 * with softmax_j == 0 get their finite value (never 0 * inf = NaN). */
typedef enum nk_reduction {
  NK_REDUCTION_NONE = 0,
  NK_REDUCTION_SUM = 1,
  NK_REDUCTION_MEAN = 2,
} nk_reduction;

typedef struct nk_cross_entropy_desc {
  size_t rows;             /* tokens */
  size_t cols;             /* classes (vocabulary), no upper limit */
  nk_dtype dtype;          /* logits and dlogits */
  nk_reduction reduction;
  int64_t ignore_index;    /* PyTorch's default is -100 */
  float label_smoothing;   /* in [0, 1] */
  float z_loss;            /* >= 0, finite; 0 = off */
  float grad;              /* upstream gradient of the (reduced) loss; 1 for loss.backward() */
  ptrdiff_t x_stride;
  ptrdiff_t dx_stride;
} nk_cross_entropy_desc;

/* Dense defaults: strides = cols, reduction mean, ignore_index -100, grad 1, no smoothing. */
NK_API nk_cross_entropy_desc nk_cross_entropy_desc_dense(size_t rows, size_t cols,
                                                         nk_dtype dtype);

/* Bytes of workspace nk_cross_entropy needs (sum/mean: rows doubles plus NK_WORKSPACE_ALIGN;
 * reduction none: 0). */
NK_API nk_status nk_cross_entropy_workspace_size(const nk_cross_entropy_desc *desc,
                                                 size_t *bytes);

/*   x        IN  rows x cols logits.
 *   target   IN  rows class indices in [0, cols), or ignore_index (anything else is
 *                INVALID_ARGUMENT, found before anything is written).
 *   loss     OUT rows floats (none) or 1 float (sum, mean).
 *   dlogits  OUT optional, rows x cols, dx_stride; may be x.
 *   lse      OUT optional, rows floats (ignored rows included).
 * Returns OK, INVALID_ARGUMENT, MISUSE (workspace too small). */
NK_API nk_status nk_cross_entropy(nk_context *ctx, const nk_cross_entropy_desc *desc,
                                  const void *x, const int64_t *target, float *loss,
                                  void *dlogits, float *lse, void *workspace,
                                  size_t workspace_size);

/* ------------------------------------------------------------------------------------------ */
/* Moments: (count, mean, M2), stable and mergeable                                            */
/* ------------------------------------------------------------------------------------------ */
/*
 * The statistics engine under every channel norm and the distributed and test-time statistics:
 * count n, mean, and M2 = sum((t - mean)^2), all in double. Partial moments of disjoint parts of
 * a data set merge exactly in real arithmetic with Chan's formula (nk_moments_merge); finalize
 * with nk_moments_finalize. NaN or +-inf anywhere in the data makes mean and M2 NaN.
 *
 * How normkit computes moments (docs/ops/moments.md; the same on every ISA and thread count):
 * data are cut into blocks (NK_MOMENTS_BLOCK = 1024 consecutive elements of a contiguous run,
 * or NK_MOMENTS_BLOCK_ROWS = 32 rows of a column); each block's moments come from a corrected
 * two-pass in f32 lanes (mean estimate m, then sums of d = t - m and d^2), or from double
 * arithmetic when the f32 sums overflow or underflow; blocks are merged with Chan's formula in
 * a fixed order, then fixed chunks in chunk order. Accuracy, for every finite input: mean within
 * 5e-7 of the standard deviation (+ 4 double eps |mean|), M2 within 2e-6 M2 of the exact
 * values; typical data stay within a few units of 1e-7. The M2 bound is the worst case of a
 * block's f32 sum of squared deviations: up to 32 terms in one accumulator (a column block;
 * 16 per lane and 6 tree levels in a run), each addition rounding by up to 2^-24 relative (a
 * 70-row bf16 column of values ~1e-30 with one -70144 was 1.5e-6 off; found by the moments
 * fuzz harness). Splitting a data set any other way and merging agrees within that bound
 * (tested); the
 * library's own split is a function of the sizes only, so its results are bit-identical.
 */
typedef struct nk_moments {
  double count; /* number of elements (exact up to 2^53) */
  double mean;
  double m2;    /* sum of squared deviations from the mean, >= 0 */
} nk_moments;

#define NK_MOMENTS_BLOCK 1024
#define NK_MOMENTS_BLOCK_ROWS 32

/* acc <- acc merged with b (Chan et al.): n = na + nb, delta = mb - ma,
 * mean = ma + delta * nb / n, M2 = M2a + M2b + delta^2 * na * nb / n. An empty side (count 0)
 * leaves the other unchanged (bit for bit). NULL arguments are a no-op. */
NK_API void nk_moments_merge(nk_moments *acc, const nk_moments *b);
/* dst[i] <- dst[i] merged with src[i] for i < n: the elementwise form (all-reduce steps). */
NK_API void nk_moments_merge_n(size_t n, nk_moments *dst, const nk_moments *src);

/* From moments to statistics; any output may be NULL:
 *   mean      = m.mean (rounded to f32)
 *   var       = M2 / n           (biased: what normalization uses)
 *   var_unbiased = M2 / (n - 1)  (what running estimates use)
 *   rstd      = 1 / sqrt(var + eps)   (double, rounded to f32)
 * eps must be finite and >= 0. count 0 gives NaN for all four; count 1 gives var_unbiased
 * NaN (normkit's BatchNorm reports INVALID_ARGUMENT before it gets there, as PyTorch refuses).
 * Returns OK or INVALID_ARGUMENT (m NULL, bad eps). */
NK_API nk_status nk_moments_finalize(const nk_moments *m, float eps, float *mean, float *var,
                                     float *var_unbiased, float *rstd);

/* Moments of each row of a rows x cols tensor (over its cols elements). OUT out[rows].
 * Rows are cut into blocks of NK_MOMENTS_BLOCK elements merged in order. Threads split rows.
 * Returns OK, INVALID_ARGUMENT. rows or cols == 0: out gets count 0 (when rows > 0). */
NK_API nk_status nk_moments_rows(nk_context *ctx, size_t rows, size_t cols, nk_dtype dtype,
                                 const void *x, ptrdiff_t x_stride, nk_moments *out);
/* Moments of each column of a rows x cols tensor (over its rows). OUT out[cols]. Rows are cut
 * into blocks of NK_MOMENTS_BLOCK_ROWS from row 0, merged in order; threads split the columns
 * (in tiles of 512), which changes nothing in the results. Returns OK, INVALID_ARGUMENT. */
NK_API nk_status nk_moments_cols(nk_context *ctx, size_t rows, size_t cols, nk_dtype dtype,
                                 const void *x, ptrdiff_t x_stride, nk_moments *out);

/* Row norms with the statistics given as moments, for tensor parallelism: each rank holds a
 * slice of the columns; merge the ranks' nk_moments_rows results over the row (in rank
 * order), then normalize the local slice with them. moments: rows entries, each over the whole
 * row. LayerNorm uses mean and var = M2 / count; RMSNorm the mean square
 * (M2 + count * mean^2) / count. desc: rows, cols (the local slice), dtype, param_dtype, eps,
 * flags (NK_NORM_GAMMA_OFFSET only), x_stride, y_stride; gamma/beta hold the local slice;
 * lns_scale must be 0 (LayerNorm Scaling: fold it into gamma/beta; UNSUPPORTED otherwise).
 * Arithmetic as the channel norms' normalize pass (xhat = fmaf(x - mean_hi, rstd,
 * -(mean - mean_hi) rstd), y = fmaf(xhat, g, b); the low part enters multiplied by rstd, so
 * subnormal data keep their spread); a LayerNorm row with |mean| >= 2^100 is centred in double
 * instead (xhat = (float)((x - mean) * rstd)): values near +-FLT_MAX do not overflow. Accuracy: the
 * LayerNorm/RMSNorm bounds (section "Row norms"), max|reference| taken over the whole row the
 * moments describe. mean/rstd OUT optional (rows floats). y may be x.
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED. */
NK_API nk_status nk_layernorm_fwd_moments(nk_context *ctx, const nk_layernorm_desc *desc,
                                          const nk_moments *moments, const void *x,
                                          const void *gamma, const void *beta, void *y,
                                          float *mean, float *rstd);
NK_API nk_status nk_rmsnorm_fwd_moments(nk_context *ctx, const nk_rmsnorm_desc *desc,
                                        const nk_moments *moments, const void *x,
                                        const void *gamma, const void *beta, void *y,
                                        float *rstd);

/* ------------------------------------------------------------------------------------------ */
/* Channel norms: BatchNorm, GroupNorm, InstanceNorm                                           */
/* ------------------------------------------------------------------------------------------ */
/*
 * A tensor of N samples, C channels and S spatial positions (S = H*W, or 1 for an N x C
 * tensor), in one of two layouts:
 *   NK_LAYOUT_NCS (NCHW): sample n is C rows of S elements: x[n*n_stride + c*row_stride + s]
 *   NK_LAYOUT_NSC (NHWC): sample n is S rows of C elements: x[n*n_stride + s*row_stride + c]
 * (an N x C tensor is either layout with S = 1). row_stride >= the row length (S or C) and
 * n_stride >= (rows - 1) * row_stride + row length; strides are in elements.
 *
 * BatchNorm (spec layers.md 14.1; PyTorch semantics): statistics per channel over the N*S
 * elements of that channel: mean, biased var, rstd = 1/sqrt(var + eps);
 *   y = ((x - mean) * rstd) * g_c + b_c,  with g = gamma (1 if NULL) and b = beta (0 if NULL).
 *   Training (NK_CHNORM_TRAINING): batch statistics; running estimates updated in place:
 *     running_mean = (1 - m) * running_mean + m * mean,
 *     running_var  = (1 - m) * running_var  + m * var * M / (M - 1)   (M = N*S; unbiased),
 *     with m = momentum, or m = 1 / num_batches_tracked (after its increment) with
 *     NK_CHNORM_CUMULATIVE (PyTorch's momentum=None). M == 1 is INVALID_ARGUMENT (PyTorch:
 *     "expected more than 1 value per channel"). Update in double, rounded to f32.
 *   Inference (no TRAINING flag): y with the running statistics (required).
 *   Fused activation (oneDNN's fused ReLU): NK_CHNORM_RELU gives y = relu(bn(x));
 *   NK_CHNORM_ADD_RELU gives y = relu(bn(x) + z) for a second input z (f32 add, then relu).
 *   relu(v) = v < 0 ? 0 : v (NaN stays NaN).
 * GroupNorm (14.2): G groups of C/G consecutive channels; statistics per (sample, group) over
 *   (C/G)*S elements; affine per channel. No running state. C % G != 0 is INVALID_ARGUMENT.
 * InstanceNorm (14.3): GroupNorm with G = C, plus optional running statistics (PyTorch's
 *   track_running_stats): with NK_CHNORM_TRAINING and running buffers given, they are updated
 *   with the mean over samples of the instance means and of the unbiased instance variances
 *   (S == 1 is then INVALID_ARGUMENT); without NK_CHNORM_TRAINING and with running buffers,
 *   the running statistics normalize (as BatchNorm inference); without running buffers the
 *   instance statistics always normalize (PyTorch's default).
 *
 * Arithmetic (every ISA, every thread count, same bits; docs/ops/batchnorm.md):
 * statistics are nk_moments (blocks of f32 lanes merged in double, fixed chunks); the mean is
 * split into mean_hi = (float)mean and a low part that enters multiplied by rstd,
 * mlr = (float)((mean - mean_hi) * rstd) in double, and
 *   xhat = fmaf(x - mean_hi, rstd, -mlr);  y = fmaf(xhat, g, b)   [+ z, relu]
 * so ill-conditioned channels (mean 1e4, std 1e-2) and sets of subnormal data (whose low part,
 * as an f32, would sit on the subnormal grid: found by the chnorm fuzz harness) normalize to
 * f32 accuracy. Accuracy
 * (tested): f32 outputs within 2e-6 * max|reference| of the channel (group) (with beta:
 * max(|y|, |y - beta|), as the row norms, since y = fmaf(xhat, g, b) keeps xhat's rounding
 * when beta cancels it; found by the chnorm fuzz harness); bf16/f16 within
 * 1 ulp of the correctly rounded reference plus that f32 bound (which matters only for outputs
 * far below the set's largest, such as f16 subnormals); f32 outputs in the subnormals within
 * 2^-148 more. The bounds hold for every finite input: a set whose mean is 2^102 or more in
 * magnitude (where x - mean could overflow f32) is normalized at half scale,
 * xhat = fmaf(x/2 - mean_hi/2, 2 rstd, -mlr), the same value without the overflow (found
 * by the chnorm fuzz harness; inference uses the running mean the same way). One limit: with
 * running statistics (inference), xhat = (x - running_mean) * rstd is an f32 value before the
 * affine map, so where |xhat| exceeds FLT_MAX (x near FLT_MAX with rstd > 1) y is +-inf even
 * when |gamma| < 1 would bring it back into range (open; batch statistics always give
 * |xhat| <= sqrt(count)). The inference backward does not form xhat (dx = dy gamma rstd).
 *
 * dtypes: x, z, y, dy, dx, dz hold `dtype`; gamma, beta, dgamma, dbeta hold `param_dtype`
 * (F32 or == dtype); running statistics, saved mean/rstd are always f32.
 *
 * Edge cases (tested): N, C or S == 0: nothing is read or written, OK. A constant channel
 * (group) normalizes to exactly 0 before the affine map, with finite gradients. NaN or +-inf in
 * a channel's (group's) data makes that channel's (group's) outputs, saved statistics and
 * running statistics NaN; other channels are untouched. One element per channel in BatchNorm
 * training: INVALID_ARGUMENT (see above).
 *
 * Aliasing: y may be x (or z); dx may be dy or x; dz may be dy. Other overlaps of an output
 * with any buffer are INVALID_ARGUMENT.
 */

typedef enum nk_layout {
  NK_LAYOUT_NCS = 0, /* NCHW: channel rows of S contiguous elements */
  NK_LAYOUT_NSC = 1, /* NHWC (and N x C): spatial rows of C contiguous channels */
} nk_layout;

/* "nchw", "nhwc"; "?" otherwise. */
NK_API const char *nk_layout_name(nk_layout layout);

/* Flags for nk_chnorm_desc.flags. */
#define NK_CHNORM_TRAINING 0x1u   /* batch (instance) statistics; update running statistics */
#define NK_CHNORM_CUMULATIVE 0x2u /* running update with m = 1/num_batches_tracked */
#define NK_CHNORM_RELU 0x4u       /* BatchNorm: y = relu(bn(x)) */
#define NK_CHNORM_ADD_RELU 0x8u   /* BatchNorm: y = relu(bn(x) + z) */
#define NK_CHNORM_ACCUMULATE 0x10u /* backward: dgamma/dbeta += gradient (default overwrite) */

typedef struct nk_chnorm_desc {
  size_t batch;          /* N */
  size_t channels;       /* C */
  size_t spatial;        /* S (1 for an N x C tensor) */
  size_t groups;         /* GroupNorm: G, divides C. Ignored by BatchNorm and InstanceNorm. */
  nk_layout layout;
  nk_dtype dtype;        /* x, z, y, dy, dx, dz */
  nk_dtype param_dtype;  /* gamma, beta, dgamma, dbeta: F32 or == dtype */
  float eps;             /* > 0, finite */
  float momentum;        /* running update factor in [0, 1] (PyTorch default 0.1) */
  uint32_t flags;        /* NK_CHNORM_* */
  ptrdiff_t x_n_stride, x_row_stride;
  ptrdiff_t z_n_stride, z_row_stride;   /* ADD_RELU's second input */
  ptrdiff_t y_n_stride, y_row_stride;
  ptrdiff_t dy_n_stride, dy_row_stride;
  ptrdiff_t dx_n_stride, dx_row_stride;
  ptrdiff_t dz_n_stride, dz_row_stride; /* ADD_RELU's gradient into z */
} nk_chnorm_desc;
typedef nk_chnorm_desc nk_batchnorm_desc;
typedef nk_chnorm_desc nk_groupnorm_desc;
typedef nk_chnorm_desc nk_instancenorm_desc;

/* Dense descriptor: strides of a contiguous tensor of this layout, param_dtype F32, groups 1,
 * momentum 0.1, flags 0 (inference). Any field may be changed afterwards. */
NK_API nk_chnorm_desc nk_chnorm_desc_dense(size_t batch, size_t channels, size_t spatial,
                                           nk_layout layout, nk_dtype dtype, float eps);

/* Per-channel moments of x over its N*S elements: the partial-moment step of synchronized
 * BatchNorm (merge the ranks' results with nk_moments_merge_n in rank order, then call
 * nk_batchnorm_fwd_moments). OUT out[C]. Bit-identical to what nk_batchnorm_fwd computes.
 * Workspace: nk_batchnorm_fwd_workspace_size of the descriptor with NK_CHNORM_TRAINING set
 * (the flag itself does not matter here). Returns OK, INVALID_ARGUMENT, MISUSE. */
NK_API nk_status nk_batchnorm_moments(nk_context *ctx, const nk_batchnorm_desc *desc,
                                      const void *x, nk_moments *out, void *workspace,
                                      size_t workspace_size);

/* Bytes of workspace nk_batchnorm_fwd and nk_batchnorm_moments need (0 for inference).
 * A function of the sizes, layout and flags. */
NK_API nk_status nk_batchnorm_fwd_workspace_size(const nk_batchnorm_desc *desc, size_t *bytes);

/* BatchNorm forward.
 *   x             IN  the input.
 *   z             IN  ADD_RELU's second input (else must be NULL).
 *   gamma, beta   IN  optional, C elements of param_dtype.
 *   running_mean, running_var  IN/OUT (training: optional, both or neither; updated in place)
 *                 IN (inference: required). C floats each.
 *   num_batches_tracked  IN/OUT optional (required with NK_CHNORM_CUMULATIVE): incremented
 *                 when running statistics are updated.
 *   y             OUT the output.
 *   save_mean, save_rstd  OUT optional, C floats (training: batch mean and rstd, as PyTorch's
 *                 save_mean/save_invstd; inference: the running mean and its rstd).
 *   workspace     nk_batchnorm_fwd_workspace_size bytes (training).
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED (dtype combination), MISUSE (workspace). */
NK_API nk_status nk_batchnorm_fwd(nk_context *ctx, const nk_batchnorm_desc *desc, const void *x,
                                  const void *z, const void *gamma, const void *beta,
                                  float *running_mean, float *running_var,
                                  int64_t *num_batches_tracked, void *y, float *save_mean,
                                  float *save_rstd, void *workspace, size_t workspace_size);

/* BatchNorm training forward with statistics given as moments (C of them, e.g. merged over
 * ranks): normalizes x with them, updates the running statistics with count = moments' count,
 * writes save_mean/save_rstd. Needs NK_CHNORM_TRAINING. No workspace. nk_batchnorm_fwd equals
 * nk_batchnorm_moments followed by this, bit for bit. A local batch with N or S == 0 (a rank
 * without samples) is valid here: x, z, y are not read or written, but the statistics and the
 * running estimates are (every rank then holds the same). */
NK_API nk_status nk_batchnorm_fwd_moments(nk_context *ctx, const nk_batchnorm_desc *desc,
                                          const nk_moments *moments, const void *x,
                                          const void *z, const void *gamma, const void *beta,
                                          float *running_mean, float *running_var,
                                          int64_t *num_batches_tracked, void *y,
                                          float *save_mean, float *save_rstd);

/* Bytes of workspace nk_batchnorm_bwd and nk_batchnorm_bwd_reduce need. */
NK_API nk_status nk_batchnorm_bwd_workspace_size(const nk_batchnorm_desc *desc, size_t *bytes);

/* BatchNorm backward.
 *   x          IN  the forward input.
 *   y          IN  the forward output (needed with RELU/ADD_RELU for the mask, else NULL ok).
 *   gamma      IN  optional (1 if NULL).
 *   save_mean, save_rstd  IN  from the training forward (training) or, in inference mode, the
 *              running mean and rstd (save_mean/save_rstd of an inference forward).
 *   dy         IN  upstream gradient.
 *   dx         OUT gradient w.r.t. x. Training: (g_c r/M)(M dy' - sum dy' - xhat sum(dy' xhat));
 *              inference: dy' * g_c * r. dy' = (y <= 0 ? 0 : dy) with RELU/ADD_RELU (as
 *              PyTorch's threshold_backward: a NaN y passes the gradient).
 *   dz         OUT ADD_RELU: gradient w.r.t. z (= dy'); optional.
 *   dgamma, dbeta  OUT optional, C elements: sum(dy' xhat), sum(dy'); overwritten, or
 *              accumulated with NK_CHNORM_ACCUMULATE.
 * The mean's low part lost to the f32 save_mean is recomputed (xhat is exact to f32).
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED, MISUSE. */
NK_API nk_status nk_batchnorm_bwd(nk_context *ctx, const nk_batchnorm_desc *desc, const void *x,
                                  const void *y, const void *gamma, const float *save_mean,
                                  const float *save_rstd, const void *dy, void *dx, void *dz,
                                  void *dgamma, void *dbeta, void *workspace,
                                  size_t workspace_size);

/* The two halves of the training backward, for synchronized BatchNorm:
 * nk_batchnorm_bwd_reduce writes sums[3*c + k] for each channel c, over the local elements:
 *   k = 0: sum dy',  k = 1: sum dy' * (x - save_mean),  k = 2: sum (x - save_mean)
 * (double, fixed chunks). Add the ranks' sums elementwise in rank order, then
 * nk_batchnorm_bwd_apply computes dx (and dz, dgamma, dbeta) with count = the total number of
 * elements per channel over all ranks. nk_batchnorm_bwd is exactly these two on one process.
 * On a local batch with N or S == 0 (a rank without samples), reduce writes zero sums and
 * apply reads and writes no tensor but still writes dgamma/dbeta from the summed sums (every
 * rank then holds the same parameter gradients). */
NK_API nk_status nk_batchnorm_bwd_reduce(nk_context *ctx, const nk_batchnorm_desc *desc,
                                         const void *x, const void *y, const float *save_mean,
                                         const void *dy, double *sums, void *workspace,
                                         size_t workspace_size);
NK_API nk_status nk_batchnorm_bwd_apply(nk_context *ctx, const nk_batchnorm_desc *desc,
                                        double count, const double *sums, const void *x,
                                        const void *y, const void *gamma,
                                        const float *save_mean, const float *save_rstd,
                                        const void *dy, void *dx, void *dz, void *dgamma,
                                        void *dbeta);

/* Folds inference BatchNorm into a per-channel scale and shift (y = x * scale + shift):
 * scale = g * r, shift = b - mean * g * r with r = 1/sqrt(var + eps), in double, rounded to f32.
 * gamma/beta optional (f32). And into a preceding linear/conv layer whose output channel c is
 * row c of weight (C rows x k, row stride k) with optional bias: weight[c][:] *= scale_c,
 * bias_out_c = (bias_c - mean_c) * g r + b (bias NULL: treated as 0); bias_out (C floats) is
 * always required. Accuracy (tests/ops/batchnorm.c): scale and weight within 1 ulp of the
 * float64 result; shift and bias_out within 1 ulp plus 1e-12 (|b| + |m| |g r|), m = mean_c
 * (fold) or bias_c - mean_c (fold_linear).
 * Aliasing: an output may be the very same array as ONE per-channel input — scale = gamma and
 * shift = beta (the norm's own affine overwritten), bias_out = bias (or beta, running_mean ...);
 * each channel reads its inputs before it writes. Any other overlap (partial, scale with shift,
 * weight with anything) is INVALID_ARGUMENT; so are pointers not aligned to 4 bytes and sizes
 * whose bytes overflow (channels x k included). No context: a failure has only its status.
 * eps is checked first (a channels == 0 call with a bad eps fails); then channels == 0 is a
 * no-op; k == 0 (weight may be NULL) still writes bias_out.
 * Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_batchnorm_fold(size_t channels, float eps, const float *running_mean,
                                   const float *running_var, const float *gamma,
                                   const float *beta, float *scale, float *shift);
NK_API nk_status nk_batchnorm_fold_linear(size_t channels, size_t k, float eps,
                                          const float *running_mean, const float *running_var,
                                          const float *gamma, const float *beta, float *weight,
                                          const float *bias, float *bias_out);

/* GroupNorm forward. mean, rstd: OUT optional, N*G floats ([n][g]). y may be x. Flags: only
 * NK_CHNORM_TRAINING (ignored: GroupNorm always uses the sample's statistics) and, in the
 * backward, NK_CHNORM_ACCUMULATE; others are INVALID_ARGUMENT.
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED. No workspace. */
NK_API nk_status nk_groupnorm_fwd(nk_context *ctx, const nk_groupnorm_desc *desc, const void *x,
                                  const void *gamma, const void *beta, void *y, float *mean,
                                  float *rstd);
NK_API nk_status nk_groupnorm_bwd_workspace_size(const nk_groupnorm_desc *desc, size_t *bytes);
/* GroupNorm backward: dx (exact formula, spec 14.2), dgamma/dbeta per channel (optional;
 * overwritten or accumulated). mean, rstd from the forward. dx may be dy or x. */
NK_API nk_status nk_groupnorm_bwd(nk_context *ctx, const nk_groupnorm_desc *desc, const void *x,
                                  const void *gamma, const float *mean, const float *rstd,
                                  const void *dy, void *dx, void *dgamma, void *dbeta,
                                  void *workspace, size_t workspace_size);

/* InstanceNorm forward (see above for the running statistics). mean, rstd: OUT optional,
 * N*C floats ([n][c]) of the statistics used (the running ones broadcast in inference with
 * running statistics). running_mean/var: both or neither, C floats. */
NK_API nk_status nk_instancenorm_fwd(nk_context *ctx, const nk_instancenorm_desc *desc,
                                     const void *x, const void *gamma, const void *beta,
                                     float *running_mean, float *running_var, void *y,
                                     float *mean, float *rstd);
NK_API nk_status nk_instancenorm_bwd_workspace_size(const nk_instancenorm_desc *desc,
                                                    size_t *bytes);
/* InstanceNorm backward. With NK_CHNORM_TRAINING, or when the forward used instance
 * statistics (use_running = 0), the GroupNorm backward with G = C; with use_running != 0 the
 * statistics were constants: dx = dy * g * rstd. mean/rstd as written by the forward.
 * use_running decides (NK_CHNORM_TRAINING is then ignored). Flags: TRAINING and ACCUMULATE
 * only (InstanceNorm has no NK_CHNORM_CUMULATIVE: its running update always uses momentum). */
NK_API nk_status nk_instancenorm_bwd(nk_context *ctx, const nk_instancenorm_desc *desc,
                                     int use_running, const void *x, const void *gamma,
                                     const float *mean, const float *rstd, const void *dy,
                                     void *dx, void *dgamma, void *dbeta, void *workspace,
                                     size_t workspace_size);

/* ------------------------------------------------------------------------------------------ */
/* Test-time statistics: alpha-BN, UnMix-TNS, AdaB2N                                           */
/* ------------------------------------------------------------------------------------------ */
/*
 * The statistics that test-time adaptation and continual-learning BatchNorm variants feed to a
 * BatchNorm layer (spec stats-optim-rl.md Part A; docs/ops/test-time.md). The inputs are
 * statistics, not tensors: the caller computes moments from its activations (a B x C x L
 * tensor; L = H*W, or 1 for an N x C tensor) with the moments functions above, and these
 * functions apply the methods' update rules to them:
 *   per-channel batch moments:  C nk_moments, entry c over the B*L elements of channel c;
 *   per-instance moments:       B*C nk_moments laid out [b][c] (entry b*C + c over the L
 *                               elements of sample b, channel c; the "instance statistics").
 * What comes out (mean/var per channel or per instance and channel) is what the caller
 * normalizes with: y = gamma (x - mean) / sqrt(var + eps_bn) + beta (nk_batchnorm_fwd in
 * inference mode takes per-channel mean/var as its running statistics).
 *
 * Arithmetic: every rule is evaluated in double from the given values (float state widened
 * exactly); results stored in float buffers are rounded once to f32, results in double
 * buffers are not rounded. State arrays (component and running statistics) are float, as
 * PyTorch's buffers; scalar state (eta) is double. Single-threaded, no kernels, no ISA
 * dependence: the same bits on every machine with the same libm (exp, pow, log, cos, sin).
 * The context is used for its message only.
 *
 * Conventions of this section:
 * - Variances are biased (M2 / count) unless a function says otherwise.
 * - Every nk_moments entry read must have count >= 1 (>= 2 where a function takes the
 *   unbiased variance) and finite, and m2 >= 0 or NaN: anything else is INVALID_ARGUMENT.
 *   Data values are not policed otherwise: NaN or +-inf in a mean or m2 gives NaN in what
 *   depends on it (see each function).
 * - Validation (sizes, NULLs, parameters, moments' counts, task ids) is done in full before
 *   anything is written: on failure no output and no state is changed.
 * - No output (state arrays included) may overlap any other buffer given to the call
 *   (INVALID_ARGUMENT); there is no in-place form. Inputs may overlap each other.
 * - Gradients: none of these functions has a backward. AdaB2N's statistics depend on the
 *   learnable task logits phi; the gradient into phi (and through mean/var into x) is not
 *   implemented (nk_adab2n_weights returns w and omega, what such a backward starts from).
 */

/* alpha-BN (You, Li, Zhao 2021, arXiv 2110.04065; convention of the test-time-adaptation
 * benchmark code, methods/bn.py AlphaBatchNorm): each channel is normalized with a fixed convex
 * mixture of the source (running) statistics and the test batch's statistics:
 *   mean[c] = (1 - alpha_test) * source_mean[c] + alpha_test * mu_t[c]
 *   var[c]  = (1 - alpha_test) * source_var[c]  + alpha_test * v_t[c]
 * with mu_t = test[c].mean and v_t = test[c].m2 / (count - 1) (unbiased, what the official
 * code's helper BatchNorm stores) or m2 / count (biased, unbiased_test_var == 0). The variance
 * mixture is a plain convex combination (not the variance of the mixture distribution). No
 * state is carried between batches.
 *   channels      C. 0: nothing is read or written, OK (pointers may then be NULL).
 *   alpha_test    IN  weight of the TEST statistics, in [0, 1] (alpha_source = 1 - alpha_test).
 *                 Default NK_TTA_ALPHA_DEFAULT = 0.1 (the benchmark code's BN.ALPHA). 0 gives
 *                 the source statistics exactly, 1 the test statistics (rounded to f32).
 *   unbiased_test_var  IN  nonzero: v_t unbiased (the official code; recommended, pass 1);
 *                 0: biased. With it, every test[c].count must be >= 2 (PyTorch's helper
 *                 BatchNorm fails there too); without it >= 1.
 *   source_mean, source_var  IN  C floats: the layer's running statistics; source_var >= 0
 *                 (or NaN).
 *   test          IN  C moments of the test batch (per channel over B*L elements).
 *   mean, var     OUT C floats: the statistics to normalize with.
 * NaN in a channel's test mean or source mean gives NaN in its mean, in its m2 or source var
 * NaN in its var, for every alpha (0 * NaN is NaN, as in PyTorch); other channels are
 * unaffected. Returns OK or INVALID_ARGUMENT (NULL with C > 0, alpha outside [0, 1] or
 * NaN, a count too small, negative m2 or source_var, overlapping buffers). */
#define NK_TTA_ALPHA_DEFAULT 0.1f
NK_API nk_status nk_tta_alpha_bn_stats(nk_context *ctx, size_t channels, float alpha_test,
                                       int unbiased_test_var, const float *source_mean,
                                       const float *source_var, const nk_moments *test,
                                       float *mean, float *var);

/* UnMix-TNS (Tomar, Vray, Thiran, Bozorgtabar, ICLR 2024; code devavratTomar/unmixtns
 * unmixtns.py): K statistics components per BatchNorm layer, mu_k and v_k (K x C floats each,
 * laid out [k][c], caller-owned), initialized around the source statistics and updated online;
 * each test instance b is normalized with its own mixed statistics mean_bar[b][c],
 * var_bar[b][c].
 *
 * Initialization (nk_unmixtns_init), with a = alpha_init:
 *   K == 1:  mu_1 = source_mean, v_1 = source_var (no noise; a is treated as 0).
 *   K  > 1:  mu_k[c] = source_mean[c] + sqrt(a K / (K - 1)) * sqrt(source_var[c]) * xi[k][c],
 *            v_k[c]  = (1 - a) * source_var[c],
 * xi a K x C matrix of standard normal draws supplied by the caller (PyTorch's randn_like, or
 * nk_unmixtns_noise). The spread of the K means around their average then has expected
 * (1/K) variance a * source_var, so component variance plus spread of means ~ source_var.
 *
 * Forward step (nk_unmixtns_fwd), per test batch of B instances with instance moments
 * (xbar[b][c] = mean, s2[b][c] = m2 / count, biased), using the components as they were before
 * this batch:
 *   sim(u, w) = u.w / (max(|u|, 1e-12) max(|w|, 1e-12))        (PyTorch F.normalize)
 *   p[b][k]   = softmax over k of sim(xbar[b], mu_k) / tau
 *   muhat[b][k][c] = (1 - p[b][k]) mu_k[c] + p[b][k] xbar[b][c]
 *   vhat[b][k][c]  = (1 - p[b][k]) v_k[c]  + p[b][k] s2[b][c]
 *   mean_bar[b][c] = (1/K) sum_k muhat[b][k][c]
 *   var_bar[b][c]  = max(0, (1/K) sum_k vhat + (1/K) sum_k muhat^2 - mean_bar^2)
 *                    (law of total variance over the equal-weight mixture; evaluated as
 *                    (1/K) sum_k vhat + (1/K) sum_k (muhat - mean_bar)^2, equal in exact
 *                    arithmetic and free of cancellation; the clamp the spec asks for then
 *                    only acts on negative component variances; NaN stays NaN)
 * then the components move toward the batch (divisor B, not sum_b p):
 *   mu_k[c] += lambda (1/B) sum_b p[b][k] (xbar[b][c] - mu_k[c])
 *   v_k[c]  += lambda (1/B) sum_b p[b][k] (s2[b][c]   - v_k[c])
 * An all-zero instance mean (or component mean) has similarity 0 to everything: its p is
 * uniform (1/K), never NaN. NaN in any instance's mean makes its p, its outputs, and (through
 * the update's sum over b) every component NaN, as in the official code (unless lambda == 0:
 * the components are then not written).
 *
 * Not implemented: the commented-out variance term of the official code; UnMixTNS1d (1-D
 * BatchNorm layers keep their source statistics in the official code: use them directly). */
#define NK_UNMIXTNS_TAU_DEFAULT 0.07f       /* softmax temperature */
#define NK_UNMIXTNS_ALPHA_INIT_DEFAULT 0.5f /* the code's hard-coded "coeff" */
#define NK_UNMIXTNS_COMPONENTS_DEFAULT 16   /* 128 in the paper's mixed-domain setting */
#define NK_UNMIXTNS_SIM_EPS 1e-12           /* the norm guard of the cosine similarity */

typedef struct nk_unmixtns_desc {
  size_t components; /* K >= 1 */
  size_t channels;   /* C */
  float tau;         /* temperature of the softmax over components, finite and > 0 */
  float lambda;      /* component update rate in [0, 1] (nk_unmixtns_lambda); 0 freezes the
                        components (nk_unmixtns_fwd then does not write them) */
  float alpha_init;  /* init spread a in [0, 1] (ignored when K == 1) */
} nk_unmixtns_desc;

/* Defaults: tau 0.07, lambda 0.1 (momentum 0.1 and B == B_max), alpha_init 0.5. */
NK_API nk_unmixtns_desc nk_unmixtns_desc_default(size_t components, size_t channels);

/* The update rate from the source layer's BatchNorm momentum and the batch sizes:
 *   lambda = 1 - (1 - momentum)^(batch / batch_max)     (double, rounded to f32)
 * (momentum 0.1, batch == batch_max gives 0.1; the code's defaults are batch_max 64, or 16 on
 * ImageNet-C). momentum in [0, 1]; batch, batch_max >= 1 (batch > batch_max is allowed).
 * OUT *lambda. Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_unmixtns_lambda(nk_context *ctx, float momentum, size_t batch,
                                    size_t batch_max, float *lambda);

/* Fills xi[0..n) with standard normal draws, deterministically from seed (not PyTorch's
 * generator: to reproduce a PyTorch run, pass its randn values to nk_unmixtns_init instead).
 * Generator (docs/ops/test-time.md): splitmix64 (state += 0x9E3779B97F4A7C15, then the
 * splitmix64 output mix), starting from state = seed; u = ((z >> 11) + 0.5) * 2^-53 in (0, 1);
 * each pair (u1, u2) gives r = sqrt(-2 ln u1), xi[2i] = r cos(2 pi u2), xi[2i+1] = r sin(2 pi u2)
 * (Box-Muller, in double, rounded to f32). The first n values do not depend on n (an odd n
 * drops the last sine). n == 0: nothing written (xi may be NULL). Returns OK or
 * INVALID_ARGUMENT (xi NULL with n > 0). */
NK_API nk_status nk_unmixtns_noise(nk_context *ctx, uint64_t seed, size_t n, float *xi);

/* Initializes the components (formulas above).
 *   desc         K, C, alpha_init (tau and lambda are validated too).
 *   source_mean, source_var  IN  C floats, the source BatchNorm's running statistics;
 *                source_var >= 0 (or NaN: that channel's components are then NaN).
 *   xi           IN  K x C floats [k][c]; required when K > 1, not read when K == 1 (may be
 *                NULL).
 *   comp_mean, comp_var  OUT K x C floats [k][c].
 * C == 0: nothing read or written, OK. Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_unmixtns_init(nk_context *ctx, const nk_unmixtns_desc *desc,
                                  const float *source_mean, const float *source_var,
                                  const float *xi, float *comp_mean, float *comp_var);

/* One test batch (formulas above): writes the per-instance statistics and updates the
 * components in place.
 *   batch        B, the number of instances.
 *   inst         IN  B x C moments [b][c], each over one instance's L elements (count >= 1).
 *   comp_mean, comp_var  IN/OUT  K x C floats: the components; read as they are before the
 *                step (for p and the mixing), then overwritten with the updated ones.
 *   mean_bar, var_bar    OUT B x C floats [b][c]: the statistics to normalize instance b with.
 *   prob         OUT B x K doubles [b][k]: the assignment probabilities p (not rounded; the
 *                function also uses this buffer as its scratch, so it is required).
 * B == 0 or C == 0: nothing read or written, OK (the components do not move). Returns OK or
 * INVALID_ARGUMENT (NULL, K == 0, tau <= 0 or not finite, lambda or alpha_init outside
 * [0, 1], B*C or B*K or K*C overflowing, a count < 1, negative m2, overlapping buffers). */
NK_API nk_status nk_unmixtns_fwd(nk_context *ctx, const nk_unmixtns_desc *desc, size_t batch,
                                 const nk_moments *inst, float *comp_mean, float *comp_var,
                                 float *mean_bar, float *var_bar, double *prob);

/* AdaB2N (Lyu et al., NeurIPS 2023, arXiv 2310.08855; code lvyilin/AdaB2N models/utils/
 * adab2n.py): training-time BatchNorm statistics for continual learning. Tasks k = 0..T are the
 * tasks seen so far (T = state.tasks, the index of the current task); each sample b of the
 * (replay-mixed) batch has a task id tau_b in [0, T] (label / classes_per_task); n_k counts
 * the samples of task k in this batch (0 for an absent task); phi are per-layer learnable task
 * logits (initialized to 0).
 *
 * Task weights (nk_adab2n_weights):
 *   a_k = exp(phi_k) + n_k,  w_k = a_k / sum_{j=0..T} a_j,  omega_b = w_{tau_b} / n_{tau_b}
 * so sum_b omega_b = sum over tasks present of w_k <= 1: a task absent from the batch keeps
 * weight that no sample carries, and the statistics shrink toward 0 (the code's behaviour).
 *
 * Training statistics (nk_adab2n_fwd), from instance moments (xbar = mean, M2, L = count):
 *   weighted (task ids given and T > 0):
 *     mean[c] = sum_b omega_b xbar[b][c]
 *     var[c]  = sum_b omega_b (1/L_b) sum_l (x_bcl - mean[c])^2
 *             = sum_b omega_b (M2[b][c] / L_b + (xbar[b][c] - mean[c])^2)   (exact identity)
 *     (centred on the weighted mean, not on per-task means)
 *   plain (no task ids, or T == 0): the ordinary biased batch statistics: the instance
 *     moments of each channel merged (Chan) in b order, mean and M2 / count.
 * Running statistics (eval uses them as plain BatchNorm), with eta = next_eta() below:
 *   running_mean += eta (mean - running_mean);  running_var = (1 - eta) running_var + eta var
 * (biased var, unlike PyTorch's BatchNorm). Layer regularizer, after the update:
 *   reg = mean_c (mean[c] - running_mean[c])^2 + mean_c (var[c] - running_var[c])^2
 * The model loss adds lambda_reg * sum over layers of reg when the current task >= ada_t0
 * (the caller's business).
 *
 * Modified momentum next_eta() (num_batches_tracked already incremented; m = momentum):
 *   kappa == 0:      eta = 1 / num_batches_tracked     (cumulative average)
 *   kappa == 1:      eta = m                           (plain EMA)
 *   0 < kappa < 1:   first call (last_eta == 0): eta = m^kappa;
 *                    later: eta = last_eta / (last_eta + (1 - m)^kappa);  last_eta = eta.
 * The recursion falls monotonically to 1 - (1 - m)^kappa. As in the code, last_eta is only
 * read and written in the third case.
 *
 * End of task: state.tasks += 1 (the caller does it); last_eta and num_batches_tracked are
 * not reset. Eval forward: BatchNorm inference with the running statistics.
 */

/* AdaB2N's per-layer scalar state. A zeroed struct is the initial state. */
typedef struct nk_adab2n_state {
  int64_t num_batches_tracked; /* training batches seen; >= 0 */
  double last_eta;             /* eta of the last call with 0 < kappa < 1; 0 before the first
                                  (m^kappa > 0 for m > 0; with m == 0 the recursion stays 0) */
  size_t tasks;                /* T: index of the current task (the code's cur_tasks) */
} nk_adab2n_state;

typedef struct nk_adab2n_desc {
  size_t channels; /* C */
  float momentum;  /* m in [0, 1]: the BatchNorm momentum (0.1) */
  float kappa;     /* balance exponent in [0, 1]. No default: the official grid searches
                      0.1, 0.4, 0.7, 1.0 */
} nk_adab2n_desc;

/* Defaults: momentum 0.1, kappa 1 (plain EMA). Any field may be changed afterwards. */
NK_API nk_adab2n_desc nk_adab2n_desc_default(size_t channels);

/* Advances the state by one training batch and returns its eta (rule above):
 * num_batches_tracked += 1, then eta; last_eta updated when 0 < kappa < 1.
 * nk_adab2n_fwd does this itself: call one or the other per batch, not both.
 *   desc   momentum and kappa (channels is not read).
 *   state  IN/OUT; num_batches_tracked must be >= 0 and < INT64_MAX, last_eta in [0, 1].
 *   eta    OUT optional.
 * Returns OK or INVALID_ARGUMENT (state unchanged). */
NK_API nk_status nk_adab2n_next_eta(nk_context *ctx, const nk_adab2n_desc *desc,
                                    nk_adab2n_state *state, double *eta);

/* The task weights (rule above) for T = tasks:
 *   batch        B >= 1.
 *   task_ids     IN  B ids, each in [0, tasks].
 *   phi          IN  tasks + 1 floats: the task logits phi_0..phi_T (the code's
 *                task_weight[:T+1]).
 *   task_weight  OUT tasks + 1 doubles: w_k.
 *   omega        OUT B doubles: omega_b (sums to <= 1; exactly the w of the tasks present).
 * exp(phi) overflowing (phi > ~709) gives inf/inf = NaN weights. Returns OK or
 * INVALID_ARGUMENT (NULL, B == 0, an id out of range, tasks + 1 overflowing, overlaps). */
NK_API nk_status nk_adab2n_weights(nk_context *ctx, size_t tasks, size_t batch,
                                   const int64_t *task_ids, const float *phi,
                                   double *task_weight, double *omega);

/* One AdaB2N training step's statistics (rules above): advances the state (as
 * nk_adab2n_next_eta), computes the batch statistics, updates the running statistics, and
 * returns the layer regularizer.
 *   desc         C, momentum, kappa.
 *   state        IN/OUT (tasks is read: T).
 *   batch        B >= 1.
 *   inst         IN  B x C instance moments [b][c] (count L_b >= 1; the plain path merges
 *                them, so unequal counts are weighted by count there).
 *   task_ids     IN  optional: B task ids in [0, T]. NULL, or T == 0: the plain path (then
 *                task_ids, phi, task_weight and omega are not read or written, may be NULL).
 *   phi          IN  T + 1 floats (weighted path).
 *   running_mean, running_var  IN/OUT C floats.
 *   mean, var    OUT C floats: the statistics to normalize the batch with (the unrounded
 *                double values are what the running update and reg use).
 *   task_weight  OUT T + 1 doubles, omega OUT B doubles: required on the weighted path (the
 *                function computes them there with nk_adab2n_weights).
 *   reg          OUT optional: the layer regularizer, in double, from the unrounded mean, var
 *                and updated running statistics. C == 0 gives 0.
 * B == 0 is INVALID_ARGUMENT (a training step needs samples). C == 0: the state advances, the
 * weights are written (weighted path), reg = 0, nothing else is touched.
 * NaN in a channel's moments gives NaN in that channel's mean, var, running statistics and
 * in reg. Returns OK or INVALID_ARGUMENT (nothing written, state unchanged). */
NK_API nk_status nk_adab2n_fwd(nk_context *ctx, const nk_adab2n_desc *desc,
                               nk_adab2n_state *state, size_t batch, const nk_moments *inst,
                               const int64_t *task_ids, const float *phi, float *running_mean,
                               float *running_var, float *mean, float *var,
                               double *task_weight, double *omega, double *reg);

/* ------------------------------------------------------------------------------------------ */
/* Weight and optimizer normalization: weight norm, AdamP/SGDP, NaP, Conda                    */
/* ------------------------------------------------------------------------------------------ */
/*
 * Reparameterizations and optimizer steps that act on weights (spec stats-optim-rl.md Part B;
 * docs/ops/weight-norm.md, docs/ops/optimizers.md, docs/ops/nap.md). A weight tensor is a
 * dense, contiguous float array of n = rows * cols elements, row-major: row r is the output
 * unit / output channel r (PyTorch's dim 0; a conv kernel out x in x kh x kw is rows = out,
 * cols = in*kh*kw). Parameters and optimizer state are f32 (as PyTorch's buffers); scalar
 * hyper-parameters are double (Python floats).
 *
 * Arithmetic: every element is computed in double from the f32 inputs and rounded once to f32
 * when stored; row reductions (norms, dot products) are plain sequential double sums in index
 * order. Weight norm and NaP run their rows (groups) on the context's thread pool, each row
 * whole in one task, and NaP's per-layer scaling in element tiles; no kernels, no ISA
 * dependence: the same bits for every thread count and on every machine with the same libm
 * (sqrt, pow, cos). (AdamP, SGDP and GRPO below have kernels and their own rules.)
 *
 * Conventions of this section:
 * - Validation (NULLs, sizes, hyper-parameters, overlaps) is done in full before anything is
 *   written: on failure no output and no state is changed, and the context says why.
 * - Outputs and state arrays may not overlap any other buffer of the call (INVALID_ARGUMENT),
 *   except the documented in-place updates (param/state arrays updated in place are one
 *   buffer each, IN/OUT).
 * - Data values are not policed: NaN or inf in a parameter, gradient or state propagates as
 *   each function says.
 * - Not implemented: Weight Compander (arXiv 2306.16993): its companding function could not be
 *   verified from the paper (spec B8), so normkit does not ship a guessed one.
 */

/* Weight normalization (Salimans & Kingma 2016, arXiv 1602.07868; PyTorch weight_norm, dim 0):
 * each output row r of a rows x cols weight is a learned scale g[r] times a unit direction:
 *   nrm[r] = ||v_r||_2 = sqrt(sum_j v[r][j]^2),   d[r] = max(nrm[r], eps)
 *   w[r][j] = g[r] * v[r][j] / d[r]
 * Backward, from dw = dL/dw (d[r] = nrm[r], i.e. nrm >= eps):
 *   dg[r]    = sum_j dw[r][j] v[r][j] / nrm[r]
 *   dv[r][j] = (g[r] / nrm[r]) dw[r][j] - (g[r] dg[r] / nrm[r]^2) v[r][j]
 * (dv is orthogonal to v_r); where the clamp is active (nrm[r] < eps), d does not depend on v:
 *   dg[r] = sum_j dw v / eps,  dv[r][j] = (g[r] / eps) dw[r][j].
 * PyTorch's dim = None (one norm over the whole tensor) is rows = 1, cols = numel; dim = 1
 * (ConvTranspose) needs the caller to transpose.
 *   rows, cols   the weight's shape; rows == 0 or cols == 0: nothing read or written, OK
 *                (pointers may then be NULL). rows * cols must not overflow.
 *   eps          IN  clamp of the norm, finite and >= 0. Default NK_WEIGHT_NORM_EPS_DEFAULT =
 *                0: PyTorch's arithmetic, where a zero row of v gives w = g * 0 / 0 = NaN (and
 *                NaN dv, dg). eps > 0 makes a zero row give w = 0, dg = 0, dv = (g/eps) dw.
 *   v            IN  rows x cols floats, the direction parameter.
 *   g            IN  rows floats, the scale parameter (PyTorch init: g = ||v_r||, see
 *                nk_weight_norm_fwd's norm output).
 * NaN or inf in a row of v makes that row's w (dv, dg) NaN; NaN in g[r] or dw[r] reaches the
 * elements of row r that depend on it. Other rows are unaffected.
 * Thread-safe for distinct outputs; no in-place form. */
#define NK_WEIGHT_NORM_EPS_DEFAULT 0.0f

/* Forward: w = g v / max(||v_r||, eps) per row.
 *   w     OUT rows x cols floats.
 *   norm  OUT optional (NULL: not written): rows floats, the unclamped ||v_r|| rounded to f32
 *         (what PyTorch's weight_norm init copies into g).
 * Returns OK or INVALID_ARGUMENT (NULL v, g or w with a nonzero size, eps negative or not
 * finite, rows * cols overflowing, an output overlapping another buffer). */
NK_API nk_status nk_weight_norm_fwd(nk_context *ctx, size_t rows, size_t cols, float eps,
                                    const float *v, const float *g, float *w, float *norm);

/* Backward: dv and dg from dw (formulas above), both OVERWRITTEN (not accumulated).
 *   dw    IN  rows x cols floats, dL/dw.
 *   dv    OUT rows x cols floats.
 *   dg    OUT rows floats.
 * Returns OK or INVALID_ARGUMENT (as nk_weight_norm_fwd; dv and dg are required). */
NK_API nk_status nk_weight_norm_bwd(nk_context *ctx, size_t rows, size_t cols, float eps,
                                    const float *v, const float *g, const float *dw, float *dv,
                                    float *dg);


/* AdamP and SGDP (Heo et al., ICLR 2021, arXiv 2006.08217; official code clovaai/AdamP
 * adamp/adamp.py, adamp/sgdp.py): Adam / SGD-momentum steps that, for a weight detected as
 * scale-invariant, remove the radial component of the update and scale its weight decay by
 * wd_ratio. One call is one optimizer step on one parameter tensor of n elements, flat and
 * dense, with caller-owned state.
 *
 * Shape (for the detection): rows = the tensor's shape[0] when it has ndim > 1 (then
 * rows >= 1 divides n and the "channel view" is rows x (n/rows)); rows = 0 for ndim <= 1
 * (biases, norm-layer gamma/beta): never projected, wd factor 1.
 *
 * Projection (the code's _projection(p, grad, u), from the parameters theta BEFORE this step's
 * decay and the gradient g; eps is the optimizer's eps):
 *   for the view V in (channel: rows x n/rows, layer: 1 x n), D = the view's row length:
 *     cos_r = |<g_r, theta_r>| / (max(||g_r||, eps) * max(||theta_r||, eps))
 *     if max_r cos_r < delta / sqrt(D):      (NaN in any cos_r: the test fails)
 *        unit_r = theta_r / (||theta_r|| + eps)
 *        u_r   -= unit_r <unit_r, u_r>                 (row-wise)
 *        f      = wd_ratio;  stop
 *   neither view passes: u unchanged, f = 1.
 * A zero gradient or zero weight has cos 0 and is projected (the projection of a zero weight is
 * the identity; only f changes), as in the code.
 *
 * Arithmetic: elementwise in double from the f32 values; the state is rounded to f32 when
 * stored, and u is computed from the stored (rounded) state, as PyTorch keeps f32 state; the
 * new parameter theta (1 - lr wd f) - step u is rounded once (PyTorch rounds after the decay
 * and after the add). Row norms and dot products are double sums in a fixed blocked order
 * (blocks of 4096 elements from each row's start, 16 lanes per block folded as a tree, blocks
 * added in order; docs/ops/optimizers.md), so the result has the same bits on every ISA path
 * and thread count. Threaded over the context's pool.
 *
 * projection (OUT, optional in both steps) reports the view that passed: */
typedef enum nk_optim_projection {
  NK_OPTIM_PROJECTION_NONE = 0,    /* not projected (rows == 0, or neither view passed) */
  NK_OPTIM_PROJECTION_CHANNEL = 1, /* projected per row of the channel view */
  NK_OPTIM_PROJECTION_LAYER = 2,   /* projected on the whole tensor */
} nk_optim_projection;

/* AdamP hyper-parameters (the code's param group). */
typedef struct nk_adamp_desc {
  double lr;           /* eta, finite and >= 0 */
  double beta1, beta2; /* in [0, 1) */
  double eps;          /* > 0 and finite: Adam's eps, the cosine clamp and the unit +eps */
  double weight_decay; /* lambda, finite and >= 0 (decoupled; 0 disables) */
  double delta;        /* cosine threshold constant, finite and >= 0 (0: never projected) */
  double wd_ratio;     /* decay factor on projected weights, finite and >= 0 */
  int nesterov;        /* nonzero: Nesterov direction */
} nk_adamp_desc;

/* Defaults of the code: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0, delta 0.1,
 * wd_ratio 0.1, nesterov 0. */
NK_API nk_adamp_desc nk_adamp_desc_default(void);

/* One AdamP step (the code's order):
 *   step += 1;  bc1 = 1 - beta1^step;  bc2 = 1 - beta2^step
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2        (stored as f32)
 *   den = sqrt(v) / sqrt(bc2) + eps;  step_size = lr / bc1
 *   u = m / den    (nesterov: u = (beta1 m + (1 - beta1) g) / den, with the updated m)
 *   (u, f) = projection(theta, g, u) if rows > 0, else f = 1
 *   theta = theta (1 - lr weight_decay f) - step_size u      (decay term only if wd > 0)
 *   desc        IN  hyper-parameters.
 *   n           elements; 0: only *step advances and *projection (if given) is set to NONE;
 *               nothing else is read or written.
 *   rows        shape[0] (ndim > 1) or 0 (never projected); rows > 0 must divide n.
 *   param       IN/OUT n floats, theta.
 *   grad        IN  n floats, g.
 *   exp_avg, exp_avg_sq  IN/OUT n floats each: m and v (zeros before the first step).
 *   step        IN/OUT the step counter (0 before the first step); must be in [0, INT64_MAX).
 *   projection  OUT optional: which view was projected.
 * NaN in g, theta or the state makes the affected elements NaN (and a NaN cosine disables the
 * projection of the whole tensor, as PyTorch's max() and comparison do). Returns OK or
 * INVALID_ARGUMENT (NULLs, a hyper-parameter out of range, rows not dividing n, step out of
 * range, buffers overlapping; nothing written, step unchanged). */
NK_API nk_status nk_adamp_step(nk_context *ctx, const nk_adamp_desc *desc, size_t n,
                               size_t rows, float *param, const float *grad, float *exp_avg,
                               float *exp_avg_sq, int64_t *step,
                               nk_optim_projection *projection);

/* SGDP hyper-parameters (the code's param group). */
typedef struct nk_sgdp_desc {
  double lr;           /* eta, finite and >= 0 (required: no default in the code) */
  double momentum;     /* mu in [0, 1) (the decay divides by 1 - mu) */
  double dampening;    /* in [0, 1] */
  double eps;          /* > 0 and finite: cosine clamp and unit +eps */
  double weight_decay; /* lambda, finite and >= 0 */
  double delta;        /* finite and >= 0 */
  double wd_ratio;     /* finite and >= 0 */
  int nesterov;        /* nonzero: d = g + mu buf */
} nk_sgdp_desc;

/* Defaults of the code with the given lr: momentum 0, dampening 0, eps 1e-8, weight_decay 0,
 * delta 0.1, wd_ratio 0.1, nesterov 0. */
NK_API nk_sgdp_desc nk_sgdp_desc_default(double lr);

/* One SGDP step (the code's order):
 *   buf = mu buf + (1 - dampening) g          (buf starts at ZEROS, unlike torch.optim.SGD)
 *   d = nesterov ? g + mu buf : buf
 *   (d, f) = projection(theta, g, d) if rows > 0, else f = 1
 *   theta = theta (1 - lr weight_decay f / (1 - mu)) - lr d      (decay term only if wd > 0)
 *   n, rows, param, grad, projection  as nk_adamp_step (n == 0: only *projection is set).
 *   momentum_buf IN/OUT n floats (stored as f32; d uses the stored value).
 * Returns OK or INVALID_ARGUMENT (as nk_adamp_step). */
NK_API nk_status nk_sgdp_step(nk_context *ctx, const nk_sgdp_desc *desc, size_t n, size_t rows,
                              float *param, const float *grad, float *momentum_buf,
                              nk_optim_projection *projection);


/* Normalize-and-Project, NaP (Lyle et al., NeurIPS 2024, arXiv 2407.01800): with a
 * normalization layer before every nonlinearity, each weight that feeds one is projected back to
 * its norm at initialization after every optimizer step, so its effective learning rate equals
 * the nominal one; any decay of the effective rate is then an explicit learning-rate schedule.
 * The caller chooses the projected tensors (not the output layer, not the normalization layers'
 * gamma/beta: the default of the spec, whose handling in the paper is unverified) and disables
 * weight decay on them.
 *
 * Groups: a rows x cols weight (dense, row-major; rows = output channels) is projected either
 *   NK_NAP_PER_LAYER:    as one group of rows*cols elements (the paper's default: the norm of
 *                        the whole tensor, exact for LayerNorm/RMSNorm after the layer), or
 *   NK_NAP_PER_CHANNEL:  per row (exact scale invariance under BatchNorm, which normalizes each
 *                        output channel separately).
 * rho holds one double per group (1 per layer, rows per channel): rho_k = ||W_k^(0)||_2. */
typedef enum nk_nap_mode {
  NK_NAP_PER_LAYER = 0,
  NK_NAP_PER_CHANNEL = 1,
} nk_nap_mode;

/* Records the norms to project to: rho_k = sqrt(sum over group k of w^2), in double.
 *   mode        NK_NAP_PER_LAYER or NK_NAP_PER_CHANNEL (other values: INVALID_ARGUMENT).
 *   rows, cols  the weight's shape; a zero size: nothing read or written, OK.
 *   w           IN  rows x cols floats (the weights at initialization).
 *   rho         OUT 1 (per layer) or rows (per channel) doubles.
 * Returns OK or INVALID_ARGUMENT (NULLs, bad mode, size overflow, overlap). */
NK_API nk_status nk_nap_norms(nk_context *ctx, nk_nap_mode mode, size_t rows, size_t cols,
                              const float *w, double *rho);

/* The projection, in place, after an optimizer step: for each group k,
 *   n_k = ||w_k||_2;  w_k <- w_k * (rho_k / n_k)     (double, rounded once per element)
 * A group with n_k == 0 is left unchanged (the spec's guard: there is no direction to scale);
 * a group with a NaN or inf element becomes all NaN.
 *   w     IN/OUT rows x cols floats.
 *   rho   IN  1 or rows doubles, each finite and >= 0 (0 projects the group to zero).
 *   norm  OUT optional (NULL: not written): 1 or rows doubles, n_k before the projection (what a
 *         layer-wise schedule measures, see nk_nap_layer_lr).
 * Returns OK or INVALID_ARGUMENT (as nk_nap_norms, a negative or non-finite rho; nothing is
 * written on failure). */
NK_API nk_status nk_nap_project(nk_context *ctx, nk_nap_mode mode, size_t rows, size_t cols,
                                float *w, const double *rho, double *norm);

/* The explicit learning-rate schedule (the paper's "LN + WP + Schedule"; its exact Atari shape
 * is unverified, so the shapes below are generic). With W = warmup_steps, T = total_steps and
 * step t >= 0:
 *   t < W:            lr = lr_init * t / W                       (linear warmup from 0)
 *   p = min(1, (t - W) / (T - W)) otherwise, and
 *     CONSTANT:       lr = lr_init
 *     LINEAR:         lr = (1 - p) lr_init + p lr_final
 *     COSINE:         lr = lr_final + (lr_init - lr_final) (1 + cos(pi p)) / 2
 * (so t >= T gives lr_final for the decaying shapes). */
typedef enum nk_nap_schedule_kind {
  NK_NAP_SCHEDULE_CONSTANT = 0,
  NK_NAP_SCHEDULE_LINEAR = 1,
  NK_NAP_SCHEDULE_COSINE = 2,
} nk_nap_schedule_kind;

typedef struct nk_nap_schedule {
  nk_nap_schedule_kind kind;
  double lr_init;       /* finite, >= 0 */
  double lr_final;      /* finite, >= 0 (not read by CONSTANT) */
  int64_t warmup_steps; /* W >= 0 */
  int64_t total_steps;  /* T > W for LINEAR and COSINE (not read by CONSTANT) */
} nk_nap_schedule;

/* OUT *lr at step t >= 0 (formulas above). Returns OK or INVALID_ARGUMENT (NULL, unknown kind,
 * t < 0, a rate negative or not finite, W < 0, T <= W for a decaying shape). */
NK_API nk_status nk_nap_schedule_lr(nk_context *ctx, const nk_nap_schedule *schedule, int64_t t,
                                    double *lr);

/* Layer-wise rescaling that reproduces an unconstrained normalized network's implicit decay
 * (this is the spec's derivation, not a formula from the paper):
 *   lr_layer = lr * (rho / free_norm)^power
 * with free_norm = ||W(t)|| measured on an unprojected run, power 2 for SGD and 1 for Adam-type
 * optimizers. lr, power finite >= 0; rho, free_norm finite > 0. OUT *lr_layer.
 * Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_nap_layer_lr(nk_context *ctx, double lr, double rho, double free_norm,
                                 double power, double *lr_layer);


/* Conda, column-normalized Adam (Wang et al., arXiv 2509.24218; official code jie040109/Conda
 * conda_torch/conda.py, projector.py): Adam run in a rotated coordinate system of a 2-D weight
 * W (rows x cols = a x b, PyTorch Linear out x in), given by an orthogonal basis that the
 * official code takes from the thin SVD of the first moment m = U S V^T, refreshed every
 * update_proj_gap steps. normkit's core takes the basis as an INPUT (no SVD in the core): the
 * caller computes it from exp_avg (after nk_conda_update_moment) with its LAPACK (gesdd, float32
 * as the code) when nk_conda_refresh_due says so, and passes it to nk_conda_step; the optional
 * library normkit_lapack does that (normkit_lapack.h: nk_conda_svd_basis).
 *
 * Sides (the code's proj_type "std": RIGHT when a >= b, else LEFT; nk_conda_std_side):
 *   NK_CONDA_SIDE_RIGHT: basis P = V^T, b x b row-major; proj(X) = X P^T, back(Y) = Y P.
 *   NK_CONDA_SIDE_LEFT:  basis U, a x a row-major;       proj(X) = U^T X, back(Y) = U Y.
 *   NK_CONDA_SIDE_NONE:  identity (the path of every non-projected parameter: embeddings,
 *                        norms, LM head, biases; basis not read).
 * The "reverse_std", "left"/"right"-forced and "full" projection types are the caller's
 * choice of side (full, U^T X V, is not implemented).
 *
 * One step with t the counter before the step (state: exp_avg m a x b in ORIGINAL coordinates,
 * exp_avg_sq v a x b in PROJECTED coordinates, never rotated when the basis changes):
 *   1. m = beta1 m + (1 - beta1) g                                  (nk_conda_update_moment)
 *   2. if nk_conda_refresh_due(t, gap, last): basis = SVD basis of the updated m;  last = t
 *   3. ghat = proj(g), mhat = proj(m)                               (nk_conda_step from here)
 *   4. v = beta2 v + (1 - beta2) ghat^2
 *   5. den = sqrt(v) + eps;  t = t + 1;
 *      step_size = lr sqrt(1 - beta2^t) / (1 - beta1^t)  (correct_bias; else lr)
 *   6. N = mhat / den;  7. D = scale * back(N)
 *   8. W = W - step_size D;  9. W = W - lr weight_decay W   (decoupled, after the step)
 * Arithmetic: in double from the f32 values; m and v are rounded to f32 when stored and read
 * back rounded; the projections are sequential double dot products; W's two updates are one
 * rounding. NaN anywhere in g, m or the basis spreads through the projection (a row for RIGHT,
 * a column for LEFT). */
typedef enum nk_conda_side {
  NK_CONDA_SIDE_NONE = 0,
  NK_CONDA_SIDE_RIGHT = 1,
  NK_CONDA_SIDE_LEFT = 2,
} nk_conda_side;

typedef struct nk_conda_desc {
  double lr;           /* finite >= 0 */
  double beta1, beta2; /* in [0, 1) */
  double eps;          /* finite > 0 (the code: 1e-8; its docstring says 1e-6) */
  double weight_decay; /* finite >= 0 */
  double scale;        /* finite: the update scale (class 1.0; published scripts 0.25) */
  int correct_bias;    /* nonzero (default): bias correction folded into the step size */
  int64_t update_proj_gap; /* G >= 1: basis refresh period (class 2000; LLaMA launcher 50) */
} nk_conda_desc;

/* The class defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0, scale 1,
 * correct_bias 1, update_proj_gap 2000. (The LLaMA scripts use lr 0.01, betas (0.9, 0.99),
 * scale 0.25; GPT-2 also weight_decay 0.01.) */
NK_API nk_conda_desc nk_conda_desc_default(void);

/* The code's "std" choice: RIGHT when rows >= cols, else LEFT. */
NK_API nk_conda_side nk_conda_std_side(size_t rows, size_t cols);

/* Whether the basis must be recomputed before the step with counter t (pre-increment):
 * *due = 1 when no basis exists yet (last_refresh < 0) or t % gap == 0 and last_refresh != t;
 * otherwise 0. t >= 0, gap >= 1. Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_conda_refresh_due(nk_context *ctx, int64_t t, int64_t gap,
                                      int64_t last_refresh, int *due);

/* Step 1: exp_avg = beta1 exp_avg + (1 - beta1) grad over rows x cols floats (stored f32).
 * Only desc->beta1 is used (and validated with the rest of desc). A zero size: nothing done.
 * Returns OK or INVALID_ARGUMENT (NULLs, desc out of range, overlap, size overflow). */
NK_API nk_status nk_conda_update_moment(nk_context *ctx, const nk_conda_desc *desc, size_t rows,
                                        size_t cols, const float *grad, float *exp_avg);

/* Bytes of the workspace nk_conda_step needs: 2 * max(rows, cols) doubles plus
 * NK_WORKSPACE_ALIGN. */
NK_API nk_status nk_conda_workspace_size(size_t rows, size_t cols, size_t *bytes);

/* Steps 3-9 (after nk_conda_update_moment and any basis refresh).
 *   side        RIGHT, LEFT or NONE.
 *   param       IN/OUT rows x cols floats, W.
 *   grad        IN  rows x cols floats (the same g as given to nk_conda_update_moment).
 *   exp_avg     IN  rows x cols floats, the updated m.
 *   exp_avg_sq  IN/OUT rows x cols floats, v (zeros before the first step).
 *   basis       IN  cols x cols (RIGHT) or rows x rows (LEFT) floats, orthogonal (not checked:
 *               any matrix is used as given); not read for NONE (may be NULL).
 *   step        IN/OUT the counter t, in [0, INT64_MAX); incremented.
 *   workspace   scratch of at least nk_conda_workspace_size bytes, at any address.
 * A zero size: only *step advances. Returns OK or INVALID_ARGUMENT (NULLs, bad side, desc out
 * of range, workspace too small is MISUSE, overlaps, step out of range; nothing written). */
NK_API nk_status nk_conda_step(nk_context *ctx, const nk_conda_desc *desc, nk_conda_side side,
                               size_t rows, size_t cols, float *param, const float *grad,
                               const float *exp_avg, float *exp_avg_sq, const float *basis,
                               int64_t *step, void *workspace, size_t workspace_size);

/* RL and calibration: running normalizers, advantages, value encodings, calibration          */
/* ------------------------------------------------------------------------------------------ */
/*
 * Small exact transforms of reinforcement learning and probability calibration (spec
 * stats-optim-rl.md Parts C and D; docs/ops/running-norm.md and the pages named below). Like the
 * test-time statistics above: evaluated in double from the given values, rounded once where a
 * result lands in a float buffer; single-threaded, no kernels, no ISA dependence (the same bits
 * on every machine with the same libm). The context is used for its message only.
 *
 * Conventions of this section:
 * - Validation (sizes, NULLs, parameters, state) is done in full before anything is written: on
 *   failure no output and no state is changed, and the context's message says why.
 * - No output may overlap any other buffer (INVALID_ARGUMENT) unless a function documents an
 *   exact in-place form. Inputs may overlap each other.
 * - Data values are not policed unless a function says so: NaN in an input gives NaN in what
 *   depends on it.
 * - Accuracy (tested by tests/ops/rlcal.c and the fuzz harness tests/fuzz/rlcal.c against the
 *   float64 references; each function below states its bound): a float result is within 1 ulp
 *   of the exact value plus a small absolute term; double results within 1e-12 relative plus an
 *   absolute term at the data's scale.
 */

/* ---- Running mean/variance normalizers (Stable-Baselines3 VecNormalize; spec C13) ----------
 *
 * The state of a RunningMeanStd over d features is d nk_moments (count, mean, M2 = var * count),
 * so it merges across workers with nk_moments_merge_n. SB3 initializes mean 0, var 1 and a
 * pseudo-count 1e-4 (nk_running_norm_init). Update with a batch X (N x d): batch mean mu_b and
 * BIASED batch variance v_b per feature, then Chan's merge (SB3 update_from_moments):
 *   delta = mu_b - mean, n' = n + N, mean' = mean + delta N / n',
 *   var' = (var n + v_b N + delta^2 n N / n') / n'          (M2' = var' n')
 * Observations: y = clip((x - mean) / sqrt(var + eps), -clip_obs, clip_obs).
 * Rewards (per environment e, discounted return ret[e] in double, SB3 VecNormalize.step_wait):
 *   ret[e] = gamma ret[e] + r[e];  update the return statistics with the E values ret[e];
 *   r_out[e] = clip(r[e] / sqrt(var_ret + eps), -clip_reward, clip_reward)  (no mean subtracted);
 *   ret[e] = 0 where done[e].
 * Evaluation mode: no update; nk_running_norm_apply / nk_running_norm_scale alone.
 * Distributed: each worker accumulates its own samples into moments that start EMPTY (count 0,
 * all zero) with nk_running_norm_update; the owner merges them into the global state with
 * nk_moments_merge_n (in a fixed worker order for reproducible bits). Merging equals one update
 * with all samples up to rounding (Chan's formula is exact in real arithmetic).
 */
#define NK_RUNNING_NORM_COUNT0 1e-4     /* SB3 RunningMeanStd epsilon (initial pseudo-count) */
#define NK_RUNNING_NORM_EPS_DEFAULT 1e-8f /* VecNormalize epsilon */
#define NK_RUNNING_NORM_CLIP_DEFAULT 10.0f /* clip_obs and clip_reward */
#define NK_RUNNING_NORM_GAMMA_DEFAULT 0.99f

/* state[i] = {NK_RUNNING_NORM_COUNT0, 0, NK_RUNNING_NORM_COUNT0} (mean 0, var 1) for i < dim.
 * dim == 0: nothing written, OK. Returns OK or INVALID_ARGUMENT (state NULL with dim > 0). */
NK_API nk_status nk_running_norm_init(nk_context *ctx, size_t dim, nk_moments *state);

/* Merges a batch x (rows x dim floats, dense row-major, row r at x + r*dim) into the state:
 * per feature, batch moments in double (two-pass; var biased), merged with Chan's formula.
 *   state  IN/OUT dim moments; each count must be finite and >= 0 (0: an empty state, the
 *          batch moments are copied in), m2 >= 0 or NaN.
 * rows == 0 or dim == 0: nothing changes, OK (pointers may be NULL). NaN in a column makes
 * that feature's mean and m2 NaN; +-inf (and no NaN) makes its m2 NaN and its mean +-inf (NaN
 * when both signs occur), as numpy's mean/var in SB3's update_from_moments give. Accuracy: count 1e-15
 * relative; mean 1e-12 |mean| + 1e-14 S; m2 / count 1e-12 relative + 1e-14 S^2; S the data's
 * scale (the largest |x| of the column, |mean| and sqrt(m2 / count) of the state before).
 * Returns OK or INVALID_ARGUMENT (NULL, rows*dim overflowing, a bad count or m2, x overlapping
 * state). */
NK_API nk_status nk_running_norm_update(nk_context *ctx, size_t rows, size_t dim, const float *x,
                                        nk_moments *state);

/* y = clip((x - mean) / sqrt(var + eps), -clip, clip) per feature, var = m2 / count (biased,
 * as SB3 stores it). x, y: rows x dim floats, dense; y == x (exact in place) is allowed.
 *   eps   finite, >= 0 (default NK_RUNNING_NORM_EPS_DEFAULT).
 *   clip  > 0; +inf means no clipping (default NK_RUNNING_NORM_CLIP_DEFAULT). NaN stays NaN.
 *   state IN dim moments, count > 0 (finite), m2 >= 0 or NaN.
 * var + eps == 0 (eps 0 on a constant feature) gives +-inf clipped to +-clip, or NaN for
 * x == mean. Accuracy: 1 ulp of the exact value + 1e-12. Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_running_norm_apply(nk_context *ctx, size_t rows, size_t dim,
                                       const nk_moments *state, float eps, float clip,
                                       const float *x, float *y);

/* Reward scaling without mean: out[i] = clip(r[i] / sqrt(var + eps), -clip, clip) for i < n,
 * var = state->m2 / state->count (one scalar state: the return statistics). out == r allowed.
 * Parameters and accuracy as nk_running_norm_apply. Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_running_norm_scale(nk_context *ctx, size_t n, const nk_moments *state,
                                       float eps, float clip, const float *r, float *out);

/* One training step of VecNormalize's reward path over E environments (formulas above):
 *   gamma     discount in [0, 1] (default NK_RUNNING_NORM_GAMMA_DEFAULT; must equal the
 *             agent's).
 *   reward    IN  E floats (raw rewards of this step).
 *   done      IN  optional E bytes, nonzero where the episode ended this step (NULL: none).
 *   ret       IN/OUT E doubles, the discounted returns (start at 0; reset them to 0 yourself
 *             on an environment reset).
 *   ret_state IN/OUT one nk_moments: the return statistics (nk_running_norm_init with dim 1).
 *   out       OUT E floats: the scaled rewards (out == reward allowed).
 * Accuracy: out as nk_running_norm_apply; ret 1e-13 relative + 1e-13 S; ret_state as
 * nk_running_norm_update, S the largest of |reward|, |ret| and the state's |mean| and sqrt(var).
 * E == 0: nothing changes, OK. Returns OK or INVALID_ARGUMENT (NULL, gamma outside [0, 1],
 * bad eps/clip/state, overlaps). */
NK_API nk_status nk_running_norm_reward(nk_context *ctx, size_t envs, float gamma, float eps,
                                        float clip, const float *reward,
                                        const unsigned char *done, double *ret,
                                        nk_moments *ret_state, float *out);

/* ---- Group advantages: GRPO and BNPO (spec C10; docs/ops/advantages.md) ------------------
 *
 * Layout shared by both: `groups` prompt groups, group q holding group_sizes[q] responses whose
 * rewards are consecutive in `rewards` (group 0 first); n = sum of the sizes; adv has n entries
 * in the same order. A group of size 0 is allowed and contributes nothing. Rewards are the
 * per-response (outcome) scores; broadcasting an advantage over the response tokens is the
 * caller's.
 */

/* GRPO (verl compute_grpo_outcome_advantage):
 *   size 1:   mean = 0, std = 1                       (verl: the lone reward passes through)
 *   size >= 2: mean = group mean, std = sqrt(sum (R - mean)^2 / (G - 1)) (unbiased, torch.std)
 *              or / G (biased) when unbiased == 0
 *   adv = (R - mean) / (std + eps)   (scale_by_std nonzero: verl's default)
 *   adv = R - mean                   (scale_by_std == 0: verl norm_adv_by_std_in_grpo=False,
 *                                     "Dr. GRPO")
 * All-equal rewards in a group give std 0 and adv exactly 0 (for eps > 0; eps == 0 gives
 * 0/0 = NaN there, as PyTorch would). NaN in a group's rewards makes that group's adv NaN.
 *   eps  finite, >= 0; default NK_GRPO_EPS_DEFAULT = 1e-6.
 * Accuracy: 1 ulp of the exact value + 1e-12.
 * Returns OK or INVALID_ARGUMENT (NULL with n > 0, sizes overflowing, bad eps, adv overlapping
 * an input). */
#define NK_GRPO_EPS_DEFAULT 1e-6f
NK_API nk_status nk_grpo_advantages(nk_context *ctx, size_t groups, const size_t *group_sizes,
                                    const float *rewards, float eps, int unbiased,
                                    int scale_by_std, float *adv);

/* BNPO (Xiao, Zhang, Cao 2025, arXiv 2506.02864; code changyi7231/BNPO
 * compute_bnpo_outcome_advantage), one batch, no state:
 *   R <- (R - r_min) / (r_max - r_min)              (rewards mapped to [0, 1])
 *   p_q = mean of group q's mapped rewards if G_q >= 2, 0 if G_q == 1 (the code's choice)
 *   over the Q non-empty groups: m = mean_q p_q, s2 = sum_q (p_q - m)^2 / (Q - 1);
 *     Q == 1: m = 0, s2 = 1 (the code's choice; gives alpha = beta = 1)
 *   kappa = m (1 - m) / s2 - 1,  a = kappa m,  b = kappa (1 - m)
 *   alpha = max(1 + a/3, 1),  beta = max(1 + b/3, 1)
 *   w = min(1 / f(p_q; alpha, beta), clip),  f the Beta(alpha, beta) density, evaluated as
 *       exp(xlogy(alpha - 1, p) + xlogy(beta - 1, 1 - p) - lnB(alpha, beta)); f == 0 (p at 0
 *       or 1 with alpha or beta > 1) gives w = clip, never 0 * inf
 *   adv = w (R - p_q)   (mapped R)
 * Degenerate cases (spec "Pitfalls", open ambiguity 8): s2 == 0 (every prompt has the same
 * success rate) uses alpha = beta = 1, so adv = R - p_q: zero when every R equals its p_q,
 * the REINFORCE baseline otherwise. s2 > m (1 - m) makes a, b negative: clamped to 1. NaN in
 * any reward makes m, s2, alpha, beta and every adv NaN. Q == 0: alpha = beta = 1, nothing else
 * written.
 *   r_min, r_max  finite, r_min < r_max (defaults 0 and 1). Every reward must lie in
 *                 [r_min, r_max] or be NaN (so p_q is in [0, 1]).
 *   clip          upper bound of 1/f, > 0 (default NK_BNPO_CLIP_DEFAULT = 1e6; +inf allowed).
 *   adv           OUT n floats.
 *   alpha, beta   OUT optional: the fitted parameters (double).
 * Multi-component rewards (the paper's advantage decomposition): call once per component and
 * average the advantages. Accuracy: alpha, beta 1e-12 relative; adv 1 ulp + (1e-12 + 8
 * DBL_EPSILON (|lgamma(alpha)| + |lgamma(beta)| + |lgamma(alpha + beta)|)) relative (the
 * log-density's terms grow with alpha + beta: 7e-8 relative at alpha ~ 5e8).
 * Returns OK or INVALID_ARGUMENT. */
#define NK_BNPO_CLIP_DEFAULT 1e6
NK_API nk_status nk_bnpo_advantages(nk_context *ctx, size_t groups, const size_t *group_sizes,
                                    const float *rewards, float r_min, float r_max, double clip,
                                    float *adv, double *alpha, double *beta);

/* ---- Value encodings: HL-Gauss and two-hot (spec C11; docs/ops/value-encodings.md) --------
 *
 * "Stop Regressing" (Farebrother et al., ICML 2024, arXiv 2403.03950): a scalar value target y
 * becomes a distribution over m fixed bins of [v_min, v_max], learned with a categorical
 * cross-entropy on logits, decoded as the expected bin centre. Bins (double):
 *   width zeta = (v_max - v_min) / m,  edges z_i = v_min + i zeta (i = 0..m),
 *   centres c_i = v_min + (i + 1/2) zeta (i = 0..m-1).
 * Rows are dense: row r of an n x m array starts at r * m. A NaN target gives a NaN row; NaN
 * logits give NaN in their row's outputs. Common arguments: bins m >= 1; v_min < v_max, finite.
 */
#define NK_HLGAUSS_SIGMA_RATIO_DEFAULT 0.75f /* sigma / zeta, the paper's recommendation */

/* HL-Gauss targets: y is clipped to [v_min, v_max] (open ambiguity 9: many ports clip, the paper
 * listing does not; clipping keeps the normalizer away from 0), sigma = sigma_ratio * zeta,
 *   probs[r][i] = (Phi((z_{i+1} - y)/sigma) - Phi((z_i - y)/sigma)) / (Phi((z_m - y)/sigma) -
 *                 Phi((z_0 - y)/sigma))
 * each CDF difference evaluated without cancellation (erfc in the tails, erf across 0). Rows sum
 * to 1 (within rounding); every entry is >= 0.
 *   sigma_ratio  > 0, finite (default NK_HLGAUSS_SIGMA_RATIO_DEFAULT).
 *   y            IN  n floats.   probs  OUT n x bins floats.
 * Accuracy: each entry 1 ulp of the exact value + 1e-15.
 * n == 0: nothing written, OK. Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_hlgauss_target(nk_context *ctx, size_t n, size_t bins, float v_min,
                                   float v_max, float sigma_ratio, const float *y, float *probs);

/* Two-hot targets on the bin centres: y clipped to [c_0, c_{m-1}]; t = (y - c_0) / zeta,
 * j = min(floor(t), m - 2), f = t - j; probs[j] = 1 - f, probs[j+1] = f, others 0 (y == c_{m-1}
 * puts mass 1 on the last centre, exactly). bins == 1: probs = 1. Same arguments as
 * nk_hlgauss_target without sigma. Accuracy: each entry 1 ulp of the exact value + 1e-15
 * + 2 DBL_EPSILON (|y| + |c_0|) / zeta (t is formed in double: a support far wider than y's
 * distance from c_0, e.g. [-1.7e38, 1.7e38] in 43 bins for y = 65504, leaves 1e-15 in f).
 * Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_two_hot_target(nk_context *ctx, size_t n, size_t bins, float v_min,
                                   float v_max, const float *y, float *probs);

/* Decoding (HL-Gauss and two-hot alike): value[r] = sum_i softmax(logits[r])_i c_i (softmax with
 * the row max subtracted, in double). logits IN n x bins floats; value OUT n floats.
 * Accuracy: 1 ulp of the exact value + 2.5e-13 max(|v_min|, |v_max|): the sums over the centres
 * carry a rounding error proportional to the largest centre, which dominates when the value
 * cancels (a support [-1e38, 1e38] decoding to 1e22); 2.5e-13 is the test's 1e-12 at [-3, 4].
 * Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_hlgauss_decode(nk_context *ctx, size_t n, size_t bins, float v_min,
                                   float v_max, const float *logits, float *value);

/* Categorical cross-entropy against a target distribution, and its gradient:
 *   loss[r] = -sum_i p_i log q_i = sum_i p_i (lse - l_i),  q = softmax(l), lse = logsumexp(l)
 *             (terms with p_i == 0 are 0, even where q_i == 0)
 *   dlogits[r][i] = S q_i - p_i,  S = sum_i p_i   (q - p for a normalized target; the target
 *                   is a constant: no gradient flows into it)
 *   logits   IN  n x bins floats.   target  IN  n x bins floats (from the functions above, or
 *                any non-negative weights).
 *   loss     OUT n floats.   dlogits  OUT optional n x bins floats (overwritten, not
 *                accumulated).
 * The mean over rows, if wanted, is the caller's (divide loss and dlogits by n).
 * Accuracy: loss 1 ulp of the exact value + 1e-12; dlogits 1e-7 S + 1e-6 |exact| (any logit
 * magnitude: a constant row of 1e30 gives S log(bins) and S / bins - p_i).
 * Returns OK or INVALID_ARGUMENT (NULL, bins == 0, n * bins overflowing, overlapping
 * buffers). */
NK_API nk_status nk_hlgauss_xent(nk_context *ctx, size_t n, size_t bins, const float *logits,
                                 const float *target, float *loss, float *dlogits);

/* ---- LSC reward transform (spec C12; docs/ops/lsc.md) -------------------------------------
 *
 * Wang et al., "Transforming and Combining Rewards for Aligning Large Language Models" (ICML
 * 2024, arXiv 2402.00742): a Bradley-Terry reward r is replaced by the log-probability that the
 * response is "good", log sigmoid(r - r_ref), r_ref a per-prompt reference reward (a quantile of
 * the base policy's rewards for that prompt); several properties combine by summing their
 * transformed rewards (the log-probability of "good in all", under independence).
 * log sigmoid(d) = -softplus(-d) is evaluated stably in double: min(d, 0) - log1p(exp(-|d|)).
 * It is < 0 for every finite d, -> 0 as d -> +inf (saturation: diminishing returns) and ~d as
 * d -> -inf; +-inf and NaN follow the formula (d = +inf gives 0, -inf gives -inf).
 */

/* u[i] = log sigmoid(r[i] - r_ref[i]) for i < n (the caller repeats a prompt's r_ref for its
 * responses). u == r or u == r_ref (exact in place) is allowed. n == 0: OK. Accuracy: 1 ulp.
 * Returns OK or INVALID_ARGUMENT (NULL with n > 0, other overlaps). */
NK_API nk_status nk_lsc_reward_transform(nk_context *ctx, size_t n, const float *r,
                                         const float *r_ref, float *u);

/* The combination over J properties: u[i] = sum_j log sigmoid(r[i][j] - r_ref[i][j]), r and
 * r_ref n x J floats (row i at i * J), u n floats (summed in double in j order). J == 0 gives
 * u = 0 (the empty sum). n == 0: OK. Accuracy: 1 ulp of the exact sum + 1e-15. Returns OK or INVALID_ARGUMENT (NULL, n * J overflowing,
 * u overlapping an input). */
NK_API nk_status nk_lsc_reward_combine(nk_context *ctx, size_t n, size_t properties,
                                       const float *r, const float *r_ref, float *u);

/* The reference reward of one prompt: the level-quantile of k base-policy rewards, with linear
 * interpolation between order statistics (numpy.quantile's default "linear" method):
 *   h = (k - 1) level,  r_ref = x_(floor h) + (h - floor h) (x_(floor h + 1) - x_(floor h))
 * x_(t) the t-th smallest (0-based). The paper's level is unverified (0.85 is recalled, not
 * confirmed; spec open ambiguity 4): there is no default, pass it.
 *   k        number of samples, >= 1.   samples  IN  k floats (not modified; O(k^2) selection,
 *            no scratch: k is the number of samples per prompt, tens to hundreds).
 *   level    in [0, 1].   r_ref  OUT one float.
 * Any NaN sample gives NaN. Infinite samples: an integral h gives x_(h) itself (+-inf included;
 * numpy's lerp gives NaN there), otherwise the formula in double (inf - inf is NaN).
 * Accuracy (tests/ops/rlcal.c, tests/fuzz/rlcal.c): 1 f32 ulp of the exact value + 1e-15.
 * Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_lsc_reward_reference(nk_context *ctx, size_t k, const float *samples,
                                         float level, float *r_ref);

/* ---- Temperature scaling and calibration error (spec D15; docs/ops/calibration.md) ---------
 *
 * Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural Networks" (ICML 2017).
 * Logits z are n x classes floats, dense (row r at r * classes); labels are n int64 in
 * [0, classes). One temperature T > 0 for all classes: q = softmax(z / T); argmax is unchanged.
 *   NLL(T) = (1/n) sum_r [ logsumexp(z_r / T) - z_{r, y_r} / T ]          (in double)
 * With beta = 1/T, NLL is convex in beta: NLL'(beta) = (1/n) sum_r (E_{q_r}[z_r] - z_{r,y_r}),
 * NLL''(beta) = (1/n) sum_r Var_{q_r}(z_r) >= 0.
 */
#define NK_TEMPERATURE_MIN_DEFAULT 0.05 /* search bracket for T: [0.05, 20] */
#define NK_TEMPERATURE_MAX_DEFAULT 20.0

/* NLL(T) and dNLL/dT = -NLL'(beta) / T^2 (both double; either output may be NULL).
 *   n >= 1, classes >= 1; T > 0, finite. NaN logits give NaN.
 * Accuracy (tests/ops/rlcal.c, tests/fuzz/calib.c): nll 1e-13 relative + 1e-15 +
 * 4 DBL_EPSILON max|z| / T (the row terms z / T cancel down to the NLL: logits of 1e30 carry
 * that much rounding); dnll_dT 1e-6 relative + 1e-8.
 * Returns OK or INVALID_ARGUMENT (NULL, n or classes 0, n * classes overflowing, a label
 * outside [0, classes), bad T). */
NK_API nk_status nk_temperature_nll(nk_context *ctx, size_t n, size_t classes,
                                    const float *logits, const int64_t *labels, double T,
                                    double *nll, double *dnll_dT);

/* Fits T by minimizing NLL over T in [t_min, t_max] (the reference code runs LBFGS from T = 1.5
 * for 50 iterations; this is the global minimizer instead, so compare NLL, not T).
 * Method: in beta = 1/T on [1/t_max, 1/t_min], the derivative g = NLL'(beta) is nondecreasing.
 * If g >= 0 at the low end, T = t_max; if g <= 0 at the high end, T = t_min (e.g. separable
 * data, where NLL falls as T -> 0). Otherwise a root of g is bracketed and found by Newton
 * steps (g / NLL'') that fall back to bisection whenever a step leaves the bracket, shrinking the
 * bracket every iteration; stops when the bracket is within 4 ulp, g == 0 or after 200
 * iterations.
 *   t_min, t_max  0 < t_min < t_max, finite (defaults NK_TEMPERATURE_MIN/MAX_DEFAULT).
 *   T             OUT the fitted temperature.   nll  OUT optional: NLL(T).
 * No bound on T is promised; tested: T in [t_min, t_max], NLL(T) not above the NLL of a
 * golden-section search by more than nk_temperature_nll's rounding.
 * Every logit must be finite (INVALID_ARGUMENT otherwise: a fit on NaN means nothing).
 * Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_temperature_fit(nk_context *ctx, size_t n, size_t classes,
                                    const float *logits, const int64_t *labels, double t_min,
                                    double t_max, double *T, double *nll);

/* probs = softmax(logits / T) per row (double, max subtracted, rounded once). T > 0, finite.
 * probs == logits (exact in place) is allowed. n == 0: OK. Accuracy: 1 ulp of the exact value.
 * Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_temperature_apply(nk_context *ctx, size_t n, size_t classes, double T,
                                      const float *logits, float *probs);

/* One bin of a reliability diagram. */
typedef struct nk_ece_bin {
  uint64_t count;    /* samples whose confidence falls in the bin */
  double confidence; /* their mean confidence (0 when count == 0) */
  double accuracy;   /* their fraction of correct predictions (0 when count == 0) */
} nk_ece_bin;

#define NK_ECE_BINS_DEFAULT 15

/* Top-label Expected (and Maximum) Calibration Error with equal-width bins (Guo et al. Sec. 2;
 * gpleiss/temperature_scaling _ECELoss):
 *   conf_r = max_k probs[r][k],  pred_r = the FIRST k attaining it,  c_r = [pred_r == y_r]
 *   bin m (m = 0..M-1) holds the r with m/M < conf_r <= (m+1)/M (left-open, right-closed;
 *   boundaries m/M in double; conf == 0 falls in no bin but counts in n)
 *   ECE = sum_m (|B_m| / n) |acc_m - conf_m|,   MCE = max over non-empty bins |acc_m - conf_m|
 *   (0 when every bin is empty).
 *   probs     IN  n x classes floats, each in [0, 1] (rows need not sum to 1; NaN or values
 *             outside [0, 1] are INVALID_ARGUMENT). Use nk_temperature_apply for logits.
 *   labels    IN  n int64 in [0, classes).
 *   bins      M >= 1 (default NK_ECE_BINS_DEFAULT = 15).
 *   ece, mce  OUT optional doubles.   reliability  OUT optional M entries.
 * n >= 1, classes >= 1. Accuracy: ece, mce 1e-13 relative + 1e-16; counts exact; the bins'
 * confidence and accuracy 1e-13 relative. Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_ece_top_label(nk_context *ctx, size_t n, size_t classes, const float *probs,
                                  const int64_t *labels, size_t bins, double *ece, double *mce,
                                  nk_ece_bin *reliability);

/* ---- Compositional data: closure, clr, partial correlations (spec D17) ---------------------
 * docs/ops/compositional.md.
 *
 * A composition is a row of D > 0 parts carrying only relative information (Aitchison 1986).
 * x is n x D floats, dense (row r at r * D); every part must be finite and > 0 (zeros must be
 * replaced before: INVALID_ARGUMENT otherwise).
 */

/* Closure: out[r][i] = kappa x[r][i] / sum_k x[r][k] (double sum, rounded once). kappa finite,
 * > 0 (1 by default). out == x (exact in place) allowed. n == 0: OK. Accuracy: 1 ulp. Returns OK or
 * INVALID_ARGUMENT (NULL, D == 0, n * D overflowing, a part <= 0 or not finite, overlap). */
NK_API nk_status nk_clr_closure(nk_context *ctx, size_t n, size_t parts, float kappa,
                                const float *x, float *out);

/* Centred log-ratio: out[r][i] = log x[r][i] - (1/D) sum_k log x[r][k] (log of x over its
 * geometric mean, in double). Scale invariant (clr of the closure is the same); each row sums to
 * 0 up to rounding. out == x allowed. Accuracy: 1 ulp + 1e-15. Returns as nk_clr_closure. */
NK_API nk_status nk_clr_transform(nk_context *ctx, size_t n, size_t parts, const float *x,
                                  float *out);

/* Partial correlations of compositional data (Erb 2020, arXiv 1904.09480):
 *   Gamma = covariance of the clr rows (D x D, divisor n - 1 as numpy.cov)
 *   Omega = Gamma^+ (Moore-Penrose, from a Jacobi eigendecomposition of Gamma: eigenvalues
 *           <= rcond * max eigenvalue are treated as 0; Gamma 1 = 0 always, so one is)
 *   rho[i][j] = -Omega_ij / sqrt(Omega_ii Omega_jj) (i != j),  rho[i][i] = 1
 *   partial_var[i] = 1 / Omega_ii (the divisor n - 1 matters here, not in rho)
 * rho equals the partial correlation of log(x_i/x_r), log(x_j/x_r) given all other log-ratios
 * for every reference part r outside {i, j}. When rank Gamma = D - 1 (n > D, no exact
 * log-linear dependency) Omega = (Gamma + J)^-1 - J, J = (1/D) 1 1^T. With n <= D the
 * pseudo-inverse is still defined but the partial correlations are not meaningful estimates.
 *   n         >= 2 samples;  parts D >= 2.
 *   rcond     relative eigenvalue cutoff, in (0, 1) (default NK_CLR_RCOND_DEFAULT = 1e-10).
 *   rho       OUT D x D doubles.   partial_var  OUT optional D doubles.
 *   workspace caller scratch of at least nk_clr_partial_corr_workspace_size(D) bytes, at any
 *             address; contents on return unspecified.
 * Accuracy (n > D, rank D - 1): rho 1e-9 absolute, partial_var 1e-9 relative; otherwise
 * |rho| <= 1 + 1e-9 or NaN.
 * Omega_ii == 0 (a part orthogonal to every retained eigenvector) gives NaN off the diagonal
 * in its row and column of rho and +inf partial variance. Returns OK, INVALID_ARGUMENT, or
 * MISUSE (workspace too small). */
#define NK_CLR_RCOND_DEFAULT 1e-10
NK_API size_t nk_clr_partial_corr_workspace_size(size_t parts);
NK_API nk_status nk_clr_partial_corr(nk_context *ctx, size_t n, size_t parts, const float *x,
                                     double rcond, double *rho, double *partial_var,
                                     void *workspace, size_t workspace_size);

/* ---- Candidate Prior Normalization (spec D16; docs/ops/cpn.md) ---------------------------
 *
 * BLiM (Ko, Lee et al., ICCV 2025, arXiv 2507.23284; code mlvlab/BLiM training_utils.py): when
 * candidates c are ranked by their generation likelihood given the query q, subtract alpha times
 * the candidate's prior likelihood (the same model with the query tokens masked out):
 *   S(c|q) = mean over valid tokens t of log P(c_t | q, c_<t),  S(c) likewise without q
 *   S_CPN(q, c) = S(c|q) - alpha S(c)      (alpha 0: raw likelihood; 1: pointwise MI)
 * The BLiM ensemble with the query likelihood and a dual-encoder score is the caller's (a
 * weighted sum of these scores).
 */

/* Mean per-token log-likelihood of each of n sequences of `tokens` positions:
 *   out[r] = sum_t valid[r][t] logp[r][t] / sum_t valid[r][t]     (double)
 *   logp   IN  n x tokens floats (log-probabilities of the target tokens; ignored positions may
 *          hold anything, they are not read).
 *   valid  IN  optional n x tokens bytes, nonzero = counted (NULL: every position counts).
 *   out    OUT n doubles. A row with no valid token gives NaN (0/0, as the code).
 * The official code counts the positions with nonzero cross-entropy (loss.bool().sum()), which
 * also drops a valid token predicted with probability exactly 1; pass valid accordingly to
 * reproduce it. n == 0: OK. Accuracy: 1e-14 relative + 1e-15. Returns OK or INVALID_ARGUMENT
 * (NULL, tokens == 0, n * tokens overflowing, out overlapping an input). */
NK_API nk_status nk_cpn_mean_loglik(nk_context *ctx, size_t n, size_t tokens, const float *logp,
                                    const unsigned char *valid, double *out);

/* score[i] = cond[i] - alpha prior[i] for i < n (S(c|q) and S(c) per candidate, in double).
 *   alpha  finite (official per-dataset values 0 to 1, e.g. MSRVTT text->video 0.0,
 *          video->text 0.9; no universal default).
 * score == cond or score == prior (exact in place) is allowed. NaN propagates. n == 0: OK.
 * Accuracy: 1e-14 relative + 1e-15. Returns OK or INVALID_ARGUMENT (a pointer not aligned for
 * double included). */
NK_API nk_status nk_cpn_score(nk_context *ctx, size_t n, const double *cond, const double *prior,
                              double alpha, double *score);

/* ------------------------------------------------------------------------------------------ */
/* Research normalization layers: PowerNorm, Unified Normalization, EvoNorm                     */
/* ------------------------------------------------------------------------------------------ */
/*
 * Spec: shared spec layers.md sections 4 (PowerNorm), 5 (UN), 6 (EvoNorm), 16 (ambiguities).
 * docs/ops/powernorm.md, unifiednorm.md and evonorm.md give the derivations and sources.
 *
 * Token tensors (PowerNorm, Unified Normalization). A transformer activation of N x S tokens
 * and C channels, channel-last (the channel norms' NHWC layout; these layers have no NCHW
 * form): token (n, s) is the row of C contiguous elements at x + n * n_stride + s * row_stride
 * (row_stride >= C, n_stride >= (S - 1) * row_stride + C). (B, T, C) maps with N = B, S = T;
 * fairseq's (T, B, C) with N = T, S = B; an N x C tensor is S = 1. Statistics are per channel
 * over the tokens. mask (optional, NULL = every token valid) holds one byte per token, at
 * mask[n * mask_n_stride + s * mask_s_stride] (strides in bytes, >= 0; fairseq's (B, T) padding
 * mask for a (T, B, C) tensor is mask_n_stride = 1, mask_s_stride = T), and a nonzero byte marks
 * a valid (non-padding) token. The forward statistic is taken over the
 * valid tokens V only; every token (padding included) is normalized and written, and the
 * backward means run over all tokens A (the official code's behaviour, spec 4.2).
 *
 * Arithmetic (every ISA and thread count give the same bits): the quadratic means are sums of
 * (double)u * u in double over fixed chunks of tokens (a function of the sizes only), combined
 * in chunk order; per-channel scales are computed in double and rounded to f32; the element-wise
 * maps are f32 operations (no contraction) in a fixed order, written below. Accuracy (tested,
 * tests/ops and tests/fuzz/resnorm.c): forward outputs within 2e-6 * max(|y|, |y - beta|) over
 * the channel (bf16/f16: plus 1 ulp of the dtype; beta cancels z gamma), dx within
 * 4e-6 * max(D, T) of the channel against the float64 formula, D = max|reference|, T = the
 * largest magnitude of the terms of the f32 map at an element of the channel,
 * gs (|gamma dy| + |nu z|) rb (PowerNorm; gs = 1 without group scaling) or (|gh| + |k z|) r (UN):
 * the terms cancel when a channel has few tokens (z -> +-1); f32 outputs in the subnormals
 * within 2^-148 more; the running state within 2e-6 relative to max(largest entry, T) (1e-7
 * absolute) over sequences of steps, T = the mean over the tokens of |xt z| (PowerNorm) or
 * |gh z| (UN), whose f32 terms cancel in nu's and psi's means; the saved scales within 2e-6
 * relative each. The workspace may have any alignment.
 * Range: the element-wise maps are f32, so where an intermediate (z, gamma dy, nu z, ...) leaves
 * the f32 range (beyond FLT_MAX, or subnormal before a scale multiplies it) the result is +-inf
 * or loses digits even if the exact result is finite (docs/security.md, open); in the UN
 * training backward, whose k sums gh z over the channel, the whole channel's dx (+-inf or NaN)
 * and in PowerNorm with group scaling the whole group's. NaN or inf in x,
 * dy or gamma of a channel makes its parameter gradients and backward state non-finite (NaN or
 * inf, which one depends on the order of the sums).
 *
 * Edge cases: N, S or C == 0: nothing is read or written, the state (step included) is not
 * touched, OK. A training forward whose mask leaves no valid token: INVALID_ARGUMENT (before
 * anything is written). An all-zero channel has quadratic mean 0 and normalizes by
 * 1/sqrt(eps) (finite). A constant channel normalizes to a constant (these norms do not centre).
 * NaN or inf in a channel's valid tokens makes that channel's statistic, outputs and running
 * state NaN; other channels are untouched; NaN in a padding token stays in that token.
 *
 * Aliasing: y may be x; dx may be dy or x. Other overlaps are INVALID_ARGUMENT.
 * dtypes: x, y, dy, dx hold `dtype` (F32, BF16, F16); gamma, beta, dgamma, dbeta hold
 * `param_dtype` (F32 or == dtype); state and saved statistics are f32 (the step counters int64).
 */

/* Flags shared by the research layers (same values as the channel-norm flags). */
#define NK_RESNORM_TRAINING 0x1u    /* training: batch statistics, state updated */
#define NK_RESNORM_ACCUMULATE 0x10u /* backward: dgamma/dbeta/dv += gradient (default: =) */

/* ---- PowerNorm (Shen et al. 2020; spec 4) ---------------------------------------------------
 *
 * Per channel c: psi2_B[c] = mean over valid tokens of u[p,c]^2 (no centring), where u = x, or,
 * with group scaling (groups G > 0, the official code's GroupScaling1D), per token and group k of
 * C/G consecutive channels: u = x * gs, gs = (float)(1 / sqrt(mean_{c in k} x_c^2 + gs_eps)).
 *   z = u * rf[c];  y = z * gamma[c] + beta[c]           (f32; gamma 1, beta 0 if NULL)
 * rf is the forward scale (float)(1 / sqrt(stat + eps)) with stat:
 *   NK_POWERNORM_CODE (default; official MaskPowerNorm, what produced the published results):
 *     training step t = step + 1 (step is incremented): stat = psi2_B while t <= warmup, else
 *     phi (before the update); then phi <- phi*(t-1)/t + psi2_B/t if t < warmup, and always
 *     phi <- alpha_fwd*phi + (1-alpha_fwd)*psi2_B (double, rounded to f32).
 *   NK_POWERNORM_PAPER (Algorithm 1): stat = phi (the previous running statistic psi^2_{t-1})
 *     in every training step; phi <- alpha_fwd*phi + (1-alpha_fwd)*psi2_B; warmup is ignored.
 *   NK_POWERNORM_PNV (the paper's PN-V ablation, a test mode): stat = psi2_B in every training
 *     step (warmup ignored); phi <- alpha_fwd*phi + (1-alpha_fwd)*psi2_B for inference.
 *   Inference (no TRAINING flag, all modes): stat = phi; nothing is updated.
 * Backward of NK_POWERNORM_PNV in training: the exact gradient through the batch statistic
 * (RMSNorm along the batch axis), nu not read or updated:
 *   du = rb[c] * (gamma*dy - [token valid] * z * k[c]),  k[c] = gamma[c] * sum_A(dy z) / |V|
 *   (A = all tokens, V = the valid tokens of the mask given to the backward, which must be the
 *   forward's; padding tokens are normalized but do not enter psi2_B, so their term is 0).
 * Backward of CODE and PAPER (approximate by design; spec 4.1 step 4, 4.2 step 5), with nu
 * the running backward statistic (nu = (1 - alpha_bwd) * E of the official code; spec 16.4):
 *   xt = gamma*dy - nu*z (f32, nu before the update);  du = xt * rb[c]
 *   nu <- nu + (1 - alpha_bwd) * mean_A(xt * z)    (= nu(1-(1-a)Gamma) + (1-a)Lambda, double)
 *   rb = the batch scale 1/sqrt(psi2_B + eps) (CODE, in every phase) or rf (PAPER).
 *   Inference backward (all modes): dx = gamma*dy*rf (the exact gradient of the affine map),
 *   nu untouched.
 *   All modes, with group scaling: dx = gs * (du - u * mean_k(du * u)) (exact chain rule of
 *   the group RMS scaling), evaluated in double from the double gs and u = x gs (with the
 *   forward's f32 u it cancels: a group of one channel gives du (1 - u^2)); without, dx = du.
 *   dgamma = sum_A dy * z, dbeta = sum_A dy.
 * State: phi[C] (running psi^2, init 1), nu[C] (init 0), step (init 0): nk_powernorm_state_init.
 * Defaults (nk_powernorm_desc_dense): CODE, alpha_fwd = alpha_bwd = 0.9, eps = gs_eps = 1e-5,
 * groups 0 (the official code uses the number of attention heads), warmup 0 (the official
 * scripts pass the LR warm-up, 4000-10000 updates).
 */
typedef enum nk_powernorm_mode {
  NK_POWERNORM_CODE = 0,  /* official MaskPowerNorm (published results) */
  NK_POWERNORM_PAPER = 1, /* Algorithm 1 as reconstructed in the spec */
  NK_POWERNORM_PNV = 2,   /* PN-V ablation: batch statistic, exact backward (test mode) */
} nk_powernorm_mode;

typedef struct nk_powernorm_desc {
  size_t batch;    /* N */
  size_t spatial;  /* S (sequence) */
  size_t channels; /* C */
  size_t groups;   /* group scaling: G dividing C, 0 = off */
  nk_powernorm_mode mode;
  nk_dtype dtype;       /* x, y, dy, dx */
  nk_dtype param_dtype; /* gamma, beta, dgamma, dbeta: F32 or == dtype */
  float eps;            /* > 0, finite */
  float gs_eps;         /* group scaling's eps, > 0 (used when groups > 0) */
  float alpha_fwd, alpha_bwd; /* decays in [0, 1] */
  int64_t warmup;       /* T_w >= 0 (CODE mode) */
  uint32_t flags;       /* NK_RESNORM_TRAINING, NK_RESNORM_ACCUMULATE */
  ptrdiff_t x_n_stride, x_row_stride;
  ptrdiff_t y_n_stride, y_row_stride;
  ptrdiff_t dy_n_stride, dy_row_stride;
  ptrdiff_t dx_n_stride, dx_row_stride;
  ptrdiff_t mask_n_stride, mask_s_stride; /* bytes */
} nk_powernorm_desc;

typedef struct nk_powernorm_state {
  float *phi;   /* C: running quadratic mean psi^2 (init 1) */
  float *nu;    /* C: running backward statistic (init 0) */
  int64_t step; /* training forward calls so far (init 0) */
} nk_powernorm_state;

/* Dense N x S x C descriptor with the defaults above (mask strides: a dense [n][s] mask). */
NK_API nk_powernorm_desc nk_powernorm_desc_dense(size_t batch, size_t spatial, size_t channels,
                                                 nk_dtype dtype);
/* phi <- 1, nu <- 0, step <- 0 for C channels. Returns OK or INVALID_ARGUMENT (NULL). */
NK_API nk_status nk_powernorm_state_init(size_t channels, nk_powernorm_state *state);
/* Workspace bytes of nk_powernorm_fwd / nk_powernorm_bwd (a function of the sizes). */
NK_API nk_status nk_powernorm_fwd_workspace_size(const nk_powernorm_desc *desc, size_t *bytes);
NK_API nk_status nk_powernorm_bwd_workspace_size(const nk_powernorm_desc *desc, size_t *bytes);

/* PowerNorm forward.
 *   x           IN  the tokens.  mask IN optional (see above).
 *   gamma, beta IN  optional, C of param_dtype.
 *   state       IN/OUT phi and step updated in training; IN in inference (phi read).
 *   y           OUT the output (may be x).
 *   save        OUT optional, 2*C floats: save[c] = rf (forward scale), save[C + c] = the batch
 *               scale 1/sqrt(psi2_B + eps) (training) or rf (inference). The backward needs it.
 *   workspace   nk_powernorm_fwd_workspace_size bytes.
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED (dtype combination), MISUSE (workspace). */
NK_API nk_status nk_powernorm_fwd(nk_context *ctx, const nk_powernorm_desc *desc, const void *x,
                                  const uint8_t *mask, const void *gamma, const void *beta,
                                  nk_powernorm_state *state, void *y, float *save,
                                  void *workspace, size_t workspace_size);
/* PowerNorm backward (formulas above). The flags and mode must be those of the forward.
 *   x, gamma    IN  as given to the forward; save IN from the forward (2*C floats).
 *   mask        IN  optional, the forward's mask; read only by a PN-V training backward (the
 *               CODE and PAPER backwards take their means over all tokens, as the code does).
 *               A PN-V training backward whose mask leaves no valid token: INVALID_ARGUMENT.
 *   state       IN/OUT CODE/PAPER training: nu updated (phi, step not touched); PN-V and
 *               inference: not read.
 *   dy          IN;  dx OUT (may be dy or x).
 *   dgamma, dbeta OUT optional, C of param_dtype; overwritten, or added to with ACCUMULATE.
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED, MISUSE. */
NK_API nk_status nk_powernorm_bwd(nk_context *ctx, const nk_powernorm_desc *desc, const void *x,
                                  const uint8_t *mask, const void *gamma, const float *save,
                                  nk_powernorm_state *state, const void *dy, void *dx,
                                  void *dgamma, void *dbeta, void *workspace,
                                  size_t workspace_size);

/* ---- Unified Normalization (Yang et al. 2022; spec 5, the official code's order) -------------
 *
 * Training forward, step t = step + 1, slot = t mod M (M = window_fwd), per channel c:
 *   s2[c]   = mean over valid tokens of x^2 (double)
 *   Vrec    = unbiased variance of sqrt(F) over all M*C window entries (one scalar; with
 *             NK_UNIFIEDNORM_FILTER_PER_CHANNEL the paper's per-channel variance over M), before
 *             the window update; M == 1: 0
 *   F[slot] <- s2
 *   skip    = NK_UNIFIEDNORM_FILTER and t >= warmup and (M == 1 or some channel has
 *             AM[c] - GM[c] > M * Vrec), AM = mean_k F[k,c], GM = exp(mean_k log F[k,c]) (0 if
 *             any F[k,c] == 0); on skip F[slot] <- phi and state->skips += 1
 *   sh2     = s2 if t <= M or t < warmup or skip, else GM[c]
 *   rho     = 1 if t <= max(rho_warmup, warmup) or skip, else
 *             clamp(sqrt(sh2 + eps) / sqrt(phi + eps), rho_min, rho_max)
 *   z = x * r, r = (float)(1 / sqrt(sh2 + eps));  y = z * gamma + beta
 *   phi <- alpha * phi + (1 - alpha) * sh2          (state updates in double, stored f32)
 * Training backward (approximate by design; called after the forward of the same step):
 *   gh = (rho * gamma) * dy (f32);  gz[c] = mean_A(gh * z) = rho gamma sum(dy z) / |A|
 *   G[t mod M'] <- (skip ? psi : gz);   m = gz if t <= M' or t < warmup or skip, else mean_k G
 *   psi <- alpha * psi + (1 - alpha) * m;  k = skip ? m : psi (the updated psi)
 *   dx = (gh - k * z) * r;  dgamma = rho * sum_A dy z;  dbeta = sum_A dy
 * Inference: z = x * (float)(1/sqrt(phi + eps)), y as above (a per-channel affine map:
 * nk_unifiednorm_fold); its backward is exact: dx = gamma dy r, dgamma = sum dy z.
 * State (nk_unifiednorm_state_init): phi[C] = 1, psi[C] = 0, F[M*C] = 0, G[M'*C] = 0, step 0,
 * skips 0, skip 0 (the skip decision of the latest training forward, read by the backward).
 * Defaults (nk_unifiednorm_desc_dense, the official NMT script): M = M' = 4, warmup 4000,
 * rho_warmup 1000, rho in [0.2, 5], alpha 0.9, eps 1e-5, filtration off (the official ViT
 * models turn it on: NK_UNIFIEDNORM_FILTER).
 */
#define NK_UNIFIEDNORM_FILTER 0x100u             /* adaptive outlier filtration */
#define NK_UNIFIEDNORM_FILTER_PER_CHANNEL 0x200u /* paper's per-channel V (default: code's scalar) */

typedef struct nk_unifiednorm_desc {
  size_t batch, spatial, channels; /* N, S, C (tokens as for PowerNorm) */
  size_t window_fwd, window_bwd;   /* M, M' >= 1 */
  nk_dtype dtype, param_dtype;
  float eps;   /* > 0 */
  float alpha; /* in [0, 1] */
  float rho_min, rho_max; /* 0 < rho_min <= 1 <= rho_max */
  int64_t warmup, rho_warmup; /* >= 0 */
  uint32_t flags; /* NK_RESNORM_TRAINING, NK_RESNORM_ACCUMULATE, NK_UNIFIEDNORM_FILTER* */
  ptrdiff_t x_n_stride, x_row_stride;
  ptrdiff_t y_n_stride, y_row_stride;
  ptrdiff_t dy_n_stride, dy_row_stride;
  ptrdiff_t dx_n_stride, dx_row_stride;
  ptrdiff_t mask_n_stride, mask_s_stride; /* bytes */
} nk_unifiednorm_desc;

typedef struct nk_unifiednorm_state {
  float *phi;  /* C (init 1) */
  float *psi;  /* C (init 0) */
  float *fwin; /* M x C forward window of s2 (init 0) */
  float *bwin; /* M' x C backward window of gz (init 0) */
  int64_t step;  /* training forward calls (init 0) */
  int64_t skips; /* filtered steps (init 0) */
  int32_t skip;  /* whether the latest training forward was filtered */
} nk_unifiednorm_state;

NK_API nk_unifiednorm_desc nk_unifiednorm_desc_dense(size_t batch, size_t spatial,
                                                     size_t channels, nk_dtype dtype);
/* Fills the arrays of state (sizes from desc) with their initial values, step/skips/skip 0.
 * Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_unifiednorm_state_init(const nk_unifiednorm_desc *desc,
                                           nk_unifiednorm_state *state);
NK_API nk_status nk_unifiednorm_fwd_workspace_size(const nk_unifiednorm_desc *desc,
                                                   size_t *bytes);
NK_API nk_status nk_unifiednorm_bwd_workspace_size(const nk_unifiednorm_desc *desc,
                                                   size_t *bytes);
/* UN forward. state IN/OUT (training) or IN (inference: phi). save OUT optional, 2*C floats:
 * save[c] = r, save[C + c] = rho (1 in inference); the backward needs it. Other arguments as
 * nk_powernorm_fwd. Returns OK, INVALID_ARGUMENT, UNSUPPORTED, MISUSE. */
NK_API nk_status nk_unifiednorm_fwd(nk_context *ctx, const nk_unifiednorm_desc *desc,
                                    const void *x, const uint8_t *mask, const void *gamma,
                                    const void *beta, nk_unifiednorm_state *state, void *y,
                                    float *save, void *workspace, size_t workspace_size);
/* UN backward. x, gamma, save as in the forward; state IN/OUT in training (psi, bwin; reads
 * step and skip), not read in inference. dx may be dy or x; dgamma, dbeta optional
 * (overwritten, or added to with ACCUMULATE). Returns OK, INVALID_ARGUMENT, UNSUPPORTED, MISUSE
 * (workspace too small, or a training backward with state->step == 0: no forward ran). */
NK_API nk_status nk_unifiednorm_bwd(nk_context *ctx, const nk_unifiednorm_desc *desc,
                                    const void *x, const void *gamma, const float *save,
                                    nk_unifiednorm_state *state, const void *dy, void *dx,
                                    void *dgamma, void *dbeta, void *workspace,
                                    size_t workspace_size);
/* Inference UN as y = x * scale + shift: scale = gamma / sqrt(phi + eps), shift = beta (double,
 * rounded to f32); gamma, beta optional (f32). Fold into the next linear layer with
 * W' = W diag(scale), b' = b + W shift. Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_unifiednorm_fold(size_t channels, float eps, const float *phi,
                                     const float *gamma, const float *beta, float *scale,
                                     float *shift);

/* ---- EvoNorm-B0 and EvoNorm-S0 (Liu et al. 2020; spec 6, the official TF code) ----------------
 *
 * Descriptor: nk_chnorm_desc (NCHW, NHWC and N x C layouts, strides, dtypes as the channel norms;
 * z/dz strides unused). momentum m is B0's running-variance factor in PyTorch form
 * (phi <- (1 - m) phi + m var_b; m = 0.1 is the official decay 0.9). flags: NK_RESNORM_TRAINING
 * (B0), NK_RESNORM_ACCUMULATE, NK_EVONORM_AFFINE_ONLY (the official nonlinearity=False: y =
 * gamma x + beta, nothing else). Parameters gamma (1), beta (0), v (1) per channel, optional.
 * Statistics: nk_moments (as BatchNorm), biased variances, eps inside the sqrt:
 *   s_i[n,c] = sqrt(var over S of x[n,c,:] + eps)  (instance), mean mu_i
 *   s_b[c]   = sqrt(var over N*S + eps)  (batch; instance moments merged in n order), mean mu_b
 *   s_g[n,k] = sqrt(var over (C/G)*S + eps)  (group k of C/G consecutive channels)
 * (each std computed in double, rounded to f32; means kept as f32 hi + lo parts).
 * B0:  d = max(s_b, v*x + s_i) (f32; ties and a NaN s_b pick s_b);  y = (x / d) * gamma + beta.
 *      Training: s_b from the batch, phi[c] <- (1 - m) phi + m var_b (biased, double).
 *      Inference: s_b = (float)sqrt(phi + eps); s_i still from the input.
 *      Backward (exact, spec 6.1): gh = gamma dy, delta = -(gh * (x/d))/d, mask b = [s_b >= v x + s_i]:
 *      dx = gh/d + (b ? 0 : v delta) + A_b (x - mu_b)/(s_b N S) + A_i (x - mu_i)/(s_i S),
 *      A_b = sum over the channel of b delta (0 in inference), A_i = sum over the instance of
 *      (1-b) delta; dv = sum (1-b) delta x; dgamma = sum dy x/d; dbeta = sum dy.
 * S0:  a = x * sigmoid(v x);  y = (a / s_g) * gamma + beta (batch-independent; no state).
 *      G = groups; if C % G != 0, G is decreased until it divides C (official code).
 *      Backward (exact, spec 6.2): dx = (gh/s_g)(sig + v x sig') + A_g (x - mu_g)/(s_g (C/G) S),
 *      A_g = -sum_{group} gh a / s_g^2; dv = sum (gh/s_g) x^2 sig'; dgamma = sum dy a/s_g.
 *      sigmoid is normkit's own f32 exp (docs/ops/evonorm.md; same bits on every ISA).
 * AFFINE_ONLY: no statistic is computed or written (save_* may be NULL, running_var is not
 * touched); backward dx = gamma dy, dgamma = sum dy x, dbeta = sum dy, dv = 0.
 * Saved statistics (f32 triples mean_hi, mean_lo, std): B0 save_b[3*C] (batch or running std),
 * save_i[3*N*C] ([n][c]); S0 save_g[3*N*G] ([n][k], G after the adjustment).
 * Evaluation: B0's v x + s_i is rounded once; its non-b branch gh/d + v delta is evaluated as
 * (gh/d)(s_i/d) (the sum cancels when s_i << |v x|); the terms A (x - mu)/(s count) as
 * (A/count)((x - mu)/s) (the coefficient A/(s count) can underflow f32). The b decision is made
 * in f32 as written: at a near-tie the gradient jumps to the other branch's.
 * Accuracy (tested, tests/ops and tests/fuzz/resnorm.c): y within 2e-6 * max(|y|, |y - beta|)
 * per channel, dx within 4e-6 * max(D, T) per channel, D = max|ref|, T = the largest sum of the
 * magnitudes of the formula's terms at an element of the channel (B0 |gh/d| or |gh s_i/d^2|,
 * |A_b|' |x - mu_b|/(s_b N S), |A_i|' |x - mu_i|/(s_i S); S0 |(gh/s_g)(sig + v x sig')|,
 * |A_g|' |x - mu_g|/(s_g (C/G) S), where |A|' is the sum of the magnitudes of A's terms: they
 * cancel in small sets, e.g. N = 1, S = 2, and A itself cancels, e.g. in an instance of
 * x ~ 1e4 with spread 1, 70 times below its terms) (bf16/f16:
 * plus 1 ulp of the dtype; f32 outputs in the subnormals within 2^-148 more); dgamma and dv
 * within 4e-6 * max(D, T) + 1e-6 over the vector, D = the largest |reference|, T = the largest
 * channel's sum of the magnitudes of the terms (|dy x/d|, |dy a/s_g|, affine |dy x|; B0
 * |(1-b) delta x|, S0 |(gh/s_g) x^2 sig'|: the f32 terms cancel in the sums), dbeta 2e-6; saved
 * statistics: mean 1 f32 ulp + 1e-6 sd, std 2e-6 relative (as the channel norms). NaN or inf in
 * x, dy, gamma or v of a channel: its dx and parameter gradients are non-finite (NaN or inf).
 * The workspace may have any alignment.
 * Range: |x| <= FLT_MAX/4 (as the channel norms); as for PowerNorm, an f32 intermediate beyond
 * FLT_MAX or subnormal (v x + s_i, x/d, gamma dy, gh/d, B0's delta = gh x/d^2, S0's x x and
 * sigmoid near underflow)
 * gives +-inf, 0 or few digits; B0 where v x + s_i cancels (|s_i| > 8 d) carries the f32
 * rounding of the saved s_i amplified by s_i/d (both open, docs/security.md).
 * Edge cases: N, C or S == 0: no-op; a constant instance has s_i = sqrt(eps) (finite gradients);
 * NaN in an instance (group) stays in it (and in its channel for B0's batch statistics).
 * Aliasing: y may be x; dx may be dy or x.
 */
#define NK_EVONORM_AFFINE_ONLY 0x100u
typedef nk_chnorm_desc nk_evonorm_desc;

/* Workspace bytes (a function of the sizes): forward N*C nk_moments; backward N*C*5 doubles. */
NK_API nk_status nk_evonorm_b0_fwd_workspace_size(const nk_evonorm_desc *desc, size_t *bytes);
NK_API nk_status nk_evonorm_b0_bwd_workspace_size(const nk_evonorm_desc *desc, size_t *bytes);
NK_API nk_status nk_evonorm_s0_fwd_workspace_size(const nk_evonorm_desc *desc, size_t *bytes);
NK_API nk_status nk_evonorm_s0_bwd_workspace_size(const nk_evonorm_desc *desc, size_t *bytes);

/* B0 forward. running_var IN/OUT (training, optional) / IN (inference, required), C floats.
 * save_b, save_i OUT optional (required by the backward). Returns OK, INVALID_ARGUMENT,
 * UNSUPPORTED, MISUSE. */
NK_API nk_status nk_evonorm_b0_fwd(nk_context *ctx, const nk_evonorm_desc *desc, const void *x,
                                   const void *gamma, const void *beta, const void *v,
                                   float *running_var, void *y, float *save_b, float *save_i,
                                   void *workspace, size_t workspace_size);
/* B0 backward (TRAINING flag as in the forward). dgamma, dbeta, dv OUT optional. */
NK_API nk_status nk_evonorm_b0_bwd(nk_context *ctx, const nk_evonorm_desc *desc, const void *x,
                                   const void *gamma, const void *v, const float *save_b,
                                   const float *save_i, const void *dy, void *dx, void *dgamma,
                                   void *dbeta, void *dv, void *workspace,
                                   size_t workspace_size);
/* S0 forward / backward. save_g OUT / IN, 3*N*G floats (G as adjusted). */
NK_API nk_status nk_evonorm_s0_fwd(nk_context *ctx, const nk_evonorm_desc *desc, const void *x,
                                   const void *gamma, const void *beta, const void *v, void *y,
                                   float *save_g, void *workspace, size_t workspace_size);
NK_API nk_status nk_evonorm_s0_bwd(nk_context *ctx, const nk_evonorm_desc *desc, const void *x,
                                   const void *gamma, const void *v, const float *save_g,
                                   const void *dy, void *dx, void *dgamma, void *dbeta, void *dv,
                                   void *workspace, size_t workspace_size);
/* The group count S0 uses for C channels and a requested G >= 1 (G lowered until it divides
 * C; 0 for C == 0 or G == 0). */
NK_API size_t nk_evonorm_s0_groups(size_t channels, size_t groups);
/* ==== Calibration and model merging: h-calibration, PCB-Merging ============================== */

/* h-calibration (Huang et al., arXiv 2506.17968; official code WenjianHuang93/h-Calibration,
 * loss/hCalib.py hcalibration / hcalib_subfunc, models/tsensemble_linear.py; spec
 * stats-optim-rl.md D14; docs/ops/hcal.md). Post-hoc recalibration: a monotone map of the
 * logits is fit on held-out (logits, labels) by minimizing the code's loss H(P, O):
 *   events: the n x K probabilities P and one-hot outcomes O, flattened row-major;
 *   leave-one-class-out (leave_one_out != 0, the code's IsIter): for each class e = 0..K-1 the
 *     event set of the rows whose label is not e (all K columns); otherwise one set of all rows
 *   per set of E events: sort by key log(p + 1e-20) ascending, ties by flattened index (the code's
 *     torch.sort leaves ties unspecified); r = veclen / 2, w = veclen + 1;
 *     S_i = sum_{j = i-r}^{i+r} (p_j - o_j) over the sorted events (outside 0..E-1: 0, zero
 *     padding; the divisor stays w);  T_i = |S_i| / w;  e_i = max(T_i - epsilon, 0)
 *   weighting: UNWEIGHTED: H_set = mean_i e_i;  CLUSTER (the code's cluaceweighted):
 *     1-D k-means of the sorted p into `clusters` clusters, H_set = mean over the clusters of
 *     sum_{i in c} e_i / (count_c + 1e-5). The code's faiss k-means is replaced by a
 *     deterministic Lloyd's iteration: centroids start at the sorted values of index
 *     floor((2c + 1) E / (2 clusters)), kmeans_iters rounds (faiss' default 25) of "assign each
 *     value to the nearest centroid (ties: the lower cluster), move each non-empty centroid to
 *     its mean"; empty clusters keep their centroid and contribute 0.
 *   H = lossweight * mean over the sets of H_set; an empty set (every row of class e) has
 *     H_set = 0 (the code would give NaN).
 * Gradients treat the sort order and the clusters as constants (as autograd does):
 *   dH/dp_j = lossweight / nsets * sum_{i: j in window(i), T_i > epsilon} c_i sgn(S_i) / w,
 *   c_i = 1/E (UNWEIGHTED) or 1 / (clusters (count_c(i) + 1e-5)) (CLUSTER); sgn(0) = 0.
 * Only veclen even is accepted (an odd veclen makes the code's convolution one event short).
 * Arithmetic in double; serial; no allocation (caller workspace). */
typedef enum nk_hcal_weighting {
  NK_HCAL_UNWEIGHTED = 0,
  NK_HCAL_CLUSTER = 1, /* the code's default (cluaceweighted), deterministic k-means */
} nk_hcal_weighting;

typedef struct nk_hcal_desc {
  size_t veclen;               /* even, default 200 */
  double epsilon;              /* tolerance, finite >= 0, default 1e-20 */
  double lossweight;           /* finite > 0, default 1e5 */
  int leave_one_out;           /* default 1 (IsIter) */
  nk_hcal_weighting weighting; /* default NK_HCAL_CLUSTER */
  size_t clusters;             /* >= 1, default 15 */
  size_t kmeans_iters;         /* default 25 */
} nk_hcal_desc;

NK_API nk_hcal_desc nk_hcal_desc_default(void);

/* Workspace bytes of nk_hcal_loss and nk_hcal_ensemble_loss / _fit for n rows of K classes
 * (members: the ensemble size, 0 for nk_hcal_loss). Returns OK or INVALID_ARGUMENT (NULL,
 * sizes overflowing). */
NK_API nk_status nk_hcal_workspace_size(nk_context *ctx, size_t n, size_t K, size_t members,
                                        size_t *bytes);

/* H(P, O) and optionally dH/dP.
 *   probs   IN  n x K doubles in [0, 1] (rows need not sum to 1).
 *   labels  IN  n labels in [0, K).
 *   loss    OUT H.
 *   dprobs  OUT optional n x K doubles, dH/dP (overwritten).
 *   workspace  at least nk_hcal_workspace_size(n, K, 0) bytes, at any address.
 * Accuracy (tests/ops/hcal.c, tests/fuzz/calib.c): H 1e-10 relative + 1e-12 + lossweight
 * (veclen + 1) DBL_EPSILON (a calibrated window's sum of p - o cancels to rounding noise, which
 * lossweight scales); dH/dP to 1e-5 of its largest entry against central differences where the
 * loss is linear around P (at an exact tie of two keys the order is the tie-break's).
 * n == 0: loss 0. Returns OK, INVALID_ARGUMENT (NULL, K == 0, a bad desc field, a
 * probability outside [0, 1] or NaN, a label out of range, an output overlapping an input) or
 * MISUSE (workspace NULL or too small; also for the ensemble functions). */
NK_API nk_status nk_hcal_loss(nk_context *ctx, const nk_hcal_desc *desc, size_t n, size_t K,
                              const double *probs, const int64_t *labels, double *loss,
                              double *dprobs, void *workspace, size_t workspace_bytes);

/* The code's calibrator LinearMap (EnsembleTempScal) of `members` temperature scalings:
 *   zt = z - logsumexp(z) per row;  a_k = |theta_k|;  w_k = |nu_k| / sum_j |nu_j|
 *   P = sum_k w_k softmax(a_k zt)
 * order-preserving within a row (top-1 unchanged). sum |nu| must be > 0.
 *   logits IN n x K doubles (finite);  probs OUT n x K doubles. Accuracy: 1e-14 absolute. */
NK_API nk_status nk_hcal_ensemble_probs(nk_context *ctx, size_t n, size_t K,
                                        const double *logits, size_t members,
                                        const double *theta, const double *nu, double *probs);

/* H of the ensemble's probabilities and its gradients (d|x|/dx = sgn x, sgn 0 = 0):
 *   dtheta, dnu  OUT optional members doubles each.
 *   probs        OUT optional n x K (the calibrated probabilities).
 *   workspace    nk_hcal_workspace_size(n, K, members) bytes.
 * Accuracy: H and the probabilities as nk_hcal_loss and nk_hcal_ensemble_probs; dtheta, dnu as
 * dH/dP. */
NK_API nk_status nk_hcal_ensemble_loss(nk_context *ctx, const nk_hcal_desc *desc, size_t n,
                                       size_t K, const double *logits, const int64_t *labels,
                                       size_t members, const double *theta, const double *nu,
                                       double *loss, double *dtheta, double *dnu, double *probs,
                                       void *workspace, size_t workspace_bytes);

/* The deterministic substitute of the code's random initialization (kaiming_uniform_ with
 * a = sqrt(5) on a 1 x 1 x M tensor: U(-1/sqrt(M), 1/sqrt(M)) for theta and nu): the M
 * magnitudes (k + 1) / (M sqrt(M)), k = 0..M-1, for both. Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_hcal_ensemble_init(nk_context *ctx, size_t members, double *theta,
                                       double *nu);

/* Fit of theta, nu (IN: the start, OUT: the result) by full-batch Adam on H (the code: Adam
 * lr 5e-3, betas 0.9/0.999, eps 1e-8, batches of 5000 shuffled rows, up to 2000 epochs with
 * plateau LR reduction and early stopping; here: one full batch per epoch, a fixed number of
 * epochs, no schedule, so the result is deterministic). The parameters with the lowest loss
 * seen are returned; *final_loss (optional) is that loss (no bound on the parameters is
 * promised; tested: finite, final_loss equal to nk_hcal_ensemble_loss at the result and not above
 * the loss at the start). */
typedef struct nk_hcal_fit_desc {
  size_t epochs;          /* default 2000 */
  double lr;              /* default 5e-3 */
  double beta1, beta2;    /* defaults 0.9, 0.999 */
  double eps;             /* default 1e-8 */
} nk_hcal_fit_desc;
NK_API nk_hcal_fit_desc nk_hcal_fit_desc_default(void);
NK_API nk_status nk_hcal_ensemble_fit(nk_context *ctx, const nk_hcal_desc *desc,
                                      const nk_hcal_fit_desc *fit, size_t n, size_t K,
                                      const double *logits, const int64_t *labels,
                                      size_t members, double *theta, double *nu,
                                      double *final_loss, void *workspace,
                                      size_t workspace_bytes);

/* PCB-Merging (Du et al., "Parameter Competition Balancing for Model Merging", NeurIPS 2024,
 * arXiv 2410.02396), the official code's PCB_merge (duguodong7/pcb-merging, pcb-merging.py;
 * spec stats-optim-rl.md D18; docs/ops/pcb-merge.md). n task vectors tau_i = theta_i - theta_0
 * of d parameters each (flattened, dense, row i = task i) are merged into one:
 *   order statistic s_(k) of a row: its k-th smallest value, k 0-based; idx(x) = trunc(x)
 *   (Python int()), with the code's double expressions:
 *     lo = idx(d a), hi = idx(d (1 - a) - 1)          clip indices (a = clip_ratio)
 *     kt = idx(d (1 - r))                              drop threshold index (r = keep_ratio)
 *   A_i  = |tau_i| clamped to [ |tau_i|_(lo), |tau_i|_(hi) ]        (magnitude clipping)
 *   Tc_i = sgn(tau_i) A_i                             (sgn(0) = 0: the clipped task vectors)
 *   Norm(u) = (u - min u) / (max u - min u) over the d entries; a constant row gives 0
 *             (the code's 0/0 = NaN is the spec's "guard"; a zero task vector then has no weight)
 *   intra:  S_i = exp(n Norm(A_i)^2)
 *   inter:  X_i = tanh(tau_i * sum_j tau_j)           (unclipped tau, sum over the n tasks)
 *   P_i = S_i X_i;   t_i = P_i_(kt);   W_i = Norm(max(P_i, t_i))
 *   merged = scale * sum_i W_i lambda_i Tc_i / max(sum_i W_i, 1e-12)  [+ theta_0]
 * Drop and ties: every entry with P <= t_i (the threshold value itself and every entry tied with
 * it) gets W = 0, as in the code's clamp-then-normalize; so at most d - kt - 1 entries per
 * task are kept (fewer when the threshold value repeats), and which entries are kept depends
 * only on the values, never on positions or sort stability. A task whose P row is constant has W = 0.
 * Arithmetic: double throughout (the code uses f32: here exp(n) does not overflow for n up to
 * NK_PCB_MAX_TASKS), sums over tasks in task order, merged rounded to f32 once. Order
 * statistics by selection (quickselect, median-of-three pivot; a range still unresolved after
 * 2 log2(d) + 8 partitions is sorted): O(d) expected per row. Serial (no threads).
 * The evolutionary search of lambda on validation data (nevergrad in the code) is the caller's:
 * scale and the per-task lambda_i are inputs. The vision variant's inter term is not provided. */
#define NK_PCB_MAX_TASKS 700

typedef struct nk_pcb_merge_desc {
  size_t tasks;      /* n, 1 <= n <= NK_PCB_MAX_TASKS */
  size_t params;     /* d; 0: nothing read or written (OK) */
  double keep_ratio; /* r in (0, 1] with kt < d; the code's pcb_ratio (default 0.1) */
  double clip_ratio; /* a in [0, 0.5) with lo <= hi (default 1e-4; the vision script: 0.01) */
  double scale;      /* lambda applied to the merged task vector, finite (default 1: the code's
                      * merged_tv; its scripts use 1.2 or a searched value) */
} nk_pcb_merge_desc;

/* Defaults above for the given sizes. */
NK_API nk_pcb_merge_desc nk_pcb_merge_desc_default(size_t tasks, size_t params);

/* Bytes of workspace nk_pcb_merge needs: (n d + d + 2 n) doubles. Returns OK or
 * INVALID_ARGUMENT (NULL, a size overflowing). */
NK_API nk_status nk_pcb_merge_workspace_size(nk_context *ctx, const nk_pcb_merge_desc *desc,
                                             size_t *bytes);

/* The merge (formulas above).
 *   task_vectors IN  n x d floats, tau_i = theta_i - theta_0; every entry finite.
 *   task_scales  IN  optional n doubles lambda_i (finite; NULL: all 1; the vision script's
 *                per-task lambdas multiply Tc_i inside the weighted mean).
 *   theta0       IN  optional d floats added after the scale (NULL: merged is the scaled task
 *                vector).
 *   merged       OUT d floats.
 *   workspace    scratch of at least nk_pcb_merge_workspace_size bytes, at any address.
 * Returns OK, INVALID_ARGUMENT (NULL pointer, a parameter out of range, a non-finite task
 * vector entry or lambda_i, merged overlapping an input or the workspace) or MISUSE (workspace
 * NULL or too small); on failure merged is not written. Thread-safe for distinct outputs.
 * Accuracy (tests/ops/pcb_merge.c, tests/fuzz/calib.c): 1 ulp of the exact value + 1e-12 of the
 * largest |merged|. */
NK_API nk_status nk_pcb_merge(nk_context *ctx, const nk_pcb_merge_desc *desc,
                              const float *task_vectors, const double *task_scales,
                              const float *theta0, float *merged, void *workspace,
                              size_t workspace_bytes);


/* The kernel set that runs the optimizer and advantage hot paths (nk_adamp_step, nk_sgdp_step,
 * nk_grpo_advantages) for ctx's ISA: "nk_optim__scalar", "nk_optim__avx2" or
 * "nk_optim__avx512" (all give the same bits). ctx may be NULL (defaults). Never NULL. */
NK_API const char *nk_optim_kernel_name(nk_context *ctx);

/* Research normalization layers: FakeLN, power-of-two quantization, fused norm + quantize    */
/* ------------------------------------------------------------------------------------------ */
/*
 * Three related operators share one kernel family (docs/ops/fakeln.md, pow2quant.md,
 * norm-q8.md). Every one works on rows of `cols` elements, with the row-norm descriptor
 * nk_norm_desc (rows, cols, dtype, param_dtype, eps, flags, strides) where it normalizes, and
 * gives the same bits on every ISA (scalar, AVX2, AVX-512) and for every thread count.
 *
 * Integer outputs are int8_t, row-major, with a row stride in elements (>= cols). The
 * quantized value of y is q * scale; "one quantization step" is one unit of q.
 *
 * Two scale formats:
 * - Per-row absmax (the _q8 functions by default): scale = A / 127 with A = max_i |y_i| of the
 *   row; q_i = clamp(rint(y_i * 127 / A), -127, 127) (symmetric, no zero point, -128 unused).
 *   A zero row (A == 0) gives scale = 0 and q = 0 (dequantizes to exact zeros). A row with a
 *   NaN or inf in y gives scale = NaN and q = 0. Rows with A < 2^-119 get a subnormal (less
 *   precise) scale; their q is still exact to the rounding of y.
 * - Power-of-two groups (nk_pow2quant_*, and the _q8 functions with NK_Q8_POW2_GROUPS): the
 *   row is cut into groups of `group` consecutive elements (the last one may be shorter); group
 *   k of row i has one exponent e = exps[i * exp_stride + k] (int8_t) and its values are
 *   q * 2^e with q in [-Q, Q], Q = 2^(bits-1) - 1. e is the least integer with
 *   max|group| <= Q * 2^e, so nothing is clipped and the largest |q| is in (Q/2, Q]: every
 *   group keeps at least half the resolution a per-group float scale would give (the price of
 *   scales that are shifts). e is clamped to [-127, 127]: groups whose max is below
 *   Q * 2^-128 lose their tiny values to 0, and with bits == 2 a group max above 2^127
 *   saturates at q = +-1. A zero group has e = -127 and q = 0. A group holding NaN or inf
 *   has e = NK_POW2QUANT_EXP_NAN (-128) and q = 0; it dequantizes to NaN.
 *
 * This is normkit's own power-of-two group quantization. It is NOT a verified implementation of
 * ShiftQuant (Guo et al. 2024, arXiv:2411.10948): the paper's grouping rule, maximum shift,
 * rounding and tensor choice could not be confirmed from the paper or official code (see
 * docs/ops/pow2quant.md for what was found and where).
 *
 * Rounding: round half to even in the default floating-point environment; nk_pow2quant can
 * round stochastically (floor(v + u), u from a counter-based hash of (seed, row, column):
 * deterministic, the same bits on every ISA and thread count).
 *
 * Accuracy (tested): the _q8 outputs are within one quantization step of quantizing the
 * float64 reference output with the same rule (|q - q_ref| <= 1 for every element; the
 * per-row scale within 4e-6 relative of A_ref / 127; the group exponents equal except where
 * the reference group max sits within 4e-6 relative of a power-of-two boundary). These hold
 * where the error of the f32 y is small against the row's (group's) max. In general, with
 * d = 2e-6 m, m = max(|y_ref|, |y_ref - beta|) of the ROW (the float forward's bound; m > A_ref
 * where beta cancels): row mode scale within 4e-6 A_ref/127 + d/127 and
 * |q - q_ref| <= 1 + 127 d / A_ref; group mode (a group of values small against the row's
 * largest may have a step below d): e and q follow the f32 y, e may differ from the
 * reference's wherever the group max is within 4e-6 relative + d of the boundary 127 2^e, and
 * |q 2^e - y_ref| <= 2^(e-1) + d, |q - q_ref| <= 1 + d 2^-e where e equals the reference's.
 * nk_pow2quant is exact: q and e are those of the formula applied to the input values.
 * FakeLN float outputs: within 2e-6 * max|reference| of the row (LayerNorm's f32 bound);
 * bf16/f16 within 1 ulp of the correctly rounded reference; plus 2^-147 |g| / sigma_bar where
 * differences h - mu fall in the f32 subnormals (they carry 2^-149 each before the scale;
 * for FakeLN's _q8 outputs d includes that term too).
 *
 * Edge cases (tested): rows == 0 or cols == 0: nothing is read or written, OK. A row with NaN
 * or inf in its input: FakeLN y = NaN (the whole row); _q8 scale NaN and q = 0 (group mode:
 * every exponent NK_POW2QUANT_EXP_NAN); mean/rstd NaN. Constant rows: LayerNorm/FakeLN give
 * y = beta exactly (a zero row without beta), RMSNorm of a zero row gives y = beta.
 * Aliasing: h may be x or r (same pointer and stride); integer outputs and scales must not
 * overlap any other buffer (INVALID_ARGUMENT).
 * LayerNorm Scaling (nk_norm_desc.lns_scale) is not supported by the _q8 functions nor by
 * nk_fakeln_fwd / _fwd_rows: 0 and 1 (no scaling) are accepted, any other finite value >= 0 is
 * UNSUPPORTED, a negative, NaN or infinite value INVALID_ARGUMENT (it used to be ignored).
 */

/* ---- LayerNorm removal at inference: FakeLN (Baroni et al. 2025, arXiv:2507.02559) ---------
 * The LayerNorm with the per-row standard deviation replaced by one frozen scalar sigma_bar
 * per norm module (the mean subtraction stays):
 *   y = gamma * (h - mean(h)) / sigma_bar + beta,      h = x or x + r.
 * Step 1 estimates sigma_bar from calibration rows (nk_fakeln_calibrate), step 2 runs the norm
 * as that fixed affine map (nk_fakeln_fwd). */

/* Statistics of a calibration batch (all in double). rel_dev_* measure how far FakeLN is from
 * true LayerNorm on these rows: per row, the normalized part of FakeLN is that of LayerNorm
 * times s_i / sigma_bar (s_i the row's std), so its relative error is exactly
 * |s_i / sigma_bar - 1| (for LayerNorm with the same eps in s_i). */
typedef struct nk_fakeln_stats {
  size_t rows_used;      /* rows that entered the estimate (mask != 0, finite) */
  size_t rows_nonfinite; /* rows skipped because they hold NaN or inf */
  double sigma_batch;    /* mean over the used rows of s_i = sqrt(var_i + eps) */
  double sigma_min, sigma_max;
  double rel_dev_max;    /* max over used rows of |s_i / sigma_bar - 1| (sigma_bar: the output) */
  double rel_dev_rms;    /* sqrt(mean over used rows of (s_i / sigma_bar - 1)^2) */
} nk_fakeln_stats;

/* Estimates the frozen scale from calibration rows (the estimator of the official code,
 * `recompute_average_std` / `sync_std` in submarat/removing-layer-norm train.py):
 *   s_i = sqrt(var(h_i) + eps)  (biased variance; eps = desc->eps, 1e-5 in the paper's GPT-2),
 *   sigma_batch = mean of s_i over the rows with row_mask[i] != 0 (all rows without a mask)
 *                 that are finite (rows with NaN/inf are counted in rows_nonfinite and skipped),
 *   *sigma_bar = sigma_batch                                   when momentum == 0 (plain mean;
 *                over several batches call it once per batch and average, or use momentum),
 *   *sigma_bar = momentum * (*sigma_bar) + (1 - momentum) * sigma_batch   when 0 < momentum < 1
 *                (the official EMA: 0.9, or 0.9^(B/32) for GPT-2 XL; *sigma_bar IN/OUT: the
 *                previous value, which must be finite and > 0).
 * The row_mask excludes positions, e.g. the BOS token (position 0), whose norm is far larger;
 * the official initial estimate excludes it.
 *   desc   rows, cols, dtype (f32/bf16/f16), eps (> 0), x_stride (r_stride with r).
 *   x, r   IN  calibration rows; optional residual r (h = dtype(x + r)).
 *   row_mask IN optional, rows bytes.
 *   sigma_bar IN/OUT the estimate (double in the computation, stored as f32).
 *   stats  OUT optional, the batch statistics above.
 * Deterministic: per-row statistics in double (two-pass), summed over fixed chunks of rows in
 * chunk order. Returns OK, INVALID_ARGUMENT (NULL x/sigma_bar, momentum outside [0, 1), no
 * usable row, a previous *sigma_bar that is not finite and > 0 with momentum > 0). */
NK_API nk_status nk_fakeln_calibrate(nk_context *ctx, const nk_norm_desc *desc, const void *x,
                                     const void *r, const uint8_t *row_mask, float momentum,
                                     float *sigma_bar, nk_fakeln_stats *stats);

/* FakeLN forward: y = g * ((h - mu) * (1/sigma_bar)) + b per row, with mu the row mean
 * computed exactly as nk_layernorm_fwd computes it (the same bits), 1/sigma_bar rounded to f32
 * once, and g, b as in nk_layernorm_fwd (NK_NORM_GAMMA_OFFSET allowed).
 *   sigma_bar  finite, > 0 (eps is not used; desc->eps must still be valid).
 *   x, r, gamma, beta, y, h as nk_layernorm_fwd, except aliasing: y may NOT be x or r (no
 *   in-place y, unlike nk_layernorm_fwd; INVALID_ARGUMENT); only h may be x or r.
 *   mean OUT optional (rows floats, mu_hi).
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED. */
NK_API nk_status nk_fakeln_fwd(nk_context *ctx, const nk_norm_desc *desc, float sigma_bar,
                               const void *x, const void *r, const void *gamma,
                               const void *beta, void *y, void *h, float *mean);
/* Rows [row_begin, row_end) on the calling thread; bit-identical to nk_fakeln_fwd. */
NK_API nk_status nk_fakeln_fwd_rows(nk_context *ctx, const nk_norm_desc *desc,
                                    size_t row_begin, size_t row_end, float sigma_bar,
                                    const void *x, const void *r, const void *gamma,
                                    const void *beta, void *y, void *h, float *mean);

/* FakeLN backward (fine-tuning through a frozen FakeLN; spec 10, the official FakeLayerNorm,
 * whose std is a constant: autograd gives no variance term):
 *   dx = (gh - mean(gh)) / sigma_bar [+ dh],  gh = g * dy;
 *   dgamma = sum over rows of dy * xhat,  dbeta = sum of dy,  xhat = (h - mu) / sigma_bar;
 *   sigma_bar receives no gradient.
 * The arguments are nk_layernorm_bwd's with the saved rstd replaced by sigma_bar (the value the
 * forward used): x is h (or, with NK_NORM_BWD_FROM_Y, the forward's y; then mean is not read),
 * mean the forward's saved mean (nk_fakeln_fwd's `mean`, required unless FROM_Y), gamma/beta as
 * in the forward (beta read only FROM_Y), dh optional, dgamma/dbeta optional (overwritten, or
 * added to with NK_NORM_ACCUMULATE), the workspace of nk_fakeln_bwd_workspace_size. Aliasing:
 * dx may be dy, x or dh.
 * Arithmetic: the LayerNorm backward kernels (same canonical sums, same chunked parameter
 * reduction; bit-identical across ISAs and thread counts) with rstd = (float)(1 / sigma_bar)
 * for every row and the variance coefficient b = 0: dx_i = fmaf(-xhat_i, 0, gh_i - a) * rstd,
 * a = (float)(mean of gh). Rows whose sums overflow, or a 1/sigma_bar that is not a normal
 * f32 (sigma_bar beyond 2^126), take the double row routine; sigma_bar below 2^-128 (1/sigma_bar
 * beyond FLT_MAX, where the forward's y is already +-inf or NaN) gives NaN rows.
 * Accuracy (tests/ops/fakeln.c): dx within 4e-6 * max(D, T) per row, D = max|reference dx|,
 * T = max (|gh| + |mean(gh)|) / sigma_bar (the subtraction cancels; bf16/f16 + 1 ulp; f32
 * subnormal outputs within 2^-148 more); dgamma within 4e-6 * sum over rows of |dy| max|xhat|
 * of the row (as LayerNorm's: xhat carries the rounding of h - mean at the row's scale;
 * + 2^-148 sum|dy| (1 + 1/sigma_bar) for h - mu or xhat in the f32 subnormals), dbeta within
 * 4e-6 * sum|dy| (each + 1 ulp of param_dtype). NaN/inf in a row of x (from y: of the
 * stored y, e.g. an f16 y that overflowed): that row's dx is NaN (dgamma NaN, dbeta sums dy).
 * Range: xhat is formed in f32, so an element with |h - mu| / sigma_bar beyond FLT_MAX (where
 * the forward's y is already +-inf) may get dx NaN and a non-finite dgamma (docs/security.md,
 * "FakeLN f32 intermediates overflow"). lns_scale 0 or 1 only (else UNSUPPORTED), as the
 * forward.
 * Returns OK, INVALID_ARGUMENT (NULL x/dy/dx, mean NULL without FROM_Y, sigma_bar not finite
 * and > 0, a gain of 0 with FROM_Y, overlaps), UNSUPPORTED, MISUSE (workspace too small). */
NK_API nk_status nk_fakeln_bwd_workspace_size(const nk_norm_desc *desc, size_t *bytes);
NK_API nk_status nk_fakeln_bwd(nk_context *ctx, const nk_norm_desc *desc, float sigma_bar,
                               const void *x, const void *gamma, const void *beta,
                               const float *mean, const void *dy, const void *dh, void *dx,
                               void *dgamma, void *dbeta, void *workspace,
                               size_t workspace_size);
/* Rows [row_begin, row_end) on the calling thread; dx as nk_fakeln_bwd; the parameter
 * gradients of these rows are ADDED in double to dgamma_acc/dbeta_acc (cols doubles each,
 * optional), as nk_layernorm_bwd_rows (workspace only with NK_NORM_BWD_FROM_Y). */
NK_API nk_status nk_fakeln_bwd_rows(nk_context *ctx, const nk_norm_desc *desc,
                                    size_t row_begin, size_t row_end, float sigma_bar,
                                    const void *x, const void *gamma, const void *beta,
                                    const float *mean, const void *dy, const void *dh, void *dx,
                                    double *dgamma_acc, double *dbeta_acc, void *workspace,
                                    size_t workspace_size);

/* The deployment trick of the official code (utils.py `remove_layernorm_by_scaling`): an
 * unmodified LayerNorm with eps' = 1e12 and gamma' = gamma * 1e6 / sigma_bar computes FakeLN
 * up to a relative 1e-12 (var / 1e12) in exact arithmetic. Writes gamma_out[i] =
 * gamma[i] * (1e6 / sigma_bar) (gamma NULL: 1e6 / sigma_bar) in f32 and *eps_out = 1e12.
 * Prefer nk_fakeln_fwd, which is exact and does not square the row. Returns OK or
 * INVALID_ARGUMENT. */
NK_API nk_status nk_fakeln_to_layernorm(nk_context *ctx, size_t cols, float sigma_bar,
                                        const float *gamma, float *gamma_out, float *eps_out);

/* ---- normkit's power-of-two group quantization (not ShiftQuant; see above) ---------------- */

#define NK_POW2QUANT_EXP_NAN (-128) /* exponent of a group holding NaN or inf */
#define NK_POW2QUANT_STOCHASTIC 0x1u /* round floor(v + u) instead of half-even */

typedef struct nk_pow2quant_desc {
  size_t rows, cols;
  nk_dtype dtype;       /* x and the dequantized y: f32, bf16, f16 */
  size_t group;         /* elements per group along the row, >= 1 (32 is a good default) */
  unsigned bits;        /* 2..8: q in [-(2^(bits-1) - 1), 2^(bits-1) - 1] */
  uint32_t flags;       /* NK_POW2QUANT_* */
  uint64_t seed;        /* stochastic rounding: the hash key (same seed, same bits) */
  ptrdiff_t x_stride;   /* x (and y of the dequantize), >= cols */
  ptrdiff_t q_stride;   /* int8 q, >= cols */
  ptrdiff_t exp_stride; /* int8 exponents, >= ceil(cols / group) */
} nk_pow2quant_desc;

/* Dense strides, bits 8, group 32, round half even. */
NK_API nk_pow2quant_desc nk_pow2quant_desc_dense(size_t rows, size_t cols, nk_dtype dtype);

/* Quantizes x: per group e = least integer with max|x| <= Q 2^e (clamped, see above),
 * q = clamp(round(x * 2^-e), -Q, Q). x * 2^-e is exact (a power-of-two scaling), so the only
 * rounding is the integer rounding: |x - q 2^e| <= 2^(e-1) (half a step; < one step with
 * stochastic rounding, which is unbiased up to the 2^-24 resolution of u).
 *   x IN; q OUT rows x q_stride int8; exps OUT rows x exp_stride int8.
 * Returns OK, INVALID_ARGUMENT (bits, group, strides, NULLs, overlaps), UNSUPPORTED (dtype). */
NK_API nk_status nk_pow2quant_quantize(nk_context *ctx, const nk_pow2quant_desc *desc,
                                       const void *x, int8_t *q, int8_t *exps);
/* The row range [row_begin, row_end) on the calling thread (bit-identical: the stochastic hash
 * uses the global row index). */
NK_API nk_status nk_pow2quant_quantize_rows(nk_context *ctx, const nk_pow2quant_desc *desc,
                                            size_t row_begin, size_t row_end, const void *x,
                                            int8_t *q, int8_t *exps);
/* y = q * 2^e (exact in f32; rounded to nearest even for bf16/f16 outputs), NaN for groups
 * with NK_POW2QUANT_EXP_NAN. A value within half a step of FLT_MAX rounds to q * 2^e = 2^128
 * and dequantizes to +-inf (f32 has no 2^128). desc->bits and flags are not used (q is read as int8; values
 * outside [-Q, Q] are dequantized as they are). y OUT rows x x_stride of desc->dtype.
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED. */
NK_API nk_status nk_pow2quant_dequantize(nk_context *ctx, const nk_pow2quant_desc *desc,
                                         const int8_t *q, const int8_t *exps, void *y);

/* ---- fused norm + quantize: LayerNorm / RMSNorm (+ residual) writing int8 -----------------
 * y is computed exactly as nk_layernorm_fwd / nk_rmsnorm_fwd compute it in f32 (the same
 * statistics, the same bits before rounding to dtype), then quantized without being stored:
 *   NK_Q8_ROW_ABSMAX (default): q (int8, y_stride as its row stride) and scale[row] (f32).
 *   NK_Q8_POW2_GROUPS: q and exps in nk_pow2quant's format with bits = 8 (Q = 127), groups of
 *                      q8->group elements, exps row stride q8->exp_stride.
 * desc: as for the float forward; y_stride is the row stride of q (in int8 elements); flags:
 * NK_NORM_GAMMA_OFFSET only (the backward flags are INVALID_ARGUMENT). h, mean and rstd are
 * the optional outputs of the float forward (h = x + r in dtype). */
typedef enum nk_q8_mode {
  NK_Q8_ROW_ABSMAX = 0,
  NK_Q8_POW2_GROUPS = 1,
} nk_q8_mode;

typedef struct nk_q8_desc {
  nk_q8_mode mode;
  size_t group;         /* NK_Q8_POW2_GROUPS: elements per group, >= 1 */
  ptrdiff_t exp_stride; /* NK_Q8_POW2_GROUPS: >= ceil(cols / group) */
} nk_q8_desc;

/*   q8     IN  the output format; NULL means NK_Q8_ROW_ABSMAX.
 *   q      OUT rows x y_stride int8.
 *   scale  OUT rows floats (NK_Q8_ROW_ABSMAX; must be NULL in group mode).
 *   exps   OUT rows x exp_stride int8 (NK_Q8_POW2_GROUPS; must be NULL in row mode).
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED. */
NK_API nk_status nk_layernorm_fwd_q8(nk_context *ctx, const nk_layernorm_desc *desc,
                                     const nk_q8_desc *q8, const void *x, const void *r,
                                     const void *gamma, const void *beta, int8_t *q,
                                     float *scale, int8_t *exps, void *h, float *mean,
                                     float *rstd);
NK_API nk_status nk_layernorm_fwd_q8_rows(nk_context *ctx, const nk_layernorm_desc *desc,
                                          const nk_q8_desc *q8, size_t row_begin,
                                          size_t row_end, const void *x, const void *r,
                                          const void *gamma, const void *beta, int8_t *q,
                                          float *scale, int8_t *exps, void *h, float *mean,
                                          float *rstd);
NK_API nk_status nk_rmsnorm_fwd_q8(nk_context *ctx, const nk_rmsnorm_desc *desc,
                                   const nk_q8_desc *q8, const void *x, const void *r,
                                   const void *gamma, const void *beta, int8_t *q, float *scale,
                                   int8_t *exps, void *h, float *rstd);
NK_API nk_status nk_rmsnorm_fwd_q8_rows(nk_context *ctx, const nk_rmsnorm_desc *desc,
                                        const nk_q8_desc *q8, size_t row_begin, size_t row_end,
                                        const void *x, const void *r, const void *gamma,
                                        const void *beta, int8_t *q, float *scale,
                                        int8_t *exps, void *h, float *rstd);
/* FakeLN writing int8 (the same formats): y of nk_fakeln_fwd, quantized. */
NK_API nk_status nk_fakeln_fwd_q8(nk_context *ctx, const nk_norm_desc *desc,
                                  const nk_q8_desc *q8, float sigma_bar, const void *x,
                                  const void *r, const void *gamma, const void *beta, int8_t *q,
                                  float *scale, int8_t *exps, void *h, float *mean);

/* Dequantizes the per-row absmax format: y[i][j] = q[i][j] * scale[i] (f32 product, rounded
 * to y_dtype). rows x cols; q_stride, y_stride in elements (>= cols). scale NaN gives NaN.
 * Returns OK, INVALID_ARGUMENT, UNSUPPORTED (y_dtype). */
NK_API nk_status nk_dequantize_q8(nk_context *ctx, size_t rows, size_t cols, const int8_t *q,
                                  ptrdiff_t q_stride, const float *scale, nk_dtype y_dtype,
                                  void *y, ptrdiff_t y_stride);

/* Research normalization layers: CRMSNorm and the Pre-LN conversions, L1 LayerNorm            */
/* ------------------------------------------------------------------------------------------ */
/*
 * CRMSNorm (Jiang, Gu, Zhu, Pan, NeurIPS 2023, "Pre-RMSNorm and Pre-CRMSNorm Transformers",
 * arXiv:2305.14858; official code github ZixuanJiang/pre-rmsnorm-transformer,
 * torch/customized_layer.py `crms_norm`; spec/layers.md §3; docs/ops/crmsnorm.md).
 * A zero-mean vector z of width D is stored in d = D - 1 numbers c = (z_1 .. z_{D-1}) (the last
 * one is -sum c). CRMSNorm normalizes that compressed form, per row of d = cols elements:
 *     s = sum_i c_i,   q = (sum_i c_i^2 + s^2) / (d + 1),   rstd = 1/sqrt(q + eps),
 *     y_i = c_i * rstd      [* lns_scale]
 * The divisor is d + 1 = D (the full width): CRMSNorm(c) = Cmp(RMSNorm(Dec(c))). There is no
 * affine map: in the exact conversion every gamma/beta is folded into the next linear layer
 * (nk_preln_to_precrms_reader). Backward (exact), xhat = c * rstd, shat = sum xhat:
 *     dx_i = rstd * (g_i - (xhat_i + shat) * (1/(d+1)) * sum_j g_j xhat_j)   [+ dh_i]
 * with g = dy (times lns_scale when set).
 *
 * L1 LayerNorm (Guo et al. 2024, "Towards Accurate and Efficient Sub-8-Bit Integer Training",
 * Sec. 4; the constant of Wu et al. 2018, arXiv:1802.09769; spec §11.1; docs/ops/l1norm.md).
 * The standard deviation is replaced by the mean absolute deviation times C1 = sqrt(pi/2)
 * (so that it equals sigma for Gaussian data), with eps added to the scale (outside), per row:
 *     mu = mean(h),  a = h - mu,  den = C1 * mean|a| + eps,  rscale = 1/den,
 *     xhat = a * rscale,  y = xhat * g + b   [* lns_scale]
 * g = gamma (1 + gamma with NK_NORM_GAMMA_OFFSET, 1 without), b = beta (0 without).
 * Backward (exact, subgradient sign(0) = 0), gh = g_y * g (g_y = dy [* lns_scale]),
 * eta = sign(a):
 *     dx_i = rscale * (gh_i - mean(gh) - C1 * mean(gh * xhat) * (eta_i - mean(eta)))  [+ dh_i]
 *     dgamma = sum over rows of g_y * xhat,  dbeta = sum of g_y
 * The spec marks the paper's exact form as unverified (its body could not be read): eps
 * outside the scale and C1 = sqrt(pi/2) are the documented choices (docs/ops/l1norm.md).
 *
 * Both take the row-norm descriptor nk_norm_desc: rows, cols, dtype, param_dtype (L1: gamma,
 * beta, dgamma, dbeta; F32 or == dtype), eps (finite, > 0), flags, the strides of the buffers
 * they use (x, y forward; x, dy, dh, dx backward), lns_scale. r_stride and h_stride are not
 * read: there is no fused residual. Flags: L1 accepts NK_NORM_GAMMA_OFFSET and
 * NK_NORM_ACCUMULATE; NK_NORM_BWD_FROM_Y is UNSUPPORTED for both; CRMSNorm accepts no flag
 * (GAMMA_OFFSET/ACCUMULATE: INVALID_ARGUMENT, it has no parameters).
 *
 * Arithmetic, accuracy, edge cases: as the row norms above. f32 outputs within 2e-6 x max|ref|
 * of the row (L1 with beta: of max(|y|, |y - beta|)), bf16/f16 within 1 ulp of the correctly
 * rounded float64 reference plus that f32 bound (tested), as for the row norms: the f32 part
 * matters only for outputs far below the row's largest (a bf16 L1 output of -4.36e-29 in a row
 * holding +-1e30 was 0.17 of its own size off, 1e-31 of the row's scale; found by the rowvar
 * fuzz harness); f32 outputs in the subnormals within 2^-148 more (a CRMSNorm output of
 * 2.55e-43 was 0.3 ulp off). L1 rows whose mean is below 2^-100 (subnormal data) are computed
 * in double (an f32 low part of the mean would sit on the subnormal grid; found by the rowvar
 * fuzz harness). The L1 backward's sign(h - mu) uses the library's mean, whose error is that of
 * f32 sums (a few ulps of max|h| for rows mixing magnitudes): an element that close to the mean
 * may take either sign, and each flip moves dx by up to rscale C1 |mean(gh xhat)| (2 for the
 * element itself, 2/cols for the others) beyond the bound below (a row holding +-1e30 and
 * values near 1e3 had ten of them; rowvar fuzz harness). Bit-identical for every thread
 * count and ISA.
 * rows == 0 or cols == 0: OK, nothing touched. A row with NaN/inf: that row's outputs and
 * statistics are NaN (canonical 0x7FC00000). A constant row: L1 gives y = beta (xhat = 0,
 * rscale = 1/eps) and finite gradients; CRMSNorm does not centre: a constant row c_i = v
 * gives y_i = v / sqrt(d v^2 + eps) (about sign(v)/sqrt(d)), an all-zero row 0, with finite
 * gradients. cols == 1: L1 y = beta,
 * CRMSNorm y = c / sqrt(c^2 + eps) (D = 2). Aliasing: y may be x; dx may be dy, x or dh (the
 * very same buffer and stride); other overlaps: INVALID_ARGUMENT. Statuses: OK,
 * INVALID_ARGUMENT, UNSUPPORTED (dtype combination, FROM_Y), MISUSE (workspace too small).
 */

/* CRMSNorm forward. x IN rows x cols (x_stride); y OUT (y_stride); rstd OUT optional, rows
 * floats. */
NK_API nk_status nk_crmsnorm_fwd(nk_context *ctx, const nk_norm_desc *desc, const void *x,
                                 void *y, float *rstd);
/* The same for rows [row_begin, row_end) on the calling thread (pointers still at row 0). */
NK_API nk_status nk_crmsnorm_fwd_rows(nk_context *ctx, const nk_norm_desc *desc,
                                      size_t row_begin, size_t row_end, const void *x, void *y,
                                      float *rstd);
/* CRMSNorm backward. x IN the forward input; rstd IN saved by the forward (required); dy IN;
 * dh IN optional extra gradient added to dx; dx OUT. No parameters, no workspace. */
NK_API nk_status nk_crmsnorm_bwd(nk_context *ctx, const nk_norm_desc *desc, const void *x,
                                 const float *rstd, const void *dy, const void *dh, void *dx);
NK_API nk_status nk_crmsnorm_bwd_rows(nk_context *ctx, const nk_norm_desc *desc,
                                      size_t row_begin, size_t row_end, const void *x,
                                      const float *rstd, const void *dy, const void *dh,
                                      void *dx);

/* L1 LayerNorm forward. x IN; gamma, beta IN optional (cols of param_dtype); y OUT;
 * mean OUT optional (rows floats, the refined row mean rounded to f32); rscale OUT optional
 * (rows floats, 1/(C1 mean|h - mu| + eps)). */
NK_API nk_status nk_l1norm_fwd(nk_context *ctx, const nk_norm_desc *desc, const void *x,
                               const void *gamma, const void *beta, void *y, float *mean,
                               float *rscale);
NK_API nk_status nk_l1norm_fwd_rows(nk_context *ctx, const nk_norm_desc *desc, size_t row_begin,
                                    size_t row_end, const void *x, const void *gamma,
                                    const void *beta, void *y, float *mean, float *rscale);
/* Bytes of workspace nk_l1norm_bwd needs (a function of rows and cols only). */
NK_API nk_status nk_l1norm_bwd_workspace_size(const nk_norm_desc *desc, size_t *bytes);
/* L1 LayerNorm backward. x IN the forward input; gamma IN optional; mean, rscale IN saved by
 * the forward (required; the backward recomputes the mean's low part from x); dy IN; dh IN
 * optional; dx OUT; dgamma, dbeta OUT optional (cols of param_dtype), overwritten or, with
 * NK_NORM_ACCUMULATE, added to; reduced over fixed chunks of rows in double (bit-identical
 * for every thread count). workspace: nk_l1norm_bwd_workspace_size bytes (NULL if 0). */
NK_API nk_status nk_l1norm_bwd(nk_context *ctx, const nk_norm_desc *desc, const void *x,
                               const void *gamma, const float *mean, const float *rscale,
                               const void *dy, const void *dh, void *dx, void *dgamma,
                               void *dbeta, void *workspace, size_t workspace_size);
/* Rows [row_begin, row_end) on the calling thread; parameter gradients of these rows are
 * ADDED in double to dgamma_acc / dbeta_acc (cols doubles each, optional). No workspace. */
NK_API nk_status nk_l1norm_bwd_rows(nk_context *ctx, const nk_norm_desc *desc, size_t row_begin,
                                    size_t row_end, const void *x, const void *gamma,
                                    const float *mean, const float *rscale, const void *dy,
                                    const void *dh, void *dx, double *dgamma_acc,
                                    double *dbeta_acc);

/*
 * The exact conversions Pre-LN -> Pre-RMSNorm -> Pre-CRMSNorm (Jiang et al. 2023; spec §3.3;
 * docs/ops/crmsnorm.md). They rewrite the weights of a Pre-LN Transformer so that every
 * LayerNorm becomes an RMSNorm (or a CRMSNorm on a residual stream of width D - 1), with the
 * same outputs in real arithmetic. Call them once per linear map of the model, by role:
 *   reader   a linear map that reads a normalized vector: Q, K, V projections (or a fused QKV),
 *            the FFN input(s) (up, gate), the output head. Its norm's gamma/beta are folded
 *            in (W' = W diag(gamma), b' = b + W beta), after which the norm has no affine.
 *   writer   a linear map that writes the residual stream: the attention out-projection, the
 *            FFN down-projection, a ViT patch embedding. Its outputs are centred over the model
 *            dimension (W' = P W, b' = P b, P = I - 11^T/D).
 *   embedding a table added to the stream (token, position, segment embeddings; a class
 *            token): each row centred.
 * Pre-RMSNorm then runs every norm (block and final) as nk_rmsnorm_* without gamma/beta and
 * with the same eps. Pre-CRMSNorm additionally drops the last stream coordinate: writers and
 * embeddings lose their last output row (column for tables), readers subtract their last input
 * column from the others (W''[:, j] = W'[:, j] - W'[:, D-1]); every norm becomes
 * nk_crmsnorm_* (same eps, stream width D - 1). The residual stream must be read only through
 * norms (a final norm is required); tied input/output embeddings must be stored untied.
 * Matrices are dense row-major f32 in PyTorch's nn.Linear layout W[out][in]; the arithmetic is
 * double, each output rounded once to f32. gamma/beta NULL mean 1/0; a bias NULL means 0 (the
 * output bias is then still written, unless b_out is NULL too, which needs beta NULL for a
 * reader: INVALID_ARGUMENT otherwise). Pre-RMSNorm outputs may be the very same arrays as the
 * inputs (in place); every other overlap is INVALID_ARGUMENT, and so is a pointer not aligned to
 * 4 bytes (every pointer given, also of an empty matrix). D >= 1 (Pre-CRMSNorm: D >= 2); out == 0
 * (reader) or V == 0 (embedding) is a no-op; a writer with in == 0 (W, W_out may then be NULL)
 * still centres b into b_out. Accuracy (fuzz harness tests/fuzz/preln.c; the unit tests check
 * the formulas exactly): every output within 1 ulp of the float64 result, plus, for outputs
 * that are sums — a reader's b_out, a writer's and an embedding's centred values — 1e-12 times
 * the sum of the magnitudes of their terms (|b| + sum |W_j beta_j|; |w_i| + mean_i |w_i|), the
 * double arithmetic's error. Returns OK or INVALID_ARGUMENT; never allocates.
 */

/* Reader, Pre-RMSNorm: W (out x D), b (out) -> W_out = W diag(gamma) (out x D),
 * b_out = b + W beta (out). */
NK_API nk_status nk_preln_to_prerms_reader(nk_context *ctx, size_t D, size_t out,
                                           const float *gamma, const float *beta,
                                           const float *W, const float *b, float *W_out,
                                           float *b_out);
/* Writer, Pre-RMSNorm: W (D x in), b (D) -> W_out = P W, b_out = P b (column means over the
 * D outputs subtracted). */
NK_API nk_status nk_preln_to_prerms_writer(nk_context *ctx, size_t D, size_t in, const float *W,
                                           const float *b, float *W_out, float *b_out);
/* Embedding table, Pre-RMSNorm: E (V x D) -> E_out (V x D), each row minus its mean. */
NK_API nk_status nk_preln_to_prerms_embedding(nk_context *ctx, size_t V, size_t D,
                                              const float *E, float *E_out);
/* Reader, Pre-CRMSNorm: W (out x D), b (out) -> W_out (out x (D-1)) with
 * W_out[o][j] = W[o][j] gamma_j - W[o][D-1] gamma_{D-1}, b_out = b + W beta (out). */
NK_API nk_status nk_preln_to_precrms_reader(nk_context *ctx, size_t D, size_t out,
                                            const float *gamma, const float *beta,
                                            const float *W, const float *b, float *W_out,
                                            float *b_out);
/* Writer, Pre-CRMSNorm: W (D x in), b (D) -> the first D-1 rows of P W and P b
 * (W_out (D-1) x in, b_out D-1). */
NK_API nk_status nk_preln_to_precrms_writer(nk_context *ctx, size_t D, size_t in, const float *W,
                                            const float *b, float *W_out, float *b_out);
/* Embedding table, Pre-CRMSNorm: E (V x D) -> E_out (V x (D-1)), the centred rows without
 * their last element. */
NK_API nk_status nk_preln_to_precrms_embedding(nk_context *ctx, size_t V, size_t D,
                                               const float *E, float *E_out);

/*
 * Training a Pre-RMSNorm / Pre-CRMSNorm model so that it stays equivalent to its Pre-LN form
 * (spec §3.4, the official code's training mode; docs/ops/crmsnorm.md "Training"): the free
 * parameters stay those of the Pre-LN model's writers and embeddings, and every forward step
 * recomputes the effective weights with the functions above — writer W_eff = P W, b_eff = P b;
 * each embedding row (or the summed per-token embedding h_0) centred — so the gradients reach
 * the free parameters through the projection: dW = (dW_eff transformed by the adjoint).
 * Pre-RMSNorm: P is symmetric, so the writer and the embedding functions are their own
 * adjoints: call nk_preln_to_prerms_writer(D, in, dW_eff, db_eff, dW, db) and
 * nk_preln_to_prerms_embedding(V, D, dE_eff, dE) on the gradients. Pre-CRMSNorm: the forward
 * also drops the last coordinate, so its adjoint pads a zero and centres, dW = P [dW_eff; 0]:
 */
/* Writer, Pre-CRMSNorm, adjoint: dW_out ((D-1) x in), db_out (D-1) -> dW (D x in), db (D),
 * dW = P [dW_out; 0], db = P [db_out; 0]. D >= 2; in == 0 leaves only db; db_out and db both
 * given or both NULL. No output may overlap an input (the sizes differ: no in-place).
 * Accuracy as the functions above. Returns OK or INVALID_ARGUMENT. */
NK_API nk_status nk_preln_to_precrms_writer_bwd(nk_context *ctx, size_t D, size_t in,
                                                const float *dW_out, const float *db_out,
                                                float *dW, float *db);
/* Embedding, Pre-CRMSNorm, adjoint: dE_out (V x (D-1)) -> dE (V x D), each row padded with a
 * zero and centred. */
NK_API nk_status nk_preln_to_precrms_embedding_bwd(nk_context *ctx, size_t V, size_t D,
                                                   const float *dE_out, float *dE);

#ifdef __cplusplus
}
#endif
#endif /* NORMKIT_H */
