// detops::elementwise (CPU only): transcendental elementwise functions evaluated one element at a time, so an
// element's bits depend only on its own value — docs/REDUCTION_ORDER.md §8.
//
// Why: ATen's CPU loops compute the body of a tensor with SIMD approximations (Sleef, width 8 on AVX2, 16 on
// AVX-512) and the remainder of each thread's range with scalar libm. The two disagree in the last bit for some
// inputs (measured on AVX2: 68 of 2000 sigmoid values), so a token's SiLU / GELU / RoPE cos-sin bits depend on
// where the token sits in the tensor (its index modulo the vector width, the thread split) — i.e. on the batch.
// CUDA kernels evaluate every element with the same code and need no replacement.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <cmath>
#include <string>
#include "../../common/checks.h"

namespace detops {
namespace {

enum class Fn { kExp, kSin, kCos, kTanh, kSigmoid, kSilu, kGelu, kGeluTanh };

Fn parse_fn(const std::string& name) {
  if (name == "exp") return Fn::kExp;
  if (name == "sin") return Fn::kSin;
  if (name == "cos") return Fn::kCos;
  if (name == "tanh") return Fn::kTanh;
  if (name == "sigmoid") return Fn::kSigmoid;
  if (name == "silu") return Fn::kSilu;
  if (name == "gelu") return Fn::kGelu;
  if (name == "gelu_tanh") return Fn::kGeluTanh;
  TORCH_CHECK(false, "detops.elementwise: unknown function '", name,
              "' (exp, sin, cos, tanh, sigmoid, silu, gelu, gelu_tanh)");
}

// Acc = float for float/bf16/fp16 (computed in float, rounded once to the storage type), double for double.
// Scalar libm only: nothing here is vectorised (no -ffast-math, so GCC has no SIMD variants of these calls),
// and the arithmetic around the calls is IEEE with no FMA contraction (-ffp-contract=off), so every element
// runs the same instructions wherever it sits.
template <typename Acc>
Acc apply(Fn fn, Acc x) {
  switch (fn) {
    case Fn::kExp: return std::exp(x);
    case Fn::kSin: return std::sin(x);
    case Fn::kCos: return std::cos(x);
    case Fn::kTanh: return std::tanh(x);
    case Fn::kSigmoid: return Acc(1) / (Acc(1) + std::exp(-x));
    case Fn::kSilu: return x / (Acc(1) + std::exp(-x));
    case Fn::kGelu: return Acc(0.5) * x * (Acc(1) + std::erf(x * Acc(M_SQRT1_2)));
    case Fn::kGeluTanh: {
      const Acc beta = Acc(M_SQRT2 * M_2_SQRTPI * 0.5);  // sqrt(2 / pi)
      const Acc inner = beta * (x + Acc(0.044715) * x * x * x);
      return Acc(0.5) * x * (Acc(1) + std::tanh(inner));
    }
  }
  return x;
}

template <typename T, typename Acc>
void run(Fn fn, const T* x, T* y, int64_t n) {
  // Any split of the range is fine: no element's value depends on which thread computes it.
  at::parallel_for(0, n, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = static_cast<T>(apply<Acc>(fn, static_cast<Acc>(x[i])));
  });
}

at::Tensor elementwise(const at::Tensor& input, c10::string_view fn_name) {
  const Fn fn = parse_fn(std::string(fn_name));
  TORCH_CHECK(input.device().is_cpu(), "detops.elementwise: input must be a CPU tensor, got ", input.device(),
              " (CUDA elementwise kernels are already position-independent; REDUCTION_ORDER.md §8)");
  const at::ScalarType t = input.scalar_type();
  TORCH_CHECK(is_float_dtype(t) || t == at::kDouble, "detops.elementwise: input must be float32, bfloat16, "
              "float16 or float64, got ", t);
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty_like(x);
  const int64_t n = x.numel();
  switch (t) {
    case at::kFloat: run<float, float>(fn, x.const_data_ptr<float>(), y.mutable_data_ptr<float>(), n); break;
    case at::kDouble: run<double, double>(fn, x.const_data_ptr<double>(), y.mutable_data_ptr<double>(), n); break;
    case at::kBFloat16:
      run<at::BFloat16, float>(fn, x.const_data_ptr<at::BFloat16>(), y.mutable_data_ptr<at::BFloat16>(), n);
      break;
    default: run<at::Half, float>(fn, x.const_data_ptr<at::Half>(), y.mutable_data_ptr<at::Half>(), n); break;
  }
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(detops, CPU, m) { m.impl("elementwise", &elementwise); }

}  // namespace detops
