// attention, tensor-core chunk kernels for bf16/fp16 with D == Dv <= 128 (kernels of DK = 64 / 128 columns, a smaller
// head read as if zero-padded: §6b "Head dims"): REDUCTION_ORDER.md §6b.
// Pure CUDA (raw pointers, a stream); the torch glue is attention_cuda.cpp.
//
// A tile is 128 (query row, query head) slots of one kv head, slot s <-> pair P = tile*128 + s, query row P / G, head
// kvh*G + P % G (G = Hq / Hk), so a decode step (Q = 1) puts its G heads in one tile and reads K/V once per kv head.
// Two kernels, chosen per tile from the tile's own slot count (launch_typed):
//  - wgmma kernel (attention_tc_walk_kernel; tiles of >= kAttnTcWgMinSlots slots: every prefill tile but maybe the
//    last): grid (tile, kv head, batch); one CTA walks all chunks of its tile in ascending order and merges them
//    itself (no merge kernel). 256 threads = 2 warpgroups, 1 CTA per SM; warpgroup wg owns the m64 tile of slots
//    64wg .. 64wg+63 (warp w of the group: rows 16w .. 16w+15, lane: rows lane/4 and +8), S = Q Kᵀ by wgmma
//    m64n64k16 from shared memory, P·V by wgmma m64nDk16 with p̃ from registers; a 4-stage K/V ring advanced 2
//    blocks per barrier through the whole pass; group 1 starts each step when group 0's S is done.
//  - mma.sync kernel (attention_tc_chunk_kernel; smaller tiles: a short last tile): grid (chunk slot x tile, kv
//    head, batch), one CTA per chunk, then attention_tc_merge_kernel. 128 threads = 4 warps, 2 CTAs per SM
//    (FlashAttention-2 layout); warp w owns slots 32w .. 32w+31 as two m16 tiles sharing every K and V fragment.
//  - its small-tile variant (SMALL; tiles of <= kAttnTcSmallSlots slots: every decode step with G <= 16): the same
//    kernel and block body for warp 0's first m16 tile only (the only one with slots), Q staged for 16 rows, a
//    deeper K/V ring at the same 2 CTAs per SM, Q and the first K/V blocks requested before the row descriptors
//    arrive, and K/V blocks prefetched into L2 ahead of the ring (scheduling only: the same instructions per slot).
// In both, a lane holds the same C-fragment elements of its rows (the wgmma m64nN accumulator is, per warp, the
// mma.sync m16n8 fragment per n8 tile), the score / o chains are k16 steps in the same order, and a wgmma k16 step
// gives the bits of an mma.sync m16n8k16 step (scratch micro-test on the H100, 2 x 2^21 elements; the tests compare
// rows across the kernels), so every row gets the same bits from either kernel. Each warp keeps its slots' scores,
// block maxima and row sums in registers and quad shuffles, o (rows x D) in registers for the whole chunk, and p̃
// goes from the score accumulators to the P·V operand without shared memory. One __syncthreads per step of the
// K/V cp.async ring (1 block; 2 in the wgmma kernel).
// Per pass (the slots of one anchor, smallest first; slots of other anchors are masked and done in their own
// pass) and per chunk (mma.sync: grid x; wgmma: walked): K/V blocks of 64 keys anchored at the pass anchor are staged in shared memory
// (keys no slot of the pass reads are zero-filled), and each slot runs §6b:
//   S = Q Kᵀ: per score, k16 steps over d ascending, from 0; u = S (or attn_score(S): tc_expo); masked -> -inf;
//   block max m' (NaN-propagating), α = 2^(m·κ - m'·κ), p = 2^fma(u, κ, -m'·κ) rounded to T (cvt.rn), per quad
//   lane l_q = l_q*α + r_q (the lane's 16 p̃ in the fixed §6b order; l = (l_0 + l_1) + (l_2 + l_3) at the chunk's end),
//   o = k16 steps of P·V over the block's keys ascending, starting from o*α; a slot with no key in the block
//   is untouched; an m-tile none of whose slots has a key in the block is skipped (warp- / warpgroup-uniform).
// mma.sync: the chunk state (m, l, o) goes to the §6 workspace slot, or a slot whose keys fit in one chunk is
// finished here (merge into the empty state, y = O / L: the §6 step 4-5 functions attention_tc_merge_kernel calls);
// wgmma: each chunk state is merged into the row's running state as the chunk ends, with the same functions in the
// same ascending order. No slot's arithmetic depends on its index in the tile, the other slots, Q, B or the grid:
// prefill, chunked prefill and decode (one CTA per chunk = split-KV at anchored multiples of 1024) give the same bits.
//
// Files: attention_tc_ptx.cuh (inline-PTX wrappers; attention_wgmma.cuh, generated, the wgmma ones),
// attention_tc_layout.cuh (tile shapes, shared-memory layouts, staging, workspace layout), attention_tc_math.cuh
// (the §6b block math), attention_tc_kernels.cuh (the kernels); this file: the launchers.
#include <cuda_runtime.h>
#include <cstdint>
#include "attention_tc.h"
#include "attention_tc_kernels.cuh"

namespace detops {
namespace attn_tc {

// The mma.sync chunk kernel over tiles [tile_lo, tile_hi) (none: nothing launched).
template <typename T, int D, bool SMALL>
int launch_chunk(const AttentionLaunch& L, int64_t tile_lo, int64_t tile_hi) {
  if (tile_hi <= tile_lo) return 0;
  using SM = TcSmem<T, D, false, SMALL>;
  const AttentionParams& p = L.p;
  auto chunk = attention_tc_chunk_kernel<T, D, SMALL>;
  cudaError_t e = cudaFuncSetAttribute(chunk, cudaFuncAttributeMaxDynamicSharedMemorySize, int(SM::bytes));
  if (e != cudaSuccess) return int(e);
  if (SMALL) {  // 2 CTAs of ~110 KB per SM need the largest shared-memory carveout (a hint)
    e = cudaFuncSetAttribute(chunk, cudaFuncAttributePreferredSharedMemoryCarveout, int(cudaSharedmemCarveoutMaxShared));
    if (e != cudaSuccess) return int(e);
  }
  const dim3 grid(unsigned(L.chunk_slots * (tile_hi - tile_lo)), unsigned(p.Hk), unsigned(p.B < 65535 ? p.B : 65535));
  chunk<<<grid, kAttnTcThreads, SM::bytes, static_cast<cudaStream_t>(L.stream)>>>(L, tile_hi);
  return int(cudaGetLastError());
}

// The wgmma kernel over tiles [0, tiles): one CTA per (tile, kv head, batch entry).
template <typename T, int D>
int launch_walk(const AttentionLaunch& L, int64_t tiles) {
  if (tiles <= 0) return 0;
  using SM = TcSmem<T, D, true, false>;
  const AttentionParams& p = L.p;
  auto walk = attention_tc_walk_kernel<T, D>;
  const cudaError_t e = cudaFuncSetAttribute(walk, cudaFuncAttributeMaxDynamicSharedMemorySize, int(SM::bytes));
  if (e != cudaSuccess) return int(e);
  const dim3 grid(unsigned(tiles), unsigned(p.Hk), unsigned(p.B < 65535 ? p.B : 65535));
  walk<<<grid, kAttnTcWgThreads, SM::bytes, static_cast<cudaStream_t>(L.stream)>>>(L, tiles);
  return int(cudaGetLastError());
}

template <typename T, int D>
int launch_typed(const AttentionLaunch& L) {
  const AttentionParams& p = L.p;
  const int64_t G = p.Hq / p.Hk;
  // Kernel per tile, from the tile's own slot count: a tile of at least kAttnTcWgMinSlots slots (every tile but
  // possibly the last) runs the wgmma kernel, one of at most kAttnTcSmallSlots (a decode step's G <= 16 slots, a
  // short last tile) the mma.sync kernel's small-tile variant, one in between the mma.sync kernel. All give every
  // row the same bits (§6b; tests/test_attention_tc.py).
  const int64_t tiles = attention_tc_tiles(p), wg_tiles = attention_tc_wg_tiles(p);
  const int64_t last_slots = p.Q * G - (tiles - 1) * kSlots;
  int e = launch_walk<T, D>(L, wg_tiles);
  if (e != 0 || wg_tiles == tiles) return e;  // the wgmma kernel merges its own rows
  if (last_slots <= kAttnTcSmallSlots) e = launch_chunk<T, D, true>(L, wg_tiles, tiles);
  else e = launch_chunk<T, D, false>(L, wg_tiles, tiles);
  if (e != 0) return e;
  // The merge kernel for the mma.sync kernel's tile (its pairs of every kv head and batch entry).
  const int64_t pair_lo = wg_tiles * kSlots;
  constexpr int64_t kRowsPerCta = kAttnTcMergeThreads / 32;
  const int64_t mctas = (p.B * p.Hk * (p.Q * G - pair_lo) + kRowsPerCta - 1) / kRowsPerCta;
  const unsigned mgrid = unsigned(mctas < (int64_t(1) << 30) ? mctas : (int64_t(1) << 30));
  // Programmatic stream serialization: the merge kernel's launch overlaps the chunk kernel's tail; the merge kernel
  // starts with griddepcontrol.wait, so it still sees the chunk kernel's complete results.
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(mgrid);
  cfg.blockDim = dim3(kAttnTcMergeThreads);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = static_cast<cudaStream_t>(L.stream);
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  const cudaError_t me = cudaLaunchKernelEx(&cfg, attention_tc_merge_kernel<T, D>, L, pair_lo);
  if (me != cudaSuccess) return int(me);
  return int(cudaGetLastError());
}

}  // namespace attn_tc

int attention_tc_launch(const AttentionLaunch& L) {
  if (!attention_tc_supports(L.dtype, L.p.D, L.p.Dv)) return int(cudaErrorInvalidValue);
  const bool dk64 = attention_tc_dim(L.p.D) == 64;  // the kernels' head dim (§6b "Head dims")
  if (L.dtype == AttnDtype::BF16) return dk64 ? attn_tc::launch_typed<bf16_t, 64>(L) : attn_tc::launch_typed<bf16_t, 128>(L);
  return dk64 ? attn_tc::launch_typed<fp16_t, 64>(L) : attn_tc::launch_typed<fp16_t, 128>(L);
}

}  // namespace detops
