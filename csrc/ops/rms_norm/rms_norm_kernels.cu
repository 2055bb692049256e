// rms_norm / add_rms_norm on CUDA: docs/REDUCTION_ORDER.md §2–§3 with the same shared arithmetic as the CPU
// kernel (rms_norm_input / rms_norm_scale / rms_norm_apply, SumLane / NeumaierLane), so CPU == CUDA bitwise.
// One row = lanes(N) / K threads, K = lanes_per_thread (8 or 16, by N and dtype); small rows share a block
// (rows_per_block(N)), each with its own order;
// blocks loop over rows (persistent grid) with the next rows' loads in flight. Chunk 0 of a row stays in
// registers from the sum pass to the write pass; longer rows (N > lanes(N)) re-read the rest (just loaded, so
// from L2). The order is the same either way.
// Plain CUDA only: the torch glue is rms_norm_cuda.cpp.
#include <cuda_runtime.h>
#include <cuda_pipeline.h>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include "../../reduce/lanes_cuda.cuh"
#include "rms_norm_launch.h"

namespace detops {
namespace {

// Per tensor: may its rows be accessed as 16-byte vectors (load width only, never the order).
struct RmsNormVector { bool x, res, w, y, x_sum; };

// Rows whose first chunk a thread has in flight while it works on the current row, fetched to shared memory by
// cp.async (a per-thread ring: no registers held, no barrier, each thread reads back only its own slots):
// 64 bytes per thread and tensor at 8 lanes per thread.
template <typename In>
constexpr int kPrefetchRows = sizeof(In) == 2 ? 4 : 2;
constexpr int kCopyBytes = 16;  // one cp.async

template <typename In, int K>
constexpr size_t prefetch_smem_bytes(int block_threads) {
  return size_t(kPrefetchRows<In>) * 2 * sizeof(In) * K * block_threads;  // x and residual
}

// Lanes per thread: 16 (a thread owns lanes 16t..16t+15, its in-thread tree is two 8-lane trees merged, i.e.
// the same §2 tree) for 16-bit inputs without compensation once a row has >= 64 threads of 8 lanes; else 8.
// Twice the elements per thread halves the per-row work (tree, scale, address arithmetic) per element and puts
// twice the rows in flight per SM. Depends on N, the dtype and the op's flags only.
inline int lanes_per_thread(int64_t n, int in_bytes, bool compensated) {
  static const bool experiment_8 = [] {  // DETOPS_EXPERIMENT: A/B of 8 vs 16 lanes in one run; removed after
    const char* e = getenv("DETOPS_RMS_NORM_LANES_PER_THREAD");
    return e != nullptr && atoi(e) == 8;
  }();
  if (experiment_8) return 8;
  return in_bytes == 2 && !compensated && lane_threads(n) >= 64 ? 16 : 8;
}

// Persistent grid: a block handles rows base, base + step, ... (step = gridDim.x * blockDim.y); the first chunk
// of row base + d*step is fetched d rows ahead into ring slot (row number mod D). The grid size only decides
// which block runs a row; every row's order is the one of §2.
// Launch bounds: at 8 lanes per thread, 2 blocks of 512 (64 registers, no spills); at 16 lanes the register cap
// of 64 spilled 270-730 bytes, so blocks of up to 256 threads with 2 per SM guaranteed (up to 128 registers).
template <typename In, typename W, typename Out, typename Lane, int K>
__global__ void __launch_bounds__(kMaxLaneThreads * kLaneVector / K, 2)
rms_norm_kernel(RmsNormParams p, RmsNormVector vec) {
  constexpr int D = kPrefetchRows<In>;
  constexpr int kUnits = int(sizeof(In)) * K / kCopyBytes;  // 16-byte pieces of one thread's chunk
  extern __shared__ uint4 ring[];  // [D][2 tensors][kUnits][block threads]
  // two slot sets, alternating per row: a warp may write row k+1's slots while others still read row k's
  __shared__ float warp_sums[2][kMaxRowsPerBlock][kMaxWarpsPerRow];
  const int64_t L = int64_t(blockDim.x) * K;                // == lanes(N)
  const int64_t first = int64_t(threadIdx.x) * K;  // element first + c*L + j sits in lane first + j
  const int64_t step = int64_t(gridDim.x) * blockDim.y;
  const int block_threads = int(blockDim.x * blockDim.y);
  const int tid = int(threadIdx.y * blockDim.x + threadIdx.x);
  const W* w = static_cast<const W*>(p.w);
  const In* x_base = static_cast<const In*>(p.x);
  const In* res_base = static_cast<const In*>(p.residual);
  // Prefetch only whole, aligned first chunks (per thread, the same for every row); other threads load their
  // first chunk when they reach the row. Load path only: the values are the same.
  const bool prefetch = vec.x && (res_base == nullptr || vec.res) && p.n - first >= K;
  auto slot = [&](int d, int tensor, int unit) {
    return ring + ((d * 2 + tensor) * kUnits + unit) * block_threads + tid;
  };
  auto fetch = [&](int64_t row, int d) {  // one cp.async group per call, empty when nothing to fetch
    if (prefetch && row < p.rows) {
      const char* xs = reinterpret_cast<const char*>(x_base + row * p.x_stride + first);
#pragma unroll
      for (int u = 0; u < kUnits; ++u) __pipeline_memcpy_async(slot(d, 0, u), xs + u * kCopyBytes, kCopyBytes);
      if (res_base) {
        const char* rs = reinterpret_cast<const char*>(res_base + row * p.res_stride + first);
#pragma unroll
        for (int u = 0; u < kUnits; ++u) __pipeline_memcpy_async(slot(d, 1, u), rs + u * kCopyBytes, kCopyBytes);
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

    // The K inputs of a chunk as the norm sees them (§3 fused residual).
    auto inputs = [&](const In (&a)[K], const In (&b)[K], float (&xs)[K]) {
#pragma unroll
      for (int j = 0; j < K; ++j) xs[j] = rms_norm_input<In>(a, res ? b : nullptr, j);
    };
    auto load_input = [&](int64_t c, float (&xs)[K]) {
      const int64_t i = c * L + first;
      In a[K], b[K];
      loadk(x + i, p.n - i, vec.x, a);
      if (res) loadk(res + i, p.n - i, vec.res, b);
      inputs(a, b, xs);
    };

    // Pass 1: lane l accumulates x_i * x_i for i = l, l + L, ... ascending (§2 step 2).
    Lane acc[K];
    auto absorb = [&](int64_t c, const float (&xs)[K]) {
      const int64_t i = c * L + first;
#pragma unroll
      for (int j = 0; j < K; ++j)
        if (j < p.n - i) acc[j].add(xs[j] * xs[j]);
      if (x_sum) {
        In o[K];
#pragma unroll
        for (int j = 0; j < K; ++j) o[j] = from_float<In>(xs[j]);
        storek(x_sum + i, p.n - i, vec.x_sum, o);
      }
    };
    float cache[K];  // chunk 0, kept for the write pass
    __pipeline_wait_prior(D - 1);  // this row's group (committed D groups ago) has landed
    if (chunks > 0) {
      if (prefetch) {
        In a[K], b[K];
#pragma unroll
        for (int u = 0; u < kUnits; ++u) {
          memcpy(a + u * (kCopyBytes / sizeof(In)), slot(d, 0, u), kCopyBytes);
          if (res) memcpy(b + u * (kCopyBytes / sizeof(In)), slot(d, 1, u), kCopyBytes);
        }
        inputs(a, b, cache);
      } else {
        load_input(0, cache);
      }
      absorb(0, cache);
    }
#pragma unroll 2
    for (int64_t c = 1; c < chunks; ++c) {
      float xs[K];
      load_input(c, xs);
      absorb(c, xs);
    }
    fetch(row + D * step, d);  // slot d has been read (its values are in use above); refill it D rows ahead

    // §2 step 3, then §3: r = 1 / sqrt(ss / N + eps).
    float lane_values[K];
#pragma unroll
    for (int j = 0; j < K; ++j) lane_values[j] = acc[j].value();
    const float ss = row_tree(lane_values, warp_sums[parity][threadIdx.y], SumOp{});
    const float r = rms_norm_scale(ss, p.n, p.eps);

    // Pass 2: y_i = rms_norm_apply(x_i, r, w_i) (§3), elementwise.
    auto emit = [&](int64_t c, const float (&xs)[K]) {
      const int64_t i = c * L + first;
      Out o[K];
      if (w) {
        W wv[K];
        loadk(w + i, p.n - i, vec.w, wv);
#pragma unroll
        for (int j = 0; j < K; ++j) o[j] = rms_norm_apply<In, W, Out>(xs[j], r, wv, j, p.mode);
      } else {
#pragma unroll
        for (int j = 0; j < K; ++j)
          o[j] = rms_norm_apply<In, W, Out>(xs[j], r, static_cast<const W*>(nullptr), j, p.mode);
      }
      storek(y + i, p.n - i, vec.y, o);
    };
    if (chunks > 0) emit(0, cache);
    for (int64_t c = 1; c < chunks; ++c) {
      float xs[K];
      load_input(c, xs);
      emit(c, xs);
    }
  }
  __pipeline_wait_prior(0);  // no cp.async may still write this block's shared memory when it exits
}

template <typename In, typename W, typename Out, typename Lane, int K>
int launch_with(const RmsNormParams& p, const RmsNormVector& vec, void* stream) {
  auto kernel = rms_norm_kernel<In, W, Out, Lane, K>;
  const int rpb = rows_per_block(p.n);
  const dim3 block(unsigned(lane_threads(p.n) * kLaneVector / K), unsigned(rpb));
  const int threads = int(block.x * block.y);
  const size_t smem = prefetch_smem_bytes<In, K>(threads);
  // Resident blocks of this kernel and block size (cached; depends on the kernel and the device, never on the
  // rows): the persistent grid's size.
  static std::atomic<int> resident_cache[kMaxLaneThreads / kMinLaneThreads + 1];
  std::atomic<int>& cached = resident_cache[threads / kMinLaneThreads];
  int resident = cached.load(std::memory_order_relaxed);
  if (resident <= 0) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         int(prefetch_smem_bytes<In, K>(kMaxLaneThreads)));
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

}  // namespace

template <typename In, typename W, typename Out>
int launch_rms_norm(const RmsNormParams& p, void* stream) {
  RmsNormVector vec;
  vec.x = vector_aligned(p.x, p.x_stride, sizeof(In));
  vec.res = p.residual != nullptr && vector_aligned(p.residual, p.res_stride, sizeof(In));
  vec.w = p.w != nullptr && vector_aligned(p.w, 0, sizeof(W));
  vec.y = vector_aligned(p.y, p.n, sizeof(Out));
  vec.x_sum = p.x_sum != nullptr && vector_aligned(p.x_sum, p.n, sizeof(In));
  if (p.compensated) return launch_with<In, W, Out, NeumaierLane, 8>(p, vec, stream);
  if constexpr (sizeof(In) == 2) {
    if (lanes_per_thread(p.n, 2, false) == 16) return launch_with<In, W, Out, SumLane, 16>(p, vec, stream);
  }
  return launch_with<In, W, Out, SumLane, 8>(p, vec, stream);
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
