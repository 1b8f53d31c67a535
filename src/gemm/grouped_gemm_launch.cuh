// SPDX-License-Identifier: Apache-2.0
// The launch of one grouped GEMM instantiation and the switch over row tiles,
// shared by the per-type instantiation files.
#pragma once

#include "common/launch.h"
#include "gemm/grouped_gemm_kernel.cuh"

namespace hpc_ops::gemm {

template <class Element, int kTokenTile, Epilogue kEpilogue>
cudaError_t launch_grouped_gemm_tile(const CUtensorMap& w_map, const GroupedGemmParams& params,
                                     int grid, cudaStream_t stream) {
  using Traits = GroupedGemmTraits<Element, kTokenTile, kEpilogue>;
  auto* kernel = &grouped_gemm_kernel<Element, kTokenTile, kEpilogue>;
  const cudaError_t err = detail::once_per_device([kernel] {
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                Traits::kSmemBytes);
  });
  if (err != cudaSuccess) return err;
  detail::LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(grid));
  shape.block = dim3(kThreads);
  shape.smem_bytes = Traits::kSmemBytes;
  return detail::launch_kernel(kernel, shape, stream, w_map, params);
}

template <class Element, Epilogue kEpilogue>
cudaError_t launch_grouped_gemm_tiles(int token_tile, const CUtensorMap& w_map,
                                      const GroupedGemmParams& params, int grid,
                                      cudaStream_t stream) {
  switch (token_tile) {
    case 16: return launch_grouped_gemm_tile<Element, 16, kEpilogue>(w_map, params, grid, stream);
    case 32: return launch_grouped_gemm_tile<Element, 32, kEpilogue>(w_map, params, grid, stream);
    case 64: return launch_grouped_gemm_tile<Element, 64, kEpilogue>(w_map, params, grid, stream);
    case 128: return launch_grouped_gemm_tile<Element, 128, kEpilogue>(w_map, params, grid, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace hpc_ops::gemm
