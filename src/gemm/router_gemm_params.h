// SPDX-License-Identifier: Apache-2.0
// What the host passes to the router GEMM kernel (router_gemm_kernel.cuh).
#pragma once

#include <cstdint>

namespace hpc_ops::gemm {

struct RouterGemmParams {
  int m = 0, n = 0, k = 0;
  int channel_tiles = 0;
  int splits = 1, k_tiles_per_split = 0;
  const void* w = nullptr;     // bf16 [parts, n, k]: the L2 prefetch (the loads use the TMA map)
  int64_t w_part_stride_bytes = 0, w_row_stride_bytes = 0;
  void* y = nullptr;           // [m, n], row stride y_row_stride (elements)
  int64_t y_row_stride = 0;
  bool y_fp32 = false;         // else bf16
  int* counters = nullptr;     // split launches: arrivals per output tile, left at 0
  float* partials = nullptr;   // split launches: one fp32 partial tile per CTA
};

// The CUDA-core kernel for a few tokens (router_gemv_kernel.cuh).
struct RouterGemvParams {
  int m = 0, n = 0, k = 0;
  const void* x = nullptr;  // bf16 [m, k], row stride x_row_stride (elements)
  int64_t x_row_stride = 0;
  const void* w = nullptr;  // bf16 [parts, n, k]
  int64_t w_part_stride_bytes = 0, w_row_stride_bytes = 0;
  void* y = nullptr;        // [m, n], row stride y_row_stride (elements)
  int64_t y_row_stride = 0;
  bool y_fp32 = false;      // else bf16
};

}  // namespace hpc_ops::gemm
