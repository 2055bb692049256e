// §4's softmax output e / S (REDUCTION_ORDER.md §1: IEEE division, correctly rounded) for the values e of one row,
// with the same bits as the division but without its per-element cost on the GPU (a reciprocal, four fmas, a range
// check, a branch to a slow path and a convergence barrier, around which nothing else of the thread is scheduled):
//   r = 1 / S (the IEEE division, once per row),  q0 = e * r,  q = fma(fma(-q0, S, e), r, q0).
// Markstein's correction: r is the correctly rounded reciprocal and q0 within an ulp of e / S, so the residual
// fma(-q0, S, e) is exact and q is e / S correctly rounded, as long as nothing underflows.
// tests/division_exhaustive.cu checks q against the GPU's IEEE division for every pair of significands (all 2^46;
// the exponents only scale every step exactly while nothing underflows). It is run by hand on the GPU, after any
// change here (docs/ops/softmax.md).
// Underflow: S >= 1 (the row maximum contributes exp(0) = 1), so e >= S * 2^-100 keeps q >= 2^-100 and the residual,
// a multiple of 2^(exponent(e) - 47) >= 2^-147, representable. The rare smaller nonzero e (`ieee`) take the IEEE
// division; e = 0 gives +0 both ways, and a NaN (in e or S) the GPU's canonical NaN both ways.
#pragma once
#include <cstdint>

namespace detops {

struct RowDivision {
  float s, r, tiny;
  __device__ explicit RowDivision(float s_) : s(s_), r(1.0f / s_), tiny(s_ * 0x1p-100f) {}
  __device__ __forceinline__ float fast(float e) const {
    const float q0 = e * r;
    return __fmaf_rn(__fmaf_rn(-q0, s, e), r, q0);
  }
  // 0 < e < tiny: the values `fast` is not proven for (one unsigned compare: e >= 0 or NaN here).
  __device__ __forceinline__ bool ieee(float e) const {
    return __float_as_uint(e) - 1u < __float_as_uint(tiny) - 1u;
  }
};

}  // namespace detops
