/*
 * rownorm.cu — LayerNorm and RMSNorm, forward and backward, on the GPU (normkit_cuda.h).
 *
 * Each row is handled by a cluster of CL blocks (CL = 1, 2, 4, 8 or 16, chosen from the row's
 * bytes only), block `rank` owning the slice [rank * slice, (rank + 1) * slice) of the columns.
 * When the slice fits in shared memory it is read from global memory once and kept there
 * (staged); otherwise every pass reads it again from global memory (L2 often holds it).
 * Row statistics are reduced by common.cuh's fixed trees (block, then cluster in rank order).
 *
 * Forward, per row (the CPU's accuracy promises, including rows up to FLT_MAX):
 *   A  amax = max |h| (NaN kept); a NaN or inf anywhere makes the row NaN.
 *   s  = 2^-e with amax in [2^(e-1), 2^e): the scaled values h*s are <= 1, so no sum overflows.
 *   B  LayerNorm: m = f32(sum(h*s)/n);  C: d = h*s - m, c = sum d / n, v = sum d^2 / n - c^2.
 *      RMSNorm: q = sum (h*s)^2 / n.
 *   y = ((h*s - m) - c) * rs * g + b, rs = 1/sqrt(v + eps*s^2) (double, then f32);
 *      rstd = 1/sqrt(v/s^2 + eps), mean = (m + c)/s.
 * Backward, per row: LayerNorm c = sum(x - mean)/n (the mean's low part), xhat = (x - mean - c)
 *   * rstd (RMSNorm: x * rstd; from y: (y/lns - b)/g); A = sum g dy', B = sum g dy' xhat;
 *   dx = rstd * (g dy' - A/n - xhat B/n) (+ dh), dy' = dy * lns. dgamma/dbeta: each cluster
 *   owns a fixed chunk of rows, accumulates dy' xhat and dy' per column in f32 (shared memory,
 *   or its workspace row when that does not fit), writes its chunk's partials; a second kernel
 *   adds the chunks in chunk order in double.
 */
#include "common.cuh"

using namespace nkc;

namespace {

struct FwdP {
  const void *x, *r, *gamma, *beta;
  void *y, *h;
  float *mean, *rstd;
  long long xs, rs, ys, hs;
  long long rows, cols, slice;
  float eps, lns;
  int rms, offset, cl, staged;
};

template <typename T, typename P, int V> __global__ void __launch_bounds__(512) fwd_kernel(FwdP p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ RedScratch red;
  const int cl = p.cl;
  const BlockSlice bs = block_slice<V>(cl, p.cols, p.slice);
  const int rank = bs.rank, nvec = bs.nvec;
  const long long base = bs.base;
  const int tid = threadIdx.x, nt = blockDim.x;
  constexpr int kU = NK_CUDA_UNROLL(V);
  T *sh = reinterpret_cast<T *>(smem_raw);
  const P *gam = static_cast<const P *>(p.gamma);
  const P *bet = static_cast<const P *>(p.beta);
  const double n = (double)p.cols;
  int round = 0;

  for (long long row = blockIdx.x / cl; row < p.rows; row += gridDim.x / cl) {
    const T *xr = static_cast<const T *>(p.x) + row * p.xs + base;
    const T *rr = p.r ? static_cast<const T *>(p.r) + row * p.rs + base : nullptr;
    T *hr = p.h ? static_cast<T *>(p.h) + row * p.hs + base : nullptr;
    T *yr = static_cast<T *>(p.y) + row * p.ys + base;

    /* Pass A: h = x (+ r, rounded), staged or written to h; amax. */
    float amax = 0.0f;
    for (int k0 = tid; k0 < nvec; k0 += kU * nt) {
      Pack<T, V> hv[kU], rv[kU];
#pragma unroll
      for (int u = 0; u < kU; u++) {
        const int k = k0 + u * nt;
        if (k < nvec) {
          hv[u] = ld<T, V>(xr + (long long)k * V);
          if (rr) rv[u] = ld<T, V>(rr + (long long)k * V);
        }
      }
#pragma unroll
      for (int u = 0; u < kU; u++) {
        const int k = k0 + u * nt;
        if (k >= nvec) break;
        if (rr) {
#pragma unroll
          for (int v = 0; v < V; v++) hv[u].v[v] = from_f<T>(to_f(hv[u].v[v]) + to_f(rv[u].v[v]));
          if (hr) st<T, V>(hr + (long long)k * V, hv[u]);
        }
        if (p.staged) st<T, V>(sh + k * V, hv[u]);
#pragma unroll
        for (int v = 0; v < V; v++) amax = max_nan(amax, fabsf(to_f(hv[u].v[v])));
      }
    }
    amax = cluster_max(amax, red, cl, round);
    const bool bad = !(amax <= 3.402823466e38f);
    /* Reads h back: from shared memory, from the h output, or as x + r again. */
    auto get = [&](int k) -> Pack<T, V> {
      if (p.staged) return ld<T, V>(sh + k * V);
      if (!rr) return ld<T, V>(xr + (long long)k * V);
      if (hr) return ld<T, V>(hr + (long long)k * V);
      Pack<T, V> hv = ld<T, V>(xr + (long long)k * V);
      const Pack<T, V> rv = ld<T, V>(rr + (long long)k * V);
#pragma unroll
      for (int v = 0; v < V; v++) hv.v[v] = from_f<T>(to_f(hv.v[v]) + to_f(rv.v[v]));
      return hv;
    };
    int e = 0;
    if (amax > 0.0f && !bad) frexpf(amax, &e);
    if (e < -126) e = -126;
    const float s = ldexpf(1.0f, -e);
    const double sd = (double)s;

    float m = 0.0f, c = 0.0f;
    double var_s = 0.0;
    if (!bad) {
      if (!p.rms) {
        double acc[1] = {0.0};
        for (int k = tid; k < nvec; k += nt) {
          const Pack<T, V> hv = get(k);
          float t = 0.0f;
#pragma unroll
          for (int v = 0; v < V; v++) t += to_f(hv.v[v]) * s;
          acc[0] += (double)t;
        }
        cluster_sum<1>(acc, red, cl, round);
        m = (float)(acc[0] / n);
      }
      double acc2[2] = {0.0, 0.0};
      for (int k = tid; k < nvec; k += nt) {
        const Pack<T, V> hv = get(k);
        float t1 = 0.0f, t2 = 0.0f;
#pragma unroll
        for (int v = 0; v < V; v++) {
          const float d = to_f(hv.v[v]) * s - m;
          t1 += d;
          t2 += d * d;
        }
        acc2[0] += (double)t1;
        acc2[1] += (double)t2;
      }
      cluster_sum<2>(acc2, red, cl, round);
      if (p.rms) {
        var_s = acc2[1] / n;
      } else {
        const double cd = acc2[0] / n;
        var_s = acc2[1] / n - cd * cd;
        if (var_s < 0.0) var_s = 0.0;
        c = (float)cd;
      }
    }
    const double eps = (double)p.eps;
    double rsd = 1.0 / sqrt(var_s + eps * sd * sd);
    float rs = rsd > 3.402823466e38 ? 3.402823466e38f : (float)rsd;
    if (bad) rs = nan_f();
    if (tid == 0 && rank == 0) {
      if (p.rstd) p.rstd[row] = bad ? nan_f() : canon((float)(1.0 / sqrt(var_s / (sd * sd) + eps)));
      if (p.mean) p.mean[row] = bad ? nan_f() : canon((float)(((double)m + (double)c) / sd));
    }
    /* Output pass. */
    for (int k = tid; k < nvec; k += nt) {
      const Pack<T, V> hv = get(k);
      Pack<T, V> out;
      const long long col = base + (long long)k * V;
      float g[V], b[V];
      if (gam) {
        ld_param<P, V>(gam, col, g);
        if (p.offset)
#pragma unroll
          for (int v = 0; v < V; v++) g[v] = 1.0f + g[v];
      } else {
#pragma unroll
        for (int v = 0; v < V; v++) g[v] = 1.0f;
      }
      if (bet) ld_param<P, V>(bet, col, b);
      else
#pragma unroll
        for (int v = 0; v < V; v++) b[v] = 0.0f;
#pragma unroll
      for (int v = 0; v < V; v++) {
        const float xhat = ((to_f(hv.v[v]) * s - m) - c) * rs;
        float yv = fmaf(xhat, g[v], b[v]);
        if (p.lns != 1.0f) yv *= p.lns;
        out.v[v] = from_f<T>(yv);
      }
      st_cs<T, V>(yr + (long long)k * V, out);
    }
    if (p.staged) __syncthreads(); /* the next row overwrites the stage */
  }
  cluster_exit(cl);
}

struct BwdP {
  const void *x, *gamma, *beta, *dy, *dh;
  const float *mean, *rstd;
  void *dx;
  float *partials; /* [nchunks][2][cols] or NULL */
  long long xs, dys, dhs, dxs;
  long long rows, cols, slice, chunk_rows;
  float lns;
  int rms, offset, from_y, cl, staged, acc_smem;
};

template <typename T, typename P, int V> __global__ void __launch_bounds__(512) bwd_kernel(BwdP p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ RedScratch red;
  const int cl = p.cl;
  const long long chunk = blockIdx.x / cl;
  const BlockSlice bs = block_slice<V>(cl, p.cols, p.slice);
  const int nvec = bs.nvec;
  const long long base = bs.base;
  const int tid = threadIdx.x, nt = blockDim.x;
  constexpr int kU = NK_CUDA_UNROLL(V);
  T *sx = reinterpret_cast<T *>(smem_raw);
  T *sdy = sx + (p.staged ? p.slice : 0);
  float *acc = nullptr; /* [2][slice]: dgamma, dbeta partials of this block's columns */
  long long acc_ld = 0;
  if (p.partials) {
    if (p.acc_smem) {
      acc = reinterpret_cast<float *>(sdy + (p.staged ? p.slice : 0));
      acc_ld = p.slice;
    } else {
      acc = p.partials + chunk * 2 * p.cols + base;
      acc_ld = p.cols;
    }
    for (int k = tid; k < nvec; k += nt)
#pragma unroll
      for (int v = 0; v < V; v++) acc[k * V + v] = acc[acc_ld + k * V + v] = 0.0f;
  }
  const P *gam = static_cast<const P *>(p.gamma);
  const P *bet = static_cast<const P *>(p.beta);
  const double n = (double)p.cols;
  const bool need_c = !p.rms && !p.from_y;
  const float inv_lns = 1.0f / p.lns;
  int round = 0;
  long long r0 = chunk * p.chunk_rows, r1 = r0 + p.chunk_rows;
  if (r1 > p.rows) r1 = p.rows;

  for (long long row = r0; row < r1; row++) {
    const T *xr = static_cast<const T *>(p.x) + row * p.xs + base;
    const T *dyr = static_cast<const T *>(p.dy) + row * p.dys + base;
    const T *dhr = p.dh ? static_cast<const T *>(p.dh) + row * p.dhs + base : nullptr;
    T *dxr = static_cast<T *>(p.dx) + row * p.dxs + base;
    const float rstd = p.rstd[row];
    const float mean = need_c ? p.mean[row] : 0.0f;
    auto getx = [&](int k) { return p.staged ? ld<T, V>(sx + k * V) : ld<T, V>(xr + (long long)k * V); };
    auto getdy = [&](int k) {
      return p.staged ? ld<T, V>(sdy + k * V) : ld<T, V>(dyr + (long long)k * V);
    };
    /* g (and b, for xhat from y) of the V columns from col on. */
    auto params = [&](long long col, float (&g)[V], float (&b)[V]) {
      if (gam) {
        ld_param<P, V>(gam, col, g);
        if (p.offset)
#pragma unroll
          for (int v = 0; v < V; v++) g[v] = 1.0f + g[v];
      } else {
#pragma unroll
        for (int v = 0; v < V; v++) g[v] = 1.0f;
      }
      if (p.from_y && bet) ld_param<P, V>(bet, col, b);
      else
#pragma unroll
        for (int v = 0; v < V; v++) b[v] = 0.0f;
    };
    auto xhat_of = [&](float xv, float g, float b, float c) {
      if (p.from_y) {
        const float yv = p.lns != 1.0f ? xv * inv_lns : xv;
        return (yv - b) / g;
      }
      if (p.rms) return xv * rstd;
      return ((xv - mean) - c) * rstd;
    };

    /* Pass 1: stage x and dy; the LayerNorm mean's low part c. */
    float c = 0.0f;
    {
      double a1[1] = {0.0};
      if (p.staged || need_c) {
        for (int k0 = tid; k0 < nvec; k0 += kU * nt) {
          Pack<T, V> xv[kU], dv[kU];
#pragma unroll
          for (int u = 0; u < kU; u++) {
            const int k = k0 + u * nt;
            if (k < nvec) {
              xv[u] = ld<T, V>(xr + (long long)k * V);
              if (p.staged) dv[u] = ld<T, V>(dyr + (long long)k * V);
            }
          }
#pragma unroll
          for (int u = 0; u < kU; u++) {
            const int k = k0 + u * nt;
            if (k >= nvec) break;
            if (p.staged) {
              st<T, V>(sx + k * V, xv[u]);
              st<T, V>(sdy + k * V, dv[u]);
            }
            if (need_c) {
              float t = 0.0f;
#pragma unroll
              for (int v = 0; v < V; v++) t += to_f(xv[u].v[v]) - mean;
              a1[0] += (double)t;
            }
          }
        }
      }
      if (need_c) {
        cluster_sum<1>(a1, red, cl, round);
        c = (float)(a1[0] / n);
      } else if (p.staged) {
        __syncthreads();
      }
    }
    /* Pass 2: A = sum g dy', B = sum g dy' xhat. */
    double ab[2] = {0.0, 0.0};
    for (int k = tid; k < nvec; k += nt) {
      const Pack<T, V> xv = getx(k), dv = getdy(k);
      const long long col = base + (long long)k * V;
      float g[V], bb[V];
      params(col, g, bb);
      float ta = 0.0f, tb = 0.0f;
#pragma unroll
      for (int v = 0; v < V; v++) {
        const float xh = xhat_of(to_f(xv.v[v]), g[v], bb[v], c);
        const float dyv = p.lns != 1.0f ? to_f(dv.v[v]) * p.lns : to_f(dv.v[v]);
        const float gdy = dyv * g[v];
        ta += gdy;
        tb += gdy * xh;
      }
      ab[0] += (double)ta;
      ab[1] += (double)tb;
    }
    cluster_sum<2>(ab, red, cl, round);
    const float a = p.rms ? 0.0f : (float)(ab[0] / n);
    const float b = (float)(ab[1] / n);
    /* Pass 3: dx, and the parameter-gradient partials. */
    for (int k = tid; k < nvec; k += nt) {
      const Pack<T, V> xv = getx(k), dv = getdy(k);
      const long long col = base + (long long)k * V;
      Pack<T, V> hv;
      if (dhr) hv = ld<T, V>(dhr + (long long)k * V);
      float g[V], bb[V];
      params(col, g, bb);
      Pack<T, V> out;
#pragma unroll
      for (int v = 0; v < V; v++) {
        const float xh = xhat_of(to_f(xv.v[v]), g[v], bb[v], c);
        const float dyv = p.lns != 1.0f ? to_f(dv.v[v]) * p.lns : to_f(dv.v[v]);
        const float gdy = dyv * g[v];
        float d = rstd * (gdy - (a + xh * b));
        if (dhr) d += to_f(hv.v[v]);
        out.v[v] = from_f<T>(d);
        if (acc) {
          acc[k * V + v] += dyv * xh;
          acc[acc_ld + k * V + v] += dyv;
        }
      }
      st_cs<T, V>(dxr + (long long)k * V, out);
    }
    if (p.staged) __syncthreads(); /* the next row overwrites the stage */
  }
  if (acc && p.acc_smem) {
    float *dst = p.partials + chunk * 2 * p.cols + base;
    for (int k = tid; k < nvec; k += nt)
#pragma unroll
      for (int v = 0; v < V; v++) {
        dst[k * V + v] = acc[k * V + v];
        dst[p.cols + k * V + v] = acc[acc_ld + k * V + v];
      }
  }
  cluster_exit(cl);
}

/* dgamma/dbeta: the chunks' partials added in chunk order, in double. */
template <typename P>
__global__ void finish_kernel(const float *partials, long long nchunks, long long cols, P *dgamma,
                              P *dbeta, int accumulate) {
  const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  double g = 0.0, b = 0.0;
  for (long long k = 0; k < nchunks; k++) {
    g += (double)partials[k * 2 * cols + j];
    b += (double)partials[k * 2 * cols + cols + j];
  }
  if (dgamma) {
    if (accumulate) g += (double)to_f(dgamma[j]);
    dgamma[j] = from_f<P>((float)g);
  }
  if (dbeta) {
    if (accumulate) b += (double)to_f(dbeta[j]);
    dbeta[j] = from_f<P>((float)b);
  }
}

/* ---- launch choices (sizes only) ---------------------------------------------------------- */

struct BwdPlan {
  int cl, staged, acc_smem;
  size_t slice, chunk_rows, nchunks, smem;
};

/* Bytes per column of a backward block: x and dy staged, two f32 accumulators. */
BwdPlan bwd_plan(size_t rows, size_t cols, size_t esize, int want, int vec, int cl_max = 16) {
  BwdPlan b = {};
  const size_t per_col = 2 * esize + (want ? 8 : 0);
  b.cl = 1;
  while (b.cl < cl_max && cols * per_col > 2 * kBlockBytes * (size_t)b.cl) b.cl *= 2;
  b.slice = slice_of(cols, b.cl, vec);
  b.staged = b.slice * per_col <= kSmemMax;
  b.acc_smem = want && (b.staged || b.slice * 8 <= kSmemMax);
  b.smem = (b.staged ? b.slice * 2 * esize : 0) + (b.acc_smem ? b.slice * 8 : 0);
  b.chunk_rows = (rows + 1023) / 1024;
  if (b.chunk_rows < 16) b.chunk_rows = 16;
  b.nchunks = (rows + b.chunk_rows - 1) / b.chunk_rows;
  return b;
}

size_t esize_of(int dt) { return dt == F32 ? 4 : 2; }

/* The vector width: 16 bytes when every pointer and stride allows it. */
bool can_vec(const nk__cuda_norm_args *a, int vec) {
  const void *ptrs[] = {a->x, a->r, a->gamma, a->beta, a->dy, a->dh, a->y, a->h, a->dx};
  for (const void *q : ptrs)
    if (q && !aligned16(q)) return false;
  const ptrdiff_t strides[] = {a->x_stride, a->r_stride, a->y_stride, a->h_stride,
                               a->dy_stride, a->dh_stride, a->dx_stride};
  for (ptrdiff_t s : strides)
    if (s % vec) return false;
  return a->cols % (size_t)vec == 0;
}

template <typename T, typename P, int V> int fwd_run(const nk__cuda_norm_args *a, cudaStream_t st) {
  const int cl = cluster_for(a->cols, sizeof(T));
  const size_t slice = slice_of(a->cols, cl, V);
  const int staged = slice * sizeof(T) <= kSmemMax;
  const size_t smem = staged ? slice * sizeof(T) : 0;
  const unsigned threads = threads_for(slice / V);
  size_t nrows = a->rows < (1u << 20) ? a->rows : (1u << 20);
  FwdP p = {a->x, a->r, a->gamma, a->beta, a->y, a->h, a->mean, a->rstd,
            a->x_stride, a->r_stride, a->y_stride, a->h_stride,
            (long long)a->rows, (long long)a->cols, (long long)slice,
            a->eps, a->lns, a->rms, a->offset, cl, staged};
  return (int)launch(fwd_kernel<T, P, V>, (unsigned)(nrows * cl), threads, smem, cl, st, p);
}

template <typename T, typename P, int V> int bwd_run(const nk__cuda_norm_args *a, cudaStream_t st) {
  const int want = a->dgamma != nullptr || a->dbeta != nullptr;
  BwdPlan b = bwd_plan(a->rows, a->cols, sizeof(T), want, V);
  /* A cluster of 16 is non-portable: where the GPU cannot place one with this much shared
   * memory, plan with 8 (a different, equally fixed tree on that GPU). */
  if (b.cl == 16) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)(b.nchunks * b.cl), 1, 1);
    cfg.blockDim = dim3(threads_for(b.slice / V), 1, 1);
    cfg.dynamicSmemBytes = b.smem;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 16;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    int nclusters = 0;
    cudaFuncSetAttribute(bwd_kernel<T, P, V>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (b.smem > 0)
      cudaFuncSetAttribute(bwd_kernel<T, P, V>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           (int)b.smem);
    if (cudaOccupancyMaxActiveClusters(&nclusters, bwd_kernel<T, P, V>, &cfg) != cudaSuccess ||
        nclusters < 1) {
      (void)cudaGetLastError();
      b = bwd_plan(a->rows, a->cols, sizeof(T), want, V, 8);
    }
  }
  const unsigned threads = threads_for(b.slice / V);
  BwdP p = {a->x, a->gamma, a->beta, a->dy, a->dh, a->mean_in, a->rstd_in, a->dx,
            want ? static_cast<float *>(a->workspace) : nullptr,
            a->x_stride, a->dy_stride, a->dh_stride, a->dx_stride,
            (long long)a->rows, (long long)a->cols, (long long)b.slice, (long long)b.chunk_rows,
            a->lns, a->rms, a->offset, a->from_y, b.cl, b.staged, b.acc_smem};
  int e = (int)launch(bwd_kernel<T, P, V>, (unsigned)(b.nchunks * b.cl), threads, b.smem, b.cl,
                      st, p);
  if (e || !want) return e;
  const unsigned ft = 256, fg = (unsigned)((a->cols + ft - 1) / ft);
  return (int)launch(finish_kernel<P>, fg, ft, 0, 1, st,
                     static_cast<const float *>(a->workspace), (long long)b.nchunks,
                     (long long)a->cols, static_cast<P *>(a->dgamma), static_cast<P *>(a->dbeta),
                     a->accumulate);
}

template <typename T, typename P>
int dispatch_vec(const nk__cuda_norm_args *a, cudaStream_t st, bool bwd) {
  constexpr int V = 16 / sizeof(T);
  if (can_vec(a, V)) return bwd ? bwd_run<T, P, V>(a, st) : fwd_run<T, P, V>(a, st);
  return bwd ? bwd_run<T, P, 1>(a, st) : fwd_run<T, P, 1>(a, st);
}

int dispatch(const nk__cuda_norm_args *a, void *stream, bool bwd) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const bool pf = a->param_dtype == F32;
  switch (a->dtype) {
    case F32: return dispatch_vec<float, float>(a, st, bwd);
    case BF16:
      return pf ? dispatch_vec<__nv_bfloat16, float>(a, st, bwd)
                : dispatch_vec<__nv_bfloat16, __nv_bfloat16>(a, st, bwd);
    case F16:
      return pf ? dispatch_vec<__half, float>(a, st, bwd) : dispatch_vec<__half, __half>(a, st, bwd);
  }
  return (int)cudaErrorInvalidValue;
}

} // namespace

extern "C" size_t nk__cuda_norm_bwd_payload(size_t rows, size_t cols, int dtype, int want_params) {
  if (!want_params || rows == 0 || cols == 0) return 0;
  const BwdPlan b = bwd_plan(rows, cols, esize_of(dtype), 1, 1);
  return b.nchunks * 2 * cols * sizeof(float);
}

extern "C" int nk__cuda_norm_fwd(const nk__cuda_norm_args *a, void *stream) {
  return dispatch(a, stream, false);
}

extern "C" int nk__cuda_norm_bwd(const nk__cuda_norm_args *a, void *stream) {
  return dispatch(a, stream, true);
}
