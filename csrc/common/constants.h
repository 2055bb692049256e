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
constexpr int64_t kMaxLanes = int64_t(kLaneVector) * kMaxLaneThreads;  // lanes(N) of every N > 8 * 256
// CUDA row kernels (rms_norm, softmax's one-block rows; lanes_cuda.cuh rows_per_block), speed only: rows needing
// fewer threads than this share a block (block = lane_threads(N) x rows), so a block has at least this many threads.
// Depends only on N; each row keeps its own order (its own warps and shared-memory slots).
constexpr int kMinBlockThreads = 256;

// CUDA rms_norm (rms_norm_kernels.cu), speed only: rows per thread (their loads in flight together, their trees
// sharing one barrier), and the minimum resident blocks of kMaxLaneThreads threads per SM the compiler must allow
// (its register cap: 65536 / (512 * 2) = 64 registers).
constexpr int kRmsNormRowsPerThread = 2;
constexpr int kRmsNormMinBlocksPerSm = 2;
// Rows of N <= 8 * 16 lanes' worth of data use only pow2ceil(ceil(N / 8)) threads (at least this many): the lanes
// past N are zero, so every tree node above them is x + 0 == x (lane sums are never -0) and is skipped.
constexpr int kRmsNormMinThreadsPerRow = 8;
// Rows of at most this many chunks (ceil(N / lanes(N))) with 16-bit inputs, N % 8 == 0 and 16-byte aligned tensors
// keep every chunk in registers between the sum and the write pass (compile-time chunk count, no re-read).
constexpr int kRmsNormMaxCachedChunks = 2;
// The cached variant's rows per thread (rows of 1 and of 2 chunks) and resident blocks of kMaxLaneThreads threads
// per SM (register cap 65536 / (512 * 3) = 42: 1536 threads per SM instead of 1024). Short rows (N <= 128, fewer
// than 32 threads per row): one row per thread at 32 registers (2048 threads per SM). H100, v5 sweep
// (docs/ops/rms_norm.md). Every rows-per-thread count is at most kRmsNormMinThreadsPerRow: the threads of a row
// slot evaluate its rows' scales, one row each (rms_norm_kernels.cu).
constexpr int kRmsNormCached1ChunkRowsPerThread = 2;
constexpr int kRmsNormCached2ChunkRowsPerThread = 1;
constexpr int kRmsNormCachedMinBlocksPerSm = 3;
constexpr int kRmsNormShortRowsPerThread = 1;
constexpr int kRmsNormShortMinBlocksPerSm = 4;
static_assert(kRmsNormRowsPerThread <= kRmsNormMinThreadsPerRow &&
                  kRmsNormCached1ChunkRowsPerThread <= kRmsNormMinThreadsPerRow &&
                  kRmsNormCached2ChunkRowsPerThread <= kRmsNormMinThreadsPerRow &&
                  kRmsNormShortRowsPerThread <= kRmsNormMinThreadsPerRow,
              "a row slot has a thread per row for the scale hand-off");

// CUDA softmax (softmax_kernels.cuh), speed only; every choice below is by N (and the compensated mode) only,
// never by the row count.
// Rows with N <= kSoftmaxSplitMinN: one block of lane_threads(N) threads per row (short rows share a block),
// thread t owning lanes 8t..8t+7; chunks whose loads a thread issues together: kSoftmaxBatchChunks.
constexpr int kSoftmaxBatchChunks = 2;
// Rows with N > kSoftmaxSplitMinN (lanes(N) = kMaxLanes = 4096): the split kernel, blocks of
// kSoftmaxSplitBlockThreads threads. A thread owns K adjacent lanes (an aligned subtree); the row's 4096 / K threads
// are the G = softmax_split_ctas(K) blocks of one thread-block cluster (block rank g owns the aligned lane range
// g*4096/G .. (g+1)*4096/G - 1: a node of the §2 tree). Three shapes, by N (and the compensated mode) only:
// - N <= kSoftmaxRegisterChunks * 4096: K = kSoftmaxNearLanesPerThread (4), G = 2; the row is read once and held
//   in registers (8 chunks of 4 values a thread);
// - N <= kSoftmaxLongRowChunks * 4096: K = 1, G = 8; read once and held in registers (38 values a thread: Llama's
//   128256 and Qwen's 152064 vocabularies);
// - longer rows, and compensated mode: K = 4, G = 2, streamed: read once per §4 pass, kSoftmaxStreamElems
//   elements per thread in flight.
// (H100 v5/v6 sweeps for K = 4, G = 2; v7 for the long shape: docs/ops/softmax.md.)
constexpr int64_t kSoftmaxSplitMinN = 16384;
constexpr int kSoftmaxSplitBlockThreads = 512;
constexpr int kSoftmaxNearLanesPerThread = 4;
constexpr int kSoftmaxLongLanesPerThread = 1;
constexpr int kSoftmaxMaxClusterCtas = 8;  // the portable cluster size limit
constexpr int kSoftmaxRegisterChunks = 8;
constexpr int kSoftmaxLongRowChunks = 38;
// The K = 1 kernel is compiled for these chunk counts (the chunks past a thread's last one are padded and computed):
// the launcher takes the smallest that holds ceil(N / 4096). Padding is at most 7 of 16 chunks (N just over 32768),
// 2 % at Llama's 128256 (32) and Qwen's 152064 (38).
constexpr int kSoftmaxLongChunkCaps[4] = {16, 24, 32, kSoftmaxLongRowChunks};
constexpr int kSoftmaxStreamElems = 16;
// Minimum resident blocks per SM that __launch_bounds__ asks of the one-block-row kernel (row_kernel, blocks of
// up to kMaxLaneThreads threads) and of the split kernel (kSoftmaxSplitBlockThreads): the compiler's register cap
// (65536 / (512 * 2) = 64 registers). Speed only: register allocation, never the order of an operation.
constexpr int kSoftmaxRowMinBlocksPerSm = 2;
constexpr int kSoftmaxSplitMinBlocksPerSm = 2;
static_assert(kSoftmaxSplitMinN >= kMaxLanes, "the split kernel needs lanes(N) == kMaxLanes");
DETOPS_HD constexpr int softmax_split_ctas(int lanes_per_thread) {
  return int(kMaxLanes / (int64_t(lanes_per_thread) * kSoftmaxSplitBlockThreads));
}
static_assert(softmax_split_ctas(kSoftmaxNearLanesPerThread) >= 2 &&
                  softmax_split_ctas(kSoftmaxLongLanesPerThread) <= kSoftmaxMaxClusterCtas,
              "cluster sizes");

// §5: fp32 matmul K blocks.
constexpr int kMatmulKBlock = 32;

// §10: each document of a gradient's canonical token buffer starts at a multiple of this (one §5 K block, a
// multiple of the tensor cores' k-group of 16).
constexpr int kGradTokenAlign = kMatmulKBlock;

// §5 matmul tiles. Speed only: every tile below computes each element with the same chain (the §5 K-block
// chain on the CPU and CUDA cores, the wgmma k-group chain on tensor cores). That is why a tile may be chosen
// from M: the tensor-core variant follows the rows (tc_variant_for(rows, n), matmul_tc.h, thresholds below),
// which is batch-invariant only because every variant gives each element the same bits -- proved by
// tests/test_matmul_cuda.py::test_every_variant_gives_the_same_bits (every variant forced
// through the test-only op _matmul_tc on the same inputs).
// The CPU and CUDA-core tiles are fixed (never chosen from M).
// CPU (matmul_cpu.cpp): a task owns kMatmulCpuPanelRows x kMatmulCpuPanelCols of C; a micro-kernel call
// computes kMatmulCpuMicroRows x kMatmulCpuMicroCols partials in vectors of kMatmulCpuVector floats (AVX2).
constexpr int64_t kMatmulCpuVector = 8;
constexpr int64_t kMatmulCpuMicroRows = 4;
constexpr int64_t kMatmulCpuMicroCols = 2 * kMatmulCpuVector;
constexpr int64_t kMatmulCpuPanelCols = 64;
constexpr int64_t kMatmulCpuPanelRows = 128;
// Rows of K of the B panel packed at a time (whole K blocks): bounds a task's workspace whatever K is.
constexpr int64_t kMatmulCpuPanelDepth = 1024;
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
// tc_variant_for, which states the rule), taken from the forced-variant sweep of docs/ops/matmul.md "Tile choice"
// (H100, 2026-12-08): a partial token tile of the swaps is slow, and a 128x128 grid needs twice the waves of 128x256.
constexpr int64_t kTcSwap16MaxRows = kTcSwap16TileRows;
constexpr int64_t kTcSwap64MaxRows = kTcSwap64TileRows;
constexpr int64_t kTcSwap128MaxRows = kTcSwap128TileRows;
constexpr int64_t kTcSwap128MaxRowsNarrow = 3 * kTcSwap128TileRows;
constexpr int64_t kTcNarrowMaxN = 8192;
constexpr int64_t kTcTile128MaxRowsNarrow = 512;
constexpr int64_t kTcTile256MaxRowsNarrow = 1024;
constexpr int64_t kTcTile128MaxRows = 2048;

// §6: attention key blocks and chunks, measured from each sequence's anchor.
constexpr int kAttnBlockKeys = 64;
constexpr int kAttnChunkKeys = 1024;
static_assert(kAttnChunkKeys % kAttnBlockKeys == 0, "chunks hold whole blocks");
// Keys per call (every backend): the rows descriptor holds key indices [anchor, lo, hi] in int32, so K must fit
// one (a larger K would wrap in the descriptor and silently use other keys). Checked in attention.cpp.
constexpr int64_t kAttnMaxKeys = (int64_t(1) << 31) - 1;

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
// Tensor-core attention backward (§10b): blocks of queries / keys counted from each document's first token (§6's
// key block), and 4 warps a CTA, each owning 16 rows of a block. Both decide which blocks exist and who computes
// them, never an element's chain, which runs over the document's blocks in order.
constexpr int kAttnBwdBlock = kAttnBlockKeys;
constexpr int kAttnBwdThreads = 128;
constexpr int64_t kAttnTcMaxKeys = int64_t(1) << 30;  // tensor-core kernels: keys per call (int key offsets from a pass's first block)
constexpr int kAttnTcSmallSlots = 16;   // tensor-core: a tile with at most this many slots (a decode step, G <= 16) runs the mma.sync kernel's small-tile variant
constexpr int kAttnTcSmallRingBytes = 96 * 1024;  // small-tile variant: K/V ring bytes (3 stages at D = 128, 6 at D = 64; still 2 CTAs per SM)
constexpr int kAttnTcSmallPrefetchBlocks = 2;     // small-tile variant: K/V blocks prefetched into L2 ahead of the ring (a hint: scheduling only)
constexpr int kAttnTcWgStepBlocks = 2;  // tensor-core wgmma kernel: K/V blocks per ring step (one __syncthreads; scheduling only)
// Minimum resident CTAs per SM that __launch_bounds__ asks of each attention kernel (the compiler's register cap).
// Speed only: register allocation, never the order of a row's arithmetic.
constexpr int kAttnMinBlocksPerSm = 2;          // CUDA-core chunk kernel, D and Dv < kAttnWideHeadDim
constexpr int kAttnWideMinBlocksPerSm = 1;      // CUDA-core chunk kernel, D or Dv >= kAttnWideHeadDim
constexpr int kAttnWideHeadDim = 256;
constexpr int kAttnTcMinBlocksPerSm = 2;        // tensor-core mma.sync kernel (2 CTAs of 4 warps, up to 255 registers)
constexpr int kAttnTcWgMinBlocksPerSm = 1;      // tensor-core wgmma kernel (1 CTA of 2 warpgroups)

}  // namespace detops
