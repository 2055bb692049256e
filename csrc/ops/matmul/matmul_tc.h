// bf16/fp16 tensor-core matmul (REDUCTION_ORDER.md §5): launcher declarations shared by the torch glue
// (matmul_tc_cuda.cpp) and the CUTLASS kernels (matmul_tc_kernels*.cu). Pure C++, no torch.
//
// Every variant computes each output element with the same chain: one sm90 wgmma k-group of 16 after
// another in ascending k, fp32 accumulators starting from zero, no split-K / stream-K, then (fp32) bias
// added once, then one round-to-nearest-even to the output dtype:
//   acc = 0; for g in 0..ceil(K/64)*4: acc = wgmma_group(acc, A[m, 16g:16g+16], B[16g:16g+16, n]);
//   C[m, n] = round(acc + bias[n]).
// Variants differ only in the CTA tile (which elements one CTA owns) and in whether A/B are swapped in the
// instruction (C^T = B^T A^T, so that a small number of rows sits in wgmma's N dimension). The K tile is 64
// for every variant, so even the zero-filled tail k-groups are identical. tests/test_matmul_cuda.py proves
// the bits equal across all variants at every tested M.
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

#include "../../common/constants.h"

namespace detops {

enum class TcDtype : int { kBFloat16 = 0, kFloat16 = 1 };

// The variants, by CTA tile (rows of the GEMM the kernel sees x columns x K tile).
//   kSwap64x16 / kSwap64x64 / kSwap64x128: C^T = W · X^T; tile 64 output features x {16,64,128} rows.
//   kTile128x128 / kTile128x256: C = X · W^T; tile {128} rows x {128,256} output features.
enum class TcVariant : int { kSwap64x16 = 0, kSwap64x64, kSwap64x128, kTile128x128, kTile128x256, kCount };
constexpr int kTcVariantCount = static_cast<int>(TcVariant::kCount);
// Tile constants and variant thresholds: csrc/common/constants.h (kTc*).

// Tile choice from the rows (tokens folded over the batch) and the number of output features N. Speed only:
// the per-element chain is the same in every variant (proved by tests/test_matmul_cuda.py), and neither the
// SM count nor any batch-level metadata is read.
inline TcVariant tc_variant_for(int64_t rows, int64_t n) {
  if (rows <= kTcSwap16MaxRows) return TcVariant::kSwap64x16;
  if (rows <= kTcSwap64MaxRows) return TcVariant::kSwap64x64;
  const bool wide = n > kTcNarrowMaxN;
  // Whole 128-row token tiles keep the swap: one for wide layers, up to kTcSwap128MaxRowsNarrow rows for narrow ones.
  if (rows % kTcSwap128TileRows == 0 && rows <= (wide ? kTcSwap128MaxRows : kTcSwap128MaxRowsNarrow))
    return TcVariant::kSwap64x128;
  if (wide) return TcVariant::kTile128x256;
  if (rows <= kTcSwap128MaxRows) return TcVariant::kSwap64x128;
  if (rows <= kTcTile128MaxRowsNarrow) return TcVariant::kTile128x128;
  if (rows <= kTcTile256MaxRowsNarrow) return TcVariant::kTile128x256;
  if (rows <= kTcTile128MaxRows) return TcVariant::kTile128x128;
  return TcVariant::kTile128x256;
}

// One GEMM the kernels see: D[l, i, j] = sum_k P[l, i, k] * Q[l, j, k] (+ bias), each operand K-major (unit
// stride along k, `ld` = the stride along i / j) or, in the un-swapped variants only, MN-major (`p_mn` / `q_mn`:
// unit stride along i / j, `ld` = the stride along k; K-major P with MN-major Q, or both MN-major), D with unit
// stride along i (swapped) or along j (row-major). In the un-swapped variants P = activations (rows), Q = weights
// (features), D row-major, bias per j. In the swapped ones P = weights, Q = activations, D column-major, bias per
// i. The caller guarantees: K % kTcKAlign == 0, ld* % kTcKAlign == 0, 16-byte aligned pointers and batch
// strides, and for an MN-major operand its i / j extent % kTcKAlign == 0.
struct TcGemmArgs {
  TcDtype dtype = TcDtype::kBFloat16;
  int64_t rows_i = 0, cols_j = 0, k = 0, batch = 1;
  const void* p = nullptr;
  int64_t ld_p = 0, batch_stride_p = 0;
  const void* q = nullptr;
  int64_t ld_q = 0, batch_stride_q = 0;
  void* d = nullptr;
  int64_t ld_d = 0, batch_stride_d = 0;
  const void* bias = nullptr;  // contiguous, length of the bias dimension, or null
  int device_sm_count = 0;     // for the persistent grid size only (never the tile or the order)
  bool p_mn = false, q_mn = false;  // operand layouts (above); never the order of an element's chain
};

// Workspace bytes (the CUTLASS adapter's), and the launch. Return cudaSuccess or an error; `why` receives a
// static message on a CUTLASS refusal.
size_t tc_gemm_workspace_bytes(TcVariant v, const TcGemmArgs& args);
cudaError_t tc_gemm_launch(TcVariant v, const TcGemmArgs& args, void* workspace, cudaStream_t stream,
                           const char** why);

// Per-variant entry points (one translation unit each, so that nvcc compiles them in parallel).
#define DETOPS_TC_DECLARE(NAME)                                                                        \
  size_t tc_workspace_##NAME(const TcGemmArgs& args);                                                  \
  cudaError_t tc_launch_##NAME(const TcGemmArgs& args, void* workspace, cudaStream_t stream, const char** why);
DETOPS_TC_DECLARE(swap64x16)
DETOPS_TC_DECLARE(swap64x64)
DETOPS_TC_DECLARE(swap64x128)
DETOPS_TC_DECLARE(tile128x128)
DETOPS_TC_DECLARE(tile128x256)
DETOPS_TC_DECLARE(tile128x128_kn)
DETOPS_TC_DECLARE(tile128x128_nn)
DETOPS_TC_DECLARE(tile128x256_kn)
DETOPS_TC_DECLARE(tile128x256_nn)
#undef DETOPS_TC_DECLARE

}  // namespace detops
