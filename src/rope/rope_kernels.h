// SPDX-License-Identifier: Apache-2.0
// Host-side interface of the RoPE + KV-write kernels (rope_kernels.cu).
#pragma once

#include <cuda_runtime_api.h>

#include "rope/rope_params.h"

namespace hpc_ops::rope {

// The per-row kernel for head_dim (64, 128 or 256) on a grid of
// (rows, ceil((Hq + 2 Hkv) / heads_per_cta)) CTAs; returns the launch error.
cudaError_t launch_rope_kv_write(const RopeParams& params, int head_dim, cudaStream_t stream);

// The streaming kernel on `ctas` persistent CTAs (params.stages and the stage
// layout filled in from stream_shape); returns the first error.
cudaError_t launch_rope_stream(const RopeParams& params, int head_dim, int ctas, cudaStream_t stream);

}  // namespace hpc_ops::rope
