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

namespace detops {

// Backward (§10 rule 2) of rms_norm over (rows, n) rows: with gw = g·w' (w' = w, 1 + w, or 1 without a weight,
// given as fp32), ss = Σ x·x in the forward's lanes (so r = rms_norm_scale(ss) is the forward's r) and
// sgx = Σ gw·x (plain lanes): dx = r·gw - x·((r·r·r)·(sgx / n)) (+ extra), rounded once to dx's dtype; and
// optionally gxhat = g·x̂ in fp32 (x̂ = x·r, rounded to x's dtype first for cast_first), the terms of dweight's
// token sum.
struct RmsNormBackwardParams {
  int64_t rows = 0, n = 0;
  const void* x = nullptr;      // (rows, n), unit stride along n, row stride x_stride
  int64_t x_stride = 0;
  const void* g = nullptr;      // like x, the upstream gradient
  int64_t g_stride = 0;
  const float* w = nullptr;     // (n,) w' in fp32, or null
  const void* extra = nullptr;  // optional (rows, n) in x's dtype, added to dx before its rounding
  int64_t extra_stride = 0;
  void* dx = nullptr;           // (rows, n) contiguous
  float* gxhat = nullptr;       // optional (rows, n) contiguous fp32
  float eps = 0.0f;
  bool cast_first = false;
  bool compensated = false;     // the forward's lanes for ss (Neumaier)
  int device = -1;
};

DETOPS_HD float rms_norm_grad_c(float r, float sgx, int64_t n) { return ((r * r) * r) * (sgx / float(n)); }
DETOPS_HD float rms_norm_grad(float x, float gw, float r, float c) { return r * gw - x * c; }
template <typename In>
DETOPS_HD float rms_norm_grad_xhat(float x, float r, bool cast_first) {
  const float h = x * r;
  return cast_first ? to_float(from_float<In>(h)) : h;
}

}  // namespace detops
