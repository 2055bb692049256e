// detops::token_sum: validation and dispatch to the backend. The order: docs/REDUCTION_ORDER.md §5 (§10 rule 1).
#include "token_sum_backends.h"

namespace detops {

// Each column's sum over the rows of a 2-D float32 tensor, in §5's fp32 chain (plain or compensated): float32 (N,).
at::Tensor token_sum(const at::Tensor& a, bool compensated) {
  check_device(a, "token_sum", "a");
  TORCH_CHECK(a.dim() == 2, "detops.token_sum: a must be 2-D (tokens, columns), got ", a.dim(), " dims");
  TORCH_CHECK(a.scalar_type() == at::kFloat, "detops.token_sum: a must be float32 (bf16 / fp16 token sums run on "
              "the tensor-core matmul), got ", a.scalar_type());
  at::Tensor out = at::zeros({a.size(1)}, a.options());
  if (a.size(0) == 0 || a.size(1) == 0) return out;
  const at::Tensor ra = a.stride(1) == 1 ? a : a.contiguous();
  TokenSumParams p;
  p.rows = ra.size(0);
  p.n = ra.size(1);
  p.a = ra.data_ptr<float>();
  p.a_stride = ra.stride(0);
  p.out = out.data_ptr<float>();
  p.compensated = compensated;
  p.device = a.is_cuda() ? a.get_device() : -1;
#ifdef DETOPS_WITH_CUDA
  if (a.is_cuda()) token_sum_cuda(p);
  else
#endif
    token_sum_cpu(p);
  return out;
}

TORCH_LIBRARY_IMPL(detops, CPU, m) { m.impl("token_sum", &token_sum); }
#ifdef DETOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(detops, CUDA, m) { m.impl("token_sum", &token_sum); }
#endif

}  // namespace detops
