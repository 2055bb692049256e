// One CUTLASS sm90 GEMM per tensor-core matmul variant (REDUCTION_ORDER.md §5). Pure CUDA + CUTLASS/CuTe.
// Included by the per-variant translation units matmul_tc_kernels_<variant>.cu; the launch dispatch lives in
// matmul_tc_kernels.cu.
//
// What fixes the per-element chain, in every variant (and why each choice is safe):
//  - Mainloop: TMA + warp-specialized wgmma, bf16/fp16 operands, fp32 accumulators kept in registers for the
//    whole K loop (no FP8-style promotion, no partial sums elsewhere). K tiles of kTcKBlock ascend from k = 0;
//    inside a tile the wgmma k-groups of 16 ascend. Scalar equivalent:
//      acc = 0; for g ascending: acc = mma16(acc, a[16g:16g+16], b[16g:16g+16]).
//  - Tile scheduler: the plain / persistent sm90 scheduler. Never StreamK, never GemmUniversalMode::kGemmSplitKParallel
//    (both split K and add partials in an order that depends on the grid).
//  - Epilogue: fp32 acc -> acc + bias (one fma with alpha = 1, i.e. one rounded add) -> round-to-nearest to
//    the output dtype; no source tensor C (beta = 0).
#pragma once
// CUTLASS's device-side asserts compile to calls, and any call inside the mainloop makes ptxas serialise
// the wgmma pipeline (warning C7510). Release semantics for this header's includes only.
#ifndef NDEBUG
#define NDEBUG
#endif
// TMA descriptors: call cuTensorMapEncodeTiled directly (the extension links libcuda) instead of looking the
// driver entry point up by name on every call (host overhead at decode sizes).
#ifndef CUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL
#define CUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL 1
#endif
#include <atomic>
#include <cuda.h>
#include <cuda_runtime_api.h>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/kernel_hardware_info.h"

#include "matmul_tc.h"

namespace detops {
namespace tc {

using namespace cute;

// kSwapped: D is column-major (D^T = row-major C) and the bias runs along D's rows.
// kCooperative: two consumer warpgroups split a 128-row tile, persistent grid; else one consumer warpgroup,
// one CTA per tile.
template <class Element, class TileShape, class ClusterShape, bool kSwapped, bool kCooperative>
struct TcGemm {
  static constexpr int kAlign = kTcAlignBytes / sizeof(Element);
  using LayoutP = cutlass::layout::RowMajor;     // (i, k), unit stride along k
  using LayoutQ = cutlass::layout::ColumnMajor;  // (k, j) seen as (j, k), unit stride along k
  using LayoutD = std::conditional_t<kSwapped, cutlass::layout::ColumnMajor, cutlass::layout::RowMajor>;
  using Fusion = std::conditional_t<kSwapped,
      cutlass::epilogue::fusion::LinCombPerRowBias<Element, float, Element, Element, float, kAlign,
                                                   cutlass::FloatRoundStyle::round_to_nearest>,
      cutlass::epilogue::fusion::LinCombPerColBias<Element, float, Element, Element, float, kAlign,
                                                   cutlass::FloatRoundStyle::round_to_nearest>>;
  using MainloopSchedule = std::conditional_t<kCooperative, cutlass::gemm::KernelTmaWarpSpecializedCooperative,
                                              cutlass::gemm::KernelTmaWarpSpecialized>;
  using EpilogueSchedule = std::conditional_t<kCooperative, cutlass::epilogue::TmaWarpSpecializedCooperative,
                                              cutlass::epilogue::TmaWarpSpecialized>;
  // Persistent (cooperative) or one-CTA-per-tile; both walk K whole and ascending in one CTA.
  using TileScheduler = std::conditional_t<kCooperative, cutlass::gemm::PersistentScheduler, void>;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,
      void, LayoutD, kAlign,      // no source C
      Element, LayoutD, kAlign,   // D
      EpilogueSchedule, Fusion>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      Element, LayoutP, kAlign, Element, LayoutQ, kAlign, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, CollectiveMainloop,
                                                      CollectiveEpilogue, TileScheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  static_assert(size<2>(TileShape{}) == kTcKBlock, "every variant uses the same K tile (REDUCTION_ORDER.md §5)");

  static typename Gemm::Arguments arguments(const TcGemmArgs& a) {
    using StrideP = typename Gemm::GemmKernel::StrideA;
    using StrideQ = typename Gemm::GemmKernel::StrideB;
    using StrideD = typename Gemm::GemmKernel::StrideD;
    StrideP stride_p{a.ld_p, Int<1>{}, a.batch_stride_p};
    StrideQ stride_q{a.ld_q, Int<1>{}, a.batch_stride_q};
    StrideD stride_d;
    if constexpr (kSwapped) {
      stride_d = StrideD{Int<1>{}, a.ld_d, a.batch_stride_d};
    } else {
      stride_d = StrideD{a.ld_d, Int<1>{}, a.batch_stride_d};
    }
    cutlass::KernelHardwareInfo hw;
    hw.device_id = 0;  // unused when sm_count is given
    hw.sm_count = a.device_sm_count;
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,  // never split-K (REDUCTION_ORDER.md §5)
        {static_cast<int>(a.rows_i), static_cast<int>(a.cols_j), static_cast<int>(a.k),
         static_cast<int>(a.batch)},
        {static_cast<const Element*>(a.p), stride_p, static_cast<const Element*>(a.q), stride_q},
        {{}, nullptr, stride_d, static_cast<Element*>(a.d), stride_d},
        hw};
    auto& fusion = args.epilogue.thread;
    fusion.alpha = 1.0f;  // fma(1, acc, bias) == acc + bias, one rounding
    fusion.beta = 0.0f;
    fusion.bias_ptr = static_cast<const Element*>(a.bias);
    return args;
  }

  static size_t workspace(const TcGemmArgs& a) { return Gemm::get_workspace_size(arguments(a)); }

  // The kernel's dynamic shared memory opt-in, once per device (it is a per-context function attribute);
  // the CUTLASS adapter would set it on every call.
  static cudaError_t opt_in_shared_memory() {
    static std::atomic<uint64_t> done_devices{0};
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err != cudaSuccess) return err;
    const uint64_t bit = device < 64 ? (uint64_t{1} << device) : 0;
    if (bit && (done_devices.load(std::memory_order_acquire) & bit)) return cudaSuccess;
    constexpr int smem = Kernel::SharedStorageSize;
    if (smem >= (48 << 10)) {
      err = cudaFuncSetAttribute(cutlass::device_kernel<Kernel>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
      if (err != cudaSuccess) return err;
    }
    done_devices.fetch_or(bit, std::memory_order_acq_rel);
    return cudaSuccess;
  }

  static cudaError_t launch(const TcGemmArgs& a, void* workspace, cudaStream_t stream, const char** why) {
    auto args = arguments(a);
    if (Gemm::can_implement(args) != cutlass::Status::kSuccess) {
      *why = "CUTLASS cannot implement this GEMM (alignment or shape)";
      return cudaErrorInvalidValue;
    }
    if (Kernel::initialize_workspace(args, workspace, stream, nullptr) != cutlass::Status::kSuccess) {
      *why = "CUTLASS workspace initialisation failed";
      return cudaErrorInvalidValue;
    }
    cudaError_t err = opt_in_shared_memory();
    if (err != cudaSuccess) {
      *why = "cudaFuncSetAttribute (dynamic shared memory) failed";
      return err;
    }
    typename Kernel::Params params = Kernel::to_underlying_arguments(args, workspace);
    if (Gemm::run(params, stream) != cutlass::Status::kSuccess) {
      *why = "CUTLASS GEMM launch failed";
      err = cudaGetLastError();
      return err != cudaSuccess ? err : cudaErrorLaunchFailure;
    }
    return cudaSuccess;
  }
};

template <class TileShape, class ClusterShape, bool kSwapped, bool kCooperative>
size_t workspace_any(const TcGemmArgs& a) {
  return a.dtype == TcDtype::kBFloat16
             ? TcGemm<cutlass::bfloat16_t, TileShape, ClusterShape, kSwapped, kCooperative>::workspace(a)
             : TcGemm<cutlass::half_t, TileShape, ClusterShape, kSwapped, kCooperative>::workspace(a);
}

template <class TileShape, class ClusterShape, bool kSwapped, bool kCooperative>
cudaError_t launch_any(const TcGemmArgs& a, void* ws, cudaStream_t s, const char** why) {
  return a.dtype == TcDtype::kBFloat16
             ? TcGemm<cutlass::bfloat16_t, TileShape, ClusterShape, kSwapped, kCooperative>::launch(a, ws, s, why)
             : TcGemm<cutlass::half_t, TileShape, ClusterShape, kSwapped, kCooperative>::launch(a, ws, s, why);
}

}  // namespace tc
}  // namespace detops

// Defines the two entry points of one variant (both dtypes).
#define DETOPS_TC_DEFINE(NAME, TILE, CLUSTER, SWAPPED, COOPERATIVE)                                         \
  namespace detops {                                                                                      \
  size_t tc_workspace_##NAME(const TcGemmArgs& a) {                                                       \
    return tc::workspace_any<TILE, CLUSTER, SWAPPED, COOPERATIVE>(a);                                     \
  }                                                                                                       \
  cudaError_t tc_launch_##NAME(const TcGemmArgs& a, void* ws, cudaStream_t s, const char** why) {         \
    return tc::launch_any<TILE, CLUSTER, SWAPPED, COOPERATIVE>(a, ws, s, why);                            \
  }                                                                                                       \
  }
