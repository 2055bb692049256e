// Dispatch of the tensor-core matmul variants (REDUCTION_ORDER.md §5); the GEMMs are in
// matmul_tc_kernels_<variant>[_<layout>].cu (one translation unit each: CUTLASS compiles slowly).
#include "matmul_tc.h"

namespace detops {

// MN-major operands (TcGemmArgs::p_mn / q_mn): the un-swapped tiles only, K-major P with MN-major Q ("kn") or
// both MN-major ("nn"); any other combination is refused (matmul_tc_cuda.cpp copies to K-major first).
static int mn_layout(TcVariant v, const TcGemmArgs& a) {
  if (!a.p_mn && !a.q_mn) return 0;
  if (v != TcVariant::kTile128x128 && v != TcVariant::kTile128x256) return -1;
  return a.p_mn ? (a.q_mn ? 2 : -1) : 1;
}

size_t tc_gemm_workspace_bytes(TcVariant v, const TcGemmArgs& a) {
  const int mn = mn_layout(v, a);
  if (mn < 0) return 0;  // the launch refuses it
  if (mn == 1) return v == TcVariant::kTile128x128 ? tc_workspace_tile128x128_kn(a) : tc_workspace_tile128x256_kn(a);
  if (mn == 2) return v == TcVariant::kTile128x128 ? tc_workspace_tile128x128_nn(a) : tc_workspace_tile128x256_nn(a);
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
  const int mn = mn_layout(v, a);
  if (mn < 0) {
    *why = "MN-major operands run only in the un-swapped tiles, as K-major P + MN-major Q or both MN-major";
    return cudaErrorInvalidValue;
  }
  if (mn == 1) return v == TcVariant::kTile128x128 ? tc_launch_tile128x128_kn(a, ws, s, why)
                                                   : tc_launch_tile128x256_kn(a, ws, s, why);
  if (mn == 2) return v == TcVariant::kTile128x128 ? tc_launch_tile128x128_nn(a, ws, s, why)
                                                   : tc_launch_tile128x256_nn(a, ws, s, why);
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
