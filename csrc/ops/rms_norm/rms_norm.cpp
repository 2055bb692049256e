// detops::rms_norm and detops::add_rms_norm: validation, layout, and dispatch to the CPU / CUDA backend.
#include "rms_norm_backends.h"

namespace detops {

static NormWeightMode parse_mode(c10::string_view mode) {
  if (mode == "plain") return NormWeightMode::Plain;
  if (mode == "cast_first") return NormWeightMode::CastFirst;
  if (mode == "offset") return NormWeightMode::Offset;
  TORCH_CHECK(false, "detops.rms_norm: weight_mode must be 'plain', 'cast_first' or 'offset', got '",
              std::string(mode), "'");
}

// Returns {y, x_sum} (x_sum undefined when residual is not given).
static std::tuple<at::Tensor, at::Tensor> rms_norm_impl(const at::Tensor& input, at::IntArrayRef normalized_shape,
                                                        const std::optional<at::Tensor>& weight, double eps,
                                                        c10::string_view weight_mode,
                                                        const std::optional<at::Tensor>& residual, bool compensated) {
  const char* op = "rms_norm";
  check_float_dtype(input, op, "input");
  check_device(input, op, "input");
  const int64_t nd = static_cast<int64_t>(normalized_shape.size());
  TORCH_CHECK(nd >= 1 && nd <= input.dim(), "detops.rms_norm: normalized_shape ", normalized_shape,
              " does not fit input of shape ", input.sizes());
  TORCH_CHECK(input.sizes().slice(input.dim() - nd).equals(normalized_shape), "detops.rms_norm: input shape ",
              input.sizes(), " does not end with normalized_shape ", normalized_shape);
  int64_t n = 1;
  for (auto s : normalized_shape) n *= s;
  NormWeightMode mode = parse_mode(weight_mode);

  at::Tensor w;
  if (weight.has_value() && weight->defined()) {
    w = *weight;
    check_float_dtype(w, op, "weight");
    check_same_device(input, w, op, "input", "weight");
    TORCH_CHECK(w.sizes().equals(normalized_shape), "detops.rms_norm: weight shape ", w.sizes(),
                " must equal normalized_shape ", normalized_shape);
    w = w.contiguous();
  }
  TORCH_CHECK(w.defined() || mode == NormWeightMode::Plain,
              "detops.rms_norm: weight_mode '", std::string(weight_mode), "' needs a weight");

  const bool has_res = residual.has_value() && residual->defined();
  if (has_res) {
    TORCH_CHECK(residual->sizes().equals(input.sizes()), "detops.rms_norm: residual shape ",
                residual->sizes(), " must equal input shape ", input.sizes());
    TORCH_CHECK(residual->scalar_type() == input.scalar_type(), "detops.rms_norm: residual dtype ",
                residual->scalar_type(), " must equal input dtype ", input.scalar_type());
    check_same_device(input, *residual, op, "input", "residual");
  }

  at::ScalarType out_t = input.scalar_type();
  if (mode == NormWeightMode::CastFirst) out_t = at::promote_types(input.scalar_type(), w.scalar_type());
  at::Tensor y = at::empty(input.sizes(), input.options().dtype(out_t));
  at::Tensor x_sum;
  if (has_res) x_sum = at::empty(input.sizes(), input.options());
  // No element (no row, or a width-0 normalized shape, as torch's F.rms_norm): empty outputs. Also keeps
  // reshape({-1, n}) below away from an ambiguous -1 when n == 0.
  if (input.numel() == 0) return {y, x_sum};

  // (rows, n) view with a contiguous last dim; a copy only rearranges memory, it never changes values.
  at::Tensor x = input.reshape({-1, n});
  if (x.stride(1) != 1) x = x.contiguous();
  at::Tensor res;
  if (has_res) {
    res = residual->reshape({-1, n});
    if (res.stride(1) != 1) res = res.contiguous();
  }

  RmsNormParams p;
  p.rows = x.size(0);
  p.n = n;
  p.x = x.data_ptr();
  p.x_stride = x.stride(0);
  if (res.defined()) { p.residual = res.data_ptr(); p.res_stride = res.stride(0); p.x_sum = x_sum.data_ptr(); }
  p.w = w.defined() ? w.data_ptr() : nullptr;
  p.y = y.data_ptr();
  p.eps = static_cast<float>(eps);
  p.mode = mode;
  p.compensated = compensated;
  p.device = input.is_cuda() ? input.get_device() : -1;
  at::ScalarType w_t = w.defined() ? w.scalar_type() : input.scalar_type();
#ifdef DETOPS_WITH_CUDA
  if (input.is_cuda()) { rms_norm_cuda(p, input.scalar_type(), w_t, out_t); return {y, x_sum}; }
#endif
  rms_norm_cpu(p, input.scalar_type(), w_t, out_t);
  return {y, x_sum};
}

at::Tensor rms_norm(const at::Tensor& input, at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
                    double eps, c10::string_view weight_mode, bool compensated,
                    const std::optional<at::Tensor>& documents) {
  check_documents(documents, input.sizes().slice(0, input.dim() - std::min<int64_t>(normalized_shape.size(), input.dim())),
                  input, "rms_norm");
  return std::get<0>(rms_norm_impl(input, normalized_shape, weight, eps, weight_mode, std::nullopt, compensated));
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& input, const at::Tensor& residual,
                                                at::IntArrayRef normalized_shape,
                                                const std::optional<at::Tensor>& weight, double eps,
                                                c10::string_view weight_mode, bool compensated,
                                                const std::optional<at::Tensor>& documents) {
  check_documents(documents, input.sizes().slice(0, input.dim() - std::min<int64_t>(normalized_shape.size(), input.dim())),
                  input, "add_rms_norm");
  return rms_norm_impl(input, normalized_shape, weight, eps, weight_mode, residual, compensated);
}

TORCH_LIBRARY_IMPL(detops, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("add_rms_norm", &add_rms_norm);
}
#ifdef DETOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(detops, CUDA, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("add_rms_norm", &add_rms_norm);
}
#endif

}  // namespace detops
