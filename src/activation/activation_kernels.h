// SPDX-License-Identifier: Apache-2.0
// The activation family's compiled kernels (defined in activation_kernels.cu).
#pragma once

#include "rowwise/rowwise_host.h"

namespace hpc_ops::rowwise {
KernelTable activation_kernel_table();
}  // namespace hpc_ops::rowwise
