// detops::softmax and detops::log_softmax: validation, moving `dim` last, dispatch to the backend.
#include "softmax_backends.h"

namespace detops {

static at::Tensor softmax_impl(const at::Tensor& input, int64_t dim, std::optional<at::ScalarType> dtype,
                               bool compensated, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_float_dtype(input, op, "input");
  check_device(input, op, "input");
  at::ScalarType out_t = dtype.has_value() ? *dtype : input.scalar_type();
  TORCH_CHECK(is_float_dtype(out_t), "detops.", op, ": dtype must be float32, bfloat16 or float16, got ", out_t);
  dim = c10::maybe_wrap_dim(dim, input.dim());  // a 0-dim input accepts dim 0 and -1, as torch
  if (input.dim() == 0) return softmax_impl(input.reshape({1}), 0, dtype, compensated, log).reshape({});
  // Nothing to compute; also keeps reshape({-1, n}) below away from an ambiguous -1 when n == 0.
  if (input.numel() == 0) return at::empty(input.sizes(), input.options().dtype(out_t));
  // (rows, n) with the reduced dim last and contiguous; a copy only rearranges memory.
  at::Tensor moved = input.movedim(dim, -1);
  const int64_t n = moved.size(-1);
  at::Tensor x = moved.reshape({-1, n});
  if (x.stride(1) != 1) x = x.contiguous();
  at::Tensor y = at::empty(x.sizes(), input.options().dtype(out_t));
  SoftmaxParams p;
  p.rows = x.size(0);
  p.n = n;
  p.x = x.data_ptr();
  p.x_stride = x.stride(0);
  p.y = y.data_ptr();
  p.log = log;
  p.compensated = compensated;
  p.device = input.is_cuda() ? input.get_device() : -1;
#ifdef DETOPS_WITH_CUDA
  if (input.is_cuda()) softmax_cuda(p, input.scalar_type(), out_t);
  else
#endif
    softmax_cpu(p, input.scalar_type(), out_t);
  return y.reshape(moved.sizes()).movedim(-1, dim).contiguous();
}

at::Tensor softmax(const at::Tensor& input, int64_t dim, std::optional<at::ScalarType> dtype, bool compensated) {
  return softmax_impl(input, dim, dtype, compensated, false);
}
at::Tensor log_softmax(const at::Tensor& input, int64_t dim, std::optional<at::ScalarType> dtype, bool compensated) {
  return softmax_impl(input, dim, dtype, compensated, true);
}

// The backward's kernel (§10 rule 2) over the last dim: a = y (softmax) or p = softmax(x) (log_softmax), grad the
// upstream gradient; dx in `dtype`.
at::Tensor softmax_backward(const at::Tensor& a_in, const at::Tensor& grad_in, bool log, at::ScalarType dtype) {
  const char* op = log ? "log_softmax (backward)" : "softmax (backward)";
  check_float_dtype(a_in, op, "a");
  check_float_dtype(grad_in, op, "grad");
  check_device(a_in, op, "a");
  check_same_device(a_in, grad_in, op, "a", "grad");
  TORCH_CHECK(is_float_dtype(dtype), "detops.", op, ": dtype must be float32, bfloat16 or float16, got ", dtype);
  TORCH_CHECK(grad_in.sizes().equals(a_in.sizes()), "detops.", op, ": a and grad must have one shape, got ",
              a_in.sizes(), " and ", grad_in.sizes());
  if (a_in.dim() == 0) return softmax_backward(a_in.reshape({1}), grad_in.reshape({1}), log, dtype).reshape({});
  const int64_t n = a_in.size(-1);
  const at::ScalarType g_t = grad_in.scalar_type();
  // The kernels take a and dx in grad's dtype or fp32: widening is exact, and an fp32 dx rounded to `dtype`
  // afterwards is the same single rounding.
  auto rows_of = [n](const at::Tensor& t) {
    at::Tensor r = t.reshape({-1, n});
    return r.stride(1) == 1 ? r : r.contiguous();
  };
  at::Tensor a = rows_of(a_in.scalar_type() == g_t ? a_in : a_in.to(at::kFloat));
  at::Tensor g = rows_of(grad_in);
  const at::ScalarType out_t = dtype == g_t ? g_t : at::kFloat;
  at::Tensor dx = at::empty(a_in.sizes(), a_in.options().dtype(out_t));
  if (dx.numel() > 0) {
    SoftmaxBackwardParams p;
    p.rows = a.size(0);
    p.n = n;
    p.a = a.data_ptr();
    p.a_stride = a.stride(0);
    p.g = g.data_ptr();
    p.g_stride = g.stride(0);
    p.dx = dx.data_ptr();
    p.log = log;
    p.device = a.is_cuda() ? a.get_device() : -1;
#ifdef DETOPS_WITH_CUDA
    if (a.is_cuda()) softmax_backward_cuda(p, a.scalar_type(), g_t, out_t);
    else
#endif
      softmax_backward_cpu(p, a.scalar_type(), g_t, out_t);
  }
  return out_t == dtype ? dx : dx.to(dtype);
}

TORCH_LIBRARY_IMPL(detops, CPU, m) {
  m.impl("softmax", &softmax);
  m.impl("log_softmax", &log_softmax);
  m.impl("softmax_backward", &softmax_backward);
}
#ifdef DETOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(detops, CUDA, m) {
  m.impl("softmax", &softmax);
  m.impl("log_softmax", &log_softmax);
  m.impl("softmax_backward", &softmax_backward);
}
#endif

}  // namespace detops
