#!/usr/bin/env bash
# Compiles every CUDA kernel file (plain CUDA, no torch headers) for sm_90a with the pinned numerics flags.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
find_cutlass='import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), "source"))'
CUTLASS=$("$PY" -c "$find_cutlass" 2>/dev/null || true)
if [ -z "$CUTLASS" ]; then
  # The headers only, into build/ (not into the environment: its torch has no CUDA, so nothing else needs them).
  [ -d build/cutlass/cutlass_library ] || "$PY" -m pip install -q --no-deps --target build/cutlass nvidia-cutlass==4.2.0.0 \
    2>&1 | { grep -v -e "Running pip as the 'root' user" -e "^WARNING: Location" || true; }
  CUTLASS=$(PYTHONPATH=build/cutlass "$PY" -c "$find_cutlass" 2>/dev/null || true)
fi
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
