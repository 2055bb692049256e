// softmax / log_softmax on CUDA: docs/REDUCTION_ORDER.md §2 and §4 with the same shared arithmetic as the
// CPU kernel (SumLane / NeumaierLane / det_exp_nonpositive / det_log / softmax_step2 / softmax_from_step2), so
// CPU == CUDA bitwise; the division by S is RowDivision (row_division.cuh: the IEEE division's bits).
// §4 is two passes (M = row max, then S = lane sum of exp(x - M)) and the write; mappings of that order, chosen
// by N (and the compensated mode) only (constants.h):
// - N <= kSoftmaxSplitMinN (row_kernel): one row = lane_threads(N) threads of one block, thread t owning lanes
//   8t..8t+7; short rows share a block (rows_per_block(N)).
// - longer rows (split_kernel): lanes(N) = 4096; a thread owns K adjacent lanes, the row's 4096 / K threads are
//   the G blocks of one thread-block cluster; rows of up to kSoftmaxRegisterChunks (K = 4) or kSoftmaxLongRowChunks
//   (K = 1) chunks of 4096 are read once and held in registers, with exp(x - M) (or x - M) kept from the sum pass
//   to the write pass: one det_exp per element; longer rows are streamed once per pass.
// Each .cu file of this directory instantiates launch_softmax for one input dtype (parallel compilation).
// Plain CUDA only: the torch glue is softmax_cuda.cpp.
#pragma once
#include <cuda_runtime.h>
#include "../../reduce/lanes_cuda.cuh"
#include "row_division.cuh"
#include "softmax_launch.h"

namespace detops {
namespace softmax_detail {


// f(j) for the lanes j < count of a thread's K lanes in one chunk; whole chunks (count >= K) without a per-lane
// test, so the K independent lane updates form one straight-line block the compiler can interleave.
template <int K, typename F>
__device__ __forceinline__ void each_lane(int64_t count, F&& f) {
  if (count >= K) {
#pragma unroll
    for (int j = 0; j < K; ++j) f(j);
  } else {
#pragma unroll
    for (int j = 0; j < K; ++j)
      if (j < count) f(j);
  }
}

template <int K, typename In>
__device__ __forceinline__ void widen(const In (&v)[K], float (&xs)[K]) {
#pragma unroll
  for (int j = 0; j < K; ++j) xs[j] = to_float(v[j]);
}

// The K elements p[0..count) of one thread's lanes in a chunk (count may be < K or <= 0 at the row's end: the
// missing ones are not read). `vector_ok`: the tensor's base and row stride are multiples of 16 bytes, so K * sizeof(T)
// bytes of 8 or 16 (a power of 2 that divides the element offset's byte count) are one aligned access; K = 1 is a
// plain scalar access.
template <int K, typename T>
__device__ __forceinline__ void load_lanes(const T* p, int64_t count, bool vector_ok, T (&v)[K]) {
  constexpr int kBytes = K * int(sizeof(T));
  if constexpr (kBytes == 8 || kBytes == 16) {
    using Vec = std::conditional_t<kBytes == 8, uint2, uint4>;
    if (vector_ok && count >= K) {
      const Vec a = *reinterpret_cast<const Vec*>(p);
      memcpy(v, &a, kBytes);
      return;
    }
  } else {
    static_assert(K == 1, "K = 1, or 4 lanes of 16- or 32-bit values");
  }
#pragma unroll
  for (int j = 0; j < K; ++j) v[j] = j < count ? p[j] : T{};
}

template <int K, typename T>
__device__ __forceinline__ void store_lanes(T* p, int64_t count, bool vector_ok, const T* v) {
  constexpr int kBytes = K * int(sizeof(T));
  if constexpr (kBytes == 8 || kBytes == 16) {
    using Vec = std::conditional_t<kBytes == 8, uint2, uint4>;
    if (vector_ok && count >= K) {
      Vec a;
      memcpy(&a, v, kBytes);
      *reinterpret_cast<Vec*>(p) = a;
      return;
    }
  } else {
    static_assert(K == 1, "K = 1, or 4 lanes of 16- or 32-bit values");
  }
#pragma unroll
  for (int j = 0; j < K; ++j)
    if (j < count) p[j] = v[j];
}

// The write pass's outputs f[j] = softmax_from_step2(v[j], S, log S) for a group of a thread's step-2 values.
// softmax divides by S with RowDivision (same bits); the group's rare values outside its proven range are redone
// by the IEEE division: one test and branch a group, not per element.
template <int N>
__device__ __forceinline__ void write_values(const float (&v)[N], const RowDivision& d, float log_s, bool log,
                                             float (&f)[N]) {
  if (log) {
#pragma unroll
    for (int j = 0; j < N; ++j) f[j] = softmax_from_step2(v[j], d.s, log_s, true);
    return;
  }
  bool ieee = false;
#pragma unroll
  for (int j = 0; j < N; ++j) {
    f[j] = d.fast(v[j]);
    ieee = ieee || d.ieee(v[j]);
  }
  if (ieee) {
#pragma unroll
    for (int j = 0; j < N; ++j)
      if (d.ieee(v[j])) f[j] = softmax_from_step2(v[j], d.s, log_s, false);
  }
}

// ---- N <= kSoftmaxSplitMinN: one block per row (short rows sharing it) ------------------------------------

// The chunks c of [lo, hi) of one row, f(c, xs) for each; `descending` picks the visiting order (only for
// elementwise passes). Loads are issued kSoftmaxBatchChunks at a time, before the calls (a row's chunks are
// otherwise one dependent round trip each; each lane still sees its elements in ascending order).
template <typename In, typename F>
__device__ __forceinline__ void chunk_range(const In* x, int64_t n, int64_t first, int64_t L, bool vec,
                                            int64_t lo, int64_t hi, bool descending, F&& f) {
  constexpr int U = kSoftmaxBatchChunks;
  for (int64_t b = 0; b < hi - lo; b += U) {
    if (b + U <= hi - lo) {
      In v[U][8];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = descending ? hi - 1 - (b + u) : lo + b + u;
        load8(x + c * L + first, n - (c * L + first), vec, v[u]);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        float xs[8];
        widen<8>(v[u], xs);
        f(descending ? hi - 1 - (b + u) : lo + b + u, xs);
      }
    } else {
      for (int64_t u = b; u < hi - lo; ++u) {
        const int64_t c = descending ? hi - 1 - u : lo + u;
        In v[8];
        load8(x + c * L + first, n - (c * L + first), vec, v);
        float xs[8];
        widen<8>(v, xs);
        f(c, xs);
      }
    }
  }
}

// One row = lane_threads(N) threads (threadIdx.x), rows_per_block(N) rows per block (threadIdx.y).
template <typename In, typename Out, typename Lane>
__global__ void __launch_bounds__(kMaxLaneThreads, kSoftmaxRowMinBlocksPerSm) row_kernel(SoftmaxParams p, bool vec_x, bool vec_y) {
  __shared__ float warp_max[kMaxRowsPerBlock][kMaxWarpsPerRow];
  __shared__ float warp_sums[kMaxRowsPerBlock][kMaxWarpsPerRow];
  const int64_t row = int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;  // invalid threads still reach the block barriers in row_tree
  const int64_t L = int64_t(blockDim.x) * kLaneVector;
  const int64_t first = int64_t(threadIdx.x) * kLaneVector;  // element first + c*L + j: lane first + j
  const int64_t chunks = valid && first < p.n ? (p.n - first + L - 1) / L : 0;
  const In* x = static_cast<const In*>(p.x) + (valid ? row * p.x_stride : 0);
  Out* y = static_cast<Out*>(p.y) + (valid ? row * p.n : 0);

  // Chunk 0 stays in registers (raw storage) from the first read to the write pass.
  In cache[8];
  float cache_xs[8];
  if (chunks > 0) load8(x + first, p.n - first, vec_x, cache);
  auto all_chunks = [&](auto&& f) {  // ascending: chunk 0 from the cache, then the rest
    if (chunks > 0) {
      widen<8>(cache, cache_xs);
      f(int64_t(0), cache_xs);
    }
    chunk_range(x, p.n, first, L, vec_x, 1, chunks, false, f);
  };

  // §4 step 1: M = the row maximum (lane maxima, then the §2 tree: any order gives the same M).
  float mx[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) mx[j] = -kInf;
  all_chunks([&](int64_t c, const float (&xs)[8]) {
    each_lane<8>(p.n - (c * L + first), [&](int j) { mx[j] = det_max(mx[j], xs[j]); });
  });
  const float m = row_tree(mx, warp_max[threadIdx.y], MaxOp{});
  // Step 2: S = lane sum (plain or Neumaier, ascending within the lane) of exp(x - M), then the §2 tree.
  Lane acc[8];
  all_chunks([&](int64_t c, const float (&xs)[8]) {
    each_lane<8>(p.n - (c * L + first), [&](int j) { acc[j].add(det_exp_nonpositive(xs[j] - m)); });
  });
  float lane_values[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) lane_values[j] = acc[j].value();
  const RowDivision div(row_tree(lane_values, warp_sums[threadIdx.y], SumOp{}));
  const float log_s = p.log ? det_log(div.s) : 0.0f;

  // Write pass, elementwise (§4). Chunks 1.. go from the row's end backwards (those read last are the likeliest
  // to still be in L2), chunk 0 from the cache last.
  auto emit = [&](int64_t c, const float (&xs)[8]) {
    const int64_t i = c * L + first;
    float v[8], f[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = softmax_step2(xs[j], m, p.log);
    write_values(v, div, log_s, p.log, f);
    Out o[8];
    narrow8(f, o);
    store8(y + i, p.n - i, vec_y, o);
  };
  chunk_range(x, p.n, first, L, vec_x, 1, chunks, true, emit);
  if (chunks > 0) {
    widen<8>(cache, cache_xs);
    emit(0, cache_xs);
  }
}

// ---- N > kSoftmaxSplitMinN: one row over the G blocks of a cluster ----------------------------------------

constexpr int kSplitThreads = kSoftmaxSplitBlockThreads;

// In-thread §2 subtree over a thread's K adjacent lanes, e.g. K = 4: (v0 (+) v1) (+) (v2 (+) v3).
template <int K, typename V, typename Op>
__device__ __forceinline__ V thread_tree(const V (&v)[K], Op op) {
  V t[K];
#pragma unroll
  for (int l = 0; l < K; ++l) t[l] = v[l];
#pragma unroll
  for (int width = K; width > 1; width /= 2)
#pragma unroll
    for (int l = 0; l < width / 2; ++l) t[l] = op(t[2 * l], t[2 * l + 1]);
  return t[0];
}

// The G blocks of a row's cluster exchange their block nodes through distributed shared memory, E times a kernel
// (the row's max, then its sum): thread 0 of every block pushes its node into slot [e][rank] of every block of the
// cluster with st.async, which completes on the receiving block's mbarrier bar[e]; a block waits on its own
// mbarrier only. No cluster barrier per exchange: cooperative groups' cluster sync is a GPU-scope memory fence
// (MEMBAR.ALL.GPU) plus an L1 invalidation per arrive / wait, ~40 % of the K = 1 kernel's warp time in ncu
// (docs/ops/softmax.md). Each exchange has its own mbarrier and slots, used once (phase 0), so nothing is reused
// and no block may need to wait for another before it exits: a block's waits complete only once every write into
// its slots has landed.
template <int G, int E>
struct ClusterExchange {
  alignas(8) uint64_t bar[E];
  float slot[E][G];
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

// Every thread of every block, first thing: thread 0 initialises the mbarriers (one arrival, its own, with the
// G node bytes expected), then the block arrives (relaxed) at the cluster barrier that exchange 0 waits on, so no
// node is pushed into a block before its mbarriers exist.
template <int G, int E>
__device__ __forceinline__ void exchange_init(ClusterExchange<G, E>& ex) {
  if (threadIdx.x == 0) {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(&ex.bar[e])) : "memory");
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(&ex.bar[e])),
                   "n"(G * int(sizeof(float)))
                   : "memory");
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
}

// The row's value of exchange e from this block's node (valid in thread 0): every block merges the G nodes
// bottom-up pairwise, lower rank first (same bits in every thread of every block; scalar equivalent for G = 4:
// r = (n0 (+) n1) (+) (n2 (+) n3)). Every thread of every block calls it, for e = 0, 1, ... in order.
template <int G, int E, typename Op>
__device__ __forceinline__ float exchange(ClusterExchange<G, E>& ex, int e, int rank, float node, Op op) {
  if (e == 0) asm volatile("barrier.cluster.wait.aligned;" ::: "memory");  // every block's mbarriers exist
  if (threadIdx.x == 0) {
    const uint32_t slot = smem_u32(&ex.slot[e][rank]), bar = smem_u32(&ex.bar[e]);
#pragma unroll
    for (int g = 0; g < G; ++g) {
      uint32_t remote_slot, remote_bar;
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote_slot) : "r"(slot), "r"(g));
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote_bar) : "r"(bar), "r"(g));
      asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];" ::"r"(remote_slot),
                   "r"(__float_as_uint(node)), "r"(remote_bar)
                   : "memory");
    }
  }
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], 0;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(smem_u32(&ex.bar[e]))
      : "memory");
  float v[G];
#pragma unroll
  for (int g = 0; g < G; ++g) v[g] = ex.slot[e][g];
  return thread_tree(v, op);
}

// The row's maximum (§4 step 1, exchange 0) from a thread's K lane maxima, or its sum (step 2, exchange 1) from its
// K lane values: the block's subtree over its threads' K-lane subtrees (row_tree: in-thread tree, warp butterflies,
// one barrier, butterflies over the warp nodes; `warp_nodes` is this reduction's own buffer), then the cluster's G
// block nodes.
template <int G, int K, typename Op>
__device__ __forceinline__ float row_reduce(const float (&lane_values)[K], float* warp_nodes,
                                            ClusterExchange<G, 2>& ex, int e, int rank, Op op) {
  return exchange(ex, e, rank, row_tree(lane_values, warp_nodes, op), op);
}

// One row = 4096 / K threads: G = softmax_split_ctas(K) cluster blocks of kSplitThreads, block rank g owning
// threads g*kSplitThreads .. (g+1)*kSplitThreads - 1, thread t lanes K*t .. K*t + K - 1 (element c*4096 + K*t + j
// is lane K*t + j).
// C > 0: every thread's chunks (at most C: N <= C * 4096) are loaded once, up front, and kept in registers; the
// step-2 value of each element (exp(x - M), or x - M for log_softmax) replaces it there for the write pass, so
// det_exp runs once per element. C == 0: each pass streams the row, kSoftmaxStreamElems elements per thread in
// flight (the last, partial batch too), and the write pass evaluates det_exp again (softmax_step2).
template <typename In, typename Out, typename Lane, int K, int C>
__global__ void __launch_bounds__(kSplitThreads, kSoftmaxSplitMinBlocksPerSm) split_kernel(SoftmaxParams p, bool vec_x, bool vec_y) {
  constexpr int G = softmax_split_ctas(K);
  static_assert(G > 1 && G <= kSoftmaxMaxClusterCtas && G * K * kSplitThreads == kMaxLanes, "cluster shape");
  constexpr int64_t L = kMaxLanes;
  static_assert(kSplitThreads <= kMaxLaneThreads, "row_tree's warp nodes");
  __shared__ float warp_nodes[2][kMaxWarpsPerRow];  // the max's, then the sum's
  __shared__ ClusterExchange<G, 2> ex;
  exchange_init(ex);
  const int rank = int(blockIdx.x % unsigned(G));
  const int64_t row = int64_t(blockIdx.x / unsigned(G));
  const int64_t first = (int64_t(rank) * kSplitThreads + threadIdx.x) * K;
  const int64_t chunks = first < p.n ? (p.n - first + L - 1) / L : 0;
  auto count = [&](int64_t c) { return p.n - (c * L + first); };  // the chunk's valid lanes (>= K: all K)
  const In* x = static_cast<const In*>(p.x) + row * p.x_stride;
  Out* y = static_cast<Out*>(p.y) + row * p.n;

  if constexpr (C > 0) {
    // chunks <= C here; every chunk but the last is whole: 32-bit counts (64-bit ones per chunk spill).
    const int nchunks = int(chunks);
    const int tail = nchunks > 0 ? int(min(p.n - ((chunks - 1) * L + first), int64_t(K))) : 0;
    auto lanes_in = [&](int c) { return c + 1 < nchunks ? K : (c + 1 == nchunks ? tail : 0); };
    // K = 1 (padded): the chunks past the thread's last are read as -inf and computed like the others (their max
    // term changes nothing, their exp is 0 and adds +0 to a lane sum that is never -0), so only the loads and stores
    // are predicated: no branch and convergence barrier per chunk (4 per element in the guarded form). The launcher
    // picks C, the smallest of kSoftmaxLongChunkCaps that holds the row, to bound the padded work.
    constexpr bool kPadded = K == 1;
    In raw[C][K];
    if constexpr (kPadded) {
      const In neg_inf = from_float<In>(-kInf);
#pragma unroll
      for (int c = 0; c < C; ++c) raw[c][0] = c < nchunks ? x[c * L + first] : neg_inf;
    } else {
#pragma unroll
      for (int c = 0; c < C; ++c)
        if (c < nchunks) load_lanes<K>(x + c * L + first, lanes_in(c), vec_x, raw[c]);
    }
    // §4 step 1: M = the row maximum (lane maxima, then the §2 tree: any order gives the same M).
    float mx[K];
#pragma unroll
    for (int j = 0; j < K; ++j) mx[j] = -kInf;
#pragma unroll
    for (int c = 0; c < C; ++c)
      if (kPadded || c < nchunks) {
        float xs[K];
        widen<K>(raw[c], xs);
        if constexpr (kPadded) mx[0] = det_max(mx[0], xs[0]);
        else each_lane<K>(lanes_in(c), [&](int j) { mx[j] = det_max(mx[j], xs[j]); });
      }
    const float m = row_reduce<G>(mx, warp_nodes[0], ex, 0, rank, MaxOp{});
    // Step 2: S = lane sum of exp(x - M), ascending within the lane; v keeps each element's step-2 value for
    // the write pass, replacing the raw value in registers.
    Lane acc[K];
    float v[C][K];
#pragma unroll
    for (int c = 0; c < C; ++c)
      if (kPadded || c < nchunks) {
        float xs[K], e[K];
        widen<K>(raw[c], xs);
#pragma unroll
        for (int j = 0; j < K; ++j) {
          const float z = xs[j] - m;
          e[j] = det_exp_nonpositive(z);
          v[c][j] = p.log ? z : e[j];
        }
        if constexpr (kPadded) acc[0].add(e[0]);
        else each_lane<K>(lanes_in(c), [&](int j) { acc[j].add(e[j]); });
      }
    float lane_values[K];
#pragma unroll
    for (int j = 0; j < K; ++j) lane_values[j] = acc[j].value();
    const RowDivision div(row_reduce<G>(lane_values, warp_nodes[1], ex, 1, rank, SumOp{}));
    const float log_s = p.log ? det_log(div.s) : 0.0f;
    // Write pass. The output rounding converts two values at a time (narrowk), so with K = 1 two chunks go
    // together.
    constexpr int P = K == 1 ? 2 : 1;
    static_assert(C % P == 0, "chunk pairs");
#pragma unroll
    for (int c = 0; c < C; c += P)
      if (kPadded || c < nchunks) {
        float w[P * K], f[P * K];
#pragma unroll
        for (int q = 0; q < P; ++q)
#pragma unroll
          for (int j = 0; j < K; ++j) w[q * K + j] = kPadded || c + q < nchunks ? v[c + q][j] : 0.0f;
        write_values(w, div, log_s, p.log, f);
        Out o[P * K];
        narrowk<P * K>(f, o);
#pragma unroll
        for (int q = 0; q < P; ++q)
          if (c + q < nchunks) {
            if constexpr (kPadded) y[(c + q) * L + first] = o[q];
            else store_lanes<K>(y + (c + q) * L + first, lanes_in(c + q), vec_y, o + q * K);
          }
      }
  } else {
    float mx[K];
#pragma unroll
    for (int j = 0; j < K; ++j) mx[j] = -kInf;
    Lane acc[K];
    float lane_values[K];
    // f(c, xs) for the thread's chunks c (ascending, or descending if `descending`: elementwise passes only).
    auto all_chunks = [&](bool descending, auto&& f) {
      constexpr int U = kSoftmaxStreamElems / K > 0 ? kSoftmaxStreamElems / K : 1;
      for (int64_t b = 0; b < chunks; b += U) {
        In raw[U][K];
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int64_t c = descending ? chunks - 1 - (b + u) : b + u;  // c < 0 or >= chunks: count <= 0
          load_lanes<K>(x + c * L + first, c >= 0 && c < chunks ? count(c) : 0, vec_x, raw[u]);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int64_t c = descending ? chunks - 1 - (b + u) : b + u;
          if (c >= 0 && c < chunks) {
            float xs[K];
            widen<K>(raw[u], xs);
            f(c, xs);
          }
        }
      }
    };
    all_chunks(false, [&](int64_t c, const float (&xs)[K]) {
      each_lane<K>(count(c), [&](int j) { mx[j] = det_max(mx[j], xs[j]); });
    });
    const float m = row_reduce<G>(mx, warp_nodes[0], ex, 0, rank, MaxOp{});
    all_chunks(false, [&](int64_t c, const float (&xs)[K]) {
      each_lane<K>(count(c), [&](int j) { acc[j].add(det_exp_nonpositive(xs[j] - m)); });
    });
#pragma unroll
    for (int j = 0; j < K; ++j) lane_values[j] = acc[j].value();
    const RowDivision div(row_reduce<G>(lane_values, warp_nodes[1], ex, 1, rank, SumOp{}));
    const float log_s = p.log ? det_log(div.s) : 0.0f;
    // Write pass, from the row's end backwards (read last: likeliest still in L2).
    all_chunks(true, [&](int64_t c, const float (&xs)[K]) {
      float v[K], f[K];
#pragma unroll
      for (int j = 0; j < K; ++j) v[j] = softmax_step2(xs[j], m, p.log);
      write_values(v, div, log_s, p.log, f);
      Out o[K];
      narrowk<K>(f, o);  // §1 rounding, the hardware's pairwise conversion (same bits as from_float)
      store_lanes<K>(y + c * L + first, count(c), vec_y, o);
    });
  }
}

template <typename Kernel>
int launch(Kernel kernel, dim3 grid, dim3 block, int cluster, const SoftmaxParams& p, bool vec_x, bool vec_y,
           void* stream) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = 0;
  config.stream = static_cast<cudaStream_t>(stream);
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(cluster);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  config.attrs = attr;
  config.numAttrs = cluster > 1 ? 1 : 0;
  return int(cudaLaunchKernelEx(&config, kernel, p, vec_x, vec_y));
}

template <typename In, typename Out, typename Lane, int K, int C>
int launch_split(const SoftmaxParams& p, bool vec_x, bool vec_y, void* stream) {
  constexpr int G = softmax_split_ctas(K);
  const int64_t blocks = p.rows * G;
  if (blocks > kMaxGridBlocks) return int(cudaErrorInvalidConfiguration);
  return launch(split_kernel<In, Out, Lane, K, C>, dim3(unsigned(blocks)), dim3(unsigned(kSplitThreads)), G,
                p, vec_x, vec_y, stream);
}

// The mapping, by N and the compensated mode only (constants.h).
template <typename In, typename Out>
int launch_softmax_impl(const SoftmaxParams& p, void* stream) {
  const bool vec_x = vector_aligned(p.x, p.x_stride, sizeof(In));
  const bool vec_y = vector_aligned(p.y, p.n, sizeof(Out));
  if (p.n <= kSoftmaxSplitMinN) {
    const int rpb = rows_per_block(p.n);
    const int64_t blocks = (p.rows + rpb - 1) / rpb;
    if (blocks > kMaxGridBlocks) return int(cudaErrorInvalidConfiguration);
    auto kernel = p.compensated ? row_kernel<In, Out, NeumaierLane> : row_kernel<In, Out, SumLane>;
    return launch(kernel, dim3(unsigned(blocks)), dim3(unsigned(lane_threads(p.n)), unsigned(rpb)), 1, p, vec_x,
                  vec_y, stream);
  }
  constexpr int kNear = kSoftmaxNearLanesPerThread, kLong = kSoftmaxLongLanesPerThread;
  // Compensated mode streams every row: its Neumaier lanes next to a register-held row would spill.
  if (p.compensated) return launch_split<In, Out, NeumaierLane, kNear, 0>(p, vec_x, vec_y, stream);
  if (p.n <= kSoftmaxRegisterChunks * kMaxLanes)
    return launch_split<In, Out, SumLane, kNear, kSoftmaxRegisterChunks>(p, vec_x, vec_y, stream);
  static_assert(kSoftmaxLongChunkCaps[3] == kSoftmaxLongRowChunks, "the largest cap holds every long row");
  if (p.n <= kSoftmaxLongChunkCaps[0] * kMaxLanes)
    return launch_split<In, Out, SumLane, kLong, kSoftmaxLongChunkCaps[0]>(p, vec_x, vec_y, stream);
  if (p.n <= kSoftmaxLongChunkCaps[1] * kMaxLanes)
    return launch_split<In, Out, SumLane, kLong, kSoftmaxLongChunkCaps[1]>(p, vec_x, vec_y, stream);
  if (p.n <= kSoftmaxLongChunkCaps[2] * kMaxLanes)
    return launch_split<In, Out, SumLane, kLong, kSoftmaxLongChunkCaps[2]>(p, vec_x, vec_y, stream);
  if (p.n <= kSoftmaxLongChunkCaps[3] * kMaxLanes)
    return launch_split<In, Out, SumLane, kLong, kSoftmaxLongChunkCaps[3]>(p, vec_x, vec_y, stream);
  return launch_split<In, Out, SumLane, kNear, 0>(p, vec_x, vec_y, stream);
}

}  // namespace softmax_detail

template <typename In, typename Out>
int launch_softmax(const SoftmaxParams& p, void* stream) {
  return softmax_detail::launch_softmax_impl<In, Out>(p, stream);
}

}  // namespace detops
