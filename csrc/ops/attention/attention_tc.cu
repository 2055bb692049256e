// attention, tensor-core chunk kernel for bf16/fp16 with D == Dv in {64, 128}: REDUCTION_ORDER.md §6b.
// Pure CUDA (raw pointers, a stream); the torch glue is attention_cuda.cpp.
//
// Grid (chunk slot x slot tile, kv head, batch), 512 threads = 16 warps. A tile is 64 (query row, query head)
// slots of one kv head, slot s <-> pair P = tile*64 + s, query row P / G, head kvh*G + P % G (G = Hq / Hk), so
// a decode step (Q = 1) puts its G heads in one tile and reads K/V once per kv head. Slot group g = warp / 4
// holds slots 16g..16g+15 (the mma M; lane holds slots 16g + lane/4 and +8, the accumulator rows); its 4 warps
// (part = warp % 4) split a 64-key block: part w computes the scores of keys 16w..16w+15 and o of columns
// w*D/4 .. (w+1)*D/4 - 1, exchanging block maxima, rounded p and l partials through shared memory.
// Per pass (the slots of one anchor, smallest first; slots of other anchors are masked and done in their own
// pass) and per chunk (grid x): K/V blocks of 64 keys anchored at the pass anchor are staged in shared memory
// (cp.async, double buffered; keys no slot of the pass reads are zero-filled), and each slot runs §6b:
//   S = Q Kᵀ: per score, mma k16 steps over d ascending, from 0; s = attn_score(S); masked -> -inf;
//   block max, α, p = det_exp(s - m') rounded to T, l = l*α + rowsum(p̃) in the fixed §6b order, t = P·V (mma
//   k16 steps over the block's keys ascending, from 0), o = o*α + t (fp32, no FMA); a slot with no key in the
//   block is untouched.
// The chunk state (m, l, o) goes to the §6 workspace slot, or a slot whose keys fit in one chunk is finished
// here (merge into the empty state, y = O / L: the functions the merge kernel calls). No slot's arithmetic
// depends on its index in the tile, the other slots, Q, B or the grid: prefill, chunked prefill and decode
// (one CTA per chunk = split-KV at anchored multiples of 1024) give the same bits.
#include <cuda_runtime.h>
#include <cstdint>
#include <type_traits>
#include "attention_kernels.cuh"  // RowKeys, read_row, first/last_chunk, the §6 merge kernel
#include "attention_tc.h"

namespace detops {
namespace attn_tc {

using attn_cuda::RowKeys;
using attn_cuda::read_row;
using attn_cuda::first_chunk;
using attn_cuda::last_chunk;

constexpr int kSlots = kAttnTcSlots;
constexpr int kThreads = kAttnTcThreads;
constexpr int kBK = kAttnBlockKeys;
constexpr int kCK = kAttnChunkKeys;
static_assert(kThreads == 512 && kSlots == 64, "4 slot groups of 16 mma rows x 4 warps (key / column quarters)");
static_assert(kBK == 64, "a block is 8 n8 score tiles = 4 k16 steps of P·V");

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// mma.m16n8k16, fp32 accumulate in place: c = c + A·B (the hardware's k16 sum).
template <bool BF>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (BF) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

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

// Shared-memory tiles are rows of D 16-bit elements in 16-byte chunks, chunk c of row r stored at chunk
// c ^ (r & 7): the 8 rows an ldmatrix reads at one logical chunk hit 8 different bank groups.
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// Stages keys [bs, bs + 64) of one kv head (rows `stride` apart) into a swizzled tile; keys outside [klo, khi)
// are zeros (never read from global memory).
template <typename T, int D>
__device__ __forceinline__ void stage_block(uint16_t* dst, const T* base, int64_t stride, int64_t bs, int64_t klo,
                                            int64_t khi, bool vec) {
  constexpr int DC = D / 8;
  static_assert(kBK * DC % kThreads == 0, "even split of the block's 16-byte chunks");
#pragma unroll
  for (int it = 0; it < kBK * DC / kThreads; ++it) {
    const int i = threadIdx.x + it * kThreads;
    const int r = i / DC, c = i % DC;
    const int64_t key = bs + r;
    uint16_t* d = dst + swz<D>(r, c);
    if (key < klo || key >= khi) {
      *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
    } else if (vec) {
      cp_async16(d, base + key * stride + c * 8);
    } else {
      *reinterpret_cast<uint4*>(d) = load8(base + key * stride + c * 8, false);
    }
  }
}

__device__ __forceinline__ uint32_t pack2(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

// Rows of the P exchange tile: 64 keys + 8 pad elements (144 bytes: the 8 rows an ldmatrix reads fall in 8
// different bank groups).
constexpr int kPRow = kBK + 8;

template <typename T, int D>
struct TcSmem {
  static constexpr int q = 0;                    // kSlots x D       query rows of the tile (T)
  static constexpr int k = q + kSlots * D;       // 2 x kBK x D      K blocks (double buffer)
  static constexpr int v = k + 2 * kBK * D;      // 2 x kBK x D      V blocks
  static constexpr int p = v + 2 * kBK * D;      // kSlots x kPRow   the block's rounded p
  static constexpr int elems = p + kSlots * kPRow;
  static constexpr size_t red = size_t(elems) * 2;          // byte offset of the float exchange arrays
  static constexpr size_t bytes = red + 2 * kSlots * 4 * sizeof(float);  // block max and l partials
};

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 1) attention_tc_chunk_kernel(const AttentionLaunch L) {
  constexpr bool BF = std::is_same<T, bf16_t>::value;
  constexpr int DC = D / 8;       // 16-byte chunks of a row
  constexpr int KS = D / 16;      // k16 steps of S = Q Kᵀ
  constexpr int NTW = D / 8 / 4;  // n8 tiles of o per warp (a quarter of the columns)
  static_assert(NTW % 2 == 0, "V fragments are loaded for pairs of n8 tiles");
  using SM = TcSmem<T, D>;
  const AttentionParams& p = L.p;
  extern __shared__ uint4 smem_u4[];
  uint16_t* sQ = reinterpret_cast<uint16_t*>(smem_u4) + SM::q;
  uint16_t* sK = reinterpret_cast<uint16_t*>(smem_u4) + SM::k;
  uint16_t* sV = reinterpret_cast<uint16_t*>(smem_u4) + SM::v;
  uint16_t* sP = reinterpret_cast<uint16_t*>(smem_u4) + SM::p;
  float* sMax = reinterpret_cast<float*>(reinterpret_cast<char*>(smem_u4) + SM::red);  // [slot][part]
  float* sSum = sMax + kSlots * 4;                                                      // [slot][part]
  __shared__ int64_t t_anchor[kSlots], t_lo[kSlots], t_hi[kSlots];
  __shared__ int64_t t_qi[kSlots], t_h[kSlots];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int grp = warp >> 2;   // slot group: slots 16grp .. 16grp + 15 (the mma M)
  const int part = warp & 3;   // keys 16part .. 16part + 15 of a block for S; columns part*D/4 .. for o
  const T* qg = static_cast<const T*>(p.q);
  const T* kg = static_cast<const T*>(p.k);
  const T* vg = static_cast<const T*>(p.v);
  T* outg = static_cast<T*>(p.out);

  const int64_t G = p.Hq / p.Hk;
  const int64_t Z = L.chunk_slots;
  const int64_t z = blockIdx.x % Z, tile = blockIdx.x / Z;
  const int64_t kvh = blockIdx.y;
  const int64_t pair0 = tile * kSlots, npairs = p.Q * G;
  const int nslots = static_cast<int>(min64(kSlots, npairs - pair0));
  if (tid < kSlots) {
    const int64_t P = pair0 + tid;
    t_qi[tid] = tid < nslots ? P / G : 0;
    t_h[tid] = tid < nslots ? kvh * G + P % G : 0;
  }
  const int sl0 = grp * 16 + (lane >> 2);  // the thread's two slots: accumulator rows lane/4 and lane/4 + 8
  const int qd = lane & 3;                 // column pair within an n8 tile

  for (int64_t b = blockIdx.z; b < p.B; b += gridDim.z) {
    __syncthreads();
    if (tid < nslots) {
      const RowKeys r = read_row(p, b, t_qi[tid]);
      t_anchor[tid] = r.anchor;
      t_lo[tid] = r.lo;
      t_hi[tid] = r.hi;
    }
    for (int i = tid; i < kSlots * DC; i += kThreads) {
      const int s = i / DC, c = i % DC;
      uint4 val = make_uint4(0, 0, 0, 0);
      if (s < nslots) val = load8(qg + b * p.q_bs + t_h[s] * p.q_hs + t_qi[s] * p.q_ss + c * 8, L.q_vec);
      *reinterpret_cast<uint4*>(sQ + swz<D>(s, c)) = val;
    }
    __syncthreads();
    const T* kb = kg + b * p.k_bs + kvh * p.k_hs;
    const T* vb = vg + b * p.v_bs + kvh * p.v_hs;

    uint64_t remaining = nslots >= 64 ? ~0ull : ((1ull << nslots) - 1ull);
    while (remaining) {  // uniform across the CTA: every thread reads the same shared values
      int64_t A = INT64_MAX;
      for (int r = 0; r < nslots; ++r)
        if ((remaining >> r) & 1ull) A = min64(A, t_anchor[r]);
      uint64_t pass = 0;
      int64_t glo = INT64_MAX, ghi = INT64_MIN;
      for (int r = 0; r < nslots; ++r)
        if (((remaining >> r) & 1ull) && t_anchor[r] == A) {
          pass |= 1ull << r;
          if (t_lo[r] < t_hi[r]) { glo = min64(glo, t_lo[r]); ghi = max64(ghi, t_hi[r]); }
        }
      remaining &= ~pass;
      if (glo >= ghi) continue;  // no slot of the pass has keys: the merge kernel writes their zeros
      // This CTA's chunk of the pass: the z-th from the first chunk any of its slots touches (§6 step 3).
      const int64_t c = attn_floor_div(glo - A, kCK) + z;
      const int64_t chunk_lo = A + c * kCK, chunk_hi = chunk_lo + kCK;
      int64_t klo = INT64_MAX, khi = INT64_MIN;
      for (int r = 0; r < nslots; ++r) {
        if (!((pass >> r) & 1ull) || t_lo[r] >= t_hi[r] || t_lo[r] >= chunk_hi || t_hi[r] <= chunk_lo) continue;
        klo = min64(klo, max64(t_lo[r], chunk_lo));
        khi = max64(khi, min64(t_hi[r], chunk_hi));
      }
      if (klo >= khi) continue;

      // The thread's two slots: their keys in this chunk (empty when not in the pass or not in the chunk).
      int64_t rlo[2], rhi[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int s = sl0 + 8 * h;
        const bool in = s < nslots && ((pass >> s) & 1ull);
        rlo[h] = in ? max64(t_lo[s], chunk_lo) : 0;
        rhi[h] = in ? min64(t_hi[s], chunk_hi) : 0;
      }
      // Uniform over the 4 warps of a group (they hold the same slots), so group barriers are not needed.
      const bool grp_busy = __any_sync(0xffffffffu, rlo[0] < rhi[0] || rlo[1] < rhi[1]);

      float m[2] = {-kInf, -kInf}, l[2] = {0.0f, 0.0f};
      float o[NTW][4];
#pragma unroll
      for (int n = 0; n < NTW; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[n][e] = 0.0f;

      const int64_t b_first = attn_floor_div(klo - A, kBK), b_last = attn_floor_div(khi - 1 - A, kBK);
      stage_block<T, D>(sK, kb, p.k_ss, A + b_first * kBK, klo, khi, L.k_vec);
      stage_block<T, D>(sV, vb, p.v_ss, A + b_first * kBK, klo, khi, L.v_vec);
      cp_async_commit();
      for (int64_t blk = b_first; blk <= b_last; ++blk) {
        const int buf = static_cast<int>((blk - b_first) & 1);
        const int64_t bs = A + blk * kBK;  // §6 step 2: the block anchored at A
        if (blk < b_last) {
          stage_block<T, D>(sK + (buf ^ 1) * kBK * D, kb, p.k_ss, bs + kBK, klo, khi, L.k_vec);
          stage_block<T, D>(sV + (buf ^ 1) * kBK * D, vb, p.v_ss, bs + kBK, klo, khi, L.v_vec);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const uint16_t* sKb = sK + buf * kBK * D;
        const uint16_t* sVb = sV + buf * kBK * D;
        // The slots' keys of the block are [jlo, jhi) (empty: the slot does not visit it, §6 step 2).
        int jlo[2], jhi[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          jlo[h] = static_cast<int>(max64(min64(rlo[h] - bs, kBK), 0));
          jhi[h] = static_cast<int>(max64(min64(rhi[h] - bs, kBK), 0));
        }
        float s[2][4];
        if (grp_busy) {
          // §6b S for keys 16part .. 16part+15: acc = 0; acc = mma_k16(acc, q[16kk..], k[16kk..]), kk ascending.
#pragma unroll
          for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
#pragma unroll
          for (int kk = 0; kk < KS; ++kk) {
            uint32_t qf[4], kf[4];  // A: the group's 16 query rows; B: the part's 16 keys; d = 16kk ..
            ldmatrix_x4(qf, sQ + swz<D>(grp * 16 + (lane & 15), kk * 2 + (lane >> 4)));
            ldmatrix_x4(kf, sKb + swz<D>(part * 16 + (lane >> 4) * 8 + (lane & 7), kk * 2 + ((lane >> 3) & 1)));
            mma16816<BF>(s[0], qf, kf[0], kf[1]);
            mma16816<BF>(s[1], qf, kf[2], kf[3]);
          }
          // Scores and masks (slot e>>1 of the thread, key 16part + 8j + 2qd + (e&1) of the block); the part's
          // max per slot (max is exact in any order), to shared memory.
          float pmax[2] = {-kInf, -kInf};
#pragma unroll
          for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int h = e >> 1;
              const int key = part * 16 + 8 * j + 2 * qd + (e & 1);
              const bool valid = key >= jlo[h] && key < jhi[h];
              s[j][e] = valid ? attn_score(s[j][e], p.scale, p.softcap) : -kInf;
              pmax[h] = det_max(pmax[h], s[j][e]);
            }
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            pmax[h] = det_max(pmax[h], __shfl_xor_sync(0xffffffffu, pmax[h], 1));
            pmax[h] = det_max(pmax[h], __shfl_xor_sync(0xffffffffu, pmax[h], 2));
            if (qd == 0) sMax[(sl0 + 8 * h) * 4 + part] = pmax[h];
          }
        }
        __syncthreads();
        AttnBlockStep step[2];
        if (grp_busy) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const float* mx = sMax + (sl0 + 8 * h) * 4;
            const float bmax = det_max(det_max(mx[0], mx[1]), det_max(mx[2], mx[3]));
            step[h] = attn_block_step(m[h], bmax);
            if (jlo[h] >= jhi[h]) step[h].skip = true;  // no key of the slot here: the block is not visited
          }
          // p rounded to T (the P·V operand) to shared memory; l sums the rounded p: per thread ascending
          // (j, e), quad t = (t + t^1) + t^2, then over the 4 parts (p0 + p1) + (p2 + p3).
          float lsum[2] = {0.0f, 0.0f};
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            uint16_t pr[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int h = e >> 1;
              const float pv = (s[j][e] == -kInf || step[h].skip) ? 0.0f : attn_prob(s[j][e], step[h].m_new);
              const T pt = from_float<T>(pv);
              pr[e] = pt.x;
              lsum[h] = lsum[h] + to_float(pt);
            }
            const int key = part * 16 + 8 * j + 2 * qd;
            *reinterpret_cast<uint32_t*>(sP + sl0 * kPRow + key) = pack2(pr[0], pr[1]);
            *reinterpret_cast<uint32_t*>(sP + (sl0 + 8) * kPRow + key) = pack2(pr[2], pr[3]);
          }
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            lsum[h] = lsum[h] + __shfl_xor_sync(0xffffffffu, lsum[h], 1);
            lsum[h] = lsum[h] + __shfl_xor_sync(0xffffffffu, lsum[h], 2);
            if (qd == 0) sSum[(sl0 + 8 * h) * 4 + part] = lsum[h];
          }
        }
        __syncthreads();
        if (grp_busy) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const float* ps = sSum + (sl0 + 8 * h) * 4;
            if (!step[h].skip) {
              l[h] = attn_l_update(l[h], step[h].alpha, (ps[0] + ps[1]) + (ps[2] + ps[3]));
              m[h] = step[h].m_new;
            }
          }
          // §6b o for columns part*D/4 ..: t = 0; t = mma_k16(t, p[16ks..], v[16ks..]), ks ascending;
          // o = o*α + t.
          uint32_t pa[4][4];
#pragma unroll
          for (int ks = 0; ks < 4; ++ks)
            ldmatrix_x4(pa[ks], sP + (grp * 16 + (lane & 15)) * kPRow + (2 * ks + (lane >> 4)) * 8);
#pragma unroll
          for (int dp = 0; dp < NTW / 2; ++dp) {
            const int cpair = part * (NTW / 2) + dp;  // pair of n8 tiles = 16-byte chunks 2cpair, 2cpair+1
            float t0[4] = {0.0f, 0.0f, 0.0f, 0.0f}, t1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int ks = 0; ks < 4; ++ks) {
              uint32_t vf[4];
              ldmatrix_x4_trans(vf, sVb + swz<D>(ks * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), cpair * 2 + (lane >> 4)));
              mma16816<BF>(t0, pa[ks], vf[0], vf[1]);
              mma16816<BF>(t1, pa[ks], vf[2], vf[3]);
            }
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int h = e >> 1;
              if (!step[h].skip) {
                o[2 * dp][e] = attn_o_update(o[2 * dp][e], step[h].alpha, t0[e]);
                o[2 * dp + 1][e] = attn_o_update(o[2 * dp + 1][e], step[h].alpha, t1[e]);
              }
            }
          }
        }
        __syncthreads();  // the K/V buffer is restaged two blocks later; sP / sMax / sSum next block
      }
      cp_async_wait<0>();

      // Chunk done: workspace slot, or finish a slot whose keys all lie in this chunk (§6 steps 4-5).
      // The warp's columns: n8 tile n <-> columns 8 * (part * NTW + n) + 2qd, +1.
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (!(rlo[h] < rhi[h])) continue;
        const int s = sl0 + 8 * h;
        const int64_t qi = t_qi[s], hq = t_h[s];
        const RowKeys rk{A, t_lo[s], t_hi[s]};
        const int64_t cf = first_chunk(rk);
        if (cf == last_chunk(rk)) {
          T* y = outg + ((b * p.Hq + hq) * p.Q + qi) * D;
          AttnState chunk;
          chunk.m = m[h];
          chunk.l = l[h];
#pragma unroll
          for (int n = 0; n < NTW; ++n) {
            uint16_t yy[2];
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              AttnState run;
              float O = 0.0f;
              attn_merge_chunk(run, &O, chunk, &o[n][2 * h + e], 1);
              yy[e] = from_float<T>(attn_output(run, O)).x;
            }
            *reinterpret_cast<uint32_t*>(y + 8 * (part * NTW + n) + 2 * qd) = pack2(yy[0], yy[1]);
          }
        } else {
          float* slot = L.workspace + (((b * p.Q + qi) * p.Hq + hq) * Z + (c - cf)) * (D + 2);
#pragma unroll
          for (int n = 0; n < NTW; ++n)
            *reinterpret_cast<float2*>(slot + 2 + 8 * (part * NTW + n) + 2 * qd) =
                make_float2(o[n][2 * h], o[n][2 * h + 1]);
          if (qd == 0 && part == 0) {
            slot[0] = m[h];
            slot[1] = l[h];
          }
        }
      }
      __syncthreads();
    }
  }
}

template <typename T, int D>
int launch_typed(const AttentionLaunch& L) {
  using SM = TcSmem<T, D>;
  const AttentionParams& p = L.p;
  cudaStream_t stream = static_cast<cudaStream_t>(L.stream);
  const int64_t G = p.Hq / p.Hk;
  const int64_t tiles = (p.Q * G + kSlots - 1) / kSlots;
  auto chunk = attention_tc_chunk_kernel<T, D>;
  cudaError_t e = cudaFuncSetAttribute(chunk, cudaFuncAttributeMaxDynamicSharedMemorySize, int(SM::bytes));
  if (e != cudaSuccess) return int(e);
  const dim3 grid(unsigned(L.chunk_slots * tiles), unsigned(p.Hk), unsigned(p.B < 65535 ? p.B : 65535));
  chunk<<<grid, kThreads, SM::bytes, stream>>>(L);
  const int64_t total = p.B * p.Q * p.Hq;
  const unsigned mgrid = unsigned(total < (int64_t(1) << 30) ? total : (int64_t(1) << 30));
  attn_cuda::attention_merge_kernel<T, D><<<mgrid, kAttnMergeThreads, 0, stream>>>(L);
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
