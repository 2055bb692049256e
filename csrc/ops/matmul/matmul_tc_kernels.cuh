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
// kMnP / kMnQ: the operand is MN-major (unit stride along i / j, TcGemmArgs::p_mn / q_mn) instead of K-major.
// wgmma reads it transposed from shared memory; the k-groups and their order are the same (docs/ops/matmul.md
// "Operand layouts"; tests/test_matmul_cuda.py proves the bits equal to the K-major copy).
template <class Element, class TileShape, class ClusterShape, bool kSwapped, bool kCooperative, bool kMnP = false,
          bool kMnQ = false>
struct TcGemm {
  static constexpr int kAlign = kTcAlignBytes / sizeof(Element);
  // P (i, k): RowMajor = unit stride along k, ColumnMajor = along i. Q (k, j): ColumnMajor = along k, RowMajor =
  // along j.
  using LayoutP = std::conditional_t<kMnP, cutlass::layout::ColumnMajor, cutlass::layout::RowMajor>;
  using LayoutQ = std::conditional_t<kMnQ, cutlass::layout::RowMajor, cutlass::layout::ColumnMajor>;
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
    StrideP stride_p;
    StrideQ stride_q;
    if constexpr (kMnP) {
      stride_p = StrideP{Int<1>{}, a.ld_p, a.batch_stride_p};
    } else {
      stride_p = StrideP{a.ld_p, Int<1>{}, a.batch_stride_p};
    }
    if constexpr (kMnQ) {
      stride_q = StrideQ{Int<1>{}, a.ld_q, a.batch_stride_q};
    } else {
      stride_q = StrideQ{a.ld_q, Int<1>{}, a.batch_stride_q};
    }
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

  static constexpr bool kClustered = size(ClusterShape{}) > 1;

  // Function attributes, once per device (they are per-context; the CUTLASS adapter and its cluster launcher
  // would set them on every call): the dynamic shared memory opt-in, and for clustered kernels the attribute
  // CUTLASS's ClusterLauncher sets before every launch.
  static cudaError_t set_attributes_once(int device) {
    static std::atomic<uint64_t> done_devices{0};
    const uint64_t bit = device < 64 ? (uint64_t{1} << device) : 0;
    if (bit && (done_devices.load(std::memory_order_acquire) & bit)) return cudaSuccess;
    constexpr int smem = Kernel::SharedStorageSize;
    cudaError_t err = cudaSuccess;
    if (smem >= (48 << 10)) {
      err = cudaFuncSetAttribute(cutlass::device_kernel<Kernel>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
      if (err != cudaSuccess) return err;
    }
    if constexpr (kClustered) {
      err = cudaFuncSetAttribute(cutlass::device_kernel<Kernel>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
      if (err != cudaSuccess) return err;
    }
    done_devices.fetch_or(bit, std::memory_order_acq_rel);
    return cudaSuccess;
  }

  // Kernel parameters (three TMA descriptors: P, Q, D) of the last few GEMMs of this thread, keyed by every
  // field of TcGemmArgs and the device. A descriptor only encodes addresses, extents and strides, so an equal
  // key gives byte-identical Params; a miss re-encodes. Decode calls the same layers with the same buffers
  // (the caching allocator hands the same blocks back), so this removes the encodes from the eager path.
  static constexpr int kParamsCacheSlots = 16;
  struct ParamsCacheEntry {
    bool valid = false;
    int device = -1;
    TcGemmArgs key;
    typename Kernel::Params params;
  };
  static bool same_gemm(const TcGemmArgs& x, const TcGemmArgs& y) {
    return x.dtype == y.dtype && x.rows_i == y.rows_i && x.cols_j == y.cols_j && x.k == y.k && x.batch == y.batch &&
           x.p == y.p && x.ld_p == y.ld_p && x.batch_stride_p == y.batch_stride_p && x.q == y.q && x.ld_q == y.ld_q &&
           x.batch_stride_q == y.batch_stride_q && x.d == y.d && x.ld_d == y.ld_d &&
           x.batch_stride_d == y.batch_stride_d && x.bias == y.bias && x.device_sm_count == y.device_sm_count &&
           x.p_mn == y.p_mn && x.q_mn == y.q_mn;
  }

  static cudaError_t launch(const TcGemmArgs& a, void* workspace, cudaStream_t stream, const char** why) {
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err != cudaSuccess) {
      *why = "cudaGetDevice failed";
      return err;
    }
    err = set_attributes_once(device);
    if (err != cudaSuccess) {
      *why = "cudaFuncSetAttribute (shared memory / cluster size) failed";
      return err;
    }
    thread_local ParamsCacheEntry cache[kParamsCacheSlots];
    thread_local int next_slot = 0;
    const typename Kernel::Params* params = nullptr;
    if (workspace == nullptr) {
      for (const ParamsCacheEntry& e : cache) {
        if (e.valid && e.device == device && same_gemm(e.key, a)) {
          params = &e.params;
          break;
        }
      }
    }
    typename Kernel::Params fresh;
    if (params == nullptr) {
      auto args = arguments(a);
      if (Gemm::can_implement(args) != cutlass::Status::kSuccess) {
        *why = "CUTLASS cannot implement this GEMM (alignment or shape)";
        return cudaErrorInvalidValue;
      }
      if (Kernel::initialize_workspace(args, workspace, stream, nullptr) != cutlass::Status::kSuccess) {
        *why = "CUTLASS workspace initialisation failed";
        return cudaErrorInvalidValue;
      }
      fresh = Kernel::to_underlying_arguments(args, workspace);
      params = &fresh;
      if (workspace == nullptr) {
        ParamsCacheEntry& e = cache[next_slot];
        next_slot = (next_slot + 1) % kParamsCacheSlots;
        e.valid = true;
        e.device = device;
        e.key = a;
        e.params = fresh;
      }
    }
    // The launch GemmUniversalAdapter::run makes (same grid, block, shared memory, cluster shape, no PDL),
    // without its per-call cudaFuncSetAttribute for clusters (set once above).
    typename Kernel::Params launch_params = *params;
    const dim3 grid = Kernel::get_grid_shape(launch_params);
    const dim3 block = Kernel::get_block_shape();
    constexpr int smem = Kernel::SharedStorageSize;
    if constexpr (kClustered) {
      cudaLaunchAttribute attribute[1];
      attribute[0].id = cudaLaunchAttributeClusterDimension;
      attribute[0].val.clusterDim.x = size<0>(ClusterShape{});
      attribute[0].val.clusterDim.y = size<1>(ClusterShape{});
      attribute[0].val.clusterDim.z = size<2>(ClusterShape{});
      cudaLaunchConfig_t config = {};
      config.gridDim = grid;
      config.blockDim = block;
      config.dynamicSmemBytes = smem;
      config.stream = stream;
      config.attrs = attribute;
      config.numAttrs = 1;
      void* kernel_params[] = {&launch_params};
      err = cudaLaunchKernelExC(&config, reinterpret_cast<const void*>(cutlass::device_kernel<Kernel>), kernel_params);
    } else {
      cutlass::device_kernel<Kernel><<<grid, block, smem, stream>>>(launch_params);
      err = cudaGetLastError();
    }
    if (err != cudaSuccess) *why = "CUTLASS GEMM launch failed";
    return err;
  }
};

template <class TileShape, class ClusterShape, bool kSwapped, bool kCooperative, bool kMnP, bool kMnQ>
size_t workspace_any(const TcGemmArgs& a) {
  using BF = TcGemm<cutlass::bfloat16_t, TileShape, ClusterShape, kSwapped, kCooperative, kMnP, kMnQ>;
  using F16 = TcGemm<cutlass::half_t, TileShape, ClusterShape, kSwapped, kCooperative, kMnP, kMnQ>;
  return a.dtype == TcDtype::kBFloat16 ? BF::workspace(a) : F16::workspace(a);
}

template <class TileShape, class ClusterShape, bool kSwapped, bool kCooperative, bool kMnP, bool kMnQ>
cudaError_t launch_any(const TcGemmArgs& a, void* ws, cudaStream_t s, const char** why) {
  using BF = TcGemm<cutlass::bfloat16_t, TileShape, ClusterShape, kSwapped, kCooperative, kMnP, kMnQ>;
  using F16 = TcGemm<cutlass::half_t, TileShape, ClusterShape, kSwapped, kCooperative, kMnP, kMnQ>;
  return a.dtype == TcDtype::kBFloat16 ? BF::launch(a, ws, s, why) : F16::launch(a, ws, s, why);
}

}  // namespace tc
}  // namespace detops

// Defines the two entry points of one variant and operand layout (both dtypes).
#define DETOPS_TC_DEFINE(NAME, TILE, CLUSTER, SWAPPED, COOPERATIVE, MN_P, MN_Q)                             \
  namespace detops {                                                                                      \
  size_t tc_workspace_##NAME(const TcGemmArgs& a) {                                                       \
    return tc::workspace_any<TILE, CLUSTER, SWAPPED, COOPERATIVE, MN_P, MN_Q>(a);                         \
  }                                                                                                       \
  cudaError_t tc_launch_##NAME(const TcGemmArgs& a, void* ws, cudaStream_t s, const char** why) {         \
    return tc::launch_any<TILE, CLUSTER, SWAPPED, COOPERATIVE, MN_P, MN_Q>(a, ws, s, why);                \
  }                                                                                                       \
  }
