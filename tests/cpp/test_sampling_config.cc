// SPDX-License-Identifier: Apache-2.0
// The cluster split of the sampler (sampling_config.h): slices of whole
// 32-token mask words covering V, caches within the budget, and wide clusters
// only for a few rows without a threshold search that all fit at once.
#include <cstdint>

#include "sampling/sampling_config.h"
#include "test_harness.h"

using hpc_ops::sampling::choose_cluster_split;
using hpc_ops::sampling::kPortableCluster;
using hpc_ops::sampling::kWideCluster;
using hpc_ops::sampling::max_cluster_for;

TEST(paired_ctas_once_clusters_exceed_one_wave) {
  using hpc_ops::sampling::use_paired_ctas;
  EXPECT_TRUE(!use_paired_ctas(1, 16, 132));
  EXPECT_TRUE(!use_paired_ctas(16, 8, 132));   // 128 CTAs: one wave at one CTA per SM
  EXPECT_TRUE(use_paired_ctas(17, 8, 132));
  EXPECT_TRUE(use_paired_ctas(512, 8, 132));
}

TEST(wide_clusters_only_for_few_rows_without_thresholds) {
  EXPECT_EQ(max_cluster_for(1, false, 8), kWideCluster);
  EXPECT_EQ(max_cluster_for(4, false, 8), kWideCluster);
  EXPECT_EQ(max_cluster_for(5, false, 8), kPortableCluster);    // more rows: the wider split loses
  EXPECT_EQ(max_cluster_for(1, true, 8), kPortableCluster);     // top-k / top-p rounds
  EXPECT_EQ(max_cluster_for(3, false, 2), kPortableCluster);    // not all resident at once
  EXPECT_EQ(max_cluster_for(1, false, 0), kPortableCluster);    // the device cannot form one
  EXPECT_EQ(max_cluster_for(2, false, 2), kWideCluster);
}

TEST(small_vocabularies_use_one_cta) {
  for (int64_t v : {1, 2, 31, 33, 1000, 4096}) {
    const auto s = choose_cluster_split(v, 8, 227 * 1024, 25 * 1024);
    EXPECT_EQ(s.cluster, 1);
    EXPECT_TRUE(s.slice >= v);
    EXPECT_EQ(s.slice % 32, 0);
    EXPECT_EQ(s.cached, s.slice);
  }
}

TEST(large_vocabularies_split_up_to_the_limit) {
  for (int64_t v : {32000, 50257, 128256, 151936, 256000, 500000}) {
    for (int limit : {4, 8, 16}) {
      const auto s = choose_cluster_split(v, limit, 227 * 1024, 25 * 1024);
      EXPECT_TRUE(s.cluster >= 1 && s.cluster <= limit);
      EXPECT_EQ(s.slice % 32, 0);
      EXPECT_TRUE(static_cast<int64_t>(s.slice) * s.cluster >= v);             // covers V
      EXPECT_TRUE(static_cast<int64_t>(s.slice) * (s.cluster - 1) < v);        // no empty CTA
      EXPECT_TRUE(s.cached <= s.slice);
      EXPECT_TRUE(s.smem_bytes <= 227 * 1024);
    }
  }
  EXPECT_EQ(choose_cluster_split(151936, 8, 227 * 1024, 25 * 1024).cluster, 8);
  EXPECT_EQ(choose_cluster_split(32000, 8, 227 * 1024, 25 * 1024).cluster, 8);
}

TEST(slices_beyond_the_budget_are_partly_cached) {
  const auto s = choose_cluster_split(4000000, 8, 227 * 1024, 25 * 1024);
  EXPECT_EQ(s.cluster, 8);
  EXPECT_TRUE(s.cached < s.slice);
  EXPECT_TRUE(s.smem_bytes <= 227 * 1024);
}

TEST_MAIN()
