// SPDX-License-Identifier: Apache-2.0
// Host-side interface of the router GEMM kernels (router_gemm_kernels.cu)
// and of the weight split (router_weight_split.cu).
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "gemm/router_gemm_config.h"
#include "gemm/router_gemm_params.h"

namespace hpc_ops::gemm {

// cudaErrorInvalidValue for a (parts, token tile) it was not built for, else
// the launch error. grid = the shape's CTAs.
cudaError_t launch_router_gemm(int parts, int token_tile, const CUtensorMap& w_map,
                               const CUtensorMap& x_map, const RouterGemmParams& params, int grid,
                               cudaStream_t stream);

// The CUDA-core kernel for a few tokens; cudaErrorInvalidValue for parts
// other than 2 or 3.
cudaError_t launch_router_gemv(int parts, const RouterGemvParams& params, const RouterGemvShape& shape,
                               cudaStream_t stream);

// w fp32 [n, k] (row stride w_row_stride elements) -> parts bf16 [parts, n, k]
// contiguous: part 0 = bf16(w), part i = bf16(w - parts before it).
cudaError_t launch_split_router_weight(const float* w, int64_t w_row_stride, int64_t n, int64_t k,
                                       int parts, void* out, int num_sms,
                                       cudaStream_t stream);

}  // namespace hpc_ops::gemm
