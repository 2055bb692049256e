#!/usr/bin/env bash
# Compiles every CUDA kernel file (plain CUDA, no torch headers) for sm_90a with the pinned numerics flags.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
CUTLASS=$("$PY" -c "import cutlass_library,os; print(os.path.join(os.path.dirname(cutlass_library.__file__),'source'))" 2>/dev/null || true)
inc=(-Icsrc)
[ -n "$CUTLASS" ] && inc+=(-I"$CUTLASS/include" -I"$CUTLASS/tools/util/include")
# Generated headers must match their generator (attention_wgmma.cuh: scripts/gen_attention_wgmma.py).
"$PY" scripts/gen_attention_wgmma.py --check
files=$(find csrc -name '*.cu' | sort)
[ -n "$files" ] || { echo "nvcc gate: no .cu files"; exit 0; }
out=$(mktemp -d)
export NVCC out
compile_one() {
  echo "nvcc gate: $1"
  "$NVCC" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr \
    --fmad=false -prec-div=true -prec-sqrt=true -ftz=false "${@:2}" -c "$1" -o "$out/$(basename "$1").o"
}
export -f compile_one
# One nvcc per core; any failure fails the gate.
printf '%s\n' $files | xargs -P "$(nproc)" -I{} bash -c 'compile_one "$@"' _ {} "${inc[@]}"
echo "nvcc gate: all CUDA kernel files compile for sm_90a"
