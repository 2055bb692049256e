// detops::token_sum: each column's sum over the rows of a (T, N) float32 tensor in §5's fp32 chain
// (docs/REDUCTION_ORDER.md §5, used by §10 rule 1's token reductions: rms_norm's dweight, fp32 biases): rows in
// blocks of kMatmulKBlock from row 0, `t = 0; t = t + a_k` inside a block, `acc = 0; acc = acc + t` across blocks
// (compensated: the block sums into a NeumaierLane, acc = s + c). It is matmul's order for `ones(1, T) @ a`
// (1 · a_k = a_k exactly), so it gives mm's bits, CPU and CUDA, without a GEMM doing a GEMV. Pure C++.
#pragma once
#include <cstdint>
#include "../../common/constants.h"
#include "../../reduce/reduce.h"

namespace detops {

struct TokenSumParams {
  int64_t rows = 0, n = 0;
  const float* a = nullptr;  // (rows, n), unit stride along n, row stride a_stride
  int64_t a_stride = 0;
  float* out = nullptr;      // (n,)
  bool compensated = false;
  int device = -1;
};

}  // namespace detops
