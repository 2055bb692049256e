// Tensor-core attention (docs/REDUCTION_ORDER.md §6b): tile shapes, shared-memory layouts and staging, the lanes'
// ldmatrix addresses, a tile's slots and the workspace layout of attention_tc.cu's kernels. Where values live and
// how they travel only: nothing here changes a value.
#pragma once
#include <cuda_runtime.h>
#include <climits>
#include <cstdint>
#include "attention_kernels.cuh"  // RowKeys, read_row, first/last_chunk
#include "attention_tc.h"
#include "attention_tc_ptx.cuh"

namespace detops {
namespace attn_tc {

using attn_cuda::RowKeys;
using attn_cuda::read_row;
using attn_cuda::first_chunk;
using attn_cuda::last_chunk;

constexpr int kSlots = kAttnTcSlots;
constexpr int kThreads = kAttnTcThreads;  // the mma.sync kernel
constexpr int kBK = kAttnBlockKeys;
constexpr int kCK = kAttnChunkKeys;
constexpr int kWarps = kThreads / 32;
constexpr int kMTiles = kSlots / (16 * kWarps);  // m16 tiles (of the mma M = 16 slots) per warp
static_assert(kSlots == 16 * kMTiles * kWarps, "each warp owns kMTiles whole m16 tiles");
static_assert(kSlots <= kThreads, "slot descriptors are handled by one thread each");
static_assert(kBK == 64, "a block is 8 n8 score tiles = 4 k16 steps of P·V = the 4 quarters of §6b's l sums");
static_assert(kAttnTcStages >= 2 && kAttnTcWgStages >= 2, "the K/V ring needs a buffer being filled and one being read");
static_assert(kAttnTcWgThreads == 2 * 128 && kSlots == 2 * 64, "wgmma kernel: one warpgroup per m64 tile of the slots");

// Per kernel (WG: the wgmma kernel): threads and K/V ring stages.
template <bool WG>
struct TcShape {
  static constexpr int threads = WG ? kAttnTcWgThreads : kAttnTcThreads;
  static constexpr int stages = WG ? kAttnTcWgStages : kAttnTcStages;
};

// Per variant: K/V ring stages and the Q rows staged (SMALL: the mma.sync kernel's small-tile variant).
template <int D, bool WG, bool SMALL>
constexpr int kRingStages = SMALL ? kAttnTcSmallRingBytes / (2 * kAttnBlockKeys * D * 2) : TcShape<WG>::stages;
template <bool SMALL>
constexpr int kQRows = SMALL ? kAttnTcSmallSlots : kAttnTcSlots;
static_assert(kAttnTcSmallSlots == 16, "small-tile variant: its slots are warp 0's first m16 tile");
static_assert(kAttnTcSmallRingBytes / (2 * kAttnBlockKeys * 128 * 2) >= 3, "small-tile variant: a deeper ring than kAttnTcStages");

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// 8 elements (16 bytes) of T: one vector load where aligned, else element by element (same values).
template <typename T>
__device__ __forceinline__ uint4 load8(const T* src, bool vec) {
  if (vec) return __ldg(reinterpret_cast<const uint4*>(src));
  uint16_t e[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) e[i] = src[i].x;
  uint4 r;
  memcpy(&r, e, 16);
  return r;
}

// Shared-memory tiles of `rows` rows of D 16-bit elements, in 16-byte chunks. mma.sync kernel (WG = false): row r
// at r*D, its chunk c at c ^ (r & 7) (the 8 rows an ldmatrix reads at one logical chunk hit 8 different bank
// groups). wgmma kernel (WG = true): the 128-byte-swizzle canonical layout of the wgmma descriptors: panels of 64
// columns (panel c / 8 at (c / 8) * rows * 64), each row r of a panel 128 bytes at r*64, chunk c % 8 at
// (c % 8) ^ (r & 7) (for D = 64 the two layouts coincide).
template <int D, bool WG>
__device__ __forceinline__ int swz(int rows, int row, int chunk) {
  if constexpr (WG) return (chunk >> 3) * rows * 64 + row * 64 + (((chunk & 7) ^ (row & 7)) << 3);
  return row * D + ((chunk ^ (row & 7)) << 3);
}
template <int D, bool WG>
constexpr int kRowElems = WG ? 64 : D;  // elements between consecutive rows of a tile (of one panel)

// Stages the 64 keys of one block of one kv head (`src` = its first key row, rows `stride` elements apart) into a
// swizzled tile of D columns; rows outside [jlo, jhi) and columns from `cols` (the head's own dim, a multiple of 8,
// <= D: §6b "Head dims") on are zeros (never read from global memory). Thread t copies 16-byte chunk t % DC of rows
// t / DC + it * R. A whole block with aligned rows (the common case) takes a branch-free loop of cp.async.
template <typename T, int D, bool WG>
__device__ __forceinline__ void stage_block(uint16_t* dst, const T* src, int64_t stride, int jlo, int jhi, bool vec,
                                            int64_t cols) {
  constexpr int DC = D / 8;
  constexpr int NTH = TcShape<WG>::threads;
  constexpr int R = NTH / DC;  // rows per sweep of the CTA
  static_assert(NTH % DC == 0 && kBK % R == 0, "even split of the block's 16-byte chunks");
  const int c = threadIdx.x % DC, r0 = threadIdx.x / DC;
  if (c * 8 >= cols) jhi = jlo;  // a padding column of every row: zeros
  src += r0 * stride + c * 8;
  const int64_t step = int64_t(R) * stride;
  constexpr int RS = kRowElems<D, WG>;
  dst += swz<D, WG>(kBK, r0, c);  // row r0 + it*R has the same row & 7 (R is a multiple of 8), so the swizzle is fixed
  static_assert(R % 8 == 0, "the swizzle repeats every 8 rows");
  if (vec && jlo == 0 && jhi == kBK) {
#pragma unroll
    for (int it = 0; it < kBK / R; ++it, src += step) cp_async16(dst + it * R * RS, src);
    return;
  }
#pragma unroll
  for (int it = 0; it < kBK / R; ++it, src += step) {
    const int r = r0 + it * R;
    uint16_t* d = dst + it * R * RS;
    if (r < jlo || r >= jhi) {
      *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
    } else if (vec) {
      cp_async16(d, src);
    } else {
      *reinterpret_cast<uint4*>(d) = load8(src, false);
    }
  }
}

__device__ __forceinline__ uint32_t pack2(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

// The lane's ldmatrix addresses in a swizzled tile (bytes): row r at r*2D, its chunk c at ((c ^ (r & 7)) << 4).
// Every fragment row the lane addresses has r & 7 == lane & 7 (row bases are multiples of 8), and the chunk is
// 2c' + b (b = 0/1 per lane), so chunk 2c' + b of the row is at (((b ^ (lane & 7)) << 4) ^ (c' << 5)): one XOR
// per k16 step / column pair, the row offsets are immediates. Only x_* and the row bases live across the
// block loop (holding all 80 addresses spilled in v5).
struct TcLaneAddr {
  uint32_t q_row;   // Q tile: row wrow + (lane & 15)     (m-tile mt: + 16mt rows)
  uint32_t k_row;   // K tile: row (lane >> 4)*8 + (lane & 7)  (n16 pair np: + 16np rows)
  uint32_t v_row;   // V tile: row ((lane >> 3) & 1)*8 + (lane & 7)  (k16 step ks: + 16ks rows)
  uint32_t x_qv;    // chunk bit b = lane >> 4 (Q, V)
  uint32_t x_k;     // chunk bit b = (lane >> 3) & 1 (K)
};

// The dynamic shared memory from its first 1024-byte boundary (wgmma tiles need it; TcSmem::bytes has the slack).
__device__ __forceinline__ uint16_t* tc_smem_aligned() {
  extern __shared__ uint4 smem_u4[];
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem_u4));
  return reinterpret_cast<uint16_t*>(reinterpret_cast<char*>(smem_u4) + ((1024u - (a & 1023u)) & 1023u));
}

// Slot s of tile `tile` of kv head kvh: query row t_qi[s], query head t_h[s] (0 for s >= nslots, which have no pair).
// Returns nslots, the tile's slots with a pair. Thread tid < kSlots writes slot tid.
__device__ __forceinline__ int tc_tile_slots(const AttentionParams& p, int64_t tile, int64_t kvh, int64_t* t_qi,
                                             int64_t* t_h, int tid) {
  const int64_t G = p.Hq / p.Hk, pair0 = tile * kSlots;
  const int nslots = static_cast<int>(min64(kSlots, p.Q * G - pair0));
  if (tid < kSlots) {
    const int64_t P = pair0 + tid;
    t_qi[tid] = tid < nslots ? P / G : 0;
    t_h[tid] = tid < nslots ? kvh * G + P % G : 0;
  }
  return nslots;
}

// The Q rows of slots 0 .. rows-1 of batch entry b into the swizzled tile sQ (slots >= nslots and columns >= p.D:
// zeros); cp.async where aligned, committed with the caller's next group. Spread over nth threads.
template <typename T, int D, bool WG>
__device__ __forceinline__ void stage_q(uint16_t* sQ, int rows, const AttentionLaunch& L, int64_t b, const int64_t* t_qi,
                                        const int64_t* t_h, int nslots, int tid, int nth) {
  constexpr int DC = D / 8;
  const AttentionParams& p = L.p;
  const T* qg = static_cast<const T*>(p.q);
  for (int i = tid; i < rows * DC; i += nth) {
    const int s = i / DC, cc = i % DC;
    uint16_t* d = sQ + swz<D, WG>(rows, s, cc);
    const T* src = qg + b * p.q_bs + t_h[s] * p.q_hs + t_qi[s] * p.q_ss + cc * 8;
    if (s >= nslots || cc * 8 >= p.D) *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);  // padding: §6b "Head dims"
    else if (L.q_vec) cp_async16(d, src);
    else *reinterpret_cast<uint4*>(d) = load8(src, false);
  }
}

template <typename T, int D, bool WG, bool SMALL>
struct TcSmem {
  static constexpr int S = kRingStages<D, WG, SMALL>;
  static constexpr int q = 0;                    // kQRows x D            query rows of the tile (T)
  static constexpr int k = q + kQRows<SMALL> * D;  // S x kBK x D         K blocks (ring)
  static constexpr int v = k + S * kBK * D;      // S x kBK x D           V blocks
  static constexpr int elems = v + S * kBK * D;
  static constexpr size_t bytes = size_t(elems) * 2 + 1024;  // + the alignment of the tiles to 1024 bytes
  static_assert((kBK * D * 2) % 1024 == 0 && (kQRows<SMALL> * D * 2) % 1024 == 0, "every tile starts at a 1024-byte boundary");
};

// Per-pass values every thread reads: [0] anchor A, [1] / [2] min lo / max hi of the pass's slots with keys,
// [3] / [4] the keys [klo, khi) this CTA's chunk of the pass reads.
enum { kRedAnchor = 0, kRedLo, kRedHi, kRedKlo, kRedKhi, kRedN };

// The chunk states of pair P (>= pair_lo: the mma.sync tile) of kv head kvh, batch entry b: L.chunk_slots slots of
// (m, l, o[attention_tc_dim(Dv)]) after the wgmma kernel's running states (attention_tc_workspace_floats).
__device__ __forceinline__ float* tc_chunk_states(const AttentionLaunch& L, int64_t b, int64_t kvh, int64_t P) {
  const AttentionParams& p = L.p;
  const int64_t pair_lo = attention_tc_wg_tiles(p) * kSlots, npr = p.Q * (p.Hq / p.Hk) - pair_lo;
  return L.workspace + p.B * p.Q * p.Hq * attention_tc_walk_stride(p) +
         ((b * p.Hk + kvh) * npr + (P - pair_lo)) * L.chunk_slots * (attention_tc_dim(p.Dv) + 2);
}

}  // namespace attn_tc
}  // namespace detops
