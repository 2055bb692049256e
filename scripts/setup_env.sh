#!/usr/bin/env bash
# Idempotent set-up shared by scripts/demo.sh and scripts/test.sh: dependencies, then the detops build.
# A box without torch gets torch 2.13.0 (CPU); an installed torch (the GPU box) is kept. The other dependencies
# are brought to the newest release the package index serves (a fresh machine's versions: CI must see today's
# transformers); DETOPS_OFFLINE=1 skips that where no index is reachable (the GPU box) and uses what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_q() { "$PY" -m pip install -q "$@" 2>&1 | { grep -v -e "Running pip as the 'root' user" -e "^WARNING: Location" || true; }; }

have() { "$PY" -c "import $1" >/dev/null 2>&1; }
have torch || pip_q torch==2.13.0
if [ "${DETOPS_OFFLINE:-0}" != 1 ]; then
  echo "setup: newest ninja, numpy, pytest, hypothesis, transformers, accelerate, trl, peft"
  pip_q -U ninja numpy pytest hypothesis "transformers>=5.17" accelerate trl peft
fi
# CUTLASS/CuTe headers for the Hopper tensor-core matmul: only where torch has CUDA and nvcc will compile kernels.
torch_cuda=$("$PY" -c "import torch; print(torch.version.cuda or '')")
if [ -n "$torch_cuda" ] && { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; }; then
  have cutlass_library || pip_q nvidia-cutlass==4.2.0.0
fi
"$PY" -c "import torch, transformers; print('setup: torch', torch.__version__, '| transformers', transformers.__version__)"

# Build against the installed torch (no build isolation: it would download another torch); skipped when the
# installed build is newer than every source file. Progress: one line per compiled file (ninja's [k/n]).
so=$(ls detops/_C*.so 2>/dev/null | head -n 1 || true)
if [ -n "$so" ] && [ -z "$(find csrc setup.py -newer "$so" -print -quit)" ] && "$PY" -m pip show -q detops >/dev/null 2>&1; then
  echo "setup: detops build is up to date"
else
  mkdir -p build
  log=build/pip-build.log
  echo "setup: building detops (a few minutes on 2 cores; full log: $log)"
  start=$(date +%s)
  if ! MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip install -v --no-build-isolation --no-deps -e . > >(tee "$log" \
      | awk -v root="$PWD/" '/^ *\[[0-9]+\/[0-9]+\]/ { f = ""; for (i = 2; i <= NF; i++) if ($i == "-c") f = $(i + 1);
                                      sub(root, "", f); if (f != "") { print "setup:   " $1 " " f; fflush() } }
             /detops setup:/ { print; fflush() }') 2>&1; then
    echo "setup: the detops build failed; the end of $log:"; tail -n 40 "$log"; exit 1
  fi
  echo "setup: built in $(( $(date +%s) - start )) s"
fi
"$PY" -c "import detops; print('detops', detops.__version__, 'cuda kernels:', detops.has_cuda_kernels())"
