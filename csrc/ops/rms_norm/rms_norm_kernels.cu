// rms_norm / add_rms_norm on CUDA: docs/REDUCTION_ORDER.md §2–§3 with the same shared arithmetic as the CPU
// kernel (rms_norm_input / rms_norm_scale / rms_norm_apply, SumLane / NeumaierLane), so CPU == CUDA bitwise.
// One row = lane_threads(N) threads; small rows share a block (rows_per_block(N)), each with its own order;
// blocks loop over rows (persistent grid) with the next rows' loads in flight. Chunk 0 of a row stays in
// registers from the sum pass to the write pass; longer rows (N > lanes(N)) re-read the rest (just loaded, so
// from L2). The order is the same either way.
// Plain CUDA only: the torch glue is rms_norm_cuda.cpp.
#include <cuda_runtime.h>
#include <cuda_pipeline.h>
#include <atomic>
#include <cstring>
#include "../../reduce/lanes_cuda.cuh"
#include "rms_norm_launch.h"

namespace detops {
namespace {

// Per tensor: may its rows be accessed as 16-byte vectors (load width only, never the order).
struct RmsNormVector { bool x, res, w, y, x_sum; };

// Rows whose first chunk a thread has in flight while it works on the current row, fetched to shared memory by
// cp.async (a per-thread ring: no registers held, no barrier, each thread reads back only its own slots): 64
// bytes per thread and tensor. Measured on H100 (docs/NORM_SOFTMAX_NOTES.md v3): add_rms_norm +9 %, rms_norm
// unchanged; the kernel is bound by per-row work, not by load latency.
template <typename In>
constexpr int kPrefetchRows = sizeof(In) == 2 ? 4 : 2;
constexpr int kChunkBytes = 16;  // one cp.async of a 16-bit chunk; fp32 chunks are two

template <typename In>
constexpr size_t prefetch_smem_bytes(int block_threads) {
  return size_t(kPrefetchRows<In>) * 2 * sizeof(In) * kLaneVector * block_threads;  // x and residual
}

// Persistent grid: a block handles rows base, base + step, ... (step = gridDim.x * blockDim.y); the first chunk
// of row base + d*step is fetched d rows ahead into ring slot (row number mod D). The grid size only decides
// which block runs a row; every row's order is the one of §2.
template <typename In, typename W, typename Out, typename Lane>
__global__ void __launch_bounds__(kMaxLaneThreads, 2)
rms_norm_kernel(RmsNormParams p, RmsNormVector vec) {
  constexpr int D = kPrefetchRows<In>;
  constexpr int kUnits = int(sizeof(In)) * kLaneVector / kChunkBytes;  // 16-byte pieces of one chunk
  extern __shared__ uint4 ring[];  // [D][2 tensors][kUnits][block threads]
  // two slot sets, alternating per row: a warp may write row k+1's slots while others still read row k's
  __shared__ float warp_sums[2][kMaxRowsPerBlock][kMaxWarpsPerRow];
  const int64_t L = int64_t(blockDim.x) * kLaneVector;
  const int64_t first = int64_t(threadIdx.x) * kLaneVector;  // element first + c*L + j sits in lane first + j
  const int64_t step = int64_t(gridDim.x) * blockDim.y;
  const int block_threads = int(blockDim.x * blockDim.y);
  const int tid = int(threadIdx.y * blockDim.x + threadIdx.x);
  const W* w = static_cast<const W*>(p.w);
  const In* x_base = static_cast<const In*>(p.x);
  const In* res_base = static_cast<const In*>(p.residual);
  // Prefetch only whole, aligned first chunks (per thread, the same for every row); other threads load their
  // first chunk when they reach the row. Load path only: the values are the same.
  const bool prefetch = vec.x && (res_base == nullptr || vec.res) && p.n - first >= kLaneVector;
  auto slot = [&](int d, int tensor, int unit) {
    return ring + ((d * 2 + tensor) * kUnits + unit) * block_threads + tid;
  };
  auto fetch = [&](int64_t row, int d) {  // one cp.async group per call, empty when nothing to fetch
    if (prefetch && row < p.rows) {
      const char* xs = reinterpret_cast<const char*>(x_base + row * p.x_stride + first);
#pragma unroll
      for (int u = 0; u < kUnits; ++u) __pipeline_memcpy_async(slot(d, 0, u), xs + u * kChunkBytes, kChunkBytes);
      if (res_base) {
        const char* rs = reinterpret_cast<const char*>(res_base + row * p.res_stride + first);
#pragma unroll
        for (int u = 0; u < kUnits; ++u) __pipeline_memcpy_async(slot(d, 1, u), rs + u * kChunkBytes, kChunkBytes);
      }
    }
    __pipeline_commit();
  };
  const int64_t start = int64_t(blockIdx.x) * blockDim.y;
  for (int d = 0; d < D; ++d) fetch(start + d * step + threadIdx.y, d);

  int parity = 0, d = 0;
  for (int64_t base = start; base < p.rows; base += step, parity ^= 1, d = d + 1 == D ? 0 : d + 1) {
    const int64_t row = base + threadIdx.y;
    const bool valid = row < p.rows;  // invalid threads still reach the block barrier in row_tree
    const int64_t chunks = valid ? (p.n + L - 1) / L : 0;
    const In* x = x_base + (valid ? row * p.x_stride : 0);
    const In* res = res_base ? res_base + (valid ? row * p.res_stride : 0) : nullptr;
    In* x_sum = p.x_sum ? static_cast<In*>(p.x_sum) + (valid ? row * p.n : 0) : nullptr;
    Out* y = static_cast<Out*>(p.y) + (valid ? row * p.n : 0);

    // The 8 inputs of chunk c as the norm sees them (§3 fused residual).
    auto inputs = [&](const In (&a)[8], const In (&b)[8], float (&xs)[8]) {
#pragma unroll
      for (int j = 0; j < 8; ++j) xs[j] = rms_norm_input<In>(a, res ? b : nullptr, j);
    };
    auto load_input = [&](int64_t c, float (&xs)[8]) {
      const int64_t i = c * L + first;
      In a[8], b[8];
      load8(x + i, p.n - i, vec.x, a);
      if (res) load8(res + i, p.n - i, vec.res, b);
      inputs(a, b, xs);
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
    float cache[8];  // chunk 0, kept for the write pass
    __pipeline_wait_prior(D - 1);  // this row's group (committed D groups ago) has landed
    if (chunks > 0) {
      if (prefetch) {
        In a[8], b[8];
#pragma unroll
        for (int u = 0; u < kUnits; ++u) {
          memcpy(a + u * (kChunkBytes / sizeof(In)), slot(d, 0, u), kChunkBytes);
          if (res) memcpy(b + u * (kChunkBytes / sizeof(In)), slot(d, 1, u), kChunkBytes);
        }
        inputs(a, b, cache);
      } else {
        load_input(0, cache);
      }
      absorb(0, cache);
    }
#pragma unroll 2
    for (int64_t c = 1; c < chunks; ++c) {
      float xs[8];
      load_input(c, xs);
      absorb(c, xs);
    }
    fetch(row + D * step, d);  // slot d has been read (its values are in use above); refill it D rows ahead

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
  __pipeline_wait_prior(0);  // no cp.async may still write this block's shared memory when it exits
}

}  // namespace

template <typename In, typename W, typename Out>
int launch_rms_norm(const RmsNormParams& p, void* stream) {
  const int rpb = rows_per_block(p.n);
  const dim3 block(unsigned(lane_threads(p.n)), unsigned(rpb));
  const int threads = int(block.x * block.y);
  RmsNormVector vec;
  vec.x = vector_aligned(p.x, p.x_stride, sizeof(In));
  vec.res = p.residual != nullptr && vector_aligned(p.residual, p.res_stride, sizeof(In));
  vec.w = p.w != nullptr && vector_aligned(p.w, 0, sizeof(W));
  vec.y = vector_aligned(p.y, p.n, sizeof(Out));
  vec.x_sum = p.x_sum != nullptr && vector_aligned(p.x_sum, p.n, sizeof(In));
  auto kernel = p.compensated ? rms_norm_kernel<In, W, Out, NeumaierLane> : rms_norm_kernel<In, W, Out, SumLane>;
  const size_t smem = prefetch_smem_bytes<In>(threads);
  // Resident blocks of this kernel and block size (cached; depends on the kernel and the device, never on the
  // rows): the persistent grid's size.
  static std::atomic<int> resident_cache[2][kMaxLaneThreads / kMinLaneThreads + 1];
  std::atomic<int>& cached = resident_cache[p.compensated ? 1 : 0][threads / kMinLaneThreads];
  int resident = cached.load(std::memory_order_relaxed);
  if (resident <= 0) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         int(prefetch_smem_bytes<In>(kMaxLaneThreads)));
    int dev = 0, sms = 0, per_sm = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem);
    resident = sms * (per_sm > 0 ? per_sm : 1);
    cached.store(resident, std::memory_order_relaxed);
  }
  const int64_t needed = (p.rows + rpb - 1) / rpb;
  const dim3 grid(unsigned(needed < resident ? needed : resident));
  kernel<<<grid, block, smem, static_cast<cudaStream_t>(stream)>>>(p, vec);
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
