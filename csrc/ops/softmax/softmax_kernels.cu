// softmax / log_softmax on CUDA: docs/REDUCTION_ORDER.md §2 and §4 with the same shared arithmetic as the
// CPU kernel (SoftmaxState / merge / NeumaierLane / det_exp / det_log / softmax_apply), so CPU == CUDA bitwise.
// One row = lane_threads(N) threads: short rows share a block (rows_per_block(N)), long rows are split over a
// thread-block cluster (cluster_blocks(N) blocks, more SMs per row); both depend on N only and keep each row's
// order. Plain CUDA only: the torch glue is softmax_cuda.cpp.
#include <cuda_runtime.h>
#include "../../reduce/lanes_cuda.cuh"
#include "softmax_launch.h"

namespace detops {
namespace {

// Row chunks of L = lanes(N) elements kept in registers between the reduction and the write pass.
constexpr int kCachedChunks = 1;

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

template <typename In, typename Out, bool Compensated>
__global__ void __launch_bounds__(kMaxLaneThreads, 2)
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

  auto load_x = [&](int64_t c, float (&xs)[8]) {
    const int64_t i = c * L + first;
    In v[8];
    load8(x + i, p.n - i, vec_x, v);
#pragma unroll
    for (int j = 0; j < 8; ++j) xs[j] = to_float(v[j]);
  };
  // Runs f(c, xs) over the row's chunks in ascending order; the first kCachedChunks are loaded into `cache`
  // when `fill`, else taken from it.
  float cache[kCachedChunks][8];
  auto ascending = [&](bool fill, auto&& f) {
#pragma unroll
    for (int c = 0; c < kCachedChunks; ++c)
      if (c < chunks) {
        if (fill) load_x(c, cache[c]);
        f(c, cache[c]);
      }
#pragma unroll 4
    for (int64_t c = kCachedChunks; c < chunks; ++c) {
      float xs[8];
      load_x(c, xs);
      f(c, xs);
    }
  };

  float m, s;
  if constexpr (!Compensated) {
    // §4 online state per lane, ascending within the lane; lanes merged by the §2 tree.
    SoftmaxState st[8];
    ascending(true, [&](int64_t c, const float (&xs)[8]) {
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
    ascending(true, [&](int64_t c, const float (&xs)[8]) {
      const int64_t count = p.n - (c * L + first);
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (j < count) mx[j] = det_max(mx[j], xs[j]);
    });
    m = row_tree(mx, warp_max[threadIdx.y], MaxOp{}, clusters, &cluster_value);
    NeumaierLane acc[8];
    ascending(false, [&](int64_t c, const float (&xs)[8]) {
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

  // Write pass, elementwise (§4). Uncached chunks go from the row's end backwards: those read last are the
  // likeliest to still be in L2.
  auto emit = [&](int64_t c, const float (&xs)[8]) {
    const int64_t i = c * L + first;
    Out o[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = from_float<Out>(softmax_apply(xs[j], m, s, log_s, p.log));
    store8(y + i, p.n - i, vec_y, o);
  };
#pragma unroll 2
  for (int64_t c = chunks - 1; c >= kCachedChunks; --c) {
    float xs[8];
    load_x(c, xs);
    emit(c, xs);
  }
#pragma unroll
  for (int c = 0; c < kCachedChunks; ++c)
    if (c < chunks) emit(c, cache[c]);
}

}  // namespace

template <typename In, typename Out>
int launch_softmax(const SoftmaxParams& p, void* stream) {
  const int clusters = cluster_blocks(p.n);
  const int rpb = clusters > 1 ? 1 : rows_per_block(p.n);
  const dim3 block(unsigned(lane_threads(p.n) / clusters), unsigned(rpb));
  const dim3 grid(unsigned(clusters > 1 ? p.rows * clusters : (p.rows + rpb - 1) / rpb));
  const bool vec_x = vector_aligned(p.x, p.x_stride, sizeof(In));
  const bool vec_y = vector_aligned(p.y, p.n, sizeof(Out));
  auto kernel = p.compensated ? softmax_kernel<In, Out, true> : softmax_kernel<In, Out, false>;
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
