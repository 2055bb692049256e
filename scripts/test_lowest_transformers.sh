#!/usr/bin/env bash
# CI's second job: the Hugging Face tests against the lowest transformers detops supports (the lower bound of
# the `hf` extra in pyproject.toml), in a virtualenv of its own that reuses this machine's torch and the detops
# build (run scripts/test.sh first). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
lowest=$("$PY" -c "
import tomllib
hf = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['hf']
print(next(d.split('>=')[1] for d in hf if d.startswith('transformers>=')))")
venv=build/venv-transformers-$lowest
if [ ! -x "$venv/bin/python" ]; then
  "$PY" -m venv --system-site-packages "$venv"
fi
"$venv/bin/python" -m pip install -q "transformers==$lowest" 2>&1 \
  | { grep -v -e "Running pip as the 'root' user" -e "^WARNING: Location" -e "^\[notice\]" || true; }
"$venv/bin/python" -c "import transformers, detops; print('lowest supported: transformers', transformers.__version__, '| detops', detops.__version__)"
set +e
"$venv/bin/python" -m pytest tests/test_hf_models.py tests/test_hf_usage.py tests/test_patch.py tests/test_verify.py \
  tests/test_infer.py tests/test_distributed.py tests/test_train.py -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "no test ran: failing"; exit 1; fi
exit $rc
