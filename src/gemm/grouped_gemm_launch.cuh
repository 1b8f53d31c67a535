// SPDX-License-Identifier: Apache-2.0
// The launch of one grouped GEMM instantiation and the switch over row tiles,
// shared by the per-type instantiation files.
#pragma once

#include "common/launch.h"
#include "gemm/grouped_gemm_kernel.cuh"

namespace hpc_ops::gemm {

template <class Element, int kTokenTile, Epilogue kEpilogue, bool kXByTma>
cudaError_t launch_grouped_gemm_tile(const CUtensorMap& w_map, const CUtensorMap& x_map,
                                     const CUtensorMap& y_map, const GroupedGemmParams& params,
                                     int grid, cudaStream_t stream) {
  using Traits = GroupedGemmTraits<Element, kTokenTile, kEpilogue, kXByTma>;
  detail::LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(grid));
  shape.block = dim3(kThreads);
  shape.smem_bytes = Traits::kSmemBytes;
  return detail::launch_with_smem_opt_in<
      &grouped_gemm_kernel<Element, kTokenTile, kEpilogue, kXByTma>, Traits::kSmemBytes>(
      shape, stream, w_map, x_map, y_map, params);
}

// x_map == nullptr: x by cp.async (any layout); else by TMA through *x_map,
// built for the 64- and 128-row tiles only (gemm::rows_by_tma). y_map is read
// only when params.y_by_tma.
template <class Element, Epilogue kEpilogue>
cudaError_t launch_grouped_gemm_tiles(int token_tile, const CUtensorMap& w_map,
                                      const CUtensorMap* x_map, const CUtensorMap& y_map,
                                      const GroupedGemmParams& params, int grid,
                                      cudaStream_t stream) {
  if (x_map != nullptr) {
    switch (token_tile) {
      case 64:
        return launch_grouped_gemm_tile<Element, 64, kEpilogue, true>(w_map, *x_map, y_map, params,
                                                                      grid, stream);
      case 128:
        return launch_grouped_gemm_tile<Element, 128, kEpilogue, true>(w_map, *x_map, y_map, params,
                                                                      grid, stream);
      default: return cudaErrorInvalidValue;
    }
  }
  // The map argument is unused without TMA for x: the weight map fills it.
  switch (token_tile) {
    case 16:
      return launch_grouped_gemm_tile<Element, 16, kEpilogue, false>(w_map, w_map, y_map, params,
                                                                      grid, stream);
    case 32:
      return launch_grouped_gemm_tile<Element, 32, kEpilogue, false>(w_map, w_map, y_map, params,
                                                                      grid, stream);
    case 64:
      return launch_grouped_gemm_tile<Element, 64, kEpilogue, false>(w_map, w_map, y_map, params,
                                                                      grid, stream);
    case 128:
      return launch_grouped_gemm_tile<Element, 128, kEpilogue, false>(w_map, w_map, y_map, params,
                                                                      grid, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace hpc_ops::gemm
