// Bit-exact float <-> bf16/fp16 conversions and float bit access, identical on host and device
// (REDUCTION_ORDER.md §1: widening is exact, narrowing is round-to-nearest-even). Pure C++.
#pragma once
#include <cstdint>
#include <cstring>
#include "host_device.h"

namespace detops {

DETOPS_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
DETOPS_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// Storage types: raw 16-bit patterns, so kernels can use them without torch or cuda_bf16.h.
struct bf16_t { uint16_t x; };
struct fp16_t { uint16_t x; };
// Which of the three a tensor holds, for launchers that take dtypes without torch (checks.h: storage_of).
enum class Storage : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// f(static_cast<T*>(nullptr)) with T the storage type of s.
template <typename F>
void with_storage(Storage s, F&& f) {
  switch (s) {
    case Storage::kBFloat16: f(static_cast<bf16_t*>(nullptr)); break;
    case Storage::kFloat16: f(static_cast<fp16_t*>(nullptr)); break;
    default: f(static_cast<float*>(nullptr)); break;
  }
}

// f(A*, B*) (typed null pointers) with A and B each T or float, as the flags say: the backward kernels take their
// other operands and their output in the main operand's storage T or widened to fp32.
template <typename T, typename F>
void with_t_or_float(bool a_float, bool b_float, F&& f) {
  if (a_float && b_float) f(static_cast<float*>(nullptr), static_cast<float*>(nullptr));
  else if (a_float) f(static_cast<float*>(nullptr), static_cast<T*>(nullptr));
  else if (b_float) f(static_cast<T*>(nullptr), static_cast<float*>(nullptr));
  else f(static_cast<T*>(nullptr), static_cast<T*>(nullptr));
}

DETOPS_HD float to_float(float v) { return v; }
DETOPS_HD float to_float(bf16_t v) { return bits_float(uint32_t(v.x) << 16); }
DETOPS_HD float to_float(fp16_t v) {
  uint32_t h = v.x;
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (man << 13));  // inf / nan
  if (exp == 0) {
    if (man == 0) return bits_float(sign);
    // subnormal half: man * 2^-24, exact in float
    float f = float(man) * bits_float(0x33800000u);  // 2^-24
    return sign ? -f : f;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
}

template <typename T> DETOPS_HD T from_float(float f);
template <> DETOPS_HD float from_float<float>(float f) { return f; }
template <> DETOPS_HD bf16_t from_float<bf16_t>(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{uint16_t((u >> 16) | 0x40u)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return bf16_t{uint16_t(u >> 16)};
}
template <> DETOPS_HD fp16_t from_float<fp16_t>(float f) {
  uint32_t u = float_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return fp16_t{uint16_t(sign | 0x7e00u)};           // NaN
  if (a >= 0x477ff000u) return fp16_t{uint16_t(sign | 0x7c00u)};          // rounds to inf
  if (a < 0x38800000u) {                                                  // below 2^-14: subnormal/zero
    // value * 2^24 rounded to an integer, RNE: exact arithmetic in float for this range.
    float v = bits_float(a) * 16777216.0f;                                // exact (power of 2)
    float r = (v + 12582912.0f) - 12582912.0f;                            // RNE to integer (v < 1024)
    return fp16_t{uint16_t(sign | uint32_t(r))};
  }
  uint32_t e = (a >> 23) - 112u;
  uint32_t m = a & 0x7fffffu;
  uint32_t h = (e << 10) | (m >> 13);
  uint32_t rest = m & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h += 1u;         // carries into exponent correctly
  return fp16_t{uint16_t(sign | h)};
}

}  // namespace detops
