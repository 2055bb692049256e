// softmax / log_softmax on CUDA: docs/REDUCTION_ORDER.md §2 and §4 with the same shared arithmetic as the
// CPU kernel (SoftmaxState / merge / NeumaierLane / det_exp / det_log / softmax_apply), so CPU == CUDA bitwise.
// One row = lanes(N) / K threads, thread t owning the K adjacent lanes K*t .. K*t+K-1, in G blocks of one
// thread-block cluster (K = softmax_lanes_per_thread(N), G = softmax_cluster_ctas(N)); G == 1: one block, short
// rows sharing it (rows_per_block(N)). All by N only; each row keeps its order. Plain CUDA only: the torch glue is
// softmax_cuda.cpp.
#include <cuda_runtime.h>
#include <cooperative_groups.h>
#include <type_traits>
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

// f(j) for the lanes j < count of a chunk; whole chunks (count >= K) without a per-lane test, so the K
// independent lane updates form one straight-line block the compiler can interleave.
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

// One pass over a thread's chunks c = 0 .. chunks-1 of a row (chunk c = elements c*L + first .. + K-1), f(c, xs)
// for each, ascending or (`descending`, elementwise passes only) descending. Chunk 0 comes from `cache`. The loads
// of U = kSoftmaxBatchElems / K chunks are issued before the first of them is used, the last partial batch
// included (a row's chunks are otherwise one dependent memory round trip each). Load scheduling only: each lane
// still sees its elements in ascending order in the ascending passes.
template <int K, typename In, typename F>
__device__ __forceinline__ void chunk_pass(const In* x, int64_t n, int64_t first, int64_t L, bool vec, int64_t chunks,
                                           const In (&cache)[K], bool descending, F&& f) {
  constexpr int U = kSoftmaxBatchElems / K;
  auto batch = [&](int64_t b, auto whole) {  // chunks b .. b+U-1 of the visiting order; all < chunks if whole
    constexpr bool kWhole = decltype(whole)::value;
    In v[U][K];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = descending ? chunks - 1 - (b + u) : b + u;
      if (kWhole || b + u < chunks) {
        if (c == 0) {
#pragma unroll
          for (int j = 0; j < K; ++j) v[u][j] = cache[j];
        } else {
          loadk<K>(x + c * L + first, n - (c * L + first), vec, v[u]);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (kWhole || b + u < chunks) {
        float xs[K];
#pragma unroll
        for (int j = 0; j < K; ++j) xs[j] = to_float(v[u][j]);
        f(descending ? chunks - 1 - (b + u) : b + u, xs);
      }
    }
  };
  for (int64_t b = 0; b < chunks; b += U) {
    if (b + U <= chunks) batch(b, std::true_type{});
    else batch(b, std::false_type{});
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

// Block rank g of a row's cluster owns the row's threads g*B .. (g+1)*B - 1 (B = blockDim.x), i.e. the lanes
// g*L/G .. (g+1)*L/G - 1; G == 1: one block per row, short rows sharing it (blockDim.y rows).
template <typename In, typename Out, bool Compensated, int K>
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
  const int64_t L = int64_t(blockDim.x) * G * K;  // == lanes(N)
  const int64_t first = (int64_t(rank) * blockDim.x + threadIdx.x) * K;  // element first + c*L + j: lane first + j
  const int64_t chunks = valid && first < p.n ? (p.n - first + L - 1) / L : 0;
  const In* x = static_cast<const In*>(p.x) + (valid ? row * p.x_stride : 0);
  Out* y = static_cast<Out*>(p.y) + (valid ? row * p.n : 0);

  // Chunk 0 stays in registers (raw storage) from the first read to the write pass.
  In cache[K];
  if (chunks > 0) loadk<K>(x + first, p.n - first, vec_x, cache);
  auto pass = [&](bool descending, auto&& f) { chunk_pass<K>(x, p.n, first, L, vec_x, chunks, cache, descending, f); };

  float m, s;
  if constexpr (!Compensated) {
    // §4 online state per lane, ascending within the lane; lanes merged by the §2 tree.
    SoftmaxState st[K];
    pass(false, [&](int64_t c, const float (&xs)[K]) {
      each_lane<K>(p.n - (c * L + first), [&](int j) { absorb(st[j], xs[j]); });
    });
    const SoftmaxState node = row_tree(st, warp_states[threadIdx.y], StateMergeOp{});
    const SoftmaxState total = cluster_tree(node, &node_state, G, StateMergeOp{});
    m = total.m;
    s = total.s;
  } else {
    // §4 compensated: M = row maximum (exact in any order), then S = Neumaier lane sum of exp(x - M).
    float mx[K];
#pragma unroll
    for (int j = 0; j < K; ++j) mx[j] = -kInf;
    pass(false, [&](int64_t c, const float (&xs)[K]) {
      each_lane<K>(p.n - (c * L + first), [&](int j) { mx[j] = det_max(mx[j], xs[j]); });
    });
    m = cluster_tree(row_tree(mx, warp_max[threadIdx.y], MaxOp{}), &node_max, G, MaxOp{});
    NeumaierLane acc[K];
    pass(false, [&](int64_t c, const float (&xs)[K]) {
      each_lane<K>(p.n - (c * L + first), [&](int j) { acc[j].add(det_exp(xs[j] - m)); });
    });
    float lane_values[K];
#pragma unroll
    for (int j = 0; j < K; ++j) lane_values[j] = acc[j].value();
    if (G > 1) cluster_wait();  // completes the previous cluster_tree's arrive before the next barrier phase
    s = cluster_tree(row_tree(lane_values, warp_sums[threadIdx.y], SumOp{}), &node_sum, G, SumOp{});
  }
  const float log_s = p.log ? det_log(s) : 0.0f;

  // Write pass, elementwise (§4), from the row's end backwards (the chunks read last are the likeliest to still be
  // in L2), chunk 0 from the cache last.
  pass(true, [&](int64_t c, const float (&xs)[K]) {
    const int64_t i = c * L + first;
    float f[K];
#pragma unroll
    for (int j = 0; j < K; ++j) f[j] = softmax_apply(xs[j], m, s, log_s, p.log);
    Out o[K];
    narrowk<K>(f, o);
    storek<K>(y + i, p.n - i, vec_y, o);
  });
  if (G > 1) cluster_wait();  // no block exits while another may still read its node slot
}

template <typename In, typename Out, int K>
int launch_split(const SoftmaxParams& p, int G, void* stream) {
  const int64_t threads_per_row = lanes(p.n) / K;
  const int rpb = G > 1 ? 1 : rows_per_block(p.n);
  const dim3 block(unsigned(threads_per_row / G), unsigned(rpb));
  const dim3 grid(unsigned((p.rows + rpb - 1) / rpb * G));
  const bool vec_x = vector_aligned(p.x, p.x_stride, sizeof(In));
  const bool vec_y = vector_aligned(p.y, p.n, sizeof(Out));
  auto kernel = p.compensated ? softmax_kernel<In, Out, true, K> : softmax_kernel<In, Out, false, K>;
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

}  // namespace

template <typename In, typename Out>
int launch_softmax(const SoftmaxParams& p, void* stream) {
  const int K = softmax_lanes_per_thread(p.n), G = softmax_cluster_ctas(p.n);
  switch (K) {
    case 2: return launch_split<In, Out, 2>(p, G, stream);
    case 4: return launch_split<In, Out, 4>(p, G, stream);
    default: return launch_split<In, Out, 8>(p, G, stream);
  }
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
