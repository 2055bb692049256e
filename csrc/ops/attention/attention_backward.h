// attention backward on the tensor cores (bf16/fp16, D == Dv in {64, 128}, CUDA): docs/REDUCTION_ORDER.md §10b.
// Parameters shared by the torch glue (attention_backward.cpp) and the kernels (attention_backward_kernels.cu).
// Pure C++: no torch, no CUDA headers.
#pragma once
#include <cstdint>
#include "attention_launch.h"

namespace detops {

inline bool attention_backward_tc_supports(AttnDtype dtype, int64_t D, int64_t Dv) {
  return (dtype == AttnDtype::BF16 || dtype == AttnDtype::F16) && D == Dv && (D == 64 || D == 128);
}

struct AttnBackwardParams {
  int64_t B = 0, Hq = 0, Hk = 0, Q = 0, D = 0;   // self-attention: as many keys as queries
  // q, grad (B, Hq, Q, D); k, v (B, Hk, Q, D): unit stride along D, 16-byte aligned rows; strides in elements.
  const void *q = nullptr, *k = nullptr, *v = nullptr, *grad = nullptr;
  int64_t q_bs = 0, q_hs = 0, q_ss = 0, k_bs = 0, k_hs = 0, k_ss = 0, v_bs = 0, v_hs = 0, v_ss = 0;
  int64_t g_bs = 0, g_hs = 0, g_ss = 0;
  const float* delta = nullptr;   // (B, Hq, Q): Σ_d grad·out per query (row_dot, §10 rule 2)
  // The documents: (n_docs, 4) [batch entry, first token's position in the row, length, first block's index in
  // `work`]; `work` (n_blocks, 2) [document, block] lists every block of 64 of every document; `span`
  // (n_blocks, 2) the union [lo, hi) of the keys the block's queries attend (document coordinates; [0, 0) when none);
  // `keys` (B * Q, 2) each query token's [lo, hi) in document coordinates ([0, 0): attends nothing, or a pad).
  const int32_t *docs = nullptr, *work = nullptr, *span = nullptr, *keys = nullptr;
  int64_t n_blocks = 0;
  float scale = 1.0f, softcap = 0.0f;
  float* lse = nullptr;           // (B, Hq, Q) workspace: each query's log2-sum-exp in κ units (kernel 1 -> 2)
  void *dq = nullptr, *dk = nullptr, *dv = nullptr;   // contiguous (B, H, Q, D), zero-filled by the caller
  AttnDtype dtype = AttnDtype::BF16;
  void* stream = nullptr;         // cudaStream_t
};

// Kernel 1 (dq and each query's statistics), then kernel 2 (dk, dv). Returns a cudaError_t as int (0 = success).
int attention_backward_tc_launch(const AttnBackwardParams& p);

}  // namespace detops
