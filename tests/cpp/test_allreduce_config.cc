// SPDX-License-Identifier: Apache-2.0
// The fused all-reduce's host decisions: the path (one-shot for small
// messages or two ranks, two-shot above the modelled crossover, NCCL past the
// capacity or without peer access), the peer-buffer layout (every slot holds
// what either path writes into it, parts aligned and disjoint) and the grid.
#include "comm/allreduce_config.h"
#include "test_harness.h"

using hpc_ops::AllReducePath;
using hpc_ops::choose_allreduce_path;
using hpc_ops::comm::allreduce_ctas;
using hpc_ops::comm::kAllReduceThreads;
using hpc_ops::comm::kTwoShotSavedBytes;
using hpc_ops::comm::kVecElems;
using hpc_ops::comm::one_shot_limit_elems;
using hpc_ops::comm::plan_peer_buffer;
using hpc_ops::comm::two_shot_chunk_vecs;

namespace {
AllReducePath path(int world, int64_t elems, int64_t capacity, bool peer = true) {
  return choose_allreduce_path(elems, capacity, one_shot_limit_elems(world, capacity), peer);
}
}  // namespace

TEST(two_ranks_always_one_shot) {
  const int64_t cap = 512 * 7168;
  EXPECT_TRUE(path(2, 7168, cap) == AllReducePath::kOneShot);
  EXPECT_TRUE(path(2, cap, cap) == AllReducePath::kOneShot);
  EXPECT_TRUE(path(2, cap + 8, cap) == AllReducePath::kNccl);
  EXPECT_TRUE(path(1, cap, cap) == AllReducePath::kOneShot);
}

TEST(two_shot_above_the_crossover) {
  const int64_t cap = 512 * 7168;
  for (int world : {3, 4, 6, 8}) {
    const int64_t limit = one_shot_limit_elems(world, cap);
    EXPECT_EQ(limit % kVecElems, 0);
    // the saved bytes at the limit are within one vector of the constant
    const int64_t saved = 2 * limit * (world - 1) * (world - 2) / world;
    EXPECT_TRUE(saved <= kTwoShotSavedBytes);
    EXPECT_TRUE(2 * (limit + kVecElems) * (world - 1) * (world - 2) / world > kTwoShotSavedBytes);
    EXPECT_TRUE(path(world, 7168, cap) == AllReducePath::kOneShot);
    EXPECT_TRUE(path(world, limit, cap) == AllReducePath::kOneShot);
    EXPECT_TRUE(path(world, limit + kVecElems, cap) == AllReducePath::kTwoShot);
    EXPECT_TRUE(path(world, cap, cap) == AllReducePath::kTwoShot);
    EXPECT_TRUE(path(world, cap + kVecElems, cap) == AllReducePath::kNccl);
  }
  // 8 ranks at hidden 7168: one-shot up to 10 tokens (~150 KB of x).
  EXPECT_TRUE(path(8, 10 * 7168, 512 * 7168) == AllReducePath::kOneShot);
  EXPECT_TRUE(path(8, 11 * 7168, 512 * 7168) == AllReducePath::kTwoShot);
}

TEST(no_peer_access_means_nccl) {
  EXPECT_TRUE(path(8, 8, 4096, false) == AllReducePath::kNccl);
  EXPECT_TRUE(path(2, 0, 4096, false) == AllReducePath::kNccl);
}

TEST(layout_holds_both_paths) {
  for (int world = 1; world <= 8; ++world) {
    for (int64_t cap : {int64_t{8}, int64_t{4096}, int64_t{8200} * 7, int64_t{512} * 7168,
                        int64_t{512} * 8200}) {
      const auto l = plan_peer_buffer(world, cap);
      // one-shot: a slot holds a whole x up to the one-shot limit
      EXPECT_TRUE(l.slot_elems >= one_shot_limit_elems(world, cap));
      // two-shot: a slot holds a chunk of the largest call
      EXPECT_TRUE(l.slot_elems >= two_shot_chunk_vecs(world, cap / kVecElems) * kVecElems);
      EXPECT_TRUE(l.gather_offset >= world * l.slot_elems * 2);
      EXPECT_TRUE(l.buffer_bytes >= l.gather_offset + cap * 2);
      EXPECT_TRUE(l.buffers_offset >= l.control_bytes);
      EXPECT_TRUE(l.control_bytes >= hpc_ops::comm::kControlWords * 4);
      EXPECT_EQ(l.staging_offset, l.buffers_offset + 2 * l.buffer_bytes);
      EXPECT_TRUE(l.total_bytes >= l.staging_offset + cap * 2);
      for (int64_t off : {l.buffers_offset, l.buffer_bytes, l.gather_offset, l.staging_offset,
                          l.slot_elems * 2}) {
        EXPECT_EQ(off % 16, 0);
      }
    }
  }
}

TEST(two_shot_chunks_cover_every_vector) {
  for (int world = 1; world <= 8; ++world) {
    for (int64_t vecs : {1, 7, 8, 896, 1025, 458752}) {
      const int64_t chunk = two_shot_chunk_vecs(world, vecs);
      EXPECT_TRUE(chunk * world >= vecs);       // every vector has an owner
      EXPECT_TRUE((chunk - 1) * world < vecs);  // and no chunk is longer than needed
    }
  }
}

TEST(grid_is_a_vector_per_thread_capped) {
  EXPECT_EQ(allreduce_ctas(1, 132), 1);
  EXPECT_EQ(allreduce_ctas(896, 132), 2);
  EXPECT_EQ(allreduce_ctas(int64_t{kAllReduceThreads} * 200, 132), 132);
  EXPECT_EQ(allreduce_ctas(int64_t{kAllReduceThreads} * 200, 16), 16);
  EXPECT_EQ(allreduce_ctas(100, 0), 1);
}

TEST_MAIN()
