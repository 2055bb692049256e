// Runs csrc/ops/matmul/matmul_fp32_kernels.cu on the CPU, one std::thread per CUDA thread with a std::barrier for
// __syncthreads, and checks every output bitwise against a scalar REDUCTION_ORDER.md §5 reference: the index
// math, staging maps, grid-stride loops and bias of the CUDA fp32 kernel are checked on a box without a GPU.
// Build and run with run.sh (it rewrites the <<<>>> launch into EMU_LAUNCH). A cheap gate before the GPU test
// tests/test_matmul.py::test_fp32_cuda_equals_cpu, not a substitute for it.
#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 gridDim;
inline std::barrier<>* g_block_barrier;
#define __global__
#define __launch_bounds__(x)
#define __shared__ static  // one block runs at a time, so a static is the block's shared memory
#define __syncthreads() g_block_barrier->arrive_and_wait()
#define __host__
#define __device__
#define __forceinline__ inline
// volatile: a rounded fp32 result per operation, as __fadd_rn / __fmul_rn on the device.
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
// Blocks one after another; the threads of a block concurrently.
#define EMU_LAUNCH(grid, nthreads, ...)                                                          \
  do {                                                                                           \
    gridDim = grid;                                                                              \
    for (unsigned bz = 0; bz < grid.z; ++bz)                                                     \
      for (unsigned by = 0; by < grid.y; ++by)                                                   \
        for (unsigned bx = 0; bx < grid.x; ++bx) {                                               \
          std::barrier<> bar(nthreads);                                                          \
          g_block_barrier = &bar;                                                                \
          std::vector<std::thread> ts;                                                           \
          for (int t = 0; t < nthreads; ++t)                                                     \
            ts.emplace_back([&, t] {                                                             \
              threadIdx = dim3(t);                                                               \
              blockIdx = dim3(bx, by, bz);                                                       \
              matmul_fp32_kernel(__VA_ARGS__);                                                   \
            });                                                                                  \
          for (auto& th : ts) th.join();                                                         \
        }                                                                                        \
  } while (0)

#include KERNEL_EMU_SOURCE

using namespace detops;

// Scalar §5: acc = 0; per K block of 32: t = 0; t = t + a_k*b_k ascending; acc = acc + t; then + bias.
static float reference(const MatmulParams& p, int64_t bi, int64_t m, int64_t n) {
  const float* A = static_cast<const float*>(p.a) + bi * p.a_bs;
  const float* B = static_cast<const float*>(p.b) + bi * p.b_bs;
  float acc = 0.f;
  for (int64_t k0 = 0; k0 < p.K; k0 += 32) {
    float t = 0.f;
    for (int64_t k = k0; k < p.K && k < k0 + 32; ++k) {
      volatile float prod = A[m * p.a_rs + k * p.a_cs] * B[k * p.b_rs + n * p.b_cs];
      t = t + prod;
    }
    acc = acc + t;
  }
  if (p.bias) acc = acc + static_cast<const float*>(p.bias)[n];
  return acc;
}

int main() {
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  int bad = 0, cases = 0;
  for (int64_t M : {1, 3, 64, 65, 130})
    for (int64_t K : {1, 31, 32, 33, 70})
      for (int64_t N : {1, 63, 64, 65})
        for (int layout = 0; layout < 3; ++layout)
          for (int64_t batch : {1, 2}) {
            if (batch == 2 && (M > 65 || layout == 1)) continue;
            std::vector<float> A(batch * M * K * 2 + 7), B(batch * K * N + 5), bias(N), C(batch * M * N, -7.f);
            for (auto& x : A) x = normal(gen);
            for (auto& x : B) x = normal(gen);
            for (auto& x : bias) x = normal(gen);
            MatmulParams p;
            p.batch = batch; p.M = M; p.N = N; p.K = K;
            p.a = A.data() + 3;  // odd offsets
            p.b = B.data() + 1;
            p.c = C.data();
            p.bias = bias.data();
            if (layout == 0) {  // row-major A and B
              p.a_bs = M * K; p.a_rs = K; p.a_cs = 1; p.b_bs = K * N; p.b_rs = N; p.b_cs = 1;
            } else if (layout == 1) {  // column-major A, B = nn.Linear's weight.t(), no bias
              p.a_bs = M * K; p.a_rs = 1; p.a_cs = M; p.b_bs = K * N; p.b_rs = 1; p.b_cs = K;
              p.bias = nullptr;
            } else {  // every other column of A, B broadcast over the batch
              p.a_bs = M * K * 2; p.a_rs = 2 * K; p.a_cs = 2; p.b_bs = 0; p.b_rs = N; p.b_cs = 1;
            }
            launch_matmul_fp32(p, nullptr);
            ++cases;
            for (int64_t bi = 0; bi < batch; ++bi)
              for (int64_t m = 0; m < M; ++m)
                for (int64_t n = 0; n < N; ++n) {
                  const float r = reference(p, bi, m, n), c = C[(bi * M + m) * N + n];
                  if (std::memcmp(&r, &c, 4) != 0 && bad++ < 5)
                    std::printf("MISMATCH M=%ld K=%ld N=%ld layout=%d batch %ld row %ld col %ld: %a vs %a\n",
                                long(M), long(K), long(N), layout, long(bi), long(m), long(n), r, c);
                }
          }
  std::printf("fp32 CUDA kernel emulation (grid limit %d): %d cases, %d mismatching elements\n", EMU_MAX_GRID, cases,
              bad);
  return bad != 0;
}
