// SPDX-License-Identifier: Apache-2.0
// The decode-attention math with query rows on the mma's M side (both cache
// formats; the FP8 kernel uses it above 16 rows): one warp per (m-tile of 16
// query rows, slice of each 64-token tile). Per tile: S = Q K^T (Q fragments
// held in registers for the whole piece), scaling (FP8 scales folded into
// one multiplier per row, per-token k scales from shared memory), base-2
// online softmax in registers, O += P V with P re-packed from the S
// accumulators. The products are the format's (decode_kv_formats.cuh):
// mma.sync m16n8k16 on the tile in place, or, above 32 rows, wgmma (each
// warp's m16n8k16 fragments are its quarter of the warpgroup's register
// operands): BF16 straight from the ring, FP8 on a copy the CTA widens to
// fp16 first.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "attention/decode_geometry.cuh"
#include "attention/decode_kv_formats.cuh"
#include "common/mma_sm80.cuh"
#include "common/reduce.cuh"

namespace hpc_ops::attention {

template <int kMTiles, class Kv>
struct RowsOnM {
  using G = DecodeGeometry<kMTiles, Kv>;
  // The lazy maximum (kLazyRescaleSlack, decode_geometry.cuh) on the wgmma
  // formats: the rescale of O is 64 of the ~850 instructions per warp and
  // tile ncu counted on the first wgmma build, skipped in most tiles. Alpha
  // is exp2(0) = 1 for a row that did not move (0 for a row still at -inf,
  // whose l and O are 0).
  static constexpr bool kLazyMaximum = Kv::kRowsOnMWgmma;
  int warp, lane, m_tile, tok0;
  uint32_t qf[kDecodeDimSteps][4];
  // This thread's two rows (g and g + 8 of its m-tile).
  RowLimits rows[2];
  float o[kDecodeDimTiles][4];
  float m_run[2], l_run[2];
  VisibleRange visible;  // the positions every query row of the unit sees

  __device__ RowsOnM(int warp_, int lane_)
      : warp(warp_), lane(lane_), m_tile(warp_ / G::kWarpsN), tok0((warp_ % G::kWarpsN) * G::kTokensPerWarp) {}

  // Before the KV prologue: a bf16 Q goes to shared memory with the first
  // stage's copies (its ldmatrix reads wait for that stage).
  __device__ void stage_q(const DecodeParams& p, uint8_t* q_smem, int b, int h) const {
    if constexpr (Kv::kQInSharedMemory) {
      const uint32_t base = device::shared_address(q_smem);
      for (int idx = threadIdx.x; idx < G::kRows * G::kChunksPerToken; idx += G::kThreads) {
        const int row = idx / G::kChunksPerToken, chunk = idx % G::kChunksPerToken;
        const bool ok = row < p.rows;
        const __nv_bfloat16* src = static_cast<const __nv_bfloat16*>(p.q);
        if (ok) src += q_row_offset(p, b, h, row) + chunk * 8;
        device::cp_async_16(base + Kv::q_offset(row, chunk), src, ok ? 16 : 0);
      }
    }
  }

  // After the KV prologue was issued: Q fragments where Q is not staged in
  // shared memory (FP8 and wgmma formats: from global memory), the rows'
  // limits, zeroed state.
  __device__ void begin(const DecodeParams& p, uint8_t*, int b, int h, int len) {
    if constexpr (!Kv::kQInSharedMemory) Kv::q_fragments(qf, p, b, h, m_tile, lane);
    const float scale = logit_scale(p);
#pragma unroll
    for (int r = 0; r < 2; ++r) rows[r] = row_limits(p, b, h, len, m_tile * 16 + lane / 4 + 8 * r, scale);
    visible = visible_range(p, len);
#pragma unroll
    for (int n = 0; n < kDecodeDimTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    m_run[0] = m_run[1] = -INFINITY;
    l_run[0] = l_run[1] = 0.0f;
  }

  // One 64-token KV tile (absolute tile index `tile` of the request) in
  // `stage` (K, then V), its per-token k scales in `k_scales`.
  // `refill` issues the next tiles' copies: first thing, or, for a widened
  // format, once the stage is widened (its stage is free then).
  template <class Refill>
  __device__ void tile(const DecodeParams& p, uint8_t* smem, const uint8_t* stage,
                       const float* k_scales, int tile, int len, bool first, Refill&& refill) {
    if constexpr (!Kv::kWidened) refill();
    if constexpr (Kv::kQInSharedMemory) {
      if (first) Kv::q_fragments(qf, device::shared_address(smem), m_tile, lane);
    }
    const int t = lane % 4;
    uint32_t k_base = device::shared_address(stage);
    uint32_t v_base = k_base + G::kTileBytes;
    if constexpr (Kv::kWidened) {
      // The CTA widens the stage once (and keeps its k scales); the barrier
      // orders it before the reads, and frees the stage for the next copy.
      const uint32_t wide = device::shared_address(smem) + G::kExtraOffset;
      Kv::template widen<G::kThreads>(k_base, wide);
      float* wide_scales = reinterpret_cast<float*>(smem + G::kExtraOffset + Kv::kWideScaleOffset);
      if (p.k_scale_per_token && threadIdx.x < kDecodeTileTokens / 4) {
        reinterpret_cast<float4*>(wide_scales)[threadIdx.x] = reinterpret_cast<const float4*>(k_scales)[threadIdx.x];
      }
      __syncthreads();
      refill();
      k_scales = wide_scales;
      k_base = wide;
      v_base = wide + Kv::kWideTileBytes;
    }

    // ---- S = Q K^T over this warp's token slice ---------------------------
    float s[G::kNTiles][4];
#pragma unroll
    for (int j = 0; j < G::kNTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
    Kv::template qk<G::kNTiles>(s, qf, k_base, tok0, lane);

    // ---- scale, soft cap, mask; online softmax (base 2) -------------------
    const int tile_pos0 = tile * kDecodeTileTokens + tok0;
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < G::kNTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] *= rows[e / 2].mult;
    }
    // Per-token k scales: one uniform branch around its own loop (inside the
    // loop above, the compiler predicated the loads and multiplies: 2 x
    // 4 kNTiles issue slots per warp and tile for nothing under the
    // per-tensor schemes).
    if constexpr (Kv::kFp8) {
      if (p.k_scale_per_token) {
#pragma unroll
        for (int j = 0; j < G::kNTiles; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) s[j][e] *= k_scales[tok0 + j * 8 + 2 * t + (e & 1)];
        }
      }
    }
    if (p.soft_cap > 0.0f) {  // one uniform branch per tile, not per element
      const float cap_log2 = p.soft_cap * kLog2e;
#pragma unroll
      for (int j = 0; j < G::kNTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = cap_log2 * tanhf(s[j][e]);
      }
    }
    // Tokens that some row must not see (past len, past the row's causal
    // limit, before its window): a tile wholly inside every row's range
    // skips the per-element compares (one uniform branch).
    if (!visible.holds_tile(tile)) {
#pragma unroll
      for (int j = 0; j < G::kNTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const RowLimits& r = rows[e / 2];
          const int pos = tile_pos0 + j * 8 + 2 * t + (e & 1);
          const bool ok = r.sees(pos, len);
          s[j][e] = ok ? s[j][e] : -INFINITY;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < G::kNTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) tile_max[e / 2] = fmaxf(tile_max[e / 2], s[j][e]);
    }
    float alpha[2];
    bool moved = false;  // the lazy maximum's: some row of the thread moved
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      float m_new = fmaxf(m_run[r], tile_max[r]);
      if constexpr (kLazyMaximum) {
        // -inf + slack is -inf: the first visible tile moves the row.
        const bool move = tile_max[r] > m_run[r] + kLazyRescaleSlack;
        m_new = move ? tile_max[r] : m_run[r];
        moved |= move;
      }
      // A row with nothing visible yet keeps m = -inf; exponents use 0 then.
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      alpha[r] = device::fast_exp2(m_run[r] - m_use);
      m_run[r] = m_new;
      l_run[r] *= alpha[r];
#pragma unroll
      for (int j = 0; j < G::kNTiles; ++j) {
        s[j][2 * r] = device::fast_exp2(s[j][2 * r] - m_use);
        s[j][2 * r + 1] = device::fast_exp2(s[j][2 * r + 1] - m_use);
        l_run[r] += s[j][2 * r] + s[j][2 * r + 1];
      }
    }
    // (mma.sync formats: skipping this when every alpha of the warp is 1
    // made the FP8 kernel 7% slower in v2, the branch cut the compiler's
    // interleaving of the rescale with the P V mma; a lazy maximum as in the
    // tokens-on-M kernel was 4-11% slower on FP8 q_len 4 in v7. The wgmma
    // P V waits for the rescale either way.)
    if (!kLazyMaximum || __any_sync(0xffffffffu, moved)) {
#pragma unroll
      for (int n = 0; n < kDecodeDimTiles; ++n) {
        o[n][0] *= alpha[0];
        o[n][1] *= alpha[0];
        o[n][2] *= alpha[1];
        o[n][3] *= alpha[1];
      }
    }

    // ---- O += P V -----------------------------------------------------------
    Kv::template pv<G::kNTiles>(o, s, v_base, tok0, lane);
  }

  // The warp's row maxima, sums and O into the combine arrays (rows 0-15 of
  // this warp; the CTA combines its warps afterwards).
  __device__ void finish(float* combine, float (*row_max)[16], float (*row_sum)[16]) {
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l_run[r] = device::warp_allreduce<4>(l_run[r], device::SumOp{});  // the row's quad
      if (t == 0) {
        row_max[warp][g + 8 * r] = m_run[r];
        row_sum[warp][g + 8 * r] = l_run[r];
      }
    }
    Kv::store_o(combine, warp * 16, o, lane);
  }
};

}  // namespace hpc_ops::attention
