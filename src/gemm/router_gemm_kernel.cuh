// SPDX-License-Identifier: Apache-2.0
// Router GEMM y = x @ W^T with bf16 x and fp32 W given as kParts bf16 parts
// (W = w[0] + w[1] (+ w[2]), router_gemm.h), "swapAB": the weights sit on
// wgmma's M side (128 output channels per CTA, 64 per consumer warpgroup),
// the tokens on its N side (kTokenTile = 16..128), so a decode-sized batch
// still fills the instruction.
//
// One output tile (128 channels x kTokenTile tokens) and one range of K per
// CTA, three warpgroups:
//   producer (warpgroup 0): one thread issues, per stage, the TMA loads of
//     the kParts weight tiles (128 channels x 64 K each) and the token tile of
//     x (kTokenTile x 64 K); rows past N or M and K past the end arrive as
//     zeros. Before waiting for the previous kernel (PDL) its first warp
//     prefetches the CTA's weight rows into L2: weights are never written by
//     the kernels before, and a decode-sized call is a stream of them.
//   consumers (warpgroups 1, 2): per stage 4 x kParts wgmma of K = 16 into a
//     fresh accumulator, then one fp32 add into the running sum. The tensor
//     cores' sums are not IEEE fp32 (over K = 7168 in one accumulator the error
//     was tens of times an fp32 GEMM's); adding every 64 of K in fp32 brings
//     three parts to 0.5-1.8x of it.
// Split K (fewer output tiles than SMs): the partial tiles are added through
// the workspace in a tree (fan-in 2..8, counters say which CTA arrives last
// at each node and are put back to 0); the order of the additions is fixed,
// so the result does not depend on which CTA is last.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>

#include <cute/arch/copy_sm90_desc.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "common/bulk_copy.cuh"
#include "common/device_info.h"
#include "common/pdl.cuh"
#include "common/wgmma.cuh"
#include "gemm/grouped_gemm_params.h"  // the warpgroup split both GEMM kernels use
#include "gemm/router_gemm_config.h"
#include "gemm/router_gemm_params.h"

namespace hpc_ops::gemm {

template <int kParts, int kTokenTile>
struct RouterGemmTraits {
  static_assert(kParts == 2 || kParts == 3, "two or three weight parts");
  static constexpr int kRowBytes = kRouterKTile * 2;                  // 128 bytes of K
  static constexpr int kWeightTileBytes = kRouterChannelTile * kRowBytes;  // 16 KB
  static constexpr int kXTileBytes = kTokenTile * kRowBytes;
  static constexpr int kStageBytes = kParts * kWeightTileBytes + kXTileBytes;
  static constexpr int kFixedBytes = 1024 /* alignment slack */ + 256 /* barriers, flag */;
  // Up to 8 stages: >= 96 KB of weights in flight per SM, past the ~40 KB that
  // hides HBM latency at full rate; the largest tiles get 3 (64 KB stages).
  static constexpr int kStagesFit = (detail::kSmemPerCtaMax - kFixedBytes) / kStageBytes;
  static constexpr int kStages = kStagesFit < 8 ? kStagesFit : 8;
  static_assert(kStages >= 3, "pipeline too shallow");
  static constexpr int kSmemBytes = kFixedBytes + kStages * kStageBytes;
  static constexpr int kAccFloats = kTokenTile / 2;
  static constexpr int kAccVectors = kTokenTile / 8;  // float4 per thread
  // Split-K reduction fan-in: a reducing CTA reads (kFanIn - 1) partial tiles
  // per level, <= 64 KB (7 x 8 KB at 16 tokens, 1 x 64 KB at 128).
  static constexpr int kFanIn = router_fan_in(kTokenTile);
};

template <int kParts, int kTokenTile>
__global__ void __launch_bounds__(kThreads, 1)
    router_gemm_kernel(const __grid_constant__ CUtensorMap w_map,
                       const __grid_constant__ CUtensorMap x_map, const RouterGemmParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Traits = RouterGemmTraits<kParts, kTokenTile>;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr int kStages = Traits::kStages;

  extern __shared__ uint8_t smem_raw[];
  // Swizzled tiles need 1024-byte aligned bases.
  uint8_t* smem = reinterpret_cast<uint8_t*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~static_cast<uintptr_t>(1023));
  Barrier* full = reinterpret_cast<Barrier*>(smem + kStages * Traits::kStageBytes);
  Barrier* empty = full + kStages;
  int* last_flag = reinterpret_cast<int*>(empty + kStages);

  // CTA -> (token tile, channel tile, split), the split fastest: the CTAs of
  // one output tile are adjacent, and so are those sharing a token tile.
  const int cta = blockIdx.x;
  const int split = cta % p.splits;
  const int tile = cta / p.splits;
  const int channel_tile = tile % p.channel_tiles;
  const int token_tile = tile / p.channel_tiles;
  const int k_tiles = (p.k + kRouterKTile - 1) / kRouterKTile;
  const int kt_begin = split * p.k_tiles_per_split;
  const int kt_end = min(k_tiles, kt_begin + p.k_tiles_per_split);
  const int warpgroup = threadIdx.x / 128;

  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    if (lane == 0) {
      cute::prefetch_tma_descriptor(&w_map);
      cute::prefetch_tma_descriptor(&x_map);
    }
    // Weight rows of this CTA, K range [kt_begin, kt_end) (16-byte multiples:
    // K is a multiple of 16 elements).
    const int k0 = kt_begin * kRouterKTile;
    const uint32_t bytes = static_cast<uint32_t>(min(p.k, kt_end * kRouterKTile) - k0) * 2;
    for (int r = lane; r < kParts * kRouterChannelTile; r += 32) {
      const int part = r / kRouterChannelTile;
      const int channel = channel_tile * kRouterChannelTile + r % kRouterChannelTile;
      if (channel < p.n) {
        device::prefetch_l2_bulk(static_cast<const uint8_t*>(p.w) + part * p.w_part_stride_bytes +
                                     channel * p.w_row_stride_bytes + int64_t{k0} * 2,
                                 bytes);
      }
    }
  }
  if (threadIdx.x == 32) {
    for (int s = 0; s < kStages; ++s) {
      full[s].init(1);
      empty[s].init(kConsumerThreads);
    }
    cutlass::arch::fence_barrier_init();
  }
  device::pdl_enter();  // the previous kernel may have written x
  __syncthreads();

  if (warpgroup == 0) {
    // ---------------------------------------------------------------- producer
    cutlass::arch::warpgroup_reg_dealloc<40>();
    if (threadIdx.x != 0) return;
    int stage = 0;
    uint32_t phase = 0;
    for (int kt = kt_begin; kt < kt_end; ++kt) {
      empty[stage].wait(phase ^ 1);
      uint8_t* tiles = smem + stage * Traits::kStageBytes;
      full[stage].arrive_and_expect_tx(Traits::kStageBytes);
      auto* bar = reinterpret_cast<uint64_t*>(&full[stage]);
      const auto hint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL);
#pragma unroll
      for (int part = 0; part < kParts; ++part) {
        cute::SM90_TMA_LOAD_3D::copy(&w_map, bar, hint, tiles + part * Traits::kWeightTileBytes,
                                     kt * kRouterKTile, channel_tile * kRouterChannelTile, part);
      }
      cute::SM90_TMA_LOAD_2D::copy(&x_map, bar, hint, tiles + kParts * Traits::kWeightTileBytes,
                                   kt * kRouterKTile, token_tile * kTokenTile);
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
    return;
  }

  // ----------------------------------------------------------------- consumers
  cutlass::arch::warpgroup_reg_alloc<232>();
  const int consumer = warpgroup - 1;  // weight rows 64 * consumer ..
  const int ctid = threadIdx.x - kProducerThreads;
  const int lane = threadIdx.x & 31;
  const int warp_in_group = (threadIdx.x / 32) & 3;
  float total[Traits::kAccFloats];
#pragma unroll
  for (int i = 0; i < Traits::kAccFloats; ++i) total[i] = 0.0f;
  int stage = 0;
  uint32_t phase = 0;
  for (int kt = kt_begin; kt < kt_end; ++kt) {
    full[stage].wait(phase);
    const uint8_t* tiles = smem + stage * Traits::kStageBytes;
    const uint8_t* x_tile = tiles + kParts * Traits::kWeightTileBytes;
    float acc[Traits::kAccFloats];
#pragma unroll
    for (int i = 0; i < Traits::kAccFloats; ++i) cute::warpgroup_fence_operand(acc[i]);
    cute::warpgroup_arrive();
#pragma unroll
    for (int part = 0; part < kParts; ++part) {
      const uint8_t* w_tile = tiles + part * Traits::kWeightTileBytes + consumer * 64 * 128;
#pragma unroll
      for (int kk = 0; kk < Traits::kRowBytes / 32; ++kk) {
        device::wgmma<__nv_bfloat16, kTokenTile>(device::sw128_kmajor_desc(w_tile, kk * 32),
                                                 device::sw128_kmajor_desc(x_tile, kk * 32), acc,
                                                 part > 0 || kk > 0);
      }
    }
    cute::warpgroup_commit_batch();
    cute::warpgroup_wait<0>();
#pragma unroll
    for (int i = 0; i < Traits::kAccFloats; ++i) cute::warpgroup_fence_operand(acc[i]);
    empty[stage].arrive();
#pragma unroll
    for (int i = 0; i < Traits::kAccFloats; ++i) total[i] += acc[i];
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1;
    }
  }

  if (p.splits > 1) {
    // ---- split K: a tree of fan-in kFanIn over the splits. Each node of a
    // group stores its sum in its slot; the one arriving last on the group's
    // counter adds the group's sums in node order and moves up a level. A
    // node's slot is that of its first CTA, whose earlier value only this
    // node's own reduction read. One CTA adding all 56 partials of a decode
    // call read 56 x 8 KB with dependent round trips: 14 us at M = 1.
    constexpr int kFanIn = Traits::kFanIn;
    float4* slots = reinterpret_cast<float4*>(p.partials) + ctid;
    constexpr int kSlotVectors = Traits::kAccVectors * kConsumerThreads;
    int* counters = p.counters + tile * kRouterCountersPerTile;
    const int tile_cta = tile * p.splits;
    int node = split, count = p.splits, stride = 1;
    while (count > 1) {
      const int group = node / kFanIn;
      const int first = group * kFanIn;
      const int size = min(kFanIn, count - first);
      if (size > 1) {
#pragma unroll
        for (int v = 0; v < Traits::kAccVectors; ++v) {
          slots[int64_t{tile_cta + node * stride} * kSlotVectors + v * kConsumerThreads] =
              make_float4(total[4 * v], total[4 * v + 1], total[4 * v + 2], total[4 * v + 3]);
        }
        __threadfence();
        cutlass::arch::NamedBarrier::sync(kConsumerThreads, 0);  // consumers only
        if (ctid == 0) {
          const bool last = atomicAdd(counters + group, 1) == size - 1;
          if (last) counters[group] = 0;  // every node has arrived: ready for the next launch
          *last_flag = last;
        }
        cutlass::arch::NamedBarrier::sync(kConsumerThreads, 0);  // consumers only
        if (!*last_flag) return;
        __threadfence();  // the other nodes' sums are visible after their fence + atomic
#pragma unroll
        for (int v = 0; v < Traits::kAccVectors; ++v) {
          float4 in[kFanIn];  // all loads in flight before the first add
#pragma unroll
          for (int i = 0; i < kFanIn; ++i) {
            if (i < size && first + i != node) {
              in[i] = __ldcg(&slots[int64_t{tile_cta + (first + i) * stride} * kSlotVectors +
                                    v * kConsumerThreads]);
            }
          }
          float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
          for (int i = 0; i < kFanIn; ++i) {  // node order: the same sum whichever CTA is last
            if (i >= size) break;
            const float4 x = first + i == node ? make_float4(total[4 * v], total[4 * v + 1],
                                                             total[4 * v + 2], total[4 * v + 3])
                                               : in[i];
            sum.x += x.x;
            sum.y += x.y;
            sum.z += x.z;
            sum.w += x.w;
          }
          total[4 * v] = sum.x;
          total[4 * v + 1] = sum.y;
          total[4 * v + 2] = sum.z;
          total[4 * v + 3] = sum.w;
        }
      }
      counters += (count + kFanIn - 1) / kFanIn;  // this level's group counters
      node = group;
      count = (count + kFanIn - 1) / kFanIn;
      stride *= kFanIn;
    }
  }

  // ---- y[token][channel] from the fragments: acc[4b + 2i + j] is channel
  // 16 w + lane / 4 + 8 i of the warpgroup's 64, token 8 b + 2 (lane % 4) + j.
  // Each store instruction writes 32-byte runs (fp32) of 8 channels: y is
  // N / K of the bytes read, so staging through shared memory would not pay.
  const int channel0 = channel_tile * kRouterChannelTile + consumer * 64 + warp_in_group * 16 +
                       (lane >> 2);
  const int token0 = token_tile * kTokenTile + 2 * (lane & 3);
#pragma unroll
  for (int b = 0; b < kTokenTile / 8; ++b) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int token = token0 + 8 * b + j;
      if (token >= p.m) continue;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int channel = channel0 + 8 * i;
        if (channel >= p.n) continue;
        const int64_t at = int64_t{token} * p.y_row_stride + channel;
        const float value = total[4 * b + 2 * i + j];
        if (p.y_fp32) {
          static_cast<float*>(p.y)[at] = value;
        } else {
          static_cast<__nv_bfloat16*>(p.y)[at] = __float2bfloat16_rn(value);
        }
      }
    }
  }
#endif
}

}  // namespace hpc_ops::gemm
