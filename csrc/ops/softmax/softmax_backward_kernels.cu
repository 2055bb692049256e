// softmax / log_softmax backward on CUDA: docs/REDUCTION_ORDER.md §10 rule 2 through row_pass
// (csrc/reduce/row_pass_cuda.cuh) with the CPU kernel's arithmetic (softmax_grad_term / softmax_grad, softmax.h),
// so CPU == CUDA bitwise: one row sum in §2's lanes, then dx, one read of a and g per pass. Plain CUDA only: the
// torch glue is softmax_cuda.cpp.
#include <cuda_runtime.h>
#include "../../reduce/row_pass_cuda.cuh"
#include "softmax_launch.h"

namespace detops {
namespace {

template <typename A, typename G, typename O>
struct SoftmaxBackwardBody {
  const A* a;
  const G* g;
  O* dx;
  bool vec_a, vec_g, vec_dx, log;
  __device__ __forceinline__ void load(int64_t i, int64_t count, bool need_a, float (&af)[kLaneVector],
                                       float (&gf)[kLaneVector]) {
    G vg[kLaneVector];
    load8(g + i, count, vec_g, vg);
    A va[kLaneVector];
    if (need_a) load8(a + i, count, vec_a, va);
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j) {
      gf[j] = to_float(vg[j]);
      af[j] = need_a ? to_float(va[j]) : 0.0f;
    }
  }
  __device__ __forceinline__ void terms(int64_t i, int64_t count, float (&t)[1][kLaneVector]) {
    float af[kLaneVector], gf[kLaneVector];
    load(i, count, !log, af, gf);  // log_softmax's sum is of g alone
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j) t[0][j] = softmax_grad_term(af[j], gf[j], log);
  }
  __device__ __forceinline__ void write(int64_t i, int64_t count, const RowSums<1>& s) {
    float af[kLaneVector], gf[kLaneVector], f[kLaneVector];
    load(i, count, true, af, gf);
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j) f[j] = softmax_grad(af[j], gf[j], s.v[0], log);
    O o[kLaneVector];
    narrow8(f, o);
    store8(dx + i, count, vec_dx, o);
  }
};

template <typename A, typename G, typename O>
__global__ void __launch_bounds__(kMaxLaneThreads) softmax_backward_kernel(SoftmaxBackwardParams p, bool vec_a,
                                                                            bool vec_g, bool vec_dx) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;  // invalid threads still reach the block barrier in row_pass
  const int64_t r = valid ? row : 0;
  SoftmaxBackwardBody<A, G, O> body{static_cast<const A*>(p.a) + r * p.a_stride,
                                    static_cast<const G*>(p.g) + r * p.g_stride, static_cast<O*>(p.dx) + r * p.n,
                                    vec_a, vec_g, vec_dx, p.log};
  row_pass<1, SumLane, SumLane, true>(p.n, valid, body);
}

template <typename A, typename G, typename O>
int launch_typed(const SoftmaxBackwardParams& p, void* stream) {
  const RowGrid grid = row_grid(p.rows, p.n);
  if (!grid.ok) return int(cudaErrorInvalidConfiguration);
  softmax_backward_kernel<A, G, O><<<grid.grid, grid.block, 0, static_cast<cudaStream_t>(stream)>>>(
      p, vector_aligned(p.a, p.a_stride, sizeof(A)), vector_aligned(p.g, p.g_stride, sizeof(G)),
      vector_aligned(p.dx, p.n, sizeof(O)));
  return int(cudaGetLastError());
}

}  // namespace

int launch_softmax_backward(const SoftmaxBackwardParams& p, Storage g, bool a_float, bool out_float, void* stream) {
  int err = 0;
  with_storage(g, [&](auto* g_tag) {
    using G = std::remove_pointer_t<decltype(g_tag)>;
    with_t_or_float<G>(a_float, out_float, [&](auto* a_tag, auto* out_tag) {
      err = launch_typed<std::remove_pointer_t<decltype(a_tag)>, G, std::remove_pointer_t<decltype(out_tag)>>(p, stream);
    });
  });
  return err;
}

}  // namespace detops
