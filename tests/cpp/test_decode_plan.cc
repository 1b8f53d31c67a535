// SPDX-License-Identifier: Apache-2.0
// The decode-attention schedule (CPU planner): walking it the way the
// attention kernel does covers every tile of every unit exactly once, the
// bins hold equal runs, partial slots are distinct and within the workspace,
// the merge sees the pieces the kernel wrote, and the header counts the
// largest piece count, the units with no tiles and those the merge kernel
// combines; every walk up a merge tree (MergeWalk) combines each partial
// once, in the slots and counters the schedule gives the unit.
#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "attention/decode_plan.h"
#include "test_harness.h"

using namespace hpc_ops;
using namespace hpc_ops::attention;

namespace {

DecodePlanInfo info_for(int batch, int kv_heads, int group, int q_len, int window, int bins) {
  DecodePlanInfo info;
  info.batch = batch;
  info.num_kv_heads = kv_heads;
  info.num_q_heads = kv_heads * group;
  info.q_len = q_len;
  info.sliding_window = window;
  info.num_bins = bins;
  info.num_slots = kSlotsPerBin * bins;
  info.schedule_words = schedule_layout(batch, kv_heads, bins).words;
  return info;
}

// Replays decode_attention_kernel's walk over the bins; checks every invariant.
bool walk_is_exact(const std::vector<int32_t>& lens, const DecodePlanInfo& info, int32_t piece_cost) {
  const ScheduleLayout l = schedule_layout(info.batch, info.num_kv_heads, info.num_bins);
  std::vector<int32_t> s(l.words);
  plan_on_host(lens.data(), info, piece_cost, s.data());
  const int64_t per_bin = s[0], total = s[1], units = s[2];
  if (per_bin < kMinTilesPerBin || (total + per_bin - 1) / per_bin > info.num_bins) return false;
  const int32_t overhead = s[kScheduleOverheadWord];
  // Units with tiles all alike may round their spans up to whole runs
  // (bin_run); others carry at most the piece cost.
  int32_t fewest = INT32_MAX, most = 0;
  for (const int32_t len : lens) {
    int32_t first = 0, count = 0;
    request_tiles(len, info.q_len, info.sliding_window, first, count);
    if (count > 0) {
      fewest = std::min(fewest, count);
      most = std::max(most, count);
    }
  }
  const int32_t most_overhead = fewest == most ? kMaxUnitOverhead : piece_cost;
  if (s[3] > info.num_slots || overhead < 0 || overhead > most_overhead) return false;
  // Each unit's span: its tiles, then `overhead` empty positions.
  std::vector<int64_t> tiles_end(units);
  int64_t line = 0;
  for (int64_t u = 0; u < units; ++u) {
    int32_t first = 0, count = 0;
    request_tiles(lens[u / info.num_kv_heads], info.q_len, info.sliding_window, first, count);
    if (s[l.tile_start + u] != line) return false;
    tiles_end[u] = line + count;
    if (unit_tiles_end(s[l.tile_start + u], s[l.tile_start + u + 1], overhead) != tiles_end[u]) return false;
    line += count > 0 ? count + overhead : 0;
  }
  if (line != total || s[l.tile_start + units] != total) return false;
  std::vector<int> covered(total, 0);
  std::vector<int> slot_used(info.num_slots, 0);
  std::vector<int> pieces_seen(units, 0);
  for (int64_t c = 0; c < info.num_bins; ++c) {
    const int64_t begin = c * per_bin, end = std::min(begin + per_bin, total);
    // The bin's first unit: the first with tiles ending after begin, if it
    // starts before end.
    int64_t u = 0;
    while (u < units && (tiles_end[u] == s[l.tile_start + u] || tiles_end[u] <= begin)) ++u;
    const int32_t* first = s.data() + l.bin_first + kBinFirstWords * c;
    if (begin >= total || u == units || s[l.tile_start + u] >= end) {
      if (first[0] != -1) return false;
      continue;
    }
    if (first[0] != u || first[1] != s[l.tile_start + u] || first[2] != tiles_end[u] ||
        first[3] != s[l.first_tile + u / info.num_kv_heads]) {
      return false;
    }
    for (int64_t pos = begin; u < units; ++u) {
      const int64_t ts = s[l.tile_start + u];
      if (tiles_end[u] == ts) continue;
      if (ts >= end) break;
      pos = std::max(pos, ts);
      const int64_t piece_end = std::min(tiles_end[u], end);
      for (int64_t t = pos; t < piece_end; ++t) covered[t]++;
      const int pieces = unit_pieces(ts, tiles_end[u] - ts, static_cast<int32_t>(per_bin));
      if (pieces >= 2) {
        const int64_t slot = s[l.slot_start + u] + (c - ts / per_bin);
        if (slot < 0 || slot >= info.num_slots || slot >= s[l.slot_start + u + 1]) return false;
        slot_used[slot]++;
      }
      pieces_seen[u]++;
      pos = piece_end;
      if (pos >= end) break;
    }
  }
  // Every tile covered once, no empty position covered.
  for (int64_t u = 0; u < units; ++u) {
    const int64_t ts = s[l.tile_start + u], te = s[l.tile_start + u + 1];
    for (int64_t t = ts; t < te; ++t) {
      if (covered[t] != (t < tiles_end[u] ? 1 : 0)) return false;
    }
  }
  for (int v : slot_used) if (v > 1) return false;
  int most_pieces = 0, empty_units = 0, left_to_merge = 0;
  const int rows = info.q_len * (info.num_q_heads / info.num_kv_heads);
  for (int64_t u = 0; u < units; ++u) {
    const int64_t ts = s[l.tile_start + u];
    if (pieces_seen[u] != unit_pieces(ts, tiles_end[u] - ts, static_cast<int32_t>(per_bin))) return false;
    most_pieces = std::max(most_pieces, pieces_seen[u]);
    empty_units += pieces_seen[u] == 0;
    left_to_merge += merged_by_merge_kernel(pieces_seen[u], rows);
    // A cut unit's merge-tree counters lie within the schedule's.
    const int64_t cut = s[l.slot_start + u + 1] - s[l.slot_start + u];
    if (cut != (pieces_seen[u] >= 2 ? pieces_seen[u] : 0)) return false;
  }
  for (int64_t w = l.counters; w < l.bin_first; ++w) {
    if (s[w] != 0) return false;  // counts start at zero
  }
  if (l.bin_first - l.counters < int64_t{kCountersPerSlot} * info.num_slots) return false;
  return s[4] == most_pieces && s[5] == empty_units && s[kScheduleMergeKernelWord] == left_to_merge;
}

// The walk at the piece costs worth trying (0: tiles only; beyond a bin).
bool walk_is_exact(const std::vector<int32_t>& lens, const DecodePlanInfo& info) {
  for (int32_t piece_cost : {0, 1, 2, 3, 7, kMaxUnitOverhead}) {
    if (!walk_is_exact(lens, info, piece_cost)) return false;
  }
  return true;
}

}  // namespace

TEST(request_tiles_follow_length_and_window) {
  int32_t first = -1, count = -1;
  request_tiles(0, 1, 0, first, count);
  EXPECT_EQ(count, 0);
  request_tiles(1, 1, 0, first, count);
  EXPECT_EQ(first, 0);
  EXPECT_EQ(count, 1);
  request_tiles(64, 1, 0, first, count);
  EXPECT_EQ(count, 1);
  request_tiles(65, 1, 0, first, count);
  EXPECT_EQ(count, 2);
  // Window 100 at length 1000, q_len 4: row 0 at position 996 sees 897..996.
  request_tiles(1000, 4, 100, first, count);
  EXPECT_EQ(first, 897 / 64);
  EXPECT_EQ(count, 16 - 897 / 64);
  request_tiles(-5, 1, 0, first, count);  // negative lengths read as 0
  EXPECT_EQ(count, 0);
  request_tiles(INT32_MAX, 1, 0, first, count);  // clamped to kMaxKvLen
  EXPECT_EQ(count, kMaxKvLen / 64);
}

TEST(bins_split_a_long_request_among_short_ones) {
  // 1 x 64K + 31 x 4K, 8 kv heads, 264 bins.
  std::vector<int32_t> lens(32, 4096);
  lens[0] = 65536;
  const DecodePlanInfo info = info_for(32, 8, 8, 1, 0, 264);
  std::vector<int32_t> s(info.schedule_words);
  plan_on_host(lens.data(), info, 0, s.data());
  const int64_t total = 8 * (1024 + 31 * 64);
  EXPECT_EQ(s[1], total);
  EXPECT_EQ(s[0], (total + 263) / 264);
  EXPECT_TRUE(walk_is_exact(lens, info));
}

TEST(short_units_are_charged_their_overhead) {
  // 32 x 128 + 32 x 4K, 8 kv heads, 264 bins: without an overhead the 256
  // two-tile units fill 8 bins of 64 tiles (32 units each, every one a chain
  // of round trips); with 2 empty positions per unit each bin holds at most
  // T / 4 of them.
  std::vector<int32_t> lens(64, 4096);
  for (int i = 0; i < 32; ++i) lens[i] = 128;
  const DecodePlanInfo info = info_for(64, 8, 8, 1, 0, 264);
  for (int32_t overhead : {0, 2}) {
    std::vector<int32_t> s(info.schedule_words);
    plan_on_host(lens.data(), info, overhead, s.data());
    EXPECT_EQ(s[kScheduleOverheadWord], overhead);  // 68 tiles a bin instead of 64: within 1/8
    const ScheduleLayout l = schedule_layout(64, 8, 264);
    int most = 0;
    for (int c = 0; c < 264; ++c) {
      int n = 0;
      for (int u = 0; u < 512; ++u) {
        const int32_t ts = s[l.tile_start + u];
        const int32_t tiles_end = unit_tiles_end(ts, s[l.tile_start + u + 1], overhead);
        n += ts < (c + 1) * s[0] && tiles_end > c * s[0];
      }
      most = std::max(most, n);
    }
    EXPECT_EQ(s[0], (256 * (2 + overhead) + 256 * (64 + overhead) + 263) / 264);
    EXPECT_EQ(most, overhead == 0 ? 32 : s[0] / 4);
  }
  EXPECT_TRUE(walk_is_exact(lens, info));
}

TEST(overhead_spares_equal_units_and_small_bins) {
  // Equal units: none (their ends line up with the bins').
  EXPECT_EQ(unit_overhead(64 * 64, 64, 64, 64, 264, 2), 0);
  EXPECT_EQ(unit_overhead(0, 0, INT32_MAX, 0, 264, 2), 0);
  // Mixed units, bins of 64 tiles: the whole cost (64 -> 68).
  EXPECT_EQ(unit_overhead(16896, 512, 2, 64, 264, 2), 2);
  // 4 tiles a bin (FP8 32 x 128 + 32 x 4K 8/1 on 528 bins): any charge
  // makes it 5, more than 1/8: none.
  EXPECT_EQ(unit_overhead(2112, 64, 2, 64, 528, 2), 0);
  // 9 tiles a bin (1 x 16K + 15 x 64 64/8): 2 makes it 10, 1/9 more: allowed;
  // on 396 bins 6 -> 7 is not, 1 keeps 6.
  EXPECT_EQ(unit_overhead(2168, 128, 1, 256, 264, 2), 2);
  EXPECT_EQ(unit_overhead(2168, 128, 1, 256, 396, 2), 1);
  // Bins at the kMinTilesPerBin floor have room: the whole cost.
  EXPECT_EQ(unit_overhead(271, 16, 1, 256, 264, 2), 2);
}

// Header words of the CPU plan for `batch` requests of `len` tokens.
std::vector<int32_t> equal_plan(int batch, int32_t len, int kv_heads, int bins) {
  const DecodePlanInfo info = info_for(batch, kv_heads, 8, 1, 0, bins);
  std::vector<int32_t> s(info.schedule_words);
  plan_on_host(std::vector<int32_t>(batch, len).data(), info, 4, s.data());
  return s;
}

TEST(equal_units_line_up_with_bins) {
  // 64 x 4K, 8 kv heads on 528 bins (FP8 at 8 rows): one unit per bin, no
  // partial results (the even cut: 63 tiles a bin, every unit in two pieces).
  std::vector<int32_t> s = equal_plan(64, 4096, 8, 528);
  EXPECT_EQ(s[0], 64);
  EXPECT_EQ(s[kScheduleOverheadWord], 0);
  EXPECT_EQ(s[3], 0);
  // On 264 bins (BF16): two units per bin.
  s = equal_plan(64, 4096, 8, 264);
  EXPECT_EQ(s[0], 128);
  EXPECT_EQ(s[3], 0);
  // 16 x 16K, 8 kv heads, 528 bins: four pieces per unit, one per bin.
  s = equal_plan(16, 16384, 8, 528);
  EXPECT_EQ(s[0], 64);
  EXPECT_EQ(s[3], 128 * 4);
  EXPECT_EQ(s[4], 4);
  // 16 x 16K, 4 kv heads, 396 bins: six pieces of 43 tiles, the unit's span
  // rounded up by 2 empty positions (384 bins busy; the even cut's 42 tiles
  // keep 391 busy).
  s = equal_plan(16, 16384, 4, 396);
  EXPECT_EQ(s[0], 43);
  EXPECT_EQ(s[kScheduleOverheadWord], 2);
  EXPECT_EQ(s[4], 6);
  // 64 x 4K, 4 kv heads, 396 bins: one unit per bin would leave 140 bins
  // idle: the even cut.
  s = equal_plan(64, 4096, 4, 396);
  EXPECT_EQ(s[0], 42);
  EXPECT_EQ(s[kScheduleOverheadWord], 0);
  // Units of one tile on 264 bins: runs at the kMinTilesPerBin floor, one
  // unit each (the even cut puts two in each of 100 bins).
  s = equal_plan(200, 64, 1, 264);
  EXPECT_EQ(s[0], kMinTilesPerBin);
  EXPECT_EQ(s[kScheduleOverheadWord], 1);
  EXPECT_EQ(s[1], 400);
  // Requests of different lengths but the same tiles, and empty ones.
  EXPECT_TRUE(walk_is_exact({0, 4000, 4050, 4096, 0}, info_for(5, 8, 4, 1, 0, 528)));
  // The walk, over equal batches of every kind.
  std::mt19937 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    const int batch = 1 + static_cast<int>(rng() % 300);
    const int kv_heads = 1 + static_cast<int>(rng() % 8);
    const int32_t len = trial % 2 ? 64 * (1 + static_cast<int>(rng() % 300))
                                  : 1 + static_cast<int>(rng() % 40000);
    const int bins = 1 + static_cast<int>(rng() % 600);
    EXPECT_TRUE(walk_is_exact(std::vector<int32_t>(batch, len), info_for(batch, kv_heads, 4, 1, 0, bins)));
  }
}

TEST(long_units_keep_two_merge_levels_while_pieces_stay_short) {
  // 1 x 64K (1024 tiles), one kv head, 8 rows, 528 bins: 256 pieces of 4
  // tiles (two levels of fan-in 16) instead of 512 of 2 (three levels).
  EXPECT_EQ(two_level_run(1024, 8), 4);
  std::vector<int32_t> s(info_for(1, 1, 8, 1, 0, 528).schedule_words);
  plan_on_host(std::vector<int32_t>{65536}.data(), info_for(1, 1, 8, 1, 0, 528), 4, s.data());
  EXPECT_EQ(s[0], 4);
  EXPECT_EQ(s[4], 256);
  // The same at 16 rows (fan-in 8) would need pieces of 16 tiles: no floor.
  EXPECT_EQ(two_level_run(1024, 16), 0);
  s.assign(info_for(1, 1, 16, 1, 0, 528).schedule_words, 0);
  plan_on_host(std::vector<int32_t>{65536}.data(), info_for(1, 1, 16, 1, 0, 528), 4, s.data());
  EXPECT_EQ(s[0], 2);
  // 1 x 128K at 8 rows: two levels need 8 tiles a piece: no floor either.
  EXPECT_EQ(two_level_run(2048, 8), 0);
  // Above kTreeMergeRows the merge kernel takes such units: no floor.
  EXPECT_EQ(two_level_run(1024, 32), 0);
  // Mixed units take the floor from the longest: 1 x 64K + 15 x 1K (a unit
  // starting mid-run may take one piece more than fan-in^2).
  std::vector<int32_t> lens(16, 1024);
  lens[0] = 65536;
  const DecodePlanInfo mixed = info_for(16, 1, 8, 1, 0, 528);
  s.assign(mixed.schedule_words, 0);
  plan_on_host(lens.data(), mixed, 4, s.data());
  EXPECT_EQ(s[0], 4);
  EXPECT_TRUE(s[4] <= 257);
  EXPECT_TRUE(walk_is_exact(lens, mixed));
}

TEST(walk_covers_every_tile_once) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int batch = 1 + static_cast<int>(rng() % 200);
    const int kv_heads = 1 + static_cast<int>(rng() % 8);
    const int q_len = 1 + static_cast<int>(rng() % 8);
    const int window = trial % 3 == 0 ? 1 + static_cast<int>(rng() % 3000) : 0;
    const int bins = 1 + static_cast<int>(rng() % 600);
    std::vector<int32_t> lens(batch);
    for (auto& v : lens) {
      const int kind = static_cast<int>(rng() % 6);
      v = kind == 0 ? 0 : kind == 1 ? 64 * (1 + static_cast<int>(rng() % 64))
                                    : static_cast<int>(rng() % (kind == 5 ? 70000 : 8192)) + 1;
    }
    EXPECT_TRUE(walk_is_exact(lens, info_for(batch, kv_heads, 4, q_len, window, bins)));
  }
}

TEST(empty_and_tiny_batches) {
  EXPECT_TRUE(walk_is_exact({0, 0, 0}, info_for(3, 2, 8, 1, 0, 264)));
  EXPECT_TRUE(walk_is_exact({1}, info_for(1, 1, 8, 1, 0, 264)));
  EXPECT_TRUE(walk_is_exact({1024}, info_for(1, 8, 8, 1, 0, 264)));
  EXPECT_TRUE(walk_is_exact({1 << 21}, info_for(1, 1, 16, 8, 0, 1)));
}

TEST_MAIN()

TEST(merge_fan_in_splits_the_work) {
  // Up to 16 rows: a tree, 16 partials a step up to 8 rows, 8 above.
  EXPECT_TRUE(merge_fan_in(2, 1) == 16 && merge_fan_in(500, 8) == 16);
  EXPECT_TRUE(merge_fan_in(2, 9) == 8 && merge_fan_in(500, 16) == 8);
  // Above: one step of every piece while each warp reads at most 32 (row,
  // partial) pairs (32 rows on 4 warps: 4 pieces; 128 rows on 8: 2), else
  // the merge kernel.
  EXPECT_TRUE(merge_fan_in(4, 32) == 4 && merge_fan_in(5, 32) == 0);
  EXPECT_TRUE(merge_fan_in(2, 128) == 2 && merge_fan_in(3, 128) == 0);
  EXPECT_TRUE(merged_by_merge_kernel(3, 128) && !merged_by_merge_kernel(2, 128));
  EXPECT_TRUE(!merged_by_merge_kernel(500, 16) && !merged_by_merge_kernel(0, 128));
}

// Walks every piece's way up the merge tree, the pieces arriving in a random
// order, as the attention CTAs do: each step's group gets every partial of
// its level once, after they were written; a step's result overwrites a slot
// no later step reads at the level below; counters stay below
// kCountersPerSlot x pieces and end at zero; the output is written once, by
// the step that brings the unit's last partial.
bool merge_tree_is_exact(int32_t pieces, int32_t fan_in, std::mt19937& rng) {
  std::vector<int32_t> order(pieces);
  for (int32_t i = 0; i < pieces; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<int32_t> counters(int64_t{kCountersPerSlot} * pieces, 0);
  std::vector<int32_t> level_in_slot(pieces, 0);  // which level's partial each slot holds
  std::vector<char> read(pieces, 0);
  int outputs = 0;
  for (const int32_t index : order) {
    MergeWalk walk{fan_in, pieces, index};
    for (int32_t level = 0;; ++level) {
      if (walk.counter() < 0 || walk.counter() >= int64_t{kCountersPerSlot} * pieces) return false;
      if (++counters[walk.counter()] < walk.count()) break;
      if (counters[walk.counter()] != walk.count()) return false;
      counters[walk.counter()] = 0;
      // The step reads partials first .. first + count - 1 of this level.
      for (int32_t k = walk.first(); k < walk.first() + walk.count(); ++k) {
        const int64_t slot = int64_t{k} * walk.stride;
        if (slot >= pieces || level_in_slot[slot] != level) return false;
      }
      if (walk.top()) {
        ++outputs;
        break;
      }
      level_in_slot[int64_t{walk.first()} * walk.stride] = level + 1;
      walk.up();
    }
  }
  for (const int32_t c : counters) {
    if (c != 0) return false;
  }
  return outputs == 1;
}

TEST(merge_tree_combines_every_partial_once) {
  std::mt19937 rng(7);
  for (const int32_t fan_in : {2, 3, 4, 8, 12, 16, 25, 32}) {
    for (int32_t pieces = 2; pieces <= 1100; pieces += pieces < 80 ? 1 : 37) {
      EXPECT_TRUE(merge_tree_is_exact(pieces, fan_in, rng));
    }
  }
}
