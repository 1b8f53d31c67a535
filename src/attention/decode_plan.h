// SPDX-License-Identifier: Apache-2.0
// The decode-attention schedule: its layout in the workspace, the host
// heuristic that sizes it, and the CPU planner (the GPU planner in
// decode_plan_kernel.cu computes the same words).
//
// KV is cut into tiles of kDecodeTileTokens tokens. Unit u = b * Hkv + h owns
// the tiles of request b from first_tile[b] (0, or the first tile a sliding
// window reaches) to ceil(L / 64). Units are laid end to end on a line of
// positions: a unit with tiles spans its tiles followed by `overhead` empty
// positions (header word 6: a piece's fixed cost, or the rounding that
// lines equal units up with the bins; see bin_run), a unit without tiles
// spans nothing. Bin c (CTA c) takes the positions [c*T, (c+1)*T) (T from
// bin_run: about total / bins, at least kMinTilesPerBin and two_level_run), cutting
// units at bin boundaries into pieces (a bin that reaches only a unit's
// empty positions takes no piece of it). A unit cut
// into p >= 2 pieces writes p partial results (slots slot_start[u] ..), which
// the attention CTAs that finish last combine in a tree (MergeWalk), or,
// for units of many rows cut into many pieces, the merge kernel
// (merge_fan_in); a unit of one piece writes its output directly. Units with
// no tiles are written (zeros, lse -inf) by the CTAs of the attention grid,
// each taking a share of the units, when header word 5 says there are some.
//
// Schedule words (int32):
//   [0] T   [1] total positions   [2] units   [3] slots used
//   [4] most pieces of one unit (the merge kernel sizes its warps by it)
//   [5] units with no tiles
//   [6] overhead (empty positions after each unit's tiles)
//   [7] units the merge kernel combines
//   [8 ..]              tile_start[units + 1]  (exclusive scan of the units' spans)
//   [9 + units ..]      slot_start[units + 1]  (exclusive scan of pieces of cut units)
//   [10 + 2 units ..]   first_tile[batch]
//   [.. + batch ..]     counters[kCountersPerSlot x slots]: arrivals at each
//                       group of a unit's merge tree in this call (unit u's
//                       from kCountersPerSlot x slot_start[u]); 0 between
//                       calls (a group's last arrival resets its counter)
//   [.. 4-word aligned] bin_first[bins][4]: the bin's first unit (the first
//                       whose tiles end after c*T), in one 16-byte load:
//                       {unit (-1: none starts in the bin), its start
//                       position, the end of its tiles, first_tile[b]}
#pragma once

#include <cstdint>

#include "hpc_ops/attention.h"

#if defined(__CUDACC__)
#define HPC_OPS_HOST_DEVICE __host__ __device__
#else
#define HPC_OPS_HOST_DEVICE
#endif

namespace hpc_ops::attention {

constexpr int kDecodeTileTokens = 64;
constexpr int kDecodeHeadDim = 128;
constexpr int kMaxGroup = 16;
constexpr int kMaxQLen = 8;
// NOTE: at least 2 tiles (128 tokens) per bin, so a piece's partial result
// (rows x 512 B) stays small next to the 64 KB of K and V it summarizes.
constexpr int kMinTilesPerBin = 2;
constexpr int kScheduleHeaderWords = 8;
constexpr int kScheduleOverheadWord = 6;
constexpr int kScheduleMergeKernelWord = 7;
// Longest request the schedule counts (2M tokens = 2^15 tiles); with at most
// kMaxUnitOverhead empty positions per unit and kMaxUnits units every line
// position fits in int32. Longer kv_lens are read as this length.
constexpr int32_t kMaxKvLen = 1 << 21;
constexpr int32_t kMaxUnitOverhead = 16;
constexpr int64_t kMaxUnits = INT32_MAX / (kMaxKvLen / kDecodeTileTokens + kMaxUnitOverhead);  // 65503

// Partial-result slots per bin: each bin boundary cuts at most one unit,
// and a unit cut into p pieces crosses p - 1 boundaries, p <= 2 (p - 1).
constexpr int kSlotsPerBin = 2;
// Merge-tree counters per slot: a unit of p pieces has fewer than 2p groups
// over all levels of its tree (MergeWalk).
constexpr int kCountersPerSlot = 2;

struct ScheduleLayout {
  int64_t tile_start = 0, slot_start = 0, first_tile = 0, counters = 0, bin_first = 0, words = 0;
};
constexpr int kBinFirstWords = 4;

HPC_OPS_HOST_DEVICE inline ScheduleLayout schedule_layout(int64_t batch, int64_t kv_heads,
                                                          int64_t bins) {
  const int64_t units = batch * kv_heads;
  ScheduleLayout l;
  l.tile_start = kScheduleHeaderWords;
  l.slot_start = l.tile_start + units + 1;
  l.first_tile = l.slot_start + units + 1;
  l.counters = l.first_tile + batch;
  const int64_t counters = int64_t{kCountersPerSlot} * kSlotsPerBin * bins;
  l.bin_first = (l.counters + counters + kBinFirstWords - 1) / kBinFirstWords * kBinFirstWords;
  l.words = l.bin_first + kBinFirstWords * bins;
  return l;
}

// Tiles of request b's units, and the first tile (window start).
HPC_OPS_HOST_DEVICE inline void request_tiles(int32_t kv_len, int32_t q_len, int32_t window, int32_t& first,
                          int32_t& count) {
  const int32_t len = kv_len <= 0 ? 0 : kv_len < kMaxKvLen ? kv_len : kMaxKvLen;
  first = 0;
  if (window > 0 && len > 0) {
    // Row 0 (position len - q_len) reaches back to len - q_len - window + 1.
    const int64_t lowest = int64_t{len} - q_len - window + 1;
    first = lowest > 0 ? static_cast<int32_t>(lowest / kDecodeTileTokens) : 0;
  }
  const int32_t end = (len + kDecodeTileTokens - 1) / kDecodeTileTokens;
  count = end > first ? end - first : 0;
}

HPC_OPS_HOST_DEVICE inline int32_t tiles_per_bin(int64_t total, int32_t bins) {
  const int64_t even = (total + bins - 1) / bins;  // bins >= 1
  return static_cast<int32_t>(even > kMinTilesPerBin ? even : kMinTilesPerBin);
}

// Positions a unit of `tiles` tiles spans on the line: its tiles and then
// `overhead` empty positions; nothing without tiles.
HPC_OPS_HOST_DEVICE inline int32_t unit_span(int32_t tiles, int32_t overhead) {
  return tiles > 0 ? tiles + overhead : 0;
}

// Where the tiles of the unit spanning [ts, te) end (unit_span).
HPC_OPS_HOST_DEVICE inline int32_t unit_tiles_end(int32_t ts, int32_t te, int32_t overhead) {
  return te > ts ? te - overhead : ts;
}

// The bins [c_begin, c_end) whose first unit is the unit with tiles at
// [ts, tiles_end): those starting in its tiles or in the empty positions
// just before them (the previous unit with tiles ends at ts - overhead), and
// reaching ts.
HPC_OPS_HOST_DEVICE inline void bins_starting_at_unit(int32_t ts, int32_t tiles_end, int32_t overhead,
                                                      int32_t per_bin, int32_t& c_begin, int32_t& c_end) {
  const int32_t after_previous = ts > overhead ? ts - overhead : 0;
  const int32_t from_tail = (after_previous + per_bin - 1) / per_bin;
  const int32_t reaching = ts / per_bin;
  c_begin = from_tail > reaching ? from_tail : reaching;
  c_end = (tiles_end + per_bin - 1) / per_bin;
}

// Warps of the attention kernel for units of `rows` rows (its m-tile
// variants: 4 warps up to 64 rows, 8 above).
HPC_OPS_HOST_DEVICE constexpr int attention_warps(int rows) { return rows <= 64 ? 4 : 8; }

// Units of up to kTreeMergeRows rows have their partials combined by the
// attention CTAs alone, in a tree; the call is one launch. Above, a CTA
// combines a unit's partials only when each of its warps has at most
// kMergeRowPiecesPerWarp (row, partial) pairs to read, and the merge kernel,
// launched after the attention grid, spreads the other units' rows over the
// GPU.
// NOTE: measured (docs/perf/decode_attention.md, v8): without the merge
// kernel's launch 1 x 1K q_len 1 took 8.2-10.5 us instead of 9.1-11.5 and
// 8/1 batches 4-16% less; but at q_len 4 (32-64 rows) one CTA reading every
// row of 8 or more partials made 1 x 1K 18-51% slower and 1 x 64K 30-40%.
constexpr int kTreeMergeRows = 16;
constexpr int kMergeRowPiecesPerWarp = 32;

// The fan-in of a unit's merge tree (MergeWalk), or 0 when the merge kernel
// combines its partials. Up to kTreeMergeRows rows a step loads
// kMergeUnroll (8) partials of two rows per warp in one round trip, so it
// costs ceil(rows / 8) x ceil(fan-in / 8) round trips after a fixed cost
// (a barrier, an acquire-release add): 16 partials at up to 8 rows (two
// round trips), 8 above (a smaller fan-in would take as long per step and
// need more steps). Above kTreeMergeRows: one step of all the pieces, if
// few enough.
// NOTE: measured at 8 rows: a fan-in of 16 against 32, 1 x 16K + 15 x 64
// 8/1 14.7 vs 16.9 us (BF16), 14.9 vs 17.4 (FP8).
HPC_OPS_HOST_DEVICE constexpr int32_t tree_fan_in(int rows) { return rows <= 8 ? 16 : 8; }
HPC_OPS_HOST_DEVICE inline int32_t merge_fan_in(int32_t pieces, int rows) {
  if (rows <= kTreeMergeRows) return tree_fan_in(rows);
  const int warps = attention_warps(rows);
  const bool few = int64_t{pieces} * ((rows + warps - 1) / warps) <= kMergeRowPiecesPerWarp;
  return few && pieces >= 2 ? pieces : 0;
}

// Whether the merge kernel combines a unit's partials (the planners count
// these units in header word 7).
HPC_OPS_HOST_DEVICE inline bool merged_by_merge_kernel(int32_t pieces, int rows) {
  return pieces >= 2 && merge_fan_in(pieces, rows) == 0;
}

// The empty positions after each unit's tiles (schedule word 6) for a batch
// of `units` units with tiles, `tiles` in all, the fewest and most of one
// unit: piece_cost (the most), lowered until a bin holds at most 1/8 more
// positions than with none, and 0 when every unit has the same tiles.
// NOTE: measured (BF16 / FP8 q_len 1, us, charge 0 -> 2): 32 x 128 + 32 x 4K
// 64/8 206.5 -> 143.4 and 117.7 -> 84.5, 1 x 16K + 15 x 64 52.7 -> 32.3;
// but equal units lose their alignment with the bins (64 x 4K 8/1 42.7 ->
// 47.4, 128 x 1K 64/4 75.5 -> 80.9: more pieces), and where bins hold few
// tiles the charge raises every bin's run (FP8 32 x 128 + 32 x 4K 8/1: 4 ->
// 5 tiles, 20.3 -> 25.3 us).
HPC_OPS_HOST_DEVICE inline int32_t unit_overhead(int64_t tiles, int64_t units, int32_t fewest, int32_t most,
                                                 int32_t bins, int32_t piece_cost) {
  if (units == 0 || fewest == most) return 0;
  const int64_t base = tiles_per_bin(tiles, bins);
  for (int32_t o = piece_cost; o > 0; --o) {
    if (8 * int64_t{tiles_per_bin(tiles + o * units, bins)} <= 9 * base) return o;
  }
  return 0;
}

// The fewest tiles per piece that cut a unit of `most` tiles into at most
// fan_in^2 pieces (two merge levels) when its start lines up with a bin (a
// unit starting mid-run takes one piece more), if that is at most
// kTwoLevelMaxRun tiles; else 0 (no floor). Above kTreeMergeRows rows: 0.
// NOTE: measured (docs/perf/decode_attention.md, v8b): a level costs ~3 us
// (an arrival ~0.9 us, then one or two round trips of partial loads at
// 1.2-1.9 us each), where an FP8 bin streams a tile in ~1.5-2 us. FP8 1 x 64K
// 8/1 on 528 bins: 512 pieces of 2 tiles (three levels) 21.9 us, 256 of 4
// (two) 18.4 us. At 16 rows the same floor made pieces of 16 tiles instead
// of 11 (FP8 1 x 64K 64/4, 99 -> 64 pieces): 36.1 -> 37.9 us, so the floor
// applies only while it leaves pieces short.
constexpr int32_t kTwoLevelMaxRun = 2 * kMinTilesPerBin;
HPC_OPS_HOST_DEVICE inline int32_t two_level_run(int32_t most, int rows) {
  if (rows > kTreeMergeRows || most <= 0) return 0;
  const int32_t g = tree_fan_in(rows);
  const int32_t run = (most + g * g - 1) / (g * g);
  return run <= kTwoLevelMaxRun ? run : 0;
}

// The run of positions per bin and the empty positions after each unit's
// tiles (header words 0 and 6), for a batch of `units` units with tiles,
// `tiles` in all, the fewest and most of one unit.
struct BinRun {
  int32_t per_bin, overhead;
};

// Mixed units: an even cut of the line (tiles_per_bin) with unit_overhead's
// charge. Equal units of U tiles: bins lined up with the units when that
// keeps at least 15/16 of the bins the even cut uses busy, so that no bin
// holds parts of two units: j whole units per bin (units >= bins: no
// partial results at all), or k pieces per unit with the units' spans
// rounded up to k runs by empty positions. Either way a run holds at least
// two_level_run tiles.
// NOTE: the even cut of 512 units of 64 tiles on 528 bins (FP8 64 x 4K
// 64/8) is 63 tiles a bin: nearly every unit in two pieces, every bin with
// two prologues and a partial result to merge; lined up, 64 tiles and one
// piece per bin on 512 bins.
HPC_OPS_HOST_DEVICE inline BinRun bin_run(int64_t tiles, int64_t units, int32_t fewest, int32_t most,
                                          int32_t bins, int32_t piece_cost, int rows) {
  const int32_t overhead = unit_overhead(tiles, units, fewest, most, bins, piece_cost);
  const int32_t min_run = two_level_run(most, rows);
  const int32_t even_run = tiles_per_bin(tiles + int64_t{overhead} * units, bins);
  const BinRun even{even_run > min_run ? even_run : min_run, overhead};
  if (units == 0 || fewest != most) return even;
  const int64_t u = most;
  int64_t run = 0, pad = 0, used = 0;
  if (units >= bins) {
    int64_t j = (units + bins - 1) / bins;
    if (j * u < kMinTilesPerBin) j = (kMinTilesPerBin + u - 1) / u;
    run = j * u;
    used = (units + j - 1) / j;
  } else {
    const int64_t k = bins / units;
    run = (u + k - 1) / k;
    run = run > kMinTilesPerBin ? run : kMinTilesPerBin;
    run = run > min_run ? run : min_run;
    const int64_t pieces = (u + run - 1) / run;
    pad = pieces * run - u;
    used = units * pieces;
  }
  const int64_t even_used = (tiles + even.per_bin - 1) / even.per_bin;
  if (pad > kMaxUnitOverhead || 16 * used < 15 * even_used) return even;
  return BinRun{static_cast<int32_t>(run), static_cast<int32_t>(pad)};
}

// Pieces of a unit whose tiles are [start, start + tiles) on the line.
// Tile positions fit int32 (kMaxKvLen, kMaxUnits): 32-bit divisions (a 64-bit
// one per piece cost the attention kernel 7 us on 256 two-tile units).
HPC_OPS_HOST_DEVICE inline int32_t unit_pieces(int32_t start, int32_t tiles, int32_t per_bin) {
  if (tiles <= 0) return 0;
  return (start + tiles - 1) / per_bin - start / per_bin + 1;
}

// A walk up the merge tree of a unit cut into `pieces` >= 2 pieces, fan-in g
// (merge_fan_in, 2 or more), from the partial result of piece `index`.
// Level 0 holds the pieces' partials; group k of level l (its partials
// [k g, min((k + 1) g, n_l))) is combined by the CTA that brings its last
// partial, into partial k of level l + 1, or into the output when the level
// has one group.
// Partial j of level l lives in slot slot0 + j g^l: a group's result takes
// the slot of its first partial, which the group's own step has read, so
// the tree needs no slots beyond the pieces'. Group k of level l counts its
// arrivals in counter (groups of the levels below) + k from the unit's
// first, fewer than 2 x pieces in all.
// A 1 x 64K unit of 256 pieces at 8 rows takes two steps (16 groups of
// 16, then 16 partials).
struct MergeWalk {
  int32_t fan_in, n, index;  // this level: partials, and the one brought
  int32_t stride = 1;        // g^l: slots between two partials of this level
  int32_t counter_base = 0;  // groups of the levels below

  HPC_OPS_HOST_DEVICE int32_t group() const { return index / fan_in; }
  HPC_OPS_HOST_DEVICE int32_t first() const { return group() * fan_in; }
  HPC_OPS_HOST_DEVICE int32_t count() const { return n - first() < fan_in ? n - first() : fan_in; }
  HPC_OPS_HOST_DEVICE int32_t groups() const { return (n + fan_in - 1) / fan_in; }
  HPC_OPS_HOST_DEVICE int32_t counter() const { return counter_base + group(); }
  HPC_OPS_HOST_DEVICE bool top() const { return groups() == 1; }
  // To the next level, carrying this group's result.
  HPC_OPS_HOST_DEVICE void up() {
    const int32_t g = groups(), k = group();
    counter_base += g;
    index = k;
    n = g;
    stride *= fan_in;
  }
};

// Bin c's record (bin_first above) for unit u = [ts, te) of a request whose
// tiles start at first_tile; both planners write it through this.
HPC_OPS_HOST_DEVICE inline void write_bin_first(int32_t* record, int32_t u, int32_t ts, int32_t te,
                                                int32_t first_tile) {
  record[0] = u;
  record[1] = ts;
  record[2] = te;
  record[3] = first_tile;
}

// What a piece costs beyond its tiles, in tiles of one bin's streaming time:
// the most empty positions the planners put after a unit's tiles.
// HPC_OPS_DECODE_PIECE_COST=N (0..kMaxUnitOverhead) overrides it (tuning).
int32_t piece_cost_tiles();

// Rows of one unit's output tile: q_len query tokens x group heads.
inline int32_t unit_rows(const DecodePlanInfo& info) {
  return info.q_len * (info.num_q_heads / info.num_kv_heads);
}

// Attention CTAs per SM for a unit of `rows` rows (the kernel variant's
// occupancy). Defined with the kernels (decode_attention_kernels.cu).
int decode_ctas_per_sm(int rows, bool kv_fp8, int device);

// The CPU planner: schedule (schedule_layout(...).words int32) from kv_lens,
// for a piece cost of `piece_cost` tiles (0..kMaxUnitOverhead;
// piece_cost_tiles).
void plan_on_host(const int32_t* kv_lens, const DecodePlanInfo& info, int32_t piece_cost,
                  int32_t* schedule);

}  // namespace hpc_ops::attention
