// SPDX-License-Identifier: Apache-2.0
// What the host passes to the grouped GEMM kernel (grouped_gemm_kernel.cuh),
// and the tile constants both sides agree on.
//
// Every layout is reduced to one addressing rule. Group g owns rows
// row0[g] .. row0[g] + rows[g] - 1 of the output row space (contiguous and
// gathered: the offsets; masked: 0 .. count, in slab g). Row m of group g
//   reads x at    x + g * x_group_stride + src * x_row_stride,
//                 src = row_index[row0 + m] if gathered, else row0 + m;
//   writes y at   y + g * y_group_stride + (row0 + m) * y_row_stride.
// Scales use the same src row and group strides (zero strides broadcast).
#pragma once

#include <cstdint>

namespace hpc_ops::gemm {

// Weight rows (output channels) per tile: two consumer warpgroups of 64.
constexpr int kWeightTile = 128;
// K bytes per pipeline stage: one 128-byte swizzled row per operand row
// (128 fp8 or 64 bf16 elements); also the FP8 block-scale granularity.
constexpr int kKTileBytes = 128;
// The per-group tables live in shared memory.
constexpr int kMaxGroups = 1024;
constexpr int kProducerThreads = 128;
constexpr int kConsumerThreads = 256;
constexpr int kThreads = kProducerThreads + kConsumerThreads;

enum class Layout : int32_t { kContiguous = 0, kMasked = 1, kGathered = 2 };

// How the fp32 accumulators become bf16.
enum class Epilogue : int32_t {
  kNone = 0,         // bf16 inputs: y = acc
  kScaleAtEnd = 1,   // fp8 per-tensor or per-row: y = acc * xs(row) * ws(channel)
  kBlockScaled = 2,  // fp8 1x128 / 128x128: each 128-K partial times xs(row, kb) * ws(nb, kb)
};

// Block-scaled 128-row tiles put the rows (tokens) on wgmma's M side instead,
// 64 per consumer warpgroup, and the 128 channels on N: a thread's fragment
// then spans 2 rows, so each k-block's promotion takes 2 activation scales
// per thread instead of 32 (the smaller tiles keep the weights on M, where a
// few rows still fill the instruction).
constexpr bool tokens_on_m(Epilogue epilogue, int token_tile) {
  return epilogue == Epilogue::kBlockScaled && token_tile == 128;
}

struct GroupedGemmParams {
  Layout layout = Layout::kContiguous;
  int num_groups = 0;
  int n = 0;           // output channels
  int k = 0;           // reduction length (elements)
  int total_rows = 0;  // rows of the output row space (contiguous, gathered)
  int max_rows = 0;    // masked: rows per slab
  int src_rows = 0;    // gathered: rows of x (indices outside [0, src_rows) read zeros)

  const int* cu_seqlens = nullptr;      // contiguous, gathered: [G + 1]
  const int* rows_per_group = nullptr;  // masked: [G]
  const int* row_index = nullptr;       // gathered: [total_rows]

  const void* x = nullptr;
  int64_t x_row_stride = 0, x_group_stride = 0;  // elements
  void* y = nullptr;                             // bf16
  int64_t y_row_stride = 0, y_group_stride = 0;
  // Whole row tiles leave by TMA stores through the y map (the kernel's
  // y_map argument: [slabs][rows][N], boxes of 64 channels x the row tile, or
  // x 64 rows where tokens_on_m).
  bool y_by_tma = false;

  // Scales (fp32, dequantization multipliers), element strides.
  const float* x_scale = nullptr;
  int64_t xs_group_stride = 0, xs_row_stride = 0, xs_k_stride = 0;
  const float* w_scale = nullptr;
  int64_t ws_group_stride = 0, ws_n_stride = 0, ws_k_stride = 0;
};

}  // namespace hpc_ops::gemm
