// The cross-entropy row kernels on CUDA, torch glue: device guard, stream, the launchers (cross_entropy_kernels.cu).
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include "cross_entropy_backends.h"
#include "cross_entropy_launch.h"

namespace detops {

void cross_entropy_nll_cuda(const CrossEntropyParams& p) {
  const auto dev = static_cast<c10::DeviceIndex>(p.device);
  c10::cuda::CUDAGuard guard(dev);
  C10_CUDA_CHECK(static_cast<cudaError_t>(launch_cross_entropy_nll(p, c10::cuda::getCurrentCUDAStream(dev).stream())));
}

void cross_entropy_backward_cuda(const CrossEntropyParams& p) {
  const auto dev = static_cast<c10::DeviceIndex>(p.device);
  c10::cuda::CUDAGuard guard(dev);
  C10_CUDA_CHECK(
      static_cast<cudaError_t>(launch_cross_entropy_backward(p, c10::cuda::getCurrentCUDAStream(dev).stream())));
}

}  // namespace detops
