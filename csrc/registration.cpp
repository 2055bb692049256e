// Every detops op schema, in one place. Backends register their kernels in their own op folders
// (TORCH_LIBRARY_IMPL); Python adds fake (meta) kernels in detops/ops/ so torch.compile sees opaque ops.
#include <Python.h>
#include <ATen/core/Dict.h>
#include <torch/library.h>
#include <string>
#include "common/constants.h"

#ifndef DETOPS_VERSION
#define DETOPS_VERSION "unknown"
#endif
#ifndef DETOPS_HOST_FLAGS
#define DETOPS_HOST_FLAGS ""
#endif
#ifndef DETOPS_NVCC_FLAGS
#define DETOPS_NVCC_FLAGS ""
#endif

namespace detops {

// JSON with the build's numerics flags and the constants of docs/REDUCTION_ORDER.md, so Python never
// repeats a constant.
static std::string build_info() {
#ifdef DETOPS_WITH_CUDA
  const char* cuda = "true";
#else
  const char* cuda = "false";
#endif
  return std::string("{\"version\": \"") + DETOPS_VERSION + "\", \"cuda\": " + cuda +
         ", \"host_flags\": \"" + DETOPS_HOST_FLAGS + "\", \"nvcc_flags\": \"" + DETOPS_NVCC_FLAGS +
         "\", \"constants\": {\"lane_vector\": " + std::to_string(kLaneVector) +
         ", \"min_lane_threads\": " + std::to_string(kMinLaneThreads) +
         ", \"max_lane_threads\": " + std::to_string(kMaxLaneThreads) +
         ", \"matmul_k_block\": " + std::to_string(kMatmulKBlock) +
         ", \"attn_block_keys\": " + std::to_string(kAttnBlockKeys) +
         ", \"attn_chunk_keys\": " + std::to_string(kAttnChunkKeys) + "}}";
}

// Every constant of common/constants.h by its C++ name (arrays: one entry per element, "name[i]"), so Python
// (detops.constants()) and the tests derive thresholds instead of repeating numbers. tests/test_constants.py checks
// that this table names every constexpr of constants.h.
static c10::Dict<std::string, int64_t> constants() {
  c10::Dict<std::string, int64_t> d;
#define DETOPS_CONSTANT(name) d.insert(#name, static_cast<int64_t>(name))
  DETOPS_CONSTANT(kLaneVector);
  DETOPS_CONSTANT(kMinLaneThreads);
  DETOPS_CONSTANT(kMaxLaneThreads);
  DETOPS_CONSTANT(kMaxLanes);
  DETOPS_CONSTANT(kMinBlockThreads);
  DETOPS_CONSTANT(kRmsNormRowsPerThread);
  DETOPS_CONSTANT(kRmsNormMinBlocksPerSm);
  DETOPS_CONSTANT(kRmsNormMinThreadsPerRow);
  DETOPS_CONSTANT(kRmsNormMaxCachedChunks);
  DETOPS_CONSTANT(kRmsNormCached1ChunkRowsPerThread);
  DETOPS_CONSTANT(kRmsNormCached2ChunkRowsPerThread);
  DETOPS_CONSTANT(kRmsNormCachedMinBlocksPerSm);
  DETOPS_CONSTANT(kRmsNormShortRowsPerThread);
  DETOPS_CONSTANT(kRmsNormShortMinBlocksPerSm);
  DETOPS_CONSTANT(kSoftmaxBatchChunks);
  DETOPS_CONSTANT(kSoftmaxSplitMinN);
  DETOPS_CONSTANT(kSoftmaxSplitBlockThreads);
  DETOPS_CONSTANT(kSoftmaxNearLanesPerThread);
  DETOPS_CONSTANT(kSoftmaxLongLanesPerThread);
  DETOPS_CONSTANT(kSoftmaxMaxClusterCtas);
  DETOPS_CONSTANT(kSoftmaxRegisterChunks);
  DETOPS_CONSTANT(kSoftmaxLongRowChunks);
  for (size_t i = 0; i < sizeof(kSoftmaxLongChunkCaps) / sizeof(kSoftmaxLongChunkCaps[0]); ++i)
    d.insert(std::string("kSoftmaxLongChunkCaps[") + std::to_string(i) + "]", static_cast<int64_t>(kSoftmaxLongChunkCaps[i]));
  DETOPS_CONSTANT(kSoftmaxStreamElems);
  DETOPS_CONSTANT(kSoftmaxRowMinBlocksPerSm);
  DETOPS_CONSTANT(kSoftmaxSplitMinBlocksPerSm);
  DETOPS_CONSTANT(kMatmulKBlock);
  DETOPS_CONSTANT(kGradTokenAlign);
  DETOPS_CONSTANT(kMatmulCpuVector);
  DETOPS_CONSTANT(kMatmulCpuMicroRows);
  DETOPS_CONSTANT(kMatmulCpuMicroCols);
  DETOPS_CONSTANT(kMatmulCpuPanelCols);
  DETOPS_CONSTANT(kMatmulCpuPanelRows);
  DETOPS_CONSTANT(kMatmulCpuPanelDepth);
  DETOPS_CONSTANT(kMatmulCudaTileRows);
  DETOPS_CONSTANT(kMatmulCudaTileCols);
  DETOPS_CONSTANT(kMatmulCudaMicro);
  DETOPS_CONSTANT(kTcKBlock);
  DETOPS_CONSTANT(kTcKAlign);
  DETOPS_CONSTANT(kTcAlignBytes);
  DETOPS_CONSTANT(kTcSwapTileFeatures);
  DETOPS_CONSTANT(kTcSwap16TileRows);
  DETOPS_CONSTANT(kTcSwap64TileRows);
  DETOPS_CONSTANT(kTcSwap128TileRows);
  DETOPS_CONSTANT(kTcTileRows);
  DETOPS_CONSTANT(kTcTile128Features);
  DETOPS_CONSTANT(kTcTile256Features);
  DETOPS_CONSTANT(kTcClusterRows);
  DETOPS_CONSTANT(kTcSwap16MaxRows);
  DETOPS_CONSTANT(kTcSwap64MaxRows);
  DETOPS_CONSTANT(kTcSwap128MaxRows);
  DETOPS_CONSTANT(kTcSwap128MaxRowsNarrow);
  DETOPS_CONSTANT(kTcNarrowMaxN);
  DETOPS_CONSTANT(kTcTile128MaxRowsNarrow);
  DETOPS_CONSTANT(kTcTile256MaxRowsNarrow);
  DETOPS_CONSTANT(kTcTile128MaxRows);
  DETOPS_CONSTANT(kAttnBlockKeys);
  DETOPS_CONSTANT(kAttnChunkKeys);
  DETOPS_CONSTANT(kAttnMaxKeys);
  DETOPS_CONSTANT(kAttnThreads);
  DETOPS_CONSTANT(kAttnRowHeads);
  DETOPS_CONSTANT(kAttnMergeThreads);
  DETOPS_CONSTANT(kAttnTcSlots);
  DETOPS_CONSTANT(kAttnTcThreads);
  DETOPS_CONSTANT(kAttnTcMergeThreads);
  DETOPS_CONSTANT(kAttnTcStages);
  DETOPS_CONSTANT(kAttnTcWgThreads);
  DETOPS_CONSTANT(kAttnTcWgStages);
  DETOPS_CONSTANT(kAttnTcWgMinSlots);
  DETOPS_CONSTANT(kAttnBwdBlock);
  DETOPS_CONSTANT(kAttnBwdThreads);
  DETOPS_CONSTANT(kAttnTcMaxKeys);
  DETOPS_CONSTANT(kAttnTcSmallSlots);
  DETOPS_CONSTANT(kAttnTcSmallRingBytes);
  DETOPS_CONSTANT(kAttnTcSmallPrefetchBlocks);
  DETOPS_CONSTANT(kAttnTcWgStepBlocks);
  DETOPS_CONSTANT(kAttnMinBlocksPerSm);
  DETOPS_CONSTANT(kAttnWideMinBlocksPerSm);
  DETOPS_CONSTANT(kAttnWideHeadDim);
  DETOPS_CONSTANT(kAttnTcMinBlocksPerSm);
  DETOPS_CONSTANT(kAttnTcWgMinBlocksPerSm);
#undef DETOPS_CONSTANT
  return d;
}

TORCH_LIBRARY(detops, m) {
  m.def("build_info() -> str", &build_info);
  m.def("constants() -> Dict(str, int)", &constants);
  // rms_norm family: REDUCTION_ORDER.md §2, §3. weight_mode: 'plain' | 'cast_first' | 'offset'.
  m.def("rms_norm(Tensor input, int[] normalized_shape, Tensor? weight, float eps, str weight_mode, "
        "bool compensated, Tensor? documents=None) -> Tensor");
  m.def("add_rms_norm(Tensor input, Tensor residual, int[] normalized_shape, Tensor? weight, float eps, "
        "str weight_mode, bool compensated, Tensor? documents=None) -> (Tensor, Tensor)");
  // The backward's row kernel (§10 rule 2) on (rows, n): (dx, g·x̂ in fp32 or empty). weight: w' in fp32.
  m.def("rms_norm_backward(Tensor x, Tensor grad, Tensor? weight, Tensor? extra, float eps, bool cast_first, "
        "bool compensated, bool gxhat) -> (Tensor, Tensor)");
  // softmax family: §2, §4.
  m.def("softmax(Tensor input, int dim, ScalarType? dtype, bool compensated) -> Tensor");
  m.def("log_softmax(Tensor input, int dim, ScalarType? dtype, bool compensated) -> Tensor");
  // The backward's row kernel (§10 rule 2) over the last dim: a = y (softmax) or softmax(x) (log_softmax).
  m.def("softmax_backward(Tensor a, Tensor grad, bool log, ScalarType dtype) -> Tensor");
  // The loss's row kernels (§10 rule 4) over the last (class) dim: each token's -log_softmax(input)[target] in
  // float32, and the gradient (softmax(input) - onehot(target)) · grad in input's dtype.
  m.def("cross_entropy_nll(Tensor input, Tensor target, int ignore_index, bool compensated) -> Tensor");
  m.def("cross_entropy_backward(Tensor input, Tensor target, Tensor grad, int ignore_index, bool compensated) "
        "-> Tensor");
  // Each column's sum over the rows of a 2-D float32 tensor in §5's fp32 chain (§10 rule 1's token reductions).
  m.def("token_sum(Tensor a, bool compensated=False) -> Tensor");
  // Each row's sum of a * b (or of a) over the last dim in §2's lane order, float32 (the backwards' row sums, §10).
  m.def("row_dot(Tensor a, Tensor? b=None) -> Tensor");
  // matmul family: §5. addmm is bias + a @ b (beta = alpha = 1).
  // compensated: §5's compensated order (Neumaier sum of the K-block sums; CUDA cores for every dtype).
  // documents (every op whose gradient sums over tokens): segment ids of the token layout, §10; the forward
  // only checks their shape.
  m.def("mm(Tensor a, Tensor b, bool compensated=False, Tensor? documents=None) -> Tensor");
  m.def("bmm(Tensor a, Tensor b, bool compensated=False) -> Tensor");
  m.def("linear(Tensor input, Tensor weight, Tensor? bias, bool compensated=False, Tensor? documents=None) -> Tensor");
  m.def("addmm(Tensor bias, Tensor a, Tensor b, bool compensated=False, Tensor? documents=None) -> Tensor");
  // Test-only: bmm on the bf16/fp16 tensor cores with the CTA tile forced (variant 0 .. 4; -1 = the row-count
  // choice), so tests can prove every tile gives the same bits (§5). CUDA builds only have a kernel for it.
  m.def("_matmul_tc(Tensor a3, Tensor b3, Tensor? bias, int variant) -> Tensor");
  // attention: §6. rows: (B, Q, 3) int32 [anchor, lo, hi] per query row; q (B,Hq,Q,D), k (B,Hk,K,D),
  // v (B,Hk,K,Dv) -> (B,Hq,Q,Dv). softcap <= 0 means none.
  m.def("attention(Tensor q, Tensor k, Tensor v, Tensor rows, float scale, float softcap, Tensor? documents=None) "
        "-> Tensor");
  // attention's backward on the tensor cores (§10b; CUDA bf16/fp16, D == Dv in {64, 128}): grad is dL/dout, delta
  // (B, Hq, Q) = Σ grad·out per query; the document tables are built by detops/ops/attention.py. -> (dq, dk, dv).
  m.def("attention_backward_tc(Tensor q, Tensor k, Tensor v, Tensor grad, Tensor delta, Tensor docs, Tensor work, "
        "Tensor span, Tensor keys, float scale, float softcap) -> (Tensor, Tensor, Tensor)");
  // CPU elementwise functions evaluated per element (§8): fn in exp, sin, cos, tanh, sigmoid, silu, gelu,
  // gelu_tanh. Used by the aten mode on CPU tensors.
  m.def("elementwise(Tensor input, str fn) -> Tensor");
}

}  // namespace detops

// `import detops._C` loads this library, which runs the registrations above; no Python API of its own.
static struct PyModuleDef detops_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&detops_module); }
