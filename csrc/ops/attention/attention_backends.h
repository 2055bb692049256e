// Backend entry points of attention (host side; torch types allowed). attention.cpp validates and calls these.
#pragma once
#include "../../common/checks.h"
#include "attention.h"

namespace detops {
void attention_cpu(const AttentionParams& p, at::ScalarType dtype);
#ifdef DETOPS_WITH_CUDA
void attention_cuda(const AttentionParams& p, at::ScalarType dtype);
#endif
}  // namespace detops
