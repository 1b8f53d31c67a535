// SPDX-License-Identifier: Apache-2.0
// Launch geometry of the RoPE + KV-write kernels: which kernel runs, and its
// shape. The per-row kernel (rope_kernel.cuh) takes one row and a chunk of its
// heads per CTA (q heads, then k heads, then v heads); the streaming kernel
// (rope_stream_kernel.cuh) is persistent and stages whole rows in shared
// memory. Pure host code, unit-tested on the CPU (tests/cpp/test_rope_config.cc).
#pragma once

#include <cstdint>

#include "common/device_info.h"

namespace hpc_ops::rope {

// ---- the per-row kernel
constexpr int kRopeThreads = 256;
// CTAs per SM the launch bounds reserve registers for (80 per thread).
// NOTE: at 4 (64 registers) the shared row code spilled 40-150 bytes per
// thread, and ncu had counted v6's spills' L2 traffic at 40% of the bytes it
// writes. The per-row kernel now runs decode batches (< 8 rows per SM, too
// few CTAs to fill 4 per SM); when it also ran prefill with dynamic FP8
// scales, 3 without spills measured 238.8 us at Qwen3 1x16K (v6 at 4: 224.5
// with its lighter per-head code; docs/perf/rope.md v7).
constexpr int kRopeMinCtas = 3;
// Most heads a lane group takes, all loads in flight together (two 16-byte
// chunks per lane and head: 8 registers each).
// NOTE: v4 (8 elements per lane) found 4 heads of 8 elements too few (54% of
// the ceiling at 16K Llama-70B rows: the CTA's lookup chain, cu_seqlens ->
// kv_lens -> page table and cos/sin, outlasted its loads) and 6 the most
// before spills; 3 heads of 16 elements let one CTA take a whole row of up to
// 96 heads at D = 128 (a B = 256 Qwen3 or Llama-70B decode step: one CTA per row).
constexpr int kRopeHeadsPerGroup = 3;

// Lane groups per CTA: one head of head_dim / 16 lanes (two 16-byte chunks
// per lane).
constexpr int rope_groups_per_cta(int head_dim) { return kRopeThreads / (head_dim / 16); }

// Heads per CTA for `rows` rows of `heads` heads (Hq + 2 Hkv). Problems that
// fill a wave of CTAs give each lane group up to kRopeHeadsPerGroup heads
// (more loads in flight per thread); smaller ones (decode of a few requests)
// one head per group, so more CTAs share a row. Chunks of a row are equal to
// within one head.
int choose_heads_per_cta(int64_t rows, int heads, int head_dim, int num_sms);

// ---- the streaming kernel
constexpr int kStreamConsumerThreads = 256;                  // 8 warps
constexpr int kStreamThreads = kStreamConsumerThreads + 32;  // + the producer warp
// CTAs per SM: 96 registers per thread at most, since registers are shared
// out per scheduler (cuda_occupancy.h): 5 warps of 96 fit each of the 4, room
// for two CTAs of 9 warps; at 104 or more only 4 fit, one CTA per SM.
constexpr int kStreamMinCtas = 2;
constexpr int kStreamMaxStages = 8;
// Dynamic shared memory per CTA, and the most static shared memory the kernel
// may take (its barriers, staged row targets and QK-norm weights: 2.7 KB at
// D = 256): together what two CTAs per SM may take (common/device_info.h).
constexpr int kStreamSharedBytesPerCta = 110 * 1024;
constexpr int kStreamStaticSharedBytes = 3 * 1024;
static_assert(kStreamSharedBytesPerCta <=
                  detail::dynamic_smem_per_cta(kStreamMinCtas, kStreamStaticSharedBytes),
              "two streaming CTAs fit an SM");

struct StreamShape {
  int stages = 0;  // 0: a row does not fit twice
  int stage_bytes = 0;
  int cos_sin_offset = 0;
  int cos_sin_bytes = 0;
};

// Stages of `heads` heads of head_dim bf16 plus rotary_dim cos/sin values of
// cos_sin_elem_bytes (4 or 2) each: as many as fit, at most kStreamMaxStages.
StreamShape stream_shape(int heads, int head_dim, int rotary_dim, int cos_sin_elem_bytes);

// Rows from which the streaming kernel runs (it needs >= 2 stages).
// NOTE: measured on the H200 (docs/perf/rope.md v7): at 2048 rows the
// streaming kernel is 3-25% faster than the per-row one on every BF16 model
// shape, at 256 decode rows 15-30% slower (one row per CTA: nothing to
// pipeline, the producer's lookup in the way).
constexpr int64_t stream_min_rows(int num_sms) { return int64_t{8} * num_sms; }
// NOTE: calls with dynamic per-(token, head) FP8 scales stayed on the
// per-row kernel while the streaming one was slower for them (v7, Qwen3
// 1x16K: 256 vs 239 us); since its consumers' fixes (docs/perf/rope.md v8)
// it is faster there too: 195 vs 245 us at 1x16K, 33 vs 38 at 1x2K.
bool use_stream_kernel(int64_t rows, int num_sms, const StreamShape& shape);

// Persistent grid of the streaming kernel: kStreamMinCtas per SM, at most one
// per row.
int stream_grid(int64_t rows, int num_sms);

}  // namespace hpc_ops::rope
