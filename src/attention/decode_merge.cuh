// SPDX-License-Identifier: Apache-2.0
// Combining softmax-weighted partial outputs (online maximum of their log2
// LSEs) and writing the result: the attention kernel's warps' states at the
// end of a piece, the steps of a cut unit's merge tree (MergeWalk,
// decode_plan.h), and the merge kernel. A row's partials are combined by one
// warp, lane l owning columns 4l .. 4l + 3.
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

  // The combined log2 LSE (-inf when nothing was visible).
  __device__ __forceinline__ float lse2() const { return den > 0.0f ? m + log2f(den) : -INFINITY; }

  // The combined output columns, times `scale` (zeros when nothing was visible).
  __device__ __forceinline__ float4 output(float scale) const {
    const float inv = den > 0.0f ? scale / den : 0.0f;
    return make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
  }
};

// Combines kN states at once, given as load(i, m, den, acc): the maximum
// first, then the weighted sums, so the kN exp2s are independent. (The
// attention kernel's end-of-piece combine through kN chained add() calls was
// 0.2 us slower per piece: 213 vs 207 us on 32 x 128 + 32 x 4K.)
template <int kN, class Load>
__device__ __forceinline__ MergedRow combine_states(Load load) {
  float m[kN], den[kN];
  float4 acc[kN];
  MergedRow r;
#pragma unroll
  for (int i = 0; i < kN; ++i) {
    load(i, m[i], den[i], acc[i]);
    r.m = fmaxf(r.m, m[i]);
  }
  const float m_use = r.m == -INFINITY ? 0.0f : r.m;  // nothing visible: weights 0
#pragma unroll
  for (int i = 0; i < kN; ++i) {
    const float f = exp2f(m[i] - m_use);
    r.den += f * den[i];
    r.acc.x += f * acc[i].x;
    r.acc.y += f * acc[i].y;
    r.acc.z += f * acc[i].z;
    r.acc.w += f * acc[i].w;
  }
  return r;
}

// Where a merge step's partials lie: partial k < count in slot
// first_slot + k * stride.
struct PartialRun {
  int64_t first_slot;
  int32_t count, stride;
};

// Rows row[0 .. kRows) (those < p.rows) of the partials of `run`, combined.
// The partials were written by other CTAs of the grid: loads bypass L1
// (ld.global.cg). Each round trip loads kMergeUnroll partials of all kRows
// rows (two rows at a time: a 1 x 1K call's last CTA combines 8 partials of
// 2 rows per warp in one round trip instead of two).
template <int kRows>
__device__ __forceinline__ void merge_partials(const DecodeParams& p, const PartialRun& run,
                                               const int (&row)[kRows], int lane, MergedRow (&r)[kRows]) {
  for (int32_t k0 = 0; k0 < run.count; k0 += kMergeUnroll) {
    float lse[kRows][kMergeUnroll];
    float4 v[kRows][kMergeUnroll];
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
#pragma unroll
      for (int j = 0; j < kMergeUnroll; ++j) {
        const bool valid = k0 + j < run.count && row[i] < p.rows;
        const int64_t at = (run.first_slot + int64_t{k0 + j} * run.stride) * p.rows + row[i];
        lse[i][j] = valid ? __ldcg(p.partial_lse + at) : -INFINITY;
        v[i][j] = valid ? __ldcg(reinterpret_cast<const float4*>(p.partial_out + at * kDecodeHeadDim) + lane)
                        : make_float4(0.f, 0.f, 0.f, 0.f);
      }
    }
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const MergedRow chunk = combine_states<kMergeUnroll>([&](int j, float& m, float& den, float4& acc) {
        m = lse[i][j];  // -inf past the run: weight 0
        den = 1.0f;
        acc = v[i][j];
      });
      r[i].add(chunk.m, chunk.den, chunk.acc);
    }
  }
}

// Writes columns col .. col + 3 of output row `row` of unit u, times `scale`,
// in bf16, and (from the col == 0 thread, if asked) the natural-log LSE.
__device__ __forceinline__ void store_merged_row(const DecodeParams& p, int u, int row, int col,
                                                 const MergedRow& r, float scale = 1.0f) {
  const int b = u / p.kv_heads, h = u - b * p.kv_heads;
  const int qi = row / p.group, hi = row - qi * p.group;
  const int64_t q_row = int64_t{b} * p.q_len + qi, head = int64_t{h} * p.group + hi;
  const float4 o = r.output(scale);
  __nv_bfloat16* dst = p.out + q_row * p.out_row_stride + head * p.out_head_stride + col;
  *reinterpret_cast<uint2*>(dst) = make_uint2(device::pack_bf16x2(o.x, o.y), device::pack_bf16x2(o.z, o.w));
  if (p.lse != nullptr && col == 0) {
    p.lse[q_row * p.lse_row_stride + head * p.lse_head_stride] = r.lse2() * 0.6931471805599453f;
  }
}

// Writes columns 4 quad .. 4 quad + 3 of row `row` of partial slot `slot`
// (the output times `scale`, fp32) and, from the quad == 0 thread, its log2
// LSE.
__device__ __forceinline__ void store_partial_row(const DecodeParams& p, int64_t slot, int row, int quad,
                                                  const MergedRow& r, float scale = 1.0f) {
  const int64_t at = slot * p.rows + row;
  reinterpret_cast<float4*>(p.partial_out + at * kDecodeHeadDim)[quad] = r.output(scale);
  if (quad == 0) p.partial_lse[at] = r.lse2();
}

}  // namespace hpc_ops::attention
