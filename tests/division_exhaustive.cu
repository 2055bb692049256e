// Exhaustive proof that RowDivision::fast (csrc/ops/softmax/row_division.cuh) returns the bits of the GPU's IEEE
// division e / S wherever the softmax kernels use it (e >= S * 2^-100, S >= 1; smaller nonzero e take the IEEE
// division). Not part of the test suite (it needs the GPU and ~a minute); run by hand after a change there:
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --fmad=false -prec-div=true -Icsrc \
//        tests/division_exhaustive.cu -o /tmp/division_exhaustive && /tmp/division_exhaustive
// Prints "... 0 mismatches" and exits 0, or the first mismatches and 1.
// 1. Every pair of significands: e = A * 2^-23, S = B * 2^-23, A and B in [2^23, 2^24) (2^46 pairs). Scaling e by
//    2^i and S by 2^j scales q0, the residual and q by 2^(i-j) and r by 2^-j exactly while nothing underflows or
//    overflows (row_division.cuh's range argument), so these pairs cover every exponent the kernels use.
// 2. The guard itself, for every S significand at the smallest and largest row sums (S in [1, 2) and [2^17, 2^18)):
//    e at the bottom of the proven range (the first two binades at or above S * 2^-100, 1024 sampled significands
//    each), where `fast` must equal the division, and e below it, where `ieee` must be true (e > 0).
#include <cstdio>
#include <cstdint>
#include "ops/softmax/row_division.cuh"

namespace {

__device__ unsigned long long g_mismatches, g_guard;

__device__ void report(unsigned long long* counter, float e, float s, float got, float want) {
  if (atomicAdd(counter, 1ull) < 8)
    printf("mismatch e=%a S=%a fast=%a ieee=%a\n", e, s, got, want);
}

// Part 1: one S significand a block (b_first + blockIdx.x); its threads walk e's significands with stride 256.
__global__ void all_pairs(uint32_t b_first) {
  const float s = __uint_as_float((127u << 23) | (b_first + blockIdx.x));
  const detops::RowDivision d(s);
  for (uint32_t a = threadIdx.x; a < (1u << 23); a += blockDim.x) {
    const float e = __uint_as_float((127u << 23) | a);
    const float got = d.fast(e), want = __fdiv_rn(e, s);
    if (__float_as_uint(got) != __float_as_uint(want)) report(&g_mismatches, e, s, got, want);
  }
}

// Part 2: one thread per S significand and exponent (S in [1, 2) or [2^17, 2^18)).
__global__ void guard(int s_exponent) {
  const uint32_t B = blockIdx.x * blockDim.x + threadIdx.x;
  if (B >= (1u << 23)) return;
  const float s = __uint_as_float(uint32_t(127 + s_exponent) << 23 | B);
  const detops::RowDivision d(s);
  uint32_t h = B * 2654435761u + uint32_t(s_exponent);
  const int first = int((__float_as_uint(d.tiny) >> 23) & 0xffu) - 127;  // exponent of S * 2^-100
  for (int k = 0; k < 1024; ++k) {
    h = h * 1664525u + 1013904223u;
    for (int binade = -1; binade <= 1; ++binade) {
      const float e = __uint_as_float(uint32_t(127 + first + binade) << 23 | (h >> 9));
      if (e >= d.tiny) {
        if (d.ieee(e)) report(&g_guard, e, s, 0.0f, 0.0f);
        const float got = d.fast(e), want = __fdiv_rn(e, s);
        if (__float_as_uint(got) != __float_as_uint(want)) report(&g_mismatches, e, s, got, want);
      } else if (!d.ieee(e)) {
        report(&g_guard, e, s, 0.0f, 0.0f);
      }
    }
  }
  if (d.ieee(0.0f)) report(&g_guard, 0.0f, s, 0.0f, 0.0f);
}

}  // namespace

int main() {
  const uint32_t kBlocks = 1u << 16;  // S significands per launch
  for (uint32_t b = 0; b < (1u << 23); b += kBlocks) {
    all_pairs<<<kBlocks, 256>>>(b);
    if (cudaDeviceSynchronize() != cudaSuccess) {
      std::printf("CUDA error: %s\n", cudaGetErrorString(cudaGetLastError()));
      return 2;
    }
  }
  guard<<<(1u << 23) / 256, 256>>>(0);
  guard<<<(1u << 23) / 256, 256>>>(17);
  if (cudaDeviceSynchronize() != cudaSuccess) return 2;
  unsigned long long mismatches = 0, guard_errors = 0;
  cudaMemcpyFromSymbol(&mismatches, g_mismatches, sizeof(mismatches));
  cudaMemcpyFromSymbol(&guard_errors, g_guard, sizeof(guard_errors));
  std::printf("division exhaustive: %llu significand pairs + guard samples, %llu mismatches, %llu guard errors\n",
              1ull << 46, mismatches, guard_errors);
  return mismatches == 0 && guard_errors == 0 ? 0 : 1;
}
