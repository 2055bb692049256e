// detops::mm / bmm / linear / addmm: validation, shape handling (everything becomes a (batch, M, K) @
// (batch, K, N) product described by pointers and strides: no views, no copies), dispatch to the backend.
// Order: REDUCTION_ORDER.md §5; compensated=True selects §5's compensated order (CPU, and CUDA cores on CUDA
// for every dtype).
#include <c10/core/DeviceGuard.h>
#include <c10/util/SmallVector.h>
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

// a: (M, K) and b: (K, N) of mm / addmm: each a float operand on a supported device, one dtype, matching K.
static void check_mm_operands(const at::Tensor& a, const at::Tensor& b, const char* op) {
  check_operand(a, op, "a", 2);
  check_operand(b, op, "b", 2);
  check_pair(a, b, op, "a", "b");
  TORCH_CHECK(a.size(1) == b.size(0), "detops.", op, ": a ", a.sizes(), " and b ", b.sizes(),
              " cannot be multiplied (a.shape[1] != b.shape[0])");
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

// C = A @ B (+ bias) for the geometry in p (batch, M, N, K and the element strides of A (batch, M, K) and
// B (batch, K, N), relative to a.data_ptr() / b.data_ptr()); bias: (N,) contiguous or undefined. Returns C
// in `out_shape` (contiguous, i.e. (batch, M, N) in memory) in the operands' dtype. No views are made on the
// way: at decode sizes every view or allocation is a visible share of the call (docs/ops/matmul.md).
// forced_variant (CUDA bf16/fp16 only; -1: the row-count choice): the test-only op _matmul_tc.
static at::Tensor run_matmul(MatmulParams p, const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias,
                             at::IntArrayRef out_shape, int64_t forced_variant = -1) {
  const at::DeviceGuard guard(a.device());
  at::Tensor c = at::empty(out_shape, a.options());
  if (c.numel() == 0) return c;
  if (p.K == 0) {
    // Empty sum: acc = 0, y = 0 + bias[n] (REDUCTION_ORDER.md §5). Exact, so no kernel is needed.
    c.zero_();
    if (bias.defined()) c.add_(bias);
    return c;
  }
  p.bias = bias.defined() ? bias.data_ptr() : nullptr;
  p.c = c.data_ptr();
#ifdef DETOPS_WITH_CUDA
  if (a.is_cuda()) {
    // fp32, and the compensated order of every dtype: CUDA cores, the CPU's bits. Plain bf16/fp16: tensor cores.
    if (a.scalar_type() == at::kFloat || p.compensated) {
      matmul_cuda_fp32(p, a.scalar_type());
    } else {
      matmul_cuda_tc(p, a, b, bias, c, forced_variant);
    }
    return c;
  }
#endif
  matmul_cpu(p, a.scalar_type());
  return c;
}

// A (M, K) or (B, M, K) and B (K, N) or (B, K, N) -> the geometry of a (batch, M, K) @ (batch, K, N) product.
static MatmulParams geometry(const at::Tensor& a, const at::Tensor& b, bool compensated) {
  MatmulParams p;
  p.compensated = compensated;
  const int64_t da = a.dim() - 2, db = b.dim() - 2;  // 1 for 3-D operands, 0 for 2-D ones
  p.batch = da ? a.size(0) : 1;
  p.M = a.size(da);
  p.K = a.size(da + 1);
  p.N = b.size(db + 1);
  p.a = a.data_ptr();
  p.a_bs = da ? a.stride(0) : 0;
  p.a_rs = a.stride(da);
  p.a_cs = a.stride(da + 1);
  p.b = b.data_ptr();
  p.b_bs = db ? b.stride(0) : 0;
  p.b_rs = b.stride(db);
  p.b_cs = b.stride(db + 1);
  return p;
}

// a: (M, K), b: (K, N) -> (M, N).
at::Tensor mm(const at::Tensor& a, const at::Tensor& b, bool compensated,
              const std::optional<at::Tensor>& documents) {
  const char* op = "mm";
  check_mm_operands(a, b, op);
  check_documents(documents, a.sizes().slice(0, 1), a, op);
  const int64_t out_shape[2] = {a.size(0), b.size(1)};
  return run_matmul(geometry(a, b, compensated), a, b, at::Tensor(), out_shape);
}

// a: (B, M, K), b: (B, K, N) -> (B, M, N).
at::Tensor bmm(const at::Tensor& a, const at::Tensor& b, bool compensated) {
  const char* op = "bmm";
  check_operand(a, op, "a", 3);
  check_operand(b, op, "b", 3);
  check_pair(a, b, op, "a", "b");
  TORCH_CHECK(a.size(0) == b.size(0), "detops.bmm: batch sizes differ: a ", a.sizes(), ", b ", b.sizes());
  TORCH_CHECK(a.size(2) == b.size(1), "detops.bmm: a ", a.sizes(), " and b ", b.sizes(),
              " cannot be multiplied (a.shape[2] != b.shape[1])");
  const int64_t out_shape[3] = {a.size(0), a.size(1), b.size(2)};
  return run_matmul(geometry(a, b, compensated), a, b, at::Tensor(), out_shape);
}

// Row stride of input (..., K) with its leading dims folded into rows, or -1 when they cannot be folded
// without a copy. Dims of size 1 place no constraint.
static int64_t folded_row_stride(const at::Tensor& input) {
  const int64_t K = input.size(-1);
  int64_t rs = -1;  // stride of the innermost leading dim of size > 1
  int64_t span = 0;  // elements that dim's step must equal for the next-outer dim to fold
  for (int64_t d = input.dim() - 2; d >= 0; --d) {
    const int64_t n = input.size(d), s = input.stride(d);
    if (n == 1) continue;
    if (rs < 0) {
      rs = s;
    } else if (s != span) {
      return -1;
    }
    span = s * n;
  }
  return rs < 0 ? K : rs;  // a single row: any stride will do
}

// input: (..., K), weight: (N, K), bias: (N,) or None -> (..., N). weight.t() is read through its strides.
at::Tensor linear(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  bool compensated, const std::optional<at::Tensor>& documents) {
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
  check_documents(documents, input.sizes().slice(0, input.dim() - 1), input, op);
  // Fold the leading dims into rows: through the strides when they fold, else a contiguous copy.
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < input.dim(); ++d) rows *= input.size(d);
  int64_t row_stride = folded_row_stride(input);
  const at::Tensor a = row_stride >= 0 ? input : input.reshape({rows, K});
  if (row_stride < 0) row_stride = a.stride(0);
  MatmulParams p;
  p.compensated = compensated;
  p.M = rows;
  p.K = K;
  p.N = N;
  p.a = a.data_ptr();
  p.a_rs = row_stride;
  p.a_cs = a.stride(-1);
  p.b = weight.data_ptr();  // B = weight.t(): B[k, n] = weight[n, k]
  p.b_rs = weight.stride(1);
  p.b_cs = weight.stride(0);
  c10::SmallVector<int64_t, 5> out_shape(input.sizes().begin(), input.sizes().end());
  out_shape.back() = N;
  return run_matmul(p, a, weight, b, out_shape);
}

// bias: (N,), a: (M, K), b: (K, N) -> bias + a @ b (beta = alpha = 1), as aten.addmm gets it from nn.Linear.
at::Tensor addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b, bool compensated,
                 const std::optional<at::Tensor>& documents) {
  const char* op = "addmm";
  check_mm_operands(a, b, op);
  check_documents(documents, a.sizes().slice(0, 1), a, op);
  check_device(bias, op, "bias");
  at::Tensor bc = check_bias(bias, a, b.size(1), op);
  const int64_t out_shape[2] = {a.size(0), b.size(1)};
  return run_matmul(geometry(a, b, compensated), a, b, bc, out_shape);
}

#ifdef DETOPS_WITH_CUDA
// Test-only: bmm (a3 (batch, M, K) @ b3 (batch, K, N) + bias) on the tensor cores with the CTA tile forced
// (variant 0 .. kTcVariantCount - 1; -1 = the normal row-count choice), so tests/test_matmul_cuda.py can prove every
// variant's bits equal at every M (REDUCTION_ORDER.md §5). bmm's checks, then CUDA bf16/fp16 only.
at::Tensor matmul_tc_variant(const at::Tensor& a3, const at::Tensor& b3, const std::optional<at::Tensor>& bias,
                             int64_t forced_variant) {
  const char* op = "_matmul_tc";
  check_operand(a3, op, "a", 3);
  check_operand(b3, op, "b", 3);
  check_pair(a3, b3, op, "a", "b");
  TORCH_CHECK(a3.is_cuda(), "detops._matmul_tc: operands must be CUDA tensors (the tensor-core path)");
  TORCH_CHECK(a3.scalar_type() == at::kBFloat16 || a3.scalar_type() == at::kHalf,
              "detops._matmul_tc: dtype must be bfloat16 or float16 (the tensor-core path), got ", a3.scalar_type());
  TORCH_CHECK(a3.size(0) == b3.size(0), "detops._matmul_tc: batch sizes differ: a ", a3.sizes(), ", b ", b3.sizes());
  TORCH_CHECK(a3.size(2) == b3.size(1), "detops._matmul_tc: a ", a3.sizes(), " and b ", b3.sizes(),
              " cannot be multiplied (a.shape[2] != b.shape[1])");
  at::Tensor bc = check_bias(bias.has_value() ? *bias : at::Tensor(), a3, b3.size(2), op);
  const int64_t out_shape[3] = {a3.size(0), a3.size(1), b3.size(2)};
  return run_matmul(geometry(a3, b3, false), a3, b3, bc, out_shape, forced_variant);
}
#endif

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
  m.impl("_matmul_tc", &matmul_tc_variant);
}
#endif

}  // namespace detops
