// SPDX-License-Identifier: Apache-2.0
// Host-side interface of the RoPE + KV-write kernel (rope_kernels.cu).
#pragma once

#include <cuda_runtime_api.h>

#include "rope/rope_params.h"

namespace hpc_ops::rope {

// Launches the kernel for head_dim (64, 128 or 256) on a grid of
// (rows, ceil((Hq + 2 Hkv) / heads_per_cta)) CTAs; returns the launch error.
cudaError_t launch_rope_kv_write(const RopeParams& params, int head_dim, cudaStream_t stream);

}  // namespace hpc_ops::rope
