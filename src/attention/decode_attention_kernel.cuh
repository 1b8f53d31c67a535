// SPDX-License-Identifier: Apache-2.0
// The paged decode-attention kernel, head dim 128, for a BF16 or FP8 KV cache.
//
// Grid: one CTA per bin of the schedule (decode_plan.h); a CTA walks its run
// of 64-token tiles, which may cover the end of one (request, kv head) unit,
// whole units and the start of another: each such piece is processed on its
// own and ends in a direct bf16 output (a unit of one piece) or in a partial
// result (fp32 O, log2 LSE). A cut unit's partials are combined by the CTAs
// that finish last, in a tree (MergeWalk, decode_plan.h), unless the unit
// has many rows and pieces (merge_fan_in: the merge kernel's); units with
// no tiles are written by every CTA for a share of the units.
//
// This file is the pipeline and the end of a piece; the math per tile is a
// policy: RowsOnM (decode_rows_on_m.cuh: query rows on the mma's M side, both
// formats) or, for an FP8 cache with up to 16 query rows, TokensOnM
// (decode_tokens_on_m.cuh: KV tokens on M, wgmma). Either way each warp ends
// a piece with its own softmax state for up to 16 rows per m-tile, and the
// states meet in shared memory.
// K and V pages (and per-token k scales) arrive through a ring of kStages
// tiles: by TMA when DecodeParams::kv_tma (formats with kTmaTiles: the
// tokens-on-M FP8 kernel; one box of up to 64 slots per page and tensor,
// issued by lanes of warp 0 and counted on a transaction barrier per stage),
// else by cp.async (16-byte copies from any page / slot / head strides; page
// sizes 1-128 cost the same).
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include <cuda/atomic>

#include <cute/arch/copy_sm90_tma.hpp>
#include <cutlass/arch/barrier.h>

#include "attention/decode_geometry.cuh"
#include "attention/decode_kernels.h"
#include "attention/decode_kv_formats.cuh"
#include "attention/decode_merge.cuh"
#include "attention/decode_rows_on_m.cuh"
#include "attention/decode_tokens_on_m.cuh"
#include "common/bulk_copy.cuh"
#include "common/mma_sm80.cuh"
#include "common/pdl.cuh"
#include "common/vec.cuh"

namespace hpc_ops::attention {

// One piece of a unit: its tiles [tile_begin, tile_end) (absolute within the
// request), the unit's piece count and this piece's index among them.
struct Piece {
  int u, tile_begin, tile_end;
  int32_t pieces, index;
};

template <int kMTiles, class Kv>
struct DecodeCta {
  using G = DecodeGeometry<kMTiles, Kv>;
  using Math = std::conditional_t<Kv::kTokensOnM, TokensOnM<Kv>, RowsOnM<kMTiles, Kv>>;
  static constexpr int kStages = Kv::kStages;
  // Tiles issued ahead of the one in use (cp.async path): a widened format's
  // stage is free once widened, so its ring keeps every stage in flight (4
  // tiles instead of 3 ahead: FP8 q_len 4 at 64 rows 2-3% faster on the
  // long cases).
  static constexpr int kAhead = Kv::kWidened ? kStages : kStages - 1;
  const DecodeParams& p;
  uint8_t* smem;  // laid out as DecodeGeometry says, aligned to Kv::kAlign
  float (*row_max)[16];
  float (*row_sum)[16];
  int* last_arrival;  // shared: whether this CTA brought a merge group's last partial
  cutlass::arch::ClusterTransactionBarrier* full;  // shared, per stage: the TMA path's tiles landed
  int warp, lane;
  // Tiles that went through the ring before this piece: ring index
  // ring_pos + i holds the piece's tile i, in stage (index % kStages), whose
  // barrier phase is (index / kStages) & 1.
  uint32_t ring_pos = 0;

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
    const uint8_t* k_scale;  // head h, page 0, slot 0 (per-token k scales; chunk-0 threads)
    int row0, chunk;
  };

  __device__ CopySource copy_source(int b, int h) const {
    CopySource c;
    c.row0 = threadIdx.x / G::kChunksPerToken;
    c.chunk = threadIdx.x % G::kChunksPerToken;
    c.pages = p.page_table + b * p.page_table_stride;
    c.k = static_cast<const uint8_t*>(p.k) + h * p.k_bytes.head + c.chunk * 16;
    c.v = static_cast<const uint8_t*>(p.v) + h * p.v_bytes.head + c.chunk * 16;
    c.k_scale = p.k_scale_per_token && c.chunk == 0
                    ? reinterpret_cast<const uint8_t*>(p.k_scale) + h * p.k_scale_bytes.head
                    : nullptr;
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

  // base + slot * s.slot + page * s.page, as two 32 x 32 -> 64-bit
  // multiply-adds (mad.wide.u32: the compiler's 64-bit product added the zero
  // high halves too).
  __device__ static const void* at_slot(const uint8_t* base, uint32_t page, uint32_t slot, PagedStrides s) {
    uint64_t a = reinterpret_cast<uint64_t>(base);
    asm("mad.wide.u32 %0, %1, %2, %0;" : "+l"(a) : "r"(slot), "r"(s.slot));
    asm("mad.wide.u32 %0, %1, %2, %0;" : "+l"(a) : "r"(page), "r"(s.page));
    return reinterpret_cast<const void*>(a);
  }

  // Issues the cp.async copies of KV tile `tile` (absolute within the request)
  // into ring stage `stage`; tokens at or past len are zero-filled.
  __device__ void issue_tile(const CopySource& c, int tile, int len, const int32_t (&page)[kCopies],
                             int stage) const {
    const uint32_t k_base = device::shared_address(stage_ptr(stage));
    const uint32_t v_base = k_base + G::kTileBytes;
    const uint32_t scale_base = device::shared_address(smem + G::kScaleOffset + stage * G::kScaleBytes);
    const uint32_t page_mask = (1u << p.page_shift) - 1;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int row = c.row0 + i * kRowStep;
      const int token = tile * kDecodeTileTokens + row;
      const int bytes = token < len ? 16 : 0;
      const uint32_t pg = token < len ? static_cast<uint32_t>(page[i]) : 0u;
      const uint32_t slot = static_cast<uint32_t>(token) & page_mask;
      device::cp_async_16(k_base + Kv::k_offset(row, c.chunk),
                          at_slot(c.k, pg, slot, p.k_bytes), bytes);
      device::cp_async_16(v_base + Kv::v_offset(row, c.chunk),
                          at_slot(c.v, pg, slot, p.v_bytes), bytes);
    }
    // Per-token k scales: a branch uniform over the grid around its own loop
    // (inside the loop above, the compiler predicated it: ~35 instructions per
    // thread and tile issued for nothing under the per-tensor schemes).
    if constexpr (Kv::kFp8) {
      if (p.k_scale_per_token && c.chunk == 0) {
#pragma unroll
        for (int i = 0; i < kCopies; ++i) {
          const int row = c.row0 + i * kRowStep;
          const int token = tile * kDecodeTileTokens + row;
          const uint32_t pg = token < len ? static_cast<uint32_t>(page[i]) : 0u;
          const uint32_t slot = static_cast<uint32_t>(token) & page_mask;
          device::cp_async_4(scale_base + row * 4,
                             at_slot(c.k_scale, pg, slot, p.k_scale_bytes),
                             token < len ? 4 : 0);
        }
      }
    }
  }

  // ---- TMA path --------------------------------------------------------------
  // Page of box `lane` of tile `tile` (lanes of warp 0 below the tile's box
  // count; others 0). Like fetch_pages: a tile ahead, not depending on len.
  __device__ int32_t fetch_box_page(const int32_t* pages, int tile) const {
    if (warp != 0 || lane >= kDecodeTileTokens / p.tma.box_slots) return 0;
    const int index = (tile * kDecodeTileTokens + lane * p.tma.box_slots) >> p.page_shift;
    return pages[index < p.max_pages ? index : p.max_pages - 1];
  }

  // Issues tile `tile` of kv head h into ring index `ring`: lane j of warp 0
  // copies box j of K and of V (slots [j, j + 1) x box_slots of the tile) if
  // it holds a token below len. Rows of boxes not copied keep older bytes,
  // and a copied box's slots at or past len hold whatever the page does (a
  // page id past the cache, or negative, reads zeros): the math masks those
  // tokens' logits, and zero_v_past_len clears their V. A tile wholly past
  // len (a plan made for longer lengths, or kv_lens past the page table's
  // reach) copies nothing and arms its barrier with 0 bytes.
  __device__ void issue_tile_tma(int h, int tile, int len, int32_t page, uint32_t ring) const {
    static_assert(Kv::kTokenBytes == 128, "one box row per token");
    if (warp != 0) return;
    const int stage = static_cast<int>(ring % kStages);
    const int box = p.tma.box_slots;
    const int first = tile * kDecodeTileTokens;
    const int boxes = len > first ? min((len - first + box - 1) / box, kDecodeTileTokens / box) : 0;
    if (lane == 0) full[stage].arrive_and_expect_tx(2 * boxes * box * Kv::kTokenBytes);
    __syncwarp();
    if (lane < boxes) {
      const int slot = (first + lane * box) & ((1 << p.page_shift) - 1);
      // Coordinates of map dims 1-3 (the host ordered them by stride).
      const KvTmaMaps& m = p.tma;
      const int32_t c1 = m.head_dim == 1 ? h : m.slot_dim == 1 ? slot : page;
      const int32_t c2 = m.head_dim == 2 ? h : m.slot_dim == 2 ? slot : page;
      const int32_t c3 = m.head_dim == 3 ? h : m.slot_dim == 3 ? slot : page;
      auto* bar = reinterpret_cast<uint64_t*>(&full[stage]);
      // KV is read once: evict it first, ahead of what other kernels keep in L2.
      const auto hint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_FIRST);
      uint8_t* k_dst = stage_ptr(stage) + lane * box * Kv::kTokenBytes;
      cute::SM90_TMA_LOAD_4D::copy(&m.k, bar, hint, k_dst, 0, c1, c2, c3);
      cute::SM90_TMA_LOAD_4D::copy(&m.v, bar, hint, k_dst + G::kTileBytes, 0, c1, c2, c3);
    }
  }

  // Zeroes the V rows of tile `tile` (in `stage`) at or past len, before any
  // warp reads them: their P is 0, but 0 x NaN is NaN. Then orders these
  // stores before the stage's next TMA copy (async proxy).
  __device__ void zero_v_past_len(int stage, int tile, int len) const {
    const int valid = max(len - tile * kDecodeTileTokens, 0);
    if (valid >= kDecodeTileTokens) return;  // uniform
    const uint32_t v_base = device::shared_address(stage_ptr(stage)) + G::kTileBytes;
    for (int idx = threadIdx.x; idx < (kDecodeTileTokens - valid) * G::kChunksPerToken; idx += G::kThreads) {
      const int row = valid + idx / G::kChunksPerToken, chunk = idx % G::kChunksPerToken;
      device::sts_128(v_base + Kv::v_offset(row, chunk), make_uint4(0, 0, 0, 0));
    }
    device::fence_proxy_async_shared();
  }

  // One piece: a unit of one piece writes the final output, a cut unit's
  // piece its partial result (slot slot_start[u] + index).
  template <bool kTma>
  __device__ void run_piece(const Piece& piece) {
    const int b = piece.u / p.kv_heads, h = piece.u - b * p.kv_heads;
    const int tile_begin = piece.tile_begin, tile_end = piece.tile_end;
    const ScheduleLayout layout = schedule_layout(p.batch, p.kv_heads, p.num_bins);
    // Needed only at the end: the load's latency hides behind the piece.
    const int32_t slot0 = piece.pieces >= 2 ? p.schedule[layout.slot_start + piece.u] : 0;
    const int slot = piece.pieces >= 2 ? slot0 + piece.index : -1;
    const int len = usable_len(p, b);
    const int n_tiles = tile_end - tile_begin;

    Math math(warp, lane);
    math.stage_q(p, smem, b, h);
    const CopySource copies = copy_source(b, h);
    int32_t pages[kCopies];  // cp.async: the pages of this thread's rows of the next tile
    int32_t box_page = 0;    // TMA: the page of this lane's box of the next tile
    if constexpr (kTma) {
      int32_t first_pages[kStages - 1];  // one round trip for the first tiles' pages
#pragma unroll
      for (int s = 0; s < kStages - 1; ++s) first_pages[s] = fetch_box_page(copies.pages, tile_begin + s);
#pragma unroll
      for (int s = 0; s < kStages - 1; ++s) {
        if (s < n_tiles) issue_tile_tma(h, tile_begin + s, len, first_pages[s], ring_pos + s);
      }
      if (kStages - 1 < n_tiles) box_page = fetch_box_page(copies.pages, tile_begin + kStages - 1);
    } else {
#pragma unroll
      for (int s = 0; s < kAhead; ++s) {
        if (s < n_tiles) {
          fetch_pages(copies, tile_begin + s, pages);
          issue_tile(copies, tile_begin + s, len, pages, (ring_pos + s) % kStages);
        }
        device::cp_async_commit();
      }
      if (kAhead < n_tiles) fetch_pages(copies, tile_begin + kAhead, pages);
    }
    // Q work (global loads, the FP8 split) overlaps the first copies.
    math.begin(p, smem, b, h, len);

    for (int i = 0; i < n_tiles; ++i) {
      const uint32_t ring = ring_pos + i;
      const int stage = static_cast<int>(ring % kStages);
      if constexpr (kTma) {
        // wgmma reads the q tile, stored by the generic proxy, through the async one.
        if (i == 0) device::fence_proxy_async_shared();
        full[stage].wait((ring / kStages) & 1);
        zero_v_past_len(stage, tile_begin + i, len);
      } else {
        device::cp_async_wait<kAhead - 1>();
        // ... and so are the cp.async copies.
        if constexpr (Kv::kAsyncProxyReadsRing) device::fence_proxy_async_shared();
      }
      __syncthreads();
      // The stage read in iteration i - 1 is free once every warp passed the
      // barrier: the math refills it (while the tokens-on-M kernel's wgmma
      // runs, at the start of a rows-on-M tile). A widened format's stage
      // is free once widened, so its math refills this tile's own stage
      // with tile i + kStages after the widening's barrier.
      auto refill = [&] {
        if constexpr (kTma) {
          if (i + kStages - 1 < n_tiles) {
            issue_tile_tma(h, tile_begin + i + kStages - 1, len, box_page, ring + kStages - 1);
          }
          if (i + kStages < n_tiles) box_page = fetch_box_page(copies.pages, tile_begin + i + kStages);
        } else {
          if (i + kAhead < n_tiles) {
            issue_tile(copies, tile_begin + i + kAhead, len, pages, (ring + kAhead) % kStages);
          }
          device::cp_async_commit();
          if (i + kAhead + 1 < n_tiles) fetch_pages(copies, tile_begin + i + kAhead + 1, pages);
        }
      };
      const float* k_scales = reinterpret_cast<const float*>(smem + G::kScaleOffset + stage * G::kScaleBytes);
      math.tile(p, smem, stage_ptr(stage), k_scales, tile_begin + i, len, i == 0, refill);
    }
    ring_pos += static_cast<uint32_t>(n_tiles);
    if constexpr (!kTma) device::cp_async_wait<0>();
    __syncthreads();  // every warp is done with the ring: it becomes the combine buffer

    // ---- combine the warps of each m-tile; write the output or a partial --------
    float* combine = reinterpret_cast<float*>(smem + G::kQBytes);  // [warp * 16 + row][128]
    math.finish(combine, row_max, row_sum);
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
        store_partial_row(p, slot, row, col / 4, merged, v_mult);
      }
    }
    if (slot >= 0) merge_up(piece, slot0, layout);
    // The next piece's TMA copies (async proxy) overwrite the combine buffer.
    if constexpr (kTma) device::fence_proxy_async_shared();
    __syncthreads();  // the combine buffer and the Q tile are reused by the next piece
  }

  // The pieces of this CTA's bin: positions [begin, end) of the schedule's
  // line, starting with unit first_unit.x ({unit, start, tiles end, first
  // tile}); units span their tiles and then `overhead` empty positions.
  template <bool kTma>
  __device__ void run_bin(int4 first_unit, int32_t begin, int32_t end, int32_t per_bin, int32_t overhead) {
    const ScheduleLayout layout = schedule_layout(p.batch, p.kv_heads, p.num_bins);
    const int32_t* sched = p.schedule;
    const int32_t units = sched[2];
    const int32_t* tile_start = sched + layout.tile_start;
    // Unit u's tiles are [ts, tiles_end) on the line; within the request
    // they start at `first`.
    int u = first_unit.x;
    int32_t ts = first_unit.y, tiles_end = first_unit.z, first = first_unit.w;
    int32_t pos = ts > begin ? ts : begin;
    while (true) {
      const int32_t piece_end = tiles_end < end ? tiles_end : end;
      const bool more = piece_end < end;  // the bin goes on past this unit's tiles
      Piece piece;
      piece.u = u;
      piece.tile_begin = first + (pos - ts);
      piece.tile_end = first + (piece_end - ts);
      piece.pieces = unit_pieces(ts, tiles_end - ts, per_bin);
      piece.index = static_cast<int32_t>(blockIdx.x) - ts / per_bin;
      run_piece<kTma>(piece);
      // The next unit with tiles, if the bin reaches it. (Loading its words
      // before the piece, to hide their round trip, gained nothing on skewed
      // batches and cost 1 x 1K 0.5-0.85 us: a longer prologue.)
      if (!more || ++u >= units) return;
      ts = tile_start[u];
      int32_t te = tile_start[u + 1];
      while (te == ts) {  // units with no tiles
        if (++u >= units) return;
        ts = tile_start[u];
        te = tile_start[u + 1];
      }
      if (ts >= end) return;
      first = sched[layout.first_tile + u / p.kv_heads];
      tiles_end = unit_tiles_end(ts, te, overhead);
      pos = ts;
    }
  }

  // Counts an arrival at a merge group (`expected` partials); whether this
  // CTA brought the last one, which then resets the count for the next call.
  // The "last block" pattern with one fenced thread: the barrier orders every
  // thread's partial stores before thread 0's acquire-release add, and that
  // add before every thread's loads of the other CTAs' partials.
  // NOTE: __threadfence() in every thread (fence.sc.gpu, MEMBAR.SC) on both
  // sides took 1 x 1K 0.2-0.3 us longer (docs/perf/decode_attention.md, v8).
  __device__ bool arrive_last(int32_t* counter, int32_t expected) {
    __syncthreads();
    if (threadIdx.x == 0) {
      cuda::atomic_ref<int32_t, cuda::thread_scope_device> count(*counter);
      const bool last = count.fetch_add(1, cuda::memory_order_acq_rel) == expected - 1;
      if (last) count.store(0, cuda::memory_order_relaxed);
      *last_arrival = last;
    }
    __syncthreads();
    return *last_arrival;
  }

  // Combines the partials of `run` for every row, into the output of unit u
  // (top) or into the run's first slot (the next level's partial). Warp w
  // takes rows w and w + kWarps, then w + 2 kWarps, ...
  __device__ void merge_step(int u, const PartialRun& run, bool top) {
    for (int row0 = warp; row0 < p.rows; row0 += 2 * G::kWarps) {
      const int row[2] = {row0, row0 + G::kWarps};
      MergedRow r[2];
      merge_partials(p, run, row, lane, r);
      __syncwarp();  // every lane read the first slot's lse before lane 0 rewrites it
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        if (row[i] >= p.rows) continue;
        if (top) {
          store_merged_row(p, u, row[i], 4 * lane, r[i]);
        } else {
          store_partial_row(p, run.first_slot, row[i], lane, r[i]);
        }
      }
    }
  }

  // After a cut unit's piece wrote its partial: walks up the unit's merge
  // tree while this CTA brings a group's last partial.
  __device__ void merge_up(const Piece& piece, int32_t slot0, const ScheduleLayout& layout) {
    const int32_t fan_in = merge_fan_in(piece.pieces, p.rows);
    if (fan_in == 0) return;  // the merge kernel's
    int32_t* counters = p.schedule + layout.counters + int64_t{kCountersPerSlot} * slot0;
    MergeWalk walk{fan_in, piece.pieces, piece.index};
    while (arrive_last(counters + walk.counter(), walk.count())) {
      const PartialRun run{slot0 + int64_t{walk.first()} * walk.stride, walk.count(), walk.stride};
      merge_step(piece.u, run, walk.top());
      if (walk.top()) return;
      walk.up();
    }
  }

  // Output rows of the units with no tiles (kv_len 0): zeros and lse -inf.
  // CTA c checks its share of the units, a warp 32 at a time.
  __device__ void write_empty_units(const ScheduleLayout& layout, int32_t units) {
    const int32_t* tile_start = p.schedule + layout.tile_start;
    const int32_t share = (units + static_cast<int32_t>(gridDim.x) - 1) / static_cast<int32_t>(gridDim.x);
    const int32_t u_begin = static_cast<int32_t>(blockIdx.x) * share;
    const int32_t u_end = min(u_begin + share, units);
    for (int32_t base = u_begin + warp * 32; base < u_end; base += G::kThreads) {
      const int32_t u = base + lane;
      const bool empty = u < u_end && tile_start[u] == tile_start[u + 1];
      for (uint32_t mask = __ballot_sync(0xffffffffu, empty); mask != 0; mask &= mask - 1) {
        const int32_t e = base + __ffs(mask) - 1;
        for (int row = 0; row < p.rows; ++row) store_merged_row(p, e, row, 4 * lane, MergedRow{});
      }
    }
  }
};

template <int kMTiles, class Kv>
__global__ void __launch_bounds__(DecodeGeometry<kMTiles, Kv>::kThreads, DecodeGeometry<kMTiles, Kv>::kLaunchMinCtas)
    decode_attention_kernel(const __grid_constant__ DecodeParams p) {
  using G = DecodeGeometry<kMTiles, Kv>;
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ float row_max[G::kWarps][16];
  __shared__ float row_sum[G::kWarps][16];
  __shared__ int last_arrival;
  __shared__ uint64_t full_barriers[G::kStagesForTma];
  auto* full = reinterpret_cast<cutlass::arch::ClusterTransactionBarrier*>(full_barriers);
  // The TMA path's barriers are initialized before the PDL wait: no global
  // memory is touched.
  const bool tma = Kv::kTmaTiles && p.kv_tma;
  if (tma && threadIdx.x == 0) {
    cute::prefetch_tma_descriptor(&p.tma.k);
    cute::prefetch_tma_descriptor(&p.tma.v);
    for (int s = 0; s < G::kStagesForTma; ++s) full[s].init(1);
    cutlass::arch::fence_barrier_init();
  }
  // The schedule (and the caller's inputs) come from earlier kernels; the
  // next kernel (the merge kernel above kTreeMergeRows rows) may be
  // scheduled as soon as every CTA got here.
  device::pdl_enter();
  if (tma) __syncthreads();  // the barriers are initialized
  const int32_t* sched = p.schedule;
  const ScheduleLayout layout = schedule_layout(p.batch, p.kv_heads, p.num_bins);
  // One round of independent loads: the header and this bin's first unit.
  // Tile positions are int32 (unit_pieces in decode_plan.h).
  const int32_t per_bin = sched[0], total = sched[1], units = sched[2], empty_units = sched[5];
  const int32_t overhead = sched[kScheduleOverheadWord];
  const int4 first_unit = *reinterpret_cast<const int4*>(sched + layout.bin_first +
                                                         kBinFirstWords * blockIdx.x);
  uint8_t* base = smem;
  if constexpr (Kv::kAlign > 128) {  // G::kSmemBytes has the slack
    base += (Kv::kAlign - (device::shared_address(smem) & (Kv::kAlign - 1))) & (Kv::kAlign - 1);
  }
  DecodeCta<kMTiles, Kv> cta{p, base, row_max, row_sum, &last_arrival, full,
                             static_cast<int>(threadIdx.x / 32), static_cast<int>(threadIdx.x % 32)};
  const int32_t begin = static_cast<int32_t>(blockIdx.x) * per_bin;
  if (begin < total && first_unit.x >= 0) {
    const int32_t end = begin + per_bin < total ? begin + per_bin : total;
    if constexpr (Kv::kTmaTiles) {
      if (tma) {
        cta.template run_bin<true>(first_unit, begin, end, per_bin, overhead);
      } else {
        cta.template run_bin<false>(first_unit, begin, end, per_bin, overhead);
      }
    } else {
      cta.template run_bin<false>(first_unit, begin, end, per_bin, overhead);
    }
  }
  if (empty_units > 0) cta.write_empty_units(layout, units);  // uniform over the grid
}

}  // namespace hpc_ops::attention
