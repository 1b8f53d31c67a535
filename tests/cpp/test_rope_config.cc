// SPDX-License-Identifier: Apache-2.0
// The RoPE + KV-write launch heuristic: chunks cover a row's heads, within
// the per-CTA limit, equal to within one head; decode spreads a row over CTAs.
#include "rope/rope_config.h"
#include "test_harness.h"

using hpc_ops::rope::choose_heads_per_cta;
using hpc_ops::rope::kRopeHeadsPerGroup;
using hpc_ops::rope::rope_groups_per_cta;

TEST(chunks_cover_the_heads_within_the_limit) {
  for (int d : {64, 128, 256}) {
    const int groups = rope_groups_per_cta(d);
    for (int heads = 1; heads <= 300; ++heads) {
      for (int64_t rows : {int64_t{1}, int64_t{16}, int64_t{256}, int64_t{16384}}) {
        const int per_cta = choose_heads_per_cta(rows, heads, d, 132);
        EXPECT_TRUE(per_cta >= 1 && per_cta <= heads);
        EXPECT_TRUE(per_cta <= groups * kRopeHeadsPerGroup);
        const int chunks = (heads + per_cta - 1) / per_cta;
        EXPECT_TRUE(heads - (chunks - 1) * per_cta >= per_cta - chunks);  // last chunk not starved
      }
    }
  }
}

TEST(decode_rows_take_one_head_per_group) {
  // 256 decode rows fill a wave with whole rows; 64 do not.
  EXPECT_EQ(choose_heads_per_cta(256, 72, 128, 132), 72);
  EXPECT_EQ(choose_heads_per_cta(64, 72, 128, 132), 15);
  // Qwen3-235B: 64 q + 2 x 4 kv heads of 128; one decode row -> 5 CTAs.
  EXPECT_EQ(choose_heads_per_cta(1, 72, 128, 132), 15);
  // A 16K-row prefill chunk: the whole row in one CTA (up to 8 heads per lane group).
  EXPECT_EQ(choose_heads_per_cta(16384, 72, 128, 132), 72);
}

TEST_MAIN()
