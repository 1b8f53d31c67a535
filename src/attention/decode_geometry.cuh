// SPDX-License-Identifier: Apache-2.0
// What the decode-attention kernel's pieces share: the CTA geometry of a
// (row tiling, cache format) variant, the usable length of a request, and the
// per-query-row limits and logit multiplier every tile's softmax applies.
#pragma once

#include <cstdint>

#include "attention/decode_kernels.h"

namespace hpc_ops::attention {

constexpr float kLog2e = 1.4426950408889634f;

// kMTiles m-tiles of 16 query rows; Kv the cache format (decode_kv_formats.cuh).
template <int kMTiles, class Kv>
struct DecodeGeometry {
  static constexpr int kWarpsN = kMTiles >= 4 ? 1 : 4 / kMTiles;
  static constexpr int kWarps = kMTiles * kWarpsN;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kTokensPerWarp = kDecodeTileTokens / kWarpsN;  // 16, 32 or 64
  static constexpr int kNTiles = kTokensPerWarp / 8;                  // S columns of 8
  static constexpr int kRows = 16 * kMTiles;
  static constexpr int kChunksPerToken = Kv::kTokenBytes / 16;
  // Shared memory: [q tile][ring of kStages x (K tile, V tile)][per-token k
  // scales of each stage][the format's extra bytes], the q tile and the ring
  // aligned to Kv::kAlign (the tiles' sizes keep the alignment).
  static constexpr int kQBytes = Kv::q_smem_bytes(kRows);
  static constexpr int kTileBytes = kDecodeTileTokens * Kv::kTokenBytes;
  static constexpr int kStageBytes = 2 * kTileBytes;
  static constexpr int kRingBytes = Kv::kStages * kStageBytes;
  static constexpr int kScaleBytes = Kv::kFp8 ? kDecodeTileTokens * 4 : 0;  // per stage
  static constexpr int kScaleOffset = kQBytes + kRingBytes;
  static constexpr int kExtraOffset = kScaleOffset + Kv::kStages * kScaleBytes;
  static constexpr int kCombineBytes = kWarps * 16 * kDecodeHeadDim * 4;
  static_assert(kCombineBytes <= kRingBytes, "the combine buffer reuses the ring");
  static_assert(kQBytes % Kv::kAlign == 0 && kStageBytes % Kv::kAlign == 0, "aligned tiles");
  static_assert(!Kv::kWidened || kExtraOffset % Kv::kAlign == 0, "aligned wide tiles");
  // Alignments past the 128 bytes of the dynamic shared memory base are made
  // by the kernel, out of this slack.
  static constexpr int kSmemBytes = kExtraOffset + Kv::kExtraBytes + (Kv::kAlign > 128 ? Kv::kAlign : 0);
  static_assert(kWarps == attention_warps(kRows), "the planners' merge_fan_in counts these warps");
  // __launch_bounds__'s minimum CTAs per SM: 1 for the rows-on-M variants
  // (without it ptxas held the FP8 32-row variant to 168 registers and
  // spilled once tiles seen whole skipped their masking); for the
  // tokens-on-M ones the occupancy their tile loop was measured at (4 CTAs at
  // 8 rows, 96 registers; 3 at 16 rows, 160), which the merge tree's step
  // (80 registers of loads in flight) would otherwise lower at 8 rows: held
  // to 128 registers, ptxas spills 24 bytes there, outside the tile loop.
  static constexpr int launch_min_ctas() {
    if constexpr (Kv::kTokensOnM) {
      return Kv::kQBlocks == 1 ? 4 : 3;
    } else {
      return 1;
    }
  }
  static constexpr int kLaunchMinCtas = launch_min_ctas();
  // Transaction barriers of the TMA path (one, unused, for formats without it).
  static constexpr int kStagesForTma = Kv::kTmaTiles ? Kv::kStages : 1;
};

// The usable length of request b: kv_lens clamped to the page table's reach.
__device__ __forceinline__ int32_t usable_len(const DecodeParams& p, int b) {
  const int64_t reach = int64_t{p.max_pages} << p.page_shift;
  int64_t len = p.kv_lens[b];
  len = len < 0 ? 0 : len;
  len = len < reach ? len : reach;
  return static_cast<int32_t>(len < kMaxKvLen ? len : kMaxKvLen);
}

// The lazy running maximum (wgmma rows-on-M and tokens-on-M kernels): a
// row's maximum moves only when a tile's exceeds it by more than this (log2
// units), so probabilities stay below 2^8, which fp16 holds, and O is
// rescaled only in tiles where some row of the warp moved.
constexpr float kLazyRescaleSlack = 8.0f;

// Element offset in q of query row `row` (< p.rows) of unit (b, h): token
// b * q_len + row / group, head h * group + row % group.
__device__ __forceinline__ int64_t q_row_offset(const DecodeParams& p, int b, int h, int row) {
  const int qi = row / p.group, hi = row - qi * p.group;
  return (int64_t{b} * p.q_len + qi) * p.q_row_stride + (int64_t{h} * p.group + hi) * p.q_head_stride;
}

// Calls row_fn(r, ok, at) for the two query rows whose m16n8k16 A fragments
// a lane of m-tile `m_tile` holds (r = 0, 1: rows m_tile * 16 + lane / 4 +
// 8 r): ok = the row is below p.rows, at = its element offset in q (row 0's
// when not ok, so every address stays inside q).
template <class RowFn>
__device__ __forceinline__ void for_fragment_rows(const DecodeParams& p, int b, int h, int m_tile, int lane,
                                                  RowFn&& row_fn) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = m_tile * 16 + lane / 4 + 8 * r;
    const bool ok = row < p.rows;
    row_fn(r, ok, q_row_offset(p, b, h, ok ? row : 0));
  }
}

// The factor taking q.k to a log2 logit (to logit / soft_cap with a soft cap):
// the softmax scale and a per-tensor k scale folded together.
__device__ __forceinline__ float logit_scale(const DecodeParams& p) {
  float scale = p.softmax_scale * (p.soft_cap > 0.0f ? 1.0f / p.soft_cap : kLog2e);
  if (p.k_scale != nullptr && !p.k_scale_per_token) scale *= p.k_scale[0];
  return scale;
}

// Query row `row` of unit (b, h) (rows past p.rows act as the last query
// token's and are never written): the positions it attends to are
// [first_pos, last_pos] (causal among the step's q_len tokens, sliding
// window), and its logit multiplier is `scale` times its q scale.
struct RowLimits {
  int last_pos, first_pos;
  float mult;
  // Whether the row attends to position pos of a request of len tokens.
  __device__ bool sees(int pos, int len) const { return pos < len && pos <= last_pos && pos >= first_pos; }
};

__device__ __forceinline__ RowLimits row_limits(const DecodeParams& p, int b, int h, int len, int row,
                                                float scale) {
  const bool ok = row < p.rows;
  const int qi = ok ? row / p.group : p.q_len - 1;
  RowLimits r;
  r.last_pos = len - p.q_len + qi;
  r.first_pos = p.sliding_window > 0 ? r.last_pos - p.sliding_window + 1 : 0;
  r.mult = scale;
  if (p.q_scale != nullptr && ok) {
    const int hi = row - qi * p.group;
    r.mult *= p.q_scale[(int64_t{b} * p.q_len + qi) * p.q_scale_strides[0] +
                        (int64_t{h} * p.group + hi) * p.q_scale_strides[1]];
  }
  return r;
}

// The positions every query row of a unit sees, [from, to): the last query
// token's window starts latest, the first token's causal limit ends first
// (row_limits). A tile inside it needs no per-element masking.
struct VisibleRange {
  int from, to;
  __device__ bool holds_tile(int tile) const {
    const int first = tile * kDecodeTileTokens;
    return first >= from && first + kDecodeTileTokens <= to;
  }
};

__device__ __forceinline__ VisibleRange visible_range(const DecodeParams& p, int len) {
  return VisibleRange{p.sliding_window > 0 ? len - p.sliding_window : 0, len - p.q_len + 1};
}

}  // namespace hpc_ops::attention
