// SPDX-License-Identifier: Apache-2.0
// The row-wise engine's launch heuristic: every supported width gets a
// geometry that covers the row exactly once, within the kernel's launch bounds.
#include "rowwise/rowwise_config.h"
#include "test_harness.h"

using hpc_ops::rowwise::BulkConfig;
using hpc_ops::rowwise::choose_bulk_config;
using hpc_ops::rowwise::choose_rowwise_config;
using hpc_ops::rowwise::choose_stream_slots;
using hpc_ops::rowwise::kStreamUnroll;
using hpc_ops::rowwise::kBulkMaxStages;
using hpc_ops::rowwise::kBulkStaticSmem;
using hpc_ops::rowwise::kSmemPerCtaMax;
using hpc_ops::rowwise::kSmemPerSm;
using hpc_ops::rowwise::kSmemReservedPerCta;
using hpc_ops::rowwise::kMaxCols;
using hpc_ops::rowwise::max_threads_for_vecs;
using hpc_ops::rowwise::kLoopedMaxThreads;
using hpc_ops::rowwise::kLoopedVecs;
using hpc_ops::rowwise::looped_threads;
using hpc_ops::rowwise::use_looped_kernel;

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

// Streaming chunks: full 4-slot chunks once they fill every resident warp
// (132 SMs x 3 CTAs x 8 warps = 3168), otherwise one slot per chunk.
TEST(stream_slots_follow_the_problem_size) {
  EXPECT_EQ(choose_stream_slots(1, 112, 132), 1);        // one row of C = 14336
  EXPECT_EQ(choose_stream_slots(16384, 112, 132), kStreamUnroll);
  EXPECT_EQ(choose_stream_slots(3168, 8, 132), kStreamUnroll);  // exactly one chunk per warp
  EXPECT_EQ(choose_stream_slots(3167, 8, 132), 1);
  EXPECT_EQ(choose_stream_slots(0, 8, 132), 1);
  EXPECT_EQ(choose_stream_slots(100000, 1, 0), kStreamUnroll);  // unknown SM count: one SM
}

// The looped kernel's CTA: whole warps, one step per row up to
// kLoopedMaxThreads x kLoopedVecs vectors, several steps beyond.
TEST(looped_threads_cover_the_row) {
  for (int64_t cols = 8; cols <= kMaxCols; cols += (cols < 4096 ? 8 : 1000 * 8)) {
    const int t = looped_threads(cols);
    const int64_t vecs = cols / 8;
    EXPECT_TRUE(t % 32 == 0 && t >= 32 && t <= kLoopedMaxThreads);
    const int64_t steps = (vecs + int64_t{t} * kLoopedVecs - 1) / (int64_t{t} * kLoopedVecs);
    EXPECT_TRUE(steps == 1 || t == kLoopedMaxThreads);
    EXPECT_TRUE(t == 32 || (t - 32) * kLoopedVecs < vecs);  // no whole idle warp
  }
  EXPECT_EQ(looped_threads(7168), 224);
  EXPECT_EQ(looped_threads(8), 32);
}

// Measured crossover: from 4096 x 4096 elements up.
TEST(looped_kernel_for_large_problems) {
  EXPECT_TRUE(use_looped_kernel(4096, 7168));
  EXPECT_TRUE(use_looped_kernel(4096, 4096));
  EXPECT_TRUE(use_looped_kernel(16384, 2048));
  EXPECT_TRUE(!use_looped_kernel(1024, 7168));
  EXPECT_TRUE(!use_looped_kernel(4096, 2048));
  EXPECT_TRUE(!use_looped_kernel(0, 7168));
}

TEST(zero_rows_launch_nothing) {
  const auto c = choose_rowwise_config(4096, 0, 132);
  EXPECT_EQ(c.grid, 0);
}

// The bulk-copy kernel's geometry: shared memory within the per-SM budget,
// buffers 128-byte aligned, items covering every row chunk exactly once.
TEST(bulk_config_fits_shared_memory) {
  for (int64_t cols = 8; cols <= kMaxCols; cols += (cols < 4096 ? 8 : 1000 * 8)) {
    for (int in_bytes : {2, 4}) {
      for (int inputs : {1, 2}) {
        for (bool whole_row : {false, true}) {
          const BulkConfig c = choose_bulk_config(cols, 4097, 132, in_bytes, inputs, whole_row);
          if (!c.usable) {
            EXPECT_TRUE(whole_row);  // chunks of 4096 columns always fit
            continue;
          }
          EXPECT_TRUE(c.stages >= 2 && c.stages <= kBulkMaxStages);
          EXPECT_TRUE(c.buffer_bytes % 128 == 0 && c.buffers_offset % 128 == 0);
          EXPECT_TRUE(c.buffer_bytes >= c.chunk_cols * in_bytes);
          EXPECT_TRUE(c.smem_bytes <= kSmemPerCtaMax);
          EXPECT_TRUE(c.ctas_per_sm * (c.smem_bytes + kBulkStaticSmem + kSmemReservedPerCta) <=
                      kSmemPerSm);
          EXPECT_TRUE(whole_row ? c.chunk_cols == cols : c.chunk_cols % 128 == 0 || c.chunk_cols == cols);
          const int64_t chunks = (cols + c.chunk_cols - 1) / c.chunk_cols;
          EXPECT_EQ(c.items, 4097 * chunks);
          EXPECT_TRUE(c.grid >= 1 && c.grid <= c.items);
        }
      }
    }
  }
}

TEST(bulk_config_model_shapes) {
  // RMSNorm at hidden 7168: 14 KB rows -> 3 CTAs x 5 stages (74 KB each).
  BulkConfig c = choose_bulk_config(7168, 4096, 132, 2, 1, true);
  EXPECT_TRUE(c.usable);
  EXPECT_EQ(c.ctas_per_sm, 3);
  EXPECT_EQ(c.stages, 5);
  EXPECT_EQ(c.grid, 396);
  // add + RMSNorm at 7168: 28 KB per stage -> 2 CTAs x 4 stages.
  c = choose_bulk_config(7168, 4096, 132, 2, 2, true);
  EXPECT_EQ(c.ctas_per_sm, 2);
  EXPECT_EQ(c.stages, 4);
  // SiLU-and-mul at C = 14336: chunks of 4096 columns, 16 KB per stage.
  c = choose_bulk_config(14336, 16384, 132, 2, 2, false);
  EXPECT_EQ(c.chunk_cols, 4096);
  EXPECT_EQ(c.items, 16384 * 4);
  EXPECT_EQ(c.ctas_per_sm, 3);
  EXPECT_EQ(c.stages, 4);
  // Per-token scales of the same rows need whole rows: 56 KB per stage -> 1 CTA x 4.
  c = choose_bulk_config(14336, 16384, 132, 2, 2, true);
  EXPECT_EQ(c.ctas_per_sm, 1);
  EXPECT_EQ(c.stages, 4);
  // Rows too wide for two stages fall back to the register kernel.
  c = choose_bulk_config(65536, 16, 132, 2, 2, true);
  EXPECT_TRUE(!c.usable);
  // Few rows: never more CTAs than items.
  c = choose_bulk_config(4096, 3, 132, 2, 1, true);
  EXPECT_EQ(c.grid, 3);
}

TEST_MAIN()
