// SPDX-License-Identifier: Apache-2.0
// The grouped GEMM launch choices: the row tile holds the expected rows (up
// to 128), the tile bound covers every possible routing, the grid never
// exceeds the SMs or the tiles, rows go by TMA only where they pay.
#include "gemm/grouped_gemm_config.h"
#include "test_harness.h"

using hpc_ops::gemm::choose_token_tile;
using hpc_ops::gemm::Epilogue;
using hpc_ops::gemm::grid_size;
using hpc_ops::gemm::Layout;
using hpc_ops::gemm::max_tiles;
using hpc_ops::gemm::rows_by_tma;
using hpc_ops::gemm::tokens_on_m;

TEST(row_tile_holds_the_expected_rows) {
  EXPECT_EQ(choose_token_tile(0), 16);
  EXPECT_EQ(choose_token_tile(1), 16);
  EXPECT_EQ(choose_token_tile(16), 16);
  EXPECT_EQ(choose_token_tile(17), 32);
  EXPECT_EQ(choose_token_tile(64), 64);
  EXPECT_EQ(choose_token_tile(65), 128);
  EXPECT_EQ(choose_token_tile(4096), 128);
}

// Exact tile count of a routing, as the kernel computes it.
int64_t tiles_of(const std::vector<int64_t>& rows_per_group, int n, int tile) {
  int64_t t = 0;
  for (int64_t r : rows_per_group) t += (r + tile - 1) / tile * ((n + 127) / 128);
  return t;
}

TEST(tile_bound_covers_every_routing) {
  // 300 rows over 8 groups, placed as unevenly as possible and evenly.
  for (int tile : {16, 32, 64, 128}) {
    const int64_t bound = max_tiles(Layout::kContiguous, 300, 0, 8, 4096, tile);
    EXPECT_TRUE(tiles_of({300, 0, 0, 0, 0, 0, 0, 0}, 4096, tile) <= bound);
    EXPECT_TRUE(tiles_of({38, 38, 38, 38, 37, 37, 37, 37}, 4096, tile) <= bound);
    EXPECT_TRUE(tiles_of({1, 1, 1, 1, 1, 1, 1, 293}, 4096, tile) <= bound);
    EXPECT_EQ(max_tiles(Layout::kMasked, 0, 300, 8, 4096, tile),
              tiles_of({300, 300, 300, 300, 300, 300, 300, 300}, 4096, tile));
  }
  // N tails count a whole channel tile.
  EXPECT_EQ(max_tiles(Layout::kMasked, 0, 16, 1, 144, 16), 2);
}

TEST(grid_is_one_cta_per_sm_at_most) {
  EXPECT_EQ(grid_size(1, 132), 1);
  EXPECT_EQ(grid_size(0, 132), 1);
  EXPECT_EQ(grid_size(131, 132), 131);
  EXPECT_EQ(grid_size(1000000, 132), 132);
}

TEST(rows_by_tma_from_64_row_tiles_without_gathering) {
  for (Layout layout : {Layout::kContiguous, Layout::kMasked}) {
    EXPECT_TRUE(!rows_by_tma(layout, 16));
    EXPECT_TRUE(!rows_by_tma(layout, 32));
    EXPECT_TRUE(rows_by_tma(layout, 64));
    EXPECT_TRUE(rows_by_tma(layout, 128));
  }
  for (int tile : {16, 32, 64, 128}) EXPECT_TRUE(!rows_by_tma(Layout::kGathered, tile));
}

TEST(rows_on_m_only_for_block_scaled_128_row_tiles) {
  for (int tile : {16, 32, 64, 128}) {
    EXPECT_EQ(tokens_on_m(Epilogue::kBlockScaled, tile), tile == 128);
    EXPECT_TRUE(!tokens_on_m(Epilogue::kScaleAtEnd, tile));
    EXPECT_TRUE(!tokens_on_m(Epilogue::kNone, tile));
  }
}

TEST_MAIN()
