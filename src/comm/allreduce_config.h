// SPDX-License-Identifier: Apache-2.0
// The host-side decisions of the fused all-reduce: which path a call takes,
// how a rank's peer buffer is laid out, and how many CTAs a call launches.
// Pure host code, unit-tested on the CPU (tests/cpp/test_allreduce_config.cc).
#pragma once

#include <cstdint>

#include "hpc_ops/comm.h"

namespace hpc_ops::comm {

// Elements per 16-byte vector (bf16); every access of the kernels is one vector.
constexpr int kVecElems = 8;
constexpr int kAllReduceThreads = 512;

// One-shot pushes (world - 1) copies of x; two-shot pushes 2 (world - 1) / world
// copies but crosses NVLink twice in a row. Modelled with ~400 GB/s of NVLink
// per GPU and ~2 us per crossing, two-shot wins once the bytes it saves,
// bytes x (world - 1) x (world - 2) / world, exceed ~800 KB: at 8 ranks from
// ~150 KB of x (10 tokens of hidden 7168), at 4 ranks from ~530 KB. Two ranks
// never gain from two-shot. NOTE: a model, not a measurement: no multi-GPU
// machine has run these kernels yet (docs/perf/allreduce.md).
constexpr int64_t kTwoShotSavedBytes = 768 * 1024;

// Elements of x up to which one-shot is chosen (also the one-shot slot size
// of the peer buffer, capped by the capacity).
int64_t one_shot_limit_elems(int world, int64_t capacity_elems);

// Where each part lives in one rank's allocation (bytes from its base; every
// part 256-byte aligned). Two buffers alternate between calls; each holds
// `world` slots (one per sending rank: one-shot copies of x, or two-shot
// chunks for this rank to reduce) and then the gather region (two-shot sums,
// capacity elements). The staging buffer receives the sum and is read by the
// norm kernel; it is never written by peers.
struct PeerBufferLayout {
  int64_t control_bytes = 0;   // epoch, arrival count, error words (local only)
  int64_t slot_elems = 0;      // per sending rank
  int64_t gather_offset = 0;   // bytes from a buffer's start to its gather region
  int64_t buffer_bytes = 0;    // one of the two alternating buffers
  int64_t buffers_offset = 0;  // first buffer
  int64_t staging_offset = 0;
  int64_t total_bytes = 0;
};
PeerBufferLayout plan_peer_buffer(int world, int64_t capacity_elems);

// Vectors each rank reduces in two-shot (the last rank's chunk may be shorter or empty).
int64_t two_shot_chunk_vecs(int world, int64_t vecs);

// CTAs of one call: a vector per thread in the widest phase, at most max_ctas.
int allreduce_ctas(int64_t vecs, int max_ctas);

// Control words at the start of the allocation (uint32 indices).
constexpr int kEpochWord = 0;       // calls completed; its parity picks the buffer
constexpr int kArrivalWord = 1;     // CTAs of the current call that have finished
constexpr int kErrorWord = 2;       // nonzero after a timeout
constexpr int kErrorPeerWord = 3;   // the rank waited on
constexpr int kErrorVectorWord = 4; // the vector waited on (low 32 bits)
constexpr int kControlWords = 8;

}  // namespace hpc_ops::comm
