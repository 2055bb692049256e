// row_dot on the CPU: docs/REDUCTION_ORDER.md §2 through lane_reduce_cpu (the same lanes and tree as the CUDA
// kernel, so CPU == CUDA bitwise). Rows in parallel, one order per row.
#include <ATen/Parallel.h>
#include "../../reduce/lanes_cpu.h"
#include "row_dot_backends.h"

namespace detops {

template <typename A, typename B>
static void row_dot_rows(const RowDotParams& p) {
  at::parallel_for(0, p.rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const A* a = static_cast<const A*>(p.a) + r * p.a_stride;
      const B* b = p.b == nullptr ? nullptr : static_cast<const B*>(p.b) + r * p.b_stride;
      p.out[r] = lane_reduce_cpu<SumLane, float>(p.n, [&](int64_t i) { return row_dot_term(a, b, i); }, finish_sum);
    }
  });
}

template <typename Fn>
static void dispatch_row_dot(Storage t, Fn&& fn) {
  switch (t) {
    case Storage::kFloat32: fn(static_cast<float*>(nullptr)); break;
    case Storage::kBFloat16: fn(static_cast<bf16_t*>(nullptr)); break;
    case Storage::kFloat16: fn(static_cast<fp16_t*>(nullptr)); break;
  }
}

void row_dot_cpu(const RowDotParams& p) {
  dispatch_row_dot(p.a_dtype, [&](auto* a_tag) {
    using A = std::remove_pointer_t<decltype(a_tag)>;
    dispatch_row_dot(p.b_dtype, [&](auto* b_tag) {
      using B = std::remove_pointer_t<decltype(b_tag)>;
      row_dot_rows<A, B>(p);
    });
  });
}

}  // namespace detops
