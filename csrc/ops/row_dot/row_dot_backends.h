// Backend entry points of row_dot (host side; torch types allowed).
#pragma once
#include "../../common/checks.h"
#include "row_dot.h"

namespace detops {
void row_dot_cpu(const RowDotParams& p);
#ifdef DETOPS_WITH_CUDA
void row_dot_cuda(const RowDotParams& p);
#endif
}  // namespace detops
