// Launcher of the token_sum CUDA kernel (token_sum_kernels.cu). Pure C++: no torch, no CUDA headers.
#pragma once
#include "token_sum.h"

namespace detops {

// Runs token_sum on `stream` (a cudaStream_t). Returns the cudaError_t of the launch (0 = ok).
int launch_token_sum(const TokenSumParams& p, void* stream);

}  // namespace detops
