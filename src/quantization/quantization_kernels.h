// SPDX-License-Identifier: Apache-2.0
// The quantization family's compiled kernels (defined in quantization_kernels.cu).
#pragma once

#include "rowwise/rowwise_host.h"

namespace hpc_ops::rowwise {
KernelTable quantization_kernel_table();
}  // namespace hpc_ops::rowwise
