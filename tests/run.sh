#!/usr/bin/env bash
# Run the whole test suite, installing what it needs first:  ./tests/run.sh [pytest args]
# RAMALAMA_TEST_STRICT=1 (CI sets it) turns a missing real component into a failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
"$PY" -m pip install -q pytest "shiv==1.0.8" gguf vermin

"$PY" -m pytest -q -rs -p no:cacheprovider tests "$@"
