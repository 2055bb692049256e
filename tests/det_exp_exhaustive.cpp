// Exhaustive proof that csrc/reduce/reduce.h's det_exp returns the bits of the reference form of
// REDUCTION_ORDER.md §7 (written as §7 reads: early returns, a float->int conversion, two scalings) for every
// one of the 2^32 float inputs, and that det_exp_nonpositive returns det_exp's bits for every input <= 0 and every
// NaN. Run by hand after a change to either (about a minute on 2 cores; not part of the test suite):
//   g++ -std=c++17 -O2 -ffp-contract=off -fno-fast-math -mfma -fopenmp -Icsrc tests/det_exp_exhaustive.cpp && ./a.out
// Prints "det_exp exhaustive: 4294967296 inputs, 0 mismatches, 0 nonpositive mismatches" and exits 0, or the
// first mismatches and 1.
#include <cstdint>
#include <cstdio>
#include "reduce/reduce.h"

namespace {
using detops::bits_float;
using detops::float_bits;

float pow2i_ref(int k) { return bits_float(uint32_t(k + 127) << 23); }

float det_exp_reference(float x) {
  if (x != x) return x;
  if (x > 88.72283935546875f) return __builtin_huge_valf();
  if (x < -103.972084f) return 0.0f;
  const float kMagic = 12582912.0f;
  float kf = __builtin_fmaf(x, 1.44269502162933349609375f, kMagic) - kMagic;
  int k = int(kf);
  float r = __builtin_fmaf(-kf, 1.428606765330187e-06f, __builtin_fmaf(-kf, 0.693145751953125f, x));
  float p = 1.0f / 5040.0f;
  p = __builtin_fmaf(p, r, 1.0f / 720.0f);
  p = __builtin_fmaf(p, r, 1.0f / 120.0f);
  p = __builtin_fmaf(p, r, 1.0f / 24.0f);
  p = __builtin_fmaf(p, r, 1.0f / 6.0f);
  p = __builtin_fmaf(p, r, 0.5f);
  p = __builtin_fmaf(p, r, 1.0f);
  p = __builtin_fmaf(p, r, 1.0f);
  int k1 = k / 2;
  int k2 = k - k1;
  return (p * pow2i_ref(k1)) * pow2i_ref(k2);
}
}  // namespace

int main() {
  uint64_t mismatches = 0, nonpositive = 0;
#pragma omp parallel for reduction(+ : mismatches, nonpositive) schedule(static)
  for (int64_t hi = 0; hi < (int64_t(1) << 16); ++hi) {
    for (uint32_t lo = 0; lo < (1u << 16); ++lo) {
      const uint32_t u = uint32_t(hi) << 16 | lo;
      const float x = bits_float(u);
      const uint32_t got = float_bits(detops::det_exp(x)), want = float_bits(det_exp_reference(x));
      if (got != want) {
        if (mismatches < 10) std::printf("mismatch x=0x%08x new=0x%08x reference=0x%08x\n", u, got, want);
        ++mismatches;
      }
      if ((x <= 0.0f || x != x) && float_bits(detops::det_exp_nonpositive(x)) != got) {
        if (nonpositive < 10) std::printf("nonpositive mismatch x=0x%08x\n", u);
        ++nonpositive;
      }
    }
  }
  std::printf("det_exp exhaustive: %llu inputs, %llu mismatches, %llu nonpositive mismatches\n", 1ull << 32,
              (unsigned long long)mismatches, (unsigned long long)nonpositive);
  return mismatches == 0 && nonpositive == 0 ? 0 : 1;
}
