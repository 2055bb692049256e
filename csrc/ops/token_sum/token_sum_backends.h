// Backend entry points of token_sum (host side; torch types allowed).
#pragma once
#include "../../common/checks.h"
#include "token_sum.h"

namespace detops {
void token_sum_cpu(const TokenSumParams& p);
#ifdef DETOPS_WITH_CUDA
void token_sum_cuda(const TokenSumParams& p);
#endif
}  // namespace detops
