// SPDX-License-Identifier: Apache-2.0
// Device attributes the launch heuristics need, queried once per device.
#pragma once

namespace hpc_ops::detail {

// Multiprocessors of CUDA device `device` (cached after the first query; a
// failed query throws hpc_ops::Error naming `op`).
int multiprocessor_count(const char* op, int device);

}  // namespace hpc_ops::detail
