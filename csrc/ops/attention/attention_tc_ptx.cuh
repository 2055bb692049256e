// Tensor-core attention (docs/REDUCTION_ORDER.md §6b): the inline-PTX wrappers of attention_tc.cu's kernels (the
// exponent, the max, the rounding to bf16/fp16, mma.sync, cp.async, ldmatrix, L2 prefetch, the wgmma descriptor,
// named barriers, register fences). Each pins one instruction; the wgmma instructions are in attention_wgmma.cuh.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include "attention_wgmma.cuh"

namespace detops {
namespace attn_tc {

// 2^y by the hardware: ex2.approx.ftz.f32 (MUFU.EX2; results below 2^-126 flush to +0, 2^-inf = +0, NaN -> NaN).
// Inline PTX pins it. Every in-chunk α and p of the tensor-core path goes through it (prefill, chunked prefill,
// decode), with y = fma(u, κ, -m'·κ) (p: one fused rounding) or m·κ - m'·κ (α).
__device__ __forceinline__ float tc_ex2(float y) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(y));
  return r;
}
// The block max: NaN-propagating (a NaN score makes the row NaN, as it does through its p), otherwise exact, so
// the order of the tree is immaterial.
__device__ __forceinline__ float tc_max(float a, float b) {
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

// p̃ = round_T(p) for two values (RNE, cvt.rn; lo in the low 16 bits), and back to fp32 (exact).
template <bool BF>
__device__ __forceinline__ uint32_t round_pack(float lo, float hi) {
  uint32_t r;
  if constexpr (BF) asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  else asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
template <bool BF>
__device__ __forceinline__ float lo_float(uint32_t r) {
  if constexpr (BF) return __uint_as_float(r << 16);
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(static_cast<unsigned short>(r & 0xffffu)));
  return f;
}
template <bool BF>
__device__ __forceinline__ float hi_float(uint32_t r) {
  if constexpr (BF) return __uint_as_float(r & 0xffff0000u);
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(static_cast<unsigned short>(r >> 16)));
  return f;
}

// mma.m16n8k16, fp32 accumulate in place: c = c + A·B (the hardware's k16 sum). A pure function of its
// registers (not volatile), so the compiler may interleave independent chains.
template <bool BF>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (BF) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
// commit_group + wait_group 0: also covers copies not yet committed to a group (wait_group waits only for groups).
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// L2 prefetch of keys [k0, k1) of one kv head (rows `stride` elements apart; each row's D elements as 128-byte
// lines), spread over the CTA. A hint: nothing moves into the CTA and no value depends on it.
template <int D, typename T>
__device__ __forceinline__ void prefetch_keys_l2(const T* base, int64_t stride, int64_t k0, int64_t k1, int t, int nth) {
  constexpr int LPR = (D * 2 + 127) / 128;  // lines per key row
  const int n = static_cast<int>(k1 - k0) * LPR;
  for (int x = t; x < n; x += nth) {
    const T* a = base + (k0 + x / LPR) * stride + (x % LPR) * 64;
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(a));
  }
}

// ldmatrix on a shared-memory address (bytes, the shared window).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// wgmma shared-memory matrix descriptor (sm_90a): start address, leading / stride byte offsets (16-byte units),
// 128-byte swizzle. Tiles start at 1024-byte boundaries (base_offset 0). K-major operands (Q, K): 8-row groups
// 1024 bytes apart (SBO), the k16 step is a 32-byte offset inside the 128-byte row. N-major V: rows of 64 columns
// 128 bytes apart, 8-row groups at 1024 (SBO), 64-column panels at kBK * 128 bytes (LBO).
__device__ __forceinline__ uint64_t gmma_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFFu) >> 4) | (uint64_t(lbo >> 4) << 16) | (uint64_t(sbo >> 4) << 32) | (uint64_t(1) << 62);
}

// Named barriers of the wgmma kernel (0 is __syncthreads): kStaggerBar + (step & 1), the stagger.
constexpr int kStaggerBar = 1;
__device__ __forceinline__ void named_bar_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void named_bar_arrive(int id, int n) { asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }

// Keeps registers read by an in-flight wgmma (the P·V A operand) alive up to this point (after its wait).
__device__ __forceinline__ void reg_use(const uint32_t (&a)[4][4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" ::"r"(a[i][e]) : "memory");
}

}  // namespace attn_tc
}  // namespace detops
