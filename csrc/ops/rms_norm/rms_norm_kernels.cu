// rms_norm / add_rms_norm on CUDA: docs/REDUCTION_ORDER.md §2–§3 with the same shared arithmetic as the CPU
// kernel (rms_norm_scale / rms_norm_apply's operations, SumLane / NeumaierLane), so CPU == CUDA bitwise.
// Thread t of a row owns lanes 8t..8t+7 (chunk c = elements c*L + 8t .. c*L + 8t + 7, L = lanes(N)); a row has
// threads_per_row(N) threads, a block holds whole rows (1-D, at least kMinBlockThreads threads) and each thread
// works on R consecutive rows, each with its own order; grid = ceil(rows / (rows per block * R)): nothing depends
// on the row count or the SM count. Two variants of one kernel, chosen by N, dtype and alignment (never the order):
//  - cached (C > 0): 16-bit inputs, N % 8 == 0, every tensor 16-byte aligned: each chunk of a thread is full or
//    empty, so all loads / stores are 16-byte vectors, and the C = ceil(N / L) chunks stay in registers from the
//    sum pass to the write pass;
//  - general (C == 0): any N, alignment and dtype; chunk 0 is kept in registers, longer rows re-read the rest
//    (just loaded, so from L2).
// Plain CUDA only: the torch glue is rms_norm_cuda.cpp.
#include <cuda_runtime.h>
#include <cstring>
#include <type_traits>
#include "../../reduce/lanes_cuda.cuh"
#include "rms_norm_launch.h"

namespace detops {
namespace {

// Per tensor: may its rows be accessed as 16-byte vectors (load width only, never the order).
struct RmsNormVector { bool x, res, w, y, x_sum; };

// Threads of one row: lane_threads(N), or fewer for short rows (N <= 128): pow2ceil(ceil(N / 8)), at least
// kRmsNormMinThreadsPerRow. The lanes of the dropped threads hold no element (their sums are +0), so each tree
// node that merges them is v + 0 == v (a lane sum is never -0; a NaN stays the canonical NaN): same bits.
__host__ __device__ inline int threads_per_row(int64_t n) {
  const int64_t full = lane_threads(n);
  int64_t t = kRmsNormMinThreadsPerRow;
  while (t < full && kLaneVector * t < n) t *= 2;
  return int(t);
}

// Loads / stores one chunk. kVec: the tensor is 16-byte aligned and N % 8 == 0, so a chunk is full (count >= 8)
// or empty (count <= 0): one vector or nothing. Otherwise load8 / store8 (vector or scalar, partial chunks).
template <bool kVec, typename T>
__device__ __forceinline__ void load_chunk(const T* p, int64_t count, bool vector_ok, T (&v)[8]) {
  if constexpr (kVec) {  // zero-filled as whole vectors, so the chunk stays packed in 16 bytes of registers
    static_assert(sizeof(T) == 2 || sizeof(T) == 4, "bf16/fp16/fp32 storage");
    constexpr int kVectors = sizeof(T) / 2;
    uint4 a[kVectors];
#pragma unroll
    for (int q = 0; q < kVectors; ++q) a[q] = make_uint4(0u, 0u, 0u, 0u);
    if (count > 0)
#pragma unroll
      for (int q = 0; q < kVectors; ++q) a[q] = reinterpret_cast<const uint4*>(p)[q];
    memcpy(v, a, sizeof(a));
  } else {
    load8(p, count, vector_ok, v);
  }
}
template <bool kVec, typename T>
__device__ __forceinline__ void store_chunk(T* p, int64_t count, bool vector_ok, const T (&v)[8]) {
  if constexpr (kVec) {
    if (count > 0) store8(p, 8, true, v);
  } else {
    store8(p, count, vector_ok, v);
  }
}

// to_float of 8 stored values. kPacked (bf16 chunks held as 16 bytes, the vector variant): the widened float is
// the 16 bits followed by 16 zero bits, so from each 32-bit pair the low element is word << 16 and the high one
// word & 0xffff0000 (one instruction each). Otherwise (chunks loaded element by element) to_float.
template <bool kPacked, typename T>
__device__ __forceinline__ void widen8(const T (&v)[8], float (&f)[8]) {
  if constexpr (kPacked && std::is_same_v<T, bf16_t>) {
    uint32_t pair[4];
    memcpy(pair, v, 16);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      f[2 * q] = __uint_as_float(pair[q] << 16);
      f[2 * q + 1] = __uint_as_float(pair[q] & 0xffff0000u);
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) f[j] = to_float(v[j]);
  }
}

// The norm's 8 inputs of one chunk, in input storage: x, or round_to_input(x + residual) (§3 fused residual;
// the same operations as rms_norm_input, which widens this rounded value). With a residual, the chunk is also the
// x_sum output and is stored here.
template <bool kVec, typename In>
__device__ __forceinline__ void load_inputs(const In* x, const In* res, In* x_sum, int64_t count,
                                            const RmsNormVector& vec, In (&v)[8]) {
  load_chunk<kVec>(x, count, vec.x, v);
  if (res != nullptr) {
    In b[8];
    load_chunk<kVec>(res, count, vec.res, b);
    float xf[8], bf[8];
    widen8<kVec>(v, xf);
    widen8<kVec>(b, bf);
    if constexpr (kVec) {
      float s[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) s[j] = xf[j] + bf[j];
      narrow8(s, v);  // == from_float<In> of each sum
    } else {  // fewer registers than narrow8 in the general variant
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = from_float<In>(xf[j] + bf[j]);
    }
    store_chunk<kVec>(x_sum, count, vec.x_sum, v);
  }
}

// §2 step 2 for one chunk: lane j adds x_j * x_j. Whole chunks without a per-lane test (straight-line code);
// an empty chunk adds nothing; only a row's last partial chunk tests its lanes.
template <typename In, typename Lane>
__device__ __forceinline__ void absorb(Lane (&acc)[8], const In (&v)[8], int64_t count) {
  if (count >= 8) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float xj = to_float(v[j]);
      acc[j].add(xj * xj);
    }
  } else if (count > 0) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float xj = to_float(v[j]);
      if (j < count) acc[j].add(xj * xj);
    }
  }
}

// §3 write pass for one chunk: y_j = rms_norm_apply(x_j, r, w_j), the same operations in the same order as
// rms_norm_apply (rms_norm.h), with the roundings of 8 elements done by narrow8 (bit-identical to from_float).
// wv = the chunk's 8 weights (when has_w). The weight mode is uniform across the grid; the branch is per chunk,
// outside the 8 elements.
template <bool kVec, typename In, typename W, typename Out>
__device__ __forceinline__ void emit(Out* y, bool has_w, const W (&wv)[8], int64_t count, const RmsNormVector& vec,
                                     NormWeightMode mode, const In (&v)[8], float r) {
  float h[8];
  widen8<kVec>(v, h);
#pragma unroll
  for (int j = 0; j < 8; ++j) h[j] = h[j] * r;
  Out o[8];
  if (!has_w) {
    narrow8(h, o);
  } else {
    float wf[8], out[8];
    if (mode == NormWeightMode::CastFirst) {  // round_out(float(round_in(h)) * w)
      In hr[8];
      narrow8(h, hr);
      float hf[8];
      widen8<kVec>(hr, hf);
      widen8<kVec>(wv, wf);
#pragma unroll
      for (int j = 0; j < 8; ++j) out[j] = hf[j] * wf[j];
    } else if (mode == NormWeightMode::Offset) {  // round_out(h * (1 + w))
      widen8<kVec>(wv, wf);
#pragma unroll
      for (int j = 0; j < 8; ++j) out[j] = h[j] * (1.0f + wf[j]);
    } else {  // plain: round_out(h * w)
      widen8<kVec>(wv, wf);
#pragma unroll
      for (int j = 0; j < 8; ++j) out[j] = h[j] * wf[j];
    }
    narrow8(out, o);
  }
  store_chunk<kVec>(y, count, vec.y, o);
}

// §2 step 3 for the R rows of this thread (the rows of one row slot: tpr threads, power of 2). Scalar equivalent:
// tree_reduce over the L lane sums (for (w = L; w > 1; w /= 2) acc[l] = acc[2l] + acc[2l+1]), realised as the
// in-thread tree over the thread's 8 adjacent lanes, XOR butterflies 1, 2, .. min(tpr, 32) / 2 (lower index first
// in every merge, so all threads of the row hold the same bits), then, for rows of several warps, the same
// butterflies over the warps' values (shared memory, one block barrier). Levels above tpr threads merge only
// empty lanes (threads_per_row). Every thread of the block must call it (uniform: tpr depends on N only).
template <int R>
__device__ __forceinline__ void rows_sum_tree(const float (&v)[R][8], int tpr, float (*smem)[kMaxWarpsPerRow],
                                              float (&out)[R]) {
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int k = 0; k < R; ++k)
    out[k] = ((v[k][0] + v[k][1]) + (v[k][2] + v[k][3])) + ((v[k][4] + v[k][5]) + (v[k][6] + v[k][7]));
  const int in_warp = tpr < kWarpSize ? tpr : kWarpSize;
  for (int off = 1; off < in_warp; off *= 2)
#pragma unroll
    for (int k = 0; k < R; ++k) out[k] = butterfly(out[k], lane, off, SumOp{});
  if (tpr > kWarpSize) {  // one row per block slot of tpr / 32 consecutive warps
    const int warps = tpr / kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    if (lane == 0)
#pragma unroll
      for (int k = 0; k < R; ++k) smem[k][warp] = out[k];
    __syncthreads();
    const int row_first_warp = warp & ~(warps - 1);
#pragma unroll
    for (int k = 0; k < R; ++k) out[k] = smem[k][row_first_warp + (lane & (warps - 1))];  // lanes >= warps: copies
    for (int off = 1; off < warps; off *= 2)
#pragma unroll
      for (int k = 0; k < R; ++k) out[k] = butterfly(out[k], lane, off, SumOp{});
  }
}

// Block = whole row slots of tpr = 2^log2_tpr threads; thread slot s of block b holds rows (b * slots + s) * R + k,
// k < R, whose loads are in flight together and whose trees share one barrier. Which rows share a thread decides
// nothing about a row's order. C > 0: the cached variant (kVec, C = ceil(N / L) chunks per row, plain lanes);
// C == 0: the general one. MinBlocks: resident blocks of kMaxLaneThreads threads per SM the register cap allows.
template <typename In, typename W, typename Out, typename Lane, int R, int C, bool kVec, int MinBlocks>
__global__ void __launch_bounds__(kMaxLaneThreads, MinBlocks)
rms_norm_kernel(RmsNormParams p, RmsNormVector vec, int log2_tpr, int64_t L, int64_t chunks_per_row) {
  static_assert(C == 0 || (kVec && std::is_same_v<Lane, SumLane>), "cached variant: full-or-empty chunks, sums");
  constexpr int kCached = C > 0 ? C : 1;  // chunks kept in registers from the sum pass to the write pass
  __shared__ float warp_sums[R][kMaxWarpsPerRow];  // [row k of the thread][warp of the block]
  const int tpr = 1 << log2_tpr;
  const int64_t first = int64_t(threadIdx.x & (tpr - 1)) * kLaneVector;  // element first + c*L + j: lane first + j
  const int64_t count0 = p.n - first;  // elements of chunk c from this thread's first lane: count0 - c*L
  const int64_t chunks = C > 0 ? C : chunks_per_row;
  // The thread's rows are consecutive: row0 + k. Rows past the end keep no chunks (no memory access) and still
  // reach the block barrier of the tree.
  const int64_t row0 = ((int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> log2_tpr) * R;  // slot index * R
  const int64_t at0 = row0 < p.rows ? row0 : 0;
  bool live[R];
#pragma unroll
  for (int k = 0; k < R; ++k) live[k] = row0 + k < p.rows;
  const In* x0 = static_cast<const In*>(p.x) + at0 * p.x_stride + first;
  const In* res0 = p.residual ? static_cast<const In*>(p.residual) + at0 * p.res_stride + first : nullptr;
  In* x_sum0 = p.x_sum ? static_cast<In*>(p.x_sum) + at0 * p.n + first : nullptr;
  Out* y0 = static_cast<Out*>(p.y) + at0 * p.n + first;
  auto x = [&](int k) { return x0 + k * p.x_stride; };
  auto res = [&](int k) { return res0 ? res0 + k * p.res_stride : nullptr; };
  auto x_sum = [&](int k) { return x_sum0 ? x_sum0 + k * p.n : nullptr; };
  auto y = [&](int k) { return y0 + k * p.n; };
  const W* w = p.w ? static_cast<const W*>(p.w) + first : nullptr;
  // count of chunk c of a live row (<= 0: no element of this thread); dead rows: 0
  auto count = [&](int k, int64_t c) { return live[k] ? count0 - c * L : int64_t(0); };

  // Pass 1: lane l accumulates x_i * x_i for i = l, l + L, ... ascending (§2 step 2). The cached chunks of the R
  // rows are loaded first (all in flight at once) and kept for the write pass.
  In cache[R][kCached][8];
#pragma unroll
  for (int k = 0; k < R; ++k)
#pragma unroll
    for (int c = 0; c < kCached; ++c)
      if (C > 0 || live[k])
        load_inputs<kVec>(x(k) + c * L, res0 ? res(k) + c * L : nullptr, x_sum0 ? x_sum(k) + c * L : nullptr,
                          count(k, c), vec, cache[k][c]);
  // 16-bit weights of the cached chunks are loaded with the inputs (off the write pass's critical path); fp32
  // weights (8 registers per chunk) when they are used: preloading them spills at the 64-register cap.
  constexpr bool kPreloadW = sizeof(W) == 2;
  W wc[kCached][8];
  if (kPreloadW && w != nullptr)
#pragma unroll
    for (int c = 0; c < kCached; ++c) load_chunk<kVec>(w + c * L, count0 - c * L, vec.w, wc[c]);
  float lane_values[R][8];
  if constexpr (C > 0) {
    // Cached chunks are zero-filled where empty, and SumLane's first add is 0 + x*x == x*x (a square is never -0),
    // later adds of an empty chunk's 0 leave the sum as it is (a lane sum is never -0): the same bits as absorb.
#pragma unroll
    for (int k = 0; k < R; ++k) {
      float xf[8];
      widen8<true>(cache[k][0], xf);
#pragma unroll
      for (int j = 0; j < 8; ++j) lane_values[k][j] = xf[j] * xf[j];
#pragma unroll
      for (int c = 1; c < C; ++c) {
        widen8<true>(cache[k][c], xf);
#pragma unroll
        for (int j = 0; j < 8; ++j) lane_values[k][j] = lane_values[k][j] + xf[j] * xf[j];
      }
    }
  } else {
    Lane acc[R][8];
#pragma unroll
    for (int k = 0; k < R; ++k) {
      absorb(acc[k], cache[k][0], count(k, 0));
      if (live[k])
        for (int64_t c = 1; c < chunks; ++c) {
          In v[8];
          load_inputs<kVec>(x(k) + c * L, res0 ? res(k) + c * L : nullptr, x_sum0 ? x_sum(k) + c * L : nullptr,
                            count(k, c), vec, v);
          absorb(acc[k], v, count(k, c));
        }
    }
#pragma unroll
    for (int k = 0; k < R; ++k)
#pragma unroll
      for (int j = 0; j < 8; ++j) lane_values[k][j] = acc[k][j].value();
  }

  // §2 step 3, then §3: r = 1 / sqrt(ss / N + eps).
  float ss[R];
  rows_sum_tree<R>(lane_values, tpr, warp_sums, ss);
  // One scale evaluation per slot for all R rows (IEEE div, sqrt, div): thread k of the slot evaluates row k's,
  // then a shuffle hands each row's value to every thread of the slot (they all hold the same ss[k] bits, so any
  // thread's result is the row's). tpr >= kRmsNormMinThreadsPerRow >= R.
  const int lane = threadIdx.x % kWarpSize;
  const int slot_lane0 = tpr < kWarpSize ? lane & ~(tpr - 1) : 0;
  float ss_mine = ss[0];
#pragma unroll
  for (int k = 1; k < R; ++k) ss_mine = lane - slot_lane0 == k ? ss[k] : ss_mine;
  const float r_mine = rms_norm_scale(ss_mine, p.n, p.eps);

  // Pass 2: y_i = rms_norm_apply(x_i, r, w_i) (§3), elementwise. Uncached chunks are re-read (from x_sum when
  // there is a residual: it holds the norm's inputs, written by this thread in pass 1).
  if (!kPreloadW && w != nullptr)
#pragma unroll
    for (int c = 0; c < kCached; ++c) load_chunk<kVec>(w + c * L, count0 - c * L, vec.w, wc[c]);
#pragma unroll
  for (int k = 0; k < R; ++k) {
    const float r = __shfl_sync(0xffffffffu, r_mine, slot_lane0 + k);
    if (!live[k]) continue;
#pragma unroll
    for (int c = 0; c < kCached; ++c)
      emit<kVec, In, W, Out>(y(k) + c * L, w != nullptr, wc[c], count(k, c), vec, p.mode, cache[k][c], r);
    if (C == 0)
      for (int64_t c = 1; c < chunks; ++c) {
        In v[8];
        W wv[8];
        if (res0) load_chunk<kVec>(x_sum(k) + c * L, count(k, c), vec.x_sum, v);
        else load_chunk<kVec>(x(k) + c * L, count(k, c), vec.x, v);
        if (w != nullptr) load_chunk<kVec>(w + c * L, count0 - c * L, vec.w, wv);
        emit<kVec, In, W, Out>(y(k) + c * L, w != nullptr, wv, count(k, c), vec, p.mode, v, r);
      }
  }
}

}  // namespace

template <typename In, typename W, typename Out>
int launch_rms_norm(const RmsNormParams& p, void* stream) {
  const int tpr = threads_per_row(p.n);
  int log2_tpr = 0;
  while ((1 << log2_tpr) < tpr) ++log2_tpr;
  const int block_threads = tpr > kMinBlockThreads ? tpr : kMinBlockThreads;
  const int64_t L = lanes(p.n);
  const int64_t chunks = (p.n + L - 1) / L;
  RmsNormVector vec;
  vec.x = vector_aligned(p.x, p.x_stride, sizeof(In));
  vec.res = p.residual != nullptr && vector_aligned(p.residual, p.res_stride, sizeof(In));
  vec.w = p.w != nullptr && vector_aligned(p.w, 0, sizeof(W));
  vec.y = vector_aligned(p.y, p.n, sizeof(Out));
  vec.x_sum = p.x_sum != nullptr && vector_aligned(p.x_sum, p.n, sizeof(In));
  // Every access a 16-byte vector of a full chunk (or none): N % 8 == 0 and every tensor aligned.
  const bool all_vector = p.n % kLaneVector == 0 && vec.x && vec.y && (p.w == nullptr || vec.w) &&
                          (p.residual == nullptr || (vec.res && vec.x_sum));
  // 16-bit inputs: R rows per thread (R x 16 bytes in flight); fp32 chunks are 32 bytes already and compensated
  // lanes take twice the registers: one row per thread.
  constexpr bool k16 = sizeof(In) == 2;
  constexpr int kPlainRows = k16 ? kRmsNormRowsPerThread : 1;
  using Kernel = void (*)(RmsNormParams, RmsNormVector, int, int64_t, int64_t);
  Kernel kernel = p.compensated ? rms_norm_kernel<In, W, Out, NeumaierLane, 1, 0, false, kRmsNormMinBlocksPerSm>
                                : rms_norm_kernel<In, W, Out, SumLane, kPlainRows, 0, false, kRmsNormMinBlocksPerSm>;
  int rows_per_thread = p.compensated ? 1 : kPlainRows;
  if constexpr (k16) {
    static_assert(kRmsNormMaxCachedChunks == 2, "one instantiation per cached chunk count");
    // fp16's software widening (numeric.h) needs more registers: it keeps the general variant's cap
    constexpr int kCachedMinBlocks = std::is_same_v<In, bf16_t> ? kRmsNormCachedMinBlocksPerSm : kRmsNormMinBlocksPerSm;
    constexpr int kShortMinBlocks = std::is_same_v<In, bf16_t> ? kRmsNormShortMinBlocksPerSm : kRmsNormMinBlocksPerSm;
    if (!p.compensated && all_vector && chunks == 1 && tpr < kWarpSize) {  // N <= 128
      kernel = rms_norm_kernel<In, W, Out, SumLane, kRmsNormShortRowsPerThread, 1, true, kShortMinBlocks>;
      rows_per_thread = kRmsNormShortRowsPerThread;
    } else if (!p.compensated && all_vector && chunks == 1) {
      kernel = rms_norm_kernel<In, W, Out, SumLane, kRmsNormCached1ChunkRowsPerThread, 1, true, kCachedMinBlocks>;
      rows_per_thread = kRmsNormCached1ChunkRowsPerThread;
    } else if (!p.compensated && all_vector && chunks == 2) {
      kernel = rms_norm_kernel<In, W, Out, SumLane, kRmsNormCached2ChunkRowsPerThread, 2, true, kCachedMinBlocks>;
      rows_per_thread = kRmsNormCached2ChunkRowsPerThread;
    }
  }
  const int64_t block_rows = int64_t(block_threads / tpr) * rows_per_thread;
  const int64_t blocks = (p.rows + block_rows - 1) / block_rows;
  if (blocks > kMaxGridBlocks) return int(cudaErrorInvalidConfiguration);
  const dim3 grid(static_cast<unsigned>(blocks));
  kernel<<<grid, dim3(unsigned(block_threads)), 0, static_cast<cudaStream_t>(stream)>>>(p, vec, log2_tpr, L, chunks);
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
