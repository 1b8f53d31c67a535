// SPDX-License-Identifier: Apache-2.0
// Parameters of the row-wise kernel engine that implements RMSNorm, fused
// add + RMSNorm, gated activations and FP8 quantization: each row is loaded
// once into registers, transformed (the prologue), then stored as bf16 or
// quantized to FP8 (the epilogue). Plain data, shared by host and device code,
// passed to the kernel as a __grid_constant__ parameter.
//
// Rows are addressed in two levels, batch e and row m (masked per-expert
// buffers are [E, max_rows, cols]; 2-D inputs have one batch), so every
// tensor carries a batch stride and a row stride, in elements.
#pragma once

#include <cstdint>

#include "common/fast_divmod.h"

namespace hpc_ops::rowwise {

// What is computed from the loaded row(s). Compile-time (changes the code).
enum class Prologue : int32_t {
  kIdentity = 0,     // y = x                       (quantization)
  kRmsNorm = 1,      // y = x * rsqrt(mean(x^2)+eps) * w
  kAddRmsNorm = 2,   // r = bf16(x + residual); store r; y = rms_norm(r)
  kSiluMul = 3,      // y = silu(gate) * up, row = [gate | up]
  kGeluTanhMul = 4,  // y = gelu_tanh(gate) * up
};

// How y is written. Run-time (a uniform branch per row costs nothing measurable
// in a memory-bound kernel, and it keeps the instantiation count 4x lower).
enum class Epilogue : int32_t {
  kStoreBf16 = 0,
  kFp8Static = 1,    // q = y / static_scale[0]
  kFp8PerToken = 2,  // scale = max(amax(row), kMinAmax) / 448
  kFp8PerGroup = 3,  // scale = max(amax(1x128 group), kMinAmax) / 448
  kAmaxOnly = 4,     // atomically max max(amax, kMinAmax) / 448 into scale_out[0]; writes no y
};

struct RowView {
  void* ptr = nullptr;
  int64_t batch_stride = 0;  // elements
  int64_t row_stride = 0;    // elements
};

struct RowwiseParams {
  int64_t num_batches = 1;
  int64_t rows_per_batch = 0;
  int32_t cols = 0;                          // output columns, a multiple of 8
  // Set by the launcher (row counts and work items are below 2^31):
  FastDivmod rows_per_batch_div;             // flat row -> (batch, row)
  FastDivmod items_per_row_div;              // work item -> (row, 1x128 group or chunk)
  int32_t num_tiles = 0;                     // register kernel: row tiles
  const int32_t* batch_row_counts = nullptr; // masked: valid rows of each batch

  RowView in;            // x, or [gate | up] for activations (2*cols wide)
  RowView residual;      // kAddRmsNorm only
  RowView residual_out;  // kAddRmsNorm only
  RowView out;           // bf16 or fp8
  const void* weight = nullptr;  // RMSNorm weight [cols] bf16
  float eps = 0.0f;

  Epilogue epilogue = Epilogue::kStoreBf16;
  const float* static_scale = nullptr;  // kFp8Static
  float* scale_out = nullptr;           // dynamic modes
  int64_t scale_batch_stride = 0;       // elements
  int64_t scale_row_stride = 0;
  int64_t scale_group_stride = 0;

  // Launch geometry of the register kernel, filled from RowwiseConfig.
  int32_t warps_per_row = 1;
  int32_t rows_per_cta = 1;

  // Streaming kernel: slots (pairs of 1x128 groups) per chunk, 1..kStreamUnroll.
  int32_t stream_slots = 1;

  // Geometry of the bulk-copy kernel (bulk_kernel.cuh), filled from BulkConfig.
  int32_t chunk_cols = 0;      // columns per work item (cols for row statistics)
  int32_t stages = 0;          // items in flight per CTA
  int32_t buffer_bytes = 0;    // shared-memory bytes per input buffer (128-aligned)
  int32_t buffers_offset = 0;  // where the stage buffers start in shared memory

  // Norms: the first CTA asks L2 for the weight before the PDL wait (0: off).
  int32_t prefetch_weight = 1;
};

}  // namespace hpc_ops::rowwise
