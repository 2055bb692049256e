// attention, tensor-core CUDA path: launcher interface (pure C++, no torch, no CUDA headers).
// Order: docs/REDUCTION_ORDER.md §6b (bf16/fp16, D == Dv a multiple of 8 up to 128); every other case keeps the
// CUDA-core path of §6 (attention_kernels.cuh). The path is chosen by dtype and head dim only.
#pragma once
#include <cstdint>
#include "../../common/host_device.h"
#include "attention_launch.h"

namespace detops {

inline bool attention_tc_supports(AttnDtype dtype, int64_t D, int64_t Dv) {
  return (dtype == AttnDtype::BF16 || dtype == AttnDtype::F16) && D == Dv && D % 8 == 0 && D >= 8 && D <= 128;
}
// The kernels' head dim (§6b "Head dims"): 64 or 128. A head of D < that many columns is read as if zero-padded
// (the staging writes the zeros; they are never loaded) and only its D output columns are stored; the workspace
// holds the padded columns.
DETOPS_HD int64_t attention_tc_dim(int64_t D) { return D <= 64 ? 64 : 128; }

// Tiles of 128 (query row, query head) slots per kv head: every one but possibly the last (fewer than
// kAttnTcWgMinSlots slots) runs the wgmma kernel; a tile's kernel is chosen from its own slot count only.
DETOPS_HD int64_t attention_tc_tiles(const AttentionParams& p) { return (p.Q * (p.Hq / p.Hk) + kAttnTcSlots - 1) / kAttnTcSlots; }
DETOPS_HD int64_t attention_tc_wg_tiles(const AttentionParams& p) {
  const int64_t tiles = attention_tc_tiles(p);
  const int64_t last_slots = p.Q * (p.Hq / p.Hk) - (tiles - 1) * kAttnTcSlots;
  return last_slots >= kAttnTcWgMinSlots ? tiles : tiles - 1;
}
// Workspace (floats), DK = attention_tc_dim(Dv): first the wgmma kernel's running state per (batch, query row, query
// head) row, M, L, 2 floats of padding and O[DK] (kept between a row's chunks; a 16-byte aligned O), then the chunk
// states of the mma.sync tile's pairs P >= pair_lo = 128 * wg_tiles: per (batch, kv head, P - pair_lo) and chunk slot
// (m, l, o[DK]).
DETOPS_HD int64_t attention_tc_walk_stride(const AttentionParams& p) { return attention_tc_dim(p.Dv) + 4; }
inline int64_t attention_tc_workspace_floats(const AttentionParams& p) {
  const int64_t pairs = p.Q * (p.Hq / p.Hk), wg_pairs = attention_tc_wg_tiles(p) * kAttnTcSlots;
  const int64_t rest = wg_pairs < pairs ? pairs - wg_pairs : 0;  // pairs of the mma.sync tile (none: every tile is wgmma)
  return p.B * p.Q * p.Hq * attention_tc_walk_stride(p) +
         p.B * p.Hk * rest * attention_chunk_slots(p.K) * (attention_tc_dim(p.Dv) + 2);
}

// Launches the tensor-core kernels on L.stream: the wgmma kernel for the tiles of >= kAttnTcWgMinSlots slots (it
// merges its chunks itself), the mma.sync chunk kernel and its chunk-merge kernel (§6 steps 4-5, one warp per row
// and head) for a smaller last tile; the workspace is the one of attention_tc_workspace_floats(p). Returns a
// cudaError_t as int (0 = success).
int attention_tc_launch(const AttentionLaunch& L);

}  // namespace detops
