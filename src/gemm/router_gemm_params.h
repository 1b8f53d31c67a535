// SPDX-License-Identifier: Apache-2.0
// What the host passes to the router GEMM kernels: the operands both take,
// then each kernel's own fields (router_gemm_kernel.cuh, router_gemv_kernel.cuh).
#pragma once

#include <cstdint>

namespace hpc_ops::gemm {

struct RouterOperands {
  int m = 0, n = 0, k = 0;
  const void* w = nullptr;     // bf16 [parts, n, k]
  int64_t w_part_stride_bytes = 0, w_row_stride_bytes = 0;
  void* y = nullptr;           // [m, n], row stride y_row_stride (elements)
  int64_t y_row_stride = 0;
  bool y_fp32 = false;         // else bf16
};

// The tensor-core kernel: x and the weight loads through TMA maps (w above
// serves the L2 prefetch).
struct RouterGemmParams : RouterOperands {
  int channel_tiles = 0;
  int splits = 1, k_tiles_per_split = 0;
  int* counters = nullptr;     // split launches: arrivals per output tile, left at 0
  float* partials = nullptr;   // split launches: one fp32 partial tile per CTA
};

// The CUDA-core kernel for a few tokens.
struct RouterGemvParams : RouterOperands {
  const void* x = nullptr;  // bf16 [m, k], row stride x_row_stride (elements)
  int64_t x_row_stride = 0;
};

}  // namespace hpc_ops::gemm
