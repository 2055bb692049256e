#!/bin/sh
# CPU emulation of the fp32 CUDA matmul kernel (see emulate_matmul_fp32.cpp). Usage: tests/cuda_emulation/run.sh
set -e
here=$(cd "$(dirname "$0")" && pwd)
csrc="$here/../../csrc"
tmp=$(mktemp -d)
cat > "$tmp/cuda_runtime_api.h" <<'H'
#pragma once
typedef int cudaError_t;
typedef void* cudaStream_t;
constexpr cudaError_t cudaSuccess = 0;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
H
sed -e 's|matmul_fp32_kernel<<<grid, kThreads, 0, stream>>>(p, a_m_fast, b_k_fast);|(void)stream; EMU_LAUNCH(grid, kThreads, p, a_m_fast, b_k_fast);|' \
    -e 's|constexpr int64_t kMaxGridYZ = 65535;|constexpr int64_t kMaxGridYZ = EMU_MAX_GRID;|' \
    -e 's|#include "../../common/constants.h"|#include "common/constants.h"|' \
    -e 's|#include "matmul_fp32.h"|#include "ops/matmul/matmul_fp32.h"|' \
    "$csrc/ops/matmul/matmul_fp32_kernels.cu" > "$tmp/kernel_emu.cpp"
grep -q EMU_LAUNCH "$tmp/kernel_emu.cpp" || { echo "kernel launch line not found: update run.sh"; exit 1; }
grep -q EMU_MAX_GRID "$tmp/kernel_emu.cpp" || { echo "kMaxGridYZ line not found: update run.sh"; exit 1; }
# Grid limit 65535 (as on the GPU) and 1 (forces the batch / row-tile grid-stride loops).
for g in 65535 1; do
  g++ -std=c++20 -O1 -ffp-contract=off -pthread -DEMU_MAX_GRID=$g "-DKERNEL_EMU_SOURCE=\"$tmp/kernel_emu.cpp\"" \
      -I"$tmp" -I"$csrc" "$here/emulate_matmul_fp32.cpp" -o "$tmp/emu$g"
  "$tmp/emu$g"
done
rm -rf "$tmp"
