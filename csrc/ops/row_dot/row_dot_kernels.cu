// row_dot on CUDA: docs/REDUCTION_ORDER.md §2 through row_pass (csrc/reduce/row_pass_cuda.cuh) with the CPU kernel's
// terms (the fp32 product of the widened values), so CPU == CUDA bitwise. Plain CUDA only: the torch glue is
// row_dot_cuda.cpp.
#include <cuda_runtime.h>
#include "../../reduce/row_pass_cuda.cuh"
#include "row_dot_launch.h"

namespace detops {
namespace {

template <typename A, typename B>
struct RowDotBody {
  const A* a;
  const B* b;  // null: the sum of a
  bool vec_a, vec_b;
  __device__ __forceinline__ void terms(int64_t i, int64_t count, float (&t)[1][kLaneVector]) {
    A va[kLaneVector];
    load8(a + i, count, vec_a, va);
    if (b == nullptr) {
#pragma unroll
      for (int j = 0; j < kLaneVector; ++j) t[0][j] = to_float(va[j]);
      return;
    }
    B vb[kLaneVector];
    load8(b + i, count, vec_b, vb);
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j) t[0][j] = to_float(va[j]) * to_float(vb[j]);
  }
  __device__ __forceinline__ void write(int64_t, int64_t, const RowSums<1>&) {}
};

template <typename A, typename B>
__global__ void __launch_bounds__(kMaxLaneThreads) row_dot_kernel(RowDotParams p, bool vec_a, bool vec_b) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;  // invalid threads still reach the block barrier in row_pass
  const int64_t r = valid ? row : 0;
  RowDotBody<A, B> body{static_cast<const A*>(p.a) + r * p.a_stride,
                        p.b == nullptr ? nullptr : static_cast<const B*>(p.b) + r * p.b_stride, vec_a, vec_b};
  const RowSums<1> s = row_pass<1, SumLane, SumLane, false>(p.n, valid, body);
  if (valid && threadIdx.x == 0) p.out[row] = s.v[0];
}

template <typename A, typename B>
int launch_typed(const RowDotParams& p, void* stream) {
  const RowGrid g = row_grid(p.rows, p.n);
  if (!g.ok) return int(cudaErrorInvalidConfiguration);
  const bool vec_a = vector_aligned(p.a, p.a_stride, sizeof(A));
  const bool vec_b = p.b != nullptr && vector_aligned(p.b, p.b_stride, sizeof(B));
  row_dot_kernel<A, B><<<g.grid, g.block, 0, static_cast<cudaStream_t>(stream)>>>(p, vec_a, vec_b);
  return int(cudaGetLastError());
}

}  // namespace

int launch_row_dot(const RowDotParams& p, void* stream) {
  int err = 0;
  with_storage(p.a_dtype, [&](auto* a_tag) {
    // without b, B is float (never read)
    with_storage(p.b == nullptr ? Storage::kFloat32 : p.b_dtype, [&](auto* b_tag) {
      err = launch_typed<std::remove_pointer_t<decltype(a_tag)>, std::remove_pointer_t<decltype(b_tag)>>(p, stream);
    });
  });
  return err;
}

}  // namespace detops
