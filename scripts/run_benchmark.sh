#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Set-up + the benchmark on a GPU: installs what is missing, builds and
# installs hpc_ops, then runs `python -m hpc_ops.bench` (default: all families)
# with results under bench/results/. Usage: bash scripts/run_benchmark.sh [all|norm|activation|quantization|overhead] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/setup.sh
"$PY" -m pip install --disable-pip-version-check -q --no-build-isolation --no-deps .
"$PY" -m hpc_ops.bench "${@:-all}"
