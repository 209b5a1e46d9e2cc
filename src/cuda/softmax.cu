/*
 * softmax.cu — softmax, log_softmax (forward, backward) and fused cross-entropy on the GPU
 * (normkit_cuda.h). The row layout is rownorm.cu's: a cluster of CL blocks per row, each block
 * owning a slice of the columns, kept in shared memory when it fits (the logits z as f32 for
 * the forward; y and dy for the backward; x for cross-entropy), else read again per pass.
 *
 * Forward per row: z formed as on the CPU (x*scale, + mask, + alibi*(j - p), causal -inf, each
 * step rounded to f32); M = max(z, sink) (NaN kept; NaN or +inf makes the row NaN); S = sum
 * e^(z - M) (+ e^(sink - M)) in double; softmax y = e^(z - M) * f32(1/S), log_softmax
 * y = f32(z - lse), lse = M + log S (double). Fully masked rows (M = -inf): y = 0 / -inf, lse
 * -inf, or NaN with NK_SOFTMAX_MASKED_NAN.
 * Cross-entropy per row: M, S, the sum of z (smoothing only) and z_t; the loss and the
 * dlogits coefficients as the CPU's nk__sm_xent_finish; per-row losses in double to the
 * workspace, summed by one block in a fixed tree.
 */
#include <math.h>

#include "common.cuh"

using namespace nkc;

namespace {

struct SmP {
  const void *x, *mask, *y_in, *dy;
  const float *sink, *lse_in;
  void *y, *dx;
  float *lse, *dsink;
  long long xs, ys, ms, dys, dxs;
  long long rows, cols, slice, q_len, heads, mask_rows, causal_offset;
  float scale, alibi;
  int mask_dtype, log, causal, masked_nan, sink_per_head, cl, staged;
};

__device__ __forceinline__ float mask_val(const void *m, int dt, long long i) {
  if (dt == F32) return static_cast<const float *>(m)[i];
  if (dt == BF16) return to_f(static_cast<const __nv_bfloat16 *>(m)[i]);
  return to_f(static_cast<const __half *>(m)[i]);
}

__device__ __forceinline__ float sink_of(const SmP &p, long long row) {
  if (!p.sink) return -INFINITY;
  return p.sink_per_head ? p.sink[(row / p.q_len) % p.heads] : p.sink[row];
}

template <typename T, int V> __global__ void __launch_bounds__(512) sm_fwd_kernel(SmP p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ RedScratch red;
  const int cl = p.cl;
  const BlockSlice bs = block_slice<V>(cl, p.cols, p.slice);
  const int rank = bs.rank, nvec = bs.nvec;
  const long long base = bs.base;
  const int tid = threadIdx.x, nt = blockDim.x;
  constexpr int kU = NK_CUDA_UNROLL(V);
  float *sz = reinterpret_cast<float *>(smem_raw);
  int round = 0;

  for (long long row = blockIdx.x / cl; row < p.rows; row += gridDim.x / cl) {
    const T *xr = static_cast<const T *>(p.x) + row * p.xs + base;
    T *yr = static_cast<T *>(p.y) + row * p.ys + base;
    const long long pos = p.causal_offset + row % p.q_len;
    const float posf = (float)pos;
    const long long mrow = row % p.mask_rows;
    auto zform = [&](int k, const Pack<T, V> &xv, float (&z)[V]) {
#pragma unroll
      for (int v = 0; v < V; v++) {
        const long long j = base + (long long)k * V + v;
        float t = to_f(xv.v[v]) * p.scale;
        if (p.mask) t = t + mask_val(p.mask, p.mask_dtype, mrow * p.ms + j);
        if (p.alibi != 0.0f) t = t + p.alibi * ((float)j - posf);
        if (p.causal && j > pos) t = -INFINITY;
        z[v] = t;
      }
    };
    /* z (or, after the sum pass of a staged softmax, e^(z - m)) of vector k. */
    auto getz = [&](int k, float (&z)[V]) {
      if (p.staged) {
#pragma unroll
        for (int v = 0; v < V; v++) z[v] = sz[k * V + v];
      } else {
        zform(k, ld<T, V>(xr + (long long)k * V), z);
      }
    };
    float m = -INFINITY;
    for (int k0 = tid; k0 < nvec; k0 += kU * nt) {
      Pack<T, V> xv[kU];
#pragma unroll
      for (int u = 0; u < kU; u++) {
        const int k = k0 + u * nt;
        if (k < nvec) xv[u] = ld<T, V>(xr + (long long)k * V);
      }
#pragma unroll
      for (int u = 0; u < kU; u++) {
        const int k = k0 + u * nt;
        if (k >= nvec) break;
        float z[V];
        zform(k, xv[u], z);
#pragma unroll
        for (int v = 0; v < V; v++) {
          if (p.staged) sz[k * V + v] = z[v];
          m = max_nan(m, z[v]);
        }
      }
    }
    m = cluster_max(m, red, cl, round);
    const float sk = sink_of(p, row);
    m = max_nan(m, sk);
    const bool bad = m != m || m == INFINITY;
    const bool empty = m == -INFINITY;
    double sum = 0.0;
    /* A staged softmax keeps e^(z - m) in place of z for the output pass. */
    const bool keep_e = p.staged && !p.log;
    if (!bad && !empty) {
      double acc[1] = {0.0};
      for (int k = tid; k < nvec; k += nt) {
        float z[V];
        getz(k, z);
        float t = 0.0f;
#pragma unroll
        for (int v = 0; v < V; v++) {
          const float e = expf(z[v] - m);
          if (keep_e) sz[k * V + v] = e;
          t += e;
        }
        acc[0] += (double)t;
      }
      cluster_sum<1>(acc, red, cl, round);
      sum = acc[0];
      if (p.sink) sum += (double)expf(sk - m);
    }
    const double lse_d = bad ? (double)nan_f()
                         : empty ? (p.masked_nan ? (double)nan_f() : -INFINITY)
                                 : (double)m + log(sum);
    if (tid == 0 && rank == 0 && p.lse) p.lse[row] = canon((float)lse_d);
    const float inv = (float)(1.0 / sum);
    for (int k = tid; k < nvec; k += nt) {
      float z[V];
      getz(k, z);
      Pack<T, V> out;
#pragma unroll
      for (int v = 0; v < V; v++) {
        float yv;
        if (bad) yv = nan_f();
        else if (empty) yv = p.masked_nan ? nan_f() : (p.log ? -INFINITY : 0.0f);
        else if (p.log) yv = (float)((double)z[v] - lse_d);
        else yv = (keep_e ? z[v] : expf(z[v] - m)) * inv;
        out.v[v] = from_f<T>(yv);
      }
      st_cs<T, V>(yr + (long long)k * V, out);
    }
    if (p.staged) __syncthreads();
  }
  cluster_exit(cl);
}

template <typename T, int V> __global__ void __launch_bounds__(512) sm_bwd_kernel(SmP p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ RedScratch red;
  const int cl = p.cl;
  const BlockSlice bs = block_slice<V>(cl, p.cols, p.slice);
  const int rank = bs.rank, nvec = bs.nvec;
  const long long base = bs.base;
  const int tid = threadIdx.x, nt = blockDim.x;
  T *sy = reinterpret_cast<T *>(smem_raw);
  T *sdy = sy + p.slice;
  int round = 0;

  for (long long row = blockIdx.x / cl; row < p.rows; row += gridDim.x / cl) {
    const T *yr = static_cast<const T *>(p.y_in) + row * p.ys + base;
    const T *dyr = static_cast<const T *>(p.dy) + row * p.dys + base;
    T *dxr = static_cast<T *>(p.dx) + row * p.dxs + base;
    /* dot = sum dy*y (softmax) or sum dy (log); live = number of y != -inf (log). */
    double acc[2] = {0.0, 0.0};
    for (int k = tid; k < nvec; k += nt) {
      const Pack<T, V> yv = ld<T, V>(yr + (long long)k * V);
      const Pack<T, V> dv = ld<T, V>(dyr + (long long)k * V);
      if (p.staged) {
        st<T, V>(sy + k * V, yv);
        st<T, V>(sdy + k * V, dv);
      }
      float t = 0.0f, live = 0.0f;
#pragma unroll
      for (int v = 0; v < V; v++) {
        const float y = to_f(yv.v[v]), d = to_f(dv.v[v]);
        t += p.log ? d : d * y;
        live += y != -INFINITY ? 1.0f : 0.0f;
      }
      acc[0] += (double)t;
      acc[1] += (double)live;
    }
    cluster_sum<2>(acc, red, cl, round);
    const bool masked = p.log && acc[1] == 0.0;
    const float dot = masked ? 0.0f : (float)acc[0];
    if (tid == 0 && rank == 0 && p.dsink) {
      const float p0 = expf(sink_of(p, row) - p.lse_in[row]);
      p.dsink[row] = masked ? 0.0f : canon(-p0 * dot);
    }
    for (int k = tid; k < nvec; k += nt) {
      const Pack<T, V> yv = p.staged ? ld<T, V>(sy + k * V) : ld<T, V>(yr + (long long)k * V);
      const Pack<T, V> dv = p.staged ? ld<T, V>(sdy + k * V) : ld<T, V>(dyr + (long long)k * V);
      Pack<T, V> out;
#pragma unroll
      for (int v = 0; v < V; v++) {
        const float y = to_f(yv.v[v]), d = to_f(dv.v[v]);
        float g;
        if (masked) g = 0.0f;
        else if (p.log) g = p.scale * (d - expf(y) * dot);
        else g = p.scale * (y * (d - dot));
        out.v[v] = from_f<T>(g);
      }
      st_cs<T, V>(dxr + (long long)k * V, out);
    }
    if (p.staged) __syncthreads();
  }
  cluster_exit(cl);
}

/* ---- cross-entropy -------------------------------------------------------------------------- */

struct XeP {
  const void *x;
  const int64_t *target;
  float *loss_rows, *lse;
  double *loss_ws;       /* rows doubles (sum, mean) */
  const double *count;   /* counted rows (mean), or NULL */
  void *dx;
  long long xs, dxs, rows, cols, slice;
  long long ignore_index;
  float smoothing, z_loss, grad;
  int cl, staged;
};

template <typename T, int V> __global__ void __launch_bounds__(512) xent_kernel(XeP p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ RedScratch red;
  const int cl = p.cl;
  const BlockSlice bs = block_slice<V>(cl, p.cols, p.slice);
  const int rank = bs.rank, nvec = bs.nvec;
  const long long base = bs.base;
  const int tid = threadIdx.x, nt = blockDim.x;
  constexpr int kU = NK_CUDA_UNROLL(V);
  T *sx = reinterpret_cast<T *>(smem_raw);
  const double ls = (double)p.smoothing, zl = (double)p.z_loss, dn = (double)p.cols;
  const double c = (double)p.grad / (p.count ? *p.count : 1.0);
  int round = 0;

  for (long long row = blockIdx.x / cl; row < p.rows; row += gridDim.x / cl) {
    const T *xr = static_cast<const T *>(p.x) + row * p.xs + base;
    const long long t = p.target[row];
    const bool ignored = t == p.ignore_index;
    const bool invalid = !ignored && (t < 0 || t >= p.cols);
    /* z_t (for the loss, which thread 0 of rank 0 writes) before any block of the cluster
     * writes dlogits, which may be x: found by racecheck. */
    const float zt = (tid == 0 && rank == 0 && !ignored && !invalid)
                         ? to_f(static_cast<const T *>(p.x)[row * p.xs + t])
                         : 0.0f;
    auto getx = [&](int k) { return p.staged ? ld<T, V>(sx + k * V) : ld<T, V>(xr + (long long)k * V); };
    float m = -INFINITY;
    double tz[1] = {0.0};
    for (int k0 = tid; k0 < nvec; k0 += kU * nt) {
      Pack<T, V> xv[kU];
#pragma unroll
      for (int u = 0; u < kU; u++) {
        const int k = k0 + u * nt;
        if (k < nvec) xv[u] = ld<T, V>(xr + (long long)k * V);
      }
#pragma unroll
      for (int u = 0; u < kU; u++) {
        const int k = k0 + u * nt;
        if (k >= nvec) break;
        if (p.staged) st<T, V>(sx + k * V, xv[u]);
#pragma unroll
        for (int v = 0; v < V; v++) {
          m = max_nan(m, to_f(xv[u].v[v]));
          if (ls != 0.0) tz[0] += (double)to_f(xv[u].v[v]);
        }
      }
    }
    m = cluster_max(m, red, cl, round);
    if (ls != 0.0) cluster_sum<1>(tz, red, cl, round);
    const bool bad = m != m || m == INFINITY;
    const bool empty = m == -INFINITY;
    double L;
    float inv = 0.0f;
    if (bad) {
      L = (double)nan_f();
    } else if (empty) {
      L = -INFINITY;
    } else {
      double acc[1] = {0.0};
      for (int k = tid; k < nvec; k += nt) {
        const Pack<T, V> xv = getx(k);
        float s = 0.0f;
#pragma unroll
        for (int v = 0; v < V; v++) s += expf(to_f(xv.v[v]) - m);
        acc[0] += (double)s;
      }
      cluster_sum<1>(acc, red, cl, round);
      L = (double)m + log(acc[0]);
      inv = (float)(1.0 / acc[0]);
    }
    const bool nanrow = !ignored && (invalid || L != L || L == -INFINITY);
    double loss = 0.0;
    float a = 0.0f, b = 0.0f, bt = 0.0f;
    if (!ignored && !nanrow) {
      const double hard = ls != 1.0 ? (1.0 - ls) * (L - (double)zt) : 0.0;
      const double soft = ls != 0.0 ? ls * (L - tz[0] / dn) : 0.0;
      loss = hard + soft + zl * L * L;
      a = (float)(c * (1.0 + 2.0 * zl * L));
      b = (float)(-c * ls / dn);
      bt = (float)(-c * (ls / dn + (1.0 - ls)));
    } else if (nanrow) {
      loss = (double)nan_f();
    }
    if (tid == 0 && rank == 0) {
      if (p.lse) p.lse[row] = canon((float)L);
      if (p.loss_rows) p.loss_rows[row] = canon((float)loss);
      if (p.loss_ws) p.loss_ws[row] = loss;
    }
    if (p.dx) {
      T *dxr = static_cast<T *>(p.dx) + row * p.dxs + base;
      for (int k = tid; k < nvec; k += nt) {
        const Pack<T, V> xv = getx(k);
        Pack<T, V> out;
#pragma unroll
        for (int v = 0; v < V; v++) {
          const long long j = base + (long long)k * V + v;
          float g;
          if (ignored) {
            g = 0.0f;
          } else if (nanrow) {
            g = nan_f();
          } else {
            const float pj = expf(to_f(xv.v[v]) - m) * inv;
            g = (pj == 0.0f ? 0.0f : pj * a) + (j == t ? bt : b);
          }
          out.v[v] = from_f<T>(g);
        }
        st_cs<T, V>(dxr + (long long)k * V, out);
      }
    }
    if (p.staged) __syncthreads();
  }
  cluster_exit(cl);
}

/* Rows whose target is not ignore_index (exact in double up to 2^53). */
__global__ void count_kernel(const int64_t *target, long long rows, long long ignore, double *out) {
  __shared__ RedScratch red;
  double n[1] = {0.0};
  for (long long i = threadIdx.x; i < rows; i += blockDim.x) n[0] += target[i] != ignore ? 1.0 : 0.0;
  block_sum<1>(n, red);
  if (threadIdx.x == 0) *out = n[0];
}

/* loss[0] = sum of the rows' losses (or / count), fixed tree. */
__global__ void loss_sum_kernel(const double *ws, long long rows, const double *count, float *loss) {
  __shared__ RedScratch red;
  double s[1] = {0.0};
  for (long long i = threadIdx.x; i < rows; i += blockDim.x) s[0] += ws[i];
  block_sum<1>(s, red);
  if (threadIdx.x == 0) loss[0] = canon((float)(count ? s[0] / *count : s[0]));
}

/* ---- launchers ---------------------------------------------------------------------------- */

bool all_aligned(std::initializer_list<const void *> ptrs, std::initializer_list<long long> strides,
                 long long cols, int vec) {
  for (const void *q : ptrs)
    if (q && !aligned16(q)) return false;
  for (long long s : strides)
    if (s % vec) return false;
  return cols % vec == 0;
}

SmP sm_params(const nk__cuda_softmax_args *a) {
  SmP p = {};
  p.x = a->x; p.mask = a->mask; p.y_in = a->y_in; p.dy = a->dy;
  p.sink = a->sink; p.lse_in = a->lse_in; p.y = a->y; p.dx = a->dx;
  p.lse = a->lse; p.dsink = a->dsink;
  p.xs = a->x_stride; p.ys = a->y_stride; p.ms = a->mask_stride; p.dys = a->dy_stride;
  p.dxs = a->dx_stride;
  p.rows = (long long)a->rows; p.cols = (long long)a->cols;
  p.q_len = (long long)a->q_len; p.heads = (long long)a->heads;
  p.mask_rows = (long long)a->mask_rows; p.causal_offset = (long long)a->causal_offset;
  p.scale = a->scale; p.alibi = a->alibi; p.mask_dtype = a->mask_dtype; p.log = a->log;
  p.causal = a->causal; p.masked_nan = a->masked_nan; p.sink_per_head = a->sink_per_head;
  return p;
}

unsigned grid_rows(size_t rows, int cl) {
  const size_t r = rows < (1u << 20) ? rows : (1u << 20);
  return (unsigned)(r * (size_t)cl);
}

template <typename T, int V> int sm_fwd_run(const nk__cuda_softmax_args *a, cudaStream_t st) {
  SmP p = sm_params(a);
  p.cl = cluster_for(a->cols, 4);
  p.slice = (long long)slice_of(a->cols, p.cl, V);
  p.staged = (size_t)p.slice * 4 <= kSmemMax;
  return (int)launch(sm_fwd_kernel<T, V>, grid_rows(a->rows, p.cl), threads_for(p.slice / V),
                     p.staged ? (size_t)p.slice * 4 : 0, p.cl, st, p);
}

template <typename T, int V> int sm_bwd_run(const nk__cuda_softmax_args *a, cudaStream_t st) {
  SmP p = sm_params(a);
  p.cl = cluster_for(a->cols, 2 * sizeof(T));
  p.slice = (long long)slice_of(a->cols, p.cl, V);
  p.staged = (size_t)p.slice * 2 * sizeof(T) <= kSmemMax;
  return (int)launch(sm_bwd_kernel<T, V>, grid_rows(a->rows, p.cl), threads_for(p.slice / V),
                     p.staged ? (size_t)p.slice * 2 * sizeof(T) : 0, p.cl, st, p);
}

template <typename T, int V> int xent_run(const nk__cuda_xent_args *a, cudaStream_t st) {
  XeP p = {};
  double *ws = static_cast<double *>(a->workspace);
  const bool reduce = a->reduction != 0;
  const bool mean = a->reduction == 2;
  p.x = a->x; p.target = a->target; p.lse = a->lse; p.dx = a->dx;
  p.loss_rows = reduce ? nullptr : a->loss;
  p.loss_ws = reduce ? ws + 8 : nullptr;
  p.count = mean ? ws : nullptr;
  p.xs = a->x_stride; p.dxs = a->dx_stride;
  p.rows = (long long)a->rows; p.cols = (long long)a->cols;
  p.ignore_index = a->ignore_index;
  p.smoothing = a->smoothing; p.z_loss = a->z_loss; p.grad = a->grad;
  p.cl = cluster_for(a->cols, sizeof(T));
  p.slice = (long long)slice_of(a->cols, p.cl, V);
  p.staged = (size_t)p.slice * sizeof(T) <= kSmemMax;
  if (mean) {
    const int e = (int)launch(count_kernel, 1, 1024, 0, 1, st, a->target, p.rows,
                              (long long)p.ignore_index, ws);
    if (e) return e;
  }
  if (a->rows != 0) {
    const int e = (int)launch(xent_kernel<T, V>, grid_rows(a->rows, p.cl),
                              threads_for(p.slice / V), p.staged ? (size_t)p.slice * sizeof(T) : 0,
                              p.cl, st, p);
    if (e) return e;
  }
  if (!reduce) return 0;
  return (int)launch(loss_sum_kernel, 1, 1024, 0, 1, st, (const double *)(ws + 8), p.rows,
                     p.count, a->loss);
}

template <typename T> int sm_dispatch(const nk__cuda_softmax_args *a, cudaStream_t st, bool bwd) {
  constexpr int V = 16 / sizeof(T);
  const bool vec = bwd ? all_aligned({a->y_in, a->dy, a->dx}, {a->y_stride, a->dy_stride, a->dx_stride},
                                     (long long)a->cols, V)
                       : all_aligned({a->x, a->y}, {a->x_stride, a->y_stride}, (long long)a->cols, V);
  if (bwd) return vec ? sm_bwd_run<T, V>(a, st) : sm_bwd_run<T, 1>(a, st);
  return vec ? sm_fwd_run<T, V>(a, st) : sm_fwd_run<T, 1>(a, st);
}

template <typename T> int xent_dispatch(const nk__cuda_xent_args *a, cudaStream_t st) {
  constexpr int V = 16 / sizeof(T);
  const bool vec = all_aligned({a->x, a->dx}, {a->x_stride, a->dx ? a->dx_stride : 0},
                               (long long)a->cols, V);
  return vec ? xent_run<T, V>(a, st) : xent_run<T, 1>(a, st);
}

} // namespace

extern "C" int nk__cuda_softmax_fwd(const nk__cuda_softmax_args *a, void *stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (a->dtype) {
    case F32: return sm_dispatch<float>(a, st, false);
    case BF16: return sm_dispatch<__nv_bfloat16>(a, st, false);
    case F16: return sm_dispatch<__half>(a, st, false);
  }
  return (int)cudaErrorInvalidValue;
}

extern "C" int nk__cuda_softmax_bwd(const nk__cuda_softmax_args *a, void *stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (a->dtype) {
    case F32: return sm_dispatch<float>(a, st, true);
    case BF16: return sm_dispatch<__nv_bfloat16>(a, st, true);
    case F16: return sm_dispatch<__half>(a, st, true);
  }
  return (int)cudaErrorInvalidValue;
}

extern "C" int nk__cuda_xent(const nk__cuda_xent_args *a, void *stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (a->dtype) {
    case F32: return xent_dispatch<float>(a, st);
    case BF16: return xent_dispatch<__nv_bfloat16>(a, st);
    case F16: return xent_dispatch<__half>(a, st);
  }
  return (int)cudaErrorInvalidValue;
}

extern "C" const char *nk__cuda_error_string(int err) {
  return cudaGetErrorString(static_cast<cudaError_t>(err));
}

extern "C" int nk__cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}
