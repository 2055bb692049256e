// softmax / log_softmax on CUDA, torch glue: device guard, stream, dtype dispatch to the launcher
// (softmax_kernels.cu).
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include "softmax_backends.h"
#include "softmax_launch.h"

namespace detops {

// The device that holds `ptr` (the backend entry point receives raw pointers only).
static c10::DeviceIndex device_of(const void* ptr) {
  cudaPointerAttributes a;
  C10_CUDA_CHECK(cudaPointerGetAttributes(&a, ptr));
  return static_cast<c10::DeviceIndex>(a.device);
}

void softmax_cuda(const SoftmaxParams& p, at::ScalarType in, at::ScalarType out) {
  const c10::DeviceIndex dev = device_of(p.x);
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

}  // namespace detops
