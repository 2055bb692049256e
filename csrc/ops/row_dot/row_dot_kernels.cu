// row_dot on CUDA: docs/REDUCTION_ORDER.md §2 with the CPU kernel's arithmetic (row_dot_term, SumLane, the lane
// tree), so CPU == CUDA bitwise. One row = lane_threads(N) threads (threadIdx.x), thread t owning lanes
// 8t..8t+7 (element c*L + 8t + j is lane 8t + j of chunk c, L = lanes(N)); short rows share a block
// (rows_per_block(N), threadIdx.y). The mapping depends on N only, never on the row count or the device.
// Plain CUDA only: the torch glue is row_dot_cuda.cpp.
#include <cuda_runtime.h>
#include "../../reduce/lanes_cuda.cuh"
#include "row_dot_launch.h"

namespace detops {
namespace {

// Chunks whose loads a thread issues together (speed only: each lane still adds its elements in ascending order).
constexpr int kRowDotBatchChunks = 4;

template <typename A, typename B>
__global__ void __launch_bounds__(kMaxLaneThreads) row_dot_kernel(RowDotParams p, bool vec_a, bool vec_b) {
  __shared__ float warp_sums[kMaxRowsPerBlock][kMaxWarpsPerRow];
  const int64_t row = int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;  // invalid threads still reach the block barrier in row_tree
  const int64_t L = int64_t(blockDim.x) * kLaneVector;
  const int64_t first = int64_t(threadIdx.x) * kLaneVector;
  const int64_t chunks = valid && first < p.n ? (p.n - first + L - 1) / L : 0;
  const A* a = static_cast<const A*>(p.a) + (valid ? row * p.a_stride : 0) + first;
  const B* b = p.b == nullptr ? nullptr : static_cast<const B*>(p.b) + (valid ? row * p.b_stride : 0) + first;
  SumLane acc[kLaneVector];
  constexpr int U = kRowDotBatchChunks;
  for (int64_t c0 = 0; c0 < chunks; c0 += U) {
    A va[U][kLaneVector];
    B vb[U][kLaneVector];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + u;
      const int64_t count = c < chunks ? p.n - (c * L + first) : 0;
      load8(a + (c < chunks ? c * L : 0), count, vec_a, va[u]);
      if (b != nullptr) load8(b + (c < chunks ? c * L : 0), count, vec_b, vb[u]);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + u;
      if (c >= chunks) break;
      const int64_t count = p.n - (c * L + first);
#pragma unroll
      for (int j = 0; j < kLaneVector; ++j) {
        if (count >= kLaneVector || j < count)
          acc[j].add(b == nullptr ? to_float(va[u][j]) : to_float(va[u][j]) * to_float(vb[u][j]));
      }
    }
  }
  float lane_values[kLaneVector];
#pragma unroll
  for (int j = 0; j < kLaneVector; ++j) lane_values[j] = acc[j].value();
  const float s = row_tree(lane_values, warp_sums[threadIdx.y], SumOp{});
  if (valid && threadIdx.x == 0) p.out[row] = s;
}

template <typename A, typename B>
int launch_typed(const RowDotParams& p, void* stream) {
  const int rpb = rows_per_block(p.n);
  const int64_t blocks = (p.rows + rpb - 1) / rpb;
  if (blocks > kMaxGridBlocks) return int(cudaErrorInvalidConfiguration);
  const bool vec_a = vector_aligned(p.a, p.a_stride, sizeof(A));
  const bool vec_b = p.b != nullptr && vector_aligned(p.b, p.b_stride, sizeof(B));
  row_dot_kernel<A, B><<<dim3(unsigned(blocks)), dim3(unsigned(lane_threads(p.n)), unsigned(rpb)), 0,
                         static_cast<cudaStream_t>(stream)>>>(p, vec_a, vec_b);
  return int(cudaGetLastError());
}

template <typename A>
int launch_a(const RowDotParams& p, void* stream) {
  if (p.b == nullptr) return launch_typed<A, float>(p, stream);
  switch (p.b_dtype) {
    case RowDotDtype::kBFloat16: return launch_typed<A, bf16_t>(p, stream);
    case RowDotDtype::kFloat16: return launch_typed<A, fp16_t>(p, stream);
    default: return launch_typed<A, float>(p, stream);
  }
}

}  // namespace

int launch_row_dot(const RowDotParams& p, void* stream) {
  switch (p.a_dtype) {
    case RowDotDtype::kBFloat16: return launch_a<bf16_t>(p, stream);
    case RowDotDtype::kFloat16: return launch_a<fp16_t>(p, stream);
    default: return launch_a<float>(p, stream);
  }
}

}  // namespace detops
