// Tensor-core attention: the §6b block math of docs/REDUCTION_ORDER.md, per thread's slots: the exponent units,
// the softmax of a block (u, mask, block max, α, p̃, l), the mma.sync block (S = Q Kᵀ, P·V) and the wgmma ring step
// (wg_scores, wg_pv, tc_step_wg). Both kernels of attention_tc_kernels.cuh call these.
#pragma once
#include "attention_tc_layout.cuh"
#include "attention_tc_ptx.cuh"

namespace detops {
namespace attn_tc {

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

}  // namespace attn_tc
}  // namespace detops
