// attention, CUDA backend glue: device guard, stream, workspace, dtype, head-dim check; the kernels are in
// attention_kernels.cu (REDUCTION_ORDER.md §6) and attention_tc.cu (§6b). attention.cpp has validated shapes, dtypes and devices.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include "attention_backends.h"
#include "attention_launch.h"
#include "attention_tc.h"

namespace detops {

// 16-byte vector loads need 16-byte aligned rows; otherwise the kernel loads element by element (same values,
// same order of arithmetic: alignment changes only how the bytes travel).
static bool vec_ok(const void* ptr, int64_t elem, int64_t s0, int64_t s1, int64_t s2) {
  const auto aligned = [](int64_t bytes) { return bytes % 16 == 0; };
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && aligned(s0 * elem) && aligned(s1 * elem) &&
         aligned(s2 * elem);
}

void attention_cuda(const AttentionParams& p, at::ScalarType dtype) {
  TORCH_CHECK(attention_cuda_supports(p.D, p.Dv), "detops.attention: unsupported head dims for the CUDA kernels: D=", p.D,
              ", Dv=", p.Dv, "; supported: D == Dv in {16, 32, 64, 80, 96, 128, 256}, or Dv = 16 with D in {32, 64} "
              "(the CPU backend takes any head dims)");
  TORCH_CHECK(p.Hk >= 1 && p.Hq % p.Hk == 0, "detops.attention: query heads (", p.Hq,
              ") must be a multiple of key/value heads (", p.Hk, ")");
  if (p.B == 0 || p.Q == 0 || p.Hq == 0) return;

  cudaPointerAttributes attr{};
  C10_CUDA_CHECK(cudaPointerGetAttributes(&attr, p.out));
  const c10::DeviceIndex dev = static_cast<c10::DeviceIndex>(attr.device);
  c10::cuda::CUDAGuard guard(dev);

  AttentionLaunch L;
  L.p = p;
  switch (dtype) {
    case at::kFloat: L.dtype = AttnDtype::F32; break;
    case at::kBFloat16: L.dtype = AttnDtype::BF16; break;
    case at::kHalf: L.dtype = AttnDtype::F16; break;
    default: TORCH_CHECK(false, "detops.attention: unsupported dtype ", dtype);
  }
  const int64_t elem = static_cast<int64_t>(c10::elementSize(dtype));
  L.q_vec = vec_ok(p.q, elem, p.q_bs, p.q_hs, p.q_ss);
  L.k_vec = vec_ok(p.k, elem, p.k_bs, p.k_hs, p.k_ss);
  L.v_vec = vec_ok(p.v, elem, p.v_bs, p.v_hs, p.v_ss);
  L.chunk_slots = attention_chunk_slots(p.K);
  // Partial chunk states (and the wgmma kernel's running states); only those of rows spanning 2+ chunks are
  // written, and only those are read.
  const bool tc = attention_tc_supports(L.dtype, p.D, p.Dv);
  // The tensor-core kernels count a pass's keys in int from its first block.
  TORCH_CHECK(!tc || p.K <= kAttnTcMaxKeys, "detops.attention: the bf16/fp16 CUDA kernels take at most ", kAttnTcMaxKeys,
              " keys, got ", p.K);
  const int64_t ws_floats = tc ? attention_tc_workspace_floats(p) : attention_workspace_floats(p);
  at::Tensor ws = at::empty({ws_floats}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, dev));
  L.workspace = ws.data_ptr<float>();
  L.stream = c10::cuda::getCurrentCUDAStream(dev).stream();
  // bf16/fp16 with D == Dv <= 128: tensor cores (REDUCTION_ORDER.md §6b); everything else: CUDA cores (§6).
  // Chosen by dtype and head dim only, never by B, Q, K or the device.
  const int err = tc ? attention_tc_launch(L) : attention_launch(L);
  TORCH_CHECK(err == 0, "detops.attention: CUDA launch failed: ", cudaGetErrorString(static_cast<cudaError_t>(err)));
}

}  // namespace detops
