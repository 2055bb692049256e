// detops::attention: validation with reasons, layout, and dispatch to the CPU / CUDA backend.
// Order: docs/REDUCTION_ORDER.md §6. The rows descriptor is built by detops/ops/attention.py.
#include <cmath>
#include "../../common/constants.h"
#include "attention_backends.h"

namespace detops {

at::Tensor attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                     const at::Tensor& rows_in, double scale, double softcap,
                     const std::optional<at::Tensor>& documents) {
  const char* op = "attention";
  check_float_dtype(q_in, op, "query");
  check_device(q_in, op, "query");
  check_same_device(q_in, k_in, op, "query", "key");
  check_same_device(q_in, v_in, op, "query", "value");
  check_same_device(q_in, rows_in, op, "query", "rows");
  TORCH_CHECK(k_in.scalar_type() == q_in.scalar_type() && v_in.scalar_type() == q_in.scalar_type(),
              "detops.attention: query, key and value must have one dtype, got ", q_in.scalar_type(), ", ",
              k_in.scalar_type(), ", ", v_in.scalar_type());
  TORCH_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && v_in.dim() == 4,
              "detops.attention: query, key and value must be 4-D (B, H, L, D), got shapes ", q_in.sizes(), ", ",
              k_in.sizes(), ", ", v_in.sizes());
  const int64_t B = q_in.size(0), Hq = q_in.size(1), Q = q_in.size(2), D = q_in.size(3);
  const int64_t Hk = k_in.size(1), K = k_in.size(2), Dv = v_in.size(3);
  TORCH_CHECK(k_in.size(0) == B && v_in.size(0) == B, "detops.attention: batch sizes differ: query ", B,
              ", key ", k_in.size(0), ", value ", v_in.size(0));
  TORCH_CHECK(v_in.size(1) == Hk && v_in.size(2) == K, "detops.attention: key ", k_in.sizes(), " and value ",
              v_in.sizes(), " must agree in heads and length");
  TORCH_CHECK(k_in.size(3) == D, "detops.attention: query head dim ", D, " != key head dim ", k_in.size(3));
  TORCH_CHECK(D >= 1 && Dv >= 1, "detops.attention: head dims must be >= 1, got D=", D, ", Dv=", Dv);
  const int64_t token_shape[2] = {B, Q};
  check_documents(documents, token_shape, q_in, op);
  TORCH_CHECK(Hk >= 1 && Hq % Hk == 0, "detops.attention: query heads (", Hq,
              ") must be a multiple of key/value heads (", Hk, ")");
  TORCH_CHECK(rows_in.scalar_type() == at::kInt, "detops.attention: rows must be int32, got ",
              rows_in.scalar_type());
  TORCH_CHECK(rows_in.dim() == 3 && rows_in.size(0) == B && rows_in.size(1) == Q && rows_in.size(2) == 3,
              "detops.attention: rows must have shape (B, Q, 3) = (", B, ", ", Q, ", 3), got ", rows_in.sizes());
  TORCH_CHECK(K <= kAttnMaxKeys, "detops.attention: at most ", kAttnMaxKeys,
              " keys (the rows descriptor holds key indices in int32), got ", K);
  TORCH_CHECK(std::isfinite(scale), "detops.attention: scale must be finite, got ", scale);
  TORCH_CHECK(std::isfinite(softcap), "detops.attention: softcap must be finite, got ", softcap);

  // Any strides with a contiguous head dim (e.g. HF's (B, L, H, D).transpose(1, 2)); otherwise a copy that only
  // moves memory.
  auto last_contig = [](const at::Tensor& t) { return t.stride(3) == 1 || t.size(3) == 1 ? t : t.contiguous(); };
  at::Tensor q = last_contig(q_in), k = last_contig(k_in), v = last_contig(v_in);
  at::Tensor rows = rows_in.contiguous();
  at::Tensor out = at::empty({B, Hq, Q, Dv}, q.options());
  if (out.numel() == 0) return out;
  if (K == 0) return out.zero_();  // no key anywhere: every row outputs zeros (§6 step 5)

  AttentionParams p;
  p.B = B; p.Hq = Hq; p.Hk = Hk; p.Q = Q; p.K = K; p.D = D; p.Dv = Dv;
  p.q = q.data_ptr(); p.q_bs = q.stride(0); p.q_hs = q.stride(1); p.q_ss = q.stride(2);
  p.k = k.data_ptr(); p.k_bs = k.stride(0); p.k_hs = k.stride(1); p.k_ss = k.stride(2);
  p.v = v.data_ptr(); p.v_bs = v.stride(0); p.v_hs = v.stride(1); p.v_ss = v.stride(2);
  p.rows = rows.data_ptr<int32_t>();
  p.out = out.data_ptr();
  p.scale = static_cast<float>(scale);
  p.softcap = static_cast<float>(softcap);
#ifdef DETOPS_WITH_CUDA
  if (q.is_cuda()) attention_cuda(p, q.scalar_type());
  else
#endif
    attention_cpu(p, q.scalar_type());
  return out;
}

TORCH_LIBRARY_IMPL(detops, CPU, m) { m.impl("attention", &attention); }
#ifdef DETOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(detops, CUDA, m) { m.impl("attention", &attention); }
#endif

}  // namespace detops
