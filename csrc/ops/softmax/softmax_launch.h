// Launcher of the softmax / log_softmax CUDA kernels (softmax_kernels.cuh). Pure C++: no torch, no CUDA
// headers, so the torch glue (softmax_cuda.cpp) and the nvcc-only kernel files (softmax_kernels_{f32,bf16,f16}.cu)
// share it.
#pragma once
#include "softmax.h"

namespace detops {

// Runs softmax / log_softmax (p.log) on `stream` (a cudaStream_t), In and Out in {float, bf16_t, fp16_t}.
// Returns the cudaError_t of the launch (0 = ok).
template <typename In, typename Out>
int launch_softmax(const SoftmaxParams& p, void* stream);

// The backward (softmax_backward_kernels.cu): g the upstream gradient's storage; a and dx are g's or float32.
int launch_softmax_backward(const SoftmaxBackwardParams& p, Storage g, bool a_float, bool out_float, void* stream);

}  // namespace detops
