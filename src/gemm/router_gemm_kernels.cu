// SPDX-License-Identifier: Apache-2.0
// Router GEMM instantiations: 2 or 3 weight parts x 4 token tiles.
#include "common/launch.h"
#include "gemm/router_gemm_kernel.cuh"
#include "gemm/router_gemm_kernels.h"

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

}  // namespace

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
