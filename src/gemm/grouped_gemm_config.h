// SPDX-License-Identifier: Apache-2.0
// Launch choices of the grouped GEMM: the row (token) tile and the grid. Pure
// host code, unit-tested on the CPU (tests/cpp/test_grouped_gemm_config.cc).
#pragma once

#include <cstdint>

#include "gemm/grouped_gemm_params.h"

namespace hpc_ops::gemm {

// Row tiles the kernels are built for (wgmma N).
constexpr int kTokenTiles[] = {16, 32, 64, 128};

// The smallest row tile that holds `expected_rows` rows of a group, up to
// 128: a tile past the group's rows only costs x traffic and MMA work (both
// small next to the weights at decode sizes), while a group split over more
// tiles re-reads its weight tile once per extra tile (from L2 when the CTAs
// run together).
int choose_token_tile(int64_t expected_rows);

// Upper bound of the tiles a launch can have (the exact count depends on the
// device-side group sizes): used to size the persistent grid.
int64_t max_tiles(Layout layout, int64_t rows, int64_t max_rows, int num_groups, int n,
                  int token_tile);

// One CTA per SM, never more than there can be tiles.
int grid_size(int64_t max_tiles, int num_sms);

// Whether the row tiles of x go by TMA (else cp.async): the contiguous and
// masked layouts (rows at a fixed stride) with 64- or 128-row tiles. Measured
// (docs/perf/grouped_gemm.md, v4): TMA frees the schedulers at 512-4096 rows
// and is 6-8% faster on the small-K down projections at 64 rows, but 6-11%
// slower on those at 16 rows, where one producer warp walks many 2-k-tile
// tiles that four cp.async warps share.
bool rows_by_tma(Layout layout, int token_tile);

}  // namespace hpc_ops::gemm
