#!/usr/bin/env bash
# The test command (README): set up, compile-gate the CUDA kernels with nvcc if torch has no CUDA, run pytest.
# DETOPS_HYPOTHESIS_PROFILE=gpu selects the large hypothesis profile (GPU box).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/setup_env.sh

# CUDA compile gate: every kernel file must compile for sm_90a even on a box whose torch has no CUDA.
if ! "$PY" -c "import detops,sys; sys.exit(0 if detops.has_cuda_kernels() else 1)"; then
  NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  if [ -x "$NVCC" ]; then
    bash scripts/nvcc_gate.sh
  else
    echo "nvcc not found: CUDA compile gate skipped"
  fi
fi

set +e
"$PY" -m pytest tests -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "no test ran: failing"; exit 1; fi
exit $rc
