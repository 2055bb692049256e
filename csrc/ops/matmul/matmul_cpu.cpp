// matmul on the CPU: REDUCTION_ORDER.md §5, for fp32, bf16 and fp16 (fp32 accumulation).
//
// Order of every output element, whatever the tiling below:
//   acc = 0; for each K block kb of kMatmulKBlock (from k = 0): { t = 0; for k in kb ascending: t = t + a_k*b_k;
//   acc = acc + t }; y = acc + bias[n] (if any); C = round_to_dtype(y).
// Compensated order (p.compensated): the same t per block, but `acc = acc + t` becomes NeumaierLane::add(t)
// (csrc/reduce/reduce.h, the definition the CUDA kernel calls too) and acc = s + c at the end.
//
// Speed comes from register blocking across independent output elements only: a task owns a (rows x
// kPanelCols) tile of C; it packs its panel of B kPanelDepth rows of K at a time (a slab of whole K blocks,
// ascending; the workspace is O(1) per thread whatever K is) and, per K block, the block's A rows as fp32
// (this is where strides and dtypes are handled); then a micro-kernel computes kMicroRows x kMicroCols partials
// t in vector registers (lanes = different columns) and adds them into the tile's acc. No element's chain
// depends on M, on the tile, on the slab or on the thread, so the tiles below are free performance choices.
#include <ATen/Parallel.h>
#include <algorithm>
#include <cstring>
#include <vector>
#include "../../common/constants.h"
#include "../../reduce/reduce.h"
#include "matmul_backends.h"

namespace detops {
namespace {

// CPU performance tiling (constants.h; does not change any element's order, see the header comment).
constexpr int64_t kVec = kMatmulCpuVector;
constexpr int64_t kMicroRows = kMatmulCpuMicroRows;
constexpr int64_t kMicroCols = kMatmulCpuMicroCols;
constexpr int64_t kPanelCols = kMatmulCpuPanelCols;
constexpr int64_t kPanelRows = kMatmulCpuPanelRows;
constexpr int64_t kKB = kMatmulKBlock;
constexpr int64_t kPanelDepth = kMatmulCpuPanelDepth;
static_assert(kPanelDepth % kKB == 0, "a B slab holds whole K blocks");

// GCC vector extension: element-wise IEEE ops, no reassociation, no FMA (-ffp-contract=off, also where setup.py
// adds -mfma for det_fma).
typedef float vfloat __attribute__((vector_size(kVec * sizeof(float))));

__attribute__((always_inline)) inline vfloat load(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
__attribute__((always_inline)) inline void store(float* p, vfloat v) { std::memcpy(p, &v, sizeof(v)); }
__attribute__((always_inline)) inline vfloat splat(float x) { return vfloat{x, x, x, x, x, x, x, x}; }

// One K block for a whole tile:
// apack: (rows_pad, kKB) fp32, rows_pad a multiple of kMicroRows; bpanel: (kn, kPanelCols) fp32;
// acc: (rows_pad, kPanelCols). For each element: t = 0; t = t + a_k*b_k, k = 0..kn-1; acc = acc + t
// (kStoreT: acc = t, the block sums handed to the compensated sum).
template <bool kStoreT>
__attribute__((always_inline)) inline void tile_kblock_body(const float* apack, const float* bpanel, int64_t rows_pad,
                                                            int64_t kn, float* acc) {
  for (int64_t j = 0; j < kPanelCols; j += kMicroCols) {
    for (int64_t r = 0; r < rows_pad; r += kMicroRows) {
      const float* a = apack + r * kKB;
      vfloat t00 = splat(0.f), t01 = splat(0.f), t10 = splat(0.f), t11 = splat(0.f);
      vfloat t20 = splat(0.f), t21 = splat(0.f), t30 = splat(0.f), t31 = splat(0.f);
      for (int64_t k = 0; k < kn; ++k) {
        const vfloat b0 = load(bpanel + k * kPanelCols + j);
        const vfloat b1 = load(bpanel + k * kPanelCols + j + kVec);
        const vfloat a0 = splat(a[k]), a1 = splat(a[kKB + k]), a2 = splat(a[2 * kKB + k]),
                     a3 = splat(a[3 * kKB + k]);
        t00 = t00 + a0 * b0; t01 = t01 + a0 * b1;
        t10 = t10 + a1 * b0; t11 = t11 + a1 * b1;
        t20 = t20 + a2 * b0; t21 = t21 + a2 * b1;
        t30 = t30 + a3 * b0; t31 = t31 + a3 * b1;
      }
      float* c = acc + r * kPanelCols + j;
      if (kStoreT) {
        store(c, t00); store(c + kVec, t01);
        c += kPanelCols;
        store(c, t10); store(c + kVec, t11);
        c += kPanelCols;
        store(c, t20); store(c + kVec, t21);
        c += kPanelCols;
        store(c, t30); store(c + kVec, t31);
        continue;
      }
      store(c, load(c) + t00); store(c + kVec, load(c + kVec) + t01);
      c += kPanelCols;
      store(c, load(c) + t10); store(c + kVec, load(c + kVec) + t11);
      c += kPanelCols;
      store(c, load(c) + t20); store(c + kVec, load(c + kVec) + t21);
      c += kPanelCols;
      store(c, load(c) + t30); store(c + kVec, load(c + kVec) + t31);
    }
  }
}

template <bool kStoreT>
__attribute__((target("avx2"))) void tile_kblock_avx2(const float* apack, const float* bpanel, int64_t rows_pad,
                                                      int64_t kn, float* acc) {
  tile_kblock_body<kStoreT>(apack, bpanel, rows_pad, kn, acc);
}
template <bool kStoreT>
void tile_kblock_generic(const float* apack, const float* bpanel, int64_t rows_pad, int64_t kn, float* acc) {
  tile_kblock_body<kStoreT>(apack, bpanel, rows_pad, kn, acc);
}
using TileFn = void (*)(const float*, const float*, int64_t, int64_t, float*);
// Both variants perform the same IEEE operations per element, so the choice does not change any bit.
template <bool kStoreT>
TileFn pick_tile_fn() {
  return __builtin_cpu_supports("avx2") ? tile_kblock_avx2<kStoreT> : tile_kblock_generic<kStoreT>;
}

template <typename T>
void matmul_typed(const MatmulParams& p) {
  static const TileFn tile_kblock_acc = pick_tile_fn<false>();  // acc = acc + t
  static const TileFn tile_kblock_t = pick_tile_fn<true>();     // acc = t (compensated: t goes to the lanes)
  const bool compensated = p.compensated;
  const int64_t m_tiles = (p.M + kPanelRows - 1) / kPanelRows;
  const int64_t n_tiles = (p.N + kPanelCols - 1) / kPanelCols;
  const int64_t tiles_per_batch = m_tiles * n_tiles;
  const T* A = static_cast<const T*>(p.a);
  const T* B = static_cast<const T*>(p.b);
  const T* bias = static_cast<const T*>(p.bias);
  T* C = static_cast<T*>(p.c);

  at::parallel_for(0, p.batch * tiles_per_batch, 1, [&](int64_t task0, int64_t task1) {
    std::vector<float> apack(kPanelRows * kKB), bpanel(std::min(p.K, kPanelDepth) * kPanelCols),
        acc(kPanelRows * kPanelCols);
    std::vector<NeumaierLane> lanes(compensated ? kPanelRows * kPanelCols : 0);  // (rows, kPanelCols)
    for (int64_t task = task0; task < task1; ++task) {
      const int64_t bi = task / tiles_per_batch;
      const int64_t m0 = (task % tiles_per_batch) / n_tiles * kPanelRows;
      const int64_t n0 = (task % n_tiles) * kPanelCols;
      const int64_t rows = std::min(kPanelRows, p.M - m0), cols = std::min(kPanelCols, p.N - n0);
      const int64_t rows_pad = (rows + kMicroRows - 1) / kMicroRows * kMicroRows;
      const T* Ab = A + bi * p.a_bs + m0 * p.a_rs;
      const T* Bb = B + bi * p.b_bs + n0 * p.b_cs;
      // Padding rows/columns are zeros; their results are computed and discarded (no effect on real ones).
      std::fill(apack.begin() + rows * kKB, apack.begin() + rows_pad * kKB, 0.f);
      std::fill(acc.begin(), acc.begin() + rows_pad * kPanelCols, 0.f);  // acc = 0
      std::fill(lanes.begin(), lanes.end(), NeumaierLane{});             // (s, c) = (0, 0)
      // B slab by slab: rows [ks, ks + kd) of the (K, kPanelCols) panel of B, packed, then its K blocks in
      // ascending order (every element's chain is the §5 one: the slabs only split the packing). Packing walks B's
      // unit stride, so that nn.Linear's weight.t() streams each weight row instead of hopping K floats per
      // element; it only moves and widens values; unit-stride branches just let the compiler vectorise.
      for (int64_t ks = 0; ks < p.K; ks += kPanelDepth) {
        const int64_t kd = std::min(kPanelDepth, p.K - ks);
        const T* Bs = Bb + ks * p.b_rs;
        if (cols < kPanelCols) std::fill(bpanel.begin(), bpanel.begin() + kd * kPanelCols, 0.f);
        if (p.b_cs == 1) {  // row-major B
          for (int64_t k = 0; k < kd; ++k)
            for (int64_t n = 0; n < cols; ++n) bpanel[k * kPanelCols + n] = to_float(Bs[k * p.b_rs + n]);
        } else if (p.b_rs == 1) {  // nn.Linear's weight.t(): 8 weight rows streamed side by side
          int64_t n = 0;
          for (; n + kVec <= cols; n += kVec)
            for (int64_t k = 0; k < kd; ++k)
              for (int64_t j = 0; j < kVec; ++j) bpanel[k * kPanelCols + n + j] = to_float(Bs[k + (n + j) * p.b_cs]);
          for (; n < cols; ++n)
            for (int64_t k = 0; k < kd; ++k) bpanel[k * kPanelCols + n] = to_float(Bs[k + n * p.b_cs]);
        } else {
          for (int64_t k = 0; k < kd; ++k)
            for (int64_t n = 0; n < cols; ++n) bpanel[k * kPanelCols + n] = to_float(Bs[k * p.b_rs + n * p.b_cs]);
        }
        for (int64_t k0 = ks; k0 < ks + kd; k0 += kKB) {
          const int64_t kn = std::min<int64_t>(kKB, p.K - k0);
          for (int64_t r = 0; r < rows; ++r) {
            const T* ar = Ab + r * p.a_rs + k0 * p.a_cs;
            float* dst = apack.data() + r * kKB;
            if (p.a_cs == 1) {
              for (int64_t k = 0; k < kn; ++k) dst[k] = to_float(ar[k]);
            } else {
              for (int64_t k = 0; k < kn; ++k) dst[k] = to_float(ar[k * p.a_cs]);
            }
          }
          const float* bblock = bpanel.data() + (k0 - ks) * kPanelCols;
          if (!compensated) {
            tile_kblock_acc(apack.data(), bblock, rows_pad, kn, acc.data());
            continue;
          }
          // Compensated (REDUCTION_ORDER.md §5): acc holds this block's t; Neumaier-add it, ascending blocks.
          tile_kblock_t(apack.data(), bblock, rows_pad, kn, acc.data());
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t n = 0; n < cols; ++n) lanes[r * kPanelCols + n].add(acc[r * kPanelCols + n]);
        }
      }
      if (compensated)  // acc = s + c
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t n = 0; n < cols; ++n) acc[r * kPanelCols + n] = lanes[r * kPanelCols + n].value();
      for (int64_t r = 0; r < rows; ++r) {
        T* c = C + (bi * p.M + m0 + r) * p.N + n0;
        const float* ar = acc.data() + r * kPanelCols;
        if (bias) {
          for (int64_t n = 0; n < cols; ++n) c[n] = from_float<T>(ar[n] + to_float(bias[n0 + n]));
        } else {
          for (int64_t n = 0; n < cols; ++n) c[n] = from_float<T>(ar[n]);
        }
      }
    }
  });
}

}  // namespace

void matmul_cpu(const MatmulParams& p, at::ScalarType dtype) {
  dispatch_float(dtype, "matmul", [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    matmul_typed<T>(p);
  });
}

}  // namespace detops
