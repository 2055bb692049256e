// row_dot on CUDA, torch glue: device guard, stream, the launcher (row_dot_kernels.cu).
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include "row_dot_backends.h"
#include "row_dot_launch.h"

namespace detops {

void row_dot_cuda(const RowDotParams& p) {
  const auto dev = static_cast<c10::DeviceIndex>(p.device);
  c10::cuda::CUDAGuard guard(dev);
  C10_CUDA_CHECK(static_cast<cudaError_t>(launch_row_dot(p, c10::cuda::getCurrentCUDAStream(dev).stream())));
}

}  // namespace detops
