// SPDX-License-Identifier: Apache-2.0
// The router GEMM's launch shape: token tile, split of K, and the workspace
// the split needs. Pure host code, unit-tested on the CPU
// (tests/cpp/test_router_gemm_config.cc).
#pragma once

#include <cstdint>

namespace hpc_ops::gemm {

// Output channels per CTA (two consumer warpgroups of 64) and K elements per
// pipeline stage (one 128-byte bf16 row per operand row).
constexpr int kRouterChannelTile = 128;
constexpr int kRouterKTile = 64;
constexpr int kRouterTokenTiles[] = {16, 32, 64, 128};
constexpr int kRouterMaxTokenTile = 128;
// At most 64 K ranges per tile; a tile's reduction tree has fewer nodes.
constexpr int kRouterMaxSplits = 64;
constexpr int kRouterCountersPerTile = 64;

// Fan-in of the split-K reduction tree for a token tile (each level a
// reducing CTA reads fan_in - 1 partial tiles of 128 x tile fp32).
constexpr int router_fan_in(int token_tile) {
  return token_tile <= 32 ? 8 : token_tile == 64 ? 4 : 2;
}

struct RouterGemmShape {
  int token_tile = 16;
  int token_tiles = 0;       // ceil(M / token_tile)
  int channel_tiles = 0;     // ceil(N / 128)
  int splits = 1;            // K ranges per output tile
  int k_tiles_per_split = 0; // 64-element K tiles per range (the last may be shorter)
  int64_t ctas() const { return int64_t{token_tiles} * channel_tiles * splits; }
  int64_t tiles() const { return int64_t{token_tiles} * channel_tiles; }
};

// The token tile grows with M (16 up to 128 tokens, then 32, 64, 128); with
// fewer output tiles than the CTAs wanted (half the SMs at 16-32 tokens, all
// of them at 64-128), K is split over CTAs, every range keeping at least one
// K tile: a decode-sized router GEMM is a stream of the weights that many SMs
// must pull. At most kRouterMaxSplits ranges, and a split launch never has
// more CTAs than SMs.
// forced_tile / forced_splits (0: none) replace the choice, for tuning runs.
RouterGemmShape choose_router_shape(int64_t m, int64_t n, int64_t k, int num_sms,
                                    int forced_tile = 0, int forced_splits = 0);

// The CUDA-core kernel (router_gemv_kernel.cuh) for up to
// kRouterGemvMaxTokens tokens: kRouterGemvChannels output channels and
// kRouterGemvTokens tokens per CTA, K split over a cluster of `cluster` CTAs
// (grid: channel groups x cluster along x, token blocks along y).
constexpr int kRouterGemvChannels = 4;
constexpr int kRouterGemvTokens = 8;
constexpr int kRouterGemvMaxCluster = 8;
struct RouterGemvShape {
  int channel_groups = 0, cluster = 1, token_blocks = 0;
};
// Whether a call of m tokens takes the CUDA-core kernel (forced_max_m > 0
// replaces the threshold, < 0 turns the kernel off: tuning runs, tests).
bool router_uses_gemv(int64_t m, int forced_max_m = 0);
// The cluster grows until the CTAs reach twice the SMs (at most 8 CTAs, and
// each keeps at least 256 of K).
RouterGemvShape choose_router_gemv_shape(int64_t m, int64_t n, int64_t k, int num_sms);

// Workspace of a device with `num_sms` SMs: the arrival counters of each
// output tile's reduction tree (a split launch has fewer tiles than SMs) and
// one fp32 partial tile (128 x 128) per CTA. Independent of M, N and K.
int64_t router_workspace_bytes(int num_sms);
// Byte offset of the partial tiles in the workspace (after the counters).
int64_t router_partials_offset(int num_sms);

}  // namespace hpc_ops::gemm
