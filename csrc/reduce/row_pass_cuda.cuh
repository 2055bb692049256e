// Device-side driver of the backwards' row kernels (docs/REDUCTION_ORDER.md §10 rule 2): S lane sums over a row in
// §2's order, then, optionally, an elementwise write pass that reads them. The CUDA twin of lane_reduce_cpu (which
// the CPU kernels call once per sum). Mapping, by N only: one row = lane_threads(N) threads (threadIdx.x), thread t
// owning lanes 8t..8t+7 (element c*L + 8t + j is lane 8t + j of chunk c, L = lanes(N)); short rows share a block
// (rows_per_block(N) rows, threadIdx.y). Used by row_dot, softmax_backward and rms_norm_backward.
#pragma once
#include "lanes_cuda.cuh"

namespace detops {

// Launch shape of a row kernel for rows of n elements: block (lane_threads(n), rows_per_block(n)).
struct RowGrid {
  dim3 grid, block;
  bool ok;
};
inline RowGrid row_grid(int64_t rows, int64_t n) {
  const int rpb = rows_per_block(n);
  const int64_t blocks = (rows + rpb - 1) / rpb;
  return {dim3(unsigned(blocks)), dim3(unsigned(lane_threads(n)), unsigned(rpb)), blocks <= kMaxGridBlocks};
}

// The sums' lanes: Lanes[s] is SumLane or NeumaierLane (the forward's choice for a sum it shares, e.g. rms_norm's
// sum of squares).
template <int S>
struct RowSums {
  float v[S];
};

// Runs on every thread of the block (row_tree synchronises it). body.terms(i, count, t) fills t[s][j] = the term of
// sum s at element i + j (j < count; count may be < 8 at the row's end); body.write(i, count, sums) writes the
// outputs of elements i .. i + count - 1. Each lane adds its elements in ascending order; the write pass visits
// the chunks in any order (elementwise). Returns the row's sums (the same in every thread of the row).
template <int S, typename Lane0, typename Lane1, bool kWrite, typename Body>
__device__ __forceinline__ RowSums<S> row_pass(int64_t n, bool valid, Body& body) {
  static_assert(S == 1 || S == 2, "one or two sums");
  __shared__ float warp_sums[S][kMaxRowsPerBlock][kMaxWarpsPerRow];
  const int64_t L = int64_t(blockDim.x) * kLaneVector;
  const int64_t first = int64_t(threadIdx.x) * kLaneVector;
  const int64_t chunks = valid && first < n ? (n - first + L - 1) / L : 0;
  Lane0 acc0[kLaneVector];
  Lane1 acc1[kLaneVector];
#pragma unroll 2
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i = c * L + first, count = n - i;
    float t[S][kLaneVector];
    body.terms(i, count, t);
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j) {
      if (count >= kLaneVector || j < count) {
        acc0[j].add(t[0][j]);
        if constexpr (S == 2) acc1[j].add(t[S - 1][j]);
      }
    }
  }
  RowSums<S> sums;
  float lane_values[kLaneVector];
#pragma unroll
  for (int j = 0; j < kLaneVector; ++j) lane_values[j] = acc0[j].value();
  sums.v[0] = row_tree(lane_values, warp_sums[0][threadIdx.y], SumOp{});
  if constexpr (S == 2) {
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j) lane_values[j] = acc1[j].value();
    sums.v[S - 1] = row_tree(lane_values, warp_sums[S - 1][threadIdx.y], SumOp{});
  }
  if constexpr (kWrite) {
    for (int64_t c = chunks - 1; c >= 0; --c) {  // last read first: likeliest still in L2
      const int64_t i = c * L + first;
      body.write(i, n - i, sums);
    }
  }
  return sums;
}

}  // namespace detops
