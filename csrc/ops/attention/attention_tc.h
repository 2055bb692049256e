// attention, tensor-core CUDA path: launcher interface (pure C++, no torch, no CUDA headers).
// Order: docs/REDUCTION_ORDER.md §6b (bf16/fp16, D == Dv in {64, 128}); every other case keeps the
// CUDA-core path of §6 (attention_kernels.cuh). The path is chosen by dtype and head dim only.
#pragma once
#include <cstdint>
#include "attention_launch.h"

namespace detops {

inline bool attention_tc_supports(AttnDtype dtype, int64_t D, int64_t Dv) {
  return (dtype == AttnDtype::BF16 || dtype == AttnDtype::F16) && D == Dv && (D == 64 || D == 128);
}

// Launches the tensor-core kernels on L.stream: the wgmma kernel for the tiles of >= kAttnTcWgMinSlots slots (it
// merges its chunks itself), the mma.sync chunk kernel and its chunk-merge kernel (§6 steps 4-5, one warp per row
// and head) for a smaller last tile; the workspace is the one of attention_workspace_floats(p). Returns a
// cudaError_t as int (0 = success).
int attention_tc_launch(const AttentionLaunch& L);

}  // namespace detops
