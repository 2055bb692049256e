// Tensor-core attention kernels (docs/REDUCTION_ORDER.md §6b; the design is described at the top of
// attention_tc.cu, which launches them): the mma.sync chunk kernel, the wgmma walk kernel and the chunk-merge kernel.
#pragma once
#include <cuda_runtime.h>
#include <climits>
#include <cstdint>
#include <type_traits>
#include "attention_tc_layout.cuh"
#include "attention_tc_math.cuh"
#include "attention_tc_ptx.cuh"

namespace detops {
namespace attn_tc {

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
          stage_block<T, D, WG>(sK + nbuf * kBK * D, kblk, p.k_ss, jl, jh, L.k_vec, p.D);
          stage_block<T, D, WG>(sV + nbuf * kBK * D, vblk, p.v_ss, jl, jh, L.v_vec, p.D);
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
          T* y = outg + ((b * p.Hq + hq) * p.Q + qi) * p.Dv;
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
            if (8 * n < p.Dv) *reinterpret_cast<uint32_t*>(y + 8 * n + 2 * qd) = pack2(yy[0], yy[1]);
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
        T* y = outg + ((b * p.Hq + t_h[tid]) * p.Q + t_qi[tid]) * p.Dv;
        for (int64_t c = 0; c < p.Dv; c += 2) *reinterpret_cast<uint32_t*>(y + c) = 0u;
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
            stage_block<T, D, true>(sK + nbuf * kBK * D, kblk, p.k_ss, jl, jh, L.k_vec, p.D);
            stage_block<T, D, true>(sV + nbuf * kBK * D, vblk, p.v_ss, jl, jh, L.v_vec, p.D);
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
          yoff[h] = ((b * p.Hq + t_h[s]) * p.Q + t_qi[s]) * p.Dv;
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
              if (8 * n < p.Dv)
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
    T* y = outg + ((b * p.Hq + h) * p.Q + qi) * p.Dv + lane * CPL;
    const bool stores = lane * CPL < p.Dv;  // the lane's columns are the head's, not padding (§6b "Head dims")
    if (rk.lo >= rk.hi) {
#pragma unroll
      for (int i = 0; i < CPL; i += 2)
        if (stores) *reinterpret_cast<uint32_t*>(y + i) = 0u;  // +0 in bf16 and fp16
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
      if (stores)
        *reinterpret_cast<uint32_t*>(y + i) =
            pack2(from_float<T>(attn_output(run, O[i])).x, from_float<T>(attn_output(run, O[i + 1])).x);
  }
}

}  // namespace attn_tc
}  // namespace detops
