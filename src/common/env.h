// SPDX-License-Identifier: Apache-2.0
// Tuning switches read from the environment (HPC_OPS_*). They are never needed
// for correct results; the defaults are the measured choices.
#pragma once

#include <cstdlib>

namespace hpc_ops::detail {

// The integer value of environment variable `name`, or `fallback` when unset
// (atoi: text that is not a number reads as 0).
inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

}  // namespace hpc_ops::detail
