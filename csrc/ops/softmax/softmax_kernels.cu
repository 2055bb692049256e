// softmax / log_softmax on CUDA: docs/REDUCTION_ORDER.md §2 and §4 with the same shared arithmetic as the
// CPU kernel (SoftmaxState / merge / NeumaierLane / det_exp / det_log / softmax_apply), so CPU == CUDA bitwise.
// One row = lane_threads(N) threads: short rows share a block (rows_per_block(N)), long rows are split over a
// thread-block cluster (cluster_blocks(N) blocks, more SMs per row); both depend on N only and keep each row's
// order. Plain CUDA only: the torch glue is softmax_cuda.cpp.
#include <cuda_runtime.h>
#include <cstdlib>
#include "../../reduce/lanes_cuda.cuh"
#include "softmax_launch.h"

namespace detops {
namespace {

// Chunks loaded together: a thread issues the loads of kBatchChunks(In) chunks (64 bytes) before it uses the
// first, so that many bytes are in flight per thread (a row's chunks are otherwise one dependent round trip
// each). Load width and scheduling only: each lane still sees its elements in ascending order.
template <typename In>
constexpr int kBatchChunks = 64 / (kLaneVector * int(sizeof(In)));

// SoftmaxState::add (reduce.h, §4) without a divergent branch around det_exp: the same det_exp argument and
// the same operations as its two branches, selected after the single det_exp call. Scalar equivalent:
//   x > m ? (s = s * exp(m - x) + 1, m = x) : (s = s + exp(x - m))
__device__ __forceinline__ void absorb(SoftmaxState& st, float x) {
  if (x == -kInf) return;
  const bool up = x > st.m;
  const float e = det_exp(up ? st.m - x : x - st.m);
  st.s = up ? st.s * e + 1.0f : st.s + e;
  st.m = up ? x : st.m;
}

template <typename In>
__device__ __forceinline__ void widen(const In (&v)[8], float (&xs)[8]) {
#pragma unroll
  for (int j = 0; j < 8; ++j) xs[j] = to_float(v[j]);
}

// The chunks c of [lo, hi) of one row, f(c, xs) for each; `descending` picks the visiting order (only for
// elementwise passes). Loads are issued kBatchChunks at a time, before the calls.
template <typename In, typename F>
__device__ __forceinline__ void chunk_range(const In* x, int64_t n, int64_t first, int64_t L, bool vec,
                                            int64_t lo, int64_t hi, bool descending, F&& f) {
  constexpr int U = kBatchChunks<In>;
  for (int64_t b = 0; b < hi - lo; b += U) {
    if (b + U <= hi - lo) {
      In v[U][8];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = descending ? hi - 1 - (b + u) : lo + b + u;
        load8(x + c * L + first, n - (c * L + first), vec, v[u]);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        float xs[8];
        widen(v[u], xs);
        f(descending ? hi - 1 - (b + u) : lo + b + u, xs);
      }
    } else {
      for (int64_t u = b; u < hi - lo; ++u) {
        const int64_t c = descending ? hi - 1 - u : lo + u;
        In v[8];
        load8(x + c * L + first, n - (c * L + first), vec, v);
        float xs[8];
        widen(v, xs);
        f(c, xs);
      }
    }
  }
}

// Cluster split of long rows: blocks of kClusterBlockThreads threads (lanes_cuda.cuh). DETOPS_EXPERIMENT
// only: the benchmark sweep of the cluster block size (removed before merge).
int cluster_block_threads() {
  static const int v = [] {
    const char* e = getenv("DETOPS_SOFTMAX_CLUSTER_BLOCK_THREADS");
    return e ? atoi(e) : kClusterBlockThreads;
  }();
  return v;
}
// Launch bounds (kMaxLaneThreads, MinBlocks): 2 caps registers at 64 (spills), 1 at 128. DETOPS_EXPERIMENT only.
int min_blocks() {
  static const int v = [] {
    const char* e = getenv("DETOPS_SOFTMAX_MIN_BLOCKS");
    return e ? atoi(e) : 2;
  }();
  return v;
}

template <typename In, typename Out, bool Compensated, int MinBlocks>
__global__ void __launch_bounds__(kMaxLaneThreads, MinBlocks)
softmax_kernel(SoftmaxParams p, bool vec_x, bool vec_y, int clusters) {
  __shared__ SoftmaxState warp_states[kMaxRowsPerBlock][kMaxWarpsPerRow];
  __shared__ float warp_max[kMaxRowsPerBlock][kMaxWarpsPerRow];
  __shared__ float warp_sums[kMaxRowsPerBlock][kMaxWarpsPerRow];
  __shared__ SoftmaxState cluster_state;
  __shared__ float cluster_value;
  // clusters > 1: one row per cluster, block rank = the row's thread slice; else blockDim.y rows per block.
  const int64_t row = clusters > 1 ? int64_t(blockIdx.x) / clusters : int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  const int rank = clusters > 1 ? int(blockIdx.x % clusters) : 0;
  const bool valid = row < p.rows;  // invalid threads still reach the block barriers in row_tree
  const int64_t L = int64_t(blockDim.x) * clusters * kLaneVector;
  // element first + c*L + j sits in lane first + j
  const int64_t first = (int64_t(rank) * blockDim.x + threadIdx.x) * kLaneVector;
  const int64_t chunks = valid ? (p.n + L - 1) / L : 0;
  const In* x = static_cast<const In*>(p.x) + (valid ? row * p.x_stride : 0);
  Out* y = static_cast<Out*>(p.y) + (valid ? row * p.n : 0);

  // Chunk 0 stays in registers (raw storage) from the first read to the write pass.
  In cache[8];
  float cache_xs[8];
  if (chunks > 0) {
    load8(x + first, p.n - first, vec_x, cache);
  }
  auto all_chunks = [&](auto&& f) {  // ascending: chunk 0 from the cache, then the rest
    if (chunks > 0) {
      widen(cache, cache_xs);
      f(int64_t(0), cache_xs);
    }
    chunk_range(x, p.n, first, L, vec_x, 1, chunks, false, f);
  };

  float m, s;
  if constexpr (!Compensated) {
    // §4 online state per lane, ascending within the lane; lanes merged by the §2 tree.
    SoftmaxState st[8];
    all_chunks([&](int64_t c, const float (&xs)[8]) {
      const int64_t count = p.n - (c * L + first);
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (j < count) absorb(st[j], xs[j]);
    });
    const SoftmaxState total = row_tree(st, warp_states[threadIdx.y], StateMergeOp{}, clusters, &cluster_state);
    m = total.m;
    s = total.s;
  } else {
    // §4 compensated: M = row maximum (exact in any order), then S = Neumaier lane sum of exp(x - M).
    float mx[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) mx[j] = -kInf;
    all_chunks([&](int64_t c, const float (&xs)[8]) {
      const int64_t count = p.n - (c * L + first);
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (j < count) mx[j] = det_max(mx[j], xs[j]);
    });
    m = row_tree(mx, warp_max[threadIdx.y], MaxOp{}, clusters, &cluster_value);
    NeumaierLane acc[8];
    all_chunks([&](int64_t c, const float (&xs)[8]) {
      const int64_t count = p.n - (c * L + first);
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (j < count) acc[j].add(det_exp(xs[j] - m));
    });
    float lane_values[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) lane_values[j] = acc[j].value();
    s = row_tree(lane_values, warp_sums[threadIdx.y], SumOp{}, clusters, &cluster_value);
  }
  const float log_s = p.log ? det_log(s) : 0.0f;

  // Write pass, elementwise (§4). Chunks 1.. go from the row's end backwards (those read last are the likeliest
  // to still be in L2), chunk 0 from the cache last.
  auto emit = [&](int64_t c, const float (&xs)[8]) {
    const int64_t i = c * L + first;
    Out o[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = from_float<Out>(softmax_apply(xs[j], m, s, log_s, p.log));
    store8(y + i, p.n - i, vec_y, o);
  };
  chunk_range(x, p.n, first, L, vec_x, 1, chunks, true, emit);
  if (chunks > 0) {
    widen(cache, cache_xs);
    emit(0, cache_xs);
  }
}

}  // namespace

template <typename In, typename Out>
int launch_softmax(const SoftmaxParams& p, void* stream) {
  const int64_t t = lane_threads(p.n);
  const int cluster_threads = cluster_block_threads();
  const int clusters = t >= 2 * cluster_threads ? int(t / cluster_threads) : 1;
  const int rpb = clusters > 1 ? 1 : rows_per_block(p.n);
  const dim3 block(unsigned(lane_threads(p.n) / clusters), unsigned(rpb));
  const dim3 grid(unsigned(clusters > 1 ? p.rows * clusters : (p.rows + rpb - 1) / rpb));
  const bool vec_x = vector_aligned(p.x, p.x_stride, sizeof(In));
  const bool vec_y = vector_aligned(p.y, p.n, sizeof(Out));
  auto kernel = min_blocks() == 1
                    ? (p.compensated ? softmax_kernel<In, Out, true, 1> : softmax_kernel<In, Out, false, 1>)
                    : (p.compensated ? softmax_kernel<In, Out, true, 2> : softmax_kernel<In, Out, false, 2>);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = 0;
  cfg.stream = static_cast<cudaStream_t>(stream);
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(clusters);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, p, vec_x, vec_y, clusters);
  if (e != cudaSuccess) return int(e);
  return int(cudaGetLastError());
}

#define DETOPS_SOFTMAX_INSTANCE(In, Out) template int launch_softmax<In, Out>(const SoftmaxParams&, void*);
DETOPS_SOFTMAX_INSTANCE(float, float)
DETOPS_SOFTMAX_INSTANCE(float, bf16_t)
DETOPS_SOFTMAX_INSTANCE(float, fp16_t)
DETOPS_SOFTMAX_INSTANCE(bf16_t, float)
DETOPS_SOFTMAX_INSTANCE(bf16_t, bf16_t)
DETOPS_SOFTMAX_INSTANCE(bf16_t, fp16_t)
DETOPS_SOFTMAX_INSTANCE(fp16_t, float)
DETOPS_SOFTMAX_INSTANCE(fp16_t, bf16_t)
DETOPS_SOFTMAX_INSTANCE(fp16_t, fp16_t)
#undef DETOPS_SOFTMAX_INSTANCE

}  // namespace detops
