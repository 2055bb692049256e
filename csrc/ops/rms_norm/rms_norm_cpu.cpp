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

// Backward (§10 rule 2): the two row sums with lane_reduce_cpu (the CUDA kernel's lanes and tree), then dx and
// the optional g·x̂.
template <typename In, typename G, typename O>
static void rms_norm_backward_rows(const RmsNormBackwardParams& p) {
  at::parallel_for(0, p.rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const In* x = static_cast<const In*>(p.x) + r * p.x_stride;
      const G* g = static_cast<const G*>(p.g) + r * p.g_stride;
      const In* extra = p.extra ? static_cast<const In*>(p.extra) + r * p.extra_stride : nullptr;
      auto xf = [&](int64_t i) { return to_float(x[i]); };
      auto gw = [&](int64_t i) { return p.w ? to_float(g[i]) * p.w[i] : to_float(g[i]); };
      auto sq = [&](int64_t i) { return xf(i) * xf(i); };
      const float ss = p.compensated ? lane_reduce_cpu<NeumaierLane, float>(p.n, sq, finish_neumaier)
                                     : lane_reduce_cpu<SumLane, float>(p.n, sq, finish_sum);
      const float sgx = lane_reduce_cpu<SumLane, float>(p.n, [&](int64_t i) { return gw(i) * xf(i); }, finish_sum);
      const float rs = rms_norm_scale(ss, p.n, p.eps), c = rms_norm_grad_c(rs, sgx, p.n);
      O* dx = static_cast<O*>(p.dx) + r * p.n;
      for (int64_t i = 0; i < p.n; ++i) {
        float d = rms_norm_grad(xf(i), gw(i), rs, c);
        if (extra) d = d + to_float(extra[i]);
        dx[i] = from_float<O>(d);
      }
      if (p.gxhat) {
        float* gx = p.gxhat + r * p.n;
        for (int64_t i = 0; i < p.n; ++i) gx[i] = to_float(g[i]) * rms_norm_grad_xhat<In>(xf(i), rs, p.cast_first);
      }
    }
  });
}

void rms_norm_backward_cpu(const RmsNormBackwardParams& p, at::ScalarType in, at::ScalarType g, at::ScalarType out) {
  with_storage(storage_of(in), [&](auto* in_tag) {
    using In = std::remove_pointer_t<decltype(in_tag)>;
    with_t_or_float<In>(g == at::kFloat, out == at::kFloat, [&](auto* g_tag, auto* out_tag) {
      rms_norm_backward_rows<In, std::remove_pointer_t<decltype(g_tag)>, std::remove_pointer_t<decltype(out_tag)>>(p);
    });
  });
}

}  // namespace detops
