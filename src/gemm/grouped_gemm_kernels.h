// SPDX-License-Identifier: Apache-2.0
// Host-side interface of the grouped GEMM kernels: one launcher per input
// type and epilogue (grouped_gemm_{bf16,fp8,fp8_block}.cu, 4 row tiles each, x by TMA
// through *x_map or, when x_map is null, by cp.async; whole row tiles of y
// stored through y_map when params.y_by_tma).
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "gemm/grouped_gemm_params.h"

namespace hpc_ops::gemm {

// Each returns cudaErrorInvalidValue for a row tile it was not built for,
// else the launch error.
cudaError_t launch_grouped_gemm_bf16(int token_tile, const CUtensorMap& w_map,
                                     const CUtensorMap* x_map, const CUtensorMap& y_map,
                                     const GroupedGemmParams& params, int grid,
                                     cudaStream_t stream);
cudaError_t launch_grouped_gemm_fp8(int token_tile, const CUtensorMap& w_map,
                                    const CUtensorMap* x_map, const CUtensorMap& y_map,
                                    const GroupedGemmParams& params, int grid, cudaStream_t stream);
cudaError_t launch_grouped_gemm_fp8_block(int token_tile, const CUtensorMap& w_map,
                                          const CUtensorMap* x_map, const CUtensorMap& y_map,
                                          const GroupedGemmParams& params, int grid,
                                          cudaStream_t stream);

}  // namespace hpc_ops::gemm
