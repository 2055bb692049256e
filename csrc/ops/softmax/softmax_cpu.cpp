// softmax / log_softmax on the CPU: docs/REDUCTION_ORDER.md §2, §4. Rows in parallel, one order per row.
#include <ATen/Parallel.h>
#include <vector>
#include "../../reduce/lanes_cpu.h"
#include "softmax_backends.h"
#include "softmax_row_cpu.h"

namespace detops {

template <typename In, typename Out>
static void softmax_rows(const SoftmaxParams& p) {
  at::parallel_for(0, p.rows, 1, [&](int64_t r0, int64_t r1) {
    // softmax keeps each element's exp(x - M) from the sum pass for the write pass (§4: the same value), so det_exp
    // runs once per element, as on the GPU.
    std::vector<float> kept(p.log ? 0 : size_t(p.n));
    for (int64_t r = r0; r < r1; ++r) {
      const In* x = static_cast<const In*>(p.x) + r * p.x_stride;
      auto xf = [&](int64_t i) { return to_float(x[i]); };
      float m;
      const float s = softmax_row_state_cpu(x, p.n, p.compensated, m, p.log ? nullptr : kept.data());
      const float log_s = p.log ? det_log(s) : 0.0f;
      Out* y = static_cast<Out*>(p.y) + r * p.n;
      for (int64_t i = 0; i < p.n; ++i)
        y[i] = from_float<Out>(softmax_from_step2(p.log ? xf(i) - m : kept[size_t(i)], s, log_s, p.log));
    }
  });
}

void softmax_cpu(const SoftmaxParams& p, at::ScalarType in, at::ScalarType out) {
  dispatch_float(in, "softmax", [&](auto* in_tag) {
    using In = std::remove_pointer_t<decltype(in_tag)>;
    dispatch_float(out, "softmax", [&](auto* out_tag) {
      using Out = std::remove_pointer_t<decltype(out_tag)>;
      softmax_rows<In, Out>(p);
    });
  });
}

// Backward (§10 rule 2): the row sum with lane_reduce_cpu (the CUDA kernel's lanes and tree), then dx.
template <typename A, typename G, typename O>
static void softmax_backward_rows(const SoftmaxBackwardParams& p) {
  at::parallel_for(0, p.rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const A* a = static_cast<const A*>(p.a) + r * p.a_stride;
      const G* g = static_cast<const G*>(p.g) + r * p.g_stride;
      const float s = lane_reduce_cpu<SumLane, float>(
          p.n, [&](int64_t i) { return softmax_grad_term(to_float(a[i]), to_float(g[i]), p.log); }, finish_sum);
      O* dx = static_cast<O*>(p.dx) + r * p.n;
      for (int64_t i = 0; i < p.n; ++i) dx[i] = from_float<O>(softmax_grad(to_float(a[i]), to_float(g[i]), s, p.log));
    }
  });
}

void softmax_backward_cpu(const SoftmaxBackwardParams& p, at::ScalarType a, at::ScalarType g, at::ScalarType out) {
  with_storage(storage_of(g), [&](auto* g_tag) {
    using G = std::remove_pointer_t<decltype(g_tag)>;
    with_t_or_float<G>(a == at::kFloat, out == at::kFloat, [&](auto* a_tag, auto* out_tag) {
      softmax_backward_rows<std::remove_pointer_t<decltype(a_tag)>, G, std::remove_pointer_t<decltype(out_tag)>>(p);
    });
  });
}

}  // namespace detops
