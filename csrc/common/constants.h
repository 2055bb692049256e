// Every tile / lane / block constant of detops, once. Keyed by op (and dtype where it matters), never by
// the number of rows, the batch or the device. The meaning of each is in docs/REDUCTION_ORDER.md.
#pragma once
#include <cstdint>
#include "host_device.h"

namespace detops {

// §2: lanes(N) = kLaneVector * clamp(pow2ceil(ceil(N / kLaneVector)), kMinLaneThreads, kMaxLaneThreads).
// On CUDA one row is one block of lanes(N) / kLaneVector threads, each owning kLaneVector adjacent lanes.
constexpr int kLaneVector = 8;
constexpr int kMinLaneThreads = 32;
constexpr int kMaxLaneThreads = 512;

DETOPS_HD int64_t lane_threads(int64_t n) {
  int64_t want = (n + kLaneVector - 1) / kLaneVector;
  int64_t t = kMinLaneThreads;
  while (t < want && t < kMaxLaneThreads) t *= 2;
  return t;
}
DETOPS_HD int64_t lanes(int64_t n) { return kLaneVector * lane_threads(n); }

// CUDA rms_norm (rms_norm_kernels.cu), speed only: rows per thread (their loads in flight together, their trees
// sharing one barrier), and the minimum resident blocks of kMaxLaneThreads threads per SM the compiler must allow
// (its register cap: 65536 / (512 * 2) = 64 registers).
constexpr int kRmsNormRowsPerThread = 2;
constexpr int kRmsNormMinBlocksPerSm = 2;

// CUDA softmax (softmax_kernels.cu), speed only: chunks whose loads a thread issues together, and the blocks of
// one thread-block cluster that share a long row (each owns an aligned range of the row's lanes, so its result is
// a node of the §2 tree). By N only, never by the row count: rows with N >= kSoftmaxClusterMinN (lane_threads(N)
// == kMaxLaneThreads) are split over kSoftmaxClusterCtas blocks of kMaxLaneThreads / kSoftmaxClusterCtas threads.
constexpr int kSoftmaxBatchChunks = 2;
constexpr int kSoftmaxMaxClusterCtas = 8;  // the portable cluster size limit
constexpr int kSoftmaxClusterCtas = 4;
constexpr int64_t kSoftmaxClusterMinN = 65536;
static_assert(kSoftmaxClusterCtas <= kSoftmaxMaxClusterCtas && kMaxLaneThreads / kSoftmaxMaxClusterCtas >= 32,
              "a cluster block holds whole warps");
static_assert(kSoftmaxClusterMinN > kMaxLaneThreads * kLaneVector, "clusters only for rows of the full lane count");
DETOPS_HD int softmax_cluster_ctas(int64_t n) { return n >= kSoftmaxClusterMinN ? kSoftmaxClusterCtas : 1; }

// §5: fp32 matmul K blocks.
constexpr int kMatmulKBlock = 32;

// §5 matmul tiles. Speed only: every tile below computes each element with the same chain (the §5 K-block
// chain on the CPU and CUDA cores, the wgmma k-group chain on tensor cores), so none may be chosen from M.
// CPU (matmul_cpu.cpp): a task owns kMatmulCpuPanelRows x kMatmulCpuPanelCols of C; a micro-kernel call
// computes kMatmulCpuMicroRows x kMatmulCpuMicroCols partials in vectors of kMatmulCpuVector floats (AVX2).
constexpr int64_t kMatmulCpuVector = 8;
constexpr int64_t kMatmulCpuMicroRows = 4;
constexpr int64_t kMatmulCpuMicroCols = 2 * kMatmulCpuVector;
constexpr int64_t kMatmulCpuPanelCols = 64;
constexpr int64_t kMatmulCpuPanelRows = 128;
static_assert(kMatmulCpuPanelCols % kMatmulCpuMicroCols == 0 && kMatmulCpuPanelRows % kMatmulCpuMicroRows == 0,
              "CPU panels hold whole micro tiles");
// fp32 on CUDA cores (matmul_fp32_kernels.cu): one block per kMatmulCudaTileRows x kMatmulCudaTileCols tile
// of C, each thread kMatmulCudaMicro x kMatmulCudaMicro outputs.
constexpr int kMatmulCudaTileRows = 64;
constexpr int kMatmulCudaTileCols = 64;
constexpr int kMatmulCudaMicro = 4;

// bf16/fp16 on tensor cores (matmul_tc*.{h,cuh,cu}): K tile of every variant (elements); operands' K is
// zero-padded to a multiple of kTcKAlign, which never changes the number of k-groups.
constexpr int kTcKBlock = 64;
constexpr int kTcKAlign = 8;       // 16 bytes: TMA needs 16-byte aligned row strides and base pointers
constexpr int kTcAlignBytes = 16;
static_assert(kTcKBlock % kTcKAlign == 0, "K padding to kTcKAlign never adds a K tile");
// CTA tiles. Swapped variants (C^T = W . X^T): kTcSwapTileFeatures output features x {16, 64, 128} rows
// (tokens); un-swapped cooperative variants: kTcTileRows rows x {128, 256} features, clusters of
// kTcClusterRows CTAs along the rows.
constexpr int kTcSwapTileFeatures = 64;
constexpr int kTcSwap16TileRows = 16;
constexpr int kTcSwap64TileRows = 64;
constexpr int kTcSwap128TileRows = 128;
constexpr int kTcTileRows = 128;
constexpr int kTcTile128Features = 128;
constexpr int kTcTile256Features = 256;
constexpr int kTcClusterRows = 2;
// Variant thresholds on the rows (tokens folded over the batch) and the output features N (matmul_tc.h
// tc_variant_for). 129..256 rows: two 128-row token tiles re-read the weights and one consumer warpgroup is
// compute bound, so wide layers (N > kTcNarrowMaxN) take the cooperative 128x128 tile; narrow layers keep
// the swap (N/64 CTAs). H100 v1: N=14336/128256 at 256 rows ran 1.8x cuBLAS with the swap, N=4096 ~1.0x.
constexpr int64_t kTcSwap16MaxRows = kTcSwap16TileRows;
constexpr int64_t kTcSwap64MaxRows = kTcSwap64TileRows;
constexpr int64_t kTcSwap128MaxRows = kTcSwap128TileRows;
constexpr int64_t kTcSwap128MaxRowsNarrow = 2 * kTcSwap128TileRows;
constexpr int64_t kTcNarrowMaxN = 8192;
constexpr int64_t kTcTile128MaxRows = 2048;

// §6: attention key blocks and chunks, measured from each sequence's anchor.
constexpr int kAttnBlockKeys = 64;
constexpr int kAttnChunkKeys = 1024;
static_assert(kAttnChunkKeys % kAttnBlockKeys == 0, "chunks hold whole blocks");

// CUDA attention CTA shapes. They decide only which (query row, query head) pairs share a staged K/V tile,
// never the order of any row's arithmetic (§6 / §6b: each row runs its own sequence); fixed, depending on
// nothing at run time.
constexpr int kAttnThreads = 256;       // CUDA-core chunk kernel: threads per CTA (8 warps)
constexpr int kAttnRowHeads = 16;       // CUDA-core chunk kernel: (row, head) pairs per CTA, one kv head
constexpr int kAttnMergeThreads = 128;  // chunk-merge kernel: threads per CTA
constexpr int kAttnTcSlots = 128;       // tensor-core kernel: (row, head) slots per CTA
constexpr int kAttnTcThreads = 128;     // tensor-core kernel: 4 warps, each owning 32 slots (two mma M = 16) x a whole 64-key block
constexpr int kAttnTcMergeThreads = 256;  // tensor-core chunk-merge kernel: one warp per (row, head)
constexpr int kAttnTcStages = 2;        // tensor-core kernel: K/V blocks in the cp.async ring (scheduling only; 2 CTAs per SM)
constexpr int kAttnTcWgThreads = 256;   // tensor-core wgmma kernel: 2 warpgroups, each owning 64 slots (one wgmma M = 64)
constexpr int kAttnTcWgStages = 4;      // tensor-core wgmma kernel: K/V ring stages (1 CTA per SM)
constexpr int kAttnTcWgMinSlots = 65;   // tensor-core: a tile with at least this many slots runs the wgmma kernel

}  // namespace detops
