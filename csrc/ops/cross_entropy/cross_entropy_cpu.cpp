// The cross-entropy row kernels on the CPU: docs/REDUCTION_ORDER.md §10 rule 4 with the CPU softmax's own M and S
// (softmax_row_state_cpu), so each token's values are the CPU softmax's, and CPU == CUDA bitwise. Rows in
// parallel, one order per row.
#include <ATen/Parallel.h>
#include <cmath>
#include "../softmax/softmax_row_cpu.h"
#include "cross_entropy_backends.h"

namespace detops {
namespace {

template <typename T>
void nll_rows(const CrossEntropyParams& p) {
  at::parallel_for(0, p.rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t t = p.target[r];
      const TargetKind kind = target_kind(t, p.ignore_index, p.n);
      if (kind != TargetKind::kScore) {
        p.nll[r] = kind == TargetKind::kIgnored ? 0.0f : NAN;
        continue;
      }
      const T* x = static_cast<const T*>(p.x) + r * p.x_stride;
      float m;
      const float s = softmax_row_state_cpu(x, p.n, p.compensated, m, nullptr);
      p.nll[r] = cross_entropy_nll(to_float(x[t]), m, s);
    }
  });
}

template <typename T>
void backward_rows(const CrossEntropyParams& p) {
  at::parallel_for(0, p.rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* dx = static_cast<T*>(p.dx) + r * p.n;
      const int64_t t = p.target[r];
      const TargetKind kind = target_kind(t, p.ignore_index, p.n);
      if (kind != TargetKind::kScore) {
        const float fill = kind == TargetKind::kIgnored ? 0.0f : NAN;
        for (int64_t i = 0; i < p.n; ++i) dx[i] = from_float<T>(fill);
        continue;
      }
      const T* x = static_cast<const T*>(p.x) + r * p.x_stride;
      float m;
      const float s = softmax_row_state_cpu(x, p.n, p.compensated, m, nullptr);
      const float scale = p.grad[r * p.grad_stride];
      for (int64_t i = 0; i < p.n; ++i) {
        const float prob = softmax_from_step2(softmax_step2(to_float(x[i]), m, false), s, 0.0f, false);
        dx[i] = from_float<T>(cross_entropy_grad(prob, i == t, scale));
      }
    }
  });
}

}  // namespace

void cross_entropy_nll_cpu(const CrossEntropyParams& p) {
  with_storage(p.x_dtype, [&](auto* tag) { nll_rows<std::remove_pointer_t<decltype(tag)>>(p); });
}

void cross_entropy_backward_cpu(const CrossEntropyParams& p) {
  with_storage(p.x_dtype, [&](auto* tag) { backward_rows<std::remove_pointer_t<decltype(tag)>>(p); });
}

}  // namespace detops
