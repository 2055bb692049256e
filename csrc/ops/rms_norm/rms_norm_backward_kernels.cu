// rms_norm backward on CUDA: docs/REDUCTION_ORDER.md §10 rule 2 through row_pass (csrc/reduce/row_pass_cuda.cuh)
// with the CPU kernel's arithmetic (rms_norm_scale / rms_norm_grad_c / rms_norm_grad / rms_norm_grad_xhat,
// rms_norm.h), so CPU == CUDA bitwise: the two row sums Σ x·x (the forward's lanes, so r is the forward's r) and
// Σ gw·x in one pass, then dx (and g·x̂), one read of x and g per pass. Plain CUDA only: the torch glue is
// rms_norm_cuda.cpp.
#include <cuda_runtime.h>
#include "../../reduce/row_pass_cuda.cuh"
#include "rms_norm_launch.h"

namespace detops {
namespace {

template <typename In, typename G, typename O>
struct RmsNormBackwardBody {
  const In* x;
  const G* g;
  const float* w;
  const In* extra;
  O* dx;
  float* gxhat;
  int64_t n;
  float eps;
  bool cast_first, vec_x, vec_g, vec_w, vec_extra, vec_dx, vec_gxhat;
  __device__ __forceinline__ void load(int64_t i, int64_t count, float (&xf)[kLaneVector], float (&gf)[kLaneVector],
                                       float (&gw)[kLaneVector]) {
    In vx[kLaneVector];
    G vg[kLaneVector];
    load8(x + i, count, vec_x, vx);
    load8(g + i, count, vec_g, vg);
    float wf[kLaneVector];
    if (w != nullptr) load8(w + i, count, vec_w, wf);
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j) {
      xf[j] = to_float(vx[j]);
      gf[j] = to_float(vg[j]);
      gw[j] = w != nullptr ? gf[j] * wf[j] : gf[j];
    }
  }
  __device__ __forceinline__ void terms(int64_t i, int64_t count, float (&t)[2][kLaneVector]) {
    float xf[kLaneVector], gf[kLaneVector], gw[kLaneVector];
    load(i, count, xf, gf, gw);
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j) {
      t[0][j] = xf[j] * xf[j];
      t[1][j] = gw[j] * xf[j];
    }
  }
  __device__ __forceinline__ void write(int64_t i, int64_t count, const RowSums<2>& s) {
    const float r = rms_norm_scale(s.v[0], n, eps), c = rms_norm_grad_c(r, s.v[1], n);
    float xf[kLaneVector], gf[kLaneVector], gw[kLaneVector], f[kLaneVector];
    load(i, count, xf, gf, gw);
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j) f[j] = rms_norm_grad(xf[j], gw[j], r, c);
    if (extra != nullptr) {
      In ve[kLaneVector];
      load8(extra + i, count, vec_extra, ve);
#pragma unroll
      for (int j = 0; j < kLaneVector; ++j) f[j] = f[j] + to_float(ve[j]);
    }
    O o[kLaneVector];
    narrow8(f, o);
    store8(dx + i, count, vec_dx, o);
    if (gxhat != nullptr) {
#pragma unroll
      for (int j = 0; j < kLaneVector; ++j) f[j] = gf[j] * rms_norm_grad_xhat<In>(xf[j], r, cast_first);
      store8(gxhat + i, count, vec_gxhat, f);
    }
  }
};

template <typename In, typename G, typename O, typename SquareLane>
__global__ void __launch_bounds__(kMaxLaneThreads) rms_norm_backward_kernel(RmsNormBackwardParams p, bool vec_x,
                                                                             bool vec_g, bool vec_w, bool vec_extra,
                                                                             bool vec_dx, bool vec_gxhat) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;  // invalid threads still reach the block barrier in row_pass
  const int64_t r = valid ? row : 0;
  RmsNormBackwardBody<In, G, O> body{static_cast<const In*>(p.x) + r * p.x_stride,
                                     static_cast<const G*>(p.g) + r * p.g_stride,
                                     p.w,
                                     p.extra == nullptr ? nullptr : static_cast<const In*>(p.extra) + r * p.extra_stride,
                                     static_cast<O*>(p.dx) + r * p.n,
                                     p.gxhat == nullptr ? nullptr : p.gxhat + r * p.n,
                                     p.n, p.eps, p.cast_first, vec_x, vec_g, vec_w, vec_extra, vec_dx, vec_gxhat};
  row_pass<2, SquareLane, SumLane, true>(p.n, valid, body);
}

template <typename In, typename G, typename O>
int launch_typed(const RmsNormBackwardParams& p, void* stream) {
  const RowGrid grid = row_grid(p.rows, p.n);
  if (!grid.ok) return int(cudaErrorInvalidConfiguration);
  auto kernel = p.compensated ? rms_norm_backward_kernel<In, G, O, NeumaierLane>
                              : rms_norm_backward_kernel<In, G, O, SumLane>;
  kernel<<<grid.grid, grid.block, 0, static_cast<cudaStream_t>(stream)>>>(
      p, vector_aligned(p.x, p.x_stride, sizeof(In)), vector_aligned(p.g, p.g_stride, sizeof(G)),
      vector_aligned(p.w, 0, sizeof(float)), p.extra != nullptr && vector_aligned(p.extra, p.extra_stride, sizeof(In)),
      vector_aligned(p.dx, p.n, sizeof(O)), p.gxhat != nullptr && vector_aligned(p.gxhat, p.n, sizeof(float)));
  return int(cudaGetLastError());
}

}  // namespace

int launch_rms_norm_backward(const RmsNormBackwardParams& p, Storage in, bool g_float, bool out_float, void* stream) {
  int err = 0;
  with_storage(in, [&](auto* in_tag) {
    using In = std::remove_pointer_t<decltype(in_tag)>;
    with_t_or_float<In>(g_float, out_float, [&](auto* g_tag, auto* out_tag) {
      err = launch_typed<In, std::remove_pointer_t<decltype(g_tag)>, std::remove_pointer_t<decltype(out_tag)>>(p, stream);
    });
  });
  return err;
}

}  // namespace detops
