// The cross-entropy row kernels on CUDA: docs/REDUCTION_ORDER.md §10 rule 4, with the CUDA softmax's M (lane maxima,
// then §2's tree, as softmax's row kernel) and S (§2's lanes through row_pass, csrc/reduce/row_pass_cuda.cuh) and
// the CPU kernel's per-element arithmetic (cross_entropy.h), so CPU == CUDA bitwise. One row = lane_threads(N)
// threads, short rows sharing a block (row_grid: mapping by N only); an ignored token's row is never read.
// Three passes over a row that is not ignored (max, sum, and the write or the target's read); a row read by one
// block is still in L2 for the second and third. Plain CUDA only: the torch glue is cross_entropy_cuda.cpp.
#include <cuda_runtime.h>
#include "../../reduce/row_pass_cuda.cuh"
#include "../softmax/row_division.cuh"
#include "cross_entropy_launch.h"

namespace detops {
namespace {

constexpr float kNaN = __builtin_nanf("");

// §4 step 1: the row maximum from lane maxima (each lane ascending) and §2's tree, softmax's row kernel's order.
// Every thread of the block calls it (the tree synchronises the block).
template <typename T>
__device__ __forceinline__ float row_max(const T* x, int64_t n, bool active, bool vec) {
  __shared__ float warp_max[kMaxRowsPerBlock][kMaxWarpsPerRow];
  const int64_t L = int64_t(blockDim.x) * kLaneVector;
  const int64_t first = int64_t(threadIdx.x) * kLaneVector;
  const int64_t chunks = active && first < n ? (n - first + L - 1) / L : 0;
  float mx[kLaneVector];
#pragma unroll
  for (int j = 0; j < kLaneVector; ++j) mx[j] = -kInf;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i = c * L + first, count = n - i;
    T v[kLaneVector];
    load8(x + i, count, vec, v);
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j)
      if (count >= kLaneVector || j < count) mx[j] = det_max(mx[j], to_float(v[j]));
  }
  return row_tree(mx, warp_max[threadIdx.y], MaxOp{});
}

// S's terms exp(x - M) (row_pass's body, its sum only); emit: the backward's (p - [i == t]) · scale.
template <typename T>
struct CrossEntropyBody {
  const T* x;
  T* dx;
  float m;
  int64_t target;
  float scale;
  bool vec_x, vec_dx;
  RowDivision div{1.0f};
  __device__ __forceinline__ void load(int64_t i, int64_t count, float (&xs)[kLaneVector]) const {
    T v[kLaneVector];
    load8(x + i, count, vec_x, v);
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j) xs[j] = to_float(v[j]);
  }
  __device__ __forceinline__ void terms(int64_t i, int64_t count, float (&t)[1][kLaneVector]) {
    float xs[kLaneVector];
    load(i, count, xs);
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j) t[0][j] = softmax_step2(xs[j], m, false);
  }
  // dx of elements i .. i + count - 1 (needs div = the row's S)
  __device__ __forceinline__ void emit(int64_t i, int64_t count) const {
    float xs[kLaneVector], f[kLaneVector];
    load(i, count, xs);
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j) {
      const float e = softmax_step2(xs[j], m, false);
      const float prob = div.ieee(e) ? softmax_from_step2(e, div.s, 0.0f, false) : div.fast(e);
      f[j] = cross_entropy_grad(prob, i + j == target, scale);
    }
    T o[kLaneVector];
    narrow8(f, o);
    store8(dx + i, count, vec_dx, o);
  }
};

// A row's M and S (the body's m is set in between); `active` rows only, the others pass through the barriers.
template <typename T, typename Lane>
__device__ __forceinline__ float row_stats(CrossEntropyBody<T>& body, int64_t n, bool active) {
  body.m = row_max(body.x, n, active, body.vec_x);
  return row_pass<1, Lane, Lane, false>(n, active, body).v[0];
}

template <typename T, typename Lane>
__global__ void __launch_bounds__(kMaxLaneThreads) nll_kernel(CrossEntropyParams p, bool vec_x) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;  // invalid threads still reach the block barriers
  const int64_t r = valid ? row : 0;
  const int64_t t = p.target[r];
  const TargetKind kind = target_kind(t, p.ignore_index, p.n);
  const bool active = valid && kind == TargetKind::kScore;
  CrossEntropyBody<T> body{static_cast<const T*>(p.x) + r * p.x_stride, nullptr, 0.0f, t, 0.0f, vec_x, false};
  const float s = row_stats<T, Lane>(body, p.n, active);
  if (valid && threadIdx.x == 0)
    p.nll[row] = active ? cross_entropy_nll(to_float(body.x[t]), body.m, s)
                        : (kind == TargetKind::kIgnored ? 0.0f : kNaN);
}

template <typename T, typename Lane>
__global__ void __launch_bounds__(kMaxLaneThreads) backward_kernel(CrossEntropyParams p, bool vec_x, bool vec_dx) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;
  const int64_t r = valid ? row : 0;
  const int64_t t = p.target[r];
  const TargetKind kind = target_kind(t, p.ignore_index, p.n);
  const bool active = valid && kind == TargetKind::kScore;
  CrossEntropyBody<T> body{static_cast<const T*>(p.x) + r * p.x_stride, static_cast<T*>(p.dx) + r * p.n, 0.0f, t,
                           p.grad[r * p.grad_stride], vec_x, vec_dx};
  const float s = row_stats<T, Lane>(body, p.n, active);
  const int64_t L = int64_t(blockDim.x) * kLaneVector;
  const int64_t first = int64_t(threadIdx.x) * kLaneVector;
  const int64_t chunks = first < p.n ? (p.n - first + L - 1) / L : 0;
  if (active) {  // elementwise: the chunks read last (likeliest still in L2) first
    body.div = RowDivision(s);
    for (int64_t c = chunks - 1; c >= 0; --c) body.emit(c * L + first, p.n - (c * L + first));
  } else if (valid) {  // ignored: zeros; a target out of range: NaN
    float f[kLaneVector];
#pragma unroll
    for (int j = 0; j < kLaneVector; ++j) f[j] = kind == TargetKind::kIgnored ? 0.0f : kNaN;
    T o[kLaneVector];
    narrow8(f, o);
    for (int64_t c = 0; c < chunks; ++c) store8(body.dx + c * L + first, p.n - (c * L + first), vec_dx, o);
  }
}

template <typename T, typename Lane>
int launch_typed(const CrossEntropyParams& p, bool backward, void* stream) {
  const RowGrid g = row_grid(p.rows, p.n);
  if (!g.ok) return int(cudaErrorInvalidConfiguration);
  const bool vec_x = vector_aligned(p.x, p.x_stride, sizeof(T));
  auto s = static_cast<cudaStream_t>(stream);
  if (backward)
    backward_kernel<T, Lane><<<g.grid, g.block, 0, s>>>(p, vec_x, vector_aligned(p.dx, p.n, sizeof(T)));
  else
    nll_kernel<T, Lane><<<g.grid, g.block, 0, s>>>(p, vec_x);
  return int(cudaGetLastError());
}

int launch(const CrossEntropyParams& p, bool backward, void* stream) {
  int err = 0;
  with_storage(p.x_dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    err = p.compensated ? launch_typed<T, NeumaierLane>(p, backward, stream)
                        : launch_typed<T, SumLane>(p, backward, stream);
  });
  return err;
}

}  // namespace

int launch_cross_entropy_nll(const CrossEntropyParams& p, void* stream) { return launch(p, false, stream); }
int launch_cross_entropy_backward(const CrossEntropyParams& p, void* stream) { return launch(p, true, stream); }

}  // namespace detops
