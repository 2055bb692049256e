// Backend entry points of matmul (host side; torch types allowed). matmul.cpp validates and calls these.
#pragma once
#include <optional>
#include "../../common/checks.h"
#include "matmul.h"

namespace detops {
// §5 fp32 order (also used for bf16/fp16 on the CPU); p.compensated: §5 compensated order.
void matmul_cpu(const MatmulParams& p, at::ScalarType dtype);
#ifdef DETOPS_WITH_CUDA
// §5 fp32 order (fp32 accumulation) on CUDA cores: bitwise equal to matmul_cpu for the same p and dtype.
// matmul.cpp sends fp32 here, and every dtype when p.compensated.
void matmul_cuda_fp32(const MatmulParams& p, at::ScalarType dtype);
// §5 bf16/fp16 tensor-core path. p: validated geometry (any strides, batch strides may be 0) whose A / B
// pointers are a.data_ptr() / b.data_ptr() (the strides are relative to them, so the backend can view the
// operands with as_strided when it must copy them); bias: (N,) contiguous or undefined; c: the output,
// (batch, M, N) contiguous memory in the operands' dtype, p.c == c.data_ptr(). forced_variant: -1 = the
// row-count choice (tc_variant_for); 0 .. kTcVariantCount - 1 forces that tile (the test-only op _matmul_tc).
void matmul_cuda_tc(const MatmulParams& p, const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias,
                    const at::Tensor& c, int64_t forced_variant = -1);
#endif
}  // namespace detops
