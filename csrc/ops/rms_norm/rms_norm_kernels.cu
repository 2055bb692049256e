// rms_norm / add_rms_norm on CUDA: docs/REDUCTION_ORDER.md §2–§3 with the same shared arithmetic as the CPU
// kernel (rms_norm_input / rms_norm_scale / rms_norm_apply, SumLane / NeumaierLane), so CPU == CUDA bitwise.
// One row = lane_threads(N) threads; small rows share a block (rows_per_block(N)), each with its own order.
// Plain CUDA only: the torch glue is rms_norm_cuda.cpp.
#include <cuda_runtime.h>
#include "../../reduce/lanes_cuda.cuh"
#include "rms_norm_launch.h"

namespace detops {
namespace {

// Row chunks of L = lanes(N) elements kept in registers between the sum pass and the write pass (rows up to
// 2L, i.e. every hidden size <= 8192, are read once). Longer rows re-read the rest; the order is unchanged.
constexpr int kCachedChunks = 2;

// Per tensor: may its rows be accessed as 16-byte vectors (load width only, never the order).
struct RmsNormVector { bool x, res, w, y, x_sum; };

template <typename In, typename W, typename Out, typename Lane>
__global__ void __launch_bounds__(kMaxLaneThreads, 2)
rms_norm_kernel(RmsNormParams p, RmsNormVector vec) {
  __shared__ float warp_sums[kMaxRowsPerBlock][kMaxWarpsPerRow];
  const int64_t row = int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;  // invalid threads still reach the block barrier in row_tree
  const int64_t L = int64_t(blockDim.x) * kLaneVector;
  const int64_t first = int64_t(threadIdx.x) * kLaneVector;  // element first + c*L + j sits in lane first + j
  const int64_t chunks = valid ? (p.n + L - 1) / L : 0;
  const In* x = static_cast<const In*>(p.x) + (valid ? row * p.x_stride : 0);
  const In* res = p.residual ? static_cast<const In*>(p.residual) + (valid ? row * p.res_stride : 0) : nullptr;
  In* x_sum = p.x_sum ? static_cast<In*>(p.x_sum) + (valid ? row * p.n : 0) : nullptr;
  Out* y = static_cast<Out*>(p.y) + (valid ? row * p.n : 0);
  const W* w = static_cast<const W*>(p.w);

  // The 8 inputs of chunk c as the norm sees them (§3 fused residual).
  auto load_input = [&](int64_t c, float (&xs)[8]) {
    const int64_t i = c * L + first;
    In xv[8], rv[8];
    load8(x + i, p.n - i, vec.x, xv);
    if (res) load8(res + i, p.n - i, vec.res, rv);
#pragma unroll
    for (int j = 0; j < 8; ++j) xs[j] = rms_norm_input<In>(xv, res ? rv : nullptr, j);
  };

  // Pass 1: lane l accumulates x_i * x_i for i = l, l + L, ... ascending (§2 step 2).
  Lane acc[8];
  auto absorb = [&](int64_t c, const float (&xs)[8]) {
    const int64_t i = c * L + first;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (j < p.n - i) acc[j].add(xs[j] * xs[j]);
    if (x_sum) {
      In o[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = from_float<In>(xs[j]);
      store8(x_sum + i, p.n - i, vec.x_sum, o);
    }
  };
  float cache[kCachedChunks][8];
#pragma unroll
  for (int c = 0; c < kCachedChunks; ++c)
    if (c < chunks) { load_input(c, cache[c]); absorb(c, cache[c]); }
#pragma unroll 2
  for (int64_t c = kCachedChunks; c < chunks; ++c) {
    float xs[8];
    load_input(c, xs);
    absorb(c, xs);
  }

  // §2 step 3, then §3: r = 1 / sqrt(ss / N + eps).
  float lane_values[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) lane_values[j] = acc[j].value();
  const float ss = row_tree(lane_values, warp_sums[threadIdx.y], SumOp{});
  const float r = rms_norm_scale(ss, p.n, p.eps);

  // Pass 2: y_i = rms_norm_apply(x_i, r, w_i) (§3), elementwise.
  auto emit = [&](int64_t c, const float (&xs)[8]) {
    const int64_t i = c * L + first;
    Out o[8];
    if (w) {
      W wv[8];
      load8(w + i, p.n - i, vec.w, wv);
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = rms_norm_apply<In, W, Out>(xs[j], r, wv, j, p.mode);
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = rms_norm_apply<In, W, Out>(xs[j], r, static_cast<const W*>(nullptr), j, p.mode);
    }
    store8(y + i, p.n - i, vec.y, o);
  };
#pragma unroll
  for (int c = 0; c < kCachedChunks; ++c)
    if (c < chunks) emit(c, cache[c]);
  for (int64_t c = kCachedChunks; c < chunks; ++c) {
    float xs[8];
    load_input(c, xs);
    emit(c, xs);
  }
}

}  // namespace

template <typename In, typename W, typename Out>
int launch_rms_norm(const RmsNormParams& p, void* stream) {
  const int rpb = rows_per_block(p.n);
  const dim3 block(unsigned(lane_threads(p.n)), unsigned(rpb));
  const dim3 grid(unsigned((p.rows + rpb - 1) / rpb));
  RmsNormVector vec;
  vec.x = vector_aligned(p.x, p.x_stride, sizeof(In));
  vec.res = p.residual != nullptr && vector_aligned(p.residual, p.res_stride, sizeof(In));
  vec.w = p.w != nullptr && vector_aligned(p.w, 0, sizeof(W));
  vec.y = vector_aligned(p.y, p.n, sizeof(Out));
  vec.x_sum = p.x_sum != nullptr && vector_aligned(p.x_sum, p.n, sizeof(In));
  auto s = static_cast<cudaStream_t>(stream);
  if (p.compensated) rms_norm_kernel<In, W, Out, NeumaierLane><<<grid, block, 0, s>>>(p, vec);
  else rms_norm_kernel<In, W, Out, SumLane><<<grid, block, 0, s>>>(p, vec);
  return int(cudaGetLastError());
}

// W in {In, float}; Out = In, or float for cast_first with a float weight (promote(In, float)).
template int launch_rms_norm<float, float, float>(const RmsNormParams&, void*);
template int launch_rms_norm<bf16_t, bf16_t, bf16_t>(const RmsNormParams&, void*);
template int launch_rms_norm<bf16_t, float, bf16_t>(const RmsNormParams&, void*);
template int launch_rms_norm<bf16_t, float, float>(const RmsNormParams&, void*);
template int launch_rms_norm<fp16_t, fp16_t, fp16_t>(const RmsNormParams&, void*);
template int launch_rms_norm<fp16_t, float, fp16_t>(const RmsNormParams&, void*);
template int launch_rms_norm<fp16_t, float, float>(const RmsNormParams&, void*);

}  // namespace detops
