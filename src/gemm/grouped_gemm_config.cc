// SPDX-License-Identifier: Apache-2.0
// Launch choices of the grouped GEMM (see grouped_gemm_config.h).
#include "gemm/grouped_gemm_config.h"

#include <algorithm>

namespace hpc_ops::gemm {

int choose_token_tile(int64_t expected_rows) {
  for (int tile : kTokenTiles) {
    if (expected_rows <= tile) return tile;
  }
  return kTokenTiles[sizeof(kTokenTiles) / sizeof(kTokenTiles[0]) - 1];
}

int64_t max_tiles(Layout layout, int64_t rows, int64_t max_rows, int num_groups, int n,
                  int token_tile) {
  const int64_t channel_tiles = (n + kWeightTile - 1) / kWeightTile;
  int64_t row_tiles;
  if (layout == Layout::kMasked) {
    row_tiles = num_groups * ((max_rows + token_tile - 1) / token_tile);
  } else {
    // Each group's last tile may be partial: at most one extra tile per group.
    row_tiles = (rows + token_tile - 1) / token_tile + num_groups;
  }
  return row_tiles * channel_tiles;
}

int grid_size(int64_t max_tiles, int num_sms) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(max_tiles, num_sms)));
}

bool rows_by_tma(Layout layout, int token_tile) {
  return layout != Layout::kGathered && token_tile >= 64;
}

}  // namespace hpc_ops::gemm
