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

namespace detops {

// Backward (§10 rule 2): dx of (rows, n) rows with the reduced dim last. softmax: a = y (the forward's output),
// dx = y·(g - Σ g·y); log_softmax: a = p (softmax of the input, fp32), dx = g - p·Σ g. The row sum in §2's lane
// order (plain lanes), each product of the widened values rounded to fp32; dx rounded once to its dtype.
struct SoftmaxBackwardParams {
  int64_t rows = 0, n = 0;
  const void* a = nullptr;  // (rows, n), unit stride along n, row stride a_stride
  int64_t a_stride = 0;
  const void* g = nullptr;  // like a, the upstream gradient
  int64_t g_stride = 0;
  void* dx = nullptr;       // (rows, n) contiguous
  bool log = false;
  int device = -1;
};

DETOPS_HD float softmax_grad_term(float a, float g, bool log) { return log ? g : g * a; }
DETOPS_HD float softmax_grad(float a, float g, float s, bool log) { return log ? g - a * s : a * (g - s); }

}  // namespace detops
