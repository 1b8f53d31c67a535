#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what building, testing and benchmarking hpc_ops needs into the
# current Python environment, skipping whatever is already there (so it also
# works offline on a machine that has it all). Wheels in $HPC_OPS_WHEELS (a
# folder) are installed first, without the network.
set -euo pipefail
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
has_module() { "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }

if [[ -n "${HPC_OPS_WHEELS:-}" && -d "${HPC_OPS_WHEELS}" ]] && ls "${HPC_OPS_WHEELS}"/*.whl >/dev/null 2>&1; then
  pip_install --no-index --no-deps "${HPC_OPS_WHEELS}"/*.whl
fi

need=()
has_module torch || need+=("torch==2.11.0")
has_module numpy || need+=("numpy")
has_module pytest || need+=("pytest")
has_module nanobind || need+=("nanobind>=2.0")
has_module scikit_build_core || need+=("scikit-build-core>=0.10")
has_module cutlass_library || need+=("nvidia-cutlass==4.2.0.0")
command -v ninja >/dev/null || need+=("ninja")
if ! command -v cmake >/dev/null || ! cmake -P /dev/stdin <<<'if(CMAKE_VERSION VERSION_LESS 3.24)
  message(FATAL_ERROR)
endif()' >/dev/null 2>&1; then
  need+=("cmake>=3.24")
fi
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  pip_install "${need[@]}"
fi
command -v nvcc >/dev/null || { echo "setup: nvcc (CUDA toolkit >= 12.8) is required on PATH" >&2; exit 1; }
echo "setup: ready ($("$PY" --version), $(nvcc --version | tail -1))"
