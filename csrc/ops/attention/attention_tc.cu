// attention, tensor-core chunk kernels for bf16/fp16 with D == Dv in {64, 128}: REDUCTION_ORDER.md §6b.
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
#include <cuda_runtime.h>
#include <climits>
#include <cstdint>
#include <type_traits>
#include "attention_kernels.cuh"  // RowKeys, read_row, first/last_chunk
#include "attention_tc.h"
#include "attention_wgmma.cuh"

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

// §6b exponent (v3). A block's scores are kept in "u" units and exponentiated in base 2 as p = 2^(u·κ - m'·κ):
//  raw (no softcap and scale·log2 e > 0 in fp32, the common case): u = the S accumulator itself (the dot product),
//    κ = scale·log2 e rounded to fp32 (mul.rn), so a score costs no instruction before the max;
//  otherwise u = attn_score(acc, scale, softcap) (§6 step 1) and κ = log2 e.
// The max is the same in either unit (u ↦ u·scale is monotone for scale > 0), and the chunk state's m goes to the
// §6 merge in score units: m·scale rounded (raw) or m (tc_chunk_m). The choice reads only scale and softcap.
constexpr float kTcLog2e = 1.44269504088896340736f;  // 0x3FB8AA3B
struct TcExpo {
  float scale, softcap, kappa;
  bool raw;
};
__device__ __forceinline__ TcExpo tc_expo(float scale, float softcap) {
  const float k = __fmul_rn(scale, kTcLog2e);
  const bool raw = !(softcap > 0.0f) && k > 0.0f;
  return TcExpo{scale, softcap, raw ? k : kTcLog2e, raw};
}
__device__ __forceinline__ float tc_chunk_m(float m, const TcExpo& x) { return x.raw ? __fmul_rn(m, x.scale) : m; }
// 2^y by the hardware: ex2.approx.ftz.f32 (MUFU.EX2; results below 2^-126 flush to +0, 2^-inf = +0, NaN -> NaN).
// Inline PTX pins it. Every in-chunk α and p of the tensor-core path goes through it (prefill, chunked prefill,
// decode), with y = fma(u, κ, -m'·κ) (p: one fused rounding) or m·κ - m'·κ (α).
__device__ __forceinline__ float tc_ex2(float y) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(y));
  return r;
}
// The block max: NaN-propagating (a NaN score makes the row NaN, as it does through its p), otherwise exact, so
// the order of the tree is immaterial.
__device__ __forceinline__ float tc_max(float a, float b) {
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

// p̃ = round_T(p) for two values (RNE, cvt.rn; lo in the low 16 bits), and back to fp32 (exact).
template <bool BF>
__device__ __forceinline__ uint32_t round_pack(float lo, float hi) {
  uint32_t r;
  if constexpr (BF) asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  else asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
template <bool BF>
__device__ __forceinline__ float lo_float(uint32_t r) {
  if constexpr (BF) return __uint_as_float(r << 16);
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(static_cast<unsigned short>(r & 0xffffu)));
  return f;
}
template <bool BF>
__device__ __forceinline__ float hi_float(uint32_t r) {
  if constexpr (BF) return __uint_as_float(r & 0xffff0000u);
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(static_cast<unsigned short>(r >> 16)));
  return f;
}

// mma.m16n8k16, fp32 accumulate in place: c = c + A·B (the hardware's k16 sum). A pure function of its
// registers (not volatile), so the compiler may interleave independent chains.
template <bool BF>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (BF) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
// commit_group + wait_group 0: also covers copies not yet committed to a group (wait_group waits only for groups).
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// L2 prefetch of keys [k0, k1) of one kv head (rows `stride` elements apart; each row's D elements as 128-byte
// lines), spread over the CTA. A hint: nothing moves into the CTA and no value depends on it.
template <int D, typename T>
__device__ __forceinline__ void prefetch_keys_l2(const T* base, int64_t stride, int64_t k0, int64_t k1, int t, int nth) {
  constexpr int LPR = (D * 2 + 127) / 128;  // lines per key row
  const int n = static_cast<int>(k1 - k0) * LPR;
  for (int x = t; x < n; x += nth) {
    const T* a = base + (k0 + x / LPR) * stride + (x % LPR) * 64;
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(a));
  }
}

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
// swizzled tile; rows outside [jlo, jhi) are zeros (never read from global memory). Thread t copies 16-byte
// chunk t % DC of rows t / DC + it * R. A whole block with aligned rows (the common case) takes a branch-free
// loop of cp.async.
template <typename T, int D, bool WG>
__device__ __forceinline__ void stage_block(uint16_t* dst, const T* src, int64_t stride, int jlo, int jhi, bool vec) {
  constexpr int DC = D / 8;
  constexpr int NTH = TcShape<WG>::threads;
  constexpr int R = NTH / DC;  // rows per sweep of the CTA
  static_assert(NTH % DC == 0 && kBK % R == 0, "even split of the block's 16-byte chunks");
  const int c = threadIdx.x % DC, r0 = threadIdx.x / DC;
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

// ldmatrix on a shared-memory address (bytes, the shared window).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

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

// §6b step 2 for one m16 tile of a thread's slots (h = 0, 1: rows lane/4 and +8 of the tile; element e of n8 tile
// j holds slot e >> 1, key 8j + 2qd + (e & 1)), from the tile's S accumulators s: u (and the mask: keys outside
// the slot's [jlo, jhi) get -inf), the block max (the thread's 16 scores as a pairwise tree, then the quad),
// m' = max(m, bm), α = 2^(m·κ - m'·κ), p̃ = round_T(2^fma(u, κ, -m'·κ)) packed straight into the P·V A operand pa
// (k16 step ks = keys 16ks .. 16ks+15 = tiles 2ks: a0 slot 0, a1 slot 1, and 2ks+1: a2, a3), and the quad lane's
// share of l in the §6b order: quarter w = ks, t_w = ((p̃[16w+2q] + p̃[16w+2q+1]) + p̃[16w+8+2q]) + p̃[16w+8+2q+1]
// (the leading 0 + of §6b is exact: p̃ >= +0), r = (t_0 + t_1) + (t_2 + t_3), l_q = l_q*α + r. A slot that skips
// the block (no key of it here, or m' = -inf) keeps m and l and gets α = 1 and p̃ = 0 (its u are all -inf).
// Both kernels call this: the mma.sync C fragment and a warp's rows of the wgmma accumulator are the same layout
// (row0: the first slot of the m16 tile). RAW = x.raw, a template argument: the wgmma kernel branches on it once
// per step (a run-time branch inside, next to in-flight wgmma accumulators, serializes them).
template <bool BF, bool RAW>
__device__ __forceinline__ void tc_softmax_tile(float (&s)[kBK / 8][4], float (&m)[2], float (&l)[2],
                                                uint32_t (&pa)[4][4], float (&alpha)[2], bool (&skip)[2],
                                                const bool whole, const int i, const int* s_rlo, const int* s_rhi,
                                                const int row0, const int lane, const TcExpo& x) {
  constexpr int NB = kBK / 8;
  const int qd = lane & 3;
  if constexpr (!RAW) {
#pragma unroll
    for (int j = 0; j < NB; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = attn_score(s[j][e], x.scale, x.softcap);
  }
  int jlo[2] = {0, 0}, jhi[2] = {kBK, kBK};  // the slots' keys of block i (empty: not visited, §6 step 2)
  if (!whole) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int slot = row0 + (lane >> 2) + 8 * h;
      jlo[h] = min(max(s_rlo[slot] - i * kBK, 0), kBK);
      jhi[h] = min(max(s_rhi[slot] - i * kBK, 0), kBK);
    }
#pragma unroll
    for (int j = 0; j < NB; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = 8 * j + 2 * qd + (e & 1), h = e >> 1;
        s[j][e] = (key >= jlo[h] && key < jhi[h]) ? s[j][e] : -kInf;
      }
  }
  float mx[2][NB];
#pragma unroll
  for (int j = 0; j < NB; ++j) {
    mx[0][j] = tc_max(s[j][0], s[j][1]);
    mx[1][j] = tc_max(s[j][2], s[j][3]);
  }
#pragma unroll
  for (int w = NB / 2; w >= 1; w /= 2)
#pragma unroll
    for (int j = 0; j < w; ++j) {
      mx[0][j] = tc_max(mx[0][j], mx[0][j + w]);
      mx[1][j] = tc_max(mx[1][j], mx[1][j + w]);
    }
  float nmk[2];  // -m'·κ (0 for a skipped slot: its u are -inf, so p = 2^-inf = 0)
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float bmax = mx[h][0];
    bmax = tc_max(bmax, __shfl_xor_sync(0xffffffffu, bmax, 1));
    bmax = tc_max(bmax, __shfl_xor_sync(0xffffffffu, bmax, 2));
    const float m_new = tc_max(m[h], bmax);
    skip[h] = jlo[h] >= jhi[h] || m_new == -kInf;
    const float mk_new = __fmul_rn(m_new, x.kappa);
    alpha[h] = skip[h] ? 1.0f : tc_ex2(__fsub_rn(__fmul_rn(m[h], x.kappa), mk_new));
    nmk[h] = skip[h] ? 0.0f : -mk_new;
    m[h] = skip[h] ? m[h] : m_new;
  }
  float quarter[2][4];
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
#pragma unroll
    for (int jj = 0; jj < 2; ++jj) {
      const float* sj = s[2 * ks + jj];
      pa[ks][2 * jj] = round_pack<BF>(tc_ex2(__fmaf_rn(sj[0], x.kappa, nmk[0])), tc_ex2(__fmaf_rn(sj[1], x.kappa, nmk[0])));
      pa[ks][2 * jj + 1] = round_pack<BF>(tc_ex2(__fmaf_rn(sj[2], x.kappa, nmk[1])), tc_ex2(__fmaf_rn(sj[3], x.kappa, nmk[1])));
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float t = lo_float<BF>(pa[ks][h]) + hi_float<BF>(pa[ks][h]);
      t = t + lo_float<BF>(pa[ks][2 + h]);
      quarter[h][ks] = t + hi_float<BF>(pa[ks][2 + h]);
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float r = (quarter[h][0] + quarter[h][1]) + (quarter[h][2] + quarter[h][3]);
    l[h] = skip[h] ? l[h] : attn_l_update(l[h], alpha[h], r);
  }
}

// One 64-key block for the warp's m-tiles in MASK (bit mt set: m-tile mt has keys here; the others have none
// and are not touched, which is what §6 step 2 does to them anyway). A slot's arithmetic never reads another
// slot, so which m-tiles run changes no bit of the slots that do.
template <bool BF, int D, int MASK, int MT = kMTiles>
__device__ __forceinline__ void tc_block(float (&o)[MT][D / 8][4], float (&m)[2 * MT], float (&l)[2 * MT],
                                         const uint32_t q_base, const uint32_t k_base, const uint32_t v_base,
                                         const TcLaneAddr& ad, const bool whole, const int i, const int* s_rlo,
                                         const int* s_rhi, const int wrow, const int lane, const TcExpo& x) {
  constexpr int KS = D / 16;  // k16 steps of S = Q Kᵀ
  constexpr int NT = D / 8;   // n8 tiles of o (all columns: the warp owns whole rows)
  constexpr int NB = kBK / 8; // n8 tiles of S (the block's 64 keys)
  constexpr int SL = 2 * MT;
  constexpr uint32_t RB = 2 * D;  // bytes per tile row
  auto act = [](int mt) { return ((MASK >> mt) & 1) != 0; };
  // Opaque copies, made per block: the compiler cannot hoist the ~80 derived addresses out of the block loop
  // (where they would occupy registers or spill); each is 1-2 integer ops next to its ldmatrix.
  uint32_t q_row = ad.q_row, k_row = ad.k_row, v_row = ad.v_row, x_qv = ad.x_qv, x_k = ad.x_k;
  asm volatile("" : "+r"(q_row), "+r"(k_row), "+r"(v_row), "+r"(x_qv), "+r"(x_k));

  // §6b S: acc = 0; acc = mma_k16(acc, q[16kk..], k[16kk..]), kk ascending. Tile j = keys 8j .. 8j+7;
  // each K fragment feeds the active m-tiles.
  float s[MT][NB][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NB; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mt][j][e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    uint32_t qf[MT][4];  // A: the m-tile's 16 query rows, d = 16kk ..
    const uint32_t xq = x_qv ^ uint32_t(kk << 5), xk = x_k ^ uint32_t(kk << 5);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      if (act(mt)) ldsm_x4(qf[mt], q_base + (q_row + mt * 16 * RB) + xq);
#pragma unroll
    for (int np = 0; np < NB / 2; ++np) {
      uint32_t kf[4];  // B: keys 16np .. 16np+15
      ldsm_x4(kf, k_base + (k_row + np * 16 * RB) + xk);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if (!act(mt)) continue;
        mma16816<BF>(s[mt][2 * np], qf[mt], kf[0], kf[1]);
        mma16816<BF>(s[mt][2 * np + 1], qf[mt], kf[2], kf[3]);
      }
    }
  }
  // §6b step 2 per active m-tile (the slots' keys of block i are [jlo, jhi): empty when the slot does not visit
  // it, §6 step 2; whole: all).
  float alpha[SL];
  bool skip[SL];
  uint32_t pa[MT][4][4];
  using Pair = float[2];
  using Flags = bool[2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    if (!act(mt)) continue;
    Pair& mm = *reinterpret_cast<Pair*>(m + 2 * mt);
    Pair& ll = *reinterpret_cast<Pair*>(l + 2 * mt);
    Pair& aa = *reinterpret_cast<Pair*>(alpha + 2 * mt);
    Flags& sk = *reinterpret_cast<Flags*>(skip + 2 * mt);
    if (x.raw) tc_softmax_tile<BF, true>(s[mt], mm, ll, pa[mt], aa, sk, whole, i, s_rlo, s_rhi, wrow + 16 * mt, lane, x);
    else tc_softmax_tile<BF, false>(s[mt], mm, ll, pa[mt], aa, sk, whole, i, s_rlo, s_rhi, wrow + 16 * mt, lane, x);
  }
  bool any_skip = false;
#pragma unroll
  for (int k = 0; k < SL; ++k) any_skip = any_skip || (act(k >> 1) && skip[k]);
  // §6b o: acc = o*α; acc = mma_k16(acc, p̃[16ks..], v[16ks..]), ks ascending; o = acc (skipped slots keep
  // o). Two copies of the loop (no slot skips / some do), so the branch is taken once per block; each V
  // fragment feeds the active m-tiles.
  if (!__any_sync(0xffffffffu, any_skip)) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      if (!act(mt)) continue;
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[mt][n][e] = o[mt][n][e] * alpha[2 * mt + (e >> 1)];
    }
#pragma unroll
    for (int cp = 0; cp < NT / 2; ++cp) {
      const uint32_t xv = x_qv ^ uint32_t(cp << 5);
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        uint32_t vf[4];
        ldsm_x4_trans(vf, v_base + (v_row + ks * 16 * RB) + xv);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          if (!act(mt)) continue;
          mma16816<BF>(o[mt][2 * cp], pa[mt][ks], vf[0], vf[1]);
          mma16816<BF>(o[mt][2 * cp + 1], pa[mt][ks], vf[2], vf[3]);
        }
      }
    }
  } else {
#pragma unroll
    for (int cp = 0; cp < NT / 2; ++cp) {
      const uint32_t xv = x_qv ^ uint32_t(cp << 5);
      float acc[MT][2][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if (!act(mt)) continue;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          acc[mt][0][e] = o[mt][2 * cp][e] * alpha[2 * mt + (e >> 1)];
          acc[mt][1][e] = o[mt][2 * cp + 1][e] * alpha[2 * mt + (e >> 1)];
        }
      }
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        uint32_t vf[4];
        ldsm_x4_trans(vf, v_base + (v_row + ks * 16 * RB) + xv);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          if (!act(mt)) continue;
          mma16816<BF>(acc[mt][0], pa[mt][ks], vf[0], vf[1]);
          mma16816<BF>(acc[mt][1], pa[mt][ks], vf[2], vf[3]);
        }
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if (!act(mt)) continue;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const bool keep = skip[2 * mt + (e >> 1)];
          o[mt][2 * cp][e] = keep ? o[mt][2 * cp][e] : acc[mt][0][e];
          o[mt][2 * cp + 1][e] = keep ? o[mt][2 * cp + 1][e] : acc[mt][1][e];
        }
      }
    }
  }
}

// wgmma shared-memory matrix descriptor (sm_90a): start address, leading / stride byte offsets (16-byte units),
// 128-byte swizzle. Tiles start at 1024-byte boundaries (base_offset 0). K-major operands (Q, K): 8-row groups
// 1024 bytes apart (SBO), the k16 step is a 32-byte offset inside the 128-byte row. N-major V: rows of 64 columns
// 128 bytes apart, 8-row groups at 1024 (SBO), 64-column panels at kBK * 128 bytes (LBO).
__device__ __forceinline__ uint64_t gmma_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFFu) >> 4) | (uint64_t(lbo >> 4) << 16) | (uint64_t(sbo >> 4) << 32) | (uint64_t(1) << 62);
}

// Named barriers of the wgmma kernel (0 is __syncthreads): kStaggerBar + (step & 1), the stagger.
constexpr int kStaggerBar = 1;
__device__ __forceinline__ void named_bar_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void named_bar_arrive(int id, int n) { asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }

// Keeps registers read by an in-flight wgmma (the P·V A operand) alive up to this point (after its wait).
__device__ __forceinline__ void reg_use(const uint32_t (&a)[4][4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" ::"r"(a[i][e]) : "memory");
}

// S of one 64-key block for a warpgroup's m64 tile, issued as one wgmma group (not waited):
// §6b S: acc = 0; acc = mma_k16(acc, q[16kk..], k[16kk..]), kk ascending (one wgmma per k16 step). The first step
// is issued with scale-d = 0 (acc = A·B: the step onto a zero accumulator, which is what the hardware runs for a
// zero C too: ptxas turned the zeroed accumulator into RZ), so no register is written between the wgmma fence and
// the issue (such a write makes ptxas inject a warpgroup arrive, which in a divergent path serializes every wgmma).
template <bool BF, int D>
__device__ __forceinline__ void wg_scores(float (&s)[kBK / 8][4], const uint64_t dq, const uint64_t dk) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wgmma_ss<BF, kBK>(s, dq + (uint32_t((kk >> 2) * kSlots * 128 + (kk & 3) * 32) >> 4),
                      dk + (uint32_t((kk >> 2) * kBK * 128 + (kk & 3) * 32) >> 4), kk > 0);
  wgmma_commit();
}

// A slot with keys in this chunk that skips a block must keep o bit for bit, but its P·V (issued for the whole
// m64 tile) still adds 0·v terms (NaN at an infinite value; +0 onto a -0). Rare (a block boundary inside the m64
// tile, a row whose scores are all -inf so far), so per thread and without a warpgroup vote: the thread copies its
// o to local memory before the P·V (o_save) and puts the kept slots' elements back after it (o_restore). Explicit
// st/ld.local, so that the copy is made only when needed (the compiler would otherwise store it every block).
template <int NT>
__device__ __forceinline__ void o_save(float (&copy)[NT * 4], const float (&o)[NT][4], bool (&keep)[2],
                                       const bool (&skip)[2], const unsigned live) {
  keep[0] = skip[0] && (live & 1u);
  keep[1] = skip[1] && (live & 2u);
  if (keep[0] || keep[1]) {
    const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_local(copy));
#pragma unroll
    for (int n = 0; n < NT; ++n)
      asm volatile("st.local.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(a + 16 * n), "f"(o[n][0]), "f"(o[n][1]),
                   "f"(o[n][2]), "f"(o[n][3])
                   : "memory");
  }
}
template <int NT>
__device__ __forceinline__ void o_restore(const float (&copy)[NT * 4], float (&o)[NT][4], const bool (&keep)[2]) {
  if (keep[0] || keep[1]) {
    const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_local(copy));
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      float c[4];
      asm volatile("ld.local.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                   : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
                   : "r"(a + 16 * n)
                   : "memory");
#pragma unroll
      for (int e = 0; e < 4; ++e) o[n][e] = keep[e >> 1] ? c[e] : o[n][e];
    }
  }
}

// Keeps the softmax of a block before a later wgmma wait in the PTX (its results are inputs of these empty volatile
// asms, which keep their place among the volatile wgmma ones). ptxas may still wait earlier: at 255 registers it
// waits for P·V(i) before the second softmax's shuffles (docs/ops/attention.md).
__device__ __forceinline__ void softmax_done(uint32_t (&pa)[4][4], float (&alpha)[2], float (&m)[2], float (&l)[2]) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(pa[i][e])::"memory");
#pragma unroll
  for (int h = 0; h < 2; ++h) asm volatile("" : "+f"(alpha[h]), "+f"(m[h]), "+f"(l[h])::"memory");
}

// §6b o: acc = o*α. Skipped when every α of the warp is 1 (α = 1 exactly when m did not grow: o·1 = o, the same
// bits — NaN payloads aside, which every later step canonicalises).
template <int NT>
__device__ __forceinline__ void wg_rescale(float (&o)[NT][4], const float (&alpha)[2]) {
  if (__all_sync(0xffffffffu, alpha[0] == 1.0f && alpha[1] == 1.0f)) return;
#pragma unroll
  for (int n = 0; n < NT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[n][e] = o[n][e] * alpha[e >> 1];
}

// P·V of one block for a warpgroup's m64 tile, issued as one wgmma group onto o (not waited):
// §6b: acc = o*α (done); acc = mma_k16(acc, p̃[16ks..], v[16ks..]), ks ascending; o = acc.
template <bool BF, int D>
__device__ __forceinline__ void wg_pv(float (&o)[D / 8][4], const uint32_t (&pa)[4][4], const uint64_t dv) {
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) wgmma_rs<BF, D>(o, pa[ks], dv + (uint32_t(ks * 16 * 128) >> 4));
  wgmma_commit();
}

// One ring step of the wgmma kernel for one warpgroup: NBLK (1 or 2) consecutive 64-key blocks i, i + 1, run only
// when some slot of the group's m64 tile has keys in each (warpgroup-uniform; a block without is not touched, as
// §6 step 2 does). Every per-slot step is §6b's, block after block; only the issue order overlaps them: S of both
// blocks is issued at once, so S(i+1) runs on the tensor cores during the softmax of block i, and P·V(i) during the
// softmax of block i+1 (the accumulators of an in-flight wgmma are never touched: each block has its own S and p̃
// registers; o is waited for before block i+1 rescales it). Group 0 arrives at `arrive_bar` once its first S is
// done (the stagger: group 1 starts its step then).
template <bool BF, int D, int NBLK, bool RAW>
__device__ __forceinline__ void tc_step_wg(float (&o)[D / 8][4], float (&m)[2], float (&l)[2], const uint64_t dq,
                                           const uint64_t dk0, const uint64_t dv0, const bool whole0,
                                           const uint64_t dk1, const uint64_t dv1, const bool whole1, const unsigned live,
                                           const int i, const int* s_rlo, const int* s_rhi, const int wrow,
                                           const int lane, const int arrive_bar, const TcExpo& x) {
  static_assert(NBLK == 1 || NBLK == 2, "a ring step is one or two blocks");
  constexpr int NT = D / 8;
  float sa[kBK / 8][4], sb[kBK / 8][4];
  wgmma_fence();
  wg_scores<BF, D>(sa, dq, dk0);
  if constexpr (NBLK == 2) wg_scores<BF, D>(sb, dq, dk1);
  wgmma_wait<NBLK - 1>();
  reg_fence(sa);
  if (arrive_bar >= 0) named_bar_arrive(arrive_bar, kAttnTcWgThreads);
  uint32_t pa[4][4];
  float alpha[2];
  bool skip[2], keep[2];
  __align__(16) float copy[NT * 4];
  tc_softmax_tile<BF, RAW>(sa, m, l, pa, alpha, skip, whole0, i, s_rlo, s_rhi, wrow, lane, x);
  o_save(copy, o, keep, skip, live);
  wg_rescale(o, alpha);
  wg_pv<BF, D>(o, pa, dv0);
  if constexpr (NBLK == 2) {
    wgmma_wait<1>();  // S(i+1) done; P·V(i) may still run
    reg_fence(sb);
    uint32_t pb[4][4];
    tc_softmax_tile<BF, RAW>(sb, m, l, pb, alpha, skip, whole1, i + 1, s_rlo, s_rhi, wrow, lane, x);
    softmax_done(pb, alpha, m, l);
    wgmma_wait<0>();
    reg_fence(o);
    reg_use(pa);
    o_restore(copy, o, keep);
    o_save(copy, o, keep, skip, live);
    wg_rescale(o, alpha);
    wg_pv<BF, D>(o, pb, dv1);
    wgmma_wait<0>();
    reg_fence(o);
    reg_use(pb);
  } else {
    wgmma_wait<0>();
    reg_fence(o);
    reg_use(pa);
  }
  o_restore(copy, o, keep);
}

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

// The Q rows of slots 0 .. rows-1 of batch entry b into the swizzled tile sQ (slots >= nslots: zeros); cp.async
// where aligned, committed with the caller's next group. Spread over nth threads.
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
    if (s >= nslots) *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
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
// (m, l, o[Dv]) after the wgmma kernel's running states (attention_tc_workspace_floats).
__device__ __forceinline__ float* tc_chunk_states(const AttentionLaunch& L, int64_t b, int64_t kvh, int64_t P) {
  const AttentionParams& p = L.p;
  const int64_t pair_lo = attention_tc_wg_tiles(p) * kSlots, npr = p.Q * (p.Hq / p.Hk) - pair_lo;
  return L.workspace + p.B * p.Q * p.Hq * attention_tc_walk_stride(p) +
         ((b * p.Hk + kvh) * npr + (P - pair_lo)) * L.chunk_slots * (p.Dv + 2);
}

// The mma.sync kernel (tc_block), one CTA per (chunk slot, tile, kv head, batch entry): 2 CTAs of 4 warps per SM
// (up to 255 registers: o 128, S 64 -> p̃ 32); two CTAs are not in lockstep, so one's softmax overlaps the other's
// mma. The launch covers the tiles [tile_hi - gridDim.x / Z, tile_hi), last tile first.
template <typename T, int D, bool SMALL>
__global__ void __launch_bounds__(kAttnTcThreads, kAttnTcMinBlocksPerSm)
    attention_tc_chunk_kernel(const AttentionLaunch L, const int64_t tile_hi) {
  constexpr bool WG = false;  // the mma.sync tile layout and ring (swz, stage_block, TcSmem)
  constexpr bool BF = std::is_same<T, bf16_t>::value;
  constexpr int NT = D / 8;   // n8 tiles of o (all columns: the warp owns whole rows)
  constexpr int MT = SMALL ? 1 : kMTiles;  // m-tiles per thread (SMALL: slots 0 .. 15 are warp 0's m-tile 0)
  constexpr int SL = 2 * MT;  // slots per thread: (m-tile mt, half h) <-> slot wrow + 16mt + lane/4 + 8h
  constexpr int NTH = kThreads;
  constexpr int kStages = kRingStages<D, WG, SMALL>;
  using SM = TcSmem<T, D, WG, SMALL>;
  const AttentionParams& p = L.p;
  uint16_t* const smem_al = tc_smem_aligned();
  uint16_t* sQ = smem_al + SM::q;
  uint16_t* sK = smem_al + SM::k;
  uint16_t* sV = smem_al + SM::v;
  __shared__ int64_t t_anchor[kSlots], t_lo[kSlots], t_hi[kSlots];
  __shared__ int64_t t_qi[kSlots], t_h[kSlots];
  __shared__ long long s_red[kRedN];
  __shared__ int8_t t_pass[kSlots];
  __shared__ int s_rlo[kSlots], s_rhi[kSlots];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const TcExpo x = tc_expo(L.p.scale, L.p.softcap);  // §6b v3: u units and κ, from scale and softcap only
  // Programmatic dependent launch: the merge kernel may be launched now (scheduling only: it waits for this grid's
  // completion and memory with griddepcontrol.wait before it reads anything), which hides its launch latency.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  const T* kg = static_cast<const T*>(p.k);
  const T* vg = static_cast<const T*>(p.v);
  T* outg = static_cast<T*>(p.out);

  const int64_t Z = L.chunk_slots;
  // Launch order only: the last tile (in causal prefill the longest rows) first, so the short tiles fill the tail.
  const int64_t z = blockIdx.x % Z, tile = tile_hi - 1 - int64_t(blockIdx.x / Z);
  const int64_t kvh = blockIdx.y;
  const int64_t pair0 = tile * kSlots;
  const int nslots = tc_tile_slots(p, tile, kvh, t_qi, t_h, tid);
  const int wrow = warp * 16 * MT;  // the warp's first slot
  const int qd = lane & 3;          // column pair within an n8 tile
  auto slot_of = [&](int i) { return wrow + 16 * (i >> 1) + (lane >> 2) + 8 * (i & 1); };
  const uint32_t sQ_u32 = static_cast<uint32_t>(__cvta_generic_to_shared(sQ));
  const uint32_t sK_u32 = static_cast<uint32_t>(__cvta_generic_to_shared(sK));
  const uint32_t sV_u32 = static_cast<uint32_t>(__cvta_generic_to_shared(sV));
  TcLaneAddr ad;
  ad.q_row = uint32_t(wrow + (lane & 15)) * (2 * D);
  ad.k_row = uint32_t((lane >> 4) * 8 + (lane & 7)) * (2 * D);
  ad.v_row = uint32_t(((lane >> 3) & 1) * 8 + (lane & 7)) * (2 * D);
  ad.x_qv = uint32_t((lane >> 4) ^ (lane & 7)) << 4;
  ad.x_k = uint32_t(((lane >> 3) & 1) ^ (lane & 7)) << 4;

  for (int64_t b = blockIdx.z; b < p.B; b += gridDim.z) {
    if constexpr (SMALL) cp_async_wait_all();  // the previous entry's Q copies (uncommitted if it had no block) landed
    __syncthreads();
    const T* kb = kg + b * p.k_bs + kvh * p.k_hs;
    const T* vb = vg + b * p.v_bs + kvh * p.v_hs;
    if constexpr (SMALL) {
      // Before the row descriptors (one dependent DRAM round trip less): the tile's 16 Q rows (their addresses
      // depend only on the slot), committed with the first ring step; and an L2 prefetch of the first blocks of
      // chunk z as if the pass were anchored at key 0 (the common case; a wrong guess only costs bandwidth).
      stage_q<T, D, WG>(sQ, kQRows<SMALL>, L, b, t_qi, t_h, nslots, tid, NTH);
      const int64_t g0 = z * kCK, g1 = min64(min64(g0 + int64_t(kStages - 1 + kAttnTcSmallPrefetchBlocks) * kBK, g0 + kCK), p.K);
      if (g0 < g1) {
        prefetch_keys_l2<D>(kb, p.k_ss, g0, g1, tid, NTH);
        prefetch_keys_l2<D>(vb, p.v_ss, g0, g1, tid, NTH);
      }
    }
    bool slot_left = false;  // this thread's slot (tid < nslots) still waits for its pass
    if (tid < nslots) {
      const RowKeys r = read_row(p, b, t_qi[tid]);
      t_anchor[tid] = r.anchor;
      t_lo[tid] = r.lo;
      t_hi[tid] = r.hi;
      slot_left = true;
    }
    bool q_staged = SMALL;  // SMALL: staged above

    for (;;) {  // passes: uniform across the CTA (every thread reads the same shared values)
      __syncthreads();  // the previous pass's readers of s_red / t_pass are done
      if (tid == 0) {
        s_red[kRedAnchor] = LLONG_MAX;
        s_red[kRedLo] = LLONG_MAX;
        s_red[kRedHi] = LLONG_MIN;
        s_red[kRedKlo] = LLONG_MAX;
        s_red[kRedKhi] = LLONG_MIN;
      }
      if (!__syncthreads_or(slot_left)) break;
      if (slot_left) atomicMin(&s_red[kRedAnchor], static_cast<long long>(t_anchor[tid]));
      __syncthreads();
      const int64_t A = s_red[kRedAnchor];
      if (tid < kSlots) {
        const bool in = slot_left && t_anchor[tid] == A;
        t_pass[tid] = in;
        if (in) {
          slot_left = false;
          if (t_lo[tid] < t_hi[tid]) {
            atomicMin(&s_red[kRedLo], static_cast<long long>(t_lo[tid]));
            atomicMax(&s_red[kRedHi], static_cast<long long>(t_hi[tid]));
          }
        }
      }
      __syncthreads();
      const int64_t glo = s_red[kRedLo], ghi = s_red[kRedHi];
      if (glo >= ghi) continue;  // no slot of the pass has keys: the merge kernel writes their zeros
      // This CTA's chunk of the pass: the z-th from the first chunk any of its slots touches (§6 step 3).
      const int64_t c = attn_floor_div(glo - A, kCK) + z;
      const int64_t chunk_lo = A + c * kCK, chunk_hi = chunk_lo + kCK;
      if (tid < kSlots && t_pass[tid] && t_lo[tid] < t_hi[tid] && t_lo[tid] < chunk_hi && t_hi[tid] > chunk_lo) {
        atomicMin(&s_red[kRedKlo], static_cast<long long>(max64(t_lo[tid], chunk_lo)));
        atomicMax(&s_red[kRedKhi], static_cast<long long>(min64(t_hi[tid], chunk_hi)));
      }
      __syncthreads();
      const int64_t klo = s_red[kRedKlo], khi = s_red[kRedKhi];
      if (klo >= khi) continue;

      // Keys are counted from cbase, the first key of the pass's first block in this chunk (§6 step 2: blocks
      // anchored at A), so everything below is a small int: [kl, kh) the staged keys, [rlo, rhi) the thread's
      // slots' keys in this chunk (empty when not in the pass or not in the chunk).
      const int64_t b_first = attn_floor_div(klo - A, kBK), b_last = attn_floor_div(khi - 1 - A, kBK);
      const int64_t cbase = A + b_first * kBK;
      const int kl = static_cast<int>(klo - cbase), kh = static_cast<int>(khi - cbase);
      const int nblocks = static_cast<int>(b_last - b_first + 1);
      // Per warp, as block indices: [mt_busy_lo[mt], mt_busy_hi[mt]] the blocks some slot of m-tile mt reads,
      // [busy_lo, busy_hi] their union, [whole_lo, whole_hi) those every slot with keys in this chunk reads whole
      // (no mask). A slot without keys here is never written out, so it may run unmasked (garbage in its own
      // registers only). The slots' own ranges go to shared memory for the masked blocks (s_rlo / s_rhi, empty
      // when not in the pass or not in the chunk).
      int mt_busy_lo[MT], mt_busy_hi[MT], whole_lo = 0, whole_hi = INT_MAX;
      unsigned live = 0;  // bit i: the thread's slot i has keys in this chunk
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mt_busy_lo[mt] = INT_MAX;
        mt_busy_hi[mt] = -1;
      }
#pragma unroll
      for (int i = 0; i < SL; ++i) {
        const int s = slot_of(i);
        const bool in = s < nslots && t_pass[s];
        const int rlo = in ? static_cast<int>(max64(t_lo[s], chunk_lo) - cbase) : 0;
        const int rhi = in ? static_cast<int>(min64(t_hi[s], chunk_hi) - cbase) : 0;
        if (qd == 0) {
          s_rlo[s] = rlo;
          s_rhi[s] = rhi;
        }
        if (rlo < rhi) {
          live |= 1u << i;
          mt_busy_lo[i >> 1] = min(mt_busy_lo[i >> 1], rlo / kBK);
          mt_busy_hi[i >> 1] = max(mt_busy_hi[i >> 1], (rhi - 1) / kBK);
          whole_lo = max(whole_lo, (rlo + kBK - 1) / kBK);
          whole_hi = min(whole_hi, rhi / kBK);
        }
      }
      int busy_lo = INT_MAX, busy_hi = -1;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mt_busy_lo[mt] = __reduce_min_sync(0xffffffffu, mt_busy_lo[mt]);
        mt_busy_hi[mt] = __reduce_max_sync(0xffffffffu, mt_busy_hi[mt]);
      }
      whole_lo = __reduce_max_sync(0xffffffffu, whole_lo);
      whole_hi = __reduce_min_sync(0xffffffffu, whole_hi);
      __syncwarp();  // s_rlo / s_rhi of the warp's slots are written (only this warp reads them)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        busy_lo = min(busy_lo, mt_busy_lo[mt]);
        busy_hi = max(busy_hi, mt_busy_hi[mt]);
      }

      // Q of the tile (all slots, once per batch entry; slots of other passes are masked), with the first block.
      if (!SMALL && !q_staged) {
        q_staged = true;
        stage_q<T, D, WG>(sQ, kSlots, L, b, t_qi, t_h, nslots, tid, NTH);
      }

      // Chunk state per slot: m, o (fp32), and l as the quad lane's partial sum (§6b: l_q, summed at the end).
      float m[SL], l[SL];
      float o[MT][NT][4];
#pragma unroll
      for (int i = 0; i < SL; ++i) {
        m[i] = -kInf;
        l[i] = 0.0f;
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) o[mt][n][e] = 0.0f;

      // K/V ring: block i (keys cbase + 64i ..) lives in buffer i % kStages; the step of block i waits for it and
      // refills the buffer of block i - 1 with block i + kStages - 1 (one barrier per block).
      const T* kblk = kb + cbase * p.k_ss;
      const T* vblk = vb + cbase * p.v_ss;
      const int64_t kstep = int64_t(kBK) * p.k_ss, vstep = int64_t(kBK) * p.v_ss;
      auto stage = [&](int nb) {  // block nb (if it exists), one cp.async group
        if (nb < nblocks) {
          const int nbuf = nb % kStages;
          const int jl = min(max(kl - nb * kBK, 0), kBK), jh = min(max(kh - nb * kBK, 0), kBK);
          stage_block<T, D, WG>(sK + nbuf * kBK * D, kblk, p.k_ss, jl, jh, L.k_vec);
          stage_block<T, D, WG>(sV + nbuf * kBK * D, vblk, p.v_ss, jl, jh, L.v_vec);
          kblk += kstep;
          vblk += vstep;
          if constexpr (SMALL) {  // block nb + kAttnTcSmallPrefetchBlocks into L2, to be staged that many steps later
            const int pb = nb + kAttnTcSmallPrefetchBlocks;
            if (pb < nblocks) {
              const int64_t k0 = cbase + max(kl, pb * kBK), k1 = cbase + min(kh, (pb + 1) * kBK);
              prefetch_keys_l2<D>(kb, p.k_ss, k0, k1, tid, NTH);
              prefetch_keys_l2<D>(vb, p.v_ss, k0, k1, tid, NTH);
            }
          }
        }
        cp_async_commit();
      };
#pragma unroll
      for (int st = 0; st < kStages - 1; ++st) stage(st);
      for (int i = 0; i < nblocks; ++i) {
        cp_async_wait<kStages - 2>();
        __syncthreads();  // block i has landed for every thread; every warp is done with block i - 1
        stage(i + kStages - 1);
        auto busy = [&](int blk) { return blk < nblocks && blk >= busy_lo && blk <= busy_hi; };  // some slot of the warp is here
        auto whole = [&](int blk) { return blk >= whole_lo && blk < whole_hi; };
        auto k_base = [&](int blk) { return sK_u32 + uint32_t((blk % kStages) * kBK * D * 2); };
        auto v_base = [&](int blk) { return sV_u32 + uint32_t((blk % kStages) * kBK * D * 2); };
        if (!busy(i)) continue;
        const bool w = whole(i);
        if constexpr (SMALL) {  // slots 0 .. 15 only: warp 0's m-tile 0
          tc_block<BF, D, 1, 1>(o, m, l, sQ_u32, k_base(i), v_base(i), ad, w, i, s_rlo, s_rhi, wrow, lane, x);
        } else {
          // Only m-tile 0 has keys here (a decode tile: its G <= 16 slots; masked rows): the empty m-tile 1 is
          // skipped (warp-uniform). Only m-tile 1 (rare: a block boundary inside the warp) runs both.
          static_assert(kMTiles == 2, "the dispatch below names m-tiles 0 and 1");
          const bool only0 = i > mt_busy_hi[1] || i < mt_busy_lo[1];
          if (only0)
            tc_block<BF, D, 1>(o, m, l, sQ_u32, k_base(i), v_base(i), ad, w, i, s_rlo, s_rhi, wrow, lane, x);
          else
            tc_block<BF, D, (1 << kMTiles) - 1>(o, m, l, sQ_u32, k_base(i), v_base(i), ad, w, i, s_rlo, s_rhi, wrow,
                                                lane, x);
        }
      }
      cp_async_wait<0>();

      // Chunk done. l = (l_0 + l_1) + (l_2 + l_3) over the quad (XOR shuffles 1 then 2; + is commutative, so
      // every lane of the quad holds these bits). Then the workspace slot, or finish a slot whose keys all lie
      // in this chunk (§6 steps 4-5). n8 tile n <-> columns 8n + 2qd, +1.
#pragma unroll
      for (int k = 0; k < SL; ++k) {
        l[k] = l[k] + __shfl_xor_sync(0xffffffffu, l[k], 1);
        l[k] = l[k] + __shfl_xor_sync(0xffffffffu, l[k], 2);
      }
#pragma unroll
      for (int k = 0; k < SL; ++k) {
        const int s = slot_of(k);
        if (!(s_rlo[s] < s_rhi[s])) continue;
        const int mt = k >> 1, h = k & 1;
        const float mc = tc_chunk_m(m[k], x);  // the chunk's m in score units (§6 merge)
        const int64_t qi = t_qi[s], hq = t_h[s];
        const RowKeys rk{A, t_lo[s], t_hi[s]};
        const int64_t cf = first_chunk(rk);
        if (cf == last_chunk(rk)) {
          // attn_merge_chunk into the empty state (its scalar part once, its per-column step per column),
          // then attn_output: the merge kernel's sequence for a one-chunk row.
          T* y = outg + ((b * p.Hq + hq) * p.Q + qi) * D;
          AttnState run;
          const AttnScales sc = merge_scales(run.m, mc);
          if (!sc.empty) {
            run.l = run.l * sc.a + l[k] * sc.b;
            run.m = sc.m;
          }
#pragma unroll
          for (int n = 0; n < NT; ++n) {
            uint16_t yy[2];
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              float O = 0.0f;
              if (!sc.empty) O = O * sc.a + o[mt][n][2 * h + e] * sc.b;
              yy[e] = from_float<T>(attn_output(run, O)).x;
            }
            *reinterpret_cast<uint32_t*>(y + 8 * n + 2 * qd) = pack2(yy[0], yy[1]);
          }
        } else {
          float* slot = tc_chunk_states(L, b, kvh, pair0 + s) + (c - cf) * (D + 2);
#pragma unroll
          for (int n = 0; n < NT; ++n)
            *reinterpret_cast<float2*>(slot + 2 + 8 * n + 2 * qd) = make_float2(o[mt][n][2 * h], o[mt][n][2 * h + 1]);
          if (qd == 0) {
            slot[0] = mc;
            slot[1] = l[k];
          }
        }
      }
    }
  }
  if constexpr (SMALL) cp_async_wait_all();  // Q copies of an entry without blocks (uncommitted) land before exit
}

// The wgmma kernel's running state of a row between its chunks (attention_tc_workspace_floats): M at [0], L at
// [1], O from [4] (16-byte aligned) in the walk kernel's own order: lane qd of a quad holds 2 * NT columns (8n +
// 2qd, +1 for n ascending), read and written as float4s, its q-th at float4 4q + qd (a quad's 4 lanes fill 64
// contiguous bytes).
__device__ __forceinline__ float* tc_walk_state(const AttentionLaunch& L, int64_t b, int64_t qi, int64_t hq) {
  const AttentionParams& p = L.p;
  return L.workspace + ((b * p.Q + qi) * p.Hq + hq) * attention_tc_walk_stride(p);
}
__device__ __forceinline__ float4* tc_walk_o(float* ws, int qd) { return reinterpret_cast<float4*>(ws + 4) + qd; }

// The wgmma kernel (prefill tiles): one CTA per (tile, kv head, batch entry) walks each pass's chunks in ascending
// order and merges them itself, so prefill needs no merge kernel, no per-chunk CTA (and no CTA for a chunk slot
// without keys) and restages neither Q nor the K/V ring per chunk. The K/V ring runs through the pass's blocks
// without a break: blocks are anchored at the pass anchor A and counted from an even block b_first, so a 2-block
// ring step never straddles a chunk boundary (every kAttnBlocksPerChunk blocks from A). Per chunk each slot runs
// §6b from the empty state exactly as one chunk CTA of the mma.sync kernel does (the per-slot arithmetic never
// depends on which other chunks, slots or blocks share the CTA); at the chunk's last block each slot with keys in
// it folds (m, l, o) into its running state with attn_merge_chunk — the merge kernel's function, in its
// ascending chunk order — keeping (M, L, O) between chunks in its workspace slot of the row (L2-resident: written
// and read back by the same CTA a chunk later), and at its last chunk writes y = O / L (attn_output). So every
// row gets the bits of the chunk + merge kernels (decode's split-KV). Rows without keys are written as zeros.
// 256 threads = 2 warpgroups, 1 CTA per SM; the launch covers the tiles [tile_hi - gridDim.x, tile_hi), last
// (in causal prefill the longest) first.
template <typename T, int D>
__global__ void __launch_bounds__(kAttnTcWgThreads, kAttnTcWgMinBlocksPerSm)
    attention_tc_walk_kernel(const AttentionLaunch L, const int64_t tile_hi) {
  constexpr bool BF = std::is_same<T, bf16_t>::value;
  constexpr int NT = D / 8;  // n8 tiles of o (all columns: the warp owns whole rows)
  constexpr int NTH = kAttnTcWgThreads;
  constexpr int kStages = kAttnTcWgStages;
  constexpr int kStep = kAttnTcWgStepBlocks;  // blocks per ring step (one __syncthreads)
  constexpr int kBPC = kAttnBlocksPerChunk;
  static_assert(kStages % kStep == 0 && kStages >= 2 * kStep, "the ring holds a step in use and a step loading");
  static_assert(kBPC % kStep == 0, "a ring step from an even block never straddles a chunk boundary");
  using SM = TcSmem<T, D, true, false>;
  const AttentionParams& p = L.p;
  uint16_t* const smem_al = tc_smem_aligned();
  uint16_t* sQ = smem_al + SM::q;
  uint16_t* sK = smem_al + SM::k;
  uint16_t* sV = smem_al + SM::v;
  __shared__ int64_t t_anchor[kSlots], t_lo[kSlots], t_hi[kSlots];
  __shared__ int64_t t_qi[kSlots], t_h[kSlots];
  __shared__ long long s_red[3];  // the pass: anchor A, min lo / max hi of its slots with keys
  __shared__ int8_t t_pass[kSlots];
  __shared__ int s_rlo[kSlots], s_rhi[kSlots];  // the slot's keys in the pass, counted from cbase (empty: not in it)
  __shared__ int s_busy[4];  // per warpgroup the busy block range [lo, hi] of its m-tile

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = tid >> 7;
  const TcExpo x = tc_expo(L.p.scale, L.p.softcap);  // §6b v3: u units and κ, from scale and softcap only
  const T* kg = static_cast<const T*>(p.k);
  const T* vg = static_cast<const T*>(p.v);
  T* outg = static_cast<T*>(p.out);

  const int64_t tile = tile_hi - 1 - int64_t(blockIdx.x);  // launch order only: the longest rows first
  const int64_t kvh = blockIdx.y;
  const int nslots = tc_tile_slots(p, tile, kvh, t_qi, t_h, tid);
  const int wrow = 64 * wg + 16 * (warp & 3);  // the warp's first slot: warpgroup wg owns slots 64wg .. 64wg + 63
  const int qd = lane & 3;                      // column pair within an n8 tile
  auto slot_of = [&](int h) { return wrow + (lane >> 2) + 8 * h; };  // the thread's slot h = 0, 1
  const uint32_t sQ_u32 = static_cast<uint32_t>(__cvta_generic_to_shared(sQ));
  const uint32_t sK_u32 = static_cast<uint32_t>(__cvta_generic_to_shared(sK));
  const uint32_t sV_u32 = static_cast<uint32_t>(__cvta_generic_to_shared(sV));
  const uint64_t dq = gmma_desc(sQ_u32 + uint32_t(wg * 64 * 128), 16, 1024);  // the group's m64 tile of Q

  for (int64_t b = blockIdx.z; b < p.B; b += gridDim.z) {
    __syncthreads();
    const T* kb = kg + b * p.k_bs + kvh * p.k_hs;
    const T* vb = vg + b * p.v_bs + kvh * p.v_hs;
    bool slot_left = false;  // this thread's slot (tid < nslots) still waits for its pass
    if (tid < nslots) {
      const RowKeys r = read_row(p, b, t_qi[tid]);
      t_anchor[tid] = r.anchor;
      t_lo[tid] = r.lo;
      t_hi[tid] = r.hi;
      slot_left = r.lo < r.hi;
      if (!slot_left) {  // no key: y = 0 (§6 step 5; +0 in bf16 and fp16)
        T* y = outg + ((b * p.Hq + t_h[tid]) * p.Q + t_qi[tid]) * D;
#pragma unroll
        for (int c = 0; c < D; c += 2) *reinterpret_cast<uint32_t*>(y + c) = 0u;
      }
    }
    bool q_staged = false;

    for (;;) {  // passes: uniform across the CTA (every thread reads the same shared values)
      __syncthreads();  // the previous pass's readers of s_red / t_pass / s_rlo / s_busy are done
      if (tid == 0) {
        s_red[0] = LLONG_MAX;
        s_red[1] = LLONG_MAX;
        s_red[2] = LLONG_MIN;
      }
      if (tid < 2) {
        s_busy[2 * tid] = INT_MAX;
        s_busy[2 * tid + 1] = -1;
      }
      if (!__syncthreads_or(slot_left)) break;
      if (slot_left) atomicMin(&s_red[0], static_cast<long long>(t_anchor[tid]));
      __syncthreads();
      const int64_t A = s_red[0];
      if (tid < kSlots) {
        const bool in = slot_left && t_anchor[tid] == A;
        t_pass[tid] = in;
        if (in) {
          slot_left = false;
          atomicMin(&s_red[1], static_cast<long long>(t_lo[tid]));
          atomicMax(&s_red[2], static_cast<long long>(t_hi[tid]));
        }
      }
      __syncthreads();
      const int64_t glo = s_red[1], ghi = s_red[2];  // glo < ghi: the pass has a slot with keys
      // Blocks b_first .. b_last counted from A (b_first even); block i of the pass is staged in buffer i % kStages,
      // keys counted from cbase (ints below). Block i lies in chunk c0 + (cb0 + i) / kBPC.
      const int64_t b_first = attn_floor_div(glo - A, kBK) & ~int64_t(1);
      const int64_t b_last = attn_floor_div(ghi - 1 - A, kBK);
      const int64_t cbase = A + b_first * kBK;
      const int64_t c0 = attn_floor_div(b_first, kBPC);
      const int cb0 = static_cast<int>(b_first - c0 * kBPC);
      const int kl = static_cast<int>(glo - cbase), kh = static_cast<int>(ghi - cbase);
      const int nblocks = static_cast<int>(b_last - b_first + 1);
      // The thread's slots' keys [rlo, rhi) in the pass; per warpgroup the busy block range (a wgmma is issued by
      // the whole group).
      int busy_lo = INT_MAX, busy_hi = -1;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int s = slot_of(h);
        const bool in = s < nslots && t_pass[s];  // (a slot of the pass has keys)
        const int rlo = in ? static_cast<int>(t_lo[s] - cbase) : 0;
        const int rhi = in ? static_cast<int>(t_hi[s] - cbase) : 0;
        if (qd == 0) {
          s_rlo[s] = rlo;
          s_rhi[s] = rhi;
        }
        if (in) {
          busy_lo = min(busy_lo, rlo / kBK);
          busy_hi = max(busy_hi, (rhi - 1) / kBK);
        }
      }
      busy_lo = __reduce_min_sync(0xffffffffu, busy_lo);
      busy_hi = __reduce_max_sync(0xffffffffu, busy_hi);
      if (lane == 0) {
        atomicMin(&s_busy[2 * wg], busy_lo);
        atomicMax(&s_busy[2 * wg + 1], busy_hi);
      }

      // Q of the tile (all slots, once per batch entry; slots of other passes are masked), with the first step.
      if (!q_staged) {
        q_staged = true;
        stage_q<T, D, true>(sQ, kSlots, L, b, t_qi, t_h, nslots, tid, NTH);
      }
      __syncthreads();  // s_busy, s_rlo / s_rhi are written
      busy_lo = s_busy[2 * wg];
      busy_hi = s_busy[2 * wg + 1];

      // K/V ring: block i lives in buffer i % kStages; a step waits for its kStep blocks and refills the buffers of
      // the previous step with blocks i + kStages - kStep ..; stage rows outside [kl, kh) are zeros.
      const T* kblk = kb + cbase * p.k_ss;
      const T* vblk = vb + cbase * p.v_ss;
      const int64_t kstep = int64_t(kBK) * p.k_ss, vstep = int64_t(kBK) * p.v_ss;
      auto stage_step = [&](int nb0) {  // blocks nb0 .. nb0 + kStep - 1 (those that exist), one cp.async group
#pragma unroll
        for (int u = 0; u < kStep; ++u) {
          const int nb = nb0 + u;
          if (nb < nblocks) {
            const int nbuf = nb % kStages;
            const int jl = min(max(kl - nb * kBK, 0), kBK), jh = min(max(kh - nb * kBK, 0), kBK);
            stage_block<T, D, true>(sK + nbuf * kBK * D, kblk, p.k_ss, jl, jh, L.k_vec);
            stage_block<T, D, true>(sV + nbuf * kBK * D, vblk, p.v_ss, jl, jh, L.v_vec);
            kblk += kstep;
            vblk += vstep;
          }
        }
        cp_async_commit();
      };
#pragma unroll
      for (int st = 0; st < kStages - kStep; st += kStep) stage_step(st);

      // Chunk state per slot (from the empty state at each chunk): m, o (fp32), and l as the quad lane's partial
      // sum (§6b: l_q, summed at the chunk's end). Per chunk: live (bit h: slot h has keys in it) and the blocks
      // [whole_lo, whole_hi) every live slot of the warp reads whole (no mask; a slot without keys in the chunk
      // is never folded, so it may run unmasked: garbage in its own registers only).
      float m[2], l[2];
      float o[NT][4];
      unsigned live = 0;
      int whole_lo = 0, whole_hi = 0, c_lo = 0;  // c_lo: the chunk's first key, counted from cbase
      for (int i = 0; i < nblocks; i += kStep) {
        if (i == 0 || (cb0 + i) % kBPC == 0) {  // a chunk begins
          c_lo = (i == 0 ? -cb0 : i) * kBK;
          const int c_hi = c_lo + kAttnChunkKeys;
          live = 0;
          whole_lo = 0;
          whole_hi = INT_MAX;
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            m[h] = -kInf;
            l[h] = 0.0f;
            const int s = slot_of(h);
            const int rlo = max(s_rlo[s], c_lo), rhi = min(s_rhi[s], c_hi);
            if (rlo < rhi) {
              live |= 1u << h;
              whole_lo = max(whole_lo, (rlo + kBK - 1) / kBK);
              whole_hi = min(whole_hi, rhi / kBK);
            }
          }
          whole_lo = __reduce_max_sync(0xffffffffu, whole_lo);
          whole_hi = __reduce_min_sync(0xffffffffu, whole_hi);
#pragma unroll
          for (int n = 0; n < NT; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) o[n][e] = 0.0f;
        }
        const bool chunk_end = i + kStep >= nblocks || (cb0 + i + kStep) % kBPC == 0;  // this step ends a chunk
        cp_async_wait<(kStages - kStep) / kStep - 1>();
        fence_proxy_async();  // this thread's cp.async / zero stores, before the wgmma reads
        __syncthreads();      // blocks i, i + 1 have landed for every thread; every warp is done with the last step
        stage_step(i + kStages - kStep);
        auto busy = [&](int blk) { return blk < nblocks && blk >= busy_lo && blk <= busy_hi; };
        auto whole = [&](int blk) { return blk >= whole_lo && blk < whole_hi; };
        auto k_base = [&](int blk) { return sK_u32 + uint32_t((blk % kStages) * kBK * D * 2); };
        auto v_base = [&](int blk) { return sV_u32 + uint32_t((blk % kStages) * kBK * D * 2); };
        // The step's blocks with keys of the group (busy ranges are contiguous: both, the first or the last).
        // Stagger: group 1 starts its step when group 0's first S is done, so one group's softmax overlaps the
        // other's wgmma (scheduling only). Group 0 arrives also when it has nothing to do here. Two barrier ids by
        // step parity: group 0 may be a step ahead.
        const int bar = kStaggerBar + ((i / kStep) & 1);
        if (wg == 1) named_bar_sync(bar, NTH);
        const int arrive = wg == 0 ? bar : -1;
        const bool b0 = busy(i), b1 = busy(i + 1);
        auto dk = [&](int blk) { return gmma_desc(k_base(blk), 16, 1024); };
        auto dv = [&](int blk) { return gmma_desc(v_base(blk), kBK * 128, 1024); };
        auto step = [&](auto nblk, auto raw) {
          constexpr int N = decltype(nblk)::value;
          const int j = (N == 1 && !b0) ? i + 1 : i;
          tc_step_wg<BF, D, N, decltype(raw)::value>(o, m, l, dq, dk(j), dv(j), whole(j), dk(j + 1), dv(j + 1),
                                                     whole(j + 1), live, j, s_rlo, s_rhi, wrow, lane, arrive, x);
        };
        using One = std::integral_constant<int, 1>;
        using Two = std::integral_constant<int, 2>;
        if (b0 && b1) {
          if (x.raw) step(Two{}, std::true_type{});
          else step(Two{}, std::false_type{});
        } else if (b0 || b1) {
          if (x.raw) step(One{}, std::true_type{});
          else step(One{}, std::false_type{});
        } else if (wg == 0) {
          named_bar_arrive(bar, NTH);
        }
        if (!chunk_end) continue;
        // The chunk ends (its last block, or the pass's). l = (l_0 + l_1) + (l_2 + l_3) over the quad (XOR
        // shuffles 1 then 2; every lane of the quad holds these bits). Each live slot: merge into its running
        // state, chunks ascending (§6 step 4); at its last chunk y = O / L (§6 step 5), else the state goes back
        // to the workspace. n8 tile n <-> columns 8n + 2qd, +1: a lane merges its own columns (attn_merge_chunk
        // is per column apart from the scalars, which every lane of the quad computes alike). Both slots' states
        // are loaded before either is merged (one memory round trip).
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          l[h] = l[h] + __shfl_xor_sync(0xffffffffu, l[h], 1);
          l[h] = l[h] + __shfl_xor_sync(0xffffffffu, l[h], 2);
        }
        const int kc = (c_lo + cb0 * kBK) / kAttnChunkKeys;  // the chunk, counted from the pass's first
        float* ws[2];
        int64_t yoff[2];
        bool load[2], last[2];
        AttnState run[2];  // empty at the row's first chunk
        float O[2][2 * NT];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int s = slot_of(h);
          const bool on = (live >> h) & 1u;
          const int kc_first = (s_rlo[s] + cb0 * kBK) / kAttnChunkKeys;
          const int kc_last = (s_rhi[s] - 1 + cb0 * kBK) / kAttnChunkKeys;
          load[h] = on && kc != kc_first;
          last[h] = kc == kc_last;
          ws[h] = tc_walk_state(L, b, t_qi[s], t_h[s]);
          yoff[h] = ((b * p.Hq + t_h[s]) * p.Q + t_qi[s]) * D;
#pragma unroll
          for (int n = 0; n < 2 * NT; ++n) O[h][n] = 0.0f;
          if (load[h]) {
            run[h].m = ws[h][0];
            run[h].l = ws[h][1];
            const float4* w = tc_walk_o(ws[h], qd);
#pragma unroll
            for (int q = 0; q < NT / 2; ++q) {
              const float4 v = w[4 * q];
              O[h][4 * q] = v.x;
              O[h][4 * q + 1] = v.y;
              O[h][4 * q + 2] = v.z;
              O[h][4 * q + 3] = v.w;
            }
          }
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          if (!((live >> h) & 1u)) continue;
          AttnState chunk;
          chunk.m = tc_chunk_m(m[h], x);  // the chunk's m in score units (§6 merge)
          chunk.l = l[h];
          float oc[2 * NT];
#pragma unroll
          for (int n = 0; n < NT; ++n) {
            oc[2 * n] = o[n][2 * h];
            oc[2 * n + 1] = o[n][2 * h + 1];
          }
          attn_merge_chunk(run[h], O[h], chunk, oc, 2 * NT);
          if (last[h]) {
            T* y = outg + yoff[h];
#pragma unroll
            for (int n = 0; n < NT; ++n)
              *reinterpret_cast<uint32_t*>(y + 8 * n + 2 * qd) = pack2(from_float<T>(attn_output(run[h], O[h][2 * n])).x,
                                                                      from_float<T>(attn_output(run[h], O[h][2 * n + 1])).x);
          } else {
            float4* w = tc_walk_o(ws[h], qd);
#pragma unroll
            for (int q = 0; q < NT / 2; ++q)
              w[4 * q] = make_float4(O[h][4 * q], O[h][4 * q + 1], O[h][4 * q + 2], O[h][4 * q + 3]);
            if (qd == 0) {
              ws[h][0] = run[h].m;
              ws[h][1] = run[h].l;
            }
          }
        }
      }
      cp_async_wait<0>();
    }
  }
}

// §6 steps 4-5 for the rows of the mma.sync kernel's tiles (pairs P >= pair_lo of every kv head and batch entry)
// spanning 2+ chunks: one warp per (row, head), lane <-> columns lane*CPL .. lane*CPL + CPL-1; chunks merged in
// ascending order from the empty state with attn_merge_chunk, y = O / L with attn_output: per column the arithmetic
// of attn_cuda::attention_merge_kernel (which the §6 path keeps) and of the wgmma kernel's in-CTA merge, only the
// thread mapping differs. Rows without keys get zeros; one-chunk rows were finished by the chunk kernel.
template <typename T, int D>
__global__ void __launch_bounds__(kAttnTcMergeThreads) attention_tc_merge_kernel(const AttentionLaunch L,
                                                                                 const int64_t pair_lo) {
  constexpr int CPL = D / 32;
  static_assert(CPL % 2 == 0, "columns are stored in pairs");
  const AttentionParams& p = L.p;
  T* outg = static_cast<T*>(p.out);
  const int lane = threadIdx.x & 31;
  constexpr int kWarpsPerCta = kAttnTcMergeThreads / 32;
  // Launched as a programmatic dependent of the chunk kernel (launch_typed): wait for its completion and memory
  // (the workspace, its one-chunk rows) before anything else.
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  const int64_t G = p.Hq / p.Hk, npr = p.Q * G - pair_lo;  // pairs per (batch entry, kv head)
  const int64_t total = p.B * p.Hk * npr;
  for (int64_t r = int64_t(blockIdx.x) * kWarpsPerCta + (threadIdx.x >> 5); r < total;
       r += int64_t(gridDim.x) * kWarpsPerCta) {
    const int64_t P = pair_lo + r % npr, kvh = (r / npr) % p.Hk, b = r / npr / p.Hk;
    const int64_t qi = P / G, h = kvh * G + P % G;
    const RowKeys rk = read_row(p, b, qi);
    T* y = outg + ((b * p.Hq + h) * p.Q + qi) * D + lane * CPL;
    if (rk.lo >= rk.hi) {
#pragma unroll
      for (int i = 0; i < CPL; i += 2) *reinterpret_cast<uint32_t*>(y + i) = 0u;  // +0 in bf16 and fp16
      continue;
    }
    const int64_t cf = first_chunk(rk), n = last_chunk(rk) - cf + 1;
    if (n == 1) continue;  // finished by the chunk kernel
    const float* ws = tc_chunk_states(L, b, kvh, P);
    AttnState run;
    float O[CPL];
#pragma unroll
    for (int i = 0; i < CPL; ++i) O[i] = 0.0f;
    for (int64_t c = 0; c < n; ++c) {  // ascending chunks
      const float* s = ws + c * (D + 2);
      AttnState chunk;
      chunk.m = s[0];
      chunk.l = s[1];
      float o[CPL];
#pragma unroll
      for (int i = 0; i < CPL; i += 2) {
        const float2 v = *reinterpret_cast<const float2*>(s + 2 + lane * CPL + i);
        o[i] = v.x;
        o[i + 1] = v.y;
      }
      attn_merge_chunk(run, O, chunk, o, CPL);
    }
#pragma unroll
    for (int i = 0; i < CPL; i += 2)
      *reinterpret_cast<uint32_t*>(y + i) =
          pack2(from_float<T>(attn_output(run, O[i])).x, from_float<T>(attn_output(run, O[i + 1])).x);
  }
}

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
  const int64_t D = L.p.D;
  if (!attention_tc_supports(L.dtype, L.p.D, L.p.Dv)) return int(cudaErrorInvalidValue);
  if (L.dtype == AttnDtype::BF16) return D == 64 ? attn_tc::launch_typed<bf16_t, 64>(L) : attn_tc::launch_typed<bf16_t, 128>(L);
  return D == 64 ? attn_tc::launch_typed<fp16_t, 64>(L) : attn_tc::launch_typed<fp16_t, 128>(L);
}

}  // namespace detops
