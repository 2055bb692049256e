// Launcher of the row_dot CUDA kernel (row_dot_kernels.cu). Pure C++: no torch, no CUDA headers.
#pragma once
#include "row_dot.h"

namespace detops {

// Runs row_dot on `stream` (a cudaStream_t). Returns the cudaError_t of the launch (0 = ok).
int launch_row_dot(const RowDotParams& p, void* stream);

}  // namespace detops
