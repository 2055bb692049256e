// detops::cross_entropy_nll / cross_entropy_backward: validation and dispatch to the backend. The order:
// docs/REDUCTION_ORDER.md §10 rule 4 (detops/ops/loss.py sums the tokens' losses and calls these).
#include "cross_entropy_backends.h"

namespace detops {

// logits (..., V) as (rows, V) with unit stride along V, and the targets (rows,) as int64; copies only rearrange.
static CrossEntropyParams rows_of(const at::Tensor& x, const at::Tensor& target, int64_t ignore_index,
                                  bool compensated, const char* op, at::Tensor& rx, at::Tensor& rt) {
  check_device(x, op, "input");
  check_float_dtype(x, op, "input");
  check_same_device(x, target, op, "input", "target");
  TORCH_CHECK(x.dim() >= 1, "detops.", op, ": input must have a class dim (the last)");
  TORCH_CHECK(target.scalar_type() == at::kLong, "detops.", op, ": target must hold int64 class indices, got ",
              target.scalar_type());
  TORCH_CHECK(target.sizes().equals(x.sizes().slice(0, x.dim() - 1)), "detops.", op,
              ": target must have the shape of input without its last (class) dim: input ", x.sizes(), ", target ",
              target.sizes());
  const int64_t n = x.size(-1);
  rx = x.reshape({-1, n});
  if (rx.stride(1) != 1) rx = rx.contiguous();
  rt = target.reshape({-1}).contiguous();
  CrossEntropyParams p;
  p.rows = rx.size(0);
  p.n = n;
  p.x = rx.data_ptr();
  p.x_stride = rx.stride(0);
  p.x_dtype = storage_of(x.scalar_type());
  p.target = rt.data_ptr<int64_t>();
  p.ignore_index = ignore_index;
  p.compensated = compensated;
  p.device = x.is_cuda() ? x.get_device() : -1;
  return p;
}

// Each token's loss -log_softmax(input)[target] in float32 (+0 where target == ignore_index, NaN where it is out of
// range), shaped like target.
at::Tensor cross_entropy_nll_op(const at::Tensor& input, const at::Tensor& target, int64_t ignore_index,
                             bool compensated) {
  at::Tensor rx, rt;
  CrossEntropyParams p = rows_of(input, target, ignore_index, compensated, "cross_entropy_nll", rx, rt);
  at::Tensor nll = at::empty(target.sizes(), input.options().dtype(at::kFloat));
  if (nll.numel() == 0) return nll;
  TORCH_CHECK(p.n > 0, "detops.cross_entropy_nll: input has no classes (its last dim is 0)");
  p.nll = nll.data_ptr<float>();
#ifdef DETOPS_WITH_CUDA
  if (input.is_cuda()) cross_entropy_nll_cuda(p);
  else
#endif
    cross_entropy_nll_cpu(p);
  return nll;
}

// dinput = (softmax(input) - onehot(target)) · grad_t, in input's dtype; zeros on ignored tokens. grad: float32, one
// value per token (target's shape) or one for all (a single element).
at::Tensor cross_entropy_backward_op(const at::Tensor& input, const at::Tensor& target, const at::Tensor& grad,
                                     int64_t ignore_index, bool compensated) {
  at::Tensor rx, rt;
  CrossEntropyParams p = rows_of(input, target, ignore_index, compensated, "cross_entropy_backward", rx, rt);
  check_same_device(input, grad, "cross_entropy_backward", "input", "grad");
  TORCH_CHECK(grad.scalar_type() == at::kFloat, "detops.cross_entropy_backward: grad must be float32, got ",
              grad.scalar_type());
  TORCH_CHECK(grad.numel() == 1 || grad.sizes().equals(target.sizes()),
              "detops.cross_entropy_backward: grad must have one element or the target's shape ", target.sizes(),
              ", got ", grad.sizes());
  at::Tensor dx = at::empty(rx.sizes(), input.options().memory_format(at::MemoryFormat::Contiguous));
  if (dx.numel() == 0) return dx.view(input.sizes());
  at::Tensor g = grad.reshape({-1}).contiguous();
  p.grad = g.data_ptr<float>();
  p.grad_stride = g.numel() == 1 ? 0 : 1;
  p.dx = dx.data_ptr();
#ifdef DETOPS_WITH_CUDA
  if (input.is_cuda()) cross_entropy_backward_cuda(p);
  else
#endif
    cross_entropy_backward_cpu(p);
  return dx.view(input.sizes());
}

TORCH_LIBRARY_IMPL(detops, CPU, m) {
  m.impl("cross_entropy_nll", &cross_entropy_nll_op);
  m.impl("cross_entropy_backward", &cross_entropy_backward_op);
}
#ifdef DETOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(detops, CUDA, m) {
  m.impl("cross_entropy_nll", &cross_entropy_nll_op);
  m.impl("cross_entropy_backward", &cross_entropy_backward_op);
}
#endif

}  // namespace detops
