// Torch glue of the fp32 CUDA-core matmul (REDUCTION_ORDER.md §5): current stream in, kernel launch, error check.
// The caller (matmul.cpp) has validated the operands and set the device guard.
#ifdef DETOPS_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include "matmul_backends.h"
#include "matmul_fp32.h"

namespace detops {

void matmul_cuda_fp32(const MatmulParams& p) {
  const cudaError_t err = launch_matmul_fp32(p, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "detops.matmul: fp32 CUDA kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace detops
#endif
