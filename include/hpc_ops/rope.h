// SPDX-License-Identifier: Apache-2.0
// RoPE + optional per-head QK RMSNorm + paged KV-cache write (BF16 or FP8),
// one kernel: rotate q and k, write k and v into the cache, write q out.
//
// Rows are this step's tokens of B requests laid end to end: request b owns
// rows cu_seqlens[b] .. cu_seqlens[b+1]-1 (n_b rows); its row i goes to cache
// position p = kv_lens[b] - n_b + i and is rotated by positions[row] when
// positions is given, else by p. Prefill chunks and decode tokens mix freely.
//
// Tensors (last dim contiguous and 16-byte aligned rows everywhere):
//   q               bf16  [rows, Hq, D]     D in {64, 128, 256}; any strides
//   k, v            bf16  [rows, Hkv, D]    any strides (views of a packed qkv)
//   cos_sin_cache   fp32 or bf16 [max_position, rotary_dim]: cos of the
//                   rotary_dim/2 frequencies, then their sin
//   k_cache,v_cache bf16 or fp8 e4m3 [num_pages, page_size, Hkv, D], any strides
//   page_table      int32 [B, max_pages]    row stride may exceed max_pages
//   kv_lens         int32 [B];  cu_seqlens int32 [B + 1] (cu_seqlens[B] <= rows)
//   positions       int32 or int64 [rows], or empty
//   q_out           bf16, or fp8 e4m3 (FP8 caches only), [rows, Hq, D], any strides
// Rotation: "neox" pairs (i, i + rotary_dim/2), "interleaved" pairs (2i, 2i+1)
// with frequency i; dims past rotary_dim pass through. QK norm (both weights
// or neither; [D] bf16 or fp32): x * rsqrt(mean(x^2) + eps) * w per head,
// before or after the rotation.
//
// FP8 caches follow decode attention's schemes (attention.h), scales float32
// dequantization multipliers:
//   scheme                  k_scale                              v_scale      q_scale (fp8 q_out)
//   kPerTensor              [1] in: k stored as k / k_scale      [1] in       [1] in
//   kQTokenHeadKvTensor     [1] in                               [1] in       [rows, Hq] out
//   kQkTokenHeadVHead       [num_pages, page_size, Hkv] out      [Hkv] in     [rows, Hq] out
// Dynamic scales are max(amax, 1e-10) / 448 per (token, head).
//
// Rows past cu_seqlens[B] are padding: q_out zero (dynamic scale as for a
// zero row), no cache write. A negative page-table entry (padded requests in
// CUDA graphs) or a cache position outside [0, max_pages * page_size) skips
// the row's cache write; a rotation position outside [0, max_position) gives
// NaN in the row's q_out and skips its cache write. Other cache slots are
// never touched.
//
// Two kernels give the same bits: a per-row one for decode steps and small
// chunks, a streaming one (shared-memory stages filled by the copy engine)
// for prefill chunks; the op picks by rows and scales (src/rope/rope_config.h).
// HPC_OPS_ROPE_KERNEL=per_row or stream forces one, for tests and comparisons.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "hpc_ops/attention.h"
#include "hpc_ops/core/tensor.h"

namespace hpc_ops {

enum class RopeStyle : int32_t {
  kNeox = 0,
  kInterleaved = 1,
};

enum class QkNormOrder : int32_t {
  kNormThenRope = 0,
  kRopeThenNorm = 1,
};

struct RopeKvWriteOptions {
  int32_t rotary_dim = 0;  // 0: head_dim
  RopeStyle style = RopeStyle::kNeox;
  Tensor positions;                     // empty: cache positions
  Tensor q_norm_weight, k_norm_weight;  // empty: no QK norm
  QkNormOrder norm_order = QkNormOrder::kNormThenRope;
  float eps = 1e-6f;
  // FP8 caches / FP8 q_out only (see the table above).
  Fp8Scheme kv_scheme = Fp8Scheme::kPerTensor;
  Tensor k_scale, v_scale, q_scale;
};

void rope_qk_norm_kv_write(const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& cos_sin_cache, const Tensor& k_cache,
                           const Tensor& v_cache, const Tensor& page_table, const Tensor& kv_lens,
                           const Tensor& cu_seqlens, const RopeKvWriteOptions& options,
                           const Tensor& q_out, cudaStream_t stream);

}  // namespace hpc_ops
