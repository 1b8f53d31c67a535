// SPDX-License-Identifier: Apache-2.0
// Grouped GEMM y_g = x_g @ W_g^T for MoE experts, "swapAB": the weights sit on
// wgmma's M side (128 output channels per tile, 64 per consumer warpgroup)
// and the group's rows (tokens) on its N side (kTokenTile = 16..128), so a
// decode-sized group of a few tokens still fills the instruction and the
// kernel streams weights at the memory rate. (Block-scaled 128-row tiles swap
// the two: see the consumers below.)
//
// One persistent CTA per SM, three warpgroups:
//   producer (warpgroup 0, 56 registers): per pipeline stage, one thread
//     issues the TMA load of the 128 x 128-byte weight tile. The row tile of
//     x: with kXByTma (contiguous and masked layouts) the same thread loads it
//     by TMA too (rows past the group are loaded but never stored; past the
//     tensor, zeros), and only the first warp runs, copying the scales; else
//     all 128 threads cp.async their share (rows found through the layout's
//     addressing, so the gathered layout needs no gather pass; rows past the
//     group and K past the end are zero-filled). Scales come by cp.async,
//     whose completions arrive on the stage's barrier.
//     Why TMA for x: at 4096 rows per group the 128 cp.async threads issued
//     ~207 instructions per stage and warp, more than a consumer warp (~166),
//     on the schedulers the consumers share (ncu: 52% of issue slots busy,
//     consumers stalled on issue and dependent latency, tensor pipe 55%).
//   consumers (warpgroups 1, 2, 224 registers): per stage four wgmma of
//     K = 32 bytes; FP8 partial sums are promoted into fp32 registers every
//     128 K (the tensor cores' FP8 accumulation is not full fp32), times the
//     block scales when there are. Block-scaled 128-row tiles swap the
//     operands (rows on M, 64 per warpgroup; channels on N: tokens_on_m), so
//     a thread's fragment spans 2 rows and a promotion takes 2 activation
//     scales instead of 32 (13-19% faster at 512 rows per group). The wgmma
//     descriptors live in uniform registers (a 32-bit add per stage and
//     operand). Epilogue: each
//     warpgroup stages its half of the tile in bf16 (stmatrix, 128-byte
//     swizzle: its 64 channels, or its 64 rows where the rows are on M) and
//     stores it by TMA when those rows lie wholly in the group, else in
//     16-byte pieces by all its threads; the two warpgroups never wait for
//     each other there.
// Work: tiles (group, channel tile, row tile) in group order, row tiles
// fastest, so CTAs running together share a weight tile through L2. The
// per-group tile counts come from the device (offsets or counts), so one
// CUDA graph serves every routing.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <type_traits>

#include <cute/arch/copy_sm90_desc.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "common/bulk_copy.cuh"
#include "common/device_info.h"
#include "common/pdl.cuh"
#include "common/wgmma.cuh"
#include "gemm/grouped_gemm_params.h"

namespace hpc_ops::gemm {

template <class Element, int kTokenTile, Epilogue kEpilogue, bool kXByTma>
struct GroupedGemmTraits {
  static_assert(kTokenTile % 16 == 0 && kTokenTile >= 16 && kTokenTile <= 128, "token tile");
  static constexpr int kElementBytes = static_cast<int>(sizeof(Element));
  static constexpr int kKTile = kKTileBytes / kElementBytes;  // elements per stage
  static constexpr int kStageW = kWeightTile * kKTileBytes;   // 16 KB
  static constexpr int kStageX = kTokenTile * kKTileBytes;
  static constexpr int kStageBytes = kStageW + kStageX;
  // Staged output: per consumer warpgroup its half of the tile (its 64
  // channels x the row tile, or with kTokensOnM its 64 rows x 128 channels as
  // two 64-channel blocks), rows of 128 bytes with the 128-byte swizzle (the
  // layout the y map's TMA store reads; stmatrix's 8 rows of a matrix land in
  // distinct banks).
  static constexpr int kStagingHalfBytes = kTokenTile * 128;
  static constexpr int kStagingBytes = 2 * kStagingHalfBytes;
  // Scales per stage. Block: the row tile's x scales, then the weight scale.
  // Per-tensor / per-row: the tile's last stage carries the row tile's x
  // scales and the 128 channel scales, so the epilogue never waits on a
  // global load (with K = 192, two stages per tile, those loads had the
  // consumers idle for about as long as the tile's weights took to stream).
  static constexpr int kScaleFloats = kEpilogue == Epilogue::kBlockScaled   ? kTokenTile + 4
                                      : kEpilogue == Epilogue::kScaleAtEnd ? kTokenTile + kWeightTile
                                                                           : 0;
  static constexpr int kTableBytes = (3 * kMaxGroups + 4) * 4;
  static constexpr int kFixedBytes = 1024 /* alignment slack */ + kStagingBytes + kTableBytes;
  // 8 stages keep >= 128 KB of weights in flight per SM, well past the ~40 KB
  // that hides HBM latency at full rate; larger row tiles get what fits.
  static constexpr int kStagesFit =
      (detail::kSmemPerCtaMax - kFixedBytes) / (kStageBytes + kScaleFloats * 4 + 16);
  static constexpr int kStages = kStagesFit < 8 ? kStagesFit : 8;
  static_assert(kStages >= 3, "pipeline too shallow");
  static constexpr int kSmemBytes =
      kFixedBytes + kStages * (kStageBytes + kScaleFloats * 4 + 16);
  static constexpr int kRowsPerProducerThread = kTokenTile / 16;  // 8 chunks per 128-byte row
  static constexpr int kAccFloats = kTokenTile / 2;
  static constexpr bool kTokensOnM = tokens_on_m(kEpilogue, kTokenTile);
  // With the rows on M the accumulator and the staged half are sized by the
  // weight tile's 128 channels, which the formulas above take from the row tile.
  static_assert(!kTokensOnM || kTokenTile == kWeightTile, "rows on M needs 128-row tiles");
  // Swizzled stages and the staging after them need 1024-byte aligned bases.
  static_assert(kStageBytes % 1024 == 0 && kStagingHalfBytes % 1024 == 0, "alignment");
  // Producer threads that run the stage loop (and copy the scales), and the
  // arrivals each full barrier waits for: the TMA thread's expect_tx plus one
  // cp.async arrival per such thread (none for a TMA-only bf16 stage).
  static constexpr int kCopyThreads = kXByTma ? 32 : kProducerThreads;
  static constexpr int kFullArrivals =
      1 + (kXByTma && kEpilogue == Epilogue::kNone ? 0 : kCopyThreads);
};

struct TileCoord {
  int group, channel_tile, row_tile, row0, rows;
};

// Builds, in shared memory, each group's first output row, row count, and
// first tile index (tile_start[G] = total tiles). One warp; lane l handles a
// contiguous run of groups, then a warp scan stitches the runs.
template <int kTokenTile>
__device__ void build_group_tables(const GroupedGemmParams& p, int channel_tiles, int* tile_start,
                                   int* group_row0, int* group_rows) {
  const int lane = threadIdx.x & 31;
  const int per_lane = (p.num_groups + 31) / 32;
  const int begin = min(p.num_groups, lane * per_lane);
  const int end = min(p.num_groups, begin + per_lane);
  int local = 0;
  for (int g = begin; g < end; ++g) {
    int row0 = 0, rows = 0;
    if (p.layout == Layout::kMasked) {
      rows = min(max(p.rows_per_group[g], 0), p.max_rows);
    } else {
      // Clamped, so malformed offsets cannot address outside the tensors.
      row0 = min(max(p.cu_seqlens[g], 0), p.total_rows);
      rows = min(max(p.cu_seqlens[g + 1], row0), p.total_rows) - row0;
    }
    group_row0[g] = row0;
    group_rows[g] = rows;
    local += (rows + kTokenTile - 1) / kTokenTile * channel_tiles;
  }
  int inclusive = local;
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    const int other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  int running = inclusive - local;
  for (int g = begin; g < end; ++g) {
    tile_start[g] = running;
    running += (group_rows[g] + kTokenTile - 1) / kTokenTile * channel_tiles;
  }
  if (lane == 31) tile_start[p.num_groups] = inclusive;
}

template <int kTokenTile>
__device__ __forceinline__ TileCoord decode_tile(int tile, int num_groups, const int* tile_start,
                                                 const int* group_row0, const int* group_rows) {
  int lo = 0, hi = num_groups - 1;  // last group whose first tile is <= tile
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (tile_start[mid] <= tile) lo = mid; else hi = mid - 1;
  }
  TileCoord c;
  c.group = lo;
  c.row0 = group_row0[lo];
  c.rows = group_rows[lo];
  const int row_tiles = (c.rows + kTokenTile - 1) / kTokenTile;
  const int local = tile - tile_start[lo];
  c.channel_tile = local / row_tiles;
  c.row_tile = local - c.channel_tile * row_tiles;
  return c;
}

// The x row (as an index for x and its scales) of output row m of a group;
// -1 when it reads nothing (gathered index out of range).
__device__ __forceinline__ int source_row(const GroupedGemmParams& p, int row0, int m) {
  if (p.layout != Layout::kGathered) return row0 + m;
  const int src = p.row_index[row0 + m];
  return (src >= 0 && src < p.src_rows) ? src : -1;
}

__device__ __forceinline__ void cp_async_16_zfill(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_4_zfill(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 4 : 0)
               : "memory");
}
// Arrives on the barrier once all of this thread's earlier cp.async are done
// (counted in the barrier's expected arrivals).
__device__ __forceinline__ void cp_async_arrive_noinc(const uint64_t* barrier) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(
                   static_cast<uint32_t>(__cvta_generic_to_shared(barrier)))
               : "memory");
}
// Stores four 8 x 8 matrices of bf16 pairs (stmatrix): lane l's address is
// row l % 8 of matrix l / 8; regs[k] holds this lane's pair of matrix k (row
// l / 4, columns 2 (l % 4) and + 1).
__device__ __forceinline__ void stmatrix_x4(uint32_t addr, const uint32_t (&regs)[4]) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr),
               "r"(regs[0]), "r"(regs[1]), "r"(regs[2]), "r"(regs[3])
               : "memory");
}
// Stores four 8 x 8 matrices of bf16 pairs transposed (stmatrix .trans):
// lane l's address is row l % 8 of matrix l / 8; regs[k] holds this lane's
// pair of matrix k.
__device__ __forceinline__ void stmatrix_x4_trans(uint32_t addr, const uint32_t (&regs)[4]) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr),
               "r"(regs[0]), "r"(regs[1]), "r"(regs[2]), "r"(regs[3])
               : "memory");
}

// The 128 threads of one consumer warpgroup (0 or 1): each stages and stores
// its own half of the tile, so the two never wait for each other.
__device__ __forceinline__ void consumer_warpgroup_barrier(int consumer) {
  cutlass::arch::NamedBarrier::sync(128, 1 + consumer);
}

// The x-scale rows a producer thread copies for one tile (the row tile's rows
// tid, tid + kCopyThreads, ...; -1: none), looked up once per tile so that
// no stage waits on the gathered layout's row index.
template <class Traits, int kTokenTile>
struct ScaleRows {
  static constexpr int kCount = (kTokenTile + Traits::kCopyThreads - 1) / Traits::kCopyThreads;
  int src[kCount];

  __device__ __forceinline__ ScaleRows(const GroupedGemmParams& p, const TileCoord& c, int tid) {
#pragma unroll
    for (int i = 0; i < kCount; ++i) {
      const int r = tid + i * Traits::kCopyThreads;
      const int m = c.row_tile * kTokenTile + r;
      src[i] = (r < kTokenTile && m < c.rows) ? source_row(p, c.row0, m) : -1;
    }
  }
};

// The row tile of x by cp.async, for layouts or tiles without an x map
// (kXByTma false): producer thread `tid` copies 16-byte chunk tid % 8 of rows
// tid / 8 + 16 i, found through the layout's addressing once per tile (rows
// past the group, and K past the end, are zero-filled).
template <class Traits, int kTokenTile>
struct XRowsByCpAsync {
  static constexpr int kRows = Traits::kRowsPerProducerThread;
  const uint8_t* row[kRows];  // nullptr: a row that reads nothing

  __device__ __forceinline__ XRowsByCpAsync(const GroupedGemmParams& p, const TileCoord& c,
                                            int tid) {
    const auto* x_bytes = static_cast<const uint8_t*>(p.x);
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int m = c.row_tile * kTokenTile + (tid >> 3) + 16 * i;
      const int src = m < c.rows ? source_row(p, c.row0, m) : -1;
      row[i] = src < 0 ? nullptr
                       : x_bytes + (c.group * p.x_group_stride +
                                    static_cast<int64_t>(src) * p.x_row_stride) *
                                       Traits::kElementBytes;
    }
  }

  // Issues this thread's copies of k-tile kt into x_tile.
  __device__ __forceinline__ void copy(const GroupedGemmParams& p, int kt, uint8_t* x_tile,
                                       int tid) const {
    const int chunk = tid & 7;
    const int k_byte = kt * kKTileBytes + chunk * 16;
    const int k_bytes = p.k * Traits::kElementBytes;
    const uint32_t x_tile_addr = static_cast<uint32_t>(__cvta_generic_to_shared(x_tile));
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const bool valid = row[i] != nullptr && k_byte < k_bytes;
      cp_async_16_zfill(x_tile_addr + device::swizzle_128b_offset((tid >> 3) + 16 * i, chunk),
                        valid ? row[i] + k_byte : p.x, valid);
    }
  }
};

// With an x map the producer's TMA thread loads the row tile: nothing to hold.
struct XRowsByTma {
  __device__ __forceinline__ XRowsByTma(const GroupedGemmParams&, const TileCoord&, int) {}
  __device__ __forceinline__ void copy(const GroupedGemmParams&, int, uint8_t*, int) const {}
};

// Copies the scales of one stage into its scale slot by cp.async, spread over
// the producer's kCopyThreads threads (thread `tid`): per-tensor / per-row,
// on the tile's last stage, the row tile's x scales and the 128 channel
// scales; block, on every stage, the row tile's x scales of k-block kt and
// the weight scale.
template <class Traits, int kTokenTile, Epilogue kEpilogue>
__device__ __forceinline__ void copy_stage_scales(const GroupedGemmParams& p, const TileCoord& c,
                                                  const ScaleRows<Traits, kTokenTile>& rows,
                                                  int kt, int k_tiles, float* scales, int tid) {
  if constexpr (kEpilogue == Epilogue::kNone) return;
  if (kEpilogue == Epilogue::kScaleAtEnd && kt != k_tiles - 1) return;
  const float* x_scale = p.x_scale + c.group * p.xs_group_stride +
                         (kEpilogue == Epilogue::kBlockScaled ? kt * p.xs_k_stride : 0);
#pragma unroll
  for (int i = 0; i < rows.kCount; ++i) {
    const int r = tid + i * Traits::kCopyThreads;
    if (r < kTokenTile) {
      const bool valid = rows.src[i] >= 0;
      cp_async_4_zfill(static_cast<uint32_t>(__cvta_generic_to_shared(scales + r)),
                       valid ? x_scale + static_cast<int64_t>(rows.src[i]) * p.xs_row_stride
                             : p.x_scale,
                       valid);
    }
  }
  if constexpr (kEpilogue == Epilogue::kScaleAtEnd) {
    const float* w_scale = p.w_scale + c.group * p.ws_group_stride;
#pragma unroll
    for (int ch = tid; ch < kWeightTile; ch += Traits::kCopyThreads) {
      const int n = c.channel_tile * kWeightTile + ch;
      const bool valid = n < p.n;
      cp_async_4_zfill(static_cast<uint32_t>(__cvta_generic_to_shared(scales + kTokenTile + ch)),
                       valid ? w_scale + n * p.ws_n_stride : p.w_scale, valid);
    }
  } else {
    if (tid == Traits::kCopyThreads - 1) {
      const float* ws = p.w_scale + c.group * p.ws_group_stride +
                        c.channel_tile * p.ws_n_stride + kt * p.ws_k_stride;
      cp_async_4_zfill(static_cast<uint32_t>(__cvta_generic_to_shared(scales + kTokenTile)), ws,
                       true);
    }
  }
}

template <class Element, int kTokenTile, Epilogue kEpilogue, bool kXByTma>
__global__ void __launch_bounds__(kThreads, 1)
    grouped_gemm_kernel(const __grid_constant__ CUtensorMap w_map,
                        const __grid_constant__ CUtensorMap x_map,
                        const __grid_constant__ CUtensorMap y_map, const GroupedGemmParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Traits = GroupedGemmTraits<Element, kTokenTile, kEpilogue, kXByTma>;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr int kStages = Traits::kStages;

  extern __shared__ uint8_t smem_raw[];
  // Swizzled tiles need 1024-byte aligned bases.
  uint8_t* smem = reinterpret_cast<uint8_t*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~static_cast<uintptr_t>(1023));
  uint8_t* stage_base = smem;
  uint8_t* staging = stage_base + kStages * Traits::kStageBytes;
  float* stage_scales = reinterpret_cast<float*>(staging + Traits::kStagingBytes);
  int* tile_start = reinterpret_cast<int*>(stage_scales + kStages * Traits::kScaleFloats);
  int* group_row0 = tile_start + kMaxGroups + 1;
  int* group_rows = group_row0 + kMaxGroups;
  Barrier* full = reinterpret_cast<Barrier*>(
      (reinterpret_cast<uintptr_t>(group_rows + kMaxGroups) + 7) & ~static_cast<uintptr_t>(7));
  Barrier* empty = full + kStages;
  device::pdl_enter();  // first: earlier kernels may still run (common/pdl.cuh)

  const int channel_tiles = (p.n + kWeightTile - 1) / kWeightTile;
  const int k_tiles = (p.k + Traits::kKTile - 1) / Traits::kKTile;
  if (threadIdx.x < 32) build_group_tables<kTokenTile>(p, channel_tiles, tile_start, group_row0,
                                                       group_rows);
  if (threadIdx.x == 32) {
    for (int s = 0; s < kStages; ++s) {
      full[s].init(Traits::kFullArrivals);
      empty[s].init(kConsumerThreads);
    }
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();
  // Broadcast: the tile loops' bounds are then warp-uniform to ptxas.
  const int total_tiles = __shfl_sync(0xffffffffu, tile_start[p.num_groups], 0);
  const int warpgroup = threadIdx.x / 128;

  if (warpgroup == 0) {
    // ---------------------------------------------------------------- producer
    cutlass::arch::warpgroup_reg_dealloc<56>();
    const int tid = threadIdx.x;
    if (tid < Traits::kCopyThreads) {
      using XRows = std::conditional_t<kXByTma, XRowsByTma, XRowsByCpAsync<Traits, kTokenTile>>;
      int stage = 0;
      uint32_t phase = 0;
      for (int tile = blockIdx.x; tile < total_tiles; tile += gridDim.x) {
        const TileCoord c = decode_tile<kTokenTile>(tile, p.num_groups, tile_start, group_row0,
                                                    group_rows);
        const XRows x_rows(p, c, tid);
        // TMA coordinates of the row tile: the group's slab (masked) or the
        // rows of the one slab (contiguous).
        const int x_row = c.row0 + c.row_tile * kTokenTile;
        const int x_slab = p.layout == Layout::kMasked ? c.group : 0;
        const ScaleRows<Traits, kTokenTile> scale_rows(p, c, tid);
        for (int kt = 0; kt < k_tiles; ++kt) {
          empty[stage].wait(phase ^ 1);
          uint8_t* w_tile = stage_base + stage * Traits::kStageBytes;
          uint8_t* x_tile = w_tile + Traits::kStageW;
          if (tid == 0) {
            constexpr auto kHint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL);
            uint64_t* barrier = reinterpret_cast<uint64_t*>(&full[stage]);
            full[stage].arrive_and_expect_tx(Traits::kStageW + (kXByTma ? Traits::kStageX : 0));
            cute::SM90_TMA_LOAD_3D::copy(&w_map, barrier, kHint, w_tile, kt * Traits::kKTile,
                                         c.channel_tile * kWeightTile, c.group);
            if constexpr (kXByTma) {
              cute::SM90_TMA_LOAD_3D::copy(&x_map, barrier, kHint, x_tile, kt * Traits::kKTile,
                                           x_row, x_slab);
            }
          }
          x_rows.copy(p, kt, x_tile, tid);
          copy_stage_scales<Traits, kTokenTile, kEpilogue>(
              p, c, scale_rows, kt, k_tiles, stage_scales + stage * Traits::kScaleFloats, tid);
          if constexpr (Traits::kFullArrivals > 1) {
            cp_async_arrive_noinc(reinterpret_cast<const uint64_t*>(&full[stage]));
          }
          if (++stage == kStages) {
            stage = 0;
            phase ^= 1;
          }
        }
      }
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");  // no copy outlives its thread
  } else {
    // --------------------------------------------------------------- consumers
    cutlass::arch::warpgroup_reg_alloc<224>();
    // Broadcast from lane 0, so ptxas knows it is warp-uniform and keeps the
    // descriptor arithmetic below in uniform registers.
    const int consumer = __shfl_sync(0xffffffffu, warpgroup, 0) - 1;  // A's rows 64 consumer ..
    const int ctid = threadIdx.x - kProducerThreads;
    const int lane = threadIdx.x & 31;
    const int warp_in_group = (threadIdx.x / 32) & 3;
    const int quad = lane & 3;
    // The two rows of this thread's fragment (and + 8), within the tile's
    // channels, or its rows (tokens) where Traits::kTokensOnM.
    const int fragment_row = consumer * 64 + warp_in_group * 16 + (lane >> 2);
    // Stage 0's descriptors, lower words only; a stage and a K step add to
    // the start address field (address / 16, 14 bits: shared addresses stay
    // under 256 KB, so the add never carries out of it). The 64-bit
    // descriptors rebuilt per stage in vector registers took ~70 of a
    // consumer warp's 139 instructions per stage (docs/perf/grouped_gemm.md, v5).
    const uint32_t stage_base_addr = static_cast<uint32_t>(__cvta_generic_to_shared(stage_base));
    // wgmma's A operand is this warpgroup's 64 rows of the weight tile (or of
    // the row tile where Traits::kTokensOnM), B the whole other tile.
    constexpr int kWOffset = Traits::kTokensOnM ? 0 : 64 * 128;
    constexpr int kXOffset = Traits::kTokensOnM ? 64 * 128 : 0;
    const uint32_t w_desc0 = device::sw128_kmajor_desc_lo(stage_base_addr + consumer * kWOffset);
    const uint32_t x_desc0 =
        device::sw128_kmajor_desc_lo(stage_base_addr + Traits::kStageW + consumer * kXOffset);
    int stage = 0;
    uint32_t phase = 0;
    for (int tile = blockIdx.x; tile < total_tiles; tile += gridDim.x) {
      const TileCoord c = decode_tile<kTokenTile>(tile, p.num_groups, tile_start, group_row0,
                                                  group_rows);
      float acc[Traits::kAccFloats];
      float total[kEpilogue == Epilogue::kNone ? 1 : Traits::kAccFloats];
      if constexpr (kEpilogue != Epilogue::kNone) {
#pragma unroll
        for (int i = 0; i < Traits::kAccFloats; ++i) total[i] = 0.0f;
      }
      for (int kt = 0; kt < k_tiles; ++kt) {
        full[stage].wait(phase);
        // x arrived through cp.async (generic proxy); wgmma reads through the
        // async proxy. (A TMA load is async-proxy already.)
        if constexpr (!kXByTma) cutlass::arch::fence_view_async_shared();
        const uint32_t stage_step = static_cast<uint32_t>(stage * (Traits::kStageBytes >> 4));
#pragma unroll
        for (int i = 0; i < Traits::kAccFloats; ++i) cute::warpgroup_fence_operand(acc[i]);
        cute::warpgroup_arrive();
#pragma unroll
        for (int kk = 0; kk < kKTileBytes / 32; ++kk) {
          const bool accumulate = kk > 0 || (kEpilogue == Epilogue::kNone && kt > 0);
          const uint64_t w_desc = device::sw128_desc(w_desc0 + stage_step + kk * 2);
          const uint64_t x_desc = device::sw128_desc(x_desc0 + stage_step + kk * 2);
          if constexpr (Traits::kTokensOnM) {
            device::wgmma<Element, kWeightTile>(x_desc, w_desc, acc, accumulate);
          } else {
            device::wgmma<Element, kTokenTile>(w_desc, x_desc, acc, accumulate);
          }
        }
        cute::warpgroup_commit_batch();
        cute::warpgroup_wait<0>();
#pragma unroll
        for (int i = 0; i < Traits::kAccFloats; ++i) cute::warpgroup_fence_operand(acc[i]);
        if constexpr (kEpilogue == Epilogue::kScaleAtEnd) {
#pragma unroll
          for (int i = 0; i < Traits::kAccFloats; ++i) total[i] += acc[i];
          if (kt == k_tiles - 1) {  // the scales came with the last stage
            const float* scales = stage_scales + stage * Traits::kScaleFloats;
            const float w_scale0 = scales[kTokenTile + fragment_row];
            const float w_scale1 = scales[kTokenTile + fragment_row + 8];
#pragma unroll
            for (int b = 0; b < kTokenTile / 8; ++b) {
#pragma unroll
              for (int j = 0; j < 2; ++j) {
                const float x_scale = scales[8 * b + 2 * quad + j];
                total[4 * b + j] *= x_scale * w_scale0;
                total[4 * b + 2 + j] *= x_scale * w_scale1;
              }
            }
          }
        } else if constexpr (kEpilogue == Epilogue::kBlockScaled) {
          const float* scales = stage_scales + stage * Traits::kScaleFloats;
          const float w_scale = scales[kTokenTile];
          if constexpr (Traits::kTokensOnM) {  // the fragment's two rows
            const float s0 = w_scale * scales[fragment_row];
            const float s1 = w_scale * scales[fragment_row + 8];
#pragma unroll
            for (int b = 0; b < kWeightTile / 8; ++b) {
#pragma unroll
              for (int j = 0; j < 2; ++j) {
                total[4 * b + j] = fmaf(acc[4 * b + j], s0, total[4 * b + j]);
                total[4 * b + 2 + j] = fmaf(acc[4 * b + 2 + j], s1, total[4 * b + 2 + j]);
              }
            }
          } else {  // the fragment's columns are rows: 32 of them
#pragma unroll
            for (int b = 0; b < kTokenTile / 8; ++b) {
#pragma unroll
              for (int j = 0; j < 2; ++j) {
                const float s = w_scale * scales[8 * b + 2 * quad + j];
                total[4 * b + j] = fmaf(acc[4 * b + j], s, total[4 * b + j]);
                total[4 * b + 2 + j] = fmaf(acc[4 * b + 2 + j], s, total[4 * b + 2 + j]);
              }
            }
          }
        }
        empty[stage].arrive();
        if (++stage == kStages) {
          stage = 0;
          phase ^= 1;
        }
      }

      // ---- epilogue: fp32 -> bf16 through shared memory, then to y
      float* result = acc;
      if constexpr (kEpilogue != Epilogue::kNone) result = total;
      // Each warpgroup stages its half of the tile in bf16 as rows of y: its
      // 64 channels x kTokenTile rows, or (kTokensOnM) its 64 rows x 128
      // channels as two blocks of 64 channels; rows of 128 bytes with the
      // 128-byte swizzle, as the y map's TMA store reads them. A half wholly
      // inside its group leaves by TMA stores issued by the warpgroup's first
      // thread (which waits, at the next tile, until they have read the
      // staging); otherwise (or with p.y_by_tma off) all 128 threads store
      // 16-byte pieces, rows past the group skipped. The warpgroups never
      // wait for each other here. (At 4096 rows the old per-thread stores and
      // a barrier across both warpgroups were ~10% of the consumers' issue
      // samples.)
      constexpr bool kTokensOnM = Traits::kTokensOnM;  // for the constants below
      constexpr int kHalfRows = kTokensOnM ? 64 : kTokenTile;
      constexpr int kHalfChunks = kTokensOnM ? 16 : 8;  // 16-byte chunks per row
      const auto chunk_offset = [](int row, int chunk) {
        return static_cast<uint32_t>((chunk / 8) * kHalfRows * 128) +
               device::swizzle_128b_offset(row, chunk % 8);
      };
      const int wg_tid = ctid & 127;  // within the consumer warpgroup
      uint8_t* wg_staging = staging + consumer * Traits::kStagingHalfBytes;
      const uint32_t wg_staging_addr = static_cast<uint32_t>(__cvta_generic_to_shared(wg_staging));
      const int half_row0 = c.row_tile * kTokenTile + (kTokensOnM ? consumer * 64 : 0);
      const int n0 = c.channel_tile * kWeightTile + (kTokensOnM ? 0 : consumer * 64);
      const bool whole_half = p.y_by_tma && half_row0 + kHalfRows <= c.rows;
      if (wg_tid == 0) device::bulk_wait_group_read<0>();  // the last TMA store has read it
      consumer_warpgroup_barrier(consumer);
      // Each (n8 block b, half i) of the fragment is an 8 x 8 matrix whose
      // pairs this thread holds packed; stmatrix stores four of them (8
      // instructions a thread at 128 rows, not 64 two-byte stores). Lane l
      // gives the address of row l % 8 of matrix l / 8. Weights on M: the
      // matrix is (channel, row) and .trans makes its rows rows of y.
#pragma unroll
      for (int b = 0; b < Traits::kAccFloats / 4; b += 2) {
        uint32_t packed[4];
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          const int a = 4 * (b + m / 2) + 2 * (m % 2);
          const __nv_bfloat162 pair = __floats2bfloat162_rn(result[a], result[a + 1]);
          packed[m] = *reinterpret_cast<const uint32_t*>(&pair);
        }
        const int m = lane / 8;
        if constexpr (kTokensOnM) {
          const int row = 16 * warp_in_group + 8 * (m % 2) + lane % 8;
          stmatrix_x4(wg_staging_addr + chunk_offset(row, b + m / 2), packed);
        } else {
          const int row = 8 * (b + m / 2) + lane % 8;
          stmatrix_x4_trans(wg_staging_addr + chunk_offset(row, 2 * warp_in_group + m % 2),
                            packed);
        }
      }
      if (whole_half) {
        cutlass::arch::fence_view_async_shared();  // stmatrix writes, then the TMA reads
        consumer_warpgroup_barrier(consumer);
        if (wg_tid == 0) {
#pragma unroll
          for (int q = 0; q < kHalfChunks / 8; ++q) {
            cute::SM90_TMA_STORE_3D::copy(&y_map, wg_staging + q * kHalfRows * 128, n0 + 64 * q,
                                          c.row0 + half_row0,
                                          p.layout == Layout::kMasked ? c.group : 0);
          }
          device::bulk_commit_group();
        }
      } else {
        consumer_warpgroup_barrier(consumer);
        __nv_bfloat16* y = static_cast<__nv_bfloat16*>(p.y) + c.group * p.y_group_stride;
        for (int piece = wg_tid; piece < kHalfRows * kHalfChunks; piece += 128) {
          const int row = piece / kHalfChunks;
          const int chunk = piece % kHalfChunks;
          const int m = half_row0 + row;
          const int n = n0 + chunk * 8;
          if (m < c.rows && n < p.n) {
            *reinterpret_cast<uint4*>(y + static_cast<int64_t>(c.row0 + m) * p.y_row_stride + n) =
                *reinterpret_cast<const uint4*>(wg_staging + chunk_offset(row, chunk));
          }
        }
        // The next tile's first barrier keeps its stmatrix after these reads.
      }
    }
    if ((ctid & 127) == 0) device::bulk_wait_group<0>();  // y written before the CTA retires
  }
#endif
}

}  // namespace hpc_ops::gemm
