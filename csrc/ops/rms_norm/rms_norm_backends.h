// Backend entry points of rms_norm (host side; torch types allowed).
#pragma once
#include "../../common/checks.h"
#include "rms_norm.h"

namespace detops {
void rms_norm_cpu(const RmsNormParams& p, at::ScalarType in, at::ScalarType w, at::ScalarType out);
// g's dtype and out's are in's or float32 (rms_norm_backward in rms_norm.cpp widens the others first).
void rms_norm_backward_cpu(const RmsNormBackwardParams& p, at::ScalarType in, at::ScalarType g, at::ScalarType out);
#ifdef DETOPS_WITH_CUDA
void rms_norm_cuda(const RmsNormParams& p, at::ScalarType in, at::ScalarType w, at::ScalarType out);
void rms_norm_backward_cuda(const RmsNormBackwardParams& p, at::ScalarType in, at::ScalarType g, at::ScalarType out);
#endif
}  // namespace detops
