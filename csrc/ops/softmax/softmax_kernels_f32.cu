// softmax / log_softmax CUDA kernels for float input (softmax_kernels.cuh; one file per input dtype so that nvcc
// compiles them in parallel).
#include "softmax_kernels.cuh"

namespace detops {
template int launch_softmax<float, float>(const SoftmaxParams&, void*);
template int launch_softmax<float, bf16_t>(const SoftmaxParams&, void*);
template int launch_softmax<float, fp16_t>(const SoftmaxParams&, void*);
}  // namespace detops
