// Launchers of the cross-entropy CUDA kernels (cross_entropy_kernels.cu). Pure C++: no torch, no CUDA headers.
#pragma once
#include "cross_entropy.h"

namespace detops {

// Run on `stream` (a cudaStream_t). Return the cudaError_t of the launch (0 = ok).
int launch_cross_entropy_nll(const CrossEntropyParams& p, void* stream);
int launch_cross_entropy_backward(const CrossEntropyParams& p, void* stream);

}  // namespace detops
