// SPDX-License-Identifier: Apache-2.0
// The process-wide PDL switch of detail::launch_kernel (see launch.h).
#include "common/launch.h"

#include <cstdlib>
#include <cstring>

namespace hpc_ops::detail {

bool pdl_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("HPC_OPS_PDL");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return enabled;
}

}  // namespace hpc_ops::detail
