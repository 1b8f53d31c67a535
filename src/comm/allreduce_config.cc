// SPDX-License-Identifier: Apache-2.0
// The fused all-reduce's path choice, peer-buffer layout and grid size.
#include "comm/allreduce_config.h"

#include <algorithm>

namespace hpc_ops {
namespace comm {
namespace {

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

}  // namespace

int64_t one_shot_limit_elems(int world, int64_t capacity_elems) {
  if (world <= 2) return capacity_elems;
  // bytes x (world - 1) x (world - 2) / world <= kTwoShotSavedBytes, bytes = 2 x elems.
  const int64_t limit = kTwoShotSavedBytes * world / (int64_t{2} * (world - 1) * (world - 2));
  return std::min(capacity_elems, limit / kVecElems * kVecElems);
}

int64_t two_shot_chunk_vecs(int world, int64_t vecs) { return (vecs + world - 1) / world; }

PeerBufferLayout plan_peer_buffer(int world, int64_t capacity_elems) {
  constexpr int64_t kAlign = 256;
  PeerBufferLayout l;
  l.control_bytes = kAlign;
  const int64_t capacity_vecs = capacity_elems / kVecElems;
  l.slot_elems = std::max(one_shot_limit_elems(world, capacity_elems),
                          two_shot_chunk_vecs(world, capacity_vecs) * kVecElems);
  l.gather_offset = round_up(world * l.slot_elems * 2, kAlign);
  l.buffer_bytes = l.gather_offset + round_up(capacity_elems * 2, kAlign);
  l.buffers_offset = l.control_bytes;
  l.staging_offset = l.buffers_offset + 2 * l.buffer_bytes;
  l.total_bytes = l.staging_offset + round_up(capacity_elems * 2, kAlign);
  return l;
}

int allreduce_ctas(int64_t vecs, int max_ctas) {
  const int64_t ctas = (vecs + kAllReduceThreads - 1) / kAllReduceThreads;
  return static_cast<int>(std::clamp<int64_t>(ctas, 1, std::max(max_ctas, 1)));
}

}  // namespace comm

AllReducePath choose_allreduce_path(int64_t elems, int64_t capacity_elems,
                                    int64_t one_shot_elems, bool peer_access) {
  if (!peer_access || elems > capacity_elems) return AllReducePath::kNccl;
  return elems <= one_shot_elems ? AllReducePath::kOneShot : AllReducePath::kTwoShot;
}

const char* allreduce_path_name(AllReducePath path) {
  switch (path) {
    case AllReducePath::kOneShot: return "one_shot";
    case AllReducePath::kTwoShot: return "two_shot";
    case AllReducePath::kNccl: return "nccl";
  }
  return "unknown";
}

}  // namespace hpc_ops
