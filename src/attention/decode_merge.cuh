// SPDX-License-Identifier: Apache-2.0
// Combining the partial results of a unit cut into pieces, one output row per
// warp (lane l owns columns 4l .. 4l + 3): shared by the attention kernel
// (its last CTA of a unit with few pieces) and the merge kernel.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "attention/decode_kernels.h"
#include "common/mma_sm80.cuh"

namespace hpc_ops::attention {

// Pieces a warp keeps in flight: the loop over pieces is unrolled this far,
// one float4 per lane per piece (4 KB of partials per warp per round trip).
constexpr int kMergeUnroll = 8;

// A row's combination so far: running max m of the pieces' log2 LSEs, the sum
// of 2^(lse - m) and the sum of the pieces' outputs weighted alike.
struct MergedRow {
  float m = -INFINITY, den = 0.0f;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);

  // Adds a piece (or another MergedRow's sums, given its m and den) of weight 2^lse.
  __device__ __forceinline__ void add(float lse, float weight_den, float4 v) {
    const float m_new = fmaxf(m, lse);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // nothing seen yet: weights 0
    const float a = exp2f(m - m_use), f = exp2f(lse - m_use);
    m = m_new;
    den = den * a + f * weight_den;
    acc.x = acc.x * a + f * v.x;
    acc.y = acc.y * a + f * v.y;
    acc.z = acc.z * a + f * v.z;
    acc.w = acc.w * a + f * v.w;
  }
};

// Row `row` of pieces k0, k0 + step, ... < pieces of the unit whose first
// partial slot is slot0. The partials were written by other CTAs of the
// running or the previous grid: loads bypass L1 (ld.global.cg).
__device__ __forceinline__ MergedRow merge_row_pieces(const DecodeParams& p, int32_t slot0, int row,
                                                      int k0, int pieces, int step, int lane) {
  MergedRow r;
  const int64_t first = int64_t{slot0} * p.rows + row;
#pragma unroll kMergeUnroll
  for (int k = k0; k < pieces; k += step) {
    const int64_t at = first + int64_t{k} * p.rows;
    const float lse = __ldcg(p.partial_lse + at);
    const float4 v = __ldcg(reinterpret_cast<const float4*>(p.partial_out + at * kDecodeHeadDim) + lane);
    r.add(lse, 1.0f, v);
  }
  return r;
}

// Writes row `row` of unit u (bf16 output and, if asked, the natural-log LSE).
__device__ __forceinline__ void store_merged_row(const DecodeParams& p, int u, int row, const MergedRow& r,
                                                 int lane) {
  const int b = u / p.kv_heads, h = u - b * p.kv_heads;
  const int qi = row / p.group, hi = row - qi * p.group;
  const int64_t q_row = int64_t{b} * p.q_len + qi, head = int64_t{h} * p.group + hi;
  const float inv = r.den > 0.0f ? 1.0f / r.den : 0.0f;
  __nv_bfloat16* dst = p.out + q_row * p.out_row_stride + head * p.out_head_stride + lane * 4;
  *reinterpret_cast<uint2*>(dst) = make_uint2(device::pack_bf16x2(r.acc.x * inv, r.acc.y * inv),
                                              device::pack_bf16x2(r.acc.z * inv, r.acc.w * inv));
  if (p.lse != nullptr && lane == 0) {
    p.lse[q_row * p.lse_row_stride + head * p.lse_head_stride] =
        r.den > 0.0f ? (r.m + log2f(r.den)) * 0.6931471805599453f : -INFINITY;
  }
}

}  // namespace hpc_ops::attention
