// Launcher of the rms_norm CUDA kernels (rms_norm_kernels.cu). Pure C++: no torch, no CUDA headers, so the
// torch glue (rms_norm_cuda.cpp) and the nvcc-only kernel file share it.
#pragma once
#include "rms_norm.h"

namespace detops {

// Runs rms_norm / add_rms_norm on `stream` (a cudaStream_t) for storage types In (input, residual, x_sum),
// W (weight) and Out (y). Instantiated for W in {In, float} and Out in {In, float} (Out = float only for
// In != float with a float weight: cast_first's promote). Returns the cudaError_t of the launch (0 = ok).
template <typename In, typename W, typename Out>
int launch_rms_norm(const RmsNormParams& p, void* stream);

// The backward (rms_norm_backward_kernels.cu): in = x's storage; g and dx are in's or float32.
int launch_rms_norm_backward(const RmsNormBackwardParams& p, Storage in, bool g_float, bool out_float, void* stream);

}  // namespace detops
