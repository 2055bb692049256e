// fp32 matmul on CUDA cores (REDUCTION_ORDER.md §5): launcher of the plain-CUDA kernel in
// matmul_fp32_kernels.cu. Pure CUDA runtime + C++ (no torch), so the kernel file compiles without ATen.
#pragma once
#include <cuda_runtime_api.h>
#include "matmul.h"

namespace detops {

// C = A @ B (+ bias) for fp32 operands described by p (any strides, batch stride 0 broadcasts), on `stream`
// of the current device. Bitwise equal to matmul_cpu for fp32. Returns the launch error, cudaSuccess if none.
cudaError_t launch_matmul_fp32(const MatmulParams& p, cudaStream_t stream);

}  // namespace detops
