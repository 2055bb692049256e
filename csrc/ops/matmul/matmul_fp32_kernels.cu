// matmul in the §5 fp32 order on CUDA cores: REDUCTION_ORDER.md §5, bit for bit the order of matmul_cpu.cpp.
//
// Order of every output element (the tile shape below never enters it):
//   acc = 0; for each K block kb of kMatmulKBlock (from k = 0): { t = 0; for k in kb ascending: t = t + a_k*b_k;
//   acc = acc + t }; y = acc + bias[n] (if any); C = round_to_dtype(y).
// acc is a Lane of csrc/reduce/reduce.h: SumLane (acc = acc + t) or, for the compensated order, NeumaierLane
// (the same definition the CPU calls; acc = s + c at the end). fp32, or bf16/fp16 widened exactly on load
// (the products of two bf16/fp16 values are exact in fp32).
// Classic shared-memory tiled SGEMM: a block of kThreads threads owns a kTileM x kTileN tile of C; per K block
// it stages the A and B slices in shared memory (loaded through the caller's strides), each thread keeps
// kMicro x kMicro partials t and accumulators acc in registers. Every multiply and add is an explicit
// __fmul_rn / __fadd_rn (never contracted into an FMA, whatever the flags).
#include "../../common/constants.h"
#include "../../common/numeric.h"
#include "../../reduce/reduce.h"
#include "matmul_fp32.h"

namespace detops {
namespace {

constexpr int kTileM = kMatmulCudaTileRows;       // constants.h (fixed: never chosen from M)
constexpr int kTileN = kMatmulCudaTileCols;
constexpr int kMicro = kMatmulCudaMicro;          // each thread: kMicro x kMicro outputs
constexpr int kThreadsN = kTileN / kMicro;        // 16
constexpr int kThreads = (kTileM / kMicro) * kThreadsN;  // 256
constexpr int kKB = kMatmulKBlock;
constexpr int64_t kMaxGridYZ = 65535;

// a_m_fast / b_k_fast: which index the consecutive threads of the staging loops walk, chosen from the strides so
// that global loads are coalesced (row-major A: k; column-major A: m; row-major B: n; nn.Linear's weight.t(): k).
// It only decides who loads what; every element's arithmetic is unchanged.
// T: operand and output storage type (float, bf16_t, fp16_t); Lane: SumLane or NeumaierLane (§5 compensated).
template <typename T, typename Lane>
__global__ void __launch_bounds__(kThreads) matmul_fp32_kernel(const MatmulParams p, bool a_m_fast, bool b_k_fast) {
  __shared__ float a_s[kKB][kTileM + 1];  // a_s[k][m]; +1: conflict-free stores along k and along m
  __shared__ float b_s[kKB][kTileN + 1];  // b_s[k][n]; +1: same
  const T* A = static_cast<const T*>(p.a);
  const T* B = static_cast<const T*>(p.b);
  const T* bias = static_cast<const T*>(p.bias);
  T* C = static_cast<T*>(p.c);
  const int tid = threadIdx.x;
  // Thread (ty, tx) owns rows ty + 16*i and columns tx + 16*j of the tile.
  const int tx = tid % kThreadsN, ty = tid / kThreadsN;
  const int64_t n0 = int64_t(blockIdx.x) * kTileN;

  // Grid-stride over batch (z) and row tiles (y) so that any batch / M fits the grid limits; the loop
  // bounds are uniform across the block, so the __syncthreads below are reached by every thread.
  for (int64_t bi = blockIdx.z; bi < p.batch; bi += gridDim.z) {
    for (int64_t m0 = int64_t(blockIdx.y) * kTileM; m0 < p.M; m0 += int64_t(gridDim.y) * kTileM) {
      const T* Ab = A + bi * p.a_bs;
      const T* Bb = B + bi * p.b_bs;
      Lane acc[kMicro][kMicro];  // acc = 0 (NeumaierLane: (s, c) = (0, 0))

      for (int64_t k0 = 0; k0 < p.K; k0 += kKB) {
        const int kn = int(p.K - k0 < kKB ? p.K - k0 : kKB);
        // Stage A[m0:m0+64, k0:k0+kn] and B[k0:k0+kn, n0:n0+64]; each (k, m) / (k, n) pair is loaded exactly
        // once. Out-of-range entries are 0 and never reach a kept result.
        for (int i = tid; i < kTileM * kKB; i += kThreads) {
          const int k = a_m_fast ? i / kTileM : i % kKB, m = a_m_fast ? i % kTileM : i / kKB;
          float v = 0.f;
          if (m0 + m < p.M && k < kn) v = to_float(Ab[(m0 + m) * p.a_rs + (k0 + k) * p.a_cs]);
          a_s[k][m] = v;
        }
        for (int i = tid; i < kKB * kTileN; i += kThreads) {
          const int n = b_k_fast ? i / kKB : i % kTileN, k = b_k_fast ? i % kKB : i / kTileN;
          float v = 0.f;
          if (n0 + n < p.N && k < kn) v = to_float(Bb[(k0 + k) * p.b_rs + (n0 + n) * p.b_cs]);
          b_s[k][n] = v;
        }
        __syncthreads();
        float t[kMicro][kMicro];
#pragma unroll
        for (int i = 0; i < kMicro; ++i)
#pragma unroll
          for (int j = 0; j < kMicro; ++j) t[i][j] = 0.f;
        for (int k = 0; k < kn; ++k) {  // t = t + a_k * b_k, ascending k
          float a[kMicro], b[kMicro];
#pragma unroll
          for (int i = 0; i < kMicro; ++i) a[i] = a_s[k][ty + i * (kTileM / kMicro)];
#pragma unroll
          for (int j = 0; j < kMicro; ++j) b[j] = b_s[k][tx + j * kThreadsN];
#pragma unroll
          for (int i = 0; i < kMicro; ++i)
#pragma unroll
            for (int j = 0; j < kMicro; ++j) t[i][j] = __fadd_rn(t[i][j], __fmul_rn(a[i], b[j]));
        }
#pragma unroll
        for (int i = 0; i < kMicro; ++i)
#pragma unroll
          for (int j = 0; j < kMicro; ++j) acc[i][j].add(t[i][j]);  // acc = acc + t (Neumaier: compensated)
        __syncthreads();  // before the next K block overwrites a_s / b_s
      }

#pragma unroll
      for (int i = 0; i < kMicro; ++i) {
        const int64_t m = m0 + ty + i * (kTileM / kMicro);
#pragma unroll
        for (int j = 0; j < kMicro; ++j) {
          const int64_t n = n0 + tx + j * kThreadsN;
          if (m < p.M && n < p.N) {
            float y = acc[i][j].value();  // SumLane: s; NeumaierLane: s + c
            if (bias) y = __fadd_rn(y, to_float(bias[n]));  // one rounded add after the K loop
            C[(bi * p.M + m) * p.N + n] = from_float<T>(y);
          }
        }
      }
    }
  }
}

template <typename T, typename Lane>
void launch(const MatmulParams& p, dim3 grid, bool a_m_fast, bool b_k_fast, cudaStream_t stream) {
  matmul_fp32_kernel<T, Lane><<<grid, kThreads, 0, stream>>>(p, a_m_fast, b_k_fast);
}

}  // namespace

cudaError_t launch_matmul_fp32(const MatmulParams& p, MatmulFp32Input input, cudaStream_t stream) {
  if (p.batch == 0 || p.M == 0 || p.N == 0) return cudaSuccess;
  const int64_t m_tiles = (p.M + kTileM - 1) / kTileM;
  const int64_t n_tiles = (p.N + kTileN - 1) / kTileN;
  // The grid only decides which block computes which tile; every element's order is the same.
  const dim3 grid(unsigned(n_tiles), unsigned(m_tiles < kMaxGridYZ ? m_tiles : kMaxGridYZ),
                  unsigned(p.batch < kMaxGridYZ ? p.batch : kMaxGridYZ));
  const bool a_m_fast = p.a_rs == 1 && p.a_cs != 1;
  const bool b_k_fast = p.b_rs == 1 && p.b_cs != 1;
  // Plain bf16/fp16 run on the tensor cores (matmul.cpp); only their compensated order comes here.
  if (input != MatmulFp32Input::kFloat32 && !p.compensated) return cudaErrorInvalidValue;
  switch (input) {
    case MatmulFp32Input::kFloat32:
      if (p.compensated) launch<float, NeumaierLane>(p, grid, a_m_fast, b_k_fast, stream);
      else launch<float, SumLane>(p, grid, a_m_fast, b_k_fast, stream);
      break;
    case MatmulFp32Input::kBFloat16: launch<bf16_t, NeumaierLane>(p, grid, a_m_fast, b_k_fast, stream); break;
    case MatmulFp32Input::kFloat16: launch<fp16_t, NeumaierLane>(p, grid, a_m_fast, b_k_fast, stream); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace detops
