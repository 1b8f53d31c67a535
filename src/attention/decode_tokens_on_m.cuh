// SPDX-License-Identifier: Apache-2.0
// The decode-attention math for an FP8 cache with up to 16 query rows, KV
// tokens on the mma's M side ("swap AB"): the CTA is one warpgroup and a
// 64-token tile is one wgmma M block.
//
//   S^T = K Q^T   wgmma m64nNk32, e4m3 x e4m3 straight from shared memory:
//                 K needs no conversion (mma.sync with e4m3 is emulated on
//                 sm_90 by converting to fp16, which made the K side of the
//                 older kernel as expensive as the V side). A bf16 q enters
//                 as three e4m3 parts per row, q = s (hi + mid / 16 + lo / 256)
//                 with s the row's dynamic FP8 scale (amax / 448), each part rounding 16x the residual of
//                 the ones before: within 2^-12 of q, as close as the fp16
//                 rounding of the older kernel (two parts, within 2^-8, put
//                 the LSE of rows with logits near 40 off by 0.07). The
//                 parts' rows are the N columns, N = 3 x 8 x kQBlocks, and
//                 S = S_hi + S_mid / 16 + S_lo / 256. An fp8 q is its own hi
//                 part (mid, lo zeros: exact).
//   softmax       per warp over its 16 tokens (thread: tokens g, g + 8 of
//                 the warp's 16, query rows 2t, 2t + 1 of each block of 8):
//                 no padded rows when the group is 8 or 16.
//   O^T += V^T P^T  mma.sync m16n8k16 in fp16: V^T fragments built from
//                 16-byte loads, byte permutes and e4m3 -> fp16 conversions
//                 (the head dim on M: m-tile mt row g is dim 16g + 2mt, row
//                 g + 8 dim 16g + 2mt + 1), P^T fragments from the S^T
//                 accumulators by movmatrix (an 8x8 transpose in registers).
//                 Half the mma of the rows-on-M kernel at group 8, whose M
//                 side was half padding.
#pragma once

#include <cuda_fp8.h>

#include <cmath>
#include <cstdint>

#include <cute/arch/mma_sm90_gmma.hpp>

#include "attention/decode_geometry.cuh"
#include "attention/decode_kv_formats.cuh"
#include "common/fp8_scale.cuh"
#include "common/mma_sm80.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "common/wgmma.cuh"

namespace hpc_ops::attention {

template <class Kv>
struct TokensOnM {
  static constexpr int kQBlocks = Kv::kQBlocks;  // blocks of 8 query rows
  static constexpr int kHiRows = 8 * kQBlocks;
  static constexpr int kN = Kv::kQParts * kHiRows;  // wgmma N: hi, mid, lo rows
  static constexpr float kPartStep = 16.0f;         // each part rounds 16 x the residual
  static constexpr int kDimTiles = kDecodeHeadDim / 16;  // O^T m-tiles (8)
  using G = DecodeGeometry<1, Kv>;
  static_assert(G::kThreads == 128 && G::kTokensPerWarp == 16, "one warpgroup, 16 tokens per warp");

  int warp, lane;
  RowLimits cols[kQBlocks][2];  // query rows 8b + 2t + j
  float o[kDimTiles][kQBlocks][4];
  float m_run[kQBlocks][2], l_run[kQBlocks][2];
  VisibleRange visible;  // the positions every query row of the unit sees

  __device__ TokensOnM(int warp_, int lane_) : warp(warp_), lane(lane_) {}

  __device__ void stage_q(const DecodeParams&, uint8_t*, int, int) const {}

  // Splits the unit's query rows into e4m3 parts in shared memory (8
  // threads per row, 16 dims each), then reads the rows' limits.
  __device__ void begin(const DecodeParams& p, uint8_t* smem, int b, int h, int len) {
    float* row_scale = reinterpret_cast<float*>(smem + G::kExtraOffset);
    if (threadIdx.x < kHiRows * 8) {  // whole warps
      const int row = threadIdx.x / 8, chunk = threadIdx.x % 8;
      const bool ok = row < p.rows;
      int64_t at = 0;
      if (ok) at = q_row_offset(p, b, h, row) + chunk * 16;
      uint4 codes[Kv::kQParts];
#pragma unroll
      for (int k = 0; k < Kv::kQParts; ++k) codes[k] = make_uint4(0, 0, 0, 0);
      float scale = 1.0f;
      if (p.q_fp8) {
        if (ok) codes[0] = *reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.q) + at);
      } else {
        float x[2][8] = {};
        if (ok) {
          const __nv_bfloat16* src = static_cast<const __nv_bfloat16*>(p.q) + at;
          device::unpack(device::load_packed(src), x[0]);
          device::unpack(device::load_packed(src + 8), x[1]);
        }
        float y[16];
#pragma unroll
        for (int e = 0; e < 16; ++e) y[e] = x[e / 8][e % 8];
        float amax = 0.0f;
#pragma unroll
        for (int e = 0; e < 16; ++e) amax = device::AbsMaxOp{}(amax, fabsf(y[e]));
        amax = device::warp_allreduce<8>(amax, device::AbsMaxOp{});  // the row's 8 threads
        const device::Fp8Divisor d = device::fp8_divisor(device::dynamic_scale(amax));
        scale = d.scale;
#pragma unroll
        for (int e = 0; e < 16; ++e) y[e] *= d.inv;
#pragma unroll
        for (int k = 0; k < Kv::kQParts; ++k) {
          uint32_t* cw = reinterpret_cast<uint32_t*>(&codes[k]);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            cw[i] = device::float2_to_e4m3x2(y[4 * i], y[4 * i + 1]) |
                    (device::float2_to_e4m3x2(y[4 * i + 2], y[4 * i + 3]) << 16);
#pragma unroll
            for (int e = 0; e < 4; ++e) {  // the residual, scaled for the next part
              y[4 * i + e] = (y[4 * i + e] - device::e4m3_to_float(cw[i] >> (8 * e))) * kPartStep;
            }
          }
        }
      }
#pragma unroll
      for (int k = 0; k < Kv::kQParts; ++k) {
        *reinterpret_cast<uint4*>(smem + device::swizzle_128b_offset(k * kHiRows + row, chunk)) = codes[k];
      }
      if (chunk == 0) row_scale[row] = scale;
    }
    __syncthreads();
    const int t = lane % 4;
    const float scale = logit_scale(p);
    visible = visible_range(p, len);
#pragma unroll
    for (int qb = 0; qb < kQBlocks; ++qb) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int row = 8 * qb + 2 * t + j;
        cols[qb][j] = row_limits(p, b, h, len, row, scale * row_scale[row]);
        m_run[qb][j] = -INFINITY;
        l_run[qb][j] = 0.0f;
      }
    }
#pragma unroll
    for (int mt = 0; mt < kDimTiles; ++mt) {
#pragma unroll
      for (int qb = 0; qb < kQBlocks; ++qb) o[mt][qb][0] = o[mt][qb][1] = o[mt][qb][2] = o[mt][qb][3] = 0.0f;
    }
  }

  // One 64-token tile; `refill` (the next tiles' copies) runs while the
  // tensor cores compute S^T.
  template <class Refill>
  __device__ void tile(const DecodeParams& p, const uint8_t* q_smem, const uint8_t* stage,
                       const float* k_scales, int tile, int len, bool, Refill&& refill) {
    const int g = lane / 4;

    // ---- S^T = K Q^T: the warpgroup's 64 tokens x (hi, lo) query rows ------
    float acc[kN / 2];
#pragma unroll
    for (int i = 0; i < kN / 2; ++i) cute::warpgroup_fence_operand(acc[i]);
    cute::warpgroup_arrive();
    // A k-step is 32 bytes further along the rows: 2 in the descriptors'
    // 16-byte address field (built once per tile, not per step).
    const uint64_t k_desc0 = device::sw128_kmajor_desc(stage, 0);
    const uint64_t q_desc0 = device::sw128_kmajor_desc(q_smem, 0);
#pragma unroll
    for (int ks = 0; ks < kDecodeHeadDim / 32; ++ks) {
      const uint64_t k_desc = k_desc0 + 2 * ks;
      const uint64_t q_desc = q_desc0 + 2 * ks;
      if constexpr (kN == 24) {
        device::wgmma_e4m3_m64n24k32(k_desc, q_desc, acc, ks > 0);
      } else {
        device::wgmma_e4m3_m64n48k32(k_desc, q_desc, acc, ks > 0);
      }
    }
    cute::warpgroup_commit_batch();
    // Warp 0's TMA issue used to sit before the wgmma, and the other three
    // warps waited for it at the warpgroup's arrive: 19% of the stall samples
    // at 16 rows (ncu, 64 x 4K 64/4).
    refill();
    cute::warpgroup_wait<0>();
#pragma unroll
    for (int i = 0; i < kN / 2; ++i) cute::warpgroup_fence_operand(acc[i]);

    // s[qb][2i + j]: token 16 warp + g + 8i, query row 8qb + 2t + j.
    float s[kQBlocks][4];
    const int tok = 16 * warp + g;
#pragma unroll
    for (int qb = 0; qb < kQBlocks; ++qb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float hi = acc[4 * qb + e], mid = acc[4 * (qb + kQBlocks) + e], lo = acc[4 * (qb + 2 * kQBlocks) + e];
        s[qb][e] = fmaf(fmaf(lo, 1.0f / kPartStep, mid), 1.0f / kPartStep, hi) * cols[qb][e & 1].mult;
      }
    }
    if (p.k_scale_per_token) {  // one uniform branch per tile
#pragma unroll
      for (int qb = 0; qb < kQBlocks; ++qb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[qb][e] *= k_scales[tok + 8 * (e / 2)];
      }
    }
    if (p.soft_cap > 0.0f) {  // one uniform branch per tile
      const float cap_log2 = p.soft_cap * kLog2e;
#pragma unroll
      for (int qb = 0; qb < kQBlocks; ++qb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[qb][e] = cap_log2 * tanhf(s[qb][e]);
      }
    }
    // Tokens that some row must not see: past len, past the row's causal
    // limit, before its window. A tile wholly inside every row's range (all
    // but the last tile of a q_len 1 request without a window) skips the
    // per-element compares: one uniform branch.
    if (!visible.holds_tile(tile)) {
      const int pos0 = tile * kDecodeTileTokens + tok;
#pragma unroll
      for (int qb = 0; qb < kQBlocks; ++qb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const RowLimits& c = cols[qb][e & 1];
          const int pos = pos0 + 8 * (e / 2);
          const bool ok = c.sees(pos, len);
          s[qb][e] = ok ? s[qb][e] : -INFINITY;
        }
      }
    }
    // Online softmax with a lazy maximum: a row's running maximum moves only
    // when the tile's exceeds it by more than kLazyRescaleSlack (log2 units,
    // decode_geometry.cuh), so probabilities stay below 2^8 (fp16 holds them)
    // and O is rescaled only in the tiles where some row of the warp moved:
    // after the first tile, rarely. The rescale was 64 of ~560 instructions per warp
    // and tile at 16 rows.
    // The rows' maxima over the warp (three shuffles a row pair) are needed
    // only when some score of the warp exceeds its row's running maximum by
    // more than the slack: one vote decides, and otherwise no row moves and
    // P comes out as it would have with the maxima taken.
    // NOTE: the shuffle chains were 24 of ~470 instructions per warp and
    // tile at 16 rows, between the S wgmma and P V (v9 in
    // docs/perf/decode_attention.md: with the shift-free e4m3 pairs, 64 x
    // 4K 64/4 -5.5%).
    // P = 2^(s - m) for a row's maximum m; l rescaled by alpha, plus P.
    auto exponentiate = [&](int qb, int j, float m, float alpha) {
      const float m_use = m == -INFINITY ? 0.0f : m;  // nothing visible yet
      const float p0 = device::fast_exp2(s[qb][j] - m_use), p1 = device::fast_exp2(s[qb][2 + j] - m_use);
      s[qb][j] = p0;
      s[qb][2 + j] = p1;
      l_run[qb][j] = l_run[qb][j] * alpha + p0 + p1;  // this thread's tokens; summed in finish
    };
    bool over = false;
#pragma unroll
    for (int qb = 0; qb < kQBlocks; ++qb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) over |= s[qb][e] > m_run[qb][e & 1] + kLazyRescaleSlack;
    }
    if (!__any_sync(0xffffffffu, over)) {
#pragma unroll
      for (int qb = 0; qb < kQBlocks; ++qb) {
#pragma unroll
        for (int j = 0; j < 2; ++j) exponentiate(qb, j, m_run[qb][j], 1.0f);
      }
    } else {
      // (Some row of the warp moves here: the row of an element above its
      // maximum + slack has a tile maximum above it too.)
      float alpha[kQBlocks][2];
#pragma unroll
      for (int qb = 0; qb < kQBlocks; ++qb) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          float mx = fmaxf(s[qb][j], s[qb][2 + j]);
#pragma unroll
          for (int d = 4; d < 32; d *= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, d));
          const float m_old = m_run[qb][j];
          const bool move = mx > m_old + kLazyRescaleSlack;  // -inf + slack is -inf: the first visible tile moves
          const float m_new = move ? mx : m_old;  // a moved row's maximum is above -inf
          // Exactly 1 unless the row moved: l is rescaled every tile, O only
          // when some row of the warp moved, and the two must agree.
          alpha[qb][j] = move ? device::fast_exp2(m_old - m_new) : 1.0f;
          m_run[qb][j] = m_new;
          exponentiate(qb, j, m_new, alpha[qb][j]);
        }
      }
#pragma unroll
      for (int mt = 0; mt < kDimTiles; ++mt) {
#pragma unroll
        for (int qb = 0; qb < kQBlocks; ++qb) {
#pragma unroll
          for (int e = 0; e < 4; ++e) o[mt][qb][e] *= alpha[qb][e & 1];
        }
      }
    }

    // ---- O^T += V^T P^T over the warp's 16 tokens --------------------------
    // P^T as the B operand: (tokens 2t, 2t + 1 | 2t + 8, 2t + 9) x query row g.
    uint32_t pb[kQBlocks][2];
#pragma unroll
    for (int qb = 0; qb < kQBlocks; ++qb) {
      pb[qb][0] = device::movmatrix_trans(device::pack_f16x2(s[qb][0], s[qb][1]));
      pb[qb][1] = device::movmatrix_trans(device::pack_f16x2(s[qb][2], s[qb][3]));
    }
    // V^T as the A operand: m-tile mt's rows g, g + 8 are dims 16g + 2mt, 16g + 2mt + 1.
    const typename Kv::VRows rows =
        Kv::template load_v_rows<Kv>(device::shared_address(stage) + G::kTileBytes, 16 * warp, lane);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      uint32_t pairs[4][2];  // dims 16g + 4w + d
      Kv::v_token_pairs(rows, w, pairs);
      const uint32_t a_even[4] = {pairs[0][0], pairs[1][0], pairs[0][1], pairs[1][1]};  // m-tile 2w
      const uint32_t a_odd[4] = {pairs[2][0], pairs[3][0], pairs[2][1], pairs[3][1]};   // m-tile 2w + 1
#pragma unroll
      for (int qb = 0; qb < kQBlocks; ++qb) {
        device::mma_f16_16816(o[2 * w][qb], a_even, pb[qb][0], pb[qb][1]);
        device::mma_f16_16816(o[2 * w + 1][qb], a_odd, pb[qb][0], pb[qb][1]);
      }
    }
  }

  // Row maxima, sums (over the warp's tokens) and O into the combine arrays:
  // o[mt][qb][2i + j] is dim 16g + 2mt + i of query row 8qb + 2t + j.
  __device__ void finish(float* combine, float (*row_max)[16], float (*row_sum)[16]) {
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int qb = 0; qb < kQBlocks; ++qb) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        float l = l_run[qb][j];
#pragma unroll
        for (int d = 4; d < 32; d *= 2) l += __shfl_xor_sync(0xffffffffu, l, d);
        const int row = 8 * qb + 2 * t + j;
        if (g == 0) {
          row_max[warp][row] = m_run[qb][j];
          row_sum[warp][row] = l;
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          *reinterpret_cast<float4*>(combine + combine_offset(warp * 16 + row, 16 * g + 4 * q)) =
              make_float4(o[2 * q][qb][j], o[2 * q][qb][2 + j], o[2 * q + 1][qb][j], o[2 * q + 1][qb][2 + j]);
        }
      }
    }
  }
};

}  // namespace hpc_ops::attention
