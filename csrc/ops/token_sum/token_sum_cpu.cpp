// token_sum on the CPU: §5's fp32 chain per column (token_sum.h). Columns in parallel, each with its own chain;
// a panel of columns walks the rows in order, so the reads are contiguous.
#include <ATen/Parallel.h>
#include <vector>
#include "token_sum_backends.h"

namespace detops {

void token_sum_cpu(const TokenSumParams& p) {
  constexpr int64_t kPanel = 64;
  at::parallel_for(0, (p.n + kPanel - 1) / kPanel, 1, [&](int64_t p0, int64_t p1) {
    float t[kPanel], acc[kPanel];
    std::vector<NeumaierLane> lanes(kPanel);
    for (int64_t panel = p0; panel < p1; ++panel) {
      const int64_t c0 = panel * kPanel, cols = std::min(kPanel, p.n - c0);
      for (int64_t j = 0; j < cols; ++j) {
        acc[j] = 0.0f;
        lanes[j] = NeumaierLane{};
      }
      for (int64_t r0 = 0; r0 < p.rows; r0 += kMatmulKBlock) {
        const int64_t r1 = std::min(r0 + int64_t(kMatmulKBlock), p.rows);
        for (int64_t j = 0; j < cols; ++j) t[j] = 0.0f;
        for (int64_t r = r0; r < r1; ++r) {
          const float* row = p.a + r * p.a_stride + c0;
          for (int64_t j = 0; j < cols; ++j) t[j] = t[j] + row[j];
        }
        for (int64_t j = 0; j < cols; ++j) {
          if (p.compensated) lanes[j].add(t[j]);
          else acc[j] = acc[j] + t[j];
        }
      }
      for (int64_t j = 0; j < cols; ++j) p.out[c0 + j] = p.compensated ? lanes[j].value() : acc[j];
    }
  });
}

}  // namespace detops
