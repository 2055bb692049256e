// §4's row state on the CPU (docs/REDUCTION_ORDER.md §4): M = the row maximum (ascending), then S = the §2 lane sum
// (plain or Neumaier) of exp(x - M) through lane_reduce_cpu (the CUDA kernels' lanes and tree). One definition for
// every CPU kernel that needs a softmax's M and S: softmax / log_softmax and the cross-entropy's row kernels.
#pragma once
#include "../../reduce/lanes_cpu.h"
#include "softmax.h"

namespace detops {

// Returns S and sets m for the n elements of x; `kept` (null or n floats) receives each exp(x - M) for a write pass
// that reuses them (§4: the same values).
template <typename T>
float softmax_row_state_cpu(const T* x, int64_t n, bool compensated, float& m, float* kept) {
  m = -kInf;
  for (int64_t i = 0; i < n; ++i) m = det_max(m, to_float(x[i]));
  auto term = [&](int64_t i) {
    const float e = softmax_step2(to_float(x[i]), m, false);
    if (kept != nullptr) kept[i] = e;
    return e;
  };
  return compensated ? lane_reduce_cpu<NeumaierLane, float>(n, term, finish_neumaier)
                     : lane_reduce_cpu<SumLane, float>(n, term, finish_sum);
}

}  // namespace detops
