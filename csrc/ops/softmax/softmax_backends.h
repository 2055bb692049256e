// Backend entry points of softmax / log_softmax (host side; torch types allowed).
#pragma once
#include "../../common/checks.h"
#include "softmax.h"

namespace detops {
void softmax_cpu(const SoftmaxParams& p, at::ScalarType in, at::ScalarType out);
#ifdef DETOPS_WITH_CUDA
void softmax_cuda(const SoftmaxParams& p, at::ScalarType in, at::ScalarType out);
#endif
}  // namespace detops
