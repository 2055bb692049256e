// token_sum on CUDA, torch glue: device guard, stream, the launcher (token_sum_kernels.cu).
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include "token_sum_backends.h"
#include "token_sum_launch.h"

namespace detops {

void token_sum_cuda(const TokenSumParams& p) {
  const auto dev = static_cast<c10::DeviceIndex>(p.device);
  c10::cuda::CUDAGuard guard(dev);
  C10_CUDA_CHECK(static_cast<cudaError_t>(launch_token_sum(p, c10::cuda::getCurrentCUDAStream(dev).stream())));
}

}  // namespace detops
