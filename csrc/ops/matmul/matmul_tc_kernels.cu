// Dispatch of the tensor-core matmul variants (REDUCTION_ORDER.md §5); the GEMMs are in
// matmul_tc_kernels_<variant>.cu (one translation unit each: CUTLASS compiles slowly).
#include "matmul_tc.h"

namespace detops {

size_t tc_gemm_workspace_bytes(TcVariant v, const TcGemmArgs& a) {
  switch (v) {
    case TcVariant::kSwap64x16: return tc_workspace_swap64x16(a);
    case TcVariant::kSwap64x64: return tc_workspace_swap64x64(a);
    case TcVariant::kSwap64x128: return tc_workspace_swap64x128(a);
    case TcVariant::kTile128x128: return tc_workspace_tile128x128(a);
    case TcVariant::kTile128x256: return tc_workspace_tile128x256(a);
    default: return 0;
  }
}

cudaError_t tc_gemm_launch(TcVariant v, const TcGemmArgs& a, void* ws, cudaStream_t s, const char** why) {
  switch (v) {
    case TcVariant::kSwap64x16: return tc_launch_swap64x16(a, ws, s, why);
    case TcVariant::kSwap64x64: return tc_launch_swap64x64(a, ws, s, why);
    case TcVariant::kSwap64x128: return tc_launch_swap64x128(a, ws, s, why);
    case TcVariant::kTile128x128: return tc_launch_tile128x128(a, ws, s, why);
    case TcVariant::kTile128x256: return tc_launch_tile128x256(a, ws, s, why);
    default: *why = "unknown tensor-core matmul variant"; return cudaErrorInvalidValue;
  }
}

}  // namespace detops
