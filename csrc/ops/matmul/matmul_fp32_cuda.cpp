// Torch glue of the CUDA-core matmul in the §5 fp32 order (REDUCTION_ORDER.md §5): current stream in, kernel launch, error check.
// The caller (matmul.cpp) has validated the operands and set the device guard.
#ifdef DETOPS_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include "matmul_backends.h"
#include "matmul_fp32.h"

namespace detops {

void matmul_cuda_fp32(const MatmulParams& p, at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
              "detops.matmul: unsupported dtype ", dtype);
  const MatmulFp32Input input = dtype == at::kFloat      ? MatmulFp32Input::kFloat32
                                : dtype == at::kBFloat16 ? MatmulFp32Input::kBFloat16
                                                         : MatmulFp32Input::kFloat16;
  const cudaError_t err = launch_matmul_fp32(p, input, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "detops.matmul: fp32 CUDA kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace detops
#endif
