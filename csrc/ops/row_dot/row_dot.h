// detops::row_dot: each row's dot product sum_i a_i * b_i (or sum_i a_i without b) in §2's lane order
// (docs/REDUCTION_ORDER.md §2, used by the backwards, §10 rule 1). Parameters shared by the CPU and CUDA
// backends. Pure C++.
#pragma once
#include <cstdint>
#include "../../reduce/reduce.h"

namespace detops {

struct RowDotParams {
  int64_t rows = 0, n = 0;
  const void* a = nullptr;  // (rows, n), unit stride along n, row stride a_stride
  int64_t a_stride = 0;
  Storage a_dtype = Storage::kFloat32;
  const void* b = nullptr;  // like a, or null: the row sum of a
  int64_t b_stride = 0;
  Storage b_dtype = Storage::kFloat32;
  float* out = nullptr;     // (rows,) float32
  int device = -1;          // CUDA: the device index of a, b and out
};

// The term lane i adds: the fp32 product of the widened values (one rounding, never fused with the add), or a_i.
template <typename A, typename B>
DETOPS_HD float row_dot_term(const A* a, const B* b, int64_t i) {
  return b == nullptr ? to_float(a[i]) : to_float(a[i]) * to_float(b[i]);
}

}  // namespace detops
