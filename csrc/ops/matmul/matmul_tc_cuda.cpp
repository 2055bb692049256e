// Torch glue of the bf16/fp16 tensor-core matmul (REDUCTION_ORDER.md §5): layouts, alignment, dtype,
// stream, and the row-count -> tile choice. The kernels are in matmul_tc_kernels*.cu (no torch). Inputs arrive
// validated by matmul.cpp (mm / bmm / linear / addmm, and the test-only _matmul_tc with a forced variant).
//
// Per call, the common layouts (nn.Linear's weight, contiguous activations) make no view, no copy and one
// allocation (the output, in matmul.cpp); the kernel parameters come from a small cache (matmul_tc_kernels.cuh).
// Everything here only moves memory (copies into aligned, K-major, zero-padded buffers), picks an operand layout
// the kernels read as it is, or picks among variants; the per-element chain is identical in all of them
// (tests/test_matmul_cuda.py proves it), so a row's bits never depend on M, the batch, the other rows, strides
// or storage offsets.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <atomic>
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

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % kTcAlignBytes == 0; }
int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// One GEMM operand seen as (L, R, K): element (l, r, k) at ptr + l*bs + r*rs + k*ks. `base` is the tensor
// whose data_ptr() is ptr (the strides are relative to it), or a copy made here.
struct Operand {
  const void* ptr;
  int64_t L, R, K, bs, rs, ks;
  at::Tensor base;
};

bool batch_ok(const Operand& x) { return x.L == 1 || (x.bs % kTcKAlign == 0 && x.bs > 0); }

// K-major as it is: unit stride along K, aligned row and batch strides (what k_major below leaves alone).
bool k_major_as_is(const Operand& x, int64_t kp, int64_t rp) {
  const bool rows_ok = x.R == 1 || (x.rs % kTcKAlign == 0 && x.rs >= x.K);
  return kp == x.K && rp == x.R && x.ks == 1 && rows_ok && batch_ok(x) && aligned16(x.ptr);
}

// MN-major as it is (a transposed view: unit stride along the rows, aligned stride along K), which the un-swapped
// tiles read without a copy (matmul_tc.h TcGemmArgs::p_mn / q_mn).
bool mn_major_as_is(const Operand& x, int64_t kp, int64_t rp) {
  return kp == x.K && rp == x.R && x.K > 0 && x.R > 1 && x.rs == 1 && x.R % kTcKAlign == 0 &&
         x.ks % kTcKAlign == 0 && x.ks >= x.R && batch_ok(x) && aligned16(x.ptr);
}

// Makes x readable by TMA: unit stride along K, K zero-padded to kp (and rows zero-padded to rp >= R), row
// and batch strides multiples of kTcKAlign elements, base 16-byte aligned, and a positive batch stride.
// Zero padding of K adds products that are exactly zero inside the last K tile, which TMA would zero-fill
// anyway: the number of k-groups (ceil(K / kTcKBlock) * 4) is unchanged because kTcKBlock % kTcKAlign == 0.
// Padded rows only produce output elements that are cut off again. Only copies when it must (the common
// layouts, nn.Linear's weight and contiguous activations, pass through untouched).
Operand k_major(Operand x, int64_t kp, int64_t rp) {
  if (k_major_as_is(x, kp, rp)) return x;
  const bool pad = kp != x.K || rp != x.R;
  const at::TensorOptions options = x.base.options();
  at::Tensor buf = pad ? at::zeros({x.L, rp, kp}, options) : at::empty({x.L, rp, kp}, options);
  buf.narrow(1, 0, x.R).narrow(2, 0, x.K).copy_(x.base.as_strided({x.L, x.R, x.K}, {x.bs, x.rs, x.ks}));
  return Operand{buf.data_ptr(), x.L, rp, kp, rp * kp, kp, 1, buf};
}

int64_t row_stride(const Operand& x) { return x.R == 1 ? round_up(x.K, kTcKAlign) : x.rs; }
int64_t batch_stride(const Operand& x) { return x.L == 1 ? 0 : x.bs; }

// Multiprocessor count per device, for the persistent grid size only (never the tile or the order).
int sm_count(int device) {
  static std::atomic<int> counts[64] = {};
  if (device < 0 || device >= 64) return at::cuda::getDeviceProperties(device)->multiProcessorCount;
  int n = counts[device].load(std::memory_order_relaxed);
  if (n == 0) {
    n = at::cuda::getDeviceProperties(device)->multiProcessorCount;
    counts[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

// p: validated geometry, A / B at a.data_ptr() / b.data_ptr(); c: (batch, M, N) contiguous, p.c its data.
void matmul_tc_run(const MatmulParams& p, const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias,
                   const at::Tensor& c, int64_t forced_variant) {
  const int64_t batch = p.batch, M = p.M, K = p.K, N = p.N;
  TORCH_CHECK(K <= INT32_MAX && N <= INT32_MAX && batch * M <= INT32_MAX, "detops.", kOp,
              ": dimensions beyond 2^31 are not supported, got M=", num(batch * M), " N=", num(N), " K=", num(K));
  const at::ScalarType dtype = a.scalar_type();
  const c10::DeviceIndex device = a.device().index();
  c10::cuda::CUDAGuard guard(device);

  // One GEMM over all rows when the weight is shared (batch 1 or batch stride 0): rows are independent, so
  // folding the batch into the rows changes no element's chain. Otherwise a batched GEMM (L = batch).
  const bool fold = batch == 1 || p.b_bs == 0;
  Operand act{p.a, batch, M, K, p.a_bs, p.a_rs, p.a_cs, a};
  if (fold && batch > 1) {
    if (M == 1) {
      act = Operand{p.a, 1, batch, K, 0, p.a_bs, p.a_cs, a};
    } else if (p.a_bs == M * p.a_rs) {
      act = Operand{p.a, 1, batch * M, K, 0, p.a_rs, p.a_cs, a};
    } else {  // the batch does not fold into the rows as a view: copy
      at::Tensor rows = a.as_strided({batch, M, K}, {p.a_bs, p.a_rs, p.a_cs}).reshape({1, batch * M, K});
      act = Operand{rows.data_ptr(), 1, batch * M, K, rows.stride(0), rows.stride(1), rows.stride(2), rows};
    }
  }
  // Weights as (L, N, K): nn.Linear's weight is K-major already.
  Operand wt{p.b, fold ? 1 : batch, N, K, p.b_bs, p.b_cs, p.b_rs, b};
  const int64_t L = act.L, rows = act.R;
  const int64_t kp = round_up(K, kTcKAlign), np = round_up(N, kTcKAlign);
  const TcVariant variant = forced_variant >= 0 ? static_cast<TcVariant>(forced_variant) : tc_variant_for(rows, N);
  const bool swapped = variant == TcVariant::kSwap64x16 || variant == TcVariant::kSwap64x64 ||
                       variant == TcVariant::kSwap64x128;
  // Layouts only, never the chain (docs/ops/matmul.md "Operand layouts"). The un-swapped tiles read MN-major
  // weights as they are (dX = dY·W of linear's backward, mm(a, b) with a row-major b), and then MN-major
  // activations too (dW = dYᵀ·X); everything else is copied K-major. The feature dimension N is the contiguous
  // dimension of the output, so TMA needs it padded to a multiple of 8 too (odd vocabularies): the weights are
  // then copied with zero rows (slow path, counted in the notes).
  const bool wt_mn = !swapped && !k_major_as_is(wt, kp, np) && mn_major_as_is(wt, kp, np);
  const bool act_mn = wt_mn && !k_major_as_is(act, kp, rows) && mn_major_as_is(act, kp, rows);
  if (!act_mn) act = k_major(act, kp, rows);
  if (!wt_mn) wt = k_major(wt, kp, np);

  // Output (L, rows, np) row-major; np > N only when N is not a multiple of 8 (TMA alignment).
  at::Tensor padded_out;
  if (np != N) padded_out = at::empty({L, rows, np}, c.options());
  const void* bias_ptr = nullptr;
  at::Tensor bias_buf;
  if (bias.defined()) {
    bias_ptr = bias.data_ptr();
    if (np != N || bias.stride(0) != 1 || !aligned16(bias_ptr)) {
      bias_buf = at::zeros({np}, c.options());
      bias_buf.narrow(0, 0, N).copy_(bias);
      bias_ptr = bias_buf.data_ptr();
    }
  }

  TcGemmArgs args;
  args.dtype = dtype == at::kBFloat16 ? TcDtype::kBFloat16 : TcDtype::kFloat16;
  args.k = kp;
  args.batch = L;
  args.d = np == N ? c.data_ptr() : padded_out.data_ptr();
  args.ld_d = np;
  args.batch_stride_d = L == 1 ? 0 : rows * np;
  args.bias = bias_ptr;
  args.device_sm_count = sm_count(device);
  const Operand& pp = swapped ? wt : act;  // swapped: D^T (N x rows, column-major) = W · X^T
  const Operand& qq = swapped ? act : wt;
  args.rows_i = pp.R;
  args.cols_j = qq.R;
  args.p = pp.ptr;
  args.p_mn = act_mn;  // swapped: never MN-major
  args.ld_p = act_mn ? pp.ks : row_stride(pp);
  args.batch_stride_p = batch_stride(pp);
  args.q = qq.ptr;
  args.q_mn = wt_mn;
  args.ld_q = wt_mn ? qq.ks : row_stride(qq);
  args.batch_stride_q = batch_stride(qq);

  const size_t ws_bytes = tc_gemm_workspace_bytes(variant, args);
  at::Tensor ws;  // the persistent / plain schedulers need none; allocate only if CUTLASS asks
  if (ws_bytes) ws = at::empty({static_cast<int64_t>(ws_bytes)}, c.options().dtype(at::kByte));
  const char* why = "";
  const cudaError_t err = tc_gemm_launch(variant, args, ws_bytes ? ws.data_ptr() : nullptr,
                                         at::cuda::getCurrentCUDAStream(device), &why);
  TORCH_CHECK(err == cudaSuccess, "detops.", kOp, ": ", why, " (", cudaGetErrorString(err), ") for M=", num(rows),
              " N=", num(N), " K=", num(K), " batch=", num(L));
  if (np != N) c.view({L, rows, N}).copy_(padded_out.narrow(2, 0, N));
}

}  // namespace

void matmul_cuda_tc(const MatmulParams& p, const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias,
                    const at::Tensor& c, int64_t forced_variant) {
  TORCH_CHECK(forced_variant >= -1 && forced_variant < kTcVariantCount, "detops.", kOp, ": no variant ",
              num(forced_variant));
  matmul_tc_run(p, a, b, bias, c, forced_variant);
}

}  // namespace detops
