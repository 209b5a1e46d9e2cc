/*
 * common.cuh — what every normkit CUDA kernel shares: element types and their conversions,
 * 16-byte vector access, the fixed-tree block and cluster reductions (double sums, NaN-keeping
 * max), the cluster launch, and the per-thread last error.
 *
 * Reductions: each thread adds f32 vector partials into doubles; a warp combines its lanes by
 * shfl_down (fixed tree); every thread then adds the warps' values in warp order; a cluster adds
 * the blocks' values in rank order (distributed shared memory). The tree depends on the launch
 * shape only, and the launch shape on the sizes only: results are the same bits run to run.
 */
#ifndef NK_CUDA_COMMON_CUH
#define NK_CUDA_COMMON_CUH

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "launch.h"

namespace cg = cooperative_groups;

namespace nkc {

enum { F32 = 0, BF16 = 1, F16 = 2 };

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
/* Every NaN a kernel stores is the canonical quiet NaN (normkit.h: 0x7FC00000; bf16 0x7FC0,
 * f16 0x7E00): GPU arithmetic makes 0x7FFFFFFF, and its negation would be all-ones bits. */
__device__ __forceinline__ float canon(float v) { return v != v ? __int_as_float(0x7FC00000) : v; }
template <> __device__ __forceinline__ float from_f<float>(float v) { return canon(v); }
/* Round to nearest even; subnormals kept (no ftz in this build). */
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return v != v ? __ushort_as_bfloat16((unsigned short)0x7FC0) : __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half from_f<__half>(float v) {
  return v != v ? __ushort_as_half((unsigned short)0x7E00) : __float2half_rn(v);
}

/* V elements of T, loaded and stored as one access (16 bytes when V * sizeof(T) == 16). */
template <typename T, int V> struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V> __device__ __forceinline__ Pack<T, V> ld(const T *p) {
  return *reinterpret_cast<const Pack<T, V> *>(p);
}
template <typename T, int V> __device__ __forceinline__ void st(T *p, const Pack<T, V> &v) {
  *reinterpret_cast<Pack<T, V> *>(p) = v;
}
/* Streaming store (evict-first): outputs that are not read again by this kernel. */
template <typename T, int V> __device__ __forceinline__ void st_cs(T *p, const Pack<T, V> &v) {
  if constexpr (sizeof(T) * V == 16) {
    __stcs(reinterpret_cast<uint4 *>(p), *reinterpret_cast<const uint4 *>(&v));
  } else {
    *reinterpret_cast<Pack<T, V> *>(p) = v;
  }
}

/* V parameters (gamma or beta) from column col on, as floats, in 16-byte loads (col is a
 * multiple of V and the pointer 16-byte aligned whenever V > 1: the launchers check). */
template <typename P, int V>
__device__ __forceinline__ void ld_param(const P *p, long long col, float (&out)[V]) {
  if constexpr (V == 1) {
    out[0] = to_f(p[col]);
  } else {
    constexpr int H = (int)(16 / sizeof(P)) < V ? (int)(16 / sizeof(P)) : V;
#pragma unroll
    for (int h = 0; h < V; h += H) {
      const Pack<P, H> q = ld<P, H>(p + col + h);
#pragma unroll
      for (int v = 0; v < H; v++) out[h + v] = to_f(q.v[v]);
    }
  }
}

/* Vectors each thread loads before it uses the first (first passes over global memory): 4 for
 * 16-byte vectors of f32, 1 for those of bf16/f16, whose 8 elements each already cost the
 * registers (measured 2026-11-27 on an H100, bench/NOTES-cuda.md v2: 4 made f32 forwards
 * 7-11% faster and bf16 forwards 10-30% slower). */
#define NK_CUDA_UNROLL(V) ((V) >= 8 ? 1 : 4)

__device__ __forceinline__ float nan_f() { return __int_as_float(0x7FC00000); }

/* max that keeps NaN (fmaxf drops it). */
__device__ __forceinline__ float max_nan(float a, float b) { return (a > b || a != a) ? a : b; }

/* Shared scratch for the reductions: 32 warps x up to 4 values, and the cluster exchange. */
struct RedScratch {
  double w[32 * 4];
  double x[2][4];
  float wf[32];
  float xf[2];
};

/* Sum of N doubles over the block (blockDim.x a multiple of 32); every thread gets the result. */
template <int N> __device__ __forceinline__ void block_sum(double (&v)[N], RedScratch &s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
#pragma unroll
    for (int n = 0; n < N; n++) v[n] += __shfl_down_sync(0xffffffffu, v[n], o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads(); /* the scratch may still be read by the previous reduction */
  if (lane == 0)
#pragma unroll
    for (int n = 0; n < N; n++) s.w[warp * N + n] = v[n];
  __syncthreads();
#pragma unroll
  for (int n = 0; n < N; n++) {
    double t = 0.0;
    for (int w = 0; w < nw; w++) t += s.w[w * N + n];
    v[n] = t;
  }
}

/* The same over the cluster of `cl` blocks (each block's sum first, then the blocks in rank
 * order; every block computes the same sum). `round` alternates the exchange buffer. */
template <int N>
__device__ __forceinline__ void cluster_sum(double (&v)[N], RedScratch &s, int cl, int &round) {
  block_sum<N>(v, s);
  if (cl == 1) return;
  cg::cluster_group cluster = cg::this_cluster();
  double *buf = s.x[round & 1];
  round++;
  if (threadIdx.x == 0)
#pragma unroll
    for (int n = 0; n < N; n++) buf[n] = v[n];
  cluster.sync();
#pragma unroll
  for (int n = 0; n < N; n++) v[n] = 0.0;
  for (int r = 0; r < cl; r++) {
    const double *rb = cluster.map_shared_rank(buf, r);
#pragma unroll
    for (int n = 0; n < N; n++) v[n] += rb[n];
  }
  /* No second barrier: the next exchange uses the other buffer, and the one after it is
   * separated from these reads by the next exchange's barrier. */
}

__device__ __forceinline__ float block_max(float v, RedScratch &s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max_nan(v, __shfl_down_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) s.wf[warp] = v;
  __syncthreads();
  float t = s.wf[0];
  for (int w = 1; w < nw; w++) t = max_nan(t, s.wf[w]);
  return t;
}

__device__ __forceinline__ float cluster_max(float v, RedScratch &s, int cl, int &round) {
  v = block_max(v, s);
  if (cl == 1) return v;
  cg::cluster_group cluster = cg::this_cluster();
  float *buf = &s.xf[round & 1];
  round++;
  if (threadIdx.x == 0) *buf = v;
  cluster.sync();
  float t = *cluster.map_shared_rank(buf, 0);
  for (int r = 1; r < cl; r++) t = max_nan(t, *cluster.map_shared_rank(buf, r));
  return t;
}

/* Before a block of a cluster leaves, no other block may still read its shared memory. */
__device__ __forceinline__ void cluster_exit(int cl) {
  if (cl > 1) cg::this_cluster().sync();
}

/* Launches `kernel` as clusters of `cl` blocks (grid.x a multiple of cl). */
template <typename... KArgs, typename... Args>
cudaError_t launch(void (*kernel)(KArgs...), unsigned grid, unsigned threads, size_t smem, int cl,
                   cudaStream_t stream, Args... args) {
  cudaError_t e = cudaSuccess;
  /* Set on every launch that has dynamic shared memory: the attribute persists per kernel,
   * and an earlier, smaller setting (an occupancy query) would make this launch invalid. */
  if (smem > 0) {
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  if (cl > 8) {
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (e != cudaSuccess) return e;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid, 1, 1);
  cfg.blockDim = dim3(threads, 1, 1);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = (unsigned)cl;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  /* Its own status only: cudaGetLastError would also report a caller's earlier failure. */
  return cudaLaunchKernelEx(&cfg, kernel, args...);
}

/* Threads per block for `nvec` vectors per block: about 4 vectors per thread, 64..512 (the
 * kernels are compiled for at most 512 threads, which leaves them 128 registers). */
static inline unsigned threads_for(size_t nvec) {
  size_t t = (nvec + 3) / 4;
  t = (t + 31) / 32 * 32;
  if (t < 64) t = 64;
  if (t > 512) t = 512;
  return (unsigned)t;
}

/* Largest dynamic shared memory a block may use (H100: 227 KiB), less the static scratch. */
static const size_t kSmemMax = 200 * 1024;

/* Target shared bytes per block (several blocks per SM). */
static const size_t kBlockBytes = 32 * 1024;

/* Blocks per row: 1, doubling up to 8 while a block would hold more than kBlockBytes of the
 * row's cols * esize bytes (a function of the sizes only). */
static inline int cluster_for(size_t cols, size_t esize) {
  int cl = 1;
  while (cl < 8 && cols * esize > kBlockBytes * (size_t)cl) cl *= 2;
  return cl;
}

/* Columns per block of a cluster of cl: cols / cl rounded up to a multiple of vec. */
static inline size_t slice_of(size_t cols, int cl, int vec) {
  size_t s = (cols + (size_t)cl - 1) / (size_t)cl;
  return (s + (size_t)vec - 1) / (size_t)vec * (size_t)vec;
}

/* This block's part of a row: its rank in the cluster of cl, its first column and its number
 * of V-element vectors (0 for a rank past the row's end). */
struct BlockSlice {
  int rank;
  long long base;
  int nvec;
};
template <int V>
__device__ __forceinline__ BlockSlice block_slice(int cl, long long cols, long long slice) {
  BlockSlice b;
  b.rank = (int)(blockIdx.x % (unsigned)cl);
  b.base = (long long)b.rank * slice;
  long long len = cols - b.base;
  if (len > slice) len = slice;
  if (len < 0) len = 0;
  b.nvec = (int)(len / V);
  return b;
}

static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

} // namespace nkc

#endif /* NK_CUDA_COMMON_CUH */
