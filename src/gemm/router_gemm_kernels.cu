// SPDX-License-Identifier: Apache-2.0
// Router GEMM instantiations: 2 or 3 weight parts x 4 token tiles, and the
// CUDA-core kernel for a few tokens (2 or 3 parts x 1 or 8 tokens per CTA).
#include "common/launch.h"
#include "gemm/router_gemm_kernel.cuh"
#include "gemm/router_gemm_kernels.h"
#include "gemm/router_gemv_kernel.cuh"

namespace hpc_ops::gemm {
namespace {

template <int kParts, int kTokenTile>
cudaError_t launch_tile(const CUtensorMap& w_map, const CUtensorMap& x_map,
                        const RouterGemmParams& params, int grid, cudaStream_t stream) {
  using Traits = RouterGemmTraits<kParts, kTokenTile>;
  detail::LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(grid));
  shape.block = dim3(kThreads);
  shape.smem_bytes = Traits::kSmemBytes;
  return detail::launch_with_smem_opt_in<&router_gemm_kernel<kParts, kTokenTile>,
                                         Traits::kSmemBytes>(shape, stream, w_map, x_map, params);
}

template <int kParts>
cudaError_t launch_parts(int token_tile, const CUtensorMap& w_map, const CUtensorMap& x_map,
                         const RouterGemmParams& params, int grid, cudaStream_t stream) {
  switch (token_tile) {
    case 16: return launch_tile<kParts, 16>(w_map, x_map, params, grid, stream);
    case 32: return launch_tile<kParts, 32>(w_map, x_map, params, grid, stream);
    case 64: return launch_tile<kParts, 64>(w_map, x_map, params, grid, stream);
    case 128: return launch_tile<kParts, 128>(w_map, x_map, params, grid, stream);
    default: return cudaErrorInvalidValue;
  }
}

// NOTE: a single token has its own instantiation: with 8 tokens' x loads
// (7 predicated off) M = 1 took 7.3-7.8 us instead of 4.1-6.1.
template <int kParts>
cudaError_t launch_gemv_parts(const RouterGemvParams& params, const RouterGemvShape& shape,
                              cudaStream_t stream) {
  detail::LaunchShape launch;
  launch.grid = dim3(static_cast<unsigned>(shape.channel_groups * shape.cluster),
                     static_cast<unsigned>(shape.token_blocks));
  launch.block = dim3(kGemvThreads);
  launch.cluster_x = static_cast<unsigned>(shape.cluster);
  return params.m == 1 ? detail::launch_kernel(router_gemv_kernel<kParts, 1>, launch, stream, params)
                       : detail::launch_kernel(router_gemv_kernel<kParts, kRouterGemvTokens>, launch,
                                               stream, params);
}

}  // namespace

cudaError_t launch_router_gemv(int parts, const RouterGemvParams& params, const RouterGemvShape& shape,
                               cudaStream_t stream) {
  switch (parts) {
    case 2: return launch_gemv_parts<2>(params, shape, stream);
    case 3: return launch_gemv_parts<3>(params, shape, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_router_gemm(int parts, int token_tile, const CUtensorMap& w_map,
                               const CUtensorMap& x_map, const RouterGemmParams& params, int grid,
                               cudaStream_t stream) {
  switch (parts) {
    case 2: return launch_parts<2>(token_tile, w_map, x_map, params, grid, stream);
    case 3: return launch_parts<3>(token_tile, w_map, x_map, params, grid, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace hpc_ops::gemm
