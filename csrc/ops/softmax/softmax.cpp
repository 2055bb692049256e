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

TORCH_LIBRARY_IMPL(detops, CPU, m) {
  m.impl("softmax", &softmax);
  m.impl("log_softmax", &log_softmax);
}
#ifdef DETOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(detops, CUDA, m) {
  m.impl("softmax", &softmax);
  m.impl("log_softmax", &log_softmax);
}
#endif

}  // namespace detops
