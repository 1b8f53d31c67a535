// SPDX-License-Identifier: Apache-2.0
// The router GEMM launch shape: the token tile holds M (up to 128), a split
// covers K exactly with no empty range, a split launch never has more CTAs
// than SMs (so its counters and partial tiles fit the workspace), and a
// launch with as many tiles as SMs is not split.
#include "gemm/router_gemm_config.h"
#include "test_harness.h"

using hpc_ops::gemm::choose_router_gemv_shape;
using hpc_ops::gemm::choose_router_shape;
using hpc_ops::gemm::kRouterGemvChannels;
using hpc_ops::gemm::kRouterGemvMaxCluster;
using hpc_ops::gemm::kRouterGemvTokens;
using hpc_ops::gemm::kRouterCountersPerTile;
using hpc_ops::gemm::kRouterMaxSplits;
using hpc_ops::gemm::router_fan_in;
using hpc_ops::gemm::RouterGemmShape;
using hpc_ops::gemm::RouterGemvShape;
using hpc_ops::gemm::router_uses_gemv;
using hpc_ops::gemm::router_partials_offset;
using hpc_ops::gemm::router_workspace_bytes;

TEST(token_tile_grows_with_m) {
  EXPECT_EQ(choose_router_shape(1, 256, 7168, 132).token_tile, 16);
  EXPECT_EQ(choose_router_shape(128, 256, 7168, 132).token_tile, 16);
  EXPECT_EQ(choose_router_shape(129, 256, 7168, 132).token_tile, 32);
  EXPECT_EQ(choose_router_shape(512, 256, 7168, 132).token_tile, 32);
  EXPECT_EQ(choose_router_shape(2048, 256, 7168, 132).token_tile, 64);
  EXPECT_EQ(choose_router_shape(2049, 256, 7168, 132).token_tile, 128);
  EXPECT_EQ(choose_router_shape(4097, 256, 7168, 132).token_tiles, 33);
  // A forced tile (tuning runs) wins; an unknown one is ignored.
  EXPECT_EQ(choose_router_shape(1, 256, 7168, 132, 64).token_tile, 64);
  EXPECT_EQ(choose_router_shape(1, 256, 7168, 132, 48).token_tile, 16);
}

TEST(splits_cover_k_and_fit_the_workspace) {
  for (int sms : {78, 114, 132}) {
    for (int64_t m : {1, 7, 16, 33, 100, 128, 300, 1000, 4096, 4097, 32768}) {
      for (int64_t n : {16, 144, 192, 256, 512}) {
        for (int64_t k : {16, 208, 4096, 7168}) {
          const RouterGemmShape s = choose_router_shape(m, n, k, sms);
          const int k_tiles = static_cast<int>((k + 63) / 64);
          EXPECT_TRUE(s.splits >= 1 && s.k_tiles_per_split >= 1);
          // Every range non-empty, together exactly K.
          EXPECT_TRUE((s.splits - 1) * s.k_tiles_per_split < k_tiles);
          EXPECT_TRUE(s.splits * s.k_tiles_per_split >= k_tiles);
          if (s.splits > 1) {
            EXPECT_TRUE(s.ctas() <= sms);  // one partial tile and counter per CTA / tile
            EXPECT_TRUE(router_partials_offset(sms) >= 4 * kRouterCountersPerTile * s.tiles());
            EXPECT_TRUE(s.splits <= kRouterMaxSplits);
            EXPECT_TRUE(router_partials_offset(sms) + s.ctas() * 128 * s.token_tile * 4 <=
                        router_workspace_bytes(sms));
          }
          if (s.tiles() >= sms) EXPECT_EQ(s.splits, 1);
        }
      }
    }
  }
}

TEST(reduction_tree_counters_fit_a_tile) {
  // The kernel walks levels of ceil(count / fan_in) groups, one counter each.
  for (int tile : {16, 32, 64, 128}) {
    for (int splits = 2; splits <= kRouterMaxSplits; ++splits) {
      int used = 0;
      for (int count = splits; count > 1; count = (count + router_fan_in(tile) - 1) / router_fan_in(tile)) {
        used += (count + router_fan_in(tile) - 1) / router_fan_in(tile);
      }
      EXPECT_TRUE(used <= kRouterCountersPerTile);
    }
  }
}

TEST(split_targets_half_or_all_sms) {
  // DeepSeek-V3 router, one token: 2 channel tiles x 33 splits of 4 K tiles
  // (target 66 CTAs with 16-token tiles).
  const RouterGemmShape one = choose_router_shape(1, 256, 7168, 132);
  EXPECT_EQ(one.channel_tiles, 2);
  EXPECT_EQ(one.k_tiles_per_split, 4);
  EXPECT_EQ(one.splits, 28);
  // 1024 tokens: 64-token tiles, 32 tiles x 4 splits = all SMs.
  EXPECT_EQ(choose_router_shape(1024, 256, 7168, 132).splits, 4);
  EXPECT_EQ(choose_router_shape(4096, 256, 7168, 132).splits, 2);
  EXPECT_EQ(choose_router_shape(8192, 256, 7168, 132).splits, 1);
  // Forced splits never make a split launch exceed the SMs.
  EXPECT_EQ(choose_router_shape(1024, 256, 7168, 132, 0, 16).splits, 4);
}

TEST(few_tokens_take_the_cuda_core_kernel) {
  EXPECT_TRUE(router_uses_gemv(1));
  EXPECT_TRUE(router_uses_gemv(16));
  EXPECT_TRUE(!router_uses_gemv(17));
  EXPECT_TRUE(router_uses_gemv(64, 64));  // tuning override
  EXPECT_TRUE(!router_uses_gemv(65, 64));
  EXPECT_TRUE(!router_uses_gemv(1, -1));  // off
  // DeepSeek-V3: 64 groups of 4 channels x 4-CTA clusters = 256 CTAs (<= 2 x 132).
  const RouterGemvShape ds = choose_router_gemv_shape(1, 256, 7168, 132);
  EXPECT_EQ(ds.channel_groups, 64);
  EXPECT_EQ(ds.cluster, 4);
  EXPECT_EQ(ds.token_blocks, 1);
  // Hunyuan-V3 (N = 192): 48 groups x 5.
  EXPECT_EQ(choose_router_gemv_shape(7, 192, 4096, 132).cluster, 5);
  // 16 tokens: two token blocks, clusters of 2.
  const RouterGemvShape two = choose_router_gemv_shape(16, 256, 7168, 132);
  EXPECT_EQ(two.token_blocks, 2);
  EXPECT_EQ(two.cluster, 2);
  // Small K keeps >= 256 per CTA; a small problem still gets >= 1.
  EXPECT_EQ(choose_router_gemv_shape(1, 16, 16, 132).cluster, 1);
  EXPECT_EQ(choose_router_gemv_shape(1, 16, 1024, 132).cluster, 4);
  for (int64_t m : {1, 7, 16, 100}) {
    for (int64_t n : {16, 144, 256, 512}) {
      const RouterGemvShape s = choose_router_gemv_shape(m, n, 4096, 132);
      EXPECT_TRUE(s.cluster >= 1 && s.cluster <= kRouterGemvMaxCluster);
      EXPECT_TRUE(int64_t{s.channel_groups} * kRouterGemvChannels >= n);
      EXPECT_TRUE(int64_t{s.token_blocks} * kRouterGemvTokens >= m);
    }
  }
}

TEST_MAIN()
