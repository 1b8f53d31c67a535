// SPDX-License-Identifier: Apache-2.0
// The normalization family's compiled kernels (defined in norm_kernels.cu).
#pragma once

#include "rowwise/rowwise_host.h"

namespace hpc_ops::rowwise {
KernelTable norm_kernel_table();
}  // namespace hpc_ops::rowwise
