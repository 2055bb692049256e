// attention: the per-row arithmetic of docs/REDUCTION_ORDER.md §6, DETOPS_HD and pure C++, so the CPU
// kernel (attention_cpu.cpp) and the CUDA kernels call the very same functions and CPU == CUDA bitwise
// follows from doing the same steps in the same order. Requires -ffp-contract=off / --fmad=false.
//
// One query row: keys lo <= j < hi (clamped to [0, K)), blocks of kAttnBlockKeys and chunks of
// kAttnChunkKeys measured from `anchor` (the key index of the row's sequence position 0; may be negative).
// Masked keys are never read: they have no score, p = 0 in the block's tree, and no term in o.
#pragma once
#include <cstdint>
#include "../../reduce/reduce.h"

namespace detops {

constexpr int kAttnBlocksPerChunk = kAttnChunkKeys / kAttnBlockKeys;

// floor(a / b) for b > 0 (anchors may lie after keys, e.g. a rolling cache, so a - anchor can be negative).
DETOPS_HD int64_t attn_floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

// The key blocks a row visits: block index b covers keys [anchor + b*BK, anchor + (b+1)*BK).
struct AttnRowBlocks {
  int64_t anchor, lo, hi;   // lo, hi clamped to [0, K)
  int64_t first_block, last_block;  // inclusive; empty when lo >= hi
  DETOPS_HD bool empty() const { return lo >= hi; }
  DETOPS_HD int64_t block_start(int64_t b) const { return anchor + b * kAttnBlockKeys; }
  DETOPS_HD int64_t chunk_of(int64_t b) const { return attn_floor_div(b, kAttnBlocksPerChunk); }
  // The valid slots [first_slot, last_slot) of block b (slot i = key block_start(b) + i).
  DETOPS_HD int first_slot(int64_t b) const {
    int64_t f = lo - block_start(b);
    return f > 0 ? int(f) : 0;
  }
  DETOPS_HD int last_slot(int64_t b) const {
    int64_t l = hi - block_start(b);
    return l < kAttnBlockKeys ? int(l) : kAttnBlockKeys;
  }
};
DETOPS_HD AttnRowBlocks attn_row_blocks(int32_t anchor, int32_t lo, int32_t hi, int64_t K) {
  AttnRowBlocks r;
  r.anchor = anchor;
  r.lo = lo < 0 ? 0 : lo;
  r.hi = hi > K ? K : hi;
  r.first_block = attn_floor_div(r.lo - r.anchor, kAttnBlockKeys);
  r.last_block = r.empty() ? r.first_block - 1 : attn_floor_div(r.hi - 1 - r.anchor, kAttnBlockKeys);
  return r;
}

// §6 step 1. Order: t = 0; t = t + q_d * k_d for d = 0, 1, ..., D-1.
template <typename TQ, typename TK>
DETOPS_HD float attn_dot(const TQ* q, const TK* k, int64_t D) {
  float t = 0.0f;
  for (int64_t d = 0; d < D; ++d) t = t + to_float(q[d]) * to_float(k[d]);
  return t;
}
// attn_dot for the n keys k_0, k_stride, ... at once into s[0..n): the same ascending-d chain per key, with the
// keys innermost so that the n independent chains overlap (and vectorise) instead of waiting on each other.
template <typename TQ, typename TK>
DETOPS_HD void attn_dots(const TQ* q, const TK* k, int64_t k_stride, int64_t D, float* s, int n) {
  for (int j = 0; j < n; ++j) s[j] = 0.0f;
  for (int64_t d = 0; d < D; ++d) {
    const float qd = to_float(q[d]);
    for (int j = 0; j < n; ++j) s[j] = s[j] + qd * to_float(k[j * k_stride + d]);
  }
}
// s = dot * scale; with softcap c > 0: s = c * tanh(s / c).
DETOPS_HD float attn_score(float dot, float scale, float softcap) {
  float s = dot * scale;
  if (softcap > 0.0f) s = softcap * det_tanh(s / softcap);
  return s;
}

// (m, l) of an online-softmax state; the o / O vector (Dv floats) lives with the caller. Empty: (-inf, 0, 0).
struct AttnState {
  float m = -kInf;
  float l = 0.0f;
};

// §6 step 3, the scalar part of absorbing one block into a chunk state.
// block_max: max over the block's valid scores (ascending: mb = -inf; mb = max(mb, s_j)).
struct AttnBlockStep {
  float m_new;  // max(m, block_max)
  float alpha;  // exp(m - m_new)
  bool skip;    // m_new == -inf: the state does not change
};
DETOPS_HD AttnBlockStep attn_block_step(float m_run, float block_max) {
  AttnBlockStep r;
  r.m_new = det_max(m_run, block_max);
  r.skip = (r.m_new == -kInf);
  r.alpha = r.skip ? 1.0f : det_exp(m_run - r.m_new);
  return r;
}
DETOPS_HD float attn_prob(float s, float m_new) { return det_exp(s - m_new); }
// l = l*alpha + tree_sum(p), tree_sum = tree_reduce over the kAttnBlockKeys slots (masked slots 0).
DETOPS_HD float attn_l_update(float l, float alpha, float tree_sum_p) { return l * alpha + tree_sum_p; }
// o_d = o_d*alpha + t_d, t_d = seq_sum of p_j * v_jd (t = 0; t = t + p_j * v_jd, ascending j).
DETOPS_HD float attn_o_update(float o, float alpha, float t) { return o * alpha + t; }

// The whole of §6 step 3 for one block, sequentially (the CPU kernel; the CUDA kernels split the same steps
// across threads). s[kAttnBlockKeys]: slots [first, last) hold the scores. v: the value row of slot `first`,
// rows v_stride apart. o: the chunk's Dv accumulators; t: Dv floats of scratch. s is overwritten.
template <typename TV>
DETOPS_HD void attn_block_update(AttnState& st, float* o, float* t, int64_t Dv, float* s, int first, int last,
                                 const TV* v, int64_t v_stride) {
  float block_max = -kInf;
  for (int i = first; i < last; ++i) block_max = det_max(block_max, s[i]);
  const AttnBlockStep step = attn_block_step(st.m, block_max);
  if (step.skip) return;
  float p[kAttnBlockKeys];
  float tree[kAttnBlockKeys];
  for (int i = 0; i < kAttnBlockKeys; ++i) {
    p[i] = (i >= first && i < last) ? attn_prob(s[i], step.m_new) : 0.0f;
    tree[i] = p[i];
  }
  st.l = attn_l_update(st.l, step.alpha, tree_reduce(tree, kAttnBlockKeys));
  // t_d = ((0 + p_first * v_first,d) + p_first+1 * v_first+1,d) + ... : per d ascending j; the d loop is
  // innermost only so that it vectorises across d without touching any d's order.
  for (int64_t d = 0; d < Dv; ++d) t[d] = 0.0f;
  for (int i = first; i < last; ++i) {
    const TV* vr = v + (i - first) * v_stride;
    const float pi = p[i];
    for (int64_t d = 0; d < Dv; ++d) t[d] = t[d] + pi * to_float(vr[d]);
  }
  for (int64_t d = 0; d < Dv; ++d) o[d] = attn_o_update(o[d], step.alpha, t[d]);
  st.m = step.m_new;
}

// §6 step 4: merge a finished chunk (c, o) into the running state (run, O), chunks in ascending order.
// m = max(M, m_c), a = exp(M - m), b = exp(m_c - m); both empty: stay empty. L = L*a + l_c*b, O_d likewise.
DETOPS_HD void attn_merge_chunk(AttnState& run, float* O, const AttnState& c, const float* o, int64_t Dv) {
  const AttnScales sc = merge_scales(run.m, c.m);
  if (sc.empty) return;
  run.l = run.l * sc.a + c.l * sc.b;
  for (int64_t d = 0; d < Dv; ++d) O[d] = O[d] * sc.a + o[d] * sc.b;
  run.m = sc.m;
}

// §6 step 5: y_d = O_d / L; an empty state (no key, or every score -inf) gives 0.
DETOPS_HD float attn_output(const AttnState& run, float O_d) { return run.m == -kInf ? 0.0f : O_d / run.l; }

}  // namespace detops
