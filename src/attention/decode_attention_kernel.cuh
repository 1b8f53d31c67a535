// SPDX-License-Identifier: Apache-2.0
// The paged decode-attention kernel (BF16 KV, head dim 128).
//
// Grid: one CTA per bin of the schedule (decode_plan.h); a CTA walks its run
// of 64-token tiles, which may cover the end of one (request, kv head) unit,
// whole units and the start of another: each such piece is processed on its
// own and ends in a direct bf16 output (a unit of one piece) or in a partial
// result (fp32 O, log2 LSE) for the merge kernel.
//
// Rows of a unit: q_len x group (query token major), padded to 16 per m-tile.
// Warps: kMTiles x kWarpsN; warp (m, n) owns m-tile m and the n-th slice of
// each KV tile (64 / kWarpsN tokens), so all four warps of a small-group CTA
// stream KV; their softmax states meet in shared memory at the end.
// Per tile: S = Q K^T with mma.sync m16n8k16 (Q fragments held in registers
// for the whole piece, K via ldmatrix), base-2 online softmax in registers,
// O += P V with P re-packed from the S accumulators and V via ldmatrix.trans.
// K and V pages arrive through a 3-stage cp.async ring (16-byte copies from
// any page / slot / head strides; page sizes 1-128 cost the same).
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "attention/decode_kernels.h"
#include "common/mma_sm80.cuh"

namespace hpc_ops::attention {

constexpr int kStages = 3;
constexpr int kRowBytes = kDecodeHeadDim * 2;           // one token's K (or V) of one head
constexpr int kChunksPerRow = kRowBytes / 16;           // 16
constexpr int kTileBytes = kDecodeTileTokens * kRowBytes;  // 16 KB

template <int kMTiles>
struct DecodeGeometry {
  static constexpr int kWarpsN = kMTiles >= 4 ? 1 : 4 / kMTiles;
  static constexpr int kWarps = kMTiles * kWarpsN;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kTokensPerWarp = kDecodeTileTokens / kWarpsN;  // 16, 32 or 64
  static constexpr int kNTiles = kTokensPerWarp / 8;                  // S columns of 8
  static constexpr int kRows = 16 * kMTiles;
  static constexpr int kQBytes = kRows * kRowBytes;
  static constexpr int kStageBytes = 2 * kTileBytes;  // K and V
  static constexpr int kCombineBytes = kWarps * 16 * kDecodeHeadDim * 4;
  static constexpr int kRingBytes = kStages * kStageBytes;
  static_assert(kCombineBytes <= kRingBytes, "the combine buffer reuses the ring");
  static constexpr int kSmemBytes = kQBytes + kRingBytes;
};

// Byte offset of (row, 16-byte chunk) in a [rows][256 B] tile; the XOR swizzle
// makes the 8 rows an ldmatrix reads fall in 8 different bank groups.
__device__ __forceinline__ uint32_t swizzled(int row, int chunk) {
  return static_cast<uint32_t>(row * kRowBytes + ((chunk ^ (row & 7)) << 4));
}

// The usable length of request b: kv_lens clamped to the page table's reach.
__device__ __forceinline__ int32_t usable_len(const DecodeParams& p, int b) {
  const int64_t reach = int64_t{p.max_pages} << p.page_shift;
  int64_t len = p.kv_lens[b];
  len = len < 0 ? 0 : len;
  len = len < reach ? len : reach;
  return static_cast<int32_t>(len < kMaxKvLen ? len : kMaxKvLen);
}

template <int kMTiles>
struct DecodeCta {
  using G = DecodeGeometry<kMTiles>;
  const DecodeParams& p;
  uint8_t* smem;
  float (*row_max)[16];
  float (*row_sum)[16];
  int warp, lane, m_tile, n_part;

  // Issues the cp.async copies of KV tile `tile` (absolute within the request)
  // into ring stage `stage`; tokens at or past len are zero-filled.
  __device__ void load_tile(int b, int h, int tile, int len, int stage) const {
    const uint32_t k_base = device::shared_address(smem + G::kQBytes + stage * G::kStageBytes);
    const uint32_t v_base = k_base + kTileBytes;
    const int32_t* pages = p.page_table + b * p.page_table_stride;
    const int page_mask = (1 << p.page_shift) - 1;
    constexpr int kCopies = kDecodeTileTokens * kChunksPerRow / G::kThreads;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int idx = threadIdx.x + i * G::kThreads;
      const int row = idx / kChunksPerRow, chunk = idx % kChunksPerRow;
      const int token = tile * kDecodeTileTokens + row;
      const bool ok = token < len;
      const __nv_bfloat16* k_src = p.k;
      const __nv_bfloat16* v_src = p.v;
      if (ok) {
        const int64_t page = pages[token >> p.page_shift];
        const int64_t slot = token & page_mask;
        k_src += page * p.k_strides[0] + slot * p.k_strides[1] + h * p.k_strides[2] + chunk * 8;
        v_src += page * p.v_strides[0] + slot * p.v_strides[1] + h * p.v_strides[2] + chunk * 8;
      }
      device::cp_async_16(k_base + swizzled(row, chunk), k_src, ok ? 16 : 0);
      device::cp_async_16(v_base + swizzled(row, chunk), v_src, ok ? 16 : 0);
    }
  }

  // Q rows of unit (b, h) into shared memory (rows past q_len x group: zeros).
  __device__ void load_q(int b, int h) const {
    const uint32_t base = device::shared_address(smem);
    for (int idx = threadIdx.x; idx < G::kRows * kChunksPerRow; idx += G::kThreads) {
      const int row = idx / kChunksPerRow, chunk = idx % kChunksPerRow;
      const bool ok = row < p.rows;
      const __nv_bfloat16* src = p.q;
      if (ok) {
        const int qi = row / p.group, hi = row - qi * p.group;
        src += (int64_t{b} * p.q_len + qi) * p.q_row_stride +
               (int64_t{h} * p.group + hi) * p.q_head_stride + chunk * 8;
      }
      device::cp_async_16(base + swizzled(row, chunk), src, ok ? 16 : 0);
    }
  }

  // One piece: tiles [tile_begin, tile_end) of unit (b, h); slot < 0 writes
  // the final output, else partial result `slot`.
  __device__ void run_piece(int b, int h, int tile_begin, int tile_end, int slot) {
    const int len = usable_len(p, b);
    const int g = lane / 4, t = lane % 4;
    const int n_tiles = tile_end - tile_begin;

    load_q(b, h);
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < n_tiles) load_tile(b, h, tile_begin + s, len, s);
      device::cp_async_commit();
    }

    // This thread's two rows (g and g + 8 of its m-tile): the last position
    // each may attend to, and the first (sliding window).
    int last_pos[2], first_pos[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = m_tile * 16 + g + 8 * r;
      const int qi = row < p.rows ? row / p.group : p.q_len - 1;
      last_pos[r] = len - p.q_len + qi;
      first_pos[r] = p.sliding_window > 0 ? last_pos[r] - p.sliding_window + 1 : 0;
    }

    uint32_t qf[kDecodeHeadDim / 16][4];
    float o[kDecodeHeadDim / 8][4];
#pragma unroll
    for (int n = 0; n < kDecodeHeadDim / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
    const float scale_log2 = p.softmax_scale * 1.4426950408889634f;
    const int tok0 = n_part * G::kTokensPerWarp;

    for (int i = 0; i < n_tiles; ++i) {
      device::cp_async_wait<kStages - 2>();
      __syncthreads();
      // The stage read in iteration i - 1 is free once every warp passed the barrier.
      if (i + kStages - 1 < n_tiles) {
        load_tile(b, h, tile_begin + i + kStages - 1, len, (i + kStages - 1) % kStages);
      }
      device::cp_async_commit();
      if (i == 0) {
        const uint32_t q_base = device::shared_address(smem);
#pragma unroll
        for (int ks = 0; ks < kDecodeHeadDim / 16; ++ks) {
          const int row = m_tile * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
          device::ldmatrix_x4(qf[ks], q_base + swizzled(row, 2 * ks + lane / 16));
        }
      }
      const uint32_t k_base =
          device::shared_address(smem + G::kQBytes + (i % kStages) * G::kStageBytes);
      const uint32_t v_base = k_base + kTileBytes;

      // ---- S = Q K^T over this warp's token slice ---------------------------
      float s[G::kNTiles][4];
#pragma unroll
      for (int j = 0; j < G::kNTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kDecodeHeadDim / 16; ++ks) {
#pragma unroll
        for (int j = 0; j < G::kNTiles; j += 2) {
          uint32_t kb[4];
          const int row = tok0 + j * 8 + (lane / 16) * 8 + (lane % 8);
          device::ldmatrix_x4(kb, k_base + swizzled(row, 2 * ks + (lane / 8) % 2));
          device::mma_bf16_16816(s[j], qf[ks], kb[0], kb[1]);
          device::mma_bf16_16816(s[j + 1], qf[ks], kb[2], kb[3]);
        }
      }

      // ---- scale, soft cap, mask; online softmax (base 2) -------------------
      const int tile_pos0 = (tile_begin + i) * kDecodeTileTokens + tok0;
      float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int j = 0; j < G::kNTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e / 2;
          const int pos = tile_pos0 + j * 8 + 2 * t + (e & 1);
          float x = s[j][e];
          if (p.soft_cap > 0.0f) {
            x = p.soft_cap * 1.4426950408889634f * tanhf(x * (p.softmax_scale / p.soft_cap));
          } else {
            x *= scale_log2;
          }
          const bool ok = pos < len && pos <= last_pos[r] && pos >= first_pos[r];
          s[j][e] = ok ? x : -INFINITY;
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
        alpha[r] = exp2f(m_run[r] - m_use);
        m_run[r] = m_new;
        l_run[r] *= alpha[r];
#pragma unroll
        for (int j = 0; j < G::kNTiles; ++j) {
          s[j][2 * r] = exp2f(s[j][2 * r] - m_use);
          s[j][2 * r + 1] = exp2f(s[j][2 * r + 1] - m_use);
          l_run[r] += s[j][2 * r] + s[j][2 * r + 1];
        }
      }
#pragma unroll
      for (int n = 0; n < kDecodeHeadDim / 8; ++n) {
        o[n][0] *= alpha[0];
        o[n][1] *= alpha[0];
        o[n][2] *= alpha[1];
        o[n][3] *= alpha[1];
      }

      // ---- O += P V -----------------------------------------------------------
#pragma unroll
      for (int kk = 0; kk < G::kNTiles / 2; ++kk) {
        const uint32_t a[4] = {device::pack_bf16x2(s[2 * kk][0], s[2 * kk][1]),
                               device::pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                               device::pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                               device::pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
        const int row = tok0 + kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
        for (int n = 0; n < kDecodeHeadDim / 8; n += 2) {
          uint32_t vb[4];
          device::ldmatrix_x4_trans(vb, v_base + swizzled(row, n + lane / 16));
          device::mma_bf16_16816(o[n], a, vb[0], vb[1]);
          device::mma_bf16_16816(o[n + 1], a, vb[2], vb[3]);
        }
      }
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
    float* combine = reinterpret_cast<float*>(smem + G::kQBytes);  // [warp][16][128]
#pragma unroll
    for (int n = 0; n < kDecodeHeadDim / 8; ++n) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float2* dst = reinterpret_cast<float2*>(combine + (warp * 16 + g + 8 * r) * kDecodeHeadDim +
                                                n * 8 + 2 * t);
        *dst = make_float2(o[n][2 * r], o[n][2 * r + 1]);
      }
    }
    __syncthreads();
    constexpr int kQuads = kDecodeHeadDim / 4;  // float4 columns per row
    for (int idx = threadIdx.x; idx < G::kRows * kQuads; idx += G::kThreads) {
      const int row = idx / kQuads, col = (idx % kQuads) * 4;
      if (row >= p.rows) continue;
      const int mt = row / 16, rr = row % 16;
      float m_all = -INFINITY;
#pragma unroll
      for (int w = 0; w < G::kWarpsN; ++w) m_all = fmaxf(m_all, row_max[mt * G::kWarpsN + w][rr]);
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
      float den = 0.0f;
      if (m_all != -INFINITY) {
#pragma unroll
        for (int w = 0; w < G::kWarpsN; ++w) {
          const int wi = mt * G::kWarpsN + w;
          const float f = exp2f(row_max[wi][rr] - m_all);
          den += f * row_sum[wi][rr];
          const float4 v = *reinterpret_cast<const float4*>(combine + (wi * 16 + rr) * kDecodeHeadDim + col);
          acc.x += f * v.x;
          acc.y += f * v.y;
          acc.z += f * v.z;
          acc.w += f * v.w;
        }
      }
      const float inv = den > 0.0f ? 1.0f / den : 0.0f;
      acc.x *= inv;
      acc.y *= inv;
      acc.z *= inv;
      acc.w *= inv;
      const float lse2 = den > 0.0f ? m_all + log2f(den) : -INFINITY;
      if (slot < 0) {
        const int qi = row / p.group, hi = row - qi * p.group;
        const int64_t q_row = int64_t{b} * p.q_len + qi, head = int64_t{h} * p.group + hi;
        __nv_bfloat16* dst = p.out + q_row * p.out_row_stride + head * p.out_head_stride + col;
        const uint2 packed = make_uint2(device::pack_bf16x2(acc.x, acc.y), device::pack_bf16x2(acc.z, acc.w));
        *reinterpret_cast<uint2*>(dst) = packed;
        if (p.lse != nullptr && col == 0) {
          p.lse[q_row * p.lse_row_stride + head * p.lse_head_stride] = lse2 * 0.6931471805599453f;
        }
      } else {
        const int64_t at = int64_t{slot} * p.rows + row;
        *reinterpret_cast<float4*>(p.partial_out + at * kDecodeHeadDim + col) = acc;
        if (col == 0) p.partial_lse[at] = lse2;
      }
    }
    __syncthreads();  // the combine buffer and the Q tile are reused by the next piece
  }
};

template <int kMTiles>
__global__ void __launch_bounds__(DecodeGeometry<kMTiles>::kThreads)
    decode_attention_kernel(const __grid_constant__ DecodeParams p) {
  using G = DecodeGeometry<kMTiles>;
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ float row_max[G::kWarps][16];
  __shared__ float row_sum[G::kWarps][16];

  // The schedule (and the caller's inputs) come from earlier kernels; the
  // merge kernel may be scheduled as soon as every CTA got here.
  device::pdl_wait_for_previous();
  device::pdl_allow_next();
  const int32_t* sched = p.schedule;
  const ScheduleLayout layout = schedule_layout(p.batch, p.kv_heads, p.num_bins);
  // One round of independent loads: the header and this bin's first unit.
  const int64_t per_bin = sched[0], total = sched[1];
  const int32_t units = sched[2];
  const int32_t first_unit = sched[layout.bin_unit + blockIdx.x];
  const int64_t begin = blockIdx.x * per_bin;
  if (begin >= total || first_unit < 0) return;
  const int64_t end = begin + per_bin < total ? begin + per_bin : total;
  const int32_t* tile_start = sched + layout.tile_start;
  DecodeCta<kMTiles> cta{p, smem, row_max, row_sum, static_cast<int>(threadIdx.x / 32),
                         static_cast<int>(threadIdx.x % 32), 0, 0};
  cta.m_tile = cta.warp / G::kWarpsN;
  cta.n_part = cta.warp % G::kWarpsN;
  int64_t pos = begin;
  for (int u = first_unit; pos < end && u < units; ++u) {
    const int64_t ts = tile_start[u], te = tile_start[u + 1];
    if (te <= pos) continue;  // empty units
    const int64_t piece_end = te < end ? te : end;
    const int32_t pieces = unit_pieces(ts, te - ts, static_cast<int32_t>(per_bin));
    const int slot = pieces >= 2 ? sched[layout.slot_start + u] +
                                       static_cast<int>(blockIdx.x - ts / per_bin)
                                 : -1;
    const int b = u / p.kv_heads, h = u - b * p.kv_heads;
    const int first = sched[layout.first_tile + b];
    cta.run_piece(b, h, first + static_cast<int>(pos - ts), first + static_cast<int>(piece_end - ts),
                  slot);
    pos = piece_end;
  }
}

}  // namespace hpc_ops::attention
