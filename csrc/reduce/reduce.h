// THE fixed-order reduction primitives of detops (docs/REDUCTION_ORDER.md). __host__ __device__, pure C++:
// the CPU kernels and the CUDA kernels call these same functions, which is what makes CPU == CUDA bitwise
// for rms_norm / softmax / log_softmax (contract L5). Requires -ffp-contract=off (host) / --fmad=false (nvcc).
#pragma once
#include <cstdint>
#include "../common/constants.h"
#include "../common/host_device.h"
#include "../common/numeric.h"

namespace detops {

constexpr float kInf = __builtin_huge_valf();

// §1: max that is the same on every compiler and device.
DETOPS_HD float det_max(float a, float b) { return a > b ? a : b; }
DETOPS_HD float det_abs(float a) { return bits_float(float_bits(a) & 0x7fffffffu); }
DETOPS_HD bool det_isnan(float a) { return a != a; }

// §1 fused multiply-add: a*b + c rounded once (IEEE fma), the only fused operation of the order (§7 exp). The
// host calls the C library's fmaf (correctly rounded everywhere; one instruction where setup.py adds -mfma).
DETOPS_HD float det_fma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return __builtin_fmaf(a, b, c);
#endif
}

// §7 exp, the part shared by det_exp and det_exp_nonpositive: k = round(x*log2e) and the polynomial p(r) with
// exp(x) = p * 2^k. t = fma(x, log2e, 1.5*2^23) rounds x*log2e to an integer (RNE) in its last bits: wherever the
// range checks pass (|k| <= 150) the bits of t minus the bits of 1.5*2^23 are k itself, so no float->int conversion
// is needed. r = fma(-k, ln2_lo, fma(-k, ln2_hi, x)) (the inner one is exact: k*ln2_hi has 16 significant bits);
// the degree-7 Taylor polynomial in Horner form, one fma a step.
struct ExpParts { uint32_t k_bits; float p; };
DETOPS_HD ExpParts det_exp_parts(float x) {
  const float kMagic = 12582912.0f;  // 1.5 * 2^23
  const float t = det_fma(x, 1.44269502162933349609375f, kMagic);
  const float kf = t - kMagic;
  const float r = det_fma(-kf, 1.428606765330187e-06f, det_fma(-kf, 0.693145751953125f, x));
  float p = 1.0f / 5040.0f;
  p = det_fma(p, r, 1.0f / 720.0f);
  p = det_fma(p, r, 1.0f / 120.0f);
  p = det_fma(p, r, 1.0f / 24.0f);
  p = det_fma(p, r, 1.0f / 6.0f);
  p = det_fma(p, r, 0.5f);
  p = det_fma(p, r, 1.0f);
  p = det_fma(p, r, 1.0f);
  return {float_bits(t) - float_bits(kMagic), p};
}

// §7 exp. exp(0) == 1 exactly (r == 0, polynomial == 1, scale 2^0). Branch-free and bit-identical to the
// reference form of §7 (kept in tests/det_exp_exhaustive.cpp, which compares the two over all 2^32 inputs):
// - 2^k is applied as 2^(k-c) then 2^c with c = 64 (k > 0) or -64 (k <= 0): for every k in [-150, 128] the first
//   product is exact (normal), so the result is p * 2^k rounded once, as in the reference's two scalings.
// - The special inputs select their results at the end (NaN, then +inf above, then 0 below), the reference's
//   early returns in the same priority; no branch, so a thread's independent calls can interleave.
DETOPS_HD float det_exp(float x) {
  const ExpParts e = det_exp_parts(x);
  const bool k_positive = int32_t(e.k_bits) > 0;
  const uint32_t c_bits = k_positive ? 64u : uint32_t(-64);
  const float scale_a = bits_float((e.k_bits - c_bits + 127u) << 23);  // 2^(k-c) (garbage only for specials)
  const float scale_c = bits_float(k_positive ? 0x5f800000u : 0x1f800000u);  // 2^64 or 2^-64
  float y = (e.p * scale_a) * scale_c;
  y = x < -103.972084f ? 0.0f : y;
  y = x > 88.72283935546875f ? kInf : y;
  return det_isnan(x) ? x : y;
}

// det_exp for x <= 0 or NaN, bit-identical to det_exp there (tests/det_exp_exhaustive.cpp checks all 2^31 + 1 such
// inputs and the NaNs); for x > 0 the result is unspecified. With x <= 0, k <= 0, so det_exp's k > 0 branch of the
// scaling (2^(k-64) * 2^64) and its overflow test never apply. softmax's arguments x - M are never positive (a NaN
// in the row makes every output NaN whatever this returns).
DETOPS_HD float det_exp_nonpositive(float x) {
  const ExpParts e = det_exp_parts(x);
  const float scale_a = bits_float((e.k_bits + 64u + 127u) << 23);  // 2^(k+64), k <= 0
  float y = (e.p * scale_a) * bits_float(0x1f800000u);             // * 2^-64
  y = x < -103.972084f ? 0.0f : y;
  return det_isnan(x) ? x : y;
}

// §7 log.
DETOPS_HD float det_log(float x) {
  if (det_isnan(x) || x < 0.0f) return bits_float(0x7fc00000u);
  if (x == 0.0f) return -kInf;
  if (x == kInf) return kInf;
  int e = 0;
  if (x < 1.17549435e-38f) { x = x * 16777216.0f; e = -24; }  // subnormal: scale by 2^24 (exact)
  uint32_t u = float_bits(x);
  e += int((u >> 23) & 0xffu) - 127;
  float f = bits_float((u & 0x007fffffu) | 0x3f800000u);    // f in [1, 2)
  if (f > 1.41421356f) { f = f * 0.5f; e += 1; }             // f in [sqrt(1/2), sqrt(2)); exact halving
  float u1 = (f - 1.0f) / (f + 1.0f);
  float u2 = u1 * u1;
  float p = 1.0f / 11.0f;
  p = p * u2 + 1.0f / 9.0f;
  p = p * u2 + 1.0f / 7.0f;
  p = p * u2 + 1.0f / 5.0f;
  p = p * u2 + 1.0f / 3.0f;
  p = p * u2 + 1.0f;
  float logf_ = 2.0f * u1 * p;
  float ef = float(e);
  return ef * 0.693145751953125f + (logf_ + ef * 1.428606765330187e-06f);
}

// §7 tanh (for attention softcap).
DETOPS_HD float det_tanh(float x) {
  if (det_isnan(x)) return x;
  float a = det_abs(x);
  float e = det_exp(2.0f * a);
  float t = 1.0f - 2.0f / (e + 1.0f);
  return x < 0.0f ? -t : t;
}

// ---- §2 lane accumulators -------------------------------------------------------------------------------

// Plain sum lane. Order: acc = ((0 + y0) + y1) + ...
struct SumLane {
  float s = 0.0f;
  DETOPS_HD void add(float y) { s = s + y; }
  DETOPS_HD float value() const { return s; }
};

// Neumaier-compensated lane (§2 compensated mode).
struct NeumaierLane {
  float s = 0.0f, c = 0.0f;
  DETOPS_HD void add(float y) {
    // c += (big - t) + small, big the addend of larger magnitude (s on ties). Written with selects, not a
    // branch, so compilers vectorise loops of lanes; the operations are the same either way.
    const float t = s + y;
    const bool s_big = det_abs(s) >= det_abs(y);
    const float big = s_big ? s : y, small = s_big ? y : s;
    c = c + ((big - t) + small);
    s = t;
  }
  DETOPS_HD float value() const { return s + c; }
};

DETOPS_HD float merge(float a, float b) { return a + b; }

// §2 step 3: bottom-up pairwise tree over n (a power of 2) values, in place; returns v[0].
// v[l] = v[2l] (+) v[2l+1], repeated. The CUDA kernels reproduce this shape with an in-thread tree over
// kLaneVector lanes, XOR shuffles with ascending offsets, and a shared-memory tree over warps.
template <typename T>
DETOPS_HD T tree_reduce(T* v, int64_t n) {
  for (int64_t width = n; width > 1; width /= 2)
    for (int64_t l = 0; l < width / 2; ++l) v[l] = merge(v[2 * l], v[2 * l + 1]);
  return v[0];
}

// rsqrt as REDUCTION_ORDER.md §1 defines it.
DETOPS_HD float det_rsqrt(float v) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(1.0f, __fsqrt_rn(v));
#else
  return 1.0f / __builtin_sqrtf(v);
#endif
}

// ---- §6 attention state --------------------------------------------------------------------------------
// (m, l) of one row; the o vector lives with the kernel (it is Dv long). merge_scales gives the factors
// a (for the running state) and b (for the incoming chunk) of §6 step 4.
struct AttnScales { float m, a, b; bool empty; };
DETOPS_HD AttnScales merge_scales(float m_run, float m_new) {
  AttnScales r;
  r.m = det_max(m_run, m_new);
  r.empty = (r.m == -kInf);
  r.a = r.empty ? 0.0f : det_exp(m_run - r.m);
  r.b = r.empty ? 0.0f : det_exp(m_new - r.m);
  return r;
}

}  // namespace detops
