// SPDX-License-Identifier: Apache-2.0
// Grouped GEMM instantiations for fp8 with per-tensor or per-row scales: 4 row tiles with x
// by cp.async, the 64- and 128-row tiles also with x by TMA.
#include "gemm/grouped_gemm_kernels.h"
#include "gemm/grouped_gemm_launch.cuh"

namespace hpc_ops::gemm {

cudaError_t launch_grouped_gemm_fp8(int token_tile, const CUtensorMap& w_map,
                                    const CUtensorMap* x_map, const CUtensorMap& y_map,
                                    const GroupedGemmParams& params, int grid, cudaStream_t stream) {
  return launch_grouped_gemm_tiles<__nv_fp8_e4m3, Epilogue::kScaleAtEnd>(token_tile, w_map, x_map,
                                                                         y_map, params, grid, stream);
}

}  // namespace hpc_ops::gemm
