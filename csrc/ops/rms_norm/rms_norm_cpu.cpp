// rms_norm on the CPU: docs/REDUCTION_ORDER.md §2–§3. One row at a time; rows in parallel (a row's bits
// never depend on which thread or chunk it ran in).
#include <ATen/Parallel.h>
#include "../../reduce/lanes_cpu.h"
#include "rms_norm_backends.h"

namespace detops {

template <typename In, typename W, typename Out>
static void rms_norm_rows(const RmsNormParams& p) {
  at::parallel_for(0, p.rows, 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> xs(p.n);
    for (int64_t r = r0; r < r1; ++r) {
      const In* x = static_cast<const In*>(p.x) + r * p.x_stride;
      const In* res = p.residual ? static_cast<const In*>(p.residual) + r * p.res_stride : nullptr;
      for (int64_t i = 0; i < p.n; ++i) xs[i] = rms_norm_input<In>(x, res, i);
      auto sq = [&](int64_t i) { return xs[i] * xs[i]; };
      float ss = p.compensated ? lane_reduce_cpu<NeumaierLane, float>(p.n, sq, finish_neumaier)
                               : lane_reduce_cpu<SumLane, float>(p.n, sq, finish_sum);
      float scale = rms_norm_scale(ss, p.n, p.eps);
      Out* y = static_cast<Out*>(p.y) + r * p.n;
      const W* w = static_cast<const W*>(p.w);
      for (int64_t i = 0; i < p.n; ++i) y[i] = rms_norm_apply<In, W, Out>(xs[i], scale, w, i, p.mode);
      if (p.x_sum) {
        In* xo = static_cast<In*>(p.x_sum) + r * p.n;
        for (int64_t i = 0; i < p.n; ++i) xo[i] = from_float<In>(xs[i]);
      }
    }
  });
}

void rms_norm_cpu(const RmsNormParams& p, at::ScalarType in, at::ScalarType w, at::ScalarType out) {
  dispatch_float(in, "rms_norm", [&](auto* in_tag) {
    using In = std::remove_pointer_t<decltype(in_tag)>;
    dispatch_float(w, "rms_norm", [&](auto* w_tag) {
      using W = std::remove_pointer_t<decltype(w_tag)>;
      dispatch_float(out, "rms_norm", [&](auto* out_tag) {
        using Out = std::remove_pointer_t<decltype(out_tag)>;
        rms_norm_rows<In, W, Out>(p);
      });
    });
  });
}

}  // namespace detops
