#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Downloads the pinned nvidia-cutlass wheel (headers only, any platform) into
# .carry/ so that scripts/gpu_check.sh can build on a GPU machine that has no
# network. Run it once on a machine with network access.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .carry
python3 -m pip download --disable-pip-version-check -q --no-deps -d .carry "nvidia-cutlass==4.2.0.0"
ls -l .carry
