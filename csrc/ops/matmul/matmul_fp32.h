// matmul in the §5 fp32 order on CUDA cores (REDUCTION_ORDER.md §5): launcher of the plain-CUDA kernel in
// matmul_fp32_kernels.cu. Pure CUDA runtime + C++ (no torch), so the kernel file compiles without ATen.
#pragma once
#include <cuda_runtime_api.h>
#include "matmul.h"

namespace detops {

// Operand (and output) dtype of the CUDA-core kernel. bf16/fp16 are widened exactly to fp32 on load and the
// result is rounded once to the dtype (numeric.h); only with p.compensated (else cudaErrorInvalidValue:
// plain bf16/fp16 belong to the tensor cores).
enum class MatmulFp32Input : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// C = A @ B (+ bias) for operands of dtype `input` described by p (any strides, batch stride 0 broadcasts;
// p.compensated picks the §5 compensated order), on `stream` of the current device. Bitwise equal to
// matmul_cpu for the same p and dtype. Returns the launch error, cudaSuccess if none.
cudaError_t launch_matmul_fp32(const MatmulParams& p, MatmulFp32Input input, cudaStream_t stream);

}  // namespace detops
