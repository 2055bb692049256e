// attention backward on the tensor cores (bf16/fp16, D == Dv in {64, 128}): docs/REDUCTION_ORDER.md §10b.
// Pure CUDA (raw pointers, a stream); the torch glue is attention_backward.cpp.
//
// Every block is 64 queries or 64 keys counted from its document's first token, and every loop runs over such
// blocks in ascending order, so each chain below is a function of the document alone (T3): the same documents give
// the same bits padded, packed at any offset or into any number of rows. No atomics: every output element has one
// writer, which owns its whole chain.
//  - Kernel 1 (attn_bwd_dq_kernel), one CTA per (query block, query head), 4 warps x 16 queries: pass 1 walks the
//    key blocks the block's queries attend (the union of their intervals) and keeps each query's online max and
//    sum, giving its log2-sum-exp `lse` (in κ units); pass 2 walks them again: S = Q·Kᵀ, P = 2^(u·κ - lse),
//    dP = dO·Vᵀ, dS = P·(dP - δ), dq += dS·K; dq·scale is written once.
//  - Kernel 2 (attn_bwd_dkdv_kernel), one CTA per (key block, kv head), 4 warps x 16 keys: over the group's query
//    heads in ascending order and, in each, the document's query blocks in ascending order (those attending a key
//    of the block): Sᵀ = K·Qᵀ, Pᵀ with kernel 1's lse, dPᵀ = V·dOᵀ, dSᵀ; dv += Pᵀ·dO, dk += dSᵀ·Q; dk·scale and
//    dv written once.
// P and dS are rounded to the input dtype (RNE) as the operands of the tensor-core products; every accumulator is
// fp32. A lane holds the mma.sync m16n8 C fragment of its rows (lane/4 and +8), which is also the A fragment of the
// next product (no shared memory between the products). Shared-memory rows are padded by 16 bytes, so that the
// ldmatrix row addresses of a phase fall in distinct banks.
#include <cuda_runtime.h>
#include <cstdint>
#include <type_traits>
#include "attention_backward.h"
#include "attention_math.h"
#include "attention_tc_math.cuh"

namespace detops {
namespace attn_bwd {

using attn_tc::cp_async16;
using attn_tc::cp_async_commit;
using attn_tc::cp_async_wait;
using attn_tc::ldsm_x4;
using attn_tc::ldsm_x4_trans;
using attn_tc::mma16816;
using attn_tc::round_pack;
using attn_tc::tc_ex2;
using attn_tc::tc_max;
using attn_tc::TcExpo;

constexpr int kB = kAttnBwdBlock;
constexpr int kThreads = kAttnBwdThreads;
constexpr int kNB = kB / 8;  // n8 tiles of a block's 64 columns
static_assert(kB == 64 && kThreads == 128, "4 warps of 16 rows cover a block of 64; 8 n8 tiles = 4 k16 steps");
constexpr float kInf = __builtin_huge_valf();

template <int D>
struct Smem {
  static constexpr int kStride = D + 8;                        // elements per staged row (16 bytes of padding)
  static constexpr int kTile = kB * kStride;                   // one staged block of 64 rows
  // two tiles staged once and two ring buffers of two tiles; 2 x 4 per-row ints / floats (lo, hi, lse, δ)
  static constexpr size_t bytes = 6 * kTile * sizeof(uint16_t) + 8 * kB * sizeof(float);
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// Rows [0, valid) of a block from global memory (row r at g + r * stride, D contiguous elements, 16-byte aligned)
// into a staged tile; rows past `valid` (past the document's end) are zeros.
template <int D>
__device__ __forceinline__ void stage(uint16_t* s, const uint16_t* g, int64_t stride, int valid, int tid) {
  constexpr int kPieces = D / 8;  // 16-byte pieces per row
  for (int x = tid; x < kB * kPieces; x += kThreads) {
    const int r = x / kPieces, c = (x % kPieces) * 8;
    uint16_t* dst = s + r * Smem<D>::kStride + c;
    if (r < valid) cp_async16(dst, g + r * stride + c);
    else *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
  }
}

// c[j] (the warp's rows 16w .. 16w+15, columns 8j .. 8j+7) = Σ_d A[row][d]·B[column][d]: k16 steps over d ascending
// from a zero accumulator, A and B both staged row-major (rows x D).
template <bool BF, int D>
__device__ __forceinline__ void block_dots(float (&c)[kNB][4], const uint16_t* sA, const uint16_t* sB, int w, int lane) {
  constexpr int S = Smem<D>::kStride;
#pragma unroll
  for (int j = 0; j < kNB; ++j) c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a[4];
    ldsm_x4(a, smem_addr(sA + (16 * w + (lane & 15)) * S + 16 * kk + (lane >> 4) * 8));
#pragma unroll
    for (int jp = 0; jp < kNB / 2; ++jp) {
      uint32_t b[4];
      ldsm_x4(b, smem_addr(sB + (16 * jp + (lane & 7) + ((lane >> 4) << 3)) * S + 16 * kk + ((lane >> 3) & 1) * 8));
      mma16816<BF>(c[2 * jp], a, b[0], b[1]);
      mma16816<BF>(c[2 * jp + 1], a, b[2], b[3]);
    }
  }
}

// acc[n] (the warp's rows, columns d = 8n .. 8n+7) += Σ_r X[row][r]·B[r][d] over the block's 64 rows r in k16 steps
// ascending: X = x rounded to T (the warp's C fragments, packed as the A operand), B staged row-major (64 x D).
template <bool BF, int D>
__device__ __forceinline__ void block_accumulate(float (&acc)[D / 8][4], const float (&x)[kNB][4], const uint16_t* sB,
                                                 int lane) {
  constexpr int S = Smem<D>::kStride;
#pragma unroll
  for (int ks = 0; ks < kB / 16; ++ks) {
    const uint32_t a[4] = {round_pack<BF>(x[2 * ks][0], x[2 * ks][1]), round_pack<BF>(x[2 * ks][2], x[2 * ks][3]),
                           round_pack<BF>(x[2 * ks + 1][0], x[2 * ks + 1][1]),
                           round_pack<BF>(x[2 * ks + 1][2], x[2 * ks + 1][3])};
#pragma unroll
    for (int np = 0; np < D / 16; ++np) {
      uint32_t b[4];
      ldsm_x4_trans(b, smem_addr(sB + (16 * ks + (lane & 7) + ((lane >> 3) & 1) * 8) * S + 16 * np + (lane >> 4) * 8));
      mma16816<BF>(acc[2 * np], a, b[0], b[1]);
      mma16816<BF>(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// The score in u units (§6b's tc_expo: the dot itself when raw, else attn_score) and, with a softcap, the tanh
// factor th of its derivative (dS picks up 1 - th²).
struct Score {
  float u, th;
};
__device__ __forceinline__ Score score_of(float dot, const TcExpo& x) {
  if (x.raw) return Score{dot, 0.0f};
  if (!(x.softcap > 0.0f)) return Score{__fmul_rn(dot, x.scale), 0.0f};
  const float th = det_tanh(__fdiv_rn(__fmul_rn(dot, x.scale), x.softcap));
  return Score{__fmul_rn(x.softcap, th), th};
}

// dS = P·(dP - δ), with a softcap · (1 - th²); exact zero off the attended keys.
__device__ __forceinline__ float dscore(bool ok, float p, float dp, float delta, const Score& s, const TcExpo& x) {
  if (!ok) return 0.0f;
  float ds = __fmul_rn(p, __fsub_rn(dp, delta));
  if (!x.raw && x.softcap > 0.0f) ds = __fmul_rn(ds, __fsub_rn(1.0f, __fmul_rn(s.th, s.th)));
  return ds;
}

// Writes rows [0, valid) of the warp's accumulators (·mul, rounded to T) to a contiguous (rows x D) block.
template <bool BF, int D>
__device__ __forceinline__ void write_block(uint16_t* out, const float (&acc)[D / 8][4], float mul, int valid, int w,
                                            int lane) {
  const int r0 = 16 * w + (lane >> 2), c0 = 2 * (lane & 3);
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = r0 + 8 * h;
      if (r < valid)
        *reinterpret_cast<uint32_t*>(out + int64_t(r) * D + 8 * n + c0) =
            round_pack<BF>(__fmul_rn(acc[n][2 * h], mul), __fmul_rn(acc[n][2 * h + 1], mul));
    }
  }
}

struct Block {
  int doc, index, b, start, len, first_block;
};
__device__ __forceinline__ Block block_of(const AttnBackwardParams& p, int64_t w) {
  Block k;
  k.doc = p.work[2 * w];
  k.index = p.work[2 * w + 1];
  k.b = p.docs[4 * k.doc];
  k.start = p.docs[4 * k.doc + 1];
  k.len = p.docs[4 * k.doc + 2];
  k.first_block = p.docs[4 * k.doc + 3];
  return k;
}

// Kernel 1: dq and each query's lse for one (query block, query head). K / V blocks go through a ring of two
// buffers: block kb+1 is copied while block kb is computed (scheduling only: the same instructions per element).
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attn_bwd_dq_kernel(const AttnBackwardParams p) {
  constexpr bool BF = std::is_same<T, bf16_t>::value;
  using SM = Smem<D>;
  extern __shared__ __align__(16) uint16_t smem[];
  uint16_t *sQ = smem, *sG = sQ + SM::kTile, *sK = sG + SM::kTile, *sV = sK + 2 * SM::kTile;  // sK, sV: 2 each
  int* s_lo = reinterpret_cast<int*>(sV + 2 * SM::kTile);
  int* s_hi = s_lo + kB;
  float* s_delta = reinterpret_cast<float*>(s_hi + kB);

  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int64_t h = blockIdx.y, kvh = h / (p.Hq / p.Hk);
  const Block blk = block_of(p, blockIdx.x);
  const int span_lo = p.span[2 * blockIdx.x], span_hi = p.span[2 * blockIdx.x + 1];
  if (span_lo >= span_hi) return;  // no query of the block attends a key: its dq stays zero
  const int r0 = blk.index * kB, valid = min(kB, blk.len - r0);
  const int64_t pos0 = blk.start + r0;  // the block's first query in its batch row
  stage<D>(sQ, static_cast<const uint16_t*>(p.q) + blk.b * p.q_bs + h * p.q_hs + pos0 * p.q_ss, p.q_ss, valid, tid);
  stage<D>(sG, static_cast<const uint16_t*>(p.grad) + blk.b * p.g_bs + h * p.g_hs + pos0 * p.g_ss, p.g_ss, valid, tid);
  const int64_t row_stat = (blk.b * p.Hq + h) * p.Q + pos0;  // (b, h, pos0) in the (B, Hq, Q) statistics
  if (tid < kB) {
    const bool in = tid < valid;
    const int64_t tok = blk.b * p.Q + pos0 + tid;
    s_lo[tid] = in ? p.keys[2 * tok] : 0;
    s_hi[tid] = in ? p.keys[2 * tok + 1] : 0;
    s_delta[tid] = in ? p.delta[row_stat + tid] : 0.0f;
  }
  cp_async_commit();

  const TcExpo x = attn_tc::tc_expo(p.scale, p.softcap);
  const int kb0 = span_lo / kB, kb1 = (span_hi + kB - 1) / kB;
  const uint16_t* kbase = static_cast<const uint16_t*>(p.k) + blk.b * p.k_bs + kvh * p.k_hs + int64_t(blk.start) * p.k_ss;
  const uint16_t* vbase = static_cast<const uint16_t*>(p.v) + blk.b * p.v_bs + kvh * p.v_hs + int64_t(blk.start) * p.v_ss;
  const auto stage_keys = [&](int kb, int buf, bool with_v) {
    const int kvalid = min(kB, blk.len - kb * kB);
    stage<D>(sK + buf * SM::kTile, kbase + int64_t(kb) * kB * p.k_ss, p.k_ss, kvalid, tid);
    if (with_v) stage<D>(sV + buf * SM::kTile, vbase + int64_t(kb) * kB * p.v_ss, p.v_ss, kvalid, tid);
    cp_async_commit();
  };
  // Waits for block kb's copies (buffer `buf`) after requesting block kb+1's into the other buffer.
  const auto next_keys = [&](int kb, int buf, bool with_v) {
    if (kb + 1 < kb1) {
      stage_keys(kb + 1, buf ^ 1, with_v);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
  };
  const int rw[2] = {16 * w + (lane >> 2), 16 * w + (lane >> 2) + 8};  // the lane's two rows in the block
  int lo[2], hi[2];

  // Pass 1: each row's max m (u units) and sum l = Σ 2^(u·κ - m·κ) over its keys, online over the key blocks in
  // ascending order: per block m' = max(m, block max), l = l·2^(m·κ - m'·κ) + r with r the lane's 16 terms in
  // ascending (tile, element) order; a row with no key in the block keeps its state. lse = m·κ + log2(l), where
  // l = (l_0 + l_1) + (l_2 + l_3) over the quad.
  float m[2] = {-kInf, -kInf}, l[2] = {0.0f, 0.0f};
  stage_keys(kb0, 0, false);
  for (int kb = kb0, buf = 0; kb < kb1; ++kb, buf ^= 1) {
    next_keys(kb, buf, false);
    if (kb == kb0) {
#pragma unroll
      for (int i = 0; i < 2; ++i) lo[i] = s_lo[rw[i]], hi[i] = s_hi[rw[i]];
    }
    float s[kNB][4];
    block_dots<BF, D>(s, sQ, sK + buf * SM::kTile, w, lane);
    __syncthreads();  // every warp has read this buffer before the next iteration refills it
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float bm = -kInf;
#pragma unroll
      for (int j = 0; j < kNB; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int key = kb * kB + 8 * j + 2 * (lane & 3) + e;
          const float u = score_of(s[j][2 * i + e], x).u;
          s[j][2 * i + e] = (key >= lo[i] && key < hi[i]) ? u : -kInf;
          bm = tc_max(bm, s[j][2 * i + e]);
        }
      bm = tc_max(bm, __shfl_xor_sync(0xffffffffu, bm, 1));
      bm = tc_max(bm, __shfl_xor_sync(0xffffffffu, bm, 2));
      const bool visits = lo[i] < hi[i] && hi[i] > kb * kB && lo[i] < (kb + 1) * kB;
      const float mn = tc_max(m[i], bm);
      if (!visits || mn == -kInf) continue;
      const float mk = __fmul_rn(mn, x.kappa);
      const float alpha = tc_ex2(__fsub_rn(__fmul_rn(m[i], x.kappa), mk));
      float r = 0.0f;
#pragma unroll
      for (int j = 0; j < kNB; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) r = __fadd_rn(r, tc_ex2(__fmaf_rn(s[j][2 * i + e], x.kappa, -mk)));
      l[i] = __fadd_rn(__fmul_rn(l[i], alpha), r);
      m[i] = mn;
    }
  }
  float lse[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float ls = __fadd_rn(l[i], __shfl_xor_sync(0xffffffffu, l[i], 1));
    ls = __fadd_rn(ls, __shfl_xor_sync(0xffffffffu, ls, 2));
    lse[i] = (m[i] == -kInf) ? 0.0f : __fadd_rn(__fmul_rn(m[i], x.kappa), log2f(ls));
    if ((lane & 3) == 0 && rw[i] < valid) p.lse[row_stat + rw[i]] = lse[i];
  }

  // Pass 2: dq = scale · Σ_keys dS·k, the key blocks in ascending order, each in k16 steps of keys ascending.
  float dq[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
  stage_keys(kb0, 0, true);
  for (int kb = kb0, buf = 0; kb < kb1; ++kb, buf ^= 1) {
    next_keys(kb, buf, true);
    const uint16_t* sKb = sK + buf * SM::kTile;
    float s[kNB][4], dp[kNB][4];
    block_dots<BF, D>(s, sQ, sKb, w, lane);
    block_dots<BF, D>(dp, sG, sV + buf * SM::kTile, w, lane);
#pragma unroll
    for (int j = 0; j < kNB; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = e >> 1, key = kb * kB + 8 * j + 2 * (lane & 3) + (e & 1);
        const bool ok = key >= lo[i] && key < hi[i];
        const Score sc = score_of(s[j][e], x);
        const float pr = ok ? tc_ex2(__fmaf_rn(sc.u, x.kappa, -lse[i])) : 0.0f;
        s[j][e] = dscore(ok, pr, dp[j][e], s_delta[rw[i]], sc, x);
      }
    block_accumulate<BF, D>(dq, s, sKb, lane);
    __syncthreads();  // every warp has read this buffer before the next iteration refills it
  }
  write_block<BF, D>(static_cast<uint16_t*>(p.dq) + ((blk.b * p.Hq + h) * p.Q + pos0) * D, dq, p.scale, valid, w, lane);
}

// Kernel 2: dk and dv for one (key block, kv head). The visited (head, query block) pairs go through a ring of two
// buffers (Q, dO and the queries' lo, hi, lse, δ): the next pair is copied while this one is computed.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attn_bwd_dkdv_kernel(const AttnBackwardParams p) {
  constexpr bool BF = std::is_same<T, bf16_t>::value;
  using SM = Smem<D>;
  extern __shared__ __align__(16) uint16_t smem[];
  uint16_t *sK = smem, *sV = sK + SM::kTile, *sQ = sV + SM::kTile, *sG = sQ + 2 * SM::kTile;  // sQ, sG: 2 each
  int* s_lo = reinterpret_cast<int*>(sG + 2 * SM::kTile);   // each of these: 2 x kB
  int* s_hi = s_lo + 2 * kB;
  float* s_lse = reinterpret_cast<float*>(s_hi + 2 * kB);
  float* s_delta = s_lse + 2 * kB;

  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int64_t kvh = blockIdx.y, G = p.Hq / p.Hk;
  const Block blk = block_of(p, blockIdx.x);
  const int k0 = blk.index * kB, kvalid = min(kB, blk.len - k0);
  const int64_t pos0 = blk.start + k0;
  stage<D>(sK, static_cast<const uint16_t*>(p.k) + blk.b * p.k_bs + kvh * p.k_hs + pos0 * p.k_ss, p.k_ss, kvalid, tid);
  stage<D>(sV, static_cast<const uint16_t*>(p.v) + blk.b * p.v_bs + kvh * p.v_hs + pos0 * p.v_ss, p.v_ss, kvalid, tid);
  cp_async_commit();

  const TcExpo x = attn_tc::tc_expo(p.scale, p.softcap);
  const int keys[2] = {k0 + 16 * w + (lane >> 2), k0 + 16 * w + (lane >> 2) + 8};  // the lane's two keys
  const int n_qblocks = (blk.len + kB - 1) / kB;
  // The next query block after qb that attends a key of this block (n_qblocks: none); the same for every head.
  const auto next_qb = [&](int qb) {
    for (++qb; qb < n_qblocks; ++qb) {
      const int64_t sb = int64_t(blk.first_block) + qb;
      const int lo = p.span[2 * sb], hi = p.span[2 * sb + 1];
      if (lo < hi && hi > k0 && lo < k0 + kB) break;
    }
    return qb;
  };
  const auto stage_queries = [&](int64_t hg, int qb, int buf) {
    const int64_t h = kvh * G + hg;
    const int q0 = qb * kB, qvalid = min(kB, blk.len - q0);
    const int64_t qpos0 = blk.start + q0, row_stat = (blk.b * p.Hq + h) * p.Q + qpos0;
    stage<D>(sQ + buf * SM::kTile, static_cast<const uint16_t*>(p.q) + blk.b * p.q_bs + h * p.q_hs + qpos0 * p.q_ss,
             p.q_ss, qvalid, tid);
    stage<D>(sG + buf * SM::kTile,
             static_cast<const uint16_t*>(p.grad) + blk.b * p.g_bs + h * p.g_hs + qpos0 * p.g_ss, p.g_ss, qvalid, tid);
    if (tid < kB) {
      const bool in = tid < qvalid;
      const int64_t tok = blk.b * p.Q + qpos0 + tid;
      s_lo[buf * kB + tid] = in ? p.keys[2 * tok] : 0;
      s_hi[buf * kB + tid] = in ? p.keys[2 * tok + 1] : 0;
      s_lse[buf * kB + tid] = in ? p.lse[row_stat + tid] : 0.0f;
      s_delta[buf * kB + tid] = in ? p.delta[row_stat + tid] : 0.0f;
    }
    cp_async_commit();
  };

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.0f;

  // One chain over (query head of the group ascending, query block ascending, k16 step of queries ascending).
  const int first_qb = next_qb(-1);
  int64_t hg = 0;
  int qb = first_qb, buf = 0;
  if (qb < n_qblocks) stage_queries(hg, qb, buf);
  while (qb < n_qblocks) {
    int64_t nhg = hg;
    int nqb = next_qb(qb);
    if (nqb >= n_qblocks) nhg += 1, nqb = first_qb;
    const bool more = nhg < G;
    if (more) {
      stage_queries(nhg, nqb, buf ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint16_t *sQb = sQ + buf * SM::kTile, *sGb = sG + buf * SM::kTile;
    const int *lo = s_lo + buf * kB, *hi = s_hi + buf * kB;
    const float *lse = s_lse + buf * kB, *delta = s_delta + buf * kB;
    float s[kNB][4], dp[kNB][4];
    block_dots<BF, D>(s, sK, sQb, w, lane);   // Sᵀ: rows = the warp's keys, columns = the block's queries
    block_dots<BF, D>(dp, sV, sGb, w, lane);  // dPᵀ
#pragma unroll
    for (int j = 0; j < kNB; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int q = 8 * j + 2 * (lane & 3) + (e & 1), key = keys[e >> 1];
        const bool ok = key >= lo[q] && key < hi[q];
        const Score sc = score_of(s[j][e], x);
        const float pr = ok ? tc_ex2(__fmaf_rn(sc.u, x.kappa, -lse[q])) : 0.0f;
        dp[j][e] = dscore(ok, pr, dp[j][e], delta[q], sc, x);
        s[j][e] = pr;
      }
    block_accumulate<BF, D>(dv, s, sGb, lane);
    block_accumulate<BF, D>(dk, dp, sQb, lane);
    __syncthreads();  // every warp has read this buffer before the next iteration refills it
    if (!more) break;
    hg = nhg, qb = nqb, buf ^= 1;
  }
  cp_async_wait<0>();  // a CTA whose key block no query attends still committed its K/V copies
  const int64_t out0 = (blk.b * p.Hk + kvh) * p.Q + pos0;
  write_block<BF, D>(static_cast<uint16_t*>(p.dk) + out0 * D, dk, p.scale, kvalid, w, lane);
  write_block<BF, D>(static_cast<uint16_t*>(p.dv) + out0 * D, dv, 1.0f, kvalid, w, lane);
}

template <typename T, int D>
int launch_typed(const AttnBackwardParams& p) {
  const size_t bytes = Smem<D>::bytes;
  auto k1 = attn_bwd_dq_kernel<T, D>;
  auto k2 = attn_bwd_dkdv_kernel<T, D>;
  cudaError_t e = cudaFuncSetAttribute(k1, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (e != cudaSuccess) return int(e);
  e = cudaFuncSetAttribute(k2, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (e != cudaSuccess) return int(e);
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  k1<<<dim3(unsigned(p.n_blocks), unsigned(p.Hq)), kThreads, bytes, stream>>>(p);
  e = cudaGetLastError();
  if (e != cudaSuccess) return int(e);
  k2<<<dim3(unsigned(p.n_blocks), unsigned(p.Hk)), kThreads, bytes, stream>>>(p);
  return int(cudaGetLastError());
}

}  // namespace attn_bwd

int attention_backward_tc_launch(const AttnBackwardParams& p) {
  if (!attention_backward_tc_supports(p.dtype, p.D, p.D)) return int(cudaErrorInvalidValue);
  if (p.n_blocks == 0 || p.Hq == 0) return 0;
  if (p.dtype == AttnDtype::BF16)
    return p.D == 64 ? attn_bwd::launch_typed<bf16_t, 64>(p) : attn_bwd::launch_typed<bf16_t, 128>(p);
  return p.D == 64 ? attn_bwd::launch_typed<fp16_t, 64>(p) : attn_bwd::launch_typed<fp16_t, 128>(p);
}

}  // namespace detops
