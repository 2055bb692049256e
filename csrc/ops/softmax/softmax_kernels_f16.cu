// softmax / log_softmax CUDA kernels for fp16_t input (softmax_kernels.cuh; one file per input dtype so that nvcc
// compiles them in parallel).
#include "softmax_kernels.cuh"

namespace detops {
template int launch_softmax<fp16_t, float>(const SoftmaxParams&, void*);
template int launch_softmax<fp16_t, bf16_t>(const SoftmaxParams&, void*);
template int launch_softmax<fp16_t, fp16_t>(const SoftmaxParams&, void*);
}  // namespace detops
