#!/usr/bin/env bash
# Every benchmark, one line per figure: ./bench/run.sh
# Each figure is measured side by side with its peer in one run (see each script's docstring).
# Needs what tests/run.sh installs (docker-registry, skopeo, curl, llama-server).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
for bench in startup pull dedup serve transfer; do
    "$PY" "bench/$bench.py"
done
