// attention, tensor-core CUDA path: launcher interface (pure C++, no torch, no CUDA headers).
// Order: docs/REDUCTION_ORDER.md §6b (bf16/fp16, D == Dv in {64, 128}); every other case keeps the
// CUDA-core path of §6 (attention_kernels.cuh). The path is chosen by dtype and head dim only.
#pragma once
#include <cstdint>
#include "attention_launch.h"

namespace detops {

// CTA shape of the tensor-core chunk kernel: 64 (query row, query head) slots in 4 groups of 16 (the mma
// M = 16); each group has 4 warps, splitting a key block's scores by 16-key quarters and o by column quarters. Like kAttnThreads these decide only which slots share a staged K/V block, never
// the order of any slot's arithmetic (§6b); fixed, depending on nothing at run time. (They belong with
// constants.h; kept here until that file's owner moves them.)
constexpr int kAttnTcSlots = 64;
constexpr int kAttnTcThreads = 512;

inline bool attention_tc_supports(AttnDtype dtype, int64_t D, int64_t Dv) {
  return (dtype == AttnDtype::BF16 || dtype == AttnDtype::F16) && D == Dv && (D == 64 || D == 128);
}

// Launches the tensor-core chunk kernel and the §6 merge kernel on L.stream; the workspace is the one of
// attention_workspace_floats(p). Returns a cudaError_t as int (0 = success).
int attention_tc_launch(const AttentionLaunch& L);

}  // namespace detops
