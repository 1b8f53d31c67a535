// SPDX-License-Identifier: Apache-2.0
// Instantiations of the RoPE + KV-write kernel: per head dim (64, 128, 256)
// and cache dtype (BF16, FP8): 6 kernels.
#include "common/launch.h"
#include "rope/rope_kernel.cuh"
#include "rope/rope_kernels.h"

namespace hpc_ops::rope {
namespace {

template <int kD>
cudaError_t launch(bool fp8, dim3 grid, const RopeParams& params, cudaStream_t stream) {
  detail::LaunchShape shape;
  shape.grid = grid;
  shape.block = dim3(kRopeThreads);
  return fp8 ? detail::launch_kernel(rope_kv_write_kernel<kD, true>, shape, stream, params)
             : detail::launch_kernel(rope_kv_write_kernel<kD, false>, shape, stream, params);
}

}  // namespace

cudaError_t launch_rope_kv_write(const RopeParams& params, int head_dim, cudaStream_t stream) {
  const int heads = params.num_q_heads + 2 * params.num_kv_heads;
  const dim3 grid(static_cast<unsigned>(params.rows),
                  static_cast<unsigned>((heads + params.heads_per_cta - 1) / params.heads_per_cta));
  const bool fp8 = params.kv_fp8;
  switch (head_dim) {
    case 64: return launch<64>(fp8, grid, params, stream);
    case 128: return launch<128>(fp8, grid, params, stream);
    case 256: return launch<256>(fp8, grid, params, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace hpc_ops::rope
