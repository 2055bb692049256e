// attention, CUDA kernels: the dispatch, and the float32 instantiation (bf16 / fp16 are compiled in
// attention_kernels_bf16.cu / _fp16.cu, in parallel). The kernels are in attention_kernels.cuh.
#include "attention_kernels.cuh"

namespace detops {
namespace attn_cuda {
extern template int launch_dtype<bf16_t>(const AttentionLaunch& L);
extern template int launch_dtype<fp16_t>(const AttentionLaunch& L);
template int launch_dtype<float>(const AttentionLaunch& L);
}  // namespace attn_cuda

int attention_launch(const AttentionLaunch& L) {
  if (!attention_cuda_supports(L.p.D, L.p.Dv)) return int(cudaErrorInvalidValue);
  switch (L.dtype) {
    case AttnDtype::F32: return attn_cuda::launch_dtype<float>(L);
    case AttnDtype::BF16: return attn_cuda::launch_dtype<bf16_t>(L);
    case AttnDtype::F16: return attn_cuda::launch_dtype<fp16_t>(L);
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace detops
