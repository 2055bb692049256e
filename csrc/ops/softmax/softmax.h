// softmax / log_softmax over the last dim: parameters shared by the CPU and CUDA backends.
// Order: docs/REDUCTION_ORDER.md §2 and §4. Pure C++.
#pragma once
#include <cstdint>
#include "../../reduce/reduce.h"

namespace detops {

struct SoftmaxParams {
  int64_t rows = 0, n = 0;
  const void* x = nullptr;  // (rows, n), last dim contiguous, row stride x_stride
  int64_t x_stride = 0;
  void* y = nullptr;        // (rows, n) contiguous
  bool log = false;
  bool compensated = false;
  int device = -1;          // CUDA: the device index of x and y
};

// §4: one output element from the element's step-2 value v: z = x - M (log_softmax) or e = exp(z) (softmax), and
// the row's S (log_s = det_log(S) precomputed for log_softmax). Kernels that hold the row keep v from step 2.
DETOPS_HD float softmax_from_step2(float v, float s, float log_s, bool log) { return log ? v - log_s : v / s; }
DETOPS_HD float softmax_step2(float x, float m, bool log) { return log ? x - m : det_exp_nonpositive(x - m); }

}  // namespace detops
