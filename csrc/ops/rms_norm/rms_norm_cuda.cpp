// rms_norm on CUDA, torch glue: device guard, stream, dtype dispatch to the launcher (rms_norm_kernels.cu).
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include "rms_norm_backends.h"
#include "rms_norm_launch.h"

namespace detops {

template <typename In>
static int launch_typed(const RmsNormParams& p, bool w_float, at::ScalarType in, at::ScalarType out, void* stream) {
  if (!w_float) return launch_rms_norm<In, In, In>(p, stream);           // weight dtype == input dtype
  if (out == in) return launch_rms_norm<In, float, In>(p, stream);
  if constexpr (!std::is_same_v<In, float>) {
    if (out == at::kFloat) return launch_rms_norm<In, float, float>(p, stream);  // cast_first's promote
  }
  TORCH_CHECK(false, "detops.rms_norm: no CUDA kernel for input ", in, " and output ", out);
}

void rms_norm_cuda(const RmsNormParams& p, at::ScalarType in, at::ScalarType w, at::ScalarType out) {
  const auto dev = static_cast<c10::DeviceIndex>(p.device);
  c10::cuda::CUDAGuard guard(dev);
  RmsNormParams q = p;
  // A weight of a third dtype (e.g. fp16 with bf16 input) is widened to fp32 once: widening is exact and
  // rms_norm_apply widens w to fp32 anyway (§3), so the values are those of the original weight.
  at::Tensor w_float;
  if (p.w != nullptr && w != in && w != at::kFloat) {
    w_float = at::from_blob(const_cast<void*>(p.w), {p.n}, at::TensorOptions().dtype(w).device(at::kCUDA, dev))
                  .to(at::kFloat);
    q.w = w_float.data_ptr();
    w = at::kFloat;
  }
  const bool w_float_kernel = p.w != nullptr ? w == at::kFloat : in == at::kFloat;
  void* stream = c10::cuda::getCurrentCUDAStream(dev).stream();
  int err = 0;
  switch (in) {
    case at::kFloat: err = launch_typed<float>(q, true, in, out, stream); break;
    case at::kBFloat16: err = launch_typed<bf16_t>(q, w_float_kernel, in, out, stream); break;
    case at::kHalf: err = launch_typed<fp16_t>(q, w_float_kernel, in, out, stream); break;
    default: TORCH_CHECK(false, "detops.rms_norm: unsupported input dtype ", in);
  }
  C10_CUDA_CHECK(static_cast<cudaError_t>(err));
}

void rms_norm_backward_cuda(const RmsNormBackwardParams& p, at::ScalarType in, at::ScalarType g, at::ScalarType out) {
  const auto dev = static_cast<c10::DeviceIndex>(p.device);
  c10::cuda::CUDAGuard guard(dev);
  const int err = launch_rms_norm_backward(p, storage_of(in), g == at::kFloat, out == at::kFloat,
                                           c10::cuda::getCurrentCUDAStream(dev).stream());
  C10_CUDA_CHECK(static_cast<cudaError_t>(err));
}

}  // namespace detops
