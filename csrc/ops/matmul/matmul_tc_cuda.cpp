// Torch glue of the bf16/fp16 tensor-core matmul (REDUCTION_ORDER.md §5): layouts, alignment, dtype,
// stream, and the row-count -> tile choice. The kernels are in matmul_tc_kernels*.cu (no torch).
//
// Everything here only moves memory (copies into aligned, K-major, zero-padded buffers) or picks among
// variants whose per-element chain is identical (tests/test_matmul_cuda.py proves it), so a row's bits never
// depend on M, the batch, the other rows, strides or storage offsets.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <string>

#include "matmul_backends.h"
#include "matmul_tc.h"

namespace detops {
namespace {

constexpr const char* kOp = "matmul (tensor cores)";

// Error messages format numbers with std::to_string, not through an ostream: on the GPU box (torch 2.11,
// /opt/gcc) streaming an integer or `t.sizes()` into TORCH_CHECK segfaulted while strings were fine.
std::string num(int64_t v) { return std::to_string(v); }
std::string shape(const at::Tensor& t) {
  std::string out = "(";
  for (int64_t d = 0; d < t.dim(); ++d) out += (d ? ", " : "") + num(t.size(d));
  return out + ")";
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % kTcAlignBytes == 0; }
int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// x: (L, R, K). Returns a view or copy with unit stride along K, K zero-padded to kp (and rows zero-padded
// to rp >= R), row and batch strides multiples of kTcKAlign elements, base 16-byte aligned, and a positive
// batch stride. Zero padding of K adds products that are exactly zero inside the last K tile, which TMA
// would zero-fill anyway: the number of k-groups (ceil(K / kTcKBlock) * 4) is unchanged because
// kTcKBlock % kTcKAlign == 0. Padded rows only produce output elements that are cut off again.
at::Tensor k_major(const at::Tensor& x, int64_t kp, int64_t rp) {
  const int64_t L = x.size(0), R = x.size(1), K = x.size(2);
  const bool rows_ok = R == 1 || (x.stride(1) % kTcKAlign == 0 && x.stride(1) >= K);
  const bool batch_ok = L == 1 || (x.stride(0) % kTcKAlign == 0 && x.stride(0) > 0);
  if (kp == K && rp == R && x.stride(2) == 1 && rows_ok && batch_ok && aligned16(x.data_ptr())) return x;
  const bool pad = kp != K || rp != R;
  at::Tensor buf = pad ? at::zeros({L, rp, kp}, x.options()) : at::empty({L, rp, kp}, x.options());
  buf.narrow(1, 0, R).narrow(2, 0, K).copy_(x);
  return buf;
}

int64_t row_stride(const at::Tensor& t) { return t.size(1) == 1 ? round_up(t.size(2), kTcKAlign) : t.stride(1); }
int64_t batch_stride(const at::Tensor& t) { return t.size(0) == 1 ? 0 : t.stride(0); }

int sm_count() {
  return at::cuda::getCurrentDeviceProperties()->multiProcessorCount;  // persistent grid size only
}

at::Tensor matmul_tc_impl(const at::Tensor& a3, const at::Tensor& b3, const std::optional<at::Tensor>& bias,
                          int64_t forced_variant) {
  TORCH_CHECK(a3.dim() == 3 && b3.dim() == 3, "detops.", kOp, ": expects (batch, M, K) and (batch, K, N), got ",
              shape(a3), " and ", shape(b3));
  TORCH_CHECK(a3.is_cuda() && b3.is_cuda(), "detops.", kOp, ": operands must be CUDA tensors");
  TORCH_CHECK(a3.device() == b3.device(), "detops.", kOp, ": operands on ", a3.device().str(), " and ",
              b3.device().str());
  const auto dtype = a3.scalar_type();
  TORCH_CHECK(dtype == at::kBFloat16 || dtype == at::kHalf, "detops.", kOp, ": dtype must be bfloat16 or float16, got ",
              dtype);
  TORCH_CHECK(b3.scalar_type() == dtype, "detops.", kOp, ": operand dtypes differ (", dtype, " vs ",
              b3.scalar_type(), ")");
  const int64_t batch = a3.size(0), M = a3.size(1), K = a3.size(2), N = b3.size(2);
  TORCH_CHECK(b3.size(0) == batch && b3.size(1) == K, "detops.", kOp, ": shapes ", shape(a3), " and ", shape(b3),
              " do not multiply");
  if (bias.has_value()) {
    const auto& bv = *bias;
    TORCH_CHECK(bv.dim() == 1 && bv.size(0) == N, "detops.", kOp, ": bias must have shape (", num(N), "), got ",
                shape(bv));
    TORCH_CHECK(bv.scalar_type() == dtype && bv.device() == a3.device(), "detops.", kOp,
                ": bias must be ", dtype, " on ", a3.device().str(), ", got ", bv.scalar_type(), " on ",
                bv.device().str());
  }
  TORCH_CHECK(forced_variant >= -1 && forced_variant < kTcVariantCount, "detops.", kOp, ": no variant ",
              num(forced_variant));

  c10::cuda::CUDAGuard guard(a3.device());
  at::Tensor out = at::empty({batch, M, N}, a3.options());
  if (out.numel() == 0) return out;
  if (K == 0) {  // empty sum: 0, then + bias (exact)
    out.zero_();
    if (bias.has_value()) out.add_(*bias);
    return out;
  }
  TORCH_CHECK(K <= INT32_MAX && N <= INT32_MAX && batch * M <= INT32_MAX, "detops.", kOp,
              ": dimensions beyond 2^31 are not supported, got M=", num(batch * M), " N=", num(N), " K=", num(K));

  // One GEMM over all rows when the weight is shared (batch 1 or batch stride 0): rows are independent, so
  // folding the batch into the rows changes no element's chain. Otherwise a batched GEMM (L = batch).
  const bool fold = batch == 1 || b3.stride(0) == 0;
  at::Tensor act = fold ? a3.reshape({1, batch * M, K}) : a3;
  at::Tensor wt = (fold ? b3.narrow(0, 0, 1) : b3).transpose(1, 2);  // (L, N, K): nn.Linear's weight is K-major
  if (!fold && (a3.stride(0) == 0)) act = a3.contiguous();
  const int64_t L = act.size(0), rows = act.size(1);
  const int64_t kp = round_up(K, kTcKAlign), np = round_up(N, kTcKAlign);
  // The feature dimension N is the contiguous dimension of the output, so TMA needs it padded to a multiple
  // of 8 too (odd vocabularies): the weights are then copied with zero rows (slow path, counted in the notes).
  act = k_major(act, kp, act.size(1));
  wt = k_major(wt, kp, np);

  const TcVariant variant = forced_variant >= 0 ? static_cast<TcVariant>(forced_variant) : tc_variant_for(rows, N);
  const bool swapped = variant == TcVariant::kSwap64x16 || variant == TcVariant::kSwap64x64 ||
                       variant == TcVariant::kSwap64x128;

  // Output (L, rows, np) row-major; np > N only when N is not a multiple of 8 (TMA alignment).
  at::Tensor dst = np == N ? out.view({L, rows, N}) : at::empty({L, rows, np}, a3.options());
  at::Tensor bias_buf;
  if (bias.has_value()) {
    bias_buf = *bias;
    if (np != N || bias_buf.stride(0) != 1 || !aligned16(bias_buf.data_ptr())) {
      bias_buf = at::zeros({np}, a3.options());
      bias_buf.narrow(0, 0, N).copy_(*bias);
    }
  }

  TcGemmArgs args;
  args.dtype = dtype == at::kBFloat16 ? TcDtype::kBFloat16 : TcDtype::kFloat16;
  args.k = kp;
  args.batch = L;
  args.d = dst.data_ptr();
  args.ld_d = np;
  args.batch_stride_d = L == 1 ? 0 : rows * np;
  args.bias = bias.has_value() ? bias_buf.data_ptr() : nullptr;
  args.device_sm_count = sm_count();
  const at::Tensor& p = swapped ? wt : act;  // swapped: D^T (N x rows, column-major) = W · X^T
  const at::Tensor& q = swapped ? act : wt;
  args.rows_i = p.size(1);
  args.cols_j = q.size(1);
  args.p = p.data_ptr();
  args.ld_p = row_stride(p);
  args.batch_stride_p = batch_stride(p);
  args.q = q.data_ptr();
  args.ld_q = row_stride(q);
  args.batch_stride_q = batch_stride(q);

  const size_t ws_bytes = tc_gemm_workspace_bytes(variant, args);
  at::Tensor ws;  // the persistent / plain schedulers need none; allocate only if CUTLASS asks
  if (ws_bytes) ws = at::empty({static_cast<int64_t>(ws_bytes)}, a3.options().dtype(at::kByte));
  const char* why = "";
  const cudaError_t err = tc_gemm_launch(variant, args, ws_bytes ? ws.data_ptr() : nullptr,
                                         at::cuda::getCurrentCUDAStream(), &why);
  TORCH_CHECK(err == cudaSuccess, "detops.", kOp, ": ", why, " (", cudaGetErrorString(err), ") for M=", num(rows),
              " N=", num(N), " K=", num(K), " batch=", num(L));
  if (np != N) out.view({L, rows, N}).copy_(dst.narrow(2, 0, N));
  return out;
}

// Test-only entry: the same computation with the variant forced (-1 = the normal row-count choice), so the
// tests can prove every variant's bits equal at every M (REDUCTION_ORDER.md §5).
at::Tensor matmul_tc_variant(const at::Tensor& a3, const at::Tensor& b3, const std::optional<at::Tensor>& bias,
                             int64_t variant) {
  return matmul_tc_impl(a3, b3, bias, variant);
}

}  // namespace

at::Tensor matmul_cuda_tc(const at::Tensor& a3, const at::Tensor& b3, const std::optional<at::Tensor>& bias) {
  return matmul_tc_impl(a3, b3, bias, -1);
}

}  // namespace detops

TORCH_LIBRARY_FRAGMENT(detops, m) {
  m.def("_matmul_tc(Tensor a3, Tensor b3, Tensor? bias, int variant) -> Tensor");
}

TORCH_LIBRARY_IMPL(detops, CUDA, m) { m.impl("_matmul_tc", &detops::matmul_tc_variant); }
