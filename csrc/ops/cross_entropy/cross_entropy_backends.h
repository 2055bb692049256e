// Backend entry points of the cross-entropy row kernels (host side; torch types allowed).
#pragma once
#include "../../common/checks.h"
#include "cross_entropy.h"

namespace detops {
void cross_entropy_nll_cpu(const CrossEntropyParams& p);
void cross_entropy_backward_cpu(const CrossEntropyParams& p);
#ifdef DETOPS_WITH_CUDA
void cross_entropy_nll_cuda(const CrossEntropyParams& p);
void cross_entropy_backward_cuda(const CrossEntropyParams& p);
#endif
}  // namespace detops
