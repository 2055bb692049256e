// attention: parameters shared by the CPU and CUDA backends. Order: REDUCTION_ORDER.md §6. Pure C++.
#pragma once
#include <cstdint>

namespace detops {

// q (B, Hq, Q, D), k (B, Hk, K, D), v (B, Hk, K, Dv), any strides with a contiguous last dim;
// rows (B, Q, 3) int32 contiguous: [anchor, lo, hi] per query row (keys lo <= j < hi, blocks from anchor);
// out (B, Hq, Q, Dv) contiguous. Query head h reads kv head h / (Hq / Hk) (GQA, un-expanded K/V).
struct AttentionParams {
  int64_t B = 0, Hq = 0, Hk = 0, Q = 0, K = 0, D = 0, Dv = 0;
  const void* q = nullptr;
  int64_t q_bs = 0, q_hs = 0, q_ss = 0;
  const void* k = nullptr;
  int64_t k_bs = 0, k_hs = 0, k_ss = 0;
  const void* v = nullptr;
  int64_t v_bs = 0, v_hs = 0, v_ss = 0;
  const int32_t* rows = nullptr;
  void* out = nullptr;
  float scale = 1.0f;
  float softcap = 0.0f;  // <= 0: none
};

}  // namespace detops
