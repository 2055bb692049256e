// detops cross-entropy's row kernels (docs/REDUCTION_ORDER.md §10 rule 4): each token's loss
// -log_softmax(x)[target] and its gradient (softmax(x) - onehot(target)) · scale, with §4's M and S (the softmax's
// own, bit for bit), one pass over the vocabulary per sum instead of a (tokens, V) float32 softmax in memory.
// Parameters shared by the CPU and CUDA backends. Pure C++.
#pragma once
#include <cstdint>
#include "../softmax/softmax.h"  // §4's per-element formulas: one definition for softmax and the loss

namespace detops {

struct CrossEntropyParams {
  int64_t rows = 0, n = 0;          // tokens, classes
  const void* x = nullptr;          // logits (rows, n), unit stride along n, row stride x_stride
  int64_t x_stride = 0;
  Storage x_dtype = Storage::kFloat32;
  const int64_t* target = nullptr;  // (rows,): a class in [0, n), or ignore_index
  int64_t ignore_index = -100;
  bool compensated = false;         // S with Neumaier lanes (§4's compensated mode)
  // forward: each token's loss, float32; +0 on ignored tokens, NaN for a target out of range
  float* nll = nullptr;
  // backward: dx (rows, n) contiguous in x's dtype; the token's factor is grad[r * grad_stride] (grad_stride 0:
  // one value for all tokens; 'mean' has divided it by the supervised count)
  const float* grad = nullptr;
  int64_t grad_stride = 0;
  void* dx = nullptr;
  int device = -1;
};

// What a row's target says: a class to score (kScore), an ignored token (zeros), or a bad target (NaN row).
enum class TargetKind : int { kScore = 0, kIgnored = 1, kOutOfRange = 2 };
DETOPS_HD TargetKind target_kind(int64_t t, int64_t ignore_index, int64_t n) {
  return t == ignore_index ? TargetKind::kIgnored : (t >= 0 && t < n ? TargetKind::kScore : TargetKind::kOutOfRange);
}

// -log_softmax(x)[t] = -((x_t - M) - log S): §4's log_softmax value, negated (exact).
DETOPS_HD float cross_entropy_nll(float x_t, float m, float s) {
  return -softmax_from_step2(softmax_step2(x_t, m, true), s, det_log(s), true);
}

// dx_i from the softmax value p_i = e_i / S: (p_i - [i == t]) · scale, in fp32 before the one rounding.
DETOPS_HD float cross_entropy_grad(float p, bool is_target, float scale) { return (is_target ? p - 1.0f : p) * scale; }

}  // namespace detops
