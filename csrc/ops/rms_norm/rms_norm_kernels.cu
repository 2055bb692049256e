// rms_norm / add_rms_norm on CUDA: docs/REDUCTION_ORDER.md §2–§3 with the same shared arithmetic as the CPU
// kernel (rms_norm_input / rms_norm_scale / rms_norm_apply, SumLane / NeumaierLane), so CPU == CUDA bitwise.
// One row = lane_threads(N) threads; small rows share a block (rows_per_block(N)), each with its own order;
// blocks loop over rows (persistent grid).
// Plain CUDA only: the torch glue is rms_norm_cuda.cpp.
#include <cuda_runtime.h>
#include <atomic>
#include "../../reduce/lanes_cuda.cuh"
#include "rms_norm_launch.h"

namespace detops {
namespace {

// Row chunks of L = lanes(N) elements kept in registers between the sum pass and the write pass. Rows of up to
// L elements (hidden <= 4096) are read once; longer rows re-read the rest (just loaded, so from L2). The order
// is the same either way.
constexpr int kCachedChunks = 1;

// Per tensor: may its rows be accessed as 16-byte vectors (load width only, never the order).
struct RmsNormVector { bool x, res, w, y, x_sum; };

// Persistent grid: a block handles rows base, base + step, ... (step = gridDim.x * blockDim.y) and prefetches
// the next row's first chunk before reducing the current one, so loads stay in flight. The grid size only
// decides which block runs a row; every row's order is the one of §2.
template <typename In, typename W, typename Out, typename Lane>
__global__ void __launch_bounds__(kMaxLaneThreads, 2)
rms_norm_kernel(RmsNormParams p, RmsNormVector vec) {
  // two slot sets, alternating per row: a warp may write row k+1's slots while others still read row k's
  __shared__ float warp_sums[2][kMaxRowsPerBlock][kMaxWarpsPerRow];
  const int64_t L = int64_t(blockDim.x) * kLaneVector;
  const int64_t first = int64_t(threadIdx.x) * kLaneVector;  // element first + c*L + j sits in lane first + j
  const int64_t step = int64_t(gridDim.x) * blockDim.y;
  const W* w = static_cast<const W*>(p.w);
  const In* x_base = static_cast<const In*>(p.x);
  const In* res_base = static_cast<const In*>(p.residual);

  // Raw first chunk of the next row (In storage), fetched one row ahead.
  In xv[8], rv[8];
  auto fetch = [&](int64_t row) {
    if (row < p.rows && first < p.n) {
      load8(x_base + row * p.x_stride + first, p.n - first, vec.x, xv);
      if (res_base) load8(res_base + row * p.res_stride + first, p.n - first, vec.res, rv);
    }
  };
  fetch(int64_t(blockIdx.x) * blockDim.y + threadIdx.y);

  int parity = 0;
  for (int64_t base = int64_t(blockIdx.x) * blockDim.y; base < p.rows; base += step, parity ^= 1) {
    const int64_t row = base + threadIdx.y;
    const bool valid = row < p.rows;  // invalid threads still reach the block barrier in row_tree
    const int64_t chunks = valid ? (p.n + L - 1) / L : 0;
    const In* x = x_base + (valid ? row * p.x_stride : 0);
    const In* res = res_base ? res_base + (valid ? row * p.res_stride : 0) : nullptr;
    In* x_sum = p.x_sum ? static_cast<In*>(p.x_sum) + (valid ? row * p.n : 0) : nullptr;
    Out* y = static_cast<Out*>(p.y) + (valid ? row * p.n : 0);

    // The 8 inputs of chunk c as the norm sees them (§3 fused residual).
    auto load_input = [&](int64_t c, float (&xs)[8]) {
      const int64_t i = c * L + first;
      In a[8], b[8];
      load8(x + i, p.n - i, vec.x, a);
      if (res) load8(res + i, p.n - i, vec.res, b);
#pragma unroll
      for (int j = 0; j < 8; ++j) xs[j] = rms_norm_input<In>(a, res ? b : nullptr, j);
    };

    // Pass 1: lane l accumulates x_i * x_i for i = l, l + L, ... ascending (§2 step 2).
    Lane acc[8];
    auto absorb = [&](int64_t c, const float (&xs)[8]) {
      const int64_t i = c * L + first;
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (j < p.n - i) acc[j].add(xs[j] * xs[j]);
      if (x_sum) {
        In o[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) o[j] = from_float<In>(xs[j]);
        store8(x_sum + i, p.n - i, vec.x_sum, o);
      }
    };
    float cache[8];
    if (chunks > 0) {
#pragma unroll
      for (int j = 0; j < 8; ++j) cache[j] = rms_norm_input<In>(xv, res ? rv : nullptr, j);
      absorb(0, cache);
    }
#pragma unroll 2
    for (int64_t c = 1; c < chunks; ++c) {
      float xs[8];
      load_input(c, xs);
      absorb(c, xs);
    }
    fetch(row + step);  // in flight during the tree and the write pass

    // §2 step 3, then §3: r = 1 / sqrt(ss / N + eps).
    float lane_values[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) lane_values[j] = acc[j].value();
    const float ss = row_tree(lane_values, warp_sums[parity][threadIdx.y], SumOp{});
    const float r = rms_norm_scale(ss, p.n, p.eps);

    // Pass 2: y_i = rms_norm_apply(x_i, r, w_i) (§3), elementwise.
    auto emit = [&](int64_t c, const float (&xs)[8]) {
      const int64_t i = c * L + first;
      Out o[8];
      if (w) {
        W wv[8];
        load8(w + i, p.n - i, vec.w, wv);
#pragma unroll
        for (int j = 0; j < 8; ++j) o[j] = rms_norm_apply<In, W, Out>(xs[j], r, wv, j, p.mode);
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j)
          o[j] = rms_norm_apply<In, W, Out>(xs[j], r, static_cast<const W*>(nullptr), j, p.mode);
      }
      store8(y + i, p.n - i, vec.y, o);
    };
    if (chunks > 0) emit(0, cache);
    for (int64_t c = 1; c < chunks; ++c) {
      float xs[8];
      load_input(c, xs);
      emit(c, xs);
    }
  }
}

// Resident blocks of this kernel for a block of `threads` (cached per block size; depends on the kernel and
// the device, never on the rows).
template <typename Kernel>
int resident_blocks(Kernel kernel, int threads) {
  static std::atomic<int> cached[kMaxLaneThreads / kMinLaneThreads + 1];
  const int slot = threads / kMinLaneThreads;
  int v = cached[slot].load(std::memory_order_relaxed);
  if (v > 0) return v;
  int dev = 0, sms = 0, per_sm = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0);
  v = sms * (per_sm > 0 ? per_sm : 1);
  cached[slot].store(v, std::memory_order_relaxed);
  return v;
}

}  // namespace

template <typename In, typename W, typename Out>
int launch_rms_norm(const RmsNormParams& p, void* stream) {
  const int rpb = rows_per_block(p.n);
  const dim3 block(unsigned(lane_threads(p.n)), unsigned(rpb));
  RmsNormVector vec;
  vec.x = vector_aligned(p.x, p.x_stride, sizeof(In));
  vec.res = p.residual != nullptr && vector_aligned(p.residual, p.res_stride, sizeof(In));
  vec.w = p.w != nullptr && vector_aligned(p.w, 0, sizeof(W));
  vec.y = vector_aligned(p.y, p.n, sizeof(Out));
  vec.x_sum = p.x_sum != nullptr && vector_aligned(p.x_sum, p.n, sizeof(In));
  auto kernel = p.compensated ? rms_norm_kernel<In, W, Out, NeumaierLane> : rms_norm_kernel<In, W, Out, SumLane>;
  const int64_t needed = (p.rows + rpb - 1) / rpb;
  const int64_t resident = resident_blocks(kernel, int(block.x * block.y));
  const dim3 grid(unsigned(needed < resident ? needed : resident));
  kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(p, vec);
  return int(cudaGetLastError());
}

// W in {In, float}; Out = In, or float for cast_first with a float weight (promote(In, float)).
template int launch_rms_norm<float, float, float>(const RmsNormParams&, void*);
template int launch_rms_norm<bf16_t, bf16_t, bf16_t>(const RmsNormParams&, void*);
template int launch_rms_norm<bf16_t, float, bf16_t>(const RmsNormParams&, void*);
template int launch_rms_norm<bf16_t, float, float>(const RmsNormParams&, void*);
template int launch_rms_norm<fp16_t, fp16_t, fp16_t>(const RmsNormParams&, void*);
template int launch_rms_norm<fp16_t, float, fp16_t>(const RmsNormParams&, void*);
template int launch_rms_norm<fp16_t, float, float>(const RmsNormParams&, void*);

}  // namespace detops
