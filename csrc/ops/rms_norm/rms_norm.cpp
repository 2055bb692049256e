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

// The backward's kernel (§10 rule 2) on (rows, n) x and grad: {dx in x's dtype, g·x̂ in fp32 (empty unless asked)}.
// weight: w' (w, 1 + w) in fp32 or none; extra: added to dx before its rounding (add_rms_norm's x_sum gradient).
std::tuple<at::Tensor, at::Tensor> rms_norm_backward(const at::Tensor& x_in, const at::Tensor& grad_in,
                                                     const std::optional<at::Tensor>& weight,
                                                     const std::optional<at::Tensor>& extra_in, double eps,
                                                     bool cast_first, bool compensated, bool want_gxhat) {
  const char* op = "rms_norm (backward)";
  check_float_dtype(x_in, op, "x");
  check_float_dtype(grad_in, op, "grad");
  check_device(x_in, op, "x");
  check_same_device(x_in, grad_in, op, "x", "grad");
  TORCH_CHECK(x_in.dim() == 2 && grad_in.sizes().equals(x_in.sizes()), "detops.", op,
              ": x and grad must be (rows, n) of one shape, got ", x_in.sizes(), " and ", grad_in.sizes());
  const int64_t rows = x_in.size(0), n = x_in.size(1);
  const at::ScalarType in_t = x_in.scalar_type();
  at::Tensor w;
  if (weight.has_value() && weight->defined()) {
    w = *weight;
    TORCH_CHECK(w.scalar_type() == at::kFloat && w.dim() == 1 && w.size(0) == n, "detops.", op,
                ": the effective weight must be float32 of shape (", std::to_string(n), "), got ", w.scalar_type(),
                " ", w.sizes());
    check_same_device(x_in, w, op, "x", "weight");
    w = w.contiguous();
  }
  at::Tensor extra;
  if (extra_in.has_value() && extra_in->defined()) {
    extra = *extra_in;
    check_float_dtype(extra, op, "extra");
    check_same_device(x_in, extra, op, "x", "extra");
    TORCH_CHECK(extra.sizes().equals(x_in.sizes()), "detops.", op, ": extra must have x's shape");
  }
  // Widening is exact, so these copies change no value: the kernels take g in x's dtype or fp32, and an extra of
  // another dtype is added after the kernel (the same fp32 addition, then the one rounding).
  auto unit_stride = [](const at::Tensor& t) { return t.stride(1) == 1 ? t : t.contiguous(); };
  at::Tensor x = unit_stride(x_in);
  at::Tensor g = unit_stride(grad_in.scalar_type() == in_t ? grad_in : grad_in.to(at::kFloat));
  const bool extra_fused = extra.defined() && extra.scalar_type() == in_t;
  if (extra_fused) extra = unit_stride(extra);
  const at::ScalarType out_t = extra.defined() && !extra_fused ? at::kFloat : in_t;
  at::Tensor dx = at::empty({rows, n}, x.options().dtype(out_t));
  at::Tensor gxhat = at::empty({want_gxhat ? rows : 0, want_gxhat ? n : 0}, x.options().dtype(at::kFloat));
  if (rows > 0 && n > 0) {
    RmsNormBackwardParams p;
    p.rows = rows;
    p.n = n;
    p.x = x.data_ptr();
    p.x_stride = x.stride(0);
    p.g = g.data_ptr();
    p.g_stride = g.stride(0);
    p.w = w.defined() ? w.data_ptr<float>() : nullptr;
    if (extra_fused) { p.extra = extra.data_ptr(); p.extra_stride = extra.stride(0); }
    p.dx = dx.data_ptr();
    p.gxhat = want_gxhat ? gxhat.data_ptr<float>() : nullptr;
    p.eps = static_cast<float>(eps);
    p.cast_first = cast_first;
    p.compensated = compensated;
    p.device = x.is_cuda() ? x.get_device() : -1;
#ifdef DETOPS_WITH_CUDA
    if (x.is_cuda()) rms_norm_backward_cuda(p, in_t, g.scalar_type(), out_t);
    else
#endif
      rms_norm_backward_cpu(p, in_t, g.scalar_type(), out_t);
  }
  if (extra.defined() && !extra_fused) dx = (dx + extra.to(at::kFloat)).to(in_t);
  return {dx, gxhat};
}

TORCH_LIBRARY_IMPL(detops, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("add_rms_norm", &add_rms_norm);
  m.impl("rms_norm_backward", &rms_norm_backward);
}
#ifdef DETOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(detops, CUDA, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("add_rms_norm", &add_rms_norm);
  m.impl("rms_norm_backward", &rms_norm_backward);
}
#endif

}  // namespace detops
