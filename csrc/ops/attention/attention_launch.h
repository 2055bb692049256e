// attention, CUDA launcher interface: pure C++ (no torch, no CUDA headers), shared by the torch glue
// (attention_cuda.cpp) and the kernels (attention_kernels.cu). Order: REDUCTION_ORDER.md §6.
#pragma once
#include <cstdint>
#include "../../common/constants.h"
#include "attention.h"

namespace detops {

// Storage dtype of q/k/v/out.
enum class AttnDtype : int { F32 = 0, BF16 = 1, F16 = 2 };

struct AttentionLaunch {
  AttentionParams p;
  AttnDtype dtype = AttnDtype::F32;
  float* workspace = nullptr;  // attention_workspace_floats(p) floats; slot (row, head, chunk of the row)
  int64_t chunk_slots = 0;     // Z: chunks a row can touch = ceil(K / CK) + 1
  bool q_vec = false, k_vec = false, v_vec = false;  // 16-byte vector loads allowed (alignment only)
  void* stream = nullptr;      // cudaStream_t
};

// (D, Dv) pairs with a compiled kernel: D == Dv in {16, 32, 64, 80, 96, 128, 256}, and Dv = 16 with D = 32 or
// 64 (small value heads, as in the CPU test-suite). X(D, Dv) for each.
#define DETOPS_ATTN_HEAD_DIMS(X) \
  X(16, 16) X(32, 32) X(64, 64) X(80, 80) X(96, 96) X(128, 128) X(256, 256) X(32, 16) X(64, 16)

inline bool attention_cuda_supports(int64_t D, int64_t Dv) {
#define DETOPS_ATTN_SUPPORTS(d, dv) \
  if (D == d && Dv == dv) return true;
  DETOPS_ATTN_HEAD_DIMS(DETOPS_ATTN_SUPPORTS)
#undef DETOPS_ATTN_SUPPORTS
  return false;
}

// Chunks one row can touch: its keys lie in [0, K), so at most ceil(K / CK) + 1 anchored chunks.
inline int64_t attention_chunk_slots(int64_t K) { return (K + kAttnChunkKeys - 1) / kAttnChunkKeys + 1; }

// Workspace floats: per (batch, query row, query head, chunk slot) the partial state (m, l, o[Dv]).
inline int64_t attention_workspace_floats(const AttentionParams& p) {
  return p.B * p.Q * p.Hq * attention_chunk_slots(p.K) * (p.Dv + 2);
}

// Launches the chunk kernel and the merge kernel on `stream`. Returns a cudaError_t as int (0 = success).
int attention_launch(const AttentionLaunch& L);

}  // namespace detops
