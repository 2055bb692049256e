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

void row_dot_cpu(const RowDotParams& p) {
  with_storage(p.a_dtype, [&](auto* a_tag) {
    with_storage(p.b == nullptr ? Storage::kFloat32 : p.b_dtype, [&](auto* b_tag) {
      row_dot_rows<std::remove_pointer_t<decltype(a_tag)>, std::remove_pointer_t<decltype(b_tag)>>(p);
    });
  });
}

}  // namespace detops
