// matmul (mm / bmm / linear / addmm): parameters shared by every backend. Order: REDUCTION_ORDER.md §5.
// Pure C++ (included by plain-CUDA kernel files).
#pragma once
#include <cstdint>

namespace detops {

// C[b, m, n] = sum_k A[b, m, k] * B[b, k, n] (+ bias[n]); element strides given for A and B (any layout,
// including nn.Linear's weight.t()); C is (batch, M, N) contiguous. Batch stride 0 broadcasts.
struct MatmulParams {
  int64_t batch = 1, M = 0, N = 0, K = 0;
  const void* a = nullptr;
  int64_t a_bs = 0, a_rs = 0, a_cs = 0;  // batch, row (m), column (k) strides of A
  const void* b = nullptr;
  int64_t b_bs = 0, b_rs = 0, b_cs = 0;  // batch, row (k), column (n) strides of B
  const void* bias = nullptr;            // (N,) contiguous, same dtype as C, or null
  void* c = nullptr;                     // (batch, M, N) contiguous
  // REDUCTION_ORDER.md §5 compensated order: the K-block sums enter a Neumaier-compensated running sum.
  // Only the §5 fp32-order backends (CPU, CUDA cores) implement it; matmul.cpp routes it there.
  bool compensated = false;
};

}  // namespace detops
