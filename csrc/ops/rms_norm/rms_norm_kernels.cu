// rms_norm / add_rms_norm on CUDA: docs/REDUCTION_ORDER.md §2–§3 with the same shared arithmetic as the CPU
// kernel (rms_norm_scale / rms_norm_apply's operations, SumLane / NeumaierLane), so CPU == CUDA bitwise.
// One row = lane_threads(N) threads (threadIdx.x); small rows share a block (rows_per_block(N)); each thread works
// on R consecutive rows (kRmsNormRowsPerThread for 16-bit inputs, else 1), each with its own order; grid =
// ceil(rows / (rows_per_block * R)): nothing depends on the row count or the SM count. Chunk 0 of each row stays
// in registers (as the norm's inputs, in input storage) from the sum pass to the write pass; longer rows re-read
// the rest (just loaded, so from L2). The order is the same either way. Plain CUDA only: the torch glue is
// rms_norm_cuda.cpp.
#include <cuda_runtime.h>
#include <cstring>
#include "../../reduce/lanes_cuda.cuh"
#include "rms_norm_launch.h"

namespace detops {
namespace {

// Per tensor: may its rows be accessed as 16-byte vectors (load width only, never the order).
struct RmsNormVector { bool x, res, w, y, x_sum; };

// The norm's 8 inputs of one chunk, in input storage: x, or round_to_input(x + residual) (§3 fused residual;
// the same operations as rms_norm_input, which widens this rounded value). With a residual, the chunk is also the
// x_sum output and is stored here.
template <typename In>
__device__ __forceinline__ void load_inputs(const In* x, const In* res, In* x_sum, int64_t count,
                                            const RmsNormVector& vec, In (&v)[8]) {
  load8(x, count, vec.x, v);
  if (res != nullptr) {
    In b[8];
    load8(res, count, vec.res, b);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = from_float<In>(to_float(v[j]) + to_float(b[j]));
    store8(x_sum, count, vec.x_sum, v);
  }
}

// §2 step 2 for one chunk: lane j adds x_j * x_j. Whole chunks without a per-lane test (straight-line code);
// only a row's last partial chunk tests its lanes.
template <typename In, typename Lane>
__device__ __forceinline__ void absorb(Lane (&acc)[8], const In (&v)[8], int64_t count) {
  if (count >= 8) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float xj = to_float(v[j]);
      acc[j].add(xj * xj);
    }
  } else {
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
template <typename In, typename W, typename Out>
__device__ __forceinline__ void emit(Out* y, bool has_w, const W (&wv)[8], int64_t count, const RmsNormVector& vec,
                                     NormWeightMode mode, const In (&v)[8], float r) {
  float h[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) h[j] = to_float(v[j]) * r;
  Out o[8];
  if (!has_w) {
    narrow8(h, o);
  } else {
    float out[8];
    if (mode == NormWeightMode::CastFirst) {  // round_out(float(round_in(h)) * w)
      In hr[8];
      narrow8(h, hr);
#pragma unroll
      for (int j = 0; j < 8; ++j) out[j] = to_float(hr[j]) * to_float(wv[j]);
    } else if (mode == NormWeightMode::Offset) {  // round_out(h * (1 + w))
#pragma unroll
      for (int j = 0; j < 8; ++j) out[j] = h[j] * (1.0f + to_float(wv[j]));
    } else {  // plain: round_out(h * w)
#pragma unroll
      for (int j = 0; j < 8; ++j) out[j] = h[j] * to_float(wv[j]);
    }
    narrow8(out, o);
  }
  store8(y, count, vec.y, o);
}

// Block = lane_threads(N) x rows_per_block(N) threads; each thread works on R rows (block-row y of block b holds
// rows (b * blockDim.y + y) * R + k, k < R), whose loads are in flight together and whose trees share one barrier.
// Which rows share a thread decides nothing about a row's order.
template <typename In, typename W, typename Out, typename Lane, int R>
__global__ void __launch_bounds__(kMaxLaneThreads, kRmsNormMinBlocksPerSm)
rms_norm_kernel(RmsNormParams p, RmsNormVector vec) {
  __shared__ float warp_sums[kMaxRowsPerBlock][R][kMaxWarpsPerRow];  // [block-row][its row k][warp]
  const int64_t L = int64_t(blockDim.x) * kLaneVector;
  const int64_t first = int64_t(threadIdx.x) * kLaneVector;  // element first + c*L + j sits in lane first + j
  const int64_t count0 = p.n - first;  // elements of chunk c from this thread's first lane: count0 - c*L
  const int64_t chunks_per_row = (p.n + L - 1) / L;
  // The thread's rows are consecutive: row0 + k. Rows past the end keep chunks = 0 (no memory access) and still
  // reach the block barrier in rows_tree.
  const int64_t row0 = (int64_t(blockIdx.x) * blockDim.y + threadIdx.y) * R;
  const int64_t at0 = row0 < p.rows ? row0 : 0;
  int64_t chunks[R];
#pragma unroll
  for (int k = 0; k < R; ++k) chunks[k] = row0 + k < p.rows ? chunks_per_row : 0;
  const In* x0 = static_cast<const In*>(p.x) + at0 * p.x_stride + first;
  const In* res0 = p.residual ? static_cast<const In*>(p.residual) + at0 * p.res_stride + first : nullptr;
  In* x_sum0 = p.x_sum ? static_cast<In*>(p.x_sum) + at0 * p.n + first : nullptr;
  Out* y0 = static_cast<Out*>(p.y) + at0 * p.n + first;
  auto x = [&](int k) { return x0 + k * p.x_stride; };
  auto res = [&](int k) { return res0 ? res0 + k * p.res_stride : nullptr; };
  auto x_sum = [&](int k) { return x_sum0 ? x_sum0 + k * p.n : nullptr; };
  auto y = [&](int k) { return y0 + k * p.n; };
  const W* w = p.w ? static_cast<const W*>(p.w) + first : nullptr;

  // Pass 1: lane l accumulates x_i * x_i for i = l, l + L, ... ascending (§2 step 2). Chunk 0 of the R rows is
  // loaded first (all in flight at once) and kept for the write pass.
  In cache[R][8];
#pragma unroll
  for (int k = 0; k < R; ++k)
    if (chunks[k] > 0) load_inputs(x(k), res(k), x_sum(k), count0, vec, cache[k]);
  // 16-bit weights of chunk 0 are loaded with the inputs (off the write pass's critical path); fp32 weights (8
  // registers) when they are used: preloading them spills at the 64-register cap.
  constexpr bool kPreloadW = sizeof(W) == 2;
  W w0[8];
  if (kPreloadW && w != nullptr && chunks[0] > 0) load8(w, count0, vec.w, w0);
  Lane acc[R][8];
#pragma unroll
  for (int k = 0; k < R; ++k) {
    if (chunks[k] > 0) absorb(acc[k], cache[k], count0);
    for (int64_t c = 1; c < chunks[k]; ++c) {
      In v[8];
      load_inputs(x(k) + c * L, res0 ? res(k) + c * L : nullptr, x_sum0 ? x_sum(k) + c * L : nullptr,
                  count0 - c * L, vec, v);
      absorb(acc[k], v, count0 - c * L);
    }
  }

  // §2 step 3, then §3: r = 1 / sqrt(ss / N + eps).
  float lane_values[R][8];
#pragma unroll
  for (int k = 0; k < R; ++k)
#pragma unroll
    for (int j = 0; j < 8; ++j) lane_values[k][j] = acc[k][j].value();
  float ss[R];
  rows_tree<R, 8>(lane_values, warp_sums[threadIdx.y], SumOp{}, ss);
  // One scale evaluation per warp for all R rows (IEEE div, sqrt, div): lane k evaluates row k's, then a shuffle
  // hands each row's value to every lane (every lane holds the same ss[k] bits, so any lane's result is the row's).
  float ss_mine = ss[0];
#pragma unroll
  for (int k = 1; k < R; ++k) ss_mine = threadIdx.x % kWarpSize == k ? ss[k] : ss_mine;
  const float r_mine = rms_norm_scale(ss_mine, p.n, p.eps);

  // Pass 2: y_i = rms_norm_apply(x_i, r, w_i) (§3), elementwise. Chunks past the first are re-read (from x_sum
  // when there is a residual: it holds the norm's inputs, written by this thread in pass 1).
#pragma unroll
  for (int k = 0; k < R; ++k) {
    if (chunks[k] == 0) continue;
    const float r = __shfl_sync(0xffffffffu, r_mine, k);
    if (!kPreloadW && w != nullptr && k == 0) load8(w, count0, vec.w, w0);
    emit<In, W, Out>(y(k), w != nullptr, w0, count0, vec, p.mode, cache[k], r);
    for (int64_t c = 1; c < chunks[k]; ++c) {
      In v[8];
      W wv[8];
      if (res0) load8(x_sum(k) + c * L, count0 - c * L, vec.x_sum, v);
      else load8(x(k) + c * L, count0 - c * L, vec.x, v);
      if (w != nullptr) load8(w + c * L, count0 - c * L, vec.w, wv);
      emit<In, W, Out>(y(k) + c * L, w != nullptr, wv, count0 - c * L, vec, p.mode, v, r);
    }
  }
}

}  // namespace

template <typename In, typename W, typename Out>
int launch_rms_norm(const RmsNormParams& p, void* stream) {
  const int rpb = rows_per_block(p.n);
  const dim3 block(unsigned(lane_threads(p.n)), unsigned(rpb));
  // 16-bit inputs: R rows per thread (R x 16 bytes in flight); fp32 chunks are 32 bytes already and compensated
  // lanes take twice the registers: one row per thread
  constexpr int kPlainRows = sizeof(In) == 2 ? kRmsNormRowsPerThread : 1;
  const int R = p.compensated ? 1 : kPlainRows;
  const dim3 grid(unsigned((p.rows + int64_t(rpb) * R - 1) / (int64_t(rpb) * R)));
  RmsNormVector vec;
  vec.x = vector_aligned(p.x, p.x_stride, sizeof(In));
  vec.res = p.residual != nullptr && vector_aligned(p.residual, p.res_stride, sizeof(In));
  vec.w = p.w != nullptr && vector_aligned(p.w, 0, sizeof(W));
  vec.y = vector_aligned(p.y, p.n, sizeof(Out));
  vec.x_sum = p.x_sum != nullptr && vector_aligned(p.x_sum, p.n, sizeof(In));
  auto kernel = p.compensated ? rms_norm_kernel<In, W, Out, NeumaierLane, 1>
                              : rms_norm_kernel<In, W, Out, SumLane, kPlainRows>;
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
