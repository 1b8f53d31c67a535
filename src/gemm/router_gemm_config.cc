// SPDX-License-Identifier: Apache-2.0
// Launch shape of the router GEMM (see router_gemm_config.h).
#include "gemm/router_gemm_config.h"

#include <algorithm>

namespace hpc_ops::gemm {

RouterGemmShape choose_router_shape(int64_t m, int64_t n, int64_t k, int num_sms,
                                    int forced_tile, int forced_splits) {
  RouterGemmShape s;
  // Measured on the H200 (DeepSeek-V3 router, docs/perf/grouped_gemm.md):
  // every token tile re-reads its CTA's weight tiles from L2, and past ~64
  // CTAs of 16-32 tokens that traffic, not HBM, set the time (M = 64: 16
  // tokens x 8 splits 9.1 us, x 16 splits 12.6 us, 64 tokens 15-17 us).
  s.token_tile = m <= 128 ? 16 : m <= 512 ? 32 : m <= 2048 ? 64 : 128;
  for (int tile : kRouterTokenTiles) {
    if (tile == forced_tile) s.token_tile = tile;
  }
  s.token_tiles = static_cast<int>((m + s.token_tile - 1) / s.token_tile);
  s.channel_tiles = static_cast<int>((n + kRouterChannelTile - 1) / kRouterChannelTile);
  const int k_tiles = static_cast<int>((k + kRouterKTile - 1) / kRouterKTile);
  const int64_t tiles = s.tiles();
  // Split K until the CTAs reach half the SMs (16-32 tokens) or all of them
  // (64-128): M = 1, 32 splits 7.9 us, 56 splits 9.5 us; M = 1024, 64
  // tokens, 4 splits 26.0 us, 1 split 44.4 us.
  const int64_t target = s.token_tile <= 32 ? num_sms / 2 : num_sms;
  int splits = tiles >= target ? 1 : static_cast<int>(target / std::max<int64_t>(tiles, 1));
  if (forced_splits > 0) {  // still no more CTAs than SMs when split (the workspace)
    splits = static_cast<int>(std::min<int64_t>(forced_splits, num_sms / std::max<int64_t>(tiles, 1)));
  }
  splits = std::max(1, std::min({splits, k_tiles, kRouterMaxSplits}));
  // Even ranges, none empty: ceil(k_tiles / per) ranges of `per` tiles.
  s.k_tiles_per_split = (k_tiles + splits - 1) / splits;
  s.splits = (k_tiles + s.k_tiles_per_split - 1) / s.k_tiles_per_split;
  return s;
}

bool router_uses_gemv(int64_t m, int forced_max_m) {
  // Measured on the H200 (docs/perf/grouped_gemm.md, router v2): at M = 1
  // and 16 the CUDA-core kernel took 3.4-8.6 us against 7.4-10.4 (one case
  // 4% slower: DeepSeek-V3, 2 parts, M = 16); at M = 64 24-26 us against
  // 8.8-12 (each 8-token block re-reads the weights).
  if (forced_max_m < 0) return false;
  const int64_t max_m = forced_max_m > 0 ? forced_max_m : 16;
  return m <= max_m;
}

RouterGemvShape choose_router_gemv_shape(int64_t m, int64_t n, int64_t k, int num_sms) {
  RouterGemvShape s;
  s.channel_groups = static_cast<int>((n + kRouterGemvChannels - 1) / kRouterGemvChannels);
  s.token_blocks = static_cast<int>((m + kRouterGemvTokens - 1) / kRouterGemvTokens);
  const int64_t ctas = int64_t{s.channel_groups} * s.token_blocks;
  while (s.cluster < kRouterGemvMaxCluster && ctas * (s.cluster + 1) <= 2 * int64_t{num_sms} &&
         k / (s.cluster + 1) >= 256) {
    ++s.cluster;
  }
  return s;
}

int64_t router_partials_offset(int num_sms) {
  // kRouterCountersPerTile int32 per tile; 256-byte aligned partials after them.
  return (int64_t{num_sms} * kRouterCountersPerTile * 4 + 255) / 256 * 256;
}

int64_t router_workspace_bytes(int num_sms) {
  return router_partials_offset(num_sms) +
         int64_t{num_sms} * kRouterChannelTile * kRouterMaxTokenTile * 4;
}

}  // namespace hpc_ops::gemm
