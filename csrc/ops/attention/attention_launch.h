// attention, CUDA launcher interface: pure C++ (no torch, no CUDA headers), shared by the torch glue
// (attention_cuda.cpp) and the kernels (attention_kernels.cu). Order: REDUCTION_ORDER.md §6.
#pragma once
#include <cstdint>
#include "../../common/constants.h"
#include "attention.h"

namespace detops {

// CTA shape of the chunk kernel. These decide only which (row, head) pairs share a staged K/V tile, never
// the order of any row's arithmetic (each row runs the §6 sequence on its own), so they may be anything;
// they are fixed here and depend on nothing at run time. (They belong with the constants of constants.h;
// kept here until that file's owner moves them.)
constexpr int kAttnThreads = 256;   // threads of a chunk-kernel CTA (8 warps)
constexpr int kAttnRowHeads = 16;   // (query row, query head) pairs per CTA, all of one kv head
constexpr int kAttnMergeThreads = 128;

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
