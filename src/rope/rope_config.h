// SPDX-License-Identifier: Apache-2.0
// Launch geometry of the RoPE + KV-write kernel: a CTA takes one row and a
// chunk of its heads (q heads, then k heads, then v heads). Pure host code,
// unit-tested on the CPU (tests/cpp/test_rope_config.cc).
#pragma once

#include <cstdint>

namespace hpc_ops::rope {

constexpr int kRopeThreads = 256;
// CTAs per SM the launch bounds reserve registers for (64 per thread).
constexpr int kRopeMinCtas = 4;
// Most heads a lane group takes, all loads in flight together.
// NOTE: with 4 (64 registers, 4 CTAs per SM, a Llama-70B row cut into two
// CTAs of 40 heads) a 16K-token prefill chunk ran at 54% of the ceiling, the
// CTA's lookup chain (cu_seqlens -> kv_lens -> page table, cos/sin) longer
// than its loads; 6 lets one CTA take a whole row of up to 96 heads (8 made
// ptxas spill at the 85-register bound).
constexpr int kRopeHeadsPerGroup = 6;

// Lane groups per CTA: one head of head_dim / 8 lanes (16 bytes per lane).
constexpr int rope_groups_per_cta(int head_dim) { return kRopeThreads / (head_dim / 8); }

// Heads per CTA for `rows` rows of `heads` heads (Hq + 2 Hkv). Problems that
// fill a wave of CTAs give each lane group up to kRopeHeadsPerGroup heads
// (more loads in flight per thread); smaller ones (decode of a few requests)
// one head per group, so more CTAs share a row. Chunks of a row are equal to
// within one head.
int choose_heads_per_cta(int64_t rows, int heads, int head_dim, int num_sms);

}  // namespace hpc_ops::rope
