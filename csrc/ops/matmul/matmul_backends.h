// Backend entry points of matmul (host side; torch types allowed). matmul.cpp validates and calls these.
#pragma once
#include <optional>
#include "../../common/checks.h"
#include "matmul.h"

namespace detops {
// §5 fp32 order (also used for bf16/fp16 on the CPU).
void matmul_cpu(const MatmulParams& p, at::ScalarType dtype);
#ifdef DETOPS_WITH_CUDA
// §5 fp32 order on CUDA cores: bitwise equal to matmul_cpu for fp32.
void matmul_cuda_fp32(const MatmulParams& p);
// §5 bf16/fp16 tensor-core path. a3: (batch, M, K), b3: (batch, K, N) (any strides, batch stride may be 0),
// bias: (N,) or none. Returns (batch, M, N) contiguous in a3's dtype.
at::Tensor matmul_cuda_tc(const at::Tensor& a3, const at::Tensor& b3, const std::optional<at::Tensor>& bias);
#endif
}  // namespace detops
