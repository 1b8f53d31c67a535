#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Set-up + every test: builds the C++ library, its tests and examples (all
# kernels for sm_90a), runs the C++ tests, installs the Python package and runs
# pytest. GPU tests run when a GPU is present and are skipped with a reason
# when not. Usage: bash scripts/run_tests.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}
bash scripts/setup.sh

echo "== C++ build (libhpc_ops, tests, examples) =="
cmake -S . -B build/cmake -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v "$PY")" >/dev/null
cmake --build build/cmake -j "$JOBS"
echo "== C++ tests =="
ctest --test-dir build/cmake --output-on-failure
./build/cmake/examples/rms_norm_example

echo "== Python package =="
"$PY" -m pip install --disable-pip-version-check -q --no-build-isolation --no-deps .
echo "== Python tests =="
"$PY" -m pytest tests/python -rs -q "$@"
