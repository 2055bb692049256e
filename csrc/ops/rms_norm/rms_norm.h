// rms_norm: parameters and the per-element math shared by the CPU and CUDA backends.
// Order: docs/REDUCTION_ORDER.md §2 (sum of squares over lanes) and §3 (scale and weight). Pure C++.
#pragma once
#include <cstdint>
#include "../../reduce/reduce.h"

namespace detops {

enum class NormWeightMode : int { Plain = 0, CastFirst = 1, Offset = 2 };

struct RmsNormParams {
  int64_t rows = 0, n = 0;           // x viewed as (rows, n), last dim contiguous
  const void* x = nullptr;           // (rows, n), row stride x_stride
  int64_t x_stride = 0;
  const void* residual = nullptr;    // optional (rows, n), row stride res_stride
  int64_t res_stride = 0;
  const void* w = nullptr;           // optional (n,)
  void* y = nullptr;                 // (rows, n) contiguous
  void* x_sum = nullptr;             // (rows, n) contiguous: round_in(x + residual), when residual given
  float eps = 0.0f;
  NormWeightMode mode = NormWeightMode::Plain;
  bool compensated = false;
  int device = -1;                   // CUDA: the device index of the tensors
};

// The input element as the norm sees it: x, or round_to_input(x + residual) (§3 fused residual).
template <typename In>
DETOPS_HD float rms_norm_input(const In* x, const In* res, int64_t i) {
  if (res == nullptr) return to_float(x[i]);
  return to_float(from_float<In>(to_float(x[i]) + to_float(res[i])));
}

// §3: r = 1 / sqrt(ss / n + eps).
DETOPS_HD float rms_norm_scale(float ss, int64_t n, float eps) {
  return det_rsqrt(ss / float(n) + eps);
}

// §3: one output element.
template <typename In, typename W, typename Out>
DETOPS_HD Out rms_norm_apply(float x, float r, const W* w, int64_t i, NormWeightMode mode) {
  float h = x * r;
  if (w == nullptr) return from_float<Out>(h);
  float wf = to_float(w[i]);
  switch (mode) {
    case NormWeightMode::CastFirst: return from_float<Out>(to_float(from_float<In>(h)) * wf);
    case NormWeightMode::Offset: return from_float<Out>(h * (1.0f + wf));
    default: return from_float<Out>(h * wf);
  }
}

}  // namespace detops
