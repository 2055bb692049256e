// softmax / log_softmax on CUDA: docs/REDUCTION_ORDER.md §2 and §4 with the same shared arithmetic as the
// CPU kernel (SoftmaxState / merge / NeumaierLane / det_exp / det_log / softmax_apply), so CPU == CUDA bitwise.
// One row = lane_threads(N) threads in G = softmax_cluster_ctas(N) blocks of one thread-block cluster; G == 1:
// one block, short rows sharing it (rows_per_block(N)). All by N only; each row keeps its order. Plain CUDA only:
// the torch glue is softmax_cuda.cpp.
#include <cuda_runtime.h>
#include <cooperative_groups.h>
#include "../../reduce/lanes_cuda.cuh"
#include "softmax_launch.h"

namespace detops {
namespace {

namespace cg = cooperative_groups;

// Thread-block cluster primitives (one cluster = the blocks of one row). arrive has release, wait acquire
// semantics: a block's shared-memory writes before arrive are visible to the cluster after wait.
__device__ __forceinline__ void cluster_sync_all() { cg::this_cluster().sync(); }
__device__ __forceinline__ void cluster_arrive() { (void)cg::this_cluster().barrier_arrive(); }
__device__ __forceinline__ void cluster_wait() { cg::this_cluster().barrier_wait(); }
template <typename T>
__device__ __forceinline__ T* cluster_map(T* p, int rank) { return cg::this_cluster().map_shared_rank(p, rank); }

// Chunks loaded together: a thread issues the loads of kSoftmaxBatchChunks chunks before it uses the first (a
// row's chunks are otherwise one dependent round trip each). Load scheduling only: each lane still sees its
// elements in ascending order.
template <typename In>
constexpr int kBatchChunks = kSoftmaxBatchChunks;  // every dtype (v3's 64 bytes = 4 bf16 chunks spilled)

// SoftmaxState::add (reduce.h, §4) without a branch: the same det_exp argument and the same operations as its
// two branches, selected after the single det_exp call; x == -inf leaves the state as it is (x > m is false
// then, so m stays, and s is kept). Scalar equivalent:
//   if (x != -inf) x > m ? (s = s * exp(m - x) + 1, m = x) : (s = s + exp(x - m))
__device__ __forceinline__ void absorb(SoftmaxState& st, float x) {
  const bool up = x > st.m;
  const float e = det_exp(up ? st.m - x : x - st.m);
  const float s = up ? st.s * e + 1.0f : st.s + e;
  st.s = x == -kInf ? st.s : s;
  st.m = up ? x : st.m;
}

// f(j) for the lanes j < count of a chunk; whole chunks (count >= 8) without a per-lane test, so the 8
// independent lane updates form one straight-line block the compiler can interleave.
template <typename F>
__device__ __forceinline__ void each_lane(int64_t count, F&& f) {
  if (count >= 8) {
#pragma unroll
    for (int j = 0; j < 8; ++j) f(j);
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (j < count) f(j);
  }
}

template <typename In>
__device__ __forceinline__ void widen(const In (&v)[8], float (&xs)[8]) {
#pragma unroll
  for (int j = 0; j < 8; ++j) xs[j] = to_float(v[j]);
}

// The chunks c of [lo, hi) of one row, f(c, xs) for each; `descending` picks the visiting order (only for
// elementwise passes). Loads are issued kBatchChunks at a time, before the calls.
template <typename In, typename F>
__device__ __forceinline__ void chunk_range(const In* x, int64_t n, int64_t first, int64_t L, bool vec,
                                            int64_t lo, int64_t hi, bool descending, F&& f) {
  constexpr int U = kBatchChunks<In>;
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
        widen(v[u], xs);
        f(descending ? hi - 1 - (b + u) : lo + b + u, xs);
      }
    } else {
      for (int64_t u = b; u < hi - lo; ++u) {
        const int64_t c = descending ? hi - 1 - u : lo + u;
        In v[8];
        load8(x + c * L + first, n - (c * L + first), vec, v);
        float xs[8];
        widen(v, xs);
        f(c, xs);
      }
    }
  }
}

// §2 step 3 of one row over its cluster: every block of the cluster holds the tree node of its aligned lane
// range (rank g: lanes g*L/G .. (g+1)*L/G - 1); the G nodes are merged bottom-up pairwise, lower rank first, by
// every block (same bits everywhere). Scalar equivalent for G = 4: r = (n0 (+) n1) (+) (n2 (+) n3). `slot` is
// this block's shared-memory slot for its node. The caller must cluster_wait() before its next cluster_tree and
// before the block exits (the other blocks read `slot`).
template <typename V, typename Op>
__device__ __forceinline__ V cluster_tree(V node, V* slot, int G, Op op) {
  if (G == 1) return node;
  if (threadIdx.x == 0) *slot = node;
  cluster_sync_all();
  V v[kSoftmaxMaxClusterCtas];
#pragma unroll
  for (int g = 0; g < kSoftmaxMaxClusterCtas; ++g)
    if (g < G) v[g] = *cluster_map(slot, g);
  cluster_arrive();  // this block is done reading the others' slots; the caller's cluster_wait() waits for all
#pragma unroll
  for (int width = kSoftmaxMaxClusterCtas; width > 1; width /= 2)
    if (width <= G)  // the levels width = G, G/2, ..., 2 (G a power of 2)
#pragma unroll
      for (int l = 0; l < width / 2; ++l) v[l] = op(v[2 * l], v[2 * l + 1]);
  return v[0];
}

// One row = lane_threads(N) threads in G = softmax_cluster_ctas(N) blocks of one cluster (block rank g owns
// threads g*T/G .. (g+1)*T/G - 1 of the row); G == 1: one block, short rows sharing it (rows_per_block(N)).
template <typename In, typename Out, bool Compensated>
__global__ void __launch_bounds__(kMaxLaneThreads, 2)
softmax_kernel(SoftmaxParams p, bool vec_x, bool vec_y, int G) {
  __shared__ SoftmaxState warp_states[kMaxRowsPerBlock][kMaxWarpsPerRow];
  __shared__ float warp_max[kMaxRowsPerBlock][kMaxWarpsPerRow];
  __shared__ float warp_sums[kMaxRowsPerBlock][kMaxWarpsPerRow];
  __shared__ SoftmaxState node_state;
  __shared__ float node_max, node_sum;
  const int rank = G > 1 ? int(blockIdx.x % unsigned(G)) : 0;
  const int64_t row = G > 1 ? int64_t(blockIdx.x / unsigned(G)) : int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < p.rows;  // invalid threads still reach the block barriers in row_tree
  const int64_t L = int64_t(blockDim.x) * G * kLaneVector;
  const int64_t first = (int64_t(rank) * blockDim.x + threadIdx.x) * kLaneVector;  // element first + c*L + j: lane first + j
  const int64_t chunks = valid && first < p.n ? (p.n - first + L - 1) / L : 0;
  const In* x = static_cast<const In*>(p.x) + (valid ? row * p.x_stride : 0);
  Out* y = static_cast<Out*>(p.y) + (valid ? row * p.n : 0);

  // Chunk 0 stays in registers (raw storage) from the first read to the write pass.
  In cache[8];
  float cache_xs[8];
  if (chunks > 0) {
    load8(x + first, p.n - first, vec_x, cache);
  }
  auto all_chunks = [&](auto&& f) {  // ascending: chunk 0 from the cache, then the rest
    if (chunks > 0) {
      widen(cache, cache_xs);
      f(int64_t(0), cache_xs);
    }
    chunk_range(x, p.n, first, L, vec_x, 1, chunks, false, f);
  };

  float m, s;
  if constexpr (!Compensated) {
    // §4 online state per lane, ascending within the lane; lanes merged by the §2 tree.
    SoftmaxState st[8];
    all_chunks([&](int64_t c, const float (&xs)[8]) {
      each_lane(p.n - (c * L + first), [&](int j) { absorb(st[j], xs[j]); });
    });
    const SoftmaxState node = row_tree(st, warp_states[threadIdx.y], StateMergeOp{});
    const SoftmaxState total = cluster_tree(node, &node_state, G, StateMergeOp{});
    m = total.m;
    s = total.s;
  } else {
    // §4 compensated: M = row maximum (exact in any order), then S = Neumaier lane sum of exp(x - M).
    float mx[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) mx[j] = -kInf;
    all_chunks([&](int64_t c, const float (&xs)[8]) {
      each_lane(p.n - (c * L + first), [&](int j) { mx[j] = det_max(mx[j], xs[j]); });
    });
    m = cluster_tree(row_tree(mx, warp_max[threadIdx.y], MaxOp{}), &node_max, G, MaxOp{});
    NeumaierLane acc[8];
    all_chunks([&](int64_t c, const float (&xs)[8]) {
      each_lane(p.n - (c * L + first), [&](int j) { acc[j].add(det_exp(xs[j] - m)); });
    });
    float lane_values[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) lane_values[j] = acc[j].value();
    if (G > 1) cluster_wait();  // completes the previous cluster_tree's arrive before the next barrier phase
    s = cluster_tree(row_tree(lane_values, warp_sums[threadIdx.y], SumOp{}), &node_sum, G, SumOp{});
  }
  const float log_s = p.log ? det_log(s) : 0.0f;

  // Write pass, elementwise (§4). Chunks 1.. go from the row's end backwards (those read last are the likeliest
  // to still be in L2), chunk 0 from the cache last.
  auto emit = [&](int64_t c, const float (&xs)[8]) {
    const int64_t i = c * L + first;
    float f[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) f[j] = softmax_apply(xs[j], m, s, log_s, p.log);
    Out o[8];
    narrow8(f, o);
    store8(y + i, p.n - i, vec_y, o);
  };
  chunk_range(x, p.n, first, L, vec_x, 1, chunks, true, emit);
  if (chunks > 0) {
    widen(cache, cache_xs);
    emit(0, cache_xs);
  }
  if (G > 1) cluster_wait();  // no block exits while another may still read its node slot
}

}  // namespace

template <typename In, typename Out>
int launch_softmax(const SoftmaxParams& p, void* stream) {
  const int G = softmax_cluster_ctas(p.n);
  const int rpb = G > 1 ? 1 : rows_per_block(p.n);
  const dim3 block(unsigned(lane_threads(p.n) / G), unsigned(rpb));
  const dim3 grid(unsigned((p.rows + rpb - 1) / rpb * G));
  const bool vec_x = vector_aligned(p.x, p.x_stride, sizeof(In));
  const bool vec_y = vector_aligned(p.y, p.n, sizeof(Out));
  auto kernel = p.compensated ? softmax_kernel<In, Out, true> : softmax_kernel<In, Out, false>;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = 0;
  config.stream = static_cast<cudaStream_t>(stream);
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(G);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  config.attrs = attr;
  config.numAttrs = G > 1 ? 1 : 0;
  return int(cudaLaunchKernelEx(&config, kernel, p, vec_x, vec_y, G));
}

#define DETOPS_SOFTMAX_INSTANCE(In, Out) template int launch_softmax<In, Out>(const SoftmaxParams&, void*);
DETOPS_SOFTMAX_INSTANCE(float, float)
DETOPS_SOFTMAX_INSTANCE(float, bf16_t)
DETOPS_SOFTMAX_INSTANCE(float, fp16_t)
DETOPS_SOFTMAX_INSTANCE(bf16_t, float)
DETOPS_SOFTMAX_INSTANCE(bf16_t, bf16_t)
DETOPS_SOFTMAX_INSTANCE(bf16_t, fp16_t)
DETOPS_SOFTMAX_INSTANCE(fp16_t, float)
DETOPS_SOFTMAX_INSTANCE(fp16_t, bf16_t)
DETOPS_SOFTMAX_INSTANCE(fp16_t, fp16_t)
#undef DETOPS_SOFTMAX_INSTANCE

}  // namespace detops
