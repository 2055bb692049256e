// attention, CUDA kernels: the fp16 instantiation (its own translation unit so the three dtypes compile
// in parallel). REDUCTION_ORDER.md §6; the kernels are in attention_kernels.cuh.
#include "attention_kernels.cuh"

namespace detops {
namespace attn_cuda {
template int launch_dtype<fp16_t>(const AttentionLaunch& L);
}  // namespace attn_cuda
}  // namespace detops
