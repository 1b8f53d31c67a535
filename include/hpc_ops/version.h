// SPDX-License-Identifier: Apache-2.0
// Library version (kept equal to the Python package version in pyproject.toml).
#pragma once

#define HPC_OPS_VERSION_MAJOR 0
#define HPC_OPS_VERSION_MINOR 1
#define HPC_OPS_VERSION_PATCH 0
#define HPC_OPS_VERSION_STRING "0.1.0"
