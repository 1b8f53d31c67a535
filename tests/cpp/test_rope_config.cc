// SPDX-License-Identifier: Apache-2.0
// The RoPE + KV-write launch heuristics: the per-row kernel's chunks cover a
// row's heads, within the per-CTA limit, equal to within one head; decode
// spreads a row over CTAs. The streaming kernel's stages fit its shared
// memory, and it runs for prefill-sized row counts only.
#include "rope/rope_config.h"
#include "test_harness.h"

using hpc_ops::rope::choose_heads_per_cta;
using hpc_ops::rope::kStreamMaxStages;
using hpc_ops::rope::kStreamMinCtas;
using hpc_ops::rope::kStreamSharedBytesPerCta;
using hpc_ops::rope::stream_grid;
using hpc_ops::rope::stream_shape;
using hpc_ops::rope::use_stream_kernel;
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
  EXPECT_EQ(choose_heads_per_cta(64, 72, 128, 132), 24);
  // Qwen3-235B: 64 q + 2 x 4 kv heads of 128; one decode row -> 3 CTAs.
  EXPECT_EQ(choose_heads_per_cta(1, 72, 128, 132), 24);
  // A 16K-row prefill chunk: the whole row in one CTA (up to kRopeHeadsPerGroup = 3 heads per lane group).
  EXPECT_EQ(choose_heads_per_cta(16384, 72, 128, 132), 72);
}

TEST(stream_stages_fit_shared_memory) {
  for (int d : {64, 128, 256}) {
    for (int heads = 1; heads <= 300; ++heads) {
      for (int rot = 8; rot <= d; rot += 8) {
        for (int elem : {2, 4}) {
          const auto s = stream_shape(heads, d, rot, elem);
          EXPECT_EQ(s.cos_sin_offset, heads * d * 2);
          EXPECT_EQ(s.cos_sin_bytes, rot * elem);
          EXPECT_TRUE(s.cos_sin_bytes % 16 == 0 && s.stage_bytes % 128 == 0);  // bulk copies
          EXPECT_TRUE(s.stage_bytes >= s.cos_sin_offset + s.cos_sin_bytes);
          if (s.stages == 0) {
            EXPECT_TRUE(2 * s.stage_bytes > kStreamSharedBytesPerCta);
          } else {
            EXPECT_TRUE(s.stages >= 2 && s.stages <= kStreamMaxStages);
            EXPECT_TRUE(s.stages * s.stage_bytes <= kStreamSharedBytesPerCta);
            EXPECT_TRUE(s.stages == kStreamMaxStages ||
                        (s.stages + 1) * s.stage_bytes > kStreamSharedBytesPerCta);
          }
        }
      }
    }
  }
  // Llama-70B: 80 heads of 128 + 128 fp32 cos/sin = 20992 bytes, 5 stages.
  EXPECT_EQ(stream_shape(80, 128, 128, 4).stages, 5);
  // 200 heads of 256 (100 KB) do not fit twice.
  EXPECT_EQ(stream_shape(200, 256, 256, 4).stages, 0);
}

TEST(stream_kernel_for_prefill_rows_only) {
  const auto llama = stream_shape(80, 128, 128, 4);
  EXPECT_TRUE(use_stream_kernel(16384, 132, llama));
  EXPECT_TRUE(use_stream_kernel(2048, 132, llama));
  EXPECT_TRUE(!use_stream_kernel(256, 132, llama));  // decode batches: the per-row kernel
  EXPECT_TRUE(!use_stream_kernel(16384, 132, stream_shape(200, 256, 256, 4)));  // no room
  EXPECT_EQ(stream_grid(16384, 132), kStreamMinCtas * 132);
  EXPECT_EQ(stream_grid(5, 132), 5);
}

TEST_MAIN()
