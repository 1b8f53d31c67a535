// SPDX-License-Identifier: Apache-2.0
// The paged decode-attention kernel, head dim 128, for a BF16 or FP8 KV cache
// (the format-specific fragment code is in decode_kv_formats.cuh).
//
// Grid: one CTA per bin of the schedule (decode_plan.h); a CTA walks its run
// of 64-token tiles, which may cover the end of one (request, kv head) unit,
// whole units and the start of another: each such piece is processed on its
// own and ends in a direct bf16 output (a unit of one piece) or in a partial
// result (fp32 O, log2 LSE). The CTA that finishes a cut unit's last piece
// combines the unit's partials when they are few (merged_by_attention);
// the merge kernel combines the rest.
//
// Rows of a unit: q_len x group (query token major), padded to 16 per m-tile.
// Warps: kMTiles x kWarpsN; warp (m, n) owns m-tile m and the n-th slice of
// each KV tile (64 / kWarpsN tokens), so all four warps of a small-group CTA
// stream KV; their softmax states meet in shared memory at the end.
// Per tile: S = Q K^T with mma.sync m16n8k16 (Q fragments held in registers
// for the whole piece), scaling (FP8 scales folded into one multiplier per
// row, per-token k scales from shared memory), base-2 online softmax in
// registers, O += P V with P re-packed from the S accumulators.
// K and V pages (and per-token k scales) arrive through a cp.async ring
// (16-byte copies from any page / slot / head strides; page sizes 1-128 cost
// the same).
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "attention/decode_kernels.h"
#include "attention/decode_kv_formats.cuh"
#include "attention/decode_merge.cuh"
#include "common/mma_sm80.cuh"
#include "common/pdl.cuh"

namespace hpc_ops::attention {

constexpr float kLog2e = 1.4426950408889634f;

template <int kMTiles, class Kv>
struct DecodeGeometry {
  static constexpr int kWarpsN = kMTiles >= 4 ? 1 : 4 / kMTiles;
  static constexpr int kWarps = kMTiles * kWarpsN;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kTokensPerWarp = kDecodeTileTokens / kWarpsN;  // 16, 32 or 64
  static constexpr int kNTiles = kTokensPerWarp / 8;                  // S columns of 8
  static constexpr int kRows = 16 * kMTiles;
  static constexpr int kChunksPerToken = Kv::kTokenBytes / 16;
  static constexpr int kQBytes = Kv::kQInSharedMemory ? kRows * Kv::kTokenBytes : 0;
  static constexpr int kTileBytes = kDecodeTileTokens * Kv::kTokenBytes;
  static constexpr int kScaleBytes = Kv::kFp8 ? kDecodeTileTokens * 4 : 0;  // per-token k scales
  static constexpr int kStageBytes = 2 * kTileBytes + kScaleBytes;          // K, V, k scales
  static constexpr int kCombineBytes = kWarps * 16 * kDecodeHeadDim * 4;
  static constexpr int kRingBytes = Kv::kStages * kStageBytes;
  static_assert(kCombineBytes <= kRingBytes, "the combine buffer reuses the ring");
  static constexpr int kSmemBytes = kQBytes + kRingBytes;
  static_assert(kWarps == attention_warps(kRows), "the planners' merged_by_attention counts these warps");
};

// The usable length of request b: kv_lens clamped to the page table's reach.
__device__ __forceinline__ int32_t usable_len(const DecodeParams& p, int b) {
  const int64_t reach = int64_t{p.max_pages} << p.page_shift;
  int64_t len = p.kv_lens[b];
  len = len < 0 ? 0 : len;
  len = len < reach ? len : reach;
  return static_cast<int32_t>(len < kMaxKvLen ? len : kMaxKvLen);
}

// One piece of a unit: its tiles [tile_begin, tile_end) (absolute within the
// request), the unit's piece count and this piece's index among them.
struct Piece {
  int u, tile_begin, tile_end;
  int32_t pieces, index;
};

template <int kMTiles, class Kv>
struct DecodeCta {
  using G = DecodeGeometry<kMTiles, Kv>;
  static constexpr int kStages = Kv::kStages;
  const DecodeParams& p;
  uint8_t* smem;
  float (*row_max)[16];
  float (*row_sum)[16];
  int* last_arrival;  // shared: whether this CTA finished its unit's last piece
  int warp, lane, m_tile, n_part;

  __device__ uint8_t* stage_ptr(int stage) const { return smem + G::kQBytes + stage * G::kStageBytes; }

  // The tile copies: a thread always moves the same 16-byte chunk of its
  // rows row0 + i * kRowStep (i < kCopies) of every tile, K and V. Lanes run
  // along a row, so each warp-wide copy reads whole 128-byte lines (one row
  // per thread with 16 copies each was 1.8x slower: half-used sectors).
  static constexpr int kRowStep = G::kThreads / G::kChunksPerToken;
  static constexpr int kCopies = kDecodeTileTokens / kRowStep;
  static_assert(G::kThreads % G::kChunksPerToken == 0 && kDecodeTileTokens % kRowStep == 0,
                "whole rows per pass");

  // What stays fixed over a piece: the request's page-table row and this
  // thread's chunk of head h at page 0, slot 0.
  struct CopySource {
    const int32_t* pages;
    const uint8_t* k;
    const uint8_t* v;
    const float* k_scale;  // head h, page 0, slot 0 (per-token k scales; chunk-0 threads)
    int row0, chunk;
  };

  __device__ CopySource copy_source(int b, int h) const {
    CopySource c;
    c.row0 = threadIdx.x / G::kChunksPerToken;
    c.chunk = threadIdx.x % G::kChunksPerToken;
    c.pages = p.page_table + b * p.page_table_stride;
    c.k = static_cast<const uint8_t*>(p.k) + h * p.k_strides[2] * Kv::kElementBytes + c.chunk * 16;
    c.v = static_cast<const uint8_t*>(p.v) + h * p.v_strides[2] * Kv::kElementBytes + c.chunk * 16;
    c.k_scale = p.k_scale_per_token && c.chunk == 0 ? p.k_scale + h * p.k_scale_strides[2] : nullptr;
    return c;
  }

  // Page ids of this thread's rows of tile `tile`. Entries past the
  // request's length are read (within the page table's row) but never used:
  // issue_tile points those rows at page 0. Not depending on len, the first
  // fetch does not wait for the kv_lens load (one round trip less before the
  // first KV copy). Fetched a tile ahead of issue_tile so the page-table
  // round trip overlaps the math (fetched at issue time, 64 x 4K took 277 us
  // instead of 266).
  __device__ void fetch_pages(const CopySource& c, int tile, int32_t (&page)[kCopies]) const {
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int index = (tile * kDecodeTileTokens + c.row0 + i * kRowStep) >> p.page_shift;
      page[i] = c.pages[index < p.max_pages ? index : p.max_pages - 1];
    }
  }

  // Issues the cp.async copies of KV tile `tile` (absolute within the request)
  // into ring stage `stage`; tokens at or past len are zero-filled.
  __device__ void issue_tile(const CopySource& c, int tile, int len, const int32_t (&page)[kCopies],
                             int stage) const {
    const uint32_t k_base = device::shared_address(stage_ptr(stage));
    const uint32_t v_base = k_base + G::kTileBytes;
    const uint32_t scale_base = v_base + G::kTileBytes;
    const int page_mask = (1 << p.page_shift) - 1;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int row = c.row0 + i * kRowStep;
      const int token = tile * kDecodeTileTokens + row;
      const int bytes = token < len ? 16 : 0;
      const int64_t pg = token < len ? page[i] : 0, slot = token & page_mask;
      device::cp_async_16(k_base + Kv::k_offset(row, c.chunk),
                          c.k + (pg * p.k_strides[0] + slot * p.k_strides[1]) * Kv::kElementBytes,
                          bytes);
      device::cp_async_16(v_base + Kv::v_offset(row, c.chunk),
                          c.v + (pg * p.v_strides[0] + slot * p.v_strides[1]) * Kv::kElementBytes,
                          bytes);
      if constexpr (Kv::kFp8) {
        if (c.k_scale != nullptr) {
          device::cp_async_4(scale_base + row * 4,
                             c.k_scale + pg * p.k_scale_strides[0] + slot * p.k_scale_strides[1],
                             bytes / 4);
        }
      }
    }
  }

  // Q rows of unit (b, h) into shared memory (rows past q_len x group: zeros).
  __device__ void stage_q(int b, int h) const {
    const uint32_t base = device::shared_address(smem);
    for (int idx = threadIdx.x; idx < G::kRows * G::kChunksPerToken; idx += G::kThreads) {
      const int row = idx / G::kChunksPerToken, chunk = idx % G::kChunksPerToken;
      const bool ok = row < p.rows;
      const __nv_bfloat16* src = static_cast<const __nv_bfloat16*>(p.q);
      if (ok) {
        const int qi = row / p.group, hi = row - qi * p.group;
        src += (int64_t{b} * p.q_len + qi) * p.q_row_stride +
               (int64_t{h} * p.group + hi) * p.q_head_stride + chunk * 8;
      }
      device::cp_async_16(base + Kv::q_offset(row, chunk), src, ok ? 16 : 0);
    }
  }

  // One piece: a unit of one piece writes the final output, a cut unit's
  // piece its partial result (slot slot_start[u] + index).
  __device__ void run_piece(const Piece& piece) {
    const int b = piece.u / p.kv_heads, h = piece.u - b * p.kv_heads;
    const int tile_begin = piece.tile_begin, tile_end = piece.tile_end;
    const ScheduleLayout layout = schedule_layout(p.batch, p.kv_heads, p.num_bins);
    // Needed only at the end: the load's latency hides behind the piece.
    const int32_t slot0 = piece.pieces >= 2 ? p.schedule[layout.slot_start + piece.u] : 0;
    const int slot = piece.pieces >= 2 ? slot0 + piece.index : -1;
    const int len = usable_len(p, b);
    const int g = lane / 4, t = lane % 4;
    const int n_tiles = tile_end - tile_begin;

    uint32_t qf[kDecodeDimSteps][4];
    if constexpr (Kv::kQInSharedMemory) {
      stage_q(b, h);
    } else {
      Kv::q_fragments(qf, p, b, h, m_tile, lane);
    }
    const CopySource copies = copy_source(b, h);
    int32_t pages[kCopies];
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < n_tiles) {
        fetch_pages(copies, tile_begin + s, pages);
        issue_tile(copies, tile_begin + s, len, pages, s);
      }
      device::cp_async_commit();
    }
    if (kStages - 1 < n_tiles) fetch_pages(copies, tile_begin + kStages - 1, pages);

    // This thread's two rows (g and g + 8 of its m-tile): the last position
    // each may attend to, the first (sliding window), and the factor taking
    // q.k to a log2 logit (to logit / soft_cap with a soft cap): the softmax
    // scale and every FP8 scale but the per-token k scale folded together.
    int last_pos[2], first_pos[2];
    float row_mult[2];
    const float cap_log2 = p.soft_cap * kLog2e;
    float scale = p.softmax_scale * (p.soft_cap > 0.0f ? 1.0f / p.soft_cap : kLog2e);
    if (p.k_scale != nullptr && !p.k_scale_per_token) scale *= p.k_scale[0];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = m_tile * 16 + g + 8 * r;
      const bool ok = row < p.rows;
      const int qi = ok ? row / p.group : p.q_len - 1;
      last_pos[r] = len - p.q_len + qi;
      first_pos[r] = p.sliding_window > 0 ? last_pos[r] - p.sliding_window + 1 : 0;
      row_mult[r] = scale;
      if (p.q_scale != nullptr && ok) {
        const int hi = row - qi * p.group;
        row_mult[r] *= p.q_scale[(int64_t{b} * p.q_len + qi) * p.q_scale_strides[0] +
                                 (int64_t{h} * p.group + hi) * p.q_scale_strides[1]];
      }
    }

    float o[kDecodeDimTiles][4];
#pragma unroll
    for (int n = 0; n < kDecodeDimTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
    const int tok0 = n_part * G::kTokensPerWarp;

    for (int i = 0; i < n_tiles; ++i) {
      device::cp_async_wait<kStages - 2>();
      __syncthreads();
      // The stage read in iteration i - 1 is free once every warp passed the barrier.
      if (i + kStages - 1 < n_tiles) {
        issue_tile(copies, tile_begin + i + kStages - 1, len, pages, (i + kStages - 1) % kStages);
      }
      device::cp_async_commit();
      if (i + kStages < n_tiles) fetch_pages(copies, tile_begin + i + kStages, pages);
      if constexpr (Kv::kQInSharedMemory) {
        if (i == 0) Kv::q_fragments(qf, device::shared_address(smem), m_tile, lane);
      }
      uint8_t* stage = stage_ptr(i % kStages);
      const uint32_t k_base = device::shared_address(stage);
      const uint32_t v_base = k_base + G::kTileBytes;
      const float* k_scales = reinterpret_cast<const float*>(stage + 2 * G::kTileBytes);

      // ---- S = Q K^T over this warp's token slice ---------------------------
      float s[G::kNTiles][4];
#pragma unroll
      for (int j = 0; j < G::kNTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
      Kv::template qk<G::kNTiles>(s, qf, k_base, tok0, lane);

      // ---- scale, soft cap, mask; online softmax (base 2) -------------------
      const int tile_pos0 = (tile_begin + i) * kDecodeTileTokens + tok0;
      float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int j = 0; j < G::kNTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[j][e] *= row_mult[e / 2];
          if constexpr (Kv::kFp8) {
            if (p.k_scale_per_token) s[j][e] *= k_scales[tok0 + j * 8 + 2 * t + (e & 1)];
          }
        }
      }
      if (p.soft_cap > 0.0f) {  // one uniform branch per tile, not per element
#pragma unroll
        for (int j = 0; j < G::kNTiles; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) s[j][e] = cap_log2 * tanhf(s[j][e]);
        }
      }
#pragma unroll
      for (int j = 0; j < G::kNTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e / 2;
          const int pos = tile_pos0 + j * 8 + 2 * t + (e & 1);
          const bool ok = pos < len && pos <= last_pos[r] && pos >= first_pos[r];
          s[j][e] = ok ? s[j][e] : -INFINITY;
          tile_max[r] = fmaxf(tile_max[r], s[j][e]);
        }
      }
      float alpha[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
        const float m_new = fmaxf(m_run[r], tile_max[r]);
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
      // (Skipping this when every alpha of the warp is 1, or the masking of
      // fully visible tiles, made the FP8 kernel 7% slower: the branches cut
      // the compiler's interleaving of the tile's math.)
      {
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
    device::cp_async_wait<0>();
    __syncthreads();  // every warp is done with the ring: it becomes the combine buffer

    // ---- combine the warps of each m-tile; write the output or a partial --------
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
      l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
      if (t == 0) {
        row_max[warp][g + 8 * r] = m_run[r];
        row_sum[warp][g + 8 * r] = l_run[r];
      }
    }
    float* combine = reinterpret_cast<float*>(smem + G::kQBytes);  // [warp * 16 + row][128]
    Kv::store_o(combine, warp * 16, o, lane);
    __syncthreads();
    const float v_mult = p.v_scale != nullptr ? p.v_scale[h * p.v_scale_stride] : 1.0f;
    constexpr int kQuads = kDecodeHeadDim / 4;  // float4 columns per row
    for (int idx = threadIdx.x; idx < G::kRows * kQuads; idx += G::kThreads) {
      const int row = idx / kQuads, col = (idx % kQuads) * 4;
      if (row >= p.rows) continue;
      const int mt = row / 16, rr = row % 16;
      const MergedRow merged = combine_states<G::kWarpsN>([&](int w, float& m, float& den, float4& acc) {
        const int wi = mt * G::kWarpsN + w;
        m = row_max[wi][rr];
        den = row_sum[wi][rr];
        acc = *reinterpret_cast<const float4*>(combine + combine_offset(wi * 16 + rr, col));
      });
      if (slot < 0) {
        store_merged_row(p, piece.u, row, col, merged, v_mult);
      } else {
        const int64_t at = int64_t{slot} * p.rows + row;
        *reinterpret_cast<float4*>(p.partial_out + at * kDecodeHeadDim + col) = merged.output(v_mult);
        if (col == 0) p.partial_lse[at] = merged.lse2();
      }
    }
    if (slot >= 0 && merged_by_attention(piece.pieces, p.rows)) {
      merge_if_last(piece, slot0, layout);
    }
    __syncthreads();  // the combine buffer and the Q tile are reused by the next piece
  }

  // Counts this piece's arrival; the CTA of the unit's last piece combines
  // every piece's partial result into the output and resets the count for
  // the next call. (The "last block" pattern: each thread's partial stores
  // are fenced before the arrival, the last CTA fences before its loads.)
  __device__ void merge_if_last(const Piece& piece, int32_t slot0, const ScheduleLayout& layout) {
    int32_t* arrivals = p.schedule + layout.arrivals;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      *last_arrival = atomicAdd(arrivals + piece.u, 1) == piece.pieces - 1;
    }
    __syncthreads();
    if (!*last_arrival) return;
    __threadfence();
    for (int row = warp; row < p.rows; row += G::kWarps) {
      const MergedRow r = merge_row_pieces(p, slot0, row, 0, piece.pieces, 1, lane);
      store_merged_row(p, piece.u, row, 4 * lane, r);
    }
    if (threadIdx.x == 0) arrivals[piece.u] = 0;
  }
};

template <int kMTiles, class Kv>
__global__ void __launch_bounds__(DecodeGeometry<kMTiles, Kv>::kThreads)
    decode_attention_kernel(const __grid_constant__ DecodeParams p) {
  using G = DecodeGeometry<kMTiles, Kv>;
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ float row_max[G::kWarps][16];
  __shared__ float row_sum[G::kWarps][16];
  __shared__ int last_arrival;
  // The schedule (and the caller's inputs) come from earlier kernels; the
  // merge kernel may be scheduled as soon as every CTA got here.
  device::pdl_enter();
  const int32_t* sched = p.schedule;
  const ScheduleLayout layout = schedule_layout(p.batch, p.kv_heads, p.num_bins);
  // One round of independent loads: the header and this bin's first unit.
  // Tile positions are int32 (unit_pieces in decode_plan.h).
  const int32_t per_bin = sched[0], total = sched[1], units = sched[2];
  const int4 first_unit = *reinterpret_cast<const int4*>(sched + layout.bin_first +
                                                         kBinFirstWords * blockIdx.x);
  const int32_t begin = static_cast<int32_t>(blockIdx.x) * per_bin;
  if (begin >= total || first_unit.x < 0) return;
  const int32_t end = begin + per_bin < total ? begin + per_bin : total;
  const int32_t* tile_start = sched + layout.tile_start;
  DecodeCta<kMTiles, Kv> cta{p, smem, row_max, row_sum, &last_arrival, static_cast<int>(threadIdx.x / 32),
                         static_cast<int>(threadIdx.x % 32), 0, 0};
  cta.m_tile = cta.warp / G::kWarpsN;
  cta.n_part = cta.warp % G::kWarpsN;
  // Unit u = [ts, te) in the global tile order; its tiles within the
  // request start at `first`.
  int u = first_unit.x;
  int32_t ts = first_unit.y, te = first_unit.z, first = first_unit.w;
  int32_t pos = begin;
  while (true) {
    const int32_t piece_end = te < end ? te : end;
    Piece piece;
    piece.u = u;
    piece.tile_begin = first + (pos - ts);
    piece.tile_end = first + (piece_end - ts);
    piece.pieces = unit_pieces(ts, te - ts, per_bin);
    piece.index = static_cast<int32_t>(blockIdx.x) - ts / per_bin;
    cta.run_piece(piece);
    pos = piece_end;
    // The next unit with tiles, if the bin reaches it.
    do {
      ++u;
      if (pos >= end || u >= units) return;
      ts = tile_start[u];
      te = tile_start[u + 1];
    } while (te <= pos);  // units with no tiles
    first = sched[layout.first_tile + u / p.kv_heads];
  }
}

}  // namespace hpc_ops::attention
