// SPDX-License-Identifier: Apache-2.0
// Launchers of the peer-memory all-reduce kernels (allreduce_kernels.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "comm/allreduce_params.h"

namespace hpc_ops::comm {

// One call of the one-shot or two-shot kernel on `ctas` CTAs (PDL allowed).
cudaError_t launch_allreduce(AllReducePath path, const AllReduceParams& params, int ctas,
                             cudaStream_t stream);

// Fills `bytes` (a multiple of 16) at `begin` with the sentinel.
cudaError_t launch_fill_sentinel(void* begin, int64_t bytes, cudaStream_t stream);

}  // namespace hpc_ops::comm
