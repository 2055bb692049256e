#!/usr/bin/env bash
# Idempotent set-up shared by scripts/demo.sh and scripts/test.sh: dependencies, then the detops build.
# On a CPU-only box it installs torch 2.13.0 (CPU); where torch is already installed (the GPU box) it keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

have() { "$PY" -c "import $1" >/dev/null 2>&1; }
have torch || "$PY" -m pip install -q torch==2.13.0
missing=()
have ninja || missing+=(ninja)
have numpy || missing+=(numpy)
have pytest || missing+=(pytest)
have hypothesis || missing+=(hypothesis)
have transformers || missing+=("transformers>=5.17")
# CUTLASS/CuTe headers for the Hopper tensor-core matmul (only needed where nvcc compiles CUDA kernels).
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then have cutlass_library || missing+=(nvidia-cutlass==4.2.0.0); fi
if [ ${#missing[@]} -gt 0 ]; then "$PY" -m pip install -q "${missing[@]}"; fi

# Build against the installed torch (no build isolation: it would download another torch); skipped when the
# installed build is newer than every source file.
so=$(ls detops/_C*.so 2>/dev/null | head -n 1 || true)
if [ -n "$so" ] && [ -z "$(find csrc setup.py -newer "$so" -print -quit)" ] && "$PY" -m pip show -q detops >/dev/null 2>&1; then
  echo "detops build is up to date"
else
  MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip install -q --no-build-isolation --no-deps -e . 2>&1 \
    | { grep -v "Running pip as the 'root' user" || true; }
fi
"$PY" -c "import detops; print('detops', detops.__version__, 'cuda kernels:', detops.has_cuda_kernels())"
