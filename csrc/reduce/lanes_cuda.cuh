// Device-side driver of the §2 lane reduction (docs/REDUCTION_ORDER.md), the CUDA twin of lanes_cpu.h.
// One row = lane_threads(N) threads (threadIdx.x); thread t owns lanes 8t..8t+7, the 8 adjacent elements it
// loads as one 16-byte vector (bf16/fp16) or two (fp32). Plain CUDA only (no torch): compiled by nvcc alone.
//
// Scalar equivalent of row_tree (L = 8T lanes, acc[l] the lane values):
//   for (w = L; w > 1; w /= 2) for (l = 0; l < w/2; ++l) acc[l] = acc[2l] (+) acc[2l+1];   // = tree_reduce
// realised as: in-thread tree over the thread's 8 adjacent lanes, XOR butterflies with offsets
// 1,2,4,8,16 (each pair merged lower index first), then the same butterfly over the per-warp values. Every
// thread of the row ends with the result.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include "reduce.h"

namespace detops {

constexpr int kWarpSize = 32;
constexpr int64_t kMaxGridBlocks = 0x7fffffff;  // gridDim.x limit: launchers refuse larger grids, never truncate
constexpr int kMaxWarpsPerRow = kMaxLaneThreads / kWarpSize;
// Rows that share one block when a row needs fewer threads (small N): block = lane_threads(N) x rows, at least
// kMinBlockThreads (constants.h) threads.
constexpr int kMaxRowsPerBlock = kMinBlockThreads / kMinLaneThreads;

__host__ __device__ inline int rows_per_block(int64_t n) {
  int64_t t = lane_threads(n);
  return t >= kMinBlockThreads ? 1 : int(kMinBlockThreads / t);
}

// Loads the 8 elements p[0..count) (count may be < 8 or <= 0 at the row's end). `vector_ok` says that p is
// 16-byte aligned (the row start and stride allow it); otherwise scalar loads: same values, same lanes.
template <typename T>
__device__ __forceinline__ void load8(const T* p, int64_t count, bool vector_ok, T (&v)[8]) {
  if (vector_ok && count >= 8) {
    static_assert(sizeof(T) == 2 || sizeof(T) == 4, "bf16/fp16/fp32 storage");
    if constexpr (sizeof(T) == 2) {
      uint4 a = *reinterpret_cast<const uint4*>(p);
      memcpy(v, &a, 16);
    } else {
      uint4 a = reinterpret_cast<const uint4*>(p)[0];
      uint4 b = reinterpret_cast<const uint4*>(p)[1];
      memcpy(v, &a, 16);
      memcpy(v + 4, &b, 16);
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = j < count ? p[j] : T{};
  }
}

template <typename T>
__device__ __forceinline__ void store8(T* p, int64_t count, bool vector_ok, const T (&v)[8]) {
  if (vector_ok && count >= 8) {
    if constexpr (sizeof(T) == 2) {
      uint4 a;
      memcpy(&a, v, 16);
      *reinterpret_cast<uint4*>(p) = a;
    } else {
      uint4 a, b;
      memcpy(&a, v, 16);
      memcpy(&b, v + 4, 16);
      reinterpret_cast<uint4*>(p)[0] = a;
      reinterpret_cast<uint4*>(p)[1] = b;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (j < count) p[j] = v[j];
  }
}

// 16-byte vector access is possible for every row when the base pointer and the row stride (in bytes) are
// multiples of 16. Decided per tensor; it changes only the load width, never the lanes or the order.
__host__ __device__ inline bool vector_aligned(const void* base, int64_t row_stride_elems, int elem_bytes) {
  return (reinterpret_cast<uintptr_t>(base) % 16 == 0) && ((row_stride_elems * elem_bytes) % 16 == 0);
}

// K (even) floats rounded to the storage type T, bit-identical to from_float<T> (numeric.h, §1 round-to-nearest-
// even): the hardware's two-at-a-time conversion (cvt.rn.bf16x2.f32 / cvt.rn.f16x2.f32, one instruction per pair
// instead of ~8 integer operations per element) gives the same bits as from_float for every non-NaN float
// (checked on the H100 over all 2^32 inputs, docs/ops/softmax.md); a group holding a NaN takes
// from_float itself (the hardware returns a canonical NaN, from_float keeps the payload).
template <int K, typename T>
__device__ __forceinline__ void narrowk(const float (&f)[K], T (&o)[K]) {
  if constexpr (std::is_same_v<T, float>) {
#pragma unroll
    for (int j = 0; j < K; ++j) o[j] = f[j];
  } else {
    static_assert(K % 2 == 0, "pairs");
    bool nan = false;
#pragma unroll
    for (int j = 0; j < K; ++j) nan = nan || det_isnan(f[j]);
    if (!nan) {
#pragma unroll
      for (int k = 0; k < K / 2; ++k) {
        uint32_t pair;  // element 2k in the low half, as in memory
        if constexpr (std::is_same_v<T, bf16_t>) {
          const __nv_bfloat162 h = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
          memcpy(&pair, &h, 4);
        } else {
          static_assert(std::is_same_v<T, fp16_t>, "bf16 / fp16 / fp32 storage");
          const __half2 h = __floats2half2_rn(f[2 * k], f[2 * k + 1]);
          memcpy(&pair, &h, 4);
        }
        memcpy(&o[2 * k], &pair, 4);
      }
    } else {
#pragma unroll
      for (int j = 0; j < K; ++j) o[j] = from_float<T>(f[j]);
    }
  }
}
template <typename T>
__device__ __forceinline__ void narrow8(const float (&f)[8], T (&o)[8]) { narrowk<8>(f, o); }

__device__ __forceinline__ float shfl_xor(float v, int off) { return __shfl_xor_sync(0xffffffffu, v, off); }

// One butterfly level: both partners compute (lower lane's value) (+) (higher lane's value).
template <typename V, typename Op>
__device__ __forceinline__ V butterfly(V mine, int lane, int off, Op op) {
  V other = shfl_xor(mine, off);
  return (lane & off) ? op(other, mine) : op(mine, other);
}

// §2 step 3 for R rows of one thread at once (R independent trees sharing one block barrier). v[k] = the thread's
// K lane values of its row k (lanes K*t .. K*t+K-1, K a power of 2); smem[k] = row k's kMaxWarpsPerRow slots.
// Must be reached by every thread of the block (it synchronises the block). Returns row k's result in out[k].
template <int R, int K, typename V, typename Op>
__device__ __forceinline__ void rows_tree(const V (&v)[R][K], V (*smem)[kMaxWarpsPerRow], Op op, V (&out)[R]) {
  const int lane = threadIdx.x % kWarpSize;
  const int warps = blockDim.x / kWarpSize;  // same for the whole block (blockDim.x depends only on N)
#pragma unroll
  for (int k = 0; k < R; ++k) {
    // in-thread: the pairwise tree over the K lanes, e.g. K = 8: ((v0+v1)+(v2+v3)) + ((v4+v5)+(v6+v7))
    V t[K];
#pragma unroll
    for (int l = 0; l < K; ++l) t[l] = v[k][l];
#pragma unroll
    for (int width = K; width > 1; width /= 2)
#pragma unroll
      for (int l = 0; l < width / 2; ++l) t[l] = op(t[2 * l], t[2 * l + 1]);
    out[k] = t[0];
  }
#pragma unroll
  for (int off = 1; off < kWarpSize; off *= 2)
#pragma unroll
    for (int k = 0; k < R; ++k) out[k] = butterfly(out[k], lane, off, op);
  if (warps > 1) {
    if (lane == 0)
#pragma unroll
      for (int k = 0; k < R; ++k) smem[k][threadIdx.x / kWarpSize] = out[k];
    __syncthreads();
#pragma unroll
    for (int k = 0; k < R; ++k) out[k] = smem[k][lane & (warps - 1)];  // lanes >= warps hold copies, never read
    for (int off = 1; off < warps; off *= 2)
#pragma unroll
      for (int k = 0; k < R; ++k) out[k] = butterfly(out[k], lane, off, op);
  }
}

// One row (R = 1) of rows_tree.
template <int K, typename V, typename Op>
__device__ __forceinline__ V row_tree(const V (&v)[K], V* smem, Op op) {
  V out[1];
  rows_tree<1, K>(reinterpret_cast<const V (&)[1][K]>(v), reinterpret_cast<V (*)[kMaxWarpsPerRow]>(smem), op, out);
  return out[0];
}

struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return det_max(a, b); }
};

}  // namespace detops
