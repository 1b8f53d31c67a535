// SPDX-License-Identifier: Apache-2.0
// Grouped GEMM for MoE experts: for every group (expert) g,
//   y[rows of g] = (x[rows of g] @ w[g]^T) * scales,   output bfloat16.
//
// Tensors (last dim contiguous, rows 16-byte aligned):
//   w   fp8 e4m3 or bf16 [G, N, K], K-major; strides multiples of 16 bytes
//   x   same dtype as w; by layout:
//     kContiguous  x [rows, K], group g = rows cu_seqlens[g] .. cu_seqlens[g+1]-1
//                  (cu_seqlens, int32 [G + 1], non-decreasing, empty groups allowed,
//                  no padding)
//     kMasked      x [G, max_rows, K], group g = its first rows_per_group[g] rows
//                  (int32 [G]; counts are read on the device, so one CUDA graph
//                  serves every step; rows past the count are not read for
//                  their values and their y rows are not written)
//     kGathered    x [src_rows, K]; output row i reads x[row_index[i]] (int32
//                  [rows]); groups over output rows as in kContiguous. An index
//                  outside [0, src_rows) reads a zero row.
//   y   bf16, [rows, N] (kContiguous, kGathered) or [G, max_rows, N] (kMasked);
//       any row/group strides. Rows outside every group are not written.
// Sizes: K a multiple of 16 (128 for block scales), N a multiple of 16 (128
// for block scales); 1 <= G <= 1024. Tails of K and N inside a tile are handled.
//
// Scaling (fp32 dequantization multipliers; "x rows" are the rows of x as
// stored, so gathered scales follow the source row):
//   kNone       bf16 x and w, no scales
//   kPerTensor  fp8; x_scale [1] or [G]; w_scale [1] or [G]
//   kPerRow     fp8; x_scale one per x row: [x rows] or [x rows, 1]
//               ([G, max_rows] or [G, max_rows, 1] when masked); w_scale [G, N]
//   kBlock      fp8, DeepSeek-V3 style: x_scale per 1x128 of K: [x rows, K/128]
//               ([G, max_rows, K/128] when masked); w_scale per 128x128 block:
//               [G, N/128, K/128]. Any strides (the per-group quantization ops'
//               column-major layout works as is).
// FP8 partial sums are promoted to fp32 every 128 of K.
//
// One launch, no workspace, no host synchronization. expected_rows_per_group
// (0: rows / G, or max_rows when masked) picks the row tile; it only affects
// speed.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "hpc_ops/core/tensor.h"

namespace hpc_ops {

enum class GroupedLayout : int32_t {
  kContiguous = 0,
  kMasked = 1,
  kGathered = 2,
};

enum class GemmScaling : int32_t {
  kNone = 0,
  kPerTensor = 1,
  kPerRow = 2,
  kBlock = 3,
};

const char* grouped_layout_name(GroupedLayout layout);
const char* gemm_scaling_name(GemmScaling scaling);

struct GroupedGemmOptions {
  GroupedLayout layout = GroupedLayout::kContiguous;
  Tensor cu_seqlens;      // kContiguous, kGathered: int32 [G + 1]
  Tensor rows_per_group;  // kMasked: int32 [G]
  Tensor row_index;       // kGathered: int32 [rows]
  GemmScaling scaling = GemmScaling::kNone;
  Tensor x_scale, w_scale;
  int32_t expected_rows_per_group = 0;
};

void grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& y,
                  const GroupedGemmOptions& options, cudaStream_t stream);

}  // namespace hpc_ops
