#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One command on a GPU machine: build, every test (C++, Python GPU tests, a
# compute-sanitizer memcheck + racecheck pass over every kernel), then the
# benchmark. Works offline when the machine already has torch, nanobind,
# scikit-build-core, cmake and ninja: the CUTLASS headers come from a wheel in
# .carry/ (scripts/fetch_wheels.sh puts it there) or from CUTLASS_DIR.
# Usage: bash scripts/gpu_check.sh [bench args, default: all]   (LOG_DIR=... to keep logs)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG_DIR=${LOG_DIR:-bench/results}
mkdir -p "$LOG_DIR"
export HPC_OPS_WHEELS=${HPC_OPS_WHEELS:-.carry}
status=0
step() {  # step NAME COMMAND...: runs, logs to $LOG_DIR/NAME.log, records failure
  local name=$1; shift
  local t0=$SECONDS
  "$@" >"$LOG_DIR/$name.log" 2>&1
  local rc=$?
  printf '%-12s rc=%d  %4ds  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$(tail -n 1 "$LOG_DIR/$name.log")"
  ((rc == 0)) || status=1
  return $rc
}
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw --format=csv,noheader || true
step setup bash scripts/setup.sh || exit 1
step build_cpp bash -c "cmake -S . -B build/cmake -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=$(command -v "$PY") && cmake --build build/cmake -j $(nproc)" || exit 1
step install "$PY" -m pip install --disable-pip-version-check --no-build-isolation --no-deps . || exit 1
step ctest ctest --test-dir build/cmake --output-on-failure
step example ./build/cmake/examples/rms_norm_example
step pytest "$PY" -m pytest tests/python -rs -q
# Again with the bulk-copy kernel forced wherever it fits, so that small and
# ragged shapes (which default to the register kernels) run through it too.
step pytest_bulk env HPC_OPS_ROWWISE_BULK=1 "$PY" -m pytest tests/python -rs -q
# The decode-attention tests with the KV tiles by cp.async where they default
# to TMA (FP8 with up to 16 query rows per kv head, pages of 16 slots or more),
# and with the largest piece cost the planners take (bins that reach only a
# unit's empty positions; decode_plan.h).
step pytest_decode_cp_async env HPC_OPS_DECODE_TMA=0 HPC_OPS_DECODE_PIECE_COST=16 \
  "$PY" -m pytest tests/python/test_decode_attention_gpu.py -rs -q
# The router GEMM tests with the CUDA-core kernel at every size, then with
# the tensor-core kernel at every size (by default they split at 16 tokens).
step pytest_router_gemv env HPC_OPS_ROUTER_GEMV_MAX_M=100000 "$PY" -m pytest tests/python/test_router_gemm_gpu.py -rs -q
step pytest_router_wgmma env HPC_OPS_ROUTER_GEMV_MAX_M=-1 "$PY" -m pytest tests/python/test_router_gemm_gpu.py -rs -q
# The grouped GEMM tests with x by cp.async where it defaults to TMA (the
# contiguous and masked layouts).
step pytest_gemm_cp_async env HPC_OPS_GEMM_X_TMA=0 "$PY" -m pytest tests/python/test_grouped_gemm_gpu.py -rs -q
# And with every tile of y stored by the threads (no TMA store).
step pytest_gemm_y_threads env HPC_OPS_GEMM_Y_TMA=0 "$PY" -m pytest tests/python/test_grouped_gemm_gpu.py -rs -q
# And the normalization tests with the looped RMSNorm kernel forced everywhere
# it applies (by default it takes only large problems).
step pytest_looped env HPC_OPS_ROWWISE_LOOPED=1 "$PY" -m pytest tests/python/test_norm_gpu.py -rs -q
if command -v compute-sanitizer >/dev/null; then
  for mode in ROWWISE_BULK=0 ROWWISE_BULK=1 ROWWISE_LOOPED=1 DECODE_TMA=0 GEMM_X_TMA=0 GEMM_Y_TMA=0; do
    for tool in memcheck racecheck; do
      step "sanitize_${tool}_${mode/=/}" env HPC_OPS_$mode compute-sanitizer \
        --tool "$tool" --error-exitcode 3 "$PY" scripts/sanitizer_smoke.py
    done
  done
fi
step bench "$PY" -m hpc_ops.bench "${@:-all}" --out "$LOG_DIR"
exit $status
