#!/usr/bin/env bash
# The main job (README): set up, then show a stock Hugging Face model's logits changing with batch layout
# while the detops-patched model stays bitwise identical. Extra arguments go to `python -m detops demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec "${PYTHON:-python3}" -m detops demo "$@"
