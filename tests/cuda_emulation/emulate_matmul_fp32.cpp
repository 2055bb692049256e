// Runs csrc/ops/matmul/matmul_fp32_kernels.cu on the CPU, one std::thread per CUDA thread with a std::barrier for
// __syncthreads, and checks every output bitwise against a scalar REDUCTION_ORDER.md §5 reference: the index
// math, staging maps, grid-stride loops and bias of the CUDA fp32 kernel are checked on a box without a GPU.
// Build and run with run.sh (it rewrites the <<<>>> launch into EMU_LAUNCH). Not a substitute for the GPU test
// (tests/test_matmul.py::test_fp32_cuda_equals_cpu), a cheap gate before it.
#include <barrier>
#include <thread>
#include <vector>
#include <cstdint>
struct dim3 { unsigned x = 1, y = 1, z = 1; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 gridDim;
inline std::barrier<>* g_bar;
#define __global__
#define __launch_bounds__(x)
#define __shared__ static
#define __syncthreads() g_bar->arrive_and_wait()
#define __host__
#define __device__
#define __forceinline__ inline
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
#define EMU_LAUNCH(grid, nthreads, ...) do { gridDim = grid; \
  for (unsigned bz = 0; bz < grid.z; ++bz) for (unsigned by = 0; by < grid.y; ++by) for (unsigned bx = 0; bx < grid.x; ++bx) { \
    std::barrier<> bar(nthreads); g_bar = &bar; std::vector<std::thread> ts; \
    for (int t = 0; t < nthreads; ++t) ts.emplace_back([&, t] { threadIdx = dim3(t); blockIdx = dim3(bx, by, bz); matmul_fp32_kernel(__VA_ARGS__); }); \
    for (auto& th : ts) th.join(); } } while (0)
#include KERNEL_EMU_SOURCE
#include <cstdio>
#include <random>
#include <cstring>
using namespace detops;
// Scalar §5 reference.
static float ref(const float* A, int64_t ars, int64_t acs, const float* B, int64_t brs, int64_t bcs, int64_t K, int64_t m, int64_t n, const float* bias) {
  float acc = 0.f;
  for (int64_t k0 = 0; k0 < K; k0 += 32) { float t = 0.f; for (int64_t k = k0; k < K && k < k0 + 32; ++k) { volatile float pr = A[m*ars + k*acs] * B[k*brs + n*bcs]; t = t + pr; } acc = acc + t; }
  if (bias) acc = acc + bias[n];
  return acc;
}
int main() {
  std::mt19937 g(1); std::normal_distribution<float> d;
  int bad = 0, cases = 0;
  for (int64_t M : {1, 3, 64, 65, 130}) for (int64_t K : {1, 31, 32, 33, 70}) for (int64_t N : {1, 63, 64, 65})
  for (int layout = 0; layout < 3; ++layout) for (int64_t batch : {1, 2}) {
    if (batch == 2 && (M > 65 || layout == 1)) continue;
    // layout 0: row-major A, row-major B. 1: column-major A, B = weight.t() (k contiguous). 2: strided A (a_cs 2), B batch-broadcast.
    std::vector<float> A(batch * M * K * 2 + 7), B(batch * K * N + 5), bias(N), C(batch * M * N, -7.f);
    for (auto& x : A) x = d(g); for (auto& x : B) x = d(g); for (auto& x : bias) x = d(g);
    MatmulParams p; p.batch = batch; p.M = M; p.N = N; p.K = K;
    const float* a = A.data() + 3; const float* b = B.data() + 1;
    if (layout == 0) { p.a_bs = M*K; p.a_rs = K; p.a_cs = 1; p.b_bs = K*N; p.b_rs = N; p.b_cs = 1; }
    if (layout == 1) { p.a_bs = M*K; p.a_rs = 1; p.a_cs = M; p.b_bs = K*N; p.b_rs = 1; p.b_cs = K; }
    if (layout == 2) { p.a_bs = M*K*2; p.a_rs = 2*K; p.a_cs = 2; p.b_bs = 0; p.b_rs = N; p.b_cs = 1; }
    p.a = a; p.b = b; p.c = C.data(); p.bias = (layout == 1) ? nullptr : bias.data();
    launch_matmul_fp32(p, nullptr);
    ++cases;
    for (int64_t bi = 0; bi < batch; ++bi) for (int64_t m = 0; m < M; ++m) for (int64_t n = 0; n < N; ++n) {
      float r = ref(a + bi*p.a_bs, p.a_rs, p.a_cs, b + bi*p.b_bs, p.b_rs, p.b_cs, K, m, n, (const float*)p.bias);
      float c = C[(bi*M + m)*N + n];
      if (std::memcmp(&r, &c, 4) != 0) { if (bad++ < 5) printf("MISMATCH M=%ld K=%ld N=%ld layout=%d b=%ld m=%ld n=%ld %g %g\n", M, K, N, layout, bi, m, n, r, c); }
    }
  }
  printf("cases %d mismatches %d\n", cases, bad);
  return bad != 0;
}
