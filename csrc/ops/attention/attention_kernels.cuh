// attention, CUDA kernels on CUDA cores ("portable order"): REDUCTION_ORDER.md §6. Pure CUDA: raw pointers
// and a stream; the torch glue is attention_cuda.cpp.
//
// Two kernels:
//  1. chunk kernel, grid (chunk slot x query tile, kv head x head tile, batch). A CTA takes the query rows of
//     its tile that share one anchor (rows of other anchors are done in later passes of the same CTA), the
//     GQA query heads of its kv head, and one anchored chunk of CK = 1024 keys. It stages each 64-key block
//     of K and V in shared memory once and runs, for every (row, head) pair, the per-row §6 steps 1-3:
//     scores (ascending-d dot), block max, p, l = l*α + pairwise tree, o_d = o_d*α + ascending-j sum.
//     It writes the chunk state (m, l, o[Dv]) to the workspace slot (row, head, chunk - first chunk of the
//     row); a row whose keys fit one chunk is merged into the empty state and finished right there
//     (§6 steps 4-5, the same functions the merge kernel calls, so the bits do not depend on who finishes).
//  2. merge kernel: per (row, head), chunks merged in ascending order from the empty state, y = O / L.
// Every row runs the same sequence of floating-point operations whatever Q, B, the tile or the batch-mates:
// prefill and decode (one CTA per chunk = split-KV at anchored multiples of CK) give the same bits.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include <cstring>
#include "../../reduce/reduce.h"
#include "attention_launch.h"
#include "attention_math.h"

namespace detops {
namespace attn_cuda {

constexpr int kBK = kAttnBlockKeys;
constexpr int kCK = kAttnChunkKeys;
constexpr int kT = kAttnThreads;
constexpr int kRH = kAttnRowHeads;
constexpr int kWarps = kT / 32;
static_assert(kBK == 64, "the block softmax gives each lane of a warp 2 of the 64 slots");
static_assert(kRH <= 32, "tile rows are tracked in a 32-bit mask");

__device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) { return attn_floor_div(a, b); }
__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// One query row's key description (§6), clipped to the keys that exist.
struct RowKeys {
  int64_t anchor, lo, hi;
};
__device__ __forceinline__ RowKeys read_row(const AttentionParams& p, int64_t b, int64_t qi) {
  const int32_t* r = p.rows + (b * p.Q + qi) * 3;
  return RowKeys{r[0], max64(r[1], 0), min64(r[2], p.K)};
}
// First and last anchored chunk the row's keys touch.
__device__ __forceinline__ int64_t first_chunk(const RowKeys& r) { return floor_div(r.lo - r.anchor, kCK); }
__device__ __forceinline__ int64_t last_chunk(const RowKeys& r) { return floor_div(r.hi - 1 - r.anchor, kCK); }

// 16 bytes of T (a pack), loaded as one vector where aligned, else element by element (same values).
template <typename T>
struct Pack {
  static constexpr int n = 16 / sizeof(T);
  T e[n];
};
template <typename T>
__device__ __forceinline__ Pack<T> load_pack(const T* src, bool vec) {
  Pack<T> r;
  if (vec) {
    uint4 u = __ldg(reinterpret_cast<const uint4*>(src));
    memcpy(&r, &u, 16);
  } else {
#pragma unroll
    for (int e = 0; e < Pack<T>::n; ++e) r.e[e] = src[e];
  }
  return r;
}
template <typename T>
__device__ __forceinline__ void store_pack_f32(float* dst, const Pack<T>& v, bool keep) {
#pragma unroll
  for (int e = 0; e < Pack<T>::n; e += 4) {
    float4 f = keep ? make_float4(to_float(v.e[e]), to_float(v.e[e + 1]), to_float(v.e[e + 2]), to_float(v.e[e + 3]))
                    : make_float4(0.f, 0.f, 0.f, 0.f);
    *reinterpret_cast<float4*>(dst + e) = f;
  }
}

// V staging of one 64-key block through registers (load, then store after the previous block's readers are
// done): keys [bs, bs + 64) of one kv head as fp32 rows of stride W; keys outside [ls, le) (no row of the
// pass reads them) are stored as zeros.
template <typename T, int W>
struct BlockStage {
  static constexpr int VE = Pack<T>::n;
  static_assert(W % VE == 0, "head dim is a multiple of the 16-byte pack");
  static constexpr int PR = W / VE;
  static constexpr int N = kBK * PR;
  static constexpr int PER = (N + kT - 1) / kT;
  Pack<T> buf[PER];
  __device__ __forceinline__ void load(const T* base, int64_t row_stride, int64_t bs, int64_t ls, int64_t le,
                                       bool vec) {
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const int v = threadIdx.x + kT * i;
      const int64_t key = bs + v / PR;
      if (v < N && key >= ls && key < le) buf[i] = load_pack(base + key * row_stride + (v % PR) * VE, vec);
    }
  }
  __device__ __forceinline__ void store(float* dst, int64_t bs, int64_t ls, int64_t le) const {
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const int v = threadIdx.x + kT * i;
      const int64_t key = bs + v / PR;
      if (v < N) store_pack_f32(dst + (v / PR) * W + (v % PR) * VE, buf[i], key >= ls && key < le);
    }
  }
};

// §6 step 1 for every key of the chunk the pass reads: thread <-> key (KPT keys at once), all RA pairs of the
// pass per key (q broadcast from shared memory, k read once from global memory). Per (pair, key):
// dot = ((0 + q_0*k_0) + q_1*k_1) + ... ascending d (as attn_dot), then attn_score; stored only where the key
// is in the pair's row interval (phase B masks the rest).
template <typename T, int D, int RA, int KPT>
__device__ __forceinline__ void chunk_scores(const T* kb, int64_t k_ss, bool vec, const float* sQ, float* sS,
                                             const int64_t* a_lo, const int64_t* a_hi, int Ra, int64_t chunk_lo,
                                             int kfirst, int klast, float scale, float softcap) {
  constexpr int VE = Pack<T>::n;
  static_assert(D % VE == 0 && VE % 4 == 0, "");
  int rq[RA];
#pragma unroll
  for (int r = 0; r < RA; ++r) rq[r] = r < Ra ? r : 0;
  for (int k0 = kfirst + threadIdx.x; k0 < klast; k0 += kT * KPT) {
    bool live[KPT];
    const T* krow[KPT];
    float acc[KPT][RA];
#pragma unroll
    for (int u = 0; u < KPT; ++u) {
      live[u] = k0 + kT * u < klast;
      krow[u] = kb + (chunk_lo + (live[u] ? k0 + kT * u : k0)) * k_ss;
#pragma unroll
      for (int r = 0; r < RA; ++r) acc[u][r] = 0.0f;
    }
#pragma unroll 1
    for (int d0 = 0; d0 < D; d0 += VE) {
      float kf[KPT][VE];
#pragma unroll
      for (int u = 0; u < KPT; ++u) {
        const Pack<T> kp = load_pack(krow[u] + d0, vec);
#pragma unroll
        for (int e = 0; e < VE; ++e) kf[u][e] = to_float(kp.e[e]);
      }
#pragma unroll
      for (int e = 0; e < VE; e += 4) {
#pragma unroll
        for (int r = 0; r < RA; ++r) {
          const float4 qv = *reinterpret_cast<const float4*>(sQ + rq[r] * D + d0 + e);
#pragma unroll
          for (int u = 0; u < KPT; ++u) {
            acc[u][r] = acc[u][r] + qv.x * kf[u][e];
            acc[u][r] = acc[u][r] + qv.y * kf[u][e + 1];
            acc[u][r] = acc[u][r] + qv.z * kf[u][e + 2];
            acc[u][r] = acc[u][r] + qv.w * kf[u][e + 3];
          }
        }
      }
    }
#pragma unroll
    for (int u = 0; u < KPT; ++u) {
      const int kk = k0 + kT * u;
      const int64_t key = chunk_lo + kk;
#pragma unroll
      for (int r = 0; r < RA; ++r)
        if (live[u] && r < Ra && key >= a_lo[r] && key < a_hi[r])
          sS[r * kCK + kk] = attn_score(acc[u][r], scale, softcap);
    }
  }
}

// §6 step 3, o, of one block for the first N of the thread's M pairs (index tid + kT*i -> pair idx / Dv,
// dim idx % Dv): o_d = o_d*α + t_d, t_d = ((0 + p_j0*v_j0d) + p_j1*v_j1d) + ..., j ascending over the row's keys
// in the block (as attn_block_update). sP: the block's p, rows kCK apart; alpha/skip: the block's, rows
// kBlocksPerChunk apart. Pairs whose row skips the block keep o.
template <int N, int M, int Dv>
__device__ __forceinline__ void block_pv(const float* sP, const float* sV, const float* alpha, const int* skip,
                                         const int64_t* a_lo, const int64_t* a_hi, int Ra, int64_t bs,
                                         float (&o)[M]) {
  static_assert(N <= M, "");
  const int tid = threadIdx.x;
  float acc[N];
  int rr[N], dd[N], jlo[N], jhi[N];
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int idx = tid + kT * i;
    const bool live = idx < Ra * Dv && !skip[(idx < Ra * Dv ? idx / Dv : 0) * kAttnBlocksPerChunk];
    rr[i] = live ? idx / Dv : 0;
    dd[i] = idx % Dv;
    jlo[i] = live ? static_cast<int>(max64(a_lo[rr[i]] - bs, 0)) : kBK;
    jhi[i] = live ? static_cast<int>(min64(a_hi[rr[i]] - bs, kBK)) : 0;
    acc[i] = 0.0f;
  }
#pragma unroll 2
  for (int j = 0; j < kBK; ++j) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const float t = acc[i] + sP[rr[i] * kCK + j] * sV[j * Dv + dd[i]];
      acc[i] = (j >= jlo[i] && j < jhi[i]) ? t : acc[i];
    }
  }
#pragma unroll
  for (int i = 0; i < N; ++i)
    if (jlo[i] < jhi[i]) o[i] = attn_o_update(o[i], alpha[rr[i] * kAttnBlocksPerChunk], acc[i]);
}

template <typename T, int D, int Dv>
struct ChunkSmem {
  static constexpr int q = 0;                         // kRH x D      q rows of the pass, fp32
  static constexpr int s = q + kRH * D;               // kRH x kCK    scores, then p, of the chunk
  static constexpr int v = s + kRH * kCK;             // kBK x Dv     one V block, fp32
  static constexpr int m = v + kBK * Dv;              // kRH          chunk state m
  static constexpr int l = m + kRH;                   // kRH          chunk state l
  static constexpr int alpha = l + kRH;               // kRH x 16     α of each block
  static constexpr int skip = alpha + kRH * kAttnBlocksPerChunk;  // kRH x 16 (int) block not absorbed
  static constexpr int floats = skip + kRH * kAttnBlocksPerChunk;
  static constexpr size_t bytes = floats * sizeof(float);
};

template <typename T, int D, int Dv>
__global__ void __launch_bounds__(kT, (D >= kAttnWideHeadDim || Dv >= kAttnWideHeadDim) ? kAttnWideMinBlocksPerSm
                                                                                 : kAttnMinBlocksPerSm)
    attention_chunk_kernel(const AttentionLaunch L) {
  using SM = ChunkSmem<T, D, Dv>;
  constexpr int VE = Pack<T>::n;
  constexpr int kPairs = kRH * Dv / kT;   // (pair, d) outputs per thread
  constexpr int kPairsHalf = (kPairs + 1) / 2, kPairsQuarter = (kPairs + 3) / 4;
  constexpr int kBPC = kAttnBlocksPerChunk;
  static_assert(kRH * Dv % kT == 0, "even split of the CTA's outputs");
  static_assert(kRH == 16, "chunk_scores variants hold 16 accumulators");

  const AttentionParams& p = L.p;
  extern __shared__ float4 smem_f4[];
  float* smem = reinterpret_cast<float*>(smem_f4);
  float* sQ = smem + SM::q;
  float* sS = smem + SM::s;
  float* sV = smem + SM::v;
  float* sM = smem + SM::m;
  float* sL = smem + SM::l;
  float* sAlpha = smem + SM::alpha;
  int* sSkip = reinterpret_cast<int*>(smem + SM::skip);
  __shared__ int64_t t_anchor[kRH], t_lo[kRH], t_hi[kRH];  // rows of the tile
  __shared__ int64_t a_lo[kRH], a_hi[kRH];                 // compact (row, head) pairs of the pass
  __shared__ int a_row[kRH], a_head[kRH];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const T* qg = static_cast<const T*>(p.q);
  const T* kg = static_cast<const T*>(p.k);
  const T* vg = static_cast<const T*>(p.v);
  T* outg = static_cast<T*>(p.out);

  // CTA shape from the head counts only (model constants), never from Q, K or B.
  const int64_t G = p.Hq / p.Hk;
  const int64_t Gc = G < kRH ? G : kRH;
  const int64_t QT = kRH / Gc;
  const int64_t head_tiles = (G + Gc - 1) / Gc;
  const int64_t Z = L.chunk_slots;
  const int64_t z = blockIdx.x % Z, qtile = blockIdx.x / Z;
  const int64_t kvh = blockIdx.y / head_tiles, ht = blockIdx.y % head_tiles;
  const int64_t q0 = qtile * QT;
  const int nrows = static_cast<int>(min64(QT, p.Q - q0));
  const int64_t h0 = kvh * G + ht * Gc;
  const int nheads = static_cast<int>(min64(Gc, G - ht * Gc));

  for (int64_t b = blockIdx.z; b < p.B; b += gridDim.z) {
    __syncthreads();
    if (tid < nrows) {
      RowKeys r = read_row(p, b, q0 + tid);
      t_anchor[tid] = r.anchor;
      t_lo[tid] = r.lo;
      t_hi[tid] = r.hi;
    }
    __syncthreads();
    const T* kb = kg + b * p.k_bs + kvh * p.k_hs;
    const T* vb = vg + b * p.v_bs + kvh * p.v_hs;

    uint32_t remaining = (nrows >= 32) ? 0xffffffffu : ((1u << nrows) - 1u);
    while (remaining) {  // uniform across the CTA: every thread reads the same shared values
      // The pass: rows left with the smallest anchor (one pass per distinct anchor in the tile).
      int64_t A = INT64_MAX;
      for (int r = 0; r < nrows; ++r)
        if ((remaining >> r) & 1u) A = min64(A, t_anchor[r]);
      uint32_t pass = 0;
      int64_t glo = INT64_MAX, ghi = INT64_MIN;
      for (int r = 0; r < nrows; ++r)
        if (((remaining >> r) & 1u) && t_anchor[r] == A) {
          pass |= 1u << r;
          if (t_lo[r] < t_hi[r]) { glo = min64(glo, t_lo[r]); ghi = max64(ghi, t_hi[r]); }
        }
      remaining &= ~pass;
      if (glo >= ghi) continue;  // no row of the pass has keys: the merge kernel writes its zeros

      // This CTA's chunk of the pass: the z-th from the first chunk any of its rows touches.
      const int64_t c = floor_div(glo - A, kCK) + z;
      const int64_t chunk_lo = A + c * kCK, chunk_hi = chunk_lo + kCK;
      int Ra = 0;
      int64_t klo = INT64_MAX, khi = INT64_MIN;
      for (int r = 0; r < nrows; ++r) {
        if (!((pass >> r) & 1u) || t_lo[r] >= t_hi[r] || t_lo[r] >= chunk_hi || t_hi[r] <= chunk_lo) continue;
        klo = min64(klo, max64(t_lo[r], chunk_lo));
        khi = max64(khi, min64(t_hi[r], chunk_hi));
        for (int hh = 0; hh < nheads; ++hh, ++Ra)
          if (tid == 0) {
            a_row[Ra] = r;
            a_head[Ra] = hh;
            a_lo[Ra] = t_lo[r];
            a_hi[Ra] = t_hi[r];
          }
      }
      if (Ra == 0) continue;
      __syncthreads();

      // q rows of the pass (fp32)
      for (int v = tid; v < Ra * (D / VE); v += kT) {
        const int r = v / (D / VE), dv = v % (D / VE);
        const T* src = qg + b * p.q_bs + (h0 + a_head[r]) * p.q_hs + (q0 + a_row[r]) * p.q_ss + dv * VE;
        store_pack_f32(sQ + r * D + dv * VE, load_pack(src, L.q_vec), true);
      }
      __syncthreads();

      // Phase A, §6 step 1: the scores of every key of the chunk the pass reads.
      {
        const int kfirst = static_cast<int>(klo - chunk_lo), klast = static_cast<int>(khi - chunk_lo);
        if (Ra <= 4)
          chunk_scores<T, D, 4, 4>(kb, p.k_ss, L.k_vec, sQ, sS, a_lo, a_hi, Ra, chunk_lo, kfirst, klast, p.scale, p.softcap);
        else if (Ra <= 8)
          chunk_scores<T, D, 8, 2>(kb, p.k_ss, L.k_vec, sQ, sS, a_lo, a_hi, Ra, chunk_lo, kfirst, klast, p.scale, p.softcap);
        else
          chunk_scores<T, D, 16, 1>(kb, p.k_ss, L.k_vec, sQ, sS, a_lo, a_hi, Ra, chunk_lo, kfirst, klast, p.scale, p.softcap);
      }
      __syncthreads();

      // Phase B, §6 step 3 (m, l, p, α) of the chunk's blocks for pair r (warp w owns pairs w, w+8; lane t holds
      // slots 2t and 2t+1 of every block). The per-block maxima and the p/tree of each block are independent
      // work, done for all blocks at once; only the m chain and the l chain run block after block, exactly
      // as attn_block_update: m' = max(m, max_b), skip if -inf, α = exp(m - m'), l = l*α + tree(p).
      for (int r = warp; r < Ra; r += kWarps) {
        const int64_t lo = a_lo[r], hi = a_hi[r];
        float* sr = sS + r * kCK;
        float blk_max[kBPC];
#pragma unroll
        for (int bi = 0; bi < kBPC; ++bi) {
          const int64_t key0 = chunk_lo + bi * kBK + 2 * lane;
          const float s0 = (key0 >= lo && key0 < hi) ? sr[bi * kBK + 2 * lane] : -kInf;
          const float s1 = (key0 + 1 >= lo && key0 + 1 < hi) ? sr[bi * kBK + 2 * lane + 1] : -kInf;
          float mb = det_max(s0, s1);
#pragma unroll
          for (int off = 16; off >= 1; off /= 2) mb = det_max(mb, __shfl_xor_sync(0xffffffffu, mb, off));
          blk_max[bi] = mb;
        }
        AttnState st;  // empty (-inf, 0)
        float m_after[kBPC], alpha[kBPC];
        uint32_t absorbed = 0;  // bit bi: block bi is absorbed (visited and m' > -inf)
#pragma unroll
        for (int bi = 0; bi < kBPC; ++bi) {
          const int64_t bs = chunk_lo + bi * kBK;
          alpha[bi] = 1.0f;
          if (bs < hi && bs + kBK > lo) {  // the row visits the block
            const AttnBlockStep step = attn_block_step(st.m, blk_max[bi]);
            if (!step.skip) {
              absorbed |= 1u << bi;
              alpha[bi] = step.alpha;
              st.m = step.m_new;
            }
          }
          m_after[bi] = st.m;
        }
        float tree[kBPC];
#pragma unroll
        for (int bi = 0; bi < kBPC; ++bi) {
          tree[bi] = 0.0f;
          if ((absorbed >> bi) & 1u) {
            const int64_t key0 = chunk_lo + bi * kBK + 2 * lane;
            float* sb = sr + bi * kBK;
            const float p0 = (key0 >= lo && key0 < hi) ? attn_prob(sb[2 * lane], m_after[bi]) : 0.0f;  // masked: 0
            const float p1 = (key0 + 1 >= lo && key0 + 1 < hi) ? attn_prob(sb[2 * lane + 1], m_after[bi]) : 0.0f;
            sb[2 * lane] = p0;
            sb[2 * lane + 1] = p1;
            // bottom-up pairwise tree over the 64 slots: pair sums in-lane, then XOR offsets 1..16
            float t = p0 + p1;
#pragma unroll
            for (int off = 1; off < 32; off *= 2) t = t + __shfl_xor_sync(0xffffffffu, t, off);
            tree[bi] = t;
          }
        }
#pragma unroll
        for (int bi = 0; bi < kBPC; ++bi)
          if ((absorbed >> bi) & 1u) st.l = attn_l_update(st.l, alpha[bi], tree[bi]);
        if (lane < kBPC) {
          float a = alpha[0];
          int sk = !(absorbed & 1u);
#pragma unroll
          for (int bi = 1; bi < kBPC; ++bi)
            if (lane == bi) { a = alpha[bi]; sk = !((absorbed >> bi) & 1u); }
          sAlpha[r * kBPC + lane] = a;
          sSkip[r * kBPC + lane] = sk;
        }
        if (lane == 0) {
          sM[r] = st.m;
          sL[r] = st.l;
        }
      }
      __syncthreads();

      // Phase C, §6 step 3 (o): V block after block (the next one loads while this one is used).
      float o[kPairs];
#pragma unroll
      for (int i = 0; i < kPairs; ++i) o[i] = 0.0f;
      const int np_pv = (Ra * Dv + kT - 1) / kT;
      const int64_t b_first = floor_div(klo - A, kBK), b_last = floor_div(khi - 1 - A, kBK);
      BlockStage<T, Dv> stage;
      stage.load(vb, p.v_ss, A + b_first * kBK, klo, khi, L.v_vec);
      for (int64_t blk = b_first; blk <= b_last; ++blk) {
        const int64_t bs = A + blk * kBK;  // §6 step 2: block anchored at A
        const int bi = static_cast<int>(blk - c * kBPC);
        stage.store(sV, bs, klo, khi);
        __syncthreads();
        if (blk < b_last) stage.load(vb, p.v_ss, bs + kBK, klo, khi, L.v_vec);
        const float* sP = sS + bi * kBK;
        const float* al = sAlpha + bi;
        const int* sk = sSkip + bi;
        if (np_pv <= kPairsQuarter) block_pv<kPairsQuarter, kPairs, Dv>(sP, sV, al, sk, a_lo, a_hi, Ra, bs, o);
        else if (np_pv <= kPairsHalf) block_pv<kPairsHalf, kPairs, Dv>(sP, sV, al, sk, a_lo, a_hi, Ra, bs, o);
        else block_pv<kPairs, kPairs, Dv>(sP, sV, al, sk, a_lo, a_hi, Ra, bs, o);
        __syncthreads();
      }

      // Chunk done: workspace slot, or finish a row whose keys all lie in this chunk (§6 steps 4-5).
#pragma unroll
      for (int i = 0; i < kPairs; ++i) {
        const int idx = tid + kT * i;
        if (idx >= Ra * Dv) continue;
        const int r = idx / Dv, d = idx % Dv;
        const int64_t qi = q0 + a_row[r], h = h0 + a_head[r];
        const RowKeys rk{A, a_lo[r], a_hi[r]};
        const int64_t cf = first_chunk(rk);
        if (cf == last_chunk(rk)) {
          AttnState run;
          float O = 0.0f;
          AttnState chunk;
          chunk.m = sM[r];
          chunk.l = sL[r];
          attn_merge_chunk(run, &O, chunk, &o[i], 1);
          outg[((b * p.Hq + h) * p.Q + qi) * Dv + d] = from_float<T>(attn_output(run, O));
        } else {
          float* slot = L.workspace + (((b * p.Q + qi) * p.Hq + h) * Z + (c - cf)) * (Dv + 2);
          slot[2 + d] = o[i];
          if (d == 0) {
            slot[0] = sM[r];
            slot[1] = sL[r];
          }
        }
      }
      __syncthreads();
    }
  }
}

// §6 steps 4-5 for every (row, head) whose keys span two or more chunks; zeros for rows without keys.
template <typename T, int Dv>
__global__ void __launch_bounds__(kAttnMergeThreads) attention_merge_kernel(const AttentionLaunch L) {
  const AttentionParams& p = L.p;
  T* outg = static_cast<T*>(p.out);
  const int64_t total = p.B * p.Q * p.Hq;
  for (int64_t rh = blockIdx.x; rh < total; rh += gridDim.x) {
    const int64_t h = rh % p.Hq, bq = rh / p.Hq, qi = bq % p.Q, b = bq / p.Q;
    const RowKeys rk = read_row(p, b, qi);
    T* y = outg + ((b * p.Hq + h) * p.Q + qi) * Dv;
    if (rk.lo >= rk.hi) {
      for (int d = threadIdx.x; d < Dv; d += blockDim.x) y[d] = from_float<T>(0.0f);
      continue;
    }
    const int64_t cf = first_chunk(rk), n = last_chunk(rk) - cf + 1;
    if (n == 1) continue;  // finished by the chunk kernel
    const float* ws = L.workspace + rh * L.chunk_slots * (Dv + 2);
    for (int d = threadIdx.x; d < Dv; d += blockDim.x) {
      AttnState run;
      float O = 0.0f;
      for (int64_t c = 0; c < n; ++c) {  // ascending chunks
        const float* s = ws + c * (Dv + 2);
        AttnState chunk;
        chunk.m = s[0];
        chunk.l = s[1];
        attn_merge_chunk(run, &O, chunk, s + 2 + d, 1);
      }
      y[d] = from_float<T>(attn_output(run, O));
    }
  }
}

template <typename T, int D, int Dv>
inline int launch_typed(const AttentionLaunch& L) {
  using SM = ChunkSmem<T, D, Dv>;
  const AttentionParams& p = L.p;
  cudaStream_t stream = static_cast<cudaStream_t>(L.stream);
  const int64_t G = p.Hq / p.Hk;
  const int64_t Gc = G < kRH ? G : kRH;
  const int64_t QT = kRH / Gc;
  const int64_t head_tiles = (G + Gc - 1) / Gc;
  const int64_t qtiles = (p.Q + QT - 1) / QT;
  auto chunk = attention_chunk_kernel<T, D, Dv>;
  cudaError_t e = cudaFuncSetAttribute(chunk, cudaFuncAttributeMaxDynamicSharedMemorySize, int(SM::bytes));
  if (e != cudaSuccess) return int(e);
  const dim3 grid(unsigned(L.chunk_slots * qtiles), unsigned(p.Hk * head_tiles), unsigned(p.B < 65535 ? p.B : 65535));
  chunk<<<grid, kT, SM::bytes, stream>>>(L);
  const int64_t total = p.B * p.Q * p.Hq;
  const unsigned mgrid = unsigned(total < (int64_t(1) << 30) ? total : (int64_t(1) << 30));
  attention_merge_kernel<T, Dv><<<mgrid, kAttnMergeThreads, 0, stream>>>(L);
  return int(cudaGetLastError());
}

template <typename T>
int launch_dtype(const AttentionLaunch& L) {
  const int64_t D = L.p.D, Dv = L.p.Dv;
#define DETOPS_ATTN_CASE(d, dv) \
  if (D == d && Dv == dv) return launch_typed<T, d, dv>(L);
  DETOPS_ATTN_HEAD_DIMS(DETOPS_ATTN_CASE)
#undef DETOPS_ATTN_CASE
  return int(cudaErrorInvalidValue);  // the glue refuses other head dims with a reason first
}

}  // namespace attn_cuda
}  // namespace detops
