#!/usr/bin/env bash
# Runs the exhaustive numerics proofs with one command. Not part of the test suite: run it after a change to
# det_exp / det_exp_nonpositive (csrc/reduce/reduce.h), the softmax row division (csrc/ops/softmax/row_division.cuh)
# or the hardware narrowing of narrow8 (csrc/reduce/lanes_cuda.cuh).
#   1. tests/det_exp_exhaustive.cpp (CPU, every float input; ~30 s on 2 cores): det_exp == the §7 reference form,
#      det_exp_nonpositive == det_exp for every x <= 0 and NaN.
#   2. tests/division_exhaustive.cu (GPU, 2^46 significand pairs; ~50 s on an H100): RowDivision::fast == IEEE e / S.
#   3. scripts/proofs/narrow_exhaustive.cu (GPU, every float input; seconds): cvt.rn.bf16x2/f16x2 == from_float.
# The CUDA proofs are compiled whenever nvcc is found (target sm_90a, DETOPS_CUDA_ARCH overrides) and run only when
# nvidia-smi finds a GPU; otherwise the script says they were skipped. The flags are setup.py's numerics flags.
# Usage: bash scripts/prove_numerics.sh [--cpu-only]. Exit code 0 when every proof that ran passed.
set -euo pipefail
cd "$(dirname "$0")/.."

cpu_only=0
for arg in "$@"; do
  case "$arg" in
    --cpu-only) cpu_only=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "prove_numerics: unknown argument $arg" >&2; exit 2 ;;
  esac
done

CXX=${CXX:-g++}
arch=${DETOPS_CUDA_ARCH:-90a}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=()
skipped=()

run_proof() {  # name, binary
  echo "== $1"
  if "$2"; then echo "-- $1: passed"; else echo "-- $1: FAILED"; failed+=("$1"); fi
}

# 1. det_exp (CPU). -mfma only where the host has FMA (as setup.py): det_fma is then one instruction, else fmaf.
fma=()
if [ "$(uname -m)" = x86_64 ] && grep -qw fma /proc/cpuinfo 2>/dev/null; then fma=(-mfma); fi
echo "== compiling tests/det_exp_exhaustive.cpp"
"$CXX" -std=c++17 -O2 -ffp-contract=off -fno-fast-math "${fma[@]}" -fopenmp -Icsrc \
  tests/det_exp_exhaustive.cpp -o "$out/det_exp_exhaustive"
run_proof det_exp_exhaustive "$out/det_exp_exhaustive"

# 2 + 3. CUDA proofs.
if [ $cpu_only -eq 1 ]; then
  skipped+=("division_exhaustive (--cpu-only)" "narrow_exhaustive (--cpu-only)")
else
  NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  if [ ! -x "$NVCC" ]; then
    skipped+=("division_exhaustive (no nvcc)" "narrow_exhaustive (no nvcc)")
  else
    nvcc_flags=(-std=c++17 -O3 "-gencode=arch=compute_${arch},code=sm_${arch}" --fmad=false -prec-div=true
                -prec-sqrt=true -ftz=false -Icsrc)
    for src in tests/division_exhaustive.cu scripts/proofs/narrow_exhaustive.cu; do
      name=$(basename "$src" .cu)
      echo "== compiling $src (sm_${arch})"
      "$NVCC" "${nvcc_flags[@]}" "$src" -o "$out/$name"
    done
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
      run_proof division_exhaustive "$out/division_exhaustive"
      run_proof narrow_exhaustive "$out/narrow_exhaustive"
    else
      skipped+=("division_exhaustive (compiled; no GPU found by nvidia-smi)"
                "narrow_exhaustive (compiled; no GPU found by nvidia-smi)")
    fi
  fi
fi

echo
for s in ${skipped[@]+"${skipped[@]}"}; do echo "skipped: $s"; done
if [ ${#failed[@]} -gt 0 ]; then echo "prove_numerics: FAILED: ${failed[*]}"; exit 1; fi
echo "prove_numerics: every proof that ran passed"
