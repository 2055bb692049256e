// softmax / log_softmax on CUDA, torch glue: device guard, stream, dtype dispatch to the launcher
// (softmax_kernels.cuh).
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include "softmax_backends.h"
#include "softmax_launch.h"

namespace detops {

void softmax_cuda(const SoftmaxParams& p, at::ScalarType in, at::ScalarType out) {
  const auto dev = static_cast<c10::DeviceIndex>(p.device);
  c10::cuda::CUDAGuard guard(dev);
  void* stream = c10::cuda::getCurrentCUDAStream(dev).stream();
  int err = 0;
  dispatch_float(in, "softmax", [&](auto* in_tag) {
    using In = std::remove_pointer_t<decltype(in_tag)>;
    dispatch_float(out, "softmax", [&](auto* out_tag) {
      using Out = std::remove_pointer_t<decltype(out_tag)>;
      err = launch_softmax<In, Out>(p, stream);
    });
  });
  C10_CUDA_CHECK(static_cast<cudaError_t>(err));
}

void softmax_backward_cuda(const SoftmaxBackwardParams& p, at::ScalarType a, at::ScalarType g, at::ScalarType out) {
  const auto dev = static_cast<c10::DeviceIndex>(p.device);
  c10::cuda::CUDAGuard guard(dev);
  const int err = launch_softmax_backward(p, storage_of(g), a == at::kFloat, out == at::kFloat,
                                          c10::cuda::getCurrentCUDAStream(dev).stream());
  C10_CUDA_CHECK(static_cast<cudaError_t>(err));
}

}  // namespace detops
