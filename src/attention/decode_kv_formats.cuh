// SPDX-License-Identifier: Apache-2.0
// How the decode-attention kernels turn a KV tile in shared memory into
// tensor-core fragments, one struct per cache format:
//
//   KvBf16  bf16 K/V (256 B per token), bf16 mma; Q staged in shared memory and
//           read with ldmatrix; K via ldmatrix, V via ldmatrix.trans.
//   KvFp8   e4m3 K/V (128 B per token), fp16 mma (e4m3 -> fp16 is exact, so is
//           the product). There is no 8-bit ldmatrix.trans on sm_90, so the
//           fragments are built from 16-byte shared loads and permutes:
//           * S = Q K^T is a sum over the head dim, so any order of the dims
//             works if Q uses the same one: lane t of a quad takes dims
//             16t .. 16t+15 (and 64 + ...) of its K row, 4 per mma k-step,
//             one 16-byte load per 4 k-steps; Q fragments are read from global
//             memory in the same order.
//           * O = P V: lane (g, t) needs V at tokens 2t, 2t+1, 2t+8, 2t+9 of a
//             16-token step; it loads those 4 rows at dims 16g .. 16g+15, so
//             output column g of n-tile n is dim 16g + n (o_dim below), and
//             byte permutes pair the tokens for the e4m3x2 conversions.
//   KvBf16Wgmma  bf16 K/V for the rows-on-M kernel above 32 rows: the ring's
//           tiles in wgmma's 128-byte swizzle, S and P V by wgmma straight
//           from the ring with Q and P as register operands.
//   KvFp8Wgmma  e4m3 K/V for the rows-on-M kernel above 32 rows: each tile
//           widened to fp16 once per CTA in shared memory, S and P V by
//           wgmma with Q and P as register operands.
//   KvFp8TokensOnM  e4m3 K/V for the tokens-on-M kernel (decode_tokens_on_m.cuh):
//           K and V tiles in wgmma's (and TMA's) 128-byte swizzle.
//
// These (but the last) are the rows-on-M kernel's fragments
// (decode_rows_on_m.cuh). They write the warp's O accumulators into the
// combine buffer through combine_offset, one XOR-swizzled layout of [16
// rows][128 fp32] that keeps every format's stores and the row-wise reader
// free of bank conflicts.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "attention/decode_geometry.cuh"
#include "attention/decode_kernels.h"
#include "common/bulk_copy.cuh"
#include "common/mma_sm80.cuh"
#include "common/vec.cuh"
#include "common/wgmma.cuh"

namespace hpc_ops::attention {

constexpr int kDecodeDimSteps = kDecodeHeadDim / 16;  // mma k-steps over the head dim (8)
constexpr int kDecodeDimTiles = kDecodeHeadDim / 8;   // O columns of 8 (16)

// Float offset of (row, dim) in a [rows][128] fp32 buffer: the 4-float chunk
// index is XOR-ed with bits of the row and of the chunk's 32-float group.
__device__ __forceinline__ int combine_offset(int row, int dim) {
  const int chunk = dim >> 2;
  const int swz = ((chunk >> 3) & 3) ^ ((row & 1) << 2) ^ (row & 2);
  return row * kDecodeHeadDim + ((chunk ^ swz) << 2) + (dim & 3);
}

// A warp's O in the mma accumulator layout (o[n][2r + j]: row g + 8r, dim
// 8n + 2t + j) into combine rows base_row + 0..15.
__device__ __forceinline__ void store_o_in_mma_layout(float* combine, int base_row,
                                                      const float (&o)[kDecodeDimTiles][4], int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int n = 0; n < kDecodeDimTiles; ++n) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = base_row + g + 8 * r;
      *reinterpret_cast<float2*>(combine + combine_offset(row, n * 8 + 2 * t)) =
          make_float2(o[n][2 * r], o[n][2 * r + 1]);
    }
  }
}

// The rows-on-M products by wgmma (KvFp8Wgmma on its widened copy, fp16;
// KvBf16Wgmma on the ring, bf16): K and V tiles of [64 tokens][2 blocks of
// 64 dims] in the 128-byte swizzle, blocks `block_bytes` apart.
// A block: 64 tokens of 64 16-bit dims, 128 bytes a token; a P V k-step of
// 16 tokens spans 16 of its rows.
constexpr int kWgmmaBlockBytes = kDecodeTileTokens * 128;
constexpr int kWgmmaKStepBytes = 16 * 128;
// s = Q K^T over the tile's 64 tokens (the warpgroup's 64 rows; Q in
// registers, each warp's m16n8k16 A fragments): 8 k-steps of 16 dims, each
// 32 bytes along a block's rows (K read K-major).
template <bool kBf16, int kNTiles>
__device__ __forceinline__ void wgmma_qk(float (&s)[kNTiles][4], const uint32_t (&qf)[kDecodeDimSteps][4],
                                         uint32_t k_base, uint32_t block_bytes) {
  static_assert(kNTiles == kDecodeTileTokens / 8, "one warp row block takes the whole tile");
  float* acc = &s[0][0];
#pragma unroll
  for (int i = 0; i < 4 * kNTiles; ++i) cute::warpgroup_fence_operand(acc[i]);
  cute::warpgroup_arrive();
#pragma unroll
  for (int ks = 0; ks < kDecodeDimSteps; ++ks) {
    const uint32_t at = k_base + (ks / 4) * block_bytes + (ks % 4) * 32;
    device::wgmma_16_rs<kDecodeTileTokens, false, kBf16>(
        qf[ks], device::sw128_desc(device::sw128_kmajor_desc_lo(at)), acc, ks > 0);
  }
  cute::warpgroup_commit_batch();
  cute::warpgroup_wait<0>();
#pragma unroll
  for (int i = 0; i < 4 * kNTiles; ++i) cute::warpgroup_fence_operand(acc[i]);
}

// o += P V with P (probabilities) in the S accumulator layout, which is the
// A fragments' layout: 4 k-steps of 16 tokens (2 swizzle atoms each; V read
// MN-major).
template <bool kBf16, int kNTiles>
__device__ __forceinline__ void wgmma_pv(float (&o)[kDecodeDimTiles][4], const float (&p)[kNTiles][4],
                                         uint32_t v_base, uint32_t block_bytes) {
  uint32_t a[kNTiles / 2][4];
#pragma unroll
  for (int kk = 0; kk < kNTiles / 2; ++kk) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float* pair = &p[2 * kk + e / 2][2 * (e % 2)];
      a[kk][e] = kBf16 ? device::pack_bf16x2(pair[0], pair[1]) : device::pack_f16x2(pair[0], pair[1]);
    }
  }
  float* acc = &o[0][0];
#pragma unroll
  for (int i = 0; i < 4 * kDecodeDimTiles; ++i) cute::warpgroup_fence_operand(acc[i]);
  cute::warpgroup_arrive();
#pragma unroll
  for (int kk = 0; kk < kNTiles / 2; ++kk) {
    device::wgmma_16_rs<kDecodeHeadDim, true, kBf16>(a[kk], device::sw128_mnmajor_desc(v_base + kk * kWgmmaKStepBytes, block_bytes),
                                                     acc, true);
  }
  cute::warpgroup_commit_batch();
  cute::warpgroup_wait<0>();
#pragma unroll
  for (int i = 0; i < 4 * kDecodeDimTiles; ++i) cute::warpgroup_fence_operand(acc[i]);
}

// The products and O store of the rows-on-M wgmma formats, whose K and V
// blocks of 64 dims lie kWgmmaBlockBytes apart; Q fragments from global memory
// through `load(element offset of the row, dim)` (a dims pair as a 32-bit
// fp16 or bf16 pair), in the mma's own dim order, rows past p.rows zeros.
template <bool kBf16>
struct WgmmaRowsOnM {
  template <class Load>
  __device__ static void load_q_fragments(uint32_t (&qf)[kDecodeDimSteps][4], const DecodeParams& p, int b,
                                          int h, int m_tile, int lane, Load&& load) {
    const int t = lane % 4;
    for_fragment_rows(p, b, h, m_tile, lane, [&](int r, bool ok, int64_t at) {
#pragma unroll
      for (int ks = 0; ks < kDecodeDimSteps; ++ks) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {  // a0 / a1: dims 16ks + 2t (+1); a2 / a3: 8 further
          qf[ks][r + 2 * half] = ok ? load(at, 16 * ks + 8 * half + 2 * t) : 0u;
        }
      }
    });
  }

  template <int kNTiles>
  __device__ static void qk(float (&s)[kNTiles][4], const uint32_t (&qf)[kDecodeDimSteps][4],
                            uint32_t k_base, int, int) {
    wgmma_qk<kBf16>(s, qf, k_base, kWgmmaBlockBytes);
  }
  template <int kNTiles>
  __device__ static void pv(float (&o)[kDecodeDimTiles][4], const float (&p)[kNTiles][4],
                            uint32_t v_base, int, int) {
    wgmma_pv<kBf16>(o, p, v_base, kWgmmaBlockBytes);
  }
  __device__ static void store_o(float* combine, int base_row, const float (&o)[kDecodeDimTiles][4],
                                 int lane) {
    store_o_in_mma_layout(combine, base_row, o, lane);
  }
};

struct KvBf16 {
  static constexpr bool kFp8 = false;
  static constexpr int kElementBytes = 2;
  static constexpr int kTokenBytes = kDecodeHeadDim * kElementBytes;  // 256
  static constexpr int kStages = 3;  // 3 x 32 KB in flight per CTA, 2 CTAs per SM
  static constexpr bool kQInSharedMemory = true;
  static constexpr bool kTokensOnM = false;
  static constexpr bool kWidened = false;
  static constexpr bool kRowsOnMWgmma = false;  // RowsOnM products by mma.sync (wgmma when true)
  static constexpr bool kAsyncProxyReadsRing = false;
  // cp.async only: TMA tiles (as two 128-byte halves per token) gained 1-3%
  // on uniform batches and lost 2.5-4% on skewed ones (docs/perf/
  // decode_attention.md, v5), and their 1024-byte alignment cost the 64-row
  // variant (KvBf16Wgmma's rows since v11) its second CTA per SM.
  static constexpr bool kTmaTiles = false;
  static constexpr int kAlign = 16;
  static constexpr int kExtraBytes = 0;
  static constexpr int q_smem_bytes(int rows) { return rows * kTokenBytes; }

  // Byte offset of (row, 16-byte chunk) in a [rows][256 B] tile; the XOR
  // swizzle makes the 8 rows an ldmatrix reads fall in 8 different bank groups.
  __device__ static uint32_t k_offset(int row, int chunk) {
    return static_cast<uint32_t>(row * kTokenBytes + ((chunk ^ (row & 7)) << 4));
  }
  __device__ static uint32_t v_offset(int row, int chunk) { return k_offset(row, chunk); }
  __device__ static uint32_t q_offset(int row, int chunk) { return k_offset(row, chunk); }

  __device__ static void q_fragments(uint32_t (&qf)[kDecodeDimSteps][4], uint32_t q_base,
                                     int m_tile, int lane) {
#pragma unroll
    for (int ks = 0; ks < kDecodeDimSteps; ++ks) {
      const int row = m_tile * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
      device::ldmatrix_x4(qf[ks], q_base + q_offset(row, 2 * ks + lane / 16));
    }
  }

  // s[j] += Q K^T for the 8-token n-tiles j of the warp's slice starting at tok0.
  template <int kNTiles>
  __device__ static void qk(float (&s)[kNTiles][4], const uint32_t (&qf)[kDecodeDimSteps][4],
                            uint32_t k_base, int tok0, int lane) {
#pragma unroll
    for (int ks = 0; ks < kDecodeDimSteps; ++ks) {
#pragma unroll
      for (int j = 0; j < kNTiles; j += 2) {
        uint32_t kb[4];
        const int row = tok0 + j * 8 + (lane / 16) * 8 + (lane % 8);
        device::ldmatrix_x4(kb, k_base + k_offset(row, 2 * ks + (lane / 8) % 2));
        device::mma_bf16_16816(s[j], qf[ks], kb[0], kb[1]);
        device::mma_bf16_16816(s[j + 1], qf[ks], kb[2], kb[3]);
      }
    }
  }

  // o += P V with P (probabilities) in the S accumulator layout.
  template <int kNTiles>
  __device__ static void pv(float (&o)[kDecodeDimTiles][4], const float (&p)[kNTiles][4],
                            uint32_t v_base, int tok0, int lane) {
#pragma unroll
    for (int kk = 0; kk < kNTiles / 2; ++kk) {
      const uint32_t a[4] = {device::pack_bf16x2(p[2 * kk][0], p[2 * kk][1]),
                             device::pack_bf16x2(p[2 * kk][2], p[2 * kk][3]),
                             device::pack_bf16x2(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                             device::pack_bf16x2(p[2 * kk + 1][2], p[2 * kk + 1][3])};
      const int row = tok0 + kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
      for (int n = 0; n < kDecodeDimTiles; n += 2) {
        uint32_t vb[4];
        device::ldmatrix_x4_trans(vb, v_base + v_offset(row, n + lane / 16));
        device::mma_bf16_16816(o[n], a, vb[0], vb[1]);
        device::mma_bf16_16816(o[n + 1], a, vb[2], vb[3]);
      }
    }
  }

  __device__ static void store_o(float* combine, int base_row, const float (&o)[kDecodeDimTiles][4],
                                 int lane) {
    store_o_in_mma_layout(combine, base_row, o, lane);
  }
};

struct KvFp8 {
  static constexpr bool kFp8 = true;
  static constexpr int kTokenBytes = kDecodeHeadDim;  // 128
  // 4 x 16 KB in flight per CTA: as many bytes per SM as the bf16 kernel's
  // 3 x 32 KB at fewer stages would not cover the longer load latency.
  static constexpr int kStages = 4;
  static constexpr bool kQInSharedMemory = false;
  static constexpr bool kTokensOnM = false;
  static constexpr bool kWidened = false;
  static constexpr bool kRowsOnMWgmma = false;
  static constexpr bool kAsyncProxyReadsRing = false;
  static constexpr bool kTmaTiles = false;  // its own layouts below: cp.async only
  static constexpr int kAlign = 16;
  static constexpr int kExtraBytes = 0;
  static constexpr int q_smem_bytes(int) { return 0; }

  // K: a load phase (8 lanes) reads chunks 0-3 (or 4-7) of rows 2i and
  // 2i + 1; flipping bit 2 by row parity puts the 8 reads in 8 bank groups.
  __device__ static uint32_t k_offset(int row, int chunk) {
    return static_cast<uint32_t>(row * kTokenBytes + ((chunk ^ ((row & 1) << 2)) << 4));
  }
  // V: a load phase reads chunks {2i, 2i + 1} of rows r, r + 2, r + 4, r + 6
  // (r even): XOR with row bits 1-2 spreads them over 8 bank groups.
  // (Cache writes are 8 lanes along one row: conflict-free for any XOR.)
  __device__ static uint32_t v_offset(int row, int chunk) {
    return static_cast<uint32_t>(row * kTokenBytes + ((chunk ^ (row & 6)) << 4));
  }

  // The dim of Q / K a lane feeds into k-step ks at fragment slot e (0 or 1:
  // the low or high pair): quad lane t covers 16t .. 16t+15 of each 64-dim half.
  __device__ static int qk_dim(int ks, int t) { return (ks / 4) * 64 + t * 16 + (ks % 4) * 4; }

  // Q fragments straight from global memory (fp8 or bf16 q, both to fp16),
  // in the permuted dim order of qk(); rows past p.rows are zeros.
  __device__ static void q_fragments(uint32_t (&qf)[kDecodeDimSteps][4], const DecodeParams& p,
                                     int b, int h, int m_tile, int lane) {
    const int t = lane % 4;
    for_fragment_rows(p, b, h, m_tile, lane, [&](int r, bool ok, int64_t at) {
#pragma unroll
      for (int ks = 0; ks < kDecodeDimSteps; ++ks) {
        const int dim = qk_dim(ks, t);
        uint32_t lo = 0, hi2 = 0;
        if (ok && p.q_fp8) {
          const uint32_t w = *reinterpret_cast<const uint32_t*>(
              static_cast<const uint8_t*>(p.q) + at + dim);
          lo = device::e4m3x2_to_f16x2(w);
          hi2 = device::e4m3x2_hi_to_f16x2(w);
        } else if (ok) {
          const uint2 w = *reinterpret_cast<const uint2*>(
              static_cast<const __nv_bfloat16*>(p.q) + at + dim);
          lo = device::bf16x2_to_f16x2(w.x);
          hi2 = device::bf16x2_to_f16x2(w.y);
        }
        qf[ks][r] = lo;       // a0 / a1: dims dim, dim + 1 of rows g / g + 8
        qf[ks][2 + r] = hi2;  // a2 / a3: dims dim + 2, dim + 3
      }
    });
  }

  template <int kNTiles>
  __device__ static void qk(float (&s)[kNTiles][4], const uint32_t (&qf)[kDecodeDimSteps][4],
                            uint32_t k_base, int tok0, int lane) {
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int j = 0; j < kNTiles; ++j) {
      const int row = tok0 + j * 8 + g;
      const uint4 lo = device::lds_128(k_base + k_offset(row, t));
      const uint4 hi = device::lds_128(k_base + k_offset(row, t + 4));
      const uint32_t words[kDecodeDimSteps] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
      for (int ks = 0; ks < kDecodeDimSteps; ++ks) {
        device::mma_f16_16816(s[j], qf[ks], device::e4m3x2_to_f16x2(words[ks]),
                              device::e4m3x2_hi_to_f16x2(words[ks]));
      }
    }
  }

  template <int kNTiles>
  __device__ static void pv(float (&o)[kDecodeDimTiles][4], const float (&p)[kNTiles][4],
                            uint32_t v_base, int tok0, int lane) {
#pragma unroll
    for (int kk = 0; kk < kNTiles / 2; ++kk) {
      const uint32_t a[4] = {device::pack_f16x2(p[2 * kk][0], p[2 * kk][1]),
                             device::pack_f16x2(p[2 * kk][2], p[2 * kk][3]),
                             device::pack_f16x2(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                             device::pack_f16x2(p[2 * kk + 1][2], p[2 * kk + 1][3])};
      const VRows rows = load_v_rows<KvFp8>(v_base, tok0 + kk * 16, lane);
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        uint32_t pairs[4][2];
        v_token_pairs(rows, w, pairs);
#pragma unroll
        for (int d = 0; d < 4; ++d) device::mma_f16_16816(o[4 * w + d], a, pairs[d][0], pairs[d][1]);
      }
    }
  }

  // The V side of a P V product over the 16 tokens from row0: lane (g, t)
  // loads tokens 2t, 2t + 1, 2t + 8, 2t + 9 at dims 16g .. 16g + 15 (one
  // 16-byte load each; Layout::v_offset places the rows) ...
  struct VRows {
    uint32_t w0[4], w1[4], w8[4], w9[4];
  };
  template <class Layout>
  __device__ static VRows load_v_rows(uint32_t v_base, int row0, int lane) {
    const int g = lane / 4, t = lane % 4;
    const int row = row0 + 2 * t;
    const uint4 r0 = device::lds_128(v_base + Layout::v_offset(row, g));
    const uint4 r1 = device::lds_128(v_base + Layout::v_offset(row + 1, g));
    const uint4 r8 = device::lds_128(v_base + Layout::v_offset(row + 8, g));
    const uint4 r9 = device::lds_128(v_base + Layout::v_offset(row + 9, g));
    return VRows{{r0.x, r0.y, r0.z, r0.w}, {r1.x, r1.y, r1.z, r1.w}, {r8.x, r8.y, r8.z, r8.w},
                 {r9.x, r9.y, r9.z, r9.w}};
  }
  // ... and pairs dims 16g + 4w + d (d < 4) as fp16: pairs[d][0] = tokens
  // (2t, 2t + 1), pairs[d][1] = (2t + 8, 2t + 9); byte permutes, then exact
  // e4m3x2 -> f16x2 conversions. Used by pv() above (dim d as the n-tile) and
  // by the tokens-on-M kernel (dims as its M rows); one word at a time keeps
  // the fp16 pairs' registers short-lived.
  __device__ static void v_token_pairs(const VRows& r, int w, uint32_t (&pairs)[4][2]) {
    // Bytes (token, token + 1) of dims 4w, 4w + 1 | 4w + 2, 4w + 3, interleaved.
    const uint32_t near01 = __byte_perm(r.w0[w], r.w1[w], 0x5140);
    const uint32_t far01 = __byte_perm(r.w0[w], r.w1[w], 0x7362);
    const uint32_t near89 = __byte_perm(r.w8[w], r.w9[w], 0x5140);
    const uint32_t far89 = __byte_perm(r.w8[w], r.w9[w], 0x7362);
    pairs[0][0] = device::e4m3x2_to_f16x2(near01);
    pairs[0][1] = device::e4m3x2_to_f16x2(near89);
    pairs[1][0] = device::e4m3x2_hi_to_f16x2(near01);
    pairs[1][1] = device::e4m3x2_hi_to_f16x2(near89);
    pairs[2][0] = device::e4m3x2_to_f16x2(far01);
    pairs[2][1] = device::e4m3x2_to_f16x2(far89);
    pairs[3][0] = device::e4m3x2_hi_to_f16x2(far01);
    pairs[3][1] = device::e4m3x2_hi_to_f16x2(far89);
  }

  // o[n][c + 2r] holds dim 32t + 16c + n of row g + 8r: four float4 per (r, c).
  __device__ static void store_o(float* combine, int base_row, const float (&o)[kDecodeDimTiles][4],
                                 int lane) {
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int e = c + 2 * r;
          *reinterpret_cast<float4*>(combine + combine_offset(base_row + g + 8 * r,
                                                              32 * t + 16 * c + 4 * q)) =
              make_float4(o[4 * q][e], o[4 * q + 1][e], o[4 * q + 2][e], o[4 * q + 3][e]);
        }
      }
    }
  }
};

// bf16 K/V for the rows-on-M kernel above 32 rows: the ring's tiles are in
// wgmma's layout (two [64 tokens][64 dims] blocks per tensor, 128-byte
// swizzle), so S = Q K^T and O += P V are wgmma straight from the ring with
// Q and P as register operands: K and V leave shared memory once per
// warpgroup, where KvBf16's warps each read the whole tile by ldmatrix
// (4 x 32 KB per tile at 64 rows; BF16 q_len 4 64/4 ran 3-10% slower so).
// Q fragments come from global memory.
struct KvBf16Wgmma : WgmmaRowsOnM<true> {
  static constexpr bool kFp8 = false;
  static constexpr int kElementBytes = 2;
  static constexpr int kTokenBytes = kDecodeHeadDim * kElementBytes;  // 256
  static constexpr int kStages = 3;  // as KvBf16: 2 CTAs per SM
  static constexpr bool kQInSharedMemory = false;
  static constexpr bool kTokensOnM = false;
  static constexpr bool kWidened = false;
  static constexpr bool kRowsOnMWgmma = true;
  static constexpr bool kAsyncProxyReadsRing = true;
  static constexpr bool kTmaTiles = false;
  static constexpr int kAlign = 1024;  // the swizzle atoms
  static constexpr int kExtraBytes = 0;
  static constexpr int q_smem_bytes(int) { return 0; }

  // Byte offset of (row, 16-byte chunk) of a tile: chunk c (dims 8c .. 8c + 7)
  // lies in block c / 8. The copies' quarter warps write one row's 8 chunks
  // of a block: 8 bank groups.
  __device__ static uint32_t k_offset(int row, int chunk) {
    return static_cast<uint32_t>((chunk / 8) * kWgmmaBlockBytes) + device::swizzle_128b_offset(row, chunk % 8);
  }
  __device__ static uint32_t v_offset(int row, int chunk) { return k_offset(row, chunk); }

  // Q fragments straight from global memory (bf16, as the mma takes them).
  __device__ static void q_fragments(uint32_t (&qf)[kDecodeDimSteps][4], const DecodeParams& p,
                                     int b, int h, int m_tile, int lane) {
    const auto* q = static_cast<const __nv_bfloat16*>(p.q);
    load_q_fragments(qf, p, b, h, m_tile, lane,
                     [&](int64_t at, int dim) { return *reinterpret_cast<const uint32_t*>(q + at + dim); });
  }
};

// e4m3 K/V for the rows-on-M kernel above 32 query rows, on wgmma. The CTA
// widens each tile once into fp16 K and V tiles in shared memory (the
// format's extra bytes) in wgmma's 128-byte swizzle: a tile is two blocks of
// [64 tokens][64 dims] (8 KB each), read K-major for S = Q K^T (dims along
// K) and MN-major for O = P V (dims along N). Q (each warp's m16n8k16 A
// fragments, fp16, from global memory) and P (from the S accumulators) are
// register operands. A warpgroup's 64 rows are one wgmma M block, so K and V
// are read from shared memory once per warpgroup; read in place by mma.sync
// (KvFp8), every warp converted the whole tile for its own m-tile (4x the
// conversions at 64 rows), and widened once but read by ldmatrix per warp,
// the shared-memory traffic (~190 KB per tile at 64 rows) made it 8-31%
// slower than that (docs/perf/decode_attention.md, v10).
struct KvFp8Wgmma : WgmmaRowsOnM<false> {
  static constexpr bool kFp8 = true;
  static constexpr int kTokenBytes = kDecodeHeadDim;  // 128 in the ring
  static constexpr int kStages = 4;                   // as KvFp8 (4 tiles in flight: see DecodeCta::kAhead)
  static constexpr bool kQInSharedMemory = false;
  static constexpr bool kTokensOnM = false;
  static constexpr bool kWidened = true;
  static constexpr bool kRowsOnMWgmma = true;
  static constexpr bool kAsyncProxyReadsRing = false;  // wgmma reads the widened copy
  static constexpr bool kTmaTiles = false;
  static constexpr int kAlign = 1024;  // the wide tiles' swizzle atoms
  static constexpr int kWideTileBytes = 2 * kWgmmaBlockBytes;
  // fp16 K, then V, then the tile's per-token k scales (the ring stage is
  // refilled once widened, before the softmax reads them).
  static constexpr int kWideScaleOffset = 2 * kWideTileBytes;
  static constexpr int kExtraBytes = kWideScaleOffset + kDecodeTileTokens * 4;
  static constexpr int q_smem_bytes(int) { return 0; }

  // The ring's e4m3 rows are plain: widen's 8-byte reads (16 lanes a row)
  // and the copies' 16-byte writes (8 threads a row) are free of bank
  // conflicts either way.
  __device__ static uint32_t k_offset(int row, int chunk) {
    return static_cast<uint32_t>(row * kTokenBytes + (chunk << 4));
  }
  __device__ static uint32_t v_offset(int row, int chunk) { return k_offset(row, chunk); }

  // Byte offset of fp16 chunk `chunk` (dims 8 chunk .. + 7) of wide row `row`
  // (K tokens 0-63, then V tokens 64-127).
  __device__ static uint32_t wide_offset(int row, int chunk) {
    return static_cast<uint32_t>((row / kDecodeTileTokens) * kWideTileBytes + (chunk / 8) * kWgmmaBlockBytes) +
           device::swizzle_128b_offset(row % kDecodeTileTokens, chunk % 8);
  }

  // Q fragments straight from global memory (fp8 or bf16 q, both to fp16).
  __device__ static void q_fragments(uint32_t (&qf)[kDecodeDimSteps][4], const DecodeParams& p,
                                     int b, int h, int m_tile, int lane) {
    load_q_fragments(qf, p, b, h, m_tile, lane, [&](int64_t at, int dim) {
      const auto* q8 = static_cast<const uint8_t*>(p.q) + at + dim;
      const auto* q16 = static_cast<const __nv_bfloat16*>(p.q) + at + dim;
      return p.q_fp8 ? device::e4m3x2_to_f16x2(*reinterpret_cast<const uint16_t*>(q8))
                     : device::bf16x2_to_f16x2(*reinterpret_cast<const uint32_t*>(q16));
    });
  }

  // The K and V tiles of a ring stage (contiguous: 2 x 64 rows of 128 bytes)
  // into fp16 at `wide`, then a proxy fence for wgmma's reads. A thread
  // widens 8 bytes of a row per pass (16 lanes a row; a quarter warp stores
  // 8 chunks of one block: 8 bank groups), rows kRowsPerPass apart: a
  // multiple of 8, so its rows share their swizzle and every address is its
  // first one plus a constant (computed per pass, they were ~110 of ~850
  // instructions per warp and tile). The shared loads and stores are
  // volatile asm, kept in program order: eight passes' loads go before their
  // stores (one pass at a time chained 16 load latencies per tile).
  template <int kThreads>
  __device__ static void widen(uint32_t stage, uint32_t wide) {
    constexpr int kRowsPerPass = kThreads / 16;
    static_assert(kRowsPerPass % 8 == 0 && kDecodeTileTokens % kRowsPerPass == 0, "one swizzle per thread");
    constexpr int kPasses = 2 * kDecodeTileTokens / kRowsPerPass;
    constexpr int kBatch = kPasses < 8 ? kPasses : 8;
    const int chunk = static_cast<int>(threadIdx.x % 16), row0 = static_cast<int>(threadIdx.x / 16);
    const uint32_t src = stage + row0 * kTokenBytes + chunk * 8;
    const uint32_t dst = wide + wide_offset(row0, chunk);
#pragma unroll
    for (int i0 = 0; i0 < kPasses; i0 += kBatch) {
      uint2 w[kBatch];
#pragma unroll
      for (int i = 0; i < kBatch; ++i) w[i] = device::lds_64(src + (i0 + i) * kRowsPerPass * kTokenBytes);
#pragma unroll
      for (int i = 0; i < kBatch; ++i) {
        const int row = (i0 + i) * kRowsPerPass;  // past row0
        const uint4 f = make_uint4(device::e4m3x2_to_f16x2(w[i].x), device::e4m3x2_hi_to_f16x2(w[i].x),
                                   device::e4m3x2_to_f16x2(w[i].y), device::e4m3x2_hi_to_f16x2(w[i].y));
        device::sts_128(dst + (row / kDecodeTileTokens) * kWideTileBytes + (row % kDecodeTileTokens) * 128, f);
      }
    }
    device::fence_proxy_async_shared();
  }

};

// e4m3 K/V for the tokens-on-M kernel (decode_tokens_on_m.cuh): K and V
// tiles in the 128-byte-swizzled K-major layout wgmma reads (common/wgmma.cuh)
// and TMA writes, so stages and the q tile are 1024-byte aligned; V is read
// by lanes as KvFp8's (load_v_rows: the swizzle keeps its 16-byte loads free
// of bank conflicts too) and converted to fp16. The q tile holds kQBlocks x 8
// rows of e4m3 "hi" parts,
// as many "mid" rows, then "lo" rows (decode_tokens_on_m.cuh); the extra
// bytes hold each query row's scale.
template <int kQBlocksT>
struct KvFp8TokensOnM : KvFp8 {
  static constexpr bool kTokensOnM = true;
  static constexpr bool kAsyncProxyReadsRing = true;
  static constexpr bool kTmaTiles = true;
  static constexpr int kQBlocks = kQBlocksT;
  static constexpr int kQParts = 3;
  // 3 x 16 KB stages (~53 KB per CTA): 4 CTAs per SM at 8 query rows, where
  // 4 stages fit 3 (issue-bound at 2.75 warps per scheduler).
  static constexpr int kStages = 3;
  static constexpr int kAlign = 1024;
  static constexpr int kExtraBytes = 8 * kQBlocks * 4;  // the query rows' scales
  static constexpr int q_smem_bytes(int) { return kQParts * 8 * kQBlocks * kTokenBytes; }
  __device__ static uint32_t k_offset(int row, int chunk) {
    return device::swizzle_128b_offset(row, chunk);
  }
  __device__ static uint32_t v_offset(int row, int chunk) {
    return device::swizzle_128b_offset(row, chunk);
  }
};

}  // namespace hpc_ops::attention
