// SPDX-License-Identifier: Apache-2.0
// Umbrella header: the whole public C++ API of hpc_ops.
#pragma once

#include "hpc_ops/activation.h"
#include "hpc_ops/attention.h"
#include "hpc_ops/comm.h"
#include "hpc_ops/core/dtype.h"
#include "hpc_ops/core/error.h"
#include "hpc_ops/core/tensor.h"
#include "hpc_ops/grouped_gemm.h"
#include "hpc_ops/norm.h"
#include "hpc_ops/quantization.h"
#include "hpc_ops/rope.h"
#include "hpc_ops/router_gemm.h"
#include "hpc_ops/sampling.h"
#include "hpc_ops/version.h"
