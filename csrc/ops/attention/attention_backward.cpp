// detops::attention_backward_tc: validation and launch of the tensor-core attention backward
// (docs/REDUCTION_ORDER.md §10b; kernels in attention_backward_kernels.cu). The document tables are built by
// detops/ops/attention.py (the backward of detops::attention); every other case runs §10 rule 3 there.
#include "../../common/checks.h"
#include "attention_backward.h"
#ifdef DETOPS_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#endif

namespace detops {

static const char* kOp = "attention_backward_tc";

#ifdef DETOPS_WITH_CUDA
static void check_table(const at::Tensor& t, const at::Tensor& like, const char* name, int64_t cols) {
  check_same_device(like, t, kOp, "query", name);
  TORCH_CHECK(t.scalar_type() == at::kInt && t.is_contiguous() && t.dim() == 2 && t.size(1) == cols, "detops.", kOp,
              ": ", name, " must be a contiguous int32 table with ", cols, " columns, got ", t.scalar_type(), " ",
              t.sizes());
}

// Unit stride along D and 16-byte aligned rows (the kernels copy rows in 16-byte pieces); otherwise a copy that
// only moves memory.
static at::Tensor rows_aligned(const at::Tensor& t) {
  const int64_t e = static_cast<int64_t>(t.element_size());
  const bool ok = t.stride(3) == 1 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 &&
                  (t.stride(0) * e) % 16 == 0 && (t.stride(1) * e) % 16 == 0 && (t.stride(2) * e) % 16 == 0;
  return ok ? t : t.contiguous();
}
#endif

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_tc(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& grad_in,
    const at::Tensor& delta_in, const at::Tensor& docs, const at::Tensor& work, const at::Tensor& span,
    const at::Tensor& keys, double scale, double softcap) {
  TORCH_CHECK(q_in.is_cuda(), "detops.", kOp, ": runs on CUDA only (the CPU backward is REDUCTION_ORDER.md §10 "
              "rule 3), got query on ", q_in.device());
#ifndef DETOPS_WITH_CUDA
  TORCH_CHECK(false, "detops.", kOp, ": this detops build has no CUDA kernels");
  return {};
#else
  const at::ScalarType dt = q_in.scalar_type();
  TORCH_CHECK(dt == at::kBFloat16 || dt == at::kHalf, "detops.", kOp, ": query must be bfloat16 or float16, got ", dt);
  for (const at::Tensor* t : {&k_in, &v_in, &grad_in}) {
    check_same_device(q_in, *t, kOp, "query", "key / value / grad");
    TORCH_CHECK(t->scalar_type() == dt, "detops.", kOp, ": query, key, value and grad must have one dtype");
  }
  TORCH_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && v_in.dim() == 4 && grad_in.dim() == 4, "detops.", kOp,
              ": query, key, value and grad must be 4-D (B, H, L, D)");
  const int64_t B = q_in.size(0), Hq = q_in.size(1), Q = q_in.size(2), D = q_in.size(3), Hk = k_in.size(1);
  TORCH_CHECK(attention_backward_tc_supports(dt == at::kBFloat16 ? AttnDtype::BF16 : AttnDtype::F16, D, v_in.size(3)),
              "detops.", kOp, ": head dims must be D == Dv in {64, 128}, got D=", D, ", Dv=", v_in.size(3));
  TORCH_CHECK(grad_in.sizes().equals(q_in.sizes()), "detops.", kOp, ": grad must have query's shape");
  TORCH_CHECK(k_in.sizes().equals(v_in.sizes()) && k_in.size(0) == B && k_in.size(2) == Q && k_in.size(3) == D,
              "detops.", kOp, ": key and value must be (B, Hk, Q, D) = (", B, ", Hk, ", Q, ", ", D, "), got ",
              k_in.sizes(), " and ", v_in.sizes());
  TORCH_CHECK(Hk >= 1 && Hq % Hk == 0, "detops.", kOp, ": query heads must be a multiple of key heads");
  TORCH_CHECK(B * Q < (int64_t(1) << 31) && Q < (int64_t(1) << 31), "detops.", kOp, ": at most 2^31 - 1 tokens");
  check_same_device(q_in, delta_in, kOp, "query", "delta");
  TORCH_CHECK(delta_in.scalar_type() == at::kFloat && delta_in.is_contiguous() && delta_in.dim() == 3 &&
                  delta_in.size(0) == B && delta_in.size(1) == Hq && delta_in.size(2) == Q,
              "detops.", kOp, ": delta must be a contiguous float32 (B, Hq, Q) tensor");
  check_table(docs, q_in, "docs", 4);
  check_table(work, q_in, "work", 2);
  check_table(span, q_in, "span", 2);
  check_table(keys, q_in, "keys", 2);
  TORCH_CHECK(span.size(0) == work.size(0), "detops.", kOp, ": span needs one row per block of work");
  TORCH_CHECK(keys.size(0) == B * Q, "detops.", kOp, ": keys needs one row per token (B * Q = ", B * Q, ")");
  TORCH_CHECK(Hq <= 65535 && Hk <= 65535 && work.size(0) < (int64_t(1) << 31), "detops.", kOp,
              ": too many heads or blocks for one launch");

  const at::Tensor q = rows_aligned(q_in), k = rows_aligned(k_in), v = rows_aligned(v_in), g = rows_aligned(grad_in);
  at::Tensor dq = at::zeros({B, Hq, Q, D}, q.options()), dk = at::zeros({B, Hk, Q, D}, q.options()),
             dv = at::zeros({B, Hk, Q, D}, q.options());
  at::Tensor lse = at::zeros({B, Hq, Q}, q.options().dtype(at::kFloat));
  if (work.size(0) == 0 || Hq == 0) return {dq, dk, dv};

  AttnBackwardParams p;
  p.B = B; p.Hq = Hq; p.Hk = Hk; p.Q = Q; p.D = D;
  p.q = q.data_ptr(); p.q_bs = q.stride(0); p.q_hs = q.stride(1); p.q_ss = q.stride(2);
  p.k = k.data_ptr(); p.k_bs = k.stride(0); p.k_hs = k.stride(1); p.k_ss = k.stride(2);
  p.v = v.data_ptr(); p.v_bs = v.stride(0); p.v_hs = v.stride(1); p.v_ss = v.stride(2);
  p.grad = g.data_ptr(); p.g_bs = g.stride(0); p.g_hs = g.stride(1); p.g_ss = g.stride(2);
  p.delta = delta_in.data_ptr<float>();
  p.docs = docs.data_ptr<int32_t>();
  p.work = work.data_ptr<int32_t>();
  p.span = span.data_ptr<int32_t>();
  p.keys = keys.data_ptr<int32_t>();
  p.n_blocks = work.size(0);
  p.scale = static_cast<float>(scale);
  p.softcap = static_cast<float>(softcap);
  p.lse = lse.data_ptr<float>();
  p.dq = dq.data_ptr(); p.dk = dk.data_ptr(); p.dv = dv.data_ptr();
  p.dtype = dt == at::kBFloat16 ? AttnDtype::BF16 : AttnDtype::F16;
  const c10::DeviceIndex dev = q.get_device();
  c10::cuda::CUDAGuard guard(dev);
  p.stream = c10::cuda::getCurrentCUDAStream(dev).stream();
  const int err = attention_backward_tc_launch(p);
  TORCH_CHECK(err == 0, "detops.", kOp, ": CUDA launch failed: ", cudaGetErrorString(static_cast<cudaError_t>(err)));
  return {dq, dk, dv};
#endif
}

TORCH_LIBRARY_IMPL(detops, CPU, m) { m.impl("attention_backward_tc", &attention_backward_tc); }
#ifdef DETOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(detops, CUDA, m) { m.impl("attention_backward_tc", &attention_backward_tc); }
#endif

}  // namespace detops
