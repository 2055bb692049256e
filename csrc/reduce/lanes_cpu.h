// Host-side driver of the §2 lane reduction (docs/REDUCTION_ORDER.md): lanes as a plain array, ascending
// within a lane, then tree_reduce. The lane loop has no cross-lane dependency, so the compiler may
// vectorise it without changing any lane's order.
#pragma once
#include <vector>
#include "reduce.h"

namespace detops {

// Reduces f(0), ..., f(n-1) with the lane type Lane (SumLane, NeumaierLane); returns the tree result.
template <typename Lane, typename Out, typename F>
Out lane_reduce_cpu(int64_t n, F f, Out (*finish)(const Lane&)) {
  const int64_t L = lanes(n);
  std::vector<Lane> acc(L);
  for (int64_t base = 0; base < n; base += L) {
    const int64_t m = (n - base < L) ? n - base : L;
    for (int64_t l = 0; l < m; ++l) acc[l].add(f(base + l));
  }
  std::vector<Out> v(L);
  for (int64_t l = 0; l < L; ++l) v[l] = finish(acc[l]);
  return tree_reduce(v.data(), L);
}

inline float finish_sum(const SumLane& a) { return a.value(); }
inline float finish_neumaier(const NeumaierLane& a) { return a.value(); }

}  // namespace detops
