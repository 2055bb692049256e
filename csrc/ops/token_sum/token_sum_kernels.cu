// token_sum on CUDA: §5's fp32 chain per column (token_sum.h), with the CPU kernel's arithmetic, so CPU == CUDA
// (and == detops.mm(ones(1, T), a)) bitwise. One CTA = kTokenSumColumns adjacent columns (lane l of every warp owns
// column 32·blockIdx.x + l: each row's read is one 128-byte line) and kTokenSumWarps warps; a round of the CTA
// computes the next kTokenSumWarps blocks' sums t in parallel (warp w: block b0 + w, its 32 loads issued before
// the chain's adds), then warp 0 adds them to acc in ascending block order. The order of every column is fixed by
// T alone; the mapping by N only. Plain CUDA only: the torch glue is token_sum_cuda.cpp.
#include <cuda_runtime.h>
#include "token_sum_launch.h"

namespace detops {
namespace {

constexpr int kTokenSumColumns = 32;  // one warp's lanes
constexpr int kTokenSumWarps = 16;
static_assert(kMatmulKBlock == 32, "a full block is 32 unrolled loads");

template <bool kCompensated>
__global__ void __launch_bounds__(kTokenSumColumns * kTokenSumWarps) token_sum_kernel(TokenSumParams p) {
  __shared__ float block_sums[kTokenSumWarps][kTokenSumColumns];
  const int lane = threadIdx.x % kTokenSumColumns, warp = threadIdx.x / kTokenSumColumns;
  const int64_t col = int64_t(blockIdx.x) * kTokenSumColumns + lane;
  const bool col_ok = col < p.n;
  const int64_t blocks = (p.rows + kMatmulKBlock - 1) / kMatmulKBlock;
  float acc = 0.0f;
  NeumaierLane lanes;
  for (int64_t b0 = 0; b0 < blocks; b0 += kTokenSumWarps) {
    const int64_t b = b0 + warp;
    float t = 0.0f;
    if (col_ok && b < blocks) {
      const int64_t r0 = b * kMatmulKBlock, count = min(int64_t(kMatmulKBlock), p.rows - r0);
      const float* src = p.a + r0 * p.a_stride + col;
      if (count == kMatmulKBlock) {
        float v[kMatmulKBlock];
#pragma unroll
        for (int k = 0; k < kMatmulKBlock; ++k) v[k] = src[k * p.a_stride];
#pragma unroll
        for (int k = 0; k < kMatmulKBlock; ++k) t = t + v[k];
      } else {
        for (int64_t k = 0; k < count; ++k) t = t + src[k * p.a_stride];  // the last block: its real rows only
      }
    }
    block_sums[warp][lane] = t;
    __syncthreads();
    if (warp == 0) {
      const int64_t round = min(int64_t(kTokenSumWarps), blocks - b0);
      for (int64_t w = 0; w < round; ++w) {
        if constexpr (kCompensated) lanes.add(block_sums[w][lane]);
        else acc = acc + block_sums[w][lane];
      }
    }
    __syncthreads();
  }
  if (warp == 0 && col_ok) p.out[col] = kCompensated ? lanes.value() : acc;
}

}  // namespace

int launch_token_sum(const TokenSumParams& p, void* stream) {
  const int64_t ctas = (p.n + kTokenSumColumns - 1) / kTokenSumColumns;
  if (ctas > 0x7fffffff) return int(cudaErrorInvalidConfiguration);
  const dim3 grid{unsigned(ctas)}, block{unsigned(kTokenSumColumns * kTokenSumWarps)};
  auto s = static_cast<cudaStream_t>(stream);
  if (p.compensated) token_sum_kernel<true><<<grid, block, 0, s>>>(p);
  else token_sum_kernel<false><<<grid, block, 0, s>>>(p);
  return int(cudaGetLastError());
}

}  // namespace detops
