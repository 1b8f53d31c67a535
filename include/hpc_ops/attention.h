// SPDX-License-Identifier: Apache-2.0
// Paged decode attention (BF16 or FP8 KV), with MTP/speculative query tokens,
// any GQA ratio 1..16, split-KV and a load-balancing plan.
//
// Per request b with L = kv_lens[b] tokens in the cache (this step's included)
// and q_len query tokens (the request's last q_len positions), query i at
// position L - q_len + i attends to cache positions t with
//   t <= L - q_len + i                       (causal among the new tokens)
//   t >  L - q_len + i - sliding_window      (when sliding_window > 0)
// with logits s = softmax_scale * q.k, then s = soft_cap * tanh(s / soft_cap)
// when soft_cap > 0. Output bf16; optional log-sum-exp (natural log) of the
// final logits per (query row, head); requests with L == 0 give zeros and -inf.
//
// Tensors (last dim contiguous everywhere, 16-byte aligned rows):
//   q          bf16  [B * q_len, Hq, D]          D = 128 (fp8 e4m3 with an FP8 cache)
//   k_cache    bf16  [num_pages, page_size, Hkv, D]  any strides on dims 0-2,
//              page and slot strides under 4 GiB (or fp8 e4m3, see FP8 below)
//   v_cache    same dtype and shape as k_cache (NHD, HND or one interleaved allocation)
//   page_table int32 [B, max_pages]             row stride may exceed max_pages
//   kv_lens    int32 [B]                        0 <= L <= max_pages * page_size
//   out        bf16  [B * q_len, Hq, D]
//   lse_out    fp32  [B * q_len, Hq] or empty
// page_size in {1, 16, 32, 64, 128}; Hq = group * Hkv with group 1..16;
// q_len 1..8.
//
// FP8 (k_cache and v_cache float8_e4m3fn): logits are
// softmax_scale * (q * q_scale) . (k * k_scale) and the output
// sum(p * v * v_scale); the scales (float32, on the GPU) follow the scheme:
//   scheme                  q_scale (fp8 q only)  k_scale                       v_scale
//   kPerTensor              [1] or []             [1] or []                     [1] or []
//   kQTokenHeadKvTensor     [B * q_len, Hq]       [1] or []                     [1] or []
//   kQkTokenHeadVHead       [B * q_len, Hq]       [num_pages, page_size, Hkv]   [Hkv]
// (any strides). V enters the tensor cores as exact fp16 and P as fp16. Up to
// 16 query rows per kv head (q_len * group <= 16), K enters as stored (e4m3
// wgmma) and a bf16 q as three e4m3 parts scaled per row (within 2^-12 of
// q); above, K as exact fp16 and a bf16 q rounded to fp16, saturating at
// +-65504. An fp8 q is exact either way.
//
// The plan: KV is cut into tiles of 64 tokens; the tiles of all (request, kv
// head) units are laid end to end and dealt to `num_bins` CTAs in equal
// contiguous runs, so one long request among short ones is spread over every
// SM. plan_decode_attention computes the schedule on the GPU from kv_lens (no
// host synchronization: one captured CUDA graph serves every step);
// decode_attention_schedule_host computes the same schedule on the CPU.
// The schedule also holds per-unit arrival counts that a call leaves at zero:
// calls sharing one plan's workspace must run one after another (one stream).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "hpc_ops/core/tensor.h"

namespace hpc_ops {

// The fixed part of a plan: what it was made for and how big its workspace is.
struct DecodePlanInfo {
  int32_t batch = 0;
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 128;
  int32_t q_len = 1;
  int32_t sliding_window = 0;   // 0: off
  int32_t num_bins = 0;         // attention CTAs (the grid)
  int32_t num_slots = 0;        // partial results the workspace can hold
  int64_t workspace_bytes = 0;  // device workspace (16-byte aligned)
  int64_t schedule_words = 0;   // int32 words of the schedule at the start of the workspace
  DType kv_dtype = DType::kBFloat16;  // the cache dtype the bins were sized for
};

// Chooses the bins for `device` and sizes the workspace. Throws Error for
// unsupported shapes (head_dim, group, q_len) with the reason. device < 0
// gives a one-bin description without touching a GPU (argument checks only).
// kv_dtype (bf16 or fp8 e4m3): the cache the plan will serve (the kernels of
// the two differ in CTAs per SM, hence in bins).
DecodePlanInfo make_decode_plan_info(int32_t batch, int32_t num_q_heads, int32_t num_kv_heads,
                                     int32_t head_dim, int32_t q_len, int32_t sliding_window,
                                     int device, DType kv_dtype = DType::kBFloat16);

// The same description with `num_bins` bins (>= 1) instead of the device's
// choice, its slots, schedule and workspace sized to match: for CPU planning
// (decode_attention_schedule_host) and tuning experiments.
DecodePlanInfo with_decode_bins(const DecodePlanInfo& info, int32_t num_bins);

// Writes the schedule for kv_lens (int32 [batch], on the GPU) into workspace
// (uint8 [info.workspace_bytes] on the same GPU). One small kernel.
void plan_decode_attention(const Tensor& kv_lens, const DecodePlanInfo& info,
                           const Tensor& workspace, cudaStream_t stream);

// The same schedule on the CPU: kv_lens and schedule are host tensors
// (int32 [batch] and int32 [info.schedule_words]). For tests and for engines
// that plan on the host and copy.
void decode_attention_schedule_host(const Tensor& kv_lens, const DecodePlanInfo& info,
                                    const Tensor& schedule);

// The scaling schemes of an FP8 KV cache (see above).
enum class Fp8Scheme : int32_t {
  kPerTensor = 0,
  kQTokenHeadKvTensor = 1,
  kQkTokenHeadVHead = 2,
};

struct DecodeAttentionOptions {
  float softmax_scale = 0.0f;  // 0: 1 / sqrt(head_dim)
  float soft_cap = 0.0f;       // 0: off
  // FP8 caches only (empty Tensors otherwise; q_scale only with an fp8 q).
  Fp8Scheme scheme = Fp8Scheme::kPerTensor;
  Tensor q_scale, k_scale, v_scale;
};

// Runs attention with a workspace that plan_decode_attention filled for the
// same kv_lens. lse_out may be an empty Tensor (data == nullptr).
void decode_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const Tensor& page_table, const Tensor& kv_lens, const DecodePlanInfo& info,
                      const Tensor& workspace, const DecodeAttentionOptions& options,
                      const Tensor& out, const Tensor& lse_out, cudaStream_t stream);

}  // namespace hpc_ops
