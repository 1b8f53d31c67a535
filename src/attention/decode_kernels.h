// SPDX-License-Identifier: Apache-2.0
// Host-side interface of the decode-attention kernels: the parameter block and
// the launchers (decode_plan_kernel.cu, decode_attention_kernels.cu).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "attention/decode_plan.h"
#include "common/check.h"
#include "hpc_ops/attention.h"

namespace hpc_ops::attention {

// Where (page, slot, kv head) of a paged tensor (K, V, per-token k scales)
// lies, in bytes from its base. Page and slot strides are under 2^32 (checked
// on the host, paged_strides in decode_attention.cc): a copy address is two
// 32 x 32 -> 64-bit multiply-adds (64-bit stride products took ~25
// instructions per row and copy).
struct PagedStrides {
  uint32_t page = 0, slot = 0;
  int64_t head = 0;
};

// The KV pages by TMA (kv_tma, FP8 caches): 4-D maps over the K and V caches,
// dim 0 the head dim's 128 bytes, dims 1-3 (kv head, slot, page) in the order
// of their strides; a copy is a box of box_slots slots of one (page, head).
struct KvTmaMaps {
  CUtensorMap k, v;
  int8_t head_dim, slot_dim;  // which of dims 1-3 holds each (the page: the third)
  int32_t box_slots = 0;                // min(page_size, kDecodeTileTokens)
};

struct DecodeParams {
  KvTmaMaps tma;       // used when kv_tma
  bool kv_tma = false;
  const void* q = nullptr;  // bf16, or e4m3 when q_fp8
  bool q_fp8 = false;
  int64_t q_row_stride = 0, q_head_stride = 0;  // elements
  const void* k = nullptr;  // bf16, or e4m3 when kv_fp8
  const void* v = nullptr;
  bool kv_fp8 = false;
  PagedStrides k_bytes, v_bytes;
  // FP8 dequantization scales (nullptr: 1). A per-tensor scale has zero strides.
  const float* q_scale = nullptr;
  int64_t q_scale_strides[2] = {};  // q row, q head
  const float* k_scale = nullptr;
  bool k_scale_per_token = false;   // else k_scale[0]
  PagedStrides k_scale_bytes;       // per-token k scales
  const float* v_scale = nullptr;
  int64_t v_scale_stride = 0;       // per kv head
  const int32_t* page_table = nullptr;
  int64_t page_table_stride = 0;
  int32_t max_pages = 0;
  int32_t page_shift = 0;  // log2(page_size)
  const int32_t* kv_lens = nullptr;
  __nv_bfloat16* out = nullptr;
  int64_t out_row_stride = 0, out_head_stride = 0;
  float* lse = nullptr;  // may be null
  int64_t lse_row_stride = 0, lse_head_stride = 0;

  int32_t batch = 0, kv_heads = 0, group = 0, q_len = 0, rows = 0;  // rows = q_len * group
  int32_t sliding_window = 0;
  float softmax_scale = 0.0f;
  float soft_cap = 0.0f;  // 0: off

  int32_t* schedule = nullptr;  // read; the attention kernel also counts arrivals in it
  float* partial_out = nullptr;  // [slots][rows][128]
  float* partial_lse = nullptr;  // [slots][rows], log2 domain
  int32_t num_bins = 0;
};

// workspace: uint8, on kv_lens's device, at least info.workspace_bytes, 256-byte aligned.
void check_workspace(const detail::Checker& check, const Tensor& workspace,
                     const DecodePlanInfo& info, const Tensor& kv_lens);

cudaError_t launch_plan_kernel(const int32_t* kv_lens, const DecodePlanInfo& info, int32_t* schedule,
                               cudaStream_t stream);

void launch_decode_attention(const DecodeParams& p, cudaStream_t stream);

// Whether the kernel serving `rows` query rows per kv head keeps the KV
// tokens on the mma's M side (an FP8 cache, up to 16 rows).
constexpr bool decode_tokens_on_m(int rows, bool kv_fp8) { return kv_fp8 && rows <= 16; }

}  // namespace hpc_ops::attention
