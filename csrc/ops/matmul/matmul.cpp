// detops::mm / bmm / linear / addmm: validation, shape handling (everything becomes a (batch, M, K) @
// (batch, K, N) product with strides passed through, no copies), dispatch to the backend.
// Order: REDUCTION_ORDER.md §5.
#include <c10/core/DeviceGuard.h>
#include "matmul_backends.h"

namespace detops {

static void check_operand(const at::Tensor& t, const char* op, const char* name, int64_t dim) {
  check_float_dtype(t, op, name);
  check_device(t, op, name);
  TORCH_CHECK(t.dim() == dim, "detops.", op, ": ", name, " must be ", dim, "-D, got shape ", t.sizes());
}

static void check_pair(const at::Tensor& a, const at::Tensor& b, const char* op, const char* an, const char* bn) {
  // No type promotion: a silent cast would be a different computation than the caller asked for.
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "detops.", op, ": ", an, " and ", bn,
              " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
  check_same_device(a, b, op, an, bn);
}

// bias: (N,) in the operands' dtype and device, or undefined. Returns it contiguous.
static at::Tensor check_bias(const at::Tensor& bias, const at::Tensor& a, int64_t n, const char* op) {
  if (!bias.defined()) return bias;
  check_float_dtype(bias, op, "bias");
  check_pair(a, bias, op, "input", "bias");
  // Only the (N,) bias that nn.Linear produces; other broadcasts are refused rather than guessed.
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == n, "detops.", op, ": bias must have shape (", n,
              ",) (one value per output column), got ", bias.sizes());
  return bias.contiguous();
}

// a3: (batch, M, K), b3: (batch, K, N), any strides; bias: (N,) contiguous or undefined.
// Returns C (batch, M, N) contiguous in the operands' dtype.
static at::Tensor matmul3(const at::Tensor& a3, const at::Tensor& b3, const at::Tensor& bias) {
  const at::DeviceGuard guard(a3.device());
  const int64_t batch = a3.size(0), M = a3.size(1), K = a3.size(2), N = b3.size(2);
  const at::ScalarType dtype = a3.scalar_type();
  at::Tensor c = at::empty({batch, M, N}, a3.options());
  if (c.numel() == 0) return c;
  if (K == 0) {
    // Empty sum: acc = 0, y = 0 + bias[n] (REDUCTION_ORDER.md §5). Exact, so no kernel is needed.
    c.zero_();
    if (bias.defined()) c.add_(bias);
    return c;
  }
#ifdef DETOPS_WITH_CUDA
  if (a3.is_cuda() && dtype != at::kFloat) {
    std::optional<at::Tensor> bias_opt;
    if (bias.defined()) bias_opt = bias;
    return matmul_cuda_tc(a3, b3, bias_opt);
  }
#endif
  MatmulParams p;
  p.batch = batch;
  p.M = M;
  p.N = N;
  p.K = K;
  p.a = a3.data_ptr();
  p.a_bs = a3.stride(0);
  p.a_rs = a3.stride(1);
  p.a_cs = a3.stride(2);
  p.b = b3.data_ptr();
  p.b_bs = b3.stride(0);
  p.b_rs = b3.stride(1);
  p.b_cs = b3.stride(2);
  p.bias = bias.defined() ? bias.data_ptr() : nullptr;
  p.c = c.data_ptr();
#ifdef DETOPS_WITH_CUDA
  if (a3.is_cuda()) {
    matmul_cuda_fp32(p);
    return c;
  }
#endif
  matmul_cpu(p, dtype);
  return c;
}

// a: (M, K), b: (K, N) -> (M, N).
at::Tensor mm(const at::Tensor& a, const at::Tensor& b) {
  const char* op = "mm";
  check_operand(a, op, "a", 2);
  check_operand(b, op, "b", 2);
  check_pair(a, b, op, "a", "b");
  TORCH_CHECK(a.size(1) == b.size(0), "detops.mm: a ", a.sizes(), " and b ", b.sizes(),
              " cannot be multiplied (a.shape[1] != b.shape[0])");
  return matmul3(a.unsqueeze(0), b.unsqueeze(0), at::Tensor()).squeeze(0);
}

// a: (B, M, K), b: (B, K, N) -> (B, M, N).
at::Tensor bmm(const at::Tensor& a, const at::Tensor& b) {
  const char* op = "bmm";
  check_operand(a, op, "a", 3);
  check_operand(b, op, "b", 3);
  check_pair(a, b, op, "a", "b");
  TORCH_CHECK(a.size(0) == b.size(0), "detops.bmm: batch sizes differ: a ", a.sizes(), ", b ", b.sizes());
  TORCH_CHECK(a.size(2) == b.size(1), "detops.bmm: a ", a.sizes(), " and b ", b.sizes(),
              " cannot be multiplied (a.shape[2] != b.shape[1])");
  return matmul3(a, b, at::Tensor());
}

// input: (..., K), weight: (N, K), bias: (N,) or None -> (..., N). weight.t() is used as a strided view.
at::Tensor linear(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const char* op = "linear";
  check_float_dtype(input, op, "input");
  check_device(input, op, "input");
  TORCH_CHECK(input.dim() >= 1, "detops.linear: input must have at least 1 dimension, got a scalar");
  check_operand(weight, op, "weight", 2);
  check_pair(input, weight, op, "input", "weight");
  const int64_t K = weight.size(1), N = weight.size(0);
  TORCH_CHECK(input.size(-1) == K, "detops.linear: input ", input.sizes(), " and weight ", weight.sizes(),
              " do not match (input.shape[-1] != weight.shape[1])");
  at::Tensor b = check_bias(bias.has_value() ? *bias : at::Tensor(), input, N, op);
  // Fold the leading dims into rows; reshape copies only when they cannot be folded as a view.
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < input.dim(); ++d) rows *= input.size(d);
  at::Tensor a2 = input.reshape({rows, K});  // explicit rows: -1 is ambiguous when K == 0
  std::vector<int64_t> out_shape(input.sizes().begin(), input.sizes().end());
  out_shape.back() = N;
  return matmul3(a2.unsqueeze(0), weight.t().unsqueeze(0), b).view(out_shape);
}

// bias: (N,), a: (M, K), b: (K, N) -> bias + a @ b (beta = alpha = 1), as aten.addmm gets it from nn.Linear.
at::Tensor addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
  const char* op = "addmm";
  check_operand(a, op, "a", 2);
  check_operand(b, op, "b", 2);
  check_pair(a, b, op, "a", "b");
  TORCH_CHECK(a.size(1) == b.size(0), "detops.addmm: a ", a.sizes(), " and b ", b.sizes(),
              " cannot be multiplied (a.shape[1] != b.shape[0])");
  check_device(bias, op, "bias");
  at::Tensor bc = check_bias(bias, a, b.size(1), op);
  return matmul3(a.unsqueeze(0), b.unsqueeze(0), bc).squeeze(0);
}

TORCH_LIBRARY_IMPL(detops, CPU, m) {
  m.impl("mm", &mm);
  m.impl("bmm", &bmm);
  m.impl("linear", &linear);
  m.impl("addmm", &addmm);
}
#ifdef DETOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(detops, CUDA, m) {
  m.impl("mm", &mm);
  m.impl("bmm", &bmm);
  m.impl("linear", &linear);
  m.impl("addmm", &addmm);
}
#endif

}  // namespace detops
