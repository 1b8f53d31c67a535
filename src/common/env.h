// SPDX-License-Identifier: Apache-2.0
// Tuning switches read from the environment (HPC_OPS_*). They are never needed
// for correct results; the defaults are the measured choices.
#pragma once

#include <cstdlib>
#include <cstring>

namespace hpc_ops::detail {

// The integer value of environment variable `name`, or `fallback` when unset
// (atoi: text that is not a number reads as 0).
inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

// Whether environment variable `name` is set to exactly `value`.
inline bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, value) == 0;
}

// Whether environment variable `name` is set at all.
inline bool env_set(const char* name) { return std::getenv(name) != nullptr; }

}  // namespace hpc_ops::detail
