// SPDX-License-Identifier: Apache-2.0
// Parameters of the RoPE + QK-norm + KV-write kernels (the per-row
// rope_kernel.cuh and the streaming rope_stream_kernel.cuh): plain data filled
// by rope.cc, passed as a __grid_constant__ parameter. Strides in elements.
#pragma once

#include <cstdint>

namespace hpc_ops::rope {

struct RopeParams {
  int32_t rows = 0;
  int32_t batch = 0;
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t heads_per_cta = 0;  // per-row kernel: of the Hq + 2 Hkv heads of a row (blockIdx.y chunks)

  // Streaming kernel (rope_stream_kernel.cuh): its shared-memory stages.
  int32_t stages = 0;
  int32_t stage_bytes = 0;     // heads (Hq + 2 Hkv) x D bf16, then cos | sin
  int32_t cos_sin_offset = 0;  // bytes into a stage
  int32_t cos_sin_bytes = 0;   // rotary_dim x (4 or 2)

  // Inputs [rows, heads, D] (bf16).
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t q_strides[2] = {};  // row, head
  int64_t k_strides[2] = {};
  int64_t v_strides[2] = {};

  // Rotation.
  const void* cos_sin = nullptr;  // [max_position, rotary_dim], fp32 or bf16
  bool cos_sin_f32 = true;
  int64_t cos_sin_stride = 0;
  int32_t max_position = 0;
  int32_t rotary_dim = 0;
  bool interleaved = false;
  const void* positions = nullptr;  // nullptr: cache positions
  bool positions_i64 = false;

  // QK norm (both weights or neither).
  const void* q_norm_weight = nullptr;
  const void* k_norm_weight = nullptr;
  bool norm_weight_f32 = false;
  bool rope_then_norm = false;
  float eps = 1e-6f;

  // Where rows go.
  const int32_t* page_table = nullptr;
  int64_t page_table_stride = 0;
  int32_t max_pages = 0;
  int32_t num_pages = 0;
  int32_t page_size = 1;
  const int32_t* kv_lens = nullptr;
  const int32_t* cu_seqlens = nullptr;

  // Outputs.
  void* k_cache = nullptr;  // bf16, or e4m3 when kv_fp8
  void* v_cache = nullptr;
  int64_t k_cache_strides[3] = {};  // page, slot, head
  int64_t v_cache_strides[3] = {};
  bool kv_fp8 = false;
  const float* k_scale = nullptr;   // per-tensor input (nullptr when k_scale_out is used)
  float* k_scale_out = nullptr;     // per (page, slot, kv head) output
  int64_t k_scale_strides[3] = {};
  const float* v_scale = nullptr;   // input; per-tensor (stride 0) or per kv head
  int64_t v_scale_stride = 0;
  void* q_out = nullptr;            // bf16, or e4m3 when q_fp8
  int64_t q_out_strides[2] = {};
  bool q_fp8 = false;
  const float* q_scale = nullptr;   // static per-tensor input
  float* q_scale_out = nullptr;     // per (row, q head) output
  int64_t q_scale_strides[2] = {};
};

}  // namespace hpc_ops::rope
