// Backend entry points of softmax / log_softmax (host side; torch types allowed).
#pragma once
#include "../../common/checks.h"
#include "softmax.h"

namespace detops {
void softmax_cpu(const SoftmaxParams& p, at::ScalarType in, at::ScalarType out);
// a's dtype and out's are g's or float32 (softmax_backward in softmax.cpp widens the others first).
void softmax_backward_cpu(const SoftmaxBackwardParams& p, at::ScalarType a, at::ScalarType g, at::ScalarType out);
#ifdef DETOPS_WITH_CUDA
void softmax_cuda(const SoftmaxParams& p, at::ScalarType in, at::ScalarType out);
void softmax_backward_cuda(const SoftmaxBackwardParams& p, at::ScalarType a, at::ScalarType g, at::ScalarType out);
#endif
}  // namespace detops
