// SPDX-License-Identifier: Apache-2.0
// The row-wise engine's launch heuristic: every supported width gets a
// geometry that covers the row exactly once, within the kernel's launch bounds.
#include "rowwise/rowwise_config.h"
#include "test_harness.h"

using hpc_ops::rowwise::choose_rowwise_config;
using hpc_ops::rowwise::kMaxCols;
using hpc_ops::rowwise::max_threads_for_vecs;

TEST(covers_every_width_within_bounds) {
  for (int64_t cols = 8; cols <= kMaxCols; cols += (cols < 4096 ? 8 : 1000 * 8)) {
    for (int64_t rows : {1, 7, 132, 4097}) {
      const auto c = choose_rowwise_config(cols, rows, 132);
      const int64_t vecs = cols / 8;
      EXPECT_TRUE(c.threads_per_row % 32 == 0);
      EXPECT_TRUE(static_cast<int64_t>(c.threads_per_row) * c.vecs_per_thread >= vecs);
      // No thread is given more vectors than needed: with one fewer vector per
      // thread (the next smaller variant) the row would not fit in the bounds.
      EXPECT_TRUE(c.threads_per_cta() <= max_threads_for_vecs(c.vecs_per_thread));
      EXPECT_TRUE(c.grid * c.rows_per_cta >= rows);
      EXPECT_TRUE((c.grid - 1) * c.rows_per_cta < rows);
    }
  }
}

TEST(model_hidden_sizes) {
  // hidden 7168 (DeepSeek-V3), one input: 896 vectors -> 4 per thread x 224
  // threads; two inputs: 2 x 448.
  auto c = choose_rowwise_config(7168, 4096, 132);
  EXPECT_EQ(c.vecs_per_thread, 4);
  EXPECT_EQ(c.threads_per_row, 224);
  c = choose_rowwise_config(7168, 4096, 132, 2);
  EXPECT_EQ(c.vecs_per_thread, 2);
  EXPECT_EQ(c.threads_per_row, 448);
  EXPECT_EQ(c.rows_per_cta, 1);
  EXPECT_EQ(c.grid, 4096);
  // hidden 4096: 512 vectors -> 4 x 128 (one input), 2 x 256 (two inputs).
  c = choose_rowwise_config(4096, 16, 132);
  EXPECT_EQ(c.vecs_per_thread, 4);
  EXPECT_EQ(c.threads_per_row, 128);
  c = choose_rowwise_config(4096, 16, 132, 2);
  EXPECT_EQ(c.vecs_per_thread, 2);
  EXPECT_EQ(c.threads_per_row, 256);
  // hidden 8192, one input: 1024 vectors -> 4 x 256 is over the 224 bound -> 8 x 128.
  c = choose_rowwise_config(8192, 16, 132);
  EXPECT_EQ(c.vecs_per_thread, 8);
  EXPECT_EQ(c.threads_per_row, 128);
  // hidden 520: 65 vectors -> 2 x 64; hidden 256: 32 vectors -> 1 x 32.
  c = choose_rowwise_config(520, 16, 132);
  EXPECT_EQ(c.vecs_per_thread, 2);
  EXPECT_EQ(c.threads_per_row, 64);
  c = choose_rowwise_config(256, 16, 132);
  EXPECT_EQ(c.vecs_per_thread, 1);
  // hidden 8200 (not a multiple of 128): 1025 vectors -> 8 x 160.
  c = choose_rowwise_config(8200, 3, 132);
  EXPECT_EQ(c.vecs_per_thread, 8);
  EXPECT_EQ(c.threads_per_row, 160);
  EXPECT_EQ(c.grid, 3);
}

TEST(short_rows_share_a_cta_only_when_rows_are_many) {
  auto c = choose_rowwise_config(8, 100000, 132);  // 1 vector: 32 threads per row
  EXPECT_EQ(c.threads_per_row, 32);
  EXPECT_EQ(c.rows_per_cta, 4);
  c = choose_rowwise_config(8, 7, 132);  // few rows: one per CTA, spread over SMs
  EXPECT_EQ(c.rows_per_cta, 1);
  EXPECT_EQ(c.grid, 7);
}

TEST(forced_vectors_apply_only_when_the_row_fits) {
  auto c = choose_rowwise_config(7168, 64, 132, 2, 8);
  EXPECT_EQ(c.vecs_per_thread, 8);
  EXPECT_EQ(c.threads_per_row, 128);
  c = choose_rowwise_config(7168, 64, 132, 2, 1);  // 896 threads: over the bound, ignored
  EXPECT_EQ(c.vecs_per_thread, 2);
  c = choose_rowwise_config(7168, 64, 132, 2, 3);  // not a compiled variant, ignored
  EXPECT_EQ(c.vecs_per_thread, 2);
}

TEST(zero_rows_launch_nothing) {
  const auto c = choose_rowwise_config(4096, 0, 132);
  EXPECT_EQ(c.grid, 0);
}

TEST_MAIN()
