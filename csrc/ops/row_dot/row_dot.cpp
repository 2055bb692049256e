// detops::row_dot: validation and dispatch to the backend. The order: docs/REDUCTION_ORDER.md §2 (§10 rule 2).
#include "row_dot_backends.h"

namespace detops {

static Storage row_dot_dtype(const at::Tensor& t, const char* name) {
  check_float_dtype(t, "row_dot", name);
  return storage_of(t.scalar_type());
}

// (rows, n) with unit stride along n; a copy only rearranges memory.
static at::Tensor as_rows(const at::Tensor& t, int64_t n) {
  at::Tensor x = t.reshape({-1, n});
  return x.stride(1) == 1 ? x : x.contiguous();
}

at::Tensor row_dot(const at::Tensor& a, const std::optional<at::Tensor>& b) {
  check_device(a, "row_dot", "a");
  TORCH_CHECK(a.dim() >= 1, "detops.row_dot: a must have at least one dim (the reduced last dim)");
  RowDotParams p;
  p.a_dtype = row_dot_dtype(a, "a");
  if (b.has_value()) {
    p.b_dtype = row_dot_dtype(*b, "b");
    check_same_device(a, *b, "row_dot", "a", "b");
    TORCH_CHECK(a.sizes().equals(b->sizes()), "detops.row_dot: a and b must have the same shape, got ", a.sizes(),
                " and ", b->sizes());
  }
  at::Tensor out = at::empty(a.sizes().slice(0, a.dim() - 1), a.options().dtype(at::kFloat));
  const int64_t n = a.size(-1);
  if (out.numel() == 0) return out;
  if (n == 0) return out.zero_();
  at::Tensor ra = as_rows(a, n), rb = b.has_value() ? as_rows(*b, n) : at::Tensor();
  p.rows = ra.size(0);
  p.n = n;
  p.a = ra.data_ptr();
  p.a_stride = ra.stride(0);
  if (rb.defined()) {
    p.b = rb.data_ptr();
    p.b_stride = rb.stride(0);
  }
  p.out = out.data_ptr<float>();
  p.device = a.is_cuda() ? a.get_device() : -1;
#ifdef DETOPS_WITH_CUDA
  if (a.is_cuda()) row_dot_cuda(p);
  else
#endif
    row_dot_cpu(p);
  return out;
}

TORCH_LIBRARY_IMPL(detops, CPU, m) { m.impl("row_dot", &row_dot); }
#ifdef DETOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(detops, CUDA, m) { m.impl("row_dot", &row_dot); }
#endif

}  // namespace detops
