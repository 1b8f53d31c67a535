// SPDX-License-Identifier: Apache-2.0
// Instantiations of the RoPE + KV-write kernel: per head dim (64, 128, 256)
// and cache dtype (BF16, FP8): 6 kernels.
#include "rope/rope_kernel.cuh"
#include "rope/rope_kernels.h"

namespace hpc_ops::rope {
namespace {

template <int kD>
void launch(bool fp8, dim3 grid, const RopeParams& params, cudaStream_t stream) {
  if (fp8) {
    rope_kv_write_kernel<kD, true><<<grid, kRopeThreads, 0, stream>>>(params);
  } else {
    rope_kv_write_kernel<kD, false><<<grid, kRopeThreads, 0, stream>>>(params);
  }
}

}  // namespace

cudaError_t launch_rope_kv_write(const RopeParams& params, int head_dim, cudaStream_t stream) {
  const int heads = params.num_q_heads + 2 * params.num_kv_heads;
  const dim3 grid(static_cast<unsigned>(params.rows),
                  static_cast<unsigned>((heads + params.heads_per_cta - 1) / params.heads_per_cta));
  const bool fp8 = params.kv_fp8;
  switch (head_dim) {
    case 64: launch<64>(fp8, grid, params, stream); break;
    case 128: launch<128>(fp8, grid, params, stream); break;
    case 256: launch<256>(fp8, grid, params, stream); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace hpc_ops::rope
