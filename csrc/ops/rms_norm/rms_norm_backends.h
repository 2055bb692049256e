// Backend entry points of rms_norm (host side; torch types allowed).
#pragma once
#include "../../common/checks.h"
#include "rms_norm.h"

namespace detops {
void rms_norm_cpu(const RmsNormParams& p, at::ScalarType in, at::ScalarType w, at::ScalarType out);
#ifdef DETOPS_WITH_CUDA
void rms_norm_cuda(const RmsNormParams& p, at::ScalarType in, at::ScalarType w, at::ScalarType out);
#endif
}  // namespace detops
